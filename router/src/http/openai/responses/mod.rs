//! `POST /v1/responses` (OpenAI's Responses API), read into the router's chat job
//! ([`request`]) and answered as a response object or its event stream ([`respond`]);
//! `GET` and `DELETE /v1/responses/{id}` and `POST /v1/responses/{id}/cancel`. With `store`
//! (the default) a response is kept ([`store`]) so that `previous_response_id` continues its
//! conversation: the continued turn's prompt starts with the earlier one, so the prompt cache
//! serves it as it serves a chat history sent again. A response stored on another node of the
//! fleet is found there ([`peers`]).

pub mod peers;
pub mod request;
pub mod respond;
pub mod store;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::http::error::ApiError;
use crate::http::job::ids;
use crate::http::job::peer::Peers;
use crate::http::job::{pieces, translated};
use crate::http::json::Json;
use crate::http::openai::completions::count;
use crate::http::openai::respond::Kind;
use crate::registry::Registry;
use request::ResponsesRequest;
use respond::{Head, Outcome};
use store::{Store, Stored};

fn no_such(id: &str) -> ApiError {
    ApiError {
        param: Some("response_id"),
        ..ApiError::not_found(format!("No response with id '{}' is stored here.", short(id)))
    }
}

/// `id` as it may be quoted back: at most 64 characters.
fn short(id: &str) -> &str {
    match id.char_indices().nth(64) {
        Some((at, _)) => &id[..at],
        None => id,
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::internal(format!("the response store failed: {e}")))
}

/// The request fields a response echoes.
fn echo(req: &ResponsesRequest) -> Value {
    json!({
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "tools": req.tools.clone().unwrap_or_default(),
        "tool_choice": req.tool_choice.clone().unwrap_or(json!("auto")),
        "text": req.text.as_ref().and_then(|t| t.format.clone()).map_or(json!({ "format": { "type": "text" } }), |f| json!({ "format": f })),
        "parallel_tool_calls": req.parallel_tool_calls.unwrap_or(true),
        "metadata": req.metadata.clone().unwrap_or(json!({})),
        "truncation": "disabled",
    })
}

pub async fn create(
    State(r): State<Arc<Registry>>,
    Peers(peers): Peers,
    Extension(store): Extension<Arc<Store>>,
    Json(req): Json<ResponsesRequest>,
) -> Result<Response, ApiError> {
    let result = run(r.clone(), peers.as_deref(), store, &req).await;
    count(&r, "responses", &req.model, &result);
    result
}

async fn run(
    r: Arc<Registry>,
    peers: Option<&crate::fleet::Fleet>,
    store: Arc<Store>,
    req: &ResponsesRequest,
) -> Result<Response, ApiError> {
    let history = match &req.previous_response_id {
        None => Vec::new(),
        Some(id) => {
            let found = stored(&store, peers, id).await?;
            found.ok_or_else(|| ApiError { param: Some("previous_response_id"), ..no_such(id) })?.messages
        }
    };
    let (body, conversation) = request::to_chat(req, history)?;
    let keep = req.store.unwrap_or(true);
    let created_at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // A stored response is read by its ID alone: it must not be guessable.
    let id = ids::random("resp_").ok_or_else(|| ApiError::internal("the system's random source cannot be read"))?;
    let head = Head {
        id,
        created_at,
        model: req.model.clone(),
        echo: echo(req),
        previous_response_id: req.previous_response_id.clone(),
        store: keep,
    };
    let pieces = translated::run(r, peers, body, Kind::Chat, req.stream).await?;
    // Keeps a finished response and its conversation, the answer included, before the client
    // hears that it is done; says whether it was kept (a conversation over the entry limit is
    // answered but not kept).
    let save = move |id: String, o: Outcome| async move {
        if !keep {
            return false;
        }
        let mut messages = conversation;
        messages.push(o.assistant);
        let response = o.response;
        let put = tokio::task::spawn_blocking(move || store.put(&id, Stored { response, messages, created_at }));
        let kept = matches!(put.await, Ok(true));
        if !kept {
            tracing::warn!("a response was not stored: its conversation is over the limit");
        }
        kept
    };
    if req.stream {
        let id = head.id.clone();
        let events = respond::events(head, pieces, move |o| save(id, o));
        return Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response());
    }
    let whole = pieces::whole(pieces).await?;
    let (items, call_ids) = respond::output(&whole);
    let mut response = respond::object(&head, respond::status(&whole.ending), items, Some(&whole.ending));
    let assistant = respond::assistant_message(&whole.text, &whole.calls, &call_ids);
    if !save(head.id.clone(), Outcome { response: response.clone(), assistant }).await {
        response["store"] = json!(false);
    }
    Ok(axum::Json(response).into_response())
}

/// The stored response `id`: here, or else on the first peer that has it.
async fn stored(store: &Arc<Store>, peers: Option<&crate::fleet::Fleet>, id: &str) -> Result<Option<Stored>, ApiError> {
    let (s, key) = (store.clone(), id.to_string());
    if let Some(found) = blocking(move || s.get(&key)).await? {
        return Ok(Some(found));
    }
    Ok(match peers {
        Some(f) => peers::find(f, id).await,
        None => None,
    })
}

/// The stored response `id` ([`stored`]), or a 404.
async fn found(store: &Arc<Store>, peers: Option<&crate::fleet::Fleet>, id: &str) -> Result<Stored, ApiError> {
    stored(store, peers, id).await?.ok_or_else(|| no_such(id))
}

pub async fn retrieve(
    Peers(peers): Peers,
    Extension(store): Extension<Arc<Store>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(found(&store, peers.as_deref(), &id).await?.response).into_response())
}

/// `GET /v1/responses/{id}/conversation`: the stored response with the conversation a
/// continued turn starts from (chat messages), what a node of the fleet continues from.
pub async fn conversation(
    Peers(peers): Peers,
    Extension(store): Extension<Arc<Store>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(found(&store, peers.as_deref(), &id).await?).into_response())
}

/// Deletes `id` here, or else wherever a peer stores it.
pub async fn delete(
    Peers(peers): Peers,
    Extension(store): Extension<Arc<Store>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let key = id.clone();
    let here = blocking(move || store.delete(&key)).await?;
    let deleted = here
        || match peers.as_deref() {
            Some(f) => peers::delete(f, &id).await,
            None => false,
        };
    if deleted {
        Ok(axum::Json(json!({ "id": id, "object": "response", "deleted": true })).into_response())
    } else {
        Err(no_such(&id))
    }
}

/// Only a response still running in the background can be cancelled; this server answers
/// every response while the request waits, so a stored one is refused as OpenAI refuses a
/// synchronous one.
pub async fn cancel(
    Peers(peers): Peers,
    Extension(store): Extension<Arc<Store>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    found(&store, peers.as_deref(), &id).await?;
    Err(ApiError {
        status: StatusCode::BAD_REQUEST,
        ..ApiError::bad_request(
            "Cannot cancel a synchronous response: only responses run in the background can be cancelled.",
        )
    })
}
