//! What the fuzz targets share: a fixed chain and validator set, the
//! ZIP-215 oracle of the crypto crate's differential test, and the node's
//! peer-message decoder.
#![forbid(unsafe_code)]

use govchain_crypto::SigningKey;
use govchain_pbft::ValidatorSet;

/// The ZIP-215 differential oracle, the very file the crypto crate's
/// differential test uses, so that the test and the fuzz target check the
/// same properties.
#[path = "../../crates/crypto/tests/zip215/oracle.rs"]
pub mod zip215;

/// The node's decoder of consensus messages and commit certificates
/// (`crates/node/src/wire.rs`), compiled here from its own source file. It
/// is private to `govchain-node`, and depending on that crate would build
/// tokio, tonic, rustls and redb with fuzzing instrumentation for one
/// 300-line module that needs only `crypto`, `pbft` and `proto`. Including
/// the file fuzzes exactly the code peers reach; if the module ever uses
/// something else of the node crate, this build fails and says so. (Moving
/// the module into a pure crate would make this unnecessary.)
#[path = "../../crates/node/src/wire.rs"]
pub mod wire;

/// The chain id every target signs and checks with.
pub const CHAIN_ID: &str = "govchain-fuzz";

/// Validators in the fixed set: n = 4, f = 1, a quorum is 3.
pub const VALIDATOR_COUNT: u32 = 4;

/// The consensus key of validator `index` (taken modulo the set's size).
pub fn validator_key(index: u32) -> SigningKey {
    let seed = u8::try_from(index % VALIDATOR_COUNT).expect("below 4") + 1;
    SigningKey::from_seed([seed; 32])
}

/// The fixed validator set.
pub fn validators() -> ValidatorSet {
    ValidatorSet::new(
        (0..VALIDATOR_COUNT)
            .map(|i| validator_key(i).public_key())
            .collect(),
    )
    .expect("four distinct keys make a validator set")
}
