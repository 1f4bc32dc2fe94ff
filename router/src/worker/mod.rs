//! The router's side of a worker: spawning the process, the socket handshake, and a client that
//! multiplexes many requests over the one connection.

pub mod client;
pub mod logs;
pub mod spawn;

pub use client::Event;
pub use spawn::{spawn, Worker, WorkerSpec};
