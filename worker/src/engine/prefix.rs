//! What each slot's KV cells hold, and how a request starts from the longest cached prefix of
//! its prompt: the slot's own cells, the host-memory cache, or the disk cache (the choices are
//! made by the pure functions of [`super::reuse`]).

use llama_cpp_2::token::LlamaToken;
use model_bucket_shared::protocol::CacheTier;
use std::time::{Duration, Instant};

use super::reuse::{choose_source, common_prefix, keep_len, worth_saving, Source, MIN_SAVED_TOKENS};
use super::Engine;
use crate::cache;

/// How long a stopping worker may spend writing prefixes to disk.
const PERSIST_TIME: Duration = Duration::from_secs(2);

/// The tokens behind one slot's KV sequence.
///
/// Invariant: at every step boundary, sequence `i` holds exactly `tokens` at positions
/// `0..tokens.len()`; a request's `n_past` equals `tokens.len()` while it owns the slot.
#[derive(Default)]
pub struct Cells {
    pub tokens: Vec<LlamaToken>,
    /// When the slot was last taken (the engine's tick; larger is more recent).
    pub used: u64,
}

impl<'m> Engine<'m> {
    /// Gets slot `i` ready for `prompt`: its cells end up holding the longest usable cached
    /// prefix of the prompt (none when `cache_prompt` is off). What the slot held before is
    /// saved to the host cache first when a long prefix of it would be lost. Returns how many
    /// prompt tokens are already in the cells and where they came from.
    pub(super) fn prepare(
        &mut self,
        i: usize,
        prompt: &[LlamaToken],
        cache_prompt: bool,
    ) -> (usize, Option<CacheTier>) {
        self.tick += 1;
        let now = self.tick;
        let n = prompt.len();
        let slot = keep_len(common_prefix(&self.cells[i].tokens, prompt), n);
        let (source, shared) = if cache_prompt {
            if let Some(d) = self.disk.as_mut() {
                d.refresh();
            }
            let memory = self.memory.best(prompt).map(|(e, s)| (e, keep_len(s, n)));
            let disk = self.disk.as_ref().and_then(|d| d.best(prompt)).map(|(e, s)| (e, keep_len(s, n)));
            choose_source(slot, memory, disk)
        } else {
            (Source::Slot, 0)
        };
        let kept_of_slot = if source == Source::Slot { shared } else { 0 };
        if worth_saving(self.cells[i].tokens.len(), kept_of_slot) {
            self.save_slot(i, now);
        }
        self.cells[i].used = now;
        let restored = match source {
            Source::Slot => None,
            Source::Memory(e) => {
                self.clear(i);
                let entry = self.memory.touch(e, now);
                let ok = cache::restore(&mut self.ctx, i as i32, &entry.state);
                Some((ok, entry.tokens.clone(), CacheTier::Memory))
            }
            Source::Disk(e) => match self.disk.as_mut().and_then(|d| d.load(e)) {
                Some((tokens, state)) => {
                    self.clear(i);
                    let ok = cache::restore(&mut self.ctx, i as i32, &state);
                    if ok {
                        // Next time it comes from memory.
                        self.memory.insert(tokens.clone(), state, now);
                    }
                    Some((ok, tokens, CacheTier::Disk))
                }
                // Unreadable: it was logged and dropped; the slot's own prefix still counts.
                None => return self.keep(i, slot, CacheTier::Slot),
            },
        };
        match restored {
            None => self.keep(i, shared, CacheTier::Slot),
            Some((true, tokens, tier)) => {
                self.cells[i].tokens = tokens;
                self.keep(i, shared, tier)
            }
            Some((false, _, tier)) => {
                tracing::warn!(slot = i, ?tier, "restoring a cached prompt state failed; prefilling");
                self.clear(i);
                (0, None)
            }
        }
    }

    /// Keeps the first `n` cached tokens of slot `i` and drops the rest of its cells.
    fn keep(&mut self, i: usize, n: usize, tier: CacheTier) -> (usize, Option<CacheTier>) {
        let len = self.cells[i].tokens.len();
        if n >= len && n > 0 {
            return (len, Some(tier));
        }
        // llama.cpp refuses a partial removal where it cannot roll back (recurrent memory).
        let cut = n > 0 && self.ctx.clear_kv_cache_seq(Some(i as u32), Some(n as u32), None).unwrap_or(false);
        if cut && self.ctx.kv_cache_seq_pos_min(i as i32) <= 0 {
            self.cells[i].tokens.truncate(n);
            (n, Some(tier))
        } else {
            self.clear(i);
            (0, None)
        }
    }

    /// Empties slot `i`'s cells.
    pub(super) fn clear(&mut self, i: usize) {
        let _ = self.ctx.clear_kv_cache_seq(Some(i as u32), None, None);
        self.cells[i].tokens.clear();
    }

    /// Copies slot `i`'s cells into the host-memory cache, unless an entry already holds them.
    fn save_slot(&mut self, i: usize, now: u64) {
        let tokens = &self.cells[i].tokens;
        if self.memory.limit() == 0 || self.memory.covers(tokens, now) {
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
    /// newest first, within [`PERSIST_TIME`], then keeps the cache under its limit.
    pub(super) fn persist(&mut self) {
        let Some(disk) = self.disk.as_mut() else { return };
        let started = Instant::now();
        enum From {
            Slot(usize),
            Memory(usize),
        }
        let mut candidates: Vec<(u64, From)> = Vec::new();
        for (i, c) in self.cells.iter().enumerate() {
            if c.tokens.len() >= MIN_SAVED_TOKENS {
                candidates.push((c.used, From::Slot(i)));
            }
        }
        for (j, e) in self.memory.entries().iter().enumerate() {
            candidates.push((e.used, From::Memory(j)));
        }
        candidates.sort_by(|a, b| b.0.cmp(&a.0));
        let mut written = 0;
        for (_, from) in candidates {
            if started.elapsed() > PERSIST_TIME {
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
                Some(Ok(())) => written += 1,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "cannot write a prompt prefix to disk");
                    break;
                }
                None => {}
            }
        }
        disk.prune();
        tracing::info!(written, ms = started.elapsed().as_millis() as u64, "prompt prefixes written to disk");
    }
}
