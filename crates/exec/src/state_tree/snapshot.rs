//! State snapshots in verified parts: the whole state at one height, cut
//! into the [`PARTS`] subtrees at depth [`PART_DEPTH`], so that a node
//! that fetches it can check each part on arrival against a certified
//! state root, and a peer that sends a bad part is caught at that part.
//!
//! The sender first sends the [`Summary`] of every part ([`summaries`],
//! read from the stored tree). They fold into the root ([`fold`]), which
//! the receiver compares with the state root of a block header it checked
//! the commit certificate of. Then it sends each part's `(key, value)`
//! entries: the keys whose key hash starts with the part's index. The
//! receiver rebuilds the part's subtree from them ([`Part::build`]) and
//! compares its summary with the one the root vouched for. Both sides
//! compute the same canonical tree (see the parent module), so the nodes a
//! receiver stores are the ones the sender holds.

use std::collections::BTreeMap;

use govchain_crypto::Digest;

use super::{
    EMPTY_ROOT, MemoryTree, Node, NodePath, TreeRead, Updater, key_hash, leaf_hash, load,
    value_hash,
};
use crate::state::StateError;

/// Tree nodes by [`NodePath::to_key`], as a receiver stores them.
pub type Nodes = BTreeMap<Vec<u8>, Vec<u8>>;
/// A part's `(key, value)` entries.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The depth of the parts' subtrees: the first byte of a key hash.
pub const PART_DEPTH: u16 = 8;
/// How many parts a snapshot has.
pub const PARTS: usize = 1 << PART_DEPTH;

/// What a part's subtree is, as its parent sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Summary {
    /// No key.
    Empty,
    /// Exactly one key: its leaf (a leaf moves up to where its subtree
    /// begins, so the leaf itself, not its hash, is what the fold needs).
    Leaf {
        key_hash: Digest,
        value_hash: Digest,
    },
    /// Two keys or more: the subtree's root hash.
    Internal(Digest),
}

impl Summary {
    pub fn hash(&self) -> Digest {
        match self {
            Summary::Empty => EMPTY_ROOT,
            Summary::Leaf {
                key_hash,
                value_hash,
            } => leaf_hash(key_hash, value_hash),
            Summary::Internal(hash) => *hash,
        }
    }
}

/// Why a snapshot or a part of it does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    #[error("a snapshot has {expected} part summaries, got {got}")]
    SummaryCount { got: usize, expected: usize },
    #[error("the part summaries fold to {got}, not the certified state root {expected}")]
    RootMismatch { got: Digest, expected: Digest },
    #[error(
        "part {part}: key {key} does not belong to it (its key hash starts with {first_byte:#04x})"
    )]
    WrongPart {
        part: usize,
        key: String,
        first_byte: u8,
    },
    #[error("part {part}: key {key} appears twice")]
    DuplicateKey { part: usize, key: String },
    #[error("part {part} does not match the summary the root vouches for: {reason}")]
    PartMismatch { part: usize, reason: String },
    #[error("part index {part} is out of range (a snapshot has {PARTS} parts)")]
    PartIndex { part: usize },
}

/// The summaries of the [`PARTS`] subtrees of a stored tree, in order.
pub fn summaries<R: TreeRead + ?Sized>(tree: &R) -> Result<Vec<Summary>, StateError> {
    let mut out = Vec::with_capacity(PARTS);
    collect(tree, NodePath::ROOT, load(tree, &NodePath::ROOT)?, &mut out)?;
    Ok(out)
}

fn collect<R: TreeRead + ?Sized>(
    tree: &R,
    path: NodePath,
    node: Node,
    out: &mut Vec<Summary>,
) -> Result<(), StateError> {
    let below = 1_usize << (PART_DEPTH - path.depth);
    match node {
        Node::Empty => out.extend(std::iter::repeat_n(Summary::Empty, below)),
        Node::Leaf {
            key_hash,
            value_hash,
        } => {
            // The part that holds the key gets its leaf; the others under
            // this path are empty.
            let start = out.len();
            out.extend(std::iter::repeat_n(Summary::Empty, below));
            let index = part_of(&key_hash) & (below - 1);
            out[start + index] = Summary::Leaf {
                key_hash,
                value_hash,
            };
        }
        Node::Internal { .. } if path.depth == PART_DEPTH => {
            out.push(Summary::Internal(node.hash()));
        }
        Node::Internal { left, right } => {
            for (right_side, hash) in [(false, left), (true, right)] {
                let child = path.child(right_side);
                let node = if hash == EMPTY_ROOT {
                    Node::Empty
                } else {
                    let node = load(tree, &child)?;
                    if node.hash() != hash {
                        return Err(StateError::Corrupt {
                            key: format!("state tree node {}", super::hex(&child.to_key())),
                            reason: format!("hashes to {}, its parent says {hash}", node.hash()),
                        });
                    }
                    node
                };
                collect(tree, child, node, out)?;
            }
        }
    }
    Ok(())
}

/// The part a key hash belongs to: its first [`PART_DEPTH`] bits.
pub fn part_of(key_hash: &Digest) -> usize {
    usize::from(key_hash.as_bytes()[0])
}

/// The root the summaries fold into, and the nodes the tree stores above
/// the parts (and the parts' own nodes when they are leaves): what a
/// receiver stores besides the nodes of each [`Part`].
pub fn fold(summaries: &[Summary]) -> Result<(Digest, Nodes), SnapshotError> {
    if summaries.len() != PARTS {
        return Err(SnapshotError::SummaryCount {
            got: summaries.len(),
            expected: PARTS,
        });
    }
    let mut nodes = BTreeMap::new();
    let root = fold_at(NodePath::ROOT, summaries, &mut nodes);
    if let Some(node) = encode_summary(&root) {
        nodes.insert(NodePath::ROOT.to_key(), node);
    }
    Ok((root.hash(), nodes))
}

/// What the subtree at `path` is, given the summaries below it; stores
/// every internal node above the parts, and each leaf child of one.
fn fold_at(path: NodePath, below: &[Summary], nodes: &mut BTreeMap<Vec<u8>, Vec<u8>>) -> Summary {
    if path.depth == PART_DEPTH {
        return below[0];
    }
    let (left_below, right_below) = below.split_at(below.len() / 2);
    let left = fold_at(path.child(false), left_below, nodes);
    let right = fold_at(path.child(true), right_below, nodes);
    match (left, right) {
        (Summary::Empty, Summary::Empty) => Summary::Empty,
        (Summary::Empty, leaf @ Summary::Leaf { .. })
        | (leaf @ Summary::Leaf { .. }, Summary::Empty) => leaf,
        _ => {
            for (right_side, child) in [(false, left), (true, right)] {
                if let Some(node) = encode_summary(&child) {
                    nodes.insert(path.child(right_side).to_key(), node);
                }
            }
            let node = Node::Internal {
                left: left.hash(),
                right: right.hash(),
            };
            nodes.insert(path.to_key(), node.encode());
            Summary::Internal(node.hash())
        }
    }
}

/// The stored form of a leaf summary. An internal one has only its hash:
/// at the parts' depth its [`Part`] stores it, above [`fold_at`] does.
fn encode_summary(summary: &Summary) -> Option<Vec<u8>> {
    match summary {
        Summary::Empty | Summary::Internal(_) => None,
        Summary::Leaf {
            key_hash,
            value_hash,
        } => Some(
            Node::Leaf {
                key_hash: *key_hash,
                value_hash: *value_hash,
            }
            .encode(),
        ),
    }
}

/// One part rebuilt from its entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub index: usize,
    pub summary: Summary,
    /// The tree nodes at and below the part's path (none for an empty or
    /// one-key part: [`fold`] stores a leaf where it belongs).
    pub nodes: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Part {
    /// Rebuilds part `index` from its `(key, value)` entries (any order)
    /// and checks every key belongs to it and none repeats.
    pub fn build(index: usize, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<Part, SnapshotError> {
        if index >= PARTS {
            return Err(SnapshotError::PartIndex { part: index });
        }
        let mut leaves: Vec<(Digest, Digest, &[u8])> = entries
            .iter()
            .map(|(key, value)| (key_hash(key), value_hash(value), key.as_slice()))
            .collect();
        leaves.sort_unstable_by_key(|(key_hash, ..)| *key_hash);
        for (hash, _, key) in &leaves {
            if part_of(hash) != index {
                return Err(SnapshotError::WrongPart {
                    part: index,
                    key: printable(key),
                    first_byte: hash.as_bytes()[0],
                });
            }
        }
        if let Some(pair) = leaves.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(SnapshotError::DuplicateKey {
                part: index,
                key: printable(pair[1].2),
            });
        }
        let path = part_path(index);
        let leaves: Vec<(Digest, Digest)> = leaves.iter().map(|(k, v, _)| (*k, *v)).collect();
        let empty = MemoryTree::default();
        let mut updater = Updater {
            tree: &empty,
            writes: BTreeMap::new(),
        };
        let built = updater.build(path, &leaves);
        let mut nodes: BTreeMap<Vec<u8>, Vec<u8>> = updater
            .writes
            .into_iter()
            .filter_map(|(key, node)| node.map(|node| (key, node)))
            .collect();
        let summary = match built.node {
            Node::Empty => Summary::Empty,
            Node::Leaf {
                key_hash,
                value_hash,
            } => Summary::Leaf {
                key_hash,
                value_hash,
            },
            node @ Node::Internal { .. } => {
                nodes.insert(path.to_key(), node.encode());
                Summary::Internal(built.hash)
            }
        };
        Ok(Part {
            index,
            summary,
            nodes,
        })
    }

    /// Checks this part against the summary the certified root vouches for.
    pub fn verify(&self, expected: &Summary) -> Result<(), SnapshotError> {
        if self.summary == *expected {
            return Ok(());
        }
        Err(SnapshotError::PartMismatch {
            part: self.index,
            reason: format!("rebuilt {:?}, expected {:?}", self.summary, expected),
        })
    }
}

/// The path of part `index`: its bits are the index's.
fn part_path(index: usize) -> NodePath {
    let mut path = NodePath::ROOT;
    for depth in 0..PART_DEPTH {
        let mask = 1 << (PART_DEPTH - 1 - depth);
        path = path.child(index & mask != 0);
    }
    path
}

fn printable(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

// `bit` decides left and right everywhere else; a part's index must agree.
#[cfg(test)]
fn index_agrees_with_bits(hash: &Digest) -> bool {
    use super::bit;
    (0..PART_DEPTH)
        .all(|depth| bit(hash, depth) == (part_of(hash) >> (PART_DEPTH - 1 - depth) & 1 == 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_tree::update_tree;

    /// A tree of `count` keys, stored in memory, with its entries.
    fn tree_of(count: usize) -> (MemoryTree, Digest, Entries) {
        let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..count)
            .map(|i| {
                (
                    format!("key/{i}").into_bytes(),
                    format!("value {i}").into_bytes(),
                )
            })
            .collect();
        let writes = entries
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        let mut tree = MemoryTree::default();
        let update = update_tree(&tree, &writes).expect("update");
        tree.apply(&update.writes);
        (tree, update.root, entries)
    }

    fn parts_of(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut parts = vec![Vec::new(); PARTS];
        for (key, value) in entries {
            parts[part_of(&key_hash(key))].push((key.clone(), value.clone()));
        }
        parts
    }

    /// Rebuilding from summaries and parts gives the root and exactly the
    /// nodes the tree stores, for trees from empty to many keys per part.
    #[test]
    fn summaries_and_parts_rebuild_the_stored_tree() {
        for count in [0, 1, 2, 3, 200, 3_000] {
            let (tree, root, entries) = tree_of(count);
            let summaries = summaries(&tree).expect("summaries");
            let (folded, mut nodes) = fold(&summaries).expect("fold");
            assert_eq!(folded, root, "{count} keys");
            for (index, entries) in parts_of(&entries).iter().enumerate() {
                let part = Part::build(index, entries).expect("build");
                part.verify(&summaries[index]).expect("verify");
                nodes.extend(part.nodes);
            }
            let mut rebuilt = MemoryTree::default();
            rebuilt.apply(&nodes.into_iter().map(|(k, v)| (k, Some(v))).collect());
            assert_eq!(rebuilt, tree, "{count} keys");
        }
    }

    #[test]
    fn a_changed_summary_does_not_fold_into_the_root() {
        let (tree, root, _) = tree_of(500);
        let mut summaries = summaries(&tree).expect("summaries");
        let at = summaries
            .iter()
            .position(|s| matches!(s, Summary::Internal(_)))
            .expect("an internal part");
        summaries[at] = Summary::Internal(Digest::from_bytes([7; 32]));
        let (folded, _) = fold(&summaries).expect("fold");
        assert_ne!(folded, root);
        assert!(matches!(
            fold(&summaries[1..]),
            Err(SnapshotError::SummaryCount { got: 255, .. })
        ));
    }

    #[test]
    fn a_part_with_a_changed_missing_or_foreign_entry_is_refused() {
        let (tree, _, entries) = tree_of(2_000);
        let summaries = summaries(&tree).expect("summaries");
        let parts = parts_of(&entries);
        let index = (0..PARTS)
            .find(|i| parts[*i].len() >= 3)
            .expect("a part with keys");
        // A changed value.
        let mut changed = parts[index].clone();
        changed[0].1 = b"forged".to_vec();
        let err = Part::build(index, &changed)
            .expect("build")
            .verify(&summaries[index]);
        assert!(
            matches!(err, Err(SnapshotError::PartMismatch { .. })),
            "{err:?}"
        );
        // A missing entry.
        let missing = parts[index][1..].to_vec();
        let err = Part::build(index, &missing)
            .expect("build")
            .verify(&summaries[index]);
        assert!(
            matches!(err, Err(SnapshotError::PartMismatch { .. })),
            "{err:?}"
        );
        // An entry of another part.
        let other = (index + 1..PARTS)
            .chain(0..index)
            .find(|i| !parts[*i].is_empty())
            .expect("another");
        let mut foreign = parts[index].clone();
        foreign.push(parts[other][0].clone());
        assert!(matches!(
            Part::build(index, &foreign),
            Err(SnapshotError::WrongPart { .. })
        ));
        // A repeated key.
        let mut repeated = parts[index].clone();
        repeated.push(parts[index][0].clone());
        assert!(matches!(
            Part::build(index, &repeated),
            Err(SnapshotError::DuplicateKey { .. })
        ));
        assert!(matches!(
            Part::build(PARTS, &[]),
            Err(SnapshotError::PartIndex { .. })
        ));
    }

    #[test]
    fn part_indexes_follow_the_tree_bits() {
        for i in 0..1_000_u32 {
            assert!(index_agrees_with_bits(&key_hash(&i.to_be_bytes())));
        }
    }
}
