//! The models-folder watcher: inotify events on `*.gguf` files trigger a rescan once the folder
//! has been quiet for a moment; files still being written are picked up by a later scan. The
//! config file is watched too: a change reloads it as SIGHUP does (a Kubernetes ConfigMap
//! changes by swapping the `..data` link of its folder, which counts).

use notify::{RecursiveMode, Watcher};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

use crate::registry::Registry;

/// Quiet time after the last event before rescanning.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Watches `dir` for the life of the returned watcher (drop it to stop).
pub fn start(dir: &Path, registry: Arc<Registry>) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
        Ok(ev) if ev.paths.iter().any(|p| is_model_file(p)) && !ev.kind.is_access() => {
            let _ = tx.send(());
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "folder watch error"),
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    tokio::spawn(rescan_loop(rx, registry));
    Ok(watcher)
}

/// Watches the config file `path` (through its folder, so that a file replaced by a rename
/// counts) for the life of the returned watcher: a change reloads the config.
pub fn start_config(path: &Path, registry: Arc<Registry>) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            let ours = ev.paths.iter().any(|p| p.file_name().is_some_and(|f| f == name.as_os_str() || f == "..data"));
            if ours && !ev.kind.is_access() {
                let _ = tx.send(());
            }
        }
    })?;
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    watcher.watch(folder, RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
            tracing::info!("config file changed: reloading");
            if let Err(e) = registry.reload().await {
                tracing::error!(error = %e, "reload after a config change failed");
            }
        }
    });
    Ok(watcher)
}

/// Whether an event on `p` can change the catalog (our own index and temp files cannot).
fn is_model_file(p: &Path) -> bool {
    p.extension().is_some_and(|x| x == "gguf")
}

async fn rescan_loop(mut rx: mpsc::UnboundedReceiver<()>, registry: Arc<Registry>) {
    let mut retry: Option<Duration> = None;
    loop {
        // Wait for an event, or for the retry of files that were still being written.
        match retry {
            Some(d) => {
                if let Ok(None) = tokio::time::timeout(d, rx.recv()).await {
                    return;
                }
            }
            None => {
                if rx.recv().await.is_none() {
                    return;
                }
            }
        }
        // Debounce: rescan once the events stop.
        while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
        match registry.rescan(false, crate::registry::SETTLE).await {
            Ok(report) => {
                if !report.added.is_empty() || !report.removed.is_empty() {
                    tracing::info!(added = ?report.added, removed = ?report.removed, "models folder changed");
                }
                retry = (!report.pending.is_empty()).then_some(crate::registry::SETTLE);
            }
            Err(e) => {
                tracing::error!(error = %e, "rescan failed");
                retry = Some(crate::registry::SETTLE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_gguf_events_matter() {
        assert!(super::is_model_file(std::path::Path::new("/m/a.gguf")));
        assert!(!super::is_model_file(std::path::Path::new("/m/.model-bucket-index.json")));
        assert!(!super::is_model_file(std::path::Path::new("/m/a.gguf.part")));
    }
}
