//! A case's evidence bundle (`govchain-case-bundle/1`): what `case export`
//! and the web portal write and `govchain verify` checks offline. The
//! format is here; the checks are the CLI's (`crates/cli/src/case_bundle/
//! verify.rs`), since they use the node's proof verification.
//!
//! A bundle is JSON with bytes as lowercase hex, in a stable order: the
//! genesis it is checked against, the case as the node claimed it, then
//! the transactions that made the case, each as the node's proven
//! `GetTransaction` answer (envelope, block height, hash and index,
//! inclusion proof with the block header and its commit certificate), in
//! four sections: the workflow's definitions, the acting officers'
//! registrations (and revocations), the applicant's identity, and the
//! case's own transactions. When governance changed a department (its
//! signing key, what it may attest, its node key), the bundle also holds
//! the departments' registry with its state proof, so that the replay uses
//! the departments in force at each transaction's height. Every field is
//! checked: nothing in a bundle is for show.

use govchain_pki::Genesis;
use govchain_proto::node::v1::{GetTransactionResponse, TransactionStatus};
use govchain_proto::types::v1::{
    CommitCertificate, CommitSignature, InclusionProof, StateProof, TransactionEnvelope,
    ValidatorSetChange,
};
use serde::{Deserialize, Serialize};

/// The value of `format`; a verifier refuses any other.
pub const FORMAT: &str = "govchain-case-bundle/1";

/// The transactions one bundle may hold: the case's events are bounded
/// (2,048), and so are a workflow's versions a case can name.
pub const BUNDLE_TRANSACTIONS_MAX: usize = 8_192;

/// A bundle as written to and read from JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseBundle {
    /// Always [`FORMAT`].
    pub format: String,
    /// The case id (the id of the transaction that opened it), hex.
    #[serde(with = "hex_bytes")]
    pub case_id: Vec<u8>,
    /// The genesis whose validators certify every block and whose
    /// departments the replay uses. Trust comes from comparing its hash
    /// with a genesis the reader holds.
    pub genesis: Genesis,
    /// The case as the node answered `GetCase`: a `CaseRecord`, protobuf,
    /// hex. The replay must end in exactly this record.
    #[serde(with = "hex_bytes")]
    pub case: Vec<u8>,
    /// Every version of the workflow up to the case's, in version order.
    pub definitions: Vec<BundledTransaction>,
    /// The registrations and revocations, by their departments, of the
    /// officers who acted, up to their last action, in chain order.
    pub officers: Vec<BundledTransaction>,
    /// A citizen applicant's `CreateIdentity`, `DeclareAttribute`s and the
    /// attestations and revocations about it up to the case's last event,
    /// which automatic steps' rules read (empty when a department applied).
    pub applicant: Vec<BundledTransaction>,
    /// The case's transactions (open, act, amend), in the order of its
    /// events.
    pub actions: Vec<BundledTransaction>,
    /// The departments' registry (`gov/departments`) at a block at or
    /// after every transaction above, proven; absent in bundles written
    /// before 2026-12-04, which replay with genesis's departments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub departments: Option<BundledDepartments>,
}

/// The value the state held at `gov/departments` (empty: none, genesis's
/// departments were in force) and its proof against a certified header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundledDepartments {
    /// An encoded `DepartmentRegistry`, or empty.
    #[serde(with = "hex_bytes")]
    pub value: Vec<u8>,
    pub proof: BundledStateProof,
}

/// A `StateProof`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundledStateProof {
    /// The block header's bytes, exactly as hashed.
    #[serde(with = "hex_bytes")]
    pub header: Vec<u8>,
    pub certificate: BundledCertificate,
    #[serde(with = "hex_list")]
    pub siblings: Vec<Vec<u8>>,
    #[serde(with = "hex_bytes")]
    pub leaf_key_hash: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub leaf_value_hash: Vec<u8>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validator_set_changes: Vec<BundledSetChange>,
}

impl BundledStateProof {
    /// The node's proof, in bundle form; `None` without a certificate (a
    /// proof against the genesis state, which a bundle never needs).
    pub fn from_wire(proof: &StateProof) -> Option<Self> {
        Some(Self {
            header: proof.header.clone(),
            certificate: BundledCertificate::from_wire(proof.certificate.as_ref()?),
            siblings: proof.siblings.clone(),
            leaf_key_hash: proof.leaf_key_hash.clone(),
            leaf_value_hash: proof.leaf_value_hash.clone(),
            validator_set_changes: proof
                .validator_set_changes
                .iter()
                .map(BundledSetChange::from_wire)
                .collect::<Option<Vec<_>>>()?,
        })
    }

    /// Back into the proof `node::verify_state_proof` checks.
    pub fn to_wire(&self) -> StateProof {
        StateProof {
            header: self.header.clone(),
            certificate: Some(self.certificate.to_wire()),
            siblings: self.siblings.clone(),
            leaf_key_hash: self.leaf_key_hash.clone(),
            leaf_value_hash: self.leaf_value_hash.clone(),
            validator_set_changes: self
                .validator_set_changes
                .iter()
                .map(BundledSetChange::to_wire)
                .collect(),
        }
    }
}

impl BundledSetChange {
    fn from_wire(change: &ValidatorSetChange) -> Option<Self> {
        Some(Self {
            header: change.header.clone(),
            certificate: BundledCertificate::from_wire(change.certificate.as_ref()?),
        })
    }

    fn to_wire(&self) -> ValidatorSetChange {
        ValidatorSetChange {
            header: self.header.clone(),
            certificate: Some(self.certificate.to_wire()),
        }
    }
}

/// The four sections, in bundle order, each with the name its items get in
/// messages ("action 3").
impl CaseBundle {
    pub fn sections(&self) -> [(&'static str, &[BundledTransaction]); 4] {
        [
            ("definition", self.definitions.as_slice()),
            ("officer", self.officers.as_slice()),
            ("applicant", self.applicant.as_slice()),
            ("action", self.actions.as_slice()),
        ]
    }

    pub fn sections_mut(&mut self) -> [&mut Vec<BundledTransaction>; 4] {
        [
            &mut self.definitions,
            &mut self.officers,
            &mut self.applicant,
            &mut self.actions,
        ]
    }
}

/// A committed transaction with its proof: a `GetTransaction` answer with
/// `prove`, less the status (committed) and the result (which no header
/// commits to).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundledTransaction {
    #[serde(with = "hex_bytes")]
    pub transaction_id: Vec<u8>,
    pub block_height: u64,
    #[serde(with = "hex_bytes")]
    pub block_hash: Vec<u8>,
    /// Position in the block, from 0.
    pub index: u32,
    pub envelope: BundledEnvelope,
    pub proof: BundledProof,
}

/// A `TransactionEnvelope`: the signature covers the transaction id, which
/// covers chain id, signer, nonce and payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundledEnvelope {
    pub chain_id: String,
    #[serde(with = "hex_bytes")]
    pub signer: Vec<u8>,
    pub nonce: u64,
    /// The encoded `Transaction`, exactly as signed.
    #[serde(with = "hex_bytes")]
    pub payload: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
}

/// An `InclusionProof` (RFC 6962 audit path, deepest sibling first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundledProof {
    /// The block header's bytes, exactly as hashed.
    #[serde(with = "hex_bytes")]
    pub header: Vec<u8>,
    pub certificate: BundledCertificate,
    pub leaf_index: u64,
    pub tree_size: u64,
    #[serde(with = "hex_list")]
    pub audit_path: Vec<Vec<u8>>,
    /// The blocks that changed the validator set before this one, oldest
    /// first (absent while the set is genesis's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validator_set_changes: Vec<BundledSetChange>,
}

/// A block that changed the validator set: its header and certificate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundledSetChange {
    #[serde(with = "hex_bytes")]
    pub header: Vec<u8>,
    pub certificate: BundledCertificate,
}

impl BundledCertificate {
    fn from_wire(certificate: &CommitCertificate) -> Self {
        Self {
            height: certificate.height,
            view: certificate.view,
            block_hash: certificate.block_hash.clone(),
            signatures: certificate
                .signatures
                .iter()
                .map(|s| BundledSignature {
                    validator_index: s.validator_index,
                    signature: s.signature.clone(),
                })
                .collect(),
        }
    }

    fn to_wire(&self) -> CommitCertificate {
        CommitCertificate {
            height: self.height,
            view: self.view,
            block_hash: self.block_hash.clone(),
            signatures: self
                .signatures
                .iter()
                .map(|s| CommitSignature {
                    validator_index: s.validator_index,
                    signature: s.signature.clone(),
                })
                .collect(),
        }
    }
}

/// A block's `CommitCertificate`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundledCertificate {
    pub height: u64,
    pub view: u64,
    #[serde(with = "hex_bytes")]
    pub block_hash: Vec<u8>,
    pub signatures: Vec<BundledSignature>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundledSignature {
    /// The validator's position in genesis `validators`.
    pub validator_index: u32,
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
}

impl BundledTransaction {
    /// The node's proven answer, in bundle form; `None` if it lacks its
    /// envelope, proof or certificate.
    pub fn from_response(response: &GetTransactionResponse) -> Option<Self> {
        let envelope = response.envelope.as_ref()?;
        let proof = response.proof.as_ref()?;
        let certificate = proof.certificate.as_ref()?;
        Some(Self {
            transaction_id: response.transaction_id.clone(),
            block_height: response.block_height,
            block_hash: response.block_hash.clone(),
            index: response.index,
            envelope: BundledEnvelope {
                chain_id: envelope.chain_id.clone(),
                signer: envelope.signer.clone(),
                nonce: envelope.nonce,
                payload: envelope.payload.to_vec(),
                signature: envelope.signature.clone(),
            },
            proof: BundledProof {
                header: proof.header.clone(),
                certificate: BundledCertificate::from_wire(certificate),
                leaf_index: proof.leaf_index,
                tree_size: proof.tree_size,
                audit_path: proof.audit_path.clone(),
                validator_set_changes: proof
                    .validator_set_changes
                    .iter()
                    .map(BundledSetChange::from_wire)
                    .collect::<Option<Vec<_>>>()?,
            },
        })
    }

    /// Back into the answer `node::verify_transaction_proof` checks.
    pub fn to_response(&self) -> GetTransactionResponse {
        GetTransactionResponse {
            transaction_id: self.transaction_id.clone(),
            status: TransactionStatus::Committed.into(),
            block_height: self.block_height,
            block_hash: self.block_hash.clone(),
            index: self.index,
            result: None,
            envelope: Some(self.envelope()),
            proof: Some(InclusionProof {
                header: self.proof.header.clone(),
                certificate: Some(self.proof.certificate.to_wire()),
                leaf_index: self.proof.leaf_index,
                tree_size: self.proof.tree_size,
                audit_path: self.proof.audit_path.clone(),
                validator_set_changes: self
                    .proof
                    .validator_set_changes
                    .iter()
                    .map(BundledSetChange::to_wire)
                    .collect(),
            }),
            ..Default::default()
        }
    }

    pub fn envelope(&self) -> TransactionEnvelope {
        TransactionEnvelope {
            chain_id: self.envelope.chain_id.clone(),
            signer: self.envelope.signer.clone(),
            nonce: self.envelope.nonce,
            payload: self.envelope.payload.clone().into(),
            signature: self.envelope.signature.clone(),
        }
    }
}

/// Bytes as a lowercase hex string.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        hex::decode(&text).map_err(serde::de::Error::custom)
    }
}

/// A list of byte strings as a list of hex strings.
mod hex_list {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(list: &[Vec<u8>], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(list.iter().map(hex::encode))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Vec<u8>>, D::Error> {
        Vec::<String>::deserialize(deserializer)?
            .iter()
            .map(|text| hex::decode(text).map_err(serde::de::Error::custom))
            .collect()
    }
}
