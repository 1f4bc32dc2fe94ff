//! What this node knows of its peers: each peer's models as its last poll saw them, and how
//! reliable it has been. Which peer gets a request is a pure function of that ([`candidates`]).

use serde_json::Value;
use std::time::{Duration, Instant};

/// Failures in a row (polls or forwarded requests) after which a peer is skipped for a while.
pub const BREAK_AFTER: u32 = 3;
/// How long a peer that keeps failing is skipped.
pub const BREAK_FOR: Duration = Duration::from_secs(30);

/// One model of a peer, from its `/v1/models`.
#[derive(Debug, Clone)]
pub struct PeerModel {
    pub id: String,
    pub aliases: Vec<String>,
    /// Its worker's state there: `ready`, `loading`, `unloaded`, `failed`, ...
    pub state: String,
    /// Requests its worker has in hand there (0 when not loaded).
    pub active: u64,
    /// The peer's whole entry, as this node lists it (with `node` added).
    pub entry: Value,
}

/// One peer.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its base URL, without a trailing slash.
    pub url: String,
    /// Its models as of the last successful poll; empty when that poll failed.
    pub models: Vec<PeerModel>,
    /// Failures in a row.
    pub failures: u32,
    /// Skipped until then (circuit open).
    pub open_until: Option<Instant>,
    /// Why its last poll failed, if it did.
    pub error: Option<String>,
    /// Requests this node sent it since its last poll (which `active` does not count yet).
    pub sent: u64,
}

impl Peer {
    pub fn new(url: String) -> Peer {
        Peer { url, models: Vec::new(), failures: 0, open_until: None, error: None, sent: 0 }
    }

    /// A poll or a forwarded request went through.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.open_until = None;
    }

    /// A poll or a forwarded request failed at `now`: after [`BREAK_AFTER`] in a row the peer is
    /// skipped for [`BREAK_FOR`].
    pub fn failed(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        if self.failures >= BREAK_AFTER {
            self.open_until = Some(now + BREAK_FOR);
        }
    }

    fn usable(&self, now: Instant) -> bool {
        self.open_until.is_none_or(|t| now >= t)
    }

    /// Its model called `name` (ID or alias).
    pub fn model(&self, name: &str) -> Option<&PeerModel> {
        self.models.iter().find(|m| m.id == name || m.aliases.iter().any(|a| a == name))
    }
}

/// The peers that can take a request for `name`, best first: those whose model is loaded
/// before those that would load it, then the least busy (requests in hand at the last poll,
/// plus those this node sent since); failed models and peers skipped for failing are left out.
/// Ties keep the peers' order.
pub fn candidates<'p>(peers: &'p [Peer], name: &str, now: Instant) -> Vec<&'p Peer> {
    let mut found: Vec<(&Peer, &PeerModel)> = peers
        .iter()
        .filter(|p| p.usable(now))
        .filter_map(|p| p.model(name).map(|m| (p, m)))
        .filter(|(_, m)| m.state != "failed")
        .collect();
    found.sort_by_key(|(p, m)| (m.state != "ready", m.active.saturating_add(p.sent)));
    found.into_iter().map(|(p, _)| p).collect()
}

/// The most models taken from one peer.
pub const MAX_PEER_MODELS: usize = 4096;

/// Reads a peer's `/v1/models` answer into its models (tasks and entries without an ID are
/// left out; at most [`MAX_PEER_MODELS`]).
pub fn parse_models(v: &Value) -> Vec<PeerModel> {
    let Some(data) = v["data"].as_array() else { return Vec::new() };
    data.iter()
        .filter(|m| m["task"].is_null())
        .take(MAX_PEER_MODELS)
        .filter_map(|m| {
            let id = m["id"].as_str()?.to_string();
            let aliases = m["aliases"]
                .as_array()
                .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            Some(PeerModel {
                id,
                aliases,
                state: m["state"].as_str().unwrap_or("unloaded").to_string(),
                active: m["worker"]["active"].as_u64().unwrap_or(0),
                entry: m.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn peer(url: &str, models: &[(&str, &str, u64)]) -> Peer {
        let data: Vec<Value> = models
            .iter()
            .map(|(id, state, active)| json!({ "id": id, "aliases": [format!("{id}-alias")], "state": state, "worker": { "active": active } }))
            .collect();
        let mut p = Peer::new(url.into());
        p.models = parse_models(&json!({ "data": data }));
        p
    }

    fn urls(c: Vec<&Peer>) -> Vec<&str> {
        c.into_iter().map(|p| p.url.as_str()).collect()
    }

    #[test]
    fn loaded_peers_first_then_the_least_busy() {
        let now = Instant::now();
        let peers = [
            peer("http://a", &[("m", "unloaded", 0)]),
            peer("http://b", &[("m", "ready", 5)]),
            peer("http://c", &[("m", "ready", 1), ("other", "ready", 0)]),
            peer("http://d", &[("m", "failed", 0)]),
            peer("http://e", &[("other", "ready", 0)]),
        ];
        assert_eq!(urls(candidates(&peers, "m", now)), ["http://c", "http://b", "http://a"]);
        assert_eq!(urls(candidates(&peers, "m-alias", now)), ["http://c", "http://b", "http://a"], "aliases count");
        // What this node sent since the last poll counts too.
        let mut peers = peers;
        peers[2].sent = 5;
        assert_eq!(urls(candidates(&peers, "m", now)), ["http://b", "http://c", "http://a"]);
        assert!(candidates(&peers, "nobody", now).is_empty());
    }

    #[test]
    fn a_peer_that_keeps_failing_is_skipped_for_a_while() {
        let now = Instant::now();
        let mut peers = [peer("http://a", &[("m", "ready", 0)]), peer("http://b", &[("m", "ready", 3)])];
        for _ in 0..BREAK_AFTER - 1 {
            peers[0].failed(now);
        }
        assert_eq!(urls(candidates(&peers, "m", now)), ["http://a", "http://b"], "not yet");
        peers[0].failed(now);
        assert_eq!(urls(candidates(&peers, "m", now)), ["http://b"]);
        assert_eq!(urls(candidates(&peers, "m", now + BREAK_FOR)), ["http://a", "http://b"], "then tried again");
        peers[0].succeeded();
        assert_eq!(urls(candidates(&peers, "m", now)), ["http://a", "http://b"]);
    }

    #[test]
    fn tasks_and_garbage_are_not_models() {
        let v = json!({ "data": [{ "id": "task:x", "task": { "name": "x" } }, { "no": "id" }, { "id": "m" }, 7] });
        let models = parse_models(&v);
        assert_eq!(models.len(), 1);
        assert_eq!((models[0].id.as_str(), models[0].state.as_str()), ("m", "unloaded"));
        assert!(parse_models(&json!("nonsense")).is_empty());
    }
}
