//! History and listings: the query index keys the driver writes with each
//! block ([`keys`]), and the reads behind `ListAnchors` and
//! `ListTransactions` ([`list`]).
//!
//! Every key is `listing tag || what it lists by || height || index`
//! (integers big-endian, strings length-prefixed), so one listing is one
//! key prefix, its entries sort in chain order, and a page token is the
//! last key of the page before. Only anchors that took effect (SUCCESS) are
//! listed as anchors; a signer's listing holds every transaction it signed.

use govchain_crypto::PublicKey;
use govchain_exec::Departments;
use govchain_proto::node::v1::{ChainPosition, CommittedTransaction};
use govchain_proto::types::v1::{
    CommittedBlock, Transaction, TransactionOutcome, transaction::Body,
};
use prost::Message as _;
use tonic::Status;

use crate::errors;
use crate::shared::Shared;

/// Entries one page holds at most, and when the request names no size.
pub const PAGE_SIZE_MAX: u32 = 1_000;
pub const PAGE_SIZE_DEFAULT: u32 = 100;
/// Encoded bytes of the entries of one page at most: a page ends early
/// rather than pass the 4 MiB a default gRPC client receives.
pub const PAGE_BYTES_MAX: usize = 3 * 1024 * 1024;
/// Stored block bytes one page reads and decodes at most: entries sit in
/// whole blocks, so a page of entries from a thousand large blocks would
/// otherwise decode gigabytes. A page ends early (with a token) past it.
pub const PAGE_READ_BYTES_MAX: usize = 64 * 1024 * 1024;

const SIGNER: u8 = 1;
const DATASET: u8 = 2;
const DEPARTMENT: u8 = 3;
const RECORD: u8 = 4;
const TIME: u8 = 5;

/// `tag || len(text) || text` for one listing of `text`.
fn text_prefix(tag: u8, text: &[&str]) -> Vec<u8> {
    let mut key = vec![tag];
    for part in text {
        key.extend_from_slice(&(part.len() as u32).to_be_bytes());
        key.extend_from_slice(part.as_bytes());
    }
    key
}

fn with_position(mut prefix: Vec<u8>, height: u64, index: u32) -> Vec<u8> {
    prefix.extend_from_slice(&height.to_be_bytes());
    prefix.extend_from_slice(&index.to_be_bytes());
    prefix
}

/// The listing a key belongs to ends 12 bytes before its end: the
/// position.
fn position_of(key: &[u8]) -> Option<(u64, u32)> {
    let tail = key.len().checked_sub(12)?;
    let height = u64::from_be_bytes(key[tail..tail + 8].try_into().ok()?);
    let index = u32::from_be_bytes(key[tail + 8..].try_into().ok()?);
    Some((height, index))
}

/// What one listing is of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    /// Every transaction `signer` signed.
    Signer([u8; 32]),
    /// Anchors in `dataset`.
    Dataset(String),
    /// Anchors signed with the department's key.
    Department(String),
    /// Every version of one record.
    Record { dataset: String, record_id: String },
    /// Anchors by block time, from `from_ms` (inclusive) to `to_ms`
    /// (exclusive).
    Time { from_ms: u64, to_ms: u64 },
}

impl Listing {
    fn prefix(&self) -> Vec<u8> {
        match self {
            Listing::Signer(key) => [&[SIGNER][..], key].concat(),
            Listing::Dataset(dataset) => text_prefix(DATASET, &[dataset]),
            Listing::Department(name) => text_prefix(DEPARTMENT, &[name]),
            Listing::Record { dataset, record_id } => text_prefix(RECORD, &[dataset, record_id]),
            Listing::Time { .. } => vec![TIME],
        }
    }
}

/// The query index keys of `block`. `departments` are the ones in force
/// at or after the block: a signer is named by the key it signed with then
/// (`Departments::name_at`), so an audit later derives the same keys.
pub fn keys(block: &CommittedBlock, departments: &Departments) -> Vec<Vec<u8>> {
    let header = block.header.clone().unwrap_or_default();
    let Some(body) = &block.block else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    for (index, envelope) in body.transactions.iter().enumerate() {
        let index = index as u32;
        let at = |prefix| with_position(prefix, header.height, index);
        if let Ok(signer) = <[u8; 32]>::try_from(envelope.signer.as_slice()) {
            keys.push(at([&[SIGNER][..], &signer].concat()));
        }
        let succeeded = block
            .results
            .get(index as usize)
            .is_some_and(|r| r.outcome() == TransactionOutcome::Success);
        let Some(Body::AnchorRecord(anchor)) = Transaction::decode(envelope.payload.as_ref())
            .ok()
            .and_then(|t| t.body)
        else {
            continue;
        };
        if !succeeded {
            continue;
        }
        keys.push(at(text_prefix(DATASET, &[&anchor.dataset])));
        keys.push(at(text_prefix(
            RECORD,
            &[&anchor.dataset, &anchor.record_id],
        )));
        let mut time = vec![TIME];
        time.extend_from_slice(&header.timestamp_ms.to_be_bytes());
        keys.push(at(time));
        if let Some(department) = PublicKey::from_slice(&envelope.signer)
            .ok()
            .and_then(|key| departments.name_at(&key, header.height))
        {
            keys.push(at(text_prefix(DEPARTMENT, &[department])));
        }
    }
    keys
}

/// One page of `listing`: the transactions, and the token of the next page
/// (empty after the last).
pub fn list(
    shared: &Shared,
    listing: &Listing,
    page_size: u32,
    page_token: &str,
) -> Result<(Vec<CommittedTransaction>, String), Status> {
    if page_size > PAGE_SIZE_MAX {
        return Err(errors::invalid_field(
            "page_size",
            format!("page_size {page_size} is above {PAGE_SIZE_MAX} (PAGE_SIZE_MAX)"),
        ));
    }
    let size = if page_size == 0 {
        PAGE_SIZE_DEFAULT
    } else {
        page_size
    } as usize;
    let prefix = listing.prefix();
    let after = if page_token.is_empty() {
        match listing {
            // Just before the first key at `from_ms`.
            Listing::Time { from_ms, .. } if *from_ms > 0 => {
                let mut start = vec![TIME];
                start.extend_from_slice(&(from_ms - 1).to_be_bytes());
                start.extend_from_slice(&[0xff; 12]);
                Some(start)
            }
            _ => None,
        }
    } else {
        let token = hex::decode(page_token).ok().filter(|t| {
            // A whole key of this listing; in a time range, not before it.
            let in_range = match listing {
                Listing::Time { from_ms, .. } => t
                    .get(1..9)
                    .and_then(|time| time.try_into().ok())
                    .is_some_and(|time| u64::from_be_bytes(time) >= *from_ms),
                _ => true,
            };
            t.starts_with(&prefix) && t.len() >= prefix.len() + 12 && in_range
        });
        Some(token.ok_or_else(|| {
            errors::invalid_field(
                "page_token",
                "page_token is not one this listing returned; pass next_page_token as it came, with the same request",
            )
        })?)
    };
    // One more than a page, to know whether another follows.
    let mut found = shared
        .ledger
        .query(&prefix, after.as_deref(), size + 1)
        .map_err(|e| crate::errors::internal("query index read failed", e))?;
    if let Listing::Time { to_ms, .. } = listing
        && *to_ms > 0
    {
        found.retain(|key| {
            key.get(1..9)
                .and_then(|t| t.try_into().ok())
                .is_some_and(|t| u64::from_be_bytes(t) < *to_ms)
        });
    }
    let mut transactions = Vec::with_capacity(found.len().min(size));
    let mut bytes = 0usize;
    let mut last_key: Option<&Vec<u8>> = None;
    let mut block: Option<CommittedBlock> = None;
    let mut read = 0usize;
    for key in found.iter().take(size) {
        let (height, index) = position_of(key)
            .ok_or_else(|| crate::errors::internal("query index key too short", key.len()))?;
        if block
            .as_ref()
            .and_then(|b| b.header.as_ref())
            .is_none_or(|h| h.height != height)
        {
            if !transactions.is_empty() && read >= PAGE_READ_BYTES_MAX {
                break;
            }
            let (next, stored) = committed_block(shared, height)?;
            read += stored;
            block = Some(next);
        }
        let Some(block) = &block else { continue };
        let entry = entry(block, index, &shared.departments())?;
        let size = entry.encoded_len();
        // The answer stays under what a default client receives.
        if !transactions.is_empty() && bytes + size > PAGE_BYTES_MAX {
            break;
        }
        bytes += size;
        transactions.push(entry);
        last_key = Some(key);
    }
    let more = found.len() > transactions.len();
    let next_page_token = match last_key {
        Some(key) if more => hex::encode(key),
        _ => String::new(),
    };
    Ok((transactions, next_page_token))
}

/// The block at `height`, and its stored size in bytes.
fn committed_block(shared: &Shared, height: u64) -> Result<(CommittedBlock, usize), Status> {
    let bytes = shared
        .ledger
        .block_by_height(height)
        .map_err(|e| crate::errors::internal("ledger read failed", e))?
        .ok_or_else(|| crate::errors::internal("indexed block missing", height))?;
    let block = CommittedBlock::decode(bytes.as_slice())
        .map_err(|e| crate::errors::internal("stored block does not decode", e))?;
    Ok((block, bytes.len()))
}

fn entry(
    block: &CommittedBlock,
    index: u32,
    departments: &Departments,
) -> Result<CommittedTransaction, Status> {
    let header = block.header.clone().unwrap_or_default();
    let envelope = block
        .block
        .as_ref()
        .and_then(|b| b.transactions.get(index as usize))
        .cloned()
        .ok_or_else(|| crate::errors::internal("indexed transaction missing", index))?;
    let body = Transaction::decode(envelope.payload.as_ref())
        .ok()
        .and_then(|t| t.body);
    let department = PublicKey::from_slice(&envelope.signer)
        .ok()
        .and_then(|key| departments.name_at(&key, header.height).map(str::to_owned))
        .unwrap_or_default();
    Ok(CommittedTransaction {
        position: Some(ChainPosition {
            height: header.height,
            index,
        }),
        transaction_id: govchain_exec::transaction_id(
            &envelope.chain_id,
            &envelope.signer,
            envelope.nonce,
            &envelope.payload,
        )
        .to_vec(),
        block_hash: block.block_hash.clone(),
        block_timestamp_ms: header.timestamp_ms,
        kind: body
            .as_ref()
            .map(govchain_exec::body_kind)
            .unwrap_or_default()
            .to_owned(),
        department,
        result: block.results.get(index as usize).cloned(),
        envelope: Some(envelope),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use govchain_crypto::SigningKey;
    use govchain_proto::types::v1::{
        AnchorRecord, Block, BlockHeader, TransactionEnvelope, TransactionResult,
    };

    use super::*;

    #[test]
    fn an_anchor_that_failed_is_in_its_signers_listing_only() {
        let key = SigningKey::from_seed([3; 32]);
        let envelope = TransactionEnvelope {
            payload: Transaction {
                body: Some(Body::AnchorRecord(AnchorRecord {
                    dataset: "d".into(),
                    record_id: "r".into(),
                    ..Default::default()
                })),
            }
            .encode_to_vec()
            .into(),
            signer: key.public_key().as_bytes().to_vec(),
            ..Default::default()
        };
        let block = |outcome: TransactionOutcome| CommittedBlock {
            header: Some(BlockHeader {
                height: 9,
                timestamp_ms: 1_000,
                ..Default::default()
            }),
            block: Some(Block {
                transactions: vec![envelope.clone()],
                ..Default::default()
            }),
            results: vec![TransactionResult {
                outcome: outcome.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let departments = Departments::new([]);
        let signer_key =
            with_position(Listing::Signer(*key.public_key().as_bytes()).prefix(), 9, 0);
        let failed = keys(&block(TransactionOutcome::Failed), &departments);
        assert_eq!(failed, vec![signer_key.clone()]);
        let succeeded = keys(&block(TransactionOutcome::Success), &departments);
        assert_eq!(succeeded.len(), 4, "signer, dataset, record, time");
        assert!(succeeded.contains(&signer_key));
        let record = Listing::Record {
            dataset: "d".into(),
            record_id: "r".into(),
        };
        assert!(succeeded.contains(&with_position(record.prefix(), 9, 0)));
    }

    #[test]
    fn a_listings_keys_share_its_prefix_and_sort_in_chain_order() {
        let listing = Listing::Dataset("health/visits".into());
        let prefix = listing.prefix();
        let keys: Vec<Vec<u8>> = [(3, 1), (3, 0), (12, 0), (4, 9)]
            .into_iter()
            .map(|(h, i)| with_position(prefix.clone(), h, i))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        let order: Vec<(u64, u32)> = sorted.iter().map(|k| position_of(k).unwrap()).collect();
        assert_eq!(order, [(3, 0), (3, 1), (4, 9), (12, 0)]);
        // A dataset that is a prefix of another has its own listing.
        let shorter = Listing::Dataset("health/visit".into()).prefix();
        assert!(!keys[0].starts_with(&shorter));
        // A record's listing is not confused by where the split falls.
        assert_ne!(
            Listing::Record {
                dataset: "ab".into(),
                record_id: "c".into()
            }
            .prefix(),
            Listing::Record {
                dataset: "a".into(),
                record_id: "bc".into()
            }
            .prefix()
        );
    }
}
