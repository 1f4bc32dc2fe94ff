//! Ops endpoints: `GET /admin/workers`, `POST /admin/models/{id}/load|unload`,
//! `POST /admin/rescan`, `POST /admin/restart`, and `GET /metrics`.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

use crate::http::error::ApiError;
use crate::metrics::ModelLabel;
use crate::registry::Registry;

pub async fn workers(State(r): State<Arc<Registry>>) -> Json<Value> {
    let workers = r.workers().await;
    let used: u64 = workers.iter().map(|w| w.budget_bytes).sum();
    Json(json!({ "ram_budget_bytes": r.limits.ram_budget, "ram_used_bytes": used, "workers": workers }))
}

/// The worker view of one model, or its state when it has no worker.
async fn model_status(r: &Registry, id: &str) -> Value {
    match r.workers().await.into_iter().find(|w| w.model == id) {
        Some(w) => json!(w),
        None => json!({ "model": id, "state": r.state(id).name() }),
    }
}

pub async fn load(State(r): State<Arc<Registry>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let cat = r.catalog();
    let m = cat.resolve(&id).ok_or_else(|| ApiError::model_not_found(&id))?;
    // A base plus an adapter loads its base's worker.
    let m = crate::http::job::lora::worker_of(&cat, m)?;
    r.load(m).await?;
    Ok(Json(model_status(&r, &m.id).await))
}

pub async fn unload(State(r): State<Arc<Registry>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let cat = r.catalog();
    let m = cat.resolve(&id).ok_or_else(|| ApiError::model_not_found(&id))?;
    let m = crate::http::job::lora::worker_of(&cat, m)?;
    let state = r.unload(&m.id).await;
    Ok(Json(json!({ "model": m.id, "state": state })))
}

pub async fn rescan(State(r): State<Arc<Registry>>) -> Result<Json<Value>, ApiError> {
    let report = r
        .rescan(true, crate::registry::SETTLE)
        .await
        .map_err(|e| ApiError::internal(format!("rescan failed: {e:#}")))?;
    Ok(Json(json!(report)))
}

/// Starts a rolling restart of every running worker and returns at once (202).
/// `GET /admin/peers`: the peers this node polls, their model counts and why the last poll of
/// each failed, if it did (an empty list without peers).
pub async fn peers(fleet: Option<axum::Extension<Arc<crate::fleet::Fleet>>>) -> Json<Value> {
    let peers = fleet.map(|f| f.views()).unwrap_or_default();
    Json(json!({ "peers": peers }))
}

pub async fn restart(State(r): State<Arc<Registry>>) -> impl IntoResponse {
    tokio::spawn(async move { r.restart_all().await });
    (axum::http::StatusCode::ACCEPTED, Json(json!({ "restarting": true })))
}

pub async fn metrics(State(r): State<Arc<Registry>>) -> impl IntoResponse {
    let m = &r.metrics;
    m.worker_memory.clear();
    m.slots_busy.clear();
    m.queue_depth.clear();
    m.waiting.clear();
    let mut used = 0;
    for w in r.workers().await {
        let l = ModelLabel::new(&w.model);
        used += w.budget_bytes;
        if let Some(b) = w.memory_bytes {
            m.worker_memory.get_or_create(&l).set(b as i64);
        }
        m.slots_busy.get_or_create(&l).set(w.slots_busy as i64);
        m.queue_depth.get_or_create(&l).set(w.queued as i64);
        m.waiting.get_or_create(&l).set(w.waiting as i64);
    }
    m.used_bytes.set(used as i64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], m.render())
}
