//! Helpers for the end-to-end tests: where the built binaries and the real models are.
//!
//! The tests run the release binaries (`scripts/test` builds them first) against the default
//! models that `models/fetch` brings. A missing model is a test failure, never a skip.

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod fresh;
pub mod hub;
pub mod mutate;
pub mod python;
pub mod server;
pub mod stress;
pub mod worker;

pub use server::Server;

pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA_FILE: &str = "gemma-3-270m-q4_k_m.gguf";
pub const SMOLLM2_SHA: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
pub const GEMMA_SHA: &str = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";

/// SmolLM2's catalog ID.
pub fn smol_id() -> String {
    format!("eden_smollm2_135m_{}", &SMOLLM2_SHA[..6])
}

/// Gemma 3 270M's catalog ID.
pub fn gemma_id() -> String {
    format!("eden_gemma3_270m_{}", &GEMMA_SHA[..6])
}

/// The checkout's root folder.
pub fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// `tests/node`, checked to have `package` installed (scripts/test runs `npm install` there).
pub fn node_dir(package: &str) -> PathBuf {
    let dir = repo().join("tests/node");
    assert!(
        dir.join("node_modules").join(package).is_dir(),
        "{package} is not installed: run `npm install` in tests/node (scripts/test does)"
    );
    dir
}

/// Writes a LoRA adapter GGUF with `args` for tests/fixtures/make_lora.py, run by the Python
/// that has the `gguf` package: `$EDEN_GGUF_PYTHON`, else the checkout's `.venv-gguf`
/// (scripts/test makes it).
pub fn make_lora(out: &Path, args: &[&str]) {
    let python = std::env::var_os("EDEN_GGUF_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv-gguf/bin/python3"));
    assert!(
        python.exists(),
        "{} is missing: scripts/test creates it (python3 -m venv .venv-gguf && .venv-gguf/bin/pip install gguf)",
        python.display()
    );
    let status = Command::new(&python)
        .arg(repo().join("tests/fixtures/make_lora.py"))
        .arg(out)
        .args(args)
        .status()
        .expect("run python3");
    assert!(status.success(), "make_lora.py failed with {}", python.display());
}

/// The folder holding the default models (`$EDEN_TEST_MODELS_DIR`, else `models/`).
pub fn models_dir() -> PathBuf {
    let dir = std::env::var_os("EDEN_TEST_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../models"));
    for f in [SMOLLM2_FILE, GEMMA_FILE] {
        assert!(dir.join(f).is_file(), "{} is missing: run `models/fetch {}` first", f, dir.display());
    }
    dir
}

/// Path of one default model file.
pub fn model(file: &str) -> PathBuf {
    models_dir().join(file)
}

/// A built binary of the workspace (`model-bucket`, `model-bucket-worker`), from the same
/// profile as the running test. Under `cargo test` the binaries are built first (once per test
/// process; a no-op when they are current), so a test never runs a binary older than the code
/// it sits next to; run any other way (a bench binary), a binary older than the sources is an
/// error that says how to rebuild.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // Tests run from target/<profile>/deps/, the bench binaries from target/<profile>/.
    let dir = exe.parent().expect("target dir");
    let profile_dir = if dir.ends_with("deps") { dir.parent().expect("profile dir") } else { dir };
    fresh::ensure_built(profile_dir);
    let path = profile_dir.join(name);
    assert!(path.is_file(), "{} is not built: run `cargo build --release --workspace --bins`", path.display());
    path
}

/// `model-bucket` with `args`, output captured; panics with stderr when it fails.
pub fn run_ok(args: &[&str]) -> String {
    let out = Command::new(bin("model-bucket")).args(args).output().expect("spawn model-bucket");
    assert!(
        out.status.success(),
        "model-bucket {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// `model-bucket` with `args` and extra environment variables: (exit success, stdout, stderr).
pub fn run_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out =
        Command::new(bin("model-bucket")).args(args).envs(env.iter().copied()).output().expect("spawn model-bucket");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A fresh models folder holding SmolLM2 alone.
pub fn smol_bucket() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    dir
}

/// Puts `file` from the default models into `dir` (hard link, else copy) under `as_name`.
pub fn link_model(file: &str, dir: &Path, as_name: &str) -> PathBuf {
    let dest = dir.join(as_name);
    if std::fs::hard_link(model(file), &dest).is_err() {
        std::fs::copy(model(file), &dest).expect("copy model");
    }
    dest
}
