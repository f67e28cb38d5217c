//! The change-of-supplier state machine (R-COS-1, R-COS-2, R-COS-7): windows from the GB
//! calendar, and properties over arbitrary sequences of actions and clock moves.

use domain::calendar::Division;
use domain::switching::{Action, Process, Stage, Switch, window_end};
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

// Windows of 5 working days close at London midnight after the fifth.
#[test]
fn windows_skip_weekends_and_the_divisions_bank_holidays() {
    use Division::*;
    for (division, from, closes) in [
        // An ordinary week: Monday → the next Monday is the fifth working day.
        (EnglandAndWales, "2026-01-05T09:00:00Z", "2026-01-13T00:00:00Z"),
        // Late on a Friday still counts from that Friday.
        (EnglandAndWales, "2026-01-09T23:30:00Z", "2026-01-17T00:00:00Z"),
        // Christmas 2026: Friday 25th, Boxing Day on Saturday → Monday 28th, New Year's Day.
        (EnglandAndWales, "2026-12-23T10:00:00Z", "2027-01-05T00:00:00Z"),
        // Scotland adds 2 January (Saturday → Monday 4th in 2027).
        (Scotland, "2026-12-23T10:00:00Z", "2027-01-06T00:00:00Z"),
        // Easter 2026 in summer time: England skips Good Friday and Easter Monday...
        (EnglandAndWales, "2026-04-02T09:00:00Z", "2026-04-13T23:00:00Z"),
        // ... Scotland only Good Friday.
        (Scotland, "2026-04-02T09:00:00Z", "2026-04-10T23:00:00Z"),
        // Just after London midnight in summer time is already the next day.
        (EnglandAndWales, "2026-06-04T23:30:00Z", "2026-06-12T23:00:00Z"),
    ] {
        assert_eq!(window_end(division, t(from), 5), t(closes), "{division:?} from {from}");
    }
}

#[test]
fn an_electricity_switch_takes_its_date_no_earlier_than_the_window_allows() {
    let now = t("2026-01-05T09:00:00Z");
    let open = |d: &str| Switch::open(Process::Electricity, Division::EnglandAndWales, now, Some(d.parse().unwrap()));
    assert_eq!(open("2026-01-12").unwrap_err().field, "supply_start");
    assert_eq!(open("2026-02-03").unwrap_err().field, "supply_start");
    let mut s = open("2026-01-13").unwrap();
    assert_eq!((s.stage, s.deadline), (Stage::ObjectionWindow, Some(t("2026-01-13T00:00:00Z"))));
    let steps = s.tick(t("2026-01-20T00:00:00Z"));
    // Both deadlines passed while nobody looked: each step at its own instant.
    let seen: Vec<(Stage, Timestamp)> = steps.iter().map(|x| (x.to, x.at)).collect();
    assert_eq!(seen, [(Stage::Confirmed, t("2026-01-13T00:00:00Z")), (Stage::Completing, t("2026-01-13T00:00:00Z"))]);
    assert!(
        Switch::open(Process::GasSmall, Division::EnglandAndWales, now, Some("2026-02-01".parse().unwrap())).is_err()
    );
}

#[test]
fn a_gas_confirmation_takes_effect_at_london_midnight_seven_days_later_and_repeats_change_nothing() {
    let mut s = Switch::open(Process::GasSmall, Division::EnglandAndWales, t("2026-03-20T10:00:00Z"), None).unwrap();
    // Confirmed on Wednesday 25 March; the clocks go forward on the 29th.
    let step = s.act(Action::Confirm, t("2026-03-25T16:00:00Z")).unwrap().unwrap();
    assert_eq!((step.from, step.to), (Stage::AwaitingConfirmation, Stage::Confirmed));
    assert_eq!(s.switch_at, Some(t("2026-03-31T23:00:00Z")), "1 April 00:00 BST");
    let before = s.clone();
    assert_eq!(s.act(Action::Confirm, t("2026-03-26T16:00:00Z")).unwrap(), None);
    assert_eq!(s, before, "a repeated confirmation changes nothing");
    assert!(s.act(Action::Cancel, t("2026-03-26T16:00:00Z")).is_err(), "irrevocable");
}

fn action() -> impl Strategy<Value = Option<Action>> {
    prop_oneof![Just(None), proptest::sample::select(Action::ALL.to_vec()).prop_map(Some)]
}

fn process() -> impl Strategy<Value = Process> {
    proptest::sample::select(vec![Process::Electricity, Process::GasSmall, Process::GasLarge])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    // Any sequence of actions and clock moves: no panic; stages only move forward along the
    // process's edges; a confirmed switch is never withdrawn and its instant never moves; a
    // refused action changes nothing; time only ever helps the clock's own steps.
    #[test]
    fn any_history_keeps_the_rules(
        process in process(),
        start_day in 0i64..700,
        moves in proptest::collection::vec((action(), 0i64..(6 * 24 * 3600)), 1..40),
    ) {
        let mut now = t("2026-01-01T00:00:00Z") + SignedDuration::from_hours(24 * start_day);
        let start = (process == Process::Electricity).then(|| {
            domain::time::london_date(window_end(Division::EnglandAndWales, now, 5))
        });
        let mut s = Switch::open(process, Division::EnglandAndWales, now, start).unwrap();
        let mut confirmed_at: Option<Timestamp> = None;
        for (a, secs) in moves {
            now += SignedDuration::from_secs(secs);
            let before = s.clone();
            let steps = match a {
                Some(a) => match s.act(a, now) {
                    Ok(step) => step.into_iter().collect(),
                    Err(_) => {
                        prop_assert_eq!(&s, &before, "a refused action changes nothing");
                        Vec::new()
                    }
                },
                None => s.tick(now),
            };
            for step in &steps {
                prop_assert!(step.at <= now);
                let allowed = matches!(
                    (process, step.from, step.to),
                    (Process::Electricity, Stage::ObjectionWindow, Stage::Objected | Stage::Confirmed | Stage::Withdrawn)
                        | (Process::Electricity, Stage::Objected, Stage::Confirmed | Stage::Withdrawn)
                        | (Process::GasLarge, Stage::Nominated, Stage::Offered | Stage::Withdrawn)
                        | (Process::GasLarge, Stage::Offered, Stage::AwaitingConfirmation | Stage::Withdrawn)
                        | (Process::GasSmall | Process::GasLarge, Stage::AwaitingConfirmation, Stage::Confirmed | Stage::Withdrawn)
                        | (_, Stage::Confirmed, Stage::Completing)
                );
                prop_assert!(allowed, "{:?}: {:?} → {:?}", process, step.from, step.to);
            }
            if let Some(at) = confirmed_at {
                prop_assert_eq!(s.switch_at, Some(at), "the switch instant never moves");
                prop_assert!(s.stage.is_irrevocable(), "{:?}", s.stage);
            } else if s.stage.is_irrevocable() {
                let at = s.switch_at.unwrap();
                if let Some(d) = start {
                    prop_assert!(at >= domain::time::start_of_london_day(d).unwrap());
                }
                prop_assert!(at > s.requested_at);
                confirmed_at = Some(at);
            }
            if let Some(d) = s.deadline {
                prop_assert!(d > now || s.stage == Stage::Confirmed || s.stage == Stage::ObjectionWindow || s.stage == Stage::Objected,
                    "a passed deadline is only left for the clock to act on");
            }
        }
    }
}
