//! The replica state machine: PBFT's normal case, view change, and the
//! catch-up trigger.
//!
//! Section numbers in comments refer to Castro and Liskov, "Practical
//! Byzantine Fault Tolerance", OSDI 1999, section 4. One difference from the
//! paper shapes the view change: a replica prepares block `n + 1` only after
//! it delivered block `n`, so at most one sequence number is in flight, and
//! every delivered block carries a commit certificate that anyone can check.
//! A view-change message therefore reports the replica's last commit
//! certificate (instead of a checkpoint proof) and at most one prepared
//! certificate, for the next sequence number.

mod normal;
mod view_change;

pub use view_change::{Decision, decide};

use std::collections::BTreeMap;

use bytes::Bytes;
use govchain_crypto::{Digest, Signature, SigningKey};

use crate::message::{Body, CommitCertificate, PreparedCertificate, SignedMessage};
use crate::{ReplicaIndex, SequenceNumber, ValidatorSet, View};

/// How far past the last delivered sequence number a replica accepts
/// messages (PBFT's high water mark, §4.3; the low water mark is the last
/// delivered block, whose commit certificate is its checkpoint). Bounds the
/// log: at most this many slots, each with at most one vote of each kind
/// per validator.
pub const LOG_WINDOW_SEQS: u64 = 64;
/// View changes are accepted at most this many views ahead.
pub const VIEW_AHEAD_MAX: u64 = 64;
/// The view-change timeout doubles per failed attempt, at most this often.
const TIMEOUT_DOUBLINGS_MAX: u32 = 6;

/// Everything a replica needs to know. Only `validators` and `epoch_start`
/// change, when a delivered block changes the validator set.
pub struct Config {
    pub chain_id: String,
    /// The validators in force for `last_delivered + 1`.
    pub validators: ValidatorSet,
    /// The first sequence number `validators` orders: 1 for the genesis
    /// set, `h + 1` for a set that block `h` put in force.
    pub epoch_start: SequenceNumber,
    /// This replica's index in `validators`.
    pub me: ReplicaIndex,
    /// This replica's consensus key; its public key must be `validators[me]`.
    pub key: SigningKey,
    /// When idle, the primary proposes an empty block after this long; 0
    /// means never (blocks only when there are transactions).
    pub empty_block_interval_ms: u64,
    /// How long a replica waits for progress before it moves to the next
    /// view; doubled for each view change that does not complete.
    pub view_timeout_ms: u64,
    /// The digest a block's bytes commit to, or `None` if they are
    /// malformed. Lets the replica bind block bytes to digests it did not
    /// compute (in pre-prepares and nested certificates).
    pub block_digest: fn(&[u8]) -> Option<Digest>,
    /// The validator set a delivered block puts in force from the next
    /// sequence number, or `None` if it keeps the set. Read from the block's
    /// own (certified) bytes, so every replica switches at the same height.
    pub block_validators: fn(&[u8]) -> Option<ValidatorSet>,
}

/// A validator set and the first sequence number it orders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Epoch {
    pub start: SequenceNumber,
    pub validators: ValidatorSet,
}

/// What a replica must write durably before the actions after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// The view the replica is in, and whether it works in it (`normal`) or
    /// waits for the view's new-view message.
    View { view: View, normal: bool },
    /// A pre-prepare this replica accepted, or sent as primary.
    /// `reproposal` marks one carried over by a new-view message.
    Accepted {
        message: SignedMessage,
        reproposal: bool,
    },
    /// A prepare or commit this replica sent.
    Vote(SignedMessage),
    /// A prepared certificate this replica holds.
    Prepared(PreparedCertificate),
}

/// Durable records read back after a restart (see [`Record`]).
#[derive(Clone, Debug, Default)]
pub struct Restored {
    pub view: View,
    pub normal: bool,
    pub accepted: Vec<(SignedMessage, bool)>,
    pub votes: Vec<SignedMessage>,
    pub prepared: Vec<PreparedCertificate>,
}

/// An input to [`Replica::step`].
#[derive(Clone, Debug)]
pub enum Event {
    /// Time passed; `now_ms` is the driver's clock and never goes back.
    Tick { now_ms: u64 },
    /// A message from a peer. Its signature is checked here; the transport
    /// must also have checked that the peer is `message.sender`.
    Message(SignedMessage),
    /// How many transactions the node could put in a block now.
    PendingTransactions { count: u64 },
    /// The node's answer to [`Action::BuildProposal`].
    ProposalBuilt {
        view: View,
        seq: SequenceNumber,
        digest: Digest,
        block: Bytes,
    },
    /// The node had nothing to put in the block asked for.
    ProposalSkipped { view: View, seq: SequenceNumber },
    /// The node's answer to [`Action::CheckProposal`].
    ProposalChecked {
        view: View,
        seq: SequenceNumber,
        digest: Digest,
        verdict: Result<(), String>,
    },
    /// The node applied committed blocks fetched from peers, up to the one
    /// `certificate` commits (it checked the certificate). `epoch` is the
    /// validator set in force after them if one of them changed it.
    StateTransferred {
        certificate: CommitCertificate,
        epoch: Option<Epoch>,
    },
}

/// An output of [`Replica::step`], for the driver to carry out in order.
#[derive(Clone, Debug)]
pub enum Action {
    /// Send to every other validator.
    Broadcast(SignedMessage),
    /// Make the record durable before carrying out any later action.
    Persist(Record),
    /// Build a block at height `seq` on top of the delivered chain, from the
    /// mempool, and answer with [`Event::ProposalBuilt`] or
    /// [`Event::ProposalSkipped`].
    BuildProposal {
        view: View,
        seq: SequenceNumber,
        timestamp_ms: u64,
    },
    /// Check a proposed block once `seq - 1` is delivered and applied, and
    /// answer with [`Event::ProposalChecked`]. A `reproposal` is a block
    /// from an earlier view, carried over by a new-view message.
    CheckProposal {
        view: View,
        seq: SequenceNumber,
        digest: Digest,
        block: Bytes,
        reproposal: bool,
    },
    /// `block` is committed at height `seq`. Delivered in order, once each.
    Deliver {
        seq: SequenceNumber,
        digest: Digest,
        block: Bytes,
        certificate: CommitCertificate,
    },
    /// This replica is behind: at least one correct peer among `peers` has
    /// delivered `target`. Fetch the committed blocks up to it, check their
    /// certificates, apply them, and answer with [`Event::StateTransferred`].
    StateTransfer {
        target: SequenceNumber,
        peers: Vec<ReplicaIndex>,
    },
    /// The set in force from `seq` does not hold this replica: it stops
    /// here (it ignores every later event) and the node follows the chain
    /// as an observer.
    Retired { seq: SequenceNumber },
    /// A peer's message was refused; for logs and metrics.
    Rejected {
        sender: ReplicaIndex,
        reason: RejectReason,
    },
}

/// Why a message was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RejectReason {
    #[error("sender {sender} is not a validator")]
    UnknownSender { sender: ReplicaIndex },
    #[error("message claims to come from this replica")]
    OwnIdentity,
    #[error("signature does not verify")]
    BadSignature,
    #[error("view {got} is not the current view {current}")]
    WrongView { got: View, current: View },
    #[error("pre-prepare from {sender}, but the primary of view {view} is {primary}")]
    NotPrimary {
        sender: ReplicaIndex,
        view: View,
        primary: ReplicaIndex,
    },
    #[error("the primary does not send prepares")]
    PrepareFromPrimary,
    #[error("sequence number {seq} is outside the window {low}..={high}")]
    OutOfWindow {
        seq: SequenceNumber,
        low: SequenceNumber,
        high: SequenceNumber,
    },
    #[error("conflicting {kind} for sequence number {seq}: {first} then {second}")]
    Equivocation {
        kind: &'static str,
        seq: SequenceNumber,
        first: Digest,
        second: Digest,
    },
    #[error("block bytes do not match digest {digest}")]
    BlockMismatch { digest: Digest },
    #[error("invalid proposal for sequence number {seq}: {reason}")]
    InvalidProposal { seq: SequenceNumber, reason: String },
    #[error("invalid view change: {reason}")]
    InvalidViewChange { reason: String },
    #[error("invalid new view: {reason}")]
    InvalidNewView { reason: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    Pending,
    Valid,
    Invalid,
}

#[derive(Debug)]
struct Proposal {
    digest: Digest,
    block: Bytes,
    pre_prepare: SignedMessage,
    check: Check,
    reproposal: bool,
}

/// What a replica knows about one sequence number in the current view.
#[derive(Debug, Default)]
struct Slot {
    proposal: Option<Proposal>,
    /// The digest this replica already voted for (after a restart, before
    /// the pre-prepare arrives again); any other is refused.
    promised: Option<Digest>,
    /// One prepare per backup; a second, different one is equivocation.
    prepares: BTreeMap<ReplicaIndex, SignedMessage>,
    commits: BTreeMap<ReplicaIndex, (Digest, Signature)>,
    sent_prepare: Option<SignedMessage>,
    sent_commit: Option<SignedMessage>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    /// Working in `view`.
    Normal,
    /// Waiting for the new-view message of `view` until `deadline_ms`.
    ViewChanging { deadline_ms: u64, attempt: u32 },
}

pub struct Replica {
    config: Config,
    /// The view this replica is in or moving to; never decreases.
    view: View,
    status: Status,
    /// Pre-prepares in this view must be above this sequence number (the
    /// highest committed one its new-view message proved).
    view_floor: SequenceNumber,
    last_delivered: SequenceNumber,
    /// Certificate of the last delivered block; `None` at genesis.
    last_certificate: Option<CommitCertificate>,
    log: BTreeMap<SequenceNumber, Slot>,
    /// The highest-view prepared certificate held per sequence number above
    /// `last_delivered`; survives view changes (and, persisted, restarts).
    prepared: BTreeMap<SequenceNumber, PreparedCertificate>,
    /// The latest view change of each validator (one each bounds memory).
    view_changes: BTreeMap<ReplicaIndex, SignedMessage>,
    /// The new-view message of the current view, for retransmission.
    new_view_message: Option<SignedMessage>,
    /// Per peer, the highest sequence number its messages prove it has
    /// delivered; the (f+1)-th highest was reached by a correct replica.
    claims: BTreeMap<ReplicaIndex, SequenceNumber>,
    now_ms: u64,
    last_delivery_ms: u64,
    progress_deadline_ms: Option<u64>,
    last_retransmit_ms: u64,
    last_heartbeat_ms: u64,
    last_transfer: Option<(SequenceNumber, u64)>,
    pending_transactions: u64,
    /// The sequence number the primary asked the node to build, if any.
    building: Option<SequenceNumber>,
    /// Restored state still to announce (checks to request, a view change
    /// to resend), done on the first event.
    resume: bool,
    /// Left the validator set: every later event is ignored.
    retired: bool,
    out: Vec<Action>,
}

impl Replica {
    /// A replica whose chain is delivered up to `last_delivered`, committed
    /// by `last_certificate` (`None` at genesis), with `restored` records.
    ///
    /// # Panics
    /// If `config.me` is not a validator or its key is not `config.key`, or
    /// the certificate is not for `last_delivered`.
    pub fn new(
        config: Config,
        last_delivered: SequenceNumber,
        last_certificate: Option<CommitCertificate>,
        restored: Restored,
    ) -> Self {
        let expected = config.validators.key(config.me).copied();
        assert!(
            expected.is_some(),
            "replica index {} is not a validator",
            config.me
        );
        assert!(
            expected == Some(config.key.public_key()),
            "consensus key does not match genesis"
        );
        assert!(last_certificate.as_ref().map_or(0, |c| c.seq) == last_delivered);
        let status = if restored.normal || restored.view == 0 {
            Status::Normal
        } else {
            Status::ViewChanging {
                deadline_ms: 0,
                attempt: 0,
            }
        };
        let mut replica = Self {
            config,
            view: restored.view,
            status,
            view_floor: last_delivered,
            last_delivered,
            last_certificate,
            log: BTreeMap::new(),
            prepared: BTreeMap::new(),
            view_changes: BTreeMap::new(),
            new_view_message: None,
            claims: BTreeMap::new(),
            now_ms: 0,
            last_delivery_ms: 0,
            progress_deadline_ms: None,
            last_retransmit_ms: 0,
            last_heartbeat_ms: 0,
            last_transfer: None,
            pending_transactions: 0,
            building: None,
            resume: true,
            retired: false,
            out: Vec::new(),
        };
        replica.restore(restored);
        replica
    }

    fn restore(&mut self, restored: Restored) {
        for certificate in restored.prepared {
            self.keep_prepared(certificate);
        }
        // The floor a new-view message set is not persisted, so a replica
        // restarted behind it would take a fresh proposal for a height that
        // is already committed (with every other replica that restarted).
        // A prepared certificate from an earlier view marks such a height:
        // every correct replica that committed a block there either delivered
        // it or holds one, so refusing fresh proposals up to it leaves no
        // quorum for another block. Refusing more is always safe; a floor too
        // high only costs a view change, whose new-view message sets it anew.
        let prepared_earlier = self
            .prepared
            .values()
            .filter_map(|c| c.proposal())
            .filter(|(view, ..)| *view < self.view);
        if let Some(seq) = prepared_earlier.map(|(_, seq, ..)| seq).max() {
            self.view_floor = self.view_floor.max(seq);
        }
        for (message, reproposal) in restored.accepted {
            let Body::PrePrepare {
                view,
                seq,
                digest,
                block,
            } = &message.body
            else {
                continue;
            };
            if *view != self.view || *seq <= self.last_delivered {
                continue;
            }
            let slot = self.log.entry(*seq).or_default();
            slot.proposal = Some(Proposal {
                digest: *digest,
                block: block.clone(),
                pre_prepare: message.clone(),
                check: Check::Pending,
                reproposal,
            });
            if reproposal {
                self.view_floor = self.view_floor.max(seq - 1);
            }
        }
        for vote in restored.votes {
            let me = self.config.me;
            match &vote.body {
                Body::Prepare { view, seq, digest }
                    if *view == self.view && *seq > self.last_delivered =>
                {
                    let slot = self.log.entry(*seq).or_default();
                    slot.promised = Some(*digest);
                    slot.prepares.insert(me, vote.clone());
                    slot.sent_prepare = Some(vote.clone());
                }
                Body::Commit { view, seq, digest }
                    if *view == self.view && *seq > self.last_delivered =>
                {
                    let slot = self.log.entry(*seq).or_default();
                    slot.promised = Some(*digest);
                    slot.commits.insert(me, (*digest, vote.signature));
                    slot.sent_commit = Some(vote.clone());
                }
                _ => {}
            }
        }
    }

    pub fn view(&self) -> View {
        self.view
    }

    /// Whether the replica works in its view (false while a view change is
    /// in progress).
    pub fn is_normal(&self) -> bool {
        self.status == Status::Normal
    }

    pub fn primary(&self) -> ReplicaIndex {
        self.config.validators.primary(self.view)
    }

    pub fn is_primary(&self) -> bool {
        self.primary() == self.config.me
    }

    pub fn last_delivered(&self) -> SequenceNumber {
        self.last_delivered
    }

    pub fn me(&self) -> ReplicaIndex {
        self.config.me
    }

    pub fn validators(&self) -> &ValidatorSet {
        &self.config.validators
    }

    /// Number of sequence numbers with state in the log (bounded by
    /// [`LOG_WINDOW_SEQS`]).
    pub fn log_len(&self) -> usize {
        self.log.len()
    }

    /// The first sequence number the current validator set orders.
    pub fn epoch_start(&self) -> SequenceNumber {
        self.config.epoch_start
    }

    /// Whether the replica left the validator set (see [`Action::Retired`]).
    pub fn is_retired(&self) -> bool {
        self.retired
    }

    /// Feeds one event in and returns what to do, in order.
    pub fn step(&mut self, event: Event) -> Vec<Action> {
        if self.retired {
            return Vec::new();
        }
        if let Event::Tick { now_ms } = event {
            self.now_ms = self.now_ms.max(now_ms);
        }
        if self.resume {
            self.resume = false;
            self.on_resume();
        }
        match event {
            Event::Tick { .. } => self.on_tick(),
            Event::Message(message) => self.on_message(message),
            Event::PendingTransactions { count } => {
                self.pending_transactions = count;
                self.arm_progress_timer(false);
                self.maybe_propose();
            }
            Event::ProposalBuilt {
                view,
                seq,
                digest,
                block,
            } => {
                self.on_proposal_built(view, seq, digest, block);
            }
            Event::ProposalSkipped { view, seq } => {
                if view == self.view && self.building == Some(seq) {
                    self.building = None;
                    self.pending_transactions = 0;
                    self.arm_progress_timer(false);
                }
            }
            Event::ProposalChecked {
                view,
                seq,
                digest,
                verdict,
            } => {
                self.on_proposal_checked(view, seq, digest, verdict);
            }
            Event::StateTransferred { certificate, epoch } => {
                self.on_state_transferred(certificate, epoch);
            }
        }
        std::mem::take(&mut self.out)
    }

    /// After a restart: ask the node to check restored proposals again, and
    /// resend the view change a replica was in the middle of.
    fn on_resume(&mut self) {
        if let Status::ViewChanging { .. } = self.status {
            self.status = Status::ViewChanging {
                deadline_ms: self.now_ms + self.timeout_ms(0),
                attempt: 0,
            };
            self.send_view_change();
            return;
        }
        let view = self.view;
        let mut checks = Vec::new();
        for (seq, slot) in &self.log {
            if let Some(proposal) = &slot.proposal {
                checks.push(Action::CheckProposal {
                    view,
                    seq: *seq,
                    digest: proposal.digest,
                    block: proposal.block.clone(),
                    reproposal: proposal.reproposal,
                });
            }
        }
        self.out.extend(checks);
        self.arm_progress_timer(false);
    }

    fn on_tick(&mut self) {
        match self.status {
            Status::Normal => {
                if self
                    .progress_deadline_ms
                    .is_some_and(|deadline| self.now_ms >= deadline)
                {
                    if self.proven_ahead().is_some() {
                        // f + 1 validators (so a correct one) delivered
                        // blocks this replica has yet to fetch: the system
                        // makes progress, and a view change by this replica
                        // alone would leave it in a view nobody joins. It
                        // catches up (`check_behind`) and judges again.
                        //
                        // The deferral has no cap, and needs none: the
                        // target is the (f + 1)-th highest proven claim, so
                        // a correct validator holds those blocks and is among
                        // the transfer's peers; once the network is
                        // synchronous again the transfer lands, the target
                        // is reached, and the next expiry starts the view
                        // change. A cap would bring back the lone view change
                        // that this deferral prevents.
                        self.progress_deadline_ms = Some(self.now_ms + self.timeout_ms(0));
                    } else {
                        // §4.4: the primary made no progress in time.
                        return self.start_view_change(self.view + 1);
                    }
                }
            }
            Status::ViewChanging {
                deadline_ms,
                attempt,
            } => {
                if !self.quorum_changing_views() {
                    // §4.5.2: the timer runs only once a quorum asks for this
                    // view (or a later one). Alone or ahead, a replica waits
                    // for the others instead of running off to views that
                    // none of them will join.
                    let deadline_ms = deadline_ms.max(self.now_ms + self.timeout_ms(attempt));
                    self.status = Status::ViewChanging {
                        deadline_ms,
                        attempt,
                    };
                } else if self.now_ms >= deadline_ms {
                    // §4.4: no new-view in time; try the next view, waiting longer.
                    return self.start_view_change(self.view + 1);
                }
            }
        }
        if self.now_ms.saturating_sub(self.last_retransmit_ms) >= self.retransmit_interval_ms() {
            self.last_retransmit_ms = self.now_ms;
            self.retransmit();
        }
        if self.now_ms.saturating_sub(self.last_heartbeat_ms) >= self.heartbeat_interval_ms() {
            self.last_heartbeat_ms = self.now_ms;
            self.send_checkpoint();
        }
        self.check_behind();
        self.maybe_propose();
    }

    /// Lost messages are sent again (identical: Ed25519 signatures are
    /// deterministic), so that one dropped packet does not cost a view.
    fn retransmit(&mut self) {
        if let Status::ViewChanging { .. } = self.status {
            if let Some(message) = self.view_changes.get(&self.config.me).cloned() {
                self.out.push(Action::Broadcast(message));
            }
            return;
        }
        if let Some(new_view) = self.new_view_message.clone() {
            self.out.push(Action::Broadcast(new_view));
        }
        let mut messages = Vec::new();
        for slot in self.log.values() {
            if let Some(proposal) = &slot.proposal
                && proposal.pre_prepare.sender == self.config.me
            {
                messages.push(proposal.pre_prepare.clone());
            }
            messages.extend(slot.sent_prepare.iter().cloned());
            messages.extend(slot.sent_commit.iter().cloned());
        }
        self.out.extend(messages.into_iter().map(Action::Broadcast));
    }

    /// A signed "I have delivered this block": lets lagging replicas notice
    /// they are behind even when the chain is idle.
    fn send_checkpoint(&mut self) {
        let Some(certificate) = &self.last_certificate else {
            return;
        };
        let body = Body::Checkpoint {
            seq: certificate.seq,
            digest: certificate.digest,
        };
        self.broadcast(body);
    }

    fn on_message(&mut self, message: SignedMessage) {
        let sender = message.sender;
        if self.config.validators.key(sender).is_none() {
            return self.reject(sender, RejectReason::UnknownSender { sender });
        }
        if sender == self.config.me {
            return self.reject(sender, RejectReason::OwnIdentity);
        }
        if !message.verify(&self.config.chain_id, &self.config.validators) {
            return self.reject(sender, RejectReason::BadSignature);
        }
        self.note_claim(sender, &message.body);
        match &message.body {
            Body::PrePrepare {
                view,
                seq,
                digest,
                block,
            } => {
                let (view, seq, digest, block) = (*view, *seq, *digest, block.clone());
                self.on_pre_prepare(message, view, seq, digest, block);
            }
            Body::Prepare { view, seq, digest } => {
                let (view, seq, digest) = (*view, *seq, *digest);
                self.on_prepare(message, view, seq, digest);
            }
            Body::Commit { view, seq, digest } => {
                let (view, seq, digest) = (*view, *seq, *digest);
                self.on_commit(sender, view, seq, digest, message.signature);
            }
            Body::Checkpoint { .. } => self.check_behind(),
            Body::ViewChange(_) => self.on_view_change(message),
            Body::NewView(_) => self.on_new_view(message),
        }
    }

    /// Records what `body` proves its (correct) sender has delivered.
    fn note_claim(&mut self, sender: ReplicaIndex, body: &Body) {
        let proven = match body {
            // A correct replica votes on n only after delivering n - 1.
            Body::PrePrepare { seq, .. } | Body::Prepare { seq, .. } | Body::Commit { seq, .. } => {
                seq.saturating_sub(1)
            }
            Body::Checkpoint { seq, .. } => *seq,
            Body::ViewChange(change) => change.committed_seq,
            Body::NewView(_) => return,
        };
        let claim = self.claims.entry(sender).or_insert(0);
        *claim = (*claim).max(proven);
    }

    /// Asks for a state transfer when f + 1 peers (so at least one correct
    /// one) have delivered blocks this replica has not: at once when two or
    /// more behind, after a heartbeat interval without progress when one.
    fn check_behind(&mut self) {
        let Some(target) = self.proven_ahead() else {
            return;
        };
        let stuck =
            self.now_ms.saturating_sub(self.last_delivery_ms) >= self.heartbeat_interval_ms();
        if target < self.last_delivered + 2 && !stuck {
            return;
        }
        let repeat_due = |(asked, at): (SequenceNumber, u64)| {
            target > asked || self.now_ms.saturating_sub(at) >= self.retransmit_interval_ms()
        };
        if self.last_transfer.is_some_and(|last| !repeat_due(last)) {
            return;
        }
        self.last_transfer = Some((target, self.now_ms));
        let peers = self
            .claims
            .iter()
            .filter(|(_, claim)| **claim >= target)
            .map(|(peer, _)| *peer)
            .collect();
        self.out.push(Action::StateTransfer { target, peers });
    }

    /// The highest sequence number that f + 1 peers (so at least one
    /// correct one) have proven to have delivered, when it is above this
    /// replica's.
    fn proven_ahead(&self) -> Option<SequenceNumber> {
        let f = self.config.validators.faults_tolerated() as usize;
        let mut claims: Vec<SequenceNumber> = self.claims.values().copied().collect();
        claims.sort_unstable_by(|a, b| b.cmp(a));
        claims
            .get(f)
            .copied()
            .filter(|target| *target > self.last_delivered)
    }

    /// The node applied certified blocks up to `certificate.seq`.
    fn on_state_transferred(&mut self, certificate: CommitCertificate, epoch: Option<Epoch>) {
        let seq = certificate.seq;
        if seq <= self.last_delivered {
            return;
        }
        if let Some(epoch) = &epoch {
            assert!(
                epoch.start <= seq + 1 && epoch.start > self.last_delivered,
                "a transferred epoch starts within the transferred blocks"
            );
        }
        self.last_delivered = seq;
        self.view_floor = self.view_floor.max(seq);
        self.log.retain(|s, _| *s > seq);
        self.prepared.retain(|s, _| *s > seq);
        self.last_delivery_ms = self.now_ms;
        self.pending_transactions = 0;
        let certified_view = certificate.view;
        self.last_certificate = Some(certificate);
        if let Some(epoch) = epoch {
            self.enter_epoch(epoch, seq);
            if self.retired {
                return;
            }
        }
        // A quorum committed in `certified_view`, so it is a working view:
        // a replica still in an earlier one joins it (never goes back).
        let joins = match self.status {
            Status::Normal => certified_view > self.view,
            Status::ViewChanging { .. } => certified_view >= self.view,
        };
        if joins {
            self.out.push(Action::Persist(Record::View {
                view: certified_view,
                normal: true,
            }));
            self.enter_view(certified_view, seq, None);
        }
        self.arm_progress_timer(true);
    }

    /// A delivered block put a new validator set in force from
    /// `epoch.start`; `delivered` is the last delivered sequence number (the
    /// switch happens before anything about `delivered + 1` is decided).
    ///
    /// What is held about later sequence numbers was judged against the old
    /// set, so it is judged again: a signature stays valid (an index names
    /// the same key in every set), but only members count, the primary may
    /// have changed, and a view change must report the switching block or
    /// a later one. Prepared certificates are dropped: this replica checks
    /// (and so votes on) `delivered + 1` only after delivering `delivered`,
    /// so none of them holds a vote of its own. Peers retransmit what still
    /// matters. The view number carries on; views only go up.
    fn enter_epoch(&mut self, epoch: Epoch, delivered: SequenceNumber) {
        self.config.validators = epoch.validators;
        self.config.epoch_start = epoch.start;
        let me = self.config.me;
        if self.config.validators.key(me) != Some(&self.config.key.public_key()) {
            self.retired = true;
            self.out.push(Action::Retired { seq: delivered + 1 });
            return;
        }
        let validators = &self.config.validators;
        let primary = validators.primary(self.view);
        for slot in self.log.values_mut() {
            if slot
                .proposal
                .as_ref()
                .is_some_and(|proposal| proposal.pre_prepare.sender != primary)
            {
                slot.proposal = None;
            }
            slot.prepares
                .retain(|sender, _| *sender != primary && validators.contains(*sender));
            slot.commits
                .retain(|sender, _| validators.contains(*sender));
        }
        self.claims.retain(|index, _| validators.contains(*index));
        self.prepared.clear();
        self.building = None;
        self.new_view_message = None;
        let changes = std::mem::take(&mut self.view_changes);
        for (sender, message) in changes {
            let valid = match &message.body {
                Body::ViewChange(change) => {
                    sender != me
                        && self.config.validators.contains(sender)
                        && self.validate_view_change(change).is_ok()
                }
                _ => false,
            };
            if valid {
                self.view_changes.insert(sender, message);
            }
        }
        if let Status::ViewChanging { .. } = self.status {
            // The view change this replica sent reported a block before the
            // switch; it asks again, reporting the switching block.
            self.send_view_change();
        }
    }

    /// (Re)arms the progress timer when there is work the primary should be
    /// doing; `reset` restarts it after progress.
    fn arm_progress_timer(&mut self, reset: bool) {
        if self.status != Status::Normal {
            return;
        }
        let outstanding =
            self.pending_transactions > 0 || self.log.values().any(|s| s.proposal.is_some());
        // With empty blocks, the primary owes a block every interval even
        // with nothing pending: silence for that long and a view timeout is
        // a fault too. Without this a primary that changed views alone
        // (behind, then caught up by state transfer, it cannot go back)
        // stops proposing, and backups with no transactions never time
        // out to follow it: the chain would stall until a transaction came.
        let owed = self.config.empty_block_interval_ms;
        if outstanding {
            if reset || self.progress_deadline_ms.is_none() {
                self.progress_deadline_ms = Some(self.now_ms + self.timeout_ms(0));
            }
        } else if owed > 0 {
            if reset || self.progress_deadline_ms.is_none() {
                self.progress_deadline_ms = Some(self.now_ms + owed + self.timeout_ms(0));
            }
        } else {
            self.progress_deadline_ms = None;
        }
    }

    fn timeout_ms(&self, attempt: u32) -> u64 {
        self.config.view_timeout_ms << attempt.min(TIMEOUT_DOUBLINGS_MAX)
    }

    fn retransmit_interval_ms(&self) -> u64 {
        (self.config.view_timeout_ms / 4).max(1)
    }

    fn heartbeat_interval_ms(&self) -> u64 {
        (self.config.view_timeout_ms / 2).max(1)
    }

    fn broadcast(&mut self, body: Body) -> SignedMessage {
        let message = SignedMessage::sign(
            &self.config.chain_id,
            self.config.me,
            &self.config.key,
            body,
        );
        self.out.push(Action::Broadcast(message.clone()));
        message
    }

    fn sign(&self, body: Body) -> SignedMessage {
        SignedMessage::sign(
            &self.config.chain_id,
            self.config.me,
            &self.config.key,
            body,
        )
    }

    fn keep_prepared(&mut self, certificate: PreparedCertificate) {
        let Some((view, seq, _, _)) = certificate.proposal() else {
            return;
        };
        if seq <= self.last_delivered {
            return;
        }
        let newer = self
            .prepared
            .get(&seq)
            .and_then(|c| c.proposal())
            .is_none_or(|(held, ..)| view > held);
        if newer {
            self.prepared.insert(seq, certificate);
        }
    }

    fn reject(&mut self, sender: ReplicaIndex, reason: RejectReason) {
        self.out.push(Action::Rejected { sender, reason });
    }
}

#[cfg(test)]
mod tests;
