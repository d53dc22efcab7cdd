//! Hashes, Ed25519 keys and signatures, and Merkle roots.
//!
//! **Invariant:** pure functions only: no I/O except the key-file helpers,
//! which take and return strings; randomness only in [`SigningKey::generate`].
#![forbid(unsafe_code)]

mod digest;
mod keys;
mod merkle;

pub use digest::{Digest, DigestError, DomainHasher};
pub use keys::{KeyError, PublicKey, Signature, SignatureError, SigningKey, verify_batch};
pub use merkle::merkle_root;
