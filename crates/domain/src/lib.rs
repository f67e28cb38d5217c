//! Pure types and rules of meterhub: identifiers, parties and roles, the service catalogue,
//! registration data, and the crypto primitives. No I/O, no clock reads, no randomness of
//! its own (callers pass time and a random source in).

pub mod alerts;
pub mod calendar;
pub mod catalogue;
pub mod crypto;
pub mod customer;
pub mod ids;
pub mod party;
pub mod product;
pub mod registry;
pub mod switching;
pub mod time;
pub mod utrn;

pub use ids::{Eui64, Fuel, FullMpan, IdError, IdRules, Mpan, Mprn, Mpxn};
pub use party::{Party, PartyId, Role, Roles};
