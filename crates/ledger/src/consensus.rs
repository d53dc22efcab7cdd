//! Consensus records: the votes, views and prepared certificates a
//! validator must remember across a crash so that it never contradicts
//! itself (see the `pbft` crate's `Record`). The values are opaque here; the
//! key layout is fixed so that records of delivered heights can be pruned
//! in the same write transaction that appends the block.

use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition, TableError};

use crate::Ledger;
use crate::error::{Context as _, ReadError, StorageFailure};

/// Key (see [`consensus_key`]) -> opaque record.
pub(crate) const CONSENSUS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("consensus");

/// A stored consensus record: (key, value).
pub type ConsensusRecord = (Vec<u8>, Vec<u8>);

/// Length of a consensus record key.
pub const CONSENSUS_KEY_BYTES: usize = 18;

/// A consensus record's key: its kind, the sequence number it is about (0
/// for records about no height), the view, and a sub-kind, all big-endian.
/// Records with `seq` at or below an appended height are deleted with it.
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

impl Ledger {
    /// Writes consensus records durably, all or none, before returning.
    pub fn consensus_write(
        &self,
        records: &[([u8; CONSENSUS_KEY_BYTES], Vec<u8>)],
    ) -> Result<(), StorageFailure> {
        let db_write = crate::ledger::begin_durable_write(self.database())?;
        {
            let mut table = db_write
                .open_table(CONSENSUS)
                .context("opening consensus records")?;
            for (key, value) in records {
                table
                    .insert(key.as_slice(), value.as_slice())
                    .context("writing a consensus record")?;
            }
        }
        db_write.commit().context("committing consensus records")
    }

    /// Every consensus record, in key order.
    pub fn consensus_records(&self) -> Result<Vec<ConsensusRecord>, ReadError> {
        let snapshot = self.database().begin_read().context("beginning a read")?;
        let table = match snapshot.open_table(CONSENSUS) {
            // A ledger that never stored a record has no table yet.
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            result => result.context("opening consensus records")?,
        };
        let mut records = Vec::new();
        for entry in table.iter().context("reading consensus records")? {
            let (key, value) = entry.context("reading a consensus record")?;
            records.push((key.value().to_vec(), value.value().to_vec()));
        }
        Ok(records)
    }
}

/// Deletes the records about heights up to `height`, inside the append's
/// write transaction.
pub(crate) fn prune(db_write: &redb::WriteTransaction, height: u64) -> Result<(), StorageFailure> {
    let mut table = db_write
        .open_table(CONSENSUS)
        .context("opening consensus records")?;
    let stale: Vec<Vec<u8>> = table
        .iter()
        .context("reading consensus records")?
        .filter_map(Result::ok)
        .map(|(key, _)| key.value().to_vec())
        .filter(|key| key_seq(key) != 0 && key_seq(key) <= height)
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

    use super::*;
    use crate::AppendBlock;

    #[test]
    fn records_survive_reopen_and_are_pruned_with_their_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let genesis = Digest::sha256(b"genesis");
        let ledger = Ledger::open(dir.path(), "c", genesis).expect("open");
        assert!(ledger.consensus_records().expect("read").is_empty());
        let view = (consensus_key(0, 0, 0, 0), b"view 3".to_vec());
        let vote1 = (consensus_key(1, 1, 3, 1), b"vote for 1".to_vec());
        let vote2 = (consensus_key(1, 2, 3, 1), b"vote for 2".to_vec());
        ledger
            .consensus_write(&[view.clone(), vote1, vote2.clone()])
            .expect("write");
        drop(ledger);
        let ledger = Ledger::open(dir.path(), "c", genesis).expect("reopen");
        assert_eq!(ledger.consensus_records().expect("read").len(), 3);
        let writes = BTreeMap::new();
        let block = AppendBlock {
            height: 1,
            hash: Digest::sha256(b"block 1"),
            parent_hash: genesis,
            state_root: Digest::default(),
            timestamp_ms: 1,
            encoded: b"block",
            transactions: &[],
            writes: &writes,
        };
        ledger.append(&block).expect("append");
        let left: Vec<Vec<u8>> = ledger
            .consensus_records()
            .expect("read")
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(
            left,
            vec![view.1, vote2.1],
            "the vote for height 1 went with the block"
        );
    }
}
