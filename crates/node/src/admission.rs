//! Admission: every transaction that enters the mempool, from a client or
//! forwarded by a peer, goes through one thread that checks signatures in
//! batches.
//!
//! The thread takes whatever is queued (up to [`ADMISSION_BATCH_MAX`]
//! transactions), checks each envelope's form, verifies all signatures at
//! once (`govchain_crypto::verify_each`: one batch, split over the cores,
//! about three times cheaper per signature than one by one), then admits
//! the survivors in arrival order against the head state. Under light load
//! a round of verification is one transaction and nothing waits; under
//! heavy load rounds grow by themselves. Transactions that clients
//! submitted here and that were admitted are answered at once, then sealed
//! into batches named by digest and forwarded to the peers
//! (`Shared::seal`) when [`SEAL_TRANSACTIONS_MIN`] have gathered or the
//! oldest has waited [`SEAL_LINGER`]; a peer's batch is checked whole
//! (`batches::check_batch`: its digest, and its signatures in one
//! verification), kept for proposals that name it, and its transactions
//! admitted.
//!
//! Batch and single verification follow the same (ZIP-215) rules, so a
//! transaction gets the same verdict on every node however the nodes
//! happened to batch it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use govchain_crypto::{Digest, KeyCache};
use govchain_exec::{
    Refusal, TransactionError, VerifiedTransaction, check_envelope_with, precheck, read_nonce,
};
use govchain_proto::consensus::v1::TransactionBatch;
use govchain_proto::types::v1::TransactionEnvelope;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;
use tracing::{debug, info, warn};

use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::batches::{check_batch, verify_spread};
use crate::chain_state::LedgerState;
use crate::driver::DriverEvent;
use crate::mempool::MempoolError;
use crate::shared::Shared;
use crate::supervise::Fatal;
use crate::telemetry::trace_context;

/// Transactions verified in one batch at most; bounds the latency a batch
/// adds and the size of the batch forwarded to peers.
pub const ADMISSION_BATCH_MAX: usize = 4096;
/// How long a client's admitted transactions wait for others before they
/// are sealed into a batch and forwarded to the peers, unless
/// [`SEAL_TRANSACTIONS_MIN`] gather first. Under light load every batch
/// would otherwise hold one or two transactions, and each costs every peer
/// a message, a verification and a store insert: at 1,400 tx/s on four
/// validators that fixed cost kept the nodes' two cores busy. A primary
/// does not wait for this to propose its own clients' transactions.
pub const SEAL_LINGER: Duration = Duration::from_millis(5);
/// Admitted client transactions sealed at once, without waiting for
/// [`SEAL_LINGER`]: under load, a round of admission fills batches by
/// itself.
pub const SEAL_TRANSACTIONS_MIN: usize = 256;
/// Jobs queued for the admission thread. A client's submission finding the
/// queue full is refused (`RESOURCE_EXHAUSTED`) rather than queued; a
/// peer's forwarded batch waits for room. The queue stays short in time,
/// so that the consensus messages behind a forwarded batch on a peer's
/// stream are not held up for long.
const ADMISSION_QUEUE_MAX: usize = 4096;
/// Envelopes clients may have queued for admission at once, all calls
/// together: a job may hold 1,024 envelopes (`SubmitTransactions`), so the
/// job count alone would let a few clients queue millions.
pub const ADMISSION_ENVELOPES_MAX: usize = 65_536;
/// Parsed signer keys kept per generation of the admission thread's
/// [`KeyCache`] (at most twice this many, ~250 bytes each): parsing a key
/// decompresses a point, about as costly as the rest of its batched
/// verification, and signers repeat.
const SIGNER_KEYS_CACHED: usize = 16_384;

pub type Verdicts = Vec<Result<VerifiedTransaction, AdmitError>>;

/// Where a job's transactions came from, and who hears the verdicts: a
/// client's are forwarded to the peers once admitted and answered; a
/// peer's are not forwarded again, and their refusals are only logged, so
/// that the peer's stream never waits for verification.
enum Origin {
    /// A client of this department, waiting for the verdicts.
    Client(oneshot::Sender<Verdicts>, String),
    /// A peer's batch, with the digest the peer claims for it.
    Peer(String, Vec<u8>),
}

struct Job {
    envelopes: Vec<TransactionEnvelope>,
    origin: Origin,
    /// The trace the submission or forwarded batch belongs to (invalid
    /// when not traced); the job's admission span continues it.
    trace: opentelemetry::Context,
    /// A client job's share of [`ADMISSION_ENVELOPES_MAX`], given back
    /// when the job is done.
    _envelopes: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// The handle the gRPC services use to reach the admission thread.
#[derive(Clone)]
pub struct Admission {
    jobs: mpsc::Sender<Job>,
    /// Places for client envelopes in the queue ([`ADMISSION_ENVELOPES_MAX`]).
    envelopes: Arc<tokio::sync::Semaphore>,
}

impl Admission {
    /// Starts the admission thread; it stops when every handle is dropped.
    pub fn start(
        shared: Arc<Shared>,
        driver: mpsc::Sender<DriverEvent>,
        fatal: &Fatal,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel(ADMISSION_QUEUE_MAX);
        // The thread waits on the queue with a deadline through the
        // runtime's timer.
        let runtime = tokio::runtime::Handle::current();
        fatal.spawn_thread("admission", move || {
            run(&shared, &driver, &runtime, queue);
            Ok(())
        })?;
        Ok(Self {
            jobs,
            envelopes: Arc::new(tokio::sync::Semaphore::new(ADMISSION_ENVELOPES_MAX)),
        })
    }

    /// Admits a client's transactions as one job (their signatures are
    /// verified together) and returns a verdict for each, in order.
    pub async fn submit_many(
        &self,
        department: &str,
        envelopes: Vec<TransactionEnvelope>,
        trace: opentelemetry::Context,
    ) -> Result<Verdicts, Status> {
        let count = u32::try_from(envelopes.len()).unwrap_or(u32::MAX);
        let permit = self
            .envelopes
            .clone()
            .try_acquire_many_owned(count)
            .map_err(|_| {
                crate::errors::limit_reached(
                    "ADMISSION_ENVELOPES_MAX",
                    format!(
                        "the node is admitting {ADMISSION_ENVELOPES_MAX} envelopes already (ADMISSION_ENVELOPES_MAX); retry later"
                    ),
                )
            })?;
        let (reply, verdicts) = oneshot::channel();
        let job = Job {
            envelopes,
            origin: Origin::Client(reply, department.to_owned()),
            trace,
            _envelopes: Some(permit),
        };
        self.jobs.try_send(job).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => crate::errors::limit_reached(
                "ADMISSION_QUEUE_MAX",
                format!(
                    "the node is admitting {ADMISSION_QUEUE_MAX} submissions already; retry later"
                ),
            ),
            mpsc::error::TrySendError::Closed(_) => shutting_down(),
        })?;
        verdicts.await.map_err(|_| shutting_down())
    }

    /// Queues a batch a peer forwarded; waits only for room in the queue.
    pub async fn forward(
        &self,
        peer: &str,
        batch: TransactionBatch,
        trace: opentelemetry::Context,
    ) -> Result<(), Status> {
        let job = Job {
            envelopes: batch.transactions,
            origin: Origin::Peer(peer.to_string(), batch.digest),
            trace,
            _envelopes: None,
        };
        self.jobs.send(job).await.map_err(|_| shutting_down())
    }

    /// A handle for the queue-depth metric that does not keep the
    /// admission thread alive.
    pub fn weak_queue(&self) -> WeakQueue {
        WeakQueue(self.jobs.downgrade())
    }
}

/// See [`Admission::weak_queue`].
pub struct WeakQueue(mpsc::WeakSender<Job>);

impl WeakQueue {
    /// Jobs waiting for the admission thread; `None` once it stopped.
    pub fn depth(&self) -> Option<u64> {
        let jobs = self.0.upgrade()?;
        Some((jobs.max_capacity() - jobs.capacity()) as u64)
    }
}

fn shutting_down() -> Status {
    crate::errors::unavailable("node is shutting down", crate::errors::RETRY_AFTER_DEFAULT)
}

fn run(
    shared: &Shared,
    driver: &mpsc::Sender<DriverEvent>,
    runtime: &tokio::runtime::Handle,
    mut queue: mpsc::Receiver<Job>,
) {
    let mut keys = KeyCache::new(SIGNER_KEYS_CACHED);
    let mut unsealed = Unsealed::default();
    loop {
        let next = match unsealed.deadline() {
            None => queue.blocking_recv(),
            Some(deadline) => {
                // The timer is made inside the runtime's context.
                let next = async { tokio::time::timeout_at(deadline.into(), queue.recv()).await };
                match runtime.block_on(next) {
                    Ok(next) => next,
                    Err(_elapsed) => {
                        unsealed.seal(shared);
                        continue;
                    }
                }
            }
        };
        let Some(first) = next else {
            // Every handle is gone: the node is stopping. What waits was
            // admitted here; it goes to the peers all the same.
            unsealed.seal(shared);
            break;
        };
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
        admit_jobs(shared, &mut keys, jobs, &mut unsealed);
        if unsealed.due(Instant::now()) {
            unsealed.seal(shared);
        }
        nudge(shared, driver);
    }
}

fn admit_jobs(shared: &Shared, keys: &mut KeyCache, jobs: Vec<Job>, unsealed: &mut Unsealed) {
    let (peers, clients): (Vec<Job>, Vec<Job>) = jobs
        .into_iter()
        .partition(|job| matches!(job.origin, Origin::Peer(..)));
    for job in peers {
        admit_batch(shared, keys, job);
    }
    if !clients.is_empty() {
        admit_client_jobs(shared, keys, clients, unsealed);
    }
}

/// Clients' admitted transactions waiting to be sealed into a batch and
/// forwarded ([`SEAL_LINGER`], [`SEAL_TRANSACTIONS_MIN`]).
#[derive(Default)]
struct Unsealed {
    transactions: Vec<VerifiedTransaction>,
    /// The first traced submission's context, which the first batch
    /// carries. A batch holds several submissions only under load, when
    /// tracing samples anyway.
    trace_context: Option<std::collections::HashMap<String, String>>,
    /// When the oldest waiting transaction was admitted.
    since: Option<Instant>,
}

impl Unsealed {
    fn add(
        &mut self,
        transactions: Vec<VerifiedTransaction>,
        trace_context: Option<std::collections::HashMap<String, String>>,
    ) {
        if transactions.is_empty() {
            return;
        }
        self.since.get_or_insert_with(Instant::now);
        if self.trace_context.is_none() {
            self.trace_context = trace_context;
        }
        self.transactions.extend(transactions);
    }

    /// When the waiting transactions must be sealed at the latest.
    fn deadline(&self) -> Option<Instant> {
        self.since.map(|since| since + SEAL_LINGER)
    }

    fn due(&self, now: Instant) -> bool {
        self.transactions.len() >= SEAL_TRANSACTIONS_MIN
            || self.deadline().is_some_and(|deadline| deadline <= now)
    }

    /// Seals and forwards what waits (`Shared::seal`), except what left
    /// the mempool meanwhile (committed) and what a batch already holds:
    /// a primary seals the transactions it proposes that no batch holds
    /// (`driver::propose_by_reference`) without waiting for this.
    fn seal(&mut self, shared: &Shared) {
        self.since = None;
        let trace_context = self.trace_context.take().unwrap_or_default();
        let mut waiting = std::mem::take(&mut self.transactions);
        {
            let mempool = shared.mempool();
            waiting.retain(|t| mempool.verified(&t.id, &t.envelope.signature));
        }
        {
            // Not with the mempool's lock: the driver takes the store's first.
            let store = shared.batches();
            waiting.retain(|t| store.locate(&t.id, &t.envelope).is_none());
        }
        if !waiting.is_empty() {
            shared.seal(&waiting, trace_context);
        }
    }
}

/// A peer's batch: checked whole (`batches::check_batch`), kept, and
/// its transactions admitted. A batch with any fault is refused whole and
/// the reason logged: an honest peer forwards only what it admitted.
fn admit_batch(shared: &Shared, keys: &mut KeyCache, job: Job) {
    let Origin::Peer(peer, digest) = job.origin else {
        unreachable!("only peer jobs")
    };
    let span = tracing::info_span!("admission", node = %shared.name, peer, transactions = job.envelopes.len());
    trace_context::adopt(&span, job.trace);
    let _entered = span.enter();
    let batch = TransactionBatch {
        transactions: job.envelopes,
        trace_context: Default::default(),
        digest,
    };
    let checked = check_batch(
        shared.chain_id(),
        shared.limits.payload_bytes_max as usize,
        batch,
        |bytes| keys.parse(bytes),
        |t| shared.mempool().verified(&t.id, &t.envelope.signature),
    );
    let (batch, transactions) = match checked {
        Ok(checked) => checked,
        Err(err) => {
            warn!(node = %shared.name, peer, reason = %err, "refused transaction batch");
            return;
        }
    };
    let ids: Vec<Digest> = transactions.iter().map(|t| t.id).collect();
    debug!(node = %shared.name, peer, digest = %batch.digest.short(), transactions = ids.len(), "batch received");
    shared.batches().insert(Arc::new(batch), &ids);
    let mut rejected = 0;
    for transaction in transactions {
        match admit_verified(shared, transaction, None) {
            Ok(transaction) => shared.traces.record(transaction.id, &span),
            Err(_) => rejected += 1,
        }
    }
    if rejected > 0 {
        debug!(
            peer,
            rejected,
            "forwarded transactions not admitted (already pending or committed, or refused)"
        );
    }
}

/// Clients' submissions: form, then every signature at once, then
/// admission in order; the admitted ones wait in `unsealed` to be sealed
/// into batches and forwarded.
fn admit_client_jobs(
    shared: &Shared,
    keys: &mut KeyCache,
    jobs: Vec<Job>,
    unsealed: &mut Unsealed,
) {
    let chain_id = shared.chain_id();
    let payload_max = shared.limits.payload_bytes_max as usize;
    // Form first (cheap), then every signature at once.
    let mut checked: Vec<Vec<Result<VerifiedTransaction, AdmitError>>> = jobs
        .iter()
        .map(|job| {
            job.envelopes
                .iter()
                .map(|envelope| {
                    let parse = |bytes: &[u8]| keys.parse(bytes);
                    check_envelope_with(envelope.clone(), chain_id, payload_max, |_, _| true, parse)
                        .map_err(AdmitError::from)
                })
                .collect()
        })
        .collect();
    // A transaction that is already pending with this signature, or whose
    // nonce is already used on chain, is refused whatever its signature
    // (by `admit_verified`, which inserts nothing then): no need to verify
    // it.
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
    let mut forward_trace = None;
    for (job, verdicts) in jobs.into_iter().zip(checked) {
        let Origin::Client(reply, department) = job.origin else {
            unreachable!("only client jobs")
        };
        let span = tracing::info_span!("admission", node = %shared.name, transactions = job.envelopes.len());
        trace_context::adopt(&span, job.trace);
        let verdicts: Verdicts = span.in_scope(|| {
            verdicts
                .into_iter()
                .map(|verdict| verdict.and_then(|t| admit_verified(shared, t, Some(&department))))
                .collect()
        });
        for transaction in verdicts.iter().flatten() {
            shared.traces.record(transaction.id, &span);
        }
        if forward_trace.is_none() && verdicts.iter().any(Result::is_ok) {
            forward_trace = Some(span.context());
        }
        forward.extend(verdicts.iter().flatten().cloned());
        // The submitter may have gone away; its transactions stay admitted.
        let _ = reply.send(verdicts);
    }
    let trace_context = forward_trace.map(|context| trace_context::to_map(&context));
    unsealed.add(forward, trace_context);
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

/// Tells the driver the mempool changed, once until it has looked.
fn nudge(shared: &Shared, driver: &mpsc::Sender<DriverEvent>) {
    if !shared.mempool_changed.swap(true, Ordering::AcqRel)
        && driver.try_send(DriverEvent::MempoolChanged).is_err()
    {
        // The driver is busy and reads the mempool after its block anyway.
        shared.mempool_changed.store(false, Ordering::Release);
    }
}

/// Why a transaction was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    #[error(transparent)]
    Mempool(#[from] MempoolError),
    /// The transaction would have no effect on the head state.
    #[error("{0}")]
    Refused(Refusal),
}

impl From<TransactionError> for AdmitError {
    fn from(err: TransactionError) -> Self {
        AdmitError::Mempool(err.into())
    }
}

/// Admits a transaction whose envelope and signature were checked (by
/// [`crate::admission`]) into the mempool: the nonce against committed
/// state, and, when the transaction is the signer's next, whether it would
/// take effect on the head state (so that, say, a read without consent is
/// refused with its reason instead of being ordered and failing). A
/// transaction queued behind the signer's pending ones is not prechecked:
/// it may depend on them.
/// `submitter`: the department whose client gave this node the
/// transaction (`None` when a peer forwarded it), for its mempool share.
pub(crate) fn admit_verified(
    shared: &Shared,
    transaction: VerifiedTransaction,
    submitter: Option<&str>,
) -> Result<VerifiedTransaction, AdmitError> {
    let state = LedgerState(&shared.ledger);
    let committed = read_nonce(&state, &transaction.signer)
        .map_err(|err| TransactionError::Malformed(format!("state: {err}")))?;
    if committed.checked_add(1) == Some(transaction.nonce) {
        let head = shared.ledger.head();
        let now = crate::clock::now_ms().max(head.timestamp_ms);
        let checked = precheck(
            &state,
            &shared.departments(),
            &transaction,
            head.height + 1,
            now,
        )
        .map_err(|err| TransactionError::Malformed(format!("state: {err}")))?;
        if let Err(refusal) = checked
            && !refusal_is_logged(&state, shared, &transaction, now)
                .map_err(|err| TransactionError::Malformed(format!("state: {err}")))?
        {
            return Err(AdmitError::Refused(refusal));
        }
    }
    if transaction.nonce <= committed
        && shared
            .ledger
            .transaction(&transaction.id)
            .ok()
            .flatten()
            .is_some()
    {
        return Err(TransactionError::Duplicate {
            id: transaction.id,
            state: "committed",
        }
        .into());
    }
    shared.mempool().insert_from(
        transaction.clone(),
        committed,
        submitter,
        std::time::Instant::now(),
    )?;
    Ok(transaction)
}

/// A department's read that the consent rule refuses is still ordered when
/// execution will log the attempt in the citizen's access log
/// (`exec::identity::refusal_logged_for`): the citizen sees who tried. It
/// commits as FAILED and releases nothing.
fn refusal_is_logged(
    state: &LedgerState<'_>,
    shared: &Shared,
    transaction: &VerifiedTransaction,
    now_ms: u64,
) -> Result<bool, govchain_exec::StateError> {
    let govchain_proto::types::v1::transaction::Body::RecordAccess(access) = &transaction.body
    else {
        return Ok(false);
    };
    let logged = govchain_exec::identity::refusal_logged_for(
        state,
        &shared.departments(),
        &transaction.signer,
        access,
        now_ms,
    )?;
    if let Some((citizen, department)) = &logged {
        info!(%department, citizen = %citizen.to_did_key(), attribute = %access.attribute, transaction_id = %transaction.id.short(), "admitting a refused read, to be logged for the citizen");
    }
    Ok(logged.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mempool::tests_support::transaction;

    #[test]
    fn admitted_transactions_wait_for_company_or_the_linger_before_sealing() {
        let mut unsealed = Unsealed::default();
        assert_eq!(unsealed.deadline(), None, "nothing waits");
        assert!(!unsealed.due(Instant::now() + SEAL_LINGER * 10));
        unsealed.add(Vec::new(), None);
        assert_eq!(unsealed.deadline(), None, "an empty round starts no wait");

        let before = Instant::now();
        unsealed.add(vec![transaction(1, 1)], None);
        let deadline = unsealed.deadline().expect("one transaction waits");
        assert!(deadline >= before + SEAL_LINGER, "it waits the linger");
        assert!(!unsealed.due(deadline - Duration::from_millis(1)));
        assert!(unsealed.due(deadline));

        unsealed.add(vec![transaction(2, 1)], None);
        assert_eq!(
            unsealed.deadline(),
            Some(deadline),
            "the oldest transaction sets the deadline"
        );
        assert!(!unsealed.due(before));
        let more = (1..=SEAL_TRANSACTIONS_MIN - 2).map(|nonce| transaction(3, nonce as u64));
        unsealed.add(more.collect(), None);
        assert!(
            unsealed.due(before),
            "{SEAL_TRANSACTIONS_MIN} gathered are sealed without waiting"
        );
    }

    #[tokio::test]
    async fn client_envelopes_queued_for_admission_are_bounded_and_given_back() {
        let (jobs, mut queue) = mpsc::channel(16);
        let admission = Admission {
            jobs,
            envelopes: Arc::new(tokio::sync::Semaphore::new(3)),
        };
        let first = tokio::spawn({
            let admission = admission.clone();
            async move {
                admission
                    .submit_many(
                        "tax",
                        vec![TransactionEnvelope::default(); 2],
                        Default::default(),
                    )
                    .await
            }
        });
        let job = queue.recv().await.expect("the first job");
        let status = admission
            .submit_many(
                "tax",
                vec![TransactionEnvelope::default(); 2],
                Default::default(),
            )
            .await
            .expect_err("2 + 2 envelopes are over 3");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains("ADMISSION_ENVELOPES_MAX"),
            "{status:?}"
        );
        // The first job done (here: dropped unanswered), its places return.
        drop(job);
        let _ = first.await;
        let second = tokio::spawn({
            let admission = admission.clone();
            async move {
                admission
                    .submit_many(
                        "tax",
                        vec![TransactionEnvelope::default(); 3],
                        Default::default(),
                    )
                    .await
            }
        });
        assert!(queue.recv().await.is_some(), "three places again");
        second.abort();
    }

    #[tokio::test]
    async fn a_client_finding_the_queue_full_is_refused_at_once() {
        let (jobs, mut queue) = mpsc::channel(1);
        let admission = Admission {
            jobs,
            envelopes: Arc::new(tokio::sync::Semaphore::new(ADMISSION_ENVELOPES_MAX)),
        };
        // The first submission takes the only place and waits for a verdict.
        let waiting = tokio::spawn({
            let admission = admission.clone();
            async move {
                admission
                    .submit_many(
                        "tax",
                        vec![TransactionEnvelope::default()],
                        Default::default(),
                    )
                    .await
            }
        });
        while admission.jobs.capacity() > 0 {
            tokio::task::yield_now().await;
        }
        let status = admission
            .submit_many(
                "tax",
                vec![TransactionEnvelope::default()],
                Default::default(),
            )
            .await
            .expect_err("queue is full");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("retry later"), "{status:?}");
        // A peer's batch waits for room instead; it gets it once the
        // thread takes the first job.
        let forwarded = tokio::spawn({
            let admission = admission.clone();
            async move {
                admission
                    .forward("peer", TransactionBatch::default(), Default::default())
                    .await
            }
        });
        let first = queue.recv().await.expect("the client's job");
        assert!(matches!(first.origin, Origin::Client(_, ref department) if department == "tax"));
        forwarded.await.expect("task").expect("queued");
        let second = queue.recv().await.expect("the peer's job");
        assert!(matches!(second.origin, Origin::Peer(ref name, _) if name == "peer"));
        // Dropping the client's job unanswered reads as a shutdown.
        drop(first);
        let status = waiting.await.expect("task").expect_err("no verdict");
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }
}
