//! Records of the smart metering inventory and the service request pipeline.

use domain::{Eui64, Mpxn, PartyId};
use jiff::Timestamp;

/// A premises as the hub's inventory knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PremisesRecord {
    pub id: i64,
    pub comms_hub: Eui64,
    pub installed_at: Timestamp,
    pub installed_by: PartyId,
}

/// A device as the hub's inventory knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub eui: Eui64,
    pub premises_id: i64,
    /// `comms-hub`, `electricity-meter`, `gas-meter`, `in-home-display`, `ppmid`, `additional`.
    pub kind: String,
    pub installed_at: Timestamp,
    pub commissioned_at: Option<Timestamp>,
    pub mpxn: Option<Mpxn>,
    /// The supplier whose credentials it holds since a change of supplier (SRV 6.23);
    /// `None` = the installing supplier's.
    pub trusted_supplier: Option<PartyId>,
    /// On the comms hub's HAN device log (SRV 8.11; the comms hub itself: always).
    pub on_han: bool,
    /// The meters this device is joined to (SRV 8.7; empty for meters and the comms hub).
    pub joined_to: Vec<Eui64>,
}

/// What a premises' HAN looks like after an 8.11 or 8.7/8.8, as the devices said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HanChange {
    pub premises_id: i64,
    /// The comms hub's whole HAN device log (8.11).
    pub han_log: Option<Vec<Eui64>>,
    /// Each meter named, with every device joined to it now.
    pub joins: Vec<(Eui64, Vec<Eui64>)>,
}

/// Devices fitted at a new premises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPremises {
    pub comms_hub: Eui64,
    pub installed_at: Timestamp,
    pub installed_by: PartyId,
    /// (EUI, kind), the comms hub included.
    pub devices: Vec<(Eui64, String)>,
}

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestStatus {
    /// Critical: waiting for the sender's signature over the pre-command.
    AwaitingSignature,
    /// Waiting to be sent (now, or at its execution time).
    Queued,
    /// Held by anomaly detection until the party releases or deletes it.
    Quarantined,
    /// Answered: a response is recorded.
    Completed,
    /// Withdrawn by the party before it ran.
    Cancelled,
    /// Deleted from quarantine by the party.
    Deleted,
}

impl RequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::AwaitingSignature => "awaiting-signature",
            RequestStatus::Queued => "queued",
            RequestStatus::Quarantined => "quarantined",
            RequestStatus::Completed => "completed",
            RequestStatus::Cancelled => "cancelled",
            RequestStatus::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<RequestStatus> {
        [
            RequestStatus::AwaitingSignature,
            RequestStatus::Queued,
            RequestStatus::Quarantined,
            RequestStatus::Completed,
            RequestStatus::Cancelled,
            RequestStatus::Deleted,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// A service request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub seq: i64,
    /// `originatorEUI:targetEUI:counter`.
    pub id: String,
    pub party: PartyId,
    pub srv: String,
    pub target: Eui64,
    pub mpxn: Option<Mpxn>,
    /// Canonical JSON of the body.
    pub body: String,
    /// The exact bytes the device receives.
    pub precommand: Vec<u8>,
    pub signature: Option<Vec<u8>>,
    pub submitted_at: Timestamp,
    pub execute_at: Option<Timestamp>,
    pub status: RequestStatus,
    pub status_at: Timestamp,
    pub note: Option<String>,
    /// The schedule this request is a run of, if the hub made it from one (SRV 5.1).
    pub schedule_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseOutcome {
    /// The device did it.
    Done,
    /// The device refused (bad signature, wrong device, ...).
    DeviceRefused,
    /// The hub could not get an answer, or refused at execution time.
    Failed,
}

impl ResponseOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseOutcome::Done => "done",
            ResponseOutcome::DeviceRefused => "device-refused",
            ResponseOutcome::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<ResponseOutcome> {
        [ResponseOutcome::Done, ResponseOutcome::DeviceRefused, ResponseOutcome::Failed]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// A response as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseRecord {
    /// Order of recording: a party's response stream resumes after a sequence number.
    pub seq: i64,
    pub request_id: String,
    pub party: PartyId,
    pub at: Timestamp,
    pub outcome: ResponseOutcome,
    /// JSON.
    pub body: String,
}

/// What a response changes in the hub's records (inventory, registry, schedules), in the same
/// transaction as the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// SRV 8.1.1 succeeded.
    Commissioned { eui: Eui64, at: Timestamp },
    /// SRV 6.20.1 succeeded: the meter is linked to the MPxN, which is now enrolled.
    Linked { eui: Eui64, mpxn: Mpxn, at: Timestamp, by: PartyId },
    /// A schedule comes into being (SRV 5.1); refused if its party already has
    /// [`SCHEDULES_PER_TARGET_MAX`] live ones on the target.
    ScheduleCreated(ScheduleRecord),
    /// A party's live schedule ends (SRV 5.3); `NotFound` if it has no such live schedule.
    ScheduleDeleted { id: String, party: PartyId, at: Timestamp },
    /// SRV 6.23 succeeded: the devices hold the supplier's credentials.
    CredentialsMoved(crate::CredentialsMoved),
    /// SRV 8.11 or 8.7/8.8 succeeded: the premises' HAN changed.
    Han(HanChange),
}

/// What a search for due requests found ([`crate::Store::due_requests`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DueRequests {
    /// Due requests, in number order.
    pub requests: Vec<RequestRecord>,
    /// The highest number among requests to run now (no execution time) that the search
    /// looked at: every queued one numbered from the search's start up to it was either
    /// excepted or returned. `None`: it looked at none.
    pub looked_to: Option<i64>,
    /// How many of `requests` were kept in memory since their insert rather than read from
    /// their rows (each is kept until a search takes it).
    pub kept: usize,
}

/// A response to record, with its request's move to `completed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub request_id: String,
    /// The request's `seq` when the completer has it: found by number rather than by id
    /// (whose index is the costliest to search), and checked against the id.
    pub request_seq: Option<i64>,
    pub party: PartyId,
    pub at: Timestamp,
    pub outcome: ResponseOutcome,
    pub body: String,
    pub effects: Vec<Effect>,
}

/// One line of a request's audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: Timestamp,
    pub request_id: String,
    pub party: PartyId,
    pub event: String,
    pub detail: String,
}

/// An anomaly-detection threshold (R-SR-5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThresholdRecord {
    /// `None` = hub-wide (all parties together).
    pub party: Option<PartyId>,
    pub srv: String,
    pub window_secs: i64,
    pub max_requests: i64,
    pub set_at: Timestamp,
}

/// A home fitted, commissioned and enrolled in one go (bulk fleet generation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolledHome {
    pub premises: NewPremises,
    /// Meters and the MPxNs they are linked to (and enrolled under).
    pub links: Vec<(Eui64, Mpxn)>,
}

/// Live schedules one party may hold on one device.
pub const SCHEDULES_PER_TARGET_MAX: i64 = 8;

/// How often a schedule runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Every {
    Day,
    Week,
}

impl Every {
    pub fn as_str(self) -> &'static str {
        match self {
            Every::Day => "day",
            Every::Week => "week",
        }
    }

    pub fn parse(s: &str) -> Option<Every> {
        [Every::Day, Every::Week].into_iter().find(|e| e.as_str() == s)
    }

    pub fn days(self) -> i64 {
        match self {
            Every::Day => 1,
            Every::Week => 7,
        }
    }
}

/// A recurring read the hub runs on a party's behalf (SRV 5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRecord {
    /// The id of the 5.1 request that created it.
    pub id: String,
    pub party: PartyId,
    /// The read SRV each run sends.
    pub srv: String,
    pub target: Eui64,
    pub mpxn: Option<Mpxn>,
    pub every: Every,
    pub first_run: Timestamp,
    /// No run after this instant.
    pub end: Option<Timestamp>,
    /// The next run; `None` once finished or deleted.
    pub next_run: Option<Timestamp>,
    pub runs: i64,
    pub created_at: Timestamp,
    pub deleted_at: Option<Timestamp>,
}

/// A response to a read, with what it was a read of: one entry of a read batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRecord {
    pub response: ResponseRecord,
    pub srv: String,
    pub target: Eui64,
    pub mpxn: Option<Mpxn>,
    pub schedule_id: Option<String>,
}

/// A read a supplier forwarded to a network operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardRecord {
    pub seq: i64,
    pub request_id: String,
    pub from: PartyId,
    pub to: PartyId,
    pub at: Timestamp,
}

/// A period during which a party stands in a relationship to a metering point that the
/// registry does not hold: an other user's consumer consent, or an agent's appointment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    pub seq: i64,
    pub kind: GrantKind,
    pub mpxn: Mpxn,
    /// The other user, or the agent.
    pub party: PartyId,
    /// For an appointment, the supplier the agent acts for.
    pub appointer: Option<PartyId>,
    pub valid_from: Timestamp,
    /// Exclusive; `None` while open-ended.
    pub valid_to: Option<Timestamp>,
    pub recorded_at: Timestamp,
    pub recorded_by: PartyId,
    pub ended_at: Option<Timestamp>,
    pub ended_by: Option<PartyId>,
    pub end_reason: Option<String>,
}

impl GrantRecord {
    /// Whether it holds at `at`.
    pub fn holds_at(&self, at: Timestamp) -> bool {
        self.valid_from <= at && self.valid_to.is_none_or(|t| at < t)
    }

    /// Whether it is still open (not ended) and runs past `at`: what a change of tenancy
    /// or of supplier at `at` has to end.
    pub fn runs_past(&self, at: Timestamp) -> bool {
        self.ended_at.is_none() && self.valid_to.is_none_or(|t| t > at)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantKind {
    Consent,
    Appointment,
}

impl GrantKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantKind::Consent => "consent",
            GrantKind::Appointment => "appointment",
        }
    }
}

/// A top-up as issued: the UTRN made for it and the SRV 2.2 request carrying it to the meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUpRecord {
    pub seq: i64,
    /// The payment service provider that took the payment.
    pub psp: PartyId,
    /// The provider's own reference; one top-up per reference.
    pub payment_reference: String,
    pub customer_id: String,
    pub mpxn: Mpxn,
    pub supplier: PartyId,
    pub meter: Eui64,
    pub amount_pence: u64,
    /// The full UTRN counter (a multiple of 2^32).
    pub counter: u64,
    pub utrn: String,
    pub request_id: String,
    pub at: Timestamp,
}

/// A device alert for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRecord {
    pub seq: i64,
    /// The recipient.
    pub party: PartyId,
    /// Why it gets it: `registered-supplier`, `network-operator`, `consent-holder`,
    /// `hub-operator`, `party-concerned`.
    pub recipient_as: String,
    /// The device that raised it (a hub alert may concern one, or none).
    pub device: Option<Eui64>,
    /// The device's own number for it; `None` for hub alerts.
    pub device_seq: Option<u64>,
    pub mpxn: Option<Mpxn>,
    pub at: Timestamp,
    /// GBCS alert code (0x8000 up), or a hub alert's (`domain::alerts::HubAlert`).
    pub code: u16,
    pub detail: String,
    /// JSON.
    pub data: Option<String>,
    pub received_at: Timestamp,
}

/// A party's webhook for its alerts, with the state of the push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub party: PartyId,
    pub url: String,
    /// The shared secret the pushes are signed with (HMAC-SHA256).
    pub secret: String,
    pub set_at: Timestamp,
    /// Failed tries of the batch at the head of the queue.
    pub attempts: u32,
    /// Not pushed again before this (backoff).
    pub next_at: Option<Timestamp>,
    pub last_error: Option<String>,
}

/// What came of one push to a webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushResult {
    /// Accepted: the party's alerts are acknowledged up to this sequence number.
    Delivered { up_to: i64 },
    /// Failed: tried again no sooner than `next_at`.
    Failed { attempts: u32, next_at: Timestamp, error: String },
    /// Failed every try: these alerts are dead-lettered and acknowledged, and the push moves on.
    DeadLettered { seqs: Vec<i64>, attempts: u32, reason: String },
}

/// An alert a webhook could not take, set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub alert_seq: i64,
    pub party: PartyId,
    pub at: Timestamp,
    pub attempts: u32,
    pub reason: String,
}
