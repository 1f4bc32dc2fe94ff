//! One case per rule of [`next`], and the order between rules.

use super::*;

const MIB: u64 = 1 << 20;

fn rules() -> Rules {
    Rules { sched: Sched::Turns, budget: 1000 * MIB, quantum: Duration::from_secs(10), aging: Duration::from_secs(20) }
}

struct At {
    t0: Instant,
}

impl At {
    fn new() -> At {
        At { t0: Instant::now() }
    }
    fn s(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }
}

fn waiting(id: &str, mib: u64, since: Instant) -> Waiting {
    Waiting { id: id.into(), need: mib * MIB, class: Priority::Normal, since, pinned: false }
}

/// A ready model holding `mib`, idle, whose 10 s turn ends at `turn_ends`.
fn holding(id: &str, mib: u64, turn_ends: Option<Instant>, last_used: Instant) -> Holding {
    Holding {
        id: id.into(),
        bytes: mib * MIB,
        held: false,
        evictable: true,
        leaving: false,
        trimmable: 0,
        pinned: false,
        class: Priority::Normal,
        turn_ends,
        turn: Duration::from_secs(10),
        last_used,
    }
}

fn make_room(model: &str, evict: &[&str], yielders: &[&str]) -> Next {
    Next::MakeRoom {
        model: model.into(),
        evict: evict.iter().map(|s| s.to_string()).collect(),
        yielders: yielders.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn nothing_waits_or_the_head_fits() {
    let at = At::new();
    assert_eq!(next(at.s(0), &rules(), &[], &[holding("a", 900, None, at.s(0))]), Next::Nothing);
    let w = [waiting("b", 100, at.s(0))];
    assert_eq!(next(at.s(1), &rules(), &w, &[holding("a", 900, None, at.s(0))]), Next::Start("b".into()));
}

#[test]
fn evictable_memory_is_shrunk_before_anyone_is_evicted() {
    let at = At::new();
    // a holds 700 MiB, 250 of them its prompt cache; b needs 500 of the 1000.
    let a = Holding { trimmable: 250 * MIB, ..holding("a", 700, None, at.s(0)) };
    let w = [waiting("b", 500, at.s(1))];
    assert_eq!(
        next(at.s(2), &rules(), &w, std::slice::from_ref(&a)),
        Next::Trim { model: "b".into(), short: 200 * MIB }
    );
    // Busy or in its turn, it is shrunk all the same: nothing it runs is cut.
    let busy = Holding { held: true, turn_ends: Some(at.s(30)), ..a.clone() };
    assert_eq!(next(at.s(2), &rules(), &w, &[busy]), Next::Trim { model: "b".into(), short: 200 * MIB });
    // What is leaving already is waited for first.
    let leaving = Holding { leaving: true, ..holding("c", 400, None, at.s(0)) };
    let a500 = Holding { bytes: 500 * MIB, ..a.clone() };
    assert_eq!(next(at.s(2), &rules(), &w, &[a500, leaving]), Next::Wait { model: "b".into(), until: None });
    // Not enough to shrink: a is evicted whole, its cache with it.
    let small = Holding { trimmable: 100 * MIB, ..a };
    assert_eq!(next(at.s(2), &rules(), &w, &[small]), make_room("b", &["a"], &[]));
}

#[test]
fn models_go_only_for_what_shrinking_the_others_cannot_free() {
    let at = At::new();
    // 900 of 1000 held; c can shrink by 150. d needs 350: 250 short, 100 after c shrinks.
    let a = holding("a", 200, None, at.s(0));
    let b = holding("b", 300, None, at.s(1));
    let c = Holding { trimmable: 150 * MIB, ..holding("c", 400, None, at.s(2)) };
    let w = [waiting("d", 350, at.s(3))];
    assert_eq!(next(at.s(4), &rules(), &w, &[a, b, c]), make_room("d", &["a"], &[]));
}

#[test]
fn a_pinned_models_evictable_memory_makes_room_too() {
    let at = At::new();
    let p = Holding { pinned: true, trimmable: 300 * MIB, ..holding("p", 700, None, at.s(0)) };
    let w = [waiting("w", 500, at.s(1))];
    assert_eq!(next(at.s(2), &rules(), &w, &[p]), Next::Trim { model: "w".into(), short: 200 * MIB });
}

#[test]
fn a_model_in_its_turn_keeps_its_memory_then_yields() {
    // Batching: a was swapped in at 0 with a 10 s turn; b waits from 2 s.
    let at = At::new();
    let a = holding("a", 600, Some(at.s(10)), at.s(3));
    let w = [waiting("b", 600, at.s(2))];
    // During the turn, idle or busy, a stays; b waits until the turn ends.
    assert_eq!(
        next(at.s(4), &rules(), &w, std::slice::from_ref(&a)),
        Next::Wait { model: "b".into(), until: Some(at.s(10)) }
    );
    let busy = Holding { held: true, ..a.clone() };
    assert_eq!(
        next(at.s(4), &rules(), &w, std::slice::from_ref(&busy)),
        Next::Wait { model: "b".into(), until: Some(at.s(10)) }
    );
    // After it: an idle a is evicted, a busy one yields (finishes, then goes).
    assert_eq!(next(at.s(10), &rules(), &w, &[a]), make_room("b", &["a"], &[]));
    assert_eq!(next(at.s(10), &rules(), &w, &[busy]), make_room("b", &[], &["a"]));
}

#[test]
fn a_request_that_waited_twice_the_turn_ends_it_early() {
    // a runs an 8 s turn that still has 30 s to go (it began late); b has waited since 0.
    // At 16 s, twice the turn, b ends it (before its 20 s aging, which orders waiting models).
    let at = At::new();
    let a = Holding { turn: Duration::from_secs(8), ..holding("a", 600, Some(at.s(45)), at.s(14)) };
    let w = [waiting("b", 600, at.s(0))];
    assert_eq!(
        next(at.s(15), &rules(), &w, std::slice::from_ref(&a)),
        Next::Wait { model: "b".into(), until: Some(at.s(16)) }
    );
    assert_eq!(next(at.s(16), &rules(), &w, &[a]), make_room("b", &["a"], &[]));
}

#[test]
fn a_higher_class_goes_first_and_ends_a_lower_turn() {
    let at = At::new();
    // Two models wait; the high one came later but goes first.
    let w = [waiting("low", 100, at.s(0)), Waiting { class: Priority::High, ..waiting("high", 100, at.s(5)) }];
    assert_eq!(next(at.s(6), &rules(), &w, &[]), Next::Start("high".into()));
    // A normal model in its turn gives way to a high one at once, not to a low one.
    let a = holding("a", 600, Some(at.s(60)), at.s(5));
    let high = [Waiting { class: Priority::High, ..waiting("h", 600, at.s(5)) }];
    assert_eq!(next(at.s(6), &rules(), &high, std::slice::from_ref(&a)), make_room("h", &["a"], &[]));
    let low = [Waiting { class: Priority::Low, ..waiting("l", 600, at.s(5)) }];
    assert!(matches!(next(at.s(6), &rules(), &low, std::slice::from_ref(&a)), Next::Wait { .. }));
    // A high turn is not ended by a normal model.
    let high_turn = Holding { class: Priority::High, ..a };
    assert!(matches!(next(at.s(6), &rules(), &[waiting("n", 600, at.s(5))], &[high_turn]), Next::Wait { .. }));
}

#[test]
fn pinned_models_are_never_moved_and_never_wait_for_a_turn() {
    let at = At::new();
    let pinned = Holding { pinned: true, ..holding("embed", 300, None, at.s(0)) };
    let a = holding("a", 600, Some(at.s(60)), at.s(1));
    // b needs 600: only a can make room (the pinned one is never evicted, idle as it is).
    let w = [Waiting { class: Priority::High, ..waiting("b", 600, at.s(1)) }];
    assert_eq!(next(at.s(2), &rules(), &w, &[pinned.clone(), a.clone()]), make_room("b", &["a"], &[]));
    // A pinned model that must start ends any turn.
    let w = [Waiting { pinned: true, ..waiting("p", 500, at.s(1)) }];
    assert_eq!(next(at.s(2), &rules(), &w, &[a]), make_room("p", &["a"], &[]));
    // What does not fit beside the pinned ones is refused, naming them.
    let w = [waiting("big", 800, at.s(1))];
    assert_eq!(
        next(at.s(2), &rules(), &w, &[pinned]),
        Next::Refuse { model: "big".into(), why: Refusal::Pinned { by: vec!["embed".into()], room: 700 * MIB } }
    );
    assert_eq!(
        next(at.s(2), &rules(), &[waiting("huge", 1001, at.s(1))], &[]),
        Next::Refuse { model: "huge".into(), why: Refusal::TooLarge }
    );
}

#[test]
fn fewest_swaps_a_model_that_fits_goes_before_one_that_needs_a_swap() {
    let at = At::new();
    let a = holding("a", 600, None, at.s(0));
    // big came first but needs a swap; small fits beside a.
    let w = [waiting("big", 600, at.s(1)), waiting("small", 300, at.s(2))];
    assert_eq!(next(at.s(3), &rules(), &w, std::slice::from_ref(&a)), Next::Start("small".into()));
    // Unless big has aged.
    assert_eq!(next(at.s(21), &rules(), &w, &[a]), make_room("big", &["a"], &[]));
}

#[test]
fn least_recently_used_go_first_idle_before_busy_and_leaving_counts_as_gone() {
    let at = At::new();
    let old = holding("old", 300, None, at.s(1));
    let recent = holding("recent", 300, None, at.s(5));
    let busy = Holding { held: true, ..holding("busy", 300, None, at.s(0)) };
    // 900 of 1000 held; 400 more: one must go, the least recently used idle one.
    let w = [waiting("n", 400, at.s(6))];
    assert_eq!(
        next(at.s(7), &rules(), &w, &[recent.clone(), old.clone(), busy.clone()]),
        make_room("n", &["old"], &[])
    );
    // 700 more: both idle ones, then the busy one yields.
    let w = [waiting("n", 700, at.s(6))];
    assert_eq!(
        next(at.s(7), &rules(), &w, &[recent.clone(), old, busy.clone()]),
        make_room("n", &["old", "recent"], &[])
    );
    let w = [waiting("n", 900, at.s(6))];
    let all = [holding("old", 300, None, at.s(1)), recent.clone(), busy.clone()];
    assert_eq!(next(at.s(7), &rules(), &w, &all), make_room("n", &["old", "recent"], &["busy"]));
    // Something already leaving is waited for, not joined by more.
    let leaving = Holding { leaving: true, evictable: false, ..holding("going", 600, None, at.s(0)) };
    let w = [waiting("n", 500, at.s(6))];
    assert_eq!(next(at.s(7), &rules(), &w, &[leaving, recent]), Next::Wait { model: "n".into(), until: None });
}

#[test]
fn loading_models_are_waited_for() {
    let at = At::new();
    let loading = Holding { evictable: false, held: true, ..holding("loading", 800, None, at.s(0)) };
    let w = [waiting("n", 400, at.s(1))];
    // No turn to wait for: the head waits until it ages (then nothing changes: a load ends
    // with a fact).
    assert_eq!(next(at.s(2), &rules(), &w, &[loading]), Next::Wait { model: "n".into(), until: Some(at.s(21)) });
}

#[test]
fn fifo_takes_arrival_order_and_knows_no_turns() {
    let at = At::new();
    let fifo = Rules { sched: Sched::Fifo, ..rules() };
    let a = holding("a", 600, Some(at.s(60)), at.s(0));
    let w = [waiting("big", 600, at.s(1)), Waiting { class: Priority::High, ..waiting("small", 300, at.s(2)) }];
    assert_eq!(next(at.s(3), &fifo, &w, &[a]), make_room("big", &["a"], &[]));
}
