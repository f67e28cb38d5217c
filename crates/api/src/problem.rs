//! RFC 9457 problem details: every refusal the API gives is `application/problem+json` and
//! names the reason; 400s name the field and the rule, 403s what was missing.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hub::HubError;
use serde::Serialize;
use utoipa::ToSchema;

/// A problem detail. `type` is a stable URI reference per kind of problem.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// 400: the request field that broke a rule (JSON path, query parameter or path segment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// 400: the rule the field broke.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// 403: what the caller lacks, `role` or `relationship`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
    /// 403: the catalogue service that refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("/problems/{slug}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            rule: None,
            missing: None,
            service: None,
        }
    }

    pub fn bad_request(field: impl Into<String>, rule: impl Into<String>) -> Problem {
        let (field, rule) = (field.into(), rule.into());
        let mut p =
            Problem::new(StatusCode::BAD_REQUEST, "invalid-field", "A field broke a rule", format!("{field}: {rule}"));
        p.field = Some(field);
        p.rule = Some(rule);
        p
    }

    pub fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", "Authentication required", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let unauthorized = status == StatusCode::UNAUTHORIZED;
        let body = serde_json::to_vec(&self).expect("a problem serialises");
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if unauthorized {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"meterhub\""));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Busy, shutting down or a storage fault: nothing was applied, and a retry may work.
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

impl From<HubError> for Problem {
    fn from(e: HubError) -> Problem {
        match e {
            HubError::Unauthenticated(d) => Problem::unauthorized(d),
            HubError::Forbidden(refusal) => {
                let mut p = Problem::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "Not allowed by the service catalogue",
                    refusal.to_string(),
                );
                p.missing = Some(refusal.missing().to_string());
                p.service = Some(
                    match &*refusal {
                        domain::catalogue::Refusal::Role { service, .. }
                        | domain::catalogue::Refusal::Relationship { service, .. } => *service,
                    }
                    .to_string(),
                );
                p
            }
            HubError::Invalid { field, rule } => Problem::bad_request(field, rule),
            HubError::NotFound(d) => Problem::not_found(d),
            HubError::Conflict(d) => Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", d),
            HubError::Unsupported(d) => {
                Problem::new(StatusCode::NOT_IMPLEMENTED, "not-implemented", "Not executed by this hub yet", d)
            }
            HubError::Unavailable(d) => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable", d)
            }
        }
    }
}

/// What every handler returns.
pub type ApiResult<T> = Result<T, Problem>;
