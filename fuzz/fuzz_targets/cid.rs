//! CIDs as clients and peers send them: text (a blob's name in requests and
//! on chain) and binary (links inside dag-pb nodes, store keys), parsed
//! with the exact `cid` version the blob store uses. Parsing never panics,
//! and a parsed CID's canonical forms are fixed points: the node accepts a
//! CID text only if it equals `to_string()` of what it parses to
//! (`crates/node/src/blobs.rs`, `parse_cid`), which is only sound if that
//! string parses back to the same CID and prints the same again.
#![no_main]

use govchain_blobstore::Cid;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cid) = Cid::try_from(data) {
        let bytes = cid.to_bytes();
        assert_eq!(Cid::try_from(bytes.as_slice()).ok(), Some(cid));
        let text = cid.to_string();
        assert_eq!(Cid::try_from(text.as_str()).ok(), Some(cid));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cid) = Cid::try_from(text) {
            let canonical = cid.to_string();
            let reparsed = Cid::try_from(canonical.as_str()).expect("a canonical CID parses");
            assert_eq!(reparsed, cid, "{text:?} -> {canonical:?}");
            assert_eq!(reparsed.to_string(), canonical);
            assert_eq!(Cid::try_from(cid.to_bytes().as_slice()).ok(), Some(cid));
        }
    }
});
