use govchain_crypto::PublicKey;

use crate::{ReplicaIndex, View};

/// Validators are limited so that indexes and vote sets stay small.
pub const VALIDATORS_MAX: usize = 256;

/// The validators in force for a range of heights, and the quorum
/// arithmetic.
///
/// A validator's index is its place in the chain's membership history, not
/// in this set: genesis validators are `0..n`, a validator added later gets
/// the next unused index, and a removed one leaves a gap. So an index names
/// the same key in every set it appears in, and a message signed in one set
/// verifies in another only for a validator that is in both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet {
    /// Sorted by index; no index or key twice.
    members: Vec<(ReplicaIndex, PublicKey)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValidatorSetError {
    #[error("a validator set needs 1 to {max} validators, got {got}")]
    Size { got: usize, max: usize },
    #[error("validator {second} has the same consensus key as validator {first}")]
    DuplicateKey { first: usize, second: usize },
    #[error("validator index {index} appears twice")]
    DuplicateIndex { index: ReplicaIndex },
}

impl ValidatorSet {
    /// The genesis set: `keys[i]` is validator `i`.
    pub fn new(keys: Vec<PublicKey>) -> Result<Self, ValidatorSetError> {
        let members = (0..)
            .zip(keys)
            .map(|(index, key): (ReplicaIndex, PublicKey)| (index, key))
            .collect();
        Self::from_members(members)
    }

    /// A set of `(index, key)` pairs in any order.
    pub fn from_members(
        mut members: Vec<(ReplicaIndex, PublicKey)>,
    ) -> Result<Self, ValidatorSetError> {
        if members.is_empty() || members.len() > VALIDATORS_MAX {
            return Err(ValidatorSetError::Size {
                got: members.len(),
                max: VALIDATORS_MAX,
            });
        }
        members.sort_by_key(|(index, _)| *index);
        if let Some(pair) = members.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(ValidatorSetError::DuplicateIndex { index: pair[0].0 });
        }
        for (second, (_, key)) in members.iter().enumerate() {
            if let Some(first) = members[..second].iter().position(|(_, k)| k == key) {
                return Err(ValidatorSetError::DuplicateKey { first, second });
            }
        }
        Ok(Self { members })
    }

    /// n, the number of validators.
    pub fn len(&self) -> u32 {
        u32::try_from(self.members.len()).expect("at most VALIDATORS_MAX validators")
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// f, the number of Byzantine validators tolerated: the largest f with
    /// n >= 3f + 1.
    pub fn faults_tolerated(&self) -> u32 {
        (self.len() - 1) / 3
    }

    /// The smallest number of distinct validators such that any two quorums
    /// share at least f + 1 validators, so at least one honest one:
    /// 2q - n >= f + 1. For n = 3f + 1 this is 2f + 1.
    pub fn quorum(&self) -> u32 {
        (self.len() + self.faults_tolerated()) / 2 + 1
    }

    pub fn key(&self, index: ReplicaIndex) -> Option<&PublicKey> {
        let at = self
            .members
            .binary_search_by_key(&index, |(i, _)| *i)
            .ok()?;
        Some(&self.members[at].1)
    }

    pub fn contains(&self, index: ReplicaIndex) -> bool {
        self.key(index).is_some()
    }

    /// The primary of `view`: the members take turns in index order.
    pub fn primary(&self, view: View) -> ReplicaIndex {
        let at = usize::try_from(view % u64::from(self.len())).expect("n fits in usize");
        self.members[at].0
    }

    /// The members, sorted by index.
    pub fn members(&self) -> &[(ReplicaIndex, PublicKey)] {
        &self.members
    }

    /// The index of the validator with `key`, if it is a member.
    pub fn index_of(&self, key: &PublicKey) -> Option<ReplicaIndex> {
        self.members
            .iter()
            .find(|(_, k)| k == key)
            .map(|(index, _)| *index)
    }
}

#[cfg(test)]
mod tests {
    use govchain_crypto::SigningKey;
    use proptest::prelude::*;

    use super::*;

    fn set(n: usize) -> ValidatorSet {
        let keys = (0..n)
            .map(|i| {
                let mut seed = [0u8; 32];
                seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
                SigningKey::from_seed(seed).public_key()
            })
            .collect();
        ValidatorSet::new(keys).expect("valid set")
    }

    #[test]
    fn classic_sizes() {
        assert_eq!((set(1).faults_tolerated(), set(1).quorum()), (0, 1));
        assert_eq!((set(4).faults_tolerated(), set(4).quorum()), (1, 3));
        assert_eq!((set(7).faults_tolerated(), set(7).quorum()), (2, 5));
        assert_eq!((set(20).faults_tolerated(), set(20).quorum()), (6, 14));
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let key = SigningKey::from_seed([1; 32]).public_key();
        assert_eq!(
            ValidatorSet::new(vec![key, key]).err(),
            Some(ValidatorSetError::DuplicateKey {
                first: 0,
                second: 1
            })
        );
    }

    #[test]
    fn indexes_are_kept_with_gaps() {
        let keys: Vec<_> = set(5).members().iter().map(|(_, k)| *k).collect();
        // Validator 1 removed, validator 7 added later.
        let members = vec![(7, keys[4]), (0, keys[0]), (2, keys[2]), (3, keys[3])];
        let set = ValidatorSet::from_members(members).expect("valid");
        assert_eq!(set.len(), 4);
        assert_eq!(set.key(7), Some(&keys[4]));
        assert_eq!(set.key(1), None);
        // Primaries take turns in index order, skipping the gap.
        let primaries: Vec<_> = (0..5).map(|view| set.primary(view)).collect();
        assert_eq!(primaries, vec![0, 2, 3, 7, 0]);
        assert_eq!(set.index_of(&keys[4]), Some(7));
        assert_eq!(
            ValidatorSet::from_members(vec![(1, keys[0]), (1, keys[1])]).err(),
            Some(ValidatorSetError::DuplicateIndex { index: 1 })
        );
    }

    #[test]
    fn empty_is_refused() {
        assert!(ValidatorSet::new(vec![]).is_err());
    }

    proptest! {
        #[test]
        fn quorums_intersect_in_an_honest_validator(n in 1u32..=100) {
            let f = (n - 1) / 3;
            let q = (n + f) / 2 + 1;
            // Any two quorums share more than f validators.
            prop_assert!(2 * q > n + f);
            // Liveness: the honest validators alone form a quorum.
            prop_assert!(q <= n - f);
            prop_assert!(3 * f < n);
        }
    }
}
