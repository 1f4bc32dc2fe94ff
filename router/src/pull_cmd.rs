//! `model-bucket pull` and `model-bucket recommend`.

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use std::io::{BufRead, IsTerminal, Write};

use crate::bucket;
use crate::cli::BucketArgs;
use crate::pull::{self, pick, recommend, Hub, Progress, Request};
use crate::supervisor::budget::human;

/// A progress bar on a terminal; silence elsewhere.
struct Bar(Option<ProgressBar>);

impl Progress for Bar {
    fn start(&mut self, total: u64, done: u64) {
        if let Some(b) = &self.0 {
            b.set_length(total);
            b.set_position(done);
            if done > 0 {
                b.println(format!("resuming at {}", human(done)));
            }
        }
    }

    fn advance(&mut self, done: u64) {
        if let Some(b) = &self.0 {
            b.set_position(done);
        }
    }

    fn verifying(&mut self) {
        if let Some(b) = &self.0 {
            b.set_message("verifying SHA-256");
        }
    }
}

pub fn pull(args: &BucketArgs, name: &str, file: Option<&str>, revision: &str, yes: bool, json: bool) -> Result<()> {
    let (config, dir) = bucket::open(args)?;
    let mut req = Request::parse(name, file, revision)?;
    let hub = Hub::from_env();
    let files = hub.list(&req.repo, &req.revision)?;
    if req.file.is_none() && !yes && std::io::stdin().is_terminal() {
        req.file = Some(ask(&files)?);
    }
    let target = req.target(&files)?;
    eprintln!("pulling {} {} ({}) into {}", target.repo, target.file, human(target.size), dir.display());
    let bar = std::io::stderr().is_terminal().then(|| bucket::bytes_bar(target.size, "downloading"));
    let mut progress = Bar(bar);
    let path = pull::fetch(&hub, &target, &dir, &mut progress)?;
    if let Some(b) = &progress.0 {
        b.finish_and_clear();
    }
    let cat = bucket::scan(&dir, &config)?;
    let m = cat.models.iter().find(|m| m.path == path).with_context(|| {
        let why = cat.skipped.iter().find(|s| s.path == path).map(|s| s.reason.clone()).unwrap_or_default();
        format!("{} was downloaded but is not a usable model: {why}", path.display())
    })?;
    crate::catalog_cmd::print_info(m, json)
}

/// Lists the repo's model files and reads the user's choice (Enter: the default).
fn ask(files: &[pull::RepoFile]) -> Result<String> {
    let models: Vec<&pull::RepoFile> = files.iter().filter(|f| pick::is_model_file(&f.path)).collect();
    anyhow::ensure!(!models.is_empty(), "the repo has no .gguf model files");
    let default = pick::default_choice(files).map(|f| f.path.clone());
    let mut err = std::io::stderr().lock();
    for (i, f) in models.iter().enumerate() {
        let mark = if Some(&f.path) == default.as_ref() { " (default)" } else { "" };
        writeln!(err, "{:>3}. {:<60} {:>9}{mark}", i + 1, f.path, human(f.size))?;
    }
    write!(err, "file to pull [number or name, Enter for the default]: ")?;
    err.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let line = line.trim();
    if line.is_empty() {
        return default.context("no default file");
    }
    if let Ok(n) = line.parse::<usize>() {
        return models.get(n.wrapping_sub(1)).map(|f| f.path.clone()).context("no such number");
    }
    Ok(line.to_string())
}

pub fn recommend() -> Result<()> {
    print!("{}", recommend::table(model_bucket_shared::mem::total_memory()));
    Ok(())
}
