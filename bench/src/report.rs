//! `docs/BENCHMARKS.md`: machine, command, tables of ratios (Model Bucket / llama-server), and
//! the goals with whether this run met them.

use std::fmt::Write;
use std::path::Path;

use crate::workloads::{median, pct, Results, CONCURRENCY, N_PREDICT};
use crate::Opts;

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = model_bucket_shared::mem::total_memory().unwrap_or(0) >> 30;
    format!("{cpu}, {cores} cores available, {mem} GiB memory, no GPU used")
}

/// The report line that says where a section's figures come from: machine, commit, command.
pub fn provenance() -> String {
    format!(
        "- Machine: {}; commit {}; command `cargo run --release -p model-bucket-bench -- {}`",
        machine(),
        commit(),
        args()
    )
}

/// The arguments this run was given, as a shell would show them.
pub fn args() -> String {
    let quote = |a: String| if a.contains(' ') { format!("\"{a}\"") } else { a };
    std::env::args().skip(1).map(quote).collect::<Vec<_>>().join(" ")
}

/// The commit the run was built from (`+dirty` with changes not committed outside `docs/`),
/// read once: the first section's files, written during the run, do not make the next one's
/// look dirty.
pub fn commit() -> String {
    static COMMIT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    COMMIT.get_or_init(read_commit).clone()
}

fn read_commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    // What runs wrote (docs/) is output, not the code measured.
    let dirty = git(&["status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)docs"])
        .is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{head}+dirty")
    } else {
        head
    }
}

/// Now, in UTC, to the minute.
pub fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn goal(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

pub fn markdown(o: &Opts, ls: &Path, r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## Side by side: throughput, latency, starting and memory\n");
    let _ = writeln!(s, "{}", crate::sections::stamp());
    let _ = writeln!(s, "- llama-server: `{}`, on its defaults\n", ls.display());
    let _ = writeln!(
        s,
        "Same model (SmolLM2-135M-Instruct Q4_1), {} threads, {} slots, {} tokens of context per slot, same run, alternating request by request, each server first in every other round. Medians of {} rounds. Model Bucket is measured through its HTTP router (`/v1/completions`, streamed), llama-server through its `/completion`; both ban EOS so every request makes exactly {N_PREDICT} tokens, and rates are measured by the client for both.\n",
        o.threads, o.slots, o.ctx, o.rounds
    );
    let _ = writeln!(s, "### Throughput\n\n![tokens/s vs concurrency](throughput.png)\n");
    let _ = writeln!(s, "| workload | Model Bucket | llama-server | ratio |\n|---|---|---|---|");
    for (k, n) in CONCURRENCY.iter().enumerate() {
        let (a, b) = (median(&r.mb_tps[k]), median(&r.ls_tps[k]));
        let name =
            if *n == 1 { "decode tokens/s, 1 stream".to_string() } else { format!("aggregate tokens/s, {n} streams") };
        let _ = writeln!(s, "| {name} | {a:.1} | {b:.1} | {:.2}× |", a / b);
    }
    let (a, b) = (median(&r.ttft_short.0), median(&r.ttft_short.1));
    let _ = writeln!(s, "| time to first token, short prompt (ms) | {a:.1} | {b:.1} | {:.2}× |", a / b);
    let (a, b) = (median(&r.ttft_long.0), median(&r.ttft_long.1));
    let _ = writeln!(s, "| time to first token, ~1,000-token prompt (ms) | {a:.1} | {b:.1} | {:.2}× |\n", a / b);

    let _ = writeln!(s, "### Request overhead\n\n![1-token request latency](latency.png)\n");
    let _ = writeln!(
        s,
        "Whole 1-token requests (a short prompt's prefill plus one token), {} per path. Two servers idle between their turns still disturb each other on 2 cores, so each pair was measured alone, alternating request by request, and only a pair compares:\n",
        r.lat_mb.len()
    );
    let _ = writeln!(s, "| pair | path | median ms | p99 ms |\n|---|---|---|---|");
    let mut rows = vec![
        ("1", "Model Bucket (router + worker)", &r.lat_mb),
        ("1", "llama-server", &r.lat_ls),
        ("2", "Model Bucket (router + worker)", &r.lat_router),
        ("2", "Model Bucket's worker, straight over its socket", &r.lat_worker),
    ];
    if !r.lat_ls_router.is_empty() {
        rows.push(("3", "llama-server", &r.lat_ls_direct));
        rows.push(("3", "llama-server, router mode (`--models-dir`)", &r.lat_ls_router));
    }
    for (pair, name, v) in rows {
        let _ = writeln!(s, "| {pair} | {name} | {:.2} | {:.2} |", median(v), pct(v, 99.0));
    }
    let router_cost = median(&r.lat_router) - median(&r.lat_worker);
    let _ = writeln!(s, "\nModel Bucket's router costs **{router_cost:+.2} ms** per request (median of pair 2).");
    if !r.lat_ls_router.is_empty() {
        let ls_cost = median(&r.lat_ls_router) - median(&r.lat_ls_direct);
        let _ = writeln!(s, "llama-server's router mode costs {ls_cost:+.2} ms (pair 3).");
    }
    let _ = writeln!(s);

    let _ = writeln!(s, "### Starting and swapping\n\n| | Model Bucket | llama-server | ratio |\n|---|---|---|---|");
    let (a, b) = (median(&r.cold_mb), median(&r.cold_ls));
    let _ = writeln!(s, "| process start to first token, page cache warm (s) | {a:.2} | {b:.2} | {:.2}× |", a / b);
    let c = median(&r.cold_ls_no_warmup);
    let _ = writeln!(
        s,
        "| the same, llama-server with `--no-warmup` (the worker does no warm-up decode) (s) | {a:.2} | {c:.2} | {:.2}× |",
        a / c
    );
    if let Some(c) = &r.cold_ls_router {
        let _ = writeln!(s, "| llama-server router mode: start to first answer (s) | | {:.2} | |", median(c));
    }
    let _ = writeln!(
        s,
        "| a request that evicts the other model first, budget for one (s to first token) | {:.2} (max {:.2}) | no RAM budget | |",
        median(&r.swap_mb),
        pct(&r.swap_mb, 100.0)
    );
    let (a, b) = r.models_rps;
    let _ = writeln!(s, "| `GET /v1/models` per second, 4 clients | {a:.0} | {b:.0} | {:.2}× |\n", a / b);

    let _ = writeln!(s, "### Memory\n\n| | MiB |\n|---|---|");
    let _ = writeln!(s, "| Model Bucket router, idle | {:.1} |", r.router_idle_mib);
    let _ = writeln!(
        s,
        "| Model Bucket router, {} streams admitted and open ({} streaming, the rest in the queue) | {:.1} |",
        r.open_streams, r.streams_reading, r.router_streams_mib
    );
    let _ =
        writeln!(s, "| Model Bucket worker (SmolLM2, {} slots × {} tokens) | {:.1} |", o.slots, o.ctx, r.worker_mib);
    let _ = writeln!(s, "| llama-server, same model and context, idle | {:.1} |\n", r.ls_mib);

    let _ = writeln!(s, "### Goals (SmolLM2, 2 threads)\n\n| goal | this run | |\n|---|---|---|");
    let ratio = |k: usize| median(&r.mb_tps[k]) / median(&r.ls_tps[k]);
    let idx = |n: usize| CONCURRENCY.iter().position(|c| *c == n).expect("level measured");
    let _ = writeln!(s, "| decode, 1 stream ≥ 1.0× | {:.2}× | {} |", ratio(idx(1)), goal(ratio(idx(1)) >= 1.0));
    let _ = writeln!(s, "| aggregate, 4 streams ≥ 1.1× | {:.2}× | {} |", ratio(idx(4)), goal(ratio(idx(4)) >= 1.1));
    let _ = writeln!(s, "| aggregate, 16 streams ≥ 1.1× | {:.2}× | {} |", ratio(idx(16)), goal(ratio(idx(16)) >= 1.1));
    let _ = writeln!(s, "| router overhead ≤ 0.3 ms median | {router_cost:+.2} ms | {} |", goal(router_cost <= 0.3));
    let _ = writeln!(
        s,
        "| router idle memory ≤ 20 MB | {:.1} MiB | {} |",
        r.router_idle_mib,
        goal(r.router_idle_mib * 1.048_576 <= 20.0)
    );
    // What the aggregate ratios show, computed: levels where one server led by 5% or more.
    let led = |by: fn(f64) -> bool| -> String {
        let levels: Vec<String> = CONCURRENCY
            .iter()
            .enumerate()
            .filter(|(k, _)| by(ratio(*k)))
            .map(|(k, n)| format!("{n} ({:.2}×)", ratio(k)))
            .collect();
        if levels.is_empty() {
            "none".into()
        } else {
            levels.join(", ")
        }
    };
    let _ = writeln!(
        s,
        "\nStreams where Model Bucket led by 5% or more: {}; where llama-server did: {}.",
        led(|x| x >= 1.05),
        led(|x| x <= 1.0 / 1.05)
    );
    s
}
