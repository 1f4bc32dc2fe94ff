//! Replays of the turn rules as the supervisor carries them out: batching within a turn,
//! priorities, pinned models, a client leaving the queue, a full queue, passing.

use super::*;

/// Two models that fit one at a time, with 10 s turns.
fn turns() -> Settings {
    Settings { budget: 300 * MIB, quantum: Duration::from_secs(10), ..settings() }
}

fn closed(out: &[Effect], model: &str) -> bool {
    out.iter().any(|e| matches!(e, Effect::Close { model: m, .. } if m == model))
}

/// Carries out what a driver would for `out`: evictions happen and their workers exit,
/// spawned workers become ready, admitted requests are served at once. Returns the models
/// spawned.
fn settle(r: &mut Replay, out: Vec<Effect>) -> Vec<String> {
    let mut started = Vec::new();
    let mut pending = out;
    while !pending.is_empty() {
        let mut next = Vec::new();
        for e in pending {
            match e {
                Effect::Evict { model, gen, .. } => next.extend(r.feed(Input::Evicted { model, gen })),
                Effect::Drain { model, gen, .. } => {
                    next.extend(r.feed(Input::Exited { model, gen, reason: "exit status: 0".into() }))
                }
                Effect::Spawn { model, gen } => {
                    started.push(model.to_string());
                    next.extend(r.feed(Input::Ready { model, gen, memory_bytes: MIB }));
                }
                _ => {}
            }
        }
        pending = next;
    }
    started
}

#[test]
fn a_model_keeps_its_turn_serves_new_requests_then_yields() {
    let mut r = Replay::with(turns());
    let a = r.load(1, "a", 200);
    // b is wanted 1 s into a's turn: it waits for the turn's end, and nobody is asked to go.
    let out = r.at(1).demand(2, "b", 200);
    assert!(evicted(&out).is_empty() && !closed(&out, "a") && spawned(&out, "b").is_none(), "{out:?}");
    assert_eq!(r.s.next_deadline(), Some(r.t0 + Duration::from_secs(10)));
    // a's own requests keep coming and are served in its turn.
    assert_eq!(r.at(5).demand(3, "a", 200), vec![Effect::Admit { waiter: 3 }]);
    r.feed(Input::Busy { model: id("a"), gen: a });
    // The turn ends while a serves: it yields (no new requests, those in hand finish).
    let out = r.at(10).feed(Input::Tick);
    assert!(closed(&out, "a"), "{out:?}");
    assert!(r.at(11).demand(4, "a", 200).is_empty(), "a's next request waits for its next turn");
    let out = r.at(12).feed(Input::Idle { model: id("a"), gen: a });
    assert_eq!(settle(&mut r, out), vec!["b"]);
    let View::Ready(b) = r.view("b") else { panic!("b is not ready") };
    r.feed(Input::Busy { model: id("b"), gen: b });
    r.feed(Input::Idle { model: id("b"), gen: b });
    // b has its turn now: a waits for it to end (b ready at 12, so 22).
    assert_eq!(r.s.next_deadline(), Some(r.t0 + Duration::from_secs(22)));
    let out = r.at(22).feed(Input::Tick);
    assert_eq!(settle(&mut r, out), vec!["a"]);
}

#[test]
fn alternating_requests_swap_once_per_turn_not_once_per_request() {
    // A request a second, alternating between a and b, each served at once when its model is
    // ready, for 60 s: 59 alternations.
    let run = |quantum: u64| -> usize {
        let mut r = Replay::with(Settings { quantum: Duration::from_secs(quantum), ..turns() });
        let mut swaps = 0;
        for t in 0..60u64 {
            let model = if t % 2 == 0 { "a" } else { "b" };
            let out = r.at(t).demand(t + 1, model, 200);
            swaps += settle(&mut r, out).len();
            let out = r.feed(Input::Tick);
            swaps += settle(&mut r, out).len();
            // Whatever is ready serves its admitted requests at once.
            for m in ["a", "b"] {
                if let Some(View::Ready(gen)) = r.s.models.get(&id(m)).map(|e| e.view()) {
                    r.feed(Input::Busy { model: id(m), gen });
                    let out = r.feed(Input::Idle { model: id(m), gen });
                    swaps += settle(&mut r, out).len();
                }
            }
        }
        swaps
    };
    let (without, with) = (run(0), run(10));
    assert!(without >= 50, "without turns every alternation swaps: {without}");
    assert!(with <= 59 / 2, "with 10 s turns at most half the alternations swap: {with}");
    assert!(with >= 4, "both models still get turns: {with}");
}

#[test]
fn a_higher_priority_ends_a_turn_and_goes_before_earlier_lower_ones() {
    let mut r = Replay::with(turns());
    let a = r.load(1, "a", 200);
    r.feed(Input::Busy { model: id("a"), gen: a });
    let low = Demand { class: Priority::Low, ..r.wish(2, "low", 200) };
    assert!(r.at(1).feed(Input::Demand(low)).is_empty(), "a low model waits for a's turn");
    let high = Demand { class: Priority::High, ..r.wish(3, "high", 200) };
    let out = r.at(2).feed(Input::Demand(high));
    assert!(closed(&out, "a"), "a high one ends it: {out:?}");
    let out = r.at(3).feed(Input::Idle { model: id("a"), gen: a });
    assert_eq!(settle(&mut r, out), vec!["high"]);
}

#[test]
fn a_pinned_model_is_never_evicted() {
    let mut r = Replay::with(Settings { budget: 500 * MIB, idle_ttl: Some(Duration::from_secs(5)), ..turns() });
    let out = r.feed(Input::Demand(Demand { pinned: true, ..r.wish(1, "p", 200) }));
    let p = spawned(&out, "p").unwrap();
    r.ready("p", p);
    let a = r.load(2, "a", 300);
    // Idle past the TTL: a goes, p stays.
    assert_eq!(evicted(&r.at(5).feed(Input::Tick)), vec!["a"]);
    r.feed(Input::Evicted { model: id("a"), gen: a });
    r.feed(Input::Exited { model: id("a"), gen: a, reason: "exit status: 0".into() });
    // b needs what only p could free: refused (507), naming p, and p stays.
    let out = r.at(6).demand(3, "b", 400);
    match rejection(&out, 3) {
        Some(RegistryError::Pinned { by, room, .. }) => assert_eq!((by, room), (vec!["p".to_string()], 300 * MIB)),
        other => panic!("{other:?}"),
    }
    // p grows over the budget: nothing is evicted for it.
    r.feed(Input::Measured { model: id("p"), gen: p, bytes: 600 * MIB });
    assert!(evicted(&r.at(7).feed(Input::Tick)).is_empty());
    assert_eq!(r.view("p"), View::Ready(p));
}

#[test]
fn a_request_that_leaves_the_queue_never_loads_its_model() {
    let mut r = Replay::with(turns());
    let a = r.load(1, "a", 200);
    assert!(r.at(1).demand(2, "b", 200).is_empty());
    assert!(r.feed(Input::Leave { waiter: 2 }).is_empty());
    // a's turn ends with nobody waiting: a stays, b never starts.
    let out = r.at(10).feed(Input::Tick);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!((r.view("a"), r.view("b")), (View::Ready(a), View::Unloaded));
    assert_eq!(r.s.next_deadline(), None);
}

#[test]
fn a_full_queue_is_refused_with_the_time_until_the_turn_ends() {
    let mut r = Replay::with(turns());
    r.load(1, "a", 200);
    r.at(1);
    for w in 2..4 {
        assert!(r.feed(Input::Demand(Demand { room: 2, ..r.wish(w, "b", 200) })).is_empty());
    }
    let out = r.feed(Input::Demand(Demand { room: 2, ..r.wish(4, "b", 200) }));
    // 9 s of a's turn left, plus b's load (1 s when never measured).
    assert_eq!(rejection(&out, 4), Some(RegistryError::QueueFull { model: id("b"), retry_after: 10 }));
}

#[test]
fn a_request_with_somewhere_else_to_go_is_not_kept_waiting() {
    let mut r = Replay::with(turns());
    r.load(1, "a", 200);
    // b would need a swap: a request that can go elsewhere is told so at once.
    let out = r.feed(Input::Demand(Demand { pass: true, ..r.wish(2, "b", 200) }));
    assert_eq!(rejection(&out, 2), Some(RegistryError::WouldWait { model: id("b") }));
    assert!(spawned(&out, "b").is_none() && evicted(&out).is_empty());
    // c fits: it starts for it.
    let out = r.feed(Input::Demand(Demand { pass: true, ..r.wish(3, "c", 100) }));
    assert!(spawned(&out, "c").is_some(), "{out:?}");
}

#[test]
fn a_costly_swap_buys_a_longer_turn() {
    // No quantum: a turn lasts twice the time nobody could be served, from the eviction made
    // for it to its worker being ready; waiting for a's request to end does not count.
    let mut r = Replay::with(Settings { quantum: Duration::ZERO, ..turns() });
    let a = r.load(1, "a", 200);
    r.feed(Input::Busy { model: id("a"), gen: a });
    let out = r.at(1).demand(2, "b", 200);
    assert!(closed(&out, "a"), "no turn protects a: {out:?}");
    // a's request ends at 4; it is evicted and exits; b loads for 3 s.
    let out = r.at(4).feed(Input::Idle { model: id("a"), gen: a });
    assert_eq!(evicted(&out), vec!["a"]);
    r.feed(Input::Evicted { model: id("a"), gen: a });
    let out = r.feed(Input::Exited { model: id("a"), gen: a, reason: "exit status: 0".into() });
    let b = spawned(&out, "b").expect("b starts");
    let out = r.at(7).feed(Input::Ready { model: id("b"), gen: b, memory_bytes: MIB });
    assert!(out.contains(&Effect::Swapped { model: id("b"), took: Duration::from_secs(6) }), "{out:?}");
    r.feed(Input::Busy { model: id("b"), gen: b });
    r.feed(Input::Idle { model: id("b"), gen: b });
    // So b keeps its memory for 6 s against a's next request.
    assert!(r.at(8).demand(3, "a", 200).is_empty());
    assert_eq!(r.s.next_deadline(), Some(r.t0 + Duration::from_secs(13)));
    let out = r.at(13).feed(Input::Tick);
    assert_eq!(settle(&mut r, out), vec!["a"]);
}

#[test]
fn a_yield_nobody_needs_any_more_is_withdrawn() {
    let mut r = Replay::with(Settings { quantum: Duration::ZERO, ..turns() });
    let a = r.load(1, "a", 200);
    r.feed(Input::Busy { model: id("a"), gen: a });
    let out = r.at(1).demand(2, "b", 200);
    assert!(closed(&out, "a") && out.contains(&Effect::Prefetch { model: id("b") }), "{out:?}");
    // A request for a waits behind the yield.
    assert!(r.demand(3, "a", 200).is_empty());
    // b's client leaves: a takes requests again, and the one that waited is admitted.
    let out = r.at(2).feed(Input::Leave { waiter: 2 });
    assert!(out.contains(&Effect::Reopen { model: id("a"), gen: a }), "{out:?}");
    assert!(out.contains(&Effect::Admit { waiter: 3 }), "{out:?}");
    assert_eq!(r.view("a"), View::Ready(a));
    // b's abandoned swap is forgotten: wanted again much later, it is a new swap (prefetched
    // again), and its turn is not an hour long.
    let out = r.at(3600).demand(4, "b", 200);
    assert!(out.contains(&Effect::Prefetch { model: id("b") }), "{out:?}");
}

#[test]
fn a_passed_request_wishes_its_model_in_and_passing_needs_nobody_waiting() {
    let mut r = Replay::with(Settings { quantum: Duration::ZERO, ..turns() });
    r.load(1, "small", 200);
    // The chain's preferred model would need a swap: the request goes elsewhere, and the
    // model is wished for in its place, so it starts in its turn.
    r.at(1);
    let out = r.feed(Input::Demand(Demand { pass: true, ..r.wish(2, "big", 200) }));
    assert_eq!(rejection(&out, 2), Some(RegistryError::WouldWait { model: id("big") }));
    assert_eq!(evicted(&out), vec!["small"], "room is made for the wish: {out:?}");
    assert_eq!(settle(&mut r, out), vec!["big"]);
    // A model that fits but would start ahead of others waiting is not a pass target: with
    // c waiting for memory, d (which fits) is passed on.
    let mut r = Replay::with(Settings { budget: 500 * MIB, quantum: Duration::from_secs(30), ..turns() });
    let a = r.load(1, "a", 300);
    r.feed(Input::Busy { model: id("a"), gen: a });
    assert!(r.at(1).demand(2, "c", 300).is_empty(), "c waits for a's turn");
    let out = r.feed(Input::Demand(Demand { pass: true, ..r.wish(3, "d", 100) }));
    assert_eq!(rejection(&out, 3), Some(RegistryError::WouldWait { model: id("d") }));
}

#[test]
fn pinned_models_grown_over_the_budget_refuse_others_without_panicking() {
    let mut r = Replay::with(Settings { budget: 500 * MIB, ..turns() });
    let out = r.feed(Input::Demand(Demand { pinned: true, ..r.wish(1, "p", 200) }));
    let p = spawned(&out, "p").unwrap();
    r.ready("p", p);
    r.feed(Input::Measured { model: id("p"), gen: p, bytes: 600 * MIB });
    let out = r.at(1).demand(2, "b", 100);
    match rejection(&out, 2) {
        Some(RegistryError::Pinned { room, .. }) => assert_eq!(room, 0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_low_request_that_waited_half_its_time_goes_first() {
    // h runs a long turn; a low request waits from 0 (60 s at most). A high one comes at 29
    // and ends the turn; when h has gone at 30, the low request has waited half its time: it
    // counts as high and, waiting longest, goes first.
    let mut r = Replay::with(Settings { quantum: Duration::from_secs(60), ..turns() });
    let h = r.load(1, "h", 200);
    r.feed(Input::Busy { model: id("h"), gen: h });
    let low = Demand { class: Priority::Low, ..r.wish(2, "low", 200) };
    assert!(r.feed(Input::Demand(low)).is_empty(), "low waits for h's turn");
    r.at(29);
    let high = Demand { class: Priority::High, ..r.wish(3, "high", 200) };
    assert!(closed(&r.feed(Input::Demand(high)), "h"), "a high request ends the turn");
    let out = r.at(30).feed(Input::Idle { model: id("h"), gen: h });
    assert_eq!(settle(&mut r, out), vec!["low"], "low waited half its time");
}

#[test]
fn a_reload_pins_and_unpins_a_loaded_model() {
    let mut r = Replay::with(Settings { idle_ttl: Some(Duration::from_secs(5)), ..turns() });
    let a = r.load(1, "a", 100);
    r.feed(Input::Configure { model: id("a"), ttl: None, pinned: true });
    assert!(evicted(&r.at(10).feed(Input::Tick)).is_empty(), "pinned: past its ttl, kept");
    r.feed(Input::Configure { model: id("a"), ttl: None, pinned: false });
    assert_eq!(evicted(&r.at(11).feed(Input::Tick)), vec!["a"]);
    let _ = a;
}
