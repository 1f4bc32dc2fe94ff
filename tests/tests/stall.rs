//! One request never holds a model for everyone: a grammar whose sampling takes seconds a
//! token runs on the worker's helper threads while the decode loop serves the others; it ends
//! when its client leaves or its time budget passes. Sent straight to the worker on the real
//! SmolLM2, past the router's limits (which refuse these grammars): what a compromised router
//! or a grammar the limits miss could send.

use model_bucket_shared::protocol::*;
use model_bucket_tests::worker::*;
use model_bucket_tests::*;
use std::time::{Duration, Instant};

/// A grammar llama.cpp matches in time exponential in the text: each `a` doubles the ways the
/// parser can split it.
const HOSTILE: &str = "root ::= x \"!\"\nx ::= (\"a\" x x)?";

/// SmolLM2's tokens that hold a `!`: banned, so the grammar never closes and each step keeps
/// matching a longer text of `a`s.
const BANGS: [i32; 25] = [
    17, 5728, 6541, 6653, 10095, 10205, 10761, 15352, 16441, 17593, 21653, 22112, 24420, 27911, 29646, 31050, 32022,
    33656, 33887, 34379, 36689, 38500, 39588, 42732, 45495,
];

fn hostile(id: u64, max_tokens: u32) -> GenerateRequest {
    let mut r = greedy(id, Prompt::Text("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into()), max_tokens);
    r.constraint = Some(Constraint::Gbnf(HOSTILE.into()));
    r.sampling.logit_bias = BANGS.iter().map(|&t| (t, f32::NEG_INFINITY)).collect();
    r
}

/// A JSON schema whose pattern llama.cpp's grammar engine takes seconds to start matching: 44
/// optional `a`s, 44 times over, each count of empty matches another parse stack.
fn hostile_schema(id: u64) -> GenerateRequest {
    let mut r = greedy(id, Prompt::Text("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into()), 4);
    let schema = r#"{"type":"string","pattern":"^((a?){0,44}){0,44}$"}"#.into();
    r.constraint = Some(Constraint::JsonSchema { schema, whitespace: false });
    r
}

fn victim(id: u64) -> GenerateRequest {
    let mut r = greedy(id, Prompt::Text("The capital of France is".into()), 8);
    r.sampling.logit_bias = vec![(2, f32::NEG_INFINITY)]; // always 8 tokens
    r
}

/// Reads messages until request `id` is done, ignoring other requests' text; the time it took
/// and how it ended. Other requests that end meanwhile are kept in `ended`.
fn until_done(w: &mut TestWorker, id: u64) -> (Duration, Result<DoneInfo, String>) {
    let started = Instant::now();
    loop {
        let (i, outcome) = match w.recv() {
            FromWorker::Done(d) => (d.id, Ok(*d)),
            FromWorker::Error { id: Some(i), message, .. } => (i, Err(message)),
            _ => continue,
        };
        if i == RequestId(id) {
            return (started.elapsed(), outcome);
        }
        ENDED.with(|e| e.borrow_mut().push((i.0, outcome)));
    }
}

thread_local! {
    static ENDED: std::cell::RefCell<Vec<(u64, Result<DoneInfo, String>)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// How request `id` ended, whether before or after this call.
fn outcome(w: &mut TestWorker, id: u64) -> Result<DoneInfo, String> {
    let kept = ENDED.with(|e| {
        let mut e = e.borrow_mut();
        e.iter().position(|(i, _)| *i == id).map(|k| e.remove(k).1)
    });
    kept.unwrap_or_else(|| until_done(w, id).1)
}

/// The tests here compare times: they run one at a time, so none burns the CPU beside another.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn timed(w: &mut TestWorker, r: GenerateRequest) -> Duration {
    let id = r.id.0;
    w.send(&ToWorker::Generate(Box::new(r)));
    let (took, done) = until_done(w, id);
    assert_eq!(done.expect("the victim is served").usage.completion_tokens, 8);
    took
}

#[test]
fn a_slow_schema_does_not_hold_the_other_requests_and_ends_when_its_client_leaves() {
    let _one = serial();
    let (mut w, _) = TestWorker::start(&model(SMOLLM2_FILE), &["--ctx", "512", "--parallel", "2"]);
    // The victim on an idle model, best of three.
    timed(&mut w, victim(1));
    let idle = (2..5).map(|i| timed(&mut w, victim(i))).min().unwrap();
    // The hostile request's first token takes llama.cpp seconds to sample (on this machine
    // about 9 s; the decode loop held everyone that long before).
    w.send(&ToWorker::Generate(Box::new(hostile_schema(100))));
    std::thread::sleep(Duration::from_millis(1000));
    // The median of three, all within the hostile sample's seconds.
    let mut busy: Vec<Duration> = (5..8).map(|i| timed(&mut w, victim(i))).collect();
    busy.sort();
    let busy = busy[1];
    assert!(busy < idle * 2, "the victim took {busy:?} beside the schema, {idle:?} alone");
    // The client leaves: its slot is free at once, though llama.cpp is still sampling for it.
    w.send(&ToWorker::Cancel { id: RequestId(100) });
    let done = outcome(&mut w, 100).expect("cancelled");
    assert_eq!(done.finish, FinishReason::Cancelled);
    assert_eq!(done.usage.completion_tokens, 0, "{done:?}");
    // Both slots serve: two victims at once, while the sample of the request that left runs on.
    w.send(&ToWorker::Generate(Box::new(victim(8))));
    let two = timed(&mut w, victim(9));
    outcome(&mut w, 8).expect("served");
    assert!(two < idle * 3, "two victims took {two:?}, one alone {idle:?}");
}

#[test]
fn a_request_past_its_sampling_budget_ends_with_a_clear_error() {
    let _one = serial();
    let (mut w, _) =
        TestWorker::start(&model(SMOLLM2_FILE), &["--ctx", "512", "--parallel", "2", "--max-sampling-ms", "1500"]);
    w.send(&ToWorker::Generate(Box::new(hostile(1, 200))));
    let (took, done) = until_done(&mut w, 1);
    let e = done.expect_err("the budget ends it");
    assert!(e.contains("--max-sampling-seconds"), "{e}");
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    // The model serves on.
    timed(&mut w, victim(2));
}

#[test]
fn a_hostile_chat_template_is_stopped_and_the_model_serves_on() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("loops.jinja");
    std::fs::write(&t, "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}").unwrap();
    let (mut w, _) = TestWorker::start(
        &model(SMOLLM2_FILE),
        &["--ctx", "512", "--parallel", "2", "--chat-template", t.to_str().unwrap()],
    );
    w.send(&ToWorker::Generate(Box::new(greedy(1, user("hi"), 4))));
    // Completions do not use the template: served while the chat request is read.
    timed(&mut w, victim(2));
    let e = outcome(&mut w, 1).expect_err("the template is stopped");
    assert!(e.contains("chat template") && e.contains("steps"), "{e}");
    timed(&mut w, victim(3));
}
