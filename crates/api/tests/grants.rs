//! Relationships the registry does not hold, end to end: an other user acts only while it
//! holds the consumer's consent, and reads only from the consent's start; an agent acts
//! only for its appointer, only while appointed and while the appointer supplies (R-SR-4,
//! R-COS-6 groundwork).

mod common;

use axum::http::{Method, StatusCode};
use common::*;
use serde_json::{Value, json};

async fn advance(m: &Market, by: &str) {
    let (s, v) = m.w.call(Method::POST, "/v1/clock/advance", &m.w.operator, Some(json!({"by": by}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// Submit and run a request; returns (HTTP status of the submission, request with response).
async fn attempt(m: &Market, token: &str, srv: &str, body: Value) -> (StatusCode, Value) {
    let (s, ack) = m.w.submit(token, srv, json!({"mpxn": MPAN}), body).await;
    if s != StatusCode::ACCEPTED {
        return (s, ack);
    }
    (s, m.w.settle(token, &ack).await)
}

#[tokio::test]
async fn other_users_act_only_while_they_hold_consent_and_read_only_from_its_start() {
    let m = market().await;
    enrolled_home(&m).await;
    let esco = m.w.party("esco", &["OU"], 6, None).await;
    let consents = format!("/v1/metering-points/{MPAN}/consents");

    let (s, v) = attempt(&m, &esco, "4.8.1", json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "no consent yet: {v}");
    assert_eq!(v["missing"], json!("relationship"), "{v}");

    // Refusals of a consent record, each naming its field.
    for (body, field) in [
        (json!({"from": "2026-01-01"}), "from"),
        (json!({"from": "2026-01-06", "to": "2026-01-06"}), "to"),
        (json!({"from": "yesterday"}), "from"),
    ] {
        let (s, v) = m.w.call(Method::POST, &consents, &esco, Some(body.clone())).await;
        assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{body}: {v}");
    }
    let (s, _) = m.w.call(Method::POST, "/v1/metering-points/1700053058802/consents", &m.acme, Some(json!({}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "only other users record consent");

    // START is 2026-01-05T09:00Z; the consent begins an hour later.
    let (s, c) = m.w.call(Method::POST, &consents, &esco, Some(json!({"from": "2026-01-05T10:00:00Z"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    assert_eq!((c["kind"].as_str(), c["party"].as_str(), c["to"].as_null()), (Some("consent"), Some("esco"), Some(())));
    let (s, v) = attempt(&m, &esco, "4.8.1", json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "the consent has not begun: {v}");

    // Who sees the record: the other user and the registered supplier, not another supplier.
    let (_, seen) = m.w.call(Method::GET, &consents, &m.acme, None).await;
    assert_eq!(seen.as_array().unwrap().len(), 1, "{seen}");
    let (_, seen) = m.w.call(Method::GET, &consents, &m.bright, None).await;
    assert_eq!(seen, json!([]));

    advance(&m, "P1D").await;
    let (s, r) = attempt(&m, &esco, "4.8.1", json!({"from": "2026-01-01T00:00:00Z"})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{r}");
    assert_eq!(r["response"]["outcome"], json!("done"), "{r}");
    assert_eq!(r["response"]["body"]["from"], json!("2026-01-05T10:00:00Z"), "read only from the consent's start");
    // Consent does not widen the catalogue: other users may not read registers.
    let (s, v) = attempt(&m, &esco, "4.1.1", json!({})).await;
    assert_eq!((s, v["missing"].as_str()), (StatusCode::FORBIDDEN, Some("role")), "{v}");

    // Ending: not by another supplier; by the other user, once, kept for audit.
    let seq = c["seq"].as_i64().unwrap();
    let end = format!("{consents}/{seq}/end");
    let (s, _) = m.w.call(Method::POST, &end, &m.bright, Some(json!({"reason": "mine now"}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = m.w.call(Method::POST, &end, &esco, Some(json!({"reason": ""}))).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("reason")), "{v}");
    let (s, ended) = m.w.call(Method::POST, &end, &esco, Some(json!({"reason": "customer withdrew consent"}))).await;
    assert_eq!(s, StatusCode::OK, "{ended}");
    assert_eq!((ended["ended_by"].as_str(), ended["to"].as_str()), (Some("esco"), Some("2026-01-06T09:00:00Z")));
    let (s, _) = m.w.call(Method::POST, &end, &esco, Some(json!({"reason": "again"}))).await;
    assert_eq!(s, StatusCode::CONFLICT, "ended once");
    let (s, v) = attempt(&m, &esco, "4.8.1", json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "consent ended: {v}");
    let (_, seen) = m.w.call(Method::GET, &consents, &esco, None).await;
    assert_eq!(seen[0]["end_reason"], json!("customer withdrew consent"), "the record stays: {seen}");
    m.w.close().await;
}

#[tokio::test]
async fn agents_act_for_their_appointer_only_while_appointed_and_it_supplies() {
    let m = market().await;
    enrolled_home(&m).await;
    let agent = m.w.party("meter-ops", &["RSA"], 7, None).await;
    let appointments = format!("/v1/metering-points/{MPAN}/appointments");

    let (s, v) = attempt(&m, &agent, "7.4", json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "not appointed: {v}");
    let (s, v) = m.w.call(Method::POST, &appointments, &m.bright, Some(json!({"agent": "meter-ops"}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "only the registered supplier appoints: {v}");
    let (s, v) = m.w.call(Method::POST, &appointments, &m.acme, Some(json!({"agent": "dno-13"}))).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("agent")), "{v}");

    let (s, a) = m.w.call(Method::POST, &appointments, &m.acme, Some(json!({"agent": "meter-ops"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(a["appointer"], json!("acme"));
    let (s, r) = attempt(&m, &agent, "7.4", json!({})).await;
    assert_eq!((s, r["response"]["outcome"].as_str()), (StatusCode::ACCEPTED, Some("done")), "{r}");
    // An agent does only what the catalogue grants agents.
    let (s, v) = attempt(&m, &agent, "4.1.1", json!({})).await;
    assert_eq!((s, v["missing"].as_str()), (StatusCode::FORBIDDEN, Some("role")), "{v}");

    // De-appointed: no more.
    let end = format!("{appointments}/{}/end", a["seq"]);
    let (s, v) = m.w.call(Method::POST, &end, &agent, Some(json!({"reason": "I quit"}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "only the appointer ends it: {v}");
    let (s, v) = m.w.call(Method::POST, &end, &m.acme, Some(json!({"reason": "contract over"}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = attempt(&m, &agent, "7.4", json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Appointed again, then the supplier changes: the agent's power ends with its appointer's.
    let (s, _) = m.w.call(Method::POST, &appointments, &m.acme, Some(json!({"agent": "meter-ops"}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let body = json!({"effective_from": "2026-01-06", "supplier": "bright", "network_operator": "dno-13", "meter_type": "smart-compliant"});
    let (s, v) = m.w.call(Method::POST, &format!("/v1/metering-points/{MPAN}/registrations"), &m.reg, Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = attempt(&m, &agent, "7.4", json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "acme still supplies today");
    advance(&m, "P1D").await;
    let (s, v) = attempt(&m, &agent, "7.4", json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "acme's agent after the switch: {v}");
    // The new supplier sees every appointment of its metering point; the agent its own.
    let (_, all) = m.w.call(Method::GET, &appointments, &m.bright, None).await;
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    let (_, own) = m.w.call(Method::GET, &appointments, &agent, None).await;
    assert_eq!(own.as_array().unwrap().len(), 2, "{own}");
    m.w.close().await;
}
