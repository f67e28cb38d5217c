//! The service request pipeline (R-SR-1..4): submit → validate the body for its SRV →
//! resolve the target → check the metering point is smart and enrolled (R-REG-2) →
//! authorise from the catalogue and the relationship at that instant → for critical SRVs,
//! wait for the sender's signature over the exact pre-command → queue → at its time, send to
//! the device through the transport → record the response in the audit log → deliver.

use std::collections::HashMap;
use std::time::Duration;

use device::{Access, Command, Outcome, RequestId, Requester};
use domain::catalogue::{self, Critical, FutureDate, Relation};
use domain::registry::{EnrolmentVersion, RegistrationVersion};
use domain::registry::{MeterType, supplier_period_start, supplier_periods};
use domain::{Eui64, Fuel, Mpxn, Party};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};
use store::{Completion, DeviceRecord, Effect, RequestRecord, RequestStatus, ResponseOutcome, ResponseRecord};

use crate::registry::Relationships;
use crate::schedules::HUB_ANSWERED_SRVS;
use crate::transport::DeviceMessage;
use crate::{Caller, Hub, HubError};

/// SRVs that read stored data and so carry the requester's data window.
const WINDOWED_SRVS: &[&str] = &["4.8.1", "4.17", "6.2"];
/// Reads a former supplier may send for its own period (R-COS-4).
const FORMER_SUPPLIER_SRVS: &[&str] = &["4.8.1", "4.17"];
/// Request-id counters reserved from the store at a time.
const COUNTER_BLOCK: u64 = 1000;
/// Furthest ahead a request may be future-dated.
pub const FUTURE_DAYS_MAX: i64 = 400;

/// A future instant a party asks for: not in the past, at most [`FUTURE_DAYS_MAX`] ahead;
/// the refusal names `field`.
pub(crate) fn check_ahead(field: &str, at: Timestamp, now: Timestamp) -> Result<(), HubError> {
    if at < now {
        return Err(invalid(field, format!("must not be in the past; it is {now} now")));
    }
    if at > now + SignedDuration::from_hours(24 * FUTURE_DAYS_MAX) {
        return Err(invalid(field, format!("at most {FUTURE_DAYS_MAX} days ahead")));
    }
    Ok(())
}
/// Requests sent to devices at once by one dispatch round.
pub const DISPATCH_BATCH_MAX: usize = 512;
/// Dispatch rounds the background dispatcher runs at once: while one round's responses are
/// being committed, the next is already at its devices (and on the other cores).
pub const DISPATCH_ROUNDS_MAX: usize = 4;

/// How long a round that could not record its answers keeps its requests before they are
/// taken again.
const DISPATCH_RETRY: Duration = Duration::from_secs(1);

/// Default for [`crate::HubConfig::admitted_max`]. By Little's law it sets the latency at
/// full load (in flight ÷ throughput). Measured on two cores (BENCHMARKS.md): throughput is
/// flat from 1,024 up and falls below 512; at 2,048 a 4.1.1 is answered in about 100 ms
/// (median), and one party's half still keeps the dispatch rounds fed.
pub const ADMITTED_MAX: usize = 2048;
/// Default for [`crate::HubConfig::admission_wait`].
pub const ADMISSION_WAIT: Duration = Duration::from_secs(10);

/// Requests accepted to run now whose answers are not yet recorded: one permit each, taken
/// when a request is about to join the queue to run now — at submission (before the anomaly
/// detector counts it), when signed, when released from quarantine — and given back when its
/// answer is committed or it is cancelled. Requests left queued by a previous run of the hub,
/// hub-held future-dated ones (they join when due) and those the hub raises itself
/// (schedules, switching, firmware waves, deliveries) hold none: their own processes pace them.
/// Each request holds two permits, one of the hub's and one of its party's share, kept
/// under its id here: dropping them gives them back.
pub(crate) struct Admission {
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    per_party: usize,
    /// Each party's share (created on its first request; one per party the hub knows).
    parties: std::sync::Mutex<HashMap<domain::PartyId, std::sync::Arc<tokio::sync::Semaphore>>>,
    /// The permits of admitted requests, until they are answered or cancelled.
    held: std::sync::Mutex<HashMap<String, [tokio::sync::OwnedSemaphorePermit; 2]>>,
}

impl Admission {
    pub(crate) fn new(max: usize, per_party: usize) -> Admission {
        Admission {
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(max.max(1))),
            per_party: per_party.max(1),
            parties: Default::default(),
            held: Default::default(),
        }
    }

    fn share(&self, party: &domain::PartyId) -> std::sync::Arc<tokio::sync::Semaphore> {
        let mut parties = self.parties.lock().expect("admission");
        parties
            .entry(party.clone())
            .or_insert_with(|| std::sync::Arc::new(tokio::sync::Semaphore::new(self.per_party)))
            .clone()
    }

    /// Give back the permits of these requests, if they hold them.
    fn release<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut held = self.held.lock().expect("admission");
        let back: Vec<_> = ids.into_iter().filter_map(|id| held.remove(id)).collect();
        drop(held);
        drop(back);
    }
}

/// A request's claim on the permits it was admitted with, while it is being recorded. Kept:
/// they stay with the request until it is answered. Dropped unkept (not recorded, or the
/// caller went away): given back now, unless the answer came first and gave them back.
struct Admitted<'a> {
    admission: &'a Admission,
    id: Option<String>,
}

impl Admitted<'_> {
    fn keep(mut self) {
        self.id = None;
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.admission.release([id.as_str()]);
        }
    }
}

/// Requests a dispatch round has taken and not yet completed, and their devices.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    /// Shared with the due scan, which skips them (copied only if a scan still holds it).
    requests: std::sync::Arc<std::collections::HashSet<i64>>,
    devices: std::collections::HashSet<Eui64>,
    /// Every queued request to run now (no execution time) numbered below this is in
    /// `requests` whenever the lock is free: the search for due requests starts here rather
    /// than walking past every request already with its device. Whatever queues a request
    /// again lowers it under the same hold of the lock as the change (signing and release
    /// from quarantine hold it over their write; a failed round as it lets go), so no
    /// search, which holds the lock over its read, sees one without the other.
    floor: i64,
    /// What the searches did so far. Every [`FULL_SEARCH_EVERY`]th, and every one made with
    /// nothing in flight, starts from the first request and checks the floor.
    searched: DispatchSearches,
    /// Requests a full search found below the floor (each a bug: see `claim_due`).
    floor_misses: u64,
}

/// What the dispatcher's searches for due requests did so far ([`Hub::dispatch_searches`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispatchSearches {
    /// Searches made.
    pub searches: u64,
    /// Due requests they gave (a request whose device was busy is counted each time).
    pub found: u64,
    /// Of those, how many the store had kept in memory since their insert.
    pub kept: u64,
}

/// How often (besides whenever nothing is in flight) the search for due requests starts
/// from the first request instead of the floor, and warns if it finds one the floor had
/// passed over (which would be a bug).
const FULL_SEARCH_EVERY: u64 = 64;
/// Longest a caller may wait for a response in one call.
pub const WAIT_SECONDS_MAX: u64 = 25;

/// What a request is aimed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Mpxn(String),
    Device(String),
}

/// A request as submitted: text, checked here and named on error.
#[derive(Debug, Clone)]
pub struct SubmitInput {
    pub srv: String,
    pub target: Target,
    pub body: Value,
    /// RFC 3339 instant or date; absent = now.
    pub execute_at: Option<String>,
}

/// The note on a request the hub raised itself on a party's behalf (3.2, 6.23, firmware).
const HUB_RAISED: &str = "raised by the hub";

/// EUI-64s listed in a device's answer.
fn euis_in(v: &Value) -> Vec<Eui64> {
    v.as_array()
        .map(|a| a.iter().filter_map(|e| e.as_str().and_then(|e| Eui64::parse(e).ok())).collect())
        .unwrap_or_default()
}

/// What a device's answer changes in the hub's records: credentials moved (6.23), the
/// premises' HAN (8.11, 8.7/8.8), as the device said.
fn effects_of_answer(srv: &str, v: &Value, party: &domain::PartyId, premises_id: i64) -> Vec<Effect> {
    let joins = |list: &[Value]| -> Vec<(Eui64, Vec<Eui64>)> {
        list.iter()
            .filter_map(|j| Some((j["meter"].as_str().and_then(|e| Eui64::parse(e).ok())?, euis_in(&j["joined"]))))
            .collect()
    };
    match srv {
        "6.23" => vec![Effect::CredentialsMoved(store::CredentialsMoved {
            devices: euis_in(&v["devices"]),
            supplier: party.clone(),
        })],
        "8.11" => vec![Effect::Han(store::HanChange {
            premises_id,
            han_log: Some(euis_in(&v["han_log"])),
            joins: joins(v["joins"].as_array().map(Vec::as_slice).unwrap_or_default()),
        })],
        "8.7.1" | "8.7.2" | "8.8.1" | "8.8.2" => {
            vec![Effect::Han(store::HanChange { premises_id, han_log: None, joins: joins(std::slice::from_ref(v)) })]
        }
        _ => Vec::new(),
    }
}

/// Everything decided about a request before it goes out.
pub(crate) struct Plan {
    device: DeviceRecord,
    mpxn: Option<Mpxn>,
    access: Access,
    effect: Option<Effect>,
}

fn invalid(field: &str, rule: impl Into<String>) -> HubError {
    HubError::invalid(field, rule)
}

fn object<'a>(body: &'a Value, allowed: &[&str]) -> Result<&'a Map<String, Value>, HubError> {
    let obj = body.as_object().ok_or_else(|| invalid("body", "must be a JSON object"))?;
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        let allowed = if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") };
        return Err(invalid(&format!("body.{k}"), format!("unknown field; this SRV takes: {allowed}")));
    }
    Ok(obj)
}

fn instant_field(obj: &Map<String, Value>, k: &str) -> Result<(), HubError> {
    match obj.get(k) {
        None => Ok(()),
        Some(Value::String(s)) => {
            domain::time::parse_instant(s).map(|_| ()).map_err(|e| invalid(&format!("body.{k}"), e))
        }
        Some(_) => Err(invalid(&format!("body.{k}"), "must be an instant (RFC 3339) as a string")),
    }
}

/// Check a body against its SRV and return its canonical form (keys sorted, instants
/// normalised to RFC 3339 UTC). `now` bounds times that must not be in the past.
pub fn validate_body(srv: &str, body: &Value, rules: domain::IdRules, now: Timestamp) -> Result<Value, HubError> {
    let body = if body.is_null() { json!({}) } else { body.clone() };
    match srv {
        "5.1" | "5.2" | "5.3" => return crate::schedules::validate_schedule_body(srv, &body, now),
        "1.1.1" | "1.2.1" | "1.6" | "2.1" => {
            // Form only (R-PM-1): whether the product would be consistent is the meter's call.
            domain::product::Change::parse(srv, &body).map_err(|e| invalid(&e.field, e.rule))?;
        }
        "1.5" => {
            let o = object(&body, &["adjustment_pence"])?;
            let a = o
                .get("adjustment_pence")
                .and_then(Value::as_i64)
                .filter(|a| *a != 0 && (-1_000_000..=1_000_000).contains(a))
                .ok_or_else(|| invalid("body.adjustment_pence", "required, -1,000,000 to 1,000,000 pence, not 0"))?;
            return Ok(json!({"adjustment_pence": a}));
        }
        "2.3" => {
            let o = object(&body, &["debt_pence"])?;
            let d = o
                .get("debt_pence")
                .and_then(Value::as_i64)
                .filter(|d| (0..=10_000_000).contains(d))
                .ok_or_else(|| invalid("body.debt_pence", "required, 0 to 10,000,000 pence"))?;
            return Ok(json!({"debt_pence": d}));
        }
        "8.1.1" | "2.5" | "4.1.1" | "6.2" | "7.1" | "7.2" | "7.3" | "7.4" | "11.2" => {
            object(&body, &[])?;
        }
        "6.20.1" => {
            let o = object(&body, &["mpxn"])?;
            let m = o.get("mpxn").and_then(Value::as_str).ok_or_else(|| invalid("body.mpxn", "required, a string"))?;
            let mpxn =
                Mpxn::parse_with(m, rules).map_err(|e| invalid("body.mpxn", format!("{} {}", e.kind, e.rule)))?;
            return Ok(json!({"mpxn": mpxn.to_string()}));
        }
        "4.8.1" | "4.17" => {
            let o = object(&body, &["from", "to"])?;
            instant_field(o, "from")?;
            instant_field(o, "to")?;
            let mut out = Map::new();
            for k in ["from", "to"] {
                if let Some(s) = o.get(k).and_then(Value::as_str) {
                    out.insert(k.into(), json!(domain::time::parse_instant(s).expect("checked").to_string()));
                }
            }
            return Ok(Value::Object(out));
        }
        "2.2" => {
            let o = object(&body, &["utrn"])?;
            let u = o.get("utrn").and_then(Value::as_str).ok_or_else(|| invalid("body.utrn", "required, a string"))?;
            // The hub checks the form; the meter checks the MAC.
            domain::utrn::decode(u).map_err(|e| invalid("body.utrn", e.to_string()))?;
            let digits: String = u.chars().filter(char::is_ascii_digit).collect();
            return Ok(json!({"utrn": digits}));
        }
        "3.1" => {
            let o = object(&body, &["message"])?;
            let m = o
                .get("message")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("body.message", "required, a string"))?;
            if m.is_empty() || m.chars().count() > device::system::DISPLAY_CHARS_MAX || m.chars().any(char::is_control)
            {
                return Err(invalid(
                    "body.message",
                    format!("1 to {} printable characters", device::system::DISPLAY_CHARS_MAX),
                ));
            }
        }
        "3.2" => {
            return Err(invalid(
                "srv",
                "3.2 is sent by the hub when the supplier notifies a change of tenancy, which records it (and \
                 the outgoing tenant's consent to share history): POST /v1/metering-points/{mpxn}/change-of-tenancy",
            ));
        }
        "11.1" => {
            return Err(invalid(
                "srv",
                "11.1 is sent by the hub's firmware distribution, which attaches the manufacturer's signed image: \
                 POST /v1/firmware/campaigns",
            ));
        }
        "6.15.1" => {
            let o = object(&body, &["agent"])?;
            return match o.get("agent") {
                Some(Value::Null) => Ok(json!({"agent": null})),
                Some(Value::String(p)) => domain::PartyId::parse(p)
                    .map(|p| json!({"agent": p.as_str()}))
                    .map_err(|e| invalid("body.agent", e.to_string())),
                _ => Err(invalid(
                    "body.agent",
                    "required: the meter asset provider's party id (its key is put on the device for SRV 11.3), or null to remove it",
                )),
            };
        }
        "11.3" => {
            let o = object(&body, &["image_hash"])?;
            let h = o
                .get("image_hash")
                .and_then(Value::as_str)
                .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| invalid("body.image_hash", "required: the image's SHA-256, 64 hex digits"))?;
            return Ok(json!({"image_hash": h.to_ascii_lowercase()}));
        }
        "6.23" => {
            return Err(invalid(
                "srv",
                "6.23 is sent by the hub's change-of-supplier process at the switch instant, signed with its \
                 change-of-supplier key; ask for a switch with POST /v1/switches",
            ));
        }
        "6.22" => {
            let o = object(&body, &["alert_code", "enabled"])?;
            let code = o
                .get("alert_code")
                .and_then(Value::as_str)
                .and_then(|s| s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")))
                .filter(|h| h.len() == 4)
                .and_then(|h| u16::from_str_radix(h, 16).ok())
                .ok_or_else(|| invalid("body.alert_code", "a GBCS alert code such as \"0x8F35\""))?;
            let enabled = o
                .get("enabled")
                .and_then(Value::as_bool)
                .ok_or_else(|| invalid("body.enabled", "required, true or false"))?;
            return Ok(json!({"alert_code": format!("0x{code:04X}"), "enabled": enabled}));
        }
        "8.7.1" | "8.7.2" | "8.8.1" | "8.8.2" => {
            let o = object(&body, &["device"])?;
            let d = o
                .get("device")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("body.device", "required, the EUI-64 of the device to join or unjoin"))?;
            let eui = Eui64::parse(d).map_err(|e| invalid("body.device", e.to_string()))?;
            return Ok(json!({"device": eui.to_string()}));
        }
        "8.11" => {
            let o = object(&body, &["add", "remove"])?;
            let mut out = Map::new();
            for k in ["add", "remove"] {
                let Some(v) = o.get(k) else { continue };
                let list = v.as_array().ok_or_else(|| invalid(&format!("body.{k}"), "a list of EUI-64s"))?;
                if list.len() > device::system::HAN_LOG_MAX {
                    return Err(invalid(
                        &format!("body.{k}"),
                        format!("at most {} devices", device::system::HAN_LOG_MAX),
                    ));
                }
                let euis = list
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        e.as_str()
                            .ok_or_else(|| invalid(&format!("body.{k}[{i}]"), "an EUI-64 string"))
                            .and_then(|s| {
                                Eui64::parse(s).map_err(|e| invalid(&format!("body.{k}[{i}]"), e.to_string()))
                            })
                            .map(|e| json!(e.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                out.insert(k.into(), Value::Array(euis));
            }
            if out.is_empty() {
                return Err(invalid("body", "give add, remove or both"));
            }
            return Ok(Value::Object(out));
        }
        _ => {
            return Err(HubError::Unsupported(format!(
                "SRV {srv} is in the catalogue but not yet executed by this hub"
            )));
        }
    }
    Ok(body)
}

fn fuel_of_kind(kind: &str) -> Option<Fuel> {
    match kind {
        "electricity-meter" => Some(Fuel::Electricity),
        "gas-meter" => Some(Fuel::Gas),
        _ => None,
    }
}

impl Hub {
    pub(crate) async fn next_request_counter(&self, originator: Eui64) -> Result<u64, HubError> {
        let mut counters = self.inner.counters.lock().await;
        let slot = counters.entry(originator).or_insert((0, 0));
        if slot.0 >= slot.1 {
            let first = self.store().reserve_counters(originator, COUNTER_BLOCK).await?;
            *slot = (first, first + COUNTER_BLOCK);
        }
        let c = slot.0;
        slot.0 += 1;
        Ok(c)
    }

    async fn resolve_target(&self, srv: &str, target: &Target) -> Result<DeviceRecord, HubError> {
        match target {
            Target::Device(e) => {
                let eui = Eui64::parse(e).map_err(|e| invalid("target.device", e.to_string()))?;
                self.store()
                    .device(eui)
                    .await?
                    .ok_or_else(|| HubError::NotFound(format!("no device {eui} is installed")))
            }
            Target::Mpxn(m) => {
                let mpxn = self.parse_mpxn("target.mpxn", m)?;
                let meter = self.store().device_for_mpxn(mpxn).await?.ok_or_else(|| {
                    HubError::Conflict(format!(
                        "metering point {mpxn} is not enrolled: no smart meter is linked to it (R-REG-2)"
                    ))
                })?;
                if srv == "8.11" {
                    // The HAN device log lives on the premises' comms hub.
                    let devices = self.store().premises_devices(meter.premises_id).await?;
                    return devices
                        .into_iter()
                        .find(|d| d.kind == "comms-hub")
                        .ok_or_else(|| HubError::NotFound(format!("no comms hub at the premises of {mpxn}")));
                }
                Ok(meter)
            }
        }
    }

    /// The MPxN whose relationships govern a device: its own, or the premises' linked meter.
    async fn governing_mpxn(&self, device: &DeviceRecord) -> Result<Option<Mpxn>, HubError> {
        if device.mpxn.is_some() {
            return Ok(device.mpxn);
        }
        let devices = self.store().premises_devices(device.premises_id).await?;
        let mut linked: Vec<&DeviceRecord> = devices.iter().filter(|d| d.mpxn.is_some()).collect();
        linked.sort_by_key(|d| d.kind != "electricity-meter");
        Ok(linked.first().and_then(|d| d.mpxn))
    }

    /// The device still serves `mpxn`: it is the meter linked to it, or a premises-level
    /// device (comms hub, display) where such a meter is. Checked at execution too, so a
    /// request or schedule made under one MPxN never reaches a device re-linked to another.
    async fn check_serves(&self, device: &DeviceRecord, mpxn: Mpxn) -> Result<(), HubError> {
        let premises_level = matches!(device.kind.as_str(), "comms-hub" | "in-home-display" | "ppmid");
        let serves = match device.mpxn {
            Some(m) => m == mpxn,
            // A meter serves only the point it is linked to; an unlinked one serves none.
            None if premises_level => {
                self.store().premises_devices(device.premises_id).await?.iter().any(|d| d.mpxn == Some(mpxn))
            }
            None => false,
        };
        if serves {
            Ok(())
        } else {
            Err(HubError::Conflict(format!("device {} does not serve {mpxn} (any more)", device.eui)))
        }
    }

    /// R-REG-2: the metering point must be smart (by its registration at `at`) and enrolled
    /// (by its enrolment at `at`).
    fn check_enrolled(
        mpxn: Mpxn,
        at: Timestamp,
        reg: Option<&RegistrationVersion>,
        enrolment: Option<&EnrolmentVersion>,
    ) -> Result<(), HubError> {
        match reg {
            None => Err(HubError::Conflict(format!("metering point {mpxn} has no registration at {at}"))),
            Some(r) if r.data.meter_type != MeterType::SmartCompliant => Err(HubError::Conflict(format!(
                "metering point {mpxn} has a {} meter at {at}: service requests need a smart meter (R-REG-2)",
                r.data.meter_type
            ))),
            Some(_) => {
                if enrolment.is_some_and(|e| e.enrolled) {
                    Ok(())
                } else {
                    Err(HubError::Conflict(format!(
                        "metering point {mpxn}'s smart metering system is not enrolled in the hub at {at} (R-REG-2)"
                    )))
                }
            }
        }
    }

    /// Decide everything about a request for `party` at instant `at`: the device, the
    /// relationship, the data window. Run at submission and again at execution. `named` is
    /// the MPxN the sender addressed, whose relationships govern a premises-level device
    /// (the comms hub); otherwise the device's own (or its premises' linked meter's) do.
    pub(crate) async fn plan(
        &self,
        party: &Party,
        srv: &str,
        device: DeviceRecord,
        named: Option<Mpxn>,
        body: &Value,
        at: Timestamp,
    ) -> Result<Plan, HubError> {
        let caller = Caller { party: party.clone(), token_id: String::new() };
        match srv {
            "5.2" | "5.3" => {
                // A party reads and deletes its own schedules whatever its relationship now
                // (the hub checks ownership): a supplier that has lost the supply can still
                // stop one.
                let mpxn = match named {
                    Some(m) => Some(m),
                    None => self.governing_mpxn(&device).await?,
                };
                let access = Access { requester: Requester::Supplier, from: None, to: None };
                Ok(Plan { device, mpxn, access, effect: None })
            }
            "8.1.1" => {
                // A device is commissioned by the supplier whose credentials it holds: the
                // installer, until a change of supplier moved them.
                let premises = self.store().premises_devices(device.premises_id).await?;
                let installer = self.trusted_supplier_of(&device).await?;
                let fuel =
                    if premises.iter().any(|d| d.kind == "electricity-meter") { Fuel::Electricity } else { Fuel::Gas };
                let rel = Relationships {
                    mpxn: format!("the premises of {}", device.eui),
                    fuel,
                    at,
                    registered_supplier: Some(installer),
                    export_supplier: None,
                    network_operator: None,
                    consent_holders: Vec::new(),
                    appointed_agents: Vec::new(),
                    former_suppliers: Vec::new(),
                };
                self.authorize(&caller, srv, Some(&rel.facts()))?;
                let effect = Some(Effect::Commissioned { eui: device.eui, at });
                Ok(Plan {
                    device,
                    mpxn: None,
                    access: Access { requester: Requester::Supplier, from: None, to: None },
                    effect,
                })
            }
            "6.20.1" => {
                let mpxn = self.parse_mpxn("body.mpxn", body["mpxn"].as_str().unwrap_or_default())?;
                if fuel_of_kind(&device.kind) != Some(mpxn.fuel()) {
                    return Err(invalid(
                        "body.mpxn",
                        format!("a {} cannot be linked to a {} metering point", device.kind, mpxn.fuel()),
                    ));
                }
                if device.commissioned_at.is_none() {
                    return Err(HubError::Conflict(format!(
                        "device {} is not commissioned (SRV 8.1.1 first)",
                        device.eui
                    )));
                }
                if let Some(other) = self.store().device_for_mpxn(mpxn).await?
                    && other.eui != device.eui
                {
                    return Err(HubError::Conflict(format!("{mpxn} is already linked to device {}", other.eui)));
                }
                let reg = self.store().registration_at(mpxn, at, None).await?;
                let rel = Relationships::from_registration(&mpxn, at, reg.as_ref());
                self.authorize(&caller, srv, Some(&rel.facts()))?;
                // Only the supplier the device trusts links it: another supplier must not
                // attach someone else's meter to its own metering point.
                let trusted = self.trusted_supplier_of(&device).await?;
                if trusted != party.id {
                    return Err(HubError::Conflict(format!(
                        "device {} trusts {trusted}, not {}; only its supplier links it to a metering point",
                        device.eui, party.id
                    )));
                }
                match reg {
                    Some(r) if r.data.meter_type == MeterType::SmartCompliant => {}
                    Some(r) => {
                        return Err(HubError::Conflict(format!(
                            "metering point {mpxn} is registered with a {} meter; only smart-compliant meters enrol (R-REG-2)",
                            r.data.meter_type
                        )));
                    }
                    None => {
                        return Err(HubError::Conflict(format!("metering point {mpxn} has no registration at {at}")));
                    }
                }
                let effect = Some(Effect::Linked { eui: device.eui, mpxn, at, by: party.id.clone() });
                Ok(Plan {
                    device,
                    mpxn: Some(mpxn),
                    access: Access { requester: Requester::Supplier, from: None, to: None },
                    effect,
                })
            }
            _ => {
                let governing = match named {
                    Some(m) => {
                        self.check_serves(&device, m).await?;
                        Some(m)
                    }
                    None => self.governing_mpxn(&device).await?,
                };
                let mpxn = governing.ok_or_else(|| {
                    HubError::Conflict(format!(
                        "device {} is not linked to an enrolled metering point (R-REG-2)",
                        device.eui
                    ))
                })?;
                // One registry read serves the relationship and the smart-meter and enrolment
                // checks, all as of one moment.
                let (reg, enrolment) = self.store().registration_and_enrolment_at(mpxn, at).await?;
                let mut rel = Relationships::from_registration(&mpxn, at, reg.as_ref());
                let consent_from = self.add_grants(party, mpxn, &mut rel).await?;
                // A supplier no longer registered may read its own, ended period.
                let mut former: Option<(Timestamp, Timestamp)> = None;
                if FORMER_SUPPLIER_SRVS.contains(&srv)
                    && rel.registered_supplier.as_ref() != Some(&party.id)
                    && (party.roles.contains(domain::Role::ImportSupplier)
                        || party.roles.contains(domain::Role::GasSupplier))
                {
                    let history = self.store().registration_history(mpxn).await?;
                    // Its latest ended period that begins before the end of what it asks (the
                    // device picks the same).
                    let asked_to = body
                        .get("to")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse::<Timestamp>().ok())
                        .map_or(at, |t| t.min(at));
                    let ended: Vec<(Timestamp, Timestamp)> = supplier_periods(&history, &party.id, at)
                        .into_iter()
                        .filter_map(|(from, to)| to.map(|to| (from, to)))
                        .collect();
                    former = ended.iter().rev().find(|(from, _)| *from < asked_to).or(ended.last()).copied();
                    if former.is_some() {
                        rel.former_suppliers.push(party.id.clone());
                    }
                }
                let grant = self.authorize(&caller, srv, Some(&rel.facts()))?;
                Self::check_enrolled(mpxn, at, reg.as_ref(), enrolment.as_ref())?;
                let access = match grant.relation {
                    Relation::RegisteredSupplier | Relation::RegisteredExportSupplier => {
                        // Only reads of stored data have a window; others skip the history read.
                        let from = if WINDOWED_SRVS.contains(&srv) {
                            let history = self.store().registration_history(mpxn).await?;
                            supplier_period_start(&history, &party.id, at)
                        } else {
                            None
                        };
                        // The export supplier is not the import customer's supplier: it does
                        // not see the product or the prepayment account.
                        let requester = if grant.relation == Relation::RegisteredSupplier {
                            Requester::Supplier
                        } else {
                            Requester::ExportSupplier
                        };
                        Access { requester, from, to: Some(at) }
                    }
                    Relation::FormerSupplier => {
                        let (from, to) = former.expect("a former supplier's grant needs its period");
                        Access { requester: Requester::FormerSupplier, from: Some(from), to: Some(to.min(at)) }
                    }
                    Relation::NetworkOperator => {
                        Access { requester: Requester::NetworkOperator, from: None, to: Some(at) }
                    }
                    // An other user reads only from the start of the consent it holds.
                    Relation::ConsentHolder => {
                        Access { requester: Requester::OtherUser, from: consent_from, to: Some(at) }
                    }
                    _ => Access { requester: Requester::OtherUser, from: None, to: Some(at) },
                };
                Ok(Plan { device, mpxn: Some(mpxn), access, effect: None })
            }
        }
    }

    /// The supplier whose keys a device trusts: the installing supplier, until a change of
    /// supplier replaced the device's credentials (SRV 6.23).
    pub(crate) async fn trusted_supplier_of(&self, device: &DeviceRecord) -> Result<domain::PartyId, HubError> {
        match &device.trusted_supplier {
            Some(s) => Ok(s.clone()),
            None => self.installer_of(device.premises_id).await,
        }
    }

    /// A request the hub raises itself on a party's behalf (the switch instant's 6.23, a
    /// change of tenancy's 3.2): planned and authorised like any other as at `at`, queued to
    /// run then, not yet stored. `cos_signed` signs the command with the hub's
    /// change-of-supplier key.
    #[allow(clippy::too_many_arguments, reason = "a request's whole description, as submit takes it")]
    pub(crate) async fn hub_request(
        &self,
        party: &Party,
        srv: &str,
        device: DeviceRecord,
        mpxn: Option<Mpxn>,
        body: Value,
        at: Timestamp,
        cos_signed: bool,
    ) -> Result<RequestRecord, HubError> {
        let now = self.now();
        let plan = self.plan(party, srv, device, mpxn, &body, at).await?;
        let counter = self.next_request_counter(party.originator).await?;
        let id = RequestId { originator: party.originator, target: plan.device.eui, counter };
        let body_text = serde_json::to_string(&body).expect("JSON values serialise");
        let execute_at = (at > now).then_some(at);
        let command = Command { id, srv: srv.to_string(), execute_at, body: body_text.clone().into_bytes() };
        let precommand = command.encode();
        let signature = if cos_signed {
            Some(
                self.inner
                    .cos_key
                    .sign(&self.inner.rng, &precommand)
                    .map_err(|e| HubError::Unavailable(format!("cannot sign with the change-of-supplier key: {e}")))?,
            )
        } else {
            None
        };
        Ok(RequestRecord {
            seq: 0,
            id: id.to_string(),
            party: party.id.clone(),
            srv: srv.to_string(),
            target: plan.device.eui,
            mpxn: plan.mpxn,
            body: body_text,
            precommand,
            signature,
            submitted_at: now,
            execute_at,
            status: RequestStatus::Queued,
            status_at: now,
            note: Some(HUB_RAISED.into()),
            schedule_id: None,
        })
    }

    /// SRV 6.15.1 as this hub models it: the supplier puts its meter asset provider's key on
    /// a device (or removes it), so the device accepts that agent's signed 11.3.
    async fn agent_credential(&self, caller: &Caller, body: &Value) -> Result<Value, HubError> {
        if !(caller.party.roles.contains(domain::Role::ImportSupplier)
            || caller.party.roles.contains(domain::Role::GasSupplier))
        {
            return Err(invalid(
                "srv",
                "6.15.1 here updates a supplier's agent credential; network operator credentials are not modelled",
            ));
        }
        let Some(id) = body["agent"].as_str() else { return Ok(json!({"agent": null})) };
        let id: domain::PartyId = id.parse().map_err(|e| invalid("body.agent", format!("{e}")))?;
        let agent = self
            .store()
            .party(&id)
            .await?
            .filter(|p| p.roles.contains(domain::Role::MeterAssetProvider))
            .ok_or_else(|| invalid("body.agent", format!("{id} is not a meter asset provider")))?;
        let spki = agent
            .signing_key_spki
            .ok_or_else(|| invalid("body.agent", format!("{id} has no registered signing key")))?;
        Ok(json!({"agent": device::TrustAnchor { originator: agent.originator, spki: spki.into(), prepayment: None }}))
    }

    async fn installer_of(&self, premises_id: i64) -> Result<domain::PartyId, HubError> {
        self.store()
            .premises(premises_id)
            .await?
            .map(|p| p.installed_by)
            .ok_or_else(|| HubError::NotFound(format!("premises {premises_id}")))
    }

    /// Accept a request: it is checked, stored and acknowledged with its id; the response
    /// follows when it has run.
    pub async fn submit(&self, caller: &Caller, input: &SubmitInput) -> Result<RequestRecord, HubError> {
        let service =
            catalogue::service(&input.srv).filter(|s| s.kind == catalogue::ServiceKind::Srv).ok_or_else(|| {
                invalid("srv", format!("{:?} is not a service request variant of the catalogue", input.srv))
            })?;
        self.check_role(caller, service.code)?;
        let now = self.now();
        let mut body = validate_body(service.code, &input.body, self.config().id_rules, now)?;
        if service.code == "6.15.1" {
            body = self.agent_credential(caller, &body).await?;
        }
        let execute_at = match &input.execute_at {
            None => None,
            Some(s) => {
                let at = domain::time::parse_instant(s).map_err(|e| invalid("execute_at", e))?;
                if service.future_date == FutureDate::No {
                    return Err(invalid("execute_at", format!("SRV {} cannot be future-dated", service.code)));
                }
                check_ahead("execute_at", at, now)?;
                Some(at)
            }
        };
        let device = self.resolve_target(service.code, &input.target).await?;
        let named = match &input.target {
            Target::Mpxn(m) => Some(self.parse_mpxn("target.mpxn", m)?),
            Target::Device(_) => None,
        };
        let plan = self.plan(&caller.party, service.code, device, named, &body, execute_at.unwrap_or(now)).await?;
        let counter = self.next_request_counter(caller.party.originator).await?;
        let id = RequestId { originator: caller.party.originator, target: plan.device.eui, counter };
        let body_text = serde_json::to_string(&body).expect("JSON values serialise");
        let command = Command { id, srv: service.code.to_string(), execute_at, body: body_text.clone().into_bytes() };
        // Device-held future dating: the command goes now and the meter keeps it until its
        // time; hub-held: the hub keeps the request until then.
        let device_holds = service.future_date == FutureDate::Device && execute_at.is_some();
        if let Some(at) = execute_at
            && domain::product::PRODUCT_SRVS.contains(&service.code)
            && at.as_second().rem_euclid(1800) != 0
        {
            return Err(invalid(
                "execute_at",
                "a product change takes effect on a half hour (charges are per half hour)",
            ));
        }
        let mut record = RequestRecord {
            seq: 0,
            id: id.to_string(),
            party: caller.party.id.clone(),
            srv: service.code.to_string(),
            target: plan.device.eui,
            mpxn: plan.mpxn,
            body: body_text,
            precommand: command.encode(),
            signature: None,
            submitted_at: now,
            execute_at: if device_holds { None } else { execute_at },
            status: RequestStatus::Queued,
            status_at: now,
            note: None,
            schedule_id: None,
        };
        if HUB_ANSWERED_SRVS.contains(&service.code) {
            if service.code == "5.1" {
                // The schedule's read must be the caller's to send, now as at every run.
                let read = body["srv"].as_str().unwrap_or_default();
                self.plan(&caller.party, read, plan.device.clone(), plan.mpxn, &json!({}), now).await?;
            }
            let record = self.answer_schedule_request(record, &body, &plan.device, plan.mpxn).await?;
            metrics::counter!("meterhub_requests_accepted_total", "srv" => service.code).increment(1);
            return Ok(record);
        }
        // Room first (see `admit`): a request that waits, or is refused as busy, has not
        // been counted by the anomaly detector either.
        let runs_now = service.critical != Critical::Yes && record.execute_at.is_none();
        let mut room = self.admit_if(runs_now, &caller.party.id, &record.id).await?;
        let admitted = self.inner.anomaly.lock().expect("detector").admit(&caller.party.id, service.code, now);
        let (status, note, alert) = match admitted {
            Err(q) => (RequestStatus::Quarantined, Some(q.reason), q.alert),
            Ok(()) if service.critical == Critical::Yes => (RequestStatus::AwaitingSignature, None, false),
            Ok(()) => (RequestStatus::Queued, None, false),
        };
        if status == RequestStatus::Quarantined {
            metrics::counter!("meterhub_requests_quarantined_total", "srv" => service.code).increment(1);
            // Once per threshold and window at warning level: an attack must not flood the log.
            if alert {
                tracing::warn!(message = "Requests quarantined; more are logged at debug level.", party = %caller.party.id, srv = service.code, reason = note.as_deref().unwrap_or(""));
            } else {
                tracing::debug!(message = "Request quarantined.", party = %caller.party.id, srv = service.code, reason = note.as_deref().unwrap_or(""));
            }
        }
        record.status = status;
        record.note =
            note.or_else(|| execute_at.filter(|_| device_holds).map(|at| format!("held by the device until {at}")));
        if record.status != RequestStatus::Queued {
            room = None;
        }
        let record = self.store().insert_request(record).await?;
        if let Some(a) = room {
            a.keep();
        }
        if alert {
            // Once per threshold and window: the party and the hub operator (R-SR-5, R-FLT-1).
            self.raise(
                domain::alerts::HubAlert::Quarantine,
                Some(&caller.party.id),
                record.mpxn,
                Some(record.target),
                format!(
                    "{} is sending SRV {} beyond a threshold; first quarantined: {} ({})",
                    caller.party.id,
                    service.code,
                    record.id,
                    record.note.as_deref().unwrap_or("")
                ),
                json!({"party": caller.party.id.as_str(), "srv": service.code, "request_id": record.id}),
            )
            .await;
        }
        metrics::counter!("meterhub_requests_accepted_total", "srv" => service.code).increment(1);
        self.inner.work.notify_one();
        Ok(record)
    }

    /// Wait for room for a request of `party`'s about to run now: first in the party's
    /// share (`admitted_per_party_max`), then in the hub's (`admitted_max`), within one
    /// `admission_wait` in all.
    async fn admit(&self, party: &domain::PartyId, id: &str) -> Result<Admitted<'_>, HubError> {
        let admission = &self.inner.admission;
        let config = self.config();
        let deadline = tokio::time::Instant::now() + config.admission_wait;
        let busy = |whose: String, n: usize| {
            metrics::counter!("meterhub_requests_busy_total").increment(1);
            HubError::Unavailable(format!(
                "the hub is busy: {n} requests {whose} are waiting for their devices and none finished within {} s; \
                 nothing was recorded, try again shortly",
                config.admission_wait.as_secs_f64()
            ))
        };
        let closed = || HubError::Unavailable("the hub is shutting down".into());
        let own = match tokio::time::timeout_at(deadline, admission.share(party).acquire_owned()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(closed()),
            Err(_) => return Err(busy(format!("of {party}'s"), config.admitted_per_party_max)),
        };
        let hub = match tokio::time::timeout_at(deadline, admission.permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(closed()),
            Err(_) => return Err(busy("in all".into(), config.admitted_max)),
        };
        admission.held.lock().expect("admission").insert(id.to_string(), [hub, own]);
        Ok(Admitted { admission, id: Some(id.to_string()) })
    }

    /// Room for a request about to run now, if `runs_now`; nothing otherwise.
    async fn admit_if(
        &self,
        runs_now: bool,
        party: &domain::PartyId,
        id: &str,
    ) -> Result<Option<Admitted<'_>>, HubError> {
        Ok(if runs_now { Some(self.admit(party, id).await?) } else { None })
    }

    /// A request of the caller's (or any, for the hub operator) with its response.
    pub async fn request_status(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<(RequestRecord, Option<ResponseRecord>), HubError> {
        let found = self.store().request(id).await?;
        match found {
            Some((r, resp)) if r.party == caller.party.id => {
                self.authorize(caller, "request.read-own", None)?;
                Ok((r, resp))
            }
            Some(found) => {
                // Another party's request: only the operator may see it; others learn nothing.
                self.authorize(caller, "request.read", None)
                    .map_err(|_| HubError::NotFound(format!("no request {id}")))?;
                Ok(found)
            }
            None => Err(HubError::NotFound(format!("no request {id}"))),
        }
    }

    /// As [`Hub::request_status`], waiting up to `wait` for the response.
    pub async fn wait_for_response(
        &self,
        caller: &Caller,
        id: &str,
        wait: Duration,
    ) -> Result<(RequestRecord, Option<ResponseRecord>), HubError> {
        let wait = wait.min(Duration::from_secs(WAIT_SECONDS_MAX));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.inner.completed.notified();
            let found = self.request_status(caller, id).await?;
            let settled = !matches!(found.0.status, RequestStatus::Queued);
            if settled || tokio::time::Instant::now() >= deadline {
                return Ok(found);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.request_status(caller, id).await;
            }
        }
    }

    /// Accept the sender's signature over the pre-command of a critical request and queue it.
    /// The hub does not judge the signature: the device does.
    pub async fn sign_request(&self, caller: &Caller, id: &str, signature: Vec<u8>) -> Result<RequestRecord, HubError> {
        let (record, _) = self.own_request(caller, id).await?;
        if signature.is_empty() || signature.len() > 128 {
            return Err(invalid("signature", "an ECDSA P-256 signature, ASN.1 DER, 8 to 72 bytes"));
        }
        // Signed, it runs now (unless future-dated): it needs room like any other.
        let runs_now = record.status == RequestStatus::AwaitingSignature && record.execute_at.is_none();
        let room = self.admit_if(runs_now, &caller.party.id, id).await?;
        // Queued under the in-flight lock, with the floor lowered before the lock goes: no
        // search runs between the two (see `InFlight::floor`).
        let mut in_flight = self.inner.in_flight.lock().await;
        let r = self
            .store()
            .transition_request(
                id,
                &[RequestStatus::AwaitingSignature],
                RequestStatus::Queued,
                self.now(),
                Some("signed".into()),
                Some(signature),
            )
            .await?;
        in_flight.floor = in_flight.floor.min(r.seq);
        drop(in_flight);
        if let Some(a) = room {
            a.keep();
        }
        self.inner.work.notify_one();
        Ok(r)
    }

    /// Withdraw a request that has not run.
    pub async fn cancel_request(&self, caller: &Caller, id: &str) -> Result<RequestRecord, HubError> {
        let (record, _) = self.own_request(caller, id).await?;
        // A request a dispatch round holds is with its device already. The lock is held over
        // the change, so no round takes the request meanwhile (rounds claim under it).
        let in_flight = self.inner.in_flight.lock().await;
        if in_flight.requests.contains(&record.seq) {
            return Err(HubError::Conflict(format!(
                "request {id} is already with its device: only a request that has not run can be cancelled"
            )));
        }
        let from = [RequestStatus::AwaitingSignature, RequestStatus::Queued, RequestStatus::Quarantined];
        let r = self
            .move_own_request(
                id,
                &from,
                RequestStatus::Cancelled,
                "cancelled by the sender",
                "only a request that has not run can be cancelled",
            )
            .await?;
        drop(in_flight);
        self.inner.admission.release([r.id.as_str()]);
        Ok(r)
    }

    /// Release a quarantined request: it goes on as if it had not been stopped (to signing,
    /// for a critical SRV not yet signed).
    pub async fn release_request(&self, caller: &Caller, id: &str) -> Result<RequestRecord, HubError> {
        let (record, _) = self.own_request(caller, id).await?;
        let critical = catalogue::service(&record.srv).is_some_and(|s| s.critical == Critical::Yes);
        let to = if critical && record.signature.is_none() {
            RequestStatus::AwaitingSignature
        } else {
            RequestStatus::Queued
        };
        let runs_now =
            to == RequestStatus::Queued && record.status == RequestStatus::Quarantined && record.execute_at.is_none();
        let room = self.admit_if(runs_now, &caller.party.id, id).await?;
        // As in `sign_request`: queued under the in-flight lock, the floor lowered with it.
        let mut in_flight = self.inner.in_flight.lock().await;
        let r = self
            .move_own_request(
                id,
                &[RequestStatus::Quarantined],
                to,
                "released by the sender",
                "only a quarantined request can be released",
            )
            .await?;
        in_flight.floor = in_flight.floor.min(r.seq);
        drop(in_flight);
        if let Some(a) = room {
            a.keep();
        }
        self.inner.work.notify_one();
        Ok(r)
    }

    /// Delete a quarantined request: it never runs.
    pub async fn delete_request(&self, caller: &Caller, id: &str) -> Result<RequestRecord, HubError> {
        self.own_request(caller, id).await?;
        self.move_own_request(
            id,
            &[RequestStatus::Quarantined],
            RequestStatus::Deleted,
            "deleted by the sender",
            "only a quarantined request can be deleted",
        )
        .await
    }

    /// The caller's quarantined requests.
    pub async fn quarantined(&self, caller: &Caller) -> Result<Vec<RequestRecord>, HubError> {
        self.authorize(caller, "request.read-own", None)?;
        Ok(self.store().requests_in_status(&caller.party.id, RequestStatus::Quarantined, 1000).await?)
    }

    /// Move a request the caller has checked is its own, explaining a refusal.
    async fn move_own_request(
        &self,
        id: &str,
        from: &[RequestStatus],
        to: RequestStatus,
        note: &str,
        refusal: &str,
    ) -> Result<RequestRecord, HubError> {
        self.store().transition_request(id, from, to, self.now(), Some(note.into()), None).await.map_err(|e| match e {
            store::StoreError::Conflict(m) => HubError::Conflict(format!("{m}: {refusal}")),
            other => other.into(),
        })
    }

    /// A request of the caller's own (not even the operator acts on another's).
    async fn own_request(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<(RequestRecord, Option<ResponseRecord>), HubError> {
        let found = self.request_status(caller, id).await?;
        if found.0.party != caller.party.id {
            return Err(HubError::NotFound(format!("no request {id}")));
        }
        Ok(found)
    }

    /// Take up to [`DISPATCH_BATCH_MAX`] due requests that no other round holds, keeping
    /// each device's requests in one round and in order: a device with a request in flight
    /// gets no more until it answers. The lock is held over the read, and released requests
    /// leave the set under it after their completion is committed, so a round never takes a
    /// request another round has just completed.
    async fn claim_due(&self, now: Timestamp) -> Result<Vec<RequestRecord>, HubError> {
        let mut in_flight = self.inner.in_flight.lock().await;
        let except = in_flight.requests.clone();
        in_flight.searched.searches += 1;
        // With nothing in flight a full search walks nothing more than one from the floor
        // (every request below it would be in flight): so a request the floor passed over
        // waits at most until the dispatcher has nothing in hand.
        let full = in_flight.requests.is_empty() || in_flight.searched.searches.is_multiple_of(FULL_SEARCH_EVERY);
        let from = if full { 0 } else { in_flight.floor };
        let due = self.store().due_requests(now, DISPATCH_BATCH_MAX, except, from).await?;
        in_flight.searched.found += due.requests.len() as u64;
        in_flight.searched.kept += due.kept as u64;
        let mut mine: std::collections::HashSet<Eui64> = std::collections::HashSet::new();
        let mut claimed = Vec::new();
        // The first request to run now that is due but not taken (its device is busy): the
        // first in number order, as the search gives them.
        let mut left: Option<i64> = None;
        for r in due.requests {
            if full && r.execute_at.is_none() && r.seq < in_flight.floor {
                in_flight.floor_misses += 1;
                tracing::warn!(
                    message = "The dispatcher's floor had passed over a queued request (found now).",
                    request = %r.id,
                    floor = in_flight.floor
                );
            }
            let busy = !mine.contains(&r.target) && in_flight.devices.contains(&r.target);
            if busy || claimed.len() == DISPATCH_BATCH_MAX {
                if r.execute_at.is_none() {
                    left.get_or_insert(r.seq);
                }
                continue;
            }
            mine.insert(r.target);
            claimed.push(r);
        }
        // Below where this search looked, or the first it left, every request to run now is
        // in hand.
        let looked = due.looked_to.map_or(from, |s| s + 1);
        in_flight.floor = left.map_or(looked, |l| l.min(looked));
        std::sync::Arc::make_mut(&mut in_flight.requests).extend(claimed.iter().map(|r| r.seq));
        in_flight.devices.extend(mine);
        Ok(claimed)
    }

    /// How many queued requests the dispatcher's floor has passed over, found by its
    /// periodic full search (0 unless there is a bug; for tests and diagnostics).
    pub async fn dispatch_floor_misses(&self) -> u64 {
        self.inner.in_flight.lock().await.floor_misses
    }

    /// What the dispatcher's searches for due requests did so far (diagnostics).
    pub async fn dispatch_searches(&self) -> DispatchSearches {
        self.inner.in_flight.lock().await.searched
    }

    /// Let go of a round's requests. Those of a round that did not complete (`done` false)
    /// are taken again later: the floor goes below them.
    async fn release(&self, round: &[RequestRecord], done: bool) {
        let mut in_flight = self.inner.in_flight.lock().await;
        let InFlight { requests, devices, floor, .. } = &mut *in_flight;
        let requests = std::sync::Arc::make_mut(requests);
        for r in round {
            requests.remove(&r.seq);
            devices.remove(&r.target);
            if !done {
                *floor = (*floor).min(r.seq);
            }
        }
        drop(in_flight);
        // Requests held back behind these may go now.
        self.inner.work.notify_one();
    }

    /// Send every due request to its device and record the answers (one round, to the end).
    /// Returns how many ran.
    pub async fn dispatch_due(&self) -> Result<usize, HubError> {
        let now = self.now();
        let round = self.claim_due(now).await?;
        let result = self.run_round(&round, now).await;
        self.release(&round, result.is_ok()).await;
        result
    }

    /// Start a round in the background, at most [`DISPATCH_ROUNDS_MAX`] at once. Returns
    /// how many requests it took (0: nothing due that no round holds).
    async fn start_round(&self) -> Result<usize, HubError> {
        let permit = self
            .inner
            .rounds
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HubError::Unavailable("the dispatcher is shutting down".into()))?;
        let now = self.now();
        let round = self.claim_due(now).await?;
        let n = round.len();
        if n > 0 {
            let hub = self.clone();
            tokio::spawn(async move {
                use futures::FutureExt as _;
                // A panic must not keep the round's devices held until a restart.
                let ran = std::panic::AssertUnwindSafe(hub.run_round(&round, now)).catch_unwind().await;
                let failed = match ran {
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some("a dispatch round panicked (internal error)".to_string()),
                };
                let done = failed.is_none();
                if let Some(e) = failed {
                    tracing::error!(message = "Dispatch failed; retrying in a second.", error = %e);
                    // Keep the round's requests held a while: taken again at once, a lasting
                    // fault (a full disk) would spin the dispatcher.
                    tokio::time::sleep(DISPATCH_RETRY).await;
                }
                hub.release(&round, done).await;
                drop(permit);
            });
        }
        Ok(n)
    }

    /// Wait until no dispatch round is running. Call it after stopping the dispatcher and
    /// before closing the store or the fleet: a round cut off by a closing fleet would record
    /// its requests as failed.
    pub async fn drain_dispatch(&self) {
        let all = u32::try_from(DISPATCH_ROUNDS_MAX).expect("a small bound");
        let _ = self.inner.rounds.acquire_many(all).await;
    }

    /// Send a round's requests to their devices and record the answers.
    async fn run_round(&self, due: &[RequestRecord], now: Timestamp) -> Result<usize, HubError> {
        if due.is_empty() {
            return Ok(0);
        }
        let mut parties: HashMap<domain::PartyId, Party> = HashMap::new();
        for r in due {
            if !parties.contains_key(&r.party)
                && let Some(p) = self.store().party(&r.party).await?
            {
                parties.insert(p.id.clone(), p);
            }
        }
        // Requests to one device run one after another, in order; devices run side by side.
        let mut slot: HashMap<Eui64, usize> = HashMap::new();
        let mut by_device: Vec<(Eui64, Vec<&RequestRecord>)> = Vec::new();
        for r in due {
            let i = *slot.entry(r.target).or_insert_with(|| {
                by_device.push((r.target, Vec::new()));
                by_device.len() - 1
            });
            by_device[i].1.push(r);
        }
        if let Some(transport) = self.inner.transport.get() {
            let targets: Vec<Eui64> = by_device.iter().map(|(eui, _)| *eui).collect();
            transport.prepare(&targets).await;
        }
        let runs = by_device.into_iter().map(|(_, list)| {
            let parties = &parties;
            async move {
                let mut out = Vec::with_capacity(list.len());
                for r in list {
                    out.push(self.execute(r, parties.get(&r.party), now).await);
                }
                out
            }
        });
        let completions: Vec<Completion> = futures::future::join_all(runs).await.into_iter().flatten().collect();
        let n = completions.len();
        // Requests the hub raised itself (3.2, 6.23, firmware waves) are reported by what
        // raised them (deliveries, switches, campaigns), not once per try.
        let by_id: HashMap<&str, &RequestRecord> = due.iter().map(|r| (r.id.as_str(), r)).collect();
        let failed: Vec<(&RequestRecord, String)> = completions
            .iter()
            .filter(|c| c.outcome == ResponseOutcome::Failed)
            .filter_map(|c| by_id.get(c.request_id.as_str()).map(|r| (*r, c.body.clone())))
            .filter(|(r, _)| r.note.as_deref() != Some(HUB_RAISED))
            .collect();
        self.store().complete_requests(completions).await?;
        self.inner.admission.release(due.iter().map(|r| r.id.as_str()));
        self.inner.completed.notify_waiters();
        // The sender hears of a request that did not run, as an alert too.
        for (r, why) in failed {
            self.raise(
                domain::alerts::HubAlert::CommandFailed,
                Some(&r.party),
                r.mpxn,
                Some(r.target),
                format!("request {} did not run: {why}", r.id),
                json!({"request_id": r.id, "srv": r.srv}),
            )
            .await;
        }
        Ok(n)
    }

    async fn execute(&self, r: &RequestRecord, party: Option<&Party>, now: Timestamp) -> Completion {
        // A response is timed when it is known (the device answered, or the hub gave up), not
        // when its round set out.
        let done = |outcome: ResponseOutcome, body: Value, effects: Vec<Effect>| Completion {
            request_id: r.id.clone(),
            request_seq: Some(r.seq),
            party: r.party.clone(),
            at: self.now(),
            outcome,
            body: body.to_string(),
            effects,
        };
        let Some(party) = party else {
            return done(ResponseOutcome::Failed, json!({"error": "the sending party no longer exists"}), vec![]);
        };
        let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        let device = match self.store().device(r.target).await {
            Ok(Some(d)) => d,
            Ok(None) => {
                return done(ResponseOutcome::Failed, json!({"error": format!("device {} is gone", r.target)}), vec![]);
            }
            Err(e) => return done(ResponseOutcome::Failed, json!({"error": e.to_string()}), vec![]),
        };
        // Checked again at execution: the registry may have moved since submission.
        // Governed at execution by the MPxN it was planned under (6.20.1 and 8.1.1 plan
        // from the device and their body instead).
        let named = if matches!(r.srv.as_str(), "6.20.1" | "8.1.1") { None } else { r.mpxn };
        let plan = match self.plan(party, &r.srv, device, named, &body, now).await {
            Ok(p) => p,
            Err(e) => {
                return done(ResponseOutcome::Failed, json!({"error": format!("refused at execution: {e}")}), vec![]);
            }
        };
        // A firmware distribution carries its image, as the comms hub downloads it.
        let image = if r.srv == "11.1" {
            let hash = body["manifest"]["image_hash"].as_str().unwrap_or_default();
            match self.store().firmware_image_bytes(hash).await {
                Ok(Some(bytes)) => Some(std::sync::Arc::new(bytes)),
                Ok(None) => {
                    return done(ResponseOutcome::Failed, json!({"error": format!("image {hash} is gone")}), vec![]);
                }
                Err(e) => return done(ResponseOutcome::Failed, json!({"error": e.to_string()}), vec![]),
            }
        } else {
            None
        };
        let message = DeviceMessage {
            target: r.target,
            bytes: r.precommand.clone(),
            signature: r.signature.clone(),
            access: plan.access,
            image,
        };
        let Some(transport) = self.inner.transport.get() else {
            return done(ResponseOutcome::Failed, json!({"error": "no device transport is attached"}), vec![]);
        };
        match transport.send(message).await {
            Ok(Outcome::Done(v)) => {
                metrics::counter!("meterhub_responses_total", "outcome" => "done").increment(1);
                let mut effects: Vec<Effect> = plan.effect.into_iter().collect();
                effects.extend(effects_of_answer(&r.srv, &v, &party.id, plan.device.premises_id));
                done(ResponseOutcome::Done, v, effects)
            }
            Ok(Outcome::Refused { code, reason }) => {
                metrics::counter!("meterhub_responses_total", "outcome" => "device-refused").increment(1);
                done(ResponseOutcome::DeviceRefused, json!({"code": code, "reason": reason}), vec![])
            }
            Err(e) => {
                metrics::counter!("meterhub_responses_total", "outcome" => "failed").increment(1);
                done(ResponseOutcome::Failed, json!({"error": e.to_string()}), vec![])
            }
        }
    }

    /// A request's audit trail (its sender, or the hub operator).
    pub async fn audit_trail(&self, caller: &Caller, id: &str) -> Result<Vec<store::AuditRecord>, HubError> {
        self.request_status(caller, id).await?;
        Ok(self.store().audit_trail(id).await?)
    }

    /// A party's responses after a sequence number (pull delivery).
    pub async fn responses(&self, caller: &Caller, after: i64, limit: usize) -> Result<Vec<ResponseRecord>, HubError> {
        self.authorize(caller, "request.read-own", None)?;
        Ok(self.store().responses_after(&caller.party.id, after, limit.clamp(1, 1000)).await?)
    }

    /// The caller's next responses after `after`, waiting up to `wait` for one to arrive.
    pub async fn next_responses(
        &self,
        caller: &Caller,
        after: i64,
        wait: Duration,
    ) -> Result<Vec<ResponseRecord>, HubError> {
        self.authorize(caller, "request.read-own", None)?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.inner.completed.notified();
            let found = self.store().responses_after(&caller.party.id, after, 100).await?;
            if !found.is_empty() || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(found);
            }
        }
    }

    /// Run the dispatcher until the hub is dropped: woken by new work, and every `tick` for
    /// requests whose time has come.
    pub async fn run_dispatcher(self, tick: Duration) {
        loop {
            if let Err(e) = self.run_schedules_due().await {
                tracing::error!(message = "Scheduling failed; retrying.", error = %e);
            }
            let switched = match self.run_switches_due().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(message = "Switching failed; retrying.", error = %e);
                    0
                }
            };
            let ran = match self.start_round().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(message = "Dispatch failed; retrying.", error = %e);
                    0
                }
            };
            let waved = match self.run_campaigns_due().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(message = "Firmware campaigns failed; retrying.", error = %e);
                    0
                }
            };
            // After the dispatch, so a try that just ran is followed at once.
            let followed = match self.run_deliveries_due().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(message = "Following deliveries failed; retrying.", error = %e);
                    0
                }
            };
            if ran + switched + followed + waved > 0 {
                continue;
            }
            let _ = tokio::time::timeout(tick, self.inner.work.notified()).await;
        }
    }
}
