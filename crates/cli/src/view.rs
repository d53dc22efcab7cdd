//! JSON shapes of API messages: bytes as hex, enums as lower-case words,
//! times as both Unix ms and RFC 3339. These are the `--json` output format.

use govchain_proto::node::v1::TransactionStatus;
use govchain_proto::types::v1::{
    AnchorRecord, TransactionOutcome, TransactionResult, transaction::Body,
};
use serde::Serialize;

use crate::output::format_time_ms;

/// `success`, `failed`, or `unspecified`.
pub fn outcome_name(outcome: TransactionOutcome) -> &'static str {
    match outcome {
        TransactionOutcome::Success => "success",
        TransactionOutcome::Failed => "failed",
        TransactionOutcome::Unspecified => "unspecified",
    }
}

/// `pending`, `committed`, or `unspecified`.
pub fn status_name(status: TransactionStatus) -> &'static str {
    match status {
        TransactionStatus::Pending => "pending",
        TransactionStatus::Committed => "committed",
        TransactionStatus::Unspecified => "unspecified",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResultView {
    pub outcome: &'static str,
    /// Why the transaction failed; empty on success.
    pub error: String,
}

impl ResultView {
    pub fn new(result: &TransactionResult) -> Self {
        Self {
            outcome: outcome_name(result.outcome()),
            error: result.error.clone(),
        }
    }

    pub fn failed(&self) -> bool {
        self.outcome == "failed"
    }

    /// `success`, or `failed: <why>`.
    pub fn text(&self) -> String {
        if self.error.is_empty() {
            self.outcome.to_owned()
        } else {
            format!("{}: {}", self.outcome, self.error)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnchorView {
    pub dataset: String,
    pub record_id: String,
    pub record_hash: String,
    pub schema: String,
    pub record_time_ms: u64,
    pub record_time: String,
}

impl AnchorView {
    pub fn new(record: &AnchorRecord) -> Self {
        Self {
            dataset: record.dataset.clone(),
            record_id: record.record_id.clone(),
            record_hash: hex::encode(&record.record_hash),
            schema: record.schema.clone(),
            record_time_ms: record.record_time_ms,
            record_time: format_time_ms(record.record_time_ms),
        }
    }
}

/// A transaction body, tagged by kind: `{"anchor_record": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyView {
    AnchorRecord(AnchorView),
    CreateIdentity {},
    DeclareAttribute {
        name: String,
        cid: String,
        commitment: String,
        holder: String,
        size_bytes: u64,
    },
    AttestAttribute {
        citizen: String,
        name: String,
        commitment: String,
        expires_ms: u64,
    },
    RevokeAttestation {
        citizen: String,
        name: String,
        reason: String,
    },
    GrantConsent {
        department: String,
        attributes: Vec<String>,
        purpose: String,
        expires_ms: u64,
        expires: String,
        jurisdiction: String,
    },
    RevokeConsent {
        consent_id: String,
    },
    RecordAccess {
        citizen: String,
        attribute: String,
        consent_id: String,
        purpose: String,
    },
}

/// A citizen key as its did:key, or hex if it is not a valid key.
pub fn did_of(key: &[u8]) -> String {
    govchain_crypto::PublicKey::from_slice(key)
        .map_or_else(|_| hex::encode(key), |key| key.to_did_key())
}

impl BodyView {
    pub fn new(body: &Body) -> Self {
        match body {
            Body::AnchorRecord(record) => Self::AnchorRecord(AnchorView::new(record)),
            Body::CreateIdentity(_) => Self::CreateIdentity {},
            Body::DeclareAttribute(d) => Self::DeclareAttribute {
                name: d.name.clone(),
                cid: d.cid.clone(),
                commitment: hex::encode(&d.commitment),
                holder: d.holder.clone(),
                size_bytes: d.size_bytes,
            },
            Body::AttestAttribute(a) => Self::AttestAttribute {
                citizen: did_of(&a.citizen),
                name: a.name.clone(),
                commitment: hex::encode(&a.commitment),
                expires_ms: a.expires_ms,
            },
            Body::RevokeAttestation(r) => Self::RevokeAttestation {
                citizen: did_of(&r.citizen),
                name: r.name.clone(),
                reason: r.reason.clone(),
            },
            Body::GrantConsent(g) => Self::GrantConsent {
                department: g.department.clone(),
                attributes: g.attributes.clone(),
                purpose: g.purpose.clone(),
                expires_ms: g.expires_ms,
                expires: format_time_ms(g.expires_ms),
                jurisdiction: g.jurisdiction.clone(),
            },
            Body::RevokeConsent(r) => Self::RevokeConsent {
                consent_id: hex::encode(&r.consent_id),
            },
            Body::RecordAccess(a) => Self::RecordAccess {
                citizen: did_of(&a.citizen),
                attribute: a.attribute.clone(),
                consent_id: hex::encode(&a.consent_id),
                purpose: a.purpose.clone(),
            },
        }
    }

    /// `key: value` pairs for human output.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::AnchorRecord(anchor) => vec![
                ("kind", "anchor record".to_owned()),
                ("dataset", anchor.dataset.clone()),
                ("record id", anchor.record_id.clone()),
                ("record sha256", anchor.record_hash.clone()),
                ("schema", or_dash(&anchor.schema)),
                ("record time", anchor.record_time.clone()),
            ],
            Self::CreateIdentity {} => vec![("kind", "create identity".to_owned())],
            Self::DeclareAttribute {
                name,
                cid,
                commitment,
                holder,
                size_bytes,
            } => vec![
                ("kind", "declare attribute".to_owned()),
                ("attribute", name.clone()),
                ("cid", cid.clone()),
                ("commitment", commitment.clone()),
                ("holder", holder.clone()),
                ("size", format!("{size_bytes} bytes")),
            ],
            Self::AttestAttribute {
                citizen,
                name,
                commitment,
                expires_ms,
            } => vec![
                ("kind", "attest attribute".to_owned()),
                ("citizen", citizen.clone()),
                ("attribute", name.clone()),
                ("commitment", commitment.clone()),
                ("expires", expiry(*expires_ms)),
            ],
            Self::RevokeAttestation {
                citizen,
                name,
                reason,
            } => vec![
                ("kind", "revoke attestation".to_owned()),
                ("citizen", citizen.clone()),
                ("attribute", name.clone()),
                ("reason", or_dash(reason)),
            ],
            Self::GrantConsent {
                department,
                attributes,
                purpose,
                expires,
                jurisdiction,
                ..
            } => vec![
                ("kind", "grant consent".to_owned()),
                ("department", department.clone()),
                ("attributes", attributes.join(", ")),
                ("purpose", purpose.clone()),
                ("expires", expires.clone()),
                ("jurisdiction", or_dash(jurisdiction)),
            ],
            Self::RevokeConsent { consent_id } => vec![
                ("kind", "revoke consent".to_owned()),
                ("consent id", consent_id.clone()),
            ],
            Self::RecordAccess {
                citizen,
                attribute,
                consent_id,
                purpose,
            } => vec![
                ("kind", "record access".to_owned()),
                ("citizen", citizen.clone()),
                ("attribute", attribute.clone()),
                ("consent id", consent_id.clone()),
                ("purpose", purpose.clone()),
            ],
        }
    }
}

/// An expiry in Unix ms, where 0 means never.
pub fn expiry(ms: u64) -> String {
    if ms == 0 {
        "never".to_owned()
    } else {
        format_time_ms(ms)
    }
}

pub fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_read_naturally() {
        let ok = ResultView::new(&TransactionResult {
            outcome: TransactionOutcome::Success.into(),
            error: String::new(),
        });
        assert_eq!(ok.text(), "success");
        assert!(!ok.failed());
        let failed = ResultView::new(&TransactionResult {
            outcome: TransactionOutcome::Failed.into(),
            error: "record is owned by tax".into(),
        });
        assert_eq!(failed.text(), "failed: record is owned by tax");
        assert!(failed.failed());
    }

    #[test]
    fn bodies_serialize_tagged_by_kind() {
        let body = Body::AnchorRecord(AnchorRecord {
            dataset: "d".into(),
            record_id: "r".into(),
            record_hash: vec![0xab; 32],
            schema: String::new(),
            record_time_ms: 0,
        });
        let json = serde_json::to_value(BodyView::new(&body)).expect("json");
        assert_eq!(json["anchor_record"]["record_hash"], "ab".repeat(32));
        assert_eq!(
            json["anchor_record"]["record_time"],
            "1970-01-01T00:00:00.000Z"
        );
    }
}
