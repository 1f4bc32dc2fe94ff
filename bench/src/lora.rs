//! LoRA adapters against llama-server: the aggregate decode rate of four streams on SmolLM2's
//! base alone, on one adapter, and split over two adapters (two streams each). llama.cpp
//! applies adapters to a whole context, so neither server can put sequences of different
//! adapters in one decode step; the split shows what taking turns costs. Both servers load the
//! same two test adapters (tests/fixtures/make_lora.py), with the same threads, four slots and
//! the same context; llama-server on its defaults plus `--lora` for each, requests naming theirs
//! in `lora`.

use anyhow::{Context, Result};
use model_bucket_tests::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Instant;

use crate::llama::LlamaServer;
use crate::workloads::{median, pair};
use crate::Opts;

/// Context per slot.
const CTX: u32 = 512;
/// Concurrent streams (and slots).
const STREAMS: u32 = 4;
/// Tokens per stream.
const TOKENS: u32 = 64;
/// SmolLM2's end of turn, banned so that every stream runs its full length.
const EOS: i32 = 2;

/// Which adapter each stream uses: none, or index 0 or 1.
const MIXES: [(&str, [Option<usize>; 4]); 3] = [
    ("base alone", [None; 4]),
    ("one adapter", [Some(0); 4]),
    ("two adapters, two streams each", [Some(0), Some(1), Some(0), Some(1)]),
];

#[derive(Debug, Default, serde::Serialize)]
pub struct LoraResults {
    /// Aggregate tokens/s per mix: (Model Bucket, llama-server), one per round.
    pub rates: Vec<(Vec<f64>, Vec<f64>)>,
}

/// One stream's body for either server: Model Bucket names the adapter's model, llama-server
/// the adapter's index with scales.
fn body(mb_ids: Option<&[String]>, adapter: Option<usize>, round: usize) -> Value {
    let mut b = json!({
        "prompt": format!("Story {round}: once upon a time"),
        "max_tokens": TOKENS, "temperature": 0, "logit_bias": { EOS.to_string(): -100 },
    });
    match mb_ids {
        Some(ids) => b["model"] = json!(adapter.map_or(&ids[0], |a| &ids[a + 1])),
        None => {
            let scales: Vec<Value> =
                (0..2).map(|i| json!({ "id": i, "scale": if adapter == Some(i) { 1.0 } else { 0.0 } })).collect();
            b["lora"] = json!(scales);
        }
    }
    b
}

/// Runs one mix on one server; returns generated tokens per second of wall time.
fn rate(port: u16, mb_ids: Option<&[String]>, mix: &[Option<usize>; 4], round: usize) -> Result<f64> {
    let start = Instant::now();
    let tokens: Result<Vec<u64>> = std::thread::scope(|t| {
        let handles: Vec<_> = mix
            .iter()
            .map(|&a| {
                let b = body(mb_ids, a, round).to_string();
                t.spawn(move || -> Result<u64> {
                    let c = server::open(port, "POST", "/v1/completions", "", &b, None)?;
                    let (status, resp) = server::read_response(c)?;
                    let text = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
                    anyhow::ensure!(status == 200, "{status}: {text}");
                    let v: Value = serde_json::from_str(text)?;
                    v["usage"]["completion_tokens"].as_u64().context("no usage")
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("stream thread")).collect()
    });
    Ok(tokens?.iter().sum::<u64>() as f64 / start.elapsed().as_secs_f64())
}

pub fn run(o: &Opts, ls_bin: &Path) -> Result<LoraResults> {
    let dir = tempfile::tempdir()?;
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    let strong = ["--layers", "30", "--scale", "0.3"];
    let files = [dir.path().join("pirate.gguf"), dir.path().join("poet.gguf")];
    make_lora(&files[0], &[&strong[..], &["--name", "Pirate"]].concat());
    make_lora(&files[1], &[&strong[..], &["--name", "Poet", "--seed", "2"]].concat());
    let t = o.threads.to_string();
    let (slots, ctx) = (STREAMS.to_string(), CTX.to_string());
    let mb = Server::start(dir.path(), &["--threads", &t, "--parallel", &slots, "--ctx", &ctx]);
    let listed = mb.get_json("/v1/models");
    let id_of = |prefix: &str| -> Result<String> {
        listed["data"]
            .as_array()
            .and_then(|d| d.iter().find_map(|m| m["id"].as_str().filter(|id| id.starts_with(prefix))))
            .map(str::to_string)
            .with_context(|| format!("no {prefix}* model listed"))
    };
    let ids = vec![smol_id(), id_of("eden_pirate_")?, id_of("eden_poet_")?];
    // llama-server indexes its adapters in the order given, as `ids[1..]` does.
    let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let joined = files.join(",");
    let mut lora_args = vec!["--lora", joined.as_str()];
    lora_args.extend(o.ls_extra.iter().map(String::as_str));
    let ls = LlamaServer::start_with(ls_bin, &model(SMOLLM2_FILE), o.threads, STREAMS, CTX, &lora_args)?;
    eprintln!("bench: LoRA adapters, {STREAMS} streams");
    let mut r = LoraResults::default();
    for (_, mix) in &MIXES {
        // A warm-up each, then alternate.
        rate(mb.port, Some(&ids), mix, 0)?;
        rate(ls.port, None, mix, 0)?;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for round in 1..=o.rounds.max(3) {
            let (x, y) =
                pair(round % 2 == 0, || rate(mb.port, Some(&ids), mix, round), || rate(ls.port, None, mix, round))?;
            a.push(x);
            b.push(y);
        }
        r.rates.push((a, b));
    }
    Ok(r)
}

/// The report's section.
pub fn markdown(o: &Opts, r: &LoraResults) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "## LoRA adapters\n");
    let _ = writeln!(s, "{}\n", crate::sections::stamp());
    let _ = writeln!(
        s,
        "SmolLM2 with two test adapters (rank 4 on every block's query projection, written by `tests/fixtures/make_lora.py`), {STREAMS} slots of {CTX} tokens, same threads; llama-server on its defaults plus `--lora` with both adapters{}. {STREAMS} streams of {TOKENS} tokens at once (end of turn banned); generated tokens per second of wall time, medians over alternating rounds, each server first in every other round. llama.cpp applies adapters to a whole context, so sequences of different adapters never share a decode step in either server.\n",
        if o.ls_extra.is_empty() { String::new() } else { format!(" and `{}`", o.ls_extra.join(" ")) }
    );
    let _ = writeln!(s, "| streams | Model Bucket, tokens/s | llama-server, tokens/s | ratio |\n|---|---|---|---|");
    let medians: Vec<(f64, f64)> = r.rates.iter().map(|(a, b)| (median(a), median(b))).collect();
    for ((name, _), (a, b)) in MIXES.iter().zip(&medians) {
        let _ = writeln!(s, "| {name} | {a:.1} | {b:.1} | {:.2}× |", a / b);
    }
    if let (Some(base), Some(split)) = (medians.first(), medians.last()) {
        let _ = writeln!(s, "| two adapters ÷ base alone | {:.2}× | {:.2}× | |", split.0 / base.0, split.1 / base.1);
    }
    s
}
