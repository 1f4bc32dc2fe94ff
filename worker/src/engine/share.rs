//! One prefill for several sequences of the same prompt (`n` > 1, or identical requests that
//! arrive together): a request whose exact prompt another slot is working on does not prefill
//! it again.
//! - If that slot is still prefilling, the request waits in its own slot; when the other
//!   slot's last prompt token is decoded, that slot's cells are copied into its sequence and it
//!   samples its first token from the same logits. If the slot it waits for is freed first
//!   (cancelled, failed), it prefills itself.
//! - If that slot is already generating (the request arrived a step late), its cells are copied
//!   at once, cut back to the prompt without its last token, and only that token is decoded.
//!
//! A copy goes through llama.cpp's sequence state (serialized and loaded back, used cells only),
//! so it is only made for prompts of [`MIN_SAVED_TOKENS`] or more.

use llama_cpp_2::token::LlamaToken;
use model_bucket_shared::protocol::{CacheTier, RequestId};

use super::lora::AdapterSet;
use super::reuse::{worth_saving, MIN_SAVED_TOKENS};
use super::Engine;
use crate::cache;

/// A busy slot working on the same prompt as a new request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Twin {
    /// Still prefilling it (slot, request).
    Prefilling(usize, RequestId),
    /// Generating after it, its cells still holding the prompt as they were (slot).
    Generating(usize),
}

/// A slot as [`twin`] sees it.
pub struct Busy<'a> {
    pub slot: usize,
    pub id: RequestId,
    pub prompt: &'a [LlamaToken],
    pub prefilling: bool,
    /// Its cells may be given to another request: not private, not shifted.
    pub shareable: bool,
}

/// The slot among `busy` whose prompt is exactly `prompt` and whose cells can be shared; a
/// prefilling one first. `None` for prompts too short to be worth a copy.
pub fn twin<'a>(busy: impl IntoIterator<Item = Busy<'a>>, prompt: &[LlamaToken]) -> Option<Twin> {
    if prompt.len() < MIN_SAVED_TOKENS {
        return None;
    }
    let mut found = None;
    for b in busy {
        if !b.shareable || b.prompt != prompt {
            continue;
        }
        if b.prefilling {
            return Some(Twin::Prefilling(b.slot, b.id));
        }
        found = found.or(Some(Twin::Generating(b.slot)));
    }
    found
}

impl<'m> Engine<'m> {
    /// The busy slot whose prompt is exactly `prompt` and whose adapter set is `set`, for a
    /// request that may share its cells.
    pub(super) fn twin(&self, prompt: &[LlamaToken], set: AdapterSet) -> Option<Twin> {
        let busy = self.slots.iter().enumerate().filter_map(|(i, s)| {
            let a = s.as_ref()?;
            let cells = &self.cells[i];
            Some(Busy {
                slot: i,
                id: a.id,
                prompt: a.prompt.as_slice(),
                prefilling: a.prefilling(),
                shareable: a.follows.is_none() && !cells.private && cells.shifted_at.is_none() && a.set == set,
            })
        });
        twin(busy, prompt)
    }

    /// Gives slot `i` a copy of generating slot `l`'s cells, cut back to the first `n - 1`
    /// tokens of the `n`-token prompt they share; returns what [`Engine::prepare`] returns.
    pub(super) fn copy_prompt(&mut self, l: usize, i: usize, n: usize) -> (usize, Option<CacheTier>) {
        self.vacate(i, false, self.cells[l].set);
        if !self.copy_seq(l, i) {
            tracing::warn!(slot = i, "llama.cpp did not copy a prompt's cells; prefilling");
            self.clear(i);
            return (0, None);
        }
        // The copy holds what `l` generated too: keep the prompt but its last token, which is
        // decoded again for this request's own first logits.
        self.keep(i, n - 1, CacheTier::Shared)
    }

    /// Copies sequence `from`'s cells into sequence `to` (emptied first) through llama.cpp's
    /// sequence state: only the used cells are copied, and at once (a `seq_cp` between streams
    /// is deferred to the next decode, where a save or restore of either slot would race it).
    fn copy_seq(&mut self, from: usize, to: usize) -> bool {
        self.clear(to);
        let Some(state) = cache::seq_state(&self.ctx, from as i32) else { return false };
        if !cache::restore(&mut self.ctx, to as i32, &state) {
            self.clear(to);
            return false;
        }
        let tokens = std::mem::take(&mut self.cells[from].tokens);
        self.cells[to].tokens.extend_from_slice(&tokens);
        self.cells[to].set = self.cells[from].set;
        self.cells[from].tokens = tokens;
        self.holds(to, self.cells[to].tokens.len())
    }

    /// Empties slot `i` for a request of adapter set `set` that will copy another slot's cells
    /// (or prefill itself, if the copy fails); what it held is saved to the host cache first
    /// when worth it.
    pub(super) fn vacate(&mut self, i: usize, private: bool, set: AdapterSet) {
        self.tick += 1;
        if !self.cells[i].private && worth_saving(self.cells[i].tokens.len(), 0) {
            self.save_slot(i, self.tick);
        }
        self.clear(i);
        self.cells[i].private = private;
        self.cells[i].set = set;
        self.cells[i].used = self.tick;
    }

    /// After a decode: every waiting request whose twin's prompt was just completed gets a copy
    /// of its cells and samples from the same logits.
    pub(super) fn copy_finished_prompts(&mut self) {
        for i in 0..self.slots.len() {
            let Some((l, id)) = self.slots[i].as_ref().and_then(|a| a.follows) else { continue };
            let at = match self.slots[l].as_ref() {
                Some(lead) if lead.id == id && lead.last.is_none() && lead.n_fed == lead.prompt.len() => {
                    match lead.logits_at {
                        Some(at) => at,
                        None => continue,
                    }
                }
                _ => continue,
            };
            let n = self.cells[l].tokens.len();
            let ok = self.copy_seq(l, i);
            let a = self.slots[i].as_mut().expect("checked above");
            a.follows = None;
            if ok {
                a.n_past = n as i32;
                a.cached = n;
                a.cached_from = Some(CacheTier::Shared);
                a.logits_at = Some(at);
            } else {
                tracing::warn!(slot = i, "llama.cpp did not copy a prompt's cells; prefilling");
                a.n_fed = 0;
                a.n_past = 0;
                self.clear(i);
            }
        }
    }

    /// Before a step: a request whose twin left before its prompt was done prefills itself.
    pub(super) fn orphans(&mut self) {
        for i in 0..self.slots.len() {
            let Some((l, id)) = self.slots[i].as_ref().and_then(|a| a.follows) else { continue };
            if self.slots[l].as_ref().is_some_and(|lead| lead.id == id) {
                continue;
            }
            let a = self.slots[i].as_mut().expect("checked above");
            a.follows = None;
            a.n_fed = 0;
            a.n_past = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(n: usize, salt: i32) -> Vec<LlamaToken> {
        (0..n as i32).map(|t| LlamaToken(t * 7 + salt)).collect()
    }

    fn busy(slot: usize, prompt: &[LlamaToken], prefilling: bool, shareable: bool) -> Busy<'_> {
        Busy { slot, id: RequestId(slot as u64 + 10), prompt, prefilling, shareable }
    }

    #[test]
    fn a_prefilling_twin_wins_over_a_generating_one() {
        let (a, b) = (tokens(40, 0), tokens(40, 1));
        let slots = || vec![busy(0, &b, true, true), busy(1, &a, false, true), busy(2, &a, true, true)];
        assert_eq!(twin(slots(), &a), Some(Twin::Prefilling(2, RequestId(12))));
        assert_eq!(twin(slots(), &b), Some(Twin::Prefilling(0, RequestId(10))));
        assert_eq!(twin(vec![busy(1, &a, false, true)], &a), Some(Twin::Generating(1)));
    }

    #[test]
    fn only_exact_shareable_long_prompts_have_twins() {
        let a = tokens(40, 0);
        assert_eq!(twin(vec![busy(0, &a, true, true)], &a[..39]), None, "a prefix is not a twin");
        assert_eq!(twin(vec![busy(0, &a, true, false)], &a), None, "private or shifted cells are not shared");
        let short = tokens(MIN_SAVED_TOKENS - 1, 0);
        assert_eq!(twin(vec![busy(0, &short, true, true)], &short), None, "too short to be worth a copy");
    }
}
