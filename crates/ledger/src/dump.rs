//! Logical dumps for online backup: every row of the ledger file as of one
//! read transaction ([`Ledger::snapshot`], [`Snapshot::export`]), and a
//! fresh ledger file rebuilt from those rows ([`import`]).
//!
//! The row form, its bounds and the checks on rows read back are
//! `govchain_redb_dump`'s, shared with the blob store; this module names
//! the ledger's tables. The framing of rows into a byte stream is the
//! caller's (the node's backup format). Consensus keeps appending while a
//! snapshot is held.
//!
//! The consensus records (`consensus.redb`) are deliberately not dumped: a
//! validator's votes belong to that validator at that moment, and loading
//! them into another node, or under an older ledger, is not safe (see
//! ARCHITECTURE.md, "Backup and restore").

use std::io;
use std::path::Path;
use std::sync::Arc;

use govchain_crypto::Digest;
pub use govchain_redb_dump::{DumpRow, ExportError, IMPORT_COMMIT_BYTES_MAX, RowSink};
use govchain_redb_dump::{KeyForm, Rows, Schema, export_table, insert_run};
use redb::{ReadTransaction, WriteTransaction};

use crate::block_log::BlockLog;
use crate::error::{Context as _, ReadError};
use crate::schema::{
    self, BLOCK_RECORDS, BLOCKS, HEIGHT_BY_HASH, META, META_HEAD, PRUNED_BLOCKS, QUERY_INDEX,
    RECENT_TRANSACTIONS, STATE, STATE_TREE, TRANSACTIONS,
};
use crate::{CACHE_SIZE_BYTES_MAX, Head, LEDGER_FILE_NAME, Ledger, OpenError};

/// Why an [`import`] failed. On any error the partly written files are
/// left for the caller to delete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    #[error(transparent)]
    Rows(#[from] govchain_redb_dump::ImportError),
    #[error("cannot move the restored blocks into the block log")]
    Blocks(#[source] OpenError),
}

/// A consistent view of the ledger file, for a backup. Appends go on while
/// it is held; redb keeps the pages it sees until it is dropped.
pub struct Snapshot {
    read: ReadTransaction,
    /// Holds every block up to `head` (a block is logged before its redb
    /// commit); `_hold` keeps them from being pruned meanwhile.
    log: Arc<BlockLog>,
    _hold: crate::block_log::Hold,
    chain_id: String,
    genesis_hash: Digest,
    head: Head,
}

impl Ledger {
    /// Checkpoints (appends wait meanwhile), then begins a read
    /// transaction for a backup. Its head is the one stored in that
    /// transaction: [`Ledger::head`] at the checkpoint.
    pub fn snapshot(&self) -> Result<Snapshot, ReadError> {
        // Whole tables are exported, so the tree tier is merged first.
        let read = self.begin_checkpointed_read()?;
        let meta = read.open_table(META).context("opening meta")?;
        let head = meta
            .get(META_HEAD)
            .context("reading the head")?
            .ok_or(crate::Inconsistency::MissingMeta { key: META_HEAD })?;
        let head = schema::decode_head(head.value())?;
        drop(meta);
        Ok(Snapshot {
            read,
            log: self.block_log().clone(),
            _hold: self.block_log().hold(),
            chain_id: self.chain_id().to_owned(),
            genesis_hash: self.genesis_hash(),
            head,
        })
    }
}

impl Snapshot {
    pub fn head(&self) -> Head {
        self.head
    }

    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    pub fn genesis_hash(&self) -> Digest {
        self.genesis_hash
    }

    /// Hands every row of every ledger table to `sink`, table by table in
    /// key order; stops at the first error, the sink's included.
    pub fn export(&self, sink: &mut RowSink<'_>) -> Result<(), ExportError> {
        export_table(&self.read, META, sink)?;
        self.export_blocks(sink)?;
        export_table(&self.read, BLOCK_RECORDS, sink)?;
        export_table(&self.read, HEIGHT_BY_HASH, sink)?;
        export_table(&self.read, TRANSACTIONS, sink)?;
        export_table(&self.read, RECENT_TRANSACTIONS, sink)?;
        export_table(&self.read, STATE, sink)?;
        export_table(&self.read, STATE_TREE, sink)?;
        export_table(&self.read, QUERY_INDEX, sink)?;
        Ok(())
    }
}

impl Snapshot {
    /// The `blocks` rows, read from the log: the dump keeps the table a
    /// version 4 ledger had, so that both kinds of backup restore alike.
    /// What pruning kept of the oldest blocks goes first, as the
    /// `pruned_blocks` rows.
    fn export_blocks(&self, sink: &mut RowSink<'_>) -> Result<(), ExportError> {
        let first = self.log.first().unwrap_or(1);
        let bodies_from = self.log.bodies_from().unwrap_or(first);
        for (table, heights) in [
            ("pruned_blocks", first..bodies_from),
            ("blocks", bodies_from..self.head.height + 1),
        ] {
            for height in heights {
                let block = self
                    .log
                    .read(height)
                    .map_err(|err| ExportError::Storage {
                        table: table.to_owned(),
                        source: redb::Error::Io(io::Error::other(crate::ReadError::from(err))),
                    })?
                    .ok_or_else(|| ExportError::Storage {
                        table: table.to_owned(),
                        source: redb::Error::Io(io::Error::other(format!(
                            "block {height} is missing from the block log"
                        ))),
                    })?;
                sink(table, &height.to_be_bytes(), &block.encoded).map_err(ExportError::Sink)?;
            }
        }
        Ok(())
    }
}

/// Creates `<dir>/ledger.redb` from the rows of a dump, all tables present
/// even where the dump has no row, and the block log `<dir>/blocks/` from
/// its `blocks` rows. Refuses an existing file. The caller
/// then opens it with [`Ledger::open`], which checks chain id, genesis and
/// head, and runs [`Ledger::check`].
pub fn import(
    dir: &Path,
    rows: impl Iterator<Item = io::Result<DumpRow>>,
) -> Result<(), ImportError> {
    let mut rows = rows;
    govchain_redb_dump::import(
        &dir.join(LEDGER_FILE_NAME),
        CACHE_SIZE_BYTES_MAX,
        &LedgerSchema,
        &mut rows,
    )?;
    crate::migrate::finish_import(dir).map_err(ImportError::Blocks)
}

/// The ledger's tables, for an import.
struct LedgerSchema;

impl Schema for LedgerSchema {
    fn create_tables(&self, write: &WriteTransaction) -> Result<(), redb::TableError> {
        drop(write.open_table(META)?);
        drop(write.open_table(BLOCKS)?);
        drop(write.open_table(BLOCK_RECORDS)?);
        drop(write.open_table(HEIGHT_BY_HASH)?);
        drop(write.open_table(TRANSACTIONS)?);
        drop(write.open_table(RECENT_TRANSACTIONS)?);
        drop(write.open_table(STATE)?);
        drop(write.open_table(STATE_TREE)?);
        drop(write.open_table(QUERY_INDEX)?);
        Ok(())
    }

    fn insert_run(
        &self,
        write: &WriteTransaction,
        table: &str,
        rows: &mut Rows<'_>,
    ) -> Result<usize, govchain_redb_dump::ImportError> {
        match table {
            "meta" => insert_run(write, META, KeyForm::Text, rows),
            "blocks" => insert_run(write, BLOCKS, KeyForm::Bytes, rows),
            "pruned_blocks" => insert_run(write, PRUNED_BLOCKS, KeyForm::Bytes, rows),
            "block_records" => insert_run(write, BLOCK_RECORDS, KeyForm::Bytes, rows),
            "height_by_hash" => insert_run(write, HEIGHT_BY_HASH, KeyForm::Bytes, rows),
            "transactions" => insert_run(write, TRANSACTIONS, KeyForm::Bytes, rows),
            "recent_transactions" => insert_run(write, RECENT_TRANSACTIONS, KeyForm::Bytes, rows),
            "state" => insert_run(write, STATE, KeyForm::Bytes, rows),
            "state_tree" => insert_run(write, STATE_TREE, KeyForm::Bytes, rows),
            "query_index" => insert_run(write, QUERY_INDEX, KeyForm::Bytes, rows),
            other => Err(govchain_redb_dump::ImportError::UnknownTable {
                table: other.to_owned(),
            }),
        }
    }
}
