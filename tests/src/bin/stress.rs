//! The stress runs at full length: a soak under a budget that forces evictions, a fault run
//! killing workers under load, and SIGTERM under load. Prints one report line per run.
//!
//! ```sh
//! cargo run --release -p model-bucket-tests --bin stress -- [--soak 600] [--faults 120] [--clients 8]   # 0 skips a run
//! ```

use model_bucket_tests::stress;
use std::time::Duration;

fn main() {
    let (mut soak, mut faults, mut clients) = (600u64, 120u64, 8u64);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().and_then(|v| v.parse().ok()).expect("a number");
        match a.as_str() {
            "--soak" => soak = val(),
            "--faults" => faults = val(),
            "--clients" => clients = val(),
            other => panic!("unknown argument {other}"),
        }
    }
    let mut bad = false;
    if soak > 0 {
        let (r, evictions) = stress::soak(Duration::from_secs(soak), clients);
        println!("soak {soak} s, {clients} clients: {} | evictions {evictions}", r.line());
        bad |= r.hung + r.lost > 0 || r.max_worker_rss > r.budget;
    }
    if faults > 0 {
        let r = stress::faults(Duration::from_secs(faults), clients, Duration::from_secs(5));
        println!("faults {faults} s, a worker killed every 5 s: {}", r.line());
        bad |= r.hung + r.lost > 0;
    }
    let (r, status, alive) = stress::sigterm(Duration::from_secs(5), clients);
    println!("sigterm after 5 s: {} | exit {status} | workers left {}", r.line(), alive.len());
    bad |= r.hung + r.lost > 0 || !status.success() || !alive.is_empty();
    for s in r.samples.iter().take(3) {
        println!("  e.g. {s}");
    }
    std::process::exit(if bad { 1 } else { 0 });
}
