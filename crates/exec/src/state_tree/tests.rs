use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A tree and the state it commits to, updated block by block.
#[derive(Default)]
struct Committed {
    tree: MemoryTree,
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    root: Digest,
}

impl Committed {
    fn new() -> Self {
        Self {
            root: EMPTY_ROOT,
            ..Self::default()
        }
    }

    fn apply(&mut self, writes: &Writes) {
        let update = update_tree(&self.tree, writes).expect("update");
        self.tree.apply(&update.writes);
        self.root = update.root;
        for (key, value) in writes {
            match value {
                Some(value) => self.state.insert(key.clone(), value.clone()),
                None => self.state.remove(key),
            };
        }
    }

    /// Every key proves its value, and `absent` proves absence.
    fn check_proofs(&self, absent: &[Vec<u8>]) {
        for (key, value) in &self.state {
            let proof = prove(&self.tree, key).expect("prove");
            proof
                .verify(&self.root, key, Some(value))
                .expect("a present key verifies");
        }
        for key in absent {
            if self.state.contains_key(key) {
                continue;
            }
            let proof = prove(&self.tree, key).expect("prove");
            proof
                .verify(&self.root, key, None)
                .expect("an absent key verifies as absent");
        }
    }
}

fn put(pairs: &[(&str, &str)]) -> Writes {
    pairs
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), Some(v.as_bytes().to_vec())))
        .collect()
}

fn delete(keys: &[&str]) -> Writes {
    keys.iter().map(|k| (k.as_bytes().to_vec(), None)).collect()
}

/// The root of `state` built from nothing in one block.
fn fresh_root(state: &BTreeMap<Vec<u8>, Vec<u8>>) -> Digest {
    let writes: Writes = state
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    update_tree(&MemoryTree::default(), &writes)
        .expect("update")
        .root
}

#[test]
fn empty_tree_has_the_empty_root_and_proves_absence() {
    let committed = Committed::new();
    let proof = prove(&committed.tree, b"anchor/x").expect("prove");
    assert_eq!(proof.siblings().len(), 0);
    proof
        .verify(&EMPTY_ROOT, b"anchor/x", None)
        .expect("absent in the empty tree");
    assert_eq!(
        proof.verify(&EMPTY_ROOT, b"anchor/x", Some(b"v")),
        Err(ProofError::ProvesAbsence)
    );
}

#[test]
fn one_key_is_a_leaf_at_the_root() {
    let mut committed = Committed::new();
    committed.apply(&put(&[("a", "1")]));
    assert_eq!(
        committed.root,
        leaf_hash(&key_hash(b"a"), &value_hash(b"1"))
    );
    assert_eq!(committed.tree.len(), 1);
    committed.check_proofs(&[b"b".to_vec()]);
}

#[test]
fn insert_update_delete_keep_proofs_and_the_canonical_tree() {
    let mut committed = Committed::new();
    committed.apply(&put(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]));
    committed.check_proofs(&[b"e".to_vec()]);
    let four = committed.root;

    committed.apply(&put(&[("b", "20")]));
    assert_ne!(committed.root, four);
    committed.check_proofs(&[b"e".to_vec()]);

    committed.apply(&put(&[("b", "2")]));
    assert_eq!(committed.root, four, "same state, same root");

    committed.apply(&delete(&["a", "c", "zz"]));
    committed.check_proofs(&[b"a".to_vec(), b"c".to_vec(), b"zz".to_vec()]);
    assert_eq!(committed.root, fresh_root(&committed.state));

    committed.apply(&delete(&["b", "d"]));
    assert_eq!(committed.root, EMPTY_ROOT);
    assert!(committed.tree.is_empty(), "no node outlives its keys");
}

#[test]
fn a_value_for_the_wrong_key_or_a_wrong_value_is_refused() {
    let mut committed = Committed::new();
    committed.apply(&put(&[("a", "1"), ("b", "2"), ("c", "3")]));
    let proof = prove(&committed.tree, b"a").expect("prove");
    assert!(matches!(
        proof.verify(&committed.root, b"a", Some(b"2")),
        Err(ProofError::ValueMismatch { .. })
    ));
    assert!(matches!(
        proof.verify(&committed.root, b"a", None),
        Err(ProofError::ProvesPresence { .. })
    ));
    // a's proof, offered for b: b's path differs, so the root differs or
    // the leaf is not b's.
    assert!(proof.verify(&committed.root, b"b", Some(b"1")).is_err());
    assert!(proof.verify(&committed.root, b"b", Some(b"2")).is_err());
}

#[test]
fn a_tampered_sibling_or_leaf_is_refused() {
    let mut committed = Committed::new();
    let writes: Writes = (0..64_u32)
        .map(|i| (i.to_be_bytes().to_vec(), Some(vec![1; 3])))
        .collect();
    committed.apply(&writes);
    let key = 7_u32.to_be_bytes();
    let proof = prove(&committed.tree, &key).expect("prove");
    assert!(proof.siblings().len() >= 6, "64 keys make a deeper path");
    for index in 0..proof.siblings().len() {
        let mut siblings = proof.siblings().to_vec();
        siblings[index] = Digest::sha256(b"forged");
        let forged = StateProof::new(siblings, proof.leaf());
        assert!(matches!(
            forged.verify(&committed.root, &key, Some(&[1; 3])),
            Err(ProofError::RootMismatch { .. })
        ));
    }
    let (leaf_key, _) = proof.leaf().expect("present");
    let forged = StateProof::new(
        proof.siblings().to_vec(),
        Some((leaf_key, value_hash(&[2; 3]))),
    );
    assert!(matches!(
        forged.verify(&committed.root, &key, Some(&[2; 3])),
        Err(ProofError::RootMismatch { .. })
    ));
    // Dropping the leaf turns it into a claim of absence: refused.
    let forged = StateProof::new(proof.siblings().to_vec(), None);
    assert!(matches!(
        forged.verify(&committed.root, &key, None),
        Err(ProofError::RootMismatch { .. })
    ));
    // A truncated path does not reach the root either.
    let forged = StateProof::new(proof.siblings()[1..].to_vec(), proof.leaf());
    assert!(forged.verify(&committed.root, &key, Some(&[1; 3])).is_err());
}

#[test]
fn another_keys_leaf_off_the_path_does_not_prove_absence() {
    let mut committed = Committed::new();
    committed.apply(&put(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]));
    let proof = prove(&committed.tree, b"a").expect("prove");
    // Find a key whose hash leaves a's path before a's leaf.
    let other = (0..1000_u32)
        .map(|i| format!("k{i}"))
        .find(|k| {
            usize::from(common_prefix_bits(&key_hash(k.as_bytes()), &key_hash(b"a")))
                < proof.siblings().len()
        })
        .expect("some key diverges early");
    assert!(matches!(
        proof.verify(&committed.root, other.as_bytes(), None),
        Err(ProofError::LeafOffPath { .. })
    ));
}

#[test]
fn an_overlong_proof_is_refused() {
    let proof = StateProof::new(vec![EMPTY_ROOT; 257], None);
    assert_eq!(
        proof.verify(&EMPTY_ROOT, b"a", None),
        Err(ProofError::TooLong { got: 257, max: 256 })
    );
}

#[test]
fn a_corrupt_node_is_an_error_not_a_panic() {
    let mut committed = Committed::new();
    committed.apply(&put(&[("a", "1"), ("b", "2")]));
    let mut tree = committed.tree.clone();
    let mut writes = BTreeMap::new();
    writes.insert(NodePath::ROOT.to_key(), Some(vec![9; 65]));
    tree.apply(&writes);
    assert!(matches!(
        prove(&tree, b"a"),
        Err(StateError::Corrupt { .. })
    ));
    assert!(matches!(
        update_tree(&tree, &put(&[("c", "3")])),
        Err(StateError::Corrupt { .. })
    ));
}

#[test]
fn node_path_keys_are_distinct() {
    let root = NodePath::ROOT;
    let left = root.child(false);
    let right = root.child(true);
    assert_eq!(root.to_key(), vec![0, 0]);
    assert_eq!(left.to_key(), vec![0, 1, 0x00]);
    assert_eq!(right.to_key(), vec![0, 1, 0x80]);
    assert_eq!(right.child(true).to_key(), vec![0, 2, 0xc0]);
}

fn block_strategy() -> impl Strategy<Value = Vec<(u8, Option<u8>)>> {
    prop::collection::vec((any::<u8>(), prop::option::of(any::<u8>())), 0..24)
}

fn to_writes(block: &[(u8, Option<u8>)]) -> Writes {
    block
        .iter()
        .map(|(k, v)| (vec![*k], v.map(|v| vec![v])))
        .collect()
}

proptest! {
    /// Any sequence of blocks leaves the tree of its final state: the root
    /// equals that of the state written in one block, every key proves its
    /// value, every other key its absence, and no stale node remains.
    #[test]
    fn blocks_in_any_split_give_the_canonical_tree(blocks in prop::collection::vec(block_strategy(), 1..8)) {
        let mut committed = Committed::new();
        for block in &blocks {
            committed.apply(&to_writes(block));
        }
        prop_assert_eq!(committed.root, fresh_root(&committed.state));
        let mut rebuilt = MemoryTree::default();
        let all: Writes = committed.state.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect();
        rebuilt.apply(&update_tree(&MemoryTree::default(), &all).expect("update").writes);
        prop_assert_eq!(&committed.tree, &rebuilt);
        let absent: Vec<Vec<u8>> = (0..=255_u8).map(|k| vec![k]).collect();
        committed.check_proofs(&absent);
    }

    /// The same final writes, applied in a different grouping and order of
    /// blocks, give the same root.
    #[test]
    fn order_of_independent_writes_does_not_matter(keys in prop::collection::btree_map(any::<u16>(), any::<u8>(), 0..64), cut in any::<usize>()) {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = keys.iter().map(|(k, v)| (k.to_be_bytes().to_vec(), vec![*v])).collect();
        let cut = if pairs.is_empty() { 0 } else { cut % pairs.len() };
        let mut forward = Committed::new();
        let mut backward = Committed::new();
        for chunk in [&pairs[..cut], &pairs[cut..]] {
            forward.apply(&chunk.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect());
        }
        for chunk in [&pairs[cut..], &pairs[..cut]] {
            backward.apply(&chunk.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect());
        }
        prop_assert_eq!(forward.root, backward.root);
        prop_assert_eq!(&forward.tree, &backward.tree);
    }
}

/// The roots of a fixed history, as the chain has always computed them:
/// block headers commit to them, so a change to hashing or to the tree's
/// shape would split a node from every ledger written before it.
#[test]
fn a_fixed_history_keeps_its_roots() {
    let mut tree = MemoryTree::default();
    let mut roots = Vec::new();
    let blocks = [
        put(&[
            ("alpha", "1"),
            ("beta", "2"),
            ("gamma", "3"),
            ("delta", "4"),
        ]),
        put(&[("beta", "2b"), ("epsilon", "5"), ("zeta", "6")]),
        delete(&["alpha", "gamma", "zeta"]),
        put(&[("eta", "7"), ("theta", "8"), ("iota", "9"), ("kappa", "10")]),
        delete(&["beta", "delta", "epsilon", "eta", "theta", "iota", "kappa"]),
    ];
    for block in &blocks {
        let update = update_tree(&tree, block).expect("update");
        tree.apply(&update.writes);
        roots.push(update.root.to_string());
    }
    assert_eq!(roots, EXPECTED_ROOTS, "{roots:#?}");
    assert!(tree.is_empty());
}

/// Computed by the tree of 2026-12-05 (fee4f11), before its update cached
/// node hashes.
const EXPECTED_ROOTS: [&str; 5] = [
    "4a8ba828c690c68e9bfb7a7a1671819df4ea23019a657e16424d99f84af9a56c",
    "0442cd1a4cecea4df3c6381f85d92bf6d570bd79b8ffc3660ad6b620664fdce9",
    "2b13cfc4c33a27ed5f8b46529c6545dcb756996b6f731203f3393f2704514429",
    "2aba37eed523c0d79826896def840acf726a2820c32bb0c9fdbfedf4cf3a559c",
    "0000000000000000000000000000000000000000000000000000000000000000",
];
