//! The agent API end to end: structured output, tool calls, log-probabilities, prompt lists and
//! `n`, and embeddings, on the two real default models, driven by the official `openai` Python
//! package (tests/python/test_agent_api.py) and by LangChain (tests/python/test_langchain.py).

use model_bucket_tests::*;
use std::path::Path;
use std::process::Command;

/// Runs one Python suite against `server`; fails with its report and the server's log.
fn python_suite(server: &Server, script: &str) {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(here.join("python").join(script))
        .arg("-v")
        .env("EDEN_BASE_URL", server.base_url())
        .env("EDEN_SMOL", smol_id())
        .env("EDEN_GEMMA", gemma_id())
        .env("EDEN_EMBED_FIXTURE", here.join("fixtures/embeddings.json"))
        .output()
        .expect("run python3 (scripts/test installs what the suites need into .venv)");
    let report = String::from_utf8_lossy(&out.stderr);
    eprintln!("{report}");
    assert!(out.status.success(), "{script} failed:\n{report}\n--- server log ---\n{}", server.log());
}

fn both_models() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    link_model(GEMMA_FILE, dir.path(), GEMMA_FILE);
    let server = Server::start(dir.path(), &["--parallel", "4", "--ctx", "2048"]);
    (dir, server)
}

#[test]
fn openai_sdk_agent_suite() {
    let (_dir, server) = both_models();
    python_suite(&server, "test_agent_api.py");
}

#[test]
fn langchain_suite() {
    let (_dir, server) = both_models();
    python_suite(&server, "test_langchain.py");
}
