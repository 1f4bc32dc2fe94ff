//! The live server under thousands of hostile requests (tests/src/mutate.rs): every answer is
//! a normal one or a 4xx with the error envelope, never a 5xx, never a hang, and afterwards the
//! server (and its worker, the same process) serves normally.
//!
//! `EDEN_FUZZ_CASES` (default 2,000, the CI run) and `EDEN_FUZZ_SEED` (default 1) size a longer
//! run: `EDEN_FUZZ_CASES=50000 cargo test --release -p model-bucket-tests --test fuzz_live -- --nocapture`.

use model_bucket_tests::mutate::{case, Case};
use model_bucket_tests::*;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// How long a stream is read before it is left (its rest cancelled): a request may ask for
/// more tokens than a context holds.
const STREAM_READ: Duration = Duration::from_millis(1500);

/// Sends one case: its status and body; a stream's body is read to its `[DONE]` or for
/// [`STREAM_READ`], with a `(left)` mark when it was left unfinished.
fn send(port: u16, c: &Case) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\n{}Content-Length: {}\r\nConnection: close\r\n\r\n",
        c.path,
        c.headers,
        c.body.len()
    );
    s.write_all(head.as_bytes()).and_then(|_| s.write_all(&c.body)).map_err(|e| format!("write: {e}"))?;
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).map_err(|e| format!("no status line (hung?): {e}"))?;
    let code: u16 =
        status.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or(format!("bad status line {status:?}"))?;
    let mut headers = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).map_err(|e| format!("headers: {e}"))?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        headers.push_str(&line);
    }
    if code == 200 {
        // A stream: read until [DONE] or the time is up; leaving cancels the rest.
        let until = Instant::now() + STREAM_READ;
        let mut body = headers;
        let mut buf = [0u8; 8192];
        r.get_ref().set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        loop {
            if body.contains("data: [DONE]") {
                return Ok((code, body));
            }
            if Instant::now() >= until {
                body.push_str("(left)");
                return Ok((code, body));
            }
            match r.read(&mut buf) {
                Ok(0) => return Ok((code, body)),
                Ok(n) => body.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(format!("stream: {e}")),
            }
        }
    }
    let mut body = String::new();
    r.read_to_string(&mut body).map_err(|e| format!("body: {e}"))?;
    Ok((code, body))
}

#[test]
fn hostile_requests_get_clear_errors_and_the_server_serves_on() {
    let cases = env_u64("EDEN_FUZZ_CASES", 2000);
    let seed = env_u64("EDEN_FUZZ_SEED", 1);
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    let s = Server::start(dir.path(), &["--ctx", "1024", "--parallel", "4"]);
    let normal =
        format!(r#"{{"model":"{}","prompt":"The capital of France is","max_tokens":4,"temperature":0}}"#, smol_id());
    let (status, first) = s.post("/v1/completions", &normal).unwrap();
    assert_eq!(status, 200, "{first}");
    let pid = s.worker_pid(&smol_id()).unwrap();
    let started = Instant::now();
    let mut by_status: BTreeMap<u16, u64> = BTreeMap::new();
    for i in 0..cases {
        let c = case(seed, i, &smol_id());
        let shown = || {
            format!(
                "seed {seed} case {i}: POST {} {}{}",
                c.path,
                c.headers,
                String::from_utf8_lossy(&c.body[..c.body.len().min(400)])
            )
        };
        let (code, body) = send(s.port, &c).unwrap_or_else(|e| panic!("{e}\n{}\n{}", shown(), s.log()));
        *by_status.entry(code).or_default() += 1;
        match code {
            200 => {
                assert!(
                    body.to_ascii_lowercase().contains("text/event-stream"),
                    "a 200 that is not a stream: {body}\n{}",
                    shown()
                );
                // A stream that ended says how: a finish reason or an error event, then [DONE].
                // A cut answer never looks complete: an error is never followed by a finish.
                if !body.ends_with("(left)") {
                    assert!(body.contains("data: [DONE]"), "a stream ended without [DONE]: {body}\n{}", shown());
                    let finished = body.contains("\"finish_reason\":\"");
                    let failed = body.contains("data: {\"error\"");
                    assert!(finished || failed, "a stream ended without a finish or an error: {body}\n{}", shown());
                    if let Some(at) = body.find("data: {\"error\"") {
                        assert!(
                            !body[at..].contains("\"finish_reason\":\""),
                            "a finish after an error: {body}\n{}",
                            shown()
                        );
                    }
                }
            }
            400..=499 => assert!(
                body.contains("\"error\"") && body.contains("\"message\""),
                "a {code} without the error envelope: {body}\n{}",
                shown()
            ),
            _ => panic!("{code}: {body}\n{}", shown()),
        }
    }
    eprintln!("fuzz: {cases} cases (seed {seed}) in {:.1} s: {by_status:?}", started.elapsed().as_secs_f64());
    let (status, again) = s.post("/v1/completions", &normal).unwrap();
    assert_eq!(status, 200, "{again}");
    assert_eq!(s.worker_pid(&smol_id()), Some(pid), "the worker never crashed");
    assert!(
        by_status.get(&200).copied().unwrap_or(0) > cases / 20,
        "too few valid requests to mean much: {by_status:?}"
    );
}
