//! The `cuda` build on a GPU, where there is one: a worker with every layer offloaded to GPU 0
//! answers correctly and runs on the device. Elsewhere the test says it was skipped and why, and
//! fails instead when `EDEN_REQUIRE_GPU=1` (what `scripts/gpu-check` sets on a GPU machine).
//! Everywhere, a fake worker shows that a model's `gpus` and `gpu_layers` reach its worker.
//!
//! Build the worker with `cargo build --release -p model-bucket-worker --features cuda`.

use model_bucket_tests::*;
use std::process::Command;

/// Why the GPU test cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    let gpus = Command::new("nvidia-smi").arg("-L").output();
    match gpus {
        Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).contains("GPU 0") => {}
        _ => return Some("no CUDA device (nvidia-smi -L lists none)".into()),
    }
    let v = Command::new(bin("model-bucket-worker")).arg("--version").output().expect("worker --version");
    let v = String::from_utf8_lossy(&v.stdout).to_string();
    if !v.contains("backend cuda") {
        return Some(format!("the worker is not a cuda build ({})", v.trim()));
    }
    None
}

#[test]
fn cuda_worker_offloads_to_the_gpu_where_one_is_present() {
    if let Some(reason) = skip_reason() {
        assert!(std::env::var("EDEN_REQUIRE_GPU").as_deref() != Ok("1"), "EDEN_REQUIRE_GPU=1 but {reason}");
        eprintln!("SKIPPED cuda_worker_offloads_to_the_gpu_where_one_is_present: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    let config = dir.path().join("gpu.toml");
    std::fs::write(&config, "[models.eden_smollm2_135m]\ngpu_layers = 99\ngpus = [0]\n").unwrap();
    let s = Server::start(dir.path(), &["--config", config.to_str().unwrap(), "--threads", "2"]);
    let id = smol_id();
    let body = format!(
        r#"{{"model":"{id}","messages":[{{"role":"user","content":"What is the capital of France?"}}],"max_tokens":16,"temperature":0}}"#
    );
    let (status, resp) = s.post("/v1/chat/completions", &body).unwrap();
    assert_eq!(status, 200, "{resp}");
    assert!(resp.contains("Paris"), "{resp}");
    let pid = s.worker_pid(&id).expect("loaded");
    let apps = Command::new("nvidia-smi").args(["--query-compute-apps=pid", "--format=csv,noheader"]).output().unwrap();
    let apps = String::from_utf8_lossy(&apps.stdout);
    assert!(apps.lines().any(|l| l.trim() == pid.to_string()), "worker {pid} is not on the GPU: {apps}");
}

#[test]
fn a_models_gpus_and_gpu_layers_reach_its_worker() {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    let config = dir.path().join("gpu.toml");
    std::fs::write(&config, "[models.eden_smollm2_135m]\ngpu_layers = 99\ngpus = [1, 3]\n").unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let fake = bin("fake-worker");
    let s = Server::start_with_env(
        dir.path(),
        &["--config", config.to_str().unwrap()],
        &[("EDEN_WORKER_BIN", fake.to_str().unwrap()), ("EDEN_FAKE_LOG", log.path().to_str().unwrap())],
    );
    let body = format!(r#"{{"model":"{}","prompt":"Hi","max_tokens":2}}"#, smol_id());
    assert_eq!(s.post("/v1/completions", &body).unwrap().0, 200);
    let started = std::fs::read_to_string(log.path()).unwrap();
    assert!(started.contains("gpu_layers=99 cuda=1,3"), "{started}");
}
