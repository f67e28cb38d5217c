//! Prepayment top-ups through the HTTP API with the in-process fleet: a payment service
//! provider's top-up finds the supplier from the customer identifier alone (R-PAY-1), is
//! checked against the supplier's rules (R-PAY-2), gets a GBCS UTRN with the next counter
//! for (supplier, meter) (R-PAY-3) and is credited by the meter exactly once, whether sent
//! again, typed on the keypad or delivered twice after a crash (R-PAY-4).

mod common;

use axum::http::{Method, StatusCode};
use common::*;
use domain::customer::CustomerId;
use domain::{Eui64, IdRules, Mpxn};
use hub::transport::{DeviceMessage, DeviceTransport};
use serde_json::{Value, json};

const MPRN: &str = "3938424403";

fn customer(mpxn: &str) -> String {
    CustomerId::for_mpxn(Mpxn::parse_with(mpxn, IdRules::STRICT).unwrap()).to_string()
}

/// acme's electricity point goes over to prepayment today; a payment provider joins.
async fn prepayment_market() -> (Market, String, Value) {
    let m = market().await;
    let home = enrolled_home(&m).await;
    let body = json!({"effective_from": START, "supplier": "acme", "network_operator": "dno-13",
        "meter_type": "smart-compliant", "payment_mode": "prepayment"});
    let (s, v) = m.w.call(Method::POST, &format!("/v1/metering-points/{MPAN}/registrations"), &m.reg, Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let psp = m.w.party("paypoint", &["PSP"], 11, None).await;
    (m, psp, home)
}

async fn top_up(m: &Market, psp: &str, id: &str, pence: i64, reference: &str) -> (StatusCode, Value) {
    let body = json!({"customer_id": id, "amount_pence": pence, "payment_reference": reference});
    m.w.call(Method::POST, "/v1/top-ups", psp, Some(body)).await
}

async fn meter_balance(m: &Market, meter: Eui64) -> i64 {
    let system = m.w.fleet.system(meter).await.unwrap();
    system.meter(meter).unwrap().prepay.balance_pence()
}

#[tokio::test]
async fn a_top_up_reaches_the_meter_once_with_a_gbcs_utrn() {
    let (m, psp, home) = prepayment_market().await;
    let meter = Eui64::parse(device_of(&home, "electricity-meter")).unwrap();
    let id = customer(MPAN);

    // R-PAY-1: from the identifier alone, the metering point and its supplier.
    let (s, v) = m.w.call(Method::GET, &format!("/v1/customers/{}", id.replace(' ', "")), &psp, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["mpxn"].as_str(), v["supplier"].as_str(), v["payment_mode"].as_str()),
        (Some(MPAN), Some("acme"), Some("prepayment"))
    );

    let (s, t) = top_up(&m, &psp, &id, 1500, "PP-0001").await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let utrn = t["utrn"].as_str().unwrap().to_string();
    assert_eq!(utrn.len(), 20);
    assert_eq!(
        (t["supplier"].as_str(), t["counter"].as_str(), t["delivery"].as_str()),
        (Some("acme"), Some("0x100000000"), Some("queued"))
    );
    m.w.hub.dispatch_due().await.unwrap();
    let (_, t) = m.w.call(Method::GET, "/v1/top-ups/PP-0001", &psp, None).await;
    assert_eq!(t["delivery"], json!("completed"), "{t}");
    assert_eq!(t["meter_response"]["outcome"], json!("done"), "{t}");
    assert_eq!(t["meter_response"]["body"]["credited_pence"], json!(1500), "{t}");
    assert_eq!(meter_balance(&m, meter).await, 1500);

    // The same payment reference again: the same top-up, no second credit.
    let (s, again) = top_up(&m, &psp, &id, 1500, "PP-0001").await;
    assert_eq!((s, again["utrn"].as_str()), (StatusCode::OK, Some(utrn.as_str())), "{again}");
    m.w.hub.dispatch_due().await.unwrap();
    assert_eq!(meter_balance(&m, meter).await, 1500);
    let (s, v) = top_up(&m, &psp, &id, 2000, "PP-0001").await;
    assert_eq!(s, StatusCode::CONFLICT, "another amount under a used reference: {v}");

    // Typed on the keypad as well: refused as a duplicate (0x8F51), nothing credited.
    let keypad = format!("/v1/simulation/devices/{meter}/keypad");
    let (s, typed) =
        m.w.call(Method::POST, &keypad, &m.w.operator, Some(json!({"action": "utrn", "utrn": utrn}))).await;
    assert_eq!(s, StatusCode::OK, "{typed}");
    assert_eq!(typed["body"]["code"], json!("utrn-rejected"), "{typed}");
    assert!(typed["body"]["reason"].as_str().unwrap().contains("0x8F51"), "{typed}");
    assert_eq!(meter_balance(&m, meter).await, 1500);
    // The simulation's window into homes is the hub operator's only.
    let (s, _) = m.w.call(Method::POST, &keypad, &m.acme, Some(json!({"action": "utrn", "utrn": utrn}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, shown) =
        m.w.call(Method::GET, &format!("/v1/simulation/devices/{meter}/display"), &m.w.operator, None).await;
    assert_eq!((s, shown["meters"][0]["balance_pence"].as_i64()), (StatusCode::OK, Some(1500)), "{shown}");

    // Pounds above £81.91; counters go up per (supplier, meter).
    let (s, t) = top_up(&m, &psp, &id, 10_000, "PP-0002").await;
    assert_eq!((s, t["counter"].as_str()), (StatusCode::CREATED, Some("0x200000000")), "{t}");
    m.w.hub.dispatch_due().await.unwrap();
    let (_, t) = m.w.call(Method::GET, "/v1/top-ups/PP-0002", &psp, None).await;
    assert_eq!(t["meter_response"]["body"]["class"], json!("pounds"), "{t}");
    assert_eq!(meter_balance(&m, meter).await, 11_500);

    // Refusals, each naming its field or reason; none credits anything.
    for (id, pence, reference, status, field) in [
        (id.as_str(), 10_050, "R1", StatusCode::BAD_REQUEST, Some("amount_pence")),
        (id.as_str(), 30_000, "R2", StatusCode::BAD_REQUEST, Some("amount_pence")),
        (id.as_str(), 0, "R3", StatusCode::BAD_REQUEST, Some("amount_pence")),
        (id.as_str(), 100, "", StatusCode::BAD_REQUEST, Some("payment_reference")),
        ("9811312345678906", 100, "R4", StatusCode::BAD_REQUEST, Some("customer_id")),
        ("1234", 100, "R5", StatusCode::BAD_REQUEST, Some("customer_id")),
    ] {
        let (s, v) = top_up(&m, &psp, id, pence, reference).await;
        assert_eq!((s, v["field"].as_str()), (status, field), "{id} {pence} {reference:?}: {v}");
    }
    // The gas point is in credit mode: the supplier's rules refuse it.
    let (s, v) = top_up(&m, &psp, &customer(MPRN), 500, "R6").await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("not in prepayment mode"), "{v}");
    // Only payment service providers take payments.
    let (s, _) = top_up(&m, &m.acme, &id, 500, "R7").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = m.w.call(Method::GET, "/v1/top-ups/PP-0001", &m.acme, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(meter_balance(&m, meter).await, 11_500);

    // A supplier may send SRV 2.2 with a UTRN itself: a made-up one is refused by the meter.
    let forged = {
        // A well-formed UTRN (right check digit) that no key made.
        let pptd = "7394156990786306048".parse::<u64>().unwrap() + (1u64 << 47) + 500u64.wrapping_shl(32) + 12345;
        let pptd = format!("{pptd:019}");
        let check = domain::utrn::check_digit(&pptd).unwrap();
        format!("{pptd}{check}")
    };
    let r = m.w.run(&m.acme, "2.2", json!({"mpxn": MPAN}), json!({"utrn": forged}), None).await;
    assert_eq!(r["response"]["outcome"], json!("device-refused"), "{r}");
    assert!(r["response"]["body"]["reason"].as_str().unwrap().contains("0x8F63"), "{r}");
    let (s, v) = m.w.submit(&m.acme, "2.2", json!({"mpxn": MPAN}), json!({"utrn": "12345"})).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("body.utrn")), "{v}");
    assert_eq!(meter_balance(&m, meter).await, 11_500);
    // The supplier is alerted to each refused UTRN, in order: the duplicate typed on the
    // keypad (0x8F51), then the forgery (0x8F63).
    let (_, alerts) = m.w.call(Method::GET, "/v1/alerts", &m.acme, None).await;
    let refused: Vec<&str> = alerts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["code"].as_str().unwrap())
        .filter(|c| *c == "0x8F51" || *c == "0x8F63")
        .collect();
    assert_eq!(refused, ["0x8F51", "0x8F63"], "{alerts}");
    m.w.close().await;
}

// R-PAY-3/4: a crash between issuing the UTRN and the meter's credit loses nothing (the top-up
// and its request were stored together and run after the restart) and doubles nothing (the
// same command delivered again gets the first answer; the UTRN typed again is a duplicate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_utrn_issue_and_meter_credit_loses_and_doubles_nothing() {
    let (mut m, psp, home) = prepayment_market().await;
    let meter = Eui64::parse(device_of(&home, "electricity-meter")).unwrap();
    let (s, t) = top_up(&m, &psp, &customer(MPAN), 2500, "CRASH-1").await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    // The hub stops before the dispatcher runs.
    let clock = m.w.clock.clone();
    m.w.close().await;
    m.w = open_world(m._dir.path(), clock).await;
    let tokens_survive = m.w.call(Method::GET, "/v1/top-ups/CRASH-1", &psp, None).await;
    assert_eq!(tokens_survive.1["delivery"], json!("queued"), "{}", tokens_survive.1);
    assert_eq!(m.w.hub.dispatch_due().await.unwrap(), 1);
    assert_eq!(meter_balance(&m, meter).await, 2500);

    // The device's answer is recorded; deliver the very same command again, as a hub that
    // crashed before recording it would.
    let (_, done) =
        m.w.call(Method::GET, &format!("/v1/requests/{}", t["request_id"].as_str().unwrap()), &m.acme, None).await;
    let precommand = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(done["precommand_base64"].as_str().unwrap()).unwrap()
    };
    let access = device::Access { requester: device::Requester::Supplier, from: None, to: None };
    let again =
        m.w.fleet
            .send(DeviceMessage { target: meter, bytes: precommand, signature: None, access, image: None })
            .await
            .unwrap();
    assert_eq!(serde_json::to_value(&again).unwrap()["body"], done["response"]["body"], "the first answer, again");
    assert_eq!(meter_balance(&m, meter).await, 2500);
    m.w.close().await;
}

/// A supplier's confirmation endpoint: a real HTTP server on this machine, answering as
/// told (accept, refuse with a reason, or too slowly).
async fn supplier_endpoint() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use axum::routing::post;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/confirm",
        post(move |axum::Json(q): axum::Json<Value>| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(q.clone());
                let amount = q["amount_pence"].as_u64().unwrap_or(0);
                if amount == 666 {
                    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                }
                if amount == 1313 {
                    return axum::Json(json!({"accepted": false, "reason": "account closed"}));
                }
                axum::Json(json!({"accepted": true}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/confirm"), seen)
}

// R-PAY-2: a supplier with an endpoint decides each top-up over HTTP; a refusal names the
// supplier's reason; no answer within the timeout refuses the top-up and credits nothing
// (the same reference can be tried again later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supplier_confirms_top_ups_over_http_and_a_timeout_credits_nothing() {
    let (m, psp, home) = prepayment_market().await;
    let meter = Eui64::parse(device_of(&home, "electricity-meter")).unwrap();
    let (url, seen) = supplier_endpoint().await;
    let id = customer(MPAN);

    // Only suppliers register one, over plain http, with a sane timeout.
    for (body, field) in [
        (json!({"url": "https://acme.example/confirm"}), "url"),
        (json!({"url": "not a url"}), "url"),
        (json!({"url": url, "timeout_ms": 50}), "timeout_ms"),
    ] {
        let (s, v) = m.w.call(Method::PUT, "/v1/payment-endpoint", &m.acme, Some(body.clone())).await;
        assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{body}: {v}");
    }
    let (s, _) = m.w.call(Method::PUT, "/v1/payment-endpoint", &psp, Some(json!({"url": url}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) =
        m.w.call(Method::PUT, "/v1/payment-endpoint", &m.acme, Some(json!({"url": url, "timeout_ms": 500}))).await;
    assert_eq!((s, v["timeout_ms"].as_u64()), (StatusCode::OK, Some(500)), "{v}");

    let (s, t) = top_up(&m, &psp, &id, 700, "HTTP-1").await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let asked = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        (asked["mpxn"].as_str(), asked["amount_pence"].as_u64(), asked["payment_service_provider"].as_str()),
        (Some(MPAN), Some(700), Some("paypoint"))
    );

    let (s, v) = top_up(&m, &psp, &id, 1313, "HTTP-2").await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("account closed"), "{v}");

    let (s, v) = top_up(&m, &psp, &id, 666, "HTTP-3").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("no answer within 500 ms"), "{v}");
    let (s, _) = m.w.call(Method::GET, "/v1/top-ups/HTTP-3", &psp, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing was stored");

    m.w.hub.dispatch_due().await.unwrap();
    assert_eq!(meter_balance(&m, meter).await, 700, "only the confirmed top-up is credited");
    // With the endpoint removed, the hub's stored rules decide again.
    let (s, _) = m.w.call(Method::DELETE, "/v1/payment-endpoint", &m.acme, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = top_up(&m, &psp, &id, 1313, "HTTP-4").await;
    assert_eq!(s, StatusCode::CREATED);
    m.w.close().await;
}

// Until change of supplier replaces the meter's credentials, a UTRN made with the new
// supplier's key could not be credited: the hub refuses to take such a payment.
#[tokio::test]
async fn a_top_up_for_a_meter_that_trusts_another_supplier_is_refused() {
    let (m, psp, _home) = prepayment_market().await;
    let (s, before) = top_up(&m, &psp, &customer(MPAN), 700, "BEFORE-COS").await;
    assert_eq!(s, StatusCode::CREATED, "{before}");
    let body = json!({"effective_from": "2026-01-05T10:00:00Z", "supplier": "bright", "network_operator": "dno-13",
        "meter_type": "smart-compliant", "payment_mode": "prepayment"});
    let (s, v) = m.w.call(Method::POST, &format!("/v1/metering-points/{MPAN}/registrations"), &m.reg, Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = m.w.call(Method::POST, "/v1/clock/advance", &m.w.operator, Some(json!({"by": "PT2H"}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = top_up(&m, &psp, &customer(MPAN), 500, "COS-1").await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("trusts acme"), "{v}");
    // A payment taken before the switch is still answered the same afterwards.
    let (s, again) = top_up(&m, &psp, &customer(MPAN), 700, "BEFORE-COS").await;
    assert_eq!((s, again["utrn"].clone()), (StatusCode::OK, before["utrn"].clone()), "{again}");
    m.w.close().await;
}
