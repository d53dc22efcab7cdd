//! The query index: the keys the driver writes with each block ([`keys`])
//! and an audit derives again, which `ListAnchors` and `ListTransactions`
//! read (the `queries` module).
//!
//! Every key is `listing tag || what it lists by || height || index`
//! (integers big-endian, strings length-prefixed), so one listing is one
//! key prefix, its entries sort in chain order, and a page token is the
//! last key of the page before. Only anchors that took effect (SUCCESS) are
//! listed as anchors; a signer's listing holds every transaction it signed.

use govchain_exec::Departments;
use govchain_proto::types::v1::{
    CommittedBlock, Transaction, TransactionOutcome, transaction::Body,
};
use prost::Message as _;

const SIGNER: u8 = 1;
const DATASET: u8 = 2;
const DEPARTMENT: u8 = 3;
const RECORD: u8 = 4;
pub(crate) const TIME: u8 = 5;

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
pub(crate) fn position_of(key: &[u8]) -> Option<(u64, u32)> {
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
    pub(crate) fn prefix(&self) -> Vec<u8> {
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
        if let Some(department) = <&[u8; 32]>::try_from(envelope.signer.as_slice())
            .ok()
            .and_then(|key| departments.name_at_bytes(key, header.height))
        {
            keys.push(at(text_prefix(DEPARTMENT, &[department])));
        }
    }
    keys
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
