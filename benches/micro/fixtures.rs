//! Inputs shared by the benchmarks: signed transactions, in-memory state,
//! and whether this is a real measurement or `cargo test`'s single pass.

use std::collections::BTreeMap;

use bytes::Bytes;
use govchain_crypto::{Digest, SigningKey};
use govchain_exec::{
    BlockLimits, Head, MemoryTree, StateError, StateRead, TreeRead, VerifiedTransaction,
    check_envelope, transaction_id,
};
use govchain_proto::types::v1::{
    AnchorRecord, Transaction, TransactionEnvelope, transaction::Body,
};
use prost::Message as _;

pub const CHAIN: &str = "govchain-bench";
/// Distinct signers in a block; each signs several transactions in nonce
/// order, as clients of a busy department would.
pub const SIGNERS: u64 = 64;
pub const PAYLOAD_BYTES_MAX: usize = 64 * 1024;

/// Block limits with no departments (the benchmarks anchor records) and
/// four genesis validators (a block's proposer is checked against them).
pub static LIMITS: std::sync::LazyLock<BlockLimits> = std::sync::LazyLock::new(|| BlockLimits {
    transactions_max: 10_000,
    bytes_max: 16 * 1024 * 1024,
    payload_bytes_max: PAYLOAD_BYTES_MAX as u32,
    genesis_departments: std::sync::Arc::new(
        govchain_exec::Departments::default().with_genesis_validators(
            (0..4u8)
                .map(|i| {
                    let key = govchain_crypto::SigningKey::from_seed([0xB0 + i; 32]);
                    (format!("node{i}"), key.public_key())
                })
                .collect(),
        ),
    ),
});

/// `cargo bench` passes `--bench`; `cargo test --all-targets` does not, and
/// criterion then runs each benchmark once. Large inputs are only built for
/// a real measurement, so that the test pass stays at a few seconds.
pub fn measuring() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

pub fn signer(index: u64) -> SigningKey {
    let mut seed = [0_u8; 32];
    seed[..8].copy_from_slice(&index.to_be_bytes());
    seed[31] = 1;
    SigningKey::from_seed(seed)
}

/// An anchor transaction of the size a department client sends (~250
/// bytes), signed by `key` with `nonce`.
pub fn envelope(key: &SigningKey, nonce: u64) -> TransactionEnvelope {
    let record_id = format!("record-{}-{nonce}", key.public_key().to_hex());
    let body = Body::AnchorRecord(AnchorRecord {
        dataset: "health/vaccinations".into(),
        record_hash: Digest::sha256(record_id.as_bytes()).to_vec(),
        record_id,
        schema: "fhir-r4/Immunization".into(),
        record_time_ms: 1_764_000_000_000 + nonce,
    });
    let payload = Bytes::from(Transaction { body: Some(body) }.encode_to_vec());
    let public = key.public_key();
    let id = transaction_id(CHAIN, public.as_bytes(), nonce, &payload);
    TransactionEnvelope {
        payload,
        signer: public.as_bytes().to_vec(),
        signature: key.sign(id.as_bytes()).to_vec(),
        chain_id: CHAIN.into(),
        nonce,
    }
}

/// `count` checked transactions in an order a block can take them: every
/// signer's nonces ascending.
pub fn transactions(count: u64) -> Vec<VerifiedTransaction> {
    let keys: Vec<SigningKey> = (0..SIGNERS.min(count)).map(signer).collect();
    (0..count)
        .map(|i| {
            let key = &keys[(i % SIGNERS) as usize];
            let nonce = i / SIGNERS + 1;
            check_envelope(envelope(key, nonce), CHAIN, PAYLOAD_BYTES_MAX, |_, _| false)
                .expect("a freshly signed transaction checks")
        })
        .collect()
}

pub fn genesis() -> Head {
    Head {
        height: 0,
        hash: Digest::sha256(b"bench genesis"),
        state_root: Digest::default(),
        timestamp_ms: 0,
    }
}

/// World state and its tree in memory: the benchmarks measure execution,
/// not reads.
#[derive(Default)]
pub struct MemoryState(pub BTreeMap<Vec<u8>, Vec<u8>>, pub MemoryTree);

impl StateRead for MemoryState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.0.get(key).cloned())
    }
}

impl TreeRead for MemoryState {
    fn tree_node(&self, path: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.1.tree_node(path)
    }
}
