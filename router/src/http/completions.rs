//! `POST /v1/chat/completions` and `POST /v1/completions`, streamed or not.

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use model_bucket_shared::protocol::{DoneInfo, ErrorKind, FinishReason, GenerateRequest, Prompt, RequestId};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::UnboundedReceiver;

use super::error::ApiError;
use super::json::JsonRaw;
use super::openai::{self, ChatRequest, CommonParams, CompletionRequest};
use super::upstream;
use crate::metrics::{ModelLabel, RequestLabel, SourceLabel};
use crate::registry::{Lease, Registry};
use crate::routing;
use crate::worker::Event;
use model_bucket_shared::ModelInfo;
use std::time::Instant;

/// Which endpoint a response is shaped for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

pub async fn chat(
    State(r): State<Arc<Registry>>,
    JsonRaw(req, raw): JsonRaw<ChatRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let result = match openai::chat_messages(&req.messages) {
        Ok(messages) => route(r.clone(), Kind::Chat, Prompt::Chat(messages), &req.common, &raw, started).await,
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
    let result = match openai::completion_prompt(&req.prompt) {
        Ok(prompt) => route(r.clone(), Kind::Text, Prompt::Text(prompt), &req.common, &raw, started).await,
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
    kind: Kind,
    prompt: Prompt,
    c: &CommonParams,
    raw: &axum::body::Bytes,
    started: Instant,
) -> Result<Response, ApiError> {
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
                Some(m) => serve(r.clone(), kind, prompt.clone(), c, m, started).await,
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
    kind: Kind,
    prompt: Prompt,
    c: &CommonParams,
    m: &ModelInfo,
    started: Instant,
) -> Result<Response, ApiError> {
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
    let probe = openai::to_generate(RequestId(0), prompt, c)?;
    let include_usage = c.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let stream = probe.stream;
    // A worker that is gone before it produced anything costs nothing yet: try once more on
    // the restarted one.
    let mut retried = false;
    let (meta, call, first) = loop {
        let lease = r.lease(m).await?;
        let live = lease.live.clone();
        let req = GenerateRequest { id: live.client.next_id(), ..probe.clone() };
        let meta = Meta { id: response_id(kind, req.id), created: unix_now(), model: m.id.clone(), kind };
        let mut call = Call::start(lease, req, Tally::new(r.clone(), &m.id, started));
        // The first event decides the status: a request the worker refuses is an HTTP error,
        // not a 200 stream that fails.
        match call.next().await {
            // Leased just as the worker was told to drain (unload, rolling restart): nothing was
            // produced, so wait for what comes next, once.
            Event::Error { kind: ErrorKind::ShuttingDown, .. } if !retried => retried = true,
            Event::Error { kind, message } => return Err(ApiError::from_worker(kind, message)),
            Event::Gone if !retried => {
                retried = true;
                r.mark_gone(&m.id, &live);
            }
            Event::Gone => return Err(gone()),
            first => break (meta, call, first),
        }
    };
    if stream {
        Ok(sse(meta, call, first, include_usage).into_response())
    } else {
        collect(meta, call, first).await
    }
}

/// Response fields fixed for the whole request.
struct Meta {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
}

fn response_id(kind: Kind, id: RequestId) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    match kind {
        Kind::Chat => format!("chatcmpl-{:x}{:x}", nanos, id.0),
        Kind::Text => format!("cmpl-{:x}{:x}", nanos, id.0),
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// One request in flight on a worker. It holds the worker's lease until it ends; dropping it
/// before the end (the client went away) cancels the generation so the slot is freed at once.
struct Call {
    lease: Lease,
    id: RequestId,
    events: UnboundedReceiver<Event>,
    finished: bool,
    tally: Tally,
}

impl Call {
    fn start(lease: Lease, req: GenerateRequest, tally: Tally) -> Call {
        let id = req.id;
        let events = lease.live.client.generate(req);
        Call { lease, id, events, finished: false, tally }
    }

    async fn next(&mut self) -> Event {
        let e = self.events.recv().await.unwrap_or(Event::Gone);
        match &e {
            Event::Tokens { .. } => self.tally.first_token(),
            Event::Done(d) => {
                self.tally.first_token();
                self.tally.done(d);
                self.finished = true;
            }
            Event::Error { .. } | Event::Gone => self.finished = true,
        }
        e
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.finished {
            self.lease.live.client.cancel(self.id);
        }
    }
}

/// A request's contribution to the metrics: time to first token, then tokens and time per token.
struct Tally {
    registry: Arc<Registry>,
    label: ModelLabel,
    started: Instant,
    seen_first: bool,
}

impl Tally {
    fn new(registry: Arc<Registry>, model: &str, started: Instant) -> Tally {
        Tally { registry, label: ModelLabel::new(model), started, seen_first: false }
    }

    fn first_token(&mut self) {
        if !self.seen_first {
            self.seen_first = true;
            self.registry.metrics.ttft.get_or_create(&self.label).observe(self.started.elapsed().as_secs_f64());
        }
    }

    fn done(&self, d: &DoneInfo) {
        let m = &self.registry.metrics;
        m.prompt_tokens.get_or_create(&self.label).inc_by(d.usage.prompt_tokens as u64);
        m.completion_tokens.get_or_create(&self.label).inc_by(d.usage.completion_tokens as u64);
        let u = &d.usage;
        let model = &self.label.model;
        if let Some(tier) = u.cached_from.filter(|_| u.cached_tokens > 0) {
            let label = SourceLabel { model: model.clone(), source: tier.as_str() };
            m.prompt_sources.get_or_create(&label).inc_by(u.cached_tokens as u64);
        }
        let prefilled = u.prompt_tokens.saturating_sub(u.cached_tokens) as u64;
        m.prompt_sources.get_or_create(&SourceLabel { model: model.clone(), source: "prefill" }).inc_by(prefilled);
        if d.usage.completion_tokens > 1 {
            let per_token = d.timings.decode_ms / 1000.0 / (d.usage.completion_tokens - 1) as f64;
            m.token_latency.get_or_create(&self.label).observe(per_token);
        }
    }
}

/// A worker that died under a request.
fn gone() -> ApiError {
    ApiError::bad_gateway("the worker exited while serving this request; it is being restarted")
}

fn finish_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    }
}

fn usage(d: &DoneInfo) -> Value {
    json!({
        "prompt_tokens": d.usage.prompt_tokens,
        "completion_tokens": d.usage.completion_tokens,
        "total_tokens": d.usage.prompt_tokens + d.usage.completion_tokens,
        "prompt_tokens_details": { "cached_tokens": d.usage.cached_tokens },
    })
}

async fn collect(meta: Meta, mut call: Call, first: Event) -> Result<Response, ApiError> {
    let mut text = String::new();
    let mut event = first;
    let done = loop {
        match event {
            Event::Tokens { text: t } => text.push_str(&t),
            Event::Done(d) => break d,
            Event::Error { kind, message } => return Err(ApiError::from_worker(kind, message)),
            Event::Gone => return Err(gone()),
        }
        event = call.next().await;
    };
    let choice = match meta.kind {
        Kind::Chat => json!({
            "index": 0,
            "message": { "role": "assistant", "content": text },
            "logprobs": null,
            "finish_reason": finish_reason(done.finish),
        }),
        Kind::Text => {
            json!({ "index": 0, "text": text, "logprobs": null, "finish_reason": finish_reason(done.finish) })
        }
    };
    let object = if meta.kind == Kind::Chat { "chat.completion" } else { "text_completion" };
    Ok(axum::Json(json!({
        "id": meta.id,
        "object": object,
        "created": meta.created,
        "model": meta.model,
        "choices": [choice],
        "usage": usage(&done),
        "timings": {
            "queue_ms": done.timings.queue_ms,
            "prompt_ms": done.timings.prompt_ms,
            "decode_ms": done.timings.decode_ms,
            "cache_source": done.usage.cached_from.filter(|_| done.usage.cached_tokens > 0).map(|t| t.as_str()),
        },
    }))
    .into_response())
}

impl Meta {
    /// One chunk: `delta` is the text (or role) for chat, `text` for completions.
    fn chunk(&self, content: Option<&str>, role: bool, finish: Option<&str>) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                let mut delta = serde_json::Map::new();
                if role {
                    delta.insert("role".into(), json!("assistant"));
                }
                if let Some(c) = content {
                    delta.insert("content".into(), json!(c));
                }
                json!({ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish })
            }
            Kind::Text => {
                json!({ "index": 0, "text": content.unwrap_or(""), "logprobs": null, "finish_reason": finish })
            }
        };
        let object = if self.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" };
        json!({ "id": self.id, "object": object, "created": self.created, "model": self.model, "choices": [choice] })
    }

    fn usage_chunk(&self, d: &DoneInfo) -> Value {
        let object = if self.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" };
        json!({ "id": self.id, "object": object, "created": self.created, "model": self.model, "choices": [], "usage": usage(d) })
    }
}

/// The text chunk of one stream, rendered once around a marker so that each token only
/// escapes its text between a fixed head and tail (no JSON tree per token).
struct TokenChunk {
    head: String,
    tail: String,
}

impl TokenChunk {
    fn new(meta: &Meta) -> TokenChunk {
        const MARK: &str = "\u{0}token\u{0}";
        let full = meta.chunk(Some(MARK), false, None).to_string();
        let encoded = serde_json::to_string(MARK).expect("a string encodes");
        let (head, tail) = full.split_once(&encoded).expect("the marker is in the chunk");
        TokenChunk { head: head.to_string(), tail: tail.to_string() }
    }

    /// The chunk for `text`, written into `buf` (reused between tokens).
    fn render<'b>(&self, text: &str, buf: &'b mut Vec<u8>) -> &'b str {
        buf.clear();
        buf.extend_from_slice(self.head.as_bytes());
        serde_json::to_writer(&mut *buf, text).expect("writing to a Vec cannot fail");
        buf.extend_from_slice(self.tail.as_bytes());
        std::str::from_utf8(buf).expect("JSON is UTF-8")
    }
}

fn data(v: &Value) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default().data(v.to_string()))
}

/// The SSE stream: a role chunk, text chunks as they arrive, a finish chunk, the usage chunk
/// when asked for, then `[DONE]`. A failure midway is one error event, then `[DONE]`.
fn sse(
    meta: Meta,
    mut call: Call,
    first: Event,
    include_usage: bool,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    let stream = async_stream::stream! {
        let tokens = TokenChunk::new(&meta);
        let mut buf = Vec::with_capacity(256);
        if meta.kind == Kind::Chat {
            yield data(&meta.chunk(Some(""), true, None));
        }
        let mut event = first;
        loop {
            match event {
                Event::Tokens { text } => yield Ok(SseEvent::default().data(tokens.render(&text, &mut buf))),
                Event::Done(d) => {
                    let finish = finish_reason(d.finish);
                    let last = if meta.kind == Kind::Chat { meta.chunk(None, false, Some(finish)) } else { meta.chunk(Some(""), false, Some(finish)) };
                    yield data(&last);
                    if include_usage {
                        yield data(&meta.usage_chunk(&d));
                    }
                    break;
                }
                Event::Error { kind, message } => {
                    yield data(&ApiError::from_worker(kind, message).body());
                    break;
                }
                Event::Gone => {
                    yield data(&gone().body());
                    break;
                }
            }
            event = call.next().await;
        }
        yield Ok(SseEvent::default().data("[DONE]"));
    };
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_chunks_match_the_full_rendering() {
        for kind in [Kind::Chat, Kind::Text] {
            let meta = Meta { id: "x-1".into(), created: 7, model: "eden_m_1b_abcdef".into(), kind };
            let chunk = TokenChunk::new(&meta);
            let mut buf = Vec::new();
            for text in ["", "Paris", "quote \" and \\ newline\n", "é✓🦀", "\u{0}"] {
                assert_eq!(chunk.render(text, &mut buf), meta.chunk(Some(text), false, None).to_string());
            }
        }
    }
}
