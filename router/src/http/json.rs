//! A JSON body extractor whose failures are OpenAI-style errors: 413 over the body limit,
//! 400 for malformed JSON or wrong types. No `Content-Type` is required (curl users forget it).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use std::time::Duration;

use crate::http::error::ApiError;

pub struct Json<T>(pub T);

/// Like [`Json`], keeping the body as sent too (to forward it unchanged).
pub struct JsonRaw<T>(pub T, pub Bytes);

/// Longest a client may take to send a request body (`--body-timeout`): a trickled body holds a
/// connection and a handler. The server puts it in each request's extensions; without it,
/// [`BodyTimeout::DEFAULT`].
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

impl BodyTimeout {
    pub const DEFAULT: BodyTimeout = BodyTimeout(Duration::from_secs(60));
}

async fn read<S: Send + Sync, T: DeserializeOwned>(req: Request, state: &S) -> Result<(T, Bytes), ApiError> {
    let limit = req.extensions().get::<BodyTimeout>().copied().unwrap_or(BodyTimeout::DEFAULT).0;
    let read = tokio::time::timeout(limit, Bytes::from_request(req, state)).await.map_err(|_| ApiError {
        status: axum::http::StatusCode::REQUEST_TIMEOUT,
        ..ApiError::bad_request(format!("the request body did not arrive within {} s", limit.as_secs()))
    })?;
    let bytes = read.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!("request body too large: {}", e.body_text()))
        } else {
            ApiError::bad_request(format!("cannot read the request body: {}", e.body_text()))
        }
    })?;
    let value = serde_json::from_slice(&bytes).map_err(|e| {
        let what = if e.is_data() { "invalid request" } else { "malformed JSON" };
        ApiError::bad_request(format!("{what}: {e}"))
    })?;
    Ok((value, bytes))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        read(req, state).await.map(|(v, _)| Json(v))
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonRaw<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        read(req, state).await.map(|(v, b)| JsonRaw(v, b))
    }
}
