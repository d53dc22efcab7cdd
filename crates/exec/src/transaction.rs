use bytes::Bytes;
use govchain_crypto::{Digest, DomainHasher, KeyError, PublicKey, Signature};
use govchain_proto::types::v1::{Transaction, TransactionEnvelope, transaction::Body};

use crate::{approval, directory, governance, identity};
use prost::Message as _;

const DOMAIN_TRANSACTION: &str = "govchain/tx/v1";
/// Longest dataset, record id or schema name.
const NAME_BYTES_MAX: usize = 256;
/// An envelope is its payload plus at most this much: keys, signature,
/// chain id, nonce and protobuf framing.
pub const TRANSACTION_ENVELOPE_OVERHEAD_BYTES_MAX: usize = 512;

/// Why a transaction is refused. The node maps each variant to one gRPC
/// status code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransactionError {
    #[error("malformed transaction: {0}")]
    Malformed(String),
    #[error("payload is {got} bytes, the limit is {max} bytes")]
    TooLarge { got: usize, max: usize },
    #[error("transaction is for chain {got:?} but this is chain {expected:?}")]
    WrongChain { expected: String, got: String },
    #[error("signature does not verify for signer {signer}")]
    BadSignature { signer: String },
    #[error("nonce {got} is already used: the signer's last committed nonce is {committed}")]
    StaleNonce {
        signer: String,
        got: u64,
        committed: u64,
    },
    #[error(
        "nonce {got} is too far ahead: the signer's last committed nonce is {committed}, at most {max_ahead} ahead may wait"
    )]
    NonceTooFarAhead {
        signer: String,
        got: u64,
        committed: u64,
        max_ahead: u64,
    },
    #[error("transaction {id} is already {state}")]
    Duplicate { id: Digest, state: &'static str },
    #[error("signer {signer} already has a different transaction with nonce {nonce} pending")]
    NonceTaken { signer: String, nonce: u64 },
}

/// A transaction whose envelope, body and signature have been checked.
#[derive(Clone, Debug)]
pub struct VerifiedTransaction {
    pub id: Digest,
    pub signer: PublicKey,
    /// The envelope's signature, parsed (verified unless `check_envelope`
    /// was told it already was).
    pub signature: Signature,
    pub nonce: u64,
    pub body: Body,
    pub envelope: TransactionEnvelope,
    /// Size of the encoded envelope, for block and mempool limits.
    pub encoded_len: usize,
}

/// Every transaction kind, by its body's field name in `Transaction`, as
/// clients name them (event filters, the CLI).
pub const TRANSACTION_KINDS: [&str; 17] = [
    "anchor_record",
    "create_identity",
    "declare_attribute",
    "attest_attribute",
    "revoke_attestation",
    "grant_consent",
    "revoke_consent",
    "record_access",
    "register_officer",
    "revoke_officer",
    "define_workflow",
    "open_case",
    "act_on_case",
    "amend_case",
    "publish_dataset_entry",
    "dataset_version",
    "request_dataset_access",
];

/// `body`'s kind: its field name in `Transaction` (one of
/// [`TRANSACTION_KINDS`]).
pub fn body_kind(body: &Body) -> &'static str {
    match body {
        Body::AnchorRecord(_) => "anchor_record",
        Body::CreateIdentity(_) => "create_identity",
        Body::DeclareAttribute(_) => "declare_attribute",
        Body::AttestAttribute(_) => "attest_attribute",
        Body::RevokeAttestation(_) => "revoke_attestation",
        Body::GrantConsent(_) => "grant_consent",
        Body::RevokeConsent(_) => "revoke_consent",
        Body::RecordAccess(_) => "record_access",
        Body::RegisterOfficer(_) => "register_officer",
        Body::RevokeOfficer(_) => "revoke_officer",
        Body::DefineWorkflow(_) => "define_workflow",
        Body::OpenCase(_) => "open_case",
        Body::ActOnCase(_) => "act_on_case",
        Body::AmendCase(_) => "amend_case",
        Body::PublishDatasetEntry(_) => "publish_dataset_entry",
        Body::DatasetVersion(_) => "dataset_version",
        Body::RequestDatasetAccess(_) => "request_dataset_access",
        Body::ProposeValidatorChange(_) => "propose_validator_change",
        Body::ApproveValidatorChange(_) => "approve_validator_change",
    }
}

/// The transaction id, which is also the digest the signer signs.
pub fn transaction_id(chain_id: &str, signer: &[u8], nonce: u64, payload: &[u8]) -> Digest {
    DomainHasher::new(DOMAIN_TRANSACTION)
        .bytes(chain_id.as_bytes())
        .bytes(signer)
        .u64(nonce)
        .bytes(payload)
        .finish()
}

/// Decodes an envelope from bytes a client sent.
pub fn decode_envelope(bytes: &[u8]) -> Result<TransactionEnvelope, TransactionError> {
    TransactionEnvelope::decode(bytes)
        .map_err(|err| TransactionError::Malformed(format!("envelope: {err}")))
}

/// Checks everything about a transaction that does not depend on state:
/// size, chain id, key and signature format, body, and the signature itself
/// (skipped when `already_verified` says this exact signature was checked).
/// Cheap checks come first, the signature last.
pub fn check_envelope(
    envelope: TransactionEnvelope,
    chain_id: &str,
    payload_bytes_max: usize,
    already_verified: impl Fn(&Digest, &[u8]) -> bool,
) -> Result<VerifiedTransaction, TransactionError> {
    check_envelope_with(
        envelope,
        chain_id,
        payload_bytes_max,
        already_verified,
        PublicKey::from_slice,
    )
}

/// [`check_envelope`], with the signer's key parsed by `parse_signer`,
/// which must give [`PublicKey::from_slice`]'s verdicts (e.g.
/// [`govchain_crypto::KeyCache::parse`]).
pub fn check_envelope_with(
    envelope: TransactionEnvelope,
    chain_id: &str,
    payload_bytes_max: usize,
    already_verified: impl Fn(&Digest, &[u8]) -> bool,
    parse_signer: impl FnOnce(&[u8]) -> Result<PublicKey, KeyError>,
) -> Result<VerifiedTransaction, TransactionError> {
    if envelope.payload.len() > payload_bytes_max {
        return Err(TransactionError::TooLarge {
            got: envelope.payload.len(),
            max: payload_bytes_max,
        });
    }
    if envelope.chain_id != chain_id {
        return Err(TransactionError::WrongChain {
            expected: chain_id.into(),
            got: envelope.chain_id,
        });
    }
    if envelope.nonce == 0 {
        return Err(TransactionError::Malformed(
            "nonce must be at least 1".into(),
        ));
    }
    let signer = parse_signer(&envelope.signer)
        .map_err(|err| TransactionError::Malformed(format!("signer: {err}")))?;
    let signature = Signature::from_slice(&envelope.signature)
        .map_err(|err| TransactionError::Malformed(format!("signature: {err}")))?;
    let body = decode_body(&envelope.payload)?;
    let id = transaction_id(
        chain_id,
        signer.as_bytes(),
        envelope.nonce,
        &envelope.payload,
    );
    if !already_verified(&id, &envelope.signature) {
        signer
            .verify(id.as_bytes(), &signature)
            .map_err(|_| TransactionError::BadSignature {
                signer: signer.to_hex(),
            })?;
    }
    let encoded_len = envelope.encoded_len();
    Ok(VerifiedTransaction {
        id,
        signer,
        signature,
        nonce: envelope.nonce,
        body,
        envelope,
        encoded_len,
    })
}

fn decode_body(payload: &Bytes) -> Result<Body, TransactionError> {
    let transaction = Transaction::decode(payload.clone())
        .map_err(|err| TransactionError::Malformed(format!("payload: {err}")))?;
    let body = transaction
        .body
        .ok_or_else(|| TransactionError::Malformed("payload has no transaction body".into()))?;
    validate_body(&body)?;
    Ok(body)
}

fn validate_body(body: &Body) -> Result<(), TransactionError> {
    match body {
        Body::AnchorRecord(anchor) => {
            for (field, value) in [
                ("dataset", &anchor.dataset),
                ("record_id", &anchor.record_id),
            ] {
                if value.is_empty() || value.len() > NAME_BYTES_MAX {
                    return Err(TransactionError::Malformed(format!(
                        "anchor_record.{field} must be 1 to {NAME_BYTES_MAX} bytes, got {}",
                        value.len()
                    )));
                }
            }
            if anchor.schema.len() > NAME_BYTES_MAX {
                return Err(TransactionError::Malformed(format!(
                    "anchor_record.schema is over {NAME_BYTES_MAX} bytes"
                )));
            }
            if anchor.record_hash.len() != Digest::LEN {
                return Err(TransactionError::Malformed(format!(
                    "anchor_record.record_hash must be a 32-byte SHA-256, got {} bytes",
                    anchor.record_hash.len()
                )));
            }
            Ok(())
        }
        Body::CreateIdentity(_) => Ok(()),
        Body::DeclareAttribute(declare) => {
            attribute_name("declare_attribute.name", &declare.name)?;
            cid_text("declare_attribute.cid", &declare.cid)?;
            fixed_len(
                "declare_attribute.commitment",
                &declare.commitment,
                Digest::LEN,
            )?;
            text("declare_attribute.holder", &declare.holder, true)
        }
        Body::AttestAttribute(attest) => {
            fixed_len("attest_attribute.citizen", &attest.citizen, PublicKey::LEN)?;
            attribute_name("attest_attribute.name", &attest.name)?;
            fixed_len(
                "attest_attribute.commitment",
                &attest.commitment,
                Digest::LEN,
            )
        }
        Body::RevokeAttestation(revoke) => {
            fixed_len(
                "revoke_attestation.citizen",
                &revoke.citizen,
                PublicKey::LEN,
            )?;
            attribute_name("revoke_attestation.name", &revoke.name)?;
            text("revoke_attestation.reason", &revoke.reason, false)
        }
        Body::GrantConsent(grant) => {
            text("grant_consent.department", &grant.department, true)?;
            text("grant_consent.purpose", &grant.purpose, true)?;
            text("grant_consent.jurisdiction", &grant.jurisdiction, false)?;
            if grant.attributes.is_empty() || grant.attributes.len() > identity::ATTRIBUTES_MAX {
                return Err(TransactionError::Malformed(format!(
                    "grant_consent.attributes must list 1 to {} names, got {}",
                    identity::ATTRIBUTES_MAX,
                    grant.attributes.len()
                )));
            }
            for name in &grant.attributes {
                attribute_name("grant_consent.attributes", name)?;
            }
            Ok(())
        }
        Body::RevokeConsent(revoke) => {
            fixed_len("revoke_consent.consent_id", &revoke.consent_id, Digest::LEN)
        }
        Body::RecordAccess(access) => {
            fixed_len("record_access.citizen", &access.citizen, PublicKey::LEN)?;
            attribute_name("record_access.attribute", &access.attribute)?;
            fixed_len("record_access.consent_id", &access.consent_id, Digest::LEN)?;
            text("record_access.purpose", &access.purpose, true)
        }
        Body::RegisterOfficer(body) => {
            approval::validate_register_officer(body).map_err(TransactionError::Malformed)
        }
        Body::RevokeOfficer(body) => {
            approval::validate_revoke_officer(body).map_err(TransactionError::Malformed)
        }
        Body::DefineWorkflow(body) => approval::validate_definition(body)
            .map(|_| ())
            .map_err(TransactionError::Malformed),
        Body::OpenCase(body) => {
            approval::validate_open_case(body).map_err(TransactionError::Malformed)
        }
        Body::ActOnCase(body) => {
            approval::validate_act_on_case(body).map_err(TransactionError::Malformed)
        }
        Body::AmendCase(body) => {
            approval::validate_amend_case(body).map_err(TransactionError::Malformed)
        }
        Body::PublishDatasetEntry(body) => {
            directory::validate_publish(body).map_err(TransactionError::Malformed)
        }
        Body::DatasetVersion(body) => {
            directory::validate_version(body).map_err(TransactionError::Malformed)
        }
        Body::RequestDatasetAccess(body) => {
            directory::validate_request(body).map_err(TransactionError::Malformed)
        }
        Body::ProposeValidatorChange(body) => {
            governance::validate_propose(body).map_err(TransactionError::Malformed)
        }
        Body::ApproveValidatorChange(body) => {
            governance::validate_approve(body).map_err(TransactionError::Malformed)
        }
    }
}

fn fixed_len(field: &str, bytes: &[u8], len: usize) -> Result<(), TransactionError> {
    if bytes.len() == len {
        return Ok(());
    }
    Err(TransactionError::Malformed(format!(
        "{field} must be {len} bytes, got {}",
        bytes.len()
    )))
}

fn attribute_name(field: &str, name: &str) -> Result<(), TransactionError> {
    if identity::valid_attribute_name(name) {
        return Ok(());
    }
    Err(TransactionError::Malformed(format!(
        "{field} {name:?} is not an attribute name: use 1 to {} lower-case letters, digits, '_' or '-'",
        identity::ATTRIBUTE_NAME_BYTES_MAX
    )))
}

fn text(field: &str, value: &str, required: bool) -> Result<(), TransactionError> {
    if required && value.is_empty() {
        return Err(TransactionError::Malformed(format!("{field} is empty")));
    }
    if value.len() > identity::TEXT_BYTES_MAX {
        return Err(TransactionError::Malformed(format!(
            "{field} is over {} bytes",
            identity::TEXT_BYTES_MAX
        )));
    }
    Ok(())
}

/// A CIDv1 in base32 text: 'b' and lower-case base32 letters. The holder
/// node checks that the blob itself is stored.
fn cid_text(field: &str, cid: &str) -> Result<(), TransactionError> {
    let valid = cid.len() > 8
        && cid.len() <= identity::CID_TEXT_BYTES_MAX
        && cid.starts_with('b')
        && cid
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b));
    if valid {
        return Ok(());
    }
    Err(TransactionError::Malformed(format!(
        "{field} {cid:?} is not a base32 CIDv1 (like \"bafkrei...\")"
    )))
}

#[cfg(test)]
pub(crate) mod tests {
    use govchain_crypto::SigningKey;
    use govchain_proto::types::v1::AnchorRecord;
    use proptest::prelude::*;

    use super::*;

    pub(crate) const CHAIN: &str = "test-chain";

    pub(crate) fn anchor(record_id: &str) -> Body {
        Body::AnchorRecord(AnchorRecord {
            dataset: "health/vaccinations".into(),
            record_id: record_id.into(),
            record_hash: Digest::sha256(record_id.as_bytes()).to_vec(),
            schema: "fhir-r4".into(),
            record_time_ms: 1,
        })
    }

    pub(crate) fn sign(key: &SigningKey, nonce: u64, body: Body) -> TransactionEnvelope {
        let payload = Bytes::from(Transaction { body: Some(body) }.encode_to_vec());
        let signer = key.public_key();
        let id = transaction_id(CHAIN, signer.as_bytes(), nonce, &payload);
        TransactionEnvelope {
            payload,
            signer: signer.as_bytes().to_vec(),
            signature: key.sign(id.as_bytes()).to_vec(),
            chain_id: CHAIN.into(),
            nonce,
        }
    }

    #[test]
    fn transaction_id_is_the_framing_documented_in_types_proto() {
        let signer = [7u8; 32];
        let payload = b"payload";
        let mut framed = Vec::new();
        for part in [&b"govchain/tx/v1"[..], b"chain-x", &signer] {
            framed.extend_from_slice(&(part.len() as u32).to_be_bytes());
            framed.extend_from_slice(part);
        }
        framed.extend_from_slice(&9u64.to_be_bytes());
        framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        framed.extend_from_slice(payload);
        assert_eq!(
            transaction_id("chain-x", &signer, 9, payload),
            Digest::sha256(&framed)
        );
    }

    fn check(envelope: TransactionEnvelope) -> Result<VerifiedTransaction, TransactionError> {
        check_envelope(envelope, CHAIN, 1024, |_, _| false)
    }

    #[test]
    fn a_signed_transaction_checks() {
        let key = SigningKey::from_seed([1; 32]);
        let verified = check(sign(&key, 1, anchor("r1"))).expect("valid");
        assert_eq!(verified.signer, key.public_key());
        assert_eq!(verified.nonce, 1);
    }

    #[test]
    fn tampered_payload_fails() {
        let key = SigningKey::from_seed([1; 32]);
        let mut envelope = sign(&key, 1, anchor("r1"));
        envelope.payload = Bytes::from(
            Transaction {
                body: Some(anchor("r2")),
            }
            .encode_to_vec(),
        );
        assert!(matches!(
            check(envelope),
            Err(TransactionError::BadSignature { .. })
        ));
    }

    #[test]
    fn tampered_nonce_or_chain_fails() {
        let key = SigningKey::from_seed([1; 32]);
        let mut envelope = sign(&key, 1, anchor("r1"));
        envelope.nonce = 2;
        assert!(matches!(
            check(envelope),
            Err(TransactionError::BadSignature { .. })
        ));
        let envelope = sign(&key, 1, anchor("r1"));
        assert!(matches!(
            check_envelope(envelope, "other", 1024, |_, _| false),
            Err(TransactionError::WrongChain { .. })
        ));
    }

    #[test]
    fn signature_by_another_key_fails() {
        let key = SigningKey::from_seed([1; 32]);
        let mut envelope = sign(&key, 1, anchor("r1"));
        envelope.signer = SigningKey::from_seed([2; 32])
            .public_key()
            .as_bytes()
            .to_vec();
        assert!(matches!(
            check(envelope),
            Err(TransactionError::BadSignature { .. })
        ));
    }

    #[test]
    fn oversized_payload_is_refused_before_anything_else() {
        let key = SigningKey::from_seed([1; 32]);
        let mut envelope = sign(&key, 1, anchor("r1"));
        envelope.payload = Bytes::from(vec![0u8; 2000]);
        assert_eq!(
            check(envelope).err(),
            Some(TransactionError::TooLarge {
                got: 2000,
                max: 1024
            })
        );
    }

    #[test]
    fn bad_record_hash_length_is_malformed() {
        let key = SigningKey::from_seed([1; 32]);
        let body = Body::AnchorRecord(AnchorRecord {
            dataset: "d".into(),
            record_id: "r".into(),
            record_hash: vec![1, 2],
            ..Default::default()
        });
        assert!(
            matches!(check(sign(&key, 1, body)), Err(TransactionError::Malformed(m)) if m.contains("record_hash"))
        );
    }

    #[test]
    fn verified_cache_skips_only_the_same_signature() {
        let key = SigningKey::from_seed([1; 32]);
        let envelope = sign(&key, 1, anchor("r1"));
        let good_signature = envelope.signature.clone();
        let mut forged = envelope.clone();
        forged.signature = vec![0; 64];
        let cache = |_: &Digest, signature: &[u8]| signature == good_signature.as_slice();
        assert!(check_envelope(envelope, CHAIN, 1024, cache).is_ok());
        assert!(matches!(
            check_envelope(forged, CHAIN, 1024, cache),
            Err(TransactionError::BadSignature { .. })
        ));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(envelope) = decode_envelope(&bytes) {
                let _ = check(envelope);
            }
        }

        #[test]
        fn garbage_payload_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let key = SigningKey::from_seed([1; 32]);
            let mut envelope = sign(&key, 1, anchor("r"));
            envelope.payload = Bytes::from(payload);
            prop_assert!(check(envelope).is_err());
        }
    }
}

#[cfg(test)]
mod kind_tests {
    use govchain_proto::types::v1::*;

    use super::*;

    #[test]
    fn every_kind_is_named_once_as_its_field() {
        let bodies = [
            Body::AnchorRecord(AnchorRecord::default()),
            Body::CreateIdentity(CreateIdentity::default()),
            Body::DeclareAttribute(DeclareAttribute::default()),
            Body::AttestAttribute(AttestAttribute::default()),
            Body::RevokeAttestation(RevokeAttestation::default()),
            Body::GrantConsent(GrantConsent::default()),
            Body::RevokeConsent(RevokeConsent::default()),
            Body::RecordAccess(RecordAccess::default()),
            Body::RegisterOfficer(RegisterOfficer::default()),
            Body::RevokeOfficer(RevokeOfficer::default()),
            Body::DefineWorkflow(DefineWorkflow::default()),
            Body::OpenCase(OpenCase::default()),
            Body::ActOnCase(ActOnCase::default()),
            Body::AmendCase(AmendCase::default()),
            Body::PublishDatasetEntry(Default::default()),
            Body::DatasetVersion(Default::default()),
            Body::RequestDatasetAccess(Default::default()),
        ];
        let kinds: Vec<&str> = bodies.iter().map(body_kind).collect();
        assert_eq!(kinds, TRANSACTION_KINDS);
        // The names are the oneof's fields: the body encodes under them.
        for (body, kind) in bodies.into_iter().zip(kinds) {
            let json_like = format!("{:?}", Transaction { body: Some(body) });
            let variant: String = kind
                .split('_')
                .map(|part| {
                    let mut chars = part.chars();
                    chars
                        .next()
                        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                        .unwrap_or_default()
                })
                .collect();
            assert!(json_like.contains(&variant), "{kind}: {json_like}");
        }
    }
}
