//! Consensus records: the votes, views and prepared certificates a
//! validator must remember across a crash so that it never contradicts
//! itself (see the `pbft` crate's `Record`). The values are opaque here; the
//! key layout is fixed so that records of delivered heights can be told
//! apart and dropped.
//!
//! The records live in their own redb file, `<data_dir>/consensus.redb`,
//! not in the ledger file. A validator writes them twice per block (before
//! its prepare and before its commit), on the critical path of consensus,
//! so each write must be cheap: it is committed durably in one phase,
//! without redb's quick-repair allocator snapshot (measured ~0.2 ms against
//! ~0.7–2.4 ms with it; see BENCHMARKS.md). The price of that is a full
//! repair of this file after a crash, which reads the whole file; the file
//! holds only the records above the head, so that costs milliseconds. The
//! ledger file, which grows without bound, keeps quick repair.
//!
//! Records about heights at or below the ledger head are obsolete: reads
//! skip them, and the next write deletes them. The ledger head is durable
//! before the records it obsoletes go, so no crash can lose a record that
//! is still needed.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use redb::{
    Database, Durability, ReadableDatabase as _, ReadableTable as _, Table, TableDefinition,
    TableError,
};

use crate::error::{Context as _, OpenError, ReadError, StorageFailure};
use crate::{CONSENSUS_CACHE_SIZE_BYTES_MAX, CONSENSUS_FILE_NAME, Ledger};

/// Key (see [`consensus_key`]) -> opaque record.
const CONSENSUS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("consensus");

/// A stored consensus record: (key, value).
pub type ConsensusRecord = (Vec<u8>, Vec<u8>);

/// Length of a consensus record key.
pub const CONSENSUS_KEY_BYTES: usize = 18;

/// A consensus record's key: its kind, the sequence number it is about (0
/// for records about no height), the view, and a sub-kind, all big-endian.
/// Records with `seq` at or below the ledger head are obsolete.
pub fn consensus_key(kind: u8, seq: u64, view: u64, sub: u8) -> [u8; CONSENSUS_KEY_BYTES] {
    let mut key = [0u8; CONSENSUS_KEY_BYTES];
    key[0] = kind;
    key[1..9].copy_from_slice(&seq.to_be_bytes());
    key[9..17].copy_from_slice(&view.to_be_bytes());
    key[17] = sub;
    key
}

fn key_seq(key: &[u8]) -> u64 {
    key.get(1..9)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

/// Whether a record is about a height the ledger already holds.
fn obsolete(key: &[u8], head_height: u64) -> bool {
    let seq = key_seq(key);
    seq != 0 && seq <= head_height
}

impl Ledger {
    /// Writes consensus records durably, all or none, before returning.
    pub fn consensus_write(
        &self,
        records: &[([u8; CONSENSUS_KEY_BYTES], Vec<u8>)],
    ) -> Result<(), StorageFailure> {
        self.consensus_store().write(records, self.head().height)
    }

    /// Every consensus record about the current view or a height above
    /// the head, in key order.
    pub fn consensus_records(&self) -> Result<Vec<ConsensusRecord>, ReadError> {
        self.consensus_store().records(self.head().height)
    }
}

/// The consensus record file of one ledger.
pub(crate) struct ConsensusStore {
    db: Database,
    /// The head height up to which obsolete records were deleted; held
    /// across a write so that writes prune in order.
    pruned_through: Mutex<u64>,
}

impl ConsensusStore {
    /// Opens or creates `<dir>/consensus.redb` (redb repairs it first if
    /// the last process crashed), and moves records an older version kept
    /// in the ledger file into it.
    pub(crate) fn open(dir: &Path, ledger_db: &Database) -> Result<Self, OpenError> {
        let path = dir.join(CONSENSUS_FILE_NAME);
        let db = redb::Builder::new()
            .set_cache_size(CONSENSUS_CACHE_SIZE_BYTES_MAX)
            .create(&path)
            .map_err(|source| OpenError::Database { path, source })?;
        let store = Self {
            db,
            pruned_through: Mutex::new(0),
        };
        store.adopt_legacy_records(ledger_db)?;
        Ok(store)
    }

    /// Writes `records` durably, all or none, before returning, and deletes
    /// records made obsolete since the last write in the same commit.
    pub(crate) fn write(
        &self,
        records: &[([u8; CONSENSUS_KEY_BYTES], Vec<u8>)],
        head_height: u64,
    ) -> Result<(), StorageFailure> {
        // A panic while holding the lock leaves a height that was pruned or
        // not; pruning again is harmless.
        let mut pruned_through = self
            .pruned_through
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut db_write = self.db.begin_write().context("beginning a write")?;
        db_write
            .set_durability(Durability::Immediate)
            .context("requesting a durable write")?;
        // One fsync per write; see the module documentation.
        db_write.set_quick_repair(false);
        {
            let mut table = db_write
                .open_table(CONSENSUS)
                .context("opening consensus records")?;
            if head_height > *pruned_through {
                prune(&mut table, head_height)?;
            }
            for (key, value) in records {
                table
                    .insert(key.as_slice(), value.as_slice())
                    .context("writing a consensus record")?;
            }
        }
        db_write.commit().context("committing consensus records")?;
        *pruned_through = (*pruned_through).max(head_height);
        Ok(())
    }

    /// Every record not made obsolete by `head_height`, in key order.
    pub(crate) fn records(&self, head_height: u64) -> Result<Vec<ConsensusRecord>, ReadError> {
        let snapshot = self.db.begin_read().context("beginning a read")?;
        let table = match snapshot.open_table(CONSENSUS) {
            // A store that never held a record has no table yet.
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            result => result.context("opening consensus records")?,
        };
        let mut records = Vec::new();
        for entry in table.iter().context("reading consensus records")? {
            let (key, value) = entry.context("reading a consensus record")?;
            if !obsolete(key.value(), head_height) {
                records.push((key.value().to_vec(), value.value().to_vec()));
            }
        }
        Ok(records)
    }

    /// Ledger files written before the records moved kept them in a
    /// `consensus` table of their own. They are copied here durably first,
    /// then dropped from the ledger file, so a crash in between only copies
    /// them again.
    fn adopt_legacy_records(&self, ledger_db: &Database) -> Result<(), StorageFailure> {
        let snapshot = ledger_db.begin_read().context("beginning a read")?;
        let table = match snapshot.open_table(CONSENSUS) {
            Err(TableError::TableDoesNotExist(_)) => return Ok(()),
            result => result.context("opening legacy consensus records")?,
        };
        let mut records = Vec::new();
        for entry in table.iter().context("reading legacy consensus records")? {
            let (key, value) = entry.context("reading a legacy consensus record")?;
            let key: [u8; CONSENSUS_KEY_BYTES] = key
                .value()
                .try_into()
                .map_err(|_| legacy_key_error())
                .context("reading a legacy consensus record")?;
            records.push((key, value.value().to_vec()));
        }
        drop(table);
        drop(snapshot);
        self.write(&records, 0)?;
        let db_write = crate::ledger::begin_durable_write(ledger_db)?;
        db_write
            .delete_table(CONSENSUS)
            .context("dropping legacy consensus records")?;
        db_write
            .commit()
            .context("dropping legacy consensus records")
    }
}

/// A legacy record whose key is not [`CONSENSUS_KEY_BYTES`] long: the file
/// was not written by this crate.
fn legacy_key_error() -> redb::StorageError {
    redb::StorageError::Corrupted(format!(
        "a legacy consensus record key is not {CONSENSUS_KEY_BYTES} bytes"
    ))
}

/// Deletes the records about heights up to `head_height`.
fn prune(table: &mut Table<&[u8], &[u8]>, head_height: u64) -> Result<(), StorageFailure> {
    let stale: Vec<Vec<u8>> = table
        .iter()
        .context("reading consensus records")?
        .filter_map(Result::ok)
        .map(|(key, _)| key.value().to_vec())
        .filter(|key| obsolete(key, head_height))
        .collect();
    for key in stale {
        table
            .remove(key.as_slice())
            .context("pruning a consensus record")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use govchain_crypto::Digest;
    use redb::ReadableTableMetadata as _;

    use super::*;
    use crate::{AppendBlock, LEDGER_FILE_NAME};

    fn genesis() -> Digest {
        Digest::sha256(b"genesis")
    }

    fn append(ledger: &Ledger, height: u64) {
        let writes = BTreeMap::new();
        let parent_hash = ledger.head().hash;
        let block = AppendBlock {
            height,
            hash: Digest::sha256(format!("block {height}").as_bytes()),
            parent_hash,
            state_root: Digest::default(),
            timestamp_ms: height,
            encoded: b"block",
            transactions: &[],
            writes: &writes,
            tree_writes: &writes,
            query_keys: &[],
        };
        ledger.append(&block).expect("append");
    }

    fn values(ledger: &Ledger) -> Vec<Vec<u8>> {
        let records = ledger.consensus_records().expect("read");
        records.into_iter().map(|(_, value)| value).collect()
    }

    /// Every record in the file, obsolete ones included.
    fn stored(ledger: &Ledger) -> u64 {
        let snapshot = ledger.consensus_store().db.begin_read().expect("read");
        let table = snapshot.open_table(CONSENSUS).expect("table");
        table.len().expect("len")
    }

    #[test]
    fn records_survive_reopen_and_go_with_their_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::open(dir.path(), "c", genesis()).expect("open");
        assert!(ledger.consensus_records().expect("read").is_empty());
        let view = (consensus_key(0, 0, 0, 0), b"view 3".to_vec());
        let vote1 = (consensus_key(1, 1, 3, 1), b"vote for 1".to_vec());
        let vote2 = (consensus_key(1, 2, 3, 1), b"vote for 2".to_vec());
        ledger
            .consensus_write(&[view.clone(), vote1, vote2.clone()])
            .expect("write");
        drop(ledger);
        assert!(dir.path().join(CONSENSUS_FILE_NAME).exists());
        let ledger = Ledger::open(dir.path(), "c", genesis()).expect("reopen");
        assert_eq!(ledger.consensus_records().expect("read").len(), 3);
        append(&ledger, 1);
        assert_eq!(
            values(&ledger),
            vec![view.1.clone(), vote2.1.clone()],
            "the vote for height 1 went with the block"
        );
        // Still stored until the next write deletes it.
        assert_eq!(stored(&ledger), 3);
        let vote3 = (consensus_key(1, 3, 3, 1), b"vote for 3".to_vec());
        ledger
            .consensus_write(std::slice::from_ref(&vote3))
            .expect("write");
        assert_eq!(stored(&ledger), 3);
        assert_eq!(values(&ledger), vec![view.1, vote2.1, vote3.1]);
    }

    #[test]
    fn records_in_an_old_ledger_file_move_to_their_own_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Ledger::open(dir.path(), "c", genesis()).expect("create"));
        std::fs::remove_file(dir.path().join(CONSENSUS_FILE_NAME)).expect("remove");
        let vote = (consensus_key(2, 1, 0, 1), b"an old vote".to_vec());
        {
            // What an older version left: the records in the ledger file.
            let db = Database::open(dir.path().join(LEDGER_FILE_NAME)).expect("open db");
            let db_write = db.begin_write().expect("write");
            {
                let mut table = db_write.open_table(CONSENSUS).expect("table");
                table
                    .insert(vote.0.as_slice(), vote.1.as_slice())
                    .expect("insert");
            }
            db_write.commit().expect("commit");
        }
        let ledger = Ledger::open(dir.path(), "c", genesis()).expect("reopen");
        assert_eq!(
            ledger.consensus_records().expect("read"),
            vec![(vote.0.to_vec(), vote.1)]
        );
        let snapshot = ledger.database().begin_read().expect("read");
        assert!(matches!(
            snapshot.open_table(CONSENSUS),
            Err(TableError::TableDoesNotExist(_))
        ));
    }
}
