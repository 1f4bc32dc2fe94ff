//! Learning the peers' models: every interval, the peer URLs (the static ones, and every
//! address the DNS name resolves to) are asked for their local models, all at once.

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use std::sync::Arc;
use std::time::Duration;

use super::table::{parse_models, PeerModel};
use super::{Fleet, HOP, NODE_ID};

/// The most a peer's `/v1/models` answer may hold, in bytes.
const MAX_LIST_BYTES: usize = 4 << 20;
/// The most addresses taken from the DNS name.
const MAX_DNS_PEERS: usize = 64;

/// Polls until the process ends.
pub async fn run(fleet: Arc<Fleet>) {
    let resolver = match fleet.cfg.dns.as_ref().map(|_| resolver(fleet.cfg.dns_server)).transpose() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "no DNS resolver: peers_dns is not resolved");
            None
        }
    };
    loop {
        poll_once(&fleet, resolver.as_ref()).await;
        tokio::time::sleep(fleet.cfg.interval).await;
    }
}

/// A resolver that asks `server`, or the system's servers; nothing is cached, so every poll
/// sees the name as it is now.
fn resolver(server: Option<std::net::SocketAddr>) -> Result<TokioResolver, String> {
    let mut builder = match server {
        Some(addr) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut ns.connections {
                c.port = addr.port();
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio().map_err(|e| e.to_string())?,
    };
    builder.options_mut().cache_size = 0;
    builder.build().map_err(|e| e.to_string())
}

/// One round: resolve, ask every peer, install the answers.
pub async fn poll_once(fleet: &Fleet, resolver: Option<&TokioResolver>) {
    let urls = urls(fleet, resolver).await;
    let asks = urls.iter().map(|u| ask(fleet, u));
    let answers = futures::future::join_all(asks).await;
    let polled = urls
        .into_iter()
        .zip(answers)
        // A peer that is this node (found through the DNS name) is left out.
        .filter_map(|(u, a)| match a {
            Answer::Itself => None,
            Answer::Models(m) => Some((u, Ok(m))),
            Answer::Failed(e) => {
                tracing::debug!(peer = %u, error = %e, "peer not reached");
                Some((u, Err(e)))
            }
        })
        .collect();
    fleet.install(polled);
}

/// The static peers, then the DNS name's addresses (deduplicated, in order).
async fn urls(fleet: &Fleet, resolver: Option<&TokioResolver>) -> Vec<String> {
    let mut out: Vec<String> = fleet.cfg.peers.iter().map(|u| u.trim_end_matches('/').to_string()).collect();
    let (Some(name_port), Some(resolver)) = (&fleet.cfg.dns, resolver) else { return out };
    let Some((name, port)) = name_port.rsplit_once(':') else { return out };
    match resolver.lookup_ip(name).await {
        Ok(ips) => {
            for ip in ips.iter().take(MAX_DNS_PEERS) {
                let u = format!("http://{}", std::net::SocketAddr::new(ip, port.parse().unwrap_or(8080)));
                if !out.contains(&u) {
                    out.push(u);
                }
            }
        }
        Err(e) => tracing::warn!(name = %name, error = %e, "peers_dns did not resolve"),
    }
    out
}

enum Answer {
    Models(Vec<PeerModel>),
    Itself,
    Failed(String),
}

/// Asks one peer for its local models.
async fn ask(fleet: &Fleet, url: &str) -> Answer {
    let timeout = fleet.cfg.interval.clamp(Duration::from_secs(1), Duration::from_secs(5));
    let mut req = fleet.client.get(format!("{url}/v1/models")).header(HOP, "1").timeout(timeout);
    if let Some(k) = &fleet.cfg.key {
        req = req.bearer_auth(k);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return Answer::Failed(format!("cannot be reached: {e}")),
    };
    if resp.headers().get(NODE_ID).and_then(|v| v.to_str().ok()) == Some(fleet.node_id.as_str()) {
        return Answer::Itself;
    }
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Answer::Failed(format!(
            "refused this node's key ({status}): set peer_api_key_env to the variable holding the peers' API key"
        ));
    }
    if !status.is_success() {
        return Answer::Failed(format!("answered {status} to GET /v1/models"));
    }
    let body = match super::read_capped(resp, MAX_LIST_BYTES).await {
        Ok(b) => b,
        Err(e) => return Answer::Failed(format!("its model list {e}")),
    };
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => Answer::Models(parse_models(&v, url)),
        Err(e) => Answer::Failed(format!("its model list is not JSON: {e}")),
    }
}
