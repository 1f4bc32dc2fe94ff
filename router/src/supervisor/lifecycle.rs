//! A model's worker lifecycle as a pure state machine: [`Lifecycle::step`] takes an event and
//! returns what to do, so every transition is tested without processes.
//!
//! ```text
//! Stopped --Demand--> Starting --Ready--> Ready --Crashed--> Backoff --RetryDue--> Starting
//!                        |                  |                   (n crashes in the window)
//!                        +--StartFailed--> Failed <-------------------+
//!                                   (until the server restarts)   Ready --Stopped--> Stopped
//! ```
//! A crash while loading fails the model at once (it would fail the same way again); a crash
//! of a ready worker is retried after an exponential backoff, until `max_crashes` crashes fall
//! within `window`, which fails the model with the last reason.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Restart limits.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Delay before the first restart; doubled for each crash still in the window.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Crashes within `window` that mark the model failed.
    pub max_crashes: usize,
    pub window: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_crashes: 5,
            window: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Stopped,
    Starting,
    Ready,
    /// Waiting to restart after a crash.
    Backoff,
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A request wants the model.
    Demand,
    /// The worker loaded its model.
    Ready,
    /// The worker could not start or load.
    StartFailed(String),
    /// A ready worker died without being asked to.
    Crashed(String),
    /// The backoff delay has passed.
    RetryDue,
    /// The worker was stopped on purpose (unload, eviction, shutdown).
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Spawn,
    /// Send `RetryDue` after this long.
    RetryAfter(Duration),
}

#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub phase: Phase,
    /// When recent crashes happened, oldest first, pruned to the window.
    crashes: VecDeque<Instant>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle { phase: Phase::Stopped, crashes: VecDeque::new() }
    }
}

impl Lifecycle {
    /// Applies `ev` at time `now`; returns the effect the caller must carry out, if any.
    pub fn step(&mut self, ev: Event, now: Instant, p: &Policy) -> Option<Effect> {
        use Phase::*;
        match (&self.phase, ev) {
            (Stopped, Event::Demand) => {
                self.phase = Starting;
                Some(Effect::Spawn)
            }
            (Starting, Event::Ready) => {
                self.phase = Ready;
                None
            }
            (Starting, Event::StartFailed(reason)) => {
                self.phase = Failed(reason);
                None
            }
            (Ready, Event::Crashed(reason)) => {
                while self.crashes.front().is_some_and(|t| now.duration_since(*t) > p.window) {
                    self.crashes.pop_front();
                }
                self.crashes.push_back(now);
                let n = self.crashes.len();
                if n >= p.max_crashes {
                    self.phase = Failed(format!("crashed {n} times within {} s; last: {reason}", p.window.as_secs()));
                    return None;
                }
                self.phase = Backoff;
                let delay = p.backoff_base.saturating_mul(1 << (n - 1).min(16)).min(p.backoff_max);
                Some(Effect::RetryAfter(delay))
            }
            (Backoff, Event::RetryDue) => {
                self.phase = Starting;
                Some(Effect::Spawn)
            }
            (Ready | Starting | Backoff, Event::Stopped) => {
                self.phase = Stopped;
                None
            }
            // Everything else changes nothing: demand while starting, ready or failed; a
            // late retry after a stop; a crash report for a worker already replaced.
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Policy {
        Policy {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5),
            max_crashes: 3,
            window: Duration::from_secs(60),
        }
    }

    #[test]
    fn demand_starts_once() {
        let (mut l, t) = (Lifecycle::default(), Instant::now());
        assert_eq!(l.step(Event::Demand, t, &p()), Some(Effect::Spawn));
        assert_eq!(l.step(Event::Demand, t, &p()), None);
        assert_eq!(l.step(Event::Ready, t, &p()), None);
        assert_eq!(l.phase, Phase::Ready);
        assert_eq!(l.step(Event::Demand, t, &p()), None);
    }

    #[test]
    fn a_crash_while_loading_fails_at_once() {
        let (mut l, t) = (Lifecycle::default(), Instant::now());
        l.step(Event::Demand, t, &p());
        assert_eq!(l.step(Event::StartFailed("bad file".into()), t, &p()), None);
        assert_eq!(l.phase, Phase::Failed("bad file".into()));
        assert_eq!(l.step(Event::Demand, t, &p()), None, "failed stays failed");
    }

    #[test]
    fn crashes_back_off_exponentially_then_fail() {
        let (mut l, t) = (Lifecycle::default(), Instant::now());
        l.step(Event::Demand, t, &p());
        l.step(Event::Ready, t, &p());
        let mut delays = vec![];
        for i in 0..2 {
            let now = t + Duration::from_secs(i);
            match l.step(Event::Crashed("signal 9".into()), now, &p()) {
                Some(Effect::RetryAfter(d)) => delays.push(d),
                other => panic!("{other:?}"),
            }
            assert_eq!(l.phase, Phase::Backoff);
            assert_eq!(l.step(Event::RetryDue, now, &p()), Some(Effect::Spawn));
            l.step(Event::Ready, now, &p());
        }
        assert_eq!(delays, vec![Duration::from_secs(1), Duration::from_secs(2)]);
        assert_eq!(l.step(Event::Crashed("signal 9".into()), t + Duration::from_secs(3), &p()), None);
        match &l.phase {
            Phase::Failed(r) => assert!(r.contains("crashed 3 times") && r.contains("signal 9"), "{r}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn old_crashes_leave_the_window() {
        let (mut l, t) = (Lifecycle::default(), Instant::now());
        l.step(Event::Demand, t, &p());
        l.step(Event::Ready, t, &p());
        for i in 0..10u64 {
            let now = t + Duration::from_secs(100 * i);
            assert_eq!(l.step(Event::Crashed("x".into()), now, &p()), Some(Effect::RetryAfter(Duration::from_secs(1))));
            l.step(Event::RetryDue, now, &p());
            l.step(Event::Ready, now, &p());
        }
        assert_eq!(l.phase, Phase::Ready);
    }

    #[test]
    fn backoff_is_capped() {
        let pol = Policy { max_crashes: 100, ..p() };
        let (mut l, t) = (Lifecycle::default(), Instant::now());
        l.step(Event::Demand, t, &pol);
        l.step(Event::Ready, t, &pol);
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            if let Some(Effect::RetryAfter(d)) = l.step(Event::Crashed("x".into()), t, &pol) {
                last = d;
            }
            l.step(Event::RetryDue, t, &pol);
            l.step(Event::Ready, t, &pol);
        }
        assert_eq!(last, Duration::from_secs(5));
    }

    #[test]
    fn deliberate_stops_and_stale_events() {
        let (mut l, t) = (Lifecycle::default(), Instant::now());
        l.step(Event::Demand, t, &p());
        l.step(Event::Ready, t, &p());
        assert_eq!(l.step(Event::Stopped, t, &p()), None);
        assert_eq!(l.phase, Phase::Stopped);
        assert_eq!(l.step(Event::RetryDue, t, &p()), None, "a retry after a stop does nothing");
        assert_eq!(l.step(Event::Crashed("late".into()), t, &p()), None);
        assert_eq!(l.phase, Phase::Stopped);
    }
}
