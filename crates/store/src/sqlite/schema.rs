//! Versioned migrations, applied in order inside one transaction each. The version lives in
//! SQLite's `user_version`.

use rusqlite::{Connection, OptionalExtension};

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
    (16, include_str!("../../migrations/0016_requests_by_originator_counter.sql")),
    (17, include_str!("../../migrations/0017_waiting_requests_index.sql")),
    (18, include_str!("../../migrations/0018_response_marks.sql")),
    (19, include_str!("../../migrations/0019_response_marks_last.sql")),
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
    let pending: Vec<&(i64, &str)> = migrations.iter().filter(|(v, _)| *v > current).collect();
    if pending.is_empty() {
        return Ok(());
    }
    // Foreign keys are off while migrating and checked before each commit: a migration that
    // rebuilds a parent table (16: requests) drops it, which with them on would delete, or
    // refuse to delete, every row referring to it (SQLite's documented way to change a table).
    // The setting can only change outside a transaction.
    let enforced: bool = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0)).map_err(backend)?;
    conn.pragma_update(None, "foreign_keys", "OFF").map_err(backend)?;
    let result = pending.into_iter().try_for_each(|(version, sql)| {
        // Some rebuild whole tables (15: responses and the audit log; 16: requests), which
        // takes a while on a large store: say so before, not only after.
        tracing::info!(message = "Applying store migration; the store opens when it is done.", version);
        let failed = |e: String| StoreError::Backend(format!("migration {version} failed: {e}"));
        let tx = conn.transaction().map_err(backend)?;
        tx.execute_batch(sql).map_err(|e| failed(e.to_string()))?;
        if enforced && let Some(broken) = foreign_key_violation(&tx)? {
            return Err(failed(broken));
        }
        tx.pragma_update(None, "user_version", version).map_err(backend)?;
        tx.commit().map_err(backend)?;
        tracing::info!(message = "Applied store migration.", version);
        Ok(())
    });
    // The migration's own error, if any, is the one to report.
    let restored = if enforced { conn.pragma_update(None, "foreign_keys", "ON").map_err(backend) } else { Ok(()) };
    result.and(restored)
}

/// The first row that refers to a missing row, if any (`PRAGMA foreign_key_check`).
fn foreign_key_violation(conn: &Connection) -> Result<Option<String>, StoreError> {
    conn.query_row("PRAGMA foreign_key_check", [], |r| {
        Ok(format!(
            "row {} of {} refers to a missing row of {}",
            r.get::<_, Option<i64>>(1)?.map_or("?".to_string(), |id| id.to_string()),
            r.get::<_, String>(0)?,
            r.get::<_, String>(2)?,
        ))
    })
    .optional()
    .map_err(backend)
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
        let tables = "'responses', 'audit'";
        let before = objects(&conn, tables);
        migrate(&mut conn, &HUB[..15]).expect("migrate to 15");
        assert_eq!(objects(&conn, tables), before, "every index and trigger of the rebuilt tables is made again");
        migrate(&mut conn, HUB).expect("migrate to the latest");
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

    /// The query plan SQLite makes for `sql`, its steps joined by "; ".
    fn plan(conn: &Connection, sql: &str) -> String {
        let steps: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .and_then(|mut s| {
                // Parameters left unbound are NULL: the plan does not depend on them.
                let unbound = std::iter::repeat_n(rusqlite::types::Null, s.parameter_count());
                s.query_map(rusqlite::params_from_iter(unbound), |r| r.get(3))?.collect()
            })
            .expect("plan");
        steps.join("; ")
    }

    /// The indexes and triggers of `tables`, by name.
    fn objects(conn: &Connection, tables: &str) -> Vec<String> {
        let mut s = conn
            .prepare(&format!(
                "SELECT type || ' ' || name FROM sqlite_master \
                 WHERE tbl_name IN ({tables}) AND type IN ('index', 'trigger') ORDER BY 1"
            ))
            .expect("schema");
        s.query_map([], |r| r.get(0)).expect("schema").map(|r| r.expect("name")).collect()
    }

    const ORIGINATOR: &str = "90B3D51F30000002";

    /// Version 15 with two requests (numbers 7 and 9) of one originator, a response, audit
    /// rows, a forwarded read and a top-up.
    fn at_version_15() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = Connection::open(dir.path().join("hub.sqlite3")).expect("open");
        conn.pragma_update(None, "foreign_keys", "ON").expect("foreign keys");
        migrate(&mut conn, &HUB[..15]).expect("migrate to 15");
        conn.execute_batch(&format!(
            "INSERT INTO requests (seq, id, party, srv, target, body, precommand, submitted_at, status, status_at) \
             VALUES (7, '{ORIGINATOR}:00000000000000AA:41', 'sup', '4.1.1', '00000000000000AA', '{{}}', x'00', 1, \
                     'completed', 2), \
                    (9, '{ORIGINATOR}:00000000000000BB:42', 'sup', '2.2', '00000000000000BB', '{{}}', x'00', 3, \
                     'queued', 3); \
             INSERT INTO responses (seq, request_seq, request_id, party, at, outcome, body) \
                VALUES (4, 7, '{ORIGINATOR}:00000000000000AA:41', 'sup', 2, 'done', '{{}}'); \
             INSERT INTO audit (seq, at, request_seq, request_id, party, event, detail) \
                VALUES (10, 1, 7, '{ORIGINATOR}:00000000000000AA:41', 'sup', 'accepted', 'queued'); \
             INSERT INTO read_forwards (seq, request_id, from_party, to_party, at) \
                VALUES (3, '{ORIGINATOR}:00000000000000AA:41', 'sup', 'dno', 5); \
             INSERT INTO top_ups (seq, psp, payment_reference, customer_id, mpxn, supplier, meter, amount_pence, \
                                  counter, utrn, request_id, at) \
                VALUES (2, 'psp', 'pay-1', 'c1', '1100000000000', 'sup', '00000000000000BB', 500, 1, \
                        '73470000000000000001', '{ORIGINATOR}:00000000000000BB:42', 4);"
        ))
        .expect("rows at version 15");
        (dir, conn)
    }

    /// Migration 16 keys requests by (originator, counter) and rebuilds the tables that
    /// referred to their text id: every row survives with its number and finds its request,
    /// every index and trigger is made again, and foreign keys are on again afterwards.
    #[test]
    fn migration_16_keys_requests_by_originator_and_counter() {
        let (_dir, mut conn) = at_version_15();
        let tables = "'requests', 'responses', 'read_forwards', 'top_ups'";
        let mut expected = objects(&conn, tables);
        // The index of requests by party is kept for quarantined requests only.
        let by_party = expected.iter().position(|o| o == "index requests_by_party").expect("version 15 has it");
        expected[by_party] = "index requests_quarantined_by_party".into();
        expected.sort();
        migrate(&mut conn, &HUB[..16]).expect("migrate to 16");
        assert_eq!(objects(&conn, tables), expected, "every index and trigger of the rebuilt tables is made again");
        assert_eq!(count(&conn, "PRAGMA foreign_keys"), 1, "foreign keys are enforced again");
        let plan = plan(&conn, "SELECT seq FROM requests WHERE party = 'sup' AND status = 'quarantined' ORDER BY seq");
        assert!(plan.contains("requests_quarantined_by_party"), "{plan}");
        let keys: String = conn
            .query_row(
                "SELECT group_concat(seq || ':' || id_originator || ':' || id_counter, ',') FROM requests",
                [],
                |r| r.get(0),
            )
            .expect("keys");
        assert_eq!(keys, format!("7:{ORIGINATOR}:41,9:{ORIGINATOR}:42"));
        // The requests' unique index is the key now, not the text id.
        assert_eq!(
            count(
                &conn,
                "SELECT group_concat(i.name) = 'id_originator,id_counter' FROM pragma_index_list('requests') l, \
                 pragma_index_info(l.name) i WHERE l.\"unique\" = 1"
            ),
            1
        );
        assert_eq!(count(&conn, "SELECT request_seq FROM read_forwards WHERE seq = 3 AND to_party = 'dno'"), 7);
        assert_eq!(count(&conn, "SELECT request_seq FROM top_ups WHERE seq = 2 AND payment_reference = 'pay-1'"), 9);
        assert_eq!(count(&conn, "SELECT request_seq FROM responses WHERE seq = 4"), 7);
        assert_eq!(count(&conn, "SELECT request_seq FROM audit WHERE seq = 10"), 7);
        // The same originator and counter cannot name a second request, whatever its target.
        let again = conn.execute(
            &format!(
                "INSERT INTO requests (id, party, srv, target, body, precommand, submitted_at, status, status_at, \
                 id_originator, id_counter) VALUES ('{ORIGINATOR}:00000000000000CC:41', 'sup', '4.1.1', \
                 '00000000000000CC', '{{}}', x'00', 5, 'queued', 5, '{ORIGINATOR}', 41)"
            ),
            [],
        );
        assert!(again.is_err(), "{again:?}");
        // Responses still only take the three outcomes, and stay append-only.
        assert!(
            conn.execute(
                "INSERT INTO responses (request_seq, request_id, party, at, outcome, body) \
                 VALUES (9, 'x', 'sup', 6, 'maybe', '{}')",
                []
            )
            .is_err()
        );
        assert!(conn.execute("UPDATE responses SET body = 'x'", []).is_err(), "responses stay append-only");
        assert!(conn.execute("DELETE FROM top_ups", []).is_err(), "top-ups stay append-only");
        assert!(conn.execute("DELETE FROM read_forwards", []).is_err(), "forwarded reads stay append-only");
        // A forwarded read must name a stored request.
        assert!(
            conn.execute(
                "INSERT INTO read_forwards (request_seq, request_id, from_party, to_party, at) \
                 VALUES (99, 'x', 'sup', 'dno', 6)",
                []
            )
            .is_err(),
            "foreign keys are enforced"
        );
    }

    /// Migration 17 keeps in the status index only the requests that wait: the dispatcher's
    /// searches and a party's listing of its waiting requests use it, ended requests leave it
    /// (a completion deletes an entry and adds none), and an ending status finds no index.
    #[test]
    fn migration_17_indexes_only_waiting_requests() {
        let (_dir, mut conn) = at_version_15();
        migrate(&mut conn, &HUB[..16]).expect("migrate to 16");
        conn.execute_batch(&format!(
            "INSERT INTO requests (seq, id, party, srv, target, body, precommand, submitted_at, status, status_at, \
                                   execute_at, id_originator, id_counter) VALUES \
                (11, '{ORIGINATOR}:00000000000000AA:43', 'sup', '4.1.1', '00000000000000AA', '{{}}', x'00', 4, \
                 'awaiting-signature', 4, NULL, '{ORIGINATOR}', 43), \
                (12, '{ORIGINATOR}:00000000000000AA:44', 'sup', '4.1.1', '00000000000000AA', '{{}}', x'00', 4, \
                 'quarantined', 4, NULL, '{ORIGINATOR}', 44), \
                (13, '{ORIGINATOR}:00000000000000AA:45', 'sup', '4.1.1', '00000000000000AA', '{{}}', x'00', 4, \
                 'queued', 4, 90, '{ORIGINATOR}', 45), \
                (14, '{ORIGINATOR}:00000000000000AA:46', 'sup', '4.1.1', '00000000000000AA', '{{}}', x'00', 4, \
                 'cancelled', 5, 90, '{ORIGINATOR}', 46), \
                (15, '{ORIGINATOR}:00000000000000AA:47', 'sup', '4.1.1', '00000000000000AA', '{{}}', x'00', 4, \
                 'deleted', 5, NULL, '{ORIGINATOR}', 47);"
        ))
        .expect("requests in every status at version 16");
        let tables = "'requests'";
        let mut expected = objects(&conn, tables);
        let by_status = expected.iter().position(|o| o == "index requests_by_status").expect("version 16 has it");
        expected[by_status] = "index requests_waiting".into();
        expected.sort();
        migrate(&mut conn, HUB).expect("migrate to the latest");
        assert_eq!(objects(&conn, tables), expected, "the status index is replaced, and nothing else");
        // The dispatcher's two searches and a party's waiting requests use it.
        for sql in [
            "SELECT seq FROM requests WHERE status = 'queued' AND execute_at <= 100",
            "SELECT seq FROM requests WHERE party = 'sup' AND status = 'awaiting-signature' ORDER BY seq",
        ] {
            assert!(plan(&conn, sql).contains("requests_waiting"), "{sql}: {}", plan(&conn, sql));
        }
        // The search from the dispatcher's floor starts there in the index, and sorts nothing.
        let from_floor = plan(
            &conn,
            "SELECT seq FROM requests WHERE status = 'queued' AND execute_at IS NULL AND seq >= 10 ORDER BY seq",
        );
        assert!(
            from_floor.contains("requests_waiting")
                && from_floor.contains("rowid>?")
                && !from_floor.contains("TEMP B-TREE"),
            "{from_floor}"
        );
        let quarantine =
            plan(&conn, "SELECT seq FROM requests WHERE party = 'sup' AND status = 'quarantined' ORDER BY seq");
        assert!(quarantine.contains("requests_quarantined_by_party"), "{quarantine}");
        assert!(plan(&conn, "SELECT seq FROM requests WHERE status = 'completed'").starts_with("SCAN"));
        // It holds the four waiting requests (9, 11, 12, 13) and no ended one.
        let waiting = "SELECT group_concat(seq) FROM requests INDEXED BY requests_waiting \
                       WHERE status = 'queued' OR status = 'awaiting-signature' OR status = 'quarantined'";
        let listed = |conn: &Connection| -> String { conn.query_row(waiting, [], |r| r.get(0)).expect("waiting") };
        assert_eq!(listed(&conn), "11,12,9,13");
        // A completion takes a request out of it; the index stays whole.
        conn.execute("UPDATE requests SET status = 'completed', status_at = 6 WHERE seq = 9", []).expect("complete");
        assert_eq!(listed(&conn), "11,12,13");
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity check");
        assert_eq!(check, "ok");
    }

    /// Migration 18 marks where each party's responses of each hour begin, from the
    /// responses already stored, and drops the index of responses by party and time: a
    /// search by time starts from the marks.
    #[test]
    fn migration_18_marks_each_partys_first_response_of_each_hour() {
        let (_dir, mut conn) = at_version_15();
        migrate(&mut conn, &HUB[..17]).expect("migrate to 17");
        // Response 4 (of version 15's fixture, at 2 µs, hour 0); more, of two parties, the
        // first two of hour 5 written out of time order, and one before 1970 (hour 0 too,
        // as the division goes toward zero).
        let hour = 3_600_000_000_i64;
        add_responses(
            &conn,
            &[(5, "sup", 5 * hour + 900), (6, "sup", 5 * hour + 7), (8, "dno", 5 * hour + 7), (11, "sup", -7)],
        );
        let tables = "'responses'";
        let mut expected = objects(&conn, tables);
        expected.retain(|o| o != "index responses_by_party_at");
        migrate(&mut conn, &HUB[..18]).expect("migrate to 18");
        assert_eq!(objects(&conn, tables), expected, "the index by time is dropped, and nothing else");
        let marks: String = conn
            .query_row(
                "SELECT group_concat(party || ':' || hour || ':' || first_seq, ',') FROM response_marks",
                [],
                |r| r.get(0),
            )
            .expect("marks");
        assert_eq!(marks, "dno:5:8,sup:0:4,sup:5:5");
        // The writer puts each response in the hour the migration computed for it.
        let hours: Vec<(i64, i64)> = conn
            .prepare("SELECT at, at / 3600000000 FROM responses")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .expect("hours");
        for (at, sql_hour) in hours {
            let at_ts = super::super::ts(at).expect("an instant");
            assert_eq!(super::super::pipeline::response_hour(super::super::micros(at_ts)), sql_hour, "at {at}");
        }
        let start = plan(&conn, "SELECT min(first_seq) FROM response_marks WHERE party = 'sup' AND hour >= 3");
        assert!(start.contains("PRIMARY KEY"), "{start}");
    }

    /// Migration 19 gives each mark the last response of its party and hour as well, made
    /// from the responses stored; a search by time then reads only the numbers between its
    /// hours' first and last marks.
    #[test]
    fn migration_19_marks_each_partys_last_response_of_each_hour() {
        let (_dir, mut conn) = at_version_15();
        migrate(&mut conn, &HUB[..18]).expect("migrate to 18");
        // Response 4 (of version 15's fixture, hour 0); more of two parties, written out of
        // time order: 12 is the last written of hour 5 but the earliest in it, 6 the last of
        // hour 0 (before 1970).
        let hour = 3_600_000_000_i64;
        add_responses(
            &conn,
            &[
                (5, "sup", 5 * hour + 900),
                (6, "sup", -7),
                (8, "dno", 5 * hour + 7),
                (10, "sup", 7 * hour),
                (12, "sup", 5 * hour),
            ],
        );
        let tables = "'responses', 'response_marks'";
        let expected = objects(&conn, tables);
        migrate(&mut conn, HUB).expect("migrate to the latest");
        assert_eq!(objects(&conn, tables), expected, "no index or trigger changes");
        let all_marks =
            |conn: &Connection, sql: &str| -> String { conn.query_row(sql, [], |r| r.get(0)).expect("marks") };
        const MARKS: &str =
            "SELECT group_concat(party || ':' || hour || ':' || first_seq || '-' || last_seq, ',') FROM response_marks";
        assert_eq!(all_marks(&conn, MARKS), "dno:5:8-8,sup:0:4-6,sup:5:5-12,sup:7:10-10");
        // A mark's first is never after its last.
        let e = conn
            .execute("INSERT INTO response_marks (party, hour, first_seq, last_seq) VALUES ('x', 1, 3, 2)", [])
            .expect_err("first after last");
        assert!(e.to_string().contains("CHECK"), "{e}");
        // The search is bounded both ways, by the marks' primary key and the party's numbers.
        let bounds = plan(
            &conn,
            "SELECT min(first_seq), max(last_seq) FROM response_marks WHERE party = 'sup' AND hour >= 3 AND hour <= 6",
        );
        assert!(bounds.contains("PRIMARY KEY (party=? AND hour>? AND hour<?)"), "{bounds}");
        let reads = plan(&conn, &super::super::schedules::reads_between_sql());
        assert!(reads.contains("responses_by_party (party=? AND seq>? AND seq<?)"), "{reads}");

        // The writer keeps the marks the migration would make from the same responses: three
        // completions in one call, into an old hour, a new hour and before 1970, the second
        // one with an effect that cannot be applied (its metering point does not exist), so
        // that it is rolled back and recorded as a failure instead.
        conn.execute_batch(&format!(
            "INSERT INTO requests (seq, id, party, srv, target, body, precommand, submitted_at, status, status_at, \
                                   id_originator, id_counter) \
             VALUES (40, '{ORIGINATOR}:00000000000000AA:140', 'sup', '4.1.1', '00000000000000AA', '{{}}', x'00', 1, \
                     'queued', 1, '{ORIGINATOR}', 140), \
                    (41, '{ORIGINATOR}:00000000000000AA:141', 'sup', '6.20.1', '00000000000000AA', '{{}}', x'00', 1, \
                     'queued', 1, '{ORIGINATOR}', 141), \
                    (42, '{ORIGINATOR}:00000000000000AA:142', 'dno', '4.1.1', '00000000000000AA', '{{}}', x'00', 1, \
                     'queued', 1, '{ORIGINATOR}', 142);"
        ))
        .expect("queued requests");
        let sup = domain::PartyId::parse("sup").expect("party");
        let at = |micros: i64| super::super::ts(micros).expect("an instant");
        let completion =
            |seq: i64, party: &domain::PartyId, micros: i64, effects: Vec<crate::Effect>| crate::Completion {
                request_id: format!("{ORIGINATOR}:00000000000000AA:{}", 100 + seq),
                request_seq: Some(seq),
                party: party.clone(),
                at: at(micros),
                outcome: crate::ResponseOutcome::Done,
                body: "{}".into(),
                effects,
            };
        let link = crate::Effect::Linked {
            eui: domain::Eui64::from_u64(0xAA),
            mpxn: domain::Mpxn::parse("1700053058802").expect("an MPAN"),
            at: at(9 * hour),
            by: sup.clone(),
        };
        let dno = domain::PartyId::parse("dno").expect("party");
        let completions = [
            completion(40, &sup, 5 * hour + 1, vec![]),
            completion(41, &sup, 9 * hour, vec![link]),
            completion(42, &dno, -hour - 1, vec![]),
        ];
        let tx = conn.transaction().expect("transaction");
        super::super::pipeline::complete_requests(&tx, &completions).expect("completed");
        tx.commit().expect("committed");
        let outcome: String =
            conn.query_row("SELECT outcome FROM responses WHERE request_seq = 41", [], |r| r.get(0)).expect("response");
        assert_eq!(outcome, "failed", "the link could not be applied");
        let written = all_marks(&conn, MARKS);
        let made = all_marks(
            &conn,
            "SELECT group_concat(m, ',') FROM (SELECT party || ':' || (at / 3600000000) || ':' || min(seq) || '-' || \
             max(seq) AS m FROM responses GROUP BY party, at / 3600000000 ORDER BY party, at / 3600000000)",
        );
        assert_eq!(written, made, "the writer's marks are the migration's");
        assert_eq!(written, "dno:-1:15-15,dno:5:8-8,sup:0:4-6,sup:5:5-13,sup:7:10-10,sup:9:14-14");
    }

    /// Responses (with their requests) of the given numbers, parties and times.
    fn add_responses(conn: &Connection, responses: &[(i64, &str, i64)]) {
        let mut rows = String::new();
        for &(seq, party, at) in responses {
            let (request, id) = (20 + seq, format!("{ORIGINATOR}:00000000000000AA:{}", 100 + seq));
            rows.push_str(&format!(
                "INSERT INTO requests (seq, id, party, srv, target, body, precommand, submitted_at, status, status_at, \
                                       execute_at, id_originator, id_counter) \
                 VALUES ({request}, '{id}', '{party}', '4.1.1', '00000000000000AA', '{{}}', x'00', 1, 'completed', 2, \
                         NULL, '{ORIGINATOR}', {counter}); \
                 INSERT INTO responses (seq, request_seq, request_id, party, at, outcome, body) \
                 VALUES ({seq}, {request}, '{id}', '{party}', {at}, 'done', '{{}}');",
                counter = 100 + seq
            ));
        }
        conn.execute_batch(&rows).expect("more responses");
    }

    /// A migration commits only if every row still finds what it refers to: a row that was
    /// already broken (written with foreign keys off) stops it, named, and the store stays
    /// at the version before.
    #[test]
    fn a_migration_that_leaves_a_broken_reference_is_refused() {
        let (_dir, mut conn) = at_version_15();
        conn.pragma_update(None, "foreign_keys", "OFF").expect("foreign keys off");
        conn.execute_batch(
            "INSERT INTO audit (seq, at, request_seq, request_id, party, event, detail) \
             VALUES (11, 1, 99, 'A:B:99', 'sup', 'accepted', 'queued')",
        )
        .expect("orphan");
        conn.pragma_update(None, "foreign_keys", "ON").expect("foreign keys on");
        let e = migrate(&mut conn, HUB).expect_err("an orphan audit row stops the migration");
        assert!(e.to_string().contains("migration 16") && e.to_string().contains("row 11 of audit"), "{e}");
        assert_eq!(count(&conn, "PRAGMA user_version"), 15);
        assert_eq!(count(&conn, "PRAGMA foreign_keys"), 1, "foreign keys are enforced again");
        assert_eq!(
            count(&conn, "SELECT count(*) FROM pragma_table_info('requests') WHERE name = 'id_originator'"),
            0,
            "the rebuilt requests table was rolled back"
        );
    }

    /// A forwarded read or a top-up whose request is missing (written with foreign keys off)
    /// stops migration 16 rather than being dropped.
    #[test]
    fn migration_16_refuses_to_drop_an_orphan_forwarded_read_or_top_up() {
        for (table, orphan) in [
            (
                "read_forwards",
                "INSERT INTO read_forwards (seq, request_id, from_party, to_party, at) \
                 VALUES (8, 'A:B:99', 'sup', 'dno', 5)",
            ),
            (
                "top_ups",
                "INSERT INTO top_ups (seq, psp, payment_reference, customer_id, mpxn, supplier, meter, amount_pence, \
                 counter, utrn, request_id, at) VALUES (8, 'psp', 'pay-2', 'c1', '1100000000000', 'sup', \
                 '00000000000000BB', 500, 2, '73470000000000000002', 'A:B:99', 4)",
            ),
        ] {
            let (_dir, mut conn) = at_version_15();
            conn.pragma_update(None, "foreign_keys", "OFF").expect("foreign keys off");
            conn.execute_batch(orphan).expect("orphan");
            conn.pragma_update(None, "foreign_keys", "ON").expect("foreign keys on");
            let e = migrate(&mut conn, HUB).expect_err("an orphan stops the migration");
            assert!(e.to_string().contains("migration 16"), "{table}: {e}");
            assert_eq!(count(&conn, "PRAGMA user_version"), 15, "{table}");
            assert_eq!(count(&conn, &format!("SELECT count(*) FROM {table}")), 2, "{table}: nothing was dropped");
        }
    }
}
