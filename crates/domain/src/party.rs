//! Parties (organisations that use the hub) and the roles they hold.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::ids::{Eui64, Fuel};

/// A party's identifier: 2 to 40 characters, lower-case ASCII letters, digits and hyphens,
/// starting with a letter or digit (`acme-energy`, `dno-14`). The text is shared: a clone
/// copies a pointer, not the text (requests, registrations and cached facts all carry one).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartyId(Arc<str>);

/// Why a party id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid party id {input:?}: {rule}")]
pub struct PartyIdError {
    pub input: String,
    pub rule: &'static str,
}

impl PartyId {
    pub const MAX_LEN: usize = 40;

    pub fn parse(s: &str) -> Result<PartyId, PartyIdError> {
        let err = |rule| PartyIdError { input: s.chars().take(64).collect(), rule };
        if s.len() < 2 || s.len() > Self::MAX_LEN {
            return Err(err("length: must be 2 to 40 characters"));
        }
        if !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(err("character: only lower-case letters a-z, digits and '-' are allowed"));
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(err("character: may not start or end with '-'"));
        }
        Ok(PartyId(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PartyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for PartyId {
    type Err = PartyIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PartyId::parse(s)
    }
}

/// The roles a party can hold: the seven DUIS user roles, then the hub's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// DUIS IS: import (electricity) supplier.
    ImportSupplier,
    /// DUIS ES: export supplier.
    ExportSupplier,
    /// DUIS GS: gas supplier (and shipper).
    GasSupplier,
    /// DUIS ED: electricity distributor (network operator).
    ElectricityDistributor,
    /// DUIS GT: gas transporter (network operator).
    GasTransporter,
    /// DUIS OU: other user, e.g. an energy services company (ESCO).
    OtherUser,
    /// DUIS RSA: registered supplier agent.
    RegisteredSupplierAgent,
    /// Payment service provider (takes top-up payments).
    PaymentServiceProvider,
    /// Meter asset provider.
    MeterAssetProvider,
    /// Device manufacturer (signs firmware images).
    Manufacturer,
    /// The registration service (writes the registry).
    RegistrationService,
    /// The hub operator.
    HubOperator,
}

impl Role {
    pub const ALL: [Role; 12] = [
        Role::ImportSupplier,
        Role::ExportSupplier,
        Role::GasSupplier,
        Role::ElectricityDistributor,
        Role::GasTransporter,
        Role::OtherUser,
        Role::RegisteredSupplierAgent,
        Role::PaymentServiceProvider,
        Role::MeterAssetProvider,
        Role::Manufacturer,
        Role::RegistrationService,
        Role::HubOperator,
    ];

    /// The short code (DUIS codes for the DUIS roles).
    pub fn code(self) -> &'static str {
        match self {
            Role::ImportSupplier => "IS",
            Role::ExportSupplier => "ES",
            Role::GasSupplier => "GS",
            Role::ElectricityDistributor => "ED",
            Role::GasTransporter => "GT",
            Role::OtherUser => "OU",
            Role::RegisteredSupplierAgent => "RSA",
            Role::PaymentServiceProvider => "PSP",
            Role::MeterAssetProvider => "MAP",
            Role::Manufacturer => "MFR",
            Role::RegistrationService => "REG",
            Role::HubOperator => "HUB",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::ImportSupplier => "import supplier",
            Role::ExportSupplier => "export supplier",
            Role::GasSupplier => "gas supplier",
            Role::ElectricityDistributor => "electricity distributor",
            Role::GasTransporter => "gas transporter",
            Role::OtherUser => "other user",
            Role::RegisteredSupplierAgent => "registered supplier agent",
            Role::PaymentServiceProvider => "payment service provider",
            Role::MeterAssetProvider => "meter asset provider",
            Role::Manufacturer => "manufacturer",
            Role::RegistrationService => "registration service",
            Role::HubOperator => "hub operator",
        }
    }

    /// The fuel a role is tied to, if any: an import supplier acts on electricity metering
    /// points, a gas transporter on gas ones.
    pub fn fuel(self) -> Option<Fuel> {
        match self {
            Role::ImportSupplier | Role::ExportSupplier | Role::ElectricityDistributor => Some(Fuel::Electricity),
            Role::GasSupplier | Role::GasTransporter => Some(Fuel::Gas),
            _ => None,
        }
    }

    pub fn parse(s: &str) -> Result<Role, String> {
        Role::ALL.into_iter().find(|r| r.code().eq_ignore_ascii_case(s)).ok_or_else(|| {
            let codes: Vec<&str> = Role::ALL.iter().map(|r| r.code()).collect();
            format!("unknown role {s:?}: must be one of {}", codes.join(", "))
        })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::parse(s)
    }
}

/// A set of roles, small and copyable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Roles(u16);

impl FromIterator<Role> for Roles {
    fn from_iter<I: IntoIterator<Item = Role>>(roles: I) -> Roles {
        roles.into_iter().fold(Roles(0), |acc, r| acc.with(r))
    }
}

impl Roles {
    pub fn with(self, role: Role) -> Roles {
        Roles(self.0 | (1 << role as u16))
    }

    pub fn contains(self, role: Role) -> bool {
        self.0 & (1 << role as u16) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| self.contains(*r))
    }

    /// Codes joined with commas, e.g. `IS,GS`.
    pub fn codes(self) -> String {
        self.iter().map(Role::code).collect::<Vec<_>>().join(",")
    }

    /// Parse codes joined with commas.
    pub fn parse_codes(s: &str) -> Result<Roles, String> {
        s.split(',').filter(|c| !c.is_empty()).map(Role::parse).collect::<Result<Vec<_>, _>>().map(Roles::from_iter)
    }
}

/// A party as the hub knows it. The hub holds its public signing key, never its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    pub id: PartyId,
    pub name: String,
    pub roles: Roles,
    /// The party's originator id in request ids (`originatorEUI:targetEUI:counter`).
    pub originator: Eui64,
    /// ECDSA P-256 public key, DER SubjectPublicKeyInfo; devices verify critical commands
    /// with it.
    pub signing_key_spki: Option<Vec<u8>>,
    pub created_at: jiff::Timestamp,
}

/// Longest party name accepted.
pub const PARTY_NAME_LEN_MAX: usize = 200;
