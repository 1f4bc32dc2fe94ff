//! The OpenAI wire shapes of chat and text completions, as typed structs: whole responses,
//! stream chunks, log-probabilities, tool calls and usage. Field order is the order on the wire.
//! `Option` fields without `skip_serializing_if` are written as `null`, as OpenAI writes them.

use serde::Serialize;

/// A whole (non-streamed) response.
#[derive(Debug, Serialize)]
pub struct Completion<'a> {
    pub id: &'a str,
    /// `chat.completion` or `text_completion`.
    pub object: &'static str,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub model: &'a str,
    /// In index order.
    pub choices: Vec<Choice>,
    pub usage: Usage,
    pub timings: Timings,
}

/// Where the time of the first choice went, in milliseconds, and which cache tier its prompt
/// prefix came from (`null`: none).
#[derive(Debug, Serialize)]
pub struct Timings {
    pub queue_ms: f64,
    pub prompt_ms: f64,
    pub decode_ms: f64,
    pub cache_source: Option<&'static str>,
    /// Tokens speculation proposed and of those kept, all choices together (llama-server's
    /// names).
    pub draft_n: u32,
    pub draft_n_accepted: u32,
}

/// One choice of a whole response: a chat message or completion text.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Choice {
    Chat { index: usize, message: Message, logprobs: Option<Logprobs>, finish_reason: &'static str },
    Text { index: usize, text: String, logprobs: Option<Logprobs>, finish_reason: &'static str },
}

/// The assistant's message. `content` is `null` only when the message is tool calls alone.
#[derive(Debug, Serialize)]
pub struct Message {
    pub role: &'static str,
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

#[derive(Debug, Serialize)]
pub struct ToolCall {
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCall,
}

#[derive(Debug, Serialize)]
pub struct FunctionCall {
    pub name: String,
    /// JSON text.
    pub arguments: String,
}

/// Token counts over all choices.
#[derive(Debug, Serialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    pub prompt_tokens_details: PromptDetails,
}

#[derive(Debug, Serialize)]
pub struct PromptDetails {
    /// Prompt tokens taken from a cache instead of computed.
    pub cached_tokens: u32,
}

/// Log-probabilities of a choice or a chunk, in the endpoint's shape.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Logprobs {
    Chat {
        content: Vec<TokenLogprob>,
        /// Always `null`.
        refusal: Option<String>,
    },
    Text {
        tokens: Vec<String>,
        token_logprobs: Vec<f32>,
        /// Per token: alternative text → its log-probability, most likely first.
        top_logprobs: Vec<serde_json::Map<String, serde_json::Value>>,
        /// Per token: its first character's offset in the choice's text.
        text_offset: Vec<usize>,
    },
}

/// One token of chat log-probabilities (and, without `top_logprobs`, one alternative).
#[derive(Debug, Serialize)]
pub struct TokenLogprob {
    /// The bytes as text; a token ending inside a character shows U+FFFD.
    pub token: String,
    /// Natural log; ≤ 0.
    pub logprob: f32,
    pub bytes: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<Vec<TokenLogprob>>,
}

/// One stream chunk: one choice's delta, or (last, when asked for) no choice and the usage.
#[derive(Debug, Serialize)]
pub struct Chunk<'a> {
    pub id: &'a str,
    /// `chat.completion.chunk` or `text_completion`.
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: Vec<ChunkChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ChunkChoice {
    Chat { index: usize, delta: Delta, logprobs: Option<Logprobs>, finish_reason: Option<&'static str> },
    Text { index: usize, text: String, logprobs: Option<Logprobs>, finish_reason: Option<&'static str> },
}

/// What a chat chunk adds to its choice's message.
#[derive(Debug, Default, Serialize)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallDelta>,
}

/// A piece of a streamed tool call: first its ID, type and name, then its arguments.
#[derive(Debug, Serialize)]
pub struct ToolCallDelta {
    /// The call's position in the message.
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionDelta,
}

#[derive(Debug, Serialize)]
pub struct FunctionDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub arguments: String,
}
