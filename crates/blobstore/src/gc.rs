//! Garbage collection: mark the blocks that kept roots reach, sweep the
//! rest.
//!
//! One collection is one durable redb write transaction, so it removes all
//! that it decided to or nothing. The mark set lives in a table of that
//! transaction ([`GC_MARKS`]) rather than in memory, and the sweep scans
//! the small [`BLOCKS`] index in bounded steps, so memory stays bounded
//! however large the store is.

use std::collections::BTreeMap;
use std::ops::Bound;

use cid::Cid;
use redb::{ReadableTable, Table, WriteTransaction};

use crate::chunks;
use crate::dag::{CODEC_DAG_PB, decode_file_node, verify_block};
use crate::error::{BlobError, Context};
use crate::schema::{self, BLOCKS, CHUNKS, GC_MARKS, NODES, ROOTS, RootRecord};
use crate::store::begin_durable_write;
use crate::{BlobStore, GC_BLOCKS_PER_STEP_MAX};

/// What one [`BlobStore::gc`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Unpinned roots that `keep` did not keep.
    pub roots_removed: u64,
    pub roots_kept: u64,
    pub chunks_removed: u64,
    pub nodes_removed: u64,
    /// Bytes of the removed chunks and nodes.
    pub bytes_removed: u64,
}

impl BlobStore {
    /// Removes every blob that has no pin and that `keep` does not keep
    /// (`keep` is asked only about unpinned blobs, e.g. "is this CID still
    /// referenced by the chain's state?"), then every chunk and node that
    /// no remaining blob reaches and no upload in progress has staged. A
    /// chunk shared with a kept blob stays. Readers opened before keep
    /// reading their snapshot.
    ///
    /// Fails, removing nothing, if a kept blob's node is missing or
    /// corrupted: sweeping without knowing that node's children could
    /// remove blocks the blob still needs. Putting the blob again repairs
    /// it.
    pub fn gc(&self, keep: impl Fn(&Cid) -> bool) -> Result<GcReport, BlobError> {
        let db_write = begin_durable_write(self.db())?;
        let mut report = GcReport::default();
        // Never committed, so never there; dropped anyway so that marks
        // always start empty.
        db_write
            .delete_table(GC_MARKS)
            .context("clearing the gc marks")?;
        drop_roots(&db_write, &keep, &mut report)?;
        mark_reachable(&db_write)?;
        {
            let in_flight = self.in_flight_set().lock();
            sweep(&db_write, &in_flight, &mut report)?;
        }
        db_write
            .delete_table(GC_MARKS)
            .context("deleting the gc marks")?;
        db_write.commit().context("committing a gc")?;
        Ok(report)
    }
}

fn parse_key(table: &'static str, key: &[u8]) -> Result<Cid, BlobError> {
    Cid::try_from(key).map_err(|err| BlobError::BadKey {
        table,
        reason: err.to_string(),
    })
}

/// Removes the roots with no pin that `keep` does not keep.
fn drop_roots(
    db_write: &WriteTransaction,
    keep: &impl Fn(&Cid) -> bool,
    report: &mut GcReport,
) -> Result<(), BlobError> {
    let mut roots = db_write.open_table(ROOTS).context("opening roots")?;
    let mut failure = None;
    let decide = |key: &[u8], value: &[u8]| -> Result<bool, BlobError> {
        if RootRecord::decode(value)?.pins > 0 {
            return Ok(true);
        }
        Ok(keep(&parse_key("roots", key)?))
    };
    roots
        .retain(|key, value| {
            // `retain` cannot fail from its predicate: keep everything
            // after the first error, and report it once done.
            if failure.is_some() {
                return true;
            }
            match decide(key, value) {
                Ok(true) => {
                    report.roots_kept += 1;
                    true
                }
                Ok(false) => {
                    report.roots_removed += 1;
                    false
                }
                Err(err) => {
                    failure = Some(err);
                    true
                }
            }
        })
        .context("removing roots")?;
    failure.map_or(Ok(()), Err)
}

/// Records in [`GC_MARKS`] every block the remaining roots reach. Nodes
/// are verified before their links are trusted; chunks are not read.
fn mark_reachable(db_write: &WriteTransaction) -> Result<(), BlobError> {
    const CONTEXT: &str = "marking reachable blocks";
    let roots = db_write.open_table(ROOTS).context(CONTEXT)?;
    let nodes = db_write.open_table(NODES).context(CONTEXT)?;
    let mut marks = db_write.open_table(GC_MARKS).context(CONTEXT)?;
    // Depth-first: at most one node's links per level are waiting.
    let mut waiting = Vec::new();
    for entry in roots.iter().context(CONTEXT)? {
        let (key, _) = entry.context(CONTEXT)?;
        waiting.push(parse_key("roots", key.value())?);
        while let Some(cid) = waiting.pop() {
            let key = cid.to_bytes();
            if marks.insert(key.as_slice(), ()).context(CONTEXT)?.is_some() {
                // Already marked, with its subtree: a shared block.
                continue;
            }
            if cid.codec() != CODEC_DAG_PB {
                continue;
            }
            let bytes = nodes
                .get(key.as_slice())
                .context(CONTEXT)?
                .ok_or(BlobError::Missing { cid })?
                .value()
                .to_vec();
            verify_block(&cid, &bytes)?;
            let node = decode_file_node(&cid, &bytes)?;
            waiting.extend(node.children.into_iter().map(|(child, _)| child));
        }
    }
    Ok(())
}

/// Removes every block that is neither marked nor in flight, scanning the
/// [`BLOCKS`] index in steps of at most [`GC_BLOCKS_PER_STEP_MAX`]
/// removals.
fn sweep(
    db_write: &WriteTransaction,
    in_flight: &BTreeMap<Vec<u8>, u64>,
    report: &mut GcReport,
) -> Result<(), BlobError> {
    const CONTEXT: &str = "sweeping unreferenced blocks";
    let mut index = db_write.open_table(BLOCKS).context(CONTEXT)?;
    let mut chunks = db_write.open_table(CHUNKS).context(CONTEXT)?;
    let mut nodes = db_write.open_table(NODES).context(CONTEXT)?;
    let marks = db_write.open_table(GC_MARKS).context(CONTEXT)?;
    let mut resume_after: Option<Vec<u8>> = None;
    loop {
        let step = scan_step(&index, &marks, in_flight, resume_after.as_deref())?;
        for (key, len) in &step.garbage {
            index.remove(key.as_slice()).context(CONTEXT)?;
            if chunks::remove(&mut chunks, key).context(CONTEXT)? {
                report.chunks_removed += 1;
            } else if nodes.remove(key.as_slice()).context(CONTEXT)?.is_some() {
                report.nodes_removed += 1;
            }
            report.bytes_removed += len;
        }
        match step.resume_after {
            Some(key) => resume_after = Some(key),
            None => return Ok(()),
        }
    }
}

/// Unreferenced blocks found by one scan step, and where the next step
/// starts (`None` when the index is exhausted).
struct ScanStep {
    garbage: Vec<(Vec<u8>, u64)>,
    resume_after: Option<Vec<u8>>,
}

fn scan_step(
    index: &Table<&'static [u8], [u8; 4]>,
    marks: &Table<&'static [u8], ()>,
    in_flight: &BTreeMap<Vec<u8>, u64>,
    after: Option<&[u8]>,
) -> Result<ScanStep, BlobError> {
    const CONTEXT: &str = "scanning the block index";
    let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
    let mut garbage = Vec::new();
    for entry in index
        .range::<&[u8]>((lower, Bound::Unbounded))
        .context(CONTEXT)?
    {
        let (key, len) = entry.context(CONTEXT)?;
        let key = key.value();
        let referenced = marks.get(key).context(CONTEXT)?.is_some() || in_flight.contains_key(key);
        if referenced {
            continue;
        }
        garbage.push((key.to_vec(), schema::decode_block_len(len.value())));
        if garbage.len() == GC_BLOCKS_PER_STEP_MAX {
            return Ok(ScanStep {
                resume_after: Some(key.to_vec()),
                garbage,
            });
        }
    }
    Ok(ScanStep {
        garbage,
        resume_after: None,
    })
}
