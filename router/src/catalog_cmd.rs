//! `list`, `info` and `add`: the catalog from the command line.

use anyhow::{Context, Result};
use model_bucket_shared::{Catalog, ModelInfo};
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use crate::bucket;
use crate::cli::BucketArgs;

pub fn list(args: &BucketArgs, json: bool, all: bool) -> Result<()> {
    let (config, dir) = bucket::open(args)?;
    let cat = bucket::scan(&dir, &config)?;
    let mut out = io::stdout().lock();
    if json {
        let value = if all {
            let adapters: Vec<serde_json::Value> = cat
                .adapters
                .iter()
                .map(|(a, base)| serde_json::json!({ "adapter": a, "base": base.as_ref().ok(), "error": base.as_ref().err() }))
                .collect();
            serde_json::json!({ "models": cat.models, "skipped": cat.skipped, "adapters": adapters })
        } else {
            serde_json::to_value(&cat.models)?
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    if cat.models.is_empty() {
        writeln!(out, "no models in {}", dir.display())?;
    } else {
        writeln!(out, "{:<34} {:>7} {:<8} {:>9} {:>7}  CAPABILITIES", "ID", "PARAMS", "QUANT", "SIZE", "CTX")?;
        for m in &cat.models {
            writeln!(
                out,
                "{:<34} {:>7} {:<8} {:>9} {:>7}  {}",
                m.id,
                m.parameters.as_deref().unwrap_or("-"),
                m.quantization.as_deref().unwrap_or("-"),
                model_bucket_shared::mem::human(m.size_bytes),
                m.context_length.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                capabilities(m),
            )?;
        }
    }
    if all {
        for s in &cat.skipped {
            writeln!(out, "skipped {}: {}", s.path.display(), s.reason)?;
        }
    } else if !cat.skipped.is_empty() {
        writeln!(out, "({} file(s) skipped; `list --all` says why)", cat.skipped.len())?;
    }
    Ok(())
}

pub fn info(args: &BucketArgs, id: &str, json: bool) -> Result<()> {
    let (config, dir) = bucket::open(args)?;
    let cat = bucket::scan(&dir, &config)?;
    let m = resolve(&cat, id)?;
    print_info(m, json)
}

pub fn add(args: &BucketArgs, src: &Path, custom_id: Option<&str>, json: bool) -> Result<()> {
    let (config, dir) = bucket::open(args)?;
    let src = std::path::absolute(src).with_context(|| format!("cannot resolve {}", src.display()))?;
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cat = bucket::scan(&dir, &config)?;
    let total = fs::metadata(&src).map(|m| m.len()).unwrap_or(0);
    let bar = bucket::bytes_bar(total, "copying");
    if !io::IsTerminal::is_terminal(&io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    // The user's own command adds what the user may read.
    let placed = crate::add::place_file(&dir, &src, custom_id, &cat, false, &mut |done, _| bar.set_position(done));
    bar.finish_and_clear();
    let sha = placed?.sha256;
    let cat = bucket::scan(&dir, &config)?;
    let m = cat
        .models
        .iter()
        .find(|m| m.sha256 == sha)
        .context("the file was placed but the catalog skipped it (see `list --all`)")?;
    print_info(m, json)
}

/// Finds a model or explains which names exist.
pub fn resolve<'a>(cat: &'a Catalog, id: &str) -> Result<&'a ModelInfo> {
    cat.resolve(id).with_context(|| {
        let known: Vec<&str> = cat.models.iter().map(|m| m.id.as_str()).collect();
        format!(
            "no model {id:?} in {} (known: {})",
            cat.dir.display(),
            if known.is_empty() { "none".into() } else { known.join(", ") }
        )
    })
}

pub fn print_info(m: &ModelInfo, json: bool) -> Result<()> {
    let mut out = io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(m)?)?;
        return Ok(());
    }
    let opt = |v: Option<&str>| v.unwrap_or("-").to_string();
    let rows = [
        ("id", m.id.to_string()),
        ("aliases", if m.aliases.is_empty() { "-".into() } else { m.aliases.join(", ") }),
        ("name", m.name.clone()),
        ("architecture", m.architecture.clone()),
        ("parameters", opt(m.parameters.as_deref())),
        ("quantization", opt(m.quantization.as_deref())),
        ("context_length", m.context_length.map(|c| c.to_string()).unwrap_or_else(|| "-".into())),
        ("chat template", if m.has_chat_template { "yes".into() } else { "no".into() }),
        ("capabilities", capabilities(m)),
        ("size", format!("{} ({} bytes)", model_bucket_shared::mem::human(m.size_bytes), m.size_bytes)),
        ("sha256", m.sha256.clone()),
        ("path", m.path.display().to_string()),
    ];
    for (k, v) in rows {
        writeln!(out, "{k:<15} {v}")?;
    }
    Ok(())
}

fn capabilities(m: &ModelInfo) -> String {
    let names: Vec<String> = m
        .capabilities
        .iter()
        .map(|c| serde_json::to_value(c).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default())
        .collect();
    names.join(",")
}
