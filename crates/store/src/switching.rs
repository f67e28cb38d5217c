//! Records of change of supplier and change of tenancy, and the hub's notices to parties.

use domain::switching::{Stage, Switch};
use domain::{Eui64, Mpxn, PartyId};
use jiff::Timestamp;

use crate::{GrantKind, NewRegistration, RequestRecord};

/// A switch as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchRecord {
    pub seq: i64,
    pub mpxn: Mpxn,
    pub incoming: PartyId,
    /// Gas: the incoming shipper.
    pub incoming_shipper: Option<PartyId>,
    pub outgoing: PartyId,
    pub state: Switch,
    /// Moves by one on every step.
    pub version: i64,
    /// JSON: the switch instant's work (credential requests) and the definitive reading.
    pub work: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One step of a switch, for its audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchEvent {
    pub seq: i64,
    pub switch_seq: i64,
    /// The instant the step happened at (a deadline's own instant).
    pub at: Timestamp,
    pub recorded_at: Timestamp,
    pub actor: String,
    pub party: Option<PartyId>,
    pub event: String,
    pub from: Option<Stage>,
    pub to: Stage,
    pub detail: String,
}

/// A notice from the hub to a party.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub seq: i64,
    pub party: PartyId,
    /// `change-of-tenancy`, `switch-requested`, `switch-confirmed`, ...
    pub code: String,
    pub mpxn: Option<Mpxn>,
    pub at: Timestamp,
    pub detail: String,
    /// JSON.
    pub data: Option<String>,
    pub recorded_at: Timestamp,
}

/// A relationship to end as part of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantEnd {
    pub kind: GrantKind,
    pub seq: i64,
    pub valid_to: Timestamp,
    pub by: PartyId,
    pub reason: String,
}

/// Everything one step of a switch writes, atomically: the new state (refused with
/// `Conflict` unless the stored version is still `expected_version`), its events, and what
/// the step does elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchUpdate {
    pub seq: i64,
    pub expected_version: i64,
    pub state: Switch,
    pub work: Option<String>,
    pub at: Timestamp,
    pub events: Vec<SwitchEvent>,
    /// The registration naming the incoming supplier from the switch instant.
    pub registration: Option<NewRegistration>,
    /// Requests to queue (the credential replacement, SRV 6.23).
    pub requests: Vec<RequestRecord>,
    pub grant_ends: Vec<GrantEnd>,
    pub notices: Vec<Notice>,
}

/// A change of tenancy as notified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenancyRecord {
    pub seq: i64,
    pub mpxn: Mpxn,
    pub tenancy_from: Timestamp,
    pub history_shared: bool,
    pub consent_note: Option<String>,
    pub notified_by: PartyId,
    pub recorded_at: Timestamp,
}

/// A change of tenancy with what it does, atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTenancy {
    pub tenancy: TenancyRecord,
    pub grant_ends: Vec<GrantEnd>,
    pub notices: Vec<Notice>,
    /// SRV 3.2 to the meter(s), held by the hub until the tenancy date and followed until
    /// delivered (their subject is this tenancy).
    pub deliveries: Vec<crate::NewDelivery>,
}

/// A device's credentials moved to a new supplier (SRV 6.23 done).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialsMoved {
    pub devices: Vec<Eui64>,
    pub supplier: PartyId,
}
