//! The consumption model against the load research, and its accounting properties:
//! half hours, days and registers always agree (R-RD-2), registers never go backwards.

use device::profile::{DayType, Season, day_type, day_watts, season};
use device::{Consumption, LoadShape};
use jiff::Timestamp;
use jiff::civil::{Date, date};

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn average_customer(shape: LoadShape) -> Consumption {
    Consumption { shape, scale_ppm: 1_000_000, seed: 0, noise_mwh: 0, origin: t("2020-01-01T00:00:00Z"), initial_wh: 0 }
}

#[test]
fn seasons_and_day_types_table() {
    let table: &[(Date, Season)] = &[
        (date(2026, 1, 14), Season::Winter),
        (date(2026, 3, 28), Season::Winter),
        (date(2026, 3, 29), Season::Spring), // spring clock change
        (date(2026, 5, 8), Season::Spring),
        (date(2026, 5, 9), Season::Summer), // 10 weeks before high summer
        (date(2026, 7, 17), Season::Summer),
        (date(2026, 7, 18), Season::HighSummer), // 44 days before the August bank holiday
        (date(2026, 8, 30), Season::HighSummer),
        (date(2026, 8, 31), Season::Autumn), // August bank holiday
        (date(2026, 10, 24), Season::Autumn),
        (date(2026, 10, 25), Season::Winter), // autumn clock change
    ];
    for (d, s) in table {
        assert_eq!(season(*d), *s, "{d}");
    }
    assert_eq!(day_type(date(2026, 1, 14)), DayType::Weekday);
    assert_eq!(day_type(date(2026, 1, 17)), DayType::Saturday);
    assert_eq!(day_type(date(2026, 12, 25)), DayType::Sunday, "bank holidays count as Sundays");
}

// The reference says: a winter weekday for class 1 sums to about 12.3 kWh, peaking near
// 0.92 kW at 18:00.
#[test]
fn class_1_winter_weekday_matches_the_load_research() {
    let w = day_watts(LoadShape::Domestic, date(2026, 1, 14));
    let peak = w.iter().copied().max().unwrap();
    let peak_period = w.iter().position(|x| *x == peak).unwrap();
    assert!((900..=940).contains(&peak), "peak {peak} W");
    assert!((34..=36).contains(&peak_period), "peak in period {peak_period} (0-based, 17:00-18:30)");
    let c = average_customer(LoadShape::Domestic);
    let kwh = c.energy_between_wh(t("2026-01-14T00:00:00Z"), t("2026-01-15T00:00:00Z")) as f64 / 1000.0;
    assert!((12.1..=12.5).contains(&kwh), "{kwh} kWh");
}

// Clock-change days have 46 and 50 half hours; the model follows local time.
#[test]
fn clock_change_days_have_46_and_50_half_hours() {
    let c = average_customer(LoadShape::Domestic);
    let spring = c.half_hours(t("2026-03-29T00:00:00Z"), t("2026-03-29T23:00:00Z"));
    assert_eq!(spring.len(), 46);
    let autumn = c.half_hours(t("2026-10-24T23:00:00Z"), t("2026-10-26T00:00:00Z"));
    assert_eq!(autumn.len(), 50);
    let days = c.days(date(2026, 3, 29), date(2026, 3, 30));
    assert_eq!(days[0].1, spring.iter().map(|(_, wh)| wh).sum::<u64>());
}

#[test]
fn gas_year_matches_its_annual_quantity() {
    for aq in [3_000u64, 12_000, 80_000] {
        let c = Consumption::for_meter(LoadShape::Gas, 42, t("2025-01-01T00:00:00Z"), Some(aq));
        let kwh = c.energy_between_wh(t("2025-01-01T00:00:00Z"), t("2026-01-01T00:00:00Z")) / 1000;
        let ratio = kwh as f64 / aq as f64;
        assert!((0.97..=1.03).contains(&ratio), "AQ {aq}: {kwh} kWh");
        // Winter days burn more than summer days.
        let jan = c.energy_between_wh(t("2025-01-15T00:00:00Z"), t("2025-01-16T00:00:00Z"));
        let jul = c.energy_between_wh(t("2025-07-15T00:00:00Z"), t("2025-07-16T00:00:00Z"));
        assert!(jan > 3 * jul, "{jan} vs {jul}");
    }
}

#[test]
fn economy_7_night_register_is_part_of_the_total() {
    let c = Consumption::for_meter(LoadShape::DomesticEconomy7, 7, t("2025-06-01T00:00:00Z"), None);
    let r = c.registers_at(t("2026-06-01T00:00:00Z"));
    let night = r.night_wh.unwrap();
    let grown = r.import_wh - c.initial_wh;
    assert!(night > grown / 4 && night < grown, "night {night} of {grown}");
    assert!(
        Consumption::for_meter(LoadShape::Domestic, 7, t("2025-06-01T00:00:00Z"), None)
            .registers_at(t("2026-06-01T00:00:00Z"))
            .night_wh
            .is_none()
    );
}

#[test]
fn deterministic_from_seed() {
    let a = Consumption::for_meter(LoadShape::Domestic, 99, t("2024-01-01T00:00:00Z"), None);
    let b = Consumption::for_meter(LoadShape::Domestic, 99, t("2024-01-01T00:00:00Z"), None);
    let c = Consumption::for_meter(LoadShape::Domestic, 100, t("2024-01-01T00:00:00Z"), None);
    let at = t("2026-02-03T04:05:06Z");
    assert_eq!(a.registers_at(at), b.registers_at(at));
    assert_ne!(a.registers_at(at), c.registers_at(at));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn shape() -> impl Strategy<Value = LoadShape> {
        prop_oneof![Just(LoadShape::Domestic), Just(LoadShape::DomesticEconomy7), Just(LoadShape::Gas)]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        // R-RD-2: half hours, days and registers are the same data, whichever way it is cut.
        #[test]
        fn half_hours_days_and_registers_agree(
            shape in shape(), seed in any::<u64>(), start_day in 0i64..3000, hours in 1i64..96, offset_s in 0i64..86_400,
        ) {
            let origin = t("2018-01-01T00:00:00Z");
            let c = Consumption::for_meter(shape, seed, origin, Some(15_000));
            let from = origin + jiff::SignedDuration::from_hours(24 * start_day) + jiff::SignedDuration::from_secs(offset_s);
            let to = from + jiff::SignedDuration::from_hours(hours);
            // Registers never go backwards, second by second across a few half-hour edges.
            let mut prev = c.registers_at(from);
            for step in 1..=40 {
                let r = c.registers_at(from + jiff::SignedDuration::from_secs(step * 97));
                prop_assert!(r.import_wh >= prev.import_wh);
                prop_assert!(r.night_wh >= prev.night_wh);
                prev = r;
            }
            let hh = c.half_hours(from, to);
            if let (Some(first), Some(last)) = (hh.first(), hh.last()) {
                let end = last.0 + jiff::SignedDuration::from_secs(1800);
                let sum: u64 = hh.iter().map(|(_, wh)| wh).sum();
                prop_assert_eq!(sum, c.energy_between_wh(first.0, end));
            }
            let d0 = domain::time::london_date(from);
            let d1 = domain::time::london_date(to).tomorrow().unwrap();
            let days = c.days(d0, d1);
            let total: u64 = days.iter().map(|(_, wh)| wh).sum();
            let s0 = domain::time::start_of_london_day(d0).unwrap();
            let s1 = domain::time::start_of_london_day(d1).unwrap();
            prop_assert_eq!(total, c.energy_between_wh(s0, s1));
        }
    }
}
