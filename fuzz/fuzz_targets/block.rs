//! Blocks as a backup receives them in a pre-prepare: decoding, the header,
//! the block hash and digest, and `check_block` against an empty state
//! must never panic. The first byte chooses the input's shape: raw block
//! bytes, or anchor transactions from which the primary's `build_block`
//! makes a block, which `check_block` must then accept exactly as built
//! (and, with one byte changed, must still not panic on).
#![no_main]

use std::sync::Arc;

use bytes::Bytes;
use govchain_crypto::{Digest, SigningKey};
use govchain_exec::{
    BlockLimits, CheckContext, Departments, Head, StateError, StateRead, TreeRead,
    VerifiedTransaction, block_digest, block_hash, build_block, check_block, check_envelope,
    decode_header, transaction_id,
};
use govchain_fuzz::{CHAIN_ID, VALIDATOR_COUNT, validator_key};
use govchain_proto::types::v1::{
    AnchorRecord, Block, Transaction, TransactionEnvelope, transaction,
};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

const TRANSACTIONS_MAX: u32 = 16;
const PAYLOAD_BYTES_MAX: u32 = 64 * 1024;

/// World state before the first block: nothing.
struct EmptyState;

impl StateRead for EmptyState {
    fn get(&self, _key: &[u8]) -> std::result::Result<Option<Vec<u8>>, StateError> {
        Ok(None)
    }
}

/// The empty state's Merkle tree has no node.
impl TreeRead for EmptyState {
    fn tree_node(&self, _path: &[u8]) -> std::result::Result<Option<Vec<u8>>, StateError> {
        Ok(None)
    }
}

fn genesis_head() -> Head {
    Head {
        height: 0,
        hash: Digest::sha256(b"fuzz genesis"),
        state_root: Digest::sha256(b"fuzz empty state"),
        timestamp_ms: 1_000,
    }
}

fn limits() -> BlockLimits {
    BlockLimits {
        transactions_max: TRANSACTIONS_MAX,
        bytes_max: 1024 * 1024,
        payload_bytes_max: PAYLOAD_BYTES_MAX,
        // The proposer is checked against the set in force: genesis's.
        genesis_departments: Arc::new(
            Departments::default().with_genesis_validators(
                (0..VALIDATOR_COUNT)
                    .map(|i| (format!("validator{i}"), validator_key(i).public_key()))
                    .collect(),
            ),
        ),
    }
}

fn check(encoded: &[u8], digest: &Digest) -> Option<govchain_exec::CheckedBlock> {
    let head = genesis_head();
    let limits = limits();
    let context = CheckContext {
        chain_id: CHAIN_ID,
        head: &head,
        limits: &limits,
        timestamp_ms_max: u64::MAX,
    };
    let checked = check_block(&context, digest, encoded, &EmptyState, |_, _| false);
    let trusted = check_block(&context, digest, encoded, &EmptyState, |_, _| true);
    // Trusting the signatures can only turn a refusal into acceptance.
    assert!(trusted.is_ok() || checked.is_err());
    let checked = checked.ok()?;
    assert_eq!(checked.hash, *digest);
    assert_eq!(block_digest(encoded), Some(checked.hash));
    assert_eq!(checked.header.height, head.height + 1);
    Some(checked)
}

fn raw(data: &[u8]) {
    let digest = match Block::decode(data) {
        Ok(block) => {
            let hash = block_hash(&block.header);
            if let Ok(header) = decode_header(&block) {
                assert_eq!(block_hash(&block.header), hash);
                let _ = header.encode_to_vec();
            }
            hash
        }
        Err(_) => Digest::sha256(data),
    };
    let _ = block_digest(data);
    check(data, &digest);
}

fn anchor(u: &mut Unstructured, nonces: &mut [u64; 3]) -> Result<TransactionEnvelope> {
    let signer: usize = u.int_in_range(0..=2)?;
    // Mostly the next nonce; sometimes a repeat or a gap.
    let nonce = match u.int_in_range(0..=7)? {
        0 => nonces[signer],
        1 => nonces[signer] + 2,
        _ => nonces[signer] + 1,
    };
    nonces[signer] = nonces[signer].max(nonce);
    let body = AnchorRecord {
        dataset: u.arbitrary()?,
        record_id: u.arbitrary()?,
        record_hash: u.bytes(32)?.to_vec(),
        schema: u.arbitrary()?,
        record_time_ms: u.arbitrary()?,
    };
    let payload = Transaction {
        body: Some(transaction::Body::AnchorRecord(body)),
    }
    .encode_to_vec();
    let key = SigningKey::from_seed([u8::try_from(signer).unwrap_or(0) + 10; 32]);
    let id = transaction_id(CHAIN_ID, key.public_key().as_bytes(), nonce, &payload);
    Ok(TransactionEnvelope {
        payload: Bytes::from(payload),
        signer: key.public_key().as_bytes().to_vec(),
        signature: key.sign(id.as_bytes()).to_vec(),
        chain_id: CHAIN_ID.into(),
        nonce,
    })
}

fn built(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let mut nonces = [0u64; 3];
    let mut candidates: Vec<VerifiedTransaction> = Vec::new();
    for _ in 0..u.int_in_range(0..=TRANSACTIONS_MAX)? {
        let envelope = anchor(&mut u, &mut nonces)?;
        if let Ok(transaction) =
            check_envelope(envelope, CHAIN_ID, PAYLOAD_BYTES_MAX as usize, |_, _| false)
        {
            candidates.push(transaction);
        }
    }
    let view: u64 = u.int_in_range(0..=9)?;
    let proposer = u32::try_from(view % u64::from(VALIDATOR_COUNT)).unwrap_or(0);
    let timestamp_ms: u64 = u.arbitrary()?;
    let head = genesis_head();
    let Ok(block) = build_block(
        CHAIN_ID,
        &head,
        view,
        proposer,
        timestamp_ms,
        &candidates,
        &limits(),
        &EmptyState,
    ) else {
        panic!("an empty state never fails to read");
    };
    // What the primary builds, a backup accepts, with the same execution.
    let checked = check(&block.encoded, &block.hash).expect("a built block checks");
    assert_eq!(checked.executed, block.executed);
    assert_eq!(checked.header, block.header);
    // One byte changed: any verdict, but no panic.
    if !block.encoded.is_empty() {
        let position = u.choose_index(block.encoded.len())?;
        let mut changed = block.encoded.to_vec();
        changed[position] ^= u.arbitrary::<u8>()?.max(1);
        let _ = check(&changed, &block.hash);
        let _ = check(&changed, &Digest::sha256(&changed));
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    if shape % 2 == 0 {
        raw(rest);
    } else {
        let _ = built(rest);
    }
});
