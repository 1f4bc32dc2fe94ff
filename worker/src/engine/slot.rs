//! The per-request state of the decode loop.

use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use model_bucket_shared::protocol::{CacheTier, GenerateRequest, RequestId};
use std::time::Instant;

use super::text::TextOut;

/// A validated, tokenized request waiting for a slot.
pub struct Queued {
    pub req: Box<GenerateRequest>,
    pub tokens: Vec<LlamaToken>,
    pub enqueued: Instant,
}

/// A request that owns a slot (and the KV sequence with the slot's index).
///
/// Invariants: `n_fed <= prompt.len()`; while `n_fed < prompt.len()` the prompt is still being
/// processed and `last` is `None`; afterwards `n_past` is the position the next token goes to
/// and `last` is the sampled token not yet in the KV cache.
pub struct Active {
    pub id: RequestId,
    pub stream: bool,
    pub prompt: Vec<LlamaToken>,
    /// Prompt tokens already put into a batch.
    pub n_fed: usize,
    /// Next KV position of this sequence.
    pub n_past: i32,
    /// Tokens at the head that a context shift keeps.
    pub n_keep: i32,
    pub last: Option<LlamaToken>,
    /// Index of this sequence's logits in the current batch.
    pub logits_at: Option<i32>,
    pub sampler: LlamaSampler,
    pub text: TextOut,
    /// Text produced but not yet sent (all of it, for non-streamed requests).
    pub unsent: String,
    /// Generated tokens not yet reported in a `Tokens` message.
    pub unsent_tokens: u32,
    pub n_gen: u32,
    /// Prompt tokens that were already in the cells at admission, and where they came from.
    pub cached: usize,
    pub cached_from: Option<CacheTier>,
    pub max_tokens: Option<u32>,
    pub enqueued: Instant,
    pub admitted: Instant,
    pub first_token: Option<Instant>,
}

impl Active {
    /// A request admitted into a slot whose cells already hold its first `cached` tokens.
    pub fn new(
        q: Queued,
        sampler: LlamaSampler,
        n_ctx_slot: u32,
        cached: usize,
        cached_from: Option<CacheTier>,
    ) -> Active {
        let n_prompt = q.tokens.len() as i32;
        Active {
            id: q.req.id,
            stream: q.req.stream,
            // The prompt head survives context shifts, but never more than half the context.
            n_keep: n_prompt.min(n_ctx_slot as i32 / 2),
            prompt: q.tokens,
            n_fed: cached,
            n_past: cached as i32,
            last: None,
            logits_at: None,
            sampler,
            text: TextOut::new(&q.req.stop),
            unsent: String::new(),
            unsent_tokens: 0,
            n_gen: 0,
            cached,
            cached_from,
            max_tokens: q.req.max_tokens,
            enqueued: q.enqueued,
            admitted: Instant::now(),
            first_token: None,
        }
    }
}
