//! `GET /v1/models`, `GET /v1/models/{id}`, `GET /health`.

use axum::extract::{Path, State};
use axum::Json;
use model_bucket_shared::ModelInfo;
use serde_json::{json, Value};
use std::sync::Arc;

use super::error::ApiError;
use crate::registry::Registry;
use crate::routing;

/// A model's `/v1/models` entry: the catalog's facts and its worker's state.
pub(super) fn model_object(r: &Registry, m: &ModelInfo) -> Value {
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
            })
        }
        _ => {}
    }
    v
}

/// A task as a model entry: `task:NAME`, its chain, and the model it would use now.
fn task_object(r: &Registry, name: &str, chain: &[String]) -> Value {
    let now = routing::live_candidates(r, chain, false);
    let serving = now.first().map(|c| match c {
        routing::Candidate::Local(id) => id.to_string(),
        routing::Candidate::Upstream(m) => format!("{}{m}", model_bucket_shared::config::UPSTREAM_PREFIX),
    });
    json!({
        "id": format!("{}{name}", routing::TASK_PREFIX),
        "object": "model",
        "created": r.created,
        "owned_by": "model-bucket",
        "task": { "name": name, "chain": chain, "serving": serving },
    })
}

pub async fn list(State(r): State<Arc<Registry>>) -> Json<Value> {
    let cat = r.catalog();
    let mut data: Vec<Value> = cat.models.iter().map(|m| model_object(&r, m)).collect();
    for (name, chain) in &r.config().tasks {
        data.push(task_object(&r, name, chain));
    }
    Json(json!({ "object": "list", "data": data }))
}

pub async fn retrieve(State(r): State<Arc<Registry>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let cat = r.catalog();
    if let Some(m) = cat.resolve(&id) {
        return Ok(Json(model_object(&r, m)));
    }
    let config = r.config();
    match routing::task(&id, &config.tasks, false) {
        Some(task) => Ok(Json(task_object(&r, task, &config.tasks[task]))),
        None => Err(ApiError::model_not_found(&id)),
    }
}

pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}
