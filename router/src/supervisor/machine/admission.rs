//! Admission: models that requests wait for start when [`turn::next`] says it is their turn;
//! the models it names make room: idle ones are evicted, busy ones yield (they take no new
//! requests, finish those they hold, and are evicted once idle; their own new requests wait
//! and start them again in their turn). No request in flight is cut.

use model_bucket_shared::{ModelId, Priority};
use std::time::Instant;

use super::{Effect, Supervisor};
use crate::supervisor::error::RegistryError;
use crate::supervisor::lifecycle::{self, Phase};
use crate::supervisor::turn::{self, Holding, Next, Refusal, Rules, Waiting};

/// A request that waited this long goes ahead of its class's other models (when `--quantum`
/// is shorter than half of it).
const AGING_FLOOR: std::time::Duration = std::time::Duration::from_secs(10);

impl Supervisor {
    /// Closes `victims` to new requests, unless they already are.
    fn ask_to_yield(&mut self, victims: Vec<String>, out: &mut Vec<Effect>) {
        for v in victims {
            if let Some(e) = self.models.get_mut(v.as_str()).filter(|e| !e.yielding) {
                e.yielding = true;
                out.push(Effect::Close { model: ModelId::from(v.as_str()), gen: e.gen });
            }
        }
    }

    /// Evicts the workers that yielded once they are idle.
    pub(super) fn evict_yielded(&mut self, now: Instant, out: &mut Vec<Effect>) {
        for (id, e) in self.models.iter_mut() {
            if e.yielding && e.life.phase == Phase::Ready && !e.held(now) && !e.evicting {
                e.evicting = true;
                self.room_at = Some(now);
                out.push(Effect::Evict { model: id.clone(), gen: e.gen, why: "yielding its memory to another model" });
            }
        }
    }

    /// Nobody waits for memory: workers that were yielding take requests again, and their own
    /// waiting requests are admitted.
    fn reopen(&mut self, now: Instant, out: &mut Vec<Effect>) {
        for (id, e) in self.models.iter_mut() {
            if e.yielding && e.life.phase == Phase::Ready && !e.evicting {
                e.yielding = false;
                out.push(Effect::Reopen { model: id.clone(), gen: e.gen });
                if !e.waiters.is_empty() {
                    e.admitted_until = Some(now + super::ADMIT_GRACE);
                }
                for w in e.waiters.drain(..) {
                    out.push(Effect::Admit { waiter: w.id });
                }
            }
        }
    }

    fn rules(&self) -> Rules {
        let s = &self.settings;
        Rules { sched: s.sched, budget: s.budget, quantum: s.quantum, aging: (s.quantum * 2).max(AGING_FLOOR) }
    }

    /// The models that requests wait for and that have no worker. A request that has waited
    /// half its time counts as high priority, whatever it asked: no class starves.
    fn waiting(&self, now: Instant) -> Vec<Waiting> {
        let wanted = self.models.iter().filter(|(_, e)| e.life.phase == Phase::Stopped && !e.waiters.is_empty());
        let class = |w: &super::Waiter| {
            let half = w.deadline.saturating_duration_since(w.since) / 2;
            if now >= w.since + half {
                Priority::High
            } else {
                w.class
            }
        };
        wanted
            .map(|(id, e)| Waiting {
                id: id.to_string(),
                need: e.need,
                class: e.waiters.iter().map(class).max().unwrap_or_default(),
                since: e.waiters.iter().map(|w| w.since).min().expect("waiters"),
                pinned: e.pinned,
            })
            .collect()
    }

    /// The models that hold memory.
    fn holding(&self, now: Instant) -> Vec<Holding> {
        let holding = self.models.iter().filter(|(_, e)| e.bytes > 0);
        holding
            .map(|(id, e)| Holding {
                id: id.to_string(),
                bytes: e.bytes,
                held: e.held(now),
                // A model waiting to restart after a crash holds no process: evicting it frees
                // its reservation at once. One whose admitted requests have not leased it yet
                // is not asked: they would find it closed.
                evictable: matches!(e.life.phase, Phase::Ready | Phase::Backoff)
                    && !e.evicting
                    && e.admitted_until.is_none_or(|t| t <= now),
                // A busy worker that yields goes once idle: its bytes count as on their way out.
                leaving: e.leaving(now),
                trimmable: e.trimmable(now),
                pinned: e.pinned,
                class: e.turn_class,
                turn_ends: e.turn_ends.filter(|_| e.life.phase == Phase::Ready),
                turn: e.turn,
                last_used: e.last_used,
            })
            .collect()
    }

    /// Starts the models whose turn it is while they fit; makes room for the next.
    pub(super) fn admit(&mut self, now: Instant, out: &mut Vec<Effect>) {
        self.wake = None;
        self.short = None;
        self.pending = None;
        if self.stopping {
            return;
        }
        // A swap nobody waits for any more is forgotten.
        for e in self.models.values_mut().filter(|e| e.life.phase == Phase::Stopped && e.waiters.is_empty()) {
            e.swap_from = None;
        }
        loop {
            match turn::next(now, &self.rules(), &self.waiting(now), &self.holding(now)) {
                Next::Nothing => {
                    self.reopen(now, out);
                    return;
                }
                Next::Start(id) => {
                    let id = ModelId::from(id.as_str());
                    let e = self.models.get_mut(&id).expect("waiting");
                    e.bytes = e.need;
                    e.turn_class = e.waiters.iter().map(|w| w.class).max().unwrap_or_default();
                    self.step(&id, lifecycle::Event::Demand, now, out);
                }
                Next::MakeRoom { model, evict, yielders } => {
                    self.pending = self.models.get(model.as_str()).map(|e| e.need);
                    if let Some(e) = self.models.get_mut(model.as_str()).filter(|e| e.swap_from.is_none()) {
                        e.swap_from = Some(now);
                        out.push(Effect::Prefetch { model: ModelId::from(model.as_str()) });
                    }
                    if !evict.is_empty() {
                        self.room_at = Some(now);
                    }
                    self.evict(evict, "to make room for another model", out);
                    self.ask_to_yield(yielders, out);
                    return;
                }
                Next::Wait { model, until } => {
                    self.pending = self.models.get(model.as_str()).map(|e| e.need);
                    self.wake = until;
                    return;
                }
                // The workers are told to shrink (`apportion`); what they report wakes this.
                Next::Trim { short, .. } => {
                    self.short = Some(short);
                    return;
                }
                Next::Refuse { model, why } => {
                    let id = ModelId::from(model.as_str());
                    let e = self.models.get_mut(&id).expect("waiting");
                    let (need, budget) = (e.need, self.settings.budget);
                    let error = match why {
                        Refusal::TooLarge => RegistryError::TooLarge { model: id.clone(), need, budget },
                        Refusal::Pinned { by, room } => RegistryError::Pinned { model: id.clone(), need, room, by },
                    };
                    for w in e.waiters.drain(..) {
                        out.push(Effect::Reject { waiter: w.id, error: error.clone() });
                    }
                }
            }
        }
    }
}
