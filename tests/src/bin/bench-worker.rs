//! Worker throughput against llama.cpp's own llama-server, same model, threads and slots,
//! same run, alternating. Prints a table of ratios (Model Bucket / llama-server).
//!
//! ```sh
//! cargo run --release -p model-bucket-tests --bin bench-worker -- \
//!     --llama-server /path/to/llama-server [--model models/SmolLM2-135M-Instruct.Q4_1.gguf] [--threads 2]
//! ```
//! Workloads: one stream decoding 128 tokens; 4 and 16 concurrent streams of 128 tokens
//! (aggregate tokens/s); time to first token of a short prompt. EOS is banned so every request
//! produces exactly 128 tokens on both servers.

use model_bucket_shared::protocol::*;
use model_bucket_tests::worker::TestWorker;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const N_PREDICT: u32 = 128;
const PROMPT: &str = "Once upon a time, in a small village by the sea,";
const ROUNDS: usize = 3;

struct Opts {
    llama_server: PathBuf,
    model: PathBuf,
    threads: u32,
    slots: u32,
    eos: i32,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut o = Opts {
        llama_server: std::env::var_os("LLAMA_SERVER").map(PathBuf::from).unwrap_or_default(),
        model: model_bucket_tests::model(model_bucket_tests::SMOLLM2_FILE),
        threads: 2,
        slots: 16,
        eos: 2,
    };
    while let Some(a) = args.next() {
        let mut val = || args.next().expect("flag value");
        match a.as_str() {
            "--llama-server" => o.llama_server = val().into(),
            "--model" => o.model = val().into(),
            "--threads" => o.threads = val().parse().expect("threads"),
            "--eos" => o.eos = val().parse().expect("eos token id"),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(o.llama_server.is_file(), "pass --llama-server PATH (or LLAMA_SERVER); build recipe in README");

    let mut rows: Vec<(String, Vec<f64>, Vec<f64>)> = vec![
        ("decode t/s, 1 stream".into(), vec![], vec![]),
        ("aggregate t/s, 4 streams".into(), vec![], vec![]),
        ("aggregate t/s, 16 streams".into(), vec![], vec![]),
        ("TTFT ms, short prompt (lower is better)".into(), vec![], vec![]),
    ];
    let (mut w, _) = TestWorker::start(
        &o.model,
        &["--threads", &o.threads.to_string(), "--parallel", &o.slots.to_string(), "--ctx", "512"],
    );
    let server = LlamaServer::start(&o);
    for round in 0..ROUNDS {
        eprintln!("round {}/{ROUNDS}", round + 1);
        for (k, n) in [1usize, 4, 16].iter().enumerate() {
            rows[k].1.push(mb_streams(&mut w, *n, o.eos));
            rows[k].2.push(ls_streams(&server, *n, o.eos));
        }
        rows[3].1.push(mb_ttft(&mut w, o.eos));
        rows[3].2.push(ls_ttft(&server, o.eos));
    }
    println!(
        "| {} threads, {} slots, {} tokens per request | Model Bucket | llama-server | ratio |",
        o.threads, o.slots, N_PREDICT
    );
    println!("|---|---|---|---|");
    for (name, mb, ls) in rows {
        let (a, b) = (median(mb), median(ls));
        println!("| {name} | {a:.1} | {b:.1} | {:.2}× |", a / b);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

fn request(id: u64, eos: i32, max: u32) -> GenerateRequest {
    GenerateRequest {
        id: RequestId(id),
        prompt: Prompt::Text(PROMPT.into()),
        sampling: SamplingParams { temperature: 0.0, logit_bias: vec![(eos, f32::NEG_INFINITY)], ..Default::default() },
        max_tokens: Some(max),
        stop: vec![],
        stream: true,
    }
}

/// `n` concurrent requests; for one stream, the decode rate after the first token, else the
/// aggregate rate over the whole wall time.
fn mb_streams(w: &mut TestWorker, n: usize, eos: i32) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        w.send(&ToWorker::Generate(Box::new(request(1000 + i as u64, eos, N_PREDICT))));
    }
    let mut first = None;
    let mut done = 0;
    let mut tokens = 0u32;
    while done < n {
        match w.recv() {
            FromWorker::Tokens { .. } => {
                first.get_or_insert_with(Instant::now);
            }
            FromWorker::Done(d) => {
                tokens += d.usage.completion_tokens;
                done += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(tokens, N_PREDICT * n as u32);
    if n == 1 {
        (N_PREDICT - 1) as f64 / first.expect("tokens arrived").elapsed().as_secs_f64()
    } else {
        tokens as f64 / start.elapsed().as_secs_f64()
    }
}

fn mb_ttft(w: &mut TestWorker, eos: i32) -> f64 {
    let start = Instant::now();
    w.send(&ToWorker::Generate(Box::new(request(1, eos, 1))));
    let mut ttft = None;
    loop {
        match w.recv() {
            FromWorker::Tokens { .. } => {
                ttft.get_or_insert(start.elapsed());
            }
            FromWorker::Done(_) => break,
            other => panic!("{other:?}"),
        }
    }
    ttft.unwrap_or_else(|| start.elapsed()).as_secs_f64() * 1000.0
}

struct LlamaServer {
    child: Child,
    port: u16,
}

impl LlamaServer {
    fn start(o: &Opts) -> LlamaServer {
        let port = 18_000 + (std::process::id() % 1000) as u16;
        let child = Command::new(&o.llama_server)
            .args(["-m", o.model.to_str().expect("utf-8 path"), "--port", &port.to_string(), "--host", "127.0.0.1"])
            .args(["-t", &o.threads.to_string(), "-tb", &o.threads.to_string(), "-np", &o.slots.to_string()])
            .args(["-c", &(512 * o.slots).to_string(), "--no-webui", "--log-disable"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start llama-server");
        let s = LlamaServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok((200, _)) = s.http("GET", "/health", "") {
                return s;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("llama-server did not become healthy");
    }

    fn http(&self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        let mut c = TcpStream::connect(("127.0.0.1", self.port))?;
        write!(
            c,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut resp = String::new();
        c.read_to_string(&mut resp)?;
        let code = resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        Ok((code, resp))
    }

    /// Streams one completion; returns (time to first token, time of the last token, tokens).
    fn stream(&self, n_predict: u32, eos: i32) -> (Duration, Duration, u32) {
        let body = format!(
            r#"{{"prompt":{},"n_predict":{n_predict},"temperature":0,"stream":true,"cache_prompt":false,"logit_bias":[[{eos},false]]}}"#,
            serde_json::to_string(PROMPT).expect("json")
        );
        let start = Instant::now();
        let mut c = TcpStream::connect(("127.0.0.1", self.port)).expect("connect llama-server");
        write!(
            c,
            "POST /completion HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut first = None;
        let mut last = Duration::ZERO;
        let mut n = 0;
        for line in BufReader::new(c).lines() {
            let line = line.expect("read");
            if let Some(data) = line.strip_prefix("data: ") {
                let v: serde_json::Value = serde_json::from_str(data).expect("json chunk");
                if v["content"].as_str().is_some_and(|t| !t.is_empty())
                    || v["tokens"].as_array().is_some_and(|t| !t.is_empty())
                {
                    first.get_or_insert(start.elapsed());
                    last = start.elapsed();
                }
                if v["stop"] == true {
                    n = v["tokens_predicted"].as_u64().unwrap_or(0) as u32;
                    break;
                }
            }
        }
        (first.unwrap_or(last), last, n)
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ls_streams(s: &LlamaServer, n: usize, eos: i32) -> f64 {
    let start = Instant::now();
    let results: Vec<(Duration, Duration, u32)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..n).map(|_| sc.spawn(|| s.stream(N_PREDICT, eos))).collect();
        hs.into_iter().map(|h| h.join().expect("client thread")).collect()
    });
    let tokens: u32 = results.iter().map(|r| r.2).sum();
    assert_eq!(tokens, N_PREDICT * n as u32, "llama-server produced {tokens} tokens");
    if n == 1 {
        let (first, last, _) = results[0];
        (N_PREDICT - 1) as f64 / (last - first).as_secs_f64()
    } else {
        tokens as f64 / start.elapsed().as_secs_f64()
    }
}

fn ls_ttft(s: &LlamaServer, eos: i32) -> f64 {
    s.stream(1, eos).0.as_secs_f64() * 1000.0
}
