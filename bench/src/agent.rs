//! The agent API against llama-server: the decode rate of grammar-constrained answers (a JSON
//! schema through `response_format`) next to free ones, and embeddings (the vectors compared by
//! cosine, and the time to embed a batch). Both servers get SmolLM2, the same threads, one slot
//! and the same context; llama-server runs on its defaults, plus `--embeddings --pooling mean`
//! in a second instance for the embeddings.

use anyhow::{Context, Result};
use model_bucket_tests::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::llama::LlamaServer;
use crate::workloads::{median, pair};
use crate::Opts;

/// Context of the one slot.
const CTX: u32 = 2048;
/// Tokens of a free answer (end of turn banned).
const FREE_TOKENS: u32 = 128;
/// SmolLM2's end of turn; its other end-of-generation tokens, 0 and 4, are banned beside it.
const EOS: i32 = 2;

#[derive(Debug, Default, serde::Serialize)]
pub struct AgentResults {
    /// Decode rates, tokens/s: free and constrained, (Model Bucket, llama-server).
    pub free: (Vec<f64>, Vec<f64>),
    pub schema: (Vec<f64>, Vec<f64>),
    /// Tokens per constrained answer (Model Bucket).
    pub schema_tokens: Vec<u64>,
    /// Smallest cosine between the two servers' vectors of the same text.
    pub min_cosine: f64,
    /// Time to embed [`BATCH`] sentences, ms: (Model Bucket, llama-server).
    pub embed_ms: (Vec<f64>, Vec<f64>),
}

/// Sentences per embeddings request.
const BATCH: usize = 32;

/// Four people: a constrained answer of about a hundred tokens.
fn schema() -> Value {
    json!({
        "type": "object",
        "properties": { "people": { "type": "array", "minItems": 4, "maxItems": 4, "items": {
            "type": "object",
            "properties": {
                "name": { "type": "string", "maxLength": 24 },
                "age": { "type": "integer", "minimum": 0, "maximum": 120 },
                "city": { "type": "string", "maxLength": 24 },
            },
            "required": ["name", "age", "city"],
            "additionalProperties": false,
        } } },
        "required": ["people"],
        "additionalProperties": false,
    })
}

/// One streamed chat answer; returns (decode tokens/s, tokens). The rate is measured by the
/// client for both servers, the same way: the tokens after the first over the time from the
/// first text to the last.
fn decode_rate(port: u16, model: Option<&str>, constrained: bool, seed: u64) -> Result<(f64, u64)> {
    let mut body = json!({
        "messages": [{ "role": "user", "content": "Invent four people with their name, age and city." }],
        "temperature": 0.8, "seed": seed, "stream": true, "stream_options": { "include_usage": true },
    });
    if constrained {
        body["response_format"] =
            json!({ "type": "json_schema", "json_schema": { "name": "people", "schema": schema() } });
        body["max_tokens"] = json!(400);
    } else {
        body["max_tokens"] = json!(FREE_TOKENS);
        body["logit_bias"] = json!({ "0": -100, EOS.to_string(): -100, "4": -100 });
    }
    if let Some(m) = model {
        body["model"] = json!(m);
    }
    let start = Instant::now();
    let (mut first, mut last, mut answer, mut n) = (None, Duration::ZERO, String::new(), None);
    crate::client::each_event(port, "/v1/chat/completions", &body, |v| {
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str().filter(|t| !t.is_empty()) {
            first.get_or_insert(start.elapsed());
            last = start.elapsed();
            answer.push_str(t);
        }
        if let Some(c) = v["usage"]["completion_tokens"].as_u64() {
            n = Some(c);
        }
    })?;
    let n = n.context("no usage in the stream")?;
    let first = first.context("no text in the answer")?;
    if constrained {
        let parsed: Value = serde_json::from_str(&answer).with_context(|| format!("not JSON: {answer}"))?;
        anyhow::ensure!(parsed["people"].as_array().map(Vec::len) == Some(4), "does not fit: {answer}");
    } else {
        anyhow::ensure!(n == u64::from(FREE_TOKENS), "{n} tokens, asked for {FREE_TOKENS}");
    }
    Ok((n.saturating_sub(1) as f64 / (last - first).as_secs_f64(), n))
}

/// Embeds `texts`; returns the vectors and the time taken.
fn embed(port: u16, model: Option<&str>, texts: &[String]) -> Result<(Vec<Vec<f64>>, Duration)> {
    let mut body = json!({ "input": texts });
    if let Some(m) = model {
        body["model"] = json!(m);
    }
    let start = Instant::now();
    let (status, text) = post(port, "/v1/embeddings", &body.to_string())?;
    let took = start.elapsed();
    anyhow::ensure!(status == 200, "embeddings: {status} {text}");
    let v: Value = serde_json::from_str(&text)?;
    let vectors = v["data"]
        .as_array()
        .context("no data")?
        .iter()
        .map(|d| d["embedding"].as_array().map(|e| e.iter().filter_map(Value::as_f64).collect()).unwrap_or_default())
        .collect();
    Ok((vectors, took))
}

/// POSTs a JSON body; returns (status, body). Both servers answer these with a length, not in
/// chunks.
fn post(port: u16, path: &str, body: &str) -> Result<(u16, String)> {
    let c = server::open(port, "POST", path, "", body, Some(Duration::from_secs(600)))?;
    let (status, resp) = server::read_response(c)?;
    Ok((status, resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    dot / (a.iter().map(|x| x * x).sum::<f64>() * b.iter().map(|y| y * y).sum::<f64>()).sqrt()
}

pub fn run(o: &Opts, ls_bin: &Path) -> Result<AgentResults> {
    let mut r = AgentResults::default();
    let dir = tempfile::tempdir()?;
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    let t = o.threads.to_string();
    let mb = Server::start(dir.path(), &["--threads", &t, "--parallel", "1", "--ctx", &CTX.to_string()]);
    let smol = smol_id();
    {
        let ls = LlamaServer::start(ls_bin, Some(&model(SMOLLM2_FILE)), None, o.threads, 1, CTX)?;
        eprintln!("bench: decode rate with and without a JSON schema");
        // One warm-up each, then alternate.
        decode_rate(mb.port, Some(&smol), true, 0)?;
        decode_rate(ls.port, None, true, 0)?;
        for seed in 1..=(o.rounds.max(3) as u64 * 2) {
            // The servers take turns going first.
            let mb_first = seed % 2 == 0;
            let (a, b) = pair(
                mb_first,
                || decode_rate(mb.port, Some(&smol), false, seed),
                || decode_rate(ls.port, None, false, seed),
            )?;
            r.free.0.push(a.0);
            r.free.1.push(b.0);
            let (a, b) = pair(
                mb_first,
                || decode_rate(mb.port, Some(&smol), true, seed),
                || decode_rate(ls.port, None, true, seed),
            )?;
            r.schema.0.push(a.0);
            r.schema_tokens.push(a.1);
            r.schema.1.push(b.0);
        }
    }
    eprintln!("bench: embeddings");
    let ls = LlamaServer::start_with(
        ls_bin,
        &model(SMOLLM2_FILE),
        o.threads,
        1,
        CTX,
        &["--embeddings", "--pooling", "mean"],
    )?;
    let texts: Vec<String> = (0..BATCH)
        .map(|i| {
            format!(
                "Memory {i}: the daemon noticed that sensor {} reported {} degrees at {}:{:02}.",
                i % 7,
                15 + i,
                6 + i % 12,
                (i * 7) % 60
            )
        })
        .collect();
    let mut min_cos = 1.0f64;
    for round in 0..=o.rounds.max(3) {
        let ((a, ta), (b, tb)) =
            pair(round % 2 == 0, || embed(mb.port, Some(&smol), &texts), || embed(ls.port, None, &texts))?;
        for (x, y) in a.iter().zip(&b) {
            min_cos = min_cos.min(cosine(x, y));
        }
        if round > 0 {
            r.embed_ms.0.push(ta.as_secs_f64() * 1000.0);
            r.embed_ms.1.push(tb.as_secs_f64() * 1000.0);
        }
    }
    r.min_cosine = min_cos;
    Ok(r)
}

/// The report's section.
pub fn markdown(r: &AgentResults) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "## Agent API\n");
    let _ = writeln!(s, "{}\n", crate::sections::stamp());
    let _ = writeln!(
        s,
        "SmolLM2, one slot, {CTX} tokens of context, same threads; llama-server on its defaults. Decode rates are measured by the client for both (tokens after the first per second from the first text to the last, streamed), medians over alternating requests, each server first in every other pair: free answers of {FREE_TOKENS} tokens (end of turn banned), and answers constrained by a JSON schema through `response_format` (four people with name, age and city; a median of {:.0} tokens each; every answer parsed and checked).\n",
        median(&r.schema_tokens.iter().map(|&n| n as f64).collect::<Vec<_>>())
    );
    let _ = writeln!(s, "| decode, tokens/s | Model Bucket | llama-server | ratio |\n|---|---|---|---|");
    let (f0, f1) = (median(&r.free.0), median(&r.free.1));
    let (s0, s1) = (median(&r.schema.0), median(&r.schema.1));
    let _ = writeln!(s, "| free text | {f0:.1} | {f1:.1} | {:.2}× |", f0 / f1);
    let _ = writeln!(s, "| JSON schema | {s0:.1} | {s1:.1} | {:.2}× |", s0 / s1);
    let _ = writeln!(s, "| schema ÷ free | {:.2}× | {:.2}× | |\n", s0 / f0, s1 / f1);
    let (e0, e1) = (median(&r.embed_ms.0), median(&r.embed_ms.1));
    let _ = writeln!(
        s,
        "Embeddings: {BATCH} sentences per request, llama-server with `--embeddings --pooling mean`; Model Bucket {e0:.0} ms, llama-server {e1:.0} ms ({:.2}×). The smallest cosine between the two servers' vectors of the same sentence: {:.6}.\n",
        e0 / e1,
        r.min_cosine
    );
    s
}
