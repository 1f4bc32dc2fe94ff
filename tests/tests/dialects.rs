//! The Anthropic Messages and Ollama dialects and OpenAI's Responses end to end, on the real
//! default models, driven by the official `anthropic`, `ollama` and `openai` Python clients
//! (tests/python/test_dialects.py, test_responses.py): every answer is compared with the same
//! request sent as Chat Completions, and plain-text answers with what llama.cpp's llama-server
//! answers on its own `/v1/messages` and `/v1/responses` (tests/fixtures/dialects.json). A
//! stored Responses conversation survives a restart.

use model_bucket_tests::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

#[test]
fn anthropic_and_ollama_clients_suite() {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    link_model(GEMMA_FILE, dir.path(), GEMMA_FILE);
    let server = Server::start(dir.path(), &["--parallel", "2", "--ctx", "2048"]);
    python::suite(&server, "test_dialects.py", &[("EDEN_DIALECT_FIXTURE", &python::fixture("dialects.json"))]);
}

#[test]
fn responses_suite_and_a_stored_conversation_that_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    let parent = tempfile::tempdir().unwrap();
    let store = parent.path().join("responses");
    let args = ["--parallel", "2", "--ctx", "2048", "--responses-dir", store.to_str().unwrap()];
    let smol = smol_id();
    let first =
        json!({ "model": smol, "input": "My name is Ada. Say hello.", "max_output_tokens": 16, "temperature": 0 });
    let (id, said) = {
        let server = Server::start(dir.path(), &args);
        python::suite(&server, "test_responses.py", &[("EDEN_DIALECT_FIXTURE", &python::fixture("dialects.json"))]);
        let r = server.post_json("/v1/responses", &first);
        (r["id"].as_str().unwrap().to_string(), r["output"][0]["content"][0]["text"].as_str().unwrap().to_string())
    };
    // Private: the folder and each file are the server user's alone.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&store), 0o700);
    assert_eq!(mode(&store.join(format!("{id}.json"))), 0o600);

    // A new server on the same folder finds the conversation and continues it.
    let server = Server::start(dir.path(), &args);
    let (status, body) = server.get(&format!("/v1/responses/{id}")).unwrap();
    assert_eq!(status, 200, "{body}");
    let next = json!({ "model": smol, "input": "What is my name?", "previous_response_id": id,
        "max_output_tokens": 16, "temperature": 0 });
    let r = server.post_json("/v1/responses", &next);
    let continued = r["output"][0]["content"][0]["text"].as_str().unwrap().to_string();
    // The same conversation sent whole to Chat Completions.
    let whole = server.post_json(
        "/v1/chat/completions",
        &json!({ "model": smol, "max_tokens": 16, "temperature": 0, "messages": [
            { "role": "user", "content": "My name is Ada. Say hello." },
            { "role": "assistant", "content": said },
            { "role": "user", "content": "What is my name?" },
        ]}),
    );
    assert_eq!(continued, whole["choices"][0]["message"]["content"].as_str().unwrap());
}

/// POST `body` to `path`; its JSON, which must come with a 200.
#[test]
fn the_ollama_port_serves_the_same_api() {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = Server::start(dir.path(), &["--ollama-port", &port.to_string()]);
    let (status, body) = model_bucket_tests::server::get(port, "/api/tags").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&smol_id()), "{body}");
    let (status, body) = model_bucket_tests::server::get(port, "/api/version").unwrap();
    assert_eq!(status, 200, "{body}");
    // The main port serves as before.
    assert_eq!(server.get("/api/tags").unwrap().0, 200);
}

#[test]
fn the_ollama_client_pulls_from_the_hub_and_lists_what_it_got() {
    let hub = model_bucket_tests::hub::Hub::start();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(dir.path(), &[], &[("EDEN_HF_ENDPOINT", &hub.url())]);
    let script = r#"
import os, sys, ollama
c = ollama.Client(host=os.environ["EDEN_BASE_URL"], timeout=180)
statuses = [p.status for p in c.pull("hf.co/test/SmolLM2-GGUF:latest", stream=True)]
assert statuses[0] == "pulling manifest", statuses
assert any(s.startswith("pulling ") and s != "pulling manifest" for s in statuses), statuses
assert statuses[-1] == "success", statuses
names = [m.model for m in c.list().models]
assert os.environ["EDEN_SMOL"] in names, names
try:
    c.pull("test/nope-GGUF", stream=False)
    sys.exit("a missing repo was pulled")
except ollama.ResponseError as e:
    assert "not found" in e.error, e.error
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .env("EDEN_BASE_URL", server.base_url())
        .env("EDEN_SMOL", smol_id())
        .output()
        .expect("run python3 (scripts/test installs what the suites need into .venv)");
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the ollama client's pull failed:\n{report}\n--- server log ---\n{}", server.log());
}

#[test]
fn the_openai_agents_sdk_runs_a_two_tool_agent_to_completion() {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    let server = Server::start(dir.path(), &["--parallel", "2", "--ctx", "2048"]);
    python::suite(&server, "test_agents.py", &[]);
}
