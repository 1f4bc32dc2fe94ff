//! README claims that no other test pinned, each checked against the running server: the retry
//! of a request whose worker died before its first token, one load shared by concurrent
//! requests, a model's own `ttl_secs`, leaving `failed` by rescan and load, SIGUSR1's drain and
//! config pickup, `--cors-origin '*'`, the sampling parameters on SmolLM2, the `/metrics` series,
//! systemd's `STOPPING=1`, `cpus` pinning, eviction by measured memory, every flag and default
//! the README states, and its benchmark table against the saved runs. Where a real model cannot show the behaviour, the fake worker
//! (tests/src/bin/fake-worker.rs) stands in; the catalog then holds the real files, which the
//! fake ignores.

use model_bucket_tests::server::{alive, eventually, signal, sse_lines};
use model_bucket_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

/// A server whose workers are the fake, in the mode its mode file holds at each start.
struct Fake {
    server: Server,
    log: tempfile::NamedTempFile,
    mode: tempfile::NamedTempFile,
    _dir: tempfile::TempDir,
}

/// Starts a server with the fake worker in `mode` on a folder of `files` (default model files),
/// with `config` as its config file when given.
fn fake(mode: &str, files: &[&str], config: Option<&str>, extra: &[&str]) -> Fake {
    let dir = tempfile::tempdir().unwrap();
    for f in files {
        link_model(f, dir.path(), f);
    }
    let log = tempfile::NamedTempFile::new().unwrap();
    let mode_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(mode_file.path(), mode).unwrap();
    let mut args: Vec<&str> = extra.to_vec();
    let config_path = dir.path().join("bucket.toml");
    if let Some(text) = config {
        std::fs::write(&config_path, text).unwrap();
        args.extend(["--config", config_path.to_str().unwrap()]);
    }
    let bin = bin("fake-worker");
    let server = Server::start_with_env(
        dir.path(),
        &args,
        &[
            ("EDEN_WORKER_BIN", bin.to_str().unwrap()),
            ("EDEN_FAKE_MODE_FILE", mode_file.path().to_str().unwrap()),
            ("EDEN_FAKE_LOG", log.path().to_str().unwrap()),
        ],
    );
    Fake { server, log, mode: mode_file, _dir: dir }
}

impl Fake {
    /// How many times a fake worker was started.
    fn starts(&self) -> usize {
        std::fs::read_to_string(self.log.path()).unwrap_or_default().lines().count()
    }

    /// The mode the next fake worker starts in.
    fn set_mode(&self, mode: &str) {
        std::fs::write(self.mode.path(), mode).unwrap();
    }

    fn state(&self, model: &str) -> String {
        self.server.model_state(model).0
    }
}

fn completion(model: &str, max: u32) -> String {
    json!({ "model": model, "prompt": "hi", "max_tokens": max }).to_string()
}

/// The `/admin/workers` entry of `model`.
fn worker(s: &Server, model: &str) -> Value {
    s.worker_row(model)
}

// 1. "a request that had not produced anything yet is retried once on the restarted worker"

#[test]
fn a_worker_that_dies_before_the_first_token_costs_the_request_nothing() {
    let f = fake("crash-first-start-before-token", &[SMOLLM2_FILE], None, &[]);
    let (status, body) = f.server.post("/v1/completions", &completion(&smol_id(), 4)).unwrap();
    assert_eq!(status, 200, "{body}\n{}", f.server.log());
    assert!(body.contains("word word word word"), "{body}");
    assert_eq!(f.starts(), 2, "the request ran on the restarted worker");
    assert_eq!(worker(&f.server, &smol_id())["restarts"], 1);
}

#[test]
fn a_stream_whose_worker_dies_before_the_first_token_is_retried_too() {
    let f = fake("crash-first-start-before-token", &[SMOLLM2_FILE], None, &[]);
    let body = json!({ "model": smol_id(), "prompt": "hi", "max_tokens": 4, "stream": true }).to_string();
    let lines: Vec<String> = sse_lines(f.server.port, "/v1/completions", &body, Duration::from_secs(30)).collect();
    assert!(!lines.iter().any(|l| l.contains("\"error\"")), "{lines:?}");
    assert_eq!(lines.iter().filter(|l| l.contains("\"text\":\"word \"")).count(), 4, "{lines:?}");
    assert_eq!(lines.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(f.starts(), 2);
}

#[test]
fn the_retry_happens_once_only() {
    // Every worker dies at its first request. The request gets one retry: two starts, then a
    // clear error. The restart after that second crash (the third start) is given nothing, so
    // the model stays up; a request retried until the crash limit would fail it instead.
    let f = fake("crash-before-token", &[SMOLLM2_FILE], None, &["--crash-limit", "3"]);
    let (status, body) = f.server.post("/v1/completions", &completion(&smol_id(), 4)).unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("worker exited"), "{body}");
    assert!(
        eventually(Duration::from_secs(15), || f.starts() == 3 && f.state(&smol_id()) == "ready"),
        "starts: {}, state: {}\n{}",
        f.starts(),
        f.state(&smol_id()),
        f.server.log()
    );
    assert_eq!(worker(&f.server, &smol_id())["restarts"], 2);
}

// 2. "requests arriving meanwhile wait for the same load"

#[test]
fn concurrent_requests_for_an_unloaded_model_share_one_load() {
    let f = fake("slow-load:1500", &[SMOLLM2_FILE], None, &[]);
    let port = f.server.port;
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let body = completion(&smol_id(), 4);
            std::thread::spawn(move || {
                server::read_response(server::open(port, "POST", "/v1/completions", "", &body, None).unwrap()).unwrap()
            })
        })
        .collect();
    for c in clients {
        let (status, resp) = c.join().unwrap();
        assert_eq!(status, 200, "{resp}");
        assert!(resp.contains("word word word word"), "{resp}");
    }
    assert_eq!(f.starts(), 1, "six requests, one worker start");
}

// 3. "`--idle-ttl SECS` (or a model's `ttl_secs`) unloads workers idle that long"

fn load(s: &Server, model: &str) {
    let (status, body) = s.post(&format!("/admin/models/{model}/load"), "").unwrap();
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_models_ttl_secs_unloads_its_idle_worker_with_no_server_ttl() {
    let config = format!("[models.{}]\nttl_secs = 1\n", smol_id());
    let f = fake("ok", &[SMOLLM2_FILE, GEMMA_FILE], Some(&config), &[]);
    load(&f.server, &smol_id());
    load(&f.server, &gemma_id());
    let pid = f.server.worker_pid(&smol_id()).unwrap();
    assert!(eventually(Duration::from_secs(10), || f.state(&smol_id()) == "unloaded"), "{}", f.server.log());
    assert!(eventually(Duration::from_secs(5), || !alive(pid)));
    assert_eq!(f.state(&gemma_id()), "ready", "a model without ttl_secs keeps its worker");
    assert!(f.server.log().contains("idle past its ttl"), "{}", f.server.log());
}

#[test]
fn a_models_ttl_secs_beats_a_longer_server_ttl_and_zero_keeps_it() {
    // The server's TTL is an hour; SmolLM2's own is a second. Gemma's `ttl_secs = 0` keeps it
    // even then.
    let config = format!("[models.{}]\nttl_secs = 1\n\n[models.{}]\nttl_secs = 0\n", smol_id(), gemma_id());
    let f = fake("ok", &[SMOLLM2_FILE, GEMMA_FILE], Some(&config), &["--idle-ttl", "3600"]);
    load(&f.server, &gemma_id());
    load(&f.server, &smol_id());
    assert!(eventually(Duration::from_secs(10), || f.state(&smol_id()) == "unloaded"), "{}", f.server.log());
    assert_eq!(f.state(&gemma_id()), "ready");
}

#[test]
fn a_models_ttl_secs_zero_keeps_it_under_a_short_server_ttl() {
    let config = format!("[models.{}]\nttl_secs = 0\n", smol_id());
    let f = fake("ok", &[SMOLLM2_FILE, GEMMA_FILE], Some(&config), &["--idle-ttl", "1"]);
    // SmolLM2 goes idle first, so the server's TTL would take it first.
    load(&f.server, &smol_id());
    load(&f.server, &gemma_id());
    assert!(eventually(Duration::from_secs(10), || f.state(&gemma_id()) == "unloaded"), "{}", f.server.log());
    assert_eq!(f.state(&smol_id()), "ready", "ttl_secs = 0: never");
}

// 4. "its requests get 503 until a reload (SIGHUP, `POST /admin/rescan`, or `model-bucket load ID`)"

/// Makes SmolLM2 fail (its worker crashes while loading), then lets the next start succeed.
fn fail_then_fix(f: &Fake) {
    f.set_mode("crash-on-load");
    let (status, body) = f.server.post("/v1/completions", &completion(&smol_id(), 4)).unwrap();
    assert_eq!(status, 502, "{body}");
    assert_eq!(f.state(&smol_id()), "failed");
    f.set_mode("ok");
    let (status, body) = f.server.post("/v1/completions", &completion(&smol_id(), 4)).unwrap();
    assert_eq!(status, 503, "a failed model stays failed until a reload: {body}");
}

#[test]
fn rescan_gives_a_failed_model_another_chance() {
    let f = fake("ok", &[SMOLLM2_FILE], None, &[]);
    fail_then_fix(&f);
    assert_eq!(f.starts(), 1);
    let (status, body) = f.server.post("/admin/rescan", "").unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(f.state(&smol_id()), "unloaded");
    let (status, body) = f.server.post("/v1/completions", &completion(&smol_id(), 4)).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(f.starts(), 2);
}

#[test]
fn load_takes_a_model_out_of_failed_by_http_and_by_the_cli() {
    let f = fake("ok", &[SMOLLM2_FILE], None, &[]);
    fail_then_fix(&f);
    let (status, body) = f.server.post(&format!("/admin/models/{}/load", smol_id()), "").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ready\""), "{body}");
    assert_eq!(f.server.post("/v1/completions", &completion(&smol_id(), 4)).unwrap().0, 200);

    let (status, body) = f.server.post(&format!("/admin/models/{}/unload", smol_id()), "").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(eventually(Duration::from_secs(10), || f.state(&smol_id()) == "unloaded"));
    fail_then_fix(&f);
    let out = run_ok(&["load", &smol_id(), "--url", &f.server.base_url()]);
    assert!(out.contains("ready"), "{out}");
    assert_eq!(f.state(&smol_id()), "ready");
    assert_eq!(f.server.post("/v1/completions", &completion(&smol_id(), 4)).unwrap().0, 200);
    assert_eq!(f.starts(), 4, "two failed loads, two good ones");
}

// 5. "SIGUSR1 restarts every worker, one at a time: drain (in-flight requests finish), start
//    again with the current config, wait until ready, next."

/// A streamed completion of `max` tokens with EOS banned, with a usage chunk.
fn endless(max: u32) -> String {
    json!({
        "model": smol_id(), "prompt": "Once upon a time", "max_tokens": max, "temperature": 0, "stream": true,
        "stream_options": { "include_usage": true }, "logit_bias": { "2": -100 },
    })
    .to_string()
}

#[test]
fn sigusr1_drains_a_running_stream_and_restarts_with_the_current_config() {
    let dir = smol_bucket();
    let config = dir.path().join("bucket.toml");
    std::fs::write(&config, format!("[models.{}]\nparallel = 1\n", smol_id())).unwrap();
    let s = Server::start(dir.path(), &["--ctx", "512", "--config", config.to_str().unwrap()]);
    load(&s, &smol_id());
    assert_eq!(worker(&s, &smol_id())["slots"], 1);
    // The config changes and is reloaded; the running worker keeps its settings.
    std::fs::write(&config, format!("[models.{}]\nparallel = 2\n", smol_id())).unwrap();
    signal(s.child.id(), "HUP");
    assert!(eventually(Duration::from_secs(10), || s.log().contains("config reloaded")), "{}", s.log());
    assert_eq!(worker(&s, &smol_id())["slots"], 1, "running workers keep their settings until they restart");

    let pid = s.worker_pid(&smol_id()).unwrap();
    let mut lines = sse_lines(s.port, "/v1/completions", &endless(200), Duration::from_secs(60));
    assert!(lines.next().is_some(), "the stream started");
    signal(s.child.id(), "USR1");
    assert!(
        eventually(Duration::from_secs(10), || worker(&s, &smol_id())["state"] == "draining"),
        "the worker drains while the stream runs: {}",
        s.get_json("/admin/workers")
    );
    let rest: Vec<String> = lines.collect();
    assert!(!rest.iter().any(|l| l.contains("\"error\"")), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("\"finish_reason\":\"length\"")), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("\"completion_tokens\":200")), "the stream finished whole: {rest:?}");
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"));

    assert!(eventually(Duration::from_secs(30), || s.worker_pid(&smol_id()).is_some_and(|p| p != pid)), "{}", s.log());
    assert!(!alive(pid));
    let w = worker(&s, &smol_id());
    assert_eq!(w["state"], "ready", "{w}");
    assert_eq!(w["slots"], 2, "the new worker runs with the current config: {w}");
    assert_eq!(w["restarts"], 0, "a restart on request is no crash: {w}");
}

// 6. "`--cors-origin ORIGIN` (repeatable, `*` for any) lets browser pages call the API"; "a
//    request carrying an `Origin` runs only if it is the server's own or allowed by
//    `--cors-origin` (403 otherwise)"

fn request(port: u16, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    server::read_response(server::open(port, method, path, headers, body, None).unwrap()).unwrap()
}

const PREFLIGHT: &str = "Origin: http://page.example\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n";
const FOREIGN: &str = "Origin: http://page.example\r\n";

#[test]
fn cors_origin_star_lets_any_page_call_the_api() {
    let dir = smol_bucket();
    let s = Server::start(dir.path(), &["--cors-origin", "*"]);
    let (status, resp) = request(s.port, "OPTIONS", "/v1/completions", PREFLIGHT, "");
    assert!(status == 200 || status == 204, "{resp}");
    let lower = resp.to_ascii_lowercase();
    assert!(lower.contains("access-control-allow-origin: *"), "{resp}");
    assert!(lower.contains("access-control-allow-methods:") && lower.contains("post"), "{resp}");
    let (status, resp) = request(s.port, "GET", "/v1/models", FOREIGN, "");
    assert_eq!(status, 200, "{resp}");
    assert!(resp.to_ascii_lowercase().contains("access-control-allow-origin: *"), "{resp}");
    let body = json!({ "model": smol_id(), "prompt": "Hi", "max_tokens": 2 }).to_string();
    let (status, resp) = request(s.port, "POST", "/v1/completions", FOREIGN, &body);
    assert_eq!(status, 200, "{resp}");
    assert!(resp.to_ascii_lowercase().contains("access-control-allow-origin: *"), "{resp}");
}

#[test]
fn without_cors_origin_a_foreign_page_is_refused() {
    let dir = smol_bucket();
    let s = Server::start(dir.path(), &[]);
    let (status, resp) = request(s.port, "OPTIONS", "/v1/completions", PREFLIGHT, "");
    assert_eq!(status, 403, "{resp}");
    assert!(!resp.to_ascii_lowercase().contains("access-control-allow-origin"), "{resp}");
    let (status, resp) = request(s.port, "GET", "/v1/models", FOREIGN, "");
    assert_eq!(status, 403, "{resp}");
    assert!(resp.contains("origin_not_allowed"), "{resp}");
    assert!(!resp.to_ascii_lowercase().contains("access-control-allow-origin"), "{resp}");
    let body = json!({ "model": smol_id(), "prompt": "Hi", "max_tokens": 2 }).to_string();
    assert_eq!(request(s.port, "POST", "/v1/completions", FOREIGN, &body).0, 403);
    assert!(s.worker_models().is_empty(), "the refused request started no worker");
}

// 7. Sampling: "temperature (0 = greedy), top_p, top_k, min_p, seed, repeat/presence/frequency
//    penalties"

/// The text of one completion. Every prefill is cold (`cache_prompt: false`), so the logits of
/// equal requests are the same bits.
fn sample(s: &Server, prompt: &str, max: u32, params: Value) -> String {
    let mut body = json!({ "model": smol_id(), "prompt": prompt, "max_tokens": max, "cache_prompt": false });
    body.as_object_mut().unwrap().extend(params.as_object().unwrap().clone());
    let (status, resp) = s.post("/v1/completions", &body.to_string()).unwrap();
    assert_eq!(status, 200, "{body}: {resp}");
    let v: Value = serde_json::from_str(resp.split("\r\n\r\n").last().unwrap()).unwrap();
    v["choices"][0]["text"].as_str().unwrap().to_string()
}

/// Sampling at `temperature` over the whole vocabulary (no top-k, top-p or min-p cut), `seed`.
fn free(temperature: f32, seed: u32) -> Value {
    json!({ "temperature": temperature, "seed": seed, "top_k": 0, "top_p": 1.0, "min_p": 0.0 })
}

fn with(mut base: Value, extra: Value) -> Value {
    base.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    base
}

#[test]
fn sampling_parameters_shape_smollm2s_output() {
    let dir = smol_bucket();
    let s = Server::start(dir.path(), &["--ctx", "512", "--parallel", "1"]);
    let story = "Once upon a time, in a small village by the sea,";
    let greedy = sample(&s, story, 24, json!({ "temperature": 0 }));
    let hot = free(1.5, 7);
    assert_ne!(sample(&s, story, 24, hot.clone()), greedy, "a hot sample over the whole vocabulary is no greedy one");
    // Each cut down to the most likely token alone makes the hot sample greedy.
    for cut in [json!({ "top_k": 1 }), json!({ "top_p": 1e-9 }), json!({ "min_p": 1.0 })] {
        assert_eq!(sample(&s, story, 24, with(hot.clone(), cut.clone())), greedy, "{cut}");
    }
    // A seed repeats a sample; another seed gives another.
    let warm = |seed| sample(&s, story, 24, free(1.0, seed));
    let a = warm(42);
    assert_eq!(warm(42), a, "the same seed, the same sample");
    assert_ne!(warm(43), a, "another seed, another sample");

    // Penalties change what greedy decoding repeats.
    let chant = "red blue red blue red blue red blue red blue red blue";
    let plain = sample(&s, chant, 32, json!({ "temperature": 0 }));
    let words: Vec<&str> = plain.split_whitespace().collect();
    let distinct: std::collections::BTreeSet<&str> = words.iter().copied().collect();
    assert!(words.len() >= distinct.len() + 3, "the prompt makes greedy decoding repeat: {plain:?}");
    for penalty in
        [json!({ "frequency_penalty": 2.0 }), json!({ "presence_penalty": 2.0 }), json!({ "repeat_penalty": 1.5 })]
    {
        let penalised = sample(&s, chant, 32, with(json!({ "temperature": 0 }), penalty.clone()));
        assert_ne!(penalised, plain, "{penalty}");
    }
}

// 8. "`GET /metrics`: Prometheus text: requests by model/endpoint/status, prompt and completion
//    tokens, prompt tokens by source, time-to-first-token and time-per-output-token
//    histograms, worker memory, slots busy, queue depth, restarts, evictions, budget and its use"

#[test]
fn metrics_has_every_series_the_readme_lists() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let row = readme.lines().find(|l| l.starts_with("| `GET /metrics`")).expect("the README's /metrics row");
    let f = fake(
        "ok",
        &[SMOLLM2_FILE, GEMMA_FILE],
        None,
        &["--ram-budget", "400MiB", "--quantum", "0", "--ctx", "512", "--parallel", "2"],
    );
    let (smol, gemma) = (smol_id(), gemma_id());
    assert_eq!(f.server.post("/v1/completions", &completion(&smol, 4)).unwrap().0, 200);
    // A crash, for the restart counter.
    let pid = f.server.worker_pid(&smol).unwrap();
    signal(pid, "KILL");
    assert!(eventually(Duration::from_secs(15), || f.server.worker_pid(&smol).is_some_and(|p| p != pid)));
    let loaded = f.server.get("/metrics").unwrap().1;
    // Loading the other model under a budget for one evicts the first, for the eviction counter.
    load(&f.server, &gemma);
    assert_eq!(f.state(&smol), "unloaded");
    let later = f.server.get("/metrics").unwrap().1;

    let m = format!("{{model=\"{smol}\"}}");
    let series = [
        (
            "requests by model/endpoint/status",
            &loaded,
            format!("model_bucket_requests_total{{model=\"{smol}\",endpoint=\"completions\",status=\"200\"}} 1"),
        ),
        ("prompt and completion tokens", &loaded, format!("model_bucket_prompt_tokens_total{m} 1")),
        ("prompt and completion tokens", &loaded, format!("model_bucket_completion_tokens_total{m} 4")),
        (
            "prompt_tokens_by_source",
            &loaded,
            format!("model_bucket_prompt_tokens_by_source_total{{model=\"{smol}\",source=\"prefill\"}} 1"),
        ),
        ("time-to-first-token", &loaded, format!("model_bucket_time_to_first_token_seconds_count{m} 1")),
        ("time-per-output-token", &loaded, format!("model_bucket_time_per_output_token_seconds_count{m} 1")),
        ("worker memory", &loaded, format!("model_bucket_worker_memory_bytes{m} ")),
        ("slots busy", &loaded, format!("model_bucket_slots_busy{m} 0")),
        ("queue depth", &loaded, format!("model_bucket_queue_depth{m} 0")),
        ("restarts", &loaded, format!("model_bucket_worker_restarts_total{m} 1")),
        ("evictions", &later, format!("model_bucket_evictions_total{m} 1")),
        ("budget and its use", &later, format!("model_bucket_ram_budget_bytes {}", 400u64 << 20)),
        ("budget and its use", &later, "model_bucket_ram_used_bytes ".to_string()),
    ];
    for (phrase, text, needle) in series {
        assert!(row.contains(phrase), "the README's /metrics row no longer says {phrase:?}: {row}");
        assert!(text.contains(&needle), "{needle} ({phrase}) not in:\n{text}");
    }
    assert!(later.contains(&format!("model_bucket_worker_memory_bytes{{model=\"{gemma}\"}} ")), "{later}");
    assert!(!later.contains(&format!("model_bucket_worker_memory_bytes{m}")), "an unloaded worker has no gauge");
}

// 9. "`Type=notify` (the server reports ready once it listens, and reloading/stopping)"

#[test]
fn sigterm_tells_systemd_the_server_is_stopping() {
    use std::os::unix::net::UnixDatagram;
    let sock_dir = tempfile::tempdir().unwrap();
    let path = sock_dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let dir = smol_bucket();
    let mut s = Server::start_with_env(dir.path(), &[], &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let mut buf = [0u8; 512];
    let mut next = || {
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = next();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    signal(s.child.id(), "TERM");
    let stopping = next();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
    let code = model_bucket_tests::worker::wait_exit(&mut s.child, Duration::from_secs(30));
    assert_eq!(code, Some(0), "{}", s.log());
}

// 10. "A model's `cpus = "0-3"` pins its worker (`sched_setaffinity`, before llama.cpp starts
//     its threads). With no `cpus`, a worker that runs fewer threads than the machine has cores
//     is pinned automatically to the cores the fewest running workers use."

/// A CPU list as Linux writes it ("0-2,5"), expanded.
fn cpu_list(text: &str) -> Vec<usize> {
    let mut cores = vec![];
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cores.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => cores.push(part.parse().unwrap()),
        }
    }
    cores
}

/// The cores process `pid` may run on, as the kernel reports them.
fn allowed_cores(pid: &str) -> Vec<usize> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).expect("Cpus_allowed_list");
    cpu_list(line)
}

#[test]
fn a_models_cpus_pins_its_real_worker() {
    let ours = allowed_cores("self");
    let core = *ours.last().unwrap();
    let config = format!("[models.{}]\ncpus = \"{core}\"\n", smol_id());
    let dir = smol_bucket();
    let config_path = dir.path().join("bucket.toml");
    std::fs::write(&config_path, config).unwrap();
    let s = Server::start(dir.path(), &["--config", config_path.to_str().unwrap()]);
    load(&s, &smol_id());
    let pid = s.worker_pid(&smol_id()).expect("pid");
    assert_eq!(allowed_cores(&pid.to_string()), vec![core], "{}", s.log());
    assert_eq!(worker(&s, &smol_id())["cores"], json!([core]));
}

#[test]
fn workers_with_fewer_threads_than_cores_get_disjoint_cores() {
    let ours = allowed_cores("self");
    assert!(ours.len() >= 2, "this test needs 2 cores; the process may use {ours:?}");
    let dir = smol_bucket();
    link_model(GEMMA_FILE, dir.path(), GEMMA_FILE);
    let s = Server::start(dir.path(), &["--threads", "1"]);
    load(&s, &smol_id());
    load(&s, &gemma_id());
    let pinned: Vec<Vec<usize>> =
        [smol_id(), gemma_id()].iter().map(|m| allowed_cores(&s.worker_pid(m).expect("pid").to_string())).collect();
    assert_eq!(pinned[0].len(), 1, "one thread, one core: {pinned:?}");
    assert_eq!(pinned[1].len(), 1, "one thread, one core: {pinned:?}");
    assert_ne!(pinned[0], pinned[1], "the second worker takes the core the first does not use");
    assert!(pinned.iter().all(|p| ours.contains(&p[0])), "{pinned:?} within {ours:?}");
}

// 11. "Once running, a worker counts as the larger of that estimate and its measured resident
//     memory (`/proc/PID/status`, every second), and idle workers are evicted if the total
//     grows past the budget."

#[test]
fn a_worker_growing_past_its_estimate_gets_the_idle_one_evicted() {
    // What each model counts against the budget before it grows (its estimate: the fake's own
    // memory is far less), from a server with room.
    let files = [SMOLLM2_FILE, GEMMA_FILE];
    let f = fake("ok", &files, None, &[]);
    load(&f.server, &smol_id());
    load(&f.server, &gemma_id());
    let counted = |m: &str| worker(&f.server, m)["budget_bytes"].as_u64().unwrap();
    let (smol, gemma) = (counted(&smol_id()), counted(&gemma_id()));
    drop(f);

    // Both fit with 64 MiB to spare, until Gemma's worker holds 128 MiB more than its estimate.
    let budget = (smol + gemma + (64 << 20)).to_string();
    let f = fake("ok", &files, None, &["--ram-budget", &budget]);
    load(&f.server, &smol_id());
    let grown = (gemma >> 20) + 128;
    f.set_mode(&format!("grow:{grown}"));
    load(&f.server, &gemma_id());
    assert!(
        eventually(Duration::from_secs(10), || f.state(&smol_id()) == "unloaded"),
        "SmolLM2, idle and least recently used, makes room: {}",
        f.server.log()
    );
    assert_eq!(f.state(&gemma_id()), "ready");
    // Memory is sampled every second: the count catches up with the growth.
    let counts_growth = || worker(&f.server, &gemma_id())["budget_bytes"].as_u64().unwrap() >= grown << 20;
    assert!(
        eventually(Duration::from_secs(5), counts_growth),
        "it counts what it measured: {}",
        worker(&f.server, &gemma_id())
    );
}

#[test]
fn the_readmes_first_request_answers_what_the_readme_shows() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let line =
        readme.lines().find(|l| l.starts_with("curl localhost:8080/v1/chat/completions")).expect("the first request");
    let body = line.split_once("-d '").unwrap().1.trim_end().trim_end_matches('\'');
    let dir = smol_bucket();
    let s = Server::start(dir.path(), &[]);
    let (status, resp) = s.post("/v1/chat/completions", body).unwrap();
    assert_eq!(status, 200, "{resp}");
    let v: Value = serde_json::from_str(resp.split_once("\r\n\r\n").map_or(resp.as_str(), |(_, b)| b)).unwrap();
    let answer = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        readme.contains(&format!("answers `\"content\": \"{answer}\"`")),
        "the README shows another answer than {answer:?}"
    );
}

/// Flags the README names that belong to other programs: llama-server's (`--jinja`,
/// `--spec-type`, `--embeddings`, `--pooling`, `--models-max`), cargo's,
/// kubernetes-validate's and llama.cpp's `convert_lora_to_gguf.py`'s.
const OTHER_PROGRAMS_FLAGS: [&str; 15] = [
    "--jinja",
    "--spec-type",
    "--slot-save-path",
    "--no-warmup",
    "--models-max",
    "--embeddings",
    "--pooling",
    "--release",
    "--features",
    "--bin",
    "--test",
    "--nocapture",
    "--strict",
    "--base",
    "--outfile",
];

/// Each flag in a help text with the text that describes it.
fn flags_of(help: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let t = line.trim_start();
        let named = t.strip_prefix("-").and_then(|_| t.split_whitespace().find(|w| w.starts_with("--")));
        match named {
            Some(f) => out.push((f.trim_end_matches(',').to_string(), String::new())),
            None => {
                if let Some(last) = out.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(t);
                }
            }
        }
    }
    out
}

#[test]
fn every_flag_the_readme_states_exists_with_the_default_it_states() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let help = |bin_name: &str, args: &[&str]| {
        let out = std::process::Command::new(bin(bin_name)).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut flags: Vec<(String, String)> = Vec::new();
    for c in ["serve", "list", "info", "generate", "ps", "load", "unload", "pull", "recommend", "add"] {
        flags.extend(flags_of(&help("model-bucket", &[c, "--help"])));
    }
    flags.extend(flags_of(&help("model-bucket-worker", &["--help"])));
    // An old name clap shows as `[alias: --old]` (or `[aliases: ...]`) is a flag too.
    let aliases: Vec<(String, String)> = flags
        .iter()
        .flat_map(|(_, text)| text.split("[alias").skip(1).filter_map(|s| s.split_once(": ")?.1.split(']').next()))
        .flat_map(|list| list.split(", ").map(|a| (a.trim().to_string(), String::new())))
        .collect();
    flags.extend(aliases);
    // The benchmark lists its flags on one line.
    let bench = help("model-bucket-bench", &["--help"]);
    flags.extend(bench.split(['[', ']', ' ']).filter(|w| w.starts_with("--")).map(|w| (w.to_string(), String::new())));
    // The stress runner reads its flags by hand.
    let stress = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/bin/stress.rs")).unwrap();
    flags.extend(
        stress.split('"').filter(|w| w.starts_with("--") && !w.contains(' ')).map(|w| (w.to_string(), String::new())),
    );
    // Every `--flag` inside backticks.
    let mut stated: Vec<String> = Vec::new();
    for code in readme.split('`').skip(1).step_by(2) {
        for w in code.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
            if w.starts_with("--")
                && w.len() > 2
                && w.as_bytes()[2].is_ascii_lowercase()
                && !stated.iter().any(|s| s == w)
            {
                stated.push(w.to_string());
            }
        }
    }
    assert!(stated.len() > 40, "{stated:?}");
    let missing: Vec<&String> = stated
        .iter()
        .filter(|f| !OTHER_PROGRAMS_FLAGS.contains(&f.as_str()) && !flags.iter().any(|(name, _)| name == *f))
        .collect();
    assert!(missing.is_empty(), "the README states flags no command has: {missing:?}");
    // "`--flag` (default X" and "`--flag` word (default X": X is the default the help shows.
    let mut checked = 0;
    for (at, _) in readme.match_indices("`--") {
        let rest = &readme[at + 1..];
        let Some(end) = rest.find('`') else { continue };
        let flag = &rest[..end];
        let after = &rest[end + 1..rest.len().min(end + 40)];
        let Some(d) = after.find("(default ") else { continue };
        if after[..d].split_whitespace().count() > 1 {
            continue;
        }
        let value: String = after[d + 9..]
            .chars()
            .take_while(|c| !matches!(c, ';' | ')') && !c.is_whitespace())
            .filter(|c| *c != '`')
            .collect::<String>()
            .trim_end_matches(',')
            .replace(',', "");
        let Some((_, text)) = flags.iter().find(|(name, text)| name == flag && text.contains("[default: ")) else {
            continue;
        };
        let shown = text.split("[default: ").nth(1).and_then(|s| s.split(']').next()).unwrap_or("");
        assert_eq!(value, shown, "the README says `{flag}` defaults to {value}; its help says {shown}");
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} stated defaults were checked");
}

// 12. "`--ram-budget` (...; default three quarters of the machine's memory or cgroup limit)"

#[test]
fn the_default_budget_is_three_quarters_of_memory_or_the_cgroup_limit() {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|s| s.trim().parse::<u64>().ok());
    let total = cgroup.map_or(kib * 1024, |c| c.min(kib * 1024));
    let dir = smol_bucket();
    let s = Server::start(dir.path(), &[]);
    let v = s.get_json("/admin/workers");
    assert_eq!(v["ram_budget_bytes"].as_u64(), Some(total / 4 * 3), "memory {total}, cgroup {cgroup:?}: {v}");
}

/// "The table below is written from those files ... and the test suite fails when it differs
/// from them": the README's benchmark table is what `docs/bench/*.json` give.
#[test]
fn the_readmes_benchmark_table_is_written_from_the_saved_runs() {
    let out = std::process::Command::new(bin("model-bucket-bench")).arg("--readme-check").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
