//! Server-sent-event streams of a party's records in order (responses, alerts): resumed from
//! `Last-Event-ID` or `after`, bounded by the hub's stream limit, each event carrying its
//! sequence number as its id.

use std::future::Future;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};

use crate::AppState;
use crate::problem::{ApiResult, Problem};

/// How long one wait for new records lasts before the stream asks again.
const WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Where a stream starts: `Last-Event-ID`, else `after`, else `default`.
pub(crate) fn start(headers: &HeaderMap, after: Option<&str>, default: i64, what: &str) -> Result<i64, Problem> {
    let from_header = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::parse::<i64>);
    match (from_header, after) {
        (Some(Ok(seq)), _) => Ok(seq),
        (Some(Err(_)), _) => Err(Problem::bad_request("Last-Event-ID", format!("{what} sequence number"))),
        (None, Some(a)) => a.parse().map_err(|_| Problem::bad_request("after", "a whole number")),
        (None, None) => Ok(default),
    }
}

/// Follow records after `after`: `next(cursor, wait)` answers those after the cursor as
/// (sequence number, JSON), waiting up to `wait` for one; each becomes an `event` event.
/// `poll` names the pull route offered when the hub is at its stream limit.
pub(crate) fn follow<F, Fut>(
    st: &AppState,
    after: i64,
    event: &'static str,
    poll: &'static str,
    next: F,
) -> ApiResult<axum::response::Response>
where
    F: Fn(i64, std::time::Duration) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<(i64, String)>, hub::HubError>> + Send,
{
    let permit = st.streams.clone().try_acquire_owned().map_err(|_| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "Too many streams",
            format!("the hub is at its stream limit; poll {poll} instead"),
        )
    })?;
    let next = std::sync::Arc::new(next);
    let state = (next, after, std::collections::VecDeque::<(i64, String)>::new(), permit);
    let stream = futures::stream::unfold(state, move |(next, mut cursor, mut buf, permit)| async move {
        loop {
            if let Some((seq, data)) = buf.pop_front() {
                cursor = seq;
                let e = Event::default().event(event).id(seq.to_string()).data(data);
                return Some((Ok::<Event, std::convert::Infallible>(e), (next, cursor, buf, permit)));
            }
            match next(cursor, WAIT).await {
                Ok(items) => buf.extend(items),
                Err(e) => {
                    tracing::warn!(message = "Stream ended.", event, error = %e);
                    return None;
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}
