//! The served models: the catalog, and for each model its worker. The first request for a
//! model starts its worker (after making room under the RAM budget); requests that arrive while
//! it loads wait for the same load.
//!
//! Every decision is made by the [`Supervisor`], a pure state machine owned by one driver task
//! ([`driver`]): requests, workers, timers and operators send it facts and it answers with
//! commands. Requests keep a fast path that asks nobody: a model's published state is read
//! without a lock, and a lease on a ready worker is one atomic operation ([`live`]).

mod driver;
mod housekeeping;
mod live;
mod ops;
mod process;
mod spec;

use arc_swap::ArcSwap;
use model_bucket_shared::{Catalog, Config, ModelConfig, ModelId, ModelInfo};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::Metrics;
use crate::supervisor::lifecycle::Policy;
use crate::supervisor::machine::{Demand, Input, Settings, Supervisor, WaiterId};
use crate::worker::logs::LogTail;
use driver::Msg;

pub use crate::supervisor::error::RegistryError;
pub use live::{Lease, Live};
pub use ops::{RescanReport, WorkerView, SETTLE};
pub use spec::{ctx_slot, embedding_context, estimate, worker_spec};

/// Server-wide worker defaults (flags and environment).
#[derive(Debug, Clone)]
pub struct Defaults {
    pub worker_bin: PathBuf,
    pub parallel: u32,
    pub ctx: Option<u32>,
    pub threads: Option<u32>,
    /// Longest a worker may take to load.
    pub load_timeout: Duration,
    /// Longest a request waits for a load in progress before a 503.
    pub load_wait: Duration,
    /// Requests that may wait for a slot of one worker.
    pub max_queue: u32,
    /// Helper time one request may use on its worker (see the worker's `--max-sampling-ms`).
    pub max_sampling: Duration,
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
    /// Longest a request waits for its model to get memory and start before a 503.
    pub queue_timeout: Duration,
    /// Which policy decides whose turn it is to get memory.
    pub sched: crate::supervisor::turn::Sched,
    /// How long a model swapped in keeps its memory while others wait (see [`crate::supervisor::turn`]).
    pub quantum: Duration,
    /// Time a drained worker gets to finish its requests (unload, restart, shutdown).
    pub drain_grace: Duration,
    /// Restart backoff and the crash loop that fails a model.
    pub policy: Policy,
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

/// How a request asks for a worker.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask {
    /// Its class when models wait for memory (a task's priority); `None`: its model's.
    pub class: Option<model_bucket_shared::Priority>,
    /// It has somewhere else that serves now: refuse it at once rather than make it wait.
    pub pass: bool,
}

/// A request waiting in the supervisor: if it goes away before its answer (the client left),
/// the supervisor forgets it at once, so that it never loads a model for nobody.
struct Waiting<'a> {
    reg: &'a Registry,
    waiter: WaiterId,
    answered: bool,
}

impl Waiting<'_> {
    fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.reg.tell(Input::Leave { waiter: self.waiter });
        }
    }
}

/// Time beyond the drain grace a draining worker gets before it is killed.
const DRAIN_MARGIN: Duration = Duration::from_secs(3);

pub struct Registry {
    catalog: RwLock<Arc<Catalog>>,
    config: RwLock<Arc<Config>>,
    /// Where the config came from, for reloads; `None`: no config file.
    config_path: Option<PathBuf>,
    dir: PathBuf,
    defaults: Defaults,
    pub limits: Limits,
    /// What requests see of each model, as the supervisor last published it.
    views: ArcSwap<HashMap<ModelId, Arc<State>>>,
    /// Bumped after every publish, for those who wait for a state.
    changes: watch::Sender<u64>,
    /// The supervisor's inbox.
    facts: mpsc::UnboundedSender<Msg>,
    /// One rescan (watcher, SIGHUP, `/admin/rescan`, pull) at a time, installed in the order
    /// they ran: a scan that started earlier never replaces what a later one found.
    rescans: tokio::sync::Mutex<()>,
    /// Set at shutdown: requests are refused without asking the supervisor.
    stopping: AtomicBool,
    /// The last waiting request's number.
    waiters: AtomicU64,
    /// The cores workers may be pinned to.
    all_cores: Vec<usize>,
    /// Starts workers: processes, or in-memory ones in the router's own tests.
    launch: crate::worker::Launch,
    /// The stderr of each model's latest worker (kept after it exits).
    logs: std::sync::Mutex<HashMap<ModelId, LogTail>>,
    /// How far each loading model's worker has got, 0–1.
    progress: std::sync::Mutex<HashMap<ModelId, f32>>,
    /// Clients' wishes for models' idle times ([`Registry::keep_alive`]), as last told.
    keep_alive: std::sync::Mutex<HashMap<ModelId, Duration>>,
    pub metrics: Metrics,
    /// The pulls running now.
    pub pulls: Arc<crate::pull::ActivePulls>,
    /// Unix time the catalog was scanned, for the `created` field.
    pub created: u64,
}

impl Registry {
    /// The registry and its supervisor's driver task (on the current Tokio runtime).
    pub fn new(
        catalog: Catalog,
        config: Config,
        config_path: Option<PathBuf>,
        defaults: Defaults,
        limits: Limits,
    ) -> Arc<Registry> {
        Registry::with_launch(catalog, config, config_path, defaults, limits, crate::worker::processes())
    }

    /// [`Registry::new`] with workers started by `launch`.
    pub fn with_launch(
        catalog: Catalog,
        config: Config,
        config_path: Option<PathBuf>,
        defaults: Defaults,
        limits: Limits,
        launch: crate::worker::Launch,
    ) -> Arc<Registry> {
        let created =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let metrics = Metrics::new();
        metrics.budget_bytes.set(limits.ram_budget as i64);
        let settings = Settings {
            budget: limits.ram_budget,
            policy: limits.policy.clone(),
            drain_grace: limits.drain_grace,
            kill_margin: DRAIN_MARGIN,
            sched: limits.sched,
            quantum: limits.quantum,
            max_turn: limits.queue_timeout / 4,
            load_wait: defaults.load_wait,
            idle_ttl: limits.idle_ttl,
        };
        let (facts, rx) = mpsc::unbounded_channel();
        let reg = Arc::new(Registry {
            dir: catalog.dir.clone(),
            catalog: RwLock::new(Arc::new(catalog)),
            config: RwLock::new(Arc::new(config)),
            config_path,
            defaults,
            limits,
            views: ArcSwap::default(),
            changes: watch::channel(0).0,
            facts: facts.clone(),
            rescans: tokio::sync::Mutex::new(()),
            stopping: AtomicBool::new(false),
            waiters: AtomicU64::new(0),
            all_cores: crate::supervisor::cores::allowed(),
            launch,
            logs: Default::default(),
            progress: Default::default(),
            keep_alive: Default::default(),
            metrics,
            pulls: Arc::default(),
            created,
        });
        tokio::spawn(driver::run(reg.clone(), Supervisor::new(settings), facts, rx));
        reg
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
    /// A ready worker says so itself (it rendered its template at load); before that, the
    /// file's header and the config decide.
    /// A base plus an adapter can when its base can.
    pub fn can_chat(&self, m: &ModelInfo) -> bool {
        if m.lora.is_some() {
            let cat = self.catalog();
            return cat.worker_of(m).is_some_and(|b| self.can_chat(b));
        }
        match self.state(&m.id) {
            State::Ready(live) => live.ready.has_chat_template,
            _ => m.has_chat_template || self.model_config(m).chat_template.is_some(),
        }
    }

    /// What requests see of model `id` now.
    pub fn state(&self, id: &str) -> State {
        self.views.load().get(id).map(|s| (**s).clone()).unwrap_or(State::Unloaded)
    }

    /// Shows `state` of `model` to requests (the driver's publish).
    fn publish(&self, model: ModelId, state: State) {
        let state = Arc::new(state);
        self.views.rcu(|views| {
            let mut next = HashMap::clone(views);
            next.insert(model.clone(), state.clone());
            next
        });
        self.changed();
    }

    /// Tells those who watch [`Registry::changes`] that something changed.
    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Bumped whenever a model's state or loading progress changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The log of `id`'s latest worker, running or not; `None` when none has started.
    pub fn log(&self, id: &str) -> Option<LogTail> {
        self.logs.lock().expect("logs lock").get(id).cloned()
    }

    /// A fresh log for a worker of `model` about to start, replacing its predecessor's.
    fn new_log(&self, model: &ModelId) -> LogTail {
        let tail = LogTail::default();
        self.logs.lock().expect("logs lock").insert(model.clone(), tail.clone());
        tail
    }

    /// How far `id`'s worker has got loading (0–1), while it loads.
    pub fn progress(&self, id: &str) -> Option<f32> {
        self.progress.lock().expect("progress lock").get(id).copied()
    }

    /// Shows (or, `None`, clears) `model`'s loading progress; those who watch changes hear of it.
    fn show_progress(&self, model: &ModelId, progress: Option<f32>) {
        let mut all = self.progress.lock().expect("progress lock");
        let changed = match progress {
            Some(p) => all.insert(model.clone(), p) != Some(p),
            None => all.remove(model).is_some(),
        };
        drop(all);
        if changed {
            self.changed();
        }
    }

    /// Tells the supervisor `input`.
    fn tell(&self, input: Input) {
        let _ = self.facts.send(Msg::Fact(input));
    }

    /// Tells the supervisor `input` and waits until it has been handled.
    async fn tell_and_wait(&self, input: Input) {
        let (done, handled) = oneshot::channel();
        if self.facts.send(Msg::FactThen(input, done)).is_ok() {
            let _ = handled.await;
        }
    }

    /// Asks the driver something: `make` builds the message around the reply channel.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.facts.send(make(tx)).ok()?;
        rx.await.ok()
    }

    /// A lease on `m`'s ready worker: starts it when needed (in its turn, see
    /// [`crate::supervisor::turn`]) and waits, bounded by `--queue-timeout`, for it.
    pub async fn lease(&self, m: &ModelInfo) -> Result<Lease, RegistryError> {
        self.lease_as(m, Ask::default()).await
    }

    /// [`Registry::lease`] for a request that asks as `ask` says.
    pub async fn lease_as(&self, m: &ModelInfo, ask: Ask) -> Result<Lease, RegistryError> {
        let since = std::time::Instant::now();
        let deadline = since + self.limits.queue_timeout;
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return Err(RegistryError::ShuttingDown);
            }
            match self.state(&m.id) {
                State::Ready(live) => {
                    if let Some(lease) = live.try_lease() {
                        return Ok(lease);
                    }
                }
                State::Failed(reason) => {
                    return Err(RegistryError::Failed { model: m.id.as_str().into(), reason, while_waiting: false })
                }
                _ => {}
            }
            let mc = self.model_config(m);
            let spec = worker_spec(m, &mc, &self.defaults);
            let (reply, answer) = oneshot::channel();
            let demand = Demand {
                waiter: self.waiters.fetch_add(1, Ordering::Relaxed) + 1,
                model: m.id.clone(),
                need: estimate(m, &spec),
                spare: spec.prompt_cache.saturating_add(embedding_context(m, &spec)),
                embed: embedding_context(m, &spec),
                ttl: mc.ttl_secs.map(Duration::from_secs),
                deadline,
                since,
                class: ask.class.or(mc.priority).unwrap_or_default(),
                pinned: mc.resident.unwrap_or(false),
                room: spec.parallel as usize + spec.max_queue as usize,
                pass: ask.pass,
            };
            let waiting = Waiting { reg: self, waiter: demand.waiter, answered: false };
            if self.facts.send(Msg::Demand { model: Box::new(m.clone()), demand, reply }).is_err() {
                return Err(RegistryError::ShuttingDown);
            }
            let answer = answer.await;
            waiting.answered();
            answer.unwrap_or(Err(RegistryError::ShuttingDown))?;
        }
    }

    /// A request found `live`'s connection gone: the supervisor stops handing it out (the next
    /// caller waits for the restart) and ends the process. Returns once requests no longer see
    /// it as ready.
    pub async fn mark_gone(&self, live: &Live) {
        self.tell_and_wait(Input::ConnectionLost { model: live.model.clone(), gen: live.gen }).await;
    }

    /// Waits until no worker process is left (each has exited and been reaped).
    pub async fn workers_gone(&self) {
        while self.ask(Msg::AnyProcess).await.unwrap_or(false) {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Asks every worker to finish its requests within the drain grace and exit; no new ones start.
    pub fn shutdown_all(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Change watchers (event streams) learn of it and end.
        self.changed();
        self.tell(Input::Shutdown);
    }

    /// Whether the server is stopping.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}
