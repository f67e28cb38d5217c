//! The smart metering system model: meters, comms hub, in-home display, prepayment interface
//! and additional equipment. Pure and deterministic: everything follows from the simulation
//! seed and the instants passed in; no I/O, no clock reads. A device verifies critical
//! commands itself against the keys it trusts.

pub mod consumption;
pub mod profile;

pub use consumption::{Consumption, Registers};
pub use profile::LoadShape;
