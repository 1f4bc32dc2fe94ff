//! The prompt cache on the real models: a request prefills only what it has not sent before,
//! whether the rest is still in its slot, in the worker's memory cache, or on disk from an
//! earlier worker (after a rolling restart, an eviction, an unload), and the answer at
//! temperature 0 is the same as without the cache. Files that are corrupt are ignored; a
//! stopping worker writes only within its time.

use model_bucket_tests::server::{eventually, signal};
use model_bucket_tests::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One chat answer and how its prompt was served.
#[derive(Debug)]
struct Answer {
    text: String,
    prompt_tokens: u64,
    cached: u64,
    /// `slot`, `memory`, `disk`, or empty when nothing was cached.
    source: String,
}

fn ask(s: &Server, model: &str, messages: &Value, cache: bool) -> Answer {
    let body =
        json!({ "model": model, "messages": messages, "temperature": 0, "max_tokens": 16, "cache_prompt": cache });
    let (status, raw) = s.post("/v1/chat/completions", &body.to_string()).unwrap();
    assert_eq!(status, 200, "{raw}");
    let v: Value = serde_json::from_str(raw.split("\r\n\r\n").last().unwrap()).unwrap();
    Answer {
        text: v["choices"][0]["message"]["content"].as_str().unwrap().to_string(),
        prompt_tokens: v["usage"]["prompt_tokens"].as_u64().unwrap(),
        cached: v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap(),
        source: v["timings"]["cache_source"].as_str().unwrap_or("").to_string(),
    }
}

/// A task's long system prompt (~250 tokens) and one user message.
fn task(name: &str, duty: &str, user: &str) -> Value {
    let system = format!("You are {name}, the part of a home daemon that {duty}. ").repeat(12);
    json!([{ "role": "system", "content": system }, { "role": "user", "content": user }])
}

fn task_a() -> Value {
    task("the commander", "writes one shell command for each request", "Show the free disk space.")
}

fn task_b() -> Value {
    task("the archivist", "condenses memories into a single line", "Today I repaired the garden fence.")
}

fn kv_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(dir).unwrap().flatten() {
        for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
            if f.path().extension().is_some_and(|x| x == "kv") {
                out.push(f.path());
            }
        }
    }
    out
}

fn metric(s: &Server, source: &str) -> u64 {
    let (_, body) = s.get("/metrics").unwrap();
    body.lines()
        .filter(|l| {
            l.starts_with("model_bucket_prompt_tokens_by_source_total") && l.contains(&format!("source=\"{source}\""))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[test]
fn a_conversation_prefills_only_its_new_tokens_and_answers_as_without_the_cache() {
    let dir = smol_bucket();
    let s = Server::start(dir.path(), &["--parallel", "2", "--ctx", "2048"]);
    let id = smol_id();
    let mut messages = task_a();
    let mut previous_prompt = 0;
    for turn in 0..6 {
        let warm = ask(&s, &id, &messages, true);
        let cold = ask(&s, &id, &messages, false);
        assert_eq!(warm.text, cold.text, "turn {turn}: the cached prefix changed the answer");
        assert_eq!(cold.cached, 0, "cache_prompt: false prefills everything");
        if turn > 0 {
            assert_eq!(warm.source, "slot", "turn {turn}: {warm:?}");
            // The whole earlier prompt (and its answer) is reused; only the new turn is prefilled.
            assert!(warm.cached >= previous_prompt, "turn {turn}: {warm:?} after a {previous_prompt}-token prompt");
            assert!(warm.cached < warm.prompt_tokens);
        }
        previous_prompt = warm.prompt_tokens;
        messages.as_array_mut().unwrap().push(json!({ "role": "assistant", "content": warm.text }));
        messages.as_array_mut().unwrap().push(json!({ "role": "user", "content": format!("And step {turn}?") }));
    }
    assert!(metric(&s, "slot") > 1000, "cached tokens are counted in /metrics");
    assert!(metric(&s, "prefill") > 0);
}

#[test]
fn prefixes_pushed_out_of_the_slots_come_back_from_memory_and_after_a_restart_from_disk() {
    let dir = smol_bucket();
    let s = Server::start(dir.path(), &["--parallel", "1", "--ctx", "1024"]);
    let (id, a, b) = (smol_id(), task_a(), task_b());
    ask(&s, &id, &a, true);
    let slot = ask(&s, &id, &a, true);
    assert_eq!((slot.source.as_str(), slot.cached), ("slot", slot.prompt_tokens - 1), "{slot:?}");
    // One slot: B takes it over, and A's prefix moves to the memory cache.
    let first_b = ask(&s, &id, &b, true);
    let memory = ask(&s, &id, &a, true);
    assert_eq!((memory.source.as_str(), memory.cached), ("memory", slot.cached), "{memory:?}");
    assert_eq!(memory.text, slot.text);

    // A rolling restart: the old worker writes its prefixes to disk, the new one reads them.
    let pid = s.worker_pid(&id).unwrap();
    signal(s.child.id(), "USR1");
    assert!(eventually(Duration::from_secs(30), || s.worker_pid(&id).is_some_and(|p| p != pid)), "{}", s.log());
    assert!(!kv_files(s.kv_dir.path()).is_empty(), "prefixes written to disk: {}", s.log());
    let disk = ask(&s, &id, &a, true);
    assert_eq!((disk.source.as_str(), disk.cached), ("disk", slot.cached), "{disk:?}\n{}", s.log());
    assert_eq!(disk.text, slot.text);
    let disk_b = ask(&s, &id, &b, true);
    assert_eq!(disk_b.source, "disk", "{disk_b:?}");
    assert_eq!(disk_b.text, first_b.text);
    assert!(metric(&s, "memory") > 0 && metric(&s, "disk") > 0);
}

#[test]
fn a_prefix_survives_its_workers_eviction_under_a_one_model_budget() {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    link_model(GEMMA_FILE, dir.path(), GEMMA_FILE);
    let s = Server::start(dir.path(), &["--ram-budget", "400MiB", "--quantum", "0", "--ctx", "512", "--parallel", "2"]);
    let a = task_a();
    ask(&s, &smol_id(), &a, true);
    let slot = ask(&s, &smol_id(), &a, true);
    let body = json!({ "model": gemma_id(), "prompt": "The capital of France is", "max_tokens": 4 });
    assert_eq!(s.post("/v1/completions", &body.to_string()).unwrap().0, 200);
    assert_eq!(s.worker_models(), vec![gemma_id()], "serving Gemma evicted SmolLM2");
    let back = ask(&s, &smol_id(), &a, true);
    assert_eq!((back.source.as_str(), back.cached), ("disk", slot.cached), "{back:?}\n{}", s.log());
    assert_eq!(back.text, slot.text);
}

#[test]
fn a_corrupt_or_truncated_cache_file_is_ignored_and_the_prompt_prefilled() {
    let dir = smol_bucket();
    // Two slots: each task gets a slot of its own, so every prefill starts from position 0.
    let s = Server::start(dir.path(), &["--parallel", "2", "--ctx", "1024"]);
    let (id, a, b) = (smol_id(), task_a(), task_b());
    let cold_a = ask(&s, &id, &a, false);
    let cold_b = ask(&s, &id, &b, false);
    ask(&s, &id, &a, true);
    ask(&s, &id, &b, true);
    // Unloading writes both slots' prefixes to disk.
    assert_eq!(s.post(&format!("/admin/models/{id}/unload"), "").unwrap().0, 200);
    assert!(eventually(Duration::from_secs(20), || kv_files(s.kv_dir.path()).len() == 2), "{}", s.log());
    // One file gets a flipped byte in its KV data, the other loses its tail.
    for (k, f) in kv_files(s.kv_dir.path()).iter().enumerate() {
        let mut bytes = std::fs::read(f).unwrap();
        if k == 0 {
            let at = bytes.len() / 2;
            bytes[at] ^= 0x40;
        } else {
            bytes.truncate(bytes.len() - 1000);
        }
        std::fs::write(f, bytes).unwrap();
    }
    let again_a = ask(&s, &id, &a, true);
    let again_b = ask(&s, &id, &b, true);
    for (again, cold) in [(&again_a, &cold_a), (&again_b, &cold_b)] {
        assert_ne!(again.source, "disk", "{again:?}");
        assert_eq!(again.text, cold.text, "a refused file costs a prefill, never a wrong answer");
    }
    assert!(s.log().contains("ignoring a prompt-cache file"), "{}", s.log());
    assert!(kv_files(s.kv_dir.path()).is_empty(), "refused files are removed");
}

#[test]
fn a_full_memory_cache_drops_its_oldest_entries_and_serves_on() {
    let dir = smol_bucket();
    // Room for two of these prefixes (~300 tokens of ~23 KB each) in memory, one slot.
    let s = Server::start(
        dir.path(),
        &["--parallel", "1", "--ctx", "1024", "--prompt-cache", "15MiB", "--kv-cache-max", "0"],
    );
    let id = smol_id();
    let c = task("the planner", "plans tomorrow's chores", "What comes first?");
    let d = task("the gardener", "waters the plants on a schedule", "Is it time?");
    let tasks = [task_a(), task_b(), c, d];
    for t in &tasks {
        ask(&s, &id, t, true);
    }
    let pid = s.worker_pid(&id).unwrap();
    // The slot holds D, memory B and C: A, the oldest, made room for C.
    let a = ask(&s, &id, &tasks[0], true);
    assert_ne!(a.source, "memory", "{a:?}");
    // A took the slot and pushed D to memory, which dropped B; C is still there, and moves
    // back into the slot (A takes its room in memory).
    let c = ask(&s, &id, &tasks[2], true);
    assert_eq!(c.source, "memory", "{c:?}");
    let b = ask(&s, &id, &tasks[1], true);
    assert_ne!(b.source, "memory", "{b:?}");
    // B pushed C to memory, which dropped D (older than A); D pushes B, which drops A.
    let d = ask(&s, &id, &tasks[3], true);
    assert_ne!(d.source, "memory", "{d:?}");
    let c = ask(&s, &id, &tasks[2], true);
    assert_eq!(c.source, "memory", "{c:?}");
    assert_eq!(s.worker_pid(&id), Some(pid), "the worker kept serving: {}", s.log());
}

#[test]
fn a_request_that_opts_out_leaves_nothing_for_others() {
    let dir = smol_bucket();
    let s = Server::start(dir.path(), &["--parallel", "1", "--ctx", "1024"]);
    let id = smol_id();
    ask(&s, &id, &task_a(), false);
    let after = ask(&s, &id, &task_a(), true);
    assert_eq!(after.cached, 0, "a cache_prompt: false request's cells are not reused: {after:?}");
    // Neither in memory: B pushes the slot out, A again finds nothing of the private request.
    ask(&s, &id, &task_b(), false);
    ask(&s, &id, &task_b(), true);
    assert_eq!(metric(&s, "memory"), 0);
}

/// One greedy completion on Gemma and how its prompt was served: (text, cached tokens, source).
fn complete(s: &Server, prompt: &str) -> (String, u64, String) {
    let body = json!({ "model": gemma_id(), "prompt": prompt, "temperature": 0, "max_tokens": 12 });
    let (status, raw) = s.post("/v1/completions", &body.to_string()).unwrap();
    assert_eq!(status, 200, "{raw}");
    let v: Value = serde_json::from_str(raw.split("\r\n\r\n").last().unwrap()).unwrap();
    (
        v["choices"][0]["text"].as_str().unwrap().to_string(),
        v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap(),
        v["timings"]["cache_source"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn a_sliding_window_model_continues_a_long_prefix_from_memory_and_never_cuts_one_short() {
    // Gemma 3 attends over a 512-token window in most layers, and its saved state keeps only
    // the window: enough to continue from the state's end, not to cut it short.
    let dir = tempfile::tempdir().unwrap();
    link_model(GEMMA_FILE, dir.path(), GEMMA_FILE);
    let a = "The lighthouse keeper wrote in his log every evening about the ships and the weather. ".repeat(40);
    let b = "In the valley the farmers counted their sheep twice a day and sang old songs. ".repeat(40);
    let args = ["--parallel", "1", "--ctx", "1024"];
    // The reference: the continuation served from the slot.
    let (first, slot) = {
        let s = Server::start(dir.path(), &args);
        let first = complete(&s, &a);
        let slot = complete(&s, &format!("{a}{}", first.0));
        (first, slot)
    };
    assert_eq!(slot.2, "slot");
    assert!(slot.1 > 600, "longer than the window: {slot:?}");
    let s = Server::start(dir.path(), &args);
    assert_eq!(complete(&s, &a).0, first.0);
    complete(&s, &b);
    let memory = complete(&s, &format!("{a}{}", first.0));
    assert_eq!((memory.1, memory.2.as_str()), (slot.1, "memory"), "{memory:?}");
    assert_eq!(memory.0, slot.0);
    // A's saved state (B took the slot again) cannot serve A's own prompt, which stops before the
    // state's end: that prompt is prefilled instead.
    complete(&s, &b);
    let cut = complete(&s, &a);
    assert_ne!(cut.2, "memory", "{cut:?}");
    assert!(cut.1 <= 1, "{cut:?}");
}

/// "writes its slots' and memory cache's prefixes, most recently used first (for at most 2 s)":
/// a worker given 1 ms writes the newest prefix and stops there; with the default 2 s it writes
/// all three.
#[test]
fn a_stopping_worker_writes_prefixes_only_within_its_time() {
    use model_bucket_shared::protocol::{Prompt, ToWorker};
    use model_bucket_tests::worker::{greedy, TestWorker};
    let written = |extra: &[&str]| {
        let kv = tempfile::tempdir().unwrap();
        let mut args = vec!["--parallel", "3", "--ctx", "1024", "--model-sha256", SMOLLM2_SHA];
        args.extend(["--kv-cache-dir", kv.path().to_str().unwrap()]);
        args.extend(extra);
        let (mut w, _) = TestWorker::start(&model(SMOLLM2_FILE), &args);
        // Three prompts that share no first token: one slot each.
        for (i, word) in ["Apples", "Rivers", "Engines"].iter().enumerate() {
            let text = format!("{word} are the subject of this long note. ").repeat(30);
            w.generate(greedy(i as u64 + 1, Prompt::Text(text), 2));
        }
        w.send(&ToWorker::Shutdown { grace_ms: 0 });
        assert_eq!(w.wait_exit(Duration::from_secs(30)), Some(0));
        kv_files(kv.path()).len()
    };
    assert_eq!(written(&[]), 3, "by default every prefix is written");
    assert_eq!(written(&["--kv-cache-write-ms", "1"]), 1, "out of time after the first");
}
