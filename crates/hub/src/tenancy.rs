//! Change of tenancy (R-COT-1, R-COT-4). The registered supplier notifies it with its date:
//! every other user's consent for the metering point ends at that date and each is told; the
//! meter gets SRV 3.2 with the tenancy date, held by the hub until then, so that from then
//! nothing before it is read by or for the new tenant (in-home display, other users). If the
//! outgoing tenant agreed to share its history, the notification says so and how the consent
//! was given; both are kept with the tenancy for audit, and the meter is told not to restrict.
//! The product for the new tenant is an ordinary product change (R-COT-3).

use domain::PartyId;
use serde_json::json;
use store::{DeliveryRecord, DeliveryState, GrantEnd, GrantKind, NewDelivery, NewTenancy, TenancyRecord};

use crate::registry::Relationships;
use crate::{Caller, Hub, HubError};

/// A change of tenancy as notified: text, checked here and named on error.
#[derive(Debug, Clone, Default)]
pub struct TenancyInput {
    /// RFC 3339 instant or a date (the start of that London day); not in the past.
    pub tenancy_from: String,
    /// The outgoing tenant agreed to share its consumption history with the new tenant.
    pub share_history: bool,
    /// How that consent was given (required when sharing), kept for audit.
    pub consent_note: Option<String>,
}

/// A change of tenancy as recorded, with what it did.
#[derive(Debug, Clone)]
pub struct Notified {
    pub tenancy: TenancyRecord,
    /// SRV 3.2 to the meter, followed until delivered.
    pub deliveries: Vec<DeliveryRecord>,
    /// The other users whose consent ends at the tenancy date; each got a notice.
    pub consents_ended_for: Vec<PartyId>,
    /// The SRV 3.2 request the hub holds until the tenancy date, or why there is none.
    pub restriction: Option<String>,
}

impl Hub {
    /// The registered supplier notifies a change of tenancy at one of its metering points.
    pub async fn notify_change_of_tenancy(
        &self,
        caller: &Caller,
        mpxn: &str,
        input: &TenancyInput,
    ) -> Result<Notified, HubError> {
        self.check_role(caller, "tenancy.notify")?;
        let mpxn = self.parse_mpxn("mpxn", mpxn)?;
        let now = self.now();
        let from =
            domain::time::parse_instant(&input.tenancy_from).map_err(|e| HubError::invalid("tenancy_from", e))?;
        crate::pipeline::check_ahead("tenancy_from", from, now)?;
        let note = input.consent_note.as_deref().map(str::trim).filter(|n| !n.is_empty());
        match (input.share_history, note) {
            (true, None) => {
                return Err(HubError::invalid(
                    "consent_note",
                    "sharing history needs a note of how the outgoing tenant consented",
                ));
            }
            (false, Some(_)) => {
                return Err(HubError::invalid(
                    "consent_note",
                    "only given when the outgoing tenant consents to share history",
                ));
            }
            (_, Some(n)) if n.chars().count() > 500 || n.chars().any(char::is_control) => {
                return Err(HubError::invalid("consent_note", "at most 500 printable characters"));
            }
            _ => {}
        }
        // The supplier at the tenancy date notifies it.
        let rel: Relationships = self.relationships_at(&mpxn, from).await?;
        self.authorize(caller, "tenancy.notify", Some(&rel.facts()))?;
        // Every consent still holding at or after the date ends there.
        let consents = self.store().grants(GrantKind::Consent, mpxn).await?;
        let ending: Vec<_> = consents.into_iter().filter(|g| g.runs_past(from)).collect();
        let reason = format!("change of tenancy at {from}, notified by {}", caller.party.id);
        let grant_ends = ending
            .iter()
            .map(|g| GrantEnd {
                kind: GrantKind::Consent,
                seq: g.seq,
                valid_to: from,
                by: caller.party.id.clone(),
                reason: reason.clone(),
            })
            .collect();
        let told: Vec<PartyId> = {
            let mut t: Vec<PartyId> = ending.iter().map(|g| g.party.clone()).collect();
            t.sort_unstable();
            t.dedup();
            t
        };
        let notices = told
            .iter()
            .map(|p| {
                let detail = format!("the tenancy at {mpxn} changes at {from}: your consent ends then");
                let data = json!({"mpxn": mpxn.to_string(), "tenancy_from": from.to_string()});
                crate::notice(p, "change-of-tenancy", mpxn, from, now, detail, &data)
            })
            .collect();
        // SRV 3.2 to the meter, held by the hub until the tenancy date and followed until the
        // meter has it.
        let mut deliveries = Vec::new();
        let restriction = match self.store().device_for_mpxn(mpxn).await? {
            Some(meter) => {
                let body = json!({"tenancy_from": from.to_string(), "share_history": input.share_history});
                let request = self.hub_request(&caller.party, "3.2", meter, Some(mpxn), body, from, false).await?;
                let delivery = DeliveryRecord {
                    seq: 0,
                    purpose: "tenancy".into(),
                    subject: 0,
                    party: caller.party.id.clone(),
                    srv: request.srv.clone(),
                    target: request.target,
                    mpxn,
                    body: request.body.clone(),
                    run_at: from,
                    request_id: request.id.clone(),
                    attempts: 1,
                    state: DeliveryState::Pending,
                    detail: None,
                    due_at: Some(from),
                    version: 1,
                    updated_at: now,
                };
                let id = request.id.clone();
                deliveries.push(NewDelivery { delivery, request });
                id
            }
            None => format!("{mpxn} has no smart meter linked: no 3.2 was sent"),
        };
        let tenancy = TenancyRecord {
            seq: 0,
            mpxn,
            tenancy_from: from,
            history_shared: input.share_history,
            consent_note: note.map(str::to_string),
            notified_by: caller.party.id.clone(),
            recorded_at: now,
        };
        let t = self.store().record_tenancy(NewTenancy { tenancy, grant_ends, notices, deliveries }).await?;
        self.inner.work.notify_one();
        tracing::info!(message = "Change of tenancy notified.", mpxn = %mpxn, from = %from, consents_ended = told.len(), history_shared = input.share_history);
        let deliveries = self.store().deliveries("tenancy", t.seq).await?;
        Ok(Notified { tenancy: t, deliveries, consents_ended_for: told, restriction: Some(restriction) })
    }

    /// A metering point's changes of tenancy (its registered supplier, or the hub operator),
    /// each with the delivery of its SRV 3.2 to the meter.
    pub async fn tenancies(
        &self,
        caller: &Caller,
        mpxn: &str,
    ) -> Result<Vec<(TenancyRecord, Vec<DeliveryRecord>)>, HubError> {
        self.check_role(caller, "tenancy.notify").or_else(|_| self.check_role(caller, "grants.manage-any"))?;
        let mpxn = self.parse_mpxn("mpxn", mpxn)?;
        if !self.may(caller, "grants.manage-any") {
            let rel = self.relationships_at(&mpxn, self.now()).await?;
            self.authorize(caller, "tenancy.notify", Some(&rel.facts()))?;
        }
        let mut out = Vec::new();
        for t in self.store().tenancies(mpxn).await? {
            let d = self.store().deliveries("tenancy", t.seq).await?;
            out.push((t, d));
        }
        Ok(out)
    }
}
