//! Consensus messages and the exact bytes each one's signature covers.
//!
//! Signing bytes are built from fixed-width fields behind a domain tag per
//! message kind and the chain id, so a signature is valid for one purpose on
//! one chain only. They do not depend on any wire encoding.

use std::collections::BTreeSet;

use bytes::Bytes;
use govchain_crypto::{Digest, DomainHasher, PublicKey, Signature, SigningKey};

use crate::{ReplicaIndex, SequenceNumber, ValidatorSet, View};

const DOMAIN_PRE_PREPARE: &str = "govchain/pbft/pre-prepare/v1";
const DOMAIN_PREPARE: &str = "govchain/pbft/prepare/v1";
const DOMAIN_COMMIT: &str = "govchain/pbft/commit/v1";
const DOMAIN_CHECKPOINT: &str = "govchain/pbft/checkpoint/v1";
const DOMAIN_VIEW_CHANGE: &str = "govchain/pbft/view-change/v1";
const DOMAIN_NEW_VIEW: &str = "govchain/pbft/new-view/v1";

/// What a consensus message says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// The primary of `view` proposes `block` (hash `digest`) for `seq`.
    PrePrepare {
        view: View,
        seq: SequenceNumber,
        digest: Digest,
        block: Bytes,
    },
    Prepare {
        view: View,
        seq: SequenceNumber,
        digest: Digest,
    },
    /// A commit's signature is also its share of the commit certificate.
    Commit {
        view: View,
        seq: SequenceNumber,
        digest: Digest,
    },
    Checkpoint {
        seq: SequenceNumber,
        digest: Digest,
    },
    ViewChange(ViewChange),
    NewView(NewView),
}

/// A pre-prepare and 2f matching prepares (PBFT's prepared certificate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedCertificate {
    pub pre_prepare: SignedMessage,
    pub prepares: Vec<SignedMessage>,
}

/// A replica's report when it moves to `new_view`: the last block it
/// delivered, with its commit certificate, and the prepared certificate it
/// holds for the next sequence number, if any. One block is in flight at a
/// time, so nothing else can be prepared (see ARCHITECTURE.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewChange {
    pub new_view: View,
    pub committed_seq: SequenceNumber,
    /// `None` only when `committed_seq` is 0 (genesis).
    pub committed: Option<CommitCertificate>,
    /// For `committed_seq + 1`, from the highest view it prepared in.
    pub prepared: Option<Box<PreparedCertificate>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewView {
    pub view: View,
    pub view_changes: Vec<SignedMessage>,
    pub pre_prepares: Vec<SignedMessage>,
}

/// A message with its sender and the sender's signature over
/// [`SignedMessage::signing_bytes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedMessage {
    pub sender: ReplicaIndex,
    pub signature: Signature,
    pub body: Body,
}

impl SignedMessage {
    pub fn sign(chain_id: &str, sender: ReplicaIndex, key: &SigningKey, body: Body) -> Self {
        let signature = key.sign(&signing_bytes(chain_id, &body));
        Self {
            sender,
            signature,
            body,
        }
    }

    /// Checks the signature against the sender's key in `validators`.
    pub fn verify(&self, chain_id: &str, validators: &ValidatorSet) -> bool {
        validators.key(self.sender).is_some_and(|key| {
            key.verify(&signing_bytes(chain_id, &self.body), &self.signature)
                .is_ok()
        })
    }

    /// A digest of the whole signed message, for nesting in view changes.
    pub fn message_digest(&self, chain_id: &str) -> Digest {
        let mut hasher = DomainHasher::new("govchain/pbft/signed/v1");
        hasher.bytes(&signing_bytes(chain_id, &self.body));
        // A pre-prepare's signature does not cover the block bytes (they
        // are bound by the digest), but a nested copy must not be swapped.
        if let Body::PrePrepare { block, .. } = &self.body {
            hasher.digest(&Digest::sha256(block));
        }
        hasher
            .u32(self.sender)
            .bytes(&self.signature.to_bytes())
            .finish()
    }
}

/// The bytes a sender signs for `body`.
pub fn signing_bytes(chain_id: &str, body: &Body) -> Vec<u8> {
    match body {
        Body::PrePrepare {
            view, seq, digest, ..
        } => fixed(DOMAIN_PRE_PREPARE, chain_id, *view, *seq, digest),
        Body::Prepare { view, seq, digest } => fixed(DOMAIN_PREPARE, chain_id, *view, *seq, digest),
        Body::Commit { view, seq, digest } => commit_signing_bytes(chain_id, *view, *seq, digest),
        Body::Checkpoint { seq, digest } => fixed(DOMAIN_CHECKPOINT, chain_id, 0, *seq, digest),
        Body::ViewChange(change) => {
            let mut hasher = DomainHasher::new(DOMAIN_VIEW_CHANGE);
            hasher
                .bytes(chain_id.as_bytes())
                .u64(change.new_view)
                .u64(change.committed_seq);
            match &change.committed {
                None => hasher.u32(0),
                Some(certificate) => {
                    hasher
                        .u32(1)
                        .u64(certificate.view)
                        .u64(certificate.seq)
                        .digest(&certificate.digest);
                    hasher.u32(len_u32(certificate.signatures.len()));
                    for (index, signature) in &certificate.signatures {
                        hasher.u32(*index).bytes(&signature.to_bytes());
                    }
                    &mut hasher
                }
            };
            match &change.prepared {
                None => hasher.u32(0),
                Some(certificate) => {
                    hasher
                        .u32(1)
                        .digest(&certificate.pre_prepare.message_digest(chain_id));
                    hasher.u32(len_u32(certificate.prepares.len()));
                    for prepare in &certificate.prepares {
                        hasher.digest(&prepare.message_digest(chain_id));
                    }
                    &mut hasher
                }
            };
            hasher.finish().to_vec()
        }
        Body::NewView(new_view) => {
            let mut hasher = DomainHasher::new(DOMAIN_NEW_VIEW);
            hasher.bytes(chain_id.as_bytes()).u64(new_view.view);
            for list in [&new_view.view_changes, &new_view.pre_prepares] {
                hasher.u32(len_u32(list.len()));
                for message in list {
                    hasher.digest(&message.message_digest(chain_id));
                }
            }
            hasher.finish().to_vec()
        }
    }
}

/// The bytes a validator signs to commit block `digest` at height `seq` in
/// `view`; also what a [`CommitCertificate`]'s signatures cover.
pub fn commit_signing_bytes(
    chain_id: &str,
    view: View,
    seq: SequenceNumber,
    digest: &Digest,
) -> Vec<u8> {
    fixed(DOMAIN_COMMIT, chain_id, view, seq, digest)
}

fn fixed(
    domain: &str,
    chain_id: &str,
    view: View,
    seq: SequenceNumber,
    digest: &Digest,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(domain.len() + chain_id.len() + 56);
    for part in [domain.as_bytes(), chain_id.as_bytes()] {
        out.extend_from_slice(&len_u32(part.len()).to_be_bytes());
        out.extend_from_slice(part);
    }
    out.extend_from_slice(&view.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(digest.as_bytes());
    out
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).expect("signed lists and strings are far below 4 Gi entries")
}

/// Proof that a block was committed: a quorum of commit signatures from
/// distinct validators, all for one `(view, seq, digest)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitCertificate {
    pub seq: SequenceNumber,
    pub view: View,
    pub digest: Digest,
    /// Sorted by validator index, no index twice.
    pub signatures: Vec<(ReplicaIndex, Signature)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertificateError {
    #[error("certificate has {got} signatures, a quorum is {quorum}")]
    TooFewSignatures { got: usize, quorum: u32 },
    #[error("validator {index} signs the certificate twice")]
    DuplicateSigner { index: ReplicaIndex },
    #[error("validator {index} is not in the validator set of {n}")]
    UnknownSigner { index: ReplicaIndex, n: u32 },
    #[error("signature of validator {index} does not verify")]
    BadSignature { index: ReplicaIndex },
    #[error("certificate is for block {got} but the block hash is {expected}")]
    WrongDigest { expected: Digest, got: Digest },
    #[error("certificate is for height {got} but the block is at height {expected}")]
    WrongHeight {
        expected: SequenceNumber,
        got: SequenceNumber,
    },
}

/// Checks that `certificate` commits block `digest` at height `seq`.
pub fn verify_commit_certificate(
    chain_id: &str,
    validators: &ValidatorSet,
    seq: SequenceNumber,
    digest: &Digest,
    certificate: &CommitCertificate,
) -> Result<(), CertificateError> {
    if certificate.seq != seq {
        return Err(CertificateError::WrongHeight {
            expected: seq,
            got: certificate.seq,
        });
    }
    if certificate.digest != *digest {
        return Err(CertificateError::WrongDigest {
            expected: *digest,
            got: certificate.digest,
        });
    }
    let mut signers = BTreeSet::new();
    let message = commit_signing_bytes(chain_id, certificate.view, seq, digest);
    for (index, signature) in &certificate.signatures {
        if !signers.insert(*index) {
            return Err(CertificateError::DuplicateSigner { index: *index });
        }
        let key = validators
            .key(*index)
            .ok_or(CertificateError::UnknownSigner {
                index: *index,
                n: validators.len(),
            })?;
        key.verify(&message, signature)
            .map_err(|_| CertificateError::BadSignature { index: *index })?;
    }
    if signers.len() < validators.quorum() as usize {
        return Err(CertificateError::TooFewSignatures {
            got: signers.len(),
            quorum: validators.quorum(),
        });
    }
    Ok(())
}

/// One commit certificate for [`verify_commit_certificates`]: the arguments
/// of [`verify_commit_certificate`].
#[derive(Clone, Copy, Debug)]
pub struct CertificateCheck<'a> {
    pub validators: &'a ValidatorSet,
    pub seq: SequenceNumber,
    pub digest: &'a Digest,
    pub certificate: &'a CommitCertificate,
}

/// Verifies many commit certificates with one batch of signatures (about
/// three times as fast per signature as one by one), with the verdicts of
/// [`verify_commit_certificate`] on each in turn: on any failure it checks
/// them one by one and returns the position and error of the first that
/// fails. For a chain of headers checked before any is used (state sync).
pub fn verify_commit_certificates(
    chain_id: &str,
    checks: &[CertificateCheck<'_>],
) -> Result<(), (usize, CertificateError)> {
    let one_by_one = || {
        checks.iter().enumerate().try_for_each(|(position, check)| {
            verify_commit_certificate(
                chain_id,
                check.validators,
                check.seq,
                check.digest,
                check.certificate,
            )
            .map_err(|error| (position, error))
        })
    };
    let mut messages = Vec::with_capacity(checks.len());
    let mut signed = Vec::new();
    for check in checks {
        let certificate = check.certificate;
        let distinct = certificate
            .signatures
            .windows(2)
            .all(|pair| pair[0].0 < pair[1].0);
        if certificate.seq != check.seq
            || certificate.digest != *check.digest
            || !distinct
            || certificate.signatures.len() < check.validators.quorum() as usize
        {
            return one_by_one();
        }
        messages.push(commit_signing_bytes(
            chain_id,
            certificate.view,
            check.seq,
            check.digest,
        ));
        for (index, signature) in &certificate.signatures {
            let Some(key) = check.validators.key(*index) else {
                return one_by_one();
            };
            signed.push((messages.len() - 1, *signature, *key));
        }
    }
    let message_refs: Vec<&[u8]> = signed
        .iter()
        .map(|(message, ..)| messages[*message].as_slice())
        .collect();
    let signatures: Vec<Signature> = signed.iter().map(|(_, signature, _)| *signature).collect();
    let keys: Vec<PublicKey> = signed.iter().map(|(.., key)| *key).collect();
    if signed.is_empty() || govchain_crypto::verify_batch(&message_refs, &signatures, &keys).is_ok()
    {
        return Ok(());
    }
    one_by_one()
}

/// What a block received by state transfer claims, as the receiver read it
/// from the block's own bytes: never the sender's word for its digest.
#[derive(Clone, Copy, Debug)]
pub struct Transferred<'a> {
    /// The digest computed from the block's bytes.
    pub digest: Digest,
    /// The parent the block names.
    pub parent: Digest,
    pub certificate: &'a CommitCertificate,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransferError {
    #[error("block {seq} names parent {got}, but this node's block {below} is {expected}", below = seq.saturating_sub(1))]
    Unlinked {
        seq: SequenceNumber,
        expected: Digest,
        got: Digest,
    },
    #[error("block {seq}: {error}")]
    Certificate {
        seq: SequenceNumber,
        error: CertificateError,
    },
}

/// The rule a replica applies to a block fetched from a peer for height
/// `seq` on top of its head `head`: the block links to the head and its
/// commit certificate is a quorum's for the digest of its own bytes. The
/// node's sync task (after checking the transactions) and the simulator's
/// state transfer both use it.
pub fn check_transferred(
    chain_id: &str,
    validators: &ValidatorSet,
    seq: SequenceNumber,
    head: &Digest,
    block: Transferred<'_>,
) -> Result<(), TransferError> {
    if block.parent != *head {
        return Err(TransferError::Unlinked {
            seq,
            expected: *head,
            got: block.parent,
        });
    }
    verify_commit_certificate(chain_id, validators, seq, &block.digest, block.certificate)
        .map_err(|error| TransferError::Certificate { seq, error })
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PreparedCertificateError {
    #[error("the first message is not a pre-prepare")]
    NotPrePrepare,
    #[error("pre-prepare is signed by {sender}, the primary of view {view} is {primary}")]
    NotPrimary {
        sender: ReplicaIndex,
        view: View,
        primary: ReplicaIndex,
    },
    #[error("message of validator {index} does not verify")]
    BadSignature { index: ReplicaIndex },
    #[error("prepare does not match the pre-prepare's view, sequence number and digest")]
    Mismatch,
    #[error("validator {index} prepares twice, or is the primary")]
    BadPreparer { index: ReplicaIndex },
    #[error("{got} prepares, a prepared certificate needs {needed}")]
    TooFewPrepares { got: usize, needed: usize },
    #[error("block bytes do not match digest {digest}")]
    BlockMismatch { digest: Digest },
}

impl PreparedCertificate {
    /// (view, seq, digest, block) of the pre-prepare.
    pub fn proposal(&self) -> Option<(View, SequenceNumber, Digest, &Bytes)> {
        match &self.pre_prepare.body {
            Body::PrePrepare {
                view,
                seq,
                digest,
                block,
            } => Some((*view, *seq, *digest, block)),
            _ => None,
        }
    }

    /// Checks the certificate: a pre-prepare signed by its view's primary,
    /// block bytes that match the digest, and quorum - 1 matching prepares
    /// from distinct backups, every signature valid.
    pub fn verify(
        &self,
        chain_id: &str,
        validators: &ValidatorSet,
        block_digest: fn(&[u8]) -> Option<Digest>,
    ) -> Result<(), PreparedCertificateError> {
        let (view, seq, digest, block) = self
            .proposal()
            .ok_or(PreparedCertificateError::NotPrePrepare)?;
        let primary = validators.primary(view);
        if self.pre_prepare.sender != primary {
            return Err(PreparedCertificateError::NotPrimary {
                sender: self.pre_prepare.sender,
                view,
                primary,
            });
        }
        if !self.pre_prepare.verify(chain_id, validators) {
            return Err(PreparedCertificateError::BadSignature { index: primary });
        }
        if block_digest(block) != Some(digest) {
            return Err(PreparedCertificateError::BlockMismatch { digest });
        }
        let mut preparers = BTreeSet::new();
        for prepare in &self.prepares {
            if prepare.body != (Body::Prepare { view, seq, digest }) {
                return Err(PreparedCertificateError::Mismatch);
            }
            if prepare.sender == primary || !preparers.insert(prepare.sender) {
                return Err(PreparedCertificateError::BadPreparer {
                    index: prepare.sender,
                });
            }
            if !prepare.verify(chain_id, validators) {
                return Err(PreparedCertificateError::BadSignature {
                    index: prepare.sender,
                });
            }
        }
        let needed = validators.quorum() as usize - 1;
        if preparers.len() < needed {
            return Err(PreparedCertificateError::TooFewPrepares {
                got: preparers.len(),
                needed,
            });
        }
        Ok(())
    }
}
