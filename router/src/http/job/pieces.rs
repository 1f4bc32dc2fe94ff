//! A one-choice chat or text answer as the dialects other than OpenAI render it: text as it
//! comes, the tool calls read from the answer, then how it ended. A local call's events are read
//! as they arrive (text that may start a call is held back until the end); a remote answer
//! (a peer's or the upstream's, in OpenAI's shape, asked for unstreamed) is read whole first.

use axum::response::Response;
use futures::stream::BoxStream;
use futures::StreamExt;
use http_body_util::BodyExt;
use model_bucket_shared::protocol::{FinishReason, Timings, Usage};
use serde_json::Value;

use crate::http::error::ApiError;
use crate::http::job::call::gone;
use crate::http::job::served::{Finished, Output, Served, Started};
use crate::http::job::tools::{self, Call, StreamSplit};
use crate::worker::Event;

/// One part of an answer, in order: texts, then calls, then the end (or a failure).
#[derive(Debug)]
pub enum Piece {
    Text(String),
    Call(Call),
    End(Ending),
    /// The answer broke off midway; nothing follows.
    Failed(ApiError),
}

/// How an answer ended.
#[derive(Debug, Clone, Default)]
pub struct Ending {
    pub finish: Option<FinishReason>,
    /// The answer was tool calls.
    pub called: bool,
    pub usage: Usage,
    pub timings: Timings,
}

/// The largest remote answer read, in bytes.
const MAX_REMOTE_BYTES: usize = 16 << 20;

/// The pieces of a routed one-choice answer. A remote failure (its status not a success) is
/// an error here, with the remote's status and message.
pub async fn pieces(served: Served) -> Result<BoxStream<'static, Piece>, ApiError> {
    match served {
        Served::Local(s) => Ok(local(s)),
        Served::Remote(resp) => Ok(futures::stream::iter(remote(resp).await?).boxed()),
    }
}

fn local(s: Started) -> BoxStream<'static, Piece> {
    let Started { output, tools, .. } = s;
    let mut calls = match output {
        Output::Streaming(calls) => calls,
        Output::Finished(mut f) => {
            return futures::stream::iter(finished(f.pop().expect("a job has a choice"), tools)).boxed()
        }
    };
    let (mut call, first) = calls.pop().expect("a started job has a call");
    async_stream::stream! {
        let mut split = tools.as_ref().map(|_| StreamSplit::default());
        let mut event = first;
        loop {
            match event {
                Event::Tokens { text, .. } => {
                    let shown = match split.as_mut() {
                        Some(s) => s.push(&text),
                        None => text,
                    };
                    if !shown.is_empty() {
                        yield Piece::Text(shown);
                    }
                }
                Event::Done(d) => {
                    let mut called = false;
                    if let (Some(split), Some(names)) = (split.take(), tools.as_ref()) {
                        let (content, found) = tools::parse(&split.finish(), names);
                        if !content.is_empty() {
                            yield Piece::Text(content);
                        }
                        called = !found.is_empty();
                        for c in found {
                            yield Piece::Call(c);
                        }
                    }
                    yield Piece::End(Ending { finish: Some(d.finish), called, usage: d.usage, timings: d.timings });
                    break;
                }
                Event::Error { kind, message } => {
                    yield Piece::Failed(ApiError::from_worker(kind, message));
                    break;
                }
                Event::Gone => {
                    yield Piece::Failed(gone());
                    break;
                }
                Event::Embeddings { .. } => {
                    yield Piece::Failed(ApiError::internal("the worker answered with embeddings"));
                    break;
                }
            }
            event = call.next().await;
        }
    }
    .boxed()
}

/// The pieces of a collected answer.
fn finished(f: Finished, tools: Option<Vec<String>>) -> Vec<Piece> {
    let (text, calls) = match &tools {
        Some(names) => tools::parse(&f.text, names),
        None => (f.text, vec![]),
    };
    let mut out = Vec::with_capacity(calls.len() + 2);
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    let called = !calls.is_empty();
    out.extend(calls.into_iter().map(Piece::Call));
    let d = f.done;
    out.push(Piece::End(Ending { finish: Some(d.finish), called, usage: d.usage, timings: d.timings }));
    out
}

/// A remote OpenAI answer, read whole.
async fn remote(resp: Response) -> Result<Vec<Piece>, ApiError> {
    let status = resp.status();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_REMOTE_BYTES)
        .collect()
        .await
        .map_err(|e| ApiError::bad_gateway(format!("the remote answer could not be read: {e}")))?
        .to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !status.is_success() {
        let message = v.pointer("/error/message").and_then(Value::as_str).unwrap_or("the remote server failed");
        return Err(ApiError { status, ..ApiError::bad_gateway(message.to_string()) });
    }
    from_openai(&v).ok_or_else(|| ApiError::bad_gateway("the remote answer is not a completion"))
}

/// The pieces of a whole OpenAI chat or text completion (its first choice).
pub fn from_openai(v: &Value) -> Option<Vec<Piece>> {
    let choice = v.pointer("/choices/0")?;
    let text = choice.pointer("/message/content").or_else(|| choice.get("text")).and_then(Value::as_str);
    let mut out = Vec::new();
    if let Some(t) = text.filter(|t| !t.is_empty()) {
        out.push(Piece::Text(t.to_string()));
    }
    let calls = choice.pointer("/message/tool_calls").and_then(Value::as_array).cloned().unwrap_or_default();
    for c in &calls {
        let name = c.pointer("/function/name").and_then(Value::as_str)?.to_string();
        let arguments = c.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}").to_string();
        out.push(Piece::Call(Call { name, arguments }));
    }
    let count = |p: &str| v.pointer(p).and_then(Value::as_u64).unwrap_or(0) as u32;
    let finish = match choice.get("finish_reason").and_then(Value::as_str) {
        Some("length") => FinishReason::Length,
        _ => FinishReason::Stop,
    };
    let usage = Usage {
        prompt_tokens: count("/usage/prompt_tokens"),
        completion_tokens: count("/usage/completion_tokens"),
        cached_tokens: count("/usage/prompt_tokens_details/cached_tokens"),
        cached_from: None,
    };
    out.push(Piece::End(Ending {
        finish: Some(finish),
        called: !calls.is_empty(),
        usage,
        timings: Timings::default(),
    }));
    Some(out)
}

/// A whole answer: its text, its calls and how it ended.
#[derive(Debug, Default)]
pub struct Whole {
    pub text: String,
    pub calls: Vec<Call>,
    pub ending: Ending,
}

/// Reads every piece; a failure midway fails the whole.
pub async fn whole(mut pieces: BoxStream<'static, Piece>) -> Result<Whole, ApiError> {
    let mut w = Whole::default();
    while let Some(p) = pieces.next().await {
        match p {
            Piece::Text(t) => w.text.push_str(&t),
            Piece::Call(c) => w.calls.push(c),
            Piece::End(e) => {
                w.ending = e;
                return Ok(w);
            }
            Piece::Failed(e) => return Err(e),
        }
    }
    Err(ApiError::internal("the answer ended without an end"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_openai_answer_becomes_pieces() {
        let v = serde_json::json!({
            "choices": [{"message": {"content": "hi", "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}
            ]}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 3}}
        });
        let p = from_openai(&v).unwrap();
        assert!(matches!(&p[0], Piece::Text(t) if t == "hi"));
        assert!(matches!(&p[1], Piece::Call(c) if c.name == "f" && c.arguments == r#"{"a":1}"#));
        let Piece::End(e) = &p[2] else { panic!("{p:?}") };
        assert!(e.called);
        assert_eq!((e.usage.prompt_tokens, e.usage.completion_tokens, e.usage.cached_tokens), (5, 2, 3));
        let text = from_openai(&serde_json::json!({"choices": [{"text": "t", "finish_reason": "length"}]})).unwrap();
        assert!(matches!(&text[1], Piece::End(e) if e.finish == Some(FinishReason::Length)));
        assert!(from_openai(&serde_json::json!({"error": {}})).is_none());
    }
}
