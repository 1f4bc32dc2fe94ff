//! The OpenAI response bodies of chat and text completions, built from what the worker
//! produced: whole responses, stream chunks, log-probabilities, tool calls and usage. Pure
//! functions; the wire shapes are the typed structs of [`body`].

use model_bucket_shared::protocol::{DoneInfo, FinishReason, TokenLogprob};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use crate::http::job::served::Finished;
use crate::http::job::tools;

pub mod body;
mod token_chunk;

use body::{
    Choice, Chunk, ChunkChoice, Completion, Delta, FunctionCall, Logprobs, Message, PromptDetails, ToolCall, Usage,
};
pub use token_chunk::TokenChunk;

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

    /// The whole response, choices in index order. `choices` is not empty.
    pub fn response(&self, choices: &[Finished]) -> Completion<'_> {
        let dones: Vec<&DoneInfo> = choices.iter().map(|c| &*c.done).collect();
        let first = dones[0];
        let cache_source = first.usage.cached_from.filter(|_| first.usage.cached_tokens > 0).map(|t| t.as_str());
        Completion {
            id: &self.id,
            object: self.object(false),
            created: self.created,
            model: &self.model,
            choices: choices.iter().enumerate().map(|(i, c)| self.choice(i, c)).collect(),
            usage: self.usage(&dones),
            timings: body::Timings {
                queue_ms: first.timings.queue_ms,
                prompt_ms: first.timings.prompt_ms,
                decode_ms: first.timings.decode_ms,
                cache_source,
                draft_n: dones.iter().map(|d| d.timings.drafted).sum(),
                draft_n_accepted: dones.iter().map(|d| d.timings.accepted).sum(),
            },
        }
    }

    fn choice(&self, index: usize, c: &Finished) -> Choice {
        let (content, calls) = match &self.tools {
            Some(names) => tools::parse(&c.text, names),
            None => (c.text.clone(), vec![]),
        };
        let finish_reason = if calls.is_empty() { finish_reason(c.done.finish) } else { "tool_calls" };
        let logprobs = c.logprobs.as_ref().map(|lp| self.logprobs(lp, 0));
        match self.kind {
            Kind::Chat => {
                let only_calls = content.is_empty() && !calls.is_empty();
                let tool_calls = calls
                    .into_iter()
                    .enumerate()
                    .map(|(k, call)| ToolCall {
                        id: self.call_id(index, k),
                        kind: "function",
                        function: FunctionCall { name: call.name, arguments: call.arguments },
                    })
                    .collect();
                let message = Message { role: "assistant", content: (!only_calls).then_some(content), tool_calls };
                Choice::Chat { index, message, logprobs, finish_reason }
            }
            Kind::Text => Choice::Text { index, text: content, logprobs, finish_reason },
        }
    }

    /// A tool call's ID: unique within the response, and across responses by the response ID.
    pub fn call_id(&self, choice: usize, k: usize) -> String {
        let tail = self.id.rsplit('-').next().unwrap_or("");
        format!("call_{tail}_{choice}_{k}")
    }

    /// The `logprobs` of a choice (or of one chunk): OpenAI's chat shape (`content`), or the
    /// completions shape with `text_offset` counted from `offset` characters.
    pub fn logprobs(&self, lp: &[TokenLogprob], offset: usize) -> Logprobs {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match self.kind {
            Kind::Chat => {
                let one = |bytes: &[u8], logprob: f32, top| body::TokenLogprob {
                    token: text(bytes),
                    logprob,
                    bytes: bytes.to_vec(),
                    top_logprobs: top,
                };
                let content = lp
                    .iter()
                    .map(|t| {
                        let top = t.top.iter().map(|(b, l)| one(b, *l, None)).collect();
                        one(&t.bytes, t.logprob, Some(top))
                    })
                    .collect();
                Logprobs::Chat { content, refusal: None }
            }
            Kind::Text => {
                let mut at = offset;
                let mut text_offset = Vec::with_capacity(lp.len());
                for t in lp {
                    text_offset.push(at);
                    at += text(&t.bytes).chars().count();
                }
                Logprobs::Text {
                    tokens: lp.iter().map(|t| text(&t.bytes)).collect(),
                    token_logprobs: lp.iter().map(|t| t.logprob).collect(),
                    top_logprobs: lp
                        .iter()
                        .map(|t| t.top.iter().map(|(b, l)| (text(b), (*l).into())).collect())
                        .collect(),
                    text_offset,
                }
            }
        }
    }

    /// Usage over all choices: each prompt's tokens once, every choice's completion tokens.
    pub fn usage(&self, dones: &[&DoneInfo]) -> Usage {
        let first_of_prompt = dones.iter().step_by(self.n.max(1));
        let prompt: u32 = first_of_prompt.clone().map(|d| d.usage.prompt_tokens).sum();
        let cached: u32 = first_of_prompt.map(|d| d.usage.cached_tokens).sum();
        let completion: u32 = dones.iter().map(|d| d.usage.completion_tokens).sum();
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: PromptDetails { cached_tokens: cached },
        }
    }

    /// One stream chunk for choice `index`: `delta` as such (chat), or its content as `text`
    /// (completions, where only text can be added).
    pub fn chunk(
        &self,
        index: usize,
        delta: Delta,
        logprobs: Option<Logprobs>,
        finish: Option<&'static str>,
    ) -> Chunk<'_> {
        let choice = match self.kind {
            Kind::Chat => ChunkChoice::Chat { index, delta, logprobs, finish_reason: finish },
            Kind::Text => {
                ChunkChoice::Text { index, text: delta.content.unwrap_or_default(), logprobs, finish_reason: finish }
            }
        };
        Chunk {
            id: &self.id,
            object: self.object(true),
            created: self.created,
            model: &self.model,
            choices: vec![choice],
            usage: None,
        }
    }

    /// The chunk of new text for choice `index`.
    pub fn text_chunk(&self, index: usize, text: &str, logprobs: Option<Logprobs>) -> Chunk<'_> {
        self.chunk(index, Delta { content: Some(text.to_string()), ..Delta::default() }, logprobs, None)
    }

    /// The chunk that ends choice `index`.
    pub fn finish_chunk(&self, index: usize, finish: &'static str) -> Chunk<'_> {
        self.chunk(index, Delta::default(), None, Some(finish))
    }

    /// The last chunk of a stream that asked for usage: no choices.
    pub fn usage_chunk(&self, dones: &[&DoneInfo]) -> Chunk<'_> {
        Chunk {
            id: &self.id,
            object: self.object(true),
            created: self.created,
            model: &self.model,
            choices: vec![],
            usage: Some(self.usage(dones)),
        }
    }
}

pub fn finish_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    }
}

#[cfg(test)]
mod tests;
