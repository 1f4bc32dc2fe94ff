//! Opening the models folder: config, folder resolution, a scan with hashing progress.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use model_bucket_shared::{Catalog, Config};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::cli::BucketArgs;

/// Files smaller than this hash too fast to deserve a progress bar (bytes).
const PROGRESS_MIN_BYTES: u64 = 256 << 20;

/// The config (empty when none is given) and the models folder it and the flags point at.
pub fn open(args: &BucketArgs) -> Result<(Config, PathBuf)> {
    let config = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let dir = args
        .models_dir
        .clone()
        .or_else(|| config.models_dir.clone())
        .or_else(|| dirs::home_dir().map(|h| h.join("EDEN").join("models")))
        .context("no models folder: pass --models-dir or set EDEN_MODELS_DIR")?;
    Ok((config, dir))
}

/// Scans `dir`, showing a progress bar on a terminal while large files are hashed (and
/// logging it otherwise).
pub fn scan(dir: &Path, config: &Config) -> Result<Catalog> {
    if !std::io::stderr().is_terminal() {
        return Ok(Catalog::scan(dir, config, Some(&mut hash_logger()))?);
    }
    let mut bar: Option<(PathBuf, ProgressBar)> = None;
    let mut report = |path: &Path, done: u64, total: u64| {
        if total < PROGRESS_MIN_BYTES {
            return;
        }
        if bar.as_ref().is_none_or(|(p, _)| p != path) {
            let b = bytes_bar(total, &format!("hashing {}", path.file_name().unwrap_or_default().to_string_lossy()));
            bar = Some((path.to_path_buf(), b));
        }
        if let Some((_, b)) = &bar {
            b.set_position(done);
            if done >= total {
                b.finish_and_clear();
            }
        }
    };
    Ok(Catalog::scan(dir, config, Some(&mut report))?)
}

/// Logs the hashing of large files: when each starts, at every quarter, and when it is done.
pub fn hash_logger() -> impl FnMut(&Path, u64, u64) {
    let mut logged: Option<(PathBuf, u64)> = None;
    move |path: &Path, done: u64, total: u64| {
        if total < PROGRESS_MIN_BYTES {
            return;
        }
        let quarter = done.min(total) * 4 / total;
        if logged.as_ref().is_some_and(|(p, q)| p == path && *q == quarter) {
            return;
        }
        logged = Some((path.to_path_buf(), quarter));
        let size = model_bucket_shared::mem::human(total);
        tracing::info!(file = %path.display(), percent = quarter * 25, %size, "hashing a new model file");
    }
}

/// A progress bar over `total` bytes with rate and ETA.
pub fn bytes_bar(total: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar
}
