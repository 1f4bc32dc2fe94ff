//! The Ollama dialect on the same port: `/api/chat` and
//! `/api/generate` read into the router's chat or completion job ([`request`]) and answered as
//! NDJSON lines or one object ([`respond`]); `/api/embed` and `/api/embeddings` through the
//! embeddings endpoint ([`embed`]); the model list, loaded models, model facts and version
//! ([`models`]). Model names are the server's IDs and aliases; the `:latest` tag Ollama clients
//! append is dropped. Errors take Ollama's `{"error": "..."}` envelope (see
//! [`crate::http::envelope`]).

pub mod embed;
pub mod models;
pub mod pull;
pub mod request;
pub mod respond;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::error::ApiError;
use crate::http::guard::access::MayAdminister;
use crate::http::job::peer::Peers;
use crate::http::job::{pieces, translated};
use crate::http::json::Json;
use crate::http::openai::completions::count;
use crate::http::openai::respond::Kind;
use crate::registry::Registry;
use respond::Shape;

/// `name` as this server knows it: the `:latest` tag Ollama clients append is dropped when
/// the name with it means nothing here.
pub fn model_name(r: &Registry, name: &str) -> String {
    let known = |n: &str| r.catalog().resolve(n).is_some() || r.config().tasks.contains_key(n);
    match name.strip_suffix(":latest") {
        Some(bare) if !known(name) => bare.to_string(),
        _ => name.to_string(),
    }
}

/// Runs a translated body and answers in Ollama's shape.
async fn answer(
    r: Arc<Registry>,
    peers: Option<&crate::fleet::Fleet>,
    body: Value,
    kind: Kind,
    shape: Shape,
    model: String,
    stream: bool,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let pieces = translated::run(r, peers, body, kind, stream).await?;
    if stream {
        Ok(respond::ndjson(respond::lines(shape, model, pieces, started)))
    } else {
        let whole = pieces::whole(pieces).await?;
        Ok(axum::Json(respond::whole(shape, &model, &whole, started)).into_response())
    }
}

pub async fn chat(
    State(r): State<Arc<Registry>>,
    Peers(peers): Peers,
    may_administer: Option<Extension<MayAdminister>>,
    Json(mut req): Json<request::ChatRequest>,
) -> Result<Response, ApiError> {
    req.model = model_name(&r, &req.model);
    let stream = req.stream.unwrap_or(true);
    let asked = request::keep_alive(&req.keep_alive)?;
    // No messages loads the model, as Ollama does; with `keep_alive: 0` it unloads it.
    if req.messages.is_empty() {
        return load_or_unload(&r, &req.model, asked, may_administer.is_some(), Shape::Chat).await;
    }
    keep(&r, &req.model, asked, may_administer.is_some());
    let result = match request::chat(&req) {
        Ok(body) => answer(r.clone(), peers.as_deref(), body, Kind::Chat, Shape::Chat, req.model.clone(), stream).await,
        Err(e) => Err(e),
    };
    count(&r, "ollama_chat", &req.model, &result);
    result
}

pub async fn generate(
    State(r): State<Arc<Registry>>,
    Peers(peers): Peers,
    may_administer: Option<Extension<MayAdminister>>,
    Json(mut req): Json<request::GenerateRequest>,
) -> Result<Response, ApiError> {
    req.model = model_name(&r, &req.model);
    let stream = req.stream.unwrap_or(true);
    let asked = request::keep_alive(&req.keep_alive)?;
    // An empty prompt loads the model, as Ollama does; with `keep_alive: 0` it unloads it.
    if req.prompt.is_empty() {
        return load_or_unload(&r, &req.model, asked, may_administer.is_some(), Shape::Generate).await;
    }
    keep(&r, &req.model, asked, may_administer.is_some());
    // A model without a chat template takes the prompt as it is (with the system before it),
    // as Ollama's default template does.
    let templated = r.catalog().resolve(&req.model).map(|m| r.can_chat(m));
    if templated == Some(false) && !req.raw {
        req.raw = true;
        if let Some(system) = req.system.take().filter(|s| !s.is_empty()) {
            req.prompt = format!("{system}\n\n{}", req.prompt);
        }
    }
    let result = match request::generate(&req) {
        Ok((body, kind)) => {
            answer(r.clone(), peers.as_deref(), body, kind, Shape::Generate, req.model.clone(), stream).await
        }
        Err(e) => Err(e),
    };
    count(&r, "ollama_generate", &req.model, &result);
    result
}

/// A request with nothing to generate: `keep_alive: 0` unloads the model, anything else loads
/// it and keeps it as asked. Answered `done_reason: load` or `unload`.
async fn load_or_unload(
    r: &Registry,
    model: &str,
    asked: Option<Duration>,
    allowed: bool,
    shape: Shape,
) -> Result<Response, ApiError> {
    let reason = if asked.is_some_and(|t| t.is_zero()) {
        unload(r, model, allowed).await?;
        "unload"
    } else {
        keep(r, model, asked, allowed);
        load(r, model).await?;
        "load"
    };
    let mut body = serde_json::json!({
        "model": model, "created_at": respond::now_rfc3339(), "done": true, "done_reason": reason,
    });
    match shape {
        Shape::Chat => body["message"] = serde_json::json!({ "role": "assistant", "content": "" }),
        Shape::Generate => body["response"] = serde_json::json!(""),
    }
    Ok(axum::Json(body).into_response())
}

/// Takes `asked` as the idle time of `model`'s worker from now on (capped by the server's
/// settings), only where unloading is not the admin key's alone: where an admin key is set, a
/// short idle time would let any client unload models, so `keep_alive` is ignored. A task or a
/// peer's model keeps its own settings.
fn keep(r: &Registry, model: &str, asked: Option<Duration>, allowed: bool) {
    let cat = r.catalog();
    let Some(w) = cat.resolve(model).and_then(|m| crate::http::job::lora::worker_of(&cat, m).ok()) else {
        return;
    };
    if allowed {
        r.keep_alive(w, asked);
    }
}

/// Loads `model` as a request would: it waits its turn for memory.
async fn load(r: &Registry, model: &str) -> Result<(), ApiError> {
    let cat = r.catalog();
    let m = cat.resolve(model).ok_or_else(|| ApiError::model_not_found(model))?;
    let w = crate::http::job::lora::worker_of(&cat, m)?;
    drop(r.lease(w).await?);
    Ok(())
}

/// Unloads `model` (`keep_alive: 0` with an empty prompt, what `ollama stop` sends): only
/// where unloading is not the admin key's alone, and never a resident model. Its requests in
/// flight finish first.
async fn unload(r: &Registry, model: &str, allowed: bool) -> Result<(), ApiError> {
    let cat = r.catalog();
    let m = cat.resolve(model).ok_or_else(|| ApiError::model_not_found(model))?;
    let w = crate::http::job::lora::worker_of(&cat, m)?;
    let refuse = |why: &str| ApiError { status: StatusCode::FORBIDDEN, ..ApiError::bad_request(why.to_string()) };
    if !allowed {
        return Err(refuse("unloading a model needs the admin key here: use POST /admin/models/{id}/unload"));
    }
    if r.model_config(w).resident == Some(true) {
        return Err(refuse("this model is resident (pinned in the config); it is not unloaded"));
    }
    r.unload(&w.id).await;
    Ok(())
}

/// `GET /api/version`: this server's version.
pub async fn version() -> axum::Json<Value> {
    axum::Json(serde_json::json!({ "version": env!("CARGO_PKG_VERSION") }))
}
