//! The catalog on the real default models: IDs, capabilities, bad files, renames, the index.

use model_bucket_tests::*;
use serde_json::Value;
use std::fs;

fn list_json(dir: &std::path::Path) -> Vec<Value> {
    let out = run_ok(&["list", "--json", "--models-dir", dir.to_str().unwrap()]);
    serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().clone()
}

fn bucket_with_bad_files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    link_model(GEMMA_FILE, dir.path(), GEMMA_FILE);
    fs::write(dir.path().join("empty.gguf"), b"").unwrap();
    let mut corrupt = b"GGUF\x03\x00\x00\x00".to_vec();
    corrupt.extend(0u64.to_le_bytes());
    corrupt.extend((1u64 << 60).to_le_bytes());
    corrupt.extend(b"garbage");
    fs::write(dir.path().join("corrupt.gguf"), corrupt).unwrap();
    fs::write(dir.path().join("notes.gguf"), b"this is not a model at all").unwrap();
    dir
}

#[test]
fn lists_exactly_the_two_default_models() {
    let dir = bucket_with_bad_files();
    let models = list_json(dir.path());
    assert_eq!(models.len(), 2, "{models:#?}");

    let smol = &models.iter().find(|m| m["architecture"] == "llama").expect("smollm2");
    assert_eq!(smol["id"], smol_id());
    assert_eq!(smol["context_length"], 8192);
    assert_eq!(smol["has_chat_template"], true);
    assert_eq!(smol["quantization"], "Q4_1");
    assert_eq!(smol["sha256"], SMOLLM2_SHA);
    assert_eq!(smol["aliases"], serde_json::json!(["eden_smollm2_135m"]));
    let caps: Vec<&str> = smol["capabilities"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert!(caps.contains(&"chat") && caps.contains(&"completion") && caps.contains(&"instruction"), "{caps:?}");

    let gemma = &models.iter().find(|m| m["architecture"] == "gemma3").expect("gemma");
    assert_eq!(gemma["id"], gemma_id());
    assert_eq!(gemma["context_length"], 32768);
    assert_eq!(gemma["has_chat_template"], false);
    assert_eq!(gemma["quantization"], "Q4_K_M");
    let caps = gemma["capabilities"].as_array().unwrap();
    assert!(!caps.contains(&Value::from("chat")), "{caps:?}");
    assert!(caps.contains(&Value::from("completion")));

    // --all names every skipped file with a reason.
    let all = run_ok(&["list", "--json", "--all", "--models-dir", dir.path().to_str().unwrap()]);
    let all: Value = serde_json::from_str(&all).unwrap();
    let skipped = all["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 3, "{skipped:#?}");
    for s in skipped {
        assert!(!s["reason"].as_str().unwrap().is_empty());
    }
    let text = run_ok(&["list", "--all", "--models-dir", dir.path().to_str().unwrap()]);
    assert!(text.contains("empty.gguf: empty file"), "{text}");
    assert!(text.contains("notes.gguf: not a GGUF file"), "{text}");
}

#[test]
fn renaming_keeps_the_id_and_duplicates_are_one_model() {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), "first-name.gguf");
    let before = list_json(dir.path())[0]["id"].clone();
    fs::rename(dir.path().join("first-name.gguf"), dir.path().join("renamed.gguf")).unwrap();
    let models = list_json(dir.path());
    assert_eq!(models.len(), 1);
    assert_eq!(models[0]["id"], before);
    assert!(models[0]["path"].as_str().unwrap().ends_with("renamed.gguf"));

    link_model(SMOLLM2_FILE, dir.path(), "copy.gguf");
    assert_eq!(list_json(dir.path()).len(), 1, "identical content is one model");
}

#[test]
fn second_list_uses_the_index_instead_of_rehashing() {
    let dir = tempfile::tempdir().unwrap();
    // A copy of its own: a hard link shares the inode whose change time other tests' links move,
    // and a changed inode is rightly hashed again.
    fs::copy(model(GEMMA_FILE), dir.path().join(GEMMA_FILE)).unwrap();
    list_json(dir.path());
    let index_path = dir.path().join(".model-bucket-index.json");
    let index = fs::read_to_string(&index_path).expect("index written by the first list");
    assert!(index.contains(GEMMA_SHA));
    // Plant a different hash for the same name, size and mtime: a list that rehashed would
    // report the real hash, one that trusts the index reports the planted one.
    let planted = "abcdef".repeat(10) + "abcd";
    fs::write(&index_path, index.replace(GEMMA_SHA, &planted)).unwrap();
    let models = list_json(dir.path());
    assert_eq!(models[0]["id"], "eden_gemma3_270m_abcdef");
}

#[test]
fn info_resolves_id_alias_and_file_name() {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    let d = dir.path().to_str().unwrap();
    let id = smol_id();
    for name in [id.as_str(), "eden_smollm2_135m", SMOLLM2_FILE] {
        let info: Value = serde_json::from_str(&run_ok(&["info", name, "--json", "--models-dir", d])).unwrap();
        assert_eq!(info["id"], id.as_str());
    }
    let out =
        std::process::Command::new(bin("model-bucket")).args(["info", "nope", "--models-dir", d]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no model \"nope\""));
}

#[test]
fn add_links_the_file_and_records_a_custom_id() {
    let src = tempfile::tempdir().unwrap();
    let file = link_model(SMOLLM2_FILE, src.path(), "my-smol.gguf");
    let bucket = tempfile::tempdir().unwrap();
    let d = bucket.path().join("nested");
    let info: Value = serde_json::from_str(&run_ok(&[
        "add",
        file.to_str().unwrap(),
        "--id",
        "intent",
        "--json",
        "--models-dir",
        d.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(info["id"], smol_id());
    assert!(info["aliases"].as_array().unwrap().contains(&Value::from("intent")));
    assert!(d.join("my-smol.gguf").is_file());
    let again: Value =
        serde_json::from_str(&run_ok(&["info", "intent", "--json", "--models-dir", d.to_str().unwrap()])).unwrap();
    assert_eq!(again["id"], info["id"]);

    // A file that is not a model is refused and nothing lands in the bucket.
    let junk = src.path().join("junk.gguf");
    fs::write(&junk, b"nope").unwrap();
    let out = std::process::Command::new(bin("model-bucket"))
        .args(["add", junk.to_str().unwrap(), "--models-dir", d.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!d.join("junk.gguf").exists());
}

#[test]
fn config_gives_custom_ids() {
    let dir = tempfile::tempdir().unwrap();
    link_model(GEMMA_FILE, dir.path(), GEMMA_FILE);
    let cfg = dir.path().join("eden.toml");
    fs::write(&cfg, "[models.eden_gemma3_270m]\nids = [\"memory\", \"condenser\"]\nctx = 4096\n").unwrap();
    let d = dir.path().to_str().unwrap();
    let info: Value = serde_json::from_str(&run_ok(&[
        "info",
        "condenser",
        "--json",
        "--models-dir",
        d,
        "--config",
        cfg.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(info["aliases"], serde_json::json!(["eden_gemma3_270m", "memory", "condenser"]));
    fs::write(&cfg, "[models.eden_gemma3_270m]\ncontext = 4096\n").unwrap();
    let out = std::process::Command::new(bin("model-bucket"))
        .args(["list", "--models-dir", d, "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `context`"));
}

#[test]
fn a_fresh_file_waits_to_settle_unless_it_was_hashed_in_this_state() {
    use model_bucket_shared::{Catalog, Config};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    // A copy, not a link: its modification time is now.
    std::fs::copy(model(SMOLLM2_FILE), dir.path().join(SMOLLM2_FILE)).unwrap();
    let settle = Duration::from_secs(30);
    let cat = Catalog::scan_settled(dir.path(), &Config::default(), None, settle).unwrap();
    assert!(cat.models.is_empty());
    assert_eq!(cat.pending, vec![dir.path().join(SMOLLM2_FILE)]);
    // Hashed once (as a pull or a scan without settling does), it is complete in this state.
    assert_eq!(Catalog::scan(dir.path(), &Config::default(), None).unwrap().models.len(), 1);
    let cat = Catalog::scan_settled(dir.path(), &Config::default(), None, settle).unwrap();
    assert_eq!(cat.models.len(), 1);
    assert!(cat.pending.is_empty());
}

#[test]
fn concurrent_adds_keep_every_custom_id() {
    let src = tempfile::tempdir().unwrap();
    let file = link_model(SMOLLM2_FILE, src.path(), "smol.gguf");
    let bucket = tempfile::tempdir().unwrap();
    let d = bucket.path().to_str().unwrap().to_string();
    // The file is placed once; then six processes record six IDs at the same time.
    run_ok(&["add", file.to_str().unwrap(), "--models-dir", &d]);
    let children: Vec<_> = (0..6)
        .map(|k| {
            std::process::Command::new(bin("model-bucket"))
                .args(["add", file.to_str().unwrap(), "--id", &format!("name-{k}"), "--models-dir", &d])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let info: Value = serde_json::from_str(&run_ok(&["info", &smol_id(), "--json", "--models-dir", &d])).unwrap();
    let aliases = info["aliases"].as_array().unwrap();
    for k in 0..6 {
        assert!(aliases.contains(&Value::from(format!("name-{k}"))), "name-{k} lost: {aliases:?}");
    }
}
