//! The premises' home area network through the HTTP API: replacing an in-home display at a
//! change of tenancy (R-COT-2) and joining additional equipment such as a generation meter
//! (R-FLT-5), with the comms hub's HAN device log bound enforced and reported.

mod common;

use axum::http::{Method, StatusCode};
use common::*;
use serde_json::{Value, json};

const MPRN: &str = "3938424403";

async fn premises(m: &Market, id: i64) -> Value {
    let (s, v) = m.w.call(Method::GET, &format!("/v1/premises/{id}"), &m.acme, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

fn device<'a>(p: &'a Value, eui: &str) -> &'a Value {
    p["devices"].as_array().unwrap().iter().find(|d| d["eui"] == json!(eui)).unwrap()
}

async fn fit(m: &Market, id: i64, kind: &str) -> String {
    let (s, v) =
        m.w.call(Method::POST, &format!("/v1/premises/{id}/devices"), &m.acme, Some(json!({"kind": kind}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!((v["on_han"].as_bool(), v["joined_to"].as_array().map(Vec::len)), (Some(false), Some(0)), "{v}");
    v["eui"].as_str().unwrap().to_string()
}

fn outcome(r: &Value) -> (&str, Option<&str>) {
    (r["response"]["outcome"].as_str().unwrap(), r["response"]["body"]["code"].as_str())
}

fn fuels(view: &Value) -> Vec<&str> {
    view["meters"].as_array().unwrap().iter().map(|m| m["fuel"].as_str().unwrap()).collect()
}

// R-COT-2: the old in-home display is unjoined and taken off the HAN; a new one is fitted,
// added to the comms hub's log and joined to both meters. The hub knows each step, and the
// new tenant's display shows the meters while the old one shows nothing.
#[tokio::test]
async fn in_home_display_replaced_at_a_change_of_tenancy() {
    let m = market().await;
    let home = enrolled_home(&m).await;
    let id = home["id"].as_i64().unwrap();
    let chf = device_of(&home, "comms-hub").to_string();
    let old = device_of(&home, "in-home-display").to_string();
    let elec = device_of(&home, "electricity-meter").to_string();
    let gas = device_of(&home, "gas-meter").to_string();
    // As installed: on the HAN, joined to both meters, showing both.
    let p = premises(&m, id).await;
    assert_eq!(device(&p, &old)["on_han"], json!(true));
    assert_eq!(device(&p, &old)["joined_to"], json!([elec, gas]), "{p}");
    assert_eq!(fuels(&m.w.fleet.ihd_view(old.parse().unwrap()).await.unwrap()), ["electricity", "gas"]);

    // Bad bodies are named before anything is sent.
    for body in [json!({}), json!({"device": "nonsense"}), json!({"device": old, "extra": 1})] {
        let (s, v) = m.w.submit(&m.acme, "8.8.2", json!({"mpxn": MPAN}), body.clone()).await;
        assert_eq!(
            (s, v["field"].as_str().map(|f| f.starts_with("body"))),
            (StatusCode::BAD_REQUEST, Some(true)),
            "{body}: {v}"
        );
    }
    // Unjoin from both meters (8.8.2, non-critical for a display), then off the log (8.11).
    for mpxn in [MPAN, MPRN] {
        let r = m.w.run(&m.acme, "8.8.2", json!({"mpxn": mpxn}), json!({"device": old}), None).await;
        assert_eq!(outcome(&r), ("done", None), "{r}");
    }
    assert_eq!(fuels(&m.w.fleet.ihd_view(old.parse().unwrap()).await.unwrap()), Vec::<&str>::new());
    let r = m.w.run(&m.acme, "8.11", json!({"device": chf}), json!({"remove": [old]}), None).await;
    assert_eq!(outcome(&r), ("done", None), "{r}");

    let new = fit(&m, id, "in-home-display").await;
    // Not on the log yet: the meter refuses to join it.
    let r = m.w.run(&m.acme, "8.7.2", json!({"mpxn": MPAN}), json!({"device": new}), None).await;
    assert_eq!(outcome(&r), ("device-refused", Some("invalid-body")), "{r}");
    assert!(r["response"]["body"]["reason"].as_str().unwrap().contains("8.11"), "{r}");
    let r = m.w.run(&m.acme, "8.11", json!({"device": chf}), json!({"add": [new]}), None).await;
    assert_eq!(outcome(&r), ("done", None), "{r}");
    // A display joins by the non-critical service; the critical one is for type 1 devices.
    let r = m.w.run(&m.acme, "8.7.1", json!({"mpxn": MPAN}), json!({"device": new}), Some(&m.acme_key)).await;
    assert_eq!(outcome(&r), ("device-refused", Some("not-supported")), "{r}");
    for mpxn in [MPAN, MPRN] {
        let r = m.w.run(&m.acme, "8.7.2", json!({"mpxn": mpxn}), json!({"device": new}), None).await;
        assert_eq!(outcome(&r), ("done", None), "{r}");
    }
    let p = premises(&m, id).await;
    assert_eq!((&device(&p, &old)["on_han"], &device(&p, &old)["joined_to"]), (&json!(false), &json!([])), "{p}");
    assert_eq!(
        (&device(&p, &new)["on_han"], &device(&p, &new)["joined_to"]),
        (&json!(true), &json!([elec, gas])),
        "{p}"
    );
    assert_eq!(fuels(&m.w.fleet.ihd_view(new.parse().unwrap()).await.unwrap()), ["electricity", "gas"]);
    assert_eq!(fuels(&m.w.fleet.ihd_view(old.parse().unwrap()).await.unwrap()), Vec::<&str>::new());

    // Fitting is the premises' supplier's business.
    let (s, _) =
        m.w.call(Method::POST, &format!("/v1/premises/{id}/devices"), &m.bright, Some(json!({"kind": "ppmid"}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) =
        m.w.call(Method::POST, &format!("/v1/premises/{id}/devices"), &m.acme, Some(json!({"kind": "gas-meter"})))
            .await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("kind")), "{v}");
    m.w.close().await;
}

// R-FLT-5: a generation meter joins by the critical 8.7.1, signed by the supplier; a meter
// joins at most 5 devices and the comms hub's log holds at most 16, each refusal reported with
// its bound and nothing half-applied.
#[tokio::test]
async fn additional_equipment_joins_within_the_han_bounds() {
    let m = market().await;
    let home = enrolled_home(&m).await;
    let id = home["id"].as_i64().unwrap();
    let chf = device_of(&home, "comms-hub").to_string();
    let elec = device_of(&home, "electricity-meter").to_string();
    let generation = fit(&m, id, "additional").await;
    let r = m.w.run(&m.acme, "8.11", json!({"device": chf}), json!({"add": [generation]}), None).await;
    assert_eq!(outcome(&r), ("done", None), "{r}");
    let (s, ack) = m.w.submit(&m.acme, "8.7.1", json!({"mpxn": MPAN}), json!({"device": generation})).await;
    assert_eq!((s, ack["status"].as_str()), (StatusCode::ACCEPTED, Some("awaiting-signature")), "critical: {ack}");
    let r = m.w.run(&m.acme, "8.7.1", json!({"mpxn": MPAN}), json!({"device": generation}), Some(&m.acme_key)).await;
    assert_eq!(outcome(&r), ("done", None), "{r}");
    assert_eq!(device(&premises(&m, id).await, &generation)["joined_to"], json!([elec]));
    // Another supplier may not join devices to acme's meter.
    let (s, _) = m.w.submit(&m.bright, "8.7.2", json!({"mpxn": MPAN}), json!({"device": generation})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // The meter has the display and the generation meter; three more fill it.
    let mut more = Vec::new();
    for _ in 0..4 {
        more.push(fit(&m, id, "additional").await);
    }
    let r = m.w.run(&m.acme, "8.11", json!({"device": chf}), json!({"add": more}), None).await;
    assert_eq!(outcome(&r), ("done", None), "{r}");
    for (i, d) in more.iter().enumerate() {
        let r = m.w.run(&m.acme, "8.7.1", json!({"mpxn": MPAN}), json!({"device": d}), Some(&m.acme_key)).await;
        let want = if i < 3 { ("done", None) } else { ("device-refused", Some("han-log-full")) };
        assert_eq!(outcome(&r), want, "join {i}: {r}");
    }
    let p = premises(&m, id).await;
    assert_eq!(device(&p, &more[3])["joined_to"], json!([]), "{p}");

    // The comms hub's log: 3 installed + 5 fitted = 8; adding 9 more is refused whole.
    let mut crowd = Vec::new();
    for _ in 0..9 {
        crowd.push(fit(&m, id, "additional").await);
    }
    let r = m.w.run(&m.acme, "8.11", json!({"device": chf}), json!({"add": crowd}), None).await;
    assert_eq!(outcome(&r), ("device-refused", Some("han-log-full")), "{r}");
    assert!(r["response"]["body"]["reason"].as_str().unwrap().contains("16"), "{r}");
    let p = premises(&m, id).await;
    assert_eq!(device(&p, &crowd[0])["on_han"], json!(false), "nothing half-applied: {p}");
    let on: usize = p["devices"].as_array().unwrap().iter().filter(|d| d["on_han"] == json!(true)).count();
    assert_eq!(on, 9, "the comms hub and 8 devices on its log: {p}");
    let r = m.w.run(&m.acme, "8.11", json!({"device": chf}), json!({"add": crowd[..8]}), None).await;
    assert_eq!(outcome(&r), ("done", None), "exactly 16 fit: {r}");
    m.w.close().await;
}
