//! Durable consensus records (`pbft::Record`) in the ledger's redb file,
//! and their reload after a restart.

use govchain_ledger::{CONSENSUS_KEY_BYTES, Ledger, consensus_key};
use govchain_pbft::{Body, Record, Restored};
use govchain_proto::consensus::v1 as wire;
use prost::Message as _;

use crate::wire::{message_from_wire, message_to_wire, prepared_from_wire, prepared_to_wire};

const KIND_VIEW: u8 = 0;
const KIND_ACCEPTED: u8 = 1;
const KIND_VOTE: u8 = 2;
const KIND_PREPARED: u8 = 3;
/// The batches a proposal this node built or found valid names, written
/// with the vote that proposal led to (see [`encode_batches`]).
const KIND_BATCHES: u8 = 4;

/// The batches `(view, seq)`'s proposal names, as one record: a node that
/// voted for a proposal can then resolve it after a restart, and serve its
/// batches to peers, even when every other holder restarted too (a new
/// view re-proposes a prepared proposal by reference). Pruned with the
/// block, as every record about a height.
pub fn encode_batches(
    view: u64,
    seq: u64,
    batches: &[wire::TransactionBatch],
) -> ([u8; CONSENSUS_KEY_BYTES], Vec<u8>) {
    let mut value = Vec::new();
    for batch in batches {
        batch
            .encode_length_delimited(&mut value)
            .expect("a Vec grows as needed");
    }
    (consensus_key(KIND_BATCHES, seq, view, 0), value)
}

/// Every batch the records hold (see [`encode_batches`]).
pub fn load_batches(ledger: &Ledger) -> anyhow::Result<Vec<wire::TransactionBatch>> {
    let mut batches = Vec::new();
    for (key, value) in ledger.consensus_records()? {
        if key.first().copied() != Some(KIND_BATCHES) {
            continue;
        }
        let mut bytes = value.as_slice();
        while !bytes.is_empty() {
            batches.push(
                wire::TransactionBatch::decode_length_delimited(&mut bytes).map_err(|err| {
                    anyhow::anyhow!(
                        "consensus record {} is corrupt: batches: {err}",
                        hex::encode(&key)
                    )
                })?,
            );
        }
    }
    Ok(batches)
}

/// The key and value a record is stored under. One view record (key seq 0,
/// never pruned, overwritten); others keyed by the height they are about, so
/// the ledger deletes them with that block.
pub fn encode(record: &Record) -> ([u8; CONSENSUS_KEY_BYTES], Vec<u8>) {
    match record {
        Record::View { view, normal } => {
            let mut value = view.to_be_bytes().to_vec();
            value.push(u8::from(*normal));
            (consensus_key(KIND_VIEW, 0, 0, 0), value)
        }
        Record::Accepted {
            message,
            reproposal,
        } => {
            let (view, seq) = view_seq(&message.body);
            let mut value = vec![u8::from(*reproposal)];
            value.extend(message_to_wire(message).encode_to_vec());
            (consensus_key(KIND_ACCEPTED, seq, view, 0), value)
        }
        Record::Vote(message) => {
            let (view, seq) = view_seq(&message.body);
            let sub = u8::from(matches!(message.body, Body::Commit { .. }));
            (
                consensus_key(KIND_VOTE, seq, view, sub),
                message_to_wire(message).encode_to_vec(),
            )
        }
        Record::Prepared(certificate) => {
            let (view, seq) = view_seq(&certificate.pre_prepare.body);
            (
                consensus_key(KIND_PREPARED, seq, view, 0),
                prepared_to_wire(certificate).encode_to_vec(),
            )
        }
    }
}

fn view_seq(body: &Body) -> (u64, u64) {
    match body {
        Body::PrePrepare { view, seq, .. }
        | Body::Prepare { view, seq, .. }
        | Body::Commit { view, seq, .. } => (*view, *seq),
        _ => (0, 0),
    }
}

/// Reads every record back. Records are written by this node only, so one
/// that does not decode means the file is damaged: an error, not a guess.
pub fn load(ledger: &Ledger) -> anyhow::Result<Restored> {
    let mut restored = Restored::default();
    for (key, value) in ledger.consensus_records()? {
        let corrupt = |what: &str| {
            anyhow::anyhow!("consensus record {} is corrupt: {what}", hex::encode(&key))
        };
        match key.first().copied() {
            Some(KIND_VIEW) => {
                let view: [u8; 8] = value
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| corrupt("view"))?;
                restored.view = u64::from_be_bytes(view);
                restored.normal = value.get(8) == Some(&1);
            }
            Some(KIND_ACCEPTED) => {
                let (flag, bytes) = value.split_first().ok_or_else(|| corrupt("empty"))?;
                let message =
                    wire::ConsensusMessage::decode(bytes).map_err(|e| corrupt(&e.to_string()))?;
                restored.accepted.push((
                    message_from_wire(message).map_err(|e| corrupt(&e))?,
                    *flag == 1,
                ));
            }
            Some(KIND_VOTE) => {
                let message = wire::ConsensusMessage::decode(value.as_slice())
                    .map_err(|e| corrupt(&e.to_string()))?;
                restored
                    .votes
                    .push(message_from_wire(message).map_err(|e| corrupt(&e))?);
            }
            Some(KIND_PREPARED) => {
                let certificate = wire::PreparedCertificate::decode(value.as_slice())
                    .map_err(|e| corrupt(&e.to_string()))?;
                restored
                    .prepared
                    .push(prepared_from_wire(certificate, 0).map_err(|e| corrupt(&e))?);
            }
            // Loaded by `load_batches`.
            Some(KIND_BATCHES) => {}
            _ => return Err(corrupt("unknown kind")),
        }
    }
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use govchain_crypto::{Digest, SigningKey};
    use govchain_pbft::{PreparedCertificate, SignedMessage};

    use super::*;

    fn signed(sender: u32, body: Body) -> SignedMessage {
        SignedMessage::sign(
            "c",
            sender,
            &SigningKey::from_seed([sender as u8; 32]),
            body,
        )
    }

    #[test]
    fn records_come_back_after_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let genesis = Digest::sha256(b"g");
        let digest = Digest::sha256(b"block");
        let pre_prepare = signed(
            0,
            Body::PrePrepare {
                view: 2,
                seq: 1,
                digest,
                block: Bytes::from_static(b"block"),
            },
        );
        let prepare = signed(
            1,
            Body::Prepare {
                view: 2,
                seq: 1,
                digest,
            },
        );
        let commit = signed(
            1,
            Body::Commit {
                view: 2,
                seq: 1,
                digest,
            },
        );
        let records = [
            Record::View {
                view: 2,
                normal: false,
            },
            Record::Accepted {
                message: pre_prepare.clone(),
                reproposal: true,
            },
            Record::Vote(prepare.clone()),
            Record::Prepared(PreparedCertificate {
                pre_prepare: pre_prepare.clone(),
                prepares: vec![prepare.clone()],
            }),
            Record::Vote(commit.clone()),
            // A later view record replaces the first.
            Record::View {
                view: 3,
                normal: true,
            },
        ];
        {
            let ledger = Ledger::open(dir.path(), "c", genesis).expect("open");
            let encoded: Vec<_> = records.iter().map(encode).collect();
            ledger.consensus_write(&encoded).expect("write");
        }
        let ledger = Ledger::open(dir.path(), "c", genesis).expect("reopen");
        let restored = load(&ledger).expect("load");
        assert_eq!((restored.view, restored.normal), (3, true));
        assert_eq!(restored.accepted, vec![(pre_prepare.clone(), true)]);
        assert_eq!(restored.votes, vec![prepare.clone(), commit]);
        assert_eq!(
            restored.prepared,
            vec![PreparedCertificate {
                pre_prepare,
                prepares: vec![prepare]
            }]
        );
    }

    #[test]
    fn the_batches_of_a_vote_come_back_after_a_reopen_beside_the_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let genesis = Digest::sha256(b"g");
        let digest = Digest::sha256(b"block");
        let prepare = signed(
            1,
            Body::Prepare {
                view: 0,
                seq: 1,
                digest,
            },
        );
        let batch = |n: u8| wire::TransactionBatch {
            transactions: vec![govchain_proto::types::v1::TransactionEnvelope {
                payload: Bytes::from(vec![n; 40]),
                signer: vec![n; 32],
                signature: vec![n; 64],
                chain_id: "c".into(),
                nonce: u64::from(n),
            }],
            trace_context: Default::default(),
            digest: vec![n; 32],
        };
        {
            let ledger = Ledger::open(dir.path(), "c", genesis).expect("open");
            ledger
                .consensus_write(&[
                    encode_batches(0, 1, &[batch(1), batch(2)]),
                    encode(&Record::Vote(prepare.clone())),
                    // Another height's batches.
                    encode_batches(0, 2, &[batch(3)]),
                ])
                .expect("write");
        }
        let ledger = Ledger::open(dir.path(), "c", genesis).expect("reopen");
        let restored = load(&ledger).expect("batch records do not disturb the votes");
        assert_eq!(restored.votes, vec![prepare]);
        let batches = load_batches(&ledger).expect("batches");
        assert_eq!(batches, vec![batch(1), batch(2), batch(3)]);
    }
}
