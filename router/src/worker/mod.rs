//! The router's side of a worker: spawning the process, the socket handshake, and a client that
//! multiplexes many requests over the one connection.

pub mod client;
#[cfg(test)]
pub mod fake;
pub mod logs;
pub mod process;
pub mod spawn;

pub use client::Event;
pub use spawn::{spawn, SpawnError, Worker, WorkerSpec};

use futures::future::BoxFuture;
use std::sync::Arc;

/// Hears how far a worker's loading has got, 0–1.
pub type Progress = Arc<dyn Fn(f32) + Send + Sync>;

/// Starts a worker for a spec and resolves once it is ready (or could not start), reporting
/// loading progress meanwhile. The registry calls it for every start; [`processes`] is the
/// real one.
/// Its stderr's lines go into the given [`logs::LogTail`].
pub type Launch =
    Arc<dyn Fn(WorkerSpec, Progress, logs::LogTail) -> BoxFuture<'static, Result<Worker, SpawnError>> + Send + Sync>;

/// Launches worker processes ([`spawn`]).
pub fn processes() -> Launch {
    Arc::new(|spec, progress, tail| Box::pin(async move { spawn(&spec, &progress, tail).await }))
}
