//! Instants and civil dates. GB market days are civil days in `Europe/London`; the zone
//! database is bundled, so results never depend on the machine.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// Earliest instant the hub accepts in any field.
pub const INSTANT_MIN: &str = "2000-01-01T00:00:00Z";
/// Latest instant the hub accepts in any field.
pub const INSTANT_MAX: &str = "2100-01-01T00:00:00Z";

/// The GB market time zone.
pub fn london() -> TimeZone {
    TimeZone::get("Europe/London").expect("Europe/London is in the bundled zone database")
}

/// The instant a civil date starts in London.
pub fn start_of_london_day(date: Date) -> Result<Timestamp, String> {
    date.to_zoned(london()).map(|z| z.timestamp()).map_err(|e| e.to_string())
}

/// The London civil date of an instant.
pub fn london_date(at: Timestamp) -> Date {
    at.to_zoned(london()).date()
}

/// The London wall-clock view of an instant.
pub fn in_london(at: Timestamp) -> Zoned {
    at.to_zoned(london())
}

/// Parse an instant: RFC 3339 with an offset (`2026-03-01T00:00:00Z`,
/// `2026-07-01T00:00:00+01:00`), or a civil date (`2026-03-01`) meaning the start of that day
/// in London. Bounded to [`INSTANT_MIN`, `INSTANT_MAX`).
pub fn parse_instant(s: &str) -> Result<Timestamp, String> {
    let s = s.trim();
    let at = if s.len() == 10 {
        let date: Date = s.parse().map_err(|e| format!("not a date (YYYY-MM-DD): {e}"))?;
        start_of_london_day(date)?
    } else {
        s.parse::<Timestamp>().map_err(|_| {
            "not an RFC 3339 instant with an offset (e.g. 2026-03-01T00:00:00Z) or a date (YYYY-MM-DD)".to_string()
        })?
    };
    let (min, max): (Timestamp, Timestamp) = (INSTANT_MIN.parse().expect("min"), INSTANT_MAX.parse().expect("max"));
    if at < min || at >= max {
        return Err(format!("must be from {INSTANT_MIN} and before {INSTANT_MAX}"));
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_table() {
        let table: &[(&str, Result<&str, &str>)] = &[
            ("2026-03-01T00:00:00Z", Ok("2026-03-01T00:00:00Z")),
            ("2026-07-01T00:00:00+01:00", Ok("2026-06-30T23:00:00Z")),
            // A summer date starts at 23:00 UTC the day before; a winter one at midnight.
            ("2026-07-01", Ok("2026-06-30T23:00:00Z")),
            ("2026-01-15", Ok("2026-01-15T00:00:00Z")),
            ("2026-02-30", Err("not a date")),
            ("2026-03-01T00:00:00", Err("not an RFC 3339")),
            ("yesterday", Err("not an RFC 3339")),
            ("1999-12-31", Err("must be from")),
            ("2100-01-01T00:00:00Z", Err("must be from")),
        ];
        for (input, want) in table {
            let got = parse_instant(input).map(|t| t.to_string());
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, *w, "{input}"),
                (Err(g), Err(w)) => assert!(g.starts_with(w), "{input}: {g}"),
                (g, w) => panic!("{input}: got {g:?}, want {w:?}"),
            }
        }
    }
}
