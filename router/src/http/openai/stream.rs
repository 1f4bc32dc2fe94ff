//! The SSE stream of a chat or text completion: per choice a role chunk (chat), text chunks as
//! they arrive, tool calls once complete, and a finish chunk; then the usage chunk when asked
//! for, then `[DONE]`. A failure midway is one error event, then `[DONE]`.
//!
//! Choices are merged as their events arrive. Plain text of a request without log-probabilities
//! or tools takes the pre-rendered [`TokenChunk`] path (no JSON tree per token).

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::StreamExt;
use model_bucket_shared::protocol::DoneInfo;
use serde::Serialize;
use std::convert::Infallible;

use crate::http::error::ApiError;
use crate::http::job::call::{gone, Call};
use crate::http::job::tools::{self, StreamSplit};
use crate::http::openai::respond::body::{Delta, FunctionDelta, ToolCallDelta};
use crate::http::openai::respond::{finish_reason, Kind, Meta, TokenChunk};
use crate::worker::Event;

/// Per choice: how much text it has sent (for completions' `text_offset`) and, when tools are
/// offered, what it holds back as a possible call.
struct ChoiceState {
    chunk: TokenChunk,
    split: Option<StreamSplit>,
    chars: usize,
    done: Option<Box<DoneInfo>>,
}

fn data(v: &impl Serialize) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default().data(serde_json::to_string(v).expect("a response body encodes")))
}

/// The events of one call, tagged with its choice index, ending with its last event.
fn events(index: usize, call: Call, first: Event) -> impl futures::Stream<Item = (usize, Event)> {
    futures::stream::unfold(Some((call, Some(first))), move |state| async move {
        let (mut call, first) = state?;
        let e = match first {
            Some(e) => e,
            None => call.next().await,
        };
        let last = !matches!(e, Event::Tokens { .. });
        Some(((index, e), if last { None } else { Some((call, None)) }))
    })
}

pub fn sse(
    meta: Meta,
    calls: Vec<(Call, Event)>,
    logprobs: bool,
    include_usage: bool,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    let n_choices = calls.len();
    let mut merged = futures::stream::select_all(
        calls.into_iter().enumerate().map(|(i, (call, first))| Box::pin(events(i, call, first))),
    );
    let stream = async_stream::stream! {
        let mut choices: Vec<ChoiceState> = (0..n_choices)
            .map(|i| ChoiceState {
                chunk: TokenChunk::new(&meta, i),
                split: meta.tools.as_ref().map(|_| StreamSplit::default()),
                chars: 0,
                done: None,
            })
            .collect();
        let fast = !logprobs && meta.tools.is_none();
        let mut buf = Vec::with_capacity(256);
        if meta.kind == Kind::Chat {
            for i in 0..n_choices {
                let role = Delta { role: Some("assistant"), content: Some(String::new()), ..Delta::default() };
                yield data(&meta.chunk(i, role, None, None));
            }
        }
        let mut failed = false;
        while let Some((i, event)) = merged.next().await {
            let c = &mut choices[i];
            match event {
                Event::Tokens { text, logprobs: lp, .. } => {
                    if fast {
                        yield Ok(SseEvent::default().data(c.chunk.render(&text, &mut buf)));
                        continue;
                    }
                    let lp_json = logprobs.then(|| meta.logprobs(&lp, c.chars));
                    c.chars += text.chars().count();
                    let shown = match c.split.as_mut() {
                        Some(s) => s.push(&text),
                        None => text,
                    };
                    if !shown.is_empty() || logprobs {
                        yield data(&meta.text_chunk(i, &shown, lp_json));
                    }
                }
                Event::Done(d) => {
                    let mut finish = finish_reason(d.finish);
                    if let (Some(split), Some(names)) = (c.split.take(), meta.tools.as_ref()) {
                        let held = split.finish();
                        let (content, calls) = tools::parse(&held, names);
                        if !content.is_empty() {
                            yield data(&meta.text_chunk(i, &content, None));
                        }
                        for (k, call) in calls.iter().enumerate() {
                            let head = ToolCallDelta {
                                index: k,
                                id: Some(meta.call_id(i, k)),
                                kind: Some("function"),
                                function: FunctionDelta { name: Some(call.name.clone()), arguments: String::new() },
                            };
                            yield data(&meta.chunk(i, Delta { tool_calls: vec![head], ..Delta::default() }, None, None));
                            let args = ToolCallDelta {
                                index: k,
                                id: None,
                                kind: None,
                                function: FunctionDelta { name: None, arguments: call.arguments.clone() },
                            };
                            yield data(&meta.chunk(i, Delta { tool_calls: vec![args], ..Delta::default() }, None, None));
                        }
                        if !calls.is_empty() {
                            finish = "tool_calls";
                        }
                    }
                    yield data(&meta.finish_chunk(i, finish));
                    c.done = Some(d);
                }
                Event::Error { kind, message } => {
                    yield data(&ApiError::from_worker(kind, message).body());
                    failed = true;
                    break;
                }
                Event::Gone => {
                    yield data(&gone().body());
                    failed = true;
                    break;
                }
                Event::Embeddings { .. } => {
                    yield data(&ApiError::internal("the worker answered with embeddings").body());
                    failed = true;
                    break;
                }
            }
        }
        if include_usage && !failed {
            let dones: Vec<&DoneInfo> = choices.iter().filter_map(|c| c.done.as_deref()).collect();
            if dones.len() == n_choices {
                yield data(&meta.usage_chunk(&dones));
            }
        }
        yield Ok(SseEvent::default().data("[DONE]"));
    };
    Sse::new(stream).keep_alive(KeepAlive::default())
}
