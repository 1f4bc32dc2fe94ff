//! Many requests over one worker connection: a writer task sends frames, a reader task routes
//! each reply to the request it belongs to.

use futures::{SinkExt, StreamExt};
use model_bucket_shared::protocol::frame::{FrameCodec, FrameError, MAX_FRAME_BYTES};
use model_bucket_shared::protocol::{
    DoneInfo, ErrorKind, FromWorker, GenerateRequest, RequestId, ToWorker, TokenLogprob,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};

/// What a request receives, in order: any number of `Tokens`, then exactly one `Done`,
/// `Error` or `Gone`.
#[derive(Debug)]
pub enum Event {
    Tokens {
        text: String,
        /// Generated tokens the text covers (text may lag its tokens: an unfinished character
        /// or a possible stop sequence is held back).
        tokens: u32,
        /// Per generated token, when the request asked for log-probabilities.
        logprobs: Vec<TokenLogprob>,
    },
    Done(Box<DoneInfo>),
    Error {
        kind: ErrorKind,
        message: String,
    },
    /// The connection to the worker is lost (it exited or crashed).
    Gone,
    /// The answer to an embeddings request.
    Embeddings {
        vectors: Vec<Vec<f32>>,
        prompt_tokens: u32,
    },
}

/// Requests waiting for replies; `None` once the connection is gone, so that a request sent
/// after that is answered `Gone` at once instead of waiting forever.
type Pending = Arc<Mutex<Option<HashMap<RequestId, mpsc::UnboundedSender<Event>>>>>;

/// A cheap handle to a worker connection; clone it freely.
#[derive(Clone)]
pub struct WorkerClient {
    tx: mpsc::UnboundedSender<ToWorker>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
}

impl WorkerClient {
    /// Takes over both halves of a connection that has passed the handshake (a worker's socket,
    /// or an in-memory pipe in tests). `unsolicited` receives messages that belong to no
    /// request (worker errors).
    pub fn start<R, W>(
        reader: FramedRead<R, FrameCodec<FromWorker, ToWorker>>,
        writer: FramedWrite<W, FrameCodec<FromWorker, ToWorker>>,
        unsolicited: mpsc::UnboundedSender<FromWorker>,
    ) -> WorkerClient
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        tokio::spawn(write_loop(writer, rx, pending.clone()));
        tokio::spawn(read_loop(reader, pending.clone(), unsolicited));
        WorkerClient { tx, pending, next_id: Arc::new(AtomicU64::new(1)) }
    }

    /// A fresh request ID for this connection.
    pub fn next_id(&self) -> RequestId {
        RequestId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Sends a generation request; its events arrive on the returned channel. When the worker
    /// is gone the channel yields `Gone` at once.
    pub fn generate(&self, req: GenerateRequest) -> mpsc::UnboundedReceiver<Event> {
        self.request(req.id, ToWorker::Generate(Box::new(req)))
    }

    /// Sends a request (`msg`, whose ID is `id`); its events arrive on the returned channel.
    pub fn request(&self, id: RequestId, msg: ToWorker) -> mpsc::UnboundedReceiver<Event> {
        let (etx, erx) = mpsc::unbounded_channel();
        match self.pending.lock().expect("pending lock").as_mut() {
            Some(map) => {
                map.insert(id, etx);
            }
            None => {
                let _ = etx.send(Event::Gone);
                return erx;
            }
        }
        if self.tx.send(msg).is_err() {
            if let Some(etx) = self.pending.lock().expect("pending lock").as_mut().and_then(|m| m.remove(&id)) {
                let _ = etx.send(Event::Gone);
            }
        }
        erx
    }

    /// Asks the worker to stop a request; its channel still gets a final `Done`.
    pub fn cancel(&self, id: RequestId) {
        let _ = self.tx.send(ToWorker::Cancel { id });
    }

    pub fn send(&self, m: ToWorker) -> bool {
        self.tx.send(m).is_ok()
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: FramedWrite<W, FrameCodec<FromWorker, ToWorker>>,
    mut rx: mpsc::UnboundedReceiver<ToWorker>,
    pending: Pending,
) {
    while let Some(m) = rx.recv().await {
        // Batch what is already queued into one flush.
        if !feed(&mut writer, m, &pending).await {
            return;
        }
        while let Ok(m) = rx.try_recv() {
            if !feed(&mut writer, m, &pending).await {
                return;
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
}

/// Queues one message; false when the connection is unusable. A request too large for one
/// frame fails on its own (the codec leaves nothing of it in the buffer).
async fn feed<W: AsyncWrite + Unpin>(
    writer: &mut FramedWrite<W, FrameCodec<FromWorker, ToWorker>>,
    m: ToWorker,
    pending: &Pending,
) -> bool {
    let id = match &m {
        ToWorker::Generate(req) => Some(req.id),
        ToWorker::Embed(req) => Some(req.id),
        _ => None,
    };
    match writer.feed(m).await {
        Ok(()) => true,
        Err(FrameError::TooLarge(len)) => {
            let tx = id.and_then(|id| pending.lock().expect("pending lock").as_mut().and_then(|p| p.remove(&id)));
            if let Some(tx) = tx {
                let message = format!(
                    "the request is {len} bytes once encoded for the worker, more than one message may hold ({MAX_FRAME_BYTES} bytes)"
                );
                let _ = tx.send(Event::Error { kind: ErrorKind::BadRequest, message });
            }
            true
        }
        Err(_) => false,
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut reader: FramedRead<R, FrameCodec<FromWorker, ToWorker>>,
    pending: Pending,
    unsolicited: mpsc::UnboundedSender<FromWorker>,
) {
    while let Some(msg) = reader.next().await {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "bad frame from worker");
                break;
            }
        };
        let (id, event, last) = match msg {
            FromWorker::Tokens { id, text, n_tokens, logprobs } => {
                (id, Event::Tokens { text, tokens: n_tokens, logprobs }, false)
            }
            FromWorker::Done(d) => (d.id, Event::Done(d), true),
            FromWorker::Embeddings { id, vectors, prompt_tokens } => {
                (id, Event::Embeddings { vectors, prompt_tokens }, true)
            }
            FromWorker::Error { id: Some(id), kind, message } => (id, Event::Error { kind, message }, true),
            other => {
                let _ = unsolicited.send(other);
                continue;
            }
        };
        let mut guard = pending.lock().expect("pending lock");
        let Some(map) = guard.as_mut() else { break };
        let delivered = map.get(&id).is_some_and(|tx| tx.send(event).is_ok());
        if last || !delivered {
            map.remove(&id);
        }
    }
    // The worker is gone: every request still waiting, and every later one, gets `Gone`.
    for (_, tx) in pending.lock().expect("pending lock").take().into_iter().flatten() {
        let _ = tx.send(Event::Gone);
    }
}
