//! State reads with proofs: the node's side (a value, its state tree path
//! and the certified head block, all from one ledger snapshot) and the
//! client's side ([`verify_state_proof`]: pure, offline, against genesis).

use govchain_crypto::Digest;
use govchain_exec::{EMPTY_ROOT, ProofError, StateError, StateProof, StateRead as _, prove};
use govchain_ledger::{Ledger, ReadError};
use govchain_pbft::ValidatorSet;
use govchain_proto::types::v1::{self as types, CommittedBlock};
use prost::Message as _;

use crate::certified_header::{CertifiedHeaderError, certify_header};
use crate::chain_state::HeadState;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProveError {
    #[error(transparent)]
    Ledger(#[from] ReadError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("the head block at height {height} is missing or does not decode: {reason}")]
    HeadBlock { height: u64, reason: String },
}

/// The value of `key` at the head, with its proof and the head block's
/// header and certificate. At height 0 the header is empty and there is no
/// certificate: the proof is against the empty genesis state.
pub(crate) fn read_with_proof(
    ledger: &Ledger,
    key: &[u8],
) -> Result<(Option<Vec<u8>>, types::StateProof), ProveError> {
    let view = ledger.head_view()?;
    let height = view.head().height;
    let (header, certificate) = match view.head_block()? {
        None if height == 0 => (Vec::new(), None),
        None => {
            return Err(ProveError::HeadBlock {
                height,
                reason: "missing".into(),
            });
        }
        Some(bytes) => {
            let committed =
                CommittedBlock::decode(bytes.as_slice()).map_err(|err| ProveError::HeadBlock {
                    height,
                    reason: err.to_string(),
                })?;
            let header = committed
                .block
                .map(|block| block.header)
                .unwrap_or_default();
            (header, committed.certificate)
        }
    };
    let state = HeadState(view);
    let change_heights = govchain_exec::governance::change_heights(&state)?;
    let validator_set_changes =
        crate::certified_header::set_changes_before(ledger, &change_heights, height).map_err(
            |err| ProveError::HeadBlock {
                height,
                reason: format!("a validator set change: {err:#}"),
            },
        )?;
    let value = state.get(key)?;
    let proof = prove(&state, key)?;
    let (leaf_key_hash, leaf_value_hash) = proof
        .leaf()
        .map_or((Vec::new(), Vec::new()), |(k, v)| (k.to_vec(), v.to_vec()));
    Ok((
        value,
        types::StateProof {
            header,
            certificate,
            siblings: proof.siblings().iter().map(Digest::to_vec).collect(),
            leaf_key_hash,
            leaf_value_hash,
            validator_set_changes,
        },
    ))
}

/// What a verified proof was checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvenHead {
    /// 0 for the genesis state.
    pub height: u64,
    /// The block hash, or `None` for the genesis state.
    pub block_hash: Option<Digest>,
    pub state_root: Digest,
    pub timestamp_ms: u64,
    /// Distinct validators whose commit signatures were checked.
    pub signers: usize,
    pub quorum: u32,
    /// Sibling hashes on the key's path.
    pub proof_depth: usize,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateProofError {
    #[error(transparent)]
    Header(#[from] CertifiedHeaderError),
    #[error("the proof's {what} is {got} bytes, expected 32")]
    DigestLength { what: &'static str, got: usize },
    #[error("the state proof does not verify against the certified state root: {0}")]
    Proof(#[from] ProofError),
}

/// Checks offline that `key` holds `value` (`None`: nothing) in the state
/// committed by the proof's block: the header's hash is certified by a
/// quorum of the validators of genesis (`chain_id`, `validators`), and the
/// state tree path leads from the key's leaf to the header's state root.
/// A proof with no header is against the genesis state (the empty tree).
pub fn verify_state_proof(
    chain_id: &str,
    validators: &ValidatorSet,
    key: &[u8],
    value: Option<&[u8]>,
    proof: &types::StateProof,
) -> Result<ProvenHead, StateProofError> {
    let mut head = certified_head(chain_id, validators, proof)?;
    let siblings = proof
        .siblings
        .iter()
        .map(|sibling| digest("sibling hash", sibling))
        .collect::<Result<Vec<_>, _>>()?;
    let leaf = if proof.leaf_key_hash.is_empty() && proof.leaf_value_hash.is_empty() {
        None
    } else {
        Some((
            digest("leaf key hash", &proof.leaf_key_hash)?,
            digest("leaf value hash", &proof.leaf_value_hash)?,
        ))
    };
    head.proof_depth = siblings.len();
    StateProof::new(siblings, leaf).verify(&head.state_root, key, value)?;
    Ok(head)
}

/// The header of the proof, checked against its certificate and genesis;
/// no header and no certificate is the genesis state.
fn certified_head(
    chain_id: &str,
    validators: &ValidatorSet,
    proof: &types::StateProof,
) -> Result<ProvenHead, StateProofError> {
    if proof.header.is_empty() && proof.certificate.is_none() {
        return Ok(ProvenHead {
            height: 0,
            block_hash: None,
            state_root: EMPTY_ROOT,
            timestamp_ms: 0,
            signers: 0,
            quorum: validators.quorum(),
            proof_depth: 0,
        });
    }
    let certified = certify_header(
        chain_id,
        validators,
        &proof.validator_set_changes,
        &proof.header,
        proof.certificate.as_ref(),
    )?;
    Ok(ProvenHead {
        height: certified.header.height,
        block_hash: Some(certified.hash),
        state_root: digest("header state root", &certified.header.state_root)?,
        timestamp_ms: certified.header.timestamp_ms,
        signers: certified.signers,
        quorum: certified.quorum,
        proof_depth: 0,
    })
}

fn digest(what: &'static str, bytes: &[u8]) -> Result<Digest, StateProofError> {
    Digest::from_slice(bytes).map_err(|_| StateProofError::DigestLength {
        what,
        got: bytes.len(),
    })
}
