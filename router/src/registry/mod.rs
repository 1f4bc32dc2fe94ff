//! The served models: the catalog, and for each model its worker. The first request for a
//! model starts its worker (after making room under the RAM budget); requests that arrive while
//! it loads wait for the same load.
//!
//! Every decision is made by a pure function in [`crate::supervisor`]: when to spawn, drain,
//! restart or fail ([`Lifecycle`]), which idle workers to evict ([`budget::plan`]), which cores
//! a worker gets ([`cores::assign`]). This module holds the state those functions read and
//! carries out what they return. All per-model state sits behind one mutex that is never held
//! across an `.await`.

mod admit;
mod housekeeping;
mod ops;
mod supervise;

use model_bucket_shared::protocol::{ReadyInfo, ToWorker};
use model_bucket_shared::{Catalog, Config, ModelConfig, ModelInfo};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

use crate::http::error::ApiError;
use crate::metrics::Metrics;
use crate::supervisor::budget;
use crate::supervisor::lifecycle::{Effect, Event, Lifecycle, Phase, Policy};
use crate::worker::client::WorkerClient;
use crate::worker::WorkerSpec;

pub use ops::SETTLE;

/// Server-wide worker defaults (flags and environment).
#[derive(Debug, Clone)]
pub struct Defaults {
    pub worker_bin: PathBuf,
    pub parallel: u32,
    pub ctx: Option<u32>,
    pub threads: Option<u32>,
    /// Longest a worker may take to load.
    pub load_timeout: Duration,
    /// Longest a request waits for its model to load before a 503.
    pub load_wait: Duration,
    /// Requests that may wait for a slot of one worker.
    pub max_queue: u32,
    /// Bytes of each worker's host-memory prompt cache; `None`: its slots' KV size.
    pub prompt_cache: Option<u64>,
    /// Folder and byte limit of the prompt prefixes kept on disk; `None`: not kept.
    pub kv_cache: Option<(PathBuf, u64)>,
}

/// Memory and time limits of the whole server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The most memory all workers together may hold, in bytes.
    pub ram_budget: u64,
    /// Unload a worker idle this long, unless its model's config says otherwise; `None`: never.
    pub idle_ttl: Option<Duration>,
    /// Longest a request waits for busy workers to free memory before a 503.
    pub evict_wait: Duration,
    /// Time a drained worker gets to finish its requests (unload, restart, shutdown).
    pub drain_grace: Duration,
    /// Restart backoff and the crash loop that fails a model.
    pub policy: Policy,
}

/// How `m`'s worker is started: its config settings first, then the defaults.
pub fn worker_spec(m: &ModelInfo, mc: &ModelConfig, d: &Defaults) -> WorkerSpec {
    WorkerSpec {
        model_id: m.id.clone(),
        model_path: m.path.clone(),
        worker_bin: d.worker_bin.clone(),
        ctx: mc.ctx.or(d.ctx),
        threads: mc.threads.or(d.threads),
        parallel: mc.parallel.unwrap_or(d.parallel),
        cpus: mc.cpus.clone(),
        gpus: mc.gpus.clone(),
        gpu_layers: mc.gpu_layers.unwrap_or(0),
        chat_template: mc.chat_template.clone(),
        load_timeout: d.load_timeout,
        max_queue: d.max_queue,
        // By default as much again as the slots' own KV cache.
        prompt_cache: mc.prompt_cache_mib.map(|mib| mib << 20).or(d.prompt_cache).unwrap_or_else(|| {
            let ctx = admit::ctx_slot(m, mc.ctx.or(d.ctx));
            budget::kv_bytes(m.size_bytes, m.kv_bytes_per_token, ctx * mc.parallel.unwrap_or(d.parallel) as u64)
        }),
        model_sha256: m.sha256.clone(),
        kv_cache: d.kv_cache.clone(),
    }
}

/// A model's worker state, as `/v1/models` shows it.
#[derive(Clone)]
pub enum State {
    Unloaded,
    Loading,
    Ready(Arc<Live>),
    /// Finishing its requests before it exits; new requests wait for what comes next.
    Draining,
    Failed(String),
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Unloaded => "unloaded",
            State::Loading => "loading",
            State::Ready(_) => "ready",
            State::Draining => "draining",
            State::Failed(_) => "failed",
        }
    }
}

/// A running worker process.
pub struct Live {
    pub client: WorkerClient,
    pub ready: ReadyInfo,
    pub pid: u32,
    pub gpus: Option<Vec<u32>>,
    /// Requests holding a [`Lease`] on it (running or queued in the worker).
    pub active: AtomicUsize,
    /// When the last lease was released, in ms since [`epoch`].
    last_used_ms: AtomicU64,
}

impl Live {
    /// When it last finished serving (or started, if it never has).
    pub fn last_used(&self) -> Instant {
        epoch() + Duration::from_millis(self.last_used_ms.load(Ordering::Relaxed))
    }

    fn touch(&self) {
        self.last_used_ms.store(epoch().elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// The time every `last_used` is counted from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A request's hold on a worker: while any lease is alive the worker counts as busy and is
/// never evicted or unloaded for idleness.
pub struct Lease {
    pub live: Arc<Live>,
    registry: Arc<Registry>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.live.touch();
        if self.live.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.registry.freed();
        }
    }
}

/// One model's supervision state.
struct Slot {
    /// What requests see; derived from `life` by [`Slot::publish`].
    view: watch::Sender<State>,
    life: Lifecycle,
    /// The current worker process, from ready until it exits (also while draining).
    live: Option<Arc<Live>>,
    /// The model, for restarts.
    model: Option<ModelInfo>,
    /// What it counts against the budget, in bytes: the estimate while loading, then the larger
    /// of the estimate and the measured resident memory.
    bytes: u64,
    estimate: u64,
    /// The cores the loading or running worker was given.
    cores: Option<Vec<usize>>,
    evictions: u64,
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            view: watch::channel(State::Unloaded).0,
            life: Lifecycle::default(),
            live: None,
            model: None,
            bytes: 0,
            estimate: 0,
            cores: None,
            evictions: 0,
        }
    }
}

impl Slot {
    /// Sets the view from the phase. A stopped or failed model holds no memory.
    fn publish(&mut self) {
        let view = match &self.life.phase {
            Phase::Stopped => State::Unloaded,
            Phase::Starting | Phase::Backoff => State::Loading,
            Phase::Ready => match &self.live {
                Some(l) => State::Ready(l.clone()),
                None => State::Loading,
            },
            Phase::Draining { .. } => State::Draining,
            Phase::Failed(reason) => State::Failed(reason.clone()),
        };
        if matches!(self.life.phase, Phase::Stopped | Phase::Failed(_)) {
            self.bytes = 0;
            self.cores = None;
        }
        self.view.send_replace(view);
    }
}

pub struct Registry {
    catalog: RwLock<Arc<Catalog>>,
    config: RwLock<Arc<Config>>,
    /// Where the config came from, for reloads; `None`: no config file.
    config_path: Option<PathBuf>,
    dir: PathBuf,
    defaults: Defaults,
    pub limits: Limits,
    slots: Mutex<HashMap<String, Slot>>,
    /// One admission (budget check, eviction, spawn) at a time.
    admission: tokio::sync::Mutex<()>,
    /// One rescan (watcher, SIGHUP, `/admin/rescan`, pull) at a time, installed in the order
    /// they ran: a scan that started earlier never replaces what a later one found.
    rescans: tokio::sync::Mutex<()>,
    /// Bumped whenever memory may have been freed: a worker went idle or exited.
    freed_tx: watch::Sender<u64>,
    /// Set at shutdown: no new workers.
    stopping: AtomicBool,
    /// The cores workers may be pinned to.
    all_cores: Vec<usize>,
    pub metrics: Metrics,
    /// The pulls running now.
    pub pulls: Arc<crate::pull::ActivePulls>,
    /// Unix time the catalog was scanned, for the `created` field.
    pub created: u64,
}

impl Registry {
    pub fn new(
        catalog: Catalog,
        config: Config,
        config_path: Option<PathBuf>,
        defaults: Defaults,
        limits: Limits,
    ) -> Arc<Registry> {
        let created =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let metrics = Metrics::new();
        metrics.budget_bytes.set(limits.ram_budget as i64);
        Arc::new(Registry {
            dir: catalog.dir.clone(),
            catalog: RwLock::new(Arc::new(catalog)),
            config: RwLock::new(Arc::new(config)),
            config_path,
            defaults,
            limits,
            slots: Mutex::new(HashMap::new()),
            admission: tokio::sync::Mutex::new(()),
            rescans: tokio::sync::Mutex::new(()),
            freed_tx: watch::channel(0).0,
            stopping: AtomicBool::new(false),
            all_cores: crate::supervisor::cores::allowed(),
            metrics,
            pulls: Arc::default(),
            created,
        })
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().expect("catalog lock").clone()
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.read().expect("config lock").clone()
    }

    /// The per-model settings the config gives `m`, if any.
    pub fn model_config(&self, m: &ModelInfo) -> ModelConfig {
        self.catalog().model_config(&self.config(), &m.id)
    }

    /// How many requests `m`'s worker holds at once: its slots plus its queue.
    pub fn capacity(&self, m: &ModelInfo) -> usize {
        let spec = worker_spec(m, &self.model_config(m), &self.defaults);
        spec.parallel as usize + spec.max_queue as usize
    }

    /// Whether chat requests can be served for `m`.
    pub fn can_chat(&self, m: &ModelInfo) -> bool {
        m.has_chat_template || self.model_config(m).chat_template.is_some()
    }

    pub fn state(&self, id: &str) -> State {
        self.slots.lock().expect("slots lock").get(id).map(|s| s.view.borrow().clone()).unwrap_or(State::Unloaded)
    }

    /// Wakes everything waiting for memory to be freed.
    fn freed(&self) {
        self.freed_tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A lease on `m`'s ready worker: starts it when needed (making room under the budget) and
    /// waits, bounded, for it to load.
    pub async fn lease(self: &Arc<Self>, m: &ModelInfo) -> Result<Lease, ApiError> {
        let deadline = tokio::time::Instant::now() + self.defaults.load_wait;
        let mut waited = false;
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return Err(ApiError::unavailable("the server is shutting down", 5));
            }
            let mut rx = {
                let mut slots = self.slots.lock().expect("slots lock");
                let slot = slots.entry(m.id.clone()).or_default();
                let view = slot.view.borrow().clone();
                match view {
                    State::Ready(live) => {
                        live.active.fetch_add(1, Ordering::AcqRel);
                        return Ok(Lease { live, registry: self.clone() });
                    }
                    State::Failed(reason) if waited => {
                        return Err(ApiError::bad_gateway(format!("model {} failed: {reason}", m.id)))
                    }
                    State::Failed(reason) => {
                        return Err(ApiError::unavailable(format!("model {} failed: {reason}", m.id), 30))
                    }
                    State::Unloaded if slot.life.phase == Phase::Stopped => None,
                    _ => Some(slot.view.subscribe()),
                }
            };
            match rx.as_mut() {
                None => self.admit(m, deadline).await?,
                Some(rx) => {
                    waited = true;
                    if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                        return Err(ApiError::unavailable(
                            format!("model {} is still loading; retry shortly", m.id),
                            5,
                        ));
                    }
                }
            }
        }
    }

    /// A request found `live`'s connection gone: stop handing it out, so the next caller waits
    /// for the restart the supervisor is about to decide on.
    pub fn mark_gone(&self, id: &str, live: &Arc<Live>) {
        if let Some(slot) = self.slots.lock().expect("slots lock").get(id) {
            if matches!(&*slot.view.borrow(), State::Ready(l) if Arc::ptr_eq(l, live)) {
                slot.view.send_replace(State::Loading);
            }
        }
    }

    /// Feeds `ev` to `id`'s lifecycle, publishes the result and carries out a drain; returns the
    /// effect for the caller to carry out otherwise.
    fn step(&self, id: &str, ev: Event) -> Option<Effect> {
        let mut slots = self.slots.lock().expect("slots lock");
        self.step_locked(slots.entry(id.to_string()).or_default(), ev)
    }

    fn step_locked(&self, slot: &mut Slot, ev: Event) -> Option<Effect> {
        let effect = slot.life.step(ev, Instant::now(), &self.limits.policy);
        let held = slot.bytes;
        slot.publish();
        if held > 0 && slot.bytes == 0 {
            // Its memory is free: admissions waiting for room can go on.
            self.freed();
        }
        if effect == Some(Effect::Drain) {
            if let Some(live) = &slot.live {
                live.client.send(ToWorker::Shutdown { grace_ms: self.limits.drain_grace.as_millis() as u64 });
            }
        }
        effect
    }

    /// Stops `id`'s worker if it is still idle: checked under the same lock a lease is taken
    /// under, so a worker that just got a request is never evicted. Returns whether it stopped.
    fn evict(&self, id: &str, why: &str) -> bool {
        let mut slots = self.slots.lock().expect("slots lock");
        let Some(slot) = slots.get_mut(id) else { return false };
        if slot.live.as_ref().is_some_and(|l| l.active.load(Ordering::Acquire) > 0) {
            return false;
        }
        tracing::info!(model = %id, why, "evicting idle worker");
        slot.evictions += 1;
        self.metrics.evictions.get_or_create(&crate::metrics::ModelLabel::new(id)).inc();
        self.step_locked(slot, Event::Stop);
        true
    }

    /// Waits until no worker process is left (each has exited and been reaped).
    pub async fn workers_gone(&self) {
        loop {
            if self.slots.lock().expect("slots lock").values().all(|s| s.live.is_none()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Asks every worker to finish its requests within the drain grace and exit; no new ones start.
    pub fn shutdown_all(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let ids: Vec<String> = self.slots.lock().expect("slots lock").keys().cloned().collect();
        for id in ids {
            self.step(&id, Event::Stop);
        }
    }
}
