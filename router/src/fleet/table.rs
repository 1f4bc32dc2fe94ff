//! What this node knows of its peers: each peer's models as its last poll saw them, and how
//! reliable it has been. Which peer gets a request is a pure function of that ([`candidates`]).

use serde_json::{Map, Value};
use std::sync::Arc;
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
    /// The peer's entry as this node lists it: the known fields only, bounded, with `node`
    /// added; built once per poll and shared by every listing.
    pub entry: Arc<Value>,
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
/// The longest string kept from a peer's entry, in bytes (longer ones are dropped).
pub const MAX_FIELD_BYTES: usize = 256;
/// The most items kept of a list in a peer's entry (aliases, capabilities, adapters).
pub const MAX_LIST_ITEMS: usize = 16;

/// Reads a peer's `/v1/models` answer into its models, `node` being the peer's URL: tasks,
/// entries without a usable ID and names that are this node's task syntax (`task:`) are left
/// out; at most [`MAX_PEER_MODELS`]. A peer may be compromised: only the fields this node lists
/// are kept, each bounded ([`clean`]).
pub fn parse_models(v: &Value, node: &str) -> Vec<PeerModel> {
    let Some(data) = v["data"].as_array() else { return Vec::new() };
    fn name(s: &Value) -> Option<&str> {
        s.as_str().filter(|s| s.len() <= MAX_FIELD_BYTES && !s.starts_with("task:"))
    }
    data.iter()
        .filter(|m| m["task"].is_null())
        .take(MAX_PEER_MODELS)
        .filter_map(|m| {
            let id = name(&m["id"])?.to_string();
            let mut entry = clean(m);
            let aliases: Vec<String> = entry["aliases"]
                .as_array()
                .map(|a| a.iter().filter_map(name).map(str::to_string).collect())
                .unwrap_or_default();
            entry["id"] = Value::String(id.clone());
            entry["aliases"] = aliases.iter().map(|a| Value::String(a.clone())).collect();
            entry["node"] = Value::String(node.to_string());
            Some(PeerModel {
                id,
                state: entry["state"].as_str().unwrap_or("unloaded").to_string(),
                active: entry["worker"]["active"].as_u64().unwrap_or(0),
                aliases,
                entry: Arc::new(entry),
            })
        })
        .collect()
}

/// The fields of a model entry this node passes on, each bounded: short strings, numbers,
/// lists of short strings, the worker's numbers and the adapters' index, file and size.
fn clean(m: &Value) -> Value {
    const TEXT: [&str; 8] =
        ["object", "owned_by", "architecture", "parameters", "quantization", "state", "base", "error"];
    const NUMBERS: [&str; 5] = ["created", "context_length", "size_bytes", "lora_scale", "progress"];
    const WORKER: [&str; 5] = ["context_per_request", "slots", "load_ms", "memory_bytes", "active"];
    let text = |v: &Value| v.as_str().filter(|s| s.len() <= MAX_FIELD_BYTES).map(|s| Value::String(s.to_string()));
    let number = |v: &Value| v.is_number().then(|| v.clone());
    let mut out = Map::new();
    for k in TEXT {
        if let Some(v) = text(&m[k]) {
            out.insert(k.into(), v);
        }
    }
    for k in NUMBERS {
        if let Some(v) = number(&m[k]) {
            out.insert(k.into(), v);
        }
    }
    for k in ["aliases", "capabilities"] {
        if let Some(a) = m[k].as_array() {
            out.insert(k.into(), a.iter().filter_map(text).take(MAX_LIST_ITEMS).collect());
        }
    }
    if m["worker"].is_object() {
        let w: Map<String, Value> =
            WORKER.iter().filter_map(|k| number(&m["worker"][*k]).map(|v| (k.to_string(), v))).collect();
        out.insert("worker".into(), Value::Object(w));
    }
    if let Some(a) = m["adapters"].as_array() {
        let adapters = a.iter().take(MAX_LIST_ITEMS).map(|x| {
            let mut o = Map::new();
            for (k, v) in
                [("id", number(&x["id"])), ("file", text(&x["file"])), ("size_bytes", number(&x["size_bytes"]))]
            {
                if let Some(v) = v {
                    o.insert(k.into(), v);
                }
            }
            Value::Object(o)
        });
        out.insert("adapters".into(), adapters.collect());
    }
    Value::Object(out)
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
        p.models = parse_models(&json!({ "data": data }), url);
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
        let v = json!({ "data": [{ "id": "task:x", "task": { "name": "x" } }, { "no": "id" }, { "id": "m" }, 7,
            { "id": "task:shadow" }, { "id": "x".repeat(MAX_FIELD_BYTES + 1) }] });
        let models = parse_models(&v, "http://p");
        assert_eq!(models.len(), 1);
        assert_eq!((models[0].id.as_str(), models[0].state.as_str()), ("m", "unloaded"));
        assert!(parse_models(&json!("nonsense"), "http://p").is_empty());
    }

    #[test]
    fn a_peers_entry_keeps_only_known_bounded_fields() {
        let big = "y".repeat(100_000);
        let v = json!({ "data": [{
            "id": "m", "aliases": ["m-a", "task:evil", big.clone()], "state": "ready", "capabilities": ["chat"],
            "context_length": 4096, "worker": { "active": 2, "pid": 7, "junk": big.clone() },
            "extra": big.clone(), "error": big, "adapters": [{ "id": 0, "file": "a.gguf", "path": "/secret" }]
        }] });
        let m = &parse_models(&v, "http://p")[0];
        assert_eq!(m.aliases, ["m-a"]);
        assert_eq!(m.active, 2);
        let e = &*m.entry;
        assert_eq!(e["node"], "http://p");
        assert_eq!(e["worker"], json!({ "active": 2 }));
        assert_eq!(e["adapters"], json!([{ "id": 0, "file": "a.gguf" }]));
        assert!(e.get("extra").is_none() && e.get("error").is_none());
        assert!(e.to_string().len() < 1024, "{e}");
    }
}
