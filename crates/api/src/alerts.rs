//! Alerts addressed to the caller: pull with a cursor, stream, acknowledge, push to a
//! webhook; the hub operator's dispatch table (R-FLT-2).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::dto::ResponsesQuery;
use crate::extract::{ApiJson, ApiQuery, Auth};
use crate::problem::{ApiResult, Problem};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AlertDto {
    /// Order among your alerts: pass the last one seen as `after`, or acknowledge it.
    pub seq: i64,
    /// When it was raised.
    pub at: Timestamp,
    /// `device` (a GBCS alert) or `hub` (the hub's own: quarantine, delivery failure ...).
    pub source: String,
    pub device: Option<String>,
    /// The device's own number for it (1, 2, 3 ... per device): with `device`, what a
    /// receiver deduplicates by, as delivery is at least once.
    pub device_seq: Option<u64>,
    pub mpxn: Option<String>,
    /// GBCS alert code (`0x8F66`) or hub alert (`hub.quarantine`).
    pub code: String,
    /// Its name.
    pub name: Option<String>,
    /// Why you got it: `registered-supplier`, `network-operator`, `consent-holder`,
    /// `hub-operator`, `party-concerned`.
    pub recipient_as: String,
    pub detail: String,
    /// More (a held change's result carries its request id, the register reading and the
    /// product in force).
    #[schema(value_type = Object)]
    pub data: Option<serde_json::Value>,
    pub received_at: Timestamp,
}

impl From<&hub::AlertRecord> for AlertDto {
    fn from(a: &hub::AlertRecord) -> Self {
        // One shape for pulls, streams and webhook pushes: the hub's.
        serde_json::from_value(hub::alerts::alert_json(a)).expect("the hub's alert shape")
    }
}

/// Your alerts in order (each device's in the order it raised them): after `after`, or by
/// default after the last one you acknowledged, so a reader that acknowledges what it has
/// handled gets everything at least once.
#[utoipa::path(get, path = "/v1/alerts", tag = "alerts", security(("bearer" = [])),
    params(("after" = Option<String>, Query), ("limit" = Option<String>, Query)),
    responses((status = 200, body = Vec<AlertDto>), (status = 400, body = Problem)))]
pub async fn list_alerts(
    State(st): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(q): ApiQuery<ResponsesQuery>,
) -> ApiResult<Json<Vec<AlertDto>>> {
    let (after, limit) = q.page(100, hub::alerts::ALERTS_PAGE_MAX)?;
    let after = q.after.is_some().then_some(after);
    let list = st.hub.alerts(&caller, after, limit).await?;
    Ok(Json(list.iter().map(AlertDto::from).collect()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// Everything up to and including this alert of yours is handled.
    pub up_to: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AckDto {
    /// Your acknowledged position: pulls without `after` and webhook pushes start after it.
    pub acked: i64,
}

/// Acknowledge your alerts up to one you received (never backwards).
#[utoipa::path(post, path = "/v1/alerts/ack", tag = "alerts", security(("bearer" = [])), request_body = AckRequest,
    responses((status = 200, body = AckDto), (status = 400, body = Problem)))]
pub async fn ack_alerts(
    State(st): State<AppState>,
    Auth(caller): Auth,
    ApiJson(req): ApiJson<AckRequest>,
) -> ApiResult<Json<AckDto>> {
    Ok(Json(AckDto { acked: st.hub.ack_alerts(&caller, req.up_to).await? }))
}

/// Your alerts as server-sent events (`event: alert`, `id:` its sequence number), from
/// `Last-Event-ID`, `after`, or your acknowledged position.
#[utoipa::path(get, path = "/v1/alerts/stream", tag = "alerts", security(("bearer" = [])),
    params(("after" = Option<String>, Query)),
    responses((status = 200, description = "text/event-stream of alerts"), (status = 503, body = Problem)))]
pub async fn stream_alerts(
    State(st): State<AppState>,
    Auth(caller): Auth,
    headers: axum::http::HeaderMap,
    ApiQuery(q): ApiQuery<ResponsesQuery>,
) -> ApiResult<axum::response::Response> {
    let acked = match (headers.contains_key("last-event-id"), q.after.is_some()) {
        (false, false) => st.hub.alerts_acked(&caller).await?,
        _ => 0,
    };
    let after = crate::stream::start(&headers, q.after.as_deref(), acked, "an alert")?;
    let hub = st.hub.clone();
    crate::stream::follow(&st, after, "alert", "/v1/alerts", move |cursor, wait| {
        let (hub, caller) = (hub.clone(), caller.clone());
        async move {
            hub.check_token(&caller).await?;
            let list = hub.next_alerts(&caller, cursor, wait).await?;
            Ok(list.iter().map(|a| (a.seq, serde_json::to_string(&AlertDto::from(a)).unwrap_or_default())).collect())
        }
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterDto {
    /// The alert (read it with `GET /v1/alerts?after=<alert_seq - 1>&limit=1`).
    pub alert_seq: i64,
    pub at: Timestamp,
    pub attempts: u32,
    pub reason: String,
}

/// Your alerts that your webhook failed to take, set aside so later ones could flow.
#[utoipa::path(get, path = "/v1/alerts/dead-letters", tag = "alerts", security(("bearer" = [])),
    params(("after" = Option<String>, Query), ("limit" = Option<String>, Query)),
    responses((status = 200, body = Vec<DeadLetterDto>)))]
pub async fn dead_letters(
    State(st): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(q): ApiQuery<ResponsesQuery>,
) -> ApiResult<Json<Vec<DeadLetterDto>>> {
    let (after, limit) = q.page(100, hub::alerts::ALERTS_PAGE_MAX)?;
    let list = st.hub.dead_letters(&caller, after, limit).await?;
    Ok(Json(
        list.iter()
            .map(|d| DeadLetterDto { alert_seq: d.alert_seq, at: d.at, attempts: d.attempts, reason: d.reason.clone() })
            .collect(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// Where your alerts are POSTed (JSON `{party, alerts: [...]}`), in order, from your
    /// acknowledged position; a 2xx answer acknowledges them.
    pub url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDto {
    pub url: String,
    /// Shown once, when set: pushes carry `x-meterhub-signature: t=<unix seconds>,v1=<hex>`,
    /// the HMAC-SHA256 of `<t>.<body>` under this secret (its text as bytes).
    pub secret: Option<String>,
    pub set_at: Timestamp,
    /// Failed tries of the batch at the head; at 8 it is dead-lettered.
    pub attempts: u32,
    pub next_at: Option<Timestamp>,
    pub last_error: Option<String>,
}

impl WebhookDto {
    fn of(w: &hub::Webhook) -> WebhookDto {
        WebhookDto {
            url: w.url.clone(),
            secret: (!w.secret.is_empty()).then(|| w.secret.clone()),
            set_at: w.set_at,
            attempts: w.attempts,
            next_at: w.next_at,
            last_error: w.last_error.clone(),
        }
    }
}

/// Set your webhook (a new secret each time).
#[utoipa::path(put, path = "/v1/webhook", tag = "alerts", security(("bearer" = [])), request_body = WebhookRequest,
    responses((status = 200, body = WebhookDto), (status = 400, body = Problem)))]
pub async fn set_webhook(
    State(st): State<AppState>,
    Auth(caller): Auth,
    ApiJson(req): ApiJson<WebhookRequest>,
) -> ApiResult<Json<WebhookDto>> {
    Ok(Json(WebhookDto::of(&st.hub.set_webhook(&caller, &req.url).await?)))
}

/// Your webhook and the state of its pushes.
#[utoipa::path(get, path = "/v1/webhook", tag = "alerts", security(("bearer" = [])),
    responses((status = 200, body = WebhookDto), (status = 404, body = Problem)))]
pub async fn get_webhook(State(st): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<WebhookDto>> {
    match st.hub.webhook(&caller).await? {
        Some(w) => Ok(Json(WebhookDto::of(&w))),
        None => Err(Problem::new(StatusCode::NOT_FOUND, "not-found", "No webhook", "you have set no webhook")),
    }
}

/// Stop pushing: alerts wait to be pulled.
#[utoipa::path(delete, path = "/v1/webhook", tag = "alerts", security(("bearer" = [])),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_webhook(State(st): State<AppState>, Auth(caller): Auth) -> ApiResult<StatusCode> {
    if st.hub.delete_webhook(&caller).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::new(StatusCode::NOT_FOUND, "not-found", "No webhook", "you have set no webhook"))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertRouteDto {
    /// `0x8F35`, `hub.quarantine`, or `*` (every code not listed).
    pub code: String,
    pub name: Option<String>,
    /// `registered-supplier`, `network-operator`, `consent-holders`, `hub-operator`,
    /// `party-concerned`; `none` filters the code.
    pub recipients: Vec<String>,
}

/// The alert dispatch table (hub operator).
#[utoipa::path(get, path = "/v1/alert-routes", tag = "alerts", security(("bearer" = [])),
    responses((status = 200, body = Vec<AlertRouteDto>), (status = 403, body = Problem)))]
pub async fn list_routes(State(st): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<Vec<AlertRouteDto>>> {
    let rows = st.hub.alert_routes(&caller).await?;
    let mut out: Vec<AlertRouteDto> = Vec::new();
    for (code, recipient) in rows {
        match out.last_mut() {
            Some(last) if last.code == code => last.recipients.push(recipient),
            _ => {
                let name =
                    domain::alerts::parse_code(&code).ok().and_then(domain::alerts::any_name).map(str::to_string);
                out.push(AlertRouteDto { code, name, recipients: vec![recipient] });
            }
        }
    }
    Ok(Json(out))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteRequest {
    /// Who gets this code from now on; empty: it follows `*`; `["none"]`: nobody.
    pub recipients: Vec<String>,
}

/// Set who gets one alert code (hub operator).
#[utoipa::path(put, path = "/v1/alert-routes/{code}", tag = "alerts", security(("bearer" = [])),
    params(("code" = String, Path)), request_body = RouteRequest,
    responses((status = 204), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn set_route(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(code): Path<String>,
    ApiJson(req): ApiJson<RouteRequest>,
) -> ApiResult<impl IntoResponse> {
    st.hub.set_alert_routes(&caller, &code, &req.recipients).await?;
    Ok(StatusCode::NO_CONTENT)
}
