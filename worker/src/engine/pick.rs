//! Choosing a request's next token from the logits of the last decode.
//!
//! Free text takes llama.cpp's own path (`llama_sampler_sample` over the chain). A request whose
//! output is constrained by a grammar samples as llama-server does: the chain picks a token, the
//! grammar checks that one token, and only if it is not allowed is the grammar applied to the
//! whole vocabulary and the chain run again. Most steps therefore cost one grammar check.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use model_bucket_shared::protocol::TokenLogprob;

use super::logprob::{log_sum_exp, top_n};

/// One request's sampling state.
pub struct Picker {
    pub chain: LlamaSampler,
    /// Set when the output is constrained.
    pub grammar: Option<LlamaSampler>,
    /// Alternatives to report with each token's log-probability; `None`: none reported.
    pub top_logprobs: Option<u8>,
}

/// Buffers the constrained path and the log-probabilities reuse from token to token (one set
/// per engine): the candidate list is as long as the vocabulary.
#[derive(Default)]
pub struct Scratch {
    candidates: Vec<LlamaTokenData>,
    one: Vec<LlamaTokenData>,
    top: Vec<(i32, f32)>,
    piece: Vec<u8>,
}

impl Picker {
    /// Whether the output is constrained: then sampling may take long (see [`helper`](super::helper)).
    pub fn constrained(&self) -> bool {
        self.grammar.is_some()
    }

    /// Samples the token for the logits at batch index `at` and accepts it into the samplers.
    /// `None` when the grammar allows no token at all here (see [`Picker::pick_from`]).
    pub fn pick(&mut self, ctx: &LlamaContext<'_>, at: i32, s: &mut Scratch) -> Option<LlamaToken> {
        if self.grammar.is_none() {
            return Some(self.chain.sample(ctx, at));
        }
        self.pick_from(ctx.get_logits_ith(at), s)
    }

    /// Samples the token of a constrained request for `logits` and accepts it into the samplers.
    /// `None` when the grammar allows no token at all here (a grammar or schema that cannot be
    /// satisfied): the request must end, as llama.cpp aborts on a grammar with nothing left.
    /// Free text takes [`Picker::pick`], straight from the context.
    pub fn pick_from(&mut self, logits: &[f32], s: &mut Scratch) -> Option<LlamaToken> {
        debug_assert!(self.constrained(), "only constrained requests sample from copied logits");
        let grammar = self.grammar.as_mut()?;
        let mut cand = candidates(&mut s.candidates, logits);
        self.chain.apply(&mut cand);
        let mut tok = cand.selected_token();
        if let Some(t) = tok {
            if !allowed(grammar, t, &mut s.one) {
                tok = None;
            }
        }
        if tok.is_none() {
            s.candidates = cand.data;
            let mut all = candidates(&mut s.candidates, logits);
            grammar.apply(&mut all);
            self.chain.apply(&mut all);
            // With every token refused the chain still selects one: check it again.
            tok = all.selected_token().filter(|&t| allowed(grammar, t, &mut s.one));
            cand = all;
        }
        s.candidates = cand.data;
        let tok = tok?;
        grammar.try_accept(tok).ok()?;
        self.chain.accept(tok);
        Some(tok)
    }

    /// The log-probability of `tok` and the most likely alternatives under `logits`, when the
    /// request asked for them. Token text is rendered with special tokens spelled out.
    pub fn logprob(
        &self,
        logits: &[f32],
        model: &LlamaModel,
        tok: LlamaToken,
        s: &mut Scratch,
    ) -> Option<TokenLogprob> {
        let n = self.top_logprobs?;
        let lse = log_sum_exp(logits);
        top_n(logits, n as usize, &mut s.top);
        let mut bytes = |t: LlamaToken| {
            s.piece.clear();
            model.vocab().token_to_piece_into(t, &mut s.piece, true, None);
            s.piece.clone()
        };
        let logprob = logits.get(tok.0 as usize).map_or(f32::NEG_INFINITY, |&l| l - lse);
        let top = s.top.clone().into_iter().map(|(t, l)| (bytes(LlamaToken(t)), l - lse)).collect();
        Some(TokenLogprob { bytes: bytes(tok), logprob, top })
    }
}

/// The logits as a candidate list, in `buf`'s storage.
fn candidates(buf: &mut Vec<LlamaTokenData>, logits: &[f32]) -> LlamaTokenDataArray {
    let mut data = std::mem::take(buf);
    data.clear();
    data.extend(logits.iter().enumerate().map(|(i, &l)| LlamaTokenData::new(LlamaToken(i as i32), l, 0.0)));
    LlamaTokenDataArray::new(data, false)
}

/// Whether the grammar allows `tok` next.
fn allowed(grammar: &mut LlamaSampler, tok: LlamaToken, buf: &mut Vec<LlamaTokenData>) -> bool {
    let mut data = std::mem::take(buf);
    data.clear();
    data.push(LlamaTokenData::new(tok, 1.0, 0.0));
    let mut one = LlamaTokenDataArray::new(data, false);
    grammar.apply(&mut one);
    let ok = one.data.first().is_some_and(|d| d.logit().is_finite());
    *buf = one.data;
    ok
}
