//! Proofs that a key holds a value, or no value, under a state root.

use govchain_crypto::Digest;

use super::{
    EMPTY_ROOT, KEY_BITS, Node, NodePath, TreeRead, bit, common_prefix_bits, internal_hash,
    key_hash, leaf_hash, load, value_hash,
};
use crate::state::StateError;

/// The path from the root to where a key's walk ends: the sibling hashes
/// from the root down, and the leaf found there (`None`: an empty
/// subtree). It proves a value when the leaf is the key's, and absence
/// when the walk ends empty or at another key's leaf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateProof {
    siblings: Vec<Digest>,
    leaf: Option<(Digest, Digest)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProofError {
    #[error("the proof has {got} sibling hashes, at most {max} can be on a path")]
    TooLong { got: usize, max: u16 },
    #[error("the proof shows the key absent, but a value was given")]
    ProvesAbsence,
    #[error("the proof shows the key present (value hash {proven}), but no value was given")]
    ProvesPresence { proven: Digest },
    #[error("the proof's leaf holds value hash {proven}, the value given hashes to {given}")]
    ValueMismatch { proven: Digest, given: Digest },
    #[error(
        "the proof's leaf (key hash {leaf}) is not on the path of key hash {key} at depth {depth}"
    )]
    LeafOffPath {
        leaf: Digest,
        key: Digest,
        depth: usize,
    },
    #[error("the proof computes state root {computed}, the header's state root is {expected}")]
    RootMismatch { expected: Digest, computed: Digest },
}

impl StateProof {
    pub fn new(siblings: Vec<Digest>, leaf: Option<(Digest, Digest)>) -> Self {
        Self { siblings, leaf }
    }

    /// Sibling hashes, from the root's child down.
    pub fn siblings(&self) -> &[Digest] {
        &self.siblings
    }

    /// `(key hash, value hash)` of the leaf where the walk ended.
    pub fn leaf(&self) -> Option<(Digest, Digest)> {
        self.leaf
    }

    /// Checks that under `root`, `key` holds `value` (`None`: holds
    /// nothing). Pure: a client runs it with nothing but the proof, the
    /// key, the value and a root it trusts.
    pub fn verify(
        &self,
        root: &Digest,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), ProofError> {
        if self.siblings.len() > usize::from(KEY_BITS) {
            return Err(ProofError::TooLong {
                got: self.siblings.len(),
                max: KEY_BITS,
            });
        }
        let key = key_hash(key);
        self.check_leaf(&key, value)?;
        let mut hash = self.leaf.map_or(EMPTY_ROOT, |(leaf_key, leaf_value)| {
            leaf_hash(&leaf_key, &leaf_value)
        });
        for (depth, sibling) in (0..KEY_BITS).zip(&self.siblings).rev() {
            hash = if bit(&key, depth) {
                internal_hash(sibling, &hash)
            } else {
                internal_hash(&hash, sibling)
            };
        }
        if hash != *root {
            return Err(ProofError::RootMismatch {
                expected: *root,
                computed: hash,
            });
        }
        Ok(())
    }

    /// Whether the leaf at the end of the path says what the caller claims.
    fn check_leaf(&self, key: &Digest, value: Option<&[u8]>) -> Result<(), ProofError> {
        match (self.leaf, value) {
            (None, None) => Ok(()),
            (None, Some(_)) => Err(ProofError::ProvesAbsence),
            (Some((leaf_key, leaf_value)), Some(value)) => {
                if leaf_key != *key {
                    return Err(ProofError::ProvesAbsence);
                }
                let given = value_hash(value);
                if leaf_value != given {
                    return Err(ProofError::ValueMismatch {
                        proven: leaf_value,
                        given,
                    });
                }
                Ok(())
            }
            (Some((leaf_key, leaf_value)), None) => {
                if leaf_key == *key {
                    return Err(ProofError::ProvesPresence { proven: leaf_value });
                }
                // Another key's leaf proves absence only where the walk of
                // this key ends, i.e. if both share the path so far.
                if usize::from(common_prefix_bits(&leaf_key, key)) < self.siblings.len() {
                    return Err(ProofError::LeafOffPath {
                        leaf: leaf_key,
                        key: *key,
                        depth: self.siblings.len(),
                    });
                }
                Ok(())
            }
        }
    }
}

/// The proof for `key` in the stored tree: walks from the root along the
/// key's hash until a leaf or an empty subtree.
pub fn prove<R: TreeRead + ?Sized>(tree: &R, key: &[u8]) -> Result<StateProof, StateError> {
    let key = key_hash(key);
    let mut path = NodePath::ROOT;
    let mut node = load(tree, &path)?;
    let mut siblings = Vec::new();
    loop {
        match node {
            Node::Empty => return Ok(StateProof::new(siblings, None)),
            Node::Leaf {
                key_hash,
                value_hash,
            } => return Ok(StateProof::new(siblings, Some((key_hash, value_hash)))),
            Node::Internal { left, right } => {
                let right_side = bit(&key, path.depth);
                let (next, sibling) = if right_side {
                    (right, left)
                } else {
                    (left, right)
                };
                siblings.push(sibling);
                path = path.child(right_side);
                node = if next == EMPTY_ROOT {
                    Node::Empty
                } else {
                    load(tree, &path)?
                };
            }
        }
    }
}
