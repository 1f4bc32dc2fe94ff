//! The served models: the catalog, and for each model its worker's state. The first request
//! for a model starts its worker; requests that arrive while it loads wait for the same load.
//!
//! States: `unloaded` → `loading` → `ready`; a worker that exits returns its model to
//! `unloaded` (the next request starts a new one); a worker that cannot start leaves its model
//! `failed` with the reason.

use model_bucket_shared::protocol::ReadyInfo;
use model_bucket_shared::{Catalog, Config, ModelConfig, ModelInfo};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;

use crate::http::error::ApiError;
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

pub struct Registry {
    catalog: RwLock<Arc<Catalog>>,
    config: Config,
    defaults: Defaults,
    states: Mutex<HashMap<String, watch::Sender<State>>>,
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
            states: Mutex::new(HashMap::new()),
            created,
        })
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().expect("catalog lock").clone()
    }

    /// The per-model settings the config gives `m`, if any.
    pub fn model_config(&self, m: &ModelInfo) -> ModelConfig {
        let cat = self.catalog();
        self.config
            .models
            .iter()
            .find(|(k, _)| cat.resolve(k).is_some_and(|x| x.id == m.id))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    /// Whether chat requests can be served for `m`.
    pub fn can_chat(&self, m: &ModelInfo) -> bool {
        m.has_chat_template || self.model_config(m).chat_template.is_some()
    }

    pub fn state(&self, id: &str) -> State {
        self.states.lock().expect("states lock").get(id).map(|s| s.borrow().clone()).unwrap_or(State::Unloaded)
    }

    /// The ready worker of `m`, starting it if needed and waiting (bounded) for it to load.
    pub async fn worker(self: &Arc<Self>, m: &ModelInfo) -> Result<Arc<Live>, ApiError> {
        let mut rx = {
            let mut states = self.states.lock().expect("states lock");
            let tx = states.entry(m.id.clone()).or_insert_with(|| watch::channel(State::Unloaded).0);
            let current = tx.borrow().clone();
            match current {
                State::Ready(live) => return Ok(live),
                State::Failed(reason) => {
                    return Err(ApiError::unavailable(format!("model {} failed to start: {reason}", m.id), 30))
                }
                State::Loading => {}
                State::Unloaded => {
                    tx.send_replace(State::Loading);
                    let this = self.clone();
                    let m = m.clone();
                    tokio::spawn(async move { this.load(m).await });
                }
            }
            tx.subscribe()
        };
        let wait = async {
            loop {
                let s = rx.borrow_and_update().clone();
                match s {
                    State::Ready(live) => return Ok(live),
                    State::Failed(reason) => {
                        return Err(ApiError::bad_gateway(format!("model {} failed to start: {reason}", m.id)))
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

    fn set(&self, id: &str, s: State) {
        if let Some(tx) = self.states.lock().expect("states lock").get(id) {
            tx.send_replace(s);
        }
    }

    /// Starts the worker of `m`, publishes it, and watches it until it exits.
    async fn load(self: Arc<Self>, m: ModelInfo) {
        let mc = self.model_config(&m);
        let d = &self.defaults;
        let spec = WorkerSpec {
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
        };
        let mut w = match worker::spawn(&spec).await {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(model = %m.id, error = %e, "worker failed to start");
                self.set(&m.id, State::Failed(e.to_string()));
                return;
            }
        };
        let live = Arc::new(Live { client: w.client.clone(), ready: w.ready.clone(), pid: w.pid });
        self.set(&m.id, State::Ready(live));
        // Worker-level messages (no request ID) are logged; the exit returns the model to unloaded.
        loop {
            tokio::select! {
                Some(msg) = w.unsolicited.recv() => tracing::warn!(model = %m.id, ?msg, "worker message"),
                status = w.child.wait() => {
                    let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                    tracing::error!(model = %m.id, pid = w.pid, %status, tail = %w.stderr_tail.last(3), "worker exited");
                    self.set(&m.id, State::Unloaded);
                    return;
                }
            }
        }
    }

    /// Asks every worker to finish its requests within `grace` and exit.
    pub fn shutdown_all(&self, grace: Duration) {
        for tx in self.states.lock().expect("states lock").values() {
            if let State::Ready(live) = &*tx.borrow() {
                live.client
                    .send(model_bucket_shared::protocol::ToWorker::Shutdown { grace_ms: grace.as_millis() as u64 });
            }
        }
    }
}
