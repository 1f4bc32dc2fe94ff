//! Evictable memory: the host prompt cache's states and the embedding context. The router
//! counts them for what they hold, not for what they may grow to, so it sets how much the
//! worker may hold ([`Command::Allow`](super::Command::Allow)); the worker keeps within it,
//! dropping the least recently used first (prefixes are written to the disk cache before they
//! go), and reports what it holds whenever that changes.

use model_bucket_shared::protocol::FromWorker;
use std::time::{Duration, Instant};

use super::Engine;

/// The longest a shrink spends writing prefixes to disk before it drops the rest unwritten
/// (it runs between decode steps).
const TRIM_WRITE_TIME: Duration = Duration::from_millis(250);

impl<'m> Engine<'m> {
    /// The router allows `bytes` of evictable memory from now on, the embedding context
    /// counted as `embed_bytes` at least.
    pub(super) fn allow(&mut self, bytes: u64, embed_bytes: u64) {
        self.allowed = usize::try_from(bytes).unwrap_or(usize::MAX);
        self.embed_counted = usize::try_from(embed_bytes).unwrap_or(usize::MAX);
        self.fit_allowance(true);
        self.report_held(true);
    }

    /// What the embedding context counts for: what its making grew the worker by, or what the
    /// router counts it as once its buffers are full, whichever is more; 0 without one.
    pub(super) fn embed_held(&self) -> usize {
        if self.embedder.made() {
            self.embedder.bytes().max(self.embed_counted)
        } else {
            0
        }
    }

    /// Drops what is beyond the allowance. The embedding context goes (when `asked`: the
    /// router lowered the allowance; a context that grew past it is reported, and the router
    /// decides) when the allowance cannot hold it at all (it is made again in milliseconds),
    /// but not while an embeddings request is under way: then it goes once that is done.
    /// Otherwise prompt cache entries go, least recently used first, written to the disk cache
    /// first for at most [`TRIM_WRITE_TIME`]. The prompt cache may grow only into what is left.
    pub(super) fn fit_allowance(&mut self, asked: bool) {
        let mut dropped = false;
        let over = self.embed_held() > self.allowed;
        self.shrink_pending = (asked || self.shrink_pending) && over && !self.embeds.is_empty();
        if (asked || self.shrink_pending) && over && self.embeds.is_empty() && self.embedder.release() {
            tracing::info!("embedding context dropped: over the memory the router allows");
            dropped = true;
        }
        let embed = self.embed_held();
        if embed <= self.allowed {
            let started = Instant::now();
            let mut written = false;
            while self.memory.bytes() + embed > self.allowed {
                let Some(e) = self.memory.pop_oldest() else { break };
                let in_time = started.elapsed() < TRIM_WRITE_TIME;
                if let Some(d) = self.disk.as_mut().filter(|d| in_time && !d.covers(&e.tokens)) {
                    match d.save(&e.tokens, &e.state) {
                        Ok(w) => written |= w,
                        Err(err) => tracing::warn!(error = %err, "cannot write a prompt prefix to disk"),
                    }
                }
                dropped = true;
            }
            if written {
                if let Some(d) = self.disk.as_mut() {
                    d.prune();
                }
            }
        }
        self.memory.set_limit(self.allowed.saturating_sub(embed).min(self.cache_capacity));
        if dropped {
            release_freed_memory();
        }
    }

    /// Whether the router asked for less than the embedding context while an embeddings
    /// request was under way, and that request is done now.
    pub(super) fn shrink_due(&self) -> bool {
        self.shrink_pending && self.embeds.is_empty()
    }

    /// Tells the router what evictable memory is held, if it changed since the last report (or
    /// always, when `force`). A worker nobody gave an allowance (a client other than the
    /// router) reports nothing.
    pub(super) fn report_held(&mut self, force: bool) {
        if self.allowed == usize::MAX {
            return;
        }
        let now = (self.memory.bytes(), self.embed_held());
        if force || now != self.reported_held {
            self.reported_held = now;
            self.send(FromWorker::Held { cache_bytes: now.0 as u64, embed_bytes: now.1 as u64 });
        }
    }
}

/// Hands memory that was freed back to the system, so that the worker's resident memory (what
/// the router measures) falls with what it dropped: the allocator otherwise keeps freed pages
/// of large states for reuse.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free pages of the allocator's own heaps to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}
