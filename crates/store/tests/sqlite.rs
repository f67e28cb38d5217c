//! The embedded store through its public trait: as-at queries, append-only history, atomic
//! jobs inside batched commits, bulk import all-or-nothing, data across a reopen.

use std::sync::Arc;

use domain::registry::{MeterType, PaymentMode, RegistrationData, in_force_at};
use domain::{Eui64, Mpxn, Party, PartyId, Role, Roles};
use jiff::Timestamp;
use store::sqlite::{Durability, SqliteOptions, SqliteStore};
use store::{ImportMsg, ImportRow, NewEnrolment, NewRegistration, Store, StoreError, TokenRecord};

fn pid(s: &str) -> PartyId {
    PartyId::parse(s).unwrap()
}

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn mpxn(s: &str) -> Mpxn {
    Mpxn::parse(s).unwrap()
}

fn opts() -> SqliteOptions {
    SqliteOptions { durability: Durability::Normal, readers: 2, ..Default::default() }
}

fn data(supplier: &str) -> RegistrationData {
    RegistrationData {
        supplier: pid(supplier),
        export_supplier: None,
        shipper: None,
        network_operator: pid("dno-13"),
        meter_type: MeterType::SmartCompliant,
        payment_mode: None,
        annual_quantity_kwh: None,
    }
}

fn reg(m: &str, from: &str, supplier: &str, recorded: &str) -> NewRegistration {
    NewRegistration {
        mpxn: mpxn(m),
        effective_from: t(from),
        data: data(supplier),
        recorded_at: t(recorded),
        recorded_by: pid("reg"),
    }
}

fn party(id: &str, roles: &[Role], eui: u64) -> Party {
    Party {
        id: pid(id),
        name: format!("{id} Ltd"),
        roles: Roles::from_iter(roles.iter().copied()),
        originator: Eui64::from_u64(eui),
        signing_key_spki: None,
        created_at: t("2026-01-01T00:00:00Z"),
    }
}

// R-REG-1: as-at queries across several registrations, with a correction, and "as known at".
#[tokio::test]
async fn as_at_queries_follow_effective_dates_and_corrections() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path(), opts()).unwrap();
    let m = "1312345678907";
    s.append_registration(reg(m, "2025-01-01T00:00:00Z", "acme", "2024-12-01T00:00:00Z")).await.unwrap();
    s.append_registration(reg(m, "2026-03-01T00:00:00Z", "brightside", "2026-02-01T00:00:00Z")).await.unwrap();
    // A correction recorded later for the same effective date supersedes the first recording.
    s.append_registration(reg(m, "2026-03-01T00:00:00Z", "cobalt", "2026-02-10T00:00:00Z")).await.unwrap();
    s.append_registration(reg(m, "2026-06-01T00:00:00Z", "acme", "2026-05-01T00:00:00Z")).await.unwrap();

    let table: &[(&str, Option<&str>, Option<&str>)] = &[
        ("2024-12-31T23:59:59Z", None, None),
        ("2025-01-01T00:00:00Z", None, Some("acme")),
        ("2026-02-28T23:59:59Z", None, Some("acme")),
        ("2026-03-01T00:00:00Z", None, Some("cobalt")),
        ("2026-03-01T00:00:00Z", Some("2026-02-05T00:00:00Z"), Some("brightside")),
        ("2026-03-01T00:00:00Z", Some("2026-01-15T00:00:00Z"), Some("acme")),
        ("2026-05-31T23:59:59.999999Z", None, Some("cobalt")),
        ("2026-06-01T00:00:00Z", None, Some("acme")),
        ("2030-01-01T00:00:00Z", Some("2024-11-01T00:00:00Z"), None),
    ];
    for (at, known, want) in table {
        let got = s.registration_at(mpxn(m), t(at), known.map(t)).await.unwrap();
        assert_eq!(got.map(|v| v.data.supplier.to_string()).as_deref(), *want, "at {at} known {known:?}");
    }
    // History keeps every recording, in order.
    let hist = s.registration_history(mpxn(m)).await.unwrap();
    let suppliers: Vec<_> = hist.iter().map(|v| v.data.supplier.as_str()).collect();
    assert_eq!(suppliers, ["acme", "brightside", "cobalt", "acme"]);
    assert!(hist.windows(2).all(|w| w[0].seq < w[1].seq));
}

async fn supplier_at(s: &SqliteStore, m: &str, at: &str) -> Option<String> {
    s.registration_at(mpxn(m), t(at), None).await.unwrap().map(|v| v.data.supplier.to_string())
}

// The planning cache (registrations, enrolments and devices kept in memory) never hides a
// write: this process's writes are seen by the next read, and another process's (here a
// second store on the same directory, as a local command would open) once the writer sees
// the database's data version move, well within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_planning_facts_follow_writes_from_this_and_other_processes() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path(), opts()).unwrap();
    let m = "1312345678907";
    s.append_registration(reg(m, "2025-01-01T00:00:00Z", "acme", "2025-01-01T00:00:00Z")).await.unwrap();
    assert_eq!(supplier_at(&s, m, "2026-06-01T00:00:00Z").await.as_deref(), Some("acme"));
    assert!(s.enrolment_at(mpxn(m), t("2026-06-01T00:00:00Z"), None).await.unwrap().is_none());
    // Our own write: seen at once, by every kind of read.
    s.append_registration(reg(m, "2026-03-01T00:00:00Z", "brightside", "2026-02-01T00:00:00Z")).await.unwrap();
    assert_eq!(supplier_at(&s, m, "2026-06-01T00:00:00Z").await.as_deref(), Some("brightside"));
    assert_eq!(s.registration_history(mpxn(m)).await.unwrap().len(), 2);
    let e = NewEnrolment {
        mpxn: mpxn(m),
        effective_from: t("2026-01-01T00:00:00Z"),
        enrolled: true,
        recorded_at: t("2026-01-01T00:00:00Z"),
        recorded_by: pid("acme"),
    };
    s.append_enrolment(e.clone()).await.unwrap();
    assert!(s.enrolment_at(mpxn(m), t("2026-06-01T00:00:00Z"), None).await.unwrap().is_some_and(|e| e.enrolled));
    // Both at once give what each gives alone, before and after the enrolment's start.
    for at in ["2025-06-01T00:00:00Z", "2026-06-01T00:00:00Z"] {
        let (reg_at, enrolment) = s.registration_and_enrolment_at(mpxn(m), t(at)).await.unwrap();
        assert_eq!(reg_at, s.registration_at(mpxn(m), t(at), None).await.unwrap(), "{at}");
        assert_eq!(enrolment, s.enrolment_at(mpxn(m), t(at), None).await.unwrap(), "{at}");
    }
    assert!(s.registration_and_enrolment_at(mpxn(m), t("2025-06-01T00:00:00Z")).await.unwrap().1.is_none());

    // Another process's write.
    let other = SqliteStore::open(dir.path(), opts()).unwrap();
    other.append_registration(reg(m, "2026-05-01T00:00:00Z", "cobalt", "2026-04-01T00:00:00Z")).await.unwrap();
    other
        .append_enrolment(NewEnrolment { enrolled: false, effective_from: t("2026-05-01T00:00:00Z"), ..e })
        .await
        .unwrap();
    other.close().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let supplier = supplier_at(&s, m, "2026-06-01T00:00:00Z").await;
        let enrolled = s.enrolment_at(mpxn(m), t("2026-06-01T00:00:00Z"), None).await.unwrap().unwrap().enrolled;
        if supplier.as_deref() == Some("cobalt") && !enrolled {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "another process's writes were never seen: {supplier:?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    // Another tool (the sqlite3 shell): seen the same way.
    let raw = rusqlite::Connection::open(dir.path().join("meterhub.sqlite3")).unwrap();
    raw.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    raw.execute(
        "INSERT INTO enrolments (mpxn, effective_from, enrolled, recorded_at, recorded_by) VALUES (?1, ?2, 1, ?2, 'acme')",
        rusqlite::params![m, t("2026-05-15T00:00:00Z").as_microsecond()],
    )
    .unwrap();
    drop(raw);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !s.enrolment_at(mpxn(m), t("2026-06-01T00:00:00Z"), None).await.unwrap().unwrap().enrolled {
        assert!(std::time::Instant::now() < deadline, "a write by another tool was never seen");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    s.close().await;
}

// After a reopen the planning cache fills itself in the background (in chunks of metering
// points read together) with exactly what the database holds, and requests then plan from
// memory: every lookup is answered without a read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_planning_cache_warms_itself_with_what_the_database_holds() {
    let dir = tempfile::tempdir().unwrap();
    let n = 2500u64;
    let gas = |i: u64| mpxn(&(2_000_000 + i).to_string());
    {
        let s = SqliteStore::open(dir.path(), opts()).unwrap();
        for i in 0..n {
            let m = gas(i).to_string();
            s.append_registration(reg(&m, "2025-01-01T00:00:00Z", "acme", "2025-01-01T00:00:00Z")).await.unwrap();
            if i % 7 == 0 {
                s.append_registration(reg(&m, "2026-01-01T00:00:00Z", "brightside", "2025-12-01T00:00:00Z"))
                    .await
                    .unwrap();
            }
            if i % 3 == 0 {
                let e = NewEnrolment {
                    mpxn: gas(i),
                    effective_from: t("2025-02-01T00:00:00Z"),
                    enrolled: true,
                    recorded_at: t("2025-02-01T00:00:00Z"),
                    recorded_by: pid("acme"),
                };
                s.append_enrolment(e).await.unwrap();
            }
        }
        s.close().await;
    }
    let s = SqliteStore::open(dir.path(), opts()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while s.planning_warming() || s.planning_stats().entries < n as usize {
        assert!(std::time::Instant::now() < deadline, "never warmed: {:?}", s.planning_stats());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for i in 0..n {
        let supplier = supplier_at(&s, &gas(i).to_string(), "2026-06-01T00:00:00Z").await;
        assert_eq!(supplier.as_deref(), Some(if i % 7 == 0 { "brightside" } else { "acme" }), "{i}");
        assert_eq!(s.registration_history(gas(i)).await.unwrap().len(), if i % 7 == 0 { 2 } else { 1 });
        let enrolled = s.enrolment_at(gas(i), t("2026-06-01T00:00:00Z"), None).await.unwrap();
        assert_eq!(enrolled.is_some_and(|e| e.enrolled), i % 3 == 0, "{i}");
    }
    let stats = s.planning_stats();
    assert_eq!((stats.hits, stats.misses), (3 * n, 0), "{stats:?}");
    s.close().await;
}

// R-REG-1: history is never overwritten, even by SQL that tries.
#[tokio::test]
async fn history_is_append_only_and_enrolment_needs_a_metering_point() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path(), opts()).unwrap();
    s.append_registration(reg("1312345678907", "2025-01-01T00:00:00Z", "acme", "2025-01-01T00:00:00Z")).await.unwrap();
    let conn = rusqlite::Connection::open(s.path()).unwrap();
    let err = conn.execute("UPDATE registrations SET supplier = 'evil'", []).unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = conn.execute("DELETE FROM registrations", []).unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");

    let e = NewEnrolment {
        mpxn: mpxn("1700053058802"),
        effective_from: t("2025-01-01T00:00:00Z"),
        enrolled: true,
        recorded_at: t("2025-01-01T00:00:00Z"),
        recorded_by: pid("acme"),
    };
    assert!(matches!(s.append_enrolment(e.clone()).await, Err(StoreError::NotFound(_))));
    let e = NewEnrolment { mpxn: mpxn("1312345678907"), ..e };
    s.append_enrolment(e).await.unwrap();
    let at = s.enrolment_at(mpxn("1312345678907"), t("2025-06-01T00:00:00Z"), None).await.unwrap();
    assert!(at.unwrap().enrolled);
    assert!(s.enrolment_at(mpxn("1312345678907"), t("2024-06-01T00:00:00Z"), None).await.unwrap().is_none());
}

// One failing job inside a batch leaves its neighbours committed and itself not applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_are_atomic_per_job() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(SqliteStore::open(dir.path(), opts()).unwrap());
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            // Every 10th party reuses an id: a conflict that must not disturb the others.
            let id = if i % 10 == 0 { "dup".to_string() } else { format!("p{i}") };
            s.insert_party(party(&id, &[Role::ImportSupplier], 1000 + i)).await
        }));
    }
    let mut ok = 0;
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::Conflict(_)) => conflicts += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((ok, conflicts), (181, 19));
    assert_eq!(s.parties().await.unwrap().len(), 181);
}

#[tokio::test]
async fn tokens_are_found_by_hash_and_revocation_sticks_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SqliteStore::open(dir.path(), opts()).unwrap();
        s.insert_party(party("acme", &[Role::ImportSupplier], 1)).await.unwrap();
        let tok = TokenRecord {
            id: "tok1".into(),
            party: pid("acme"),
            label: "ci".into(),
            hash: [7; 32],
            created_at: t("2026-01-01T00:00:00Z"),
            revoked_at: None,
        };
        s.insert_token(tok.clone(), 2).await.unwrap();
        assert!(matches!(s.insert_token(tok.clone(), 2).await, Err(StoreError::Conflict(_))));
        // The per-party bound is checked inside the write.
        let other = TokenRecord { id: "tok2".into(), hash: [9; 32], ..tok.clone() };
        let third = TokenRecord { id: "tok3".into(), hash: [10; 32], ..tok };
        s.insert_token(other, 2).await.unwrap();
        let refused = s.insert_token(third, 2).await;
        assert!(matches!(&refused, Err(StoreError::Conflict(m)) if m.contains("already has 2 tokens")), "{refused:?}");
        let (found, p) = s.token_by_hash([7; 32]).await.unwrap().unwrap();
        assert_eq!((found.id.as_str(), p.id.as_str()), ("tok1", "acme"));
        assert!(s.revoke_token(&pid("acme"), "tok1", t("2026-02-01T00:00:00Z")).await.unwrap());
        assert!(!s.revoke_token(&pid("acme"), "tok1", t("2026-03-01T00:00:00Z")).await.unwrap());
        let missing = s.revoke_token(&pid("acme"), "nope", t("2026-03-01T00:00:00Z")).await;
        assert!(matches!(missing, Err(StoreError::NotFound(_))));
        s.close().await;
        assert_eq!(s.set_state("k", "v".into()).await, Err(StoreError::Closed));
    }
    let s = SqliteStore::open(dir.path(), opts()).unwrap();
    let (found, _) = s.token_by_hash([7; 32]).await.unwrap().unwrap();
    assert_eq!(found.revoked_at, Some(t("2026-02-01T00:00:00Z")));
    assert!(s.token_by_hash([8; 32]).await.unwrap().is_none());
}

fn rows(n: usize, supplier: &str) -> Vec<ImportRow> {
    (0..n)
        .map(|i| {
            let first12 = format!("13{:010}", i);
            let d: [u8; 12] = first12.bytes().map(|b| b - b'0').collect::<Vec<_>>().try_into().unwrap();
            let m = format!("{first12}{}", domain::ids::mpan_check_digit(&d));
            ImportRow { mpxn: mpxn(&m), effective_from: t("2025-01-01T00:00:00Z"), data: data(supplier) }
        })
        .collect()
}

async fn import(s: &SqliteStore, msgs: Vec<ImportMsg>) -> Result<store::ImportSummary, StoreError> {
    let (tx, rx) = tokio::sync::mpsc::channel(store::IMPORT_CHUNKS_IN_FLIGHT_MAX);
    let feed = tokio::spawn(async move {
        for m in msgs {
            if tx.send(m).await.is_err() {
                break;
            }
        }
    });
    let r = s.import_registrations(rx, t("2026-01-01T00:00:00Z"), pid("hub-operator")).await;
    feed.await.unwrap();
    r
}

fn chunked(all: &[ImportRow]) -> Vec<ImportMsg> {
    all.chunks(4096).map(|c| ImportMsg::Rows(c.to_vec())).chain([ImportMsg::Commit]).collect()
}

#[tokio::test]
async fn import_is_all_or_nothing_and_rerunning_it_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path(), opts()).unwrap();
    let all = rows(10_000, "acme");
    // Aborted half-way: nothing of it remains.
    let r = import(&s, vec![ImportMsg::Rows(all[..5000].to_vec()), ImportMsg::Abort("line 5001: bad".into())]).await;
    assert_eq!(r, Err(StoreError::Conflict("line 5001: bad".into())));
    // The input ending without a commit is an abort too.
    let r = import(&s, vec![ImportMsg::Rows(all[..5000].to_vec())]).await;
    assert!(matches!(r, Err(StoreError::Backend(_))));
    assert_eq!(s.counts().await.unwrap().registrations, 0);

    let sum = import(&s, chunked(&all)).await.unwrap();
    assert_eq!(
        (sum.rows, sum.metering_points_created, sum.registrations_added, sum.duplicates_skipped),
        (10_000, 10_000, 10_000, 0)
    );
    // The same file again: every row is already recorded.
    let sum = import(&s, chunked(&all)).await.unwrap();
    assert_eq!((sum.registrations_added, sum.duplicates_skipped), (0, 10_000));
    // A new supplier from a later date for the first 10: appended as history.
    let mut later = rows(10, "brightside");
    later.iter_mut().for_each(|r| r.effective_from = t("2026-06-01T00:00:00Z"));
    let sum = import(&s, vec![ImportMsg::Rows(later.clone()), ImportMsg::Commit]).await.unwrap();
    assert_eq!((sum.metering_points_created, sum.registrations_added), (0, 10));
    let at = s.registration_at(later[0].mpxn, t("2026-07-01T00:00:00Z"), None).await.unwrap().unwrap();
    assert_eq!(at.data.supplier.as_str(), "brightside");
    let before = s.registration_at(later[0].mpxn, t("2026-05-01T00:00:00Z"), None).await.unwrap().unwrap();
    assert_eq!(before.data.supplier.as_str(), "acme");
    let c = s.counts().await.unwrap();
    assert_eq!((c.metering_points, c.registrations), (10_000, 10_010));
}

#[tokio::test]
async fn gas_fields_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path(), opts()).unwrap();
    let d = RegistrationData {
        supplier: pid("gasco"),
        export_supplier: None,
        shipper: Some(pid("gasco")),
        network_operator: pid("cadent"),
        meter_type: MeterType::Traditional,
        payment_mode: Some(PaymentMode::Prepayment),
        annual_quantity_kwh: Some(80_000),
    };
    let r = NewRegistration {
        mpxn: mpxn("0012345"),
        effective_from: t("2025-01-01T00:00:00Z"),
        data: d.clone(),
        recorded_at: t("2025-01-01T00:00:00Z"),
        recorded_by: pid("reg"),
    };
    s.append_registration(r).await.unwrap();
    let got = s.registration_at(mpxn("0012345"), t("2025-01-02T00:00:00Z"), None).await.unwrap().unwrap();
    assert_eq!(got.data, d);
    assert_eq!(got.mpxn.to_string(), "0012345");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        // R-REG-1: whatever the recording order, the store's as-at answer is the domain rule's.
        #[test]
        fn store_as_at_agrees_with_the_domain_rule(
            versions in proptest::collection::vec((0i64..20, 0usize..3), 1..12),
            probes in proptest::collection::vec(-1i64..22, 1..10),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let s = SqliteStore::open(dir.path(), opts()).unwrap();
                let base = t("2025-01-01T00:00:00Z");
                let suppliers = ["acme", "brightside", "cobalt"];
                let mut recorded = Vec::new();
                for (i, (d, who)) in versions.iter().enumerate() {
                    let r = NewRegistration {
                        mpxn: mpxn("1312345678907"),
                        effective_from: base + jiff::SignedDuration::from_hours(24 * d),
                        data: data(suppliers[*who]),
                        recorded_at: base + jiff::SignedDuration::from_secs(i as i64),
                        recorded_by: pid("reg"),
                    };
                    recorded.push(s.append_registration(r).await.unwrap());
                }
                for p in &probes {
                    let at = base + jiff::SignedDuration::from_hours(24 * p);
                    let want = in_force_at(&recorded, at).map(|v| v.seq);
                    let got = s.registration_at(mpxn("1312345678907"), at, None).await.unwrap().map(|v| v.seq);
                    assert_eq!(got, want, "at day {p}");
                }
            });
        }
    }
}

fn alert(device: u64, n: Option<u64>, party: &str) -> store::AlertRecord {
    store::AlertRecord {
        seq: 0,
        party: pid(party),
        recipient_as: "registered-supplier".into(),
        device: Some(domain::Eui64::from_u64(device)),
        device_seq: n,
        mpxn: None,
        at: t("2026-01-05T09:00:00Z"),
        code: 0x8F74,
        detail: "tamper".into(),
        data: None,
        received_at: t("2026-01-05T09:00:01Z"),
    }
}

// R-FLT-2: a device's alerts delivered again (from its first unacknowledged one, as devices
// do) are stored once per recipient, across a reopen; the hub's own alerts (no device
// number) are always new; each recipient reads its own in order.
#[tokio::test]
async fn alerts_delivered_again_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path(), opts()).unwrap();
    let both = |n: u64| vec![alert(7, Some(n), "acme"), alert(7, Some(n), "dno-13")];
    let first: Vec<store::AlertRecord> = (1..=3).flat_map(both).collect();
    assert_eq!(s.record_alerts(first).await.unwrap(), 6);
    // Again from 2, with 4 new, and another device's 1.
    let mut again: Vec<store::AlertRecord> = (2..=4).flat_map(both).collect();
    again.push(alert(8, Some(1), "acme"));
    assert_eq!(s.record_alerts(again).await.unwrap(), 3);
    s.close().await;
    let s = SqliteStore::open(dir.path(), opts()).unwrap();
    assert_eq!(s.record_alerts((1..=4).flat_map(both).collect()).await.unwrap(), 0, "after a reopen too");
    let hub_alert = alert(7, None, "acme");
    assert_eq!(s.record_alerts(vec![hub_alert.clone(), hub_alert]).await.unwrap(), 2);
    let acme: Vec<(Option<u64>, Option<u64>)> = s
        .alerts_after(&pid("acme"), 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|a| (a.device.map(|d| d.as_u64()), a.device_seq))
        .collect();
    assert_eq!(
        acme,
        [
            (Some(7), Some(1)),
            (Some(7), Some(2)),
            (Some(7), Some(3)),
            (Some(7), Some(4)),
            (Some(8), Some(1)),
            (Some(7), None),
            (Some(7), None)
        ]
    );
    s.close().await;
}

fn request(id: &str) -> store::RequestRecord {
    store::RequestRecord {
        seq: 0,
        id: id.to_string(),
        party: pid("acme"),
        srv: "4.1.1".into(),
        target: Eui64::from_u64(0x10),
        mpxn: None,
        body: "{}".into(),
        precommand: vec![1, 2, 3],
        signature: None,
        submitted_at: t("2026-01-01T00:00:00Z"),
        execute_at: None,
        status: store::RequestStatus::Queued,
        status_at: t("2026-01-01T00:00:00Z"),
        note: None,
        schedule_id: None,
    }
}

// R-SR-3: due requests come in number order, whether they run now or at an execution time
// now past; requests not yet due, and those the dispatcher already holds, are left out; the
// limit takes the first in that order; a search from a number skips only requests to run now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_requests_come_in_number_order_whether_immediate_or_dated() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path(), opts()).unwrap();
    let now = t("2026-01-01T12:00:00Z");
    // (execute at, seq it gets): immediate and dated interleaved.
    let plan = [
        None,
        Some("2026-01-01T11:59:00Z"),
        None,
        Some("2026-01-01T11:00:00Z"),
        Some("2026-01-01T13:00:00Z"),
        None,
        Some("2026-01-01T12:00:00Z"),
    ];
    let mut seqs = Vec::new();
    for (i, at) in plan.iter().enumerate() {
        let r = store::RequestRecord {
            execute_at: at.map(t),
            ..request(&format!("0000000000000001:0000000000000010:{i}"))
        };
        seqs.push(s.insert_request(r).await.unwrap().seq);
    }
    let search = |limit: usize, except: Vec<i64>, from: i64| {
        let s = &s;
        async move {
            let got = s.due_requests(now, limit, Arc::new(except.into_iter().collect()), from).await.unwrap();
            (got.requests.iter().map(|r| r.seq).collect::<Vec<_>>(), got.looked_to)
        }
    };
    let due = |limit: usize, except: Vec<i64>| {
        let search = &search;
        async move { search(limit, except, 0).await.0 }
    };
    // All but the one due at 13:00, in number order.
    let all: Vec<i64> = [0, 1, 2, 3, 5, 6].iter().map(|i| seqs[*i]).collect();
    assert_eq!(due(100, vec![]).await, all);
    assert_eq!(due(3, vec![]).await, all[..3]);
    assert_eq!(due(100, vec![seqs[1], seqs[2]]).await, [seqs[0], seqs[3], seqs[5], seqs[6]]);
    // From a number on, requests to run now below it are not looked at; due dated ones
    // still are. The search says how far it looked among those to run now, excepted or not.
    assert_eq!(search(100, vec![], seqs[2]).await, (vec![seqs[1], seqs[2], seqs[3], seqs[5], seqs[6]], Some(seqs[5])));
    assert_eq!(search(100, vec![seqs[5]], seqs[2]).await, (vec![seqs[1], seqs[2], seqs[3], seqs[6]], Some(seqs[5])));
    assert_eq!(search(100, vec![], seqs[5] + 1).await, (vec![seqs[1], seqs[3], seqs[6]], None));
    assert_eq!(search(1, vec![], 0).await, (vec![seqs[0]], Some(seqs[0])));
    assert_eq!(search(1, vec![], seqs[2]).await, (vec![seqs[1]], None), "stopped at a dated one");
    s.close().await;
}

// R-SR-1: what the dispatcher's search gives is what the store holds, whether it comes from
// the copy kept since the insert or from the row: run now, dated, signed after being held
// for a signature; a cancelled request is not given; searched again, the rows agree. Times
// finer than a row keeps (a system clock's nanoseconds) are answered and kept as stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_requests_are_as_stored_whether_kept_since_the_insert_or_read() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path(), opts()).unwrap();
    let now = t("2026-01-01T12:00:00Z");
    let id = |i: u32| format!("0000000000000001:0000000000000010:{i}");
    let fine = t("2026-01-01T00:00:00.123456789Z");
    for i in 0..4 {
        let r = store::RequestRecord {
            body: format!("{{\"n\":{i}}}"),
            submitted_at: fine,
            status_at: fine,
            ..request(&id(i))
        };
        let answered = s.insert_request(r).await.unwrap();
        assert_eq!(answered, s.request(&id(i)).await.unwrap().unwrap().0, "answered otherwise than stored");
    }
    let dated = store::RequestRecord { execute_at: Some(t("2026-01-01T11:00:00Z")), ..request(&id(4)) };
    s.insert_request(dated).await.unwrap();
    let held = store::RequestRecord { status: store::RequestStatus::AwaitingSignature, ..request(&id(5)) };
    s.insert_request(held).await.unwrap();
    let queued = [store::RequestStatus::Queued];
    s.transition_request(&id(1), &queued, store::RequestStatus::Cancelled, now, Some("cancelled".into()), None)
        .await
        .unwrap();
    let awaiting = [store::RequestStatus::AwaitingSignature];
    s.transition_request(
        &id(5),
        &awaiting,
        store::RequestStatus::Queued,
        now,
        Some("signed".into()),
        Some(vec![9; 64]),
    )
    .await
    .unwrap();
    let none = || Arc::new(std::collections::HashSet::new());
    let found = s.due_requests(now, 100, none(), 0).await.unwrap();
    assert_eq!(found.kept, 3, "the three to run now still queued come from memory, the others from rows");
    let first = found.requests;
    let ids: Vec<&str> = first.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, [id(0), id(2), id(3), id(4), id(5)]);
    for r in &first {
        let (stored, _) = s.request(&r.id).await.unwrap().unwrap();
        assert_eq!(*r, stored, "the search gave {} otherwise than stored", r.id);
    }
    assert_eq!(first.last().unwrap().signature.as_deref(), Some(&[9u8; 64][..]), "signed after the insert");
    let again = s.due_requests(now, 100, none(), 0).await.unwrap();
    assert_eq!((again.requests, again.kept), (first, 0), "read from the rows the second time");
    s.close().await;
}

// R-SR-1: requests are written without a savepoint each (they share their batch's
// transaction); a request id used twice is refused as a conflict with nothing written,
// and the requests committed beside it are unharmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_used_twice_is_a_conflict_and_its_neighbours_commit() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(SqliteStore::open(dir.path(), opts()).unwrap());
    s.insert_request(request("0000000000000001:0000000000000010:1")).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..64u64 {
        let s = s.clone();
        // Every eighth reuses the first id; the others are new.
        let id = if i % 8 == 0 { 1 } else { 100 + i };
        tasks.push(tokio::spawn(async move {
            s.insert_request(request(&format!("0000000000000001:0000000000000010:{id}"))).await
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => assert!(r.seq > 0),
            Err(StoreError::Conflict(m)) => {
                assert!(m.contains("already exists"), "{m}");
                conflicts += 1;
            }
            Err(e) => panic!("a neighbour of a conflicting request failed: {e}"),
        }
    }
    assert_eq!(conflicts, 8);
    let trail = s.audit_trail("0000000000000001:0000000000000010:1").await.unwrap();
    assert_eq!(trail.len(), 1, "the refused duplicates wrote no audit line: {trail:?}");
    for i in (0..64u64).filter(|i| i % 8 != 0) {
        let id = format!("0000000000000001:0000000000000010:{}", 100 + i);
        assert_eq!(s.audit_trail(&id).await.unwrap().len(), 1, "{id}");
    }
}

// R-SR-1: a request is found by its whole id. The store finds it by the id's originator and
// counter (migration 16), so an id sharing them but naming another target, or not of the
// form originatorEUI:targetEUI:counter, names nothing; and nothing can refer to a missing
// request.
#[tokio::test]
async fn a_request_is_found_by_its_whole_id_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path(), opts()).unwrap();
    let id = "0000000000000001:0000000000000010:7";
    let seq = s.insert_request(request(id)).await.unwrap().seq;
    let (found, _) = s.request(id).await.unwrap().expect("found by its id");
    assert_eq!((found.seq, found.id.as_str()), (seq, id));
    assert_eq!(s.audit_trail(id).await.unwrap().len(), 1);
    for other in [
        "0000000000000001:0000000000000011:7",
        "0000000000000001:0000000000000010:8",
        "0000000000000002:0000000000000010:7",
        "0000000000000001:0000000000000010",
        "0000000000000001:0000000000000010:seven",
        "",
    ] {
        assert!(s.request(other).await.unwrap().is_none(), "{other:?}");
        assert!(s.audit_trail(other).await.unwrap().is_empty(), "{other:?}");
    }
    // The same originator and counter cannot be used again, whatever the target.
    let again = s.insert_request(request("0000000000000001:0000000000000099:7")).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    // An id of another form is not stored.
    assert!(s.insert_request(request("seven")).await.is_err());
    let forward = s
        .forward_read("0000000000000001:0000000000000099:7", &pid("acme"), &pid("dno"), t("2026-01-02T00:00:00Z"))
        .await;
    assert!(matches!(forward, Err(StoreError::NotFound(_))), "{forward:?}");
    s.close().await;
}

// R-SR-1: a response is recorded once. A completion heard again (by number or by id) changes
// nothing; one for a request that is not there is refused, and nothing of its batch is
// written.
#[tokio::test]
async fn a_completion_heard_twice_is_recorded_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path(), opts()).unwrap();
    let id = "0000000000000001:0000000000000010:3";
    let seq = s.insert_request(request(id)).await.unwrap().seq;
    let answer = |by_number: bool, body: &str| store::Completion {
        request_id: id.to_string(),
        request_seq: by_number.then_some(seq),
        party: pid("acme"),
        at: t("2026-01-01T00:01:00Z"),
        outcome: store::ResponseOutcome::Done,
        body: body.to_string(),
        effects: Vec::new(),
    };
    s.complete_requests(vec![answer(true, "{\"first\":1}")]).await.unwrap();
    s.complete_requests(vec![answer(true, "{\"second\":2}")]).await.unwrap();
    s.complete_requests(vec![answer(false, "{\"third\":3}")]).await.unwrap();
    let (r, response) = s.request(id).await.unwrap().expect("stored");
    assert_eq!(r.status, store::RequestStatus::Completed);
    assert_eq!(response.expect("answered").body, "{\"first\":1}");
    let events: Vec<String> = s.audit_trail(id).await.unwrap().into_iter().map(|a| a.event).collect();
    assert_eq!(events, ["accepted", "completed"]);
    // A completion for a request that is not there (a wrong number, an unknown id) is
    // refused with its whole batch.
    let other = "0000000000000001:0000000000000010:4";
    let other_seq = s.insert_request(request(other)).await.unwrap().seq;
    let stray = store::Completion { request_id: "0000000000000001:0000000000000010:99".into(), ..answer(false, "{}") };
    let wrong_number = store::Completion { request_seq: Some(other_seq), ..answer(true, "{}") };
    for bad in [stray, wrong_number] {
        let batch = vec![
            store::Completion { request_id: other.into(), request_seq: Some(other_seq), ..answer(true, "{}") },
            bad,
        ];
        let e = s.complete_requests(batch).await.unwrap_err();
        assert!(matches!(e, StoreError::NotFound(_)), "{e}");
        let (r, response) = s.request(other).await.unwrap().expect("stored");
        assert_eq!((r.status, response), (store::RequestStatus::Queued, None), "nothing of the batch was written");
    }
    s.close().await;
}

/// Systems read together (as a dispatch round reads them) come back as each read alone
/// would, in the order asked; a missing one is left out.
#[tokio::test]
async fn systems_read_together_are_as_each_read_alone() {
    use store::FleetStore;
    let dir = tempfile::tempdir().unwrap();
    let fleet = store::sqlite::SqliteFleetStore::open(dir.path(), opts()).unwrap();
    for id in 1..=3_u8 {
        let hub = Eui64::from_u64(0x100 * u64::from(id));
        let meter = Eui64::from_u64(0x100 * u64::from(id) + 1);
        fleet.add_system(i64::from(id), hub, vec![hub, meter], vec![id; 4]).await.unwrap();
    }
    fleet.save_system(2, vec![9, 9], None).await.unwrap();
    let together = fleet.load_systems(vec![3, 99, 1, 2]).await.unwrap();
    assert_eq!(together, vec![(3, vec![3; 4]), (1, vec![1; 4]), (2, vec![9, 9])]);
    for (id, state) in &together {
        assert_eq!(fleet.load_system(*id).await.unwrap().as_ref(), Some(state));
    }
    assert_eq!(fleet.load_systems(Vec::new()).await.unwrap(), Vec::new());
    fleet.close().await;
}

/// Fleet schema version 3 adds the packed state without rewriting a row: a system saved
/// as JSON before still loads (as its JSON text) until it is next saved, in the new column.
#[tokio::test]
async fn a_fleet_saved_before_version_3_still_loads_and_is_packed_when_next_saved() {
    use store::FleetStore;
    use store::sqlite::SqliteFleetStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.sqlite3");
    {
        // The fleet database as version 2 left it, with one system saved as JSON.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(include_str!("../migrations/fleet_0001_initial.sql")).unwrap();
        conn.execute_batch(include_str!("../migrations/fleet_0002_wakeups.sql")).unwrap();
        conn.execute_batch(
            "PRAGMA user_version = 2; \
             INSERT INTO systems (id, comms_hub, state, wake_at) VALUES (7, '9E37000000000038', '{\"system\":{}}', 5); \
             INSERT INTO device_index (eui, system_id) VALUES ('9E37000000000039', 7);",
        )
        .unwrap();
    }
    let fleet = SqliteFleetStore::open(dir.path(), opts()).unwrap();
    assert_eq!(fleet.load_system(7).await.unwrap().as_deref(), Some(&b"{\"system\":{}}"[..]));
    assert_eq!(fleet.system_of(Eui64::from_u64(0x9E37_0000_0000_0039)).await.unwrap(), Some(7));
    fleet.save_system(7, vec![1, 2, 3], None).await.unwrap();
    assert_eq!(fleet.load_system(7).await.unwrap(), Some(vec![1, 2, 3]));
    fleet.close().await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    let (state, packed): (String, Vec<u8>) =
        conn.query_row("SELECT state, packed FROM systems WHERE id = 7", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert_eq!(
        (state.as_str(), packed.as_slice()),
        ("", &[1u8, 2, 3][..]),
        "the JSON is not kept beside the packed form"
    );
}

/// R-RD-1: a party's reads over a period are exactly those whose time is in it, however the
/// times of responses run against the order they were written (a round that answered
/// earlier may commit later, across an hour's boundary), paged by number; another party's
/// responses, in the same hours, are never in them.
#[tokio::test]
async fn reads_over_a_period_are_those_in_it_whatever_order_they_were_written() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path(), opts()).unwrap();
    // (party, when it answered), in the order written.
    let written = [
        ("acme", "2026-01-01T09:59:59.999999Z"),
        ("acme", "2026-01-01T10:00:00Z"),
        ("beta", "2026-01-01T08:30:00Z"),
        ("acme", "2026-01-01T09:40:00Z"),
        ("acme", "2026-01-01T10:59:00Z"),
        ("beta", "2026-01-01T10:10:00Z"),
        ("acme", "2026-01-01T10:30:00Z"),
        ("acme", "2026-01-01T11:00:00Z"),
        ("acme", "2026-01-01T08:00:00Z"),
        ("acme", "2026-01-01T12:15:00Z"),
        ("acme", "2026-01-01T10:20:00.5Z"),
        // A simulated clock may be set anywhere, even before 1970.
        ("acme", "1970-01-01T00:30:00Z"),
        ("acme", "1969-12-31T23:30:00Z"),
    ];
    let mut stored = Vec::new();
    for (i, (party, at)) in written.iter().enumerate() {
        let id = format!("0000000000000001:0000000000000010:{}", i + 1);
        let seq = s.insert_request(store::RequestRecord { party: pid(party), ..request(&id) }).await.unwrap().seq;
        let done = store::Completion {
            request_id: id.clone(),
            request_seq: Some(seq),
            party: pid(party),
            at: t(at),
            outcome: store::ResponseOutcome::Done,
            body: "{}".into(),
            effects: Vec::new(),
        };
        s.complete_requests(vec![done]).await.unwrap();
        stored.push((*party, t(at), id));
    }
    let windows = [
        ("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"),
        ("2026-01-01T10:00:00Z", "2026-01-01T11:00:00Z"),
        ("2026-01-01T09:59:59.999999Z", "2026-01-01T10:00:00.000001Z"),
        ("2026-01-01T10:20:00.5Z", "2026-01-01T10:59:00Z"),
        ("2026-01-01T10:25:00Z", "2026-01-01T13:00:00Z"),
        ("2026-01-01T08:00:00Z", "2026-01-01T09:45:00Z"),
        ("2026-01-01T12:15:00.000001Z", "2026-01-02T00:00:00Z"),
        ("2025-12-31T00:00:00Z", "2026-01-01T08:00:00Z"),
        ("1969-12-31T23:45:00Z", "1970-01-01T00:45:00Z"),
        ("1969-12-31T23:00:00Z", "2027-01-01T00:00:00Z"),
    ];
    for party in ["acme", "beta"] {
        for (from, to) in windows {
            let (from, to) = (t(from), t(to));
            let expected: Vec<&str> = stored
                .iter()
                .filter(|(p, at, _)| *p == party && *at >= from && *at < to)
                .map(|(_, _, id)| id.as_str())
                .collect();
            let all = s.reads_between(&pid(party), &["4.1.1"], from, to, 0, 100).await.unwrap();
            let ids: Vec<&str> = all.iter().map(|r| r.response.request_id.as_str()).collect();
            assert_eq!(ids, expected, "{party} from {from} to {to}");
            // Two at a time, each page after the last one's number: the same reads.
            let mut paged = Vec::new();
            let mut after = 0;
            loop {
                let page = s.reads_between(&pid(party), &["4.1.1"], from, to, after, 2).await.unwrap();
                let Some(last) = page.last() else { break };
                after = last.response.seq;
                paged.extend(page.into_iter().map(|r| r.response.request_id));
            }
            assert_eq!(paged, expected, "{party} from {from} to {to}, paged");
        }
    }
    s.close().await;
}
