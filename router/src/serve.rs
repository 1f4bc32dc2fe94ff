//! `model-bucket serve`: scan the folder, then answer HTTP until SIGTERM/SIGINT.

use anyhow::{Context, Result};
use axum::serve::ListenerExt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::bucket;
use crate::cli::{BucketArgs, ServeArgs};
use crate::generate_cmd::worker_bin;
use crate::registry::{Defaults, Registry};

pub fn run(b: &BucketArgs, s: ServeArgs) -> Result<()> {
    let (config, dir) = bucket::open(b)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create the models folder {}", dir.display()))?;
    let worker_bin = worker_bin()?;
    anyhow::ensure!(worker_bin.is_file(), "worker binary {} not found (set EDEN_WORKER_BIN)", worker_bin.display());
    let catalog = bucket::scan(&dir, &config)?;
    for m in &catalog.models {
        tracing::info!(id = %m.id, aliases = ?m.aliases, "model");
    }
    for sk in &catalog.skipped {
        tracing::warn!(path = %sk.path.display(), reason = %sk.reason, "skipped");
    }
    let defaults = Defaults {
        worker_bin,
        parallel: s.parallel,
        ctx: s.ctx,
        threads: s.threads,
        load_timeout: Duration::from_secs(s.load_timeout),
        load_wait: Duration::from_secs(s.load_wait),
    };
    let registry = Registry::new(catalog, config, defaults);
    let app = crate::http::app(registry.clone(), s.body_limit);
    let addr = SocketAddr::new(s.host, s.port);
    let grace = Duration::from_secs(s.shutdown_grace);

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?
            // Tokens go out as soon as they are written, not when Nagle's algorithm allows.
            .tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
        tracing::info!(%addr, models = registry.catalog().models.len(), dir = %dir.display(), "listening");
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        let mut stopped = stop_rx.clone();
        let serving = tokio::spawn(async move { server.await });
        let _ = stopped.wait_for(|s| *s).await;
        tracing::info!(grace_secs = grace.as_secs(), "stopping: finishing in-flight requests");
        registry.shutdown_all(grace);
        match tokio::time::timeout(grace + Duration::from_secs(1), serving).await {
            Ok(r) => r.context("server task")?.context("server")?,
            Err(_) => tracing::warn!("in-flight requests did not finish in time"),
        }
        tracing::info!("stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
