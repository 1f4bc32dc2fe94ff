//! The per-request state of the decode loop.

use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use model_bucket_shared::protocol::{CacheTier, GenerateRequest, RequestId, TokenLogprob};
use std::time::Instant;

use super::lora::AdapterSet;
use super::pick::Picker;
use super::text::TextOut;

/// A validated, tokenized request waiting for a slot.
pub struct Queued {
    pub req: Box<GenerateRequest>,
    pub tokens: Vec<LlamaToken>,
    /// The compiled constraint, when the request has one.
    pub grammar: Option<LlamaSampler>,
    /// The LoRA adapters it runs with.
    pub set: AdapterSet,
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
    pub picker: Picker,
    /// Spell out tool-call marker tokens (the request offered tools).
    pub markers: bool,
    pub text: TextOut,
    /// Text produced but not yet sent (all of it, for non-streamed requests).
    pub unsent: String,
    /// Generated tokens not yet reported in a `Tokens` message.
    pub unsent_tokens: u32,
    /// Their log-probabilities, when the request asked for them.
    pub unsent_logprobs: Vec<TokenLogprob>,
    pub n_gen: u32,
    /// Prompt tokens that were already in the cells at admission, and where they came from.
    pub cached: usize,
    pub cached_from: Option<CacheTier>,
    pub max_tokens: Option<u32>,
    pub enqueued: Instant,
    pub admitted: Instant,
    pub first_token: Option<Instant>,
    /// Waiting for the slot (and request) that prefills the same prompt; its cells are copied
    /// here when that prompt is done. Meanwhile `n_fed` is the prompt's length (nothing to feed)
    /// and `n_past` 0.
    pub follows: Option<(usize, RequestId)>,
    /// The LoRA adapters it runs with: it is decoded only in steps of this set.
    pub set: AdapterSet,
}

impl Active {
    /// A request admitted into a slot whose cells already hold its first `cached` tokens.
    pub fn new(
        q: Queued,
        chain: LlamaSampler,
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
            picker: Picker { chain, grammar: q.grammar, top_logprobs: q.req.logprobs },
            markers: q.req.tools.is_some(),
            text: TextOut::new(&q.req.stop),
            unsent: String::new(),
            unsent_tokens: 0,
            unsent_logprobs: Vec::new(),
            n_gen: 0,
            cached,
            cached_from,
            max_tokens: q.req.max_tokens,
            enqueued: q.enqueued,
            admitted: Instant::now(),
            first_token: None,
            follows: None,
            set: q.set,
        }
    }

    /// A request whose prompt slot `leader` is prefilling: it feeds nothing itself.
    pub fn following(q: Queued, chain: LlamaSampler, n_ctx_slot: u32, leader: (usize, RequestId)) -> Active {
        let mut a = Active::new(q, chain, n_ctx_slot, 0, None);
        a.n_fed = a.prompt.len();
        a.follows = Some(leader);
        a
    }

    /// Whether the prompt is still being fed or decoded (no token sampled yet).
    pub fn prefilling(&self) -> bool {
        self.last.is_none() && self.n_gen == 0 && self.follows.is_none()
    }
}
