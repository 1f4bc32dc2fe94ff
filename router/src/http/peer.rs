//! Forwarding a request to the peer that has its model (see [`crate::fleet`]): the client's
//! body is sent unchanged, the answer (streamed or not) passed back unchanged, marked with the
//! node that gave it. A peer that cannot be reached or answers with a server error before its
//! first byte passes the request to the next; one that dies mid-stream ends the stream with an
//! error event.

use axum::body::{Body, Bytes};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use std::convert::Infallible;
use std::sync::Arc;

use super::error::ApiError;
use crate::fleet::{Fleet, HOP, NODE};

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

/// Sends `raw` to `path` on the best peer that has model `name`, then the next; `None` when no
/// peer has it.
pub async fn forward(fleet: &Fleet, path: &str, raw: &Bytes, name: &str) -> Option<Result<Response, ApiError>> {
    let candidates = fleet.candidates(name);
    if candidates.is_empty() {
        return None;
    }
    // The last peer's server error, passed on when no peer could serve.
    let mut last: Result<Response, ApiError> = Err(ApiError::bad_gateway("no peer answered"));
    for url in candidates {
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
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                fleet.record(&url, false);
                tracing::warn!(peer = %url, model = name, error = %e, "peer not reached; trying the next");
                last =
                    Err(ApiError::bad_gateway(format!("the node {url} that has model {name} cannot be reached: {e}")));
                continue;
            }
        };
        fleet.record(&url, true);
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        if status.is_server_error() {
            tracing::warn!(peer = %url, model = name, %status, "peer could not serve; trying the next");
            last = Ok(relay(&url, resp, status));
            continue;
        }
        tracing::debug!(peer = %url, model = name, %status, "forwarded");
        return Some(Ok(relay(&url, resp, status)));
    }
    Some(last)
}

/// The peer's answer as this node's, marked with the peer; an SSE stream that breaks ends with
/// an error event, any other body is cut short.
fn relay(url: &str, resp: reqwest::Response, status: StatusCode) -> Response {
    let content_type =
        resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let sse = content_type.as_deref().is_some_and(|c| c.starts_with("text/event-stream"));
    let mut out = Response::builder().status(status).header(NODE, url);
    if let Some(ct) = content_type {
        out = out.header(header::CONTENT_TYPE, ct);
    }
    if let (Some(len), false) = (resp.content_length(), sse) {
        out = out.header(header::CONTENT_LENGTH, len);
    }
    let url = url.to_string();
    let mut upstream = resp.bytes_stream();
    let body = async_stream::stream! {
        while let Some(chunk) = upstream.next().await {
            match chunk {
                Ok(b) => yield Ok::<Bytes, std::io::Error>(b),
                Err(e) if sse => {
                    tracing::warn!(peer = %url, error = %e, "peer stream broke");
                    let error = ApiError::bad_gateway(format!("the node {url} serving this request stopped mid-stream: {e}"));
                    yield Ok(Bytes::from(format!("data: {}\n\n", error.body())));
                    break;
                }
                Err(e) => {
                    yield Err(std::io::Error::other(e));
                    break;
                }
            }
        }
    };
    out.body(Body::from_stream(body))
        .unwrap_or_else(|_| ApiError::internal("cannot relay the peer's answer").into_response())
}
