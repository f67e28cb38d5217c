//! Handlers. Each authenticates (the `Auth` extractor), checks its input, and calls the hub,
//! which authorises from the catalogue.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use domain::PartyId;
use domain::catalogue::CATALOGUE;

use crate::AppState;
use crate::dto::*;
use crate::extract::{ApiJson, ApiQuery, Auth};
use crate::problem::{ApiResult, Problem};

fn party_path(s: &str) -> Result<PartyId, Problem> {
    PartyId::parse(s).map_err(|e| Problem::bad_request("party_id", e.to_string()))
}

fn instant(field: &str, s: Option<&str>) -> Result<Option<jiff::Timestamp>, Problem> {
    s.map(|s| domain::time::parse_instant(s).map_err(|e| Problem::bad_request(field, e))).transpose()
}

/// Liveness and store readiness.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = HealthDto), (status = 503, body = Problem)))]
pub async fn healthz(State(st): State<AppState>) -> ApiResult<Json<HealthDto>> {
    st.hub.check_store().await?;
    Ok(Json(HealthDto {
        status: "ok".into(),
        now: st.hub.now(),
        simulated_clock: st.hub.is_simulated_clock(),
        version: env!("CARGO_PKG_VERSION").into(),
    }))
}

/// The caller's own party.
#[utoipa::path(get, path = "/v1/whoami", tag = "parties", security(("bearer" = [])),
    responses((status = 200, body = PartyDto), (status = 401, body = Problem)))]
pub async fn whoami(State(st): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<PartyDto>> {
    Ok(Json(PartyDto::from(&st.hub.whoami(&caller)?)))
}

/// The service catalogue: every DUIS SRV and hub service with its roles, relationships,
/// critical flag and future-date type. The same table authorises every request.
#[utoipa::path(get, path = "/v1/catalogue", tag = "catalogue", security(("bearer" = [])),
    responses((status = 200, body = Vec<ServiceDto>), (status = 401, body = Problem)))]
pub async fn catalogue(State(st): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<Vec<ServiceDto>>> {
    st.hub.authorize(&caller, "catalogue.read", None)?;
    Ok(Json(CATALOGUE.iter().map(ServiceDto::from).collect()))
}

fn clock_dto(st: &AppState) -> ClockDto {
    let now = st.hub.now();
    ClockDto {
        now,
        london: domain::time::in_london(now).strftime("%Y-%m-%d %H:%M:%S %Z").to_string(),
        simulated: st.hub.is_simulated_clock(),
    }
}

/// The hub's time.
#[utoipa::path(get, path = "/v1/clock", tag = "clock", security(("bearer" = [])),
    responses((status = 200, body = ClockDto), (status = 401, body = Problem)))]
pub async fn get_clock(State(st): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<ClockDto>> {
    st.hub.authorize(&caller, "clock.read", None)?;
    Ok(Json(clock_dto(&st)))
}

/// Move the simulated clock forward (hub operator; simulated clock only).
#[utoipa::path(post, path = "/v1/clock/advance", tag = "clock", security(("bearer" = [])),
    request_body = AdvanceClockRequest,
    responses((status = 200, body = ClockDto), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem)))]
pub async fn advance_clock(
    State(st): State<AppState>,
    Auth(caller): Auth,
    ApiJson(req): ApiJson<AdvanceClockRequest>,
) -> ApiResult<Json<ClockDto>> {
    st.hub.authorize(&caller, "clock.advance", None)?;
    let to = match (req.to.as_deref(), req.by.as_deref()) {
        (Some(to), None) => instant("to", Some(to))?.expect("given"),
        (None, Some(by)) => {
            let span: jiff::Span = by
                .parse()
                .map_err(|e| Problem::bad_request("by", format!("not an ISO 8601 duration such as PT30M, P1D: {e}")))?;
            domain::time::in_london(st.hub.now())
                .checked_add(span)
                .map_err(|e| Problem::bad_request("by", e.to_string()))?
                .timestamp()
        }
        _ => {
            return Err(Problem::bad_request("to", "give exactly one of `to` and `by`"));
        }
    };
    st.hub.advance_clock(&caller, to).await?;
    Ok(Json(clock_dto(&st)))
}

/// Every party (hub operator).
#[utoipa::path(get, path = "/v1/parties", tag = "parties", security(("bearer" = [])),
    responses((status = 200, body = Vec<PartyDto>), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list_parties(State(st): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<Vec<PartyDto>>> {
    Ok(Json(st.hub.parties(&caller).await?.iter().map(PartyDto::from).collect()))
}

/// Create a party (hub operator).
#[utoipa::path(post, path = "/v1/parties", tag = "parties", security(("bearer" = [])),
    request_body = CreatePartyRequest,
    responses((status = 201, body = PartyDto), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem)))]
pub async fn create_party(
    State(st): State<AppState>,
    Auth(caller): Auth,
    ApiJson(req): ApiJson<CreatePartyRequest>,
) -> ApiResult<impl IntoResponse> {
    let party = st.hub.create_party(&caller, &req.into()).await?;
    let location = format!("/v1/parties/{}", party.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(PartyDto::from(&party))))
}

/// One party: any party may read itself, the hub operator anyone.
#[utoipa::path(get, path = "/v1/parties/{party_id}", tag = "parties", security(("bearer" = [])),
    params(("party_id" = String, Path)),
    responses((status = 200, body = PartyDto), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
pub async fn get_party(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<PartyDto>> {
    Ok(Json(PartyDto::from(&st.hub.party(&caller, &party_path(&id)?).await?)))
}

/// A party's API tokens (never their secrets).
#[utoipa::path(get, path = "/v1/parties/{party_id}/tokens", tag = "parties", security(("bearer" = [])),
    params(("party_id" = String, Path)),
    responses((status = 200, body = Vec<TokenDto>), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
pub async fn list_tokens(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<TokenDto>>> {
    Ok(Json(st.hub.tokens(&caller, &party_path(&id)?).await?.iter().map(TokenDto::from).collect()))
}

/// Issue a token: a party for itself, the hub operator for anyone. The secret is in this
/// response only.
#[utoipa::path(post, path = "/v1/parties/{party_id}/tokens", tag = "parties", security(("bearer" = [])),
    params(("party_id" = String, Path)), request_body = IssueTokenRequest,
    responses((status = 201, body = IssuedTokenDto), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn issue_token(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<IssueTokenRequest>,
) -> ApiResult<impl IntoResponse> {
    let party = party_path(&id)?;
    let t = st.hub.issue_token(&caller, &party, req.label.as_deref().unwrap_or("")).await?;
    Ok((
        StatusCode::CREATED,
        Json(IssuedTokenDto { id: t.id, party: t.party.to_string(), label: t.label, token: t.token }),
    ))
}

/// Revoke a token; it stops working at once.
#[utoipa::path(delete, path = "/v1/parties/{party_id}/tokens/{token_id}", tag = "parties",
    security(("bearer" = [])), params(("party_id" = String, Path), ("token_id" = String, Path)),
    responses((status = 200, body = RevokedDto), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
pub async fn revoke_token(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path((id, token_id)): Path<(String, String)>,
) -> ApiResult<Json<RevokedDto>> {
    let revoked_now = st.hub.revoke_token(&caller, &party_path(&id)?, &token_id).await?;
    Ok(Json(RevokedDto { id: token_id, revoked_now }))
}

/// Record a registration version (registration service). Creates the metering point on
/// first use; earlier versions are never changed.
#[utoipa::path(post, path = "/v1/metering-points/{mpxn}/registrations", tag = "registry",
    security(("bearer" = [])), params(("mpxn" = String, Path, description = "MPAN core, full MPAN or MPRN")),
    request_body = RegistrationRequest,
    responses((status = 201, body = RegistrationDto), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem)))]
pub async fn record_registration(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(mpxn): Path<String>,
    ApiJson(req): ApiJson<RegistrationRequest>,
) -> ApiResult<impl IntoResponse> {
    let v = st.hub.record_registration(&caller, &mpxn, &req.into()).await?;
    Ok((StatusCode::CREATED, Json(RegistrationDto::from(&v))))
}

/// A metering point as at an instant (default now), optionally as known at another.
#[utoipa::path(get, path = "/v1/metering-points/{mpxn}", tag = "registry", security(("bearer" = [])),
    params(("mpxn" = String, Path, description = "MPAN core, full MPAN or MPRN"), AsAtQueryParams),
    responses((status = 200, body = MeteringPointDto), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get_metering_point(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(mpxn): Path<String>,
    ApiQuery(q): ApiQuery<AsAtQuery>,
) -> ApiResult<Json<MeteringPointDto>> {
    let at = instant("at", q.at.as_deref())?;
    let known_at = instant("known_at", q.known_at.as_deref())?;
    let view = st.hub.registry_view(&caller, &mpxn, at, known_at).await?;
    Ok(Json(MeteringPointDto::from(&view)))
}

/// Every registration and enrolment version ever recorded (registration service, operator).
#[utoipa::path(get, path = "/v1/metering-points/{mpxn}/history", tag = "registry", security(("bearer" = [])),
    params(("mpxn" = String, Path)),
    responses((status = 200, body = HistoryDto), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get_history(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(mpxn): Path<String>,
) -> ApiResult<Json<HistoryDto>> {
    let (regs, enrols) = st.hub.registry_history(&caller, &mpxn).await?;
    let m = st.hub.parse_mpxn("mpxn", &mpxn)?;
    Ok(Json(HistoryDto {
        mpxn: m.to_string(),
        fuel: m.fuel().to_string(),
        registrations: regs.iter().map(RegistrationDto::from).collect(),
        enrolments: enrols.iter().map(EnrolmentDto::from).collect(),
    }))
}

/// The as-at query parameters, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AsAtQueryParams {
    /// Instant (RFC 3339) or date; default now.
    at: Option<String>,
    /// Answer as the hub knew it at this instant.
    known_at: Option<String>,
}

fn decode_b64(field: &str, s: &str) -> Result<Vec<u8>, Problem> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| Problem::bad_request(field, format!("not base64: {e}")))
}

/// Fit devices at a new premises (the simulation's installer visit). The devices trust the
/// calling supplier's registered signing key for critical commands.
#[utoipa::path(post, path = "/v1/premises", tag = "devices", security(("bearer" = [])), request_body = InstallRequest,
    responses((status = 201, body = PremisesDto), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem)))]
pub async fn install_premises(
    State(st): State<AppState>,
    Auth(caller): Auth,
    ApiJson(req): ApiJson<InstallRequest>,
) -> ApiResult<impl IntoResponse> {
    let input = hub::inventory::InstallInput {
        electricity: req.electricity,
        gas_annual_quantity_kwh: req.gas_annual_quantity_kwh,
        ihd: req.ihd,
        ppmid: req.ppmid,
        additional: req.additional,
        manufacturer: req.manufacturer,
    };
    let (p, devices) = st.hub.install_premises(&caller, &input).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v1/premises/{}", p.id))],
        Json(PremisesDto::new(&p, &devices)),
    ))
}

/// A premises and its devices as the inventory knows them.
#[utoipa::path(get, path = "/v1/premises/{premises_id}", tag = "devices", security(("bearer" = [])),
    params(("premises_id" = i64, Path)),
    responses((status = 200, body = PremisesDto), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
pub async fn get_premises(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<PremisesDto>> {
    let id: i64 = id.parse().map_err(|_| Problem::bad_request("premises_id", "a whole number"))?;
    let (p, devices) = st.hub.premises_view(&caller, id).await?;
    Ok(Json(PremisesDto::new(&p, &devices)))
}

/// A device to fit at an installed premises.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FitRequest {
    /// `in-home-display`, `ppmid` or `additional` (e.g. a generation meter).
    pub kind: String,
}

/// Fit one more device at a premises (an installer's visit: a replacement in-home display, a
/// generation meter). It is on no HAN until you add it to the comms hub's log (SRV 8.11) and
/// join it to a meter (SRV 8.7.1 for a PPMID or additional device, 8.7.2 for a display).
#[utoipa::path(post, path = "/v1/premises/{premises_id}/devices", tag = "devices", security(("bearer" = [])),
    params(("premises_id" = i64, Path)), request_body = FitRequest,
    responses((status = 201, body = DeviceDto), (status = 400, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
pub async fn fit_device(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<FitRequest>,
) -> ApiResult<(StatusCode, Json<DeviceDto>)> {
    let id: i64 = id.parse().map_err(|_| Problem::bad_request("premises_id", "a whole number"))?;
    let d = st.hub.fit_device(&caller, id, &req.kind).await?;
    Ok((StatusCode::CREATED, Json(DeviceDto::from(&d))))
}

/// Submit a service request. The answer is an acknowledgement with the request id; the
/// device's response follows (fetch it, wait for it, or pull the response list). A critical
/// SRV waits in `awaiting-signature` until you sign `precommand_base64`. When the hub already
/// holds its limit of requests waiting for their devices (`--admitted-max`), the call waits
/// up to 10 s for room and then answers 503 with `Retry-After`: nothing was recorded.
#[utoipa::path(post, path = "/v1/requests", tag = "requests", security(("bearer" = [])), request_body = SubmitRequest,
    responses((status = 202, body = RequestDto), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 501, body = Problem), (status = 503, body = Problem)))]
pub async fn submit_request(
    State(st): State<AppState>,
    Auth(caller): Auth,
    ApiJson(req): ApiJson<SubmitRequest>,
) -> ApiResult<impl IntoResponse> {
    let target = match (req.target.mpxn, req.target.device) {
        (Some(m), None) => hub::pipeline::Target::Mpxn(m),
        (None, Some(d)) => hub::pipeline::Target::Device(d),
        _ => return Err(Problem::bad_request("target", "give exactly one of `mpxn` and `device`")),
    };
    let input = hub::pipeline::SubmitInput { srv: req.srv, target, body: req.body, execute_at: req.execute_at };
    let r = st.hub.submit(&caller, &input).await?;
    let location = format!("/v1/requests/{}", r.id);
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(RequestDto::new(&r, None))))
}

/// A request and its response; `?wait=N` waits up to N seconds (at most 25) for the response.
#[utoipa::path(get, path = "/v1/requests/{request_id}", tag = "requests", security(("bearer" = [])),
    params(("request_id" = String, Path), ("wait" = Option<u64>, Query)),
    responses((status = 200, body = RequestDto), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn get_request(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> ApiResult<Json<RequestDto>> {
    let wait = match q.wait.as_deref() {
        None => 0,
        Some(w) => w.parse::<u64>().ok().filter(|w| *w <= hub::pipeline::WAIT_SECONDS_MAX).ok_or_else(|| {
            Problem::bad_request("wait", format!("whole seconds, 0 to {}", hub::pipeline::WAIT_SECONDS_MAX))
        })?,
    };
    let (r, resp) = st.hub.wait_for_response(&caller, &id, std::time::Duration::from_secs(wait)).await?;
    Ok(Json(RequestDto::new(&r, resp.as_ref())))
}

/// Send the signature over a critical request's pre-command; the request is then queued.
/// The device, not the hub, verifies it. Like a submission it needs room among the requests
/// waiting for their devices: 503 with `Retry-After` if none came within 10 s (still unsigned).
#[utoipa::path(post, path = "/v1/requests/{request_id}/signature", tag = "requests", security(("bearer" = [])),
    params(("request_id" = String, Path)), request_body = SignatureRequest,
    responses((status = 202, body = RequestDto), (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 503, body = Problem)))]
pub async fn sign_request(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SignatureRequest>,
) -> ApiResult<impl IntoResponse> {
    let signature = decode_b64("signature_base64", &req.signature_base64)?;
    let r = st.hub.sign_request(&caller, &id, signature).await?;
    Ok((StatusCode::ACCEPTED, Json(RequestDto::new(&r, None))))
}

/// Cancel a request that has not run (future-dated, awaiting signature or queued).
#[utoipa::path(post, path = "/v1/requests/{request_id}/cancel", tag = "requests", security(("bearer" = [])),
    params(("request_id" = String, Path)),
    responses((status = 200, body = RequestDto), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn cancel_request(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<RequestDto>> {
    let r = st.hub.cancel_request(&caller, &id).await?;
    Ok(Json(RequestDto::new(&r, None)))
}

/// The request's audit trail: acceptance, every status change, the response.
#[utoipa::path(get, path = "/v1/requests/{request_id}/audit", tag = "requests", security(("bearer" = [])),
    params(("request_id" = String, Path)),
    responses((status = 200, body = Vec<AuditDto>), (status = 404, body = Problem)))]
pub async fn get_audit(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<AuditDto>>> {
    let trail = st.hub.audit_trail(&caller, &id).await?;
    Ok(Json(
        trail
            .iter()
            .map(|a| AuditDto {
                seq: a.seq,
                at: a.at,
                party: a.party.to_string(),
                event: a.event.clone(),
                detail: a.detail.clone(),
            })
            .collect(),
    ))
}

/// The caller's responses in order, after a sequence number: pull delivery.
#[utoipa::path(get, path = "/v1/responses", tag = "requests", security(("bearer" = [])),
    params(("after" = Option<i64>, Query), ("limit" = Option<usize>, Query)),
    responses((status = 200, body = Vec<ResponseDto>), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub async fn list_responses(
    State(st): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(q): ApiQuery<ResponsesQuery>,
) -> ApiResult<Json<Vec<ResponseDto>>> {
    let (after, limit) = q.page(100, 1000)?;
    let rs = st.hub.responses(&caller, after, limit).await?;
    Ok(Json(rs.iter().map(ResponseDto::from).collect()))
}

fn scope(s: &str) -> Result<bool, Problem> {
    match s {
        "hub" => Ok(true),
        "own" => Ok(false),
        _ => Err(Problem::bad_request("scope", "`own` (your thresholds) or `hub` (hub-wide, operator only)")),
    }
}

/// Release a quarantined request: it goes on to run (or to signing).
#[utoipa::path(post, path = "/v1/requests/{request_id}/release", tag = "requests", security(("bearer" = [])),
    params(("request_id" = String, Path)),
    responses((status = 200, body = RequestDto), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn release_request(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<RequestDto>> {
    Ok(Json(RequestDto::new(&st.hub.release_request(&caller, &id).await?, None)))
}

/// Delete a quarantined request: it never runs.
#[utoipa::path(post, path = "/v1/requests/{request_id}/delete", tag = "requests", security(("bearer" = [])),
    params(("request_id" = String, Path)),
    responses((status = 200, body = RequestDto), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn delete_request(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<RequestDto>> {
    Ok(Json(RequestDto::new(&st.hub.delete_request(&caller, &id).await?, None)))
}

/// The caller's quarantined requests, waiting for release or deletion.
#[utoipa::path(get, path = "/v1/quarantine", tag = "requests", security(("bearer" = [])),
    responses((status = 200, body = Vec<RequestDto>), (status = 401, body = Problem)))]
pub async fn list_quarantine(State(st): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<Vec<RequestDto>>> {
    Ok(Json(st.hub.quarantined(&caller).await?.iter().map(|r| RequestDto::new(r, None)).collect()))
}

/// Anomaly-detection thresholds: your own and the hub-wide ones.
#[utoipa::path(get, path = "/v1/anomaly-thresholds", tag = "requests", security(("bearer" = [])),
    responses((status = 200, body = Vec<ThresholdDto>), (status = 401, body = Problem)))]
pub async fn list_thresholds(State(st): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<Vec<ThresholdDto>>> {
    Ok(Json(st.hub.thresholds(&caller).await?.iter().map(ThresholdDto::from).collect()))
}

/// Set a threshold: `own` for yourself, `hub` for all parties together (operator). Requests
/// beyond it are quarantined (R-SR-5).
#[utoipa::path(put, path = "/v1/anomaly-thresholds/{scope}/{srv}", tag = "requests", security(("bearer" = [])),
    params(("scope" = String, Path, description = "own or hub"), ("srv" = String, Path)), request_body = ThresholdRequest,
    responses((status = 200, body = ThresholdDto), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn set_threshold(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path((sc, srv)): Path<(String, String)>,
    ApiJson(req): ApiJson<ThresholdRequest>,
) -> ApiResult<Json<ThresholdDto>> {
    let t = st.hub.set_threshold(&caller, scope(&sc)?, &srv, req.window_seconds, req.max_requests).await?;
    Ok(Json(ThresholdDto::from(&t)))
}

/// Remove a threshold.
#[utoipa::path(delete, path = "/v1/anomaly-thresholds/{scope}/{srv}", tag = "requests", security(("bearer" = [])),
    params(("scope" = String, Path), ("srv" = String, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn remove_threshold(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path((sc, srv)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    if st.hub.remove_threshold(&caller, scope(&sc)?, &srv).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!("no {sc} threshold for SRV {srv}")))
    }
}

/// The caller's responses as a stream of server-sent events (`event: response`, `id:` the
/// sequence number, `data:` the response as JSON). Reconnect with `Last-Event-ID` (or
/// `?after=`) to resume without losing or repeating one.
#[utoipa::path(get, path = "/v1/responses/stream", tag = "requests", security(("bearer" = [])),
    params(("after" = Option<i64>, Query)),
    responses((status = 200, description = "text/event-stream of ResponseDto"), (status = 401, body = Problem),
        (status = 503, body = Problem)))]
pub async fn stream_responses(
    State(st): State<AppState>,
    Auth(caller): Auth,
    headers: axum::http::HeaderMap,
    ApiQuery(q): ApiQuery<ResponsesQuery>,
) -> ApiResult<axum::response::Response> {
    st.hub.authorize(&caller, "request.read-own", None)?;
    let after = crate::stream::start(&headers, q.after.as_deref(), 0, "a response")?;
    let hub = st.hub.clone();
    crate::stream::follow(&st, after, "response", "/v1/responses", move |cursor, wait| {
        let (hub, caller) = (hub.clone(), caller.clone());
        async move {
            hub.check_token(&caller).await?;
            let list = hub.next_responses(&caller, cursor, wait).await?;
            Ok(list.iter().map(|r| (r.seq, serde_json::to_string(&ResponseDto::from(r)).unwrap_or_default())).collect())
        }
    })
}
