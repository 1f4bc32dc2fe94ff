//! `POST /admin/models` `{"path": "/abs/file.gguf", "id": "optional-custom-id"}`: adds a GGUF
//! file on this machine to the bucket, as `model-bucket add` does, and answers its
//! `/v1/models` entry. The server reads the path with its own rights, so only a caller on
//! loopback, or one that presented the admin key, may ask; the path must be an absolute path
//! to a readable regular GGUF file, and without the admin key one owned by the server's own
//! user (a loopback caller's user cannot be known). A file the catalog then refuses is removed
//! again (see [`crate::add`] for how it is read and placed).

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::{Extension, Json as AxumJson};
use serde::Deserialize;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::add::{place_file, AddError};
use crate::http::error::ApiError;
use crate::http::guard::access::AdminCaller;
use crate::http::json::Json;
use crate::registry::Registry;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    path: PathBuf,
    id: Option<String>,
}

/// Whether the peer is this machine (an IPv4 loopback address may arrive mapped into IPv6).
fn loopback(peer: &SocketAddr) -> bool {
    match peer.ip() {
        std::net::IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        ip => ip.is_loopback(),
    }
}

pub async fn add(
    State(r): State<Arc<Registry>>,
    admin: Option<Extension<AdminCaller>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Json(body): Json<AddBody>,
) -> Result<AxumJson<Value>, ApiError> {
    if admin.is_none() && !peer.is_some_and(|Extension(ConnectInfo(p))| loopback(&p)) {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            code: Some("not_local"),
            ..ApiError::bad_request(
                "adding a file by path is only for callers on this machine, or those with the admin key (--admin-key)",
            )
        });
    }
    let cat = r.catalog();
    let dir = cat.dir.clone();
    let own_only = admin.is_none();
    let placed = tokio::task::spawn_blocking(move || {
        place_file(&dir, &body.path, body.id.as_deref(), &cat, own_only, &mut |_, _| {})
    })
    .await
    .map_err(|e| ApiError::internal(format!("the add task failed: {e}")))?;
    let placed = placed.map_err(|e| match &e {
        AddError::BadId(_) | AddError::IdTaken { .. } => ApiError::bad_param("id", e.to_string()),
        _ if e.is_client_error() => ApiError::bad_param("path", e.to_string()),
        _ => ApiError::internal(e.to_string()),
    })?;
    let (path, sha) = (placed.path, placed.sha256);
    tracing::info!(path = %path.display(), "file added by path");
    r.rescan(false, Duration::ZERO).await.map_err(|e| ApiError::internal(format!("rescan failed: {e:#}")))?;
    let cat = r.catalog();
    let Some(m) = cat.models.iter().find(|m| m.sha256 == sha) else {
        // Nothing is left behind for a file the catalog will not serve.
        let why = cat.skipped.iter().find(|s| s.path == path).map(|s| s.reason.clone()).unwrap_or_default();
        if placed.new {
            let _ = std::fs::remove_file(&path);
            let _ = r.rescan(false, Duration::ZERO).await;
        }
        return Err(ApiError::bad_param("path", format!("the catalog does not take {}: {why}", path.display())));
    };
    Ok(AxumJson(crate::http::openai::models::model_object(&r, m)))
}
