//! Consumption computed from (seed, shape, time), never stored per half hour.
//!
//! Each shape has a cumulative table: the energy (in W·s) an average customer has used from
//! the start of [`EPOCH`] to the start of every London day up to [`END`]. A meter's import
//! register at instant `t` is then `initial + scale × (W(t) − W(installed))` plus a bounded
//! noise term that telescopes: half-hour `k` gets `δ(k+1) − δ(k)`, interpolated linearly
//! within the half hour, so any register difference costs O(1) and half-hours, days and
//! registers always add up exactly (R-RD-2). The noise amplitude is kept below the smallest
//! half-hour of the scaled shape, so registers never go backwards.
//!
//! Economy 7 meters also keep a night register (00:30-07:30 UTC); their consumption varies
//! per meter by scale only (the noise cannot split cleanly across two registers).

use std::sync::LazyLock;

use domain::time::{london, london_date, start_of_london_day};
use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp, ToSpan};

use crate::profile::{LoadShape, day_watts};

/// First day of the tables.
pub const EPOCH: Date = jiff::civil::date(2000, 1, 1);
/// Day after the last day of the tables.
pub const END: Date = jiff::civil::date(2100, 1, 1);

const HALF_HOUR_SECS: i64 = 1800;
/// Night register window, seconds of the UTC day.
const NIGHT_START_SECS: i64 = 1800;
const NIGHT_END_SECS: i64 = 27_000;

struct Day {
    /// The day's first instant, Unix seconds.
    start: i64,
    /// Local settlement period (0-based) of each half hour of the day: 46, 48 or 50 of them.
    periods: Vec<u8>,
}

fn day_layout(date: Date) -> Day {
    let start = start_of_london_day(date).expect("London days exist").as_second();
    let next = start_of_london_day(date.tomorrow().expect("in range")).expect("exists").as_second();
    let n = ((next - start) / HALF_HOUR_SECS) as usize;
    let periods = if n == 48 {
        (0..48).collect()
    } else {
        let tz = london();
        (0..n)
            .map(|i| {
                let t = Timestamp::from_second(start + i as i64 * HALF_HOUR_SECS).expect("in range");
                let z = t.to_zoned(tz.clone());
                (z.hour() * 2 + z.minute() / 30) as u8
            })
            .collect()
    };
    Day { start, periods }
}

fn is_night(half_hour_start: i64) -> bool {
    let secs = half_hour_start.rem_euclid(86_400);
    (NIGHT_START_SECS..NIGHT_END_SECS).contains(&secs)
}

struct Cumulative {
    /// W·s from the start of EPOCH to the start of each day; one more entry than days.
    all: Vec<u64>,
    /// The same, for night-register half hours only.
    night: Vec<u64>,
}

fn build(shape: LoadShape) -> Cumulative {
    let days = EPOCH.until(END).expect("span").get_days() as usize;
    let mut all = Vec::with_capacity(days + 1);
    let mut night = Vec::with_capacity(days + 1);
    let (mut a, mut n) = (0u64, 0u64);
    let mut date = EPOCH;
    for _ in 0..days {
        all.push(a);
        night.push(n);
        let day = day_layout(date);
        let w = day_watts(shape, date);
        for (i, p) in day.periods.iter().enumerate() {
            let ws = u64::from(w[usize::from(*p)]) * HALF_HOUR_SECS as u64;
            a += ws;
            if is_night(day.start + i as i64 * HALF_HOUR_SECS) {
                n += ws;
            }
        }
        date = date.tomorrow().expect("in range");
    }
    all.push(a);
    night.push(n);
    Cumulative { all, night }
}

static TABLES: [LazyLock<Cumulative>; 3] = [
    LazyLock::new(|| build(LoadShape::Domestic)),
    LazyLock::new(|| build(LoadShape::DomesticEconomy7)),
    LazyLock::new(|| build(LoadShape::Gas)),
];

/// Clamp an instant into the tables' range.
fn clamp(t: Timestamp) -> Timestamp {
    static BOUNDS: LazyLock<(Timestamp, Timestamp)> = LazyLock::new(|| {
        let lo = start_of_london_day(EPOCH).expect("epoch");
        let hi = start_of_london_day(END).expect("end") - SignedDuration::from_secs(1);
        (lo, hi)
    });
    t.clamp(BOUNDS.0, BOUNDS.1)
}

/// Average-customer energy (W·s) of `shape` from EPOCH to `t`: (all, night).
pub fn cumulative_ws(shape: LoadShape, t: Timestamp) -> (u64, u64) {
    let t = clamp(t);
    let table = &TABLES[shape.index()];
    let date = london_date(t);
    let idx = EPOCH.until(date).expect("span").get_days() as usize;
    let (mut all, mut night) = (table.all[idx], table.night[idx]);
    let day = day_layout(date);
    let w = day_watts(shape, date);
    let now = t.as_second();
    for (i, p) in day.periods.iter().enumerate() {
        let hh_start = day.start + i as i64 * HALF_HOUR_SECS;
        if hh_start >= now {
            break;
        }
        let secs = (now - hh_start).min(HALF_HOUR_SECS) as u64;
        let ws = u64::from(w[usize::from(*p)]) * secs;
        all += ws;
        if is_night(hh_start) {
            night += ws;
        }
    }
    (all, night)
}

/// SplitMix64: the per-half-hour noise draw.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One meter's consumption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consumption {
    pub shape: LoadShape,
    /// 1,000,000 = the average customer of the shape (or, for gas, 12,000 kWh a year).
    pub scale_ppm: u64,
    /// Seed of the noise draws.
    pub seed: u64,
    /// Largest noise offset, mWh (0 for Economy 7).
    pub noise_mwh: u64,
    /// When the meter started counting.
    pub origin: Timestamp,
    /// Import register at `origin`, Wh.
    pub initial_wh: u64,
}

/// Registers at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registers {
    /// Total import, Wh.
    pub import_wh: u64,
    /// Economy 7 night register, Wh (part of `import_wh`).
    pub night_wh: Option<u64>,
}

/// Smallest average watts of a shape (the noise must stay below it).
fn min_watts(shape: LoadShape) -> u64 {
    static MIN: LazyLock<[u64; 3]> = LazyLock::new(|| {
        let mut out = [u64::MAX; 3];
        // Every season and day type appears within two years.
        let mut d = jiff::civil::date(2025, 1, 1);
        for _ in 0..731 {
            for s in LoadShape::ALL {
                let w = day_watts(s, d);
                out[s.index()] = out[s.index()].min(u64::from(*w.iter().min().expect("48 periods")));
            }
            d = d.tomorrow().expect("in range");
        }
        out
    });
    MIN[shape.index()]
}

impl Consumption {
    /// A meter's consumption from its seed: scale between 0.4 and 2.5 times the average
    /// customer (skewed towards 1), or the gas annual quantity when known.
    pub fn for_meter(shape: LoadShape, seed: u64, origin: Timestamp, annual_quantity_kwh: Option<u64>) -> Consumption {
        let r1 = mix(seed ^ 0x5EED_0001);
        let r2 = mix(seed ^ 0x5EED_0002);
        // Product of two uniforms in [0.63, 1.58]: 0.4..2.5, median about 1.
        let u = |r: u64| 630_000 + (r % 950_000);
        let mut scale_ppm = u(r1) * u(r2) / 1_000_000;
        if let (LoadShape::Gas, Some(aq)) = (shape, annual_quantity_kwh) {
            scale_ppm = aq.saturating_mul(1_000_000) / 12_000;
        }
        let noise_mwh = match shape {
            LoadShape::DomesticEconomy7 => 0,
            // 80% of the smallest scaled half hour, in mWh.
            _ => min_watts(shape) * scale_ppm / 1_000_000 * 1800 * 1000 / 3600 * 8 / 10,
        };
        let initial_wh = mix(seed ^ 0x5EED_0003) % 40_000_000;
        Consumption { shape, scale_ppm, seed, noise_mwh, origin, initial_wh }
    }

    fn delta_mwh(&self, k: i64) -> i128 {
        if self.noise_mwh == 0 {
            return 0;
        }
        i128::from(mix(self.seed ^ (k as u64).wrapping_mul(0xA24B_AED4_963E_E407)) % (self.noise_mwh + 1))
    }

    /// Energy since EPOCH in mWh, as the floor of one monotone expression (see the module
    /// documentation).
    fn energy_mwh(&self, t: Timestamp) -> (i128, i128) {
        let t = clamp(t);
        let (all, night) = cumulative_ws(self.shape, t);
        let secs = t.as_second();
        let k = secs.div_euclid(HALF_HOUR_SECS);
        let s = i128::from(secs.rem_euclid(HALF_HOUR_SECS));
        let (dk, dk1) = (self.delta_mwh(k), self.delta_mwh(k + 1));
        let hh = i128::from(HALF_HOUR_SECS);
        let scale = i128::from(self.scale_ppm);
        let n = scale * i128::from(all) * hh + 3_600_000 * (dk * hh + (dk1 - dk) * s);
        let all_mwh = n.div_euclid(3_600_000 * hh);
        let night_mwh = (scale * i128::from(night)).div_euclid(3_600_000);
        (all_mwh, night_mwh)
    }

    /// Registers at `t` (the origin's registers before it).
    pub fn registers_at(&self, t: Timestamp) -> Registers {
        let t = t.max(self.origin);
        let (a0, n0) = self.energy_mwh(self.origin);
        let (a, n) = self.energy_mwh(t);
        let import_wh = self.initial_wh + ((a - a0) / 1000) as u64;
        let night_wh = (self.shape == LoadShape::DomesticEconomy7).then(|| ((n - n0) / 1000) as u64);
        Registers { import_wh, night_wh }
    }

    /// Wh imported in `[from, to)`.
    pub fn energy_between_wh(&self, from: Timestamp, to: Timestamp) -> u64 {
        self.registers_at(to).import_wh.saturating_sub(self.registers_at(from).import_wh)
    }

    /// Half-hourly consumption for the half hours starting in `[from, to)` (aligned to
    /// half-hour boundaries): (start, Wh).
    pub fn half_hours(&self, from: Timestamp, to: Timestamp) -> Vec<(Timestamp, u64)> {
        let first = from.as_second().div_euclid(HALF_HOUR_SECS) * HALF_HOUR_SECS
            + if from.as_second().rem_euclid(HALF_HOUR_SECS) == 0 { 0 } else { HALF_HOUR_SECS };
        let mut out = Vec::new();
        let mut start = first;
        let mut prev = self.registers_at(Timestamp::from_second(start).expect("in range")).import_wh;
        while start < to.as_second() {
            let end = Timestamp::from_second(start + HALF_HOUR_SECS).expect("in range");
            let reg = self.registers_at(end).import_wh;
            out.push((Timestamp::from_second(start).expect("in range"), reg - prev));
            prev = reg;
            start += HALF_HOUR_SECS;
        }
        out
    }

    /// Daily consumption for London days `[from, to)`: (date, Wh).
    pub fn days(&self, from: Date, to: Date) -> Vec<(Date, u64)> {
        let mut out = Vec::new();
        let mut d = from;
        let mut prev = self.registers_at(start_of_london_day(d).expect("day")).import_wh;
        while d < to {
            let next = d.checked_add(1.day()).expect("in range");
            let reg = self.registers_at(start_of_london_day(next).expect("day")).import_wh;
            out.push((d, reg - prev));
            prev = reg;
            d = next;
        }
        out
    }
}
