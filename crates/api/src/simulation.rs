//! The simulation's consumer side, for the hub operator: what a home's in-home display
//! shows, and what the consumer does at the meter's keypad. A real hub has no such window
//! into homes; a simulated market needs one to tell its stories.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::extract::{ApiJson, Auth};
use crate::problem::{ApiResult, Problem};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeypadRequest {
    /// `utrn` (give `utrn`), `emergency-credit` or `restore-supply`.
    pub action: String,
    #[serde(default)]
    pub utrn: Option<String>,
}

/// What the in-home display at the device's premises shows: each meter's register, supply,
/// balance, debt and emergency credit, and any message.
#[utoipa::path(get, path = "/v1/simulation/devices/{eui}/display", tag = "simulation", security(("bearer" = [])),
    params(("eui" = String, Path)),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn display(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(eui): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(st.hub.simulated_display(&caller, &eui).await?))
}

/// The consumer acts at a meter's keypad: types a UTRN, takes emergency credit, or restores
/// an armed supply. The answer is the meter's.
#[utoipa::path(post, path = "/v1/simulation/devices/{eui}/keypad", tag = "simulation", security(("bearer" = [])),
    params(("eui" = String, Path)), request_body = KeypadRequest,
    responses((status = 200, body = Object), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn keypad(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(eui): Path<String>,
    ApiJson(body): ApiJson<KeypadRequest>,
) -> ApiResult<Json<serde_json::Value>> {
    use hub::transport::ConsumerAction;
    let action = match (body.action.as_str(), body.utrn) {
        ("utrn", Some(u)) => ConsumerAction::EnterUtrn(u),
        ("utrn", None) => return Err(Problem::bad_request("utrn", "required with action utrn")),
        ("emergency-credit", _) => ConsumerAction::EmergencyCredit,
        ("restore-supply", _) => ConsumerAction::RestoreSupply,
        _ => return Err(Problem::bad_request("action", "utrn, emergency-credit or restore-supply")),
    };
    let outcome = st.hub.simulated_consumer(&caller, &eui, action).await?;
    Ok(Json(serde_json::to_value(outcome).unwrap_or_default()))
}
