//! The worker on the real SmolLM2: handshake, chat prompt, batching, sampling, stop strings,
//! context shift, cancel, and bad input on the socket.

use model_bucket_shared::protocol::frame::HEADER_BYTES;
use model_bucket_shared::protocol::*;
use model_bucket_tests::worker::*;
use model_bucket_tests::*;
use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

fn smol(extra: &[&str]) -> (TestWorker, ReadyInfo) {
    TestWorker::start(&model(SMOLLM2_FILE), extra)
}

#[test]
fn loading_progress_rises_to_one_before_ready() {
    let (w, _) = smol(&["--ctx", "512", "--parallel", "1"]);
    assert!(!w.loading.is_empty(), "no progress before Ready");
    assert!(w.loading.windows(2).all(|p| p[0] < p[1]), "{:?}", w.loading);
    assert!(w.loading.iter().all(|p| (0.0..=1.0).contains(p)), "{:?}", w.loading);
    assert_eq!(w.loading.last(), Some(&1.0), "{:?}", w.loading);
}

#[test]
fn answers_paris_with_the_ggufs_chat_template() {
    let (mut w, ready) = smol(&["--ctx", "1024", "--parallel", "2"]);
    assert_eq!(ready.slots, 2);
    assert_eq!(ready.n_ctx, 1024);
    assert!(ready.has_chat_template);
    assert!(ready.memory_bytes > 50 << 20, "{ready:?}");
    let (text, done) = w.generate(greedy(1, user("What is the capital of France? Answer in one word."), 16));
    assert!(text.contains("Paris"), "{text:?}");
    // llama-server b11434 counts 42 prompt tokens for this message (default system prompt included).
    assert_eq!(done.usage.prompt_tokens, 42, "{done:?}");
    assert!(done.usage.completion_tokens >= 1 && done.usage.completion_tokens <= 16);
}

#[test]
fn four_concurrent_generations_interleave() {
    let (mut w, _) = smol(&["--ctx", "512", "--parallel", "4"]);
    let prompts = ["Count from one to twenty.", "Name ten animals.", "List the planets.", "Write a haiku about rain."];
    for (i, p) in prompts.iter().enumerate() {
        let mut r = greedy(i as u64 + 1, user(p), 48);
        r.sampling.logit_bias = vec![(2, f32::NEG_INFINITY)]; // no early EOS: all run to 48
        w.send(&ToWorker::Generate(Box::new(r)));
    }
    let mut first_tokens: HashMap<u64, usize> = HashMap::new();
    let mut first_done = None;
    let mut done = 0;
    let mut seq = 0usize;
    while done < 4 {
        seq += 1;
        match w.recv() {
            FromWorker::Tokens { id, .. } => {
                first_tokens.entry(id.0).or_insert(seq);
            }
            FromWorker::Done(d) => {
                assert_eq!(d.finish, FinishReason::Length);
                assert_eq!(d.usage.completion_tokens, 48);
                first_done.get_or_insert(seq);
                done += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(first_tokens.len(), 4);
    let first_done = first_done.unwrap();
    for (id, at) in &first_tokens {
        assert!(*at < first_done, "request {id} made no progress before the first one finished");
    }
}

#[test]
fn stop_strings_are_honoured_across_token_boundaries() {
    let (mut w, _) = smol(&["--ctx", "512", "--parallel", "1"]);
    let prompt = Prompt::Text("1, 2, 3, 4, 5, 6, 7, 8,".into());
    let (full, _) = w.generate(greedy(1, prompt.clone(), 24));
    assert!(full.contains("12"), "{full:?}");
    // "1, 1" spans the tokens of ", 1" and "1" / "0, 1": the text must end right before it.
    let stop = "0, 1";
    let at = full.find(stop).expect("the count passes 10, 11");
    let mut r = greedy(2, prompt, 24);
    r.stop = vec![stop.into(), "never-matches-anything".into()];
    let (text, done) = w.generate(r);
    assert_eq!(text, full[..at]);
    assert_eq!(done.finish, FinishReason::Stop);
}

#[test]
fn same_seed_same_text() {
    let (mut w, _) = smol(&["--ctx", "512", "--parallel", "2"]);
    let req = |id, seed| {
        let mut r = greedy(id, user("Tell me a short story about a robot."), 40);
        r.sampling = SamplingParams { temperature: 1.0, seed: Some(seed), ..Default::default() };
        r
    };
    let (a, _) = w.generate(req(1, 1234));
    let (b, _) = w.generate(req(2, 1234));
    let (c, _) = w.generate(req(3, 999));
    assert_eq!(a, b);
    assert_ne!(a, c, "a different seed should give a different story");
}

#[test]
fn generation_goes_past_the_context_by_shifting() {
    let (mut w, ready) = smol(&["--ctx", "256", "--parallel", "1"]);
    assert_eq!(ready.n_ctx, 256);
    let mut r = greedy(1, user("Write a very long essay about the sea."), 600);
    r.sampling = SamplingParams {
        temperature: 0.7,
        seed: Some(7),
        logit_bias: vec![(2, f32::NEG_INFINITY)],
        ..Default::default()
    };
    let (text, done) = w.generate(r);
    assert_eq!(done.finish, FinishReason::Length);
    assert_eq!(done.usage.completion_tokens, 600);
    assert!(text.len() > 1000, "{} bytes", text.len());
}

#[test]
fn a_request_without_max_tokens_ends_when_its_context_is_full() {
    // A model that never says EOS (banned here, as a looping model never does): without
    // `max_tokens` the answer ends at the full context with `length`, as llama-server ends it.
    let (mut w, ready) = smol(&["--ctx", "256", "--parallel", "1"]);
    let mut r = greedy(1, user("hello"), 1);
    r.max_tokens = None;
    r.sampling.logit_bias = vec![(2, f32::NEG_INFINITY)];
    let (_, done) = w.generate(r);
    assert_eq!(done.finish, FinishReason::Length, "{done:?}");
    // Every position of the context holds a token, and the last one sampled is sent too.
    assert_eq!(done.usage.prompt_tokens + done.usage.completion_tokens, ready.n_ctx + 1, "{done:?}");
}

#[test]
fn after_a_context_shift_the_slot_reuses_exactly_what_its_cells_still_hold() {
    let (mut w, _) = smol(&["--ctx", "256", "--parallel", "1"]);
    let prompt = user("Write a very long essay about the sea.");
    w.generate(greedy(1, prompt.clone(), 8));
    let (before, done) = w.generate(greedy(2, prompt.clone(), 24));
    let n = done.usage.prompt_tokens;
    assert_eq!((done.usage.cached_tokens, done.usage.cached_from), (n - 1, Some(CacheTier::Slot)));
    // A generation far past the context: its cells are shifted several times, keeping the
    // prompt at the head.
    let mut long = greedy(3, prompt.clone(), 600);
    long.sampling.logit_bias = vec![(2, f32::NEG_INFINITY)];
    assert_eq!(w.generate(long).1.usage.completion_tokens, 600);
    // The kept head is still reusable, and only it: the answer is the one from before the shifts.
    let (after, done) = w.generate(greedy(4, prompt, 24));
    assert_eq!((done.usage.cached_tokens, done.usage.cached_from), (n - 1, Some(CacheTier::Slot)));
    assert_eq!(after, before);
}

#[test]
fn a_prompt_longer_than_the_context_is_a_clear_error() {
    let (mut w, ready) = smol(&["--ctx", "256", "--parallel", "1"]);
    assert_eq!(ready.n_ctx, 256);
    w.send(&ToWorker::Generate(Box::new(greedy(9, Prompt::Text("word ".repeat(300)), 4))));
    match w.recv() {
        FromWorker::Error { id, kind, message } => {
            assert_eq!(id, Some(RequestId(9)));
            assert_eq!(kind, ErrorKind::PromptTooLong);
            assert!(message.contains("301 tokens") && message.contains("256 tokens"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Gemma has no template: a chat request is refused, a completion works.
    let (mut g, ready) = TestWorker::start(&model(GEMMA_FILE), &["--ctx", "256", "--parallel", "1"]);
    assert!(!ready.has_chat_template);
    g.send(&ToWorker::Generate(Box::new(greedy(1, user("hi"), 4))));
    assert!(matches!(g.recv(), FromWorker::Error { kind: ErrorKind::NoChatTemplate, .. }));
    let (text, done) = g.generate(greedy(2, Prompt::Text("The capital of France is".into()), 8));
    assert!(!text.is_empty());
    assert_eq!(done.usage.completion_tokens, 8);
}

#[test]
fn cancel_frees_the_slot() {
    let (mut w, _) = smol(&["--ctx", "512", "--parallel", "1"]);
    let mut long = greedy(1, user("Write a long story."), 100_000);
    long.sampling.logit_bias = vec![(2, f32::NEG_INFINITY)];
    w.send(&ToWorker::Generate(Box::new(long)));
    // Queued behind it in the only slot:
    w.send(&ToWorker::Generate(Box::new(greedy(2, user("Say hi."), 8))));
    assert!(matches!(w.recv(), FromWorker::Tokens { id: RequestId(1), .. }));
    w.send(&ToWorker::Cancel { id: RequestId(1) });
    let mut cancelled = false;
    loop {
        match w.recv() {
            FromWorker::Tokens { id: RequestId(1), .. } => assert!(!cancelled),
            FromWorker::Done(d) if d.id == RequestId(1) => {
                assert_eq!(d.finish, FinishReason::Cancelled);
                cancelled = true;
            }
            FromWorker::Tokens { id: RequestId(2), .. } => assert!(cancelled),
            FromWorker::Done(d) if d.id == RequestId(2) => {
                assert!(cancelled);
                assert!(d.usage.completion_tokens >= 1);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn shutdown_lets_running_requests_finish_then_exits_zero() {
    let (mut w, _) = smol(&["--ctx", "512", "--parallel", "1"]);
    let mut r = greedy(1, user("Count to fifty."), 30);
    r.sampling.logit_bias = vec![(2, f32::NEG_INFINITY)];
    w.send(&ToWorker::Generate(Box::new(r)));
    w.send(&ToWorker::Shutdown { grace_ms: 300_000 });
    let mut n = 0;
    loop {
        match w.recv() {
            FromWorker::Tokens { n_tokens, .. } => n += n_tokens,
            FromWorker::Done(d) => {
                assert_eq!(d.finish, FinishReason::Length);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(n, 30);
    assert_eq!(w.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn protocol_mismatch_is_a_clean_error_and_exit_code() {
    let (mut child, stream, _dir, _) = spawn_connected(&model(SMOLLM2_FILE), &[]);
    let mut scratch = Vec::new();
    let mut s = &stream;
    frame::write_frame(&mut s, &ToWorker::Hello { version: PROTOCOL_VERSION + 1 }, &mut scratch).unwrap();
    let mut buf = Vec::new();
    match frame::read_frame::<FromWorker>(&mut s, &mut buf).unwrap() {
        Some(FromWorker::Error { id: None, kind: ErrorKind::ProtocolMismatch, message }) => {
            assert!(message.contains(&format!("version {}", PROTOCOL_VERSION + 1)), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(wait_exit(&mut child, Duration::from_secs(10)), Some(EXIT_PROTOCOL_MISMATCH));
}

#[test]
fn garbage_frames_are_clean_errors() {
    // Garbage instead of a Hello.
    let (mut child, stream, _dir, _) = spawn_connected(&model(SMOLLM2_FILE), &[]);
    let mut s = &stream;
    s.write_all(&[5, 0, 0, 0, 0xff, 0xfe, 0xfd, 0xfc, 0xfb]).unwrap();
    let mut buf = Vec::new();
    assert!(matches!(
        frame::read_frame::<FromWorker>(&mut s, &mut buf).unwrap(),
        Some(FromWorker::Error { kind: ErrorKind::ProtocolMismatch, .. })
    ));
    assert_eq!(wait_exit(&mut child, Duration::from_secs(10)), Some(EXIT_PROTOCOL_MISMATCH));

    // Garbage after a good handshake: an error message, then the worker leaves.
    let (mut w, _) = smol(&["--ctx", "256", "--parallel", "1"]);
    let mut bad = (3u32).to_le_bytes().to_vec();
    bad.extend([0xee, 0xee, 0xee]);
    w.writer.write_all(&bad).unwrap();
    match w.recv() {
        FromWorker::Error { id: None, kind: ErrorKind::BadFrame, .. } => {}
        other => panic!("{other:?}"),
    }
    assert!(w.wait_exit(Duration::from_secs(10)).is_some());

    // A frame header announcing 4 GiB is refused without trying to read it.
    let (mut w, _) = smol(&["--ctx", "256", "--parallel", "1"]);
    w.writer.write_all(&[0xff; HEADER_BYTES]).unwrap();
    assert!(matches!(w.recv(), FromWorker::Error { kind: ErrorKind::BadFrame, .. }));
}

#[test]
fn evictable_memory_stays_within_what_the_router_allows() {
    let (mut w, _) = smol(&["--ctx", "512", "--parallel", "1", "--prompt-cache-bytes", &(64u64 << 20).to_string()]);
    w.send(&ToWorker::Allow { bytes: 64 << 20, embed_bytes: 0 });
    assert_eq!(
        w.recv(),
        FromWorker::Held { cache_bytes: 0, embed_bytes: 0 },
        "told an allowance, it says what it holds"
    );
    // A second prompt takes the slot of the first: the first's state goes to the host cache.
    let long = |topic: &str| Prompt::Text(format!("{topic}, ").repeat(50));
    w.generate(greedy(1, long("apples"), 2));
    w.generate(greedy(2, long("pears"), 2));
    let (cache, _) = w.held.last().copied().expect("a report once the cache grew");
    assert!(cache > 1 << 20, "{:?}", w.held);
    // Allowed less than it holds: it drops it and says so; what comes next is not kept.
    w.send(&ToWorker::Allow { bytes: cache / 2, embed_bytes: 0 });
    assert_eq!(w.recv(), FromWorker::Held { cache_bytes: 0, embed_bytes: 0 });
    w.generate(greedy(3, long("plums"), 2));
    w.send(&ToWorker::Allow { bytes: cache / 2, embed_bytes: 0 });
    assert_eq!(w.recv(), FromWorker::Held { cache_bytes: 0, embed_bytes: 0 }, "pears' state did not fit: not kept");
    // The embedding context counts for what the router says it comes to hold...
    w.send(&ToWorker::Allow { bytes: 256 << 20, embed_bytes: 100 << 20 });
    assert!(matches!(w.recv(), FromWorker::Held { embed_bytes: 0, .. }));
    let input = EmbedRequest { id: RequestId(4), inputs: vec![Prompt::Text("a note".into())], lora: vec![] };
    w.send(&ToWorker::Embed(Box::new(input)));
    assert!(matches!(w.recv(), FromWorker::Embeddings { id: RequestId(4), .. }));
    assert!(matches!(w.recv(), FromWorker::Held { embed_bytes, .. } if embed_bytes == 100 << 20));
    w.generate(greedy(5, long("figs"), 2));
    let (cache, embed) = w.held.last().copied().expect("plums' state went to the cache");
    assert!(cache > 1 << 20 && embed == 100 << 20, "{:?}", w.held);
    // ... and goes first when the allowance cannot hold it: the prompt cache stays.
    w.send(&ToWorker::Allow { bytes: 50 << 20, embed_bytes: 100 << 20 });
    assert_eq!(w.recv(), FromWorker::Held { cache_bytes: cache, embed_bytes: 0 });
}
