//! Product management end to end (R-PM-1..4): the hub checks a change's form and its
//! sender; the meter checks the product it would make and applies it whole or not at all;
//! a forward-dated change is held by the meter and takes effect at its instant with a
//! register snapshot; a later change of the same SRV supersedes a held one.

mod common;

use axum::http::{Method, StatusCode};
use common::*;
use serde_json::{Value, json};

const MIDNIGHT: &str = "2026-01-06T00:00:00Z";

fn tou() -> Value {
    json!({"tariff": {"rates_mp_per_kwh": [28000, 12000],
                      "switching": [{"at": "00:30", "rate": 1}, {"at": "07:30", "rate": 0}]},
           "standing_charge_mp_per_day": 55000})
}

async fn advance(m: &Market, by: &str) {
    let (s, v) = m.w.call(Method::POST, "/v1/clock/advance", &m.w.operator, Some(json!({"by": by}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// Submit a signed product change, optionally future-dated; returns the request with its
/// response (or the refusal when the hub refuses it).
async fn change(m: &Market, srv: &str, body: Value, at: Option<&str>) -> (StatusCode, Value) {
    let mut req = json!({"srv": srv, "target": {"mpxn": MPAN}, "body": body});
    if let Some(at) = at {
        req["execute_at"] = json!(at);
    }
    let (s, ack) = m.w.call(Method::POST, "/v1/requests", &m.acme, Some(req)).await;
    if s != StatusCode::ACCEPTED {
        return (s, ack);
    }
    assert_eq!(ack["status"], json!("awaiting-signature"), "{srv} is critical: {ack}");
    let (s, v) = m.w.sign(&m.acme, &ack, &m.acme_key).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    (StatusCode::ACCEPTED, m.w.settle(&m.acme, &ack).await)
}

/// The registry and the meter go over to prepayment, with these product changes applied
/// at once; a payment service provider joins. Returns its token.
async fn into_prepayment(m: &Market, changes: Vec<(&str, Value)>) -> String {
    let reg = json!({"effective_from": START, "supplier": "acme", "network_operator": "dno-13",
        "meter_type": "smart-compliant", "payment_mode": "prepayment"});
    let (s, v) = m.w.call(Method::POST, &format!("/v1/metering-points/{MPAN}/registrations"), &m.reg, Some(reg)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    for (srv, body) in changes {
        let (_, r) = change(m, srv, body, None).await;
        assert_eq!(r["response"]["outcome"], json!("done"), "{srv}: {r}");
    }
    m.w.party("paypoint", &["PSP"], 11, None).await
}

/// A payment service provider's top-up for the electricity point, delivered to the meter.
async fn top_up(m: &Market, psp: &str, pence: i64, reference: &str) {
    let customer = domain::customer::CustomerId::for_mpxn(domain::Mpxn::parse(MPAN).unwrap()).to_string();
    let body = json!({"customer_id": customer, "amount_pence": pence, "payment_reference": reference});
    let (s, v) = m.w.call(Method::POST, "/v1/top-ups", psp, Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    m.w.hub.dispatch_due().await.unwrap();
}

async fn config(m: &Market) -> Value {
    let r = m.w.run(&m.acme, "6.2", json!({"mpxn": MPAN}), json!({}), None).await;
    assert_eq!(r["response"]["outcome"], json!("done"), "{r}");
    r["response"]["body"].clone()
}

// R-PM-3, R-PM-4: a time-of-use tariff forward-dated to midnight is held by the meter, then
// takes effect at midnight exactly, with the import register at that instant.
#[tokio::test]
async fn a_tariff_forward_dated_across_midnight_takes_effect_with_a_register_snapshot() {
    let m = market().await;
    enrolled_home(&m).await;
    let r0 = m.w.run(&m.acme, "4.1.1", json!({"mpxn": MPAN}), json!({}), None).await;
    let (s, r) = change(&m, "1.1.1", tou(), Some(MIDNIGHT)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{r}");
    assert_eq!(r["execute_at"], Value::Null, "the hub sends it now: {r}");
    assert_eq!(r["response"]["body"]["held_until"], json!(MIDNIGHT), "{r}");
    let before = config(&m).await;
    assert_eq!(before["product"]["tariff"]["rates_mp_per_kwh"], json!([0]), "not yet: {before}");
    assert_eq!(before["pending"][0]["srv"], json!("1.1.1"));

    advance(&m, "PT16H").await; // 01:00 on Tuesday.
    // Without any command, the fleet wakes the meter for its held change, and the supplier
    // has the confirmation.
    assert_eq!(m.w.fleet.wake_due(100).await.unwrap(), 1);
    assert_eq!(m.w.fleet.wake_due(100).await.unwrap(), 0, "woken once");
    let (_, early) = m.w.call(Method::GET, "/v1/alerts", &m.acme, None).await;
    assert_eq!(early[0]["code"], json!("0x8F66"), "{early}");
    let after = config(&m).await;
    assert_eq!(
        after["product"]["tariff"],
        tou()["tariff"]
            .as_object()
            .map(|t| {
                let mut t = t.clone();
                t.insert("block_thresholds_kwh".into(), json!([]));
                t.insert("block_rates_mp_per_kwh".into(), json!([]));
                Value::Object(t)
            })
            .unwrap()
    );
    assert_eq!(after["pending"], json!([]));
    let a = &after["activations"][0];
    assert_eq!(
        (a["at"].as_str(), a["alert"].as_u64(), a["failure"].as_null()),
        (Some(MIDNIGHT), Some(0x8F66), Some(())),
        "{a}"
    );
    // The snapshot is the register at midnight exactly: what was read at 09:00 plus the
    // half-hours from 09:00 to midnight.
    let hh = m.w.run(&m.acme, "4.8.1", json!({"mpxn": MPAN}), json!({"from": START, "to": MIDNIGHT}), None).await;
    let used: u64 =
        hh["response"]["body"]["half_hours"].as_array().unwrap().iter().map(|p| p[1].as_u64().unwrap()).sum();
    let at_nine = r0["response"]["body"]["import_wh"].as_u64().unwrap();
    assert_eq!(a["import_wh"].as_u64().unwrap(), at_nine + used, "{a}");

    // R-PM-5: the supplier gets the confirmation with the new product and that reading.
    let (s, alerts) = m.w.call(Method::GET, "/v1/alerts", &m.acme, None).await;
    assert_eq!(s, StatusCode::OK, "{alerts}");
    let confirmation =
        alerts.as_array().unwrap().iter().find(|x| x["code"] == json!("0x8F66")).expect("a confirmation");
    assert_eq!(confirmation["at"], json!(MIDNIGHT));
    assert_eq!(confirmation["data"]["request_id"], r["id"], "{confirmation}");
    assert_eq!(confirmation["data"]["import_wh"], a["import_wh"], "{confirmation}");
    assert_eq!(confirmation["data"]["product"], after["product"], "{confirmation}");
    assert!(confirmation["name"].as_str().unwrap().contains("Future"), "{confirmation}");
    // Delivered again (a transport retrying after a crash): stored once.
    let again = hub::transport::DeviceAlert {
        device: confirmation["device"].as_str().unwrap().parse().unwrap(),
        seq: 1,
        at: MIDNIGHT.parse().unwrap(),
        code: 0x8F66,
        detail: "again".into(),
        data: None,
    };
    m.w.hub.receive_alerts(vec![again.clone(), again]).await.unwrap();
    let (_, after_retry) = m.w.call(Method::GET, "/v1/alerts", &m.acme, None).await;
    assert_eq!(after_retry, alerts, "nothing stored twice");
    // Nobody else sees them.
    let (_, theirs) = m.w.call(Method::GET, "/v1/alerts", &m.bright, None).await;
    assert_eq!(theirs, json!([]));
    m.w.close().await;
}

// R-PM-1, R-PM-2: the hub refuses what is malformed (naming the field); the meter refuses a
// configuration that would be inconsistent, whole, and the product stays as it was.
#[tokio::test]
async fn inconsistent_configurations_are_refused_whole() {
    let m = market().await;
    enrolled_home(&m).await;
    // Malformed: the hub says which field.
    let mut negative = tou();
    negative["tariff"]["rates_mp_per_kwh"] = json!([-1, 12000]);
    for (srv, body, field) in [
        ("1.1.1", negative, "body.tariff.rates_mp_per_kwh[0]"),
        ("1.6", json!({"payment_mode": "barter"}), "body.payment_mode"),
        ("2.1", json!({}), "body"),
        ("2.1", json!({"non_disablement": [{"from": "22:15", "to": "24:00"}]}), "body.non_disablement[0].from"),
    ] {
        let (s, v) = change(&m, srv, body.clone(), None).await;
        assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{srv} {body}: {v}");
    }
    let (s, v) = change(&m, "1.1.1", tou(), Some("2026-01-01")).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("execute_at")), "no back-dating: {v}");

    let original = config(&m).await["product"].clone();
    // Inconsistent: the meter refuses with the rule.
    let mut overlapping = tou();
    overlapping["tariff"]["switching"] = json!([{"at": "07:30", "rate": 0}, {"at": "00:30", "rate": 1}]);
    for (srv, body, rule) in [
        ("2.1", json!({"emergency_credit": {"limit_pence": 1000, "threshold_pence": 200}}), "credit mode"),
        ("1.1.1", overlapping, "must not overlap"),
        ("1.2.1", json!({"rates_mp_per_kwh": [20000, 10000]}), "switching"),
    ] {
        let (_, r) = change(&m, srv, body.clone(), None).await;
        assert_eq!(r["response"]["outcome"], json!("device-refused"), "{srv} {body}: {r}");
        assert_eq!(r["response"]["body"]["code"], json!("inconsistent"), "{r}");
        assert!(r["response"]["body"]["reason"].as_str().unwrap().contains(rule), "{srv}: {r}");
        assert_eq!(config(&m).await["product"], original, "nothing applied after {srv}");
    }
    // In prepayment mode emergency credit is fine; leaving it needs the credit cleared first.
    let (_, r) = change(&m, "1.6", json!({"payment_mode": "prepayment"}), None).await;
    assert_eq!(r["response"]["outcome"], json!("done"), "{r}");
    let (_, r) =
        change(&m, "2.1", json!({"emergency_credit": {"limit_pence": 1000, "threshold_pence": 200}}), None).await;
    assert_eq!(r["response"]["outcome"], json!("done"), "{r}");
    let (_, r) = change(&m, "1.6", json!({"payment_mode": "credit"}), None).await;
    assert_eq!(r["response"]["body"]["code"], json!("inconsistent"), "{r}");
    let (_, r) = change(&m, "2.1", json!({"emergency_credit": null}), None).await;
    assert_eq!(r["response"]["outcome"], json!("done"), "{r}");
    let (_, r) = change(&m, "1.6", json!({"payment_mode": "credit"}), None).await;
    assert_eq!(r["response"]["outcome"], json!("done"), "{r}");
    m.w.close().await;
}

// R-PM-3: held changes are judged against the product as it will be at their time; a later
// change of the same SRV supersedes a held one; a held change that is inconsistent by its
// time fails there (alert 0x8F67) and changes nothing.
#[tokio::test]
async fn held_changes_supersede_and_fail_by_explicit_rules() {
    let m = market().await;
    enrolled_home(&m).await;
    let one_am = "2026-01-06T01:00:00Z";
    // Emergency credit at 01:00 is consistent only because prepayment starts at midnight.
    let (_, r) =
        change(&m, "2.1", json!({"emergency_credit": {"limit_pence": 500, "threshold_pence": 100}}), Some(one_am))
            .await;
    assert_eq!(r["response"]["body"]["code"], json!("inconsistent"), "credit mode at 01:00: {r}");
    let (_, first) = change(&m, "1.6", json!({"payment_mode": "prepayment"}), Some(MIDNIGHT)).await;
    assert_eq!(first["response"]["outcome"], json!("done"), "{first}");
    let (_, ec) =
        change(&m, "2.1", json!({"emergency_credit": {"limit_pence": 500, "threshold_pence": 100}}), Some(one_am))
            .await;
    assert_eq!(ec["response"]["outcome"], json!("done"), "{ec}");
    // A second 1.6 held for midnight replaces the first.
    let (_, second) = change(&m, "1.6", json!({"payment_mode": "credit"}), Some(MIDNIGHT)).await;
    assert_eq!(second["response"]["body"]["superseded"], first["id"], "{second}");
    assert_eq!(config(&m).await["pending"].as_array().unwrap().len(), 2);
    // Held changes take effect on half hours only.
    let (s, v) = change(&m, "1.6", json!({"payment_mode": "prepayment"}), Some("2026-01-06T00:10:00Z")).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("execute_at")), "{v}");

    advance(&m, "PT17H").await; // 02:00
    let after = config(&m).await;
    let acts = after["activations"].as_array().unwrap();
    assert_eq!(acts.len(), 2, "{after}");
    assert_eq!((acts[0]["request_id"].clone(), acts[0]["alert"].as_u64()), (second["id"].clone(), Some(0x8F66)));
    assert_eq!((acts[1]["request_id"].clone(), acts[1]["alert"].as_u64()), (ec["id"].clone(), Some(0x8F67)));
    assert!(acts[1]["failure"].as_str().unwrap().contains("credit mode"), "{after}");
    let (_, alerts) = m.w.call(Method::GET, "/v1/alerts", &m.acme, None).await;
    let codes: Vec<&str> = alerts.as_array().unwrap().iter().map(|a| a["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["0x8F66", "0x8F67"], "the supplier hears of both, in order: {alerts}");
    assert_eq!(after["product"]["payment_mode"], json!("credit"));
    assert_eq!(after["product"]["emergency_credit"], Value::Null, "the failed change applied nothing");
    // Only the supplier sees the product.
    let r = m.w.run(&m.dno, "6.2", json!({"mpxn": MPAN}), json!({}), None).await;
    assert_eq!(r["response"]["body"]["product"], Value::Null, "{r}");
    m.w.close().await;
}

// R-PAY-5: a prepayment story on the meter. Credit comes in by UTRN; consumption at the
// tariff's rate and the daily standing charge go out in integer pence; falling below the
// low-credit threshold raises 0x810D; running out raises 0x8F0F and disables supply (but
// not inside a non-disablement period); a top-up arms it again.
#[tokio::test]
async fn a_prepayment_story_from_top_up_to_disablement_and_back() {
    let m = market().await;
    enrolled_home(&m).await;
    let psp = into_prepayment(
        &m,
        vec![
            ("1.6", json!({"payment_mode": "prepayment"})),
            ("1.1.1", json!({"tariff": {"rates_mp_per_kwh": [30000]}, "standing_charge_mp_per_day": 50000})),
            ("2.1", json!({"low_credit_threshold_pence": 150, "non_disablement": [{"from": "00:00", "to": "07:00"}]})),
        ],
    )
    .await;
    top_up(&m, &psp, 300, "STORY-1").await;
    let c = config(&m).await;
    assert_eq!(c["balance_pence"], json!(300), "{c}");

    // Time passes in half-day steps until the credit runs out.
    let mut disabled_at = None;
    for _ in 0..8 {
        advance(&m, "PT12H").await;
        let c = config(&m).await;
        if let Some(e) = c["events"].as_array().unwrap().iter().find(|e| e["alert"] == json!(0x8F0F)) {
            disabled_at = Some(e["at"].as_str().unwrap().to_string());
            break;
        }
    }
    let c = config(&m).await;
    let events = c["events"].as_array().unwrap();
    let alerts: Vec<u64> = events.iter().map(|e| e["alert"].as_u64().unwrap()).collect();
    let low = alerts.iter().position(|a| *a == 0x810D).expect("a low-credit alert");
    let off = alerts.iter().position(|a| *a == 0x8F0F).expect("a disablement alert");
    assert!(low < off, "low credit comes first: {events:?}");
    assert!(c["balance_pence"].as_i64().unwrap() <= 0, "{c}");
    // Never switched off inside the protected hours (00:00 to 07:00 London, GMT in January).
    let at: jiff::Timestamp = disabled_at.unwrap().parse().unwrap();
    let hour = at.to_zoned(jiff::tz::TimeZone::UTC).hour();
    assert!(!(0..7).contains(&hour), "switched off at {at}, inside the non-disablement period");
    let r = m.w.run(&m.acme, "7.4", json!({"mpxn": MPAN}), json!({}), None).await;
    assert_eq!(r["response"]["body"]["supply"], json!("disabled"), "{r}");
    // The supplier heard: low credit, then disablement, in that order.
    let (_, alerts) = m.w.call(Method::GET, "/v1/alerts?limit=1000", &m.acme, None).await;
    let codes: Vec<&str> = alerts.as_array().unwrap().iter().map(|a| a["code"].as_str().unwrap()).collect();
    let (low, off) =
        (codes.iter().position(|c| *c == "0x810D").unwrap(), codes.iter().position(|c| *c == "0x8F0F").unwrap());
    assert!(low < off, "{codes:?}");

    // A top-up brings credit back and arms the supply for the consumer to restore.
    top_up(&m, &psp, 1000, "STORY-2").await;
    let r = m.w.run(&m.acme, "7.4", json!({"mpxn": MPAN}), json!({}), None).await;
    assert_eq!(r["response"]["body"]["supply"], json!("armed"), "{r}");
    let c = config(&m).await;
    assert!(c["balance_pence"].as_i64().unwrap() > 0, "{c}");
    assert_eq!(c["events"].as_array().unwrap().last().unwrap()["alert"], json!(0x8F32), "{c}");
    m.w.close().await;
}

// R-PAY-5: emergency credit and debt recovery on the meter. Below the threshold emergency
// credit is offered (0x8119); the consumer takes it on the keypad (0x81AB) and supply stays
// on until it is used up (0x81AA, then 0x8F0F); debt set by SRV 2.3 is recovered at each
// midnight; a top-up repays the emergency credit and arms the supply.
#[tokio::test]
async fn emergency_credit_and_debt_recovery() {
    let m = market().await;
    let home = enrolled_home(&m).await;
    let meter: domain::Eui64 = device_of(&home, "electricity-meter").parse().unwrap();
    let psp = into_prepayment(
        &m,
        vec![
            ("1.6", json!({"payment_mode": "prepayment"})),
            ("1.1.1", json!({"tariff": {"rates_mp_per_kwh": [30000]}, "standing_charge_mp_per_day": 50000})),
            (
                "2.1",
                json!({"emergency_credit": {"limit_pence": 500, "threshold_pence": 100},
                       "debt_recovery": {"rate_pence_per_day": 20, "cap_pence_per_week": 100}}),
            ),
            ("2.3", json!({"debt_pence": 60})),
        ],
    )
    .await;
    top_up(&m, &psp, 300, "EC-1").await;
    // With 300 pence, not below the threshold: the supplier cannot force emergency credit on.
    let (_, r) = change(&m, "2.5", json!({}), None).await;
    assert_eq!(r["response"]["body"]["code"], json!("inconsistent"), "{r}");

    let alerts =
        |c: &Value| c["events"].as_array().unwrap().iter().map(|e| e["alert"].as_u64().unwrap()).collect::<Vec<_>>();
    let mut offered = false;
    for _ in 0..8 {
        advance(&m, "PT6H").await;
        if alerts(&config(&m).await).contains(&0x8119) {
            offered = true;
            break;
        }
    }
    assert!(offered, "emergency credit was never offered");
    let c = config(&m).await;
    assert!(c["debt_pence"].as_i64().unwrap() < 60, "debt is being recovered: {c}");
    let taken = m.w.fleet.keypad_emergency_credit(meter).await.unwrap();
    let taken = serde_json::to_value(&taken).unwrap();
    assert_eq!(taken["body"]["emergency_credit"], json!("active"), "{taken}");
    if taken["body"]["supply"] == json!("armed") {
        // Credit ran out before the consumer took emergency credit: they restore the supply.
        let restored = m.w.fleet.keypad_restore_supply(meter).await.unwrap();
        assert_eq!(serde_json::to_value(&restored).unwrap()["body"]["supply"], json!("enabled"));
    }

    for _ in 0..12 {
        advance(&m, "PT6H").await;
        if alerts(&config(&m).await).contains(&0x81AA) {
            break;
        }
    }
    let c = config(&m).await;
    let a = alerts(&c);
    let (ec_on, ec_out, off) = (
        a.iter().position(|x| *x == 0x81AB).unwrap(),
        a.iter().position(|x| *x == 0x81AA).unwrap_or_else(|| panic!("emergency credit exhausted: {c}")),
        a.iter().rposition(|x| *x == 0x8F0F).expect("supply disabled"),
    );
    assert!(ec_on < ec_out && ec_out < off, "{a:?}");
    assert!(c["balance_pence"].as_i64().unwrap() <= -500, "the emergency credit was used: {c}");

    top_up(&m, &psp, 2000, "EC-2").await;
    let c = config(&m).await;
    assert_eq!(c["emergency_credit_active"], json!(false), "repaid: {c}");
    // SRV 1.5: the supplier adjusts the meter balance (a refund, a correction).
    let (_, r) = change(&m, "1.5", json!({"adjustment_pence": -100}), None).await;
    assert_eq!(
        r["response"]["body"]["balance_pence"].as_i64().unwrap(),
        c["balance_pence"].as_i64().unwrap() - 100,
        "{r}"
    );
    let (s, v) = change(&m, "1.5", json!({"adjustment_pence": 0}), None).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("body.adjustment_pence")), "{v}");
    let c = config(&m).await;
    let r = m.w.run(&m.acme, "7.4", json!({"mpxn": MPAN}), json!({}), None).await;
    assert_eq!(r["response"]["body"]["supply"], json!("armed"), "{r}");
    let view = m.w.fleet.ihd_view(meter).await.unwrap();
    let shown = &view["meters"][0];
    assert_eq!(shown["balance_pence"], c["balance_pence"], "{view}");
    assert!(shown["debt_pence"].is_i64(), "the display shows debt: {view}");
    m.w.close().await;
}

// Changes held for the same instant apply in the order they arrived, and one that supersedes
// a held change takes its place: resending the earlier of two does not make the later fail.
#[tokio::test]
async fn changes_held_for_one_instant_keep_their_order_when_one_is_resent() {
    let m = market().await;
    enrolled_home(&m).await;
    let ec = json!({"emergency_credit": {"limit_pence": 500, "threshold_pence": 100}});
    for (srv, body) in
        [("1.6", json!({"payment_mode": "prepayment"})), ("2.1", ec), ("1.6", json!({"payment_mode": "prepayment"}))]
    {
        let (_, r) = change(&m, srv, body, Some(MIDNIGHT)).await;
        assert_eq!(r["response"]["outcome"], json!("done"), "{srv}: {r}");
    }
    advance(&m, "PT16H").await;
    let after = config(&m).await;
    let alerts: Vec<u64> =
        after["activations"].as_array().unwrap().iter().map(|a| a["alert"].as_u64().unwrap()).collect();
    assert_eq!(alerts, [0x8F66, 0x8F66], "{after}");
    assert_eq!(after["product"]["emergency_credit"]["limit_pence"], json!(500), "{after}");
    m.w.close().await;
}

// Prepayment alerts reach the supplier at their time, with no command to the meter: the
// fleet wakes a prepayment meter when its account is about to raise one.
#[tokio::test]
async fn prepayment_alerts_arrive_on_time_without_any_command() {
    let m = market().await;
    enrolled_home(&m).await;
    let psp = into_prepayment(
        &m,
        vec![
            ("1.6", json!({"payment_mode": "prepayment"})),
            ("1.1.1", json!({"tariff": {"rates_mp_per_kwh": [30000]}, "standing_charge_mp_per_day": 50000})),
            ("2.1", json!({"low_credit_threshold_pence": 150})),
        ],
    )
    .await;
    top_up(&m, &psp, 300, "ON-TIME").await;
    // Half an hour at a time, only the fleet's own waking: no request goes to the meter.
    let mut seen: Vec<(String, jiff::Timestamp)> = Vec::new();
    for _ in 0..96 {
        advance(&m, "PT30M").await;
        m.w.fleet.wake_due(100).await.unwrap();
        let (_, alerts) = m.w.call(Method::GET, "/v1/alerts?limit=1000", &m.acme, None).await;
        let now = m.w.hub.now();
        for a in alerts.as_array().unwrap() {
            let code = a["code"].as_str().unwrap().to_string();
            if !seen.iter().any(|(c, _)| *c == code) {
                let at: jiff::Timestamp = a["at"].as_str().unwrap().parse().unwrap();
                assert!(
                    now.duration_since(at) <= jiff::SignedDuration::from_mins(30),
                    "{code} raised at {at} heard at {now}"
                );
                seen.push((code, at));
            }
        }
        if seen.iter().any(|(c, _)| c == "0x8F0F") {
            break;
        }
    }
    let codes: Vec<&str> = seen.iter().map(|(c, _)| c.as_str()).collect();
    assert!(codes.contains(&"0x810D") && codes.contains(&"0x8F0F"), "{codes:?}");
    m.w.close().await;
}
