//! k-anonymity over the quasi-identifier columns: the size of the smallest
//! group of output rows that agree on every quasi-identifier.
//!
//! Memory is bounded: a group is kept as the SHA-256 of its values
//! (length-prefixed) and a count, about 80 bytes with the map's overhead,
//! and at most [`GROUPS_MAX`] groups are kept (about 20 MiB). Past that the
//! counter stops and the report says k was not computed: that many
//! distinct combinations means the quasi-identifiers need coarser rules.

use std::collections::HashMap;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// Most distinct quasi-identifier combinations counted.
pub const GROUPS_MAX: usize = 262_144;

/// Counts rows per combination of quasi-identifier values.
#[derive(Debug)]
pub struct KCounter {
    columns: Vec<String>,
    groups: HashMap<[u8; 32], u64>,
    rows: u64,
    overflowed: bool,
}

/// What the counter found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KReport {
    /// The quasi-identifier columns, in rules order.
    pub columns: Vec<String>,
    /// Rows counted (the rows written).
    pub rows: u64,
    /// Distinct combinations seen, up to [`GROUPS_MAX`] + 1.
    pub groups: u64,
    /// The smallest group's size; `None` when no row was counted, when no
    /// column is a quasi-identifier, or past [`GROUPS_MAX`] groups.
    pub k: Option<u64>,
    /// Whether counting stopped at [`GROUPS_MAX`] groups.
    pub overflowed: bool,
}

impl KCounter {
    pub fn new(columns: Vec<String>) -> Self {
        Self {
            columns,
            groups: HashMap::new(),
            rows: 0,
            overflowed: false,
        }
    }

    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Counts one row, given its quasi-identifier values in column order.
    ///
    /// # Panics
    /// If `values` does not have one value per column (a bug in the caller).
    pub fn count<'a>(&mut self, values: impl IntoIterator<Item = &'a str>) {
        let mut hasher = Sha256::new();
        let mut given = 0;
        for value in values {
            hasher.update((value.len() as u64).to_be_bytes());
            hasher.update(value.as_bytes());
            given += 1;
        }
        assert_eq!(given, self.columns.len(), "one value per quasi-identifier");
        self.rows += 1;
        if self.overflowed {
            return;
        }
        let group: [u8; 32] = hasher.finalize().into();
        if let Some(count) = self.groups.get_mut(&group) {
            *count += 1;
        } else if self.groups.len() < GROUPS_MAX {
            self.groups.insert(group, 1);
        } else {
            self.overflowed = true;
            self.groups = HashMap::new();
        }
    }

    pub fn report(&self) -> KReport {
        let groups = if self.overflowed {
            GROUPS_MAX as u64 + 1
        } else {
            self.groups.len() as u64
        };
        let k = if self.overflowed || self.columns.is_empty() {
            None
        } else {
            self.groups.values().min().copied()
        };
        KReport {
            columns: self.columns.clone(),
            rows: self.rows,
            groups,
            k,
            overflowed: self.overflowed,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn k_is_the_smallest_group() {
        let mut counter = KCounter::new(vec!["year".into(), "district".into()]);
        for row in [
            ["1980", "SW1"],
            ["1980", "SW1"],
            ["1980", "SW1"],
            ["1990", "N1"],
            ["1990", "N1"],
        ] {
            counter.count(row);
        }
        let report = counter.report();
        assert_eq!(report.k, Some(2));
        assert_eq!(report.groups, 2);
        assert_eq!(report.rows, 5);
        counter.count(["1980", "N1"]);
        assert_eq!(counter.report().k, Some(1));
    }

    #[test]
    fn values_are_length_prefixed_so_splits_do_not_collide() {
        let mut counter = KCounter::new(vec!["a".into(), "b".into()]);
        counter.count(["ab", "c"]);
        counter.count(["a", "bc"]);
        assert_eq!(counter.report().groups, 2);
    }

    #[test]
    fn past_the_bound_k_is_not_computed() {
        let mut counter = KCounter::new(vec!["id".into()]);
        for i in 0..=GROUPS_MAX {
            counter.count([i.to_string().as_str()]);
        }
        let report = counter.report();
        assert!(report.overflowed);
        assert_eq!(report.k, None);
        assert_eq!(report.rows, GROUPS_MAX as u64 + 1);
    }

    proptest! {
        #[test]
        fn k_matches_a_plain_count(rows in proptest::collection::vec((0u8..4, 0u8..3), 1..200)) {
            let mut counter = KCounter::new(vec!["x".into(), "y".into()]);
            let mut plain = std::collections::BTreeMap::new();
            for (x, y) in &rows {
                counter.count([x.to_string().as_str(), y.to_string().as_str()]);
                *plain.entry((x, y)).or_insert(0u64) += 1;
            }
            prop_assert_eq!(counter.report().k, plain.values().min().copied());
            prop_assert_eq!(counter.report().groups, plain.len() as u64);
        }
    }
}
