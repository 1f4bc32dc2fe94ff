//! The web page at `/`: plain HTML, CSS and ES modules from `router/web/`, compiled into the
//! binary (nothing is fetched from anywhere else, so it works offline). Every answer carries
//! a Content-Security-Policy that lets the page load only its own files and talk only to this
//! server: no inline scripts or styles, no frames, no forms posting elsewhere, images only from
//! itself or `data:`. The page and its files need no API key (they hold no data); the page asks
//! for the key and sends it with its API calls.

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::http::error::ApiError;

/// The policy every page file is served with.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Where the page's files are served from.
pub const PREFIX: &str = "/page/";

/// (name, content type, bytes) of each file under [`PREFIX`].
const FILES: &[(&str, &str, &[u8])] = &[
    ("style.css", "text/css; charset=utf-8", include_bytes!("../../web/style.css")),
    ("icon.svg", "image/svg+xml", include_bytes!("../../web/icon.svg")),
    ("app.js", JS, include_bytes!("../../web/app.js")),
    ("api.js", JS, include_bytes!("../../web/api.js")),
    ("dom.js", JS, include_bytes!("../../web/dom.js")),
    ("markdown.js", JS, include_bytes!("../../web/markdown.js")),
    ("chat.js", JS, include_bytes!("../../web/chat.js")),
    ("models.js", JS, include_bytes!("../../web/models.js")),
    ("workers.js", JS, include_bytes!("../../web/workers.js")),
    ("chart.js", JS, include_bytes!("../../web/chart.js")),
    ("logs.js", JS, include_bytes!("../../web/logs.js")),
];

const JS: &str = "text/javascript; charset=utf-8";

const INDEX: &[u8] = include_bytes!("../../web/index.html");

fn serve(content_type: &'static str, body: &'static [u8]) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // The files change only with the binary; a reload after an upgrade must not mix versions.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

pub async fn index() -> Response {
    serve("text/html; charset=utf-8", INDEX)
}

pub async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, ty, body)) => serve(ty, body),
        None => ApiError::not_found(format!("no page file {name:?}")).into_response(),
    }
}

/// Whether `path` is the page or one of its files (served without a key).
pub fn is_page(path: &str) -> bool {
    path == "/" || path.strip_prefix(PREFIX).is_some_and(|f| !f.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_names_is_served() {
        let index = std::str::from_utf8(INDEX).unwrap();
        let mut named: Vec<&str> = Vec::new();
        for (_, _, body) in FILES.iter().filter(|(n, _, _)| n.ends_with(".js")) {
            let js = std::str::from_utf8(body).unwrap();
            named
                .extend(js.match_indices("from './").map(|(i, _)| &js[i + 8..i + 8 + js[i + 8..].find('\'').unwrap()]));
        }
        named.extend(index.match_indices(PREFIX).map(|(i, _)| {
            let rest = &index[i + PREFIX.len()..];
            &rest[..rest.find('"').unwrap()]
        }));
        assert!(named.len() > FILES.len(), "{named:?}");
        for n in named {
            assert!(FILES.iter().any(|(f, _, _)| *f == n), "{n} is not served");
        }
    }

    #[test]
    fn nothing_inline_that_the_policy_would_block() {
        let index = std::str::from_utf8(INDEX).unwrap();
        let scripts: Vec<&str> =
            index.match_indices("<script").map(|(i, _)| &index[i..i + index[i..].find('>').unwrap()]).collect();
        assert!(!scripts.is_empty() && scripts.iter().all(|s| s.contains("src=\"/page/")), "{scripts:?}");
        let handler = index.match_indices(" on").any(|(i, _)| {
            let name: String = index[i + 1..].chars().take_while(|c| c.is_ascii_alphabetic()).collect();
            index[i + 1 + name.len()..].starts_with('=')
        });
        assert!(!index.contains("style=") && !handler, "no inline styles or handlers");
        for (n, _, body) in FILES {
            // SVG's namespace is a name, never fetched.
            let text = String::from_utf8_lossy(body).replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://") && !text.contains("https://"), "{n} names an outside address");
            for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
                assert!(!text.contains(sink), "{n} builds markup or code from strings ({sink})");
            }
        }
        assert!(is_page("/") && is_page("/page/app.js") && !is_page("/page/x/y") && !is_page("/v1/models"));
    }
}
