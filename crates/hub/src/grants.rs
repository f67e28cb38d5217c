//! Relationships the registry does not hold: an other user's consumer consent for a
//! metering point (ESCOs), and an agent's appointment by a supplier. Both are periods
//! `[from, to)`, recorded once and ended once, never deleted: the records are the audit.
//!
//! Rules decided here:
//! - An other user records the consent it holds itself (as DCC users attest to it); it
//!   cannot be back-dated. The other user, the registered supplier at the end instant
//!   (change of tenancy) or the hub operator may end it.
//! - While a consent holds, the other user may send what the catalogue grants other users;
//!   its data window starts at the consent's start.
//! - The registered supplier appoints an agent (a party holding the RSA or MAP role) from a
//!   time not in the past; the agent acts only while appointed *and* only while its
//!   appointer is still the registered supplier, so a change of supplier ends the outgoing
//!   supplier's agents' powers at the switch.

use domain::party::Role;
use domain::{Mpxn, Party, PartyId};
use jiff::Timestamp;
use store::{GrantKind, GrantRecord};

use crate::registry::Relationships;
use crate::{Caller, Hub, HubError};

fn invalid(field: &str, rule: impl Into<String>) -> HubError {
    HubError::invalid(field, rule)
}

fn when(field: &str, s: Option<&str>) -> Result<Option<Timestamp>, HubError> {
    s.map(|s| domain::time::parse_instant(s).map_err(|e| invalid(field, e))).transpose()
}

/// The period asked for: `from` defaults to now and may not be in the past; `to` after it.
fn period(now: Timestamp, from: Option<&str>, to: Option<&str>) -> Result<(Timestamp, Option<Timestamp>), HubError> {
    let from = when("from", from)?.unwrap_or(now);
    if from < now {
        return Err(invalid("from", format!("must not be in the past (no back-dating); it is {now} now")));
    }
    let to = when("to", to)?;
    if to.is_some_and(|t| t <= from) {
        return Err(invalid("to", "must be after from"));
    }
    Ok((from, to))
}

/// A consent or appointment as first recorded by `caller` at `now`.
fn new_grant(
    kind: GrantKind,
    mpxn: Mpxn,
    party: PartyId,
    appointer: Option<PartyId>,
    (valid_from, valid_to): (Timestamp, Option<Timestamp>),
    now: Timestamp,
    caller: &Caller,
) -> GrantRecord {
    GrantRecord {
        seq: 0,
        kind,
        mpxn,
        party,
        appointer,
        valid_from,
        valid_to,
        recorded_at: now,
        recorded_by: caller.party.id.clone(),
        ended_at: None,
        ended_by: None,
        end_reason: None,
    }
}

impl Hub {
    async fn metering_point_exists(&self, mpxn: Mpxn) -> Result<(), HubError> {
        self.store()
            .metering_point(mpxn)
            .await?
            .map(|_| ())
            .ok_or_else(|| HubError::NotFound(format!("no metering point {mpxn}")))
    }

    /// An other user records the consumer's consent it holds for a metering point.
    pub async fn record_consent(
        &self,
        caller: &Caller,
        mpxn: &str,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<GrantRecord, HubError> {
        self.authorize(caller, "consent.record-own", None)?;
        let mpxn = self.parse_mpxn("mpxn", mpxn)?;
        let now = self.now();
        let (valid_from, mut valid_to) = period(now, from, to)?;
        self.metering_point_exists(mpxn).await?;
        // A consent is the current tenant's: it ends where a notified change of tenancy
        // begins (R-COT-1).
        let next_tenancy =
            self.store().tenancies(mpxn).await?.into_iter().map(|t| t.tenancy_from).filter(|t| *t > valid_from).min();
        if let Some(t) = next_tenancy {
            valid_to = Some(valid_to.map_or(t, |v| v.min(t)));
        }
        let g = self
            .store()
            .insert_grant(new_grant(
                GrantKind::Consent,
                mpxn,
                caller.party.id.clone(),
                None,
                (valid_from, valid_to),
                now,
                caller,
            ))
            .await?;
        tracing::info!(message = "Consent recorded.", mpxn = %mpxn, party = %g.party, from = %g.valid_from);
        Ok(g)
    }

    /// The registered supplier appoints an agent for a metering point.
    pub async fn appoint_agent(
        &self,
        caller: &Caller,
        mpxn: &str,
        agent: &str,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<GrantRecord, HubError> {
        self.check_role(caller, "appointment.manage")?;
        let mpxn = self.parse_mpxn("mpxn", mpxn)?;
        let now = self.now();
        let (valid_from, valid_to) = period(now, from, to)?;
        let rel = self.relationships_at(&mpxn, valid_from).await?;
        self.authorize(caller, "appointment.manage", Some(&rel.facts()))?;
        let agent_id: PartyId = agent.parse().map_err(|e| invalid("agent", format!("{e}")))?;
        let agent = self.store().party(&agent_id).await?.ok_or_else(|| invalid("agent", "no such party"))?;
        if !agent.roles.contains(Role::RegisteredSupplierAgent) && !agent.roles.contains(Role::MeterAssetProvider) {
            return Err(invalid(
                "agent",
                format!("{agent_id} holds [{}]; an agent holds RSA or MAP", agent.roles.codes()),
            ));
        }
        let g = self
            .store()
            .insert_grant(new_grant(
                GrantKind::Appointment,
                mpxn,
                agent_id,
                Some(caller.party.id.clone()),
                (valid_from, valid_to),
                now,
                caller,
            ))
            .await?;
        tracing::info!(message = "Agent appointed.", mpxn = %mpxn, agent = %g.party, by = %caller.party.id);
        Ok(g)
    }

    /// End a consent or appointment at `at` (default now; not in the past).
    pub async fn end_grant(
        &self,
        caller: &Caller,
        kind: GrantKind,
        mpxn: &str,
        seq: i64,
        at: Option<&str>,
        reason: &str,
    ) -> Result<GrantRecord, HubError> {
        self.check_role(caller, "grants.read")?;
        let mpxn = self.parse_mpxn("mpxn", mpxn)?;
        let now = self.now();
        let at = when("at", at)?.unwrap_or(now);
        if at < now {
            return Err(invalid("at", format!("must not be in the past; it is {now} now")));
        }
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 200 || reason.chars().any(char::is_control) {
            return Err(invalid("reason", "1 to 200 printable characters"));
        }
        let found = self.grants_of(kind, mpxn).await?.into_iter().find(|g| g.seq == seq);
        let Some(g) = found else {
            return Err(HubError::NotFound(format!("no {} {seq} for {mpxn}", kind.as_str())));
        };
        let me = &caller.party.id;
        let allowed = match kind {
            // The other user itself, or the registered supplier at the end (change of tenancy).
            GrantKind::Consent => {
                *me == g.party || self.relationships_at(&mpxn, at).await?.registered_supplier.as_ref() == Some(me)
            }
            GrantKind::Appointment => g.appointer.as_ref() == Some(me),
        };
        let operator = self.may(caller, "grants.manage-any");
        if !allowed && !operator {
            // Others learn nothing of it.
            return Err(HubError::NotFound(format!("no {} {seq} for {mpxn}", kind.as_str())));
        }
        let ended = self.store().end_grant(kind, seq, at, now, me.clone(), reason.to_string()).await?;
        tracing::info!(message = "Relationship ended.", kind = kind.as_str(), mpxn = %mpxn, seq, by = %me);
        Ok(ended)
    }

    async fn grants_of(&self, kind: GrantKind, mpxn: Mpxn) -> Result<Vec<GrantRecord>, HubError> {
        Ok(self.store().grants(kind, mpxn).await?)
    }

    /// The consents or appointments of a metering point the caller may see: its own (as the
    /// other user or agent), those it made (as appointer), every one for the registered
    /// supplier now and the hub operator.
    pub async fn list_grants(
        &self,
        caller: &Caller,
        kind: GrantKind,
        mpxn: &str,
    ) -> Result<Vec<GrantRecord>, HubError> {
        self.check_role(caller, "grants.read")?;
        let mpxn = self.parse_mpxn("mpxn", mpxn)?;
        self.metering_point_exists(mpxn).await?;
        let all = self.grants_of(kind, mpxn).await?;
        let me = &caller.party.id;
        let operator = self.may(caller, "grants.manage-any");
        let supplier = self.relationships_at(&mpxn, self.now()).await?.registered_supplier.as_ref() == Some(me);
        if operator || supplier {
            return Ok(all);
        }
        Ok(all.into_iter().filter(|g| g.party == *me || g.appointer.as_ref() == Some(me)).collect())
    }

    /// Add the party's consents and appointments holding at the relationships' instant.
    /// Read only when the party holds a role that could use them. Returns the start of the
    /// consent that holds, for the data window.
    pub(crate) async fn add_grants(
        &self,
        party: &Party,
        mpxn: Mpxn,
        rel: &mut Relationships,
    ) -> Result<Option<Timestamp>, HubError> {
        let mut consent_from = None;
        if party.roles.contains(Role::OtherUser) {
            let held = self.grants_of(GrantKind::Consent, mpxn).await?;
            if let Some(g) = held.iter().find(|g| g.party == party.id && g.holds_at(rel.at)) {
                rel.consent_holders.push(party.id.clone());
                consent_from = Some(g.valid_from);
            }
        }
        if party.roles.contains(Role::RegisteredSupplierAgent) || party.roles.contains(Role::MeterAssetProvider) {
            let appointed = self.grants_of(GrantKind::Appointment, mpxn).await?;
            let acts = appointed.iter().any(|g| {
                g.party == party.id
                    && g.holds_at(rel.at)
                    && g.appointer.is_some()
                    && (g.appointer == rel.registered_supplier || g.appointer == rel.export_supplier)
            });
            if acts {
                rel.appointed_agents.push(party.id.clone());
            }
        }
        Ok(consent_from)
    }
}
