//! A stand-in for `model-bucket-worker` that misbehaves on purpose, for the supervision tests.
//! It takes the worker's arguments (only `--socket` is used) and reads its behaviour from
//! `EDEN_FAKE_MODE`:
//!
//! - `ok`: loads instantly and streams `max_tokens` words per request;
//! - `crash-on-load`: exits 1 after the handshake, before `Ready`;
//! - `crash-after:N`: streams N words of the first request, then aborts;
//! - `slow-load:MS`: waits MS milliseconds before `Ready`;
//! - `wrong-version`: answers the handshake with another protocol version;
//! - `ignore-shutdown`: like `ok`, but ignores `Shutdown` (it must be killed);
//! - `slow-connect:MS`: waits MS milliseconds before connecting to the router's socket;
//! - `crash-before-token`: aborts when the first request arrives, before any token;
//! - `crash-first-start-before-token`: `crash-before-token` on its first start (counted in
//!   `EDEN_FAKE_LOG`, which it needs), `ok` on later ones;
//! - `grow:MIB`: like `ok`, but once ready it fills MIB mebibytes of memory and holds them (its
//!   resident memory grows past what the router estimated).
//!
//! With `EDEN_FAKE_LOG=FILE` each start appends a line to FILE: `start PID`, the `--gpu-layers`
//! it was given and its `CUDA_VISIBLE_DEVICES` (what reaches a real worker's llama.cpp). With `EDEN_FAKE_MODE_FILE=FILE`
//! the mode is read from FILE at each start instead (a test changes it between starts).

use interprocess::local_socket::{prelude::*, GenericFilePath, Stream};
use model_bucket_shared::protocol::frame::{read_frame, write_frame};
use model_bucket_shared::protocol::*;
use std::io::{BufReader, Write};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let socket = args.iter().position(|a| a == "--socket").map(|i| args[i + 1].clone()).expect("--socket");
    let mode = match std::env::var_os("EDEN_FAKE_MODE_FILE") {
        Some(file) => std::fs::read_to_string(file).expect("fake mode file").trim().to_string(),
        None => std::env::var("EDEN_FAKE_MODE").unwrap_or_else(|_| "ok".into()),
    };
    let mut starts = 0;
    if let Some(log) = std::env::var_os("EDEN_FAKE_LOG") {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("fake log");
        let gpu_layers = args.iter().position(|a| a == "--gpu-layers").map(|i| args[i + 1].as_str()).unwrap_or("-");
        let cuda = std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_else(|_| "-".into());
        writeln!(f, "start {} gpu_layers={gpu_layers} cuda={cuda}", std::process::id()).expect("write fake log");
        starts = std::fs::read_to_string(&log).expect("read fake log").lines().count();
    }
    let mode = match mode.as_str() {
        "crash-first-start-before-token" => {
            assert!(starts > 0, "crash-first-start-before-token counts its starts in EDEN_FAKE_LOG");
            if starts == 1 { "crash-before-token" } else { "ok" }.to_string()
        }
        _ => mode,
    };
    if let Some(ms) = mode.strip_prefix("slow-connect:") {
        std::thread::sleep(Duration::from_millis(ms.parse().expect("ms")));
    }
    let stream = Stream::connect(socket.to_fs_name::<GenericFilePath>().expect("name")).expect("connect");
    let mut r = BufReader::new(&stream);
    let mut w = &stream;
    let (mut buf, mut scratch) = (Vec::new(), Vec::new());
    let mut send = |w: &mut &Stream, m: FromWorker| {
        write_frame(w, &m, &mut scratch).expect("write");
        w.flush().expect("flush");
    };
    match read_frame::<ToWorker>(&mut r, &mut buf) {
        Ok(Some(ToWorker::Hello { .. })) => {}
        other => panic!("expected Hello, got {other:?}"),
    }
    let version = if mode == "wrong-version" { PROTOCOL_VERSION + 1 } else { PROTOCOL_VERSION };
    send(&mut w, FromWorker::HelloAck { version });
    if mode == "crash-on-load" {
        eprintln!("fake worker: failing to load on purpose");
        std::process::exit(1);
    }
    if let Some(ms) = mode.strip_prefix("slow-load:") {
        std::thread::sleep(Duration::from_millis(ms.parse().expect("ms")));
    }
    send(
        &mut w,
        FromWorker::Ready(ReadyInfo {
            load_ms: 1,
            memory_bytes: 1 << 20,
            n_ctx: 4096,
            slots: 4,
            has_chat_template: true,
        }),
    );
    let _held = mode.strip_prefix("grow:").map(|mib| fill(mib.parse().expect("MIB")));
    let crash_after: Option<u32> = mode.strip_prefix("crash-after:").map(|n| n.parse().expect("N"));
    while let Ok(Some(msg)) = read_frame::<ToWorker>(&mut r, &mut buf) {
        match msg {
            ToWorker::Generate(_) if mode == "crash-before-token" => {
                eprintln!("fake worker: crashing on purpose before the first token");
                std::process::abort();
            }
            ToWorker::Generate(req) => {
                let n = req.max_tokens.unwrap_or(8);
                for i in 0..n {
                    if crash_after == Some(i) {
                        eprintln!("fake worker: crashing on purpose after {i} tokens");
                        std::process::abort();
                    }
                    send(
                        &mut w,
                        FromWorker::Tokens { id: req.id, text: "word ".into(), n_tokens: 1, logprobs: vec![] },
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
                send(
                    &mut w,
                    FromWorker::Done(Box::new(DoneInfo {
                        id: req.id,
                        finish: FinishReason::Length,
                        usage: Usage { prompt_tokens: 1, completion_tokens: n, ..Default::default() },
                        timings: Timings::default(),
                    })),
                );
            }
            ToWorker::Shutdown { .. } if mode == "ignore-shutdown" => eprintln!("fake worker: ignoring shutdown"),
            ToWorker::Shutdown { .. } => return,
            _ => {}
        }
    }
}

/// `mib` mebibytes, every page written so that all of them are resident.
fn fill(mib: usize) -> Vec<u8> {
    let mut v = vec![0u8; mib << 20];
    for page in v.chunks_mut(4096) {
        page[0] = 1;
    }
    std::hint::black_box(v)
}
