//! Ollama answers: NDJSON lines while the text comes (`"done": false`), then a last line with
//! `"done": true`, the reason and the counts and durations (nanoseconds); or, unstreamed, that
//! last line holding the whole answer. Chat lines carry a `message`, generate lines a
//! `response`. A stream that breaks off ends with an `{"error": ...}` line.

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::stream::BoxStream;
use futures::StreamExt;
use model_bucket_shared::protocol::FinishReason;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::time::Instant;

use crate::http::job::ids::now_nanos;
use crate::http::job::pieces::{Ending, Piece, Whole};
use crate::http::job::tools::Call;

/// Which endpoint the lines are shaped for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Chat,
    Generate,
}

/// `created_at`: now, in RFC 3339 (UTC).
pub fn now_rfc3339() -> String {
    rfc3339(now_nanos())
}

/// `nanos` since the epoch as `YYYY-MM-DDTHH:MM:SS.fffffffffZ`.
pub fn rfc3339(nanos: u128) -> String {
    let secs = (nanos / 1_000_000_000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        nanos % 1_000_000_000
    )
}

fn calls_json(calls: &[Call]) -> Vec<Value> {
    calls
        .iter()
        .map(|c| {
            let args =
                serde_json::from_str::<Value>(&c.arguments).ok().filter(Value::is_object).unwrap_or_else(|| json!({}));
            json!({ "function": { "name": c.name, "arguments": args } })
        })
        .collect()
}

/// One line of text (and calls).
fn line(shape: Shape, model: &str, text: &str, calls: &[Call], done: bool) -> Value {
    let mut v = json!({ "model": model, "created_at": now_rfc3339() });
    match shape {
        Shape::Chat => {
            v["message"] = json!({ "role": "assistant", "content": text });
            if !calls.is_empty() {
                v["message"]["tool_calls"] = Value::Array(calls_json(calls));
            }
        }
        Shape::Generate => v["response"] = json!(text),
    }
    v["done"] = json!(done);
    v
}

/// The fields of the last line.
fn finish(v: &mut Value, e: &Ending, started: Instant) {
    let ns = |ms: f64| (ms * 1e6) as u64;
    v["done_reason"] = json!(match e.finish {
        Some(FinishReason::Length) => "length",
        _ => "stop",
    });
    v["total_duration"] = json!(started.elapsed().as_nanos() as u64);
    v["load_duration"] = json!(ns(e.timings.queue_ms));
    v["prompt_eval_count"] = json!(e.usage.prompt_tokens);
    v["prompt_eval_duration"] = json!(ns(e.timings.prompt_ms));
    v["eval_count"] = json!(e.usage.completion_tokens);
    v["eval_duration"] = json!(ns(e.timings.decode_ms));
}

/// The whole answer as one object.
pub fn whole(shape: Shape, model: &str, w: &Whole, started: Instant) -> Value {
    let mut v = line(shape, model, &w.text, &w.calls, true);
    finish(&mut v, &w.ending, started);
    v
}

/// A JSON value as one NDJSON line.
pub fn ndjson_line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).expect("a JSON value encodes");
    b.push(b'\n');
    Bytes::from(b)
}

/// A stream of JSON values as an `application/x-ndjson` response.
pub fn ndjson(lines: BoxStream<'static, Value>) -> Response {
    let body = Body::from_stream(lines.map(|v| Ok::<_, Infallible>(ndjson_line(&v))));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

/// The lines of a streamed answer.
pub fn lines(
    shape: Shape,
    model: String,
    mut pieces: BoxStream<'static, Piece>,
    started: Instant,
) -> BoxStream<'static, Value> {
    async_stream::stream! {
        let mut calls = Vec::new();
        while let Some(p) = pieces.next().await {
            match p {
                Piece::Text(t) => yield line(shape, &model, &t, &[], false),
                Piece::Call(c) => calls.push(c),
                Piece::End(e) => {
                    if !calls.is_empty() {
                        yield line(shape, &model, "", &calls, false);
                    }
                    let mut last = line(shape, &model, "", &[], true);
                    finish(&mut last, &e, started);
                    yield last;
                    break;
                }
                Piece::Failed(e) => {
                    yield json!({ "error": e.message });
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

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        // 2026-12-07T16:00:00.5Z
        assert_eq!(rfc3339(1_796_659_200_500_000_000), "2026-12-07T16:00:00.500000000Z");
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn whole_chat_with_calls() {
        let w = Whole {
            text: String::new(),
            calls: vec![Call { name: "f".into(), arguments: r#"{"a":1}"#.into() }],
            ending: Ending { finish: Some(FinishReason::Stop), called: true, ..Ending::default() },
        };
        let v = whole(Shape::Chat, "m", &w, Instant::now());
        assert_eq!(v["message"]["tool_calls"][0], json!({"function": {"name": "f", "arguments": {"a": 1}}}));
        assert_eq!((v["done"].clone(), v["done_reason"].clone()), (json!(true), json!("stop")));
        let g = whole(Shape::Generate, "m", &Whole { text: "hi".into(), ..Whole::default() }, Instant::now());
        assert_eq!(g["response"], "hi");
        assert!(g.get("message").is_none());
    }
}
