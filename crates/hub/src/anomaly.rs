//! Threshold anomaly detection (R-SR-5, after the SEC's "Threshold Anomaly Detection"): each
//! party sets, per SRV, how many requests it expects in a window; the hub sets limits on all
//! parties together. A request beyond any limit is quarantined: stored, not run, until its
//! party releases or deletes it.
//!
//! The counts are kept in this process: an exact sliding window per (limit, SRV), bounded by
//! the limit itself. A restart forgets the counts (never the thresholds or the quarantined
//! requests). Several hub nodes would partition parties between them, so each party's count
//! lives on one node; hub-wide limits would then be split between the nodes.

use std::collections::{HashMap, VecDeque};

use domain::PartyId;
use jiff::{SignedDuration, Timestamp};
use store::ThresholdRecord;

use crate::{Caller, Hub, HubError};

/// Longest window a threshold may have.
pub const WINDOW_DAYS_MAX: i64 = 31;
/// Largest count a threshold may allow (its window keeps up to this many instants).
pub const MAX_REQUESTS_MAX: i64 = 1_000_000;

/// Who a threshold counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Scope {
    Party(PartyId),
    Hub,
}

#[derive(Debug, Default)]
pub(crate) struct Detector {
    limits: HashMap<(Scope, String), (SignedDuration, usize)>,
    windows: HashMap<(Scope, String), VecDeque<Timestamp>>,
}

impl Detector {
    pub(crate) fn load(records: &[ThresholdRecord]) -> Detector {
        let mut d = Detector::default();
        for r in records {
            d.set(r);
        }
        d
    }

    fn key(party: Option<&PartyId>, srv: &str) -> (Scope, String) {
        (party.map_or(Scope::Hub, |p| Scope::Party(p.clone())), srv.to_string())
    }

    pub(crate) fn set(&mut self, r: &ThresholdRecord) {
        let key = Self::key(r.party.as_ref(), &r.srv);
        self.limits.insert(key.clone(), (SignedDuration::from_secs(r.window_secs), r.max_requests as usize));
        self.windows.remove(&key);
    }

    pub(crate) fn remove(&mut self, party: Option<&PartyId>, srv: &str) {
        let key = Self::key(party, srv);
        self.limits.remove(&key);
        self.windows.remove(&key);
    }

    /// Count a request unless it would pass a limit; then say which.
    pub(crate) fn admit(&mut self, party: &PartyId, srv: &str, now: Timestamp) -> Result<(), String> {
        let keys = [Self::key(Some(party), srv), Self::key(None, srv)];
        for key in &keys {
            let Some((window, max)) = self.limits.get(key) else { continue };
            let q = self.windows.entry(key.clone()).or_default();
            while q.front().is_some_and(|t| *t <= now - *window) {
                q.pop_front();
            }
            if q.len() >= *max {
                let who = match &key.0 {
                    Scope::Party(p) => format!("party {p}'s own threshold"),
                    Scope::Hub => "the hub-wide threshold".to_string(),
                };
                return Err(format!("quarantined: {who} for SRV {srv} is {max} requests per {} s", window.as_secs()));
            }
        }
        for key in keys {
            if self.limits.contains_key(&key) {
                self.windows.entry(key).or_default().push_back(now);
            }
        }
        Ok(())
    }
}

impl Hub {
    /// Every threshold the caller may see: its own and the hub-wide ones (all, for the
    /// operator).
    pub async fn thresholds(&self, caller: &Caller) -> Result<Vec<ThresholdRecord>, HubError> {
        self.authorize(caller, "anomaly.configure-own", None)?;
        let operator = caller.party.roles.contains(domain::Role::HubOperator);
        Ok(self
            .store()
            .thresholds()
            .await?
            .into_iter()
            .filter(|t| operator || t.party.is_none() || t.party.as_ref() == Some(&caller.party.id))
            .collect())
    }

    /// Set a threshold: the caller's own, or (hub operator) a hub-wide one.
    pub async fn set_threshold(
        &self,
        caller: &Caller,
        hub_wide: bool,
        srv: &str,
        window_secs: i64,
        max_requests: i64,
    ) -> Result<ThresholdRecord, HubError> {
        self.authorize(caller, if hub_wide { "anomaly.configure-hub" } else { "anomaly.configure-own" }, None)?;
        let service =
            domain::catalogue::service(srv).filter(|s| s.kind == domain::catalogue::ServiceKind::Srv).ok_or_else(
                || HubError::invalid("srv", format!("{srv:?} is not a service request variant of the catalogue")),
            )?;
        if !(1..=WINDOW_DAYS_MAX * 86_400).contains(&window_secs) {
            return Err(HubError::invalid("window_seconds", format!("1 s to {WINDOW_DAYS_MAX} days")));
        }
        if !(0..=MAX_REQUESTS_MAX).contains(&max_requests) {
            return Err(HubError::invalid("max_requests", format!("0 to {MAX_REQUESTS_MAX}")));
        }
        let record = ThresholdRecord {
            party: (!hub_wide).then(|| caller.party.id.clone()),
            srv: service.code.to_string(),
            window_secs,
            max_requests,
            set_at: self.now(),
        };
        self.store().set_threshold(record.clone()).await?;
        self.inner.anomaly.lock().expect("detector").set(&record);
        tracing::info!(message = "Anomaly threshold set.", by = %caller.party.id, hub_wide, srv, window_secs, max_requests);
        Ok(record)
    }

    /// Remove a threshold the caller set (or, for the operator, a hub-wide one).
    pub async fn remove_threshold(&self, caller: &Caller, hub_wide: bool, srv: &str) -> Result<bool, HubError> {
        self.authorize(caller, if hub_wide { "anomaly.configure-hub" } else { "anomaly.configure-own" }, None)?;
        let party = (!hub_wide).then(|| caller.party.id.clone());
        let removed = self.store().remove_threshold(party.clone(), srv).await?;
        self.inner.anomaly.lock().expect("detector").remove(party.as_ref(), srv);
        Ok(removed)
    }
}
