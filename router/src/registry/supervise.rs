//! The task that owns one model's worker process: starts it, publishes it, watches it exit,
//! and starts it again for as long as the lifecycle says so.

use model_bucket_shared::ModelInfo;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;

use super::{epoch, Live, Registry};
use crate::metrics::ModelLabel;
use crate::supervisor::lifecycle::{Effect, Event};
use crate::worker::{self, WorkerSpec};

/// Time beyond the drain grace a draining worker gets before it is killed.
const DRAIN_MARGIN: std::time::Duration = std::time::Duration::from_secs(3);

impl Registry {
    pub(super) async fn supervise(self: Arc<Self>, m: ModelInfo, mut spec: WorkerSpec) {
        let label = ModelLabel::new(&m.id);
        loop {
            let mut w = match worker::spawn(&spec).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(model = %m.id, error = %e, "worker failed to start");
                    self.step(&m.id, Event::StartFailed(e.to_string()));
                    self.freed();
                    return;
                }
            };
            let live = Arc::new(Live {
                client: w.client.clone(),
                ready: w.ready.clone(),
                pid: w.pid,
                gpus: spec.gpus.clone(),
                active: AtomicUsize::new(0),
                last_used_ms: AtomicU64::new(epoch().elapsed().as_millis() as u64),
            });
            {
                let mut slots = self.slots.lock().expect("slots lock");
                let slot = slots.entry(m.id.clone()).or_default();
                slot.live = Some(live.clone());
                slot.bytes = slot.estimate.max(w.ready.memory_bytes);
            }
            let mut view = match self.slots.lock().expect("slots lock").get(&m.id) {
                Some(s) => s.view.subscribe(),
                None => return,
            };
            self.step(&m.id, Event::Ready);
            // Once the worker is draining it gets the grace, and a little more, to exit; one that
            // ignores the request is killed.
            let mut kill_at: Option<tokio::time::Instant> = None;
            let mut connected = true;
            let status = loop {
                let deadline =
                    kill_at.unwrap_or_else(|| tokio::time::Instant::now() + std::time::Duration::from_secs(86400));
                tokio::select! {
                    msg = w.unsolicited.recv(), if connected => match msg {
                        Some(msg) => tracing::warn!(model = %m.id, ?msg, "worker message"),
                        // The connection is gone but the process is not (a frame the router could
                        // not read): a worker nobody can talk to is of no use, so end it and let
                        // the lifecycle restart it.
                        None => {
                            connected = false;
                            tracing::error!(model = %m.id, pid = w.pid, "lost the connection to the worker: killing it");
                            let _ = w.child.start_kill();
                        }
                    },
                    status = w.child.wait() => break status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                    Ok(()) = view.changed(), if kill_at.is_none() => {
                        if matches!(&*view.borrow_and_update(), super::State::Draining) {
                            kill_at = Some(tokio::time::Instant::now() + self.limits.drain_grace + DRAIN_MARGIN);
                        }
                    }
                    _ = tokio::time::sleep_until(deadline), if kill_at.is_some() => {
                        tracing::warn!(model = %m.id, pid = w.pid, "worker did not exit after draining: killing it");
                        let _ = w.child.start_kill();
                        kill_at = None;
                    }
                }
            };
            // Let the log follower catch the last lines before they go into the reason.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let reason = format!("worker exited ({status}); last log: {}", w.stderr_tail.last(3));
            {
                let mut slots = self.slots.lock().expect("slots lock");
                if let Some(slot) = slots.get_mut(&m.id) {
                    slot.live = None;
                }
            }
            let effect = self.step(&m.id, Event::Exited(reason.clone()));
            self.freed();
            match effect {
                Some(Effect::RetryAfter(delay)) => {
                    tracing::error!(model = %m.id, pid = w.pid, %reason, "worker crashed");
                    self.metrics.restarts.get_or_create(&label).inc();
                    tracing::info!(model = %m.id, delay_ms = delay.as_millis() as u64, "restarting after backoff");
                    tokio::time::sleep(delay).await;
                    if self.step(&m.id, Event::RetryDue) != Some(Effect::Spawn) {
                        return;
                    }
                    spec = self.respec(&m);
                }
                Some(Effect::Spawn) => {
                    tracing::info!(model = %m.id, pid = w.pid, "worker restarted on request");
                    spec = self.respec(&m);
                }
                _ => {
                    if self.state(&m.id).name() == "failed" {
                        tracing::error!(model = %m.id, pid = w.pid, %reason, "worker crashed too often: model failed");
                    } else {
                        tracing::info!(model = %m.id, pid = w.pid, %status, "worker stopped");
                    }
                    return;
                }
            }
        }
    }

    /// The spec for starting `m` again: the current config, and the model's current file (it
    /// may have been renamed since).
    fn respec(&self, m: &ModelInfo) -> WorkerSpec {
        let current = self.catalog().models.iter().find(|x| x.id == m.id).cloned().unwrap_or_else(|| m.clone());
        let (spec, cores) = self.spec_for(&current);
        if let Some(slot) = self.slots.lock().expect("slots lock").get_mut(&m.id) {
            slot.cores = cores;
        }
        spec
    }
}
