use std::fmt;

use sha2::{Digest as _, Sha256};

/// A SHA-256 digest: a block hash, a transaction id, a Merkle root.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Digest([u8; 32]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DigestError {
    #[error("a digest is 32 bytes, got {got}")]
    Length { got: usize },
    #[error("a digest is 64 hex characters: {0}")]
    Hex(String),
}

impl Digest {
    pub const LEN: usize = 32;

    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self, DigestError> {
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| DigestError::Length { got: bytes.len() })?;
        Ok(Self(array))
    }

    pub fn from_hex(text: &str) -> Result<Self, DigestError> {
        let bytes = hex::decode(text.trim()).map_err(|err| DigestError::Hex(err.to_string()))?;
        Self::from_slice(&bytes)
    }

    /// SHA-256 of `data` with no domain tag, e.g. the hash of a record file.
    pub fn sha256(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_vec(&self) -> Vec<u8> {
        self.0.to_vec()
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex characters, for logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

/// Builds a domain-separated SHA-256 digest from fixed-width fields.
///
/// Every digest that is signed or compared across nodes starts with a domain
/// tag (e.g. `"govchain/tx/v1"`) so that bytes signed for one purpose can never
/// be replayed as another. Variable-length fields are length-prefixed, and all
/// integers are big-endian, so the encoding is unambiguous.
pub struct DomainHasher(Sha256);

impl DomainHasher {
    pub fn new(domain: &str) -> Self {
        let mut hasher = Self(Sha256::new());
        hasher.bytes(domain.as_bytes());
        hasher
    }

    /// Appends a length-prefixed byte string.
    pub fn bytes(&mut self, data: &[u8]) -> &mut Self {
        let len = u32::try_from(data.len()).expect("hashed fields are far below 4 GiB");
        self.0.update(len.to_be_bytes());
        self.0.update(data);
        self
    }

    /// Appends 32 bytes with no length prefix.
    pub fn digest(&mut self, digest: &Digest) -> &mut Self {
        self.0.update(digest.0);
        self
    }

    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.0.update(value.to_be_bytes());
        self
    }

    pub fn u32(&mut self, value: u32) -> &mut Self {
        self.0.update(value.to_be_bytes());
        self
    }

    pub fn finish(&mut self) -> Digest {
        Digest(std::mem::take(&mut self.0).finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let digest = Digest::sha256(b"record");
        assert_eq!(Digest::from_hex(&digest.to_hex()), Ok(digest));
    }

    #[test]
    fn wrong_lengths_are_errors() {
        assert_eq!(
            Digest::from_slice(&[0; 31]),
            Err(DigestError::Length { got: 31 })
        );
        assert!(matches!(Digest::from_hex("zz"), Err(DigestError::Hex(_))));
    }

    #[test]
    fn domains_separate() {
        let a = DomainHasher::new("govchain/a").bytes(b"x").finish();
        let b = DomainHasher::new("govchain/b").bytes(b"x").finish();
        assert_ne!(a, b);
    }

    #[test]
    fn length_prefix_makes_fields_unambiguous() {
        let a = DomainHasher::new("d").bytes(b"ab").bytes(b"c").finish();
        let b = DomainHasher::new("d").bytes(b"a").bytes(b"bc").finish();
        assert_ne!(a, b);
    }
}
