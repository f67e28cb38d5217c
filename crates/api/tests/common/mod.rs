//! The world the API scenario tests run in: a hub on a temporary store with a manual clock,
//! the in-process fleet, a small market of parties and registered metering points, and
//! helpers to install and enrol a home.

#![allow(dead_code, reason = "each test file uses its own subset")]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine as _;
use domain::crypto::{self, SigningKey, SystemRandom};
use fleet::Fleet;
use hub::{Hub, HubConfig, ManualClock};
use serde_json::{Value, json};
use store::sqlite::{Durability, SqliteFleetStore, SqliteOptions, SqliteStore};
use tower::ServiceExt;

pub const START: &str = "2026-01-05T09:00:00Z";
pub const MPAN: &str = "1312345678907";

pub struct World {
    pub app: Router,
    pub hub: Hub,
    pub fleet: Arc<Fleet>,
    pub store: Arc<SqliteStore>,
    pub fleet_store: Arc<SqliteFleetStore>,
    pub clock: Arc<ManualClock>,
    pub operator: String,
}

pub fn opts() -> SqliteOptions {
    SqliteOptions { durability: Durability::Normal, readers: 2, ..Default::default() }
}

pub async fn open_world(dir: &std::path::Path, clock: Arc<ManualClock>) -> World {
    open_world_with(dir, clock, |f| f).await
}

/// [`open_world`] with the hub reaching the fleet through `transport` (a wrapper that
/// watches what is sent).
pub async fn open_world_with(
    dir: &std::path::Path,
    clock: Arc<ManualClock>,
    transport: impl FnOnce(Arc<Fleet>) -> Arc<dyn hub::transport::DeviceTransport>,
) -> World {
    open_world_configured(dir, clock, HubConfig::default(), transport).await
}

/// [`open_world_with`] under hub settings of the test's own.
pub async fn open_world_configured(
    dir: &std::path::Path,
    clock: Arc<ManualClock>,
    config: HubConfig,
    transport: impl FnOnce(Arc<Fleet>) -> Arc<dyn hub::transport::DeviceTransport>,
) -> World {
    let store = Arc::new(SqliteStore::open(dir, opts()).unwrap());
    let fleet_store = Arc::new(SqliteFleetStore::open(dir, opts()).unwrap());
    let hub = Hub::open(store.clone(), clock.clone(), config).await.unwrap();
    let operator = match hub.bootstrap_operator().await.unwrap() {
        Some(t) => t.token,
        None => hub.issue_token_unchecked(&"hub-operator".parse().unwrap(), "test").await.unwrap().token,
    };
    let fleet = Arc::new(Fleet::new(fleet_store.clone(), clock.clone(), 7, 64));
    hub.attach_transport(transport(fleet.clone()));
    World { app: api::router(hub.clone()), hub, fleet, store, fleet_store, clock, operator }
}

impl World {
    pub async fn close(&self) {
        self.store.close().await;
        self.fleet_store.close().await;
    }

    pub async fn call(&self, method: Method, uri: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
        let req = Request::builder().method(method).uri(uri).header(header::AUTHORIZATION, format!("Bearer {token}"));
        let req = match body {
            Some(b) => req.header(header::CONTENT_TYPE, "application/json").body(Body::from(b.to_string())).unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    pub async fn party(&self, id: &str, roles: &[&str], eui: u8, key: Option<&SigningKey>) -> String {
        let pem = key.map(|k| crypto::public_key_pem(&k.public_key_spki()));
        let body = json!({"id": id, "name": id, "roles": roles, "originator": format!("90B3D51F300100{eui:02X}"), "signing_key_pem": pem});
        let (s, v) = self.call(Method::POST, "/v1/parties", &self.operator, Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, v) =
            self.call(Method::POST, &format!("/v1/parties/{id}/tokens"), &self.operator, Some(json!({}))).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    /// Submit; returns the acknowledgement.
    pub async fn submit(&self, token: &str, srv: &str, target: Value, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, "/v1/requests", token, Some(json!({"srv": srv, "target": target, "body": body}))).await
    }

    /// Sign a request's pre-command with `key` and send the signature.
    pub async fn sign(&self, token: &str, ack: &Value, key: &SigningKey) -> (StatusCode, Value) {
        let pre = base64::engine::general_purpose::STANDARD.decode(ack["precommand_base64"].as_str().unwrap()).unwrap();
        let sig = key.sign(&SystemRandom::new(), &pre).unwrap();
        let body = json!({"signature_base64": base64::engine::general_purpose::STANDARD.encode(sig)});
        let id = ack["id"].as_str().unwrap();
        self.call(Method::POST, &format!("/v1/requests/{id}/signature"), token, Some(body)).await
    }

    /// Run the dispatcher, then fetch the request.
    pub async fn settle(&self, token: &str, ack: &Value) -> Value {
        self.hub.dispatch_due().await.unwrap();
        let id = ack["id"].as_str().unwrap();
        let (s, v) = self.call(Method::GET, &format!("/v1/requests/{id}"), token, None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    /// Submit (and sign, for critical SRVs), run, return the request with its response.
    pub async fn run(&self, token: &str, srv: &str, target: Value, body: Value, key: Option<&SigningKey>) -> Value {
        let (s, ack) = self.submit(token, srv, target, body).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{srv}: {ack}");
        if let Some(k) = key {
            assert_eq!(ack["status"], json!("awaiting-signature"), "{ack}");
            let (s, v) = self.sign(token, &ack, k).await;
            assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        }
        self.settle(token, &ack).await
    }
}

pub struct Market {
    pub w: World,
    pub acme: String,
    pub acme_key: SigningKey,
    pub bright: String,
    pub dno: String,
    pub reg: String,
    pub _dir: tempfile::TempDir,
}

pub async fn market() -> Market {
    market_with(|f| f).await
}

/// [`market`] over [`open_world_with`].
pub async fn market_with(transport: impl FnOnce(Arc<Fleet>) -> Arc<dyn hub::transport::DeviceTransport>) -> Market {
    market_configured(HubConfig::default(), transport).await
}

/// [`market_with`] under hub settings of the test's own.
pub async fn market_configured(
    config: HubConfig,
    transport: impl FnOnce(Arc<Fleet>) -> Arc<dyn hub::transport::DeviceTransport>,
) -> Market {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START.parse().unwrap()));
    let w = open_world_configured(dir.path(), clock, config, transport).await;
    let acme_key = SigningKey::generate(&SystemRandom::new()).unwrap();
    let acme = w.party("acme", &["IS", "GS"], 1, Some(&acme_key)).await;
    let bright = w.party("bright", &["IS"], 2, Some(&SigningKey::generate(&SystemRandom::new()).unwrap())).await;
    let dno = w.party("dno-13", &["ED"], 3, None).await;
    let reg = w.party("reg", &["REG"], 4, None).await;
    w.party("cadent", &["GT"], 5, None).await;
    for (mpxn, body) in [
        (
            MPAN,
            json!({"effective_from": "2025-01-01", "supplier": "acme", "network_operator": "dno-13", "meter_type": "smart-compliant"}),
        ),
        (
            "3938424403",
            json!({"effective_from": "2025-01-01", "supplier": "acme", "shipper": "acme", "network_operator": "cadent", "meter_type": "smart-compliant", "annual_quantity_kwh": 12000}),
        ),
        (
            "1700053058802",
            json!({"effective_from": "2025-01-01", "supplier": "acme", "network_operator": "dno-13", "meter_type": "traditional"}),
        ),
    ] {
        let (s, v) = w.call(Method::POST, &format!("/v1/metering-points/{mpxn}/registrations"), &reg, Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    Market { w, acme, acme_key, bright, dno, reg, _dir: dir }
}

pub fn device_of<'a>(premises: &'a Value, kind: &str) -> &'a str {
    premises["devices"].as_array().unwrap().iter().find(|d| d["kind"] == json!(kind)).unwrap()["eui"].as_str().unwrap()
}

/// Install a home for acme and commission every device with signed 8.1.1s.
pub async fn installed_home(m: &Market) -> Value {
    let (s, p) =
        m.w.call(
            Method::POST,
            "/v1/premises",
            &m.acme,
            Some(json!({"electricity": "domestic", "gas_annual_quantity_kwh": 12000})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    for d in p["devices"].as_array().unwrap() {
        let r = m.w.run(&m.acme, "8.1.1", json!({"device": d["eui"]}), json!({}), Some(&m.acme_key)).await;
        assert_eq!(r["response"]["outcome"], json!("done"), "{r}");
    }
    p
}

/// Link the meters to their MPxNs (6.20.1): this enrols them.
pub async fn enrolled_home(m: &Market) -> Value {
    let p = installed_home(m).await;
    for (kind, mpxn) in [("electricity-meter", MPAN), ("gas-meter", "3938424403")] {
        let r = m.w.run(&m.acme, "6.20.1", json!({"device": device_of(&p, kind)}), json!({"mpxn": mpxn}), None).await;
        assert_eq!(r["response"]["outcome"], json!("done"), "{r}");
    }
    p
}
