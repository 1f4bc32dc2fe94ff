//! `POST /v1/chat/completions` and `POST /v1/completions`, streamed or not: routing a request
//! to its model (or its task's chain), and fanning it out into one worker request per choice
//! (prompts × `n`), which the worker batches together.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use model_bucket_shared::protocol::{GenerateRequest, Prompt, RequestId};
use std::sync::Arc;

use super::call::{self, gone, Call};
use super::error::ApiError;
use super::json::JsonRaw;
use super::openai::{self, ChatRequest, CommonParams, CompletionRequest};
use super::respond::{Finished, Kind, Meta};
use super::tools::{self, ToolPlan};
use super::{stream, upstream};
use crate::metrics::RequestLabel;
use crate::registry::Registry;
use crate::routing;
use crate::worker::Event;
use model_bucket_shared::ModelInfo;
use std::time::Instant;

/// What a request asks to generate, validated.
#[derive(Clone)]
struct Job {
    kind: Kind,
    /// One per prompt; chat has one.
    prompts: Vec<Prompt>,
    tools: Option<ToolPlan>,
}

pub async fn chat(
    State(r): State<Arc<Registry>>,
    JsonRaw(req, raw): JsonRaw<ChatRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let job = openai::chat_messages(&req.messages).and_then(|messages| {
        let tools = tools::plan(req.tools.as_ref(), req.tool_choice.as_ref())?;
        Ok(Job { kind: Kind::Chat, prompts: vec![Prompt::Chat(messages)], tools })
    });
    let result = match job {
        Ok(job) => route(r.clone(), job, &req.common, &raw, started).await,
        Err(e) => Err(e),
    };
    count(&r, Kind::Chat, &req.common.model, &result);
    result
}

pub async fn completions(
    State(r): State<Arc<Registry>>,
    JsonRaw(req, raw): JsonRaw<CompletionRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let result = match openai::completion_prompts(&req.prompt) {
        Ok(prompts) => {
            route(r.clone(), Job { kind: Kind::Text, prompts, tools: None }, &req.common, &raw, started).await
        }
        Err(e) => Err(e),
    };
    count(&r, Kind::Text, &req.common.model, &result);
    result
}

/// Counts a request by model (its ID when the name resolves), endpoint and status.
fn count(r: &Registry, kind: Kind, model: &str, result: &Result<Response, ApiError>) {
    let status = match result {
        Ok(resp) => resp.status().as_u16(),
        Err(e) => e.status.as_u16(),
    };
    let model = r.catalog().resolve(model).map(|m| m.id.clone()).unwrap_or_else(|| {
        if routing::task(model, &r.config().tasks, false).is_some() {
            model.to_string()
        } else {
            "unknown".to_string()
        }
    });
    let endpoint = if kind == Kind::Chat { "chat" } else { "completions" };
    r.metrics.requests.get_or_create(&RequestLabel { model, endpoint, status }).inc();
}

/// Serves the request on the model it names, or on the first candidate of its task's chain that
/// can serve it: a candidate that fails with a server-side error (not loadable, no memory,
/// crashed) passes the request to the next.
async fn route(
    r: Arc<Registry>,
    job: Job,
    c: &CommonParams,
    raw: &axum::body::Bytes,
    started: Instant,
) -> Result<Response, ApiError> {
    let kind = job.kind;
    let cat = r.catalog();
    let config = r.config();
    let chain = match routing::task(&c.model, &config.tasks, cat.resolve(&c.model).is_some()) {
        Some(task) => {
            let found = routing::live_candidates(&r, &config.tasks[task], kind == Kind::Chat);
            if found.is_empty() {
                return Err(ApiError::unavailable(
                    format!(
                        "no model of task {task} can serve this request: {:?} are missing, failed, or cannot chat",
                        config.tasks[task]
                    ),
                    30,
                ));
            }
            found
        }
        None => vec![routing::Candidate::Local(
            cat.resolve(&c.model).ok_or_else(|| ApiError::model_not_found(&c.model))?.id.clone(),
        )],
    };
    let mut result = Err(ApiError::internal("empty chain"));
    for (i, candidate) in chain.iter().enumerate() {
        result = match candidate {
            routing::Candidate::Local(id) => match cat.models.iter().find(|m| &m.id == id) {
                Some(m) => serve(r.clone(), job.clone(), c, m, started).await,
                None => Err(ApiError::model_not_found(id)),
            },
            routing::Candidate::Upstream(model) => match &config.upstream {
                Some(up) => {
                    let endpoint = if kind == Kind::Chat { "chat/completions" } else { "completions" };
                    upstream::forward(up, endpoint, raw, model).await
                }
                None => Err(ApiError::internal("no [upstream] configured")),
            },
        };
        match &result {
            Err(e) if e.status.is_server_error() && i + 1 < chain.len() => {
                tracing::warn!(model = %c.model, candidate = ?candidate, error = %e.message, "trying the next model of the task");
            }
            _ => break,
        }
    }
    result
}

async fn serve(
    r: Arc<Registry>,
    job: Job,
    c: &CommonParams,
    m: &ModelInfo,
    started: Instant,
) -> Result<Response, ApiError> {
    let kind = job.kind;
    if kind == Kind::Chat && !r.can_chat(m) {
        return Err(ApiError::bad_param(
            "messages",
            format!(
                "model {} has no chat template, so it cannot take chat messages; use /v1/completions, or give it a chat_template in the config",
                m.id
            ),
        ));
    }
    // Validate before starting a worker: a bad request never costs a model load.
    let n = openai::choices_per_prompt(c)?;
    let choices = job.prompts.len() * n;
    if choices > openai::MAX_CHOICES {
        return Err(ApiError::bad_param(
            "n",
            format!("prompts × n is {choices}; at most {} choices per request", openai::MAX_CHOICES),
        ));
    }
    // Every choice is a request of the worker: more than it holds at once could never succeed.
    let capacity = r.capacity(m);
    if choices > capacity {
        return Err(ApiError::bad_param(
            "n",
            format!(
                "prompts × n is {choices}, more than model {} holds at once ({capacity}: its slots and queue)",
                m.id
            ),
        ));
    }
    let mut base = openai::to_generate(RequestId(0), Prompt::Text(String::new()), c)?;
    if let Some(plan) = &job.tools {
        let tools = serde_json::Value::Array(plan.tools.clone()).to_string();
        if tools.len() > tools::MAX_TOOLS_BYTES {
            return Err(ApiError::bad_param(
                "tools",
                format!("the tools are {} bytes of JSON; at most {} are allowed", tools.len(), tools::MAX_TOOLS_BYTES),
            ));
        }
        base.tools = Some(tools);
        if let Some(force) = &plan.force {
            if base.constraint.is_some() {
                return Err(ApiError::bad_param(
                    "tool_choice",
                    "a forced tool call cannot be combined with response_format, json_schema or grammar",
                ));
            }
            let schema = openai::schema_text(force).map_err(|e| ApiError { param: Some("tools"), ..e })?;
            base.constraint = Some(model_bucket_shared::protocol::Constraint::JsonSchema(schema));
        }
    }
    let include_usage = c.stream_options.as_ref().is_some_and(|o| o.include_usage);
    // Choice `p * n + k` is the k-th answer to prompt p; with a seed, each gets its own
    // (seed + k) so that the n answers differ but repeat.
    let reqs: Vec<GenerateRequest> = job
        .prompts
        .iter()
        .flat_map(|p| (0..n).map(move |k| (p, k)))
        .map(|(p, k)| GenerateRequest {
            prompt: p.clone(),
            sampling: model_bucket_shared::protocol::SamplingParams {
                seed: base.sampling.seed.map(|s| s.wrapping_add(k as u32).min(u32::MAX - 1)),
                ..base.sampling.clone()
            },
            ..base.clone()
        })
        .collect();
    let starts = reqs.iter().map(|req| call::start(&r, m, req, started));
    // All start together so the worker admits them in one step (one prompt's prefill is then
    // shared by its n sequences); the first failure fails the request and cancels the rest.
    let calls: Vec<(Call, Event)> = futures::future::try_join_all(starts).await?;
    let names = job.tools.as_ref().map(|p| p.names.clone());
    let meta = Meta::new(kind, m.id.clone(), names, n);
    let logprobs = base.logprobs.is_some();
    if base.stream {
        Ok(stream::sse(meta, calls, logprobs, include_usage).into_response())
    } else {
        collect(meta, calls, logprobs).await
    }
}

/// Waits for every choice to end and renders the whole response.
async fn collect(meta: Meta, calls: Vec<(Call, Event)>, logprobs: bool) -> Result<Response, ApiError> {
    let each = calls.into_iter().map(|(mut call, first)| async move {
        let mut text = String::new();
        let mut lps = logprobs.then(Vec::new);
        let mut event = first;
        loop {
            match event {
                Event::Tokens { text: t, logprobs: mut l } => {
                    text.push_str(&t);
                    if let Some(all) = lps.as_mut() {
                        all.append(&mut l);
                    }
                }
                Event::Done(done) => return Ok(Finished { text, logprobs: lps, done }),
                Event::Error { kind, message } => return Err(ApiError::from_worker(kind, message)),
                Event::Gone => return Err(gone()),
                Event::Embeddings { .. } => return Err(ApiError::internal("the worker answered with embeddings")),
            }
            event = call.next().await;
        }
    });
    let finished = futures::future::try_join_all(each).await?;
    Ok(axum::Json(meta.response(&finished)).into_response())
}
