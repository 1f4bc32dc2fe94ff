//! A stored response lives on the node that made it. A response ID not stored here is asked
//! of the peers (`GET /v1/responses/{id}/conversation`, marked as a hop so that no peer asks
//! on), so a client may continue, read or delete a conversation through any node of a fleet.
//! Only IDs shaped as this server makes them are ever sent.

use futures::stream::{FuturesUnordered, StreamExt};
use std::time::Duration;

use super::store::{self, Stored, MAX_ENTRY_BYTES};
use crate::fleet::{read_capped, Fleet, HOP};

/// How long a peer may take to answer for a stored response.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One request to `url`'s `path` as a peer makes it; its body when the answer is a success.
async fn ask(fleet: &Fleet, method: reqwest::Method, url: &str, path: &str) -> Option<Vec<u8>> {
    let mut req = fleet.client.request(method, format!("{url}{path}")).header(HOP, "1").timeout(TIMEOUT);
    if let Some(k) = &fleet.cfg.key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    // The entry, and room for the fields around it.
    read_capped(resp, MAX_ENTRY_BYTES + (64 << 10)).await.ok()
}

/// The stored response `id` from the first peer that has it (all are asked at once).
pub async fn find(fleet: &Fleet, id: &str) -> Option<Stored> {
    if !store::valid_id(id) {
        return None;
    }
    let path = format!("/v1/responses/{id}/conversation");
    let mut asks: FuturesUnordered<_> = fleet
        .reachable()
        .into_iter()
        .map(|url| {
            let path = &path;
            async move {
                let body = ask(fleet, reqwest::Method::GET, &url, path).await?;
                let stored = serde_json::from_slice::<Stored>(&body).ok()?;
                // A peer answers for the ID asked, or not at all.
                (stored.response["id"] == id).then_some(stored)
            }
        })
        .collect();
    while let Some(found) = asks.next().await {
        if found.is_some() {
            return found;
        }
    }
    None
}

/// Deletes `id` wherever a peer stores it; whether one did.
pub async fn delete(fleet: &Fleet, id: &str) -> bool {
    if !store::valid_id(id) {
        return false;
    }
    let path = format!("/v1/responses/{id}");
    let asks = fleet.reachable().into_iter().map(|url| {
        let path = &path;
        async move { ask(fleet, reqwest::Method::DELETE, &url, path).await.is_some() }
    });
    futures::future::join_all(asks).await.into_iter().any(|deleted| deleted)
}
