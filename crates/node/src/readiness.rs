//! Readiness: whether this node is caught up with the chain, for gRPC
//! health (service `""`), `GetStatus.syncing` and Kubernetes' readiness
//! probe.
//!
//! A node is *syncing* while it starts (until it has asked its peers how
//! far the chain is) and while it is more than [`SYNC_LAG_BLOCKS_MAX`]
//! blocks behind the height its peers claim. What peers claim is taken
//! with Byzantine peers in mind: the (f+1)-th highest claim, which at least
//! one honest validator has reached, so f liars can not keep a node out of
//! service by claiming heights nobody has. With fewer than f+1 answers the
//! node keeps its status (NOT_SERVING while it starts): f liars alone
//! could otherwise make a node that is behind look caught up.
//! Liveness (health service [`LIVENESS_SERVICE`]) is separate: a syncing
//! node is alive, and restarting it would only delay its catch-up.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use govchain_proto::node::v1::GetStatusRequest;
use govchain_proto::node::v1::node_service_client::NodeServiceClient;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{info, warn};

use crate::config::Settings;
use crate::requests::SyncRequest;
use crate::shared::Shared;
use crate::tls::peer_client_config;

/// Blocks a node may be behind its peers and still be ready: a few
/// blocks are normal between commit rounds.
pub const SYNC_LAG_BLOCKS_MAX: u64 = 8;
/// How often peers are asked for their height.
pub const READINESS_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long one peer may take to answer.
const PEER_STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// The health service that only says whether the process is alive, for
/// liveness probes; `""` (overall) is readiness.
pub const LIVENESS_SERVICE: &str = "liveness";

/// The height that the peers' claims show the chain has reached, given
/// that up to `f` of them may lie: the (f+1)-th highest claim, which an
/// honest peer has reached. `None` with fewer than f+1 answers: then no
/// judgement is safe either way (f liars could claim a height nobody has,
/// or a low one to make a node that is behind look caught up).
pub fn claimed_height(mut claims: Vec<u64>, f: usize) -> Option<u64> {
    claims.sort_unstable_by(|a, b| b.cmp(a));
    claims.get(f).copied()
}

/// Whether a node at `height` is syncing, given what its peers claim.
pub fn is_syncing(height: u64, claimed: Option<u64>) -> bool {
    claimed.is_some_and(|claimed| claimed > height.saturating_add(SYNC_LAG_BLOCKS_MAX))
}

/// Clients for the peers' `GetStatus`, connected when first used.
pub struct PeerAddresses(Vec<(u32, NodeServiceClient<Channel>)>);

impl PeerAddresses {
    pub fn of(settings: &Settings) -> Self {
        let mut peers = Vec::new();
        for peer in &settings.peers {
            match Endpoint::from_shared(peer.address.clone())
                .and_then(|e| e.tls_config(peer_client_config(settings, &peer.name)))
            {
                Ok(endpoint) => peers.push((
                    peer.index,
                    NodeServiceClient::new(
                        endpoint.connect_timeout(PEER_STATUS_TIMEOUT).connect_lazy(),
                    ),
                )),
                Err(err) => {
                    warn!(peer = %peer.name, error = %err, "cannot ask this peer for its height")
                }
            }
        }
        Self(peers)
    }
}

/// Asks the peers for their height every [`READINESS_POLL_INTERVAL`],
/// updates [`Readiness`] and gRPC health, and asks the sync task to catch
/// up when the node is behind. Runs until the node stops.
pub async fn watch(
    peers: PeerAddresses,
    shared: Arc<Shared>,
    health: HealthReporter,
    sync: mpsc::Sender<SyncRequest>,
) {
    let peers = peers.0;
    health
        .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
        .await;
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let mut was_syncing = None;
    let mut timer = tokio::time::interval(READINESS_POLL_INTERVAL);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        timer.tick().await;
        let claims = ask_heights(&peers).await;
        // The set in force now: governance may have changed it (and f).
        let f = (shared.membership().set.len().saturating_sub(1) / 3) as usize;
        let claimed = claimed_height(claims.iter().map(|(_, h)| *h).collect(), f);
        let height = shared.ledger.head().height;
        let syncing = match claimed {
            Some(_) => is_syncing(height, claimed),
            // A node without peers (a one-validator chain) is the chain.
            None if peers.is_empty() => false,
            // Too few answers to judge: the status stays as it was, which
            // is NOT_SERVING while the node starts.
            None => was_syncing.unwrap_or(true),
        };
        shared.readiness.syncing.store(syncing, Ordering::Release);
        if let Some(target) = claimed.filter(|_| syncing) {
            let ahead = claims
                .iter()
                .filter(|(_, h)| *h >= target)
                .map(|(index, _)| *index)
                .collect();
            // A full queue means a transfer is under way.
            let _ = sync.try_send(SyncRequest {
                target,
                peers: ahead,
            });
        }
        if was_syncing != Some(syncing) {
            let status = if syncing {
                warn!(node = %shared.name, height, peers_at = claimed.unwrap_or(0), lag_max = SYNC_LAG_BLOCKS_MAX, "not ready: catching up with the peers (health NOT_SERVING)");
                ServingStatus::NotServing
            } else {
                info!(node = %shared.name, height, peers_at = claimed.unwrap_or(0), answered = claims.len(), "ready: caught up with the peers (health SERVING)");
                ServingStatus::Serving
            };
            health.set_service_status("", status).await;
            was_syncing = Some(syncing);
        }
    }
}

/// Each peer's answer within [`PEER_STATUS_TIMEOUT`], by validator index;
/// peers that fail or take longer are left out. Asked concurrently.
async fn ask_heights(peers: &[(u32, NodeServiceClient<Channel>)]) -> Vec<(u32, u64)> {
    let mut asks = tokio::task::JoinSet::new();
    for (index, client) in peers {
        let mut client = client.clone();
        let index = *index;
        asks.spawn(async move {
            let answer =
                tokio::time::timeout(PEER_STATUS_TIMEOUT, client.get_status(GetStatusRequest {}))
                    .await;
            match answer {
                Ok(Ok(status)) => Some((index, status.into_inner().height)),
                _ => None,
            }
        });
    }
    let mut heights = Vec::new();
    while let Some(answer) = asks.join_next().await {
        if let Ok(Some(height)) = answer {
            heights.push(height);
        }
    }
    heights
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claimed_height_ignores_up_to_f_liars() {
        // n = 4, f = 1: one peer claims a height nobody has.
        assert_eq!(claimed_height(vec![1_000_000, 40, 39], 1), Some(40));
        // n = 7, f = 2: two liars.
        assert_eq!(claimed_height(vec![900, 12, 10, 901, 11, 12], 2), Some(12));
        // Fewer answers than f + 1: no judgement.
        assert_eq!(claimed_height(vec![500], 1), None);
        assert_eq!(claimed_height(vec![500, 20], 2), None);
        assert_eq!(claimed_height(Vec::new(), 1), None);
        assert_eq!(claimed_height(vec![7], 0), Some(7));
    }

    #[test]
    fn syncing_means_more_than_the_allowed_lag_behind() {
        assert!(!is_syncing(100, None), "no peer answered: not known to lag");
        assert!(!is_syncing(100, Some(100)));
        assert!(!is_syncing(100, Some(100 + SYNC_LAG_BLOCKS_MAX)));
        assert!(is_syncing(100, Some(101 + SYNC_LAG_BLOCKS_MAX)));
        assert!(!is_syncing(200, Some(100)), "ahead of the peers");
        assert!(!is_syncing(u64::MAX, Some(u64::MAX)));
    }
}
