//! Admission: a model that requests wait for and that has no worker starts once its estimate
//! fits under the budget, after evicting idle workers (least recently used first). Models are
//! admitted in the order their first request came, one at a time: the head of the queue waits
//! for the memory it was promised before a later model may take any.

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
                Plan::Wait | Plan::NoRoom { .. } if now < deadline => return,
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
