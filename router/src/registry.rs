//! The served models: the catalog, and for each model its worker's state. The first request
//! for a model starts its worker; requests that arrive while it loads wait for the same load.
//!
//! What happens when is decided by [`Lifecycle`]: a worker that cannot start leaves its model
//! `failed` with the reason; one that crashes is restarted after a backoff (its model shows
//! `loading` meanwhile) until it crashes too often, which marks the model `failed`. Failed
//! models answer 503 until the server restarts.

use model_bucket_shared::protocol::ReadyInfo;
use model_bucket_shared::{Catalog, Config, ModelConfig, ModelInfo};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;

use crate::http::error::ApiError;
use crate::supervisor::lifecycle::{Effect, Event, Lifecycle, Policy};
use crate::worker::client::WorkerClient;
use crate::worker::{self, WorkerSpec};

/// Server-wide worker defaults (flags and environment).
#[derive(Debug, Clone)]
pub struct Defaults {
    pub worker_bin: std::path::PathBuf,
    pub parallel: u32,
    pub ctx: Option<u32>,
    pub threads: Option<u32>,
    /// Longest a worker may take to load.
    pub load_timeout: Duration,
    /// Longest a request waits for its model to load before a 503.
    pub load_wait: Duration,
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
    }
}

/// A model's worker state, as `/v1/models` shows it.
#[derive(Clone)]
pub enum State {
    Unloaded,
    Loading,
    Ready(Arc<Live>),
    Failed(String),
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Unloaded => "unloaded",
            State::Loading => "loading",
            State::Ready(_) => "ready",
            State::Failed(_) => "failed",
        }
    }
}

/// A loaded worker.
pub struct Live {
    pub client: WorkerClient,
    pub ready: ReadyInfo,
    pub pid: u32,
}

/// One model's supervision: what clients see, and the lifecycle that decides.
struct Slot {
    view: watch::Sender<State>,
    life: Lifecycle,
}

impl Default for Slot {
    fn default() -> Self {
        Slot { view: watch::channel(State::Unloaded).0, life: Lifecycle::default() }
    }
}

pub struct Registry {
    catalog: RwLock<Arc<Catalog>>,
    config: Config,
    defaults: Defaults,
    policy: Policy,
    states: Mutex<HashMap<String, Slot>>,
    /// Set at shutdown: workers that exit now were asked to.
    stopping: std::sync::atomic::AtomicBool,
    /// Unix time the catalog was scanned, for the `created` field.
    pub created: u64,
}

impl Registry {
    pub fn new(catalog: Catalog, config: Config, defaults: Defaults) -> Arc<Registry> {
        let created =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Arc::new(Registry {
            catalog: RwLock::new(Arc::new(catalog)),
            config,
            defaults,
            policy: Policy::default(),
            states: Mutex::new(HashMap::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            created,
        })
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().expect("catalog lock").clone()
    }

    /// The per-model settings the config gives `m`, if any.
    pub fn model_config(&self, m: &ModelInfo) -> ModelConfig {
        self.catalog().model_config(&self.config, &m.id)
    }

    /// Whether chat requests can be served for `m`.
    pub fn can_chat(&self, m: &ModelInfo) -> bool {
        m.has_chat_template || self.model_config(m).chat_template.is_some()
    }

    pub fn state(&self, id: &str) -> State {
        self.states.lock().expect("states lock").get(id).map(|s| s.view.borrow().clone()).unwrap_or(State::Unloaded)
    }

    /// The ready worker of `m`, starting it if needed and waiting (bounded) for it to load.
    pub async fn worker(self: &Arc<Self>, m: &ModelInfo) -> Result<Arc<Live>, ApiError> {
        let mut rx = {
            let mut states = self.states.lock().expect("states lock");
            let slot = states.entry(m.id.clone()).or_default();
            let current = slot.view.borrow().clone();
            match current {
                State::Ready(live) => return Ok(live),
                State::Failed(reason) => {
                    return Err(ApiError::unavailable(format!("model {} failed: {reason}", m.id), 30))
                }
                State::Loading | State::Unloaded => {}
            }
            if slot.life.step(Event::Demand, std::time::Instant::now(), &self.policy) == Some(Effect::Spawn) {
                slot.view.send_replace(State::Loading);
                let this = self.clone();
                let m = m.clone();
                tokio::spawn(async move { this.supervise(m).await });
            }
            slot.view.subscribe()
        };
        let wait = async {
            loop {
                let s = rx.borrow_and_update().clone();
                match s {
                    State::Ready(live) => return Ok(live),
                    State::Failed(reason) => {
                        return Err(ApiError::bad_gateway(format!("model {} failed: {reason}", m.id)))
                    }
                    State::Loading | State::Unloaded => {}
                }
                if rx.changed().await.is_err() {
                    return Err(ApiError::internal("model state lost"));
                }
            }
        };
        match tokio::time::timeout(self.defaults.load_wait, wait).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::unavailable(format!("model {} is still loading; retry shortly", m.id), 5)),
        }
    }

    /// A request found `live`'s connection gone: stop handing it out, so the next caller waits
    /// for the restart the supervisor is about to decide on.
    pub fn mark_gone(&self, id: &str, live: &Arc<Live>) {
        if let Some(slot) = self.states.lock().expect("states lock").get(id) {
            if matches!(&*slot.view.borrow(), State::Ready(l) if Arc::ptr_eq(l, live)) {
                slot.view.send_replace(State::Loading);
            }
        }
    }

    /// Feeds `ev` to `id`'s lifecycle and publishes `view` (when given) under the same lock.
    fn step(&self, id: &str, ev: Event, view: Option<State>) -> Option<Effect> {
        let mut states = self.states.lock().expect("states lock");
        let slot = states.entry(id.to_string()).or_default();
        let effect = slot.life.step(ev, std::time::Instant::now(), &self.policy);
        if let crate::supervisor::lifecycle::Phase::Failed(reason) = &slot.life.phase {
            slot.view.send_replace(State::Failed(reason.clone()));
        } else if let Some(v) = view {
            slot.view.send_replace(v);
        }
        effect
    }

    /// Owns `m`'s worker: starts it, publishes it, watches it, and restarts it after a crash for
    /// as long as the lifecycle says so.
    async fn supervise(self: Arc<Self>, m: ModelInfo) {
        let spec = worker_spec(&m, &self.model_config(&m), &self.defaults);
        loop {
            let mut w = match worker::spawn(&spec).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(model = %m.id, error = %e, "worker failed to start");
                    self.step(&m.id, Event::StartFailed(e.to_string()), None);
                    return;
                }
            };
            let live = Arc::new(Live { client: w.client.clone(), ready: w.ready.clone(), pid: w.pid });
            self.step(&m.id, Event::Ready, Some(State::Ready(live)));
            let status = loop {
                tokio::select! {
                    Some(msg) = w.unsolicited.recv() => tracing::warn!(model = %m.id, ?msg, "worker message"),
                    status = w.child.wait() => break status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                }
            };
            if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                tracing::info!(model = %m.id, pid = w.pid, %status, "worker stopped");
                self.step(&m.id, Event::Stopped, Some(State::Unloaded));
                return;
            }
            // Let the log follower catch the last lines before they go into the reason.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let reason = format!("worker exited ({status}); last log: {}", w.stderr_tail.last(3));
            tracing::error!(model = %m.id, pid = w.pid, %reason, "worker crashed");
            match self.step(&m.id, Event::Crashed(reason), Some(State::Loading)) {
                Some(Effect::RetryAfter(delay)) => {
                    tracing::info!(model = %m.id, delay_ms = delay.as_millis() as u64, "restarting after backoff");
                    tokio::time::sleep(delay).await;
                    if self.step(&m.id, Event::RetryDue, None) != Some(Effect::Spawn) {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    /// Asks every worker to finish its requests within `grace` and exit.
    pub fn shutdown_all(&self, grace: Duration) {
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        for slot in self.states.lock().expect("states lock").values() {
            if let State::Ready(live) = &*slot.view.borrow() {
                live.client
                    .send(model_bucket_shared::protocol::ToWorker::Shutdown { grace_ms: grace.as_millis() as u64 });
            }
        }
    }
}
