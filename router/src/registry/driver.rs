//! The one task that owns the [`Supervisor`]: it feeds it every fact, in arrival order, and
//! carries out the effects it returns (processes, drains, kills, evictions, what requests
//! see, answers to waiting requests). Nothing else changes a model's state.

use model_bucket_shared::protocol::ToWorker;
use model_bucket_shared::{ModelId, ModelInfo};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::{oneshot, Notify};

use super::live::Live;
use super::{process, Registry, State};
use crate::metrics::ModelLabel;
use crate::supervisor::error::RegistryError;
use crate::supervisor::machine::{Demand, Effect, Gen, Input, Row, Supervisor, View, WaiterId};

/// What reaches the driver.
pub enum Msg {
    /// A fact for the supervisor.
    Fact(Input),
    /// A fact, and a reply once it has been handled (and its effects carried out).
    FactThen(Input, oneshot::Sender<()>),
    /// A request waits for `model`; the reply says whether to take a lease now.
    Demand { model: Box<ModelInfo>, demand: Demand, reply: Reply },
    /// A worker loaded its model.
    Up(Arc<Live>),
    /// Worker `gen` of `model` has loaded this fraction (0–1) of its weights.
    Progress { model: ModelId, gen: Gen, progress: f32 },
    /// Every model's row and its worker if it is up, for `/admin/workers`.
    Rows(oneshot::Sender<Vec<(Row, Option<Arc<Live>>)>>),
    /// The models ready now.
    Ready(oneshot::Sender<Vec<ModelId>>),
    /// Whether any worker process is left.
    AnyProcess(oneshot::Sender<bool>),
}

pub type Reply = oneshot::Sender<Result<(), RegistryError>>;

struct Driver {
    reg: Arc<Registry>,
    sup: Supervisor,
    facts: UnboundedSender<Msg>,
    /// Each waiting request's reply, when it first asked, and for which model.
    waiters: HashMap<WaiterId, (Reply, std::time::Instant, ModelId)>,
    /// The model each known ID was last asked for as, for spawning.
    infos: HashMap<ModelId, ModelInfo>,
    /// The worker of each model that is up, by generation.
    lives: HashMap<ModelId, Arc<Live>>,
    kills: HashMap<(ModelId, Gen), Arc<Notify>>,
    /// The worker each loading model is starting, whose progress is shown.
    loading: HashMap<ModelId, Gen>,
    /// Cores given to workers spawned in the batch being carried out, which the supervisor
    /// learns of only after it.
    batch_cores: Vec<Vec<usize>>,
}

/// Runs the driver for the server's life.
pub(super) async fn run(
    reg: Arc<Registry>,
    sup: Supervisor,
    facts: UnboundedSender<Msg>,
    mut rx: UnboundedReceiver<Msg>,
) {
    let mut d = Driver {
        reg,
        sup,
        facts,
        waiters: HashMap::new(),
        infos: HashMap::new(),
        lives: HashMap::new(),
        kills: HashMap::new(),
        loading: HashMap::new(),
        batch_cores: Vec::new(),
    };
    loop {
        let wake = d.sup.next_deadline().map(tokio::time::Instant::from_std);
        let msg = tokio::select! {
            msg = rx.recv() => match msg {
                Some(msg) => msg,
                None => return,
            },
            () = sleep_until(wake) => Msg::Fact(Input::Tick),
        };
        d.on(msg);
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    fn on(&mut self, msg: Msg) {
        match msg {
            Msg::Fact(input) => {
                if let Input::Leave { waiter } = &input {
                    self.waiters.remove(waiter);
                }
                self.feed(input)
            }
            Msg::FactThen(input, done) => {
                self.feed(input);
                let _ = done.send(());
            }
            Msg::Demand { model, demand, reply } => {
                self.waiters.insert(demand.waiter, (reply, demand.since, demand.model.clone()));
                self.infos.insert(model.id.clone(), *model);
                self.feed(Input::Demand(demand));
            }
            Msg::Up(live) => {
                let (model, gen, memory_bytes) = (live.model.clone(), live.gen, live.ready.memory_bytes);
                // Adapters that came or went while it started: it restarts (drained) for them.
                let cat = self.reg.catalog();
                let now: Option<Vec<&std::path::Path>> = cat
                    .models
                    .iter()
                    .find(|m| m.id == model)
                    .map(|m| m.adapters.iter().map(|a| a.path.as_path()).collect());
                let stale = now.is_some_and(|now| now != live.lora.iter().map(|p| p.as_path()).collect::<Vec<_>>());
                self.lives.insert(model.clone(), live);
                self.feed(Input::Ready { model: model.clone(), gen, memory_bytes });
                if stale {
                    tracing::info!(model = %model, "its LoRA adapters changed while it started: restarting it");
                    self.feed(Input::Restart { model });
                }
            }
            Msg::Progress { model, gen, progress } => {
                if self.loading.get(&model) == Some(&gen) {
                    self.reg.show_progress(&model, Some(progress));
                }
            }
            Msg::Rows(reply) => {
                let rows = self.sup.rows().into_iter().map(|r| {
                    let live = self.live(&r.model, r.gen).cloned();
                    (r, live)
                });
                let _ = reply.send(rows.collect());
            }
            Msg::Ready(reply) => {
                let _ = reply.send(self.sup.ready());
            }
            Msg::AnyProcess(reply) => {
                let _ = reply.send(self.sup.has_processes());
            }
        }
    }

    /// Hands `input` to the supervisor and carries out the effects, feeding back the facts
    /// that carrying them out produces.
    fn feed(&mut self, input: Input) {
        self.batch_cores.clear();
        let mut pending = std::collections::VecDeque::from([input]);
        while let Some(input) = pending.pop_front() {
            if let Input::Exited { model, gen, .. } | Input::StartFailed { model, gen, .. } = &input {
                self.kills.remove(&(model.clone(), *gen));
                if self.lives.get(model).is_some_and(|l| l.gen == *gen) {
                    self.lives.remove(model);
                }
            }
            for effect in self.sup.handle(std::time::Instant::now(), input) {
                if let Some(next) = self.carry_out(effect) {
                    pending.push_back(next);
                }
            }
        }
    }

    /// Carries out `effect`; returns the fact it produced, if any.
    fn carry_out(&mut self, effect: Effect) -> Option<Input> {
        match effect {
            Effect::Spawn { model, gen } => self.spawn(model, gen),
            Effect::Drain { model, gen, grace } => {
                if let Some(live) = self.live(&model, gen) {
                    tracing::info!(model = %model, pid = live.pid, "draining worker");
                    // A request that read it as ready a moment ago leases the next one instead.
                    live.close();
                    live.client.send(ToWorker::Shutdown { grace_ms: grace.as_millis() as u64 });
                }
                None
            }
            Effect::Kill { model, gen, why } => {
                tracing::warn!(model = %model, why, "killing the worker");
                if let Some(kill) = self.kills.get(&(model, gen)) {
                    kill.notify_one();
                }
                None
            }
            Effect::Close { model, gen } => {
                if let Some(live) = self.live(&model, gen) {
                    tracing::info!(model = %model, pid = live.pid, "worker yields its memory: no new requests");
                    live.close();
                }
                None
            }
            Effect::Evict { model, gen, why } => {
                let closed = self.live(&model, gen).is_none_or(|l| l.try_close());
                if !closed {
                    return Some(Input::EvictRefused { model, gen });
                }
                tracing::info!(model = %model, why, "evicting idle worker");
                self.reg.metrics.evictions.get_or_create(&ModelLabel::new(model.as_str())).inc();
                Some(Input::Evicted { model, gen })
            }
            Effect::Publish { model, view } => {
                if view != View::Loading {
                    self.loading.remove(&model);
                    self.reg.show_progress(&model, None);
                }
                let state = match view {
                    View::Unloaded => State::Unloaded,
                    View::Loading => State::Loading,
                    View::Ready(gen) => {
                        self.live(&model, gen).map(|l| State::Ready(l.clone())).unwrap_or(State::Loading)
                    }
                    View::Draining => State::Draining,
                    View::Failed(reason) => State::Failed(reason),
                };
                self.reg.publish(model, state);
                None
            }
            Effect::Admit { waiter } => {
                if let Some((reply, since, model)) = self.waiters.remove(&waiter) {
                    let _ = reply.send(Ok(()));
                    let label = ModelLabel::new(model.as_str());
                    self.reg.metrics.wait.get_or_create(&label).observe(since.elapsed().as_secs_f64());
                }
                None
            }
            Effect::Reopen { model, gen } => {
                if let Some(live) = self.live(&model, gen) {
                    tracing::info!(model = %model, pid = live.pid, "nobody waits for its memory any more: it takes requests again");
                    live.reopen();
                }
                None
            }
            Effect::Prefetch { model } => {
                let path = self.reg.catalog().models.iter().find(|m| m.id == model).map(|m| m.path.clone());
                if let Some(path) = path {
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = model_bucket_shared::page_cache::page_in(&path) {
                            tracing::debug!(path = %path.display(), error = %e, "cannot read ahead");
                        }
                    });
                }
                None
            }
            Effect::Allow { model, gen, bytes, embed_bytes } => {
                if let Some(live) = self.live(&model, gen) {
                    tracing::debug!(model = %model, bytes, "evictable memory allowed");
                    live.client.send(ToWorker::Allow { bytes, embed_bytes });
                }
                None
            }
            Effect::Swapped { model, took } => {
                tracing::info!(model = %model, took_ms = took.as_millis() as u64, "swapped in");
                let label = ModelLabel::new(model.as_str());
                self.reg.metrics.swaps.get_or_create(&label).inc();
                self.reg.metrics.swap_time.get_or_create(&label).observe(took.as_secs_f64());
                None
            }
            Effect::Reject { waiter, error } => {
                if let Some((reply, _, _)) = self.waiters.remove(&waiter) {
                    let _ = reply.send(Err(error));
                }
                None
            }
            Effect::Crashed { model, reason, failed } => {
                if failed {
                    tracing::error!(model = %model, %reason, "worker crashed too often: model failed");
                } else {
                    tracing::error!(model = %model, %reason, "worker crashed: restarting after backoff");
                    self.reg.metrics.restarts.get_or_create(&ModelLabel::new(model.as_str())).inc();
                }
                None
            }
        }
    }

    fn live(&self, model: &ModelId, gen: Gen) -> Option<&Arc<Live>> {
        self.lives.get(model).filter(|l| l.gen == gen)
    }

    /// Starts worker `gen` of `model` with the current config and the model's current file (it
    /// may have been renamed since it was first asked for).
    fn spawn(&mut self, model: ModelId, gen: Gen) -> Option<Input> {
        let current = self.reg.catalog().models.iter().find(|m| m.id == model.as_str()).cloned();
        let Some(info) = current.or_else(|| self.infos.get(&model).cloned()) else {
            let reason = "the model is no longer in the catalog".to_string();
            return Some(Input::StartFailed { model, gen, reason });
        };
        let mut taken = self.sup.cores_taken(&model);
        taken.extend(self.batch_cores.iter().cloned());
        let (spec, cores) = self.reg.spec_for(&info, &taken);
        self.batch_cores.extend(cores.clone());
        let kill = Arc::new(Notify::new());
        self.kills.insert((model.clone(), gen), kill.clone());
        self.loading.insert(model.clone(), gen);
        self.reg.show_progress(&model, Some(0.0));
        let tail = self.reg.new_log(&model);
        tokio::spawn(process::run(self.reg.launch.clone(), model.clone(), gen, spec, self.facts.clone(), kill, tail));
        Some(Input::Placed { model, gen, cores })
    }
}
