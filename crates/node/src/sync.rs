//! State transfer: fetching committed blocks from peers when this node is
//! behind, checking each block's commit certificate against genesis before
//! the driver applies it. An observer node follows the chain the same way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use govchain_crypto::Digest;
use govchain_exec::check_fetched_block;
use govchain_pbft::{Transferred, ValidatorSet, check_transferred};
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
use crate::requests::SyncRequest;
use crate::shared::Shared;
use crate::supervise::Fatal;
use crate::tls::peer_client_config;

/// Blocks handed to the driver at once; also the most a peer sends per call.
pub const SYNC_BATCH_BLOCKS_MAX: u64 = 128;

/// How long one batch may take to arrive; a peer that stalls longer is
/// left for another.
const SYNC_BATCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The target of an observer's requests: as far as the peers have.
const FOLLOW: u64 = u64::MAX;
/// How often an observer asks for new blocks.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

/// A node that does not vote (an observer, or a validator governance
/// removed) keeps asking the validators for blocks past the head.
pub async fn follow(sync: mpsc::Sender<SyncRequest>, peers: Vec<u32>, shared: Arc<Shared>) {
    loop {
        if shared.voting.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep(FOLLOW_INTERVAL).await;
            continue;
        }
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
    fatal: &Fatal,
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
    fatal.spawn_task("state transfer", syncer.run(receiver));
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
                        warn!(node = %self.shared.name, peer = %self.shared.validator_name(peer), error = %err, "state transfer from peer failed; trying another");
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
    /// were applied. Any fault of the peer (a block that does not check, more
    /// blocks than asked, a stream that stalls) is an error, and the caller
    /// moves on to another peer.
    async fn fetch_batch(&mut self, peer: u32, target: u64) -> anyhow::Result<u64> {
        let fetched = tokio::time::timeout(SYNC_BATCH_TIMEOUT, self.fetch_checked(peer, target))
            .await
            .unwrap_or_else(|_| {
                Err(anyhow::anyhow!(
                    "no complete batch within {SYNC_BATCH_TIMEOUT:?}"
                ))
            });
        let batch = match fetched {
            Ok(batch) => batch,
            Err(err) => {
                // A fresh connection next time: the peer may have been
                // replaced, and a stalled stream must not be reused.
                self.channels.remove(&peer);
                return Err(err);
            }
        };
        let count = batch.len() as u64;
        if count == 0 {
            return Ok(0);
        }
        let (ack, applied) = oneshot::channel();
        self.driver
            .send(DriverEvent::Synced { blocks: batch, ack })
            .await?;
        let applied = applied.await?;
        anyhow::ensure!(
            applied == count,
            "this node applied {applied} of the {count} certified blocks (see the driver's error)"
        );
        Ok(applied)
    }

    /// Fetches the blocks after the head, up to `target` and at most
    /// [`SYNC_BATCH_BLOCKS_MAX`], and checks each one as fully as a proposal
    /// is checked, apart from executing it (see [`check_fetched`]).
    async fn fetch_checked(
        &mut self,
        peer: u32,
        target: u64,
    ) -> anyhow::Result<Vec<CommittedBlock>> {
        let channel = self.channel(peer).await?;
        let mut client =
            ConsensusServiceClient::new(channel).max_decoding_message_size(PEER_MESSAGE_BYTES_MAX);
        let head = self.shared.ledger.head();
        let from = head.height + 1;
        let to = target.min(head.height + SYNC_BATCH_BLOCKS_MAX);
        if to < from {
            // Consensus caught up meanwhile.
            return Ok(Vec::new());
        }
        let request = FetchBlocksRequest {
            from_height: from,
            to_height: to,
            headers_only: false,
        };
        let mut stream = client.fetch_blocks(request).await?.into_inner();
        let mut batch = Vec::new();
        let mut parent = head.hash;
        let mut height = from;
        // The set that certifies each block: the one in force after the
        // head, then whatever a fetched block's header announces.
        let mut validators = self.shared.membership().set.clone();
        while let Some(response) = stream.next().await {
            anyhow::ensure!(
                height <= to,
                "peer sent more blocks than the {} asked for ({from}..={to})",
                to - from + 1
            );
            let mut block = response?
                .block
                .ok_or_else(|| anyhow::anyhow!("empty response"))?;
            let shared = self.shared.clone();
            // Signature verification is CPU work: off the async runtime.
            let set = validators.clone();
            let next;
            (block, next) = tokio::task::spawn_blocking(move || {
                check_fetched(&shared, &set, block, height, &parent)
            })
            .await??;
            if let Some(next) = next {
                validators = next;
            }
            parent = Digest::from_slice(&block.block_hash)?;
            batch.push(block);
            height += 1;
        }
        Ok(batch)
    }
}

/// Checks a block a peer sent for `height` on top of `parent`: its hash is
/// recomputed from its header (the peer's `block_hash` is replaced by it),
/// it links to `parent`, its commit certificate is a quorum's for that hash,
/// and every transaction is well formed, validly signed and in the header's
/// transaction root ([`govchain_exec::check_fetched_block`]). What is left
/// for the driver is execution, which a block that passes here fails only
/// if this node's state has diverged.
fn check_fetched(
    shared: &Shared,
    validators: &ValidatorSet,
    mut block: CommittedBlock,
    height: u64,
    parent: &Digest,
) -> anyhow::Result<(CommittedBlock, Option<ValidatorSet>)> {
    let body = block
        .block
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("block {height} has no body"))?;
    let (hash, header) = check_fetched_block(shared.chain_id(), &shared.limits, body)
        .map_err(|err| anyhow::anyhow!("block {height}: {err}"))?;
    anyhow::ensure!(
        header.height == height,
        "peer sent height {} for {height}",
        header.height
    );
    anyhow::ensure!(
        block.block_hash.is_empty() || block.block_hash == hash.as_bytes(),
        "block {height}: the peer's block_hash is not the hash of the header"
    );
    let certificate = block
        .certificate
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("block {height} has no certificate"))?;
    let certificate =
        crate::wire::certificate_from_wire(certificate).map_err(anyhow::Error::msg)?;
    let named_parent = Digest::from_slice(&header.parent_hash)
        .map_err(|err| anyhow::anyhow!("block {height}: parent hash: {err}"))?;
    // The rule the simulator's state transfer runs too.
    check_transferred(
        shared.chain_id(),
        validators,
        height,
        parent,
        Transferred {
            digest: hash,
            parent: named_parent,
            certificate: &certificate,
        },
    )?;
    block.block_hash = hash.to_vec();
    let next = govchain_exec::governance::announced_set(&header.next_validators)
        .transpose()
        .map_err(|err| anyhow::anyhow!("block {height}: next_validators: {err}"))?;
    Ok((block, next))
}
