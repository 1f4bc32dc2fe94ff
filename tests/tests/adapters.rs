//! LoRA adapters (tests/fixtures/make_lora.py writes them with the `gguf` package): matched
//! to the model they fit and served under their own IDs on their base's one worker, through
//! llama.cpp with the real SmolLM2; one whose base is absent, and a corrupt one, skipped with
//! the reason; config models made of a base and an adapter at a scale.

use model_bucket_tests::*;
use serde_json::Value;
use std::path::Path;

fn listing(dir: &Path) -> Value {
    serde_json::from_str(&run_ok(&["list", "--all", "--json", "--models-dir", dir.to_str().unwrap()])).unwrap()
}

fn reason(v: &Value, file: &str) -> String {
    let skipped = v["skipped"].as_array().unwrap();
    let hit = skipped.iter().find(|s| s["path"].as_str().unwrap().ends_with(file));
    hit.unwrap_or_else(|| panic!("{file} not among the skipped: {v}"))["reason"].as_str().unwrap().to_string()
}

/// The listing's model IDs.
fn ids(v: &Value) -> Vec<String> {
    v["models"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn adapters_are_matched_to_their_base_and_listed_as_models_of_their_own() {
    let dir = smol_bucket();
    make_lora(&dir.path().join("smol-pirate.gguf"), &["--base-name", "SmolLM2 135M Instruct", "--name", "Pirate"]);
    make_lora(&dir.path().join("smol-unnamed.gguf"), &["--seed", "2", "--name", "Another adapter"]);
    // Gemma 3 270M's shape: 640 wide, and its architecture; Gemma is not in this folder.
    make_lora(&dir.path().join("gemma-adapter.gguf"), &["--arch", "gemma3", "--width", "640", "--out-width", "1024"]);
    let cut = dir.path().join("cut-adapter.gguf");
    make_lora(&cut, &["--seed", "3"]);
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..300]).unwrap();

    let v = listing(dir.path());
    let models = ids(&v);
    assert_eq!(models.len(), 3, "the base and its two adapters: {models:?}");
    assert!(models.contains(&smol_id()), "{models:?}");
    let pirate = v["models"].as_array().unwrap().iter().find(|m| m["name"] == "Pirate").expect("the pirate adapter");
    assert!(pirate["id"].as_str().unwrap().starts_with("eden_pirate_"), "{pirate}");
    assert_eq!(pirate["lora"]["base"], smol_id().as_str());
    assert_eq!(
        pirate["capabilities"],
        v["models"].as_array().unwrap().iter().find(|m| m["id"] == smol_id().as_str()).unwrap()["capabilities"]
    );
    let base = v["models"].as_array().unwrap().iter().find(|m| m["id"] == smol_id().as_str()).unwrap();
    assert_eq!(base["adapters"].as_array().unwrap().len(), 2, "{base}");
    assert_eq!(base["aliases"][0], "eden_smollm2_135m", "the base keeps its short name");
    let adapters = v["adapters"].as_array().unwrap();
    let found = adapters.iter().find(|a| a["adapter"]["path"].as_str().unwrap().ends_with("smol-pirate.gguf")).unwrap();
    assert_eq!((found["adapter"]["n_embd"].as_u64(), found["adapter"]["rank"].as_u64()), (Some(576), Some(4)));
    let r = reason(&v, "gemma-adapter.gguf");
    assert!(r.contains("base is not in the folder") && r.contains("architecture gemma3, 640 wide"), "{r}");
    let r = reason(&v, "cut-adapter.gguf");
    assert!(r.contains("truncated") || r.contains("corrupt"), "{r}");
}

/// `POST path` with a JSON body: the status and the body as JSON (`Null` when it is not).
fn post(s: &Server, path: &str, body: &Value) -> (u16, Value) {
    let (status, resp) = s.post(path, &body.to_string()).unwrap();
    let json = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

/// Greedy text of `model` for a fixed prompt, with extra request fields.
fn greedy(s: &Server, model: &str, extra: Value) -> String {
    let mut body =
        serde_json::json!({ "model": model, "prompt": "Once upon a time", "max_tokens": 24, "temperature": 0 });
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let (status, v) = post(s, "/v1/completions", &body);
    assert_eq!(status, 200, "{model}: {v}");
    v["choices"][0]["text"].as_str().unwrap().to_string()
}

#[test]
fn adapters_run_on_their_bases_one_worker_with_their_scales() {
    let dir = smol_bucket();
    // Strong enough to change SmolLM2's greedy text: every block's query projection.
    let strong = ["--layers", "30", "--scale", "0.3"];
    make_lora(&dir.path().join("a-pirate.gguf"), &[&strong[..], &["--name", "Pirate"]].concat());
    make_lora(&dir.path().join("b-poet.gguf"), &[&strong[..], &["--seed", "2", "--name", "Poet"]].concat());
    // Fits by architecture, width and blocks, but its query projection's output is not the
    // base's: llama.cpp refuses it when the worker loads.
    make_lora(&dir.path().join("c-broken.gguf"), &["--out-width", "999", "--name", "Broken"]);
    let outside = tempfile::tempdir().unwrap();
    let off = outside.path().join("pirate-copy.gguf");
    std::fs::copy(dir.path().join("a-pirate.gguf"), &off).unwrap();
    let config = outside.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[models.pirate-off]\nbase = \"eden_smollm2_135m\"\nlora = [{{ path = {:?}, scale = 0.0 }}]\n\n\
             [models.half-pirate]\nbase = \"eden_smollm2_135m\"\nids = [\"hp\"]\nlora = [{{ path = \"a-pirate.gguf\", scale = 0.5 }}]\n",
            off.display()
        ),
    )
    .unwrap();
    let s = Server::start(dir.path(), &["--ctx", "256", "--config", config.to_str().unwrap()]);
    let listed = s.get_json("/v1/models");
    let entry = |pred: &dyn Fn(&Value) -> bool| listed["data"].as_array().unwrap().iter().find(|m| pred(m)).cloned();
    let pirate = entry(&|m| m["id"].as_str().unwrap().starts_with("eden_pirate_")).expect("pirate listed");
    let pirate_id = pirate["id"].as_str().unwrap().to_string();
    let poet_id = entry(&|m| m["id"].as_str().unwrap().starts_with("eden_poet_")).expect("poet listed")["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(pirate["base"], smol_id().as_str(), "{pirate}");
    let base_entry = entry(&|m| m["id"] == smol_id().as_str()).unwrap();
    assert_eq!(
        base_entry["adapters"].as_array().unwrap().len(),
        4,
        "three in the folder, one from the config: {base_entry}"
    );
    assert!(entry(&|m| m["id"] == "half-pirate").is_some(), "{listed}");

    let base = greedy(&s, &smol_id(), serde_json::json!({}));
    let with_pirate = greedy(&s, &pirate_id, serde_json::json!({}));
    assert_ne!(with_pirate, base, "the adapter at scale 1 changes the greedy text");
    assert_eq!(greedy(&s, &pirate_id, serde_json::json!({})), with_pirate, "deterministically");
    // The base's cells of the same prompt were not reused for the adapter: prefilling afresh
    // gives the same text.
    assert_eq!(greedy(&s, &pirate_id, serde_json::json!({ "cache_prompt": false })), with_pirate);
    // Requests of the base and of an adapter at once take turns by decode step; each gets its
    // own text.
    let (a, b) = std::thread::scope(|t| {
        let a = t.spawn(|| greedy(&s, &smol_id(), serde_json::json!({ "max_tokens": 48 })));
        let b = t.spawn(|| greedy(&s, &pirate_id, serde_json::json!({ "max_tokens": 48 })));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a.starts_with(&base) && b.starts_with(&with_pirate), "{a:?} / {b:?}");
    let with_poet = greedy(&s, &poet_id, serde_json::json!({}));
    assert_ne!(with_poet, base);
    assert_ne!(with_poet, with_pirate, "each model gets its own adapter");
    // Scale 0, from the config or the request, is the base.
    assert_eq!(greedy(&s, "pirate-off", serde_json::json!({})), base);
    assert_eq!(greedy(&s, &pirate_id, serde_json::json!({ "lora": [{ "id": pirate_id, "scale": 0.0 }] })), base);
    // A request's list on the base, by index or by ID, as llama-server takes it.
    let index = base_entry["adapters"].as_array().unwrap().iter().position(|a| a["file"] == "a-pirate.gguf").unwrap();
    assert_eq!(greedy(&s, &smol_id(), serde_json::json!({ "lora": [{ "id": index, "scale": 1.0 }] })), with_pirate);
    let half = greedy(&s, "hp", serde_json::json!({}));
    assert_ne!(half, with_pirate, "scale 0.5 is not scale 1");
    assert_eq!(greedy(&s, &smol_id(), serde_json::json!({ "lora": [{ "id": "half-pirate", "scale": 0.5 }] })), half);

    // Streamed chat through an adapter says what the whole answer says.
    let chat = |stream: bool| {
        serde_json::json!({
            "model": pirate_id, "messages": [{ "role": "user", "content": "Say hello" }],
            "max_tokens": 12, "temperature": 0, "stream": stream,
        })
    };
    let (status, whole) = post(&s, "/v1/chat/completions", &chat(false));
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["model"], pirate_id.as_str());
    let mut streamed = String::new();
    for data in model_bucket_tests::server::sse_lines(
        s.port,
        "/v1/chat/completions",
        &chat(true).to_string(),
        std::time::Duration::from_secs(60),
    ) {
        if data == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(&data).unwrap();
        streamed.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
    }
    assert_eq!(streamed, whole["choices"][0]["message"]["content"].as_str().unwrap());

    // Embeddings go through the adapter too.
    let embed = |model: &str| {
        let body = serde_json::json!({ "model": model, "input": "a memory of the sea and the ship" });
        let (status, v) = post(&s, "/v1/embeddings", &body);
        assert_eq!(status, 200, "{v}");
        v["data"][0]["embedding"].clone()
    };
    assert_ne!(embed(&pirate_id), embed(&smol_id()));

    // Bad lists are refused before any work.
    for (bad, why) in [
        (serde_json::json!([{ "id": 9, "scale": 1.0 }]), "has 4 adapters"),
        (serde_json::json!([{ "id": "nope", "scale": 1.0 }]), "is not an adapter"),
        (serde_json::json!([{ "id": 0, "scale": 1.0 }, { "id": 1, "scale": 1.0 }]), "one adapter per request"),
        (serde_json::json!([{ "id": 0, "scale": 1.0, "extra": 1 }]), "extra"),
    ] {
        let body = serde_json::json!({ "model": smol_id(), "prompt": "x", "max_tokens": 1, "lora": bad });
        let (status, v) = post(&s, "/v1/completions", &body);
        assert_eq!(status, 400, "{bad}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(why), "{bad}: {v}");
    }

    // The adapter llama.cpp refused costs only its own requests, with the reason.
    let broken = entry(&|m| m["id"].as_str().unwrap().starts_with("eden_broken_")).expect("broken listed");
    let body = serde_json::json!({ "model": broken["id"], "prompt": "x", "max_tokens": 1 });
    let (status, v) = post(&s, "/v1/completions", &body);
    assert_eq!(status, 502, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("c-broken.gguf could not be loaded"), "{v}");

    // All of it ran on one worker: the base's.
    assert_eq!(s.worker_models(), vec![smol_id()]);
    let pid = s.worker_pid(&smol_id()).unwrap();

    // An adapter dropped in later: a rescan lists it and restarts the base's worker to load it.
    make_lora(&dir.path().join("d-late.gguf"), &[&strong[..], &["--seed", "4", "--name", "Late"]].concat());
    std::thread::sleep(std::time::Duration::from_millis(2200));
    let (status, report) = post(&s, "/admin/rescan", &serde_json::json!({}));
    assert_eq!(status, 200, "{report}");
    let late = report["added"][0].as_str().expect("the new adapter is added").to_string();
    assert!(late.starts_with("eden_late_"), "{report}");
    let with_late = greedy(&s, &late, serde_json::json!({}));
    assert_ne!(with_late, base);
    assert_ne!(s.worker_pid(&smol_id()), Some(pid), "the base's worker restarted");
    assert_eq!(greedy(&s, &pirate_id, serde_json::json!({})), with_pirate, "its other adapters are as before");
}
