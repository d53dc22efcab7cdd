//! The CIDs that IPFS's JavaScript importer computes, checked against
//! `cid_of_reader` and `BlobStore::put`.
//!
//! Every vector is for a file whose byte i is `i % 251`. They were produced
//! with `ipfs-unixfs-importer` 17.1.1 (`npm install ipfs-unixfs-importer@17
//! blockstore-core@7 multiformats@14`) by
//! `GOVCHAIN_IPFS_REFERENCE_DIR=/tmp/ipfsref bash
//! crates/blobstore/tests/reference/ipfs-cid-vectors.sh`, which writes each
//! file and runs `node tests/reference/ipfs-cid.mjs FILE` for the profile,
//! or `node tests/reference/ipfs-cid.mjs FILE CHUNK_BYTES MAX_LINKS` for
//! other params. Its output lines are `SIZE [CHUNK_BYTES MAX_LINKS] CID`,
//! the rows below.

mod common;

use common::{Pattern, params};
use govchain_blobstore::{BlobStore, ChunkerParams, PROFILE_UNIXFS_V1_2025, cid_of_reader};

const MIB: u64 = 1024 * 1024;

/// `node ipfs-cid.mjs FILE` (profile `unixfs-v1-2025`).
const PROFILE_VECTORS: &[(u64, &str)] = &[
    (
        0,
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
    ),
    (
        1,
        "bafkreidogqfzz75tpkmjzjke425xqcrmpcib2p5tg44hnbirumdbpl5adu",
    ),
    (
        100,
        "bafkreif44cx7dhhvvjvhi2ndbvq5atsdo3slx5rycbjo5ht7gojfzfknki",
    ),
    // Exactly one chunk: still a single raw leaf.
    (
        MIB,
        "bafkreidddocae7lltzjlkooe5a3tmiwsgazn7logjvqk7bzttsidpzhxne",
    ),
    // One byte more: a dag-pb node over two leaves.
    (
        MIB + 1,
        "bafybeidjogjfwuhbzwopgd4bn3skcf5m6oz72xshywcndzxgqb623nfclu",
    ),
    (
        3 * MIB,
        "bafybeihzpjrbcpjpzcx4yxh3hasnjidsikmwmsrli7hhamhny5iueulu5a",
    ),
    (
        5 * MIB,
        "bafybeif3cqzr34eco3pr3jiypjq5j5ine35czekpyoa6q5uvwecywczeem",
    ),
];

/// `node ipfs-cid.mjs FILE CHUNK_BYTES MAX_LINKS`.
const PARAM_VECTORS: &[(u64, u32, u32, &str)] = &[
    // 1 KiB chunks, 174 links: 1024 leaves under 6 nodes under a root.
    (
        MIB,
        1024,
        174,
        "bafybeie7zq6jyhpvcf44qger6hrskuuqjn424ikhsjvhk2xrmlg4evauee",
    ),
    // One full node of 174 one-byte leaves, then one leaf more.
    (
        174,
        1,
        174,
        "bafybeidlzvjwgufajwqsgrxxelmrmpuaglu2aql3kppzt2r2bfj4jiuriy",
    ),
    (
        175,
        1,
        174,
        "bafybeiblelyoch766vusr4mm7tbkrnzzt4jjv3m3cvlvf7w4d53ktylb6q",
    ),
    (
        0,
        16,
        4,
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
    ),
    (
        16,
        16,
        4,
        "bafkreif6ixfsmbn7g27l3zueqqncr4h5ipdjqufd3ts75w5gteuo4oujse",
    ),
    // Four leaves: one full node.
    (
        64,
        16,
        4,
        "bafybeia3js4mxxkyappgnq5klhpvoci7g2nib2hjqkjymkmfecaby4dmnq",
    ),
    // Five leaves: two nodes, a root over them.
    (
        65,
        16,
        4,
        "bafybeieixyuxszinqsy4zudruq5y3iplxpijuiql567ljvhxbduftqythy",
    ),
    // 63 leaves: four levels with partial nodes on the right.
    (
        1000,
        16,
        4,
        "bafybeid6iwdeknlg7t7bnf53g2i5f6oi5or7abxuiaa4fobxq25z77wlxe",
    ),
    // 65 leaves: a fifth level whose right spine is one-link nodes.
    (
        1025,
        16,
        4,
        "bafybeiekazt3ytlmpcnchykm3cne6chbewtlxxkfqh24cbplsbd5kmnmoa",
    ),
];

/// The profile at its width (`node ipfs-cid.mjs FILE`; for 1025 MiB,
/// `node ipfs-cid.mjs FILE 1048576 1024` gives the same CID, which is how
/// the width 1024 was confirmed against the importer): 1024 chunks fill
/// one node, 1025 need two levels.
const WIDTH_VECTORS: &[(u64, &str)] = &[
    (
        1024 * MIB,
        "bafybeicwzrjcl3bf6vaai6cmvhdkgwnyezzlwmdqp3fnu33im55ssch6ve",
    ),
    (
        1025 * MIB,
        "bafybeicevx54zowztjg75fexgkv5kprbdygw4tyxqjb37e7jkzgdceopcy",
    ),
];

fn cid_string(size: u64, params: ChunkerParams) -> String {
    cid_of_reader(Pattern::new(size), params)
        .expect("a generated pattern reads")
        .to_string()
}

#[test]
fn profile_vectors_match_the_reference() {
    for (size, expected) in PROFILE_VECTORS {
        assert_eq!(
            cid_string(*size, PROFILE_UNIXFS_V1_2025),
            *expected,
            "{size} bytes"
        );
    }
}

#[test]
fn param_vectors_match_the_reference() {
    for (size, chunk, width, expected) in PARAM_VECTORS {
        assert_eq!(
            cid_string(*size, params(*chunk, *width)),
            *expected,
            "{size} bytes in {chunk}-byte chunks, {width} links per node"
        );
    }
}

#[test]
fn profile_width_vectors_match_the_reference() {
    for (size, expected) in WIDTH_VECTORS {
        assert_eq!(
            cid_string(*size, PROFILE_UNIXFS_V1_2025),
            *expected,
            "{size} bytes"
        );
    }
    assert_eq!(
        cid_string(1025 * MIB, params(1_048_576, 1024)),
        WIDTH_VECTORS[1].1
    );
}

#[test]
fn ipip_499_small_file_fixture() {
    // IPIP-499's `unixfs-v1-2025` fixture: `hello world`, a raw leaf.
    assert_eq!(
        cid_of_reader(&b"hello world"[..], PROFILE_UNIXFS_V1_2025)
            .expect("reads")
            .to_string(),
        "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    );
}

#[test]
fn put_gives_the_reference_cids() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = BlobStore::open(dir.path()).expect("store opens");
    for (size, expected) in PROFILE_VECTORS {
        let info = store
            .put(Pattern::new(*size), 8 * MIB)
            .expect("put succeeds");
        assert_eq!(info.cid.to_string(), *expected, "{size} bytes");
        assert_eq!(info.size_bytes, *size);
    }
    drop(store);

    let (size, chunk, width, expected) = PARAM_VECTORS[0];
    let dir = tempfile::tempdir().expect("temp dir");
    let store = BlobStore::open_with_params(dir.path(), params(chunk, width)).expect("store opens");
    let info = store.put(Pattern::new(size), size).expect("put succeeds");
    assert_eq!(info.cid.to_string(), expected);
    let counts = store.counts().expect("counts");
    // Chunk k starts at phase 1024k mod 251 of the pattern and 1024 mod 251
    // is prime to 251, so the 1024 chunks take exactly 251 distinct values,
    // each stored once. Nodes: 6 on the first level and the root.
    assert_eq!((counts.chunks, counts.nodes), (251, 7));
}
