//! An in-memory worker for the router's own tests: the real [`WorkerClient`] over a pipe, and a
//! task at the other end that speaks the protocol as a worker would, following a [`Script`].
//! Each start of a model is a new fake; what every fake received is kept for the test to read.

use futures::{SinkExt, StreamExt};
use model_bucket_shared::protocol::frame::FrameCodec;
use model_bucket_shared::protocol::{
    DoneInfo, FinishReason, FromWorker, ReadyInfo, RequestId, Timings, ToWorker, Usage,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};

use super::client::WorkerClient;
use super::process::Process;
use super::{Launch, Worker};

/// How every fake of a launcher behaves.
#[derive(Debug, Clone)]
pub struct Script {
    /// Streamed in order, one token each, up to the request's `max_tokens`; then `Done`.
    pub pieces: Vec<String>,
    /// Stream the pieces again and again: a request ends only at `max_tokens` or when
    /// cancelled.
    pub endless: bool,
    /// The fakes of the first `starts` starts die after `after` pieces (over all their
    /// requests): the connection drops and the fake "exits" on SIGABRT.
    pub crash: Option<Crash>,
    /// Loading reports half done, takes this long, then reports done and is ready.
    pub load: Duration,
    pub ready: ReadyInfo,
}

impl Script {
    /// A chat model with 4 slots whose answer is `pieces`.
    pub fn says(pieces: &[&str]) -> Script {
        Script {
            pieces: pieces.iter().map(|p| p.to_string()).collect(),
            endless: false,
            crash: None,
            load: Duration::ZERO,
            ready: ReadyInfo { load_ms: 1, memory_bytes: 1 << 20, n_ctx: 4096, slots: 4, has_chat_template: true },
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Crash {
    pub after: usize,
    pub starts: usize,
}

/// What the fakes of one launcher saw, in order, over all their starts.
#[derive(Clone, Default)]
pub struct Seen {
    messages: Arc<Mutex<Vec<ToWorker>>>,
    starts: Arc<Mutex<usize>>,
}

impl Seen {
    pub fn messages(&self) -> Vec<ToWorker> {
        self.messages.lock().expect("seen lock").clone()
    }

    pub fn starts(&self) -> usize {
        *self.starts.lock().expect("seen lock")
    }
}

/// A launcher whose workers are fakes following `script`.
pub fn launch(script: Script) -> (Launch, Seen) {
    let seen = Seen::default();
    let record = seen.clone();
    let launch: Launch = Arc::new(move |_spec, progress, tail| {
        let (script, seen) = (script.clone(), record.clone());
        Box::pin(async move {
            let start = {
                let mut starts = seen.starts.lock().expect("seen lock");
                *starts += 1;
                *starts
            };
            let crash_after = script.crash.filter(|c| start <= c.starts).map(|c| c.after);
            let (ours, theirs) = tokio::io::duplex(1 << 16);
            let (r, w) = tokio::io::split(ours);
            let (utx, urx) = mpsc::unbounded_channel();
            let client = WorkerClient::start(
                FramedRead::new(r, FrameCodec::<FromWorker, ToWorker>::default()),
                FramedWrite::new(w, FrameCodec::<FromWorker, ToWorker>::default()),
                utx,
            );
            progress(0.5);
            tokio::time::sleep(script.load).await;
            progress(1.0);
            tail.push(format!("fake worker {start} ready"));
            let ready = script.ready.clone();
            let task = tokio::spawn(serve(theirs, script, crash_after, seen));
            Ok(Worker {
                child: Box::new(Fake(task)),
                // No such process: memory is not measured.
                pid: u32::MAX,
                ready,
                client,
                unsolicited: urx,
                stderr_tail: tail,
                _runtime_dir: None,
            })
        })
    });
    (launch, seen)
}

/// The fake's "process": its task, which returns how it ended.
struct Fake(tokio::task::JoinHandle<String>);

impl Process for Fake {
    fn wait(&mut self) -> futures::future::BoxFuture<'_, String> {
        Box::pin(async move { (&mut self.0).await.unwrap_or_else(|_| "signal: 9 (SIGKILL)".into()) })
    }

    fn kill(&mut self) {
        self.0.abort();
    }
}

/// One request being answered: how many pieces it has had.
struct Running {
    sent: u32,
    max: u32,
}

async fn serve(pipe: tokio::io::DuplexStream, script: Script, crash_after: Option<usize>, seen: Seen) -> String {
    let (r, w) = tokio::io::split(pipe);
    let mut reader = FramedRead::new(r, FrameCodec::<ToWorker, FromWorker>::default());
    let mut writer = FramedWrite::new(w, FrameCodec::<ToWorker, FromWorker>::default());
    let mut running: HashMap<RequestId, Running> = HashMap::new();
    let mut order: Vec<RequestId> = vec![];
    let mut pieces_sent = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    loop {
        tokio::select! {
            msg = reader.next() => {
                let Some(Ok(msg)) = msg else { return "exit status: 0".into() };
                seen.messages.lock().expect("seen lock").push(msg.clone());
                match msg {
                    ToWorker::Generate(req) => {
                        let max = req.max_tokens.unwrap_or(u32::MAX);
                        running.insert(req.id, Running { sent: 0, max });
                        order.push(req.id);
                    }
                    ToWorker::Cancel { id } => {
                        if let Some(run) = running.remove(&id) {
                            order.retain(|o| *o != id);
                            let _ = writer.send(done(id, FinishReason::Cancelled, run.sent)).await;
                        }
                    }
                    ToWorker::Shutdown { .. } if running.is_empty() => return "exit status: 0".into(),
                    _ => {}
                }
            }
            _ = tick.tick(), if !order.is_empty() => {
                // One piece for each running request per tick, in arrival order.
                for id in order.clone() {
                    if crash_after == Some(pieces_sent) {
                        return "signal: 6 (SIGABRT)".into();
                    }
                    let run = running.get_mut(&id).expect("running");
                    let k = run.sent as usize;
                    let piece = match script.pieces.get(k) {
                        Some(p) => Some(p.clone()),
                        None if script.endless && !script.pieces.is_empty() => {
                            Some(script.pieces[k % script.pieces.len()].clone())
                        }
                        None => None,
                    };
                    let Some(text) = piece.filter(|_| run.sent < run.max) else {
                        let finish = if run.sent >= run.max { FinishReason::Length } else { FinishReason::Stop };
                        let _ = writer.send(done(id, finish, run.sent)).await;
                        running.remove(&id);
                        order.retain(|o| *o != id);
                        continue;
                    };
                    run.sent += 1;
                    pieces_sent += 1;
                    let _ = writer.send(FromWorker::Tokens { id, text, n_tokens: 1, logprobs: vec![] }).await;
                }
            }
        }
    }
}

fn done(id: RequestId, finish: FinishReason, completion_tokens: u32) -> FromWorker {
    FromWorker::Done(Box::new(DoneInfo {
        id,
        finish,
        usage: Usage { prompt_tokens: 3, completion_tokens, ..Default::default() },
        timings: Timings::default(),
    }))
}
