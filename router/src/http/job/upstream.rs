//! The opt-in remote fallback: a request whose task chain has no local model that can serve is
//! forwarded, as the client sent it but for `model`, to the configured OpenAI-compatible server.
//! The answer (streamed or not) is passed back unchanged, status included.

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use model_bucket_shared::config::Upstream;
use std::sync::OnceLock;
use std::time::Duration;

use crate::http::error::ApiError;

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client with default settings builds")
    })
}

/// Forwards `raw` (the client's JSON body) to `endpoint` (`chat/completions` or `completions`)
/// of `up`, with `model` in place of the client's.
pub async fn forward(up: &Upstream, endpoint: &str, raw: &Bytes, model: &str) -> Result<Response, ApiError> {
    let mut body: serde_json::Value =
        serde_json::from_slice(raw).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    body["model"] = serde_json::Value::String(model.to_string());
    let url = format!("{}/{endpoint}", up.url.trim_end_matches('/'));
    let mut req = client().post(&url).json(&body);
    if let Some(var) = &up.api_key_env {
        match std::env::var(var) {
            Ok(key) if !key.is_empty() => req = req.bearer_auth(key),
            _ => tracing::warn!(var = %var, "the upstream API key variable is not set"),
        }
    }
    tracing::info!(%url, model, "forwarding to the upstream");
    let resp = req
        .send()
        .await
        .map_err(|e| ApiError::bad_gateway(format!("the upstream at {} cannot be reached: {e}", up.url)))?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type =
        resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut out = Response::builder().status(status).header("x-model-bucket-upstream", "1");
    if let Some(ct) = content_type {
        out = out.header(header::CONTENT_TYPE, ct);
    }
    if let Some(len) = resp.content_length() {
        out = out.header(header::CONTENT_LENGTH, len);
    }
    Ok(out
        .body(Body::from_stream(resp.bytes_stream()))
        .unwrap_or_else(|_| ApiError::internal("cannot relay the upstream answer").into_response()))
}
