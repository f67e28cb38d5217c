//! GB working days. Bank holidays come from the GOV.UK data embedded in the build
//! (`data/reference/gb-bank-holidays-2012-2028.json`, Open Government Licence v3.0); for
//! years outside it they are computed from the standing rules (fixed dates with weekend
//! substitutes, Easter, the first/last Mondays), which reproduce the data for every year it
//! covers except one-off royal occasions and moved holidays.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use jiff::ToSpan;
use jiff::civil::{Date, Weekday};

use crate::ids::Mpan;

const DATA: &str = include_str!("../../../data/reference/gb-bank-holidays-2012-2028.json");

/// The three bank-holiday divisions of the UK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Division {
    EnglandAndWales,
    Scotland,
    NorthernIreland,
}

impl Division {
    pub const ALL: [Division; 3] = [Division::EnglandAndWales, Division::Scotland, Division::NorthernIreland];

    pub fn key(self) -> &'static str {
        match self {
            Division::EnglandAndWales => "england-and-wales",
            Division::Scotland => "scotland",
            Division::NorthernIreland => "northern-ireland",
        }
    }

    /// The division of an electricity metering point: distributors 17 (North Scotland) and
    /// 18 (South Scotland) are in Scotland; the rest of the GB distributors, and the
    /// independent network operators (24-36, which operate across GB), count as England and
    /// Wales.
    pub fn of_mpan(mpan: Mpan) -> Division {
        match mpan.distributor_id() {
            17 | 18 => Division::Scotland,
            _ => Division::EnglandAndWales,
        }
    }
}

/// Bank holidays of every division.
pub struct BankHolidays {
    data: [BTreeSet<Date>; 3],
    first_year: i16,
    last_year: i16,
}

/// The embedded calendar, parsed once.
pub fn bank_holidays() -> &'static BankHolidays {
    static CAL: LazyLock<BankHolidays> = LazyLock::new(BankHolidays::from_embedded);
    &CAL
}

impl BankHolidays {
    fn from_embedded() -> BankHolidays {
        let json: serde_json::Value = serde_json::from_str(DATA).expect("embedded bank holidays are JSON");
        let mut data: [BTreeSet<Date>; 3] = Default::default();
        for (i, div) in Division::ALL.iter().enumerate() {
            for event in json[div.key()]["events"].as_array().expect("events") {
                let date: Date = event["date"].as_str().expect("date").parse().expect("a civil date");
                data[i].insert(date);
            }
        }
        let years = data.iter().flatten().map(|d| d.year());
        let (first_year, last_year) = (years.clone().min().expect("data"), years.max().expect("data"));
        BankHolidays { data, first_year, last_year }
    }

    /// The years the embedded data covers (inclusive).
    pub fn data_years(&self) -> (i16, i16) {
        (self.first_year, self.last_year)
    }

    pub fn is_holiday(&self, division: Division, date: Date) -> bool {
        if (self.first_year..=self.last_year).contains(&date.year()) {
            self.data[division as usize].contains(&date)
        } else {
            computed_holidays(division, date.year()).contains(&date)
        }
    }

    /// Holidays of a year, from the data when it covers the year, else computed.
    pub fn holidays_in(&self, division: Division, year: i16) -> Vec<Date> {
        if (self.first_year..=self.last_year).contains(&year) {
            self.data[division as usize].iter().copied().filter(|d| d.year() == year).collect()
        } else {
            computed_holidays(division, year)
        }
    }

    /// Monday to Friday and not a bank holiday.
    pub fn is_working_day(&self, division: Division, date: Date) -> bool {
        !matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday) && !self.is_holiday(division, date)
    }

    /// The date `n` working days after `date` (`n` ≥ 1), skipping weekends and holidays.
    pub fn add_working_days(&self, division: Division, date: Date, n: u32) -> Date {
        let mut d = date;
        let mut left = n;
        while left > 0 {
            d = d.tomorrow().expect("within the civil range");
            if self.is_working_day(division, d) {
                left -= 1;
            }
        }
        d
    }
}

/// Easter Sunday (anonymous Gregorian algorithm).
pub fn easter_sunday(year: i16) -> Date {
    let y = i32::from(year);
    let a = y % 19;
    let b = y / 100;
    let c = y % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    Date::new(year, month as i8, day as i8).expect("a valid Easter date")
}

fn nth_weekday(year: i16, month: i8, weekday: Weekday, nth: i8) -> Date {
    Date::new(year, month, 1).expect("first of month").nth_weekday_of_month(nth, weekday).expect("exists")
}

/// Fixed-date holidays move to the next free weekday when they fall on a weekend.
fn with_substitutes(fixed: &[Date], out: &mut Vec<Date>) {
    for &day in fixed {
        let mut d = day;
        while matches!(d.weekday(), Weekday::Saturday | Weekday::Sunday) || out.contains(&d) {
            d = d.checked_add(1.day()).expect("in range");
        }
        out.push(d);
    }
}

/// The standing rules for a year (no one-off occasions).
pub fn computed_holidays(division: Division, year: i16) -> Vec<Date> {
    let date = |m: i8, d: i8| Date::new(year, m, d).expect("valid date");
    let easter = easter_sunday(year);
    let mut out = Vec::new();
    match division {
        Division::EnglandAndWales | Division::NorthernIreland => {
            with_substitutes(&[date(1, 1)], &mut out);
            if division == Division::NorthernIreland {
                with_substitutes(&[date(3, 17)], &mut out);
            }
            out.push(easter.checked_sub(2.days()).expect("Good Friday"));
            out.push(easter.checked_add(1.day()).expect("Easter Monday"));
            out.push(nth_weekday(year, 5, Weekday::Monday, 1));
            out.push(nth_weekday(year, 5, Weekday::Monday, -1));
            if division == Division::NorthernIreland {
                with_substitutes(&[date(7, 12)], &mut out);
            }
            out.push(nth_weekday(year, 8, Weekday::Monday, -1));
        }
        Division::Scotland => {
            with_substitutes(&[date(1, 1), date(1, 2)], &mut out);
            out.push(easter.checked_sub(2.days()).expect("Good Friday"));
            out.push(nth_weekday(year, 5, Weekday::Monday, 1));
            out.push(nth_weekday(year, 5, Weekday::Monday, -1));
            out.push(nth_weekday(year, 8, Weekday::Monday, 1));
            with_substitutes(&[date(11, 30)], &mut out);
        }
    }
    with_substitutes(&[date(12, 25), date(12, 26)], &mut out);
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn easter_known_dates() {
        for (y, m, d) in [(2024, 3, 31), (2025, 4, 20), (2026, 4, 5), (2027, 3, 28), (2038, 4, 25)] {
            assert_eq!(easter_sunday(y), Date::new(y, m, d).unwrap(), "{y}");
        }
    }

    /// The computed rules agree with the GOV.UK data for every covered year, apart from the
    /// one-off occasions and moved holidays listed here.
    #[test]
    fn computed_rules_reproduce_the_data() {
        let cal = bank_holidays();
        let d = |s: &str| -> Date { s.parse().unwrap() };
        // (division or all, date): in the data but not the rules.
        let extra = [
            "2012-06-04",
            "2012-06-05", // spring holiday moved, Diamond Jubilee
            "2020-05-08", // early May moved to VE Day
            "2022-06-02",
            "2022-06-03", // spring moved, Platinum Jubilee
            "2022-09-19", // State Funeral
            "2023-05-08", // Coronation
        ];
        // In the rules but not the data (the holidays that were moved).
        let missing = ["2012-05-28", "2020-05-04", "2022-05-30"];
        for div in Division::ALL {
            let (first, last) = cal.data_years();
            for year in first..=last {
                let data: Vec<Date> = cal.holidays_in(div, year);
                let rules = computed_holidays(div, year);
                for x in &data {
                    if !rules.contains(x) && !extra.contains(&x.to_string().as_str()) {
                        // Scotland and Northern Ireland have a few more local variations.
                        assert!(
                            div != Division::EnglandAndWales && scot_ni_known(div, *x),
                            "{div:?} {x} in the data, not the rules"
                        );
                    }
                }
                for x in &rules {
                    if !data.contains(x) {
                        assert!(
                            missing.contains(&x.to_string().as_str()) || scot_ni_known(div, *x),
                            "{div:?} {x} in the rules, not the data"
                        );
                    }
                }
            }
        }
        assert_eq!(cal.holidays_in(Division::EnglandAndWales, 2026).len(), 8);
        assert_eq!(cal.holidays_in(Division::Scotland, 2026).len(), 9);
        assert_eq!(cal.holidays_in(Division::NorthernIreland, 2026).len(), 10);
        assert_eq!(computed_holidays(Division::EnglandAndWales, 2031).len(), 8);
        assert!(cal.is_holiday(Division::EnglandAndWales, d("2026-12-28")), "Boxing Day substitute");
        assert!(cal.is_holiday(Division::Scotland, d("2030-01-02")));
        assert!(!cal.is_holiday(Division::EnglandAndWales, d("2030-01-02")));
    }

    /// Scottish and Northern Irish holidays that the data moves for local reasons.
    fn scot_ni_known(div: Division, x: Date) -> bool {
        let known_scotland = ["2012-05-28", "2020-05-04", "2022-05-30"];
        let known_ni = ["2012-05-28", "2020-05-04", "2022-05-30"];
        match div {
            Division::Scotland => known_scotland.contains(&x.to_string().as_str()),
            Division::NorthernIreland => known_ni.contains(&x.to_string().as_str()),
            Division::EnglandAndWales => false,
        }
    }

    #[test]
    fn working_days_skip_weekends_and_holidays() {
        let cal = bank_holidays();
        let d = |s: &str| -> Date { s.parse().unwrap() };
        // Thursday 24 Dec 2026 + 1 working day: Fri 25 (Christmas), Sat, Sun, Mon 28 (Boxing
        // Day substitute) are skipped → Tuesday 29.
        assert_eq!(cal.add_working_days(Division::EnglandAndWales, d("2026-12-24"), 1), d("2026-12-29"));
        // Friday 1 May 2026 + 5: Monday 4 May is a holiday, so 5, 6, 7, 8, 11 May.
        assert_eq!(cal.add_working_days(Division::EnglandAndWales, d("2026-05-01"), 5), d("2026-05-11"));
        // Scotland works on Easter Monday.
        assert_eq!(cal.add_working_days(Division::Scotland, d("2026-04-02"), 1), d("2026-04-06"));
        assert_eq!(cal.add_working_days(Division::EnglandAndWales, d("2026-04-02"), 1), d("2026-04-07"));
    }
}
