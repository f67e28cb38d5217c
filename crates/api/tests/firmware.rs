//! Firmware through the HTTP API (R-FLT-3, R-FLT-4): a manufacturer's signed image, checked by
//! the hub and again by each device; campaigns in waves that halt on failures; activation by
//! the supplier's signed SRV 11.3, now or future-dated, keeping the running image on failure.

mod common;

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use common::*;
use device::{Access, Command, Outcome, RefusalCode, RequestId, Requester};
use domain::Eui64;
use domain::crypto::{SigningKey, SystemRandom};
use hub::transport::{DeviceMessage, DeviceTransport};
use serde_json::{Value, json};

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Image {
    manifest: Value,
    signature: Vec<u8>,
    bytes: Vec<u8>,
    hash: String,
}

fn image(key: &SigningKey, version: &str, urgency: &str, layer: &str, supplier: Option<&str>) -> Image {
    let bytes: Vec<u8> = (0..4096u32).map(|i| (i * 7 + version.len() as u32) as u8).chain(version.bytes()).collect();
    let hash = hex(&domain::crypto::sha256(&bytes));
    let manifest = json!({"image_hash": hash, "layer": layer, "version": version, "device_kind": "electricity-meter",
                          "supplier": supplier, "urgency": urgency});
    let m: device::firmware::Manifest = serde_json::from_value(manifest.clone()).unwrap();
    let signature = key.sign(&SystemRandom::new(), &m.signed_bytes()).unwrap();
    Image { manifest, signature, bytes, hash }
}

async fn upload(m: &Market, token: &str, i: &Image) -> (StatusCode, Value) {
    let body = json!({"manifest": i.manifest, "signature_base64": b64(&i.signature), "image_base64": b64(&i.bytes)});
    m.w.call(Method::POST, "/v1/firmware", token, Some(body)).await
}

/// A home for acme whose devices trust the manufacturer `mfr`, commissioned and enrolled at
/// a fresh MPAN in distributor 13's area.
async fn home(m: &Market, n: u64) -> (Value, Eui64) {
    let mpan = meterhub_mpan(n);
    let body = json!({"effective_from": "2025-01-01", "supplier": "acme", "network_operator": "dno-13", "meter_type": "smart-compliant"});
    let (s, v) = m.w.call(Method::POST, &format!("/v1/metering-points/{mpan}/registrations"), &m.reg, Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, p) = m
        .w
        .call(Method::POST, "/v1/premises", &m.acme, Some(json!({"electricity": "domestic", "manufacturer": "mfr"})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    for d in p["devices"].as_array().unwrap() {
        let r = m.w.run(&m.acme, "8.1.1", json!({"device": d["eui"]}), json!({}), Some(&m.acme_key)).await;
        assert_eq!(r["response"]["outcome"], json!("done"), "{r}");
    }
    let meter = device_of(&p, "electricity-meter").to_string();
    let r = m.w.run(&m.acme, "6.20.1", json!({"device": meter}), json!({"mpxn": mpan}), None).await;
    assert_eq!(r["response"]["outcome"], json!("done"), "{r}");
    (p, meter.parse().unwrap())
}

/// A valid MPAN in distributor 13's area, one per n.
fn meterhub_mpan(n: u64) -> String {
    let core = format!("13{:010}", 7_000_000_000 + n);
    let weights = [3, 5, 7, 13, 17, 19, 23, 29, 31, 37, 41, 43];
    let sum: u32 = core.bytes().zip(weights).map(|(b, w)| u32::from(b - b'0') * w).sum();
    format!("{core}{}", sum % 11 % 10)
}

/// Let the clock's work happen: campaigns move, requests run, devices wake.
async fn tick(w: &World) {
    loop {
        let waved = w.hub.run_campaigns_due().await.unwrap();
        let ran = w.hub.dispatch_due().await.unwrap();
        let woken = w.fleet.wake_due(100).await.unwrap();
        if waved + ran + woken == 0 {
            return;
        }
    }
}

async fn campaign(m: &Market, body: Value) -> Value {
    let (s, c) = m.w.call(Method::POST, "/v1/firmware/campaigns", &m.acme, Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    tick(&m.w).await;
    let (s, v) = m.w.call(Method::GET, &format!("/v1/firmware/campaigns/{}", c["id"]), &m.acme, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

async fn running(m: &Market, meter: Eui64) -> Value {
    let r = m.w.run(&m.acme, "11.2", json!({"device": meter.to_string()}), json!({}), None).await;
    r["response"]["body"].clone()
}

async fn alert_codes(m: &Market, token: &str) -> Vec<String> {
    let (_, v) = m.w.call(Method::GET, "/v1/alerts?limit=1000", token, None).await;
    v.as_array().unwrap().iter().map(|a| a["code"].as_str().unwrap().to_string()).collect()
}

// R-FLT-3, R-FLT-4: the manufacturer's signed image is checked by the hub on upload and by
// each device on receipt; the supplier's campaign distributes it and its signed 11.3
// activates it (now, or at a future instant); an activation without a held image, or a
// damaged download, keeps the running image.
#[tokio::test]
async fn firmware_is_verified_by_the_device_and_activated_by_the_supplier() {
    let m = market().await;
    let mfr_key = SigningKey::generate(&SystemRandom::new()).unwrap();
    let mfr = m.w.party("mfr", &["MFR"], 20, Some(&mfr_key)).await;
    let (_, first) = home(&m, 1).await;
    let (_, second) = home(&m, 2).await;
    let (_, third) = home(&m, 3).await;
    let v2 = image(&mfr_key, "2.0.0", "routine", "core", None);

    // The hub refuses junk, naming the field.
    let stranger = SigningKey::generate(&SystemRandom::new()).unwrap();
    let forged = image(&stranger, "2.0.0", "routine", "core", None);
    let mut damaged = image(&mfr_key, "2.0.0", "routine", "core", None);
    damaged.bytes[10] ^= 1;
    let mut long = image(&mfr_key, "2.0.0", "routine", "core", None);
    long.manifest["version"] = json!("2.0.0-rc.1");
    for (i, field) in [(&forged, "signature_base64"), (&damaged, "image_base64"), (&long, "manifest.version")] {
        let (s, v) = upload(&m, &mfr, i).await;
        assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{v}");
    }
    let (s, _) = upload(&m, &m.acme, &v2).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "suppliers do not upload firmware");
    let (s, v) = upload(&m, &mfr, &v2).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = upload(&m, &mfr, &v2).await;
    assert_eq!(s, StatusCode::CONFLICT);
    // 11.1 goes only through a campaign, which attaches the image.
    let (s, v) =
        m.w.submit(&m.acme, "11.1", json!({"device": first.to_string()}), json!({"image_hash": v2.hash})).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("srv")), "{v}");

    // A forged image sent straight to a device, bypassing the hub: the device refuses it.
    let body = json!({"manifest": forged.manifest, "signature": b64(&forged.signature)});
    let bytes = Command {
        id: RequestId { originator: Eui64::from_u64(0x90B3_D51F_3001_0001), target: first, counter: 900_000 },
        srv: "11.1".into(),
        execute_at: None,
        body: serde_json::to_vec(&body).unwrap(),
    }
    .encode();
    let access = Access { requester: Requester::Supplier, from: None, to: None };
    let o = m
        .w
        .fleet
        .send(DeviceMessage { target: first, bytes, signature: None, access, image: Some(forged.bytes.clone().into()) })
        .await
        .unwrap();
    assert!(matches!(o, Outcome::Refused { code: RefusalCode::SignatureInvalid, .. }), "{o:?}");
    assert_eq!(alert_codes(&m, &m.acme).await, ["0x8F1C"]);

    // The campaign: both meters verify and hold the image (0x8F72); one was damaged on the way.
    m.w.fleet.damage_downloads(third, 1).await.unwrap();
    let c = campaign(&m, json!({"image_hash": v2.hash, "devices": [first.to_string(), second.to_string(), third.to_string()], "wave_size": 3, "failure_rate_max": 0.5})).await;
    assert_eq!(c["campaign"]["state"], json!("completed"), "{c}");
    let outcomes: Vec<&str> = c["devices"].as_array().unwrap().iter().map(|d| d["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["received", "received", "refused"], "{c}");
    assert!(c["devices"][2]["detail"].as_str().unwrap().contains("hash"), "{c}");
    // The wave's three devices run at once: their alerts come in the order they answered.
    let mut codes = alert_codes(&m, &m.acme).await;
    codes[1..].sort();
    assert_eq!(codes, ["0x8F1C", "0x8F1C", "0x8F72", "0x8F72"]);
    assert_eq!(running(&m, first).await["firmware"], json!("1.0.0"), "held, not yet running");

    // Activation now: critical, signed by the supplier; the version changes (0x8F43).
    let r = m
        .w
        .run(&m.acme, "11.3", json!({"device": first.to_string()}), json!({"image_hash": v2.hash}), Some(&m.acme_key))
        .await;
    assert_eq!(r["response"]["outcome"], json!("done"), "{r}");
    assert_eq!(running(&m, first).await["firmware"], json!("2.0.0"));
    // Again: nothing held any more; refused, the running image kept, no 0x8F43.
    let r = m
        .w
        .run(&m.acme, "11.3", json!({"device": first.to_string()}), json!({"image_hash": v2.hash}), Some(&m.acme_key))
        .await;
    assert_eq!(r["response"]["outcome"], json!("device-refused"), "{r}");
    // The damaged one holds nothing: its activation fails and 1.0.0 runs on.
    let r = m
        .w
        .run(&m.acme, "11.3", json!({"device": third.to_string()}), json!({"image_hash": v2.hash}), Some(&m.acme_key))
        .await;
    assert_eq!(r["response"]["outcome"], json!("device-refused"), "{r}");
    assert_eq!(running(&m, third).await["firmware"], json!("1.0.0"));

    // Future-dated: held by the meter, done at its time (0x8F66, then 0x8F43).
    let at = m.w.hub.now() + jiff::SignedDuration::from_hours(24);
    let (s, ack) = m.w.call(Method::POST, "/v1/requests", &m.acme,
        Some(json!({"srv": "11.3", "target": {"device": second.to_string()}, "body": {"image_hash": v2.hash}, "execute_at": at.to_string()}))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{ack}");
    m.w.sign(&m.acme, &ack, &m.acme_key).await;
    let r = m.w.settle(&m.acme, &ack).await;
    assert_eq!(r["response"]["body"]["activates_at"], json!(at.to_string()), "{r}");
    assert_eq!(running(&m, second).await["firmware"], json!("1.0.0"));
    m.w.clock.advance_to(at + jiff::SignedDuration::from_mins(1));
    tick(&m.w).await;
    assert_eq!(running(&m, second).await["firmware"], json!("2.0.0"));
    let codes = alert_codes(&m, &m.acme).await;
    assert_eq!(codes[codes.len() - 3..], ["0x8F43", "0x8F43", "0x8F66"], "{codes:?}");
    m.w.close().await;
}

// R-FLT-4: a routine campaign goes in waves; a wave failing beyond the limit halts it, the
// rest are never sent, and the supplier and the hub operator are alerted. A security patch
// asked for later still goes first.
#[tokio::test]
async fn a_campaign_halts_when_a_wave_fails_and_security_patches_go_first() {
    let m = market().await;
    let mfr_key = SigningKey::generate(&SystemRandom::new()).unwrap();
    let mfr = m.w.party("mfr", &["MFR"], 20, Some(&mfr_key)).await;
    let mut meters = Vec::new();
    for n in 0..6 {
        meters.push(home(&m, 10 + n).await.1);
    }
    let routine = image(&mfr_key, "2.1.0", "routine", "core", None);
    let patch = image(&mfr_key, "2.0.1", "security", "core", None);
    assert_eq!(upload(&m, &mfr, &routine).await.0, StatusCode::CREATED);
    assert_eq!(upload(&m, &mfr, &patch).await.0, StatusCode::CREATED);
    // Wave 2 (the 3rd and 4th meters) will arrive damaged.
    m.w.fleet.damage_downloads(meters[2], 1).await.unwrap();
    m.w.fleet.damage_downloads(meters[3], 1).await.unwrap();
    let devices: Vec<String> = meters.iter().map(ToString::to_string).collect();
    let (s, r) =
        m.w.call(
            Method::POST,
            "/v1/firmware/campaigns",
            &m.acme,
            Some(json!({"image_hash": routine.hash, "devices": devices, "wave_size": 2, "failure_rate_max": 0.4})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let (s, p) =
        m.w.call(
            Method::POST,
            "/v1/firmware/campaigns",
            &m.acme,
            Some(json!({"image_hash": patch.hash, "devices": [devices[5]]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(p["wave_size"], json!(1), "a security patch goes in one wave: {p}");
    // One pass: the security patch's wave is queued before the routine one's.
    m.w.hub.run_campaigns_due().await.unwrap();
    let (_, pv) = m.w.call(Method::GET, &format!("/v1/firmware/campaigns/{}", p["id"]), &m.acme, None).await;
    let (_, rv) = m.w.call(Method::GET, &format!("/v1/firmware/campaigns/{}", r["id"]), &m.acme, None).await;
    let counter = |id: &Value| id.as_str().unwrap().rsplit(':').next().unwrap().parse::<u64>().unwrap();
    assert!(counter(&pv["devices"][0]["request_id"]) < counter(&rv["devices"][0]["request_id"]), "{pv} {rv}");
    tick(&m.w).await;

    let (_, rv) = m.w.call(Method::GET, &format!("/v1/firmware/campaigns/{}", r["id"]), &m.acme, None).await;
    assert_eq!(rv["campaign"]["state"], json!("halted"), "{rv}");
    assert!(rv["campaign"]["detail"].as_str().unwrap().contains("wave 2 failed on 2 of 2"), "{rv}");
    let waves: Vec<Value> = rv["devices"].as_array().unwrap().iter().map(|d| d["wave"].clone()).collect();
    assert_eq!(waves, [json!(1), json!(1), json!(2), json!(2), Value::Null, Value::Null], "{rv}");
    let (_, pv) = m.w.call(Method::GET, &format!("/v1/firmware/campaigns/{}", p["id"]), &m.acme, None).await;
    assert_eq!(pv["campaign"]["state"], json!("completed"), "{pv}");
    for token in [&m.acme, &m.w.operator] {
        assert!(alert_codes(&m, token).await.contains(&"hub.firmware-distribution-failed".to_string()));
    }
    // A campaign cancelled before its first wave never sends anything.
    let (s, c) =
        m.w.call(
            Method::POST,
            "/v1/firmware/campaigns",
            &m.acme,
            Some(json!({"image_hash": patch.hash, "devices": [devices[4]]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    let (s, v) = m.w.call(Method::POST, &format!("/v1/firmware/campaigns/{}/cancel", c["id"]), &m.acme, None).await;
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("cancelled")), "{v}");
    tick(&m.w).await;
    let (_, v) = m.w.call(Method::GET, &format!("/v1/firmware/campaigns/{}", c["id"]), &m.acme, None).await;
    assert_eq!(v["devices"][0]["wave"], Value::Null, "{v}");
    let (s, _) = m.w.call(Method::POST, &format!("/v1/firmware/campaigns/{}/cancel", c["id"]), &m.acme, None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    // Another supplier cannot put acme's devices in a campaign.
    let (s, v) =
        m.w.call(
            Method::POST,
            "/v1/firmware/campaigns",
            &m.bright,
            Some(json!({"image_hash": routine.hash, "devices": [devices[0]]})),
        )
        .await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("devices[0]")), "{v}");
    m.w.close().await;
}

// R-FLT-4: the supplier's appointed meter asset provider distributes and activates firmware:
// the supplier first puts the provider's key on the meter with its own signed 6.15.1; the
// provider's signed 11.3 is then accepted by the meter, and only while it is appointed.
#[tokio::test]
async fn an_appointed_meter_asset_provider_activates_firmware() {
    let m = market().await;
    let mfr_key = SigningKey::generate(&SystemRandom::new()).unwrap();
    let mfr = m.w.party("mfr", &["MFR"], 20, Some(&mfr_key)).await;
    let map_key = SigningKey::generate(&SystemRandom::new()).unwrap();
    let map = m.w.party("mapco", &["MAP"], 21, Some(&map_key)).await;
    let (_, meter) = home(&m, 30).await;
    let mpan = meterhub_mpan(30);
    let v2 = image(&mfr_key, "2.0.0", "routine", "core", None);
    assert_eq!(upload(&m, &mfr, &v2).await.0, StatusCode::CREATED);
    let target = json!({"device": meter.to_string()});

    // Not appointed: the hub refuses it.
    let (s, v) = m.w.submit(&map, "11.3", target.clone(), json!({"image_hash": v2.hash})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) =
        m.w.call(
            Method::POST,
            &format!("/v1/metering-points/{mpan}/appointments"),
            &m.acme,
            Some(json!({"agent": "mapco"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Appointed, it runs the campaign itself.
    let (s, c) =
        m.w.call(
            Method::POST,
            "/v1/firmware/campaigns",
            &map,
            Some(json!({"image_hash": v2.hash, "devices": [meter.to_string()]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    tick(&m.w).await;
    // Its 11.3 before the supplier vouched for it on the meter: the meter refuses.
    let r = m.w.run(&map, "11.3", target.clone(), json!({"image_hash": v2.hash}), Some(&map_key)).await;
    assert_eq!(r["response"]["body"]["code"], json!("untrusted-originator"), "{r}");
    // The supplier's 6.15.1, signed by the supplier, names its agent.
    let (s, v) = m.w.submit(&m.acme, "6.15.1", target.clone(), json!({"agent": "mfr"})).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("body.agent")), "not a MAP: {v}");
    let r = m.w.run(&m.acme, "6.15.1", target.clone(), json!({"agent": "mapco"}), Some(&m.acme_key)).await;
    assert_eq!(r["response"]["outcome"], json!("done"), "{r}");
    let r = m.w.run(&map, "11.3", target.clone(), json!({"image_hash": v2.hash}), Some(&map_key)).await;
    assert_eq!(r["response"]["outcome"], json!("done"), "{r}");
    assert_eq!(running(&m, meter).await["firmware"], json!("2.0.0"));
    // The agent's key opens nothing else: its signed 7.2 is refused by the hub (not its SRV).
    let (s, _) = m.w.submit(&map, "7.2", target.clone(), json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    m.w.close().await;
}
