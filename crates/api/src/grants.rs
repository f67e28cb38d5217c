//! Consents (other users) and appointments (agents) per metering point.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::extract::{ApiJson, Auth};
use crate::problem::{ApiResult, Problem};

fn seq_path(s: &str) -> Result<i64, Problem> {
    s.parse().map_err(|_| Problem::bad_request("seq", "a whole number"))
}

/// A consent or an appointment: a period in which a party stands in a relationship to a
/// metering point. Ended ones are kept, with who ended them and why.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantDto {
    pub seq: i64,
    /// `consent` or `appointment`.
    pub kind: String,
    pub mpxn: String,
    /// The other user (consent) or the agent (appointment).
    pub party: String,
    /// The supplier an agent acts for.
    pub appointer: Option<String>,
    pub from: Timestamp,
    /// Exclusive end; absent while open-ended.
    pub to: Option<Timestamp>,
    pub recorded_at: Timestamp,
    pub recorded_by: String,
    pub ended_at: Option<Timestamp>,
    pub ended_by: Option<String>,
    pub end_reason: Option<String>,
}

impl From<&hub::GrantRecord> for GrantDto {
    fn from(g: &hub::GrantRecord) -> Self {
        GrantDto {
            seq: g.seq,
            kind: g.kind.as_str().into(),
            mpxn: g.mpxn.to_string(),
            party: g.party.to_string(),
            appointer: g.appointer.as_ref().map(|a| a.to_string()),
            from: g.valid_from,
            to: g.valid_to,
            recorded_at: g.recorded_at,
            recorded_by: g.recorded_by.to_string(),
            ended_at: g.ended_at,
            ended_by: g.ended_by.as_ref().map(|p| p.to_string()),
            end_reason: g.end_reason.clone(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentRequest {
    /// Start (RFC 3339 or date); default now; never in the past.
    #[serde(default)]
    pub from: Option<String>,
    /// Exclusive end; default open-ended.
    #[serde(default)]
    pub to: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppointmentRequest {
    /// The agent's party id (it holds RSA or MAP).
    pub agent: String,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndRequest {
    /// When it ends; default now; never in the past.
    #[serde(default)]
    pub at: Option<String>,
    /// Why, for the record (1 to 200 characters).
    pub reason: String,
}

/// An other user records the consumer's consent it holds for the metering point.
#[utoipa::path(post, path = "/v1/metering-points/{mpxn}/consents", tag = "registry", security(("bearer" = [])),
    params(("mpxn" = String, Path)), request_body = ConsentRequest,
    responses((status = 201, body = GrantDto), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn record_consent(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(mpxn): Path<String>,
    ApiJson(body): ApiJson<ConsentRequest>,
) -> ApiResult<(StatusCode, Json<GrantDto>)> {
    let g = st.hub.record_consent(&caller, &mpxn, body.from.as_deref(), body.to.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(GrantDto::from(&g))))
}

/// Consents recorded for the metering point: your own, or all as its registered supplier.
#[utoipa::path(get, path = "/v1/metering-points/{mpxn}/consents", tag = "registry", security(("bearer" = [])),
    params(("mpxn" = String, Path)),
    responses((status = 200, body = Vec<GrantDto>), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn list_consents(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(mpxn): Path<String>,
) -> ApiResult<Json<Vec<GrantDto>>> {
    let list = st.hub.list_grants(&caller, hub::GrantKind::Consent, &mpxn).await?;
    Ok(Json(list.iter().map(GrantDto::from).collect()))
}

/// End a consent: the other user itself, the registered supplier (change of tenancy), or the
/// hub operator.
#[utoipa::path(post, path = "/v1/metering-points/{mpxn}/consents/{seq}/end", tag = "registry", security(("bearer" = [])),
    params(("mpxn" = String, Path), ("seq" = i64, Path)), request_body = EndRequest,
    responses((status = 200, body = GrantDto), (status = 400, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn end_consent(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path((mpxn, seq)): Path<(String, String)>,
    ApiJson(body): ApiJson<EndRequest>,
) -> ApiResult<Json<GrantDto>> {
    let seq = seq_path(&seq)?;
    let g = st.hub.end_grant(&caller, hub::GrantKind::Consent, &mpxn, seq, body.at.as_deref(), &body.reason).await?;
    Ok(Json(GrantDto::from(&g)))
}

/// The registered supplier appoints an agent for the metering point.
#[utoipa::path(post, path = "/v1/metering-points/{mpxn}/appointments", tag = "registry", security(("bearer" = [])),
    params(("mpxn" = String, Path)), request_body = AppointmentRequest,
    responses((status = 201, body = GrantDto), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn appoint_agent(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(mpxn): Path<String>,
    ApiJson(body): ApiJson<AppointmentRequest>,
) -> ApiResult<(StatusCode, Json<GrantDto>)> {
    let g = st.hub.appoint_agent(&caller, &mpxn, &body.agent, body.from.as_deref(), body.to.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(GrantDto::from(&g))))
}

/// Appointments for the metering point: yours (as agent or appointer), or all as its
/// registered supplier.
#[utoipa::path(get, path = "/v1/metering-points/{mpxn}/appointments", tag = "registry", security(("bearer" = [])),
    params(("mpxn" = String, Path)),
    responses((status = 200, body = Vec<GrantDto>), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn list_appointments(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(mpxn): Path<String>,
) -> ApiResult<Json<Vec<GrantDto>>> {
    let list = st.hub.list_grants(&caller, hub::GrantKind::Appointment, &mpxn).await?;
    Ok(Json(list.iter().map(GrantDto::from).collect()))
}

/// End an appointment (its appointer, or the hub operator).
#[utoipa::path(post, path = "/v1/metering-points/{mpxn}/appointments/{seq}/end", tag = "registry", security(("bearer" = [])),
    params(("mpxn" = String, Path), ("seq" = i64, Path)), request_body = EndRequest,
    responses((status = 200, body = GrantDto), (status = 400, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn end_appointment(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path((mpxn, seq)): Path<(String, String)>,
    ApiJson(body): ApiJson<EndRequest>,
) -> ApiResult<Json<GrantDto>> {
    let seq = seq_path(&seq)?;
    let g =
        st.hub.end_grant(&caller, hub::GrantKind::Appointment, &mpxn, seq, body.at.as_deref(), &body.reason).await?;
    Ok(Json(GrantDto::from(&g)))
}
