//! The service files: the systemd unit passes `systemd-analyze verify` and declares what the
//! server implements (notify readiness, SIGHUP reload); the server really sends READY=1 to
//! `NOTIFY_SOCKET`; the container file builds the way the README does; the Kubernetes
//! manifests validate against the API schemas and fit the server; a mounted config that changes
//! the way a ConfigMap does is reloaded.

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
    // scripts/test installs systemd-analyze (Debian's systemd package): without it the unit is
    // not verified, and that is a failure, not a skip.
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("systemd-analyze (scripts/test installs the systemd package): {e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed:\n{err}");
    assert!(!err.contains("model-bucket.service:"), "warnings about the unit:\n{err}");
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

/// The Containerfile's instructions: (keyword, arguments), continuation lines joined, comments
/// dropped.
fn container_instructions(file: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in file.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        current.push_str(t.trim_end_matches('\\'));
        current.push(' ');
        if !t.ends_with('\\') {
            let (k, rest) = current.trim().split_once(' ').unwrap_or((current.trim(), ""));
            out.push((k.to_string(), rest.trim().to_string()));
            current.clear();
        }
    }
    out
}

#[test]
fn the_container_builds_like_the_readme() {
    let file = repo_file("deploy/Containerfile");
    let steps = container_instructions(&file);
    const KNOWN: [&str; 18] = [
        "FROM",
        "RUN",
        "CMD",
        "LABEL",
        "EXPOSE",
        "ENV",
        "ADD",
        "COPY",
        "ENTRYPOINT",
        "VOLUME",
        "USER",
        "WORKDIR",
        "ARG",
        "ONBUILD",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "SHELL",
        "MAINTAINER",
    ];
    for (k, _) in &steps {
        assert!(KNOWN.contains(&k.as_str()), "{k} is not a Containerfile instruction");
    }
    // Two stages: the README's own build, then a runtime that takes its binaries.
    let froms: Vec<&String> = steps.iter().filter(|(k, _)| k == "FROM").map(|(_, a)| a).collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    assert!(froms[0].ends_with(" AS build"), "{}", froms[0]);
    let run = |needle: &str| steps.iter().any(|(k, a)| k == "RUN" && a.contains(needle));
    assert!(run("scripts/setup") && run("EDEN_SKIP_MODELS=1"), "the container builds with the README's setup script");
    // What it copies exists: the build's binaries (the ones the tests run) and files of the repo.
    for (_, args) in steps.iter().filter(|(k, _)| k == "COPY") {
        let parts: Vec<&str> = args.split_whitespace().filter(|p| !p.starts_with("--")).collect();
        let (sources, _dest) = parts.split_at(parts.len() - 1);
        for src in sources.iter().filter(|s| **s != ".") {
            if args.contains("--from=build") {
                let name = src.strip_prefix("/src/target/release/").expect("a release binary");
                assert!(bin(name).is_file(), "{name}");
            } else {
                assert!(!repo_file(src).is_empty(), "{src}");
            }
        }
    }
    let config = repo_file("deploy/default-config.toml");
    model_bucket_shared::Config::parse(&config).expect("the image's default config parses");
    // Its settings are serve's: every ENV name is one `serve` reads, and the entry point serves.
    let help = Command::new(bin("model-bucket")).args(["serve", "--help"]).output().unwrap();
    // (Help text wraps anywhere: read it as one line.)
    let help = String::from_utf8_lossy(&help.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    for (_, args) in steps.iter().filter(|(k, _)| k == "ENV") {
        for name in args.split_whitespace().filter_map(|kv| kv.split_once('=').map(|(k, _)| k)) {
            assert!(help.contains(&format!("[env: {name}=")), "{name} is not a serve setting");
        }
    }
    let entry = steps.iter().find(|(k, _)| k == "ENTRYPOINT").map(|(_, a)| a.as_str());
    let cmd = steps.iter().find(|(k, _)| k == "CMD").map(|(_, a)| a.as_str());
    assert_eq!((entry, cmd), (Some(r#"["model-bucket"]"#), Some(r#"["serve"]"#)));
    assert!(steps.iter().any(|(k, a)| k == "VOLUME" && a == "/models"));
    assert!(steps.iter().any(|(k, a)| k == "USER" && a == "model-bucket"));
    let ignore = repo_file(".dockerignore");
    assert!(ignore.contains("target/") && ignore.contains("*.gguf"));
    // Building the image would repeat the whole release build and fetch base images, which CI
    // cannot reach: `docker build -f deploy/Containerfile .` builds it where a runtime is.
    eprintln!("NOT BUILT the container image: no registry is reachable for its base images here");
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

/// The Kubernetes manifests (every file of deploy/k8s but the kustomization).
fn k8s_files() -> Vec<std::path::PathBuf> {
    let dir = repo().join("deploy/k8s");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml") && !p.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_kubernetes_manifests_validate_against_the_api_schemas() {
    let files = k8s_files();
    assert!(files.len() >= 7, "{files:?}");
    // kubernetes-validate (scripts/test installs it in .venv) checks every resource against the
    // Kubernetes API's OpenAPI schemas, offline; --strict refuses unknown fields.
    let out = std::process::Command::new("kubernetes-validate")
        .arg("--strict")
        .args(&files)
        .output()
        .expect("run kubernetes-validate (scripts/test installs it in .venv: pip install kubernetes-validate)");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Every file the kustomization names exists, and every manifest but the variants is named.
    let kustomization = repo_file("deploy/k8s/kustomization.yaml");
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        let variant = name == "statefulset-gpu.yaml" || name == "shared-models.yaml";
        assert_eq!(kustomization.contains(&format!("- {name}")), !variant, "{name} in kustomization.yaml");
    }
}

#[test]
fn the_kubernetes_manifests_fit_the_server() {
    // The documents as JSON, through the PyYAML kubernetes-validate brings.
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys, json, yaml; print(json.dumps([d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]))"])
        .args(k8s_files())
        .output()
        .expect("python3 with PyYAML");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
            .clone()
    };
    // The headless Service the config's peers_dns names.
    let peers = find("Service", "model-bucket-peers");
    assert_eq!(peers["spec"]["clusterIP"], "None");
    for config_map in ["model-bucket-config", "model-bucket-gpu-config"] {
        let text = find("ConfigMap", config_map)["data"]["config.toml"].as_str().unwrap().to_string();
        let config = model_bucket_shared::Config::parse(&text).unwrap_or_else(|e| panic!("{config_map}: {e}"));
        let dns = config.peers_dns.expect("peers_dns");
        assert!(dns.starts_with("model-bucket-peers.model-bucket.svc"), "{dns}");
        assert!(dns.ends_with(":8080"));
        // The nodes' own key, not the clients'.
        assert_eq!(config.peer_api_key_env.as_deref(), Some("EDEN_PEER_KEY"));
    }
    for name in ["model-bucket", "model-bucket-gpu", "model-bucket-shared"] {
        let set = find("StatefulSet", name);
        assert_eq!(set["spec"]["serviceName"], "model-bucket-peers");
        let pod = &set["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let env = |n: &str| c["env"].as_array().unwrap().iter().find(|e| e["name"] == n).cloned();
        // The pod's grace covers the server's own drain.
        let grace: u64 = env("EDEN_SHUTDOWN_GRACE").unwrap()["value"].as_str().unwrap().parse().unwrap();
        assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() > grace, "{name}");
        // The clients' key from a mounted Secret file, never the environment; the peer key from
        // a Secret of its own.
        assert!(env("EDEN_API_KEY").is_none(), "{name}");
        let key_file = env("EDEN_API_KEY_FILE").unwrap()["value"].as_str().unwrap().to_string();
        let mounts = c["volumeMounts"].as_array().unwrap();
        let volumes = pod["volumes"].as_array().unwrap();
        // The mount a path is on: the longest mount path it is under.
        let mount_of = |path: &str| {
            mounts
                .iter()
                .filter(|m| {
                    let at = m["mountPath"].as_str().unwrap();
                    path == at || path.starts_with(&format!("{}/", at.trim_end_matches('/')))
                })
                .max_by_key(|m| m["mountPath"].as_str().unwrap().len())
                .cloned()
        };
        let key_mount = mount_of(&key_file).unwrap_or_else(|| panic!("{name}: nothing mounted at {key_file}"));
        let key_volume = volumes.iter().find(|v| v["name"] == key_mount["name"]).unwrap();
        assert_eq!(key_volume["secret"]["secretName"], "model-bucket-key", "{name}");
        assert_eq!(env("EDEN_PEER_KEY").unwrap()["valueFrom"]["secretKeyRef"]["name"], "model-bucket-peer-key");
        // Restricted: no token, no privilege, no capabilities, a seccomp profile, a read-only
        // root with writable emptyDirs where the server writes.
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
        assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{name}");
        let cache = env("EDEN_KV_CACHE_DIR").unwrap()["value"].as_str().unwrap().to_string();
        for path in [cache.as_str(), "/tmp/model-bucket-x/worker.sock"] {
            let m = mount_of(path).unwrap_or_else(|| panic!("{name}: {path} is on the read-only root"));
            let v = volumes.iter().find(|v| v["name"] == m["name"]).unwrap();
            assert!(v["emptyDir"].is_object(), "{name}: {path} on {v}");
        }
        assert_eq!(env("EDEN_HOST").unwrap()["value"], "0.0.0.0");
        for probe in ["readinessProbe", "livenessProbe"] {
            assert_eq!(c[probe]["httpGet"]["path"], "/health", "{name} {probe}");
        }
        assert!(c["resources"]["limits"]["memory"].is_string(), "{name}: the RAM budget follows the memory limit");
        let labels = &set["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/name"], "model-bucket", "{name} joins the Services");
        assert_eq!(
            set["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
            labels["app.kubernetes.io/component"]
        );
        assert_eq!(set["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"], "/metrics");
    }
    let ns = find("Namespace", "model-bucket");
    assert_eq!(ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted");
    // Only clients and peers reach the nodes.
    let np = find("NetworkPolicy", "model-bucket");
    assert_eq!(np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"], "model-bucket");
    let from = np["spec"]["ingress"][0]["from"].as_array().unwrap();
    assert!(from.iter().any(|f| f["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "model-bucket"));
    assert!(from.iter().any(|f| f["podSelector"]["matchLabels"]["model-bucket-client"] == "true"));
    assert_eq!(np["spec"]["ingress"][0]["ports"][0]["port"], 8080);
    let gpu = find("StatefulSet", "model-bucket-gpu");
    assert_eq!(gpu["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"], 1);
    // The Containerfile's user is the one the pods run as.
    assert!(repo_file("deploy/Containerfile").contains("--uid 10001"));
    assert_eq!(find("StatefulSet", "model-bucket")["spec"]["template"]["spec"]["securityContext"]["runAsUser"], 10001);
}

#[test]
fn a_config_that_changes_like_a_configmap_is_reloaded() {
    use std::os::unix::fs::symlink;
    let models = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, models.path(), SMOLLM2_FILE);
    // The kubelet's layout: config.toml -> ..data/config.toml, ..data -> a timestamped folder,
    // and an update swaps ..data in one rename.
    let mount = tempfile::tempdir().unwrap();
    let write_version = |name: &str, text: &str| {
        let dir = mount.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), text).unwrap();
        let tmp = mount.path().join("..data_tmp");
        symlink(name, &tmp).unwrap();
        std::fs::rename(&tmp, mount.path().join("..data")).unwrap();
    };
    write_version("..v1", "[models.eden_smollm2_135m]\nids = [\"first\"]\n");
    symlink("..data/config.toml", mount.path().join("config.toml")).unwrap();
    let config = mount.path().join("config.toml");
    let s = Server::start(models.path(), &["--config", config.to_str().unwrap()]);
    let aliases = || s.get_json(&format!("/v1/models/{}", smol_id()))["aliases"].to_string();
    assert!(aliases().contains("first"), "{}", aliases());
    write_version("..v2", "[models.eden_smollm2_135m]\nids = [\"second\"]\n");
    assert!(server::eventually(Duration::from_secs(10), || aliases().contains("second")), "{}\n{}", aliases(), s.log());
}
