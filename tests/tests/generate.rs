//! `model-bucket generate` on the real SmolLM2: full ID and alias give the same greedy answer;
//! `--raw` sends the prompt as it is and `--stats` reports what was counted.

use model_bucket_tests::*;
use serde_json::json;

#[test]
fn generate_answers_paris_by_id_and_alias() {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    let d = dir.path().to_str().unwrap();
    let id = smol_id();
    let prompt = "What is the capital of France? Answer in one word.";
    let args = |name: &str| {
        vec![
            "generate".to_string(),
            name.to_string(),
            prompt.to_string(),
            "--max-tokens".into(),
            "16".into(),
            "--temperature".into(),
            "0".into(),
            "--models-dir".into(),
            d.to_string(),
        ]
    };
    let run = |name: &str| {
        let a = args(name);
        run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let by_id = run(&id);
    assert!(by_id.contains("Paris"), "{by_id:?}");
    assert_eq!(run("eden_smollm2_135m"), by_id);

    let out = std::process::Command::new(bin("model-bucket"))
        .args(["generate", "eden_nope", "hi", "--models-dir", d])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no model \"eden_nope\""));
}

/// The prompt tokens `--stats` reports: as many as the server counts for the same text as a
/// completion with `--raw`, and as a chat message (its template around it) without.
#[test]
fn raw_skips_the_chat_template_and_stats_report_the_counts() {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    let d = dir.path().to_str().unwrap();
    let id = smol_id();
    let prompt = "The capital of France is";
    let s = Server::start(dir.path(), &[]);
    let counted = |path: &str, body: serde_json::Value| {
        s.post_json(path, &body)["usage"]["prompt_tokens"].as_u64().expect("prompt_tokens")
    };
    let as_text = counted("/v1/completions", json!({ "model": id, "prompt": prompt, "max_tokens": 1 }));
    let as_chat = counted(
        "/v1/chat/completions",
        json!({ "model": id, "messages": [{ "role": "user", "content": prompt }], "max_tokens": 1 }),
    );
    assert!(as_chat > as_text + 5, "the template adds tokens: {as_chat} vs {as_text}");
    drop(s);
    for (raw, want) in [(true, as_text), (false, as_chat)] {
        let mut args = vec!["generate", &id, prompt, "--max-tokens", "4", "--temperature", "0", "--stats"];
        args.extend(["--models-dir", d]);
        if raw {
            args.push("--raw");
        }
        let (ok, out, err) = run_env(&args, &[]);
        assert!(ok, "{err}");
        assert!(!out.trim().is_empty(), "an answer on stdout: {out:?}");
        // "load N ms; P prompt tokens, G generated (Finish); prompt N ms, R tokens/s"
        let stats = err.lines().find(|l| l.starts_with("load ")).unwrap_or_else(|| panic!("no stats line: {err}"));
        let prompt_tokens: u64 = stats
            .split("; ")
            .nth(1)
            .and_then(|p| p.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{stats}"));
        assert_eq!(prompt_tokens, want, "--raw {raw}: {stats}");
        assert!(stats.contains("generated") && stats.ends_with("tokens/s"), "{stats}");
    }
}
