//! Records of firmware images and the campaigns that distribute them.

use domain::{Eui64, PartyId};
use jiff::Timestamp;

use crate::RequestRecord;

/// An image as its manufacturer uploaded it (the bytes are read on their own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareImage {
    /// SHA-256 of the image, hex.
    pub hash: String,
    pub manufacturer: PartyId,
    /// The signed manifest, JSON.
    pub manifest: String,
    pub signature: Vec<u8>,
    pub size: u64,
    pub uploaded_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CampaignRecord {
    pub seq: i64,
    pub party: PartyId,
    pub image_hash: String,
    /// `security` or `routine`.
    pub urgency: String,
    pub wave_size: u32,
    /// A wave failing more often than this halts the campaign.
    pub failure_rate_max: f64,
    /// `running`, `halted`, `completed`, `cancelled`.
    pub state: String,
    pub waves_sent: u32,
    pub detail: Option<String>,
    pub version: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignDevice {
    pub campaign_seq: i64,
    pub idx: i64,
    pub device: Eui64,
    /// The wave it went in (numbered from 1); `None` until sent.
    pub wave: Option<u32>,
    pub request_id: Option<String>,
    /// `received` (verified and held: 0x8F72), `refused` (by the device: 0x8F1C ...),
    /// `failed` (not delivered); `None` until answered.
    pub outcome: Option<String>,
    pub detail: Option<String>,
}

/// A campaign moved on, atomically: its new state, the 11.1 requests of a new wave, the
/// outcomes learnt. Taken only if the campaign's version is still `version`.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignStep {
    pub seq: i64,
    pub version: i64,
    pub state: String,
    pub waves_sent: u32,
    pub detail: Option<String>,
    pub at: Timestamp,
    /// (device index, wave, its request; `None` when it could not be built, and then an
    /// outcome says why).
    pub sent: Vec<(i64, u32, Option<RequestRecord>)>,
    /// (device index, outcome, detail).
    pub outcomes: Vec<(i64, String, Option<String>)>,
}
