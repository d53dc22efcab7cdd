//! Reads of committed transactions with proofs: the node's side (the audit
//! path of a transaction in its block, with the block's header and commit
//! certificate) and the client's side ([`verify_transaction_proof`],
//! [`verify_anchoring_proof`]: pure, offline, against genesis).

use govchain_crypto::{Digest, PublicKey, Signature, merkle_inclusion_proof, verify_inclusion};
use govchain_exec::transaction_id;
use govchain_pbft::ValidatorSet;
use govchain_proto::node::v1::GetTransactionResponse;
use govchain_proto::types::v1::{self as types, AnchoredRecord, CommittedBlock};

use crate::certified_header::{CertifiedHeaderError, certify_header};

/// Why a stored block gave no inclusion proof: the ledger and the block
/// disagree, which is this node's fault, never the client's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IncludeError {
    #[error("the stored block at height {height} has no body or no certificate")]
    Incomplete { height: u64 },
    #[error(
        "transaction index {index} is outside the block at height {height} of {count} transactions"
    )]
    Index {
        height: u64,
        index: u32,
        count: usize,
    },
}

/// The proof that the transaction at `index` of `block` is in it.
pub(crate) fn inclusion_proof(
    block: &CommittedBlock,
    index: u32,
) -> Result<types::InclusionProof, IncludeError> {
    let height = block.header.as_ref().map_or(0, |header| header.height);
    let (Some(body), Some(certificate)) = (&block.block, &block.certificate) else {
        return Err(IncludeError::Incomplete { height });
    };
    let ids: Vec<Digest> = body
        .transactions
        .iter()
        .map(|t| transaction_id(&t.chain_id, &t.signer, t.nonce, &t.payload))
        .collect();
    let path = merkle_inclusion_proof(&ids, index as usize).ok_or(IncludeError::Index {
        height,
        index,
        count: ids.len(),
    })?;
    Ok(types::InclusionProof {
        header: body.header.clone(),
        certificate: Some(certificate.clone()),
        leaf_index: u64::from(index),
        tree_size: ids.len() as u64,
        audit_path: path.iter().map(Digest::to_vec).collect(),
        // The caller adds them (`certified_header::set_changes_before`).
        validator_set_changes: Vec::new(),
    })
}

/// What a verified inclusion proof established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvenInclusion {
    pub transaction_id: Digest,
    pub height: u64,
    pub block_hash: Digest,
    pub transactions_root: Digest,
    pub timestamp_ms: u64,
    /// Position in the block, from 0.
    pub index: u64,
    /// Transactions in the block.
    pub tree_size: u64,
    /// Hashes on the audit path.
    pub path_len: usize,
    /// Distinct validators whose commit signatures were checked.
    pub signers: usize,
    pub quorum: u32,
}

/// Which item of an answer with an inclusion proof does not hold.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InclusionProofError {
    #[error("the answer carries no inclusion proof")]
    NoProof,
    #[error(transparent)]
    Header(#[from] CertifiedHeaderError),
    #[error("the {what} is {got} bytes, expected 32")]
    DigestLength { what: &'static str, got: usize },
    #[error("the answer carries no envelope")]
    NoEnvelope,
    #[error("the envelope's transaction id is {got}, not the asked {expected}")]
    EnvelopeId { expected: Digest, got: Digest },
    #[error("the envelope's signature does not verify for its signer: {0}")]
    Signature(String),
    #[error(
        "the proof's tree size {tree_size} is not the header's transaction count {transaction_count}"
    )]
    TreeSize {
        tree_size: u64,
        transaction_count: u32,
    },
    #[error("the proof's leaf index {index} is outside the block's {tree_size} transactions")]
    LeafIndex { index: u64, tree_size: u64 },
    #[error(
        "the audit path ({path_len} hashes) does not lead from transaction {transaction_id} at \
         index {index} of {tree_size} to the header's transactions root {root}"
    )]
    AuditPath {
        transaction_id: Digest,
        index: u64,
        tree_size: u64,
        path_len: usize,
        root: Digest,
    },
    #[error("the answer's {what} is {claimed}, the proof's is {proven}")]
    Claim {
        what: &'static str,
        claimed: String,
        proven: String,
    },
}

/// Checks offline that `transaction_id` is the leaf at the proof's index of
/// the block whose header the proof carries, and that a quorum of genesis's
/// validators (`chain_id`, `validators`) certified that header.
pub fn verify_inclusion_proof(
    chain_id: &str,
    validators: &ValidatorSet,
    transaction_id: &Digest,
    proof: &types::InclusionProof,
) -> Result<ProvenInclusion, InclusionProofError> {
    let certified = certify_header(
        chain_id,
        validators,
        &proof.validator_set_changes,
        &proof.header,
        proof.certificate.as_ref(),
    )?;
    let header = &certified.header;
    let root = digest("header's transactions root", &header.transactions_root)?;
    // The root does not commit to the tree's size; the certified header does.
    if proof.tree_size != u64::from(header.transaction_count) {
        return Err(InclusionProofError::TreeSize {
            tree_size: proof.tree_size,
            transaction_count: header.transaction_count,
        });
    }
    if proof.leaf_index >= proof.tree_size {
        return Err(InclusionProofError::LeafIndex {
            index: proof.leaf_index,
            tree_size: proof.tree_size,
        });
    }
    let path = proof
        .audit_path
        .iter()
        .map(|hash| digest("audit path hash", hash))
        .collect::<Result<Vec<_>, _>>()?;
    if !verify_inclusion(
        transaction_id,
        proof.leaf_index,
        proof.tree_size,
        &path,
        &root,
    ) {
        return Err(InclusionProofError::AuditPath {
            transaction_id: *transaction_id,
            index: proof.leaf_index,
            tree_size: proof.tree_size,
            path_len: path.len(),
            root,
        });
    }
    Ok(ProvenInclusion {
        transaction_id: *transaction_id,
        height: header.height,
        block_hash: certified.hash,
        transactions_root: root,
        timestamp_ms: header.timestamp_ms,
        index: proof.leaf_index,
        tree_size: proof.tree_size,
        path_len: path.len(),
        signers: certified.signers,
        quorum: validators.quorum(),
    })
}

/// Checks offline a `GetTransaction` answer with a proof for the asked
/// `transaction_id`: the envelope hashes to that id and its signature
/// verifies (the id does not cover the signature), the id is proven in a
/// certified block, and the answer's height, block hash and index are the
/// proven ones. The answer's `result` is not proven: no header commits to
/// it.
pub fn verify_transaction_proof(
    chain_id: &str,
    validators: &ValidatorSet,
    transaction_id: &Digest,
    response: &GetTransactionResponse,
) -> Result<ProvenInclusion, InclusionProofError> {
    let proof = response
        .proof
        .as_ref()
        .ok_or(InclusionProofError::NoProof)?;
    let envelope = response
        .envelope
        .as_ref()
        .ok_or(InclusionProofError::NoEnvelope)?;
    let id = govchain_exec::transaction_id(
        &envelope.chain_id,
        &envelope.signer,
        envelope.nonce,
        &envelope.payload,
    );
    if id != *transaction_id {
        return Err(InclusionProofError::EnvelopeId {
            expected: *transaction_id,
            got: id,
        });
    }
    check_signature(&id, &envelope.signer, &envelope.signature)?;
    let proven = verify_inclusion_proof(chain_id, validators, transaction_id, proof)?;
    claim(
        "transaction id",
        hex::encode(&response.transaction_id),
        id.to_hex(),
    )?;
    claim(
        "block height",
        response.block_height.to_string(),
        proven.height.to_string(),
    )?;
    claim(
        "block hash",
        hex::encode(&response.block_hash),
        proven.block_hash.to_hex(),
    )?;
    claim(
        "index",
        response.index.to_string(),
        proven.index.to_string(),
    )?;
    Ok(proven)
}

/// Checks offline that the transaction which anchored `anchored` (its
/// `transaction_id`, from a verified state proof) is in the certified block
/// at its `block_height`.
pub fn verify_anchoring_proof(
    chain_id: &str,
    validators: &ValidatorSet,
    anchored: &AnchoredRecord,
    proof: Option<&types::InclusionProof>,
) -> Result<ProvenInclusion, InclusionProofError> {
    let proof = proof.ok_or(InclusionProofError::NoProof)?;
    let id = digest("anchoring transaction id", &anchored.transaction_id)?;
    let proven = verify_inclusion_proof(chain_id, validators, &id, proof)?;
    claim(
        "anchor's block height",
        anchored.block_height.to_string(),
        proven.height.to_string(),
    )?;
    Ok(proven)
}

fn check_signature(
    id: &Digest,
    signer: &[u8],
    signature: &[u8],
) -> Result<(), InclusionProofError> {
    let key = PublicKey::from_slice(signer)
        .map_err(|err| InclusionProofError::Signature(format!("signer: {err}")))?;
    let signature = Signature::from_slice(signature)
        .map_err(|err| InclusionProofError::Signature(err.to_string()))?;
    key.verify(id.as_bytes(), &signature)
        .map_err(|err| InclusionProofError::Signature(err.to_string()))
}

/// An item of the answer, as text, against the proven one.
fn claim(what: &'static str, claimed: String, proven: String) -> Result<(), InclusionProofError> {
    if claimed == proven {
        return Ok(());
    }
    Err(InclusionProofError::Claim {
        what,
        claimed,
        proven,
    })
}

fn digest(what: &'static str, bytes: &[u8]) -> Result<Digest, InclusionProofError> {
    Digest::from_slice(bytes).map_err(|_| InclusionProofError::DigestLength {
        what,
        got: bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use govchain_crypto::{SigningKey, merkle_root};
    use govchain_exec::block_hash;
    use govchain_pbft::commit_signing_bytes;
    use govchain_proto::node::v1::TransactionStatus;
    use govchain_proto::types::v1::{Block, BlockHeader, CommitSignature, TransactionEnvelope};
    use prost::Message as _;

    use super::*;

    const CHAIN: &str = "test-chain";
    const HEIGHT: u64 = 9;

    fn validator_keys() -> Vec<SigningKey> {
        (1..=4).map(|i| SigningKey::from_seed([i; 32])).collect()
    }

    fn validators() -> ValidatorSet {
        ValidatorSet::new(
            validator_keys()
                .iter()
                .map(SigningKey::public_key)
                .collect(),
        )
        .expect("four validators")
    }

    fn envelope(nonce: u64) -> TransactionEnvelope {
        let key = SigningKey::from_seed([9; 32]);
        let payload = format!("payload {nonce}").into_bytes();
        let signer = key.public_key().as_bytes().to_vec();
        let id = transaction_id(CHAIN, &signer, nonce, &payload);
        TransactionEnvelope {
            signature: key.sign(id.as_bytes()).to_vec(),
            payload: payload.into(),
            signer,
            chain_id: CHAIN.into(),
            nonce,
        }
    }

    fn id_of(envelope: &TransactionEnvelope) -> Digest {
        transaction_id(
            &envelope.chain_id,
            &envelope.signer,
            envelope.nonce,
            &envelope.payload,
        )
    }

    /// A block of `count` transactions, certified by three of four
    /// validators.
    fn committed_block(count: u64) -> CommittedBlock {
        let transactions: Vec<_> = (1..=count).map(envelope).collect();
        let ids: Vec<Digest> = transactions.iter().map(id_of).collect();
        let header = BlockHeader {
            chain_id: CHAIN.into(),
            height: HEIGHT,
            parent_hash: vec![1; 32],
            transactions_root: merkle_root(&ids).to_vec(),
            state_root: vec![2; 32],
            timestamp_ms: 1_000,
            view: 3,
            proposer_index: 0,
            transaction_count: u32::try_from(count).expect("small"),
            next_validators: Vec::new(),
        };
        let header_bytes = header.encode_to_vec();
        let hash = block_hash(&header_bytes);
        let signing = commit_signing_bytes(CHAIN, 3, HEIGHT, &hash);
        let signatures = validator_keys()
            .iter()
            .zip(0u32..)
            .take(3)
            .map(|(key, index)| CommitSignature {
                validator_index: index,
                signature: key.sign(&signing).to_vec(),
            })
            .collect();
        CommittedBlock {
            block_hash: hash.to_vec(),
            header: Some(header),
            block: Some(Block {
                header: header_bytes,
                transactions,
            }),
            certificate: Some(types::CommitCertificate {
                height: HEIGHT,
                view: 3,
                block_hash: hash.to_vec(),
                signatures,
            }),
            results: Vec::new(),
        }
    }

    /// The answer an honest node gives for transaction `index` of `block`.
    fn answer(block: &CommittedBlock, index: u32) -> GetTransactionResponse {
        let envelope = block.block.as_ref().expect("body").transactions[index as usize].clone();
        GetTransactionResponse {
            transaction_id: id_of(&envelope).to_vec(),
            status: TransactionStatus::Committed.into(),
            block_height: HEIGHT,
            block_hash: block.block_hash.clone(),
            index,
            result: None,
            envelope: Some(envelope),
            proof: Some(inclusion_proof(block, index).expect("in the block")),
            ..Default::default()
        }
    }

    fn proof(answer: &mut GetTransactionResponse) -> &mut types::InclusionProof {
        answer.proof.as_mut().expect("proof")
    }

    fn verify(answer: &GetTransactionResponse) -> Result<ProvenInclusion, InclusionProofError> {
        let id = Digest::from_slice(&answer.transaction_id).expect("32 bytes");
        verify_transaction_proof(CHAIN, &validators(), &id, answer)
    }

    #[test]
    fn every_transaction_of_a_block_is_proven() {
        for count in [1, 2, 5, 8] {
            let block = committed_block(count);
            for index in 0..u32::try_from(count).expect("small") {
                let proven = verify(&answer(&block, index)).expect("an honest answer verifies");
                assert_eq!(proven.height, HEIGHT);
                assert_eq!(proven.index, u64::from(index));
                assert_eq!(proven.tree_size, count);
                assert_eq!(proven.signers, 3);
                assert_eq!(proven.quorum, 3);
            }
        }
    }

    #[test]
    fn an_index_outside_the_block_is_the_nodes_fault() {
        let block = committed_block(3);
        assert!(matches!(
            inclusion_proof(&block, 3),
            Err(IncludeError::Index {
                index: 3,
                count: 3,
                ..
            })
        ));
    }

    #[test]
    fn each_tampered_item_is_named() {
        let block = committed_block(5);
        let honest = answer(&block, 2);

        // One byte of the header's state root: it still decodes, but its
        // hash is not the certified one.
        let mut lie = honest.clone();
        let header = &mut proof(&mut lie).header;
        let at = header
            .windows(32)
            .position(|window| window == [2; 32])
            .expect("the state root is in the header");
        header[at] ^= 1;
        let err = verify(&lie).expect_err("a changed header");
        assert!(
            matches!(
                err,
                InclusionProofError::Header(CertifiedHeaderError::Certificate {
                    height: HEIGHT,
                    ..
                })
            ),
            "{err}"
        );

        let mut lie = honest.clone();
        let certificate = proof(&mut lie).certificate.as_mut().expect("certificate");
        certificate.signatures[0].signature[0] ^= 1;
        let err = verify(&lie).expect_err("a forged commit signature");
        assert!(
            matches!(
                err,
                InclusionProofError::Header(CertifiedHeaderError::Certificate {
                    height: HEIGHT,
                    ..
                })
            ),
            "{err}"
        );

        let mut lie = honest.clone();
        proof(&mut lie).audit_path[1][0] ^= 1;
        let err = verify(&lie).expect_err("a changed path hash");
        assert!(
            matches!(err, InclusionProofError::AuditPath { index: 2, .. }),
            "{err}"
        );

        let mut lie = honest.clone();
        proof(&mut lie).audit_path.pop();
        let err = verify(&lie).expect_err("a truncated path");
        assert!(
            matches!(err, InclusionProofError::AuditPath { path_len: 2, .. }),
            "{err}"
        );

        let mut lie = honest.clone();
        proof(&mut lie).leaf_index = 3;
        let err = verify(&lie).expect_err("another index");
        assert!(
            matches!(err, InclusionProofError::AuditPath { index: 3, .. }),
            "{err}"
        );

        let mut lie = honest.clone();
        proof(&mut lie).leaf_index = 5;
        let err = verify(&lie).expect_err("an index past the end");
        assert!(
            matches!(
                err,
                InclusionProofError::LeafIndex {
                    index: 5,
                    tree_size: 5
                }
            ),
            "{err}"
        );

        let mut lie = honest.clone();
        proof(&mut lie).tree_size = 6;
        let err = verify(&lie).expect_err("another size");
        assert!(
            matches!(
                err,
                InclusionProofError::TreeSize {
                    tree_size: 6,
                    transaction_count: 5
                }
            ),
            "{err}"
        );

        let mut lie = honest.clone();
        lie.envelope.as_mut().expect("envelope").payload = b"another payload".to_vec().into();
        let err = verify(&lie).expect_err("a changed envelope");
        assert!(
            matches!(err, InclusionProofError::EnvelopeId { .. }),
            "{err}"
        );

        let mut lie = honest.clone();
        lie.envelope.as_mut().expect("envelope").signature[5] ^= 1;
        let err = verify(&lie).expect_err("a changed signature: the id does not cover it");
        assert!(matches!(err, InclusionProofError::Signature(_)), "{err}");

        let mut lie = honest.clone();
        lie.index = 1;
        let err = verify(&lie).expect_err("the answer claims another index");
        assert!(
            matches!(err, InclusionProofError::Claim { what: "index", .. }),
            "{err}"
        );

        let mut lie = honest.clone();
        lie.block_height = HEIGHT + 1;
        let err = verify(&lie).expect_err("the answer claims another height");
        assert!(
            matches!(
                err,
                InclusionProofError::Claim {
                    what: "block height",
                    ..
                }
            ),
            "{err}"
        );

        let err = verify_transaction_proof(
            "other-chain",
            &validators(),
            &id_of(honest.envelope.as_ref().expect("envelope")),
            &honest,
        )
        .expect_err("another chain's genesis");
        assert!(
            matches!(
                err,
                InclusionProofError::Header(CertifiedHeaderError::ChainId { .. })
            ),
            "{err}"
        );

        let mut lie = honest.clone();
        lie.proof = None;
        assert!(matches!(verify(&lie), Err(InclusionProofError::NoProof)));
    }

    #[test]
    fn an_anchor_is_proven_at_its_own_height_only() {
        let block = committed_block(4);
        let envelope = &block.block.as_ref().expect("body").transactions[1];
        let proof = inclusion_proof(&block, 1).expect("in the block");
        let mut anchored = AnchoredRecord {
            transaction_id: id_of(envelope).to_vec(),
            block_height: HEIGHT,
            ..Default::default()
        };
        let proven = verify_anchoring_proof(CHAIN, &validators(), &anchored, Some(&proof))
            .expect("the anchoring transaction is in its block");
        assert_eq!(proven.index, 1);
        anchored.block_height = HEIGHT - 1;
        let err = verify_anchoring_proof(CHAIN, &validators(), &anchored, Some(&proof))
            .expect_err("a block at another height");
        assert!(matches!(err, InclusionProofError::Claim { .. }), "{err}");
        anchored.block_height = HEIGHT;
        anchored.transaction_id =
            id_of(&block.block.as_ref().expect("body").transactions[2]).to_vec();
        let err = verify_anchoring_proof(CHAIN, &validators(), &anchored, Some(&proof))
            .expect_err("another transaction");
        assert!(
            matches!(err, InclusionProofError::AuditPath { .. }),
            "{err}"
        );
        assert!(matches!(
            verify_anchoring_proof(CHAIN, &validators(), &anchored, None),
            Err(InclusionProofError::NoProof)
        ));
    }
}
