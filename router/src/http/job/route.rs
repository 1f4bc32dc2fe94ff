//! Taking a completion request to where it runs: the model it names, or the first candidate of
//! its task's chain that can serve it (a local model or the upstream server). A candidate that
//! fails with a server-side error (not loadable, no memory, crashed) passes the request to the
//! next; a client error ends it. A model this node does not have, or cannot serve now, goes to
//! the best peer that has it (see [`crate::fleet`]).

use axum::response::Response;
use std::sync::Arc;
use std::time::Instant;

use crate::fleet::Fleet;
use crate::http::error::ApiError;
use crate::http::job::fanout::serve;
use crate::http::job::served::Served;
use crate::http::job::upstream;
use crate::http::job::Job;
use crate::http::openai::request::CommonParams;
use crate::http::openai::respond::Kind;
use crate::registry::{Ask, Registry, State};
use crate::routing;
use model_bucket_shared::Catalog;

/// Serves the request on the model it names, or on the first candidate of its task's chain that
/// can serve it: a candidate that fails with a server-side error (not loadable, no memory,
/// crashed) passes the request to the next.
pub async fn route(
    r: Arc<Registry>,
    job: Job,
    c: &CommonParams,
    raw: &axum::body::Bytes,
    started: Instant,
    peers: Option<&Fleet>,
) -> Result<Served, ApiError> {
    let kind = job.kind;
    let cat = r.catalog();
    let config = r.config();
    let path = if kind == Kind::Chat { "/v1/chat/completions" } else { "/v1/completions" };
    let task = routing::task(&c.model, &config.tasks, cat.resolve(&c.model).is_some());
    let class = task.and_then(|t| config.tasks[t].priority());
    let chain = match task {
        Some(task) => {
            let found = routing::live_candidates(&r, config.tasks[task].chain(), kind == Kind::Chat, peers);
            if found.is_empty() {
                return Err(ApiError::unavailable(
                    format!(
                        "no model of task {task} can serve this request: {:?} are missing, failed, or cannot chat",
                        config.tasks[task].chain()
                    ),
                    30,
                ));
            }
            found
        }
        None => match cat.resolve(&c.model) {
            Some(m) => vec![routing::Candidate::Local(m.id.clone())],
            None => return elsewhere(&cat, peers, path, raw, &c.model).await.map(Served::Remote),
        },
    };
    // A candidate that would wait for memory passes the request on when a later one (or, for
    // a model by name, a peer) serves now.
    let ready = |id: &str| cat.resolve(id).is_some_and(|m| matches!(r.state(m.worker_id()), State::Ready(_)));
    let now = routing::serving_now(&chain, ready, |name| peers.is_some_and(|f| f.ready(name)));
    let single_on_peer = chain.len() == 1 && peers.is_some_and(|f| f.ready(&c.model));
    let mut result = Err(ApiError::internal("empty chain"));
    for (i, candidate) in chain.iter().enumerate() {
        let ask = Ask { class, pass: now[i + 1..].contains(&true) || single_on_peer };
        result = match candidate {
            routing::Candidate::Local(id) => match cat.models.iter().find(|m| &m.id == id) {
                Some(m) => serve(r.clone(), job.clone(), c, m, started, ask).await.map(Served::Local),
                None => Err(ApiError::model_not_found(id)),
            },
            routing::Candidate::Peer(model) => {
                crate::http::job::peer::forward_as(peers, path, raw, model).await.map(Served::Remote)
            }
            routing::Candidate::Upstream(model) => match &config.upstream {
                Some(up) => {
                    let endpoint = if kind == Kind::Chat { "chat/completions" } else { "completions" };
                    upstream::forward(up, endpoint, raw, model).await.map(Served::Remote)
                }
                None => Err(ApiError::internal("no [upstream] configured")),
            },
        };
        match &result {
            // A full queue passes the request on too.
            Err(e)
                if (e.status.is_server_error() || e.status == axum::http::StatusCode::TOO_MANY_REQUESTS)
                    && i + 1 < chain.len() =>
            {
                tracing::warn!(model = %c.model, candidate = ?candidate, error = %e.message, "trying the next model of the task");
            }
            _ => break,
        }
    }
    // A model this node has but cannot serve now (failed, no memory: 503, before any work) may
    // be served by a peer; a request that broke a worker here is not sent on.
    if let (Err(e), Some(f)) = (&result, peers) {
        if e.status == axum::http::StatusCode::SERVICE_UNAVAILABLE && chain.len() == 1 {
            if let Some(forwarded) = crate::http::job::peer::forward(f, path, raw, &c.model).await {
                tracing::info!(model = %c.model, error = %e.message, "served by a peer instead");
                return forwarded.map(Served::Remote);
            }
        }
    }
    result
}

/// A model this node does not have: the best peer that has it, else 404 (naming the peers
/// that could not be asked). A name that means several models here is a 400 naming them,
/// never sent to a peer that claims it.
pub async fn elsewhere(
    cat: &Catalog,
    peers: Option<&Fleet>,
    path: &str,
    raw: &axum::body::Bytes,
    model: &str,
) -> Result<Response, ApiError> {
    let several = cat.ambiguous(model);
    if !several.is_empty() {
        return Err(ApiError::bad_param(
            "model",
            format!("the model name `{model}` means several models here ({}): use a full ID", several.join(", ")),
        ));
    }
    let Some(f) = peers else { return Err(ApiError::model_not_found(model)) };
    if let Some(forwarded) = crate::http::job::peer::forward(f, path, raw, model).await {
        return forwarded;
    }
    let mut e = ApiError::model_not_found(model);
    let unasked = f.errors();
    if !unasked.is_empty() {
        e.message = format!("{} Peers not asked: {}.", e.message, unasked.join("; "));
    }
    Err(e)
}
