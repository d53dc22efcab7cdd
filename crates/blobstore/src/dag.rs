//! Blocks and their CIDs: raw leaves, and dag-pb nodes carrying UnixFS
//! `File` data, encoded byte for byte as IPFS encodes them.
//!
//! The protobuf messages are written by hand from the dag-pb spec
//! (<https://ipld.io/specs/codecs/dag-pb/spec/>) and the UnixFS spec
//! (<https://specs.ipfs.tech/unixfs/>), keeping only the fields a file
//! node uses. Two details decide the bytes, and so the CID:
//! - dag-pb's canonical form writes `Links` (field 2) before `Data`
//!   (field 1). prost writes fields in tag order, so [`encode_file_node`]
//!   encodes the two parts separately and concatenates them.
//! - Every link carries `Name` (empty) and `Tsize`; an absent name and an
//!   empty one encode differently, so both are `Option`s set to `Some`.

use cid::Cid;
use cid::multihash::Multihash;
use prost::Message;
use sha2::{Digest as _, Sha256};

use crate::error::BlobError;
use crate::{DAG_DEPTH_MAX, LINKS_PER_NODE_MAX};

/// Multicodec `raw`: a leaf holds the chunk's bytes as they are.
pub(crate) const CODEC_RAW: u64 = 0x55;
/// Multicodec `dag-pb`: an interior node of the file's DAG.
pub(crate) const CODEC_DAG_PB: u64 = 0x70;
/// Multihash `sha2-256`.
const MULTIHASH_SHA2_256: u64 = 0x12;

/// `PBLink` of the dag-pb spec.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct PbLink {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub(crate) hash: Option<Vec<u8>>,
    #[prost(string, optional, tag = "2")]
    pub(crate) name: Option<String>,
    #[prost(uint64, optional, tag = "3")]
    pub(crate) tsize: Option<u64>,
}

/// `PBNode` of the dag-pb spec. Decoding accepts any field order; encoding
/// goes through [`encode_file_node`] for the canonical order.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct PbNode {
    #[prost(message, repeated, tag = "2")]
    pub(crate) links: Vec<PbLink>,
    #[prost(bytes = "vec", optional, tag = "1")]
    pub(crate) data: Option<Vec<u8>>,
}

/// UnixFS `Data.DataType`; only `File` is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub(crate) enum DataType {
    Raw = 0,
    Directory = 1,
    File = 2,
    Metadata = 3,
    Symlink = 4,
    HamtShard = 5,
}

/// UnixFS `Data` (proto2), without the fields a file node never sets here
/// (`hashType`, `fanout`, `mode`, `mtime`; decoding skips them).
/// `blocksizes` is unpacked, as proto2 repeated fields are by default.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct UnixFsData {
    #[prost(enumeration = "DataType", required, tag = "1")]
    pub(crate) r#type: i32,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub(crate) data: Option<Vec<u8>>,
    #[prost(uint64, optional, tag = "3")]
    pub(crate) filesize: Option<u64>,
    #[prost(uint64, repeated, packed = "false", tag = "4")]
    pub(crate) blocksizes: Vec<u64>,
}

/// A child of a node as the builder knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    pub(crate) cid: Cid,
    /// `Tsize`: the bytes of every block of the child's subtree, as the JS
    /// importer counts them (a node's own bytes plus its links' `Tsize`).
    pub(crate) tsize: u64,
    /// The file bytes under the child: its entry in `blocksizes`.
    pub(crate) file_size: u64,
}

/// A verified file node, reduced to what reads and garbage collection need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FileNode {
    pub(crate) file_size: u64,
    /// Each child and the file bytes under it, in file order.
    pub(crate) children: Vec<(Cid, u64)>,
}

/// The CIDv1 of `bytes` under `codec`, with SHA-256.
pub(crate) fn cid_of_block(codec: u64, bytes: &[u8]) -> Cid {
    let digest = Sha256::digest(bytes);
    let hash = Multihash::wrap(MULTIHASH_SHA2_256, &digest)
        .expect("a 32-byte SHA-256 digest fits a 64-byte multihash");
    Cid::new_v1(codec, hash)
}

/// Checks that `bytes`, as read from disk, hash to `cid`.
pub(crate) fn verify_block(cid: &Cid, bytes: &[u8]) -> Result<(), BlobError> {
    if cid_of_block(cid.codec(), bytes) == *cid {
        Ok(())
    } else {
        Err(BlobError::Corrupt { cid: *cid })
    }
}

/// The canonical dag-pb bytes of a UnixFS `File` node over `links`, and the
/// link to it.
///
/// # Panics
///
/// If `links` is empty or wider than [`LINKS_PER_NODE_MAX`], or a sum of
/// sizes overflows `u64` (the builder never asks for such a node).
pub(crate) fn encode_file_node(links: &[Link]) -> (Vec<u8>, Link) {
    assert!(!links.is_empty(), "a file node has at least one child");
    assert!(links.len() <= LINKS_PER_NODE_MAX as usize);
    let file_size = links
        .iter()
        .try_fold(0_u64, |sum, link| sum.checked_add(link.file_size))
        .expect("a file's size fits u64");
    let data = UnixFsData {
        r#type: DataType::File as i32,
        data: None,
        filesize: Some(file_size),
        blocksizes: links.iter().map(|link| link.file_size).collect(),
    };
    let links_part = PbNode {
        links: links
            .iter()
            .map(|link| PbLink {
                hash: Some(link.cid.to_bytes()),
                name: Some(String::new()),
                tsize: Some(link.tsize),
            })
            .collect(),
        data: None,
    };
    let data_part = PbNode {
        links: Vec::new(),
        data: Some(data.encode_to_vec()),
    };
    let mut bytes = links_part.encode_to_vec();
    data_part.encode(&mut bytes).expect("a Vec grows as needed");
    let tsize = links
        .iter()
        .try_fold(bytes.len() as u64, |sum, link| sum.checked_add(link.tsize))
        .expect("a file's total block size fits u64");
    let cid = cid_of_block(CODEC_DAG_PB, &bytes);
    let link = Link {
        cid,
        tsize,
        file_size,
    };
    (bytes, link)
}

/// Decodes a node that [`verify_block`] accepted. Hashing proves the bytes
/// are the ones the CID names, not that they are a file node this store
/// can read, so the structure is checked here.
pub(crate) fn decode_file_node(cid: &Cid, bytes: &[u8]) -> Result<FileNode, BlobError> {
    let malformed = |reason: String| BlobError::Malformed { cid: *cid, reason };
    let node = PbNode::decode(bytes).map_err(|err| malformed(format!("dag-pb: {err}")))?;
    let data = node
        .data
        .ok_or_else(|| malformed("no UnixFS data".to_owned()))?;
    let data =
        UnixFsData::decode(data.as_slice()).map_err(|err| malformed(format!("UnixFS: {err}")))?;
    if data.r#type != DataType::File as i32 {
        return Err(malformed(format!(
            "UnixFS type {} is not File ({})",
            data.r#type,
            DataType::File as i32
        )));
    }
    if data.data.is_some() {
        return Err(malformed(
            "inline file data is not written by this store".to_owned(),
        ));
    }
    if node.links.is_empty() || node.links.len() > LINKS_PER_NODE_MAX as usize {
        return Err(malformed(format!(
            "{} links, expected 1 to {LINKS_PER_NODE_MAX}",
            node.links.len()
        )));
    }
    if node.links.len() != data.blocksizes.len() {
        return Err(malformed(format!(
            "{} links but {} blocksizes",
            node.links.len(),
            data.blocksizes.len()
        )));
    }
    let file_size = data
        .blocksizes
        .iter()
        .try_fold(0_u64, |sum, size| sum.checked_add(*size))
        .ok_or_else(|| malformed("blocksizes overflow u64".to_owned()))?;
    if data.filesize != Some(file_size) {
        return Err(malformed(format!(
            "filesize {:?} differs from the sum of blocksizes {file_size}",
            data.filesize
        )));
    }
    let mut children = Vec::with_capacity(node.links.len());
    for (link, size) in node.links.iter().zip(&data.blocksizes) {
        let child = link
            .hash
            .as_deref()
            .ok_or_else(|| malformed("a link has no hash".to_owned()))
            .and_then(|hash| {
                Cid::try_from(hash).map_err(|err| malformed(format!("link CID: {err}")))
            })?;
        if child.codec() != CODEC_RAW && child.codec() != CODEC_DAG_PB {
            return Err(malformed(format!(
                "link {child} has codec {:#x}, expected raw or dag-pb",
                child.codec()
            )));
        }
        children.push((child, *size));
    }
    Ok(FileNode {
        file_size,
        children,
    })
}

/// Checks a decoded node against what its parent said about it: its size
/// and its depth in the DAG.
pub(crate) fn check_child_node(
    cid: &Cid,
    node: &FileNode,
    expected_file_size: u64,
    depth: usize,
) -> Result<(), BlobError> {
    if node.file_size != expected_file_size {
        return Err(BlobError::Malformed {
            cid: *cid,
            reason: format!(
                "holds {} file bytes, its parent says {expected_file_size}",
                node.file_size
            ),
        });
    }
    if depth >= DAG_DEPTH_MAX {
        return Err(BlobError::Malformed {
            cid: *cid,
            reason: format!("at depth {depth}, the deepest DAG read is {DAG_DEPTH_MAX}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(bytes: &[u8]) -> Link {
        Link {
            cid: cid_of_block(CODEC_RAW, bytes),
            tsize: bytes.len() as u64,
            file_size: bytes.len() as u64,
        }
    }

    #[test]
    fn empty_raw_block_has_the_known_cid() {
        assert_eq!(
            cid_of_block(CODEC_RAW, b"").to_string(),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
        // IPIP-499's `unixfs-v1-2025` fixture for a small file.
        assert_eq!(
            cid_of_block(CODEC_RAW, b"hello world").to_string(),
            "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
        );
    }

    #[test]
    fn node_bytes_are_in_canonical_order() {
        let links = [leaf(b"abc"), leaf(b"de")];
        let (bytes, link) = encode_file_node(&links);
        let cid0 = links[0].cid.to_bytes();
        let cid1 = links[1].cid.to_bytes();
        assert_eq!(cid0.len(), 36);
        let mut expected = Vec::new();
        for (cid, tsize) in [(&cid0, 3_u8), (&cid1, 2)] {
            // Links (field 2): Hash (field 1), empty Name (field 2), Tsize
            // (field 3).
            expected.extend_from_slice(&[0x12, 2 + 36 + 2 + 2, 0x0a, 36]);
            expected.extend_from_slice(cid);
            expected.extend_from_slice(&[0x12, 0x00, 0x18, tsize]);
        }
        // Data (field 1) last: Type File, filesize 5, blocksizes 3 and 2.
        expected.extend_from_slice(&[0x0a, 8, 0x08, 0x02, 0x18, 0x05, 0x20, 0x03, 0x20, 0x02]);
        assert_eq!(bytes, expected);
        assert_eq!(link.file_size, 5);
        assert_eq!(link.tsize, bytes.len() as u64 + 5);
        assert_eq!(link.cid, cid_of_block(CODEC_DAG_PB, &bytes));
    }

    #[test]
    fn node_round_trip() {
        let links = [leaf(b"x"), leaf(b"yz"), leaf(b"")];
        let (bytes, link) = encode_file_node(&links[..2]);
        let node = decode_file_node(&link.cid, &bytes).expect("own node decodes");
        assert_eq!(node.file_size, 3);
        assert_eq!(node.children, vec![(links[0].cid, 1), (links[1].cid, 2)]);
        assert!(verify_block(&link.cid, &bytes).is_ok());
    }

    #[test]
    fn tampered_blocks_are_refused() {
        let (mut bytes, link) = encode_file_node(&[leaf(b"chunk")]);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            verify_block(&link.cid, &bytes),
            Err(BlobError::Corrupt { cid }) if cid == link.cid
        ));
        // A node that hashes right but lies about its sizes.
        let data = UnixFsData {
            r#type: DataType::File as i32,
            data: None,
            filesize: Some(9),
            blocksizes: vec![5],
        };
        let node = PbNode {
            links: vec![PbLink {
                hash: Some(leaf(b"chunk").cid.to_bytes()),
                name: Some(String::new()),
                tsize: Some(5),
            }],
            data: Some(data.encode_to_vec()),
        };
        let bytes = node.encode_to_vec();
        let cid = cid_of_block(CODEC_DAG_PB, &bytes);
        assert!(matches!(
            decode_file_node(&cid, &bytes),
            Err(BlobError::Malformed { .. })
        ));
    }
}
