//! Workloads where requests resend what they sent before, as an agent daemon does: a growing
//! conversation, several tasks with long system prompts sharing a few slots, and a task that
//! comes back after its model was swapped out. llama-server runs on its defaults (prompt cache
//! on, its host-memory cache at its default size), and for the return after an unload with its
//! own way to keep a prefix (a slot saved before it stops and restored after it starts); both
//! get the same model, threads, slots and context per slot, and take turns going first.

use anyhow::{Context, Result};
use model_bucket_tests::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Instant;

use crate::llama::LlamaServer;
use crate::workloads::median;
use crate::Opts;

/// Slots of both servers in these workloads.
pub const SLOTS: u32 = 4;
/// Context per slot: room for the longest conversation.
const CTX: u32 = 4096;
/// Turns of the conversation; the first is a cold prefill and is not counted.
pub const TURNS: usize = 8;
/// Tasks sharing [`SLOTS`] slots.
pub const TASKS: usize = 6;
/// Tokens of each answer (EOS banned).
const ANSWER: u32 = 24;
/// SmolLM2's end of turn, banned so every answer has [`ANSWER`] tokens.
const EOS: i32 = 2;

#[derive(Debug, Default, serde::Serialize)]
pub struct CacheResults {
    /// Time to first token of turns 2.., ms: (Model Bucket, llama-server).
    pub multi_turn: (Vec<f64>, Vec<f64>),
    /// Share of those turns' prompt tokens served from a cache.
    pub multi_turn_share: (f64, f64),
    /// Time to first token after the first round, ms.
    pub agents: (Vec<f64>, Vec<f64>),
    pub agents_share: (f64, f64),
    /// Time to first token of a task's return after its model was evicted, s, with the prompt
    /// cache and with `cache_prompt: false` (a cold prefill after the same reload).
    pub swap_return: Vec<f64>,
    pub swap_cold: Vec<f64>,
    pub swap_share: f64,
    /// llama-server's way to keep a prefix across an unload: the slot saved before its process
    /// stops (`--slot-save-path`, `POST /slots/0?action=save`) and restored after it starts
    /// again; s from the new process's start to the first token (start, restore, request), and
    /// the same without the restore.
    pub ls_swap_return: Vec<f64>,
    pub ls_swap_cold: Vec<f64>,
    /// Model Bucket's return with `--sched fifo`, where a model swapped in keeps no turn: s,
    /// with the prompt cache and cold.
    pub fifo_swap_return: Vec<f64>,
    pub fifo_swap_cold: Vec<f64>,
    pub ls_swap_share: f64,
}

/// One streamed chat answer.
struct Turn {
    ttft_ms: f64,
    text: String,
    prompt: u64,
    cached: u64,
}

/// A chat endpoint: Model Bucket's, or llama-server's OpenAI one.
struct Chat {
    port: u16,
    model: Option<String>,
}

impl Chat {
    fn ask(&self, messages: &Value, cache: bool) -> Result<Turn> {
        let mut body = json!({
            "messages": messages, "max_tokens": ANSWER, "temperature": 0, "stream": true,
            "stream_options": { "include_usage": true }, "logit_bias": { EOS.to_string(): -100 },
            "cache_prompt": cache,
        });
        if let Some(m) = &self.model {
            body["model"] = json!(m);
        }
        let start = Instant::now();
        let (mut first, mut text, mut prompt, mut cached) = (None, String::new(), 0, 0);
        crate::client::each_event(self.port, "/v1/chat/completions", &body, |v| {
            if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                if !t.is_empty() {
                    first.get_or_insert(start.elapsed());
                    text.push_str(t);
                }
            }
            if let Some(p) = v["usage"]["prompt_tokens"].as_u64() {
                prompt = p;
                cached = v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0);
            }
            // llama-server reports its reuse in its own timings.
            if let Some(n) = v["timings"]["cache_n"].as_u64() {
                cached = n;
                prompt = n + v["timings"]["prompt_n"].as_u64().unwrap_or(0);
            }
        })?;
        let first = first.context("no text in the answer")?;
        Ok(Turn { ttft_ms: first.as_secs_f64() * 1000.0, text, prompt, cached })
    }
}

/// A ~400-token system prompt for task `k`.
fn system(k: usize, words: usize) -> String {
    let duties = [
        "plans the day",
        "parses intents",
        "writes shell commands",
        "condenses memories",
        "answers questions",
        "watches the sensors",
    ];
    let mut s =
        format!("You are part {k} of a home daemon; you {}. Follow these rules exactly. ", duties[k % duties.len()]);
    let mut i = 0;
    while s.split_whitespace().count() < words {
        s.push_str(&format!(
            "Rule {i} of part {k}: keep every answer short, exact and free of guesses about device {}. ",
            i * 7 + k
        ));
        i += 1;
    }
    s
}

/// A ~60-token user message.
fn user(turn: usize) -> String {
    format!(
        "Turn {turn}: the kitchen light went off at {turn}:15, the door sensor reported twice, and the heating asked for {} degrees. What should the daemon do next, in one short sentence?",
        18 + turn
    )
}

fn share(turns: &[Turn]) -> f64 {
    let (p, c) = turns.iter().fold((0, 0), |(p, c), t| (p + t.prompt, c + t.cached));
    c as f64 / p.max(1) as f64
}

pub fn run(o: &Opts, ls_bin: &Path) -> Result<CacheResults> {
    let mut r = CacheResults::default();
    let dir = tempfile::tempdir()?;
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    let t = o.threads.to_string();
    let (slots, ctx) = (SLOTS.to_string(), CTX.to_string());
    let mb = Server::start(dir.path(), &["--threads", &t, "--parallel", &slots, "--ctx", &ctx]);
    let ls = LlamaServer::start(ls_bin, Some(&model(SMOLLM2_FILE)), None, o.threads, SLOTS, CTX)?;
    let targets = [Chat { port: mb.port, model: Some(smol_id()) }, Chat { port: ls.port, model: None }];

    eprintln!("bench: multi-turn conversation ({TURNS} turns)");
    let mut histories = [0, 1].map(|_| vec![json!({ "role": "system", "content": system(0, 300) })]);
    let mut counted: [Vec<Turn>; 2] = [Vec::new(), Vec::new()];
    for turn in 0..TURNS {
        for k in first_then(turn) {
            let target = &targets[k];
            histories[k].push(json!({ "role": "user", "content": user(turn) }));
            let a = target.ask(&Value::Array(histories[k].clone()), true)?;
            histories[k].push(json!({ "role": "assistant", "content": a.text }));
            if turn > 0 {
                counted[k].push(a);
            }
        }
    }
    r.multi_turn = (counted[0].iter().map(|t| t.ttft_ms).collect(), counted[1].iter().map(|t| t.ttft_ms).collect());
    r.multi_turn_share = (share(&counted[0]), share(&counted[1]));

    let rounds = o.rounds.max(2) + 1;
    eprintln!("bench: {TASKS} agents on {SLOTS} slots, {rounds} rounds");
    let mut counted: [Vec<Turn>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for task in 0..TASKS {
            let messages = json!([
                { "role": "system", "content": system(task + 1, 380) },
                { "role": "user", "content": user(round) },
            ]);
            for k in first_then(round * TASKS + task) {
                let a = targets[k].ask(&messages, true)?;
                if round > 0 {
                    counted[k].push(a);
                }
            }
        }
    }
    r.agents = (counted[0].iter().map(|t| t.ttft_ms).collect(), counted[1].iter().map(|t| t.ttft_ms).collect());
    r.agents_share = (share(&counted[0]), share(&counted[1]));
    drop(mb);
    drop(ls);

    eprintln!("bench: a task coming back after its model was swapped out");
    let both = tempfile::tempdir()?;
    link_model(SMOLLM2_FILE, both.path(), SMOLLM2_FILE);
    link_model(GEMMA_FILE, both.path(), GEMMA_FILE);
    let flags = ["--threads", &t, "--parallel", "1", "--ctx", "1536", "--ram-budget", "420MiB"];
    let mb = Server::start(both.path(), &flags);
    let chat = Chat { port: mb.port, model: Some(smol_id()) };
    // The same on a server whose scheduler gives a model swapped in no turn of its own.
    let fifo = Server::start(both.path(), &[&flags[..], &["--sched", "fifo"]].concat());
    let fifo_chat = Chat { port: fifo.port, model: Some(smol_id()) };
    let messages = json!([
        { "role": "system", "content": system(9, 800) },
        { "role": "user", "content": user(1) },
    ]);
    let other = json!({ "model": gemma_id(), "prompt": "The capital of France is", "max_tokens": 2 }).to_string();
    // llama-server keeps the task's slot in a file, saved once before it stops.
    let saved = tempfile::tempdir()?;
    let save_path = saved.path().to_str().context("a UTF-8 temporary path")?;
    let start =
        || LlamaServer::start_with(ls_bin, &model(SMOLLM2_FILE), o.threads, 1, 1536, &["--slot-save-path", save_path]);
    {
        let ls = start()?;
        Chat { port: ls.port, model: None }.ask(&messages, true)?;
        slot(ls.port, "save")?;
    }
    chat.ask(&messages, true)?;
    fifo_chat.ask(&messages, true)?;
    let (mut returns, mut ls_returns) = (Vec::new(), Vec::new());
    // Rounds alternate between coming back with the cache and a cold prefill after the same
    // reload; in each, both servers run, taking turns going first.
    for round in 0..o.rounds.max(2) * 2 {
        let cache = round % 2 == 0;
        // Model Bucket: a Gemma request evicts SmolLM2 under the one-model budget, then the
        // task comes back (the time to first token includes the eviction and the reload).
        let back = |s: &Server, c: &Chat| -> Result<Turn> {
            anyhow::ensure!(s.post("/v1/completions", &other)?.0 == 200, "the other model failed");
            anyhow::ensure!(s.worker_models() == vec![gemma_id()], "the budget did not evict SmolLM2");
            c.ask(&messages, cache)
        };
        let mb_step = || back(&mb, &chat);
        // llama-server: a new process (its start, warm-up and load), the slot restored, then
        // the task.
        let ls_step = || -> Result<(f64, Turn)> {
            let t = Instant::now();
            let ls = start()?;
            if cache {
                slot(ls.port, "restore")?;
            }
            let before = t.elapsed().as_secs_f64();
            let a = Chat { port: ls.port, model: None }.ask(&messages, true)?;
            Ok((before + a.ttft_ms / 1000.0, a))
        };
        let (a, (total, b)) = crate::workloads::pair((round / 2) % 2 == 0, mb_step, ls_step)?;
        let f = back(&fifo, &fifo_chat)?.ttft_ms / 1000.0;
        if cache {
            r.fifo_swap_return.push(f)
        } else {
            r.fifo_swap_cold.push(f)
        }
        if cache {
            r.swap_return.push(a.ttft_ms / 1000.0);
            returns.push(a);
            r.ls_swap_return.push(total);
            ls_returns.push(b);
        } else {
            r.swap_cold.push(a.ttft_ms / 1000.0);
            r.ls_swap_cold.push(total);
        }
    }
    r.swap_share = share(&returns);
    r.ls_swap_share = share(&ls_returns);
    Ok(r)
}

/// Which server goes first in step `i`: they take turns, so neither always follows the other.
fn first_then(i: usize) -> [usize; 2] {
    if i.is_multiple_of(2) {
        [0, 1]
    } else {
        [1, 0]
    }
}

/// llama-server's slot 0 saved to or restored from `task.bin` in its `--slot-save-path`.
fn slot(port: u16, action: &str) -> Result<()> {
    let c = model_bucket_tests::server::open(
        port,
        "POST",
        &format!("/slots/0?action={action}"),
        "",
        r#"{"filename":"task.bin"}"#,
        Some(std::time::Duration::from_secs(120)),
    )?;
    let (status, body) = model_bucket_tests::server::read_response(c)?;
    anyhow::ensure!(status == 200, "slot {action}: {body}");
    Ok(())
}

/// The report's section, and the goals' verdicts.
pub fn markdown(r: &CacheResults) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "## Prompt cache\n");
    let _ = writeln!(s, "{}\n", crate::sections::stamp());
    let _ = writeln!(
        s,
        "Requests that resend what they sent before, as Gesher-El does all day. Both servers on their defaults (llama-server reuses slot prefixes and keeps a host-memory prompt cache; Model Bucket reuses slot prefixes, keeps a host-memory cache and writes prefixes to disk when a worker stops; for a task that comes back after its model was unloaded, llama-server saves the slot before it stops and restores it after it starts, with `--slot-save-path`), SmolLM2, {SLOTS} slots, {CTX} tokens of context per slot, chat through `/v1/chat/completions`, {ANSWER}-token answers, alternating request by request, each server first in every other step. Times to first token are medians; the cached share is the part of those requests' prompt tokens that was not prefilled.\n"
    );
    let _ = writeln!(
        s,
        "| workload | Model Bucket | llama-server | ratio | cached share (MB / llama-server) |\n|---|---|---|---|---|"
    );
    let row = |s: &mut String, name: String, times: &(Vec<f64>, Vec<f64>), shares: (f64, f64)| {
        let (a, b) = (median(&times.0), median(&times.1));
        let _ = writeln!(
            s,
            "| {name} | {a:.1} | {b:.1} | {:.2}× | {:.0}% / {:.0}% |",
            a / b,
            shares.0 * 100.0,
            shares.1 * 100.0
        );
        a / b
    };
    let multi = row(
        &mut s,
        format!("multi-turn: ~400-token system prompt, {TURNS} turns resending the history, turns 2–{TURNS} (ms)"),
        &r.multi_turn,
        r.multi_turn_share,
    );
    let agents = row(
        &mut s,
        format!(
            "agents: {TASKS} tasks with ~500-token system prompts, round-robin on {SLOTS} slots, after round 1 (ms)"
        ),
        &r.agents,
        r.agents_share,
    );
    let (e, f) = (median(&r.swap_return), median(&r.swap_cold));
    let (g, h) = (median(&r.ls_swap_return), median(&r.ls_swap_cold));
    let _ = writeln!(
        s,
        "| come back after a swap: ~1,000-token task on SmolLM2 asked again after its model was unloaded (s, reload included; Model Bucket: evicted by a Gemma request under a one-model budget, prefix from its disk cache; llama-server: slot saved with `--slot-save-path` before it stopped, restored after it started) | {e:.2} | {g:.2} | {:.2}× | {:.0}% / {:.0}% |",
        e / g,
        r.swap_share * 100.0,
        r.ls_swap_share * 100.0
    );
    let _ = writeln!(
        s,
        "| the same reload, then a cold prefill (`cache_prompt: false`; llama-server: no restore) (s) | {f:.2} | {h:.2} | {:.2}× | – |",
        f / h
    );
    let (i, j) = (median(&r.fifo_swap_return), median(&r.fifo_swap_cold));
    let _ = writeln!(
        s,
        "| come back after a swap, Model Bucket with `--sched fifo` (Gemma, just swapped in, keeps no turn) / cold (s) | {i:.2} / {j:.2} | {g:.2} / {h:.2} | {:.2}× / {:.2}× | – |\n",
        i / g,
        j / h
    );
    let _ = writeln!(s, "| goal | this run | |\n|---|---|---|");
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    let _ = writeln!(s, "| multi-turn ≤ 1.0× llama-server | {multi:.2}× | {} |", verdict(multi <= 1.0));
    let _ = writeln!(s, "| agents ≤ 1.0× llama-server | {agents:.2}× | {} |", verdict(agents <= 1.0));
    let _ = writeln!(s, "| return after a swap ≤ 0.3× a cold prefill | {:.2}× | {} |", e / f, verdict(e / f <= 0.3));
    let _ = writeln!(
        s,
        "| return after a swap ≤ 1.0× llama-server's slot restore | {:.2}× | {} |\n",
        e / g,
        verdict(e / g <= 1.0)
    );
    s
}
