//! Merkle roots and inclusion proofs as in RFC 6962 (Certificate
//! Transparency), section 2.1, and RFC 9162, section 2.1.3.
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

/// The audit path of the leaf at `index` (RFC 6962 `PATH(m, D[n])`): the
/// sibling hashes from the leaf up to the root, deepest first, as
/// [`verify_inclusion`] consumes them. `None` if `index` is not a leaf.
pub fn merkle_inclusion_proof(leaves: &[Digest], index: usize) -> Option<Vec<Digest>> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    push_path(leaves, index, &mut path);
    Some(path)
}

/// Appends `PATH(index, leaves)`: the recursion goes down to the leaf
/// first, so the deepest sibling is pushed first.
fn push_path(leaves: &[Digest], index: usize, path: &mut Vec<Digest>) {
    if leaves.len() < 2 {
        return;
    }
    let split = largest_power_of_two_below(leaves.len());
    let (left, right) = leaves.split_at(split);
    if index < split {
        push_path(left, index, path);
        path.push(merkle_root(right));
    } else {
        push_path(right, index - split, path);
        path.push(merkle_root(left));
    }
}

/// Whether `path` proves that `leaf` (the leaf's data, as given to
/// [`merkle_root`], not its leaf hash) is the leaf at `index` of a tree of
/// `tree_size` leaves whose root is `root`: RFC 9162's verification
/// algorithm (section 2.1.3.2). A path that is too short or too long, an
/// index outside the tree or a tree of no leaves never verifies.
///
/// The root does not commit to `tree_size` on its own: a path can verify
/// for another size that gives the leaf the same path shape (leaf 0 of 3
/// and of 4 leaves), so `tree_size` must come from something the verifier
/// trusts, such as a certified block header's transaction count.
pub fn verify_inclusion(
    leaf: &Digest,
    index: u64,
    tree_size: u64,
    path: &[Digest],
    root: &Digest,
) -> bool {
    if index >= tree_size {
        return false;
    }
    // `node` is the position of the running hash at its level, `last` the
    // position of that level's last node.
    let (mut node, mut last) = (index, tree_size - 1);
    let mut hash = hash_leaf(leaf);
    for sibling in path {
        if last == 0 {
            // The root is reached, yet the path goes on.
            return false;
        }
        if node & 1 == 1 || node == last {
            hash = hash_node(sibling, &hash);
            // A last node with no right sibling moves up unchanged.
            while node & 1 == 0 && node != 0 {
                node >>= 1;
                last >>= 1;
            }
        } else {
            hash = hash_node(&hash, sibling);
        }
        node >>= 1;
        last >>= 1;
    }
    last == 0 && hash == *root
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

    fn leaves(n: usize) -> Vec<Digest> {
        (0..n).map(|i| leaf(i as u8)).collect()
    }

    #[test]
    fn audit_paths_of_a_seven_leaf_tree_match_rfc_6962_by_hand() {
        // RFC 6962 section 2.1.3's example tree: d0..d6, with a = H(d0,d1),
        // b = H(d2,d3), c = H(d4,d5), g = H(a,b), h = H(c,d6).
        let d = leaves(7);
        let l: Vec<Digest> = d.iter().map(hash_leaf).collect();
        let a = hash_node(&l[0], &l[1]);
        let b = hash_node(&l[2], &l[3]);
        let c = hash_node(&l[4], &l[5]);
        let g = hash_node(&a, &b);
        let h = hash_node(&c, &l[6]);
        assert_eq!(merkle_root(&d), hash_node(&g, &h));
        // The RFC: the path for d0 is [b, h] after its sibling, for d3
        // [c, d, g, h] ... written with our names.
        assert_eq!(merkle_inclusion_proof(&d, 0), Some(vec![l[1], b, h]));
        assert_eq!(merkle_inclusion_proof(&d, 3), Some(vec![l[2], a, h]));
        assert_eq!(merkle_inclusion_proof(&d, 4), Some(vec![l[5], l[6], g]));
        // d6 has no sibling at the bottom: it rises to pair with c.
        assert_eq!(merkle_inclusion_proof(&d, 6), Some(vec![c, g]));
        assert_eq!(merkle_inclusion_proof(&d, 7), None);
        let root = merkle_root(&d);
        for index in 0..7 {
            let path = merkle_inclusion_proof(&d, index).expect("a leaf of the tree");
            assert!(verify_inclusion(&d[index], index as u64, 7, &path, &root));
        }
    }

    #[test]
    fn a_single_leaf_has_an_empty_path() {
        let d = leaves(1);
        assert_eq!(merkle_inclusion_proof(&d, 0), Some(Vec::new()));
        assert!(verify_inclusion(&d[0], 0, 1, &[], &merkle_root(&d)));
        // The leaf data itself is not its leaf hash.
        assert!(!verify_inclusion(&d[0], 0, 1, &[], &d[0]));
    }

    #[test]
    fn an_empty_tree_proves_nothing() {
        assert_eq!(merkle_inclusion_proof(&[], 0), None);
        assert!(!verify_inclusion(&leaf(0), 0, 0, &[], &merkle_root(&[])));
    }

    #[test]
    fn two_leaves_prove_each_other_as_siblings() {
        let d = leaves(2);
        let root = merkle_root(&d);
        assert_eq!(merkle_inclusion_proof(&d, 0), Some(vec![hash_leaf(&d[1])]));
        assert_eq!(merkle_inclusion_proof(&d, 1), Some(vec![hash_leaf(&d[0])]));
        assert!(verify_inclusion(&d[1], 1, 2, &[hash_leaf(&d[0])], &root));
        // Sides matter: leaf 1's path does not prove it at index 0.
        assert!(!verify_inclusion(&d[1], 0, 2, &[hash_leaf(&d[0])], &root));
    }

    /// For each element of the audit path of leaf `index` in a tree of
    /// `size` leaves, deepest first, whether the sibling is on the left:
    /// RFC 6962's recursive definition, independent of the iterative
    /// verifier.
    fn sides(index: u64, size: u64) -> Vec<bool> {
        if size < 2 {
            return Vec::new();
        }
        // The largest power of two below `size`: the highest bit of size - 1.
        let split = 1u64 << (63 - (size - 1).leading_zeros());
        let mut sides = if index < split {
            sides(index, split)
        } else {
            sides(index - split, size - split)
        };
        sides.push(index >= split);
        sides
    }

    #[test]
    fn a_tree_size_is_not_proven_by_the_path() {
        // Leaf 0 of three leaves and of four has the same path shape
        // (right, right), so the path verifies for both sizes: whoever
        // checks a proof must know the size from elsewhere (a block
        // header's transaction count).
        let d = leaves(3);
        let path = merkle_inclusion_proof(&d, 0).expect("a leaf of the tree");
        let root = merkle_root(&d);
        assert_eq!(sides(0, 3), sides(0, 4));
        assert!(verify_inclusion(&d[0], 0, 4, &path, &root));
        // Leaf 2 is the lone last node of three (it rises), not of four.
        let path = merkle_inclusion_proof(&d, 2).expect("a leaf of the tree");
        assert_ne!(sides(2, 3), sides(2, 4));
        assert!(verify_inclusion(&d[2], 2, 3, &path, &root));
        assert!(!verify_inclusion(&d[2], 2, 4, &path, &root));
    }

    /// `n` distinct leaves from a seed.
    fn seeded_leaves(seed: u64, n: usize) -> Vec<Digest> {
        (0..n as u64)
            .map(|i| Digest::sha256(&[seed.to_be_bytes(), i.to_be_bytes()].concat()))
            .collect()
    }

    proptest! {
        #[test]
        fn every_leaf_of_any_tree_is_proven_against_merkle_root(
            seed in any::<u64>(),
            n in 1usize..200,
        ) {
            let d = seeded_leaves(seed, n);
            let root = merkle_root(&d);
            for (index, leaf) in d.iter().enumerate() {
                let path = merkle_inclusion_proof(&d, index).expect("a leaf of the tree");
                prop_assert!(path.len() <= 8, "at most ceil(log2(200)) hashes");
                prop_assert!(verify_inclusion(leaf, index as u64, n as u64, &path, &root));
            }
        }

        #[test]
        fn a_proof_proves_only_its_leaf_index_size_path_and_root(
            seed in any::<u64>(),
            n in 1usize..200,
            index in any::<prop::sample::Index>(),
            other in any::<prop::sample::Index>(),
            flipped_bit in 0usize..256,
            flipped_element in any::<prop::sample::Index>(),
        ) {
            let d = seeded_leaves(seed, n);
            let root = merkle_root(&d);
            let i = index.index(n);
            let path = merkle_inclusion_proof(&d, i).expect("a leaf of the tree");
            let (leaf, at, size) = (d[i], i as u64, n as u64);
            prop_assert!(verify_inclusion(&leaf, at, size, &path, &root));

            // Another leaf, or this leaf at another index.
            let j = other.index(n);
            if j != i {
                prop_assert!(!verify_inclusion(&d[j], at, size, &path, &root));
                prop_assert!(!verify_inclusion(&leaf, j as u64, size, &path, &root));
            }
            prop_assert!(!verify_inclusion(&leaf, size, size, &path, &root));
            // Another root.
            prop_assert!(!verify_inclusion(&leaf, at, size, &path, &merkle_root(&d[..n - 1])));
            // A wrong size fails exactly when it gives the leaf another
            // path shape (see `a_tree_size_is_not_proven_by_the_path`).
            for wrong in [size + 1, size - 1, size * 2, u64::MAX] {
                if wrong != size {
                    let same_shape = at < wrong && sides(at, wrong) == sides(at, size);
                    prop_assert_eq!(
                        verify_inclusion(&leaf, at, wrong, &path, &root),
                        same_shape,
                        "size {}", wrong
                    );
                }
            }
            // A flipped bit in any path element.
            if !path.is_empty() {
                let k = flipped_element.index(path.len());
                let mut bytes = *path[k].as_bytes();
                bytes[flipped_bit / 8] ^= 1 << (flipped_bit % 8);
                let mut forged = path.clone();
                forged[k] = Digest::from_bytes(bytes);
                prop_assert!(!verify_inclusion(&leaf, at, size, &forged, &root));
                // Truncated.
                prop_assert!(!verify_inclusion(&leaf, at, size, &path[..path.len() - 1], &root));
            }
            // Extended, at either end.
            let mut longer = path.clone();
            longer.push(root);
            prop_assert!(!verify_inclusion(&leaf, at, size, &longer, &root));
            let mut longer = vec![hash_leaf(&leaf)];
            longer.extend_from_slice(&path);
            prop_assert!(!verify_inclusion(&leaf, at, size, &longer, &root));
        }

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
