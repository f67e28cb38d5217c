//! Schedules the hub runs (SRV 5.1/5.2/5.3) and reads distribution through the HTTP API:
//! scheduled reads reach the supplier streamed as collected and as per-day batches with the
//! same data (R-RD-2); the supplier forwards reads to the network operator, who sees only
//! those (R-RD-1). Days pass on the manual clock.

mod common;

use axum::http::{Method, StatusCode};
use common::*;
use serde_json::{Value, json};

async fn advance(m: &Market, by: &str) {
    let (s, v) = m.w.call(Method::POST, "/v1/clock/advance", &m.w.operator, Some(json!({"by": by}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// Make the due schedule runs and run every queued request; returns the runs made.
async fn run_due(m: &Market) -> usize {
    let made = m.w.hub.run_schedules_due().await.unwrap();
    while m.w.hub.dispatch_due().await.unwrap() > 0 {}
    made
}

async fn responses_after(m: &Market, token: &str, after: i64) -> Vec<Value> {
    let (s, v) = m.w.call(Method::GET, &format!("/v1/responses?after={after}&limit=1000"), token, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v.as_array().unwrap().clone()
}

async fn batch(m: &Market, token: &str, day: &str) -> Vec<Value> {
    let (s, v) = m.w.call(Method::GET, &format!("/v1/reads/days/{day}"), token, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["next_after"], Value::Null, "one page holds the day");
    v["reads"].as_array().unwrap().clone()
}

async fn last_seq(m: &Market, token: &str) -> i64 {
    responses_after(m, token, 0).await.last().map(|r| r["seq"].as_i64().unwrap()).unwrap_or(0)
}

/// Create a schedule; returns its id (the 5.1 request's id).
async fn schedule(m: &Market, token: &str, mpxn: &str, body: Value) -> String {
    let (s, ack) = m.w.submit(token, "5.1", json!({"mpxn": mpxn}), body).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{ack}");
    // The hub answers schedule management itself, at once.
    assert_eq!(ack["status"], json!("completed"), "{ack}");
    let (_, done) = m.w.call(Method::GET, &format!("/v1/requests/{}", ack["id"].as_str().unwrap()), token, None).await;
    assert_eq!(done["response"]["outcome"], json!("done"), "{done}");
    assert_eq!(done["response"]["body"]["schedule_id"], ack["id"]);
    ack["id"].as_str().unwrap().to_string()
}

// SRV 5.1/5.2/5.3 and R-RD-2: daily schedules run at their London time; each run's result is
// streamed as collected and appears in that day's batch, the same records both ways.
#[tokio::test]
async fn schedules_run_daily_and_reads_are_streamed_and_batched_alike() {
    let m = market().await;
    enrolled_home(&m).await;
    let before = last_seq(&m, &m.acme).await;
    // START is Monday 2026-01-05 09:00 GMT; runs from Tuesday 01:00.
    let profile =
        schedule(&m, &m.acme, MPAN, json!({"srv": "4.8.1", "every": "day", "start": "2026-01-06T01:00:00Z"})).await;
    let registers =
        schedule(&m, &m.acme, MPAN, json!({"srv": "4.1.1", "every": "day", "start": "2026-01-06T01:00:00Z"})).await;

    // 5.2 lists the caller's live schedules on the target.
    let (_, ack) = m.w.submit(&m.acme, "5.2", json!({"mpxn": MPAN}), json!({})).await;
    let (_, listed) =
        m.w.call(Method::GET, &format!("/v1/requests/{}", ack["id"].as_str().unwrap()), &m.acme, None).await;
    let ids: Vec<&str> = listed["response"]["body"]["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["schedule_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [profile.as_str(), registers.as_str()]);

    assert_eq!(run_due(&m).await, 0, "nothing is due before the first run");
    // Three days pass: a run of each schedule at 01:00 on Tuesday, Wednesday and Thursday.
    for _ in 0..3 {
        advance(&m, "P1D").await;
        assert_eq!(run_due(&m).await, 2);
        assert_eq!(run_due(&m).await, 0, "each run is made once");
    }

    let streamed: Vec<Value> = responses_after(&m, &m.acme, before).await;
    let scheduled: Vec<&Value> = streamed
        .iter()
        .filter(|r| {
            r["request_id"] != json!(profile) && r["request_id"] != json!(registers) && r["request_id"] != ack["id"]
        })
        .collect();
    assert_eq!(scheduled.len(), 6, "{streamed:?}");
    assert!(scheduled.iter().all(|r| r["outcome"] == json!("done")), "{scheduled:?}");

    let mut batched: Vec<Value> = Vec::new();
    let mut windows: Vec<(String, String)> = Vec::new();
    for day in ["2026-01-06", "2026-01-07", "2026-01-08"] {
        let reads = batch(&m, &m.acme, day).await;
        assert_eq!(reads.len(), 2, "{day}: {reads:?}");
        for r in &reads {
            let sid = r["schedule_id"].as_str().unwrap();
            assert!(sid == profile || sid == registers, "{r}");
            if r["srv"] == json!("4.8.1") {
                let b = &r["response"]["body"];
                windows.push((b["from"].as_str().unwrap().into(), b["to"].as_str().unwrap().into()));
                if b["from"] != json!("2026-01-05T09:00:00Z") {
                    assert_eq!(b["half_hours"].as_array().unwrap().len(), 48, "a whole day of half hours: {b}");
                }
            }
        }
        batched.extend(reads.into_iter().map(|r| r["response"].clone()));
    }
    // Same data both ways.
    let streamed_owned: Vec<Value> = scheduled.into_iter().cloned().collect();
    assert_eq!(batched, streamed_owned);
    // Consecutive profile runs cover time without gap or overlap.
    // The first run asks from Monday 01:00; the meter has data only from its installation.
    assert_eq!(windows[0], ("2026-01-05T09:00:00Z".into(), "2026-01-06T01:00:00Z".into()));
    for w in windows.windows(2) {
        assert_eq!(w[0].1, w[1].0);
    }
    // A day with no runs is an empty batch; a malformed day names the field.
    assert!(batch(&m, &m.acme, "2026-01-05").await.is_empty());
    let (s, v) = m.w.call(Method::GET, "/v1/reads/days/2026-13-01", &m.acme, None).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("day")), "{v}");

    // 5.3 deletes: no more runs of it. Another party cannot delete it or learn of it.
    let (s, v) = m.w.submit(&m.dno, "5.3", json!({"mpxn": MPAN}), json!({"schedule_id": registers})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, ack) = m.w.submit(&m.acme, "5.3", json!({"mpxn": MPAN}), json!({"schedule_id": registers})).await;
    assert_eq!((s, ack["status"].as_str()), (StatusCode::ACCEPTED, Some("completed")), "{ack}");
    let (s, v) = m.w.submit(&m.acme, "5.3", json!({"mpxn": MPAN}), json!({"schedule_id": registers})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "deleting twice: {v}");
    advance(&m, "P1D").await;
    assert_eq!(run_due(&m).await, 1, "only the profile schedule is left");
    m.w.close().await;
}

// Bad schedules are refused whole, naming the field; the scheduled read must be the
// caller's to send.
#[tokio::test]
async fn schedule_requests_are_checked_and_authorised() {
    let m = market().await;
    enrolled_home(&m).await;
    for (body, field) in [
        (json!({"srv": "3.1", "every": "day", "start": "2026-01-06"}), "body.srv"),
        (json!({"srv": "4.8.1", "every": "hour", "start": "2026-01-06"}), "body.every"),
        (json!({"srv": "4.8.1", "every": "day", "start": "2025-12-01"}), "body.start"),
        (json!({"srv": "4.8.1", "every": "day"}), "body.start"),
        (json!({"srv": "4.8.1", "every": "day", "start": "2026-01-06", "end": "2026-01-06"}), "body.end"),
        (json!({"srv": "4.8.1", "every": "day", "start": "2026-01-06", "colour": "red"}), "body.colour"),
    ] {
        let (s, v) = m.w.submit(&m.acme, "5.1", json!({"mpxn": MPAN}), body.clone()).await;
        assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{body}: {v}");
    }
    // A supplier that is not the registered one, and a network operator of the wrong fuel.
    let (s, v) = m
        .w
        .submit(&m.bright, "5.1", json!({"mpxn": MPAN}), json!({"srv": "4.8.1", "every": "day", "start": "2026-01-06"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    // The network operator may schedule its own profile reads (ED may send 4.8.1).
    schedule(&m, &m.dno, MPAN, json!({"srv": "4.8.1", "every": "week", "start": "2026-01-06"})).await;
    // Up to the bound of live schedules per party and device.
    for _ in 1..store::SCHEDULES_PER_TARGET_MAX {
        schedule(&m, &m.dno, MPAN, json!({"srv": "4.17", "every": "week", "start": "2026-01-06"})).await;
    }
    let (s, v) = m
        .w
        .submit(&m.dno, "5.1", json!({"mpxn": MPAN}), json!({"srv": "4.17", "every": "week", "start": "2026-01-06"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("at most"), "{v}");
    m.w.close().await;
}

// A schedule survives a restart; runs missed while the hub was down are each made once, in
// order, each for its own period; two schedulers racing make no run twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_survive_a_restart_and_no_run_is_made_twice() {
    let mut m = market().await;
    enrolled_home(&m).await;
    let id = schedule(
        &m,
        &m.acme,
        MPAN,
        json!({"srv": "4.17", "every": "day", "start": "2026-01-06T02:00:00Z", "end": "2026-01-09T02:00:00Z"}),
    )
    .await;
    let clock = m.w.clock.clone();
    m.w.close().await;
    m.w = open_world(m._dir.path(), clock).await;
    // The hub comes back after the runs' times: ten days later.
    advance(&m, "P10D").await;
    let before = last_seq(&m, &m.acme).await;
    let (a, b) = tokio::join!(m.w.hub.run_schedules_due(), m.w.hub.run_schedules_due());
    assert_eq!(a.unwrap() + b.unwrap(), 4, "runs on the 6th, 7th, 8th and 9th (the end), once each");
    while m.w.hub.dispatch_due().await.unwrap() > 0 {}
    let got = responses_after(&m, &m.acme, before).await;
    let windows: Vec<(&str, &str)> =
        got.iter().map(|r| (r["body"]["from"].as_str().unwrap(), r["body"]["to"].as_str().unwrap())).collect();
    assert_eq!(
        windows,
        [
            ("2026-01-05T09:00:00Z", "2026-01-06T02:00:00Z"), // the meter's data starts at installation
            ("2026-01-06T02:00:00Z", "2026-01-07T02:00:00Z"),
            ("2026-01-07T02:00:00Z", "2026-01-08T02:00:00Z"),
            ("2026-01-08T02:00:00Z", "2026-01-09T02:00:00Z"),
        ]
    );
    // Finished: 5.2 no longer shows a next run.
    let (_, ack) = m.w.submit(&m.acme, "5.2", json!({"mpxn": MPAN}), json!({"schedule_id": id})).await;
    let (_, v) = m.w.call(Method::GET, &format!("/v1/requests/{}", ack["id"].as_str().unwrap()), &m.acme, None).await;
    assert_eq!(v["response"]["body"]["schedules"][0]["runs"], json!(4), "{v}");
    assert_eq!(v["response"]["body"]["schedules"][0]["next_run"], Value::Null, "{v}");
    m.w.close().await;
}

// R-RD-1: the registered supplier forwards its reads to the network operator of the metering
// point through the hub; the operator sees only what was forwarded (and its own reads).
#[tokio::test]
async fn suppliers_forward_reads_to_the_network_operator_who_sees_only_those() {
    let m = market().await;
    enrolled_home(&m).await;
    let read = m.w.run(&m.acme, "4.1.1", json!({"mpxn": MPAN}), json!({}), None).await;
    let id = read["id"].as_str().unwrap();

    // Not forwarded yet: the operator cannot see it at all.
    let (s, _) = m.w.call(Method::GET, &format!("/v1/requests/{id}"), &m.dno, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, inbox) = m.w.call(Method::GET, "/v1/reads/forwarded", &m.dno, None).await;
    assert_eq!(inbox, json!([]));

    let (s, f) = m.w.call(Method::POST, &format!("/v1/reads/{id}/forward"), &m.acme, Some(json!({}))).await;
    assert_eq!(s, StatusCode::OK, "{f}");
    assert_eq!((f["from"].as_str(), f["to"].as_str()), (Some("acme"), Some("dno-13")));
    // Forwarding again is harmless: the same forward.
    let (_, again) = m.w.call(Method::POST, &format!("/v1/reads/{id}/forward"), &m.acme, Some(json!({}))).await;
    assert_eq!(again, f);

    let (s, inbox) = m.w.call(Method::GET, "/v1/reads/forwarded", &m.dno, None).await;
    assert_eq!(s, StatusCode::OK, "{inbox}");
    assert_eq!(inbox.as_array().unwrap().len(), 1);
    assert_eq!(inbox[0]["read"]["response"], read["response"], "the operator gets the supplier's read as it was");
    assert_eq!(inbox[0]["read"]["mpxn"], json!(MPAN));
    // Still not the operator's request.
    let (s, _) = m.w.call(Method::GET, &format!("/v1/requests/{id}"), &m.dno, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Gas reads go to the gas transporter.
    let gas = m.w.run(&m.acme, "4.1.1", json!({"mpxn": "3938424403"}), json!({}), None).await;
    let (_, f) =
        m.w.call(Method::POST, &format!("/v1/reads/{}/forward", gas["id"].as_str().unwrap()), &m.acme, Some(json!({})))
            .await;
    assert_eq!(f["to"], json!("cadent"), "{f}");

    // Refusals, each with its reason.
    let (s, v) =
        m.w.call(Method::POST, &format!("/v1/reads/{id}/forward"), &m.acme, Some(json!({"to": "cadent"}))).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("to")), "{v}");
    let shown = m.w.run(&m.acme, "3.1", json!({"mpxn": MPAN}), json!({"message": "Hello"}), None).await;
    let (s, v) = m
        .w
        .call(Method::POST, &format!("/v1/reads/{}/forward", shown["id"].as_str().unwrap()), &m.acme, Some(json!({})))
        .await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("request_id")), "{v}");
    let (s, _) = m.w.call(Method::POST, &format!("/v1/reads/{id}/forward"), &m.bright, Some(json!({}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "another supplier's read");
    let (s, v) = m.w.call(Method::POST, &format!("/v1/reads/{id}/forward"), &m.dno, Some(json!({}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "operators do not forward: {v}");
    let (s, _) = m.w.call(Method::GET, "/v1/reads/forwarded", &m.acme, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "suppliers have no forwarded reads");

    // The operator's own reads are its own, in its own batch; not in the supplier's.
    let own = m.w.run(&m.dno, "4.1.1", json!({"mpxn": MPAN}), json!({}), None).await;
    let day = &own["response"]["at"].as_str().unwrap()[..10];
    let dno_batch = batch(&m, &m.dno, day).await;
    assert_eq!(dno_batch.len(), 1);
    assert_eq!(dno_batch[0]["response"], own["response"]);
    let acme_batch = batch(&m, &m.acme, day).await;
    assert_eq!(acme_batch.len(), 2, "acme's electricity and gas reads: {acme_batch:?}");
    assert!(acme_batch.iter().all(|r| r["response"]["request_id"] != own["id"]));
    m.w.close().await;
}

// A run is checked at its time against the meter it goes to: once the meter serves another
// metering point, the schedule's runs are refused rather than reading someone else's data.
// The owner can still delete its schedule after losing the supply; another supplier cannot
// link the meter it does not own.
#[tokio::test]
async fn runs_stop_when_the_meter_serves_another_point_and_owners_can_always_delete() {
    let m = market().await;
    let home = enrolled_home(&m).await;
    let id =
        schedule(&m, &m.acme, MPAN, json!({"srv": "4.1.1", "every": "day", "start": "2026-01-06T01:00:00Z"})).await;
    let other = "2499999999991";
    let body = json!({"effective_from": "2025-01-01", "supplier": "acme", "network_operator": "dno-13", "meter_type": "smart-compliant"});
    let (s, v) =
        m.w.call(Method::POST, &format!("/v1/metering-points/{other}/registrations"), &m.reg, Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let meter = device_of(&home, "electricity-meter");
    let r = m.w.run(&m.acme, "6.20.1", json!({"device": meter}), json!({"mpxn": other}), None).await;
    assert_eq!(r["response"]["outcome"], json!("done"), "{r}");

    advance(&m, "P1D").await;
    let before = last_seq(&m, &m.acme).await;
    assert_eq!(run_due(&m).await, 1);
    let got = responses_after(&m, &m.acme, before).await;
    assert_eq!(got[0]["outcome"], json!("failed"), "{got:?}");
    assert!(got[0]["body"]["error"].as_str().unwrap().contains("does not serve"), "{got:?}");

    // MPAN passes to bright today: it cannot link acme's meter, and acme can still delete.
    let body = json!({"effective_from": "2026-01-06", "supplier": "bright", "network_operator": "dno-13", "meter_type": "smart-compliant"});
    let (s, v) = m.w.call(Method::POST, &format!("/v1/metering-points/{MPAN}/registrations"), &m.reg, Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = m.w.submit(&m.bright, "6.20.1", json!({"device": meter}), json!({"mpxn": MPAN})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("trusts acme"), "{v}");
    let (s, ack) = m.w.submit(&m.acme, "5.3", json!({"device": meter}), json!({"schedule_id": id})).await;
    assert_eq!((s, ack["status"].as_str()), (StatusCode::ACCEPTED, Some("completed")), "{ack}");
    m.w.close().await;
}
