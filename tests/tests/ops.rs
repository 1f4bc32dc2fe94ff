//! Running it as a service, on the real models: the RAM budget and eviction, idle unload, the
//! folder watcher, SIGHUP and SIGUSR1, core pinning, the admin endpoints, the CLI and metrics.

use model_bucket_tests::server::{alive, eventually, signal, sse_lines};
use model_bucket_tests::*;
use serde_json::Value;
use std::io::Write;
use std::time::Duration;

fn both() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    link_model(GEMMA_FILE, dir.path(), GEMMA_FILE);
    dir
}

fn complete(s: &Server, model: &str) -> (u16, String) {
    let body = format!(r#"{{"model":"{model}","prompt":"The capital of France is","max_tokens":4,"temperature":0}}"#);
    s.post("/v1/completions", &body).unwrap()
}

/// Small contexts keep both workers small: SmolLM2 measures ~150 MB, Gemma ~335 MB.
const SMALL: [&str; 4] = ["--ctx", "512", "--parallel", "2"];

/// A budget that holds either default model but not both.
const ONE_MODEL_BUDGET: &str = "400MiB";

fn budget_server(dir: &std::path::Path, extra: &[&str]) -> Server {
    // No turns: each request for the other model swaps at once (turns have their own tests).
    let mut args = vec!["--ram-budget", ONE_MODEL_BUDGET, "--quantum", "0"];
    args.extend_from_slice(&SMALL);
    args.extend_from_slice(extra);
    Server::start(dir, &args)
}

fn assert_under_budget(s: &Server) {
    let v = s.get_json("/admin/workers");
    let budget = v["ram_budget_bytes"].as_u64().unwrap();
    assert_eq!(budget, 400 << 20);
    let used = v["ram_used_bytes"].as_u64().unwrap();
    let rss: u64 = v["workers"].as_array().unwrap().iter().map(|w| w["memory_bytes"].as_u64().unwrap_or(0)).sum();
    assert!(used <= budget && rss <= budget, "over budget: counted {used}, resident {rss}, budget {budget}: {v}");
}

#[test]
fn a_budget_for_one_model_swaps_them_and_never_evicts_a_busy_one() {
    let dir = both();
    let s = budget_server(dir.path(), &[]);
    assert_eq!(complete(&s, &smol_id()).0, 200);
    assert_eq!(s.worker_models(), vec![smol_id()]);
    assert_eq!(complete(&s, &gemma_id()).0, 200);
    assert_eq!(s.worker_models(), vec![gemma_id()], "serving B evicted A");
    assert_under_budget(&s);
    assert_eq!(s.model_state(&smol_id()).0, "unloaded");
    let (status, body) = complete(&s, &smol_id());
    assert_eq!(status, 200, "A comes back on demand: {body}");
    assert_eq!(s.worker_models(), vec![smol_id()]);
    assert_under_budget(&s);

    // While A streams, B cannot get its memory: B's request waits in the queue, and A's stream
    // goes on (A yields: it takes no new requests meanwhile).
    let endless = format!(
        r#"{{"model":"{}","prompt":"Once upon a time","max_tokens":100000,"stream":true,"logit_bias":{{"2":-100}}}}"#,
        smol_id()
    );
    let mut stream = sse_lines(s.port, "/v1/completions", &endless, Duration::from_secs(30));
    assert!(stream.nth(2).is_some(), "the stream started");
    let pid = s.worker_pid(&smol_id()).unwrap();
    let port = s.port;
    let (gemma, smol) = (gemma_id(), smol_id());
    let waiting = std::thread::spawn(move || {
        let body =
            format!(r#"{{"model":"{gemma}","prompt":"The capital of France is","max_tokens":4,"temperature":0}}"#);
        model_bucket_tests::server::read_response(
            model_bucket_tests::server::open(port, "POST", "/v1/completions", "", &body, None).unwrap(),
        )
    });
    let queued = |s: &Server| {
        let v = s.get_json("/admin/workers");
        v["workers"].as_array().unwrap().iter().any(|w| w["model"] == gemma_id() && w["waiting"] == 1)
    };
    assert!(eventually(Duration::from_secs(10), || queued(&s)), "B waits: {}", s.get_json("/admin/workers"));
    assert!(stream.nth(5).is_some_and(|l| l.contains("\"text\"")), "A still streams");
    assert!(alive(pid), "the busy worker was not evicted");
    // It yields once its turn (twice its own swap) is over: it finishes its stream but takes
    // no new request until B has had its turn.
    assert!(eventually(Duration::from_secs(10), || s.model_state(&smol).0 == "draining"), "{}", s.log());
    assert!(!waiting.is_finished(), "B is still waiting, not refused");
    // Once A's client hangs up, A is idle and B's waiting request is served.
    drop(stream);
    let (status, body) = waiting.join().unwrap().unwrap();
    assert_eq!(status, 200, "B loads once A is idle: {body}\n{}", s.log());
    assert!(!alive(pid));
    assert_under_budget(&s);

    let metrics = s.get("/metrics").unwrap().1;
    assert!(metrics.contains(&format!("model_bucket_evictions_total{{model=\"{}\"}}", smol_id())), "{metrics}");
}

#[test]
fn a_model_larger_than_the_budget_is_a_clear_error() {
    let dir = both();
    let mut args = vec!["--ram-budget", "200MiB"];
    args.extend_from_slice(&SMALL);
    let s = Server::start(dir.path(), &args);
    let (status, body) = complete(&s, &gemma_id());
    assert_eq!(status, 507, "{body}");
    assert!(body.contains("insufficient_memory") && body.contains("RAM budget"), "{body}");
    assert_eq!(complete(&s, &smol_id()).0, 200, "a model that fits still serves");
}

#[test]
fn idle_workers_unload_after_the_ttl() {
    let dir = both();
    let mut args = vec!["--idle-ttl", "1"];
    args.extend_from_slice(&SMALL);
    let s = Server::start(dir.path(), &args);
    assert_eq!(complete(&s, &smol_id()).0, 200);
    let pid = s.worker_pid(&smol_id()).unwrap();
    assert!(eventually(Duration::from_secs(10), || s.model_state(&smol_id()).0 == "unloaded"));
    assert!(eventually(Duration::from_secs(5), || !alive(pid)));
    assert!(s.worker_models().is_empty());
    assert_eq!(complete(&s, &smol_id()).0, 200, "and it comes back on demand");
}

fn listed(s: &Server) -> Vec<String> {
    let v = s.get_json("/v1/models");
    v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_file_dropped_in_the_folder_is_served_and_a_removed_one_is_drained() {
    let dir = tempfile::tempdir().unwrap();
    let smol_path = link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    let s = Server::start(dir.path(), &SMALL);
    assert_eq!(listed(&s), vec![smol_id()]);

    // Copy Gemma in two halves, slowly: the half-written file is never read.
    let bytes = std::fs::read(model(GEMMA_FILE)).unwrap();
    let dest = dir.path().join("dropped.gguf");
    let mut f = std::fs::File::create(&dest).unwrap();
    f.write_all(&bytes[..bytes.len() / 2]).unwrap();
    f.flush().unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(listed(&s), vec![smol_id()], "a copy in progress is not served");
    f.write_all(&bytes[bytes.len() / 2..]).unwrap();
    drop(f);
    assert!(eventually(Duration::from_secs(15), || listed(&s).contains(&gemma_id())), "{:?}\n{}", listed(&s), s.log());
    assert_eq!(listed(&s).len(), 2, "no model was made of the half-written file: {:?}", listed(&s));
    assert_eq!(complete(&s, &gemma_id()).0, 200);

    // Removing a file drains its worker and drops the model.
    assert_eq!(complete(&s, &smol_id()).0, 200);
    let pid = s.worker_pid(&smol_id()).unwrap();
    std::fs::remove_file(smol_path).unwrap();
    assert!(eventually(Duration::from_secs(10), || !listed(&s).contains(&smol_id())));
    assert!(eventually(Duration::from_secs(10), || !alive(pid)), "the removed model's worker was drained");
    assert_eq!(complete(&s, &smol_id()).0, 404);
}

#[test]
fn sighup_reloads_the_config() {
    let dir = both();
    let config = dir.path().join("bucket.toml");
    std::fs::write(&config, format!("[models.{}]\nids = [\"alpha\"]\n", smol_id())).unwrap();
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend_from_slice(&SMALL);
    let s = Server::start(dir.path(), &args);
    assert_eq!(s.get("/v1/models/alpha").unwrap().0, 200);
    std::fs::write(&config, format!("[models.{}]\nids = [\"beta\"]\n", smol_id())).unwrap();
    signal(s.child.id(), "HUP");
    assert!(eventually(Duration::from_secs(10), || s.get("/v1/models/beta").unwrap().0 == 200));
    assert_eq!(s.get("/v1/models/alpha").unwrap().0, 404);
    // A broken config is reported and the old one kept.
    std::fs::write(&config, "[models.x]\nnot_a_setting = 1\n").unwrap();
    signal(s.child.id(), "HUP");
    assert!(eventually(Duration::from_secs(10), || s.log().contains("config not reloaded")));
    assert_eq!(s.get("/v1/models/beta").unwrap().0, 200);
}

fn cpus_allowed(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim().to_string()
}

#[test]
fn sigusr1_restarts_every_worker_one_at_a_time_and_workers_are_spread_over_cores() {
    let dir = both();
    let s = Server::start(dir.path(), &SMALL);
    assert_eq!(complete(&s, &smol_id()).0, 200);
    assert_eq!(complete(&s, &gemma_id()).0, 200);
    let (a, b) = (s.worker_pid(&smol_id()).unwrap(), s.worker_pid(&gemma_id()).unwrap());
    // One thread each (the tests' default): where there are two cores, they get one each.
    let cores = std::thread::available_parallelism().unwrap().get();
    if cores >= 2 {
        assert_ne!(cpus_allowed(a), cpus_allowed(b), "one core each");
    }
    let v = s.get_json("/admin/workers");
    for w in v["workers"].as_array().unwrap() {
        assert_eq!(w["cores"].as_array().map(Vec::len), Some(1), "{w}");
    }

    signal(s.child.id(), "USR1");
    // One at a time: every sample of the workers finds at most one not ready.
    let (restarted, most_down) = s.watch_restart(&[smol_id(), gemma_id()], &[a, b]);
    assert!(restarted, "{}", s.log());
    assert!(most_down <= 1, "{most_down} workers were down at once during the rolling restart");
    assert!(!alive(a) && !alive(b));
    assert_eq!(complete(&s, &smol_id()).0, 200);
    assert_eq!(complete(&s, &gemma_id()).0, 200);
    let v = s.get_json("/admin/workers");
    assert!(
        v["workers"].as_array().unwrap().iter().all(|w| w["restarts"] == 0),
        "a restart on request is no crash: {v}"
    );
}

#[test]
fn admin_cli_and_metrics() {
    let dir = both();
    let s = Server::start(dir.path(), &SMALL);
    let url = s.base_url();
    let out = run_ok(&["load", "eden_smollm2_135m", "--url", &url]);
    assert!(out.contains(&smol_id()) && out.contains("ready"), "{out}");
    let ps = run_ok(&["ps", "--url", &url]);
    assert!(ps.contains(&smol_id()) && ps.contains("ready") && ps.contains("RAM:"), "{ps}");
    let v: Value = serde_json::from_str(&run_ok(&["ps", "--json", "--url", &url])).unwrap();
    let w = &v["workers"][0];
    for key in ["pid", "memory_bytes", "slots", "slots_busy", "restarts", "cores", "state"] {
        assert!(!w[key].is_null() || key == "cores", "{key} missing: {w}");
    }
    assert_eq!(w["slots"], 2);

    assert_eq!(complete(&s, &smol_id()).0, 200);
    assert_eq!(complete(&s, "no-such-model").0, 404);
    let metrics = s.get("/metrics").unwrap().1;
    for needle in [
        format!("model_bucket_requests_total{{model=\"{}\",endpoint=\"completions\",status=\"200\"}} 1", smol_id()),
        "model_bucket_requests_total{model=\"unknown\",endpoint=\"completions\",status=\"404\"} 1".to_string(),
        format!("model_bucket_completion_tokens_total{{model=\"{}\"}} ", smol_id()),
        format!("model_bucket_time_to_first_token_seconds_count{{model=\"{}\"}} 1", smol_id()),
        format!("model_bucket_worker_memory_bytes{{model=\"{}\"}}", smol_id()),
        "model_bucket_ram_budget_bytes".to_string(),
    ] {
        assert!(metrics.contains(&needle), "{needle} not in:\n{metrics}");
    }

    let out = run_ok(&["unload", &smol_id(), "--url", &url]);
    assert!(out.contains("draining") || out.contains("unloaded"), "{out}");
    assert!(eventually(Duration::from_secs(10), || s.worker_models().is_empty()));
    let (status, body) = s.post("/admin/models/nope/load", "").unwrap();
    assert_eq!(status, 404, "{body}");
    let (status, body) = s.post("/admin/rescan", "").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"models\":2"), "{body}");
}
