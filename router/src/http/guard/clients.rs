//! An optional limit on the requests one client has in flight (`--max-client-requests`), so
//! that one caller (a runaway script, another machine) cannot take every slot and queue place.
//! A client is its address; with `--api-key`, the key it presented (checked before this runs;
//! an unchecked header would let a caller be a new client on every request). On loopback every
//! local caller has the same address, so there it caps all local callers together. A request
//! past the limit gets 429 with `Retry-After`; a streamed answer holds its place until its body
//! ends.

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::http::error::ApiError;

/// Requests in flight per client.
pub struct ClientLimit {
    /// Requests one client may have in flight (0: no limit).
    pub max: usize,
    /// Tell clients apart by their (checked) API key rather than by address.
    by_key: bool,
    in_flight: Mutex<HashMap<String, usize>>,
}

/// One request's place; dropping it frees the place.
struct Place {
    limit: Arc<ClientLimit>,
    client: String,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut m = self.limit.in_flight.lock().expect("clients lock");
        if let Some(n) = m.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.client);
            }
        }
    }
}

impl ClientLimit {
    pub fn new(max: usize, by_key: bool) -> ClientLimit {
        ClientLimit { max, by_key, in_flight: Mutex::new(HashMap::new()) }
    }

    /// A place for one more request of `client`, unless it has `max` in flight.
    fn enter(self: &Arc<Self>, client: String) -> Option<Place> {
        let mut m = self.in_flight.lock().expect("clients lock");
        let n = m.entry(client.clone()).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Place { limit: self.clone(), client })
    }
}

/// Who a request comes from: a hash of its key (when `by_key`), else its address.
fn client_of(req: &Request, by_key: bool) -> String {
    let key = req
        .headers()
        .get(header::AUTHORIZATION)
        .or_else(|| req.headers().get("x-api-key"))
        .filter(|_| by_key)
        .map(|v| v.as_bytes().to_vec());
    match key {
        Some(k) => {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            k.hash(&mut h);
            format!("key:{:016x}", h.finish())
        }
        None => match req.extensions().get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(addr)) => format!("addr:{}", addr.ip()),
            None => "addr:unknown".into(),
        },
    }
}

/// Whether `path` is outside the limit: it uses no worker slot or queue place (health, the
/// page's files, and the watch streams a page holds open for as long as it is shown).
fn unlimited(path: &str) -> bool {
    path == "/health"
        || path == "/admin/events"
        || crate::http::page::is_page(path)
        || path.strip_prefix("/admin/models/").is_some_and(|rest| rest.ends_with("/logs"))
}

pub async fn limit(State(l): State<Arc<ClientLimit>>, req: Request, next: Next) -> Response {
    if l.max == 0 || unlimited(req.uri().path()) {
        return next.run(req).await;
    }
    let Some(place) = l.enter(client_of(&req, l.by_key)) else {
        return ApiError::too_many(
            format!("this client already has {} requests in flight (--max-client-requests)", l.max),
            1,
        )
        .into_response();
    };
    let resp = next.run(req).await;
    // The place is held until the body (a stream, maybe) has been sent or dropped.
    resp.map(|body| {
        Body::new(body.map_frame(move |f| {
            let _held = &place;
            f
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_per_client_and_given_back() {
        let l = Arc::new(ClientLimit::new(2, false));
        let a1 = l.enter("a".into()).unwrap();
        let _a2 = l.enter("a".into()).unwrap();
        assert!(l.enter("a".into()).is_none());
        assert!(l.enter("b".into()).is_some(), "another client is not affected");
        drop(a1);
        assert!(l.enter("a".into()).is_some());
    }

    #[test]
    fn watch_streams_and_the_page_take_no_place() {
        for p in ["/health", "/admin/events", "/admin/models/eden_x_1b_abcdef/logs", "/", "/page/app.js"] {
            assert!(unlimited(p), "{p}");
        }
        for p in ["/v1/chat/completions", "/admin/models/x/load", "/admin/pull", "/v1/models"] {
            assert!(!unlimited(p), "{p}");
        }
    }
}
