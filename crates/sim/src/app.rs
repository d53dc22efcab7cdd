//! The simulated application: blocks that name their height and parent, so
//! that a backup can check a proposal against its own delivered chain.

use bytes::Bytes;
use govchain_crypto::Digest;
use govchain_pbft::SequenceNumber;

/// seq (8) + parent digest (32) + proposer salt (8) + counter (8) + batch
/// digest (32).
pub const BLOCK_BYTES: usize = 8 + Digest::LEN + 8 + 8 + Digest::LEN;

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
}

impl Block {
    pub fn encode(&self) -> Bytes {
        let mut bytes = Vec::with_capacity(BLOCK_BYTES);
        bytes.extend_from_slice(&self.seq.to_be_bytes());
        bytes.extend_from_slice(self.parent.as_bytes());
        bytes.extend_from_slice(&self.salt.to_be_bytes());
        bytes.extend_from_slice(&self.counter.to_be_bytes());
        bytes.extend_from_slice(self.batch.as_bytes());
        Bytes::from(bytes)
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != BLOCK_BYTES {
            return None;
        }
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
    (bytes.len() == BLOCK_BYTES).then(|| Digest::sha256(bytes))
}

/// The backup's check of a proposal for `seq`, given the digest of its own
/// delivered block `seq - 1`.
pub fn check_block(
    seq: SequenceNumber,
    digest: &Digest,
    bytes: &[u8],
    parent: &Digest,
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
        };
        let (digest, bytes) = block.seal();
        assert_eq!(Block::decode(&bytes), Some(block.clone()));
        assert_eq!(block_digest(&bytes), Some(digest));
        assert_eq!(
            check_block(3, &digest, &bytes, &Digest::sha256(b"p")),
            Ok(())
        );
        assert!(check_block(4, &digest, &bytes, &Digest::sha256(b"p")).is_err());
        assert!(check_block(3, &digest, &bytes, &Digest::sha256(b"q")).is_err());
        assert_eq!(block_digest(b"short"), None);
    }
}
