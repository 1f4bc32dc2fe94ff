//! A "daemon day" (`--only-day`): four task loops, as the daemon runs them, on the two default
//! models under a RAM budget that holds the larger worker's measured memory plus half the
//! smaller's (so only one fits), with random think times: a streamed conversation and a
//! JSON-schema command on SmolLM2, an intent label and a note summary on Gemma 3 270M. Run on
//! Model Bucket with its turns, with `--sched fifo` (the policy before turns), and on
//! llama-server's router mode (`--models-dir`, `--models-max 1`), one after the other, the same
//! time each. Reported per task: requests, errors by status, p50 and p95 of the whole request,
//! and model changes between consecutive answers (each one a swap where only one model fits);
//! Model Bucket also counts its swaps. Every request's record is kept as raw JSON.

use anyhow::{Context, Result};
use model_bucket_tests::server::{open, read_response};
use model_bucket_tests::{link_model, Server, GEMMA_FILE, SMOLLM2_FILE};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::llama::LlamaServer;
use crate::workloads::pct;
use crate::Opts;

/// Slots per model and context per slot, for both servers.
const SLOTS: u32 = 2;
const CTX: u32 = 2048;
/// Think time between a loop's requests, uniform in this range.
const THINK_MS: (u64, u64) = (200, 2000);

/// One task loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Thinking,
    Command,
    Intent,
    Memory,
}

const TASKS: [Task; 4] = [Task::Thinking, Task::Command, Task::Intent, Task::Memory];

impl Task {
    fn name(self) -> &'static str {
        match self {
            Task::Thinking => "thinking",
            Task::Command => "command",
            Task::Intent => "intent",
            Task::Memory => "memory",
        }
    }

    /// SmolLM2 (chat) or Gemma (completions).
    fn on_smol(self) -> bool {
        matches!(self, Task::Thinking | Task::Command)
    }
}

/// One request's outcome.
#[derive(Debug, Clone)]
pub struct Record {
    pub task: Task,
    pub status: u16,
    /// Seconds from the run's start to the request being sent and answered.
    pub sent: f64,
    pub done: f64,
    /// Seconds to the first streamed text (streamed requests).
    pub first: Option<f64>,
}

/// One server's run.
pub struct Run {
    pub name: String,
    pub records: Vec<Record>,
    /// Swaps the server counted (Model Bucket).
    pub swaps: Option<u64>,
    /// Seconds each swap took, from asking others to make room to the worker being ready
    /// (Model Bucket's log).
    pub swap_time: Vec<f64>,
}

pub struct DayResults {
    /// The models of the chat tasks and of the others.
    pub labels: [String; 2],
    pub budget_mib: u64,
    pub smol_mib: u64,
    pub gemma_mib: u64,
    /// What Model Bucket counts each as against the budget.
    pub smol_counted_mib: u64,
    pub gemma_counted_mib: u64,
    pub seconds: u64,
    pub runs: Vec<Run>,
}

/// A small deterministic generator for think times and inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

const QUESTIONS: [&str; 4] = [
    "Should I back up the notes folder before reorganising it? Think it through briefly.",
    "What is a good order to tidy a cluttered home directory?",
    "Why might a nightly job take longer on Mondays?",
    "How would you decide which of two log files to read first?",
];
const UTTERANCES: [&str; 4] = [
    "open my notes from yesterday",
    "remind me to call Dana at five",
    "what's the weather like",
    "delete the temp files",
];
const NOTES: [&str; 3] = [
    "Met Dana about the garden project. She will bring seedlings on Saturday; we agreed to water them every morning and to build a small fence against the rabbits.",
    "The backup drive is almost full. Old photos take most of the space; the plan is to move them to the archive disk and keep only this year's on the laptop.",
    "Tried the new bread recipe: too much salt, the crust was good. Next time halve the salt and bake five minutes longer at a lower temperature.",
];

/// The request body of `task` (its `i`-th), for a model named `model`, and its path.
fn body(task: Task, model: &str, i: u64, turns: &mut Vec<Value>) -> (&'static str, Value) {
    let pick = |list: &[&'static str]| list[i as usize % list.len()];
    match task {
        Task::Thinking => {
            if turns.len() >= 6 {
                turns.clear();
            }
            turns.push(json!({"role": "user", "content": pick(&QUESTIONS)}));
            let mut messages = vec![json!({"role": "system", "content": "You are a careful assistant."})];
            messages.extend(turns.iter().cloned());
            let b = json!({"model": model, "messages": messages, "max_tokens": 48, "temperature": 0.7, "stream": true});
            ("/v1/chat/completions", b)
        }
        Task::Command => {
            let schema = json!({
                "type": "object",
                "properties": {
                    "tool": {"type": "string", "enum": ["search_files", "read_file", "run_tests"]},
                    "path": {"type": "string"}
                },
                "required": ["tool", "path"]
            });
            let ask = format!("Write the command for: {}", pick(&UTTERANCES));
            let b = json!({
                "model": model, "max_tokens": 40, "temperature": 0,
                "messages": [{"role": "user", "content": ask}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "command", "schema": schema}}
            });
            ("/v1/chat/completions", b)
        }
        Task::Intent => {
            let prompt = format!("Utterance: {}\nIntent (one word):", pick(&UTTERANCES));
            ("/v1/completions", json!({"model": model, "prompt": prompt, "max_tokens": 4, "temperature": 0}))
        }
        Task::Memory => {
            let prompt = format!("Note: {}\nOne-sentence summary:", pick(&NOTES));
            ("/v1/completions", json!({"model": model, "prompt": prompt, "max_tokens": 48, "temperature": 0}))
        }
    }
}

/// Sends one request; returns its status and, for a stream, the time to its first text. A
/// streamed chat answer is added to `turns`.
fn send(port: u16, path: &str, body: &Value, start: Instant, turns: &mut Vec<Value>) -> (u16, Option<f64>) {
    let Ok(c) = open(port, "POST", path, "", &body.to_string(), Some(Duration::from_secs(900))) else {
        return (0, None);
    };
    if body["stream"] != true {
        return read_response(c).map(|(s, _)| (s, None)).unwrap_or((0, None));
    }
    let mut r = BufReader::new(c);
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return (0, None);
    }
    let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (mut first, mut text) = (None, String::new());
    for line in r.lines() {
        let Ok(line) = line else { return (0, first) };
        let Some(data) = line.strip_prefix("data: ") else { continue };
        if data == "[DONE]" {
            break;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else { continue };
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str().filter(|t| !t.is_empty()) {
            first.get_or_insert(start.elapsed().as_secs_f64());
            text.push_str(t);
        }
    }
    turns.push(json!({"role": "assistant", "content": text}));
    (status, first)
}

/// The four loops against `port` for `secs`, with the models named `smol` and `gemma`.
fn drive(port: u16, smol: &str, gemma: &str, secs: u64) -> Vec<Record> {
    let all = Mutex::new(Vec::new());
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(secs);
    std::thread::scope(|s| {
        for (k, task) in TASKS.into_iter().enumerate() {
            let all = &all;
            s.spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (k as u64 + 1));
                let mut turns = Vec::new();
                let model = if task.on_smol() { smol } else { gemma };
                let mut i = 0;
                while Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(rng.between(THINK_MS.0, THINK_MS.1)));
                    let (path, b) = body(task, model, i, &mut turns);
                    let sent = t0.elapsed().as_secs_f64();
                    let start = Instant::now();
                    let (status, first) = send(port, path, &b, start, &mut turns);
                    let done = t0.elapsed().as_secs_f64();
                    all.lock().unwrap().push(Record { task, status, sent, done, first });
                    i += 1;
                }
            });
        }
    });
    let mut records = all.into_inner().unwrap();
    records.sort_by(|a, b| a.done.total_cmp(&b.done));
    records
}

fn mb_flags<'a>(t: &'a str, slots: &'a str, ctx: &'a str) -> Vec<&'a str> {
    vec!["--threads", t, "--parallel", slots, "--ctx", ctx]
}

/// Each default model's worker's resident memory at these settings after a request, and what
/// the server counts it as, in bytes: ((SmolLM2, Gemma) measured, (SmolLM2, Gemma) counted).
fn measure(dir: &Path, o: &Opts, sizes: [u64; 2]) -> Result<((u64, u64), (u64, u64))> {
    let (t, slots, ctx) = (o.threads.to_string(), SLOTS.to_string(), CTX.to_string());
    let s = Server::start(dir, &mb_flags(&t, &slots, &ctx));
    let [smol, gemma] = ids_of(&s, sizes)?;
    let mut turns = Vec::new();
    let t0 = Instant::now();
    for task in [Task::Thinking, Task::Memory] {
        let model = if task.on_smol() { smol.clone() } else { gemma.clone() };
        let (path, b) = body(task, &model, 0, &mut turns);
        let (status, _) = send(s.port, path, &b, t0, &mut turns);
        anyhow::ensure!(status == 200, "{} answered {status}", task.name());
    }
    let v = s.get_json("/admin/workers");
    let read = |id: &str, field: &str| crate::client::worker_field(&v, id, field);
    Ok((
        (read(&smol, "memory_bytes")?, read(&gemma, "memory_bytes")?),
        (read(&smol, "budget_bytes")?, read(&gemma, "budget_bytes")?),
    ))
}

/// Model Bucket's IDs of the two models, found by their files' sizes.
fn ids_of(s: &Server, sizes: [u64; 2]) -> Result<[String; 2]> {
    let v = s.get_json("/v1/models");
    let find = |size: u64| {
        let models = v["data"].as_array().into_iter().flatten();
        let found = models.into_iter().find(|m| m["size_bytes"].as_u64() == Some(size));
        found.and_then(|m| m["id"].as_str()).map(String::from).with_context(|| format!("no model of {size} bytes: {v}"))
    };
    Ok([find(sizes[0])?, find(sizes[1])?])
}

pub fn run(o: &Opts, ls_bin: &Path) -> Result<DayResults> {
    let dir = tempfile::tempdir()?;
    // The chat tasks' model and the others', how each is labelled, and the part of its file
    // name llama-server's ID has.
    let (files, labels, keys) = match &o.day_synthetic {
        None => (
            [link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE), link_model(GEMMA_FILE, dir.path(), GEMMA_FILE)],
            ["SmolLM2".to_string(), "Gemma 3 270M".to_string()],
            ["smollm2".to_string(), "gemma".to_string()],
        ),
        Some((a, b)) => {
            let mut files = Vec::new();
            for size in [a, b] {
                let path = crate::switch::synthetic(size)?;
                let link = dir.path().join(path.file_name().context("file name")?);
                std::os::unix::fs::symlink(&path, &link)?;
                files.push(link);
            }
            let files: [std::path::PathBuf; 2] = files.try_into().expect("two");
            (
                files,
                [format!("synthetic {a} GB"), format!("synthetic {b} GB")],
                [format!("synthetic-{a}gb"), format!("synthetic-{b}gb")],
            )
        }
    };
    let sizes = [std::fs::metadata(&files[0])?.len(), std::fs::metadata(&files[1])?.len()];
    let ((smol_b, gemma_b), (smol_c, gemma_c)) = measure(dir.path(), o, sizes)?;
    // The larger measured worker plus half the smaller: one fits at a time. Where the server
    // counts a model as more than that, the same rule on what it counts, so that both can run.
    let measured = smol_b.max(gemma_b) + smol_b.min(gemma_b) / 2;
    let counted = smol_c.max(gemma_c) + smol_c.min(gemma_c) / 2;
    let budget = if smol_c.max(gemma_c) > measured { counted } else { measured };
    let budget_mib = budget >> 20;
    eprintln!(
        "bench: day: {} holds {} MiB (counted {}), {} {} MiB (counted {}): budget {budget_mib} MiB",
        labels[0],
        smol_b >> 20,
        smol_c >> 20,
        labels[1],
        gemma_b >> 20,
        gemma_c >> 20
    );
    let secs = o.day_seconds;
    let (t, slots, ctx) = (o.threads.to_string(), SLOTS.to_string(), CTX.to_string());
    let budget_arg = format!("{budget_mib}MiB");
    let mut runs = Vec::new();
    let defaults = ["--sched turns".to_string(), "--sched fifo".to_string()];
    let variants = if o.day_variants.is_empty() { &defaults[..] } else { &o.day_variants[..] };
    for variant in variants {
        eprintln!("bench: day: Model Bucket, {variant}, {secs} s");
        let mut args = mb_flags(&t, &slots, &ctx);
        args.extend(["--ram-budget", &budget_arg]);
        args.extend(variant.split_whitespace());
        let s = Server::start(dir.path(), &args);
        let [smol, gemma] = ids_of(&s, sizes)?;
        let records = drive(s.port, &smol, &gemma, secs);
        let swaps = crate::client::metric_sum(s.port, "model_bucket_evictions_total{");
        let took: Vec<f64> = s
            .log()
            .lines()
            .filter(|l| l.contains("swapped in"))
            .filter_map(|l| l.split("took_ms=").nth(1)?.split_whitespace().next()?.parse::<f64>().ok())
            .map(|ms| ms / 1000.0)
            .collect();
        runs.push(Run { name: format!("Model Bucket, {variant}"), records, swaps: Some(swaps), swap_time: took });
    }
    if !o.day_no_anchor {
        eprintln!("bench: day: llama-server router mode, --models-max 1, {secs} s");
        let ls = LlamaServer::start_router(ls_bin, dir.path(), o.threads, SLOTS, CTX, 1)?;
        let [smol, gemma]: [String; 2] =
            crate::client::ids_containing(ls.port, &[&keys[0], &keys[1]])?.try_into().expect("two parts, two ids");
        let records = drive(ls.port, &smol, &gemma, secs);
        let name = "llama-server router mode, --models-max 1".to_string();
        runs.push(Run { name, records, swaps: None, swap_time: Vec::new() });
    }
    Ok(DayResults {
        labels,
        budget_mib,
        smol_mib: smol_b >> 20,
        gemma_mib: gemma_b >> 20,
        smol_counted_mib: smol_c >> 20,
        gemma_counted_mib: gemma_c >> 20,
        seconds: secs,
        runs,
    })
}

/// Model changes between consecutive answers: where only one model fits, each is a swap.
fn changes(records: &[Record]) -> usize {
    records.windows(2).filter(|w| w[0].task.on_smol() != w[1].task.on_smol()).count()
}

/// Every request's record, for the report's raw data.
pub fn raw(r: &DayResults) -> Value {
    let runs: Vec<Value> = r
        .runs
        .iter()
        .map(|run| {
            let records: Vec<Value> = run
                .records
                .iter()
                .map(|x| json!({"task": x.task.name(), "status": x.status, "sent": x.sent, "done": x.done, "first": x.first}))
                .collect();
            json!({"server": run.name, "swaps": run.swaps, "swap_seconds": run.swap_time, "records": records})
        })
        .collect();
    json!({
        "budget_mib": r.budget_mib,
        "smollm2_mib": r.smol_mib,
        "gemma_mib": r.gemma_mib,
        "smollm2_counted_mib": r.smol_counted_mib,
        "gemma_counted_mib": r.gemma_counted_mib,
        "seconds": r.seconds,
        "runs": runs
    })
}

pub fn markdown(o: &Opts, r: &DayResults) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## A daemon day under a budget for one model\n");
    let _ = writeln!(s, "{}", crate::report::provenance());
    let _ = writeln!(
        s,
        "- Four loops for {} s each run, think time {}–{} ms: thinking (streamed chat, 48 tokens) and command (JSON schema, 40 tokens) on {}; intent (4 tokens) and memory (a summary, 48 tokens) on {}. {} threads, {SLOTS} slots of {CTX} tokens per model.",
        r.seconds, THINK_MS.0, THINK_MS.1, r.labels[0], r.labels[1], o.threads
    );
    let _ = writeln!(
        s,
        "- Budget {} MiB, the larger worker plus half the smaller, so one fits at a time: {}'s worker measured {} MiB (counted as {} MiB) and {}'s {} MiB (counted as {} MiB); where the count exceeds the measured rule, the rule is applied to the counts. llama-server holds one model (`--models-max 1`).\n",
        r.budget_mib, r.labels[1], r.gemma_mib, r.gemma_counted_mib, r.labels[0], r.smol_mib, r.smol_counted_mib
    );
    let _ = writeln!(
        s,
        "| server | task | requests | errors | p50 | p95 | first text p95 |\n|---|---|---|---|---|---|---|"
    );
    for run in &r.runs {
        for task in TASKS {
            let of: Vec<&Record> = run.records.iter().filter(|x| x.task == task).collect();
            let ok: Vec<f64> = of.iter().filter(|x| x.status == 200).map(|x| x.done - x.sent).collect();
            let mut errors: Vec<String> = Vec::new();
            for x in of.iter().filter(|x| x.status != 200) {
                let label = if x.status == 0 { "no answer".to_string() } else { x.status.to_string() };
                if !errors.contains(&label) {
                    errors.push(label);
                }
            }
            let n_err = of.iter().filter(|x| x.status != 200).count();
            let err = if n_err == 0 { "0".to_string() } else { format!("{n_err} ({})", errors.join(", ")) };
            let firsts: Vec<f64> = of.iter().filter_map(|x| x.first).collect();
            let first = if firsts.is_empty() { "–".to_string() } else { format!("{:.2} s", pct(&firsts, 95.0)) };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.2} s | {:.2} s | {} |",
                run.name,
                task.name(),
                of.len(),
                err,
                pct(&ok, 50.0),
                pct(&ok, 95.0),
                first
            );
        }
    }
    let _ = writeln!(
        s,
        "\n| server | requests | model changes between answers | per 100 requests | swaps counted | swap time p50 / p95 |\n|---|---|---|---|---|---|"
    );
    for run in &r.runs {
        let n = run.records.len();
        let c = changes(&run.records);
        let swaps = run.swaps.map(|x| x.to_string()).unwrap_or_else(|| "–".into());
        let took = if run.swap_time.is_empty() {
            "–".to_string()
        } else {
            format!("{:.2} / {:.2} s", pct(&run.swap_time, 50.0), pct(&run.swap_time, 95.0))
        };
        let _ =
            writeln!(s, "| {} | {n} | {c} | {:.0} | {swaps} | {took} |", run.name, c as f64 * 100.0 / n.max(1) as f64);
    }
    s
}
