//! The service files: the systemd unit passes `systemd-analyze verify` and declares what the
//! server implements (notify readiness, SIGHUP reload); the server really sends READY=1 to
//! `NOTIFY_SOCKET`; the container file builds the way the README does.

use model_bucket_tests::*;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn repo_file(p: &str) -> String {
    std::fs::read_to_string(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(p)).unwrap()
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = repo_file("deploy/model-bucket.service");
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "ReadWritePaths=/var/lib/model-bucket",
        "ProtectSystem=strict",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing from the unit");
    }
    let dir = tempfile::tempdir().unwrap();
    // Verify against the binary built here rather than an installed one.
    let local = unit.replace("/usr/local/bin/model-bucket", bin("model-bucket").to_str().unwrap());
    let path = dir.path().join("model-bucket.service");
    std::fs::write(&path, local).unwrap();
    match Command::new("systemd-analyze").arg("verify").arg(&path).output() {
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "systemd-analyze verify failed:\n{err}");
            assert!(!err.contains("model-bucket.service:"), "warnings about the unit:\n{err}");
        }
        Err(e) => eprintln!("SKIPPED systemd-analyze verify: {e} (the key lines were checked above)"),
    }
}

#[test]
fn the_server_notifies_systemd_when_ready() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let models = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, models.path(), SMOLLM2_FILE);
    let s = Server::start_with_env(models.path(), &[], &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())]);
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("a notification");
    let msg = String::from_utf8_lossy(&buf[..n]);
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");
    server::signal(s.child.id(), "HUP");
    let n = sock.recv(&mut buf).expect("a reload notification");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("RELOADING=1"));
}

#[test]
fn the_container_builds_like_the_readme() {
    let file = repo_file("deploy/Containerfile");
    assert!(file.contains("scripts/setup"), "the container builds with the README's setup script");
    assert!(file.contains("VOLUME /models"));
    let ignore = repo_file(".dockerignore");
    assert!(ignore.contains("target/") && ignore.contains("*.gguf"));
}

/// `scripts/lib/deps.sh`'s libclang check against a made-up filesystem root.
fn finds_libclang(files: &[&str]) -> bool {
    let root = tempfile::tempdir().unwrap();
    for f in files {
        let p = root.path().join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"").unwrap();
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/lib/deps.sh");
    std::process::Command::new("bash")
        .args(["-c", &format!(". {script}; has_libclang")])
        .env("EDEN_SYSROOT", root.path())
        .env_remove("LIBCLANG_PATH")
        .status()
        .unwrap()
        .success()
}

#[test]
fn setup_tells_libclang_from_libclang_cpp() {
    // What an LLVM install without libclang-dev leaves: bindgen cannot load it.
    assert!(!finds_libclang(&[
        "usr/lib/llvm-14/lib/libclang-cpp.so.14",
        "usr/lib/x86_64-linux-gnu/libclang-cpp.so.14"
    ]));
    assert!(!finds_libclang(&[]));
    assert!(finds_libclang(&["usr/lib/llvm-14/lib/libclang-cpp.so.14", "usr/lib/llvm-14/lib/libclang.so.1"]));
    assert!(finds_libclang(&["usr/lib/x86_64-linux-gnu/libclang-14.so.1"]));
}
