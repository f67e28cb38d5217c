//! The HTTP/JSON API (axum): bearer authentication, problem+json refusals, the OpenAPI
//! document at `/openapi.json` with Swagger UI at `/docs`, `/healthz` and Prometheus
//! `/metrics`. Only this crate knows HTTP and JSON shapes.

// A Problem is built once per refused request, on the cold path; boxing it buys nothing.
#![allow(clippy::result_large_err)]

pub mod alerts;
pub mod dto;
pub mod extract;
pub mod firmware;
pub mod grants;
pub mod payments;
pub mod problem;
pub mod reads;
pub mod routes;
pub mod simulation;
mod stream;
pub mod switching;

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use domain::catalogue::{self, CATALOGUE, Critical, ServiceKind};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::Semaphore;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_swagger_ui::SwaggerUi;

use problem::Problem;

/// Largest request body accepted.
pub const BODY_BYTES_MAX: usize = 1 << 20;
/// Requests handled at once; beyond it the API answers 503 at once rather than queueing.
pub const IN_FLIGHT_DEFAULT: usize = 4096;
/// Server-sent-event streams open at once.
pub const STREAMS_MAX: usize = 1024;
/// Longest a request may take, body upload included; a slow client cannot hold a slot longer.
pub const REQUEST_SECONDS_MAX: u64 = 30;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub hub: hub::Hub,
    in_flight: Arc<Semaphore>,
    /// Open server-sent-event streams.
    pub(crate) streams: Arc<Semaphore>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "meterhub", description = "", license(name = "Apache-2.0 OR MIT")),
    paths(
        routes::healthz,
        routes::whoami,
        routes::catalogue,
        routes::get_clock,
        routes::advance_clock,
        routes::list_parties,
        routes::create_party,
        routes::get_party,
        routes::list_tokens,
        routes::issue_token,
        routes::revoke_token,
        routes::record_registration,
        routes::get_metering_point,
        routes::get_history,
        routes::install_premises,
        routes::get_premises,
        routes::fit_device,
        routes::submit_request,
        routes::get_request,
        routes::sign_request,
        routes::cancel_request,
        routes::get_audit,
        routes::list_responses,
        routes::stream_responses,
        routes::release_request,
        routes::delete_request,
        routes::list_quarantine,
        routes::list_thresholds,
        routes::set_threshold,
        routes::remove_threshold,
        reads::read_batch,
        reads::forward_read,
        reads::forwarded_reads,
        grants::record_consent,
        grants::list_consents,
        grants::end_consent,
        grants::appoint_agent,
        grants::list_appointments,
        grants::end_appointment,
        payments::get_customer,
        payments::create_top_up,
        payments::get_top_up,
        payments::get_payment_endpoint,
        payments::set_payment_endpoint,
        payments::remove_payment_endpoint,
        simulation::display,
        simulation::keypad,
        alerts::list_alerts,
        alerts::ack_alerts,
        alerts::stream_alerts,
        alerts::dead_letters,
        alerts::set_webhook,
        alerts::get_webhook,
        alerts::delete_webhook,
        alerts::list_routes,
        alerts::set_route,
        firmware::upload,
        firmware::list,
        firmware::start_campaign,
        firmware::list_campaigns,
        firmware::get_campaign,
        firmware::cancel_campaign,
        switching::request_switch,
        switching::list_switches,
        switching::get_switch,
        switching::act_on_switch,
        switching::notify_tenancy,
        switching::list_tenancies,
        switching::list_notices,
    ),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
    tags(
        (name = "requests", description = "Service requests: submit, sign critical ones, follow them to their response (R-SR-1..4)."),
        (name = "payments", description = "Prepayment: customer identifiers, top-ups with GBCS UTRNs (R-PAY-1..4)."),
        (name = "simulation", description = "The simulated homes: in-home displays and consumers at the keypad (hub operator)."),
        (name = "switching", description = "Change of supplier (objection windows, gas confirmation, the switch instant's credentials and definitive reading), change of tenancy, and the hub's notices (R-COS-1..7, R-COT-1..4)."),
        (name = "firmware", description = "Firmware images signed by manufacturers; campaigns that distribute them (SRV 11.1) in waves, security patches first; activation is your signed SRV 11.3 (R-FLT-3, R-FLT-4)."),
        (name = "alerts", description = "Alerts addressed to you, in order: device alerts as the dispatch table routes them, and the hub's own (quarantine, delivery failures). Pull, stream, acknowledge, or have them pushed to your webhook (R-FLT-2)."),
        (name = "reads", description = "Reads distribution: per-day batches of your reads, forwarding reads to network operators (R-RD-1, R-RD-2)."),
        (name = "devices", description = "Premises and their devices (the smart metering inventory)."),
        (name = "registry", description = "Metering points and their effective-dated registrations (R-REG-1..4)."),
        (name = "parties", description = "Parties, roles and API credentials."),
        (name = "catalogue", description = "The service catalogue that authorises every request."),
        (name = "clock", description = "The hub clock; the simulated clock can be advanced."),
        (name = "operations", description = "Health and metrics."),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("mh_<id>_<secret>").build(),
            ),
        );
    }
}

/// Which catalogue service authorises each operation: the OpenAPI text for it is generated
/// from the catalogue row, so the documentation cannot drift from the rule.
const OPERATION_SERVICES: &[(&str, &[&str])] = &[
    ("whoami", &["party.read-own"]),
    ("catalogue", &["catalogue.read"]),
    ("get_clock", &["clock.read"]),
    ("advance_clock", &["clock.advance"]),
    ("list_parties", &["party.read"]),
    ("create_party", &["party.manage"]),
    ("get_party", &["party.read-own", "party.read"]),
    ("list_tokens", &["party.token-own", "party.manage"]),
    ("issue_token", &["party.token-own", "party.manage"]),
    ("revoke_token", &["party.token-own", "party.manage"]),
    ("record_registration", &["registry.write"]),
    ("get_metering_point", &["registry.read"]),
    ("get_history", &["registry.history"]),
    ("install_premises", &["premises.install"]),
    ("get_premises", &["premises.read"]),
    ("fit_device", &["premises.install"]),
    ("get_request", &["request.read-own", "request.read"]),
    ("sign_request", &["request.read-own"]),
    ("cancel_request", &["request.read-own"]),
    ("get_audit", &["request.read-own", "request.read"]),
    ("list_responses", &["request.read-own"]),
    ("stream_responses", &["request.read-own"]),
    ("release_request", &["request.read-own"]),
    ("delete_request", &["request.read-own"]),
    ("list_quarantine", &["request.read-own"]),
    ("list_thresholds", &["anomaly.configure-own"]),
    ("set_threshold", &["anomaly.configure-own", "anomaly.configure-hub"]),
    ("remove_threshold", &["anomaly.configure-own", "anomaly.configure-hub"]),
    ("read_batch", &["reads.batch"]),
    ("forward_read", &["reads.forward"]),
    ("forwarded_reads", &["reads.forwarded"]),
    ("record_consent", &["consent.record-own"]),
    ("list_consents", &["grants.read"]),
    ("end_consent", &["grants.read", "grants.manage-any"]),
    ("appoint_agent", &["appointment.manage"]),
    ("list_appointments", &["grants.read"]),
    ("end_appointment", &["grants.read", "grants.manage-any"]),
    ("get_customer", &["payment.top-up"]),
    ("create_top_up", &["payment.top-up"]),
    ("get_top_up", &["payment.top-up"]),
    ("get_payment_endpoint", &["payment.endpoint-own"]),
    ("set_payment_endpoint", &["payment.endpoint-own"]),
    ("remove_payment_endpoint", &["payment.endpoint-own"]),
    ("display", &["simulation.consumer"]),
    ("keypad", &["simulation.consumer"]),
    ("list_alerts", &["alert.read-own"]),
    ("ack_alerts", &["alert.read-own"]),
    ("stream_alerts", &["alert.read-own"]),
    ("dead_letters", &["alert.read-own"]),
    ("set_webhook", &["alert.read-own"]),
    ("get_webhook", &["alert.read-own"]),
    ("delete_webhook", &["alert.read-own"]),
    ("list_routes", &["alert.dispatch-manage"]),
    ("upload", &["firmware.upload"]),
    ("list", &["firmware.read"]),
    ("start_campaign", &["firmware.distribute"]),
    ("list_campaigns", &["firmware.distribute"]),
    ("get_campaign", &["firmware.distribute"]),
    ("cancel_campaign", &["firmware.distribute"]),
    ("set_route", &["alert.dispatch-manage"]),
];

fn catalogue_markdown() -> String {
    let mut md = String::from(
        "An open-source central hub for smart metering, modelled on GB's DCC.\n\n\
         Every call but `/healthz`, `/metrics`, `/openapi.json` and `/docs` needs \
         `Authorization: Bearer <token>`. Refusals are `application/problem+json` naming the \
         field and rule (400), the missing role or relationship (403).\n\n\
         ## Service catalogue\n\nThe one table that authorises every request. A grant is a role, \
         and for services on a metering point the relationship the party must hold to it at the \
         instant the request is about.\n\n| Code | Name | Critical | Future date | Grants |\n|---|---|---|---|---|\n",
    );
    for s in CATALOGUE {
        let grants: Vec<String> = s.grants.iter().map(|g| g.to_string()).collect();
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            s.code,
            s.name,
            if s.critical == Critical::Yes { "yes" } else { "no" },
            s.future_date.as_str(),
            grants.join("; ")
        ));
    }
    let srvs = CATALOGUE.iter().filter(|s| s.kind == ServiceKind::Srv).count();
    md.push_str(&format!("\n{srvs} DUIS service request variants; later releases execute them through this API.\n"));
    md
}

/// The OpenAPI document, with the catalogue in its description and on every operation.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.description = Some(catalogue_markdown());
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    for item in doc.paths.paths.values_mut() {
        for op in [&mut item.get, &mut item.post, &mut item.put, &mut item.delete].into_iter().flatten() {
            let Some(id) = op.operation_id.clone() else {
                continue;
            };
            let Some((_, codes)) = OPERATION_SERVICES.iter().find(|(o, _)| *o == id) else {
                continue;
            };
            let mut text = op.description.clone().unwrap_or_default();
            for code in *codes {
                let s = catalogue::service(code).expect("operation names a catalogue service");
                let grants: Vec<String> = s.grants.iter().map(|g| g.to_string()).collect();
                text.push_str(&format!("\n\nCatalogue service `{}` ({}): {}.", s.code, s.name, grants.join("; ")));
            }
            op.description = Some(text);
        }
    }
    doc
}

/// The process-wide Prometheus recorder (installed once).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
            .expect("static buckets")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (embedding); then ours just renders empty.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

async fn metrics_endpoint(State(st): State<AppState>) -> Response {
    if let Ok(c) = st.hub.counts().await {
        metrics::gauge!("meterhub_parties").set(c.parties as f64);
        metrics::gauge!("meterhub_metering_points").set(c.metering_points as f64);
        metrics::gauge!("meterhub_registrations").set(c.registrations as f64);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], prometheus().render()).into_response()
}

async fn track(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Ok(_permit) = st.in_flight.clone().try_acquire_owned() else {
        metrics::counter!("meterhub_http_shed_total").increment(1);
        let mut resp = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "Too many requests in flight",
            "the hub is at its in-flight request limit; retry shortly",
        )
        .into_response();
        resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return resp;
    };
    let route =
        req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let started = Instant::now();
    let resp = match tokio::time::timeout(std::time::Duration::from_secs(REQUEST_SECONDS_MAX), next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "Request took too long",
            format!("the request (its upload included) did not complete within {REQUEST_SECONDS_MAX} s; a write it carried may still have been applied, so check before repeating it"),
        )
        .into_response(),
    };
    let status = resp.status().as_u16().to_string();
    metrics::counter!("meterhub_http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("meterhub_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    resp
}

async fn not_found() -> Problem {
    Problem::not_found("no such endpoint; the API is described at /openapi.json and /docs")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "see /docs for the methods of this path",
    )
}

/// The whole API.
pub fn router(hub: hub::Hub) -> Router {
    router_with_limit(hub, IN_FLIGHT_DEFAULT)
}

pub fn router_with_limit(hub: hub::Hub, in_flight: usize) -> Router {
    let _ = prometheus();
    let state = AppState {
        hub,
        in_flight: Arc::new(Semaphore::new(in_flight)),
        streams: Arc::new(Semaphore::new(STREAMS_MAX)),
    };
    let api = Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/metrics", get(metrics_endpoint))
        .route("/v1/whoami", get(routes::whoami))
        .route("/v1/catalogue", get(routes::catalogue))
        .route("/v1/clock", get(routes::get_clock))
        .route("/v1/clock/advance", post(routes::advance_clock))
        .route("/v1/parties", get(routes::list_parties).post(routes::create_party))
        .route("/v1/parties/{party_id}", get(routes::get_party))
        .route("/v1/parties/{party_id}/tokens", get(routes::list_tokens).post(routes::issue_token))
        .route("/v1/parties/{party_id}/tokens/{token_id}", delete(routes::revoke_token))
        .route("/v1/metering-points/{mpxn}", get(routes::get_metering_point))
        .route("/v1/metering-points/{mpxn}/registrations", post(routes::record_registration))
        .route("/v1/metering-points/{mpxn}/history", get(routes::get_history))
        .route("/v1/metering-points/{mpxn}/consents", get(grants::list_consents).post(grants::record_consent))
        .route("/v1/metering-points/{mpxn}/consents/{seq}/end", post(grants::end_consent))
        .route("/v1/metering-points/{mpxn}/appointments", get(grants::list_appointments).post(grants::appoint_agent))
        .route("/v1/metering-points/{mpxn}/appointments/{seq}/end", post(grants::end_appointment))
        .route("/v1/premises", post(routes::install_premises))
        .route("/v1/premises/{premises_id}", get(routes::get_premises))
        .route("/v1/premises/{premises_id}/devices", post(routes::fit_device))
        .route("/v1/requests", post(routes::submit_request))
        .route("/v1/requests/{request_id}", get(routes::get_request))
        .route("/v1/requests/{request_id}/signature", post(routes::sign_request))
        .route("/v1/requests/{request_id}/cancel", post(routes::cancel_request))
        .route("/v1/requests/{request_id}/audit", get(routes::get_audit))
        .route("/v1/responses", get(routes::list_responses))
        .route("/v1/responses/stream", get(routes::stream_responses))
        .route("/v1/requests/{request_id}/release", post(routes::release_request))
        .route("/v1/requests/{request_id}/delete", post(routes::delete_request))
        .route("/v1/quarantine", get(routes::list_quarantine))
        .route("/v1/alerts", get(alerts::list_alerts))
        .route("/v1/alerts/ack", post(alerts::ack_alerts))
        .route("/v1/alerts/stream", get(alerts::stream_alerts))
        .route("/v1/alerts/dead-letters", get(alerts::dead_letters))
        .route("/v1/webhook", get(alerts::get_webhook).put(alerts::set_webhook).delete(alerts::delete_webhook))
        .route("/v1/alert-routes", get(alerts::list_routes))
        .route(
            "/v1/firmware",
            get(firmware::list).post(firmware::upload).layer(DefaultBodyLimit::max(firmware::FIRMWARE_BODY_MAX)),
        )
        .route("/v1/firmware/campaigns", get(firmware::list_campaigns).post(firmware::start_campaign))
        .route("/v1/firmware/campaigns/{id}", get(firmware::get_campaign))
        .route("/v1/firmware/campaigns/{id}/cancel", post(firmware::cancel_campaign))
        .route("/v1/alert-routes/{code}", axum::routing::put(alerts::set_route))
        .route("/v1/notices", get(switching::list_notices))
        .route("/v1/switches", get(switching::list_switches).post(switching::request_switch))
        .route("/v1/switches/{id}", get(switching::get_switch))
        .route("/v1/switches/{id}/{action}", post(switching::act_on_switch))
        .route("/v1/metering-points/{mpxn}/change-of-tenancy", post(switching::notify_tenancy))
        .route("/v1/metering-points/{mpxn}/tenancies", get(switching::list_tenancies))
        .route("/v1/customers/{customer_id}", get(payments::get_customer))
        .route("/v1/simulation/devices/{eui}/display", get(simulation::display))
        .route("/v1/simulation/devices/{eui}/keypad", post(simulation::keypad))
        .route("/v1/top-ups", post(payments::create_top_up))
        .route(
            "/v1/payment-endpoint",
            get(payments::get_payment_endpoint)
                .put(payments::set_payment_endpoint)
                .delete(payments::remove_payment_endpoint),
        )
        .route("/v1/top-ups/{payment_reference}", get(payments::get_top_up))
        .route("/v1/reads/days/{day}", get(reads::read_batch))
        .route("/v1/reads/forwarded", get(reads::forwarded_reads))
        .route("/v1/reads/{request_id}/forward", post(reads::forward_read))
        .route("/v1/anomaly-thresholds", get(routes::list_thresholds))
        .route(
            "/v1/anomaly-thresholds/{scope}/{srv}",
            axum::routing::put(routes::set_threshold).delete(routes::remove_threshold),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state);
    Router::new().merge(SwaggerUi::new("/docs").url("/openapi.json", openapi())).merge(api)
}
