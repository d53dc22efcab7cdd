//! The recent tier of the state tree's nodes.
//!
//! The state tree is binary, so a block of `k` writes on `n` keys rewrites
//! about `k · (log2 n − log2 k + 2)` nodes, each a row at a random path:
//! 9.5 per written key at 100,000 keys (the `state_tree/block_update`
//! micro-benchmark). Writing those rows into redb block by block was most
//! of an append, and reading them back most of executing the next block.
//! Instead, an append stages its node writes here, in memory, and every
//! [`TREE_MERGE_BLOCKS`] appends (and at every durable commit) the latest
//! value of each staged path is written into the `state_tree` table at
//! once, in path order. The top of the tree, which every block rewrites,
//! then reaches redb once per merge instead of once per block.
//!
//! A [`Generation`] holds the node writes since the last merge, each with
//! the height that wrote it, so a reader at head `h` sees exactly the
//! writes of heights `≤ h` (an append stages its writes before its commit
//! moves the head). A merge commits the generation's rows and replaces it
//! by an empty one while readers are held off (`Ledger::tree_tier`), so a
//! reader's redb snapshot and its generation always belong together: the
//! snapshot before the merge with the generation it merged, or the one
//! after with the new one. A generation is never changed after its merge,
//! so a reader that holds it keeps a consistent view.
//!
//! **Invariant:** for every path, the node at head `h` is the newest
//! version at or below `h` in the reader's generation, or else the row in
//! its redb snapshot (a staged `None` is a deletion, not a miss).
//!
//! **Invariant:** every durable redb commit merges the tier first, so the
//! `state_tree` table of the last checkpoint always matches its head; what
//! a crash loses from the tier, the re-applied blocks stage again.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Appends between two merges of the tier into the `state_tree` table
/// (each durable checkpoint merges too): the top levels of the tree,
/// rewritten by every block, reach redb once per this many blocks.
pub(crate) const TREE_MERGE_BLOCKS: u64 = 16;

/// The longest path the state tree writes: a `u16` depth and 32 bytes of
/// key hash prefix (`NodePath::to_key` in `exec`).
const PATH_INLINE_BYTES: usize = 34;
/// The longest node it writes: a tag and two digests.
const NODE_INLINE_BYTES: usize = 65;

/// Bytes kept inside the map's own table when they fit, so staging,
/// reading and freeing a node touch no other allocation (the ledger stores
/// any bytes; longer ones go to the heap).
#[derive(Clone, Debug)]
enum Bytes<const N: usize> {
    Inline { len: u8, bytes: [u8; N] },
    Heap(Box<[u8]>),
}

impl<const N: usize> Bytes<N> {
    fn new(value: &[u8]) -> Self {
        match u8::try_from(value.len()) {
            Ok(len) if value.len() <= N => {
                let mut bytes = [0; N];
                bytes[..value.len()].copy_from_slice(value);
                Self::Inline { len, bytes }
            }
            _ => Self::Heap(value.into()),
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Self::Heap(bytes) => bytes,
        }
    }
}

impl<const N: usize> PartialEq for Bytes<N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<const N: usize> Eq for Bytes<N> {}

/// Hashes as the slice does, so that a `&[u8]` finds it.
impl<const N: usize> Hash for Bytes<N> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl<const N: usize> Borrow<[u8]> for Bytes<N> {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

type Path = Bytes<PATH_INLINE_BYTES>;
type Node = Bytes<NODE_INLINE_BYTES>;

/// One staged node: the height that wrote it, and the node (`None`
/// deletes it).
type Version = (u64, Option<Node>);

/// A path's staged nodes. Most paths have one, so it is kept apart and
/// the others (oldest first) allocate only when there are some.
#[derive(Debug)]
struct Versions {
    newest: Version,
    older: Vec<Version>,
}

/// Paths are prefixes of SHA-256 key hashes, which a client picks only by
/// picking keys; foldhash is seeded per process, so it resists flooding at
/// a fraction of SipHash's cost.
type Staged = HashMap<Path, Versions, foldhash::fast::RandomState>;

/// The node writes staged since the last merge.
#[derive(Debug, Default)]
pub(crate) struct Generation {
    nodes: RwLock<Staged>,
}

impl Generation {
    /// An empty generation with room for `paths` paths without growing:
    /// the size of the one it follows.
    pub(crate) fn with_capacity(paths: usize) -> Self {
        Self {
            nodes: RwLock::new(HashMap::with_capacity_and_hasher(
                paths,
                foldhash::fast::RandomState::default(),
            )),
        }
    }

    /// The node at `path` as of head `height`, if this generation decides
    /// it: `Some(None)` when it was deleted, `None` when the reader must
    /// look in redb.
    pub(crate) fn get(&self, path: &[u8], height: u64) -> Option<Option<Vec<u8>>> {
        let nodes = self.read();
        let versions = nodes.get(path)?;
        let (_, node) = if versions.newest.0 <= height {
            &versions.newest
        } else {
            versions
                .older
                .iter()
                .rev()
                .find(|(written, _)| *written <= height)?
        };
        Some(node.as_ref().map(|node| node.as_slice().to_vec()))
    }

    /// Stages the node writes of the block at `height`, which must be above
    /// every height staged so far.
    pub(crate) fn stage(&self, height: u64, writes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) {
        let mut nodes = self.write();
        for (path, node) in writes {
            let version = (height, node.as_deref().map(Node::new));
            if let Some(versions) = nodes.get_mut(path.as_slice()) {
                debug_assert!(versions.newest.0 < height);
                let previous = std::mem::replace(&mut versions.newest, version);
                versions.older.push(previous);
            } else {
                nodes.insert(
                    Path::new(path),
                    Versions {
                        newest: version,
                        older: Vec::new(),
                    },
                );
            }
        }
    }

    /// Takes back what [`Generation::stage`] staged at `height` (its
    /// commit failed), so a retry of that height starts clean.
    pub(crate) fn unstage(&self, height: u64) {
        self.write().retain(|_, versions| {
            if versions.newest.0 != height {
                return true;
            }
            match versions.older.pop() {
                Some(previous) => {
                    versions.newest = previous;
                    true
                }
                None => false,
            }
        });
    }

    /// Calls `write` with the newest node of every staged path, overridden
    /// by `newer` (the writes of a block that is not staged), in path
    /// order: the rows a merge writes.
    pub(crate) fn merge_rows<E>(
        &self,
        newer: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
        mut write: impl FnMut(&[u8], Option<&[u8]>) -> Result<(), E>,
    ) -> Result<(), E> {
        let nodes = self.read();
        let mut staged: Vec<(&[u8], Option<&[u8]>)> = nodes
            .iter()
            .map(|(path, versions)| {
                (
                    path.as_slice(),
                    versions.newest.1.as_ref().map(Node::as_slice),
                )
            })
            .collect();
        staged.sort_unstable_by_key(|(path, _)| *path);
        let mut newer = newer
            .iter()
            .map(|(path, node)| (path.as_slice(), node.as_deref()))
            .peekable();
        for (path, node) in staged {
            let mut overridden = false;
            while let Some(&(first, first_node)) = newer.peek()
                && first <= path
            {
                newer.next();
                overridden |= first == path;
                write(first, first_node)?;
            }
            if !overridden {
                write(path, node)?;
            }
        }
        for (path, node) in newer {
            write(path, node)?;
        }
        Ok(())
    }

    /// Staged paths.
    pub(crate) fn len(&self) -> usize {
        self.read().len()
    }

    fn read(&self) -> RwLockReadGuard<'_, Staged> {
        self.nodes
            .read()
            .expect("the tree tier is changed without panicking")
    }

    fn write(&self) -> RwLockWriteGuard<'_, Staged> {
        self.nodes
            .write()
            .expect("the tree tier is changed without panicking")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(rows: &[(&[u8], Option<&[u8]>)]) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        rows.iter()
            .map(|(path, node)| (path.to_vec(), node.map(<[u8]>::to_vec)))
            .collect()
    }

    #[test]
    fn a_reader_sees_the_versions_at_or_below_its_head() {
        let generation = Generation::default();
        generation.stage(5, &writes(&[(b"a", Some(b"a5")), (b"b", Some(b"b5"))]));
        generation.stage(6, &writes(&[(b"a", None), (b"c", Some(b"c6"))]));

        assert_eq!(
            generation.get(b"a", 4),
            None,
            "below every version: redb decides"
        );
        assert_eq!(generation.get(b"a", 5), Some(Some(b"a5".to_vec())));
        assert_eq!(generation.get(b"a", 6), Some(None), "deleted at 6");
        assert_eq!(generation.get(b"c", 5), None);
        assert_eq!(generation.get(b"c", 7), Some(Some(b"c6".to_vec())));
        assert_eq!(generation.get(b"z", 7), None);
        let newer = writes(&[(b"0", Some(b"07")), (b"b", Some(b"b7")), (b"d", None)]);
        let mut rows = Vec::new();
        generation
            .merge_rows(&newer, |path, node| {
                rows.push((path.to_vec(), node.map(<[u8]>::to_vec)));
                Ok::<_, ()>(())
            })
            .expect("merge");
        let expected: Vec<_> = writes(&[
            (b"0", Some(b"07")),
            (b"a", None),
            (b"b", Some(b"b7")),
            (b"c", Some(b"c6")),
            (b"d", None),
        ])
        .into_iter()
        .collect();
        assert_eq!(rows, expected, "path order, the newer block's writes win");
    }

    #[test]
    fn bytes_longer_than_the_inline_room_are_kept_whole() {
        let generation = Generation::default();
        let long_path = vec![7; PATH_INLINE_BYTES + 1];
        let long_node = vec![9; NODE_INLINE_BYTES + 1];
        let mut staged = BTreeMap::new();
        staged.insert(long_path.clone(), Some(long_node.clone()));
        staged.insert(vec![7; PATH_INLINE_BYTES], Some(vec![1; NODE_INLINE_BYTES]));
        staged.insert(Vec::new(), Some(Vec::new()));
        generation.stage(1, &staged);
        assert_eq!(generation.get(&long_path, 1), Some(Some(long_node)));
        assert_eq!(
            generation.get(&[7; PATH_INLINE_BYTES], 1),
            Some(Some(vec![1; NODE_INLINE_BYTES]))
        );
        assert_eq!(generation.get(&[], 1), Some(Some(Vec::new())));
        assert_eq!(generation.get(&long_path[..PATH_INLINE_BYTES - 1], 1), None);
    }

    #[test]
    fn unstaging_takes_back_only_the_failed_height() {
        let generation = Generation::default();
        generation.stage(5, &writes(&[(b"a", Some(b"a5"))]));
        generation.stage(6, &writes(&[(b"a", Some(b"a6")), (b"b", Some(b"b6"))]));

        generation.unstage(6);

        assert_eq!(generation.get(b"a", 6), Some(Some(b"a5".to_vec())));
        assert_eq!(generation.get(b"b", 6), None);
        assert_eq!(generation.len(), 1, "a path with no version left is gone");
        generation.stage(6, &writes(&[(b"b", Some(b"b6'"))]));
        assert_eq!(generation.get(b"b", 6), Some(Some(b"b6'".to_vec())));
    }
}
