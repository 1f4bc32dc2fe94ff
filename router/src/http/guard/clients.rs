//! An optional limit on the requests one client has in flight (`--max-client-requests`), so
//! that one caller (a runaway script, another machine) cannot take every slot and queue place.
//! A client is its address; with `--api-key`, the key it presented (checked before this runs;
//! an unchecked header would let a caller be a new client on every request). On loopback every
//! local caller has the same address, so there it caps all local callers together. A request
//! past the limit gets 429 with `Retry-After`; a streamed answer holds its place until its body
//! ends.
//!
//! Watch streams (`/admin/events`, a model's logs) use no slot but hold a connection for as long
//! as a page is shown: they have limits of their own, always on, [`MAX_WATCHES_PER_CLIENT`] per
//! client and [`MAX_WATCHES`] in all, so no caller can take every connection with them.

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::http::error::ApiError;
use crate::http::guard::access::KeyHolder;

/// Watch streams one client may hold open.
pub const MAX_WATCHES_PER_CLIENT: usize = 8;
/// Watch streams open at once, all clients together.
pub const MAX_WATCHES: usize = 64;

/// Requests in flight per client.
pub struct ClientLimit {
    /// Requests one client may have in flight (0: no limit).
    pub max: usize,
    /// Requests all clients together may have in flight (0: no limit).
    total: usize,
    /// Tell clients apart by their (checked) API key rather than by address.
    by_key: bool,
    in_flight: Mutex<HashMap<String, usize>>,
}

/// The limits the middleware applies: requests (`--max-client-requests`) and watch streams.
pub struct Limits {
    pub requests: Arc<ClientLimit>,
    pub watches: Arc<ClientLimit>,
}

impl Limits {
    pub fn new(max_client_requests: usize, by_key: bool) -> Limits {
        Limits {
            requests: Arc::new(ClientLimit::new(max_client_requests, by_key)),
            watches: Arc::new(ClientLimit { total: MAX_WATCHES, ..ClientLimit::new(MAX_WATCHES_PER_CLIENT, by_key) }),
        }
    }
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
        ClientLimit { max, total: 0, by_key, in_flight: Mutex::new(HashMap::new()) }
    }

    /// A place for one more request of `client`, unless it has `max` in flight.
    fn enter(self: &Arc<Self>, client: String) -> Option<Place> {
        let mut m = self.in_flight.lock().expect("clients lock");
        if self.total > 0 && m.values().sum::<usize>() >= self.total {
            return None;
        }
        let n = m.entry(client.clone()).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Place { limit: self.clone(), client })
    }
}

/// Who a request comes from: the key it was checked against (when `by_key`; however the
/// header spelled it, `Bearer  K`, `bearer K` or `x-api-key: K`), else its address.
fn client_of(req: &Request, by_key: bool) -> String {
    let key = req.extensions().get::<KeyHolder>().filter(|_| by_key);
    match key {
        Some(KeyHolder(k)) => format!("key:{k}"),
        None => match req.extensions().get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(addr)) => format!("addr:{}", addr.ip()),
            None => "addr:unknown".into(),
        },
    }
}

/// Whether `path` is outside the limit: it uses no worker slot or queue place (health, the
/// page's files).
fn unlimited(path: &str) -> bool {
    path == "/health" || crate::http::page::is_page(path)
}

/// Whether `path` is a watch stream a page holds open for as long as it is shown.
fn watch(path: &str) -> bool {
    path == "/admin/events" || path.strip_prefix("/admin/models/").is_some_and(|rest| rest.ends_with("/logs"))
}

pub async fn limit(State(limits): State<Arc<Limits>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let (l, what) = if watch(path) {
        (
            &limits.watches,
            format!("watch streams open (at most {MAX_WATCHES_PER_CLIENT} per client, {MAX_WATCHES} in all)"),
        )
    } else {
        (&limits.requests, format!("{} requests in flight (--max-client-requests)", limits.requests.max))
    };
    if l.max == 0 || unlimited(path) {
        return next.run(req).await;
    }
    let Some(place) = l.enter(client_of(&req, l.by_key)) else {
        return ApiError::too_many(format!("this client, or all of them, already has its {what}"), 1).into_response();
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
    fn a_key_is_one_client_however_it_is_spelled() {
        let with = |h: &[(&str, &str)], checked: Option<&'static str>| {
            let mut b = axum::http::Request::builder().uri("/v1/models");
            for (k, v) in h {
                b = b.header(*k, *v);
            }
            let mut r = b.body(Body::empty()).unwrap();
            if let Some(k) = checked {
                r.extensions_mut().insert(KeyHolder(k));
            }
            client_of(&r, true)
        };
        let a = with(&[("authorization", "Bearer K")], Some("api"));
        assert_eq!(a, with(&[("authorization", "Bearer  K")], Some("api")));
        assert_eq!(a, with(&[("authorization", "bearer K")], Some("api")));
        assert_eq!(a, with(&[("authorization", "Basic x"), ("x-api-key", "K")], Some("api")));
        assert_ne!(a, with(&[("authorization", "Bearer A")], Some("admin")));
    }

    #[test]
    fn watch_streams_have_limits_of_their_own_and_the_page_takes_no_place() {
        for p in ["/health", "/", "/page/app.js"] {
            assert!(unlimited(p) && !watch(p), "{p}");
        }
        for p in ["/admin/events", "/admin/models/eden_x_1b_abcdef/logs"] {
            assert!(watch(p), "{p}");
        }
        for p in ["/v1/chat/completions", "/admin/models/x/load", "/admin/pull", "/v1/models"] {
            assert!(!unlimited(p) && !watch(p), "{p}");
        }
        // Watch streams: per client and in all.
        let w = Limits::new(0, false).watches;
        let held: Vec<_> = (0..MAX_WATCHES_PER_CLIENT).map(|_| w.enter("a".into()).unwrap()).collect();
        assert!(w.enter("a".into()).is_none());
        let more: Vec<_> = (0..MAX_WATCHES - held.len()).map(|i| w.enter(format!("c{i}")).unwrap()).collect();
        assert!(w.enter("z".into()).is_none(), "the total is full");
        drop(more);
        assert!(w.enter("z".into()).is_some());
    }
}
