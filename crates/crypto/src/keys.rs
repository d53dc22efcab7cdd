use std::fmt;

use ed25519_dalek::Signer as _;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey as _, EncodePrivateKey as _, spki::der::pem::LineEnding,
};

/// An Ed25519 public key: a transaction signer or a validator's consensus key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

/// An Ed25519 signature, 64 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(ed25519_dalek::Signature);

/// An Ed25519 private key. Its `Debug` never prints the key.
pub struct SigningKey(ed25519_dalek::SigningKey);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    #[error("an Ed25519 public key is 32 bytes, got {got}")]
    PublicKeyLength { got: usize },
    #[error("not a valid Ed25519 public key (not a curve point)")]
    PublicKeyInvalid,
    #[error("not a usable Ed25519 public key (a point of small order, for which anyone can sign)")]
    PublicKeyWeak,
    #[error("an Ed25519 signature is 64 bytes, got {got}")]
    SignatureLength { got: usize },
    #[error("not a PKCS#8 PEM Ed25519 private key: {0}")]
    PrivateKeyPem(String),
    #[error("public key is not 64 hex characters: {0}")]
    Hex(String),
    #[error("the system random number generator failed: {0}")]
    Random(String),
    #[error("not an Ed25519 did:key (expected \"did:key:z6Mk...\"): {0}")]
    DidKey(String),
}

/// The multicodec prefix of an Ed25519 public key (0xed, as a varint).
const MULTICODEC_ED25519_PUB: [u8; 2] = [0xed, 0x01];
const DID_KEY_PREFIX: &str = "did:key:z";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("signature does not verify against the public key")]
pub struct SignatureError;

impl PublicKey {
    pub const LEN: usize = 32;

    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::PublicKeyLength { got: bytes.len() })?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&array)
            .map_err(|_| KeyError::PublicKeyInvalid)?;
        // Anyone can sign for a key of small order under the cofactored
        // rule, so such keys belong to nobody and are refused here, where
        // every node decides alike.
        if key.is_weak() {
            return Err(KeyError::PublicKeyWeak);
        }
        Ok(Self(key))
    }

    /// The decompressed curve point, for verification.
    pub(crate) fn point(&self) -> curve25519_dalek::EdwardsPoint {
        self.0.to_edwards()
    }

    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let bytes = hex::decode(text.trim()).map_err(|err| KeyError::Hex(err.to_string()))?;
        Self::from_slice(&bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// The W3C `did:key` identifier of this key: `did:key:z` followed by
    /// base58btc of the multicodec prefix 0xed01 and the 32 key bytes.
    pub fn to_did_key(&self) -> String {
        let mut bytes = Vec::with_capacity(34);
        bytes.extend_from_slice(&MULTICODEC_ED25519_PUB);
        bytes.extend_from_slice(self.as_bytes());
        format!("{DID_KEY_PREFIX}{}", bs58::encode(bytes).into_string())
    }

    /// Parses a `did:key` of an Ed25519 key, see [`PublicKey::to_did_key`].
    pub fn from_did_key(did: &str) -> Result<Self, KeyError> {
        let encoded = did
            .strip_prefix(DID_KEY_PREFIX)
            .ok_or_else(|| KeyError::DidKey(format!("{did:?} does not start with did:key:z")))?;
        let bytes = bs58::decode(encoded)
            .into_vec()
            .map_err(|err| KeyError::DidKey(err.to_string()))?;
        let key = bytes.strip_prefix(&MULTICODEC_ED25519_PUB).ok_or_else(|| {
            KeyError::DidKey("the key is not an Ed25519 key (multicodec 0xed)".into())
        })?;
        Self::from_slice(key)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    /// Verifies under the ZIP-215 rules (canonical `S`, cofactored
    /// equation), the same rules as [`verify_batch`](crate::verify_batch),
    /// so a signature gets the same verdict alone or in any batch.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), SignatureError> {
        crate::verify::verify_one(self, message, signature)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", &self.to_hex()[..8])
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Signature {
    pub const LEN: usize = 64;

    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let array: [u8; 64] = bytes
            .try_into()
            .map_err(|_| KeyError::SignatureLength { got: bytes.len() })?;
        Ok(Self(ed25519_dalek::Signature::from_bytes(&array)))
    }

    pub fn to_bytes(&self) -> [u8; 64] {
        self.0.to_bytes()
    }

    pub fn to_vec(&self) -> Vec<u8> {
        self.0.to_bytes().to_vec()
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(&self.0.to_bytes()[..4]))
    }
}

impl SigningKey {
    /// A new key from the operating system's random number generator.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|err| KeyError::Random(err.to_string()))?;
        Ok(Self::from_seed(seed))
    }

    /// A key from a 32-byte seed; for tests and simulations, where keys must
    /// be reproducible.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message))
    }

    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map(Self)
            .map_err(|err| KeyError::PrivateKeyPem(err.to_string()))
    }

    /// The key as PKCS#8 v1 PEM (`-----BEGIN PRIVATE KEY-----`, RFC 8410
    /// without the optional public key), exactly as OpenSSL writes Ed25519
    /// keys: OpenSSL 3 and Python's `cryptography` refuse the v2 form that
    /// ed25519-dalek writes by default. Both forms are read.
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.0.to_bytes(),
            public_key: None,
        }
        .to_pkcs8_pem(LineEnding::LF)
        .map(|pem| pem.to_string())
        .map_err(|err| KeyError::PrivateKeyPem(err.to_string()))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(public {:?})", self.public_key())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_seed([seed; 32])
    }

    #[test]
    fn did_key_matches_an_independent_encoding() {
        // Computed with Python's `cryptography` and a hand-written base58.
        let key = key(7).public_key();
        assert_eq!(
            key.to_hex(),
            "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c"
        );
        let did = key.to_did_key();
        assert_eq!(
            did,
            "did:key:z6MkvDqGT54cXesYGvABpF1UapVNwjCqRcafi4Px6Thv5T3Z"
        );
        assert_eq!(PublicKey::from_did_key(&did), Ok(key));
    }

    #[test]
    fn bad_did_keys_are_errors() {
        for did in [
            "did:web:example.org",
            "did:key:z",
            "did:key:z0OIl",
            // A P-256 did:key (multicodec 0x1200), not Ed25519.
            "did:key:zDnaerDaTF5BXEavCrfRZEk316dpbLsfPDZ3WJ5hRTPFU2169",
        ] {
            assert!(
                matches!(
                    PublicKey::from_did_key(did),
                    Err(KeyError::DidKey(_) | KeyError::PublicKeyLength { .. })
                ),
                "{did}"
            );
        }
    }

    #[test]
    fn private_keys_are_written_as_pkcs8_v1_and_read_back() {
        let key = key(9);
        let pem = key.to_pkcs8_pem().expect("encodes");
        // The 48-byte RFC 8410 v1 form: SEQUENCE { version 0, algorithm
        // id-Ed25519, OCTET STRING { OCTET STRING (32 bytes) } }.
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(body.starts_with("MC4CAQAwBQYDK2VwBCIEI"), "{pem}");
        assert_eq!(body.len(), 64, "{pem}");
        let read = SigningKey::from_pkcs8_pem(&pem).expect("decodes");
        assert_eq!(read.public_key(), key.public_key());
    }

    #[test]
    fn sign_and_verify() {
        let key = key(1);
        let signature = key.sign(b"payload");
        assert_eq!(key.public_key().verify(b"payload", &signature), Ok(()));
    }

    #[test]
    fn tampered_payload_fails() {
        let key = key(1);
        let signature = key.sign(b"payload");
        assert_eq!(
            key.public_key().verify(b"payloaD", &signature),
            Err(SignatureError)
        );
    }

    #[test]
    fn wrong_key_fails() {
        let signature = key(1).sign(b"payload");
        assert_eq!(
            key(2).public_key().verify(b"payload", &signature),
            Err(SignatureError)
        );
    }

    #[test]
    fn pem_round_trip() {
        let key = key(7);
        let pem = key.to_pkcs8_pem().expect("encode");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = SigningKey::from_pkcs8_pem(&pem).expect("decode");
        assert_eq!(back.public_key(), key.public_key());
    }

    #[test]
    fn garbage_pem_is_an_error() {
        assert!(matches!(
            SigningKey::from_pkcs8_pem("nope"),
            Err(KeyError::PrivateKeyPem(_))
        ));
    }

    #[test]
    fn public_key_lengths_are_checked() {
        assert_eq!(
            PublicKey::from_slice(&[1; 31]),
            Err(KeyError::PublicKeyLength { got: 31 })
        );
        assert!(Signature::from_slice(&[0; 63]).is_err());
    }

    #[test]
    fn small_order_public_keys_are_refused() {
        // The identity point (y = 1) has order 1: any (R, S) with
        // [8]([S]B − R) = 0 would "verify" under it.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            PublicKey::from_slice(&identity),
            Err(KeyError::PublicKeyWeak)
        );
        // A point of order 4: y = 0.
        assert_eq!(
            PublicKey::from_slice(&[0; 32]),
            Err(KeyError::PublicKeyWeak)
        );
    }

    proptest! {
        #[test]
        fn any_bit_flip_in_the_signature_fails(bit in 0usize..512, message in any::<Vec<u8>>()) {
            let key = key(3);
            let mut bytes = key.sign(&message).to_bytes();
            bytes[bit / 8] ^= 1 << (bit % 8);
            let signature = Signature::from_slice(&bytes).expect("length is right");
            prop_assert_eq!(key.public_key().verify(&message, &signature), Err(SignatureError));
        }
    }
}
