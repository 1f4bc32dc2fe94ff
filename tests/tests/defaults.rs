//! README statements about the server's endpoints and defaults that no other test pinned, each
//! against the real server on the default models: `POST /admin/restart` restarts every worker;
//! `/admin/events` ends when the server stops; choice `k` of `n` samples with `seed + k`; a
//! request body must arrive within `--body-timeout`.

use model_bucket_tests::server::{alive, open, signal};
use model_bucket_tests::*;
use serde_json::json;
use std::io::{Read, Write};
use std::time::Duration;

/// Small contexts keep both workers small.
const SMALL: [&str; 4] = ["--ctx", "512", "--parallel", "2"];

fn both() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    link_model(GEMMA_FILE, dir.path(), GEMMA_FILE);
    dir
}

fn complete(s: &Server, model: &str) -> serde_json::Value {
    s.post_json("/v1/completions", &json!({ "model": model, "prompt": "The sea is", "max_tokens": 2 }))
}

/// "`POST /admin/restart`: the rolling restart SIGUSR1 does": every worker comes back as a new
/// process, never two down at once, and a restart asked for is not counted as a crash.
#[test]
fn post_admin_restart_restarts_every_worker_one_at_a_time() {
    let dir = both();
    let s = Server::start(dir.path(), &SMALL);
    complete(&s, &smol_id());
    complete(&s, &gemma_id());
    let (a, b) = (s.worker_pid(&smol_id()).unwrap(), s.worker_pid(&gemma_id()).unwrap());
    let (status, body) = s.post("/admin/restart", "").unwrap();
    assert_eq!(status, 202, "{body}");
    let (restarted, most_down) = s.watch_restart(&[smol_id(), gemma_id()], &[a, b]);
    assert!(restarted, "{}", s.log());
    assert!(most_down <= 1, "{most_down} workers were down at once");
    assert!(!alive(a) && !alive(b));
    complete(&s, &smol_id());
    let v = s.get_json("/admin/workers");
    assert!(v["workers"].as_array().unwrap().iter().all(|w| w["restarts"] == 0), "{v}");
}

/// "`GET /admin/events` ... ends when the server stops": after SIGTERM the stream ends with
/// the last chunk (not a reset, not an open socket), well inside the shutdown grace.
#[test]
fn admin_events_end_when_the_server_stops() {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    let mut s = Server::start(dir.path(), &SMALL);
    complete(&s, &smol_id());
    let mut c = open(s.port, "GET", "/admin/events", "", "", Some(Duration::from_secs(20))).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // The first event: every model as it is.
    while !String::from_utf8_lossy(&seen).contains("\"state\"") {
        let n = c.read(&mut buf).expect("the first event");
        assert!(n > 0, "the stream closed before its first event");
        seen.extend_from_slice(&buf[..n]);
    }
    signal(s.child.id(), "TERM");
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) => {
                panic!("the stream did not end within 20 s of SIGTERM ({e}):\n{}", String::from_utf8_lossy(&seen))
            }
        }
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.ends_with("0\r\n\r\n"), "the stream ends with its last chunk: {text:?}");
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// "choice k uses seed + k": each of `n` seeded choices is the answer a single request with the
/// seed plus its index gives, and they differ.
#[test]
fn choice_k_samples_with_seed_plus_k() {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    // A slot for each choice. Speculation is off so that only the seeds differ between the
    // requests compared (its own test holds it to the sampled distribution).
    let s = Server::start(dir.path(), &["--ctx", "512", "--parallel", "4"]);
    let ask = |n: u32, seed: u32| {
        let v = s.post_json(
            "/v1/completions",
            &json!({ "model": smol_id(), "prompt": "Once upon a time", "max_tokens": 12, "temperature": 1.0,
                     "n": n, "seed": seed, "speculative": false, "cache_prompt": false }),
        );
        let texts: Vec<String> =
            v["choices"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap().to_string()).collect();
        texts
    };
    let three = ask(3, 41);
    assert_eq!(three.len(), 3);
    assert!(three[0] != three[1] || three[1] != three[2], "the choices differ: {three:?}");
    for (k, text) in three.iter().enumerate() {
        assert_eq!(&ask(1, 41 + k as u32)[0], text, "choice {k}");
    }
}

/// "a body within `--body-timeout` seconds": a client that sends headers and part of its body
/// gets a 408 in the error envelope once the timeout passes, not a handler held forever.
#[test]
fn a_body_that_does_not_arrive_in_time_gets_408() {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    let s = Server::start(dir.path(), &["--body-timeout", "2"]);
    let mut c = std::net::TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":")
        .unwrap();
    let mut resp = String::new();
    let _ = c.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(resp.contains("did not arrive within 2 s") && resp.contains("\"error\""), "{resp}");
    // The server goes on.
    complete(&s, &smol_id());
}
