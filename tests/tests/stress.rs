//! The short stress runs (the long ones: `cargo run --release -p model-bucket-tests --bin
//! stress`): a soak under a budget that forces evictions, workers killed under load, and
//! SIGTERM under load. Every request ends in an answer or a clear error: none hangs, none is
//! lost, and worker memory never goes over the budget.

use model_bucket_tests::stress;
use std::time::Duration;

#[test]
fn soak_with_evictions() {
    let (r, evictions) = stress::soak(Duration::from_secs(30), 4);
    eprintln!("soak: {} | evictions {evictions}", r.line());
    assert_eq!((r.hung, r.lost), (0, 0), "{:#?}", r.samples);
    assert!(r.succeeded > 10, "{}", r.line());
    assert!(evictions >= 2, "the budget forced evictions: {evictions}");
    assert!(r.max_worker_rss <= r.budget, "{}", r.line());
}

#[test]
fn workers_killed_under_load() {
    let r = stress::faults(Duration::from_secs(24), 4, Duration::from_secs(4));
    eprintln!("faults: {}", r.line());
    assert_eq!((r.hung, r.lost), (0, 0), "{:#?}", r.samples);
    assert!(r.kills >= 3, "{}", r.line());
    assert!(r.succeeded > 10, "{}", r.line());
}

#[test]
fn sigterm_under_load() {
    let (r, status, alive) = stress::sigterm(Duration::from_secs(4), 4);
    eprintln!("sigterm: {}", r.line());
    assert_eq!((r.hung, r.lost), (0, 0), "{:#?}", r.samples);
    assert!(r.succeeded > 0, "{}", r.line());
    assert!(status.success(), "the server exits 0: {status}");
    assert!(alive.is_empty(), "workers left: {alive:?}");
}
