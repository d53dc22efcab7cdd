//! Errors, one enum per operation so that callers can tell the cases apart.
//!
//! Disk contents are input: a record that does not decode, or two tables
//! that disagree, is reported as an [`Inconsistency`] rather than a panic.

use std::path::PathBuf;

use govchain_crypto::Digest;

/// A redb operation failed; `context` says what the ledger was doing.
#[derive(Debug, thiserror::Error)]
#[error("ledger storage failed while {context}")]
pub struct StorageFailure {
    context: &'static str,
    #[source]
    source: redb::Error,
}

impl StorageFailure {
    /// What the ledger was doing when redb failed.
    pub fn context(&self) -> &'static str {
        self.context
    }

    /// The underlying redb error.
    pub fn redb(&self) -> &redb::Error {
        &self.source
    }
}

/// A file operation on the block log failed (see `block_log`).
#[derive(Debug, thiserror::Error)]
#[error("block log {path}: {context} failed")]
pub struct LogFailure {
    path: PathBuf,
    context: &'static str,
    #[source]
    source: std::io::Error,
}

impl LogFailure {
    pub(crate) fn new(
        path: &std::path::Path,
        context: &'static str,
        source: std::io::Error,
    ) -> Self {
        Self {
            path: path.to_path_buf(),
            context,
            source,
        }
    }

    /// What the ledger was doing when the file operation failed.
    pub fn context(&self) -> &'static str {
        self.context
    }
}

/// Attaches a description of the ledger operation to any redb error.
pub(crate) trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, StorageFailure>;
}

impl<T, E: Into<redb::Error>> Context<T> for Result<T, E> {
    fn context(self, context: &'static str) -> Result<T, StorageFailure> {
        self.map_err(|err| StorageFailure {
            context,
            source: err.into(),
        })
    }
}

/// The stored ledger contradicts itself: a bug, a damaged disk, or a file
/// edited outside govchain. Found on open, by [`crate::Ledger::check`], or
/// when a read decodes a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Inconsistency {
    #[error(
        "block {height} is needed whole, but its transactions were pruned (whole blocks from height {bodies_from} on)"
    )]
    PrunedBlockNeeded { height: u64, bodies_from: u64 },
    #[error("block log segment {segment} is damaged at byte {offset}: {reason}")]
    LogDamaged {
        segment: String,
        offset: u64,
        reason: String,
    },
    #[error("block log segment {segment} starts at height {first}, expected {expected}")]
    LogGap {
        segment: String,
        first: u64,
        expected: u64,
    },
    #[error(
        "the block log ends at height {logged}, below the indexed head {head}: blocks the index holds are missing from the log"
    )]
    LogBehindIndex { logged: u64, head: u64 },
    #[error("block {height} in the log has hash {logged}, but the index holds {indexed}")]
    LogDiffers {
        height: u64,
        logged: Digest,
        indexed: Digest,
    },
    #[error(
        "block {height} in the log has parent {parent}, but block {previous} has hash {expected}"
    )]
    LogParentMismatch {
        height: u64,
        parent: Digest,
        previous: u64,
        expected: Digest,
    },
    #[error("meta entry {key:?} is missing")]
    MissingMeta { key: &'static str },
    #[error("record in table {table} is {got} bytes, expected {expected}")]
    RecordLength {
        table: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("record in table {table} is {got} bytes, expected at least {min}")]
    RecordTooShort {
        table: &'static str,
        got: usize,
        min: usize,
    },
    #[error("stored chain id is not UTF-8 ({len} bytes)")]
    ChainIdNotUtf8 { len: usize },
    #[error("block {height} is missing from table {table} (head is {head})")]
    MissingBlock {
        table: &'static str,
        height: u64,
        head: u64,
    },
    #[error("block {height} in table {table} is outside the chain 1..={head}")]
    BlockOutsideChain {
        table: &'static str,
        height: u64,
        head: u64,
    },
    #[error("head hash {head} differs from the hash {stored} stored for block {height}")]
    HeadHashMismatch {
        height: u64,
        head: Digest,
        stored: Digest,
    },
    #[error(
        "head state root {head} differs from the state root {stored} stored for block {height}"
    )]
    HeadStateRootMismatch {
        height: u64,
        head: Digest,
        stored: Digest,
    },
    #[error(
        "head timestamp {head} ms differs from the timestamp {stored} ms stored for block {height}"
    )]
    HeadTimestampMismatch { height: u64, head: u64, stored: u64 },
    #[error("the empty ledger has head hash {head}, expected the genesis hash {genesis}")]
    EmptyHeadNotGenesis { head: Digest, genesis: Digest },
    #[error("hash {hash} of block {height} is not in the hash index")]
    HashNotIndexed { height: u64, hash: Digest },
    #[error("hash index maps {hash} to block {indexed}, but it is the hash of block {height}")]
    HashIndexMismatch {
        hash: Digest,
        indexed: u64,
        height: u64,
    },
    #[error("hash index has {entries} entries for {blocks} blocks")]
    HashIndexCount { entries: u64, blocks: u64 },
    #[error("block {height} has parent {parent}, but block {previous} has hash {expected}")]
    ParentMismatch {
        height: u64,
        parent: Digest,
        previous: u64,
        expected: Digest,
    },
    #[error("hash index maps {hash} to block {height}, which is not stored")]
    HashIndexDangling { hash: Digest, height: u64 },
    #[error("transaction {id} points at block {height}, outside the chain 1..={head}")]
    TransactionOutsideChain { id: Digest, height: u64, head: u64 },
    #[error(
        "transaction {id} has index {index} in block {height}, which holds {count} transactions"
    )]
    TransactionIndexOutOfRange {
        id: Digest,
        height: u64,
        index: u32,
        count: u32,
    },
    #[error(
        "transaction index has {entries} entries and {waiting} recent ones waiting, \
         the blocks hold {expected} transactions"
    )]
    TransactionCount {
        entries: u64,
        waiting: u64,
        expected: u64,
    },
    #[error("recent transactions of block {height} are kept outside the window {first}..={head}")]
    RecentRowOutsideWindow { height: u64, first: u64, head: u64 },
    #[error("recent transactions of block {height} list {listed}, the block holds {count}")]
    RecentRowCount {
        height: u64,
        listed: u64,
        count: u32,
    },
    #[error(
        "transaction {id} is listed at block {height} index {index}, \
         but indexed at block {indexed_height} index {indexed_index}"
    )]
    RecentRowMismatch {
        id: Digest,
        height: u64,
        index: u32,
        indexed_height: u64,
        indexed_index: u32,
    },
}

/// Why [`crate::Ledger::open`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("chain id must be 1 to {max} bytes, got {got}")]
    InvalidChainId { got: usize, max: usize },
    #[error("cannot create ledger directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Includes another process holding the file
    /// ([`redb::DatabaseError::DatabaseAlreadyOpen`]).
    #[error("cannot open ledger database {path}")]
    Database {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error(
        "ledger format version {got} is not supported (this build reads version {supported}); \
         move the data directory aside and start the node with an empty one: it syncs the chain from its peers"
    )]
    UnsupportedFormat { got: u64, supported: u64 },
    #[error(
        "ledger format version {got} keeps blocks inside {path}; this build (format {supported}) keeps them in a block log. \
         Stop the node and run `govchain ledger migrate --data-dir {data_dir}` (it moves the blocks, keeping everything else), \
         or move the data directory aside and start with an empty one to sync from peers"
    )]
    NeedsMigration {
        path: PathBuf,
        data_dir: PathBuf,
        got: u64,
        supported: u64,
    },
    #[error(
        "{path} already exists: a snapshot is installed only into a data directory without a ledger"
    )]
    AlreadyExists { path: PathBuf },
    #[error(
        "the block log {log} starts at height {first}, but the ledger file starts at {expected}: \
         an interrupted snapshot install left it; remove {log} and start again"
    )]
    LogWithoutLedger {
        log: PathBuf,
        first: u64,
        expected: u64,
    },
    #[error("ledger belongs to chain {stored:?}, but chain {given:?} was requested")]
    ChainIdMismatch { stored: String, given: String },
    #[error("ledger was created from genesis {stored}, but genesis {given} was given")]
    GenesisMismatch { stored: Digest, given: Digest },
    #[error("ledger {path} is corrupted")]
    Corrupted {
        path: PathBuf,
        #[source]
        inconsistency: Inconsistency,
    },
    #[error(transparent)]
    Log(#[from] LogFailure),
    #[error(transparent)]
    Storage(#[from] StorageFailure),
}

/// Why [`crate::Ledger::append`] refused or failed.
///
/// On every error the ledger is unchanged, except a [`AppendError::Storage`]
/// from the commit itself: redb then guarantees all-or-nothing but not which,
/// and refuses further writes until the ledger is reopened, which reloads
/// the head from disk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    #[error("block height {got} does not extend the head: expected height {expected}")]
    WrongHeight { got: u64, expected: u64 },
    #[error("block {height} has parent {got}, expected the head hash {expected}")]
    WrongParent {
        height: u64,
        got: Digest,
        expected: Digest,
    },
    #[error("the ledger is full: head height {head} cannot grow")]
    HeightExhausted { head: u64 },
    #[error("block {height} has hash {hash}, already stored as block {existing}")]
    DuplicateBlockHash {
        height: u64,
        hash: Digest,
        existing: u64,
    },
    #[error("block {height} has hash {hash}, which is the genesis hash")]
    GenesisHash { height: u64, hash: Digest },
    #[error("transaction {id} in block {height} is already stored in block {existing}")]
    DuplicateTransaction {
        id: Digest,
        height: u64,
        existing: u64,
    },
    #[error("block {height}: {what} is {got}, over the limit {max}")]
    LimitExceeded {
        height: u64,
        what: &'static str,
        got: usize,
        max: usize,
    },
    #[error("ledger is corrupted")]
    Corrupted(#[from] Inconsistency),
    #[error(transparent)]
    Log(#[from] LogFailure),
    #[error(transparent)]
    Storage(#[from] StorageFailure),
}

/// Why a read failed. A missing entry is `Ok(None)`, not an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The block is held only as its header and certificate.
    #[error(
        "block {height}'s transactions were pruned: this ledger keeps whole blocks from height {bodies_from} on (every block's header and commit certificate remain)"
    )]
    Pruned { height: u64, bodies_from: u64 },
    #[error("ledger is corrupted")]
    Corrupted(#[from] Inconsistency),
    #[error(transparent)]
    Log(#[from] LogFailure),
    #[error(transparent)]
    Storage(#[from] StorageFailure),
}

/// Why [`crate::Ledger::check`] failed: the first inconsistency found, or
/// a storage failure that stopped the walk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    #[error("ledger is inconsistent")]
    Inconsistent(#[from] Inconsistency),
    #[error(transparent)]
    Log(#[from] LogFailure),
    #[error(transparent)]
    Storage(#[from] StorageFailure),
}

/// Why [`crate::Ledger::prune_bodies`] stopped. The segments pruned before
/// the error stay pruned; the rest are whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PruneError {
    #[error("cannot prune block {height}: {reason}")]
    Strip { height: u64, reason: String },
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Log(#[from] LogFailure),
    #[error(transparent)]
    Storage(#[from] StorageFailure),
}
