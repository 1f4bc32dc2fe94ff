//! The Python suites (tests/python), run against a live server with the official clients that
//! `scripts/test` installs into `.venv`.

use std::path::Path;
use std::process::Command;

use crate::Server;

/// Runs `script` from tests/python against `server`, with `EDEN_BASE_URL`, `EDEN_SMOL`,
/// `EDEN_GEMMA` and `env` set; fails with its report and the server's log.
pub fn suite(server: &Server, script: &str, env: &[(&str, &Path)]) {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(here.join("python").join(script))
        .arg("-v")
        .env("EDEN_BASE_URL", server.base_url())
        .env("EDEN_SMOL", crate::smol_id())
        .env("EDEN_GEMMA", crate::gemma_id())
        .envs(env.iter().copied())
        .output()
        .expect("run python3 (scripts/test installs what the suites need into .venv)");
    let report = String::from_utf8_lossy(&out.stderr);
    eprintln!("{report}");
    assert!(out.status.success(), "{script} failed:\n{report}\n--- server log ---\n{}", server.log());
}

/// The fixture file `name` of tests/fixtures.
pub fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}
