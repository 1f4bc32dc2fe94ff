//! Speculation (`--only-spec`): the decode rate of what an agent daemon writes, on both default
//! models, Model Bucket on its defaults (n-gram speculation on) against llama-server on its
//! defaults (none) and with each of its n-gram speculation types, same threads, slots and
//! context, 1 and 4 streams.
//!
//! Workloads: copy a passage; rewrite a record as JSON (free, and constrained by a schema);
//! extract fields from a ~600-token document as JSON under a schema; give back a ~300-token
//! code block with one change; summarise a note quoting its key sentence; free prose. Greedy,
//! no `max_tokens` beyond a cap, EOS allowed: each server writes its own answer (the same text
//! but for near-ties). The rate is measured from the client: tokens after the first over the
//! time from the first streamed text to the last; for 4 streams, all tokens over the time from
//! the first stream's first text to the last stream's last. Servers take turns request by
//! request, the order alternating between rounds. SmolLM2 takes chat; Gemma 3's file has no
//! chat template, so it takes the same texts as completions on both servers.

use anyhow::{Context, Result};
use model_bucket_tests::*;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use crate::llama::LlamaServer;
use crate::workloads::median;
use crate::Opts;

/// Context per slot, and slots (streams at most).
const CTX: u32 = 2048;
const SLOTS: u32 = 4;
/// The most tokens an answer may take.
const CAP: u32 = 320;
/// llama-server's n-gram speculation types, each tried.
pub const SPEC_TYPES: [&str; 3] = ["ngram-simple", "ngram-map-k", "ngram-mod"];

const PASSAGE: &str = "The old lighthouse stood at the edge of the cliff, its white paint peeling in long strips. Every evening the keeper climbed the one hundred and twelve steps to light the lamp, and every morning he climbed them again to put it out. Ships passing in the night saw the beam sweep across the water and knew that the rocks were near. In the winter storms the waves rose so high that spray reached the lantern room, and the keeper would sit by the glass and listen to the wind. He kept a logbook of every ship he saw, writing its name, its flag and the hour it passed. After forty years the logbook filled eleven volumes, and the keeper said that each one held a small history of the sea.";

const RECORD: &str = "name: Dana Reyes; city: Lisbon; role: gardener; since: 2019; phone: +351 912 345 678; email: dana.reyes@example.org; projects: community garden, seed library, rabbit fence; notes: brings seedlings on Saturdays, prefers morning calls";

const CODE: &str = r#"use std::collections::HashMap;

/// Counts how often each word occurs in `text`, ignoring case.
pub fn word_counts(text: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for word in text.split_whitespace() {
        let word = word.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();
        if word.is_empty() {
            continue;
        }
        *counts.entry(word).or_insert(0) += 1;
    }
    counts
}

/// The `n` most frequent words of `text`, most frequent first.
pub fn top_words(text: &str, n: usize) -> Vec<(String, usize)> {
    let mut all: Vec<(String, usize)> = word_counts(text).into_iter().collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(n);
    all
}

/// Whether `text` uses `word` at least `times` times.
pub fn uses(text: &str, word: &str, times: usize) -> bool {
    word_counts(text).get(&word.to_lowercase()).copied().unwrap_or(0) >= times
}
"#;

const NOTE: &str = "Garden meeting, Tuesday. Present: Dana, Omar, Lea. The seed library now holds 140 packets, most of them tomatoes and beans. Omar repaired the water pump on Sunday; it still leaks at the joint and needs a new seal. The key decision: we will build the rabbit fence before the seedlings go out on the 14th. Lea will ask the council for wood, Dana will bring the seedlings, and everyone waters in the mornings.";

/// A ~600-token document for the extraction workload.
fn document() -> String {
    let mut d = String::from("INCIDENT REPORT 2026-117\n\n");
    let parts = [
        "Reported by: Omar Haddad, facilities team. Location: north greenhouse, bay 3. Date: 12 November 2026, 07:40.",
        "Summary: the irrigation controller stopped at 02:15 and the north greenhouse went without water for five hours. The backup timer did not start because its battery was flat.",
        "Impact: about forty seedlings wilted; twelve were lost. The tomato trays in bay 3 took the most damage. No one was hurt.",
        "Cause: a power surge during the storm reset the controller to factory settings, which have all zones switched off. The surge protector on that circuit had been removed in September for repairs and not put back.",
        "Actions taken: Omar restarted the controller at 07:55 and restored the saved schedule from the configuration card. Lea replaced the backup timer battery. The lost seedlings will be replaced from the seed library.",
        "Follow-up: reinstall the surge protector (owner: Omar, due 20 November); add a low-battery alarm to the backup timer (owner: Lea, due 30 November); review the other greenhouses for the same risk (owner: Dana, due 5 December).",
        "Cost: 36 euros for seedlings, 8 euros for the battery. Severity: moderate. Status: open until the follow-up actions are done.",
    ];
    for _ in 0..2 {
        for p in parts {
            d.push_str(p);
            d.push_str("\n\n");
        }
    }
    d
}

fn extract_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": {"type": "string", "maxLength": 20},
            "reporter": {"type": "string", "maxLength": 40},
            "location": {"type": "string", "maxLength": 60},
            "severity": {"enum": ["low", "moderate", "high"]},
            "lost_seedlings": {"type": "integer"},
            "owners": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 4}
        },
        "required": ["id", "reporter", "location", "severity", "lost_seedlings", "owners"],
        "additionalProperties": false
    })
}

fn record_schema() -> Value {
    let s = |n: u32| json!({"type": "string", "maxLength": n});
    json!({
        "type": "object",
        "properties": {
            "name": s(40), "city": s(40), "role": s(40), "since": {"type": "integer"}, "phone": s(30),
            "email": s(60), "projects": {"type": "array", "items": s(40), "maxItems": 5}, "notes": s(120)
        },
        "required": ["name", "city", "role", "since", "phone", "email", "projects", "notes"],
        "additionalProperties": false
    })
}

/// One workload: its name, the text asked, and the schema that constrains the answer, if any.
struct Workload {
    name: &'static str,
    text: String,
    schema: Option<Value>,
}

fn workloads() -> Vec<Workload> {
    let w = |name, text: String, schema| Workload { name, text, schema };
    vec![
        w("copy a passage", format!("Copy this passage exactly, word for word:\n\n{PASSAGE}"), None),
        w("a record as JSON", format!("Write this record as a JSON object with the same fields and values:\n\n{RECORD}"), None),
        w("a record as JSON (schema)", format!("Write this record as a JSON object with the same fields and values:\n\n{RECORD}"), Some(record_schema())),
        w("fields of a document (schema)", format!("{}\nExtract the report's id, reporter, location, severity, lost seedlings and follow-up owners as JSON.", document()), Some(extract_schema())),
        w("code with one change", format!("Rename the function `uses` to `mentions` in this code and give back the whole file:\n\n{CODE}"), None),
        w("a summary quoting a sentence", format!("Summarise this note in two sentences, quoting its key decision word for word:\n\n{NOTE}"), None),
        w("free prose", "Write a short story about a fox who learns to sail.".to_string(), None),
    ]
}

/// A server under test, how it is asked, and what it is called in the report.
struct Side {
    name: String,
    port: u16,
    /// The `model` field (Model Bucket), or none (a single-model llama-server).
    model: Option<String>,
}

/// The request body for `w` on `side`: chat for a model with a template, completions for one
/// without.
fn body(side: &Side, w: &Workload, chat: bool) -> (&'static str, Value) {
    let mut b = json!({
        "max_tokens": CAP, "temperature": 0, "stream": true, "stream_options": {"include_usage": true},
    });
    if let Some(m) = &side.model {
        b["model"] = json!(m);
    }
    let path = if chat {
        b["messages"] = json!([{"role": "user", "content": w.text}]);
        if let Some(s) = &w.schema {
            b["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "answer", "schema": s}});
        }
        "/v1/chat/completions"
    } else {
        b["prompt"] = json!(format!("{}\n\n", w.text));
        if let Some(s) = &w.schema {
            b["json_schema"] = s.clone();
        }
        "/v1/completions"
    };
    (path, b)
}

/// One streamed answer: (time of its first text, of its last text, tokens).
struct Timed {
    first: Instant,
    last: Instant,
    tokens: u64,
}

fn stream(port: u16, path: &str, body: &Value) -> Result<Timed> {
    let (mut first, mut last, mut tokens) = (None, Instant::now(), 0);
    crate::client::each_event(port, path, body, |v| {
        let c = &v["choices"][0];
        let text = c["delta"]["content"].as_str().or(c["text"].as_str()).unwrap_or("");
        if !text.is_empty() {
            let now = Instant::now();
            first.get_or_insert(now);
            last = now;
        }
        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
            tokens = n;
        } else if let Some(n) = v["timings"]["predicted_n"].as_u64() {
            tokens = n;
        }
    })?;
    Ok(Timed { first: first.context("no text streamed")?, last, tokens })
}

/// Decode rate of `streams` concurrent answers to `w` on `side`, from the client, and the
/// tokens of one answer.
fn rate(side: &Side, w: &Workload, chat: bool, streams: usize) -> Result<(f64, u64)> {
    let (path, b) = body(side, w, chat);
    let answers: Vec<Result<Timed>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..streams).map(|_| s.spawn(|| stream(side.port, path, &b))).collect();
        hs.into_iter().map(|h| h.join().expect("client thread")).collect()
    });
    let answers: Vec<Timed> = answers.into_iter().collect::<Result<_>>()?;
    let first = answers.iter().map(|a| a.first).min().expect("a stream");
    let last = answers.iter().map(|a| a.last).max().expect("a stream");
    let tokens: u64 = answers.iter().map(|a| a.tokens).sum();
    let counted = if streams == 1 { tokens.saturating_sub(1) } else { tokens };
    let secs = last.duration_since(first).as_secs_f64().max(1e-6);
    Ok((counted as f64 / secs, tokens / streams as u64))
}

/// One model's figures: per workload and stream count, per side, the rates of the rounds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ModelRun {
    pub model: String,
    pub sides: Vec<String>,
    /// (workload, streams, per side: rates, tokens of the last answer; Model Bucket's drafted
    /// and kept tokens).
    pub rows: Vec<Row>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Row {
    pub workload: String,
    pub streams: usize,
    pub rates: Vec<Vec<f64>>,
    pub tokens: Vec<u64>,
    pub drafted: u64,
    pub accepted: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Results {
    pub provenance: String,
    pub date: String,
    pub threads: u32,
    pub rounds: usize,
    pub models: Vec<ModelRun>,
}

fn run_model(o: &Opts, ls_bin: &Path, file: &str, id: String, chat: bool) -> Result<ModelRun> {
    let dir = tempfile::tempdir()?;
    link_model(file, dir.path(), file);
    let (t, slots, ctx) = (o.threads.to_string(), SLOTS.to_string(), CTX.to_string());
    let mb = Server::start(dir.path(), &["--threads", &t, "--parallel", &slots, "--ctx", &ctx]);
    let mut llama = vec![LlamaServer::start_with(ls_bin, &model(file), o.threads, SLOTS, CTX, &[])?];
    for ty in SPEC_TYPES {
        llama.push(LlamaServer::start_with(ls_bin, &model(file), o.threads, SLOTS, CTX, &["--spec-type", ty])?);
    }
    let mut sides = vec![Side { name: "Model Bucket".into(), port: mb.port, model: Some(id.clone()) }];
    sides.push(Side { name: "llama-server".into(), port: llama[0].port, model: None });
    for (ty, ls) in SPEC_TYPES.iter().zip(&llama[1..]) {
        sides.push(Side { name: format!("llama-server --spec-type {ty}"), port: ls.port, model: None });
    }
    let mut run = ModelRun { model: id, sides: sides.iter().map(|s| s.name.clone()).collect(), rows: vec![] };
    for w in workloads() {
        for streams in [1, 4] {
            let mut row =
                Row { workload: w.name.into(), streams, rates: vec![vec![]; sides.len()], ..Default::default() };
            row.tokens = vec![0; sides.len()];
            // A warm-up each (the prompt then comes from each server's cache, as a daemon's
            // repeated instructions do), then rounds, the order turned around each round.
            for s in &sides {
                rate(s, &w, chat, streams)?;
            }
            for round in 0..o.rounds.max(1) {
                let mut order: Vec<usize> = (0..sides.len()).collect();
                if round % 2 == 1 {
                    order.reverse();
                }
                // Streamed answers carry no timings: Model Bucket's proposals are read from
                // its counters.
                let counted = |name: &str| crate::client::metric_sum(mb.port, &format!("model_bucket_{name}_total{{"));
                let before = (counted("draft_tokens"), counted("draft_accepted_tokens"));
                for i in order {
                    let (r, tokens) = rate(&sides[i], &w, chat, streams)?;
                    row.rates[i].push(r);
                    row.tokens[i] = tokens;
                }
                row.drafted += counted("draft_tokens") - before.0;
                row.accepted += counted("draft_accepted_tokens") - before.1;
            }
            eprintln!(
                "bench: spec: {} / {} / {streams}: {}",
                run.model,
                w.name,
                row.rates.iter().map(|r| format!("{:.1}", median(r))).collect::<Vec<_>>().join(" ")
            );
            run.rows.push(row);
        }
    }
    Ok(run)
}

pub fn run(o: &Opts, ls_bin: &Path) -> Result<Results> {
    let mut r = Results {
        provenance: crate::report::provenance(),
        date: crate::report::date(),
        threads: o.threads,
        rounds: o.rounds.max(1),
        models: vec![],
    };
    r.models.push(run_model(o, ls_bin, SMOLLM2_FILE, smol_id(), true)?);
    r.models.push(run_model(o, ls_bin, GEMMA_FILE, gemma_id(), false)?);
    Ok(r)
}

pub fn markdown(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Speculation: what an agent daemon writes\n");
    let _ = writeln!(
        s,
        "{}; {}; {} threads; {} slots of {CTX} tokens; median of {} rounds; raw numbers in `spec.json`.\n",
        r.provenance.trim_start_matches("- "),
        r.date,
        r.threads,
        SLOTS,
        r.rounds
    );
    let _ = writeln!(
        s,
        "Decode rate measured by the client, in tokens/s (for 4 streams, all streams together); greedy; each server writes its own answer (capped at {CAP} tokens). The ratio columns are Model Bucket's rate over llama-server's on its defaults and over its best `--spec-type` for that row. Model Bucket runs on its defaults (n-gram speculation on); its `kept` column is the share of its proposed tokens that were kept.\n"
    );
    for m in &r.models {
        let _ = writeln!(s, "## {}\n", m.model);
        let _ = write!(s, "| workload | streams |");
        for side in &m.sides {
            let _ = write!(s, " {side} |");
        }
        let _ = writeln!(s, " vs defaults | vs best `--spec-type` | kept |");
        let _ = writeln!(s, "|---|---|{}---|---|---|", "---|".repeat(m.sides.len()));
        for row in &m.rows {
            let med: Vec<f64> = row.rates.iter().map(|v| median(v)).collect();
            let _ = write!(s, "| {} | {} |", row.workload, row.streams);
            for v in &med {
                let _ = write!(s, " {v:.1} |");
            }
            let best = med[2..].iter().cloned().fold(0.0, f64::max);
            let kept = if row.drafted > 0 {
                format!("{:.0}%", 100.0 * row.accepted as f64 / row.drafted as f64)
            } else {
                "–".into()
            };
            let _ = writeln!(s, " {:.2}× | {:.2}× | {kept} |", med[0] / med[1], med[0] / best);
        }
        let _ = writeln!(s);
    }
    s
}
