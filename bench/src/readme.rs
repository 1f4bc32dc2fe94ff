//! The README's benchmark table, written from the saved runs (`docs/bench/*.json`) and nothing
//! else, so it cannot drift from them: `--readme` rewrites it between its markers,
//! `--readme-check` fails when the README's differs (the test suite runs it).

use anyhow::{Context, Result};
use serde_json::Value;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use crate::workloads::{median, CONCURRENCY};
use crate::Opts;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Write,
    Check,
}

const BEGIN: &str = "<!-- benchmark table: written by `cargo run --release -p model-bucket-bench -- --readme` from docs/bench/*.json; edit those runs, not this table -->";
const END: &str = "<!-- end of the benchmark table -->";

/// The sections the table reads.
const SOURCES: [&str; 3] = ["throughput", "cache", "agent"];

fn readme_path() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
}

pub fn run(o: &Opts) -> Result<()> {
    let mode = o.readme.context("no --readme mode")?;
    let path = readme_path();
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let updated = replace(&text, &table(&o.out.join("bench"))?)?;
    match mode {
        Mode::Write if updated != text => {
            std::fs::write(&path, updated)?;
            eprintln!("bench: wrote the table in {}", path.display());
        }
        Mode::Write => eprintln!("bench: the table in {} is up to date", path.display()),
        Mode::Check => anyhow::ensure!(
            updated == text,
            "the README's benchmark table is not what docs/bench/*.json give: run `cargo run --release -p model-bucket-bench -- --readme`"
        ),
    }
    Ok(())
}

/// `text` with what lies between the markers replaced by `table`.
fn replace(text: &str, table: &str) -> Result<String> {
    let a = text.find(BEGIN).context("the README has no benchmark table marker")? + BEGIN.len();
    let b = text[a..].find(END).context("the README's benchmark table has no end marker")? + a;
    Ok(format!("{}\n{}{}", &text[..a], table, &text[b..]))
}

fn load(dir: &Path, name: &str) -> Result<Value> {
    let p = dir.join(format!("{name}.json"));
    let text = std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().into_iter().flatten().filter_map(Value::as_f64).collect()
}

/// The median of a list of figures.
fn med(v: &Value) -> f64 {
    median(&floats(v))
}

/// The table (and the line naming its runs) from the saved runs in `dir`.
pub fn table(dir: &Path) -> Result<String> {
    let mut runs = Vec::new();
    for name in SOURCES {
        runs.push(load(dir, name)?);
    }
    let [t, c, a] = [&runs[0]["results"], &runs[1]["results"], &runs[2]["results"]];
    let mut s = String::new();
    let _ = writeln!(s, "From the saved runs:");
    for (name, run) in SOURCES.iter().zip(&runs) {
        let p = &run["provenance"];
        let _ = writeln!(
            s,
            "- `{name}`: {}, commit {}, {}: `{}`",
            p["date"].as_str().unwrap_or("?"),
            p["commit"].as_str().unwrap_or("?"),
            p["machine"].as_str().unwrap_or("?"),
            p["command"].as_str().unwrap_or("?")
        );
    }
    let _ = writeln!(s, "\n| | Model Bucket | llama-server b11434 | ratio |\n|---|---|---|---|");
    let row = |s: &mut String, name: &str, a: f64, b: f64, unit: &str, digits: usize| {
        let _ = writeln!(s, "| {name} | {a:.digits$}{unit} | {b:.digits$}{unit} | {:.2}× |", a / b);
    };
    for (k, n) in CONCURRENCY.iter().enumerate() {
        let name = if *n == 1 { "decode t/s, 1 stream".to_string() } else { format!("aggregate t/s, {n} streams") };
        row(&mut s, &name, med(&t["mb_tps"][k]), med(&t["ls_tps"][k]), "", 1);
    }
    row(
        &mut s,
        "time to first token, short prompt, cold",
        med(&t["ttft_short"][0]),
        med(&t["ttft_short"][1]),
        " ms",
        1,
    );
    row(
        &mut s,
        "time to first token, ~1,000-token prompt, cold",
        med(&t["ttft_long"][0]) / 1000.0,
        med(&t["ttft_long"][1]) / 1000.0,
        " s",
        2,
    );
    row(&mut s, "1-token request, median", med(&t["lat_mb"]), med(&t["lat_ls"]), " ms", 2);
    let router = med(&t["lat_router"]) - med(&t["lat_worker"]);
    let ls_router = med(&t["lat_ls_router"]) - med(&t["lat_ls_direct"]);
    let _ = writeln!(
        s,
        "| a router's cost per 1-token request, median (Model Bucket: over its worker; llama-server: router mode over one model) | {router:+.2} ms | {ls_router:+.2} ms | |"
    );
    row(
        &mut s,
        "process start to first token (llama-server warms up at start)",
        med(&t["cold_mb"]),
        med(&t["cold_ls"]),
        " s",
        2,
    );
    row(&mut s, "the same, llama-server with `--no-warmup`", med(&t["cold_mb"]), med(&t["cold_ls_no_warmup"]), " s", 2);
    let rps = floats(&t["models_rps"]);
    if let [x, y] = rps[..] {
        row(&mut s, "`GET /v1/models` per second, 4 clients", x, y, "", 0);
    }
    let _ = writeln!(
        s,
        "| router memory: idle / {} streams admitted and open | {:.1} / {:.1} MiB | | |",
        t["open_streams"].as_u64().unwrap_or(0),
        t["router_idle_mib"].as_f64().unwrap_or(f64::NAN),
        t["router_streams_mib"].as_f64().unwrap_or(f64::NAN)
    );
    row(&mut s, "**multi-turn**: ~400-token system prompt, 8 turns resending the history, time to first token of turns 2–8 (4 slots, chat)", med(&c["multi_turn"][0]), med(&c["multi_turn"][1]), " ms", 1);
    row(
        &mut s,
        "**agents**: 6 tasks with ~500-token system prompts round-robin on 4 slots, after round 1",
        med(&c["agents"][0]),
        med(&c["agents"][1]),
        " ms",
        1,
    );
    row(
        &mut s,
        "**come back after an unload**: a ~1,000-token task asked again, reload included (Model Bucket: prefix from its disk cache; llama-server: slot saved with `--slot-save-path` and restored)",
        med(&c["swap_return"]),
        med(&c["ls_swap_return"]),
        " s",
        2,
    );
    row(&mut s, "the same reload, then a cold prefill", med(&c["swap_cold"]), med(&c["ls_swap_cold"]), " s", 2);
    row(
        &mut s,
        "come back after an unload, Model Bucket with `--sched fifo` (the model swapped in before it keeps no turn)",
        med(&c["fifo_swap_return"]),
        med(&c["ls_swap_return"]),
        " s",
        2,
    );
    row(&mut s, "decode t/s, free text (1 slot, client-side)", med(&a["free"][0]), med(&a["free"][1]), "", 1);
    row(&mut s, "decode t/s, constrained by a JSON schema", med(&a["schema"][0]), med(&a["schema"][1]), "", 1);
    let _ = writeln!(
        s,
        "| embeddings, 32 sentences per request (llama-server with `--embeddings --pooling mean`; smallest cosine between the two servers' vectors {:.6}) | {:.2} s | {:.2} s | {:.2}× |",
        a["min_cosine"].as_f64().unwrap_or(f64::NAN),
        med(&a["embed_ms"][0]) / 1000.0,
        med(&a["embed_ms"][1]) / 1000.0,
        med(&a["embed_ms"][0]) / med(&a["embed_ms"][1])
    );
    // A figure the runs do not hold is an error, not a "NaN" in the README.
    anyhow::ensure!(!s.contains("NaN") && !s.contains("| ? "), "a saved run lacks a figure the table needs:\n{s}");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_replaced_between_its_markers_only() {
        let text = format!("before\n{BEGIN}\nold\n{END}\nafter\n");
        assert_eq!(replace(&text, "new\n").unwrap(), format!("before\n{BEGIN}\nnew\n{END}\nafter\n"));
        assert!(replace("no markers", "x").is_err());
    }
}
