//! The smart metering system model: meters, comms hub, in-home display, prepayment interface
//! and additional equipment. Pure and deterministic: everything follows from the simulation
//! seed and the instants passed in; no I/O, no clock reads. A device verifies critical
//! commands itself against the keys it trusts.

pub mod account;
pub mod consumption;
pub mod firmware;
pub mod keys;
pub mod profile;
pub mod system;
pub mod wire;

pub use consumption::{Consumption, Registers};
pub use profile::LoadShape;
pub use system::{Access, Device, DeviceKind, Installation, Outcome, RefusalCode, Requester, System, TrustAnchor};
pub use wire::{Command, RequestId};
