//! Once a second: measure each worker's memory, unload workers idle past their TTL, and evict
//! idle workers while the measured total is over the budget.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::Registry;
use crate::supervisor::budget::{self, Plan};
use crate::supervisor::lifecycle::Phase;

/// How often the housekeeping runs.
pub const PERIOD: Duration = Duration::from_secs(1);

/// Whether a worker idle for `idle` should be unloaded under `ttl` (`None`: never).
pub fn idle_expired(idle: Duration, ttl: Option<Duration>) -> bool {
    ttl.is_some_and(|t| idle >= t)
}

impl Registry {
    /// Runs until the server stops.
    pub async fn housekeeping(self: Arc<Self>) {
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            self.measure();
            for id in self.idle_victims() {
                self.evict(&id, "idle past its ttl");
            }
            if let Plan::Evict(victims) = budget::plan(0, self.limits.ram_budget, &self.residents("")) {
                for id in victims {
                    self.evict(&id, "workers grew over the RAM budget");
                }
            }
        }
    }

    /// Refreshes what each running worker counts against the budget from its resident memory.
    /// `/proc` is read outside the lock that requests take.
    fn measure(&self) {
        let pids: Vec<(String, u32)> = {
            let slots = self.slots.lock().expect("slots lock");
            slots.iter().filter_map(|(id, s)| Some((id.clone(), s.live.as_ref()?.pid))).collect()
        };
        let rss: Vec<(String, u32, u64)> = pids
            .into_iter()
            .filter_map(|(id, pid)| Some((id, pid, model_bucket_shared::mem::rss_bytes(Some(pid))?)))
            .collect();
        let mut slots = self.slots.lock().expect("slots lock");
        for (id, pid, rss) in rss {
            // Only if it is still the same process.
            if let Some(s) = slots.get_mut(&id).filter(|s| s.live.as_ref().is_some_and(|l| l.pid == pid)) {
                s.bytes = s.estimate.max(rss);
            }
        }
    }

    /// Ready, idle workers whose TTL (their model's, else the server's) has passed.
    fn idle_victims(&self) -> Vec<String> {
        let candidates: Vec<(String, Option<model_bucket_shared::ModelInfo>, Duration)> = {
            let slots = self.slots.lock().expect("slots lock");
            slots
                .iter()
                .filter(|(_, s)| s.life.phase == Phase::Ready)
                .filter_map(|(id, s)| {
                    let l = s.live.as_ref()?;
                    (l.active.load(Ordering::Acquire) == 0)
                        .then(|| (id.clone(), s.model.clone(), l.last_used().elapsed()))
                })
                .collect()
        };
        candidates
            .into_iter()
            .filter(|(_, m, idle)| {
                let per_model = m.as_ref().and_then(|m| self.model_config(m).ttl_secs).map(Duration::from_secs);
                let ttl = per_model.or(self.limits.idle_ttl).filter(|t| !t.is_zero());
                idle_expired(*idle, ttl)
            })
            .map(|(id, _, _)| id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_decision() {
        assert!(!idle_expired(Duration::from_secs(1000), None));
        assert!(!idle_expired(Duration::from_secs(9), Some(Duration::from_secs(10))));
        assert!(idle_expired(Duration::from_secs(10), Some(Duration::from_secs(10))));
    }
}
