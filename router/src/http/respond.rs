//! The OpenAI response bodies of chat and text completions: whole responses, stream chunks,
//! log-probabilities, tool calls and usage. Pure functions of what the worker produced.

use model_bucket_shared::protocol::{DoneInfo, FinishReason, TokenLogprob};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::tools;

/// Which endpoint a response is shaped for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Text,
}

/// Response fields fixed for the whole request.
pub struct Meta {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub kind: Kind,
    /// Names of the tools offered, when the answer is to be read for calls.
    pub tools: Option<Vec<String>>,
    /// Choices per prompt (`n`): the choice at index `i` answers prompt `i / n`.
    pub n: usize,
}

/// What one choice produced, once it ended.
pub struct Finished {
    pub text: String,
    /// One per generated token, when asked for.
    pub logprobs: Option<Vec<TokenLogprob>>,
    pub done: Box<DoneInfo>,
}

impl Meta {
    pub fn new(kind: Kind, model: String, tools: Option<Vec<String>>, n: usize) -> Meta {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let id = match kind {
            Kind::Chat => format!("chatcmpl-{nanos:x}{seq:x}"),
            Kind::Text => format!("cmpl-{nanos:x}{seq:x}"),
        };
        let created = (nanos / 1_000_000_000) as u64;
        Meta { id, created, model, kind, tools, n }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Text, _) => "text_completion",
        }
    }

    /// The whole response, choices in index order.
    pub fn response(&self, choices: &[Finished]) -> Value {
        let rendered: Vec<Value> = choices.iter().enumerate().map(|(i, c)| self.choice(i, c)).collect();
        let dones: Vec<&DoneInfo> = choices.iter().map(|c| &*c.done).collect();
        let timings = &dones[0].timings;
        let cache = dones[0].usage.cached_from.filter(|_| dones[0].usage.cached_tokens > 0).map(|t| t.as_str());
        json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": self.model,
            "choices": rendered,
            "usage": self.usage(&dones),
            "timings": {
                "queue_ms": timings.queue_ms,
                "prompt_ms": timings.prompt_ms,
                "decode_ms": timings.decode_ms,
                "cache_source": cache,
            },
        })
    }

    fn choice(&self, index: usize, c: &Finished) -> Value {
        let (content, calls) = match &self.tools {
            Some(names) => tools::parse(&c.text, names),
            None => (c.text.clone(), vec![]),
        };
        let finish = if calls.is_empty() { finish_reason(c.done.finish) } else { "tool_calls" };
        let logprobs = match &c.logprobs {
            None => Value::Null,
            Some(lp) => self.logprobs(lp, 0),
        };
        match self.kind {
            Kind::Chat => {
                let mut message = Map::new();
                message.insert("role".into(), json!("assistant"));
                let empty = content.is_empty() && !calls.is_empty();
                message.insert("content".into(), if empty { Value::Null } else { json!(content) });
                if !calls.is_empty() {
                    let calls: Vec<Value> = calls
                        .iter()
                        .enumerate()
                        .map(|(k, call)| {
                            json!({
                                "id": self.call_id(index, k),
                                "type": "function",
                                "function": { "name": call.name, "arguments": call.arguments },
                            })
                        })
                        .collect();
                    message.insert("tool_calls".into(), Value::Array(calls));
                }
                json!({ "index": index, "message": message, "logprobs": logprobs, "finish_reason": finish })
            }
            Kind::Text => json!({ "index": index, "text": content, "logprobs": logprobs, "finish_reason": finish }),
        }
    }

    /// A tool call's ID: unique within the response, and across responses by the response ID.
    pub fn call_id(&self, choice: usize, k: usize) -> String {
        let tail = self.id.rsplit('-').next().unwrap_or("");
        format!("call_{tail}_{choice}_{k}")
    }

    /// The `logprobs` object of a choice (or of one chunk): OpenAI's chat shape (`content`), or
    /// the completions shape with `text_offset` counted from `offset` characters.
    pub fn logprobs(&self, lp: &[TokenLogprob], offset: usize) -> Value {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match self.kind {
            Kind::Chat => {
                let content: Vec<Value> = lp
                    .iter()
                    .map(|t| {
                        let top: Vec<Value> =
                            t.top.iter().map(|(b, l)| json!({ "token": text(b), "logprob": l, "bytes": b })).collect();
                        json!({ "token": text(&t.bytes), "logprob": t.logprob, "bytes": t.bytes, "top_logprobs": top })
                    })
                    .collect();
                json!({ "content": content, "refusal": null })
            }
            Kind::Text => {
                let mut at = offset;
                let mut offsets = Vec::with_capacity(lp.len());
                for t in lp {
                    offsets.push(at);
                    at += text(&t.bytes).chars().count();
                }
                let top: Vec<Value> = lp
                    .iter()
                    .map(|t| Value::Object(t.top.iter().map(|(b, l)| (text(b), json!(l))).collect()))
                    .collect();
                json!({
                    "tokens": lp.iter().map(|t| text(&t.bytes)).collect::<Vec<_>>(),
                    "token_logprobs": lp.iter().map(|t| t.logprob).collect::<Vec<_>>(),
                    "top_logprobs": top,
                    "text_offset": offsets,
                })
            }
        }
    }

    /// Usage over all choices: each prompt's tokens once, every choice's completion tokens.
    pub fn usage(&self, dones: &[&DoneInfo]) -> Value {
        let first_of_prompt = dones.iter().step_by(self.n.max(1));
        let prompt: u32 = first_of_prompt.clone().map(|d| d.usage.prompt_tokens).sum();
        let cached: u32 = first_of_prompt.map(|d| d.usage.cached_tokens).sum();
        let completion: u32 = dones.iter().map(|d| d.usage.completion_tokens).sum();
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": { "cached_tokens": cached },
        })
    }

    /// One stream chunk for choice `index`: `delta` (chat) or `text` (completions).
    pub fn chunk(&self, index: usize, delta: Value, logprobs: Value, finish: Option<&str>) -> Value {
        let choice = match self.kind {
            Kind::Chat => json!({ "index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish }),
            Kind::Text => json!({ "index": index, "text": delta, "logprobs": logprobs, "finish_reason": finish }),
        };
        json!({ "id": self.id, "object": self.object(true), "created": self.created, "model": self.model, "choices": [choice] })
    }

    /// The chunk of new text for choice `index`.
    pub fn text_chunk(&self, index: usize, text: &str, logprobs: Value) -> Value {
        let delta = match self.kind {
            Kind::Chat => json!({ "content": text }),
            Kind::Text => json!(text),
        };
        self.chunk(index, delta, logprobs, None)
    }

    /// The chunk that ends choice `index`.
    pub fn finish_chunk(&self, index: usize, finish: &str) -> Value {
        let delta = match self.kind {
            Kind::Chat => json!({}),
            Kind::Text => json!(""),
        };
        self.chunk(index, delta, Value::Null, Some(finish))
    }

    /// The last chunk of a stream that asked for usage: no choices.
    pub fn usage_chunk(&self, dones: &[&DoneInfo]) -> Value {
        json!({ "id": self.id, "object": self.object(true), "created": self.created, "model": self.model, "choices": [], "usage": self.usage(dones) })
    }
}

pub fn finish_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    }
}

/// The text chunk of one choice of a stream, rendered once around a marker so that each token
/// only escapes its text between a fixed head and tail (no JSON tree per token).
pub struct TokenChunk {
    head: String,
    tail: String,
}

impl TokenChunk {
    pub fn new(meta: &Meta, index: usize) -> TokenChunk {
        const MARK: &str = "\u{0}token\u{0}";
        let full = meta.text_chunk(index, MARK, Value::Null).to_string();
        let encoded = serde_json::to_string(MARK).expect("a string encodes");
        let (head, tail) = full.split_once(&encoded).expect("the marker is in the chunk");
        TokenChunk { head: head.to_string(), tail: tail.to_string() }
    }

    /// The chunk for `text`, written into `buf` (reused between tokens).
    pub fn render<'b>(&self, text: &str, buf: &'b mut Vec<u8>) -> &'b str {
        buf.clear();
        buf.extend_from_slice(self.head.as_bytes());
        serde_json::to_writer(&mut *buf, text).expect("writing to a Vec cannot fail");
        buf.extend_from_slice(self.tail.as_bytes());
        std::str::from_utf8(buf).expect("JSON is UTF-8")
    }
}

#[cfg(test)]
mod tests;
