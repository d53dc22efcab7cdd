//! A small seeded PRNG, so that a run is a pure function of its seed.

/// SplitMix64 (Steele, Lea and Flood, 2014): one `u64` of state, fast, and
/// statistically good enough to draw faults. Never seeded from the OS.
#[derive(Clone, Debug)]
pub struct Rng(u64);

/// Probabilities are integers in parts per million, so that drawing one is
/// exact integer arithmetic on every platform.
pub const PPM: u32 = 1_000_000;

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n`.
    ///
    /// # Panics
    /// If `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0) has no value");
        self.next_u64() % n
    }

    /// A value in `low..=high`.
    ///
    /// # Panics
    /// If `low > high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "empty range {low}..={high}");
        low + self.below(high - low + 1)
    }

    /// An index into a slice of `len` elements.
    pub fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.below(len as u64)).expect("below len fits in usize")
    }

    /// True with probability `ppm` / 1,000,000.
    pub fn chance(&mut self, ppm: u32) -> bool {
        self.below(u64::from(PPM)) < u64::from(ppm)
    }

    /// True with probability 1 / `n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// An independent stream, so that drawing more from one concern (say,
    /// the network) does not shift every draw of another (the faults).
    pub fn fork(&mut self) -> Rng {
        Rng(self.next_u64())
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.index(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn ranges_are_inclusive_and_bounded() {
        let mut rng = Rng::new(1);
        let mut seen = [false; 3];
        for _ in 0..1_000 {
            let value = rng.range(5, 7);
            assert!((5..=7).contains(&value));
            seen[(value - 5) as usize] = true;
        }
        assert_eq!(seen, [true; 3]);
    }
}
