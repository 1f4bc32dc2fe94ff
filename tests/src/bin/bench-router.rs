//! What the router costs: the same requests sent straight to a worker over its socket and
//! through `model-bucket serve` over HTTP, alternating, same model, threads and slots.
//!
//! ```sh
//! cargo run --release -p model-bucket-tests --bin bench-router [-- --requests 200]
//! ```
//! Reports the median and p99 latency of 1-token completions (the router's overhead is the
//! difference) and the decode rate of one 256-token stream through each path.

use model_bucket_shared::protocol::*;
use model_bucket_tests::worker::TestWorker;
use model_bucket_tests::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const PROMPT: &str = "Once upon a time, in a small village by the sea,";
const EOS: i32 = 2;

fn main() {
    let mut n = 200usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--requests" => n = args.next().and_then(|v| v.parse().ok()).expect("--requests N"),
            other => panic!("unknown argument {other}"),
        }
    }
    let flags = ["--threads", "2", "--parallel", "4", "--ctx", "512"];
    let (mut w, _) = TestWorker::start(&model(SMOLLM2_FILE), &flags);
    let dir = tempfile::tempdir().expect("tempdir");
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    let server = Server::start(dir.path(), &flags);
    let mut http = Http::connect(server.port);
    let model = format!("eden_smollm2_135m_{}", &SMOLLM2_SHA[..6]);
    // Load the router's worker and warm both paths.
    for _ in 0..5 {
        http.completion(&model, 1);
        direct(&mut w, 1, 1);
    }

    let (mut d, mut r) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let t = Instant::now();
        direct(&mut w, 100 + i as u64, 1);
        d.push(t.elapsed());
        let t = Instant::now();
        http.completion(&model, 1);
        r.push(t.elapsed());
    }
    let (d50, d99, r50, r99) = (pct(&mut d, 50), pct(&mut d, 99), pct(&mut r, 50), pct(&mut r, 99));

    let mut ds = Vec::new();
    let mut rs = Vec::new();
    for i in 0..3 {
        ds.push(direct_stream(&mut w, 10_000 + i, 256));
        rs.push(router_stream(server.port, &model, 256));
    }
    ds.sort_by(f64::total_cmp);
    rs.sort_by(f64::total_cmp);
    println!("| SmolLM2, 2 threads, 4 slots, {n} requests | direct to worker | through router | router cost |");
    println!("|---|---|---|---|");
    println!("| 1-token completion, median | {:.2} ms | {:.2} ms | {:+.2} ms |", ms(d50), ms(r50), ms(r50) - ms(d50));
    println!("| 1-token completion, p99 | {:.2} ms | {:.2} ms | {:+.2} ms |", ms(d99), ms(r99), ms(r99) - ms(d99));
    println!("| 256-token stream, decode t/s (median of 3) | {:.1} | {:.1} | {:.3}× |", ds[1], rs[1], rs[1] / ds[1]);

    // 256 concurrent streaming clients across two models.
    link_model(GEMMA_FILE, dir.path(), GEMMA_FILE);
    drop(http);
    drop(server);
    drop(w);
    let server = Server::start(dir.path(), &flags);
    let gemma = format!("eden_gemma3_270m_{}", &GEMMA_SHA[..6]);
    let pid = server.child.id();
    let rss = || model_bucket_shared::mem::rss_bytes(Some(pid)).unwrap_or(0) as f64 / (1 << 20) as f64;
    let idle = rss();
    let mut peaks = Vec::new();
    let mut failures = 0;
    for round in 0..2 {
        let stop = std::sync::atomic::AtomicBool::new(false);
        let peak = std::sync::Mutex::new(0f64);
        let failed = std::thread::scope(|sc| {
            sc.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = rss();
                    let mut p = peak.lock().unwrap();
                    *p = p.max(r);
                    drop(p);
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
            let hs: Vec<_> = (0..256)
                .map(|i| {
                    let m = if i % 2 == 0 { model.clone() } else { gemma.clone() };
                    sc.spawn(move || std::panic::catch_unwind(|| router_stream(server.port, &m, 4)).is_err())
                })
                .collect();
            let failed = hs.into_iter().map(|h| h.join().unwrap_or(true)).filter(|f| *f).count();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            failed
        });
        failures += failed;
        peaks.push(peak.into_inner().unwrap());
        eprintln!("256 streams, round {}: {failed} failed", round + 1);
    }
    let after = rss();
    println!(
        "| 256 concurrent streams × 2 rounds, two models | router RSS idle {idle:.1} MiB | peak {:.1} / {:.1} MiB | after {after:.1} MiB, {failures} failed |",
        peaks[0], peaks[1]
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pct(v: &mut [Duration], p: usize) -> Duration {
    v.sort();
    v[(v.len() * p / 100).min(v.len() - 1)]
}

fn request(id: u64, max: u32) -> GenerateRequest {
    GenerateRequest {
        id: RequestId(id),
        prompt: Prompt::Text(PROMPT.into()),
        sampling: SamplingParams { temperature: 0.0, logit_bias: vec![(EOS, f32::NEG_INFINITY)], ..Default::default() },
        max_tokens: Some(max),
        stop: vec![],
        stream: true,
    }
}

/// One request straight to the worker, until Done.
fn direct(w: &mut TestWorker, id: u64, max: u32) {
    w.send(&ToWorker::Generate(Box::new(request(id, max))));
    loop {
        if let FromWorker::Done(_) = w.recv() {
            return;
        }
    }
}

/// Decode rate after the first token of one stream straight from the worker.
fn direct_stream(w: &mut TestWorker, id: u64, max: u32) -> f64 {
    w.send(&ToWorker::Generate(Box::new(request(id, max))));
    let mut first = None;
    loop {
        match w.recv() {
            FromWorker::Tokens { .. } => {
                first.get_or_insert_with(Instant::now);
            }
            FromWorker::Done(d) => {
                return (d.usage.completion_tokens - 1) as f64 / first.expect("tokens").elapsed().as_secs_f64()
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Decode rate after the first token of one SSE stream through the router.
fn router_stream(port: u16, model: &str, max: u32) -> f64 {
    let body = format!(
        r#"{{"model":"{model}","prompt":{},"max_tokens":{max},"temperature":0,"stream":true,"logit_bias":{{"{EOS}":-100}}}}"#,
        serde_json::to_string(PROMPT).expect("json")
    );
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        c,
        "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut first = None;
    let mut chunks = 0u32;
    for line in BufReader::new(c).lines() {
        let line = line.expect("read");
        if line == "data: [DONE]" {
            break;
        }
        if line.starts_with("data: ") && line.contains("\"text\":\"") && !line.contains("\"text\":\"\"") {
            first.get_or_insert_with(Instant::now);
            chunks += 1;
        }
    }
    assert!(chunks >= max / 2, "only {chunks} text chunks");
    (max - 1) as f64 / first.expect("text arrived").elapsed().as_secs_f64()
}

/// A keep-alive HTTP/1.1 connection for small JSON requests.
struct Http {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Http {
    fn connect(port: u16) -> Http {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        Http { r: BufReader::new(s.try_clone().expect("clone")), w: s }
    }

    fn completion(&mut self, model: &str, max: u32) {
        let body = format!(
            r#"{{"model":"{model}","prompt":{},"max_tokens":{max},"temperature":0,"logit_bias":{{"{EOS}":-100}}}}"#,
            serde_json::to_string(PROMPT).expect("json")
        );
        write!(
            self.w,
            "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut status = String::new();
        self.r.read_line(&mut status).expect("status line");
        assert!(status.contains(" 200 "), "{status}");
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            self.r.read_line(&mut h).expect("header");
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().expect("length");
            }
        }
        let mut body = vec![0u8; len];
        self.r.read_exact(&mut body).expect("body");
    }
}
