//! `GET /v1/models`, `GET /v1/models/{id}`, `GET /health`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use model_bucket_shared::ModelInfo;
use serde_json::{json, Value};
use std::sync::Arc;

use crate::fleet::{Fleet, HOP, NODE_ID};
use crate::http::error::ApiError;
use crate::http::job::peer::Peers;
use crate::registry::Registry;
use crate::routing;

/// A model's `/v1/models` entry: the catalog's facts and its worker's state.
pub(crate) fn model_object(r: &Registry, m: &ModelInfo) -> Value {
    // A base plus an adapter shows its base's worker.
    let worker = m.worker_id();
    let state = r.state(worker);
    let mut caps = m.capabilities.clone();
    if r.can_chat(m) && !caps.contains(&model_bucket_shared::Capability::Chat) {
        caps.insert(0, model_bucket_shared::Capability::Chat);
    }
    let mut v = json!({
        "id": m.id,
        "object": "model",
        "created": r.created,
        "owned_by": "model-bucket",
        "aliases": m.aliases,
        "capabilities": caps,
        "context_length": m.context_length,
        "architecture": m.architecture,
        "parameters": m.parameters,
        "quantization": m.quantization,
        "size_bytes": m.size_bytes,
        "state": state.name(),
    });
    if let Some(l) = &m.lora {
        v["base"] = json!(l.base);
        v["lora_scale"] = json!(l.scale);
    }
    if !m.adapters.is_empty() {
        // Indexed as requests' `lora` entries name them.
        let ids: Vec<Value> = m
            .adapters
            .iter()
            .enumerate()
            .map(|(i, a)| {
                // The file's name only: where it lives is the server's business.
                let file = a.path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
                json!({ "id": i, "file": file, "size_bytes": a.size_bytes })
            })
            .collect();
        v["adapters"] = json!(ids);
    }
    match &state {
        crate::registry::State::Failed(reason) => v["error"] = json!(reason),
        crate::registry::State::Loading => v["progress"] = json!(r.progress(worker).unwrap_or(0.0)),
        crate::registry::State::Ready(live) => {
            v["worker"] = json!({
                "pid": live.pid,
                "context_per_request": live.ready.n_ctx,
                "slots": live.ready.slots,
                "load_ms": live.ready.load_ms,
                "memory_bytes": live.ready.memory_bytes,
                "active": live.active(),
            })
        }
        _ => {}
    }
    v
}

/// A task as a model entry: `task:NAME`, its chain, and the model it would use now.
fn task_object(r: &Registry, name: &str, chain: &[String]) -> Value {
    let now = routing::live_candidates(r, chain, false, None);
    let serving = now.first().map(|c| match c {
        routing::Candidate::Local(id) => id.to_string(),
        routing::Candidate::Upstream(m) => format!("{}{m}", model_bucket_shared::config::UPSTREAM_PREFIX),
        routing::Candidate::Peer(m) => m.clone(),
    });
    json!({
        "id": format!("{}{name}", routing::TASK_PREFIX),
        "object": "model",
        "created": r.created,
        "owned_by": "model-bucket",
        "task": { "name": name, "chain": chain, "serving": serving },
    })
}

/// Every model of this node; with peers, each marked `node: "local"`, followed by the peers'
/// models it lacks, each with its node (not for a peer's own poll, which wants this node's
/// models only).
pub async fn list(
    State(r): State<Arc<Registry>>,
    fleet: Option<Extension<Arc<Fleet>>>,
    headers: HeaderMap,
) -> Response {
    let cat = r.catalog();
    let mut data: Vec<Value> = cat.models.iter().map(|m| model_object(&r, m)).collect();
    // The peers' entries are shared by every listing, written out as they are, never copied.
    let mut theirs: Vec<Arc<Value>> = Vec::new();
    if let Some(f) = &fleet {
        for v in &mut data {
            v["node"] = json!("local");
        }
        if !headers.contains_key(HOP) {
            theirs = f.entries(|name| cat.resolve(name).is_some());
        }
    }
    for (name, chain) in &r.config().tasks {
        data.push(task_object(&r, name, chain.chain()));
    }
    #[derive(serde::Serialize)]
    struct List<'a> {
        object: &'static str,
        data: Vec<&'a Value>,
    }
    let tasks_at = cat.models.len();
    let all = data[..tasks_at].iter().chain(theirs.iter().map(|e| &**e)).chain(data[tasks_at..].iter()).collect();
    let mut resp = Json(List { object: "list", data: all }).into_response();
    if let Some(f) = fleet {
        if let Ok(v) = HeaderValue::from_str(&f.node_id) {
            resp.headers_mut().insert(NODE_ID, v);
        }
    }
    resp
}

pub async fn retrieve(
    State(r): State<Arc<Registry>>,
    Path(id): Path<String>,
    Peers(fleet): Peers,
) -> Result<Json<Value>, ApiError> {
    let cat = r.catalog();
    if let Some(m) = cat.resolve(&id) {
        return Ok(Json(model_object(&r, m)));
    }
    if let Some(e) = fleet.and_then(|f| f.entry(&id)) {
        return Ok(Json((*e).clone()));
    }
    let config = r.config();
    match routing::task(&id, &config.tasks, false) {
        Some(task) => Ok(Json(task_object(&r, task, config.tasks[task].chain()))),
        None => Err(ApiError::model_not_found(&id)),
    }
}

pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}
