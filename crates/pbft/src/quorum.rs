use govchain_crypto::PublicKey;

use crate::{ReplicaIndex, View};

/// Validators are limited so that indexes and vote sets stay small.
pub const VALIDATORS_MAX: usize = 256;

/// The validators of a chain, in genesis order, and the quorum arithmetic.
#[derive(Clone, Debug)]
pub struct ValidatorSet {
    keys: Vec<PublicKey>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValidatorSetError {
    #[error("a validator set needs 1 to {max} validators, got {got}")]
    Size { got: usize, max: usize },
    #[error("validator {second} has the same consensus key as validator {first}")]
    DuplicateKey { first: usize, second: usize },
}

impl ValidatorSet {
    pub fn new(keys: Vec<PublicKey>) -> Result<Self, ValidatorSetError> {
        if keys.is_empty() || keys.len() > VALIDATORS_MAX {
            return Err(ValidatorSetError::Size {
                got: keys.len(),
                max: VALIDATORS_MAX,
            });
        }
        for (second, key) in keys.iter().enumerate() {
            if let Some(first) = keys[..second].iter().position(|k| k == key) {
                return Err(ValidatorSetError::DuplicateKey { first, second });
            }
        }
        Ok(Self { keys })
    }

    /// n, the number of validators.
    pub fn len(&self) -> u32 {
        u32::try_from(self.keys.len()).expect("at most VALIDATORS_MAX validators")
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
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
        self.keys.get(usize::try_from(index).ok()?)
    }

    pub fn primary(&self, view: View) -> ReplicaIndex {
        u32::try_from(view % u64::from(self.len())).expect("n fits in u32")
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
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
