//! The OpenAI-compatible HTTP API.

pub mod access;
mod add;
pub mod admin;
mod call;
pub mod clients;
pub mod completions;
pub mod embeddings;
pub mod error;
mod events;
mod fanout;
pub mod guard;
pub mod json;
mod limits;
mod logs;
pub mod lora;
pub mod models;
pub mod openai;
pub mod page;
pub mod peer;
pub mod pull;
mod respond;
mod route;
mod stream;
#[cfg(test)]
mod tests;
mod tools;
pub mod upstream;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use tower_http::catch_panic::CatchPanicLayer;

use crate::registry::Registry;
use error::ApiError;

/// The whole API. `body_limit` is the largest request body accepted, in bytes; `access` says
/// which key requests need, `guard` which hosts, origins and body types may reach it, and
/// `guard.cors_origins` which origins CORS allows.
pub fn app(
    registry: Arc<Registry>,
    body_limit: usize,
    access: access::Access,
    guard: guard::Guard,
    max_client_requests: usize,
) -> Router {
    let cors_origins = guard.cors_origins.clone();
    let router = Router::new()
        .route("/", get(page::index))
        .route("/page/{file}", get(page::file))
        .route("/health", get(models::health))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::retrieve))
        .route("/v1/chat/completions", post(completions::chat))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/admin/workers", get(admin::workers))
        .route("/admin/events", get(events::events))
        .route("/admin/models", post(add::add))
        .route("/admin/models/{id}/load", post(admin::load))
        .route("/admin/models/{id}/unload", post(admin::unload))
        .route("/admin/models/{id}/logs", get(logs::logs))
        .route("/admin/rescan", post(admin::rescan))
        .route("/admin/peers", get(admin::peers))
        .route("/admin/restart", post(admin::restart))
        .route("/admin/pull", post(pull::pull))
        .route("/metrics", get(admin::metrics))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(clients::ClientLimit::new(max_client_requests, access.api_key.is_some())),
            clients::limit,
        ))
        .layer(axum::middleware::from_fn_with_state(access, access::require_key))
        .layer(axum::middleware::from_fn_with_state(Arc::new(guard), guard::check))
        .layer(CatchPanicLayer::custom(error::panic_response))
        .with_state(registry);
    match access::cors(&cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    }
}
