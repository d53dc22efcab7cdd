//! Dissemination: admitted transactions travel between validators once, in
//! batches named by digest; proposals name the batches.
//!
//! Admission seals the transactions its clients submitted into batches
//! ([`seal`]), keeps them in the [`BatchStore`] and forwards them to every
//! peer. A peer's batch is checked whole on arrival ([`check_batch`]: size,
//! form, every signature in one verification, the digest) and kept too. The
//! primary's pre-prepare names slices of batches instead of carrying the
//! transactions (`exec::encode_proposal`); a backup that lacks a named batch
//! asks the [`Fetcher`] for it, which fetches it from the proposer or any
//! other validator (`ConsensusService.FetchBatches`), checks it like a
//! forwarded one and tells the driver. Until then the backup does not
//! answer the proposal, so a primary that withholds a batch is replaced by
//! the view-change timer like one that sends nothing.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use govchain_crypto::{Digest, KeyError, PublicKey, Signature, verify_each};
use govchain_exec::{TransactionError, VerifiedTransaction, batch_digest, check_envelope_with};
use govchain_proto::consensus::v1::consensus_service_client::ConsensusServiceClient;
use govchain_proto::consensus::v1::stream_request::Kind;
use govchain_proto::consensus::v1::{FetchBatchesRequest, StreamRequest, TransactionBatch};
use govchain_proto::types::v1::TransactionEnvelope;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};

use crate::config::{Peer, Settings};
use crate::driver::DriverEvent;
use crate::peers::PEER_MESSAGE_BYTES_MAX;
use crate::shared::Shared;
use crate::supervise::Fatal;
use crate::tls::peer_client_config;

/// Transactions in one batch at most.
pub const BATCH_TRANSACTIONS_MAX: usize = 4096;
/// Encoded envelopes in one batch at most.
pub const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Batches kept at most; the oldest go first.
const STORE_BATCHES_MAX: usize = 65_536;
/// Bytes of envelopes kept at most; the oldest batches go first. Far more
/// than a block in flight names (`block_bytes_max` is at most a few MiB),
/// so a batch is gone only long after the proposals that name it.
const STORE_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Digests asked for in one `FetchBatches` call at most.
pub const FETCH_BATCHES_DIGESTS_MAX: usize = 64;
/// How long one peer may take to answer a fetch before the next is asked.
const FETCH_PEER_TIMEOUT: Duration = Duration::from_secs(2);
/// Fetch requests waiting for the fetcher; the driver drops a request when
/// full and asks again on its next check.
const FETCH_REQUESTS_MAX: usize = 64;
/// Below this many signatures per thread, splitting a batch over threads
/// costs more than it saves.
const SIGNATURES_PER_THREAD_MIN: usize = 256;

const _: () = assert!(BATCH_BYTES_MAX < PEER_MESSAGE_BYTES_MAX);
const _: () = assert!(FETCH_BATCHES_DIGESTS_MAX <= FETCH_REQUESTS_MAX);

/// A batch whose digest and signatures were checked.
#[derive(Debug)]
pub struct Batch {
    pub digest: Digest,
    pub envelopes: Vec<TransactionEnvelope>,
    bytes: u64,
}

impl Batch {
    fn new(digest: Digest, envelopes: Vec<TransactionEnvelope>) -> Self {
        let bytes = envelopes.iter().map(|e| e.encoded_len() as u64).sum();
        Self {
            digest,
            envelopes,
            bytes,
        }
    }

    pub fn to_wire(&self) -> TransactionBatch {
        TransactionBatch {
            transactions: self.envelopes.clone(),
            trace_context: Default::default(),
            digest: self.digest.to_vec(),
        }
    }
}

/// The batches this node holds, by digest, and where each transaction it
/// holds is: bounded by count and bytes, oldest out first.
#[derive(Default)]
pub struct BatchStore {
    batches: BTreeMap<Digest, Arc<Batch>>,
    order: VecDeque<Digest>,
    bytes: u64,
    /// Transaction id → (batch, position), for the primary's proposals.
    /// Only looked up, never iterated.
    located: HashMap<Digest, (Digest, u32)>,
}

impl BatchStore {
    /// Keeps `batch` (once), evicting the oldest batches over the bounds.
    /// `ids` are its transactions' ids, in order.
    pub fn insert(&mut self, batch: Arc<Batch>, ids: &[Digest]) {
        if self.batches.contains_key(&batch.digest) {
            return;
        }
        for (index, id) in ids.iter().enumerate() {
            let index = u32::try_from(index).expect("bounded by BATCH_TRANSACTIONS_MAX");
            self.located.insert(*id, (batch.digest, index));
        }
        self.bytes += batch.bytes;
        self.order.push_back(batch.digest);
        self.batches.insert(batch.digest, batch);
        while self.batches.len() > STORE_BATCHES_MAX || self.bytes > STORE_BYTES_MAX {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.evict(&oldest);
        }
    }

    fn evict(&mut self, digest: &Digest) {
        let Some(batch) = self.batches.remove(digest) else {
            return;
        };
        self.bytes -= batch.bytes;
        for envelope in &batch.envelopes {
            let id = govchain_exec::transaction_id(
                &envelope.chain_id,
                &envelope.signer,
                envelope.nonce,
                &envelope.payload,
            );
            if self.located.get(&id).is_some_and(|(b, _)| b == digest) {
                self.located.remove(&id);
            }
        }
    }

    pub fn get(&self, digest: &Digest) -> Option<Arc<Batch>> {
        self.batches.get(digest).cloned()
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.batches.contains_key(digest)
    }

    /// Where this node holds `envelope`, if in a batch with exactly these
    /// bytes.
    pub fn locate(&self, id: &Digest, envelope: &TransactionEnvelope) -> Option<(Digest, u32)> {
        let (digest, index) = self.located.get(id)?;
        let held = self.batches.get(digest)?.envelopes.get(*index as usize)?;
        (held == envelope).then_some((*digest, *index))
    }

    pub fn len(&self) -> usize {
        self.batches.len()
    }
}

/// Why a batch from a peer was refused as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    #[error("batch holds {got} transactions, the limit is {max}")]
    TooManyTransactions { got: usize, max: usize },
    #[error("batch holds {got} bytes of transactions, the limit is {max}")]
    TooLarge { got: usize, max: usize },
    #[error("batch digest is malformed: {0}")]
    MalformedDigest(String),
    #[error("transaction {index} of the batch is invalid: {error}")]
    Transaction {
        index: usize,
        error: TransactionError,
    },
    #[error("transaction {index} of the batch has a bad signature (signer {signer})")]
    BadSignature { index: usize, signer: String },
    #[error("batch digest is {claimed} but its transactions hash to {computed}")]
    DigestMismatch { claimed: Digest, computed: Digest },
}

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

/// Checks a batch from a peer: size, form of every envelope, every
/// signature not `known` (verified before with these exact bytes) in one
/// verification, and the claimed digest. Returns the batch and its
/// transactions.
pub fn check_batch(
    chain_id: &str,
    payload_bytes_max: usize,
    batch: TransactionBatch,
    mut parse: impl FnMut(&[u8]) -> Result<PublicKey, KeyError>,
    known: impl Fn(&VerifiedTransaction) -> bool,
) -> Result<(Batch, Vec<VerifiedTransaction>), BatchError> {
    let count = batch.transactions.len();
    if count > BATCH_TRANSACTIONS_MAX {
        return Err(BatchError::TooManyTransactions {
            got: count,
            max: BATCH_TRANSACTIONS_MAX,
        });
    }
    let bytes: usize = batch.transactions.iter().map(|e| e.encoded_len()).sum();
    if bytes > BATCH_BYTES_MAX {
        return Err(BatchError::TooLarge {
            got: bytes,
            max: BATCH_BYTES_MAX,
        });
    }
    let claimed = Digest::from_slice(&batch.digest)
        .map_err(|err| BatchError::MalformedDigest(err.to_string()))?;
    let mut transactions = Vec::with_capacity(count);
    for (index, envelope) in batch.transactions.iter().enumerate() {
        let transaction = check_envelope_with(
            envelope.clone(),
            chain_id,
            payload_bytes_max,
            |_, _| true,
            &mut parse,
        )
        .map_err(|error| BatchError::Transaction { index, error })?;
        transactions.push(transaction);
    }
    let computed = digest_of(&transactions);
    if computed != claimed {
        return Err(BatchError::DigestMismatch { claimed, computed });
    }
    let unknown: Vec<usize> = (0..count).filter(|i| !known(&transactions[*i])).collect();
    let pending: Vec<&VerifiedTransaction> = unknown.iter().map(|i| &transactions[*i]).collect();
    let good = verify_spread(&pending);
    if let Some(position) = good.iter().position(|ok| !ok) {
        let index = unknown[position];
        return Err(BatchError::BadSignature {
            index,
            signer: transactions[index].signer.to_hex(),
        });
    }
    Ok((Batch::new(computed, batch.transactions), transactions))
}

/// The digest of verified transactions, as a batch.
pub fn digest_of(transactions: &[VerifiedTransaction]) -> Digest {
    batch_digest(
        transactions
            .iter()
            .map(|t| (&t.id, t.envelope.signature.as_slice())),
    )
}

/// Seals admitted transactions into batches within the bounds, keeps them
/// and forwards them to every peer. The first batch carries `trace_context`.
pub fn seal(
    shared: &Shared,
    transactions: &[VerifiedTransaction],
    mut trace_context: HashMap<String, String>,
) -> Vec<Arc<Batch>> {
    let mut sealed = Vec::new();
    let mut start = 0;
    while start < transactions.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < transactions.len()
            && end - start < BATCH_TRANSACTIONS_MAX
            && (end == start || bytes + transactions[end].encoded_len <= BATCH_BYTES_MAX)
        {
            bytes += transactions[end].encoded_len;
            end += 1;
        }
        let part = &transactions[start..end];
        let envelopes = part.iter().map(|t| t.envelope.clone()).collect();
        let batch = Arc::new(Batch::new(digest_of(part), envelopes));
        let ids: Vec<Digest> = part.iter().map(|t| t.id).collect();
        shared.batches().insert(batch.clone(), &ids);
        let mut wire = batch.to_wire();
        wire.trace_context = std::mem::take(&mut trace_context);
        debug!(node = %shared.name, digest = %batch.digest.short(), transactions = part.len(), "sealed batch");
        shared.peers.broadcast(&StreamRequest {
            kind: Some(Kind::Transactions(wire)),
        });
        sealed.push(batch);
        start = end;
    }
    sealed
}

/// Verifies the signatures of `pending`, splitting a large batch over the
/// available cores.
pub fn verify_spread(pending: &[&VerifiedTransaction]) -> Vec<bool> {
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .min(pending.len() / SIGNATURES_PER_THREAD_MIN)
        .max(1);
    let chunk = pending.len().div_ceil(threads).max(1);
    let verify_chunk = |range: std::ops::Range<usize>| -> Vec<bool> {
        let part = &pending[range];
        let messages: Vec<&[u8]> = part.iter().map(|t| t.id.as_bytes().as_slice()).collect();
        let signatures: Vec<Signature> = part.iter().map(|t| t.signature).collect();
        let keys: Vec<PublicKey> = part.iter().map(|t| t.signer).collect();
        verify_each(&messages, &signatures, &keys)
    };
    if threads == 1 {
        return verify_chunk(0..pending.len());
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..pending.len())
            .step_by(chunk)
            .map(|start| {
                let end = (start + chunk).min(pending.len());
                scope.spawn(move || verify_chunk(start..end))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().expect("verification thread panicked"))
            .collect()
    })
}

/// "Get these batches; `first` (the proposer) should have them."
#[derive(Debug)]
pub struct FetchRequest {
    pub digests: Vec<Digest>,
    pub first: u32,
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
