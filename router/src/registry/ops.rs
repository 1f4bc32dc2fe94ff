//! What ops ask of the registry: load, unload, rolling restart, rescan, config reload, and the
//! per-worker view `/admin/workers` and `/metrics` show.

use model_bucket_shared::{Catalog, Config, ModelInfo};
use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{Registry, State};
use crate::http::error::ApiError;
use crate::supervisor::lifecycle::{Event, Phase};

/// A file modified less than this long ago is still being written: it is left for a later scan.
pub const SETTLE: Duration = Duration::from_secs(2);

/// What a rescan changed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RescanReport {
    pub models: usize,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Files still being written; a later scan takes them.
    pub pending: Vec<String>,
    pub skipped: usize,
}

/// One worker as `/admin/workers` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    pub model: String,
    pub state: &'static str,
    pub pid: Option<u32>,
    /// Pinned cores; `None`: every core.
    pub cores: Option<Vec<usize>>,
    pub gpus: Option<Vec<u32>>,
    /// Resident memory now, in bytes.
    pub memory_bytes: Option<u64>,
    /// What it counts against the budget, in bytes.
    pub budget_bytes: u64,
    pub slots: Option<u32>,
    pub slots_busy: usize,
    /// Requests beyond the slots, waiting in the worker's queue.
    pub queued: usize,
    pub restarts: u32,
    pub evictions: u64,
    pub last_exit: Option<String>,
    /// Seconds since it last finished a request.
    pub idle_secs: Option<u64>,
    pub error: Option<String>,
}

impl Registry {
    /// Drains `id`'s worker (in-flight requests finish within the drain grace) and unloads it.
    /// Returns the state it is left in.
    pub fn unload(&self, id: &str) -> &'static str {
        self.step(id, Event::Stop);
        self.state(id).name()
    }

    /// Loads `m` now (also out of `failed`) and waits until it is ready.
    pub async fn load(self: &Arc<Self>, m: &ModelInfo) -> Result<(), ApiError> {
        self.step(&m.id, Event::Reset);
        self.lease(m).await.map(drop)
    }

    /// Restarts every running worker, one at a time: drain, respawn, wait until ready.
    pub async fn restart_all(self: &Arc<Self>) {
        let ids: Vec<String> = {
            let slots = self.slots.lock().expect("slots lock");
            slots.iter().filter(|(_, s)| s.life.phase == Phase::Ready).map(|(id, _)| id.clone()).collect()
        };
        tracing::info!(workers = ids.len(), "rolling restart");
        for id in ids {
            let mut rx = match self.slots.lock().expect("slots lock").get(&id) {
                Some(s) => s.view.subscribe(),
                None => continue,
            };
            self.step(&id, Event::Restart);
            let limit = self.defaults.load_timeout + self.limits.drain_grace;
            let back = tokio::time::timeout(limit, async {
                loop {
                    if rx.changed().await.is_err() {
                        return;
                    }
                    if matches!(&*rx.borrow(), State::Ready(_) | State::Failed(_) | State::Unloaded) {
                        return;
                    }
                }
            })
            .await;
            tracing::info!(model = %id, state = self.state(&id).name(), done = back.is_ok(), "restarted");
        }
    }

    /// Scans the folder again: new files become models, removed ones are drained and dropped.
    /// `reset_failed`: failed models get another chance. Files changed less than `settle` ago
    /// are left for a later scan.
    pub async fn rescan(self: &Arc<Self>, reset_failed: bool, settle: Duration) -> anyhow::Result<RescanReport> {
        let _one = self.rescans.lock().await;
        let (dir, config) = (self.dir.clone(), self.config());
        let cat = tokio::task::spawn_blocking(move || Catalog::scan_settled(&dir, &config, None, settle)).await??;
        Ok(self.install(cat, reset_failed))
    }

    /// Makes `cat` the catalog; drains the workers of models that left it.
    fn install(&self, cat: Catalog, reset_failed: bool) -> RescanReport {
        let old: BTreeSet<String> = self.catalog().models.iter().map(|m| m.id.clone()).collect();
        let new: BTreeSet<String> = cat.models.iter().map(|m| m.id.clone()).collect();
        let report = RescanReport {
            models: cat.models.len(),
            added: new.difference(&old).cloned().collect(),
            removed: old.difference(&new).cloned().collect(),
            pending: cat.pending.iter().map(|p| p.display().to_string()).collect(),
            skipped: cat.skipped.len(),
        };
        *self.catalog.write().expect("catalog lock") = Arc::new(cat);
        for id in &report.removed {
            tracing::info!(model = %id, "model file removed: draining its worker");
            self.step(id, Event::Stop);
        }
        for id in &report.added {
            tracing::info!(model = %id, "new model");
        }
        if reset_failed {
            let ids: Vec<String> = self.slots.lock().expect("slots lock").keys().cloned().collect();
            for id in ids {
                self.step(&id, Event::Reset);
            }
        }
        report
    }

    /// SIGHUP: reads the config file again (a bad one is reported and the old one kept), then
    /// rescans with failed models reset. Running workers keep their settings until they restart.
    pub async fn reload(self: &Arc<Self>) -> anyhow::Result<RescanReport> {
        if let Some(path) = &self.config_path {
            match Config::load(path) {
                Ok(c) => {
                    *self.config.write().expect("config lock") = Arc::new(c);
                    tracing::info!(path = %path.display(), "config reloaded");
                }
                Err(e) => tracing::error!(error = %e, "config not reloaded: keeping the old one"),
            }
        }
        self.rescan(true, SETTLE).await
    }

    /// Every model that has (or had) a worker and is not simply stopped.
    pub fn workers(&self) -> Vec<WorkerView> {
        let slots = self.slots.lock().expect("slots lock");
        let mut out: Vec<WorkerView> = slots
            .iter()
            .filter(|(_, s)| s.life.phase != Phase::Stopped)
            .map(|(id, s)| {
                let live = s.live.as_ref();
                let active = live.map(|l| l.active.load(Ordering::Acquire)).unwrap_or(0);
                let n_slots = live.map(|l| l.ready.slots);
                let cap = n_slots.unwrap_or(0) as usize;
                WorkerView {
                    model: id.clone(),
                    state: s.life.phase.name(),
                    pid: live.map(|l| l.pid),
                    cores: s.cores.clone(),
                    gpus: live.and_then(|l| l.gpus.clone()),
                    // Read from /proc below, outside the lock.
                    memory_bytes: None,
                    budget_bytes: s.bytes,
                    slots: n_slots,
                    slots_busy: active.min(cap),
                    queued: active.saturating_sub(cap),
                    restarts: s.life.restarts,
                    evictions: s.evictions,
                    last_exit: s.life.last_exit.clone(),
                    idle_secs: live.filter(|_| active == 0).map(|l| l.last_used().elapsed().as_secs()),
                    error: match &s.life.phase {
                        Phase::Failed(r) => Some(r.clone()),
                        _ => None,
                    },
                }
            })
            .collect();
        drop(slots);
        for w in &mut out {
            w.memory_bytes = w.pid.and_then(|p| model_bucket_shared::mem::rss_bytes(Some(p)));
        }
        out.sort_by(|a, b| a.model.cmp(&b.model));
        out
    }
}
