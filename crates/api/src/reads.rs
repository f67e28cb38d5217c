//! Reads distribution (R-RD-1, R-RD-2): per-day read batches, forwarding a read to the
//! network operator (supplier hub principle), and a network operator's forwarded reads.

use axum::Json;
use axum::extract::{Path, State};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::dto::{ResponseDto, ResponsesQuery};
use crate::extract::{ApiJson, ApiQuery, Auth};
use crate::problem::{ApiResult, Problem};

/// A response to a read, with what it was a read of.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadDto {
    pub srv: String,
    /// Device EUI-64.
    pub target: String,
    pub mpxn: Option<String>,
    /// The schedule whose run this was (SRV 5.1), if any.
    pub schedule_id: Option<String>,
    /// The response exactly as streamed and listed at `/v1/responses`.
    pub response: ResponseDto,
}

impl From<&hub::ReadRecord> for ReadDto {
    fn from(r: &hub::ReadRecord) -> Self {
        ReadDto {
            srv: r.srv.clone(),
            target: r.target.to_string(),
            mpxn: r.mpxn.map(|m| m.to_string()),
            schedule_id: r.schedule_id.clone(),
            response: ResponseDto::from(&r.response),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadBatchDto {
    /// The London day, `YYYY-MM-DD`.
    pub day: String,
    /// The day's first instant (London midnight).
    pub from: Timestamp,
    /// The next day's first instant.
    pub to: Timestamp,
    pub reads: Vec<ReadDto>,
    /// Pass as `after` for the next page; absent when this page was the last.
    pub next_after: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardRequest {
    /// The recipient; default and only allowed value: the metering point's network operator
    /// when it was read.
    #[serde(default)]
    pub to: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ForwardDto {
    /// Order in the recipient's forwarded reads.
    pub seq: i64,
    pub request_id: String,
    pub from: String,
    pub to: String,
    pub at: Timestamp,
}

impl From<&hub::ForwardRecord> for ForwardDto {
    fn from(f: &hub::ForwardRecord) -> Self {
        ForwardDto {
            seq: f.seq,
            request_id: f.request_id.clone(),
            from: f.from.to_string(),
            to: f.to.to_string(),
            at: f.at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ForwardedReadDto {
    pub forward: ForwardDto,
    pub read: ReadDto,
}

/// The caller's reads (responses to 4.1.1, 4.8.1, 4.17, scheduled or on demand) recorded on
/// one London day: the same records the response stream delivered as they were collected.
#[utoipa::path(get, path = "/v1/reads/days/{day}", tag = "reads", security(("bearer" = [])),
    params(("day" = String, Path, description = "London day, YYYY-MM-DD"), ("after" = Option<String>, Query), ("limit" = Option<String>, Query)),
    responses((status = 200, body = ReadBatchDto), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn read_batch(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(day): Path<String>,
    ApiQuery(q): ApiQuery<ResponsesQuery>,
) -> ApiResult<Json<ReadBatchDto>> {
    let (after, limit) = q.page(hub::schedules::READS_PAGE_MAX, hub::schedules::READS_PAGE_MAX)?;
    let (from, to, reads) = st.hub.read_batch(&caller, &day, after, limit).await?;
    let next_after = if reads.len() == limit { reads.last().map(|r| r.response.seq) } else { None };
    Ok(Json(ReadBatchDto { day, from, to, reads: reads.iter().map(ReadDto::from).collect(), next_after }))
}

/// Forward one of your reads to the network operator of its metering point (supplier hub
/// principle). Forwarding the same read again returns the first forward.
#[utoipa::path(post, path = "/v1/reads/{request_id}/forward", tag = "reads", security(("bearer" = [])),
    params(("request_id" = String, Path)), request_body = ForwardRequest,
    responses((status = 200, body = ForwardDto), (status = 400, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn forward_read(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ForwardRequest>,
) -> ApiResult<Json<ForwardDto>> {
    let f = st.hub.forward_read(&caller, &id, body.to.as_deref()).await?;
    Ok(Json(ForwardDto::from(&f)))
}

/// Reads suppliers forwarded to you (a network operator), in order, after a sequence number.
#[utoipa::path(get, path = "/v1/reads/forwarded", tag = "reads", security(("bearer" = [])),
    params(("after" = Option<String>, Query), ("limit" = Option<String>, Query)),
    responses((status = 200, body = Vec<ForwardedReadDto>), (status = 403, body = Problem)))]
pub async fn forwarded_reads(
    State(st): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(q): ApiQuery<ResponsesQuery>,
) -> ApiResult<Json<Vec<ForwardedReadDto>>> {
    let (after, limit) = q.page(100, hub::schedules::READS_PAGE_MAX)?;
    let list = st.hub.forwarded_reads(&caller, after, limit).await?;
    Ok(Json(
        list.iter().map(|(f, r)| ForwardedReadDto { forward: ForwardDto::from(f), read: ReadDto::from(r) }).collect(),
    ))
}
