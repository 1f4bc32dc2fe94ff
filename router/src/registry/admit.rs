//! Admission: before a worker starts, its memory is estimated and room is made under the RAM
//! budget by evicting idle workers, least recently used first. One admission runs at a time, so
//! two loads never both count on the same free memory.

use model_bucket_shared::ModelInfo;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{Registry, Slot};
use crate::http::error::ApiError;
use crate::supervisor::budget::{self, human, Plan, Resident};
use crate::supervisor::lifecycle::{Effect, Event, Phase};
use crate::worker::WorkerSpec;

/// Context per slot a worker uses when nothing sets it, in tokens (the worker's rule).
const DEFAULT_CTX: u64 = 4096;

impl Registry {
    /// The spec `m`'s worker starts with now: config and defaults, plus cores from the
    /// automatic spread when the config pins none and it runs fewer threads than there are cores.
    pub(super) fn spec_for(&self, m: &ModelInfo) -> (WorkerSpec, Option<Vec<usize>>) {
        let mut spec = super::worker_spec(m, &self.model_config(m), &self.defaults);
        let cores = match (&spec.cpus, spec.threads) {
            (Some(list), _) => model_bucket_shared::cpus::parse_cpu_list(list).ok(),
            (None, Some(t)) if (t as usize) < self.all_cores.len() => {
                let taken: Vec<Vec<usize>> = {
                    let slots = self.slots.lock().expect("slots lock");
                    slots.iter().filter(|(id, _)| *id != &m.id).filter_map(|(_, s)| s.cores.clone()).collect()
                };
                let picked = crate::supervisor::cores::assign(&self.all_cores, &taken, t as usize);
                spec.cpus = Some(crate::supervisor::cores::format_list(&picked));
                Some(picked)
            }
            _ => None,
        };
        (spec, cores)
    }

    /// Bytes `m`'s worker is expected to need with `spec`, its prompt cache and its embedding
    /// context included (made on the first embeddings request, counted from the start so that
    /// an embeddings request never pushes a worker past its reservation).
    pub(super) fn estimate(m: &ModelInfo, spec: &WorkerSpec) -> u64 {
        let slot = ctx_slot(m, spec.ctx);
        let embed = slot.min(model_bucket_shared::EMBED_CTX_TOKENS as u64);
        let ctx = slot * spec.parallel as u64 + embed;
        // The embedding context's logits, in its output and its compute buffer: one chunk of
        // tokens × the vocabulary, in f32, twice.
        let embed_logits = 2 * model_bucket_shared::EMBED_CHUNK_TOKENS as u64 * m.n_vocab.unwrap_or(128_000) * 4;
        budget::estimate(m.size_bytes, m.kv_bytes_per_token, m.n_vocab, ctx)
            .saturating_add(spec.prompt_cache)
            .saturating_add(embed_logits)
    }

    /// What the planner needs to know about every worker but `except`.
    pub(super) fn residents(&self, except: &str) -> Vec<Resident> {
        let slots = self.slots.lock().expect("slots lock");
        slots
            .iter()
            .filter(|(id, s)| *id != except && s.bytes > 0)
            .map(|(id, s)| Resident {
                id: id.clone(),
                bytes: s.bytes,
                busy: s.live.as_ref().is_some_and(|l| l.active.load(Ordering::Acquire) > 0),
                // A model waiting to restart after a crash holds no process: evicting it frees
                // its reservation at once.
                evictable: matches!(s.life.phase, Phase::Ready | Phase::Backoff),
                leaving: s.life.phase == (Phase::Draining { restart: false }),
                last_used: s.live.as_ref().map(|l| l.last_used()).unwrap_or_else(Instant::now),
            })
            .collect()
    }

    /// Makes room for `m` and starts its worker; returns once the worker is starting (or was
    /// started by someone else meanwhile).
    pub(super) async fn admit(self: &Arc<Self>, m: &ModelInfo, deadline: tokio::time::Instant) -> Result<(), ApiError> {
        let _turn = tokio::time::timeout_at(deadline, self.admission.lock())
            .await
            .map_err(|_| ApiError::unavailable(format!("model {} is waiting for other models to load", m.id), 5))?;
        if !self.is_stopped(&m.id) {
            return Ok(());
        }
        let (spec, cores) = self.spec_for(m);
        let need = Self::estimate(m, &spec);
        let budget = self.limits.ram_budget;
        let evict_deadline = deadline.min(tokio::time::Instant::now() + self.limits.evict_wait);
        loop {
            let mut freed = self.freed_tx.subscribe();
            match budget::plan(need, budget, &self.residents(&m.id)) {
                Plan::Fits => break,
                Plan::TooLarge => {
                    return Err(ApiError::insufficient_memory(format!(
                    "model {} needs about {} but the RAM budget is {}; raise --ram-budget or lower its ctx/parallel",
                    m.id,
                    human(need),
                    human(budget)
                )))
                }
                Plan::Evict(victims) if tokio::time::Instant::now() < evict_deadline => {
                    for id in victims {
                        self.evict(&id, &format!("to make room for {} (needs {})", m.id, human(need)));
                    }
                }
                Plan::Wait if tokio::time::Instant::now() < evict_deadline => {}
                Plan::Evict(_) | Plan::Wait => {
                    return Err(ApiError::unavailable(
                        format!("model {} is waiting for other workers to free memory; retry shortly", m.id),
                        5,
                    ))
                }
                Plan::NoRoom { busy_bytes } => {
                    tracing::debug!(model = %m.id, busy_bytes, "waiting for busy workers to free memory");
                    if tokio::time::Instant::now() >= evict_deadline {
                        return Err(ApiError::unavailable(
                            format!(
                                "not enough memory for model {} (needs about {}; budget {}, {} held by workers that are serving); retry later",
                                m.id,
                                human(need),
                                human(budget),
                                human(busy_bytes)
                            ),
                            5,
                        ));
                    }
                }
            }
            // Evicted workers are draining, busy ones serving: wait for one to exit or go idle.
            let _ = tokio::time::timeout_at(evict_deadline, freed.changed()).await;
        }
        let mut slots = self.slots.lock().expect("slots lock");
        // Checked under the lock `shutdown_all` sweeps under: nothing starts once it has.
        if self.stopping.load(Ordering::SeqCst) {
            return Err(ApiError::unavailable("the server is shutting down", 5));
        }
        let slot: &mut Slot = slots.entry(m.id.clone()).or_default();
        if slot.life.step(Event::Demand, Instant::now(), &self.limits.policy) == Some(Effect::Spawn) {
            slot.model = Some(m.clone());
            slot.bytes = need;
            slot.estimate = need;
            slot.cores = cores;
            slot.publish();
            let this = self.clone();
            let m = m.clone();
            tokio::spawn(async move { this.supervise(m, spec).await });
        }
        Ok(())
    }

    fn is_stopped(&self, id: &str) -> bool {
        self.slots.lock().expect("slots lock").get(id).is_none_or(|s| s.life.phase == Phase::Stopped)
    }
}

/// Context per slot of `m`'s worker, in tokens: the configured one, else the model's, at most
/// [`DEFAULT_CTX`] (as the worker decides).
pub(super) fn ctx_slot(m: &ModelInfo, configured: Option<u32>) -> u64 {
    configured.map(u64::from).unwrap_or_else(|| m.context_length.unwrap_or(DEFAULT_CTX).min(DEFAULT_CTX))
}
