//! `GET /admin/models/{id}/logs`: the log of a model's latest worker as server-sent events,
//! for the page's log view. First the kept lines (up to the last 200), then each new one as it
//! is written, as `{"line": "..."}`; `{"skipped": N}` when the reader fell more than 200 lines
//! behind; `{"ended": true}` once the worker's stderr closed (it exited). The stream ends
//! there or when the server stops. A model no worker has started for yet gets one event,
//! `{"started": false}`, and the stream ends (the model exists: not an error); an unknown
//! model gets 404.

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

use crate::http::error::ApiError;
use crate::registry::Registry;

fn line(text: &str) -> Event {
    Event::default().data(json!({ "line": text }).to_string())
}

fn ended() -> Event {
    Event::default().data(json!({ "ended": true }).to_string())
}

pub async fn logs(
    State(r): State<Arc<Registry>>,
    Path(id): Path<String>,
) -> Result<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let m = r.catalog().resolve(&id).cloned().ok_or_else(|| ApiError::model_not_found(&id))?;
    let log = r.log(m.worker_id());
    let mut changes = r.changes();
    let stream = async_stream::stream! {
        let Some(log) = log else {
            yield Ok(Event::default().data(json!({ "started": false }).to_string()));
            return;
        };
        let (kept, done, mut rx) = log.follow();
        for l in &kept {
            yield Ok(line(l));
        }
        if done {
            yield Ok(ended());
            return;
        }
        // A stop that came before this stream watched for changes.
        if r.stopping() {
            return;
        }
        loop {
            tokio::select! {
                got = rx.recv() => match got {
                    Ok(Some(l)) => yield Ok(line(&l)),
                    Ok(None) | Err(RecvError::Closed) => {
                        yield Ok(ended());
                        break;
                    }
                    Err(RecvError::Lagged(n)) => {
                        yield Ok(Event::default().data(json!({ "skipped": n }).to_string()))
                    }
                },
                gone = changes.changed() => if gone.is_err() || r.stopping() {
                    break;
                },
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
