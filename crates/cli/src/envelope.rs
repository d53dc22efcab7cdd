//! Building and signing transactions on the client side: pure functions,
//! so that offline signing and online submission produce the same bytes.

use std::fs::File;
use std::io::{self, Read as _};
use std::path::Path;
use std::time::UNIX_EPOCH;

use anyhow::Context as _;
use bytes::Bytes;
use govchain_crypto::{Digest, SigningKey};
use govchain_proto::types::v1::{
    AnchorRecord, Transaction, TransactionEnvelope, transaction::Body,
};
use prost::Message as _;
use sha2::{Digest as _, Sha256};

/// Read size when hashing a record file; the file is streamed, never held
/// in memory whole.
const HASH_BUFFER_BYTES: usize = 64 * 1024;

/// A record file's SHA-256, size and modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFacts {
    pub sha256: Digest,
    pub size_bytes: u64,
    /// Modification time in Unix ms; 0 when the file system does not say.
    pub modified_ms: u64,
}

/// Hashes `path` in fixed-size reads. The result is the plain SHA-256 of the
/// bytes, the same as [`Digest::sha256`] and `sha256sum`.
pub fn hash_file(path: &Path) -> anyhow::Result<FileFacts> {
    let open = || -> io::Result<(File, u64)> {
        let file = File::open(path)?;
        let metadata = file.metadata()?;
        let modified_ms = metadata
            .modified()
            .ok()
            .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            });
        Ok((file, modified_ms))
    };
    let (mut file, modified_ms) =
        open().with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; HASH_BUFFER_BYTES];
    let mut size_bytes: u64 = 0;
    loop {
        let read = file
            .read(&mut buffer)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size_bytes += read as u64;
    }
    Ok(FileFacts {
        sha256: Digest::from_bytes(hasher.finalize().into()),
        size_bytes,
        modified_ms,
    })
}

/// What to anchor; see `AnchorRecord` in `types.proto`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub dataset: String,
    pub record_id: String,
    pub record_hash: Digest,
    pub schema: String,
    pub record_time_ms: u64,
}

impl Anchor {
    pub fn record(&self) -> AnchorRecord {
        AnchorRecord {
            dataset: self.dataset.clone(),
            record_id: self.record_id.clone(),
            record_hash: self.record_hash.to_vec(),
            schema: self.schema.clone(),
            record_time_ms: self.record_time_ms,
        }
    }

    pub fn transaction(&self) -> Transaction {
        Transaction {
            body: Some(Body::AnchorRecord(self.record())),
        }
    }
}

/// A signed envelope and its id.
#[derive(Debug, Clone)]
pub struct Signed {
    pub id: Digest,
    pub envelope: TransactionEnvelope,
}

/// Encodes `transaction` once and signs the transaction id over exactly
/// those bytes; the envelope carries the same bytes, never a re-encoding.
pub fn sign(key: &SigningKey, chain_id: &str, nonce: u64, transaction: &Transaction) -> Signed {
    let payload = Bytes::from(transaction.encode_to_vec());
    let signer = key.public_key();
    let id = govchain_exec::transaction_id(chain_id, signer.as_bytes(), nonce, &payload);
    let envelope = TransactionEnvelope {
        payload,
        signer: signer.as_bytes().to_vec(),
        signature: key.sign(id.as_bytes()).to_vec(),
        chain_id: chain_id.to_owned(),
        nonce,
    };
    Signed { id, envelope }
}

/// The id of an envelope someone else built, as the node computes it.
pub fn envelope_id(envelope: &TransactionEnvelope) -> Digest {
    govchain_exec::transaction_id(
        &envelope.chain_id,
        &envelope.signer,
        envelope.nonce,
        &envelope.payload,
    )
}

/// The decoded body of an envelope's payload, if it decodes.
pub fn body(envelope: &TransactionEnvelope) -> Option<Body> {
    Transaction::decode(envelope.payload.clone()).ok()?.body
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    const CHAIN: &str = "govchain-test";

    fn anchor() -> Anchor {
        Anchor {
            dataset: "health/vaccinations".into(),
            record_id: "r-1".into(),
            record_hash: Digest::sha256(b"record"),
            schema: "fhir-r4/Immunization".into(),
            record_time_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn a_signed_anchor_passes_the_node_checks() {
        let key = SigningKey::from_seed([9; 32]);
        let signed = sign(&key, CHAIN, 3, &anchor().transaction());
        let bytes = signed.envelope.encode_to_vec();
        let decoded = govchain_exec::decode_envelope(&bytes).expect("decodes");
        let verified =
            govchain_exec::check_envelope(decoded, CHAIN, 65536, |_, _| false).expect("verifies");
        assert_eq!(verified.id, signed.id);
        assert_eq!(verified.signer, key.public_key());
        assert_eq!(verified.nonce, 3);
        assert_eq!(Some(verified.body), anchor().transaction().body);
        assert_eq!(envelope_id(&signed.envelope), signed.id);
    }

    #[test]
    fn the_signature_binds_the_chain() {
        let key = SigningKey::from_seed([9; 32]);
        let signed = sign(&key, CHAIN, 1, &anchor().transaction());
        let mut other = signed.envelope.clone();
        other.chain_id = "other".into();
        assert!(govchain_exec::check_envelope(other, "other", 65536, |_, _| false).is_err());
    }

    #[test]
    fn body_decodes_the_payload() {
        let key = SigningKey::from_seed([9; 32]);
        let signed = sign(&key, CHAIN, 1, &anchor().transaction());
        assert_eq!(body(&signed.envelope), anchor().transaction().body);
    }

    #[test]
    fn streamed_hash_equals_the_one_shot_hash() {
        let mut file = tempfile::NamedTempFile::new().expect("tempfile");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&data).expect("write");
        let facts = hash_file(file.path()).expect("hash");
        assert_eq!(facts.sha256, Digest::sha256(&data));
        assert_eq!(facts.size_bytes, 200_000);
        assert!(facts.modified_ms > 0);
    }

    #[test]
    fn empty_file_hash_is_the_known_value() {
        let file = tempfile::NamedTempFile::new().expect("tempfile");
        let facts = hash_file(file.path()).expect("hash");
        assert_eq!(
            facts.sha256.to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
