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

/// Conservative defaults for the supply SRV that can harm a home at scale (R-FLT-1): each
/// party's SRV 7.2 (disable supply) at most `per_party` per window, whatever it sets for
/// itself (its own threshold is checked as well, so it can only be stricter), and all parties
/// together at most `hub_wide` unless the hub operator sets a hub-wide threshold for it.
/// (SRV, window seconds, per party, hub-wide.)
pub const DEFAULT_LIMITS: &[(&str, i64, usize, usize)] = &[("7.2", 3600, 100, 1000)];

/// Who a threshold counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Scope {
    Party(PartyId),
    /// The hub's default ceiling for one party.
    Ceiling(PartyId),
    Hub,
}

/// A request beyond a threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Quarantined {
    pub(crate) reason: String,
    /// The first beyond this threshold in its window: the party and the hub operator are
    /// alerted once per window, not once per request.
    pub(crate) alert: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Detector {
    limits: HashMap<(Scope, String), (SignedDuration, usize)>,
    windows: HashMap<(Scope, String), VecDeque<Timestamp>>,
    /// When each (threshold, party) was last alerted.
    alerted: HashMap<((Scope, String), PartyId), Timestamp>,
}

fn default_of(srv: &str) -> Option<(SignedDuration, usize, usize)> {
    DEFAULT_LIMITS.iter().find(|d| d.0 == srv).map(|d| (SignedDuration::from_secs(d.1), d.2, d.3))
}

impl Detector {
    pub(crate) fn load(records: &[ThresholdRecord]) -> Detector {
        let mut d = Detector::default();
        for (srv, ..) in DEFAULT_LIMITS {
            d.hub_default(srv);
        }
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

    /// Remove a threshold; a hub-wide one with a default falls back to it.
    pub(crate) fn remove(&mut self, party: Option<&PartyId>, srv: &str) {
        let key = Self::key(party, srv);
        self.limits.remove(&key);
        self.windows.remove(&key);
        if party.is_none() {
            self.hub_default(srv);
        }
    }

    /// The hub-wide default for `srv`, if it has one, in force.
    fn hub_default(&mut self, srv: &str) {
        if let Some((window, _, hub_wide)) = default_of(srv) {
            self.limits.insert(Self::key(None, srv), (window, hub_wide));
        }
    }

    fn limit(&self, key: &(Scope, String)) -> Option<(SignedDuration, usize)> {
        match &key.0 {
            Scope::Ceiling(_) => default_of(&key.1).map(|(w, per_party, _)| (w, per_party)),
            _ => self.limits.get(key).copied(),
        }
    }

    /// Count a request unless it would pass a limit; then say which.
    pub(crate) fn admit(&mut self, party: &PartyId, srv: &str, now: Timestamp) -> Result<(), Quarantined> {
        let keys =
            [Self::key(Some(party), srv), (Scope::Ceiling(party.clone()), srv.to_string()), Self::key(None, srv)];
        for key in &keys {
            let Some((window, max)) = self.limit(key) else { continue };
            let q = self.windows.entry(key.clone()).or_default();
            while q.front().is_some_and(|t| *t <= now - window) {
                q.pop_front();
            }
            if q.len() >= max {
                let who = match &key.0 {
                    Scope::Party(p) => format!("party {p}'s own threshold"),
                    Scope::Ceiling(p) => format!("the hub's default threshold for each party ({p})"),
                    Scope::Hub => "the hub-wide threshold".to_string(),
                };
                // Each party beyond a threshold is alerted, once per window (a hub-wide
                // threshold holds every party's requests, not only the first one's).
                let alerted_key = (key.clone(), party.clone());
                let alert = match self.alerted.get(&alerted_key) {
                    Some(last) if *last > now - window => false,
                    _ => {
                        self.alerted.insert(alerted_key, now);
                        true
                    }
                };
                return Err(Quarantined {
                    reason: format!("quarantined: {who} for SRV {srv} is {max} requests per {} s", window.as_secs()),
                    alert,
                });
            }
        }
        for key in keys {
            if self.limit(&key).is_some() {
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
