//! The binaries the tests spawn are the ones the sources make: under `cargo test` they are
//! built before the first use; otherwise they are checked against the sources' times.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// The crates whose code goes into the spawned binaries, relative to the workspace root.
const SOURCES: [&str; 4] = ["router", "worker", "shared", "tests/src/bin"];

/// Builds the workspace's binaries into `profile_dir` once per process when run by cargo;
/// otherwise panics if a binary there is older than the newest source file.
pub fn ensure_built(profile_dir: &Path) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| match std::env::var_os("CARGO") {
        Some(cargo) => build(&cargo, profile_dir),
        None => check(profile_dir),
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

fn check(profile_dir: &Path) {
    let newest = SOURCES.iter().filter_map(|d| newest_in(&root().join(d))).max();
    for name in ["model-bucket", "model-bucket-worker"] {
        let built = std::fs::metadata(profile_dir.join(name)).and_then(|m| m.modified()).ok();
        if let (Some(built), Some(newest)) = (built, newest) {
            assert!(
                built >= newest,
                "{} is older than the sources: run `cargo build --release --workspace --bins` first",
                profile_dir.join(name).display()
            );
        }
    }
}

/// The latest modification time of a `.rs` or `Cargo.toml` file under `dir`.
fn newest_in(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).ok()?.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") || path.ends_with("Cargo.toml") {
                newest = newest.max(meta.modified().ok());
            }
        }
    }
    newest
}
