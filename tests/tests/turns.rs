//! Taking turns for memory, on the real models: requests for models that do not fit together
//! wait in a queue instead of failing, one swap serves a batch, a pinned model stays, and a
//! request whose client left never loads its model.

use model_bucket_tests::server::{alive, eventually, open, read_response};
use model_bucket_tests::*;
use std::path::Path;
use std::time::Duration;

/// Small contexts keep both workers small.
const SMALL: [&str; 4] = ["--ctx", "512", "--parallel", "2"];

/// A budget that holds either default model but not both.
const ONE_MODEL_BUDGET: &str = "400MiB";

fn both() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    link_model(GEMMA_FILE, dir.path(), GEMMA_FILE);
    dir
}

fn complete(port: u16, model: &str) -> (u16, String) {
    let body = format!(r#"{{"model":"{model}","prompt":"The capital of France is","max_tokens":4,"temperature":0}}"#);
    read_response(open(port, "POST", "/v1/completions", "", &body, None).unwrap()).unwrap()
}

fn evictions(s: &Server) -> u64 {
    s.metric_sum("model_bucket_evictions_total{")
}

#[test]
fn forty_alternating_requests_from_eight_clients_all_succeed_with_few_swaps() {
    let dir = both();
    let mut args = vec!["--ram-budget", ONE_MODEL_BUDGET];
    args.extend_from_slice(&SMALL);
    let s = Server::start(dir.path(), &args);
    let (smol, gemma) = (smol_id(), gemma_id());
    // Each client alternates between the two models, five requests each: every one of its
    // requests after the first asks for the other model (32 alternations in all).
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (port, models) = (s.port, [smol.clone(), gemma.clone()]);
            std::thread::spawn(move || (0..5).map(|i| complete(port, &models[(c + i) % 2])).collect::<Vec<_>>())
        })
        .collect();
    let answers: Vec<(u16, String)> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    assert_eq!(answers.len(), 40);
    for (status, body) in &answers {
        assert_eq!(*status, 200, "every request is served, none refused: {body}\n{}", s.log());
        assert!(body.contains("\"text\""), "{body}");
    }
    let swaps = evictions(&s);
    assert!(swaps >= 1, "the two models did not both run under a one-model budget");
    assert!(swaps <= 16, "{swaps} swaps for 32 alternations: more than half");
    eprintln!("40 requests, 32 alternations, {swaps} swaps");
}

/// A copy of SmolLM2 with bytes appended: the same model under another ID (its hash differs).
fn smol_copy(dir: &Path) -> String {
    let to = dir.join("smol-copy.gguf");
    let mut bytes = std::fs::read(model(SMOLLM2_FILE)).unwrap();
    bytes.extend_from_slice(&[0u8; 64]);
    std::fs::write(&to, bytes).unwrap();
    let sha = model_bucket_shared::hash::sha256_file(&to, None).unwrap();
    let id = smol_id();
    format!("{}{}", &id[..id.len() - 6], &sha[..6])
}

fn budget_of(s: &Server, model: &str) -> u64 {
    let w = s.worker_row(model);
    w["budget_bytes"].as_u64().unwrap_or_else(|| panic!("{model} is not loaded: {}", s.get_json("/admin/workers")))
}

#[test]
fn a_pinned_model_is_never_evicted_while_two_others_thrash() {
    let dir = both();
    let copy = smol_copy(dir.path());
    let (smol, gemma) = (smol_id(), gemma_id());
    // What each counts against the budget, from a server that holds them all.
    let (pinned_bytes, gemma_bytes) = {
        let s = Server::start(dir.path(), &SMALL);
        assert_eq!(complete(s.port, &smol).0, 200);
        assert_eq!(complete(s.port, &gemma).0, 200);
        (budget_of(&s, &smol), budget_of(&s, &gemma))
    };
    // Room for the pinned model and one other, never two others.
    let budget = (pinned_bytes + gemma_bytes + (8 << 20)).to_string();
    let config = dir.path().join("model-bucket.toml");
    std::fs::write(&config, format!("[models.{smol}]\nresident = true\n")).unwrap();
    let mut args = vec!["--ram-budget", &budget, "--config", config.to_str().unwrap(), "--quantum", "0"];
    args.extend_from_slice(&SMALL);
    let s = Server::start(dir.path(), &args);
    // Loaded at start, without a request.
    assert!(eventually(Duration::from_secs(30), || s.worker_pid(&smol).is_some()), "{}", s.log());
    let pid = s.worker_pid(&smol).unwrap();
    // The pinned model is never asked for while the others alternate: it is the least
    // recently used, the first an unpinned policy would evict.
    for i in 0..6 {
        let other = if i % 2 == 0 { &gemma } else { &copy };
        let (status, body) = complete(s.port, other);
        assert_eq!(status, 200, "{body}\n{}", s.log());
    }
    assert_eq!(complete(s.port, &smol).0, 200);
    assert!(evictions(&s) >= 4, "the other two swapped: {}", s.get("/metrics").unwrap().1);
    assert_eq!(s.worker_pid(&smol), Some(pid), "the pinned worker was never replaced");
    assert!(alive(pid));
    let v = s.get_json("/admin/workers");
    let row = v["workers"].as_array().unwrap().iter().find(|w| w["model"] == smol).cloned().unwrap();
    assert_eq!((row["pinned"].as_bool(), row["evictions"].as_u64()), (Some(true), Some(0)), "{row}");
}

#[test]
fn a_queued_request_whose_client_disconnects_never_loads_its_model() {
    let dir = both();
    // Long turns: a request for the other model waits for SmolLM2's turn to end.
    let mut args = vec!["--ram-budget", ONE_MODEL_BUDGET, "--quantum", "4"];
    args.extend_from_slice(&SMALL);
    let s = Server::start(dir.path(), &args);
    let (smol, gemma) = (smol_id(), gemma_id());
    assert_eq!(complete(s.port, &smol).0, 200);
    let body = format!(r#"{{"model":"{gemma}","prompt":"Hello","max_tokens":4}}"#);
    let client = open(s.port, "POST", "/v1/completions", "", &body, None).unwrap();
    let waiting = |s: &Server| {
        let v = s.get_json("/admin/workers");
        v["workers"].as_array().unwrap().iter().any(|w| w["model"] == gemma && w["waiting"] == 1)
    };
    assert!(eventually(Duration::from_secs(3), || waiting(&s)), "{}", s.get_json("/admin/workers"));
    // The client hangs up while it waits: it leaves the queue at once.
    drop(client);
    assert!(eventually(Duration::from_secs(2), || !waiting(&s)), "{}", s.get_json("/admin/workers"));
    // SmolLM2's turn ends with nobody waiting: it stays, and Gemma never loads.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(s.worker_models(), vec![smol.clone()], "{}", s.log());
    assert_eq!(s.model_state(&gemma).0, "unloaded");
    assert!(!s.log().contains(&format!("model={gemma} pid=")), "something started Gemma:\n{}", s.log());
}
