//! [`migrate`]: a version 4 ledger, with its block bodies inside
//! `ledger.redb`, into version 5, with them in the block log.
//!
//! Also how an import ([`crate::import`]) lands the `blocks` rows of a
//! dump: they are staged in the old table and moved the same way.
//!
//! **Invariant:** the redb file says version 4, and keeps its blocks, until
//! the whole log is written and synced; only then does one durable commit
//! drop the table and write version 5. A migration interrupted at any
//! point leaves a version 4 file, and running it again starts the log
//! afresh.

use std::path::Path;

use redb::{Database, ReadableDatabase as _};

use crate::block_log::{self, LOG_DIR_NAME, LoggedBlock, SEGMENT_BYTES_TARGET};
use crate::error::{Context as _, Inconsistency, OpenError, ReadError};
use crate::ledger::begin_durable_write;
use crate::schema::{
    self, BLOCK_RECORDS, BLOCKS, BlockRecord, FORMAT_VERSION, FORMAT_VERSION_BLOCKS_IN_FILE, META,
    META_FIRST_HEIGHT, META_FORMAT_VERSION, META_HEAD, PRUNED_BLOCKS, height_key,
};
use crate::{CACHE_SIZE_BYTES_MAX, LEDGER_FILE_NAME};

/// What [`migrate`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Migrated {
    /// The ledger was at the current format already; nothing changed.
    AlreadyCurrent { height: u64 },
    /// The blocks `1..=blocks` moved into the log.
    Moved { blocks: u64 },
}

/// Moves the blocks of the ledger in `dir` (its node stopped) into the
/// block log and marks the file version 5. `progress` is called with
/// `(blocks moved, blocks in all)`.
pub fn migrate(dir: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<Migrated, OpenError> {
    let (db, path) = open_existing(dir)?;
    let (version, head) = read_version_and_head(&db).map_err(|err| open_error(&path, err))?;
    if version == FORMAT_VERSION {
        return Ok(Migrated::AlreadyCurrent { height: head });
    }
    if version != FORMAT_VERSION_BLOCKS_IN_FILE {
        return Err(OpenError::UnsupportedFormat {
            got: version,
            supported: FORMAT_VERSION,
        });
    }
    move_blocks(dir, &db, head, progress).map_err(|err| open_error(&path, err))?;
    Ok(Migrated::Moved { blocks: head })
}

/// After an import: moves the staged `blocks` rows into a new log. The
/// dump may come from a version 4 or 5 ledger; either way its rows are in
/// the old table now.
pub(crate) fn finish_import(dir: &Path) -> Result<(), OpenError> {
    let (db, path) = open_existing(dir)?;
    let (version, head) = read_version_and_head(&db).map_err(|err| open_error(&path, err))?;
    if version != FORMAT_VERSION && version != FORMAT_VERSION_BLOCKS_IN_FILE {
        // `Ledger::open` names the version it cannot read.
        return Ok(());
    }
    move_blocks(dir, &db, head, &mut |_, _| {}).map_err(|err| open_error(&path, err))
}

/// The ledger file of `dir`, which must exist.
fn open_existing(dir: &Path) -> Result<(Database, std::path::PathBuf), OpenError> {
    let path = dir.join(LEDGER_FILE_NAME);
    let db = redb::Builder::new()
        .set_cache_size(CACHE_SIZE_BYTES_MAX)
        .open(&path)
        .map_err(|source| OpenError::Database {
            path: path.clone(),
            source,
        })?;
    Ok((db, path))
}

fn read_version_and_head(db: &Database) -> Result<(u64, u64), ReadError> {
    let read = db.begin_read().context("beginning the migration")?;
    let meta = read.open_table(META).context("opening meta")?;
    let version = meta
        .get(META_FORMAT_VERSION)
        .context("reading the format version")?
        .ok_or(Inconsistency::MissingMeta {
            key: META_FORMAT_VERSION,
        })?;
    let version = schema::decode_u64("meta.format_version", version.value())?;
    let head = meta
        .get(META_HEAD)
        .context("reading the head")?
        .ok_or(Inconsistency::MissingMeta { key: META_HEAD })?;
    let head = schema::decode_head(head.value())?;
    Ok((version, head.height))
}

fn move_blocks(
    dir: &Path,
    db: &Database,
    head: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), ReadError> {
    let log_dir = dir.join(LOG_DIR_NAME);
    // What an interrupted run left: the file still has every block.
    if log_dir.exists() {
        std::fs::remove_dir_all(&log_dir).map_err(|source| {
            crate::LogFailure::new(&log_dir, "removing an unfinished log", source)
        })?;
    }
    {
        let read = db.begin_read().context("beginning the migration")?;
        let blocks = read.open_table(BLOCKS).context("opening blocks")?;
        // Only in a restored backup of a pruned ledger.
        let pruned = read
            .open_table(PRUNED_BLOCKS)
            .map(Some)
            .or_else(|err| match err {
                redb::TableError::TableDoesNotExist(_) => Ok(None),
                other => Err(other),
            })
            .context("opening pruned blocks")?;
        let records = read
            .open_table(BLOCK_RECORDS)
            .context("opening block records")?;
        // A ledger installed from a state snapshot starts at its block.
        let first = {
            let meta = read.open_table(META).context("opening meta")?;
            match meta
                .get(META_FIRST_HEIGHT)
                .context("reading the first height")?
            {
                Some(bytes) => schema::decode_u64("meta.first_height", bytes.value())?,
                None => 1,
            }
        };
        let mut moved = 0;
        let rows = (first..=head).map(|height| -> Result<LoggedBlock, ReadError> {
            let missing = |table| Inconsistency::MissingBlock {
                table,
                height,
                head,
            };
            let record = records
                .get(height_key(height))
                .context("reading a block record")?
                .ok_or(missing("block_records"))?;
            let record = BlockRecord::decode(record.value())?;
            let whole = blocks
                .get(height_key(height))
                .context("reading a block")?
                .map(|guard| guard.value().to_vec());
            let (encoded, is_pruned) = match (whole, &pruned) {
                (Some(encoded), _) => (encoded, false),
                (None, Some(pruned)) => (
                    pruned
                        .get(height_key(height))
                        .context("reading a pruned block")?
                        .ok_or(missing("blocks"))?
                        .value()
                        .to_vec(),
                    true,
                ),
                (None, None) => return Err(missing("blocks").into()),
            };
            moved += 1;
            progress(moved, head);
            Ok(LoggedBlock {
                height,
                hash: record.hash,
                parent_hash: record.parent_hash,
                encoded,
                pruned: is_pruned,
            })
        });
        block_log::write_all(&log_dir, SEGMENT_BYTES_TARGET, rows)?;
    }
    let db_write = begin_durable_write(db)?;
    db_write
        .delete_table(BLOCKS)
        .context("dropping the blocks table")?;
    db_write
        .delete_table(PRUNED_BLOCKS)
        .context("dropping the pruned blocks table")?;
    {
        let mut meta = db_write.open_table(META).context("opening meta")?;
        meta.insert(META_FORMAT_VERSION, &schema::encode_u64(FORMAT_VERSION)[..])
            .context("writing the format version")?;
    }
    db_write.commit().context("committing the migration")?;
    Ok(())
}

fn open_error(path: &Path, err: ReadError) -> OpenError {
    match err {
        ReadError::Corrupted(inconsistency) => OpenError::Corrupted {
            path: path.to_path_buf(),
            inconsistency,
        },
        ReadError::Storage(failure) => OpenError::Storage(failure),
        ReadError::Log(failure) => OpenError::Log(failure),
        ReadError::Pruned {
            height,
            bodies_from,
        } => OpenError::Corrupted {
            path: path.to_path_buf(),
            inconsistency: Inconsistency::PrunedBlockNeeded {
                height,
                bodies_from,
            },
        },
    }
}
