//! `model-bucket serve`: scan the folder, then answer HTTP until SIGTERM/SIGINT.
//!
//! Signals: SIGHUP reloads the config and rescans; SIGUSR1 restarts every worker, one at a
//! time; SIGTERM/SIGINT stop accepting, let in-flight requests finish within the grace, stop the
//! workers and exit 0; a second SIGTERM/SIGINT exits at once. The handlers are in place before
//! the first scan: a signal during it is never the default action (which for SIGHUP and SIGUSR1
//! would end the process), and SIGTERM/SIGINT then stop without serving.

use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

use crate::bucket;
use crate::cli::{BucketArgs, ServeArgs};
use crate::generate_cmd::worker_bin;
use crate::listen;
use crate::registry::{Defaults, Limits, Registry};
use crate::supervisor::budget;

/// The disk cache of prompt prefixes: its folder and limit, or none when the limit is 0.
fn kv_cache(s: &ServeArgs) -> Result<Option<(std::path::PathBuf, u64)>> {
    let max = budget::parse_size_or_zero(&s.kv_cache_max).map_err(anyhow::Error::msg).context("--kv-cache-max")?;
    if max == 0 {
        return Ok(None);
    }
    let dir = match &s.kv_cache_dir {
        Some(d) => d.clone(),
        None => match dirs::cache_dir() {
            Some(c) => c.join("model-bucket").join("kv"),
            None => {
                tracing::warn!("no cache folder (no HOME): prompt prefixes are not kept between workers");
                return Ok(None);
            }
        },
    };
    tracing::info!(dir = %dir.display(), max = %budget::human(max), "prompt prefixes kept on disk");
    Ok(Some((dir, max)))
}

/// When a crashed worker is restarted, and when its model is failed instead.
fn restart_policy(s: &ServeArgs) -> crate::supervisor::lifecycle::Policy {
    crate::supervisor::lifecycle::Policy {
        max_crashes: s.crash_limit as usize,
        window: Duration::from_secs(s.crash_window),
        ..Default::default()
    }
}

/// Where stored Responses are kept (see [`crate::http::openai::responses::store`]).
fn responses_store(s: &ServeArgs) -> Result<crate::http::openai::responses::store::Store> {
    use crate::http::openai::responses::store::{Limits, Store, MEMORY_BYTES, TTL};
    let max = budget::parse_size_or_zero(&s.responses_max).map_err(anyhow::Error::msg).context("--responses-max")?;
    let dir = match (&s.responses_dir, max) {
        (_, 0) => None,
        (Some(d), _) => Some(d.clone()),
        (None, _) => dirs::cache_dir().map(|c| c.join("model-bucket").join("responses")),
    };
    let dir = match dir.map(|d| (crate::http::openai::responses::store::check_dir(&d), d)) {
        Some((Err(e), _)) if s.responses_dir.is_some() => {
            return Err(anyhow::Error::msg(e)).context("--responses-dir: stored conversations need a private folder")
        }
        Some((Err(e), _)) => {
            tracing::warn!(error = %e, "stored responses kept in memory only: the default folder is not private");
            None
        }
        Some((Ok(()), d)) => Some(d),
        None => None,
    };
    let store = Store::new(Limits { dir, memory: MEMORY_BYTES, disk: max, ttl: TTL });
    match &store.limits().dir {
        Some(d) => tracing::info!(dir = %d.display(), max = %budget::human(max), "stored responses kept on disk"),
        None => tracing::info!("stored responses kept in memory only"),
    }
    Ok(store)
}

/// The process's signal streams, created (and so handled) from the start.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("SIGHUP handler")?,
            usr1: signal(SignalKind::user_defined1()).context("SIGUSR1 handler")?,
        })
    }
}

/// Waits for SIGTERM or SIGINT.
async fn stop_signal(term: &mut tokio::signal::unix::Signal, int: &mut tokio::signal::unix::Signal) {
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

pub fn run(b: &BucketArgs, s: ServeArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut signals = rt.block_on(async { Signals::install() })?;
    let (config, dir) = bucket::open(b)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create the models folder {}", dir.display()))?;
    let worker_bin = worker_bin()?;
    anyhow::ensure!(worker_bin.is_file(), "worker binary {} not found (set EDEN_WORKER_BIN)", worker_bin.display());
    tracing::info!(dir = %dir.display(), "scanning the models folder");
    let scan = {
        let (dir, config) = (dir.clone(), config.clone());
        rt.spawn_blocking(move || bucket::scan(&dir, &config))
    };
    let scanned = rt.block_on(async {
        tokio::select! {
            r = scan => Some(r),
            _ = stop_signal(&mut signals.term, &mut signals.int) => None,
        }
    });
    let Some(scanned) = scanned else {
        tracing::info!("stopped during the first scan");
        // Dropping the runtime would wait for the scan (minutes of hashing, maybe).
        rt.shutdown_background();
        return Ok(());
    };
    let catalog = scanned.context("scan task")??;
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
        max_queue: s.max_queue,
        max_sampling: Duration::from_secs(s.max_sampling_seconds),
        prompt_cache: match &s.prompt_cache {
            Some(text) => Some(budget::parse_size_or_zero(text).map_err(anyhow::Error::msg).context("--prompt-cache")?),
            None => None,
        },
        kv_cache: kv_cache(&s)?,
    };
    let ram_budget = match &s.ram_budget {
        Some(text) => budget::parse_size(text).map_err(anyhow::Error::msg).context("--ram-budget")?,
        None => budget::default_budget(model_bucket_shared::mem::total_memory().unwrap_or(8 << 30)),
    };
    anyhow::ensure!(
        s.quantum.saturating_mul(2) < s.queue_timeout,
        "--quantum ({} s) must be under half of --queue-timeout ({} s): a turn would outlast the requests waiting for it",
        s.quantum,
        s.queue_timeout
    );
    let grace = Duration::from_secs(s.shutdown_grace);
    let limits = Limits {
        ram_budget,
        idle_ttl: (s.idle_ttl > 0).then(|| Duration::from_secs(s.idle_ttl)),
        queue_timeout: Duration::from_secs(s.queue_timeout),
        sched: s.sched,
        quantum: Duration::from_secs(s.quantum),
        drain_grace: grace,
        policy: restart_policy(&s),
    };
    tracing::info!(ram_budget = %budget::human(ram_budget), idle_ttl_secs = s.idle_ttl, "limits");
    let api_key = api_key(&s)?;
    if !s.host.is_loopback() && api_key.is_none() && !s.insecure_no_key {
        anyhow::bail!(
            "refusing to listen on {} without an API key: anyone who can reach this machine could use it. Set --api-key (or EDEN_API_KEY / --api-key-file), or pass --insecure-no-key",
            s.host
        );
    }
    let admin_key = s.admin_key.as_deref().map(str::trim).filter(|k| !k.is_empty()).map(Into::into);
    let fleet = fleet_config(&s, &config)?;
    // Peers that present their own key (not the clients') are let in for peer traffic.
    let peer_key = fleet.as_ref().and_then(|f| f.key.clone()).filter(|k| api_key.as_deref() != Some(k.as_str()));
    let access = crate::http::guard::access::Access {
        api_key: api_key.map(Into::into),
        admin_key,
        peer_key: peer_key.map(Into::into),
    };
    let registry = {
        // Its supervisor runs as a task on this runtime.
        let _rt = rt.enter();
        let r = Registry::new(catalog, config, b.config.clone(), defaults, limits);
        r.load_pinned();
        r
    };
    let guard = crate::http::guard::origin::Guard {
        loopback: s.host.is_loopback(),
        allowed_hosts: s.allowed_hosts.iter().map(|h| h.trim().to_ascii_lowercase()).collect(),
        cors_origins: s.cors_origins.clone(),
    };
    let config_path = b.config.clone();
    let responses = std::sync::Arc::new(responses_store(&s)?);
    let app = crate::http::app(registry.clone(), s.body_limit, access, guard, s.max_client_requests, responses)
        .layer(axum::Extension(crate::http::json::BodyTimeout(Duration::from_secs(s.body_timeout))));
    let app = match &fleet {
        Some(cfg) => {
            let f = crate::fleet::Fleet::new(cfg.clone());
            tracing::info!(peers = ?cfg.peers, dns = ?cfg.dns, node = %f.node_id, "peers");
            let _rt = rt.enter();
            tokio::spawn(crate::fleet::poll::run(f.clone()));
            app.layer(axum::Extension(f))
        }
        None => app,
    };
    let addr = SocketAddr::new(s.host, s.port);

    let fd_limit = listen::raise_file_limit();
    let conn_limits = listen::ConnLimits {
        header_timeout: Duration::from_secs(s.header_timeout.max(1)),
        max_connections: listen::fitting_connections(s.max_connections, fd_limit),
    };
    tracing::info!(
        fd_limit,
        max_connections = conn_limits.max_connections,
        header_timeout_secs = s.header_timeout,
        "connections"
    );
    rt.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        // The same API where Ollama's clients look for it, when asked.
        let ollama = match s.ollama_port {
            Some(port) => {
                let at = SocketAddr::new(s.host, port);
                let l = tokio::net::TcpListener::bind(at).await.with_context(|| format!("--ollama-port: cannot listen on {at}"))?;
                tracing::info!(addr = %at, "listening for Ollama clients too");
                Some(l)
            }
            None => None,
        };
        tracing::info!(%addr, models = registry.catalog().models.len(), dir = %dir.display(), "listening");
        tokio::spawn(registry.clone().housekeeping());
        let _watcher = if s.no_watch {
            None
        } else {
            match crate::watch::start(&dir, registry.clone()) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the models folder; POST /admin/rescan or SIGHUP pick up changes");
                    None
                }
            }
        };
        // A config file that changes is reloaded as SIGHUP reloads it.
        let _config_watcher = match (&config_path, s.no_watch) {
            (Some(path), false) => crate::watch::start_config(path, registry.clone())
                .map_err(|e| tracing::warn!(error = %e, "cannot watch the config file; SIGHUP reloads it"))
                .ok(),
            _ => None,
        };
        let Signals { mut term, mut int, hup, usr1 } = signals;
        tokio::spawn(ops_signals(registry.clone(), hup, usr1));
        // Under systemd (`Type=notify`): the socket is bound, requests are served from now on.
        notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("serving")]);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stop = async move {
            let _ = stop_rx.clone().wait_for(|s| *s).await;
        };
        let ollama_serving = ollama.map(|l| {
            let mut rx = stop_tx.subscribe();
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            tokio::spawn(listen::serve(l, app.clone(), conn_limits, stop))
        });
        let serving = tokio::spawn(listen::serve(listener, app, conn_limits, stop));
        stop_signal(&mut term, &mut int).await;
        let _ = stop_tx.send(true);
        // A second signal means now.
        tokio::spawn(async move {
            stop_signal(&mut term, &mut int).await;
            tracing::warn!("second stop signal: exiting now");
            std::process::exit(130);
        });
        tracing::info!(grace_secs = grace.as_secs(), "stopping: finishing in-flight requests");
        notify(&[sd_notify::NotifyState::Stopping]);
        registry.shutdown_all();
        // Both listeners' requests get the same grace.
        let both = async move {
            let main = serving.await;
            if let Some(h) = ollama_serving {
                h.await.context("the Ollama port's server task")?;
            }
            main.context("server task")
        };
        match tokio::time::timeout(grace + Duration::from_secs(1), both).await {
            Ok(r) => r?,
            Err(_) => tracing::warn!("in-flight requests did not finish in time"),
        }
        // Workers write their prompt prefixes to disk as they exit: give them the time to.
        if tokio::time::timeout(WORKERS_EXIT, registry.workers_gone()).await.is_err() {
            tracing::warn!("workers did not exit in time");
        }
        tracing::info!("stopped");
        Ok(())
    })
}

/// How long the router waits for its workers to exit once its requests are done.
const WORKERS_EXIT: Duration = Duration::from_secs(5);

/// Tells systemd about a state change; does nothing when not started by systemd.
fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// The API key from `--api-key` or the first line of `--api-key-file`; an empty key is none.
fn api_key(s: &ServeArgs) -> Result<Option<String>> {
    let key = match (&s.api_key, &s.api_key_file) {
        (Some(k), _) => Some(k.trim().to_string()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the API key file {}", path.display()))?;
            Some(text.lines().next().unwrap_or("").trim().to_string())
        }
        (None, None) => None,
    };
    // deploy/k8s/secret.yaml's placeholder: a fleet deployed with it would be open to anyone.
    anyhow::ensure!(
        key.as_deref() != Some("change-me"),
        "the API key is the placeholder `change-me` of deploy/k8s/secret.yaml: set a real one"
    );
    Ok(key.filter(|k| !k.is_empty()))
}

/// SIGHUP: reload the config and rescan. SIGUSR1: rolling restart of the workers.
async fn ops_signals(
    registry: Arc<Registry>,
    mut hup: tokio::signal::unix::Signal,
    mut usr1: tokio::signal::unix::Signal,
) {
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading config and rescanning");
                notify(&[sd_notify::NotifyState::Reloading]);
                match registry.reload().await {
                    Ok(r) => tracing::info!(models = r.models, added = ?r.added, removed = ?r.removed, "reloaded"),
                    Err(e) => tracing::error!(error = %e, "reload failed"),
                }
                notify(&[sd_notify::NotifyState::Ready]);
            }
            _ = usr1.recv() => {
                tracing::info!("SIGUSR1: restarting workers one at a time");
                let r = registry.clone();
                tokio::spawn(async move { r.restart_all().await });
            }
        }
    }
}

/// The peers from the flags and the config; none when neither names any.
fn fleet_config(s: &ServeArgs, config: &model_bucket_shared::Config) -> Result<Option<crate::fleet::FleetConfig>> {
    let mut peers = config.peers.clone();
    for p in &s.peers {
        anyhow::ensure!(
            p.starts_with("http://") || p.starts_with("https://"),
            "--peer {p:?} must start with http:// or https://"
        );
        if !peers.contains(p) {
            peers.push(p.clone());
        }
    }
    let key = match &config.peer_api_key_env {
        Some(var) => match std::env::var(var) {
            Ok(k) if !k.trim().is_empty() => Some(k.trim().to_string()),
            _ => anyhow::bail!("peer_api_key_env names {var}, which is not set"),
        },
        None => None,
    };
    let dns = s.peers_dns.clone().or_else(|| config.peers_dns.clone());
    if let Some(d) = &dns {
        anyhow::ensure!(
            d.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()),
            "peers DNS name {d:?} must be NAME:PORT"
        );
    }
    let cfg = crate::fleet::FleetConfig {
        peers,
        dns,
        dns_server: s.peers_dns_server,
        key,
        interval: Duration::from_millis(s.peer_poll_ms),
    };
    Ok(crate::fleet::Fleet::configured(&cfg).then_some(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn serve_args(extra: &[&str]) -> ServeArgs {
        let args = ["model-bucket", "serve"].iter().chain(extra).copied();
        match crate::cli::Cli::try_parse_from(args).expect("valid flags").command {
            crate::cli::Command::Serve { serve, .. } => serve,
            _ => unreachable!("parsed as serve"),
        }
    }

    /// "Five crashes within two minutes (`--crash-limit`, `--crash-window`) ... mark the model
    /// `failed`": five within 120 s fail it, five spread over more do not.
    #[test]
    fn by_default_five_crashes_within_two_minutes_fail_a_model() {
        use crate::supervisor::lifecycle::{Event, Lifecycle, Phase};
        let p = restart_policy(&serve_args(&[]));
        let crashes = |gap: Duration| {
            let (mut l, t) = (Lifecycle::default(), std::time::Instant::now());
            l.step(Event::Demand, t, &p);
            l.step(Event::Ready, t, &p);
            for i in 0..5 {
                let now = t + gap * i;
                l.step(Event::Exited("signal 9".into()), now, &p);
                l.step(Event::RetryDue, now, &p);
                l.step(Event::Ready, now, &p);
            }
            l.phase
        };
        // The fifth crash 119.6 s after the first: failed.
        assert!(matches!(crashes(Duration::from_millis(29_900)), Phase::Failed(r) if r.contains("crashed 5 times")));
        // The fifth 120.4 s after the first: the first has left the window.
        assert_eq!(crashes(Duration::from_millis(30_100)), Phase::Ready);
        let p = restart_policy(&serve_args(&["--crash-limit", "2", "--crash-window", "10"]));
        assert_eq!((p.max_crashes, p.window), (2, Duration::from_secs(10)));
    }

    #[test]
    fn stored_responses_default_to_a_gib_on_disk_64_mib_in_memory_and_30_days() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r");
        let store = responses_store(&serve_args(&["--responses-dir", dir.to_str().unwrap()])).unwrap();
        let l = store.limits();
        assert_eq!((l.disk, l.memory, l.ttl), (1 << 30, 64 << 20, Duration::from_secs(30 * 24 * 3600)));
        assert_eq!(l.dir.as_deref(), Some(dir.as_path()));
        // A folder others may read is refused when named.
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        assert!(responses_store(&serve_args(&["--responses-dir", dir.to_str().unwrap()])).is_err());
        let memory_only = responses_store(&serve_args(&["--responses-max", "0"])).unwrap();
        assert!(memory_only.limits().dir.is_none());
        let small = responses_store(&serve_args(&["--responses-max", "512MiB"])).unwrap();
        assert_eq!(small.limits().disk, 512 << 20);
        if std::env::var_os("EDEN_RESPONSES_DIR").is_none() {
            // The default folder, or memory only when it is not private: never a refusal.
            let default = responses_store(&serve_args(&[])).unwrap();
            assert!(default.limits().dir.as_ref().is_none_or(|d| d.ends_with("model-bucket/responses")));
        }
    }
}
