//! Conversions between the consensus wire format (protobuf) and the `pbft`
//! crate's types. Anything a peer sends is checked here for shape (lengths,
//! required fields, nesting); signatures are checked by `pbft`.

use govchain_crypto::{Digest, Signature};
use govchain_pbft::{
    Body, CommitCertificate, NewView, PreparedCertificate, SignedMessage, ViewChange,
};
use govchain_proto::consensus::v1 as wire;
use govchain_proto::consensus::v1::consensus_message::Body as WireBody;
use govchain_proto::types::v1 as types;

/// Nested lists in view changes hold at most this many messages.
const NESTED_MESSAGES_MAX: usize = 1024;

pub fn message_to_wire(message: &SignedMessage) -> wire::ConsensusMessage {
    let body = match &message.body {
        Body::PrePrepare {
            view,
            seq,
            digest,
            block,
        } => WireBody::PrePrepare(wire::PrePrepare {
            view: *view,
            seq: *seq,
            digest: digest.to_vec(),
            block: block.clone(),
        }),
        Body::Prepare { view, seq, digest } => WireBody::Prepare(wire::Prepare {
            view: *view,
            seq: *seq,
            digest: digest.to_vec(),
        }),
        Body::Commit { view, seq, digest } => WireBody::Commit(wire::Commit {
            view: *view,
            seq: *seq,
            digest: digest.to_vec(),
        }),
        Body::Checkpoint { seq, digest } => WireBody::Checkpoint(wire::Checkpoint {
            seq: *seq,
            digest: digest.to_vec(),
        }),
        Body::ViewChange(change) => WireBody::ViewChange(Box::new(wire::ViewChange {
            new_view: change.new_view,
            committed_seq: change.committed_seq,
            committed_certificate: change.committed.as_ref().map(certificate_to_wire),
            prepared: change
                .prepared
                .as_deref()
                .map(|c| Box::new(prepared_to_wire(c))),
        })),
        Body::NewView(new_view) => WireBody::NewView(wire::NewView {
            view: new_view.view,
            view_changes: new_view.view_changes.iter().map(message_to_wire).collect(),
            pre_prepares: new_view.pre_prepares.iter().map(message_to_wire).collect(),
        }),
    };
    wire::ConsensusMessage {
        sender_index: message.sender,
        signature: message.signature.to_vec(),
        body: Some(body),
    }
}

/// Decodes a peer's message; `depth` limits nesting (a view change inside a
/// new view, and nothing deeper).
pub fn message_from_wire(message: wire::ConsensusMessage) -> Result<SignedMessage, String> {
    decode(message, 0)
}

fn decode(message: wire::ConsensusMessage, depth: u32) -> Result<SignedMessage, String> {
    if depth > 2 {
        return Err("consensus messages nest too deeply".into());
    }
    let signature = Signature::from_slice(&message.signature).map_err(|e| e.to_string())?;
    let body = match message.body.ok_or("consensus message has no body")? {
        WireBody::PrePrepare(m) => Body::PrePrepare {
            view: m.view,
            seq: m.seq,
            digest: digest(&m.digest)?,
            block: m.block,
        },
        WireBody::Prepare(m) => Body::Prepare {
            view: m.view,
            seq: m.seq,
            digest: digest(&m.digest)?,
        },
        WireBody::Commit(m) => Body::Commit {
            view: m.view,
            seq: m.seq,
            digest: digest(&m.digest)?,
        },
        WireBody::Checkpoint(m) => Body::Checkpoint {
            seq: m.seq,
            digest: digest(&m.digest)?,
        },
        WireBody::ViewChange(m) => Body::ViewChange(ViewChange {
            new_view: m.new_view,
            committed_seq: m.committed_seq,
            committed: m
                .committed_certificate
                .as_ref()
                .map(certificate_from_wire)
                .transpose()?,
            prepared: m
                .prepared
                .map(|c| prepared_from_wire(*c, depth).map(Box::new))
                .transpose()?,
        }),
        WireBody::NewView(m) => Body::NewView(NewView {
            view: m.view,
            view_changes: decode_list(m.view_changes, depth)?,
            pre_prepares: decode_list(m.pre_prepares, depth)?,
        }),
    };
    Ok(SignedMessage {
        sender: message.sender_index,
        signature,
        body,
    })
}

pub fn prepared_to_wire(certificate: &PreparedCertificate) -> wire::PreparedCertificate {
    wire::PreparedCertificate {
        pre_prepare: Some(Box::new(message_to_wire(&certificate.pre_prepare))),
        prepares: certificate.prepares.iter().map(message_to_wire).collect(),
    }
}

pub fn prepared_from_wire(
    certificate: wire::PreparedCertificate,
    depth: u32,
) -> Result<PreparedCertificate, String> {
    let pre_prepare = certificate
        .pre_prepare
        .ok_or("prepared certificate has no pre-prepare")?;
    Ok(PreparedCertificate {
        pre_prepare: decode(*pre_prepare, depth + 1)?,
        prepares: decode_list(certificate.prepares, depth)?,
    })
}

fn decode_list(
    list: Vec<wire::ConsensusMessage>,
    depth: u32,
) -> Result<Vec<SignedMessage>, String> {
    bounded(list)?
        .into_iter()
        .map(|m| decode(m, depth + 1))
        .collect()
}

fn bounded<T>(list: Vec<T>) -> Result<Vec<T>, String> {
    if list.len() > NESTED_MESSAGES_MAX {
        return Err(format!(
            "{} nested messages, at most {NESTED_MESSAGES_MAX}",
            list.len()
        ));
    }
    Ok(list)
}

fn digest(bytes: &[u8]) -> Result<Digest, String> {
    Digest::from_slice(bytes).map_err(|e| e.to_string())
}

pub fn certificate_to_wire(certificate: &CommitCertificate) -> types::CommitCertificate {
    types::CommitCertificate {
        height: certificate.seq,
        view: certificate.view,
        block_hash: certificate.digest.to_vec(),
        signatures: certificate
            .signatures
            .iter()
            .map(|(index, signature)| types::CommitSignature {
                validator_index: *index,
                signature: signature.to_vec(),
            })
            .collect(),
    }
}

pub fn certificate_from_wire(
    certificate: &types::CommitCertificate,
) -> Result<CommitCertificate, String> {
    let signatures = bounded(certificate.signatures.clone())?
        .iter()
        .map(|s| {
            Ok((
                s.validator_index,
                Signature::from_slice(&s.signature).map_err(|e| e.to_string())?,
            ))
        })
        .collect::<Result<_, String>>()?;
    Ok(CommitCertificate {
        seq: certificate.height,
        view: certificate.view,
        digest: digest(&certificate.block_hash)?,
        signatures,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use govchain_crypto::SigningKey;
    use prost::Message as _;

    use super::*;

    fn signed(body: Body) -> SignedMessage {
        SignedMessage::sign("c", 1, &SigningKey::from_seed([1; 32]), body)
    }

    #[test]
    fn round_trips() {
        let digest = Digest::sha256(b"b");
        let pre_prepare = signed(Body::PrePrepare {
            view: 1,
            seq: 2,
            digest,
            block: Bytes::from_static(b"block"),
        });
        let prepare = signed(Body::Prepare {
            view: 1,
            seq: 2,
            digest,
        });
        let certificate = CommitCertificate {
            seq: 1,
            view: 0,
            digest,
            signatures: vec![(1, SigningKey::from_seed([1; 32]).sign(b"c"))],
        };
        let change = signed(Body::ViewChange(ViewChange {
            new_view: 2,
            committed_seq: 1,
            committed: Some(certificate),
            prepared: Some(Box::new(PreparedCertificate {
                pre_prepare: pre_prepare.clone(),
                prepares: vec![prepare.clone()],
            })),
        }));
        let new_view = signed(Body::NewView(NewView {
            view: 2,
            view_changes: vec![change.clone()],
            pre_prepares: vec![pre_prepare.clone()],
        }));
        for message in [
            pre_prepare,
            prepare,
            change,
            new_view,
            signed(Body::Checkpoint { seq: 1, digest }),
            signed(Body::Commit {
                view: 0,
                seq: 9,
                digest,
            }),
        ] {
            let bytes = message_to_wire(&message).encode_to_vec();
            let back = message_from_wire(
                wire::ConsensusMessage::decode(bytes.as_slice()).expect("decodes"),
            );
            assert_eq!(back, Ok(message));
        }
    }

    #[test]
    fn malformed_messages_are_errors() {
        let empty = wire::ConsensusMessage {
            sender_index: 0,
            signature: vec![0; 64],
            body: None,
        };
        assert!(message_from_wire(empty).is_err());
        let short_digest = wire::ConsensusMessage {
            sender_index: 0,
            signature: vec![0; 64],
            body: Some(WireBody::Prepare(wire::Prepare {
                view: 0,
                seq: 1,
                digest: vec![1; 5],
            })),
        };
        assert!(message_from_wire(short_digest).is_err());
        let short_signature = wire::ConsensusMessage {
            sender_index: 0,
            signature: vec![0; 3],
            body: Some(WireBody::Prepare(wire::Prepare {
                view: 0,
                seq: 1,
                digest: vec![1; 32],
            })),
        };
        assert!(message_from_wire(short_signature).is_err());
    }
}
