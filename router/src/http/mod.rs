//! The HTTP API. Each dialect is a translator in its own folder ([`openai`], [`anthropic`],
//! [`ollama`]) that reads its requests into the one internal [`job`] and writes the job's
//! events back in its own shapes; [`admin`] holds the ops endpoints, [`guard`] what every
//! request passes first, and [`page`] the web page. [`error`] and [`json`] are the error and
//! body reader they share; [`envelope`] puts errors in each dialect's own shape.

pub mod admin;
pub mod anthropic;
pub mod envelope;
pub mod error;
pub mod guard;
pub mod job;
pub mod json;
pub mod ollama;
pub mod openai;
pub mod page;
#[cfg(test)]
mod tests;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use tower_http::catch_panic::CatchPanicLayer;

use crate::registry::Registry;
use error::ApiError;
use guard::{access, clients};
use openai::{completions, embeddings, models};

/// The whole API. `body_limit` is the largest request body accepted, in bytes; `access` says
/// which key requests need, `guard` which hosts, origins and body types may reach it, and
/// `guard.cors_origins` which origins CORS allows; `responses` keeps stored Responses.
pub fn app(
    registry: Arc<Registry>,
    body_limit: usize,
    access: access::Access,
    guard: guard::origin::Guard,
    max_client_requests: usize,
    responses: Arc<openai::responses::store::Store>,
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
        .route("/v1/responses", post(openai::responses::create))
        .route("/v1/responses/{id}", get(openai::responses::retrieve).delete(openai::responses::delete))
        .route("/v1/responses/{id}/cancel", post(openai::responses::cancel))
        .route("/v1/responses/{id}/conversation", get(openai::responses::conversation))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/embed", post(ollama::embed::embed))
        .route("/api/embeddings", post(ollama::embed::embeddings_legacy))
        .route("/api/tags", get(ollama::models::tags))
        .route("/api/ps", get(ollama::models::ps))
        .route("/api/show", post(ollama::models::show))
        .route("/api/version", get(ollama::version))
        .route("/api/pull", post(ollama::pull::pull))
        .route("/admin/workers", get(admin::ops::workers))
        .route("/admin/events", get(admin::events::events))
        .route("/admin/models", post(admin::add))
        .route("/admin/models/{id}/load", post(admin::ops::load))
        .route("/admin/models/{id}/unload", post(admin::ops::unload))
        .route("/admin/models/{id}/logs", get(admin::logs::logs))
        .route("/admin/rescan", post(admin::ops::rescan))
        .route("/admin/peers", get(admin::ops::peers))
        .route("/admin/restart", post(admin::ops::restart))
        .route("/admin/pull", post(admin::pull::pull))
        .route("/metrics", get(admin::ops::metrics))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(clients::Limits::new(max_client_requests, access.api_key.is_some())),
            clients::limit,
        ))
        .layer(axum::middleware::from_fn_with_state(access, access::require_key))
        .layer(axum::middleware::from_fn_with_state(Arc::new(guard), guard::origin::check))
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(axum::middleware::from_fn(envelope::rewrite))
        .layer(axum::Extension(responses))
        .with_state(registry);
    match access::cors(&cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    }
}
