//! The durable store of a govchain node: committed blocks in a block log
//! of checksummed segment files, `<data_dir>/blocks/` (see `block_log`);
//! what derives from them (block records, the transaction and hash
//! indexes, the world state and its tree, the query index) in one redb
//! file, `<data_dir>/ledger.redb`; and the validator's consensus records
//! (votes, views) in a second one, `<data_dir>/consensus.redb`, written more
//! often and kept small.
//!
//! The ledger is a storage layer. It keeps blocks as the opaque bytes the
//! caller encoded and never decodes them, checks no signature and executes
//! nothing; the caller hands it, with each block, the hash, parent, state
//! root, transaction results and state writes that other crates computed.
//!
//! **Invariant:** a block is durable when [`Ledger::append`] returns: it
//! stages the block's record, its hash-index entry, its transactions, its
//! state writes and the new head in one redb write transaction, and the
//! state tree nodes they change in the tree tier (in memory, merged into
//! redb every few blocks, see `tree_tier`), then appends the block to the
//! log and syncs it, then commits. That commit is durable (`fsync`) only
//! every [`CHECKPOINT_BLOCKS`] blocks (at heights a validator's slot
//! shifts, [`Ledger::stagger`], so validators do not stall together, and
//! never more than that many appends apart), and every durable commit
//! merges the tree tier: after a crash the redb file holds its last checkpoint, whole,
//! and [`Ledger::log_head`] tells the caller which logged blocks to
//! execute and append again.
//!
//! **Invariant:** the head only moves forward by one. An append is accepted
//! only at `head.height + 1` with `parent_hash == head.hash`, so heights
//! `1..=head` are all present and hash-chained back to genesis. The cached
//! [`Head`] moves only after the commit succeeded.
//!
//! **Invariant:** a block hash and a transaction id are each stored once; a
//! repeat is refused, never overwritten. The transaction index keeps recent
//! ids in a per-block row and merges them into the id-keyed table range by
//! range (see `recent`), and lookups see both tiers.
//!
//! **Invariant:** every integer the ledger packs, keys included, is
//! fixed-width big-endian (see `schema`).
//!
//! **Invariant:** one process owns the files: redb locks them, and `open`
//! takes that lock before it touches the log, so a second node on the same
//! data directory fails to open instead of interleaving writes.
//!
//! **Invariant:** a consensus record is durable when
//! [`Ledger::consensus_write`] returns; records about heights at or below
//! the head are never returned, and are deleted by a later write.
//!
//! Disk contents are input: [`Ledger::open`] checks the stored identity,
//! that the head is backed by its block record and its logged block, and
//! cuts only a torn last record off the log; and [`Ledger::check`] walks every
//! table in bounded memory; both report an [`Inconsistency`] rather than
//! panicking.
//!
//! **Boundary:** the public API of this crate ([`Ledger`], [`AppendBlock`],
//! [`Head`], the error enums) is what `node` and `cli` build on.
#![forbid(unsafe_code)]

mod block_log;
mod check;
mod consensus;
mod dump;
mod error;
mod install;
mod ledger;
mod migrate;
mod recent;
mod schema;
mod tree_tier;

pub use block_log::{LOG_DIR_NAME, Recovered, SEGMENT_BYTES_TARGET};
pub use check::CheckReport;
pub use consensus::{CONSENSUS_KEY_BYTES, consensus_key};
pub use dump::{
    DumpRow, ExportError, IMPORT_COMMIT_BYTES_MAX, ImportError, RowSink, Snapshot, import,
};
pub use error::{
    AppendError, CheckError, Inconsistency, LogFailure, OpenError, PruneError, ReadError,
    StorageFailure,
};
pub use install::{INSTALL_DIR_NAME, SnapshotBlock, SnapshotInstall};
pub use ledger::{
    AppendBlock, Head, HeadView, Ledger, PruneReport, StoredBlock, StripBlock, Stripped,
    TransactionLocation,
};
pub use migrate::{Migrated, migrate};

/// The name of the ledger file inside the data directory.
pub const LEDGER_FILE_NAME: &str = "ledger.redb";
/// The name of the consensus record file inside the data directory.
pub const CONSENSUS_FILE_NAME: &str = "consensus.redb";

// Storage ceilings. Consensus limits on blocks come from genesis and must
// sit below these; the ledger enforces them so that a bug upstream cannot
// make one redb transaction unboundedly large.

/// A chain id is a short name, e.g. `"govchain-test"`.
pub const CHAIN_ID_SIZE_BYTES_MAX: usize = 128;
/// One encoded block.
pub const BLOCK_SIZE_BYTES_MAX: usize = 64 * 1024 * 1024;
pub const BLOCK_TRANSACTIONS_MAX: usize = 100_000;
/// State keys and deletions one block may write.
pub const BLOCK_WRITES_MAX: usize = 1_000_000;
/// State tree nodes one block may write or delete: a written key changes
/// the nodes on its path, about log2(keys) of them.
pub const BLOCK_TREE_WRITES_MAX: usize = 64 * BLOCK_WRITES_MAX;
pub const STATE_KEY_SIZE_BYTES_MAX: usize = 4 * 1024;
/// Everything one append stores: the encoded block, the transaction
/// results, and the state keys and values.
pub const APPEND_SIZE_BYTES_MAX: usize = 512 * 1024 * 1024;
/// redb's page cache; redb's own default is 1 GiB.
pub const CACHE_SIZE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// redb is committed durably (`fsync`) once per this many appends, and
/// without `fsync` in between: the block log makes each block durable, and
/// a restart after a crash re-applies at most this many blocks from it.
pub const CHECKPOINT_BLOCKS: u64 = 64;
/// ... or once the appends since the last checkpoint stored this many
/// bytes, which bounds the pages redb cannot reuse before it.
pub const CHECKPOINT_BYTES: usize = 64 * 1024 * 1024;
/// The consensus record file's page cache: it holds the records of at most
/// one window of heights.
pub const CONSENSUS_CACHE_SIZE_BYTES_MAX: usize = 16 * 1024 * 1024;

// A transaction's index in its block is stored as a `u32`.
const _: () = assert!(BLOCK_TRANSACTIONS_MAX <= u32::MAX as usize);
const _: () = assert!(BLOCK_SIZE_BYTES_MAX <= APPEND_SIZE_BYTES_MAX);
// redb refuses values over 3 GiB; one append's largest value is below the
// total.
const _: () = assert!(APPEND_SIZE_BYTES_MAX < 3 * 1024 * 1024 * 1024);
