//! The agent API end to end: structured output, tool calls, log-probabilities, prompt lists and
//! `n`, and embeddings, on the two real default models, driven by the official `openai` Python
//! package (tests/python/test_agent_api.py) and by LangChain (tests/python/test_langchain.py).

use model_bucket_tests::*;

/// Runs one Python suite against `server`, with the reference vectors made with llama-server.
fn python_suite(server: &Server, script: &str) {
    let fixture = python::fixture("embeddings.json");
    python::suite(server, script, &[("EDEN_EMBED_FIXTURE", &fixture)]);
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
