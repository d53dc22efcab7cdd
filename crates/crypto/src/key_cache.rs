//! [`KeyCache`]: parsed public keys of recent signers.
//!
//! Parsing a public key decompresses a curve point, which costs about as
//! much as the rest of a batched verification. The keys that sign a
//! chain's transactions repeat (departments, citizens who act more than
//! once), so a node that remembers the last few thousand parses does that
//! work once per signer instead of once per transaction.
//!
//! Written here rather than taken from an LRU crate because nothing needs
//! exact recency: two generations of a hash map give "recently used" with
//! O(1) work, a hard bound of twice the capacity, and no dependency. A hit
//! in the old generation moves the key to the new one; when the new one is
//! full it becomes the old one, and the keys not used since are dropped.

use std::collections::HashMap;

use crate::{KeyError, PublicKey};

/// Parsed public keys, at most twice `capacity` of them.
#[derive(Debug)]
pub struct KeyCache {
    capacity: usize,
    current: HashMap<[u8; 32], PublicKey>,
    previous: HashMap<[u8; 32], PublicKey>,
}

impl KeyCache {
    /// # Panics
    ///
    /// If `capacity` is 0.
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a key cache holds at least one key");
        Self {
            capacity,
            current: HashMap::with_capacity(capacity),
            previous: HashMap::new(),
        }
    }

    /// [`PublicKey::from_slice`], remembered: the same verdict for the same
    /// bytes. Refused bytes are not remembered, so they cost a parse each
    /// time, as without the cache.
    pub fn parse(&mut self, bytes: &[u8]) -> Result<PublicKey, KeyError> {
        let Ok(array) = <[u8; 32]>::try_from(bytes) else {
            return PublicKey::from_slice(bytes);
        };
        if let Some(key) = self.current.get(&array) {
            return Ok(*key);
        }
        let key = match self.previous.remove(&array) {
            Some(key) => key,
            None => PublicKey::from_slice(bytes)?,
        };
        if self.current.len() == self.capacity {
            self.previous =
                std::mem::replace(&mut self.current, HashMap::with_capacity(self.capacity));
        }
        self.current.insert(array, key);
        Ok(key)
    }

    /// How many parsed keys are held.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SigningKey;

    fn key(n: u8) -> [u8; 32] {
        *SigningKey::from_seed([n; 32]).public_key().as_bytes()
    }

    #[test]
    fn gives_the_verdicts_of_an_uncached_parse() {
        let mut cache = KeyCache::new(4);
        let good = key(1);
        for _ in 0..2 {
            assert_eq!(cache.parse(&good), PublicKey::from_slice(&good));
        }
        // The identity point has small order: refused, and not remembered.
        let mut weak = [0_u8; 32];
        weak[0] = 1;
        for _ in 0..2 {
            assert_eq!(cache.parse(&weak), Err(KeyError::PublicKeyWeak));
        }
        assert_eq!(
            cache.parse(&good[..31]),
            Err(KeyError::PublicKeyLength { got: 31 })
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn holds_at_most_two_generations_and_keeps_what_is_used() {
        let mut cache = KeyCache::new(2);
        for n in 1..=4 {
            cache.parse(&key(n)).expect("valid");
        }
        // 1 and 2 became the old generation when 3 arrived; 4 filled the
        // new one with 3.
        assert_eq!(cache.len(), 4);
        // Using 1 moves it to the new generation, which was full: 3 and 4
        // become the old one and 2, unused, is dropped.
        cache.parse(&key(1)).expect("valid");
        assert_eq!(cache.len(), 3);
        assert!(cache.current.contains_key(&key(1)));
        assert!(!cache.previous.contains_key(&key(2)));
        for n in 10..40 {
            cache.parse(&key(n)).expect("valid");
            assert!(cache.len() <= 4);
        }
    }
}
