//! The replica state machine: PBFT's normal case.
//!
//! Section numbers in comments refer to Castro and Liskov, "Practical
//! Byzantine Fault Tolerance", OSDI 1999, section 4.

use std::collections::BTreeMap;

use bytes::Bytes;
use govchain_crypto::{Digest, Signature, SigningKey};

use crate::message::{Body, CommitCertificate, SignedMessage};
use crate::{ReplicaIndex, SequenceNumber, ValidatorSet, View};

/// How far past the last delivered sequence number a replica accepts
/// messages (PBFT's high water mark, §4.3). Bounds the log: at most this many
/// slots, each with at most one vote of each kind per validator.
pub const LOG_WINDOW_SEQS: u64 = 64;

/// Everything a replica needs to know, fixed for its lifetime.
pub struct Config {
    pub chain_id: String,
    pub validators: ValidatorSet,
    /// This replica's index in `validators`.
    pub me: ReplicaIndex,
    /// This replica's consensus key; its public key must be `validators[me]`.
    pub key: SigningKey,
    /// When idle, the primary proposes an empty block after this long; 0
    /// means never (blocks only when there are transactions).
    pub empty_block_interval_ms: u64,
}

/// An input to [`Replica::step`].
#[derive(Clone, Debug)]
pub enum Event {
    /// Time passed; `now_ms` is the driver's clock and never goes back.
    Tick { now_ms: u64 },
    /// A message from a peer. Its signature is checked here; the transport
    /// must also have checked that the peer is `message.sender`.
    Message(SignedMessage),
    /// How many transactions the node's mempool holds, after it changed.
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
}

/// An output of [`Replica::step`], for the driver to carry out in order.
#[derive(Clone, Debug)]
pub enum Action {
    /// Send to every other validator.
    Broadcast(SignedMessage),
    /// Build a block at height `seq` on top of the delivered chain, from the
    /// mempool, and answer with [`Event::ProposalBuilt`] or
    /// [`Event::ProposalSkipped`].
    BuildProposal {
        view: View,
        seq: SequenceNumber,
        timestamp_ms: u64,
    },
    /// Check a proposed block once `seq - 1` is delivered and applied, and
    /// answer with [`Event::ProposalChecked`].
    CheckProposal {
        view: View,
        seq: SequenceNumber,
        digest: Digest,
        block: Bytes,
    },
    /// `block` is committed at height `seq`. Delivered in order, once each.
    Deliver {
        seq: SequenceNumber,
        digest: Digest,
        block: Bytes,
        certificate: CommitCertificate,
    },
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
    #[error("invalid proposal for sequence number {seq}: {reason}")]
    InvalidProposal { seq: SequenceNumber, reason: String },
    #[error("{kind} messages are not handled by this version")]
    Unsupported { kind: &'static str },
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
    check: Check,
}

/// What a replica knows about one sequence number in the current view.
#[derive(Debug, Default)]
struct Slot {
    proposal: Option<Proposal>,
    /// One prepare per backup; a second, different one is equivocation.
    prepares: BTreeMap<ReplicaIndex, Digest>,
    commits: BTreeMap<ReplicaIndex, (Digest, Signature)>,
    sent_prepare: bool,
    sent_commit: bool,
}

pub struct Replica {
    config: Config,
    view: View,
    last_delivered: SequenceNumber,
    log: BTreeMap<SequenceNumber, Slot>,
    now_ms: u64,
    last_delivery_ms: u64,
    pending_transactions: u64,
    /// The sequence number the primary asked the node to build, if any.
    building: Option<SequenceNumber>,
    out: Vec<Action>,
}

impl Replica {
    /// A replica whose chain is delivered up to `last_delivered`.
    ///
    /// # Panics
    /// If `config.me` is not a validator or its key is not `config.key`.
    pub fn new(config: Config, last_delivered: SequenceNumber) -> Self {
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
        Self {
            config,
            view: 0,
            last_delivered,
            log: BTreeMap::new(),
            now_ms: 0,
            last_delivery_ms: 0,
            pending_transactions: 0,
            building: None,
            out: Vec::new(),
        }
    }

    pub fn view(&self) -> View {
        self.view
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

    /// Feeds one event in and returns what to do, in order.
    pub fn step(&mut self, event: Event) -> Vec<Action> {
        match event {
            Event::Tick { now_ms } => {
                self.now_ms = self.now_ms.max(now_ms);
                self.maybe_propose();
            }
            Event::Message(message) => self.on_message(message),
            Event::PendingTransactions { count } => {
                self.pending_transactions = count;
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
        }
        std::mem::take(&mut self.out)
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
        match message.body {
            Body::PrePrepare {
                view,
                seq,
                digest,
                block,
            } => {
                self.on_pre_prepare(sender, view, seq, digest, block);
            }
            Body::Prepare { view, seq, digest } => self.on_prepare(sender, view, seq, digest),
            Body::Commit { view, seq, digest } => {
                self.on_commit(sender, view, seq, digest, message.signature);
            }
            Body::Checkpoint { .. } => {
                self.reject(sender, RejectReason::Unsupported { kind: "checkpoint" })
            }
            Body::ViewChange(_) => self.reject(
                sender,
                RejectReason::Unsupported {
                    kind: "view-change",
                },
            ),
            Body::NewView(_) => self.reject(sender, RejectReason::Unsupported { kind: "new-view" }),
        }
    }

    /// Common admission of a vote for `(view, seq)`: the view must be ours
    /// and seq inside the window. Returns false (after rejecting or silently
    /// dropping a late message) when the vote must be ignored.
    fn admit(&mut self, sender: ReplicaIndex, view: View, seq: SequenceNumber) -> bool {
        if view != self.view {
            self.reject(
                sender,
                RejectReason::WrongView {
                    got: view,
                    current: self.view,
                },
            );
            return false;
        }
        if seq <= self.last_delivered {
            // Late votes for delivered blocks are normal; nothing to do.
            return false;
        }
        let high = self.last_delivered.saturating_add(LOG_WINDOW_SEQS);
        if seq > high {
            let low = self.last_delivered + 1;
            self.reject(sender, RejectReason::OutOfWindow { seq, low, high });
            return false;
        }
        true
    }

    /// §4.2: a backup accepts a pre-prepare if it is signed by the primary of
    /// the current view, in the window, and no other digest was accepted for
    /// this (view, seq). The block itself is checked by the node.
    fn on_pre_prepare(
        &mut self,
        sender: ReplicaIndex,
        view: View,
        seq: SequenceNumber,
        digest: Digest,
        block: Bytes,
    ) {
        if !self.admit(sender, view, seq) {
            return;
        }
        let primary = self.config.validators.primary(view);
        if sender != primary {
            return self.reject(
                sender,
                RejectReason::NotPrimary {
                    sender,
                    view,
                    primary,
                },
            );
        }
        let slot = self.log.entry(seq).or_default();
        if let Some(existing) = &slot.proposal {
            if existing.digest != digest {
                let first = existing.digest;
                self.reject(
                    sender,
                    RejectReason::Equivocation {
                        kind: "pre-prepare",
                        seq,
                        first,
                        second: digest,
                    },
                );
            }
            return;
        }
        slot.proposal = Some(Proposal {
            digest,
            block: block.clone(),
            check: Check::Pending,
        });
        self.out.push(Action::CheckProposal {
            view,
            seq,
            digest,
            block,
        });
    }

    fn on_prepare(
        &mut self,
        sender: ReplicaIndex,
        view: View,
        seq: SequenceNumber,
        digest: Digest,
    ) {
        if !self.admit(sender, view, seq) {
            return;
        }
        if sender == self.config.validators.primary(view) {
            return self.reject(sender, RejectReason::PrepareFromPrimary);
        }
        let slot = self.log.entry(seq).or_default();
        match slot.prepares.get(&sender) {
            Some(first) if *first != digest => {
                let first = *first;
                self.reject(
                    sender,
                    RejectReason::Equivocation {
                        kind: "prepare",
                        seq,
                        first,
                        second: digest,
                    },
                );
            }
            Some(_) => {}
            None => {
                slot.prepares.insert(sender, digest);
                self.advance(seq);
            }
        }
    }

    fn on_commit(
        &mut self,
        sender: ReplicaIndex,
        view: View,
        seq: SequenceNumber,
        digest: Digest,
        signature: Signature,
    ) {
        if !self.admit(sender, view, seq) {
            return;
        }
        let slot = self.log.entry(seq).or_default();
        match slot.commits.get(&sender) {
            Some((first, _)) if *first != digest => {
                let first = *first;
                self.reject(
                    sender,
                    RejectReason::Equivocation {
                        kind: "commit",
                        seq,
                        first,
                        second: digest,
                    },
                );
            }
            Some(_) => {}
            None => {
                slot.commits.insert(sender, (digest, signature));
                self.advance(seq);
            }
        }
    }

    /// The primary asks for a block when it has transactions (or an empty
    /// block is due) and nothing is in flight: one proposal at a time, on top
    /// of the delivered chain.
    fn maybe_propose(&mut self) {
        if !self.is_primary() || self.building.is_some() {
            return;
        }
        let seq = self.last_delivered + 1;
        if self
            .log
            .get(&seq)
            .is_some_and(|slot| slot.proposal.is_some())
        {
            return;
        }
        let interval = self.config.empty_block_interval_ms;
        let empty_due =
            interval > 0 && self.now_ms.saturating_sub(self.last_delivery_ms) >= interval;
        if self.pending_transactions == 0 && !empty_due {
            return;
        }
        self.building = Some(seq);
        self.out.push(Action::BuildProposal {
            view: self.view,
            seq,
            timestamp_ms: self.now_ms,
        });
    }

    /// §4.2: the primary assigns the block a sequence number and multicasts
    /// the pre-prepare; its pre-prepare stands for its prepare.
    fn on_proposal_built(&mut self, view: View, seq: SequenceNumber, digest: Digest, block: Bytes) {
        if view != self.view || self.building != Some(seq) {
            return; // An answer to a request that no longer applies.
        }
        self.building = None;
        let slot = self.log.entry(seq).or_default();
        assert!(
            slot.proposal.is_none(),
            "the primary proposes once per (view, seq)"
        );
        slot.proposal = Some(Proposal {
            digest,
            block: block.clone(),
            check: Check::Valid,
        });
        let body = Body::PrePrepare {
            view,
            seq,
            digest,
            block,
        };
        self.broadcast(body);
        self.advance(seq);
    }

    fn on_proposal_checked(
        &mut self,
        view: View,
        seq: SequenceNumber,
        digest: Digest,
        verdict: Result<(), String>,
    ) {
        if view != self.view || seq <= self.last_delivered {
            return;
        }
        let Some(slot) = self.log.get_mut(&seq) else {
            return;
        };
        let Some(proposal) = slot.proposal.as_mut() else {
            return;
        };
        if proposal.digest != digest || proposal.check != Check::Pending {
            return;
        }
        match verdict {
            Ok(()) => proposal.check = Check::Valid,
            Err(reason) => {
                proposal.check = Check::Invalid;
                let primary = self.config.validators.primary(view);
                return self.reject(primary, RejectReason::InvalidProposal { seq, reason });
            }
        }
        // §4.2: a backup that accepts a pre-prepare multicasts a prepare.
        if !slot.sent_prepare {
            slot.sent_prepare = true;
            slot.prepares.insert(self.config.me, digest);
            self.broadcast(Body::Prepare { view, seq, digest });
        }
        self.advance(seq);
    }

    /// Moves `seq` through prepared (§4.2) and committed-local (§4.3), then
    /// delivers every committed sequence number that is next in order.
    fn advance(&mut self, seq: SequenceNumber) {
        let quorum = self.config.validators.quorum() as usize;
        let primary = self.primary();
        let (view, me) = (self.view, self.config.me);
        let Some(slot) = self.log.get_mut(&seq) else {
            return;
        };
        let Some(proposal) = &slot.proposal else {
            return;
        };
        if proposal.check != Check::Valid {
            return;
        }
        let digest = proposal.digest;
        let prepares = slot
            .prepares
            .iter()
            .filter(|(sender, d)| **sender != primary && **d == digest)
            .count();
        // prepared(m, v, n, i): the pre-prepare and 2f matching prepares from
        // distinct backups; the pre-prepare counts as the primary's vote.
        if prepares + 1 < quorum {
            return;
        }
        if !slot.sent_commit {
            slot.sent_commit = true;
            let body = Body::Commit { view, seq, digest };
            let message = SignedMessage::sign(&self.config.chain_id, me, &self.config.key, body);
            slot.commits.insert(me, (digest, message.signature));
            self.out.push(Action::Broadcast(message));
        }
        self.deliver_ready();
    }

    /// committed-local(m, v, n, i): prepared and a quorum of matching
    /// commits. Delivers in sequence order only.
    fn deliver_ready(&mut self) {
        let quorum = self.config.validators.quorum() as usize;
        loop {
            let seq = self.last_delivered + 1;
            let Some(slot) = self.log.get(&seq) else {
                return;
            };
            let Some(proposal) = &slot.proposal else {
                return;
            };
            if proposal.check != Check::Valid || !slot.sent_commit {
                return;
            }
            let digest = proposal.digest;
            let signatures: Vec<(ReplicaIndex, Signature)> = slot
                .commits
                .iter()
                .filter(|(_, (d, _))| *d == digest)
                .map(|(index, (_, signature))| (*index, *signature))
                .collect();
            if signatures.len() < quorum {
                return;
            }
            let slot = self.log.remove(&seq).expect("slot was just read");
            let block = slot.proposal.expect("proposal was just read").block;
            let certificate = CommitCertificate {
                seq,
                view: self.view,
                digest,
                signatures,
            };
            assert!(seq == self.last_delivered + 1, "delivery is in order");
            self.last_delivered = seq;
            self.last_delivery_ms = self.now_ms;
            // The mempool changes with every block; wait for the node's count.
            self.pending_transactions = 0;
            self.out.push(Action::Deliver {
                seq,
                digest,
                block,
                certificate,
            });
        }
    }

    fn broadcast(&mut self, body: Body) {
        let message = SignedMessage::sign(
            &self.config.chain_id,
            self.config.me,
            &self.config.key,
            body,
        );
        self.out.push(Action::Broadcast(message));
    }

    fn reject(&mut self, sender: ReplicaIndex, reason: RejectReason) {
        self.out.push(Action::Rejected { sender, reason });
    }
}

#[cfg(test)]
mod tests;
