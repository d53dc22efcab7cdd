//! ZIP-215 differential: items built from the input (raw bytes, honest
//! signatures, mixed-order keys and nonces, small-order `R`), mutated with
//! small-order and non-canonical encodings, non-canonical `S` and bit
//! flips, are checked one by one and as a batch by the oracle of
//! `crates/crypto/tests/zip215/oracle.rs`: our `PublicKey::from_slice`,
//! `PublicKey::verify`, `verify_batch` and `verify_each` against
//! `ed25519-zebra` and `ed25519-consensus`. Any disagreement panics.
#![no_main]

use std::sync::OnceLock;

use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use govchain_fuzz::zip215::{self, Item};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// Items per input: enough for a batch that mixes kinds.
const ITEMS_MAX: usize = 4;
const MESSAGE_BYTES_MAX: usize = 64;
const MUTATIONS_MAX: u8 = 3;

/// Encodings worth substituting for `A` or `R`: every encoding of a point
/// of small order, then every other non-canonical one that decodes.
fn special_encodings() -> &'static [[u8; 32]] {
    static ENCODINGS: OnceLock<Vec<[u8; 32]>> = OnceLock::new();
    ENCODINGS.get_or_init(|| {
        let mut all: Vec<[u8; 32]> = zip215::small_order_encodings()
            .into_iter()
            .map(|(_, bytes)| bytes)
            .collect();
        for bytes in zip215::non_canonical_encodings() {
            if !all.contains(&bytes) {
                all.push(bytes);
            }
        }
        all
    })
}

fn special(u: &mut Unstructured) -> Result<[u8; 32]> {
    Ok(*u.choose(special_encodings())?)
}

fn torsion(u: &mut Unstructured) -> Result<EdwardsPoint> {
    Ok(*u.choose(&EIGHT_TORSION)?)
}

fn base_item(u: &mut Unstructured) -> Result<Item> {
    let kind: u8 = u.int_in_range(0..=3)?;
    let seed: u8 = u.arbitrary()?;
    let length = u.int_in_range(0..=MESSAGE_BYTES_MAX)?;
    let message = u.bytes(length)?.to_vec();
    Ok(match kind {
        0 => Item {
            key: u.arbitrary()?,
            message,
            signature: u.arbitrary()?,
        },
        1 => zip215::honest(seed, &message),
        2 => {
            // A mixed-order key and nonce: valid under ZIP-215.
            let a = zip215::scalar(seed);
            let key = zip215::encode(EdwardsPoint::mul_base(&a) + torsion(u)?);
            let nonce = zip215::scalar(seed ^ 0xa5);
            let r = zip215::encode(EdwardsPoint::mul_base(&nonce) + torsion(u)?);
            zip215::sign_by_hand(a, key, nonce, r, &message)
        }
        _ => {
            // A small-order R (any encoding), S = k·a: valid.
            let a = zip215::scalar(seed);
            let key = zip215::encode(EdwardsPoint::mul_base(&a));
            let r = *u.choose(&zip215::small_order_encodings())?;
            zip215::sign_by_hand(a, key, Scalar::ZERO, r.1, &message)
        }
    })
}

fn mutate(u: &mut Unstructured, item: Item) -> Result<Item> {
    let mut item = item;
    for _ in 0..u.int_in_range(0..=MUTATIONS_MAX)? {
        item = match u.int_in_range(0..=6)? {
            0 => {
                let bit = u.int_in_range(0..=511usize)?;
                let mut out = item;
                out.signature[bit / 8] ^= 1 << (bit % 8);
                out
            }
            1 => {
                let bit = u.int_in_range(0..=255usize)?;
                let mut out = item;
                out.key[bit / 8] ^= 1 << (bit % 8);
                out
            }
            2 => item.with_r(special(u)?),
            3 => item.with_key(special(u)?),
            4 => {
                let choices = zip215::non_canonical_s(&item.s());
                item.with_s(*u.choose(&choices)?)
            }
            5 => {
                let mut out = item;
                out.message.push(u.arbitrary()?);
                out
            }
            _ => item.with_s(Scalar::from(u.arbitrary::<u64>()?).to_bytes()),
        };
    }
    Ok(item)
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut items = Vec::with_capacity(ITEMS_MAX);
    while items.len() < ITEMS_MAX {
        let Ok(item) = base_item(&mut u).and_then(|item| mutate(&mut u, item)) else {
            break;
        };
        items.push(item);
    }
    if items.is_empty() {
        return;
    }
    for item in &items {
        zip215::check_single(item);
    }
    zip215::check_batch(&items);
});
