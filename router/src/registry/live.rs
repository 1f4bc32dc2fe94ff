//! A running worker as requests see it, and a request's lease on it. Taking and returning a
//! lease is one atomic operation on the worker's lease count: requests never wait for the
//! supervisor, and the supervisor learns only of the transitions between idle and busy.

use model_bucket_shared::protocol::ReadyInfo;
use model_bucket_shared::ModelId;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

use super::driver::Msg;
use crate::supervisor::machine::{Gen, Input};
use crate::worker::client::WorkerClient;

/// Set in the lease count once the worker is closed to new leases (it is being evicted).
const CLOSED: usize = 1 << (usize::BITS - 1);

/// A running worker process, from ready until it exits.
pub struct Live {
    pub model: ModelId,
    /// The process's number in the supervisor.
    pub gen: Gen,
    pub client: WorkerClient,
    pub ready: ReadyInfo,
    pub pid: u32,
    pub gpus: Option<Vec<u32>>,
    /// The LoRA adapter files it was started with.
    pub lora: Vec<std::path::PathBuf>,
    /// Leases held (running or queued in the worker), plus [`CLOSED`] once closed.
    leases: AtomicUsize,
    /// When the last lease was released, in ms since [`epoch`].
    last_used_ms: AtomicU64,
    /// How long a lease is held, on average over the recent ones, in ms (0: none yet).
    lease_ms: AtomicU64,
    facts: UnboundedSender<Msg>,
}

impl Live {
    pub(super) fn new(
        model: ModelId,
        gen: Gen,
        w: &crate::worker::Worker,
        gpus: Option<Vec<u32>>,
        lora: Vec<std::path::PathBuf>,
        facts: UnboundedSender<Msg>,
    ) -> Live {
        Live {
            model,
            gen,
            client: w.client.clone(),
            ready: w.ready.clone(),
            pid: w.pid,
            gpus,
            lora,
            leases: AtomicUsize::new(0),
            last_used_ms: AtomicU64::new(now_ms()),
            lease_ms: AtomicU64::new(0),
            facts,
        }
    }

    /// Requests holding a lease now.
    pub fn active(&self) -> usize {
        self.leases.load(Ordering::Acquire) & !CLOSED
    }

    /// When it last finished serving (or started, if it never has).
    pub fn last_used(&self) -> Instant {
        epoch() + Duration::from_millis(self.last_used_ms.load(Ordering::Relaxed))
    }

    /// A lease, unless the worker is closed; the first lease tells the supervisor it is busy.
    pub fn try_lease(self: &Arc<Self>) -> Option<Lease> {
        let before = take(&self.leases)?;
        if before == 0 {
            self.fact(Input::Busy { model: self.model.clone(), gen: self.gen });
        }
        Some(Lease { live: self.clone(), since: Instant::now() })
    }

    /// Seconds a request turned away because the worker's queue is full should wait before
    /// it asks again: until the requests ahead of it are through its slots.
    pub fn retry_after(&self) -> u64 {
        queue_wait_secs(self.active(), self.ready.slots, self.lease_ms.load(Ordering::Relaxed))
    }

    /// Closes the worker to new leases if none is held (or finds it closed with none held);
    /// returns whether it is closed and idle.
    pub(super) fn try_close(&self) -> bool {
        close(&self.leases)
    }

    /// Closes the worker to new leases whatever it holds (it is draining).
    pub(super) fn close(&self) {
        self.leases.fetch_or(CLOSED, Ordering::AcqRel);
    }

    /// Takes leases again after [`Live::close`] (it no longer yields).
    pub(super) fn reopen(&self) {
        self.leases.fetch_and(!CLOSED, Ordering::AcqRel);
    }

    fn fact(&self, input: Input) {
        // The driver is gone only when the server is: nothing is left to tell.
        let _ = self.facts.send(Msg::Fact(input));
    }
}

/// A request's hold on a worker: while any lease is alive the worker counts as busy and is
/// never evicted or unloaded for idleness.
pub struct Lease {
    pub live: Arc<Live>,
    since: Instant,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let live = &self.live;
        live.last_used_ms.store(now_ms(), Ordering::Relaxed);
        let held = self.since.elapsed().as_millis().min(u64::MAX as u128) as u64;
        // A moving mean over about the last eight leases.
        let _ = live.lease_ms.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
            Some(if m == 0 { held.max(1) } else { m.saturating_mul(7).saturating_add(held) / 8 })
        });
        if live.leases.fetch_sub(1, Ordering::AcqRel) & !CLOSED == 1 {
            live.fact(Input::Idle { model: live.model.clone(), gen: live.gen });
        }
    }
}

/// Seconds until `active` leases, of which those beyond `slots` wait, have gone through
/// `slots` slots, at `lease_ms` each on average: 1 to 60 (1 before any lease has ended).
pub fn queue_wait_secs(active: usize, slots: u32, lease_ms: u64) -> u64 {
    let rounds = (active as u64).div_ceil(u64::from(slots.max(1)));
    (rounds.saturating_mul(lease_ms).div_ceil(1000)).clamp(1, 60)
}

/// Adds a lease to `count` unless it is closed; returns the count before.
fn take(count: &AtomicUsize) -> Option<usize> {
    count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n & CLOSED == 0).then_some(n + 1)).ok()
}

/// Closes `count` if it is zero; returns whether it is now closed with no lease (a count
/// closed earlier takes no new lease, so once at zero it stays there).
fn close(count: &AtomicUsize) -> bool {
    match count.compare_exchange(0, CLOSED, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => true,
        Err(n) => n == CLOSED,
    }
}

/// The time every `last_used` is counted from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_is_told_when_the_requests_ahead_are_through() {
        // 2 slots, 6 requests (2 running, 4 queued), 1.5 s each: three rounds, 4.5 s.
        assert_eq!(queue_wait_secs(6, 2, 1500), 5);
        assert_eq!(queue_wait_secs(1, 4, 200), 1, "at least a second");
        assert_eq!(queue_wait_secs(80, 1, 30_000), 60, "at most a minute");
        assert_eq!(queue_wait_secs(3, 0, 0), 1, "before any lease has ended");
    }

    #[test]
    fn closes_only_when_idle_and_then_gives_no_lease() {
        let leases = AtomicUsize::new(0);
        assert_eq!(take(&leases), Some(0));
        assert_eq!(take(&leases), Some(1));
        assert!(!close(&leases), "held");
        leases.fetch_sub(2, Ordering::AcqRel);
        assert!(close(&leases));
        assert_eq!(take(&leases), None, "closed");
        assert_eq!(leases.load(Ordering::Acquire) & !CLOSED, 0);
        assert!(close(&leases), "closed and idle stays so");
        // Closed while held (a yielding worker): idle once the last lease is gone.
        let held = AtomicUsize::new(0);
        take(&held);
        held.fetch_or(CLOSED, Ordering::AcqRel);
        assert!(!close(&held));
        held.fetch_sub(1, Ordering::AcqRel);
        assert!(close(&held));
    }
}
