//! `GET /api/tags` (every model), `GET /api/ps` (the loaded ones), `POST /api/show` (one
//! model's facts, template and capabilities), in Ollama's shapes, from the catalog and the
//! workers' state.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use model_bucket_shared::{Capability, ModelInfo};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use super::respond::{now_rfc3339, rfc3339};
use crate::http::error::ApiError;
use crate::http::json::Json;
use crate::registry::{Registry, State as WorkerState};

/// `details`.
fn details(m: &ModelInfo) -> Value {
    json!({
        "parent_model": m.lora.as_ref().map(|l| l.base.to_string()).unwrap_or_default(),
        "format": "gguf",
        "family": m.architecture,
        "families": [m.architecture],
        "parameter_size": m.parameters.clone().unwrap_or_default(),
        "quantization_level": m.quantization.clone().unwrap_or_default(),
    })
}

/// The file's modification time (blocking: call off the runtime).
fn modified_at(m: &ModelInfo) -> String {
    let t = std::fs::metadata(&m.path).and_then(|md| md.modified()).ok();
    rfc3339(t.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos()))
}

fn entry(m: &ModelInfo, modified: String) -> Value {
    json!({
        "name": m.id,
        "model": m.id,
        "modified_at": modified,
        "size": m.size_bytes,
        "digest": m.sha256,
        "details": details(m),
    })
}

pub async fn tags(State(r): State<Arc<Registry>>) -> Result<axum::Json<Value>, ApiError> {
    let cat = r.catalog();
    let models =
        tokio::task::spawn_blocking(move || cat.models.iter().map(|m| entry(m, modified_at(m))).collect::<Vec<_>>())
            .await
            .map_err(|e| ApiError::internal(format!("listing failed: {e}")))?;
    Ok(axum::Json(json!({ "models": models })))
}

pub async fn ps(State(r): State<Arc<Registry>>) -> axum::Json<Value> {
    let cat = r.catalog();
    let models: Vec<Value> = cat
        .models
        .iter()
        .filter_map(|m| match r.state(m.worker_id()) {
            WorkerState::Ready(live) => {
                let mut e = entry(m, now_rfc3339());
                e.as_object_mut().expect("an object").remove("modified_at");
                e["size"] = json!(live.ready.memory_bytes);
                e["size_vram"] = json!(0);
                e["context_length"] = json!(live.ready.n_ctx);
                // When it is unloaded if no request comes: its idle time after its last use
                // (a worker serving now counts as used now).
                let idle = if live.active() > 0 { Duration::ZERO } else { live.last_used().elapsed() };
                let w = crate::http::job::lora::worker_of(&cat, m).unwrap_or(m);
                let expires = r
                    .idle_time(w)
                    .map_or(u128::MAX / 2, |t| crate::http::job::ids::now_nanos() + t.saturating_sub(idle).as_nanos());
                e["expires_at"] = json!(rfc3339(expires.min(253_402_300_799_000_000_000)));
                Some(e)
            }
            _ => None,
        })
        .collect();
    axum::Json(json!({ "models": models }))
}

/// The chat template in `m`'s file, read once per file (by its hash): the header's tokenizer
/// arrays make each read megabytes. Blocking.
fn template_of(m: &ModelInfo) -> Arc<str> {
    static SEEN: OnceLock<Mutex<HashMap<String, Arc<str>>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    if let Some(t) = seen.lock().expect("template memo").get(&m.sha256) {
        return t.clone();
    }
    let header = model_bucket_shared::gguf::read_header(&m.path).ok();
    let t: Arc<str> = header.as_ref().and_then(|h| h.str("tokenizer.chat_template")).unwrap_or("").into();
    let mut memo = seen.lock().expect("template memo");
    // Files come and go over a server's life; a bounded memo forgets them all at once.
    if memo.len() >= 256 {
        memo.clear();
    }
    memo.insert(m.sha256.clone(), t.clone());
    t
}

#[derive(Debug, Deserialize)]
pub struct ShowRequest {
    /// Older clients send `name`.
    #[serde(alias = "name")]
    pub model: String,
}

pub async fn show(State(r): State<Arc<Registry>>, Json(req): Json<ShowRequest>) -> Result<Response, ApiError> {
    let name = super::model_name(&r, &req.model);
    let cat = r.catalog();
    let m = cat.resolve(&name).ok_or_else(|| ApiError::model_not_found(&name))?.clone();
    let can_chat = r.can_chat(&m);
    // An adapter's template is its base's.
    let base = crate::http::job::lora::worker_of(&cat, &m)?.clone();
    let info = m.clone();
    let (template, modified) = tokio::task::spawn_blocking(move || (template_of(&base), modified_at(&info)))
        .await
        .map_err(|e| ApiError::internal(format!("reading the model failed: {e}")))?;
    let mut caps = Vec::new();
    if m.capabilities.contains(&Capability::Embedding) {
        caps.push("embedding");
    } else {
        caps.push("completion");
        if can_chat {
            caps.push("tools");
        }
    }
    let arch = &m.architecture;
    let mut info = json!({ "general.architecture": arch });
    for (key, v) in
        [("context_length", m.context_length), ("embedding_length", m.embedding_length), ("block_count", m.block_count)]
    {
        if let Some(v) = v {
            info[format!("{arch}.{key}")] = json!(v);
        }
    }
    Ok(axum::Json(json!({
        "modelfile": "",
        "parameters": "",
        "template": &*template,
        "details": details(&m),
        "model_info": info,
        "capabilities": caps,
        "modified_at": modified,
    }))
    .into_response())
}
