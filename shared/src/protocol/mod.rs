//! The router–worker protocol: messages carried as length-prefixed `bincode` frames over a
//! local socket (see [`frame`]).
//!
//! The first frame each way is [`ToWorker::Hello`] / [`FromWorker::HelloAck`]; a worker that
//! sees another [`PROTOCOL_VERSION`] answers [`FromWorker::Error`] with
//! [`ErrorKind::ProtocolMismatch`] and exits with [`EXIT_PROTOCOL_MISMATCH`].
//!
//! bincode encodes enum variants by position: append new variants and fields at the end, never
//! reorder, and bump [`PROTOCOL_VERSION`] on any change.

pub mod frame;

use serde::{Deserialize, Serialize};

/// Version of the message set below. Both sides must agree exactly.
pub const PROTOCOL_VERSION: u32 = 8;

/// Exit code of a worker whose peer spoke another protocol version.
pub const EXIT_PROTOCOL_MISMATCH: i32 = 3;
/// Exit code of a worker that could not load its model.
pub const EXIT_LOAD_FAILED: i32 = 4;
/// Exit code of a worker that could not reach or lost its socket before serving.
pub const EXIT_SOCKET: i32 = 5;
/// The environment variable in which the router gives a worker its own pid, so that a worker
/// can tell that its parent died before it could ask to die with it.
pub const PARENT_PID_ENV: &str = "EDEN_PARENT_PID";

/// A request's ID, unique per connection; chosen by the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId(pub u64);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Router → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToWorker {
    Hello {
        version: u32,
    },
    Generate(Box<GenerateRequest>),
    /// Stop a request at the next decode step; it ends with `Done { finish: Cancelled }`.
    Cancel {
        id: RequestId,
    },
    /// Stop accepting requests, let running ones finish for up to `grace_ms`, then exit 0.
    Shutdown {
        grace_ms: u64,
    },
    /// Embed texts; answered by one [`FromWorker::Embeddings`] or an `Error`.
    Embed(Box<EmbedRequest>),
    /// Hold at most `bytes` of evictable memory (the host prompt cache and the embedding
    /// context): drop the least recently used beyond it at once (prefixes go to the disk cache
    /// first) and grow no further. Answered by [`FromWorker::Held`]. The embedding context
    /// counts for `embed_bytes` while it exists (its buffers fill as inputs come), or for what
    /// its making grew the worker by, if more.
    Allow {
        bytes: u64,
        embed_bytes: u64,
    },
}

/// Texts (or token arrays) to embed, each on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedRequest {
    pub id: RequestId,
    /// [`Prompt::Text`] or [`Prompt::Tokens`].
    pub inputs: Vec<Prompt>,
    /// LoRA adapters applied to the model for this request (none: the base alone).
    pub lora: Vec<LoraUse>,
}

/// The largest LoRA scale a request may ask for, either sign (llama.cpp scales the adapter's
/// output by it; far beyond 1 the logits overflow).
pub const MAX_LORA_SCALE: f32 = 10.0;

/// A LoRA adapter the worker loaded (`--lora PATH`), applied at `scale` (0: not at all).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraUse {
    /// The adapter's path as the worker was given it (lossy UTF-8).
    pub path: String,
    pub scale: f32,
}

/// Worker → router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FromWorker {
    HelloAck {
        version: u32,
    },
    /// The model is loaded and requests can be served.
    Ready(ReadyInfo),
    /// New text of one request. `n_tokens` is how many generated tokens it covers; several
    /// ready tokens travel in one message.
    Tokens {
        id: RequestId,
        text: String,
        n_tokens: u32,
        /// One entry per generated token of this message, in order, when the request asked
        /// for them ([`GenerateRequest::logprobs`]); empty otherwise.
        logprobs: Vec<TokenLogprob>,
    },
    /// A request ended; no more messages follow for its ID.
    Done(Box<DoneInfo>),
    /// A request failed (`id` set; it gets no `Done`), or the worker itself did (`id` none).
    Error {
        id: Option<RequestId>,
        kind: ErrorKind,
        message: String,
    },
    /// One vector per input, in order, each of the model's embedding width and L2-normalised;
    /// `prompt_tokens` counts every input's tokens.
    Embeddings {
        id: RequestId,
        vectors: Vec<Vec<f32>>,
        prompt_tokens: u32,
    },
    /// How far loading the model's weights has got, 0–1, as llama.cpp reports it; sent only
    /// between `HelloAck` and `Ready`, each time it has grown by at least a hundredth.
    Loading {
        progress: f32,
    },
    /// The evictable memory the worker holds now, in bytes: the host prompt cache's states and
    /// the embedding context. Sent after each [`ToWorker::Allow`] and, once one came, whenever
    /// it changes.
    Held {
        cache_bytes: u64,
        embed_bytes: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadyInfo {
    /// Time to load the model and create the context, in ms.
    pub load_ms: u64,
    /// Resident memory of the worker after load, in bytes.
    pub memory_bytes: u64,
    /// Context size of each slot, in tokens.
    pub n_ctx: u32,
    /// Concurrent sequences.
    pub slots: u32,
    /// Whether chat requests can be rendered (the GGUF has a template or one was given).
    pub has_chat_template: bool,
}

/// One chat message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    /// Calls an assistant message made (rendered through the template's `tool_calls`).
    pub tool_calls: Vec<ToolCall>,
    /// On a `tool` message: the call it answers.
    pub tool_call_id: Option<String>,
    /// On a `tool` message: the function's name.
    pub name: Option<String>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage { role: role.into(), content: content.into(), ..Default::default() }
    }
}

/// A function call made by the assistant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text (OpenAI's form).
    pub arguments: String,
}

/// What sampling must produce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Constraint {
    /// A grammar in llama.cpp's GBNF, whose start rule is `root`.
    Gbnf(String),
    /// A JSON schema (as JSON text); llama.cpp converts it to a grammar. Without `whitespace`
    /// the grammar allows no optional whitespace between JSON tokens (`{"a":1}`), so an answer
    /// spends its tokens on content; with it, llama.cpp's own (up to two newlines and 20 spaces
    /// or tabs after each token).
    JsonSchema { schema: String, whitespace: bool },
}

/// The log-probability of one generated token under the model's distribution before sampling
/// (softmax of the raw logits), with the most likely alternatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token's text as bytes (a token may end inside a UTF-8 character).
    pub bytes: Vec<u8>,
    /// Natural log of its probability; ≤ 0.
    pub logprob: f32,
    /// The `top` most likely tokens, most likely first: (bytes, logprob).
    pub top: Vec<(Vec<u8>, f32)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Prompt {
    /// Raw text, tokenized as is (with the model's BOS when it wants one).
    Text(String),
    /// Rendered through the model's chat template, with the generation prompt appended.
    Chat(Vec<ChatMessage>),
    /// Token IDs of the model's vocabulary, used as they are.
    Tokens(Vec<i32>),
}

/// Sampling settings; the defaults are llama-server's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// 0 disables.
    pub top_k: i32,
    pub min_p: f32,
    /// Same seed, same prompt, same settings: same text. `None` picks a random seed.
    pub seed: Option<u32>,
    /// 1.0 disables.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub repeat_last_n: i32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// Token ID → bias added to its logit; `f32::NEG_INFINITY` bans the token.
    pub logit_bias: Vec<(i32, f32)>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_p: 0.95,
            top_k: 40,
            min_p: 0.05,
            seed: None,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
        }
    }
}

impl SamplingParams {
    /// Checks every setting against the range it takes (OpenAI's where it has one); returns
    /// the offending parameter's name and why. The router answers a request with it, and the
    /// worker checks again, so that nothing llama.cpp would assert on ever reaches it.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let within = |name: &'static str, v: f32, lo: f32, hi: f32| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err((name, format!("{name} must be between {lo} and {hi}, got {v}")))
            }
        };
        within("temperature", self.temperature, 0.0, 2.0)?;
        within("top_p", self.top_p, 0.0, 1.0)?;
        within("min_p", self.min_p, 0.0, 1.0)?;
        within("presence_penalty", self.presence_penalty, -2.0, 2.0)?;
        within("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?;
        if !(self.repeat_penalty > 0.0 && self.repeat_penalty.is_finite()) {
            return Err(("repeat_penalty", format!("repeat_penalty must be > 0, got {}", self.repeat_penalty)));
        }
        for &(tok, bias) in &self.logit_bias {
            if !(bias == f32::NEG_INFINITY || (-100.0..=100.0).contains(&bias)) {
                return Err((
                    "logit_bias",
                    format!("logit_bias values must be between -100 and 100, got {bias} for token {tok}"),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    pub id: RequestId,
    pub prompt: Prompt,
    pub sampling: SamplingParams,
    /// Generated tokens at most; `None` means no limit but memory (the context shifts).
    pub max_tokens: Option<u32>,
    /// Generation ends before the first of these strings; it is not part of the text.
    pub stop: Vec<String>,
    /// `true`: text arrives as it is generated; `false`: in one `Tokens` before `Done`.
    pub stream: bool,
    /// Start from the longest cached prefix of the prompt (slot, memory or disk). `false`
    /// prefills the whole prompt; the output is the same either way.
    pub cache_prompt: bool,
    /// Sampling may only produce text this allows; `None`: free text.
    pub constraint: Option<Constraint>,
    /// Report each generated token's log-probability and this many alternatives (at most
    /// [`MAX_TOP_LOGPROBS`]); `None`: no log-probabilities.
    pub logprobs: Option<u8>,
    /// The OpenAI `tools` list as JSON text, given to the chat template as `tools`; also makes
    /// the worker spell out the tool-call marker tokens it generates.
    pub tools: Option<String>,
    /// LoRA adapters applied to the model for this request (none: the base alone).
    pub lora: Vec<LoraUse>,
    /// Only count the prompt's tokens, as it would be rendered and tokenized: answered by a
    /// `Done` whose usage holds the count, without taking a slot or generating.
    pub count_only: bool,
    /// Speculate where the worker does (n-gram proposals checked in the same batch); false
    /// opts this request out.
    pub speculative: bool,
}

/// The longest grammar or schema text a request may carry, in bytes: it is compiled and run on
/// the decode loop all of the model's requests share.
pub const MAX_CONSTRAINT_BYTES: usize = 64 * 1024;

/// The most alternatives a request may ask for per token (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: u8 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinishReason {
    /// End of sequence or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    Cancelled,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Prompt tokens that were not prefilled because their KV cells were cached.
    pub cached_tokens: u32,
    /// Where those came from (`None` when `cached_tokens` is 0).
    pub cached_from: Option<CacheTier>,
}

/// Where a request's cached prompt prefix came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CacheTier {
    /// The cells its slot still held from an earlier request.
    Slot,
    /// The worker's host-memory cache.
    Memory,
    /// A file written by an earlier worker for the same model.
    Disk,
    /// Another sequence of the same prompt, prefilled at the same time (`n` > 1).
    Shared,
}

impl CacheTier {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheTier::Slot => "slot",
            CacheTier::Memory => "memory",
            CacheTier::Disk => "disk",
            CacheTier::Shared => "shared",
        }
    }
}

/// Where a request's time went, in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Waiting for a free slot.
    pub queue_ms: f64,
    /// From admission to the first generated token (prompt processing).
    pub prompt_ms: f64,
    /// From the first generated token to the end.
    pub decode_ms: f64,
    /// Tokens proposed by speculation and decoded to be checked, and of those the ones kept
    /// (each one a step saved).
    pub drafted: u32,
    pub accepted: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoneInfo {
    pub id: RequestId,
    pub finish: FinishReason,
    pub usage: Usage,
    pub timings: Timings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    ProtocolMismatch,
    /// A frame could not be decoded.
    BadFrame,
    /// Invalid parameters.
    BadRequest,
    /// The prompt does not fit the context; the message names both sizes.
    PromptTooLong,
    /// A chat request for a model without a chat template.
    NoChatTemplate,
    /// Too many requests waiting.
    Overloaded,
    /// The worker is shutting down.
    ShuttingDown,
    /// llama.cpp failed.
    Internal,
}

#[cfg(test)]
mod tests;
