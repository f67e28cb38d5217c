//! How the hub reaches devices: only through this trait. In-process today (`fleet`); a
//! networked fleet in separate processes later. The hub never reads device state.

use async_trait::async_trait;
use device::{Access, DeviceKind, LoadShape, Outcome, TrustAnchor};
use domain::Eui64;

/// What an installer fits at a premises (the simulation's stand-in for a site visit).
#[derive(Debug, Clone)]
pub struct InstallOrder {
    pub electricity: Option<LoadShape>,
    pub gas_annual_quantity_kwh: Option<u64>,
    pub ihd: bool,
    pub ppmid: bool,
    pub additional: u8,
    /// The installing supplier, whose key the devices trust from the factory.
    pub supplier: TrustAnchor,
    /// The hub's change-of-supplier key (SubjectPublicKeyInfo DER), which SRV 6.23 is
    /// signed with.
    pub cos_key: Option<std::sync::Arc<[u8]>>,
    /// The manufacturer whose signed firmware the devices accept.
    pub manufacturer: Option<TrustAnchor>,
}

/// Devices fitted, the comms hub first.
#[derive(Debug, Clone)]
pub struct Installed {
    pub comms_hub: Eui64,
    pub devices: Vec<(Eui64, DeviceKind)>,
}

/// A command on its way to a device.
#[derive(Debug, Clone)]
pub struct DeviceMessage {
    pub target: Eui64,
    /// The exact pre-command bytes.
    pub bytes: Vec<u8>,
    pub signature: Option<Vec<u8>>,
    pub access: Access,
    /// A firmware image downloaded with the command (SRV 11.1).
    pub image: Option<std::sync::Arc<Vec<u8>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("no device {0} is reachable")]
    Unreachable(Eui64),
    #[error("transport failure: {0}")]
    Failed(String),
}

#[async_trait]
pub trait DeviceTransport: Send + Sync + 'static {
    /// Fit devices at a new premises.
    async fn install(&self, order: InstallOrder) -> Result<Installed, TransportError>;
    /// An installer fits one more device at the premises of `at` (any of its devices): the
    /// new device's EUI. Not on the HAN until 8.11 and 8.7 put it there.
    async fn fit(&self, at: Eui64, kind: DeviceKind) -> Result<Eui64, TransportError>;
    /// Deliver a command and wait for the device's answer. Delivering the same command again
    /// (after a crash) returns the first answer and does not run it twice.
    async fn send(&self, message: DeviceMessage) -> Result<Outcome, TransportError>;
    /// A dispatch round is about to send commands to these devices. A transport may get
    /// ready for them all at once (the fleet reads their systems from its database together
    /// rather than one by one). A hint only: sends work the same without it, and its
    /// failures are left to the sends to meet.
    async fn prepare(&self, _targets: &[Eui64]) {}
    /// A meter's key-agreement public point (65 bytes), as its certificate in the SMKI
    /// repository carries it: public, not device state.
    async fn key_agreement_point(&self, eui: Eui64) -> Result<Vec<u8>, TransportError>;
    /// Simulation only: what the in-home display at the device's premises shows.
    async fn display(&self, eui: Eui64) -> Result<serde_json::Value, TransportError>;
    /// Simulation only: the consumer at home acts on a meter's keypad.
    async fn consumer(&self, meter: Eui64, action: ConsumerAction) -> Result<Outcome, TransportError>;
    /// Where devices' alerts go: given once, when the hub attaches the transport.
    fn attach_alert_sink(&self, sink: std::sync::Arc<dyn AlertSink>);
}

/// An alert a device raised, numbered by the device (1, 2, 3 ...).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceAlert {
    pub device: Eui64,
    pub seq: u64,
    pub at: jiff::Timestamp,
    pub code: u16,
    pub detail: String,
    pub data: Option<serde_json::Value>,
}

/// The hub's side of device alerts. A transport delivers each device's alerts in order and
/// again until this returns `Ok` (so at least once); the hub stores each once.
#[async_trait]
pub trait AlertSink: Send + Sync + 'static {
    async fn deliver(&self, alerts: Vec<DeviceAlert>) -> Result<(), String>;
}

/// What a consumer can do at the meter (simulation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerAction {
    /// Type a UTRN.
    EnterUtrn(String),
    /// Take emergency credit.
    EmergencyCredit,
    /// Press the button that restores an armed supply.
    RestoreSupply,
}
