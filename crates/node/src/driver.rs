//! The consensus driver: one thread that owns the PBFT replica, feeds it
//! events, and carries out its actions against the mempool, the ledger and
//! the peers.
//!
//! **Invariant:** actions are carried out in the order the replica returns
//! them; a delivered block is durable in the ledger before the next event is
//! handled; a proposal is checked only on top of the block before it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use govchain_crypto::{Digest, PublicKey};
use govchain_exec::{
    CheckContext, ExecutedBlock, VerifiedTransaction, assemble_block, build_block, check_block,
    check_block_reusing, decode_proposal, encode_proposal, push_slice,
};
use govchain_pbft::{
    Action, CommitCertificate, Epoch, Event, Record, RejectReason, Replica, SequenceNumber, View,
};
use govchain_proto::consensus::v1::{StreamRequest, stream_request::Kind};
use govchain_proto::types::v1::{Block, BlockHeader, CommittedBlock};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::batches::Batch;
use crate::chain_state::HeadState;
use crate::clock::now_ms;
use crate::consensus_store;
use crate::requests::FetchRequest;
use crate::requests::SyncRequest;
use crate::shared::Shared;
use crate::telemetry::driver_metrics::DriverMetrics;
use crate::telemetry::trace_context;
use crate::wire;

/// Events waiting for the driver; producers wait when it is full.
pub const DRIVER_EVENTS_MAX: usize = 8_192;
/// How often the driver's clock ticks.
pub const TICK_INTERVAL: Duration = Duration::from_millis(10);
/// How far ahead of this node's clock a block's timestamp may be.
const TIMESTAMP_DRIFT_MS_MAX: u64 = 10_000;

pub enum DriverEvent {
    Consensus(Event),
    /// The mempool changed; the driver reads its size.
    MempoolChanged,
    /// Committed blocks fetched by state transfer, certificates checked;
    /// `ack` gets how many were applied.
    Synced {
        blocks: Vec<CommittedBlock>,
        ack: oneshot::Sender<u64>,
    },
    /// The fetcher got batches (or gave up on some): check again.
    BatchesArrived,
    /// Finish the current event and stop.
    Stop,
}

/// How far the consensus clock may move per tick. After the process was
/// stopped (SIGSTOP, a VM pause) the wall clock jumps; the consensus clock
/// does not, so timers do not all fire before the node has heard from its
/// peers.
const CLOCK_ADVANCE_PER_TICK_MS_MAX: u64 = 100;
/// How long a backup waits for a batch a proposal names to arrive on its
/// own (forwarded by another validator, on another stream than the
/// pre-prepare) before it asks the fetcher.
const BATCH_WAIT_MS: u64 = 20;
/// Fetches asked for one proposal at most; after that the proposal stays
/// unanswered and the view-change timer replaces its primary.
const BATCH_FETCHES_PER_PROPOSAL_MAX: u32 = 3;

/// A proposal whose batches are not all here yet.
struct Waiting {
    view: View,
    seq: SequenceNumber,
    since_ms: u64,
    fetches: u32,
    fetch_in_flight: bool,
}

/// A block this node built or checked, kept until it is delivered.
struct ReadyBlock {
    digest: Digest,
    block: Block,
    header: BlockHeader,
    executed: ExecutedBlock,
    signers: Vec<(PublicKey, u64)>,
    /// This node's span for the block, from proposal (or check) to its
    /// append; prepare and commit are events on it.
    span: tracing::Span,
}

pub struct Driver {
    shared: Arc<Shared>,
    /// `None` on a node that does not vote (an observer, a validator that
    /// governance removed).
    replica: Option<Replica>,
    /// This node's consensus key, to start a replica when governance makes
    /// it a validator.
    consensus_key: govchain_crypto::SigningKey,
    /// Proposals waiting for their parent block to be applied.
    deferred_checks: BTreeMap<SequenceNumber, (View, Digest, Bytes, bool)>,
    /// The next proposal to check, while it waits for batches.
    waiting: Option<Waiting>,
    /// Where missing batches are asked for; `None` on an observer.
    fetch: Option<mpsc::Sender<FetchRequest>>,
    ready: BTreeMap<SequenceNumber, ReadyBlock>,
    sync: mpsc::Sender<SyncRequest>,
    /// Records to make durable before the next action that is not a record.
    unwritten: Vec<Record>,
    /// Batch records ([`Driver::keep_batches`]) to write with the next
    /// records.
    unwritten_batches: Vec<([u8; govchain_ledger::CONSENSUS_KEY_BYTES], Vec<u8>)>,
    /// (last wall clock seen, consensus clock), in ms.
    clock: (u64, u64),
    metrics: DriverMetrics,
    /// The replica's view after the last event, to count view changes.
    last_view: Option<View>,
    /// When parked transactions were last swept ([`PARKED_SWEEP_INTERVAL`]).
    last_parked_sweep: std::time::Instant,
}

/// How often the mempool is swept for transactions parked too long: a sweep
/// reads every transaction older than `mempool.parked_ttl_ms`, so it runs
/// once a second rather than on every tick.
const PARKED_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl Driver {
    pub fn new(
        shared: Arc<Shared>,
        replica: Option<Replica>,
        consensus_key: govchain_crypto::SigningKey,
        sync: mpsc::Sender<SyncRequest>,
        fetch: Option<mpsc::Sender<FetchRequest>>,
        metrics: DriverMetrics,
    ) -> Self {
        let now = now_ms();
        let last_view = replica.as_ref().map(Replica::view);
        Self {
            metrics,
            last_view,
            shared,
            replica,
            consensus_key,
            deferred_checks: BTreeMap::new(),
            waiting: None,
            fetch,
            ready: BTreeMap::new(),
            sync,
            unwritten: Vec::new(),
            unwritten_batches: Vec::new(),
            clock: (now, now),
            last_parked_sweep: std::time::Instant::now(),
        }
    }

    /// The consensus clock: follows the wall clock, but moves at most
    /// [`CLOCK_ADVANCE_PER_TICK_MS_MAX`] per tick.
    fn consensus_now(&mut self, wall_ms: u64) -> u64 {
        let (last_wall, consensus) = self.clock;
        let advance = wall_ms
            .saturating_sub(last_wall)
            .min(CLOCK_ADVANCE_PER_TICK_MS_MAX);
        self.clock = (wall_ms.max(last_wall), consensus + advance);
        self.clock.1
    }

    /// Runs until [`DriverEvent::Stop`] or until every sender is gone.
    pub fn run(mut self, mut events: mpsc::Receiver<DriverEvent>) {
        match &self.replica {
            Some(replica) => {
                info!(node = %self.shared.name, view = replica.view(), seq = replica.last_delivered(), "consensus driver started")
            }
            None => info!(node = %self.shared.name, "observer: following the chain without voting"),
        }
        let start = self.consensus_now(now_ms());
        self.step(Event::Tick { now_ms: start });
        while let Some(event) = events.blocking_recv() {
            match event {
                DriverEvent::Consensus(Event::Tick { now_ms: wall }) => {
                    let now_ms = self.consensus_now(wall);
                    self.step(Event::Tick { now_ms });
                    self.recheck_waiting();
                    self.expire_parked();
                }
                DriverEvent::Consensus(event) => self.step(event),
                DriverEvent::Synced { blocks, ack } => {
                    let (applied, last, epoch) = self.apply_synced(blocks);
                    let _ = ack.send(applied);
                    if let Some(certificate) = last {
                        self.step(Event::StateTransferred { certificate, epoch });
                    }
                }
                DriverEvent::MempoolChanged => {
                    self.shared.mempool_changed.store(false, Ordering::Release);
                    let count = self.shared.mempool().ready_len();
                    self.step(Event::PendingTransactions { count });
                    // A forwarded batch may be what a proposal waits for.
                    self.recheck_waiting();
                }
                DriverEvent::BatchesArrived => {
                    if let Some(waiting) = &mut self.waiting {
                        waiting.fetch_in_flight = false;
                    }
                    self.recheck_waiting();
                }
                DriverEvent::Stop => break,
            }
        }
        info!(node = %self.shared.name, "consensus driver stopped");
    }

    fn step(&mut self, event: Event) {
        let mut queue = VecDeque::from([event]);
        while let Some(event) = queue.pop_front() {
            // An observer has no replica; it only applies fetched blocks.
            let Some(replica) = self.replica.as_mut() else {
                return;
            };
            for action in replica.step(event) {
                if let Action::Persist(record) = action {
                    self.unwritten.push(record);
                    continue;
                }
                self.write_records();
                if let Some(follow_up) = self.act(action) {
                    queue.extend(follow_up);
                }
            }
            self.write_records();
        }
        if let Some(replica) = &self.replica {
            let view = replica.view();
            if let Some(last) = self.last_view.replace(view) {
                self.metrics.views_changed(view.saturating_sub(last));
            }
            self.shared.view.store(view, Ordering::Relaxed);
            self.shared
                .view_normal
                .store(replica.is_normal(), Ordering::Relaxed);
        }
    }

    /// Makes pending consensus records durable, in one write.
    ///
    /// # Panics
    /// If the write fails: sending a vote that is not durable could make
    /// this validator contradict itself after a restart, so it stops.
    fn write_records(&mut self) {
        if self.unwritten.is_empty() {
            return;
        }
        // The batches go with the first vote written after they were
        // resolved, in the same durable write.
        let mut records: Vec<_> = self.unwritten_batches.drain(..).collect();
        records.extend(
            self.unwritten
                .drain(..)
                .map(|r| consensus_store::encode(&r)),
        );
        if let Err(err) = self.shared.ledger.consensus_write(&records) {
            // With its causes: "... while ...: No space left on device".
            let err = anyhow::Error::new(err);
            error!(node = %self.shared.name, error = format!("{err:#}"), "cannot persist consensus records");
            panic!("cannot persist consensus records: {err:#}");
        }
    }

    fn act(&mut self, action: Action) -> Option<Vec<Event>> {
        match action {
            Action::Broadcast(message) => {
                debug!(node = %self.shared.name, kind = kind(&message.body), "broadcast");
                self.mark_phase(&message.body);
                let request = StreamRequest {
                    kind: Some(Kind::Consensus(wire::message_to_wire(&message))),
                };
                self.shared.peers.broadcast(&request);
                None
            }
            // Block timestamps come from the wall clock, not the consensus clock.
            Action::BuildProposal { view, seq, .. } => Some(vec![self.build(view, seq, now_ms())]),
            Action::CheckProposal {
                view,
                seq,
                digest,
                block,
                reproposal,
            } => {
                self.deferred_checks
                    .insert(seq, (view, digest, block, reproposal));
                Some(self.run_ready_checks())
            }
            Action::StateTransfer { target, peers } => {
                debug!(node = %self.shared.name, target, "behind; asking for state transfer");
                // A full queue means a transfer is under way; pbft asks again.
                let _ = self.sync.try_send(SyncRequest { target, peers });
                None
            }
            Action::Persist(_) => unreachable!("records are collected in step"),
            Action::Deliver {
                seq,
                digest,
                certificate,
                ..
            } => {
                self.deliver(seq, digest, &certificate);
                let mut events = self.run_ready_checks();
                events.push(Event::PendingTransactions {
                    count: self.shared.mempool().ready_len(),
                });
                Some(events)
            }
            Action::Retired { seq } => {
                warn!(node = %self.shared.name, seq, "this validator left the validator set by governance; following the chain without voting");
                self.replica = None;
                self.shared.voting.store(false, Ordering::Relaxed);
                self.shared.peers.clear();
                None
            }
            Action::Rejected { sender, reason } => {
                let peer = self.shared.validator_name(sender);
                self.shared
                    .rejected_messages
                    .fetch_add(1, Ordering::Relaxed);
                self.metrics.message_refused(reason_name(&reason));
                // Messages of another view or beyond the window are routine
                // around view changes and catch-up; the rest are faults.
                match reason {
                    RejectReason::WrongView { .. } | RejectReason::OutOfWindow { .. } => {
                        debug!(node = %self.shared.name, peer, reason = %reason, "ignored consensus message");
                    }
                    _ => {
                        warn!(node = %self.shared.name, peer, reason = %reason, "rejected consensus message")
                    }
                }
                None
            }
        }
    }

    fn build(&mut self, view: View, seq: SequenceNumber, timestamp_ms: u64) -> Event {
        let head = self.shared.head();
        assert_eq!(
            head.height + 1,
            seq,
            "the primary builds on the applied head"
        );
        let span = block_span(&self.shared.name, view, seq, "propose");
        let me = self.replica.as_ref().map_or(self.shared.index, Replica::me);
        let (built, spent) = crate::telemetry::thread_cpu::measured(|| {
            let _scope = span.enter();
            let _execute = tracing::info_span!("execute").entered();
            let mempool = self.shared.mempool();
            HeadState::at(&self.shared.ledger, head.height, &head.hash).and_then(|state| {
                build_block(
                    self.shared.chain_id(),
                    &head,
                    view,
                    me,
                    timestamp_ms,
                    mempool.candidates(),
                    &self.shared.limits,
                    &state,
                )
            })
        });
        self.metrics.execution_cpu(spent);
        let built = match built {
            Ok(built) => built,
            Err(err) => {
                error!(node = %self.shared.name, seq, error = %err, "cannot build a block");
                return Event::ProposalSkipped { view, seq };
            }
        };
        let empty_allowed = self.shared.genesis.consensus.empty_block_interval_ms > 0;
        if built.header.transaction_count == 0 && !empty_allowed {
            return Event::ProposalSkipped { view, seq };
        }
        let block = Block::decode(built.encoded.clone()).expect("a block we just encoded decodes");
        let proposal = self.propose_by_reference(view, seq, &block, &built.executed);
        let signers = {
            let mempool = self.shared.mempool();
            built
                .executed
                .transactions
                .iter()
                .filter_map(|(id, _)| mempool.get(id).map(|t| (t.signer, t.nonce)))
                .collect()
        };
        debug!(node = %self.shared.name, view, seq, digest = %built.hash.short(), transactions = built.header.transaction_count, "built block");
        self.continue_transaction_traces(
            &span,
            built.executed.transactions.iter().map(|(id, _)| id),
        );
        self.ready.insert(
            seq,
            ReadyBlock {
                digest: built.hash,
                block,
                header: built.header,
                executed: built.executed,
                signers,
                span,
            },
        );
        Event::ProposalBuilt {
            view,
            seq,
            digest: built.hash,
            block: proposal,
        }
    }

    /// The proposal for a block this node built: its header and the
    /// batches its transactions are in. Transactions this node holds in no
    /// batch (evicted, say) are sealed into a new one first, which reaches
    /// each peer before the pre-prepare on the same stream.
    fn propose_by_reference(
        &mut self,
        view: View,
        seq: SequenceNumber,
        block: &Block,
        executed: &ExecutedBlock,
    ) -> Bytes {
        let ids: Vec<&Digest> = executed.transactions.iter().map(|(id, _)| id).collect();
        let unlocated: Vec<VerifiedTransaction> = {
            let store = self.shared.batches();
            let mempool = self.shared.mempool();
            ids.iter()
                .zip(&block.transactions)
                .filter(|(id, envelope)| store.locate(id, envelope).is_none())
                .map(|(id, _)| {
                    mempool
                        .get(id)
                        .cloned()
                        .expect("a built block's transactions are in the mempool")
                })
                .collect()
        };
        if !unlocated.is_empty() {
            debug!(node = %self.shared.name, transactions = unlocated.len(), "sealing transactions held in no batch");
            let trace = crate::telemetry::trace_context::map_of_first(
                &self.shared.traces,
                unlocated.iter().map(|t| &t.id),
            );
            self.shared.seal(&unlocated, trace);
        }
        let store = self.shared.batches();
        let mut slices = Vec::new();
        for (id, envelope) in ids.iter().zip(&block.transactions) {
            let (batch, index) = store
                .locate(id, envelope)
                .expect("every transaction was just located or sealed");
            push_slice(&mut slices, batch, index);
        }
        let proposal = encode_proposal(block.header.clone(), &slices);
        let named: Vec<Arc<Batch>> = decode_proposal(&proposal)
            .map(|p| p.batches())
            .unwrap_or_default()
            .iter()
            .filter_map(|digest| store.get(digest))
            .collect();
        drop(store);
        self.keep_batches(view, seq, &named);
        Bytes::from(proposal)
    }

    /// Makes the batches of `(view, seq)`'s proposal durable with the next
    /// consensus write: the pre-prepare (primary) or the prepare (backup)
    /// this proposal leads to, so a node that voted for it can resolve it
    /// after a restart, and serve its batches, even if every other holder
    /// restarted too and a new view re-proposes it by reference.
    fn keep_batches(&mut self, view: View, seq: SequenceNumber, batches: &[Arc<Batch>]) {
        let wire: Vec<_> = batches.iter().map(|b| b.to_wire()).collect();
        self.unwritten_batches
            .push(consensus_store::encode_batches(view, seq, &wire));
    }

    /// Drops the transactions that waited behind a nonce gap too long.
    fn expire_parked(&mut self) {
        let now = std::time::Instant::now();
        if now.saturating_duration_since(self.last_parked_sweep) < PARKED_SWEEP_INTERVAL {
            return;
        }
        self.last_parked_sweep = now;
        let expired = self.shared.mempool().expire_parked(now);
        if !expired.is_empty() {
            info!(node = %self.shared.name, transactions = expired.len(), first = %expired[0].short(), "dropped transactions that waited behind a nonce gap (mempool.parked_ttl_ms)");
            self.metrics.transactions_dropped(expired.len() as u64);
        }
    }

    /// Checks again the proposal waiting for batches, if any.
    fn recheck_waiting(&mut self) {
        if self.waiting.is_none() {
            return;
        }
        let events = self.run_ready_checks();
        for event in events {
            self.step(event);
        }
    }

    /// The block a proposal names, once every batch it names is here.
    /// `Ok(None)`: still waiting; the fetcher is asked after
    /// [`BATCH_WAIT_MS`], at most [`BATCH_FETCHES_PER_PROPOSAL_MAX`] times.
    fn resolve(
        &mut self,
        view: View,
        seq: SequenceNumber,
        encoded: &[u8],
    ) -> Result<Option<Block>, String> {
        let proposal = decode_proposal(encoded).map_err(|err| err.to_string())?;
        let batches: Vec<Arc<Batch>>;
        let missing: Vec<Digest> = {
            let store = self.shared.batches();
            let named = proposal.batches();
            batches = named.iter().filter_map(|d| store.get(d)).collect();
            named.into_iter().filter(|d| !store.contains(d)).collect()
        };
        if missing.is_empty() {
            self.waiting = None;
            self.keep_batches(view, seq, &batches);
            let (block, spent) = crate::telemetry::thread_cpu::measured(|| {
                assemble_block(&proposal, |digest| {
                    batches
                        .iter()
                        .find(|b| b.digest == *digest)
                        .map(|b| b.envelopes.as_slice())
                })
            });
            self.metrics.execution_cpu(spent);
            let block = block.map_err(|err| err.to_string())?;
            return Ok(Some(block));
        }
        let now = now_ms();
        let waiting = match &mut self.waiting {
            Some(waiting) if waiting.view == view && waiting.seq == seq => waiting,
            _ => self.waiting.insert(Waiting {
                view,
                seq,
                since_ms: now,
                fetches: 0,
                fetch_in_flight: false,
            }),
        };
        if now.saturating_sub(waiting.since_ms) >= BATCH_WAIT_MS
            && !waiting.fetch_in_flight
            && waiting.fetches < BATCH_FETCHES_PER_PROPOSAL_MAX
            && let Some(fetch) = &self.fetch
        {
            let primary = self.shared.membership().set.primary(view);
            let request = FetchRequest {
                digests: missing.clone(),
                first: primary,
            };
            if fetch.try_send(request).is_ok() {
                waiting.fetches += 1;
                waiting.fetch_in_flight = true;
                info!(node = %self.shared.name, view, seq, missing = missing.len(), attempt = waiting.fetches, "proposal names batches this node lacks; fetching them");
            }
        }
        Ok(None)
    }

    /// Checks every deferred proposal whose parent is now the head.
    fn run_ready_checks(&mut self) -> Vec<Event> {
        let head = self.shared.head();
        self.deferred_checks.retain(|seq, _| *seq > head.height);
        let Some((view, digest, encoded, reproposal)) =
            self.deferred_checks.remove(&(head.height + 1))
        else {
            self.waiting = None;
            return Vec::new();
        };
        let seq = head.height + 1;
        let encoded = match self.resolve(view, seq, &encoded) {
            Ok(Some(block)) => block.encode_to_vec(),
            Ok(None) => {
                // Not answered until the batches are here; a primary that
                // withholds them is replaced by the view-change timer.
                self.deferred_checks
                    .insert(seq, (view, digest, encoded, reproposal));
                return Vec::new();
            }
            Err(err) => {
                self.waiting = None;
                return vec![Event::ProposalChecked {
                    view,
                    seq,
                    digest,
                    verdict: Err(err),
                }];
            }
        };
        let context = CheckContext {
            chain_id: self.shared.chain_id(),
            head: &head,
            limits: &self.shared.limits,
            timestamp_ms_max: now_ms() + TIMESTAMP_DRIFT_MS_MAX,
        };
        let span = block_span(&self.shared.name, view, seq, "check");
        let execute = span.in_scope(|| tracing::info_span!("execute"));
        // The mempool is locked per lookup, not for the whole check, so
        // admission goes on meanwhile.
        let (checked, spent) = crate::telemetry::thread_cpu::measured(|| {
            execute.in_scope(|| {
                let state = HeadState::at(&self.shared.ledger, head.height, &head.hash)?;
                check_block_reusing(
                    &context,
                    &digest,
                    &encoded,
                    &state,
                    |envelope| self.shared.mempool().admitted(envelope),
                    |_, _| false,
                )
            })
        });
        self.metrics.execution_cpu(spent);
        drop(execute);
        let verdict = match checked {
            // A carried-over block keeps the view it was first proposed in.
            Ok(checked)
                if checked.header.view > view || (!reproposal && checked.header.view != view) =>
            {
                Err(format!(
                    "header view {} does not fit the pre-prepare's view {view}",
                    checked.header.view
                ))
            }
            Ok(checked) => {
                let signers = checked
                    .transactions
                    .iter()
                    .map(|t| (t.signer, t.nonce))
                    .collect();
                self.continue_transaction_traces(
                    &span,
                    checked.executed.transactions.iter().map(|(id, _)| id),
                );
                self.ready.insert(
                    seq,
                    ReadyBlock {
                        digest,
                        block: checked.block,
                        header: checked.header,
                        executed: checked.executed,
                        signers,
                        span,
                    },
                );
                Ok(())
            }
            Err(err) => Err(err.to_string()),
        };
        vec![Event::ProposalChecked {
            view,
            seq,
            digest,
            verdict,
        }]
    }

    /// Appends a committed block to the ledger, durably, then tells the
    /// mempool and subscribers.
    ///
    /// # Panics
    /// If the block was never built or checked here, or the ledger refuses
    /// it: either means this node's state diverged, and stopping beats
    /// serving a forked chain.
    fn deliver(&mut self, seq: SequenceNumber, digest: Digest, certificate: &CommitCertificate) {
        self.ready.retain(|s, _| *s >= seq);
        let ready = self
            .ready
            .remove(&seq)
            .expect("a delivered block was built or checked here");
        assert_eq!(
            ready.digest, digest,
            "delivered digest matches the checked block"
        );
        self.append(ready, wire::certificate_to_wire(certificate));
    }

    /// Appends a committed block to the ledger, durably, then tells the
    /// mempool and subscribers.
    ///
    /// # Panics
    /// If the ledger refuses it: this node's state diverged, and stopping
    /// beats serving a forked chain.
    fn append(
        &mut self,
        ready: ReadyBlock,
        certificate: govchain_proto::types::v1::CommitCertificate,
    ) {
        let seq = ready.header.height;
        let view = certificate.view;
        let appendable = crate::apply::Appendable::new(
            ready.digest,
            &ready.header,
            ready.block,
            certificate,
            &ready.executed,
            &self.shared.departments(),
        );
        let append = appendable.append_block(ready.digest, &ready.header, &ready.executed);
        let transactions = &appendable.transactions;
        let parent = self.shared.ledger.head();
        let _block = ready.span.enter();
        let (appended, spent) = crate::telemetry::thread_cpu::measured(|| {
            tracing::info_span!("ledger.append").in_scope(|| self.shared.ledger.append(&append))
        });
        self.metrics.ledger_append_cpu(spent);
        if let Err(err) = appended {
            // With its causes: "... while ...: No space left on device".
            let err = anyhow::Error::new(err);
            error!(node = %self.shared.name, seq, error = format!("{err:#}"), "ledger refused a committed block");
            panic!("ledger refused committed block {seq}: {err:#}");
        }
        self.metrics.block_appended(
            transactions.len() as u64,
            (parent.height > 0).then(|| {
                ready
                    .header
                    .timestamp_ms
                    .saturating_sub(parent.timestamp_ms)
            }),
            ready.header.timestamp_ms,
            now_ms(),
        );
        self.shared.mempool().remove_committed(&ready.signers);
        self.shared
            .traces
            .forget(transactions.iter().map(|(id, _)| id));
        info!(node = %self.shared.name, view, seq, digest = %ready.digest.short(), transactions = transactions.len(), "committed block");
        let _notify = tracing::info_span!(
            "notify subscribers",
            subscribers = self.shared.blocks.receiver_count()
        )
        .entered();
        if !ready.header.next_validators.is_empty() {
            self.validator_set_changed(seq);
        }
        if ready
            .executed
            .writes
            .contains_key(govchain_exec::governance::REVOKED_KEY)
        {
            self.revocations_changed(seq);
        }
        if ready
            .executed
            .writes
            .contains_key(govchain_exec::governance::DEPARTMENTS_KEY)
        {
            self.departments_changed(seq);
        }
        // No subscriber is not an error.
        let _ = self.shared.blocks.send(Arc::new(appendable.committed));
    }

    /// Block `seq` revoked a certificate: from now on every call and every
    /// connection made with it is refused (see `chain_state::Revocations`).
    ///
    /// # Panics
    /// If the list can not be read back from the state just written.
    fn revocations_changed(&mut self, seq: SequenceNumber) {
        if let Err(err) = self.shared.revocations.refresh(&self.shared.ledger) {
            error!(node = %self.shared.name, seq, error = format!("{err:#}"), "cannot read the revocation list");
            panic!("cannot read the revocation list after block {seq}: {err:#}");
        }
        let list = self.shared.revocations.list();
        info!(node = %self.shared.name, seq, revoked = list.revocations.len(), "certificate revoked by governance; refusing it from now on");
    }

    /// Block `seq` changed a department (its signing key, what it may
    /// attest, its node key) or registered one: from `seq + 1` admission,
    /// the services and the TLS check read the new ones.
    ///
    /// # Panics
    /// If they can not be read back from the state just written.
    fn departments_changed(&mut self, seq: SequenceNumber) {
        if let Err(err) = self
            .shared
            .departments_in_force
            .refresh(&self.shared.ledger)
        {
            error!(node = %self.shared.name, seq, error = format!("{err:#}"), "cannot read the departments");
            panic!("cannot read the departments after block {seq}: {err:#}");
        }
        let names: Vec<String> = self
            .shared
            .departments()
            .iter()
            .map(|d| d.name.clone())
            .collect();
        info!(node = %self.shared.name, from = seq + 1, departments = %names.join(","), "departments changed by governance");
    }

    /// Block `seq` put a new validator set in force from `seq + 1`: the
    /// services, peers and sync read it from `Shared` from now on. (The
    /// replica switched by itself, reading the same header.)
    ///
    /// # Panics
    /// If the set can not be read back from the state just written: the
    /// ledger is unusable.
    fn validator_set_changed(&mut self, seq: SequenceNumber) {
        let membership = match self.shared.refresh_membership() {
            Ok(membership) => membership,
            Err(err) => {
                error!(node = %self.shared.name, seq, error = format!("{err:#}"), "cannot read the new validator set");
                panic!("cannot read the validator set after block {seq}: {err:#}");
            }
        };
        let members: Vec<String> = membership
            .record
            .members
            .iter()
            .map(|m| format!("{}={}", m.index, m.department))
            .collect();
        info!(node = %self.shared.name, from = seq + 1, validators = %members.join(","), quorum = membership.set.quorum(), "validator set changed");
        if self.replica.is_none()
            && membership
                .set
                .index_of(&self.consensus_key.public_key())
                .is_some()
        {
            match crate::start_replica(&self.shared, &self.consensus_key) {
                Ok(Some(replica)) => {
                    info!(node = %self.shared.name, index = replica.me(), from = seq + 1, "this node joined the validator set: it votes from here on");
                    self.last_view = Some(replica.view());
                    self.replica = Some(replica);
                    self.shared.voting.store(true, Ordering::Relaxed);
                }
                Ok(None) => {}
                Err(err) => {
                    error!(node = %self.shared.name, error = format!("{err:#}"), "cannot start voting after joining the validator set");
                }
            }
        }
        // A node that votes talks to the set's other members; one that
        // does not (or no longer) talks to nobody.
        if self.replica.is_some() {
            self.shared.peers.update(&membership.record);
        }
    }

    /// Records the PBFT phase this replica reached for a block as an event
    /// on the block's span.
    fn mark_phase(&self, body: &govchain_pbft::Body) {
        let (seq, phase) = match body {
            govchain_pbft::Body::PrePrepare { seq, .. } => (*seq, "pre-prepare"),
            govchain_pbft::Body::Prepare { seq, .. } => (*seq, "prepare"),
            govchain_pbft::Body::Commit { seq, .. } => (*seq, "commit"),
            _ => return,
        };
        if let Some(ready) = self.ready.get(&seq) {
            ready.span.in_scope(|| info!(phase, "pbft phase"));
        }
    }

    /// Makes a block's span continue its first traced transaction's trace
    /// and link to the others'.
    fn continue_transaction_traces<'a>(
        &self,
        span: &tracing::Span,
        ids: impl Iterator<Item = &'a Digest>,
    ) {
        let traced = self.shared.traces.spans_of(ids);
        trace_context::continue_traces(span, &traced);
    }

    /// Applies blocks fetched by state transfer. The sync task checked
    /// each one's certificate and every transaction signature
    /// (`sync::check_fetched`), so signatures are not verified again here.
    /// Execution still runs and must reproduce the header's state root; a
    /// block that does not is logged and not applied, and neither is any
    /// after it. Returns how many were applied.
    fn apply_synced(
        &mut self,
        blocks: Vec<CommittedBlock>,
    ) -> (u64, Option<CommitCertificate>, Option<Epoch>) {
        let mut applied = 0;
        let mut last = None;
        let mut epoch = None;
        for committed in blocks {
            let head = self.shared.head();
            let (Some(block), Some(certificate)) = (committed.block, committed.certificate) else {
                break;
            };
            // The syncer checked the block against its certificate and its
            // transactions' signatures (`sync::check_fetched`); the hash is
            // recomputed here too rather than taken from the message.
            let digest = govchain_exec::block_hash(&block.header);
            let Ok(header) = govchain_exec::decode_header(&block) else {
                break;
            };
            if header.height <= head.height {
                // Already applied by consensus meanwhile: counted as
                // applied, so that the peer that sent it is not blamed.
                applied += 1;
                continue;
            }
            if header.height != head.height + 1 {
                break;
            }
            let context = CheckContext {
                chain_id: self.shared.chain_id(),
                head: &head,
                limits: &self.shared.limits,
                timestamp_ms_max: u64::MAX,
            };
            let encoded = block.encode_to_vec();
            let (checked, spent) = crate::telemetry::thread_cpu::measured(|| {
                let state = HeadState::at(&self.shared.ledger, head.height, &head.hash)?;
                check_block(&context, &digest, &encoded, &state, |_, _| true)
            });
            self.metrics.execution_cpu(spent);
            let checked = match checked {
                Ok(checked) => checked,
                Err(err) => {
                    // The block is certified and its content checked, so
                    // only a divergence of this node's state from a
                    // quorum's makes it fail here. Nothing is applied; the
                    // syncer reports the batch as not applied and the node
                    // stays behind rather than diverge.
                    error!(node = %self.shared.name, seq = header.height, error = %err, "certified block does not execute against local state; not applied");
                    break;
                }
            };
            let Ok(pbft_certificate) = wire::certificate_from_wire(&certificate) else {
                break;
            };
            let signers = checked
                .transactions
                .iter()
                .map(|t| (t.signer, t.nonce))
                .collect();
            let ready = ReadyBlock {
                digest,
                block: checked.block,
                header: checked.header,
                executed: checked.executed,
                signers,
                span: tracing::Span::none(),
            };
            self.ready.remove(&header.height);
            let announces = !ready.header.next_validators.is_empty();
            self.append(ready, certificate);
            if announces {
                let membership = self.shared.membership();
                epoch = Some(Epoch {
                    start: membership.record.since_height,
                    validators: membership.set.clone(),
                });
            }
            applied += 1;
            last = Some(pbft_certificate);
        }
        (applied, last, epoch)
    }
}

/// The span of one block on this node: `role` is "propose" on the
/// primary, "check" on a backup.
fn block_span(node: &str, view: View, seq: SequenceNumber, role: &'static str) -> tracing::Span {
    tracing::info_span!(
        "block",
        otel.name = format!("block {role}"),
        node,
        view,
        seq
    )
}

/// A refusal's kind in snake case, from its variant name ("WrongView" →
/// "wrong_view"): a fixed, small set, fit for a metric label.
fn reason_name(reason: &RejectReason) -> String {
    let debug = format!("{reason:?}");
    let variant = debug
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or("other");
    let mut name = String::new();
    for (i, c) in variant.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                name.push('_');
            }
            name.push(c.to_ascii_lowercase());
        } else {
            name.push(c);
        }
    }
    name
}

fn kind(body: &govchain_pbft::Body) -> &'static str {
    match body {
        govchain_pbft::Body::PrePrepare { .. } => "pre-prepare",
        govchain_pbft::Body::Prepare { .. } => "prepare",
        govchain_pbft::Body::Commit { .. } => "commit",
        govchain_pbft::Body::Checkpoint { .. } => "checkpoint",
        govchain_pbft::Body::ViewChange(_) => "view-change",
        govchain_pbft::Body::NewView(_) => "new-view",
    }
}
