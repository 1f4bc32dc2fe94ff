//! Memory counted as it is used, on the real models: each worker's estimate is close to what it
//! holds, evictable memory (the prompt cache, the embedding context) counts for what it holds,
//! and it is shrunk to make room before a model is evicted.

use model_bucket_tests::*;
use serde_json::Value;
use std::time::Duration;

use model_bucket_tests::server::eventually;

const MIB: u64 = 1 << 20;

fn both() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    link_model(GEMMA_FILE, dir.path(), GEMMA_FILE);
    dir
}

fn row(s: &Server, model: &str) -> Value {
    s.worker_row(model)
}

fn complete(s: &Server, model: &str, prompt: &str) {
    let body = serde_json::json!({ "model": model, "prompt": prompt, "max_tokens": 8, "temperature": 0 });
    let (status, resp) = s.post("/v1/completions", &body.to_string()).unwrap();
    assert_eq!(status, 200, "{resp}");
}

fn embed(s: &Server, model: &str, input: &str) {
    let body = serde_json::json!({ "model": model, "input": input });
    let (status, resp) = s.post("/v1/embeddings", &body.to_string()).unwrap();
    assert_eq!(status, 200, "{resp}");
}

/// A request whose answer repeats its prompt, so that its sequence proposes as many tokens a
/// step as speculation allows (what fills the proposals' logits).
fn speculate(s: &Server, model: &str) {
    let count: Vec<String> = (1..=20).map(|i| i.to_string()).collect();
    let prompt = format!("{0}, {0}, {0}, 1,", count.join(", "));
    let body = serde_json::json!({ "model": model, "prompt": prompt, "max_tokens": 96, "temperature": 0 });
    let r = s.post_json("/v1/completions", &body);
    assert!(r["timings"]["draft_n_accepted"].as_u64().unwrap() > 16, "{model} hardly speculated: {r}");
}

fn evictions(s: &Server) -> u64 {
    s.metric_sum("model_bucket_evictions_total{")
}

/// The workers' resident memory, summed, as the system reports it.
fn measured(s: &Server) -> u64 {
    let v = s.get_json("/admin/workers");
    let pids = v["workers"].as_array().unwrap().iter().filter_map(|w| w["pid"].as_u64());
    pids.filter_map(|p| model_bucket_shared::mem::rss_bytes(Some(p as u32))).sum()
}

#[test]
fn each_estimate_is_within_a_tenth_of_what_its_worker_holds() {
    let dir = both();
    for settings in [&["--ctx", "512", "--parallel", "2"][..], &[][..]] {
        let s = Server::start(dir.path(), settings);
        for model in [smol_id(), gemma_id()] {
            for k in 0..3 {
                complete(&s, &model, &format!("Counting began long ago, when people first kept {k} sheep and"));
            }
            speculate(&s, &model);
            // Steady state: what it holds once it has served (proposals too), less its
            // evictable memory.
            std::thread::sleep(Duration::from_millis(1500));
            let w = row(&s, &model);
            let (rss, held, est) =
                (w["memory_bytes"].as_u64(), w["evictable_bytes"].as_u64(), w["estimate_bytes"].as_u64());
            let (rss, held, est) = (rss.unwrap(), held.unwrap(), est.unwrap());
            let steady = rss - held;
            let ratio = est as f64 / steady as f64;
            println!(
                "{model} {settings:?}: estimate {} MiB, holds {} MiB ({} MiB of it evictable), ratio {ratio:.3}",
                est / MIB,
                rss / MIB,
                held / MIB
            );
            assert!((0.9..=1.1).contains(&ratio), "{model} {settings:?}: estimate {est}, steady {steady}: {w}");
            assert!(w["budget_bytes"].as_u64().unwrap() >= est + held, "it counts what it holds: {w}");
        }
    }
}

#[test]
fn an_embedding_context_is_dropped_to_make_room_instead_of_evicting_its_model() {
    let dir = both();
    let small = ["--ctx", "512", "--parallel", "2"];
    // The two estimates, from a server with room.
    let (smol, gemma) = {
        let s = Server::start(dir.path(), &small);
        complete(&s, &smol_id(), "The capital of France is");
        complete(&s, &gemma_id(), "The capital of France is");
        let est = |m: &str| row(&s, m)["estimate_bytes"].as_u64().unwrap();
        (est(&smol_id()), est(&gemma_id()))
    };
    // Both fit with 40 MiB to spare, but not beside Gemma's embedding context.
    let budget = (smol + gemma) / MIB + 40;
    let mut args = small.to_vec();
    let budget_arg = format!("{budget}MiB");
    args.extend(["--ram-budget", &budget_arg, "--prompt-cache", "0"]);
    let s = Server::start(dir.path(), &args);
    embed(&s, &gemma_id(), "a note to remember");
    // The worker reports it just after its answer.
    let held = || row(&s, &gemma_id())["evictable_bytes"].as_u64().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || held() > 40 * MIB),
        "the embedding context counts for what it comes to hold: {}\n{}",
        row(&s, &gemma_id()),
        s.log()
    );
    let pid = s.worker_pid(&gemma_id()).unwrap();

    // SmolLM2 needs the room the context holds: the context goes, Gemma stays.
    complete(&s, &smol_id(), "The capital of France is");
    let after = row(&s, &gemma_id());
    assert_eq!(s.worker_pid(&gemma_id()), Some(pid), "Gemma was not evicted: {}", s.log());
    assert_eq!(after["state"], "ready", "{after}");
    assert!(after["evictable_bytes"].as_u64().unwrap() < 8 * MIB, "{after}");
    // Past the next measures too.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(evictions(&s), 0, "{}", s.log());
    assert!(
        eventually(Duration::from_secs(5), || measured(&s) <= budget * MIB),
        "the workers hold {} MiB of a {budget} MiB budget",
        measured(&s) / MIB
    );

    // Gemma embeds again: it makes the context for the request, and nobody is evicted.
    embed(&s, &gemma_id(), "another note");
    complete(&s, &smol_id(), "The capital of Italy is");
    assert_eq!((s.worker_pid(&gemma_id()), evictions(&s)), (Some(pid), 0), "{}", s.log());
}
