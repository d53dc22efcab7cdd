//! The gRPC services: `NodeService` for department systems and
//! `ConsensusService` for peers.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use govchain_crypto::{Digest, PublicKey};
use govchain_exec::{
    Refusal, StateRead as _, TransactionError, VerifiedTransaction, anchor_key, nonce_key,
    read_nonce,
};
use govchain_pbft::Event;
use govchain_pki::TlsIdentity;
use govchain_proto::consensus::v1::consensus_service_server::ConsensusService;
use govchain_proto::consensus::v1::{
    FetchBatchesRequest, FetchBatchesResponse, FetchBlocksRequest, FetchBlocksResponse,
    FetchStateSnapshotRequest, FetchStateSnapshotResponse, StreamRequest, StreamResponse,
    TransactionBatch, stream_request::Kind,
};
use govchain_proto::node::v1::node_service_server::NodeService;
use govchain_proto::node::v1::*;
use govchain_proto::types::v1::{
    AnchoredRecord, CommittedBlock, InclusionProof, Transaction, TransactionEnvelope,
    transaction::Body,
};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{debug, info, warn};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::admission::Admission;
use crate::admission::AdmitError;
use crate::chain_state::LedgerState;
use crate::dissemination::FETCH_BATCHES_DIGESTS_MAX;
use crate::driver::DriverEvent;
use crate::errors::{self, ErrorReason, Failure, RETRY_AFTER_DEFAULT};
use crate::errors::{echo, internal};
use crate::events;
use crate::inclusion_proof::inclusion_proof;
use crate::limits::SUBSCRIBER_STALL_MAX;
use crate::mempool::MempoolError;
use crate::queries;
use crate::shared::Shared;
use crate::state_proof::read_with_proof;
use crate::{tls, wire};

/// Blocks a subscription reads from the ledger per batch while catching up.
const SUBSCRIPTION_CATCH_UP_BLOCKS_MAX: u64 = 64;

pub(crate) fn status_from_admission(err: &AdmitError) -> Status {
    let message = err.to_string();
    let err = match err {
        AdmitError::Refused(refusal) => return status_from_refusal(refusal),
        AdmitError::Mempool(err) => err,
    };
    let failure = match err {
        MempoolError::Full { .. } => {
            Failure::new(Code::ResourceExhausted, ErrorReason::MempoolFull, message)
                .retry_after(RETRY_AFTER_DEFAULT)
        }
        MempoolError::DepartmentShare { .. } => Failure::new(
            Code::ResourceExhausted,
            ErrorReason::MempoolShareReached,
            message,
        )
        .meta("limit", "DEPARTMENT_SHARE_DIVISOR")
        .retry_after(RETRY_AFTER_DEFAULT),
        MempoolError::Transaction(err) => match err {
            TransactionError::TooLarge { max, .. } => Failure::new(
                Code::ResourceExhausted,
                ErrorReason::PayloadTooLarge,
                message.clone(),
            )
            .meta("limit", max)
            .field("envelope.payload", message),
            TransactionError::Duplicate { state, .. } => Failure::new(
                Code::AlreadyExists,
                ErrorReason::DuplicateTransaction,
                message,
            )
            .meta("state", state),
            TransactionError::StaleNonce {
                signer, committed, ..
            } => Failure::new(
                Code::FailedPrecondition,
                ErrorReason::NonceUsed,
                message.clone(),
            )
            .meta("committed_nonce", committed)
            .precondition("NONCE", signer, message),
            TransactionError::NonceTooFarAhead {
                signer, committed, ..
            } => Failure::new(
                Code::FailedPrecondition,
                ErrorReason::NonceTooFarAhead,
                message.clone(),
            )
            .meta("committed_nonce", committed)
            .precondition("NONCE", signer, message),
            TransactionError::NonceTaken { signer, .. } => Failure::new(
                Code::FailedPrecondition,
                ErrorReason::NonceTaken,
                message.clone(),
            )
            .precondition("NONCE", signer, message),
            TransactionError::WrongChain { .. } => Failure::new(
                Code::InvalidArgument,
                ErrorReason::WrongChain,
                message.clone(),
            )
            .field("envelope.chain_id", message),
            TransactionError::BadSignature { .. } => Failure::new(
                Code::InvalidArgument,
                ErrorReason::BadSignature,
                message.clone(),
            )
            .field("envelope.signature", message),
            _ => Failure::new(
                Code::InvalidArgument,
                ErrorReason::MalformedTransaction,
                message,
            ),
        },
    };
    failure.status()
}

pub(crate) fn status_from_refusal(refusal: &Refusal) -> Status {
    let message = refusal.to_string();
    let (code, reason) = refusal_reason(refusal);
    Failure::new(code, reason, message).status()
}

/// The code and reason of a rule's refusal, at admission and in a
/// transaction's result alike.
pub(crate) fn refusal_reason(refusal: &Refusal) -> (Code, ErrorReason) {
    let code = match refusal {
        Refusal::NotFound(_) => Code::NotFound,
        Refusal::AlreadyExists(_) => Code::AlreadyExists,
        Refusal::PermissionDenied(_) => Code::PermissionDenied,
        Refusal::FailedPrecondition(_) => Code::FailedPrecondition,
    };
    (code, refusal.reason())
}

fn digest_field(name: &str, bytes: &[u8]) -> Result<Digest, Status> {
    Digest::from_slice(bytes).map_err(|err| errors::invalid_field(name, format!("{name}: {err}")))
}

#[derive(Clone)]
pub struct NodeApi {
    pub shared: Arc<Shared>,
    pub admission: Admission,
}

impl NodeApi {
    /// Admits a transaction from a client and forwards it to the peers.
    pub(crate) async fn submit(
        &self,
        caller: &TlsIdentity,
        envelope: TransactionEnvelope,
    ) -> Result<VerifiedTransaction, Status> {
        let mut results = self.submit_many(caller, vec![envelope]).await?;
        results.pop().expect("one result per envelope")
    }

    /// Checks and admits `envelopes` as one admission job, with one result
    /// per envelope in order; the outer error refuses the whole call.
    pub(crate) async fn submit_many(
        &self,
        caller: &TlsIdentity,
        envelopes: Vec<TransactionEnvelope>,
    ) -> Result<Vec<Result<VerifiedTransaction, Status>>, Status> {
        if !self.shared.voting.load(Ordering::Relaxed) {
            let membership = self.shared.membership();
            let validators: Vec<&str> = membership
                .record
                .members
                .iter()
                .map(|m| m.department.as_str())
                .collect();
            return Err(errors::failed_precondition(format!(
                "{} is an observer (a read-only backup replica); submit transactions to a validator: {}",
                self.shared.name,
                validators.join(", ")
            )));
        }
        let mut results: Vec<Option<Result<VerifiedTransaction, Status>>> =
            Vec::with_capacity(envelopes.len());
        let mut admissible = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            match self
                .check_submitter(caller, &envelope)
                .and_then(|()| self.check_declaration(&envelope))
            {
                Ok(()) => {
                    admissible.push(envelope);
                    results.push(None);
                }
                Err(status) => results.push(Some(Err(status))),
            }
        }
        let mut verdicts = if admissible.is_empty() {
            Vec::new()
        } else {
            self.admission
                .submit_many(
                    &caller.department,
                    admissible,
                    tracing::Span::current().context(),
                )
                .await?
        }
        .into_iter();
        Ok(results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| {
                    let verdict = verdicts.next().expect("one verdict per admissible envelope");
                    let transaction = verdict.map_err(|e| status_from_admission(&e))?;
                    debug!(transaction_id = %transaction.id.short(), submitter = %caller.department, "admitted transaction");
                    Ok(transaction)
                })
            })
            .collect())
    }

    /// `SubmitTransactions` for one request message: the bounds, then one
    /// result per envelope.
    async fn submit_batch(
        &self,
        caller: &TlsIdentity,
        request: SubmitTransactionsRequest,
    ) -> Result<SubmitTransactionsResponse, Status> {
        let count = request.envelopes.len();
        if count > SUBMIT_BATCH_TRANSACTIONS_MAX {
            return Err(errors::invalid_argument(format!(
                "{count} envelopes in one request; at most {SUBMIT_BATCH_TRANSACTIONS_MAX} (SUBMIT_BATCH_TRANSACTIONS_MAX): split the batch"
            )));
        }
        let ids: Vec<Vec<u8>> = request
            .envelopes
            .iter()
            .map(|e| {
                govchain_exec::transaction_id(&e.chain_id, &e.signer, e.nonce, &e.payload).to_vec()
            })
            .collect();
        let results = self.submit_many(caller, request.envelopes).await?;
        Ok(SubmitTransactionsResponse {
            results: results
                .into_iter()
                .zip(ids)
                .map(|(result, transaction_id)| match result {
                    Ok(_) => SubmitResult {
                        transaction_id,
                        code: tonic::Code::Ok as i32,
                        message: String::new(),
                        reason: errors::ErrorReason::Unspecified as i32,
                    },
                    Err(status) => SubmitResult {
                        transaction_id,
                        code: status.code() as i32,
                        message: status.message().to_owned(),
                        reason: errors::reason_of(&status) as i32,
                    },
                })
                .collect(),
        })
    }

    /// A transaction signed with a department's genesis signing key must
    /// come through that department's own certificate: a department whose
    /// key leaked to another department's systems (or a department that
    /// obtained another's signed envelope) cannot have it ordered through
    /// its own connection. Peer validators forward admitted transactions
    /// over `ConsensusService`, not through here. Citizens' keys are not
    /// departments' and may arrive through any member's certificate.
    fn check_submitter(
        &self,
        caller: &TlsIdentity,
        envelope: &TransactionEnvelope,
    ) -> Result<(), Status> {
        let Ok(signer) = PublicKey::from_slice(&envelope.signer) else {
            return Ok(()); // Malformed: admission says precisely why.
        };
        match self.shared.departments().by_key(&signer) {
            Some(department) if department.name != caller.department => {
                Err(errors::permission_denied(format!(
                    "the transaction is signed with department {:?}'s signing key but arrived with {}'s certificate: a department submits its transactions with its own certificate",
                    department.name, caller
                )))
            }
            _ => Ok(()),
        }
    }

    /// A declaration names the department whose node holds the blob: it
    /// must be this node's, and the blob must be stored here, so that the
    /// chain never points at a blob nobody has. (Malformed payloads are
    /// left to admission, which reports them precisely.)
    fn check_declaration(&self, envelope: &TransactionEnvelope) -> Result<(), Status> {
        let Ok(Transaction {
            body: Some(Body::DeclareAttribute(declare)),
        }) = Transaction::decode(envelope.payload.clone())
        else {
            return Ok(());
        };
        if declare.holder != self.shared.name {
            return Err(errors::failed_precondition(format!(
                "the declaration names {} as holder, but this is {:?}'s node: upload the blob to the holder's node and submit the declaration there",
                echo(&declare.holder),
                self.shared.name
            )));
        }
        let cid = crate::blobs::parse_cid(&declare.cid)?;
        let stored = self
            .shared
            .blobs
            .store
            .stat(&cid)
            .map_err(crate::blobs::status_from_blob)?;
        match stored {
            Some(info) if info.size_bytes == declare.size_bytes => Ok(()),
            Some(info) => Err(errors::invalid_argument(format!(
                "blob {cid} has {} bytes, but the declaration says {}",
                info.size_bytes, declare.size_bytes
            ))),
            None => Err(errors::failed_precondition(format!(
                "blob {cid} is not stored on this node; upload it first (BlobService.Upload)"
            ))),
        }
    }

    /// `id` as committed on this node, if it is, decoding each block once
    /// for all the ids looked up with the same `blocks` (which keeps the
    /// blocks it decoded, so a proof can be built from them).
    fn committed_transaction_cached(
        &self,
        id: &Digest,
        blocks: &mut BTreeMap<u64, CommittedBlock>,
    ) -> Result<Option<GetTransactionResponse>, Status> {
        let Some(location) = self
            .shared
            .ledger
            .transaction(id)
            .map_err(crate::errors::ledger_read)?
        else {
            return Ok(None);
        };
        let block = match blocks.entry(location.height) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => entry.insert(
                self.committed_block(location.height)?
                    .ok_or_else(|| internal("indexed block missing", location.height))?,
            ),
        };
        let envelope = block
            .block
            .as_ref()
            .and_then(|b| b.transactions.get(location.index as usize).cloned());
        let result =
            govchain_proto::types::v1::TransactionResult::decode(location.result.as_slice())
                .map_err(|e| internal("stored result does not decode", e))?;
        Ok(Some(GetTransactionResponse {
            transaction_id: id.to_vec(),
            status: TransactionStatus::Committed.into(),
            block_height: location.height,
            block_hash: block.block_hash.clone(),
            index: location.index,
            result: Some(result),
            envelope,
            drop_reason: String::new(),
            proof: None,
        }))
    }

    /// `id` as this node dropped it, if it did (and does not hold it again).
    fn dropped_transaction(&self, id: &Digest) -> Option<GetTransactionResponse> {
        let reason = self.shared.mempool().dropped(id)?;
        Some(GetTransactionResponse {
            transaction_id: id.to_vec(),
            status: TransactionStatus::Dropped.into(),
            drop_reason: reason.to_string(),
            ..Default::default()
        })
    }

    /// Waits until each of `ids` is committed here (or dropped), sending
    /// each to `found` once, in commit order (those already committed
    /// first), or until `deadline`; returns the ids still waiting then (none
    /// when the receiver went away). New blocks are learnt from the block broadcast,
    /// subscribed before the ledger is first read so that no commit falls
    /// between the two. Sending waits for room, so a reader that does not
    /// read holds at most the channel's few answers.
    async fn wait_committed(
        &self,
        ids: Vec<Digest>,
        deadline: tokio::time::Instant,
        found: &mpsc::Sender<GetTransactionResponse>,
    ) -> Result<Vec<Digest>, Status> {
        let mut blocks = self.shared.blocks.subscribe();
        let mut waiting = ids;
        loop {
            let mut still = Vec::with_capacity(waiting.len());
            let mut decoded = BTreeMap::new();
            for id in waiting {
                match self.committed_transaction_cached(&id, &mut decoded)? {
                    Some(committed) => {
                        match tokio::time::timeout_at(deadline, found.send(committed)).await {
                            Ok(Ok(())) => {}
                            // The receiver went away.
                            Ok(Err(_)) => return Ok(Vec::new()),
                            // It stopped reading until the deadline.
                            Err(_) => return Ok(vec![id]),
                        }
                    }
                    None => match self.dropped_transaction(&id) {
                        Some(dropped) => {
                            match tokio::time::timeout_at(deadline, found.send(dropped)).await {
                                Ok(Ok(())) => {}
                                Ok(Err(_)) => return Ok(Vec::new()),
                                Err(_) => return Ok(vec![id]),
                            }
                        }
                        None => still.push(id),
                    },
                }
            }
            waiting = still;
            if waiting.is_empty() {
                return Ok(waiting);
            }
            // Any new block (or a lag, which means many) is a reason to
            // look again; so is the time in which a transaction may have
            // been dropped without any block.
            let look_again = deadline.min(tokio::time::Instant::now() + DROPPED_POLL_INTERVAL);
            match tokio::time::timeout_at(look_again, blocks.recv()).await {
                Err(_) if look_again >= deadline => return Ok(waiting),
                Err(_) => {}
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                    return Err(errors::unavailable(
                        "the node is shutting down",
                        errors::RETRY_AFTER_DEFAULT,
                    ));
                }
                Ok(_) => {}
            }
        }
    }

    /// Sends to `sender` what `per_block` makes of each committed block
    /// from height `next` on, in order: those in the ledger first, then each
    /// as it commits (`live`, subscribed before the ledger was read, so
    /// that no block falls between). A subscriber that falls behind the
    /// live buffer reads the ledger again, so it never misses a block. Ends
    /// when the client goes away, stops reading for
    /// [`SUBSCRIBER_STALL_MAX`] (it is disconnected, and told so in the
    /// log), or the node stops.
    async fn follow_committed<T: Send>(
        &self,
        mut next: u64,
        mut live: tokio::sync::broadcast::Receiver<Arc<CommittedBlock>>,
        department: &str,
        sender: &mpsc::Sender<Result<T, Status>>,
        mut per_block: impl FnMut(&CommittedBlock) -> Vec<T>,
    ) {
        let send = |item| async {
            match sender.send_timeout(item, SUBSCRIBER_STALL_MAX).await {
                Ok(()) => true,
                Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                    info!(%department, stalled_secs = SUBSCRIBER_STALL_MAX.as_secs(), "a block subscriber stopped reading; disconnected");
                    false
                }
                Err(mpsc::error::SendTimeoutError::Closed(_)) => false,
            }
        };
        loop {
            while next <= self.shared.ledger.head().height {
                let until = (next + SUBSCRIPTION_CATCH_UP_BLOCKS_MAX)
                    .min(self.shared.ledger.head().height + 1);
                for height in next..until {
                    let block = match self.committed_block(height) {
                        Ok(Some(block)) => block,
                        Ok(None) => return,
                        Err(status) => {
                            send(Err(status)).await;
                            return;
                        }
                    };
                    for item in per_block(&block) {
                        if !send(Ok(item)).await {
                            return;
                        }
                    }
                }
                next = until;
            }
            // A subscriber that went away frees its place now, not at the
            // next block.
            let received = tokio::select! {
                received = live.recv() => received,
                () = sender.closed() => return,
            };
            match received {
                Ok(block) => {
                    let height = block.header.as_ref().map_or(0, |h| h.height);
                    if height == next {
                        for item in per_block(&block) {
                            if !send(Ok(item)).await {
                                return;
                            }
                        }
                        next += 1;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// The inclusion proof of the transaction that anchored `anchored`.
    /// Blocks never change once appended, so this agrees with a state
    /// proof read from any later head.
    fn anchoring_proof(&self, anchored: &AnchoredRecord) -> Result<InclusionProof, Status> {
        let id = Digest::from_slice(&anchored.transaction_id)
            .map_err(|e| internal("stored anchor's transaction id is malformed", e))?;
        let location = self
            .shared
            .ledger
            .transaction(&id)
            .map_err(crate::errors::ledger_read)?
            .ok_or_else(|| internal("anchoring transaction not indexed", id))?;
        let block = self
            .committed_block(location.height)?
            .ok_or_else(|| internal("indexed block missing", location.height))?;
        let mut proof = inclusion_proof(&block, location.index)
            .map_err(|e| internal("inclusion proof failed", e))?;
        proof.validator_set_changes = self.set_changes_before(location.height)?;
        Ok(proof)
    }

    /// The validator set changes a proof of block `height` carries.
    fn set_changes_before(
        &self,
        height: u64,
    ) -> Result<Vec<govchain_proto::types::v1::ValidatorSetChange>, Status> {
        let membership = self.shared.membership();
        crate::certified_header::set_changes_before(
            &self.shared.ledger,
            &membership.record.change_heights,
            height,
        )
        .map_err(|e| internal("cannot read the validator set changes", format!("{e:#}")))
    }

    /// The block at `height` without its transactions and results, also
    /// where they were pruned.
    fn block_header(&self, height: u64) -> Result<Option<CommittedBlock>, Status> {
        let Some(stored) = self
            .shared
            .ledger
            .block_or_header(height)
            .map_err(crate::errors::ledger_read)?
        else {
            return Ok(None);
        };
        let mut block = CommittedBlock::decode(stored.encoded.as_slice())
            .map_err(|e| internal("stored block does not decode", e))?;
        crate::prune::headers_only(&mut block);
        Ok(Some(block))
    }

    fn committed_block(&self, height: u64) -> Result<Option<CommittedBlock>, Status> {
        let Some(bytes) = self
            .shared
            .ledger
            .block_by_height(height)
            .map_err(crate::errors::ledger_read)?
        else {
            return Ok(None);
        };
        CommittedBlock::decode(bytes.as_slice())
            .map(Some)
            .map_err(|e| internal("stored block does not decode", e))
    }
}

type BlockStream = Pin<Box<dyn Stream<Item = Result<SubscribeBlocksResponse, Status>> + Send>>;
type FeedStream =
    Pin<Box<dyn Stream<Item = Result<SubmitTransactionStreamResponse, Status>> + Send>>;

type CommitStream = Pin<Box<dyn Stream<Item = Result<CommitStatusResponse, Status>> + Send>>;
type TransactionEventStream =
    Pin<Box<dyn Stream<Item = Result<SubscribeTransactionsResponse, Status>> + Send>>;

/// How often a wait for commits looks whether a transaction it waits for
/// was dropped (which no block announces).
const DROPPED_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Transactions one `CommitStatus` call may follow.
pub const COMMIT_STATUS_IDS_MAX: usize = 1024;
/// Answers a `CommitStatus` stream holds for a client that does not read
/// them; the wait then pauses (until the deadline).
const COMMIT_STATUS_BUFFERED_MAX: usize = 16;
/// How long a wait for commits lasts without a deadline from the client.
pub const COMMIT_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(60);
/// A wait ends this long before the client's deadline, so that the client
/// gets the node's answer rather than its own timeout.
const DEADLINE_MARGIN: std::time::Duration = std::time::Duration::from_millis(50);

/// When a wait for commits must end: the client's `grpc-timeout` less a
/// margin, at most [`COMMIT_WAIT_MAX`] from now.
fn wait_deadline(metadata: &tonic::metadata::MetadataMap) -> tokio::time::Instant {
    let asked = metadata
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map(|timeout| timeout.saturating_sub(DEADLINE_MARGIN));
    let wait = asked.map_or(COMMIT_WAIT_MAX, |asked| asked.min(COMMIT_WAIT_MAX));
    tokio::time::Instant::now() + wait
}

/// The `grpc-timeout` header: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(text: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.checked_mul(3600)?),
        "M" => Duration::from_secs(value.checked_mul(60)?),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

/// Envelopes one `SubmitTransactions` request (or one message of a feed)
/// may hold; the 16 MiB message limit bounds its bytes.
pub const SUBMIT_BATCH_TRANSACTIONS_MAX: usize = 1024;
/// How long a feed may stay open without a batch before it is closed.
pub const FEED_IDLE_MAX: std::time::Duration = std::time::Duration::from_secs(300);
/// Answers a feed holds for a client that does not read them.
const FEED_RESPONSES_BUFFERED_MAX: usize = 4;

#[tonic::async_trait]
impl NodeService for NodeApi {
    async fn submit_transaction(
        &self,
        request: Request<SubmitTransactionRequest>,
    ) -> Result<Response<SubmitTransactionResponse>, Status> {
        let caller = tls::department_caller(&request)?;
        let envelope = request
            .into_inner()
            .envelope
            .ok_or_else(|| errors::invalid_argument("envelope is required"))?;
        let transaction = self.submit(&caller, envelope).await?;
        Ok(Response::new(SubmitTransactionResponse {
            transaction_id: transaction.id.to_vec(),
        }))
    }

    async fn submit_transactions(
        &self,
        request: Request<SubmitTransactionsRequest>,
    ) -> Result<Response<SubmitTransactionsResponse>, Status> {
        let caller = tls::department_caller(&request)?;
        let response = self.submit_batch(&caller, request.into_inner()).await?;
        Ok(Response::new(response))
    }

    type SubmitTransactionStreamStream = FeedStream;

    async fn submit_transaction_stream(
        &self,
        request: Request<Streaming<SubmitTransactionStreamRequest>>,
    ) -> Result<Response<FeedStream>, Status> {
        let caller = tls::department_caller(&request)?;
        let slot = self.shared.feeds.open(&caller.department)?;
        let mut requests = request.into_inner();
        let api = self.clone();
        // One batch at a time per feed: the client's flow control (and
        // this channel's few places) bound what a feed holds in memory.
        let (responses, receiver) = tokio::sync::mpsc::channel(FEED_RESPONSES_BUFFERED_MAX);
        tokio::spawn(async move {
            let _slot = slot;
            loop {
                let request = match tokio::time::timeout(FEED_IDLE_MAX, requests.message()).await {
                    Ok(Ok(Some(request))) => request,
                    Ok(Ok(None)) => return,
                    Ok(Err(status)) => {
                        let _ = responses.send(Err(errors::detailed(status))).await;
                        return;
                    }
                    Err(_) => {
                        let idle = errors::deadline_exceeded(format!(
                            "no batch for {FEED_IDLE_MAX:?} (FEED_IDLE_MAX): the feed is closed to free its place; open another"
                        ));
                        let _ = responses.try_send(Err(idle));
                        return;
                    }
                };
                let answer = api
                    .submit_batch(
                        &caller,
                        SubmitTransactionsRequest {
                            envelopes: request.envelopes,
                        },
                    )
                    .await
                    .map(|response| SubmitTransactionStreamResponse {
                        results: response.results,
                    });
                let failed = answer.is_err();
                // A client that stops reading its answers is let go, as a
                // stalled block subscriber is.
                let sent = tokio::time::timeout(SUBSCRIBER_STALL_MAX, responses.send(answer)).await;
                if !matches!(sent, Ok(Ok(()))) || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    async fn submit_transaction_and_wait(
        &self,
        request: Request<SubmitTransactionAndWaitRequest>,
    ) -> Result<Response<SubmitTransactionAndWaitResponse>, Status> {
        let deadline = wait_deadline(request.metadata());
        let caller = tls::department_caller(&request)?;
        let envelope = request
            .into_inner()
            .envelope
            .ok_or_else(|| errors::invalid_argument("envelope is required"))?;
        let transaction = self.submit(&caller, envelope).await?;
        let (found, mut committed) = mpsc::channel(1);
        let left = self
            .wait_committed(vec![transaction.id], deadline, &found)
            .await?;
        match committed.try_recv().ok() {
            Some(transaction) => Ok(Response::new(SubmitTransactionAndWaitResponse {
                transaction: Some(transaction),
            })),
            None => Err(errors::deadline_exceeded(format!(
                "transaction {} was admitted but did not commit before the deadline; it may still commit: ask CommitStatus or GetTransaction",
                left.first().unwrap_or(&transaction.id)
            ))),
        }
    }

    async fn get_validator_set(
        &self,
        request: Request<GetValidatorSetRequest>,
    ) -> Result<Response<GetValidatorSetResponse>, Status> {
        tls::caller_identity(&request)?;
        let request = request.into_inner();
        let limit = match request.proposals_limit {
            0 => govchain_exec::governance::PROPOSALS_PAGE_MAX,
            n => u64::from(n),
        };
        let height = self.shared.ledger.head().height;
        let state = crate::chain_state::LedgerState(&self.shared.ledger);
        let (proposals, next) =
            govchain_exec::governance::proposals_page(&state, request.proposals_after, limit)
                .map_err(|err| internal("cannot read validator proposals", err))?;
        let (departments_state, departments_proof) = if request.prove_departments {
            let (value, proof) = read_with_proof(
                &self.shared.ledger,
                govchain_exec::governance::DEPARTMENTS_KEY,
            )
            .map_err(|e| internal("state read with proof failed", e))?;
            (value.unwrap_or_default(), Some(proof))
        } else {
            (Vec::new(), None)
        };
        let membership = self.shared.membership();
        Ok(Response::new(GetValidatorSetResponse {
            departments_state,
            departments_proof,
            validators: Some(membership.record.clone()),
            proposals,
            next_proposals_after: next.unwrap_or(0),
            height,
            quorum: membership.set.quorum(),
            revocations: self.shared.revocations.list().revocations.clone(),
            departments: self.shared.departments().to_registry().departments,
        }))
    }

    type CommitStatusStream = CommitStream;

    async fn commit_status(
        &self,
        request: Request<CommitStatusRequest>,
    ) -> Result<Response<CommitStream>, Status> {
        let deadline = wait_deadline(request.metadata());
        let caller = tls::caller_identity(&request)?;
        let request = request.into_inner();
        if request.transaction_ids.len() > COMMIT_STATUS_IDS_MAX {
            return Err(errors::invalid_argument(format!(
                "{} transaction ids; at most {COMMIT_STATUS_IDS_MAX} (COMMIT_STATUS_IDS_MAX) per call",
                request.transaction_ids.len()
            )));
        }
        let mut ids = Vec::with_capacity(request.transaction_ids.len());
        for (i, id) in request.transaction_ids.iter().enumerate() {
            let id = digest_field(&format!("transaction_ids[{i}]"), id)?;
            if ids.contains(&id) {
                return Err(errors::invalid_argument(format!(
                    "transaction_ids[{i}] repeats {id}"
                )));
            }
            ids.push(id);
        }
        let slot = self.shared.subscriptions.open(&caller.department)?;
        let (sender, receiver) = mpsc::channel(COMMIT_STATUS_BUFFERED_MAX);
        let (found, mut committed) = mpsc::channel(1);
        let api = self.clone();
        // Answers pass through as they come; the slot is held until the
        // client has them all, or went away.
        let forward = sender.clone();
        let forwarding = tokio::spawn(async move {
            while let Some(transaction) = committed.recv().await {
                let answer = Ok(CommitStatusResponse {
                    transaction: Some(transaction),
                });
                if forward.send(answer).await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            let _slot = slot;
            let outcome = tokio::select! {
                outcome = api.wait_committed(ids, deadline, &found) => outcome,
                // The client cancelled: stop waiting at once.
                () = sender.closed() => return,
            };
            // Every answer goes out before the end of the stream.
            drop(found);
            let _ = forwarding.await;
            let end = match outcome {
                Ok(left) if left.is_empty() => return,
                Ok(left) => errors::deadline_exceeded(format!(
                    "{} transactions did not commit before the deadline: {}",
                    left.len(),
                    left.iter()
                        .take(8)
                        .map(Digest::short)
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Err(status) => status,
            };
            let _ = sender.send(Err(end)).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    async fn get_transaction(
        &self,
        request: Request<GetTransactionRequest>,
    ) -> Result<Response<GetTransactionResponse>, Status> {
        let request = request.into_inner();
        let id = digest_field("transaction_id", &request.transaction_id)?;
        let mut blocks = BTreeMap::new();
        if let Some(mut committed) = self.committed_transaction_cached(&id, &mut blocks)? {
            if request.prove {
                let block = blocks
                    .get(&committed.block_height)
                    .ok_or_else(|| internal("looked-up block missing", committed.block_height))?;
                let mut proof = inclusion_proof(block, committed.index)
                    .map_err(|e| internal("inclusion proof failed", e))?;
                proof.validator_set_changes = self.set_changes_before(committed.block_height)?;
                committed.proof = Some(proof);
            }
            return Ok(Response::new(committed));
        }
        let pending = self.shared.mempool().get(&id).map(|t| t.envelope.clone());
        if let Some(envelope) = pending {
            return Ok(Response::new(GetTransactionResponse {
                transaction_id: id.to_vec(),
                status: TransactionStatus::Pending.into(),
                envelope: Some(envelope),
                ..Default::default()
            }));
        }
        match self.dropped_transaction(&id) {
            Some(dropped) => Ok(Response::new(dropped)),
            None => Err(errors::not_found_plain(format!(
                "transaction {id} is neither committed nor pending on this node"
            ))),
        }
    }

    async fn get_block(
        &self,
        request: Request<GetBlockRequest>,
    ) -> Result<Response<GetBlockResponse>, Status> {
        use get_block_request::Selector;
        let height = match request.into_inner().selector {
            Some(Selector::Height(height)) => height,
            Some(Selector::Latest(true)) => self.shared.ledger.head().height,
            Some(Selector::Latest(false)) => {
                return Err(errors::invalid_argument(
                    "latest = false selects nothing: set latest = true, or give a height or a hash",
                ));
            }
            Some(Selector::Hash(hash)) => {
                let hash = digest_field("hash", &hash)?;
                match self
                    .shared
                    .ledger
                    .block_by_hash(&hash)
                    .map_err(crate::errors::ledger_read)?
                {
                    Some((height, _)) => height,
                    None => {
                        return Err(errors::not_found_plain(format!(
                            "no block with hash {hash}"
                        )));
                    }
                }
            }
            None => return Err(errors::invalid_argument("give a height, a hash or latest")),
        };
        let head = self.shared.ledger.head().height;
        if height == 0 {
            return Err(errors::not_found_plain(
                "height 0 is genesis, which has no block; the first block is at height 1",
            ));
        }
        let first = self.shared.ledger.first_height();
        if height < first {
            return Err(errors::not_found_plain(format!(
                "this node joined from a state snapshot at block {first} and holds no block below it; ask a node that synced from genesis"
            )));
        }
        match self.committed_block(height)? {
            Some(block) => Ok(Response::new(GetBlockResponse { block: Some(block) })),
            None => Err(errors::not_found_plain(format!(
                "no block at height {height}; the head is at {head}"
            ))),
        }
    }

    async fn get_status(
        &self,
        _request: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, Status> {
        let shared = &self.shared;
        let head = shared.ledger.head();
        let view = shared.current_view();
        let membership = shared.membership();
        let (mempool_transactions, mempool_bytes) = {
            let mempool = shared.mempool();
            (mempool.len(), mempool.bytes())
        };
        Ok(Response::new(GetStatusResponse {
            chain_id: shared.chain_id().into(),
            node: shared.name.clone(),
            height: head.height,
            head_hash: head.hash.to_vec(),
            state_root: head.state_root.to_vec(),
            genesis_hash: shared.genesis_hash.to_vec(),
            view,
            primary: shared.validator_name(membership.set.primary(view)),
            validator_count: membership.set.len(),
            mempool_transactions,
            mempool_bytes,
            connected_peers: shared.peers.connected(),
            head_timestamp_ms: head.timestamp_ms,
            observer: !shared.voting.load(Ordering::Relaxed),
            view_active: shared.view_normal.load(Ordering::Relaxed),
            rejected_messages: shared.rejected_messages.load(Ordering::Relaxed),
            syncing: shared.readiness.syncing(),
            metrics_url: shared.metrics_url.get().cloned().unwrap_or_default(),
            portal_url: shared.portal_url.get().cloned().unwrap_or_default(),
        }))
    }

    type SubscribeBlocksStream = BlockStream;

    async fn subscribe_blocks(
        &self,
        request: Request<SubscribeBlocksRequest>,
    ) -> Result<Response<BlockStream>, Status> {
        // Reading blocks is open to every certificate of a member, the
        // platform team's admin certificate included.
        let caller = tls::caller_identity(&request)?;
        let slot = self.shared.subscriptions.open(&caller.department)?;
        let from = request.into_inner().from_height;
        let next = if from == 0 {
            self.shared.ledger.head().height + 1
        } else {
            from
        };
        let (sender, receiver) = mpsc::channel(16);
        let api = self.clone();
        let live = self.shared.blocks.subscribe();
        tokio::spawn(async move {
            // Held until the subscription ends, however it ends.
            let _slot = slot;
            api.follow_committed(next, live, &caller.department, &sender, |block| {
                vec![SubscribeBlocksResponse {
                    block: Some(block.clone()),
                }]
            })
            .await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    type SubscribeTransactionsStream = TransactionEventStream;

    async fn subscribe_transactions(
        &self,
        request: Request<SubscribeTransactionsRequest>,
    ) -> Result<Response<TransactionEventStream>, Status> {
        let caller = tls::caller_identity(&request)?;
        let request = request.into_inner();
        let filter = events::Filter::new(request.filter.unwrap_or_default())?;
        let head = self.shared.ledger.head().height;
        // The first block to read, and the first entry in it. A position
        // beyond this node's head (a client that resumes on a node that lags
        // the one it followed) waits for the node to get there, as a
        // subscription from the next block does.
        let (next, first) = match request.after {
            Some(after) if after.height == 0 => {
                return Err(errors::invalid_field(
                    "after.height",
                    "height 0 holds no transaction; the first block is 1 (or use from_height)",
                ));
            }
            Some(after) => (after.height, after.index.saturating_add(1)),
            None if request.from_height == 0 => (head + 1, 0),
            None => (request.from_height, 0),
        };
        let slot = self.shared.subscriptions.open(&caller.department)?;
        let (sender, receiver) = mpsc::channel(64);
        let api = self.clone();
        let live = self.shared.blocks.subscribe();
        tokio::spawn(async move {
            let _slot = slot;
            let departments = api.shared.departments();
            api.follow_committed(next, live, &caller.department, &sender, |block| {
                let height = block.header.as_ref().map_or(0, |h| h.height);
                let from = if height == next { first } else { 0 };
                events::events(block, from, &filter, &departments)
                    .into_iter()
                    .map(|transaction| SubscribeTransactionsResponse {
                        transaction: Some(transaction),
                    })
                    .collect()
            })
            .await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    async fn list_anchors(
        &self,
        request: Request<ListAnchorsRequest>,
    ) -> Result<Response<ListAnchorsResponse>, Status> {
        tls::caller_identity(&request)?;
        let request = request.into_inner();
        let by_time = request.from_time_ms > 0 || request.to_time_ms > 0;
        let selectors = [
            !request.dataset.is_empty(),
            !request.department.is_empty(),
            by_time,
        ];
        if selectors.iter().filter(|s| **s).count() != 1 {
            return Err(errors::invalid_argument(
                "name exactly one of: dataset (with record_id for a record's versions), department, or a time range (from_time_ms, to_time_ms)",
            ));
        }
        if !request.record_id.is_empty() && request.dataset.is_empty() {
            return Err(errors::invalid_field(
                "dataset",
                "record_id needs its dataset",
            ));
        }
        if request.to_time_ms > 0 && request.to_time_ms <= request.from_time_ms {
            return Err(errors::invalid_field(
                "to_time_ms",
                format!(
                    "to_time_ms {} is not after from_time_ms {}",
                    request.to_time_ms, request.from_time_ms
                ),
            ));
        }
        let listing = if !request.record_id.is_empty() {
            queries::Listing::Record {
                dataset: request.dataset,
                record_id: request.record_id,
            }
        } else if !request.dataset.is_empty() {
            queries::Listing::Dataset(request.dataset)
        } else if !request.department.is_empty() {
            queries::Listing::Department(request.department)
        } else {
            queries::Listing::Time {
                from_ms: request.from_time_ms,
                to_ms: request.to_time_ms,
            }
        };
        let (anchors, next_page_token) = queries::list(
            &self.shared,
            &listing,
            request.page_size,
            &request.page_token,
        )?;
        Ok(Response::new(ListAnchorsResponse {
            anchors,
            next_page_token,
        }))
    }

    async fn list_transactions(
        &self,
        request: Request<ListTransactionsRequest>,
    ) -> Result<Response<ListTransactionsResponse>, Status> {
        tls::caller_identity(&request)?;
        let request = request.into_inner();
        let signer = PublicKey::from_slice(&request.signer)
            .map_err(|err| errors::invalid_field("signer", format!("signer: {err}")))?;
        let (transactions, next_page_token) = queries::list(
            &self.shared,
            &queries::Listing::Signer(*signer.as_bytes()),
            request.page_size,
            &request.page_token,
        )?;
        Ok(Response::new(ListTransactionsResponse {
            transactions,
            next_page_token,
        }))
    }

    async fn get_account(
        &self,
        request: Request<GetAccountRequest>,
    ) -> Result<Response<GetAccountResponse>, Status> {
        let request = request.into_inner();
        let key = PublicKey::from_slice(&request.public_key)
            .map_err(|err| errors::invalid_argument(format!("public_key: {err}")))?;
        let (committed_nonce, proof) = if request.prove {
            // The nonce from the proof's own snapshot, so that both agree.
            let (value, proof) = read_with_proof(&self.shared.ledger, &nonce_key(&key))
                .map_err(|e| internal("state read with proof failed", e))?;
            let nonce = match value.as_deref().map(<[u8; 8]>::try_from) {
                None => 0,
                Some(Ok(bytes)) => u64::from_be_bytes(bytes),
                Some(Err(err)) => return Err(internal("stored nonce is corrupt", err)),
            };
            (nonce, Some(proof))
        } else {
            let nonce = read_nonce(&LedgerState(&self.shared.ledger), &key)
                .map_err(|e| internal("state read failed", e))?;
            (nonce, None)
        };
        let account = self.shared.mempool().account(&key, committed_nonce);
        Ok(Response::new(GetAccountResponse {
            committed_nonce,
            pending_nonce: account.highest,
            next_nonce: account.next,
            parked: account.parked,
            proof,
        }))
    }

    async fn get_anchor(
        &self,
        request: Request<GetAnchorRequest>,
    ) -> Result<Response<GetAnchorResponse>, Status> {
        let request = request.into_inner();
        for (field, value) in [
            ("dataset", &request.dataset),
            ("record_id", &request.record_id),
        ] {
            if value.is_empty() {
                return Err(errors::invalid_argument(format!(
                    "{field} is required (an anchor is named by dataset and record_id)"
                )));
            }
        }
        let key = anchor_key(&request.dataset, &request.record_id);
        let (bytes, proof) = if request.prove {
            let (value, proof) = read_with_proof(&self.shared.ledger, &key)
                .map_err(|e| internal("state read with proof failed", e))?;
            (value, Some(proof))
        } else {
            let value = LedgerState(&self.shared.ledger)
                .get(&key)
                .map_err(|e| internal("state read failed", e))?;
            (value, None)
        };
        let Some(bytes) = bytes else {
            if proof.is_some() {
                // The proof of absence is the answer.
                return Ok(Response::new(GetAnchorResponse {
                    anchored: None,
                    proof,
                    anchored_bytes: Vec::new(),
                    anchoring_proof: None,
                }));
            }
            return Err(errors::not_found_plain(format!(
                "record {} in dataset {} is not anchored",
                echo(&request.record_id),
                echo(&request.dataset)
            )));
        };
        let anchored = AnchoredRecord::decode(bytes.as_slice())
            .map_err(|e| internal("stored anchor does not decode", e))?;
        let (anchored_bytes, anchoring_proof) = if proof.is_some() {
            (bytes, Some(self.anchoring_proof(&anchored)?))
        } else {
            (Vec::new(), None)
        };
        Ok(Response::new(GetAnchorResponse {
            anchored: Some(anchored),
            proof,
            anchored_bytes,
            anchoring_proof,
        }))
    }
}

#[derive(Clone)]
pub struct ConsensusApi {
    pub shared: Arc<Shared>,
    pub driver: mpsc::Sender<DriverEvent>,
    pub admission: Admission,
    pub snapshots: Arc<crate::state_sync::Server>,
}

type FetchStream = Pin<Box<dyn Stream<Item = Result<FetchBlocksResponse, Status>> + Send>>;
type FetchBatchesStream = Pin<Box<dyn Stream<Item = Result<FetchBatchesResponse, Status>> + Send>>;
type SnapshotStream =
    Pin<Box<dyn Stream<Item = Result<FetchStateSnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ConsensusService for ConsensusApi {
    type FetchBlocksStream = FetchStream;
    type FetchBatchesStream = FetchBatchesStream;
    type FetchStateSnapshotStream = SnapshotStream;

    async fn fetch_state_snapshot(
        &self,
        request: Request<FetchStateSnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        let identity = tls::caller_identity(&request)?;
        tls::require_node(&identity)?;
        let permit = self.snapshots.try_begin().ok_or_else(|| {
            Status::resource_exhausted(
                "this node is sending another state snapshot; ask another peer or retry",
            )
        })?;
        let ledger = self.shared.ledger.clone();
        let snapshots = self.snapshots.clone();
        let (sender, receiver) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            if let Err(status) = crate::state_sync::serve(&ledger, &snapshots, &sender) {
                let _ = sender.blocking_send(Err(status));
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    /// Batches this node holds, for a validator that lacks one a proposal
    /// names: only validators may ask, at most
    /// `FETCH_BATCHES_DIGESTS_MAX` digests per call, one batch per message.
    async fn fetch_batches(
        &self,
        request: Request<FetchBatchesRequest>,
    ) -> Result<Response<FetchBatchesStream>, Status> {
        let identity = tls::caller_identity(&request)?;
        tls::require_node(&identity)?;
        let peer = self.validator_of(&identity)?;
        let FetchBatchesRequest { digests } = request.into_inner();
        if digests.len() > FETCH_BATCHES_DIGESTS_MAX {
            return Err(errors::invalid_argument(format!(
                "{} digests asked for, at most {FETCH_BATCHES_DIGESTS_MAX} per call",
                digests.len()
            )));
        }
        let digests = digests
            .iter()
            .map(|d| digest_field("digests", d))
            .collect::<Result<Vec<_>, _>>()?;
        let held: Vec<_> = {
            let store = self.shared.batches();
            digests.iter().filter_map(|d| store.get(d)).collect()
        };
        debug!(node = %self.shared.name, peer = %self.shared.validator_name(peer), asked = digests.len(), held = held.len(), "serving batches");
        let responses: Vec<Result<FetchBatchesResponse, Status>> = held
            .iter()
            .map(|batch| {
                Ok(FetchBatchesResponse {
                    batch: Some(batch.to_wire()),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(responses))))
    }

    /// Committed blocks for state transfer and observers: any node
    /// certificate of the consortium may ask, a bounded number per call.
    async fn fetch_blocks(
        &self,
        request: Request<FetchBlocksRequest>,
    ) -> Result<Response<FetchStream>, Status> {
        let identity = tls::caller_identity(&request)?;
        tls::require_node(&identity)?;
        let FetchBlocksRequest {
            from_height,
            to_height,
            headers_only,
        } = request.into_inner();
        if from_height == 0 || to_height < from_height {
            return Err(errors::invalid_argument(format!(
                "bad range {from_height}..={to_height}; heights start at 1"
            )));
        }
        let head = self.shared.ledger.head().height;
        let last = to_height
            .min(head)
            .min(from_height.saturating_add(crate::sync::SYNC_BATCH_BLOCKS_MAX - 1));
        let api = NodeApi {
            shared: self.shared.clone(),
            admission: self.admission.clone(),
        };
        let (sender, receiver) = mpsc::channel(8);
        tokio::spawn(async move {
            for height in from_height..=last {
                // A pruned block still has what `headers_only` sends.
                let read = if headers_only {
                    api.block_header(height)
                } else {
                    api.committed_block(height)
                };
                let item = match read {
                    Ok(Some(block)) => Ok(FetchBlocksResponse { block: Some(block) }),
                    Ok(None) => return,
                    Err(status) => Err(status),
                };
                if sender.send(item).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    async fn stream(
        &self,
        request: Request<Streaming<StreamRequest>>,
    ) -> Result<Response<StreamResponse>, Status> {
        let identity = tls::caller_identity(&request)?;
        tls::require_node(&identity)?;
        let peer = self.validator_of(&identity)?;
        let peer_name = self.shared.validator_name(peer);
        let leaf = request
            .peer_certs()
            .and_then(|certificates| certificates.first().map(|c| c.to_vec()))
            .unwrap_or_default();
        let mut stream = request.into_inner();
        let mut accepted = 0u64;
        while let Some(message) = stream.next().await {
            let message = message.map_err(errors::detailed)?;
            // Governance may remove the peer while its stream is open: from
            // the block that does, its messages are refused.
            if let Some(refusal) = self.shared.revocations.refusal(&leaf) {
                warn!(peer = %peer_name, %refusal, "closing the stream of a revoked certificate");
                return Err(errors::unauthenticated(refusal));
            }
            let membership = self.shared.membership();
            if !membership.set.contains(peer) {
                warn!(peer = %peer_name, "closing the stream of a validator that left the validator set");
                return Err(errors::permission_denied(format!(
                    "{identity} left the validator set of chain {} at height {}",
                    self.shared.chain_id(),
                    membership.record.since_height
                )));
            }
            match message.kind {
                Some(Kind::Consensus(consensus)) => {
                    if consensus.sender_index != peer {
                        let claimed = self.shared.validator_name(consensus.sender_index);
                        warn!(peer = %peer_name, claimed, "peer sent a message under another validator's name");
                        return Err(errors::permission_denied(format!(
                            "this stream is authenticated as validator {peer_name} (index {peer}) but the message claims sender {claimed} (index {})",
                            consensus.sender_index
                        )));
                    }
                    let message = wire::message_from_wire(consensus).map_err(|err| {
                        errors::invalid_argument(format!("malformed consensus message: {err}"))
                    })?;
                    if self
                        .driver
                        .send(DriverEvent::Consensus(Event::Message(message)))
                        .await
                        .is_err()
                    {
                        return Err(errors::unavailable(
                            "node is shutting down",
                            errors::RETRY_AFTER_DEFAULT,
                        ));
                    }
                }
                Some(Kind::Transactions(batch)) => self.admit_forwarded(&peer_name, batch).await?,
                None => return Err(errors::invalid_argument("stream message has no kind")),
            }
            accepted += 1;
        }
        Ok(Response::new(StreamResponse {
            messages_accepted: accepted,
        }))
    }
}

impl ConsensusApi {
    /// The caller's validator index in the set in force; an observer's,
    /// a removed validator's or a foreign node's certificate is refused.
    fn validator_of(&self, identity: &TlsIdentity) -> Result<u32, Status> {
        if identity.role != govchain_pki::Role::Node {
            return Err(errors::permission_denied(format!(
                "{identity} is not a node certificate"
            )));
        }
        self.shared
            .membership()
            .index_of_identity(&identity.to_uri())
            .ok_or_else(|| {
                errors::permission_denied(format!(
                    "{identity} is not a validator of chain {} (in the set in force at height {})",
                    self.shared.chain_id(),
                    self.shared.ledger.head().height + 1
                ))
            })
    }

    /// Transactions another validator admitted; checked again here
    /// (every node verifies every signature once), in the admission
    /// thread's next batch. The stream goes on to the next message without
    /// waiting for the verdicts: consensus messages behind a batch must not
    /// wait for its verification.
    async fn admit_forwarded(&self, peer: &str, batch: TransactionBatch) -> Result<(), Status> {
        let trace = crate::telemetry::trace_context::from_map(&batch.trace_context);
        self.admission.forward(peer, batch, trace).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_protocol_writes_them() {
        use std::time::Duration;
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "S", "5", "5s", "123456789S", "-1S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
