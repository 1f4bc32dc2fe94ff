//! The app in process: requests go through every layer (guard, key, client limit, routes) to
//! the handlers, without a socket. Handlers that need no worker are tested here; those that
//! do, in [`served`], against in-memory fake workers (the real client over a pipe). Real and
//! fake worker processes are tested in `tests/`.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use model_bucket_shared::{Catalog, Config};
use std::sync::Arc;
use std::time::Duration;
use tower_service::Service;

use crate::registry::{Defaults, Limits, Registry};

mod served;

fn registry() -> Arc<Registry> {
    registry_with(Catalog::default(), crate::worker::processes())
}

/// A registry of `catalog` whose workers `launch` starts.
fn registry_with(catalog: Catalog, launch: crate::worker::Launch) -> Arc<Registry> {
    let defaults = Defaults {
        worker_bin: "/nonexistent/model-bucket-worker".into(),
        parallel: 2,
        ctx: None,
        threads: None,
        load_timeout: Duration::from_secs(1),
        load_wait: Duration::from_secs(1),
        max_queue: 2,
        max_sampling: Duration::from_secs(30),
        prompt_cache: None,
        kv_cache: None,
    };
    let limits = Limits {
        ram_budget: 1 << 30,
        idle_ttl: None,
        queue_timeout: Duration::from_secs(1),
        sched: crate::supervisor::turn::Sched::Turns,
        quantum: Duration::from_secs(1),
        drain_grace: Duration::from_secs(1),
        policy: Default::default(),
    };
    Registry::with_launch(catalog, Config::default(), None, defaults, limits, launch)
}

/// A store of Responses in memory only.
fn memory_store() -> Arc<crate::http::openai::responses::store::Store> {
    use crate::http::openai::responses::store::{Limits, Store, MEMORY_BYTES, TTL};
    Arc::new(Store::new(Limits { dir: None, memory: MEMORY_BYTES, disk: 0, ttl: TTL }))
}

fn app(api_key: Option<&str>) -> axum::Router {
    app_of(registry(), api_key)
}

fn app_of(registry: Arc<Registry>, api_key: Option<&str>) -> axum::Router {
    let access = crate::http::guard::access::Access { api_key: api_key.map(Into::into), ..Default::default() };
    let guard = crate::http::guard::origin::Guard { loopback: true, allowed_hosts: vec![], cors_origins: vec![] };
    super::app(registry, 1 << 20, access, guard, 64, memory_store())
}

/// A request as a loopback client sends it.
fn request(method: Method, path: &str, body: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request")
}

/// Sends one request; returns the status, the `Allow` header and the body as JSON.
async fn send(
    app: &mut axum::Router,
    method: Method,
    path: &str,
    body: &str,
) -> (StatusCode, String, serde_json::Value) {
    let resp = app.call(request(method, path, body)).await.expect("infallible");
    let status = resp.status();
    let allow = resp.headers().get(header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, allow, json)
}

fn envelope(v: &serde_json::Value) -> &str {
    v["error"]["message"].as_str().unwrap_or_else(|| panic!("no error envelope: {v}"))
}

#[tokio::test]
async fn a_wrong_method_on_a_real_route_is_a_405_envelope() {
    let mut app = app(None);
    for (method, path) in
        [(Method::GET, "/v1/chat/completions"), (Method::DELETE, "/v1/models"), (Method::GET, "/admin/rescan")]
    {
        let (status, allow, body) = send(&mut app, method.clone(), path, "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(envelope(&body).contains("method"), "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(!allow.is_empty(), "{method} {path}: no Allow header");
    }
}

#[tokio::test]
async fn unknown_routes_and_models_are_404_envelopes() {
    let mut app = app(None);
    let (status, _, body) = send(&mut app, Method::GET, "/v2/nothing", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    envelope(&body);
    let chat = r#"{"model":"nope","messages":[{"role":"user","content":"hi"}]}"#;
    let (status, _, body) = send(&mut app, Method::POST, "/v1/chat/completions", chat).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "model_not_found");
    let (status, _, body) = send(&mut app, Method::POST, "/admin/models/nope/load", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn malformed_bodies_are_400_envelopes() {
    let mut app = app(None);
    for body in ["{", "[]", r#"{"model":"x"}"#, r#"{"model":"x","messages":"hi"}"#] {
        let (status, _, v) = send(&mut app, Method::POST, "/v1/chat/completions", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
        envelope(&v);
    }
}

#[tokio::test]
async fn the_key_guards_the_api_and_an_empty_bucket_lists_nothing() {
    let mut app = app(Some("sekret"));
    let (status, _, body) = send(&mut app, Method::GET, "/v1/models", "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let (status, _, _) = send(&mut app, Method::GET, "/health", "").await;
    assert_eq!(status, StatusCode::OK);
    let mut open = self::app(None);
    let (status, _, body) = send(&mut open, Method::GET, "/v1/models", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"], serde_json::json!([]));
    let (status, _, body) = send(&mut open, Method::GET, "/admin/workers", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["workers"], serde_json::json!([]));
}

/// `POST /admin/models` with `body`, from `peer` (none: no socket address known), with `key`.
async fn add_from(
    app: &mut axum::Router,
    peer: Option<&str>,
    key: Option<&str>,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let mut req = request(Method::POST, "/admin/models", body);
    if let Some(p) = peer {
        let addr: std::net::SocketAddr = p.parse().unwrap();
        req.extensions_mut().insert(axum::extract::ConnectInfo(addr));
    }
    if let Some(k) = key {
        req.headers_mut().insert(header::AUTHORIZATION, format!("Bearer {k}").parse().unwrap());
    }
    let resp = app.call(req).await.expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn adding_a_file_by_path_is_for_local_or_admin_callers_only() {
    let body = r#"{"path": "/nonexistent/x.gguf"}"#;
    let mut open = app(None);
    for peer in [None, Some("192.168.1.5:40000"), Some("[2001:db8::1]:40000")] {
        let (status, v) = add_from(&mut open, peer, None, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{peer:?}: {v}");
        assert_eq!(v["error"]["code"], "not_local");
    }
    // Loopback callers get as far as the path check.
    for peer in ["127.0.0.1:40000", "[::1]:40000", "[::ffff:127.0.0.1]:40000"] {
        let (status, v) = add_from(&mut open, Some(peer), None, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{peer}: {v}");
        assert_eq!(v["error"]["param"], "path");
    }
    let (status, v) = add_from(&mut open, Some("127.0.0.1:1"), None, r#"{"path": "/x.gguf", "extra": 1}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "unknown fields are refused: {v}");
    // With an admin key, a remote caller that presents it may add; the API key is not enough.
    let access = crate::http::guard::access::Access {
        api_key: Some("api".into()),
        admin_key: Some("adm".into()),
        peer_key: None,
    };
    let guard = crate::http::guard::origin::Guard { loopback: false, allowed_hosts: vec![], cors_origins: vec![] };
    let mut keyed = super::app(registry(), 1 << 20, access, guard, 64, memory_store());
    let (status, _) = add_from(&mut keyed, Some("192.168.1.5:40000"), Some("api"), body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, v) = add_from(&mut keyed, Some("192.168.1.5:40000"), Some("adm"), body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["param"], "path");
}

#[tokio::test]
async fn a_peer_key_opens_peer_traffic_and_nothing_else() {
    let access = crate::http::guard::access::Access {
        api_key: Some("client".into()),
        admin_key: None,
        peer_key: Some("peer".into()),
    };
    let guard = crate::http::guard::origin::Guard { loopback: true, allowed_hosts: vec![], cors_origins: vec![] };
    let mut app = super::app(registry(), 1 << 20, access, guard, 64, memory_store());
    let mut status = |path: &str, key: &str, hop: bool| {
        let mut req = request(Method::GET, path, "");
        req.headers_mut().insert(header::AUTHORIZATION, format!("Bearer {key}").parse().unwrap());
        if hop {
            req.headers_mut().insert(crate::fleet::HOP, "1".parse().unwrap());
        }
        let resp = app.call(req);
        async move { resp.await.expect("infallible").status() }
    };
    assert_eq!(status("/v1/models", "client", false).await, StatusCode::OK);
    assert_eq!(status("/v1/models", "peer", true).await, StatusCode::OK, "a peer's poll");
    assert_eq!(status("/v1/models", "peer", false).await, StatusCode::UNAUTHORIZED, "not a client's key");
    assert_eq!(status("/admin/workers", "peer", true).await, StatusCode::UNAUTHORIZED, "not an admin's key");
    assert_eq!(status("/admin/workers", "client", false).await, StatusCode::OK);
}

#[tokio::test]
async fn each_dialect_fails_in_its_own_envelope_whatever_layer_refuses() {
    let mut app = app(Some("k"));
    // The key layer.
    let (status, _, v) = send(&mut app, Method::POST, "/v1/messages", "{}").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");
    let (status, _, v) = send(&mut app, Method::GET, "/api/tags", "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(v["error"].is_string(), "{v}");
    let mut app = super::tests::app(None);
    // The body reader, and the handlers.
    let (status, _, v) = send(&mut app, Method::POST, "/v1/messages", "{not json").await;
    assert_eq!((status, v["error"]["type"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request_error")));
    let (status, _, v) = send(
        &mut app,
        Method::POST,
        "/v1/messages/count_tokens",
        r#"{"model":"nope","messages":[{"role":"user","content":"x"}]}"#,
    )
    .await;
    assert_eq!((status, v["error"]["type"].as_str()), (StatusCode::NOT_FOUND, Some("not_found_error")));
    let (status, _, v) =
        send(&mut app, Method::POST, "/api/chat", r#"{"model":"nope","messages":[{"role":"user","content":"x"}]}"#)
            .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(v["error"].as_str().unwrap().contains("nope"), "{v}");
    let (status, _, v) = send(&mut app, Method::POST, "/api/show", r#"{"model":"nope"}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(v["error"].is_string(), "{v}");
    // An error that quotes a huge input is still answered whole, in the envelope.
    let huge = format!(r#"{{"model":"m","max_tokens":1,"messages":"{}"}}"#, "x".repeat(100_000));
    let (status, _, v) = send(&mut app, Method::POST, "/v1/messages", &huge).await;
    assert_eq!((status, v["error"]["type"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request_error")));
    let long_name = format!(r#"{{"model":"{}"}}"#, "m".repeat(100_000));
    let (status, _, v) = send(&mut app, Method::POST, "/api/show", &long_name).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(v["error"].as_str().unwrap().len() < 1000, "the name is not quoted whole");
    // The OpenAI endpoints keep theirs.
    let (status, _, v) = send(&mut app, Method::POST, "/v1/chat/completions", "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].is_string(), "{v}");
}

#[tokio::test]
async fn a_page_cannot_post_a_form_to_the_ollama_endpoints() {
    let mut app = app(None);
    let form = |extra: Option<(&str, &str)>| {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri("/api/show")
            .header(header::HOST, "127.0.0.1:8080")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some((k, v)) = extra {
            b = b.header(k, v);
        }
        b.body(Body::from(r#"{"model":"nope"}"#)).expect("request")
    };
    // curl -d: the form type is waived, the request runs (and finds no such model).
    let resp = app.call(form(None)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // The same from a page of this very origin: refused before it runs.
    let resp = app.call(form(Some(("sec-fetch-site", "same-origin")))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let resp = app.call(form(Some(("origin", "http://evil.example")))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // text/plain (what a page's form can fill with JSON) is refused even without browser headers.
    let mut plain = form(None);
    plain.headers_mut().insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
    let resp = app.call(plain).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn stored_responses_are_found_by_their_id_only() {
    let mut app = app(None);
    for path in ["/v1/responses/resp_0123456789abcdef", "/v1/responses/..%2F..%2Fetc%2Fpasswd", "/v1/responses/nope"] {
        let (status, _, v) = send(&mut app, Method::GET, path, "").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {v}");
        assert_eq!(v["error"]["param"], "response_id");
    }
    let (status, _, _) = send(&mut app, Method::DELETE, "/v1/responses/resp_01", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = send(&mut app, Method::POST, "/v1/responses/resp_01/cancel", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = send(&mut app, Method::GET, "/v1/responses/resp_01/conversation", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // An unknown previous_response_id is refused before any model is asked.
    let body = r#"{"model":"nope","input":"hi","previous_response_id":"resp_01"}"#;
    let (status, _, v) = send(&mut app, Method::POST, "/v1/responses", body).await;
    assert_eq!((status, v["error"]["param"].as_str()), (StatusCode::NOT_FOUND, Some("previous_response_id")));
}

#[tokio::test]
async fn ollamas_pull_needs_the_admin_key_as_the_admin_pull_does() {
    let access = crate::http::guard::access::Access {
        api_key: Some("client".into()),
        admin_key: Some("adm".into()),
        peer_key: Some("peer".into()),
    };
    let guard = crate::http::guard::origin::Guard { loopback: true, allowed_hosts: vec![], cors_origins: vec![] };
    let mut app = super::app(registry(), 1 << 20, access, guard, 64, memory_store());
    let mut call = |key: &str, hop: bool| {
        let mut req = request(Method::POST, "/api/pull", r#"{"model":"no-such-name"}"#);
        req.headers_mut().insert(header::AUTHORIZATION, format!("Bearer {key}").parse().unwrap());
        if hop {
            req.headers_mut().insert(crate::fleet::HOP, "1".parse().unwrap());
        }
        let resp = app.call(req);
        async move { resp.await.expect("infallible").status() }
    };
    assert_eq!(call("client", false).await, StatusCode::UNAUTHORIZED, "the API key does not pull");
    assert_eq!(call("peer", true).await, StatusCode::UNAUTHORIZED, "nor does a peer's");
    // The admin key gets as far as the name, which means no model.
    assert_eq!(call("adm", false).await, StatusCode::BAD_REQUEST);
}
