//! Admission: a model that requests wait for and that has no worker starts once its estimate
//! fits under the budget, after evicting idle workers (least recently used first). Models are
//! admitted in the order their first request came, one at a time: the head of the queue waits
//! for the memory it was promised before a later model may take any.
//!
//! When idle workers are not enough, the least recently used busy ones that would make room
//! yield: they take no new requests, finish those they hold, and are evicted once idle (their
//! own requests wait, and start them again in turn). A model is never starved by others that
//! stay busy, and no request in flight is cut.

use model_bucket_shared::ModelId;
use std::time::Instant;

use super::{Admission, Effect, Supervisor};
use crate::supervisor::budget::{self, Plan};
use crate::supervisor::error::RegistryError;
use crate::supervisor::lifecycle::{self, Phase};

impl Supervisor {
    /// Queues every stopped model that has waiters and is not queued yet.
    pub(super) fn requeue(&mut self) {
        for (id, e) in &self.models {
            let wanted = e.life.phase == Phase::Stopped && !e.waiters.is_empty();
            if wanted && !self.admissions.iter().any(|a| &a.model == id) {
                self.admissions.push_back(Admission { model: id.clone(), evict_deadline: None });
            }
        }
    }

    /// Closes `victims` to new requests, unless they already are.
    fn ask_to_yield(&mut self, victims: Vec<String>, out: &mut Vec<Effect>) {
        for v in victims {
            if let Some(e) = self.models.get_mut(v.as_str()).filter(|e| !e.yielding) {
                e.yielding = true;
                out.push(Effect::Close { model: ModelId::from(v.as_str()), gen: e.gen });
            }
        }
    }

    /// Bytes held by yielding workers that still serve.
    fn yielding_busy(&self, now: Instant) -> u64 {
        self.models.values().filter(|e| e.yielding && e.held(now)).map(|e| e.bytes).sum()
    }

    /// Evicts the workers that yielded once they are idle.
    pub(super) fn evict_yielded(&mut self, now: Instant, out: &mut Vec<Effect>) {
        for (id, e) in self.models.iter_mut() {
            if e.yielding && e.life.phase == Phase::Ready && !e.held(now) && !e.evicting {
                e.evicting = true;
                out.push(Effect::Evict { model: id.clone(), gen: e.gen, why: "yielding its memory to another model" });
            }
        }
    }

    /// Starts queued models while they fit; evicts for the head when it does not.
    pub(super) fn admit(&mut self, now: Instant, out: &mut Vec<Effect>) {
        while let Some(head) = self.admissions.front_mut() {
            let id = head.model.clone();
            let e = &self.models[&id];
            if e.waiters.is_empty() || e.life.phase != Phase::Stopped {
                self.admissions.pop_front();
                continue;
            }
            let deadline = *head.evict_deadline.get_or_insert(now + self.settings.evict_wait);
            let (need, budget) = (e.need, self.settings.budget);
            let rejection = match budget::plan(need, budget, &self.residents(now, Some(&id))) {
                Plan::Fits => {
                    self.models.get_mut(&id).expect("queued").bytes = need;
                    self.step(&id, lifecycle::Event::Demand, now, out);
                    self.admissions.pop_front();
                    continue;
                }
                Plan::TooLarge => RegistryError::TooLarge { model: id.clone(), need, budget },
                Plan::Evict(victims) if now < deadline => {
                    self.evict(victims, "to make room for another model", out);
                    return;
                }
                Plan::Wait if now < deadline => return,
                Plan::NoRoom { .. } if now < deadline => {
                    // A worker whose admitted requests have not leased it yet is not asked:
                    // they would find it closed.
                    let mut rs = self.residents(now, Some(&id));
                    for r in &mut rs {
                        let e = &self.models[r.id.as_str()];
                        r.evictable &= e.admitted_until.is_none_or(|t| t <= now);
                    }
                    let victims = budget::yielders(need, budget, &rs);
                    self.ask_to_yield(victims, out);
                    return;
                }
                // Still waiting for busy workers that yield: they are serving.
                Plan::Wait if self.yielding_busy(now) > 0 => {
                    RegistryError::NoMemory { model: id.clone(), need, budget, busy: self.yielding_busy(now) }
                }
                Plan::Evict(_) | Plan::Wait => RegistryError::Evicting { model: id.clone() },
                Plan::NoRoom { busy_bytes } => {
                    RegistryError::NoMemory { model: id.clone(), need, budget, busy: busy_bytes }
                }
            };
            let e = self.models.get_mut(&id).expect("queued");
            for w in e.waiters.drain(..) {
                out.push(Effect::Reject { waiter: w.id, error: rejection.clone() });
            }
            self.admissions.pop_front();
        }
    }
}
