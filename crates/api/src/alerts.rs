//! Device alerts addressed to the caller (R-PM-5 confirmations, prepayment alerts ...).

use axum::Json;
use axum::extract::State;
use jiff::Timestamp;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::dto::ResponsesQuery;
use crate::extract::{ApiQuery, Auth};
use crate::problem::{ApiResult, Problem};

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertDto {
    /// Order among your alerts: pass the last one seen as `after`.
    pub seq: i64,
    /// When the device raised it.
    pub at: Timestamp,
    pub device: String,
    pub mpxn: Option<String>,
    /// GBCS alert code, e.g. `0x8F66`.
    pub code: String,
    /// Its GBCS name.
    pub name: Option<String>,
    pub detail: String,
    /// More (a held change's result carries its request id, the register reading and the
    /// product in force).
    #[schema(value_type = Object)]
    pub data: Option<serde_json::Value>,
    pub received_at: Timestamp,
}

/// Your device alerts after a sequence number, in order (each device's in the order it
/// raised them).
#[utoipa::path(get, path = "/v1/alerts", tag = "alerts", security(("bearer" = [])),
    params(("after" = Option<String>, Query), ("limit" = Option<String>, Query)),
    responses((status = 200, body = Vec<AlertDto>), (status = 400, body = Problem)))]
pub async fn list_alerts(
    State(st): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(q): ApiQuery<ResponsesQuery>,
) -> ApiResult<Json<Vec<AlertDto>>> {
    let (after, limit) = q.page(100, hub::alerts::ALERTS_PAGE_MAX)?;
    let list = st.hub.alerts(&caller, after, limit).await?;
    Ok(Json(
        list.iter()
            .map(|a| AlertDto {
                seq: a.seq,
                at: a.at,
                device: a.device.to_string(),
                mpxn: a.mpxn.map(|m| m.to_string()),
                code: format!("0x{:04X}", a.code),
                name: domain::alerts::name(a.code).map(str::to_string),
                detail: a.detail.clone(),
                data: a.data.as_deref().and_then(|d| serde_json::from_str(d).ok()),
                received_at: a.received_at,
            })
            .collect(),
    ))
}
