//! Merkle roots as in RFC 6962 (Certificate Transparency), section 2.1.
//!
//! Leaves and inner nodes are hashed with different prefixes (0x00 and 0x01),
//! and an odd node is never paired with itself, so two different lists of
//! leaves can not have the same root (the duplicate-last-leaf flaw of
//! Bitcoin's tree, CVE-2012-2459, does not apply).

use sha2::{Digest as _, Sha256};

use crate::Digest;

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// The Merkle tree hash of `leaves`; the root of no leaves is SHA-256("").
pub fn merkle_root(leaves: &[Digest]) -> Digest {
    match leaves {
        [] => Digest::from_bytes(Sha256::digest([]).into()),
        [leaf] => hash_leaf(leaf),
        _ => {
            let split = largest_power_of_two_below(leaves.len());
            let (left, right) = leaves.split_at(split);
            hash_node(&merkle_root(left), &merkle_root(right))
        }
    }
}

fn hash_leaf(leaf: &Digest) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update([LEAF_PREFIX]);
    hasher.update(leaf.as_bytes());
    Digest::from_bytes(hasher.finalize().into())
}

fn hash_node(left: &Digest, right: &Digest) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update([NODE_PREFIX]);
    hasher.update(left.as_bytes());
    hasher.update(right.as_bytes());
    Digest::from_bytes(hasher.finalize().into())
}

/// The largest power of two strictly less than `n`.
///
/// # Panics
/// If `n < 2`.
fn largest_power_of_two_below(n: usize) -> usize {
    assert!(n >= 2);
    let power = (n - 1).next_power_of_two();
    if power == n - 1 { power } else { power / 2 }.max(1)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn leaf(i: u8) -> Digest {
        Digest::sha256(&[i])
    }

    #[test]
    fn split_points() {
        assert_eq!(largest_power_of_two_below(2), 1);
        assert_eq!(largest_power_of_two_below(3), 2);
        assert_eq!(largest_power_of_two_below(4), 2);
        assert_eq!(largest_power_of_two_below(5), 4);
        assert_eq!(largest_power_of_two_below(8), 4);
        assert_eq!(largest_power_of_two_below(9), 8);
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(
            merkle_root(&[]).to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn three_leaves_match_the_rfc_shape() {
        let (a, b, c) = (leaf(1), leaf(2), leaf(3));
        let expected = hash_node(&hash_node(&hash_leaf(&a), &hash_leaf(&b)), &hash_leaf(&c));
        assert_eq!(merkle_root(&[a, b, c]), expected);
    }

    #[test]
    fn duplicating_the_last_leaf_changes_the_root() {
        let (a, b, c) = (leaf(1), leaf(2), leaf(3));
        assert_ne!(merkle_root(&[a, b, c]), merkle_root(&[a, b, c, c]));
    }

    #[test]
    fn a_leaf_is_not_an_inner_node() {
        let (a, b) = (leaf(1), leaf(2));
        let inner = hash_node(&hash_leaf(&a), &hash_leaf(&b));
        assert_ne!(merkle_root(&[inner]), merkle_root(&[a, b]));
    }

    proptest! {
        #[test]
        fn any_change_of_a_leaf_changes_the_root(
            seeds in proptest::collection::vec(any::<u8>(), 1..40),
            index in any::<prop::sample::Index>(),
        ) {
            let leaves: Vec<Digest> = seeds.iter().enumerate()
                .map(|(i, s)| Digest::sha256(&[*s, i as u8])).collect();
            let root = merkle_root(&leaves);
            let mut changed = leaves.clone();
            let i = index.index(changed.len());
            changed[i] = Digest::sha256(b"other");
            prop_assert_ne!(root, merkle_root(&changed));
        }

        #[test]
        fn dropping_a_leaf_changes_the_root(seeds in proptest::collection::vec(any::<u8>(), 2..40)) {
            let leaves: Vec<Digest> = seeds.iter().enumerate()
                .map(|(i, s)| Digest::sha256(&[*s, i as u8])).collect();
            prop_assert_ne!(merkle_root(&leaves), merkle_root(&leaves[..leaves.len() - 1]));
        }
    }
}
