//! `POST /v1/chat/completions` and `POST /v1/completions`: reading the request into a [`Job`],
//! then [`route`](crate::http::job::route) takes it to a model and [`fanout`](crate::http::job::fanout) runs it there.
//! Each request is counted in the metrics by model, endpoint and status.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use model_bucket_shared::protocol::Prompt;
use std::sync::Arc;
use std::time::Instant;

use crate::http::error::ApiError;
use crate::http::job::peer::Peers;
use crate::http::job::route::route;
use crate::http::job::served::{Output, Served};
use crate::http::job::tools;
use crate::http::job::Job;
use crate::http::json::JsonRaw;
use crate::http::openai::request::{self as openai, ChatRequest, CompletionRequest};
use crate::http::openai::respond::{Kind, Meta};
use crate::http::openai::stream;
use crate::metrics::RequestLabel;
use crate::registry::Registry;
use crate::routing;

pub async fn chat(
    State(r): State<Arc<Registry>>,
    Peers(peers): Peers,
    JsonRaw(req, raw): JsonRaw<ChatRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let job = openai::chat_messages(&req.messages).and_then(|messages| {
        let tools = tools::plan(req.tools.as_ref(), req.tool_choice.as_ref())?;
        Ok(Job { kind: Kind::Chat, prompts: vec![Prompt::Chat(messages)], tools, count_only: false })
    });
    let result = match job {
        Ok(job) => match route(r.clone(), job, &req.common, &raw, started, peers.as_deref()).await {
            Ok(served) => reply(served),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    count(&r, "chat", &req.common.model, &result);
    result
}

pub async fn completions(
    State(r): State<Arc<Registry>>,
    Peers(peers): Peers,
    JsonRaw(req, raw): JsonRaw<CompletionRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let result = match openai::completion_prompts(&req.prompt) {
        Ok(prompts) => {
            let job = Job { kind: Kind::Text, prompts, tools: None, count_only: false };
            match route(r.clone(), job, &req.common, &raw, started, peers.as_deref()).await {
                Ok(served) => reply(served),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    count(&r, "completions", &req.common.model, &result);
    result
}

/// A routed job in OpenAI's shape: a local one streamed as SSE or collected into one body; a
/// remote one is already in that shape.
fn reply(served: Served) -> Result<Response, ApiError> {
    match served {
        Served::Remote(resp) => Ok(resp),
        Served::Local(s) => {
            let meta = Meta::new(s.kind, s.model, s.tools, s.n);
            match s.output {
                Output::Streaming(calls) => Ok(stream::sse(meta, calls, s.logprobs, s.include_usage).into_response()),
                Output::Finished(finished) => Ok(axum::Json(meta.response(&finished)).into_response()),
            }
        }
    }
}

/// Counts a request by model (its ID when the name resolves), endpoint and status.
pub(crate) fn count(r: &Registry, endpoint: &'static str, model: &str, result: &Result<Response, ApiError>) {
    let status = match result {
        Ok(resp) => resp.status().as_u16(),
        Err(e) => e.status.as_u16(),
    };
    let model = r.catalog().resolve(model).map(|m| m.id.to_string()).unwrap_or_else(|| {
        if routing::task(model, &r.config().tasks, false).is_some() {
            model.to_string()
        } else {
            "unknown".to_string()
        }
    });
    r.metrics.requests.get_or_create(&RequestLabel { model, endpoint, status }).inc();
}
