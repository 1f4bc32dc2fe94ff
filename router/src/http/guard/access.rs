//! Access control: the optional API key, the optional admin key, and CORS.
//!
//! With a key set, every endpoint but `/health` and the page's files wants `Authorization: Bearer KEY` (what OpenAI
//! clients send) or `x-api-key: KEY`; the comparison takes the same time whatever the key
//! guessed. With an admin key set, `/admin/*` wants that key instead (the API key does not open
//! it). CORS preflights are answered before the key is checked.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::http::error::ApiError;

/// The key requests must carry, if any.
#[derive(Clone, Default)]
pub struct Access {
    pub api_key: Option<Arc<str>>,
    /// The key `/admin/*` wants, when set.
    pub admin_key: Option<Arc<str>>,
    /// The key peers present (`peer_api_key_env`) when it is not the API key: it opens what
    /// peer traffic needs (requests marked as a peer's, outside `/admin/`), nothing else.
    pub peer_key: Option<Arc<str>>,
}

impl Access {
    /// The key a request to `path` needs, if any.
    fn key_for(&self, path: &str) -> Option<&str> {
        if path == "/health" || crate::http::page::is_page(path) {
            return None;
        }
        // Ollama's pull is the admin pull by another name.
        if path.starts_with("/admin/") || path == "/admin" || path == "/api/pull" {
            if let Some(k) = &self.admin_key {
                return Some(k);
            }
        }
        self.api_key.as_deref()
    }
}

/// Marks a request that presented the admin key (set only when one is configured).
#[derive(Debug, Clone, Copy)]
pub struct AdminCaller;

/// Marks a request that may do what `/admin/*` does outside `/admin/`: no admin key is
/// configured (then whoever passed the API key could call `/admin/*` anyway), and it is no
/// peer's.
#[derive(Debug, Clone, Copy)]
pub struct MayAdminister;

/// Marks a request whose key was checked, with which key it was (`"api"` or `"admin"`): the
/// client it counts as, however the header spelled the key.
#[derive(Debug, Clone, Copy)]
pub struct KeyHolder(pub &'static str);

/// The key a request carries, from `Authorization: Bearer` or `x-api-key`.
fn presented(h: &HeaderMap) -> Option<&[u8]> {
    if let Some(v) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ") {
            return Some(v[7..].trim().as_bytes());
        }
    }
    h.get("x-api-key").map(|v| v.as_bytes())
}

/// Whether `given` is `key`, in time independent of where they differ.
pub fn key_matches(given: &[u8], key: &[u8]) -> bool {
    given.ct_eq(key).into()
}

pub async fn require_key(State(access): State<Access>, mut req: Request, next: Next) -> Response {
    if access.admin_key.is_none() && !req.headers().contains_key(crate::fleet::HOP) {
        req.extensions_mut().insert(MayAdminister);
    }
    let Some(key) = access.key_for(req.uri().path()) else { return next.run(req).await };
    if req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    let path = req.uri().path();
    let from_peer = req.headers().contains_key(crate::fleet::HOP) && !path.starts_with("/admin") && path != "/api/pull";
    let peer_key = access.peer_key.as_deref().filter(|_| from_peer);
    match presented(req.headers()) {
        Some(given) if peer_key.is_some_and(|k| key_matches(given, k.as_bytes())) => {
            req.extensions_mut().insert(KeyHolder("peer"));
            next.run(req).await
        }
        Some(given) if key_matches(given, key.as_bytes()) => {
            if access.admin_key.as_deref() == Some(key) {
                req.extensions_mut().insert(AdminCaller);
                req.extensions_mut().insert(KeyHolder("admin"));
            } else {
                req.extensions_mut().insert(KeyHolder("api"));
            }
            next.run(req).await
        }
        Some(_) => ApiError::unauthorized("Incorrect API key provided.").into_response(),
        None => ApiError::unauthorized(
            "Missing API key: send it as `Authorization: Bearer KEY` (the api_key of OpenAI clients).",
        )
        .into_response(),
    }
}

/// CORS for `origins` (`*` allows any); `None` when none are configured.
pub fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new().allow_methods([Method::GET, Method::POST, Method::OPTIONS]).allow_headers([
        header::AUTHORIZATION,
        header::CONTENT_TYPE,
        "x-api-key".parse().expect("header name"),
        // What Anthropic's browser SDK sends.
        "anthropic-version".parse().expect("header name"),
        "anthropic-beta".parse().expect("header name"),
        "anthropic-dangerous-direct-browser-access".parse().expect("header name"),
    ]);
    Some(if origins.iter().any(|o| o == "*") {
        layer.allow_origin(Any)
    } else {
        let list: Vec<HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
        layer.allow_origin(AllowOrigin::list(list))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_either_header() {
        let mut h = HeaderMap::new();
        assert_eq!(presented(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer  sk-local ".parse().unwrap());
        assert_eq!(presented(&h), Some(&b"sk-local"[..]));
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "k2".parse().unwrap());
        assert_eq!(presented(&h), Some(&b"k2"[..]));
        assert!(key_matches(b"abc", b"abc"));
        assert!(!key_matches(b"abd", b"abc"));
        assert!(!key_matches(b"ab", b"abc"));
    }

    #[test]
    fn the_admin_key_guards_admin_alone() {
        let both = Access { api_key: Some("api".into()), admin_key: Some("adm".into()), peer_key: None };
        assert_eq!(both.key_for("/v1/models"), Some("api"));
        assert_eq!(both.key_for("/admin/workers"), Some("adm"));
        assert_eq!(both.key_for("/health"), None);
        assert_eq!(both.key_for("/"), None, "the page asks for the key itself");
        assert_eq!(both.key_for("/page/app.js"), None);
        let admin_only = Access { api_key: None, admin_key: Some("adm".into()), peer_key: None };
        assert_eq!(admin_only.key_for("/v1/chat/completions"), None);
        assert_eq!(admin_only.key_for("/admin/pull"), Some("adm"));
        assert_eq!(Access::default().key_for("/admin/rescan"), None);
    }
}
