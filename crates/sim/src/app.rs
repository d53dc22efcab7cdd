//! The simulated application: blocks that name their height and parent, so
//! that a backup can check a proposal against its own delivered chain.

use bytes::Bytes;
use govchain_crypto::Digest;
use govchain_pbft::{ReplicaIndex, SequenceNumber, ValidatorSet};

use crate::node::key;

/// seq (8) + parent digest (32) + proposer salt (8) + counter (8) + batch
/// digest (32), then the validator set the block puts in force: a count (4)
/// and that many indexes (4 each), 0 when it keeps the set.
pub const BLOCK_BYTES: usize = 8 + Digest::LEN + 8 + 8 + Digest::LEN + 4;

/// The batch a block with no transactions names: every node holds it.
pub const EMPTY_BATCH: Digest = Digest::from_bytes([0; 32]);

/// The parent of block 1.
pub const GENESIS_PARENT: Digest = Digest::from_bytes([0; 32]);

/// A simulated block. `salt` names who built it (and how: an honest build,
/// an equivocation), `counter` makes every build distinct.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub seq: SequenceNumber,
    pub parent: Digest,
    pub salt: u64,
    pub counter: u64,
    /// The batch of transactions the block orders, by digest, as the
    /// node's proposals name batches: a backup must hold it (or fetch it)
    /// before it checks the block.
    pub batch: Digest,
    /// The validators in force from the next height, as the simulated
    /// execution decides them (see `Scenario::change_at`); empty: no change.
    pub validators: Vec<ReplicaIndex>,
}

impl Block {
    pub fn encode(&self) -> Bytes {
        let mut bytes = Vec::with_capacity(BLOCK_BYTES);
        bytes.extend_from_slice(&self.seq.to_be_bytes());
        bytes.extend_from_slice(self.parent.as_bytes());
        bytes.extend_from_slice(&self.salt.to_be_bytes());
        bytes.extend_from_slice(&self.counter.to_be_bytes());
        bytes.extend_from_slice(self.batch.as_bytes());
        let count = u32::try_from(self.validators.len()).expect("a small set");
        bytes.extend_from_slice(&count.to_be_bytes());
        for index in &self.validators {
            bytes.extend_from_slice(&index.to_be_bytes());
        }
        Bytes::from(bytes)
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let count = u32::from_be_bytes(bytes.get(88..92)?.try_into().ok()?) as usize;
        if bytes.len() != BLOCK_BYTES + 4 * count {
            return None;
        }
        let validators = bytes[BLOCK_BYTES..]
            .chunks_exact(4)
            .map(|chunk| u32::from_be_bytes(chunk.try_into().expect("4 bytes")))
            .collect();
        let u64_at = |at: usize| {
            bytes
                .get(at..at + 8)?
                .try_into()
                .ok()
                .map(u64::from_be_bytes)
        };
        Some(Self {
            seq: u64_at(0)?,
            parent: Digest::from_slice(bytes.get(8..40)?).ok()?,
            salt: u64_at(40)?,
            counter: u64_at(48)?,
            batch: Digest::from_slice(bytes.get(56..88)?).ok()?,
            validators,
        })
    }

    /// The block's bytes and their digest.
    pub fn seal(&self) -> (Digest, Bytes) {
        let bytes = self.encode();
        (Digest::sha256(&bytes), bytes)
    }
}

/// The digest of the batch node `slot` seals for its `counter`-th build.
pub fn batch_digest(slot: usize, counter: u64) -> Digest {
    let mut bytes = b"govchain-sim/batch".to_vec();
    bytes.extend_from_slice(&(slot as u64).to_be_bytes());
    bytes.extend_from_slice(&counter.to_be_bytes());
    Digest::sha256(&bytes)
}

/// `Config::block_digest`: SHA-256 of well-formed block bytes.
pub fn block_digest(bytes: &[u8]) -> Option<Digest> {
    Block::decode(bytes).map(|_| Digest::sha256(bytes))
}

/// `Config::block_validators`: the set a block puts in force, if any.
pub fn block_validators(bytes: &[u8]) -> Option<ValidatorSet> {
    let block = Block::decode(bytes)?;
    if block.validators.is_empty() {
        return None;
    }
    validator_set_of(&block.validators)
}

/// The set of the seeded keys of `identities`.
pub fn validator_set_of(identities: &[ReplicaIndex]) -> Option<ValidatorSet> {
    let members = identities
        .iter()
        .map(|identity| (*identity, key(*identity).public_key()))
        .collect();
    ValidatorSet::from_members(members).ok()
}

/// The backup's check of a proposal for `seq`, given the digest of its own
/// delivered block `seq - 1` and the validator change execution makes at
/// `seq` (`Scenario::change_at`).
pub fn check_block(
    seq: SequenceNumber,
    digest: &Digest,
    bytes: &[u8],
    parent: &Digest,
    change: &[ReplicaIndex],
) -> Result<(), String> {
    let block = Block::decode(bytes).ok_or("malformed block")?;
    if Digest::sha256(bytes) != *digest {
        return Err(format!("block bytes do not hash to {digest}"));
    }
    if block.seq != seq {
        return Err(format!(
            "block says height {}, proposed for {seq}",
            block.seq
        ));
    }
    if block.parent != *parent {
        return Err(format!(
            "parent {} is not the delivered block {parent}",
            block.parent
        ));
    }
    if block.validators != change {
        return Err(format!(
            "block sets validators {:?}, execution gives {change:?}",
            block.validators
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_check() {
        let block = Block {
            seq: 3,
            parent: Digest::sha256(b"p"),
            salt: 9,
            counter: 1,
            batch: batch_digest(2, 1),
            validators: Vec::new(),
        };
        let (digest, bytes) = block.seal();
        assert_eq!(Block::decode(&bytes), Some(block.clone()));
        assert_eq!(block_digest(&bytes), Some(digest));
        let parent = Digest::sha256(b"p");
        assert_eq!(check_block(3, &digest, &bytes, &parent, &[]), Ok(()));
        assert!(check_block(4, &digest, &bytes, &parent, &[]).is_err());
        assert!(check_block(3, &digest, &bytes, &Digest::sha256(b"q"), &[]).is_err());
        assert!(check_block(3, &digest, &bytes, &parent, &[0, 1]).is_err());
        assert_eq!(block_digest(b"short"), None);
        assert_eq!(block_validators(&bytes), None);
        let change = Block {
            validators: vec![0, 2, 5],
            ..block
        };
        let (digest, bytes) = change.seal();
        assert_eq!(Block::decode(&bytes), Some(change));
        assert_eq!(check_block(3, &digest, &bytes, &parent, &[0, 2, 5]), Ok(()));
        assert!(check_block(3, &digest, &bytes, &parent, &[]).is_err());
        let set = block_validators(&bytes).expect("a change");
        assert_eq!(set.len(), 3);
        assert!(set.contains(5) && !set.contains(1));
    }
}
