//! The server and its workers as processes, on the real SmolLM2: a worker killed mid-stream, a
//! SIGTERM during a generation, a SIGKILLed router.

use model_bucket_tests::server::{alive, eventually, signal, sse_lines};
use model_bucket_tests::*;
use std::time::Duration;

fn bucket() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    dir
}

/// A streamed completion of `max` tokens with EOS banned, with a usage chunk.
fn endless(max: u32) -> String {
    format!(
        r#"{{"model":"{}","prompt":"Once upon a time","max_tokens":{max},"temperature":0,"stream":true,"stream_options":{{"include_usage":true}},"logit_bias":{{"2":-100}}}}"#,
        smol_id()
    )
}

fn short_completion_works(s: &Server) -> bool {
    let body = format!(r#"{{"model":"{}","prompt":"Hi","max_tokens":4,"stream":true}}"#, smol_id());
    sse_lines(s.port, "/v1/completions", &body, Duration::from_secs(120))
        .any(|l| l.contains("\"finish_reason\":\"length\""))
}

#[test]
fn a_worker_killed_mid_stream_ends_that_stream_with_an_error_and_the_next_request_succeeds() {
    let dir = bucket();
    let s = Server::start(dir.path(), &["--parallel", "2", "--ctx", "512"]);
    let mut lines = sse_lines(s.port, "/v1/completions", &endless(100_000), Duration::from_secs(30));
    assert!(lines.next().is_some(), "the stream started:\n{}", s.log());
    let pid = s.worker_pid(&smol_id()).expect("worker loaded");
    signal(pid, "KILL");
    let rest: Vec<String> = lines.collect();
    let error = rest.iter().position(|l| l.contains("\"error\"")).unwrap_or_else(|| panic!("no error event: {rest:?}"));
    assert!(rest[error].contains("worker"), "{}", rest[error]);
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(rest.len(), error + 2, "nothing but [DONE] after the error");
    assert!(short_completion_works(&s), "a new worker serves the next request:\n{}", s.log());
    assert_ne!(s.worker_pid(&smol_id()), Some(pid));
}

#[test]
fn sigterm_lets_a_running_generation_finish_then_exits_zero_with_no_worker_left() {
    let dir = bucket();
    let mut s = Server::start(dir.path(), &["--parallel", "1", "--ctx", "512"]);
    let mut lines = sse_lines(s.port, "/v1/completions", &endless(150), Duration::from_secs(60));
    assert!(lines.next().is_some());
    let pid = s.worker_pid(&smol_id()).expect("worker loaded");
    signal(s.child.id(), "TERM");
    let rest: Vec<String> = lines.collect();
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("\"finish_reason\":\"length\"")), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("\"completion_tokens\":150")), "{rest:?}");
    let code = model_bucket_tests::worker::wait_exit(&mut s.child, Duration::from_secs(30));
    assert_eq!(code, Some(0), "{}", s.log());
    assert!(eventually(Duration::from_secs(10), || !alive(pid)), "worker {pid} outlived the router");
}

#[test]
fn sigkill_of_the_router_leaves_no_worker() {
    let dir = bucket();
    let mut s = Server::start(dir.path(), &["--parallel", "1", "--ctx", "512"]);
    assert!(short_completion_works(&s));
    let pid = s.worker_pid(&smol_id()).expect("worker loaded");
    signal(s.child.id(), "KILL");
    let _ = s.child.wait();
    assert!(eventually(Duration::from_secs(10), || !alive(pid)), "worker {pid} outlived a SIGKILLed router");
}
