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
    (15, include_str!("../../migrations/0015_responses_and_audit_by_request_seq.sql")),
];

/// What the planning cache watches: the tables a service request is planned from, each with
/// the columns its entries are keyed by. (Migration 14's change counter is no longer moved:
/// the writer names each changed key, and sees other connections' commits by
/// `PRAGMA data_version`.)
pub(crate) const PLANNING: Watch =
    Watch { tables: &[("registrations", &["mpxn"]), ("enrolments", &["mpxn"]), ("devices", &["mpxn", "eui"])] };

/// Tables whose changes a cache hears of, by key (see `engine::Changes`).
pub(crate) struct Watch {
    /// Each table, with the key columns a change to one of its rows is named by.
    pub tables: &'static [(&'static str, &'static [&'static str])],
}

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = HUB[HUB.len() - 1].0;

/// The fleet's own database (device state), separate from the hub's.
pub(crate) const FLEET: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/fleet_0001_initial.sql")),
    (2, include_str!("../../migrations/fleet_0002_wakeups.sql")),
    (3, include_str!("../../migrations/fleet_0003_packed_state.sql")),
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
        // Some rebuild whole tables (15: responses and the audit log), which takes a while on
        // a large store: say so before, not only after.
        tracing::info!(message = "Applying store migration; the store opens when it is done.", version);
        let tx = conn.transaction().map_err(backend)?;
        tx.execute_batch(sql).map_err(|e| StoreError::Backend(format!("migration {version} failed: {e}")))?;
        tx.pragma_update(None, "user_version", version).map_err(backend)?;
        tx.commit().map_err(backend)?;
        tracing::info!(message = "Applied store migration.", version);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).expect(sql)
    }

    /// Migration 15 rebuilds responses and the audit log keyed by request number: every row
    /// survives with its sequence number, and finds its request.
    #[test]
    fn migration_15_keeps_every_response_and_audit_row() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = Connection::open(dir.path().join("hub.sqlite3")).expect("open");
        conn.pragma_update(None, "foreign_keys", "ON").expect("foreign keys");
        migrate(&mut conn, &HUB[..14]).expect("migrate to 14");
        conn.execute_batch(
            "INSERT INTO requests (seq, id, party, srv, target, body, precommand, submitted_at, status, status_at) \
             VALUES (7, 'A:B:1', 'sup', '4.1.1', 'B', '{}', x'00', 1, 'completed', 2), \
                    (9, 'A:B:2', 'sup', '4.1.1', 'B', '{}', x'00', 3, 'queued', 3); \
             INSERT INTO responses (seq, request_id, party, at, outcome, body) VALUES (4, 'A:B:1', 'sup', 2, 'done', '{}'); \
             INSERT INTO audit (seq, at, request_id, party, event, detail) VALUES \
                (10, 1, 'A:B:1', 'sup', 'accepted', 'queued'), (11, 2, 'A:B:1', 'sup', 'completed', 'done'), \
                (12, 3, 'A:B:2', 'sup', 'accepted', 'queued');",
        )
        .expect("rows at version 14");
        let objects = |conn: &Connection| -> Vec<String> {
            let mut s = conn
                .prepare(
                    "SELECT type || ' ' || name FROM sqlite_master \
                     WHERE tbl_name IN ('responses', 'audit') AND type IN ('index', 'trigger') ORDER BY 1",
                )
                .expect("schema");
            s.query_map([], |r| r.get(0)).expect("schema").map(|r| r.expect("name")).collect()
        };
        let before = objects(&conn);
        migrate(&mut conn, HUB).expect("migrate to the latest");
        assert_eq!(objects(&conn), before, "every index and trigger of the rebuilt tables is made again");
        assert_eq!(count(&conn, "SELECT request_seq FROM responses WHERE seq = 4 AND request_id = 'A:B:1'"), 7);
        let audit: String = conn
            .query_row("SELECT group_concat(seq || ':' || request_seq || ':' || event, ',') FROM audit", [], |r| {
                r.get(0)
            })
            .expect("audit");
        assert_eq!(audit, "10:7:accepted,11:7:completed,12:9:accepted");
        // The audit log's index is on the request number now.
        assert_eq!(
            count(&conn, "SELECT count(*) FROM pragma_index_info('audit_by_request') WHERE name = 'request_seq'"),
            1
        );
        assert!(conn.execute("DELETE FROM audit", []).is_err(), "the audit log stays append-only");
        assert!(conn.execute("UPDATE responses SET body = 'x'", []).is_err(), "responses stay append-only");
    }

    /// A response whose request is missing (written with foreign keys off) stops the
    /// migration: the rows stay at version 14 rather than being dropped.
    #[test]
    fn migration_15_refuses_to_drop_an_orphan_response() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = Connection::open(dir.path().join("hub.sqlite3")).expect("open");
        migrate(&mut conn, &HUB[..14]).expect("migrate to 14");
        conn.pragma_update(None, "foreign_keys", "OFF").expect("foreign keys off");
        conn.execute_batch(
            "INSERT INTO responses (seq, request_id, party, at, outcome, body) VALUES (4, 'A:B:1', 'sup', 2, 'done', '{}')",
        )
        .expect("orphan");
        let e = migrate(&mut conn, HUB).expect_err("an orphan response stops the migration");
        assert!(e.to_string().contains("migration 15"), "{e}");
        assert_eq!(count(&conn, "PRAGMA user_version"), 14);
        assert_eq!(count(&conn, "SELECT count(*) FROM responses WHERE request_id = 'A:B:1'"), 1);
    }
}
