//! Transaction envelopes as a client or a peer sends them: decoding and
//! `check_envelope` must never panic, and its verdict must be consistent.
//! The first byte chooses the input's shape: raw envelope bytes, or a
//! payload that a real signer signs correctly (so that the body rules,
//! behind the signature, are reached).
#![no_main]

use bytes::Bytes;
use govchain_crypto::SigningKey;
use govchain_exec::{TransactionError, check_envelope, decode_envelope, transaction_id};
use govchain_fuzz::CHAIN_ID;
use govchain_proto::types::v1::TransactionEnvelope;
use libfuzzer_sys::fuzz_target;

/// The genesis default payload limit.
const PAYLOAD_BYTES_MAX: usize = 64 * 1024;

/// A correctly signed envelope around `payload`.
fn signed(seed: u8, nonce: u64, payload: &[u8]) -> TransactionEnvelope {
    let key = SigningKey::from_seed([seed; 32]);
    let signer = key.public_key();
    let id = transaction_id(CHAIN_ID, signer.as_bytes(), nonce, payload);
    TransactionEnvelope {
        payload: Bytes::copy_from_slice(payload),
        signer: signer.as_bytes().to_vec(),
        signature: key.sign(id.as_bytes()).to_vec(),
        chain_id: CHAIN_ID.into(),
        nonce,
    }
}

fn check(envelope: TransactionEnvelope, correctly_signed: bool) {
    let checked = check_envelope(envelope.clone(), CHAIN_ID, PAYLOAD_BYTES_MAX, |_, _| false);
    let skipped = check_envelope(envelope.clone(), CHAIN_ID, PAYLOAD_BYTES_MAX, |_, _| true);
    match (&checked, &skipped) {
        (Ok(verified), Ok(trusted)) => {
            assert_eq!(verified.id, trusted.id);
            let id = transaction_id(
                CHAIN_ID,
                &envelope.signer,
                envelope.nonce,
                &envelope.payload,
            );
            assert_eq!(verified.id, id, "the id covers the bytes as sent");
            assert!(
                verified
                    .signer
                    .verify(id.as_bytes(), &verified.signature)
                    .is_ok()
            );
            assert_eq!(verified.nonce, envelope.nonce);
        }
        // Skipping the signature check changes nothing but that check.
        (Err(TransactionError::BadSignature { .. }), Ok(_)) => {
            assert!(!correctly_signed, "a correct signature was refused");
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        (Err(error), Ok(_)) => panic!("only the signature check may differ, got {error}"),
        (Ok(_), Err(error)) => panic!("a trusted signature made it fail: {error}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    if shape % 2 == 0 {
        if let Ok(envelope) = decode_envelope(rest) {
            check(envelope, false);
        }
    } else {
        let nonce = u64::from(shape / 2);
        check(signed(shape, nonce, rest), nonce != 0);
    }
});
