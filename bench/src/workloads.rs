//! The workloads, run against both servers in the same process lifetime, alternating, with
//! the same model, threads, slots and context per slot.

use anyhow::{Context, Result};
use model_bucket_shared::protocol::*;
use model_bucket_tests::worker::TestWorker;
use model_bucket_tests::*;
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::client::{self, Dialect, Target};
use crate::llama::LlamaServer;
use crate::Opts;

pub const PROMPT: &str = "Once upon a time, in a small village by the sea,";
/// Tokens per request in the throughput runs.
pub const N_PREDICT: u32 = 128;
pub const CONCURRENCY: [usize; 5] = [1, 2, 4, 8, 16];
/// SmolLM2's end-of-sequence token, banned so that every request runs to its length.
const EOS: i32 = 2;
/// 1-token requests per server for the latency distributions.
const LATENCY_SAMPLES: usize = 150;
/// Streams held open for the router's memory.
const OPEN_STREAMS: usize = 256;

/// Runs `mb` and `ls` one after the other, `mb` first when `mb_first`; their results in that
/// order.
pub fn pair<A, B>(mb_first: bool, mb: impl FnOnce() -> Result<A>, ls: impl FnOnce() -> Result<B>) -> Result<(A, B)> {
    if mb_first {
        let a = mb()?;
        Ok((a, ls()?))
    } else {
        let b = ls()?;
        Ok((mb()?, b))
    }
}

/// A ~1,000-token prompt.
pub fn long_prompt() -> String {
    "The quick brown fox jumps over the lazy dog while the old miller counts his sacks of flour. ".repeat(50)
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Results {
    /// Tokens/s per concurrency level, one value per round.
    pub mb_tps: Vec<Vec<f64>>,
    pub ls_tps: Vec<Vec<f64>>,
    /// Time to first token, ms.
    pub ttft_short: (Vec<f64>, Vec<f64>),
    pub ttft_long: (Vec<f64>, Vec<f64>),
    /// 1-token request latency, ms, measured in pairs, alternating request by request (two
    /// servers idle between their turns still disturb each other, so only a pair compares):
    /// Model Bucket and llama-server;
    pub lat_mb: Vec<f64>,
    pub lat_ls: Vec<f64>,
    /// Model Bucket through its router and its worker straight over the socket (the router's cost);
    pub lat_router: Vec<f64>,
    pub lat_worker: Vec<f64>,
    /// llama-server serving one model and in router mode (`--models-dir`).
    pub lat_ls_direct: Vec<f64>,
    pub lat_ls_router: Vec<f64>,
    /// Process start to first token, s (page cache warm).
    pub cold_mb: Vec<f64>,
    pub cold_ls: Vec<f64>,
    /// llama-server with `--no-warmup`, as the worker starts.
    pub cold_ls_no_warmup: Vec<f64>,
    pub cold_ls_router: Option<Vec<f64>>,
    /// Requests that had to evict the other model first, s to their first token.
    pub swap_mb: Vec<f64>,
    /// `GET /v1/models` per second.
    pub models_rps: (f64, f64),
    /// MiB: router idle, router with the streams open, how many streams, Model Bucket's worker,
    /// llama-server (model loaded, idle).
    pub router_idle_mib: f64,
    pub router_streams_mib: f64,
    pub open_streams: usize,
    /// Of those, the ones whose answer had begun (a 200 read from the socket).
    pub streams_reading: usize,
    pub worker_mib: f64,
    pub ls_mib: f64,
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    s[s.len() / 2]
}

pub fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    s[((s.len() - 1) as f64 * p / 100.0).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mb_flags(o: &Opts) -> Vec<String> {
    vec![
        "--threads".into(),
        o.threads.to_string(),
        "--parallel".into(),
        o.slots.to_string(),
        "--ctx".into(),
        o.ctx.to_string(),
    ]
}

pub fn run(o: &Opts, ls_bin: &Path) -> Result<Results> {
    let mut r = Results {
        mb_tps: vec![vec![]; CONCURRENCY.len()],
        ls_tps: vec![vec![]; CONCURRENCY.len()],
        ..Default::default()
    };
    let dir = tempfile::tempdir()?;
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    let flags = mb_flags(o);
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let long = long_prompt();

    eprintln!("bench: throughput and time to first token ({} rounds)", o.rounds);
    {
        let mb = Server::start(dir.path(), &flag_refs);
        let mb_t = Target { port: mb.port, dialect: Dialect::ModelBucket, model: Some(smol_id()), eos: EOS };
        let ls = LlamaServer::start(ls_bin, Some(&model(SMOLLM2_FILE)), None, o.threads, o.slots, o.ctx)?;
        let ls_t = Target { port: ls.port, dialect: Dialect::LlamaServer, model: None, eos: EOS };
        for t in [&mb_t, &ls_t] {
            t.throughput(PROMPT, 2, 16).context("warm-up")?;
        }
        for round in 0..o.rounds {
            eprintln!("bench: round {}/{}", round + 1, o.rounds);
            // The servers take turns going first, round by round.
            let mb_first = round % 2 == 0;
            for (k, n) in CONCURRENCY.iter().enumerate() {
                let (a, b) = pair(
                    mb_first,
                    || mb_t.throughput(PROMPT, *n, N_PREDICT),
                    || ls_t.throughput(PROMPT, *n, N_PREDICT),
                )?;
                r.mb_tps[k].push(a);
                r.ls_tps[k].push(b);
            }
            let (a, b) = pair(mb_first, || mb_t.stream(PROMPT, 1), || ls_t.stream(PROMPT, 1))?;
            r.ttft_short.0.push(ms(a.first));
            r.ttft_short.1.push(ms(b.first));
            let (a, b) = pair(mb_first, || mb_t.stream(&long, 1), || ls_t.stream(&long, 1))?;
            r.ttft_long.0.push(ms(a.first));
            r.ttft_long.1.push(ms(b.first));
        }
        eprintln!("bench: 1-token latency");
        for i in 0..LATENCY_SAMPLES {
            let (a, b) = pair(i % 2 == 0, || mb_t.one_token(PROMPT), || ls_t.one_token(PROMPT))?;
            r.lat_mb.push(ms(a));
            r.lat_ls.push(ms(b));
        }
        r.models_rps = (
            client::get_rate(mb.port, "/v1/models", 4, Duration::from_secs(3)),
            client::get_rate(ls.port, "/v1/models", 4, Duration::from_secs(3)),
        );
        r.ls_mib = client::rss_mib(ls.child.id());
        r.worker_mib = mb.worker_pid(&smol_id()).map(client::rss_mib).unwrap_or(f64::NAN);
    }

    eprintln!("bench: the router's cost (router and worker alternating)");
    {
        let mb = Server::start(dir.path(), &flag_refs);
        let mb_t = Target { port: mb.port, dialect: Dialect::ModelBucket, model: Some(smol_id()), eos: EOS };
        let (mut w, _) = TestWorker::start(&model(SMOLLM2_FILE), &flag_refs);
        for i in 0..LATENCY_SAMPLES as u64 + 5 {
            let t = Instant::now();
            direct_one_token(&mut w, i + 1);
            let worker = ms(t.elapsed());
            let router = ms(mb_t.one_token(PROMPT)?);
            if i >= 5 {
                r.lat_worker.push(worker);
                r.lat_router.push(router);
            }
        }
    }

    eprintln!("bench: llama-server's router mode (alternating with plain llama-server)");
    match ls_router(o, ls_bin, dir.path()) {
        Ok((cold, direct, router)) => {
            r.cold_ls_router = Some(cold);
            r.lat_ls_direct = direct;
            r.lat_ls_router = router;
        }
        Err(e) => eprintln!("bench: llama-server router mode skipped: {e:#}"),
    }

    eprintln!("bench: cold start");
    let smol = model(SMOLLM2_FILE);
    for round in 0..o.rounds {
        let mb_cold = || -> Result<f64> {
            let t = Instant::now();
            let mb = Server::start(dir.path(), &flag_refs);
            Target { port: mb.port, dialect: Dialect::ModelBucket, model: Some(smol_id()), eos: EOS }
                .stream(PROMPT, 1)?;
            Ok(t.elapsed().as_secs_f64())
        };
        // llama-server warms up at start by default (one empty decode), which the worker does
        // not: both are measured, its default and `--no-warmup`.
        let ls_cold = |extra: &[&str]| -> Result<f64> {
            let t = Instant::now();
            let ls = LlamaServer::start_with(ls_bin, &smol, o.threads, o.slots, o.ctx, extra)?;
            Target { port: ls.port, dialect: Dialect::LlamaServer, model: None, eos: EOS }.stream(PROMPT, 1)?;
            Ok(t.elapsed().as_secs_f64())
        };
        let (a, b) = pair(round % 2 == 0, mb_cold, || ls_cold(&[]))?;
        r.cold_mb.push(a);
        r.cold_ls.push(b);
        r.cold_ls_no_warmup.push(ls_cold(&["--no-warmup"])?);
    }

    eprintln!("bench: swapping under a budget for one model");
    {
        let both = tempfile::tempdir()?;
        link_model(SMOLLM2_FILE, both.path(), SMOLLM2_FILE);
        link_model(GEMMA_FILE, both.path(), GEMMA_FILE);
        let t = o.threads.to_string();
        let mb =
            Server::start(both.path(), &["--threads", &t, "--parallel", "2", "--ctx", "512", "--ram-budget", "400MiB"]);
        let gemma = gemma_id();
        for i in 0..(2 * o.rounds + 1) {
            let model = if i % 2 == 0 { smol_id() } else { gemma.clone() };
            let eos = if i % 2 == 0 { EOS } else { 1 };
            let start = Instant::now();
            Target { port: mb.port, dialect: Dialect::ModelBucket, model: Some(model), eos }.stream(PROMPT, 1)?;
            if i > 0 {
                r.swap_mb.push(start.elapsed().as_secs_f64());
            }
        }
    }

    eprintln!("bench: router memory");
    {
        // Room in the queue for every stream: each is admitted, none answered 429.
        let mut flags = flag_refs.clone();
        let queue = OPEN_STREAMS.to_string();
        flags.extend(["--max-queue", &queue]);
        let mb = Server::start(dir.path(), &flags);
        std::thread::sleep(Duration::from_millis(300));
        r.router_idle_mib = client::rss_mib(mb.child.id());
        let body = format!(
            r#"{{"model":"{}","prompt":"Once","max_tokens":100000,"stream":true,"logit_bias":{{"{EOS}":-100}}}}"#,
            smol_id()
        );
        let mut conns = Vec::new();
        for _ in 0..OPEN_STREAMS {
            let mut c = TcpStream::connect(("127.0.0.1", mb.port))?;
            write!(
                c,
                "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )?;
            conns.push(c);
        }
        // Admitted: generating in a slot or waiting in the worker's queue (the model loads
        // first); then a moment for the router's memory to settle.
        let admitted = || {
            let row = mb.worker_row(&smol_id());
            (row["slots_busy"].as_u64().unwrap_or(0), row["queued"].as_u64().unwrap_or(0))
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while admitted().0 + admitted().1 < OPEN_STREAMS as u64 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(2));
        let (busy, queued) = admitted();
        anyhow::ensure!(
            busy + queued == OPEN_STREAMS as u64,
            "{busy} generating and {queued} queued of {OPEN_STREAMS}: {}",
            mb.log()
        );
        // The generating ones are streaming: their first bytes are a 200.
        let mut buf = [0u8; 64];
        for c in &mut conns {
            c.set_read_timeout(Some(Duration::from_millis(20)))?;
            if let Ok(n) = std::io::Read::read(c, &mut buf) {
                anyhow::ensure!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
                r.streams_reading += 1;
            }
        }
        r.router_streams_mib = client::rss_mib(mb.child.id());
        r.open_streams = (busy + queued) as usize;
        drop(conns);
    }
    Ok(r)
}

/// llama-server serving a folder: (cold start to first token, then 1-token latencies of plain
/// llama-server and of router mode, alternating).
fn ls_router(o: &Opts, bin: &Path, dir: &Path) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let plain = LlamaServer::start(bin, Some(&model(SMOLLM2_FILE)), None, o.threads, o.slots, o.ctx)?;
    let plain_t = Target { port: plain.port, dialect: Dialect::LlamaServer, model: None, eos: EOS };
    plain_t.stream(PROMPT, 1)?;
    let t = Instant::now();
    let ls = LlamaServer::start(bin, None, Some(dir), o.threads, o.slots, o.ctx)?;
    let (_, body) = client::get(ls.port, "/v1/models")?;
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let id = v["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str())
        .find(|id| id.to_ascii_lowercase().contains("smollm2"))
        .context("router mode lists no SmolLM2 model")?
        .to_string();
    let target = Target { port: ls.port, dialect: Dialect::LlamaServer, model: Some(id), eos: EOS };
    target.stream(PROMPT, 1)?;
    let cold = vec![t.elapsed().as_secs_f64()];
    let (mut direct, mut router) = (Vec::new(), Vec::new());
    for _ in 0..LATENCY_SAMPLES {
        direct.push(ms(plain_t.one_token(PROMPT)?));
        router.push(ms(target.one_token(PROMPT)?));
    }
    Ok((cold, direct, router))
}

/// A 1-token request straight to a worker over its socket.
fn direct_one_token(w: &mut TestWorker, id: u64) {
    w.send(&ToWorker::Generate(Box::new(GenerateRequest {
        id: RequestId(id),
        prompt: Prompt::Text(PROMPT.into()),
        sampling: SamplingParams { temperature: 0.0, logit_bias: vec![(EOS, f32::NEG_INFINITY)], ..Default::default() },
        max_tokens: Some(1),
        stop: vec![],
        stream: true,
        // The cold workload: every request prefilled from its first token.
        cache_prompt: false,
        constraint: None,
        logprobs: None,
        tools: None,
        lora: Vec::new(),
        count_only: false,
        speculative: true,
    })));
    loop {
        match w.recv() {
            FromWorker::Done(_) => return,
            FromWorker::Tokens { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}
