//! Clients as users run them: the official OpenAI Node SDK (tests/node/sdk.mjs), and the example
//! Gesher-El daemon (examples/gesher_el.py, Python SDK) driving all four tasks on a server
//! started the way a new user starts it, with deploy/start.sh on a fresh ~/EDEN.

use model_bucket_tests::server::{self, eventually};
use model_bucket_tests::*;
use serde_json::Value;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn the_official_node_sdk_works() {
    let node_dir = node_dir("openai");
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    link_model(GEMMA_FILE, dir.path(), GEMMA_FILE);
    let s = Server::start(dir.path(), &["--parallel", "2", "--ctx", "1024"]);
    let out = Command::new("node")
        .current_dir(&node_dir)
        .arg("sdk.mjs")
        .arg(s.base_url())
        .arg(smol_id())
        .arg(gemma_id())
        .output()
        .expect("run node");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the Node SDK suite failed:\n{report}\n--- server log ---\n{}", s.log());
    assert!(report.contains("7/7 passed"), "{report}");
}

#[test]
fn start_sh_on_a_fresh_home_serves_the_daemon_through_all_four_tasks() {
    let home = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(repo().join("deploy/start.sh"))
        .args(["--port", &port.to_string(), "--threads", "1", "--ctx", "1024", "--parallel", "2"])
        .env("HOME", home.path())
        .env_remove("EDEN_MODELS_DIR")
        .env_remove("EDEN_CONFIG")
        .env("EDEN_BIN_DIR", bin("model-bucket").parent().unwrap())
        .stdin(Stdio::null())
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .spawn()
        .expect("deploy/start.sh");
    let health = || matches!(server::get(port, "/health"), Ok((200, _)));
    let up = eventually(Duration::from_secs(120), health);
    let server_log = || std::fs::read_to_string(log.path()).unwrap_or_default();
    assert!(up, "start.sh did not bring a server up:\n{}", server_log());
    let models = home.path().join("EDEN/models");
    assert!(models.join(SMOLLM2_FILE).is_file() && models.join(GEMMA_FILE).is_file(), "{}", server_log());
    assert!(home.path().join("EDEN/model-bucket.toml").is_file());

    let out = Command::new("python3")
        .arg(repo().join("examples/gesher_el.py"))
        .args(["--json", "--rounds", "2", "--max-tokens", "12", "--base-url", &format!("http://127.0.0.1:{port}/v1")])
        .output()
        .expect("python3 examples/gesher_el.py");
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n--- server ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        server_log()
    );
    let steps: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let tasks: Vec<&str> = steps.iter().map(|s| s["task"].as_str().unwrap()).collect();
    assert_eq!(tasks, ["thinking", "intent", "command", "memory"].repeat(2));
    for s in &steps {
        assert!(s["tokens"].as_u64().unwrap() > 0, "{s}");
    }
    // The chains fall back to what the folder has: Gemma for memory, SmolLM2 for the rest.
    assert_eq!(steps[0]["model"], smol_id());
    assert_eq!(steps[3]["model"], gemma_id());
    // The intent fits its schema (the example validates it), the command is a call of an offered
    // tool, and the second memory finds the first as its nearest.
    let intents = ["remind", "search", "run", "chat", "ignore"];
    assert!(intents.contains(&steps[1]["intent"]["intent"].as_str().unwrap()), "{}", steps[1]);
    let tool = steps[2]["tool_call"]["name"].as_str().unwrap();
    assert!(["run_shell", "set_reminder"].contains(&tool), "{}", steps[2]);
    assert_eq!(steps[3]["nearest"], Value::Null);
    assert_eq!(steps[7]["nearest"], steps[3]["text"], "{}", steps[7]);
    assert_eq!(steps[7]["dimensions"], 640, "Gemma 3 270M's width");
    assert!(status.success(), "SIGTERM ends start.sh's server cleanly: {status}");
}
