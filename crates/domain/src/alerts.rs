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

/// Alerts the hub itself raises (quarantine, a command not delivered, ...). They travel the
/// same path as device alerts; their codes sit below the GBCS range (0x8000 up), so the two
/// never meet, and are written `hub.<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HubAlert {
    /// Requests were quarantined by a threshold (R-SR-5).
    Quarantine = 0x0001,
    /// A command the hub raised on a party's behalf was not delivered (given up or refused).
    DeliveryFailed = 0x0002,
    /// A request did not run (refused at execution, the device unreachable).
    CommandFailed = 0x0003,
    /// Firmware could not be distributed to a device.
    FirmwareDistributionFailed = 0x0004,
    /// A change of supplier completed at a metering point.
    ChangeOfSupplier = 0x0005,
}

impl HubAlert {
    pub const ALL: [HubAlert; 5] = [
        HubAlert::Quarantine,
        HubAlert::DeliveryFailed,
        HubAlert::CommandFailed,
        HubAlert::FirmwareDistributionFailed,
        HubAlert::ChangeOfSupplier,
    ];

    pub fn code(self) -> u16 {
        self as u16
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HubAlert::Quarantine => "hub.quarantine",
            HubAlert::DeliveryFailed => "hub.delivery-failed",
            HubAlert::CommandFailed => "hub.command-failed",
            HubAlert::FirmwareDistributionFailed => "hub.firmware-distribution-failed",
            HubAlert::ChangeOfSupplier => "hub.change-of-supplier",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HubAlert::Quarantine => "Requests quarantined by an anomaly threshold",
            HubAlert::DeliveryFailed => "Command raised by the hub not delivered",
            HubAlert::CommandFailed => "Service request failed",
            HubAlert::FirmwareDistributionFailed => "Firmware distribution failed",
            HubAlert::ChangeOfSupplier => "Change of supplier completed",
        }
    }

    pub fn of_code(code: u16) -> Option<HubAlert> {
        HubAlert::ALL.into_iter().find(|h| h.code() == code)
    }
}

/// An alert code as written in the dispatch table and the API: `0x8F35`, `hub.quarantine`.
pub fn code_text(code: u16) -> String {
    match HubAlert::of_code(code) {
        Some(h) => h.as_str().to_string(),
        None => format!("0x{code:04X}"),
    }
}

/// Read an alert code as written: `0x8F35` (any GBCS code, known to the table or not, in
/// 0x8000-0x8FFF) or a hub alert's name.
pub fn parse_code(text: &str) -> Result<u16, String> {
    if let Some(h) = HubAlert::ALL.into_iter().find(|h| h.as_str() == text) {
        return Ok(h.code());
    }
    text.strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .filter(|h| h.len() == 4)
        .and_then(|h| u16::from_str_radix(h, 16).ok())
        .filter(|c| (0x8000..=0x8FFF).contains(c))
        .ok_or_else(|| {
            format!(
                "a GBCS alert code 0x8000 to 0x8FFF (e.g. 0x8F35) or a hub alert ({})",
                HubAlert::ALL.map(HubAlert::as_str).join(", ")
            )
        })
}

/// The name of any alert code: GBCS or hub.
pub fn any_name(code: u16) -> Option<&'static str> {
    HubAlert::of_code(code).map(HubAlert::name).or_else(|| name(code))
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
