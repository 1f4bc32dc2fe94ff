//! Speculation (n-gram proposals checked in the same decode step) changes how fast a sequence
//! goes, not what it says. On both default models, greedy answers with it and without it
//! (`"speculative": false`) are the same token for token, in chat and completions (Gemma 3's
//! file has no chat template: it takes completions), with
//! log-probabilities, with `n` > 1 and across a context shift, except where llama.cpp's kernels
//! round a near-tie differently in a batch of another shape: each such divergence is counted,
//! printed and checked to be a near-tie in the answer without speculation. Proposals show in
//! `timings` and `/metrics`. Sampled answers keep their distribution: the share of samples that
//! go on with a repeating pattern (what the proposals offer) is the same with and without.

use model_bucket_tests::*;
use serde_json::{json, Value};

/// Top-two log-probability gap under which two answers may part: llama.cpp's logits move by
/// up to about 0.1 between batch shapes on these quantized models (measured on SmolLM2).
const NEAR_TIE: f64 = 0.3;

/// The tokens of a greedy answer, each with its top-two alternatives (token, logprob).
type Tokens = Vec<(String, Vec<(String, f64)>)>;

fn chat(model: &str, content: &str, max_tokens: u32, speculative: bool) -> Value {
    json!({
        "model": model, "max_tokens": max_tokens, "temperature": 0, "speculative": speculative,
        "logprobs": true, "top_logprobs": 2,
        "messages": [{ "role": "user", "content": content }],
    })
}

fn completion(model: &str, prompt: &str, max_tokens: u32, speculative: bool) -> Value {
    json!({
        "model": model, "max_tokens": max_tokens, "temperature": 0, "speculative": speculative,
        "logprobs": 2, "prompt": prompt,
    })
}

/// Choice `i`'s tokens, from a chat or a completion answer.
fn tokens(r: &Value, i: usize) -> Tokens {
    let lp = &r["choices"][i]["logprobs"];
    if let Some(content) = lp["content"].as_array() {
        return content
            .iter()
            .map(|t| {
                let top = t["top_logprobs"].as_array().unwrap().iter();
                let top = top.map(|a| (a["token"].as_str().unwrap().to_string(), a["logprob"].as_f64().unwrap()));
                (t["token"].as_str().unwrap().to_string(), top.collect())
            })
            .collect();
    }
    let toks = lp["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string());
    let tops = lp["top_logprobs"].as_array().unwrap().iter().map(|m| {
        let mut top: Vec<(String, f64)> =
            m.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_f64().unwrap())).collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        top
    });
    toks.zip(tops).collect()
}

/// Compares an answer with speculation (`on`) against one without (`off`): `None` when they are
/// the same, else where they part. Panics when they part anywhere but at a near-tie of `off`.
fn compare(what: &str, off: &Tokens, on: &Tokens) -> Option<usize> {
    let at = off.iter().zip(on).position(|(a, b)| a.0 != b.0);
    let Some(at) = at else {
        // One may be cut shorter only by a stop it reached at the same point.
        assert_eq!(off.len(), on.len(), "{what}: the same tokens, but not as many");
        return None;
    };
    let (chosen, top) = &off[at];
    let other = &on[at].0;
    let gap = match top.iter().find(|(t, _)| t == other) {
        Some((_, lp)) => top[0].1 - lp,
        None => f64::INFINITY,
    };
    assert!(
        gap < NEAR_TIE,
        "{what}: with speculation the answer parts at token {at}: {other:?} for {chosen:?}, a gap of {gap:.3} \
         (top two without it: {top:?})"
    );
    eprintln!("{what}: parts at token {at}, a near-tie ({chosen:?} / {other:?}, gap {gap:.3})");
    Some(at)
}

const PASSAGE: &str = "The old lighthouse stood at the edge of the cliff, its white paint peeling in long strips. \
    Every evening the keeper climbed the one hundred and twelve steps to light the lamp, and every morning he \
    climbed them again to put it out.";
const RECORD: &str =
    r#"{"name": "Dana Reyes", "city": "Lisbon", "role": "gardener", "since": 2019, "tags": ["seeds", "fences"]}"#;
const CODE: &str = "fn area(w: u32, h: u32) -> u32 {\n    let a = w * h;\n    a\n}\n\nfn perimeter(w: u32, h: u32) -> u32 {\n    let p = 2 * (w + h);\n    p\n}\n";

#[test]
fn greedy_answers_are_the_same_with_and_without_speculation() {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    link_model(GEMMA_FILE, dir.path(), GEMMA_FILE);
    let server = Server::start(dir.path(), &["--parallel", "2", "--ctx", "512"]);
    let chats = [
        format!("Copy this passage exactly, word for word:\n\n{PASSAGE}"),
        format!("Rewrite this record as JSON with the same fields:\n\n{RECORD}"),
        format!("Rename the function area to surface in this code and give back the whole code:\n\n{CODE}"),
        "Repeat the word 'garden' ten times, separated by commas.".to_string(),
        "Name three colours of the rainbow.".to_string(),
        "Write two sentences about a fox who learns to sail.".to_string(),
    ];
    let completions = [
        "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,",
        "The cat sat on the mat. The dog sat on the rug. The cat sat on the mat. The dog",
        "Once upon a time",
    ];
    let (mut compared, mut parted, mut drafted, mut accepted) = (0, 0, 0, 0);
    let mut check = |what: String, path: &str, off: Value, on: Value| {
        let (a, b) = (server.post_json(path, &off), server.post_json(path, &on));
        drafted += b["timings"]["draft_n"].as_u64().unwrap();
        accepted += b["timings"]["draft_n_accepted"].as_u64().unwrap();
        assert_eq!(a["timings"]["draft_n"], 0, "{what}: opted out, yet it proposed");
        compared += 1;
        parted += usize::from(compare(&what, &tokens(&a, 0), &tokens(&b, 0)).is_some());
    };
    // Gemma 3's file has no chat template: it takes the same texts as completions.
    for (model, templated) in [(smol_id(), true), (gemma_id(), false)] {
        for (i, c) in chats.iter().enumerate() {
            if templated {
                let (off, on) = (chat(&model, c, 64, false), chat(&model, c, 64, true));
                check(format!("{model} chat {i}"), "/v1/chat/completions", off, on);
            } else {
                let (off, on) = (completion(&model, c, 64, false), completion(&model, c, 64, true));
                check(format!("{model} text {i}"), "/v1/completions", off, on);
            }
        }
        for (i, p) in completions.iter().enumerate() {
            let (off, on) = (completion(&model, p, 64, false), completion(&model, p, 64, true));
            check(format!("{model} completion {i}"), "/v1/completions", off, on);
        }
    }
    // A sequence that fills its 512-token context shifts and goes on speculating.
    let smol = smol_id();
    let count = "Count from 1 to 400, separated by commas: 1, 2, 3,";
    let (off, on) = (completion(&smol, count, 600, false), completion(&smol, count, 600, true));
    check("a context shift".into(), "/v1/completions", off, on);
    eprintln!("{parted} of {compared} answers parted at a near-tie; {accepted} of {drafted} proposed tokens kept");
    assert!(accepted > 100 && drafted >= accepted, "proposals were made and kept: {accepted} of {drafted}");
    assert!(parted * 3 <= compared, "{parted} of {compared} answers parted: more than near-ties would explain");

    // Several choices of one request speculate each on its own, and match the single answer.
    let mut two = chat(&smol, &chats[0], 64, true);
    two["n"] = json!(2);
    let both = server.post_json("/v1/chat/completions", &two);
    let one = server.post_json("/v1/chat/completions", &chat(&smol, &chats[0], 64, false));
    for i in 0..2 {
        compare(&format!("n = 2, choice {i}"), &tokens(&one, 0), &tokens(&both, i));
    }

    // The proposals are in /metrics, per model.
    let proposed = server.metric_sum(&format!("model_bucket_draft_tokens_total{{model=\"{smol}\"}}"));
    let kept = server.metric_sum(&format!("model_bucket_draft_accepted_tokens_total{{model=\"{smol}\"}}"));
    assert!(kept > 0 && proposed >= kept, "metrics: {kept} of {proposed}");
}

#[test]
fn sampled_answers_keep_their_distribution() {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    let server = Server::start(dir.path(), &["--parallel", "4", "--ctx", "512"]);
    let smol = smol_id();
    // A pattern the proposals continue; at temperature 2 the model breaks it in about a third
    // of its samples. Were proposals kept without the sampler's say, nearly all would go on.
    let prompt = format!("Colours: {}red,", "red, green, blue, ".repeat(8));
    let samples = 160u64;
    let (mut drafted, mut shares) = (0, Vec::new());
    for (speculative, seeds) in [(false, 0..samples), (true, samples..2 * samples)] {
        let mut kept_pattern = 0;
        for seed in seeds {
            let r = server.post_json(
                "/v1/completions",
                &json!({ "model": smol, "prompt": prompt, "max_tokens": 8, "temperature": 2.0, "seed": seed,
                         "speculative": speculative }),
            );
            drafted += r["timings"]["draft_n"].as_u64().unwrap();
            let text = r["choices"][0]["text"].as_str().unwrap();
            kept_pattern += usize::from(text.starts_with(" green, blue, red, green,"));
        }
        shares.push(kept_pattern as f64 / samples as f64);
    }
    assert!(drafted > 0, "nothing was proposed: the test shows nothing");
    // Four standard errors of the difference of two independent shares.
    let (off, on) = (shares[0], shares[1]);
    let p = (off + on) / 2.0;
    let bound = 4.0 * (2.0 * p * (1.0 - p) / samples as f64).sqrt();
    eprintln!("the pattern goes on in {off:.3} of samples without speculation, {on:.3} with ({drafted} proposed)");
    assert!(off < 0.9, "without speculation the pattern went on in {off:.3}: the test cannot tell");
    assert!((on - off).abs() <= bound, "shares {off:.3} and {on:.3} differ by more than {bound:.3}");
}
