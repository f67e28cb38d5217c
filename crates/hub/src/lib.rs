//! The hub service: authentication, authorisation from the catalogue, and the business
//! processes (one module each). It talks to storage only through [`store::Store`] and reads
//! time only from its [`Clock`].

pub mod alerts;
pub mod anomaly;
pub mod auth;
pub mod clock;
pub mod delivery;
pub mod error;
pub mod firmware;
pub mod grants;
pub mod inventory;
pub mod parties;
pub mod pipeline;
pub mod prepayment;
pub mod registry;
pub mod schedules;
pub mod switching;
pub mod tenancy;
pub mod transport;

use std::sync::Arc;

use domain::catalogue::{self, Grant, Service, TargetFacts};
use domain::crypto::SystemRandom;
use domain::{IdRules, Mpxn};
use jiff::Timestamp;
use store::Store;

pub use auth::{Caller, IssuedToken};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::HubError;
pub use store::{
    AlertRecord, AuditRecord, CampaignDevice, CampaignRecord, DeadLetter, DeliveryRecord, DeviceRecord, EnrolledHome,
    FirmwareImage, ForwardRecord, GrantKind, GrantRecord, ImportSummary, NewPremises, Notice, PremisesRecord,
    ReadRecord, RequestRecord, RequestStatus, ResponseRecord, ScheduleRecord, StoreCounts, SwitchEvent, SwitchRecord,
    TenancyRecord, ThresholdRecord, TokenRecord, TopUpRecord, Webhook,
};

/// Settings that change the hub's rules.
#[derive(Debug, Clone, Copy)]
pub struct HubConfig {
    /// Identifier rules (the MPAN check digit can be relaxed for industry test data).
    pub id_rules: IdRules,
    /// Requests accepted to run now whose answers are not yet recorded, at most. A caller
    /// beyond it waits up to `admission_wait` for room, then hears that the hub is busy
    /// (HTTP 503) and nothing is recorded. Bounds how long an accepted request waits for its
    /// device, and the memory the dispatcher needs.
    pub admitted_max: usize,
    /// Of those, at most this many one party's: the rest of the room stays open to the
    /// others while one party floods the hub.
    pub admitted_per_party_max: usize,
    /// How long a request waits for room under `admitted_max` before it is refused.
    pub admission_wait: std::time::Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            id_rules: IdRules::default(),
            admitted_max: 0,
            admitted_per_party_max: 0,
            admission_wait: pipeline::ADMISSION_WAIT,
        }
        .admitting(pipeline::ADMITTED_MAX)
    }
}

impl HubConfig {
    /// `admitted_max` = `max`, of which half (rounded up) for any one party.
    pub fn admitting(self, max: usize) -> HubConfig {
        HubConfig { admitted_max: max, admitted_per_party_max: max.div_ceil(2), ..self }
    }
}

/// Key under which a simulated clock's time is kept across restarts.
const CLOCK_STATE_KEY: &str = "clock.simulated";
/// Key under which the hub's change-of-supplier signing key is kept (PKCS#8 PEM).
const COS_KEY_STATE_KEY: &str = "cos.signing-key";
/// Longest single advance of the simulated clock.
pub const CLOCK_ADVANCE_DAYS_MAX: i64 = 3660;

/// The hub. Cheap to clone; every clone is the same hub.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: HubConfig,
    rng: SystemRandom,
    /// Serialises clock advances so that the saved time and the clock move together.
    clock_lock: tokio::sync::Mutex<()>,
    /// How the hub reaches devices; attached once.
    transport: std::sync::OnceLock<Arc<dyn transport::DeviceTransport>>,
    /// Request-id counters handed out from reserved blocks: originator → (next, end).
    counters: tokio::sync::Mutex<std::collections::HashMap<domain::Eui64, (u64, u64)>>,
    /// Wakes the dispatcher: new work, or time moved.
    work: tokio::sync::Notify,
    /// Wakes callers waiting for responses.
    completed: tokio::sync::Notify,
    /// Requests being sent to their devices now, and those devices: a dispatch round skips
    /// them (see `pipeline::Hub::claim_due`).
    in_flight: tokio::sync::Mutex<pipeline::InFlight>,
    /// Requests accepted to run now and not yet answered (`HubConfig::admitted_max`).
    admission: pipeline::Admission,
    /// Dispatch rounds running at once in the background dispatcher.
    rounds: Arc<tokio::sync::Semaphore>,
    /// Anomaly detection: thresholds and the counts in their windows.
    anomaly: std::sync::Mutex<anomaly::Detector>,
    /// Top-ups being taken now, by (provider, payment reference).
    top_ups_in_flight: std::sync::Mutex<std::collections::HashSet<(domain::PartyId, String)>>,
    /// The hub's change-of-supplier signing key (SRV 6.23): the one signing key the hub
    /// holds, its own. Kept in the store, created on first open.
    cos_key: domain::crypto::SigningKey,
    /// The alert dispatch table, as stored.
    routes: std::sync::RwLock<Arc<alerts::Routes>>,
    /// Wakes streams and webhook pushes: alerts arrived.
    alerted: tokio::sync::Notify,
    /// For webhook pushes: no redirects, a bounded time per push.
    http: reqwest::Client,
}

/// The simulated time a data directory saved, if it runs on a simulated clock.
pub async fn saved_simulated_time(store: &dyn Store) -> Result<Option<Timestamp>, HubError> {
    let Some(saved) = store.state(CLOCK_STATE_KEY).await? else { return Ok(None) };
    saved
        .parse()
        .map(Some)
        .map_err(|e| HubError::Unavailable(format!("stored simulated time {saved:?} is unreadable: {e}")))
}

impl Hub {
    /// A hub over `store`. A data directory that ran a simulated clock keeps it: a manual
    /// clock resumes from the saved time (whatever it was started at), and the system clock
    /// is refused, so that time never runs backwards. A new simulation saves its start.
    pub async fn open(store: Arc<dyn Store>, clock: Arc<dyn Clock>, config: HubConfig) -> Result<Hub, HubError> {
        let saved = saved_simulated_time(store.as_ref()).await?;
        match (clock.as_manual(), saved) {
            (Some(manual), Some(saved)) => {
                if manual.now() != saved {
                    tracing::info!(message = "Resuming the saved simulated time.", now = %saved);
                }
                manual.resume_at(saved);
            }
            (Some(manual), None) => store.set_state(CLOCK_STATE_KEY, manual.now().to_string()).await?,
            (None, Some(saved)) => {
                return Err(HubError::Conflict(format!(
                    "this data directory runs on a simulated clock (now {saved}); start it with the simulated clock"
                )));
            }
            (None, None) => {}
        }
        let thresholds = store.thresholds().await?;
        let routes = store.alert_routes().await?;
        let rng = SystemRandom::new();
        let cos_key = match store.state(COS_KEY_STATE_KEY).await? {
            Some(pem) => domain::crypto::SigningKey::from_pem(&pem)
                .map_err(|e| HubError::Unavailable(format!("the stored change-of-supplier key is unreadable: {e}")))?,
            None => {
                let key = domain::crypto::SigningKey::generate(&rng)
                    .map_err(|e| HubError::Unavailable(format!("cannot make a change-of-supplier key: {e}")))?;
                store.set_state(COS_KEY_STATE_KEY, key.pkcs8_pem()).await?;
                key
            }
        };
        Ok(Hub {
            inner: Arc::new(Inner {
                store,
                clock,
                config,
                rng,
                clock_lock: tokio::sync::Mutex::new(()),
                transport: std::sync::OnceLock::new(),
                counters: tokio::sync::Mutex::new(std::collections::HashMap::new()),
                work: tokio::sync::Notify::new(),
                completed: tokio::sync::Notify::new(),
                in_flight: tokio::sync::Mutex::new(pipeline::InFlight::default()),
                rounds: Arc::new(tokio::sync::Semaphore::new(pipeline::DISPATCH_ROUNDS_MAX)),
                admission: pipeline::Admission::new(config.admitted_max, config.admitted_per_party_max),
                anomaly: std::sync::Mutex::new(anomaly::Detector::load(&thresholds)),
                top_ups_in_flight: Default::default(),
                cos_key,
                routes: std::sync::RwLock::new(Arc::new(alerts::Routes::from_rows(routes))),
                alerted: tokio::sync::Notify::new(),
                http: reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(alerts::WEBHOOK_TIMEOUT)
                    .build()
                    .map_err(|e| HubError::Unavailable(format!("cannot make the webhook client: {e}")))?,
            }),
        })
    }

    /// Attach the device transport (once).
    pub fn attach_transport(&self, transport: Arc<dyn transport::DeviceTransport>) {
        transport.attach_alert_sink(self.alert_sink());
        if self.inner.transport.set(transport).is_err() {
            panic!("a device transport is already attached");
        }
    }

    /// The public half of the hub's change-of-supplier key (SubjectPublicKeyInfo DER): devices
    /// are installed trusting it for SRV 6.23.
    pub fn cos_public_key(&self) -> Vec<u8> {
        self.inner.cos_key.public_key_spki()
    }

    /// The hub's clock, for components driven by the same time (the simulated fleet).
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock.clone()
    }

    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    pub fn config(&self) -> HubConfig {
        self.inner.config
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn is_simulated_clock(&self) -> bool {
        self.inner.clock.as_manual().is_some()
    }

    /// Whether the store answers (for health checks).
    pub async fn check_store(&self) -> Result<(), HubError> {
        self.inner.store.state("healthz").await?;
        Ok(())
    }

    /// Row counts, for metrics.
    pub async fn counts(&self) -> Result<StoreCounts, HubError> {
        Ok(self.inner.store.counts().await?)
    }

    /// Parse an MPxN under the hub's identifier rules.
    pub fn parse_mpxn(&self, field: &str, s: &str) -> Result<Mpxn, HubError> {
        Mpxn::parse_with(s, self.inner.config.id_rules)
            .map_err(|e| HubError::invalid(field, format!("{} {}", e.kind, e.rule)))
    }

    /// Move the simulated clock forward to `to` (hub operator only). The new time is stored
    /// before it takes effect, so an acknowledged advance survives a restart.
    pub async fn advance_clock(&self, caller: &Caller, to: Timestamp) -> Result<Timestamp, HubError> {
        self.authorize(caller, "clock.advance", None)?;
        let Some(manual) = self.inner.clock.as_manual() else {
            return Err(HubError::Conflict(
                "the hub runs on the system clock; start it with the simulated clock to move time".into(),
            ));
        };
        let _serial = self.inner.clock_lock.lock().await;
        let now = manual.now();
        if to < now {
            return Err(HubError::invalid("to", format!("time only moves forward; it is {now} now")));
        }
        if to.duration_since(now) > jiff::SignedDuration::from_hours(24 * CLOCK_ADVANCE_DAYS_MAX) {
            return Err(HubError::invalid("to", format!("one advance may move at most {CLOCK_ADVANCE_DAYS_MAX} days")));
        }
        self.inner.store.set_state(CLOCK_STATE_KEY, to.to_string()).await?;
        let now = manual.advance_to(to);
        self.inner.work.notify_one();
        tracing::info!(message = "Simulated clock advanced.", now = %now, by = %caller.party.id);
        Ok(now)
    }

    /// Authorise `caller` for the catalogue service `code` on `target`. With
    /// [`Hub::check_role`], the one place where the catalogue's decision is applied;
    /// refusals are counted and logged.
    pub fn authorize(&self, caller: &Caller, code: &str, target: Option<&TargetFacts<'_>>) -> Result<Grant, HubError> {
        let service = Self::service(code);
        catalogue::authorize(service, &caller.party.id, caller.party.roles, target)
            .map_err(|refusal| Self::refused(caller, service, refusal))
    }

    /// The role half of [`Hub::authorize`], for checks made before the target's
    /// relationships are known (so that a party without the role learns nothing more).
    pub fn check_role(&self, caller: &Caller, code: &str) -> Result<(), HubError> {
        let service = Self::service(code);
        catalogue::check_role(service, &caller.party.id, caller.party.roles)
            .map_err(|refusal| Self::refused(caller, service, refusal))
    }

    /// Whether the caller holds a service needing no relationship (a question, not a
    /// request: a "no" is not counted as a refusal).
    pub fn may(&self, caller: &Caller, code: &str) -> bool {
        catalogue::authorize(Self::service(code), &caller.party.id, caller.party.roles, None).is_ok()
    }

    fn service(code: &str) -> &'static Service {
        catalogue::service(code).unwrap_or_else(|| panic!("service {code} is not in the catalogue"))
    }

    fn refused(caller: &Caller, service: &'static Service, refusal: catalogue::Refusal) -> HubError {
        metrics::counter!("meterhub_refusals_total", "service" => service.code, "missing" => refusal.missing())
            .increment(1);
        tracing::info!(message = "Request refused.", party = %caller.party.id, service = service.code, reason = %refusal);
        HubError::from(refusal)
    }
}

/// A notice from the hub to `party` about `mpxn`: what happens at `at`, recorded at
/// `recorded_at`.
pub(crate) fn notice(
    party: &domain::PartyId,
    code: &str,
    mpxn: domain::Mpxn,
    at: Timestamp,
    recorded_at: Timestamp,
    detail: String,
    data: &serde_json::Value,
) -> store::Notice {
    store::Notice {
        seq: 0,
        party: party.clone(),
        code: code.to_string(),
        mpxn: Some(mpxn),
        at,
        detail,
        data: Some(data.to_string()),
        recorded_at,
    }
}
