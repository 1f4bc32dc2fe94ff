//! Running a completion on one model: the request validated against what the model holds,
//! fanned out into one worker request per choice (prompts × `n`) that start together so the
//! worker batches them. An unstreamed answer is collected here; the dialect renders it, or the
//! calls' events as they come.

use model_bucket_shared::protocol::{GenerateRequest, Prompt, RequestId};
use model_bucket_shared::ModelInfo;
use std::sync::Arc;
use std::time::Instant;

use crate::http::error::ApiError;
use crate::http::job::call::{self, Call};
use crate::http::job::lora;
use crate::http::job::served::{self, Output, Started};
use crate::http::job::tools;
use crate::http::job::Job;
use crate::http::openai::request::{self as openai, CommonParams};
use crate::http::openai::respond::Kind;
use crate::registry::{Ask, Registry};
use crate::worker::Event;

pub async fn serve(
    r: Arc<Registry>,
    job: Job,
    c: &CommonParams,
    m: &ModelInfo,
    started: Instant,
    ask: Ask,
) -> Result<Started, ApiError> {
    let kind = job.kind;
    // A base plus an adapter runs on its base's worker.
    let cat = r.catalog();
    let w = lora::worker_of(&cat, m)?;
    let adapters = lora::uses(&cat, m, w, c.lora.as_deref())?;
    if kind == Kind::Chat && !r.can_chat(w) {
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
    let capacity = r.capacity(w);
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
    base.lora = adapters;
    base.count_only = job.count_only;
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
            let whitespace = c.json_whitespace.unwrap_or(false);
            base.constraint = Some(model_bucket_shared::protocol::Constraint::JsonSchema { schema, whitespace });
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
    let starts = reqs.iter().map(|req| call::start(&r, w, req, started, ask));
    // All start together so the worker admits them in one step (one prompt's prefill is then
    // shared by its n sequences); the first failure fails the request and cancels the rest.
    let calls: Vec<(Call, Event)> = futures::future::try_join_all(starts).await?;
    let tools = job.tools.as_ref().map(|p| p.names.clone());
    let logprobs = base.logprobs.is_some();
    let output =
        if base.stream { Output::Streaming(calls) } else { Output::Finished(served::collect(calls, logprobs).await?) };
    Ok(Started { kind, model: m.id.to_string(), tools, n, output, logprobs, include_usage })
}
