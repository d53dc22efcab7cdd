//! [`Ledger`]: open, append and point reads.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use govchain_crypto::Digest;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};

use crate::block_log::{
    BlockLog, BlockRef, LOG_DIR_NAME, LogError, Recovered, SEGMENT_BYTES_TARGET,
};
use crate::check;
use crate::consensus::ConsensusStore;
use crate::error::{
    AppendError, CheckError, Context, Inconsistency, OpenError, PruneError, ReadError,
    StorageFailure,
};
use crate::recent::{self, Merge, Recent};
use crate::schema::{
    self, BLOCK_RECORDS, BlockRecord, HEIGHT_BY_HASH, META, META_CHAIN_ID, META_FORMAT_VERSION,
    META_GENESIS_HASH, META_HEAD, QUERY_INDEX, RECENT_TRANSACTIONS, STATE, STATE_TREE,
    TRANSACTIONS, height_key,
};
use crate::tree_tier::{Generation, TREE_MERGE_BLOCKS};
use crate::{
    APPEND_SIZE_BYTES_MAX, BLOCK_SIZE_BYTES_MAX, BLOCK_TRANSACTIONS_MAX, BLOCK_TREE_WRITES_MAX,
    BLOCK_WRITES_MAX, CACHE_SIZE_BYTES_MAX, CHAIN_ID_SIZE_BYTES_MAX, CHECKPOINT_BLOCKS,
    CHECKPOINT_BYTES, LEDGER_FILE_NAME, STATE_KEY_SIZE_BYTES_MAX,
};

/// How far apart consecutive validator slots checkpoint ([`Ledger::stagger`]):
/// not a multiple of [`TREE_MERGE_BLOCKS`], so neighbours merge apart too.
const STAGGER_BLOCKS: u64 = 20;
const _: () = assert!(!STAGGER_BLOCKS.is_multiple_of(TREE_MERGE_BLOCKS));
const _: () = assert!(CHECKPOINT_BLOCKS.is_multiple_of(TREE_MERGE_BLOCKS));

/// The last appended block, or the genesis position of an empty ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub height: u64,
    pub hash: Digest,
    pub state_root: Digest,
    pub timestamp_ms: u64,
}

impl Head {
    /// The head of a ledger that holds no block yet.
    pub fn genesis(genesis_hash: Digest) -> Self {
        Self {
            height: 0,
            hash: genesis_hash,
            state_root: Digest::default(),
            timestamp_ms: 0,
        }
    }
}

/// One committed block and everything executing it produced, appended
/// atomically by [`Ledger::append`].
#[derive(Clone, Copy, Debug)]
pub struct AppendBlock<'a> {
    pub height: u64,
    pub hash: Digest,
    pub parent_hash: Digest,
    pub state_root: Digest,
    pub timestamp_ms: u64,
    /// The committed block as the caller encoded it; stored opaquely.
    pub encoded: &'a [u8],
    /// `(transaction id, encoded result)` in block order.
    pub transactions: &'a [(Digest, Vec<u8>)],
    /// State changes; `None` deletes the key.
    pub writes: &'a BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The state tree's node changes that go with `writes` (node path ->
    /// encoded node; `None` deletes), so that the nodes and the state they
    /// commit to are never apart, even after a crash.
    pub tree_writes: &'a BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Keys for the query index (see [`Ledger::query`]): the caller's
    /// encoding, each new.
    pub query_keys: &'a [Vec<u8>],
}

/// Where a transaction was committed, and its encoded result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionLocation {
    pub height: u64,
    pub index: u32,
    pub result: Vec<u8>,
}

/// The durable store of one node: blocks in the block log, and the
/// transaction index and the world state in a redb file. See the crate
/// documentation for the invariants.
pub struct Ledger {
    db: Database,
    /// Where blocks become durable (see `block_log`).
    log: Arc<BlockLog>,
    /// What opening the log cut off its end, for the caller to report.
    recovered: Recovered,
    chain_id: String,
    genesis_hash: Digest,
    /// The first height held: 1, or the block a state snapshot was
    /// installed at (see `install`).
    first_height: u64,
    /// The committed head, so that [`Ledger::head`] does no I/O. Written
    /// only after a commit succeeded, under `append_lock`.
    head: RwLock<Head>,
    /// Serialises appends from reading the cached head to updating it, so
    /// each append validates against the head its predecessor left. redb's
    /// own writer lock is released inside `commit`, before the cache moves.
    /// Holds what was committed to redb since its last durable commit.
    append_lock: Mutex<SinceCheckpoint>,
    /// Shifts the heights at which this ledger checkpoints and merges its
    /// tree tier ([`Ledger::stagger`]).
    phase: std::sync::atomic::AtomicU64,
    /// The transaction ids not yet merged into the index table (see
    /// `recent`). An append holds it for writing across its commit and
    /// changes it right after, under `append_lock`; a lookup holds it for
    /// reading until its snapshot has begun. So the tier and a lookup's
    /// snapshot always describe the same commit.
    recent: RwLock<Recent>,
    /// [`recent::RECENT_TRANSACTIONS_MAX`]; lowered by tests.
    recent_max: usize,
    /// The state tree's node writes not yet merged into its table (see
    /// `tree_tier`). A merge holds it for writing across its commit and
    /// replaces the generation right after; a reader holds it for reading
    /// until its snapshot has begun, so the two always belong together.
    tree_tier: RwLock<Arc<Generation>>,
    /// Votes and views, in a file of their own (see `consensus`).
    consensus: ConsensusStore,
    /// One [`Ledger::prune_bodies`] at a time.
    prune: Mutex<()>,
}

/// A block as the ledger holds it: whole, or only what pruning kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBlock {
    pub encoded: Vec<u8>,
    /// `encoded` is what pruning kept (the caller's stripped encoding).
    pub pruned: bool,
}

/// What a caller's strip function keeps of one block for
/// [`Ledger::prune_bodies`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stripped {
    /// Stored in place of the block (its header and certificate).
    pub encoded: Vec<u8>,
    /// How many query index keys the whole block derived: summed into
    /// [`Ledger::pruned_query_keys`], since they can no longer be derived.
    pub query_keys: u64,
}

/// The caller's strip function for [`Ledger::prune_bodies`]: what to keep
/// of the encoded block at a height, or why it cannot be pruned.
pub type StripBlock<'a> = dyn FnMut(u64, &[u8]) -> Result<Stripped, String> + 'a;

/// What [`Ledger::prune_bodies`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub segments: u64,
    pub blocks: u64,
    /// The pruned segments' size before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// The first height held whole afterwards.
    pub bodies_from: u64,
    /// Stopped early because a backup was reading the blocks.
    pub held_by_backup: bool,
}

/// Appends committed to redb without `fsync` since the last durable commit:
/// the blocks a restart after a crash re-applies from the log.
#[derive(Debug, Default)]
struct SinceCheckpoint {
    blocks: u64,
    bytes: usize,
    /// Appends whose tree nodes wait in the tree tier.
    tree_blocks: u64,
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("chain_id", &self.chain_id)
            .field("genesis_hash", &self.genesis_hash)
            .field("head", &self.head())
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Opens or creates `<dir>/ledger.redb`, the block log `<dir>/blocks/`
    /// and `<dir>/consensus.redb`, creating `dir` if needed.
    ///
    /// A new ledger records `chain_id` and `genesis_hash`; an existing one
    /// must match both. The stored head is checked against the block
    /// records and the hash index before it is trusted. If the last process
    /// crashed, redb first rolls back to the last durable commit of each
    /// file, and the log's torn tail, if any, is cut off: the head is then
    /// the last checkpoint, and [`Ledger::log_head`] says up to where the
    /// caller must re-apply logged blocks.
    pub fn open(dir: &Path, chain_id: &str, genesis_hash: Digest) -> Result<Ledger, OpenError> {
        Self::open_with(dir, chain_id, genesis_hash, SEGMENT_BYTES_TARGET)
    }

    /// [`Ledger::open`] starting new log segments at `segment_bytes`
    /// instead of [`SEGMENT_BYTES_TARGET`]: smaller segments let
    /// [`Ledger::prune_bodies`] free space sooner, in more files. Segments
    /// already written keep their size.
    pub fn open_with(
        dir: &Path,
        chain_id: &str,
        genesis_hash: Digest,
        segment_bytes: u64,
    ) -> Result<Ledger, OpenError> {
        if chain_id.is_empty() || chain_id.len() > CHAIN_ID_SIZE_BYTES_MAX {
            return Err(OpenError::InvalidChainId {
                got: chain_id.len(),
                max: CHAIN_ID_SIZE_BYTES_MAX,
            });
        }
        std::fs::create_dir_all(dir).map_err(|source| OpenError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(LEDGER_FILE_NAME);
        let db = redb::Builder::new()
            .set_cache_size(CACHE_SIZE_BYTES_MAX)
            .create(&path)
            .map_err(|source| OpenError::Database {
                path: path.clone(),
                source,
            })?;
        let corrupted = |inconsistency| OpenError::Corrupted {
            path: path.clone(),
            inconsistency,
        };
        let head = load_or_initialize(&db, chain_id, genesis_hash).map_err(|err| match err {
            Loaded::Open(OpenError::UnsupportedFormat { got, supported })
                if got == schema::FORMAT_VERSION_BLOCKS_IN_FILE =>
            {
                OpenError::NeedsMigration {
                    path: path.clone(),
                    data_dir: dir.to_path_buf(),
                    got,
                    supported,
                }
            }
            Loaded::Open(err) => err,
            Loaded::Corrupted(inconsistency) => corrupted(inconsistency),
        })?;
        let pruned_through = {
            let snapshot = db.begin_read().context("beginning the open check")?;
            check::read_meta_u64(&snapshot, schema::META_PRUNED_THROUGH).map_err(
                |err| match err {
                    CheckError::Inconsistent(inconsistency) => corrupted(inconsistency),
                    CheckError::Storage(failure) => OpenError::Storage(failure),
                    CheckError::Log(failure) => OpenError::Log(failure),
                },
            )?
        };
        let log_dir = dir.join(LOG_DIR_NAME);
        let (log, recovered) = BlockLog::open(&log_dir, segment_bytes, head.height, pruned_through)
            .map_err(|err| match err {
                LogError::Failure(failure) => OpenError::Log(failure),
                LogError::Damaged(inconsistency) => OpenError::Corrupted {
                    path: log_dir.clone(),
                    inconsistency,
                },
            })?;
        let first_height = {
            let snapshot = db.begin_read().context("beginning the open check")?;
            check::read_first_height(&snapshot).map_err(|err| match err {
                CheckError::Inconsistent(inconsistency) => corrupted(inconsistency),
                CheckError::Storage(failure) => OpenError::Storage(failure),
                CheckError::Log(failure) => OpenError::Log(failure),
            })?
        };
        if let Some(first) = log.first().filter(|first| *first != first_height) {
            return Err(OpenError::LogWithoutLedger {
                log: log_dir,
                first,
                expected: first_height,
            });
        }
        reconcile(&log, &head).map_err(|err| match err {
            LogError::Failure(failure) => OpenError::Log(failure),
            LogError::Damaged(inconsistency) => OpenError::Corrupted {
                path: log_dir.clone(),
                inconsistency,
            },
        })?;
        let snapshot = db.begin_read().context("beginning the open check")?;
        check::verify_head(&snapshot, &head, genesis_hash).map_err(|err| match err {
            CheckError::Inconsistent(inconsistency) => corrupted(inconsistency),
            CheckError::Storage(failure) => OpenError::Storage(failure),
            CheckError::Log(failure) => OpenError::Log(failure),
        })?;
        let recent = load_recent(&snapshot).map_err(|err| match err {
            ReadError::Corrupted(inconsistency) => corrupted(inconsistency),
            ReadError::Storage(failure) => OpenError::Storage(failure),
            ReadError::Log(failure) => OpenError::Log(failure),
            ReadError::Pruned {
                height,
                bodies_from,
            } => corrupted(Inconsistency::PrunedBlockNeeded {
                height,
                bodies_from,
            }),
        })?;
        drop(snapshot);
        let consensus = ConsensusStore::open(dir, &db)?;
        Ok(Ledger {
            db,
            log: Arc::new(log),
            recovered,
            chain_id: chain_id.to_owned(),
            genesis_hash,
            first_height,
            head: RwLock::new(head),
            append_lock: Mutex::new(SinceCheckpoint::default()),
            phase: std::sync::atomic::AtomicU64::new(0),
            recent: RwLock::new(recent),
            recent_max: recent::RECENT_TRANSACTIONS_MAX,
            tree_tier: RwLock::new(Arc::default()),
            consensus,
            prune: Mutex::new(()),
        })
    }

    /// The committed head; cached, no I/O.
    pub fn head(&self) -> Head {
        // A writer only assigns a `Copy` value under this lock, so a
        // poisoned lock still holds a whole head.
        *self.head.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The first height this ledger holds a block of: 1, or the height a
    /// state snapshot was installed at. Blocks below it are not held.
    pub fn first_height(&self) -> u64 {
        self.first_height
    }

    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    pub fn genesis_hash(&self) -> Digest {
        self.genesis_hash
    }

    /// Appends one block: first to the block log, synced (the block is
    /// durable when this returns), then everything derived from it in one
    /// redb write transaction. That transaction is committed with
    /// [`Durability::Immediate`] every [`CHECKPOINT_BLOCKS`] blocks (or
    /// [`CHECKPOINT_BYTES`]), and without `fsync` in between: after a crash
    /// redb holds the last checkpoint, whole, and the caller re-applies
    /// the logged blocks above it.
    ///
    /// A block the log already holds (a re-application after a crash) is
    /// not logged again; its hash must be the logged one.
    ///
    /// The block must extend the head: `height == head.height + 1` and
    /// `parent_hash == head.hash`. Its hash and transaction ids must be new.
    /// The cached head moves only after the commit succeeded.
    ///
    /// # Panics
    ///
    /// If the head stored on disk differs from the cached head (a bug: only
    /// this type writes the file, and redb locks it against other
    /// processes), or if a previous append panicked.
    pub fn append(&self, block: &AppendBlock<'_>) -> Result<(), AppendError> {
        check_limits(block)?;
        let mut since = self
            .append_lock
            .lock()
            .expect("a previous append panicked; the cached head may be stale");
        let head = self.head();
        self.check_extends(&head, block)?;
        let next = Head {
            height: block.height,
            hash: block.hash,
            state_root: block.state_root,
            timestamp_ms: block.timestamp_ms,
        };
        let bytes = append_size(block);
        let phase = self.phase.load(std::sync::atomic::Ordering::Relaxed);
        let due = |every: u64| block.height.wrapping_add(phase).is_multiple_of(every);
        let checkpoint = due(CHECKPOINT_BLOCKS)
            || since.blocks + 1 >= CHECKPOINT_BLOCKS
            || since.bytes.saturating_add(bytes) >= CHECKPOINT_BYTES;
        let merge_tree =
            checkpoint || due(TREE_MERGE_BLOCKS) || since.tree_blocks + 1 >= TREE_MERGE_BLOCKS;
        let db_write = if checkpoint {
            begin_durable_write(&self.db)?
        } else {
            begin_logged_write(&self.db)?
        };
        // On error, dropping `db_write` uncommitted rolls all of it back.
        let recent = self.recent_read();
        let merge = Merge::at(
            block.height,
            recent.len(),
            block.transactions.len(),
            self.recent_max,
        );
        write_block(&db_write, block, head.height, &recent, merge)?;
        drop(recent);
        let generation = self.tree_generation();
        if merge_tree {
            merge_tree_tier(&db_write, &generation, block.tree_writes)?;
        }
        advance_head(&db_write, &head, &next)?;
        // Staged without error, so the block goes into the log; from here
        // on it is committed, whatever happens to the redb commit.
        self.log_block(block)?;
        if !merge_tree {
            // Staged at the block's height, which no reader sees before
            // the commit moves the head.
            generation.stage(block.height, block.tree_writes);
        }
        // Lookups wait out the commit: none may see the block in a snapshot
        // while its ids are in neither tier.
        let mut recent = self
            .recent
            .write()
            .expect("the recent index is only changed after a commit, and that cannot panic");
        if merge_tree {
            // Tree readers too: none may pair the merged generation with a
            // snapshot that lacks its rows, or the reverse.
            let tier = self.tree_tier_write();
            db_write.commit().context("committing a block")?;
            next_generation(tier);
        } else {
            if let Err(err) = db_write.commit().context("committing a block") {
                generation.unstage(block.height);
                return Err(err.into());
            }
        }
        recent.committed(block.height, merge, block.transactions);
        drop(recent);
        *since = if checkpoint {
            SinceCheckpoint::default()
        } else {
            SinceCheckpoint {
                blocks: since.blocks + 1,
                bytes: since.bytes.saturating_add(bytes),
                tree_blocks: if merge_tree { 0 } else { since.tree_blocks + 1 },
            }
        };
        let mut cached = self.head.write().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(cached.height, head.height, "appends are serialised");
        *cached = next;
        Ok(())
    }

    /// Staggers this ledger's checkpoints and tree merges against other
    /// validators': `slot` (the validator's index) shifts the heights at
    /// which they happen, by `20 × slot` blocks modulo [`CHECKPOINT_BLOCKS`].
    /// Without it every validator checkpoints at the same height: each
    /// stalls its commits for the checkpoint's write-out (60–150 ms in a
    /// 20 s bench run at 1,400 tx/s, growing with the chain), together, so
    /// consensus stalls too. Staggered, a backup's stall hides behind the others'
    /// quorum. Slots 0–3 merge at four different phases of the tree
    /// tier's 16 blocks and checkpoint at four of `CHECKPOINT_BLOCKS`.
    /// Checkpoints still come at most `CHECKPOINT_BLOCKS` appends apart.
    pub fn stagger(&self, slot: u32) {
        let phase = (u64::from(slot) * STAGGER_BLOCKS) % CHECKPOINT_BLOCKS;
        self.phase
            .store(phase, std::sync::atomic::Ordering::Relaxed);
    }

    /// Writes `block` to the log and syncs it, unless the log holds it
    /// already (re-applied after a crash), in which case it must be the
    /// same block.
    fn log_block(&self, block: &AppendBlock<'_>) -> Result<(), AppendError> {
        if self.log.last() >= block.height {
            let logged = self.log.links(block.height).map_err(log_to_append)?;
            let Some((hash, _)) = logged else {
                return Err(Inconsistency::LogGap {
                    segment: self.log.dir().display().to_string(),
                    first: block.height,
                    expected: self.log.first().unwrap_or(1),
                }
                .into());
            };
            if hash != block.hash {
                return Err(Inconsistency::LogDiffers {
                    height: block.height,
                    logged: hash,
                    indexed: block.hash,
                }
                .into());
            }
            return Ok(());
        }
        self.log.append(
            BlockRef {
                height: block.height,
                hash: block.hash,
                parent_hash: block.parent_hash,
                encoded: block.encoded,
                pruned: false,
            },
            true,
        )?;
        Ok(())
    }

    /// The height of the last block in the log. Above [`Ledger::head`]
    /// only after a crash, until the caller has re-applied the blocks
    /// `head + 1..=log_head` ([`Ledger::logged_block`]) with `append`.
    pub fn log_head(&self) -> u64 {
        self.log.last()
    }

    /// The encoded block at `height` as the log holds it, whether or not
    /// it is applied yet; for re-applying blocks after a crash.
    pub fn logged_block(&self, height: u64) -> Result<Option<Vec<u8>>, ReadError> {
        self.log
            .read(height)?
            .map(|block| self.whole(block))
            .transpose()
    }

    /// The first height whose block is held whole: [`Ledger::first_height`]
    /// unless older blocks were pruned ([`Ledger::prune_bodies`]).
    pub fn bodies_from(&self) -> u64 {
        self.log.bodies_from().unwrap_or(self.first_height)
    }

    /// How many query index keys the pruned blocks derived (0 if none was
    /// pruned), as the strip function counted them.
    pub fn pruned_query_keys(&self) -> Result<u64, ReadError> {
        let snapshot = self.begin_read()?;
        check::read_meta_u64(&snapshot, schema::META_PRUNED_QUERY_KEYS).map_err(|err| match err {
            CheckError::Inconsistent(inconsistency) => ReadError::Corrupted(inconsistency),
            CheckError::Storage(failure) => ReadError::Storage(failure),
            CheckError::Log(failure) => ReadError::Log(failure),
        })
    }

    /// The block at `height` whole, or what pruning kept of it (its
    /// header and certificate); `None` above the head (and at 0).
    pub fn block_or_header(&self, height: u64) -> Result<Option<StoredBlock>, ReadError> {
        if height == 0 || height > self.head().height {
            return Ok(None);
        }
        Ok(self.log.read(height)?.map(|block| StoredBlock {
            encoded: block.encoded,
            pruned: block.pruned,
        }))
    }

    /// Replaces the blocks of every sealed log segment that ends below
    /// `keep_from` (and at or below the head) with what `strip(height,
    /// block)` keeps of them: the caller keeps headers and certificates,
    /// so the chain stays verifiable while the transactions go. Reads of
    /// a pruned block's body then fail with [`ReadError::Pruned`].
    ///
    /// Segment by segment, oldest first: the rewrite is written and
    /// synced beside the segment, the prune is recorded in a durable redb
    /// commit (also a checkpoint), and then the rewrite replaces the
    /// segment by a rename. A crash at any point leaves each segment whole
    /// or pruned; `open` finishes a recorded rename. The last segment is
    /// never pruned, so a segment of [`crate::SEGMENT_BYTES_TARGET`] bytes
    /// is the grain. Stops early, untouched, while a backup
    /// ([`Ledger::snapshot`]) reads the blocks.
    pub fn prune_bodies(
        &self,
        keep_from: u64,
        strip: &mut StripBlock<'_>,
    ) -> Result<PruneReport, PruneError> {
        let _one_at_a_time = self.prune.lock().unwrap_or_else(PoisonError::into_inner);
        let keep_from = keep_from.min(self.head().height.saturating_add(1));
        let mut report = PruneReport::default();
        for (first, _) in self.log.prunable(keep_from) {
            let Some(_no_backup) = self.log.lock_for_prune() else {
                report.held_by_backup = true;
                break;
            };
            let mut query_keys = 0u64;
            let segment = self.log.write_pruned(first, &mut |height, block| {
                let stripped = strip(height, block)?;
                query_keys += stripped.query_keys;
                Ok(stripped.encoded)
            })?;
            {
                let mut since = self
                    .append_lock
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let db_write = begin_durable_write(&self.db)?;
                {
                    let mut meta = db_write.open_table(META).context("opening meta")?;
                    let before = match meta
                        .get(schema::META_PRUNED_QUERY_KEYS)
                        .context("reading the pruned query keys")?
                    {
                        Some(bytes) => schema::decode_u64("meta.pruned_query_keys", bytes.value())
                            .map_err(ReadError::from)?,
                        None => 0,
                    };
                    meta.insert(
                        schema::META_PRUNED_QUERY_KEYS,
                        &schema::encode_u64(before + query_keys)[..],
                    )
                    .context("recording the pruned query keys")?;
                    meta.insert(
                        schema::META_PRUNED_THROUGH,
                        &schema::encode_u64(segment.last)[..],
                    )
                    .context("recording a prune")?;
                }
                self.commit_checkpoint(db_write, &mut since, "committing a prune")?;
            }
            self.log.install_pruned(&segment).map_err(ReadError::from)?;
            report.segments += 1;
            report.blocks += segment.last - segment.first + 1;
            report.bytes_before += segment.bytes_before;
            report.bytes_after += segment.bytes_after;
        }
        report.bodies_from = self.bodies_from();
        Ok(report)
    }

    fn whole(&self, block: crate::block_log::LoggedBlock) -> Result<Vec<u8>, ReadError> {
        if block.pruned {
            return Err(ReadError::Pruned {
                height: block.height,
                bodies_from: self.bodies_from(),
            });
        }
        Ok(block.encoded)
    }

    /// What opening had to cut off the end of the log: a record torn by a
    /// crash, never one that an `append` had returned for.
    pub fn recovered(&self) -> &Recovered {
        &self.recovered
    }

    /// Makes every append so far durable in redb too, so that a restart
    /// has nothing to re-apply. Called on drop.
    pub fn checkpoint(&self) -> Result<(), StorageFailure> {
        let mut since = self
            .append_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if since.blocks == 0 {
            return Ok(());
        }
        let db_write = begin_durable_write(&self.db)?;
        self.commit_checkpoint(db_write, &mut since, "committing a checkpoint")
    }

    /// Merges the tree tier into `db_write`, a durable write begun under
    /// the append lock (`since`), and commits it: every append so far is
    /// then in redb, whole.
    fn commit_checkpoint(
        &self,
        db_write: WriteTransaction,
        since: &mut SinceCheckpoint,
        context: &'static str,
    ) -> Result<(), StorageFailure> {
        merge_tree_tier(&db_write, &self.tree_generation(), &BTreeMap::new())?;
        let tier = self.tree_tier_write();
        db_write.commit().context(context)?;
        next_generation(tier);
        *since = SinceCheckpoint::default();
        Ok(())
    }

    /// A snapshot of redb with every append so far in it, the tree tier
    /// merged: for readers that walk whole tables (the check, backups).
    /// Appends wait until it has begun.
    pub(crate) fn begin_checkpointed_read(&self) -> Result<ReadTransaction, StorageFailure> {
        let mut since = self
            .append_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if since.blocks > 0 {
            let db_write = begin_durable_write(&self.db)?;
            self.commit_checkpoint(db_write, &mut since, "committing a checkpoint")?;
        }
        self.db.begin_read().context("beginning a snapshot")
    }

    /// The tree tier's current generation.
    fn tree_generation(&self) -> Arc<Generation> {
        Arc::clone(
            &self
                .tree_tier
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    fn tree_tier_write(&self) -> std::sync::RwLockWriteGuard<'_, Arc<Generation>> {
        self.tree_tier
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn check_extends(&self, head: &Head, block: &AppendBlock<'_>) -> Result<(), AppendError> {
        let expected = head
            .height
            .checked_add(1)
            .ok_or(AppendError::HeightExhausted { head: head.height })?;
        if block.height != expected {
            return Err(AppendError::WrongHeight {
                got: block.height,
                expected,
            });
        }
        if block.parent_hash != head.hash {
            return Err(AppendError::WrongParent {
                height: block.height,
                got: block.parent_hash,
                expected: head.hash,
            });
        }
        // The genesis hash is the parent of block 1 but not in the hash
        // index, so the index alone would not catch a block reusing it.
        if block.hash == self.genesis_hash {
            return Err(AppendError::GenesisHash {
                height: block.height,
                hash: block.hash,
            });
        }
        Ok(())
    }

    /// The encoded block at `height`, or `None` above the head (and at 0).
    pub fn block_by_height(&self, height: u64) -> Result<Option<Vec<u8>>, ReadError> {
        if height == 0 || height > self.head().height {
            return Ok(None);
        }
        self.log
            .read(height)?
            .map(|block| self.whole(block))
            .transpose()
    }

    /// The height and encoded block whose hash is `hash`. The genesis hash
    /// names no stored block, so it gives `None`.
    pub fn block_by_hash(&self, hash: &Digest) -> Result<Option<(u64, Vec<u8>)>, ReadError> {
        let snapshot = self.begin_read()?;
        let index = open_read(&snapshot, HEIGHT_BY_HASH)?;
        let Some(height) = index
            .get(hash.as_bytes())
            .context("reading the hash index")?
            .map(|guard| u64::from_be_bytes(guard.value()))
        else {
            return Ok(None);
        };
        drop(index);
        drop(snapshot);
        // Logged before its index entry was committed.
        let block = self
            .log
            .read(height)?
            .ok_or(Inconsistency::HashIndexDangling {
                hash: *hash,
                height,
            })?;
        Ok(Some((height, self.whole(block)?)))
    }

    pub fn transaction(&self, id: &Digest) -> Result<Option<TransactionLocation>, ReadError> {
        // The recent tier, then a snapshot begun before letting go of it:
        // no commit comes between, so an id missing from the tier is in
        // the snapshot's index if it is committed at all.
        let recent = self.recent_read();
        if let Some(entry) = recent.get(id) {
            return Ok(Some(TransactionLocation {
                height: entry.height,
                index: entry.index,
                result: entry.result.clone(),
            }));
        }
        let snapshot = self.begin_read()?;
        drop(recent);
        let transactions = open_read(&snapshot, TRANSACTIONS)?;
        let Some(guard) = transactions
            .get(id.as_bytes())
            .context("reading a transaction")?
        else {
            return Ok(None);
        };
        let (height, index, result) = schema::decode_transaction(guard.value())?;
        Ok(Some(TransactionLocation {
            height,
            index,
            result: result.to_vec(),
        }))
    }

    /// How many keys the query index holds (an audit compares it with the
    /// keys its blocks derive).
    pub fn query_index_len(&self) -> Result<u64, ReadError> {
        use redb::ReadableTableMetadata as _;
        let snapshot = self.begin_read()?;
        let index = open_read(&snapshot, QUERY_INDEX)?;
        Ok(index.len().context("counting the query index")?)
    }

    /// Up to `limit` query index keys that start with `prefix` and sort
    /// after `after` (all from the first when `None`), in key order, from
    /// one snapshot.
    pub fn query(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, ReadError> {
        use std::ops::Bound;
        let snapshot = self.begin_read()?;
        let index = open_read(&snapshot, QUERY_INDEX)?;
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut keys = Vec::new();
        let range = index
            .range::<&[u8]>((start, Bound::Unbounded))
            .context("reading the query index")?;
        for entry in range {
            let (key, _) = entry.context("reading the query index")?;
            let key = key.value();
            if !key.starts_with(prefix) || keys.len() >= limit {
                break;
            }
            keys.push(key.to_vec());
        }
        Ok(keys)
    }

    /// The world-state value of `key` as of the head.
    pub fn state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ReadError> {
        let snapshot = self.begin_read()?;
        let state = open_read(&snapshot, STATE)?;
        let value = state.get(key).context("reading state")?;
        Ok(value.map(|guard| guard.value().to_vec()))
    }

    /// The state tree node stored at `path` as of the head.
    pub fn state_tree_node(&self, path: &[u8]) -> Result<Option<Vec<u8>>, ReadError> {
        self.head_view()?.state_tree_node(path)
    }

    /// A consistent view of the head for reads that must agree with each
    /// other: a value, its state tree nodes and the head block.
    pub fn head_view(&self) -> Result<HeadView, ReadError> {
        // The generation that goes with the snapshot: no merge commits
        // between taking the one and beginning the other.
        let tier = self
            .tree_tier
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let snapshot = self.begin_read()?;
        let tree_tier = Arc::clone(&tier);
        drop(tier);
        let head = {
            let meta = open_read(&snapshot, META)?;
            let stored = meta.get(META_HEAD).context("reading the head")?;
            let stored = stored.ok_or(Inconsistency::MissingMeta { key: META_HEAD })?;
            schema::decode_head(stored.value())?
        };
        Ok(HeadView {
            head,
            state: open_read(&snapshot, STATE)?,
            tree: open_read(&snapshot, STATE_TREE)?,
            tree_tier,
            log: self.log.clone(),
        })
    }

    /// Structural self-check; see [`check`](crate::check) for what it
    /// covers. Checkpoints first (see `tree_tier`), then runs on one
    /// snapshot, concurrently with appends.
    pub fn check(&self) -> Result<crate::CheckReport, CheckError> {
        let snapshot = self.begin_checkpointed_read()?;
        check::check(&snapshot, self.genesis_hash, &self.log)
    }

    pub(crate) fn consensus_store(&self) -> &ConsensusStore {
        &self.consensus
    }

    pub(crate) fn block_log(&self) -> &Arc<BlockLog> {
        &self.log
    }

    #[cfg(test)]
    pub(crate) fn database(&self) -> &Database {
        &self.db
    }

    fn begin_read(&self) -> Result<ReadTransaction, ReadError> {
        Ok(self.db.begin_read().context("beginning a read")?)
    }

    fn recent_read(&self) -> std::sync::RwLockReadGuard<'_, Recent> {
        self.recent
            .read()
            .expect("the recent index is only changed after a commit, and that cannot panic")
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        // A failed checkpoint loses nothing: the log holds every block, and
        // the next open re-applies them.
        let _ = self.checkpoint();
    }
}

/// Checks on open that the log holds every block up to the index's head,
/// and the head's own block.
fn reconcile(log: &BlockLog, head: &Head) -> Result<(), LogError> {
    let logged = log.last();
    if logged < head.height {
        return Err(Inconsistency::LogBehindIndex {
            logged,
            head: head.height,
        }
        .into());
    }
    if head.height > 0 {
        let (hash, _) = log
            .links(head.height)?
            .expect("the log holds every height up to its last");
        if hash != head.hash {
            return Err(Inconsistency::LogDiffers {
                height: head.height,
                logged: hash,
                indexed: head.hash,
            }
            .into());
        }
    }
    Ok(())
}

fn log_to_append(err: LogError) -> AppendError {
    match err {
        LogError::Failure(failure) => AppendError::Log(failure),
        LogError::Damaged(inconsistency) => AppendError::Corrupted(inconsistency),
    }
}

/// Rebuilds the recent tier from the rows: every listed id not yet in the
/// index table is waiting.
fn load_recent(snapshot: &ReadTransaction) -> Result<Recent, ReadError> {
    let rows = open_read(snapshot, RECENT_TRANSACTIONS)?;
    let transactions = open_read(snapshot, TRANSACTIONS)?;
    let mut recent = Recent::default();
    for row in rows.iter().context("reading the recent transactions")? {
        let (key, value) = row.context("reading the recent transactions")?;
        let height = schema::height_from_key(key.value());
        for (index, entry) in (0_u32..).zip(schema::decode_recent_row(value.value())) {
            let (id, result) = entry?;
            let merged = transactions
                .get(id.as_bytes())
                .context("reading the transaction index")?
                .is_some();
            if !merged {
                let result = result.to_vec();
                recent.insert(
                    id,
                    recent::Entry {
                        height,
                        index,
                        result,
                    },
                );
            }
        }
    }
    Ok(recent)
}

fn open_read<K: redb::Key + 'static, V: redb::Value + 'static>(
    snapshot: &ReadTransaction,
    table: TableDefinition<'_, K, V>,
) -> Result<redb::ReadOnlyTable<K, V>, StorageFailure> {
    snapshot
        .open_table(table)
        .context("opening a table to read")
}

/// A write between checkpoints: the block it derives from is in the log
/// already, so redb need not `fsync`; the next durable commit persists it
/// (and lets redb reuse the pages it freed).
fn begin_logged_write(db: &Database) -> Result<WriteTransaction, StorageFailure> {
    let mut db_write = db.begin_write().context("beginning a write")?;
    db_write
        .set_durability(Durability::None)
        .context("requesting a write without fsync")?;
    Ok(db_write)
}

/// Every write transaction is durable before `commit` returns, and records
/// redb's allocator state ("quick repair") so that reopening after a crash
/// does not walk the whole file, at the price of a second fsync per commit.
pub(crate) fn begin_durable_write(db: &Database) -> Result<WriteTransaction, StorageFailure> {
    let mut db_write = db.begin_write().context("beginning a write")?;
    db_write
        .set_durability(Durability::Immediate)
        .context("requesting a durable write")?;
    db_write.set_quick_repair(true);
    Ok(db_write)
}

/// Why loading the identity failed: `Corrupted` still needs the path.
enum Loaded {
    Open(OpenError),
    Corrupted(Inconsistency),
}

impl From<StorageFailure> for Loaded {
    fn from(failure: StorageFailure) -> Self {
        Self::Open(OpenError::Storage(failure))
    }
}

impl From<Inconsistency> for Loaded {
    fn from(inconsistency: Inconsistency) -> Self {
        Self::Corrupted(inconsistency)
    }
}

impl From<OpenError> for Loaded {
    fn from(err: OpenError) -> Self {
        Self::Open(err)
    }
}

/// Writes the identity and the genesis head into a new file (all tables are
/// created in the same transaction), or checks the identity of an existing
/// one and returns its stored head.
fn load_or_initialize(db: &Database, chain_id: &str, genesis_hash: Digest) -> Result<Head, Loaded> {
    let db_write = begin_durable_write(db)?;
    let version = {
        let meta = db_write.open_table(META).context("opening meta")?;
        let version = meta
            .get(META_FORMAT_VERSION)
            .context("reading the format version")?;
        match version {
            Some(bytes) => Some(schema::decode_u64("meta.format_version", bytes.value())?),
            // The identity is written in one transaction, so a half-written
            // meta table is damage, not an interrupted creation.
            None if !meta.is_empty().context("reading meta")? => {
                return Err(Inconsistency::MissingMeta {
                    key: META_FORMAT_VERSION,
                }
                .into());
            }
            None => None,
        }
    };
    match version {
        None => {
            initialize(&db_write, chain_id, genesis_hash)?;
            db_write.commit().context("creating the ledger")?;
            Ok(Head::genesis(genesis_hash))
        }
        Some(version) => {
            let head = load_identity(&db_write, version, chain_id, genesis_hash)?;
            db_write.abort().context("ending the open transaction")?;
            Ok(head)
        }
    }
}

fn initialize(
    db_write: &WriteTransaction,
    chain_id: &str,
    genesis_hash: Digest,
) -> Result<(), StorageFailure> {
    const CONTEXT: &str = "creating the ledger";
    // Opening a table in a write transaction creates it, so that readers
    // never meet a missing table.
    drop(db_write.open_table(BLOCK_RECORDS).context(CONTEXT)?);
    drop(db_write.open_table(HEIGHT_BY_HASH).context(CONTEXT)?);
    drop(db_write.open_table(TRANSACTIONS).context(CONTEXT)?);
    drop(db_write.open_table(RECENT_TRANSACTIONS).context(CONTEXT)?);
    drop(db_write.open_table(STATE).context(CONTEXT)?);
    drop(db_write.open_table(STATE_TREE).context(CONTEXT)?);
    drop(db_write.open_table(QUERY_INDEX).context(CONTEXT)?);
    let mut meta = db_write.open_table(META).context(CONTEXT)?;
    let version = schema::encode_u64(schema::FORMAT_VERSION);
    let head = schema::encode_head(&Head::genesis(genesis_hash));
    meta.insert(META_FORMAT_VERSION, &version[..])
        .context(CONTEXT)?;
    meta.insert(META_CHAIN_ID, chain_id.as_bytes())
        .context(CONTEXT)?;
    meta.insert(META_GENESIS_HASH, &genesis_hash.as_bytes()[..])
        .context(CONTEXT)?;
    meta.insert(META_HEAD, &head[..]).context(CONTEXT)?;
    Ok(())
}

fn load_identity(
    db_write: &WriteTransaction,
    version: u64,
    chain_id: &str,
    genesis_hash: Digest,
) -> Result<Head, Loaded> {
    if version != schema::FORMAT_VERSION {
        return Err(OpenError::UnsupportedFormat {
            got: version,
            supported: schema::FORMAT_VERSION,
        }
        .into());
    }
    let meta = db_write.open_table(META).context("opening meta")?;
    let stored_chain_id = read_meta(&meta, META_CHAIN_ID)?;
    let stored_chain_id =
        String::from_utf8(stored_chain_id).map_err(|err| Inconsistency::ChainIdNotUtf8 {
            len: err.as_bytes().len(),
        })?;
    if stored_chain_id != chain_id {
        return Err(OpenError::ChainIdMismatch {
            stored: stored_chain_id,
            given: chain_id.to_owned(),
        }
        .into());
    }
    let stored_genesis =
        schema::decode_digest("meta.genesis_hash", &read_meta(&meta, META_GENESIS_HASH)?)?;
    if stored_genesis != genesis_hash {
        return Err(OpenError::GenesisMismatch {
            stored: stored_genesis,
            given: genesis_hash,
        }
        .into());
    }
    Ok(schema::decode_head(&read_meta(&meta, META_HEAD)?)?)
}

fn read_meta(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &'static str,
) -> Result<Vec<u8>, Loaded> {
    let value = meta.get(key).context("reading meta")?;
    Ok(value
        .ok_or(Inconsistency::MissingMeta { key })?
        .value()
        .to_vec())
}

/// The bytes an append stores, as `check_limits` counts them.
fn append_size(block: &AppendBlock<'_>) -> usize {
    let mut size = block.encoded.len();
    for (_, result) in block.transactions {
        size = size.saturating_add(result.len());
    }
    for (key, value) in block.writes.iter().chain(block.tree_writes) {
        size = size
            .saturating_add(key.len())
            .saturating_add(value.as_ref().map_or(0, Vec::len));
    }
    size
}

/// Rejects a block over the storage ceilings before any write begins.
fn check_limits(block: &AppendBlock<'_>) -> Result<(), AppendError> {
    let limit = |what, got, max| {
        if got > max {
            Err(AppendError::LimitExceeded {
                height: block.height,
                what,
                got,
                max,
            })
        } else {
            Ok(())
        }
    };
    limit(
        "the encoded size in bytes",
        block.encoded.len(),
        BLOCK_SIZE_BYTES_MAX,
    )?;
    limit(
        "the transaction count",
        block.transactions.len(),
        BLOCK_TRANSACTIONS_MAX,
    )?;
    limit(
        "the state write count",
        block.writes.len(),
        BLOCK_WRITES_MAX,
    )?;
    limit(
        "the state tree write count",
        block.tree_writes.len(),
        BLOCK_TREE_WRITES_MAX,
    )?;
    let mut size = block.encoded.len();
    for (_, result) in block.transactions {
        size = size.saturating_add(result.len());
    }
    for (key, value) in block.writes {
        limit(
            "a state key size in bytes",
            key.len(),
            STATE_KEY_SIZE_BYTES_MAX,
        )?;
        let value_len = value.as_ref().map_or(0, Vec::len);
        size = size.saturating_add(key.len()).saturating_add(value_len);
    }
    for (path, node) in block.tree_writes {
        let node_len = node.as_ref().map_or(0, Vec::len);
        size = size.saturating_add(path.len()).saturating_add(node_len);
    }
    limit("the total size in bytes", size, APPEND_SIZE_BYTES_MAX)
}

/// Stages every row of `block` in `db_write`; nothing is visible until the
/// caller commits, and then `recent` must learn of `merge`.
fn write_block(
    db_write: &WriteTransaction,
    block: &AppendBlock<'_>,
    head_height: u64,
    recent: &Recent,
    merge: Merge,
) -> Result<(), AppendError> {
    index_hash(db_write, block)?;
    store_block(db_write, block, head_height)?;
    index_transactions(db_write, block, recent, merge)?;
    apply_writes(db_write, STATE, block.writes)?;
    // The tree's nodes go to the tree tier, or are merged by the caller.
    index_queries(db_write, block)?;
    Ok(())
}

fn index_queries(db_write: &WriteTransaction, block: &AppendBlock<'_>) -> Result<(), AppendError> {
    let mut index = db_write
        .open_table(QUERY_INDEX)
        .context("opening the query index")?;
    // In key order: consecutive inserts then mostly land in the leaf the
    // last one loaded (a block's keys come in transaction order, spread
    // over the index by signer and record).
    let mut keys: Vec<&[u8]> = block.query_keys.iter().map(Vec::as_slice).collect();
    keys.sort_unstable();
    for key in keys {
        index.insert(key, ()).context("writing the query index")?;
    }
    Ok(())
}

fn index_hash(db_write: &WriteTransaction, block: &AppendBlock<'_>) -> Result<(), AppendError> {
    let mut index = db_write
        .open_table(HEIGHT_BY_HASH)
        .context("opening the hash index")?;
    let previous = index
        .insert(block.hash.as_bytes(), block.height.to_be_bytes())
        .context("indexing the block hash")?;
    if let Some(existing) = previous {
        return Err(AppendError::DuplicateBlockHash {
            height: block.height,
            hash: block.hash,
            existing: u64::from_be_bytes(existing.value()),
        });
    }
    Ok(())
}

fn store_block(
    db_write: &WriteTransaction,
    block: &AppendBlock<'_>,
    head_height: u64,
) -> Result<(), AppendError> {
    let transaction_count =
        u32::try_from(block.transactions.len()).map_err(|_| AppendError::LimitExceeded {
            height: block.height,
            what: "the transaction count",
            got: block.transactions.len(),
            max: BLOCK_TRANSACTIONS_MAX,
        })?;
    let record = BlockRecord {
        hash: block.hash,
        parent_hash: block.parent_hash,
        state_root: block.state_root,
        timestamp_ms: block.timestamp_ms,
        transaction_count,
    };
    let key = height_key(block.height);
    // A row already at the new height lies above the head: damage that an
    // insert must not silently overwrite.
    let outside = |table| Inconsistency::BlockOutsideChain {
        table,
        height: block.height,
        head: head_height,
    };
    let mut records = db_write
        .open_table(BLOCK_RECORDS)
        .context("opening block records")?;
    if records
        .insert(key, &record.encode()[..])
        .context("storing a block record")?
        .is_some()
    {
        return Err(outside("block_records").into());
    }
    Ok(())
}

fn index_transactions(
    db_write: &WriteTransaction,
    block: &AppendBlock<'_>,
    recent: &Recent,
    merge: Merge,
) -> Result<(), AppendError> {
    let mut transactions = db_write
        .open_table(TRANSACTIONS)
        .context("opening the transaction index")?;
    let duplicate = |id: &Digest, existing| AppendError::DuplicateTransaction {
        id: *id,
        height: block.height,
        existing,
    };
    let mut in_block = HashSet::with_capacity(block.transactions.len());
    for (id, _) in block.transactions {
        if let Some(entry) = recent.get(id) {
            return Err(duplicate(id, entry.height));
        }
        if !in_block.insert(id) {
            return Err(duplicate(id, block.height));
        }
        if let Some(existing) = transactions
            .get(id.as_bytes())
            .context("looking up a transaction id")?
        {
            let (existing, _, _) = schema::decode_transaction(existing.value())?;
            return Err(duplicate(id, existing));
        }
    }

    // The merged range in key order, so the inserts walk the index's
    // leaves once. `check_limits` bounded the count far below `u32::MAX`.
    let mut merging: Vec<(&Digest, u64, u32, &[u8])> = recent
        .merging(merge)
        .map(|(id, entry)| (id, entry.height, entry.index, &entry.result[..]))
        .collect();
    merging.extend(
        (0_u32..)
            .zip(block.transactions)
            .filter(|(_, (id, _))| merge.covers(id))
            .map(|(index, (id, result))| (id, block.height, index, &result[..])),
    );
    merging.sort_unstable_by_key(|(id, ..)| **id);
    for (id, height, index, result) in merging {
        let record = schema::encode_transaction(height, index, result);
        transactions
            .insert(id.as_bytes(), &record[..])
            .context("indexing a transaction")?;
    }

    let mut rows = db_write
        .open_table(RECENT_TRANSACTIONS)
        .context("opening the recent transactions")?;
    match merge {
        Merge::Range(_) => {
            let row = schema::encode_recent_row(block.transactions);
            rows.insert(height_key(block.height), &row[..])
                .context("storing the recent transactions")?;
            let expired = recent::expired_through(block.height);
            if expired > 0 {
                rows.remove(height_key(expired))
                    .context("deleting merged recent transactions")?;
            }
        }
        // Every row's ids are merged now, this block's included.
        Merge::All => {
            rows.retain(|_, _| false)
                .context("deleting merged recent transactions")?;
        }
    }
    Ok(())
}

fn apply_writes(
    db_write: &WriteTransaction,
    table: TableDefinition<'_, &'static [u8], &'static [u8]>,
    writes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
) -> Result<(), StorageFailure> {
    let mut state = db_write.open_table(table).context("opening state")?;
    for (key, value) in writes {
        match value {
            Some(value) => {
                state
                    .insert(key.as_slice(), value.as_slice())
                    .context("writing state")?;
            }
            None => {
                state.remove(key.as_slice()).context("deleting state")?;
            }
        }
    }
    Ok(())
}

/// Writes the tree tier's nodes, and `newer` over them (the writes of the
/// block being appended), into the `state_tree` table, in path order.
fn merge_tree_tier(
    db_write: &WriteTransaction,
    generation: &Generation,
    newer: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
) -> Result<(), StorageFailure> {
    let mut tree = db_write
        .open_table(STATE_TREE)
        .context("opening the state tree")?;
    generation.merge_rows(newer, |path, node| {
        match node {
            Some(node) => {
                tree.insert(path, node)
                    .context("merging the state tree's nodes")?;
            }
            None => {
                tree.remove(path)
                    .context("merging the state tree's nodes")?;
            }
        }
        Ok(())
    })
}

/// Replaces the merged generation, whose rows were just committed, by an
/// empty one, then lets readers in. The merged one is freed when its last
/// reader lets go of it (here, usually, outside the lock).
fn next_generation(mut tier: std::sync::RwLockWriteGuard<'_, Arc<Generation>>) {
    let next = Arc::new(Generation::with_capacity(tier.len()));
    let merged = std::mem::replace(&mut *tier, next);
    drop(tier);
    drop(merged);
}

/// The head and the tables a read of state with its proof needs, all from
/// one snapshot: no append lands between its reads.
pub struct HeadView {
    head: Head,
    state: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    tree: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    /// The tree tier's generation that goes with `tree`.
    tree_tier: Arc<Generation>,
    log: Arc<BlockLog>,
}

impl HeadView {
    /// The head this view shows.
    pub fn head(&self) -> Head {
        self.head
    }

    /// The world-state value of `key` at this head.
    pub fn state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ReadError> {
        let value = self.state.get(key).context("reading state")?;
        Ok(value.map(|guard| guard.value().to_vec()))
    }

    /// The state tree node at `path` at this head.
    pub fn state_tree_node(&self, path: &[u8]) -> Result<Option<Vec<u8>>, ReadError> {
        if let Some(node) = self.tree_tier.get(path, self.head.height) {
            return Ok(node);
        }
        let node = self.tree.get(path).context("reading the state tree")?;
        Ok(node.map(|guard| guard.value().to_vec()))
    }

    /// Calls `each` with every state entry at this head, in key order;
    /// stops at the first error `each` returns.
    pub fn for_each_state<E: From<ReadError>>(
        &self,
        mut each: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let entries = self
            .state
            .iter()
            .context("walking state")
            .map_err(ReadError::from)?;
        for entry in entries {
            let (key, value) = entry.context("walking state").map_err(ReadError::from)?;
            each(key.value(), value.value())?;
        }
        Ok(())
    }

    /// The head block as its caller encoded it; `None` at genesis.
    pub fn head_block(&self) -> Result<Option<Vec<u8>>, ReadError> {
        if self.head.height == 0 {
            return Ok(None);
        }
        Ok(self.log.read(self.head.height)?.map(|block| block.encoded))
    }
}

/// Replaces the stored head `current` by `next`.
///
/// # Panics
///
/// If the stored head is not `current` (the cache and the disk diverged),
/// or `next` is not one block above it.
fn advance_head(
    db_write: &WriteTransaction,
    current: &Head,
    next: &Head,
) -> Result<(), AppendError> {
    let mut meta = db_write.open_table(META).context("opening meta")?;
    let stored = {
        let stored = meta.get(META_HEAD).context("reading the head")?;
        let stored = stored.ok_or(Inconsistency::MissingMeta { key: META_HEAD })?;
        schema::decode_head(stored.value())?
    };
    assert_eq!(stored, *current, "the stored head is the cached head");
    assert_eq!(
        Some(next.height),
        current.height.checked_add(1),
        "the head moves by one"
    );
    meta.insert(META_HEAD, &schema::encode_head(next)[..])
        .context("writing the head")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use govchain_crypto::DomainHasher;

    use super::*;
    use crate::CheckReport;

    const CHAIN: &str = "govchain-test";

    fn digest(domain: &str, n: u64) -> Digest {
        DomainHasher::new(domain).u64(n).finish()
    }

    fn genesis() -> Digest {
        digest("genesis", 0)
    }

    /// An [`AppendBlock`] with owned contents.
    #[derive(Clone, Debug)]
    struct TestBlock {
        height: u64,
        hash: Digest,
        parent_hash: Digest,
        state_root: Digest,
        timestamp_ms: u64,
        encoded: Vec<u8>,
        transactions: Vec<(Digest, Vec<u8>)>,
        writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
        tree_writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
        query_keys: Vec<Vec<u8>>,
    }

    impl TestBlock {
        /// Block `height` of the canonical test chain: two transactions,
        /// writes `key/<height>` and `last`, deletes `key/<height - 2>`.
        fn new(height: u64) -> Self {
            let parent_hash = if height == 1 {
                genesis()
            } else {
                digest("block", height - 1)
            };
            let transactions = (0..2)
                .map(|i| {
                    let id = digest("tx", height * 10 + i);
                    (id, format!("result {height}/{i}").into_bytes())
                })
                .collect();
            let mut writes = BTreeMap::new();
            writes.insert(
                format!("key/{height}").into_bytes(),
                Some(vec![height as u8]),
            );
            writes.insert(b"last".to_vec(), Some(height.to_be_bytes().to_vec()));
            if height > 2 {
                writes.insert(format!("key/{}", height - 2).into_bytes(), None);
            }
            let mut tree_writes = BTreeMap::new();
            tree_writes.insert(b"root".to_vec(), Some(height.to_be_bytes().to_vec()));
            // Two listings: "a" gets every block, "b" the even ones.
            let mut query_keys = vec![[b"a".as_slice(), &height.to_be_bytes()].concat()];
            if height.is_multiple_of(2) {
                query_keys.push([b"b".as_slice(), &height.to_be_bytes()].concat());
            }
            Self {
                query_keys,
                height,
                hash: digest("block", height),
                parent_hash,
                state_root: digest("root", height),
                timestamp_ms: 1_000 * height,
                encoded: format!("block {height}").into_bytes(),
                transactions,
                writes,
                tree_writes,
            }
        }

        /// Block `height` with `count` transactions instead of two.
        fn with_transactions(height: u64, count: u64) -> Self {
            let mut block = Self::new(height);
            block.transactions = (0..count)
                .map(|i| {
                    let id = digest("many", height * 1_000 + i);
                    (id, format!("result {height}/{i}").into_bytes())
                })
                .collect();
            block
        }

        fn append_block(&self) -> AppendBlock<'_> {
            AppendBlock {
                height: self.height,
                hash: self.hash,
                parent_hash: self.parent_hash,
                state_root: self.state_root,
                timestamp_ms: self.timestamp_ms,
                encoded: &self.encoded,
                transactions: &self.transactions,
                writes: &self.writes,
                tree_writes: &self.tree_writes,
                query_keys: &self.query_keys,
            }
        }

        fn head(&self) -> Head {
            Head {
                height: self.height,
                hash: self.hash,
                state_root: self.state_root,
                timestamp_ms: self.timestamp_ms,
            }
        }
    }

    fn open(dir: &Path) -> Ledger {
        Ledger::open(dir, CHAIN, genesis()).expect("open")
    }

    fn append(ledger: &Ledger, block: &TestBlock) {
        ledger.append(&block.append_block()).expect("append");
    }

    #[test]
    fn the_query_index_lists_by_prefix_after_a_key_in_key_order() {
        let (_dir, ledger) = ledger_with(6);
        let key = |list: &[u8], height: u64| [list, &height.to_be_bytes()].concat();
        let all_b = ledger.query(b"b", None, 10).expect("query");
        assert_eq!(all_b, vec![key(b"b", 2), key(b"b", 4), key(b"b", 6)]);
        // Pages: two at a time, each after the last key of the one before.
        let first = ledger.query(b"a", None, 2).expect("query");
        assert_eq!(first, vec![key(b"a", 1), key(b"a", 2)]);
        let second = ledger.query(b"a", Some(&first[1]), 2).expect("query");
        assert_eq!(second, vec![key(b"a", 3), key(b"a", 4)]);
        let last = ledger.query(b"a", Some(&key(b"a", 6)), 2).expect("query");
        assert!(last.is_empty(), "nothing after the last");
        // An `after` outside the prefix does not leak other listings.
        assert_eq!(
            ledger.query(b"b", Some(b"a"), 1).expect("query"),
            vec![key(b"b", 2)]
        );
        assert!(ledger.query(b"c", None, 10).expect("query").is_empty());
    }

    /// A ledger holding blocks `1..=count` of the test chain.
    fn ledger_with(count: u64) -> (tempfile::TempDir, Ledger) {
        chain_in(count, open)
    }

    /// Blocks `1..=count` of the test chain, in a ledger `open` opens in a
    /// new directory.
    fn chain_in(count: u64, open: fn(&Path) -> Ledger) -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = open(dir.path());
        for height in 1..=count {
            append(&ledger, &TestBlock::new(height));
        }
        (dir, ledger)
    }

    /// Everything a caller can observe about the blocks in `blocks`, plus
    /// the head and the check report; equal observations before and after
    /// a failed append mean it changed nothing.
    #[derive(Debug, PartialEq)]
    struct Observation {
        head: Head,
        report: CheckReport,
        blocks: Vec<Option<Vec<u8>>>,
        by_hash: Vec<Option<(u64, Vec<u8>)>>,
        transactions: Vec<Option<TransactionLocation>>,
        state: Vec<Option<Vec<u8>>>,
        queries: Vec<Vec<u8>>,
    }

    fn observe(ledger: &Ledger, blocks: &[&TestBlock]) -> Observation {
        let mut observation = Observation {
            head: ledger.head(),
            report: ledger.check().expect("check"),
            blocks: Vec::new(),
            by_hash: Vec::new(),
            transactions: Vec::new(),
            state: Vec::new(),
            queries: ledger.query(b"", None, usize::MAX).expect("query"),
        };
        for block in blocks {
            let stored = ledger.block_by_height(block.height).expect("read");
            observation.blocks.push(stored);
            let by_hash = ledger.block_by_hash(&block.hash).expect("read");
            observation.by_hash.push(by_hash);
            for (id, _) in &block.transactions {
                observation
                    .transactions
                    .push(ledger.transaction(id).expect("read"));
            }
            for key in block.writes.keys() {
                observation.state.push(ledger.state(key).expect("read"));
            }
        }
        observation
    }

    /// Asserts that `block` is stored exactly as given.
    fn assert_stored(ledger: &Ledger, block: &TestBlock) {
        let encoded = ledger.block_by_height(block.height).expect("read");
        assert_eq!(encoded.as_deref(), Some(&block.encoded[..]));
        let by_hash = ledger.block_by_hash(&block.hash).expect("read");
        assert_eq!(by_hash, Some((block.height, block.encoded.clone())));
        for (index, (id, result)) in (0_u32..).zip(&block.transactions) {
            let location = ledger.transaction(id).expect("read");
            let expected = TransactionLocation {
                height: block.height,
                index,
                result: result.clone(),
            };
            assert_eq!(location, Some(expected));
        }
    }

    #[test]
    fn ledger_is_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Ledger>();
        send_sync::<OpenError>();
        send_sync::<AppendError>();
        send_sync::<ReadError>();
        send_sync::<CheckError>();
    }

    #[test]
    fn new_ledger_starts_at_genesis() {
        let (dir, ledger) = ledger_with(0);
        assert!(dir.path().join(LEDGER_FILE_NAME).exists());
        assert_eq!(ledger.head(), Head::genesis(genesis()));
        assert_eq!(ledger.head().state_root, Digest::default());
        assert_eq!(ledger.block_by_height(0).expect("read"), None);
        assert_eq!(ledger.block_by_height(1).expect("read"), None);
        assert_eq!(ledger.block_by_hash(&genesis()).expect("read"), None);
        let report = ledger.check().expect("check");
        assert_eq!(
            (report.blocks, report.transactions, report.state_entries),
            (0, 0, 0)
        );
    }

    #[test]
    fn open_creates_missing_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nested = dir.path().join("a").join("b");
        let ledger = open(&nested);
        assert_eq!(ledger.head().height, 0);
        assert!(nested.join(LEDGER_FILE_NAME).exists());
    }

    #[test]
    fn append_then_read_round_trips() {
        let (_dir, ledger) = ledger_with(3);
        for height in 1..=3 {
            assert_stored(&ledger, &TestBlock::new(height));
        }
        assert_eq!(ledger.head(), TestBlock::new(3).head());
        assert_eq!(ledger.block_by_height(0).expect("read"), None);
        assert_eq!(ledger.block_by_height(4).expect("read"), None);
        assert_eq!(
            ledger.block_by_hash(&digest("block", 4)).expect("read"),
            None
        );
        assert_eq!(ledger.transaction(&digest("tx", 999)).expect("read"), None);
        let report = ledger.check().expect("check");
        assert_eq!(report.head, ledger.head());
        assert_eq!((report.blocks, report.transactions), (3, 6));
    }

    #[test]
    fn reopen_keeps_blocks_state_and_head() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocks: Vec<TestBlock> = (1..=4).map(TestBlock::new).collect();
        let refs: Vec<&TestBlock> = blocks.iter().collect();
        let before = {
            let ledger = open(dir.path());
            for block in &blocks {
                append(&ledger, block);
            }
            observe(&ledger, &refs)
        };
        let ledger = open(dir.path());
        assert_eq!(ledger.head(), blocks[3].head());
        assert_eq!(observe(&ledger, &refs), before);
        // The reopened ledger keeps extending the chain.
        append(&ledger, &TestBlock::new(5));
        assert_eq!(ledger.head(), TestBlock::new(5).head());
    }

    /// Appends `bad` to a two-block ledger, checks the error with `expected`,
    /// and checks that nothing changed.
    fn assert_refused(bad: &TestBlock, expected: impl Fn(&AppendError) -> bool) {
        let (_dir, ledger) = ledger_with(2);
        let existing = [TestBlock::new(1), TestBlock::new(2)];
        let all = [&existing[0], &existing[1], bad];
        let before = observe(&ledger, &all);
        let err = ledger.append(&bad.append_block()).expect_err("refused");
        assert!(expected(&err), "unexpected error: {err}");
        assert_eq!(observe(&ledger, &all), before);
        // The refused block left no trace that would block the right one.
        append(&ledger, &TestBlock::new(3));
    }

    #[test]
    fn wrong_height_is_refused_without_change() {
        let mut bad = TestBlock::new(3);
        bad.height = 4;
        assert_refused(&bad, |err| {
            matches!(
                err,
                AppendError::WrongHeight {
                    got: 4,
                    expected: 3
                }
            )
        });
        let mut repeat = TestBlock::new(3);
        repeat.height = 2;
        assert_refused(&repeat, |err| {
            matches!(
                err,
                AppendError::WrongHeight {
                    got: 2,
                    expected: 3
                }
            )
        });
    }

    #[test]
    fn wrong_parent_is_refused_without_change() {
        let mut bad = TestBlock::new(3);
        bad.parent_hash = digest("block", 1);
        let message = format!(
            "block 3 has parent {}, expected the head hash {}",
            digest("block", 1),
            digest("block", 2)
        );
        assert_refused(&bad, |err| {
            matches!(err, AppendError::WrongParent { height: 3, .. }) && err.to_string() == message
        });
    }

    #[test]
    fn duplicate_transaction_is_refused_without_change() {
        let mut bad = TestBlock::new(3);
        let (old_id, _) = TestBlock::new(1).transactions[1].clone();
        bad.transactions.push((old_id, b"again".to_vec()));
        assert_refused(&bad, |err| {
            matches!(
                err,
                AppendError::DuplicateTransaction { id, height: 3, existing: 1 } if *id == old_id
            )
        });
    }

    #[test]
    fn duplicate_transaction_within_a_block_is_refused_without_change() {
        let mut bad = TestBlock::new(3);
        let first = bad.transactions[0].clone();
        bad.transactions.push(first);
        assert_refused(&bad, |err| {
            matches!(
                err,
                AppendError::DuplicateTransaction {
                    height: 3,
                    existing: 3,
                    ..
                }
            )
        });
    }

    #[test]
    fn duplicate_block_hash_is_refused_without_change() {
        let mut bad = TestBlock::new(3);
        bad.hash = digest("block", 1);
        assert_refused(&bad, |err| {
            matches!(
                err,
                AppendError::DuplicateBlockHash {
                    height: 3,
                    existing: 1,
                    ..
                }
            )
        });
        let mut genesis_again = TestBlock::new(3);
        genesis_again.hash = genesis();
        assert_refused(&genesis_again, |err| {
            matches!(err, AppendError::GenesisHash { height: 3, .. })
        });
    }

    #[test]
    fn oversized_block_is_refused_without_change() {
        let mut bad = TestBlock::new(3);
        bad.writes
            .insert(vec![0; STATE_KEY_SIZE_BYTES_MAX + 1], Some(vec![1]));
        assert_refused(&bad, |err| {
            matches!(err, AppendError::LimitExceeded { height: 3, got, max, .. }
                if *got == STATE_KEY_SIZE_BYTES_MAX + 1 && *max == STATE_KEY_SIZE_BYTES_MAX)
        });
    }

    #[test]
    fn head_view_reads_state_tree_and_head_block_of_one_head() {
        let (_dir, ledger) = ledger_with(0);
        let view = ledger.head_view().expect("view");
        assert_eq!(view.head().height, 0);
        assert_eq!(
            view.head_block().expect("read"),
            None,
            "no block at genesis"
        );
        append(&ledger, &TestBlock::new(1));
        let view = ledger.head_view().expect("view");
        append(&ledger, &TestBlock::new(2));
        // The view still shows block 1 after block 2 landed.
        assert_eq!(view.head(), TestBlock::new(1).head());
        assert_eq!(
            view.head_block().expect("read"),
            Some(TestBlock::new(1).encoded)
        );
        assert_eq!(view.state(b"key/2").expect("read"), None);
        assert_eq!(
            view.state_tree_node(b"root").expect("read"),
            Some(1_u64.to_be_bytes().to_vec())
        );
        assert_eq!(
            ledger.state_tree_node(b"root").expect("read"),
            Some(2_u64.to_be_bytes().to_vec())
        );
    }

    /// Block `height` of the test chain, whose tree writes also add
    /// `node/<height>` and delete `node/<height - 2>`.
    fn tree_block(height: u64) -> TestBlock {
        let mut block = TestBlock::new(height);
        let node = |h: u64| format!("node/{h}").into_bytes();
        block
            .tree_writes
            .insert(node(height), Some(vec![height as u8]));
        if height > 2 {
            block.tree_writes.insert(node(height - 2), None);
        }
        block
    }

    /// The `state_tree` table's rows, read from redb itself.
    fn tree_table(ledger: &Ledger) -> BTreeMap<Vec<u8>, Vec<u8>> {
        table_rows(ledger, STATE_TREE)
    }

    #[test]
    fn tree_nodes_wait_in_the_tier_and_are_merged_every_few_blocks() {
        let (_dir, ledger) = ledger_with(0);
        let last_staged = TREE_MERGE_BLOCKS - 1;
        for height in 1..=last_staged {
            append(&ledger, &tree_block(height));
        }
        assert!(tree_table(&ledger).is_empty(), "nothing merged yet");
        let node = |view: &HeadView, h: u64| {
            view.state_tree_node(format!("node/{h}").as_bytes())
                .expect("read")
        };
        let staged = ledger.head_view().expect("view");
        assert_eq!(
            staged.state_tree_node(b"root").expect("read"),
            Some(last_staged.to_be_bytes().to_vec())
        );
        assert_eq!(node(&staged, last_staged), Some(vec![last_staged as u8]));
        assert_eq!(node(&staged, last_staged - 2), None, "deleted in the tier");

        // The next append merges: the table holds the latest node of
        // every path, deletions applied.
        append(&ledger, &tree_block(TREE_MERGE_BLOCKS));
        let mut expected = BTreeMap::new();
        expected.insert(b"root".to_vec(), TREE_MERGE_BLOCKS.to_be_bytes().to_vec());
        for height in [TREE_MERGE_BLOCKS - 1, TREE_MERGE_BLOCKS] {
            expected.insert(format!("node/{height}").into_bytes(), vec![height as u8]);
        }
        assert_eq!(tree_table(&ledger), expected);
        // A view taken before the merge keeps its head's nodes.
        assert_eq!(
            staged.state_tree_node(b"root").expect("read"),
            Some(last_staged.to_be_bytes().to_vec())
        );
        assert_eq!(node(&staged, TREE_MERGE_BLOCKS), None);
        assert_eq!(
            node(&staged, last_staged - 1),
            Some(vec![(last_staged - 1) as u8])
        );

        // The next block is staged again: a view before it does not see
        // it, and reopening (a checkpoint on drop) merges it.
        let before = ledger.head_view().expect("view");
        append(&ledger, &tree_block(TREE_MERGE_BLOCKS + 1));
        assert_eq!(node(&before, TREE_MERGE_BLOCKS + 1), None);
        assert_eq!(
            node(&before, TREE_MERGE_BLOCKS - 1),
            Some(vec![(TREE_MERGE_BLOCKS - 1) as u8])
        );
        let after = ledger.head_view().expect("view");
        assert_eq!(node(&after, TREE_MERGE_BLOCKS - 1), None);
        assert_eq!(
            node(&after, TREE_MERGE_BLOCKS + 1),
            Some(vec![(TREE_MERGE_BLOCKS + 1) as u8])
        );
        assert_eq!(
            ledger.check().expect("check").state_tree_nodes,
            3,
            "the check merges first: root and two nodes"
        );
    }

    /// The rows of a `&[u8] -> &[u8]` table, read from redb itself.
    fn table_rows(
        ledger: &Ledger,
        table: TableDefinition<&'static [u8], &'static [u8]>,
    ) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let snapshot = ledger.database().begin_read().expect("read");
        let table = snapshot.open_table(table).expect("table");
        table
            .iter()
            .expect("iterate")
            .map(|row| {
                let (key, value) = row.expect("row");
                (key.value().to_vec(), value.value().to_vec())
            })
            .collect()
    }

    /// The query index's keys, read from redb itself.
    fn query_table(ledger: &Ledger) -> BTreeSet<Vec<u8>> {
        let snapshot = ledger.database().begin_read().expect("read");
        let table = snapshot.open_table(QUERY_INDEX).expect("table");
        table
            .iter()
            .expect("iterate")
            .map(|row| row.expect("row").0.value().to_vec())
            .collect()
    }

    /// Every state entry a view walks, in the order it walks them.
    fn walked_state(view: &HeadView) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut entries = Vec::new();
        view.for_each_state(|key, value| {
            entries.push((key.to_vec(), value.to_vec()));
            Ok::<_, ReadError>(())
        })
        .expect("walk");
        entries
    }

    /// What the model test's blocks wrote, by key: the value (`None` once
    /// deleted) and the height of the last write.
    #[derive(Clone, Default)]
    struct Model {
        state: BTreeMap<Vec<u8>, (Option<Vec<u8>>, u64)>,
        tree: BTreeMap<Vec<u8>, (Option<Vec<u8>>, u64)>,
        queries: BTreeMap<Vec<u8>, u64>,
    }

    impl Model {
        fn live(rows: &BTreeMap<Vec<u8>, (Option<Vec<u8>>, u64)>) -> BTreeMap<Vec<u8>, Vec<u8>> {
            rows.iter()
                .filter_map(|(key, (value, _))| Some((key.clone(), value.clone()?)))
                .collect()
        }
    }

    /// Block `height` for the model test: six tree writes and six state
    /// writes over pools of 24 keys each (some deletions, values of 1 to
    /// 96 bytes, so some are longer than the tree tier keeps inline), and
    /// three new query keys under two prefixes.
    fn model_block(height: u64, model: &mut Model) -> TestBlock {
        let mut block = TestBlock::new(height);
        let pick = |what: &str, i: u64| -> [u8; 32] { *digest(what, height * 100 + i).as_bytes() };
        let writes = |what: &str, rows: &mut BTreeMap<Vec<u8>, (Option<Vec<u8>>, u64)>| {
            let mut block_writes = BTreeMap::new();
            for i in 0..6 {
                let bytes = pick(what, i);
                let key = format!("{what}/{:02}", bytes[0] % 24).into_bytes();
                let value =
                    (bytes[1] % 5 != 0).then(|| vec![height as u8; 1 + usize::from(bytes[2] % 96)]);
                rows.insert(key.clone(), (value.clone(), height));
                block_writes.insert(key, value);
            }
            block_writes
        };
        block.writes = writes("s", &mut model.state);
        block.tree_writes = writes("t", &mut model.tree);
        block.query_keys = (0..3)
            .map(|i| {
                let prefix = if i == 2 { "r" } else { "q" };
                format!("{prefix}/{height:03}/{i}").into_bytes()
            })
            .collect();
        for key in &block.query_keys {
            model.queries.insert(key.clone(), height);
        }
        block
    }

    /// Checks every read of `ledger` at its head, and of `before` (a view
    /// taken before the last append, with its model), against the models.
    fn check_reads(ledger: &Ledger, model: &Model, before: Option<(&HeadView, &Model)>) {
        let head = ledger.head_view().expect("view");
        for (view, model) in [(&head, model)].into_iter().chain(before) {
            for (key, (value, _)) in &model.state {
                assert_eq!(&view.state(key).expect("read"), value, "state {key:?}");
            }
            for (key, (value, _)) in &model.tree {
                let node = view.state_tree_node(key).expect("read");
                assert_eq!(&node, value, "node {key:?}");
            }
            let walked: BTreeMap<_, _> = walked_state(view).into_iter().collect();
            let height = view.head().height;
            assert_eq!(walked, Model::live(&model.state), "the walk at {height}");
        }
        for (key, (value, _)) in &model.state {
            assert_eq!(&ledger.state(key).expect("read"), value);
        }
        let listed = |prefix: &[u8]| -> Vec<Vec<u8>> {
            let keys = model.queries.keys();
            keys.filter(|key| key.starts_with(prefix))
                .cloned()
                .collect()
        };
        let q = listed(b"q/");
        assert_eq!(ledger.query(b"q/", None, 1_000).expect("query"), q);
        assert_eq!(
            ledger.query(b"r/", None, 1_000).expect("query"),
            listed(b"r/")
        );
        // A page of three from the middle.
        let middle = &q[q.len() / 2];
        let page: Vec<_> = q
            .iter()
            .filter(|key| *key > middle)
            .take(3)
            .cloned()
            .collect();
        assert_eq!(ledger.query(b"q/", Some(middle), 3).expect("query"), page);
    }

    /// Checks redb's own tables as of head `height`: state and query keys
    /// are written with their block, a tree node within the
    /// `TREE_MERGE_BLOCKS` appends of its tier.
    fn check_tables(ledger: &Ledger, model: &Model, height: u64) {
        let stored = table_rows(ledger, STATE);
        assert_eq!(stored, Model::live(&model.state), "state at {height}");
        let stored = table_rows(ledger, STATE_TREE);
        for (key, (value, written)) in &model.tree {
            if written + TREE_MERGE_BLOCKS - 1 <= height {
                assert_eq!(stored.get(key), value.as_ref(), "node {key:?} at {height}");
            }
        }
        let keys: BTreeSet<_> = model.queries.keys().cloned().collect();
        assert_eq!(query_table(ledger), keys, "query keys at {height}");
    }

    #[test]
    fn reads_and_tables_follow_a_model_through_merges_checkpoints_and_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = open(dir.path());
        let mut model = Model::default();
        let mut before: Option<(HeadView, Model)> = None;
        // Below CHECKPOINT_BLOCKS (and CHECKPOINT_BYTES): three tree merges.
        for height in 1..=3 * TREE_MERGE_BLOCKS {
            append(&ledger, &model_block(height, &mut model));
            let previous = before.as_ref().map(|(view, model)| (view, model));
            check_reads(&ledger, &model, previous);
            check_tables(&ledger, &model, height);
            before = Some((ledger.head_view().expect("view"), model.clone()));
        }
        let tree = table_rows(&ledger, STATE_TREE);
        assert!(!tree.is_empty(), "merged at 16, 32 and 48");

        // Some nodes wait in the tier; a checkpoint merges them all.
        append(&ledger, &model_block(3 * TREE_MERGE_BLOCKS + 1, &mut model));
        assert_ne!(table_rows(&ledger, STATE_TREE), Model::live(&model.tree));
        ledger.checkpoint().expect("checkpoint");
        assert_eq!(table_rows(&ledger, STATE_TREE), Model::live(&model.tree));
        check_reads(&ledger, &model, None);

        // Reopened, with the tier gone, the reads are the same.
        drop(before);
        drop(ledger);
        let ledger = open(dir.path());
        check_reads(&ledger, &model, None);
        let count = ledger.query_index_len().expect("count");
        assert_eq!(count, model.queries.len() as u64);
    }

    #[test]
    fn a_staggered_ledger_merges_and_checkpoints_at_shifted_heights() {
        let (_dir, ledger) = ledger_with(0);
        // Slot 1: phase 20, so merges where (h + 20) % 16 == 0 (h = 12,
        // 28, 44, ...) and the checkpoint where (h + 20) % 64 == 0 (h = 44).
        ledger.stagger(1);
        let since = |ledger: &Ledger| {
            let since = ledger.append_lock.lock().expect("lock");
            (since.blocks, since.tree_blocks)
        };
        for height in 1..=11 {
            append(&ledger, &tree_block(height));
        }
        assert!(tree_table(&ledger).is_empty(), "nothing merged before 12");
        append(&ledger, &tree_block(12));
        assert!(!tree_table(&ledger).is_empty(), "merged at 12");
        assert_eq!(since(&ledger), (12, 0), "merged, not checkpointed");
        for height in 13..=43 {
            append(&ledger, &tree_block(height));
        }
        assert_eq!(since(&ledger), (43, 15), "merged at 28, not yet at 44");
        append(&ledger, &tree_block(44));
        assert_eq!(since(&ledger), (0, 0), "checkpointed at 44");
        // Then every CHECKPOINT_BLOCKS: none before 108.
        for height in 45..=107 {
            append(&ledger, &tree_block(height));
        }
        assert_eq!(since(&ledger).0, 63);
        append(&ledger, &tree_block(108));
        assert_eq!(since(&ledger).0, 0, "checkpointed at 108");
    }

    #[test]
    fn state_writes_and_deletes_apply_with_their_block() {
        let (_dir, ledger) = ledger_with(0);
        let state = |key: &str| ledger.state(key.as_bytes()).expect("read");
        append(&ledger, &TestBlock::new(1));
        append(&ledger, &TestBlock::new(2));
        assert_eq!(state("key/1"), Some(vec![1]));
        assert_eq!(state("key/2"), Some(vec![2]));
        assert_eq!(state("last"), Some(2_u64.to_be_bytes().to_vec()));

        // Block 3 deletes key/1, adds key/3 and overwrites last.
        append(&ledger, &TestBlock::new(3));
        assert_eq!(state("key/1"), None);
        assert_eq!(state("key/2"), Some(vec![2]));
        assert_eq!(state("key/3"), Some(vec![3]));
        assert_eq!(state("last"), Some(3_u64.to_be_bytes().to_vec()));
        // Deleting a key that was never written is not an error.
        let mut block = TestBlock::new(4);
        block.writes.insert(b"never".to_vec(), None);
        append(&ledger, &block);
        assert_eq!(state("never"), None);
        assert_eq!(ledger.check().expect("check").state_entries, 3);
    }

    #[test]
    fn different_chain_id_is_refused() {
        let (dir, ledger) = ledger_with(1);
        drop(ledger);
        let err = Ledger::open(dir.path(), "other-chain", genesis()).expect_err("refused");
        assert!(matches!(&err, OpenError::ChainIdMismatch { stored, given }
            if stored == CHAIN && given == "other-chain"));
        assert_eq!(
            err.to_string(),
            "ledger belongs to chain \"govchain-test\", but chain \"other-chain\" was requested"
        );
    }

    #[test]
    fn different_genesis_is_refused() {
        let (dir, ledger) = ledger_with(1);
        drop(ledger);
        let other = digest("genesis", 1);
        let err = Ledger::open(dir.path(), CHAIN, other).expect_err("refused");
        assert!(matches!(&err, OpenError::GenesisMismatch { stored, given }
            if *stored == genesis() && *given == other));
        assert!(err.to_string().contains(&genesis().to_hex()));
        assert!(err.to_string().contains(&other.to_hex()));
        // The refused open did not alter the ledger.
        assert_eq!(open(dir.path()).head(), TestBlock::new(1).head());
    }

    #[test]
    fn chain_id_must_be_short_and_non_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Ledger::open(dir.path(), "", genesis()).expect_err("refused");
        assert!(matches!(err, OpenError::InvalidChainId { got: 0, .. }));
        let long = "x".repeat(CHAIN_ID_SIZE_BYTES_MAX + 1);
        let err = Ledger::open(dir.path(), &long, genesis()).expect_err("refused");
        assert!(matches!(err, OpenError::InvalidChainId { got, .. } if got == long.len()));
        assert!(!dir.path().join(LEDGER_FILE_NAME).exists());
    }

    #[test]
    fn second_open_of_the_same_file_is_refused() {
        let (dir, _ledger) = ledger_with(1);
        let err = Ledger::open(dir.path(), CHAIN, genesis()).expect_err("refused");
        assert!(matches!(err, OpenError::Database { .. }), "{err}");
    }

    #[test]
    fn concurrent_appends_of_one_height_admit_exactly_one() {
        let (_dir, ledger) = ledger_with(1);
        let ledger = Arc::new(ledger);
        let mut rival = TestBlock::new(2);
        rival.hash = digest("rival", 2);
        rival.transactions = vec![(digest("rival-tx", 2), Vec::new())];
        let handles: Vec<_> = [TestBlock::new(2), rival]
            .into_iter()
            .map(|block| {
                let ledger = Arc::clone(&ledger);
                std::thread::spawn(move || ledger.append(&block.append_block()).is_ok())
            })
            .collect();
        let accepted = handles
            .into_iter()
            .map(|handle| handle.join().expect("join"))
            .filter(|ok| *ok)
            .count();
        assert_eq!(accepted, 1);
        assert_eq!(ledger.head().height, 2);
        ledger.check().expect("check");
    }

    #[test]
    fn reads_run_while_appending() {
        let (_dir, ledger) = ledger_with(0);
        append(&ledger, &TestBlock::with_transactions(1, 16));
        let ledger = Arc::new(ledger);
        let reader = {
            let ledger = Arc::clone(&ledger);
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let head = ledger.head();
                    // Every block up to a head seen earlier stays readable,
                    // and so does each of its transactions, whether it is
                    // being merged into the index meanwhile or not.
                    assert!(ledger.block_by_height(head.height).expect("read").is_some());
                    // A block whose state a snapshot already shows (the
                    // head moves later) has its transactions found too.
                    let last = ledger.state(b"last").expect("read").expect("written");
                    let seen = u64::from_be_bytes(last.try_into().expect("8 bytes"));
                    assert!(seen >= head.height);
                    for height in 1..=seen {
                        let block = TestBlock::with_transactions(height, 16);
                        for (id, _) in &block.transactions {
                            let location = ledger.transaction(id).expect("read");
                            assert_eq!(location.map(|at| at.height), Some(height));
                        }
                    }
                    ledger.check().expect("check");
                }
            })
        };
        for height in 2..=20 {
            append(&ledger, &TestBlock::with_transactions(height, 16));
        }
        reader.join().expect("reader");
    }

    /// The rows of the recent tier, by height.
    fn recent_rows(ledger: &Ledger) -> Vec<u64> {
        let snapshot = ledger.database().begin_read().expect("read");
        let rows = snapshot.open_table(RECENT_TRANSACTIONS).expect("table");
        rows.iter()
            .expect("iter")
            .map(|row| schema::height_from_key(row.expect("row").0.value()))
            .collect()
    }

    /// A chain long enough for every range to be merged twice.
    const MERGED_CHAIN: u64 = 2 * recent::RANGES + 5;

    #[test]
    fn transactions_stay_readable_as_they_move_into_the_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = open(dir.path());
        let blocks: Vec<TestBlock> = (1..=MERGED_CHAIN)
            .map(|height| TestBlock::with_transactions(height, 8))
            .collect();
        for block in &blocks {
            append(&ledger, block);
            assert_stored(&ledger, block);
        }
        // Only the window of the last heights keeps a row, and the ids of
        // older blocks all moved into the index.
        let window: Vec<u64> = (MERGED_CHAIN - recent::RANGES + 2..=MERGED_CHAIN).collect();
        assert_eq!(recent_rows(&ledger), window);
        let waiting = ledger.recent_read().len();
        assert!(waiting > 0 && waiting < window.len() * 8, "{waiting} wait");
        let all: Vec<&TestBlock> = blocks.iter().collect();
        let before = observe(&ledger, &all);
        assert_eq!(before.report.transactions, MERGED_CHAIN * 8);

        // Reopening rebuilds the waiting ids from the rows.
        drop(ledger);
        let ledger = open(dir.path());
        assert_eq!(ledger.recent_read().len(), waiting);
        assert_eq!(observe(&ledger, &all), before);
        for block in &blocks {
            assert_stored(&ledger, block);
        }

        // A repeat is refused whether the first copy waits or is merged.
        let head = MERGED_CHAIN;
        for (from, id) in [
            (1, blocks[0].transactions[3].0),
            (head, blocks[head as usize - 1].transactions[5].0),
        ] {
            let mut bad = TestBlock::with_transactions(head + 1, 8);
            bad.transactions.push((id, b"again".to_vec()));
            let err = ledger.append(&bad.append_block()).expect_err("refused");
            assert!(
                matches!(err, AppendError::DuplicateTransaction { existing, .. } if existing == from),
                "{err}"
            );
            assert_eq!(observe(&ledger, &all), before);
        }
        append(&ledger, &TestBlock::with_transactions(head + 1, 8));
        ledger.check().expect("check");
    }

    #[test]
    fn too_many_waiting_transactions_are_merged_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ledger = open(dir.path());
        ledger.recent_max = 20;
        let blocks: Vec<TestBlock> = (1..=3)
            .map(|height| TestBlock::with_transactions(height, 8))
            .collect();
        append(&ledger, &blocks[0]);
        append(&ledger, &blocks[1]);
        assert_eq!(recent_rows(&ledger), vec![1, 2]);
        assert!(ledger.recent_read().len() > 8);
        // 16 or so wait and 8 more arrive: everything is merged.
        append(&ledger, &blocks[2]);
        assert_eq!(recent_rows(&ledger), Vec::<u64>::new());
        assert_eq!(ledger.recent_read().len(), 0);
        for block in &blocks {
            assert_stored(&ledger, block);
        }
        assert_eq!(ledger.check().expect("check").transactions, 24);
        // The next block starts the window again.
        append(&ledger, &TestBlock::with_transactions(4, 8));
        assert_eq!(recent_rows(&ledger), vec![4]);
        drop(ledger);
        let ledger = open(dir.path());
        for height in 1..=4 {
            assert_stored(&ledger, &TestBlock::with_transactions(height, 8));
        }
        assert_eq!(ledger.check().expect("check").transactions, 32);
    }

    /// A ledger of [`MERGED_CHAIN`] blocks of 8 transactions, closed.
    fn merged_chain() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = open(dir.path());
        for height in 1..=MERGED_CHAIN {
            append(&ledger, &TestBlock::with_transactions(height, 8));
        }
        dir
    }

    fn check_error(dir: &Path) -> Inconsistency {
        match open(dir).check().expect_err("inconsistent") {
            CheckError::Inconsistent(inconsistency) => inconsistency,
            CheckError::Storage(failure) => panic!("storage failed: {failure}"),
            CheckError::Log(failure) => panic!("log failed: {failure}"),
        }
    }

    #[test]
    fn check_finds_a_merged_transaction_missing_from_the_index() {
        let dir = merged_chain();
        tamper(dir.path(), |db_write| {
            let mut transactions = db_write.open_table(TRANSACTIONS).expect("table");
            let (id, _) = &TestBlock::with_transactions(1, 8).transactions[0];
            assert!(
                transactions
                    .remove(id.as_bytes())
                    .expect("remove")
                    .is_some()
            );
        });
        let err = check_error(dir.path());
        let expected = MERGED_CHAIN * 8;
        assert!(
            matches!(err, Inconsistency::TransactionCount { entries, waiting, expected: e }
                if e == expected && entries + waiting == expected - 1),
            "{err}"
        );
    }

    #[test]
    fn check_finds_a_recent_row_outside_the_window() {
        let dir = merged_chain();
        tamper(dir.path(), |db_write| {
            let mut rows = db_write.open_table(RECENT_TRANSACTIONS).expect("table");
            let row = schema::encode_recent_row(&TestBlock::with_transactions(3, 8).transactions);
            rows.insert(height_key(3), &row[..]).expect("insert");
        });
        let err = check_error(dir.path());
        assert_eq!(
            err,
            Inconsistency::RecentRowOutsideWindow {
                height: 3,
                first: MERGED_CHAIN - recent::RANGES + 2,
                head: MERGED_CHAIN
            }
        );
    }

    #[test]
    fn check_finds_a_recent_row_that_lost_a_transaction() {
        let dir = merged_chain();
        let head = TestBlock::with_transactions(MERGED_CHAIN, 8);
        tamper(dir.path(), |db_write| {
            let mut rows = db_write.open_table(RECENT_TRANSACTIONS).expect("table");
            let row = schema::encode_recent_row(&head.transactions[1..]);
            rows.insert(height_key(MERGED_CHAIN), &row[..])
                .expect("insert");
        });
        let err = check_error(dir.path());
        assert_eq!(
            err,
            Inconsistency::RecentRowCount {
                height: MERGED_CHAIN,
                listed: 7,
                count: 8
            }
        );
    }

    #[test]
    fn check_finds_a_listed_transaction_indexed_elsewhere() {
        let dir = merged_chain();
        let head = TestBlock::with_transactions(MERGED_CHAIN, 8);
        let (id, _) = head.transactions[2];
        tamper(dir.path(), |db_write| {
            let mut transactions = db_write.open_table(TRANSACTIONS).expect("table");
            let record = schema::encode_transaction(MERGED_CHAIN, 6, b"");
            transactions
                .insert(id.as_bytes(), &record[..])
                .expect("insert");
        });
        let err = check_error(dir.path());
        assert_eq!(
            err,
            Inconsistency::RecentRowMismatch {
                id,
                height: MERGED_CHAIN,
                index: 2,
                indexed_height: MERGED_CHAIN,
                indexed_index: 6
            }
        );
    }

    /// Edits the closed ledger file directly, as damage would.
    fn tamper(dir: &Path, edit: impl FnOnce(&WriteTransaction)) {
        let db = Database::open(dir.join(LEDGER_FILE_NAME)).expect("open db");
        let db_write = db.begin_write().expect("write");
        edit(&db_write);
        db_write.commit().expect("commit");
    }

    #[test]
    fn check_finds_a_missing_hash_index_entry() {
        let (dir, ledger) = ledger_with(3);
        drop(ledger);
        tamper(dir.path(), |db_write| {
            let mut index = db_write.open_table(HEIGHT_BY_HASH).expect("table");
            index.remove(digest("block", 2).as_bytes()).expect("remove");
        });
        let ledger = open(dir.path());
        let err = ledger.check().expect_err("inconsistent");
        assert!(matches!(
            err,
            CheckError::Inconsistent(Inconsistency::HashNotIndexed { height: 2, .. })
        ));
    }

    /// The segment files of the ledger in `dir`, in height order.
    fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(dir.join(LOG_DIR_NAME))
            .expect("log dir")
            .map(|entry| entry.expect("entry").path())
            .collect();
        files.sort();
        files
    }

    /// Flips one byte of `path` at `offset` from its end.
    fn flip_from_end(path: &Path, offset: u64) {
        use std::os::unix::fs::FileExt as _;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open segment");
        let at = file.metadata().expect("size").len() - offset;
        let mut byte = [0];
        file.read_exact_at(&mut byte, at).expect("read");
        file.write_all_at(&[byte[0] ^ 0x55], at).expect("write");
    }

    /// Segments small enough that every block starts a new one.
    const TINY_SEGMENT_BYTES: u64 = 1;

    fn open_tiny(dir: &Path) -> Ledger {
        Ledger::open_with(dir, CHAIN, genesis(), TINY_SEGMENT_BYTES).expect("open")
    }

    /// What the pruning tests keep of a block: a short "header".
    fn strip_test_block(height: u64, block: &[u8]) -> Result<Stripped, String> {
        if block != TestBlock::new(height).encoded.as_slice() {
            return Err(format!("unexpected block at {height}"));
        }
        Ok(Stripped {
            encoded: format!("h{height}").into_bytes(),
            query_keys: TestBlock::new(height).query_keys.len() as u64,
        })
    }

    /// Blocks `1..=count` in a ledger with a segment per block.
    fn tiny_ledger_with(count: u64) -> (tempfile::TempDir, Ledger) {
        chain_in(count, open_tiny)
    }

    #[test]
    fn pruned_blocks_keep_what_strip_kept_and_refuse_their_bodies() {
        let (dir, ledger) = tiny_ledger_with(8);
        let report = ledger
            .prune_bodies(6, &mut strip_test_block)
            .expect("prune");
        assert_eq!(report.segments, 5);
        assert_eq!(report.blocks, 5);
        assert_eq!(report.bodies_from, 6);
        assert!(!report.held_by_backup);
        assert!(report.bytes_after < report.bytes_before, "{report:?}");
        // Odd blocks derived one query key, even ones two.
        assert_eq!(ledger.pruned_query_keys().expect("read"), 7);
        let check = |ledger: &Ledger| {
            assert_eq!(ledger.bodies_from(), 6);
            for height in 1..=5 {
                let err = ledger.block_by_height(height).expect_err("pruned");
                assert!(
                    matches!(err, ReadError::Pruned { height: h, bodies_from: 6 } if h == height),
                    "{err:?}"
                );
                assert!(matches!(
                    ledger.block_by_hash(&TestBlock::new(height).hash),
                    Err(ReadError::Pruned { .. })
                ));
                assert_eq!(
                    ledger.block_or_header(height).expect("read"),
                    Some(StoredBlock {
                        encoded: format!("h{height}").into_bytes(),
                        pruned: true
                    })
                );
            }
            for height in 6..=8 {
                assert_eq!(
                    ledger.block_by_height(height).expect("whole"),
                    Some(TestBlock::new(height).encoded)
                );
            }
            // The hash chain is intact: every record's links and checksums.
            ledger.check().expect("a pruned ledger checks");
        };
        check(&ledger);
        drop(ledger);
        let ledger = open_tiny(dir.path());
        check(&ledger);
        // Nothing more to prune at the same horizon; the chain grows on.
        let again = ledger
            .prune_bodies(6, &mut strip_test_block)
            .expect("prune");
        assert_eq!((again.segments, again.bodies_from), (0, 6));
        append(&ledger, &TestBlock::new(9));
        // Never the last segment, nor above the head, whatever asked.
        let all = ledger
            .prune_bodies(u64::MAX, &mut strip_test_block)
            .expect("prune");
        assert_eq!((all.segments, all.bodies_from), (3, 9));
        assert_eq!(ledger.pruned_query_keys().expect("read"), 7 + 2 + 1 + 2);
        assert!(ledger.block_by_height(9).expect("whole").is_some());
    }

    #[test]
    fn a_failing_strip_leaves_the_segment_whole() {
        let (dir, ledger) = tiny_ledger_with(4);
        let err = ledger
            .prune_bodies(4, &mut |height, block| {
                if height == 2 {
                    Err("no header".to_owned())
                } else {
                    strip_test_block(height, block)
                }
            })
            .expect_err("strip fails");
        assert!(
            matches!(err, PruneError::Strip { height: 2, .. }),
            "{err:?}"
        );
        assert_eq!(ledger.bodies_from(), 2, "block 1 was pruned before");
        assert!(ledger.block_by_height(2).expect("whole").is_some());
        assert!(
            segments(dir.path())
                .iter()
                .all(|path| path.extension().is_some_and(|e| e == "seg")),
            "the failed rewrite is removed"
        );
    }

    #[test]
    fn a_backup_holds_off_pruning() {
        let (_dir, ledger) = tiny_ledger_with(4);
        let snapshot = ledger.snapshot().expect("snapshot");
        let report = ledger
            .prune_bodies(4, &mut strip_test_block)
            .expect("prune");
        assert!(report.held_by_backup);
        assert_eq!((report.segments, report.bodies_from), (0, 1));
        drop(snapshot);
        let report = ledger
            .prune_bodies(4, &mut strip_test_block)
            .expect("prune");
        assert_eq!((report.segments, report.bodies_from), (3, 4));
    }

    #[test]
    fn a_pruned_ledger_round_trips_through_a_dump() {
        let (_dir, ledger) = tiny_ledger_with(5);
        ledger
            .prune_bodies(3, &mut strip_test_block)
            .expect("prune");
        let mut rows: Vec<crate::DumpRow> = Vec::new();
        ledger
            .snapshot()
            .expect("snapshot")
            .export(&mut |table, key, value| {
                rows.push((table.to_owned(), key.to_vec(), value.to_vec()));
                Ok(())
            })
            .expect("export");
        assert_eq!(
            rows.iter()
                .filter(|(table, ..)| table == "pruned_blocks")
                .count(),
            2
        );
        let restored = tempfile::tempdir().expect("tempdir");
        crate::import(restored.path(), rows.into_iter().map(Ok)).expect("import");
        let ledger = open(restored.path());
        assert_eq!(ledger.head().height, 5);
        assert_eq!(ledger.bodies_from(), 3);
        assert_eq!(ledger.pruned_query_keys().expect("read"), 3);
        assert!(matches!(
            ledger.block_by_height(2),
            Err(ReadError::Pruned {
                height: 2,
                bodies_from: 3
            })
        ));
        assert_eq!(
            ledger.block_by_height(3).expect("whole"),
            Some(TestBlock::new(3).encoded)
        );
        ledger.check().expect("a restored pruned ledger checks");
    }

    #[test]
    fn an_interrupted_prune_is_dropped_or_finished_at_open() {
        let (dir, ledger) = tiny_ledger_with(4);
        // A rewrite written but not recorded (a crash before the redb
        // commit): dropped at open, the segment stays whole.
        let pending = ledger
            .log
            .write_pruned(1, &mut |h, b| strip_test_block(h, b).map(|s| s.encoded))
            .expect("write");
        drop(pending);
        drop(ledger);
        let ledger = open_tiny(dir.path());
        assert_eq!(ledger.bodies_from(), 1);
        assert!(ledger.block_by_height(1).expect("whole").is_some());
        assert!(
            segments(dir.path())
                .iter()
                .all(|path| path.extension().is_some_and(|e| e == "seg")),
            "the unrecorded rewrite is removed"
        );
        // Recorded, then a crash before the rename: finished at open.
        let pending = ledger
            .log
            .write_pruned(1, &mut |h, b| strip_test_block(h, b).map(|s| s.encoded))
            .expect("write");
        drop(pending);
        drop(ledger);
        tamper(dir.path(), |db_write| {
            let mut meta = db_write.open_table(META).expect("meta");
            meta.insert(schema::META_PRUNED_THROUGH, &schema::encode_u64(1)[..])
                .expect("insert");
        });
        let ledger = open_tiny(dir.path());
        assert_eq!(ledger.bodies_from(), 2);
        assert_eq!(
            ledger.block_or_header(1).expect("read").map(|b| b.encoded),
            Some(b"h1".to_vec())
        );
        ledger.check().expect("checks");
    }

    #[test]
    fn blocks_cross_segments_and_read_back_after_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = open_tiny(dir.path());
        for height in 1..=5 {
            append(&ledger, &TestBlock::new(height));
        }
        drop(ledger);
        assert_eq!(segments(dir.path()).len(), 5);
        let ledger = open_tiny(dir.path());
        assert_eq!(ledger.head(), TestBlock::new(5).head());
        for height in 1..=5 {
            let block = TestBlock::new(height);
            assert_eq!(
                ledger.block_by_height(height).expect("read"),
                Some(block.encoded.clone())
            );
            assert_eq!(
                ledger.block_by_hash(&block.hash).expect("read"),
                Some((height, block.encoded))
            );
        }
        assert_eq!(ledger.block_by_height(6).expect("read"), None);
        assert_eq!(ledger.check().expect("check").logged_above_head, 0);
    }

    #[test]
    fn damage_in_a_sealed_segment_is_reported_not_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = open_tiny(dir.path());
        for height in 1..=3 {
            append(&ledger, &TestBlock::new(height));
        }
        drop(ledger);
        // The last byte of block 2's body, in a sealed segment.
        flip_from_end(&segments(dir.path())[1], 1);
        let ledger = open_tiny(dir.path());
        assert_eq!(ledger.head().height, 3, "a sealed segment is not cut");
        let err = ledger.block_by_height(2).expect_err("damaged");
        assert!(
            matches!(&err, ReadError::Corrupted(Inconsistency::LogDamaged { reason, .. }) if reason == "checksum mismatch"),
            "{err:?}"
        );
        assert!(matches!(
            ledger.check().expect_err("damaged"),
            CheckError::Inconsistent(Inconsistency::LogDamaged { .. })
        ));
        // The blocks around it still read.
        assert!(ledger.block_by_height(3).expect("read").is_some());
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_appends_go_on() {
        let (dir, ledger) = ledger_with(3);
        drop(ledger);
        let segment = segments(dir.path()).pop().expect("a segment");
        let size = std::fs::metadata(&segment).expect("size").len();
        // Half of a record: a crash in the middle of a write.
        {
            use std::io::Write as _;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&segment)
                .expect("open");
            file.write_all(&[0, 0, 0, 200, 1, 2, 3]).expect("write");
        }
        let ledger = open(dir.path());
        assert_eq!(ledger.recovered().torn_bytes, 7);
        assert_eq!(std::fs::metadata(&segment).expect("size").len(), size);
        assert_eq!(ledger.head(), TestBlock::new(3).head());
        append(&ledger, &TestBlock::new(4));
        drop(ledger);
        let ledger = open(dir.path());
        assert_eq!(ledger.recovered().torn_bytes, 0);
        assert_eq!(ledger.check().expect("check").blocks, 4);
    }

    #[test]
    fn a_damaged_last_record_below_the_head_is_refused_on_open() {
        let (dir, ledger) = ledger_with(3);
        drop(ledger);
        // Block 3 is in the index (checkpointed on drop); cutting its
        // damaged record would lose it, so open refuses and cuts nothing.
        let segment = segments(dir.path()).pop().expect("a segment");
        let size = std::fs::metadata(&segment).expect("size").len();
        flip_from_end(&segment, 1);
        let err = Ledger::open(dir.path(), CHAIN, genesis()).expect_err("refused");
        assert!(
            matches!(
                &err,
                OpenError::Corrupted {
                    inconsistency: Inconsistency::LogDamaged { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(std::fs::metadata(&segment).expect("size").len(), size);
    }

    #[test]
    fn logged_blocks_above_the_head_are_reapplied_not_logged_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A log holding blocks 1 and 2 next to an empty index: what a crash
        // before the first checkpoint leaves.
        let blocks = (1..=2).map(|height| {
            let block = TestBlock::new(height);
            Ok(crate::block_log::LoggedBlock {
                height,
                hash: block.hash,
                parent_hash: block.parent_hash,
                encoded: block.encoded,
                pruned: false,
            })
        });
        crate::block_log::write_all(&dir.path().join(LOG_DIR_NAME), SEGMENT_BYTES_TARGET, blocks)
            .expect("write the log");
        let ledger = open(dir.path());
        assert_eq!((ledger.head().height, ledger.log_head()), (0, 2));
        assert_eq!(
            ledger.block_by_height(1).expect("read"),
            None,
            "not applied yet"
        );
        assert_eq!(
            ledger.logged_block(1).expect("read"),
            Some(TestBlock::new(1).encoded)
        );
        assert_eq!(ledger.check().expect("check").logged_above_head, 2);
        // A different block 1 is refused: the log already committed one.
        let mut other = TestBlock::new(1);
        other.hash = digest("other", 1);
        let err = ledger.append(&other.append_block()).expect_err("refused");
        assert!(
            matches!(
                err,
                AppendError::Corrupted(Inconsistency::LogDiffers { height: 1, .. })
            ),
            "{err:?}"
        );
        append(&ledger, &TestBlock::new(1));
        append(&ledger, &TestBlock::new(2));
        append(&ledger, &TestBlock::new(3));
        assert_eq!((ledger.head().height, ledger.log_head()), (3, 3));
        let report = ledger.check().expect("check");
        assert_eq!((report.blocks, report.logged_above_head), (3, 0));
        assert_eq!(segments(dir.path()).len(), 1);
    }

    #[test]
    fn a_ledger_installed_from_a_snapshot_starts_at_its_block_and_grows() {
        let (source, ledger) = ledger_with(6);
        let state: Vec<(Vec<u8>, Vec<u8>)> =
            [b"last".to_vec(), b"key/5".to_vec(), b"key/6".to_vec()]
                .into_iter()
                .map(|key| {
                    let value = ledger.state(&key).expect("read").expect("present");
                    (key, value)
                })
                .collect();
        let tree: BTreeMap<Vec<u8>, Vec<u8>> = [(
            b"root".to_vec(),
            ledger
                .state_tree_node(b"root")
                .expect("read")
                .expect("node"),
        )]
        .into_iter()
        .collect();
        drop(ledger);
        drop(source);
        let dir = tempfile::tempdir().expect("tempdir");
        let block = TestBlock::new(6);
        let snapshot_block = crate::SnapshotBlock {
            height: 6,
            hash: block.hash,
            parent_hash: block.parent_hash,
            state_root: block.state_root,
            timestamp_ms: block.timestamp_ms,
            encoded: &block.encoded,
            transactions: &block.transactions,
            query_keys: &block.query_keys,
        };
        // An install that stopped half way is started afresh.
        let mut install =
            crate::SnapshotInstall::begin(dir.path(), CHAIN, genesis()).expect("begin");
        install.add(state[..1].to_vec(), []).expect("add");
        drop(install);
        // A batch a byte larger than the first part: the first two parts
        // are written together, the third when the install finishes.
        let first_bytes: usize = state[2..]
            .iter()
            .map(|(key, value)| (key, value))
            .chain(&tree)
            .map(|(key, value)| key.len() + value.len())
            .sum();
        let mut install = crate::SnapshotInstall::begin(dir.path(), CHAIN, genesis())
            .expect("begin")
            .with_batch_bytes(first_bytes + 1);
        install.add(state[2..].to_vec(), tree.clone()).expect("add");
        install.add(state[..1].to_vec(), []).expect("add");
        install.add(state[1..2].to_vec(), []).expect("add");
        // "last" and its 8 bytes, "key/5" and "key/6" and one byte each.
        assert_eq!(install.state_bytes(), 4 + 8 + 5 + 1 + 5 + 1);
        assert_eq!(install.state_entries(), 3);
        install.finish(snapshot_block).expect("finish");
        assert!(!dir.path().join(crate::INSTALL_DIR_NAME).exists());

        let ledger = open(dir.path());
        assert_eq!(ledger.head(), block.head());
        assert_eq!(ledger.first_height(), 6);
        assert_eq!(
            ledger.block_by_height(6).expect("read"),
            Some(block.encoded.clone())
        );
        assert_eq!(
            ledger.block_by_height(5).expect("read"),
            None,
            "below the snapshot"
        );
        for (key, value) in &state {
            assert_eq!(ledger.state(key).expect("read").as_ref(), Some(value));
        }
        assert_eq!(ledger.state(b"key/4").expect("read"), None);
        let (id, result) = &block.transactions[1];
        assert_eq!(
            ledger.transaction(id).expect("read"),
            Some(TransactionLocation {
                height: 6,
                index: 1,
                result: result.clone()
            })
        );
        assert_eq!(ledger.query(b"b", None, 10).expect("query").len(), 1);
        let report = ledger.check().expect("check");
        assert_eq!(
            (report.blocks, report.state_entries, report.state_tree_nodes),
            (1, 3, 1)
        );
        // The chain goes on from the snapshot's block.
        append(&ledger, &TestBlock::new(7));
        drop(ledger);
        let ledger = open(dir.path());
        assert_eq!(ledger.head(), TestBlock::new(7).head());
        assert_eq!(ledger.check().expect("check").blocks, 2);
        drop(ledger);
        // An install never overwrites a ledger.
        assert!(matches!(
            crate::SnapshotInstall::begin(dir.path(), CHAIN, genesis()),
            Err(OpenError::AlreadyExists { .. })
        ));
        // A log left without its ledger file (a crash between the renames)
        // is refused, naming it.
        std::fs::remove_file(dir.path().join(LEDGER_FILE_NAME)).expect("remove");
        std::fs::remove_file(dir.path().join(crate::CONSENSUS_FILE_NAME)).expect("remove");
        let err = Ledger::open(dir.path(), CHAIN, genesis()).expect_err("lone log");
        assert!(
            matches!(
                err,
                OpenError::LogWithoutLedger {
                    first: 6,
                    expected: 1,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_version_4_ledger_needs_migrating_and_migrates() {
        let (dir, ledger) = ledger_with(5);
        drop(ledger);
        // Rebuild the version 4 layout: the blocks in the file, no log.
        tamper(dir.path(), |db_write| {
            let mut blocks = db_write.open_table(crate::schema::BLOCKS).expect("table");
            for height in 1..=5 {
                blocks
                    .insert(height_key(height), &TestBlock::new(height).encoded[..])
                    .expect("insert");
            }
            let mut meta = db_write.open_table(META).expect("meta");
            meta.insert(META_FORMAT_VERSION, &schema::encode_u64(4)[..])
                .expect("version");
        });
        std::fs::remove_dir_all(dir.path().join(LOG_DIR_NAME)).expect("remove the log");
        let err = Ledger::open(dir.path(), CHAIN, genesis()).expect_err("old format");
        assert!(
            matches!(
                err,
                OpenError::NeedsMigration {
                    got: 4,
                    supported: 5,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("govchain ledger migrate --data-dir"),
            "{err}"
        );
        // An interrupted earlier run left a partial log: it starts afresh.
        std::fs::create_dir(dir.path().join(LOG_DIR_NAME)).expect("dir");
        std::fs::write(
            dir.path()
                .join(LOG_DIR_NAME)
                .join("00000000000000000001.seg"),
            b"GOVLOG0",
        )
        .expect("partial");
        let mut seen = Vec::new();
        let migrated =
            crate::migrate(dir.path(), &mut |done, all| seen.push((done, all))).expect("migrate");
        assert_eq!(migrated, crate::Migrated::Moved { blocks: 5 });
        assert_eq!(seen.last(), Some(&(5, 5)));
        let ledger = open(dir.path());
        assert_eq!(ledger.head(), TestBlock::new(5).head());
        for height in 1..=5 {
            assert_eq!(
                ledger.block_by_height(height).expect("read"),
                Some(TestBlock::new(height).encoded)
            );
        }
        assert_eq!(ledger.check().expect("check").blocks, 5);
        drop(ledger);
        assert_eq!(
            crate::migrate(dir.path(), &mut |_, _| {}).expect("again"),
            crate::Migrated::AlreadyCurrent { height: 5 }
        );
    }

    #[test]
    fn check_finds_a_dangling_transaction() {
        let (dir, ledger) = ledger_with(2);
        drop(ledger);
        tamper(dir.path(), |db_write| {
            let mut transactions = db_write.open_table(TRANSACTIONS).expect("table");
            let record = schema::encode_transaction(2, 7, b"");
            transactions
                .insert(digest("stray", 0).as_bytes(), &record[..])
                .expect("insert");
        });
        let err = open(dir.path()).check().expect_err("inconsistent");
        assert!(matches!(
            err,
            CheckError::Inconsistent(Inconsistency::TransactionIndexOutOfRange {
                height: 2,
                index: 7,
                count: 2,
                ..
            })
        ));
    }

    #[test]
    fn open_refuses_a_head_without_its_block() {
        let (dir, ledger) = ledger_with(2);
        drop(ledger);
        tamper(dir.path(), |db_write| {
            let mut records = db_write.open_table(BLOCK_RECORDS).expect("table");
            records.remove(height_key(2)).expect("remove");
        });
        let err = Ledger::open(dir.path(), CHAIN, genesis()).expect_err("corrupted");
        assert!(
            matches!(
                &err,
                OpenError::Corrupted {
                    inconsistency: Inconsistency::MissingBlock {
                        table: "block_records",
                        height: 2,
                        head: 2
                    },
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn open_refuses_a_block_above_the_head() {
        let (dir, ledger) = ledger_with(2);
        drop(ledger);
        tamper(dir.path(), |db_write| {
            let mut meta = db_write.open_table(META).expect("table");
            let head = schema::encode_head(&TestBlock::new(1).head());
            meta.insert(META_HEAD, &head[..]).expect("insert");
        });
        let err = Ledger::open(dir.path(), CHAIN, genesis()).expect_err("corrupted");
        assert!(
            matches!(
                &err,
                OpenError::Corrupted {
                    inconsistency: Inconsistency::BlockOutsideChain {
                        height: 2,
                        head: 1,
                        ..
                    },
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn open_refuses_a_format_3_ledger_naming_both_versions() {
        let (dir, ledger) = ledger_with(0);
        drop(ledger);
        tamper(dir.path(), |db_write| {
            let mut meta = db_write.open_table(META).expect("table");
            meta.insert(META_FORMAT_VERSION, &schema::encode_u64(3)[..])
                .expect("insert");
        });
        let err = Ledger::open(dir.path(), CHAIN, genesis()).expect_err("refused");
        assert!(matches!(
            err,
            OpenError::UnsupportedFormat {
                got: 3,
                supported: 5
            }
        ));
        let message = err.to_string();
        assert!(
            message.contains("format version 3") && message.contains("reads version 5"),
            "{message}"
        );
    }

    #[test]
    fn open_refuses_an_unknown_format_version() {
        let (dir, ledger) = ledger_with(0);
        drop(ledger);
        tamper(dir.path(), |db_write| {
            let mut meta = db_write.open_table(META).expect("table");
            meta.insert(META_FORMAT_VERSION, &schema::encode_u64(99)[..])
                .expect("insert");
        });
        let err = Ledger::open(dir.path(), CHAIN, genesis()).expect_err("refused");
        assert!(matches!(
            err,
            OpenError::UnsupportedFormat {
                got: 99,
                supported: 5
            }
        ));
    }
}
