//! The on-disk layout: table definitions and record encodings.
//!
//! Keys are CIDs in their binary form (`Cid::to_bytes`). Integers are
//! fixed-width big-endian. Decoders treat the bytes as untrusted input and
//! return [`BlobError::BadRecord`] instead of panicking.
//!
//! Blocks are split by codec: raw leaves in [`CHUNKS`] (in pieces, see
//! `chunks`), dag-pb nodes in [`NODES`]. [`BLOCKS`] lists every key of both with its value's length,
//! so that garbage collection and counting scan small records instead of
//! reading every chunk's bytes. The three are written together in every
//! transaction that adds or removes a block.

use redb::TableDefinition;

use crate::ChunkerParams;
use crate::error::BlobError;

/// Bumped whenever a table or a record encoding changes; `open` refuses
/// any other version rather than misreading it.
///
/// Version 2 stores raw chunks in pieces (see `chunks`).
pub(crate) const FORMAT_VERSION: u64 = 2;

/// Raw leaf CID ‖ piece index (one byte) -> that piece of the chunk's
/// bytes (see `chunks`).
pub(crate) const CHUNKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("chunk_pieces");

/// dag-pb node CID -> the node's canonical bytes.
pub(crate) const NODES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("nodes");

/// Every block CID (in [`CHUNKS`] or [`NODES`]) -> its length in bytes
/// (`u32` big-endian).
pub(crate) const BLOCKS: TableDefinition<&[u8], [u8; 4]> = TableDefinition::new("blocks");

/// Blob root CID -> [`RootRecord`].
pub(crate) const ROOTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("roots");

/// The CIDs one garbage collection found reachable. Created, filled and
/// deleted inside the collection's write transaction, so it is never
/// committed.
pub(crate) const GC_MARKS: TableDefinition<&[u8], ()> = TableDefinition::new("gc_marks");

/// Identity of the store; keys are the `META_*` constants.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

pub(crate) const META_FORMAT_VERSION: &str = "format_version";
/// `chunk_size_bytes ‖ links_per_node_max`, both `u32` big-endian.
pub(crate) const META_PARAMS: &str = "chunker_params";

/// A recorded blob: its size and how many pins hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RootRecord {
    pub(crate) size_bytes: u64,
    pub(crate) pins: u32,
}

/// `size_bytes ‖ pins`.
pub(crate) const ROOT_RECORD_BYTES: usize = 8 + 4;

impl RootRecord {
    pub(crate) fn encode(&self) -> [u8; ROOT_RECORD_BYTES] {
        let mut bytes = [0; ROOT_RECORD_BYTES];
        bytes[..8].copy_from_slice(&self.size_bytes.to_be_bytes());
        bytes[8..].copy_from_slice(&self.pins.to_be_bytes());
        bytes
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, BlobError> {
        let (size, pins) = split_exact::<8, 4>("roots", bytes)?;
        Ok(Self {
            size_bytes: u64::from_be_bytes(size),
            pins: u32::from_be_bytes(pins),
        })
    }
}

pub(crate) fn encode_u64(value: u64) -> [u8; 8] {
    value.to_be_bytes()
}

pub(crate) fn decode_u64(table: &'static str, bytes: &[u8]) -> Result<u64, BlobError> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| BlobError::BadRecord {
        table,
        got: bytes.len(),
        expected: 8,
    })?;
    Ok(u64::from_be_bytes(bytes))
}

pub(crate) fn encode_params(params: &ChunkerParams) -> [u8; 8] {
    let mut bytes = [0; 8];
    bytes[..4].copy_from_slice(&params.chunk_size_bytes().to_be_bytes());
    bytes[4..].copy_from_slice(&params.links_per_node_max().to_be_bytes());
    bytes
}

/// Decodes and re-validates stored params: a damaged record must not
/// produce params that [`ChunkerParams::new`] would refuse.
pub(crate) fn decode_params(bytes: &[u8]) -> Result<ChunkerParams, BlobError> {
    let (chunk, width) = split_exact::<4, 4>("meta.chunker_params", bytes)?;
    ChunkerParams::new(u32::from_be_bytes(chunk), u32::from_be_bytes(width))
}

/// A block length as stored in [`BLOCKS`].
///
/// # Panics
///
/// If `len` does not fit `u32`; blocks are at most a chunk or a node,
/// both far below 4 GiB.
pub(crate) fn encode_block_len(len: usize) -> [u8; 4] {
    u32::try_from(len)
        .expect("a block is at most CHUNK_SIZE_BYTES_MAX bytes")
        .to_be_bytes()
}

pub(crate) fn decode_block_len(bytes: [u8; 4]) -> u64 {
    u64::from(u32::from_be_bytes(bytes))
}

/// Splits `bytes` into exactly `A + B` bytes.
fn split_exact<const A: usize, const B: usize>(
    table: &'static str,
    bytes: &[u8],
) -> Result<([u8; A], [u8; B]), BlobError> {
    let bad = || BlobError::BadRecord {
        table,
        got: bytes.len(),
        expected: A + B,
    };
    if bytes.len() != A + B {
        return Err(bad());
    }
    let (head, tail) = bytes.split_at(A);
    Ok((
        head.try_into().map_err(|_| bad())?,
        tail.try_into().map_err(|_| bad())?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PROFILE_UNIXFS_V1_2025;

    #[test]
    fn root_record_round_trip() {
        let record = RootRecord {
            size_bytes: 0x0102_0304_0506_0708,
            pins: 0x0a0b_0c0d,
        };
        let bytes = record.encode();
        assert_eq!(&bytes[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&bytes[8..], &[0x0a, 0x0b, 0x0c, 0x0d]);
        assert_eq!(RootRecord::decode(&bytes).expect("decodes"), record);
    }

    #[test]
    fn params_round_trip() {
        let bytes = encode_params(&PROFILE_UNIXFS_V1_2025);
        assert_eq!(bytes, [0, 0x10, 0, 0, 0, 0, 0x04, 0]);
        assert_eq!(
            decode_params(&bytes).expect("decodes"),
            PROFILE_UNIXFS_V1_2025
        );
        // Decoded params are checked like new ones.
        assert!(decode_params(&[0, 0, 0, 0, 0, 0, 0, 4]).is_err());
    }

    #[test]
    fn wrong_lengths_are_bad_records() {
        assert!(matches!(
            RootRecord::decode(&[0; 11]),
            Err(BlobError::BadRecord {
                table: "roots",
                got: 11,
                expected: 12
            })
        ));
        assert!(decode_u64("meta", &[0; 9]).is_err());
        assert!(decode_params(&[0; 7]).is_err());
        assert_eq!(decode_u64("meta", &encode_u64(77)).expect("decodes"), 77);
        assert_eq!(decode_block_len(encode_block_len(1 << 20)), 1 << 20);
    }
}
