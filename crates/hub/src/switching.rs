//! Change of supplier (R-COS-1..7): the orchestration around the pure state machine in
//! `domain::switching`. Every step is one store write (new state, its event, and what the
//! step does: the registration, the credential requests, ended appointments, notices), taken
//! only if the switch has not moved meanwhile, so a restart at any point resumes it and no
//! step is taken twice.
//!
//! - The incoming supplier (gas: the incoming shipper, naming the supplier if it is another
//!   party) asks with `request_switch`; the outgoing supplier objects or withdraws its
//!   objection; the registration system offers and confirms gas switches; `run_switches_due`
//!   lets the clock act (windows closing, the switch instant).
//! - On confirmation the registry gets a version naming the incoming supplier from the switch
//!   instant, so authorisation moves at that instant even if the hub is late.
//! - At the switch instant the hub sends SRV 6.23 to the metering point's meter as the
//!   incoming supplier, signed with its change-of-supplier key. The meter (and the devices
//!   that follow its supplier) then trusts only the incoming supplier and answers the
//!   definitive reading at the switch instant, which both suppliers get (R-COS-3, R-COS-5).
//!   A failed delivery is retried with backoff, at most [`CREDENTIAL_ATTEMPTS_MAX`] times.
//! - Completing a switch ends the appointments the outgoing supplier made for the metering
//!   point (R-COS-6). A metering point with no enrolled smart metering system switches in the
//!   registry only, with no reading.

use device::TrustAnchor;
use domain::calendar::Division;
use domain::registry::is_large_gas_supply_point;
use domain::switching::{Action, Actor, Process, Stage, Step, Switch};
use domain::{Mpxn, Party, PartyId};
use jiff::Timestamp;
use serde_json::{Value, json};
use store::{
    GrantEnd, GrantKind, NewRegistration, Notice, RequestRecord, RequestStatus, ResponseOutcome, SwitchEvent,
    SwitchRecord, SwitchUpdate,
};

use crate::registry::Relationships;
use crate::{Caller, Hub, HubError};

/// Switches moved on by one scheduler pass.
pub const SWITCH_BATCH_MAX: usize = 256;
/// Deliveries of the credential replacement (6.23) tried before the switch completes without
/// it (five and a half days of tries, with the backoff of [`crate::delivery::retry_wait`]);
/// both suppliers are then told.
pub const CREDENTIAL_ATTEMPTS_MAX: u32 = 16;
/// Most switches listed at once.
pub const SWITCHES_PAGE_MAX: usize = 500;

/// A switch as asked for: text, checked here and named on error.
#[derive(Debug, Clone, Default)]
pub struct SwitchInput {
    pub mpxn: String,
    /// Electricity: the supply start date (`YYYY-MM-DD`, London).
    pub supply_start: Option<String>,
    /// Gas: the incoming supplier when the shipper asking is not it.
    pub supplier: Option<String>,
}

/// The hub's work at the switch instant, kept with the switch.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Work {
    attempts: u32,
    requests: Vec<String>,
    /// `pending`, `replaced`, `none: why` or `failed: why`.
    credentials: String,
    reading: Option<Value>,
}

impl Work {
    /// The work kept with a switch (none yet: the default).
    fn of(stored: Option<&str>) -> Work {
        stored.and_then(|w| serde_json::from_str(w).ok()).unwrap_or_default()
    }

    /// As kept with the switch.
    fn json(&self) -> Option<String> {
        Some(serde_json::to_string(self).expect("work serialises"))
    }
}

/// A notice about `mpxn` at `at`, recorded then.
fn notice(party: &PartyId, code: &str, mpxn: Mpxn, at: Timestamp, detail: String, data: Value) -> Notice {
    crate::notice(party, code, mpxn, at, at, detail, &data)
}

/// The audit event of one step of switch `switch_seq`, recorded at `now`.
fn event(
    switch_seq: i64,
    step: Step,
    now: Timestamp,
    actor: Actor,
    party: Option<PartyId>,
    event: &str,
    detail: String,
) -> SwitchEvent {
    SwitchEvent {
        seq: 0,
        switch_seq,
        at: step.at,
        recorded_at: now,
        actor: actor.as_str().into(),
        party,
        event: event.into(),
        from: Some(step.from),
        to: step.to,
        detail,
    }
}

/// An empty step of `rec` to `state` at `now`, taken only if `rec` is still current.
fn next_step(rec: &SwitchRecord, state: &Switch, now: Timestamp) -> SwitchUpdate {
    SwitchUpdate {
        seq: rec.seq,
        expected_version: rec.version,
        state: state.clone(),
        work: rec.work.clone(),
        at: now,
        events: Vec::new(),
        registration: None,
        requests: Vec::new(),
        grant_ends: Vec::new(),
        notices: Vec::new(),
    }
}

/// Every party a switch concerns.
fn parties_of(s: &SwitchRecord) -> Vec<PartyId> {
    let mut out = vec![s.incoming.clone(), s.outgoing.clone()];
    if let Some(shipper) = &s.incoming_shipper
        && !out.contains(shipper)
    {
        out.push(shipper.clone());
    }
    out
}

/// The JSON a party sees of a switch.
pub fn switch_json(s: &SwitchRecord) -> Value {
    let work: Option<Value> = s.work.as_deref().and_then(|w| serde_json::from_str(w).ok());
    json!({
        "id": s.seq,
        "mpxn": s.mpxn.to_string(),
        "process": s.state.process.as_str(),
        "stage": s.state.stage.as_str(),
        "incoming": s.incoming.as_str(),
        "incoming_shipper": s.incoming_shipper.as_ref().map(PartyId::as_str),
        "outgoing": s.outgoing.as_str(),
        "requested_at": s.state.requested_at.to_string(),
        "supply_start": s.state.supply_start.map(|d| d.to_string()),
        "deadline": s.state.deadline.map(|d| d.to_string()),
        "switch_at": s.state.switch_at.map(|d| d.to_string()),
        "credentials": work.as_ref().map(|w| w["credentials"].clone()),
        "definitive_reading": work.as_ref().map(|w| w["reading"].clone()),
        "updated_at": s.updated_at.to_string(),
    })
}

impl Hub {
    /// The incoming supplier (gas: shipper) asks to take over a metering point's supply.
    pub async fn request_switch(&self, caller: &Caller, input: &SwitchInput) -> Result<SwitchRecord, HubError> {
        self.check_role(caller, "switch.request")?;
        let mpxn = self.parse_mpxn("mpxn", &input.mpxn)?;
        let now = self.now();
        let reg = self
            .store()
            .registration_at(mpxn, now, None)
            .await?
            .ok_or_else(|| HubError::NotFound(format!("{mpxn} has no registration in force at {now}")))?;
        self.authorize(
            caller,
            "switch.request",
            Some(&Relationships::from_registration(&mpxn, now, Some(&reg)).facts()),
        )?;
        let supply_start = input
            .supply_start
            .as_deref()
            .map(|d| {
                d.parse::<jiff::civil::Date>().map_err(|_| HubError::invalid("supply_start", "a date, YYYY-MM-DD"))
            })
            .transpose()?;
        let (process, division, supplier, shipper) = match mpxn {
            Mpxn::Electricity(mpan) => {
                if input.supplier.is_some() {
                    return Err(HubError::invalid("supplier", "only a gas shipper names a supplier other than itself"));
                }
                (Process::Electricity, Division::of_mpan(mpan), caller.party.clone(), None)
            }
            Mpxn::Gas(_) => {
                let supplier = match &input.supplier {
                    None => caller.party.clone(),
                    Some(s) => {
                        let id: PartyId = s.parse().map_err(|e| HubError::invalid("supplier", format!("{e}")))?;
                        let p = self
                            .store()
                            .party(&id)
                            .await?
                            .ok_or_else(|| HubError::invalid("supplier", "no such party"))?;
                        if !p.roles.contains(domain::Role::GasSupplier) {
                            return Err(HubError::invalid("supplier", format!("{id} does not hold the GS role")));
                        }
                        p
                    }
                };
                let large = is_large_gas_supply_point(&mpxn, &reg.data) == Some(true);
                let process = if large { Process::GasLarge } else { Process::GasSmall };
                (process, Division::EnglandAndWales, supplier, Some(caller.party.id.clone()))
            }
        };
        if supplier.id == reg.data.supplier {
            return Err(HubError::Conflict(format!("{} already supplies {mpxn}", supplier.id)));
        }
        if supplier.signing_key_spki.is_none() {
            return Err(HubError::invalid(
                "supplier",
                format!("{} has no registered signing key: the devices are to trust it from the switch", supplier.id),
            ));
        }
        let state =
            Switch::open(process, division, now, supply_start).map_err(|r| HubError::invalid(r.field, r.rule))?;
        let record = SwitchRecord {
            seq: 0,
            mpxn,
            incoming: supplier.id.clone(),
            incoming_shipper: shipper,
            outgoing: reg.data.supplier.clone(),
            state: state.clone(),
            version: 0,
            work: None,
            created_at: now,
            updated_at: now,
        };
        let detail = match state.deadline {
            Some(d) => format!(
                "{} asks to supply {mpxn} from {}; objections until {d}",
                supplier.id,
                input.supply_start.as_deref().unwrap_or("")
            ),
            None => format!("{} asks to supply {mpxn}; waiting for the registration system", supplier.id),
        };
        let first = SwitchEvent {
            seq: 0,
            switch_seq: 0,
            at: now,
            recorded_at: now,
            actor: Actor::Incoming.as_str().into(),
            party: Some(caller.party.id.clone()),
            event: "requested".into(),
            from: None,
            to: state.stage,
            detail: detail.clone(),
        };
        let data = json!({"process": process.as_str(), "stage": state.stage.as_str(), "deadline": state.deadline.map(|d| d.to_string())});
        let mut notices = vec![notice(&reg.data.supplier, "switch-requested", mpxn, now, detail.clone(), data.clone())];
        if supplier.id != caller.party.id {
            // A shipper named another supplier: it learns of it at once.
            notices.push(notice(&supplier.id, "switch-requested", mpxn, now, detail, data));
        }
        let s = self.store().insert_switch(record, first, notices).await?;
        tracing::info!(message = "Switch requested.", switch = s.seq, mpxn = %mpxn, incoming = %s.incoming, outgoing = %s.outgoing, process = process.as_str());
        metrics::counter!("meterhub_switches_total", "step" => "requested").increment(1);
        Ok(s)
    }

    /// A party acts on a switch. Returns the switch and whether the action changed it (a
    /// registration system repeating an answer changes nothing).
    pub async fn act_on_switch(
        &self,
        caller: &Caller,
        seq: i64,
        action: &str,
    ) -> Result<(SwitchRecord, bool), HubError> {
        let action = Action::parse(action).ok_or_else(|| {
            let all: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
            HubError::invalid("action", format!("one of {}", all.join(", ")))
        })?;
        let code = match action.actor() {
            Actor::Incoming => "switch.request",
            Actor::Outgoing => "switch.object",
            Actor::RegistrationService | Actor::Hub => "switch.register",
        };
        self.check_role(caller, code)?;
        let rec = self.store().switch(seq).await?.ok_or_else(|| HubError::NotFound(format!("no switch {seq}")))?;
        let me = &caller.party.id;
        let allowed = match action.actor() {
            Actor::Incoming => rec.incoming == *me || rec.incoming_shipper.as_ref() == Some(me),
            Actor::Outgoing => rec.outgoing == *me,
            Actor::RegistrationService | Actor::Hub => true,
        };
        if !allowed {
            // The other party of the switch learns which side the action is for; anybody else
            // learns nothing.
            if !parties_of(&rec).contains(me) {
                return Err(HubError::NotFound(format!("no switch {seq}")));
            }
            return Err(HubError::invalid(
                "action",
                format!("{} is for the {} party of switch {seq}", action.as_str(), action.actor().as_str()),
            ));
        }
        let now = self.now();
        // The clock acts first: a window that has closed is closed, whether or not the
        // scheduler has got to it yet.
        let mut rec = rec;
        let mut state = rec.state.clone();
        let due = state.tick(now);
        if !due.is_empty() {
            rec = self.apply_steps(&rec, state, due, Actor::Hub, None, "clock", now).await?;
            state = rec.state.clone();
        }
        match state.act(action, now) {
            Err(r) => Err(HubError::Conflict(format!("switch {seq}: {}", r.rule))),
            Ok(None) => Ok((rec, false)),
            Ok(Some(step)) => {
                let s = self
                    .apply_steps(&rec, state, vec![step], action.actor(), Some(me.clone()), action.as_str(), now)
                    .await?;
                Ok((s, true))
            }
        }
    }

    /// Write one or more steps of a switch, with what they do.
    #[allow(clippy::too_many_arguments, reason = "one step's whole context")]
    async fn apply_steps(
        &self,
        rec: &SwitchRecord,
        mut state: Switch,
        steps: Vec<Step>,
        actor: Actor,
        party: Option<PartyId>,
        event: &str,
        now: Timestamp,
    ) -> Result<SwitchRecord, HubError> {
        let mut u = next_step(rec, &state, now);
        for step in &steps {
            let detail = match step.to {
                Stage::Confirmed => format!(
                    "confirmed; {} supplies {} from {}",
                    rec.incoming,
                    rec.mpxn,
                    state.switch_at.expect("confirmed")
                ),
                Stage::Withdrawn if step.from == Stage::Objected && actor == Actor::Hub => {
                    "the objection stood: unpicked".to_string()
                }
                Stage::Withdrawn => format!("withdrawn by the {}", actor.as_str()),
                Stage::Objected => format!("objected; resolve by {}", state.deadline.expect("objected")),
                Stage::Completing => "switch instant reached".to_string(),
                to => to.as_str().to_string(),
            };
            u.events.push(self::event(rec.seq, *step, now, actor, party.clone(), event, detail.clone()));
            let data = json!({"switch": rec.seq, "from": step.from.as_str(), "to": step.to.as_str(), "at": step.at.to_string(),
                              "switch_at": state.switch_at.map(|t| t.to_string())});
            for p in parties_of(rec) {
                u.notices.push(notice(
                    &p,
                    &format!("switch-{}", step.to.as_str()),
                    rec.mpxn,
                    now,
                    detail.clone(),
                    data.clone(),
                ));
            }
            if step.to == Stage::Confirmed {
                u.registration = Some(self.switched_registration(rec, &state, actor, party.as_ref(), now).await?);
            }
        }
        let mut completed = None;
        if state.stage == Stage::Completing {
            let switch_at = state.switch_at.expect("a completing switch has its instant");
            let (requests, credentials, registry_only) = match self.credential_requests(rec, switch_at).await {
                Ok(Some(r)) => (vec![r], "pending".to_string(), false),
                Ok(None) => (Vec::new(), "none: no smart metering system is linked to the metering point".into(), true),
                // Built again on the retry.
                Err(why) => {
                    tracing::warn!(message = "Cannot build the switch's 6.23 now.", switch = rec.seq, error = %why);
                    (Vec::new(), "pending".to_string(), false)
                }
            };
            let work = Work {
                attempts: 1,
                requests: requests.iter().map(|r| r.id.clone()).collect(),
                credentials,
                reading: None,
            };
            u.work = work.json();
            if registry_only {
                // Nothing to wait for: the switch is a registry change only.
                let done = state.complete(now).map_err(|r| HubError::Conflict(r.rule))?;
                self.completion(rec, &mut u, &work, done, now);
                completed = Some(work);
            } else {
                // Checked again as soon as the dispatcher has run the requests.
                state.deadline = Some(now);
            }
            u.requests = requests;
        }
        u.state = state;
        let s = self.store().update_switch(u).await?;
        for step in &steps {
            metrics::counter!("meterhub_switches_total", "step" => step.to.as_str()).increment(1);
            tracing::info!(message = "Switch moved.", switch = s.seq, mpxn = %s.mpxn, from = step.from.as_str(), to = step.to.as_str(), at = %step.at);
        }
        if let Some(work) = completed {
            self.completed_alerts(&s, &work).await;
        }
        Ok(s)
    }

    /// A completed switch, as a hub alert to both suppliers (besides their notices).
    async fn completed_alerts(&self, s: &SwitchRecord, work: &Work) {
        for party in [&s.incoming, &s.outgoing] {
            self.raise(
                domain::alerts::HubAlert::ChangeOfSupplier,
                Some(party),
                Some(s.mpxn),
                None,
                format!(
                    "{} supplies {} from {} (credentials: {})",
                    s.incoming,
                    s.mpxn,
                    s.state.switch_at.map(|t| t.to_string()).unwrap_or_default(),
                    work.credentials
                ),
                json!({"switch": s.seq, "incoming": s.incoming.as_str(), "outgoing": s.outgoing.as_str(),
                       "definitive_reading": work.reading}),
            )
            .await;
        }
    }

    /// The registration naming the incoming supplier (and shipper) from the switch instant,
    /// otherwise as registered then.
    async fn switched_registration(
        &self,
        rec: &SwitchRecord,
        state: &Switch,
        actor: Actor,
        party: Option<&PartyId>,
        now: Timestamp,
    ) -> Result<NewRegistration, HubError> {
        let at = state.switch_at.expect("confirmed");
        let current = self
            .store()
            .registration_at(rec.mpxn, at, None)
            .await?
            .ok_or_else(|| HubError::Conflict(format!("{} has no registration at {at}", rec.mpxn)))?;
        let mut data = current.data;
        data.supplier = rec.incoming.clone();
        if let Some(shipper) = &rec.incoming_shipper {
            data.shipper = Some(shipper.clone());
        }
        // The registration system records a gas confirmation; an electricity registration is
        // the incoming supplier's own request, confirmed by its window closing.
        let recorded_by = match (actor, party) {
            (Actor::RegistrationService, Some(p)) => p.clone(),
            _ => rec.incoming.clone(),
        };
        Ok(NewRegistration { mpxn: rec.mpxn, effective_from: at, data, recorded_at: now, recorded_by })
    }

    /// SRV 6.23 to the metering point's meter, as the incoming supplier, effective at the
    /// switch instant; `None` when no smart metering system is linked (a registry-only
    /// switch); `Err` says why it cannot be built now.
    async fn credential_requests(
        &self,
        rec: &SwitchRecord,
        switch_at: Timestamp,
    ) -> Result<Option<RequestRecord>, String> {
        let meter = match self.store().device_for_mpxn(rec.mpxn).await {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let party: Party = match self.store().party(&rec.incoming).await {
            Ok(Some(p)) => p,
            _ => return Err(format!("party {} is gone", rec.incoming)),
        };
        let spki = party.signing_key_spki.clone().ok_or("the incoming supplier has no signing key")?;
        let prepayment = self.prepayment_point(&party.id).await.map_err(|e| e.to_string())?;
        let anchor =
            TrustAnchor { originator: party.originator, spki: spki.into(), prepayment: Some(prepayment.into()) };
        let body = json!({"effective_at": switch_at.to_string(), "supplier": anchor});
        let r = self
            .hub_request(&party, "6.23", meter, Some(rec.mpxn), body, switch_at, true)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Some(r))
    }

    /// The completion's notices (the same definitive reading to both suppliers) and the
    /// outgoing supplier's appointments it ends.
    fn completion(&self, rec: &SwitchRecord, u: &mut SwitchUpdate, work: &Work, step: Step, now: Timestamp) {
        let detail = match &work.reading {
            Some(r) => format!(
                "{} supplies {} from {}; definitive reading {}",
                rec.incoming,
                rec.mpxn,
                rec.state.switch_at.map(|t| t.to_string()).unwrap_or_default(),
                r
            ),
            None => format!("{} supplies {}; no definitive reading ({})", rec.incoming, rec.mpxn, work.credentials),
        };
        u.events.push(event(rec.seq, step, now, Actor::Hub, None, "completed", detail.clone()));
        let data = json!({"switch": rec.seq, "definitive_reading": work.reading, "credentials": work.credentials});
        for p in parties_of(rec) {
            u.notices.push(notice(&p, "switch-completed", rec.mpxn, now, detail.clone(), data.clone()));
        }
    }

    /// Let the clock act on every switch that is due. Returns how many moved.
    pub async fn run_switches_due(&self) -> Result<usize, HubError> {
        let now = self.now();
        let due = self.store().due_switches(now, SWITCH_BATCH_MAX).await?;
        // Switches are independent (one per metering point): they move side by side, so their
        // writes share commits.
        let results = futures::future::join_all(due.into_iter().map(|rec| async move {
            let result = if rec.state.stage == Stage::Completing {
                self.check_credentials(&rec, now).await
            } else {
                let mut state = rec.state.clone();
                let steps = state.tick(now);
                self.apply_steps(&rec, state, steps, Actor::Hub, None, "clock", now).await.map(|_| true)
            };
            (rec.seq, result)
        }))
        .await;
        let mut moved = 0;
        for (seq, result) in results {
            match result {
                Ok(true) => moved += 1,
                Ok(false) => {}
                // Another step got there first; it is read again next time.
                Err(HubError::Conflict(m)) => {
                    tracing::debug!(message = "Switch moved meanwhile.", switch = seq, detail = %m)
                }
                // One switch failing does not hold the others up; it is tried again next pass.
                Err(e) => tracing::error!(message = "Switch step failed; retrying.", switch = seq, error = %e),
            }
        }
        Ok(moved)
    }

    /// A completing switch: once its credential requests have answers, complete it with the
    /// definitive reading, or try again later.
    async fn check_credentials(&self, rec: &SwitchRecord, now: Timestamp) -> Result<bool, HubError> {
        let mut work: Work = Work::of(rec.work.as_deref());
        let mut failure = None;
        // Tried just now and not buildable: the retry below does not build it again.
        let built_now = work.requests.is_empty();
        if built_now {
            // Not built when the switch reached its instant (in the same step as its
            // confirmation, the registry did not name the incoming supplier yet): built now,
            // and not counted as a try.
            let switch_at = rec.state.switch_at.expect("completing");
            match self.credential_requests(rec, switch_at).await {
                Ok(Some(r)) => {
                    work.requests = vec![r.id.clone()];
                    let mut u = next_step(rec, &rec.state, now);
                    u.work = work.json();
                    u.requests = vec![r];
                    u.state.deadline = Some(now);
                    self.store().update_switch(u).await?;
                    return Ok(true);
                }
                Ok(None) => failure = Some("no smart meter is linked to the metering point now".to_string()),
                Err(why) => failure = Some(why),
            }
        }
        let mut reading = None;
        for id in &work.requests {
            let Some((r, resp)) = self.store().request(id).await? else {
                failure = Some(format!("request {id} is gone"));
                continue;
            };
            match (r.status, resp) {
                (RequestStatus::Completed, Some(resp)) if resp.outcome == ResponseOutcome::Done => {
                    let v: Value = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
                    reading = v.get("definitive_reading").cloned();
                }
                (RequestStatus::Completed, Some(resp)) => {
                    failure = Some(format!("{}: {}", resp.outcome.as_str(), resp.body))
                }
                (RequestStatus::Completed | RequestStatus::Cancelled | RequestStatus::Deleted, _) => {
                    failure = Some(format!("request {id} did not run"));
                }
                // Not run yet.
                _ => return Ok(false),
            }
        }
        let mut state = rec.state.clone();
        let mut u = next_step(rec, &state, now);
        match failure {
            Some(why) if work.attempts < CREDENTIAL_ATTEMPTS_MAX => {
                let switch_at = state.switch_at.expect("completing");
                let retry_at = now + crate::delivery::retry_wait(work.attempts);
                // A request that cannot be built now counts as a failed attempt next time.
                let requests = if built_now {
                    Vec::new()
                } else {
                    match self.credential_requests(rec, switch_at).await {
                        Ok(r) => r.into_iter().collect(),
                        Err(e) => {
                            tracing::warn!(message = "Cannot build the switch's 6.23 now.", switch = rec.seq, error = %e);
                            Vec::new()
                        }
                    }
                };
                work.attempts += 1;
                work.requests = requests.iter().map(|r| r.id.clone()).collect();
                // Held by the hub until the retry instant.
                u.requests = requests
                    .into_iter()
                    .map(|mut r| {
                        r.execute_at = Some(retry_at);
                        r
                    })
                    .collect();
                state.deadline = Some(retry_at);
                let stay = Step { from: Stage::Completing, to: Stage::Completing, at: now };
                let detail = format!("6.23 not delivered ({why}); try {} at {retry_at}", work.attempts);
                u.events.push(event(rec.seq, stay, now, Actor::Hub, None, "credentials-retry", detail));
                tracing::warn!(message = "Switch credentials not delivered; retrying.", switch = rec.seq, attempt = work.attempts, reason = %why);
            }
            failure => {
                match failure {
                    Some(why) => {
                        work.credentials = format!("failed: {why}");
                        tracing::error!(message = "Switch completed without replacing device credentials.", switch = rec.seq, reason = %why);
                    }
                    None => {
                        work.credentials = "replaced".into();
                        work.reading = reading;
                    }
                }
                let done = state.complete(now).map_err(|r| HubError::Conflict(r.rule))?;
                self.completion(rec, &mut u, &work, done, now);
                u.grant_ends = self.outgoing_appointments(rec).await?;
            }
        }
        u.work = work.json();
        u.state = state;
        let s = self.store().update_switch(u).await?;
        if s.state.stage == Stage::Completed {
            metrics::counter!("meterhub_switches_total", "step" => "completed").increment(1);
            tracing::info!(message = "Switch completed.", switch = s.seq, mpxn = %s.mpxn, incoming = %s.incoming);
            self.completed_alerts(&s, &work).await;
        }
        Ok(true)
    }

    /// The appointments the outgoing supplier made for the metering point that are still
    /// open at the switch instant: they end there (R-COS-6).
    async fn outgoing_appointments(&self, rec: &SwitchRecord) -> Result<Vec<GrantEnd>, HubError> {
        let at = rec.state.switch_at.expect("switched");
        let all = self.store().grants(GrantKind::Appointment, rec.mpxn).await?;
        Ok(all
            .into_iter()
            .filter(|g| g.appointer.as_ref() == Some(&rec.outgoing) && g.runs_past(at))
            .map(|g| GrantEnd {
                kind: GrantKind::Appointment,
                seq: g.seq,
                valid_to: at,
                by: rec.incoming.clone(),
                reason: format!("change of supplier: {} no longer supplies {}", rec.outgoing, rec.mpxn),
            })
            .collect())
    }

    /// Switches the caller may see: those it is part of; every one for the registration
    /// service and the hub operator. Newest first.
    pub async fn switches(
        &self,
        caller: &Caller,
        mpxn: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SwitchRecord>, HubError> {
        self.check_role(caller, "switch.read")?;
        let mpxn = mpxn.map(|m| self.parse_mpxn("mpxn", m)).transpose()?;
        let limit = limit.clamp(1, SWITCHES_PAGE_MAX);
        let party = (!self.may(caller, "switch.read-any")).then_some(&caller.party.id);
        Ok(self.store().switches(mpxn, party, limit).await?)
    }

    /// One switch with its steps.
    pub async fn switch_view(&self, caller: &Caller, seq: i64) -> Result<(SwitchRecord, Vec<SwitchEvent>), HubError> {
        self.check_role(caller, "switch.read")?;
        let rec = self
            .store()
            .switch(seq)
            .await?
            .filter(|s| self.may(caller, "switch.read-any") || parties_of(s).contains(&caller.party.id));
        let rec = rec.ok_or_else(|| HubError::NotFound(format!("no switch {seq}")))?;
        let events = self.store().switch_events(seq).await?;
        Ok((rec, events))
    }

    /// The hub's notices to the caller after a sequence number.
    pub async fn notices(&self, caller: &Caller, after: i64, limit: usize) -> Result<Vec<Notice>, HubError> {
        self.authorize(caller, "notice.read-own", None)?;
        Ok(self.store().notices_after(&caller.party.id, after, limit.clamp(1, 1000)).await?)
    }
}
