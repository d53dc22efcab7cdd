//! The recent tier of the transaction index.
//!
//! Transaction ids are hashes, so indexing each one in a B-tree as its
//! block commits dirties about one leaf page per transaction: in the
//! micro-benchmark that was three quarters of a durable append. Instead,
//! each block stores its `(id, result)` list as one row keyed by height
//! ([`RECENT_TRANSACTIONS`](crate::schema::RECENT_TRANSACTIONS), written
//! sequentially), and the ids wait here, in memory, until their key range
//! is merged into [`TRANSACTIONS`](crate::schema::TRANSACTIONS).
//!
//! The id space is cut into [`RANGES`] contiguous ranges by the top bits of
//! the id. The append at height `h` merges range `h % RANGES`: every
//! waiting id in it, in key order, so those inserts land in about
//! `1 / RANGES` of the index's leaves instead of one leaf each. An id
//! therefore waits at most `RANGES - 1` appends, and the row of block `h`
//! is deleted by the append at `h + RANGES - 1`, when all its ranges have
//! been merged. If more than [`RECENT_TRANSACTIONS_MAX`] ids would wait,
//! the append merges every range (and writes no row), so the number of
//! waiting ids stays bounded whatever the block sizes. Each keeps its
//! result, an outcome and at most an error message.
//!
//! **Invariant** (on disk, checked by `check`): a row exists only for a
//! height in `head - RANGES + 2 ..= head`, and lists exactly the block's
//! transactions; every transaction of the chain is in `TRANSACTIONS` or in
//! a row, and an id in both points at the same height and index.
//!
//! **Invariant** (in memory): [`Recent`] holds exactly the ids of the rows
//! that are not in `TRANSACTIONS`. It is rebuilt from the rows on open and
//! changed right after the commit that changed the rows, which lookups
//! wait out (see `Ledger::transaction`).

use std::collections::BTreeMap;

use govchain_crypto::Digest;

/// How many key ranges the id space is cut into; also the number of
/// appends after which a block's ids are all merged.
pub(crate) const RANGES: u64 = 64;

/// The most ids that wait in memory before an append merges them all.
pub(crate) const RECENT_TRANSACTIONS_MAX: usize = 262_144;

/// Where a waiting transaction was committed, and its result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) height: u64,
    pub(crate) index: u32,
    pub(crate) result: Vec<u8>,
}

/// Which ranges an append merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Merge {
    /// The range whose turn it is.
    Range(usize),
    /// Every range, because too many ids would wait.
    All,
}

impl Merge {
    /// What the append of `height` merges when `waiting` ids wait and the
    /// block brings `incoming` more, of which at most `max` may wait
    /// ([`RECENT_TRANSACTIONS_MAX`] outside tests).
    pub(crate) fn at(height: u64, waiting: usize, incoming: usize, max: usize) -> Self {
        if waiting.saturating_add(incoming) > max {
            Self::All
        } else {
            // `height % RANGES < RANGES`, which fits any usize.
            Self::Range((height % RANGES) as usize)
        }
    }

    pub(crate) fn covers(self, id: &Digest) -> bool {
        match self {
            Self::Range(range) => range_of(id) == range,
            Self::All => true,
        }
    }
}

/// The range of `id`: its top `log2(RANGES)` bits, so that a range is a
/// contiguous run of keys.
pub(crate) fn range_of(id: &Digest) -> usize {
    usize::from(id.as_bytes()[0]) * RANGES as usize / 256
}

/// The first height whose row the append at `height` may delete: rows at
/// or below it have had every range merged since they were written.
pub(crate) fn expired_through(height: u64) -> u64 {
    height.saturating_sub(RANGES - 1)
}

/// The ids waiting to be merged, by range and in key order within one.
#[derive(Debug)]
pub(crate) struct Recent {
    ranges: Vec<BTreeMap<Digest, Entry>>,
    len: usize,
}

impl Default for Recent {
    fn default() -> Self {
        Self {
            ranges: (0..RANGES).map(|_| BTreeMap::new()).collect(),
            len: 0,
        }
    }
}

impl Recent {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn get(&self, id: &Digest) -> Option<&Entry> {
        self.ranges[range_of(id)].get(id)
    }

    pub(crate) fn insert(&mut self, id: Digest, entry: Entry) {
        if self.ranges[range_of(&id)].insert(id, entry).is_none() {
            self.len += 1;
        }
    }

    /// The waiting ids `merge` covers, in key order.
    pub(crate) fn merging(&self, merge: Merge) -> impl Iterator<Item = (&Digest, &Entry)> {
        let ranges = match merge {
            Merge::Range(range) => &self.ranges[range..=range],
            Merge::All => &self.ranges[..],
        };
        ranges.iter().flatten()
    }

    /// After the append of `height` committed: forgets what `merge`
    /// merged, and keeps the block's other ids waiting.
    pub(crate) fn committed(
        &mut self,
        height: u64,
        merge: Merge,
        transactions: &[(Digest, Vec<u8>)],
    ) {
        match merge {
            Merge::Range(range) => {
                self.len -= self.ranges[range].len();
                self.ranges[range].clear();
            }
            Merge::All => {
                self.ranges.iter_mut().for_each(BTreeMap::clear);
                self.len = 0;
            }
        }
        for (index, (id, result)) in (0_u32..).zip(transactions) {
            if !merge.covers(id) {
                let entry = Entry {
                    height,
                    index,
                    result: result.clone(),
                };
                self.insert(*id, entry);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(first: u8, rest: u8) -> Digest {
        let mut bytes = [rest; 32];
        bytes[0] = first;
        Digest::from_bytes(bytes)
    }

    #[test]
    fn ranges_are_contiguous_runs_of_the_id_space() {
        assert_eq!(range_of(&id(0x00, 0xff)), 0);
        assert_eq!(range_of(&id(0x03, 0xff)), 0);
        assert_eq!(range_of(&id(0x04, 0x00)), 1);
        assert_eq!(range_of(&id(0xff, 0x00)), RANGES as usize - 1);
        let mut previous = 0;
        for first in 0..=255 {
            let range = range_of(&id(first, 0));
            assert!(range == previous || range == previous + 1);
            previous = range;
        }
    }

    #[test]
    fn each_range_has_its_turn_within_ranges_appends() {
        for start in 1..=RANGES * 2 {
            let mut seen = vec![false; RANGES as usize];
            for height in start..start + RANGES {
                match Merge::at(height, 0, 1, RECENT_TRANSACTIONS_MAX) {
                    Merge::Range(range) => seen[range] = true,
                    Merge::All => panic!("few ids merge one range"),
                }
            }
            assert!(seen.iter().all(|turn| *turn), "from height {start}");
        }
        assert_eq!(expired_through(RANGES), 1);
        assert_eq!(expired_through(3), 0);
    }

    #[test]
    fn too_many_waiting_ids_merge_every_range() {
        let max = RECENT_TRANSACTIONS_MAX;
        assert_eq!(Merge::at(5, max, 0, max), Merge::Range(5));
        assert_eq!(Merge::at(5, max - 1, 1, max), Merge::Range(5));
        assert_eq!(Merge::at(5, max, 1, max), Merge::All);
    }

    #[test]
    fn a_commit_forgets_the_merged_range_and_keeps_the_rest_waiting() {
        let mut recent = Recent::default();
        let waiting = [id(0x00, 1), id(0x04, 1)];
        for (index, waiting) in (0..).zip(waiting) {
            let entry = Entry {
                height: 1,
                index,
                result: Vec::new(),
            };
            recent.insert(waiting, entry);
        }
        let block = vec![(id(0x00, 2), b"a".to_vec()), (id(0x08, 2), b"b".to_vec())];
        let merge = Merge::Range(0);
        let merged: Vec<Digest> = recent.merging(merge).map(|(id, _)| *id).collect();
        assert_eq!(merged, vec![id(0x00, 1)]);

        recent.committed(2, merge, &block);
        assert_eq!(recent.len(), 2);
        assert_eq!(recent.get(&id(0x00, 1)), None);
        assert_eq!(recent.get(&id(0x00, 2)), None, "merged with its range");
        assert_eq!(recent.get(&id(0x04, 1)).map(|entry| entry.height), Some(1));
        assert_eq!(
            recent.get(&id(0x08, 2)),
            Some(&Entry {
                height: 2,
                index: 1,
                result: b"b".to_vec()
            })
        );

        recent.committed(3, Merge::All, &block[..1]);
        assert_eq!(recent.len(), 0);
        assert_eq!(recent.merging(Merge::All).count(), 0);
    }
}
