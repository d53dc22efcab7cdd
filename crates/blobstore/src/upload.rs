//! One [`BlobStore::put`] in progress: staging blocks in bounded batches,
//! committing them, and recording the root last; and the in-flight set
//! that keeps garbage collection away from an upload's blocks.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::{Scope, ScopedJoinHandle};

use bytes::Bytes;
use cid::Cid;
use redb::{ReadableTable, WriteTransaction};

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

/// A batch of blocks on its way to the committer.
type Batch = Vec<(Cid, Bytes)>;

/// One put in progress: the blocks staged since the last batch, the
/// committer thread that writes full batches while the caller reads and
/// hashes the next, and the in-flight registrations to release when it
/// ends, whichever way.
///
/// The committer takes one batch at a time through a rendezvous channel, so
/// an upload holds at most two batches: the one being committed and the one
/// being staged. Batches are committed in order, and the final durable
/// commit (with the root) begins only after the committer has finished.
pub(crate) struct Upload<'scope, 's> {
    store: &'s BlobStore,
    staged: Batch,
    staged_bytes: usize,
    registered: Vec<Vec<u8>>,
    /// `None` once the committer is stopped.
    committer: Option<Committer<'scope>>,
}

struct Committer<'scope> {
    batches: SyncSender<Batch>,
    thread: ScopedJoinHandle<'scope, Result<(), BlobError>>,
}

impl<'scope, 's: 'scope> Upload<'scope, 's> {
    /// Starts the committer in `scope`, which outlives the upload; fails if
    /// the system cannot start a thread.
    pub(crate) fn new(
        store: &'s BlobStore,
        scope: &'scope Scope<'scope, '_>,
    ) -> Result<Self, BlobError> {
        let (batches, received) = mpsc::sync_channel::<Batch>(0);
        let thread = std::thread::Builder::new()
            .name("blob-commit".into())
            .spawn_scoped(scope, move || {
                for batch in received {
                    commit_batch(store, &batch)?;
                }
                Ok(())
            })
            .map_err(|source| BlobError::Thread { source })?;
        Ok(Self {
            store,
            staged: Vec::new(),
            staged_bytes: 0,
            registered: Vec::new(),
            committer: Some(Committer { batches, thread }),
        })
    }

    pub(crate) fn stage(&mut self, cid: &Cid, bytes: Bytes) -> Result<(), BlobError> {
        let full = self.staged.len() == BATCH_BLOCKS_MAX
            || self.staged_bytes + bytes.len() > BATCH_SIZE_BYTES_MAX;
        if full && !self.staged.is_empty() {
            self.hand_over_batch()?;
        }
        let key = cid.to_bytes();
        self.store.in_flight_set().register(&key);
        self.registered.push(key);
        self.staged_bytes += bytes.len();
        self.staged.push((*cid, bytes));
        assert!(self.staged_bytes <= BATCH_SIZE_BYTES_MAX);
        Ok(())
    }
}

impl Upload<'_, '_> {
    /// Gives the staged batch to the committer, which waits for it if it
    /// is still committing the previous one. If the committer stopped on
    /// an error, that error is returned.
    fn hand_over_batch(&mut self) -> Result<(), BlobError> {
        let batch = std::mem::take(&mut self.staged);
        self.staged_bytes = 0;
        let handed = match &self.committer {
            Some(committer) => committer.batches.send(batch).is_ok(),
            None => false,
        };
        if handed {
            return Ok(());
        }
        // The receiver is gone only when the committer returned, and it
        // returns early only on an error; the batch it did not take is
        // lost, so an `Ok` here would let the root go on without it.
        self.stop_committer()?;
        unreachable!("the committer stopped before its channel closed, without an error")
    }

    /// Closes the committer's channel and waits for it to commit what it
    /// was given; returns its error, if it stopped on one, and carries on
    /// its panic.
    fn stop_committer(&mut self) -> Result<(), BlobError> {
        match self.join_committer() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// [`Upload::stop_committer`], with the committer's panic returned.
    fn join_committer(&mut self) -> std::thread::Result<Result<(), BlobError>> {
        let Some(Committer { batches, thread }) = self.committer.take() else {
            return Ok(Ok(()));
        };
        drop(batches);
        thread.join()
    }

    pub(crate) fn finish(mut self, root: &Cid, size_bytes: u64) -> Result<BlobInfo, BlobError> {
        self.stop_committer()?;
        let db_write = begin_durable_write(self.store.db())?;
        write_blocks(&db_write, &self.staged)?;
        let record = record_root(&db_write, root, size_bytes)?;
        db_write.commit().context("committing a blob")?;
        Ok(info(root, record))
    }
}

impl Drop for Upload<'_, '_> {
    /// A failed upload's committer may still be committing a batch: the
    /// registrations are released only after it stopped. How it stopped
    /// no longer matters (the upload already failed), but the release
    /// must happen even if it panicked, or garbage collection would keep
    /// the upload's blocks until the process ends.
    fn drop(&mut self) {
        let _ = self.join_committer();
        self.store.in_flight_set().release(&self.registered);
    }
}

/// Writes an intermediate batch, durably. The batch's bytes reach the disk
/// on the committer thread while the next batch streams in, so the final
/// commit waits only for the last batch and the root, not for the whole
/// blob (with batches left to the final commit's fsync, a 250 MiB upload
/// spent about a fifth of its time in that one fsync). A crash before the
/// final commit leaves only blocks that no root references.
fn commit_batch(store: &BlobStore, batch: &[(Cid, Bytes)]) -> Result<(), BlobError> {
    let db_write = begin_durable_write(store.db())?;
    write_blocks(&db_write, batch)?;
    db_write.commit().context("committing a batch")?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Condvar, Mutex, mpsc};
    use std::time::Duration;

    use bytes::Bytes;

    use redb::StorageBackend;
    use redb::backends::InMemoryBackend;

    use crate::{
        BATCH_BLOCKS_MAX, BlobError, BlobStore, ChunkReadError, ChunkSource, ChunkerParams,
    };

    /// Memory whose writes fail while `failing` is set, and wait at a gate
    /// while `gated` is set (saying so once, on `waiting`).
    #[derive(Debug, Default)]
    struct TestDisk {
        memory: InMemoryBackend,
        failing: Arc<AtomicBool>,
        gated: Arc<AtomicBool>,
        waiting: Mutex<Option<mpsc::Sender<()>>>,
        gate: Arc<(Mutex<bool>, Condvar)>,
    }

    impl TestDisk {
        fn open_gate(gate: &(Mutex<bool>, Condvar)) {
            let (open, opened) = gate;
            *open.lock().expect("lock") = true;
            opened.notify_all();
        }
    }

    impl StorageBackend for TestDisk {
        fn len(&self) -> Result<u64, std::io::Error> {
            self.memory.len()
        }

        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
            self.memory.read(offset, out)
        }

        fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
            self.memory.set_len(len)
        }

        fn sync_data(&self) -> Result<(), std::io::Error> {
            self.memory.sync_data()
        }

        fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("the disk refuses writes"));
            }
            if self.gated.load(Ordering::SeqCst) {
                if let Some(waiting) = self.waiting.lock().expect("lock").take() {
                    let _ = waiting.send(());
                }
                let (open, opened) = &*self.gate;
                let mut is_open = open.lock().expect("lock");
                while !*is_open {
                    is_open = opened.wait(is_open).expect("lock");
                }
            }
            self.memory.write(offset, data)
        }
    }

    /// `chunks` chunks of `len` bytes, then a read error; says when it
    /// fails.
    struct FailsAfter {
        chunks: usize,
        failed: mpsc::Sender<()>,
    }

    impl ChunkSource for FailsAfter {
        fn next_chunk(&mut self, len: usize) -> Result<Bytes, ChunkReadError> {
            if self.chunks == 0 {
                let _ = self.failed.send(());
                return Err(ChunkReadError {
                    filled: 0,
                    source: std::io::Error::other("the client went away"),
                });
            }
            self.chunks -= 1;
            Ok(Bytes::from(self.chunks.to_le_bytes().repeat(len / 8)))
        }
    }

    #[test]
    fn a_failed_upload_keeps_its_blocks_in_flight_until_the_committer_is_done() {
        const CHUNK: usize = 16;
        let (waiting_tx, waiting) = mpsc::channel();
        let disk = TestDisk {
            waiting: Mutex::new(Some(waiting_tx)),
            ..TestDisk::default()
        };
        let (gated, gate) = (disk.gated.clone(), disk.gate.clone());
        let params = ChunkerParams::new(CHUNK as u32, 4).expect("params");
        let store = BlobStore::open_on_backend(disk, params).expect("open");
        gated.store(true, Ordering::SeqCst);
        let (failed_tx, failed) = mpsc::channel();
        // One full batch goes to the committer, which blocks writing it;
        // a few chunks later the source fails.
        let source = FailsAfter {
            chunks: BATCH_BLOCKS_MAX + 5,
            failed: failed_tx,
        };
        let (held, put) = std::thread::scope(|scope| {
            let put = scope.spawn(|| store.put_chunks(source, crate::BLOB_SIZE_BYTES_MAX));
            let reached = waiting.recv_timeout(Duration::from_secs(60)).is_ok()
                && failed.recv_timeout(Duration::from_secs(60)).is_ok();
            // The put is now failing while its batch is still being
            // written: its blocks must stay registered all along.
            let held = reached
                && (0..50).all(|_| {
                    std::thread::sleep(Duration::from_millis(2));
                    !store.in_flight_set().lock().is_empty()
                });
            // Open before any assertion, so that no failure leaves the
            // committer waiting for ever.
            TestDisk::open_gate(&gate);
            (held, put.join().expect("put thread"))
        });
        assert!(
            held,
            "registrations were released while a batch was being written"
        );
        assert!(matches!(put, Err(BlobError::Read { .. })), "{put:?}");
        assert!(store.in_flight_set().lock().is_empty());
    }

    #[test]
    fn a_batch_the_committer_cannot_write_fails_the_put() {
        const CHUNK: usize = 16;
        let disk = TestDisk::default();
        let failing = disk.failing.clone();
        let params = ChunkerParams::new(CHUNK as u32, 4).expect("params");
        let store = BlobStore::open_on_backend(disk, params).expect("open");
        // Three batches and a bit: the committer fails on the first, and
        // the put notices when it hands over the second.
        let data: Vec<u8> = (0..(BATCH_BLOCKS_MAX * 3 + 7) * CHUNK)
            .map(|i| (i / CHUNK) as u8 ^ (i % CHUNK) as u8)
            .collect();
        failing.store(true, Ordering::SeqCst);
        let err = store
            .put(&data[..], crate::BLOB_SIZE_BYTES_MAX)
            .expect_err("no batch can be written");
        let BlobError::Storage(failure) = &err else {
            panic!("expected a storage failure, got {err:?}");
        };
        assert_eq!(failure.context(), "committing a batch", "{err}");
        // Nothing of the upload stays registered as in flight.
        assert!(store.in_flight_set().lock().is_empty());
    }
}
