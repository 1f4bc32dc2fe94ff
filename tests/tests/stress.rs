//! The short stress runs (the long ones: `cargo run --release -p model-bucket-tests --bin
//! stress`): a soak under a budget that forces evictions, workers killed under load, and
//! SIGTERM under load. Every request ends in a verified answer (free text: exactly its
//! `max_tokens`, EOS banned; JSON: an object that parses) or a clear error of a kind the run
//! accepts, within the run's share (`stress::rules`); none is refused, hung, lost, malformed or
//! wrong (see `stress::outcome`). Worker memory, read from `/proc`, never goes over a budget
//! below what both models hold together, and at most one worker is alive at a time; after the
//! kills, every model answers; under SIGTERM, every request written before the signal finishes
//! and only a closed listener refuses.

use model_bucket_tests::stress::{self, ErrorRule};
use std::time::Duration;

#[test]
fn soak_with_evictions() {
    let (r, evictions) = stress::soak(Duration::from_secs(30), 4);
    eprintln!("soak: {} | evictions {evictions} | {}", r.line(), ErrorRule::SOAK.line());
    assert!(r.broken(&ErrorRule::SOAK).is_empty(), "{:?}\n{}\n{:#?}", r.broken(&ErrorRule::SOAK), r.line(), r.samples);
    assert!(r.succeeded > 10, "{}", r.line());
    assert!(evictions >= 2, "the budget forced evictions: {evictions}");
    // The budget cannot hold both workers as they are: the memory check can fail.
    assert_eq!(r.budget, 400 << 20, "the budget was read");
    assert_eq!(r.memory.max_by_model.len(), 2, "{:?}", r.memory);
    assert!(r.memory.all_at_once() > r.budget, "{}", r.line());
    assert_eq!(r.memory.max_alive, 1, "{}", r.line());
}

#[test]
fn workers_killed_under_load() {
    let (r, recovery) = stress::faults(Duration::from_secs(24), 4, Duration::from_secs(4));
    eprintln!("faults: {} | {} | {}", r.line(), stress::recovery_line(&recovery), ErrorRule::FAULTS.line());
    assert!(
        r.broken(&ErrorRule::FAULTS).is_empty(),
        "{:?}\n{}\n{:#?}",
        r.broken(&ErrorRule::FAULTS),
        r.line(),
        r.samples
    );
    assert!(r.kills >= 3, "{}", r.line());
    assert!(r.succeeded > 10, "{}", r.line());
    assert!(recovery.iter().all(|(_, a)| a.is_ok()), "{}", stress::recovery_line(&recovery));
}

#[test]
fn sigterm_under_load() {
    let s = stress::sigterm(Duration::from_secs(4), 4);
    let (r, a) = (&s.report, &s.around);
    eprintln!("sigterm: {} | {} | {}", r.line(), a.line(), ErrorRule::SIGTERM.line());
    assert_eq!((r.hung, r.malformed, r.wrong), (0, 0, 0), "{}\n{:#?}", r.line(), r.samples);
    assert!(ErrorRule::SIGTERM.broken(r).is_empty(), "{:?}\n{}", ErrorRule::SIGTERM.broken(r), r.line());
    assert!(a.written_before > 0, "{}", a.line());
    assert_eq!((a.unfinished_before, a.refused_before), (0, 0), "{}\n{:#?}", a.line(), a.examples);
    assert!(s.status.success(), "the server exits 0: {}", s.status);
    assert!(s.alive.is_empty(), "workers left: {:?}", s.alive);
}
