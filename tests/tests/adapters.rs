//! LoRA adapter files in the models folder (tests/fixtures/make_lora.py writes them with the
//! `gguf` package): recognised as adapters of the model they fit, never listed as models of
//! their own that fail to load; one whose base is absent, and a corrupt one, skipped with the
//! reason; the server serves the folder's models as before.

use model_bucket_tests::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Writes an adapter with `args` for make_lora.py, run by the Python that has the `gguf`
/// package: `$EDEN_GGUF_PYTHON`, else the checkout's `.venv-gguf` (scripts/test makes it).
fn make_lora(out: &Path, args: &[&str]) {
    let python = std::env::var_os("EDEN_GGUF_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv-gguf/bin/python3"));
    assert!(
        python.exists(),
        "{} is missing: scripts/test creates it (python3 -m venv .venv-gguf && .venv-gguf/bin/pip install gguf)",
        python.display()
    );
    let status = Command::new(&python)
        .arg(repo().join("tests/fixtures/make_lora.py"))
        .arg(out)
        .args(args)
        .status()
        .expect("run python3");
    assert!(status.success(), "make_lora.py failed with {}", python.display());
}

fn listing(dir: &Path) -> Value {
    serde_json::from_str(&run_ok(&["list", "--all", "--json", "--models-dir", dir.to_str().unwrap()])).unwrap()
}

fn reason(v: &Value, file: &str) -> String {
    let skipped = v["skipped"].as_array().unwrap();
    let hit = skipped.iter().find(|s| s["path"].as_str().unwrap().ends_with(file));
    hit.unwrap_or_else(|| panic!("{file} not among the skipped: {v}"))["reason"].as_str().unwrap().to_string()
}

#[test]
fn adapters_are_matched_to_their_base_and_never_listed_as_models() {
    let dir = smol_bucket();
    make_lora(&dir.path().join("smol-pirate.gguf"), &["--base-name", "SmolLM2 135M Instruct"]);
    make_lora(&dir.path().join("smol-unnamed.gguf"), &["--seed", "2", "--name", "Another adapter"]);
    // Gemma 3 270M's shape: 640 wide, and its architecture; Gemma is not in this folder.
    make_lora(&dir.path().join("gemma-adapter.gguf"), &["--arch", "gemma3", "--width", "640", "--out-width", "1024"]);
    let cut = dir.path().join("cut-adapter.gguf");
    make_lora(&cut, &["--seed", "3"]);
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..300]).unwrap();

    let v = listing(dir.path());
    let models: Vec<&str> = v["models"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(models, vec![smol_id()], "adapters are not models of their own");
    for file in ["smol-pirate.gguf", "smol-unnamed.gguf"] {
        let r = reason(&v, file);
        assert!(r.contains(&format!("a LoRA adapter for {}", smol_id())), "{file}: {r}");
    }
    let adapters = v["adapters"].as_array().unwrap();
    let pirate =
        adapters.iter().find(|a| a["adapter"]["path"].as_str().unwrap().ends_with("smol-pirate.gguf")).unwrap();
    assert_eq!(pirate["base"], smol_id().as_str());
    assert_eq!((pirate["adapter"]["n_embd"].as_u64(), pirate["adapter"]["rank"].as_u64()), (Some(576), Some(4)));
    assert!(pirate["adapter"]["id"].as_str().unwrap().starts_with("eden_"), "{pirate}");
    let r = reason(&v, "gemma-adapter.gguf");
    assert!(r.contains("base is not in the folder") && r.contains("architecture gemma3, 640 wide"), "{r}");
    let r = reason(&v, "cut-adapter.gguf");
    assert!(r.contains("truncated") || r.contains("corrupt"), "{r}");

    // The server starts on the folder and serves its model as before.
    let s = Server::start(dir.path(), &["--ctx", "256"]);
    let (status, body) = s
        .post(
            "/v1/completions",
            &serde_json::json!({ "model": smol_id(), "prompt": "Hello", "max_tokens": 2 }).to_string(),
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let listed = s.get_json("/v1/models");
    assert!(
        listed["data"].as_array().unwrap().iter().all(|m| !m["id"].as_str().unwrap().contains("adapter")),
        "{listed}"
    );
}
