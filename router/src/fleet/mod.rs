//! Nodes that route any model ID to the node that has it. Each node polls its peers' own
//! models (`GET /v1/models` with [`HOP`], which lists a node's local models only), keeps a
//! table of model → peers ([`table`]), and forwards a request for a model it does not have, or
//! cannot serve now, to the best peer that has it. A forwarded request carries [`HOP`] and is
//! never forwarded again, so two nodes that both lack a model answer 404 rather than loop.
//! Budgets and eviction stay per node.

pub mod poll;
pub mod table;

use serde_json::Value;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use table::Peer;

/// Marks a request sent by another node: it is answered here or not at all.
pub const HOP: &str = "x-model-bucket-hop";
/// The most peer models one listing holds, all peers together.
pub const MAX_LISTED: usize = 4096;
/// On a forwarded answer: the peer that gave it.
pub const NODE: &str = "x-model-bucket-node";
/// On `/v1/models`: the answering node's random ID (a DNS name lists every node, this one too).
pub const NODE_ID: &str = "x-model-bucket-node-id";

/// A peer's answer body, read piece by piece and cut off past `max` bytes. The error says
/// why, to follow "its answer" or the like.
pub async fn read_capped(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) if body.len() + c.len() <= max => body.extend_from_slice(&c),
            Ok(Some(_)) => return Err(format!("is over {} MiB", max >> 20)),
            Ok(None) => return Ok(body),
            Err(e) => return Err(format!("was cut off: {e}")),
        }
    }
}

/// Where the peers are and how to talk to them.
#[derive(Debug, Clone, Default)]
pub struct FleetConfig {
    /// Peer base URLs (`http://host:port`).
    pub peers: Vec<String>,
    /// `NAME:PORT`, resolved at every poll to all its addresses (a Kubernetes headless
    /// Service gives one per pod).
    pub dns: Option<String>,
    /// The DNS server to ask (`IP:PORT`); none: the system's (`/etc/resolv.conf`).
    pub dns_server: Option<std::net::SocketAddr>,
    /// The API key peers want, if any.
    pub key: Option<String>,
    /// Time between polls.
    pub interval: Duration,
}

/// One peer as `/admin/peers` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerView {
    pub url: String,
    pub models: usize,
    pub failures: u32,
    /// Why the last poll failed, if it did.
    pub error: Option<String>,
}

/// This node's view of the fleet.
pub struct Fleet {
    /// This node's random ID.
    pub node_id: String,
    pub cfg: FleetConfig,
    pub client: reqwest::Client,
    /// Never held across an await.
    peers: RwLock<Vec<Peer>>,
}

impl Fleet {
    pub fn new(cfg: FleetConfig) -> Arc<Fleet> {
        let node_id = format!("{:016x}", std::collections::hash_map::RandomState::new().build_hasher().finish());
        // No redirects (a peer could send prompts or the key elsewhere) and no proxy from the
        // environment (the key would go to it).
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .expect("an HTTP client with default settings builds");
        Arc::new(Fleet { node_id, cfg, client, peers: RwLock::new(Vec::new()) })
    }

    /// Whether any peer is configured (statically or by DNS).
    pub fn configured(cfg: &FleetConfig) -> bool {
        !cfg.peers.is_empty() || cfg.dns.is_some()
    }

    /// The peers that can take a request for model `name`, best first (their URLs).
    pub fn candidates(&self, name: &str) -> Vec<String> {
        let peers = self.peers.read().expect("fleet lock");
        table::candidates(&peers, name, Instant::now()).into_iter().map(|p| p.url.clone()).collect()
    }

    /// Whether some usable peer has model `name` (able to chat, for `chat`).
    pub fn serves(&self, name: &str, chat: bool) -> bool {
        let peers = self.peers.read().expect("fleet lock");
        table::candidates(&peers, name, Instant::now()).iter().any(|p| {
            p.model(name).is_some_and(|m| {
                !chat || m.entry["capabilities"].as_array().is_some_and(|c| c.iter().any(|c| c == "chat"))
            })
        })
    }

    /// Whether some usable peer has model `name` loaded now.
    pub fn ready(&self, name: &str) -> bool {
        let peers = self.peers.read().expect("fleet lock");
        table::candidates(&peers, name, Instant::now())
            .iter()
            .any(|p| p.model(name).is_some_and(|m| m.state == "ready"))
    }

    /// The entry of the peers' model `name` (ID or alias), with its node.
    pub fn entry(&self, name: &str) -> Option<Arc<Value>> {
        let peers = self.peers.read().expect("fleet lock");
        peers.iter().find_map(|p| p.model(name).map(|m| m.entry.clone()))
    }

    /// The peers' model entries for a listing, each with its node, shared (not copied): a model
    /// several peers have is listed once, from the first; one whose ID or an alias is `local`
    /// (a name this node answers for itself) is left out; at most [`MAX_LISTED`].
    pub fn entries(&self, local: impl Fn(&str) -> bool) -> Vec<Arc<Value>> {
        let peers = self.peers.read().expect("fleet lock");
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for m in peers.iter().flat_map(|p| &p.models) {
            if out.len() >= MAX_LISTED {
                break;
            }
            if local(&m.id) || m.aliases.iter().any(|a| local(a)) {
                continue;
            }
            if seen.insert(m.id.as_str()) {
                out.push(m.entry.clone());
            }
        }
        out
    }

    /// The peers that answered their last poll.
    pub fn reachable(&self) -> Vec<String> {
        let peers = self.peers.read().expect("fleet lock");
        peers.iter().filter(|p| p.error.is_none()).map(|p| p.url.clone()).collect()
    }

    /// Peers, their model counts and last errors.
    pub fn views(&self) -> Vec<PeerView> {
        let peers = self.peers.read().expect("fleet lock");
        peers
            .iter()
            .map(|p| PeerView {
                url: p.url.clone(),
                models: p.models.len(),
                failures: p.failures,
                error: p.error.clone(),
            })
            .collect()
    }

    /// Why peers could not be asked, for a request no node could take.
    pub fn errors(&self) -> Vec<String> {
        let peers = self.peers.read().expect("fleet lock");
        peers.iter().filter_map(|p| p.error.as_ref().map(|e| format!("{}: {e}", p.url))).collect()
    }

    /// A request is being sent to `url`: it counts as busy there until the next poll.
    pub fn sending(&self, url: &str) {
        self.with_peer(url, |p| p.sent = p.sent.saturating_add(1));
    }

    /// A request forwarded to `url` went through (`ok`) or could not reach it.
    pub fn record(&self, url: &str, ok: bool) {
        self.with_peer(url, |p| if ok { p.succeeded() } else { p.failed(Instant::now()) });
    }

    /// Applies `f` to the peer at `url`, if it is still one.
    fn with_peer(&self, url: &str, f: impl FnOnce(&mut Peer)) {
        let mut peers = self.peers.write().expect("fleet lock");
        if let Some(p) = peers.iter_mut().find(|p| p.url == url) {
            f(p);
        }
    }

    /// Replaces the table with a poll's results: for each peer URL, its models or why it could
    /// not be asked. Peers no longer listed are dropped; the others keep their failure counts.
    pub(crate) fn install(&self, polled: Vec<(String, Result<Vec<table::PeerModel>, String>)>) {
        let mut peers = self.peers.write().expect("fleet lock");
        let mut old = std::mem::take(&mut *peers);
        let now = Instant::now();
        for (url, result) in polled {
            let mut p = match old.iter().position(|p| p.url == url) {
                Some(i) => old.swap_remove(i),
                None => Peer::new(url),
            };
            match result {
                Ok(models) => {
                    p.models = models;
                    p.succeeded();
                    p.error = None;
                    p.sent = 0;
                }
                Err(e) => {
                    // Its models are gone from this node's list until it answers again.
                    p.models.clear();
                    p.failed(now);
                    p.error = Some(e);
                }
            }
            peers.push(p);
        }
    }
}
