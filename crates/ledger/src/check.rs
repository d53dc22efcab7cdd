//! Structural self-check of a ledger snapshot.
//!
//! What is checked, all on one read snapshot and in memory bounded by a
//! few records, whatever the length of the chain:
//!
//! - the head in meta matches the record of the block at its height, and
//!   the hash index maps the head hash back to that height;
//! - the block records are exactly the heights `1..=head`;
//! - the block log holds every height from 1 on, each record's checksum
//!   holds, each record's parent is the previous record's hash, and up to
//!   the head each record's hash and parent are the block record's (the
//!   log may hold blocks above the head after a crash: they are counted);
//! - each block's parent is the previous block's hash (the genesis hash for
//!   block 1), and the hash index maps each block hash to its height, with
//!   no other entries;
//! - each indexed transaction points at a stored block and at an index
//!   below that block's transaction count;
//! - the recent rows (see `recent`) lie in the window of the last heights,
//!   each lists as many transactions as its block holds, and a listed id
//!   that is also indexed points at the same height and index;
//! - the index and the ids the rows list that are not indexed yet together
//!   hold as many transactions as the blocks do.
//!
//! Not checked: block contents (the ledger never decodes them), state
//! roots (that needs `exec`), and that no two index entries claim the same
//! `(height, index)` slot, which would take memory proportional to a block
//! or a second index.

use govchain_crypto::Digest;
use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, ReadableTableMetadata};

use crate::Head;
use crate::block_log::BlockLog;
use crate::error::{CheckError, Context, Inconsistency, StorageFailure};
use crate::recent;
use crate::schema::{
    self, BLOCK_RECORDS, BlockRecord, HEIGHT_BY_HASH, HeightKey, META, META_HEAD,
    RECENT_TRANSACTIONS, STATE, STATE_TREE, TRANSACTIONS, height_from_key, height_key,
};

/// What [`crate::Ledger::check`] walked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// The head of the checked snapshot.
    pub head: Head,
    pub blocks: u64,
    pub transactions: u64,
    pub state_entries: u64,
    /// Stored state tree nodes.
    pub state_tree_nodes: u64,
    /// Blocks in the log above the head: appended, not yet re-applied
    /// after a crash (see [`crate::Ledger::log_head`]).
    pub logged_above_head: u64,
}

pub(crate) fn check(
    snapshot: &ReadTransaction,
    genesis: Digest,
    log: &BlockLog,
) -> Result<CheckReport, CheckError> {
    let head = read_head(snapshot)?;
    verify_head(snapshot, &head, genesis)?;
    let records = open(snapshot, BLOCK_RECORDS)?;
    let first = read_first_height(snapshot)?;
    let transactions_expected = walk_block_records(snapshot, &records, &head, first, genesis)?;
    let logged_above_head = walk_log(log, &records, &head, first, genesis)?;
    let indexed = walk_transactions(snapshot, &records, &head, first)?;
    let waiting = walk_recent(snapshot, &records, &head)?;
    let transactions = indexed.saturating_add(waiting);
    if transactions != transactions_expected {
        return Err(Inconsistency::TransactionCount {
            entries: indexed,
            waiting,
            expected: transactions_expected,
        }
        .into());
    }
    let state_entries = open(snapshot, STATE)?.len().context("counting state")?;
    let state_tree_nodes = open(snapshot, STATE_TREE)?
        .len()
        .context("counting state tree nodes")?;
    Ok(CheckReport {
        head,
        blocks: (head.height + 1).saturating_sub(first),
        transactions,
        state_entries,
        state_tree_nodes,
        logged_above_head,
    })
}

/// The cheap part of [`check`], run on every open: the stored head is
/// backed by a block record, a block body and a hash-index entry, and no
/// block lies above it. O(log n).
pub(crate) fn verify_head(
    snapshot: &ReadTransaction,
    head: &Head,
    genesis: Digest,
) -> Result<(), CheckError> {
    let last = open(snapshot, BLOCK_RECORDS)?
        .last()
        .context("reading the last block")?
        .map(|(key, _)| height_from_key(key.value()));
    if let Some(height) = last.filter(|height| *height > head.height) {
        return Err(Inconsistency::BlockOutsideChain {
            table: "block_records",
            height,
            head: head.height,
        }
        .into());
    }
    if head.height == 0 {
        if head.hash != genesis {
            return Err(Inconsistency::EmptyHeadNotGenesis {
                head: head.hash,
                genesis,
            }
            .into());
        }
        return Ok(());
    }
    let record = block_record(&open(snapshot, BLOCK_RECORDS)?, head.height, head)?;
    compare_head(head, &record)?;
    check_hash_indexed(&open(snapshot, HEIGHT_BY_HASH)?, head.height, head.hash)
}

fn compare_head(head: &Head, record: &BlockRecord) -> Result<(), Inconsistency> {
    let height = head.height;
    if record.hash != head.hash {
        return Err(Inconsistency::HeadHashMismatch {
            height,
            head: head.hash,
            stored: record.hash,
        });
    }
    if record.state_root != head.state_root {
        return Err(Inconsistency::HeadStateRootMismatch {
            height,
            head: head.state_root,
            stored: record.state_root,
        });
    }
    if record.timestamp_ms != head.timestamp_ms {
        return Err(Inconsistency::HeadTimestampMismatch {
            height,
            head: head.timestamp_ms,
            stored: record.timestamp_ms,
        });
    }
    Ok(())
}

/// Walks the block records in height order, checking the chain links and
/// the hash index; returns the number of transactions the blocks hold.
fn walk_block_records(
    snapshot: &ReadTransaction,
    records: &ReadOnlyTable<HeightKey, &'static [u8]>,
    head: &Head,
    first: u64,
    genesis: Digest,
) -> Result<u64, CheckError> {
    let index = open(snapshot, HEIGHT_BY_HASH)?;
    let mut heights = HeightSequence::new("block_records", head, first);
    // A ledger installed from a snapshot holds no parent of its first block.
    let mut previous_hash = (first == 1).then_some(genesis);
    let mut transactions: u64 = 0;
    for entry in records.iter().context("walking block records")? {
        let (key, value) = entry.context("walking block records")?;
        let height = height_from_key(key.value());
        heights.visit(height)?;
        let record = BlockRecord::decode(value.value())?;
        if let Some(expected) = previous_hash
            && record.parent_hash != expected
        {
            return Err(Inconsistency::ParentMismatch {
                height,
                parent: record.parent_hash,
                previous: height - 1,
                expected,
            }
            .into());
        }
        check_hash_indexed(&index, height, record.hash)?;
        previous_hash = Some(record.hash);
        transactions = transactions.saturating_add(u64::from(record.transaction_count));
    }
    heights.finish()?;
    // Each of the `head` blocks has its own entry, so any other count
    // means entries that name no block.
    let entries = index.len().context("counting the hash index")?;
    let blocks = (head.height + 1).saturating_sub(first);
    if entries != blocks {
        return Err(Inconsistency::HashIndexCount { entries, blocks }.into());
    }
    Ok(transactions)
}

/// Reads every record of the log (checksums), checks the chain links, and
/// ties the records up to the head to the block records; returns how many
/// records lie above the head.
fn walk_log(
    log: &BlockLog,
    records: &ReadOnlyTable<HeightKey, &'static [u8]>,
    head: &Head,
    first: u64,
    genesis: Digest,
) -> Result<u64, CheckError> {
    let last = log.last();
    if last < head.height {
        return Err(Inconsistency::LogBehindIndex {
            logged: last,
            head: head.height,
        }
        .into());
    }
    let mut previous_hash = (first == 1).then_some(genesis);
    for height in first..=last {
        let block = log
            .read(height)
            .map_err(|err| match err {
                crate::block_log::LogError::Failure(failure) => CheckError::Log(failure),
                crate::block_log::LogError::Damaged(inconsistency) => inconsistency.into(),
            })?
            .ok_or_else(|| missing("the block log", height, head))?;
        if let Some(expected) = previous_hash
            && block.parent_hash != expected
        {
            return Err(Inconsistency::LogParentMismatch {
                height,
                parent: block.parent_hash,
                previous: height - 1,
                expected,
            }
            .into());
        }
        if height <= head.height {
            let record = block_record(records, height, head)?;
            if record.hash != block.hash {
                return Err(Inconsistency::LogDiffers {
                    height,
                    logged: block.hash,
                    indexed: record.hash,
                }
                .into());
            }
        }
        previous_hash = Some(block.hash);
    }
    Ok(last - head.height)
}

/// Checks every transaction points into a stored block; returns the count.
fn walk_transactions(
    snapshot: &ReadTransaction,
    records: &ReadOnlyTable<HeightKey, &'static [u8]>,
    head: &Head,
    first: u64,
) -> Result<u64, CheckError> {
    let transactions = open(snapshot, TRANSACTIONS)?;
    let mut entries: u64 = 0;
    for entry in transactions.iter().context("walking transactions")? {
        let (key, value) = entry.context("walking transactions")?;
        let id = Digest::from_bytes(key.value());
        let (height, index, _) = schema::decode_transaction(value.value())?;
        if height < first || height > head.height {
            return Err(Inconsistency::TransactionOutsideChain {
                id,
                height,
                head: head.height,
            }
            .into());
        }
        let count = block_record(records, height, head)?.transaction_count;
        if index >= count {
            return Err(Inconsistency::TransactionIndexOutOfRange {
                id,
                height,
                index,
                count,
            }
            .into());
        }
        entries += 1;
    }
    Ok(entries)
}

/// Checks the recent rows against the window, the block records and the
/// index; returns how many listed transactions are not indexed yet.
fn walk_recent(
    snapshot: &ReadTransaction,
    records: &ReadOnlyTable<HeightKey, &'static [u8]>,
    head: &Head,
) -> Result<u64, CheckError> {
    let rows = open(snapshot, RECENT_TRANSACTIONS)?;
    let transactions = open(snapshot, TRANSACTIONS)?;
    let first = recent::expired_through(head.height) + 1;
    let mut waiting: u64 = 0;
    for row in rows.iter().context("walking recent transactions")? {
        let (key, value) = row.context("walking recent transactions")?;
        let height = height_from_key(key.value());
        if height < first || height > head.height {
            return Err(Inconsistency::RecentRowOutsideWindow {
                height,
                first,
                head: head.height,
            }
            .into());
        }
        let count = block_record(records, height, head)?.transaction_count;
        let mut listed: u64 = 0;
        for (index, entry) in (0_u32..).zip(schema::decode_recent_row(value.value())) {
            let (id, _) = entry?;
            listed += 1;
            let indexed = transactions
                .get(id.as_bytes())
                .context("reading the transaction index")?;
            match indexed {
                Some(record) => {
                    let (indexed_height, indexed_index, _) =
                        schema::decode_transaction(record.value())?;
                    if (indexed_height, indexed_index) != (height, index) {
                        return Err(Inconsistency::RecentRowMismatch {
                            id,
                            height,
                            index,
                            indexed_height,
                            indexed_index,
                        }
                        .into());
                    }
                }
                None => waiting += 1,
            }
        }
        if listed != u64::from(count) {
            return Err(Inconsistency::RecentRowCount {
                height,
                listed,
                count,
            }
            .into());
        }
    }
    Ok(waiting)
}

/// The first height the ledger holds: 1, or the height of the block a
/// state snapshot was installed at.
pub(crate) fn read_first_height(snapshot: &ReadTransaction) -> Result<u64, CheckError> {
    let meta = open(snapshot, META)?;
    let first = meta
        .get(schema::META_FIRST_HEIGHT)
        .context("reading the first height")?;
    match first {
        None => Ok(1),
        Some(bytes) => Ok(schema::decode_u64("meta.first_height", bytes.value())?),
    }
}

/// A `u64` in the meta table, 0 when absent.
pub(crate) fn read_meta_u64(
    snapshot: &ReadTransaction,
    key: &'static str,
) -> Result<u64, CheckError> {
    let meta = open(snapshot, META)?;
    let value = meta.get(key).context("reading the meta table")?;
    match value {
        None => Ok(0),
        Some(bytes) => Ok(schema::decode_u64(key, bytes.value())?),
    }
}

fn read_head(snapshot: &ReadTransaction) -> Result<Head, CheckError> {
    let meta = open(snapshot, META)?;
    let head = meta.get(META_HEAD).context("reading the head")?;
    let head = head.ok_or(Inconsistency::MissingMeta { key: META_HEAD })?;
    Ok(schema::decode_head(head.value())?)
}

fn block_record(
    records: &ReadOnlyTable<HeightKey, &'static [u8]>,
    height: u64,
    head: &Head,
) -> Result<BlockRecord, CheckError> {
    let record = records
        .get(height_key(height))
        .context("reading a block record")?
        .ok_or_else(|| missing("block_records", height, head))?;
    Ok(BlockRecord::decode(record.value())?)
}

fn check_hash_indexed(
    index: &ReadOnlyTable<[u8; 32], [u8; 8]>,
    height: u64,
    hash: Digest,
) -> Result<(), CheckError> {
    let indexed = index
        .get(hash.as_bytes())
        .context("reading the hash index")?
        .map(|guard| u64::from_be_bytes(guard.value()))
        .ok_or(Inconsistency::HashNotIndexed { height, hash })?;
    if indexed != height {
        return Err(Inconsistency::HashIndexMismatch {
            hash,
            indexed,
            height,
        }
        .into());
    }
    Ok(())
}

fn open<K: redb::Key + 'static, V: redb::Value + 'static>(
    snapshot: &ReadTransaction,
    table: redb::TableDefinition<'_, K, V>,
) -> Result<ReadOnlyTable<K, V>, StorageFailure> {
    snapshot
        .open_table(table)
        .context("opening a table to check")
}

fn missing(table: &'static str, height: u64, head: &Head) -> Inconsistency {
    Inconsistency::MissingBlock {
        table,
        height,
        head: head.height,
    }
}

/// The keys of a height-keyed table, visited in order, must be exactly
/// `first..=head`.
struct HeightSequence {
    table: &'static str,
    head: u64,
    /// The last height visited; 0 before the first.
    last: u64,
}

impl HeightSequence {
    fn new(table: &'static str, head: &Head, first: u64) -> Self {
        Self {
            table,
            head: head.height,
            last: first - 1,
        }
    }

    fn visit(&mut self, height: u64) -> Result<(), Inconsistency> {
        if height <= self.last || height > self.head {
            return Err(Inconsistency::BlockOutsideChain {
                table: self.table,
                height,
                head: self.head,
            });
        }
        // Keys arrive in increasing order and `last < height <= head`, so
        // `last + 1` cannot overflow, and a different key skipped it.
        if height != self.last + 1 {
            return Err(self.missing());
        }
        self.last = height;
        Ok(())
    }

    fn finish(self) -> Result<(), Inconsistency> {
        if self.last != self.head {
            return Err(self.missing());
        }
        Ok(())
    }

    fn missing(&self) -> Inconsistency {
        Inconsistency::MissingBlock {
            table: self.table,
            height: self.last + 1,
            head: self.head,
        }
    }
}
