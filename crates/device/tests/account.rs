//! R-PAY-5: the prepayment account never drifts. However time is cut into settlements, the
//! charges equal the sum over every complete half hour of its energy at the rate in force
//! plus a standing charge per London day, and the balance is exactly what was credited
//! less the whole pence charged.

use device::account::{Prepay, UNITS_PER_PENNY};
use device::system::Supply;
use device::{Consumption, LoadShape};
use domain::product::{Change, PaymentMode, Product, Switch, Tariff};
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

fn product(tou: bool, day_rate: i64, night_rate: i64, standing: i64) -> Product {
    let tariff = if tou {
        Tariff {
            rates_mp_per_kwh: vec![day_rate, night_rate],
            switching: vec![Switch { at: "00:30".into(), rate: 1 }, Switch { at: "07:30".into(), rate: 0 }],
            block_thresholds_kwh: vec![],
            block_rates_mp_per_kwh: vec![],
        }
    } else {
        Tariff {
            rates_mp_per_kwh: vec![day_rate],
            switching: vec![],
            block_thresholds_kwh: vec![],
            block_rates_mp_per_kwh: vec![],
        }
    };
    let p = Product::default()
        .with(&Change::PaymentMode { payment_mode: PaymentMode::Prepayment })
        .with(&Change::Tariff { tariff, standing_charge_mp_per_day: standing });
    p.check().unwrap();
    p
}

/// The charges for `[from, to)` computed independently, half hour by half hour.
fn expected_units(c: &Consumption, p: &Product, from: Timestamp, to: Timestamp) -> i64 {
    let mut units = 0;
    for (start, wh) in c.half_hours(from, to) {
        let local = domain::time::in_london(start);
        let minute = local.hour() as i64 * 60 + local.minute() as i64;
        if minute == 0 {
            units += p.standing_charge_mp_per_day * 1000;
        }
        let rate = if p.tariff.rates_mp_per_kwh.len() == 1 || !(30..450).contains(&minute) {
            p.tariff.rates_mp_per_kwh[0]
        } else {
            p.tariff.rates_mp_per_kwh[1]
        };
        units += wh as i64 * rate;
    }
    units
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn charges_do_not_depend_on_how_time_is_cut(
        seed in any::<u64>(),
        tou in any::<bool>(),
        day_rate in 0i64..60_000,
        night_rate in 0i64..30_000,
        standing in 0i64..90_000,
        start_offset in 0i64..86_400,
        cuts in prop::collection::vec(1i64..200_000, 1..12),
        credits in prop::collection::vec(0u64..5_000, 0..5),
    ) {
        let origin: Timestamp = "2026-03-20T00:00:00Z".parse().unwrap();
        let start = origin + SignedDuration::from_secs(start_offset);
        let c = Consumption::for_meter(LoadShape::Domestic, seed, origin, None);
        let p = product(tou, day_rate, night_rate, standing);
        let mut account = Prepay::default();
        let mut supply = Supply::Enabled;
        // Plenty of credit, so supply never goes off and every half hour is charged.
        account.credit(start, 10_000_000, &mut supply, &p);
        account.accrue(&c, &p, &mut supply, start);
        let first = account.settled_to.unwrap();
        let mut t = start;
        for (i, cut) in cuts.iter().enumerate() {
            t += SignedDuration::from_secs(*cut);
            account.accrue(&c, &p, &mut supply, t);
            if let Some(pence) = credits.get(i) {
                account.credit(t, *pence, &mut supply, &p);
            }
        }
        let last = account.settled_to.unwrap();
        prop_assert!(last <= t && t.duration_since(last) < SignedDuration::from_secs(1800), "settled to the last whole half hour");
        prop_assert_eq!(account.charged_units, expected_units(&c, &p, first, last));
        let credited: u64 = 10_000_000 + credits.iter().take(cuts.len()).sum::<u64>();
        prop_assert_eq!(account.credited_pence, credited);
        prop_assert_eq!(account.balance_pence(), credited as i64 - account.charged_units.div_euclid(UNITS_PER_PENNY));
        prop_assert_eq!(supply, Supply::Enabled);
    }
}

#[test]
fn a_credit_mode_meter_charges_nothing() {
    let origin: Timestamp = "2026-03-20T00:00:00Z".parse().unwrap();
    let c = Consumption::for_meter(LoadShape::Domestic, 7, origin, None);
    let p = Product::default();
    let mut account = Prepay::default();
    let mut supply = Supply::Enabled;
    account.accrue(&c, &p, &mut supply, origin);
    account.accrue(&c, &p, &mut supply, origin + SignedDuration::from_hours(24 * 30));
    assert_eq!(account.charged_units, 0);
    assert_eq!(account.settled_to, None, "no account is kept, so nothing changes");
}

// Debt is recovered at each London midnight at the daily rate, never more than the weekly
// cap in a Monday-to-Sunday week, never more than is owed; each penny recovered is charged.
#[test]
fn debt_recovery_keeps_to_the_daily_rate_and_the_weekly_cap() {
    use domain::product::DebtRecovery;
    // Monday 5 January 2026, midnight London.
    let monday: Timestamp = "2026-01-05T00:00:00Z".parse().unwrap();
    let c = Consumption::for_meter(LoadShape::Domestic, 3, monday, None);
    let p = product(false, 0, 0, 0).with(&Change::Prepay {
        emergency_credit: None,
        debt_recovery: Some(Some(DebtRecovery { rate_pence_per_day: 30, cap_pence_per_week: 100 })),
        low_credit_threshold_pence: None,
        non_disablement: None,
    });
    p.check().unwrap();
    let mut account = Prepay::default();
    let mut supply = Supply::Enabled;
    account.credit(monday, 100_000, &mut supply, &p);
    account.set_debt(250);
    account.accrue(&c, &p, &mut supply, monday - SignedDuration::from_secs(1800));
    let day = |n: i64| monday + SignedDuration::from_hours(24 * n) + SignedDuration::from_secs(1800);
    let mut owed = Vec::new();
    for n in 0..15 {
        account.accrue(&c, &p, &mut supply, day(n));
        owed.push(account.debt_pence);
    }
    // Week 1: 30, 30, 30, then 10 (cap 100), then nothing; week 2 the same; week 3: the last 50.
    assert_eq!(owed, [220, 190, 160, 150, 150, 150, 150, 120, 90, 60, 50, 50, 50, 50, 20]);
    assert_eq!(account.charged_units, (250 - 20) * UNITS_PER_PENNY, "prices are zero: only debt was charged");
    assert_eq!(account.balance_pence(), 100_000 - 230);
}

// Leaving prepayment mode arms a supply that was off for lack of credit; emergency credit
// that is no longer configured ends; an offer of emergency credit is made again once a
// top-up has lifted the balance over the threshold; an armed supply is restored only with
// credit (or in credit mode).
#[test]
fn supply_and_emergency_credit_states_never_get_stuck() {
    use domain::product::EmergencyCredit;
    let origin: Timestamp = "2026-01-05T00:00:00Z".parse().unwrap();
    let c = Consumption::for_meter(LoadShape::Domestic, 5, origin, None);
    let with_ec = product(false, 40_000, 0, 0).with(&Change::Prepay {
        emergency_credit: Some(Some(EmergencyCredit { limit_pence: 200, threshold_pence: 100 })),
        debt_recovery: None,
        low_credit_threshold_pence: None,
        non_disablement: None,
    });
    with_ec.check().unwrap();
    let mut a = Prepay::default();
    let mut supply = Supply::Enabled;
    a.accrue(&c, &with_ec, &mut supply, origin);
    a.credit(origin, 150, &mut supply, &with_ec);
    a.accrue(&c, &with_ec, &mut supply, origin + SignedDuration::from_hours(48));
    assert!(a.emergency_credit_offered, "offered once below the threshold");
    assert_eq!(supply, Supply::Disabled, "and then out of credit");
    assert!(!a.may_restore(&with_ec));

    // A top-up over the threshold: armed, and the offer can be made again.
    a.credit(origin + SignedDuration::from_hours(48), 1_000, &mut supply, &with_ec);
    assert_eq!(supply, Supply::Armed);
    assert!(!a.emergency_credit_offered);
    assert!(a.may_restore(&with_ec));

    // Emergency credit in use, then removed from the product: it ends.
    let mut b = Prepay::default();
    let mut supply_b = Supply::Enabled;
    b.accrue(&c, &with_ec, &mut supply_b, origin);
    b.activate_emergency_credit(origin, &with_ec, &mut supply_b).unwrap();
    let without = with_ec.with(&Change::Prepay {
        emergency_credit: Some(None),
        debt_recovery: None,
        low_credit_threshold_pence: None,
        non_disablement: None,
    });
    b.product_changed(origin, &with_ec, &without, &mut supply_b);
    assert!(!b.emergency_credit_active);

    // Disabled in prepayment mode, then the supplier moves the meter to credit mode: armed.
    let mut d = Prepay::default();
    let mut supply_d = Supply::Disabled;
    let credit = without.with(&Change::PaymentMode { payment_mode: PaymentMode::Credit });
    d.product_changed(origin, &without, &credit, &mut supply_d);
    assert_eq!(supply_d, Supply::Armed);
    assert!(d.may_restore(&credit), "credit mode never needs credit to restore");
}

// Block prices: once the London month's consumption passes a threshold, the block's rate
// applies; a half hour that crosses it is split exactly; a new month starts from nothing.
#[test]
fn block_prices_follow_the_month_consumption() {
    let start: Timestamp = "2026-01-28T00:00:00Z".parse().unwrap();
    let end: Timestamp = "2026-02-03T00:00:00Z".parse().unwrap();
    let c = Consumption::for_meter(LoadShape::Domestic, 11, start - SignedDuration::from_hours(24), None);
    let tariff = Tariff {
        rates_mp_per_kwh: vec![20_000],
        switching: vec![],
        block_thresholds_kwh: vec![10, 30],
        block_rates_mp_per_kwh: vec![25_000, 40_000],
    };
    let p = Product::default()
        .with(&Change::PaymentMode { payment_mode: PaymentMode::Prepayment })
        .with(&Change::Tariff { tariff, standing_charge_mp_per_day: 0 });
    p.check().unwrap();
    let mut account = Prepay::default();
    let mut supply = Supply::Enabled;
    account.credit(start, 10_000_000, &mut supply, &p);
    account.accrue(&c, &p, &mut supply, start);
    for h in 1..=(6 * 24) {
        account.accrue(&c, &p, &mut supply, start + SignedDuration::from_hours(h));
    }
    // Independently: Wh by Wh.
    let mut expected = 0i64;
    let mut month = 1;
    let mut used = 0i64;
    for (t, wh) in c.half_hours(start, end) {
        let m = domain::time::in_london(t).month();
        if m != month {
            month = m;
            used = 0;
        }
        for _ in 0..wh {
            let price = if used >= 30_000 {
                40_000
            } else if used >= 10_000 {
                25_000
            } else {
                20_000
            };
            expected += price;
            used += 1;
        }
    }
    assert_eq!(account.charged_units, expected);
    assert!(expected > 0);
}

// The event log keeps what the hub has not taken: delivered events make room first; only
// a log full of undelivered ones drops the oldest, and says how many.
#[test]
fn the_event_log_drops_delivered_events_first_and_counts_losses() {
    use device::account::EVENTS_KEPT;
    let at: Timestamp = "2026-01-05T00:00:00Z".parse().unwrap();
    let mut a = Prepay::default();
    for i in 0..EVENTS_KEPT as u64 {
        a.record(at, 0x810E, format!("event {i}"), None);
    }
    a.delivered_seq = 10;
    for i in 0..10 {
        a.record(at, 0x810E, format!("more {i}"), None);
    }
    assert_eq!((a.events.len(), a.events_lost), (EVENTS_KEPT, 0), "the delivered ten made room");
    assert_eq!(a.undelivered().count(), EVENTS_KEPT);
    a.record(at, 0x810E, "one too many".into(), None);
    assert_eq!(a.events_lost, 1);
    assert_eq!(a.undelivered().next().unwrap().seq, 12, "the oldest undelivered went");
}
