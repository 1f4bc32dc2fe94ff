//! Requests from web pages. Any page the user opens can send requests to a server on
//! loopback; the browser only keeps the page from reading answers it is not allowed to read,
//! after the request has run. So, before anything runs:
//!
//! - On a loopback address, the `Host` header must name loopback (`localhost`, `*.localhost`,
//!   `127.x.x.x`, `[::1]`, any port) or a host given with `--allowed-host`: a page on another
//!   site that rebinds its own name to 127.0.0.1 (DNS rebinding) is refused with 403.
//! - A request with an `Origin` (browsers send it on every cross-origin request and on POSTs)
//!   runs only if that origin is the server's own (same host and port) or allowed by
//!   `--cors-origin`; otherwise 403.
//! - A request a browser marks as coming from another site (`Sec-Fetch-Site: cross-site` or
//!   `same-site`, sent even where `Origin` is not: an `<img>` or `<script>` pointing here) runs
//!   only if its origin is allowed by `--cors-origin`, or it is the user opening a page
//!   (a top-level navigation, `Sec-Fetch-Mode: navigate`, with GET). So another site can neither
//!   read a GET nor hold streams open through the user's browser.
//! - A POST body must be JSON: a `Content-Type` other than `application/json` (the types a
//!   page may send without asking first: `text/plain`, forms) gets 415. A POST without a
//!   `Content-Type` is allowed, since a browser cannot send a body without one. Ollama's
//!   documented `curl -d` examples send `application/x-www-form-urlencoded`: on `/api/*` that
//!   type (not `text/plain`, which a page's form can fill with JSON) is waived for a request no
//!   browser sent (no `Origin`, no `Sec-Fetch-Site`), see [`body_type_waived`].
//!
//! The decision is [`Guard::verdict`], a pure function of the method and headers.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;
use std::sync::Arc;

use crate::http::error::ApiError;

/// What the guard lets through.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// The server listens on a loopback address: `Host` is checked.
    pub loopback: bool,
    /// Extra host names (lowercase, without port) accepted in `Host`.
    pub allowed_hosts: Vec<String>,
    /// Origins allowed by `--cors-origin` (`*`: any).
    pub cors_origins: Vec<String>,
}

pub async fn check(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let host =
        req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).or(req.uri().authority().map(|a| a.as_str()));
    match g.verdict(req.method(), req.headers(), host) {
        Ok(()) => next.run(req).await,
        // The body type is checked last: every other check passed.
        Err(e)
            if e.status == StatusCode::UNSUPPORTED_MEDIA_TYPE && body_type_waived(req.uri().path(), req.headers()) =>
        {
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// Whether a request to `path` may send its JSON body as `application/x-www-form-urlencoded`
/// (what `curl -d` sends): only on the Ollama endpoints, and only when no browser sent it
/// (browsers add `Origin` to a cross-origin POST and `Sec-Fetch-Site` to every request). A
/// browser's form of that type cannot carry JSON anyway: it percent-encodes `{` and `"`.
pub fn body_type_waived(path: &str, headers: &HeaderMap) -> bool {
    let form = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| {
        ct.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/x-www-form-urlencoded")
    });
    form && path.starts_with("/api/")
        && !headers.contains_key(header::ORIGIN)
        && !headers.contains_key("sec-fetch-site")
}

/// `host[:port]` without the port, lowercase; IPv6 literals without brackets.
fn host_name(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_string();
    }
    if a.parse::<IpAddr>().is_ok() {
        return a;
    }
    match a.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h.to_string(),
        _ => a,
    }
}

/// Whether `name` (no port) always means this machine.
fn is_loopback_name(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost") || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn forbidden(code: &'static str, message: String) -> ApiError {
    ApiError { status: StatusCode::FORBIDDEN, code: Some(code), ..ApiError::bad_request(message) }
}

impl Guard {
    /// Whether a request with `method`, `headers` and `host` (the `Host` header or the URI's
    /// authority) may run.
    pub fn verdict(&self, method: &Method, headers: &HeaderMap, host: Option<&str>) -> Result<(), ApiError> {
        if self.loopback {
            let Some(h) = host else {
                return Err(forbidden("host_not_allowed", "a request must name its Host (in UTF-8)".into()));
            };
            let name = host_name(h);
            if !is_loopback_name(&name) && !self.allowed_hosts.iter().any(|a| a == &name) {
                return Err(forbidden(
                    "host_not_allowed",
                    format!("Host {h:?} is not this machine; start the server with --allowed-host {name} to accept it"),
                ));
            }
        }
        let allowed = |origin: &str| self.cors_origins.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin));
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            let own = host.is_some_and(|h| {
                origin
                    .strip_prefix("http://")
                    .or(origin.strip_prefix("https://"))
                    .is_some_and(|o| o.eq_ignore_ascii_case(h))
            });
            if !own && !allowed(origin) {
                return Err(forbidden(
                    "origin_not_allowed",
                    format!("requests from web pages at {origin:?} are not allowed; start the server with --cors-origin {origin} to allow them"),
                ));
            }
        }
        let fetch = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
        let site = fetch("sec-fetch-site");
        if site == "cross-site" || site == "same-site" {
            let navigation = fetch("sec-fetch-mode") == "navigate" && method == Method::GET;
            let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
            if !navigation && !origin.is_some_and(allowed) && !allowed("*") {
                return Err(forbidden(
                    "origin_not_allowed",
                    format!("requests from other sites' pages ({site}) are not allowed; start the server with --cors-origin ORIGIN to allow one"),
                ));
            }
        }
        if method == Method::POST {
            if let Some(ct) = headers.get(header::CONTENT_TYPE) {
                let essence = ct.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
                if essence != "application/json" {
                    return Err(ApiError {
                        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        code: Some("unsupported_media_type"),
                        ..ApiError::bad_request(format!(
                            "the body must be JSON with Content-Type: application/json, not {essence:?}"
                        ))
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn local() -> Guard {
        Guard { loopback: true, ..Default::default() }
    }

    #[test]
    fn ollama_paths_take_a_form_type_only_from_non_browsers() {
        let form = headers(&[("content-type", "application/x-www-form-urlencoded")]);
        assert!(body_type_waived("/api/chat", &form));
        assert!(!body_type_waived("/v1/chat/completions", &form));
        let page = headers(&[("content-type", "text/plain"), ("sec-fetch-site", "same-origin")]);
        assert!(!body_type_waived("/api/chat", &page));
        let cross =
            headers(&[("content-type", "application/x-www-form-urlencoded"), ("origin", "http://evil.example")]);
        assert!(!body_type_waived("/api/generate", &cross));
        // A page's text/plain form can hold JSON: never waived, browser headers or not.
        assert!(!body_type_waived("/api/chat", &headers(&[("content-type", "text/plain")])));
    }

    #[test]
    fn loopback_names_pass_and_other_hosts_do_not() {
        let g = local();
        for h in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:8080",
            "127.5.6.7",
            "[::1]:8080",
            "::1",
            "LOCALHOST",
            "app.localhost:3000",
        ] {
            assert!(g.verdict(&Method::GET, &HeaderMap::new(), Some(h)).is_ok(), "{h}");
        }
        for h in ["evil.example:8080", "127.0.0.1.evil.example", "10.0.0.1", "localhost.evil.example", "[::2]:80"] {
            let e = g.verdict(&Method::GET, &HeaderMap::new(), Some(h)).unwrap_err();
            assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, Some("host_not_allowed")), "{h}");
        }
        let named = Guard { allowed_hosts: vec!["node-2.cluster".into()], ..local() };
        assert!(named.verdict(&Method::GET, &HeaderMap::new(), Some("node-2.cluster:8080")).is_ok());
        assert!(g.verdict(&Method::GET, &HeaderMap::new(), None).is_err(), "no Host at all");
        // Off a loopback address the API key is the protection; any host name may be in use.
        assert!(Guard::default().verdict(&Method::GET, &HeaderMap::new(), Some("evil.example")).is_ok());
    }

    #[test]
    fn only_the_servers_own_and_allowed_origins_run() {
        let g = Guard { cors_origins: vec!["http://app.example".into()], ..local() };
        let post = |o: &str| g.verdict(&Method::POST, &headers(&[("origin", o)]), Some("localhost:8080"));
        assert!(post("http://localhost:8080").is_ok(), "the server's own page");
        assert!(post("http://app.example").is_ok());
        for o in ["http://evil.example", "null", "http://localhost:9999"] {
            assert_eq!(post(o).unwrap_err().code, Some("origin_not_allowed"), "{o}");
        }
        let any = Guard { cors_origins: vec!["*".into()], ..local() };
        assert!(any.verdict(&Method::POST, &headers(&[("origin", "http://evil.example")]), Some("localhost")).is_ok());
    }

    #[test]
    fn other_sites_cannot_reach_it_without_an_origin_either() {
        let g = Guard { cors_origins: vec!["http://app.example".into()], ..local() };
        let get = |pairs: &[(&'static str, &str)]| g.verdict(&Method::GET, &headers(pairs), Some("localhost:8080"));
        // An <img> or <script> on another site: no Origin, but the browser says where it is from.
        for site in ["cross-site", "same-site"] {
            let e = get(&[("sec-fetch-site", site), ("sec-fetch-mode", "no-cors")]).unwrap_err();
            assert_eq!(e.code, Some("origin_not_allowed"), "{site}");
        }
        assert!(get(&[("sec-fetch-site", "same-origin"), ("sec-fetch-mode", "cors")]).is_ok(), "the page itself");
        assert!(get(&[("sec-fetch-site", "none"), ("sec-fetch-mode", "navigate")]).is_ok(), "typed in the address bar");
        assert!(get(&[("sec-fetch-site", "cross-site"), ("sec-fetch-mode", "navigate")]).is_ok(), "a link followed");
        assert!(get(&[]).is_ok(), "clients that are not browsers send none of it");
        let allowed = [("sec-fetch-site", "cross-site"), ("sec-fetch-mode", "cors"), ("origin", "http://app.example")];
        assert!(get(&allowed).is_ok(), "an allowed origin");
        let post = g.verdict(
            &Method::POST,
            &headers(&[("sec-fetch-site", "cross-site"), ("sec-fetch-mode", "navigate")]),
            Some("localhost"),
        );
        assert!(post.is_err(), "a form posted from another site is no navigation to allow");
    }

    #[test]
    fn post_bodies_must_be_json() {
        let g = local();
        let post = |ct: &str| g.verdict(&Method::POST, &headers(&[("content-type", ct)]), Some("localhost"));
        assert!(post("application/json").is_ok());
        assert!(post("Application/JSON; charset=utf-8").is_ok());
        for ct in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
            assert_eq!(post(ct).unwrap_err().status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}");
        }
        assert!(g.verdict(&Method::POST, &HeaderMap::new(), Some("localhost")).is_ok(), "no body type at all");
        assert!(g.verdict(&Method::GET, &headers(&[("content-type", "text/plain")]), Some("localhost")).is_ok());
    }
}
