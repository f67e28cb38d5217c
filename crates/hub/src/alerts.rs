//! Alert dispatching (R-FLT-2). A transport hands the hub each device's alerts in the
//! device's order, again until the hub has stored them. The dispatch table (data, edited by
//! the hub operator) names each alert code's recipients; the hub resolves them at the
//! alert's instant (the registered supplier, the network operator, the other users holding
//! consent, the hub operator) and stores one row per recipient, once: an alert delivered
//! again is at or below its device's high-water mark and skipped. The hub's own alerts (quarantine, delivery failures) take the same path, with
//! the party concerned as a recipient too.
//!
//! Delivery is at least once and in order per recipient (so per device): a recipient pulls
//! with a cursor, streams (server-sent events) or has them pushed to its webhook, and
//! acknowledges up to a sequence number. A webhook push is signed with the party's secret
//! (HMAC-SHA256), retried with backoff, and after [`WEBHOOK_ATTEMPTS_MAX`] failed tries its
//! batch is dead-lettered (kept, listed, and still readable by cursor) so later alerts flow.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use domain::alerts::HubAlert;
use domain::{Eui64, Mpxn, PartyId, Role};
use jiff::Timestamp;
use serde_json::{Value, json};
use store::{AlertRecord, DeadLetter, GrantKind, PushResult, Webhook};

use crate::transport::{AlertSink, DeviceAlert};
use crate::{Caller, Hub, HubError, Inner};

/// Alerts returned by one pull, at most.
pub const ALERTS_PAGE_MAX: usize = 1000;
/// Alerts in one webhook push, at most.
pub const WEBHOOK_BATCH_MAX: usize = 100;
/// Failed tries of one push before its batch is dead-lettered (about two hours with the
/// backoff of [`crate::delivery::retry_wait`]).
pub const WEBHOOK_ATTEMPTS_MAX: u32 = 8;
/// How long one push may take.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Webhooks pushed side by side in one pass.
pub const WEBHOOKS_PER_PASS: usize = 64;
/// The header carrying a push's signature: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`.
pub const SIGNATURE_HEADER: &str = "x-meterhub-signature";
/// Who the dispatch table can name.
pub const RECIPIENTS: [&str; 6] =
    ["registered-supplier", "network-operator", "consent-holders", "hub-operator", "party-concerned", "none"];

/// The dispatch table in memory: code text (`0x8F35`, `hub.quarantine`, `*`) → recipients.
#[derive(Debug, Default, Clone)]
pub(crate) struct Routes(HashMap<String, Vec<String>>);

impl Routes {
    pub(crate) fn from_rows(rows: Vec<(String, String)>) -> Routes {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (code, recipient) in rows {
            map.entry(code).or_default().push(recipient);
        }
        Routes(map)
    }

    fn for_code(&self, code: u16) -> &[String] {
        self.0.get(&domain::alerts::code_text(code)).or_else(|| self.0.get("*")).map(Vec::as_slice).unwrap_or_default()
    }
}

/// The hub as an alert sink. Holds the hub weakly: the transport it is given to is owned
/// by the hub, and a strong handle would keep both alive for ever.
pub(crate) struct Sink(pub(crate) Weak<Inner>);

#[async_trait]
impl AlertSink for Sink {
    async fn deliver(&self, alerts: Vec<DeviceAlert>) -> Result<(), String> {
        let inner = self.0.upgrade().ok_or("the hub has stopped")?;
        Hub { inner }.receive_alerts(alerts).await.map(|_| ()).map_err(|e| e.to_string())
    }
}

/// An alert as recipients see it, in pulls, streams and webhook pushes.
pub fn alert_json(a: &AlertRecord) -> Value {
    json!({
        "seq": a.seq,
        "at": a.at.to_string(),
        "source": if HubAlert::of_code(a.code).is_some() { "hub" } else { "device" },
        "device": a.device.map(|d| d.to_string()),
        "device_seq": a.device_seq,
        "mpxn": a.mpxn.map(|m| m.to_string()),
        "code": domain::alerts::code_text(a.code),
        "name": domain::alerts::any_name(a.code),
        "recipient_as": a.recipient_as,
        "detail": a.detail,
        "data": a.data.as_deref().and_then(|d| serde_json::from_str::<Value>(d).ok()),
        "received_at": a.received_at.to_string(),
    })
}

/// What one alert is about, for resolving its recipients.
struct About<'a> {
    code: u16,
    mpxn: Option<Mpxn>,
    device: Option<&'a store::DeviceRecord>,
    concerned: Option<&'a PartyId>,
    at: Timestamp,
    /// The registration in force at `at`, when already read (a batch reads them together).
    registration: Option<Option<domain::registry::RegistrationVersion>>,
}

impl Hub {
    pub(crate) fn alert_sink(&self) -> Arc<dyn AlertSink> {
        Arc::new(Sink(Arc::downgrade(&self.inner)))
    }

    fn routes(&self) -> Arc<Routes> {
        self.inner.routes.read().expect("routes").clone()
    }

    async fn hub_operators(&self) -> Result<Vec<PartyId>, HubError> {
        Ok(self
            .store()
            .parties()
            .await?
            .into_iter()
            .filter(|p| p.roles.contains(Role::HubOperator))
            .map(|p| p.id)
            .collect())
    }

    /// The recipients of one alert, each once, with why.
    async fn recipients(
        &self,
        routes: &Routes,
        a: &About<'_>,
        operators: &[PartyId],
    ) -> Result<Vec<(PartyId, String)>, HubError> {
        let kinds = routes.for_code(a.code);
        let mut out: Vec<(PartyId, String)> = Vec::new();
        fn add(out: &mut Vec<(PartyId, String)>, p: PartyId, why: &str) {
            if !out.iter().any(|(q, _)| *q == p) {
                out.push((p, why.to_string()));
            }
        }
        let reg = match (a.mpxn, &a.registration) {
            (_, Some(known)) => known.clone(),
            (Some(m), None) if kinds.iter().any(|k| k == "registered-supplier" || k == "network-operator") => {
                self.store().registration_at(m, a.at, None).await?
            }
            _ => None,
        };
        for kind in kinds {
            match kind.as_str() {
                "registered-supplier" => match (&reg, a.device) {
                    (Some(r), _) => add(&mut out, r.data.supplier.clone(), kind),
                    (None, Some(d)) => add(&mut out, self.trusted_supplier_of(d).await?, kind),
                    (None, None) => {}
                },
                "network-operator" => {
                    if let Some(r) = &reg {
                        add(&mut out, r.data.network_operator.clone(), kind);
                    }
                }
                "consent-holders" => {
                    if let Some(m) = a.mpxn {
                        for g in self.store().grants(GrantKind::Consent, m).await? {
                            if g.holds_at(a.at) {
                                add(&mut out, g.party, "consent-holder");
                            }
                        }
                    }
                }
                "hub-operator" => operators.iter().for_each(|p| add(&mut out, p.clone(), kind)),
                "party-concerned" => {
                    if let Some(p) = a.concerned {
                        add(&mut out, p.clone(), kind);
                    }
                }
                _ => {}
            }
        }
        // Filtered on purpose ('none') goes nowhere; otherwise an alert nobody named can take
        // (no network operator registered, say) goes to the hub operator, never nowhere.
        if out.is_empty() && !kinds.iter().any(|k| k == "none") {
            for p in operators {
                add(&mut out, p.clone(), "hub-operator (no other recipient)");
            }
        }
        Ok(out)
    }

    /// Store device alerts for their recipients. Returns how many recipient rows were new.
    pub async fn receive_alerts(&self, alerts: Vec<DeviceAlert>) -> Result<u64, HubError> {
        let now = self.now();
        let operators = self.hub_operators().await?;
        let routes = self.routes();
        let mut records = Vec::with_capacity(alerts.len());
        let mut devices: HashMap<Eui64, store::DeviceRecord> = HashMap::new();
        // The devices, in one read.
        let mut euis: Vec<Eui64> = alerts.iter().map(|a| a.device).collect();
        euis.sort_unstable();
        euis.dedup();
        for (eui, d) in euis.iter().zip(self.store().devices(euis.clone()).await?) {
            // Refused whole, so the transport keeps it and delivers it again: never lost.
            let d =
                d.ok_or_else(|| HubError::NotFound(format!("alert from device {eui}, which the hub does not know")))?;
            devices.insert(*eui, d);
        }
        // The registrations in force at each alert's instant, in one read.
        let keys: Vec<(Mpxn, Timestamp)> =
            alerts.iter().filter_map(|a| devices[&a.device].mpxn.map(|m| (m, a.at))).collect();
        let mut regs = self.store().registrations_at(keys).await?.into_iter();
        for a in alerts {
            let device = &devices[&a.device];
            let registration = device.mpxn.map(|_| regs.next().flatten());
            let about = About {
                code: a.code,
                mpxn: device.mpxn,
                device: Some(device),
                concerned: None,
                at: a.at,
                registration,
            };
            let data = a.data.map(|d| d.to_string());
            for (party, why) in self.recipients(&routes, &about, &operators).await? {
                records.push(AlertRecord {
                    seq: 0,
                    party,
                    recipient_as: why,
                    device: Some(a.device),
                    device_seq: Some(a.seq),
                    mpxn: device.mpxn,
                    at: a.at,
                    code: a.code,
                    detail: a.detail.clone(),
                    data: data.clone(),
                    received_at: now,
                });
            }
        }
        let new = self.store().record_alerts(records).await?;
        metrics::counter!("meterhub_alerts_stored_total").increment(new);
        self.inner.alerted.notify_waiters();
        Ok(new)
    }

    /// Raise one of the hub's own alerts. Logged, never failing its caller: the cause is
    /// already recorded where it happened.
    pub(crate) async fn raise(
        &self,
        alert: HubAlert,
        concerned: Option<&PartyId>,
        mpxn: Option<Mpxn>,
        device: Option<Eui64>,
        detail: String,
        data: Value,
    ) {
        let result = async {
            let now = self.now();
            let operators = self.hub_operators().await?;
            let routes = self.routes();
            let record = match device {
                Some(d) => self.store().device(d).await?,
                None => None,
            };
            let about =
                About { code: alert.code(), mpxn, device: record.as_ref(), concerned, at: now, registration: None };
            let data = data.to_string();
            let records: Vec<AlertRecord> = self
                .recipients(&routes, &about, &operators)
                .await?
                .into_iter()
                .map(|(party, why)| AlertRecord {
                    seq: 0,
                    party,
                    recipient_as: why,
                    device,
                    device_seq: None,
                    mpxn,
                    at: now,
                    code: alert.code(),
                    detail: detail.clone(),
                    data: Some(data.clone()),
                    received_at: now,
                })
                .collect();
            self.store().record_alerts(records).await?;
            Ok::<(), HubError>(())
        }
        .await;
        match result {
            Ok(()) => {
                metrics::counter!("meterhub_hub_alerts_total", "code" => alert.as_str()).increment(1);
                self.inner.alerted.notify_waiters();
            }
            Err(e) => tracing::error!(message = "Hub alert not recorded.", alert = alert.as_str(), error = %e),
        }
    }

    /// The caller's alerts after a sequence number (default: after what it acknowledged), in
    /// order.
    pub async fn alerts(
        &self,
        caller: &Caller,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AlertRecord>, HubError> {
        self.authorize(caller, "alert.read-own", None)?;
        let after = match after {
            Some(a) => a,
            None => self.store().alert_ack(&caller.party.id).await?,
        };
        Ok(self.store().alerts_after(&caller.party.id, after, limit.clamp(1, ALERTS_PAGE_MAX)).await?)
    }

    /// As [`Hub::alerts`] from `after`, waiting up to `wait` for one to arrive (streams).
    pub async fn next_alerts(&self, caller: &Caller, after: i64, wait: Duration) -> Result<Vec<AlertRecord>, HubError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let arrived = self.inner.alerted.notified();
            let list = self.alerts(caller, Some(after), ALERTS_PAGE_MAX).await?;
            if !list.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(list);
            }
            let _ = tokio::time::timeout_at(deadline, arrived).await;
        }
    }

    /// How far the caller has acknowledged its alerts (0: nothing yet).
    pub async fn alerts_acked(&self, caller: &Caller) -> Result<i64, HubError> {
        self.authorize(caller, "alert.read-own", None)?;
        Ok(self.store().alert_ack(&caller.party.id).await?)
    }

    /// Acknowledge the caller's alerts up to `up_to`, one of its own: they are not offered
    /// again by default, nor pushed. Returns the acknowledged position.
    pub async fn ack_alerts(&self, caller: &Caller, up_to: i64) -> Result<i64, HubError> {
        self.authorize(caller, "alert.read-own", None)?;
        if up_to < 1 {
            return Err(HubError::invalid("up_to", "an alert sequence number (1 up)"));
        }
        let own = self.store().alerts_after(&caller.party.id, up_to - 1, 1).await?;
        if own.first().is_none_or(|a| a.seq != up_to) {
            return Err(HubError::invalid("up_to", format!("you have no alert {up_to}: acknowledge one you received")));
        }
        Ok(self.store().ack_alerts(&caller.party.id, up_to, self.now()).await?)
    }

    /// The dispatch table (hub operator).
    pub async fn alert_routes(&self, caller: &Caller) -> Result<Vec<(String, String)>, HubError> {
        self.authorize(caller, "alert.dispatch-manage", None)?;
        Ok(self.store().alert_routes().await?)
    }

    /// Set one alert code's recipients (hub operator). An empty list drops the code's own
    /// row, so it follows `*`; `["none"]` filters it.
    pub async fn set_alert_routes(&self, caller: &Caller, code: &str, recipients: &[String]) -> Result<(), HubError> {
        self.authorize(caller, "alert.dispatch-manage", None)?;
        let code = if code == "*" {
            "*".to_string()
        } else {
            domain::alerts::code_text(domain::alerts::parse_code(code).map_err(|e| HubError::invalid("code", e))?)
        };
        for (i, r) in recipients.iter().enumerate() {
            if !RECIPIENTS.contains(&r.as_str()) {
                return Err(HubError::invalid(format!("recipients[{i}]"), format!("one of {}", RECIPIENTS.join(", "))));
            }
        }
        if recipients.iter().any(|r| r == "none") && recipients.len() > 1 {
            return Err(HubError::invalid("recipients", "\"none\" filters the code: give it alone"));
        }
        if code == "*" && recipients.is_empty() {
            return Err(HubError::invalid(
                "recipients",
                "the default row (*) needs at least one recipient or \"none\"",
            ));
        }
        let mut list = recipients.to_vec();
        list.sort();
        list.dedup();
        self.store().set_alert_routes(code.clone(), list.clone()).await?;
        let rows = self.store().alert_routes().await?;
        *self.inner.routes.write().expect("routes") = Arc::new(Routes::from_rows(rows));
        tracing::info!(message = "Alert dispatch changed.", code = %code, recipients = ?list, by = %caller.party.id);
        Ok(())
    }

    /// Set the caller's webhook: its alerts are pushed there from its acknowledged position.
    /// Returns the webhook with its new secret (shown only here).
    pub async fn set_webhook(&self, caller: &Caller, url: &str) -> Result<Webhook, HubError> {
        self.authorize(caller, "alert.read-own", None)?;
        let parsed = reqwest::Url::parse(url).map_err(|e| HubError::invalid("url", e.to_string()))?;
        match parsed.scheme() {
            "http" if parsed.host_str().is_some() => {}
            "https" => {
                return Err(HubError::invalid(
                    "url",
                    "this build pushes over plain http only (no TLS client is built in): point it at a \
                     TLS-terminating proxy on your side, e.g. http://127.0.0.1:9000/alerts",
                ));
            }
            _ => return Err(HubError::invalid("url", "an http URL with a host")),
        }
        let secret = domain::crypto::random_bytes::<32>(&self.inner.rng)
            .map_err(|e| HubError::Unavailable(format!("cannot make a webhook secret: {e}")))?;
        let w = Webhook {
            party: caller.party.id.clone(),
            url: parsed.to_string(),
            secret: hex(&secret),
            set_at: self.now(),
            attempts: 0,
            next_at: None,
            last_error: None,
        };
        self.store().set_webhook(w.clone()).await?;
        self.inner.work.notify_one();
        Ok(w)
    }

    /// The caller's webhook and the state of its pushes (the secret blanked).
    pub async fn webhook(&self, caller: &Caller) -> Result<Option<Webhook>, HubError> {
        self.authorize(caller, "alert.read-own", None)?;
        Ok(self.store().webhook(&caller.party.id).await?.map(|w| Webhook { secret: String::new(), ..w }))
    }

    pub async fn delete_webhook(&self, caller: &Caller) -> Result<bool, HubError> {
        self.authorize(caller, "alert.read-own", None)?;
        Ok(self.store().delete_webhook(&caller.party.id).await?)
    }

    /// The caller's dead-lettered alerts (their webhook could not take them).
    pub async fn dead_letters(&self, caller: &Caller, after: i64, limit: usize) -> Result<Vec<DeadLetter>, HubError> {
        self.authorize(caller, "alert.read-own", None)?;
        Ok(self.store().dead_letters(&caller.party.id, after, limit.clamp(1, ALERTS_PAGE_MAX)).await?)
    }

    /// Push every due webhook's next batch, side by side. Returns how many pushes were made.
    pub async fn push_webhooks_due(&self) -> Result<usize, HubError> {
        let now = self.now();
        let due = self.store().due_webhooks(now, WEBHOOKS_PER_PASS).await?;
        let n = due.len();
        futures::future::join_all(due.into_iter().map(|w| self.push(w, now))).await;
        Ok(n)
    }

    /// Run the webhook pushes until the hub is dropped: every `tick`, or sooner when alerts
    /// arrive.
    pub async fn run_webhooks(self, tick: Duration) {
        loop {
            let arrived = self.inner.alerted.notified();
            match self.push_webhooks_due().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::error!(message = "Webhook pushes failed; retrying.", error = %e),
            }
            let _ = tokio::time::timeout(tick, arrived).await;
        }
    }

    async fn push(&self, w: Webhook, now: Timestamp) {
        let result = async {
            let acked = self.store().alert_ack(&w.party).await?;
            let batch = self.store().alerts_after(&w.party, acked, WEBHOOK_BATCH_MAX).await?;
            let (Some(first), Some(last)) = (batch.first(), batch.last()) else { return Ok(()) };
            let (first, last) = (first.seq, last.seq);
            let body = json!({"party": w.party.as_str(), "alerts": batch.iter().map(alert_json).collect::<Vec<_>>()})
                .to_string();
            let t = now.as_second();
            let mac = domain::crypto::hmac_sha256(w.secret.as_bytes(), format!("{t}.{body}").as_bytes());
            let sent = self
                .inner
                .http
                .post(&w.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, format!("t={t},v1={}", hex(&mac)))
                .header("x-meterhub-alerts", format!("{first}-{last}"))
                .body(body)
                .send()
                .await;
            let failure = match sent {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!("the webhook answered {}", r.status())),
                Err(e) => Some(format!("the webhook could not be reached: {e}")),
            };
            let result = match failure {
                None => {
                    metrics::counter!("meterhub_webhook_pushes_total", "outcome" => "delivered").increment(1);
                    PushResult::Delivered { up_to: last }
                }
                Some(error) if w.attempts + 1 >= WEBHOOK_ATTEMPTS_MAX => {
                    metrics::counter!("meterhub_webhook_pushes_total", "outcome" => "dead-lettered").increment(1);
                    tracing::error!(message = "Webhook batch dead-lettered.", party = %w.party, first, last, error = %error);
                    PushResult::DeadLettered {
                        seqs: batch.iter().map(|a| a.seq).collect(),
                        attempts: w.attempts + 1,
                        reason: error,
                    }
                }
                Some(error) => {
                    metrics::counter!("meterhub_webhook_pushes_total", "outcome" => "failed").increment(1);
                    let next_at = now + crate::delivery::retry_wait(w.attempts + 1);
                    tracing::warn!(message = "Webhook push failed; retrying.", party = %w.party, attempt = w.attempts + 1, next = %next_at, error = %error);
                    PushResult::Failed { attempts: w.attempts + 1, next_at, error }
                }
            };
            let dead = matches!(result, PushResult::DeadLettered { .. });
            self.store().push_result(&w.party, result, now).await?;
            if dead {
                self.raise(
                    HubAlert::DeliveryFailed,
                    None,
                    None,
                    None,
                    format!("alerts {first} to {last} of {} dead-lettered: its webhook failed {WEBHOOK_ATTEMPTS_MAX} tries", w.party),
                    json!({"party": w.party.as_str(), "first": first, "last": last}),
                )
                .await;
            }
            Ok::<(), HubError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::error!(message = "Webhook push not recorded.", party = %w.party, error = %e);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
