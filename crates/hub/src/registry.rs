//! Registration and enrolment (R-REG-1..4): the registration service records effective-dated
//! registrations; parties read them "as at" an instant, as the catalogue allows; the hub
//! operator bulk-loads them. Enrolment is recorded only by enrolling a smart metering system
//! (R-REG-2), never by the registration service or an import.

use std::collections::HashMap;

use domain::catalogue::TargetFacts;
use domain::registry::{
    EnrolmentVersion, RegistrationData, RegistrationVersion, is_large_gas_supply_point, validate_registration,
};
use domain::{Fuel, Mpxn, PartyId, Roles};
use jiff::Timestamp;
use store::{
    IMPORT_CHUNK_ROWS, IMPORT_CHUNKS_IN_FLIGHT_MAX, ImportMsg, ImportRow, ImportSummary, NewRegistration, StoreError,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{Caller, Hub, HubError};

/// A registration as given by a caller (API body or import row): text fields, checked here
/// and named on error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrationInput {
    /// RFC 3339 instant, or a date meaning the start of that London day.
    pub effective_from: String,
    pub supplier: String,
    pub export_supplier: Option<String>,
    pub shipper: Option<String>,
    pub network_operator: String,
    pub meter_type: String,
    pub payment_mode: Option<String>,
    pub annual_quantity_kwh: Option<u64>,
}

fn party_field(field: &str, s: &str) -> Result<PartyId, HubError> {
    PartyId::parse(s).map_err(|e| HubError::invalid(field, e.to_string()))
}

impl RegistrationInput {
    /// Syntax of every field. Roles and fuel are checked by [`validate_registration`].
    pub fn parse(&self) -> Result<(Timestamp, RegistrationData), HubError> {
        let effective_from =
            domain::time::parse_instant(&self.effective_from).map_err(|e| HubError::invalid("effective_from", e))?;
        let opt = |field: &str, v: &Option<String>| v.as_deref().map(|s| party_field(field, s)).transpose();
        let data = RegistrationData {
            supplier: party_field("supplier", &self.supplier)?,
            export_supplier: opt("export_supplier", &self.export_supplier)?,
            shipper: opt("shipper", &self.shipper)?,
            network_operator: party_field("network_operator", &self.network_operator)?,
            meter_type: self.meter_type.parse().map_err(|e: &str| HubError::invalid("meter_type", e))?,
            payment_mode: self
                .payment_mode
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e: &str| HubError::invalid("payment_mode", e))?,
            annual_quantity_kwh: self.annual_quantity_kwh,
        };
        Ok((effective_from, data))
    }
}

/// A metering point as at an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryView {
    pub mpxn: Mpxn,
    pub fuel: Fuel,
    pub at: Timestamp,
    pub known_at: Option<Timestamp>,
    /// `None` before the first registration takes effect.
    pub registration: Option<RegistrationVersion>,
    pub enrolment: Option<EnrolmentVersion>,
    /// Gas only, when the annual quantity is known.
    pub large_gas_supply_point: Option<bool>,
}

impl RegistryView {
    pub fn enrolled(&self) -> bool {
        self.enrolment.as_ref().is_some_and(|e| e.enrolled)
    }
}

/// Who stands in which relationship to a metering point at an instant.
#[derive(Debug, Clone)]
pub struct Relationships {
    pub mpxn: String,
    pub fuel: Fuel,
    pub at: Timestamp,
    pub registered_supplier: Option<PartyId>,
    pub export_supplier: Option<PartyId>,
    pub network_operator: Option<PartyId>,
    pub consent_holders: Vec<PartyId>,
    pub appointed_agents: Vec<PartyId>,
    pub former_suppliers: Vec<PartyId>,
}

impl Relationships {
    pub fn from_registration(mpxn: &Mpxn, at: Timestamp, reg: Option<&RegistrationVersion>) -> Relationships {
        Relationships {
            mpxn: mpxn.to_string(),
            fuel: mpxn.fuel(),
            at,
            registered_supplier: reg.map(|r| r.data.supplier.clone()),
            export_supplier: reg.and_then(|r| r.data.export_supplier.clone()),
            network_operator: reg.map(|r| r.data.network_operator.clone()),
            consent_holders: Vec::new(),
            appointed_agents: Vec::new(),
            former_suppliers: Vec::new(),
        }
    }

    pub fn facts(&self) -> TargetFacts<'_> {
        TargetFacts {
            mpxn: &self.mpxn,
            fuel: self.fuel,
            at: self.at,
            registered_supplier: self.registered_supplier.as_ref(),
            export_supplier: self.export_supplier.as_ref(),
            network_operator: self.network_operator.as_ref(),
            consent_holders: &self.consent_holders,
            appointed_agents: &self.appointed_agents,
            former_suppliers: &self.former_suppliers,
        }
    }
}

impl Hub {
    /// Validate an input against the parties it names and the metering point's fuel.
    async fn validated(
        &self,
        mpxn: &Mpxn,
        input: &RegistrationInput,
    ) -> Result<(Timestamp, RegistrationData), HubError> {
        let (from, data) = input.parse()?;
        let mut roles: HashMap<PartyId, Roles> = HashMap::new();
        let named =
            [Some(&data.supplier), data.export_supplier.as_ref(), data.shipper.as_ref(), Some(&data.network_operator)];
        for p in named.into_iter().flatten() {
            if let Some(party) = self.store().party(p).await? {
                roles.insert(party.id, party.roles);
            }
        }
        validate_registration(mpxn, &data, |p| roles.get(p).copied())?;
        Ok((from, data))
    }

    /// Record a registration version (registration service). Creates the metering point on
    /// first use; never changes an earlier version.
    pub async fn record_registration(
        &self,
        caller: &Caller,
        mpxn: &str,
        input: &RegistrationInput,
    ) -> Result<RegistrationVersion, HubError> {
        self.check_role(caller, "registry.write")?;
        let mpxn = self.parse_mpxn("mpxn", mpxn)?;
        self.authorize(
            caller,
            "registry.write",
            Some(&Relationships::from_registration(&mpxn, self.now(), None).facts()),
        )?;
        let (effective_from, data) = self.validated(&mpxn, input).await?;
        let version = self
            .store()
            .append_registration(NewRegistration {
                mpxn,
                effective_from,
                data,
                recorded_at: self.now(),
                recorded_by: caller.party.id.clone(),
            })
            .await?;
        tracing::info!(
            message = "Registration recorded.",
            mpxn = %version.mpxn,
            effective_from = %version.effective_from,
            supplier = %version.data.supplier,
            seq = version.seq
        );
        Ok(version)
    }

    /// Relationships at `at`, from the registration in force then.
    pub async fn relationships_at(&self, mpxn: &Mpxn, at: Timestamp) -> Result<Relationships, HubError> {
        let reg = self.store().registration_at(*mpxn, at, None).await?;
        Ok(Relationships::from_registration(mpxn, at, reg.as_ref()))
    }

    /// A metering point as at `at` (default now), optionally as it was known at `known_at`.
    /// Suppliers and network operators see it only for instants at which they hold the
    /// relationship; the registration service and the hub operator see everything.
    pub async fn registry_view(
        &self,
        caller: &Caller,
        mpxn: &str,
        at: Option<Timestamp>,
        known_at: Option<Timestamp>,
    ) -> Result<RegistryView, HubError> {
        self.check_role(caller, "registry.read")?;
        let mpxn = self.parse_mpxn("mpxn", mpxn)?;
        let at = at.unwrap_or_else(|| self.now());
        let registration = self.store().registration_at(mpxn, at, known_at).await?;
        let rel = Relationships::from_registration(&mpxn, at, registration.as_ref());
        // Relationship before existence: a party with no relationship learns nothing, not
        // even whether the metering point exists.
        self.authorize(caller, "registry.read", Some(&rel.facts()))?;
        if self.store().metering_point(mpxn).await?.is_none() {
            return Err(HubError::NotFound(format!("no metering point {mpxn}")));
        }
        let enrolment = self.store().enrolment_at(mpxn, at, known_at).await?;
        let large = registration.as_ref().and_then(|r| is_large_gas_supply_point(&mpxn, &r.data));
        Ok(RegistryView {
            mpxn,
            fuel: mpxn.fuel(),
            at,
            known_at,
            registration,
            enrolment,
            large_gas_supply_point: large,
        })
    }

    /// Every recorded version, registration and enrolment (registration service, operator).
    pub async fn registry_history(
        &self,
        caller: &Caller,
        mpxn: &str,
    ) -> Result<(Vec<RegistrationVersion>, Vec<EnrolmentVersion>), HubError> {
        self.check_role(caller, "registry.history")?;
        let mpxn = self.parse_mpxn("mpxn", mpxn)?;
        self.authorize(caller, "registry.history", Some(&self.relationships_at(&mpxn, self.now()).await?.facts()))?;
        if self.store().metering_point(mpxn).await?.is_none() {
            return Err(HubError::NotFound(format!("no metering point {mpxn}")));
        }
        Ok((self.store().registration_history(mpxn).await?, self.store().enrolment_history(mpxn).await?))
    }

    /// Start a bulk import recorded as by `recorded_by` (the local operator). Everything
    /// pushed is committed in one transaction by [`RegistryImport::commit`], or nothing is.
    pub async fn begin_import(&self, recorded_by: PartyId) -> Result<RegistryImport, HubError> {
        let roles = self.store().parties().await?.into_iter().map(|p| (p.id, p.roles)).collect();
        let (tx, rx) = mpsc::channel(IMPORT_CHUNKS_IN_FLIGHT_MAX);
        let store = self.store().clone();
        let now = self.now();
        let task = tokio::spawn(async move { store.import_registrations(rx, now, recorded_by).await });
        Ok(RegistryImport {
            hub: self.clone(),
            roles,
            chunk: Vec::with_capacity(IMPORT_CHUNK_ROWS),
            tx,
            task: Some(task),
        })
    }
}

/// A bulk import in progress. Dropping it without [`commit`](Self::commit) imports nothing.
pub struct RegistryImport {
    hub: Hub,
    roles: HashMap<PartyId, Roles>,
    chunk: Vec<ImportRow>,
    tx: mpsc::Sender<ImportMsg>,
    /// The store's side of the import; taken when it finishes.
    task: Option<JoinHandle<Result<ImportSummary, StoreError>>>,
}

impl RegistryImport {
    /// Check one row and queue it. A refused row is reported with its field; the caller then
    /// aborts (or drops) the import.
    pub async fn push(&mut self, mpxn: &str, input: &RegistrationInput) -> Result<(), HubError> {
        let mpxn = self.hub.parse_mpxn("mpxn", mpxn)?;
        let (effective_from, data) = input.parse()?;
        validate_registration(&mpxn, &data, |p| self.roles.get(p).copied())?;
        self.chunk.push(ImportRow { mpxn, effective_from, data });
        if self.chunk.len() == IMPORT_CHUNK_ROWS {
            let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(IMPORT_CHUNK_ROWS));
            self.send(ImportMsg::Rows(chunk)).await?;
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<ImportSummary, HubError> {
        let task = self.task.take().ok_or_else(|| HubError::Unavailable("the import already ended".into()))?;
        task.await.map_err(|e| HubError::Unavailable(format!("the import task failed: {e}")))?.map_err(HubError::from)
    }

    async fn send(&mut self, msg: ImportMsg) -> Result<(), HubError> {
        if self.tx.send(msg).await.is_err() {
            // The store ended the import early; its error says why.
            return Err(match self.finish().await {
                Err(e) => e,
                Ok(_) => HubError::Unavailable("the import ended early".into()),
            });
        }
        Ok(())
    }

    /// Commit everything pushed, atomically.
    pub async fn commit(mut self) -> Result<ImportSummary, HubError> {
        if !self.chunk.is_empty() {
            let chunk = std::mem::take(&mut self.chunk);
            self.send(ImportMsg::Rows(chunk)).await?;
        }
        self.send(ImportMsg::Commit).await?;
        let summary = self.finish().await?;
        tracing::info!(
            message = "Registry import committed.",
            rows = summary.rows,
            metering_points_created = summary.metering_points_created,
            registrations_added = summary.registrations_added,
            duplicates_skipped = summary.duplicates_skipped
        );
        Ok(summary)
    }

    /// Roll everything back.
    pub async fn abort(mut self, reason: String) {
        let _ = self.tx.send(ImportMsg::Abort(reason)).await;
        let _ = self.finish().await;
    }
}
