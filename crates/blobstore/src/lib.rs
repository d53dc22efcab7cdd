//! The blob store of a govchain node: files that transactions refer to by
//! content (ID photos, certificates, scanned documents), cut into chunks and
//! kept in one redb file, `<dir>/blobs.redb`.
//!
//! A blob is named by the CID that IPFS computes for the same bytes under
//! the `unixfs-v1-2025` profile of IPIP-499 ([`PROFILE_UNIXFS_V1_2025`]):
//! CIDv1, SHA-256, fixed 1 MiB chunks stored as raw leaves (codec `raw`,
//! 0x55), and a balanced UnixFS DAG of dag-pb nodes (codec `dag-pb`, 0x70)
//! with at most 1024 links each. A blob of at most one chunk is that chunk's
//! raw CID; a larger one is the root node of the DAG, built bottom-up in
//! exactly the shape `ipfs-unixfs-importer`'s balanced layout builds. So a
//! CID recorded on the chain can be checked with any IPFS tool, and
//! [`cid_of_reader`] computes it without storing anything, like
//! `ipfs add --only-hash`.
//!
//! **Invariant:** every byte served was verified against its CID. Reads
//! hash each node and chunk they load and compare the digest with the CID
//! that named it, from the root down; a damaged block is reported as
//! [`BlobError::Corrupt`] and never returned.
//!
//! **Invariant:** a root is only recorded after all its blocks are durable.
//! [`BlobStore::put`] writes chunks and nodes in bounded batches, each
//! committed durably ([`redb::Durability::Immediate`]) on a committer thread
//! while the next batch is read and hashed, and records the root in its last
//! write, which begins only after every batch is committed. An upload that
//! fails, or goes over its size limit, records no root; the blocks it had
//! already written are unreferenced and the next [`BlobStore::gc`] removes
//! them.
//!
//! **Invariant:** one store, one set of [`ChunkerParams`]: they are recorded
//! when the store is created and checked on every open, so that equal bytes
//! always get one CID and share their blocks.
//!
//! **Invariant:** a block is stored once, however many blobs share it
//! (deduplication by CID). Garbage collection removes a block only when no
//! remaining root reaches it and no upload in progress has staged it.
//!
//! **Boundary:** a blob's CID is the public name of its bytes, and must stay
//! equal to the one IPFS computes (tested against reference vectors from
//! the JavaScript importer, see `tests/reference/`).
#![forbid(unsafe_code)]

mod builder;
mod chunks;
mod dag;
pub mod dump;
mod error;
mod gc;
mod params;
mod reader;
mod schema;
mod store;
mod upload;

/// The CID type of the public API. Re-exported so that callers name the
/// exact `cid` version this crate builds CIDs with.
pub use cid::Cid;

pub use builder::{ChunkReadError, ChunkSource, ReadChunks, cid_of_reader};
pub use error::{BlobError, StorageFailure};
pub use gc::GcReport;
pub use params::{ChunkerParams, PROFILE_UNIXFS_V1_2025};
pub use reader::BlobReader;
pub use store::{BlobInfo, BlobStore, StoreCounts};

/// The name of the blob store file inside its directory.
pub const BLOBSTORE_FILE_NAME: &str = "blobs.redb";

/// The profile's chunk size, and the largest chunk a store accepts: IPFS
/// peers exchange blocks of at most 2 MiB, and the profile picked 1 MiB.
pub const CHUNK_SIZE_BYTES_MAX: u32 = 1024 * 1024;
/// The profile's DAG width, and the widest node a store builds.
pub const LINKS_PER_NODE_MAX: u32 = 1024;
/// A node with one link could never reduce a level, so the tree would not
/// end.
pub const LINKS_PER_NODE_MIN: u32 = 2;

/// The largest blob one [`BlobStore::put`] accepts, whatever limit the
/// caller passes. Government documents are far smaller; the ceiling keeps
/// one upload's staging memory and in-flight set bounded.
pub const BLOB_SIZE_BYTES_MAX: u64 = 64 * 1024 * 1024 * 1024;
/// The most bytes one [`BlobStore::read_range`] returns in a `Vec`; larger
/// ranges are streamed with [`BlobStore::reader_range`].
pub const READ_RANGE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Block bytes staged in memory before a put commits them in one redb
/// write: large enough to amortise a commit, small enough that an upload
/// holds little memory and never holds the redb writer while it waits for
/// its input.
pub const BATCH_SIZE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Blocks staged before a commit, for small chunk sizes.
pub const BATCH_BLOCKS_MAX: usize = 4096;
/// Levels of a DAG: a blob of `u64::MAX` bytes in 1-byte chunks with two
/// links per node has 65. Reads refuse deeper DAGs instead of following
/// them.
pub const DAG_DEPTH_MAX: usize = 65;
/// Unreferenced blocks that one garbage collection step collects before it
/// deletes them and scans on.
pub const GC_BLOCKS_PER_STEP_MAX: usize = 4096;
/// redb's page cache; redb's own default is 1 GiB.
pub const CACHE_SIZE_BYTES_MAX: usize = 64 * 1024 * 1024;

const _: () = assert!(LINKS_PER_NODE_MIN <= LINKS_PER_NODE_MAX);
// One full batch must hold at least one chunk, so that a put always makes
// progress.
const _: () = assert!(CHUNK_SIZE_BYTES_MAX as usize <= BATCH_SIZE_BYTES_MAX);
const _: () = assert!(READ_RANGE_BYTES_MAX <= BLOB_SIZE_BYTES_MAX);
// A read returns its range in a `Vec`, indexed by `usize`.
const _: () = assert!(READ_RANGE_BYTES_MAX <= usize::MAX as u64);
// The largest node: per link a CID of 36 bytes, an empty name and a Tsize
// of at most 10 varint bytes, each with its tag and length (at most 52
// bytes), plus a blocksize of at most 11 bytes in the UnixFS data. Far
// below the chunk ceiling, so nodes are blocks of ordinary size too.
const _: () =
    assert!(LINKS_PER_NODE_MAX as usize * (52 + 11) + 64 <= CHUNK_SIZE_BYTES_MAX as usize);
