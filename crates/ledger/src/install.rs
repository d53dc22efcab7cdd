//! [`SnapshotInstall`]: a new ledger whose first block is the block a
//! state snapshot was taken at, and whose state is that snapshot: how a
//! node joins without replaying the chain from genesis.
//!
//! The ledger verifies nothing here (it never decodes a block); the caller
//! checked the block's certificate and every part of the state against the
//! block's state root before handing them over.
//!
//! **Invariant:** nothing appears in the data directory until the install
//! is complete. Everything is written under `<dir>/snapshot-install/`, made
//! durable, and then moved into place, the block log first and
//! `ledger.redb` last: a crash before that last rename leaves no ledger
//! file, and `open` then refuses the lone log, naming it.

use std::fs;
use std::path::{Path, PathBuf};

use govchain_crypto::Digest;
use redb::{Database, Durability};

use crate::block_log::{self, LOG_DIR_NAME, LoggedBlock, SEGMENT_BYTES_TARGET};
use crate::error::{Context as _, Inconsistency, LogFailure, OpenError, StorageFailure};
use crate::ledger::begin_durable_write;
use crate::schema::{
    self, BLOCK_RECORDS, BlockRecord, HEIGHT_BY_HASH, META, META_CHAIN_ID, META_FIRST_HEIGHT,
    META_FORMAT_VERSION, META_GENESIS_HASH, META_HEAD, QUERY_INDEX, RECENT_TRANSACTIONS, STATE,
    STATE_TREE, TRANSACTIONS, height_key,
};
use crate::{CACHE_SIZE_BYTES_MAX, Head, LEDGER_FILE_NAME};

/// Where an install is staged inside the data directory.
pub const INSTALL_DIR_NAME: &str = "snapshot-install";

/// [`SnapshotInstall::add`] writes what it took once this many bytes of
/// keys and values are waiting: a bound on the install's memory, and
/// large enough that a batch fills whole B-tree pages in key order.
pub const INSTALL_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// The block the snapshot was taken at: the installed ledger's first.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotBlock<'a> {
    pub height: u64,
    pub hash: Digest,
    pub parent_hash: Digest,
    pub state_root: Digest,
    pub timestamp_ms: u64,
    /// As the caller encodes blocks for [`crate::AppendBlock::encoded`].
    pub encoded: &'a [u8],
    /// As [`crate::AppendBlock::transactions`]: the block's transactions
    /// are indexed like those of any appended block.
    pub transactions: &'a [(Digest, Vec<u8>)],
    /// As [`crate::AppendBlock::query_keys`].
    pub query_keys: &'a [Vec<u8>],
}

/// A ledger being installed from a state snapshot.
pub struct SnapshotInstall {
    dir: PathBuf,
    staging: PathBuf,
    db: Database,
    chain_id: String,
    genesis_hash: Digest,
    state_entries: u64,
    state_bytes: u64,
    /// Taken by `add`, not yet written (see `flush`).
    state: Vec<(Vec<u8>, Vec<u8>)>,
    tree: Vec<(Vec<u8>, Vec<u8>)>,
    /// The keys' and values' bytes in `state` and `tree`.
    buffered_bytes: usize,
    /// [`INSTALL_BATCH_BYTES`]; lowered by tests.
    batch_bytes: usize,
}

impl SnapshotInstall {
    /// Starts an install into `dir`, which must hold no ledger yet (a
    /// staging directory an interrupted install left is removed).
    pub fn begin(dir: &Path, chain_id: &str, genesis_hash: Digest) -> Result<Self, OpenError> {
        for existing in [dir.join(LEDGER_FILE_NAME), dir.join(LOG_DIR_NAME)] {
            if existing.exists() {
                return Err(OpenError::AlreadyExists { path: existing });
            }
        }
        let staging = dir.join(INSTALL_DIR_NAME);
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(|source| {
                LogFailure::new(&staging, "removing an unfinished install", source)
            })?;
        }
        fs::create_dir_all(&staging).map_err(|source| OpenError::CreateDir {
            path: staging.clone(),
            source,
        })?;
        let path = staging.join(LEDGER_FILE_NAME);
        let db = redb::Builder::new()
            .set_cache_size(CACHE_SIZE_BYTES_MAX)
            .create(&path)
            .map_err(|source| OpenError::Database { path, source })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            staging,
            db,
            chain_id: chain_id.to_owned(),
            genesis_hash,
            state_entries: 0,
            state_bytes: 0,
            state: Vec::new(),
            tree: Vec::new(),
            buffered_bytes: 0,
            batch_bytes: INSTALL_BATCH_BYTES,
        })
    }

    /// Takes one verified part: its state entries and its tree nodes.
    /// They are buffered and written with the parts before or after them
    /// in batches of [`INSTALL_BATCH_BYTES`], each sorted and inserted in
    /// one write transaction: a part's keys are spread over the whole key
    /// space (parts go by key hash), so writing part by part would rewrite
    /// most of the state's B-tree pages once per part.
    pub fn add(
        &mut self,
        state: Vec<(Vec<u8>, Vec<u8>)>,
        tree: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    ) -> Result<(), StorageFailure> {
        self.state_entries += state.len() as u64;
        for (key, value) in &state {
            self.buffered_bytes += key.len() + value.len();
            self.state_bytes += (key.len() + value.len()) as u64;
        }
        self.state.extend(state);
        for (path, node) in tree {
            self.buffered_bytes += path.len() + node.len();
            self.tree.push((path, node));
        }
        if self.buffered_bytes >= self.batch_bytes {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes what `add` buffered, in key order, in one write transaction
    /// without `fsync` (`finish` commits durably).
    fn flush(&mut self) -> Result<(), StorageFailure> {
        if self.state.is_empty() && self.tree.is_empty() {
            return Ok(());
        }
        self.state.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.tree.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut db_write = self
            .db
            .begin_write()
            .context("beginning an install write")?;
        db_write
            .set_durability(Durability::None)
            .context("requesting a write without fsync")?;
        {
            let mut table = db_write.open_table(STATE).context("opening state")?;
            for (key, value) in &self.state {
                table
                    .insert(key.as_slice(), value.as_slice())
                    .context("installing state")?;
            }
            let mut nodes = db_write
                .open_table(STATE_TREE)
                .context("opening the state tree")?;
            for (path, node) in &self.tree {
                nodes
                    .insert(path.as_slice(), node.as_slice())
                    .context("installing state tree nodes")?;
            }
        }
        db_write.commit().context("committing installed state")?;
        self.state.clear();
        self.tree.clear();
        self.buffered_bytes = 0;
        Ok(())
    }

    /// Writes once `bytes` wait instead of [`INSTALL_BATCH_BYTES`].
    #[cfg(test)]
    pub(crate) fn with_batch_bytes(mut self, bytes: usize) -> Self {
        self.batch_bytes = bytes;
        self
    }

    /// How many state entries `add` took.
    pub fn state_entries(&self) -> u64 {
        self.state_entries
    }

    /// The bytes of the keys and values of the state entries `add` took.
    pub fn state_bytes(&self) -> u64 {
        self.state_bytes
    }

    /// Records `block` as the first block and the head, makes everything
    /// durable and moves the ledger into place.
    pub fn finish(mut self, block: SnapshotBlock<'_>) -> Result<(), OpenError> {
        self.flush()?;
        let head = Head {
            height: block.height,
            hash: block.hash,
            state_root: block.state_root,
            timestamp_ms: block.timestamp_ms,
        };
        let db_write = begin_durable_write(&self.db)?;
        write_identity(&db_write, &self.chain_id, self.genesis_hash, &head, &block)?;
        db_write.commit().context("committing the install")?;
        drop(self.db);
        let staged_log = self.staging.join(LOG_DIR_NAME);
        let logged = LoggedBlock {
            height: block.height,
            hash: block.hash,
            parent_hash: block.parent_hash,
            encoded: block.encoded.to_vec(),
            pruned: false,
        };
        block_log::write_all(
            &staged_log,
            SEGMENT_BYTES_TARGET,
            std::iter::once(Ok(logged)),
        )
        .map_err(|err| match err {
            crate::ReadError::Log(failure) => OpenError::Log(failure),
            crate::ReadError::Pruned {
                height,
                bodies_from,
            } => OpenError::Corrupted {
                path: staged_log.clone(),
                inconsistency: Inconsistency::PrunedBlockNeeded {
                    height,
                    bodies_from,
                },
            },
            crate::ReadError::Storage(failure) => OpenError::Storage(failure),
            crate::ReadError::Corrupted(inconsistency) => OpenError::Corrupted {
                path: staged_log.clone(),
                inconsistency,
            },
        })?;
        let moved = |from: &Path, to: &Path| {
            fs::rename(from, to).map_err(|source| {
                LogFailure::new(to, "moving the installed ledger into place", source)
            })
        };
        moved(&staged_log, &self.dir.join(LOG_DIR_NAME))?;
        moved(
            &self.staging.join(LEDGER_FILE_NAME),
            &self.dir.join(LEDGER_FILE_NAME),
        )?;
        fs::File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|source| LogFailure::new(&self.dir, "syncing the data directory", source))?;
        fs::remove_dir_all(&self.staging).map_err(|source| {
            LogFailure::new(&self.staging, "removing the staging directory", source)
        })?;
        Ok(())
    }
}

fn write_identity(
    db_write: &redb::WriteTransaction,
    chain_id: &str,
    genesis_hash: Digest,
    head: &Head,
    block: &SnapshotBlock<'_>,
) -> Result<(), StorageFailure> {
    const CONTEXT: &str = "recording the installed block";
    drop(db_write.open_table(TRANSACTIONS).context(CONTEXT)?);
    // Its transactions wait in the recent tier, as an appended block's do.
    db_write
        .open_table(RECENT_TRANSACTIONS)
        .context(CONTEXT)?
        .insert(
            height_key(block.height),
            &schema::encode_recent_row(block.transactions)[..],
        )
        .context(CONTEXT)?;
    let mut query_index = db_write.open_table(QUERY_INDEX).context(CONTEXT)?;
    for key in block.query_keys {
        query_index.insert(key.as_slice(), ()).context(CONTEXT)?;
    }
    drop(query_index);
    drop(db_write.open_table(STATE).context(CONTEXT)?);
    drop(db_write.open_table(STATE_TREE).context(CONTEXT)?);
    let record = BlockRecord {
        hash: block.hash,
        parent_hash: block.parent_hash,
        state_root: block.state_root,
        timestamp_ms: block.timestamp_ms,
        transaction_count: u32::try_from(block.transactions.len())
            .expect("a block holds far fewer than u32::MAX transactions"),
    };
    db_write
        .open_table(BLOCK_RECORDS)
        .context(CONTEXT)?
        .insert(height_key(block.height), &record.encode()[..])
        .context(CONTEXT)?;
    db_write
        .open_table(HEIGHT_BY_HASH)
        .context(CONTEXT)?
        .insert(block.hash.as_bytes(), block.height.to_be_bytes())
        .context(CONTEXT)?;
    let mut meta = db_write.open_table(META).context(CONTEXT)?;
    meta.insert(
        META_FORMAT_VERSION,
        &schema::encode_u64(schema::FORMAT_VERSION)[..],
    )
    .context(CONTEXT)?;
    meta.insert(META_CHAIN_ID, chain_id.as_bytes())
        .context(CONTEXT)?;
    meta.insert(META_GENESIS_HASH, &genesis_hash.as_bytes()[..])
        .context(CONTEXT)?;
    meta.insert(META_HEAD, &schema::encode_head(head)[..])
        .context(CONTEXT)?;
    meta.insert(META_FIRST_HEIGHT, &schema::encode_u64(block.height)[..])
        .context(CONTEXT)?;
    Ok(())
}
