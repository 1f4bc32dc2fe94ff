//! `docs/BENCHMARKS.md` as sections, each one run's output. A section is two files in
//! `OUT/bench/`: `NAME.md` (its tables and the line saying which machine, date, commit and
//! command produced them) and `NAME.json` (the same run's raw figures, with that provenance).
//! A run writes the sections it ran and then rebuilds `BENCHMARKS.md` from every section file
//! present, in [`ORDER`]; so `--only-cache` replaces the prompt-cache section and leaves the
//! others as their own runs wrote them.

use anyhow::Result;
use serde::Serialize;
use serde_json::json;
use std::path::Path;

/// The sections of `BENCHMARKS.md`, in order: (file name, what `--only-*` runs it).
pub const ORDER: [(&str, &str); 5] = [
    ("throughput", "the whole run"),
    ("cache", "--only-cache"),
    ("agent", "--only-agent"),
    ("lora", "--only-lora"),
    ("fleet", "--only-fleet"),
];

const HEADER: &str = "# Benchmarks\n\nModel Bucket against llama.cpp's own `llama-server` (unless `--llama-server PATH` names another, b11434, the llama.cpp Model Bucket builds, built as the worker is, without AMX). Each section below is one run's output, written by `model-bucket-bench`: it names its machine, date, commit and command, and its raw figures are in `bench/NAME.json` beside this file. Ratios are Model Bucket / llama-server: above 1 is better for rates, below 1 for times. Read the ratios, which come from requests alternated in one run, rather than the absolute numbers, and rerun a section before drawing a conclusion from a small difference.\n\n";

/// The provenance of this run, as JSON.
pub fn provenance() -> serde_json::Value {
    json!({
        "machine": crate::report::machine(),
        "date": crate::report::date(),
        "commit": crate::report::commit(),
        "command": format!("cargo run --release -p model-bucket-bench -- {}", crate::report::args()),
    })
}

/// Writes section `name` (its markdown and raw figures) under `out`, then rebuilds
/// `out/BENCHMARKS.md`.
pub fn write(out: &Path, name: &str, markdown: &str, raw: &impl Serialize) -> Result<()> {
    anyhow::ensure!(ORDER.iter().any(|(n, _)| *n == name), "no section {name}");
    let dir = out.join("bench");
    std::fs::create_dir_all(&dir)?;
    let doc = json!({ "provenance": provenance(), "results": raw });
    std::fs::write(dir.join(format!("{name}.json")), serde_json::to_string_pretty(&doc)? + "\n")?;
    std::fs::write(dir.join(format!("{name}.md")), markdown)?;
    std::fs::write(out.join("BENCHMARKS.md"), assemble(out))?;
    eprintln!("bench: wrote {} and {}", dir.join(format!("{name}.md")).display(), out.join("BENCHMARKS.md").display());
    Ok(())
}

/// `BENCHMARKS.md` from the section files present under `out/bench`.
pub fn assemble(out: &Path) -> String {
    let mut md = HEADER.to_string();
    for (name, _) in ORDER {
        if let Ok(s) = std::fs::read_to_string(out.join("bench").join(format!("{name}.md"))) {
            md.push_str(s.trim_end());
            md.push_str("\n\n");
        }
    }
    md.trim_end().to_string() + "\n"
}

/// The line under a section's heading: where its figures come from.
pub fn stamp() -> String {
    format!(
        "- Machine: {}; date: {}; commit: {}; command: `cargo run --release -p model-bucket-bench -- {}`",
        crate::report::machine(),
        crate::report::date(),
        crate::report::commit(),
        crate::report::args()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_assembled_in_order_and_replaced_one_at_a_time() {
        let out = tempfile::tempdir().unwrap();
        write(out.path(), "lora", "## LoRA\n\nfirst\n", &json!({ "x": 1 })).unwrap();
        write(out.path(), "cache", "## Cache\n", &json!([])).unwrap();
        let md = std::fs::read_to_string(out.path().join("BENCHMARKS.md")).unwrap();
        assert!(md.starts_with("# Benchmarks") && md.find("## Cache") < md.find("## LoRA"), "{md}");
        write(out.path(), "lora", "## LoRA\n\nsecond\n", &json!({ "x": 2 })).unwrap();
        let md = std::fs::read_to_string(out.path().join("BENCHMARKS.md")).unwrap();
        assert!(md.contains("second") && !md.contains("first") && md.contains("## Cache"), "{md}");
        let raw: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.path().join("bench/lora.json")).unwrap()).unwrap();
        assert_eq!(raw["results"]["x"], 2);
        assert!(raw["provenance"]["commit"].is_string() && raw["provenance"]["machine"].is_string());
        assert!(write(out.path(), "nope", "", &json!(null)).is_err());
    }
}
