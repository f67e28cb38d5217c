//! Load shapes: the Electricity Association profile classes 1 (domestic unrestricted) and 2
//! (domestic Economy 7) by season and day type, and a documented daily model for gas.
//! Data: `data/reference/profile-classes-avg-hh-kw.csv` (load research provided to UKERC
//! courtesy of Elexon Ltd).
//!
//! Seasons, after the load-research convention, defined exactly here:
//! - winter: from the autumn clock change (last Sunday in October) to the day before the
//!   spring clock change (last Sunday in March);
//! - high summer: the 6 weeks and 2 days (44 days) before the August bank holiday (last
//!   Monday in August);
//! - summer: the 10 weeks before high summer;
//! - spring: from the spring clock change to the day before summer;
//! - autumn: from the August bank holiday to the day before the autumn clock change.
//!
//! Day types: weekday, Saturday, Sunday; England and Wales bank holidays count as Sundays
//! (the load research is national, so one calendar serves every meter).

use std::sync::LazyLock;

use domain::calendar::{Division, bank_holidays};
use jiff::ToSpan;
use jiff::civil::{Date, Weekday};

const DATA: &str = include_str!("../../../data/reference/profile-classes-avg-hh-kw.csv");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Season {
    Winter,
    Spring,
    Summer,
    HighSummer,
    Autumn,
}

impl Season {
    fn parse(s: &str) -> Season {
        match s {
            "winter" => Season::Winter,
            "spring" => Season::Spring,
            "summer" => Season::Summer,
            "high_summer" => Season::HighSummer,
            "autumn" => Season::Autumn,
            other => panic!("unknown season {other:?} in the profile data"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DayType {
    Weekday,
    Saturday,
    Sunday,
}

/// What a meter's consumption follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadShape {
    /// Profile class 1: domestic unrestricted.
    Domestic,
    /// Profile class 2: domestic Economy 7 (night register 00:30-07:30 UTC).
    DomesticEconomy7,
    /// Gas: the daily model in [`gas_watts`].
    Gas,
}

impl LoadShape {
    pub const ALL: [LoadShape; 3] = [LoadShape::Domestic, LoadShape::DomesticEconomy7, LoadShape::Gas];

    pub fn index(self) -> usize {
        self as usize
    }
}

fn last_weekday(year: i16, month: i8, weekday: Weekday) -> Date {
    Date::new(year, month, 1).expect("valid").nth_weekday_of_month(-1, weekday).expect("exists")
}

/// The load-research season of a civil date.
pub fn season(date: Date) -> Season {
    let y = date.year();
    let spring_change = last_weekday(y, 3, Weekday::Sunday);
    let autumn_change = last_weekday(y, 10, Weekday::Sunday);
    let august_holiday = last_weekday(y, 8, Weekday::Monday);
    let high_summer = august_holiday.checked_sub(44.days()).expect("in range");
    let summer = high_summer.checked_sub(70.days()).expect("in range");
    if date < spring_change || date >= autumn_change {
        Season::Winter
    } else if date < summer {
        Season::Spring
    } else if date < high_summer {
        Season::Summer
    } else if date < august_holiday {
        Season::HighSummer
    } else {
        Season::Autumn
    }
}

/// The load-research day type of a civil date.
pub fn day_type(date: Date) -> DayType {
    if bank_holidays().is_holiday(Division::EnglandAndWales, date) {
        return DayType::Sunday;
    }
    match date.weekday() {
        Weekday::Saturday => DayType::Saturday,
        Weekday::Sunday => DayType::Sunday,
        _ => DayType::Weekday,
    }
}

/// Average demand in watts per settlement period (0-based, by local clock time).
struct Table {
    /// [class 1|2][season][day type][period]
    watts: [[[[u32; 48]; 3]; 5]; 2],
}

static TABLE: LazyLock<Table> = LazyLock::new(|| {
    let mut watts = [[[[0u32; 48]; 3]; 5]; 2];
    let mut seen = 0;
    for line in DATA.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let class: usize = f[0].parse().expect("class");
        if !(1..=2).contains(&class) {
            continue;
        }
        let season = Season::parse(f[1]) as usize;
        let day = match f[2] {
            "weekday" => 0,
            "saturday" => 1,
            "sunday" => 2,
            other => panic!("unknown day type {other:?}"),
        };
        let period: usize = f[3].parse::<usize>().expect("period") - 1;
        let kw: f64 = f[5].parse().expect("kW");
        watts[class - 1][season][day][period] = (kw * 1000.0).round() as u32;
        seen += 1;
    }
    assert_eq!(seen, 2 * 5 * 3 * 48, "profile classes 1 and 2 are complete");
    Table { watts }
});

/// Average watts of a profile class (1 or 2) in a local settlement period (0-based).
pub fn profile_watts(class: u8, season: Season, day: DayType, period: usize) -> u32 {
    TABLE.watts[usize::from(class) - 1][season as usize][day as usize][period]
}

/// The gas model, for a reference supply point of 12,000 kWh a year (about 1,369 W on
/// average): a daily level following the temperature year, `1 + 0.6 cos(2π (doy − 15) / 365)`
/// (coldest mid-January, four times the midsummer level), shaped over the day by heating
/// periods (06:00-09:00 and 16:30-22:00 local at 2×, night 23:00-05:30 at 0.3×, else 1×,
/// normalised so the day averages the daily level). Meters scale it by their annual quantity.
pub fn gas_watts(date: Date, period: usize) -> u32 {
    const REFERENCE_WATTS: f64 = 12_000_000.0 / 8766.0;
    let doy = f64::from(date.day_of_year());
    let level = 1.0 + 0.6 * (2.0 * std::f64::consts::PI * (doy - 15.0) / 365.0).cos();
    let shape = |p: usize| -> f64 {
        match p {
            12..=17 | 33..=43 => 2.0,
            0..=10 | 46..=47 => 0.3,
            _ => 1.0,
        }
    };
    let mean: f64 = (0..48).map(shape).sum::<f64>() / 48.0;
    (REFERENCE_WATTS * level * shape(period) / mean).round() as u32
}

/// Average watts of a shape in each local settlement period (0-based) of a date.
pub fn day_watts(shape: LoadShape, date: Date) -> [u32; 48] {
    match shape {
        LoadShape::Domestic | LoadShape::DomesticEconomy7 => {
            let class = if shape == LoadShape::Domestic { 0 } else { 1 };
            TABLE.watts[class][season(date) as usize][day_type(date) as usize]
        }
        LoadShape::Gas => std::array::from_fn(|p| gas_watts(date, p)),
    }
}
