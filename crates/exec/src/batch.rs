//! Batches and proposals by reference: what binds a batch's transactions to
//! its digest, and a block's transactions to the batch slices a proposal
//! names.
//!
//! A validator forwards the transactions it admitted as a batch named by
//! [`batch_digest`]; the primary's pre-prepare carries a [`Proposal`]: the
//! block's header and, instead of the transactions, slices of batches. A
//! backup resolves the slices against the batches it holds (or fetches)
//! with [`assemble_block`] and checks the result like any block, so the
//! block that is executed, stored and served is byte for byte the block the
//! primary built.

use govchain_crypto::{Digest, DomainHasher};
use govchain_proto::consensus::v1::{BatchSlice, Proposal};
use govchain_proto::types::v1::{Block, BlockHeader, TransactionEnvelope};
use prost::Message as _;

use crate::block::block_hash;

/// The digest of a batch: its count, then each transaction's id and
/// signature in order. The id covers chain id, signer, nonce and payload,
/// so the digest covers every field of every envelope: two batches with
/// one digest hold the same envelopes in the same order.
pub fn batch_digest<'a>(
    transactions: impl ExactSizeIterator<Item = (&'a Digest, &'a [u8])>,
) -> Digest {
    let mut hasher = DomainHasher::new("govchain/batch/v1");
    hasher.u64(transactions.len() as u64);
    for (id, signature) in transactions {
        hasher.digest(id).bytes(signature);
    }
    hasher.finish()
}

/// Why a proposal's slices do not make a block.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AssembleError {
    #[error("proposal does not decode: {0}")]
    Malformed(String),
    #[error(
        "slice {index} of batch {batch} asks for transactions {first}..{end}, the batch has {len}"
    )]
    SliceOutOfRange {
        index: usize,
        batch: Digest,
        first: u64,
        end: u64,
        len: u64,
    },
}

/// A decoded proposal whose form was checked: the header decodes, every
/// slice names a 32-byte digest and at least one transaction, and the
/// slices add up to the header's transaction count.
#[derive(Clone, Debug)]
pub struct CheckedProposal {
    pub hash: Digest,
    pub header_bytes: Vec<u8>,
    pub header: BlockHeader,
    /// (batch digest, first, count), in block order.
    pub slices: Vec<(Digest, u32, u32)>,
}

impl CheckedProposal {
    /// The distinct batches the slices name, in order of first use.
    pub fn batches(&self) -> Vec<Digest> {
        let mut batches: Vec<Digest> = Vec::new();
        for (digest, _, _) in &self.slices {
            if !batches.contains(digest) {
                batches.push(*digest);
            }
        }
        batches
    }
}

/// Decodes and checks the form of an encoded [`Proposal`].
pub fn decode_proposal(encoded: &[u8]) -> Result<CheckedProposal, AssembleError> {
    let proposal =
        Proposal::decode(encoded).map_err(|err| AssembleError::Malformed(err.to_string()))?;
    let header = BlockHeader::decode(proposal.header.as_slice())
        .map_err(|err| AssembleError::Malformed(format!("header: {err}")))?;
    let mut total: u64 = 0;
    let mut slices = Vec::with_capacity(proposal.slices.len());
    for (index, slice) in proposal.slices.iter().enumerate() {
        let digest = Digest::from_slice(&slice.batch_digest).map_err(|err| {
            AssembleError::Malformed(format!("slice {index}: batch digest: {err}"))
        })?;
        if slice.count == 0 {
            return Err(AssembleError::Malformed(format!(
                "slice {index} names no transaction"
            )));
        }
        total += u64::from(slice.count);
        slices.push((digest, slice.first, slice.count));
    }
    if total != u64::from(header.transaction_count) {
        return Err(AssembleError::Malformed(format!(
            "slices name {total} transactions, the header counts {}",
            header.transaction_count
        )));
    }
    Ok(CheckedProposal {
        hash: block_hash(&proposal.header),
        header_bytes: proposal.header,
        header,
        slices,
    })
}

/// `Config::block_digest` for proposals: the hash of the header of a
/// well-formed proposal. The transactions are bound to it only once the
/// slices are resolved and the block is checked (its transaction root).
pub fn proposal_digest(encoded: &[u8]) -> Option<Digest> {
    decode_proposal(encoded).ok().map(|proposal| proposal.hash)
}

/// `Config::block_validators` for proposals: the validator set a delivered
/// block's header announces (`next_validators`), if any. The replica calls
/// it only on delivered blocks, whose header was checked against execution.
pub fn proposal_validators(encoded: &[u8]) -> Option<govchain_pbft::ValidatorSet> {
    let proposal = decode_proposal(encoded).ok()?;
    crate::governance::announced_set(&proposal.header.next_validators)?.ok()
}

/// Encodes a proposal for a block whose transactions are the given slices.
pub fn encode_proposal(header_bytes: Vec<u8>, slices: &[(Digest, u32, u32)]) -> Vec<u8> {
    Proposal {
        header: header_bytes,
        slices: slices
            .iter()
            .map(|(digest, first, count)| BatchSlice {
                batch_digest: digest.to_vec(),
                first: *first,
                count: *count,
            })
            .collect(),
    }
    .encode_to_vec()
}

/// Appends `(batch, index)` to `slices`, extending the last slice when the
/// transaction follows it in the same batch.
pub fn push_slice(slices: &mut Vec<(Digest, u32, u32)>, batch: Digest, index: u32) {
    if let Some((last, first, count)) = slices.last_mut()
        && *last == batch
        && u64::from(*first) + u64::from(*count) == u64::from(index)
    {
        *count += 1;
        return;
    }
    slices.push((batch, index, 1));
}

/// The block a proposal stands for: its header and the slices'
/// transactions, in order. `batch` gives a held batch's transactions; the
/// caller made sure every batch the proposal names is held.
///
/// # Panics
/// If `batch` has no batch the proposal names.
pub fn assemble_block<'a>(
    proposal: &CheckedProposal,
    batch: impl Fn(&Digest) -> Option<&'a [TransactionEnvelope]>,
) -> Result<Block, AssembleError> {
    let mut transactions = Vec::with_capacity(proposal.header.transaction_count as usize);
    for (index, (digest, first, count)) in proposal.slices.iter().enumerate() {
        let held = batch(digest).expect("the caller holds every batch the proposal names");
        let (start, end) = (u64::from(*first), u64::from(*first) + u64::from(*count));
        if end > held.len() as u64 {
            return Err(AssembleError::SliceOutOfRange {
                index,
                batch: *digest,
                first: start,
                end,
                len: held.len() as u64,
            });
        }
        transactions.extend_from_slice(&held[start as usize..end as usize]);
    }
    Ok(Block {
        header: proposal.header_bytes.clone(),
        transactions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(nonce: u64) -> TransactionEnvelope {
        TransactionEnvelope {
            payload: vec![1, 2, 3].into(),
            signer: vec![7; 32],
            signature: vec![nonce as u8; 64],
            chain_id: "test".into(),
            nonce,
        }
    }

    fn header(count: u32) -> Vec<u8> {
        BlockHeader {
            chain_id: "test".into(),
            height: 1,
            transaction_count: count,
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn the_digest_covers_ids_signatures_and_order() {
        let (a, b) = (Digest::sha256(b"a"), Digest::sha256(b"b"));
        let one = batch_digest([(&a, &[1u8; 64][..]), (&b, &[2u8; 64][..])].into_iter());
        let swapped = batch_digest([(&b, &[2u8; 64][..]), (&a, &[1u8; 64][..])].into_iter());
        let resigned = batch_digest([(&a, &[1u8; 64][..]), (&b, &[3u8; 64][..])].into_iter());
        let shorter = batch_digest([(&a, &[1u8; 64][..])].into_iter());
        assert_ne!(one, swapped);
        assert_ne!(one, resigned);
        assert_ne!(one, shorter);
        assert_eq!(
            one,
            batch_digest([(&a, &[1u8; 64][..]), (&b, &[2u8; 64][..])].into_iter())
        );
    }

    #[test]
    fn slices_merge_consecutive_transactions_of_one_batch() {
        let (a, b) = (Digest::sha256(b"a"), Digest::sha256(b"b"));
        let mut slices = Vec::new();
        for (batch, index) in [(a, 0), (a, 1), (a, 3), (b, 4), (b, 5), (a, 4)] {
            push_slice(&mut slices, batch, index);
        }
        assert_eq!(slices, vec![(a, 0, 2), (a, 3, 1), (b, 4, 2), (a, 4, 1)]);
    }

    #[test]
    fn a_proposal_assembles_the_block_it_names() {
        let batch_a: Vec<_> = (1..=4).map(envelope).collect();
        let batch_b: Vec<_> = (5..=6).map(envelope).collect();
        let (a, b) = (Digest::sha256(b"a"), Digest::sha256(b"b"));
        let encoded = encode_proposal(header(4), &[(a, 1, 2), (b, 0, 1), (a, 3, 1)]);
        let proposal = decode_proposal(&encoded).expect("well formed");
        assert_eq!(proposal_digest(&encoded), Some(block_hash(&header(4))));
        assert_eq!(proposal.batches(), vec![a, b]);
        let block = assemble_block(&proposal, |digest| {
            (*digest == a)
                .then_some(batch_a.as_slice())
                .or((*digest == b).then_some(batch_b.as_slice()))
        })
        .expect("assembles");
        let nonces: Vec<u64> = block.transactions.iter().map(|t| t.nonce).collect();
        assert_eq!(nonces, vec![2, 3, 5, 4]);
        assert_eq!(block.header, header(4));
    }

    #[test]
    fn malformed_proposals_are_refused() {
        let a = Digest::sha256(b"a");
        // Counts that do not add up to the header's.
        let short = encode_proposal(header(3), &[(a, 0, 2)]);
        assert!(
            matches!(decode_proposal(&short), Err(AssembleError::Malformed(m)) if m.contains("slices name 2 transactions, the header counts 3"))
        );
        assert_eq!(proposal_digest(&short), None);
        // An empty slice.
        let empty = encode_proposal(header(0), &[(a, 0, 0)]);
        assert!(
            matches!(decode_proposal(&empty), Err(AssembleError::Malformed(m)) if m.contains("names no transaction"))
        );
        // A slice past the end of its batch.
        let batch: Vec<_> = (1..=2).map(envelope).collect();
        let past = decode_proposal(&encode_proposal(header(2), &[(a, 1, 2)])).expect("form");
        assert_eq!(
            assemble_block(&past, |_| Some(batch.as_slice())),
            Err(AssembleError::SliceOutOfRange {
                index: 0,
                batch: a,
                first: 1,
                end: 3,
                len: 2
            })
        );
    }
}
