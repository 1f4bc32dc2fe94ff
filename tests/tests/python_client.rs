//! The `model_bucket` Python package (clients/python), installed with pip for each test: the
//! README's example run as written (the SmolLM2 file as its path, its ID as the model), and the
//! package's suite (tests/python/test_model_bucket.py) against a live server on an empty
//! folder that pulls from the stand-in hub.

use model_bucket_tests::hub::Hub;
use model_bucket_tests::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `pip install ./clients/python` into a fresh folder (the package alone: it has no
/// dependencies), so that the tests import what pip installs from the current sources.
fn install() -> tempfile::TempDir {
    // setuptools builds in the source folder: one install at a time.
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps", "--no-build-isolation"])
        .arg("--target")
        .arg(dir.path())
        .arg(repo().join("clients/python"))
        .output()
        .expect("run python3 -m pip (scripts/test makes the .venv it comes from)");
    assert!(out.status.success(), "pip install ./clients/python failed:\n{}", String::from_utf8_lossy(&out.stderr));
    dir
}

fn python(pkg: &Path, server: &Server, args: &[&str]) -> Output {
    Command::new("python3")
        .args(args)
        .env("PYTHONPATH", pkg)
        .env("EDEN_PKG_DIR", pkg)
        .env("EDEN_URL", server.base_url())
        .env_remove("EDEN_API_KEY")
        .env("EDEN_SMOL_PATH", model(SMOLLM2_FILE))
        .env("EDEN_SMOL", smol_id())
        .env("EDEN_GEMMA", gemma_id())
        .env("EDEN_BUCKET_BIN", bin("model-bucket"))
        .current_dir(pkg)
        .output()
        .expect("run python3")
}

/// The first Python block of the README's Python section, with the example's path and ID
/// replaced by the SmolLM2 file and its ID.
fn readme_example() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme.split("\n## Python\n").nth(1).expect("a `## Python` section in the README");
    let block = section.split("```python\n").nth(1).and_then(|b| b.split("```").next()).expect("a python block");
    assert!(block.contains("/path/to/mistral-7b.gguf") && block.contains("eden_mistral_7b_a3f2c1"), "{block}");
    block
        .replace("/path/to/mistral-7b.gguf", model(SMOLLM2_FILE).to_str().unwrap())
        .replace("eden_mistral_7b_a3f2c1", &smol_id())
}

#[test]
fn the_readme_example_runs_as_written() {
    let pkg = install();
    let dir = tempfile::tempdir().unwrap();
    // `max_tokens=10000` runs to the end of the answer or of the context: a small context
    // keeps a rambling poem short on a CI machine.
    let server = Server::start(dir.path(), &["--ctx", "512"]);
    let script = pkg.path().join("example.py");
    std::fs::write(&script, readme_example()).unwrap();
    let out = python(pkg.path(), &server, &[script.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n--- server log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], smol_id());
    assert_eq!(lines[1], "['chat', 'completion', 'instruction']");
    assert_eq!(lines[2], "8192");
    let poem = lines[3..].join("\n");
    assert!(poem.split_whitespace().count() >= 5, "the poem: {poem:?}");
    assert!(dir.path().join(SMOLLM2_FILE).exists(), "the file was added to the server's folder");
}

#[test]
fn the_package_suite() {
    let pkg = install();
    let hub = Hub::start();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(dir.path(), &[], &[("EDEN_HF_ENDPOINT", &hub.url())]);
    let suite = repo().join("tests/python/test_model_bucket.py");
    let out = python(pkg.path(), &server, &[suite.to_str().unwrap(), "-v"]);
    let report = String::from_utf8_lossy(&out.stderr);
    eprintln!("{report}");
    assert!(out.status.success(), "test_model_bucket.py failed:\n{report}\n--- server log ---\n{}", server.log());
}
