//! State transfer: fetching committed blocks from peers when this node is
//! behind, checking each block's commit certificate against genesis before
//! the driver applies it. An observer node follows the chain the same way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use govchain_crypto::Digest;
use govchain_exec::block_hash;
use govchain_pbft::verify_commit_certificate;
use govchain_proto::consensus::v1::FetchBlocksRequest;
use govchain_proto::consensus::v1::consensus_service_client::ConsensusServiceClient;
use govchain_proto::types::v1::CommittedBlock;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt as _;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};

use crate::config::{Peer, Settings};
use crate::driver::DriverEvent;
use crate::peers::PEER_MESSAGE_BYTES_MAX;
use crate::shared::Shared;
use crate::tls::peer_client_config;

/// Blocks handed to the driver at once; also the most a peer sends per call.
pub const SYNC_BATCH_BLOCKS_MAX: u64 = 128;

/// The target of an observer's requests: as far as the peers have.
const FOLLOW: u64 = u64::MAX;
/// How often an observer asks for new blocks.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

/// An observer's loop: keep asking the validators for blocks past the head.
pub async fn follow(sync: mpsc::Sender<SyncRequest>, peers: Vec<u32>) {
    loop {
        if sync
            .send(SyncRequest {
                target: FOLLOW,
                peers: peers.clone(),
            })
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(FOLLOW_INTERVAL).await;
    }
}

/// "Catch up to `target`; these peers have it."
#[derive(Debug)]
pub struct SyncRequest {
    pub target: u64,
    pub peers: Vec<u32>,
}

struct Syncer {
    shared: Arc<Shared>,
    driver: mpsc::Sender<DriverEvent>,
    peers: Vec<Peer>,
    tls: BTreeMap<String, tonic::transport::ClientTlsConfig>,
    channels: BTreeMap<u32, Channel>,
}

/// Starts the state-transfer task; send it requests.
pub fn start(
    settings: &Settings,
    shared: Arc<Shared>,
    driver: mpsc::Sender<DriverEvent>,
) -> mpsc::Sender<SyncRequest> {
    let (sender, receiver) = mpsc::channel(64);
    let tls = settings
        .peers
        .iter()
        .map(|p| (p.name.clone(), peer_client_config(settings, &p.name)))
        .collect();
    let syncer = Syncer {
        shared,
        driver,
        peers: settings.peers.clone(),
        tls,
        channels: BTreeMap::new(),
    };
    tokio::spawn(syncer.run(receiver));
    sender
}

impl Syncer {
    async fn run(mut self, mut requests: mpsc::Receiver<SyncRequest>) {
        while let Some(mut request) = requests.recv().await {
            // Only the newest target matters.
            while let Ok(newer) = requests.try_recv() {
                if newer.target >= request.target {
                    request = newer;
                }
            }
            self.catch_up(request).await;
        }
    }

    async fn catch_up(&mut self, request: SyncRequest) {
        let start = self.shared.ledger.head().height;
        let started = std::time::Instant::now();
        let mut candidates: Vec<u32> = request.peers.clone();
        candidates.extend(
            self.peers
                .iter()
                .map(|p| p.index)
                .filter(|i| !request.peers.contains(i)),
        );
        for peer in candidates {
            while self.shared.ledger.head().height < request.target {
                match self.fetch_batch(peer, request.target).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(err) => {
                        debug!(peer = %self.shared.validator_name(peer), error = %err, "state transfer from peer failed");
                        break;
                    }
                }
            }
            if self.shared.ledger.head().height >= request.target {
                break;
            }
        }
        let end = self.shared.ledger.head().height;
        if request.target == FOLLOW {
            if end > start {
                debug!(node = %self.shared.name, from = start, to = end, "followed the chain");
            }
        } else if end > start {
            let seconds = started.elapsed().as_secs_f64().max(1e-6);
            let blocks_per_second = ((end - start) as f64 / seconds).round();
            info!(node = %self.shared.name, from = start, to = end, target = request.target, blocks_per_second, "caught up by state transfer");
        } else {
            warn!(node = %self.shared.name, height = end, target = request.target, "state transfer made no progress");
        }
    }

    async fn channel(&mut self, peer: u32) -> anyhow::Result<Channel> {
        if let Some(channel) = self.channels.get(&peer) {
            return Ok(channel.clone());
        }
        let config = self
            .peers
            .iter()
            .find(|p| p.index == peer)
            .ok_or_else(|| anyhow::anyhow!("no address for validator {peer}"))?;
        let tls = self
            .tls
            .get(&config.name)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no TLS settings for {}", config.name))?;
        let channel = Endpoint::from_shared(config.address.clone())?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await?;
        self.channels.insert(peer, channel.clone());
        Ok(channel)
    }

    /// Fetches, checks and hands over one batch; returns how many blocks
    /// were applied.
    async fn fetch_batch(&mut self, peer: u32, target: u64) -> anyhow::Result<u64> {
        let channel = self.channel(peer).await?;
        let mut client =
            ConsensusServiceClient::new(channel).max_decoding_message_size(PEER_MESSAGE_BYTES_MAX);
        let head = self.shared.ledger.head();
        let from = head.height + 1;
        let to = target.min(head.height + SYNC_BATCH_BLOCKS_MAX);
        let request = FetchBlocksRequest {
            from_height: from,
            to_height: to,
        };
        let mut stream = match client.fetch_blocks(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                self.channels.remove(&peer);
                anyhow::bail!("{status}");
            }
        };
        let mut batch = Vec::new();
        let mut parent = head.hash;
        let mut height = from;
        while let Some(response) = stream.next().await {
            let block = response?
                .block
                .ok_or_else(|| anyhow::anyhow!("empty response"))?;
            parent = self.verify(&block, height, &parent)?;
            batch.push(block);
            height += 1;
        }
        let count = batch.len() as u64;
        if count == 0 {
            return Ok(0);
        }
        let (ack, applied) = oneshot::channel();
        self.driver
            .send(DriverEvent::Synced { blocks: batch, ack })
            .await?;
        Ok(applied.await?)
    }

    /// A fetched block must be at `height`, link to `parent`, and carry a
    /// valid commit certificate for its own hash. Returns its hash.
    fn verify(
        &self,
        block: &CommittedBlock,
        height: u64,
        parent: &Digest,
    ) -> anyhow::Result<Digest> {
        let body = block
            .block
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("block {height} has no body"))?;
        let header = govchain_exec::decode_header(body)?;
        let hash = block_hash(&body.header);
        anyhow::ensure!(
            header.height == height,
            "peer sent height {} for {height}",
            header.height
        );
        anyhow::ensure!(
            header.parent_hash == parent.as_bytes(),
            "block {height} does not link to our head"
        );
        let certificate = block
            .certificate
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("block {height} has no certificate"))?;
        let certificate =
            crate::wire::certificate_from_wire(certificate).map_err(anyhow::Error::msg)?;
        verify_commit_certificate(
            self.shared.chain_id(),
            &self.shared.validators,
            height,
            &hash,
            &certificate,
        )?;
        Ok(hash)
    }
}
