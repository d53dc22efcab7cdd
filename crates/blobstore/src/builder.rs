//! Streaming construction of a blob's balanced DAG, and [`cid_of_reader`].
//!
//! `ipfs-unixfs-importer`'s balanced layout cuts the chunk stream into
//! groups of `links_per_node_max` leaves, makes a node of each group, and
//! repeats on the list of nodes until one is left; a file of a single
//! chunk is that chunk's raw leaf. [`DagBuilder`] builds the same tree while
//! the chunks stream in: it keeps, for each level, only the links of the
//! node being filled, and closes a node as soon as it is full. Memory is
//! one chunk plus at most one node's links per level.

use std::io::{self, Read};

use bytes::Bytes;
use cid::Cid;

use crate::dag::{CODEC_RAW, Link, cid_of_block, encode_file_node};
use crate::error::BlobError;
use crate::{ChunkerParams, DAG_DEPTH_MAX};

/// The CID that IPFS computes for the bytes of `reader` with `params`
/// (`ipfs add --only-hash`, or the JS importer with the same chunker and
/// balanced layout). Reads the input once, in chunks; stores nothing.
///
/// With [`crate::PROFILE_UNIXFS_V1_2025`] it equals the CID
/// [`crate::BlobStore::put`] gives the same bytes in a store with those
/// params.
pub fn cid_of_reader(reader: impl Read, params: ChunkerParams) -> Result<Cid, BlobError> {
    let (root, _) = build(ReadChunks(reader), params, u64::MAX, &mut |_, _| Ok(()))?;
    Ok(root.cid)
}

/// Where a put's bytes come from, a chunk at a time. A source that already
/// holds its input in chunk-sized `Bytes` (the node's upload stream, whose
/// messages are one chunk each) hands them on without copying them.
pub trait ChunkSource {
    /// The next `len` bytes of the input: fewer only at its end, and then
    /// every later call returns none.
    fn next_chunk(&mut self, len: usize) -> Result<Bytes, ChunkReadError>;
}

/// Bytes already in memory are handed out as slices of themselves, without
/// a copy.
impl ChunkSource for Bytes {
    fn next_chunk(&mut self, len: usize) -> Result<Bytes, ChunkReadError> {
        Ok(self.split_to(len.min(self.len())))
    }
}

/// A [`ChunkSource`] failed.
#[derive(Debug)]
pub struct ChunkReadError {
    /// Bytes of the failed chunk that were read before the failure.
    pub filled: usize,
    pub source: io::Error,
}

/// Any [`Read`] as a [`ChunkSource`]: each chunk is read into the spare
/// capacity of a new buffer (not zeroed first), retrying interrupted reads.
pub struct ReadChunks<R>(pub R);

impl<R: Read> ChunkSource for ReadChunks<R> {
    fn next_chunk(&mut self, len: usize) -> Result<Bytes, ChunkReadError> {
        let mut chunk = Vec::with_capacity(len);
        // On an error, what was read before it is in `chunk`.
        match self.0.by_ref().take(len as u64).read_to_end(&mut chunk) {
            Ok(_) => Ok(Bytes::from(chunk)),
            Err(source) => Err(ChunkReadError {
                filled: chunk.len(),
                source,
            }),
        }
    }
}

/// Chunks `source`, hands every block to `sink` (leaves before the nodes
/// that link them, the root last), and returns the root link and the
/// blob's size. Fails with [`BlobError::TooLarge`] as soon as more than
/// `size_limit_bytes` were read.
pub(crate) fn build<C, S>(
    mut source: C,
    params: ChunkerParams,
    size_limit_bytes: u64,
    sink: &mut S,
) -> Result<(Link, u64), BlobError>
where
    C: ChunkSource,
    S: FnMut(&Cid, Bytes) -> Result<(), BlobError>,
{
    let chunk_len = params.chunk_size_bytes() as usize;
    let mut dag = DagBuilder::new(params);
    let mut size_bytes: u64 = 0;
    loop {
        let chunk = source
            .next_chunk(chunk_len)
            .map_err(|err| BlobError::Read {
                read_bytes: size_bytes.saturating_add(err.filled as u64),
                source: err.source,
            })?;
        let filled = chunk.len();
        assert!(
            filled <= chunk_len,
            "a chunk source returned more than asked"
        );
        // The JS chunker emits one empty chunk for an empty file, and never
        // an empty chunk after a full one.
        if filled == 0 && dag.leaf_count() > 0 {
            break;
        }
        size_bytes = size_bytes
            .checked_add(filled as u64)
            .expect("a stream read in usize pieces stays below u64::MAX bytes here");
        if size_bytes > size_limit_bytes {
            return Err(BlobError::TooLarge {
                read_bytes: size_bytes,
                limit_bytes: size_limit_bytes,
            });
        }
        let cid = cid_of_block(CODEC_RAW, &chunk);
        sink(&cid, chunk)?;
        dag.push(
            0,
            Link {
                cid,
                tsize: filled as u64,
                file_size: filled as u64,
            },
            sink,
        )?;
        if filled < chunk_len {
            break;
        }
    }
    let root = dag.finish(sink)?;
    assert_eq!(root.file_size, size_bytes, "the DAG covers every byte read");
    Ok((root, size_bytes))
}

/// One level of the tree under construction.
struct Level {
    /// Links of the node being filled at this level.
    pending: Vec<Link>,
    /// Links ever added at this level; a level that received exactly one
    /// holds the root.
    count: u64,
}

/// The balanced layout, streamed. Level 0 receives leaves; a full level
/// becomes a node whose link goes one level up.
struct DagBuilder {
    links_per_node_max: usize,
    levels: Vec<Level>,
}

impl DagBuilder {
    fn new(params: ChunkerParams) -> Self {
        Self {
            links_per_node_max: params.links_per_node_max() as usize,
            levels: Vec::new(),
        }
    }

    fn leaf_count(&self) -> u64 {
        self.levels.first().map_or(0, |level| level.count)
    }

    /// # Panics
    ///
    /// If the tree would grow past [`DAG_DEPTH_MAX`] levels, which no `u64`
    /// size allows.
    fn push<S>(&mut self, level: usize, link: Link, sink: &mut S) -> Result<(), BlobError>
    where
        S: FnMut(&Cid, Bytes) -> Result<(), BlobError>,
    {
        if level == self.levels.len() {
            assert!(
                level < DAG_DEPTH_MAX,
                "a u64-sized blob fits {DAG_DEPTH_MAX} levels"
            );
            self.levels.push(Level {
                pending: Vec::with_capacity(self.links_per_node_max),
                count: 0,
            });
        }
        let current = &mut self.levels[level];
        current.pending.push(link);
        current.count += 1;
        if current.pending.len() == self.links_per_node_max {
            self.close_node(level, sink)?;
        }
        Ok(())
    }

    /// Makes a node of the pending links of `level` and links it one level
    /// up.
    fn close_node<S>(&mut self, level: usize, sink: &mut S) -> Result<(), BlobError>
    where
        S: FnMut(&Cid, Bytes) -> Result<(), BlobError>,
    {
        let (bytes, link) = encode_file_node(&self.levels[level].pending);
        self.levels[level].pending.clear();
        sink(&link.cid, Bytes::from(bytes))?;
        self.push(level + 1, link, sink)
    }

    /// Closes the partial nodes bottom-up until a level holds a single
    /// link, which is the root: as the JS layout, which stops when a list
    /// has one entry, and so returns a lone leaf as itself.
    ///
    /// # Panics
    ///
    /// If no leaf was pushed, or the levels break the shape `push` keeps.
    fn finish<S>(mut self, sink: &mut S) -> Result<Link, BlobError>
    where
        S: FnMut(&Cid, Bytes) -> Result<(), BlobError>,
    {
        assert!(
            self.leaf_count() > 0,
            "a blob has at least one (empty) chunk"
        );
        let mut level = 0;
        loop {
            let current = &self.levels[level];
            if current.count == 1 {
                // Links reach a level only through a node closed below it,
                // which needs two links there, so nothing is above.
                assert_eq!(level + 1, self.levels.len());
                assert_eq!(current.pending.len(), 1);
                return Ok(current.pending[0].clone());
            }
            if !current.pending.is_empty() {
                self.close_node(level, sink)?;
            }
            level += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PROFILE_UNIXFS_V1_2025;
    use crate::dag::{CODEC_DAG_PB, decode_file_node};

    fn params(chunk: u32, width: u32) -> ChunkerParams {
        ChunkerParams::new(chunk, width).expect("valid test params")
    }

    /// Builds a blob of `size` zero bytes, recording every block.
    fn blocks_of(size: usize, params: ChunkerParams) -> (Link, Vec<(Cid, Vec<u8>)>) {
        let mut blocks = Vec::new();
        let (root, built) = build(
            ReadChunks(&vec![0_u8; size][..]),
            params,
            u64::MAX,
            &mut |cid, bytes| {
                blocks.push((*cid, bytes.to_vec()));
                Ok(())
            },
        )
        .expect("in-memory build succeeds");
        assert_eq!(built, size as u64);
        (root, blocks)
    }

    #[test]
    fn one_chunk_is_its_own_raw_root() {
        for size in [0, 1, 16] {
            let (root, blocks) = blocks_of(size, params(16, 4));
            assert_eq!(root.cid.codec(), CODEC_RAW);
            assert_eq!(blocks.len(), 1);
            assert_eq!(blocks[0].0, root.cid);
        }
    }

    #[test]
    fn node_shapes_follow_the_balanced_layout() {
        // 4 leaves fit one node; 5 need two nodes and a root over them; 17
        // need 5 level-1 nodes, 2 level-2 nodes, and a root.
        for (size, nodes) in [(4, 1), (5, 3), (16, 5), (17, 8)] {
            let (root, blocks) = blocks_of(size, params(1, 4));
            let counted = blocks
                .iter()
                .filter(|(cid, _)| cid.codec() == CODEC_DAG_PB)
                .count();
            assert_eq!(counted, nodes, "size {size}");
            assert_eq!(blocks.last().map(|(cid, _)| *cid), Some(root.cid));
        }
        let (root, blocks) = blocks_of(17, params(1, 4));
        let root_bytes = &blocks.last().expect("root").1;
        let node = decode_file_node(&root.cid, root_bytes).expect("root decodes");
        assert_eq!(node.file_size, 17);
        assert_eq!(
            node.children
                .iter()
                .map(|(_, size)| *size)
                .collect::<Vec<_>>(),
            [16, 1]
        );
    }

    #[test]
    fn tsize_counts_every_block_of_the_subtree() {
        let (root, blocks) = blocks_of(100, params(8, 3));
        let total: usize = blocks.iter().map(|(_, bytes)| bytes.len()).sum();
        assert_eq!(root.tsize, total as u64);
    }

    /// Gives at most 1,000 bytes per read, as a pipe may.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(1_000).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn read_chunks_fill_until_full_or_the_end() {
        const LEN: usize = 1024 * 1024;
        let input: Vec<u8> = (0..LEN + 5).map(|i| (i % 251) as u8).collect();
        let mut source = ReadChunks(Trickle(&input));
        let first = source.next_chunk(LEN).expect("read");
        assert_eq!(first, &input[..LEN]);
        assert_eq!(source.next_chunk(LEN).expect("read"), &input[LEN..]);
        assert!(source.next_chunk(LEN).expect("read").is_empty());
    }

    #[test]
    fn bytes_in_memory_are_chunked_without_a_copy() {
        let input = Bytes::from((0..40_u8).collect::<Vec<_>>());
        let mut source = input.clone();
        let first = source.next_chunk(16).expect("in memory");
        assert_eq!(first, input[..16]);
        assert_eq!(first.as_ptr(), input.as_ptr(), "a slice of the input");
        assert_eq!(source.next_chunk(16).expect("in memory"), input[16..32]);
        assert_eq!(source.next_chunk(16).expect("in memory"), input[32..]);
        assert!(source.next_chunk(16).expect("in memory").is_empty());
        // And the same blob as when read.
        let from_bytes = build(input.clone(), params(16, 4), u64::MAX, &mut |_, _| Ok(()));
        let from_reader = build(
            ReadChunks(&input[..]),
            params(16, 4),
            u64::MAX,
            &mut |_, _| Ok(()),
        );
        assert_eq!(
            from_bytes.expect("built").0.cid,
            from_reader.expect("built").0.cid
        );
    }

    #[test]
    fn over_the_limit_stops_at_the_first_chunk_past_it() {
        let err = build(
            ReadChunks(&[7_u8; 40][..]),
            params(16, 4),
            20,
            &mut |_, _| Ok(()),
        )
        .expect_err("40 bytes are over a 20-byte limit");
        assert!(matches!(
            err,
            BlobError::TooLarge {
                read_bytes: 32,
                limit_bytes: 20
            }
        ));
        assert!(
            build(
                ReadChunks(&[7_u8; 20][..]),
                params(16, 4),
                20,
                &mut |_, _| Ok(())
            )
            .is_ok()
        );
    }

    #[test]
    fn interrupted_and_short_reads_do_not_move_chunk_boundaries() {
        struct Trickle {
            data: Vec<u8>,
            at: usize,
            interrupt: bool,
        }
        impl Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.interrupt = !self.interrupt;
                if self.interrupt {
                    return Err(io::ErrorKind::Interrupted.into());
                }
                let count = buf.len().min(3).min(self.data.len() - self.at);
                buf[..count].copy_from_slice(&self.data[self.at..self.at + count]);
                self.at += count;
                Ok(count)
            }
        }
        let data: Vec<u8> = (0..1000_u32).map(|i| (i % 251) as u8).collect();
        let trickle = Trickle {
            data: data.clone(),
            at: 0,
            interrupt: false,
        };
        let expected = cid_of_reader(&data[..], params(64, 4)).expect("slice reads");
        assert_eq!(
            cid_of_reader(trickle, params(64, 4)).expect("trickle reads"),
            expected
        );
    }

    #[test]
    fn a_failing_reader_is_reported_with_its_position() {
        let failing = (&[1_u8; 20][..]).chain(FailingRead);
        let err = cid_of_reader(failing, PROFILE_UNIXFS_V1_2025).expect_err("reader fails");
        assert!(matches!(err, BlobError::Read { read_bytes: 20, .. }));
    }

    struct FailingRead;

    impl Read for FailingRead {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk unplugged"))
        }
    }
}
