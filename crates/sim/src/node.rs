//! One simulated validator process: a `pbft` replica, what it has made
//! durable (consensus records and the delivered chain), and the in-memory
//! state of its application that a crash loses.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use govchain_crypto::{Digest, SigningKey};
use govchain_pbft::{
    Body, CommitCertificate, Config, PreparedCertificate, Record, Replica, ReplicaIndex, Restored,
    SequenceNumber, SignedMessage, ValidatorSet, View,
};

use crate::adversary::Adversary;
use crate::app::{EMPTY_BATCH, GENESIS_PARENT, block_digest};

pub const CHAIN_ID: &str = "govchain-sim";

/// Checks deferred until their parent is applied. `pbft` keeps at most one
/// proposal per sequence number in its window, so a few windows' worth
/// covers stale views too.
pub const DEFERRED_CHECKS_MAX: usize = 4 * LOG_WINDOW_SEQS as usize;

/// `pbft`'s log window (`replica::LOG_WINDOW_SEQS`, not exported; 64 in
/// ARCHITECTURE.md): a replica's log must never hold more sequence numbers.
pub const LOG_WINDOW_SEQS: u64 = 64;
/// `pbft`'s `replica::VIEW_AHEAD_MAX` (not exported): view changes further
/// ahead are refused.
pub const VIEW_AHEAD_MAX: u64 = 64;

/// Batches a node holds at most (the oldest go first), as the node's
/// batch store is bounded.
pub const BATCHES_HELD_MAX: usize = 1_024;

/// A validator's consensus key, the same in every run.
pub fn key(identity: ReplicaIndex) -> SigningKey {
    let mut seed = [0x5Au8; 32];
    seed[..4].copy_from_slice(&identity.to_be_bytes());
    SigningKey::from_seed(seed)
}

pub fn validator_set(replicas: u32) -> ValidatorSet {
    ValidatorSet::new((0..replicas).map(|i| key(i).public_key()).collect())
        .expect("distinct seeded keys")
}

/// How a node is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Correct: safety-checked, every signature tracked, must be live.
    Honest,
    /// Runs correct code, but a twin shares its key: safety-checked only.
    Original,
    /// The second process with an honest validator's key.
    Twin,
    Byzantine,
}

/// One block of a node's ledger.
#[derive(Clone, Debug)]
pub struct Entry {
    pub digest: Digest,
    pub block: Bytes,
    pub certificate: CommitCertificate,
}

/// What survives a crash: the records `pbft` asked to persist and the chain.
#[derive(Clone, Debug, Default)]
pub struct Durable {
    view: View,
    normal: bool,
    accepted: Vec<(SignedMessage, bool)>,
    votes: Vec<SignedMessage>,
    prepared: Vec<PreparedCertificate>,
    chain: Vec<Entry>,
    /// Batches named by proposals this node built or found valid, kept
    /// with its votes: a block prepared by a quorum may be carried into a
    /// new view after every holder crashed, and must stay checkable.
    /// Bounded like the in-memory store, oldest first.
    pub batches: VecDeque<Digest>,
}

impl Durable {
    pub fn persist(&mut self, record: Record) {
        match record {
            Record::View { view, normal } => {
                assert!(
                    view >= self.view,
                    "persisted view goes back from {} to {view}",
                    self.view
                );
                (self.view, self.normal) = (view, normal);
            }
            Record::Accepted {
                message,
                reproposal,
            } => self.accepted.push((message, reproposal)),
            Record::Vote(message) => self.votes.push(message),
            Record::Prepared(certificate) => self.prepared.push(certificate),
        }
    }

    pub fn height(&self) -> SequenceNumber {
        self.chain.len() as SequenceNumber
    }

    /// Digest of block `seq` (the genesis parent for 0), if delivered.
    pub fn digest_at(&self, seq: SequenceNumber) -> Option<Digest> {
        if seq == 0 {
            return Some(GENESIS_PARENT);
        }
        self.chain
            .get(usize::try_from(seq - 1).ok()?)
            .map(|entry| entry.digest)
    }

    pub fn head_digest(&self) -> Digest {
        self.digest_at(self.height())
            .expect("the head is in the chain")
    }

    pub fn entry(&self, seq: SequenceNumber) -> Option<&Entry> {
        self.chain.get(usize::try_from(seq.checked_sub(1)?).ok()?)
    }

    pub fn last_certificate(&self) -> Option<CommitCertificate> {
        self.chain.last().map(|entry| entry.certificate.clone())
    }

    /// Appends the next block and, as the ledger does in the same write,
    /// deletes the records about heights up to it.
    ///
    /// # Panics
    /// If the block is not the next one or its digest is wrong: the caller
    /// checks both first.
    pub fn append(&mut self, entry: Entry) {
        assert_eq!(
            entry.certificate.seq,
            self.height() + 1,
            "the chain grows by one"
        );
        assert_eq!(
            block_digest(&entry.block),
            Some(entry.digest),
            "block bytes match the digest"
        );
        self.chain.push(entry);
        let height = self.height();
        let above = |body: &Body| match body {
            Body::PrePrepare { seq, .. } | Body::Prepare { seq, .. } | Body::Commit { seq, .. } => {
                *seq > height
            }
            _ => true,
        };
        self.accepted.retain(|(message, _)| above(&message.body));
        self.votes.retain(|message| above(&message.body));
        self.prepared
            .retain(|certificate| above(&certificate.pre_prepare.body));
    }

    pub fn restored(&self) -> Restored {
        Restored {
            view: self.view,
            normal: self.normal,
            accepted: self.accepted.clone(),
            votes: self.votes.clone(),
            prepared: self.prepared.clone(),
        }
    }
}

/// A proposal waiting for its parent block.
#[derive(Clone, Debug)]
pub struct DeferredCheck {
    pub view: View,
    pub seq: SequenceNumber,
    pub digest: Digest,
    pub block: Bytes,
}

pub struct Node {
    pub slot: usize,
    pub identity: ReplicaIndex,
    pub role: Role,
    /// `None` while crashed or observing.
    pub replica: Option<Replica>,
    /// Running without a replica: not a validator at its next height, it
    /// follows the chain by state transfer.
    pub observer: bool,
    /// Bumped on every crash, so answers meant for a previous life are void.
    pub incarnation: u64,
    pub durable: Durable,
    pub deferred: Vec<DeferredCheck>,
    pub transfer_in_flight: bool,
    /// The count last told to the replica (`None`: not since it started).
    pub told_pending: Option<u64>,
    /// Builds so far, to make every block distinct.
    pub builds: u64,
    /// A torn crash waits for a step with at least two actions, until
    /// (deadline, then down for) ms.
    pub torn_crash: Option<(u64, u64)>,
    /// The (view, normal) last seen, to notice view changes.
    pub seen_view: (View, bool),
    pub adversary: Option<Adversary>,
    /// Batches held, in memory (a crash loses them), oldest first.
    pub batches: VecDeque<Digest>,
    /// When each missing batch was last asked for.
    pub batches_asked: BTreeMap<Digest, u64>,
}

impl Node {
    pub fn new(
        slot: usize,
        identity: ReplicaIndex,
        role: Role,
        adversary: Option<Adversary>,
    ) -> Self {
        Self {
            slot,
            identity,
            role,
            replica: None,
            observer: false,
            incarnation: 0,
            durable: Durable::default(),
            deferred: Vec::new(),
            transfer_in_flight: false,
            told_pending: None,
            builds: 0,
            torn_crash: None,
            seen_view: (0, true),
            adversary,
            batches: VecDeque::new(),
            batches_asked: BTreeMap::new(),
        }
    }

    /// Starts (or restarts) the replica from what is durable.
    pub fn start(&mut self, config: Config) {
        assert!(
            self.replica.is_none(),
            "node {} is already running",
            self.slot
        );
        let replica = Replica::new(
            config,
            self.durable.height(),
            self.durable.last_certificate(),
            self.durable.restored(),
        );
        self.replica = Some(replica);
        self.told_pending = None;
    }

    /// Loses everything that is not durable.
    pub fn crash(&mut self) {
        self.replica = None;
        self.observer = false;
        self.incarnation += 1;
        self.deferred.clear();
        self.transfer_in_flight = false;
        self.told_pending = None;
        self.torn_crash = None;
        self.batches.clear();
        self.batches_asked.clear();
    }

    pub fn holds_batch(&self, digest: &Digest) -> bool {
        *digest == EMPTY_BATCH
            || self.batches.contains(digest)
            || self.durable.batches.contains(digest)
    }

    /// Makes a batch durable: it names a proposal this node built or
    /// found valid.
    pub fn keep_batch_durably(&mut self, digest: Digest) {
        if digest == EMPTY_BATCH || self.durable.batches.contains(&digest) {
            return;
        }
        if self.durable.batches.len() >= BATCHES_HELD_MAX {
            self.durable.batches.pop_front();
        }
        self.durable.batches.push_back(digest);
    }

    /// Keeps a batch; returns whether it is new here.
    pub fn keep_batch(&mut self, digest: Digest) -> bool {
        if self.holds_batch(&digest) {
            return false;
        }
        if self.batches.len() >= BATCHES_HELD_MAX {
            self.batches.pop_front();
        }
        self.batches.push_back(digest);
        self.batches_asked.remove(&digest);
        true
    }

    pub fn is_up(&self) -> bool {
        self.replica.is_some() || self.observer
    }

    /// Safety-checked: its deliveries must agree with every other.
    pub fn is_checked(&self) -> bool {
        matches!(self.role, Role::Honest | Role::Original)
    }

    pub fn is_honest(&self) -> bool {
        self.role == Role::Honest
    }

    /// Remembers a check until `seq - 1` is applied; drops duplicates and,
    /// past the bound, the oldest.
    pub fn defer_check(&mut self, check: DeferredCheck) {
        let duplicate = self
            .deferred
            .iter()
            .any(|d| (d.view, d.seq, d.digest) == (check.view, check.seq, check.digest));
        if duplicate {
            return;
        }
        if self.deferred.len() >= DEFERRED_CHECKS_MAX {
            self.deferred.remove(0);
        }
        self.deferred.push(check);
    }

    /// Deferred checks that can run now (their parent is the head), in
    /// order; stale ones (at or below the head) are dropped.
    pub fn ready_checks(&mut self) -> Vec<DeferredCheck> {
        let height = self.durable.height();
        self.deferred.retain(|check| check.seq > height);
        let (ready, later) = self
            .deferred
            .drain(..)
            .partition(|check| check.seq == height + 1);
        self.deferred = later;
        ready
    }
}
