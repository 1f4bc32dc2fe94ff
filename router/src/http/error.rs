//! The one error envelope: `{"error": {"message", "type", "param", "code"}}` with the status
//! OpenAI clients expect.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use model_bucket_shared::protocol::ErrorKind;
use serde_json::json;

/// `s` as an error message may quote it: at most 200 characters.
pub fn quoted(s: &str) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &s[..at]).into(),
        None => s.into(),
    }
}

/// An API error. Every handler failure ends up here.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// `invalid_request_error`, `not_found_error`, `server_error`, …
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
    /// Seconds, for 503s.
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), kind, param: None, code: None, retry_after: None }
    }

    /// 400: the request is malformed or its parameters are invalid.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 400 naming the offending parameter.
    pub fn bad_param(param: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { param: Some(param), ..ApiError::bad_request(message) }
    }

    /// 404 `model_not_found`.
    pub fn model_not_found(model: &str) -> ApiError {
        ApiError {
            param: Some("model"),
            code: Some("model_not_found"),
            ..ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!(
                    "The model `{}` does not exist. GET /v1/models lists the models this server has.",
                    quoted(model)
                ),
            )
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found_error", message)
    }

    /// 405: the endpoint exists but not for this method.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "this endpoint does not take this HTTP method (the Allow header lists the ones it takes)",
        )
    }

    /// 401 `invalid_api_key`.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some("invalid_api_key"),
            ..ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message)
        }
    }

    /// 413: the body is over the configured limit.
    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", message)
    }

    /// 503 with `Retry-After`: the model cannot serve yet (loading, overloaded, restarting).
    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
        }
    }

    /// 429 `queue_full` with `Retry-After`: too many requests are already waiting for the model.
    pub fn too_many(message: impl Into<String>, retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            code: Some("queue_full"),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
        }
    }

    /// 507 `insufficient_memory`: the model cannot fit the RAM budget even with every other
    /// worker unloaded; retrying will not help.
    pub fn insufficient_memory(message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some("insufficient_memory"),
            ..ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "server_error", message)
        }
    }

    /// 502: the worker failed.
    pub fn bad_gateway(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_GATEWAY, "server_error", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// A worker's error for one request, with the status it deserves.
    pub fn from_worker(kind: ErrorKind, message: String) -> ApiError {
        match kind {
            ErrorKind::BadRequest | ErrorKind::BadFrame => ApiError::bad_request(message),
            ErrorKind::PromptTooLong => ApiError {
                code: Some("context_length_exceeded"),
                param: Some("messages"),
                ..ApiError::bad_request(message)
            },
            ErrorKind::NoChatTemplate => ApiError::bad_param("messages", message),
            ErrorKind::Overloaded => ApiError::too_many(message, 1),
            ErrorKind::ShuttingDown => ApiError::unavailable(message, 1),
            ErrorKind::ProtocolMismatch | ErrorKind::Internal => ApiError::bad_gateway(message),
        }
    }

    /// The JSON body (also used for the error event of a failed stream).
    pub fn body(&self) -> serde_json::Value {
        json!({ "error": { "message": self.message, "type": self.kind, "param": self.param, "code": self.code } })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<crate::registry::RegistryError> for ApiError {
    /// The status each supervisor answer deserves: a model that cannot fit the budget at all (or
    /// beside the pinned models) is a 507 (retrying will not help); one that failed while the
    /// request waited is a 502 (the worker failed under it); a full queue is a 429 with the
    /// time worth waiting; everything else is a 503 with the time worth waiting.
    fn from(e: crate::registry::RegistryError) -> ApiError {
        use crate::registry::RegistryError as E;
        let message = e.to_string();
        match e {
            E::TooLarge { .. } | E::Pinned { .. } => ApiError::insufficient_memory(message),
            E::QueueFull { retry_after, .. } => ApiError::too_many(message, retry_after),
            E::Failed { while_waiting: true, .. } => ApiError::bad_gateway(message),
            E::Failed { while_waiting: false, .. } => ApiError::unavailable(message, 30),
            E::ShuttingDown | E::StillLoading { .. } | E::Queued { .. } | E::WouldWait { .. } => {
                ApiError::unavailable(message, 5)
            }
        }
    }
}

/// A panic in a handler becomes a 500 in the same envelope (the router keeps running).
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("internal error (the request panicked; see the server log)").into_response()
}
