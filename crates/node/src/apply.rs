//! From an executed block to the ledger's [`AppendBlock`], for the driver
//! and for [`replay_log`]: what the ledger stores with a block (its
//! encoding with results and certificate, the transaction index rows and
//! the query index keys) is built in one place.
//!
//! [`replay_log`] runs once at start, before anything reads the ledger:
//! after a crash, the ledger's index is at its last checkpoint
//! (`govchain_ledger::CHECKPOINT_BLOCKS`) while its block log holds every
//! committed block. Each logged block above the index is executed again
//! against the state, must reproduce its header's state root, and is
//! appended (the ledger does not log it twice).

use anyhow::{Context as _, bail};
use govchain_crypto::Digest;
use govchain_exec::governance::DEPARTMENTS_KEY;
use govchain_exec::{BlockError, CheckContext, ExecutedBlock, check_block};
use govchain_ledger::{AppendBlock, Ledger};
use govchain_pki::Genesis;
use govchain_proto::types::v1::{Block, BlockHeader, CommitCertificate, CommittedBlock};
use prost::Message as _;

use crate::chain_state::{self, HeadState, InForce};

/// The owned parts of an append; [`Appendable::append_block`] borrows them.
pub struct Appendable {
    /// What subscribers are sent once the block is appended.
    pub committed: CommittedBlock,
    pub encoded: Vec<u8>,
    /// `(id, encoded result)` in block order.
    pub transactions: Vec<(Digest, Vec<u8>)>,
    pub query_keys: Vec<Vec<u8>>,
}

impl Appendable {
    /// Encodes `block` as the ledger keeps it: a [`CommittedBlock`] with
    /// its certificate and results.
    pub fn new(
        digest: Digest,
        header: &BlockHeader,
        block: Block,
        certificate: CommitCertificate,
        executed: &ExecutedBlock,
        departments: &govchain_exec::Departments,
    ) -> Self {
        let committed = CommittedBlock {
            block_hash: digest.to_vec(),
            header: Some(header.clone()),
            block: Some(block),
            certificate: Some(certificate),
            results: executed
                .transactions
                .iter()
                .map(|(_, r)| r.clone())
                .collect(),
        };
        let query_keys = crate::query_index::keys(&committed, departments);
        let transactions = executed
            .transactions
            .iter()
            .map(|(id, r)| (*id, r.encode_to_vec()))
            .collect();
        Self {
            encoded: committed.encode_to_vec(),
            committed,
            transactions,
            query_keys,
        }
    }

    pub fn append_block<'a>(
        &'a self,
        digest: Digest,
        header: &BlockHeader,
        executed: &'a ExecutedBlock,
    ) -> AppendBlock<'a> {
        AppendBlock {
            height: header.height,
            hash: digest,
            parent_hash: Digest::from_slice(&header.parent_hash)
                .expect("a checked header has a 32-byte parent"),
            state_root: executed.state_root,
            timestamp_ms: header.timestamp_ms,
            encoded: &self.encoded,
            transactions: &self.transactions,
            writes: &executed.writes,
            tree_writes: &executed.tree_writes,
            query_keys: &self.query_keys,
        }
    }
}

/// Re-applies the logged blocks above the ledger's head; returns how many.
/// Signatures are not verified again: each block was checked in full
/// before it was logged, and the log checksums every record.
pub fn replay_log(ledger: &Ledger, genesis: &Genesis) -> anyhow::Result<u64> {
    let start = ledger.head().height;
    let last = ledger.log_head();
    if last <= start {
        return Ok(0);
    }
    let departments = InForce::new(std::sync::Arc::new(chain_state::departments(genesis)));
    departments.refresh(ledger)?;
    let limits = chain_state::block_limits(genesis);
    for height in start + 1..=last {
        let encoded = ledger
            .logged_block(height)?
            .with_context(|| format!("block {height} is missing from the block log"))?;
        let committed = CommittedBlock::decode(encoded.as_slice())
            .with_context(|| format!("logged block {height} does not decode"))?;
        let (Some(block), Some(certificate)) = (committed.block, committed.certificate) else {
            bail!("logged block {height} has no body or no certificate");
        };
        let digest = govchain_exec::block_hash(&block.header);
        let head = ledger.head();
        let head = govchain_exec::Head {
            height: head.height,
            hash: head.hash,
            state_root: head.state_root,
            timestamp_ms: head.timestamp_ms,
        };
        let context = CheckContext {
            chain_id: &genesis.chain_id,
            head: &head,
            limits: &limits,
            timestamp_ms_max: u64::MAX,
        };
        let checked = HeadState::at(ledger, head.height, &head.hash)
            .map_err(BlockError::from)
            .and_then(|state| {
                check_block(&context, &digest, &block.encode_to_vec(), &state, |_, _| {
                    true
                })
            })
            .with_context(|| format!("logged block {height} does not execute against the state"))?;
        let appendable = Appendable::new(
            digest,
            &checked.header,
            checked.block,
            certificate,
            &checked.executed,
            &departments.get(),
        );
        ledger
            .append(&appendable.append_block(digest, &checked.header, &checked.executed))
            .with_context(|| format!("re-applying logged block {height}"))?;
        if checked.executed.writes.contains_key(DEPARTMENTS_KEY) {
            departments.refresh(ledger)?;
        }
    }
    Ok(last - start)
}
