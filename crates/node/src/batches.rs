//! Batches: admitted transactions sealed into groups named by digest
//! (`exec::batch_digest`), the store that holds them and locates each
//! transaction in its batch, the whole-batch check a peer's batch passes,
//! and the request to fetch batches this node lacks. Below `shared` (which
//! holds the store), the driver and dissemination.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use govchain_crypto::{Digest, KeyError, PublicKey, Signature, verify_each};
use govchain_exec::{TransactionError, VerifiedTransaction, batch_digest, check_envelope_with};
use govchain_proto::consensus::v1::TransactionBatch;
use govchain_proto::types::v1::TransactionEnvelope;
use prost::Message as _;

use crate::telemetry::thread_cpu::measured;

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
/// Below this many signatures per thread, splitting a batch over threads
/// costs more than it saves.
const SIGNATURES_PER_THREAD_MIN: usize = 256;

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

/// Cuts admitted transactions into batches within the bounds, each with
/// its transactions' ids.
pub fn cut(transactions: &[VerifiedTransaction]) -> Vec<(Arc<Batch>, Vec<Digest>)> {
    let mut batches = Vec::new();
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
        batches.push((batch, part.iter().map(|t| t.id).collect()));
        start = end;
    }
    batches
}

/// CPU nanoseconds spent verifying signatures in [`verify_spread`]: on
/// the calling thread, and on the threads it spreads a large batch over
/// (which end with the call, so only this counts them).
static SIGNATURE_CPU_CALLER_NANOS: AtomicU64 = AtomicU64::new(0);
static SIGNATURE_CPU_SPREAD_NANOS: AtomicU64 = AtomicU64::new(0);

/// CPU time spent verifying signatures so far: on the calling threads,
/// and on the threads a large batch was spread over.
pub fn signature_cpu() -> (Duration, Duration) {
    (
        Duration::from_nanos(SIGNATURE_CPU_CALLER_NANOS.load(Ordering::Relaxed)),
        Duration::from_nanos(SIGNATURE_CPU_SPREAD_NANOS.load(Ordering::Relaxed)),
    )
}

fn count_signature_cpu(counter: &AtomicU64, spent: Duration) {
    counter.fetch_add(
        u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

/// The cores this process may use, asked once: the standard library reads
/// the cgroup's quota from `/proc` and `/sys` on every call, which cost the
/// admission thread a fifth of its time under light load, when every batch
/// is small.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Verifies the signatures of `pending`, splitting a large batch over the
/// available cores.
pub fn verify_spread(pending: &[&VerifiedTransaction]) -> Vec<bool> {
    let threads = match pending.len() / SIGNATURES_PER_THREAD_MIN {
        0 | 1 => 1,
        most => cores().min(most),
    };
    let chunk = pending.len().div_ceil(threads).max(1);
    let verify_chunk = |range: std::ops::Range<usize>| -> Vec<bool> {
        let part = &pending[range];
        let messages: Vec<&[u8]> = part.iter().map(|t| t.id.as_bytes().as_slice()).collect();
        let signatures: Vec<Signature> = part.iter().map(|t| t.signature).collect();
        let keys: Vec<PublicKey> = part.iter().map(|t| t.signer).collect();
        verify_each(&messages, &signatures, &keys)
    };
    if threads == 1 {
        let (good, spent) = measured(|| verify_chunk(0..pending.len()));
        count_signature_cpu(&SIGNATURE_CPU_CALLER_NANOS, spent);
        return good;
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..pending.len())
            .step_by(chunk)
            .map(|start| {
                let end = (start + chunk).min(pending.len());
                scope.spawn(move || {
                    let (good, spent) = measured(|| verify_chunk(start..end));
                    count_signature_cpu(&SIGNATURE_CPU_SPREAD_NANOS, spent);
                    good
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().expect("verification thread panicked"))
            .collect()
    })
}
