//! The sync path: a `CommittedBlock` as a validator serves it from
//! `ConsensusService.FetchBlocks`, decoded and checked as a node's sync
//! task checks it before handing it to the driver (hash, signatures and
//! transaction root of the content; height, parent link, commit certificate
//! against genesis). When the first byte is odd, the
//! input chooses the header, the signers and the damage instead, and the
//! verdict must equal the one computed here from those choices.
#![no_main]

use govchain_crypto::{Digest, merkle_root};
use govchain_exec::{BlockLimits, block_hash, check_fetched_block};
use govchain_fuzz::wire::{certificate_from_wire, certificate_to_wire};
use govchain_fuzz::{CHAIN_ID, VALIDATOR_COUNT, validator_key, validators};
use govchain_pbft::{CommitCertificate, commit_signing_bytes, verify_commit_certificate};
use govchain_proto::types::v1::{Block, BlockHeader, CommittedBlock};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

/// The height the fetching node asks for, and its head's hash.
const HEIGHT: u64 = 1;

fn parent() -> Digest {
    Digest::sha256(b"fuzz genesis")
}

/// The check of a fetched block, as `crates/node/src/sync.rs`
/// (`check_fetched`) makes it, with the same public functions (the sync
/// task is private to the node): [`check_fetched_block`] (the hash from the
/// header, every signature, the transaction root), then height, parent
/// link and the commit certificate against genesis.
fn verify_fetched(block: &CommittedBlock, height: u64, parent: &Digest) -> Result<Digest, String> {
    let body = block.block.as_ref().ok_or("no body")?;
    let (hash, header) =
        check_fetched_block(CHAIN_ID, &limits(), body).map_err(|e| e.to_string())?;
    assert_eq!(hash, block_hash(&body.header), "the hash is the header's");
    if header.height != height {
        return Err(format!("height {} for {height}", header.height));
    }
    if header.parent_hash != parent.as_bytes() {
        return Err("does not link to the head".into());
    }
    let certificate = block.certificate.as_ref().ok_or("no certificate")?;
    let certificate = certificate_from_wire(certificate)?;
    verify_commit_certificate(CHAIN_ID, &validators(), height, &hash, &certificate)
        .map_err(|e| e.to_string())?;
    Ok(hash)
}

fn limits() -> BlockLimits {
    BlockLimits {
        transactions_max: 100,
        bytes_max: 1 << 20,
        payload_bytes_max: 4096,
        genesis_departments: Default::default(),
    }
}

/// A block and certificate made from the input, and whether a correct
/// node must accept them.
fn structured(u: &mut Unstructured) -> Result<(CommittedBlock, bool)> {
    let height = if u.ratio(1, 8)? {
        u.arbitrary()?
    } else {
        HEIGHT
    };
    let links = !u.ratio(1, 8)?;
    // The block has no transactions: its root is the empty tree's, unless
    // the input damages it.
    let rooted = !u.ratio(1, 8)?;
    let header = BlockHeader {
        chain_id: CHAIN_ID.into(),
        height,
        parent_hash: if links {
            parent().to_vec()
        } else {
            u.bytes(32)?.to_vec()
        },
        transactions_root: if rooted {
            merkle_root(&[]).to_vec()
        } else {
            u.bytes(32)?.to_vec()
        },
        state_root: u.bytes(32)?.to_vec(),
        timestamp_ms: u.arbitrary()?,
        view: u.int_in_range(0..=7)?,
        proposer_index: u.int_in_range(0..=3)?,
        transaction_count: 0,
        next_validators: Vec::new(),
    };
    let header_bytes = header.encode_to_vec();
    let hash = block_hash(&header_bytes);
    let linked = links && header.parent_hash == parent().as_bytes();
    let view: u64 = u.int_in_range(0..=7)?;
    let certified_height = if u.ratio(1, 8)? {
        u.arbitrary()?
    } else {
        height
    };
    let certified_hash = if u.ratio(1, 8)? {
        Digest::sha256(u.bytes(4)?)
    } else {
        hash
    };
    // Signers in input order; each may be a repeat, out of range, signing
    // another view, or damaged.
    let mut signatures = Vec::new();
    let mut distinct = std::collections::BTreeSet::new();
    let mut all_good = true;
    for _ in 0..u.int_in_range(0..=6)? {
        let index: u32 = u.int_in_range(0..=VALIDATOR_COUNT)?;
        let signed_view = if u.ratio(1, 8)? { view + 1 } else { view };
        let key = validator_key(index);
        let message =
            commit_signing_bytes(CHAIN_ID, signed_view, certified_height, &certified_hash);
        let mut signature = key.sign(&message).to_bytes();
        let damaged = u.ratio(1, 8)?;
        if damaged {
            let bit = u.int_in_range(0..=511usize)?;
            signature[bit / 8] ^= 1 << (bit % 8);
        }
        all_good &=
            index < VALIDATOR_COUNT && signed_view == view && !damaged && distinct.insert(index);
        signatures.push((
            index,
            govchain_crypto::Signature::from_slice(&signature).expect("64 bytes"),
        ));
    }
    let certificate = CommitCertificate {
        seq: certified_height,
        view,
        digest: certified_hash,
        signatures,
    };
    let rooted = rooted || header.transactions_root == merkle_root(&[]).as_bytes();
    let accept = height == HEIGHT
        && rooted
        && linked
        && certified_height == HEIGHT
        && certified_hash == hash
        && all_good
        && distinct.len() >= 3;
    let block = CommittedBlock {
        block_hash: hash.to_vec(),
        header: Some(header),
        block: Some(Block {
            header: header_bytes,
            transactions: Vec::new(),
        }),
        certificate: Some(certificate_to_wire(&certificate)),
        results: Vec::new(),
    };
    Ok((block, accept))
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    if shape % 2 == 0 {
        if let Ok(block) = CommittedBlock::decode(rest) {
            let _ = verify_fetched(&block, HEIGHT, &parent());
        }
        return;
    }
    let mut u = Unstructured::new(rest);
    let Ok((block, accept)) = structured(&mut u) else {
        return;
    };
    let verdict = verify_fetched(&block, HEIGHT, &parent());
    assert_eq!(verdict.is_ok(), accept, "{verdict:?}");
    // As it travels: encoded, decoded, the same verdict.
    let mut bytes = block.encode_to_vec();
    let decoded = CommittedBlock::decode(bytes.as_slice()).expect("our own encoding decodes");
    assert_eq!(verify_fetched(&decoded, HEIGHT, &parent()).is_ok(), accept);
    // One byte changed in transit: any verdict, but no panic.
    if let Ok(position) = u.choose_index(bytes.len()) {
        bytes[position] ^= u.arbitrary::<u8>().unwrap_or(1).max(1);
        if let Ok(changed) = CommittedBlock::decode(bytes.as_slice()) {
            let _ = verify_fetched(&changed, HEIGHT, &parent());
        }
    }
});
