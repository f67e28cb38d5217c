//! Change of supplier, change of tenancy, and the hub's notices.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::dto::ResponsesQuery;
use crate::extract::{ApiJson, ApiQuery, Auth};
use crate::problem::{ApiResult, Problem};

fn id_path(s: &str) -> Result<i64, Problem> {
    s.parse().map_err(|_| Problem::bad_request("id", "a whole number"))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchRequest {
    /// The metering point to take over.
    pub mpxn: String,
    /// Electricity: the supply start date (YYYY-MM-DD, London), no earlier than the day the
    /// objection window closes and at most 28 days ahead. Gas takes none: a gas switch takes
    /// effect 7 days after the registration system confirms it.
    #[serde(default)]
    pub supply_start: Option<String>,
    /// Gas: the incoming supplier, when the shipper asking is not it.
    #[serde(default)]
    pub supplier: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SwitchEventDto {
    /// When the step happened (a window's own closing instant, however late it was noticed).
    pub at: Timestamp,
    pub recorded_at: Timestamp,
    /// `incoming`, `outgoing`, `registration-service` or `hub`.
    pub actor: String,
    pub party: Option<String>,
    pub event: String,
    pub from: Option<String>,
    pub to: String,
    pub detail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SwitchView {
    /// The switch: id, mpxn, process, stage, parties, deadline, switch instant, credentials
    /// and the definitive reading both suppliers get.
    #[schema(value_type = Object)]
    pub switch: serde_json::Value,
    pub events: Vec<SwitchEventDto>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActionResult {
    #[schema(value_type = Object)]
    pub switch: serde_json::Value,
    /// `false` when the action repeated one already taken (a registration system answering
    /// twice): nothing changed.
    pub changed: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SwitchesQuery {
    pub mpxn: Option<String>,
    /// At most this many (1 to 500, default 100).
    pub limit: Option<String>,
}

/// Ask to take over a metering point's supply (the incoming supplier; for gas the incoming
/// shipper). The outgoing supplier is told.
#[utoipa::path(post, path = "/v1/switches", tag = "switching", security(("bearer" = [])),
    request_body = SwitchRequest,
    responses((status = 201, body = Object), (status = 400, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn request_switch(
    State(st): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<SwitchRequest>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let input =
        hub::switching::SwitchInput { mpxn: body.mpxn, supply_start: body.supply_start, supplier: body.supplier };
    let s = st.hub.request_switch(&caller, &input).await?;
    Ok((StatusCode::CREATED, Json(hub::switching::switch_json(&s))))
}

/// Switches you are part of (every one for the registration service and the hub
/// operator), newest first.
#[utoipa::path(get, path = "/v1/switches", tag = "switching", security(("bearer" = [])),
    params(("mpxn" = Option<String>, Query), ("limit" = Option<String>, Query)),
    responses((status = 200, body = Vec<Object>), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn list_switches(
    State(st): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(q): ApiQuery<SwitchesQuery>,
) -> ApiResult<Json<Vec<serde_json::Value>>> {
    let limit = crate::dto::parse_limit(q.limit.as_deref(), 100, hub::switching::SWITCHES_PAGE_MAX)?;
    let list = st.hub.switches(&caller, q.mpxn.as_deref(), limit).await?;
    Ok(Json(list.iter().map(hub::switching::switch_json).collect()))
}

/// A switch and every step it took.
#[utoipa::path(get, path = "/v1/switches/{id}", tag = "switching", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = SwitchView), (status = 404, body = Problem)))]
pub async fn get_switch(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<SwitchView>> {
    let (s, events) = st.hub.switch_view(&caller, id_path(&id)?).await?;
    Ok(Json(SwitchView {
        switch: hub::switching::switch_json(&s),
        events: events
            .into_iter()
            .map(|e| SwitchEventDto {
                at: e.at,
                recorded_at: e.recorded_at,
                actor: e.actor,
                party: e.party.map(|p| p.to_string()),
                event: e.event,
                from: e.from.map(|s| s.as_str().to_string()),
                to: e.to.as_str().to_string(),
                detail: e.detail,
            })
            .collect(),
    }))
}

/// Act on a switch: `object` and `withdraw-objection` (the outgoing supplier, electricity),
/// `cancel` (the incoming party, until confirmed), `offer` and `confirm` (the registration
/// system, gas; a repeated answer changes nothing), `accept-offer` (the incoming shipper,
/// large gas supply points).
#[utoipa::path(post, path = "/v1/switches/{id}/{action}", tag = "switching", security(("bearer" = [])),
    params(("id" = i64, Path), ("action" = String, Path)),
    responses((status = 200, body = ActionResult), (status = 400, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn act_on_switch(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<Json<ActionResult>> {
    let (s, changed) = st.hub.act_on_switch(&caller, id_path(&id)?, &action).await?;
    Ok(Json(ActionResult { switch: hub::switching::switch_json(&s), changed }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenancyRequest {
    /// When the new tenancy starts (RFC 3339 or a date); not in the past.
    pub tenancy_from: String,
    /// The outgoing tenant agreed to share its consumption history with the new tenant.
    #[serde(default)]
    pub share_history: bool,
    /// How that consent was given (required when sharing), kept for audit.
    #[serde(default)]
    pub consent_note: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenancyDto {
    pub seq: i64,
    pub mpxn: String,
    pub tenancy_from: Timestamp,
    pub history_shared: bool,
    pub consent_note: Option<String>,
    pub notified_by: String,
    pub recorded_at: Timestamp,
    /// SRV 3.2 to the meter: the hub holds it until the tenancy date and tries again until
    /// the meter has it (empty when no meter is linked).
    pub restriction: Vec<DeliveryDto>,
}

/// A command the hub gets to a device on a party's behalf, trying again until it is answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryDto {
    pub srv: String,
    pub device: String,
    /// `pending`, `delivered`, `refused` (by the device: final) or `failed` (given up).
    pub state: String,
    pub attempts: u32,
    /// The current (or last) try: follow it at `/v1/requests/{id}`.
    pub request_id: String,
    pub detail: Option<String>,
    /// When the hub looks at it next (while pending).
    pub next_look_at: Option<Timestamp>,
}

impl From<&hub::DeliveryRecord> for DeliveryDto {
    fn from(d: &hub::DeliveryRecord) -> Self {
        DeliveryDto {
            srv: d.srv.clone(),
            device: d.target.to_string(),
            state: d.state.as_str().into(),
            attempts: d.attempts,
            request_id: d.request_id.clone(),
            detail: d.detail.clone(),
            next_look_at: d.due_at,
        }
    }
}

impl TenancyDto {
    fn of(t: &hub::TenancyRecord, deliveries: &[hub::DeliveryRecord]) -> Self {
        TenancyDto {
            restriction: deliveries.iter().map(DeliveryDto::from).collect(),
            seq: t.seq,
            mpxn: t.mpxn.to_string(),
            tenancy_from: t.tenancy_from,
            history_shared: t.history_shared,
            consent_note: t.consent_note.clone(),
            notified_by: t.notified_by.to_string(),
            recorded_at: t.recorded_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenancyNotified {
    pub tenancy: TenancyDto,
    /// The other users whose consent ends at the tenancy date; each got a notice.
    pub consents_ended_for: Vec<String>,
    /// The SRV 3.2 request the hub holds until the tenancy date, or why there is none.
    pub restriction: Option<String>,
}

/// The registered supplier notifies a change of tenancy (R-COT-1, R-COT-4).
#[utoipa::path(post, path = "/v1/metering-points/{mpxn}/change-of-tenancy", tag = "switching", security(("bearer" = [])),
    params(("mpxn" = String, Path)), request_body = TenancyRequest,
    responses((status = 201, body = TenancyNotified), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn notify_tenancy(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(mpxn): Path<String>,
    ApiJson(body): ApiJson<TenancyRequest>,
) -> ApiResult<(StatusCode, Json<TenancyNotified>)> {
    let input = hub::tenancy::TenancyInput {
        tenancy_from: body.tenancy_from,
        share_history: body.share_history,
        consent_note: body.consent_note,
    };
    let n = st.hub.notify_change_of_tenancy(&caller, &mpxn, &input).await?;
    Ok((
        StatusCode::CREATED,
        Json(TenancyNotified {
            tenancy: TenancyDto::of(&n.tenancy, &n.deliveries),
            consents_ended_for: n.consents_ended_for.iter().map(ToString::to_string).collect(),
            restriction: n.restriction,
        }),
    ))
}

/// A metering point's changes of tenancy, with the history-sharing consents.
#[utoipa::path(get, path = "/v1/metering-points/{mpxn}/tenancies", tag = "switching", security(("bearer" = [])),
    params(("mpxn" = String, Path)),
    responses((status = 200, body = Vec<TenancyDto>), (status = 403, body = Problem)))]
pub async fn list_tenancies(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(mpxn): Path<String>,
) -> ApiResult<Json<Vec<TenancyDto>>> {
    let list = st.hub.tenancies(&caller, &mpxn).await?;
    Ok(Json(list.iter().map(|(t, d)| TenancyDto::of(t, d)).collect()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NoticeDto {
    /// Order among your notices: pass the last one seen as `after`.
    pub seq: i64,
    /// `change-of-tenancy`, `switch-requested`, `switch-objected`, `switch-confirmed`,
    /// `switch-withdrawn`, `switch-completing`, `switch-completed`, ...
    pub code: String,
    pub mpxn: Option<String>,
    pub at: Timestamp,
    pub detail: String,
    #[schema(value_type = Object)]
    pub data: Option<serde_json::Value>,
    pub recorded_at: Timestamp,
}

/// The hub's notices to you, in order.
#[utoipa::path(get, path = "/v1/notices", tag = "switching", security(("bearer" = [])),
    params(("after" = Option<String>, Query), ("limit" = Option<String>, Query)),
    responses((status = 200, body = Vec<NoticeDto>), (status = 400, body = Problem)))]
pub async fn list_notices(
    State(st): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(q): ApiQuery<ResponsesQuery>,
) -> ApiResult<Json<Vec<NoticeDto>>> {
    let (after, limit) = q.page(100, 1000)?;
    let list = st.hub.notices(&caller, after, limit).await?;
    Ok(Json(
        list.into_iter()
            .map(|n| NoticeDto {
                seq: n.seq,
                code: n.code,
                mpxn: n.mpxn.map(|m| m.to_string()),
                at: n.at,
                detail: n.detail,
                data: n.data.as_deref().and_then(|d| serde_json::from_str(d).ok()),
                recorded_at: n.recorded_at,
            })
            .collect(),
    ))
}
