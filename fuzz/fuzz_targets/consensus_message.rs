//! Consensus messages as a peer sends them on `ConsensusService.Stream`:
//! protobuf decoding, then the node's own decoder (`crates/node/src/wire.rs`,
//! see `govchain_fuzz::wire`), signature and certificate checks, and a
//! replica's `step`. Nothing may panic, and decoding must round-trip. When
//! the first byte is odd the decoded body is re-signed by the validator it
//! names, so the replica gets past the signature check into the protocol.
#![no_main]

use govchain_exec::block_digest;
use govchain_fuzz::wire::{message_from_wire, message_to_wire};
use govchain_fuzz::{CHAIN_ID, VALIDATOR_COUNT, validator_key, validators};
use govchain_pbft::{
    Body, Config, Event, Replica, Restored, SignedMessage, ValidatorSet, verify_commit_certificate,
};
use govchain_proto::consensus::v1::ConsensusMessage;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

/// The certificate checks a receiver applies to what a message carries.
fn check_carried(message: &SignedMessage, validators: &ValidatorSet) {
    let _ = message.verify(CHAIN_ID, validators);
    let _ = message.message_digest(CHAIN_ID);
    match &message.body {
        Body::ViewChange(change) => {
            if let Some(certificate) = &change.committed {
                let _ = verify_commit_certificate(
                    CHAIN_ID,
                    validators,
                    certificate.seq,
                    &certificate.digest,
                    certificate,
                );
            }
            if let Some(prepared) = &change.prepared {
                let _ = prepared.verify(CHAIN_ID, validators, block_digest);
            }
        }
        Body::NewView(new_view) => {
            for nested in new_view.view_changes.iter().chain(&new_view.pre_prepares) {
                check_carried(nested, validators);
            }
        }
        _ => {}
    }
}

fn replica(me: u32) -> Replica {
    let config = Config {
        chain_id: CHAIN_ID.into(),
        validators: validators(),
        me,
        key: validator_key(me),
        empty_block_interval_ms: 0,
        view_timeout_ms: 1_000,
        block_digest,
    };
    Replica::new(config, 0, None, Restored::default())
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    let Ok(wire) = ConsensusMessage::decode(rest) else {
        return;
    };
    let Ok(message) = message_from_wire(wire) else {
        return;
    };
    // What we decode, we encode back to the same message.
    let bytes = message_to_wire(&message).encode_to_vec();
    let again = ConsensusMessage::decode(bytes.as_slice()).expect("our own encoding decodes");
    assert_eq!(message_from_wire(again).as_ref(), Ok(&message));

    let validators = validators();
    check_carried(&message, &validators);

    let sender = message.sender % VALIDATOR_COUNT;
    let message = if shape % 2 == 1 {
        SignedMessage::sign(CHAIN_ID, sender, &validator_key(sender), message.body)
    } else {
        message
    };
    // A replica other than the sender, as the transport guarantees.
    let mut replica = replica((sender + 1 + u32::from(shape / 2) % 3) % VALIDATOR_COUNT);
    let _ = replica.step(Event::Tick { now_ms: 1 });
    let _ = replica.step(Event::Message(message));
    let _ = replica.step(Event::Tick { now_ms: 5_000 });
});
