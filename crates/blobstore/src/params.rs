//! [`ChunkerParams`]: the two numbers that, with the fixed choices of the
//! profile (CIDv1, SHA-256, raw leaves, balanced layout), decide a blob's
//! CID.

use crate::error::BlobError;
use crate::{CHUNK_SIZE_BYTES_MAX, LINKS_PER_NODE_MAX, LINKS_PER_NODE_MIN};

/// How a blob is cut into chunks and how wide its DAG nodes are.
///
/// Invariant: `1 <= chunk_size_bytes <= CHUNK_SIZE_BYTES_MAX` and
/// `LINKS_PER_NODE_MIN <= links_per_node_max <= LINKS_PER_NODE_MAX`, checked
/// by [`ChunkerParams::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkerParams {
    chunk_size_bytes: u32,
    links_per_node_max: u32,
}

/// IPIP-499's `unixfs-v1-2025` profile: 1 MiB (1,048,576-byte) chunks and
/// at most 1024 links per node, as `ipfs-unixfs-importer` sets them for
/// `profile: 'unixfs-v1-2025'`.
pub const PROFILE_UNIXFS_V1_2025: ChunkerParams = ChunkerParams {
    chunk_size_bytes: 1_048_576,
    links_per_node_max: 1024,
};

const _: () = assert!(PROFILE_UNIXFS_V1_2025.chunk_size_bytes <= CHUNK_SIZE_BYTES_MAX);
const _: () = assert!(PROFILE_UNIXFS_V1_2025.links_per_node_max <= LINKS_PER_NODE_MAX);

impl ChunkerParams {
    /// Other parameters than the profile's give other CIDs than IPFS's
    /// defaults; they exist for tests (small chunks make deep trees cheap)
    /// and for matching other IPFS settings.
    pub fn new(chunk_size_bytes: u32, links_per_node_max: u32) -> Result<Self, BlobError> {
        if !(1..=CHUNK_SIZE_BYTES_MAX).contains(&chunk_size_bytes) {
            return Err(BlobError::InvalidParams {
                what: "chunk size in bytes",
                got: chunk_size_bytes,
                min: 1,
                max: CHUNK_SIZE_BYTES_MAX,
            });
        }
        if !(LINKS_PER_NODE_MIN..=LINKS_PER_NODE_MAX).contains(&links_per_node_max) {
            return Err(BlobError::InvalidParams {
                what: "links per node",
                got: links_per_node_max,
                min: LINKS_PER_NODE_MIN,
                max: LINKS_PER_NODE_MAX,
            });
        }
        Ok(Self {
            chunk_size_bytes,
            links_per_node_max,
        })
    }

    pub fn chunk_size_bytes(&self) -> u32 {
        self.chunk_size_bytes
    }

    pub fn links_per_node_max(&self) -> u32 {
        self.links_per_node_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_passes_its_own_checks() {
        let profile = ChunkerParams::new(1_048_576, 1024).expect("profile is valid");
        assert_eq!(profile, PROFILE_UNIXFS_V1_2025);
    }

    #[test]
    fn out_of_range_is_refused() {
        assert!(matches!(
            ChunkerParams::new(0, 4),
            Err(BlobError::InvalidParams { got: 0, min: 1, .. })
        ));
        assert!(ChunkerParams::new(CHUNK_SIZE_BYTES_MAX + 1, 4).is_err());
        assert!(matches!(
            ChunkerParams::new(16, 1),
            Err(BlobError::InvalidParams { got: 1, min: 2, .. })
        ));
        assert!(ChunkerParams::new(16, LINKS_PER_NODE_MAX + 1).is_err());
        assert!(ChunkerParams::new(1, 2).is_ok());
    }
}
