//! Registration data (R-REG-1, R-REG-4): per metering point, effective-dated versions of
//! who supplies it, who carries it, what meter it has. History is never overwritten: a new
//! version is appended, and the version in force at an instant is the one with the latest
//! `effective_from` not after that instant (ties go to the later-recorded version, which is
//! how a correction is made).

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;

use crate::ids::{Fuel, Mpxn};
use crate::party::{PartyId, Role, Roles};

/// Gas supply points consuming more than this a year are "large" (R-COS-2).
pub const GAS_LARGE_SUPPLY_POINT_KWH_MIN: u64 = 73_200;
/// Upper bound on a gas annual quantity accepted by the registry (10 TWh a year).
pub const ANNUAL_QUANTITY_KWH_MAX: u64 = 10_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MeterType {
    Traditional,
    SmartCompliant,
}

impl MeterType {
    pub fn as_str(self) -> &'static str {
        match self {
            MeterType::Traditional => "traditional",
            MeterType::SmartCompliant => "smart-compliant",
        }
    }
}

impl fmt::Display for MeterType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MeterType {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "traditional" => Ok(MeterType::Traditional),
            "smart-compliant" => Ok(MeterType::SmartCompliant),
            _ => Err("must be \"traditional\" or \"smart-compliant\""),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PaymentMode {
    #[default]
    Credit,
    Prepayment,
}

impl PaymentMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMode::Credit => "credit",
            PaymentMode::Prepayment => "prepayment",
        }
    }
}

impl fmt::Display for PaymentMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PaymentMode {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "credit" => Ok(PaymentMode::Credit),
            "prepayment" => Ok(PaymentMode::Prepayment),
            _ => Err("must be \"credit\" or \"prepayment\""),
        }
    }
}

/// What the registration service records about a metering point from a date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationData {
    /// Import supplier (electricity) or gas supplier (gas).
    pub supplier: PartyId,
    /// Electricity only, optional.
    pub export_supplier: Option<PartyId>,
    /// Gas only, required for gas.
    pub shipper: Option<PartyId>,
    /// Distributor (electricity) or transporter (gas).
    pub network_operator: PartyId,
    pub meter_type: MeterType,
    /// Often unknown to registration (R-REG-4); nothing in the hub depends on it.
    pub payment_mode: Option<PaymentMode>,
    /// Gas annual quantity, kWh a year; gas only.
    pub annual_quantity_kwh: Option<u64>,
}

/// A registration as recorded: the data, from when it is effective, when and by whom it was
/// recorded, and its sequence number (strictly increasing in recording order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationVersion {
    pub seq: i64,
    pub mpxn: Mpxn,
    pub effective_from: Timestamp,
    pub data: RegistrationData,
    pub recorded_at: Timestamp,
    pub recorded_by: PartyId,
}

/// Whether the smart metering system at a metering point is enrolled in the hub, from when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolmentVersion {
    pub seq: i64,
    pub mpxn: Mpxn,
    pub effective_from: Timestamp,
    pub enrolled: bool,
    pub recorded_at: Timestamp,
    pub recorded_by: PartyId,
}

/// A registration field that broke a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct FieldError {
    pub field: &'static str,
    pub rule: String,
}

impl FieldError {
    pub fn new(field: &'static str, rule: impl Into<String>) -> FieldError {
        FieldError { field, rule: rule.into() }
    }
}

/// Check registration data for a metering point against its fuel and the roles of the
/// parties it names. `roles_of` answers `None` for an unknown party.
pub fn validate_registration(
    mpxn: &Mpxn,
    data: &RegistrationData,
    roles_of: impl Fn(&PartyId) -> Option<Roles>,
) -> Result<(), FieldError> {
    let fuel = mpxn.fuel();
    let need = |field: &'static str, party: &PartyId, role: Role| -> Result<(), FieldError> {
        match roles_of(party) {
            None => Err(FieldError::new(field, format!("party {party} is not known to the hub"))),
            Some(r) if !r.contains(role) => Err(FieldError::new(
                field,
                format!(
                    "party {party} must hold role {} ({}) for {} metering point",
                    role.code(),
                    role.name(),
                    if fuel == Fuel::Electricity { "an electricity" } else { "a gas" }
                ),
            )),
            Some(_) => Ok(()),
        }
    };
    match fuel {
        Fuel::Electricity => {
            need("supplier", &data.supplier, Role::ImportSupplier)?;
            need("network_operator", &data.network_operator, Role::ElectricityDistributor)?;
            if let Some(es) = &data.export_supplier {
                need("export_supplier", es, Role::ExportSupplier)?;
            }
            if data.shipper.is_some() {
                return Err(FieldError::new("shipper", "only gas metering points have a shipper"));
            }
            if data.annual_quantity_kwh.is_some() {
                return Err(FieldError::new("annual_quantity_kwh", "only gas metering points have an annual quantity"));
            }
        }
        Fuel::Gas => {
            need("supplier", &data.supplier, Role::GasSupplier)?;
            need("network_operator", &data.network_operator, Role::GasTransporter)?;
            match &data.shipper {
                None => {
                    return Err(FieldError::new("shipper", "a gas metering point needs a shipper"));
                }
                Some(s) => need("shipper", s, Role::GasSupplier)?,
            }
            if data.export_supplier.is_some() {
                return Err(FieldError::new(
                    "export_supplier",
                    "only electricity metering points have an export supplier",
                ));
            }
            if let Some(aq) = data.annual_quantity_kwh
                && aq > ANNUAL_QUANTITY_KWH_MAX
            {
                return Err(FieldError::new(
                    "annual_quantity_kwh",
                    format!("must be at most {ANNUAL_QUANTITY_KWH_MAX} kWh a year"),
                ));
            }
        }
    }
    Ok(())
}

/// Large gas supply point (> 73,200 kWh a year); `None` when the annual quantity is unknown
/// or the point is electricity.
pub fn is_large_gas_supply_point(mpxn: &Mpxn, data: &RegistrationData) -> Option<bool> {
    match mpxn.fuel() {
        Fuel::Gas => data.annual_quantity_kwh.map(|aq| aq > GAS_LARGE_SUPPLY_POINT_KWH_MIN),
        Fuel::Electricity => None,
    }
}

/// The version in force at `at` among `versions` (any order): latest `effective_from` not
/// after `at`, ties to the highest `seq`. Used by the in-memory paths and by tests as the
/// reference the store's query must agree with.
pub fn in_force_at(versions: &[RegistrationVersion], at: Timestamp) -> Option<&RegistrationVersion> {
    versions.iter().filter(|v| v.effective_from <= at).max_by_key(|v| (v.effective_from, v.seq))
}

/// The start of the unbroken period, up to `at`, in which `party` is the registered
/// supplier: the earliest effective date such that every version in force from then to `at`
/// names it. `None` if it is not the supplier at `at`. A supplier's data entitlement begins
/// there (R-COS-4).
pub fn supplier_period_start(versions: &[RegistrationVersion], party: &PartyId, at: Timestamp) -> Option<Timestamp> {
    supplier_periods(versions, party, at).last().filter(|(_, to)| to.is_none()).map(|(from, _)| *from)
}

/// The periods `[from, to)` in which `party` was the registered supplier, as the versions in
/// force up to `at` show them, oldest first; the last has `to = None` if it still holds at
/// `at`. A former supplier reads only inside its own period (R-COS-4).
pub fn supplier_periods(
    versions: &[RegistrationVersion],
    party: &PartyId,
    at: Timestamp,
) -> Vec<(Timestamp, Option<Timestamp>)> {
    let mut sorted: Vec<&RegistrationVersion> = versions.iter().filter(|v| v.effective_from <= at).collect();
    sorted.sort_by_key(|v| (v.effective_from, v.seq));
    let mut timeline: Vec<&RegistrationVersion> = Vec::new();
    for v in sorted {
        if timeline.last().is_some_and(|l| l.effective_from == v.effective_from) {
            timeline.pop();
        }
        timeline.push(v);
    }
    let mut out: Vec<(Timestamp, Option<Timestamp>)> = Vec::new();
    let mut open: Option<Timestamp> = None;
    for v in &timeline {
        match (open, v.data.supplier == *party) {
            (None, true) => open = Some(v.effective_from),
            (Some(from), false) => {
                out.push((from, Some(v.effective_from)));
                open = None;
            }
            _ => {}
        }
    }
    if let Some(from) = open {
        out.push((from, None));
    }
    out
}
