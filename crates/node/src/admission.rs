//! Admission: every transaction that enters the mempool, from a client or
//! forwarded by a peer, goes through one thread that checks signatures in
//! batches.
//!
//! The thread takes whatever is queued (up to [`ADMISSION_BATCH_MAX`]
//! transactions), checks each envelope's form, verifies all signatures at
//! once (`govchain_crypto::verify_each`: one batch, split over the cores,
//! about three times cheaper per signature than one by one), then admits
//! the survivors in arrival order against the head state. Under light load
//! a batch is one transaction and nothing waits; under heavy load batches
//! grow by themselves. Transactions that clients submitted here and that
//! were admitted go to the peers as one forwarded batch, which the peers'
//! own admission threads verify as a batch in turn.
//!
//! Batch and single verification follow the same (ZIP-215) rules, so a
//! transaction gets the same verdict on every node however the nodes
//! happened to batch it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use govchain_crypto::{PublicKey, Signature, verify_each};
use govchain_exec::{TransactionError, VerifiedTransaction, check_envelope, read_nonce};
use govchain_proto::consensus::v1::stream_request::Kind;
use govchain_proto::consensus::v1::{StreamRequest, TransactionBatch};
use govchain_proto::types::v1::TransactionEnvelope;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use crate::driver::DriverEvent;
use crate::service::{AdmitError, admit_verified};
use crate::shared::{LedgerState, Shared};

/// Transactions verified in one batch at most; bounds the latency a batch
/// adds and the size of the batch forwarded to peers.
pub const ADMISSION_BATCH_MAX: usize = 4096;
/// Jobs queued for the admission thread before submitters wait.
const ADMISSION_QUEUE_MAX: usize = 8192;
/// Below this many signatures per thread, splitting a batch over threads
/// costs more than it saves.
const SIGNATURES_PER_THREAD_MIN: usize = 256;

/// Where a job's transactions came from: a client's are forwarded to the
/// peers once admitted; a peer's are not forwarded again.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Origin {
    Client,
    Peer,
}

pub type Verdicts = Vec<Result<VerifiedTransaction, AdmitError>>;

struct Job {
    envelopes: Vec<TransactionEnvelope>,
    origin: Origin,
    reply: oneshot::Sender<Verdicts>,
}

/// The handle the gRPC services use to reach the admission thread.
#[derive(Clone)]
pub struct Admission {
    jobs: mpsc::Sender<Job>,
}

impl Admission {
    /// Starts the admission thread; it stops when every handle is dropped.
    pub fn start(shared: Arc<Shared>, driver: mpsc::Sender<DriverEvent>) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel(ADMISSION_QUEUE_MAX);
        std::thread::Builder::new()
            .name("admission".into())
            .spawn(move || run(&shared, &driver, queue))?;
        Ok(Self { jobs })
    }

    /// Admits `envelopes` and returns each one's verdict, in order.
    pub async fn admit(
        &self,
        envelopes: Vec<TransactionEnvelope>,
        origin: Origin,
    ) -> Result<Verdicts, Status> {
        let (reply, verdicts) = oneshot::channel();
        self.jobs
            .send(Job {
                envelopes,
                origin,
                reply,
            })
            .await
            .map_err(|_| Status::unavailable("node is shutting down"))?;
        verdicts
            .await
            .map_err(|_| Status::unavailable("node is shutting down"))
    }
}

fn run(shared: &Shared, driver: &mpsc::Sender<DriverEvent>, mut queue: mpsc::Receiver<Job>) {
    while let Some(first) = queue.blocking_recv() {
        let mut jobs = vec![first];
        let mut count = jobs[0].envelopes.len();
        while count < ADMISSION_BATCH_MAX {
            match queue.try_recv() {
                Ok(job) => {
                    count += job.envelopes.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        admit_jobs(shared, jobs);
        nudge(shared, driver);
    }
}

fn admit_jobs(shared: &Shared, jobs: Vec<Job>) {
    let chain_id = shared.chain_id();
    let payload_max = shared.limits.payload_bytes_max as usize;
    // Form first (cheap), then every signature at once.
    let mut checked: Vec<Vec<Result<VerifiedTransaction, AdmitError>>> = jobs
        .iter()
        .map(|job| {
            job.envelopes
                .iter()
                .map(|envelope| {
                    check_envelope(envelope.clone(), chain_id, payload_max, |_, _| true)
                        .map_err(AdmitError::from)
                })
                .collect()
        })
        .collect();
    // A transaction that is already pending with this signature, or whose
    // nonce is already used on chain, is refused whatever its signature
    // (by `admit_verified`, which inserts nothing then): no need to verify
    // it. Peers forward what this node often has already.
    let mut unverified: Vec<&mut Result<VerifiedTransaction, AdmitError>> = checked
        .iter_mut()
        .flatten()
        .filter(|verdict| verdict.as_ref().is_ok_and(|t| !settled(shared, t)))
        .collect();
    let pending: Vec<&VerifiedTransaction> = unverified
        .iter()
        .map(|verdict| verdict.as_ref().expect("only checked envelopes"))
        .collect();
    let good = verify_spread(&pending);
    for (verdict, good) in unverified.iter_mut().zip(good) {
        if !good {
            let signer = verdict.as_ref().expect("only checked envelopes").signer;
            **verdict = Err(TransactionError::BadSignature {
                signer: signer.to_hex(),
            }
            .into());
        }
    }
    let mut forward = Vec::new();
    for (job, verdicts) in jobs.into_iter().zip(checked) {
        let verdicts: Verdicts = verdicts
            .into_iter()
            .map(|verdict| verdict.and_then(|t| admit_verified(shared, t)))
            .collect();
        if job.origin == Origin::Client {
            forward.extend(verdicts.iter().flatten().map(|t| t.envelope.clone()));
        }
        // The submitter may have gone away; its transactions stay admitted.
        let _ = job.reply.send(verdicts);
    }
    if !forward.is_empty() {
        shared.peers.broadcast(&StreamRequest {
            kind: Some(Kind::Transactions(TransactionBatch {
                transactions: forward,
            })),
        });
    }
}

/// Whether `admit_verified` refuses `transaction` without looking at its
/// signature: its nonce is used on chain, or the same transaction with the
/// same signature is pending.
fn settled(shared: &Shared, transaction: &VerifiedTransaction) -> bool {
    let committed = read_nonce(&LedgerState(&shared.ledger), &transaction.signer).unwrap_or(0);
    transaction.nonce <= committed
        || shared
            .mempool()
            .verified(&transaction.id, &transaction.envelope.signature)
}

/// Verifies the signatures of `pending`, splitting a large batch over the
/// available cores.
fn verify_spread(pending: &[&VerifiedTransaction]) -> Vec<bool> {
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

/// Tells the driver the mempool changed, once until it has looked.
fn nudge(shared: &Shared, driver: &mpsc::Sender<DriverEvent>) {
    if !shared.mempool_changed.swap(true, Ordering::AcqRel)
        && driver.try_send(DriverEvent::MempoolChanged).is_err()
    {
        // The driver is busy and reads the mempool after its block anyway.
        shared.mempool_changed.store(false, Ordering::Release);
    }
}
