//! Responses answers: the response object, and the stream's events (`response.created`,
//! `response.in_progress`, per output item `response.output_item.added`, its content or
//! argument deltas and `.done` events, `response.output_item.done`, then `response.completed`,
//! `response.incomplete` or `response.failed`), each with its `sequence_number`.

use axum::response::sse::Event as SseEvent;
use futures::stream::BoxStream;
use futures::StreamExt;
use model_bucket_shared::protocol::{FinishReason, Usage};
use serde_json::{json, Value};
use std::convert::Infallible;

use crate::http::job::ids::unique;
use crate::http::job::pieces::{Ending, Piece, Whole};
use crate::http::job::tools::Call;

/// What a response echoes of its request, fixed before it runs.
#[derive(Debug, Clone)]
pub struct Head {
    pub id: String,
    pub created_at: u64,
    pub model: String,
    /// The request's fields echoed back: instructions, max_output_tokens, tools, ...
    pub echo: Value,
    pub previous_response_id: Option<String>,
    pub store: bool,
}

/// The output items' IDs, made as the items come.
#[derive(Debug, Clone)]
struct Ids {
    message: String,
}

fn usage(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": { "cached_tokens": u.cached_tokens },
        "output_tokens": u.completion_tokens,
        "output_tokens_details": { "reasoning_tokens": 0 },
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    })
}

/// The response object in a state: `status` and, once known, output and usage.
pub fn object(h: &Head, status: &str, output: Vec<Value>, ending: Option<&Ending>) -> Value {
    let mut v = json!({
        "id": h.id,
        "object": "response",
        "created_at": h.created_at,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": null,
        "model": h.model,
        "output": output,
        "previous_response_id": h.previous_response_id,
        "store": h.store,
        "usage": ending.map(|e| usage(&e.usage)),
    });
    if let (Some(o), Some(echo)) = (v.as_object_mut(), h.echo.as_object()) {
        for (k, x) in echo {
            o.insert(k.clone(), x.clone());
        }
    }
    if status == "incomplete" {
        v["incomplete_details"] = json!({ "reason": "max_output_tokens" });
    }
    v
}

/// `completed`, or `incomplete` when the answer ran out of `max_output_tokens`.
pub fn status(e: &Ending) -> &'static str {
    if !e.called && e.finish == Some(FinishReason::Length) {
        "incomplete"
    } else {
        "completed"
    }
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "type": "message", "id": id, "status": status, "role": "assistant",
        "content": [{ "type": "output_text", "text": text, "annotations": [], "logprobs": [] }],
    })
}

fn call_item(id: &str, call_id: &str, c: &Call, arguments: &str, status: &str) -> Value {
    json!({ "type": "function_call", "id": id, "call_id": call_id, "name": c.name, "arguments": arguments, "status": status })
}

/// The output items of a whole answer: its text (when there is text, or nothing else), then
/// its calls; and each call's `call_id`, in order.
pub fn output(w: &Whole) -> (Vec<Value>, Vec<String>) {
    // A message cut short by `max_output_tokens` is itself `incomplete`.
    let item_status = if status(&w.ending) == "incomplete" { "incomplete" } else { "completed" };
    let mut items = Vec::new();
    if !w.text.is_empty() || w.calls.is_empty() {
        items.push(message_item(&unique("msg_"), &w.text, item_status));
    }
    let mut call_ids = Vec::new();
    for c in &w.calls {
        let call_id = unique("call_");
        items.push(call_item(&unique("fc_"), &call_id, c, &c.arguments, "completed"));
        call_ids.push(call_id);
    }
    (items, call_ids)
}

/// The assistant's turn as a chat message, for the stored conversation.
pub fn assistant_message(text: &str, calls: &[Call], call_ids: &[String]) -> Value {
    let mut m = json!({ "role": "assistant", "content": text });
    if !calls.is_empty() {
        m["tool_calls"] = calls
            .iter()
            .zip(call_ids)
            .map(|(c, id)| json!({ "id": id, "type": "function", "function": { "name": c.name, "arguments": c.arguments } }))
            .collect();
    }
    m
}

/// The events that end the message item `id` at `at` holding `text`, and the item.
fn close_text(id: &str, text: &str, at: usize, status: &str) -> (Vec<(&'static str, Value)>, Value) {
    let place = json!({ "item_id": id, "output_index": at, "content_index": 0 });
    let mut done = place.clone();
    done["text"] = json!(text);
    done["logprobs"] = json!([]);
    let mut part = place;
    part["part"] = json!({ "type": "output_text", "text": text, "annotations": [], "logprobs": [] });
    let item = message_item(id, text, status);
    let events = vec![
        ("response.output_text.done", done),
        ("response.content_part.done", part),
        ("response.output_item.done", json!({ "output_index": at, "item": item.clone() })),
    ];
    (events, item)
}

/// How a streamed response ended, for storing: the final object and the assistant's turn.
pub struct Outcome {
    pub response: Value,
    pub assistant: Value,
}

/// The stream's events. `done` runs once with the final object when the response ends (not
/// when it fails), before the last event goes out: a client that has it may retrieve or
/// continue the response at once. It says whether the response was kept.
pub fn events<F>(
    head: Head,
    mut pieces: BoxStream<'static, Piece>,
    done: impl FnOnce(Outcome) -> F + Send + 'static,
) -> BoxStream<'static, Result<SseEvent, Infallible>>
where
    F: std::future::Future<Output = bool> + Send + 'static,
{
    async_stream::stream! {
        let mut seq = 0u64;
        let mut ev = move |name: &'static str, mut data: Value| {
            data["type"] = json!(name);
            data["sequence_number"] = json!(seq);
            seq += 1;
            Ok::<_, Infallible>(SseEvent::default().event(name).data(data.to_string()))
        };
        yield ev("response.created", json!({ "response": object(&head, "in_progress", vec![], None) }));
        yield ev("response.in_progress", json!({ "response": object(&head, "in_progress", vec![], None) }));
        let ids = Ids { message: unique("msg_") };
        let mut text = String::new();
        let mut text_open = false;
        let mut items: Vec<Value> = Vec::new();
        let mut calls: Vec<Call> = Vec::new();
        let mut call_ids: Vec<String> = Vec::new();
        let mut done = Some(done);
        while let Some(p) = pieces.next().await {
            match p {
                Piece::Text(t) => {
                    let at = items.len();
                    if !text_open {
                        let mut item = message_item(&ids.message, "", "in_progress");
                        item["content"] = json!([]);
                        yield ev("response.output_item.added", json!({ "output_index": at, "item": item }));
                        yield ev("response.content_part.added", json!({
                            "item_id": ids.message, "output_index": at, "content_index": 0,
                            "part": { "type": "output_text", "text": "", "annotations": [], "logprobs": [] },
                        }));
                        text_open = true;
                    }
                    yield ev("response.output_text.delta", json!({
                        "item_id": ids.message, "output_index": at, "content_index": 0, "delta": t, "logprobs": [],
                    }));
                    text.push_str(&t);
                }
                Piece::Call(c) => {
                    if text_open {
                        let (events, item) = close_text(&ids.message, &text, items.len(), "completed");
                        for (name, d) in events {
                            yield ev(name, d);
                        }
                        items.push(item);
                        text_open = false;
                    }
                    let at = items.len();
                    let (id, call_id) = (unique("fc_"), unique("call_"));
                    yield ev("response.output_item.added", json!({ "output_index": at, "item": call_item(&id, &call_id, &c, "", "in_progress") }));
                    yield ev("response.function_call_arguments.delta", json!({ "item_id": id, "output_index": at, "delta": c.arguments }));
                    yield ev("response.function_call_arguments.done", json!({ "item_id": id, "output_index": at, "name": c.name, "arguments": c.arguments }));
                    let item = call_item(&id, &call_id, &c, &c.arguments, "completed");
                    yield ev("response.output_item.done", json!({ "output_index": at, "item": item }));
                    items.push(item);
                    calls.push(c);
                    call_ids.push(call_id);
                }
                Piece::End(e) => {
                    if items.is_empty() && !text_open {
                        // An empty answer is an empty message, as in the whole response.
                        let mut item = message_item(&ids.message, "", "in_progress");
                        item["content"] = json!([]);
                        yield ev("response.output_item.added", json!({ "output_index": 0, "item": item }));
                        yield ev("response.content_part.added", json!({
                            "item_id": ids.message, "output_index": 0, "content_index": 0,
                            "part": { "type": "output_text", "text": "", "annotations": [], "logprobs": [] },
                        }));
                        text_open = true;
                    }
                    let status = status(&e);
                    if text_open {
                        let (events, item) = close_text(&ids.message, &text, items.len(), status);
                        for (name, d) in events {
                            yield ev(name, d);
                        }
                        items.push(item);
                    }
                    let mut response = object(&head, status, items.clone(), Some(&e));
                    let name = if status == "completed" { "response.completed" } else { "response.incomplete" };
                    if let Some(done) = done.take() {
                        let assistant = assistant_message(&text, &calls, &call_ids);
                        if !done(Outcome { response: response.clone(), assistant }).await {
                            response["store"] = json!(false);
                        }
                    }
                    yield ev(name, json!({ "response": response }));
                    break;
                }
                Piece::Failed(err) => {
                    let mut response = object(&head, "failed", items.clone(), None);
                    response["error"] = json!({ "code": "server_error", "message": err.message });
                    yield ev("response.failed", json!({ "response": response }));
                    break;
                }
            }
        }
    }
    .boxed()
}
