//! The invariants a run must keep, checked as it goes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use govchain_crypto::Digest;
use govchain_pbft::{
    Body, ReplicaIndex, SequenceNumber, SignedMessage, ValidatorSet, View,
    verify_commit_certificate,
};

/// Kinds of broken invariant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ViolationKind {
    /// Two honest replicas delivered different blocks at one height.
    Divergence,
    /// A delivered block's certificate, digest, height or parent is wrong.
    BadDelivery,
    /// An honest replica signed two digests for one `(kind, view, seq)`.
    DoubleVote,
    /// Valid commit certificates exist (or could be assembled from honest
    /// commits and every faulty validator) for two digests at one height.
    ConflictingCertificates,
    /// A replica's log held more than `LOG_WINDOW_SEQS` sequence numbers.
    LogUnbounded,
    /// An honest replica did not reach the target height in time.
    Liveness,
    /// `pbft` asked the application for something impossible.
    Protocol,
    /// Something panicked (a `pbft` assertion, or the simulator's).
    Panic,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub at_ms: u64,
    pub kind: ViolationKind,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(out, "{:?} at {}ms: {}", self.kind, self.at_ms, self.detail)
    }
}

/// Vote kinds tracked per signer.
const KIND_PRE_PREPARE: u8 = 0;
const KIND_PREPARE: u8 = 1;
const KIND_COMMIT: u8 = 2;

/// Bounds the certificates remembered from view changes: at most one digest
/// per height is expected, so this only matters for a broken run.
const CERTIFICATES_SEEN_MAX: usize = 1 << 16;

pub struct Checker {
    chain_id: String,
    /// Each validator set with the first height it orders, in order.
    sets: Vec<(SequenceNumber, ValidatorSet)>,
    /// Identities whose every signature is tracked: the correct validators.
    honest: BTreeSet<ReplicaIndex>,
    faulty: Vec<ReplicaIndex>,
    /// The first honest delivery at each height.
    delivered: BTreeMap<SequenceNumber, (Digest, usize)>,
    /// What each honest signer signed per (kind, signer, view, seq).
    signed: BTreeMap<(u8, ReplicaIndex, View, SequenceNumber), Digest>,
    /// Honest commit signers per (seq, view, digest).
    commit_signers: BTreeMap<(SequenceNumber, View, Digest), BTreeSet<ReplicaIndex>>,
    /// The digest per height that has (or could have) a commit certificate.
    certified: BTreeMap<SequenceNumber, (Digest, &'static str)>,
    violations: Vec<Violation>,
}

impl Checker {
    /// `sets`: each set in force with its first height, the first from 1.
    pub fn new(
        chain_id: &str,
        sets: Vec<(SequenceNumber, ValidatorSet)>,
        faulty: &[ReplicaIndex],
    ) -> Self {
        assert!(sets.first().is_some_and(|(start, _)| *start == 1));
        let honest = sets
            .iter()
            .flat_map(|(_, set)| set.members().iter().map(|(index, _)| *index))
            .filter(|i| !faulty.contains(i))
            .collect();
        Self {
            chain_id: chain_id.to_owned(),
            sets,
            honest,
            faulty: faulty.to_vec(),
            delivered: BTreeMap::new(),
            signed: BTreeMap::new(),
            commit_signers: BTreeMap::new(),
            certified: BTreeMap::new(),
            violations: Vec::new(),
        }
    }

    /// The set that orders height `seq`.
    fn set_at(&self, seq: SequenceNumber) -> &ValidatorSet {
        let at = self.sets.partition_point(|(start, _)| *start <= seq);
        &self.sets[at.saturating_sub(1)].1
    }

    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    pub fn fail(&mut self, at_ms: u64, kind: ViolationKind, detail: String) {
        self.violations.push(Violation {
            at_ms,
            kind,
            detail,
        });
    }

    /// The digest delivered at `seq` by some honest node, if any.
    pub fn delivered_at(&self, seq: SequenceNumber) -> Option<Digest> {
        self.delivered.get(&seq).map(|(digest, _)| *digest)
    }

    /// Node `node` (safety-checked) appended block `seq` with `digest`;
    /// the caller verified its certificate (see `Simulator::verify_entry`).
    /// Checks agreement with every other honest delivery.
    pub fn on_delivered(&mut self, at_ms: u64, node: usize, seq: SequenceNumber, digest: Digest) {
        match self.delivered.get(&seq) {
            Some((first, by)) if *first != digest => {
                let detail = format!(
                    "height {seq}: node {by} delivered {first}, node {node} delivered {digest}"
                );
                self.fail(at_ms, ViolationKind::Divergence, detail);
            }
            Some(_) => {}
            None => {
                self.delivered.insert(seq, (digest, node));
            }
        }
        self.note_certified(at_ms, seq, digest, "delivered");
    }

    /// A message signed by `signer`'s key left a node (sent or persisted).
    /// Honest signers must never sign two digests for one slot.
    pub fn on_signed(&mut self, at_ms: u64, message: &SignedMessage) {
        match &message.body {
            Body::PrePrepare {
                view, seq, digest, ..
            } => {
                self.note_vote(
                    at_ms,
                    KIND_PRE_PREPARE,
                    message.sender,
                    *view,
                    *seq,
                    *digest,
                );
            }
            Body::Prepare { view, seq, digest } => {
                self.note_vote(at_ms, KIND_PREPARE, message.sender, *view, *seq, *digest);
            }
            Body::Commit { view, seq, digest } => {
                self.note_vote(at_ms, KIND_COMMIT, message.sender, *view, *seq, *digest);
                self.note_commit(at_ms, message.sender, *view, *seq, *digest);
            }
            Body::NewView(new_view) => {
                for pre_prepare in &new_view.pre_prepares {
                    if pre_prepare.sender == message.sender {
                        self.on_signed(at_ms, pre_prepare);
                    }
                }
            }
            Body::Checkpoint { .. } | Body::ViewChange(_) => {}
        }
    }

    /// Any message seen on the network: a commit certificate it carries
    /// must not conflict with another height's certified digest.
    pub fn on_wire(&mut self, at_ms: u64, message: &SignedMessage) {
        let Body::ViewChange(change) = &message.body else {
            return;
        };
        let Some(certificate) = &change.committed else {
            return;
        };
        let seq = certificate.seq;
        if self
            .certified
            .get(&seq)
            .is_some_and(|(digest, _)| *digest == certificate.digest)
        {
            return; // Known; no need to check the signatures again.
        }
        if self.certified.len() >= CERTIFICATES_SEEN_MAX {
            return;
        }
        let valid = verify_commit_certificate(
            &self.chain_id,
            self.set_at(seq),
            seq,
            &certificate.digest,
            certificate,
        );
        if valid.is_ok() {
            self.note_certified(at_ms, seq, certificate.digest, "a view change");
        }
    }

    fn note_vote(
        &mut self,
        at_ms: u64,
        kind: u8,
        signer: ReplicaIndex,
        view: View,
        seq: SequenceNumber,
        digest: Digest,
    ) {
        if !self.honest.contains(&signer) {
            return;
        }
        let first = *self
            .signed
            .entry((kind, signer, view, seq))
            .or_insert(digest);
        if first != digest {
            let name = ["pre-prepare", "prepare", "commit"][usize::from(kind)];
            let detail = format!(
                "honest validator {signer} signed {name} (view {view}, seq {seq}) for {first} and {digest}"
            );
            self.fail(at_ms, ViolationKind::DoubleVote, detail);
        }
    }

    /// PBFT's committed(m, v, n): if the honest commits for (v, n, d) plus a
    /// commit from every faulty validator make a quorum, a certificate for
    /// d can exist, so d must be the only digest ever certified at n.
    fn note_commit(
        &mut self,
        at_ms: u64,
        signer: ReplicaIndex,
        view: View,
        seq: SequenceNumber,
        digest: Digest,
    ) {
        if !self.honest.contains(&signer) {
            return;
        }
        let set = self.set_at(seq);
        let quorum = set.quorum() as usize;
        let faulty = self.faulty.iter().filter(|i| set.contains(**i)).count();
        let member = set.contains(signer);
        let signers = self.commit_signers.entry((seq, view, digest)).or_default();
        // Only members' commits count (a removed validator's are void).
        if member {
            signers.insert(signer);
        }
        if signers.len() + faulty >= quorum {
            self.note_certified(at_ms, seq, digest, "honest commits");
        }
    }

    fn note_certified(
        &mut self,
        at_ms: u64,
        seq: SequenceNumber,
        digest: Digest,
        source: &'static str,
    ) {
        match self.certified.get(&seq) {
            Some((first, first_source)) if *first != digest => {
                let detail = format!(
                    "height {seq}: {first} is certified by {first_source}, {digest} by {source}"
                );
                self.fail(at_ms, ViolationKind::ConflictingCertificates, detail);
            }
            Some(_) => {}
            None => {
                self.certified.insert(seq, (digest, source));
            }
        }
    }
}
