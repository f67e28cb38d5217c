//! Prepayment for payment service providers: look up a customer identifier, take a top-up,
//! follow it to the meter (R-PAY-1..3).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::dto::ResponseDto;
use crate::extract::{ApiJson, Auth};
use crate::problem::{ApiResult, Problem};

#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerDto {
    /// As printed on cards: groups of four digits.
    pub customer_id: String,
    pub mpxn: String,
    pub fuel: String,
    /// The registered supplier now.
    pub supplier: String,
    /// `credit` or `prepayment`, as registered.
    pub payment_mode: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUpRequest {
    /// The customer identifier from the card or key (spaces allowed).
    pub customer_id: String,
    /// Pence, 1 to 25,000; above 8,191 in whole pounds.
    pub amount_pence: i64,
    /// Your own reference for the payment; the same reference again returns the same top-up.
    pub payment_reference: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TopUpDto {
    pub payment_reference: String,
    pub customer_id: String,
    pub mpxn: String,
    pub supplier: String,
    /// The meter it is for.
    pub meter: String,
    pub amount_pence: u64,
    /// The 20-digit GBCS UTRN: give it to the payer, who can type it on the meter.
    pub utrn: String,
    /// The UTRN counter, hex.
    pub counter: String,
    /// The SRV 2.2 request that carries the UTRN to the meter.
    pub request_id: String,
    pub at: Timestamp,
    /// `queued` until the meter has answered, then `completed`.
    pub delivery: Option<String>,
    /// The meter's answer (credited pence and balance, or why it refused).
    pub meter_response: Option<ResponseDto>,
}

impl TopUpDto {
    fn new(t: &hub::TopUpRecord, delivery: Option<(&hub::RequestRecord, Option<&hub::ResponseRecord>)>) -> TopUpDto {
        TopUpDto {
            payment_reference: t.payment_reference.clone(),
            customer_id: t.customer_id.clone(),
            mpxn: t.mpxn.to_string(),
            supplier: t.supplier.to_string(),
            meter: t.meter.to_string(),
            amount_pence: t.amount_pence,
            utrn: t.utrn.clone(),
            counter: format!("{:#x}", t.counter),
            request_id: t.request_id.clone(),
            at: t.at,
            delivery: delivery.map(|(r, _)| r.status.as_str().to_string()),
            meter_response: delivery.and_then(|(_, resp)| resp.map(ResponseDto::from)),
        }
    }
}

/// Look up a customer identifier: its metering point and registered supplier (R-PAY-1).
#[utoipa::path(get, path = "/v1/customers/{customer_id}", tag = "payments", security(("bearer" = [])),
    params(("customer_id" = String, Path)),
    responses((status = 200, body = CustomerDto), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get_customer(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<CustomerDto>> {
    let v = st.hub.customer(&caller, &id).await?;
    Ok(Json(CustomerDto {
        customer_id: v.customer_id.to_string(),
        mpxn: v.mpxn.to_string(),
        fuel: v.mpxn.fuel().as_str().to_string(),
        supplier: v.supplier.to_string(),
        payment_mode: v.payment_mode.map(|p| p.to_string()),
    }))
}

/// Take a top-up: the hub finds the supplier, applies its rules, makes the UTRN and sends it
/// to the meter (SRV 2.2). 201 for a new top-up; 200 with the same top-up when the payment
/// reference was seen before (never a second credit).
#[utoipa::path(post, path = "/v1/top-ups", tag = "payments", security(("bearer" = [])), request_body = TopUpRequest,
    responses((status = 201, body = TopUpDto), (status = 200, body = TopUpDto), (status = 400, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub async fn create_top_up(
    State(st): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<TopUpRequest>,
) -> ApiResult<(StatusCode, Json<TopUpDto>)> {
    let input = hub::prepayment::TopUpInput {
        customer_id: body.customer_id,
        amount_pence: body.amount_pence,
        payment_reference: body.payment_reference,
    };
    let (t, new) = st.hub.top_up(&caller, &input).await?;
    let (_, request, response) = st.hub.top_up_status(&caller, &t.payment_reference).await?;
    let status = if new { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(TopUpDto::new(&t, Some((&request, response.as_ref()))))))
}

/// A top-up of yours and what the meter answered.
#[utoipa::path(get, path = "/v1/top-ups/{payment_reference}", tag = "payments", security(("bearer" = [])),
    params(("payment_reference" = String, Path)),
    responses((status = 200, body = TopUpDto), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get_top_up(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(reference): Path<String>,
) -> ApiResult<Json<TopUpDto>> {
    let (t, request, response) = st.hub.top_up_status(&caller, &reference).await?;
    Ok(Json(TopUpDto::new(&t, Some((&request, response.as_ref())))))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentEndpointRequest {
    /// `http://...`; the hub POSTs each top-up for your metering points here first.
    pub url: String,
    /// How long the hub waits for your answer (100 to 30,000 ms, default 5,000); no answer in
    /// time refuses the top-up.
    #[serde(default)]
    pub timeout_ms: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentEndpointDto {
    pub url: Option<String>,
    pub timeout_ms: Option<u32>,
}

fn endpoint_dto(e: Option<(String, u32)>) -> PaymentEndpointDto {
    PaymentEndpointDto { url: e.as_ref().map(|(u, _)| u.clone()), timeout_ms: e.map(|(_, t)| t) }
}

/// Your top-up confirmation endpoint (suppliers). The hub sends `POST` JSON `{customer_id,
/// mpxn, payment_mode, amount_pence, payment_reference, payment_service_provider}` and
/// expects HTTP 200 with `{"accepted": true}` or `{"accepted": false, "reason": "..."}`.
/// Without an endpoint the hub's stored rules decide (prepayment mode, at most £250).
#[utoipa::path(get, path = "/v1/payment-endpoint", tag = "payments", security(("bearer" = [])),
    responses((status = 200, body = PaymentEndpointDto), (status = 403, body = Problem)))]
pub async fn get_payment_endpoint(
    State(st): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<Json<PaymentEndpointDto>> {
    Ok(Json(endpoint_dto(st.hub.payment_endpoint(&caller).await?)))
}

/// Register or replace your top-up confirmation endpoint.
#[utoipa::path(put, path = "/v1/payment-endpoint", tag = "payments", security(("bearer" = [])),
    request_body = PaymentEndpointRequest,
    responses((status = 200, body = PaymentEndpointDto), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn set_payment_endpoint(
    State(st): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<PaymentEndpointRequest>,
) -> ApiResult<Json<PaymentEndpointDto>> {
    Ok(Json(endpoint_dto(st.hub.set_payment_endpoint(&caller, Some((&body.url, body.timeout_ms))).await?)))
}

/// Remove your endpoint: the hub's stored rules decide again.
#[utoipa::path(delete, path = "/v1/payment-endpoint", tag = "payments", security(("bearer" = [])),
    responses((status = 200, body = PaymentEndpointDto), (status = 403, body = Problem)))]
pub async fn remove_payment_endpoint(
    State(st): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<Json<PaymentEndpointDto>> {
    Ok(Json(endpoint_dto(st.hub.set_payment_endpoint(&caller, None).await?)))
}
