//! What each slot's KV cells hold, and how a request starts from the longest cached prefix of
//! its prompt: the slot's own cells, the host-memory cache, or the disk cache (the choices are
//! made by the pure functions of [`super::reuse`]).

use llama_cpp_2::token::LlamaToken;
use model_bucket_shared::protocol::CacheTier;
use std::time::Instant;

use super::lora::AdapterSet;
use super::reuse::{choose_source, common_prefix, keep_len, restorable, worth_saving, Source, MIN_SAVED_TOKENS};
use super::Engine;
use crate::cache;

/// The tokens behind one slot's KV sequence.
///
/// Invariant: at every step boundary, sequence `i` holds exactly `tokens` at positions
/// `0..tokens.len()`; a request's `n_past` equals `tokens.len()` while it owns the slot.
#[derive(Default)]
pub struct Cells {
    pub tokens: Vec<LlamaToken>,
    /// When the slot was last taken (the engine's tick; larger is more recent).
    pub used: u64,
    /// Written by a request that asked not to be cached (`cache_prompt: false`): never reused
    /// by another request, saved to memory or written to disk.
    pub private: bool,
    /// Set by a context shift: the cells from here on were computed with context that is gone,
    /// so they are dropped when the request ends rather than offered for reuse.
    pub shifted_at: Option<usize>,
    /// The LoRA adapters the cells were computed with. Only cells of the base go to the memory
    /// and disk caches; others are reused only in their slot, by requests of their set.
    pub set: AdapterSet,
}

impl<'m> Engine<'m> {
    /// Gets slot `i` ready for `prompt`: its cells end up holding the longest usable cached
    /// prefix of the prompt (none when `cache_prompt` is off) for adapter set `set`. What the
    /// slot held before is saved to the host cache first when a long prefix of it would be
    /// lost. Returns how many prompt tokens are already in the cells and where they came from.
    pub(super) fn prepare(
        &mut self,
        i: usize,
        prompt: &[LlamaToken],
        cache_prompt: bool,
        set: AdapterSet,
    ) -> (usize, Option<CacheTier>) {
        self.tick += 1;
        let now = self.tick;
        let n = prompt.len();
        let was_private = self.cells[i].private;
        let other_set = self.cells[i].set != set;
        self.cells[i].private = !cache_prompt;
        self.cells[i].used = now;
        if !cache_prompt || was_private || other_set {
            // Nothing of a private request's cells is kept for anyone else, and a request that
            // opts out reuses nothing.
            if !was_private && worth_saving(self.cells[i].tokens.len(), 0) {
                self.save_slot(i, now);
            }
            self.clear(i);
            self.cells[i].set = set;
            if !cache_prompt || set != AdapterSet::BASE {
                return (0, None);
            }
        }
        let slot = keep_len(common_prefix(&self.cells[i].tokens, prompt), n);
        if set != AdapterSet::BASE {
            return self.keep(i, slot, CacheTier::Slot);
        }
        if let Some(d) = self.disk.as_mut() {
            d.refresh();
        }
        let n_swa = self.cfg.n_swa as usize;
        let usable = |len: usize, shared: usize| restorable(len, keep_len(shared, n), n_swa);
        let memory = self.memory.best(prompt, usable).map(|(e, s)| (e, keep_len(s, n)));
        let disk = self.disk.as_ref().and_then(|d| d.best(prompt, usable)).map(|(e, s)| (e, keep_len(s, n)));
        let (source, shared) = choose_source(slot, memory, disk);
        // An entry that goes back into a slot leaves the memory cache (the slot holds it now),
        // before the slot's own prefix takes its room.
        let from_memory = match source {
            Source::Memory(e) => Some(self.memory.take(e)),
            _ => None,
        };
        let kept_of_slot = if source == Source::Slot { shared } else { 0 };
        if worth_saving(self.cells[i].tokens.len(), kept_of_slot) {
            self.save_slot(i, now);
        }
        let (tokens, state, tier) = match (source, from_memory) {
            (Source::Memory(_), Some(e)) => (e.tokens, e.state, CacheTier::Memory),
            (Source::Disk(e), _) => match self.disk.as_mut().and_then(|d| d.load(e)) {
                Some((tokens, state)) => (tokens, state, CacheTier::Disk),
                // Unreadable: it was logged and dropped; the slot's own prefix still counts.
                None => return self.keep(i, slot, CacheTier::Slot),
            },
            _ => return self.keep(i, shared, CacheTier::Slot),
        };
        self.clear(i);
        if cache::restore(&mut self.ctx, i as i32, &state) && self.holds(i, tokens.len()) {
            self.cells[i].tokens = tokens;
            return self.keep(i, shared, tier);
        }
        tracing::warn!(slot = i, ?tier, "llama.cpp refused a cached prompt state; prefilling");
        if let (CacheTier::Disk, Some(d)) = (tier, self.disk.as_mut()) {
            d.remove(&tokens, "llama.cpp refused its state");
        }
        self.clear(i);
        (0, None)
    }

    /// Keeps the first `n` cached tokens of slot `i` and drops the rest of its cells; keeps
    /// nothing when the cells cannot serve a continuation from `n`.
    pub(super) fn keep(&mut self, i: usize, n: usize, tier: CacheTier) -> (usize, Option<CacheTier>) {
        if n == 0 {
            self.clear(i);
            return (0, None);
        }
        if !self.cut(i, n) || !self.holds(i, n) {
            tracing::debug!(slot = i, n, "cached cells cannot continue here; prefilling");
            self.clear(i);
            return (0, None);
        }
        (n, Some(tier))
    }

    /// Drops slot `i`'s cells from position `n` on; false (and the slot emptied) when nothing
    /// is left or llama.cpp cannot remove part of a sequence (recurrent memory).
    fn cut(&mut self, i: usize, n: usize) -> bool {
        if n == 0 {
            self.clear(i);
            return false;
        }
        if n < self.cells[i].tokens.len() {
            if !self.ctx.clear_kv_cache_seq(Some(i as u32), Some(n as u32), None).unwrap_or(false) {
                self.clear(i);
                return false;
            }
            self.cells[i].tokens.truncate(n);
        }
        true
    }

    /// Whether sequence `i` holds positions up to exactly `len - 1`, and from far enough back
    /// for a token at position `len`: all of them, or for a sliding-window cache (whose saved
    /// state keeps only the last `n_swa` positions) every position that token attends to,
    /// `len + 1 - n_swa` on.
    pub(super) fn holds(&self, i: usize, len: usize) -> bool {
        let (min, max) = (self.ctx.kv_cache_seq_pos_min(i as i32), self.ctx.kv_cache_seq_pos_max(i as i32));
        let n_swa = self.cfg.n_swa as usize;
        let oldest_needed = if n_swa > 0 { (len + 1).saturating_sub(n_swa) } else { 0 };
        min >= 0 && min as usize <= oldest_needed && max + 1 == len as i32
    }

    /// Empties slot `i`'s cells.
    pub(super) fn clear(&mut self, i: usize) {
        let _ = self.ctx.clear_kv_cache_seq(Some(i as u32), None, None);
        self.cells[i].tokens.clear();
        self.cells[i].shifted_at = None;
    }

    /// After a request leaves slot `i`: cells a context shift made stale are dropped.
    pub(super) fn release(&mut self, i: usize) {
        if let Some(k) = self.cells[i].shifted_at.take() {
            self.cut(i, k);
        }
    }

    /// Copies slot `i`'s cells into the host-memory cache, unless an entry already holds them.
    pub(super) fn save_slot(&mut self, i: usize, now: u64) {
        let tokens = &self.cells[i].tokens;
        let base = self.cells[i].set == AdapterSet::BASE;
        if self.memory.limit() == 0 || self.cells[i].private || !base || self.memory.covers(tokens, now) {
            return;
        }
        if let Some(state) = cache::seq_state(&self.ctx, i as i32) {
            let n = tokens.len();
            if self.memory.insert(tokens.clone(), state, now) {
                tracing::debug!(slot = i, tokens = n, bytes = self.memory.bytes(), "prompt prefix kept in memory");
            }
        }
    }

    /// Writes the most recently used prefixes (slots and memory entries) to the disk cache,
    /// newest first (the newest whatever the time), within `persist_time`
    /// (`--kv-cache-write-ms`), then keeps the cache under its limit.
    pub(super) fn persist(&mut self) {
        let Some(disk) = self.disk.as_mut() else { return };
        let started = Instant::now();
        enum From {
            Slot(usize),
            Memory(usize),
        }
        let mut candidates: Vec<(u64, From)> = Vec::new();
        for (i, c) in self.cells.iter().enumerate() {
            if c.tokens.len() >= MIN_SAVED_TOKENS && !c.private && c.set == AdapterSet::BASE {
                candidates.push((c.used, From::Slot(i)));
            }
        }
        for (j, e) in self.memory.entries().iter().enumerate() {
            candidates.push((e.used, From::Memory(j)));
        }
        candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
        let mut written = 0;
        for (k, (_, from)) in candidates.into_iter().enumerate() {
            // The newest prefix is always written; the rest while time is left.
            if k > 0 && started.elapsed() > self.persist_time {
                tracing::warn!("stopped writing prompt prefixes to disk: out of time");
                break;
            }
            let saved = match from {
                From::Slot(i) => {
                    let tokens = &self.cells[i].tokens;
                    if disk.covers(tokens) {
                        continue;
                    }
                    cache::seq_state(&self.ctx, i as i32).map(|s| disk.save(tokens, &s))
                }
                From::Memory(j) => {
                    let e = &self.memory.entries()[j];
                    if disk.covers(&e.tokens) {
                        continue;
                    }
                    Some(disk.save(&e.tokens, &e.state))
                }
            };
            match saved {
                Some(Ok(true)) => written += 1,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "cannot write a prompt prefix to disk");
                    break;
                }
                _ => {}
            }
        }
        disk.prune();
        tracing::info!(written, ms = started.elapsed().as_millis() as u64, "prompt prefixes written to disk");
    }
}
