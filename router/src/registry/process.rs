//! One worker process from spawn to exit: reports to the supervisor that it loaded (or could
//! not), that its connection was lost, and how it ended; kills it when told to.

use model_bucket_shared::protocol::FromWorker;
use model_bucket_shared::ModelId;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Notify;

use super::driver::Msg;
use super::live::Live;
use crate::supervisor::machine::{Gen, Input};
use crate::worker::logs::LogTail;
use crate::worker::{Launch, WorkerSpec};

/// Time the log follower gets to catch a failed worker's last lines before they go into the
/// exit reason.
const LAST_WORDS: Duration = Duration::from_millis(50);

/// Time a worker whose connection closed gets to exit by itself (one that finished draining
/// closes its end just before it exits) before the loss is reported.
const EXIT_AFTER_CLOSE: Duration = Duration::from_millis(300);

/// Runs worker `gen` of `model` until it exits. `kill` ends it at once once it is up.
pub(super) async fn run(
    launch: Launch,
    model: ModelId,
    gen: Gen,
    spec: WorkerSpec,
    facts: UnboundedSender<Msg>,
    kill: Arc<Notify>,
    tail: LogTail,
) {
    let tell = |input: Input| {
        let _ = facts.send(Msg::Fact(input));
    };
    let gpus = spec.gpus.clone();
    let lora = spec.lora.clone();
    let progress: crate::worker::Progress = {
        let (facts, model) = (facts.clone(), model.clone());
        Arc::new(move |progress| {
            let _ = facts.send(Msg::Progress { model: model.clone(), gen, progress });
        })
    };
    let mut w = match launch(spec, progress, tail.clone()).await {
        Ok(w) => w,
        Err(e) => {
            // Followers of the log learn why it ends (a missing binary writes no stderr).
            tail.fail(format!("the worker did not start: {e}"));
            tracing::error!(model = %model, error = %e, "worker failed to start");
            tell(Input::StartFailed { model, gen, reason: e.to_string() });
            return;
        }
    };
    let live = Arc::new(Live::new(model.clone(), gen, &w, gpus, lora, facts.clone()));
    let _ = facts.send(Msg::Up(live));
    let mut connected = true;
    let status = loop {
        tokio::select! {
            msg = w.unsolicited.recv(), if connected => match msg {
                Some(FromWorker::Held { cache_bytes, embed_bytes }) => {
                    // What it dropped is measured, not taken on its word.
                    let rss = model_bucket_shared::mem::rss_bytes(Some(w.pid));
                    tell(Input::Held { model: model.clone(), gen, cache: cache_bytes, embed: embed_bytes, rss });
                }
                Some(msg) => tracing::warn!(model = %model, ?msg, "worker message"),
                // The connection is gone but perhaps not the process (a frame the router could
                // not read): the supervisor decides what follows.
                None => {
                    connected = false;
                    if let Ok(status) = tokio::time::timeout(EXIT_AFTER_CLOSE, w.child.wait()).await {
                        break status;
                    }
                    tracing::error!(model = %model, pid = w.pid, "lost the connection to the worker");
                    tell(Input::ConnectionLost { model: model.clone(), gen });
                }
            },
            status = w.child.wait() => break status,
            () = kill.notified() => w.child.kill(),
        }
    };
    // A worker that exited cleanly (it drained) has no last words worth its successor's wait.
    if status != "exit status: 0" {
        tokio::time::sleep(LAST_WORDS).await;
    }
    let reason = format!("worker exited ({status}); last log: {}", w.stderr_tail.last(3));
    tracing::info!(model = %model, pid = w.pid, %status, "worker process ended");
    tell(Input::Exited { model, gen, reason });
}
