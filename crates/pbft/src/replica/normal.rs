//! The normal case (§4.2, §4.3): pre-prepare, prepare, commit, deliver.

use bytes::Bytes;
use govchain_crypto::{Digest, Signature};

use super::{
    Action, Check, Epoch, LOG_WINDOW_SEQS, Proposal, Record, RejectReason, Replica, Status,
};
use crate::message::{Body, CommitCertificate, PreparedCertificate, SignedMessage};
use crate::{ReplicaIndex, SequenceNumber, View};

impl Replica {
    /// Common admission of a normal-case message for `(view, seq)`: the
    /// replica works in that view and seq is inside the window. Returns
    /// false (after rejecting, or silently for late messages) when the
    /// message must be ignored.
    fn admit(&mut self, sender: ReplicaIndex, view: View, seq: SequenceNumber) -> bool {
        if view != self.view || self.status != Status::Normal {
            // Messages of a view being left or not yet entered are normal
            // during a view change; they still counted as claims.
            if view > self.view || self.status == Status::Normal {
                self.reject(
                    sender,
                    RejectReason::WrongView {
                        got: view,
                        current: self.view,
                    },
                );
            }
            self.check_behind();
            return false;
        }
        if seq <= self.last_delivered {
            return false; // Late votes for delivered blocks are normal.
        }
        let high = self.last_delivered.saturating_add(LOG_WINDOW_SEQS);
        if seq > high {
            let low = self.last_delivered + 1;
            self.reject(sender, RejectReason::OutOfWindow { seq, low, high });
            self.check_behind();
            return false;
        }
        true
    }

    /// §4.2: a backup accepts a pre-prepare signed by the primary of the
    /// current view, inside the window and above the view's floor, whose
    /// block bytes match its digest, if no other digest was accepted or
    /// voted for at this (view, seq). The node then checks the block.
    pub(super) fn on_pre_prepare(
        &mut self,
        message: SignedMessage,
        view: View,
        seq: SequenceNumber,
        digest: Digest,
        block: Bytes,
    ) {
        let sender = message.sender;
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
        if seq <= self.view_floor {
            let low = self.view_floor + 1;
            let high = self.last_delivered + LOG_WINDOW_SEQS;
            return self.reject(sender, RejectReason::OutOfWindow { seq, low, high });
        }
        if (self.config.block_digest)(&block) != Some(digest) {
            return self.reject(sender, RejectReason::BlockMismatch { digest });
        }
        let slot = self.log.entry(seq).or_default();
        let first = slot.proposal.as_ref().map(|p| p.digest).or(slot.promised);
        match first {
            Some(first) if first != digest => {
                let reason = RejectReason::Equivocation {
                    kind: "pre-prepare",
                    seq,
                    first,
                    second: digest,
                };
                return self.reject(sender, reason);
            }
            Some(_) if slot.proposal.is_some() => return,
            _ => {}
        }
        slot.proposal = Some(Proposal {
            digest,
            block: block.clone(),
            pre_prepare: message,
            check: Check::Pending,
            reproposal: false,
        });
        self.out.push(Action::CheckProposal {
            view,
            seq,
            digest,
            block,
            reproposal: false,
        });
        self.arm_progress_timer(false);
    }

    pub(super) fn on_prepare(
        &mut self,
        message: SignedMessage,
        view: View,
        seq: SequenceNumber,
        digest: Digest,
    ) {
        let sender = message.sender;
        if !self.admit(sender, view, seq) {
            return;
        }
        if sender == self.config.validators.primary(view) {
            return self.reject(sender, RejectReason::PrepareFromPrimary);
        }
        let slot = self.log.entry(seq).or_default();
        match slot.prepares.get(&sender).map(vote_digest) {
            Some(first) if first != digest => {
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
                slot.prepares.insert(sender, message);
                self.advance(seq);
            }
        }
    }

    pub(super) fn on_commit(
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
    /// block is due) and nothing is in flight: one proposal at a time, on
    /// top of the delivered chain, and never at or below the view's floor.
    pub(super) fn maybe_propose(&mut self) {
        if !self.is_primary() || self.status != Status::Normal || self.building.is_some() {
            return;
        }
        let seq = self.last_delivered + 1;
        if seq <= self.view_floor
            || self
                .log
                .get(&seq)
                .is_some_and(|slot| slot.proposal.is_some() || slot.promised.is_some())
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
    /// the pre-prepare, after making it durable so that it never proposes a
    /// different block for this (view, seq), even after a crash.
    pub(super) fn on_proposal_built(
        &mut self,
        view: View,
        seq: SequenceNumber,
        digest: Digest,
        block: Bytes,
    ) {
        if view != self.view || self.building != Some(seq) || self.status != Status::Normal {
            return; // An answer to a request that no longer applies.
        }
        self.building = None;
        let message = self.sign(Body::PrePrepare {
            view,
            seq,
            digest,
            block: block.clone(),
        });
        let slot = self.log.entry(seq).or_default();
        assert!(
            slot.proposal.is_none(),
            "the primary proposes once per (view, seq)"
        );
        slot.proposal = Some(Proposal {
            digest,
            block,
            pre_prepare: message.clone(),
            check: Check::Valid,
            reproposal: false,
        });
        self.out.push(Action::Persist(Record::Accepted {
            message: message.clone(),
            reproposal: false,
        }));
        self.out.push(Action::Broadcast(message));
        self.arm_progress_timer(false);
        self.advance(seq);
    }

    pub(super) fn on_proposal_checked(
        &mut self,
        view: View,
        seq: SequenceNumber,
        digest: Digest,
        verdict: Result<(), String>,
    ) {
        if view != self.view || seq <= self.last_delivered || self.status != Status::Normal {
            return;
        }
        let primary = self.primary();
        let me = self.config.me;
        let Some(slot) = self.log.get_mut(&seq) else {
            return;
        };
        let Some(proposal) = slot.proposal.as_mut() else {
            return;
        };
        if proposal.digest != digest || proposal.check != Check::Pending {
            return;
        }
        if let Err(reason) = verdict {
            proposal.check = Check::Invalid;
            return self.reject(primary, RejectReason::InvalidProposal { seq, reason });
        }
        proposal.check = Check::Valid;
        // §4.2: a backup that accepts a pre-prepare multicasts a prepare,
        // durably recorded first so it can never prepare another digest here.
        if me != primary && slot.sent_prepare.is_none() {
            let message = SignedMessage::sign(
                &self.config.chain_id,
                me,
                &self.config.key,
                Body::Prepare { view, seq, digest },
            );
            slot.sent_prepare = Some(message.clone());
            slot.prepares.insert(me, message.clone());
            self.out
                .push(Action::Persist(Record::Vote(message.clone())));
            self.out.push(Action::Broadcast(message));
        }
        self.advance(seq);
    }

    /// Moves `seq` through prepared (§4.2) and committed-local (§4.3), then
    /// delivers every committed sequence number that is next in order.
    pub(super) fn advance(&mut self, seq: SequenceNumber) {
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
        // prepared(m, v, n, i): the pre-prepare and 2f matching prepares from
        // distinct backups; the pre-prepare counts as the primary's vote.
        let prepares: Vec<SignedMessage> = slot
            .prepares
            .iter()
            .filter(|(sender, message)| **sender != primary && vote_digest(message) == digest)
            .map(|(_, message)| message.clone())
            .collect();
        if prepares.len() + 1 < quorum {
            return;
        }
        if slot.sent_commit.is_none() {
            let certificate = PreparedCertificate {
                pre_prepare: proposal.pre_prepare.clone(),
                prepares,
            };
            let message = SignedMessage::sign(
                &self.config.chain_id,
                me,
                &self.config.key,
                Body::Commit { view, seq, digest },
            );
            slot.sent_commit = Some(message.clone());
            slot.commits.insert(me, (digest, message.signature));
            // The prepared certificate must survive a crash: a view change
            // after it may need it to carry this block over (§4.4).
            self.out
                .push(Action::Persist(Record::Prepared(certificate.clone())));
            self.out
                .push(Action::Persist(Record::Vote(message.clone())));
            self.out.push(Action::Broadcast(message));
            self.keep_prepared(certificate);
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
            if proposal.check != Check::Valid || slot.sent_commit.is_none() {
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
            self.last_certificate = Some(certificate.clone());
            self.prepared.retain(|s, _| *s > seq);
            self.last_delivery_ms = self.now_ms;
            self.new_view_message = None;
            // The mempool changes with every block; wait for the node's count.
            self.pending_transactions = 0;
            let next = (self.config.block_validators)(&block);
            self.out.push(Action::Deliver {
                seq,
                digest,
                block,
                certificate,
            });
            if let Some(validators) = next {
                let start = seq + 1;
                self.enter_epoch(Epoch { start, validators }, seq);
                if self.retired {
                    return;
                }
            }
            self.arm_progress_timer(true);
        }
    }
}

/// The digest a prepare or commit votes for.
fn vote_digest(message: &SignedMessage) -> Digest {
    match &message.body {
        Body::Prepare { digest, .. } | Body::Commit { digest, .. } => *digest,
        _ => Digest::default(),
    }
}
