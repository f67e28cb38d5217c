//! A smart metering system: the devices at one premises (comms hub, electricity and/or gas
//! meter, in-home display, prepayment interface, additional equipment) and what they do with
//! a command. Pure: state in, command and instant in, state and outcome out.

use std::sync::Arc;

use domain::catalogue::{self, Critical};
use domain::crypto::{KeyAgreementKey, verify_p256};
use domain::product::{Change, PRODUCT_SRVS, Product};
use domain::{Eui64, Fuel, Mpxn};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use crate::account::Prepay;
use crate::consumption::Consumption;
use crate::firmware::{self as fwm, Firmware, Layer, Manifest, PendingActivation};
use crate::keys::{self, KeyUse};
use crate::profile::LoadShape;
use crate::wire::Command;

/// Devices a comms hub's HAN device log can hold.
pub const HAN_LOG_MAX: usize = 16;
/// Agents whose last command counter a device remembers (so none can be replayed).
pub const AGENTS_REMEMBERED: usize = 8;
/// Devices one meter can be joined to (SRV 8.7): our bound, documented in the README.
pub const JOINED_MAX: usize = 5;
/// Devices an installer can fit at a premises after installation, over its life.
pub const FITTED_MAX: u64 = 64;
/// Longest message an IHD shows.
pub const DISPLAY_CHARS_MAX: usize = 160;
/// Half-hourly profile kept by a meter.
pub const PROFILE_DAYS_MAX: i64 = 92;
/// Daily log kept by a meter.
pub const DAILY_LOG_DAYS_MAX: i64 = 396;
/// Furthest ahead a meter holds a future-dated change (as far as the hub accepts one).
pub const PENDING_DAYS_MAX: i64 = 400;
/// Future-dated results a meter keeps.
pub const ACTIVATIONS_KEPT: usize = 32;
/// GBCS alert: future-dated execution of a command succeeded.
pub const ALERT_FUTURE_DATED_OK: u16 = 0x8F66;
/// GBCS alert: future-dated execution of a command failed.
pub const ALERT_FUTURE_DATED_FAILED: u16 = 0x8F67;
/// Alert codes a meter can be told to stop sending.
pub const DISABLED_ALERTS_MAX: usize = 64;
/// Former suppliers' periods a meter remembers (the oldest is forgotten first).
pub const FORMER_SUPPLIERS_KEPT: usize = 8;
/// London days of consumption the in-home display shows.
pub const IHD_DAYS: i64 = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    CommsHub,
    ElectricityMeter,
    GasMeter,
    InHomeDisplay,
    Ppmid,
    /// Additional equipment, e.g. a generation meter.
    Additional,
}

/// The party key a device accepts critical commands from (its trust anchor).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TrustAnchor {
    pub originator: Eui64,
    /// ECDSA P-256 SubjectPublicKeyInfo DER (base64 in JSON).
    #[serde(deserialize_with = "base64_bytes::deserialize")]
    pub spki: Arc<[u8]>,
    /// The supplier's prepayment key-agreement public point (65 bytes), which UTRNs are
    /// checked with (GBCS 14); `None` if the supplier issues none.
    #[serde(default, deserialize_with = "opt_base64_bytes::deserialize")]
    pub prepayment: Option<Arc<[u8]>>,
}

/// JSON leaves an absent prepayment key out (request bodies carry anchors); binary forms have
/// no field names to tell a missing field by, so they write every field.
impl Serialize for TrustAnchor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64_bytes::Ref as Bytes;
        use serde::ser::SerializeStruct;
        let leave_out = s.is_human_readable() && self.prepayment.is_none();
        let mut st = s.serialize_struct("TrustAnchor", if leave_out { 2 } else { 3 })?;
        st.serialize_field("originator", &self.originator)?;
        st.serialize_field("spki", &Bytes(&self.spki))?;
        if leave_out {
            st.skip_field("prepayment")?;
        } else {
            st.serialize_field("prepayment", &self.prepayment.as_deref().map(Bytes))?;
        }
        st.end()
    }
}

/// Key bytes: base64 text in human-readable formats (JSON), raw bytes in binary ones (the
/// fleet's stored state). Keys read are shared: one party's key is in every device that
/// trusts it, so a key read again on the same thread is the copy that thread read before,
/// not a new one. That saves the allocations when a system is read, and makes copying a
/// system and comparing two copies nearly free for its keys.
mod base64_bytes {
    use std::cell::RefCell;
    use std::collections::HashSet;
    use std::sync::Arc;

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserializer, Serializer};

    /// Keys each thread remembers; when full it forgets them all and starts again. (A key
    /// is a party's: a fleet holds a few per supplier and manufacturer.)
    const KEYS_KEPT: usize = 1024;
    /// Longer bytes are never remembered (a P-256 SubjectPublicKeyInfo is 91 bytes, a
    /// key-agreement point 65): whatever a request body calls a key costs at most
    /// `KEYS_KEPT` times this per thread.
    const KEY_BYTES_KEPT_MAX: usize = 128;

    thread_local! {
        static KEPT: RefCell<HashSet<Arc<[u8]>>> = RefCell::new(HashSet::new());
    }

    /// `bytes` as a shared key: the remembered copy if there is one.
    pub fn shared(bytes: &[u8]) -> Arc<[u8]> {
        if bytes.len() > KEY_BYTES_KEPT_MAX {
            return Arc::from(bytes);
        }
        KEPT.with_borrow_mut(|kept| {
            if let Some(key) = kept.get(bytes) {
                return key.clone();
            }
            if kept.len() == KEYS_KEPT {
                kept.clear();
            }
            let key: Arc<[u8]> = Arc::from(bytes);
            kept.insert(key.clone());
            key
        })
    }

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() { s.serialize_str(&STANDARD.encode(v)) } else { s.serialize_bytes(v) }
    }

    struct Visitor;

    impl serde::de::Visitor<'_> for Visitor {
        type Value = Arc<[u8]>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("key bytes (base64 text or bytes)")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Arc<[u8]>, E> {
            Ok(shared(&STANDARD.decode(v.as_bytes()).map_err(E::custom)?))
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Arc<[u8]>, E> {
            Ok(shared(v))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<[u8]>, D::Error> {
        if d.is_human_readable() { d.deserialize_str(Visitor) } else { d.deserialize_bytes(Visitor) }
    }

    /// Serializes borrowed key bytes as [`base64_bytes`](self) does.
    pub struct Ref<'a>(pub &'a [u8]);

    impl serde::Serialize for Ref<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            serialize(self.0, s)
        }
    }
}

mod opt_base64_bytes {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Deserialize)]
    #[serde(transparent)]
    struct Bytes(#[serde(with = "super::base64_bytes")] Arc<[u8]>);

    pub fn serialize<S: Serializer>(v: &Option<Arc<[u8]>>, s: S) -> Result<S::Ok, S::Error> {
        v.as_deref().map(super::base64_bytes::Ref).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<[u8]>>, D::Error> {
        Ok(<Option<Bytes>>::deserialize(d)?.map(|b| b.0))
    }
}

/// A value whose serde form only a self-describing format can read back (a JSON value of
/// any shape; a product change, an internally tagged enum whose fields may be left out; a
/// device's answers, adjacently tagged): as itself in JSON, as its JSON text in binary
/// formats such as the fleet's stored state.
pub mod json_text {
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            v.serialize(s)
        } else {
            s.serialize_str(&serde_json::to_string(v).map_err(serde::ser::Error::custom)?)
        }
    }

    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        if d.is_human_readable() {
            T::deserialize(d)
        } else {
            let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            serde_json::from_str(&text).map_err(serde::de::Error::custom)
        }
    }

    /// Serializes one value as [`json_text`](self) does.
    pub struct Ref<'a, T>(pub &'a T);

    impl<T: Serialize> Serialize for Ref<'_, T> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            serialize(self.0, s)
        }
    }

    /// Reads an optional value written as `Option<Ref>`.
    pub mod opt {
        use serde::de::DeserializeOwned;
        use serde::{Deserialize, Deserializer};

        #[derive(Deserialize)]
        #[serde(transparent, bound = "T: DeserializeOwned")]
        struct Text<T>(#[serde(with = "super")] T);

        pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
            Ok(<Option<Text<T>>>::deserialize(d)?.map(|t| t.0))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub eui: Eui64,
    pub kind: DeviceKind,
    pub firmware: String,
    pub commissioned: bool,
    /// The supplier it accepts critical commands from.
    pub supplier: Option<TrustAnchor>,
    /// Highest counter accepted from the supplier (replay protection).
    pub last_counter: u64,
    /// The manufacturer whose firmware signatures it accepts (built in at the factory).
    #[serde(default)]
    pub manufacturer: Option<TrustAnchor>,
    /// Firmware beyond the core version: the application layer, held images, a pending
    /// activation.
    #[serde(default)]
    pub fw: Firmware,
    /// An agent of the supplier (its meter asset provider) whose signed firmware activation
    /// (11.3) the device accepts, set by the supplier's own SRV 6.15.1; cleared when the
    /// supplier's credentials are replaced.
    #[serde(default)]
    pub agent: Option<TrustAnchor>,
    /// Highest counter accepted from each agent this device has trusted, kept when the agent
    /// is removed (replay protection; at most [`AGENTS_REMEMBERED`], oldest dropped).
    #[serde(default)]
    pub agent_counters: Vec<(Eui64, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Supply {
    Enabled,
    Disabled,
    Armed,
}

/// What a meter adds to its device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meter {
    pub eui: Eui64,
    pub fuel: Fuel,
    /// Set by SRV 6.20.1.
    pub mpxn: Option<String>,
    pub shape: LoadShape,
    pub annual_quantity_kwh: Option<u64>,
    pub supply: Supply,
    /// Nothing before this instant is given to the supplier (the start of its period on
    /// this meter, R-COS-4).
    pub supplier_data_from: Timestamp,
    pub disabled_alerts: Vec<u16>,
    /// Earlier suppliers' periods on this meter, oldest first (bounded by
    /// [`FORMER_SUPPLIERS_KEPT`]): each may still read its own period (R-COS-4).
    #[serde(default)]
    pub former_suppliers: Vec<SupplierPeriod>,
    /// The current tenancy's start, set by SRV 3.2 (R-COT-4).
    #[serde(default)]
    pub tenancy: Option<Tenancy>,
    /// Prepayment credit and the UTRNs accepted (R-PAY-4, R-PAY-5).
    #[serde(default)]
    pub prepay: Prepay,
    /// The product (tariff) configuration in force (R-PM-2).
    #[serde(default)]
    pub product: Product,
    /// Future-dated changes the meter holds, one per SRV (R-PM-3).
    #[serde(default)]
    pub pending: Vec<PendingChange>,
    /// What became of future-dated changes, newest last (bounded by [`ACTIVATIONS_KEPT`]).
    #[serde(default)]
    pub activations: Vec<Activation>,
    /// The devices joined to this meter (SRV 8.7, bounded by [`JOINED_MAX`]): an in-home
    /// display shows, a PPMID serves, only the meters it is joined to. `None` on systems
    /// stored before joins were kept: every device of the premises on the HAN log.
    #[serde(default)]
    pub joined: Option<Vec<Eui64>>,
}

/// A supplier's period on a meter: from its credentials' arrival to the next supplier's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupplierPeriod {
    pub originator: Eui64,
    pub from: Timestamp,
    pub to: Timestamp,
    /// The UTRN counters this supplier had used here and the last command counter each
    /// device accepted from it: restored if it supplies again, so nothing of its is
    /// accepted twice.
    #[serde(default)]
    pub utrn_cache: domain::utrn::CounterCache,
    #[serde(default)]
    pub last_counters: Vec<(Eui64, u64)>,
}

/// The tenancy a meter serves (SRV 3.2): data before `from` is not read by or for this
/// tenant unless the outgoing tenant agreed to share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenancy {
    pub from: Timestamp,
    pub history_shared: bool,
}

impl Tenancy {
    /// The earliest instant this tenant's side may read.
    pub fn data_from(&self) -> Option<Timestamp> {
        (!self.history_shared).then_some(self.from)
    }
}

/// A product change the meter holds until its time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingChange {
    pub request_id: String,
    pub at: Timestamp,
    /// Order among changes held for the same instant: arrival order, and a change that
    /// supersedes a held one takes its place.
    #[serde(default)]
    pub seq: u64,
    #[serde(with = "json_text")]
    pub change: Change,
}

/// A held change at its time: applied with a register snapshot (R-PM-4), or failed because
/// the product it would make is inconsistent by then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    pub request_id: String,
    pub srv: String,
    pub at: Timestamp,
    /// GBCS future-dated result alert: 0x8F66 success, 0x8F67 failure.
    pub alert: u16,
    pub failure: Option<String>,
    /// The import register at the activation instant.
    pub import_wh: u64,
    pub product: Option<Product>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Displayed {
    pub text: String,
    pub since: Timestamp,
}

/// The devices at one premises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct System {
    pub seed: u64,
    pub installed_at: Timestamp,
    pub devices: Vec<Device>,
    pub meters: Vec<Meter>,
    /// Devices joined to the comms hub's HAN (bounded by [`HAN_LOG_MAX`]).
    pub han_log: Vec<Eui64>,
    pub display: Option<Displayed>,
    /// The hub's change-of-supplier key (SubjectPublicKeyInfo DER): SRV 6.23 must verify with
    /// it. `None` on systems installed before it existed: they refuse 6.23.
    #[serde(default, with = "opt_base64_bytes")]
    pub cos_key: Option<Arc<[u8]>>,
    /// The premises has no mains power since this instant (a simulated outage): nothing
    /// reaches the hub but the comms hub's report of the loss once it has lasted
    /// [`OUTAGE_REPORT_AFTER`].
    #[serde(default)]
    pub outage: Option<Outage>,
}

/// A power outage at the premises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outage {
    pub since: Timestamp,
    /// The comms hub reported it (after [`OUTAGE_REPORT_AFTER`]).
    pub reported: bool,
}

/// How long power must be lost before the comms hub reports it (GBCS: 3 minutes); shorter
/// losses are only reported, as short, when power returns.
pub const OUTAGE_REPORT_AFTER: SignedDuration = SignedDuration::from_mins(3);
/// GBCS alerts of supply interruption and restoration.
pub const ALERT_SUPPLY_INTERRUPTED: u16 = 0x8F57;
pub const ALERT_OUTAGE_RESTORED: u16 = 0x8F35;
pub const ALERT_OUTAGE_RESTORED_LONG: u16 = 0x8F36;
/// Physical tamper alerts a meter can raise (GBCS "Unauthorised Physical Access").
pub const TAMPER_ALERTS: [u16; 6] = [0x8F3F, 0x8F73, 0x8F74, 0x8F75, 0x8F76, 0x8F78];

/// Who the hub says is asking, and the window of data it is entitled to (the hub's half of
/// the data-window rule; the device applies its own as well).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub requester: Requester,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester {
    /// The registered (import or gas) supplier.
    Supplier,
    /// A supplier before the current one, reading its own period (R-COS-4).
    FormerSupplier,
    /// The registered export supplier.
    ExportSupplier,
    NetworkOperator,
    OtherUser,
}

/// Why a device refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefusalCode {
    Malformed,
    UnknownDevice,
    SignatureMissing,
    SignatureInvalid,
    UntrustedOriginator,
    Replay,
    NotCommissioned,
    NotSupported,
    InvalidBody,
    HanLogFull,
    /// A UTRN was refused; the reason names the GBCS alert (0x8F51 duplicate, 0x8F63 not
    /// authentic).
    UtrnRejected,
    /// The product configuration a change would make is inconsistent; nothing was applied.
    Inconsistent,
    /// The requester holds no period on this meter that the read could fall in.
    NotEntitled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "outcome", content = "body")]
pub enum Outcome {
    Done(Value),
    Refused { code: RefusalCode, reason: String },
}

fn refused(code: RefusalCode, reason: impl Into<String>) -> Outcome {
    Outcome::Refused { code, reason: reason.into() }
}

/// What an installer sets up at a premises.
#[derive(Debug, Clone)]
pub struct Installation {
    pub seed: u64,
    pub at: Timestamp,
    /// EUI of the comms hub; the other devices' EUIs follow it.
    pub comms_hub: Eui64,
    pub electricity: Option<LoadShape>,
    pub gas_annual_quantity_kwh: Option<u64>,
    pub ihd: bool,
    pub ppmid: bool,
    pub additional: usize,
    /// The installing supplier, whose key the devices trust from the factory.
    pub supplier: TrustAnchor,
    /// The hub's change-of-supplier key (SubjectPublicKeyInfo DER).
    pub cos_key: Option<Arc<[u8]>>,
    /// The manufacturer whose firmware the devices accept.
    pub manufacturer: Option<TrustAnchor>,
}

impl System {
    /// Devices as installed: not yet commissioned, trusting the installing supplier.
    pub fn install(i: Installation) -> System {
        let mut devices = Vec::new();
        let mut meters = Vec::new();
        let mut next = i.comms_hub.as_u64();
        let mut add = |kind: DeviceKind, devices: &mut Vec<Device>| -> Eui64 {
            let eui = Eui64::from_u64(next);
            next += 1;
            devices.push(Device {
                eui,
                kind,
                firmware: "1.0.0".into(),
                commissioned: false,
                supplier: Some(i.supplier.clone()),
                last_counter: 0,
                manufacturer: i.manufacturer.clone(),
                fw: Firmware::default(),
                agent: None,
                agent_counters: Vec::new(),
            });
            eui
        };
        add(DeviceKind::CommsHub, &mut devices);
        let meter = |eui, fuel, shape, aq| Meter {
            eui,
            fuel,
            mpxn: None,
            shape,
            annual_quantity_kwh: aq,
            supply: Supply::Enabled,
            supplier_data_from: i.at,
            disabled_alerts: Vec::new(),
            former_suppliers: Vec::new(),
            tenancy: None,
            prepay: Prepay::default(),
            product: Product::default(),
            pending: Vec::new(),
            activations: Vec::new(),
            joined: Some(Vec::new()),
        };
        if let Some(shape) = i.electricity {
            let eui = add(DeviceKind::ElectricityMeter, &mut devices);
            meters.push(meter(eui, Fuel::Electricity, shape, None));
        }
        if let Some(aq) = i.gas_annual_quantity_kwh {
            let eui = add(DeviceKind::GasMeter, &mut devices);
            meters.push(meter(eui, Fuel::Gas, LoadShape::Gas, Some(aq)));
        }
        if i.ihd {
            add(DeviceKind::InHomeDisplay, &mut devices);
        }
        if i.ppmid {
            add(DeviceKind::Ppmid, &mut devices);
        }
        for _ in 0..i.additional {
            add(DeviceKind::Additional, &mut devices);
        }
        let han_log: Vec<Eui64> = devices.iter().skip(1).map(|d| d.eui).take(HAN_LOG_MAX).collect();
        // The installer joins the displays, PPMID and additional devices to every meter.
        let others: Vec<Eui64> = devices
            .iter()
            .filter(|d| !matches!(d.kind, DeviceKind::CommsHub | DeviceKind::ElectricityMeter | DeviceKind::GasMeter))
            .map(|d| d.eui)
            .take(JOINED_MAX)
            .collect();
        for m in &mut meters {
            m.joined = Some(others.clone());
        }
        System {
            seed: i.seed,
            installed_at: i.at,
            devices,
            meters,
            han_log,
            display: None,
            cos_key: i.cos_key,
            outage: None,
        }
    }

    /// The devices joined to a meter.
    pub fn joined(&self, meter: &Meter) -> Vec<Eui64> {
        match &meter.joined {
            Some(j) => j.clone(),
            None => self
                .devices
                .iter()
                .filter(|d| {
                    !matches!(d.kind, DeviceKind::CommsHub | DeviceKind::ElectricityMeter | DeviceKind::GasMeter)
                        && self.han_log.contains(&d.eui)
                })
                .map(|d| d.eui)
                .collect(),
        }
    }

    /// An installer fits one more device at the premises (a replacement in-home display, a
    /// generation meter): it trusts the supplier the comms hub trusts, and is on no HAN yet
    /// (8.11 puts it on the comms hub's log, 8.7 joins it to a meter). `eui` comes from the
    /// fleet, which keeps EUIs unique.
    pub fn fit(&mut self, eui: Eui64, kind: DeviceKind) -> Result<(), String> {
        if matches!(kind, DeviceKind::CommsHub | DeviceKind::ElectricityMeter | DeviceKind::GasMeter) {
            return Err("only in-home displays, PPMIDs and additional devices are fitted to a running system".into());
        }
        if self.devices.iter().any(|d| d.eui == eui) {
            return Err(format!("device {eui} is already here"));
        }
        let supplier = self.devices[0].supplier.clone();
        let manufacturer = self.devices[0].manufacturer.clone();
        self.devices.push(Device {
            eui,
            kind,
            firmware: "1.0.0".into(),
            commissioned: true,
            supplier,
            last_counter: 0,
            manufacturer,
            fw: Firmware::default(),
            agent: None,
            agent_counters: Vec::new(),
        });
        Ok(())
    }

    pub fn device(&self, eui: Eui64) -> Option<&Device> {
        self.devices.iter().find(|d| d.eui == eui)
    }

    pub fn meter(&self, eui: Eui64) -> Option<&Meter> {
        self.meters.iter().find(|m| m.eui == eui)
    }

    /// The meter for a fuel.
    pub fn meter_for(&self, fuel: Fuel) -> Option<&Meter> {
        self.meters.iter().find(|m| m.fuel == fuel)
    }

    /// A meter's consumption model, from the system seed and the meter's EUI.
    pub fn consumption(&self, meter: &Meter) -> Consumption {
        Consumption::for_meter(
            meter.shape,
            self.seed ^ meter.eui.as_u64().rotate_left(17),
            self.installed_at,
            meter.annual_quantity_kwh,
        )
    }

    /// Handle a command: decode it, verify it if it is critical, check the target, run it.
    pub fn handle(&mut self, now: Timestamp, bytes: &[u8], signature: Option<&[u8]>, access: Access) -> Outcome {
        self.handle_with_image(now, bytes, signature, access, None)
    }

    /// [`System::handle`] with a firmware image downloaded alongside the command (SRV 11.1:
    /// the comms hub's download, as received, possibly damaged on the way).
    pub fn handle_with_image(
        &mut self,
        now: Timestamp,
        bytes: &[u8],
        signature: Option<&[u8]>,
        access: Access,
        image: Option<&[u8]>,
    ) -> Outcome {
        let cmd = match Command::decode(bytes) {
            Ok(c) => c,
            Err(e) => return refused(RefusalCode::Malformed, e.to_string()),
        };
        let Some(index) = self.devices.iter().position(|d| d.eui == cmd.id.target) else {
            return refused(RefusalCode::UnknownDevice, format!("no device {} here", cmd.id.target));
        };
        // The device's own idea of what is critical: the catalogue, not the hub's say-so.
        let critical = catalogue::service(&cmd.srv).is_some_and(|s| s.critical == Critical::Yes);
        if critical && let Err(o) = self.verify(index, &cmd, bytes, signature) {
            return o;
        }
        // Change of supplier credentials come signed by the hub's change-of-supplier key.
        if cmd.srv == "6.23" {
            let Some(key) = &self.cos_key else {
                return refused(RefusalCode::UntrustedOriginator, "this device holds no change-of-supplier key");
            };
            let Some(sig) = signature else {
                return refused(
                    RefusalCode::SignatureMissing,
                    "SRV 6.23 must be signed with the change-of-supplier key",
                );
            };
            if !verify_p256(key, bytes, sig) {
                return refused(
                    RefusalCode::SignatureInvalid,
                    "the signature does not verify with the change-of-supplier key",
                );
            }
        }
        let device = &self.devices[index];
        if !device.commissioned && !matches!(cmd.srv.as_str(), "8.1.1" | "11.2") {
            return refused(RefusalCode::NotCommissioned, format!("device {} is not commissioned", device.eui));
        }
        let body: Value = match serde_json::from_slice(&cmd.body) {
            Ok(Value::Null) | Err(_) if cmd.body.is_empty() => json!({}),
            Ok(v) => v,
            Err(e) => return refused(RefusalCode::InvalidBody, format!("body is not JSON: {e}")),
        };
        // Held changes whose time has come apply first, at their own instants.
        self.settle(now);
        if PRODUCT_SRVS.contains(&cmd.srv.as_str()) {
            return self.product_change(now, index, cmd, &body);
        }
        if cmd.srv == "11.1" {
            return self.receive_image(now, index, &body, image);
        }
        if cmd.srv == "11.3" {
            return self.activate(now, index, &cmd, &body);
        }
        self.run(now, index, &cmd, &body, access)
    }

    fn verify(&mut self, index: usize, cmd: &Command, bytes: &[u8], signature: Option<&[u8]>) -> Result<(), Outcome> {
        let device = &mut self.devices[index];
        let Some(sig) = signature else {
            return Err(refused(
                RefusalCode::SignatureMissing,
                format!("SRV {} is critical and must be signed", cmd.srv),
            ));
        };
        // The supplier's agent may activate firmware, and nothing else.
        if cmd.srv == "11.3"
            && let Some(agent) = device.agent.as_ref().filter(|a| a.originator == cmd.id.originator)
        {
            if !verify_p256(&agent.spki, bytes, sig) {
                return Err(refused(
                    RefusalCode::SignatureInvalid,
                    "the signature does not verify with the agent's key",
                ));
            }
            let last = device.agent_counters.iter().find(|(e, _)| *e == cmd.id.originator).map_or(0, |(_, c)| *c);
            if cmd.id.counter <= last {
                return Err(refused(
                    RefusalCode::Replay,
                    format!("counter {} is not above the last accepted {last}", cmd.id.counter),
                ));
            }
            device.agent_counters.retain(|(e, _)| *e != cmd.id.originator);
            if device.agent_counters.len() >= AGENTS_REMEMBERED {
                device.agent_counters.remove(0);
            }
            device.agent_counters.push((cmd.id.originator, cmd.id.counter));
            return Ok(());
        }
        let Some(anchor) = &device.supplier else {
            return Err(refused(RefusalCode::UntrustedOriginator, "this device trusts no supplier"));
        };
        if anchor.originator != cmd.id.originator {
            return Err(refused(
                RefusalCode::UntrustedOriginator,
                format!("originator {} is not the supplier this device trusts", cmd.id.originator),
            ));
        }
        if !verify_p256(&anchor.spki, bytes, sig) {
            return Err(refused(
                RefusalCode::SignatureInvalid,
                "the signature does not verify with the trusted supplier key",
            ));
        }
        if cmd.id.counter <= device.last_counter {
            return Err(refused(
                RefusalCode::Replay,
                format!("counter {} is not above the last accepted {}", cmd.id.counter, device.last_counter),
            ));
        }
        device.last_counter = cmd.id.counter;
        Ok(())
    }

    fn meter_index(&self, eui: Eui64) -> Option<usize> {
        self.meters.iter().position(|m| m.eui == eui)
    }

    fn run(&mut self, now: Timestamp, index: usize, cmd: &Command, body: &Value, access: Access) -> Outcome {
        let srv = cmd.srv.as_str();
        let originator = cmd.id.originator;
        let eui = self.devices[index].eui;
        let kind = self.devices[index].kind;
        let not_here = || refused(RefusalCode::NotSupported, format!("SRV {srv} does not apply to a {kind:?} device"));
        match srv {
            "8.1.1" => {
                self.devices[index].commissioned = true;
                Outcome::Done(json!({"commissioned": eui.to_string()}))
            }
            "11.2" => {
                let d = &self.devices[index];
                let held: Vec<Value> =
                    d.fw.held
                        .iter()
                        .map(|m| json!({"layer": m.layer, "version": m.version, "image_hash": m.image_hash}))
                        .collect();
                Outcome::Done(json!({"device": eui.to_string(), "firmware": d.firmware, "core_hash": d.fw.core_hash,
                                     "application": d.fw.application, "held": held,
                                     "pending_activation": d.fw.pending}))
            }
            "6.20.1" => {
                let Some(m) = self.meter_index(eui) else { return not_here() };
                let Some(text) = body.get("mpxn").and_then(Value::as_str) else {
                    return refused(RefusalCode::InvalidBody, "mpxn is required");
                };
                match Mpxn::parse_with(text, domain::IdRules::RELAXED) {
                    Ok(mpxn) if mpxn.fuel() == self.meters[m].fuel => {
                        self.meters[m].mpxn = Some(mpxn.to_string());
                        Outcome::Done(json!({"mpxn": mpxn.to_string(), "device": eui.to_string()}))
                    }
                    Ok(_) => refused(RefusalCode::InvalidBody, "the MPxN is for the other fuel"),
                    Err(e) => refused(RefusalCode::InvalidBody, e.to_string()),
                }
            }
            "4.1.1" => {
                let Some(m) = self.meter_index(eui) else { return not_here() };
                let meter = &self.meters[m];
                let r = self.consumption(meter).registers_at(now);
                let mut out = json!({"read_at": now.to_string(), "import_wh": r.import_wh});
                if let Some(n) = r.night_wh {
                    out["night_wh"] = json!(n);
                    out["day_wh"] = json!(r.import_wh - n);
                }
                if meter.fuel == Fuel::Gas {
                    out["volume_litres"] = json!(gas_litres(r.import_wh));
                }
                Outcome::Done(out)
            }
            "4.8.1" => {
                let Some(m) = self.meter_index(eui) else { return not_here() };
                let (from, to) = match self.window(m, now, PROFILE_DAYS_MAX, body, access, originator) {
                    Ok(w) => w,
                    Err(o) => return o,
                };
                let hh = self.consumption(&self.meters[m]).half_hours(from, to);
                let periods: Vec<Value> = hh.iter().map(|(t, wh)| json!([t.to_string(), wh])).collect();
                Outcome::Done(json!({"from": from.to_string(), "to": to.to_string(), "half_hours": periods}))
            }
            "4.17" => {
                let Some(m) = self.meter_index(eui) else { return not_here() };
                let (from, to) = match self.window(m, now, DAILY_LOG_DAYS_MAX, body, access, originator) {
                    Ok(w) => w,
                    Err(o) => return o,
                };
                // Whole London days inside the window.
                let first = whole_day_at_or_after(from);
                let last = domain::time::london_date(to);
                let days = self.consumption(&self.meters[m]).days(first, last);
                let days: Vec<Value> = days.iter().map(|(d, wh)| json!([d.to_string(), wh])).collect();
                Outcome::Done(json!({"from": from.to_string(), "to": to.to_string(), "days": days}))
            }
            "7.4" => {
                let Some(m) = self.meter_index(eui) else { return not_here() };
                Outcome::Done(json!({"supply": self.meters[m].supply}))
            }
            "7.1" | "7.2" | "7.3" => {
                let Some(m) = self.meter_index(eui) else { return not_here() };
                let meter = &mut self.meters[m];
                meter.supply = match srv {
                    "7.2" => Supply::Disabled,
                    "7.3" => Supply::Armed,
                    // Gas cannot be re-enabled remotely: it is armed and the consumer restores it.
                    _ if meter.fuel == Fuel::Gas => {
                        return refused(
                            RefusalCode::NotSupported,
                            "a gas supply is armed (7.3), never enabled remotely",
                        );
                    }
                    _ => Supply::Enabled,
                };
                Outcome::Done(json!({"supply": meter.supply}))
            }
            "6.2" => {
                let device = &self.devices[index];
                let mut out = json!({"device": eui.to_string(), "kind": kind, "firmware": device.firmware});
                // The product is the supplier's business: only its supplier sees it.
                if let Some(m) = self.meter_index(eui)
                    && access.requester == Requester::Supplier
                {
                    let meter = &self.meters[m];
                    let pending: Vec<Value> = meter
                        .pending
                        .iter()
                        .map(|p| json!({"request_id": p.request_id, "srv": change_srv(&p.change), "at": p.at.to_string()}))
                        .collect();
                    // Events and results from before the supplier's period are not its own.
                    let since = access.from.unwrap_or(Timestamp::MIN).max(meter.supplier_data_from);
                    let activations: Vec<&Activation> = meter.activations.iter().filter(|a| a.at >= since).collect();
                    let events: Vec<&crate::account::MeterEvent> =
                        meter.prepay.events.iter().filter(|e| e.at >= since).collect();
                    out["product"] = json!(meter.product);
                    out["pending"] = json!(pending);
                    out["activations"] = json!(activations);
                    out["balance_pence"] = json!(meter.prepay.balance_pence());
                    out["debt_pence"] = json!(meter.prepay.debt_pence);
                    out["emergency_credit_active"] = json!(meter.prepay.emergency_credit_active);
                    out["events"] = json!(events);
                    out["events_lost"] = json!(meter.prepay.events_lost);
                }
                Outcome::Done(out)
            }
            "2.3" => {
                let Some(m) = self.meter_index(eui) else { return not_here() };
                let Some(debt) =
                    body.get("debt_pence").and_then(Value::as_i64).filter(|d| (0..=10_000_000).contains(d))
                else {
                    return refused(RefusalCode::InvalidBody, "debt_pence: 0 to 10,000,000 pence");
                };
                let meter = &mut self.meters[m];
                if meter.product.payment_mode != domain::product::PaymentMode::Prepayment {
                    return refused(RefusalCode::Inconsistent, "debt is recovered from credit in prepayment mode only");
                }
                meter.prepay.set_debt(debt);
                Outcome::Done(json!({"debt_pence": debt, "balance_pence": meter.prepay.balance_pence()}))
            }
            "1.5" => {
                let Some(m) = self.meter_index(eui) else { return not_here() };
                let Some(pence) = body
                    .get("adjustment_pence")
                    .and_then(Value::as_i64)
                    .filter(|p| *p != 0 && (-1_000_000..=1_000_000).contains(p))
                else {
                    return refused(RefusalCode::InvalidBody, "adjustment_pence: -1,000,000 to 1,000,000, not 0");
                };
                let Meter { prepay, product, supply, .. } = &mut self.meters[m];
                if product.payment_mode != domain::product::PaymentMode::Prepayment {
                    return refused(RefusalCode::Inconsistent, "the meter balance is kept in prepayment mode only");
                }
                prepay.adjust(now, pence, supply, product);
                Outcome::Done(
                    json!({"adjustment_pence": pence, "balance_pence": prepay.balance_pence(), "supply": supply}),
                )
            }
            "2.5" => {
                let Some(m) = self.meter_index(eui) else { return not_here() };
                self.emergency_credit(now, m)
            }
            "2.2" => {
                let Some(utrn) = body.get("utrn").and_then(Value::as_str) else {
                    return refused(RefusalCode::InvalidBody, "utrn is required");
                };
                self.credit_utrn(now, eui, utrn)
            }
            "3.1" => {
                if self.meter_index(eui).is_none() {
                    return not_here();
                }
                let Some(text) = body.get("message").and_then(Value::as_str) else {
                    return refused(RefusalCode::InvalidBody, "message is required");
                };
                if text.chars().count() > DISPLAY_CHARS_MAX || text.chars().any(char::is_control) {
                    return refused(
                        RefusalCode::InvalidBody,
                        format!("a message is at most {DISPLAY_CHARS_MAX} printable characters"),
                    );
                }
                self.display = Some(Displayed { text: text.to_string(), since: now });
                let ihd = self.devices.iter().find(|d| d.kind == DeviceKind::InHomeDisplay).map(|d| d.eui.to_string());
                Outcome::Done(json!({"displayed_on": ihd}))
            }
            "6.22" => {
                let Some(m) = self.meter_index(eui) else { return not_here() };
                let code = body.get("alert_code").and_then(Value::as_str).and_then(parse_alert_code);
                let enabled = body.get("enabled").and_then(Value::as_bool);
                let (Some(code), Some(enabled)) = (code, enabled) else {
                    return refused(
                        RefusalCode::InvalidBody,
                        "give alert_code (e.g. \"0x8F35\") and enabled (true/false)",
                    );
                };
                let disabled = &mut self.meters[m].disabled_alerts;
                disabled.retain(|c| *c != code);
                if !enabled {
                    if disabled.len() >= DISABLED_ALERTS_MAX {
                        return refused(
                            RefusalCode::InvalidBody,
                            format!("at most {DISABLED_ALERTS_MAX} alerts can be disabled"),
                        );
                    }
                    disabled.push(code);
                }
                Outcome::Done(json!({"alert_code": format!("0x{code:04X}"), "enabled": enabled}))
            }
            "6.23" => {
                let Some(m) = self.meter_index(eui) else { return not_here() };
                self.replace_supplier(now, m, body)
            }
            "6.15.1" => {
                let agent = match body.get("agent") {
                    Some(Value::Null) => None,
                    Some(a) => match serde_json::from_value::<TrustAnchor>(a.clone()) {
                        Ok(a) => Some(a),
                        Err(e) => return refused(RefusalCode::InvalidBody, format!("agent: {e}")),
                    },
                    None => return refused(RefusalCode::InvalidBody, "agent {originator, spki} or null is required"),
                };
                let d = &mut self.devices[index];
                d.agent = agent;
                Outcome::Done(
                    json!({"device": eui.to_string(), "agent": d.agent.as_ref().map(|a| a.originator.to_string())}),
                )
            }
            "3.2" => {
                let Some(m) = self.meter_index(eui) else { return not_here() };
                let from = body.get("tenancy_from").and_then(Value::as_str).and_then(|s| s.parse::<Timestamp>().ok());
                let shared = body.get("share_history").and_then(Value::as_bool).unwrap_or(false);
                let Some(from) = from else {
                    return refused(RefusalCode::InvalidBody, "tenancy_from (an RFC 3339 instant) is required");
                };
                if self.meters[m].tenancy.is_some_and(|t| t.from > from) {
                    return refused(RefusalCode::InvalidBody, "a tenancy cannot start before the current one");
                }
                let tenancy = Tenancy { from, history_shared: shared };
                self.meters[m].tenancy = Some(tenancy);
                Outcome::Done(json!({"tenancy_from": from.to_string(), "history_shared": shared}))
            }
            "8.7.1" | "8.7.2" | "8.8.1" | "8.8.2" => {
                let Some(m) = self.meter_index(eui) else { return not_here() };
                let Some(target) = body.get("device").and_then(Value::as_str).and_then(|s| Eui64::parse(s).ok()) else {
                    return refused(RefusalCode::InvalidBody, "device (an EUI-64) is required");
                };
                let Some(other) = self.device(target) else {
                    return refused(RefusalCode::UnknownDevice, format!("no device {target} at this premises"));
                };
                // Type 1 devices (PPMID, additional equipment) join by critical command, type
                // 2 devices (in-home displays) by non-critical.
                let type2 = other.kind == DeviceKind::InHomeDisplay;
                let critical = srv.ends_with(".1");
                if matches!(other.kind, DeviceKind::CommsHub | DeviceKind::ElectricityMeter | DeviceKind::GasMeter) {
                    return refused(RefusalCode::NotSupported, format!("a {:?} is not joined to a meter", other.kind));
                }
                if critical == type2 {
                    let (n, what) = if type2 { (2, "non-critical") } else { (1, "critical") };
                    let wanted = format!("{}.{n}", &srv[..3]);
                    return refused(
                        RefusalCode::NotSupported,
                        format!("{target} is a {:?}: use {wanted} ({what})", other.kind),
                    );
                }
                let mut joined = self.joined(&self.meters[m]);
                if srv.starts_with("8.7") {
                    if !self.han_log.contains(&target) {
                        return refused(
                            RefusalCode::InvalidBody,
                            format!("{target} is not on the comms hub's HAN device log: add it with 8.11 first"),
                        );
                    }
                    if !joined.contains(&target) {
                        if joined.len() >= JOINED_MAX {
                            return refused(
                                RefusalCode::HanLogFull,
                                format!("a meter is joined to at most {JOINED_MAX} devices: unjoin one with 8.8 first"),
                            );
                        }
                        joined.push(target);
                    }
                } else {
                    joined.retain(|e| *e != target);
                }
                self.meters[m].joined = Some(joined.clone());
                Outcome::Done(
                    json!({"meter": eui.to_string(), "joined": joined.iter().map(ToString::to_string).collect::<Vec<_>>()}),
                )
            }
            "8.11" => {
                if kind != DeviceKind::CommsHub {
                    return not_here();
                }
                let list = |k: &str| -> Result<Vec<Eui64>, String> {
                    body.get(k)
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .map(|v| {
                                    v.as_str()
                                        .ok_or("EUI-64 strings".to_string())
                                        .and_then(|s| Eui64::parse(s).map_err(|e| e.to_string()))
                                })
                                .collect()
                        })
                        .unwrap_or_else(|| Ok(Vec::new()))
                };
                let (add, remove) = match (list("add"), list("remove")) {
                    (Ok(a), Ok(r)) => (a, r),
                    (Err(e), _) | (_, Err(e)) => return refused(RefusalCode::InvalidBody, e),
                };
                let mut log = self.han_log.clone();
                log.retain(|e| !remove.contains(e));
                for e in add {
                    if !log.contains(&e) {
                        log.push(e);
                    }
                }
                if log.len() > HAN_LOG_MAX {
                    return refused(
                        RefusalCode::HanLogFull,
                        format!("the HAN device log holds at most {HAN_LOG_MAX} devices"),
                    );
                }
                // A device off the HAN is joined to no meter.
                for i in 0..self.meters.len() {
                    let mut joined = self.joined(&self.meters[i]);
                    if joined.iter().any(|e| !log.contains(e)) {
                        joined.retain(|e| log.contains(e));
                        self.meters[i].joined = Some(joined);
                    }
                }
                self.han_log = log;
                let joins: Vec<Value> = self
                    .meters
                    .iter()
                    .map(|m| json!({"meter": m.eui.to_string(), "joined": self.joined(m).iter().map(ToString::to_string).collect::<Vec<_>>()}))
                    .collect();
                Outcome::Done(
                    json!({"han_log": self.han_log.iter().map(ToString::to_string).collect::<Vec<_>>(), "joins": joins}),
                )
            }
            _ => refused(RefusalCode::NotSupported, format!("SRV {srv} is not supported by this device")),
        }
    }

    /// Apply every held product change whose time is at or before `now`, in time order, each
    /// at its own instant: consistent ones take effect with a register snapshot, others fail
    /// and change nothing. Both are recorded for the supplier (R-PM-4, R-PM-5).
    pub fn settle(&mut self, now: Timestamp) {
        self.report_outage(now);
        for i in 0..self.devices.len() {
            if let Some(p) = self.devices[i].fw.pending.clone().filter(|p| p.at <= now) {
                self.devices[i].fw.pending = None;
                let result = self.switch_image(i, p.at, &p.image_hash);
                let (code, detail) = match &result {
                    Ok(_) => (ALERT_FUTURE_DATED_OK, format!("firmware {} activated at {}", p.image_hash, p.at)),
                    Err(why) => (ALERT_FUTURE_DATED_FAILED, format!("firmware activation failed: {why}")),
                };
                let data = json!({"request_id": p.request_id, "image_hash": p.image_hash});
                self.device_alert(i, p.at, code, detail, Some(data));
            }
        }
        for m in 0..self.meters.len() {
            loop {
                let due = self.meters[m]
                    .pending
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.at <= now)
                    .min_by_key(|(_, p)| (p.at, p.seq))
                    .map(|(i, _)| i);
                let Some(i) = due else { break };
                let p = self.meters[m].pending.remove(i);
                let consumption = self.consumption(&self.meters[m]);
                let import_wh = consumption.registers_at(p.at).import_wh;
                let meter = &mut self.meters[m];
                // Charges up to the change are at the old product's prices.
                meter.prepay.accrue(&consumption, &meter.product, &mut meter.supply, p.at);
                let after = meter.product.with(&p.change);
                let activation = match after.check() {
                    Ok(()) => {
                        let before = std::mem::replace(&mut meter.product, after.clone());
                        meter.prepay.product_changed(p.at, &before, &after, &mut meter.supply);
                        Activation {
                            request_id: p.request_id,
                            srv: change_srv(&p.change),
                            at: p.at,
                            alert: ALERT_FUTURE_DATED_OK,
                            failure: None,
                            import_wh,
                            product: Some(after),
                        }
                    }
                    Err(e) => Activation {
                        request_id: p.request_id,
                        srv: change_srv(&p.change),
                        at: p.at,
                        alert: ALERT_FUTURE_DATED_FAILED,
                        failure: Some(e.to_string()),
                        import_wh,
                        product: None,
                    },
                };
                // The supplier's confirmation (R-PM-5): the result, the reading, the product.
                let detail = match &activation.failure {
                    None => format!("SRV {} held for {} took effect", activation.srv, activation.at),
                    Some(why) => format!("SRV {} held for {} failed: {why}", activation.srv, activation.at),
                };
                let data = json!({"request_id": activation.request_id, "srv": activation.srv,
                                  "import_wh": activation.import_wh, "product": activation.product});
                meter.prepay.record(activation.at, activation.alert, detail, Some(data));
                if meter.activations.len() == ACTIVATIONS_KEPT {
                    meter.activations.remove(0);
                }
                meter.activations.push(activation);
            }
            let consumption = self.consumption(&self.meters[m]);
            let Meter { prepay, product, supply, .. } = &mut self.meters[m];
            prepay.accrue(&consumption, product, supply, now);
        }
    }

    /// A product change (1.1.1, 1.2.1, 1.6, 2.1): applied now, or held until the command's
    /// execution time. Either way the meter first checks that the product it would make is
    /// consistent, and refuses the whole change with the rule if not (R-PM-2).
    fn product_change(&mut self, now: Timestamp, index: usize, cmd: Command, body: &Value) -> Outcome {
        let eui = self.devices[index].eui;
        let Some(m) = self.meter_index(eui) else {
            return refused(RefusalCode::NotSupported, format!("SRV {} is for a meter", cmd.srv));
        };
        let change = match Change::parse(&cmd.srv, body) {
            Ok(c) => c,
            Err(e) => return refused(RefusalCode::InvalidBody, e.to_string()),
        };
        let meter = &mut self.meters[m];
        let request_id = cmd.id.to_string();
        match cmd.execute_at.filter(|at| *at > now) {
            None => {
                let after = meter.product.with(&change);
                if let Err(e) = after.check() {
                    return refused(RefusalCode::Inconsistent, format!("{e}; nothing was applied"));
                }
                let before = std::mem::replace(&mut meter.product, after.clone());
                meter.prepay.product_changed(now, &before, &after, &mut meter.supply);
                Outcome::Done(json!({"applied_at": now.to_string(), "product": after}))
            }
            Some(at) => {
                if at > now + SignedDuration::from_hours(24 * PENDING_DAYS_MAX) {
                    return refused(RefusalCode::InvalidBody, format!("at most {PENDING_DAYS_MAX} days ahead"));
                }
                if at.as_second().rem_euclid(1800) != 0 {
                    return refused(
                        RefusalCode::InvalidBody,
                        "a held product change takes effect on a half hour (charges are per half hour)",
                    );
                }
                // A change of the same SRV already held is replaced, and its replacement
                // takes its place among changes held for the same instant.
                let superseded = meter.pending.iter().position(|p| change_srv(&p.change) == cmd.srv);
                let seq = match superseded {
                    Some(i) if meter.pending[i].at == at => meter.pending[i].seq,
                    _ => meter.pending.iter().map(|p| p.seq + 1).max().unwrap_or(0),
                };
                // Judged against the product as it will be then: the changes held to take
                // effect before it, in order, then this one.
                let mut then = meter.product.clone();
                let mut earlier: Vec<&PendingChange> = meter
                    .pending
                    .iter()
                    .filter(|p| (p.at, p.seq) < (at, seq) && change_srv(&p.change) != cmd.srv)
                    .collect();
                earlier.sort_by_key(|p| (p.at, p.seq));
                for p in earlier {
                    then = then.with(&p.change);
                }
                if let Err(e) = then.with(&change).check() {
                    return refused(
                        RefusalCode::Inconsistent,
                        format!("{e} (as it would be at {at}); nothing was held"),
                    );
                }
                let superseded = superseded.map(|i| meter.pending.remove(i).request_id);
                meter.pending.push(PendingChange { request_id, at, seq, change });
                Outcome::Done(json!({"held_until": at.to_string(), "superseded": superseded}))
            }
        }
    }

    /// A meter's key-agreement public point (65 bytes), as its certificate carries it.
    pub fn key_agreement_point(&self, eui: Eui64) -> Option<Vec<u8>> {
        self.device(eui)?;
        Some(self.key_agreement_key(eui).public_point())
    }

    fn key_agreement_key(&self, eui: Eui64) -> KeyAgreementKey {
        KeyAgreementKey::from_scalar(&keys::device_scalar(self.seed, eui, KeyUse::KeyAgreement))
            .expect("derived scalars are valid")
    }

    /// A UTRN typed on the keypad (the meter's or the PPMID's): checked and credited exactly
    /// as one sent with SRV 2.2.
    pub fn keypad_entry(&mut self, now: Timestamp, meter: Eui64, utrn: &str) -> Outcome {
        if self.meter_index(meter).is_none() {
            return refused(RefusalCode::UnknownDevice, format!("no meter {meter} here"));
        }
        self.settle(now);
        self.credit_utrn(now, meter, utrn)
    }

    /// The consumer takes emergency credit on the keypad (or the PPMID).
    pub fn keypad_emergency_credit(&mut self, now: Timestamp, meter: Eui64) -> Outcome {
        let Some(m) = self.meter_index(meter) else {
            return refused(RefusalCode::UnknownDevice, format!("no meter {meter} here"));
        };
        self.settle(now);
        self.emergency_credit(now, m)
    }

    /// When this system next has something to do by itself after `now`: a held change
    /// taking effect, or, for a prepayment meter, the first half hour in the next day whose
    /// charging raises an event (low credit, emergency credit, disablement ...); a quiet
    /// prepayment meter is looked at again a day on. `None`: nothing until told.
    pub fn next_wake(&self, now: Timestamp) -> Option<Timestamp> {
        let mut wake: Option<Timestamp> = None;
        let mut earliest = |t: Timestamp| wake = Some(wake.map_or(t, |w: Timestamp| w.min(t)));
        if let Some(o) = self.outage.filter(|o| !o.reported) {
            earliest(o.since + OUTAGE_REPORT_AFTER);
        }
        for d in &self.devices {
            if let Some(p) = &d.fw.pending {
                earliest(p.at);
            }
        }
        for m in &self.meters {
            for p in &m.pending {
                earliest(p.at);
            }
            if m.product.payment_mode == domain::product::PaymentMode::Prepayment {
                let consumption = self.consumption(m);
                let mut probe = m.prepay.clone();
                let mut supply = m.supply;
                let from = probe.settled_to.unwrap_or(now);
                let mut found = None;
                for k in 1..=48 {
                    let t = from + SignedDuration::from_secs(1800 * k);
                    probe.accrue(&consumption, &m.product, &mut supply, t);
                    if probe.event_seq > m.prepay.event_seq {
                        found = Some(t);
                        break;
                    }
                }
                earliest(found.unwrap_or(from + SignedDuration::from_hours(24)));
            }
        }
        wake
    }

    /// Whether any meter here holds events the hub has not taken yet.
    pub fn has_undelivered_events(&self) -> bool {
        self.meters.iter().any(|m| m.prepay.undelivered().any(|e| !m.disabled_alerts.contains(&e.alert)))
    }

    /// Events every meter here has not yet delivered to the hub: (meter, event).
    pub fn undelivered_events(&self) -> Vec<(Eui64, crate::account::MeterEvent)> {
        // An alert the meter was told not to send (6.22) stays in its log only.
        let mut all: Vec<(Eui64, crate::account::MeterEvent)> = self
            .meters
            .iter()
            .flat_map(|m| {
                m.prepay
                    .undelivered()
                    .filter(|e| !m.disabled_alerts.contains(&e.alert))
                    .map(move |e| (m.eui, e.clone()))
            })
            .collect();
        // Each meter's alerts in its own order (device numbers), meter by meter.
        all.sort_by_key(|(eui, e)| (*eui, e.seq));
        all
    }

    /// The hub has the events up to `seq` of `meter`.
    pub fn mark_delivered(&mut self, meter: Eui64, seq: u64) {
        if let Some(m) = self.meters.iter_mut().find(|m| m.eui == meter) {
            m.prepay.delivered_seq = m.prepay.delivered_seq.max(seq);
        }
    }

    /// An alert about device `index`: recorded by the device if it is a meter, else by the
    /// premises' power meter on its behalf (the data names the device).
    fn device_alert(&mut self, index: usize, at: Timestamp, code: u16, detail: String, data: Option<Value>) {
        let eui = self.devices[index].eui;
        let m = match self.meter_index(eui) {
            Some(m) => m,
            None if !self.meters.is_empty() => self.power_meter(),
            None => return,
        };
        let mut data = data.unwrap_or_else(|| json!({}));
        data["device"] = json!(eui.to_string());
        self.meters[m].prepay.record(at, code, detail, Some(data));
    }

    /// SRV 11.1 at the device: check the image it received against the manufacturer's
    /// signed manifest and hold it for activation (alert 0x8F72), or refuse it (0x8F1C).
    fn receive_image(&mut self, now: Timestamp, index: usize, body: &Value, image: Option<&[u8]>) -> Outcome {
        use base64::Engine as _;
        let manifest = body.get("manifest").cloned().map(serde_json::from_value::<Manifest>);
        let signature = body
            .get("signature")
            .and_then(Value::as_str)
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok());
        let (Some(Ok(manifest)), Some(signature), Some(image)) = (manifest, signature, image) else {
            return refused(RefusalCode::InvalidBody, "give manifest, signature (base64) and the image");
        };
        let device = &self.devices[index];
        let kind = kind_text(device.kind);
        let failure = if let Err((field, rule)) = manifest.check() {
            Some((RefusalCode::InvalidBody, format!("manifest {field}: {rule}")))
        } else if manifest.device_kind != kind {
            Some((RefusalCode::NotSupported, format!("the image is for a {}, this is a {kind}", manifest.device_kind)))
        } else if let Some(anchor) = device.manufacturer.as_ref() {
            if !verify_p256(&anchor.spki, &manifest.signed_bytes(), &signature) {
                Some((
                    RefusalCode::SignatureInvalid,
                    "the manifest's signature does not verify with the manufacturer's key".to_string(),
                ))
            } else if fwm::hex(&domain::crypto::sha256(image)) != manifest.image_hash {
                Some((
                    RefusalCode::SignatureInvalid,
                    "the image received does not hash to the signed manifest's hash".to_string(),
                ))
            } else if fwm::older(&manifest.version, &running_version(device, manifest.layer)) {
                Some((
                    RefusalCode::InvalidBody,
                    format!(
                        "version {} is older than the running {} (no rollback)",
                        manifest.version,
                        running_version(device, manifest.layer)
                    ),
                ))
            } else if manifest.layer == Layer::Application
                && manifest.supplier != device.supplier.as_ref().map(|s| s.originator)
            {
                Some((RefusalCode::NotEntitled, "the application layer belongs to another supplier".to_string()))
            } else {
                None
            }
        } else {
            Some((RefusalCode::UntrustedOriginator, "this device holds no manufacturer key".to_string()))
        };
        if let Some((code, why)) = failure {
            self.device_alert(
                index,
                now,
                fwm::ALERT_FIRMWARE_VERIFICATION_FAILED,
                format!("firmware {} {} refused: {why}", manifest.layer.as_str(), manifest.version),
                Some(json!({"image_hash": manifest.image_hash})),
            );
            return refused(code, format!("{why} (alert 0x8F1C); the running image is kept"));
        }
        let d = &mut self.devices[index];
        d.fw.held.retain(|m| m.layer != manifest.layer);
        d.fw.held.push(manifest.clone());
        self.device_alert(
            index,
            now,
            fwm::ALERT_FIRMWARE_VERIFIED,
            format!("firmware {} {} verified and held", manifest.layer.as_str(), manifest.version),
            Some(json!({"image_hash": manifest.image_hash})),
        );
        Outcome::Done(json!({"image_hash": manifest.image_hash, "layer": manifest.layer,
                             "version": manifest.version, "held": true}))
    }

    /// SRV 11.3: activate a held image now, or hold the activation until `execute_at`.
    fn activate(&mut self, now: Timestamp, index: usize, cmd: &Command, body: &Value) -> Outcome {
        let Some(hash) = body.get("image_hash").and_then(Value::as_str).map(str::to_string) else {
            return refused(RefusalCode::InvalidBody, "image_hash is required");
        };
        if !self.devices[index].fw.held.iter().any(|m| m.image_hash == hash) {
            return refused(
                RefusalCode::InvalidBody,
                format!("no image {hash} is held (distribute it with 11.1 first); the running image is kept"),
            );
        }
        match cmd.execute_at.filter(|at| *at > now) {
            Some(at) => {
                let request_id = cmd.id.to_string();
                self.devices[index].fw.pending = Some(PendingActivation { request_id, at, image_hash: hash.clone() });
                Outcome::Done(json!({"image_hash": hash, "activates_at": at.to_string()}))
            }
            None => match self.switch_image(index, now, &hash) {
                Ok(v) => Outcome::Done(v),
                Err(why) => refused(RefusalCode::InvalidBody, format!("{why}; the running image is kept")),
            },
        }
    }

    /// Make a held image the running one. 0x8F43 only when the running version changes.
    fn switch_image(&mut self, index: usize, at: Timestamp, hash: &str) -> Result<Value, String> {
        let d = &mut self.devices[index];
        let Some(pos) = d.fw.held.iter().position(|m| m.image_hash == hash) else {
            return Err(format!("no image {hash} is held"));
        };
        let m = d.fw.held[pos].clone();
        let before = match m.layer {
            Layer::Core => d.firmware.clone(),
            Layer::Application => d.fw.application.as_ref().map(|a| a.version.clone()).unwrap_or_default(),
        };
        match (m.layer, m.supplier) {
            (Layer::Core, _) => {
                d.firmware = m.version.clone();
                d.fw.core_hash = Some(m.image_hash.clone());
            }
            (Layer::Application, Some(supplier)) => {
                d.fw.application = Some(fwm::Application {
                    version: m.version.clone(),
                    image_hash: m.image_hash.clone(),
                    supplier,
                    enabled: true,
                });
            }
            (Layer::Application, None) => return Err("an application layer names its supplier".into()),
        }
        d.fw.held.remove(pos);
        let changed = before != m.version;
        if changed {
            self.device_alert(
                index,
                at,
                fwm::ALERT_FIRMWARE_CHANGED,
                format!("{} firmware {before} -> {}", m.layer.as_str(), m.version),
                Some(json!({"layer": m.layer, "from": before, "to": m.version, "image_hash": m.image_hash})),
            );
        }
        Ok(json!({"layer": m.layer, "running": m.version, "image_hash": m.image_hash, "changed": changed}))
    }

    /// The meter that speaks for the premises' power: the electricity meter, else the first.
    fn power_meter(&self) -> usize {
        self.meters.iter().position(|m| m.fuel == Fuel::Electricity).unwrap_or(0)
    }

    /// The comms hub reports an outage that has lasted [`OUTAGE_REPORT_AFTER`], once.
    fn report_outage(&mut self, now: Timestamp) {
        let Some(o) = self.outage.filter(|o| !o.reported && o.since + OUTAGE_REPORT_AFTER <= now) else { return };
        if self.meters.is_empty() {
            return;
        }
        let m = self.power_meter();
        let at = o.since + OUTAGE_REPORT_AFTER;
        self.meters[m].prepay.record(
            at,
            ALERT_SUPPLY_INTERRUPTED,
            format!("power lost at {} (over 3 minutes)", o.since),
            Some(json!({"since": o.since.to_string()})),
        );
        self.outage = Some(Outage { reported: true, ..o });
    }

    /// Simulation: the premises loses mains power.
    pub fn power_off(&mut self, now: Timestamp) {
        self.settle(now);
        if self.outage.is_none() {
            self.outage = Some(Outage { since: now, reported: false });
        }
    }

    /// Simulation: power returns. The meter reports the restoration, as a long outage (3
    /// minutes or more) or a short one.
    pub fn power_on(&mut self, now: Timestamp) {
        self.settle(now);
        let Some(o) = self.outage.take() else { return };
        if self.meters.is_empty() {
            return;
        }
        let lasted = now.duration_since(o.since);
        let long = lasted >= OUTAGE_REPORT_AFTER;
        let code = if long { ALERT_OUTAGE_RESTORED_LONG } else { ALERT_OUTAGE_RESTORED };
        let m = self.power_meter();
        self.meters[m].prepay.record(
            now,
            code,
            format!("power restored after {} s", lasted.as_secs()),
            Some(json!({"since": o.since.to_string(), "seconds": lasted.as_secs()})),
        );
    }

    /// Simulation: someone tampers with a meter (one of [`TAMPER_ALERTS`]).
    pub fn tamper(&mut self, now: Timestamp, meter: Eui64, code: u16) -> Outcome {
        let Some(m) = self.meter_index(meter) else {
            return refused(RefusalCode::UnknownDevice, format!("no meter {meter} here"));
        };
        if !TAMPER_ALERTS.contains(&code) {
            return refused(RefusalCode::InvalidBody, format!("0x{code:04X} is not a tamper alert"));
        }
        self.settle(now);
        let name = domain::alerts::name(code).unwrap_or("tamper");
        self.meters[m].prepay.record(now, code, name.to_string(), None);
        Outcome::Done(json!({"meter": meter.to_string(), "alert": format!("0x{code:04X}")}))
    }

    /// The consumer presses the button that restores an armed supply.
    pub fn keypad_restore_supply(&mut self, now: Timestamp, meter: Eui64) -> Outcome {
        let Some(m) = self.meter_index(meter) else {
            return refused(RefusalCode::UnknownDevice, format!("no meter {meter} here"));
        };
        self.settle(now);
        let meter = &mut self.meters[m];
        if meter.supply != Supply::Armed {
            return refused(RefusalCode::Inconsistent, format!("the supply is {:?}, not armed", meter.supply));
        }
        if !meter.prepay.may_restore(&meter.product) {
            return refused(RefusalCode::Inconsistent, "no credit: top up (or take emergency credit) first");
        }
        meter.supply = Supply::Enabled;
        Outcome::Done(json!({"supply": meter.supply}))
    }

    fn emergency_credit(&mut self, now: Timestamp, m: usize) -> Outcome {
        let Meter { prepay, product, supply, .. } = &mut self.meters[m];
        match prepay.activate_emergency_credit(now, product, supply) {
            Ok(combined) => Outcome::Done(
                json!({"emergency_credit": "active", "combined_credit_pence": combined, "supply": supply}),
            ),
            Err(why) => refused(RefusalCode::Inconsistent, why),
        }
    }

    /// SRV 6.23 (R-COS-3, R-COS-5): from `effective_at`, the meter, and the devices that
    /// follow its supplier, hold the incoming supplier's credentials; the outgoing supplier's
    /// period on the meter ends there and is remembered, so it can still read it. Answers the
    /// definitive reading at the switch instant. The same credentials at the same instant again
    /// are answered the same way and change nothing.
    fn replace_supplier(&mut self, now: Timestamp, m: usize, body: &Value) -> Outcome {
        let at = body.get("effective_at").and_then(Value::as_str).and_then(|s| s.parse::<Timestamp>().ok());
        let anchor = body.get("supplier").cloned().map(serde_json::from_value::<TrustAnchor>);
        let (Some(at), Some(Ok(anchor))) = (at, anchor) else {
            return refused(
                RefusalCode::InvalidBody,
                "give effective_at (RFC 3339) and supplier {originator, spki, prepayment}",
            );
        };
        if at > now {
            return refused(RefusalCode::InvalidBody, "effective_at is in the future: the hub holds 6.23 until then");
        }
        let meter_eui = self.meters[m].eui;
        let fuel = self.meters[m].fuel;
        // The premises' other devices follow the electricity supplier, or the gas supplier
        // where there is no electricity meter.
        let governs = fuel == Fuel::Electricity || self.meter_for(Fuel::Electricity).is_none();
        let euis: Vec<Eui64> = self
            .devices
            .iter()
            .filter(|d| {
                d.eui == meter_eui
                    || (governs && !matches!(d.kind, DeviceKind::ElectricityMeter | DeviceKind::GasMeter))
            })
            .map(|d| d.eui)
            .collect();
        let current = self.device(meter_eui).and_then(|d| d.supplier.clone());
        let meter = &self.meters[m];
        let repeat = current.as_ref() == Some(&anchor) && meter.supplier_data_from == at;
        if !repeat {
            if at <= meter.supplier_data_from {
                return refused(
                    RefusalCode::InvalidBody,
                    format!(
                        "effective_at must be after the current supplier's start here, {}",
                        meter.supplier_data_from
                    ),
                );
            }
            let last_counters: Vec<(Eui64, u64)> =
                self.devices.iter().filter(|d| euis.contains(&d.eui)).map(|d| (d.eui, d.last_counter)).collect();
            let meter = &mut self.meters[m];
            // A supplier coming back finds its own counters again; a new one starts afresh.
            let returning = meter.former_suppliers.iter().rev().find(|p| p.originator == anchor.originator);
            let (utrn_cache, counters) =
                returning.map_or((Default::default(), Vec::new()), |p| (p.utrn_cache.clone(), p.last_counters.clone()));
            if current.is_none() {
                meter.prepay.utrn_cache = utrn_cache.clone();
            }
            if let Some(old) = current {
                if meter.former_suppliers.len() >= FORMER_SUPPLIERS_KEPT {
                    meter.former_suppliers.remove(0);
                }
                meter.former_suppliers.push(SupplierPeriod {
                    originator: old.originator,
                    from: meter.supplier_data_from,
                    to: at,
                    utrn_cache: std::mem::replace(&mut meter.prepay.utrn_cache, utrn_cache),
                    last_counters,
                });
            }
            meter.supplier_data_from = at;
            // The outgoing supplier's held changes are its own.
            meter.pending.clear();
            for d in self.devices.iter_mut().filter(|d| euis.contains(&d.eui)) {
                // The outgoing supplier's application layer stops until the new supplier
                // installs its own; its held application images go.
                if let Some(app) = d.fw.application.as_mut() {
                    app.enabled = app.supplier == anchor.originator;
                }
                d.fw.held.retain(|m| m.layer == Layer::Core);
                // The outgoing supplier's agent goes with it, and its held activation.
                d.agent = None;
                d.fw.pending = None;
                d.supplier = Some(anchor.clone());
                d.last_counter = counters.iter().find(|(e, _)| *e == d.eui).map_or(0, |(_, c)| *c);
            }
        }
        let meter = &self.meters[m];
        let r = self.consumption(meter).registers_at(at);
        let mut reading = json!({"at": at.to_string(), "import_wh": r.import_wh});
        if let Some(n) = r.night_wh {
            reading["night_wh"] = json!(n);
            reading["day_wh"] = json!(r.import_wh - n);
        }
        if fuel == Fuel::Gas {
            reading["volume_litres"] = json!(gas_litres(r.import_wh));
        }
        Outcome::Done(json!({
            "supplier": anchor.originator.to_string(),
            "effective_at": at.to_string(),
            "devices": euis.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "definitive_reading": reading,
        }))
    }

    /// Check a UTRN against the trusted supplier's prepayment key and this meter's key, and
    /// credit it once (GBCS 14).
    fn credit_utrn(&mut self, now: Timestamp, eui: Eui64, utrn: &str) -> Outcome {
        let Some(m) = self.meter_index(eui) else {
            return refused(RefusalCode::NotSupported, format!("device {eui} is not a meter"));
        };
        let Some(anchor) = self.device(eui).and_then(|d| d.supplier.clone()) else {
            return refused(RefusalCode::UntrustedOriginator, "this meter trusts no supplier");
        };
        let Some(point) = anchor.prepayment else {
            return refused(RefusalCode::NotSupported, "the trusted supplier has no prepayment key on this meter");
        };
        let Ok(z) = self.key_agreement_key(eui).shared_secret(&point) else {
            return refused(RefusalCode::UtrnRejected, "the supplier's prepayment key is unusable (alert 0x8F63)");
        };
        let Meter { prepay, supply, product, .. } = &mut self.meters[m];
        match prepay.utrn_cache.accept(&z, anchor.originator, eui, utrn) {
            Ok(a) => {
                prepay.credit(now, a.pence(), supply, product);
                Outcome::Done(json!({
                    "credited_pence": a.pence(),
                    "balance_pence": prepay.balance_pence(),
                    "supply": supply,
                    "counter": format!("{:#x}", a.counter),
                    "value": a.value,
                    "class": a.class.as_str(),
                }))
            }
            Err(e) => {
                let alert = e.alert().map(|c| format!(" (alert 0x{c:04X})")).unwrap_or_default();
                // The supplier hears of every refused UTRN (R-PAY-4).
                if let Some(code) = e.alert() {
                    prepay.record(now, code, format!("UTRN {utrn} refused: {e}"), None);
                }
                refused(RefusalCode::UtrnRejected, format!("{e}{alert}"))
            }
        }
    }

    /// The read window: what was asked, within what the meter keeps, what the hub says the
    /// requester may see, and (for the supplier) never before the supplier's period here.
    fn window(
        &self,
        m: usize,
        now: Timestamp,
        keep_days: i64,
        body: &Value,
        access: Access,
        originator: Eui64,
    ) -> Result<(Timestamp, Timestamp), Outcome> {
        let parse = |k: &str| -> Result<Option<Timestamp>, Outcome> {
            match body.get(k).and_then(Value::as_str) {
                None => Ok(None),
                Some(s) => s
                    .parse()
                    .map(Some)
                    .map_err(|_| refused(RefusalCode::InvalidBody, format!("{k} is not an RFC 3339 instant"))),
            }
        };
        let kept_from = now - SignedDuration::from_hours(24 * keep_days);
        let mut from = parse("from")?.unwrap_or(kept_from).max(kept_from).max(self.installed_at);
        let mut to = parse("to")?.unwrap_or(now).min(now);
        if let Some(f) = access.from {
            from = from.max(f);
        }
        if let Some(t) = access.to {
            to = to.min(t);
        }
        let meter = &self.meters[m];
        match access.requester {
            Requester::Supplier => from = from.max(meter.supplier_data_from),
            // A former supplier reads only inside its own period here, whatever it asks: the
            // latest of its periods that begins before the end of what it asks.
            Requester::FormerSupplier => {
                let own = || meter.former_suppliers.iter().rev().filter(|p| p.originator == originator);
                let Some(p) = own().find(|p| p.from < to).or_else(|| own().next()) else {
                    return Err(refused(
                        RefusalCode::NotEntitled,
                        format!("originator {originator} held no supply period on this meter that it remembers"),
                    ));
                };
                from = from.max(p.from);
                to = to.min(p.to);
            }
            // Other users serve the tenant: nothing from before the tenancy unless shared.
            Requester::OtherUser => {
                if let Some(t) = meter.tenancy.and_then(|t| t.data_from()) {
                    from = from.max(t);
                }
            }
            Requester::ExportSupplier | Requester::NetworkOperator => {}
        }
        Ok((from, to.max(from)))
    }

    /// What the in-home display shows.
    pub fn ihd_view(&self, now: Timestamp) -> Value {
        self.view(now, None)
    }

    /// What one display (in-home display or PPMID) shows: only the meters it is joined to,
    /// nothing when it is off the HAN. Any other device shows every meter (the premises).
    pub fn display_view(&self, now: Timestamp, eui: Eui64) -> Value {
        let display = self.device(eui).is_some_and(|d| matches!(d.kind, DeviceKind::InHomeDisplay | DeviceKind::Ppmid));
        self.view(now, display.then_some(eui))
    }

    fn view(&self, now: Timestamp, display: Option<Eui64>) -> Value {
        let mut settled = self.clone();
        settled.settle(now);
        let meters: Vec<Value> = settled
            .meters
            .iter()
            .filter(|m| display.is_none_or(|d| settled.han_log.contains(&d) && settled.joined(m).contains(&d)))
            .map(|m| {
                let consumption = settled.consumption(m);
                let r = consumption.registers_at(now);
                // The last days' use, never from before the tenancy unless it was shared.
                let today = domain::time::london_date(now);
                let mut first = today.checked_sub(jiff::ToSpan::days(IHD_DAYS)).expect("in range");
                if let Some(t) = m.tenancy.and_then(|t| t.data_from()) {
                    first = first.max(whole_day_at_or_after(t));
                }
                let days: Vec<Value> = if first < today {
                    consumption.days(first, today).iter().map(|(d, wh)| json!([d.to_string(), wh])).collect()
                } else {
                    Vec::new()
                };
                json!({"fuel": m.fuel.as_str(), "import_wh": r.import_wh, "supply": m.supply, "days": days,
                       "balance_pence": m.prepay.balance_pence(), "payment_mode": m.product.payment_mode,
                       "debt_pence": m.prepay.debt_pence, "emergency_credit_active": m.prepay.emergency_credit_active,
                       "combined_credit_pence": m.prepay.combined_credit_pence(&m.product)})
            })
            .collect();
        json!({"message": settled.display.as_ref().map(|d| &d.text), "meters": meters})
    }
}

fn whole_day_at_or_after(t: Timestamp) -> jiff::civil::Date {
    let d = domain::time::london_date(t);
    let start = domain::time::start_of_london_day(d).expect("day");
    if start == t { d } else { d.tomorrow().expect("in range") }
}

fn change_srv(c: &Change) -> String {
    match c {
        Change::Tariff { .. } => "1.1.1",
        Change::Prices { .. } => "1.2.1",
        Change::PaymentMode { .. } => "1.6",
        Change::Prepay { .. } => "2.1",
    }
    .to_string()
}

/// Gas volume for energy, with the standard calorific value (39.5 MJ/m³) and correction
/// factor (1.02264).
pub fn gas_litres(wh: u64) -> u64 {
    // litres = Wh × 3.6 kJ/Wh ÷ (39.5 MJ/m³ × 1.02264) × 1000 l/m³
    (u128::from(wh) * 3_600_000_000 / 40_394_280_000) as u64
}

fn parse_alert_code(s: &str) -> Option<u16> {
    u16::from_str_radix(s.trim_start_matches("0x").trim_start_matches("0X"), 16).ok()
}

/// A device kind as the hub and manifests write it.
pub fn kind_text(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::CommsHub => "comms-hub",
        DeviceKind::ElectricityMeter => "electricity-meter",
        DeviceKind::GasMeter => "gas-meter",
        DeviceKind::InHomeDisplay => "in-home-display",
        DeviceKind::Ppmid => "ppmid",
        DeviceKind::Additional => "additional",
    }
}

/// The running version of a layer on a device ("" when it runs none).
fn running_version(d: &Device, layer: Layer) -> String {
    match layer {
        Layer::Core => d.firmware.clone(),
        Layer::Application => d.fw.application.as_ref().map(|a| a.version.clone()).unwrap_or_default(),
    }
}
