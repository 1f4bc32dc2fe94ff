//! `POST /admin/pull`: pull a model on the running server, streaming progress as SSE. Events
//! are JSON objects with a `status`: `pulling` (repo, file, total), `downloading` (completed,
//! total; at most four a second), `verifying`, then `success` with the new model, or `error`
//! with the error envelope. The model is in `/v1/models` when `success` arrives.
//!
//! Bounds: at most [`pull::active::MAX_PULLS`] pulls at once (429 otherwise), one per
//! destination file (409), only `.gguf` files (400); a client that leaves stops its download
//! (the partial file stays, so pulling again resumes).

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use crate::http::error::ApiError;
use crate::http::json::Json;
use crate::pull::{self, Hub, Progress, PullError, Request};
use crate::registry::Registry;

#[derive(Debug, Deserialize)]
pub struct PullBody {
    /// `owner/repo` or a recommended model's name.
    #[serde(alias = "repo")]
    pub model: String,
    pub file: Option<String>,
    pub revision: Option<String>,
}

/// Sends progress events, throttled.
struct Reporter {
    tx: mpsc::UnboundedSender<Value>,
    last: Instant,
}

impl Progress for Reporter {
    fn start(&mut self, total: u64, done: u64) {
        let _ = self.tx.send(json!({ "status": "downloading", "completed": done, "total": total }));
    }

    fn advance(&mut self, done: u64) {
        if self.last.elapsed() >= Duration::from_millis(250) {
            self.last = Instant::now();
            let _ = self.tx.send(json!({ "status": "downloading", "completed": done }));
        }
    }

    fn verifying(&mut self) {
        let _ = self.tx.send(json!({ "status": "verifying" }));
    }

    fn cancelled(&self) -> bool {
        // The stream, which owns the receiver, is dropped when the client goes.
        self.tx.is_closed()
    }
}

fn error_event(e: &PullError) -> Value {
    let status = axum::http::StatusCode::from_u16(e.status()).unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
    let mut err = ApiError::internal(e.to_string());
    err.status = status;
    err.kind = if status.is_client_error() { "invalid_request_error" } else { "server_error" };
    json!({ "status": "error", "error": err.body()["error"] })
}

pub async fn pull(
    State(r): State<Arc<Registry>>,
    Json(body): Json<PullBody>,
) -> Result<Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let events = progress(r, body)?;
    Ok(Sse::new(events.map(|ev| Ok(SseEvent::default().data(ev.to_string())))).keep_alive(KeepAlive::default()))
}

/// A pull's progress events (each `{"status": ...}`), the last `success` or `error`; a request
/// refused before it starts is an error here.
pub fn progress(r: Arc<Registry>, body: PullBody) -> Result<futures::stream::BoxStream<'static, Value>, ApiError> {
    let req = Request::parse(&body.model, body.file.as_deref(), body.revision.as_deref().unwrap_or("main"))
        .map_err(|e| ApiError::bad_param("model", e.to_string()))?;
    let mut ticket = r.pulls.start().ok_or_else(|| {
        ApiError::too_many(
            format!("{} pulls are running already; try again when one ends", pull::active::MAX_PULLS),
            10,
        )
    })?;
    let dir = r.catalog().dir.clone();
    let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
    let job = tokio::task::spawn_blocking(move || -> Result<std::path::PathBuf, PullError> {
        let hub = Hub::from_env();
        let files = hub.list(&req.repo, &req.revision)?;
        let target = req.target(&files)?;
        if !ticket.claim(target.file_name()) {
            return Err(PullError::InProgress { file: target.file_name().to_string() });
        }
        let _ = tx.send(json!({ "status": "pulling", "repo": target.repo, "file": target.file, "total": target.size }));
        pull::fetch(&hub, &target, &dir, &mut Reporter { tx, last: Instant::now() })
    });
    let stream = async_stream::stream! {
        while let Some(ev) = rx.recv().await {
            yield ev;
        }
        let last = match job.await {
            Ok(Ok(path)) => match r.rescan(false, Duration::ZERO).await {
                Ok(_) => match r.catalog().models.iter().find(|m| m.path == path) {
                    Some(m) => json!({ "status": "success", "model": m }),
                    None => json!({ "status": "error", "error": { "message": format!("{} was downloaded but is not a usable model (see `model-bucket list --all`)", path.display()), "type": "server_error", "param": null, "code": null } }),
                },
                Err(e) => json!({ "status": "error", "error": ApiError::internal(format!("rescan failed: {e:#}")).body()["error"] }),
            },
            Ok(Err(e)) => error_event(&e),
            Err(e) => json!({ "status": "error", "error": ApiError::internal(format!("pull task failed: {e}")).body()["error"] }),
        };
        yield last;
    };
    Ok(Box::pin(stream))
}
