//! `GET /admin/events`: the models' states as server-sent events, for pages and tools that
//! watch them. First one event per model, then one for each model whose state, loading
//! progress or error changed (changes close together may be merged into the latest). Each
//! event is `{"model", "state", "progress"?, "error"?}`; a model that left the catalog gets
//! `"state": "removed"`. The stream ends when the server stops.

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use crate::registry::{Registry, State as ModelState};

/// Every model's event as it would be sent now, by ID.
fn snapshot(r: &Registry) -> BTreeMap<String, Value> {
    r.catalog()
        .models
        .iter()
        .map(|m| {
            // A base plus an adapter shows its base's worker.
            let state = r.state(m.worker_id());
            let mut v = json!({ "model": m.id, "state": state.name() });
            match &state {
                ModelState::Loading => v["progress"] = json!(r.progress(m.worker_id()).unwrap_or(0.0)),
                ModelState::Failed(reason) => v["error"] = json!(reason),
                _ => {}
            }
            (m.id.to_string(), v)
        })
        .collect()
}

pub async fn events(State(r): State<Arc<Registry>>) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let mut changes = r.changes();
    let stream = async_stream::stream! {
        let mut sent: BTreeMap<String, Value> = BTreeMap::new();
        loop {
            changes.mark_unchanged();
            let now = snapshot(&r);
            for (id, v) in &now {
                if sent.get(id) != Some(v) {
                    yield Ok(Event::default().data(v.to_string()));
                }
            }
            for id in sent.keys().filter(|id| !now.contains_key(*id)) {
                yield Ok(Event::default().data(json!({ "model": id, "state": "removed" }).to_string()));
            }
            sent = now;
            if r.stopping() || changes.changed().await.is_err() {
                break;
            }
        }
    };
    Sse::new(stream).keep_alive(KeepAlive::default())
}
