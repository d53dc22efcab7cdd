//! The state tree: a sparse Merkle tree over every key of world state, whose
//! root is the block header's `state_root`.
//!
//! A key sits at the path given by the bits of its key hash
//! ([`key_hash`], SHA-256 with a domain tag), most significant bit first,
//! 0 to the left. The tree is kept *compact*: a subtree that holds one
//! key is that key's leaf, placed where the subtree begins, and a subtree
//! that holds none is empty (hash [`EMPTY_ROOT`], all zeros, never stored).
//! So the tree of a set of `(key, value)` pairs is one tree whatever the
//! order of the writes that made it, and a proof has about `log2(keys)`
//! sibling hashes.
//!
//! Nodes are read through [`TreeRead`] (the node implements it on the
//! ledger) and a block's changes come back as [`TreeUpdate::writes`], keyed
//! by [`NodePath::to_key`], for the ledger to store in the same atomic
//! append as the block. Only the current tree is stored: a node's path is
//! its key, so the writes of a block overwrite and delete in place.
//!
//! **Invariant:** a stored internal node has two children of which at most
//! one is empty, and a non-empty child's node is stored at the child's path;
//! a subtree with exactly one key is a leaf (never an internal node).

use std::collections::BTreeMap;

use govchain_crypto::{Digest, DomainHasher};

use crate::state::StateError;

mod proof;
pub mod snapshot;
#[cfg(test)]
mod tests;

pub use proof::{ProofError, StateProof, prove};

/// Read access to the stored nodes of the state tree at the head.
pub trait TreeRead {
    /// The encoded node stored at `path` (a [`NodePath::to_key`]), if any.
    fn tree_node(&self, path: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
}

/// The root of a tree with no key: the state root at genesis (height 0).
pub const EMPTY_ROOT: Digest = Digest::from_bytes([0; 32]);

/// Bits in a key hash, hence the deepest a node can lie.
pub const KEY_BITS: u16 = 256;

/// Where a state key lies in the tree.
pub fn key_hash(key: &[u8]) -> Digest {
    DomainHasher::new("govchain/state-tree/key/v1")
        .bytes(key)
        .finish()
}

/// What a leaf commits to instead of the value itself.
pub fn value_hash(value: &[u8]) -> Digest {
    DomainHasher::new("govchain/state-tree/value/v1")
        .bytes(value)
        .finish()
}

fn leaf_hash(key_hash: &Digest, value_hash: &Digest) -> Digest {
    DomainHasher::new("govchain/state-tree/leaf/v1")
        .digest(key_hash)
        .digest(value_hash)
        .finish()
}

fn internal_hash(left: &Digest, right: &Digest) -> Digest {
    DomainHasher::new("govchain/state-tree/node/v1")
        .digest(left)
        .digest(right)
        .finish()
}

/// Bit `depth` of `hash`, most significant first: `true` goes right.
///
/// # Panics
///
/// If `depth >= KEY_BITS`.
fn bit(hash: &Digest, depth: u16) -> bool {
    let byte = hash.as_bytes()[usize::from(depth / 8)];
    (byte >> (7 - depth % 8)) & 1 == 1
}

/// How many leading bits `a` and `b` share.
fn common_prefix_bits(a: &Digest, b: &Digest) -> u16 {
    let mut bits = 0;
    for (x, y) in a.as_bytes().iter().zip(b.as_bytes()) {
        let differ = x ^ y;
        if differ != 0 {
            return bits + u16::try_from(differ.leading_zeros()).expect("below 8");
        }
        bits += 8;
    }
    bits
}

/// A position in the tree: a depth and the first `depth` bits of the key
/// hashes below it (the other bits are zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodePath {
    depth: u16,
    bits: [u8; 32],
}

impl NodePath {
    pub const ROOT: NodePath = NodePath {
        depth: 0,
        bits: [0; 32],
    };

    /// # Panics
    ///
    /// If this path is at [`KEY_BITS`]: a key hash has no more bits.
    fn child(&self, right: bool) -> NodePath {
        assert!(self.depth < KEY_BITS, "a leaf level has no children");
        let mut bits = self.bits;
        if right {
            bits[usize::from(self.depth / 8)] |= 0x80 >> (self.depth % 8);
        }
        NodePath {
            depth: self.depth + 1,
            bits,
        }
    }

    /// The storage key: depth (`u16` big-endian), then the prefix bytes
    /// that hold its bits. Distinct paths have distinct keys.
    pub fn to_key(&self) -> Vec<u8> {
        self.key().as_slice().to_vec()
    }

    /// [`NodePath::to_key`] on the stack: a read needs no allocation.
    fn key(&self) -> StackKey {
        let prefix_len = usize::from(self.depth.div_ceil(8));
        let mut bytes = [0; STACK_KEY_BYTES];
        bytes[..2].copy_from_slice(&self.depth.to_be_bytes());
        bytes[2..2 + prefix_len].copy_from_slice(&self.bits[..prefix_len]);
        StackKey {
            len: 2 + prefix_len,
            bytes,
        }
    }
}

/// The longest storage key: the depth and 32 bytes of key hash.
const STACK_KEY_BYTES: usize = 2 + Digest::LEN;

/// A storage key held on the stack.
struct StackKey {
    len: usize,
    bytes: [u8; STACK_KEY_BYTES],
}

impl StackKey {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// One node of the tree as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    Empty,
    Leaf {
        key_hash: Digest,
        value_hash: Digest,
    },
    Internal {
        left: Digest,
        right: Digest,
    },
}

const TAG_LEAF: u8 = 1;
const TAG_INTERNAL: u8 = 2;
/// A tag and two digests.
const NODE_BYTES: usize = 1 + 2 * Digest::LEN;

impl Node {
    pub(crate) fn hash(&self) -> Digest {
        match self {
            Node::Empty => EMPTY_ROOT,
            Node::Leaf {
                key_hash,
                value_hash,
            } => leaf_hash(key_hash, value_hash),
            Node::Internal { left, right } => internal_hash(left, right),
        }
    }

    /// # Panics
    ///
    /// For [`Node::Empty`], which is never stored.
    fn encode(&self) -> Vec<u8> {
        let (tag, first, second) = match self {
            Node::Empty => panic!("an empty subtree is never stored"),
            Node::Leaf {
                key_hash,
                value_hash,
            } => (TAG_LEAF, key_hash, value_hash),
            Node::Internal { left, right } => (TAG_INTERNAL, left, right),
        };
        let mut bytes = Vec::with_capacity(NODE_BYTES);
        bytes.push(tag);
        bytes.extend_from_slice(first.as_bytes());
        bytes.extend_from_slice(second.as_bytes());
        bytes
    }

    fn decode(path: &[u8], bytes: &[u8]) -> Result<Node, StateError> {
        let corrupt = |reason: String| StateError::Corrupt {
            key: format!("state tree node {}", hex(path)),
            reason,
        };
        if bytes.len() != NODE_BYTES {
            return Err(corrupt(format!(
                "{} bytes, expected {NODE_BYTES}",
                bytes.len()
            )));
        }
        let digest = |range: std::ops::Range<usize>| {
            Digest::from_slice(&bytes[range]).expect("the length was checked")
        };
        let (first, second) = (digest(1..33), digest(33..65));
        match bytes[0] {
            TAG_LEAF => Ok(Node::Leaf {
                key_hash: first,
                value_hash: second,
            }),
            TAG_INTERNAL if first == EMPTY_ROOT && second == EMPTY_ROOT => {
                Err(corrupt("an internal node with two empty children".into()))
            }
            TAG_INTERNAL => Ok(Node::Internal {
                left: first,
                right: second,
            }),
            tag => Err(corrupt(format!("unknown node tag {tag}"))),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the node stored at `path`; absent means empty.
pub(crate) fn load<R: TreeRead + ?Sized>(tree: &R, path: &NodePath) -> Result<Node, StateError> {
    let key = path.key();
    match tree.tree_node(key.as_slice())? {
        None => Ok(Node::Empty),
        Some(bytes) => Node::decode(key.as_slice(), &bytes),
    }
}

/// What applying one block's state writes did to the tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeUpdate {
    /// The root after the writes: the block's `state_root`.
    pub root: Digest,
    /// Node changes by [`NodePath::to_key`]; `None` deletes.
    pub writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

/// Applies a block's state writes (`None` deletes the key) to the tree in
/// one pass: each changed node is hashed once however many of the block's
/// keys lie below it.
///
/// # Panics
///
/// If two keys of `writes` have the same key hash (a SHA-256 collision).
pub fn update_tree<R: TreeRead + ?Sized>(
    tree: &R,
    writes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
) -> Result<TreeUpdate, StateError> {
    let mut updates: Vec<(Digest, Option<Digest>)> = writes
        .iter()
        .map(|(key, value)| (key_hash(key), value.as_deref().map(value_hash)))
        .collect();
    updates.sort_unstable_by_key(|(key_hash, _)| *key_hash);
    assert!(
        updates.windows(2).all(|pair| pair[0].0 != pair[1].0),
        "two state keys have the same SHA-256 key hash"
    );
    let mut updater = Updater {
        tree,
        writes: BTreeMap::new(),
    };
    let before = load(tree, &NodePath::ROOT)?;
    let before_hash = before.hash();
    let after = updater.update(NodePath::ROOT, before, before_hash, &updates)?;
    updater.store(&NodePath::ROOT, before_hash, &after);
    Ok(TreeUpdate {
        root: after.hash,
        writes: updater.writes,
    })
}

struct Updater<'a, R: ?Sized> {
    tree: &'a R,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

/// A node and its hash, computed once: each changed node is hashed when it
/// is made, and its parent, the comparison with what it replaces and the
/// root reuse that hash.
#[derive(Clone, Copy)]
struct Hashed {
    node: Node,
    hash: Digest,
}

impl Hashed {
    const EMPTY: Hashed = Hashed {
        node: Node::Empty,
        hash: EMPTY_ROOT,
    };

    fn new(node: Node) -> Self {
        Hashed {
            hash: node.hash(),
            node,
        }
    }
}

/// One child of an internal node being updated.
struct Side {
    path: NodePath,
    hash_before: Digest,
    /// `None` when no update reached it.
    after: Option<Hashed>,
}

impl Side {
    fn hash_after(&self) -> Digest {
        self.after.map_or(self.hash_before, |after| after.hash)
    }
}

impl<R: TreeRead + ?Sized> Updater<'_, R> {
    /// The subtree at `path`, which was `current` (hashing to
    /// `current_hash`), after `updates` (sorted by key hash, all below
    /// `path`). Stores every changed node below `path`; the caller stores
    /// the one at `path`.
    fn update(
        &mut self,
        path: NodePath,
        current: Node,
        current_hash: Digest,
        updates: &[(Digest, Option<Digest>)],
    ) -> Result<Hashed, StateError> {
        if updates.is_empty() {
            return Ok(Hashed {
                node: current,
                hash: current_hash,
            });
        }
        match current {
            Node::Internal { left, right } => self.update_internal(path, left, right, updates),
            Node::Empty => Ok(self.build(path, &live_leaves(None, updates))),
            Node::Leaf {
                key_hash,
                value_hash,
            } => Ok(self.build(path, &live_leaves(Some((key_hash, value_hash)), updates))),
        }
    }

    fn update_internal(
        &mut self,
        path: NodePath,
        left: Digest,
        right: Digest,
        updates: &[(Digest, Option<Digest>)],
    ) -> Result<Hashed, StateError> {
        let split = updates.partition_point(|(key_hash, _)| !bit(key_hash, path.depth));
        let (left_updates, right_updates) = updates.split_at(split);
        let left = self.side(path.child(false), left, left_updates)?;
        let right = self.side(path.child(true), right, right_updates)?;
        let (left_hash, right_hash) = (left.hash_after(), right.hash_after());
        // A child left alone beside an empty one moves up if it is a leaf.
        let lone = match (left_hash == EMPTY_ROOT, right_hash == EMPTY_ROOT) {
            (true, true) => Some(Hashed::EMPTY),
            (true, false) => Some(self.resolve(&right)?),
            (false, true) => Some(self.resolve(&left)?),
            (false, false) => None,
        };
        if let Some(
            lone @ Hashed {
                node: Node::Empty | Node::Leaf { .. },
                ..
            },
        ) = lone
        {
            self.store(&left.path, left.hash_before, &Hashed::EMPTY);
            self.store(&right.path, right.hash_before, &Hashed::EMPTY);
            return Ok(lone);
        }
        for side in [&left, &right] {
            if let Some(after) = &side.after {
                self.store(&side.path, side.hash_before, after);
            }
        }
        Ok(Hashed::new(Node::Internal {
            left: left_hash,
            right: right_hash,
        }))
    }

    fn side(
        &mut self,
        path: NodePath,
        hash_before: Digest,
        updates: &[(Digest, Option<Digest>)],
    ) -> Result<Side, StateError> {
        let after = if updates.is_empty() {
            None
        } else {
            let before = self.load_child(&path, hash_before)?;
            Some(self.update(path, before, hash_before, updates)?)
        };
        Ok(Side {
            path,
            hash_before,
            after,
        })
    }

    fn resolve(&self, side: &Side) -> Result<Hashed, StateError> {
        match side.after {
            Some(after) => Ok(after),
            None => Ok(Hashed {
                node: self.load_child(&side.path, side.hash_before)?,
                hash: side.hash_before,
            }),
        }
    }

    /// The child at `path` whose parent records `hash`; checked against it
    /// (so `hash` is its hash).
    fn load_child(&self, path: &NodePath, hash: Digest) -> Result<Node, StateError> {
        if hash == EMPTY_ROOT {
            return Ok(Node::Empty);
        }
        let node = load(self.tree, path)?;
        let actual = node.hash();
        if actual != hash {
            return Err(StateError::Corrupt {
                key: format!("state tree node {}", hex(&path.to_key())),
                reason: format!("hashes to {actual}, its parent says {hash}"),
            });
        }
        Ok(node)
    }

    /// The canonical subtree at `path` of `leaves` (sorted by key hash),
    /// where nothing is stored below `path` yet.
    fn build(&mut self, path: NodePath, leaves: &[(Digest, Digest)]) -> Hashed {
        match leaves {
            [] => Hashed::EMPTY,
            [(key_hash, value_hash)] => Hashed::new(Node::Leaf {
                key_hash: *key_hash,
                value_hash: *value_hash,
            }),
            _ => {
                let split = leaves.partition_point(|(key_hash, _)| !bit(key_hash, path.depth));
                let (left_path, right_path) = (path.child(false), path.child(true));
                let left = self.build(left_path, &leaves[..split]);
                let right = self.build(right_path, &leaves[split..]);
                self.store(&left_path, EMPTY_ROOT, &left);
                self.store(&right_path, EMPTY_ROOT, &right);
                Hashed::new(Node::Internal {
                    left: left.hash,
                    right: right.hash,
                })
            }
        }
    }

    /// Records `after` as the node at `path`, where a node hashing to
    /// `hash_before` was (nothing, if that is [`EMPTY_ROOT`]).
    fn store(&mut self, path: &NodePath, hash_before: Digest, after: &Hashed) {
        match after.node {
            Node::Empty if hash_before == EMPTY_ROOT => {}
            Node::Empty => {
                self.writes.insert(path.to_key(), None);
            }
            _ if after.hash == hash_before => {}
            node => {
                self.writes.insert(path.to_key(), Some(node.encode()));
            }
        }
    }
}

/// The keys present after `updates` in a subtree that held `existing` (or
/// nothing): `(key hash, value hash)` sorted by key hash.
fn live_leaves(
    existing: Option<(Digest, Digest)>,
    updates: &[(Digest, Option<Digest>)],
) -> Vec<(Digest, Digest)> {
    let mut leaves: Vec<(Digest, Digest)> = updates
        .iter()
        .filter_map(|(key_hash, value_hash)| value_hash.map(|value_hash| (*key_hash, value_hash)))
        .collect();
    if let Some((key_hash, value_hash)) = existing
        && updates
            .binary_search_by_key(&key_hash, |(updated, _)| *updated)
            .is_err()
    {
        let at = leaves.partition_point(|(other, _)| *other < key_hash);
        leaves.insert(at, (key_hash, value_hash));
    }
    leaves
}

/// Stored tree nodes in memory: for tests, benchmarks and tools that keep
/// a state tree without a ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryTree {
    nodes: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl MemoryTree {
    /// Applies [`TreeUpdate::writes`].
    pub fn apply(&mut self, writes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) {
        for (path, node) in writes {
            match node {
                Some(node) => self.nodes.insert(path.clone(), node.clone()),
                None => self.nodes.remove(path),
            };
        }
    }

    /// Stored nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

impl TreeRead for MemoryTree {
    fn tree_node(&self, path: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.nodes.get(path).cloned())
    }
}
