//! Commands the hub must get to a device on a party's behalf, whatever the network does (a
//! change of tenancy's SRV 3.2). Each try is an ordinary request, audited like any other; the
//! delivery follows it. A try the hub could not deliver (device unreachable, refused at
//! execution) is tried again with backoff; a device's refusal is final, as trying again
//! would not change its answer. The party is told when a delivery settles other than done.

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use store::{DeliveryRecord, DeliveryState, DeliveryUpdate, RequestStatus, ResponseOutcome};

use crate::{Hub, HubError};

/// Deliveries looked at by one scheduler pass.
pub const DELIVERY_BATCH_MAX: usize = 256;
/// Tries before a delivery is given up (five and a half days with the backoff below).
pub const DELIVERY_ATTEMPTS_MAX: u32 = 16;
/// First wait before trying again; doubled each time up to [`RETRY_MAX`].
pub const RETRY_FIRST: SignedDuration = SignedDuration::from_mins(1);
pub const RETRY_MAX: SignedDuration = SignedDuration::from_hours(24);
/// How soon the hub looks again at a try that has not run yet.
const LOOK_AGAIN: SignedDuration = SignedDuration::from_mins(1);

/// The wait after `attempts` failed tries: 1 minute, doubling, at most a day.
pub fn retry_wait(attempts: u32) -> SignedDuration {
    (RETRY_FIRST * 2_i32.pow(attempts.saturating_sub(1).min(20))).min(RETRY_MAX)
}

impl Hub {
    /// Follow every delivery whose look is due. Returns how many moved.
    pub async fn run_deliveries_due(&self) -> Result<usize, HubError> {
        let now = self.now();
        let due = self.store().due_deliveries(now, DELIVERY_BATCH_MAX).await?;
        let results = futures::future::join_all(due.into_iter().map(|d| async move {
            let seq = d.seq;
            (seq, self.follow_delivery(d, now).await)
        }))
        .await;
        let mut moved = 0;
        for (seq, r) in results {
            match r {
                Ok(true) => moved += 1,
                Ok(false) => {}
                Err(HubError::Conflict(m)) => {
                    tracing::debug!(message = "Delivery moved meanwhile.", delivery = seq, detail = %m)
                }
                Err(e) => tracing::error!(message = "Delivery step failed; retrying.", delivery = seq, error = %e),
            }
        }
        Ok(moved)
    }

    /// One look at a delivery: settled if its try was answered, tried again if not
    /// delivered. Returns whether it settled or was tried again.
    async fn follow_delivery(&self, d: DeliveryRecord, now: Timestamp) -> Result<bool, HubError> {
        let mut u = DeliveryUpdate {
            seq: d.seq,
            version: d.version,
            request: None,
            attempts: d.attempts,
            state: DeliveryState::Pending,
            detail: d.detail.clone(),
            due_at: None,
            notices: Vec::new(),
            at: now,
        };
        let tried = self.store().request(&d.request_id).await?;
        let failure = match tried {
            Some((_, Some(resp))) if resp.outcome == ResponseOutcome::Done => {
                u.state = DeliveryState::Delivered;
                u.detail = None;
                None
            }
            Some((_, Some(resp))) if resp.outcome == ResponseOutcome::DeviceRefused => {
                u.state = DeliveryState::Refused;
                u.detail = Some(format!("the device refused it: {}", resp.body));
                None
            }
            Some((_, Some(resp))) => Some(resp.body),
            // Its party cancelled it (or deleted it from quarantine): settled, not retried.
            Some((r, None)) if matches!(r.status, RequestStatus::Cancelled | RequestStatus::Deleted) => {
                u.state = DeliveryState::Failed;
                u.detail = Some(format!("request {} was {} by its party; not tried again", r.id, r.status.as_str()));
                None
            }
            // Not run yet (held, queued, quarantined): look again soon.
            Some((r, None)) => {
                u.state = DeliveryState::Pending;
                u.due_at = Some(r.execute_at.unwrap_or(now).max(now) + LOOK_AGAIN);
                self.store().update_delivery(u).await?;
                return Ok(false);
            }
            None => Some(format!("request {} is gone", d.request_id)),
        };
        if let Some(why) = failure {
            if d.attempts >= DELIVERY_ATTEMPTS_MAX {
                u.state = DeliveryState::Failed;
                u.detail = Some(format!("not delivered in {} tries; last: {why}", d.attempts));
            } else {
                let retry_at = now + retry_wait(d.attempts);
                match self.next_try(&d, retry_at).await {
                    Ok(r) => {
                        tracing::warn!(message = "Command not delivered; retrying.", delivery = d.seq, srv = %d.srv, device = %d.target, attempt = d.attempts + 1, at = %retry_at, reason = %why);
                        u.attempts = d.attempts + 1;
                        u.detail = Some(format!("try {} not delivered: {why}", d.attempts));
                        u.due_at = Some(retry_at);
                        u.request = Some(r);
                    }
                    // No longer allowed or no longer possible: the party is told.
                    Err(e) => {
                        u.state = DeliveryState::Failed;
                        u.detail = Some(format!("cannot try again: {e} (last try: {why})"));
                    }
                }
            }
        }
        if matches!(u.state, DeliveryState::Refused | DeliveryState::Failed) {
            let detail = u.detail.clone().unwrap_or_default();
            tracing::error!(message = "Command not delivered; given up.", delivery = d.seq, srv = %d.srv, device = %d.target, reason = %detail);
            let data = json!({"srv": d.srv, "device": d.target.to_string(), "purpose": d.purpose,
                              "subject": d.subject, "state": u.state.as_str(), "attempts": u.attempts});
            let text = format!("SRV {} to {} for {} {}: {detail}", d.srv, d.target, d.purpose, d.subject);
            u.notices.push(crate::notice(&d.party, "delivery-failed", d.mpxn, now, now, text, &data));
        }
        let given_up = matches!(u.state, DeliveryState::Refused | DeliveryState::Failed).then(|| u.detail.clone());
        self.store().update_delivery(u).await?;
        if let Some(detail) = given_up {
            self.raise(
                domain::alerts::HubAlert::DeliveryFailed,
                Some(&d.party),
                Some(d.mpxn),
                Some(d.target),
                format!("SRV {} for {} {}: {}", d.srv, d.purpose, d.subject, detail.unwrap_or_default()),
                json!({"srv": d.srv, "purpose": d.purpose, "subject": d.subject, "request_id": d.request_id}),
            )
            .await;
        }
        self.inner.work.notify_one();
        Ok(true)
    }

    /// The next try of a delivery: the same command, planned and authorised again as at
    /// `at`, held by the hub until then.
    async fn next_try(&self, d: &DeliveryRecord, at: Timestamp) -> Result<store::RequestRecord, HubError> {
        let party =
            self.store().party(&d.party).await?.ok_or_else(|| HubError::NotFound(format!("party {}", d.party)))?;
        let device =
            self.store().device(d.target).await?.ok_or_else(|| HubError::NotFound(format!("device {}", d.target)))?;
        let body: Value = serde_json::from_str(&d.body).unwrap_or(Value::Null);
        self.hub_request(&party, &d.srv, device, Some(d.mpxn), body, at, false).await
    }
}
