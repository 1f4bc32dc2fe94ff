//! Load for the stress runs: client threads sending a mix of chat and text completions and
//! JSON-schema answers, streamed and not, across models, each outcome classified and each
//! success verified; a sampler watching the workers' memory from `/proc` against the budget;
//! and faults (killing a random worker, SIGTERM to the server).
//!
//! The outcomes and their rules are in [`outcome`]: `succeeded` (an answer that is what its
//! request asked for, [`verify`]), `wrong` (a finished answer that is not), `failed_clear` (an
//! error envelope or a stream error event), `refused` (no connection, or not one request byte
//! taken), `lost` (the request went out and no complete answer came back, whatever the cause),
//! `hung` (no answer within [`HangRule::answer_within`], or a stream under its floor for its
//! limit) and `malformed` (an answer that is neither a success nor the error envelope). Free
//! text bans every end-of-generation token and fixes `max_tokens`, so a success is exactly that
//! many tokens. Which clear errors a run accepts, and how many, is its [`ErrorRule`]. The soak
//! and the fault run require 0 refused, lost, hung, malformed and wrong; the SIGTERM run
//! requires every request written before the signal to succeed, and a refusal only after it.

mod client;
pub mod outcome;
pub mod procs;
mod report;
pub mod rules;
pub mod verify;

pub use client::Attempt;
pub use outcome::{HangRule, Outcome};
pub use report::{recovery_line, AroundSignal, Record, Recovery, Report};
pub use rules::ErrorRule;
pub use verify::Expect;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long, once the kills stop, each model has to answer again: a restart waits out a backoff
/// of at most 30 s, then loads in a few seconds.
pub const RECOVERY_WITHIN: Duration = Duration::from_secs(60);

/// Tokens a JSON-schema answer may take; its schema's longest answer needs about 10.
const JSON_MAX_TOKENS: u32 = 48;

/// A model a run sends to.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: String,
    /// Whether it has a chat template (chat and JSON-schema requests go to it).
    pub chat: bool,
    /// Its end-of-generation tokens, banned in free-text requests.
    pub eog: &'static [u32],
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Text,
    /// A chat answer constrained by a JSON schema.
    Json,
}

/// One request of the mix.
#[derive(Debug, Clone)]
pub struct Shape {
    pub model: String,
    pub kind: Kind,
    pub stream: bool,
    pub max_tokens: u32,
    /// Tokens banned (free text only).
    pub eog: &'static [u32],
}

impl Shape {
    /// What its answer must be.
    pub fn expect(&self) -> Expect {
        match self.kind {
            Kind::Json => Expect::JsonObject(&["mood", "waves"]),
            Kind::Chat | Kind::Text => Expect::Length(self.max_tokens),
        }
    }

    /// Its JSON body.
    pub fn body(&self) -> String {
        let mut b = serde_json::json!({ "model": self.model, "max_tokens": self.max_tokens, "stream": self.stream });
        if self.stream {
            b["stream_options"] = serde_json::json!({ "include_usage": true });
        }
        match self.kind {
            Kind::Text => b["prompt"] = "The sea is".into(),
            Kind::Chat => b["messages"] = serde_json::json!([{ "role": "user", "content": "Tell me about the sea." }]),
            Kind::Json => {
                b["messages"] =
                    serde_json::json!([{ "role": "user", "content": "How is the sea today? Answer in JSON." }]);
                b["response_format"] = serde_json::json!({ "type": "json_schema", "json_schema": { "name": "sea", "schema": {
                    "type": "object",
                    "properties": { "mood": { "enum": ["calm", "rough", "stormy"] }, "waves": { "type": "integer", "minimum": 0, "maximum": 9 } },
                    "required": ["mood", "waves"], "additionalProperties": false
                } } });
            }
        }
        if self.kind != Kind::Json {
            let ban: serde_json::Map<String, serde_json::Value> =
                self.eog.iter().map(|t| (t.to_string(), serde_json::json!(-100))).collect();
            b["logit_bias"] = ban.into();
        }
        b.to_string()
    }
}

/// A deterministic mix: request `i` of client `c` over `models`.
pub fn shape(i: u64, c: u64, models: &[Target]) -> Shape {
    let x = i.wrapping_mul(6364136223846793005).wrapping_add(c.wrapping_mul(1442695040888963407)) >> 33;
    let t = &models[(x % models.len() as u64) as usize];
    // Each choice from other bits of `x`, so that none follows from another.
    let kind = match (t.chat, (x >> 8) % 5, (x >> 12) % 3) {
        (false, _, _) | (true, _, 0) => Kind::Text,
        (true, 1, _) => Kind::Json,
        (true, _, _) => Kind::Chat,
    };
    let max_tokens = if kind == Kind::Json { JSON_MAX_TOKENS } else { 8 + ((x >> 16) % 40) as u32 };
    Shape { model: t.id.clone(), kind, stream: (x >> 4) & 1 == 1, max_tokens, eog: t.eog }
}

/// Sends one request and classifies what came back.
pub fn send(port: u16, s: &Shape, rule: &HangRule) -> Attempt {
    let path = if s.kind == Kind::Text { "/v1/completions" } else { "/v1/chat/completions" };
    client::post(port, path, &s.body(), rule, s.expect())
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
    /// The server's process, whose children are its workers.
    pub server_pid: u32,
    pub models: Vec<Target>,
    pub clients: u64,
    pub duration: Duration,
    /// Kill a random worker this often.
    pub kill_every: Option<Duration>,
    pub hang: HangRule,
}

impl Plan {
    /// The mix over both default models of `s`, under the default hang rule.
    pub fn mixed(s: &crate::Server, clients: u64, duration: Duration, kill_every: Option<Duration>) -> Plan {
        Plan {
            port: s.port,
            server_pid: s.child.id(),
            models: default_models(),
            clients,
            duration,
            kill_every,
            hang: HangRule::DEFAULT,
        }
    }
}

/// Runs `plan`'s load until its duration has passed (or `stop` is set), then returns the report.
pub fn run(plan: &Plan, stop: Arc<AtomicBool>) -> Report {
    let report = Arc::new(Mutex::new(Report::default()));
    let deadline = Instant::now() + plan.duration;
    let seen = Arc::new(Mutex::new(procs::Seen::default()));
    let budget = Arc::new(AtomicU64::new(0));
    let kills = Arc::new(AtomicU64::new(0));
    std::thread::scope(|scope| {
        for c in 0..plan.clients {
            let (report, stop) = (report.clone(), stop.clone());
            scope.spawn(move || {
                let mut i = 0;
                while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
                    let s = shape(i, c, &plan.models);
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
        // Memory, from outside: the server's children in /proc, against its budget.
        let (seen2, budget2, stop2) = (seen.clone(), budget.clone(), stop.clone());
        scope.spawn(move || {
            if let Some(v) = workers(plan.port) {
                budget2.store(v["ram_budget_bytes"].as_u64().unwrap_or(0), Ordering::Relaxed);
            }
            while Instant::now() < deadline && !stop2.load(Ordering::SeqCst) {
                let ws = procs::workers(plan.server_pid);
                seen2.lock().unwrap().add(&ws);
                std::thread::sleep(Duration::from_millis(50));
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
    r.memory = std::mem::take(&mut *seen.lock().unwrap());
    r.budget = budget.load(Ordering::Relaxed);
    r.kills = kills.load(Ordering::Relaxed);
    r
}

/// Whether `t` answers a short completion (exactly its 4 tokens) within `within`: the wait
/// until it did, or why not. A clear error (503 while it restarts) is retried after a second;
/// anything else (refused, lost, hung, malformed, wrong) ends the check at once.
pub fn answers(port: u16, t: &Target, within: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let kind = if t.chat { Kind::Chat } else { Kind::Text };
    let s = Shape { model: t.id.clone(), kind, stream: false, max_tokens: 4, eog: t.eog };
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

/// The default models, SmolLM2 (chat) first. Their end-of-generation tokens, as the llama.cpp
/// the worker links counts them: SmolLM2's `<|endoftext|>`, `<|im_end|>` and `<reponame>` (taken
/// for a fill-in-the-middle token), Gemma 3's `<eos>`, `<end_of_turn>` and `</s>`.
pub fn default_models() -> Vec<Target> {
    vec![
        Target { id: crate::smol_id(), chat: true, eog: &[0, 2, 4] },
        Target { id: crate::gemma_id(), chat: false, eog: &[1, 106, 212] },
    ]
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
    let r = run(&Plan::mixed(&s, clients, duration, None), Arc::new(AtomicBool::new(false)));
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
    let plan = Plan::mixed(&s, clients, duration, Some(kill_every));
    let r = run(&plan, Arc::new(AtomicBool::new(false)));
    let recovery = plan.models.iter().map(|t| (t.id.clone(), answers(s.port, t, RECOVERY_WITHIN))).collect();
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
    let _ = answers(s.port, &models[0], Duration::from_secs(30));
    let pids = worker_pids(s.port);
    let plan = Plan {
        port: s.port,
        server_pid: s.child.id(),
        models,
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
        let models = vec![
            Target { id: "a".into(), chat: true, eog: &[2] },
            Target { id: "b".into(), chat: false, eog: &[1, 106] },
        ];
        let shapes: Vec<Shape> = (0..64).map(|i| shape(i, 1, &models)).collect();
        for k in [Kind::Chat, Kind::Text, Kind::Json] {
            assert!(shapes.iter().any(|s| s.kind == k && s.stream) && shapes.iter().any(|s| s.kind == k && !s.stream));
        }
        assert!(shapes.iter().any(|s| s.model == "b") && shapes.iter().all(|s| s.kind == Kind::Text || s.model == "a"));
    }

    #[test]
    fn free_text_bans_the_end_and_streams_report_usage() {
        let s = Shape { model: "b".into(), kind: Kind::Text, stream: true, max_tokens: 9, eog: &[1, 106] };
        let v: serde_json::Value = serde_json::from_str(&s.body()).expect("json");
        assert_eq!(v["logit_bias"], serde_json::json!({"1": -100, "106": -100}));
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(s.expect(), Expect::Length(9));
        let j = Shape { kind: Kind::Json, stream: false, ..s };
        let v: serde_json::Value = serde_json::from_str(&j.body()).expect("json");
        assert!(v.get("logit_bias").is_none() && v["response_format"]["type"] == "json_schema");
        assert_eq!(j.expect(), Expect::JsonObject(&["mood", "waves"]));
    }
}
