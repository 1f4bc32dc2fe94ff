//! The binaries the tests spawn are the ones the sources make: a binary that is missing or
//! older than the sources is built under `cargo test` (once per test process) and is an error
//! otherwise. A current binary is never rebuilt, so one built with other features (the CUDA
//! worker) is what the tests run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// The binaries the tests spawn, each with the folders (relative to the workspace root) whose
/// code goes into it: a binary is stale when one of its own sources is newer, not another's
/// (cargo does not relink the worker for a router change).
const BINARIES: [(&str, &[&str]); 3] = [
    ("model-bucket", &["router", "shared"]),
    ("model-bucket-worker", &["worker", "shared"]),
    ("fake-worker", &["tests/src", "shared"]),
];

/// Makes sure the binaries in `profile_dir` are current: builds them when run by cargo,
/// panics with what to run otherwise.
pub fn ensure_built(profile_dir: &Path) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let Some(stale) = stale(profile_dir) else { return };
        match std::env::var_os("CARGO") {
            Some(cargo) => build(&cargo, profile_dir),
            None => panic!("{stale}: run `cargo build --release --workspace --bins` first"),
        }
    });
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn build(cargo: &std::ffi::OsStr, profile_dir: &Path) {
    let profile = profile_dir.file_name().and_then(|n| n.to_str()).unwrap_or("release");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root()).args(["build", "--workspace", "--bins", "--quiet"]);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().expect("run cargo build for the binaries the tests spawn");
    assert!(status.success(), "building the binaries the tests spawn failed ({status}); see the output above");
}

/// Why the binaries in `profile_dir` need building, if they do.
fn stale(profile_dir: &Path) -> Option<String> {
    for (name, sources) in BINARIES {
        let Some(newest) = sources.iter().filter_map(|d| newest_in(&root().join(d))).max() else { continue };
        let path = profile_dir.join(name);
        match std::fs::metadata(&path).and_then(|m| m.modified()) {
            Err(_) => return Some(format!("{} is not built", path.display())),
            Ok(built) if built < newest => return Some(format!("{} is older than the sources", path.display())),
            Ok(_) => {}
        }
    }
    None
}

/// File kinds that go into a binary: Rust sources and the web page's files (`router/web/`).
const COMPILED_IN: [&str; 5] = ["rs", "html", "css", "js", "svg"];

/// The latest modification time of a compiled-in file or a `Cargo.toml` under `dir`.
fn newest_in(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).ok()?.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| COMPILED_IN.iter().any(|c| e == *c))
                || path.ends_with("Cargo.toml")
            {
                newest = newest.max(meta.modified().ok());
            }
        }
    }
    newest
}
