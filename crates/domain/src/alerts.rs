//! GBCS device alert codes and their names, from the embedded reference table
//! (`data/reference/gbcs-alert-codes.csv`).

use std::collections::HashMap;
use std::sync::OnceLock;

const TABLE: &str = include_str!("../../../data/reference/gbcs-alert-codes.csv");

fn names() -> &'static HashMap<u16, &'static str> {
    static NAMES: OnceLock<HashMap<u16, &'static str>> = OnceLock::new();
    NAMES.get_or_init(|| {
        TABLE
            .lines()
            .filter_map(|line| {
                let (code, name) = line.split_once(',')?;
                let code = u16::from_str_radix(code.trim().strip_prefix("0x")?, 16).ok()?;
                Some((code, name.trim()))
            })
            .collect()
    })
}

/// The GBCS name of an alert code, if the table has it.
pub fn name(code: u16) -> Option<&'static str> {
    names().get(&code).copied()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_table_names_the_codes_the_meters_raise() {
        for code in [0x8F66, 0x8F67, 0x810D, 0x8F0F, 0x81AA, 0x81AB, 0x8119, 0x8F32, 0x8F51, 0x8F63, 0x81A9, 0x810E] {
            assert!(super::name(code).is_some(), "0x{code:04X} is not in the table");
        }
        assert_eq!(super::name(0x8F51), Some("Duplicate UTRN entered"));
    }
}
