//! The per-request state of the decode loop.

use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use model_bucket_shared::protocol::{CacheTier, GenerateRequest, RequestId, TokenLogprob};
use std::time::{Duration, Instant};

use super::lora::AdapterSet;
use super::pick::Picker;
use super::spec::Budget;
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
    /// Time its reading took on a helper (counted in its sampling budget).
    pub sampled: Duration,
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
    /// Its samplers; `None` while a helper samples its next token (the request sits out steps).
    pub picker: Option<Picker>,
    /// While a helper samples: since when, and the step that waits for it (`None`: none does,
    /// its last sample took longer than the wait).
    pub picking: Option<(Instant, Option<u64>)>,
    /// How long its last sample on a helper took.
    pub last_pick: Duration,
    /// Helper time used so far (reading and constrained sampling), against the sampling budget.
    pub sampled: Duration,
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
    /// How many tokens it proposes next ([`spec`](super::spec)); `None`: it does not speculate.
    pub spec: Option<Budget>,
    /// The tokens it proposed in this step, decoded after `last`.
    pub draft: Vec<LlamaToken>,
    /// Tokens proposed and kept so far.
    pub drafted: u32,
    pub accepted: u32,
}

impl Active {
    /// A request admitted into a slot whose cells already hold its first `cached` tokens.
    /// It speculates when the worker does (`speculate`), the request did not opt out and its
    /// output is not constrained (a grammar samples on helpers, token by token).
    pub fn new(
        q: Queued,
        chain: LlamaSampler,
        n_ctx_slot: u32,
        cached: usize,
        cached_from: Option<CacheTier>,
        speculate: bool,
    ) -> Active {
        let n_prompt = q.tokens.len() as i32;
        let spec = (speculate && q.req.speculative && q.grammar.is_none()).then(Budget::default);
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
            picker: Some(Picker { chain, grammar: q.grammar, top_logprobs: q.req.logprobs }),
            picking: None,
            last_pick: Duration::ZERO,
            sampled: q.sampled,
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
            spec,
            draft: Vec::new(),
            drafted: 0,
            accepted: 0,
        }
    }

    /// A request whose prompt slot `leader` is prefilling: it feeds nothing itself.
    pub fn following(
        q: Queued,
        chain: LlamaSampler,
        n_ctx_slot: u32,
        leader: (usize, RequestId),
        speculate: bool,
    ) -> Active {
        let mut a = Active::new(q, chain, n_ctx_slot, 0, None, speculate);
        a.n_fed = a.prompt.len();
        a.follows = Some(leader);
        a
    }

    /// Whether the prompt is still being fed or decoded (no token sampled yet, none being
    /// sampled).
    pub fn prefilling(&self) -> bool {
        self.last.is_none() && self.n_gen == 0 && self.follows.is_none() && self.picking.is_none()
    }

    /// Helper time used so far, counting a sample still running.
    pub fn sampling_time(&self, now: Instant) -> Duration {
        self.sampled + self.picking.map_or(Duration::ZERO, |(since, _)| now.saturating_duration_since(since))
    }
}

/// What a sequence does when its context is full.
#[derive(Debug, PartialEq, Eq)]
pub enum Full {
    /// It ends with `finish_reason: "length"`, as llama-server ends it.
    End,
    /// The context shifts and generation goes on.
    Shift,
}

/// A request without `max_tokens` ends when its sequence fills the context (a model that loops
/// would otherwise never stop); one that asked for more tokens than its prompt leaves room for
/// said it wants them, so its context shifts.
pub fn when_full(max_tokens: Option<u32>, n_prompt: usize, n_ctx: i32) -> Full {
    match max_tokens {
        Some(m) if n_prompt as u64 + u64::from(m) > n_ctx.max(0) as u64 => Full::Shift,
        _ => Full::End,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_without_max_tokens_ends_at_the_full_context() {
        assert_eq!(when_full(None, 10, 256), Full::End);
        assert_eq!(when_full(None, 255, 256), Full::End);
    }

    #[test]
    fn only_a_request_asking_for_more_than_the_context_holds_shifts() {
        assert_eq!(when_full(Some(246), 10, 256), Full::End);
        assert_eq!(when_full(Some(247), 10, 256), Full::Shift);
        assert_eq!(when_full(Some(u32::MAX), 10, 256), Full::Shift);
        assert_eq!(when_full(Some(1), 255, 256), Full::End);
    }
}
