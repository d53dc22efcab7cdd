//! [`BlobError`], the one error of the blob store, and [`StorageFailure`]
//! for redb.
//!
//! Disk contents are input: a block that does not hash to its CID, or a
//! record of the wrong length, is an error value, never a panic.

use std::io;
use std::path::PathBuf;

use cid::Cid;

use crate::ChunkerParams;

/// A redb operation failed; `context` says what the store was doing.
#[derive(Debug, thiserror::Error)]
#[error("blob storage failed while {context}")]
pub struct StorageFailure {
    context: &'static str,
    #[source]
    source: redb::Error,
}

impl StorageFailure {
    /// What the store was doing when redb failed.
    pub fn context(&self) -> &'static str {
        self.context
    }

    /// The underlying redb error.
    pub fn redb(&self) -> &redb::Error {
        &self.source
    }
}

/// Attaches a description of the store operation to any redb error.
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

/// Why a blob store operation failed.
///
/// Caller mistakes (`InvalidParams`, `LimitAboveMax`, `RangeOutOfBounds`,
/// `RangeTooLong`, `NotFound`, `NotPinned`), an upload the store refused
/// (`TooLarge`, `Read`), damage found on disk (`Corrupt`, `Missing`,
/// `Malformed`, `RootSizeMismatch`, `BadKey`, `BadRecord`) and storage failures are distinct variants so
/// that a service can map them to distinct status codes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    #[error("{what} must be {min} to {max}, got {got}")]
    InvalidParams {
        what: &'static str,
        got: u32,
        min: u32,
        max: u32,
    },
    #[error("size limit of {limit_bytes} bytes is above the store's maximum of {max_bytes} bytes")]
    LimitAboveMax { limit_bytes: u64, max_bytes: u64 },
    /// The upload was stopped as soon as it went over; `read_bytes` is how
    /// far it got, not the blob's full size.
    #[error(
        "blob is over the size limit: read {read_bytes} bytes, the limit is {limit_bytes} bytes"
    )]
    TooLarge { read_bytes: u64, limit_bytes: u64 },
    #[error("reading the blob failed after {read_bytes} bytes")]
    Read {
        read_bytes: u64,
        #[source]
        source: io::Error,
    },
    #[error("blob {cid} is not in the store")]
    NotFound { cid: Cid },
    #[error("range of {len} bytes at offset {offset} is outside the blob's {size_bytes} bytes")]
    RangeOutOfBounds {
        offset: u64,
        len: u64,
        size_bytes: u64,
    },
    #[error("range of {len} bytes is over the {max} bytes one read returns; stream it instead")]
    RangeTooLong { len: u64, max: u64 },
    #[error("blob {cid} has no pin to remove")]
    NotPinned { cid: Cid },
    #[error("blob {cid} already has {pins} pins, the most a blob can have")]
    PinsExhausted { cid: Cid, pins: u32 },
    /// The bytes stored under `cid` do not hash to it: the disk or the file
    /// was damaged. The block is not served.
    #[error("block {cid} is corrupted: its stored bytes do not hash to its CID")]
    Corrupt { cid: Cid },
    /// A recorded blob links to a block that is not stored.
    #[error("block {cid} is missing from the store")]
    Missing { cid: Cid },
    /// A node that hashes to its CID but is not a UnixFS file node as this
    /// store writes them, or does not agree with its parent.
    #[error("block {cid} is not a valid UnixFS file node: {reason}")]
    Malformed { cid: Cid, reason: String },
    /// A root is recorded with another size than its blocks add up to.
    #[error(
        "blob {cid} is recorded with {stored_bytes} bytes, but its content has {computed_bytes}"
    )]
    RootSizeMismatch {
        cid: Cid,
        stored_bytes: u64,
        computed_bytes: u64,
    },
    #[error("key in table {table} is not a CID: {reason}")]
    BadKey { table: &'static str, reason: String },
    #[error("record in table {table} is {got} bytes, expected {expected}")]
    BadRecord {
        table: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("blob store {path} was created with {stored:?}, but {given:?} was requested")]
    ParamsMismatch {
        path: PathBuf,
        stored: ChunkerParams,
        given: ChunkerParams,
    },
    #[error(
        "blob store format version {got} is not supported (this build reads version {supported})"
    )]
    UnsupportedFormat { got: u64, supported: u64 },
    #[error("blob store {path} has no {key} entry in its meta table")]
    MissingMeta { path: PathBuf, key: &'static str },
    #[error("cannot create blob store directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Includes another process holding the file
    /// ([`redb::DatabaseError::DatabaseAlreadyOpen`]).
    #[error("cannot open blob store database {path}")]
    Database {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error(transparent)]
    Storage(#[from] StorageFailure),
    /// An upload could not start its committer thread (the system's
    /// thread or memory limits).
    #[error("cannot start a thread to commit the upload")]
    Thread {
        #[source]
        source: io::Error,
    },
}

impl BlobError {
    /// The `io::Error` a [`std::io::Read`] implementation reports for this
    /// error: damage is `InvalidData`, the rest `Other`. The `BlobError`
    /// stays inside, for `get_ref().downcast_ref()`.
    pub(crate) fn into_io(self) -> io::Error {
        let kind = match self {
            Self::Corrupt { .. } | Self::Missing { .. } | Self::Malformed { .. } => {
                io::ErrorKind::InvalidData
            }
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }
}
