//! A full audit of a ledger on disk: the storage self-check, then every
//! block re-verified from its bytes: hash, parent link, transaction root,
//! and commit certificate against the validators in genesis. A pruned
//! block (`prune_horizon_blocks`) keeps its header and certificate, which
//! are verified; its transactions are gone, so its transaction root is
//! not, and its query keys are the count recorded when it was pruned.

use std::path::Path;

use anyhow::{Context as _, bail};
use govchain_crypto::{Digest, merkle_root};
use govchain_exec::{block_hash, decode_header, transaction_id};
use govchain_ledger::Ledger;
use govchain_pbft::verify_commit_certificate;
use govchain_pki::Genesis;
use govchain_proto::types::v1::CommittedBlock;
use prost::Message as _;
use serde::Serialize;

/// What an audit found; `ok` is false when `error` names the first fault.
#[derive(Debug, Serialize)]
pub struct AuditReport {
    pub ok: bool,
    pub chain_id: String,
    pub height: u64,
    pub head_hash: String,
    pub blocks: u64,
    pub transactions: u64,
    /// Blocks in the block log above the index's last checkpoint (after a
    /// crash): verified like the others (counted in `blocks`), and
    /// re-applied when the node starts.
    pub logged_above_head: u64,
    /// The first block the ledger holds: 1, or the block of the state
    /// snapshot it was installed from.
    pub first_height: u64,
    /// The first block held whole: blocks below it (from `first_height`)
    /// were pruned to their header and certificate, and are not counted in
    /// `transactions`.
    pub bodies_from: u64,
    pub error: Option<String>,
}

/// Opens the ledger in `data_dir` (the node must be stopped: redb allows
/// one process) and audits it. `progress` is called with each height.
pub fn audit_ledger(
    data_dir: &Path,
    genesis: &Genesis,
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<AuditReport> {
    let ledger = Ledger::open(data_dir, &genesis.chain_id, genesis.hash()).with_context(|| {
        format!(
            "cannot open the ledger in {} (is its node still running?)",
            data_dir.display()
        )
    })?;
    let head = ledger.head();
    let mut report = AuditReport {
        ok: false,
        chain_id: genesis.chain_id.clone(),
        height: head.height,
        head_hash: head.hash.to_hex(),
        blocks: 0,
        transactions: 0,
        logged_above_head: 0,
        first_height: 1,
        bodies_from: ledger.bodies_from(),
        error: None,
    };
    let outcome = ledger
        .check()
        .map_err(anyhow::Error::from)
        .and_then(|check| {
            report.logged_above_head = check.logged_above_head;
            audit_blocks(&ledger, genesis, &mut report, &mut progress)
        });
    match outcome {
        Ok(()) => report.ok = true,
        Err(err) => report.error = Some(format!("{err:#}")),
    }
    Ok(report)
}

fn audit_blocks(
    ledger: &Ledger,
    genesis: &Genesis,
    report: &mut AuditReport,
    progress: &mut impl FnMut(u64, u64),
) -> anyhow::Result<()> {
    // The set certifying each block: genesis's, then each one a header
    // announces, from the next block on.
    let mut validators = crate::validator_set(genesis)?;
    let first = ledger.first_height();
    let mut parent = genesis.hash();
    if first > 1 {
        // Installed from a state snapshot: the chain of certificates up to
        // its block was checked then, and is not held. The set in force at
        // the head certifies it only if no change came in between.
        let membership = crate::chain_state::Membership::read(
            ledger,
            &crate::chain_state::departments(genesis),
        )?;
        if membership.record.since_height > first {
            bail!(
                "this ledger starts at block {first} (a state snapshot), and the validator set changed at block {} since: the certificates of blocks {first}..{} cannot be checked offline without the headers before it",
                membership.record.since_height,
                membership.record.since_height - 1
            );
        }
        validators = membership.set;
        let stored = ledger
            .block_or_header(first)?
            .with_context(|| format!("block {first} is missing"))?;
        let committed = CommittedBlock::decode(stored.encoded.as_slice())
            .with_context(|| format!("block {first} does not decode"))?;
        let header = committed.header.context("block without header")?;
        parent = Digest::from_slice(&header.parent_hash)?;
        report.first_height = first;
    }
    // The departments at the head name every block's signers by the keys
    // they used then (`Departments::name_at`).
    let departments = govchain_exec::governance::departments_in_force(
        &crate::chain_state::LedgerState(ledger),
        &std::sync::Arc::new(crate::chain_state::departments(genesis)),
    )?;
    let head = ledger.head();
    // Those of the pruned blocks were counted when they were pruned.
    let mut query_keys = ledger.pruned_query_keys()?;
    // The index's blocks, then those the log holds above its last
    // checkpoint (after a crash): those are verified the same way but
    // derive no query keys yet, as they are not applied.
    let last = ledger.log_head().max(head.height);
    for height in first..=last {
        progress(height, last);
        let indexed = height <= head.height;
        let stored = if indexed {
            ledger.block_or_header(height)?
        } else {
            ledger
                .logged_block(height)?
                .map(|encoded| govchain_ledger::StoredBlock {
                    encoded,
                    pruned: false,
                })
        }
        .with_context(|| format!("block {height} is missing"))?;
        let committed = CommittedBlock::decode(stored.encoded.as_slice())
            .with_context(|| format!("block {height} does not decode"))?;
        let hash = audit_block(
            &genesis.chain_id,
            &validators,
            height,
            &parent,
            &committed,
            stored.pruned,
        )
        .with_context(|| format!("block {height}"))?;
        if let Some(next) = committed
            .header
            .as_ref()
            .and_then(|header| govchain_exec::governance::announced_set(&header.next_validators))
        {
            validators = next
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("block {height}: next_validators"))?;
        }
        if indexed && !stored.pruned {
            query_keys += audit_query_keys(ledger, &committed, &departments)
                .with_context(|| format!("block {height}"))?;
        }
        report.blocks += 1;
        report.transactions += committed.block.map_or(0, |b| b.transactions.len() as u64);
        parent = hash;
        if height == head.height && parent != head.hash {
            bail!(
                "the chain reaches {parent} at height {height}, but the ledger's head is {}",
                head.hash
            );
        }
    }
    let stored = ledger.query_index_len()?;
    if stored != query_keys {
        bail!(
            "the query index holds {stored} keys, but the blocks derive {query_keys}: listings (ListAnchors, ListTransactions) would be wrong; restore from a backup or resync the node"
        );
    }
    Ok(())
}

/// Checks that the query index holds every key `committed` derives (the
/// listings see each of its transactions); returns how many.
fn audit_query_keys(
    ledger: &Ledger,
    committed: &CommittedBlock,
    departments: &govchain_exec::Departments,
) -> anyhow::Result<u64> {
    let keys = crate::query_index::keys(committed, departments);
    for key in &keys {
        let found = ledger.query(key, None, 1)?;
        if found.first() != Some(key) {
            bail!(
                "the query index lacks key {} of this block: its listings would miss it",
                hex::encode(key)
            );
        }
    }
    Ok(keys.len() as u64)
}

fn audit_block(
    chain_id: &str,
    validators: &govchain_pbft::ValidatorSet,
    height: u64,
    parent: &Digest,
    committed: &CommittedBlock,
    pruned: bool,
) -> anyhow::Result<Digest> {
    let block = committed.block.as_ref().context("no block")?;
    let hash = block_hash(&block.header);
    if hash.as_bytes().as_slice() != committed.block_hash.as_slice() {
        bail!(
            "stored hash {} is not the header's hash {hash}",
            hex::encode(&committed.block_hash)
        );
    }
    let header = decode_header(block)?;
    if header.height != height {
        bail!("header says height {}", header.height);
    }
    if header.parent_hash.as_slice() != parent.as_bytes() {
        bail!(
            "parent is {}, expected {parent}",
            hex::encode(&header.parent_hash)
        );
    }
    let ids: Vec<Digest> = block
        .transactions
        .iter()
        .map(|t| transaction_id(&t.chain_id, &t.signer, t.nonce, &t.payload))
        .collect();
    if pruned && !ids.is_empty() {
        bail!("a pruned block holds transactions");
    }
    if !pruned && merkle_root(&ids).as_bytes().as_slice() != header.transactions_root.as_slice() {
        bail!("transactions do not match the header's transactions root");
    }
    let certificate = committed
        .certificate
        .as_ref()
        .context("no commit certificate")?;
    let certificate =
        crate::wire::certificate_from_wire(certificate).map_err(anyhow::Error::msg)?;
    verify_commit_certificate(chain_id, validators, height, &hash, &certificate)?;
    Ok(hash)
}
