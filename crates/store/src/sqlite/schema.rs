//! Versioned migrations, applied in order inside one transaction each. The version lives in
//! SQLite's `user_version`.

use rusqlite::Connection;

use crate::StoreError;

use super::engine::backend;

/// (version, SQL). Append only; never edit a released migration.
const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../../migrations/0001_initial.sql"))];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(backend)?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "the data directory holds schema version {current}, newer than this build's {SCHEMA_VERSION}; \
             run a newer meterhub"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let tx = conn.transaction().map_err(backend)?;
        tx.execute_batch(sql).map_err(|e| StoreError::Backend(format!("migration {version} failed: {e}")))?;
        tx.pragma_update(None, "user_version", version).map_err(backend)?;
        tx.commit().map_err(backend)?;
        tracing::info!(message = "Applied store migration.", version);
    }
    Ok(())
}
