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
use std::time::Instant;

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
    Json(mut req): Json<request::ChatRequest>,
) -> Result<Response, ApiError> {
    req.model = model_name(&r, &req.model);
    let stream = req.stream.unwrap_or(true);
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
    // An empty prompt loads the model, as Ollama does; with `keep_alive: 0` it unloads it.
    if req.prompt.is_empty() {
        return if request::unload_now(&req.keep_alive) {
            unload(&r, &req.model, may_administer.is_some()).await
        } else {
            load(&r, &req.model).await
        };
    }
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

/// Loads `model` (as a request would: it waits its turn for memory) and answers
/// `done_reason: load`.
async fn load(r: &Registry, model: &str) -> Result<Response, ApiError> {
    let cat = r.catalog();
    let m = cat.resolve(model).ok_or_else(|| ApiError::model_not_found(model))?;
    let w = crate::http::job::lora::worker_of(&cat, m)?;
    drop(r.lease(w).await?);
    Ok(axum::Json(serde_json::json!({
        "model": model, "created_at": respond::now_rfc3339(), "response": "", "done": true, "done_reason": "load",
    }))
    .into_response())
}

/// Unloads `model` (`keep_alive: 0` with an empty prompt, what `ollama stop` sends): only
/// where unloading is not the admin key's alone, and never a resident model. Its requests in
/// flight finish first.
async fn unload(r: &Registry, model: &str, allowed: bool) -> Result<Response, ApiError> {
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
    Ok(axum::Json(serde_json::json!({
        "model": model, "created_at": respond::now_rfc3339(), "response": "", "done": true, "done_reason": "unload",
    }))
    .into_response())
}

/// `GET /api/version`: this server's version.
pub async fn version() -> axum::Json<Value> {
    axum::Json(serde_json::json!({ "version": env!("CARGO_PKG_VERSION") }))
}
