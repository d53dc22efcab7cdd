//! Logical dumps of a redb database, for online backup: every row of the
//! tables a caller names, as of one read transaction, handed out as
//! `(table name, key bytes, value bytes)` table by table in key order; and
//! a fresh database rebuilt from such rows.
//!
//! The ledger and the blob store each know their own schema (which tables,
//! with which key and value types) and use this crate for the rest, so the
//! row form, the bounds and the checks on rows read back are one thing.
//! The byte form of a key or value is redb's own (`Key::as_bytes`).
//!
//! Why rows and not a copy of the file: a redb file that a writer keeps
//! committing to cannot be copied consistently byte by byte (its header and
//! freed pages change under the copy), while a read transaction is a stable
//! view for as long as it is held.
//!
//! **Invariant:** a row read back is input: a table the schema does not
//! have, a key or value of the wrong width for a fixed-width type, or a
//! text key that is not UTF-8 is refused before it reaches redb.
#![forbid(unsafe_code)]

use std::io;
use std::iter::Peekable;
use std::path::{Path, PathBuf};

use redb::{
    Database, Durability, Key, ReadTransaction, ReadableTable as _, TableDefinition,
    TableHandle as _, Value, WriteTransaction,
};

/// One row of a dump: table name, key bytes, value bytes.
pub type DumpRow = (String, Vec<u8>, Vec<u8>);

/// Where an export hands each row: table name, key bytes, value bytes.
pub type RowSink<'a> = dyn FnMut(&str, &[u8], &[u8]) -> io::Result<()> + 'a;

/// An import commits after staging this many bytes of rows, so a restore
/// of a large database never holds it all in one write transaction.
pub const IMPORT_COMMIT_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    #[error("cannot read table {table} for a dump")]
    Storage {
        table: String,
        #[source]
        source: redb::Error,
    },
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
    #[error("cannot create database {path}")]
    Database {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("the dump names table {table:?}, which this database does not have")]
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
    #[error("storage failed while {context}")]
    Storage {
        context: &'static str,
        #[source]
        source: redb::Error,
    },
}

fn storage(context: &'static str) -> impl FnOnce(redb::Error) -> ImportError {
    move |source| ImportError::Storage { context, source }
}

/// Hands every row of `table` in `read` to `sink`, in key order.
pub fn export_table<K: Key + 'static, V: Value + 'static>(
    read: &ReadTransaction,
    table: TableDefinition<'_, K, V>,
    sink: &mut RowSink<'_>,
) -> Result<(), ExportError> {
    let name = table.name().to_owned();
    let failed = |source: redb::Error| ExportError::Storage {
        table: name.clone(),
        source,
    };
    let opened = read.open_table(table).map_err(|e| failed(e.into()))?;
    for row in opened.iter().map_err(|e| failed(e.into()))? {
        let (key, value) = row.map_err(|e| failed(e.into()))?;
        let (key, value) = (key.value(), value.value());
        let (key, value) = (K::as_bytes(&key), V::as_bytes(&value));
        sink(&name, key.as_ref(), value.as_ref()).map_err(ExportError::Sink)?;
    }
    Ok(())
}

/// The rows still to import.
pub type Rows<'a> = Peekable<&'a mut dyn Iterator<Item = io::Result<DumpRow>>>;

/// A database's schema, as an import needs it.
pub trait Schema {
    /// Creates every table, so that a table without rows in the dump
    /// still exists.
    fn create_tables(&self, write: &WriteTransaction) -> Result<(), redb::TableError>;

    /// Inserts the run of rows of `table` (the next row's table) with
    /// [`insert_run`] and its definition; an unknown table is
    /// [`ImportError::UnknownTable`].
    fn insert_run(
        &self,
        write: &WriteTransaction,
        table: &str,
        rows: &mut Rows<'_>,
    ) -> Result<usize, ImportError>;
}

/// Creates the database `path` from the rows of a dump, committing every
/// [`IMPORT_COMMIT_BYTES_MAX`] bytes, each commit durable. Refuses an
/// existing file. The caller then opens it with its own checks.
pub fn import(
    path: &Path,
    cache_size_bytes: usize,
    schema: &dyn Schema,
    rows: &mut dyn Iterator<Item = io::Result<DumpRow>>,
) -> Result<(), ImportError> {
    if path.exists() {
        return Err(ImportError::Exists {
            path: path.to_owned(),
        });
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(ImportError::Source)?;
    }
    let db = redb::Builder::new()
        .set_cache_size(cache_size_bytes)
        .create(path)
        .map_err(|source| ImportError::Database {
            path: path.to_owned(),
            source,
        })?;
    let mut rows: Rows<'_> = rows.peekable();
    let mut write = begin_durable_write(&db)?;
    schema
        .create_tables(&write)
        .map_err(|e| storage("creating the tables")(e.into()))?;
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
            Some(Ok((table, _, _))) => {
                let table = table.clone();
                schema.insert_run(&write, &table, &mut rows)?
            }
        };
        if staged >= IMPORT_COMMIT_BYTES_MAX {
            write
                .commit()
                .map_err(|e| storage("committing imported rows")(e.into()))?;
            write = begin_durable_write(&db)?;
        }
    }
    write
        .commit()
        .map_err(|e| storage("committing imported rows")(e.into()))
}

fn begin_durable_write(db: &Database) -> Result<WriteTransaction, ImportError> {
    let mut write = db
        .begin_write()
        .map_err(|e| storage("beginning a write")(e.into()))?;
    write
        .set_durability(Durability::Immediate)
        .map_err(|e| storage("requesting a durable write")(e.into()))?;
    Ok(write)
}

/// Whether a table's keys are text (`&str`), which redb decodes without a
/// check: such keys are checked to be UTF-8 on import.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyForm {
    Text,
    Bytes,
}

/// Inserts the rows of `definition`'s table from the front of `rows`,
/// until the table changes or [`IMPORT_COMMIT_BYTES_MAX`] bytes are
/// staged; returns the bytes staged. Each row is checked first.
pub fn insert_run<K: Key + 'static, V: Value + 'static>(
    write: &WriteTransaction,
    definition: TableDefinition<'_, K, V>,
    key_form: KeyForm,
    rows: &mut Rows<'_>,
) -> Result<usize, ImportError> {
    let name = definition.name().to_owned();
    let mut table = write
        .open_table(definition)
        .map_err(|e| storage("opening a table to import into")(e.into()))?;
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
        if key_form == KeyForm::Text && std::str::from_utf8(&key).is_err() {
            return Err(ImportError::KeyNotText { table: name });
        }
        table
            .insert(K::from_bytes(&key), V::from_bytes(&value))
            .map_err(|e| storage("importing a row")(e.into()))?;
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

#[cfg(test)]
mod tests {
    use redb::ReadableDatabase as _;

    use super::*;

    const NAMES: TableDefinition<'_, &str, u64> = TableDefinition::new("names");
    const BLOBS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("blobs");

    struct Test;

    impl Schema for Test {
        fn create_tables(&self, write: &WriteTransaction) -> Result<(), redb::TableError> {
            drop(write.open_table(NAMES)?);
            drop(write.open_table(BLOBS)?);
            Ok(())
        }

        fn insert_run(
            &self,
            write: &WriteTransaction,
            table: &str,
            rows: &mut Rows<'_>,
        ) -> Result<usize, ImportError> {
            match table {
                "names" => insert_run(write, NAMES, KeyForm::Text, rows),
                "blobs" => insert_run(write, BLOBS, KeyForm::Bytes, rows),
                other => Err(ImportError::UnknownTable {
                    table: other.to_owned(),
                }),
            }
        }
    }

    fn source(dir: &Path) -> Database {
        let db = Database::create(dir.join("source.redb")).expect("create");
        let write = db.begin_write().expect("write");
        {
            let mut names = write.open_table(NAMES).expect("names");
            names.insert("b", 2).expect("insert");
            names.insert("a", 1).expect("insert");
            let mut blobs = write.open_table(BLOBS).expect("blobs");
            blobs.insert(7, b"seven".as_slice()).expect("insert");
        }
        write.commit().expect("commit");
        db
    }

    fn dump(db: &Database) -> Vec<DumpRow> {
        let read = db.begin_read().expect("read");
        let mut rows = Vec::new();
        let mut sink = |table: &str, key: &[u8], value: &[u8]| {
            rows.push((table.to_owned(), key.to_vec(), value.to_vec()));
            Ok(())
        };
        export_table(&read, NAMES, &mut sink).expect("names");
        export_table(&read, BLOBS, &mut sink).expect("blobs");
        rows
    }

    #[test]
    fn a_dump_imports_into_an_identical_database() {
        let dir = tempfile::tempdir().expect("dir");
        let rows = dump(&source(dir.path()));
        assert_eq!(
            rows[0],
            ("names".into(), b"a".to_vec(), 1u64.to_le_bytes().to_vec())
        );
        let path = dir.path().join("copy.redb");
        let mut iter = rows.clone().into_iter().map(Ok);
        import(&path, 1 << 20, &Test, &mut iter).expect("import");
        let copy = Database::open(&path).expect("open");
        assert_eq!(dump(&copy), rows);
        // An existing file is never overwritten.
        let mut again = rows.into_iter().map(Ok);
        assert!(matches!(
            import(&path, 1 << 20, &Test, &mut again),
            Err(ImportError::Exists { .. })
        ));
    }

    #[test]
    fn bad_rows_are_refused_by_name() {
        let dir = tempfile::tempdir().expect("dir");
        let cases: Vec<(DumpRow, &str)> = vec![
            (("nowhere".into(), vec![1], vec![2]), "table \"nowhere\""),
            (
                ("names".into(), b"a".to_vec(), vec![1, 2, 3]),
                "a value in table names is 3 bytes, expected 8",
            ),
            (
                ("blobs".into(), vec![1], vec![]),
                "a key in table blobs is 1 bytes, expected 8",
            ),
            (
                ("names".into(), vec![0xff], vec![0; 8]),
                "a key in table names is not UTF-8",
            ),
        ];
        for (i, (row, expected)) in cases.into_iter().enumerate() {
            let path = dir.path().join(format!("bad-{i}.redb"));
            let mut iter = std::iter::once(Ok(row));
            let err = import(&path, 1 << 20, &Test, &mut iter).expect_err("refused");
            assert!(
                err.to_string().contains(expected),
                "{err} lacks {expected:?}"
            );
        }
        let path = dir.path().join("broken.redb");
        let mut iter = std::iter::once(Err(io::Error::other("truncated")));
        assert!(matches!(
            import(&path, 1 << 20, &Test, &mut iter),
            Err(ImportError::Source(_))
        ));
    }
}
