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
}

/// A header whose hash a quorum of genesis's validators signed.
#[derive(Debug)]
pub(crate) struct CertifiedHeader {
    pub header: BlockHeader,
    pub hash: Digest,
    /// Distinct validators whose commit signatures were checked.
    pub signers: usize,
}

/// Decodes `header` (the encoded bytes, exactly as hashed) and checks that
/// `certificate` is a quorum's commit for its hash on genesis's chain.
pub(crate) fn certify_header(
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
    })
}
