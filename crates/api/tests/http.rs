//! The HTTP API end to end, in process: authentication, authorisation from the catalogue,
//! problem+json for every refusal, as-at registry queries, the clock, the documents.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use hub::{Hub, HubConfig, ManualClock};
use serde_json::{Value, json};
use store::sqlite::{Durability, SqliteOptions, SqliteStore};
use tower::ServiceExt;

struct T {
    app: Router,
    hub: Hub,
    operator: String,
    _dir: tempfile::TempDir,
}

const START: &str = "2026-03-28T12:00:00Z";

async fn setup() -> T {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(
            dir.path(),
            SqliteOptions { durability: Durability::Normal, readers: 2, ..Default::default() },
        )
        .unwrap(),
    );
    let clock = Arc::new(ManualClock::new(START.parse().unwrap()));
    let hub = Hub::open(store, clock, HubConfig::default()).await.unwrap();
    let operator = hub.bootstrap_operator().await.unwrap().unwrap().token;
    T { app: api::router(hub.clone()), hub, operator, _dir: dir }
}

impl T {
    async fn raw(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<(&str, &str)>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some((ct, b)) => req.header(header::CONTENT_TYPE, ct).body(Body::from(b.to_string())).unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap();
        let value =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, headers, value)
    }

    async fn call(&self, method: Method, uri: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let text = body.map(|b| b.to_string());
        let (s, _, v) = self.raw(method, uri, token, text.as_deref().map(|t| ("application/json", t))).await;
        (s, v)
    }

    /// Create a party with roles and return a token for it.
    async fn party(&self, id: &str, roles: &[&str], eui: u8) -> String {
        let body = json!({"id": id, "name": format!("{id} Ltd"), "roles": roles, "originator": format!("00000000000000{eui:02X}")});
        let (s, v) = self.call(Method::POST, "/v1/parties", Some(&self.operator), Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, v) =
            self.call(Method::POST, &format!("/v1/parties/{id}/tokens"), Some(&self.operator), Some(json!({}))).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_string()
    }
}

fn is_problem(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) == Some("application/problem+json")
}

struct Market {
    t: T,
    reg: String,
    acme: String,
    bright: String,
    dno: String,
    esco: String,
}

async fn market() -> Market {
    let t = setup().await;
    let reg = t.party("reg", &["REG"], 2).await;
    let acme = t.party("acme", &["IS", "GS"], 3).await;
    let bright = t.party("bright", &["IS"], 4).await;
    let dno = t.party("dno-13", &["ED"], 5).await;
    let esco = t.party("esco", &["OU"], 6).await;
    t.party("cadent", &["GT"], 7).await;
    Market { t, reg, acme, bright, dno, esco }
}

fn elec(from: &str, supplier: &str) -> Value {
    json!({"effective_from": from, "supplier": supplier, "network_operator": "dno-13", "meter_type": "smart-compliant"})
}

const MPAN: &str = "1312345678907";

// R-REG-1, R-SR-1: as-at queries through the API, each answered only to the party holding
// the relationship at that instant.
#[tokio::test]
async fn as_at_registry_queries_across_several_registrations() {
    let m = market().await;
    let path = format!("/v1/metering-points/{MPAN}/registrations");
    for (from, who) in [("2025-01-01", "acme"), ("2026-06-01", "bright"), ("2027-01-01T00:00:00Z", "acme")] {
        let (s, v) = m.t.call(Method::POST, &path, Some(&m.reg), Some(elec(from, who))).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    // (who asks, at, expected status, expected supplier)
    let table: &[(&str, &str, StatusCode, Option<&str>)] = &[
        (&m.acme, "", StatusCode::OK, Some("acme")),
        (&m.acme, "2026-05-31T22:59:59Z", StatusCode::OK, Some("acme")),
        // 1 June 2026 starts at 23:00 UTC on 31 May (BST).
        (&m.acme, "2026-05-31T23:00:00Z", StatusCode::FORBIDDEN, None),
        (&m.bright, "2026-06-01", StatusCode::OK, Some("bright")),
        (&m.bright, "", StatusCode::FORBIDDEN, None),
        (&m.acme, "2027-02-01", StatusCode::OK, Some("acme")),
        (&m.dno, "2026-07-01", StatusCode::OK, Some("bright")),
        (&m.reg, "2024-06-01", StatusCode::OK, None),
        (&m.t.operator, "2026-12-31T23:59:59Z", StatusCode::OK, Some("bright")),
    ];
    for (token, at, status, supplier) in table {
        let uri = if at.is_empty() {
            format!("/v1/metering-points/{MPAN}")
        } else {
            format!("/v1/metering-points/{MPAN}?at={at}")
        };
        let (s, v) = m.t.call(Method::GET, &uri, Some(token), None).await;
        assert_eq!(s, *status, "{uri}: {v}");
        if s == StatusCode::OK {
            assert_eq!(v["registration"]["supplier"].as_str(), *supplier, "{uri}: {v}");
            assert_eq!(v["enrolled"], json!(false));
            // R-REG-4: registration need not know the payment mode; nothing depends on it.
            assert_eq!(
                v["registration"].get("payment_mode"),
                if supplier.is_some() { Some(&Value::Null) } else { None }
            );
            assert_eq!(v["fuel"], json!("electricity"));
        } else {
            assert_eq!(v["missing"], json!("relationship"), "{v}");
        }
    }
    // "As known at": before the switch was recorded... all three were recorded at START, so a
    // known_at just before START sees nothing.
    let (s, v) =
        m.t.call(
            Method::GET,
            &format!("/v1/metering-points/{MPAN}?at=2026-07-01&known_at=2026-03-28T11:59:59Z"),
            Some(&m.reg),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["registration"], Value::Null);
    // The full history: registration service and operator only.
    let (s, v) = m.t.call(Method::GET, &format!("/v1/metering-points/{MPAN}/history"), Some(&m.reg), None).await;
    assert_eq!(s, StatusCode::OK);
    let suppliers: Vec<&str> =
        v["registrations"].as_array().unwrap().iter().map(|r| r["supplier"].as_str().unwrap()).collect();
    assert_eq!(suppliers, ["acme", "bright", "acme"]);
    let (s, v) = m.t.call(Method::GET, &format!("/v1/metering-points/{MPAN}/history"), Some(&m.acme), None).await;
    assert_eq!((s, v["missing"].as_str()), (StatusCode::FORBIDDEN, Some("role")));
    // The full MPAN form reaches the same metering point.
    let (s, v) = m.t.call(Method::GET, &format!("/v1/metering-points/00111222{MPAN}"), Some(&m.acme), None).await;
    assert_eq!((s, v["mpxn"].as_str()), (StatusCode::OK, Some(MPAN)));
}

// R-SR-1: refusals are problem+json naming what is missing; nothing is applied.
#[tokio::test]
async fn authorisation_refusals_name_role_or_relationship() {
    let m = market().await;
    let path = format!("/v1/metering-points/{MPAN}/registrations");
    m.t.call(Method::POST, &path, Some(&m.reg), Some(elec("2025-01-01", "acme"))).await;
    let mp = format!("/v1/metering-points/{MPAN}");
    // (token, method, uri, body, missing, service)
    type Case<'a> = (&'a str, Method, String, Option<Value>, &'a str, &'a str);
    let table: Vec<Case> = vec![
        (&m.esco, Method::GET, mp.clone(), None, "role", "registry.read"),
        (&m.bright, Method::GET, mp.clone(), None, "relationship", "registry.read"),
        (&m.acme, Method::POST, path.clone(), Some(elec("2026-01-01", "bright")), "role", "registry.write"),
        (&m.dno, Method::POST, "/v1/clock/advance".into(), Some(json!({"by": "P1D"})), "role", "clock.advance"),
        (&m.acme, Method::GET, "/v1/parties".into(), None, "role", "party.read"),
        (&m.acme, Method::POST, "/v1/parties/bright/tokens".into(), Some(json!({})), "role", "party.manage"),
        (&m.acme, Method::GET, "/v1/parties/bright".into(), None, "role", "party.read"),
    ];
    for (token, method, uri, body, missing, service) in table {
        let text = body.map(|b| b.to_string());
        let (s, h, v) =
            m.t.raw(method.clone(), &uri, Some(token), text.as_deref().map(|t| ("application/json", t))).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {uri}: {v}");
        assert!(is_problem(&h));
        assert_eq!((v["missing"].as_str(), v["service"].as_str()), (Some(missing), Some(service)), "{uri}: {v}");
        assert_eq!(v["status"], json!(403));
        assert!(v["detail"].as_str().unwrap().len() > 20);
    }
    // Nothing of a refused write was applied.
    let (_, v) = m.t.call(Method::GET, &format!("/v1/metering-points/{MPAN}/history"), Some(&m.reg), None).await;
    assert_eq!(v["registrations"].as_array().unwrap().len(), 1);
    // A party may read itself and manage its own tokens.
    let (s, v) = m.t.call(Method::GET, "/v1/parties/acme", Some(&m.acme), None).await;
    assert_eq!((s, v["roles"].clone()), (StatusCode::OK, json!(["IS", "GS"])));
    let (s, v) =
        m.t.call(Method::POST, "/v1/parties/acme/tokens", Some(&m.acme), Some(json!({"label": "rotation"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

#[tokio::test]
async fn authentication_failures_are_401_with_a_reason() {
    let m = market().await;
    let uri = "/v1/whoami";
    let (s, h, v) = m.t.raw(Method::GET, uri, None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(is_problem(&h));
    assert!(h.get(header::WWW_AUTHENTICATE).is_some());
    assert!(v["detail"].as_str().unwrap().contains("missing Authorization"));
    for (token, reason) in [("nonsense", "not a meterhub token"), ("mh_0000_abc", "unknown bearer token")] {
        let (s, v) = m.t.call(Method::GET, uri, Some(token), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert!(v["detail"].as_str().unwrap().contains(reason), "{v}");
    }
    let req = Request::builder()
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Basic {}", m.acme))
        .body(Body::empty())
        .unwrap();
    let resp = m.t.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // Revoked tokens stop at once.
    let id = m.acme.split('_').nth(1).unwrap();
    let (s, v) = m.t.call(Method::DELETE, &format!("/v1/parties/acme/tokens/{id}"), Some(&m.t.operator), None).await;
    assert_eq!((s, v["revoked_now"].clone()), (StatusCode::OK, json!(true)));
    let (s, v) = m.t.call(Method::GET, uri, Some(&m.acme), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(v["detail"].as_str().unwrap().contains("revoked"), "{v}");
    let (s, v) = m.t.call(Method::GET, "/v1/parties/acme/tokens", Some(&m.t.operator), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v.as_array().unwrap().iter().filter(|t| t["active"] == json!(false)).count(), 1);
    // Secrets are never listed.
    assert!(!v.to_string().contains(&m.acme));
}

// Bad input: the problem names the field and the rule, and nothing is stored.
#[tokio::test]
async fn bad_input_is_refused_naming_field_and_rule() {
    let m = market().await;
    let path = format!("/v1/metering-points/{MPAN}/registrations");
    let good = elec("2025-01-01", "acme").to_string();
    let with = |k: &str, v: Value| {
        let mut b = elec("2025-01-01", "acme");
        b[k] = v;
        b.to_string()
    };
    // (uri, content type, body, status, field, rule contains)
    let cases: Vec<(String, &str, String, u16, &str, &str)> = vec![
        (path.clone(), "application/json", "{\"effective_from\": ".into(), 400, "effective_from", "malformed JSON"),
        (path.clone(), "application/json", "[1,2]".into(), 400, "[0]", "invalid type"),
        (path.clone(), "application/json", with("colour", json!("blue")), 400, "colour", "unknown field"),
        (
            path.clone(),
            "application/json",
            with("annual_quantity_kwh", json!("lots")),
            400,
            "annual_quantity_kwh",
            "invalid type",
        ),
        (
            path.clone(),
            "application/json",
            with("effective_from", json!("31/01/2026")),
            400,
            "effective_from",
            "YYYY-MM-DD",
        ),
        (path.clone(), "application/json", with("supplier", json!("Acme Energy")), 400, "supplier", "character"),
        (path.clone(), "application/json", with("supplier", json!("nobody")), 400, "supplier", "not known"),
        (path.clone(), "application/json", with("supplier", json!("esco")), 400, "supplier", "must hold role IS"),
        (path.clone(), "application/json", with("meter_type", json!("smart")), 400, "meter_type", "smart-compliant"),
        (path.clone(), "application/json", with("payment_mode", json!("cash")), 400, "payment_mode", "prepayment"),
        (path.clone(), "application/json", with("shipper", json!("acme")), 400, "shipper", "only gas"),
        (
            "/v1/metering-points/1312345678900/registrations".into(),
            "application/json",
            good.clone(),
            400,
            "mpxn",
            "check-digit",
        ),
        (
            "/v1/metering-points/9912345678907/registrations".into(),
            "application/json",
            good.clone(),
            400,
            "mpxn",
            "distributor-id",
        ),
        ("/v1/metering-points/12345/registrations".into(), "application/json", good.clone(), 400, "mpxn", "length"),
        (
            "/v1/metering-points/13123456789O7/registrations".into(),
            "application/json",
            good.clone(),
            400,
            "mpxn",
            "character",
        ),
        (path.clone(), "text/plain", good.clone(), 415, "", ""),
    ];
    for (uri, ct, body, status, field, rule) in cases {
        let (s, h, v) = m.t.raw(Method::POST, &uri, Some(&m.reg), Some((ct, &body))).await;
        assert_eq!(s.as_u16(), status, "{body}: {v}");
        assert!(is_problem(&h), "{body}");
        if status == 400 {
            assert_eq!(v["field"].as_str(), Some(field), "{body}: {v}");
            assert!(v["rule"].as_str().unwrap().contains(rule), "{body}: {v}");
        }
    }
    // Gas: the transporter must be a GT, the shipper is required.
    let gas = json!({"effective_from": "2025-01-01", "supplier": "acme", "shipper": "acme", "network_operator": "dno-13",
                     "meter_type": "traditional"});
    let (s, v) = m.t.call(Method::POST, "/v1/metering-points/3938424403/registrations", Some(&m.reg), Some(gas)).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("network_operator")), "{v}");
    // None of it was stored.
    let (s, _) = m.t.call(Method::GET, &format!("/v1/metering-points/{MPAN}"), Some(&m.reg), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Query parameters are checked the same way.
    m.t.call(Method::POST, &path, Some(&m.reg), Some(elec("2025-01-01", "acme"))).await;
    for (q, field) in [
        ("at=tomorrow", "at"),
        ("known_at=2026-13-01", "known_at"),
        ("when=now", "when"),
        ("at=2026-01-01&at=2026-02-01", "at"),
    ] {
        let (s, v) = m.t.call(Method::GET, &format!("/v1/metering-points/{MPAN}?{q}"), Some(&m.reg), None).await;
        assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{q}: {v}");
    }
    // Parties: bad EUI-64, unknown role, bad key, duplicate.
    let party = |k: &str, v: Value| {
        let mut b = json!({"id": "newco", "name": "NewCo", "roles": ["IS"], "originator": "00-00-00-00-00-00-0A-0A"});
        b[k] = v;
        b
    };
    for (body, field, rule) in [
        (party("originator", json!("00-00-00-00-00-00-0A")), "originator", "hyphen-layout"),
        (party("roles", json!(["XX"])), "roles", "unknown role"),
        (party("roles", json!([1])), "roles[0]", "invalid type"),
        (party("roles", json!([])), "roles", "at least one"),
        (
            party("signing_key_pem", json!("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")),
            "signing_key_pem",
            "P-256",
        ),
        (party("id", json!("-x")), "id", "character"),
        (party("name", json!("  ")), "name", "1 to 200"),
    ] {
        let (s, v) = m.t.call(Method::POST, "/v1/parties", Some(&m.t.operator), Some(body.clone())).await;
        assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{body}: {v}");
        assert!(v["rule"].as_str().unwrap().contains(rule), "{body}: {v}");
    }
    let (s, v) = m.t.call(Method::POST, "/v1/parties", Some(&m.t.operator), Some(party("id", json!("acme")))).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let t = setup().await;
    let (s, h, _) = t.raw(Method::GET, "/v1/nothing-here", Some(&t.operator), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(is_problem(&h));
    let (s, h, _) = t.raw(Method::PUT, "/v1/parties", Some(&t.operator), None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert!(is_problem(&h));
    let (s, v) = t.call(Method::GET, "/v1/metering-points/1312345678907", Some(&t.operator), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
}

// The simulated clock: operator only, forward only, calendar days across a clock change.
#[tokio::test]
async fn simulated_clock_moves_forward_in_london_calendar_days() {
    let t = setup().await;
    let (s, v) = t.call(Method::POST, "/v1/clock/advance", Some(&t.operator), Some(json!({"by": "P1D"}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // 28 March 2026 12:00 GMT + one London day = 29 March 12:00 BST, 23 hours later.
    assert_eq!(v["now"], json!("2026-03-29T11:00:00Z"));
    assert!(v["london"].as_str().unwrap().contains("BST"));
    for (body, field) in [
        (json!({"to": "2026-01-01"}), "to"),
        (json!({"by": "P1D", "to": "2027-01-01"}), "to"),
        (json!({}), "to"),
        (json!({"by": "soon"}), "by"),
        (json!({"by": "P20Y"}), "to"),
    ] {
        let (s, v) = t.call(Method::POST, "/v1/clock/advance", Some(&t.operator), Some(body.clone())).await;
        assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{body}: {v}");
    }
    let (s, v) = t.call(Method::GET, "/v1/clock", Some(&t.operator), None).await;
    assert_eq!(
        (s, v["now"].clone(), v["simulated"].clone()),
        (StatusCode::OK, json!("2026-03-29T11:00:00Z"), json!(true))
    );
    assert_eq!(t.hub.now().to_string(), "2026-03-29T11:00:00Z");
}

#[tokio::test]
async fn the_system_clock_cannot_be_moved() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap());
    let hub = Hub::open(store, Arc::new(hub::SystemClock), HubConfig::default()).await.unwrap();
    let token = hub.bootstrap_operator().await.unwrap().unwrap().token;
    let req = Request::post("/v1/clock/advance")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"by":"P1D"}"#))
        .unwrap();
    let resp = api::router(hub).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn catalogue_openapi_docs_health_and_metrics() {
    let t = setup().await;
    let (s, v) = t.call(Method::GET, "/v1/catalogue", Some(&t.operator), None).await;
    assert_eq!(s, StatusCode::OK);
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), domain::catalogue::CATALOGUE.len());
    let srv = rows.iter().find(|r| r["code"] == json!("7.1")).unwrap();
    assert_eq!((srv["critical"].clone(), srv["grants"].as_array().unwrap().len()), (json!(true), 1));

    let (s, doc) = t.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let description = doc["info"]["description"].as_str().unwrap();
    assert!(description.contains("| 11.3 | Activate Firmware | yes | device |"), "{description}");
    let op = &doc["paths"]["/v1/metering-points/{mpxn}"]["get"];
    assert!(op["description"].as_str().unwrap().contains("Catalogue service `registry.read`"), "{op}");
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let (s, _, body) = t.raw(Method::GET, "/docs/", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.as_str().unwrap().contains("swagger"));

    let (s, v) = t.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((s, v["status"].clone()), (StatusCode::OK, json!("ok")));
    let (s, _, body) = t.raw(Method::GET, "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let text = body.as_str().unwrap();
    assert!(text.contains("meterhub_http_requests_total"), "{text}");
    assert!(text.contains("meterhub_parties 1"), "{text}");
}

// Every rate is bounded: past the in-flight limit the API sheds load with a 503 problem.
#[tokio::test]
async fn in_flight_limit_sheds_load() {
    let t = setup().await;
    let app = api::router_with_limit(t.hub.clone(), 0);
    let resp = app.oneshot(Request::get("/healthz").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers().get(header::RETRY_AFTER).unwrap(), "1");
}

// R-REG-3: the MPAN check digit can be relaxed by configuration for industry test data.
#[tokio::test]
async fn relaxed_hub_accepts_dcc_test_mpans() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap());
    let clock = Arc::new(ManualClock::new(START.parse().unwrap()));
    let hub =
        Hub::open(store, clock, HubConfig { id_rules: domain::IdRules::RELAXED, ..Default::default() }).await.unwrap();
    let operator = hub.bootstrap_operator().await.unwrap().unwrap().token;
    let t = T { app: api::router(hub.clone()), hub, operator, _dir: dir };
    let reg = t.party("reg", &["REG"], 2).await;
    t.party("acme", &["IS"], 3).await;
    t.party("dno-13", &["ED"], 4).await;
    let (s, v) = t
        .call(
            Method::POST,
            "/v1/metering-points/1312345678111/registrations",
            Some(&reg),
            Some(elec("2025-01-01", "acme")),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = t.call(Method::GET, "/v1/metering-points/1312345678111", Some(&reg), None).await;
    assert_eq!((s, v["mpxn"].clone()), (StatusCode::OK, json!("1312345678111")));
    // Other rules still hold.
    let (s, v) = t
        .call(
            Method::POST,
            "/v1/metering-points/9912345678111/registrations",
            Some(&reg),
            Some(elec("2025-01-01", "acme")),
        )
        .await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("mpxn")));
}
