//! [`BlobReader`]: a verified, streaming walk over a blob's DAG.

use std::io::{self, Read};

use cid::Cid;
use redb::ReadOnlyTable;

use crate::chunks;
use crate::dag::{CODEC_RAW, check_child_node, decode_file_node, verify_block};
use crate::error::{BlobError, Context};

type BlockTable = ReadOnlyTable<&'static [u8], &'static [u8]>;

/// Reads a blob, or a range of it, chunk by chunk, in file order.
///
/// It walks the DAG depth-first from the root, skipping every subtree that
/// ends before the range, and hashes each node and chunk it loads against
/// the CID its parent named: bytes that do not match are reported as
/// [`BlobError::Corrupt`] and never returned. It holds one redb snapshot,
/// so a concurrent garbage collection does not remove blocks under it, and
/// keeps in memory one chunk and the links of one node per level.
///
/// [`BlobReader::next_chunk`] gives typed errors; the [`Read`]
/// implementation reports them as `io::Error`s (damage as
/// `InvalidData`) that wrap the [`BlobError`].
pub struct BlobReader {
    chunks: BlockTable,
    nodes: BlockTable,
    root: Cid,
    /// The root and its size, until the walk takes it.
    start: Option<(Cid, u64)>,
    /// The unread children of each node on the path from the root.
    path: Vec<std::vec::IntoIter<(Cid, u64)>>,
    /// Bytes before the range still to pass over.
    skip_bytes: u64,
    /// Bytes of the range still to serve.
    remaining_bytes: u64,
    /// The piece being served through `Read`, and how much of it was.
    piece: Vec<u8>,
    piece_read: usize,
}

impl BlobReader {
    pub(crate) fn new(
        chunks: BlockTable,
        nodes: BlockTable,
        root: Cid,
        size_bytes: u64,
        offset: u64,
        len: u64,
    ) -> Self {
        assert!(offset.checked_add(len).is_some_and(|end| end <= size_bytes));
        Self {
            chunks,
            nodes,
            root,
            start: Some((root, size_bytes)),
            path: Vec::new(),
            skip_bytes: offset,
            remaining_bytes: len,
            piece: Vec::new(),
            piece_read: 0,
        }
    }

    /// The blob's root CID.
    pub fn cid(&self) -> &Cid {
        &self.root
    }

    /// Bytes of the range not yet returned by `next_chunk`.
    pub fn remaining_bytes(&self) -> u64 {
        self.remaining_bytes
    }

    /// The next verified piece of the range: a whole chunk, or its part
    /// inside the range. `None` once the range is served.
    ///
    /// # Panics
    ///
    /// If the DAG ends before the range does, which the size checks on
    /// every node and chunk rule out (a bug in this crate).
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, BlobError> {
        while self.remaining_bytes > 0 {
            let Some((cid, file_size)) = self.next_link() else {
                // Every node's size was checked against its parent's, and
                // the root's against its record, so this is our bug.
                panic!(
                    "the DAG of {} ended with {} bytes of the range unread",
                    self.root, self.remaining_bytes
                );
            };
            if file_size <= self.skip_bytes {
                self.skip_bytes -= file_size;
                continue;
            }
            if cid.codec() == CODEC_RAW {
                return self.read_leaf(&cid, file_size).map(Some);
            }
            self.descend(&cid, file_size)?;
        }
        Ok(None)
    }

    fn next_link(&mut self) -> Option<(Cid, u64)> {
        if let Some(start) = self.start.take() {
            return Some(start);
        }
        while let Some(children) = self.path.last_mut() {
            if let Some(link) = children.next() {
                return Some(link);
            }
            self.path.pop();
        }
        None
    }

    fn read_leaf(&mut self, cid: &Cid, file_size: u64) -> Result<Vec<u8>, BlobError> {
        let bytes = chunks::read(&self.chunks, &cid.to_bytes()).context("reading a chunk")?;
        let mut bytes = verified(cid, bytes)?;
        if bytes.len() as u64 != file_size {
            return Err(BlobError::Malformed {
                cid: *cid,
                reason: format!(
                    "chunk has {} bytes, its parent says {file_size}",
                    bytes.len()
                ),
            });
        }
        // Both fit usize: they are at most the chunk's length.
        let start = self.skip_bytes as usize;
        let end = (file_size.min(self.skip_bytes + self.remaining_bytes)) as usize;
        assert!(start < end, "a skipped chunk is never read");
        bytes.truncate(end);
        bytes.drain(..start);
        self.skip_bytes = 0;
        self.remaining_bytes -= bytes.len() as u64;
        Ok(bytes)
    }

    fn descend(&mut self, cid: &Cid, file_size: u64) -> Result<(), BlobError> {
        let bytes = load(&self.nodes, cid)?;
        let node = decode_file_node(cid, &bytes)?;
        check_child_node(cid, &node, file_size, self.path.len())?;
        self.path.push(node.children.into_iter());
        Ok(())
    }
}

/// The bytes stored under `cid`, verified against it.
fn load(table: &BlockTable, cid: &Cid) -> Result<Vec<u8>, BlobError> {
    let bytes = table
        .get(cid.to_bytes().as_slice())
        .context("reading a block")?
        .map(|stored| stored.value().to_vec());
    verified(cid, bytes)
}

/// `bytes` if they were stored and hash to `cid`.
fn verified(cid: &Cid, bytes: Option<Vec<u8>>) -> Result<Vec<u8>, BlobError> {
    let bytes = bytes.ok_or(BlobError::Missing { cid: *cid })?;
    verify_block(cid, &bytes)?;
    Ok(bytes)
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.piece_read == self.piece.len() {
            match self.next_chunk().map_err(BlobError::into_io)? {
                Some(piece) => {
                    self.piece = piece;
                    self.piece_read = 0;
                }
                None => return Ok(0),
            }
        }
        let count = buf.len().min(self.piece.len() - self.piece_read);
        buf[..count].copy_from_slice(&self.piece[self.piece_read..self.piece_read + count]);
        self.piece_read += count;
        Ok(count)
    }
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader")
            .field("root", &self.root)
            .field("remaining_bytes", &self.remaining_bytes)
            .finish_non_exhaustive()
    }
}
