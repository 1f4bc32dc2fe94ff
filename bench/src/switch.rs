//! Switching to a model of a real size (`--only-switch`): synthetic Llama models of about 0.5,
//! 1.5 and 4 GB (`models/synthetic`: random weights, Q4_K_M, written once into the benchmark's
//! cache). For each, one run measures
//! - reading its file whole, from the page cache and from disk (dropped with
//!   `posix_fadvise(DONTNEED)`),
//! - one prefill: the time to first token of a short request to it, loaded and idle,
//! - the time to first token of a short request that needs a swap (SmolLM2 was loaded, the
//!   budget holds one of them), with the file in the page cache and dropped from it, on Model
//!   Bucket (no turns: `--quantum 0`, the swap itself is measured) and on llama-server's router
//!   mode (`--models-max 1`), alternating the two models request by request.

use anyhow::{bail, Context, Result};
use model_bucket_shared::page_cache::{page_in, page_out};
use model_bucket_tests::{link_model, smol_id, Server, SMOLLM2_FILE};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::client::{Dialect, Target};
use crate::llama::LlamaServer;
use crate::workloads::median;
use crate::Opts;

const SIZES: [&str; 3] = ["0.5", "1.5", "4"];
const CTX: u32 = 2048;
const ROUNDS: usize = 3;
const PROMPT: &str = "The capital of France is";
/// SmolLM2's end of text, which the synthetic models share (their tokenizer is its).
const EOS: i32 = 2;

/// One size's measurements, in seconds (medians of [`ROUNDS`]).
#[derive(Debug, Clone, Default)]
pub struct Size {
    pub name: String,
    pub file_bytes: u64,
    pub read_cached: f64,
    pub read_disk: f64,
    pub prefill: f64,
    /// What the server estimates its worker needs, and what the worker holds once it has
    /// served (resident memory less its evictable memory), in bytes.
    pub estimate: u64,
    pub steady: u64,
    pub mb_cached: Vec<f64>,
    pub mb_disk: Vec<f64>,
    pub ls_cached: Vec<f64>,
    pub ls_disk: Vec<f64>,
}

pub fn synthetic(size: &str) -> Result<PathBuf> {
    let dir = crate::llama::cache().join("synthetic");
    let path = dir.join(format!("synthetic-{size}gb.gguf"));
    if !path.is_file() {
        eprintln!("bench: switch: writing the synthetic {size} GB model (once)");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/synthetic");
        let status = std::process::Command::new(script).arg(size).arg(&dir).status()?;
        if !status.success() {
            bail!("models/synthetic {size} failed: {status}");
        }
    }
    Ok(path)
}

/// Seconds to read `path` whole.
fn read_all(path: &Path) -> Result<f64> {
    let t = Instant::now();
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 8 << 20];
    while f.read(&mut buf)? > 0 {}
    Ok(t.elapsed().as_secs_f64())
}

fn ttft(t: &Target) -> Result<f64> {
    Ok(t.stream(PROMPT, 1)?.first.as_secs_f64())
}

/// `field` of `model`'s `/admin/workers` row.
fn row_field(s: &Server, model: &str, field: &str) -> Result<u64> {
    crate::client::worker_field(&s.get_json("/admin/workers"), model, field)
}

/// What the server counts `model` as, after a request to it.
fn counted(s: &Server, model: &str) -> Result<u64> {
    row_field(s, model, "budget_bytes")
}

/// The ID of the one model of the folder that is not `other`.
fn id_besides(s: &Server, other: &str) -> Result<String> {
    let v = s.get_json("/v1/models");
    let ids = v["data"].as_array().into_iter().flatten().filter_map(|m| m["id"].as_str());
    ids.into_iter().find(|id| *id != other).map(String::from).with_context(|| format!("no other model: {v}"))
}

fn measure(o: &Opts, ls_bin: &Path, size: &str) -> Result<Size> {
    let path = synthetic(size)?;
    let file = path.file_name().and_then(|f| f.to_str()).context("file name")?.to_string();
    let mut r = Size { name: format!("{size} GB"), file_bytes: std::fs::metadata(&path)?.len(), ..Size::default() };
    page_in(&path)?;
    read_all(&path)?;
    r.read_cached = read_all(&path)?;
    page_out(&path)?;
    r.read_disk = read_all(&path)?;
    let dir = tempfile::tempdir()?;
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    std::os::unix::fs::symlink(&path, dir.path().join(&file))?;
    let t = o.threads.to_string();
    let ctx = CTX.to_string();
    let flags = ["--threads", &t, "--parallel", "1", "--ctx", &ctx, "--quantum", "0"];
    let smol = smol_id();
    // Unbudgeted: the prefill, and what each counts against a budget.
    let (big, budget) = {
        let s = Server::start(dir.path(), &flags);
        let big = id_besides(&s, &smol)?;
        let target = Target { port: s.port, dialect: Dialect::ModelBucket, model: Some(big.clone()), eos: EOS };
        ttft(&target)?;
        r.prefill = median(&(0..ROUNDS).map(|_| ttft(&target)).collect::<Result<Vec<_>>>()?);
        std::thread::sleep(std::time::Duration::from_millis(1500));
        r.estimate = row_field(&s, &big, "estimate_bytes")?;
        r.steady = row_field(&s, &big, "memory_bytes")? - row_field(&s, &big, "evictable_bytes")?;
        let small = Target { port: s.port, dialect: Dialect::ModelBucket, model: Some(smol.clone()), eos: EOS };
        ttft(&small)?;
        // The larger and a quarter of the smaller: either fits alone, never both, whether
        // the server counts them by its estimate or by what they measured.
        let (b, sm) = (counted(&s, &big)?, counted(&s, &smol)?);
        (big, b.max(sm) + b.min(sm) / 4)
    };
    let budget = format!("{}MiB", budget >> 20);
    eprintln!("bench: switch: {size} GB, Model Bucket, budget {budget}");
    let mut args = flags.to_vec();
    args.extend(["--ram-budget", &budget]);
    let s = Server::start(dir.path(), &args);
    let to = |m: &str| Target { port: s.port, dialect: Dialect::ModelBucket, model: Some(m.to_string()), eos: EOS };
    let evictions = || crate::client::metric_sum(s.port, "model_bucket_evictions_total{");
    for _ in 0..ROUNDS {
        for disk in [false, true] {
            ttft(&to(&smol))?;
            if disk {
                page_out(&path)?;
            } else {
                page_in(&path)?;
                read_all(&path)?;
            }
            let before = evictions();
            let v = ttft(&to(&big))?;
            // A request that found room beside the other model measured a load, not a swap:
            // where the server counts a model below what it holds, both can fit the budget.
            anyhow::ensure!(
                evictions() > before,
                "no swap: the {size} GB model loaded beside SmolLM2 under {budget} (the server counts it below what it holds)"
            );
            if disk { &mut r.mb_disk } else { &mut r.mb_cached }.push(v);
        }
    }
    drop(s);
    eprintln!("bench: switch: {size} GB, llama-server router mode");
    let ls = LlamaServer::start_router(ls_bin, dir.path(), o.threads, 1, CTX, 1)?;
    let [ls_small, ls_big]: [String; 2] =
        crate::client::ids_containing(ls.port, &["smollm2", "synthetic"])?.try_into().expect("two parts, two ids");
    let to = |m: &str| Target { port: ls.port, dialect: Dialect::LlamaServer, model: Some(m.to_string()), eos: EOS };
    for _ in 0..ROUNDS {
        for disk in [false, true] {
            ttft(&to(&ls_small))?;
            if disk {
                page_out(&path)?;
            } else {
                page_in(&path)?;
                read_all(&path)?;
            }
            let v = ttft(&to(&ls_big))?;
            if disk { &mut r.ls_disk } else { &mut r.ls_cached }.push(v);
        }
    }
    Ok(r)
}

pub fn run(o: &Opts, ls_bin: &Path) -> Result<Vec<Size>> {
    let sizes: Vec<&str> =
        if o.switch_sizes.is_empty() { SIZES.to_vec() } else { o.switch_sizes.iter().map(String::as_str).collect() };
    sizes.into_iter().map(|s| measure(o, ls_bin, s)).collect()
}

pub fn raw(sizes: &[Size]) -> Value {
    let rows: Vec<Value> = sizes
        .iter()
        .map(|r| {
            json!({
                "model": r.name, "file_bytes": r.file_bytes, "read_cached_s": r.read_cached,
                "read_disk_s": r.read_disk, "prefill_s": r.prefill,
                "estimate_bytes": r.estimate, "steady_resident_bytes": r.steady,
                "model_bucket_cached_s": r.mb_cached, "model_bucket_disk_s": r.mb_disk,
                "llama_server_router_cached_s": r.ls_cached, "llama_server_router_disk_s": r.ls_disk
            })
        })
        .collect();
    json!({ "sizes": rows })
}

pub fn markdown(o: &Opts, sizes: &[Size]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## Switching to a model of a real size\n");
    let _ = writeln!(s, "{}", crate::report::provenance());
    let _ = writeln!(
        s,
        "- Synthetic Llama models (`models/synthetic`, random weights, Q4_K_M), {} threads, one slot of {CTX} tokens; a budget for the larger of the model and SmolLM2 plus a quarter of the smaller, so every request to one swaps out the other. Time to first token of a 1-token request, median of {ROUNDS}; the goal is at most 1.5× the file's read time plus one prefill.\n",
        o.threads
    );
    let _ = writeln!(
        s,
        "| model | file | estimate / held | read (cache / disk) | one prefill | Model Bucket switch (cache / disk) | llama-server router mode (cache / disk) | Model Bucket ÷ (read + prefill) (cache / disk) |\n|---|---|---|---|---|---|---|---|"
    );
    for r in sizes {
        let (mc, md) = (median(&r.mb_cached), median(&r.mb_disk));
        let _ = writeln!(
            s,
            "| {} | {:.2} GB | {} / {} MiB ({:.2}×) | {:.2} / {:.2} s | {:.2} s | {:.2} / {:.2} s | {:.2} / {:.2} s | {:.2}× / {:.2}× |",
            r.name,
            r.file_bytes as f64 / 1e9,
            r.estimate >> 20,
            r.steady >> 20,
            r.estimate as f64 / r.steady.max(1) as f64,
            r.read_cached,
            r.read_disk,
            r.prefill,
            mc,
            md,
            median(&r.ls_cached),
            median(&r.ls_disk),
            mc / (r.read_cached + r.prefill),
            md / (r.read_disk + r.prefill)
        );
    }
    s
}
