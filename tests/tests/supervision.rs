//! Supervision with a fake worker binary that misbehaves on purpose (see
//! tests/src/bin/fake-worker.rs): crash loops, a crash while loading, a slow load, a worker
//! from another protocol version. The catalog holds the real SmolLM2; the fake ignores it.

use model_bucket_tests::*;
use std::time::Duration;

struct Fake {
    server: Server,
    log: tempfile::NamedTempFile,
    _dir: tempfile::TempDir,
}

fn fake(mode: &str, extra: &[&str]) -> Fake {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    let log = tempfile::NamedTempFile::new().unwrap();
    let bin = bin("fake-worker");
    let server = Server::start_with_env(
        dir.path(),
        extra,
        &[
            ("EDEN_WORKER_BIN", bin.to_str().unwrap()),
            ("EDEN_FAKE_MODE", mode),
            ("EDEN_FAKE_LOG", log.path().to_str().unwrap()),
        ],
    );
    Fake { server, log, _dir: dir }
}

impl Fake {
    fn starts(&self) -> usize {
        std::fs::read_to_string(self.log.path()).unwrap_or_default().lines().count()
    }
}

fn id() -> String {
    smol_id()
}

fn completion(max: u32) -> String {
    format!(r#"{{"model":"{}","prompt":"hi","max_tokens":{max}}}"#, id())
}

#[test]
fn a_crash_loop_ends_in_failed_not_an_endless_respawn() {
    let f = fake("crash-after:2", &[]);
    let mut statuses = vec![];
    for _ in 0..5 {
        let (status, body) = f.server.post("/v1/completions", &completion(10)).unwrap();
        assert!(body.contains("worker exited"), "{body}");
        statuses.push(status);
    }
    assert_eq!(statuses, vec![502; 5]);
    // The supervisor sees the exit a moment after the client does.
    assert!(
        server::eventually(Duration::from_secs(10), || f.server.model_state(&id()).0 == "failed"),
        "{}",
        f.server.log()
    );
    let (state, error) = f.server.model_state(&id());
    assert_eq!(state, "failed");
    assert!(error.contains("crashed 5 times") && error.contains("crashing on purpose"), "{error}");
    let (status, body) = f.server.post("/v1/completions", &completion(10)).unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    // Past the backoff a sixth start would have waited (0.5 s doubled four times: 8 s).
    std::thread::sleep(Duration::from_secs(9));
    assert_eq!(f.starts(), 5, "no respawn after the model failed");
}

#[test]
fn a_crash_while_loading_fails_the_model_at_once() {
    let f = fake("crash-on-load", &[]);
    let (status, body) = f.server.post("/v1/completions", &completion(4)).unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("failing to load on purpose"), "the worker's stderr reaches the client: {body}");
    assert_eq!(f.server.model_state(&id()).0, "failed");
    let (status, _) = f.server.post("/v1/completions", &completion(4)).unwrap();
    assert_eq!(status, 503);
    assert_eq!(f.starts(), 1);
}

#[test]
fn a_slow_load_answers_503_with_retry_after_then_serves() {
    let f = fake("slow-load:3000", &["--load-wait", "1"]);
    let (status, resp) = f.server.post("/v1/completions", &completion(4)).unwrap();
    assert_eq!(status, 503, "{resp}");
    assert!(resp.to_ascii_lowercase().contains("retry-after:"), "{resp}");
    assert_eq!(f.server.model_state(&id()).0, "loading");
    assert!(server::eventually(Duration::from_secs(30), || f.server.model_state(&id()).0 == "ready"));
    let (status, resp) = f.server.post("/v1/completions", &completion(4)).unwrap();
    assert_eq!(status, 200, "{resp}");
    assert!(resp.contains("word word word word"), "{resp}");
    assert_eq!(f.starts(), 1, "waiting requests share one load");
}

#[test]
fn a_worker_with_another_protocol_version_is_refused() {
    let f = fake("wrong-version", &[]);
    let (status, body) = f.server.post("/v1/completions", &completion(4)).unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("protocol mismatch"), "{body}");
    assert_eq!(f.server.model_state(&id()).0, "failed");
}

#[test]
fn a_crash_mid_stream_restarts_the_worker_for_the_next_request() {
    let f = fake("crash-after:3", &[]);
    let body = format!(r#"{{"model":"{}","prompt":"hi","max_tokens":10,"stream":true}}"#, id());
    let lines: Vec<String> =
        server::sse_lines(f.server.port, "/v1/completions", &body, Duration::from_secs(30)).collect();
    let texts = lines.iter().filter(|l| l.contains("\"text\":\"word \"")).count();
    assert_eq!(texts, 3, "{lines:?}");
    assert!(lines[lines.len() - 2].contains("\"error\""), "{lines:?}");
    assert_eq!(lines.last().map(String::as_str), Some("[DONE]"));
    // The restart happens without waiting for a request.
    assert!(server::eventually(Duration::from_secs(10), || f.starts() == 2));
}

#[test]
fn sighup_gives_a_failed_model_another_chance() {
    let f = fake("crash-on-load", &[]);
    let (status, _) = f.server.post("/v1/completions", &completion(4)).unwrap();
    assert_eq!(status, 502);
    assert_eq!(f.server.model_state(&id()).0, "failed");
    server::signal(f.server.child.id(), "HUP");
    assert!(server::eventually(Duration::from_secs(10), || f.server.model_state(&id()).0 == "unloaded"));
    let (status, body) = f.server.post("/v1/completions", &completion(4)).unwrap();
    assert_eq!(status, 502, "{body}");
    assert_eq!(f.starts(), 2, "the reset model was tried again");
}

#[test]
fn a_worker_that_ignores_the_drain_is_killed_after_the_grace() {
    let f = fake("ignore-shutdown", &["--shutdown-grace", "1"]);
    let (status, body) = f.server.post("/v1/completions", &completion(4)).unwrap();
    assert_eq!(status, 200, "{body}");
    let pid = f.server.worker_pid(&id()).expect("loaded");
    let (status, body) = f.server.post(&format!("/admin/models/{}/unload", id()), "").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("draining"), "{body}");
    assert!(server::eventually(Duration::from_secs(15), || !server::alive(pid)), "worker still alive");
    assert!(server::eventually(Duration::from_secs(5), || f.server.model_state(&id()).0 == "unloaded"));
    assert!(f.server.log().contains("did not exit after draining"), "{}", f.server.log());
    // It loads again on demand.
    let (status, _) = f.server.post("/v1/completions", &completion(4)).unwrap();
    assert_eq!(status, 200);
    assert_eq!(f.starts(), 2);
}
