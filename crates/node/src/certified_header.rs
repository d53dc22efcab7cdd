//! A block header checked against its commit certificate and genesis: what
//! every proof a client checks offline (state proofs, inclusion proofs)
//! rests on.

use govchain_crypto::Digest;
use govchain_exec::block_hash;
use govchain_pbft::{CertificateError, ValidatorSet, verify_commit_certificate};
use govchain_proto::types::v1::{self as types, BlockHeader};
use prost::Message as _;

use crate::wire::certificate_from_wire;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertifiedHeaderError {
    #[error("the proof's header does not decode: {0}")]
    Header(String),
    #[error("the proof's header is for chain {got:?}, genesis is for {expected:?}")]
    ChainId { expected: String, got: String },
    #[error("the proof has a header but no commit certificate")]
    NoCertificate,
    #[error("the proof's commit certificate is malformed: {0}")]
    CertificateMalformed(String),
    #[error("the header at height {height} is not certified: {error}")]
    Certificate {
        height: u64,
        error: CertificateError,
    },
    #[error("the validator set change in block {height} does not check: {reason}")]
    SetChange { height: u64, reason: String },
}

/// A header whose hash a quorum of genesis's validators signed.
#[derive(Debug)]
pub(crate) struct CertifiedHeader {
    pub header: BlockHeader,
    pub hash: Digest,
    /// Distinct validators whose commit signatures were checked.
    pub signers: usize,
    /// The quorum of the set that certified it.
    pub quorum: u32,
}

/// Decodes `header` (the encoded bytes, exactly as hashed) and checks that
/// `certificate` is a quorum's commit for its hash on genesis's chain, by
/// the set in force at its height: genesis's `validators`, followed through
/// `changes` (the blocks that changed the set before it, oldest first).
pub(crate) fn certify_header(
    chain_id: &str,
    validators: &ValidatorSet,
    changes: &[types::ValidatorSetChange],
    header: &[u8],
    certificate: Option<&types::CommitCertificate>,
) -> Result<CertifiedHeader, CertifiedHeaderError> {
    let decoded =
        BlockHeader::decode(header).map_err(|err| CertifiedHeaderError::Header(err.to_string()))?;
    let validators = set_at(chain_id, validators, changes, decoded.height)?;
    certify_with(chain_id, &validators, header, certificate)
}

/// The set that certifies `height`: genesis's, then each change's
/// announced set from the block after it. Each change block is checked
/// against the set before it; they must be in order and below `height`.
fn set_at(
    chain_id: &str,
    genesis: &ValidatorSet,
    changes: &[types::ValidatorSetChange],
    height: u64,
) -> Result<ValidatorSet, CertifiedHeaderError> {
    let mut set = genesis.clone();
    let mut last = 0;
    for change in changes {
        let certified = certify_with(chain_id, &set, &change.header, change.certificate.as_ref())?;
        let at = certified.header.height;
        let refuse = |reason: String| CertifiedHeaderError::SetChange { height: at, reason };
        if at <= last || at >= height {
            return Err(refuse(format!(
                "changes must be in height order and before the proven block {height}"
            )));
        }
        set = match govchain_exec::governance::announced_set(&certified.header.next_validators) {
            None => return Err(refuse("its header announces no validator set".into())),
            Some(Err(err)) => return Err(refuse(err)),
            Some(Ok(next)) => next,
        };
        last = at;
    }
    Ok(set)
}

/// [`certify_header`] against one known set.
fn certify_with(
    chain_id: &str,
    validators: &ValidatorSet,
    header: &[u8],
    certificate: Option<&types::CommitCertificate>,
) -> Result<CertifiedHeader, CertifiedHeaderError> {
    let decoded =
        BlockHeader::decode(header).map_err(|err| CertifiedHeaderError::Header(err.to_string()))?;
    if decoded.chain_id != chain_id {
        return Err(CertifiedHeaderError::ChainId {
            expected: chain_id.into(),
            got: decoded.chain_id,
        });
    }
    let certificate = certificate.ok_or(CertifiedHeaderError::NoCertificate)?;
    let certificate =
        certificate_from_wire(certificate).map_err(CertifiedHeaderError::CertificateMalformed)?;
    let hash = block_hash(header);
    verify_commit_certificate(chain_id, validators, decoded.height, &hash, &certificate).map_err(
        |error| CertifiedHeaderError::Certificate {
            height: decoded.height,
            error,
        },
    )?;
    Ok(CertifiedHeader {
        header: decoded,
        hash,
        signers: certificate.signatures.len(),
        quorum: validators.quorum(),
    })
}

/// The set changes a proof of block `height` carries: the blocks at
/// `change_heights` below it, read from `ledger`.
pub(crate) fn set_changes_before(
    ledger: &govchain_ledger::Ledger,
    change_heights: &[u64],
    height: u64,
) -> anyhow::Result<Vec<types::ValidatorSetChange>> {
    change_heights
        .iter()
        .filter(|at| **at < height)
        .map(|at| {
            // Only the header and certificate: a pruned block has them.
            let stored = ledger
                .block_or_header(*at)?
                .ok_or_else(|| anyhow::anyhow!("block {at} is missing"))?;
            let committed = types::CommittedBlock::decode(stored.encoded.as_slice())?;
            Ok(types::ValidatorSetChange {
                header: committed.block.map(|b| b.header).unwrap_or_default(),
                certificate: committed.certificate,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use govchain_crypto::SigningKey;
    use govchain_pbft::commit_signing_bytes;
    use govchain_proto::types::v1::{CommitSignature, ValidatorKey};

    use super::*;

    const CHAIN: &str = "set-changes";

    fn key(i: u8) -> SigningKey {
        SigningKey::from_seed([0x30 + i; 32])
    }

    /// A header at `height` announcing `next` (indexes), certified by
    /// `signers`.
    fn block(height: u64, next: &[u32], signers: &[u32]) -> (Vec<u8>, types::CommitCertificate) {
        let header = BlockHeader {
            chain_id: CHAIN.into(),
            height,
            next_validators: next
                .iter()
                .map(|i| ValidatorKey {
                    index: *i,
                    consensus_key: key(u8::try_from(*i).expect("small"))
                        .public_key()
                        .as_bytes()
                        .to_vec(),
                })
                .collect(),
            ..Default::default()
        }
        .encode_to_vec();
        let hash = block_hash(&header);
        let message = commit_signing_bytes(CHAIN, 0, height, &hash);
        let certificate = types::CommitCertificate {
            height,
            view: 0,
            block_hash: hash.to_vec(),
            signatures: signers
                .iter()
                .map(|i| CommitSignature {
                    validator_index: *i,
                    signature: key(u8::try_from(*i).expect("small"))
                        .sign(&message)
                        .to_vec(),
                })
                .collect(),
        };
        (header, certificate)
    }

    fn change(height: u64, next: &[u32], signers: &[u32]) -> types::ValidatorSetChange {
        let (header, certificate) = block(height, next, signers);
        types::ValidatorSetChange {
            header,
            certificate: Some(certificate),
        }
    }

    #[test]
    fn a_header_is_certified_by_the_set_in_force_at_its_height() {
        let genesis =
            ValidatorSet::new((0..4).map(|i| key(i).public_key()).collect()).expect("four");
        // Block 5 (signed by 0, 1, 2) adds 4; block 8 (signed by 0, 1, 2, 4 of
        // five) removes 3; block 9 is signed by 0, 2, 4 of {0, 1, 2, 4}.
        let changes = vec![
            change(5, &[0, 1, 2, 3, 4], &[0, 1, 2]),
            change(8, &[0, 1, 2, 4], &[0, 1, 2, 4]),
        ];
        let (header, certificate) = block(9, &[], &[0, 2, 4]);
        let certified = certify_header(CHAIN, &genesis, &changes, &header, Some(&certificate))
            .expect("certified by the set in force");
        assert_eq!(certified.header.height, 9);
        assert_eq!(certified.quorum, 3);
        // Without the changes, validator 4 is unknown to genesis's set.
        let err = certify_header(CHAIN, &genesis, &[], &header, Some(&certificate))
            .expect_err("genesis's set does not certify it");
        assert!(err.to_string().contains("not certified"), "{err}");
        // Out of order, or not below the header.
        let reversed: Vec<_> = changes.iter().rev().cloned().collect();
        assert!(certify_header(CHAIN, &genesis, &reversed, &header, Some(&certificate)).is_err());
        let late = vec![changes[0].clone(), change(9, &[0, 1, 2, 4], &[0, 1, 2, 4])];
        let err = certify_header(CHAIN, &genesis, &late, &header, Some(&certificate))
            .expect_err("a change at the proven height");
        assert!(
            matches!(err, CertifiedHeaderError::SetChange { height: 9, .. }),
            "{err}"
        );
        // A change block that announces nothing, or is signed by too few.
        let silent = vec![change(5, &[], &[0, 1, 2])];
        let err = certify_header(CHAIN, &genesis, &silent, &header, Some(&certificate))
            .expect_err("no set announced");
        assert!(
            err.to_string().contains("announces no validator set"),
            "{err}"
        );
        let weak = vec![change(5, &[0, 1, 2, 3, 4], &[0, 1]), changes[1].clone()];
        assert!(certify_header(CHAIN, &genesis, &weak, &header, Some(&certificate)).is_err());
        // A made-up change signed by validators outside the set in force.
        let forged = vec![change(5, &[4, 5, 6, 7], &[4, 5, 6])];
        assert!(certify_header(CHAIN, &genesis, &forged, &header, Some(&certificate)).is_err());
    }
}
