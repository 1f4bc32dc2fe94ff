//! Forwarding a request to the peer that has its model (see [`crate::fleet`]): the client's
//! body is sent unchanged, the answer (streamed or not) passed back unchanged, marked with the
//! node that gave it. A peer that cannot be reached, or says it cannot serve now, passes the
//! request to the next; one that dies mid-stream ends the stream with an error event.

use axum::body::{Body, Bytes};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use crate::fleet::{Fleet, HOP, NODE};
use crate::http::error::ApiError;

/// The fleet, for a request that may be forwarded: none when no peers are configured or the
/// request itself came from a peer (it is answered here or not at all).
pub struct Peers(pub Option<Arc<Fleet>>);

impl<S: Send + Sync> FromRequestParts<S> for Peers {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Peers, Infallible> {
        if parts.headers.contains_key(HOP) {
            return Ok(Peers(None));
        }
        Ok(Peers(parts.extensions.get::<Arc<Fleet>>().cloned()))
    }
}

/// `raw` (a JSON request) with `model` in place of the client's: a task chain's entry, which
/// the peer knows by that name.
fn with_model(raw: &Bytes, model: &str) -> Result<Bytes, ApiError> {
    let mut body: serde_json::Value =
        serde_json::from_slice(raw).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    body["model"] = serde_json::Value::String(model.to_string());
    Ok(Bytes::from(body.to_string()))
}

/// A task chain's peer candidate `model`: `raw` sent with that model to the best peer that has
/// it.
pub async fn forward_as(peers: Option<&Fleet>, path: &str, raw: &Bytes, model: &str) -> Result<Response, ApiError> {
    let Some(f) = peers else { return Err(ApiError::internal("a peer candidate without peers")) };
    let body = with_model(raw, model)?;
    forward(f, path, &body, model)
        .await
        .unwrap_or_else(|| Err(ApiError::unavailable(format!("no peer has {model} any more"), 5)))
}

/// Peers tried for one request at most.
pub const MAX_TRIES: usize = 3;
/// How long a peer may take to start answering: it may have to load the model first.
const HEADERS_TIMEOUT: Duration = Duration::from_secs(330);
/// How long a forwarded stream may go without a byte before it counts as broken.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Sends `raw` to `path` on the best peer that has model `name`; on to the next (at most
/// [`MAX_TRIES`] in all) only when a peer cannot be reached or says it cannot serve now (503),
/// never after a peer began the work: a request that crashed one worker is not tried on every
/// node. `None` when no peer has the model.
pub async fn forward(fleet: &Fleet, path: &str, raw: &Bytes, name: &str) -> Option<Result<Response, ApiError>> {
    let candidates = fleet.candidates(name);
    if candidates.is_empty() {
        return None;
    }
    let mut last: Result<Response, ApiError> = Err(ApiError::bad_gateway("no peer answered"));
    for url in candidates.into_iter().take(MAX_TRIES) {
        fleet.sending(&url);
        let mut req = fleet
            .client
            .post(format!("{url}{path}"))
            .header(HOP, "1")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(raw.clone());
        if let Some(k) = &fleet.cfg.key {
            req = req.bearer_auth(k);
        }
        let resp = match tokio::time::timeout(HEADERS_TIMEOUT, req.send()).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                fleet.record(&url, false);
                tracing::warn!(peer = %url, model = name, error = %e, "peer not reached; trying the next");
                last =
                    Err(ApiError::bad_gateway(format!("the node {url} that has model {name} cannot be reached: {e}")));
                continue;
            }
            Err(_) => {
                fleet.record(&url, false);
                let secs = HEADERS_TIMEOUT.as_secs();
                return Some(Err(ApiError::bad_gateway(format!("the node {url} did not answer within {secs} s"))));
            }
        };
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            // The client's key was fine here: it is this node's key the peer refused.
            fleet.record(&url, false);
            let m = format!("the node {url} that has model {name} refused this node's peer key ({status})");
            last = Err(ApiError::bad_gateway(m));
            continue;
        }
        if status.is_redirection() {
            fleet.record(&url, false);
            last = Err(ApiError::bad_gateway(format!("the node {url} answered with a redirect ({status})")));
            continue;
        }
        let content_type = resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        if !relayable(content_type) {
            // A page, a script, a file: not an answer of this API, whatever the peer says.
            fleet.record(&url, false);
            let ct = content_type.unwrap_or("none").chars().take(64).collect::<String>();
            return Some(Err(ApiError::bad_gateway(format!(
                "the node {url} answered with content type {ct:?}, not JSON or an event stream"
            ))));
        }
        fleet.record(&url, true);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::info!(peer = %url, model = name, "peer cannot serve now; trying the next");
            last = Ok(relay(&url, resp, status));
            continue;
        }
        tracing::debug!(peer = %url, model = name, %status, "forwarded");
        return Some(Ok(relay(&url, resp, status)));
    }
    Some(last)
}

/// Whether a peer's answer of this type is passed on: JSON and event streams, what this API
/// answers with.
fn relayable(content_type: Option<&str>) -> bool {
    let essence = content_type.and_then(|c| c.split(';').next()).map(|c| c.trim().to_ascii_lowercase());
    matches!(essence.as_deref(), Some("application/json" | "text/event-stream"))
}

/// The peer's answer as this node's, marked with the peer (status, type, length and
/// `Retry-After` kept). An SSE stream that breaks, or goes quiet for [`IDLE_TIMEOUT`], ends with
/// an error event on a line of its own and `[DONE]`; any other body is cut short.
fn relay(url: &str, resp: reqwest::Response, status: StatusCode) -> Response {
    let headers = resp.headers();
    let text = |h: reqwest::header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
    let content_type = text(reqwest::header::CONTENT_TYPE);
    let retry_after = text(reqwest::header::RETRY_AFTER);
    let sse = content_type.as_deref().is_some_and(|c| c.starts_with("text/event-stream"));
    // The browser must take it for what its type says, never sniff it into a page.
    let mut out =
        Response::builder().status(status).header(NODE, url).header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if let Some(ct) = content_type {
        out = out.header(header::CONTENT_TYPE, ct);
    }
    if let Some(r) = retry_after {
        out = out.header(header::RETRY_AFTER, r);
    }
    if let (Some(len), false) = (resp.content_length(), sse) {
        out = out.header(header::CONTENT_LENGTH, len);
    }
    let url = url.to_string();
    let mut upstream = resp.bytes_stream();
    let body = async_stream::stream! {
        // Whether what was relayed so far ends an event (an error event must not land inside one).
        let mut at_boundary = true;
        loop {
            let why = match tokio::time::timeout(IDLE_TIMEOUT, upstream.next()).await {
                Ok(None) => break,
                Ok(Some(Ok(b))) => {
                    if !b.is_empty() {
                        at_boundary = b.ends_with(b"\n\n");
                    }
                    yield Ok::<Bytes, std::io::Error>(b);
                    continue;
                }
                Ok(Some(Err(e))) => format!("stopped mid-stream: {e}"),
                Err(_) => format!("sent nothing for {} s", IDLE_TIMEOUT.as_secs()),
            };
            tracing::warn!(peer = %url, %why, "forwarded answer broken");
            if sse {
                let error = ApiError::bad_gateway(format!("the node {url} serving this request {why}"));
                let lead = if at_boundary { "" } else { "\n\n" };
                yield Ok(Bytes::from(format!("{lead}data: {}\n\ndata: [DONE]\n\n", error.body())));
            } else {
                yield Err(std::io::Error::other(why));
            }
            break;
        }
    };
    out.body(Body::from_stream(body))
        .unwrap_or_else(|_| ApiError::internal("cannot relay the peer's answer").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_and_event_streams_are_relayed() {
        for ok in ["application/json", "application/json; charset=utf-8", "text/event-stream", "Text/Event-Stream"] {
            assert!(relayable(Some(ok)), "{ok}");
        }
        for bad in ["text/html", "application/javascript", "text/plain", "image/svg+xml", "application/jsonx"] {
            assert!(!relayable(Some(bad)), "{bad}");
        }
        assert!(!relayable(None));
    }
}
