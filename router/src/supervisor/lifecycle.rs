//! A model's worker lifecycle as a pure state machine: [`Lifecycle::step`] takes an event and
//! returns what to do, so every transition is tested without processes.
//!
//! ```text
//! Stopped --Demand--> Starting --Ready--> Ready --Exited--> Backoff --RetryDue--> Starting
//!    ^                   |                  |   (a crash)     | (n crashes in the window)
//!    |                   +--StartFailed--+  +--Stop/Restart--> Draining --Exited--> Stopped
//!    +--Reset-- Failed <-----------------+------------------------+        (or Starting after
//!                                                                            a Restart)
//! ```
//! A crash while loading fails the model at once (it would fail the same way again); a crash
//! of a ready worker is retried after an exponential backoff, until `max_crashes` crashes fall
//! within `window`, which fails the model with the last reason. A failed model stays failed
//! until a `Reset` (SIGHUP, rescan, or an explicit load). A worker that exits while draining
//! was asked to: that is never a crash.

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
    /// Asked to finish its requests and exit; `restart`: start again once it has.
    Draining {
        restart: bool,
    },
    /// Waiting to restart after a crash.
    Backoff,
    Failed(String),
}

impl Phase {
    /// The name `/admin/workers` shows.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Stopped => "stopped",
            Phase::Starting => "loading",
            Phase::Ready => "ready",
            Phase::Draining { .. } => "draining",
            Phase::Backoff => "backoff",
            Phase::Failed(_) => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A request (or an explicit load) wants the model, and the memory for it is reserved.
    Demand,
    /// The worker loaded its model.
    Ready,
    /// The worker could not start or load.
    StartFailed(String),
    /// The worker process ended, for the given reason.
    Exited(String),
    /// The backoff delay has passed.
    RetryDue,
    /// Unload: eviction, idle timeout, removal from the folder, an explicit unload, shutdown.
    Stop,
    /// Drain and start again (SIGUSR1).
    Restart,
    /// Forget a failure and crash history (SIGHUP, rescan, explicit load).
    Reset,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Spawn,
    /// Send `RetryDue` after this long.
    RetryAfter(Duration),
    /// Ask the worker to finish its requests and exit.
    Drain,
}

#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub phase: Phase,
    /// When recent crashes happened, oldest first, pruned to the window.
    crashes: VecDeque<Instant>,
    /// Restarts after crashes, over the server's life.
    pub restarts: u32,
    /// Why the last worker process ended.
    pub last_exit: Option<String>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle { phase: Phase::Stopped, crashes: VecDeque::new(), restarts: 0, last_exit: None }
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
            // Stopped while loading: drain as soon as it is up.
            (Draining { .. }, Event::Ready) => Some(Effect::Drain),
            (Starting | Draining { .. }, Event::StartFailed(reason)) => {
                self.last_exit = Some(reason.clone());
                self.phase = if matches!(self.phase, Starting) { Failed(reason) } else { Stopped };
                None
            }
            (Ready, Event::Exited(reason)) => {
                self.last_exit = Some(reason.clone());
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
            (Draining { restart }, Event::Exited(reason)) => {
                self.last_exit = Some(reason);
                if *restart {
                    self.phase = Starting;
                    Some(Effect::Spawn)
                } else {
                    self.phase = Stopped;
                    None
                }
            }
            (Backoff, Event::RetryDue) => {
                self.restarts += 1;
                self.phase = Starting;
                Some(Effect::Spawn)
            }
            (Ready, Event::Stop) => {
                self.phase = Draining { restart: false };
                Some(Effect::Drain)
            }
            (Starting, Event::Stop) => {
                self.phase = Draining { restart: false };
                None
            }
            (Draining { .. }, Event::Stop) => {
                self.phase = Draining { restart: false };
                None
            }
            (Backoff | Failed(_), Event::Stop) => {
                self.phase = Stopped;
                None
            }
            (Ready, Event::Restart) => {
                self.phase = Draining { restart: true };
                Some(Effect::Drain)
            }
            (Failed(_), Event::Reset) => {
                self.crashes.clear();
                self.phase = Stopped;
                None
            }
            (_, Event::Reset) => {
                self.crashes.clear();
                None
            }
            // Everything else changes nothing: demand while starting, ready, draining or
            // failed; a late retry after a stop; a restart of a worker that is not running.
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
            match l.step(Event::Exited("signal 9".into()), now, &p()) {
                Some(Effect::RetryAfter(d)) => delays.push(d),
                other => panic!("{other:?}"),
            }
            assert_eq!(l.phase, Phase::Backoff);
            assert_eq!(l.step(Event::RetryDue, now, &p()), Some(Effect::Spawn));
            l.step(Event::Ready, now, &p());
        }
        assert_eq!(delays, vec![Duration::from_secs(1), Duration::from_secs(2)]);
        assert_eq!(l.step(Event::Exited("signal 9".into()), t + Duration::from_secs(3), &p()), None);
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
            assert_eq!(l.step(Event::Exited("x".into()), now, &p()), Some(Effect::RetryAfter(Duration::from_secs(1))));
            l.step(Event::RetryDue, now, &p());
            l.step(Event::Ready, now, &p());
        }
        assert_eq!(l.phase, Phase::Ready);
    }

    #[test]
    fn the_default_backoff_is_what_the_readme_states() {
        // "restarted with exponential backoff (0.5 s, doubling, at most 30 s)"
        let pol = Policy { max_crashes: 100, ..Policy::default() };
        let (mut l, t) = (Lifecycle::default(), Instant::now());
        l.step(Event::Demand, t, &pol);
        l.step(Event::Ready, t, &pol);
        let mut delays = Vec::new();
        for _ in 0..9 {
            if let Some(Effect::RetryAfter(d)) = l.step(Event::Exited("x".into()), t, &pol) {
                delays.push(d.as_millis());
            }
            l.step(Event::RetryDue, t, &pol);
            l.step(Event::Ready, t, &pol);
        }
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
    }

    #[test]
    fn backoff_is_capped() {
        let pol = Policy { max_crashes: 100, ..p() };
        let (mut l, t) = (Lifecycle::default(), Instant::now());
        l.step(Event::Demand, t, &pol);
        l.step(Event::Ready, t, &pol);
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            if let Some(Effect::RetryAfter(d)) = l.step(Event::Exited("x".into()), t, &pol) {
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
        assert_eq!(l.step(Event::Stop, t, &p()), Some(Effect::Drain));
        assert_eq!(l.phase, Phase::Draining { restart: false });
        assert_eq!(l.step(Event::Demand, t, &p()), None, "demand waits for the drain");
        assert_eq!(l.step(Event::Exited("exit status: 0".into()), t, &p()), None, "an asked-for exit is no crash");
        assert_eq!(l.phase, Phase::Stopped);
        assert_eq!(l.restarts, 0);
        assert_eq!(l.step(Event::RetryDue, t, &p()), None, "a retry after a stop does nothing");
        assert_eq!(l.step(Event::Exited("late".into()), t, &p()), None);
        assert_eq!(l.phase, Phase::Stopped);
        assert_eq!(l.step(Event::Demand, t, &p()), Some(Effect::Spawn), "and it loads again on demand");
    }

    #[test]
    fn restart_drains_then_spawns() {
        let (mut l, t) = (Lifecycle::default(), Instant::now());
        assert_eq!(l.step(Event::Restart, t, &p()), None, "nothing to restart");
        l.step(Event::Demand, t, &p());
        l.step(Event::Ready, t, &p());
        assert_eq!(l.step(Event::Restart, t, &p()), Some(Effect::Drain));
        assert_eq!(l.step(Event::Exited("exit status: 0".into()), t, &p()), Some(Effect::Spawn));
        assert_eq!(l.phase, Phase::Starting);
        assert_eq!(l.step(Event::Ready, t, &p()), None);
        assert_eq!(l.phase, Phase::Ready);
    }

    #[test]
    fn stop_while_loading_drains_once_up() {
        let (mut l, t) = (Lifecycle::default(), Instant::now());
        l.step(Event::Demand, t, &p());
        assert_eq!(l.step(Event::Stop, t, &p()), None);
        assert_eq!(l.step(Event::Ready, t, &p()), Some(Effect::Drain));
        assert_eq!(l.step(Event::Exited("exit status: 0".into()), t, &p()), None);
        assert_eq!(l.phase, Phase::Stopped);
        // A load that fails after it was stopped is not a failure of the model.
        l.step(Event::Demand, t, &p());
        l.step(Event::Stop, t, &p());
        l.step(Event::StartFailed("killed".into()), t, &p());
        assert_eq!(l.phase, Phase::Stopped);
    }

    #[test]
    fn reset_is_the_way_out_of_failed() {
        let (mut l, t) = (Lifecycle::default(), Instant::now());
        l.step(Event::Demand, t, &p());
        l.step(Event::StartFailed("bad".into()), t, &p());
        assert_eq!(l.step(Event::Demand, t, &p()), None);
        l.step(Event::Reset, t, &p());
        assert_eq!(l.phase, Phase::Stopped);
        assert_eq!(l.step(Event::Demand, t, &p()), Some(Effect::Spawn));
        assert_eq!(l.last_exit.as_deref(), Some("bad"));
    }

    #[test]
    fn crash_restarts_are_counted() {
        let (mut l, t) = (Lifecycle::default(), Instant::now());
        l.step(Event::Demand, t, &p());
        l.step(Event::Ready, t, &p());
        l.step(Event::Exited("signal: 9 (SIGKILL)".into()), t, &p());
        l.step(Event::RetryDue, t, &p());
        assert_eq!(l.restarts, 1);
        assert_eq!(l.last_exit.as_deref(), Some("signal: 9 (SIGKILL)"));
    }
}
