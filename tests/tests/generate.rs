//! `model-bucket generate` on the real SmolLM2: full ID and alias give the same greedy answer.

use model_bucket_tests::*;

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
