//! Every model's worker state and the RAM budget in one value with one entry point:
//! [`Supervisor::handle`] takes a fact (a request's demand, a worker ready or gone, a lease
//! released, a tick, an operator's command) at a time and returns the commands that follow
//! from it. It starts no process and reads no clock: the registry's driver task carries out the
//! [`Effect`]s and feeds back what happened, so every decision (and every race between facts)
//! is replayed in tests as a list of inputs.
//!
//! Invariants kept by `handle`:
//! - a model has at most one process; every process-related fact names the process
//!   generation it is about, and a fact about an older generation changes nothing;
//! - the bytes reserved for models never exceed the budget because of an admission: a model is
//!   only spawned when [`budget::plan`] says it fits (measured growth can exceed it, and the
//!   tick then evicts idle workers);
//! - a worker some request holds is never evicted: eviction is an [`Effect::Evict`] that the
//!   driver carries out only if the worker's lease count is zero, atomically with refusing new
//!   leases, and answers [`Input::EvictRefused`] otherwise;
//! - every waiting request gets exactly one answer, [`Effect::Admit`] or [`Effect::Reject`],
//!   by its deadline at the latest, unless it left first ([`Input::Leave`]);
//! - whose turn it is to get memory is decided by [`super::turn::next`] alone.

mod admission;
#[cfg(test)]
mod tests;

use model_bucket_shared::{ModelId, Priority};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::budget::{self, Plan, Resident};
use super::error::RegistryError;
use super::lifecycle::{self, Lifecycle, Phase, Policy};
use super::turn::Sched;

/// How long requests admitted to a ready worker have to take their leases before it may be
/// evicted under them.
const ADMIT_GRACE: Duration = Duration::from_secs(1);

/// How long a worker asked to shrink its evictable memory has to do it before it counts as
/// unable to (then models may be evicted to make room instead).
const TRIM_WAIT: Duration = Duration::from_secs(2);

/// A model swapped in keeps its memory for at least this many times what the swap took.
const TURN_PER_SWAP: u32 = 2;

/// A worker process's number, unique over the server's life.
pub type Gen = u64;
/// A waiting request's number, chosen by the driver.
pub type WaiterId = u64;

/// Limits the supervisor decides with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The most memory all workers together may hold, in bytes.
    pub budget: u64,
    pub policy: Policy,
    /// Time a drained worker gets to finish its requests.
    pub drain_grace: Duration,
    /// Time beyond the grace before a draining worker is killed.
    pub kill_margin: Duration,
    /// Which policy decides whose turn it is.
    pub sched: Sched,
    /// The least time a model swapped in keeps its memory while others of its class wait (a
    /// turn lasts at least [`TURN_PER_SWAP`] times its swap too).
    pub quantum: Duration,
    /// The longest a turn lasts, however costly its swap.
    pub max_turn: Duration,
    /// Longest a request waits for a load in progress.
    pub load_wait: Duration,
    /// Idle time after which a ready worker is unloaded, unless its model sets its own.
    pub idle_ttl: Option<Duration>,
}

/// A fact.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A request wants `model`; it waits as `waiter` until `deadline` at the latest.
    Demand(Demand),
    /// The request waiting as `waiter` went away.
    Leave { waiter: WaiterId },
    /// The worker of `gen` was given these cores (`None`: all).
    Placed { model: ModelId, gen: Gen, cores: Option<Vec<usize>> },
    /// The worker loaded its model and holds `memory_bytes`.
    Ready { model: ModelId, gen: Gen, memory_bytes: u64 },
    /// The worker could not start or load.
    StartFailed { model: ModelId, gen: Gen, reason: String },
    /// The worker process ended.
    Exited { model: ModelId, gen: Gen, reason: String },
    /// The connection to the worker is gone (a request or the reader saw it) but the process
    /// may not be: nobody can talk to it any more.
    ConnectionLost { model: ModelId, gen: Gen },
    /// A request took the first lease on the worker.
    Busy { model: ModelId, gen: Gen },
    /// The last lease on the worker was released.
    Idle { model: ModelId, gen: Gen },
    /// The worker was closed to new leases for an [`Effect::Evict`].
    Evicted { model: ModelId, gen: Gen },
    /// An [`Effect::Evict`] found the worker held by a request.
    EvictRefused { model: ModelId, gen: Gen },
    /// The worker's resident memory, in bytes.
    Measured { model: ModelId, gen: Gen, bytes: u64 },
    /// The worker of `gen` holds `cache` bytes of prompt cache states and an embedding context
    /// that has grown to `embed` bytes (0: none); its resident memory, read right after, was
    /// `rss`.
    Held { model: ModelId, gen: Gen, cache: u64, embed: u64, rss: Option<u64> },
    /// Time passed: deadlines, idle TTLs, the budget.
    Tick,
    /// Unload (an operator, or the file left the folder).
    Stop { model: ModelId },
    /// Drain and start again with the current settings (SIGUSR1).
    Restart { model: ModelId },
    /// Forget a failure (SIGHUP, rescan, an explicit load).
    Reset { model: ModelId },
    /// The model's idle TTL (`None`: the server's) or pinning changed (a config reload).
    Configure { model: ModelId, ttl: Option<Duration>, pinned: bool },
    /// A client asked how long the model stays loaded once idle (Ollama's `keep_alive`;
    /// `None`: as configured). It holds until another such wish, capped by [`idle_time`].
    KeepAlive { model: ModelId, asked: Option<Duration> },
    /// The server is stopping: no new workers; every worker drains.
    Shutdown,
}

/// How long a ready model may stay idle before it is unloaded (`None`: for ever): as
/// `configured` (zero: for ever), or less where a client `asked` for less. A client never
/// keeps a model longer than the server's settings would.
pub fn idle_time(configured: Option<Duration>, asked: Option<Duration>) -> Option<Duration> {
    let configured = configured.filter(|t| !t.is_zero());
    match (configured, asked) {
        (Some(c), Some(a)) => Some(c.min(a)),
        (c, a) => c.or(a),
    }
}

/// A request's wish for a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Demand {
    pub waiter: WaiterId,
    pub model: ModelId,
    /// Bytes the model needs whatever it serves.
    pub need: u64,
    /// The most evictable memory it may come to hold beyond `need` (its prompt cache and
    /// embedding context), as far as the budget allows.
    pub spare: u64,
    /// Of `spare`, what its embedding context holds once its buffers are full.
    pub embed: u64,
    /// Its idle time before it is unloaded (`None`: the server's).
    pub ttl: Option<Duration>,
    pub deadline: Instant,
    /// When the request first asked (it may ask again after finding its worker closed).
    pub since: Instant,
    pub class: Priority,
    /// The model is never evicted.
    pub pinned: bool,
    /// The most requests that may wait for the model; more are refused as a full queue.
    pub room: usize,
    /// The request has somewhere else to go that serves now: it is refused at once
    /// ([`RegistryError::WouldWait`]) unless the model is ready or starts at once.
    pub pass: bool,
}

/// What requests see of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    Unloaded,
    Loading,
    /// Its worker of this generation takes requests.
    Ready(Gen),
    Draining,
    Failed(String),
}

impl View {
    pub fn name(&self) -> &'static str {
        match self {
            View::Unloaded => "unloaded",
            View::Loading => "loading",
            View::Ready(_) => "ready",
            View::Draining => "draining",
            View::Failed(_) => "failed",
        }
    }
}

/// A command.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Start a worker for `model`, numbered `gen`, and report [`Input::Placed`], then
    /// [`Input::Ready`] or [`Input::StartFailed`], then [`Input::Exited`].
    Spawn {
        model: ModelId,
        gen: Gen,
    },
    /// Ask the worker to finish its requests within `grace` and exit.
    Drain {
        model: ModelId,
        gen: Gen,
        grace: Duration,
    },
    /// End the process now.
    Kill {
        model: ModelId,
        gen: Gen,
        why: &'static str,
    },
    /// Close the worker to new leases if none is held, then answer [`Input::Evicted`];
    /// otherwise answer [`Input::EvictRefused`].
    Evict {
        model: ModelId,
        gen: Gen,
        why: &'static str,
    },
    /// Take no new leases on the worker; those held finish. It yields its memory to a model
    /// that waits for it, and is evicted once idle.
    Close {
        model: ModelId,
        gen: Gen,
    },
    /// Show requests this state of `model`.
    Publish {
        model: ModelId,
        view: View,
    },
    /// The waiter's model is ready: take a lease.
    Admit {
        waiter: WaiterId,
    },
    Reject {
        waiter: WaiterId,
        error: RegistryError,
    },
    /// Take leases on the worker again: nobody waits for the memory it was yielding.
    Reopen {
        model: ModelId,
        gen: Gen,
    },
    /// Others are making room for `model`: read its file into memory meanwhile.
    Prefetch {
        model: ModelId,
    },
    /// Let the worker hold at most `bytes` of evictable memory (it drops what is beyond).
    /// Its embedding context counts for `embed_bytes` while it exists.
    Allow {
        model: ModelId,
        gen: Gen,
        bytes: u64,
        embed_bytes: u64,
    },
    /// Others made room for `model` and its worker is ready, `took` after they were asked.
    Swapped {
        model: ModelId,
        took: Duration,
    },
    /// A ready worker crashed; `failed`: too often, the model is now failed.
    Crashed {
        model: ModelId,
        reason: String,
        failed: bool,
    },
}

/// One waiting request.
#[derive(Debug, Clone)]
struct Waiter {
    id: WaiterId,
    deadline: Instant,
    since: Instant,
    class: Priority,
}

/// One model's supervision state.
#[derive(Debug, Clone)]
struct Entry {
    life: Lifecycle,
    /// The current (or last) process's generation.
    gen: Gen,
    /// A process of `gen` exists (starting, ready or draining).
    process: bool,
    /// Its connection works; false once it was lost.
    reachable: bool,
    /// When it is killed if it has not exited (draining).
    kill_at: Option<Instant>,
    killed: bool,
    /// When the backoff ends.
    retry_at: Option<Instant>,
    /// What it counts against the budget, in bytes: the estimate while loading, then `base`
    /// plus its evictable memory; 0 when stopped or failed.
    bytes: u64,
    /// The estimate of the last admission, in bytes.
    need: u64,
    /// The most evictable memory it may come to hold (see [`Demand::spare`]).
    spare: u64,
    /// What its embedding context comes to hold (see [`Demand::embed`]), or more once it
    /// grew past that, up to `embed_max`.
    embed: u64,
    embed_max: u64,
    /// The evictable memory its worker reports holding (at most `spare`).
    evictable: u64,
    /// When it was allowed less evictable memory than it holds, until it reports holding no
    /// more than allowed; after [`TRIM_WAIT`] what it holds no longer counts as trimmable.
    cut_at: Option<Instant>,
    /// The evictable memory its worker was last allowed (`None`: not told yet).
    allowed: Option<u64>,
    /// What its worker holds beyond its evictable memory: its estimate, or what was measured
    /// less its evictable memory when that is more.
    base: u64,
    cores: Option<Vec<usize>>,
    busy: bool,
    /// Requests were admitted to it and have not taken their leases yet: it counts as busy
    /// until then (or this time passes, for a request that gave up), so that an admission
    /// waiting behind it cannot evict it under them.
    admitted_until: Option<Instant>,
    last_used: Instant,
    ttl: Option<Duration>,
    /// A client's wish for its idle time ([`Input::KeepAlive`]).
    asked: Option<Duration>,
    /// An eviction is in flight.
    evicting: bool,
    /// It takes no new requests and is evicted once idle: a model waiting for memory needs
    /// what it holds.
    yielding: bool,
    evictions: u64,
    waiters: Vec<Waiter>,
    published: View,
    /// Never evicted (`resident = true`).
    pinned: bool,
    /// When its current turn ends (it has the memory while others of its class wait), and how
    /// long it lasts.
    turn_ends: Option<Instant>,
    turn: Duration,
    /// The class of the requests it was started for.
    turn_class: Priority,
    /// When its worker was started, while it loads.
    loading_since: Option<Instant>,
    /// How long its last load took.
    load_time: Option<Duration>,
    /// When others were first asked to make room for it, until it is ready.
    swap_from: Option<Instant>,
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            life: Lifecycle::default(),
            gen: 0,
            process: false,
            reachable: false,
            kill_at: None,
            killed: false,
            retry_at: None,
            bytes: 0,
            need: 0,
            spare: 0,
            embed: 0,
            embed_max: 0,
            evictable: 0,
            cut_at: None,
            allowed: None,
            base: 0,
            cores: None,
            busy: false,
            admitted_until: None,
            last_used: now,
            ttl: None,
            asked: None,
            evicting: false,
            yielding: false,
            evictions: 0,
            waiters: Vec::new(),
            published: View::Unloaded,
            pinned: false,
            turn_ends: None,
            turn: Duration::ZERO,
            turn_class: Priority::Normal,
            loading_since: None,
            load_time: None,
            swap_from: None,
        }
    }

    /// A ready worker that is told how much evictable memory it may hold.
    fn takes_allowance(&self) -> bool {
        self.life.phase == Phase::Ready && self.reachable && !self.evicting && self.spare > 0
    }

    /// Evictable memory it can drop now without going: none once it was asked to and has not
    /// within [`TRIM_WAIT`] (an embeddings request under way, or a worker that does not listen).
    fn trimmable(&self, now: Instant) -> u64 {
        let late = self.cut_at.is_some_and(|t| now >= t + TRIM_WAIT);
        if self.takes_allowance() && !late {
            self.evictable
        } else {
            0
        }
    }

    /// Its resident memory `rss` was measured: what it holds beyond its evictable memory
    /// (its estimate at least) is that, less its evictable memory.
    fn measured(&mut self, rss: u64) {
        self.base = self.need.max(rss.saturating_sub(self.evictable));
    }

    /// What it counts against the budget: what it holds beyond its evictable memory, plus that
    /// (so that a change in its evictable memory shows at once, between measures).
    fn recount(&mut self) {
        self.bytes = self.base.saturating_add(self.evictable);
    }

    /// On its way out: draining to stop, being evicted, or yielding (it goes once idle).
    fn leaving(&self, now: Instant) -> bool {
        self.life.phase == (Phase::Draining { restart: false }) || self.evicting || (self.yielding && self.held(now))
    }

    /// Held by a request now, or about to be by one it admitted.
    fn held(&self, now: Instant) -> bool {
        self.busy || self.admitted_until.is_some_and(|t| t > now)
    }

    fn view(&self) -> View {
        match &self.life.phase {
            Phase::Stopped => View::Unloaded,
            // Requests wait for what comes after it, as for a draining worker.
            Phase::Ready if self.yielding => View::Draining,
            Phase::Ready if self.reachable => View::Ready(self.gen),
            Phase::Starting | Phase::Backoff | Phase::Ready => View::Loading,
            Phase::Draining { .. } => View::Draining,
            Phase::Failed(r) => View::Failed(r.clone()),
        }
    }
}

/// One model as `/admin/workers` shows it.
#[derive(Debug, Clone)]
pub struct Row {
    pub model: ModelId,
    pub phase: &'static str,
    pub gen: Gen,
    pub cores: Option<Vec<usize>>,
    pub budget_bytes: u64,
    pub need_bytes: u64,
    pub held_bytes: u64,
    pub allowed_bytes: Option<u64>,
    pub restarts: u32,
    pub evictions: u64,
    /// Requests waiting for it to start.
    pub queued: usize,
    pub pinned: bool,
    pub last_exit: Option<String>,
    pub error: Option<String>,
}

pub struct Supervisor {
    settings: Settings,
    models: BTreeMap<ModelId, Entry>,
    next_gen: Gen,
    stopping: bool,
    /// When the policy wants to look again (a turn ends, a request ages).
    wake: Option<Instant>,
    /// When a worker was last evicted to make room for another.
    room_at: Option<Instant>,
    /// Bytes of evictable memory the loaded models must drop for the next model to start
    /// ([`turn::Next::Trim`]).
    short: Option<u64>,
    /// What the model whose turn is next needs while it waits for room: evictable memory does
    /// not grow into it.
    pending: Option<u64>,
}

impl Supervisor {
    pub fn new(settings: Settings) -> Supervisor {
        Supervisor {
            settings,
            models: BTreeMap::new(),
            next_gen: 0,
            stopping: false,
            wake: None,
            room_at: None,
            short: None,
            pending: None,
        }
    }

    /// Applies `input` at `now`; returns what to carry out, in order.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Effect> {
        let mut out = Vec::new();
        self.apply(now, input, &mut out);
        self.expire(now, &mut out);
        self.evict_yielded(now, &mut out);
        self.admit(now, &mut out);
        self.apportion(now, &mut out);
        // What requests see changes first: a request admitted or a worker drained below
        // finds the new state already published.
        let mut effects = Vec::with_capacity(out.len() + 1);
        self.publish(&mut effects);
        effects.append(&mut out);
        effects
    }

    /// The earliest time a deadline falls due: the driver sends a [`Input::Tick`] then.
    pub fn next_deadline(&self) -> Option<Instant> {
        let per_model = self.models.values().flat_map(|e| {
            let kill = e.kill_at.filter(|_| e.process && !e.killed);
            let waits = e.waiters.iter().map(|w| self.give_up_at(e, w));
            let cut = e.cut_at.map(|t| t + TRIM_WAIT);
            kill.into_iter().chain(e.retry_at).chain(e.admitted_until).chain(waits).chain(cut)
        });
        per_model.chain(self.wake).min()
    }

    /// Whether any worker process still exists.
    pub fn has_processes(&self) -> bool {
        self.models.values().any(|e| e.process)
    }

    /// The cores given to every worker but `except`'s.
    pub fn cores_taken(&self, except: &ModelId) -> Vec<Vec<usize>> {
        self.models.iter().filter(|(id, _)| *id != except).filter_map(|(_, e)| e.cores.clone()).collect()
    }

    /// Models whose worker is ready now.
    pub fn ready(&self) -> Vec<ModelId> {
        self.models.iter().filter(|(_, e)| e.life.phase == Phase::Ready).map(|(id, _)| id.clone()).collect()
    }

    /// Every model that has (or had) a worker and is not simply stopped, and every model that
    /// requests wait for.
    pub fn rows(&self) -> Vec<Row> {
        let rows = self.models.iter().filter(|(_, e)| e.life.phase != Phase::Stopped || !e.waiters.is_empty());
        rows.map(|(id, e)| Row {
            model: id.clone(),
            phase: e.life.phase.name(),
            gen: e.gen,
            cores: e.cores.clone(),
            budget_bytes: e.bytes,
            need_bytes: e.need,
            held_bytes: e.evictable,
            allowed_bytes: e.allowed,
            restarts: e.life.restarts,
            evictions: e.evictions,
            queued: e.waiters.len(),
            pinned: e.pinned,
            last_exit: e.life.last_exit.clone(),
            error: match &e.life.phase {
                Phase::Failed(r) => Some(r.clone()),
                _ => None,
            },
        })
        .collect()
    }

    /// Bytes reserved by all models together.
    pub fn reserved(&self) -> u64 {
        self.models.values().map(|e| e.bytes).sum()
    }

    fn entry(&mut self, model: &ModelId, now: Instant) -> &mut Entry {
        self.models.entry(model.clone()).or_insert_with(|| Entry::new(now))
    }

    /// The entry a fact about process `gen` of `model` concerns, if it is still current.
    fn current(&mut self, model: &ModelId, gen: Gen) -> Option<&mut Entry> {
        self.models.get_mut(model).filter(|e| e.gen == gen && e.process)
    }

    fn apply(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        match input {
            Input::Demand(d) => self.demand(now, d, out),
            Input::Leave { waiter } => {
                for e in self.models.values_mut() {
                    e.waiters.retain(|w| w.id != waiter);
                }
            }
            Input::Placed { model, gen, cores } => {
                if let Some(e) = self.current(&model, gen) {
                    e.cores = cores;
                }
            }
            Input::Ready { model, gen, memory_bytes } => {
                let (quantum, max_turn, room_at) = (self.settings.quantum, self.settings.max_turn, self.room_at);
                if let Some(e) = self.current(&model, gen) {
                    e.measured(memory_bytes);
                    e.evictable = 0;
                    e.allowed = None;
                    e.cut_at = None;
                    e.recount();
                    e.last_used = now;
                    e.load_time = e.loading_since.take().map(|t| now.duration_since(t));
                    // A turn pays for the swap that began it: the quantum, or twice the time
                    // nobody could be served (from the last eviction made for room, not from
                    // waiting for a yielder's requests to end), up to the longest turn.
                    let swap_from = e.swap_from.take();
                    let dead = swap_from.map(|t| now.duration_since(t.max(room_at.unwrap_or(t))));
                    e.turn = quantum.max(dead.unwrap_or_default() * TURN_PER_SWAP).min(max_turn);
                    e.turn_ends = Some(now + e.turn);
                    if let Some(t) = swap_from {
                        out.push(Effect::Swapped { model: model.clone(), took: now.duration_since(t) });
                    }
                    e.busy = false;
                    e.reachable = true;
                    self.step(&model, lifecycle::Event::Ready, now, out);
                }
            }
            Input::StartFailed { model, gen, reason } => {
                if let Some(e) = self.current(&model, gen) {
                    e.process = false;
                    self.step(&model, lifecycle::Event::StartFailed(reason), now, out);
                }
            }
            Input::Exited { model, gen, reason } => {
                let Some(e) = self.current(&model, gen) else { return };
                e.process = false;
                e.kill_at = None;
                e.busy = false;
                e.admitted_until = None;
                e.evicting = false;
                e.yielding = false;
                let was_ready = e.life.phase == Phase::Ready;
                // A process that ends before it was ready failed to start.
                let ev = if e.life.phase == Phase::Starting {
                    lifecycle::Event::StartFailed(reason.clone())
                } else {
                    lifecycle::Event::Exited(reason.clone())
                };
                self.step(&model, ev, now, out);
                if was_ready {
                    let failed = matches!(self.models[&model].life.phase, Phase::Failed(_));
                    out.push(Effect::Crashed { model, reason, failed });
                }
            }
            Input::ConnectionLost { model, gen } => {
                if let Some(e) = self.current(&model, gen) {
                    e.reachable = false;
                    if !e.killed {
                        e.killed = true;
                        out.push(Effect::Kill { model, gen, why: "its connection was lost" });
                    }
                }
            }
            Input::Busy { model, gen } => {
                if let Some(e) = self.current(&model, gen) {
                    e.busy = true;
                }
            }
            Input::Idle { model, gen } => {
                if let Some(e) = self.current(&model, gen) {
                    e.busy = false;
                    e.admitted_until = None;
                    e.last_used = now;
                }
            }
            Input::Evicted { model, gen } => {
                let Some(e) = self.models.get_mut(&model).filter(|e| e.gen == gen) else { return };
                e.evicting = false;
                e.evictions += 1;
                self.step(&model, lifecycle::Event::Stop, now, out);
            }
            Input::EvictRefused { model, gen } => {
                if let Some(e) = self.current(&model, gen) {
                    e.evicting = false;
                    e.busy = true;
                }
            }
            Input::Measured { model, gen, bytes } => {
                if let Some(e) = self.current(&model, gen).filter(|e| e.bytes > 0) {
                    e.measured(bytes);
                    e.recount();
                }
            }
            Input::Held { model, gen, cache, embed, rss } => {
                if let Some(e) = self.current(&model, gen).filter(|e| e.bytes > 0) {
                    // An embedding context that grew past what it was expected to hold counts
                    // (and may be held) as what it grew to, up to twice that.
                    let embed_now = embed.min(e.embed_max);
                    if embed_now > e.embed {
                        e.spare = e.spare.saturating_add(embed_now - e.embed);
                        e.embed = embed_now;
                    }
                    // It fills its buffers as inputs come: it counts as full from the start.
                    let bytes = cache.saturating_add(if embed > 0 { embed_now.max(e.embed) } else { 0 });
                    // Nothing a worker says counts for more than it may hold.
                    e.evictable = bytes.min(e.spare);
                    if e.allowed.is_none_or(|a| e.evictable <= a) {
                        e.cut_at = None;
                    }
                    if let Some(rss) = rss {
                        e.measured(rss);
                    }
                    e.recount();
                }
            }
            Input::Tick => self.housekeep(now, out),
            Input::Stop { model } => {
                if self.models.contains_key(&model) {
                    self.step(&model, lifecycle::Event::Stop, now, out);
                }
            }
            Input::Restart { model } => {
                if self.models.contains_key(&model) {
                    self.step(&model, lifecycle::Event::Restart, now, out);
                }
            }
            Input::Configure { model, ttl, pinned } => {
                if let Some(e) = self.models.get_mut(&model) {
                    e.ttl = ttl;
                    e.pinned = pinned;
                }
            }
            Input::KeepAlive { model, asked } => {
                self.entry(&model, now).asked = asked;
            }
            Input::Reset { model } => {
                if self.models.contains_key(&model) {
                    self.step(&model, lifecycle::Event::Reset, now, out);
                }
            }
            Input::Shutdown => {
                self.stopping = true;
                let ids: Vec<ModelId> = self.models.keys().cloned().collect();
                for id in ids {
                    for w in std::mem::take(&mut self.entry(&id, now).waiters) {
                        out.push(Effect::Reject { waiter: w.id, error: RegistryError::ShuttingDown });
                    }
                    self.step(&id, lifecycle::Event::Stop, now, out);
                }
            }
        }
    }

    fn demand(&mut self, now: Instant, d: Demand, out: &mut Vec<Effect>) {
        let waiter = d.waiter;
        if self.stopping {
            out.push(Effect::Reject { waiter, error: RegistryError::ShuttingDown });
            return;
        }
        // Passing is for a model that would start now: it fits, and no other model waits.
        let trimmable: u64 = self.models.values().filter(|e| !e.leaving(now)).map(|e| e.trimmable(now)).sum();
        let starts_now = self.reserved() - trimmable + d.need <= self.settings.budget
            && self.models.iter().all(|(id, e)| id == &d.model || e.waiters.is_empty());
        let e = self.entry(&d.model, now);
        e.ttl = d.ttl;
        e.pinned = d.pinned;
        if e.life.phase == Phase::Stopped {
            e.need = d.need;
            e.spare = d.spare;
            e.embed = d.embed;
            e.embed_max = d.embed.saturating_mul(2);
        }
        let model = d.model;
        match e.view() {
            // The request raced a publish: it can take a lease now.
            View::Ready(_) => {
                e.admitted_until = Some(now + ADMIT_GRACE);
                out.push(Effect::Admit { waiter });
            }
            View::Failed(reason) => out
                .push(Effect::Reject { waiter, error: RegistryError::Failed { model, reason, while_waiting: false } }),
            // It has somewhere that serves now, and would wait here: it goes there, and the
            // model it preferred is wished for in its place (an answered waiter), so that it
            // gets its turn and serves the next such request itself.
            _ if d.pass && !(e.life.phase == Phase::Stopped && starts_now) => {
                if e.life.phase == Phase::Stopped && e.waiters.is_empty() {
                    e.waiters.push(Waiter { id: waiter, deadline: d.deadline, since: d.since, class: d.class });
                }
                out.push(Effect::Reject { waiter, error: RegistryError::WouldWait { model } })
            }
            _ if e.waiters.len() >= d.room => {
                let retry_after = self.retry_after(now, &model);
                out.push(Effect::Reject { waiter, error: RegistryError::QueueFull { model, retry_after } })
            }
            _ => e.waiters.push(Waiter { id: waiter, deadline: d.deadline, since: d.since, class: d.class }),
        }
    }

    /// Seconds worth waiting before asking for `model` again: until the turns that keep it
    /// out end, plus its last load time; 1 to 60.
    fn retry_after(&self, now: Instant, model: &ModelId) -> u64 {
        let others = self.models.iter().filter(|(id, _)| *id != model).map(|(_, e)| e);
        let turns = others.filter_map(|e| e.turn_ends).map(|t| t.saturating_duration_since(now)).max();
        let load = self.models.get(model).and_then(|e| e.load_time).unwrap_or(Duration::from_secs(1));
        (turns.unwrap_or_default() + load).as_secs_f64().ceil().clamp(1.0, 60.0) as u64
    }

    /// When `w` stops waiting for `e`: its deadline, or sooner when its model is loading and
    /// the load wait ends first, or is restarting after a crash (waiting out a backoff) and
    /// the load wait, counted from the request's arrival, ends first: repeated crashes never
    /// hold a request for the sum of their backoffs.
    fn give_up_at(&self, e: &Entry, w: &Waiter) -> Instant {
        match e.loading_since {
            Some(t) if e.life.phase == Phase::Starting => w.deadline.min(t.max(w.since) + self.settings.load_wait),
            _ if e.life.phase == Phase::Backoff => w.deadline.min(w.since + self.settings.load_wait),
            _ => w.deadline,
        }
    }

    /// Feeds a lifecycle event to `model` and carries out what it returns.
    fn step(&mut self, model: &ModelId, ev: lifecycle::Event, now: Instant, out: &mut Vec<Effect>) {
        let (settings, next_gen) = (&self.settings, &mut self.next_gen);
        let Some(e) = self.models.get_mut(model) else { return };
        match e.life.step(ev, now, &settings.policy) {
            Some(lifecycle::Effect::Spawn) => {
                *next_gen += 1;
                e.gen = *next_gen;
                e.process = true;
                e.reachable = true;
                e.killed = false;
                e.kill_at = None;
                e.retry_at = None;
                e.busy = false;
                e.admitted_until = None;
                e.yielding = false;
                e.turn_ends = None;
                e.loading_since = Some(now);
                e.evictable = 0;
                e.allowed = None;
                e.cut_at = None;
                out.push(Effect::Spawn { model: model.clone(), gen: e.gen });
            }
            Some(lifecycle::Effect::RetryAfter(delay)) => e.retry_at = Some(now + delay),
            Some(lifecycle::Effect::Drain) => {
                let grace = settings.drain_grace;
                e.kill_at = Some(now + grace + settings.kill_margin);
                out.push(Effect::Drain { model: model.clone(), gen: e.gen, grace });
            }
            None => {}
        }
        match &e.life.phase {
            Phase::Stopped | Phase::Failed(_) => {
                e.bytes = 0;
                e.evictable = 0;
                e.base = 0;
                e.allowed = None;
                e.cut_at = None;
                e.cores = None;
                e.retry_at = None;
                e.turn_ends = None;
                e.loading_since = None;
                if e.waiters.is_empty() {
                    e.swap_from = None;
                }
            }
            Phase::Backoff => {}
            _ => e.retry_at = None,
        }
        match e.view() {
            View::Ready(_) => {
                if !e.waiters.is_empty() {
                    e.admitted_until = Some(now + ADMIT_GRACE);
                }
                for w in e.waiters.drain(..) {
                    out.push(Effect::Admit { waiter: w.id });
                }
            }
            View::Failed(reason) => {
                for w in e.waiters.drain(..) {
                    let error =
                        RegistryError::Failed { model: model.clone(), reason: reason.clone(), while_waiting: true };
                    out.push(Effect::Reject { waiter: w.id, error });
                }
            }
            _ => {}
        }
    }

    /// Deadlines that have passed: waiters answered, backoffs over, drains past their grace.
    fn expire(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let ids: Vec<ModelId> = self.models.keys().cloned().collect();
        for id in ids {
            let e = &self.models[&id];
            let loading = matches!(e.life.phase, Phase::Starting | Phase::Backoff);
            let (kept, gone): (Vec<Waiter>, Vec<Waiter>) =
                e.waiters.iter().cloned().partition(|w| self.give_up_at(e, w) > now);
            for w in gone {
                let error = if loading {
                    RegistryError::StillLoading { model: id.clone() }
                } else {
                    RegistryError::Queued { model: id.clone(), waited: now.duration_since(w.since).as_secs() }
                };
                out.push(Effect::Reject { waiter: w.id, error });
            }
            let e = self.models.get_mut(&id).expect("listed");
            e.waiters = kept;
            if e.admitted_until.is_some_and(|t| t <= now) {
                e.admitted_until = None;
            }
            if e.process && !e.killed && e.kill_at.is_some_and(|t| t <= now) {
                e.killed = true;
                out.push(Effect::Kill { model: id.clone(), gen: e.gen, why: "it did not exit after draining" });
            }
            if e.retry_at.is_some_and(|t| t <= now) {
                e.retry_at = None;
                self.step(&id, lifecycle::Event::RetryDue, now, out);
            }
        }
    }

    /// The tick's own work: idle workers past their TTL and growth over the budget.
    fn housekeep(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let default_ttl = self.settings.idle_ttl;
        for (id, e) in self.models.iter_mut() {
            let ttl = idle_time(e.ttl.or(default_ttl), e.asked);
            let idle = e.life.phase == Phase::Ready && e.reachable && !e.held(now) && !e.evicting && !e.pinned;
            if idle && ttl.is_some_and(|t| now.duration_since(e.last_used) >= t) {
                e.evicting = true;
                out.push(Effect::Evict { model: id.clone(), gen: e.gen, why: "idle past its ttl" });
            }
        }
        // Over the budget by less than the workers' evictable memory: they shrink (see
        // `apportion`) and nobody is evicted.
        if let Plan::Evict(victims) = budget::plan(0, self.settings.budget, &self.residents(now)) {
            self.evict(victims, "workers grew over the RAM budget", out);
        }
    }

    /// What the budget planner needs to know about every model holding memory.
    fn residents(&self, now: Instant) -> Vec<Resident> {
        let holding = self.models.iter().filter(|(_, e)| e.bytes > 0);
        holding
            .map(|(id, e)| Resident {
                id: id.to_string(),
                bytes: e.bytes,
                busy: e.held(now),
                // A model waiting to restart after a crash holds no process: evicting it frees
                // its reservation at once. One already being evicted is not chosen twice.
                evictable: matches!(e.life.phase, Phase::Ready | Phase::Backoff) && !e.evicting && !e.pinned,
                // A busy worker that yields goes once idle: its bytes count as on their way out.
                leaving: e.leaving(now),
                trimmable: e.trimmable(now),
                last_used: e.last_used,
            })
            .collect()
    }

    /// Tells each ready worker how much evictable memory it may hold ([`budget::allowances`]):
    /// what the budget leaves beside everything counted, or less what a waiting model is short.
    /// Nothing grows into memory that is still leaving; nothing shrinks for what leaving or an
    /// eviction (at the next tick) frees.
    fn apportion(&mut self, now: Instant, out: &mut Vec<Effect>) {
        if self.stopping {
            return;
        }
        let signed = |b: u64| b.min(i64::MAX as u64) as i64;
        let budget = signed(self.settings.budget);
        let staying = signed(self.models.values().filter(|e| !e.leaving(now)).map(|e| e.bytes).sum());
        let room = match self.short {
            Some(short) => -signed(short),
            None => {
                let room = match budget::plan(0, self.settings.budget, &self.residents(now)) {
                    Plan::Fits => budget - signed(self.reserved()),
                    Plan::Wait | Plan::Evict(_) => 0,
                    Plan::Trim | Plan::NoRoom { .. } | Plan::TooLarge => (budget - staying).min(0),
                };
                match self.pending {
                    Some(need) => room.min((budget - staying - signed(need)).max(0)),
                    None => room,
                }
            }
        };
        // Workers on their way out are not asked: what they hold goes with them. A busy one
        // counts as used now.
        let spares: Vec<budget::Spare> = self
            .models
            .iter()
            .filter(|(_, e)| e.takes_allowance() && !e.leaving(now))
            .map(|(id, e)| budget::Spare {
                id: id.to_string(),
                held: e.evictable,
                cap: e.spare,
                last_used: if e.held(now) { now } else { e.last_used },
            })
            .collect();
        for (id, bytes) in budget::allowances(room, &spares) {
            let e = self.models.get_mut(id.as_str()).expect("listed");
            // Less is always said (the budget holds); more only in whole steps, so that every
            // small change in what others hold does not tell every worker again.
            let tell = e.allowed.is_none_or(|a| bytes < a || bytes >= a.saturating_add(budget::SHARE_STEP));
            if tell {
                e.allowed = Some(bytes);
                if bytes < e.evictable {
                    e.cut_at.get_or_insert(now);
                } else {
                    e.cut_at = None;
                }
                out.push(Effect::Allow { model: ModelId::from(id.as_str()), gen: e.gen, bytes, embed_bytes: e.embed });
            }
        }
    }

    fn evict(&mut self, victims: Vec<String>, why: &'static str, out: &mut Vec<Effect>) {
        for v in victims {
            let id = ModelId::from(v.as_str());
            if let Some(e) = self.models.get_mut(&id).filter(|e| !e.evicting) {
                e.evicting = true;
                out.push(Effect::Evict { model: id, gen: e.gen, why });
            }
        }
    }

    /// Emits the views that changed.
    fn publish(&mut self, out: &mut Vec<Effect>) {
        for (id, e) in self.models.iter_mut() {
            let view = e.view();
            if view != e.published {
                e.published = view.clone();
                out.push(Effect::Publish { model: id.clone(), view });
            }
        }
    }
}
