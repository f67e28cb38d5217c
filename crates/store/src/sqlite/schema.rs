//! Versioned migrations, applied in order inside one transaction each. The version lives in
//! SQLite's `user_version`.

use rusqlite::Connection;

use crate::StoreError;

use super::engine::backend;

/// (version, SQL). Append only; never edit a released migration.
pub(crate) const HUB: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/0001_initial.sql")),
    (2, include_str!("../../migrations/0002_pipeline.sql")),
    (3, include_str!("../../migrations/0003_schedules_and_reads.sql")),
    (4, include_str!("../../migrations/0004_consents_and_appointments.sql")),
    (5, include_str!("../../migrations/0005_prepayment.sql")),
    (6, include_str!("../../migrations/0006_payment_endpoints.sql")),
    (7, include_str!("../../migrations/0007_alerts.sql")),
    (8, include_str!("../../migrations/0008_switching_and_tenancy.sql")),
    (9, include_str!("../../migrations/0009_deliveries.sql")),
    (10, include_str!("../../migrations/0010_han.sql")),
    (11, include_str!("../../migrations/0011_alert_dispatch.sql")),
    (12, include_str!("../../migrations/0012_firmware.sql")),
    (13, include_str!("../../migrations/0013_alert_marks.sql")),
    (14, include_str!("../../migrations/0014_change_counters.sql")),
];

/// What the planning cache watches (migration 14): the tables a service request is planned
/// from, and the counter each commit that changes them moves.
pub(crate) const PLANNING: Watch = Watch {
    tables: &["registrations", "enrolments", "devices"],
    probe: "SELECT v FROM change_counters WHERE name = 'planning'",
    bump: "UPDATE change_counters SET v = v + 1 WHERE name = 'planning'",
};

/// Tables whose changes a database counts, for caches of them (see `engine::Changes`).
pub(crate) struct Watch {
    pub tables: &'static [&'static str],
    /// Reads the counter.
    pub probe: &'static str,
    /// Moves the counter (in the transaction that changed the tables).
    pub bump: &'static str,
}

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = HUB[HUB.len() - 1].0;

/// The fleet's own database (device state), separate from the hub's.
pub(crate) const FLEET: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/fleet_0001_initial.sql")),
    (2, include_str!("../../migrations/fleet_0002_wakeups.sql")),
];

pub(crate) fn migrate(conn: &mut Connection, migrations: &[(i64, &str)]) -> Result<(), StoreError> {
    let latest = migrations[migrations.len() - 1].0;
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(backend)?;
    if current > latest {
        return Err(StoreError::Backend(format!(
            "the data directory holds schema version {current}, newer than this build's {latest}; \
             run a newer meterhub"
        )));
    }
    for (version, sql) in migrations.iter().filter(|(v, _)| *v > current) {
        let tx = conn.transaction().map_err(backend)?;
        tx.execute_batch(sql).map_err(|e| StoreError::Backend(format!("migration {version} failed: {e}")))?;
        tx.pragma_update(None, "user_version", version).map_err(backend)?;
        tx.commit().map_err(backend)?;
        tracing::info!(message = "Applied store migration.", version);
    }
    Ok(())
}
