//! Starting a worker process: a private socket, the handshake, and the wait for `Ready`.

use futures::{SinkExt, StreamExt};
use interprocess::local_socket::tokio::{prelude::*, Stream};
use interprocess::local_socket::{GenericFilePath, ListenerOptions};
use model_bucket_shared::protocol::frame::FrameCodec;
use model_bucket_shared::protocol::{FromWorker, ReadyInfo, ToWorker, PARENT_PID_ENV, PROTOCOL_VERSION};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};

use super::client::WorkerClient;
use super::logs::{self, LogTail};
use super::process::Process;

/// Everything needed to start one worker.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// Catalog ID, for logs.
    pub model_id: String,
    pub model_path: PathBuf,
    pub worker_bin: PathBuf,
    /// Context per slot, in tokens.
    pub ctx: Option<u32>,
    pub threads: Option<u32>,
    pub parallel: u32,
    pub cpus: Option<String>,
    pub gpus: Option<Vec<u32>>,
    pub gpu_layers: u32,
    pub chat_template: Option<String>,
    /// Longest wait for the worker to connect and load.
    pub load_timeout: Duration,
    /// Requests that may wait for one of its slots.
    pub max_queue: u32,
    /// Helper time one request may use.
    pub max_sampling: Duration,
    /// Bytes of its host-memory prompt cache (0: none).
    pub prompt_cache: u64,
    /// SHA-256 of the model file: keys the prompt prefixes it keeps on disk.
    pub model_sha256: String,
    /// Folder and byte limit of the prompt prefixes kept on disk.
    pub kv_cache: Option<(PathBuf, u64)>,
    /// LoRA adapter files it loads with the model.
    pub lora: Vec<PathBuf>,
    /// Its generating sequences propose tokens (n-gram speculation).
    pub speculative: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start {bin}: {source}")]
    Exec { bin: PathBuf, source: std::io::Error },
    #[error("cannot create the worker socket: {0}")]
    Socket(std::io::Error),
    #[error("the worker for {model} exited while starting ({status}): {tail}")]
    Exited { model: String, status: String, tail: String },
    #[error("the worker for {model} did not become ready within {secs} s")]
    Timeout { model: String, secs: u64 },
    #[error("the worker for {model} failed: {message}")]
    Refused { model: String, message: String },
}

/// A running, loaded worker.
pub struct Worker {
    pub child: Box<dyn Process>,
    pub pid: u32,
    pub ready: ReadyInfo,
    pub client: WorkerClient,
    /// Worker errors that belong to no request.
    pub unsolicited: mpsc::UnboundedReceiver<FromWorker>,
    pub stderr_tail: LogTail,
    /// The private folder holding the socket; removed when the worker is dropped.
    pub(crate) _runtime_dir: Option<tempfile::TempDir>,
}

/// Whether a worker inherits the router's variable `name`: only what llama.cpp and the worker
/// read (the path, home, temporary folder, locale, time zone, the library path, llama.cpp's
/// `GGML_*`, CUDA's and OpenMP's settings, the worker's log settings and the test fake's), never
/// one that looks like a secret. An allowlist: a key the config names (`peer_api_key_env`,
/// `upstream.api_key_env`) may have any name, and none reaches a worker.
pub fn worker_env(name: &str) -> bool {
    const NAMES: [&str; 11] = [
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "TMPDIR",
        "TZ",
        "LANG",
        "LANGUAGE",
        "LD_LIBRARY_PATH",
        "EDEN_LOG",
        "EDEN_LLAMA_LOGS",
    ];
    const PREFIXES: [&str; 12] =
        ["LC_", "GGML_", "CUDA_", "NVIDIA_", "HIP_", "ROCR_", "HSA_", "VK_", "OMP_", "KMP_", "RUST_", "EDEN_FAKE_"];
    (NAMES.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))) && !secret_env(name)
}

/// Environment variables a worker must not inherit: keys, tokens, passwords and credentials
/// (the API key, hub tokens, upstream keys, an SSH agent). Defense in depth: a worker runs as
/// the same user, which could read the router's own environment in `/proc`.
pub fn secret_env(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    const WORDS: [&str; 9] =
        ["KEY", "KEYS", "TOKEN", "TOKENS", "SECRET", "SECRETS", "PASSWORD", "PASSWD", "CREDENTIALS"];
    let word = |w: &str| {
        n == w || n.ends_with(&format!("_{w}")) || n.contains(&format!("_{w}_")) || n.starts_with(&format!("{w}_"))
    };
    WORDS.iter().any(|w| word(w)) || n.ends_with("_PASS") || ["DATABASE_URL", "SSH_AUTH_SOCK"].contains(&n.as_str())
}

/// Whether `pid` is `ancestor` or one of its descendants (a wrapper script that starts the
/// worker without `exec` is allowed), looking a few generations up `/proc`.
fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    for _ in 0..4 {
        if pid == ancestor {
            return true;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
        // The fields after the command name (which may hold spaces and parentheses).
        let Some((_, rest)) = stat.rsplit_once(')') else { return false };
        match rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            Some(parent) if parent > 1 => pid = parent,
            _ => return false,
        }
    }
    false
}

/// Checks that the process at the other end of `s` is the worker `pid` of this user (or a
/// process it started).
fn peer_is(s: &Stream, pid: u32) -> Result<(), String> {
    use interprocess::local_socket::traits::StreamCommon;
    let creds = s.peer_creds().map_err(|e| format!("no peer credentials: {e}"))?;
    let uid = nix::unistd::geteuid().as_raw();
    match (creds.pid(), creds.euid()) {
        (Some(p), Some(u)) if descends_from(p as u32, pid) && u == uid => Ok(()),
        (p, u) => Err(format!("peer pid {p:?} uid {u:?}, expected the worker {pid} of uid {uid}")),
    }
}

/// Starts a worker and waits until it has loaded its model; `progress` hears how far loading
/// has got (0–1) meanwhile.
/// Its stderr goes to the router's log and into `tail` (kept by the caller, so the lines stay
/// readable while it loads and after it is gone).
pub async fn spawn(spec: &WorkerSpec, progress: &super::Progress, tail: LogTail) -> Result<Worker, SpawnError> {
    let started = Instant::now();
    // A folder (0700) and socket (0600) only this user can reach; the connecting peer is
    // checked too (below), since a process of this user could still race the worker to it.
    let dir = tempfile::Builder::new()
        .prefix("model-bucket-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .map_err(SpawnError::Socket)?;
    let socket = dir.path().join("worker.sock");
    let name = socket.clone().to_fs_name::<GenericFilePath>().map_err(SpawnError::Socket)?;
    let listener = ListenerOptions::new().name(name).create_tokio().map_err(SpawnError::Socket)?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).map_err(SpawnError::Socket)?;

    let mut cmd = Command::new(&spec.worker_bin);
    cmd.arg("--model")
        .arg(&spec.model_path)
        .arg("--socket")
        .arg(&socket)
        .arg("--parallel")
        .arg(spec.parallel.to_string());
    cmd.arg("--gpu-layers").arg(spec.gpu_layers.to_string());
    if let Some(c) = spec.ctx {
        cmd.arg("--ctx").arg(c.to_string());
    }
    if let Some(t) = spec.threads {
        cmd.arg("--threads").arg(t.to_string());
    }
    if let Some(c) = &spec.cpus {
        cmd.arg("--cpus").arg(c);
    }
    if let Some(t) = &spec.chat_template {
        cmd.arg("--chat-template").arg(t);
    }
    cmd.arg("--prompt-cache-bytes").arg(spec.prompt_cache.to_string());
    cmd.arg("--max-queue").arg(spec.max_queue.to_string());
    cmd.arg("--max-sampling-ms").arg(spec.max_sampling.as_millis().max(1).to_string());
    if let Some((dir, max)) = &spec.kv_cache {
        cmd.arg("--kv-cache-dir").arg(dir).arg("--kv-cache-max").arg(max.to_string());
        cmd.arg("--model-sha256").arg(&spec.model_sha256);
    }
    if !spec.speculative {
        cmd.arg("--speculative").arg("off");
    }
    for a in &spec.lora {
        cmd.arg("--lora").arg(a);
    }
    // A worker starts from an allowlisted environment: none of the router's secrets, whatever
    // their names, and nothing of systemd's (only the router talks to it).
    cmd.env_clear();
    for (name, value) in std::env::vars_os() {
        if name.to_str().is_some_and(worker_env) {
            cmd.env(&name, value);
        }
    }
    if let Some(g) = &spec.gpus {
        let list: Vec<String> = g.iter().map(u32::to_string).collect();
        cmd.env("CUDA_VISIBLE_DEVICES", list.join(","));
    }
    cmd.env(PARENT_PID_ENV, std::process::id().to_string());
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| SpawnError::Exec { bin: spec.worker_bin.clone(), source })?;
    let pid = child.id().unwrap_or(0);
    if let Some(stderr) = child.stderr.take() {
        logs::follow(stderr, spec.model_id.clone(), pid, tail.clone());
    }

    let exited = |status: std::process::ExitStatus, tail: &LogTail| SpawnError::Exited {
        model: spec.model_id.clone(),
        status: status.to_string(),
        tail: tail.last(5),
    };
    let timeout = || SpawnError::Timeout { model: spec.model_id.clone(), secs: spec.load_timeout.as_secs() };
    let deadline = tokio::time::Instant::from_std(started + spec.load_timeout);

    let stream: Stream = loop {
        let s: Stream = tokio::select! {
            r = listener.accept() => r.map_err(SpawnError::Socket)?,
            s = child.wait() => {
                let s = s.map_err(SpawnError::Socket)?;
                // Let the stderr task catch the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Err(exited(s, &tail));
            }
            _ = tokio::time::sleep_until(deadline) => return Err(timeout()),
        };
        match peer_is(&s, pid) {
            Ok(()) => break s,
            Err(why) => {
                tracing::warn!(model = %spec.model_id, %why, "dropped a connection to a worker socket from another process")
            }
        }
    };
    let (rx, tx) = tokio::io::split(stream);
    let mut reader = FramedRead::new(rx, FrameCodec::<FromWorker, ToWorker>::default());
    let mut writer = FramedWrite::new(tx, FrameCodec::<FromWorker, ToWorker>::default());
    writer
        .send(ToWorker::Hello { version: PROTOCOL_VERSION })
        .await
        .map_err(|e| SpawnError::Refused { model: spec.model_id.clone(), message: e.to_string() })?;

    // HelloAck, then Ready (or an error, or an exit).
    let mut acked = false;
    let ready = loop {
        let msg = tokio::select! {
            m = reader.next() => m,
            s = child.wait() => {
                let s = s.map_err(SpawnError::Socket)?;
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Err(exited(s, &tail));
            }
            _ = tokio::time::sleep_until(deadline) => return Err(timeout()),
        };
        match msg {
            Some(Ok(FromWorker::HelloAck { version })) if version == PROTOCOL_VERSION => acked = true,
            Some(Ok(FromWorker::HelloAck { version })) => {
                return Err(SpawnError::Refused {
                    model: spec.model_id.clone(),
                    message: format!(
                        "protocol mismatch: the worker speaks version {version}, this router {PROTOCOL_VERSION} (is model-bucket-worker from another build?)"
                    ),
                })
            }
            Some(Ok(FromWorker::Loading { progress: p })) if acked => progress(p),
            Some(Ok(FromWorker::Ready(r))) if acked => break r,
            Some(Ok(FromWorker::Error { message, .. })) => {
                return Err(SpawnError::Refused { model: spec.model_id.clone(), message })
            }
            Some(Ok(other)) => {
                return Err(SpawnError::Refused {
                    model: spec.model_id.clone(),
                    message: format!("unexpected {other:?}"),
                })
            }
            Some(Err(e)) => return Err(SpawnError::Refused { model: spec.model_id.clone(), message: e.to_string() }),
            None => {
                let s = child.wait().await.map_err(SpawnError::Socket)?;
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Err(exited(s, &tail));
            }
        }
    };
    let (utx, urx) = mpsc::unbounded_channel();
    let client = WorkerClient::start(reader, writer, utx);
    tracing::info!(model = %spec.model_id, pid, load_ms = ready.load_ms, "worker ready");
    Ok(Worker {
        child: Box::new(child),
        pid,
        ready,
        client,
        unsolicited: urx,
        stderr_tail: tail,
        _runtime_dir: Some(dir),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_recognised_and_the_rest_is_kept() {
        for n in [
            "EDEN_API_KEY",
            "HF_TOKEN",
            "OPENAI_API_KEY",
            "AWS_SECRET_ACCESS_KEY",
            "GITHUB_TOKENS",
            "DB_PASSWORD",
            "SMTP_PASS",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "DATABASE_URL",
            "SSH_AUTH_SOCK",
            "TOKEN_FILE",
            "api_key",
        ] {
            assert!(secret_env(n), "{n}");
        }
        for n in [
            "PATH",
            "HOME",
            "LD_LIBRARY_PATH",
            "CUDA_VISIBLE_DEVICES",
            "EDEN_LOG",
            "EDEN_KV_CACHE_DIR",
            "XDG_RUNTIME_DIR",
            "KEYBOARD",
            "MONKEY",
            "PWD",
            "EDEN_PARENT_PID",
        ] {
            assert!(!secret_env(n), "{n}");
        }
    }

    #[test]
    fn workers_get_only_what_llama_cpp_and_the_worker_read() {
        for n in
            ["PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "LD_LIBRARY_PATH", "GGML_NUM_THREADS", "CUDA_VISIBLE_DEVICES"]
        {
            assert!(worker_env(n), "{n}");
        }
        for n in [
            "PEER_SHARED",
            "MY_UPSTREAM",
            "NOTIFY_SOCKET",
            "EDEN_API_KEY",
            "EDEN_UPSTREAM_KEY",
            "GGML_TOKEN",
            "XDG_RUNTIME_DIR",
            "PWD",
        ] {
            assert!(!worker_env(n), "{n}");
        }
    }

    #[test]
    fn a_process_descends_from_itself_and_its_parents() {
        let me = std::process::id();
        assert!(descends_from(me, me));
        assert!(descends_from(me, nix::unistd::getppid().as_raw() as u32));
        assert!(!descends_from(me, u32::MAX));
    }
}
