//! The worker's side of the socket: the handshake, a reader thread that turns frames into
//! engine commands, and a writer thread that sends results, coalescing token deltas.

use interprocess::local_socket::Stream;
use model_bucket_shared::protocol::frame::{read_frame, write_frame, FrameError, SharedStream, MAX_FRAME_BYTES};
use model_bucket_shared::protocol::{ErrorKind, FromWorker, RequestId, ToWorker, PROTOCOL_VERSION};
use std::io::{BufReader, BufWriter, Write};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use crate::engine::Command;

/// One end of the socket, shared by the reader and the writer thread.
pub type Half = SharedStream<Stream>;

/// Why the handshake failed.
#[derive(Debug)]
pub enum HandshakeError {
    /// The peer speaks another protocol version (or did not start with Hello).
    Mismatch(String),
    Frame(FrameError),
}

/// Reads the router's Hello and answers HelloAck, or an error naming both versions.
pub fn handshake(stream: Stream) -> Result<(BufReader<Half>, BufWriter<Half>), HandshakeError> {
    let stream = Arc::new(stream);
    let mut reader = BufReader::new(SharedStream(stream.clone()));
    let mut writer = BufWriter::new(SharedStream(stream));
    let mut buf = Vec::new();
    let reply = |w: &mut BufWriter<Half>, m: FromWorker| {
        let mut scratch = Vec::new();
        write_frame(w, &m, &mut scratch).and_then(|_| w.flush().map_err(FrameError::from))
    };
    match read_frame::<ToWorker>(&mut reader, &mut buf) {
        Ok(Some(ToWorker::Hello { version })) if version == PROTOCOL_VERSION => {
            reply(&mut writer, FromWorker::HelloAck { version: PROTOCOL_VERSION }).map_err(HandshakeError::Frame)?;
            Ok((reader, writer))
        }
        Ok(Some(ToWorker::Hello { version })) => {
            let message =
                format!("protocol mismatch: router speaks version {version}, worker speaks {PROTOCOL_VERSION}");
            let _ = reply(
                &mut writer,
                FromWorker::Error { id: None, kind: ErrorKind::ProtocolMismatch, message: message.clone() },
            );
            Err(HandshakeError::Mismatch(message))
        }
        Ok(Some(other)) => {
            let message = format!("protocol error: expected Hello first, got {other:?}");
            let _ = reply(
                &mut writer,
                FromWorker::Error { id: None, kind: ErrorKind::ProtocolMismatch, message: message.clone() },
            );
            Err(HandshakeError::Mismatch(message))
        }
        Ok(None) => Err(HandshakeError::Frame(FrameError::Truncated)),
        Err(e @ (FrameError::Decode(_) | FrameError::TooLarge(_))) => {
            let message = format!("protocol mismatch: the first frame is not a Hello this worker understands ({e})");
            let _ = reply(
                &mut writer,
                FromWorker::Error { id: None, kind: ErrorKind::ProtocolMismatch, message: message.clone() },
            );
            Err(HandshakeError::Mismatch(message))
        }
        Err(e) => Err(HandshakeError::Frame(e)),
    }
}

/// Forwards frames to the engine until the socket closes. A frame that cannot be decoded is
/// reported and ends the connection (the stream position is lost). Shutdown is sent to the
/// engine on the way out, so a vanished router stops the worker.
pub fn spawn_reader(mut reader: BufReader<Half>, cmds: Sender<Command>) {
    std::thread::Builder::new()
        .name("socket-reader".into())
        .spawn(move || {
            let mut buf = Vec::new();
            loop {
                let cmd = match read_frame::<ToWorker>(&mut reader, &mut buf) {
                    Ok(Some(ToWorker::Generate(req))) => Command::Generate(req),
                    Ok(Some(ToWorker::Cancel { id })) => Command::Cancel(id),
                    Ok(Some(ToWorker::Embed(req))) => Command::Embed(req),
                    Ok(Some(ToWorker::Allow { bytes, embed_bytes })) => Command::Allow { bytes, embed_bytes },
                    Ok(Some(ToWorker::Shutdown { grace_ms })) => {
                        Command::Shutdown { grace: Duration::from_millis(grace_ms) }
                    }
                    Ok(Some(ToWorker::Hello { .. })) => continue,
                    Ok(None) => {
                        tracing::info!("router closed the connection");
                        break;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "bad frame from the router; closing");
                        let _ = cmds.send(Command::BadFrame(e.to_string()));
                        return;
                    }
                };
                if cmds.send(cmd).is_err() {
                    return;
                }
            }
            let _ = cmds.send(Command::Shutdown { grace: Duration::ZERO });
        })
        .expect("spawn reader thread");
}

/// Merged token messages stop growing past this much text, in bytes...
const MERGE_BYTES: usize = 1 << 20;
/// ... or this many log-probabilities.
const MERGE_LOGPROBS: usize = 4096;

/// The request a message answers, if any.
fn request_of(m: &FromWorker) -> Option<RequestId> {
    match m {
        FromWorker::Tokens { id, .. } | FromWorker::Embeddings { id, .. } => Some(*id),
        FromWorker::Done(d) => Some(d.id),
        FromWorker::Error { id, .. } => *id,
        _ => None,
    }
}

/// Sends every message from `rx` until all senders are gone. Consecutive token deltas of one
/// request that are already waiting travel as one message; the socket is flushed whenever the
/// queue runs dry.
pub fn spawn_writer(mut writer: BufWriter<Half>, rx: Receiver<FromWorker>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("socket-writer".into())
        .spawn(move || {
            let mut scratch = Vec::with_capacity(4096);
            let mut next = rx.recv().ok();
            while let Some(mut msg) = next.take() {
                // Coalesce what is already queued.
                loop {
                    match rx.try_recv() {
                        Ok(FromWorker::Tokens { id, text, n_tokens, mut logprobs }) => match &mut msg {
                            FromWorker::Tokens { id: cur, text: t, n_tokens: n, logprobs: l }
                                if *cur == id && t.len() < MERGE_BYTES && l.len() < MERGE_LOGPROBS =>
                            {
                                t.push_str(&text);
                                *n += n_tokens;
                                l.append(&mut logprobs);
                            }
                            _ => {
                                next = Some(FromWorker::Tokens { id, text, n_tokens, logprobs });
                                break;
                            }
                        },
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                match write_frame(&mut writer, &msg, &mut scratch) {
                    Ok(()) => {}
                    // Too large for one frame: that request fails, the connection goes on.
                    Err(FrameError::TooLarge(len)) => {
                        tracing::warn!(len, "a message is too large for one frame");
                        if let Some(id) = request_of(&msg) {
                            let message = format!(
                                "the answer is {len} bytes, more than one message between worker and router may hold ({MAX_FRAME_BYTES} bytes); ask for less (fewer inputs, fewer tokens, or stream)"
                            );
                            let e = FromWorker::Error { id: Some(id), kind: ErrorKind::BadRequest, message };
                            if write_frame(&mut writer, &e, &mut scratch).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot write to the router");
                        return;
                    }
                }
                if next.is_none() {
                    if writer.flush().is_err() {
                        return;
                    }
                    next = rx.recv().ok();
                }
            }
            let _ = writer.flush();
        })
        .expect("spawn writer thread")
}
