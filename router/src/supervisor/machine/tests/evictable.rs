//! Evictable memory (prompt caches, embedding contexts) counts for what workers hold, and is
//! shrunk before anyone is evicted.

use super::*;

fn allowed(out: &[Effect], model: &str) -> Option<u64> {
    out.iter().find_map(|e| match e {
        Effect::Allow { model: m, bytes, .. } if m == model => Some(*bytes / MIB),
        _ => None,
    })
}

impl Replay {
    /// Loads `model` (needing `need`, with `spare` of evictable memory at most) for request
    /// `waiter` and returns its generation and the effects of its ready.
    fn load_spare(&mut self, waiter: WaiterId, model: &str, need: u64, spare: u64) -> (Gen, Vec<Effect>) {
        let d = Demand { spare: spare * MIB, ..self.wish(waiter, model, need) };
        let out = self.feed(Input::Demand(d));
        let gen = spawned(&out, model).unwrap_or_else(|| panic!("{model} not spawned: {out:?}"));
        let out = self.feed(Input::Ready { model: id(model), gen, memory_bytes: need * MIB });
        assert!(out.contains(&Effect::Admit { waiter }), "{out:?}");
        (gen, out)
    }

    fn held(&mut self, model: &str, gen: Gen, mib: u64) -> Vec<Effect> {
        self.feed(Input::Held { model: id(model), gen, cache: mib * MIB, embed: 0, rss: None })
    }
}

#[test]
fn a_cache_shrinks_to_make_room_and_nobody_is_evicted() {
    let mut r = Replay::new();
    // a needs 500 of the 1000 and may cache 400: it is allowed all of it, as there is room.
    let (a, out) = r.load_spare(1, "a", 500, 400);
    assert_eq!(allowed(&out, "a"), Some(400));
    // It fills 300 of it: counted 800.
    assert!(allowed(&r.held("a", a, 300), "a").is_none(), "nothing changes for it");
    assert_eq!(r.s.reserved(), 800 * MIB);
    // b needs 400: a's cache gives up 200 instead of a going.
    let out = r.at(1).demand(2, "b", 400);
    assert_eq!((allowed(&out, "a"), evicted(&out), spawned(&out, "b")), (Some(100), vec![], None), "{out:?}");
    // Until a reports it dropped them, nothing more is asked.
    assert!(r.at(2).feed(Input::Tick).iter().all(|e| !matches!(e, Effect::Allow { .. } | Effect::Evict { .. })));
    let out = r.held("a", a, 100);
    assert!(spawned(&out, "b").is_some() && evicted(&out).is_empty(), "{out:?}");
    assert_eq!(r.view("a"), View::Ready(a), "a keeps serving");
    assert_eq!(r.s.reserved(), 1000 * MIB);
}

#[test]
fn growth_over_the_budget_shrinks_caches_before_evicting() {
    let mut r = Replay::new();
    let (a, _) = r.load_spare(1, "a", 300, 400);
    let (b, out) = r.at(1).load_spare(2, "b", 300, 400);
    // 400 left to share: 200 each.
    assert_eq!((allowed(&out, "a"), allowed(&out, "b")), (Some(200), Some(200)), "{out:?}");
    r.held("a", a, 200);
    r.held("b", b, 150);
    assert_eq!(r.s.reserved(), 950 * MIB);
    // b's resident memory grows past what was counted: 500 + 600 > 1000. The caches shrink,
    // the least recently used (a's) first: nobody is evicted.
    let out = r.at(3).feed(Input::Measured { model: id("b"), gen: b, bytes: 600 * MIB });
    assert!(evicted(&out).is_empty(), "{out:?}");
    assert_eq!(allowed(&out, "a"), Some(100), "{out:?}");
    r.held("a", a, 100);
    assert_eq!(r.s.reserved(), 1000 * MIB);
    // Growth that shrinking cannot cover evicts the idle worker at the next tick, as before;
    // no cache is cut for what its going frees.
    let out = r.at(4).feed(Input::Measured { model: id("b"), gen: b, bytes: 900 * MIB });
    assert!(out.iter().all(|e| !matches!(e, Effect::Allow { .. })), "{out:?}");
    let out = r.feed(Input::Tick);
    assert_eq!(evicted(&out), vec!["a".to_string()], "{out:?}");
    assert!(out.iter().all(|e| !matches!(e, Effect::Allow { .. })), "{out:?}");
}

#[test]
fn a_worker_that_does_not_shrink_in_time_is_evicted_instead() {
    let mut r = Replay::new();
    let (a, _) = r.load_spare(1, "a", 500, 400);
    r.held("a", a, 300);
    let out = r.at(1).demand(2, "b", 400);
    assert_eq!(allowed(&out, "a"), Some(100), "{out:?}");
    // It does not answer (an embeddings request under way, or it does not listen): the
    // supervisor looks again when its time is up, and makes room the other way.
    assert_eq!(r.s.next_deadline(), Some(r.t0 + Duration::from_secs(3)));
    assert!(evicted(&r.at(2).feed(Input::Tick)).is_empty());
    let out = r.at(3).feed(Input::Tick);
    assert_eq!(evicted(&out), vec!["a".to_string()], "{out:?}");
}

#[test]
fn what_a_worker_says_it_holds_is_bounded_and_only_its_own_generation_counts() {
    let mut r = Replay::new();
    let (a, _) = r.load_spare(1, "a", 500, 400);
    // More than it may hold counts as what it may hold, and nothing overflows.
    r.feed(Input::Held { model: id("a"), gen: a, cache: u64::MAX, embed: u64::MAX, rss: None });
    assert_eq!(r.s.reserved(), 900 * MIB);
    // A report from an earlier process changes nothing.
    r.held("a", a, 100);
    r.held("a", a + 7, 350);
    assert_eq!(r.s.reserved(), 600 * MIB);
    // The resident memory read with a report counts; what is evictable is part of it.
    r.feed(Input::Held { model: id("a"), gen: a, cache: 100 * MIB, embed: 0, rss: Some(700 * MIB) });
    assert_eq!(r.s.reserved(), 700 * MIB);
    r.held("a", a, 150);
    assert_eq!(r.s.reserved(), 750 * MIB, "growth shows at once, whatever was measured");
}
