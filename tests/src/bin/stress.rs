//! The stress runs at full length: a soak under a budget that forces evictions, a fault run
//! killing workers under load, and SIGTERM under load. Prints one report line per run (and a
//! few examples of what went wrong), and exits 1 when a run broke its rules: the soak and the
//! fault run allow no refused, hung, lost, malformed or wrong request and only the clear errors
//! their rule accepts (`stress::rules`, printed); the soak's workers, read from `/proc`, stay
//! under the budget with at most one alive; the fault run ends with every model answering; the
//! SIGTERM run requires every request written before the signal to succeed, no refusal before
//! it, no hung, malformed or wrong request, exit 0 and no worker left.
//!
//! ```sh
//! cargo run --release -p model-bucket-tests --bin stress -- [--soak 600] [--faults 120] [--clients 8]   # 0 skips a run
//! ```

use model_bucket_tests::stress::{self, ErrorRule};
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
    provenance();
    let mut bad = false;
    if soak > 0 {
        let (r, evictions) = stress::soak(Duration::from_secs(soak), clients);
        println!("soak {soak} s, {clients} clients: {} | evictions {evictions} | {}", r.line(), ErrorRule::SOAK.line());
        examples(&r.samples);
        bad |= broken(r.broken(&ErrorRule::SOAK))
            || r.memory.max_alive > 1
            || r.budget == 0
            || r.memory.all_at_once() <= r.budget;
    }
    if faults > 0 {
        let (r, recovery) = stress::faults(Duration::from_secs(faults), clients, Duration::from_secs(5));
        println!(
            "faults {faults} s, a worker killed every 5 s: {} | {} | {}",
            r.line(),
            stress::recovery_line(&recovery),
            ErrorRule::FAULTS.line()
        );
        examples(&r.samples);
        bad |= broken(r.broken(&ErrorRule::FAULTS)) || recovery.iter().any(|(_, a)| a.is_err());
    }
    let s = stress::sigterm(Duration::from_secs(5), clients);
    let (r, a) = (&s.report, &s.around);
    println!(
        "sigterm after 5 s: {} | {} | {} | workers left {} | {}",
        r.line(),
        a.line(),
        s.status,
        s.alive.len(),
        ErrorRule::SIGTERM.line()
    );
    examples(&a.examples);
    bad |= broken(ErrorRule::SIGTERM.broken(r))
        || r.hung + r.malformed + r.wrong + a.unfinished_before + a.refused_before > 0
        || a.written_before == 0
        || !s.status.success()
        || !s.alive.is_empty();
    std::process::exit(if bad { 1 } else { 0 });
}

/// Where the figures come from: machine, date, commit, command.
fn provenance() {
    let out = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name"))?.split(':').nth(1).map(|c| c.trim().to_string()))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("machine: {cpu}, {cores} cores");
    println!("date: {}", out("date", &["-u", "+%Y-%m-%d %H:%M UTC"]));
    println!("commit: {}", out("git", &["rev-parse", "--short=12", "HEAD"]));
    println!("command: cargo run --release -p model-bucket-tests --bin stress -- {}", args.join(" "));
}

/// Prints what broke a run's rules; whether anything did.
fn broken(why: Vec<String>) -> bool {
    for w in &why {
        println!("  broken: {w}");
    }
    !why.is_empty()
}

fn examples(samples: &[String]) {
    for s in samples.iter().take(6) {
        println!("  e.g. {s}");
    }
}
