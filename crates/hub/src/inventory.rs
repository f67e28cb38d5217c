//! The smart metering inventory: which devices are at which premises, installed by whom,
//! commissioned when, linked to which MPxN. Installing is the simulation's stand-in for an
//! installer's visit: the fleet fits the devices, trusting the installing supplier's key.

use device::{DeviceKind, LoadShape, TrustAnchor};
use store::{DeviceRecord, EnrolledHome, NewPremises, PremisesRecord};

use device::system::kind_text as kind_name;

use crate::transport::InstallOrder;
use crate::{Caller, Hub, HubError};

/// Longest list of additional devices at one premises.
pub const ADDITIONAL_DEVICES_MAX: u8 = 3;

/// What to fit, as asked.
#[derive(Debug, Clone, Default)]
pub struct InstallInput {
    /// `domestic` (profile class 1) or `economy-7` (class 2); absent = no electricity meter.
    pub electricity: Option<String>,
    /// Annual quantity; absent = no gas meter.
    pub gas_annual_quantity_kwh: Option<u64>,
    pub ihd: bool,
    pub ppmid: bool,
    pub additional: u8,
    /// The manufacturer party whose signed firmware the devices accept (its registered
    /// signing key is built in); absent = devices accept no firmware.
    pub manufacturer: Option<String>,
}

impl Hub {
    /// Fit devices at a new premises for the calling supplier, whose registered signing key
    /// the devices will trust.
    pub async fn install_premises(
        &self,
        caller: &Caller,
        input: &InstallInput,
    ) -> Result<(PremisesRecord, Vec<DeviceRecord>), HubError> {
        self.authorize(caller, "premises.install", None)?;
        let electricity = match input.electricity.as_deref() {
            None => None,
            Some("domestic") => Some(LoadShape::Domestic),
            Some("economy-7") => Some(LoadShape::DomesticEconomy7),
            Some(_) => return Err(HubError::invalid("electricity", "\"domestic\" or \"economy-7\"")),
        };
        if electricity.is_none() && input.gas_annual_quantity_kwh.is_none() {
            return Err(HubError::invalid("electricity", "a premises needs an electricity meter, a gas meter or both"));
        }
        if let Some(aq) = input.gas_annual_quantity_kwh
            && !(1..=domain::registry::ANNUAL_QUANTITY_KWH_MAX).contains(&aq)
        {
            return Err(HubError::invalid("gas_annual_quantity_kwh", "1 kWh to 10 TWh a year"));
        }
        if input.additional > ADDITIONAL_DEVICES_MAX {
            return Err(HubError::invalid("additional", format!("at most {ADDITIONAL_DEVICES_MAX}")));
        }
        let Some(spki) = caller.party.signing_key_spki.clone() else {
            return Err(HubError::invalid(
                "signing_key_pem",
                "the installing supplier needs a registered signing key: devices will trust it for critical commands",
            ));
        };
        let manufacturer = match input.manufacturer.as_deref() {
            None => None,
            Some(id) => {
                let id: domain::PartyId = id.parse().map_err(|e| HubError::invalid("manufacturer", format!("{e}")))?;
                let m = self
                    .store()
                    .party(&id)
                    .await?
                    .filter(|p| p.roles.contains(domain::Role::Manufacturer))
                    .ok_or_else(|| HubError::invalid("manufacturer", format!("{id} is not a manufacturer party")))?;
                let spki = m.signing_key_spki.clone().ok_or_else(|| {
                    HubError::invalid("manufacturer", format!("{id} has no registered signing key to sign firmware"))
                })?;
                Some(TrustAnchor { originator: m.originator, spki: spki.into(), prepayment: None })
            }
        };
        let transport = self
            .inner
            .transport
            .get()
            .ok_or_else(|| HubError::Unavailable("no device transport is attached".into()))?;
        let order = InstallOrder {
            electricity,
            gas_annual_quantity_kwh: input.gas_annual_quantity_kwh,
            ihd: input.ihd,
            ppmid: input.ppmid,
            additional: input.additional,
            supplier: TrustAnchor {
                originator: caller.party.originator,
                spki: spki.into(),
                prepayment: Some(self.prepayment_point(&caller.party.id).await?.into()),
            },
            cos_key: Some(self.cos_public_key().into()),
            manufacturer,
        };
        let installed = transport.install(order).await.map_err(|e| HubError::Unavailable(e.to_string()))?;
        let premises = self
            .store()
            .install_premises(NewPremises {
                comms_hub: installed.comms_hub,
                installed_at: self.now(),
                installed_by: caller.party.id.clone(),
                devices: installed.devices.iter().map(|(e, k)| (*e, kind_name(*k).to_string())).collect(),
            })
            .await?;
        let devices = self.store().premises_devices(premises.id).await?;
        tracing::info!(message = "Premises installed.", premises = premises.id, by = %caller.party.id, devices = devices.len());
        Ok((premises, devices))
    }

    /// A premises and its devices (its installer, the hub operator, or the registered
    /// supplier of a metering point linked there).
    pub async fn premises_view(
        &self,
        caller: &Caller,
        id: i64,
    ) -> Result<(PremisesRecord, Vec<DeviceRecord>), HubError> {
        self.check_role(caller, "premises.read")?;
        let not_found = || HubError::NotFound(format!("no premises {id}"));
        let premises = self.store().premises(id).await?.ok_or_else(not_found)?;
        let devices = self.store().premises_devices(id).await?;
        let operator = caller.party.roles.contains(domain::Role::HubOperator);
        let mut allowed = operator || premises.installed_by == caller.party.id;
        for d in devices.iter().filter_map(|d| d.mpxn) {
            if allowed {
                break;
            }
            let rel = self.relationships_at(&d, self.now()).await?;
            allowed = rel.registered_supplier.as_ref() == Some(&caller.party.id);
        }
        if !allowed {
            return Err(not_found());
        }
        Ok((premises, devices))
    }
}

impl Hub {
    /// An installer working for the premises' supplier fits one more device (a replacement
    /// in-home display, a generation meter): the device is on no HAN until the supplier adds
    /// it to the comms hub's log (8.11) and joins it to a meter (8.7).
    pub async fn fit_device(&self, caller: &Caller, premises_id: i64, kind: &str) -> Result<DeviceRecord, HubError> {
        self.authorize(caller, "premises.install", None)?;
        let kind = match kind {
            "in-home-display" => DeviceKind::InHomeDisplay,
            "ppmid" => DeviceKind::Ppmid,
            "additional" => DeviceKind::Additional,
            _ => return Err(HubError::invalid("kind", "\"in-home-display\", \"ppmid\" or \"additional\"")),
        };
        // The premises' supplier now (its installer until a meter is linked), or the operator.
        let (premises, devices) = self.premises_view(caller, premises_id).await?;
        if !caller.party.roles.contains(domain::Role::HubOperator) {
            let linked: Vec<domain::Mpxn> = devices.iter().filter_map(|d| d.mpxn).collect();
            let mut allowed = linked.is_empty() && premises.installed_by == caller.party.id;
            for m in linked {
                let rel = self.relationships_at(&m, self.now()).await?;
                allowed |= rel.registered_supplier.as_ref() == Some(&caller.party.id);
            }
            if !allowed {
                return Err(HubError::NotFound(format!(
                    "no premises {premises_id} that {} supplies now: only its supplier's installer fits devices",
                    caller.party.id
                )));
            }
        }
        let transport = self
            .inner
            .transport
            .get()
            .ok_or_else(|| HubError::Unavailable("no device transport is attached".into()))?;
        let eui = transport.fit(premises.comms_hub, kind).await.map_err(|e| HubError::Unavailable(e.to_string()))?;
        let d = self.store().add_device(premises_id, eui, kind_name(kind), self.now()).await?;
        tracing::info!(message = "Device fitted.", premises = premises_id, device = %eui, kind = kind_name(kind), by = %caller.party.id);
        Ok(d)
    }
}

impl Hub {
    /// Record homes fitted, commissioned and enrolled in bulk, without an authorisation
    /// check: for the local operator's `fleet generate`. The metering points must be
    /// registered already.
    pub async fn enrol_homes_unchecked(&self, homes: Vec<EnrolledHome>) -> Result<(), HubError> {
        Ok(self.store().enrol_homes(homes).await?)
    }
}

impl Hub {
    fn simulation_transport(
        &self,
        caller: &Caller,
    ) -> Result<&std::sync::Arc<dyn crate::transport::DeviceTransport>, HubError> {
        self.authorize(caller, "simulation.consumer", None)?;
        self.inner.transport.get().ok_or_else(|| HubError::Unavailable("no device transport is attached".into()))
    }

    /// Simulation: what the in-home display at a device's premises shows (hub operator).
    pub async fn simulated_display(&self, caller: &Caller, eui: &str) -> Result<serde_json::Value, HubError> {
        let transport = self.simulation_transport(caller)?;
        let eui = domain::Eui64::parse(eui).map_err(|e| HubError::invalid("eui", e.to_string()))?;
        transport.display(eui).await.map_err(|e| HubError::NotFound(e.to_string()))
    }

    /// Simulation: the consumer acts on a meter's keypad (hub operator).
    pub async fn simulated_consumer(
        &self,
        caller: &Caller,
        eui: &str,
        action: crate::transport::ConsumerAction,
    ) -> Result<device::Outcome, HubError> {
        let transport = self.simulation_transport(caller)?;
        let eui = domain::Eui64::parse(eui).map_err(|e| HubError::invalid("eui", e.to_string()))?;
        transport.consumer(eui, action).await.map_err(|e| HubError::NotFound(e.to_string()))
    }
}
