//! [`BlobStore`]: open, put, stat, pins, and the entry points for reads.

use std::fmt;
use std::io::Read;
use std::path::Path;

use cid::Cid;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction,
};

use crate::builder::{self, ChunkSource, ReadChunks};
use crate::error::{BlobError, Context, StorageFailure};
use crate::reader::BlobReader;
use crate::schema::{
    self, BLOCKS, CHUNKS, META, META_FORMAT_VERSION, META_PARAMS, NODES, ROOTS, RootRecord,
};
use crate::upload::{InFlight, Upload};
use crate::{
    BLOB_SIZE_BYTES_MAX, BLOBSTORE_FILE_NAME, CACHE_SIZE_BYTES_MAX, ChunkerParams,
    PROFILE_UNIXFS_V1_2025, READ_RANGE_BYTES_MAX,
};

/// A recorded blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    pub cid: Cid,
    pub size_bytes: u64,
    /// How many pins hold the blob: one per [`BlobStore::put`] and
    /// [`BlobStore::pin`], less one per [`BlobStore::unpin`].
    pub pins: u32,
}

/// How many entries each table holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreCounts {
    pub roots: u64,
    /// Distinct chunks (raw leaves), shared ones counted once.
    pub chunks: u64,
    /// Distinct dag-pb nodes.
    pub nodes: u64,
}

/// Content-addressed blobs in one redb file. See the crate documentation
/// for the invariants.
///
/// All methods take `&self`: reads run on their own redb snapshot, and
/// writes are serialised by redb's single writer. Uploads do not hold the
/// writer while they wait for their input: they stage blocks in memory and
/// commit them in batches.
pub struct BlobStore {
    db: Database,
    params: ChunkerParams,
    /// Blocks staged by uploads in progress, which garbage collection must
    /// keep although no root reaches them yet.
    in_flight: InFlight,
}

impl fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStore")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl BlobStore {
    /// Opens or creates `<dir>/blobs.redb` with the `unixfs-v1-2025`
    /// profile, creating `dir` if needed.
    pub fn open(dir: &Path) -> Result<Self, BlobError> {
        Self::open_with_params(dir, PROFILE_UNIXFS_V1_2025)
    }

    /// Opens or creates `<dir>/blobs.redb`. A new store records `params`;
    /// an existing one must have been created with the same params.
    pub fn open_with_params(dir: &Path, params: ChunkerParams) -> Result<Self, BlobError> {
        std::fs::create_dir_all(dir).map_err(|source| BlobError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(BLOBSTORE_FILE_NAME);
        let db = redb::Builder::new()
            .set_cache_size(CACHE_SIZE_BYTES_MAX)
            .create(&path)
            .map_err(|source| BlobError::Database {
                path: path.clone(),
                source,
            })?;
        load_or_initialize(&db, &path, params)?;
        Ok(Self {
            db,
            params,
            in_flight: InFlight::default(),
        })
    }

    /// A store on any redb backend, for tests that make storage fail.
    #[cfg(test)]
    pub(crate) fn open_on_backend(
        backend: impl redb::StorageBackend,
        params: ChunkerParams,
    ) -> Result<Self, BlobError> {
        let path = Path::new("<test backend>");
        let db = redb::Builder::new()
            .create_with_backend(backend)
            .map_err(|source| BlobError::Database {
                path: path.to_path_buf(),
                source,
            })?;
        load_or_initialize(&db, path, params)?;
        Ok(Self {
            db,
            params,
            in_flight: InFlight::default(),
        })
    }

    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Stores the bytes of `reader` as a blob and adds one pin to it.
    ///
    /// Chunks and nodes already stored are not written again (a stored
    /// copy whose bytes differ, i.e. a damaged one, is overwritten with the
    /// good bytes). Blocks are committed in batches of at most
    /// [`BATCH_SIZE_BYTES_MAX`] bytes; the root is recorded in the last,
    /// durable commit. If the input goes over `size_limit_bytes`, or
    /// `reader` fails, no root is recorded and the blocks already committed
    /// are left for [`BlobStore::gc`].
    pub fn put(&self, reader: impl Read, size_limit_bytes: u64) -> Result<BlobInfo, BlobError> {
        self.put_chunks(ReadChunks(reader), size_limit_bytes)
    }

    /// [`BlobStore::put`] from a [`ChunkSource`], whose chunks are stored
    /// without being copied.
    pub fn put_chunks(
        &self,
        source: impl ChunkSource,
        size_limit_bytes: u64,
    ) -> Result<BlobInfo, BlobError> {
        if size_limit_bytes > BLOB_SIZE_BYTES_MAX {
            return Err(BlobError::LimitAboveMax {
                limit_bytes: size_limit_bytes,
                max_bytes: BLOB_SIZE_BYTES_MAX,
            });
        }
        // The upload's committer writes each full batch while this thread
        // reads and hashes the next.
        std::thread::scope(|scope| {
            let mut upload = Upload::new(self, scope)?;
            let (root, size_bytes) =
                builder::build(source, self.params, size_limit_bytes, &mut |cid, bytes| {
                    upload.stage(cid, bytes)
                })?;
            upload.finish(&root.cid, size_bytes)
        })
    }

    /// The recorded blob named `cid`, or `None`.
    pub fn stat(&self, cid: &Cid) -> Result<Option<BlobInfo>, BlobError> {
        let snapshot = self.db.begin_read().context("beginning a read")?;
        let roots = snapshot.open_table(ROOTS).context("opening roots")?;
        let record = read_root(&roots, cid)?;
        Ok(record.map(|record| info(cid, record)))
    }

    /// Adds a pin to a recorded blob.
    pub fn pin(&self, cid: &Cid) -> Result<BlobInfo, BlobError> {
        self.update_pins(cid, |record| {
            record.pins.checked_add(1).ok_or(BlobError::PinsExhausted {
                cid: *cid,
                pins: record.pins,
            })
        })
    }

    /// Removes a pin. A blob with no pin left stays readable until a
    /// [`BlobStore::gc`] whose `keep` does not keep it.
    pub fn unpin(&self, cid: &Cid) -> Result<BlobInfo, BlobError> {
        self.update_pins(cid, |record| {
            record
                .pins
                .checked_sub(1)
                .ok_or(BlobError::NotPinned { cid: *cid })
        })
    }

    fn update_pins(
        &self,
        cid: &Cid,
        change: impl FnOnce(RootRecord) -> Result<u32, BlobError>,
    ) -> Result<BlobInfo, BlobError> {
        let db_write = begin_durable_write(&self.db)?;
        let record = {
            let mut roots = db_write.open_table(ROOTS).context("opening roots")?;
            let record = read_root(&roots, cid)?.ok_or(BlobError::NotFound { cid: *cid })?;
            let record = RootRecord {
                size_bytes: record.size_bytes,
                pins: change(record)?,
            };
            roots
                .insert(cid.to_bytes().as_slice(), &record.encode()[..])
                .context("writing a pin count")?;
            record
        };
        db_write.commit().context("committing a pin count")?;
        Ok(info(cid, record))
    }

    /// Recorded roots, and stored chunks and nodes (a chunk counts once,
    /// however many pieces hold it).
    pub fn counts(&self) -> Result<StoreCounts, BlobError> {
        let snapshot = self.db.begin_read().context("beginning a read")?;
        let len = |table| -> Result<u64, StorageFailure> {
            let table = snapshot.open_table(table).context("opening a table")?;
            table.len().context("counting a table")
        };
        // `BLOCKS` lists every chunk and node once; `CHUNKS` holds pieces.
        let nodes = len(NODES)?;
        Ok(StoreCounts {
            roots: len(ROOTS)?,
            chunks: snapshot
                .open_table(BLOCKS)
                .context("opening a table")?
                .len()
                .context("counting a table")?
                .saturating_sub(nodes),
            nodes,
        })
    }

    /// A reader of the whole blob, on a snapshot taken now: a later `gc`
    /// does not disturb it.
    pub fn reader(&self, cid: &Cid) -> Result<BlobReader, BlobError> {
        self.open_reader(cid, |size_bytes| Ok((0, size_bytes)))
    }

    /// A reader of `len` bytes from `offset`, which must lie inside the
    /// blob. Only the nodes and chunks that hold the range are read.
    pub fn reader_range(&self, cid: &Cid, offset: u64, len: u64) -> Result<BlobReader, BlobError> {
        self.open_reader(cid, |size_bytes| {
            let end = offset.checked_add(len);
            if end.is_none_or(|end| end > size_bytes) {
                return Err(BlobError::RangeOutOfBounds {
                    offset,
                    len,
                    size_bytes,
                });
            }
            Ok((offset, len))
        })
    }

    /// `len` bytes from `offset`, at most [`READ_RANGE_BYTES_MAX`]. Every
    /// chunk read is verified against its CID: a range that touches a
    /// damaged chunk fails with [`BlobError::Corrupt`], other ranges of
    /// the same blob still read.
    ///
    /// # Panics
    ///
    /// If the reader serves another number of bytes than the range holds
    /// (a bug in this crate).
    pub fn read_range(&self, cid: &Cid, offset: u64, len: u64) -> Result<Vec<u8>, BlobError> {
        if len > READ_RANGE_BYTES_MAX {
            return Err(BlobError::RangeTooLong {
                len,
                max: READ_RANGE_BYTES_MAX,
            });
        }
        let mut reader = self.reader_range(cid, offset, len)?;
        // `len` fits usize: READ_RANGE_BYTES_MAX does (checked at compile
        // time).
        let mut bytes = Vec::with_capacity(len as usize);
        while let Some(piece) = reader.next_chunk()? {
            bytes.extend_from_slice(&piece);
        }
        assert_eq!(bytes.len() as u64, len, "the reader serves the whole range");
        Ok(bytes)
    }

    fn open_reader(
        &self,
        cid: &Cid,
        range: impl FnOnce(u64) -> Result<(u64, u64), BlobError>,
    ) -> Result<BlobReader, BlobError> {
        let snapshot = self.db.begin_read().context("beginning a read")?;
        let roots = snapshot.open_table(ROOTS).context("opening roots")?;
        let record = read_root(&roots, cid)?.ok_or(BlobError::NotFound { cid: *cid })?;
        let (offset, len) = range(record.size_bytes)?;
        let chunks = snapshot.open_table(CHUNKS).context("opening chunks")?;
        let nodes = snapshot.open_table(NODES).context("opening nodes")?;
        Ok(BlobReader::new(
            chunks,
            nodes,
            *cid,
            record.size_bytes,
            offset,
            len,
        ))
    }

    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    pub(crate) fn in_flight_set(&self) -> &InFlight {
        &self.in_flight
    }
}

pub(crate) fn info(cid: &Cid, record: RootRecord) -> BlobInfo {
    BlobInfo {
        cid: *cid,
        size_bytes: record.size_bytes,
        pins: record.pins,
    }
}

pub(crate) fn read_root(
    roots: &impl ReadableTable<&'static [u8], &'static [u8]>,
    cid: &Cid,
) -> Result<Option<RootRecord>, BlobError> {
    let value = roots
        .get(cid.to_bytes().as_slice())
        .context("reading a root")?;
    value
        .map(|guard| RootRecord::decode(guard.value()))
        .transpose()
}

/// A write that is durable before `commit` returns, recording redb's
/// allocator state ("quick repair") so that reopening after a crash does
/// not walk the whole file.
pub(crate) fn begin_durable_write(db: &Database) -> Result<WriteTransaction, StorageFailure> {
    let mut db_write = db.begin_write().context("beginning a write")?;
    db_write
        .set_durability(Durability::Immediate)
        .context("requesting a durable write")?;
    db_write.set_quick_repair(true);
    Ok(db_write)
}

/// Creates the tables and the identity of a new store, or checks the
/// identity of an existing one.
fn load_or_initialize(db: &Database, path: &Path, params: ChunkerParams) -> Result<(), BlobError> {
    let db_write = begin_durable_write(db)?;
    let (version, stored_params, meta_empty) = {
        let meta = db_write.open_table(META).context("opening meta")?;
        let version = meta
            .get(META_FORMAT_VERSION)
            .context("reading meta")?
            .map(|guard| schema::decode_u64("meta.format_version", guard.value()))
            .transpose()?;
        let stored_params = meta
            .get(META_PARAMS)
            .context("reading meta")?
            .map(|guard| schema::decode_params(guard.value()))
            .transpose()?;
        (
            version,
            stored_params,
            meta.is_empty().context("reading meta")?,
        )
    };
    let missing = |key| BlobError::MissingMeta {
        path: path.to_path_buf(),
        key,
    };
    let Some(version) = version else {
        // The identity is written in one transaction, so a half-written
        // meta table is damage, not an interrupted creation.
        if !meta_empty {
            return Err(missing(META_FORMAT_VERSION));
        }
        initialize(&db_write, params)?;
        db_write.commit().context("creating the blob store")?;
        return Ok(());
    };
    if version != schema::FORMAT_VERSION {
        return Err(BlobError::UnsupportedFormat {
            got: version,
            supported: schema::FORMAT_VERSION,
        });
    }
    let stored = stored_params.ok_or_else(|| missing(META_PARAMS))?;
    if stored != params {
        return Err(BlobError::ParamsMismatch {
            path: path.to_path_buf(),
            stored,
            given: params,
        });
    }
    db_write.abort().context("ending the open transaction")?;
    Ok(())
}

fn initialize(db_write: &WriteTransaction, params: ChunkerParams) -> Result<(), StorageFailure> {
    const CONTEXT: &str = "creating the blob store";
    // Opening a table in a write transaction creates it, so that readers
    // never meet a missing table.
    drop(db_write.open_table(CHUNKS).context(CONTEXT)?);
    drop(db_write.open_table(NODES).context(CONTEXT)?);
    drop(db_write.open_table(BLOCKS).context(CONTEXT)?);
    drop(db_write.open_table(ROOTS).context(CONTEXT)?);
    let mut meta = db_write.open_table(META).context(CONTEXT)?;
    let version = schema::encode_u64(schema::FORMAT_VERSION);
    let params = schema::encode_params(&params);
    meta.insert(META_FORMAT_VERSION, &version[..])
        .context(CONTEXT)?;
    meta.insert(META_PARAMS, &params[..]).context(CONTEXT)?;
    Ok(())
}
