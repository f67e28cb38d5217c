//! Firmware on a device (R-FLT-3, R-FLT-4): layered images (the manufacturer's core, and a
//! supplier-specific application), each signed by the manufacturer over a manifest and
//! checked by the device against the manufacturer key it was built with and the hash of the
//! bytes it received. A verified image is held until activated (SRV 11.3, possibly at a
//! future instant); a failed verification or activation leaves the running image as it was.

use domain::Eui64;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Largest image (DUIS: 10,240,000 bytes).
pub const IMAGE_BYTES_MAX: usize = 10_240_000;
/// Longest version text (DUIS: 8 characters).
pub const VERSION_CHARS_MAX: usize = 8;
/// GBCS: firmware verification successful / failed; the executing version changed.
pub const ALERT_FIRMWARE_VERIFIED: u16 = 0x8F72;
pub const ALERT_FIRMWARE_VERIFICATION_FAILED: u16 = 0x8F1C;
pub const ALERT_FIRMWARE_CHANGED: u16 = 0x8F43;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layer {
    /// The manufacturer's core firmware.
    Core,
    /// A supplier-specific application: belongs to its supplier, and runs only while the
    /// device trusts that supplier.
    Application,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Core => "core",
            Layer::Application => "application",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Urgency {
    /// A security patch: rolled out before routine updates.
    Security,
    Routine,
}

impl Urgency {
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::Security => "security",
            Urgency::Routine => "routine",
        }
    }
}

/// What the manufacturer signs: the image's hash and what it is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// SHA-256 of the image, lower-case hex.
    pub image_hash: String,
    pub layer: Layer,
    pub version: String,
    /// The kind of device it runs on: `electricity-meter`, `gas-meter`, `comms-hub`, ...
    pub device_kind: String,
    /// An application layer's supplier (its originator EUI); `None` for core images.
    pub supplier: Option<Eui64>,
    pub urgency: Urgency,
}

impl Manifest {
    /// The exact bytes the manufacturer's signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        format!(
            "meterhub-firmware-v1\n{}\n{}\n{}\n{}\n{}\n{}\n",
            self.image_hash,
            self.layer.as_str(),
            self.version,
            self.device_kind,
            self.supplier.map_or("-".to_string(), |s| s.to_string()),
            self.urgency.as_str()
        )
        .into_bytes()
    }

    /// The manifest's own rules, naming the field that breaks one.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.image_hash.len() != 64
            || !self.image_hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(("image_hash", "64 lower-case hex digits (SHA-256)".into()));
        }
        let n = self.version.chars().count();
        if n == 0 || n > VERSION_CHARS_MAX || !self.version.chars().all(|c| c.is_ascii_graphic()) {
            return Err(("version", format!("1 to {VERSION_CHARS_MAX} printable characters, no spaces")));
        }
        match (self.layer, self.supplier) {
            (Layer::Application, None) => Err(("supplier", "an application layer names its supplier".into())),
            (Layer::Core, Some(_)) => Err(("supplier", "a core image belongs to no supplier".into())),
            _ => Ok(()),
        }
    }
}

/// The running application layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Application {
    pub version: String,
    pub image_hash: String,
    pub supplier: Eui64,
    /// False once the device trusts another supplier, until that one installs its own.
    pub enabled: bool,
}

/// An activation the device holds until its time (SRV 11.3 future-dated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingActivation {
    pub request_id: String,
    pub at: Timestamp,
    pub image_hash: String,
}

/// A device's firmware beyond its core version (kept in `Device::firmware`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firmware {
    /// The running core image's hash (`None`: the factory image).
    pub core_hash: Option<String>,
    pub application: Option<Application>,
    /// Verified images waiting for activation, at most one per layer.
    pub held: Vec<Manifest>,
    pub pending: Option<PendingActivation>,
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether version `a` is older than `b`: compared as dot-separated numbers where both are
/// (`2.10.0` > `2.9.1`), else as text. An empty `b` (nothing running) is older than anything.
pub fn older(a: &str, b: &str) -> bool {
    if b.is_empty() {
        return false;
    }
    let nums = |v: &str| v.split('.').map(str::parse::<u64>).collect::<Result<Vec<u64>, _>>();
    match (nums(a), nums(b)) {
        (Ok(x), Ok(y)) => x < y,
        _ => a < b,
    }
}
