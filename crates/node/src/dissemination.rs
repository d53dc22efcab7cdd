//! Dissemination: admitted transactions travel between validators once, in
//! batches named by digest; proposals name the batches.
//!
//! Admission seals the transactions its clients submitted into batches
//! (`Shared::seal`), keeps them in the `BatchStore` (`crate::batches`) and
//! forwards them to every peer. A peer's batch is checked whole on arrival (`batches::check_batch`: size,
//! form, every signature in one verification, the digest) and kept too. The
//! primary's pre-prepare names slices of batches instead of carrying the
//! transactions (`exec::encode_proposal`); a backup that lacks a named batch
//! asks the [`Fetcher`] for it, which fetches it from the proposer or any
//! other validator (`ConsensusService.FetchBatches`), checks it like a
//! forwarded one and tells the driver. Until then the backup does not
//! answer the proposal, so a primary that withholds a batch is replaced by
//! the view-change timer like one that sends nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use govchain_crypto::{Digest, PublicKey};
use govchain_proto::consensus::v1::FetchBatchesRequest;
use govchain_proto::consensus::v1::consensus_service_client::ConsensusServiceClient;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};

use crate::batches::{BATCH_BYTES_MAX, check_batch};
use crate::config::{Peer, Settings};
use crate::driver::DriverEvent;
use crate::peers::PEER_MESSAGE_BYTES_MAX;
use crate::requests::FetchRequest;
use crate::shared::Shared;
use crate::supervise::Fatal;
use crate::tls::peer_client_config;

/// Digests asked for in one `FetchBatches` call at most.
pub const FETCH_BATCHES_DIGESTS_MAX: usize = 64;
/// How long one peer may take to answer a fetch before the next is asked.
const FETCH_PEER_TIMEOUT: Duration = Duration::from_secs(2);
/// Fetch requests waiting for the fetcher; the driver drops a request when
/// full and asks again on its next check.
const FETCH_REQUESTS_MAX: usize = 64;
const _: () = assert!(BATCH_BYTES_MAX < PEER_MESSAGE_BYTES_MAX);
const _: () = assert!(FETCH_BATCHES_DIGESTS_MAX <= FETCH_REQUESTS_MAX);

/// Puts back into the store the batches this node's consensus records
/// hold ([`crate::consensus_store::encode_batches`]): those of proposals
/// it voted for and that are not yet in a block. Each is checked again as
/// a peer's would be. Returns how many were reloaded.
pub fn restore_batches(shared: &Shared) -> anyhow::Result<usize> {
    let batches = crate::consensus_store::load_batches(&shared.ledger)?;
    let count = batches.len();
    let payload_max = shared.limits.payload_bytes_max as usize;
    for wire in batches {
        let (batch, transactions) = check_batch(
            shared.chain_id(),
            payload_max,
            wire,
            PublicKey::from_slice,
            |_| false,
        )
        .map_err(|err| anyhow::anyhow!("a batch in the consensus records does not check: {err}"))?;
        let ids: Vec<Digest> = transactions.iter().map(|t| t.id).collect();
        shared.batches().insert(Arc::new(batch), &ids);
    }
    Ok(count)
}

/// The task that fetches missing batches for the driver.
pub struct Fetcher {
    shared: Arc<Shared>,
    driver: mpsc::Sender<DriverEvent>,
    peers: Vec<Peer>,
    tls: BTreeMap<String, tonic::transport::ClientTlsConfig>,
    channels: BTreeMap<u32, Channel>,
}

impl Fetcher {
    /// Starts the fetch task; send it requests (never waiting: a full
    /// queue means the driver asks again later).
    pub fn start(
        settings: &Settings,
        shared: Arc<Shared>,
        driver: mpsc::Sender<DriverEvent>,
        fatal: &Fatal,
    ) -> mpsc::Sender<FetchRequest> {
        let (sender, receiver) = mpsc::channel(FETCH_REQUESTS_MAX);
        let tls = settings
            .peers
            .iter()
            .map(|p| (p.name.clone(), peer_client_config(settings, &p.name)))
            .collect();
        let fetcher = Self {
            shared,
            driver,
            peers: settings.peers.clone(),
            tls,
            channels: BTreeMap::new(),
        };
        fatal.spawn_task("batch fetch", fetcher.run(receiver));
        sender
    }

    async fn run(mut self, mut requests: mpsc::Receiver<FetchRequest>) {
        while let Some(request) = requests.recv().await {
            let mut missing: Vec<Digest> = {
                let store = self.shared.batches();
                request
                    .digests
                    .into_iter()
                    .filter(|d| !store.contains(d))
                    .take(FETCH_BATCHES_DIGESTS_MAX)
                    .collect()
            };
            if missing.is_empty() {
                continue;
            }
            let mut order: Vec<u32> = vec![request.first];
            order.extend(
                self.peers
                    .iter()
                    .map(|p| p.index)
                    .filter(|i| *i != request.first),
            );
            for peer in order {
                if missing.is_empty() {
                    break;
                }
                match tokio::time::timeout(FETCH_PEER_TIMEOUT, self.fetch_from(peer, &missing))
                    .await
                {
                    Ok(Ok(got)) => missing.retain(|d| !got.contains(d)),
                    Ok(Err(err)) => {
                        warn!(node = %self.shared.name, peer = %self.shared.validator_name(peer), error = %err, "batch fetch from peer failed; trying another")
                    }
                    Err(_) => {
                        warn!(node = %self.shared.name, peer = %self.shared.validator_name(peer), "batch fetch from peer timed out; trying another")
                    }
                }
            }
            for digest in &missing {
                warn!(node = %self.shared.name, digest = %digest.short(), "no validator sent a batch a proposal names; the proposal is not accepted");
            }
            if self.driver.send(DriverEvent::BatchesArrived).await.is_err() {
                return;
            }
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
            .connect_timeout(FETCH_PEER_TIMEOUT)
            .connect()
            .await?;
        self.channels.insert(peer, channel.clone());
        Ok(channel)
    }

    /// Fetches `digests` from `peer`, keeps each batch that checks, and
    /// returns their digests. A batch the peer sends that was not asked
    /// for, or that does not check, is an error.
    async fn fetch_from(&mut self, peer: u32, digests: &[Digest]) -> anyhow::Result<Vec<Digest>> {
        let channel = match self.channel(peer).await {
            Ok(channel) => channel,
            Err(err) => {
                self.channels.remove(&peer);
                return Err(err);
            }
        };
        let mut client =
            ConsensusServiceClient::new(channel).max_decoding_message_size(PEER_MESSAGE_BYTES_MAX);
        let request = FetchBatchesRequest {
            digests: digests.iter().map(Digest::to_vec).collect(),
        };
        let mut stream = client.fetch_batches(request).await?.into_inner();
        let mut got = Vec::new();
        let payload_max = self.shared.limits.payload_bytes_max as usize;
        while let Some(response) = stream.next().await {
            let batch = response?
                .batch
                .ok_or_else(|| anyhow::anyhow!("response without a batch"))?;
            let claimed = Digest::from_slice(&batch.digest).unwrap_or_default();
            if !digests.contains(&claimed) || got.contains(&claimed) {
                anyhow::bail!("sent batch {claimed}, which was not asked for");
            }
            let shared = self.shared.clone();
            let checked = tokio::task::spawn_blocking(move || {
                check_batch(
                    shared.chain_id(),
                    payload_max,
                    batch,
                    PublicKey::from_slice,
                    |t| shared.mempool().verified(&t.id, &t.envelope.signature),
                )
            })
            .await?;
            let (batch, transactions) = checked.map_err(|err| {
                warn!(node = %self.shared.name, peer = %self.shared.validator_name(peer), error = %err, "refused fetched batch");
                anyhow::Error::new(err)
            })?;
            let ids: Vec<Digest> = transactions.iter().map(|t| t.id).collect();
            info!(node = %self.shared.name, peer = %self.shared.validator_name(peer), digest = %batch.digest.short(), transactions = ids.len(), "fetched batch");
            got.push(batch.digest);
            self.shared.batches().insert(Arc::new(batch), &ids);
        }
        Ok(got)
    }
}
