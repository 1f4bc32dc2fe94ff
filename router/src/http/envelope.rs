//! Errors in each dialect's own envelope. Handlers, guards and extractors all fail with
//! [`ApiError`] in OpenAI's shape; this layer, outermost, rewrites the JSON error bodies of the
//! Anthropic (`/v1/messages…`) and Ollama (`/api/…`) endpoints into theirs, keeping the status
//! and the other headers (`Retry-After`); `Content-Length` is the new body's.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{json, Value};

/// The dialect whose envelope a path's errors use; `None`: OpenAI's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Anthropic,
    Ollama,
}

impl Dialect {
    pub fn of(path: &str) -> Option<Dialect> {
        if path == "/v1/messages" || path.starts_with("/v1/messages/") {
            Some(Dialect::Anthropic)
        } else if path.starts_with("/api/") {
            Some(Dialect::Ollama)
        } else {
            None
        }
    }

    /// The error body for `status` and `message` in this dialect.
    pub fn body(self, status: StatusCode, message: &str) -> Value {
        match self {
            Dialect::Anthropic => json!({
                "type": "error",
                "error": { "type": anthropic_type(status), "message": message },
            }),
            Dialect::Ollama => json!({ "error": message }),
        }
    }
}

/// Anthropic's error type for a status.
pub fn anthropic_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 | 408 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// The longest error body read for its message. An error body is an [`ApiError`] envelope,
/// small unless its message quotes a long input; a longer one is answered with a message
/// saying so.
const MAX_ERROR_BYTES: usize = 64 * 1024;

pub async fn rewrite(req: Request, next: Next) -> Response {
    let dialect = Dialect::of(req.uri().path());
    let resp = next.run(req).await;
    let Some(dialect) = dialect else { return resp };
    let json = resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(resp.status().is_client_error() || resp.status().is_server_error()) || !json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let message = match axum::body::to_bytes(body, MAX_ERROR_BYTES).await {
        Ok(bytes) => {
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            // OpenAI's envelope, or already Ollama's (a pull's last line).
            v.pointer("/error/message").or_else(|| v.get("error")).and_then(Value::as_str).map(str::to_string)
        }
        Err(_) => None,
    };
    let message = message.unwrap_or_else(|| format!("the request failed ({})", parts.status));
    let out = dialect.body(parts.status, &message).to_string();
    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    Response::from_parts(parts, Body::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_shapes() {
        assert_eq!(Dialect::of("/v1/messages"), Some(Dialect::Anthropic));
        assert_eq!(Dialect::of("/v1/messages/count_tokens"), Some(Dialect::Anthropic));
        assert_eq!(Dialect::of("/v1/messagesx"), None);
        assert_eq!(Dialect::of("/api/chat"), Some(Dialect::Ollama));
        assert_eq!(Dialect::of("/v1/chat/completions"), None);
        let a = Dialect::Anthropic.body(StatusCode::TOO_MANY_REQUESTS, "slow down");
        assert_eq!(a, json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}));
        assert_eq!(Dialect::Ollama.body(StatusCode::NOT_FOUND, "no"), json!({"error": "no"}));
        assert_eq!(anthropic_type(StatusCode::INSUFFICIENT_STORAGE), "api_error");
    }
}
