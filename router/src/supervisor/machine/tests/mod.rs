//! Replays: a sequence of facts and the commands it must produce. Each race the supervision
//! reviews found has one here.

use super::*;

mod evictable;
mod turns;

const MIB: u64 = 1 << 20;

fn settings() -> Settings {
    Settings {
        budget: 1000 * MIB,
        policy: Policy {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(8),
            max_crashes: 3,
            window: Duration::from_secs(60),
        },
        drain_grace: Duration::from_secs(10),
        kill_margin: Duration::from_secs(3),
        sched: Sched::Turns,
        // No turns: each replay here is about one mechanism; turns have their own.
        quantum: Duration::ZERO,
        max_turn: Duration::from_secs(60),
        load_wait: Duration::from_secs(30),
        idle_ttl: None,
    }
}

/// A supervisor and a clock the replay moves.
struct Replay {
    s: Supervisor,
    t0: Instant,
    now: Instant,
}

fn id(name: &str) -> ModelId {
    ModelId::from(name)
}

impl Replay {
    fn new() -> Replay {
        Replay::with(settings())
    }

    fn with(settings: Settings) -> Replay {
        let t0 = Instant::now();
        Replay { s: Supervisor::new(settings), t0, now: t0 }
    }

    fn at(&mut self, secs: u64) -> &mut Replay {
        self.now = self.t0 + Duration::from_secs(secs);
        self
    }

    fn feed(&mut self, input: Input) -> Vec<Effect> {
        self.s.handle(self.now, input)
    }

    /// A request for `model` (needing `mib`) waiting 60 s at most.
    fn demand(&mut self, waiter: WaiterId, model: &str, mib: u64) -> Vec<Effect> {
        let d = self.wish(waiter, model, mib);
        self.feed(Input::Demand(d))
    }

    /// The demand [`Replay::demand`] feeds, to be changed before it is.
    fn wish(&self, waiter: WaiterId, model: &str, mib: u64) -> Demand {
        Demand {
            waiter,
            model: id(model),
            need: mib * MIB,
            spare: 0,
            embed: 0,
            ttl: None,
            deadline: self.now + Duration::from_secs(60),
            since: self.now,
            class: Priority::Normal,
            pinned: false,
            room: 100,
            pass: false,
        }
    }

    /// `model` started as `gen` and is ready; returns the effects of the ready.
    fn ready(&mut self, model: &str, gen: Gen) -> Vec<Effect> {
        self.feed(Input::Ready { model: id(model), gen, memory_bytes: MIB })
    }

    /// Loads `model` for request `waiter`, checks it is admitted, and serves the request (a
    /// lease taken and released); returns the worker's generation.
    fn load(&mut self, waiter: WaiterId, model: &str, mib: u64) -> Gen {
        let out = self.demand(waiter, model, mib);
        let gen = spawned(&out, model).unwrap_or_else(|| panic!("{model} not spawned: {out:?}"));
        assert!(self.ready(model, gen).contains(&Effect::Admit { waiter }));
        self.feed(Input::Busy { model: id(model), gen });
        self.feed(Input::Idle { model: id(model), gen });
        gen
    }

    fn view(&self, model: &str) -> View {
        self.s.models[&id(model)].view()
    }
}

fn spawned(out: &[Effect], model: &str) -> Option<Gen> {
    out.iter().find_map(|e| match e {
        Effect::Spawn { model: m, gen } if m == model => Some(*gen),
        _ => None,
    })
}

fn evicted(out: &[Effect]) -> Vec<String> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Evict { model, .. } => Some(model.to_string()),
            _ => None,
        })
        .collect()
}

fn rejection(out: &[Effect], waiter: WaiterId) -> Option<RegistryError> {
    out.iter().find_map(|e| match e {
        Effect::Reject { waiter: w, error } if *w == waiter => Some(error.clone()),
        _ => None,
    })
}

#[test]
fn concurrent_requests_share_one_load() {
    let mut r = Replay::new();
    let first = r.demand(1, "a", 100);
    assert_eq!(spawned(&first, "a"), Some(1));
    assert!(first.contains(&Effect::Publish { model: id("a"), view: View::Loading }));
    for w in 2..6 {
        let out = r.demand(w, "a", 100);
        assert!(spawned(&out, "a").is_none(), "{out:?}");
    }
    let out = r.ready("a", 1);
    for w in 1..6 {
        assert!(out.contains(&Effect::Admit { waiter: w }), "{out:?}");
    }
    assert!(out.contains(&Effect::Publish { model: id("a"), view: View::Ready(1) }));
    // A request that raced the publish is admitted at once.
    assert_eq!(r.demand(9, "a", 100), vec![Effect::Admit { waiter: 9 }]);
}

#[test]
fn a_worker_that_never_goes_idle_yields_to_a_waiting_model() {
    // Requests for a keep arriving back to back, so it is never idle when b's admission looks:
    // it is closed to new requests, finishes its own, and goes; b starts; a's next requests
    // wait and start it again once b is idle.
    let mut r = Replay::with(Settings { budget: 300 * MIB, ..settings() });
    let a = r.load(1, "a", 200);
    r.feed(Input::Busy { model: id("a"), gen: a });
    let out = r.demand(2, "b", 200);
    assert!(evicted(&out).is_empty() && spawned(&out, "b").is_none(), "{out:?}");
    assert!(out.contains(&Effect::Close { model: id("a"), gen: a }), "{out:?}");
    // b's file is read into memory while a finishes, once.
    assert!(out.contains(&Effect::Prefetch { model: id("b") }), "{out:?}");
    assert!(out.contains(&Effect::Publish { model: id("a"), view: View::Draining }), "{out:?}");
    // Asked once only.
    let out = r.at(1).feed(Input::Tick);
    assert!(!out.iter().any(|e| matches!(e, Effect::Close { .. } | Effect::Prefetch { .. })), "{out:?}");
    // A request for a now waits instead of being admitted to the closing worker.
    let out = r.demand(3, "a", 200);
    assert!(out.is_empty(), "{out:?}");
    // Its last request ends: it is evicted, drained, and b starts once it has exited.
    let out = r.at(2).feed(Input::Idle { model: id("a"), gen: a });
    assert_eq!(evicted(&out), vec!["a"]);
    r.feed(Input::Evicted { model: id("a"), gen: a });
    let out = r.feed(Input::Exited { model: id("a"), gen: a, reason: "exit status: 0".into() });
    let b = spawned(&out, "b").expect("b starts");
    let out = r.ready("b", b);
    assert!(out.contains(&Effect::Admit { waiter: 2 }));
    // A swap: a was asked to make room at 0, b was ready at 2.
    assert!(out.contains(&Effect::Swapped { model: id("b"), took: Duration::from_secs(2) }), "{out:?}");
    // a waits next in line, but b is not closed before the request it admitted leases it.
    assert!(!out.iter().any(|e| matches!(e, Effect::Close { .. })), "{out:?}");
    // b serves and goes idle: its swap cost no time once a was gone (a replay's load is
    // instant), so it has no turn to keep: a takes its memory back.
    r.feed(Input::Busy { model: id("b"), gen: b });
    let out = r.at(3).feed(Input::Idle { model: id("b"), gen: b });
    assert_eq!(evicted(&out), vec!["b"], "{out:?}");
    r.feed(Input::Evicted { model: id("b"), gen: b });
    let out = r.feed(Input::Exited { model: id("b"), gen: b, reason: "exit status: 0".into() });
    let a2 = spawned(&out, "a").expect("a starts again");
    assert!(r.ready("a", a2).contains(&Effect::Admit { waiter: 3 }));
}

#[test]
fn nobody_yields_when_it_would_not_make_room() {
    // b needs more than a and c together could free: nothing is closed, b waits and fails.
    let mut r = Replay::with(Settings { budget: 500 * MIB, ..settings() });
    let a = r.load(1, "a", 200);
    r.feed(Input::Busy { model: id("a"), gen: a });
    let out = r.demand(2, "b", 600);
    assert!(matches!(rejection(&out, 2), Some(RegistryError::TooLarge { .. })), "{out:?}");
    assert!(!out.iter().any(|e| matches!(e, Effect::Close { .. })), "{out:?}");
    assert_eq!(r.view("a"), View::Ready(a));
}

#[test]
fn a_busy_worker_is_never_evicted() {
    // The eviction is decided while the worker looks idle, but a request leases it before the
    // driver carries it out: the driver's guard refuses, and nothing is stopped.
    let mut r = Replay::with(Settings { budget: 300 * MIB, ..settings() });
    let a = r.load(1, "a", 200);
    let out = r.demand(2, "b", 200);
    assert_eq!(evicted(&out), vec!["a"]);
    assert!(spawned(&out, "b").is_none());
    let out = r.feed(Input::EvictRefused { model: id("a"), gen: a });
    assert!(out.iter().all(|e| !matches!(e, Effect::Drain { .. } | Effect::Spawn { .. })), "{out:?}");
    // It keeps serving what it holds, but takes nothing more: b waits for its memory.
    assert!(out.contains(&Effect::Close { model: id("a"), gen: a }), "{out:?}");
    assert_eq!(r.view("a"), View::Draining);
    // When its request ends it is idle again, and the waiting model evicts it then.
    let out = r.feed(Input::Idle { model: id("a"), gen: a });
    assert_eq!(evicted(&out), vec!["a"]);
    let out = r.feed(Input::Evicted { model: id("a"), gen: a });
    assert!(out.contains(&Effect::Drain { model: id("a"), gen: a, grace: Duration::from_secs(10) }));
    assert_eq!(r.view("a"), View::Draining);
    assert!(spawned(&out, "b").is_none(), "b waits for a's memory: {out:?}");
    let out = r.feed(Input::Exited { model: id("a"), gen: a, reason: "exit status: 0".into() });
    assert!(spawned(&out, "b").is_some(), "{out:?}");
    assert_eq!(r.s.rows().iter().find(|row| row.model == "a").map(|row| row.evictions), None);
    assert_eq!(r.s.models[&id("a")].evictions, 1);
}

#[test]
fn admission_waits_for_draining_workers_instead_of_evicting_more() {
    let mut r = Replay::with(Settings { budget: 500 * MIB, ..settings() });
    let a = r.load(1, "a", 200);
    let _b = r.load(2, "b", 200);
    r.at(1).feed(Input::Stop { model: id("a") });
    assert_eq!(r.view("a"), View::Draining);
    // 400 held, 200 of it leaving: 250 more fits once a is gone; b stays.
    let out = r.demand(3, "c", 250);
    assert!(evicted(&out).is_empty(), "{out:?}");
    assert!(spawned(&out, "c").is_none());
    let out = r.feed(Input::Exited { model: id("a"), gen: a, reason: "exit status: 0".into() });
    assert!(spawned(&out, "c").is_some(), "{out:?}");
    assert_eq!(r.view("b"), View::Ready(2));
}

#[test]
fn a_crashed_worker_in_backoff_can_be_evicted_and_frees_its_reservation() {
    let mut r = Replay::with(Settings { budget: 300 * MIB, ..settings() });
    let a = r.load(1, "a", 200);
    let out = r.feed(Input::Exited { model: id("a"), gen: a, reason: "signal: 9".into() });
    assert!(out.contains(&Effect::Crashed { model: id("a"), reason: "signal: 9".into(), failed: false }));
    assert_eq!(r.view("a"), View::Loading);
    assert_eq!(r.s.reserved(), 200 * MIB, "backoff keeps its reservation");
    let out = r.demand(2, "b", 200);
    assert_eq!(evicted(&out), vec!["a"]);
    let out = r.feed(Input::Evicted { model: id("a"), gen: a });
    assert!(spawned(&out, "b").is_some(), "no process to wait for: {out:?}");
    assert_eq!(r.view("a"), View::Unloaded);
    // The backoff's retry, when it comes, starts nothing.
    let out = r.at(5).feed(Input::Tick);
    assert!(spawned(&out, "a").is_none(), "{out:?}");
}

/// A request for a model waiting out a crash's backoff gives up after the load wait from its
/// arrival, not at its queue deadline: crash after crash would otherwise hold it for the sum
/// of the backoffs.
#[test]
fn a_request_waits_out_a_crash_backoff_for_the_load_wait_only() {
    let p = Policy { backoff_base: Duration::from_secs(5), ..settings().policy };
    let mut r = Replay::with(Settings { load_wait: Duration::from_secs(2), policy: p, ..settings() });
    let a = r.load(1, "a", 200);
    let out = r.feed(Input::Exited { model: id("a"), gen: a, reason: "signal: 9".into() });
    assert!(out.contains(&Effect::Crashed { model: id("a"), reason: "signal: 9".into(), failed: false }));
    assert!(r.demand(2, "a", 200).iter().all(|e| !matches!(e, Effect::Reject { .. })));
    assert_eq!(r.s.next_deadline(), Some(r.t0 + Duration::from_secs(2)));
    assert!(rejection(&r.at(1).feed(Input::Tick), 2).is_none());
    let out = r.at(2).feed(Input::Tick);
    assert_eq!(rejection(&out, 2), Some(RegistryError::StillLoading { model: id("a") }));
    // The restart still comes when the backoff ends, for the next request.
    assert!(spawned(&r.at(5).feed(Input::Tick), "a").is_some());
}

#[test]
fn no_worker_starts_after_shutdown_began() {
    let mut r = Replay::with(Settings { budget: 300 * MIB, ..settings() });
    let a = r.load(1, "a", 200);
    let out = r.demand(2, "b", 200);
    assert_eq!(evicted(&out), vec!["a"]);
    let out = r.feed(Input::Shutdown);
    assert_eq!(rejection(&out, 2), Some(RegistryError::ShuttingDown));
    assert!(out.contains(&Effect::Drain { model: id("a"), gen: a, grace: Duration::from_secs(10) }));
    // The eviction lands after the shutdown, then the worker exits: nothing starts.
    let mut later = r.feed(Input::Evicted { model: id("a"), gen: a });
    later.extend(r.feed(Input::Exited { model: id("a"), gen: a, reason: "exit status: 0".into() }));
    later.extend(r.demand(3, "b", 10));
    assert!(later.iter().all(|e| !matches!(e, Effect::Spawn { .. })), "{later:?}");
    assert_eq!(rejection(&later, 3), Some(RegistryError::ShuttingDown));
    assert!(!r.s.has_processes());
}

#[test]
fn a_lost_connection_kills_the_worker_and_requests_wait_for_the_restart() {
    let mut r = Replay::new();
    let a = r.load(1, "a", 100);
    let out = r.feed(Input::ConnectionLost { model: id("a"), gen: a });
    assert!(out.contains(&Effect::Kill { model: id("a"), gen: a, why: "its connection was lost" }));
    assert!(out.contains(&Effect::Publish { model: id("a"), view: View::Loading }));
    // A second report of the same loss kills once.
    assert!(r.feed(Input::ConnectionLost { model: id("a"), gen: a }).is_empty());
    // The next request waits instead of getting the dead worker.
    let out = r.demand(2, "a", 100);
    assert!(!out.contains(&Effect::Admit { waiter: 2 }), "{out:?}");
    r.feed(Input::Exited { model: id("a"), gen: a, reason: "signal: 9".into() });
    let out = r.at(1).feed(Input::Tick);
    let b = spawned(&out, "a").expect("restarted after the backoff");
    assert!(b > a);
    assert!(r.ready("a", b).contains(&Effect::Admit { waiter: 2 }));
}

#[test]
fn a_request_that_meets_a_draining_worker_waits_for_the_next_one() {
    let mut r = Replay::new();
    let a = r.load(1, "a", 100);
    let out = r.feed(Input::Restart { model: id("a") });
    assert!(out.contains(&Effect::Drain { model: id("a"), gen: a, grace: Duration::from_secs(10) }));
    let out = r.demand(2, "a", 100);
    assert!(out.is_empty(), "{out:?}");
    let out = r.feed(Input::Exited { model: id("a"), gen: a, reason: "exit status: 0".into() });
    let b = spawned(&out, "a").expect("respawned");
    assert!(r.ready("a", b).contains(&Effect::Admit { waiter: 2 }));
    assert_eq!(r.s.models[&id("a")].life.restarts, 0, "a restart on request is no crash");
}

#[test]
fn facts_about_an_older_process_change_nothing() {
    let mut r = Replay::new();
    let a = r.load(1, "a", 100);
    r.feed(Input::ConnectionLost { model: id("a"), gen: a });
    r.feed(Input::Exited { model: id("a"), gen: a, reason: "signal: 9".into() });
    let b = spawned(&r.at(1).feed(Input::Tick), "a").expect("restarted");
    r.ready("a", b);
    // Late reports about the first process: its memory, its exit, its loss, its lease.
    let mut out = r.feed(Input::Measured { model: id("a"), gen: a, bytes: 900 * MIB });
    out.extend(r.feed(Input::Exited { model: id("a"), gen: a, reason: "late".into() }));
    out.extend(r.feed(Input::ConnectionLost { model: id("a"), gen: a }));
    out.extend(r.feed(Input::Busy { model: id("a"), gen: a }));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(r.view("a"), View::Ready(b));
    assert_eq!(r.s.reserved(), 100 * MIB);
    assert!(!r.s.models[&id("a")].busy);
}

#[test]
fn a_draining_worker_that_does_not_exit_is_killed_after_the_grace() {
    let mut r = Replay::new();
    let a = r.load(1, "a", 100);
    r.feed(Input::Stop { model: id("a") });
    assert_eq!(r.s.next_deadline(), Some(r.t0 + Duration::from_secs(13)));
    assert!(r.at(12).feed(Input::Tick).is_empty());
    assert_eq!(
        r.at(13).feed(Input::Tick),
        vec![Effect::Kill { model: id("a"), gen: a, why: "it did not exit after draining" }]
    );
    assert!(r.at(20).feed(Input::Tick).is_empty(), "killed once");
    r.feed(Input::Exited { model: id("a"), gen: a, reason: "signal: 9".into() });
    assert_eq!(r.view("a"), View::Unloaded);
    assert_eq!(r.s.models[&id("a")].life.restarts, 0, "a kill after a drain is no crash");
}

#[test]
fn a_stop_while_loading_drains_once_up() {
    let mut r = Replay::new();
    let out = r.demand(1, "a", 100);
    let a = spawned(&out, "a").unwrap();
    r.feed(Input::Stop { model: id("a") });
    let out = r.ready("a", a);
    assert!(out.contains(&Effect::Drain { model: id("a"), gen: a, grace: Duration::from_secs(10) }));
    // Its waiter is still there: it starts again for it.
    let out = r.feed(Input::Exited { model: id("a"), gen: a, reason: "exit status: 0".into() });
    let b = spawned(&out, "a").expect("started again for the waiter");
    assert!(r.ready("a", b).contains(&Effect::Admit { waiter: 1 }));
}

#[test]
fn crashes_back_off_then_fail_the_model_and_its_waiters() {
    let mut r = Replay::new();
    let mut gen = r.load(1, "a", 100);
    for (i, delay) in [(0u64, 1u64), (2, 2)] {
        let out = r.at(i).feed(Input::Exited { model: id("a"), gen, reason: "boom".into() });
        assert!(out.contains(&Effect::Crashed { model: id("a"), reason: "boom".into(), failed: false }));
        assert!(spawned(&r.at(i + delay - 1).feed(Input::Tick), "a").is_none(), "not before the backoff");
        gen = spawned(&r.at(i + delay).feed(Input::Tick), "a").expect("after the backoff");
        r.ready("a", gen);
    }
    // The third crash is seen by a request first; one that comes then waits for the restart.
    r.feed(Input::ConnectionLost { model: id("a"), gen });
    assert!(r.demand(7, "a", 100).is_empty());
    let out = r.at(5).feed(Input::Exited { model: id("a"), gen, reason: "boom".into() });
    assert!(out.contains(&Effect::Crashed { model: id("a"), reason: "boom".into(), failed: true }), "{out:?}");
    assert!(matches!(rejection(&out, 7), Some(RegistryError::Failed { while_waiting: true, .. })), "{out:?}");
    assert!(matches!(r.view("a"), View::Failed(ref why) if why.contains("crashed 3 times")));
    assert_eq!(r.s.reserved(), 0);
    // A request that comes now is told at once; a reset lets the next one load it.
    let out = r.demand(8, "a", 100);
    assert!(matches!(rejection(&out, 8), Some(RegistryError::Failed { while_waiting: false, .. })), "{out:?}");
    r.feed(Input::Reset { model: id("a") });
    assert!(spawned(&r.demand(9, "a", 100), "a").is_some());
}

#[test]
fn a_load_that_fails_rejects_its_waiters_as_seen_failing() {
    let mut r = Replay::new();
    let a = spawned(&r.demand(1, "a", 100), "a").unwrap();
    r.demand(2, "a", 100);
    let out = r.feed(Input::StartFailed { model: id("a"), gen: a, reason: "bad file".into() });
    for w in [1, 2] {
        assert_eq!(
            rejection(&out, w),
            Some(RegistryError::Failed { model: id("a"), reason: "bad file".into(), while_waiting: true })
        );
    }
    assert_eq!(r.view("a"), View::Failed("bad file".into()));
}

#[test]
fn too_large_queue_timeout_and_load_wait() {
    let mut r = Replay::with(Settings { budget: 300 * MIB, ..settings() });
    let out = r.demand(1, "huge", 400);
    assert!(matches!(rejection(&out, 1), Some(RegistryError::TooLarge { .. })));
    let a = r.load(2, "a", 200);
    r.feed(Input::Busy { model: id("a"), gen: a });
    // Busy a holds the memory: it is asked to yield, and b waits.
    assert!(r.demand(3, "b", 200).contains(&Effect::Close { model: id("a"), gen: a }));
    // c fits beside a: it does not queue behind b.
    assert!(spawned(&r.demand(4, "c", 50), "c").is_some());
    // a's request outlasts b's whole wait (60 s here): b is told it waited that long, and
    // never before.
    assert!(rejection(&r.at(59).feed(Input::Tick), 3).is_none());
    let out = r.at(60).feed(Input::Tick);
    assert_eq!(rejection(&out, 3), Some(RegistryError::Queued { model: id("b"), waited: 60 }));
    // c's load took longer than the load wait (30 s): its waiter was told so at 30 s.
    let mut r = Replay::with(Settings { budget: 300 * MIB, ..settings() });
    assert!(spawned(&r.demand(1, "c", 50), "c").is_some());
    assert_eq!(r.s.next_deadline(), Some(r.t0 + Duration::from_secs(30)));
    let out = r.at(30).feed(Input::Tick);
    assert_eq!(rejection(&out, 1), Some(RegistryError::StillLoading { model: id("c") }));
}

#[test]
fn idle_ttl_evicts_per_model_and_growth_over_budget_evicts_lru() {
    let mut r = Replay::with(Settings { budget: 500 * MIB, idle_ttl: Some(Duration::from_secs(100)), ..settings() });
    let ttl = Some(Duration::from_secs(10));
    let out = r.feed(Input::Demand(Demand { ttl, ..r.wish(1, "short", 100) }));
    let short = spawned(&out, "short").unwrap();
    r.ready("short", short);
    let long = r.load(2, "long", 100);
    assert!(evicted(&r.at(9).feed(Input::Tick)).is_empty());
    assert_eq!(evicted(&r.at(10).feed(Input::Tick)), vec!["short"]);
    assert!(evicted(&r.at(11).feed(Input::Tick)).is_empty(), "asked once");
    r.feed(Input::Evicted { model: id("short"), gen: short });
    r.feed(Input::Exited { model: id("short"), gen: short, reason: "exit status: 0".into() });
    let ttl = Some(Duration::from_secs(1000));
    let x = spawned(&r.feed(Input::Demand(Demand { ttl, ..r.wish(3, "x", 100) })), "x").unwrap();
    r.ready("x", x);
    // Busy workers never expire.
    r.feed(Input::Busy { model: id("long"), gen: long });
    assert!(evicted(&r.at(150).feed(Input::Tick)).is_empty(), "long is busy past its ttl");
    r.feed(Input::Idle { model: id("long"), gen: long });
    // Measured growth over the budget evicts the least recently used idle worker.
    r.feed(Input::Measured { model: id("long"), gen: long, bytes: 450 * MIB });
    let out = r.at(151).feed(Input::Tick);
    assert_eq!(evicted(&out), vec!["x"], "{out:?}");
    // A reload that shortens long's ttl applies to the running worker.
    r.feed(Input::Configure { model: id("long"), ttl: Some(Duration::from_secs(5)), pinned: false });
    assert!(evicted(&r.at(156).feed(Input::Tick)).contains(&"long".to_string()));
}

#[test]
fn a_clients_keep_alive_shortens_the_idle_time_but_never_lengthens_it() {
    let s = |n| Some(Duration::from_secs(n));
    assert_eq!(idle_time(s(100), None), s(100));
    assert_eq!(idle_time(s(100), s(10)), s(10));
    assert_eq!(idle_time(s(100), s(1000)), s(100), "capped by the setting");
    assert_eq!(idle_time(None, s(300)), s(300), "never unloading is the cap");
    assert_eq!(idle_time(s(0), s(300)), s(300), "zero configured means never");
    assert_eq!(idle_time(None, None), None);
    assert_eq!(idle_time(s(100), s(0)), s(0), "zero asked: as soon as it is idle");

    let mut r = Replay::with(Settings { idle_ttl: s(100), ..settings() });
    // A wish made before the model is loaded holds for its worker.
    r.feed(Input::KeepAlive { model: id("a"), asked: s(10) });
    let a = r.load(1, "a", 100);
    assert!(evicted(&r.at(9).feed(Input::Tick)).is_empty());
    assert_eq!(evicted(&r.at(10).feed(Input::Tick)), vec!["a"]);
    r.feed(Input::Evicted { model: id("a"), gen: a });
    r.feed(Input::Exited { model: id("a"), gen: a, reason: "exit status: 0".into() });
    // A longer wish is capped by the server's 100 s; `None` goes back to the setting.
    let b = r.at(20).load(2, "b", 100);
    r.feed(Input::KeepAlive { model: id("b"), asked: s(1000) });
    assert!(evicted(&r.at(119).feed(Input::Tick)).is_empty());
    assert_eq!(evicted(&r.at(120).feed(Input::Tick)), vec!["b"]);
    r.feed(Input::Evicted { model: id("b"), gen: b });
    r.feed(Input::Exited { model: id("b"), gen: b, reason: "exit status: 0".into() });
    // Zero: unloaded at the first tick it is idle; a resident model never is.
    let c = r.at(200).load(3, "c", 100);
    r.feed(Input::Configure { model: id("c"), ttl: None, pinned: true });
    r.feed(Input::KeepAlive { model: id("c"), asked: s(0) });
    assert!(evicted(&r.at(201).feed(Input::Tick)).is_empty(), "pinned");
    r.feed(Input::Configure { model: id("c"), ttl: None, pinned: false });
    assert_eq!(evicted(&r.at(201).feed(Input::Tick)), vec!["c"]);
    let _ = c;
}

#[test]
fn restart_keeps_the_reservation_and_reset_clears_failure_only() {
    let mut r = Replay::new();
    let a = r.load(1, "a", 100);
    r.feed(Input::Restart { model: id("a") });
    let out = r.feed(Input::Exited { model: id("a"), gen: a, reason: "exit status: 0".into() });
    let b = spawned(&out, "a").unwrap();
    assert_eq!(r.s.reserved(), 100 * MIB);
    r.ready("a", b);
    assert!(r.feed(Input::Reset { model: id("a") }).is_empty(), "reset of a healthy model does nothing");
    assert_eq!(r.view("a"), View::Ready(b));
}

#[test]
fn a_model_is_not_evicted_before_the_requests_it_admitted_take_their_leases() {
    // Two models that fit one at a time, both wanted: b loads for its waiters while a's
    // request queues behind it. b must serve its waiters before a's admission may evict it;
    // otherwise the two evict each other forever and nobody is served.
    let mut r = Replay::with(Settings { budget: 300 * MIB, ..settings() });
    let a = r.load(1, "a", 200);
    r.feed(Input::Busy { model: id("a"), gen: a });
    let out = r.demand(2, "b", 200);
    assert!(evicted(&out).is_empty() && spawned(&out, "b").is_none(), "a is busy: b waits: {out:?}");
    let out = r.feed(Input::Idle { model: id("a"), gen: a });
    assert_eq!(evicted(&out), vec!["a"]);
    r.feed(Input::Evicted { model: id("a"), gen: a });
    let b = spawned(&r.feed(Input::Exited { model: id("a"), gen: a, reason: "exit status: 0".into() }), "b").unwrap();
    // a is wanted again while b loads.
    assert!(r.demand(3, "a", 200).is_empty());
    let out = r.ready("b", b);
    assert!(out.contains(&Effect::Admit { waiter: 2 }));
    assert!(evicted(&out).is_empty(), "b was evicted before its request leased it: {out:?}");
    // b's request takes its lease and finishes; only then does a's admission evict b.
    assert!(evicted(&r.feed(Input::Busy { model: id("b"), gen: b })).is_empty());
    assert_eq!(evicted(&r.feed(Input::Idle { model: id("b"), gen: b })), vec!["b"]);
}

#[test]
fn an_admitted_request_that_never_leases_protects_its_worker_only_for_a_while() {
    let mut r = Replay::with(Settings { budget: 300 * MIB, ..settings() });
    let out = r.demand(1, "a", 200);
    let a = spawned(&out, "a").unwrap();
    r.ready("a", a);
    // Its request gave up before leasing; another model is wanted.
    assert!(evicted(&r.demand(2, "b", 200)).is_empty());
    assert_eq!(r.s.next_deadline(), Some(r.t0 + ADMIT_GRACE));
    assert_eq!(evicted(&r.at(1).feed(Input::Tick)), vec!["a"]);
}
