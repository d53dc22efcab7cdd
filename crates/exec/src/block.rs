//! Building a block as primary and checking one as backup.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use govchain_crypto::{Digest, DomainHasher, merkle_root, verify_each};
use govchain_proto::types::v1::{Block, BlockHeader, TransactionEnvelope, TransactionResult};
use prost::Message as _;

use crate::execute::{Overlay, execute};
use crate::governance;
use crate::identity::{Context, Departments};
use crate::state::{StateError, StateRead, read_nonce};
use crate::state_tree::{TreeRead, update_tree};
use crate::transaction::{TransactionError, VerifiedTransaction, check_envelope};

/// The latest committed block, as far as building on it is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub height: u64,
    pub hash: Digest,
    pub state_root: Digest,
    pub timestamp_ms: u64,
}

/// Limits and rules from genesis.
#[derive(Clone, Debug)]
pub struct BlockLimits {
    pub transactions_max: u32,
    pub bytes_max: u32,
    pub payload_bytes_max: u32,
    /// The departments as genesis lists them, their signing keys and
    /// attestation roles. Governance may have changed them since: the ones
    /// in force for a block are `governance::departments_in_force`.
    pub genesis_departments: Arc<Departments>,
}

/// The result of executing a block's transactions on the head state.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutedBlock {
    /// Transaction ids and results, in block order.
    pub transactions: Vec<(Digest, TransactionResult)>,
    /// State changes, sorted by key; `None` deletes.
    pub writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The state tree's node changes for `writes` (see `state_tree`),
    /// stored with the block in the same append.
    pub tree_writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The state tree's root after the block.
    pub state_root: Digest,
}

#[derive(Clone, Debug)]
pub struct BuiltBlock {
    pub hash: Digest,
    pub header: BlockHeader,
    pub encoded: Bytes,
    pub executed: ExecutedBlock,
}

#[derive(Clone, Debug)]
pub struct CheckedBlock {
    pub hash: Digest,
    pub header: BlockHeader,
    pub block: Block,
    pub transactions: Vec<VerifiedTransaction>,
    pub executed: ExecutedBlock,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    #[error("block does not decode: {0}")]
    Malformed(String),
    #[error("block hash is {got}, expected {expected}")]
    WrongHash { expected: Digest, got: Digest },
    #[error("block header field {field} is {got}, expected {expected}")]
    WrongField {
        field: &'static str,
        expected: String,
        got: String,
    },
    #[error("block has {got} {what}, the limit is {max}")]
    OverLimit {
        what: &'static str,
        got: u64,
        max: u64,
    },
    #[error("transaction {index} is invalid: {error}")]
    Transaction {
        index: usize,
        error: TransactionError,
    },
    #[error("transaction {index} has nonce {got}, the signer's next nonce is {expected}")]
    WrongNonce {
        index: usize,
        expected: u64,
        got: u64,
    },
    #[error("timestamp {got} is out of range {min}..={max}")]
    Timestamp { got: u64, min: u64, max: u64 },
    #[error(transparent)]
    State(#[from] StateError),
}

/// The block hash: SHA-256 over a domain tag and the encoded header.
pub fn block_hash(header_bytes: &[u8]) -> Digest {
    DomainHasher::new("govchain/block/v1")
        .bytes(header_bytes)
        .finish()
}

/// The digest that block bytes commit to: the hash of their header, if the
/// bytes decode and the header's transaction root matches the transactions.
/// Binds a block's bytes to a digest without executing it.
pub fn block_digest(encoded: &[u8]) -> Option<Digest> {
    let block = Block::decode(encoded).ok()?;
    let header = decode_header(&block).ok()?;
    let ids: Vec<Digest> = block
        .transactions
        .iter()
        .map(|t| crate::transaction_id(&t.chain_id, &t.signer, t.nonce, &t.payload))
        .collect();
    (merkle_root(&ids).as_bytes().as_slice() == header.transactions_root.as_slice())
        .then(|| block_hash(&block.header))
}

pub fn decode_header(block: &Block) -> Result<BlockHeader, BlockError> {
    BlockHeader::decode(block.header.as_slice())
        .map_err(|err| BlockError::Malformed(format!("header: {err}")))
}

/// Builds the next block from `candidates` (verified transactions in mempool
/// order), taking those whose nonce is next for their signer, up to the
/// limits.
#[allow(clippy::too_many_arguments)]
pub fn build_block<'a, S: StateRead + TreeRead>(
    chain_id: &str,
    head: &Head,
    view: u64,
    proposer_index: u32,
    timestamp_ms: u64,
    candidates: impl IntoIterator<Item = &'a VerifiedTransaction>,
    limits: &BlockLimits,
    state: &S,
) -> Result<BuiltBlock, StateError> {
    let height = head.height + 1;
    let timestamp_ms = timestamp_ms.max(head.timestamp_ms);
    let departments = governance::departments_in_force(state, &limits.genesis_departments)?;
    let context = Context {
        departments: &departments,
        height,
        now_ms: timestamp_ms,
    };
    let mut overlay = Overlay::new(state);
    let mut included = Vec::new();
    let mut results = Vec::new();
    let mut bytes = 0usize;
    for transaction in candidates {
        if included.len() >= limits.transactions_max as usize {
            break;
        }
        if bytes + transaction.encoded_len > limits.bytes_max as usize {
            continue;
        }
        if transaction.nonce != read_nonce(&overlay, &transaction.signer)?.saturating_add(1) {
            continue;
        }
        results.push((
            transaction.id,
            execute(&mut overlay, transaction, &context)?,
        ));
        bytes += transaction.encoded_len;
        included.push(transaction.envelope.clone());
    }
    let next_set = governance::end_block(&mut overlay, &departments, height)?;
    let tree = update_tree(state, &overlay.writes)?;
    let root = tree.root;
    let ids: Vec<Digest> = results.iter().map(|(id, _)| *id).collect();
    let header = BlockHeader {
        chain_id: chain_id.into(),
        height,
        parent_hash: head.hash.to_vec(),
        transactions_root: merkle_root(&ids).to_vec(),
        state_root: root.to_vec(),
        timestamp_ms,
        view,
        proposer_index,
        transaction_count: u32::try_from(included.len()).expect("bounded by transactions_max"),
        next_validators: next_set
            .as_ref()
            .map(governance::header_validators)
            .unwrap_or_default(),
    };
    let header_bytes = header.encode_to_vec();
    let hash = block_hash(&header_bytes);
    let encoded = Bytes::from(
        Block {
            header: header_bytes,
            transactions: included,
        }
        .encode_to_vec(),
    );
    let executed = ExecutedBlock {
        transactions: results,
        writes: overlay.writes,
        tree_writes: tree.writes,
        state_root: root,
    };
    Ok(BuiltBlock {
        hash,
        header,
        encoded,
        executed,
    })
}

/// What a block fetched from a peer proves by itself, before it is
/// executed: its hash (recomputed from the header, never taken from the
/// peer), the header, and that every transaction is well formed, signed by
/// its signer (all signatures verified, in one batch) and listed in the
/// header's transaction root.
///
/// A commit certificate covers the header, and the header the transaction
/// ids, but an id does not cover the signature bytes: this check is what
/// stops a peer from handing a lagging node a certified block whose
/// envelopes carry forged signatures. A block that passes here and is
/// certified can fail execution only if this node's state has diverged.
pub fn check_fetched_block(
    chain_id: &str,
    limits: &BlockLimits,
    block: &Block,
) -> Result<(Digest, BlockHeader), BlockError> {
    let encoded_max = u64::from(limits.bytes_max) + 4096;
    let encoded = block.encoded_len() as u64;
    if encoded > encoded_max {
        return Err(BlockError::OverLimit {
            what: "bytes",
            got: encoded,
            max: encoded_max,
        });
    }
    let header = decode_header(block)?;
    if header.chain_id != chain_id {
        return Err(wrong("chain_id", chain_id, &header.chain_id));
    }
    let count = block.transactions.len();
    if header.transaction_count as usize != count {
        return Err(wrong("transaction_count", count, header.transaction_count));
    }
    if count > limits.transactions_max as usize {
        return Err(BlockError::OverLimit {
            what: "transactions",
            got: count as u64,
            max: limits.transactions_max.into(),
        });
    }
    let payload_max = limits.payload_bytes_max as usize;
    let mut transactions = Vec::with_capacity(count);
    for (index, envelope) in block.transactions.iter().enumerate() {
        let transaction = check_envelope(envelope.clone(), chain_id, payload_max, |_, _| true)
            .map_err(|error| BlockError::Transaction { index, error })?;
        transactions.push(transaction);
    }
    verify_unverified(&transactions, |_, _| false)?;
    let ids: Vec<Digest> = transactions.iter().map(|t| t.id).collect();
    expect_field(
        "transactions_root",
        merkle_root(&ids),
        &header.transactions_root,
    )?;
    Ok((block_hash(&block.header), header))
}

/// What a block is checked against.
pub struct CheckContext<'a> {
    pub chain_id: &'a str,
    pub head: &'a Head,
    pub limits: &'a BlockLimits,
    /// Latest acceptable timestamp (the checker's clock plus allowed drift).
    pub timestamp_ms_max: u64,
}

/// Checks that `encoded` is a valid next block with hash `digest`: header
/// fields, proposer, limits, every transaction, and the state root after
/// executing them. `already_verified` lets signatures checked at admission
/// be skipped.
pub fn check_block<S: StateRead + TreeRead>(
    context: &CheckContext<'_>,
    digest: &Digest,
    encoded: &[u8],
    state: &S,
    already_verified: impl Fn(&Digest, &[u8]) -> bool,
) -> Result<CheckedBlock, BlockError> {
    check_block_reusing(context, digest, encoded, state, |_| None, already_verified)
}

/// [`check_block`], taking from `admitted` the transactions that were
/// admitted earlier with exactly the same envelope: they are not decoded,
/// hashed or verified again (the mempool's copy is the result of doing so).
pub fn check_block_reusing<S: StateRead + TreeRead>(
    context: &CheckContext<'_>,
    digest: &Digest,
    encoded: &[u8],
    state: &S,
    admitted: impl Fn(&TransactionEnvelope) -> Option<VerifiedTransaction>,
    already_verified: impl Fn(&Digest, &[u8]) -> bool,
) -> Result<CheckedBlock, BlockError> {
    // Room for the header and framing on top of the transactions.
    let encoded_max = u64::from(context.limits.bytes_max) + 4096;
    if encoded.len() as u64 > encoded_max {
        return Err(BlockError::OverLimit {
            what: "bytes",
            got: encoded.len() as u64,
            max: encoded_max,
        });
    }
    let block = Block::decode(encoded).map_err(|err| BlockError::Malformed(err.to_string()))?;
    let hash = block_hash(&block.header);
    if hash != *digest {
        return Err(BlockError::WrongHash {
            expected: *digest,
            got: hash,
        });
    }
    let header = decode_header(&block)?;
    let departments = governance::departments_in_force(state, &context.limits.genesis_departments)?;
    let set = governance::current_set(state, &departments)?;
    check_header(
        context,
        &governance::validator_set(&set)?,
        &header,
        block.transactions.len(),
    )?;
    let execution = Context {
        departments: &departments,
        height: header.height,
        now_ms: header.timestamp_ms,
    };
    let mut overlay = Overlay::new(state);
    let mut transactions = Vec::with_capacity(block.transactions.len());
    let mut results = Vec::with_capacity(block.transactions.len());
    let payload_max = context.limits.payload_bytes_max as usize;
    // Form first, then the signatures not checked at admission in one
    // batch (same verdicts as one by one), then execution in order.
    let mut reused = Vec::with_capacity(block.transactions.len());
    for (index, envelope) in block.transactions.iter().enumerate() {
        let transaction = match admitted(envelope) {
            Some(transaction) => {
                reused.push(true);
                transaction
            }
            None => {
                reused.push(false);
                check_envelope(envelope.clone(), context.chain_id, payload_max, |_, _| true)
                    .map_err(|error| BlockError::Transaction { index, error })?
            }
        };
        transactions.push(transaction);
    }
    verify_unverified(&transactions, |index, transaction| {
        reused[index] || already_verified(&transaction.id, &transaction.envelope.signature)
    })?;
    for (index, transaction) in transactions.iter().enumerate() {
        let expected = read_nonce(&overlay, &transaction.signer)?.saturating_add(1);
        if transaction.nonce != expected {
            return Err(BlockError::WrongNonce {
                index,
                expected,
                got: transaction.nonce,
            });
        }
        results.push((
            transaction.id,
            execute(&mut overlay, transaction, &execution)?,
        ));
    }
    let ids: Vec<Digest> = results.iter().map(|(id, _)| *id).collect();
    expect_field(
        "transactions_root",
        merkle_root(&ids),
        &header.transactions_root,
    )?;
    let next_set = governance::end_block(&mut overlay, &departments, header.height)?;
    let expected = next_set
        .as_ref()
        .map(governance::header_validators)
        .unwrap_or_default();
    if header.next_validators != expected {
        return Err(wrong(
            "next_validators",
            format!("{:?}", set_indexes(&expected)),
            format!("{:?}", set_indexes(&header.next_validators)),
        ));
    }
    let tree = update_tree(state, &overlay.writes)?;
    expect_field("state_root", tree.root, &header.state_root)?;
    let executed = ExecutedBlock {
        transactions: results,
        writes: overlay.writes,
        tree_writes: tree.writes,
        state_root: tree.root,
    };
    Ok(CheckedBlock {
        hash,
        header,
        block,
        transactions,
        executed,
    })
}

/// Verifies, as one batch, the signatures `already_verified` does not
/// vouch for; the first bad one (by index) is the block's error.
fn verify_unverified(
    transactions: &[VerifiedTransaction],
    already_verified: impl Fn(usize, &VerifiedTransaction) -> bool,
) -> Result<(), BlockError> {
    let mut indexes = Vec::new();
    let mut messages: Vec<&[u8]> = Vec::new();
    let mut signatures = Vec::new();
    let mut keys = Vec::new();
    for (index, transaction) in transactions.iter().enumerate() {
        if already_verified(index, transaction) {
            continue;
        }
        indexes.push(index);
        messages.push(transaction.id.as_bytes());
        signatures.push(transaction.signature);
        keys.push(transaction.signer);
    }
    let verdicts = verify_each(&messages, &signatures, &keys);
    match indexes.iter().zip(verdicts).find(|(_, good)| !good) {
        Some((&index, _)) => Err(BlockError::Transaction {
            index,
            error: TransactionError::BadSignature {
                signer: transactions[index].signer.to_hex(),
            },
        }),
        None => Ok(()),
    }
}

fn check_header(
    context: &CheckContext<'_>,
    validators: &govchain_pbft::ValidatorSet,
    header: &BlockHeader,
    count: usize,
) -> Result<(), BlockError> {
    let head = context.head;
    if header.chain_id != context.chain_id {
        return Err(wrong("chain_id", context.chain_id, &header.chain_id));
    }
    if header.height != head.height + 1 {
        return Err(wrong("height", head.height + 1, header.height));
    }
    expect_field("parent_hash", head.hash, &header.parent_hash)?;
    // The primary of the view in the set in force for this height.
    let primary = validators.primary(header.view);
    if header.proposer_index != primary {
        return Err(wrong("proposer_index", primary, header.proposer_index));
    }
    if header.transaction_count as usize != count {
        return Err(wrong("transaction_count", count, header.transaction_count));
    }
    let limits = context.limits;
    if count > limits.transactions_max as usize {
        return Err(BlockError::OverLimit {
            what: "transactions",
            got: count as u64,
            max: limits.transactions_max.into(),
        });
    }
    if header.timestamp_ms < head.timestamp_ms || header.timestamp_ms > context.timestamp_ms_max {
        return Err(BlockError::Timestamp {
            got: header.timestamp_ms,
            min: head.timestamp_ms,
            max: context.timestamp_ms_max,
        });
    }
    Ok(())
}

fn expect_field(field: &'static str, expected: Digest, got: &[u8]) -> Result<(), BlockError> {
    if got == expected.as_bytes() {
        return Ok(());
    }
    Err(wrong(field, expected, hex_of(got)))
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The indexes a `next_validators` list names, for error messages.
fn set_indexes(keys: &[govchain_proto::types::v1::ValidatorKey]) -> Vec<u32> {
    keys.iter().map(|key| key.index).collect()
}

fn wrong(field: &'static str, expected: impl ToString, got: impl ToString) -> BlockError {
    BlockError::WrongField {
        field,
        expected: expected.to_string(),
        got: got.to_string(),
    }
}

#[cfg(test)]
mod tests;
