//! The block log: every committed block, appended to checksummed segment
//! files in `<data_dir>/blocks/`, one `fdatasync` per block.
//!
//! The log is where a block becomes durable. The redb file holds what is
//! derived from the blocks (block records, the hash and transaction
//! indexes, the state and its tree) and is committed durably only every
//! [`crate::CHECKPOINT_BLOCKS`] blocks; after a crash it is behind the log
//! by at most that many blocks, which the caller re-executes and appends
//! again ([`crate::Ledger::log_head`]).
//!
//! Layout. A segment is named after the height of its first block,
//! `{height:020}.seg`, and starts with [`SEGMENT_MAGIC`] and that height.
//! Records follow back to back:
//!
//! ```text
//! len: u32 BE | crc32c(body): u32 BE | body: height u64 BE | hash 32 | parent 32 | block
//! ```
//!
//! **Invariant:** records are contiguous heights, each record's parent is
//! the previous record's hash, and a segment is sealed (never written
//! again) once a later one exists.
//!
//! **Invariant:** a record is whole on disk before `append` returns. A
//! crash can only leave a torn record at the end of the last segment (or a
//! segment whose header is torn, created just before the crash);
//! [`BlockLog::open`] cuts it off. Damage anywhere else is reported, never
//! cut.
//!
//! Pruning. A sealed segment may be rewritten once, whole, as a *pruned*
//! segment ([`PRUNED_SEGMENT_MAGIC`]): the same records, each block
//! replaced by what the caller kept of it (its header and certificate).
//! The rewrite goes to `{name}.prune`, is synced, and replaces the segment
//! by a rename only after the caller recorded the prune (see
//! [`crate::Ledger::prune_bodies`]); `open` finishes or drops a rewrite a
//! crash interrupted, as `pruned_through` says. Pruned segments are the
//! oldest ones: no full segment precedes a pruned one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use govchain_crypto::Digest;

use crate::BLOCK_SIZE_BYTES_MAX;
use crate::error::{Inconsistency, LogFailure};

/// The log's directory inside the data directory.
pub const LOG_DIR_NAME: &str = "blocks";
/// The first bytes of every segment (the 01 is the record format).
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"GOVLOG01";
/// The first bytes of a pruned segment: records of the same format, whose
/// blocks hold only what pruning kept.
pub(crate) const PRUNED_SEGMENT_MAGIC: [u8; 8] = *b"GOVHDR01";
/// The suffix of a pruned segment being written, before its rename.
const PRUNE_SUFFIX: &str = "prune";
const SEGMENT_HEADER_BYTES: u64 = 16;
const RECORD_HEADER_BYTES: usize = 8;
/// height, hash, parent.
const BODY_PREFIX_BYTES: usize = 8 + 32 + 32;
/// A new segment starts once the last one holds this many bytes: large
/// enough that a long chain has few files, small enough that a sealed
/// segment can be copied or pruned on its own.
pub const SEGMENT_BYTES_TARGET: u64 = 128 * 1024 * 1024;

/// Where one record lies in its segment.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Of the record header.
    offset: u64,
    /// Of the body.
    len: u32,
}

struct Segment {
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    entries: Vec<Entry>,
    /// Bytes of whole records and header: where the next record goes.
    end: u64,
    /// Its blocks hold only what pruning kept.
    pruned: bool,
}

impl Segment {
    fn last(&self) -> Option<u64> {
        (!self.entries.is_empty()).then(|| self.first + self.entries.len() as u64 - 1)
    }
}

/// One block to append, borrowed from the caller.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockRef<'a> {
    pub height: u64,
    pub hash: Digest,
    pub parent_hash: Digest,
    pub encoded: &'a [u8],
    /// Goes into a pruned segment (a restore of a pruned ledger).
    pub pruned: bool,
}

/// One block as the log holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedBlock {
    pub height: u64,
    pub hash: Digest,
    pub parent_hash: Digest,
    pub encoded: Vec<u8>,
    /// `encoded` is what pruning kept of the block, not the block.
    pub pruned: bool,
}

/// What pruning keeps of the block at a height: `Err` says why it cannot.
pub(crate) type StripBody<'a> = dyn FnMut(u64, &[u8]) -> Result<Vec<u8>, String> + 'a;

/// A sealed segment's rewrite, synced and not yet in place.
pub(crate) struct PrunedSegment {
    pub first: u64,
    pub last: u64,
    temp: PathBuf,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// What opening the log had to cut off the end of its last segment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub torn_bytes: u64,
    /// A segment created just before a crash, with no whole header.
    pub removed_segment: Option<PathBuf>,
}

pub(crate) struct BlockLog {
    dir: PathBuf,
    segments: RwLock<Vec<Segment>>,
    /// Serialises appends; the segment list is locked only to publish.
    append: Mutex<()>,
    segment_bytes: u64,
    /// How many readers (backups) need the blocks as they are: no segment
    /// is pruned while there is one. Held across a segment's prune.
    holds: Mutex<u64>,
}

/// Keeps the log from being pruned while it lives (see [`BlockLog::hold`]).
pub(crate) struct Hold(Arc<BlockLog>);

impl Drop for Hold {
    fn drop(&mut self) {
        *self.0.holds.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
    }
}

impl BlockLog {
    /// Opens (creating if needed) the log in `dir`, checking every record
    /// header and the checksum of every record of the last segment, and
    /// cutting a torn tail off it. A bad record at or below `keep_through`
    /// (a height the index already holds) is damage, never cut.
    ///
    /// A pruned rewrite a crash left (`*.seg.prune`) replaces its segment
    /// if the caller recorded it (its first height is at most
    /// `pruned_through`), and is removed otherwise.
    pub(crate) fn open(
        dir: &Path,
        segment_bytes: u64,
        keep_through: u64,
        pruned_through: u64,
    ) -> Result<(Self, Recovered), LogError> {
        fs::create_dir_all(dir)
            .map_err(|source| failure(dir, "creating the log directory", source))?;
        finish_prunes(dir, pruned_through)?;
        let mut names = Vec::new();
        for entry in fs::read_dir(dir).map_err(|source| failure(dir, "listing the log", source))? {
            let entry = entry.map_err(|source| failure(dir, "listing the log", source))?;
            let name = entry.file_name();
            let Some(first) = name
                .to_str()
                .and_then(|name| name.strip_suffix(".seg"))
                .and_then(|stem| stem.parse::<u64>().ok())
            else {
                continue;
            };
            names.push((first, entry.path()));
        }
        names.sort();
        let mut recovered = Recovered::default();
        let mut segments: Vec<Segment> = Vec::with_capacity(names.len());
        let count = names.len();
        for (position, (first, path)) in names.into_iter().enumerate() {
            let is_last = position + 1 == count;
            let expected_first = segments.last().map_or(first, |previous| {
                previous.last().map_or(previous.first, |l| l + 1)
            });
            if first != expected_first {
                return Err(LogError::Damaged(Inconsistency::LogGap {
                    segment: path.display().to_string(),
                    first,
                    expected: expected_first,
                }));
            }
            match scan(&path, first, is_last, keep_through)? {
                Scanned::Segment(segment, torn) => {
                    if segment.pruned && segments.last().is_some_and(|s: &Segment| !s.pruned) {
                        return Err(damaged(
                            &path,
                            0,
                            "a pruned segment follows a full one".to_owned(),
                        )
                        .into());
                    }
                    recovered.torn_bytes = torn;
                    segments.push(segment);
                }
                Scanned::TornHeader => {
                    fs::remove_file(&path)
                        .map_err(|source| failure(&path, "removing a torn segment", source))?;
                    sync_dir(dir)?;
                    recovered.removed_segment = Some(path);
                }
            }
        }
        // Parent links across the boundary of each segment are checked by
        // `verify`, which reads the records.
        Ok((
            Self {
                dir: dir.to_path_buf(),
                segments: RwLock::new(segments),
                append: Mutex::new(()),
                segment_bytes,
                holds: Mutex::new(0),
            },
            recovered,
        ))
    }

    /// The height of the last logged block, 0 when empty.
    pub(crate) fn last(&self) -> u64 {
        let segments = self.read_segments();
        segments.iter().rev().find_map(Segment::last).unwrap_or(0)
    }

    /// Appends one block at `last() + 1`; with `sync`, the record is on
    /// disk when this returns.
    pub(crate) fn append(&self, block: BlockRef<'_>, sync: bool) -> Result<(), LogFailure> {
        let _append = self.append.lock().unwrap_or_else(PoisonError::into_inner);
        let (file, offset, path) = {
            let segments = self.read_segments();
            match segments.last() {
                Some(segment)
                    if segment.pruned == block.pruned
                        && (segment.end < self.segment_bytes || segment.entries.is_empty()) =>
                {
                    (segment.file.clone(), segment.end, segment.path.clone())
                }
                _ => {
                    drop(segments);
                    let segment = self.create_segment(block.height, block.pruned)?;
                    let opened = (segment.file.clone(), segment.end, segment.path.clone());
                    self.write_segments().push(segment);
                    opened
                }
            }
        };
        let record = encode_record(block);
        let written = file
            .write_all_at(&record, offset)
            .and_then(|()| if sync { file.sync_data() } else { Ok(()) });
        if let Err(source) = written {
            // Nothing after `end` counts: the next append overwrites it,
            // and `open` would cut it off.
            return Err(LogFailure::new(&path, "appending a block", source));
        }
        let mut segments = self.write_segments();
        let segment = segments.last_mut().expect("the segment just written");
        segment.entries.push(Entry {
            offset,
            len: (record.len() - RECORD_HEADER_BYTES) as u32,
        });
        segment.end = offset + record.len() as u64;
        Ok(())
    }

    /// Syncs the last segment (after appends with `sync == false`).
    pub(crate) fn sync(&self) -> Result<(), LogFailure> {
        let segments = self.read_segments();
        if let Some(segment) = segments.last() {
            segment
                .file
                .sync_data()
                .map_err(|source| LogFailure::new(&segment.path, "syncing the log", source))?;
        }
        Ok(())
    }

    /// The block at `height`, checksum verified; `None` if not logged.
    pub(crate) fn read(&self, height: u64) -> Result<Option<LoggedBlock>, LogError> {
        let (file, entry, path, pruned) = {
            let segments = self.read_segments();
            let position = segments.partition_point(|segment| segment.first <= height);
            let Some(segment) = position.checked_sub(1).map(|p| &segments[p]) else {
                return Ok(None);
            };
            let Some(entry) = segment.entries.get((height - segment.first) as usize) else {
                return Ok(None);
            };
            (
                segment.file.clone(),
                *entry,
                segment.path.clone(),
                segment.pruned,
            )
        };
        read_record(&file, &path, entry, height, pruned).map(Some)
    }

    /// Keeps every segment as it is until the hold is dropped (waiting
    /// for a segment's prune in progress).
    pub(crate) fn hold(self: &Arc<Self>) -> Hold {
        *self.holds.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        Hold(self.clone())
    }

    /// For pruning one segment: `None` while a [`Hold`] lives.
    pub(crate) fn lock_for_prune(&self) -> Option<std::sync::MutexGuard<'_, u64>> {
        let holds = self.holds.lock().unwrap_or_else(PoisonError::into_inner);
        (*holds == 0).then_some(holds)
    }

    /// The first height whose block the log holds whole: above every
    /// pruned segment.
    pub(crate) fn bodies_from(&self) -> Option<u64> {
        let segments = self.read_segments();
        let first = segments.first().filter(|s| !s.entries.is_empty())?.first;
        Some(
            segments
                .iter()
                .filter(|s| s.pruned)
                .filter_map(Segment::last)
                .map(|last| last + 1)
                .max()
                .unwrap_or(first),
        )
    }

    /// The sealed segments, oldest first, that are whole and end below
    /// `keep_from`: `(first, last)` of each.
    pub(crate) fn prunable(&self, keep_from: u64) -> Vec<(u64, u64)> {
        let segments = self.read_segments();
        let sealed = segments.len().saturating_sub(1);
        segments[..sealed]
            .iter()
            .filter(|s| !s.pruned)
            .filter_map(|s| Some((s.first, s.last()?)))
            .take_while(|(_, last)| *last < keep_from)
            .collect()
    }

    /// Writes the pruned rewrite of the sealed segment starting at
    /// `first`, each block replaced by `strip(height, block)`, and syncs
    /// it; [`BlockLog::install_pruned`] puts it in place.
    pub(crate) fn write_pruned(
        &self,
        first: u64,
        strip: &mut StripBody<'_>,
    ) -> Result<PrunedSegment, crate::error::PruneError> {
        use crate::error::PruneError;
        let (file, path, entries) = {
            let segments = self.read_segments();
            let segment = segments
                .iter()
                .find(|s| s.first == first && !s.pruned)
                .expect("prunable names a whole segment");
            (
                segment.file.clone(),
                segment.path.clone(),
                segment.entries.clone(),
            )
        };
        let temp = prune_path(&path);
        let written = (|| -> Result<(u64, u64), PruneError> {
            let out = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&temp)
                .map_err(|source| LogFailure::new(&temp, "creating a pruned segment", source))?;
            let mut out = io::BufWriter::new(out);
            let mut written = SEGMENT_HEADER_BYTES;
            out.write_all(&PRUNED_SEGMENT_MAGIC)
                .and_then(|()| out.write_all(&first.to_be_bytes()))
                .map_err(|source| LogFailure::new(&temp, "writing a pruned segment", source))?;
            let mut bytes_before = SEGMENT_HEADER_BYTES;
            for (index, entry) in entries.iter().enumerate() {
                let height = first + index as u64;
                let block = read_record(&file, &path, *entry, height, false)
                    .map_err(crate::ReadError::from)?;
                let kept = strip(height, &block.encoded)
                    .map_err(|reason| PruneError::Strip { height, reason })?;
                let record = encode_record(BlockRef {
                    height,
                    hash: block.hash,
                    parent_hash: block.parent_hash,
                    encoded: &kept,
                    pruned: true,
                });
                out.write_all(&record)
                    .map_err(|source| LogFailure::new(&temp, "writing a pruned segment", source))?;
                written += record.len() as u64;
                bytes_before += (RECORD_HEADER_BYTES + entry.len as usize) as u64;
            }
            out.into_inner()
                .map_err(|err| err.into_error())
                .and_then(|file| file.sync_all())
                .map_err(|source| LogFailure::new(&temp, "syncing a pruned segment", source))?;
            Ok((bytes_before, written))
        })();
        // A rewrite that failed half way is no use to a later run.
        let (bytes_before, written) = written.inspect_err(|_| {
            let _ = fs::remove_file(&temp);
        })?;
        Ok(PrunedSegment {
            first,
            last: first + entries.len() as u64 - 1,
            temp,
            bytes_before,
            bytes_after: written,
        })
    }

    /// Replaces the segment by its pruned rewrite (after the caller
    /// recorded the prune durably).
    pub(crate) fn install_pruned(&self, pruned: &PrunedSegment) -> Result<(), LogError> {
        let path = self.dir.join(segment_name(pruned.first));
        fs::rename(&pruned.temp, &path)
            .map_err(|source| failure(&path, "putting a pruned segment in place", source))?;
        sync_dir(&self.dir)?;
        let Scanned::Segment(segment, _) = scan(&path, pruned.first, false, u64::MAX)? else {
            unreachable!("a sealed segment has its header");
        };
        let mut segments = self.write_segments();
        let slot = segments
            .iter_mut()
            .find(|s| s.first == pruned.first)
            .expect("the segment just pruned");
        *slot = segment;
        Ok(())
    }

    /// Only the hash and parent of the block at `height`.
    pub(crate) fn links(&self, height: u64) -> Result<Option<(Digest, Digest)>, LogError> {
        Ok(self
            .read(height)?
            .map(|block| (block.hash, block.parent_hash)))
    }

    /// The first logged height (1 unless pruned), or `None` when empty.
    pub(crate) fn first(&self) -> Option<u64> {
        let segments = self.read_segments();
        segments
            .first()
            .filter(|s| !s.entries.is_empty())
            .map(|s| s.first)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn create_segment(&self, first: u64, pruned: bool) -> Result<Segment, LogFailure> {
        let path = self.dir.join(segment_name(first));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| LogFailure::new(&path, "creating a segment", source))?;
        let mut header = Vec::with_capacity(SEGMENT_HEADER_BYTES as usize);
        header.extend_from_slice(if pruned {
            &PRUNED_SEGMENT_MAGIC
        } else {
            &SEGMENT_MAGIC
        });
        header.extend_from_slice(&first.to_be_bytes());
        (&file)
            .write_all(&header)
            .and_then(|()| file.sync_all())
            .map_err(|source| LogFailure::new(&path, "writing a segment header", source))?;
        sync_dir(&self.dir)?;
        Ok(Segment {
            first,
            path,
            file: Arc::new(file),
            entries: Vec::new(),
            end: SEGMENT_HEADER_BYTES,
            pruned,
        })
    }

    fn read_segments(&self) -> std::sync::RwLockReadGuard<'_, Vec<Segment>> {
        // Writers only push or update plain fields; a poisoned lock still
        // holds a consistent list.
        self.segments.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_segments(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Segment>> {
        self.segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Writes a fresh log from `blocks` (consecutive heights), synced once at
/// the end: a migration, a restore or an install, never the commit path.
pub(crate) fn write_all(
    dir: &Path,
    segment_bytes: u64,
    blocks: impl Iterator<Item = Result<LoggedBlock, crate::ReadError>>,
) -> Result<u64, crate::ReadError> {
    let (log, _) = BlockLog::open(dir, segment_bytes, 0, 0)?;
    let mut written = 0;
    for block in blocks {
        let block = block?;
        // An empty log starts anywhere (an installed snapshot's block).
        let expected = match log.first() {
            None => block.height,
            Some(_) => log.last() + 1,
        };
        if block.height != expected {
            return Err(Inconsistency::LogGap {
                segment: dir.display().to_string(),
                first: block.height,
                expected,
            }
            .into());
        }
        log.append(
            BlockRef {
                height: block.height,
                hash: block.hash,
                parent_hash: block.parent_hash,
                encoded: &block.encoded,
                pruned: block.pruned,
            },
            false,
        )?;
        written += 1;
    }
    log.sync()?;
    Ok(written)
}

pub(crate) fn segment_name(first: u64) -> String {
    format!("{first:020}.seg")
}

fn prune_path(segment: &Path) -> PathBuf {
    let mut name = segment.as_os_str().to_owned();
    name.push(".");
    name.push(PRUNE_SUFFIX);
    PathBuf::from(name)
}

/// Puts in place the pruned rewrites the caller recorded before a crash
/// (first height at most `pruned_through`) and removes the others.
fn finish_prunes(dir: &Path, pruned_through: u64) -> Result<(), LogError> {
    let suffix = format!(".seg.{PRUNE_SUFFIX}");
    let mut changed = false;
    for entry in fs::read_dir(dir).map_err(|source| failure(dir, "listing the log", source))? {
        let entry = entry.map_err(|source| failure(dir, "listing the log", source))?;
        let name = entry.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|name| name.strip_suffix(&suffix))
            .and_then(|stem| stem.parse::<u64>().ok())
        else {
            continue;
        };
        let temp = entry.path();
        if first <= pruned_through {
            let path = dir.join(segment_name(first));
            fs::rename(&temp, &path)
                .map_err(|source| failure(&path, "finishing an interrupted prune", source))?;
        } else {
            fs::remove_file(&temp)
                .map_err(|source| failure(&temp, "removing an unrecorded prune", source))?;
        }
        changed = true;
    }
    if changed {
        sync_dir(dir)?;
    }
    Ok(())
}

fn read_record(
    file: &File,
    path: &Path,
    entry: Entry,
    height: u64,
    pruned: bool,
) -> Result<LoggedBlock, LogError> {
    let mut record = vec![0; RECORD_HEADER_BYTES + entry.len as usize];
    file.read_exact_at(&mut record, entry.offset)
        .map_err(|source| LogFailure::new(path, "reading a block", source))?;
    let mut block =
        decode_record(&record, height).map_err(|reason| damaged(path, entry.offset, reason))?;
    block.pruned = pruned;
    Ok(block)
}

fn encode_record(block: BlockRef<'_>) -> Vec<u8> {
    let body_len = BODY_PREFIX_BYTES + block.encoded.len();
    let mut record = Vec::with_capacity(RECORD_HEADER_BYTES + body_len);
    record.extend_from_slice(&(body_len as u32).to_be_bytes());
    record.extend_from_slice(&[0; 4]);
    record.extend_from_slice(&block.height.to_be_bytes());
    record.extend_from_slice(block.hash.as_bytes());
    record.extend_from_slice(block.parent_hash.as_bytes());
    record.extend_from_slice(block.encoded);
    let crc = crc32c::crc32c(&record[RECORD_HEADER_BYTES..]);
    record[4..8].copy_from_slice(&crc.to_be_bytes());
    record
}

/// Decodes a whole record read back from a segment; `Err` says what is wrong.
fn decode_record(record: &[u8], height: u64) -> Result<LoggedBlock, String> {
    let (header, body) = record.split_at(RECORD_HEADER_BYTES);
    let crc = u32::from_be_bytes(header[4..8].try_into().expect("4 bytes"));
    if crc32c::crc32c(body) != crc {
        return Err("checksum mismatch".to_owned());
    }
    let stored = u64::from_be_bytes(body[..8].try_into().expect("8 bytes"));
    if stored != height {
        return Err(format!("holds height {stored}, expected {height}"));
    }
    Ok(LoggedBlock {
        height,
        hash: Digest::from_bytes(body[8..40].try_into().expect("32 bytes")),
        parent_hash: Digest::from_bytes(body[40..72].try_into().expect("32 bytes")),
        encoded: body[BODY_PREFIX_BYTES..].to_vec(),
        pruned: false,
    })
}

enum Scanned {
    /// With the torn bytes cut off its end.
    Segment(Segment, u64),
    TornHeader,
}

/// Walks one segment's records. Every record's length and height are
/// checked; in the last segment its checksum too, and a bad record there
/// ends the segment (a torn write), cut off on disk.
fn scan(path: &Path, first: u64, is_last: bool, keep_through: u64) -> Result<Scanned, LogError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| failure(path, "opening a segment", source))?;
    let size = file
        .metadata()
        .map_err(|source| failure(path, "reading a segment's size", source))?
        .len();
    let mut header = [0; SEGMENT_HEADER_BYTES as usize];
    if size < SEGMENT_HEADER_BYTES {
        if is_last {
            return Ok(Scanned::TornHeader);
        }
        return Err(damaged(path, 0, "shorter than its header".to_owned()).into());
    }
    file.read_exact_at(&mut header, 0)
        .map_err(|source| failure(path, "reading a segment header", source))?;
    let pruned = header[..8] == PRUNED_SEGMENT_MAGIC;
    if !(pruned || header[..8] == SEGMENT_MAGIC) || header[8..] != first.to_be_bytes() {
        return Err(damaged(
            path,
            0,
            format!("header is not {SEGMENT_MAGIC:?} (or {PRUNED_SEGMENT_MAGIC:?}) followed by height {first}"),
        )
        .into());
    }
    let mut entries = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    let body_max = (BODY_PREFIX_BYTES + BLOCK_SIZE_BYTES_MAX) as u64;
    while offset < size {
        let height = first + entries.len() as u64;
        let problem = (|| -> Result<Option<u32>, LogError> {
            if size - offset < RECORD_HEADER_BYTES as u64 + BODY_PREFIX_BYTES as u64 {
                return Ok(None);
            }
            let mut head = [0; RECORD_HEADER_BYTES + 8];
            file.read_exact_at(&mut head, offset)
                .map_err(|source| failure(path, "reading a record header", source))?;
            let len = u32::from_be_bytes(head[..4].try_into().expect("4 bytes"));
            let stored = u64::from_be_bytes(head[8..].try_into().expect("8 bytes"));
            if u64::from(len) < BODY_PREFIX_BYTES as u64
                || u64::from(len) > body_max
                || size - offset - (RECORD_HEADER_BYTES as u64) < u64::from(len)
                || stored != height
            {
                return Ok(None);
            }
            if is_last {
                let mut record = vec![0; RECORD_HEADER_BYTES + len as usize];
                file.read_exact_at(&mut record, offset)
                    .map_err(|source| failure(path, "reading a record", source))?;
                if decode_record(&record, height).is_err() {
                    return Ok(None);
                }
            }
            Ok(Some(len))
        })()?;
        let Some(len) = problem else {
            if !is_last || height <= keep_through {
                return Err(
                    damaged(path, offset, format!("no whole record for height {height}")).into(),
                );
            }
            break;
        };
        entries.push(Entry { offset, len });
        offset += RECORD_HEADER_BYTES as u64 + u64::from(len);
    }
    let torn = size - offset;
    if torn > 0 {
        file.set_len(offset)
            .and_then(|()| file.sync_all())
            .map_err(|source| failure(path, "cutting off a torn record", source))?;
    }
    Ok(Scanned::Segment(
        Segment {
            first,
            path: path.to_path_buf(),
            file: Arc::new(file),
            entries,
            end: offset,
            pruned,
        },
        torn,
    ))
}

fn sync_dir(dir: &Path) -> Result<(), LogFailure> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| LogFailure::new(dir, "syncing the log directory", source))
}

fn failure(path: &Path, context: &'static str, source: io::Error) -> LogError {
    LogError::Failure(LogFailure::new(path, context, source))
}

fn damaged(path: &Path, offset: u64, reason: String) -> Inconsistency {
    Inconsistency::LogDamaged {
        segment: path.display().to_string(),
        offset,
        reason,
    }
}

/// Why the log could not be opened or read.
#[derive(Debug)]
pub(crate) enum LogError {
    Failure(LogFailure),
    Damaged(Inconsistency),
}

impl From<Inconsistency> for LogError {
    fn from(inconsistency: Inconsistency) -> Self {
        Self::Damaged(inconsistency)
    }
}

impl From<LogFailure> for LogError {
    fn from(failure: LogFailure) -> Self {
        Self::Failure(failure)
    }
}

impl From<LogError> for crate::ReadError {
    fn from(err: LogError) -> Self {
        match err {
            LogError::Failure(failure) => Self::Log(failure),
            LogError::Damaged(inconsistency) => Self::Corrupted(inconsistency),
        }
    }
}
