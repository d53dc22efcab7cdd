//! Logical dumps for online backup: every row of the blob store as of one
//! read transaction ([`BlobStore::snapshot`], [`BlobSnapshot::export`]),
//! and a fresh store rebuilt from those rows ([`import`]).
//!
//! The row form, its bounds and the checks on rows read back are
//! `govchain_redb_dump`'s, shared with the ledger; this module names the
//! blob store's tables. Garbage-collection marks are transient and not
//! dumped. Every block's bytes are still verified against its CID
//! whenever it is read from the restored store, as from any other.

use std::io;
use std::path::Path;

pub use govchain_redb_dump::{DumpRow, ExportError, IMPORT_COMMIT_BYTES_MAX, ImportError, RowSink};
use govchain_redb_dump::{KeyForm, Rows, Schema, export_table, insert_run};
use redb::{ReadTransaction, ReadableDatabase as _, WriteTransaction};

use crate::error::{Context as _, StorageFailure};
use crate::schema::{BLOCKS, CHUNKS, META, NODES, ROOTS};
use crate::store::BlobStore;
use crate::{BLOBSTORE_FILE_NAME, CACHE_SIZE_BYTES_MAX};

/// A consistent view of the blob store, for a backup; uploads go on.
pub struct BlobSnapshot {
    read: ReadTransaction,
}

impl BlobStore {
    /// Begins a read transaction for a backup. Begun after the ledger's
    /// snapshot, it holds every blob that snapshot's state refers to: a
    /// blob is stored before a transaction can declare it, and garbage
    /// collection removes only blobs no state refers to.
    pub fn snapshot(&self) -> Result<BlobSnapshot, StorageFailure> {
        let read = self.db().begin_read().context("beginning a snapshot")?;
        Ok(BlobSnapshot { read })
    }
}

impl BlobSnapshot {
    /// Hands every row of every table but the garbage-collection marks to
    /// `sink`, table by table in key order; stops at the first error.
    pub fn export(&self, sink: &mut RowSink<'_>) -> Result<(), ExportError> {
        export_table(&self.read, META, sink)?;
        export_table(&self.read, CHUNKS, sink)?;
        export_table(&self.read, NODES, sink)?;
        export_table(&self.read, BLOCKS, sink)?;
        export_table(&self.read, ROOTS, sink)?;
        Ok(())
    }
}

/// Creates `<dir>/blobs.redb` from the rows of a dump, every table present
/// even where the dump has no row. Refuses an existing file. The caller
/// then opens it with [`BlobStore::open`], which checks its identity.
pub fn import(
    dir: &Path,
    rows: impl Iterator<Item = io::Result<DumpRow>>,
) -> Result<(), ImportError> {
    let mut rows = rows;
    govchain_redb_dump::import(
        &dir.join(BLOBSTORE_FILE_NAME),
        CACHE_SIZE_BYTES_MAX,
        &BlobSchema,
        &mut rows,
    )
}

/// The blob store's tables, for an import.
struct BlobSchema;

impl Schema for BlobSchema {
    fn create_tables(&self, write: &WriteTransaction) -> Result<(), redb::TableError> {
        drop(write.open_table(META)?);
        drop(write.open_table(CHUNKS)?);
        drop(write.open_table(NODES)?);
        drop(write.open_table(BLOCKS)?);
        drop(write.open_table(ROOTS)?);
        Ok(())
    }

    fn insert_run(
        &self,
        write: &WriteTransaction,
        table: &str,
        rows: &mut Rows<'_>,
    ) -> Result<usize, ImportError> {
        match table {
            "meta" => insert_run(write, META, KeyForm::Text, rows),
            "chunk_pieces" => insert_run(write, CHUNKS, KeyForm::Bytes, rows),
            "nodes" => insert_run(write, NODES, KeyForm::Bytes, rows),
            "blocks" => insert_run(write, BLOCKS, KeyForm::Bytes, rows),
            "roots" => insert_run(write, ROOTS, KeyForm::Bytes, rows),
            other => Err(ImportError::UnknownTable {
                table: other.to_owned(),
            }),
        }
    }
}
