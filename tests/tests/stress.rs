//! The short stress runs (the long ones: `cargo run --release -p model-bucket-tests --bin
//! stress`): a soak under a budget that forces evictions, workers killed under load, and
//! SIGTERM under load. Every request ends in an answer or a clear error: none is refused, hung,
//! lost or malformed (see `stress::outcome` for what each means), and worker memory never goes
//! over the budget; after the kills, every model answers; under SIGTERM, every request written
//! before the signal finishes and only a closed listener refuses.

use model_bucket_tests::stress;
use std::time::Duration;

#[test]
fn soak_with_evictions() {
    let (r, evictions) = stress::soak(Duration::from_secs(30), 4);
    eprintln!("soak: {} | evictions {evictions}", r.line());
    assert_eq!((r.refused, r.hung, r.lost, r.malformed), (0, 0, 0, 0), "{}\n{:#?}", r.line(), r.samples);
    assert!(r.succeeded > 10, "{}", r.line());
    assert!(evictions >= 2, "the budget forced evictions: {evictions}");
    assert!(r.max_worker_rss <= r.budget, "{}", r.line());
}

#[test]
fn workers_killed_under_load() {
    let (r, recovery) = stress::faults(Duration::from_secs(24), 4, Duration::from_secs(4));
    eprintln!("faults: {} | {}", r.line(), stress::recovery_line(&recovery));
    assert_eq!((r.refused, r.hung, r.lost, r.malformed), (0, 0, 0, 0), "{}\n{:#?}", r.line(), r.samples);
    assert!(r.kills >= 3, "{}", r.line());
    assert!(r.succeeded > 10, "{}", r.line());
    assert!(recovery.iter().all(|(_, a)| a.is_ok()), "{}", stress::recovery_line(&recovery));
}

#[test]
fn sigterm_under_load() {
    let s = stress::sigterm(Duration::from_secs(4), 4);
    let (r, a) = (&s.report, &s.around);
    eprintln!("sigterm: {} | {}", r.line(), a.line());
    assert_eq!((r.hung, r.malformed), (0, 0), "{}\n{:#?}", r.line(), r.samples);
    assert!(a.written_before > 0, "{}", a.line());
    assert_eq!((a.unfinished_before, a.refused_before), (0, 0), "{}\n{:#?}", a.line(), a.examples);
    assert!(s.status.success(), "the server exits 0: {}", s.status);
    assert!(s.alive.is_empty(), "workers left: {:?}", s.alive);
}
