//! The accept loop, with what keeps idle and trickling sockets from using up the server: a
//! client must send its first byte, then each request's headers, within a timeout (or its
//! connection is closed); HTTP/2 connections are pinged and closed when they stop answering; at
//! most a fixed number of connections are open at once (the next waits in the kernel's
//! backlog), and the process's file limit is raised to what the system allows. Stopping closes
//! the listener, then lets open connections finish their requests.
//!
//! `/health` and `/metrics` always get a connection, however many others are open (a liveness
//! probe that times out restarts the server): [`RESERVE`] connections more are accepted past
//! the limit, and on those only these two paths are served (others get 503 with `Retry-After`
//! and the connection is closed). The reserve is decided on the request's path, after its
//! headers are read, since the connection's permit is taken before any byte is; a separate
//! listener for health would need a second port in every probe, container and unit file.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections accepted past the limit, for `/health` and `/metrics` only.
pub const RESERVE: usize = 16;

/// Whether a path may be served on a reserve connection.
pub fn reserved_path(path: &str) -> bool {
    path == "/health" || path == "/metrics"
}

/// File descriptors kept for everything but client connections (workers' sockets and logs,
/// model files, the watcher).
const RESERVED_FDS: u64 = 256;

/// Limits on client connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Longest a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

/// Raises the soft limit on open files to the hard one; returns the limit now in force.
pub fn raise_file_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    }
}

/// The connection limit that fits `fd_limit` open files.
pub fn fitting_connections(wanted: usize, fd_limit: u64) -> usize {
    let room = fd_limit.saturating_sub(RESERVED_FDS + RESERVE as u64).max(16);
    wanted.min(usize::try_from(room).unwrap_or(usize::MAX)).max(1)
}

/// Serves `app` on `listener` until `stop` completes, then closes the listener and returns
/// once every open connection has finished its requests (bound it with a timeout).
pub async fn serve(listener: TcpListener, app: Router, limits: ConnLimits, stop: impl Future<Output = ()>) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let reserve = Arc::new(Semaphore::new(RESERVE));
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.header_timeout)
        .keep_alive_timeout(limits.header_timeout);
    tokio::pin!(stop);
    loop {
        // A general place if one is free, else a reserve one (health and metrics only).
        let permit = tokio::select! {
            biased;
            p = slots.clone().acquire_owned() => (p.expect("the semaphore is never closed"), false),
            p = reserve.clone().acquire_owned() => (p.expect("the semaphore is never closed"), true),
            _ = &mut stop => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, peer)) => (tcp, peer),
                Err(e) => {
                    // Out of descriptors or a transient error: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        // A place freed while this one waited for its client: take it instead of the reserve.
        let (permit, on_reserve) = match permit {
            (reserved, true) => match slots.clone().try_acquire_owned() {
                Ok(general) => (general, false),
                Err(_) => (reserved, true),
            },
            (general, false) => (general, false),
        };
        // Tokens go out as soon as they are written, not when Nagle's algorithm allows.
        let _ = tcp.set_nodelay(true);
        let (builder, watcher, app) = (builder.clone(), graceful.watcher(), app.clone());
        let first_byte = limits.header_timeout;
        tokio::spawn(async move {
            // The protocol is chosen from the first bytes, before any HTTP timeout applies: a
            // socket that sends nothing is closed here.
            let mut b = [0u8; 1];
            if !matches!(tokio::time::timeout(first_byte, tcp.peek(&mut b)).await, Ok(Ok(n)) if n > 0) {
                drop(permit);
                return;
            }
            // Handlers see the peer's address (the per-client limit counts by it).
            let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let refused = on_reserve && !reserved_path(req.uri().path());
                let mut app = app.clone();
                async move {
                    if refused {
                        return Ok::<_, std::convert::Infallible>(refuse_on_reserve());
                    }
                    // A router clone is a reference count; it is always ready.
                    let mut resp = tower_service::Service::call(&mut app, req).await?;
                    // A reserve connection serves one request, then gives its place back.
                    if on_reserve {
                        resp.headers_mut()
                            .insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
                    }
                    Ok(resp)
                }
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service).into_owned();
            let _ = watcher.watch(conn).await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The answer to any other request on a reserve connection, which it then closes.
fn refuse_on_reserve() -> axum::response::Response {
    use axum::response::IntoResponse;
    let e =
        crate::http::error::ApiError::unavailable("every connection is in use (--max-connections); retry shortly", 1);
    let mut r = e.into_response();
    r.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_fit_the_file_limit() {
        assert_eq!(fitting_connections(4096, 1 << 20), 4096);
        assert_eq!(fitting_connections(4096, 1024), 752);
        assert_eq!(fitting_connections(4096, 100), 16);
    }
}
