//! The ZIP-215 differential oracle: our verdicts against `ed25519-zebra`
//! and `ed25519-consensus` on one item or a batch, and the adversarial
//! encodings and hand-made signatures the checks are fed with. Shared by
//! the differential test (`../zip215_differential.rs`) and the fuzz target
//! `fuzz/fuzz_targets/ed25519_differential.rs`, which includes this file by
//! path, so the two can never check different things. Everything here
//! panics on a disagreement: that is the finding.

use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use govchain_crypto::{KeyError, PublicKey, Signature, SigningKey, verify_batch, verify_each};
use sha2::{Digest as _, Sha512};

/// The group order ℓ = 2²⁵² + 27742317777372353535851937790883648493,
/// little-endian.
pub const ELL: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// One signed message as it arrives: raw bytes, nothing parsed yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub key: [u8; 32],
    pub message: Vec<u8>,
    pub signature: [u8; 64],
}

impl Item {
    pub fn with_r(&self, r: [u8; 32]) -> Self {
        let mut item = self.clone();
        item.signature[..32].copy_from_slice(&r);
        item
    }

    pub fn with_s(&self, s: [u8; 32]) -> Self {
        let mut item = self.clone();
        item.signature[32..].copy_from_slice(&s);
        item
    }

    pub fn with_key(&self, key: [u8; 32]) -> Self {
        Self {
            key,
            ..self.clone()
        }
    }

    pub fn s(&self) -> [u8; 32] {
        self.signature[32..].try_into().expect("32 bytes")
    }
}

// ---------------------------------------------------------------------------
// The references.

pub fn zebra_key_decodes(key: &[u8; 32]) -> bool {
    ed25519_zebra::VerificationKey::try_from(*key).is_ok()
}

pub fn consensus_key_decodes(key: &[u8; 32]) -> bool {
    ed25519_consensus::VerificationKey::try_from(*key).is_ok()
}

pub fn zebra_single(item: &Item) -> bool {
    let Ok(key) = ed25519_zebra::VerificationKey::try_from(item.key) else {
        return false;
    };
    key.verify(
        &ed25519_zebra::Signature::from_bytes(&item.signature),
        &item.message,
    )
    .is_ok()
}

pub fn consensus_single(item: &Item) -> bool {
    let Ok(key) = ed25519_consensus::VerificationKey::try_from(item.key) else {
        return false;
    };
    key.verify(
        &ed25519_consensus::Signature::from(item.signature),
        &item.message,
    )
    .is_ok()
}

pub fn zebra_batch(items: &[Item]) -> bool {
    let mut verifier = ed25519_zebra::batch::Verifier::new();
    for item in items {
        verifier.queue((
            ed25519_zebra::VerificationKeyBytes::from(item.key),
            ed25519_zebra::Signature::from_bytes(&item.signature),
            &item.message,
        ));
    }
    verifier.verify(rand::rng()).is_ok()
}

pub fn consensus_batch(items: &[Item]) -> bool {
    let mut verifier = ed25519_consensus::batch::Verifier::new();
    for item in items {
        verifier.queue((
            ed25519_consensus::VerificationKeyBytes::from(item.key),
            ed25519_consensus::Signature::from(item.signature),
            &item.message,
        ));
    }
    verifier.verify(rand_core_06::OsRng).is_ok()
}

/// The ZIP-215 verdict on one item, from both references, which must agree.
pub fn reference(item: &Item) -> bool {
    let zebra = zebra_single(item);
    let consensus = consensus_single(item);
    assert_eq!(zebra, consensus, "zebra and consensus disagree on {item:?}");
    zebra
}

// ---------------------------------------------------------------------------
// Ours against them.

/// What happened to one item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Our parser took the key and every verdict matched the references'.
    Verified(bool),
    /// Our parser refused a small-order key the references accept; their
    /// verdict on the signature is carried for the tallies.
    WeakKey { reference: bool },
    /// The key is not a curve point: refused by everyone.
    NotAPoint,
}

pub fn parse_signature(item: &Item) -> Signature {
    Signature::from_slice(&item.signature).expect("64 bytes always parse")
}

/// Compares every verdict on one item; see the module documentation.
pub fn check_single(item: &Item) -> Outcome {
    let expected = reference(item);
    let decompressed = CompressedEdwardsY(item.key).decompress();
    match PublicKey::from_slice(&item.key) {
        Ok(key) => {
            let point = decompressed.expect("a key we parse is a curve point");
            assert!(
                !point.is_small_order(),
                "we took a small-order key {item:?}"
            );
            assert!(zebra_key_decodes(&item.key), "{item:?}");
            assert!(consensus_key_decodes(&item.key), "{item:?}");
            // The bytes as sent, not a re-encoding, are what is hashed.
            assert_eq!(key.as_bytes(), &item.key);
            let signature = parse_signature(item);
            let message = item.message.as_slice();
            assert_eq!(
                key.verify(message, &signature).is_ok(),
                expected,
                "PublicKey::verify on {item:?}"
            );
            assert_eq!(
                verify_batch(&[message], &[signature], &[key]).is_ok(),
                expected,
                "verify_batch of one on {item:?}"
            );
            assert_eq!(
                verify_each(&[message], &[signature], &[key]),
                vec![expected],
                "verify_each of one on {item:?}"
            );
            Outcome::Verified(expected)
        }
        Err(KeyError::PublicKeyWeak) => {
            let point = decompressed.expect("a weak key is a curve point");
            assert!(point.is_small_order(), "refused as weak: {item:?}");
            assert!(zebra_key_decodes(&item.key), "{item:?}");
            assert!(consensus_key_decodes(&item.key), "{item:?}");
            Outcome::WeakKey {
                reference: expected,
            }
        }
        Err(KeyError::PublicKeyInvalid) => {
            assert!(decompressed.is_none(), "refused as invalid: {item:?}");
            assert!(!zebra_key_decodes(&item.key), "{item:?}");
            assert!(!consensus_key_decodes(&item.key), "{item:?}");
            assert!(!expected, "{item:?}");
            Outcome::NotAPoint
        }
        Err(other) => panic!("unexpected key error {other} on {item:?}"),
    }
}

/// Compares batch verdicts; see the module documentation. Returns the
/// references' verdict on the whole batch.
pub fn check_batch(items: &[Item]) -> bool {
    let singles: Vec<bool> = items.iter().map(reference).collect();
    let all = singles.iter().all(|&ok| ok);
    assert_eq!(zebra_batch(items), all, "zebra batch vs its singles");
    assert_eq!(
        consensus_batch(items),
        all,
        "consensus batch vs its singles"
    );
    // Ours sees only the items whose keys it parses: the others are
    // refused before verification, by design.
    let mut keys = Vec::new();
    let mut messages: Vec<&[u8]> = Vec::new();
    let mut signatures = Vec::new();
    let mut expected = Vec::new();
    for (item, single) in items.iter().zip(&singles) {
        if let Ok(key) = PublicKey::from_slice(&item.key) {
            keys.push(key);
            messages.push(&item.message);
            signatures.push(parse_signature(item));
            expected.push(*single);
        }
    }
    let ours_all = expected.iter().all(|&ok| ok);
    assert_eq!(
        verify_batch(&messages, &signatures, &keys).is_ok(),
        ours_all,
        "verify_batch on {items:?}"
    );
    assert_eq!(
        verify_each(&messages, &signatures, &keys),
        expected,
        "verify_each on {items:?}"
    );
    all
}

// ---------------------------------------------------------------------------
// Building adversarial items.

pub fn scalar(seed: u8) -> Scalar {
    let mut bytes = [seed; 32];
    bytes[0] = bytes[0].wrapping_add(1);
    Scalar::from_bytes_mod_order(bytes)
}

pub fn challenge(r: &[u8; 32], key: &[u8; 32], message: &[u8]) -> Scalar {
    let mut hash = Sha512::new();
    hash.update(r);
    hash.update(key);
    hash.update(message);
    Scalar::from_bytes_mod_order_wide(&hash.finalize().into())
}

/// Signs by hand: `key` must encode `[a]B + T_A` and `r` must encode
/// `[nonce]B + T_R` for points `T_A`, `T_R` of small order. Then
/// `S = nonce + k·a` satisfies the cofactored equation
/// `[8]([S]B − R − [k]A) = [8](−T_R − [k]T_A) = 0`, so ZIP-215 accepts,
/// whatever the torsion and whichever encodings of the points are used.
pub fn sign_by_hand(a: Scalar, key: [u8; 32], nonce: Scalar, r: [u8; 32], message: &[u8]) -> Item {
    let s = nonce + challenge(&r, &key, message) * a;
    let mut signature = [0u8; 64];
    signature[..32].copy_from_slice(&r);
    signature[32..].copy_from_slice(s.as_bytes());
    Item {
        key,
        message: message.to_vec(),
        signature,
    }
}

pub fn encode(point: EdwardsPoint) -> [u8; 32] {
    point.compress().to_bytes()
}

/// An honest RFC 8032 signature from our own signing key.
pub fn honest(seed: u8, message: &[u8]) -> Item {
    let key = SigningKey::from_seed([seed; 32]);
    Item {
        key: *key.public_key().as_bytes(),
        message: message.to_vec(),
        signature: key.sign(message).to_bytes(),
    }
}

/// Every 32-byte string that is not the canonical encoding of its point:
/// `y ≥ p` (`y = p + j` for `j` in `0..19`, which decodes like `j`), with
/// either sign bit, and `x = 0` with the sign bit set (`y = 1` and
/// `y = p − 1`). Only those that decode are kept.
pub fn non_canonical_encodings() -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    for j in 0u8..19 {
        for sign in [0u8, 0x80] {
            let mut bytes = [0xff; 32];
            bytes[0] = 0xed + j;
            bytes[31] = 0x7f | sign;
            out.push(bytes);
        }
    }
    let mut identity_negative_zero = [0u8; 32];
    identity_negative_zero[0] = 1;
    identity_negative_zero[31] = 0x80;
    out.push(identity_negative_zero);
    let mut minus_one_negative_zero = [0xff; 32];
    minus_one_negative_zero[0] = 0xec;
    out.push(minus_one_negative_zero);
    for bytes in &out {
        assert_ne!(
            CompressedEdwardsY(*bytes)
                .decompress()
                .map(|p| p.compress().to_bytes()),
            Some(*bytes),
            "{bytes:02x?} is canonical"
        );
    }
    out.retain(|bytes| CompressedEdwardsY(*bytes).decompress().is_some());
    out
}

/// Every encoding of a point of small order: the 8 canonical ones and the
/// non-canonical ones, each with the index of its point in `EIGHT_TORSION`.
pub fn small_order_encodings() -> Vec<(usize, [u8; 32])> {
    let mut out: Vec<(usize, [u8; 32])> = EIGHT_TORSION
        .iter()
        .enumerate()
        .map(|(index, point)| (index, encode(*point)))
        .collect();
    for bytes in non_canonical_encodings() {
        let point = CompressedEdwardsY(bytes)
            .decompress()
            .expect("kept: decodes");
        if let Some(index) = EIGHT_TORSION.iter().position(|t| *t == point) {
            out.push((index, bytes));
        }
    }
    out
}

/// Adds two little-endian 256-bit integers; `None` on overflow.
pub fn add_le(a: &[u8; 32], b: &[u8; 32]) -> Option<[u8; 32]> {
    let mut sum = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let v = u16::from(a[i]) + u16::from(b[i]) + carry;
        sum[i] = v as u8;
        carry = v >> 8;
    }
    (carry == 0).then_some(sum)
}

/// `S` values that are not canonical scalars, derived from a valid `S`:
/// `S + jℓ` (each still satisfies the equation mod ℓ), ℓ, ℓ + 1, `S` with
/// bit 255 set, and all ones.
pub fn non_canonical_s(s: &[u8; 32]) -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    let mut multiple = *s;
    while let Some(next) = add_le(&multiple, &ELL) {
        out.push(next);
        multiple = next;
    }
    out.push(ELL);
    let mut one = [0u8; 32];
    one[0] = 1;
    out.push(add_le(&ELL, &one).expect("ℓ + 1 fits"));
    let mut high = *s;
    high[31] |= 0x80;
    out.push(high);
    let mut high_bits = *s;
    high_bits[31] |= 0xe0;
    out.push(high_bits);
    out.push([0xff; 32]);
    out
}

/// A key with a torsion component: `[a]B + T` for `T = EIGHT_TORSION[t]`.
pub fn mixed_key(seed: u8, t: usize) -> (Scalar, [u8; 32]) {
    let a = scalar(seed);
    (a, encode(EdwardsPoint::mul_base(&a) + EIGHT_TORSION[t]))
}
