//! A blocking protocol client that drives a real `model-bucket-worker` process, for tests.

use interprocess::local_socket::{prelude::*, GenericFilePath, ListenerNonblockingMode, ListenerOptions, Stream};
use model_bucket_shared::protocol::frame::{read_frame, write_frame, FrameError, SharedStream};
use model_bucket_shared::protocol::*;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One end of the socket, shared by the test's reads and writes.
pub type Half = SharedStream<Stream>;

/// A worker process and the router end of its socket.
pub struct TestWorker {
    pub child: Child,
    pub reader: BufReader<Half>,
    pub writer: Half,
    pub pid: u32,
    pub socket: PathBuf,
    /// The loading progress it reported before `Ready`, in order.
    pub loading: Vec<f32>,
    /// The evictable memory it reported while [`TestWorker::generate`] waited, in order:
    /// (prompt cache, embedding context) bytes.
    pub held: Vec<(u64, u64)>,
    buf: Vec<u8>,
    _dir: tempfile::TempDir,
}

/// Binds a socket in a fresh temporary folder, starts the worker on it and accepts its
/// connection (failing if the worker exits first or takes over 60 s).
pub fn spawn_connected(model: &Path, extra: &[&str]) -> (Child, Stream, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("w.sock");
    let name = socket.clone().to_fs_name::<GenericFilePath>().expect("socket name");
    let listener = ListenerOptions::new()
        .name(name)
        .nonblocking(ListenerNonblockingMode::Accept)
        .create_sync()
        .expect("bind socket");
    let mut child = Command::new(crate::bin("model-bucket-worker"))
        .arg("--model")
        .arg(model)
        .arg("--socket")
        .arg(&socket)
        .args(extra)
        .args(one_thread_unless_asked(extra))
        .stdin(Stdio::null())
        .stderr(if std::env::var_os("EDEN_TEST_WORKER_LOGS").is_some() { Stdio::inherit() } else { Stdio::null() })
        .spawn()
        .expect("spawn worker");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match listener.accept() {
            Ok(s) => {
                s.set_nonblocking(false).expect("blocking stream");
                return (child, s, dir, socket);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(status) = child.try_wait().expect("wait") {
                    panic!("worker exited before connecting: {status}");
                }
                assert!(Instant::now() < deadline, "worker did not connect within 60 s");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Tests run several workers at once on few cores; llama.cpp's threads spin while they wait
/// for each other, so more threads than cores slows everything to a crawl. Tests get one thread
/// per worker unless they ask otherwise (the benchmarks do).
pub fn one_thread_unless_asked(extra: &[&str]) -> &'static [&'static str] {
    if extra.contains(&"--threads") {
        &[]
    } else {
        &["--threads", "1"]
    }
}

impl TestWorker {
    /// Starts a worker on `model` with extra arguments and waits for `Ready`.
    pub fn start(model: &Path, extra: &[&str]) -> (TestWorker, ReadyInfo) {
        let (child, stream, dir, socket) = spawn_connected(model, extra);
        let stream = Arc::new(stream);
        stream.set_recv_timeout(Some(Duration::from_secs(120))).expect("timeout");
        let pid = child.id();
        let mut w = TestWorker {
            child,
            reader: BufReader::new(SharedStream(stream.clone())),
            writer: SharedStream(stream),
            pid,
            socket,
            loading: Vec::new(),
            held: Vec::new(),
            buf: Vec::new(),
            _dir: dir,
        };
        w.send(&ToWorker::Hello { version: PROTOCOL_VERSION });
        match w.recv() {
            FromWorker::HelloAck { version } => assert_eq!(version, PROTOCOL_VERSION),
            other => panic!("expected HelloAck, got {other:?}"),
        }
        loop {
            match w.recv() {
                FromWorker::Loading { progress } => w.loading.push(progress),
                FromWorker::Ready(r) => return (w, r),
                other => panic!("expected Ready, got {other:?}"),
            }
        }
    }

    pub fn send(&mut self, m: &ToWorker) {
        let mut scratch = Vec::new();
        write_frame(&mut self.writer, m, &mut scratch).expect("write frame");
        self.writer.flush().expect("flush");
    }

    pub fn try_recv(&mut self) -> Result<Option<FromWorker>, FrameError> {
        read_frame(&mut self.reader, &mut self.buf)
    }

    pub fn recv(&mut self) -> FromWorker {
        self.try_recv().expect("read frame").expect("worker closed the connection")
    }

    /// Sends one request and collects its text until `Done` (panics on an error).
    pub fn generate(&mut self, req: GenerateRequest) -> (String, DoneInfo) {
        let id = req.id;
        self.send(&ToWorker::Generate(Box::new(req)));
        let mut text = String::new();
        loop {
            match self.recv() {
                FromWorker::Tokens { id: i, text: t, .. } if i == id => text.push_str(&t),
                FromWorker::Done(d) if d.id == id => return (text, *d),
                FromWorker::Held { cache_bytes, embed_bytes } => self.held.push((cache_bytes, embed_bytes)),
                FromWorker::Error { id: i, kind, message } if i == Some(id) || i.is_none() => {
                    panic!("request {id} failed: {kind:?}: {message}")
                }
                other => panic!("unexpected message {other:?}"),
            }
        }
    }

    /// Waits for the process to exit (up to `limit`) and returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        wait_exit(&mut self.child, limit)
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `child` to exit (up to `limit`); `None` when it is still running or was killed.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A request with greedy sampling, streaming, and the given prompt and limit.
pub fn greedy(id: u64, prompt: Prompt, max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        id: RequestId(id),
        prompt,
        sampling: SamplingParams { temperature: 0.0, ..Default::default() },
        max_tokens: Some(max_tokens),
        stop: vec![],
        stream: true,
        cache_prompt: true,
        constraint: None,
        logprobs: None,
        tools: None,
        lora: Vec::new(),
        count_only: false,
        speculative: true,
    }
}

/// A one-message chat prompt.
pub fn user(text: &str) -> Prompt {
    Prompt::Chat(vec![ChatMessage::new("user", text)])
}
