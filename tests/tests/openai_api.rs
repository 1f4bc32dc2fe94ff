//! The OpenAI-compatible API end to end: a real `model-bucket serve` on the two default models,
//! driven by the official `openai` Python package (tests/python/test_openai_api.py).

use model_bucket_tests::*;
use std::process::Command;

#[test]
fn openai_python_sdk_suite() {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    link_model(GEMMA_FILE, dir.path(), GEMMA_FILE);
    let server = Server::start(dir.path(), &["--parallel", "2", "--ctx", "4096"]);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/test_openai_api.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg("-v")
        .env("EDEN_BASE_URL", server.base_url())
        .env("EDEN_SMOL", smol_id())
        .env("EDEN_GEMMA", gemma_id())
        .output()
        .expect("run python3 (install the openai package: pip install openai)");
    let report = String::from_utf8_lossy(&out.stderr);
    eprintln!("{report}");
    assert!(out.status.success(), "the openai SDK suite failed:\n{report}\n--- server log ---\n{}", server.log());
}
