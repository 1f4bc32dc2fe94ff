//! Load for the stress runs: client threads sending a mix of chat and text completions,
//! streamed and not, across models, each outcome classified; a sampler watching worker memory
//! against the budget; and faults (killing a random worker, SIGTERM to the server).
//!
//! Outcomes: `succeeded` (a full answer), `failed_clear` (an OpenAI error envelope, or a stream
//! that ends with an error event and `[DONE]`), `refused` (no connection: the server was
//! stopping), `hung` (no byte for `hang_after`) and `lost` (accepted, then cut off without an
//! answer or an error). A healthy server has 0 hung and 0 lost.

use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    FailedClear,
    Refused,
    Hung,
    Lost,
}

/// Counts of each outcome, and what was seen of memory.
#[derive(Debug, Default)]
pub struct Report {
    pub sent: u64,
    pub succeeded: u64,
    pub failed_clear: u64,
    pub refused: u64,
    pub hung: u64,
    pub lost: u64,
    /// Largest sum of worker resident memory seen, in bytes.
    pub max_worker_rss: u64,
    pub budget: u64,
    /// Workers killed by the fault injector.
    pub kills: u64,
    /// Examples of failures, for the report.
    pub samples: Vec<String>,
}

impl Report {
    fn add(&mut self, o: Outcome, detail: &str) {
        self.sent += 1;
        match o {
            Outcome::Succeeded => self.succeeded += 1,
            Outcome::FailedClear => self.failed_clear += 1,
            Outcome::Refused => self.refused += 1,
            Outcome::Hung => self.hung += 1,
            Outcome::Lost => self.lost += 1,
        }
        if !matches!(o, Outcome::Succeeded) && self.samples.len() < 8 {
            self.samples.push(format!("{o:?}: {}", detail.chars().take(300).collect::<String>()));
        }
    }

    pub fn line(&self) -> String {
        format!(
            "sent {} | succeeded {} | failed with a clear error {} | refused while stopping {} | hung {} | lost {} | max worker memory {} MiB of {} MiB budget | workers killed {}",
            self.sent,
            self.succeeded,
            self.failed_clear,
            self.refused,
            self.hung,
            self.lost,
            self.max_worker_rss >> 20,
            self.budget >> 20,
            self.kills
        )
    }
}

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
pub fn send(port: u16, s: &Shape, hang_after: Duration) -> (Outcome, String) {
    let (path, body) = if s.chat {
        (
            "/v1/chat/completions",
            format!(
                r#"{{"model":"{}","messages":[{{"role":"user","content":"Tell me about the sea."}}],"max_tokens":{},"stream":{}}}"#,
                s.model, s.max_tokens, s.stream
            ),
        )
    } else {
        (
            "/v1/completions",
            format!(
                r#"{{"model":"{}","prompt":"The sea is","max_tokens":{},"stream":{}}}"#,
                s.model, s.max_tokens, s.stream
            ),
        )
    };
    // A connection or a request the server does not take: it was stopping.
    let c = match crate::server::open(port, "POST", path, "", &body, Some(hang_after)) {
        Ok(c) => c,
        Err(e) => return (Outcome::Refused, e.to_string()),
    };
    let mut r = BufReader::new(c);
    let mut status_line = String::new();
    match r.read_line(&mut status_line) {
        // The server never took the request (it was closing its listener): nothing was lost.
        Ok(0) => return (Outcome::Refused, "closed before a status line".into()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            return (Outcome::Refused, "reset before a status line".into())
        }
        Ok(_) => {}
        Err(e) if is_timeout(&e) => return (Outcome::Hung, "no status line".into()),
        Err(e) => return (Outcome::Lost, format!("reading the status: {e}")),
    }
    let status: u16 = status_line.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut rest = Vec::new();
    let read = r.read_to_end(&mut rest);
    let text = String::from_utf8_lossy(&rest).into_owned();
    if let Err(e) = read {
        return if is_timeout(&e) { (Outcome::Hung, text) } else { (Outcome::Lost, format!("{e}: {text}")) };
    }
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    classify(status, s.stream, body)
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

/// What a complete response means.
pub fn classify(status: u16, stream: bool, body: &str) -> (Outcome, String) {
    if status != 200 {
        let clear = body.contains("\"error\"") && body.contains("\"message\"");
        return (if clear { Outcome::FailedClear } else { Outcome::Lost }, format!("{status} {body}"));
    }
    if !stream {
        let ok = body.contains("\"choices\"") && body.contains("\"finish_reason\"");
        return (if ok { Outcome::Succeeded } else { Outcome::Lost }, body.to_string());
    }
    let done = body.contains("data: [DONE]");
    let error = body.lines().any(|l| l.starts_with("data: {\"error\""));
    match (done, error) {
        (true, false) if body.contains("\"finish_reason\":\"") => (Outcome::Succeeded, String::new()),
        (true, true) => {
            (Outcome::FailedClear, body.lines().find(|l| l.contains("\"error\"")).unwrap_or("").to_string())
        }
        _ => (Outcome::Lost, format!("stream cut off: ...{}", &body[body.len().saturating_sub(200)..])),
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
    pub hang_after: Duration,
}

impl Plan {
    /// The mix over both default models, hung after 60 s without a byte.
    pub fn mixed(port: u16, clients: u64, duration: Duration, kill_every: Option<Duration>) -> Plan {
        Plan {
            port,
            models: default_models(),
            chat_models: 1,
            clients,
            duration,
            kill_every,
            hang_after: Duration::from_secs(60),
        }
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
                    let (o, detail) = send(plan.port, &s, plan.hang_after);
                    report.lock().unwrap().add(o, &detail);
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
        &["--ram-budget", "480MiB", "--ctx", "512", "--parallel", "2", "--evict-wait", "5"],
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

/// Mixed load on both default models while a worker is SIGKILLed every `kill_every`. The
/// crash-loop limit is lifted: these crashes are the point, not a model to give up on.
pub fn faults(duration: Duration, clients: u64, kill_every: Duration) -> Report {
    let dir = bucket(true);
    // Restarts back off up to 30 s while the kills go on; a request waits at most 20 s for one
    // (then a clear 503), well inside the 60 s after which a client counts it as hung.
    let s = crate::Server::start(
        dir.path(),
        &["--ctx", "512", "--parallel", "2", "--crash-limit", "1000", "--load-wait", "20"],
    );
    run(&Plan::mixed(s.port, clients, duration, Some(kill_every)), Arc::new(AtomicBool::new(false)))
}

/// Load on SmolLM2, then SIGTERM to the server after `after`: in-flight requests must finish,
/// the server must exit 0 and leave no worker. Returns the report, the exit status and the
/// workers still alive afterwards.
pub fn sigterm(after: Duration, clients: u64) -> (Report, std::process::ExitStatus, Vec<u32>) {
    let dir = bucket(false);
    let mut s = crate::Server::start(dir.path(), &["--ctx", "512", "--parallel", "4"]);
    let models = default_models()[..1].to_vec();
    // Load the worker first so that SIGTERM lands on requests in flight, not on a load.
    let _ = send(
        s.port,
        &Shape { model: models[0].clone(), chat: true, stream: false, max_tokens: 2 },
        Duration::from_secs(60),
    );
    let pids = worker_pids(s.port);
    let plan = Plan {
        port: s.port,
        models,
        chat_models: 1,
        clients,
        duration: after + Duration::from_secs(40),
        kill_every: None,
        hang_after: Duration::from_secs(60),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let server_pid = s.child.id();
    let stopper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            crate::server::signal(server_pid, "TERM");
            // Clients keep trying for a moment after, then stop.
            std::thread::sleep(Duration::from_secs(2));
            stop.store(true, Ordering::SeqCst);
        })
    };
    let r = run(&plan, stop);
    stopper.join().expect("stopper");
    let status = s.child.wait().expect("server exit");
    let alive = pids.into_iter().filter(|p| crate::server::alive(*p)).collect();
    (r, status, alive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify(200, false, "").0, Outcome::Lost);
        assert_eq!(classify(200, false, r#"{"choices":[{"finish_reason":"stop"}]}"#).0, Outcome::Succeeded);
        assert_eq!(classify(503, false, r#"{"error":{"message":"busy"}}"#).0, Outcome::FailedClear);
        assert_eq!(classify(502, false, "Bad Gateway").0, Outcome::Lost);
        let ok = "data: {\"choices\":[{\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        assert_eq!(classify(200, true, ok).0, Outcome::Succeeded);
        let err = "data: {\"choices\":[]}\n\ndata: {\"error\":{\"message\":\"worker exited\"}}\n\ndata: [DONE]\n\n";
        assert_eq!(classify(200, true, err).0, Outcome::FailedClear);
        assert_eq!(classify(200, true, "data: {\"choices\":[]}\n\n").0, Outcome::Lost);
    }

    #[test]
    fn the_mix_covers_every_kind() {
        let models = vec!["a".to_string(), "b".to_string()];
        let shapes: Vec<Shape> = (0..64).map(|i| shape(i, 1, &models, 1)).collect();
        assert!(shapes.iter().any(|s| s.chat) && shapes.iter().any(|s| !s.chat));
        assert!(shapes.iter().any(|s| s.stream) && shapes.iter().any(|s| !s.stream));
        assert!(shapes.iter().any(|s| s.model == "b") && shapes.iter().all(|s| !s.chat || s.model == "a"));
    }
}
