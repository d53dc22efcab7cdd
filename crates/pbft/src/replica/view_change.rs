//! View change (§4.4), adapted to one block in flight: a view change
//! reports the last commit certificate and at most one prepared certificate,
//! and the new primary carries over the highest-view prepared block above
//! the highest certified one.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use govchain_crypto::Digest;

use super::{Action, Check, Proposal, Record, RejectReason, Replica, Slot, Status, VIEW_AHEAD_MAX};
use crate::message::{Body, NewView, SignedMessage, ViewChange};
use crate::{ReplicaIndex, SequenceNumber, View, verify_commit_certificate};

/// What a quorum of view changes decides for the new view: the highest
/// committed sequence number it proves, and the block to carry over to the
/// next one, if any was prepared.
#[derive(Debug, PartialEq, Eq)]
pub struct Decision {
    pub committed_seq: SequenceNumber,
    pub carried: Option<(Digest, Bytes)>,
}

impl Replica {
    /// Moves to view `target` (§4.4): stop working in the current view,
    /// durably record the move, and multicast a view change.
    ///
    /// # Panics
    /// If `target` is not above the current view.
    pub(super) fn start_view_change(&mut self, target: View) {
        assert!(target > self.view, "views only go up");
        let attempt = match self.status {
            Status::ViewChanging { attempt, .. } => attempt + 1,
            Status::Normal => 0,
        };
        self.view = target;
        self.status = Status::ViewChanging {
            deadline_ms: self.now_ms + self.timeout_ms(attempt),
            attempt,
        };
        self.log.clear();
        self.building = None;
        self.progress_deadline_ms = None;
        self.new_view_message = None;
        self.out.push(Action::Persist(Record::View {
            view: target,
            normal: false,
        }));
        self.send_view_change();
    }

    pub(super) fn send_view_change(&mut self) {
        let change = ViewChange {
            new_view: self.view,
            committed_seq: self.last_delivered,
            committed: self.last_certificate.clone(),
            prepared: self
                .prepared
                .get(&(self.last_delivered + 1))
                .cloned()
                .map(Box::new),
        };
        let message = self.broadcast(Body::ViewChange(change));
        self.view_changes.insert(self.config.me, message);
        self.try_new_view();
    }

    pub(super) fn on_view_change(&mut self, message: SignedMessage) {
        let sender = message.sender;
        let Body::ViewChange(change) = &message.body else {
            return;
        };
        let new_view = change.new_view;
        self.transfer_if_certified(sender, change);
        if new_view < self.view || (new_view == self.view && self.status == Status::Normal) {
            return; // Stale: that view is left or already working.
        }
        if new_view > self.view + VIEW_AHEAD_MAX {
            return self.reject(
                sender,
                RejectReason::InvalidViewChange {
                    reason: format!("view {new_view} is too far ahead of {}", self.view),
                },
            );
        }
        if let Err(reason) = self.validate_view_change(change) {
            return self.reject(sender, RejectReason::InvalidViewChange { reason });
        }
        let newer = self
            .view_changes
            .get(&sender)
            .is_none_or(|held| view_change_view(held) < new_view);
        if newer {
            self.view_changes.insert(sender, message);
        }
        self.join_if_f_plus_one();
        self.try_new_view();
    }

    /// A view change, even one for a stale view, that reports a block this
    /// replica lacks with a commit certificate of the current set proves the
    /// block committed: the replica fetches it at once, without waiting for
    /// f + 1 claims. This matters at a set change: the replicas that
    /// delivered the switching block ignore view changes of the old set, so
    /// if fewer than f + 1 of them are ahead, only their certificate tells
    /// the others to catch up (neither group alone has a quorum).
    fn transfer_if_certified(&mut self, sender: ReplicaIndex, change: &ViewChange) {
        let seq = change.committed_seq;
        let Some(certificate) = &change.committed else {
            return;
        };
        let repeat_due = self.last_transfer.is_none_or(|(asked, at)| {
            seq > asked || self.now_ms.saturating_sub(at) >= self.retransmit_interval_ms()
        });
        if seq <= self.last_delivered || !repeat_due {
            return;
        }
        let chain = &self.config.chain_id;
        let validators = &self.config.validators;
        if verify_commit_certificate(chain, validators, seq, &certificate.digest, certificate)
            .is_ok()
        {
            self.last_transfer = Some((seq, self.now_ms));
            let mut peers: Vec<ReplicaIndex> = self
                .claims
                .iter()
                .filter(|(_, claim)| **claim >= seq)
                .map(|(peer, _)| *peer)
                .collect();
            if !peers.contains(&sender) {
                peers.push(sender);
            }
            self.out.push(Action::StateTransfer { target: seq, peers });
        }
    }

    /// A view change's content must be checkable by anyone: a valid commit
    /// certificate for the sequence number it claims, and a valid prepared
    /// certificate, from an earlier view, for the next one only.
    pub(super) fn validate_view_change(&self, change: &ViewChange) -> Result<(), String> {
        let chain = &self.config.chain_id;
        let validators = &self.config.validators;
        let epoch_start = self.config.epoch_start;
        match (&change.committed, change.committed_seq) {
            (_, seq) if seq + 1 < epoch_start => {
                // Its sender has not delivered the block that put this set in
                // force: it is still in an earlier set, whose view changes
                // mean nothing here (it catches up by state transfer).
                return Err(format!(
                    "reports block {seq}, before this validator set took over at {epoch_start}"
                ));
            }
            // The block that put this set in force is certified by the set
            // before; every member of this set delivered it.
            (_, seq) if seq > 0 && seq + 1 == epoch_start => {}
            (None, 0) => {}
            (None, seq) => return Err(format!("claims block {seq} without a certificate")),
            (Some(certificate), seq) => {
                verify_commit_certificate(chain, validators, seq, &certificate.digest, certificate)
                    .map_err(|err| format!("commit certificate: {err}"))?;
            }
        }
        if let Some(prepared) = &change.prepared {
            prepared
                .verify(chain, validators, self.config.block_digest)
                .map_err(|err| format!("prepared certificate: {err}"))?;
            let (view, seq, ..) = prepared
                .proposal()
                .ok_or("prepared certificate has no pre-prepare")?;
            if seq != change.committed_seq + 1 {
                return Err(format!(
                    "prepared certificate for {seq}, not the next sequence number {}",
                    change.committed_seq + 1
                ));
            }
            if view >= change.new_view {
                return Err(format!(
                    "prepared certificate from view {view}, not before {}",
                    change.new_view
                ));
            }
        }
        Ok(())
    }

    /// §4.4 liveness rule: f + 1 validators asking for later views include
    /// a correct one, so join the latest view that f + 1 of them ask for.
    /// One faulty validator alone can never move anyone.
    fn join_if_f_plus_one(&mut self) {
        let f = self.config.validators.faults_tolerated() as usize;
        let floor = self.view + u64::from(self.status == Status::Normal);
        let mut views: Vec<View> = self
            .view_changes
            .iter()
            .filter(|(sender, _)| **sender != self.config.me)
            .map(|(_, message)| view_change_view(message))
            .filter(|view| *view >= floor && *view > self.view)
            .collect();
        views.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(&target) = views.get(f) {
            self.start_view_change(target);
        }
    }

    /// Whether a quorum of validators (this one included) asks for the
    /// current view or a later one, so that a new view can be formed.
    pub(super) fn quorum_changing_views(&self) -> bool {
        let asking = self
            .view_changes
            .values()
            .filter(|message| view_change_view(message) >= self.view)
            .count();
        asking >= self.config.validators.quorum() as usize
    }

    /// The view changes held for `view`.
    fn view_changes_for(&self, view: View) -> Vec<SignedMessage> {
        self.view_changes
            .values()
            .filter(|message| view_change_view(message) == view)
            .cloned()
            .collect()
    }

    /// The new primary, once it holds a quorum of view changes for its view,
    /// multicasts the new-view message (§4.4) and enters the view.
    pub(super) fn try_new_view(&mut self) {
        if self.status == Status::Normal || !self.is_primary() {
            return;
        }
        let view = self.view;
        let changes = self.view_changes_for(view);
        if changes.len() < self.config.validators.quorum() as usize {
            return;
        }
        let decision = decide(&changes);
        let pre_prepare = decision.carried.as_ref().map(|(digest, block)| {
            let seq = decision.committed_seq + 1;
            self.sign(Body::PrePrepare {
                view,
                seq,
                digest: *digest,
                block: block.clone(),
            })
        });
        let body = Body::NewView(NewView {
            view,
            view_changes: changes,
            pre_prepares: pre_prepare.iter().cloned().collect(),
        });
        self.out
            .push(Action::Persist(Record::View { view, normal: true }));
        if let Some(message) = &pre_prepare {
            self.out.push(Action::Persist(Record::Accepted {
                message: message.clone(),
                reproposal: true,
            }));
        }
        let new_view = self.broadcast(body);
        self.new_view_message = Some(new_view);
        self.enter_view(view, decision.committed_seq, pre_prepare);
        self.request_transfer_to(decision.committed_seq);
    }

    pub(super) fn on_new_view(&mut self, message: SignedMessage) {
        let sender = message.sender;
        let Body::NewView(new_view) = &message.body else {
            return;
        };
        let view = new_view.view;
        if view < self.view || (view == self.view && self.status == Status::Normal) {
            return;
        }
        if view > self.view + VIEW_AHEAD_MAX {
            return self.reject(
                sender,
                RejectReason::InvalidNewView {
                    reason: format!("view {view} is too far ahead of {}", self.view),
                },
            );
        }
        let pre_prepare = match self.validate_new_view(sender, new_view) {
            Ok(pre_prepare) => pre_prepare,
            Err(reason) => return self.reject(sender, RejectReason::InvalidNewView { reason }),
        };
        let committed_seq = decide(&new_view.view_changes).committed_seq;
        self.out
            .push(Action::Persist(Record::View { view, normal: true }));
        if let Some(message) = &pre_prepare {
            self.out.push(Action::Persist(Record::Accepted {
                message: message.clone(),
                reproposal: true,
            }));
        }
        self.enter_view(view, committed_seq, pre_prepare);
        self.request_transfer_to(committed_seq);
    }

    /// Checks a new-view message the way its primary had to build it: a
    /// quorum of valid view changes for the view from distinct validators,
    /// and exactly the carried-over pre-prepare they imply.
    fn validate_new_view(
        &self,
        sender: ReplicaIndex,
        new_view: &NewView,
    ) -> Result<Option<SignedMessage>, String> {
        let view = new_view.view;
        let primary = self.config.validators.primary(view);
        if sender != primary {
            return Err(format!(
                "sent by {sender}, but the primary of view {view} is {primary}"
            ));
        }
        let mut senders = BTreeSet::new();
        for change in &new_view.view_changes {
            let Body::ViewChange(body) = &change.body else {
                return Err("holds a message that is not a view change".into());
            };
            if body.new_view != view {
                return Err(format!("holds a view change for view {}", body.new_view));
            }
            if !senders.insert(change.sender) {
                return Err(format!(
                    "holds two view changes of validator {}",
                    change.sender
                ));
            }
            if !change.verify(&self.config.chain_id, &self.config.validators) {
                return Err(format!(
                    "view change of validator {} does not verify",
                    change.sender
                ));
            }
            self.validate_view_change(body)
                .map_err(|err| format!("view change of validator {}: {err}", change.sender))?;
        }
        let quorum = self.config.validators.quorum() as usize;
        if senders.len() < quorum {
            return Err(format!(
                "{} view changes, a quorum is {quorum}",
                senders.len()
            ));
        }
        let decision = decide(&new_view.view_changes);
        match (&decision.carried, new_view.pre_prepares.as_slice()) {
            (None, []) => Ok(None),
            (Some((digest, block)), [message]) => {
                let expected = Body::PrePrepare {
                    view,
                    seq: decision.committed_seq + 1,
                    digest: *digest,
                    block: block.clone(),
                };
                if message.sender != primary
                    || message.body != expected
                    || !message.verify(&self.config.chain_id, &self.config.validators)
                {
                    return Err(
                        "the carried-over pre-prepare is not the one the view changes imply".into(),
                    );
                }
                Ok(Some(message.clone()))
            }
            (None, _) => Err("carries a pre-prepare that no prepared certificate justifies".into()),
            (Some(_), _) => Err("does not carry exactly the prepared block over".into()),
        }
    }

    /// Starts working in `view`, where pre-prepares must be above `floor`;
    /// `carried` is the new-view's pre-prepare for `floor + 1`, if any.
    pub(super) fn enter_view(
        &mut self,
        view: View,
        floor: SequenceNumber,
        carried: Option<SignedMessage>,
    ) {
        assert!(view >= self.view, "views only go up");
        self.view = view;
        self.status = Status::Normal;
        self.view_floor = floor.max(self.last_delivered);
        self.log.clear();
        self.building = None;
        self.view_changes
            .retain(|_, message| view_change_view(message) > view);
        if !self.is_primary() {
            self.new_view_message = None;
        }
        if let Some(message) = carried
            && let Body::PrePrepare {
                seq, digest, block, ..
            } = &message.body
        {
            let (seq, digest, block) = (*seq, *digest, block.clone());
            if seq > self.last_delivered {
                let proposal = Proposal {
                    digest,
                    block: block.clone(),
                    pre_prepare: message,
                    check: Check::Pending,
                    reproposal: true,
                };
                self.log.insert(
                    seq,
                    Slot {
                        proposal: Some(proposal),
                        ..Slot::default()
                    },
                );
                self.out.push(Action::CheckProposal {
                    view,
                    seq,
                    digest,
                    block,
                    reproposal: true,
                });
            }
            self.view_floor = seq - 1;
        }
        self.progress_deadline_ms = None;
        self.arm_progress_timer(true);
        self.maybe_propose();
    }

    fn request_transfer_to(&mut self, target: SequenceNumber) {
        if target > self.last_delivered {
            let peers: Vec<ReplicaIndex> = self
                .claims
                .iter()
                .filter(|(_, claim)| **claim >= target)
                .map(|(peer, _)| *peer)
                .collect();
            self.last_transfer = Some((target, self.now_ms));
            self.out.push(Action::StateTransfer { target, peers });
        }
    }
}

fn view_change_view(message: &SignedMessage) -> View {
    match &message.body {
        Body::ViewChange(change) => change.new_view,
        _ => 0,
    }
}

/// The new-view rule, given validated view changes: the highest certified
/// sequence number c, and for c + 1 the block of the highest-view prepared
/// certificate among them, if any. A block committed anywhere was prepared
/// by f + 1 correct replicas, one of which is in any quorum of view changes,
/// so it is carried over (or already certified).
pub fn decide(changes: &[SignedMessage]) -> Decision {
    let bodies: Vec<&ViewChange> = changes
        .iter()
        .filter_map(|m| match &m.body {
            Body::ViewChange(change) => Some(change),
            _ => None,
        })
        .collect();
    let committed_seq = bodies.iter().map(|c| c.committed_seq).max().unwrap_or(0);
    let mut best: BTreeMap<View, (Digest, Bytes)> = BTreeMap::new();
    for change in &bodies {
        let Some(prepared) = &change.prepared else {
            continue;
        };
        let Some((view, seq, digest, block)) = prepared.proposal() else {
            continue;
        };
        if seq == committed_seq + 1 {
            best.entry(view).or_insert((digest, block.clone()));
        }
    }
    Decision {
        committed_seq,
        carried: best.pop_last().map(|(_, carried)| carried),
    }
}
