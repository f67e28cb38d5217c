//! Persistence of the simulated fleet: device state is the fleet's own, kept in a database of
//! its own beside the hub's. The hub never opens it.

use async_trait::async_trait;
use domain::Eui64;

use crate::StoreError;

#[async_trait]
pub trait FleetStore: Send + Sync + 'static {
    /// The id the next system will get.
    async fn next_system_id(&self) -> Result<i64, StoreError>;
    /// Add a system with its devices and initial state (opaque text).
    async fn add_system(&self, id: i64, comms_hub: Eui64, devices: Vec<Eui64>, state: String)
    -> Result<(), StoreError>;
    /// Add many systems in one transaction: (id, comms hub, devices, state).
    async fn add_systems(&self, systems: Vec<(i64, Eui64, Vec<Eui64>, String)>) -> Result<(), StoreError>;
    /// The system a device belongs to.
    async fn system_of(&self, eui: Eui64) -> Result<Option<i64>, StoreError>;
    async fn load_system(&self, id: i64) -> Result<Option<String>, StoreError>;
    /// Store the new state of a system and when it next needs waking (`None`: not on its own).
    async fn save_system(&self, id: i64, state: String, wake_at: Option<jiff::Timestamp>) -> Result<(), StoreError>;
    /// A device fitted to a running system: indexed, with the system's new state, at once.
    async fn add_device(&self, id: i64, eui: Eui64, state: String) -> Result<(), StoreError>;
    /// Systems whose wake time is at or before `now`, soonest first.
    async fn due_wakeups(&self, now: jiff::Timestamp, limit: usize) -> Result<Vec<i64>, StoreError>;
    async fn fleet_state(&self, key: &str) -> Result<Option<String>, StoreError>;
    async fn set_fleet_state(&self, key: &str, value: String) -> Result<(), StoreError>;
}
