//! The dialects (`--only-dialects`): what translating costs, and what a stored Responses
//! conversation saves.
//!
//! - Translation, in process, on the router's own translators: a ten-turn request with two
//!   tools read into the internal chat body (Anthropic Messages, Ollama chat, Responses), and
//!   a streamed answer of [`EVENTS`] text pieces written as each dialect's events.
//! - A three-turn conversation on SmolLM2 with a long system prompt: the time to first token of
//!   turns 2 and 3 sent as Responses with `previous_response_id`, against the whole history
//!   sent to Chat Completions (each with a preamble of its own, so neither reuses the other's
//!   cached prefix); then turn 2 after a restart of the server (stopped with SIGTERM, started
//!   on the same `--responses-dir` and prompt cache folder) against a cold prefill of the same
//!   prompt (`cache_prompt: false`).

use anyhow::{Context, Result};
use futures::StreamExt;
use model_bucket::http::job::pieces::{Ending, Piece};
use model_bucket_tests::server::{open, signal};
use model_bucket_tests::{link_model, smol_id, Server, SMOLLM2_FILE};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::workloads::median;
use crate::Opts;

/// Requests translated per dialect, and text pieces per streamed answer.
const REQUESTS: u32 = 20_000;
const EVENTS: usize = 10_000;
const ROUNDS: usize = 3;

#[derive(Debug, Clone, Default)]
pub struct Results {
    /// Microseconds per request translated, per dialect.
    pub request_us: Vec<(String, f64)>,
    /// Microseconds per streamed event written, per dialect.
    pub event_us: Vec<(String, f64)>,
    /// Seconds to first token: turns 2 and 3, Responses and Chat Completions.
    pub responses_turns: [f64; 2],
    pub chat_turns: [f64; 2],
    /// Turn 2 after a restart, and a cold prefill of the same prompt.
    pub after_restart: f64,
    pub cold: f64,
    pub prompt_tokens: u64,
}

fn conversation_body() -> (Value, Value, Value) {
    let tool = |name: &str| {
        json!({ "name": name, "description": "a tool", "input_schema": { "type": "object",
            "properties": { "q": { "type": "string" } }, "required": ["q"] } })
    };
    let mut anthropic = vec![];
    let mut ollama = vec![json!({ "role": "system", "content": "You are terse." })];
    let mut responses = vec![];
    for i in 0..5 {
        let (u, a) = (format!("question {i} about the garden"), format!("answer {i}: water the tomatoes"));
        anthropic.push(json!({ "role": "user", "content": u }));
        anthropic.push(json!({ "role": "assistant", "content": [{ "type": "text", "text": a }] }));
        ollama.push(json!({ "role": "user", "content": u }));
        ollama.push(json!({ "role": "assistant", "content": a }));
        responses.push(json!({ "role": "user", "content": u }));
        responses.push(json!({ "role": "assistant", "content": [{ "type": "output_text", "text": a }] }));
    }
    let a = json!({ "model": "m", "max_tokens": 64, "system": "You are terse.", "messages": anthropic,
        "tools": [tool("search"), tool("weather")], "tool_choice": { "type": "auto" } });
    let o_tools: Vec<Value> = ["search", "weather"]
        .iter()
        .map(|n| json!({ "type": "function", "function": { "name": n, "parameters": { "type": "object" } } }))
        .collect();
    let o = json!({ "model": "m", "messages": ollama, "tools": o_tools, "options": { "temperature": 0.2, "num_predict": 64 } });
    let r_tools: Vec<Value> = ["search", "weather"]
        .iter()
        .map(|n| json!({ "type": "function", "name": n, "parameters": { "type": "object" } }))
        .collect();
    let r = json!({ "model": "m", "instructions": "You are terse.", "input": responses, "tools": r_tools, "max_output_tokens": 64 });
    (a, o, r)
}

/// Microseconds per call of `f`, over [`REQUESTS`] calls.
fn per_call(mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..REQUESTS {
        f();
    }
    t.elapsed().as_secs_f64() * 1e6 / REQUESTS as f64
}

fn text_pieces() -> futures::stream::BoxStream<'static, Piece> {
    let mut v: Vec<Piece> = (0..EVENTS).map(|i| Piece::Text(format!(" word{i}"))).collect();
    v.push(Piece::End(Ending::default()));
    futures::stream::iter(v).boxed()
}

/// Microseconds per event for a stream of [`EVENTS`] text pieces.
fn per_event<S: futures::Stream + Unpin>(make: impl FnOnce() -> S) -> f64 {
    let t = Instant::now();
    let n = futures::executor::block_on(make().count());
    t.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64
}

fn translation(r: &mut Results) -> Result<()> {
    use model_bucket::http::{anthropic, ollama, openai::responses};
    let (a, o, resp) = conversation_body();
    let a: anthropic::request::MessagesRequest = serde_json::from_value(a)?;
    let o: ollama::request::ChatRequest = serde_json::from_value(o)?;
    let resp: responses::request::ResponsesRequest = serde_json::from_value(resp)?;
    r.request_us = vec![
        ("Anthropic Messages".into(), per_call(|| drop(anthropic::request::to_openai(&a, true)))),
        ("Ollama chat".into(), per_call(|| drop(ollama::request::chat(&o)))),
        ("Responses".into(), per_call(|| drop(responses::request::to_chat(&resp, vec![])))),
    ];
    let head = responses::respond::Head {
        id: "resp_0".into(),
        created_at: 0,
        model: "m".into(),
        echo: json!({}),
        previous_response_id: None,
        store: false,
    };
    r.event_us = vec![
        ("Anthropic Messages".into(), per_event(|| anthropic::respond::events("m".into(), text_pieces()))),
        (
            "Ollama chat".into(),
            per_event(|| {
                ollama::respond::lines(ollama::respond::Shape::Chat, "m".into(), text_pieces(), Instant::now())
            }),
        ),
        ("Responses".into(), per_event(|| responses::respond::events(head, text_pieces(), |_| async { false }))),
    ];
    Ok(())
}

/// Seconds from sending `body` to `path` to the first event whose data `is_text` says holds
/// text; and the whole stream's data lines.
fn first_text(s: &Server, path: &str, body: &Value, is_text: impl Fn(&Value) -> bool) -> Result<(f64, Vec<Value>)> {
    let start = Instant::now();
    let c = open(s.port, "POST", path, "", &body.to_string(), Some(Duration::from_secs(600)))?;
    let mut first = None;
    let mut all = Vec::new();
    for line in BufReader::new(c).lines() {
        let line = line?;
        let Some(data) = line.strip_prefix("data: ") else { continue };
        if data == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(data).with_context(|| format!("{path}: {data}"))?;
        if first.is_none() && is_text(&v) {
            first = Some(start.elapsed().as_secs_f64());
        }
        all.push(v);
    }
    Ok((first.context("no text came")?, all))
}

fn is_delta(v: &Value) -> bool {
    v["type"] == "response.output_text.delta"
}

fn is_chunk(v: &Value) -> bool {
    v["choices"][0]["delta"]["content"].as_str().is_some_and(|t| !t.is_empty())
}

/// The final response object of a Responses stream.
fn completed(events: &[Value]) -> Result<Value> {
    events
        .iter()
        .rev()
        .find_map(|e| e.get("response").filter(|_| e["type"] != "response.in_progress").cloned())
        .context("no response")
}

fn answer_text(resp: &Value) -> String {
    resp["output"][0]["content"][0]["text"].as_str().unwrap_or("").to_string()
}

const TURNS: [&str; 3] =
    ["My name is Ada and I keep a vegetable garden. Say hello.", "What should I plant first?", "And what is my name?"];

/// A system prompt of about 600 tokens, starting with `preamble`.
fn system(preamble: &str) -> String {
    let rule = "Answer in one short sentence, name the plant, and never repeat the question back. ";
    format!("{preamble} You are a gardening assistant. {}", rule.repeat(30))
}

fn responses_turn(s: &Server, sys: &str, text: &str, previous: Option<&str>) -> Result<(f64, Value)> {
    let mut body = json!({ "model": smol_id(), "instructions": sys, "input": text, "max_output_tokens": 16,
        "temperature": 0, "stream": true });
    if let Some(p) = previous {
        body["previous_response_id"] = json!(p);
    }
    let (t, events) = first_text(s, "/v1/responses", &body, is_delta)?;
    Ok((t, completed(&events)?))
}

fn chat_turn(s: &Server, messages: &[Value], cache: bool) -> Result<(f64, String)> {
    let body = json!({ "model": smol_id(), "messages": messages, "max_tokens": 16, "temperature": 0, "stream": true,
        "cache_prompt": cache });
    let (t, chunks) = first_text(s, "/v1/chat/completions", &body, is_chunk)?;
    let text = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    Ok((t, text))
}

fn start(models: &Path, store: &Path, kv: &Path, o: &Opts) -> Server {
    let threads = o.threads.to_string();
    let store = store.to_str().expect("a UTF-8 path").to_string();
    Server::start_with_env(
        models,
        &["--parallel", "1", "--ctx", "4096", "--threads", &threads, "--responses-dir", &store],
        &[("EDEN_KV_CACHE_DIR", kv.to_str().expect("a UTF-8 path"))],
    )
}

/// One round's times to first token, in seconds.
struct Round {
    responses: [f64; 2],
    chat: [f64; 2],
    after_restart: f64,
    cold: f64,
    prompt_tokens: u64,
}

/// One round: the conversation both ways, then turn 2 across a restart.
fn round(o: &Opts, models: &Path, k: usize) -> Result<Round> {
    let work = tempfile::tempdir()?;
    let (store, kv) = (work.path().join("responses"), work.path().join("kv"));
    let mut s = start(models, &store, &kv, o);
    // Responses, continued by ID.
    let sys_r = system(&format!("Conversation R{k}."));
    let (_, r1) = responses_turn(&s, &sys_r, TURNS[0], None)?;
    let (t2, r2) = responses_turn(&s, &sys_r, TURNS[1], r1["id"].as_str())?;
    let (t3, r3) = responses_turn(&s, &sys_r, TURNS[2], r2["id"].as_str())?;
    let prompt_tokens = r3["usage"]["input_tokens"].as_u64().unwrap_or(0);
    // Chat Completions, the whole history each time.
    let mut history = vec![json!({ "role": "system", "content": system(&format!("Conversation C{k}.")) })];
    let mut chat = [0.0; 2];
    for (i, text) in TURNS.iter().enumerate() {
        history.push(json!({ "role": "user", "content": text }));
        let (t, said) = chat_turn(&s, &history, true)?;
        history.push(json!({ "role": "assistant", "content": said }));
        if i > 0 {
            chat[i - 1] = t;
        }
    }
    // Across a restart: turn 1 before, turn 2 after.
    let sys_x = system(&format!("Conversation X{k}."));
    let (_, x1) = responses_turn(&s, &sys_x, TURNS[0], None)?;
    signal(s.child.id(), "TERM");
    s.child.wait()?;
    drop(s);
    let s = start(models, &store, &kv, o);
    let (after, _) = responses_turn(&s, &sys_x, TURNS[1], x1["id"].as_str())?;
    let cold_history = [
        json!({ "role": "system", "content": sys_x }),
        json!({ "role": "user", "content": TURNS[0] }),
        json!({ "role": "assistant", "content": answer_text(&x1) }),
        json!({ "role": "user", "content": TURNS[1] }),
    ];
    let (cold, _) = chat_turn(&s, &cold_history, false)?;
    Ok(Round { responses: [t2, t3], chat, after_restart: after, cold, prompt_tokens })
}

pub fn run(o: &Opts) -> Result<Results> {
    let mut r = Results::default();
    translation(&mut r)?;
    let models = tempfile::tempdir()?;
    link_model(SMOLLM2_FILE, models.path(), SMOLLM2_FILE);
    let mut rounds = Vec::new();
    for k in 0..ROUNDS {
        eprintln!("bench: dialects round {}", k + 1);
        rounds.push(round(o, models.path(), k)?);
    }
    let med = |f: fn(&Round) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    r.responses_turns = [med(|x| x.responses[0]), med(|x| x.responses[1])];
    r.chat_turns = [med(|x| x.chat[0]), med(|x| x.chat[1])];
    r.after_restart = med(|x| x.after_restart);
    r.cold = med(|x| x.cold);
    r.prompt_tokens = rounds.iter().map(|x| x.prompt_tokens).max().unwrap_or(0);
    Ok(r)
}

pub fn raw(r: &Results) -> Value {
    json!({
        "provenance": crate::report::provenance(),
        "translation_us_per_request": r.request_us.iter().map(|(k, v)| json!({ "dialect": k, "us": v })).collect::<Vec<_>>(),
        "translation_us_per_event": r.event_us.iter().map(|(k, v)| json!({ "dialect": k, "us": v })).collect::<Vec<_>>(),
        "ttft_s": {
            "responses_turn2": r.responses_turns[0], "responses_turn3": r.responses_turns[1],
            "chat_turn2": r.chat_turns[0], "chat_turn3": r.chat_turns[1],
            "after_restart_turn2": r.after_restart, "cold_prefill_turn2": r.cold,
        },
        "turn3_prompt_tokens": r.prompt_tokens,
        "rounds": ROUNDS,
    })
}

pub fn markdown(o: &Opts, r: &Results) -> String {
    let mut s = String::from("# Dialects\n\n");
    let _ = writeln!(
        s,
        "{}; threads {}; SmolLM2-135M-Instruct Q4_1; raw numbers in `dialects.json`.\n",
        crate::report::provenance(),
        o.threads
    );
    s.push_str("## Translation cost (in process, goal ≤ 100 µs)\n\n| dialect | per request (10 turns, 2 tools) | per streamed event |\n|---|---|---|\n");
    for ((name, req), (_, ev)) in r.request_us.iter().zip(&r.event_us) {
        let _ = writeln!(s, "| {name} | {req:.1} µs | {ev:.2} µs |");
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let _ = write!(
        s,
        "\n## A three-turn conversation (time to first token, medians of {ROUNDS} rounds; turn 3's prompt: {} tokens)\n\n\
         | | Responses, `previous_response_id` | Chat Completions, whole history | ratio (goal ≤ 1.05) |\n|---|---|---|---|\n\
         | turn 2 | {:.3} s | {:.3} s | {:.2} |\n| turn 3 | {:.3} s | {:.3} s | {:.2} |\n\n\
         ## After a restart (turn 2; goal ≤ 0.3 × a cold prefill)\n\n\
         | Responses after a restart | cold prefill of the same prompt | ratio |\n|---|---|---|\n| {:.3} s | {:.3} s | {:.2} |\n",
        r.prompt_tokens,
        r.responses_turns[0],
        r.chat_turns[0],
        ratio(r.responses_turns[0], r.chat_turns[0]),
        r.responses_turns[1],
        r.chat_turns[1],
        ratio(r.responses_turns[1], r.chat_turns[1]),
        r.after_restart,
        r.cold,
        ratio(r.after_restart, r.cold),
    );
    s
}
