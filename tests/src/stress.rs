//! Load for the stress runs: client threads sending a mix of chat and text completions,
//! streamed and not, across models, each outcome classified; a sampler watching worker memory
//! against the budget; and faults (killing a random worker, SIGTERM to the server).
//!
//! The outcomes and their rules are in [`outcome`]: `succeeded`, `failed_clear` (an error
//! envelope or a stream error event), `refused` (no connection, or not one request byte taken),
//! `lost` (the request went out and no complete answer came back, whatever the cause), `hung`
//! (no answer within [`HangRule::answer_within`], or a stream under its floor for its limit)
//! and `malformed` (an answer that is neither a success nor the error envelope). The soak and
//! the fault run require 0 refused, 0 lost, 0 hung and 0 malformed; the SIGTERM run requires
//! every request written before the signal to succeed, and a refusal only after it.

mod client;
pub mod outcome;
mod report;

pub use client::Attempt;
pub use outcome::{HangRule, Outcome};
pub use report::{recovery_line, AroundSignal, Record, Recovery, Report};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long, once the kills stop, each model has to answer again: a restart waits out a backoff
/// of at most 30 s, then loads in a few seconds.
pub const RECOVERY_WITHIN: Duration = Duration::from_secs(60);

/// One request of the mix.
pub struct Shape {
    pub model: String,
    pub chat: bool,
    pub stream: bool,
    pub max_tokens: u32,
}

/// A deterministic mix: request `i` of client `c` over `models` (the first `chat_models` of
/// which take chat).
pub fn shape(i: u64, c: u64, models: &[String], chat_models: usize) -> Shape {
    let x = i.wrapping_mul(6364136223846793005).wrapping_add(c.wrapping_mul(1442695040888963407)) >> 33;
    let m = (x % models.len() as u64) as usize;
    Shape {
        model: models[m].clone(),
        chat: m < chat_models && !x.is_multiple_of(3),
        stream: x.is_multiple_of(2),
        max_tokens: 8 + (x % 40) as u32,
    }
}

/// Sends one request and classifies what came back.
pub fn send(port: u16, s: &Shape, rule: &HangRule) -> Attempt {
    if s.chat {
        let body = format!(
            r#"{{"model":"{}","messages":[{{"role":"user","content":"Tell me about the sea."}}],"max_tokens":{},"stream":{}}}"#,
            s.model, s.max_tokens, s.stream
        );
        client::post(port, "/v1/chat/completions", &body, rule)
    } else {
        let body = format!(
            r#"{{"model":"{}","prompt":"The sea is","max_tokens":{},"stream":{}}}"#,
            s.model, s.max_tokens, s.stream
        );
        client::post(port, "/v1/completions", &body, rule)
    }
}

/// The server's `/admin/workers`, parsed.
pub fn workers(port: u16) -> Option<serde_json::Value> {
    let c = crate::server::open(port, "GET", "/admin/workers", "", "", Some(Duration::from_secs(5))).ok()?;
    let (_, s) = crate::server::read_response(c).ok()?;
    serde_json::from_str(s.split_once("\r\n\r\n")?.1).ok()
}

/// The pids of the server's workers.
pub fn worker_pids(port: u16) -> Vec<u32> {
    workers(port)
        .map(|v| {
            v["workers"].as_array().into_iter().flatten().filter_map(|w| w["pid"].as_u64()).map(|p| p as u32).collect()
        })
        .unwrap_or_default()
}

/// What a run does.
pub struct Plan {
    pub port: u16,
    pub models: Vec<String>,
    /// How many of `models` (from the front) take chat requests.
    pub chat_models: usize,
    pub clients: u64,
    pub duration: Duration,
    /// Kill a random worker this often.
    pub kill_every: Option<Duration>,
    pub hang: HangRule,
}

impl Plan {
    /// The mix over both default models, under the default hang rule.
    pub fn mixed(port: u16, clients: u64, duration: Duration, kill_every: Option<Duration>) -> Plan {
        Plan { port, models: default_models(), chat_models: 1, clients, duration, kill_every, hang: HangRule::DEFAULT }
    }
}

/// Runs `plan`'s load until its duration has passed (or `stop` is set), then returns the report.
pub fn run(plan: &Plan, stop: Arc<AtomicBool>) -> Report {
    let report = Arc::new(Mutex::new(Report::default()));
    let deadline = Instant::now() + plan.duration;
    let max_rss = Arc::new(AtomicU64::new(0));
    let budget = Arc::new(AtomicU64::new(0));
    let kills = Arc::new(AtomicU64::new(0));
    std::thread::scope(|scope| {
        for c in 0..plan.clients {
            let (report, stop) = (report.clone(), stop.clone());
            scope.spawn(move || {
                let mut i = 0;
                while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
                    let s = shape(i, c, &plan.models, plan.chat_models);
                    let a = send(plan.port, &s, &plan.hang);
                    let o = a.outcome;
                    report.lock().unwrap().add(a);
                    i += 1;
                    // Back off after a refusal or an error, as a client honouring Retry-After would.
                    if matches!(o, Outcome::Refused | Outcome::FailedClear) {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            });
        }
        // Memory, against the budget.
        let (max_rss2, budget2, stop2) = (max_rss.clone(), budget.clone(), stop.clone());
        scope.spawn(move || {
            while Instant::now() < deadline && !stop2.load(Ordering::SeqCst) {
                if let Some(v) = workers(plan.port) {
                    let rss: u64 =
                        v["workers"].as_array().into_iter().flatten().filter_map(|w| w["memory_bytes"].as_u64()).sum();
                    max_rss2.fetch_max(rss, Ordering::Relaxed);
                    budget2.store(v["ram_budget_bytes"].as_u64().unwrap_or(0), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        if let Some(every) = plan.kill_every {
            let (kills, stop3) = (kills.clone(), stop.clone());
            scope.spawn(move || {
                let mut n = 0u64;
                while Instant::now() + every < deadline && !stop3.load(Ordering::SeqCst) {
                    std::thread::sleep(every);
                    let pids = worker_pids(plan.port);
                    if let Some(pid) = pids.get((n as usize) % pids.len().max(1)) {
                        // The worker may be gone already (a restart in between): not an error.
                        let _ = std::process::Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
                        kills.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                }
            });
        }
    });
    let mut r = std::mem::take(&mut *report.lock().unwrap());
    r.max_worker_rss = max_rss.load(Ordering::Relaxed);
    r.budget = budget.load(Ordering::Relaxed);
    r.kills = kills.load(Ordering::Relaxed);
    r
}

/// Whether `model` answers a short completion (a 200 with a finish reason) within `within`: the
/// wait until it did, or why not. A clear error (503 while it restarts) is retried after a
/// second; anything else (refused, lost, hung, malformed) ends the check at once.
pub fn answers(port: u16, model: &str, chat: bool, within: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let s = Shape { model: model.to_string(), chat, stream: false, max_tokens: 4 };
    loop {
        let a = send(port, &s, &HangRule::DEFAULT);
        match a.outcome {
            Outcome::Succeeded => return Ok(start.elapsed()),
            Outcome::FailedClear if start.elapsed() + Duration::from_secs(1) < within => {
                std::thread::sleep(Duration::from_secs(1))
            }
            o => return Err(format!("{o:?} after {:.1} s: {}", start.elapsed().as_secs_f64(), a.detail)),
        }
    }
}

/// The default models' IDs, SmolLM2 (chat) first.
pub fn default_models() -> Vec<String> {
    vec![crate::smol_id(), crate::gemma_id()]
}

fn bucket(both: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    crate::link_model(crate::SMOLLM2_FILE, dir.path(), crate::SMOLLM2_FILE);
    if both {
        crate::link_model(crate::GEMMA_FILE, dir.path(), crate::GEMMA_FILE);
    }
    dir
}

/// Mixed load on both default models under a budget that holds only one, so workers are
/// evicted and reloaded all along. Returns the report and the evictions the server counted.
pub fn soak(duration: Duration, clients: u64) -> (Report, u64) {
    let dir = bucket(true);
    let s = crate::Server::start(
        dir.path(),
        &["--ram-budget", "400MiB", "--ctx", "512", "--parallel", "2", "--queue-timeout", "45"],
    );
    let r = run(&Plan::mixed(s.port, clients, duration, None), Arc::new(AtomicBool::new(false)));
    let metrics = s.get("/metrics").map(|(_, b)| b).unwrap_or_default();
    let evictions = metrics
        .lines()
        .filter(|l| l.starts_with("model_bucket_evictions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    (r, evictions)
}

/// Mixed load on both default models while a worker is SIGKILLed every `kill_every`; once the
/// kills stop, every model must answer again within [`RECOVERY_WITHIN`]. The crash-loop limit
/// is lifted: these crashes are the point, not a model to give up on.
pub fn faults(duration: Duration, clients: u64, kill_every: Duration) -> (Report, Recovery) {
    let dir = bucket(true);
    // Restarts back off up to 30 s while the kills go on; a request waits at most 20 s for one
    // (then a clear 503), well inside the 60 s after which a client counts it as hung.
    let s = crate::Server::start(
        dir.path(),
        &["--ctx", "512", "--parallel", "2", "--crash-limit", "1000", "--load-wait", "20"],
    );
    let plan = Plan::mixed(s.port, clients, duration, Some(kill_every));
    let r = run(&plan, Arc::new(AtomicBool::new(false)));
    let recovery = plan
        .models
        .iter()
        .enumerate()
        .map(|(i, m)| (m.clone(), answers(s.port, m, i < plan.chat_models, RECOVERY_WITHIN)))
        .collect();
    (r, recovery)
}

/// What a SIGTERM run saw.
pub struct Sigterm {
    pub report: Report,
    pub around: AroundSignal,
    pub status: std::process::ExitStatus,
    /// Workers still alive after the server exited.
    pub alive: Vec<u32>,
}

/// Load on SmolLM2, then SIGTERM to the server after `after`: requests written before the
/// signal must finish, only a closed listener may refuse, the server must exit 0 and leave no
/// worker.
pub fn sigterm(after: Duration, clients: u64) -> Sigterm {
    let dir = bucket(false);
    let mut s = crate::Server::start(dir.path(), &["--ctx", "512", "--parallel", "4"]);
    let models = default_models()[..1].to_vec();
    // Load the worker first so that SIGTERM lands on requests in flight, not on a load.
    let _ =
        send(s.port, &Shape { model: models[0].clone(), chat: true, stream: false, max_tokens: 2 }, &HangRule::DEFAULT);
    let pids = worker_pids(s.port);
    let plan = Plan {
        port: s.port,
        models,
        chat_models: 1,
        clients,
        duration: after + Duration::from_secs(40),
        kill_every: None,
        hang: HangRule::DEFAULT,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let server_pid = s.child.id();
    let stopper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            let signal = Instant::now();
            crate::server::signal(server_pid, "TERM");
            // Clients keep trying for a moment after, then stop.
            std::thread::sleep(Duration::from_secs(2));
            stop.store(true, Ordering::SeqCst);
            signal
        })
    };
    let report = run(&plan, stop);
    let signal = stopper.join().expect("stopper");
    let status = s.child.wait().expect("server exit");
    let alive = pids.into_iter().filter(|p| crate::server::alive(*p)).collect();
    let around = AroundSignal::split(&report.records, signal);
    Sigterm { report, around, status, alive }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_covers_every_kind() {
        let models = vec!["a".to_string(), "b".to_string()];
        let shapes: Vec<Shape> = (0..64).map(|i| shape(i, 1, &models, 1)).collect();
        assert!(shapes.iter().any(|s| s.chat) && shapes.iter().any(|s| !s.chat));
        assert!(shapes.iter().any(|s| s.stream) && shapes.iter().any(|s| !s.stream));
        assert!(shapes.iter().any(|s| s.model == "b") && shapes.iter().all(|s| !s.chat || s.model == "a"));
    }
}
