//! Hashes, Ed25519 keys and signatures, and Merkle roots.
//!
//! **Invariant:** pure functions only: no I/O except the key-file helpers,
//! which take and return strings; randomness only in [`SigningKey::generate`] and in the
//! coefficients of [`verify_batch`] (which do not change its verdict).
#![forbid(unsafe_code)]

mod digest;
mod key_cache;
mod keys;
mod merkle;
mod verify;

pub use digest::{Digest, DigestError, DomainHasher};
pub use key_cache::KeyCache;
pub use keys::{KeyError, PublicKey, Signature, SignatureError, SigningKey};
pub use merkle::{merkle_inclusion_proof, merkle_root, verify_inclusion};
pub use verify::{verify_batch, verify_each};
