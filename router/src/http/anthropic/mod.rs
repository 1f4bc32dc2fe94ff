//! The Anthropic dialect: `POST /v1/messages` (whole or streamed) and
//! `POST /v1/messages/count_tokens`, read into the router's chat job ([`request`]) and
//! answered in Anthropic's message and event shapes ([`respond`]). Errors take Anthropic's
//! envelope (see [`crate::http::envelope`]); keys may come as `x-api-key`.

pub mod request;
pub mod respond;

use axum::extract::State;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;

use crate::http::error::ApiError;
use crate::http::job::peer::Peers;
use crate::http::job::{pieces, translated};
use crate::http::json::Json;
use crate::http::openai::completions::count;
use crate::http::openai::respond::Kind;
use crate::registry::Registry;
use request::MessagesRequest;

pub async fn messages(
    State(r): State<Arc<Registry>>,
    Peers(peers): Peers,
    Json(req): Json<MessagesRequest>,
) -> Result<Response, ApiError> {
    let result = async {
        let body = request::to_openai(&req, true)?;
        let pieces = translated::run(r.clone(), peers.as_deref(), body, Kind::Chat, req.stream).await?;
        if req.stream {
            Ok(Sse::new(respond::events(req.model.clone(), pieces)).keep_alive(KeepAlive::default()).into_response())
        } else {
            let whole = pieces::whole(pieces).await?;
            Ok(axum::Json(respond::message(&req.model, &whole)).into_response())
        }
    }
    .await;
    count(&r, "messages", &req.model, &result);
    result
}

/// `{"input_tokens": N}`: the prompt as the model's worker renders and tokenizes it.
pub async fn count_tokens(
    State(r): State<Arc<Registry>>,
    Json(req): Json<MessagesRequest>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let body = request::to_openai(&req, false)?;
    let n = translated::count(r, body).await?;
    Ok(axum::Json(json!({ "input_tokens": n })))
}
