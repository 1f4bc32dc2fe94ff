//! The Anthropic Messages and Ollama dialects end to end, on the two real default models,
//! driven by the official `anthropic` and `ollama` Python clients (tests/python/test_dialects.py):
//! every answer is compared with the same request sent as OpenAI Chat Completions.

use model_bucket_tests::*;
use std::path::Path;
use std::process::Command;

#[test]
fn anthropic_and_ollama_clients_suite() {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    link_model(GEMMA_FILE, dir.path(), GEMMA_FILE);
    let server = Server::start(dir.path(), &["--parallel", "2", "--ctx", "2048"]);
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(here.join("python").join("test_dialects.py"))
        .arg("-v")
        .env("EDEN_BASE_URL", server.base_url())
        .env("EDEN_SMOL", smol_id())
        .env("EDEN_GEMMA", gemma_id())
        .output()
        .expect("run python3 (scripts/test installs what the suites need into .venv)");
    let report = String::from_utf8_lossy(&out.stderr);
    eprintln!("{report}");
    assert!(out.status.success(), "test_dialects.py failed:\n{report}\n--- server log ---\n{}", server.log());
}
