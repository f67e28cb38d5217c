//! Persistence of the simulated fleet: device state is the fleet's own, kept in a database of
//! its own beside the hub's. The hub never opens it.

use async_trait::async_trait;
use domain::Eui64;

use crate::StoreError;

#[async_trait]
pub trait FleetStore: Send + Sync + 'static {
    /// The id the next system will get.
    async fn next_system_id(&self) -> Result<i64, StoreError>;
    /// Add a system with its devices and initial state (opaque bytes: the fleet's encoding).
    async fn add_system(
        &self,
        id: i64,
        comms_hub: Eui64,
        devices: Vec<Eui64>,
        state: Vec<u8>,
    ) -> Result<(), StoreError>;
    /// Add many systems in one transaction: (id, comms hub, devices, state).
    async fn add_systems(&self, systems: Vec<(i64, Eui64, Vec<Eui64>, Vec<u8>)>) -> Result<(), StoreError>;
    /// The system a device belongs to.
    async fn system_of(&self, eui: Eui64) -> Result<Option<i64>, StoreError>;
    /// A system's state as last stored: the bytes given, or, for a system not saved since
    /// fleet schema version 3, its JSON text.
    async fn load_system(&self, id: i64) -> Result<Option<Vec<u8>>, StoreError>;
    /// Several systems' states as [`FleetStore::load_system`] gives them, read as of one
    /// moment: (id, state) for each id found, in the order asked.
    async fn load_systems(&self, ids: Vec<i64>) -> Result<Vec<(i64, Vec<u8>)>, StoreError>;
    /// Store the new state of a system and when it next needs waking (`None`: not on its own).
    async fn save_system(&self, id: i64, state: Vec<u8>, wake_at: Option<jiff::Timestamp>) -> Result<(), StoreError>;
    /// A device fitted to a running system: indexed, with the system's new state, at once.
    async fn add_device(&self, id: i64, eui: Eui64, state: Vec<u8>) -> Result<(), StoreError>;
    /// Systems whose wake time is at or before `now`, soonest first.
    async fn due_wakeups(&self, now: jiff::Timestamp, limit: usize) -> Result<Vec<i64>, StoreError>;
    async fn fleet_state(&self, key: &str) -> Result<Option<String>, StoreError>;
    async fn set_fleet_state(&self, key: &str, value: String) -> Result<(), StoreError>;
}
