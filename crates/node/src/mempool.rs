//! Transactions admitted but not yet committed.
//!
//! **Invariant:** every transaction here passed `check_envelope` (signature
//! included) on this node; the count and bytes never exceed the configured
//! limits; at most one transaction per (signer, nonce).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use govchain_crypto::{Digest, PublicKey};
use govchain_exec::{TransactionError, VerifiedTransaction};
use govchain_proto::types::v1::TransactionEnvelope;

/// How far ahead of a signer's committed nonce a transaction may wait.
pub const NONCE_AHEAD_MAX: u64 = 1024;

/// How long a transaction may wait behind a nonce gap (a missing nonce of
/// its signer) before this node drops it, by default: 10 minutes.
pub const PARKED_TTL_DEFAULT: Duration = Duration::from_secs(600);

/// Dropped transactions whose id and reason a node remembers, so that
/// `GetTransaction` and `CommitStatus` can answer `DROPPED`; the oldest
/// are forgotten first.
pub const DROPPED_REMEMBERED_MAX: usize = 65_536;

/// The part of the mempool's transaction limit that the transactions one
/// department submitted through this node may take: 1/4, so that one
/// department (or a stolen client certificate minting fresh citizen keys)
/// cannot fill the mempool and lock the others out. Forwarded transactions
/// are counted at the node that admitted them from a client.
pub const DEPARTMENT_SHARE_DIVISOR: u64 = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum MempoolError {
    #[error(transparent)]
    Transaction(#[from] TransactionError),
    #[error(
        "department {department:?} has {held} transactions pending in this node's mempool, its share (1/DEPARTMENT_SHARE_DIVISOR of {transactions_max}); retry as they commit"
    )]
    DepartmentShare {
        department: String,
        held: u64,
        transactions_max: u64,
    },
    #[error(
        "mempool is full: {transactions} transactions and {bytes} bytes held, limits {transactions_max} and {bytes_max}; retry later"
    )]
    Full {
        transactions: u64,
        bytes: u64,
        transactions_max: u64,
        bytes_max: u64,
    },
}

pub struct Mempool {
    transactions_max: u64,
    bytes_max: u64,
    parked_ttl: Duration,
    bytes: u64,
    next_arrival: u64,
    /// Arrival number, admission time, transaction.
    by_id: HashMap<Digest, (u64, Instant, VerifiedTransaction)>,
    /// Arrival order, which is the order the primary proposes in.
    by_arrival: BTreeMap<u64, Digest>,
    /// Keyed by the key's bytes, so that a block's envelope can be looked
    /// up without parsing its key (see [`Mempool::admitted`]).
    by_signer: HashMap<[u8; 32], Pending>,
    /// The sum of every signer's `Pending::ready`, kept as transactions
    /// come and go: the driver asks after every change and every block,
    /// and counting afresh each time cost a walk over every pending signer.
    ready: u64,
    /// The department that submitted each transaction a client gave this
    /// node, and how many each department has pending.
    submitters: HashMap<Digest, Arc<str>>,
    by_department: HashMap<Arc<str>, u64>,
    /// Why each recently dropped transaction was dropped (at most
    /// [`DROPPED_REMEMBERED_MAX`], oldest first in `dropped_order`).
    dropped: HashMap<Digest, Arc<str>>,
    dropped_order: VecDeque<Digest>,
}

/// What a node holds of one signer's transactions (see
/// [`Mempool::account`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingAccount {
    /// The highest nonce pending, or the committed nonce.
    pub highest: u64,
    /// The nonce the signer's next transaction should use: one past the
    /// unbroken run of nonces after the committed one that is pending.
    pub next: u64,
    /// Transactions pending behind a gap (a nonce above `next`).
    pub parked: u64,
}

/// One signer's pending transactions.
struct Pending {
    /// The signer's last committed nonce, as last seen.
    committed: u64,
    nonces: BTreeMap<u64, Digest>,
    /// How many nonces after `committed` are pending without a gap.
    ready: u64,
}

impl Pending {
    fn new(committed: u64) -> Self {
        Self {
            committed,
            nonces: BTreeMap::new(),
            ready: 0,
        }
    }

    /// Moves the committed nonce up to `committed` (never down): the ready
    /// run loses the nonces now used, and then grows over any pending
    /// nonces that follow it.
    fn advance(&mut self, committed: u64) {
        if committed > self.committed {
            let used = committed - self.committed;
            self.ready = self.ready.saturating_sub(used);
            self.committed = committed;
        }
        self.extend();
    }

    /// Grows the ready run over the pending nonces that continue it.
    fn extend(&mut self) {
        while self.nonces.contains_key(&(self.committed + self.ready + 1)) {
            self.ready += 1;
        }
    }
}

impl Mempool {
    /// A mempool of at most `transactions_max` transactions and `bytes_max`
    /// bytes, where a transaction behind a nonce gap waits `parked_ttl`.
    pub fn new(transactions_max: u64, bytes_max: u64, parked_ttl: Duration) -> Self {
        Self {
            transactions_max,
            bytes_max,
            parked_ttl,
            bytes: 0,
            next_arrival: 0,
            by_id: HashMap::new(),
            by_arrival: BTreeMap::new(),
            submitters: HashMap::new(),
            by_department: HashMap::new(),
            by_signer: HashMap::new(),
            ready: 0,
            dropped: HashMap::new(),
            dropped_order: VecDeque::new(),
        }
    }

    pub fn len(&self) -> u64 {
        self.by_id.len() as u64
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn get(&self, id: &Digest) -> Option<&VerifiedTransaction> {
        self.by_id.get(id).map(|(_, _, t)| t)
    }

    /// Why this node dropped `id` without committing it, if it did
    /// recently (and has not admitted it again since).
    pub fn dropped(&self, id: &Digest) -> Option<Arc<str>> {
        self.dropped.get(id).cloned()
    }

    /// Transactions a block could include now: per signer, the run of
    /// nonces that follows its committed one without a gap. The primary is
    /// only expected to propose (and backups only expect a proposal) when
    /// this is above zero, so a transaction waiting for a missing nonce
    /// never triggers a view change.
    pub fn ready_len(&self) -> u64 {
        self.ready
    }

    /// Whether this exact signature was verified for `id` at admission.
    pub fn verified(&self, id: &Digest, signature: &[u8]) -> bool {
        self.by_id
            .get(id)
            .is_some_and(|(_, _, t)| t.envelope.signature == signature)
    }

    /// The admitted transaction whose envelope is exactly `envelope`, if
    /// any: a block's transaction found here needs no decoding, hashing or
    /// signature check again.
    pub fn admitted(&self, envelope: &TransactionEnvelope) -> Option<VerifiedTransaction> {
        let signer: &[u8; 32] = envelope.signer.as_slice().try_into().ok()?;
        let id = self.by_signer.get(signer)?.nonces.get(&envelope.nonce)?;
        let (_, _, transaction) = self.by_id.get(id)?;
        (transaction.envelope == *envelope).then(|| transaction.clone())
    }

    /// What this node holds of `signer`'s transactions, given its last
    /// committed nonce.
    pub fn account(&self, signer: &PublicKey, committed: u64) -> PendingAccount {
        let Some(pending) = self.by_signer.get(signer.as_bytes()) else {
            return PendingAccount {
                highest: committed,
                next: committed + 1,
                parked: 0,
            };
        };
        // `pending.committed` may lag the ledger until the driver removes
        // a block's transactions: count only nonces above `committed`.
        let mut next = committed + 1;
        while pending.nonces.contains_key(&next) {
            next += 1;
        }
        let parked = pending.nonces.range(next..).count() as u64;
        let highest = pending
            .nonces
            .keys()
            .next_back()
            .copied()
            .unwrap_or(committed)
            .max(committed);
        PendingAccount {
            highest,
            next,
            parked,
        }
    }

    /// Admits `transaction`, whose signer's last committed nonce is
    /// `committed_nonce`.
    #[cfg(test)]
    pub fn insert(
        &mut self,
        transaction: VerifiedTransaction,
        committed_nonce: u64,
    ) -> Result<(), MempoolError> {
        self.insert_from(transaction, committed_nonce, None, Instant::now())
    }

    /// Transactions pending that `department` submitted through this node.
    pub fn department_len(&self, department: &str) -> u64 {
        self.by_department.get(department).copied().unwrap_or(0)
    }

    /// Admits `transaction`, whose signer's last committed nonce is
    /// `committed_nonce`, at `now`, for a client of `submitter` (`None`: a
    /// peer forwarded it), within that department's share of the mempool.
    pub fn insert_from(
        &mut self,
        transaction: VerifiedTransaction,
        committed_nonce: u64,
        submitter: Option<&str>,
        now: Instant,
    ) -> Result<(), MempoolError> {
        let nonce = transaction.nonce;
        if nonce <= committed_nonce {
            return Err(TransactionError::StaleNonce {
                signer: transaction.signer.to_hex(),
                got: nonce,
                committed: committed_nonce,
            }
            .into());
        }
        if nonce > committed_nonce.saturating_add(NONCE_AHEAD_MAX) {
            let error = TransactionError::NonceTooFarAhead {
                signer: transaction.signer.to_hex(),
                got: nonce,
                committed: committed_nonce,
                max_ahead: NONCE_AHEAD_MAX,
            };
            return Err(error.into());
        }
        if self.by_id.contains_key(&transaction.id) {
            return Err(TransactionError::Duplicate {
                id: transaction.id,
                state: "pending",
            }
            .into());
        }
        if self
            .by_signer
            .get(transaction.signer.as_bytes())
            .is_some_and(|pending| pending.nonces.contains_key(&nonce))
        {
            let signer = transaction.signer.to_hex();
            return Err(TransactionError::NonceTaken { signer, nonce }.into());
        }
        let size = transaction.encoded_len as u64;
        if self.len() >= self.transactions_max || self.bytes + size > self.bytes_max {
            return Err(MempoolError::Full {
                transactions: self.len(),
                bytes: self.bytes,
                transactions_max: self.transactions_max,
                bytes_max: self.bytes_max,
            });
        }
        if let Some(department) = submitter {
            let held = self.department_len(department);
            if held >= self.transactions_max / DEPARTMENT_SHARE_DIVISOR {
                return Err(MempoolError::DepartmentShare {
                    department: department.to_owned(),
                    held,
                    transactions_max: self.transactions_max,
                });
            }
            let department: Arc<str> = department.into();
            *self.by_department.entry(department.clone()).or_default() += 1;
            self.submitters.insert(transaction.id, department);
        }
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        self.bytes += size;
        self.by_arrival.insert(arrival, transaction.id);
        let pending = self
            .by_signer
            .entry(*transaction.signer.as_bytes())
            .or_insert_with(|| Pending::new(committed_nonce));
        let ready_before = pending.ready;
        pending.nonces.insert(nonce, transaction.id);
        pending.advance(committed_nonce);
        self.ready = self.ready - ready_before + pending.ready;
        // Admitted again after it was dropped: it is pending, not dropped.
        self.dropped.remove(&transaction.id);
        self.by_id
            .insert(transaction.id, (arrival, now, transaction));
        Ok(())
    }

    /// Drops every transaction that has waited behind a nonce gap longer
    /// than the parked time to live at `now`; returns their ids. A
    /// transaction the signer's next nonces lead up to (ready) never
    /// expires: it is what the next block takes.
    pub fn expire_parked(&mut self, now: Instant) -> Vec<Digest> {
        let mut expired = Vec::new();
        // Arrival order is admission-time order: stop at the first that is
        // young enough.
        for id in self.by_arrival.values() {
            let Some((_, admitted, transaction)) = self.by_id.get(id) else {
                continue;
            };
            if now.saturating_duration_since(*admitted) < self.parked_ttl {
                break;
            }
            // The first nonce missing before it, when it is parked.
            let missing = self
                .by_signer
                .get(transaction.signer.as_bytes())
                .map(|p| p.committed + p.ready + 1)
                .filter(|missing| transaction.nonce > *missing);
            if let Some(missing) = missing {
                expired.push((*id, missing));
            }
        }
        let ttl = self.parked_ttl.as_secs_f64();
        for (id, missing) in &expired {
            let Some((arrival, _, transaction)) = self.by_id.remove(id) else {
                continue;
            };
            self.by_arrival.remove(&arrival);
            self.bytes -= transaction.encoded_len as u64;
            self.forget_submitter(id);
            let signer = transaction.signer.as_bytes();
            if let Some(pending) = self.by_signer.get_mut(signer) {
                pending.nonces.remove(&transaction.nonce);
                if pending.nonces.is_empty() {
                    self.by_signer.remove(signer);
                }
            }
            let reason = format!(
                "waited {ttl:.0} s (mempool.parked_ttl_ms) behind a nonce gap: nonce {} of the signer never arrived, so nonce {} could not commit; submit the missing nonces, then this same envelope again (do not sign its payload anew under another nonce: another validator may still hold this one, and both would commit)",
                missing, transaction.nonce
            );
            self.remember_dropped(*id, reason.into());
        }
        expired.into_iter().map(|(id, _)| id).collect()
    }

    fn remember_dropped(&mut self, id: Digest, reason: Arc<str>) {
        if self.dropped.insert(id, reason).is_none() {
            self.dropped_order.push_back(id);
        }
        while self.dropped_order.len() > DROPPED_REMEMBERED_MAX {
            if let Some(old) = self.dropped_order.pop_front() {
                self.dropped.remove(&old);
            }
        }
    }

    /// Transactions in arrival order, for the block builder.
    pub fn candidates(&self) -> impl Iterator<Item = &VerifiedTransaction> {
        self.by_arrival
            .values()
            .filter_map(|id| self.by_id.get(id).map(|(_, _, t)| t))
    }

    /// Removes everything a committed block made obsolete: its transactions
    /// and any other transaction of its signers whose nonce is now used.
    pub fn remove_committed(&mut self, committed: &[(PublicKey, u64)]) {
        for (signer, nonce) in committed {
            let Some(pending) = self.by_signer.get_mut(signer.as_bytes()) else {
                continue;
            };
            let ready_before = pending.ready;
            let kept = pending.nonces.split_off(&nonce.saturating_add(1));
            let stale = std::mem::replace(&mut pending.nonces, kept);
            pending.advance(*nonce);
            self.ready = self.ready - ready_before + pending.ready;
            if pending.nonces.is_empty() {
                assert_eq!(pending.ready, 0, "no nonce pending, none ready");
                self.by_signer.remove(signer.as_bytes());
            }
            for id in stale.into_values() {
                if let Some((arrival, _, transaction)) = self.by_id.remove(&id) {
                    self.by_arrival.remove(&arrival);
                    self.bytes -= transaction.encoded_len as u64;
                }
                self.forget_submitter(&id);
            }
        }
    }
}

impl Mempool {
    fn forget_submitter(&mut self, id: &Digest) {
        let Some(department) = self.submitters.remove(id) else {
            return;
        };
        if let Some(held) = self.by_department.get_mut(&department) {
            *held -= 1;
            if *held == 0 {
                self.by_department.remove(&department);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    pub(crate) use super::tests::transaction;
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use govchain_crypto::SigningKey;
    use govchain_proto::types::v1::{
        AnchorRecord, Transaction, TransactionEnvelope, transaction::Body,
    };
    use prost::Message as _;

    use super::*;

    pub(crate) fn transaction(seed: u8, nonce: u64) -> VerifiedTransaction {
        let key = SigningKey::from_seed([seed; 32]);
        let body = Body::AnchorRecord(AnchorRecord {
            dataset: "d".into(),
            record_id: format!("r{nonce}"),
            record_hash: vec![0; 32],
            ..Default::default()
        });
        let payload = Bytes::from(Transaction { body: Some(body) }.encode_to_vec());
        let id = govchain_exec::transaction_id("c", key.public_key().as_bytes(), nonce, &payload);
        let envelope = TransactionEnvelope {
            payload,
            signer: key.public_key().as_bytes().to_vec(),
            signature: key.sign(id.as_bytes()).to_vec(),
            chain_id: "c".into(),
            nonce,
        };
        govchain_exec::check_envelope(envelope, "c", 1024, |_, _| false).expect("valid")
    }

    #[test]
    fn duplicates_stale_and_taken_nonces_are_refused() {
        let mut pool = Mempool::new(10, 1 << 20, PARKED_TTL_DEFAULT);
        pool.insert(transaction(1, 1), 0).expect("admitted");
        assert!(matches!(
            pool.insert(transaction(1, 1), 0),
            Err(MempoolError::Transaction(
                TransactionError::Duplicate { .. }
            ))
        ));
        assert!(matches!(
            pool.insert(transaction(1, 3), 3),
            Err(MempoolError::Transaction(TransactionError::StaleNonce {
                got: 3,
                committed: 3,
                ..
            }))
        ));
        assert!(matches!(
            pool.insert(transaction(1, 5000), 0),
            Err(MempoolError::Transaction(
                TransactionError::NonceTooFarAhead { .. }
            ))
        ));
        let mut other = transaction(1, 1);
        other.id = Digest::sha256(b"different transaction, same nonce");
        assert!(matches!(
            pool.insert(other, 0),
            Err(MempoolError::Transaction(TransactionError::NonceTaken {
                nonce: 1,
                ..
            }))
        ));
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn only_an_identical_envelope_is_found_as_admitted() {
        let mut pool = Mempool::new(10, 1 << 20, PARKED_TTL_DEFAULT);
        let t = transaction(1, 1);
        pool.insert(t.clone(), 0).expect("admitted");
        let found = pool.admitted(&t.envelope).expect("same envelope");
        assert_eq!(found.id, t.id);
        let mut other_signature = t.envelope.clone();
        other_signature.signature = transaction(2, 1).envelope.signature;
        assert!(pool.admitted(&other_signature).is_none());
        let mut other_payload = t.envelope.clone();
        other_payload.payload = transaction(1, 2).envelope.payload;
        assert!(pool.admitted(&other_payload).is_none());
        let mut other_chain = t.envelope.clone();
        other_chain.chain_id = "d".into();
        assert!(pool.admitted(&other_chain).is_none());
        let mut short_key = t.envelope.clone();
        short_key.signer.pop();
        assert!(pool.admitted(&short_key).is_none());
        assert!(pool.admitted(&transaction(1, 2).envelope).is_none());
    }

    #[test]
    fn limits_hold() {
        let mut pool = Mempool::new(2, 1 << 20, PARKED_TTL_DEFAULT);
        pool.insert(transaction(1, 1), 0).expect("admitted");
        pool.insert(transaction(2, 1), 0).expect("admitted");
        assert!(matches!(
            pool.insert(transaction(3, 1), 0),
            Err(MempoolError::Full {
                transactions: 2,
                ..
            })
        ));
        let size = transaction(1, 1).encoded_len as u64;
        let mut small = Mempool::new(100, size * 2 - 1, PARKED_TTL_DEFAULT);
        small.insert(transaction(1, 1), 0).expect("admitted");
        assert!(matches!(
            small.insert(transaction(2, 1), 0),
            Err(MempoolError::Full { .. })
        ));
        assert_eq!(small.bytes(), size);
    }

    #[test]
    fn commit_removes_used_nonces_and_keeps_order() {
        let mut pool = Mempool::new(10, 1 << 20, PARKED_TTL_DEFAULT);
        for (seed, nonce) in [(1, 1), (2, 1), (1, 2), (1, 3)] {
            pool.insert(transaction(seed, nonce), 0).expect("admitted");
        }
        let signer = SigningKey::from_seed([1; 32]).public_key();
        pool.remove_committed(&[(signer, 2)]);
        let left: Vec<u64> = pool.candidates().map(|t| t.nonce).collect();
        assert_eq!(left, vec![1, 3]);
        assert_eq!(
            pool.ready_len(),
            2,
            "signer 2's nonce 1 and signer 1's nonce 3"
        );
        assert_eq!(
            pool.account(&signer, 2),
            PendingAccount {
                highest: 3,
                next: 4,
                parked: 0
            }
        );
        assert_eq!(
            pool.bytes(),
            pool.candidates().map(|t| t.encoded_len as u64).sum::<u64>()
        );
    }
}

#[cfg(test)]
mod ready_tests {
    use super::tests_support::transaction;
    use super::*;

    #[test]
    fn a_nonce_gap_is_not_ready() {
        let mut pool = Mempool::new(10, 1 << 20, PARKED_TTL_DEFAULT);
        pool.insert(transaction(1, 2), 0).expect("admitted");
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.ready_len(), 0, "nonce 2 waits for nonce 1");
        pool.insert(transaction(1, 1), 0).expect("admitted");
        assert_eq!(pool.ready_len(), 2);
    }

    #[test]
    fn the_account_shows_the_next_usable_nonce_and_the_gap() {
        let mut pool = Mempool::new(10, 1 << 20, PARKED_TTL_DEFAULT);
        let signer = transaction(1, 1).signer;
        let empty = pool.account(&signer, 4);
        assert_eq!((empty.highest, empty.next, empty.parked), (4, 5, 0));
        for nonce in [1, 2, 5, 1000] {
            pool.insert(transaction(1, nonce), 0).expect("admitted");
        }
        let account = pool.account(&signer, 0);
        assert_eq!(
            (account.highest, account.next, account.parked),
            (1000, 3, 2),
            "nonces 1 and 2 can commit; 5 and 1000 wait behind the gap at 3"
        );
        // The ledger moved on before the driver removed the block.
        assert_eq!(pool.account(&signer, 2).next, 3);
    }

    #[test]
    fn parked_transactions_expire_and_are_remembered_as_dropped() {
        let ttl = Duration::from_secs(10);
        let mut pool = Mempool::new(10, 1 << 20, ttl);
        let start = Instant::now();
        let ready = transaction(1, 1);
        let parked = transaction(1, 3);
        let later = transaction(2, 2);
        pool.insert_from(ready.clone(), 0, Some("tax"), start)
            .expect("admitted");
        pool.insert_from(parked.clone(), 0, Some("tax"), start)
            .expect("admitted");
        pool.insert_from(later.clone(), 0, None, start + ttl / 2)
            .expect("admitted");
        assert!(pool.expire_parked(start + ttl / 2).is_empty(), "young");
        assert_eq!(pool.expire_parked(start + ttl), vec![parked.id]);
        assert_eq!(pool.len(), 2);
        assert!(pool.get(&ready.id).is_some(), "a ready one never expires");
        assert_eq!(pool.department_len("tax"), 1, "its share is given back");
        assert_eq!(pool.bytes(), (ready.encoded_len + later.encoded_len) as u64);
        let reason = pool.dropped(&parked.id).expect("remembered");
        assert!(
            reason.contains("nonce 2 of the signer never arrived"),
            "{reason}"
        );
        assert!(pool.dropped(&ready.id).is_none());
        assert_eq!(pool.account(&parked.signer, 0).parked, 0);
        // Signer 2 waits for nonce 1 but is still young; then expires.
        assert!(pool.expire_parked(start + ttl).is_empty());
        assert_eq!(pool.expire_parked(start + ttl * 2), vec![later.id]);
        assert_eq!(pool.account(&later.signer, 0).highest, 0, "nothing left");
        // Admitted again, it is pending, no longer dropped.
        pool.insert(parked.clone(), 0).expect("admitted again");
        assert!(pool.dropped(&parked.id).is_none());
    }

    #[test]
    fn the_dropped_memory_is_bounded() {
        let mut pool = Mempool::new(10, 1 << 20, PARKED_TTL_DEFAULT);
        for i in 0..DROPPED_REMEMBERED_MAX + 5 {
            let mut id = [0; 32];
            id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            pool.remember_dropped(Digest::from_bytes(id), "gone".into());
        }
        assert_eq!(pool.dropped.len(), DROPPED_REMEMBERED_MAX);
        assert_eq!(pool.dropped_order.len(), DROPPED_REMEMBERED_MAX);
        assert!(
            pool.dropped(&Digest::from_bytes([0; 32])).is_none(),
            "the oldest went first"
        );
    }
}

#[cfg(test)]
mod ready_count_tests {
    use govchain_crypto::SigningKey;

    use super::tests_support::transaction;
    use super::*;

    /// The ready count from scratch, as `ready_len` defines it.
    fn recount(pool: &Mempool) -> u64 {
        pool.by_signer
            .values()
            .map(|pending| {
                let first = pending.committed + 1;
                let run = pending
                    .nonces
                    .range(first..)
                    .zip(first..)
                    .take_while(|((nonce, _), expected)| **nonce == *expected)
                    .count();
                run as u64
            })
            .sum()
    }

    /// Random inserts (gaps, duplicates, nonces already used) and commits
    /// (some seen by admission before the mempool hears of them), checking
    /// the kept count against a fresh one after each.
    #[test]
    fn ready_count_follows_inserts_and_commits() {
        const SIGNERS: u64 = 4;
        let mut pool = Mempool::new(10_000, 1 << 30, PARKED_TTL_DEFAULT);
        let mut committed = [0_u64; SIGNERS as usize];
        let mut state = 0x2545_F491_4F6C_DD1D_u64;
        for _ in 0..3_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let signer_index = (state % SIGNERS) as usize;
            let seed = signer_index as u8 + 1;
            let step = (state >> 8) % 6;
            if (state >> 16).is_multiple_of(5) {
                let nonce = committed[signer_index] + 1 + step % 3;
                committed[signer_index] = nonce;
                // Sometimes admission reads the new nonce from the ledger
                // before the driver tells the mempool.
                if !(state >> 24).is_multiple_of(4) {
                    let signer = SigningKey::from_seed([seed; 32]).public_key();
                    pool.remove_committed(&[(signer, nonce)]);
                }
            } else {
                let nonce = committed[signer_index] + 1 + step;
                let _ = pool.insert(transaction(seed, nonce), committed[signer_index]);
            }
            assert_eq!(pool.ready_len(), recount(&pool));
        }
        assert!(pool.len() > 0, "the run kept some transactions pending");
    }

    #[test]
    fn a_department_gets_a_quarter_and_commits_give_it_back() {
        let mut pool = Mempool::new(8, 1 << 20, PARKED_TTL_DEFAULT);
        for seed in 1..=2 {
            pool.insert_from(transaction(seed, 1), 0, Some("tax"), Instant::now())
                .expect("within the share");
        }
        let refused = pool.insert_from(transaction(3, 1), 0, Some("tax"), Instant::now());
        assert!(
            matches!(
                refused,
                Err(MempoolError::DepartmentShare { ref department, held: 2, transactions_max: 8 })
                    if department == "tax"
            ),
            "{refused:?}"
        );
        // Other departments, and forwarded transactions, are not affected.
        pool.insert_from(transaction(3, 1), 0, Some("health"), Instant::now())
            .expect("health's own share");
        pool.insert_from(transaction(4, 1), 0, None, Instant::now())
            .expect("forwarded");
        assert_eq!(pool.len(), 4);
        let signer = transaction(1, 1).signer;
        pool.remove_committed(&[(signer, 1)]);
        assert_eq!(pool.department_len("tax"), 1);
        pool.insert_from(transaction(5, 1), 0, Some("tax"), Instant::now())
            .expect("a place came back");
    }
}
