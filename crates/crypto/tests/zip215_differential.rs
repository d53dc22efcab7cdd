//! Differential test of our ZIP-215 verification (`PublicKey::verify`,
//! `verify_batch`, `verify_each`) and key parsing (`PublicKey::from_slice`)
//! against two independent implementations of the same rules,
//! `ed25519-zebra` and `ed25519-consensus`, on adversarial input: every
//! point of small order as `A` and as `R`, in canonical and non-canonical
//! encodings; keys and nonces with a torsion component (mixed order); other
//! non-canonical encodings; `S` at and above the group order ℓ; mutated
//! messages, keys and signatures; batches mixing valid and invalid items.
//!
//! **The one deliberate difference.** ZIP-215 accepts a public key of small
//! order (anyone can sign for it: `[8][k]A = 0`); `PublicKey::from_slice`
//! refuses it with `KeyError::PublicKeyWeak`, before any signature is looked
//! at, so such a key never reaches our verifier. Where our parser refuses a
//! key, the test checks that it is exactly a small-order point (or not a
//! point at all, which the references refuse too), and compares verdicts
//! wherever both sides accept the key.
//!
//! Every item's verdict is checked in four ways: the two references agree
//! with each other, `PublicKey::verify` agrees with them, and
//! `verify_batch` and `verify_each` of that item alone agree too. Batches
//! add: the references' batch verdicts equal the AND of their single
//! verdicts, our batch verdict equals the AND of the references' singles
//! over the items whose keys we parse, and `verify_each` names exactly the
//! items the references reject.

#[path = "zip215/oracle.rs"]
mod oracle;

use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity as _;
use govchain_crypto::{KeyError, PublicKey};
use proptest::prelude::*;

use oracle::*;
// ---------------------------------------------------------------------------
// Fixed cases.

#[test]
fn the_encodings_are_the_known_ones() {
    // y ≥ p decodes only for y − p ∈ {0, 1} among small-order y values (0,
    // 1, −1 and the order-8 ones, which are large); x = 0 with its sign bit
    // set gives two more: six non-canonical encodings in all.
    let small = small_order_encodings();
    assert_eq!(small.len(), 8 + 6, "{small:?}");
    // Every small-order point's canonical encoding, the identity first.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert_eq!(small[0], (0, identity));
    // The non-canonical encodings that are not of small order exist too.
    let large = non_canonical_encodings().len() - 6;
    assert!(large > 0, "some y − p < 19 is a point of large order");
}

#[test]
fn small_order_public_keys_are_refused_by_us_and_accepted_by_the_references() {
    let message = b"small-order A";
    let mut accepted_by_references = 0;
    for (t, key) in small_order_encodings() {
        // [k]A vanishes under the cofactor, so R = [r]B with S = r forges
        // a signature for any message: the reason our parser refuses.
        let nonce = scalar(40 + t as u8);
        let forged = sign_by_hand(
            Scalar::ZERO,
            key,
            nonce,
            encode(EdwardsPoint::mul_base(&nonce)),
            message,
        );
        assert_eq!(
            PublicKey::from_slice(&key),
            Err(KeyError::PublicKeyWeak),
            "{}",
            hex::encode(key)
        );
        assert_eq!(check_single(&forged), Outcome::WeakKey { reference: true });
        accepted_by_references += 1;
        // A plain garbage signature under it is still refused by them.
        let garbage = forged.with_s(Scalar::ONE.to_bytes());
        assert_eq!(
            check_single(&garbage),
            Outcome::WeakKey { reference: false }
        );
    }
    assert_eq!(accepted_by_references, 14);
}

#[test]
fn small_order_r_in_every_encoding_matches_the_references() {
    let message = b"small-order R";
    let a = scalar(7);
    let key = encode(EdwardsPoint::mul_base(&a));
    let (mut accepted, mut rejected) = (0, 0);
    for (_, r) in small_order_encodings() {
        // R = T (nonce 0): S = k·a is valid under the cofactored equation.
        let valid = sign_by_hand(a, key, Scalar::ZERO, r, message);
        // The same R with S = 0, S = 1 and a wrong message.
        let mut wrong_message = valid.clone();
        wrong_message.message.push(0);
        for item in [
            valid.clone(),
            valid.with_s(Scalar::ZERO.to_bytes()),
            valid.with_s(Scalar::ONE.to_bytes()),
            wrong_message,
        ] {
            match check_single(&item) {
                Outcome::Verified(true) => accepted += 1,
                Outcome::Verified(false) => rejected += 1,
                other => panic!("key of large order refused: {other:?}"),
            }
        }
        assert_eq!(check_single(&valid), Outcome::Verified(true));
        assert!(check_batch(&[
            honest(1, b"x"),
            valid.clone(),
            honest(2, b"y")
        ]));
    }
    assert_eq!(accepted, 14);
    assert_eq!(rejected, 14 * 3);
}

#[test]
fn torsion_in_r_and_in_a_is_accepted_alike_by_all() {
    // Mixed-order R (= [r]B + T) and mixed-order A (= [a]B + T'): valid
    // under the cofactored equation; the cofactorless one fails whenever
    // T + [k]T' ≠ 0. Our parser takes such keys: they are not of small
    // order, and their owner knows a.
    let (mut accepted, mut cofactorless_failures) = (0, 0);
    for (t_a, torsion_a) in EIGHT_TORSION.iter().enumerate() {
        for (t_r, torsion_r) in EIGHT_TORSION.iter().enumerate() {
            let message = [t_a as u8, t_r as u8];
            let (a, key) = mixed_key(11, t_a);
            assert!(PublicKey::from_slice(&key).is_ok());
            let nonce = scalar(12 + t_r as u8);
            let r = encode(EdwardsPoint::mul_base(&nonce) + torsion_r);
            let item = sign_by_hand(a, key, nonce, r, &message);
            assert_eq!(
                check_single(&item),
                Outcome::Verified(true),
                "T_A {t_a} T_R {t_r}"
            );
            accepted += 1;
            // The cofactorless rule (ed25519-dalek's verify_strict) holds
            // only when T_R + [k]T_A = 0: the reason ZIP-215 is needed at
            // all, since a batch cannot tell the two apart.
            let strict = ed25519_dalek::VerifyingKey::from_bytes(&key)
                .expect("a point")
                .verify_strict(
                    &message,
                    &ed25519_dalek::Signature::from_bytes(&item.signature),
                )
                .is_ok();
            let k = challenge(&r, &key, &message);
            let residue = torsion_r + torsion_a * k;
            assert_eq!(strict, residue.is_identity(), "T_A {t_a} T_R {t_r}");
            cofactorless_failures += usize::from(!strict);
            let mut tampered = item.clone();
            tampered.message[0] ^= 0x40;
            assert_eq!(check_single(&tampered), Outcome::Verified(false));
        }
    }
    assert_eq!(accepted, 64);
    assert!(cofactorless_failures > 32, "{cofactorless_failures}");
}

#[test]
fn non_canonical_encodings_as_a_and_r_match_the_references() {
    let base = honest(21, b"non-canonical");
    let mut outcomes = Vec::new();
    for bytes in non_canonical_encodings() {
        outcomes.push(check_single(&base.with_key(bytes)));
        outcomes.push(check_single(&base.with_r(bytes)));
        for s in [Scalar::ZERO, Scalar::ONE] {
            outcomes.push(check_single(&base.with_r(bytes).with_s(s.to_bytes())));
            outcomes.push(check_single(
                &base.with_key(bytes).with_r(bytes).with_s(s.to_bytes()),
            ));
        }
    }
    // Strings that are not points at all, as A and as R: y values with no
    // x (2 is not a valid y; found by trying).
    let mut not_points = Vec::new();
    for y in 2u8..=255 {
        let mut bytes = [0u8; 32];
        bytes[0] = y;
        if CompressedEdwardsY(bytes).decompress().is_none() {
            not_points.push(bytes);
        }
    }
    assert!(not_points.len() > 10);
    for bytes in not_points.iter().take(16) {
        assert_eq!(check_single(&base.with_key(*bytes)), Outcome::NotAPoint);
        assert_eq!(check_single(&base.with_r(*bytes)), Outcome::Verified(false));
    }
    assert!(outcomes.contains(&Outcome::WeakKey { reference: true }));
    assert!(outcomes.contains(&Outcome::Verified(false)));
}

#[test]
fn s_at_or_above_the_group_order_is_refused_by_all() {
    let items = [
        honest(31, b"s"),
        sign_by_hand(
            scalar(3),
            encode(EdwardsPoint::mul_base(&scalar(3))),
            scalar(4),
            encode(EdwardsPoint::mul_base(&scalar(4)) + EIGHT_TORSION[3]),
            b"s torsion",
        ),
    ];
    for item in items {
        assert_eq!(check_single(&item), Outcome::Verified(true));
        let variants = non_canonical_s(&item.s());
        assert!(variants.len() >= 6, "{variants:?}");
        for s in variants {
            assert_eq!(
                check_single(&item.with_s(s)),
                Outcome::Verified(false),
                "S {}",
                hex::encode(s)
            );
            // A small-order key with R = identity and S ≥ ℓ: the references
            // refuse the S, not just the key.
            let mut identity = [0u8; 32];
            identity[0] = 1;
            assert_eq!(
                check_single(&item.with_key(identity).with_r(identity).with_s(s)),
                Outcome::WeakKey { reference: false }
            );
        }
    }
    // ℓ − 1 is canonical: a wrong S, but one that parses.
    let mut ell_minus_one = ELL;
    ell_minus_one[0] -= 1;
    assert_eq!(
        check_single(&honest(31, b"s").with_s(ell_minus_one)),
        Outcome::Verified(false)
    );
}

/// A pool of items of every kind, valid and invalid.
fn pool() -> Vec<Item> {
    let mut items = Vec::new();
    for seed in 1..=4 {
        items.push(honest(seed, &[seed; 12]));
    }
    // Two signatures by one key (zebra and consensus coalesce those).
    items.push(honest(1, b"again"));
    for t in [1, 4, 6] {
        let (a, key) = mixed_key(50 + t as u8, t);
        let nonce = scalar(60 + t as u8);
        let r = encode(EdwardsPoint::mul_base(&nonce) + EIGHT_TORSION[7 - t]);
        items.push(sign_by_hand(a, key, nonce, r, b"mixed"));
    }
    let a = scalar(70);
    let key = encode(EdwardsPoint::mul_base(&a));
    for (_, r) in small_order_encodings().into_iter().step_by(3) {
        items.push(sign_by_hand(a, key, Scalar::ZERO, r, b"small R"));
    }
    let valid = items.len();
    // Invalid ones derived from the valid ones.
    for index in 0..valid {
        let item = &items[index];
        let mut wrong_message = item.clone();
        wrong_message.message.push(1);
        let over = add_le(&item.s(), &ELL).expect("S + ℓ fits");
        let mut flipped = item.clone();
        flipped.signature[(index * 7) % 32] ^= 1 << (index % 8);
        items.extend([wrong_message, item.with_s(over), flipped]);
    }
    // Small-order keys: accepted by the references, refused by our parser.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    items.push(sign_by_hand(
        Scalar::ZERO,
        identity,
        scalar(80),
        encode(EdwardsPoint::mul_base(&scalar(80))),
        b"weak",
    ));
    items.push(Item {
        key: identity,
        message: b"weak".to_vec(),
        signature: [0; 64],
    });
    items
}

#[test]
fn batches_mixing_valid_and_invalid_match_the_references() {
    let pool = pool();
    let valid: Vec<Item> = pool.iter().filter(|i| reference(i)).cloned().collect();
    let invalid: Vec<Item> = pool.iter().filter(|i| !reference(i)).cloned().collect();
    assert!(valid.len() >= 12, "{}", valid.len());
    assert!(invalid.len() >= 30, "{}", invalid.len());
    // All valid (the weak key's forgery among them, which only we refuse).
    assert!(check_batch(&valid));
    // Each invalid item, at each of three positions, fails the batch, and
    // verify_each names it and nothing else.
    for bad in &invalid {
        for position in [0, valid.len() / 2, valid.len()] {
            let mut batch = valid.clone();
            batch.insert(position, bad.clone());
            assert!(!check_batch(&batch), "{bad:?} at {position}");
        }
    }
    // Everything at once.
    assert!(!check_batch(&pool));
    for item in &pool {
        check_single(item);
    }
}

#[test]
fn our_parser_and_the_references_agree_on_which_keys_are_points() {
    // Every encoding of small order, a spread of y values, and all the
    // non-canonical ones: we refuse exactly the non-points (as they do) and
    // the small-order points (which they accept).
    let mut keys: Vec<[u8; 32]> = small_order_encodings()
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    keys.extend(non_canonical_encodings());
    for y in 0u8..=255 {
        for sign in [0u8, 0x80] {
            let mut bytes = [y; 32];
            bytes[31] = (y & 0x7f) | sign;
            keys.push(bytes);
        }
    }
    let (mut weak, mut invalid, mut taken) = (0, 0, 0);
    for key in keys {
        let reference = zebra_key_decodes(&key);
        assert_eq!(
            reference,
            consensus_key_decodes(&key),
            "{}",
            hex::encode(key)
        );
        let point = CompressedEdwardsY(key).decompress();
        match PublicKey::from_slice(&key) {
            Ok(_) => {
                assert!(reference);
                assert!(point.is_some_and(|p| !p.is_small_order()));
                taken += 1;
            }
            Err(KeyError::PublicKeyWeak) => {
                assert!(reference);
                assert!(point.is_some_and(|p| p.is_small_order()));
                weak += 1;
            }
            Err(KeyError::PublicKeyInvalid) => {
                assert!(!reference);
                invalid += 1;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert!(
        weak >= 14 && invalid > 0 && taken > 0,
        "{weak} {invalid} {taken}"
    );
}

// ---------------------------------------------------------------------------
// Random mutations.

/// A change to an item; `Resign` variants stay valid by construction.
#[derive(Clone, Debug)]
enum Mutation {
    None,
    FlipSignatureBit(usize),
    FlipKeyBit(usize),
    FlipMessageBit(usize),
    AppendToMessage(u8),
    SmallOrderR(usize),
    SmallOrderKey(usize),
    NonCanonicalR(usize),
    NonCanonicalKey(usize),
    NonCanonicalS(usize),
    ScalarS(u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        Just(Mutation::None),
        (0usize..512).prop_map(Mutation::FlipSignatureBit),
        (0usize..256).prop_map(Mutation::FlipKeyBit),
        (0usize..512).prop_map(Mutation::FlipMessageBit),
        any::<u8>().prop_map(Mutation::AppendToMessage),
        (0usize..14).prop_map(Mutation::SmallOrderR),
        (0usize..14).prop_map(Mutation::SmallOrderKey),
        (0usize..64).prop_map(Mutation::NonCanonicalR),
        (0usize..64).prop_map(Mutation::NonCanonicalKey),
        (0usize..32).prop_map(Mutation::NonCanonicalS),
        any::<u64>().prop_map(Mutation::ScalarS),
    ]
}

fn apply(item: &Item, mutation: &Mutation) -> Item {
    let mut out = item.clone();
    match *mutation {
        Mutation::None => {}
        Mutation::FlipSignatureBit(bit) => out.signature[bit / 8] ^= 1 << (bit % 8),
        Mutation::FlipKeyBit(bit) => out.key[bit / 8] ^= 1 << (bit % 8),
        Mutation::FlipMessageBit(bit) => {
            if out.message.is_empty() {
                out.message.push(0);
            }
            let len = out.message.len();
            out.message[(bit / 8) % len] ^= 1 << (bit % 8);
        }
        Mutation::AppendToMessage(byte) => out.message.push(byte),
        Mutation::SmallOrderR(i) => out = out.with_r(small_order_encodings()[i].1),
        Mutation::SmallOrderKey(i) => out = out.with_key(small_order_encodings()[i].1),
        Mutation::NonCanonicalR(i) => {
            let all = non_canonical_encodings();
            out = out.with_r(all[i % all.len()]);
        }
        Mutation::NonCanonicalKey(i) => {
            let all = non_canonical_encodings();
            out = out.with_key(all[i % all.len()]);
        }
        Mutation::NonCanonicalS(i) => {
            let all = non_canonical_s(&item.s());
            out = out.with_s(all[i % all.len()]);
        }
        Mutation::ScalarS(value) => out = out.with_s(Scalar::from(value).to_bytes()),
    }
    out
}

/// A valid item of one of three kinds: honest, mixed-order key and nonce,
/// small-order `R` (in any of its encodings).
fn valid_item(kind: u8, seed: u8, torsion: usize, message: &[u8]) -> Item {
    match kind % 3 {
        0 => honest(seed, message),
        1 => {
            let (a, key) = mixed_key(seed, torsion % 8);
            let nonce = scalar(seed ^ 0x55);
            let r = encode(
                EdwardsPoint::mul_base(&nonce) + EIGHT_TORSION[(torsion + usize::from(seed)) % 8],
            );
            sign_by_hand(a, key, nonce, r, message)
        }
        _ => {
            let a = scalar(seed);
            let key = encode(EdwardsPoint::mul_base(&a));
            let r = small_order_encodings()[torsion % 14].1;
            sign_by_hand(a, key, Scalar::ZERO, r, message)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any mutation of any kind of valid item: the same verdicts from us
    /// and both references, alone and in a batch with valid items.
    #[test]
    fn mutations_match_both_references(
        kind in any::<u8>(),
        seed in any::<u8>(),
        torsion in 0usize..14,
        message in proptest::collection::vec(any::<u8>(), 0..48),
        first in mutation(),
        second in mutation(),
    ) {
        let valid = valid_item(kind, seed, torsion, &message);
        prop_assert_eq!(check_single(&valid), Outcome::Verified(true));
        let mutated = apply(&apply(&valid, &first), &second);
        let outcome = check_single(&mutated);
        if matches!((&first, &second), (Mutation::None, Mutation::None)) {
            prop_assert_eq!(outcome, Outcome::Verified(true));
        }
        let batch = [honest(1, b"a"), mutated.clone(), valid_item(kind.wrapping_add(1), seed, torsion, b"b")];
        let all = check_batch(&batch);
        prop_assert_eq!(all, reference(&mutated));
    }

    /// Random batches drawn from the pool, in random order, with repeats.
    #[test]
    fn random_batches_match_both_references(
        picks in proptest::collection::vec(any::<proptest::sample::Index>(), 1..24),
    ) {
        let pool = pool();
        let batch: Vec<Item> = picks.iter().map(|i| pool[i.index(pool.len())].clone()).collect();
        check_batch(&batch);
    }
}
