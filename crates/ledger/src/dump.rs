//! Logical dumps for online backup: every row of the ledger file as of one
//! read transaction ([`Ledger::snapshot`], [`Snapshot::export`]), and a
//! fresh ledger file rebuilt from those rows ([`import`]).
//!
//! A row is `(table name, key bytes, value bytes)`, in table order and key
//! order within a table; the byte form of a key or value is redb's own
//! (`Key::as_bytes`), which for every table here is the fixed-width
//! big-endian or raw bytes the schema defines. The framing of rows into a
//! byte stream is the caller's (the node's backup format).
//!
//! Why rows and not a copy of the file: a redb file that a writer keeps
//! committing to cannot be copied consistently byte by byte (its header and
//! freed pages change under the copy), while a read transaction is a stable
//! view for as long as it is held, and consensus keeps appending meanwhile.
//!
//! The consensus records (`consensus.redb`) are deliberately not dumped: a
//! validator's votes belong to that validator at that moment, and loading
//! them into another node, or under an older ledger, is not safe (see
//! ARCHITECTURE.md, "Backup and restore").

use std::io;
use std::iter::Peekable;
use std::path::Path;

use govchain_crypto::Digest;
use redb::{
    Key, ReadTransaction, ReadableDatabase as _, ReadableTable as _, TableDefinition,
    TableHandle as _, Value, WriteTransaction,
};

use crate::error::{Context as _, ReadError, StorageFailure};
use crate::ledger::begin_durable_write;
use crate::schema::{
    self, BLOCK_RECORDS, BLOCKS, HEIGHT_BY_HASH, META, META_HEAD, RECENT_TRANSACTIONS, STATE,
    STATE_TREE, TRANSACTIONS,
};
use crate::{CACHE_SIZE_BYTES_MAX, Head, LEDGER_FILE_NAME, Ledger};

/// One row of a dump: table name, key bytes, value bytes.
pub type DumpRow = (String, Vec<u8>, Vec<u8>);

/// Where an export hands each row: table name, key bytes, value bytes.
pub type RowSink<'a> = dyn FnMut(&str, &[u8], &[u8]) -> io::Result<()> + 'a;

/// An import commits after staging this many bytes of rows, so a restore
/// of a large ledger never holds it all in one write transaction.
pub const IMPORT_COMMIT_BYTES_MAX: usize = 64 * 1024 * 1024;

/// A consistent view of the ledger file, for a backup. Appends go on while
/// it is held; redb keeps the pages it sees until it is dropped.
pub struct Snapshot {
    read: ReadTransaction,
    chain_id: String,
    genesis_hash: Digest,
    head: Head,
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    #[error(transparent)]
    Read(#[from] ReadError),
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
    Exists { path: std::path::PathBuf },
    #[error("cannot create ledger database {path}")]
    Database {
        path: std::path::PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("the dump names table {table:?}, which a ledger does not have")]
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

impl Ledger {
    /// Begins a read transaction for a backup. Its head is the one stored
    /// in that transaction, which may be ahead of [`Ledger::head`] by an
    /// append that is committing right now, never behind.
    pub fn snapshot(&self) -> Result<Snapshot, ReadError> {
        let read = self
            .database_for_snapshot()
            .begin_read()
            .context("beginning a snapshot")?;
        let meta = read.open_table(META).context("opening meta")?;
        let head = meta
            .get(META_HEAD)
            .context("reading the head")?
            .ok_or(crate::Inconsistency::MissingMeta { key: META_HEAD })?;
        let head = schema::decode_head(head.value())?;
        drop(meta);
        Ok(Snapshot {
            read,
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
        export_table(&self.read, BLOCKS, sink)?;
        export_table(&self.read, BLOCK_RECORDS, sink)?;
        export_table(&self.read, HEIGHT_BY_HASH, sink)?;
        export_table(&self.read, TRANSACTIONS, sink)?;
        export_table(&self.read, RECENT_TRANSACTIONS, sink)?;
        export_table(&self.read, STATE, sink)?;
        export_table(&self.read, STATE_TREE, sink)?;
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

/// Creates `<dir>/ledger.redb` from the rows of a dump, all tables present
/// even where the dump has no row. Refuses an existing file. The caller
/// then opens it with [`Ledger::open`], which checks chain id, genesis and
/// head, and runs [`Ledger::check`].
pub fn import(
    dir: &Path,
    rows: impl Iterator<Item = io::Result<DumpRow>>,
) -> Result<(), ImportError> {
    let path = dir.join(LEDGER_FILE_NAME);
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
        let staged = match rows.peek() {
            None => break,
            Some(Err(_)) => {
                return Err(ImportError::Source(
                    rows.next()
                        .and_then(Result::err)
                        .unwrap_or_else(|| io::Error::other("dump read failed")),
                ));
            }
            Some(Ok((table, _, _))) => import_run(&db_write, &table.clone(), &mut rows)?,
        };
        if staged >= IMPORT_COMMIT_BYTES_MAX {
            db_write.commit().context("committing imported rows")?;
            db_write = begin_durable_write(&db)?;
        }
    }
    db_write.commit().context("committing imported rows")?;
    Ok(())
}

fn create_tables(db_write: &WriteTransaction) -> Result<(), StorageFailure> {
    const CONTEXT: &str = "creating the imported ledger's tables";
    drop(db_write.open_table(META).context(CONTEXT)?);
    drop(db_write.open_table(BLOCKS).context(CONTEXT)?);
    drop(db_write.open_table(BLOCK_RECORDS).context(CONTEXT)?);
    drop(db_write.open_table(HEIGHT_BY_HASH).context(CONTEXT)?);
    drop(db_write.open_table(TRANSACTIONS).context(CONTEXT)?);
    drop(db_write.open_table(RECENT_TRANSACTIONS).context(CONTEXT)?);
    drop(db_write.open_table(STATE).context(CONTEXT)?);
    drop(db_write.open_table(STATE_TREE).context(CONTEXT)?);
    Ok(())
}

/// Inserts the run of rows of the next row's table, until the table
/// changes or [`IMPORT_COMMIT_BYTES_MAX`] bytes are staged; returns the
/// bytes staged.
fn import_run<I: Iterator<Item = io::Result<DumpRow>>>(
    db_write: &WriteTransaction,
    table: &str,
    rows: &mut Peekable<I>,
) -> Result<usize, ImportError> {
    match table {
        "meta" => insert_run(db_write, META, rows),
        "blocks" => insert_run(db_write, BLOCKS, rows),
        "block_records" => insert_run(db_write, BLOCK_RECORDS, rows),
        "height_by_hash" => insert_run(db_write, HEIGHT_BY_HASH, rows),
        "transactions" => insert_run(db_write, TRANSACTIONS, rows),
        "recent_transactions" => insert_run(db_write, RECENT_TRANSACTIONS, rows),
        "state" => insert_run(db_write, STATE, rows),
        "state_tree" => insert_run(db_write, STATE_TREE, rows),
        other => Err(ImportError::UnknownTable {
            table: other.to_owned(),
        }),
    }
}

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
