//! Logical dumps for online backup: every row of the blob store as of one
//! read transaction ([`BlobStore::snapshot`], [`BlobSnapshot::export`]),
//! and a fresh store rebuilt from those rows ([`import`]).
//!
//! The same row form as the ledger's dump (`govchain_ledger::dump`):
//! `(table name, key bytes, value bytes)`, table by table in key order.
//! The two crates do not share code: each knows only its own schema, and
//! neither may depend on the other. Garbage-collection marks are transient
//! and not dumped. Every block's bytes are still verified against its CID
//! whenever it is read from the restored store, as from any other.

use std::io;
use std::iter::Peekable;
use std::path::{Path, PathBuf};

use redb::{
    Key, ReadTransaction, ReadableDatabase as _, ReadableTable as _, TableDefinition,
    TableHandle as _, Value, WriteTransaction,
};

use crate::error::{Context as _, StorageFailure};
use crate::schema::{BLOCKS, CHUNKS, META, NODES, ROOTS};
use crate::store::{BlobStore, begin_durable_write};
use crate::{BLOBSTORE_FILE_NAME, CACHE_SIZE_BYTES_MAX};

/// One row of a dump: table name, key bytes, value bytes.
pub type DumpRow = (String, Vec<u8>, Vec<u8>);

/// Where an export hands each row: table name, key bytes, value bytes.
pub type RowSink<'a> = dyn FnMut(&str, &[u8], &[u8]) -> io::Result<()> + 'a;

/// An import commits after staging this many bytes of rows.
pub const IMPORT_COMMIT_BYTES_MAX: usize = 64 * 1024 * 1024;

/// A consistent view of the blob store, for a backup; uploads go on.
pub struct BlobSnapshot {
    read: ReadTransaction,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    #[error(transparent)]
    Storage(#[from] StorageFailure),
    /// The row sink refused a row, e.g. the backup's receiver went away.
    #[error("the backup stream refused a row")]
    Sink(#[source] io::Error),
}

/// Why an import failed. On any error the partly written file is left for
/// the caller to delete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    #[error("{path} already exists; restore only into an empty data directory")]
    Exists { path: PathBuf },
    #[error("cannot create blob store database {path}")]
    Database {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("the dump names table {table:?}, which a blob store does not have")]
    UnknownTable { table: String },
    #[error("a {what} in table {table} is {got} bytes, expected {expected}")]
    RowWidth {
        table: String,
        what: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("a key in table {table} is not UTF-8")]
    KeyNotText { table: String },
    #[error("cannot read the dump")]
    Source(#[source] io::Error),
    #[error(transparent)]
    Storage(#[from] StorageFailure),
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

fn export_table<K: Key + 'static, V: Value + 'static>(
    read: &ReadTransaction,
    table: TableDefinition<'_, K, V>,
    sink: &mut RowSink<'_>,
) -> Result<(), ExportError> {
    let name = table.name().to_owned();
    let opened = read
        .open_table(table)
        .context("opening a table to export")?;
    for row in opened.iter().context("exporting a table")? {
        let (key, value) = row.context("exporting a table")?;
        let (key, value) = (key.value(), value.value());
        let (key, value) = (K::as_bytes(&key), V::as_bytes(&value));
        sink(&name, key.as_ref(), value.as_ref()).map_err(ExportError::Sink)?;
    }
    Ok(())
}

/// Creates `<dir>/blobs.redb` from the rows of a dump, every table present
/// even where the dump has no row. Refuses an existing file. The caller
/// then opens it with [`BlobStore::open`], which checks its identity.
pub fn import(
    dir: &Path,
    rows: impl Iterator<Item = io::Result<DumpRow>>,
) -> Result<(), ImportError> {
    let path = dir.join(BLOBSTORE_FILE_NAME);
    if path.exists() {
        return Err(ImportError::Exists { path });
    }
    std::fs::create_dir_all(dir).map_err(ImportError::Source)?;
    let db = redb::Builder::new()
        .set_cache_size(CACHE_SIZE_BYTES_MAX)
        .create(&path)
        .map_err(|source| ImportError::Database {
            path: path.clone(),
            source,
        })?;
    let mut rows = rows.peekable();
    let mut db_write = begin_durable_write(&db)?;
    create_tables(&db_write)?;
    loop {
        let table = match rows.peek() {
            None => break,
            Some(Ok((table, _, _))) => table.clone(),
            Some(Err(_)) => {
                let err = rows.next().and_then(Result::err);
                return Err(ImportError::Source(
                    err.unwrap_or_else(|| io::Error::other("dump read failed")),
                ));
            }
        };
        if import_run(&db_write, &table, &mut rows)? >= IMPORT_COMMIT_BYTES_MAX {
            db_write.commit().context("committing imported rows")?;
            db_write = begin_durable_write(&db)?;
        }
    }
    db_write.commit().context("committing imported rows")?;
    Ok(())
}

fn create_tables(db_write: &WriteTransaction) -> Result<(), StorageFailure> {
    const CONTEXT: &str = "creating the imported blob store's tables";
    drop(db_write.open_table(META).context(CONTEXT)?);
    drop(db_write.open_table(CHUNKS).context(CONTEXT)?);
    drop(db_write.open_table(NODES).context(CONTEXT)?);
    drop(db_write.open_table(BLOCKS).context(CONTEXT)?);
    drop(db_write.open_table(ROOTS).context(CONTEXT)?);
    Ok(())
}

fn import_run<I: Iterator<Item = io::Result<DumpRow>>>(
    db_write: &WriteTransaction,
    table: &str,
    rows: &mut Peekable<I>,
) -> Result<usize, ImportError> {
    match table {
        "meta" => insert_run(db_write, META, rows),
        "chunk_pieces" => insert_run(db_write, CHUNKS, rows),
        "nodes" => insert_run(db_write, NODES, rows),
        "blocks" => insert_run(db_write, BLOCKS, rows),
        "roots" => insert_run(db_write, ROOTS, rows),
        other => Err(ImportError::UnknownTable {
            table: other.to_owned(),
        }),
    }
}

/// Inserts the run of rows of one table, until the table changes or
/// [`IMPORT_COMMIT_BYTES_MAX`] bytes are staged; returns the bytes staged.
fn insert_run<K: Key + 'static, V: Value + 'static, I>(
    db_write: &WriteTransaction,
    definition: TableDefinition<'_, K, V>,
    rows: &mut Peekable<I>,
) -> Result<usize, ImportError>
where
    I: Iterator<Item = io::Result<DumpRow>>,
{
    let name = definition.name().to_owned();
    let mut table = db_write
        .open_table(definition)
        .context("opening a table to import into")?;
    let mut staged = 0usize;
    while staged < IMPORT_COMMIT_BYTES_MAX {
        match rows.peek() {
            Some(Ok((next, _, _))) if *next == name => {}
            _ => break,
        }
        let Some(Ok((_, key, value))) = rows.next() else {
            break;
        };
        check_width::<K>(&name, "key", &key)?;
        check_width::<V>(&name, "value", &value)?;
        // `&str` keys (the meta table) decode without a check in redb.
        if name == META.name() && std::str::from_utf8(&key).is_err() {
            return Err(ImportError::KeyNotText { table: name });
        }
        table
            .insert(K::from_bytes(&key), V::from_bytes(&value))
            .context("importing a row")?;
        staged = staged.saturating_add(key.len() + value.len());
    }
    Ok(staged)
}

/// redb's `from_bytes` of a fixed-width type assumes the width; a dump
/// row is input, so it is checked first.
fn check_width<T: Value>(table: &str, what: &'static str, bytes: &[u8]) -> Result<(), ImportError> {
    match T::fixed_width() {
        Some(expected) if bytes.len() != expected => Err(ImportError::RowWidth {
            table: table.to_owned(),
            what,
            got: bytes.len(),
            expected,
        }),
        _ => Ok(()),
    }
}
