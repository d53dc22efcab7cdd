//! `BlobStore` behaviour: round trips, deduplication, limits, failed
//! uploads, corruption, pins, garbage collection and reopening.
//!
//! Small chunk params (16-byte chunks, 4 links per node) make multi-level
//! DAGs out of a few hundred bytes, so every path is exercised quickly.

mod common;

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::path::Path;
use std::sync::mpsc;

use common::{FailAfter, params, pattern};
use govchain_blobstore::{
    BATCH_BLOCKS_MAX, BLOB_SIZE_BYTES_MAX, BLOBSTORE_FILE_NAME, BlobError, BlobStore,
    ChunkerParams, Cid, READ_RANGE_BYTES_MAX, cid_of_reader,
};
use proptest::prelude::*;

const CHUNK: usize = 16;

fn small() -> ChunkerParams {
    params(CHUNK as u32, 4)
}

fn open(dir: &Path) -> BlobStore {
    BlobStore::open_with_params(dir, small()).expect("store opens")
}

/// The raw CID of one chunk: a blob of at most one chunk is its own leaf.
fn chunk_cid(bytes: &[u8]) -> Cid {
    assert!(bytes.len() <= CHUNK);
    cid_of_reader(bytes, small()).expect("slice reads")
}

fn distinct_chunks(blobs: &[&[u8]]) -> u64 {
    let set: BTreeSet<&[u8]> = blobs.iter().flat_map(|blob| blob.chunks(CHUNK)).collect();
    set.len() as u64
}

fn read_all(store: &BlobStore, cid: &Cid) -> Vec<u8> {
    let mut bytes = Vec::new();
    store
        .reader(cid)
        .expect("reader opens")
        .read_to_end(&mut bytes)
        .expect("blob reads");
    bytes
}

fn assert_empty(store: &BlobStore) {
    let counts = store.counts().expect("counts");
    assert_eq!((counts.roots, counts.chunks, counts.nodes), (0, 0, 0));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any range of any blob reads back exactly, and the CID is the one
    /// `cid_of_reader` computes.
    #[test]
    fn ranges_round_trip(
        size in 0_usize..1200,
        offset_per_mille in 0_u64..=1000,
        len_per_mille in 0_u64..=1000,
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let data = pattern(size);
        let info = store.put(&data[..], 4096).expect("put succeeds");
        prop_assert_eq!(info.cid, cid_of_reader(&data[..], small()).expect("reads"));
        prop_assert_eq!(info.size_bytes, size as u64);
        prop_assert_eq!(store.stat(&info.cid).expect("stat"), Some(info));

        let offset = size as u64 * offset_per_mille / 1000;
        let len = (size as u64 - offset) * len_per_mille / 1000;
        let range = store.read_range(&info.cid, offset, len).expect("range reads");
        prop_assert_eq!(&range[..], &data[offset as usize..(offset + len) as usize]);
        prop_assert_eq!(read_all(&store, &info.cid), data);
    }
}

#[test]
fn ranges_at_chunk_and_node_boundaries() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    // 65 chunks: four full level-1 nodes of 4 chunks each make a full
    // level-2 node, and so on; the last chunk has one byte.
    let data = pattern(64 * CHUNK + 1);
    let cid = store.put(&data[..], 4096).expect("put succeeds").cid;
    let size = data.len() as u64;
    let chunk = CHUNK as u64;
    let mut edges = BTreeSet::new();
    for boundary in [0, chunk, 4 * chunk, 16 * chunk, 64 * chunk, size] {
        for edge in [boundary.saturating_sub(1), boundary, boundary + 1] {
            edges.insert(edge.min(size));
        }
    }
    for &start in &edges {
        for &end in edges.iter().filter(|&&end| end >= start) {
            let range = store
                .read_range(&cid, start, end - start)
                .expect("range reads");
            assert_eq!(range, &data[start as usize..end as usize], "{start}..{end}");
        }
    }
}

#[test]
fn ranges_outside_the_blob_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    let cid = store.put(&pattern(100)[..], 100).expect("put").cid;
    assert!(matches!(
        store.read_range(&cid, 90, 11),
        Err(BlobError::RangeOutOfBounds {
            offset: 90,
            len: 11,
            size_bytes: 100
        })
    ));
    assert!(matches!(
        store.read_range(&cid, u64::MAX, 2),
        Err(BlobError::RangeOutOfBounds { .. })
    ));
    assert!(matches!(
        store.read_range(&cid, 0, READ_RANGE_BYTES_MAX + 1),
        Err(BlobError::RangeTooLong { .. })
    ));
    assert_eq!(store.read_range(&cid, 100, 0).expect("empty range"), b"");
    let unknown = chunk_cid(b"never stored");
    assert!(matches!(
        store.read_range(&unknown, 0, 0),
        Err(BlobError::NotFound { cid }) if cid == unknown
    ));
    assert_eq!(store.stat(&unknown).expect("stat"), None);
}

#[test]
fn shared_chunks_are_stored_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    let first = pattern(40 * CHUNK);
    let first_info = store.put(&first[..], 4096).expect("put");
    let after_first = store.counts().expect("counts");
    assert_eq!(after_first.chunks, distinct_chunks(&[&first]));

    // The same bytes again: nothing new is stored, the blob gets a pin.
    let again = store.put(&first[..], 4096).expect("put");
    assert_eq!(again.cid, first_info.cid);
    assert_eq!(again.pins, 2);
    assert_eq!(store.counts().expect("counts"), after_first);

    // A second blob sharing its first 24 chunks with the first.
    let mut second = first[..24 * CHUNK].to_vec();
    second.extend((0..20 * CHUNK).map(|i| (i * 7 % 256) as u8));
    store.put(&second[..], 4096).expect("put");
    let counts = store.counts().expect("counts");
    let expected = distinct_chunks(&[&first, &second]);
    assert_eq!(counts.chunks, expected);
    assert!(expected < distinct_chunks(&[&first]) + distinct_chunks(&[&second]));
    assert_eq!(counts.roots, 2);
}

#[test]
fn over_the_limit_records_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    let data = pattern(1000);
    let err = store.put(&data[..], 999).expect_err("over the limit");
    assert!(matches!(
        err,
        BlobError::TooLarge {
            read_bytes: 1000,
            limit_bytes: 999
        }
    ));
    assert!(err.to_string().contains("999"), "{err}");
    let cid = cid_of_reader(&data[..], small()).expect("reads");
    assert_eq!(store.stat(&cid).expect("stat"), None);
    assert_eq!(store.counts().expect("counts").roots, 0);
    assert!(matches!(
        store.put(&data[..], BLOB_SIZE_BYTES_MAX + 1),
        Err(BlobError::LimitAboveMax { .. })
    ));
    // Exactly at the limit is fine.
    assert_eq!(store.put(&data[..], 1000).expect("put").size_bytes, 1000);
}

/// Bytes enough for several committed batches before the failure.
fn several_batches() -> Vec<u8> {
    (0..(BATCH_BLOCKS_MAX * 2 + 100) * CHUNK)
        .map(|i| (i % 65_521 % 256) as u8 ^ (i / 65_521) as u8)
        .collect()
}

#[test]
fn a_large_upload_over_the_limit_leaves_only_garbage() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    let data = several_batches();
    let limit = data.len() as u64 - 1;
    assert!(matches!(
        store.put(&data[..], limit),
        Err(BlobError::TooLarge { .. })
    ));
    let counts = store.counts().expect("counts");
    assert_eq!(counts.roots, 0);
    assert!(counts.chunks > 0, "earlier batches were committed");
    let report = store.gc(|_| false).expect("gc");
    assert_eq!(report.roots_removed, 0);
    assert_eq!(report.chunks_removed, counts.chunks);
    assert_empty(&store);
}

#[test]
fn a_reader_failing_mid_stream_leaves_nothing_referenced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    let data = several_batches();
    let err = store
        .put(FailAfter { data: &data }, BLOB_SIZE_BYTES_MAX)
        .expect_err("the reader fails");
    assert!(
        matches!(err, BlobError::Read { read_bytes, .. } if read_bytes == data.len() as u64),
        "{err:?}"
    );
    assert_eq!(store.counts().expect("counts").roots, 0);
    store.gc(|_| false).expect("gc");
    assert_empty(&store);
    // The same bytes upload fine afterwards.
    let info = store.put(&data[..], BLOB_SIZE_BYTES_MAX).expect("put");
    assert_eq!(read_all(&store, &info.cid), data);
}

/// Overwrites the stored bytes of `cid` in `table` ("nodes"), or of its
/// first piece in "chunk_pieces", with raw redb, as disk damage would. The
/// layout is the one `src/schema.rs` documents: raw chunks are stored in
/// pieces keyed `cid ‖ piece index`.
fn damage(dir: &Path, table: &str, cid: &Cid, bytes: &[u8]) {
    let definition: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new(table);
    let db = redb::Database::open(dir.join(BLOBSTORE_FILE_NAME)).expect("raw open");
    let db_write = db.begin_write().expect("raw write");
    let mut key = cid.to_bytes();
    if table == "chunk_pieces" {
        key.push(0);
    }
    {
        let mut blocks = db_write.open_table(definition).expect("table exists");
        let previous = blocks.insert(key.as_slice(), bytes).expect("raw insert");
        assert!(previous.is_some(), "{cid} was stored in {table}");
    }
    db_write.commit().expect("raw commit");
}

#[test]
fn a_corrupted_chunk_is_detected_and_never_served() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = pattern(200);
    let cid = open(dir.path()).put(&data[..], 200).expect("put").cid;
    // Chunk 3 holds bytes 48..64; flip one bit of it on disk.
    let chunk = &data[48..64];
    let damaged_cid = chunk_cid(chunk);
    let mut damaged = chunk.to_vec();
    damaged[5] ^= 0x10;
    damage(dir.path(), "chunk_pieces", &damaged_cid, &damaged);

    let store = open(dir.path());
    for (offset, len) in [(0, 200), (48, 16), (63, 1), (40, 10), (50, 1)] {
        let err = store
            .read_range(&cid, offset, len)
            .expect_err("the range touches the damaged chunk");
        assert!(
            matches!(err, BlobError::Corrupt { cid } if cid == damaged_cid),
            "{offset}+{len}: {err:?}"
        );
    }
    for (offset, len) in [(0, 48), (64, 136), (47, 1), (64, 1), (100, 50)] {
        let range = store
            .read_range(&cid, offset, len)
            .expect("undamaged range");
        assert_eq!(range, &data[offset as usize..(offset + len) as usize]);
    }
    // A streaming download stops at the damage with InvalidData.
    let mut served = Vec::new();
    let err = store
        .reader(&cid)
        .expect("reader opens")
        .read_to_end(&mut served)
        .expect_err("the stream reaches the damage");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(matches!(
        err.get_ref()
            .and_then(|inner| inner.downcast_ref::<BlobError>()),
        Some(BlobError::Corrupt { .. })
    ));
    assert_eq!(served, &data[..48], "only verified chunks were served");

    // Uploading the same bytes again repairs the damaged copy.
    store.put(&data[..], 200).expect("put");
    assert_eq!(store.read_range(&cid, 0, 200).expect("repaired"), data);
}

#[test]
fn a_corrupted_node_stops_reads_and_gc() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = pattern(200);
    let cid = {
        let store = open(dir.path());
        let cid = store.put(&data[..], 200).expect("put").cid;
        store.put(&pattern(30)[..], 30).expect("put");
        store
            .unpin(&store.put(&pattern(31)[..], 31).expect("put").cid)
            .expect("unpin");
        cid
    };
    damage(dir.path(), "nodes", &cid, b"\x12\x00");
    let store = open(dir.path());
    assert!(matches!(
        store.read_range(&cid, 150, 10),
        Err(BlobError::Corrupt { cid: damaged }) if damaged == cid
    ));
    let before = store.counts().expect("counts");
    assert!(matches!(
        store.gc(|_| false),
        Err(BlobError::Corrupt { cid: damaged }) if damaged == cid
    ));
    assert_eq!(
        store.counts().expect("counts"),
        before,
        "a failed gc removes nothing"
    );
}

#[test]
fn pins_count_up_and_down() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    let cid = store.put(&pattern(50)[..], 50).expect("put").cid;
    assert_eq!(store.pin(&cid).expect("pin").pins, 2);
    assert_eq!(store.unpin(&cid).expect("unpin").pins, 1);
    assert_eq!(store.unpin(&cid).expect("unpin").pins, 0);
    assert!(matches!(
        store.unpin(&cid),
        Err(BlobError::NotPinned { cid: unpinned }) if unpinned == cid
    ));
    // Unpinned but not collected yet: still readable.
    assert_eq!(store.read_range(&cid, 0, 50).expect("reads"), pattern(50));
    let unknown = chunk_cid(b"?");
    assert!(matches!(
        store.pin(&unknown),
        Err(BlobError::NotFound { .. })
    ));
}

#[test]
fn gc_removes_unreferenced_blobs_and_keeps_shared_chunks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    let shared = pattern(20 * CHUNK);
    let mut doomed = shared.clone();
    doomed.extend((0..10 * CHUNK).map(|i| (i * 13 % 256) as u8));
    let mut survivor = shared.clone();
    survivor.extend((0..10 * CHUNK).map(|i| (i * 17 % 256) as u8 ^ 0x5a));
    let kept_by_callback = pattern(3 * CHUNK + 5);

    let doomed_cid = store.put(&doomed[..], 4096).expect("put").cid;
    let survivor_cid = store.put(&survivor[..], 4096).expect("put").cid;
    let callback_cid = store.put(&kept_by_callback[..], 4096).expect("put").cid;
    store.unpin(&doomed_cid).expect("unpin");
    store.unpin(&callback_cid).expect("unpin");
    let before = store.counts().expect("counts");

    let report = store.gc(|cid| *cid == callback_cid).expect("gc");
    assert_eq!(report.roots_removed, 1);
    assert_eq!(report.roots_kept, 2);
    let after = store.counts().expect("counts");
    assert_eq!(after.roots, 2);
    assert_eq!(
        after.chunks,
        distinct_chunks(&[&survivor, &kept_by_callback]),
        "exactly the chunks of the kept blobs remain"
    );
    assert_eq!(report.chunks_removed, before.chunks - after.chunks);
    assert_eq!(report.nodes_removed, before.nodes - after.nodes);
    assert!(report.nodes_removed > 0);
    assert!(report.bytes_removed >= report.chunks_removed);

    assert_eq!(store.stat(&doomed_cid).expect("stat"), None);
    assert_eq!(read_all(&store, &survivor_cid), survivor);
    assert_eq!(read_all(&store, &callback_cid), kept_by_callback);
    // A second collection finds nothing left to remove.
    let again = store.gc(|cid| *cid == callback_cid).expect("gc");
    assert_eq!(
        (
            again.roots_removed,
            again.chunks_removed,
            again.nodes_removed
        ),
        (0, 0, 0)
    );
    store.gc(|_| false).expect("gc");
    assert_eq!(store.stat(&callback_cid).expect("stat"), None);
    assert_eq!(read_all(&store, &survivor_cid), survivor);
}

/// A reader that serves its data in two halves and waits, between them,
/// until the test lets it go on.
struct Paused<'a> {
    data: &'a [u8],
    pause_at: usize,
    reached: Option<mpsc::Sender<()>>,
    resume: mpsc::Receiver<()>,
}

impl Read for Paused<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let (0, Some(reached)) = (self.pause_at, &self.reached) {
            reached.send(()).expect("test waits");
            self.resume.recv().expect("test resumes");
            self.reached = None;
        }
        let limit = if self.reached.is_some() {
            self.pause_at
        } else {
            self.data.len()
        };
        let count = buf.len().min(limit);
        buf[..count].copy_from_slice(&self.data[..count]);
        self.data = &self.data[count..];
        if self.reached.is_some() {
            self.pause_at -= count;
        }
        Ok(count)
    }
}

#[test]
fn gc_during_an_upload_keeps_its_blocks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    let data = several_batches();
    // An unpinned blob sharing the upload's first chunks: its root goes,
    // but the upload already relies on those chunks.
    let prefix_cid = store.put(&data[..64 * CHUNK], 4096).expect("put").cid;
    store.unpin(&prefix_cid).expect("unpin");

    let (reached_tx, reached_rx) = mpsc::channel();
    let (resume_tx, resume_rx) = mpsc::channel();
    let reader = Paused {
        data: &data,
        // Past the second batch's hand-over: the committer takes a batch
        // only after committing the one before, so the first is committed
        // (without a root) when garbage collection runs.
        pause_at: (2 * BATCH_BLOCKS_MAX + 10) * CHUNK,
        reached: Some(reached_tx),
        resume: resume_rx,
    };
    let (report, put) = std::thread::scope(|scope| {
        let upload = scope.spawn(|| store.put(reader, BLOB_SIZE_BYTES_MAX));
        reached_rx.recv().expect("upload reaches the pause");
        let report = store.gc(|_| false);
        // Resume before any assertion, so that a failure cannot leave the
        // upload thread waiting forever.
        resume_tx.send(()).expect("upload waits");
        (report, upload.join().expect("upload thread"))
    });
    let report = report.expect("gc");
    assert_eq!(report.roots_removed, 1);
    assert_eq!(report.chunks_removed, 0, "{report:?}");
    let info = put.expect("put succeeds");
    assert_eq!(read_all(&store, &info.cid), data);
    store.gc(|_| false).expect("gc");
    assert_eq!(read_all(&store, &info.cid), data);
}

#[test]
fn reopening_keeps_everything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let blobs: Vec<Vec<u8>> = [0, 1, 16, 17, 300, 1000].into_iter().map(pattern).collect();
    let (infos, counts) = {
        let store = open(dir.path());
        let infos: Vec<_> = blobs
            .iter()
            .map(|blob| store.put(&blob[..], 4096).expect("put"))
            .collect();
        (infos, store.counts().expect("counts"))
    };
    let store = open(dir.path());
    assert_eq!(store.counts().expect("counts"), counts);
    for (info, blob) in infos.iter().zip(&blobs) {
        assert_eq!(store.stat(&info.cid).expect("stat"), Some(*info));
        assert_eq!(&read_all(&store, &info.cid), blob);
    }
    drop(store);
    assert!(matches!(
        BlobStore::open_with_params(dir.path(), params(32, 4)),
        Err(BlobError::ParamsMismatch { .. })
    ));
    assert!(matches!(
        BlobStore::open(dir.path()),
        Err(BlobError::ParamsMismatch { .. })
    ));
}

#[test]
fn a_second_open_of_the_same_file_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let _store = open(dir.path());
    assert!(matches!(
        BlobStore::open_with_params(dir.path(), small()),
        Err(BlobError::Database { .. })
    ));
}

#[test]
fn a_reader_outlives_its_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    let data = pattern(500);
    let cid = store.put(&data[..], 500).expect("put").cid;
    let mut reader = store.reader(&cid).expect("reader opens");
    drop(store);
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .expect("the snapshot still reads");
    assert_eq!(bytes, data);
}

const MIB: usize = 1024 * 1024;

/// The raw table of chunk pieces, as `src/schema.rs` documents it.
const CHUNK_PIECES: redb::TableDefinition<&[u8], &[u8]> =
    redb::TableDefinition::new("chunk_pieces");

/// A store in `dir` with the default (1 MiB) chunks, holding one blob of
/// two and a half chunks, which differ from one another; the blob's bytes
/// and CID.
fn megabyte_blob(dir: &Path) -> (BlobStore, Vec<u8>, Cid) {
    // Not a multiple of 251, so that chunks differ from one another.
    let data: Vec<u8> = (0..MIB * 5 / 2).map(|i| (i % 253) as u8).collect();
    let store = BlobStore::open(dir).expect("store opens");
    let cid = store.put(&data[..], data.len() as u64).expect("put").cid;
    (store, data, cid)
}

/// Full-size (1 MiB) chunks are stored in pieces; reads reassemble them,
/// ranges across a piece boundary come back whole, and damage to a later
/// piece is caught like damage to the first.
#[test]
fn megabyte_chunks_are_stored_in_pieces_and_read_back_whole() {
    use redb::ReadableTable as _;

    let dir = tempfile::tempdir().expect("temp dir");
    let (store, data, cid) = megabyte_blob(dir.path());
    assert_eq!(read_all(&store, &cid), data);
    let counts = store.counts().expect("counts");
    assert_eq!((counts.roots, counts.chunks, counts.nodes), (1, 3, 1));
    // Around the first piece boundary (512 KiB less 1 KiB) and a chunk's.
    for (offset, len) in [(523_000, 1_000), (MIB - 10, 20), (2 * MIB + 1, 100)] {
        let range = store
            .read_range(&cid, offset as u64, len as u64)
            .expect("range reads");
        assert_eq!(range, &data[offset..offset + len], "{offset}+{len}");
    }
    drop(store);

    // Flip a byte in the second piece of the first chunk.
    let first_chunk = &data[..MIB];
    let chunk = cid_of_reader(first_chunk, govchain_blobstore::PROFILE_UNIXFS_V1_2025)
        .expect("slice reads");
    {
        let db = redb::Database::open(dir.path().join(BLOBSTORE_FILE_NAME)).expect("raw open");
        let db_write = db.begin_write().expect("raw write");
        {
            let mut pieces = db_write.open_table(CHUNK_PIECES).expect("table exists");
            let mut key = chunk.to_bytes();
            key.push(1);
            let mut piece = pieces
                .get(key.as_slice())
                .expect("raw get")
                .expect("a second piece")
                .value()
                .to_vec();
            piece[7] ^= 0x01;
            pieces
                .insert(key.as_slice(), piece.as_slice())
                .expect("raw insert");
        }
        db_write.commit().expect("raw commit");
    }
    let store = BlobStore::open(dir.path()).expect("store opens");
    let err = store
        .read_range(&cid, 0, 10)
        .expect_err("the chunk is damaged");
    assert!(
        matches!(err, BlobError::Corrupt { cid } if cid == chunk),
        "{err:?}"
    );
    let undamaged = store
        .read_range(&cid, MIB as u64, 10)
        .expect("the second chunk is intact");
    assert_eq!(undamaged, &data[MIB..MIB + 10]);
}

/// Collecting a blob of full-size chunks removes every piece of them.
#[test]
fn collection_removes_every_piece_of_megabyte_chunks() {
    use redb::{ReadableDatabase as _, ReadableTableMetadata as _};

    let dir = tempfile::tempdir().expect("temp dir");
    let (store, _, cid) = megabyte_blob(dir.path());
    store.unpin(&cid).expect("unpin");
    let report = store.gc(|_| false).expect("gc");
    assert_eq!(
        (
            report.roots_removed,
            report.chunks_removed,
            report.nodes_removed
        ),
        (1, 3, 1)
    );
    assert_eq!(store.counts().expect("counts").chunks, 0);
    drop(store);
    let db = redb::Database::open(dir.path().join(BLOBSTORE_FILE_NAME)).expect("raw open");
    let snapshot = db.begin_read().expect("raw read");
    let pieces = snapshot.open_table(CHUNK_PIECES).expect("table exists");
    assert_eq!(pieces.len().expect("count"), 0, "no piece is left behind");
}
