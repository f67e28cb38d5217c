//! The service request pipeline end to end through the HTTP API, with the in-process fleet:
//! install a home, commission it with signed critical commands, enrol it, then read it as the
//! supplier and the network operator; every refusal on the way says why (R-SR-1..4, R-REG-2).

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::*;
use domain::crypto::{SigningKey, SystemRandom};
use hub::ManualClock;
use hub::transport::TransportError;
use serde_json::{Value, json};
use store::Store as _;
use tower::ServiceExt;

// R-REG-2: enrolment is commissioning (8.1.1) then linking (6.20.1); only then does the
// registry's enrolled flag become true and ordinary requests run.
#[tokio::test]
async fn enrolment_sets_the_registry_flag_and_unlocks_requests() {
    let m = market().await;
    let p = installed_home(&m).await;
    // Not yet linked: requests by MPxN are refused with the reason.
    let (s, v) = m.w.submit(&m.acme, "4.1.1", json!({"mpxn": MPAN}), json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("not enrolled"), "{v}");
    let (_, view) = m.w.call(Method::GET, &format!("/v1/metering-points/{MPAN}"), &m.acme, None).await;
    assert_eq!(view["enrolled"], json!(false));

    let elec = device_of(&p, "electricity-meter");
    // Linking to the other fuel's MPxN, or to a traditional meter's, is refused.
    let (s, v) = m.w.submit(&m.acme, "6.20.1", json!({"device": elec}), json!({"mpxn": "3938424403"})).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("body.mpxn")), "{v}");
    let (s, v) = m.w.submit(&m.acme, "6.20.1", json!({"device": elec}), json!({"mpxn": "1700053058802"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("traditional"), "{v}");
    // Another supplier may not link acme's meter to acme's MPxN.
    let (s, v) = m.w.submit(&m.bright, "6.20.1", json!({"device": elec}), json!({"mpxn": MPAN})).await;
    assert_eq!((s, v["missing"].as_str()), (StatusCode::FORBIDDEN, Some("relationship")), "{v}");

    let r = m.w.run(&m.acme, "6.20.1", json!({"device": elec}), json!({"mpxn": MPAN}), None).await;
    assert_eq!(r["response"]["outcome"], json!("done"), "{r}");
    let (_, view) = m.w.call(Method::GET, &format!("/v1/metering-points/{MPAN}"), &m.acme, None).await;
    assert_eq!(view["enrolled"], json!(true), "{view}");
    let (_, pv) = m.w.call(Method::GET, &format!("/v1/premises/{}", p["id"]), &m.acme, None).await;
    let meter = pv["devices"].as_array().unwrap().iter().find(|d| d["kind"] == json!("electricity-meter")).unwrap();
    assert_eq!(meter["mpxn"], json!(MPAN));
    assert!(meter["commissioned_at"].is_string());

    let r = m.w.run(&m.acme, "4.1.1", json!({"mpxn": MPAN}), json!({}), None).await;
    assert_eq!(r["response"]["outcome"], json!("done"), "{r}");
    assert!(r["response"]["body"]["import_wh"].as_u64().is_some(), "{r}");
    m.w.close().await;
}

// R-SR-2: the hub hands out the exact bytes to sign and does not judge signatures; the
// device refuses a bad one, and a critical request never runs unsigned.
#[tokio::test]
async fn critical_requests_need_the_right_signature() {
    let m = market().await;
    let (s, p) = m.w.call(Method::POST, "/v1/premises", &m.acme, Some(json!({"electricity": "economy-7"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let chf = device_of(&p, "comms-hub");
    let (s, ack) = m.w.submit(&m.acme, "8.1.1", json!({"device": chf}), json!({})).await;
    assert_eq!((s, ack["status"].as_str()), (StatusCode::ACCEPTED, Some("awaiting-signature")), "{ack}");
    // Unsigned, it does not run however often the dispatcher looks.
    assert_eq!(m.w.hub.dispatch_due().await.unwrap(), 0);
    // Signed with a key the device does not trust: the device refuses.
    let wrong = SigningKey::generate(&SystemRandom::new()).unwrap();
    m.w.sign(&m.acme, &ack, &wrong).await;
    let r = m.w.settle(&m.acme, &ack).await;
    assert_eq!(r["response"]["outcome"], json!("device-refused"), "{r}");
    assert_eq!(r["response"]["body"]["code"], json!("signature-invalid"), "{r}");
    assert!(!m.w.fleet.system(chf.parse().unwrap()).await.unwrap().devices[0].commissioned);
    // A request already signed cannot be signed again.
    let (s, _) = m.w.sign(&m.acme, &ack, &m.acme_key).await;
    assert_eq!(s, StatusCode::CONFLICT);
    // The audit trail tells the story.
    let (_, trail) =
        m.w.call(Method::GET, &format!("/v1/requests/{}/audit", ack["id"].as_str().unwrap()), &m.acme, None).await;
    let events: Vec<&str> = trail.as_array().unwrap().iter().map(|a| a["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["accepted", "queued", "completed"]);
    // With the right key it runs.
    let r = m.w.run(&m.acme, "8.1.1", json!({"device": chf}), json!({}), Some(&m.acme_key)).await;
    assert_eq!(r["response"]["outcome"], json!("done"), "{r}");
    m.w.close().await;
}

// R-SR-1, R-COS-4: who may read what, and the supplier's reads stay inside its period.
#[tokio::test]
async fn reads_by_role_and_relationship_with_data_windows() {
    let m = market().await;
    enrolled_home(&m).await;
    // The registered supplier, the network operator: allowed. Another supplier: refused.
    let r = m.w.run(&m.acme, "4.1.1", json!({"mpxn": MPAN}), json!({}), None).await;
    assert_eq!(r["response"]["outcome"], json!("done"), "{r}");
    // Nine hours after installation, the distributor reads the profile since then.
    m.w.clock.advance_to("2026-01-05T18:00:00Z".parse().unwrap());
    let r = m.w.run(&m.dno, "4.8.1", json!({"mpxn": MPAN}), json!({"from": "2026-01-04T00:00:00Z"}), None).await;
    assert_eq!(r["response"]["body"]["half_hours"].as_array().unwrap().len(), 18, "{r}");
    let (s, v) = m.w.submit(&m.bright, "4.1.1", json!({"mpxn": MPAN}), json!({})).await;
    assert_eq!((s, v["missing"].as_str()), (StatusCode::FORBIDDEN, Some("relationship")), "{v}");
    let (s, v) = m.w.submit(&m.dno, "7.2", json!({"mpxn": MPAN}), json!({})).await;
    assert_eq!((s, v["missing"].as_str()), (StatusCode::FORBIDDEN, Some("role")), "{v}");
    let (s, v) = m.w.submit(&m.reg, "4.1.1", json!({"mpxn": MPAN}), json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");

    // acme's period on this MPAN began on 1 January 2025, but the meter was installed today:
    // the daily log starts at installation.
    m.w.clock.advance_to("2026-01-20T09:00:00Z".parse().unwrap());
    let r = m.w.run(&m.acme, "4.17", json!({"mpxn": MPAN}), json!({"from": "2025-06-01T00:00:00Z"}), None).await;
    let days = r["response"]["body"]["days"].as_array().unwrap();
    assert_eq!(days.first().unwrap()[0], json!("2026-01-06"), "{r}");
    assert_eq!(days.last().unwrap()[0], json!("2026-01-19"));

    // A switch to bright from 15 January: acme now reads nothing after it, bright nothing before.
    let body = json!({"effective_from": "2026-01-15", "supplier": "bright", "network_operator": "dno-13", "meter_type": "smart-compliant"});
    let (s, _) = m.w.call(Method::POST, &format!("/v1/metering-points/{MPAN}/registrations"), &m.reg, Some(body)).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = m.w.submit(&m.acme, "4.1.1", json!({"mpxn": MPAN}), json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "the outgoing supplier no longer reads the meter");
    let r = m.w.run(&m.bright, "4.8.1", json!({"mpxn": MPAN}), json!({"from": "2026-01-10T00:00:00Z"}), None).await;
    assert_eq!(r["response"]["outcome"], json!("done"), "{r}");
    assert_eq!(r["response"]["body"]["from"], json!("2026-01-15T00:00:00Z"), "{r}");
    m.w.close().await;
}

#[tokio::test]
async fn display_status_firmware_alerts_and_han_log() {
    let m = market().await;
    let p = enrolled_home(&m).await;
    let r = m.w.run(&m.acme, "3.1", json!({"mpxn": MPAN}), json!({"message": "Cheaper power tonight"}), None).await;
    assert_eq!(r["response"]["outcome"], json!("done"), "{r}");
    let ihd: domain::Eui64 = device_of(&p, "in-home-display").parse().unwrap();
    assert_eq!(m.w.fleet.ihd_view(ihd).await.unwrap()["message"], json!("Cheaper power tonight"));

    let r = m.w.run(&m.dno, "7.4", json!({"mpxn": MPAN}), json!({}), None).await;
    assert_eq!(r["response"]["body"]["supply"], json!("enabled"), "{r}");
    let r = m.w.run(&m.dno, "11.2", json!({"device": device_of(&p, "comms-hub")}), json!({}), None).await;
    assert_eq!(r["response"]["body"]["firmware"], json!("1.0.0"), "{r}");

    // 6.22: the meter stops sending an alert.
    let r =
        m.w.run(&m.acme, "6.22", json!({"mpxn": MPAN}), json!({"alert_code": "0x8f35", "enabled": false}), None).await;
    assert_eq!(r["response"]["body"]["alert_code"], json!("0x8F35"), "{r}");
    let meter: domain::Eui64 = device_of(&p, "electricity-meter").parse().unwrap();
    let system = m.w.fleet.system(meter).await.unwrap();
    assert_eq!(system.meter(meter).unwrap().disabled_alerts, vec![0x8F35]);

    // 8.11 by MPxN reaches the comms hub; the log is bounded.
    let adds: Vec<String> = (0..20u64).map(|i| domain::Eui64::from_u64(0xAB00 + i).to_string()).collect();
    let r = m.w.run(&m.acme, "8.11", json!({"mpxn": MPAN}), json!({"add": adds[..10]}), None).await;
    assert_eq!(r["response"]["outcome"], json!("done"), "{r}");
    let r = m.w.run(&m.acme, "8.11", json!({"mpxn": MPAN}), json!({"add": adds[10..16]}), None).await;
    assert_eq!(r["response"]["body"]["code"], json!("han-log-full"), "{r}");

    // Bodies are checked per SRV before anything is stored.
    for (srv, body, field) in [
        ("3.1", json!({"message": ""}), "body.message"),
        ("3.1", json!({"message": "hi", "colour": "red"}), "body.colour"),
        ("6.22", json!({"alert_code": "8F35", "enabled": false}), "body.alert_code"),
        ("4.8.1", json!({"from": "yesterday"}), "body.from"),
        ("4.1.1", json!({"x": 1}), "body.x"),
        ("9.99", json!({}), "srv"),
    ] {
        let (s, v) = m.w.submit(&m.acme, srv, json!({"mpxn": MPAN}), body).await;
        assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{srv}: {v}");
    }
    // An SRV of the catalogue this hub does not execute yet is refused as such.
    let (s, v) = m.w.submit(&m.acme, "8.3", json!({"mpxn": MPAN}), json!({})).await;
    assert_eq!(s, StatusCode::NOT_IMPLEMENTED, "{v}");
    // 11.1 is the firmware campaign's: the caller is told where to go.
    let (s, v) = m.w.submit(&m.acme, "11.1", json!({"mpxn": MPAN}), json!({})).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("srv")), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("/v1/firmware/campaigns"), "{v}");
    m.w.close().await;
}

// R-SR-3: a future-dated request waits for its time and can be cancelled until then.
#[tokio::test]
async fn future_dated_requests_wait_for_their_time_and_can_be_cancelled() {
    let m = market().await;
    enrolled_home(&m).await;
    let submit = |at: &str| json!({"srv": "4.1.1", "target": {"mpxn": MPAN}, "body": {}, "execute_at": at});
    let (s, later) = m.w.call(Method::POST, "/v1/requests", &m.acme, Some(submit("2026-01-06T09:00:00Z"))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{later}");
    let (_, cancelled) = m.w.call(Method::POST, "/v1/requests", &m.acme, Some(submit("2026-01-06T09:00:00Z"))).await;
    assert_eq!(m.w.hub.dispatch_due().await.unwrap(), 0, "nothing is due yet");
    let id = cancelled["id"].as_str().unwrap();
    let (s, v) = m.w.call(Method::POST, &format!("/v1/requests/{id}/cancel"), &m.acme, None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("cancelled")), "{v}");
    // Another party cannot cancel (or even see) it.
    let (s, _) =
        m.w.call(Method::POST, &format!("/v1/requests/{}/cancel", later["id"].as_str().unwrap()), &m.bright, None)
            .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Past dates, too far ahead, and SRVs that cannot be future-dated are refused.
    for (body, field) in [
        (json!({"srv": "4.1.1", "target": {"mpxn": MPAN}, "execute_at": "2026-01-01T00:00:00Z"}), "execute_at"),
        (json!({"srv": "4.1.1", "target": {"mpxn": MPAN}, "execute_at": "2028-01-01T00:00:00Z"}), "execute_at"),
        (json!({"srv": "7.4", "target": {"mpxn": MPAN}, "execute_at": "2026-01-06T00:00:00Z"}), "execute_at"),
        (json!({"srv": "7.4", "target": {"mpxn": MPAN, "device": "00-00-00-00-00-00-00-01"}}), "target"),
    ] {
        let (s, v) = m.w.call(Method::POST, "/v1/requests", &m.acme, Some(body.clone())).await;
        assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{body}: {v}");
    }
    m.w.hub
        .advance_clock(&m.w.hub.authenticate(&m.w.operator).await.unwrap(), "2026-01-06T09:00:00Z".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(m.w.hub.dispatch_due().await.unwrap(), 1, "only the uncancelled one runs");
    let r = m.w.settle(&m.acme, &later).await;
    assert_eq!(r["response"]["outcome"], json!("done"), "{r}");
    assert_eq!(r["response"]["body"]["read_at"], json!("2026-01-06T09:00:00Z"));
    // Too late to cancel now.
    let (s, _) =
        m.w.call(Method::POST, &format!("/v1/requests/{}/cancel", later["id"].as_str().unwrap()), &m.acme, None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    m.w.close().await;
}

// R-SR-4: responses are fetched by id, waited for, and pulled in order; every response is
// kept once, whatever the restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_delivered_and_nothing_is_lost_or_run_twice_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START.parse().unwrap()));
    let m = {
        let w = open_world(dir.path(), clock.clone()).await;
        let acme_key = SigningKey::generate(&SystemRandom::new()).unwrap();
        let acme = w.party("acme", &["IS"], 1, Some(&acme_key)).await;
        let reg = w.party("reg", &["REG"], 4, None).await;
        w.party("dno-13", &["ED"], 3, None).await;
        let body = json!({"effective_from": "2025-01-01", "supplier": "acme", "network_operator": "dno-13", "meter_type": "smart-compliant"});
        w.call(Method::POST, &format!("/v1/metering-points/{MPAN}/registrations"), &reg, Some(body)).await;
        Market { w, acme, acme_key, bright: String::new(), dno: String::new(), reg, _dir: tempfile::tempdir().unwrap() }
    };
    let (_, p) = m.w.call(Method::POST, "/v1/premises", &m.acme, Some(json!({"electricity": "domestic"}))).await;
    for d in p["devices"].as_array().unwrap() {
        m.w.run(&m.acme, "8.1.1", json!({"device": d["eui"]}), json!({}), Some(&m.acme_key)).await;
    }
    let r =
        m.w.run(&m.acme, "6.20.1", json!({"device": device_of(&p, "electricity-meter")}), json!({"mpxn": MPAN}), None)
            .await;
    assert_eq!(r["response"]["outcome"], json!("done"), "{r}");

    // A long-poll is answered as soon as the dispatcher runs.
    let (_, ack) = m.w.submit(&m.acme, "4.1.1", json!({"mpxn": MPAN}), json!({})).await;
    let id = ack["id"].as_str().unwrap().to_string();
    let waiter = {
        let app = m.w.app.clone();
        let token = m.acme.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let req = Request::get(format!("/v1/requests/{id}?wait=10"))
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap();
            let resp = app.oneshot(req).await.unwrap();
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
            serde_json::from_slice::<Value>(&bytes).unwrap()
        })
    };
    tokio::task::yield_now().await;
    m.w.hub.dispatch_due().await.unwrap();
    let answered = waiter.await.unwrap();
    assert_eq!(answered["response"]["outcome"], json!("done"), "{answered}");

    // Three displays accepted but not yet run when the hub stops.
    let mut pending = Vec::new();
    for i in 0..3 {
        let (s, ack) = m.w.submit(&m.acme, "3.1", json!({"mpxn": MPAN}), json!({"message": format!("note {i}")})).await;
        assert_eq!(s, StatusCode::ACCEPTED);
        pending.push(ack["id"].as_str().unwrap().to_string());
    }
    let (_, before) = m.w.call(Method::GET, "/v1/responses", &m.acme, None).await;
    let seen = before.as_array().unwrap().len();
    m.w.close().await;
    drop(m.w);

    // A new hub over the same data: the accepted requests run, once each.
    let w = open_world(dir.path(), clock.clone()).await;
    assert_eq!(w.hub.dispatch_due().await.unwrap(), 3);
    assert_eq!(w.hub.dispatch_due().await.unwrap(), 0, "nothing runs twice");
    let (_, all) = w.call(Method::GET, "/v1/responses", &m.acme, None).await;
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), seen + 3);
    let seqs: Vec<i64> = all.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order");
    let last = all.last().unwrap()["seq"].as_i64().unwrap();
    let (_, after) = w.call(Method::GET, &format!("/v1/responses?after={}", last - 1), &m.acme, None).await;
    assert_eq!(after.as_array().unwrap().len(), 1);
    // The display shows the last message; each request has exactly one response.
    let ihd: domain::Eui64 = device_of(&p, "in-home-display").parse().unwrap();
    assert_eq!(w.fleet.ihd_view(ihd).await.unwrap()["message"], json!("note 2"));
    for id in pending {
        let (_, r) = w.call(Method::GET, &format!("/v1/requests/{id}"), &m.acme, None).await;
        assert_eq!(r["status"], json!("completed"), "{r}");
    }
    // Counters continue strictly above those handed out before the restart.
    let (_, ack) = w.submit(&m.acme, "7.4", json!({"mpxn": MPAN}), json!({})).await;
    let counter: u64 = ack["id"].as_str().unwrap().rsplit(':').next().unwrap().parse().unwrap();
    assert!(counter > 1000, "a new block after the restart: {counter}");
    w.close().await;
}

// R-SR-5: beyond a party's own threshold, or the hub's, requests are quarantined, the party
// is told in the acknowledgement, and it releases or deletes each one.
#[tokio::test]
async fn anomaly_thresholds_quarantine_until_released_or_deleted() {
    let m = market().await;
    enrolled_home(&m).await;
    let put = |scope: &str, srv: &str| format!("/v1/anomaly-thresholds/{scope}/{srv}");
    let (s, v) =
        m.w.call(Method::PUT, &put("own", "4.1.1"), &m.acme, Some(json!({"window_seconds": 3600, "max_requests": 2})))
            .await;
    assert_eq!((s, v["scope"].as_str()), (StatusCode::OK, Some("acme")), "{v}");
    // Only the operator sets hub-wide thresholds; inputs are checked.
    let (s, v) =
        m.w.call(Method::PUT, &put("hub", "7.4"), &m.acme, Some(json!({"window_seconds": 3600, "max_requests": 1})))
            .await;
    assert_eq!((s, v["missing"].as_str()), (StatusCode::FORBIDDEN, Some("role")), "{v}");
    for (uri, body, field) in [
        (put("own", "4.1.1"), json!({"window_seconds": 0, "max_requests": 1}), "window_seconds"),
        (put("own", "4.1.1"), json!({"window_seconds": 60, "max_requests": -1}), "max_requests"),
        (put("own", "9.9"), json!({"window_seconds": 60, "max_requests": 1}), "srv"),
        (put("mine", "4.1.1"), json!({"window_seconds": 60, "max_requests": 1}), "scope"),
    ] {
        let (s, v) = m.w.call(Method::PUT, &uri, &m.acme, Some(body)).await;
        assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{uri}: {v}");
    }
    let (s, _) = m
        .w
        .call(Method::PUT, &put("hub", "7.4"), &m.w.operator, Some(json!({"window_seconds": 3600, "max_requests": 1})))
        .await;
    assert_eq!(s, StatusCode::OK);

    let mut acks = Vec::new();
    for _ in 0..4 {
        let (s, ack) = m.w.submit(&m.acme, "4.1.1", json!({"mpxn": MPAN}), json!({})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{ack}");
        acks.push(ack);
    }
    let statuses: Vec<&str> = acks.iter().map(|a| a["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["queued", "queued", "quarantined", "quarantined"]);
    assert!(
        acks[2]["note"].as_str().unwrap().contains("acme's own threshold for SRV 4.1.1 is 2 requests per 3600 s"),
        "{}",
        acks[2]
    );
    assert_eq!(m.w.hub.dispatch_due().await.unwrap(), 2, "quarantined requests do not run");
    let (_, q) = m.w.call(Method::GET, "/v1/quarantine", &m.acme, None).await;
    assert_eq!(q.as_array().unwrap().len(), 2);

    let id = |a: &Value| a["id"].as_str().unwrap().to_string();
    let (s, v) = m.w.call(Method::POST, &format!("/v1/requests/{}/release", id(&acks[2])), &m.acme, None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("queued")), "{v}");
    let (s, v) = m.w.call(Method::POST, &format!("/v1/requests/{}/delete", id(&acks[3])), &m.acme, None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("deleted")), "{v}");
    // Another party can do neither; a request not in quarantine cannot be released.
    let (s, _) = m.w.call(Method::POST, &format!("/v1/requests/{}/release", id(&acks[3])), &m.bright, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = m.w.call(Method::POST, &format!("/v1/requests/{}/release", id(&acks[0])), &m.acme, None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(m.w.hub.dispatch_due().await.unwrap(), 1, "the released one runs, the deleted one never");
    let r = m.w.settle(&m.acme, &acks[2]).await;
    assert_eq!(r["response"]["outcome"], json!("done"));
    let r = m.w.settle(&m.acme, &acks[3]).await;
    assert!(r["response"].is_null());
    let (_, trail) = m.w.call(Method::GET, &format!("/v1/requests/{}/audit", id(&acks[2])), &m.acme, None).await;
    let events: Vec<&str> = trail.as_array().unwrap().iter().map(|a| a["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["accepted", "queued", "completed"]);
    let (_, trail) = m.w.call(Method::GET, &format!("/v1/requests/{}/audit", id(&acks[3])), &m.acme, None).await;
    assert_eq!(trail.as_array().unwrap()[0]["detail"], json!("quarantined"));

    // The hub-wide limit counts every party together.
    let (_, a) = m.w.submit(&m.acme, "7.4", json!({"mpxn": MPAN}), json!({})).await;
    let (_, b) = m.w.submit(&m.dno, "7.4", json!({"mpxn": MPAN}), json!({})).await;
    assert_eq!((a["status"].as_str(), b["status"].as_str()), (Some("queued"), Some("quarantined")));
    assert!(b["note"].as_str().unwrap().contains("hub-wide"), "{b}");
    // An hour later the window has room again.
    m.w.clock.advance_to("2026-01-05T10:00:01Z".parse().unwrap());
    let (_, c) = m.w.submit(&m.dno, "7.4", json!({"mpxn": MPAN}), json!({})).await;
    assert_eq!(c["status"], json!("queued"));
    let (_, list) = m.w.call(Method::GET, "/v1/anomaly-thresholds", &m.dno, None).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "the dno sees the hub-wide threshold, not acme's: {list}");
    let (s, _) = m.w.call(Method::DELETE, &put("own", "4.1.1"), &m.acme, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    m.w.close().await;
}

// R-SR-3, R-SR-5: a request queued again after later ones ran (released from quarantine,
// or signed) runs at the next dispatch: the dispatcher's search for due requests, which
// starts past the requests it knows to be done or in hand, starts low enough again.
#[tokio::test]
async fn a_request_queued_again_after_later_ones_ran_still_runs() {
    let m = market().await;
    enrolled_home(&m).await;
    let before = m.w.hub.dispatch_searches().await;
    let threshold = json!({"window_seconds": 3600, "max_requests": 1});
    let (s, _) = m.w.call(Method::PUT, "/v1/anomaly-thresholds/own/4.1.1", &m.acme, Some(threshold)).await;
    assert_eq!(s, StatusCode::OK);
    let mut acks = Vec::new();
    for srv in ["4.1.1", "4.1.1", "7.4"] {
        acks.push(m.w.submit(&m.acme, srv, json!({"mpxn": MPAN}), json!({})).await.1);
    }
    let statuses: Vec<&str> = acks.iter().map(|a| a["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["queued", "quarantined", "queued"]);
    assert_eq!(m.w.hub.dispatch_due().await.unwrap(), 2, "the first read and the later 7.4");
    let released = format!("/v1/requests/{}/release", acks[1]["id"].as_str().unwrap());
    let (s, v) = m.w.call(Method::POST, &released, &m.acme, None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("queued")), "{v}");
    assert_eq!(m.w.hub.dispatch_due().await.unwrap(), 1, "the released read runs");
    assert_eq!(m.w.settle(&m.acme, &acks[1]).await["response"]["outcome"], json!("done"));

    // A critical request waits for its signature while a later read runs.
    let (_, p) = m.w.call(Method::POST, "/v1/premises", &m.acme, Some(json!({"electricity": "economy-7"}))).await;
    let (_, critical) = m.w.submit(&m.acme, "8.1.1", json!({"device": device_of(&p, "comms-hub")}), json!({})).await;
    assert_eq!(critical["status"], json!("awaiting-signature"), "{critical}");
    let (_, later) = m.w.submit(&m.acme, "7.4", json!({"mpxn": MPAN}), json!({})).await;
    assert_eq!(later["status"], json!("queued"), "{later}");
    assert_eq!(m.w.hub.dispatch_due().await.unwrap(), 1, "the later read");
    let (s, _) = m.w.sign(&m.acme, &critical, &m.acme_key).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(m.w.hub.dispatch_due().await.unwrap(), 1, "the signed request runs");
    assert_eq!(m.w.settle(&m.acme, &critical).await["response"]["outcome"], json!("done"));
    // Found from the floor, not by a full search after the floor had passed over it.
    assert_eq!(m.w.hub.dispatch_floor_misses().await, 0);
    // The three queued when submitted were kept in memory for the search since their
    // insert; the released and the signed one were read from their rows.
    let after = m.w.hub.dispatch_searches().await;
    assert_eq!((after.found - before.found, after.kept - before.kept), (5, 3), "{before:?} {after:?}");
    m.w.close().await;
}

// R-SR-3, R-SR-5: quarantined requests released one by one while the dispatcher runs and
// other requests keep arriving: each runs, and the dispatcher's floor never passes over one
// (its periodic full search would count it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_released_while_others_arrive_all_run_and_the_floor_misses_none() {
    let m = market().await;
    let p = enrolled_home(&m).await;
    let chf = device_of(&p, "comms-hub").to_string();
    let threshold = json!({"window_seconds": 3600, "max_requests": 1});
    let (s, _) = m.w.call(Method::PUT, "/v1/anomaly-thresholds/own/4.1.1", &m.acme, Some(threshold)).await;
    assert_eq!(s, StatusCode::OK);
    let mut held = Vec::new();
    for i in 0..41 {
        let (_, ack) = m.w.submit(&m.acme, "4.1.1", json!({"mpxn": MPAN}), json!({})).await;
        if i > 0 {
            assert_eq!(ack["status"], json!("quarantined"), "{ack}");
            held.push(ack["id"].as_str().unwrap().to_string());
        }
    }
    let dispatcher = tokio::spawn(m.w.hub.clone().run_dispatcher(std::time::Duration::from_millis(5)));
    // Reads of the comms hub (another device) keep arriving, so that searches keep moving
    // the floor up past the quarantined requests while they are released.
    let traffic = {
        let (hub, acme) = (m.w.hub.clone(), m.w.hub.authenticate(&m.acme).await.unwrap());
        tokio::spawn(async move {
            let input = hub::pipeline::SubmitInput {
                srv: "11.2".into(),
                target: hub::pipeline::Target::Device(chf),
                body: json!({}),
                execute_at: None,
            };
            for _ in 0..400 {
                hub.submit(&acme, &input).await.expect("a read of the comms hub");
            }
        })
    };
    for id in &held {
        let (s, v) = m.w.call(Method::POST, &format!("/v1/requests/{id}/release"), &m.acme, None).await;
        assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("queued")), "{v}");
    }
    traffic.await.unwrap();
    let acme = m.w.hub.authenticate(&m.acme).await.unwrap();
    for id in &held {
        let (r, answer) = m.w.hub.wait_for_response(&acme, id, std::time::Duration::from_secs(20)).await.unwrap();
        assert!(answer.is_some(), "released request {id} did not run: {r:?}");
    }
    assert_eq!(m.w.hub.dispatch_floor_misses().await, 0);
    dispatcher.abort();
    m.w.close().await;
}

// R-SR-1: every executable SRV × every kind of party, on an electricity and a gas metering
// point, through the whole pipeline: what the catalogue and the relationship allow is
// accepted and runs; everything else is refused and nothing of it is stored or run.
#[tokio::test]
async fn authorisation_matrix_end_to_end() {
    use domain::catalogue::{self, Relation};
    let m = market().await;
    enrolled_home(&m).await;
    let other_dno = m.w.party("dno-20", &["ED"], 6, None).await;
    let esco = m.w.party("esco", &["OU"], 7, None).await;
    // An other user holding consent for the electricity point, and an agent acme appointed
    // for it; each has no relationship to the gas point.
    let esco_c = m.w.party("esco-c", &["OU"], 8, None).await;
    let (s, v) =
        m.w.call(Method::POST, &format!("/v1/metering-points/{MPAN}/consents"), &esco_c, Some(json!({}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let agent_a = m.w.party("agent-a", &["RSA"], 9, None).await;
    let agent_n = m.w.party("agent-n", &["RSA"], 10, None).await;
    let appoint = json!({"agent": "agent-a"});
    let (s, v) =
        m.w.call(Method::POST, &format!("/v1/metering-points/{MPAN}/appointments"), &m.acme, Some(appoint)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let cadent = m.w.hub.issue_token_unchecked(&"cadent".parse().unwrap(), "t").await.unwrap().token;
    // (party, token, roles, relationship to the electricity point, to the gas point)
    let parties: Vec<(&str, String, Vec<domain::Role>, Relation, Relation)> = {
        use domain::Role::*;
        vec![
            (
                "acme",
                m.acme.clone(),
                vec![ImportSupplier, GasSupplier],
                Relation::RegisteredSupplier,
                Relation::RegisteredSupplier,
            ),
            ("bright", m.bright.clone(), vec![ImportSupplier], Relation::None, Relation::None),
            ("dno-13", m.dno.clone(), vec![ElectricityDistributor], Relation::NetworkOperator, Relation::None),
            ("dno-20", other_dno, vec![ElectricityDistributor], Relation::None, Relation::None),
            ("cadent", cadent, vec![GasTransporter], Relation::None, Relation::NetworkOperator),
            ("esco", esco, vec![OtherUser], Relation::None, Relation::None),
            ("esco-c", esco_c, vec![OtherUser], Relation::ConsentHolder, Relation::None),
            ("agent-a", agent_a, vec![RegisteredSupplierAgent], Relation::AppointedAgent, Relation::None),
            ("agent-n", agent_n, vec![RegisteredSupplierAgent], Relation::None, Relation::None),
            ("reg", m.reg.clone(), vec![RegistrationService], Relation::None, Relation::None),
            ("hub-operator", m.w.operator.clone(), vec![HubOperator], Relation::None, Relation::None),
        ]
    };
    let bodies = [
        ("4.1.1", json!({})),
        ("4.8.1", json!({})),
        ("4.17", json!({})),
        ("7.4", json!({})),
        ("11.2", json!({})),
        ("3.1", json!({"message": "hello"})),
        ("6.22", json!({"alert_code": "0x8F35", "enabled": true})),
        ("8.11", json!({"remove": ["00-00-00-00-00-00-00-01"]})),
        // Answered by the hub at once; the scheduled 4.8.1 has the same grants.
        ("5.1", json!({"srv": "4.8.1", "every": "day", "start": "2026-02-01"})),
    ];
    let mut accepted = 0;
    let mut answered_by_hub = 0;
    for (srv, body) in &bodies {
        let service = catalogue::service(srv).unwrap();
        for (mpxn, fuel) in [(MPAN, domain::Fuel::Electricity), ("3938424403", domain::Fuel::Gas)] {
            for (name, token, roles, rel_e, rel_g) in &parties {
                let rel = if fuel == domain::Fuel::Electricity { *rel_e } else { *rel_g };
                let want = service.grants.iter().any(|g| {
                    roles.contains(&g.role)
                        && g.relation == rel
                        && rel != Relation::None
                        && g.role.fuel().is_none_or(|f| f == fuel)
                });
                let (s, v) = m.w.submit(token, srv, json!({"mpxn": mpxn}), body.clone()).await;
                if want {
                    assert_eq!(s, StatusCode::ACCEPTED, "{srv} on {mpxn} by {name}: {v}");
                    if *srv == "5.1" {
                        answered_by_hub += 1;
                    } else {
                        accepted += 1;
                    }
                } else {
                    assert_eq!(s, StatusCode::FORBIDDEN, "{srv} on {mpxn} by {name}: {v}");
                }
            }
        }
    }
    let ran = m.w.hub.dispatch_due().await.unwrap();
    assert_eq!(ran, accepted, "exactly the accepted requests ran");
    // acme, dno-13, cadent, esco-c (5.1, 4.8.1, 4.17) and agent-a (7.4, 11.2) ran something;
    // nobody else did.
    assert_eq!(answered_by_hub, 5, "5.1 by acme (both fuels), dno-13, cadent and esco-c");
    for (name, token, ..) in &parties {
        let (_, rs) = m.w.call(Method::GET, "/v1/responses", token, None).await;
        let n = rs.as_array().unwrap().len();
        let expect_some = ["acme", "dno-13", "cadent", "esco-c", "agent-a"].contains(name);
        assert_eq!(n > 0, expect_some, "{name} has {n} responses");
    }
    assert!(accepted >= 20, "{accepted}");
    m.w.close().await;
}

// R-SR-4: the response stream (server-sent events) resumes after the last event seen and
// delivers new responses as they are recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_stream_resumes_and_follows() {
    use http_body_util::BodyExt;
    let m = market().await;
    enrolled_home(&m).await;
    let (_, before) = m.w.call(Method::GET, "/v1/responses", &m.acme, None).await;
    let last_seen = before.as_array().unwrap().last().unwrap()["seq"].as_i64().unwrap();
    let r = m.w.run(&m.acme, "7.4", json!({"mpxn": MPAN}), json!({}), None).await;
    let missed = r["response"]["seq"].as_i64().unwrap();

    let req = Request::get("/v1/responses/stream")
        .header(header::AUTHORIZATION, format!("Bearer {}", m.acme))
        .header("last-event-id", last_seen.to_string())
        .body(Body::empty())
        .unwrap();
    let resp = m.w.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = resp.into_body();
    let mut next_event = async || -> Value {
        let mut text = String::new();
        loop {
            let frame =
                tokio::time::timeout(std::time::Duration::from_secs(10), body.frame()).await.unwrap().unwrap().unwrap();
            if let Ok(data) = frame.into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
            }
            if let Some(line) = text.lines().find(|l| l.starts_with("data:")) {
                return serde_json::from_str(line.trim_start_matches("data:").trim()).unwrap();
            }
        }
    };
    let first = next_event().await;
    assert_eq!(first["seq"].as_i64(), Some(missed), "resumes right after the last event seen: {first}");
    // A new response arrives on the open stream.
    let (_, ack) = m.w.submit(&m.acme, "11.2", json!({"mpxn": MPAN}), json!({})).await;
    m.w.hub.dispatch_due().await.unwrap();
    let second = next_event().await;
    assert_eq!(second["request_id"], ack["id"]);
    assert_eq!(second["outcome"], json!("done"));
    m.w.close().await;
}

/// The fleet as the hub sees it, counting what is sent to it, by request id.
struct Counting {
    fleet: Arc<fleet::Fleet>,
    sent: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// If set, each send (once counted) waits for a permit: the test holds requests at
    /// their devices.
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

#[async_trait::async_trait]
impl hub::transport::DeviceTransport for Counting {
    async fn install(&self, o: hub::transport::InstallOrder) -> Result<hub::transport::Installed, TransportError> {
        self.fleet.install(o).await
    }
    async fn fit(&self, at: domain::Eui64, kind: device::DeviceKind) -> Result<domain::Eui64, TransportError> {
        self.fleet.fit(at, kind).await
    }
    async fn prepare(&self, targets: &[domain::Eui64]) {
        self.fleet.prepare(targets).await;
    }
    async fn send(&self, m: hub::transport::DeviceMessage) -> Result<device::Outcome, TransportError> {
        let id = device::Command::decode(&m.bytes).map(|c| c.id.to_string()).unwrap_or_default();
        *self.sent.lock().unwrap().entry(id).or_default() += 1;
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        self.fleet.send(m).await
    }
    async fn key_agreement_point(&self, eui: domain::Eui64) -> Result<Vec<u8>, TransportError> {
        self.fleet.key_agreement_point(eui).await
    }
    async fn display(&self, eui: domain::Eui64) -> Result<Value, TransportError> {
        self.fleet.display(eui).await
    }
    async fn consumer(
        &self,
        meter: domain::Eui64,
        action: hub::transport::ConsumerAction,
    ) -> Result<device::Outcome, TransportError> {
        self.fleet.consumer(meter, action).await
    }
    fn attach_alert_sink(&self, sink: Arc<dyn hub::transport::AlertSink>) {
        self.fleet.attach_alert_sink(sink)
    }
}

// R-SR-1: the background dispatcher runs several rounds at once; still every accepted
// request is sent to its device once (counted at the transport), and each device's requests
// run in the order they were accepted (the display ends on the last message sent to it),
// while other devices' requests overtake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_dispatch_rounds_run_each_request_once_and_each_device_in_order() {
    let counting = std::sync::Arc::new(std::sync::OnceLock::<Arc<Counting>>::new());
    let slot = counting.clone();
    let m = market_with(move |fleet| {
        let c = Arc::new(Counting { fleet, sent: Default::default(), gate: None });
        slot.set(c.clone()).ok().unwrap();
        c as Arc<dyn hub::transport::DeviceTransport>
    })
    .await;
    let p = enrolled_home(&m).await;
    let dispatcher = tokio::spawn(m.w.hub.clone().run_dispatcher(std::time::Duration::from_millis(5)));
    let w = std::sync::Arc::new(m.w);
    let mut senders = Vec::new();
    for (srv, mpxn) in [("3.1", MPAN), ("4.1.1", MPAN), ("4.1.1", "3938424403"), ("7.4", MPAN)] {
        let (w, token) = (w.clone(), m.acme.clone());
        senders.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..40 {
                let body = if srv == "3.1" { json!({"message": format!("note {i}")}) } else { json!({}) };
                let (s, ack) = w.submit(&token, srv, json!({"mpxn": mpxn}), body).await;
                assert_eq!(s, StatusCode::ACCEPTED, "{ack}");
                ids.push(ack["id"].as_str().unwrap().to_string());
            }
            ids
        }));
    }
    let mut by_sender = Vec::new();
    for s in senders {
        by_sender.push(s.await.unwrap());
    }
    for id in by_sender.iter().flatten() {
        let (s, r) = w.call(Method::GET, &format!("/v1/requests/{id}?wait=20"), &m.acme, None).await;
        assert_eq!(s, StatusCode::OK, "{r}");
        assert_eq!(r["status"], json!("completed"), "{r}");
        assert_eq!(r["response"]["outcome"], json!("done"), "{r}");
    }
    dispatcher.abort();
    let (_, all) = w.call(Method::GET, "/v1/responses?limit=1000", &m.acme, None).await;
    let answered: Vec<&str> = all.as_array().unwrap().iter().map(|r| r["request_id"].as_str().unwrap()).collect();
    for ids in &by_sender {
        // Once each, and in the order accepted.
        let positions: Vec<usize> = ids
            .iter()
            .map(|id| {
                let at: Vec<usize> = answered.iter().enumerate().filter(|(_, a)| *a == id).map(|(i, _)| i).collect();
                assert_eq!(at.len(), 1, "{id} answered {} times", at.len());
                at[0]
            })
            .collect();
        assert!(positions.windows(2).all(|p| p[0] < p[1]), "answered out of order: {positions:?}");
    }
    let sent = counting.get().unwrap().sent.lock().unwrap().clone();
    for id in by_sender.iter().flatten() {
        assert_eq!(sent.get(id), Some(&1), "{id} was sent {:?} times", sent.get(id));
    }
    let ihd: domain::Eui64 = device_of(&p, "in-home-display").parse().unwrap();
    assert_eq!(w.fleet.ihd_view(ihd).await.unwrap()["message"], json!("note 39"));
    w.close().await;
}

fn admitting(max: usize, wait_ms: u64) -> hub::HubConfig {
    hub::HubConfig {
        admitted_max: max,
        admitted_per_party_max: max,
        admission_wait: std::time::Duration::from_millis(wait_ms),
        ..Default::default()
    }
}

async fn queued(m: &Market) -> Vec<String> {
    let acme: domain::PartyId = "acme".parse().unwrap();
    let q = m.w.store.requests_in_status(&acme, hub::RequestStatus::Queued, 100).await.unwrap();
    q.into_iter().map(|r| r.id).collect()
}

// R-SR-1: requests accepted to run now are bounded (HubConfig::admitted_max). Beyond the
// bound a request waits for room; if none comes in time the caller hears the hub is busy
// (503, problem+json) and nothing is recorded. Cancelling and answering give room back.
#[tokio::test]
async fn beyond_the_admission_bound_a_request_is_refused_as_busy_and_nothing_is_recorded() {
    let m = market_configured(admitting(2, 300), |f| f).await;
    enrolled_home(&m).await;
    let target = json!({"mpxn": MPAN});
    // Four 4.1.1s an hour before quarantine: the ones refused as busy must not count.
    let (s, v) =
        m.w.call(
            Method::PUT,
            "/v1/anomaly-thresholds/own/4.1.1",
            &m.acme,
            Some(json!({"window_seconds": 3600, "max_requests": 4})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, a) = m.w.submit(&m.acme, "4.1.1", target.clone(), json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{a}");
    let (s, b) = m.w.submit(&m.acme, "4.1.1", target.clone(), json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let before = queued(&m).await;
    assert_eq!(before.len(), 2);

    let (s, p) = m.w.submit(&m.acme, "4.1.1", target.clone(), json!({})).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("busy"), "{p}");
    assert_eq!(queued(&m).await, before, "a refused request leaves nothing behind");
    // Over HTTP: problem+json, and when to try again.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/requests")
        .header(header::AUTHORIZATION, format!("Bearer {}", m.acme))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"srv": "4.1.1", "target": target, "body": {}}).to_string()))
        .unwrap();
    let resp = m.w.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/problem+json");

    // A critical request waits for its signature without room; signed, it needs room.
    let (s, home) = m.w.call(Method::POST, "/v1/premises", &m.acme, Some(json!({"electricity": "domestic"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{home}");
    let (s, critical) = m.w.submit(&m.acme, "8.1.1", json!({"device": device_of(&home, "comms-hub")}), json!({})).await;
    assert_eq!((s, critical["status"].as_str()), (StatusCode::ACCEPTED, Some("awaiting-signature")), "{critical}");
    let (s, p) = m.w.sign(&m.acme, &critical, &m.acme_key).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{p}");
    assert_eq!(queued(&m).await, before, "a signature refused as busy leaves the request unsigned");

    // A cancelled request gives its room back.
    let id = a["id"].as_str().unwrap();
    let (s, c) = m.w.call(Method::POST, &format!("/v1/requests/{id}/cancel"), &m.acme, None).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let (s, c) = m.w.submit(&m.acme, "4.1.1", target.clone(), json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{c}");
    let (s, p) = m.w.submit(&m.acme, "4.1.1", target.clone(), json!({})).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{p}");

    // Answered requests give theirs back.
    assert_eq!(m.w.hub.dispatch_due().await.unwrap(), 2);
    let (s, signed) = m.w.sign(&m.acme, &critical, &m.acme_key).await;
    assert!(s.is_success(), "{signed}");
    let (s, d) = m.w.submit(&m.acme, "4.1.1", target.clone(), json!({})).await;
    assert_eq!((s, d["status"].as_str()), (StatusCode::ACCEPTED, Some("queued")), "the fourth counted: {d}");
    let (s, p) = m.w.submit(&m.acme, "4.1.1", target.clone(), json!({})).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{p}");
    // Requests not run now hold no room: a future-dated one is accepted at the bound.
    let (s, f) = m
        .w
        .call(
            Method::POST,
            "/v1/requests",
            &m.acme,
            Some(json!({"srv": "3.1", "target": target, "body": {"message": "later"}, "execute_at": "2026-01-06T09:00:00Z"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{f}");
    m.w.close().await;
}

// R-SR-1: a request waiting for room goes on, and is recorded, once a round's answers are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_for_room_is_accepted_when_a_round_answers() {
    let m = market_configured(admitting(1, 60_000), |f| f).await;
    enrolled_home(&m).await;
    let w = Arc::new(m.w);
    let (s, first) = w.submit(&m.acme, "4.1.1", json!({"mpxn": MPAN}), json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{first}");
    let (w2, token) = (w.clone(), m.acme.clone());
    let waiting = tokio::spawn(async move { w2.submit(&token, "4.1.1", json!({"mpxn": MPAN}), json!({})).await });
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "the second request waits for room");
    let acme: domain::PartyId = "acme".parse().unwrap();
    assert_eq!(w.store.requests_in_status(&acme, hub::RequestStatus::Queued, 10).await.unwrap().len(), 1);
    assert_eq!(w.hub.dispatch_due().await.unwrap(), 1);
    let (s, second) = waiting.await.unwrap();
    assert_eq!(s, StatusCode::ACCEPTED, "{second}");
    let done = w.settle(&m.acme, &second).await;
    assert_eq!(done["response"]["outcome"], json!("done"), "{done}");
    w.close().await;
}

// R-SR-3: a request already with its device cannot be cancelled: the sender hears so (409)
// and the device's answer is recorded as it came, timed when it came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_its_device_cannot_be_cancelled() {
    let gate = Arc::new(tokio::sync::Semaphore::new(1_000));
    let counting = Arc::new(std::sync::OnceLock::<Arc<Counting>>::new());
    let (g, slot) = (gate.clone(), counting.clone());
    let m = market_with(move |fleet| {
        let c = Arc::new(Counting { fleet, sent: Default::default(), gate: Some(g) });
        slot.set(c.clone()).ok().unwrap();
        c as Arc<dyn hub::transport::DeviceTransport>
    })
    .await;
    enrolled_home(&m).await;
    gate.acquire_many(u32::try_from(gate.available_permits()).unwrap()).await.unwrap().forget();
    let (s, ack) = m.w.submit(&m.acme, "4.1.1", json!({"mpxn": MPAN}), json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{ack}");
    let id = ack["id"].as_str().unwrap().to_string();
    let hub = m.w.hub.clone();
    let round = tokio::spawn(async move { hub.dispatch_due().await });
    for _ in 0..500 {
        if counting.get().unwrap().sent.lock().unwrap().contains_key(&id) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(counting.get().unwrap().sent.lock().unwrap().contains_key(&id), "the request reached its device");
    let (s, v) = m.w.call(Method::POST, &format!("/v1/requests/{id}/cancel"), &m.acme, None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("already with its device"), "{v}");
    // The device takes its time: the response is timed when it answers, not when its round
    // set out.
    let answered: jiff::Timestamp = "2026-01-05T09:00:07Z".parse().unwrap();
    m.w.clock.advance_to(answered);
    gate.add_permits(1);
    assert_eq!(round.await.unwrap().unwrap(), 1);
    let (s, r) = m.w.call(Method::GET, &format!("/v1/requests/{id}"), &m.acme, None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!((r["status"].as_str(), r["response"]["outcome"].as_str()), (Some("completed"), Some("done")), "{r}");
    assert_eq!(r["response"]["at"], json!("2026-01-05T09:00:07Z"), "{r}");
    m.w.close().await;
}

// R-SR-5: one party cannot take all the room: beyond its share its requests are refused as
// busy while another party's still run.
#[tokio::test]
async fn one_party_beyond_its_share_is_busy_while_another_is_admitted() {
    let config = hub::HubConfig { admitted_per_party_max: 1, ..admitting(3, 300) };
    let m = market_configured(config, |f| f).await;
    enrolled_home(&m).await;
    let (s, a) = m.w.submit(&m.acme, "4.1.1", json!({"mpxn": MPAN}), json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{a}");
    let (s, p) = m.w.submit(&m.acme, "4.1.1", json!({"mpxn": MPAN}), json!({})).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("of acme's"), "{p}");
    let (s, d) = m.w.submit(&m.dno, "7.4", json!({"mpxn": MPAN}), json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "another party still has room: {d}");
    // Answered, acme's request gives its share back.
    assert_eq!(m.w.hub.dispatch_due().await.unwrap(), 2);
    let (s, b) = m.w.submit(&m.acme, "4.1.1", json!({"mpxn": MPAN}), json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    m.w.close().await;
}
