//! Commands the hub must get to a device on a party's behalf (a change of tenancy's SRV
//! 3.2): each try is an ordinary request; the delivery follows them until one is answered.

use domain::{Eui64, Mpxn, PartyId};
use jiff::Timestamp;

use crate::{Notice, RequestRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Not answered yet: the current try is queued, or the next one is due.
    Pending,
    /// The device did it.
    Delivered,
    /// The device refused it: trying again would not help.
    Refused,
    /// Not delivered within the tries allowed, or no longer allowed.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Refused => "refused",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        [DeliveryState::Pending, DeliveryState::Delivered, DeliveryState::Refused, DeliveryState::Failed]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub seq: i64,
    /// What it serves: `tenancy`.
    pub purpose: String,
    /// The seq of what it serves (filled in by the store when both are recorded together).
    pub subject: i64,
    pub party: PartyId,
    pub srv: String,
    pub target: Eui64,
    pub mpxn: Mpxn,
    /// Canonical JSON, the same on every try.
    pub body: String,
    /// When the command first runs.
    pub run_at: Timestamp,
    /// The current try.
    pub request_id: String,
    pub attempts: u32,
    pub state: DeliveryState,
    pub detail: Option<String>,
    /// When the hub looks at it again; `None` once settled.
    pub due_at: Option<Timestamp>,
    /// Moves by one on every update.
    pub version: i64,
    pub updated_at: Timestamp,
}

/// A delivery with its first try, recorded together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub delivery: DeliveryRecord,
    pub request: RequestRecord,
}

/// A delivery moved on, atomically with its next try (if any) and the notices it sends.
/// Taken only if the delivery's version is still `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryUpdate {
    pub seq: i64,
    pub version: i64,
    pub request: Option<RequestRecord>,
    pub attempts: u32,
    pub state: DeliveryState,
    pub detail: Option<String>,
    pub due_at: Option<Timestamp>,
    pub notices: Vec<Notice>,
    pub at: Timestamp,
}
