//! Firmware: images uploaded by manufacturers, campaigns run by suppliers (R-FLT-3, R-FLT-4).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::extract::{ApiJson, Auth};
use crate::problem::{ApiResult, Problem};

/// Largest upload body: a 10,240,000-byte image in base64 with its manifest.
pub const FIRMWARE_BODY_MAX: usize = 14 << 20;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageRequest {
    /// `{image_hash, layer: core|application, version (1-8 chars), device_kind, supplier
    /// (application: the supplier's originator EUI; core: null), urgency: security|routine}`.
    #[schema(value_type = Object)]
    pub manifest: serde_json::Value,
    /// Your ECDSA P-256 signature (DER) over the manifest's signed bytes:
    /// `meterhub-firmware-v1\n<image_hash>\n<layer>\n<version>\n<device_kind>\n<supplier or ->\n<urgency>\n`.
    pub signature_base64: String,
    /// The image, at most 10,240,000 bytes.
    pub image_base64: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImageDto {
    pub image_hash: String,
    pub manufacturer: String,
    #[schema(value_type = Object)]
    pub manifest: serde_json::Value,
    pub size: u64,
    pub uploaded_at: Timestamp,
}

impl From<&hub::FirmwareImage> for ImageDto {
    fn from(i: &hub::FirmwareImage) -> Self {
        ImageDto {
            image_hash: i.hash.clone(),
            manufacturer: i.manufacturer.to_string(),
            manifest: serde_json::from_str(&i.manifest).unwrap_or_default(),
            size: i.size,
            uploaded_at: i.uploaded_at,
        }
    }
}

/// Upload a firmware image, signed by you, the manufacturer. The hub checks the signature
/// and the hash; each device checks them again before holding it.
#[utoipa::path(post, path = "/v1/firmware", tag = "firmware", security(("bearer" = [])), request_body = ImageRequest,
    responses((status = 201, body = ImageDto), (status = 400, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem)))]
pub async fn upload(
    State(st): State<AppState>,
    Auth(caller): Auth,
    ApiJson(req): ApiJson<ImageRequest>,
) -> ApiResult<(StatusCode, Json<ImageDto>)> {
    let input = hub::firmware::ImageInput {
        manifest: req.manifest,
        signature_base64: req.signature_base64,
        image_base64: req.image_base64,
    };
    let image = st.hub.upload_firmware(&caller, &input).await?;
    Ok((StatusCode::CREATED, Json(ImageDto::from(&image))))
}

/// Firmware images, newest first.
#[utoipa::path(get, path = "/v1/firmware", tag = "firmware", security(("bearer" = [])),
    responses((status = 200, body = Vec<ImageDto>), (status = 403, body = Problem)))]
pub async fn list(State(st): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<Vec<ImageDto>>> {
    Ok(Json(st.hub.firmware_images(&caller).await?.iter().map(ImageDto::from).collect()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignRequest {
    pub image_hash: String,
    /// Up to 50,000 devices, each yours to send SRV 11.1 to.
    pub devices: Vec<String>,
    /// Devices per wave (default: all at once for a security patch, 100 for a routine one).
    pub wave_size: Option<u32>,
    /// A wave failing on more than this share of its devices halts the campaign (default 0.1).
    pub failure_rate_max: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignDto {
    pub id: i64,
    pub party: String,
    pub image_hash: String,
    /// `security` campaigns go before `routine` ones.
    pub urgency: String,
    pub wave_size: u32,
    pub failure_rate_max: f64,
    /// `running`, `halted`, `completed`.
    pub state: String,
    pub waves_sent: u32,
    pub detail: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl From<&hub::CampaignRecord> for CampaignDto {
    fn from(c: &hub::CampaignRecord) -> Self {
        CampaignDto {
            id: c.seq,
            party: c.party.to_string(),
            image_hash: c.image_hash.clone(),
            urgency: c.urgency.clone(),
            wave_size: c.wave_size,
            failure_rate_max: c.failure_rate_max,
            state: c.state.clone(),
            waves_sent: c.waves_sent,
            detail: c.detail.clone(),
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignDeviceDto {
    pub device: String,
    pub wave: Option<u32>,
    /// Its SRV 11.1 request: follow it at `/v1/requests/{id}`.
    pub request_id: Option<String>,
    /// `received` (verified and held, alert 0x8F72), `refused` (0x8F1C ...), `failed`.
    pub outcome: Option<String>,
    pub detail: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignView {
    pub campaign: CampaignDto,
    pub devices: Vec<CampaignDeviceDto>,
}

/// Distribute an image to your devices (SRV 11.1), in waves. Activate it afterwards with
/// your signed SRV 11.3 `{"image_hash": ...}` per device.
#[utoipa::path(post, path = "/v1/firmware/campaigns", tag = "firmware", security(("bearer" = [])),
    request_body = CampaignRequest,
    responses((status = 201, body = CampaignDto), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn start_campaign(
    State(st): State<AppState>,
    Auth(caller): Auth,
    ApiJson(req): ApiJson<CampaignRequest>,
) -> ApiResult<(StatusCode, Json<CampaignDto>)> {
    let input = hub::firmware::CampaignInput {
        image_hash: req.image_hash,
        devices: req.devices,
        wave_size: req.wave_size,
        failure_rate_max: req.failure_rate_max,
    };
    let c = st.hub.start_campaign(&caller, &input).await?;
    Ok((StatusCode::CREATED, Json(CampaignDto::from(&c))))
}

/// Your campaigns (every one, for the hub operator), newest first.
#[utoipa::path(get, path = "/v1/firmware/campaigns", tag = "firmware", security(("bearer" = [])),
    responses((status = 200, body = Vec<CampaignDto>)))]
pub async fn list_campaigns(State(st): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<Vec<CampaignDto>>> {
    Ok(Json(st.hub.campaigns(&caller).await?.iter().map(CampaignDto::from).collect()))
}

/// Cancel a running campaign: devices not yet sent are never sent.
#[utoipa::path(post, path = "/v1/firmware/campaigns/{id}/cancel", tag = "firmware", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = CampaignDto), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn cancel_campaign(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<CampaignDto>> {
    let id: i64 = id.parse().map_err(|_| Problem::bad_request("id", "a whole number"))?;
    Ok(Json(CampaignDto::from(&st.hub.cancel_campaign(&caller, id).await?)))
}

/// A campaign with each device's wave and outcome.
#[utoipa::path(get, path = "/v1/firmware/campaigns/{id}", tag = "firmware", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = CampaignView), (status = 404, body = Problem)))]
pub async fn get_campaign(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<CampaignView>> {
    let id: i64 = id.parse().map_err(|_| Problem::bad_request("id", "a whole number"))?;
    let (c, devices) = st.hub.campaign(&caller, id).await?;
    Ok(Json(CampaignView {
        campaign: CampaignDto::from(&c),
        devices: devices
            .iter()
            .map(|d| CampaignDeviceDto {
                device: d.device.to_string(),
                wave: d.wave,
                request_id: d.request_id.clone(),
                outcome: d.outcome.clone(),
                detail: d.detail.clone(),
            })
            .collect(),
    }))
}
