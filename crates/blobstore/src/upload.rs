//! One [`BlobStore::put`] in progress: staging blocks in bounded batches,
//! committing them, and recording the root last; and the in-flight set
//! that keeps garbage collection away from an upload's blocks.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use cid::Cid;
use redb::{Durability, ReadableTable, WriteTransaction};

use crate::chunks;
use crate::dag::{CODEC_DAG_PB, CODEC_RAW};
use crate::error::{BlobError, Context};
use crate::schema::{self, BLOCKS, CHUNKS, NODES, ROOTS, RootRecord};
use crate::store::{begin_durable_write, info, read_root};
use crate::{BATCH_BLOCKS_MAX, BATCH_SIZE_BYTES_MAX, BlobInfo, BlobStore};

/// CIDs (binary form) of the blocks staged by uploads in progress, each
/// with the number of stagings not yet released. An upload registers a
/// block before the write that stores it (or finds it stored) begins, and
/// releases it after its root is committed or the upload failed. Garbage
/// collection reads the set while it holds redb's writer, so every block
/// committed without a root yet, or relied on because it was already
/// stored, is in it.
#[derive(Default)]
pub(crate) struct InFlight(Mutex<BTreeMap<Vec<u8>, u64>>);

impl InFlight {
    /// Every operation leaves the map whole, so a poisoned lock still
    /// holds a consistent map.
    pub(crate) fn lock(&self) -> MutexGuard<'_, BTreeMap<Vec<u8>, u64>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn register(&self, key: &[u8]) {
        *self.lock().entry(key.to_vec()).or_insert(0) += 1;
    }

    /// # Panics
    ///
    /// If a key was not registered: releases pair with registrations.
    fn release(&self, keys: &[Vec<u8>]) {
        let mut map = self.lock();
        for key in keys {
            let count = map.get_mut(key).expect("a released block was registered");
            assert!(*count > 0);
            *count -= 1;
            if *count == 0 {
                map.remove(key);
            }
        }
    }
}

/// One put in progress: the blocks staged since the last commit, and the
/// in-flight registrations to release when it ends, whichever way.
pub(crate) struct Upload<'s> {
    store: &'s BlobStore,
    staged: Vec<(Cid, Bytes)>,
    staged_bytes: usize,
    registered: Vec<Vec<u8>>,
}

impl<'s> Upload<'s> {
    pub(crate) fn new(store: &'s BlobStore) -> Self {
        Self {
            store,
            staged: Vec::new(),
            staged_bytes: 0,
            registered: Vec::new(),
        }
    }

    pub(crate) fn stage(&mut self, cid: &Cid, bytes: Bytes) -> Result<(), BlobError> {
        let full = self.staged.len() == BATCH_BLOCKS_MAX
            || self.staged_bytes + bytes.len() > BATCH_SIZE_BYTES_MAX;
        if full && !self.staged.is_empty() {
            self.commit_batch()?;
        }
        let key = cid.to_bytes();
        self.store.in_flight_set().register(&key);
        self.registered.push(key);
        self.staged_bytes += bytes.len();
        self.staged.push((*cid, bytes));
        assert!(self.staged_bytes <= BATCH_SIZE_BYTES_MAX);
        Ok(())
    }

    /// Intermediate batches are not made durable one by one: the final,
    /// durable commit makes every earlier commit durable too, and a crash
    /// before it loses only blocks that no root references.
    fn commit_batch(&mut self) -> Result<(), BlobError> {
        let mut db_write = self.store.db().begin_write().context("beginning a batch")?;
        db_write
            .set_durability(Durability::None)
            .context("deferring a batch's durability")?;
        write_blocks(&db_write, &self.staged)?;
        db_write.commit().context("committing a batch")?;
        self.staged.clear();
        self.staged_bytes = 0;
        Ok(())
    }

    pub(crate) fn finish(self, root: &Cid, size_bytes: u64) -> Result<BlobInfo, BlobError> {
        let db_write = begin_durable_write(self.store.db())?;
        write_blocks(&db_write, &self.staged)?;
        let record = record_root(&db_write, root, size_bytes)?;
        db_write.commit().context("committing a blob")?;
        Ok(info(root, record))
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        self.store.in_flight_set().release(&self.registered);
    }
}

/// Stores each block under its CID, in the table of its codec, unless the
/// same bytes are already there.
///
/// # Panics
///
/// If a block is neither raw nor dag-pb: the builder makes only those.
fn write_blocks(db_write: &WriteTransaction, blocks: &[(Cid, Bytes)]) -> Result<(), BlobError> {
    const CONTEXT: &str = "writing blocks";
    let mut chunks = db_write.open_table(CHUNKS).context(CONTEXT)?;
    let mut nodes = db_write.open_table(NODES).context(CONTEXT)?;
    let mut index = db_write.open_table(BLOCKS).context(CONTEXT)?;
    for (cid, bytes) in blocks {
        let key = cid.to_bytes();
        let raw = match cid.codec() {
            CODEC_RAW => true,
            CODEC_DAG_PB => false,
            codec => panic!("the builder made a block of codec {codec:#x}"),
        };
        // Equal CIDs mean equal bytes, so stored bytes that differ are a
        // damaged copy: overwriting them repairs it.
        let stored_intact = if raw {
            chunks::read(&chunks, &key)
                .context(CONTEXT)?
                .is_some_and(|stored| stored == *bytes)
        } else {
            nodes
                .get(key.as_slice())
                .context(CONTEXT)?
                .is_some_and(|stored| stored.value() == &bytes[..])
        };
        if !stored_intact {
            if raw {
                chunks::write(&mut chunks, &key, bytes).context(CONTEXT)?;
            } else {
                nodes.insert(key.as_slice(), &bytes[..]).context(CONTEXT)?;
            }
            index
                .insert(key.as_slice(), schema::encode_block_len(bytes.len()))
                .context(CONTEXT)?;
        }
    }
    Ok(())
}

/// Records the root with one more pin, or a new root with one pin.
fn record_root(
    db_write: &WriteTransaction,
    cid: &Cid,
    size_bytes: u64,
) -> Result<RootRecord, BlobError> {
    let mut roots = db_write.open_table(ROOTS).context("opening roots")?;
    let record = match read_root(&roots, cid)? {
        None => RootRecord {
            size_bytes,
            pins: 1,
        },
        Some(stored) => {
            // One CID names one byte sequence, so a different size means
            // the record is damaged.
            if stored.size_bytes != size_bytes {
                return Err(BlobError::RootSizeMismatch {
                    cid: *cid,
                    stored_bytes: stored.size_bytes,
                    computed_bytes: size_bytes,
                });
            }
            RootRecord {
                size_bytes,
                pins: stored.pins.checked_add(1).ok_or(BlobError::PinsExhausted {
                    cid: *cid,
                    pins: stored.pins,
                })?,
            }
        }
    };
    roots
        .insert(cid.to_bytes().as_slice(), &record.encode()[..])
        .context("recording a root")?;
    Ok(record)
}
