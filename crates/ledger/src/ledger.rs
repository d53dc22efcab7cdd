//! [`Ledger`]: open, append and point reads.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::{Mutex, PoisonError, RwLock};

use govchain_crypto::Digest;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
    WriteTransaction,
};

use crate::check;
use crate::error::{
    AppendError, CheckError, Context, Inconsistency, OpenError, ReadError, StorageFailure,
};
use crate::schema::{
    self, BLOCK_RECORDS, BLOCKS, BlockRecord, HEIGHT_BY_HASH, META, META_CHAIN_ID,
    META_FORMAT_VERSION, META_GENESIS_HASH, META_HEAD, STATE, TRANSACTIONS, height_key,
};
use crate::{
    APPEND_SIZE_BYTES_MAX, BLOCK_SIZE_BYTES_MAX, BLOCK_TRANSACTIONS_MAX, BLOCK_WRITES_MAX,
    CACHE_SIZE_BYTES_MAX, CHAIN_ID_SIZE_BYTES_MAX, LEDGER_FILE_NAME, STATE_KEY_SIZE_BYTES_MAX,
};

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
}

/// Where a transaction was committed, and its encoded result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionLocation {
    pub height: u64,
    pub index: u32,
    pub result: Vec<u8>,
}

/// The durable store of one node: blocks, the transaction index and the
/// world state in a single redb file. See the crate documentation for the
/// invariants.
pub struct Ledger {
    db: Database,
    chain_id: String,
    genesis_hash: Digest,
    /// The committed head, so that [`Ledger::head`] does no I/O. Written
    /// only after a commit succeeded, under `append_lock`.
    head: RwLock<Head>,
    /// Serialises appends from reading the cached head to updating it, so
    /// each append validates against the head its predecessor left. redb's
    /// own writer lock is released inside `commit`, before the cache moves.
    append_lock: Mutex<()>,
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
    /// Opens or creates `<dir>/ledger.redb`, creating `dir` if needed.
    ///
    /// A new ledger records `chain_id` and `genesis_hash`; an existing one
    /// must match both. The stored head is checked against the block
    /// records and the hash index before it is trusted. If the last process
    /// crashed, redb first rolls back to the last durable commit.
    pub fn open(dir: &Path, chain_id: &str, genesis_hash: Digest) -> Result<Ledger, OpenError> {
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
            Loaded::Open(err) => err,
            Loaded::Corrupted(inconsistency) => corrupted(inconsistency),
        })?;
        let snapshot = db.begin_read().context("beginning the open check")?;
        check::verify_head(&snapshot, &head, genesis_hash).map_err(|err| match err {
            CheckError::Inconsistent(inconsistency) => corrupted(inconsistency),
            CheckError::Storage(failure) => OpenError::Storage(failure),
        })?;
        Ok(Ledger {
            db,
            chain_id: chain_id.to_owned(),
            genesis_hash,
            head: RwLock::new(head),
            append_lock: Mutex::new(()),
        })
    }

    /// The committed head; cached, no I/O.
    pub fn head(&self) -> Head {
        // A writer only assigns a `Copy` value under this lock, so a
        // poisoned lock still holds a whole head.
        *self.head.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    pub fn genesis_hash(&self) -> Digest {
        self.genesis_hash
    }

    /// Appends one block in one redb write transaction, committed with
    /// [`Durability::Immediate`] (fsync) before this returns, so a crash
    /// leaves all of the block or none of it.
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
        let _append = self
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
        let db_write = begin_durable_write(&self.db)?;
        // On error, dropping `db_write` uncommitted rolls all of it back.
        write_block(&db_write, block, head.height)?;
        advance_head(&db_write, &head, &next)?;
        db_write.commit().context("committing a block")?;

        let mut cached = self.head.write().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(cached.height, head.height, "appends are serialised");
        *cached = next;
        Ok(())
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
        let snapshot = self.begin_read()?;
        let blocks = open_read(&snapshot, BLOCKS)?;
        let block = blocks
            .get(height_key(height))
            .context("reading a block by height")?;
        Ok(block.map(|guard| guard.value().to_vec()))
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
        let blocks = open_read(&snapshot, BLOCKS)?;
        let block = blocks
            .get(height_key(height))
            .context("reading a block by hash")?
            .ok_or(Inconsistency::HashIndexDangling {
                hash: *hash,
                height,
            })?;
        Ok(Some((height, block.value().to_vec())))
    }

    pub fn transaction(&self, id: &Digest) -> Result<Option<TransactionLocation>, ReadError> {
        let snapshot = self.begin_read()?;
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

    /// The world-state value of `key` as of the head.
    pub fn state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ReadError> {
        let snapshot = self.begin_read()?;
        let state = open_read(&snapshot, STATE)?;
        let value = state.get(key).context("reading state")?;
        Ok(value.map(|guard| guard.value().to_vec()))
    }

    /// Structural self-check; see [`check`](crate::check) for what it
    /// covers. Runs on one snapshot, concurrently with appends.
    pub fn check(&self) -> Result<crate::CheckReport, CheckError> {
        let snapshot = self.db.begin_read().context("beginning the check")?;
        check::check(&snapshot, self.genesis_hash)
    }

    fn begin_read(&self) -> Result<ReadTransaction, ReadError> {
        Ok(self.db.begin_read().context("beginning a read")?)
    }
}

fn open_read<K: redb::Key + 'static, V: redb::Value + 'static>(
    snapshot: &ReadTransaction,
    table: TableDefinition<'_, K, V>,
) -> Result<redb::ReadOnlyTable<K, V>, StorageFailure> {
    snapshot.open_table(table).context("opening a table to read")
}

/// Every write transaction is durable before `commit` returns, and records
/// redb's allocator state ("quick repair") so that reopening after a crash
/// does not walk the whole file, at the price of a second fsync per commit.
fn begin_durable_write(db: &Database) -> Result<WriteTransaction, StorageFailure> {
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
    drop(db_write.open_table(BLOCKS).context(CONTEXT)?);
    drop(db_write.open_table(BLOCK_RECORDS).context(CONTEXT)?);
    drop(db_write.open_table(HEIGHT_BY_HASH).context(CONTEXT)?);
    drop(db_write.open_table(TRANSACTIONS).context(CONTEXT)?);
    drop(db_write.open_table(STATE).context(CONTEXT)?);
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
    let stored_chain_id = String::from_utf8(stored_chain_id).map_err(|err| {
        Inconsistency::ChainIdNotUtf8 {
            len: err.as_bytes().len(),
        }
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

fn read_meta(meta: &impl ReadableTable<&'static str, &'static [u8]>, key: &'static str) -> Result<Vec<u8>, Loaded> {
    let value = meta.get(key).context("reading meta")?;
    Ok(value
        .ok_or(Inconsistency::MissingMeta { key })?
        .value()
        .to_vec())
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
    limit("the encoded size in bytes", block.encoded.len(), BLOCK_SIZE_BYTES_MAX)?;
    limit("the transaction count", block.transactions.len(), BLOCK_TRANSACTIONS_MAX)?;
    limit("the state write count", block.writes.len(), BLOCK_WRITES_MAX)?;
    let mut size = block.encoded.len();
    for (_, result) in block.transactions {
        size = size.saturating_add(result.len());
    }
    for (key, value) in block.writes {
        limit("a state key size in bytes", key.len(), STATE_KEY_SIZE_BYTES_MAX)?;
        let value_len = value.as_ref().map_or(0, Vec::len);
        size = size.saturating_add(key.len()).saturating_add(value_len);
    }
    limit("the total size in bytes", size, APPEND_SIZE_BYTES_MAX)
}

/// Stages every row of `block` in `db_write`; nothing is visible until the
/// caller commits.
fn write_block(
    db_write: &WriteTransaction,
    block: &AppendBlock<'_>,
    head_height: u64,
) -> Result<(), AppendError> {
    index_hash(db_write, block)?;
    store_block(db_write, block, head_height)?;
    index_transactions(db_write, block)?;
    apply_writes(db_write, block.writes)?;
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
    let transaction_count = u32::try_from(block.transactions.len()).map_err(|_| {
        AppendError::LimitExceeded {
            height: block.height,
            what: "the transaction count",
            got: block.transactions.len(),
            max: BLOCK_TRANSACTIONS_MAX,
        }
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
    let mut blocks = db_write.open_table(BLOCKS).context("opening blocks")?;
    if blocks
        .insert(key, block.encoded)
        .context("storing a block")?
        .is_some()
    {
        return Err(outside("blocks").into());
    }
    Ok(())
}

fn index_transactions(
    db_write: &WriteTransaction,
    block: &AppendBlock<'_>,
) -> Result<(), AppendError> {
    let mut transactions = db_write
        .open_table(TRANSACTIONS)
        .context("opening the transaction index")?;
    // `check_limits` bounded the count far below `u32::MAX`, so the index
    // range cannot run out before the slice does.
    for (index, (id, result)) in (0_u32..).zip(block.transactions) {
        let record = schema::encode_transaction(block.height, index, result);
        let previous = transactions
            .insert(id.as_bytes(), &record[..])
            .context("indexing a transaction")?;
        if let Some(existing) = previous {
            let (existing, _, _) = schema::decode_transaction(existing.value())?;
            return Err(AppendError::DuplicateTransaction {
                id: *id,
                height: block.height,
                existing,
            });
        }
    }
    Ok(())
}

fn apply_writes(
    db_write: &WriteTransaction,
    writes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
) -> Result<(), StorageFailure> {
    let mut state = db_write.open_table(STATE).context("opening state")?;
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
    assert_eq!(Some(next.height), current.height.checked_add(1), "the head moves by one");
    meta.insert(META_HEAD, &schema::encode_head(next)[..])
        .context("writing the head")?;
    Ok(())
}
