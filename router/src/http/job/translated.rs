//! Running a request that a dialect translated into OpenAI's chat or text-completion body: the
//! same checks, bounds, routing, tasks and peers as the OpenAI endpoints. A peer or the
//! upstream receives that body, asked for unstreamed, and its answer is read back into pieces.

use axum::body::Bytes;
use futures::stream::BoxStream;
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

use crate::fleet::Fleet;
use crate::http::error::ApiError;
use crate::http::job::pieces::{pieces, Piece};
use crate::http::job::route::route;
use crate::http::job::served::Output;
use crate::http::job::{fanout, tools, Job};
use crate::http::openai::request::{self as openai, ChatRequest, CompletionRequest};
use crate::http::openai::respond::Kind;
use crate::registry::{Ask, Registry};
use crate::routing;
use model_bucket_shared::protocol::Prompt;

/// Sets `key` on an OpenAI body when the dialect gave a value for it.
pub fn set<T: serde::Serialize>(body: &mut Value, key: &str, v: Option<T>) {
    if let Some(v) = v {
        body[key] = serde_json::json!(v);
    }
}

/// OpenAI's `response_format` for a JSON schema named `name`.
pub fn schema_format(name: Value, schema: &Value) -> Value {
    serde_json::json!({ "type": "json_schema", "json_schema": { "name": name, "schema": schema } })
}

fn invalid(e: serde_json::Error) -> ApiError {
    ApiError::bad_request(format!("invalid request: {e}"))
}

/// The job and shared parameters of an OpenAI chat (`Kind::Chat`) or completion body.
fn read(body: Value, kind: Kind, count_only: bool) -> Result<(Job, openai::CommonParams), ApiError> {
    match kind {
        Kind::Chat => {
            let req: ChatRequest = serde_json::from_value(body).map_err(invalid)?;
            let messages = openai::chat_messages(&req.messages)?;
            let tools = tools::plan(req.tools.as_ref(), req.tool_choice.as_ref())?;
            Ok((Job { kind, prompts: vec![Prompt::Chat(messages)], tools, count_only }, req.common))
        }
        Kind::Text => {
            let req: CompletionRequest = serde_json::from_value(body).map_err(invalid)?;
            let prompts = openai::completion_prompts(&req.prompt)?;
            if prompts.len() != 1 {
                return Err(ApiError::bad_param("prompt", "one prompt per request"));
            }
            Ok((Job { kind, prompts, tools: None, count_only }, req.common))
        }
    }
}

/// Runs `body`, an OpenAI request of `kind`, and returns its one answer's pieces; `stream`
/// says whether text should arrive as it is generated.
pub async fn run(
    r: Arc<Registry>,
    peers: Option<&Fleet>,
    mut body: Value,
    kind: Kind,
    stream: bool,
) -> Result<BoxStream<'static, Piece>, ApiError> {
    let started = Instant::now();
    body["stream"] = Value::Bool(false);
    let raw = Bytes::from(body.to_string());
    body["stream"] = Value::Bool(stream);
    let (job, common) = read(body, kind, false)?;
    pieces(route(r, job, &common, &raw, started, peers).await?).await
}

/// The prompt tokens of `body` (an OpenAI chat body), counted by the model's own worker as a
/// request would be rendered and tokenized, tools included. A model that is not loaded is
/// loaded, as for a request. A task counts on its first local model; peers are not asked.
pub async fn count(r: Arc<Registry>, body: Value) -> Result<u32, ApiError> {
    let started = Instant::now();
    let (job, common) = read(body, Kind::Chat, true)?;
    let cat = r.catalog();
    let config = r.config();
    let id = match routing::task(&common.model, &config.tasks, cat.resolve(&common.model).is_some()) {
        Some(task) => {
            routing::live_candidates(&r, config.tasks[task].chain(), true, None).into_iter().find_map(|c| match c {
                routing::Candidate::Local(id) => Some(id),
                _ => None,
            })
        }
        None => cat.resolve(&common.model).map(|m| m.id.clone()),
    };
    let m = id
        .and_then(|id| cat.models.iter().find(|m| m.id == id))
        .ok_or_else(|| ApiError::model_not_found(&common.model))?;
    let served = fanout::serve(r.clone(), job, &common, m, started, Ask::default()).await?;
    match served.output {
        Output::Finished(f) if f.len() == 1 => Ok(f[0].done.usage.prompt_tokens),
        _ => Err(ApiError::internal("the worker did not answer the count")),
    }
}
