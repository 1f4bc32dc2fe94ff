//! The web page in a real headless browser (Debian's `chromium`, driven by Puppeteer from
//! tests/node/page.mjs) against real servers: one holding SmolLM2 that pulls from the local
//! stand-in hub, one that wants an API key. Screenshots land in `target/page-screenshots/`.

use model_bucket_tests::hub::{Faults, Hub};
use model_bucket_tests::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The browser: `$CHROMIUM`, else `chromium` on the PATH. Missing is a failure, not a skip.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return p.into();
    }
    let found = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("chromium")).find(|p| p.is_file()));
    found.expect("chromium is not installed: `apt-get install chromium` (scripts/test does), or set CHROMIUM")
}

#[test]
fn the_page_chats_unloads_pulls_and_asks_for_the_key_in_a_real_browser() {
    let node_dir = node_dir("puppeteer-core");
    let browser = chromium();
    let hub = Hub::start();
    // A slow network, so the page has progress to show before the file is in.
    hub.set_faults(Faults { pause_per_mib: Some(Duration::from_millis(10)), ..Default::default() });
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    let hub_env = [("EDEN_HF_ENDPOINT", hub.url()), ("HF_TOKEN", String::new())];
    let hub_env: Vec<(&str, &str)> = hub_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let main = Server::start_with_env(dir.path(), &["--ctx", "2048"], &hub_env);
    let keyed_dir = smol_bucket();
    let key = "sk-page-test";
    let keyed = Server::start_with_env(keyed_dir.path(), &["--ctx", "512"], &[("EDEN_API_KEY", key)]);
    let shots = repo().join("target/page-screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    let out = Command::new("node")
        .current_dir(&node_dir)
        .arg("page.mjs")
        .env("MB_URL", main.base_url())
        .env("MB_KEY_URL", keyed.base_url())
        .env("MB_KEY", key)
        .env("MB_SMOL_ID", smol_id())
        .env("MB_PULL_REPO", "gguf-org/gemma-3-270m-gguf")
        .env("MB_SHOTS", &shots)
        .env("CHROMIUM", &browser)
        .output()
        .expect("run node");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the page failed in the browser (screenshots in {}):\n{report}\n--- server log ---\n{}",
        shots.display(),
        main.log()
    );
    assert!(report.contains("10/10 passed"), "{report}");
    for shot in ["chat.png", "workers.png"] {
        assert!(std::fs::metadata(shots.join(shot)).map(|m| m.len() > 10_000).unwrap_or(false), "{shot}");
    }
    assert!(
        hub.requests().iter().any(|r| r.contains("/gguf-org/gemma-3-270m-gguf/resolve/")),
        "the page pulled through the server from the hub"
    );
}
