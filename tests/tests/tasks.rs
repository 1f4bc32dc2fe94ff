//! Task routing for Gesher-El: `task:NAME` (or a bare task name) goes to the first model of the
//! task's chain that is present, not failed and able to take the request; and the opt-in
//! remote fallback, with a second local server standing in for the upstream.

use model_bucket_tests::server::sse_lines;
use model_bucket_tests::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn chat(s: &Server, model: &str) -> (u16, Value) {
    let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"Hi"}}],"max_tokens":3}}"#);
    let (status, resp) = s.post("/v1/chat/completions", &body).unwrap();
    let json = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

fn complete(s: &Server, model: &str) -> (u16, Value, String) {
    let body = format!(r#"{{"model":"{model}","prompt":"Once","max_tokens":3}}"#);
    let (status, resp) = s.post("/v1/completions", &body).unwrap();
    let (head, json) = resp.split_once("\r\n\r\n").unwrap_or(("", ""));
    (status, serde_json::from_str(json).unwrap_or(Value::Null), head.to_ascii_lowercase())
}

fn server_with(dir: &Path, config: &str, env: &[(&str, &str)]) -> Server {
    let path = dir.join("bucket.toml");
    std::fs::write(&path, config).unwrap();
    Server::start_with_env(dir, &["--config", path.to_str().unwrap(), "--ctx", "512", "--parallel", "2"], env)
}

#[test]
fn a_task_goes_to_the_first_model_of_its_chain_that_can_serve() {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    link_model(GEMMA_FILE, dir.path(), GEMMA_FILE);
    // A file whose header reads but whose tensors are cut off: listed, but it cannot load.
    let bytes = std::fs::read(model(GEMMA_FILE)).unwrap();
    std::fs::write(dir.path().join("broken.gguf"), &bytes[..8 << 20]).unwrap();
    // (The broken file is a second Gemma, so Gemma's hashless alias is gone: the chain names the
    // full ID.)
    let config = format!(
        r#"
[tasks]
thinking = ["eden_llama3_8b", "eden_smollm2_135m"]
memory = ["{}", "eden_smollm2_135m"]
fragile = ["broken.gguf", "eden_smollm2_135m"]
nowhere = ["eden_llama3_8b"]
"#,
        gemma_id()
    );
    let s = server_with(dir.path(), &config, &[]);
    // A missing model is skipped.
    let (status, v) = chat(&s, "task:thinking");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], smol_id());
    assert_eq!(chat(&s, "thinking").1["model"], smol_id(), "a bare task name works too");
    // Gemma has no chat template: chat skips it, a text completion takes it.
    assert_eq!(chat(&s, "task:memory").1["model"], smol_id());
    assert_eq!(complete(&s, "task:memory").1["model"], gemma_id());
    // A model that fails to load passes the request on, and is skipped from then on.
    let (status, v, _) = complete(&s, "task:fragile");
    assert_eq!(status, 200, "{v}\n{}", s.log());
    assert_eq!(v["model"], smol_id());
    assert!(s.log().contains("trying the next model of the task"), "{}", s.log());
    assert_eq!(complete(&s, "task:fragile").1["model"], smol_id());
    // Nothing to serve with: a clear 503, and nothing leaves the machine.
    let (status, v, _) = complete(&s, "task:nowhere");
    assert_eq!(status, 503, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("no model of task nowhere"), "{v}");

    let v = s.get_json("/v1/models");
    let thinking =
        v["data"].as_array().unwrap().iter().find(|m| m["id"] == "task:thinking").expect("tasks listed").clone();
    assert_eq!(thinking["task"]["serving"], smol_id());
    assert_eq!(thinking["task"]["chain"][0], "eden_llama3_8b");
    assert_eq!(s.get_json("/v1/models/task:memory")["task"]["serving"], gemma_id());
}

#[test]
fn the_remote_fallback_is_used_only_when_no_local_model_can_serve() {
    // The upstream: another server with Gemma, behind a key.
    let up_dir = tempfile::tempdir().unwrap();
    link_model(GEMMA_FILE, up_dir.path(), GEMMA_FILE);
    let upstream = Server::start(up_dir.path(), &["--api-key", "up-secret", "--ctx", "512", "--parallel", "2"]);

    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    let config = format!(
        r#"
[tasks]
remote = ["eden_llama3_8b", "upstream:{gemma}"]
local_first = ["eden_smollm2_135m", "upstream:{gemma}"]

[upstream]
url = "{url}/v1"
api_key_env = "TEST_UPSTREAM_KEY"
"#,
        gemma = gemma_id(),
        url = upstream.base_url()
    );
    let s = server_with(dir.path(), &config, &[("TEST_UPSTREAM_KEY", "up-secret")]);

    let (status, v, head) = complete(&s, "task:remote");
    assert_eq!(status, 200, "{v}\n{}", s.log());
    assert_eq!(v["model"], gemma_id(), "answered by the upstream's model");
    assert!(head.contains("x-model-bucket-upstream: 1"), "{head}");
    let body = r#"{"model":"task:remote","prompt":"Once","max_tokens":3,"stream":true}"#;
    let lines: Vec<String> = sse_lines(s.port, "/v1/completions", body, Duration::from_secs(60)).collect();
    assert_eq!(lines.last().map(String::as_str), Some("[DONE]"), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains(&gemma_id())), "{lines:?}");

    let (status, v, head) = complete(&s, "task:local_first");
    assert_eq!(status, 200);
    assert_eq!(v["model"], smol_id());
    assert!(!head.contains("x-model-bucket-upstream"), "{head}");
}
