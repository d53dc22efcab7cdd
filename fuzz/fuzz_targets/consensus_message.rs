//! Consensus messages as a peer sends them on `ConsensusService.Stream`:
//! protobuf decoding, then the node's own decoder (`crates/node/src/wire.rs`,
//! see `govchain_fuzz::wire`), signature and certificate checks, and a
//! replica's `step`. Nothing may panic, and decoding must round-trip.
//! The first byte chooses the input's shape: `0 mod 3`, one message's
//! bytes; `1 mod 3`, the same, re-signed by the validator it names, so the
//! replica gets past the signature check into the protocol; `2 mod 3`, a
//! sequence of correctly signed pre-prepares, prepares, commits and
//! checkpoints of small views and heights, each sent through the wire
//! encoding and the decoder, so that the replica prepares, commits and
//! delivers.
#![no_main]

use bytes::Bytes;
use govchain_crypto::Digest;
use govchain_exec::block_digest;
use govchain_fuzz::wire::{message_from_wire, message_to_wire};
use govchain_fuzz::{CHAIN_ID, VALIDATOR_COUNT, validator_key, validators};
use govchain_pbft::Action;
use govchain_pbft::{
    Body, Config, Event, Replica, Restored, SignedMessage, ValidatorSet, verify_commit_certificate,
};
use govchain_proto::consensus::v1::ConsensusMessage;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
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

/// Blocks are opaque to the replica; in `sequence` any bytes are a block
/// and their digest is their SHA-256.
fn opaque_digest(block: &[u8]) -> Option<Digest> {
    Some(Digest::sha256(block))
}

fn replica(me: u32, block_digest: fn(&[u8]) -> Option<Digest>) -> Replica {
    let config = Config {
        chain_id: CHAIN_ID.into(),
        validators: validators(),
        me,
        key: validator_key(me),
        empty_block_interval_ms: 0,
        view_timeout_ms: 1_000,
        block_digest,
        // The fuzzed blocks never change the validator set.
        epoch_start: 1,
        block_validators: |_| None,
    };
    Replica::new(config, 0, None, Restored::default())
}

/// Decodes one peer message as the node does, checking that what we
/// decode we encode back to the same message.
fn decode(bytes: &[u8]) -> Option<SignedMessage> {
    let message = message_from_wire(ConsensusMessage::decode(bytes).ok()?).ok()?;
    let encoded = message_to_wire(&message).encode_to_vec();
    let again = ConsensusMessage::decode(encoded.as_slice()).expect("our own encoding decodes");
    assert_eq!(message_from_wire(again).as_ref(), Ok(&message));
    Some(message)
}

fn one(shape: u8, bytes: &[u8]) {
    let Some(message) = decode(bytes) else {
        return;
    };
    let validators = validators();
    check_carried(&message, &validators);
    let sender = message.sender % VALIDATOR_COUNT;
    let message = if shape % 3 == 1 {
        SignedMessage::sign(CHAIN_ID, sender, &validator_key(sender), message.body)
    } else {
        message
    };
    // A replica other than the sender, as the transport guarantees.
    let mut replica = replica(
        (sender + 1 + u32::from(shape / 3) % 3) % VALIDATOR_COUNT,
        block_digest,
    );
    let _ = replica.step(Event::Tick { now_ms: 1 });
    let _ = replica.step(Event::Message(message));
    let _ = replica.step(Event::Tick { now_ms: 5_000 });
}

/// Answers the replica's requests to check proposals (every block is
/// fine), as the node's driver would, until it asks for nothing more.
fn step(replica: &mut Replica, event: Event) {
    let mut events = vec![event];
    while let Some(event) = events.pop() {
        for action in replica.step(event) {
            if let Action::CheckProposal {
                view, seq, digest, ..
            } = action
            {
                events.push(Event::ProposalChecked {
                    view,
                    seq,
                    digest,
                    verdict: Ok(()),
                });
            }
        }
    }
}

fn sequence(u: &mut Unstructured) -> Result<()> {
    let me: u32 = u.int_in_range(0..=VALIDATOR_COUNT - 1)?;
    let mut replica = replica(me, opaque_digest);
    let blocks: [Bytes; 2] = [
        Bytes::from_static(b"block a"),
        Bytes::from_static(b"block b"),
    ];
    let digests = [Digest::sha256(&blocks[0]), Digest::sha256(&blocks[1])];
    let mut now_ms = 1;
    for _ in 0..u.int_in_range(1..=24)? {
        let view: u64 = u.int_in_range(0..=1)?;
        let seq: u64 = u.int_in_range(1..=2)?;
        let which = usize::from(u.arbitrary::<bool>()?);
        let digest = digests[which];
        let body = match u.int_in_range(0..=4)? {
            0 => Body::PrePrepare {
                view,
                seq,
                digest,
                block: blocks[which].clone(),
            },
            1 | 2 => Body::Prepare { view, seq, digest },
            3 => Body::Commit { view, seq, digest },
            _ => Body::Checkpoint { seq, digest },
        };
        let sender = if matches!(body, Body::PrePrepare { .. }) && u.arbitrary::<bool>()? {
            u32::try_from(view % u64::from(VALIDATOR_COUNT)).unwrap_or(0)
        } else {
            u.int_in_range(0..=VALIDATOR_COUNT - 1)?
        };
        if sender == me {
            continue;
        }
        let signed = SignedMessage::sign(CHAIN_ID, sender, &validator_key(sender), body);
        let bytes = message_to_wire(&signed).encode_to_vec();
        let decoded = decode(&bytes).expect("a message we encode decodes");
        assert_eq!(decoded, signed);
        step(&mut replica, Event::Message(decoded));
        now_ms += u64::from(u.int_in_range(0..=600u16)?);
        step(&mut replica, Event::Tick { now_ms });
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    if shape % 3 == 2 {
        let _ = sequence(&mut Unstructured::new(rest));
    } else {
        one(shape, rest);
    }
});
