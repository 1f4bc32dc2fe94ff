//! Anthropic Messages answers: the whole message, and the stream's events
//! (`message_start`, `content_block_start`/`_delta`/`_stop` per block, `message_delta` with the
//! stop reason and usage, `message_stop`; `error` when the answer breaks off).

use axum::response::sse::Event as SseEvent;
use futures::stream::BoxStream;
use futures::StreamExt;
use model_bucket_shared::protocol::{FinishReason, Usage};
use serde_json::{json, Value};
use std::convert::Infallible;

use crate::http::envelope::Dialect;
use crate::http::job::ids::unique;
use crate::http::job::pieces::{Ending, Piece, Whole};
use crate::http::job::tools::Call;

/// `stop_reason`.
pub fn stop_reason(e: &Ending) -> &'static str {
    match (e.called, e.finish) {
        (true, _) => "tool_use",
        (false, Some(FinishReason::Length)) => "max_tokens",
        _ => "end_turn",
    }
}

/// Anthropic's usage: `input_tokens` are the prompt tokens not read from a cache.
pub fn usage(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens.saturating_sub(u.cached_tokens),
        "output_tokens": u.completion_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": 0,
    })
}

/// A call's `input`: its arguments as an object (anything else becomes `{}`).
fn input(c: &Call) -> Value {
    serde_json::from_str::<Value>(&c.arguments).ok().filter(Value::is_object).unwrap_or_else(|| json!({}))
}

fn tool_use(c: &Call, input: Value) -> Value {
    json!({ "type": "tool_use", "id": unique("toolu_"), "name": c.name, "input": input })
}

/// The whole message.
pub fn message(model: &str, w: &Whole) -> Value {
    let mut content = Vec::new();
    if !w.text.is_empty() || w.calls.is_empty() {
        content.push(json!({ "type": "text", "text": w.text }));
    }
    content.extend(w.calls.iter().map(|c| tool_use(c, input(c))));
    json!({
        "id": unique("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(&w.ending),
        "stop_sequence": null,
        "usage": usage(&w.ending.usage),
    })
}

fn event(name: &'static str, data: Value) -> (&'static str, Value) {
    (name, data)
}

/// The stream's events for `pieces`, as SSE.
pub fn events(model: String, pieces: BoxStream<'static, Piece>) -> BoxStream<'static, Result<SseEvent, Infallible>> {
    named_events(model, pieces).map(|(name, data)| Ok(SseEvent::default().event(name).data(data.to_string()))).boxed()
}

/// The stream's events for `pieces`: each event's name and data.
fn named_events(model: String, mut pieces: BoxStream<'static, Piece>) -> BoxStream<'static, (&'static str, Value)> {
    async_stream::stream! {
        yield event("message_start", json!({
            "type": "message_start",
            "message": {
                "id": unique("msg_"), "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": { "input_tokens": 0, "output_tokens": 0 },
            },
        }));
        // The open text block's index, and the next block's.
        let mut text_open = false;
        let mut next = 0usize;
        while let Some(p) = pieces.next().await {
            match p {
                Piece::Text(t) => {
                    if !text_open {
                        yield event("content_block_start", json!({
                            "type": "content_block_start", "index": next,
                            "content_block": { "type": "text", "text": "" },
                        }));
                        text_open = true;
                    }
                    yield event("content_block_delta", json!({
                        "type": "content_block_delta", "index": next,
                        "delta": { "type": "text_delta", "text": t },
                    }));
                }
                Piece::Call(c) => {
                    if text_open {
                        yield event("content_block_stop", json!({ "type": "content_block_stop", "index": next }));
                        text_open = false;
                        next += 1;
                    }
                    let args = input(&c).to_string();
                    yield event("content_block_start", json!({
                        "type": "content_block_start", "index": next,
                        "content_block": tool_use(&c, json!({})),
                    }));
                    yield event("content_block_delta", json!({
                        "type": "content_block_delta", "index": next,
                        "delta": { "type": "input_json_delta", "partial_json": args },
                    }));
                    yield event("content_block_stop", json!({ "type": "content_block_stop", "index": next }));
                    next += 1;
                }
                Piece::End(e) => {
                    if !text_open && next == 0 {
                        yield event("content_block_start", json!({
                            "type": "content_block_start", "index": 0,
                            "content_block": { "type": "text", "text": "" },
                        }));
                        text_open = true;
                    }
                    if text_open {
                        yield event("content_block_stop", json!({ "type": "content_block_stop", "index": next }));
                    }
                    yield event("message_delta", json!({
                        "type": "message_delta",
                        "delta": { "stop_reason": stop_reason(&e), "stop_sequence": null },
                        "usage": usage(&e.usage),
                    }));
                    yield event("message_stop", json!({ "type": "message_stop" }));
                    break;
                }
                Piece::Failed(err) => {
                    yield event("error", Dialect::Anthropic.body(err.status, &err.message));
                    break;
                }
            }
        }
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ending(called: bool, finish: FinishReason) -> Ending {
        Ending {
            finish: Some(finish),
            called,
            usage: Usage { prompt_tokens: 10, completion_tokens: 4, cached_tokens: 6, cached_from: None },
            ..Ending::default()
        }
    }

    #[test]
    fn whole_message() {
        let w = Whole {
            text: String::new(),
            calls: vec![Call { name: "f".into(), arguments: r#"{"a":1}"#.into() }],
            ending: ending(true, FinishReason::Stop),
        };
        let m = message("m", &w);
        assert_eq!(m["content"].as_array().unwrap().len(), 1);
        assert_eq!(m["content"][0]["input"], json!({"a": 1}));
        assert!(m["content"][0]["id"].as_str().unwrap().starts_with("toolu_"));
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(m["usage"]["input_tokens"], 4);
        assert_eq!(m["usage"]["cache_read_input_tokens"], 6);
        let t = Whole { text: "hi".into(), calls: vec![], ending: ending(false, FinishReason::Length) };
        assert_eq!(message("m", &t)["stop_reason"], "max_tokens");
    }

    #[tokio::test]
    async fn stream_events_in_order() {
        let pieces = futures::stream::iter(vec![
            Piece::Text("a".into()),
            Piece::Text("b".into()),
            Piece::Call(Call { name: "f".into(), arguments: "{}".into() }),
            Piece::End(ending(true, FinishReason::Stop)),
        ])
        .boxed();
        let events: Vec<(&str, Value)> = named_events("m".into(), pieces).collect().await;
        let names: Vec<&str> = events.iter().map(|e| e.0).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        // Every event names itself; the text is block 0, the call block 1.
        assert!(events.iter().all(|(name, data)| data["type"] == *name));
        let index = |i: usize| events[i].1["index"].as_u64();
        assert_eq!([index(1), index(3), index(4), index(5), index(7)], [Some(0), Some(0), Some(0), Some(1), Some(1)]);
        assert_eq!(events[2].1["delta"], json!({"type": "text_delta", "text": "a"}));
        assert_eq!(events[5].1["content_block"]["type"], "tool_use");
        assert_eq!(events[6].1["delta"], json!({"type": "input_json_delta", "partial_json": "{}"}));
        assert_eq!(events[8].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(events[8].1["usage"]["output_tokens"], 4);

        // A failure midway is an error event, and nothing follows it.
        let failing = futures::stream::iter(vec![
            Piece::Text("a".into()),
            Piece::Failed(crate::http::error::ApiError::bad_gateway("gone")),
        ])
        .boxed();
        let events: Vec<(&str, Value)> = named_events("m".into(), failing).collect().await;
        assert_eq!(events.last().unwrap().0, "error");
        assert_eq!(events.last().unwrap().1["error"]["type"], "api_error");
    }
}
