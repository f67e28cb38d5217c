//! Persistence behind the [`Store`] trait. Business code sees only this trait, which is
//! asynchronous and message-shaped so that another backend (PostgreSQL) or a remote store
//! can stand behind it; only this crate knows SQL. The embedded backend is SQLite
//! ([`sqlite::SqliteStore`]): one writer thread with batched commits, a bounded pool of
//! readers, versioned migrations.

pub mod delivery;
pub mod firmware;
pub mod fleet;
pub mod pipeline;
pub mod sqlite;
pub mod switching;

pub use delivery::*;
pub use firmware::*;
pub use fleet::FleetStore;
pub use pipeline::*;
pub use switching::*;

use async_trait::async_trait;
use domain::registry::{EnrolmentVersion, RegistrationData, RegistrationVersion};
use domain::{Eui64, Mpxn, Party, PartyId};
use jiff::Timestamp;

/// What can go wrong in the store. Callers map these to their own errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness or reference rule of the data was broken.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// The backend failed (I/O, corruption, a bug).
    #[error("storage failure: {0}")]
    Backend(String),
    /// The store has shut down.
    #[error("the store is closed")]
    Closed,
}

/// An API credential as stored: only the SHA-256 of the secret is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Public id, safe to show and log.
    pub id: String,
    pub party: PartyId,
    pub label: String,
    pub hash: [u8; 32],
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// A registration version to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRegistration {
    pub mpxn: Mpxn,
    pub effective_from: Timestamp,
    pub data: RegistrationData,
    pub recorded_at: Timestamp,
    pub recorded_by: PartyId,
}

/// An enrolment version to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEnrolment {
    pub mpxn: Mpxn,
    pub effective_from: Timestamp,
    pub enrolled: bool,
    pub recorded_at: Timestamp,
    pub recorded_by: PartyId,
}

/// A metering point as first recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeteringPoint {
    pub mpxn: Mpxn,
    pub created_at: Timestamp,
}

/// One row of a bulk registry import (already validated by the caller). Enrolment is not
/// imported: only enrolling a smart metering system sets that flag (R-REG-2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRow {
    pub mpxn: Mpxn,
    pub effective_from: Timestamp,
    pub data: RegistrationData,
}

/// What flows into a bulk import. Nothing is committed unless `Commit` arrives: an `Abort`,
/// or the sender going away, rolls the whole import back.
#[derive(Debug)]
pub enum ImportMsg {
    Rows(Vec<ImportRow>),
    Commit,
    Abort(String),
}

/// Bound on the import pipeline: chunks in flight between reader and writer.
pub const IMPORT_CHUNKS_IN_FLIGHT_MAX: usize = 8;
/// Rows per import chunk.
pub const IMPORT_CHUNK_ROWS: usize = 4096;

/// What a bulk import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub rows: u64,
    pub metering_points_created: u64,
    pub registrations_added: u64,
    /// Rows identical to a version already recorded (a re-run of the same file).
    pub duplicates_skipped: u64,
}

/// Row counts, for metrics and the dashboard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    pub parties: u64,
    pub metering_points: u64,
    pub registrations: u64,
}

/// The hub's persistence. Every method is one atomic unit: it applies whole or not at all,
/// and once it returns `Ok` the effect is durable.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // Parties and credentials.
    async fn insert_party(&self, party: Party) -> Result<(), StoreError>;
    async fn party(&self, id: &PartyId) -> Result<Option<Party>, StoreError>;
    async fn parties(&self) -> Result<Vec<Party>, StoreError>;
    /// Store a token unless its party already holds `per_party_max` (revoked ones count).
    async fn insert_token(&self, token: TokenRecord, per_party_max: usize) -> Result<(), StoreError>;
    /// Revoke a token of `party`; `Ok(false)` if it was already revoked.
    async fn revoke_token(&self, party: &PartyId, token_id: &str, at: Timestamp) -> Result<bool, StoreError>;
    async fn tokens(&self, party: &PartyId) -> Result<Vec<TokenRecord>, StoreError>;
    /// The token with this hash and its party, revoked or not.
    async fn token_by_hash(&self, hash: [u8; 32]) -> Result<Option<(TokenRecord, Party)>, StoreError>;

    // Registry.
    /// Append a registration version, creating the metering point on first use.
    async fn append_registration(&self, r: NewRegistration) -> Result<RegistrationVersion, StoreError>;
    /// Append an enrolment version; the metering point must exist.
    async fn append_enrolment(&self, e: NewEnrolment) -> Result<EnrolmentVersion, StoreError>;
    async fn metering_point(&self, mpxn: Mpxn) -> Result<Option<MeteringPoint>, StoreError>;
    /// The registration in force at `at`, as known at `known_at` (all recordings if `None`).
    /// [`Store::registration_at`] for many (MPxN, instant) pairs in one read, in order.
    async fn registrations_at(
        &self,
        keys: Vec<(Mpxn, Timestamp)>,
    ) -> Result<Vec<Option<RegistrationVersion>>, StoreError>;
    async fn registration_at(
        &self,
        mpxn: Mpxn,
        at: Timestamp,
        known_at: Option<Timestamp>,
    ) -> Result<Option<RegistrationVersion>, StoreError>;
    async fn enrolment_at(
        &self,
        mpxn: Mpxn,
        at: Timestamp,
        known_at: Option<Timestamp>,
    ) -> Result<Option<EnrolmentVersion>, StoreError>;
    /// [`Store::registration_at`] and [`Store::enrolment_at`] (all recordings) together, as
    /// of one moment of the store: planning a request needs both.
    async fn registration_and_enrolment_at(
        &self,
        mpxn: Mpxn,
        at: Timestamp,
    ) -> Result<(Option<RegistrationVersion>, Option<EnrolmentVersion>), StoreError>;
    /// Every registration version of a metering point, in recording order.
    async fn registration_history(&self, mpxn: Mpxn) -> Result<Vec<RegistrationVersion>, StoreError>;
    async fn enrolment_history(&self, mpxn: Mpxn) -> Result<Vec<EnrolmentVersion>, StoreError>;
    /// Bulk import in one transaction, fed through a bounded channel (see [`ImportMsg`]).
    async fn import_registrations(
        &self,
        rows: tokio::sync::mpsc::Receiver<ImportMsg>,
        recorded_at: Timestamp,
        recorded_by: PartyId,
    ) -> Result<ImportSummary, StoreError>;

    // Hub state and statistics.
    async fn state(&self, key: &str) -> Result<Option<String>, StoreError>;
    async fn set_state(&self, key: &str, value: String) -> Result<(), StoreError>;
    async fn counts(&self) -> Result<StoreCounts, StoreError>;

    // Inventory.
    /// Record a premises and its devices; conflicts if any EUI is already known.
    async fn install_premises(&self, p: NewPremises) -> Result<PremisesRecord, StoreError>;
    async fn premises(&self, id: i64) -> Result<Option<PremisesRecord>, StoreError>;
    /// Record many homes as installed, commissioned and enrolled, in one transaction: the
    /// bulk path of fleet generation (the metering points must be registered).
    async fn enrol_homes(&self, homes: Vec<EnrolledHome>) -> Result<(), StoreError>;
    async fn device(&self, eui: Eui64) -> Result<Option<DeviceRecord>, StoreError>;
    /// [`Store::device`] for many devices in one read, in order.
    async fn devices(&self, euis: Vec<Eui64>) -> Result<Vec<Option<DeviceRecord>>, StoreError>;
    /// A device fitted at an installed premises (on no HAN yet).
    async fn add_device(
        &self,
        premises_id: i64,
        eui: Eui64,
        kind: &str,
        at: Timestamp,
    ) -> Result<DeviceRecord, StoreError>;
    async fn premises_devices(&self, premises_id: i64) -> Result<Vec<DeviceRecord>, StoreError>;
    /// The meter linked to an MPxN.
    async fn device_for_mpxn(&self, mpxn: Mpxn) -> Result<Option<DeviceRecord>, StoreError>;

    // Requests.
    /// Reserve `n` request-id counters for an originator; returns the first. Counters are
    /// never handed out twice, even across restarts.
    async fn reserve_counters(&self, originator: Eui64, n: u64) -> Result<u64, StoreError>;
    /// Store a new request (its `seq` is assigned) and audit its acceptance.
    async fn insert_request(&self, r: RequestRecord) -> Result<RequestRecord, StoreError>;
    /// A request and its response, if any.
    async fn request(&self, id: &str) -> Result<Option<(RequestRecord, Option<ResponseRecord>)>, StoreError>;
    /// Move a request from one of `from` to `to` (compare and set), audited; optionally
    /// attach the signature. `Conflict` if it is in another status.
    async fn transition_request(
        &self,
        id: &str,
        from: &[RequestStatus],
        to: RequestStatus,
        at: Timestamp,
        note: Option<String>,
        signature: Option<Vec<u8>>,
    ) -> Result<RequestRecord, StoreError>;
    /// Queued requests due at `now`, oldest first, leaving out those whose `seq` is in
    /// `except` (requests already being dispatched) without reading them. Of the requests
    /// to run now (no execution time), only those numbered `from_seq` or more are looked at
    /// (the dispatcher knows those below to be in hand); due future-dated ones are all.
    async fn due_requests(
        &self,
        now: Timestamp,
        limit: usize,
        except: std::sync::Arc<std::collections::HashSet<i64>>,
        from_seq: i64,
    ) -> Result<DueRequests, StoreError>;
    /// Record responses and their effects, each atomically; a request already answered is
    /// left as it was (so a repeated completion is harmless).
    async fn complete_requests(&self, completions: Vec<Completion>) -> Result<(), StoreError>;
    /// A party's responses recorded after `after_seq`, in order.
    async fn responses_after(
        &self,
        party: &PartyId,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<ResponseRecord>, StoreError>;
    async fn audit_trail(&self, request_id: &str) -> Result<Vec<AuditRecord>, StoreError>;
    /// A party's requests in a status, oldest first. Meant for the statuses requests wait in
    /// (queued, awaiting a signature, quarantined), which are indexed: quarantined ones by
    /// party, the others among all waiting in that status. An ending status (completed,
    /// cancelled, deleted) has no index and reads every request.
    async fn requests_in_status(
        &self,
        party: &PartyId,
        status: RequestStatus,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError>;

    /// Record a request the hub answers itself (no device: schedule management) with its
    /// response and effects, all or nothing.
    async fn record_hub_request(&self, r: RequestRecord, c: Completion) -> Result<RequestRecord, StoreError>;

    // Schedules (SRV 5.1/5.2/5.3).
    async fn schedule(&self, id: &str) -> Result<Option<ScheduleRecord>, StoreError>;
    /// A party's live schedules, on one device or all, oldest first.
    async fn schedules(&self, party: &PartyId, target: Option<Eui64>) -> Result<Vec<ScheduleRecord>, StoreError>;
    /// Live schedules whose next run is at or before `now`, soonest first.
    async fn due_schedules(&self, now: Timestamp, limit: usize) -> Result<Vec<ScheduleRecord>, StoreError>;
    /// Store the request of a schedule's run at `run_at` and move the schedule on to `next`
    /// (`None`: finished), atomically. `Conflict` unless the schedule is live and its next run
    /// is still `run_at`, so a run is never made twice.
    async fn record_schedule_run(
        &self,
        schedule_id: &str,
        run_at: Timestamp,
        request: RequestRecord,
        next: Option<Timestamp>,
    ) -> Result<RequestRecord, StoreError>;

    // Reads distribution (R-RD-1, R-RD-2).
    /// A party's responses to the SRVs in `srvs` recorded in `[from, to)` with a sequence
    /// number after `after_seq`, in order.
    async fn reads_between(
        &self,
        party: &PartyId,
        srvs: &'static [&'static str],
        from: Timestamp,
        to: Timestamp,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<ReadRecord>, StoreError>;
    /// A request with its response, as a read (for forwarding).
    async fn read(&self, request_id: &str) -> Result<Option<ReadRecord>, StoreError>;
    /// Forward a read; forwarding it again to the same party returns the first forward.
    async fn forward_read(
        &self,
        request_id: &str,
        from: &PartyId,
        to: &PartyId,
        at: Timestamp,
    ) -> Result<ForwardRecord, StoreError>;
    /// Reads forwarded to a party after `after_seq`, in order.
    async fn forwarded_reads(
        &self,
        to: &PartyId,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<(ForwardRecord, ReadRecord)>, StoreError>;

    // Consents and appointments.
    /// Record a consent or appointment (its `seq` and end fields are ignored).
    async fn insert_grant(&self, g: GrantRecord) -> Result<GrantRecord, StoreError>;
    /// End one at `valid_to` (not later than any end it had), once. `Conflict` if already
    /// ended; `NotFound` if there is no such record of that kind.
    async fn end_grant(
        &self,
        kind: GrantKind,
        seq: i64,
        valid_to: Timestamp,
        at: Timestamp,
        by: PartyId,
        reason: String,
    ) -> Result<GrantRecord, StoreError>;
    /// Every record of a kind for a metering point, oldest first.
    async fn grants(&self, kind: GrantKind, mpxn: Mpxn) -> Result<Vec<GrantRecord>, StoreError>;

    // Prepayment.
    /// A supplier's prepayment key: (PKCS#8 DER, public point).
    async fn prepayment_key(&self, party: &PartyId) -> Result<Option<(Vec<u8>, Vec<u8>)>, StoreError>;
    /// Keep a supplier's prepayment key unless it has one already; returns the one kept.
    async fn keep_prepayment_key(
        &self,
        party: &PartyId,
        private_key: Vec<u8>,
        public_point: Vec<u8>,
        at: Timestamp,
    ) -> Result<(Vec<u8>, Vec<u8>), StoreError>;
    /// The next UTRN counter (1, 2, 3 ...) for a supplier and meter; never handed out twice.
    async fn next_utrn_counter(&self, supplier: &PartyId, meter: Eui64) -> Result<u64, StoreError>;
    /// A supplier's top-up confirmation endpoint: (URL, timeout in milliseconds).
    async fn payment_endpoint(&self, party: &PartyId) -> Result<Option<(String, u32)>, StoreError>;
    /// Set (`Some`) or remove (`None`) a supplier's endpoint.
    async fn set_payment_endpoint(
        &self,
        party: &PartyId,
        endpoint: Option<(String, u32)>,
        at: Timestamp,
    ) -> Result<(), StoreError>;
    async fn top_up(&self, psp: &PartyId, payment_reference: &str) -> Result<Option<TopUpRecord>, StoreError>;
    /// Store a top-up and the request that delivers it, atomically. `Conflict` if the
    /// payment reference is already used.
    async fn insert_top_up(&self, t: TopUpRecord, request: RequestRecord) -> Result<TopUpRecord, StoreError>;

    // Alerts.
    /// Store alerts, each once: a device's alert numbered at or below the highest number
    /// stored from that device is skipped (devices deliver in order, and again only from
    /// their first undelivered alert); alerts without a device number are always new.
    /// Returns how many rows were new.
    async fn record_alerts(&self, alerts: Vec<AlertRecord>) -> Result<u64, StoreError>;
    /// A party's alerts after a sequence number, in order.
    async fn alerts_after(&self, party: &PartyId, after_seq: i64, limit: usize)
    -> Result<Vec<AlertRecord>, StoreError>;
    /// The dispatch table: (code, recipient) rows, `*` for every code not listed.
    async fn alert_routes(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// Replace one code's recipients (none: the code falls back to `*`).
    async fn set_alert_routes(&self, code: String, recipients: Vec<String>) -> Result<(), StoreError>;
    /// Acknowledge a party's alerts up to `up_to` (never backwards); returns the position.
    async fn ack_alerts(&self, party: &PartyId, up_to: i64, at: Timestamp) -> Result<i64, StoreError>;
    /// How far a party has acknowledged (0: nothing yet).
    async fn alert_ack(&self, party: &PartyId) -> Result<i64, StoreError>;
    async fn set_webhook(&self, w: Webhook) -> Result<(), StoreError>;
    async fn webhook(&self, party: &PartyId) -> Result<Option<Webhook>, StoreError>;
    async fn delete_webhook(&self, party: &PartyId) -> Result<bool, StoreError>;
    /// Webhooks with unacknowledged alerts whose backoff has passed.
    async fn due_webhooks(&self, now: Timestamp, limit: usize) -> Result<Vec<Webhook>, StoreError>;
    /// Record what came of a push (acknowledging, backing off or dead-lettering).
    async fn push_result(&self, party: &PartyId, result: PushResult, at: Timestamp) -> Result<(), StoreError>;
    async fn dead_letters(&self, party: &PartyId, after_seq: i64, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;

    // Change of supplier and of tenancy.
    /// Store a new switch with its first event. `Conflict` if the metering point has a switch
    /// in progress.
    async fn insert_switch(
        &self,
        s: SwitchRecord,
        first: SwitchEvent,
        notices: Vec<Notice>,
    ) -> Result<SwitchRecord, StoreError>;
    async fn switch(&self, seq: i64) -> Result<Option<SwitchRecord>, StoreError>;
    /// Switches of a metering point, or where a party is incoming or outgoing, newest first.
    async fn switches(
        &self,
        mpxn: Option<Mpxn>,
        party: Option<&PartyId>,
        limit: usize,
    ) -> Result<Vec<SwitchRecord>, StoreError>;
    /// Switches whose deadline is at or before `now`, earliest first.
    async fn due_switches(&self, now: Timestamp, limit: usize) -> Result<Vec<SwitchRecord>, StoreError>;
    /// Apply one step (see [`SwitchUpdate`]). `Conflict` if another step got there first.
    async fn update_switch(&self, u: SwitchUpdate) -> Result<SwitchRecord, StoreError>;
    async fn switch_events(&self, seq: i64) -> Result<Vec<SwitchEvent>, StoreError>;
    /// Record a change of tenancy with its effects.
    async fn record_tenancy(&self, t: NewTenancy) -> Result<TenancyRecord, StoreError>;
    async fn tenancies(&self, mpxn: Mpxn) -> Result<Vec<TenancyRecord>, StoreError>;
    /// A party's notices after a sequence number, in order.
    // Firmware.
    /// Store an image; `Conflict` if one with its hash is stored already.
    async fn insert_firmware_image(&self, image: FirmwareImage, bytes: Vec<u8>) -> Result<(), StoreError>;
    async fn firmware_image(&self, hash: &str) -> Result<Option<FirmwareImage>, StoreError>;
    async fn firmware_image_bytes(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError>;
    async fn firmware_images(&self) -> Result<Vec<FirmwareImage>, StoreError>;
    async fn insert_campaign(&self, c: CampaignRecord, devices: Vec<Eui64>) -> Result<CampaignRecord, StoreError>;
    async fn campaign(&self, seq: i64) -> Result<Option<CampaignRecord>, StoreError>;
    /// Campaigns, newest first (one party's, or all).
    async fn campaigns(&self, party: Option<PartyId>, limit: usize) -> Result<Vec<CampaignRecord>, StoreError>;
    /// Running campaigns, security patches first, then oldest first.
    async fn running_campaigns(&self, limit: usize) -> Result<Vec<CampaignRecord>, StoreError>;
    async fn campaign_devices(&self, seq: i64) -> Result<Vec<CampaignDevice>, StoreError>;
    /// Move a campaign on (conflict if its version moved).
    async fn step_campaign(&self, step: CampaignStep) -> Result<CampaignRecord, StoreError>;

    /// Deliveries whose next look is due, soonest first.
    async fn due_deliveries(&self, now: Timestamp, limit: usize) -> Result<Vec<DeliveryRecord>, StoreError>;
    /// Move a delivery on (conflict if its version moved), with its next try and notices.
    async fn update_delivery(&self, u: DeliveryUpdate) -> Result<DeliveryRecord, StoreError>;
    /// The deliveries serving one thing (`purpose`, `subject`), oldest first.
    async fn deliveries(&self, purpose: &str, subject: i64) -> Result<Vec<DeliveryRecord>, StoreError>;
    async fn notices_after(&self, party: &PartyId, after_seq: i64, limit: usize) -> Result<Vec<Notice>, StoreError>;

    // Anomaly detection.
    async fn thresholds(&self) -> Result<Vec<ThresholdRecord>, StoreError>;
    /// Set (or replace) a threshold.
    async fn set_threshold(&self, t: ThresholdRecord) -> Result<(), StoreError>;
    /// Remove a threshold; `false` if there was none.
    async fn remove_threshold(&self, party: Option<PartyId>, srv: &str) -> Result<bool, StoreError>;
}
