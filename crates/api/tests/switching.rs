//! Change of supplier and change of tenancy, end to end through the HTTP API, by moving the
//! simulated clock (R-COS-1..7, R-COT-1..4).

mod common;

use axum::http::{Method, StatusCode};
use common::*;
use device::{Access, Command, Outcome, RefusalCode, RequestId, Requester};
use domain::Eui64;
use domain::crypto::{SigningKey, SystemRandom};
use hub::transport::{DeviceMessage, DeviceTransport};
use jiff::Timestamp;
use serde_json::{Value, json};

const MPRN: &str = "3938424403";
/// A large gas supply point (registered below with 100,000 kWh a year).
const MPRN_LARGE: &str = "1234567810";
/// A traditional meter in Scotland (distributor 17).
const MPAN_SCOTLAND: &str = "1700053058802";

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

struct Nova {
    token: String,
    key: SigningKey,
}

/// nova: an incoming import and gas supplier with a signing key.
async fn nova(m: &Market) -> Nova {
    let key = SigningKey::generate(&SystemRandom::new()).unwrap();
    let token = m.w.party("nova", &["IS", "GS"], 9, Some(&key)).await;
    Nova { token, key }
}

/// Let the clock's work happen: switches move, requests run, until nothing is left.
async fn tick(w: &World) {
    loop {
        let moved = w.hub.run_switches_due().await.unwrap();
        let ran = w.hub.dispatch_due().await.unwrap();
        let followed = w.hub.run_deliveries_due().await.unwrap();
        if moved + followed + ran == 0 {
            return;
        }
    }
}

async fn advance(w: &World, to: &str) {
    w.clock.advance_to(t(to));
    tick(w).await;
}

async fn request(w: &World, token: &str, body: Value) -> (StatusCode, Value) {
    w.call(Method::POST, "/v1/switches", token, Some(body)).await
}

async fn act(w: &World, token: &str, id: i64, action: &str) -> (StatusCode, Value) {
    w.call(Method::POST, &format!("/v1/switches/{id}/{action}"), token, None).await
}

async fn view(w: &World, token: &str, id: i64) -> Value {
    let (s, v) = w.call(Method::GET, &format!("/v1/switches/{id}"), token, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

async fn stage(w: &World, token: &str, id: i64) -> String {
    view(w, token, id).await["switch"]["stage"].as_str().unwrap().to_string()
}

async fn notices(w: &World, token: &str) -> Vec<Value> {
    let (s, v) = w.call(Method::GET, "/v1/notices", token, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v.as_array().unwrap().clone()
}

async fn supplier_at(w: &World, mpxn: &str, at: &str) -> String {
    let (s, v) = w.call(Method::GET, &format!("/v1/metering-points/{mpxn}?at={at}"), &w.operator, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["registration"]["supplier"].as_str().unwrap().to_string()
}

/// A command for a device straight through the transport, bypassing the hub.
async fn direct(w: &World, originator: Eui64, target: Eui64, srv: &str, key: &SigningKey, access: Access) -> Outcome {
    let bytes = Command {
        id: RequestId { originator, target, counter: 1_000_000 },
        srv: srv.into(),
        execute_at: None,
        body: b"{}".to_vec(),
    }
    .encode();
    let signature = key.sign(&SystemRandom::new(), &bytes).unwrap();
    w.fleet.send(DeviceMessage { target, bytes, signature: Some(signature), access, image: None }).await.unwrap()
}

const ACME: Eui64 = Eui64::from_u64(0x90B3_D51F_3001_0001);
const NOVA: Eui64 = Eui64::from_u64(0x90B3_D51F_3001_0009);

// R-COS-1, R-COS-3, R-COS-4, R-COS-5, R-COS-6: an electricity switch with no objection, end
// to end: window, confirmation, the switch instant's credentials and definitive reading.
#[tokio::test]
async fn electricity_switch_without_objection() {
    let m = market().await;
    let home = enrolled_home(&m).await;
    let nova = nova(&m).await;
    let meter: Eui64 = device_of(&home, "electricity-meter").parse().unwrap();
    let agent = m.w.party("meterco", &["RSA"], 10, None).await;
    let (s, v) =
        m.w.call(
            Method::POST,
            &format!("/v1/metering-points/{MPAN}/appointments"),
            &m.acme,
            Some(json!({"agent": "meterco"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // Monday 5 January: the window runs 5 working days (6-9, 12 January) and closes at
    // midnight starting the 13th; the supply cannot start before then.
    let (s, v) = request(&m.w, &nova.token, json!({"mpxn": MPAN, "supply_start": "2026-01-12"})).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("supply_start")), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("2026-01-13"), "{v}");
    for (token, body, status, field) in [
        (&m.acme, json!({"mpxn": MPAN, "supply_start": "2026-01-14"}), StatusCode::FORBIDDEN, None),
        (&nova.token, json!({"mpxn": MPAN}), StatusCode::BAD_REQUEST, Some("supply_start")),
        (
            &nova.token,
            json!({"mpxn": MPAN, "supply_start": "2026-03-01"}),
            StatusCode::BAD_REQUEST,
            Some("supply_start"),
        ),
        (
            &nova.token,
            json!({"mpxn": MPAN, "supply_start": "14/01/2026"}),
            StatusCode::BAD_REQUEST,
            Some("supply_start"),
        ),
        (
            &nova.token,
            json!({"mpxn": MPAN, "supply_start": "2026-01-14", "supplier": "acme"}),
            StatusCode::BAD_REQUEST,
            Some("supplier"),
        ),
        (&m.dno, json!({"mpxn": MPAN, "supply_start": "2026-01-14"}), StatusCode::FORBIDDEN, None),
    ] {
        let (s, v) = request(&m.w, token, body.clone()).await;
        assert_eq!((s, v["field"].as_str()), (status, field), "{body}: {v}");
    }
    let (s, sw) = request(&m.w, &nova.token, json!({"mpxn": MPAN, "supply_start": "2026-01-14"})).await;
    assert_eq!(s, StatusCode::CREATED, "{sw}");
    let id = sw["id"].as_i64().unwrap();
    assert_eq!(sw["stage"], json!("objection-window"));
    assert_eq!(sw["deadline"], json!("2026-01-13T00:00:00Z"));
    let (s, v) = request(&m.w, &nova.token, json!({"mpxn": MPAN, "supply_start": "2026-01-15"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "one switch at a time: {v}");
    assert!(notices(&m.w, &m.acme).await.iter().any(|n| n["code"] == json!("switch-requested")));

    advance(&m.w, "2026-01-12T23:59:59Z").await;
    assert_eq!(stage(&m.w, &nova.token, id).await, "objection-window");
    advance(&m.w, "2026-01-13T09:00:00Z").await;
    let v = view(&m.w, &nova.token, id).await;
    assert_eq!(v["switch"]["stage"], json!("confirmed"), "{v}");
    assert_eq!(v["switch"]["switch_at"], json!("2026-01-14T00:00:00Z"));
    // Confirmed at the window's own closing instant, though noticed nine hours later.
    assert_eq!(v["events"][1]["at"], json!("2026-01-13T00:00:00Z"), "{v}");
    let (s, v) = act(&m.w, &nova.token, id, "cancel").await;
    assert_eq!(s, StatusCode::CONFLICT, "a confirmed switch is irrevocable: {v}");
    assert_eq!(supplier_at(&m.w, MPAN, "2026-01-13T23:59:59Z").await, "acme");
    assert_eq!(supplier_at(&m.w, MPAN, "2026-01-14T00:00:00Z").await, "nova");

    // The switch instant passes: 6.23 goes to the meter, signed with the hub's key.
    advance(&m.w, "2026-01-14T08:00:00Z").await;
    let v = view(&m.w, &nova.token, id).await;
    assert_eq!(v["switch"]["stage"], json!("completed"), "{v}");
    assert_eq!(v["switch"]["credentials"], json!("replaced"), "{v}");
    let reading = v["switch"]["definitive_reading"].clone();
    assert_eq!(reading["at"], json!("2026-01-14T00:00:00Z"), "{v}");
    // The meter's own registers at the instant, and the same reading for both suppliers.
    let system = m.w.fleet.system(meter).await.unwrap();
    let registers = system.consumption(system.meter(meter).unwrap()).registers_at(t("2026-01-14T00:00:00Z"));
    assert_eq!(reading["import_wh"], json!(registers.import_wh));
    assert_eq!(view(&m.w, &m.acme, id).await["switch"]["definitive_reading"], reading);
    for token in [&m.acme, &nova.token] {
        let done = notices(&m.w, token).await.into_iter().find(|n| n["code"] == json!("switch-completed")).unwrap();
        assert_eq!(done["data"]["definitive_reading"], reading, "{done}");
        // And as a hub alert, through the same path as device alerts (R-FLT-2).
        let (_, alerts) = m.w.call(Method::GET, "/v1/alerts", token, None).await;
        let alert = alerts.as_array().unwrap().iter().find(|a| a["code"] == json!("hub.change-of-supplier")).unwrap();
        assert_eq!(alert["data"]["definitive_reading"], reading, "{alert}");
    }
    // Every device of the premises follows the electricity supplier.
    let trusted = system.devices.iter().filter(|d| d.supplier.as_ref().unwrap().originator == NOVA).count();
    assert_eq!(trusted, system.devices.len() - 1, "all but the gas meter");
    assert_eq!(
        system.meter_for(domain::Fuel::Gas).map(|g| system
            .device(g.eui)
            .unwrap()
            .supplier
            .as_ref()
            .unwrap()
            .originator),
        Some(ACME)
    );

    // R-COS-5: acme's signed disable-supply is refused by the hub and, sent straight to the
    // meter, by the meter itself; nova's runs.
    let (s, _) = m.w.submit(&m.acme, "7.2", json!({"mpxn": MPAN}), json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let supplier = Access { requester: Requester::Supplier, from: None, to: None };
    let o = direct(&m.w, ACME, meter, "7.2", &m.acme_key, supplier).await;
    assert!(matches!(o, Outcome::Refused { code: RefusalCode::UntrustedOriginator, .. }), "{o:?}");
    let r = m.w.run(&nova.token, "7.2", json!({"mpxn": MPAN}), json!({}), Some(&nova.key)).await;
    assert_eq!(r["response"]["body"]["supply"], json!("disabled"), "{r}");
    let r = m.w.run(&nova.token, "7.1", json!({"mpxn": MPAN}), json!({}), Some(&nova.key)).await;
    assert_eq!(r["response"]["body"]["supply"], json!("enabled"), "{r}");

    // R-COS-4: each supplier reads its own period only, from the hub and from the meter.
    advance(&m.w, "2026-01-16T09:00:00Z").await;
    let r = m.w.run(&nova.token, "4.8.1", json!({"mpxn": MPAN}), json!({"from": "2026-01-10T00:00:00Z"}), None).await;
    assert_eq!(r["response"]["body"]["from"], json!("2026-01-14T00:00:00Z"), "{r}");
    let r = m.w.run(&m.acme, "4.8.1", json!({"mpxn": MPAN}), json!({"from": "2026-01-10T00:00:00Z"}), None).await;
    assert_eq!(r["response"]["body"]["from"], json!("2026-01-10T00:00:00Z"), "{r}");
    assert_eq!(r["response"]["body"]["to"], json!("2026-01-14T00:00:00Z"), "{r}");
    assert_eq!(r["response"]["body"]["half_hours"].as_array().unwrap().len(), 4 * 48);
    let r = m.w.run(&m.acme, "4.17", json!({"mpxn": MPAN}), json!({"from": "2026-01-15T00:00:00Z"}), None).await;
    assert_eq!(r["response"]["body"]["days"], json!([]), "nothing of nova's period: {r}");
    let (s, _) = m.w.submit(&m.acme, "4.1.1", json!({"mpxn": MPAN}), json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a former supplier reads no registers now");
    // The meter keeps acme to its period even if told acme may read anything.
    let anything = Access { requester: Requester::FormerSupplier, from: None, to: None };
    let o = direct(&m.w, ACME, meter, "4.8.1", &m.acme_key, anything).await;
    let Outcome::Done(body) = o else { panic!("{o:?}") };
    assert_eq!(body["to"], json!("2026-01-14T00:00:00Z"), "{body}");
    let o = direct(&m.w, Eui64::from_u64(0x90B3_D51F_3001_0002), meter, "4.8.1", &m.acme_key, anything).await;
    assert!(matches!(o, Outcome::Refused { code: RefusalCode::NotEntitled, .. }), "{o:?}");

    // R-COS-6: acme's agent lost its powers at the switch, and its appointment was ended.
    let (s, _) = m.w.submit(&agent, "7.4", json!({"mpxn": MPAN}), json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, list) = m.w.call(Method::GET, &format!("/v1/metering-points/{MPAN}/appointments"), &m.acme, None).await;
    assert_eq!(list[0]["to"], json!("2026-01-14T00:00:00Z"), "{list}");
    assert!(list[0]["end_reason"].as_str().unwrap().contains("change of supplier"), "{list}");
    m.w.close().await;
}

// R-COS-1: an objection resolved in time lets the switch proceed; a restart in the middle
// changes nothing.
#[tokio::test]
async fn electricity_objection_resolved_across_a_restart() {
    let mut m = market().await;
    enrolled_home(&m).await;
    let nova = nova(&m).await;
    let (_, sw) = request(&m.w, &nova.token, json!({"mpxn": MPAN, "supply_start": "2026-01-14"})).await;
    let id = sw["id"].as_i64().unwrap();
    advance(&m.w, "2026-01-07T10:00:00Z").await;
    for (token, action, status) in [
        (&nova.token, "object", StatusCode::BAD_REQUEST),
        (&m.reg, "object", StatusCode::FORBIDDEN),
        (&m.acme, "withdraw-objection", StatusCode::CONFLICT),
        (&m.acme, "confirm", StatusCode::FORBIDDEN),
        (&m.acme, "dance", StatusCode::BAD_REQUEST),
    ] {
        let (s, v) = act(&m.w, token, id, action).await;
        assert_eq!(s, status, "{action}: {v}");
    }
    let (s, v) = act(&m.w, &m.acme, id, "object").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // 5 working days after Wednesday 7 January: 8, 9, 12, 13, 14.
    assert_eq!(v["switch"]["deadline"], json!("2026-01-15T00:00:00Z"), "{v}");
    assert!(notices(&m.w, &nova.token).await.iter().any(|n| n["code"] == json!("switch-objected")));

    let clock = m.w.clock.clone();
    m.w.close().await;
    m.w = open_world(m._dir.path(), clock).await;
    assert_eq!(stage(&m.w, &nova.token, id).await, "objected");

    advance(&m.w, "2026-01-09T10:00:00Z").await;
    let (s, v) = act(&m.w, &m.acme, id, "withdraw-objection").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["switch"]["stage"].as_str(), v["switch"]["switch_at"].as_str()),
        (Some("confirmed"), Some("2026-01-14T00:00:00Z"))
    );
    advance(&m.w, "2026-01-14T00:30:00Z").await;
    assert_eq!(stage(&m.w, &nova.token, id).await, "completed");
    assert_eq!(supplier_at(&m.w, MPAN, "2026-01-14T00:30:00Z").await, "nova");
    let steps: Vec<String> = view(&m.w, &m.acme, id).await["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(steps, ["objection-window", "objected", "confirmed", "completing", "completed"]);
    m.w.close().await;
}

// R-COS-1: an objection that stands to the end of its period unpicks the switch.
#[tokio::test]
async fn electricity_objection_upheld_unpicks_the_switch() {
    let m = market().await;
    enrolled_home(&m).await;
    let nova = nova(&m).await;
    let (_, sw) = request(&m.w, &nova.token, json!({"mpxn": MPAN, "supply_start": "2026-01-14"})).await;
    let id = sw["id"].as_i64().unwrap();
    advance(&m.w, "2026-01-12T16:00:00Z").await;
    act(&m.w, &m.acme, id, "object").await;
    advance(&m.w, "2026-01-19T23:59:00Z").await;
    assert_eq!(stage(&m.w, &nova.token, id).await, "objected");
    advance(&m.w, "2026-01-20T00:00:00Z").await;
    let v = view(&m.w, &nova.token, id).await;
    assert_eq!(v["switch"]["stage"], json!("withdrawn"), "{v}");
    assert!(v["events"].as_array().unwrap().last().unwrap()["detail"].as_str().unwrap().contains("unpicked"));
    assert_eq!(supplier_at(&m.w, MPAN, "2026-02-01T00:00:00Z").await, "acme");
    let (s, _) = act(&m.w, &m.acme, id, "withdraw-objection").await;
    assert_eq!(s, StatusCode::CONFLICT);
    // A new request may follow.
    let (s, v) = request(&m.w, &nova.token, json!({"mpxn": MPAN, "supply_start": "2026-01-28"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    m.w.close().await;
}

// R-COS-1: working days skip GB bank holidays of the metering point's division, and windows
// close at London midnight (here in summer time). A metering point with no smart meter
// switches in the registry only.
#[tokio::test]
async fn windows_follow_the_bank_holidays_of_the_division() {
    let m = market().await;
    let nova = nova(&m).await;
    m.w.clock.advance_to(t("2026-04-02T09:00:00Z"));
    // Thursday before Easter. England and Wales: Good Friday and Easter Monday are holidays,
    // so 7-10 and 13 April. Scotland: Easter Monday is a working day: 6-10 April.
    let (s, v) = m.w.call(Method::POST, &format!("/v1/metering-points/{MPAN_SCOTLAND}/registrations"), &m.reg,
        Some(json!({"effective_from": "2025-01-01", "supplier": "acme", "network_operator": "dno-13", "meter_type": "smart-compliant"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    for (mpxn, deadline) in [(MPAN, "2026-04-13T23:00:00Z"), (MPAN_SCOTLAND, "2026-04-10T23:00:00Z")] {
        let (s, sw) = request(&m.w, &nova.token, json!({"mpxn": mpxn, "supply_start": "2026-04-20"})).await;
        assert_eq!(s, StatusCode::CREATED, "{sw}");
        assert_eq!(sw["deadline"], json!(deadline), "{mpxn}: {sw}");
    }
    // The window has closed though the scheduler has not run: the switch is irrevocable.
    m.w.clock.advance_to(t("2026-04-14T00:00:00Z"));
    let (_, list) = m.w.call(Method::GET, "/v1/switches", &nova.token, None).await;
    let id = list.as_array().unwrap().iter().find(|s| s["mpxn"] == json!(MPAN)).unwrap()["id"].as_i64().unwrap();
    let (s, v) = act(&m.w, &nova.token, id, "cancel").await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(stage(&m.w, &nova.token, id).await, "confirmed");
    advance(&m.w, "2026-04-20T01:00:00Z").await;
    let (_, list) = m.w.call(Method::GET, "/v1/switches", &nova.token, None).await;
    for sw in list.as_array().unwrap() {
        assert_eq!(sw["stage"], json!("completed"), "{sw}");
        assert_eq!(sw["switch_at"], json!("2026-04-19T23:00:00Z"), "London midnight in summer time");
        assert!(sw["credentials"].as_str().unwrap().starts_with("none: no smart metering system"), "{sw}");
    }
    m.w.close().await;
}

// R-COS-2, R-COS-7: a gas switch, confirmed late by the registration system (and confirmed
// twice), irrevocable from then, effective 7 days later, across a restart.
#[tokio::test]
async fn gas_switch_confirmed_late_then_effective_seven_days_later() {
    let mut m = market().await;
    let home = enrolled_home(&m).await;
    let nova = nova(&m).await;
    let gas: Eui64 = device_of(&home, "gas-meter").parse().unwrap();
    let (s, v) = request(&m.w, &nova.token, json!({"mpxn": MPRN, "supply_start": "2026-01-20"})).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("supply_start")), "{v}");
    let (s, sw) = request(&m.w, &nova.token, json!({"mpxn": MPRN})).await;
    assert_eq!(s, StatusCode::CREATED, "{sw}");
    assert_eq!((sw["process"].as_str(), sw["stage"].as_str()), (Some("gas-small"), Some("awaiting-confirmation")));
    let id = sw["id"].as_i64().unwrap();
    let (s, _) = act(&m.w, &nova.token, id, "confirm").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "the shipper does not confirm its own switch");
    let (s, _) = act(&m.w, &m.reg, id, "offer").await;
    assert_eq!(s, StatusCode::CONFLICT, "a small supply point is not offered");

    // The registration system is slow: ten days pass and nothing moves.
    advance(&m.w, "2026-01-15T10:00:00Z").await;
    assert_eq!(stage(&m.w, &nova.token, id).await, "awaiting-confirmation");
    let (s, v) = act(&m.w, &m.reg, id, "confirm").await;
    assert_eq!((s, v["changed"].as_bool()), (StatusCode::OK, Some(true)), "{v}");
    assert_eq!(v["switch"]["switch_at"], json!("2026-01-22T00:00:00Z"));
    // Its retry of the same answer changes nothing; the registry has one new version.
    let (s, v) = act(&m.w, &m.reg, id, "confirm").await;
    assert_eq!((s, v["changed"].as_bool()), (StatusCode::OK, Some(false)), "{v}");
    let (_, history) = m.w.call(Method::GET, &format!("/v1/metering-points/{MPRN}/history"), &m.reg, None).await;
    let versions = history["registrations"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{history}");
    assert_eq!(
        (versions[1]["supplier"].as_str(), versions[1]["shipper"].as_str(), versions[1]["recorded_by"].as_str()),
        (Some("nova"), Some("nova"), Some("reg"))
    );
    let (s, _) = act(&m.w, &nova.token, id, "cancel").await;
    assert_eq!(s, StatusCode::CONFLICT, "irrevocable after 1.20");

    let clock = m.w.clock.clone();
    m.w.close().await;
    m.w = open_world(m._dir.path(), clock).await;
    advance(&m.w, "2026-01-21T23:00:00Z").await;
    assert_eq!(stage(&m.w, &nova.token, id).await, "confirmed");
    advance(&m.w, "2026-01-22T06:00:00Z").await;
    let v = view(&m.w, &m.acme, id).await;
    assert_eq!(v["switch"]["stage"], json!("completed"), "{v}");
    assert!(v["switch"]["definitive_reading"]["volume_litres"].as_u64().unwrap() > 0, "{v}");
    // Only the gas meter follows the gas supplier; the rest stay with the electricity one.
    let system = m.w.fleet.system(gas).await.unwrap();
    for d in &system.devices {
        let want = if d.eui == gas { NOVA } else { ACME };
        assert_eq!(d.supplier.as_ref().unwrap().originator, want, "{:?}", d.kind);
    }
    m.w.close().await;
}

// R-COS-2: a large supply point is nominated, offered and accepted before confirmation; a
// request may be cancelled until it is confirmed.
#[tokio::test]
async fn large_gas_supply_point_is_offered_before_confirmation() {
    let m = market().await;
    let nova = nova(&m).await;
    let (s, v) = m.w.call(Method::POST, &format!("/v1/metering-points/{MPRN_LARGE}/registrations"), &m.reg,
        Some(json!({"effective_from": "2025-01-01", "supplier": "acme", "shipper": "acme", "network_operator": "cadent",
                    "meter_type": "smart-compliant", "annual_quantity_kwh": 100000}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (_, sw) = request(&m.w, &nova.token, json!({"mpxn": MPRN_LARGE})).await;
    assert_eq!((sw["process"].as_str(), sw["stage"].as_str()), (Some("gas-large"), Some("nominated")), "{sw}");
    let id = sw["id"].as_i64().unwrap();
    for (token, action, status, stage_after) in [
        (&m.reg, "confirm", StatusCode::CONFLICT, "nominated"),
        (&nova.token, "accept-offer", StatusCode::CONFLICT, "nominated"),
        (&m.reg, "offer", StatusCode::OK, "offered"),
        (&m.reg, "offer", StatusCode::OK, "offered"),
        (&nova.token, "accept-offer", StatusCode::OK, "awaiting-confirmation"),
        (&nova.token, "cancel", StatusCode::OK, "withdrawn"),
        (&m.reg, "confirm", StatusCode::CONFLICT, "withdrawn"),
    ] {
        let (s, v) = act(&m.w, token, id, action).await;
        assert_eq!(s, status, "{action}: {v}");
        assert_eq!(stage(&m.w, &nova.token, id).await, stage_after, "after {action}");
    }
    assert_eq!(supplier_at(&m.w, MPRN_LARGE, "2026-03-01T00:00:00Z").await, "acme");
    // Another party learns nothing of the switch.
    let (s, _) = m.w.call(Method::GET, &format!("/v1/switches/{id}"), &m.dno, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let stranger = m.w.party("zed", &["GS"], 11, None).await;
    let (s, _) = m.w.call(Method::GET, &format!("/v1/switches/{id}"), &stranger, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    m.w.close().await;
}

// R-COT-1, R-COT-4: a change of tenancy ends every ESCO's consent at its date and tells
// each; the meter then keeps the new tenant's side from earlier data, unless the outgoing
// tenant agreed to share it (recorded with the tenancy).
#[tokio::test]
async fn change_of_tenancy_revokes_escos_and_restricts_history() {
    let m = market().await;
    let home = enrolled_home(&m).await;
    let esco = m.w.party("esco", &["OU"], 12, None).await;
    let (s, v) = m.w.call(Method::POST, &format!("/v1/metering-points/{MPAN}/consents"), &esco, Some(json!({}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    advance(&m.w, "2026-01-10T10:00:00Z").await;
    let path = format!("/v1/metering-points/{MPAN}/change-of-tenancy");
    for (token, body, status, field) in [
        (&esco, json!({"tenancy_from": "2026-01-12"}), StatusCode::FORBIDDEN, None),
        (&m.acme, json!({"tenancy_from": "2026-01-01"}), StatusCode::BAD_REQUEST, Some("tenancy_from")),
        (
            &m.acme,
            json!({"tenancy_from": "2026-01-12", "share_history": true}),
            StatusCode::BAD_REQUEST,
            Some("consent_note"),
        ),
        (
            &m.acme,
            json!({"tenancy_from": "2026-01-12", "consent_note": "x"}),
            StatusCode::BAD_REQUEST,
            Some("consent_note"),
        ),
    ] {
        let (s, v) = m.w.call(Method::POST, &path, token, Some(body.clone())).await;
        assert_eq!((s, v["field"].as_str()), (status, field), "{body}: {v}");
    }
    let (s, v) = m.w.call(Method::POST, &path, &m.acme, Some(json!({"tenancy_from": "2026-01-12"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["consents_ended_for"], json!(["esco"]), "{v}");
    // A consent recorded after the notification still ends at the tenancy date.
    let late = m.w.party("esco-late", &["OU"], 13, None).await;
    let (s, v) = m.w.call(Method::POST, &format!("/v1/metering-points/{MPAN}/consents"), &late, Some(json!({}))).await;
    assert_eq!((s, v["to"].as_str()), (StatusCode::CREATED, Some("2026-01-12T00:00:00Z")), "{v}");
    let told = notices(&m.w, &esco).await;
    assert_eq!(told[0]["code"], json!("change-of-tenancy"), "{told:?}");
    // The ESCO reads until the date, not after.
    let r = m.w.run(&esco, "4.17", json!({"mpxn": MPAN}), json!({}), None).await;
    assert_eq!(r["response"]["outcome"], json!("done"), "{r}");
    advance(&m.w, "2026-01-12T10:00:00Z").await;
    let (s, _) = m.w.submit(&esco, "4.17", json!({"mpxn": MPAN}), json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // 3.2 ran at the date: the meter restricts the new tenant's side.
    let meter: Eui64 = device_of(&home, "electricity-meter").parse().unwrap();
    let system = m.w.fleet.system(meter).await.unwrap();
    let tenancy = system.meter(meter).unwrap().tenancy.unwrap();
    assert_eq!((tenancy.from, tenancy.history_shared), (t("2026-01-12T00:00:00Z"), false));
    let other_user = Access { requester: Requester::OtherUser, from: None, to: None };
    let o = direct(&m.w, Eui64::from_u64(0x90B3_D51F_3001_000C), meter, "4.8.1", &m.acme_key, other_user).await;
    let Outcome::Done(body) = o else { panic!("{o:?}") };
    assert_eq!(body["from"], json!("2026-01-12T00:00:00Z"), "the meter's own rule: {body}");
    // The new tenant's display shows nothing from before the tenancy.
    advance(&m.w, "2026-01-14T10:00:00Z").await;
    let ihd: Eui64 = device_of(&home, "in-home-display").parse().unwrap();
    let shown = m.w.fleet.ihd_view(ihd).await.unwrap();
    let elec = shown["meters"].as_array().unwrap().iter().find(|x| x["fuel"] == json!("electricity")).unwrap().clone();
    let days: Vec<&str> = elec["days"].as_array().unwrap().iter().map(|d| d[0].as_str().unwrap()).collect();
    assert_eq!(days, ["2026-01-12", "2026-01-13"], "{shown}");

    // At the gas point the outgoing tenant agreed to share: recorded, and nothing restricted.
    let (s, v) = m.w.call(Method::POST, &format!("/v1/metering-points/{MPRN}/change-of-tenancy"), &m.acme,
        Some(json!({"tenancy_from": "2026-01-14T12:00:00Z", "share_history": true, "consent_note": "signed form 4411, 13 Jan"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    advance(&m.w, "2026-01-15T10:00:00Z").await;
    let shown = m.w.fleet.ihd_view(ihd).await.unwrap();
    let gas = shown["meters"].as_array().unwrap().iter().find(|x| x["fuel"] == json!("gas")).unwrap().clone();
    assert_eq!(gas["days"].as_array().unwrap().len(), 7, "shared history: {gas}");
    let (_, list) = m.w.call(Method::GET, &format!("/v1/metering-points/{MPRN}/tenancies"), &m.acme, None).await;
    assert_eq!(
        (list[0]["history_shared"].as_bool(), list[0]["consent_note"].as_str()),
        (Some(true), Some("signed form 4411, 13 Jan"))
    );
    let (s, _) = m.w.call(Method::GET, &format!("/v1/metering-points/{MPRN}/tenancies"), &esco, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    m.w.close().await;
}

// R-COS-5, R-COS-7: the meter is unreachable at the switch instant (a WAN outage): 6.23 is
// tried again with backoff until it gets through, and the definitive reading is still the
// one at the instant.
#[tokio::test]
async fn switch_credentials_reach_a_meter_cut_off_at_the_instant() {
    let m = market().await;
    let home = enrolled_home(&m).await;
    let nova = nova(&m).await;
    let meter: Eui64 = device_of(&home, "electricity-meter").parse().unwrap();
    let (s, sw) = request(&m.w, &nova.token, json!({"mpxn": MPAN, "supply_start": "2026-01-14"})).await;
    assert_eq!(s, StatusCode::CREATED, "{sw}");
    let id = sw["id"].as_i64().unwrap();
    m.w.fleet.cut_off(meter, t("2026-01-14T05:00:00Z")).await.unwrap();
    advance(&m.w, "2026-01-14T00:30:00Z").await;
    let v = view(&m.w, &nova.token, id).await;
    assert_eq!(v["switch"]["stage"], json!("completing"), "{v}");
    let retries: Vec<&Value> =
        v["events"].as_array().unwrap().iter().filter(|e| e["event"] == json!("credentials-retry")).collect();
    assert!(!retries.is_empty() && retries[0]["detail"].as_str().unwrap().contains("reachable"), "{v}");
    // The old supplier is still the meter's until 6.23 arrives.
    let system = m.w.fleet.system(meter).await.unwrap();
    assert_eq!(system.device(meter).unwrap().supplier.as_ref().unwrap().originator, ACME);

    advance(&m.w, "2026-01-14T06:00:00Z").await;
    let v = view(&m.w, &nova.token, id).await;
    assert_eq!((&v["switch"]["stage"], &v["switch"]["credentials"]), (&json!("completed"), &json!("replaced")), "{v}");
    let system = m.w.fleet.system(meter).await.unwrap();
    assert_eq!(system.device(meter).unwrap().supplier.as_ref().unwrap().originator, NOVA);
    let registers = system.consumption(system.meter(meter).unwrap()).registers_at(t("2026-01-14T00:00:00Z"));
    assert_eq!(v["switch"]["definitive_reading"]["at"], json!("2026-01-14T00:00:00Z"), "{v}");
    assert_eq!(v["switch"]["definitive_reading"]["import_wh"], json!(registers.import_wh), "{v}");
    m.w.close().await;
}

async fn tenancies(w: &World, token: &str, mpxn: &str) -> Vec<Value> {
    let (s, v) = w.call(Method::GET, &format!("/v1/metering-points/{mpxn}/tenancies"), token, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v.as_array().unwrap().clone()
}

// R-COT-4: SRV 3.2 reaches a meter that is unreachable at the tenancy date by trying again
// with backoff; a meter unreachable for weeks is given up after a bounded number of tries,
// and the supplier is told.
#[tokio::test]
async fn tenancy_restriction_is_retried_until_the_meter_has_it() {
    let m = market().await;
    let home = enrolled_home(&m).await;
    let meter: Eui64 = device_of(&home, "electricity-meter").parse().unwrap();
    let gas: Eui64 = device_of(&home, "gas-meter").parse().unwrap();
    advance(&m.w, "2026-01-10T10:00:00Z").await;
    let path = format!("/v1/metering-points/{MPAN}/change-of-tenancy");
    let (s, v) = m.w.call(Method::POST, &path, &m.acme, Some(json!({"tenancy_from": "2026-01-12"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["tenancy"]["restriction"][0]["state"], json!("pending"), "{v}");
    m.w.fleet.cut_off(meter, t("2026-01-12T03:00:00Z")).await.unwrap();

    advance(&m.w, "2026-01-12T00:10:00Z").await;
    let r = tenancies(&m.w, &m.acme, MPAN).await[0]["restriction"][0].clone();
    assert_eq!((r["state"].as_str(), r["attempts"].as_u64()), (Some("pending"), Some(2)), "{r}");
    assert!(r["detail"].as_str().unwrap().contains("reachable"), "{r}");
    assert_eq!(m.w.fleet.system(meter).await.unwrap().meter(meter).unwrap().tenancy, None);

    advance(&m.w, "2026-01-12T04:00:00Z").await;
    let r = tenancies(&m.w, &m.acme, MPAN).await[0]["restriction"][0].clone();
    assert_eq!(r["state"], json!("delivered"), "{r}");
    let tenancy = m.w.fleet.system(meter).await.unwrap().meter(meter).unwrap().tenancy.unwrap();
    assert_eq!(tenancy.from, t("2026-01-12T00:00:00Z"));
    let (_, status) =
        m.w.call(Method::GET, &format!("/v1/requests/{}", r["request_id"].as_str().unwrap()), &m.acme, None).await;
    assert_eq!(status["response"]["outcome"], json!("done"), "{status}");

    // The gas meter is cut off for two months: given up after 16 tries, five and a half days.
    let path = format!("/v1/metering-points/{MPRN}/change-of-tenancy");
    let (s, v) = m.w.call(Method::POST, &path, &m.acme, Some(json!({"tenancy_from": "2026-01-13"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    m.w.fleet.cut_off(gas, t("2026-03-13T00:00:00Z")).await.unwrap();
    let mut day = t("2026-01-13T00:00:00Z");
    for _ in 0..20 {
        day += jiff::SignedDuration::from_hours(24);
        m.w.clock.advance_to(day);
        tick(&m.w).await;
    }
    let r = tenancies(&m.w, &m.acme, MPRN).await[0]["restriction"][0].clone();
    assert_eq!((r["state"].as_str(), r["attempts"].as_u64()), (Some("failed"), Some(16)), "{r}");
    let told = notices(&m.w, &m.acme).await;
    let failed = told.iter().find(|n| n["code"] == json!("delivery-failed")).expect("the supplier is told");
    assert_eq!(failed["data"]["srv"], json!("3.2"), "{failed}");
    assert_eq!(m.w.fleet.system(gas).await.unwrap().meter(gas).unwrap().tenancy, None);

    // A 3.2 its supplier cancels is settled, never sent again.
    let path = format!("/v1/metering-points/{MPAN}/change-of-tenancy");
    let from = (m.w.hub.now() + jiff::SignedDuration::from_hours(48)).to_string();
    let (s, v) = m.w.call(Method::POST, &path, &m.acme, Some(json!({"tenancy_from": from}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["restriction"].as_str().unwrap().to_string();
    let (s, v) = m.w.call(Method::POST, &format!("/v1/requests/{id}/cancel"), &m.acme, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    m.w.clock.advance_to(m.w.hub.now() + jiff::SignedDuration::from_hours(72));
    tick(&m.w).await;
    let list = tenancies(&m.w, &m.acme, MPAN).await;
    let r = list.last().unwrap()["restriction"][0].clone();
    assert_eq!((r["state"].as_str(), r["attempts"].as_u64()), (Some("failed"), Some(1)), "{r}");
    assert!(r["detail"].as_str().unwrap().contains("cancelled"), "{r}");
    m.w.close().await;
}
