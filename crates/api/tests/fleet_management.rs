//! Fleet management through the HTTP API: the mass-disconnect attack held in quarantine
//! (R-FLT-1, R-SR-5), alert dispatching from the dispatch table, an alert storm across a
//! restart, and webhooks that fail, recover and dead-letter (R-FLT-2).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{Method, StatusCode};
use common::*;
use domain::Eui64;
use jiff::SignedDuration;
use serde_json::{Value, json};

async fn alerts(w: &World, token: &str, after: Option<i64>) -> Vec<Value> {
    let uri = match after {
        Some(a) => format!("/v1/alerts?after={a}&limit=1000"),
        None => "/v1/alerts?limit=1000".to_string(),
    };
    let (s, v) = w.call(Method::GET, &uri, token, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v.as_array().unwrap().clone()
}

fn codes(list: &[Value]) -> Vec<&str> {
    list.iter().map(|a| a["code"].as_str().unwrap()).collect()
}

fn advance(w: &World, by: SignedDuration) {
    w.clock.advance_to(w.hub.now() + by);
}

// R-FLT-1, R-SR-5: a compromised credential sends 1,200 disable-supply requests. The hub's
// default thresholds let at most 100 per party per hour through (a hub-wide threshold the
// operator sets stops them sooner); the rest wait in quarantine, the party and the operator
// are each alerted once, and nothing is lost across a restart.
#[tokio::test]
async fn mass_disconnect_from_a_compromised_credential_waits_in_quarantine() {
    let mut m = market().await;
    let home = enrolled_home(&m).await;
    let meter: Eui64 = device_of(&home, "electricity-meter").parse().unwrap();
    // The operator tightens the hub-wide limit for 7.2 to 50 an hour.
    let put = "/v1/anomaly-thresholds/hub/7.2";
    let (s, v) =
        m.w.call(Method::PUT, put, &m.w.operator, Some(json!({"window_seconds": 3600, "max_requests": 50}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut statuses: std::collections::HashMap<String, usize> = Default::default();
    let mut notes = Vec::new();
    let mut admitted = Vec::new();
    for i in 0..1200 {
        if i == 60 {
            // The operator lifts its own limit: the hub-wide default (1,000) applies again.
            let (s, _) = m.w.call(Method::DELETE, put, &m.w.operator, None).await;
            assert_eq!(s, StatusCode::NO_CONTENT);
        }
        let (s, ack) = m.w.submit(&m.acme, "7.2", json!({"mpxn": MPAN}), json!({})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{ack}");
        let status = ack["status"].as_str().unwrap().to_string();
        if status == "quarantined" {
            notes.push(ack["note"].as_str().unwrap().to_string());
        } else {
            admitted.push(ack);
        }
        *statuses.entry(status).or_default() += 1;
    }
    assert_eq!(statuses.get("awaiting-signature"), Some(&100), "{statuses:?}");
    assert_eq!(statuses.get("quarantined"), Some(&1100), "{statuses:?}");
    assert!(notes[0].contains("hub-wide"), "{}", notes[0]);
    assert!(notes.last().unwrap().contains("default threshold for each party"), "{}", notes.last().unwrap());
    // Alerted once per threshold and window, not once per request.
    let acme_alerts = alerts(&m.w, &m.acme, None).await;
    let told: Vec<&Value> = acme_alerts.iter().filter(|a| a["code"] == json!("hub.quarantine")).collect();
    assert_eq!(told.len(), 2, "the hub-wide and the per-party threshold: {acme_alerts:?}");
    assert_eq!(told[0]["recipient_as"], json!("party-concerned"));
    let op = alerts(&m.w, &m.w.operator, None).await;
    assert_eq!(codes(&op).iter().filter(|c| **c == "hub.quarantine").count(), 2, "{op:?}");

    // The credential's owner signs one it did mean: the meter obeys.
    let (s, v) = m.w.sign(&m.acme, &admitted[0], &m.acme_key).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let r = m.w.settle(&m.acme, &admitted[0]).await;
    assert_eq!(r["response"]["body"]["supply"], json!("disabled"), "{r}");

    // A restart: every quarantined request is still there, and can be released or deleted.
    m.w.close().await;
    let clock = m.w.clock.clone();
    m.w = open_world(m._dir.path(), clock).await;
    let (_, q) = m.w.call(Method::GET, "/v1/quarantine", &m.acme, None).await;
    assert_eq!(q.as_array().unwrap().len(), 1000, "a page of the 1,100 kept: the list shows at most 1,000");
    let first = q[0]["id"].as_str().unwrap().to_string();
    let second = q[1]["id"].as_str().unwrap().to_string();
    let (s, v) = m.w.call(Method::POST, &format!("/v1/requests/{first}/release"), &m.acme, None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("awaiting-signature")), "{v}");
    let (s, v) = m.w.call(Method::POST, &format!("/v1/requests/{second}/delete"), &m.acme, None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("deleted")), "{v}");
    let system = m.w.fleet.system(meter).await.unwrap();
    assert_eq!(format!("{:?}", system.meter(meter).unwrap().supply), "Disabled");
    m.w.close().await;
}

// R-FLT-2: alerts go where the dispatch table says, resolved at the alert's instant: outages
// and restorations to the network operator and the supplier (the comms hub reports a loss
// only after 3 minutes), tamper to the supplier and the hub operator; the operator edits the
// table; a device told not to send an alert (6.22) does not.
#[tokio::test]
async fn alerts_reach_the_recipients_the_dispatch_table_names() {
    let m = market().await;
    let home = enrolled_home(&m).await;
    let meter: Eui64 = device_of(&home, "electricity-meter").parse().unwrap();
    let esco = m.w.party("esco", &["OU"], 12, None).await;
    let (s, v) = m.w.call(Method::POST, &format!("/v1/metering-points/{MPAN}/consents"), &esco, Some(json!({}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // The table: the operator's to read and edit, nobody else's.
    let (s, routes) = m.w.call(Method::GET, "/v1/alert-routes", &m.w.operator, None).await;
    assert_eq!(s, StatusCode::OK, "{routes}");
    let star = routes.as_array().unwrap().iter().find(|r| r["code"] == json!("*")).unwrap();
    assert_eq!(star["recipients"], json!(["registered-supplier"]));
    let (s, _) = m.w.call(Method::GET, "/v1/alert-routes", &m.acme, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    for (code, body, field) in [
        ("0x8F74", json!({"recipients": ["registered-supplier", "the-press"]}), "recipients[1]"),
        ("0x12", json!({"recipients": ["registered-supplier"]}), "code"),
        ("0x8F74", json!({"recipients": ["none", "hub-operator"]}), "recipients"),
    ] {
        let (s, v) = m.w.call(Method::PUT, &format!("/v1/alert-routes/{code}"), &m.w.operator, Some(body)).await;
        assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{v}");
    }

    // A short outage: reported only when power returns, as short.
    m.w.fleet.power_off(meter).await.unwrap();
    advance(&m.w, SignedDuration::from_mins(2));
    m.w.fleet.wake_due(100).await.unwrap();
    assert!(alerts(&m.w, &m.dno, None).await.is_empty());
    m.w.fleet.power_on(meter).await.unwrap();
    assert_eq!(codes(&alerts(&m.w, &m.dno, None).await), ["0x8F35"]);

    // A long one: the comms hub reports it at 3 minutes; commands fail meanwhile.
    m.w.fleet.power_off(meter).await.unwrap();
    advance(&m.w, SignedDuration::from_mins(5));
    m.w.fleet.wake_due(100).await.unwrap();
    let dno = alerts(&m.w, &m.dno, None).await;
    assert_eq!(codes(&dno), ["0x8F35", "0x8F57"], "{dno:?}");
    assert_eq!(dno[1]["recipient_as"], json!("network-operator"));
    let r = m.w.run(&m.acme, "4.1.1", json!({"mpxn": MPAN}), json!({}), None).await;
    assert_eq!(r["response"]["outcome"], json!("failed"), "{r}");
    m.w.fleet.power_on(meter).await.unwrap();
    assert_eq!(codes(&alerts(&m.w, &m.dno, None).await), ["0x8F35", "0x8F57", "0x8F36"]);
    let acme = alerts(&m.w, &m.acme, None).await;
    assert_eq!(codes(&acme), ["0x8F35", "0x8F57", "hub.command-failed", "0x8F36"], "{acme:?}");

    // Tamper: the supplier and the hub operator; then also the ESCO, by the operator's edit.
    m.w.fleet.tamper(meter, 0x8F74).await.unwrap();
    assert_eq!(codes(&alerts(&m.w, &m.w.operator, None).await), ["0x8F74"]);
    let (s, v) =
        m.w.call(
            Method::PUT,
            "/v1/alert-routes/0x8F74",
            &m.w.operator,
            Some(json!({"recipients": ["registered-supplier", "hub-operator", "consent-holders"]})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    m.w.fleet.tamper(meter, 0x8F74).await.unwrap();
    let told = alerts(&m.w, &esco, None).await;
    assert_eq!((codes(&told), told[0]["recipient_as"].as_str()), (vec!["0x8F74"], Some("consent-holder")));
    // Filtered by the hub: nobody gets it.
    let (s, _) =
        m.w.call(Method::PUT, "/v1/alert-routes/0x8F74", &m.w.operator, Some(json!({"recipients": ["none"]}))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    m.w.fleet.tamper(meter, 0x8F74).await.unwrap();
    assert_eq!(alerts(&m.w, &esco, None).await.len(), 1);
    // Back to the default row, and the device told not to send it (6.22).
    let (s, _) = m.w.call(Method::PUT, "/v1/alert-routes/0x8F74", &m.w.operator, Some(json!({"recipients": []}))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let r =
        m.w.run(&m.acme, "6.22", json!({"mpxn": MPAN}), json!({"alert_code": "0x8F74", "enabled": false}), None).await;
    assert_eq!(r["response"]["outcome"], json!("done"), "{r}");
    let before = alerts(&m.w, &m.acme, None).await.len();
    m.w.fleet.tamper(meter, 0x8F74).await.unwrap();
    m.w.fleet.tamper(meter, 0x8F75).await.unwrap();
    let after = alerts(&m.w, &m.acme, None).await;
    assert_eq!(codes(&after[before..]), ["0x8F75"], "the disabled one stays on the meter");
    m.w.close().await;
}

// R-FLT-2: an alert storm from many homes with a restart in the middle: every alert reaches
// its recipient once, each device's in the order it raised them; what the recipient
// acknowledged before the restart is not offered again, and nothing unacknowledged is lost.
#[tokio::test]
async fn an_alert_storm_across_a_restart_loses_nothing_and_keeps_each_devices_order() {
    let mut m = market().await;
    let mut meters = Vec::new();
    for _ in 0..4 {
        let home = installed_home(&m).await;
        meters.push(device_of(&home, "electricity-meter").parse::<Eui64>().unwrap());
        meters.push(device_of(&home, "gas-meter").parse::<Eui64>().unwrap());
    }
    storm(&m.w, &meters, 0).await;
    // The supplier takes the first 50 and acknowledges them.
    let first = alerts(&m.w, &m.acme, None).await;
    assert_eq!(first.len(), 8 * 15);
    let acked = first[49]["seq"].as_i64().unwrap();
    let (s, v) = m.w.call(Method::POST, "/v1/alerts/ack", &m.acme, Some(json!({"up_to": acked}))).await;
    assert_eq!((s, v["acked"].as_i64()), (StatusCode::OK, Some(acked)), "{v}");
    let (s, v) = m.w.call(Method::POST, "/v1/alerts/ack", &m.acme, Some(json!({"up_to": acked + 100_000}))).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("up_to")), "{v}");

    m.w.close().await;
    let clock = m.w.clock.clone();
    m.w = open_world(m._dir.path(), clock).await;
    storm(&m.w, &meters, 1).await;

    // Unacknowledged from where it left off: the 70 it had not acknowledged and the 120 new.
    let rest = alerts(&m.w, &m.acme, None).await;
    assert_eq!(rest.len(), 70 + 120);
    assert_eq!(rest[0]["seq"], first[50]["seq"]);
    let mut all: Vec<Value> = first[..50].to_vec();
    all.extend(rest);
    for e in &meters {
        let seen: Vec<u64> = all.iter().filter(|a| a["device"] == json!(e.to_string())).map(seq_of).collect();
        assert_eq!(seen, (1..=30).collect::<Vec<u64>>(), "device {e}: each once, in order");
    }
    m.w.close().await;
}

/// Tamper alerts from every meter, interleaved, side by side: 15 each.
async fn storm(w: &World, meters: &[Eui64], round: usize) {
    let codes = [0x8F3F, 0x8F73, 0x8F74, 0x8F75, 0x8F76, 0x8F78];
    for k in 0..15 {
        let code = codes[(k + round) % codes.len()];
        futures::future::join_all(meters.iter().map(|e| w.fleet.tamper(*e, code))).await;
    }
}

/// The device's own number for an alert.
fn seq_of(a: &Value) -> u64 {
    a["device_seq"].as_u64().expect("device alerts carry the device's number")
}

#[derive(Clone, Default)]
struct Hook {
    fail_next: Arc<AtomicUsize>,
    received: Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

async fn hook_server(hook: Hook) -> String {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/hook",
        post(|axum::extract::State(h): axum::extract::State<Hook>, headers: axum::http::HeaderMap, body: String| async move {
            if h.fail_next.load(Ordering::SeqCst) > 0 {
                h.fail_next.fetch_sub(1, Ordering::SeqCst);
                return StatusCode::SERVICE_UNAVAILABLE;
            }
            let sig = headers.get("x-meterhub-signature").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            h.received.lock().unwrap().push((sig, body));
            StatusCode::OK
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app.with_state(hook)).await.unwrap() });
    format!("http://{addr}/hook")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// R-FLT-2: a webhook that fails, then recovers, gets every alert in order, signed with the
// party's secret; one that fails every try has its batch dead-lettered after 8 tries, the
// operator is told, and later alerts flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_retry_with_backoff_then_dead_letter() {
    let m = market().await;
    let home = installed_home(&m).await;
    let meter: Eui64 = device_of(&home, "electricity-meter").parse().unwrap();
    let hook = Hook::default();
    let url = hook_server(hook.clone()).await;
    for url in ["ftp://x", "https://alerts.example/hook"] {
        let (s, v) = m.w.call(Method::PUT, "/v1/webhook", &m.acme, Some(json!({"url": url}))).await;
        assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("url")), "{url}: {v}");
    }
    let (s, v) = m.w.call(Method::PUT, "/v1/webhook", &m.acme, Some(json!({"url": url}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let secret = v["secret"].as_str().unwrap().to_string();
    let (_, v) = m.w.call(Method::GET, "/v1/webhook", &m.acme, None).await;
    assert_eq!(v["secret"], Value::Null, "shown once: {v}");

    hook.fail_next.store(2, Ordering::SeqCst);
    for code in [0x8F3F, 0x8F73, 0x8F74] {
        m.w.fleet.tamper(meter, code).await.unwrap();
    }
    assert_eq!(m.w.hub.push_webhooks_due().await.unwrap(), 1);
    let (_, v) = m.w.call(Method::GET, "/v1/webhook", &m.acme, None).await;
    assert_eq!(v["attempts"], json!(1), "{v}");
    assert_eq!(m.w.hub.push_webhooks_due().await.unwrap(), 0, "backing off");
    advance(&m.w, SignedDuration::from_mins(1));
    assert_eq!(m.w.hub.push_webhooks_due().await.unwrap(), 1);
    advance(&m.w, SignedDuration::from_mins(2));
    assert_eq!(m.w.hub.push_webhooks_due().await.unwrap(), 1);
    assert_eq!(m.w.hub.push_webhooks_due().await.unwrap(), 0, "all acknowledged");
    let received = hook.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let (sig, body) = &received[0];
    let pushed: Value = serde_json::from_str(body).unwrap();
    assert_eq!(codes(pushed["alerts"].as_array().unwrap()), ["0x8F3F", "0x8F73", "0x8F74"]);
    let (t, v1) = sig.split_once(',').unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let mac = domain::crypto::hmac_sha256(secret.as_bytes(), format!("{t}.{body}").as_bytes());
    assert_eq!(v1.strip_prefix("v1=").unwrap(), hex(&mac), "signed with the party's secret");
    assert!(alerts(&m.w, &m.acme, None).await.is_empty(), "the push acknowledged them");

    // A webhook that never answers well: 8 tries, then its batch is set aside.
    hook.fail_next.store(usize::MAX / 2, Ordering::SeqCst);
    m.w.fleet.tamper(meter, 0x8F75).await.unwrap();
    for _ in 0..8 {
        assert_eq!(m.w.hub.push_webhooks_due().await.unwrap(), 1);
        advance(&m.w, SignedDuration::from_hours(3));
    }
    let (_, dead) = m.w.call(Method::GET, "/v1/alerts/dead-letters", &m.acme, None).await;
    assert_eq!(dead.as_array().unwrap().len(), 1, "{dead}");
    assert_eq!(dead[0]["attempts"], json!(8));
    let op = alerts(&m.w, &m.w.operator, None).await;
    assert!(codes(&op).contains(&"hub.delivery-failed"), "{op:?}");
    // Recovered: later alerts flow (the dead letter stays readable by cursor).
    hook.fail_next.store(0, Ordering::SeqCst);
    m.w.fleet.tamper(meter, 0x8F76).await.unwrap();
    m.w.hub.push_webhooks_due().await.unwrap();
    let received = hook.received.lock().unwrap().clone();
    let last: Value = serde_json::from_str(&received.last().unwrap().1).unwrap();
    assert!(codes(last["alerts"].as_array().unwrap()).contains(&"0x8F76"), "{last}");
    m.w.close().await;
}

// R-FLT-2: the alert stream starts after what the recipient acknowledged and follows new
// alerts as they are stored.
#[tokio::test]
async fn the_alert_stream_starts_after_the_acknowledged_and_follows() {
    use axum::body::Body;
    use axum::http::{Request, header};
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let m = market().await;
    let home = installed_home(&m).await;
    let meter: Eui64 = device_of(&home, "electricity-meter").parse().unwrap();
    for code in [0x8F3F, 0x8F73, 0x8F74] {
        m.w.fleet.tamper(meter, code).await.unwrap();
    }
    let first = alerts(&m.w, &m.acme, None).await;
    let (s, _) = m.w.call(Method::POST, "/v1/alerts/ack", &m.acme, Some(json!({"up_to": first[0]["seq"]}))).await;
    assert_eq!(s, StatusCode::OK);
    let req = Request::get("/v1/alerts/stream")
        .header(header::AUTHORIZATION, format!("Bearer {}", m.acme))
        .body(Body::empty())
        .unwrap();
    let resp = m.w.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut text = String::new();
    let mut next_event = async || -> Value {
        loop {
            if let Some(i) = text.find("\n\n") {
                let event: String = text.drain(..i + 2).collect();
                if let Some(line) = event.lines().find(|l| l.starts_with("data:")) {
                    return serde_json::from_str(line.trim_start_matches("data:").trim()).unwrap();
                }
                continue;
            }
            let frame =
                tokio::time::timeout(std::time::Duration::from_secs(10), body.frame()).await.unwrap().unwrap().unwrap();
            if let Ok(data) = frame.into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
            }
        }
    };
    assert_eq!(next_event().await["code"], json!("0x8F73"), "after the acknowledged one");
    assert_eq!(next_event().await["code"], json!("0x8F74"));
    m.w.fleet.tamper(meter, 0x8F75).await.unwrap();
    assert_eq!(next_event().await["code"], json!("0x8F75"), "a new one on the open stream");
    // Revoking the token ends the stream (at the latest after the wait under way).
    let token_id = m.acme.split('_').nth(1).unwrap().to_string();
    let (s, v) = m.w.call(Method::DELETE, &format!("/v1/parties/acme/tokens/{token_id}"), &m.w.operator, None).await;
    assert!(s.is_success(), "{s}: {v}");
    m.w.fleet.tamper(meter, 0x8F76).await.unwrap();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream of a revoked token ends");
    m.w.close().await;
}
