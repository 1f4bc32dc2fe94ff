//! What ops ask of the registry: load, unload, rolling restart, rescan, config reload, and the
//! per-worker view `/admin/workers` and `/metrics` show.

use model_bucket_shared::{Catalog, Config, ModelId, ModelInfo};
use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::driver::Msg;
use super::{Registry, RegistryError, State};
use crate::supervisor::machine::Input;

/// A file modified less than this long ago is still being written: it is left for a later scan.
pub const SETTLE: Duration = Duration::from_secs(2);

/// What a rescan changed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RescanReport {
    pub models: usize,
    pub added: Vec<ModelId>,
    pub removed: Vec<ModelId>,
    /// Files still being written; a later scan takes them.
    pub pending: Vec<String>,
    pub skipped: usize,
}

/// One worker as `/admin/workers` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    pub model: String,
    pub state: &'static str,
    /// How far loading has got, 0–1, while the worker loads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<f32>,
    pub pid: Option<u32>,
    /// Pinned cores; `None`: every core.
    pub cores: Option<Vec<usize>>,
    pub gpus: Option<Vec<u32>>,
    /// Resident memory now, in bytes.
    pub memory_bytes: Option<u64>,
    /// What it counts against the budget, in bytes: the larger of its estimate plus its
    /// evictable memory and its resident memory.
    pub budget_bytes: u64,
    /// What it is expected to hold whatever it serves (weights, the slots' KV cache, compute
    /// buffers), in bytes.
    pub estimate_bytes: u64,
    /// Evictable memory it holds (host prompt cache, embedding context), in bytes.
    pub evictable_bytes: u64,
    /// Evictable memory it may hold now, in bytes (the budget's room, shared out).
    pub evictable_allowed_bytes: Option<u64>,
    pub slots: Option<u32>,
    pub slots_busy: usize,
    /// Requests beyond the slots, waiting in the worker's queue.
    pub queued: usize,
    /// Requests waiting for the model to get memory and start (or to load).
    pub waiting: usize,
    /// Never evicted (`resident = true`).
    pub pinned: bool,
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
    pub async fn unload(&self, id: &str) -> &'static str {
        self.tell_and_wait(Input::Stop { model: ModelId::from(id) }).await;
        self.state(id).name()
    }

    /// A client's wish for how long `m`'s worker stays loaded once idle (`None`: as configured),
    /// capped by the server's settings ([`crate::supervisor::machine::idle_time`]).
    pub fn keep_alive(&self, m: &ModelInfo, asked: Option<Duration>) {
        let mut all = self.keep_alive.lock().expect("keep-alive lock");
        let before = match asked {
            Some(t) => all.insert(m.id.clone(), t),
            None => all.remove(&m.id),
        };
        if before != asked {
            self.tell(Input::KeepAlive { model: m.id.clone(), asked });
        }
    }

    /// How long `m`'s worker may stay idle before it is unloaded (`None`: for ever).
    pub fn idle_time(&self, m: &ModelInfo) -> Option<Duration> {
        let configured = self.model_config(m).ttl_secs.map(Duration::from_secs).or(self.limits.idle_ttl);
        let asked = self.keep_alive.lock().expect("keep-alive lock").get(&m.id).copied();
        crate::supervisor::machine::idle_time(configured, asked)
    }

    /// Loads `m` now (also out of `failed`) and waits until it is ready.
    pub async fn load(&self, m: &ModelInfo) -> Result<(), RegistryError> {
        self.tell_and_wait(Input::Reset { model: m.id.clone() }).await;
        self.lease(m).await.map(drop)
    }

    /// Restarts every running worker, one at a time: drain, respawn, wait until ready.
    pub async fn restart_all(&self) {
        let ids = self.ask(Msg::Ready).await.unwrap_or_default();
        tracing::info!(workers = ids.len(), "rolling restart");
        for id in ids {
            let State::Ready(old) = self.state(id.as_str()) else { continue };
            let mut changes = self.changes.subscribe();
            self.tell(Input::Restart { model: id.clone() });
            let limit = self.defaults.load_timeout + self.limits.drain_grace;
            let back = tokio::time::timeout(limit, async {
                loop {
                    match self.state(id.as_str()) {
                        State::Ready(new) if new.gen != old.gen => return,
                        State::Failed(_) | State::Unloaded => return,
                        _ => {}
                    }
                    if changes.changed().await.is_err() {
                        return;
                    }
                }
            })
            .await;
            tracing::info!(model = %id, state = self.state(id.as_str()).name(), done = back.is_ok(), "restarted");
        }
    }

    /// Scans the folder again: new files become models, removed ones are drained and dropped.
    /// `reset_failed`: failed models get another chance. Files changed less than `settle` ago
    /// are left for a later scan.
    pub async fn rescan(self: &Arc<Self>, reset_failed: bool, settle: Duration) -> anyhow::Result<RescanReport> {
        let _one = self.rescans.lock().await;
        let (dir, config) = (self.dir.clone(), self.config());
        let cat = tokio::task::spawn_blocking(move || {
            Catalog::scan_settled(&dir, &config, Some(&mut crate::bucket::hash_logger()), settle)
        })
        .await??;
        let (report, resets) = self.install(cat, reset_failed);
        // Answered once the failed models are out of `failed`: a request right after a rescan
        // must not find them still failed.
        for model in resets {
            self.tell_and_wait(Input::Reset { model }).await;
        }
        Ok(report)
    }

    /// Makes `cat` the catalog; drains the workers of models that left it. Returns the report
    /// and, with `reset_failed`, the models to give another chance.
    fn install(&self, cat: Catalog, reset_failed: bool) -> (RescanReport, Vec<ModelId>) {
        let before = self.catalog();
        let old: BTreeSet<ModelId> = before.models.iter().map(|m| m.id.clone()).collect();
        // A running base whose adapters changed restarts (drained) to load them.
        let restart: Vec<ModelId> = cat
            .models
            .iter()
            .filter(|m| before.models.iter().any(|o| o.id == m.id && o.adapters != m.adapters))
            .filter(|m| matches!(self.state(&m.id), State::Ready(_)))
            .map(|m| m.id.clone())
            .collect();
        let new: BTreeSet<ModelId> = cat.models.iter().map(|m| m.id.clone()).collect();
        let report = RescanReport {
            models: cat.models.len(),
            added: new.difference(&old).cloned().collect(),
            removed: old.difference(&new).cloned().collect(),
            pending: cat.pending.iter().map(|p| p.display().to_string()).collect(),
            skipped: cat.skipped.len(),
        };
        *self.catalog.write().expect("catalog lock") = Arc::new(cat);
        self.changed();
        for id in &report.removed {
            tracing::info!(model = %id, "model file removed: draining its worker");
            self.tell(Input::Stop { model: id.clone() });
        }
        for id in &report.added {
            tracing::info!(model = %id, "new model");
        }
        for id in restart {
            tracing::info!(model = %id, "its LoRA adapters changed: restarting its worker");
            self.tell(Input::Restart { model: id });
        }
        let resets = if reset_failed { old.union(&new).cloned().collect() } else { Vec::new() };
        (report, resets)
    }

    /// SIGHUP: reads the config file again (a bad one is reported and the old one kept), then
    /// rescans with failed models reset. Running workers keep their settings until they restart.
    pub async fn reload(self: &Arc<Self>) -> anyhow::Result<RescanReport> {
        if let Some(path) = &self.config_path {
            match Config::load(path) {
                Ok(c) => {
                    *self.config.write().expect("config lock") = Arc::new(c);
                    tracing::info!(path = %path.display(), "config reloaded");
                    for m in self.catalog().models.iter().filter(|m| m.lora.is_none()) {
                        let mc = self.model_config(m);
                        let ttl = mc.ttl_secs.map(Duration::from_secs);
                        let pinned = mc.resident.unwrap_or(false);
                        self.tell(Input::Configure { model: m.id.clone(), ttl, pinned });
                    }
                }
                Err(e) => tracing::error!(error = %e, "config not reloaded: keeping the old one"),
            }
        }
        let report = self.rescan(true, SETTLE).await;
        self.load_pinned();
        report
    }

    /// Loads every model the config pins in memory (`resident = true`) that is not loaded, in
    /// the background; failures are logged (a request then sees them).
    pub fn load_pinned(self: &Arc<Self>) {
        for m in self.catalog().models.iter().filter(|m| m.lora.is_none()) {
            if self.model_config(m).resident != Some(true) || !matches!(self.state(&m.id), State::Unloaded) {
                continue;
            }
            let (r, m) = (self.clone(), m.clone());
            tokio::spawn(async move {
                tracing::info!(model = %m.id, "loading a pinned model");
                if let Err(e) = r.lease(&m).await {
                    tracing::error!(model = %m.id, error = %e, "a pinned model did not load");
                }
            });
        }
    }

    /// Every model that has (or had) a worker and is not simply stopped.
    pub async fn workers(&self) -> Vec<WorkerView> {
        let rows = self.ask(Msg::Rows).await.unwrap_or_default();
        rows.into_iter()
            .map(|(row, live)| {
                let live = live.as_ref();
                let active = live.map(|l| l.active()).unwrap_or(0);
                let n_slots = live.map(|l| l.ready.slots);
                let cap = n_slots.unwrap_or(0) as usize;
                let pid = live.map(|l| l.pid);
                WorkerView {
                    model: row.model.to_string(),
                    state: row.phase,
                    progress: self.progress(&row.model),
                    pid,
                    cores: row.cores,
                    gpus: live.and_then(|l| l.gpus.clone()),
                    memory_bytes: pid.and_then(|p| model_bucket_shared::mem::rss_bytes(Some(p))),
                    budget_bytes: row.budget_bytes,
                    estimate_bytes: row.need_bytes,
                    evictable_bytes: row.held_bytes,
                    evictable_allowed_bytes: row.allowed_bytes,
                    slots: n_slots,
                    slots_busy: active.min(cap),
                    queued: active.saturating_sub(cap),
                    waiting: row.queued,
                    pinned: row.pinned,
                    restarts: row.restarts,
                    evictions: row.evictions,
                    last_exit: row.last_exit,
                    idle_secs: live.filter(|_| active == 0).map(|l| l.last_used().elapsed().as_secs()),
                    error: row.error,
                }
            })
            .collect()
    }
}
