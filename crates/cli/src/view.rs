//! JSON shapes of API messages: bytes as hex, enums as lower-case words,
//! times as both Unix ms and RFC 3339. These are the `--json` output format.

use govchain_proto::identity::v1::{AttributeState, GetIdentityResponse};
use govchain_proto::node::v1::TransactionStatus;
use govchain_proto::types::v1::{
    AccessRecord, AnchorRecord, AttestationRecord, ConsentRecord, ErrorReason, IdentityRecord,
    TransactionOutcome, TransactionResult, transaction::Body,
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

/// `pending`, `committed`, `dropped`, or `unspecified`.
pub fn status_name(status: TransactionStatus) -> &'static str {
    match status {
        TransactionStatus::Pending => "pending",
        TransactionStatus::Committed => "committed",
        TransactionStatus::Dropped => "dropped",
        TransactionStatus::Unspecified => "unspecified",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResultView {
    pub outcome: &'static str,
    /// Why the transaction failed; empty on success.
    pub error: String,
    /// The stable reason of a failure (`NOT_FOUND`, `PERMISSION_DENIED`,
    /// ...: `ErrorReason` without its prefix); absent on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An `ErrorReason` as `ErrorInfo.reason` names it: "NONCE_USED".
pub fn reason_name(reason: ErrorReason) -> String {
    let name = reason.as_str_name();
    name.strip_prefix("ERROR_REASON_")
        .unwrap_or(name)
        .to_owned()
}

impl ResultView {
    pub fn new(result: &TransactionResult) -> Self {
        let reason = result.reason();
        Self {
            outcome: outcome_name(result.outcome()),
            error: result.error.clone(),
            reason: (reason != ErrorReason::Unspecified).then(|| reason_name(reason)),
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
    RegisterOfficer {
        officer: String,
        role: String,
    },
    RevokeOfficer {
        officer: String,
        reason: String,
    },
    DefineWorkflow {
        workflow_id: String,
        title: String,
        steps: Vec<String>,
    },
    OpenCase {
        workflow_id: String,
        workflow_version: u64,
        /// `name=cid` pairs.
        documents: Vec<String>,
    },
    ActOnCase {
        case_id: String,
        step_id: String,
        action: String,
        reason: String,
    },
    AmendCase {
        case_id: String,
        documents: Vec<String>,
    },
    PublishDatasetEntry {
        dataset: String,
        description: String,
        schema_cid: String,
        sensitivity: String,
        update_frequency: String,
        access_policy: String,
        workflow_id: String,
    },
    DatasetVersion {
        dataset: String,
        batch_cid: String,
        row_count: u64,
        rules_hash: String,
        /// The smallest group size over the quasi-identifiers; `None`
        /// without a report.
        k: Option<u64>,
        quasi_identifiers: Vec<String>,
    },
    RequestDatasetAccess {
        dataset: String,
        purpose: String,
        /// `name=cid` pairs.
        documents: Vec<String>,
    },
    ProposeValidatorChange {
        /// "add <department> as validator" or "remove validator <index>".
        change: String,
        deadline_ms: u64,
        deadline: String,
        reason: String,
    },
    ApproveValidatorChange {
        proposal_id: String,
    },
}

/// A revocation in words: what it names the certificate by.
pub fn revocation_text(revoke: &govchain_proto::types::v1::RevokeCertificate) -> String {
    let mut named = Vec::new();
    if !revoke.serial.is_empty() {
        named.push(format!("serial {}", revoke.serial));
    }
    if !revoke.key_fingerprint.is_empty() {
        named.push(format!(
            "key sha256 {}",
            hex::encode(&revoke.key_fingerprint)
        ));
    }
    format!("revoke certificate ({})", named.join(", "))
}

/// A department change in words: `department tax: signing key 3f…,
/// attests [income, residence]`.
pub fn department_change_text(change: &govchain_proto::types::v1::ChangeDepartment) -> String {
    let mut parts = Vec::new();
    if !change.signing_key.is_empty() {
        parts.push(format!("signing key {}", hex::encode(&change.signing_key)));
    }
    if let Some(attests) = &change.attests {
        parts.push(format!("attests [{}]", attests.names.join(", ")));
    }
    format!("department {}: {}", change.department, parts.join(", "))
}

/// A validator change in words.
pub fn change_text(change: Option<&govchain_proto::types::v1::ValidatorChange>) -> String {
    use govchain_proto::types::v1::validator_change::Change;
    match change.and_then(|c| c.change.as_ref()) {
        Some(Change::Add(add)) => format!(
            "add {} as validator (consensus key {}{})",
            add.department,
            hex::encode(&add.consensus_key),
            if add.endpoint.is_empty() {
                String::new()
            } else {
                format!(", at {}", add.endpoint)
            }
        ),
        Some(Change::Remove(remove)) => format!("remove validator {}", remove.validator_index),
        Some(Change::RevokeCertificate(revoke)) => revocation_text(revoke),
        Some(Change::Department(change)) => department_change_text(change),
        None => "none".to_owned(),
    }
}

/// `name=cid` for each document.
fn document_pairs(documents: &[govchain_proto::types::v1::CaseDocument]) -> Vec<String> {
    documents
        .iter()
        .map(|d| format!("{}={}", d.name, d.cid))
        .collect()
}

/// `approve`, `reject`, `return`, `override-approve`, `override-reject`,
/// `evaluate` or `unspecified`.
pub fn action_name(action: i32) -> &'static str {
    use govchain_proto::types::v1::CaseAction;
    match CaseAction::try_from(action) {
        Ok(CaseAction::Approve) => "approve",
        Ok(CaseAction::Reject) => "reject",
        Ok(CaseAction::Return) => "return",
        Ok(CaseAction::OverrideApprove) => "override-approve",
        Ok(CaseAction::OverrideReject) => "override-reject",
        Ok(CaseAction::Evaluate) => "evaluate",
        _ => "unspecified",
    }
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
            Body::RegisterOfficer(r) => Self::RegisterOfficer {
                officer: hex::encode(&r.officer),
                role: r.role.clone(),
            },
            Body::RevokeOfficer(r) => Self::RevokeOfficer {
                officer: hex::encode(&r.officer),
                reason: r.reason.clone(),
            },
            Body::DefineWorkflow(d) => Self::DefineWorkflow {
                workflow_id: d.workflow_id.clone(),
                title: d.title.clone(),
                steps: d.steps.iter().map(|s| s.step_id.clone()).collect(),
            },
            Body::OpenCase(o) => Self::OpenCase {
                workflow_id: o.workflow_id.clone(),
                workflow_version: o.workflow_version,
                documents: document_pairs(&o.documents),
            },
            Body::ActOnCase(a) => Self::ActOnCase {
                case_id: hex::encode(&a.case_id),
                step_id: a.step_id.clone(),
                action: action_name(a.action).to_owned(),
                reason: a.reason.clone(),
            },
            Body::AmendCase(a) => Self::AmendCase {
                case_id: hex::encode(&a.case_id),
                documents: document_pairs(&a.documents),
            },
            Body::PublishDatasetEntry(p) => Self::PublishDatasetEntry {
                dataset: p.dataset.clone(),
                description: p.description.clone(),
                schema_cid: p.schema_cid.clone(),
                sensitivity: govchain_exec::directory::sensitivity_name(p.sensitivity).to_owned(),
                update_frequency: p.update_frequency.clone(),
                access_policy: govchain_exec::directory::policy_name(p.access_policy).to_owned(),
                workflow_id: p.workflow_id.clone(),
            },
            Body::DatasetVersion(v) => Self::DatasetVersion {
                dataset: v.dataset.clone(),
                batch_cid: v.batch_cid.clone(),
                row_count: v.row_count,
                rules_hash: hex::encode(&v.rules_hash),
                k: v.k_anonymity.as_ref().map(|k| k.smallest_group_size),
                quasi_identifiers: v
                    .k_anonymity
                    .as_ref()
                    .map(|k| k.quasi_identifiers.clone())
                    .unwrap_or_default(),
            },
            Body::RequestDatasetAccess(r) => Self::RequestDatasetAccess {
                dataset: r.dataset.clone(),
                purpose: r.purpose.clone(),
                documents: document_pairs(&r.documents),
            },
            Body::ProposeValidatorChange(p) => Self::ProposeValidatorChange {
                change: change_text(p.change.as_ref()),
                deadline_ms: p.deadline_ms,
                deadline: format_time_ms(p.deadline_ms),
                reason: p.reason.clone(),
            },
            Body::ApproveValidatorChange(a) => Self::ApproveValidatorChange {
                proposal_id: hex::encode(&a.proposal_id),
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
            Self::RegisterOfficer { officer, role } => vec![
                ("kind", "register officer".to_owned()),
                ("officer", officer.clone()),
                ("role", role.clone()),
            ],
            Self::RevokeOfficer { officer, reason } => vec![
                ("kind", "revoke officer".to_owned()),
                ("officer", officer.clone()),
                ("reason", or_dash(reason)),
            ],
            Self::DefineWorkflow {
                workflow_id,
                title,
                steps,
            } => vec![
                ("kind", "define workflow".to_owned()),
                ("workflow", workflow_id.clone()),
                ("title", or_dash(title)),
                ("steps", steps.join(", ")),
            ],
            Self::OpenCase {
                workflow_id,
                workflow_version,
                documents,
            } => vec![
                ("kind", "open case".to_owned()),
                ("workflow", format!("{workflow_id} v{workflow_version}")),
                ("documents", or_dash(&documents.join(", "))),
            ],
            Self::ActOnCase {
                case_id,
                step_id,
                action,
                reason,
            } => vec![
                ("kind", "act on case".to_owned()),
                ("case", case_id.clone()),
                ("step", step_id.clone()),
                ("action", action.clone()),
                ("reason", or_dash(reason)),
            ],
            Self::AmendCase { case_id, documents } => vec![
                ("kind", "amend case".to_owned()),
                ("case", case_id.clone()),
                ("documents", documents.join(", ")),
            ],
            Self::PublishDatasetEntry {
                dataset,
                description,
                schema_cid,
                sensitivity,
                update_frequency,
                access_policy,
                workflow_id,
            } => vec![
                ("kind", "publish dataset entry".to_owned()),
                ("dataset", dataset.clone()),
                ("description", description.clone()),
                ("schema", schema_cid.clone()),
                ("sensitivity", sensitivity.clone()),
                ("update frequency", update_frequency.clone()),
                ("access policy", access_policy.clone()),
                ("workflow", workflow_id.clone()),
            ],
            Self::DatasetVersion {
                dataset,
                batch_cid,
                row_count,
                rules_hash,
                k,
                quasi_identifiers,
            } => vec![
                ("kind", "dataset version".to_owned()),
                ("dataset", dataset.clone()),
                ("batch", batch_cid.clone()),
                ("rows", row_count.to_string()),
                ("rules", rules_hash.clone()),
                (
                    "k-anonymity",
                    k.map_or_else(
                        || "-".to_owned(),
                        |k| format!("{k} over {}", quasi_identifiers.join(", ")),
                    ),
                ),
            ],
            Self::RequestDatasetAccess {
                dataset,
                purpose,
                documents,
            } => vec![
                ("kind", "request dataset access".to_owned()),
                ("dataset", dataset.clone()),
                ("purpose", purpose.clone()),
                ("documents", documents.join(", ")),
            ],
            Self::ProposeValidatorChange {
                change,
                deadline,
                reason,
                ..
            } => vec![
                ("kind", "propose validator change".to_owned()),
                ("change", change.clone()),
                ("deadline", deadline.clone()),
                ("reason", reason.clone()),
            ],
            Self::ApproveValidatorChange { proposal_id } => vec![
                ("kind", "approve validator change".to_owned()),
                ("proposal id", proposal_id.clone()),
            ],
        }
    }
}

/// A citizen's identity as `identity show` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityView {
    pub did: String,
    pub public_key: String,
    pub created_height: u64,
    pub created: String,
    pub transaction_id: String,
    pub attributes: Vec<AttributeView>,
    pub consents: Vec<ConsentView>,
}

impl IdentityView {
    /// `now_ms` decides which attestations and consents have expired.
    pub fn new(response: &GetIdentityResponse, now_ms: u64) -> Self {
        let identity = response.identity.clone().unwrap_or_default();
        Self::from_parts(&identity, &response.attributes, &response.consents, now_ms)
    }

    fn from_parts(
        identity: &IdentityRecord,
        attributes: &[AttributeState],
        consents: &[ConsentRecord],
        now_ms: u64,
    ) -> Self {
        Self {
            did: if identity.did.is_empty() {
                did_of(&identity.public_key)
            } else {
                identity.did.clone()
            },
            public_key: hex::encode(&identity.public_key),
            created_height: identity.created_height,
            created: format_time_ms(identity.created_ms),
            transaction_id: hex::encode(&identity.transaction_id),
            attributes: attributes
                .iter()
                .map(|state| AttributeView::new(state, now_ms))
                .collect(),
            consents: consents
                .iter()
                .map(|consent| ConsentView::new(consent, now_ms))
                .collect(),
        }
    }
}

/// One declared attribute: where its sealed blob is, the commitment to its
/// value, and who vouches for the current value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttributeView {
    pub name: String,
    pub cid: String,
    pub commitment: String,
    pub holder: String,
    pub size_bytes: u64,
    pub version: u64,
    pub declared_height: u64,
    pub declared: String,
    /// True if at least one attestation is unrevoked and unexpired.
    pub attested: bool,
    pub attestations: Vec<AttestationView>,
}

impl AttributeView {
    pub fn new(state: &AttributeState, now_ms: u64) -> Self {
        let attribute = state.attribute.clone().unwrap_or_default();
        Self {
            name: attribute.name,
            cid: attribute.cid,
            commitment: hex::encode(&attribute.commitment),
            holder: attribute.holder,
            size_bytes: attribute.size_bytes,
            version: attribute.version,
            declared_height: attribute.declared_height,
            declared: format_time_ms(attribute.declared_ms),
            attested: state.attested,
            attestations: state
                .attestations
                .iter()
                .map(|record| AttestationView::new(record, now_ms))
                .collect(),
        }
    }
}

/// `valid`, `revoked` or `expired`: the state of an attestation or consent.
pub fn grant_state(revoked: bool, expires_ms: u64, now_ms: u64) -> &'static str {
    if revoked {
        "revoked"
    } else if expires_ms != 0 && expires_ms <= now_ms {
        "expired"
    } else {
        "valid"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttestationView {
    pub department: String,
    pub state: &'static str,
    pub attested_height: u64,
    pub attested: String,
    pub expires_ms: u64,
    pub expires: String,
    pub revocation_reason: String,
    pub revoked: Option<String>,
    pub transaction_id: String,
}

impl AttestationView {
    pub fn new(record: &AttestationRecord, now_ms: u64) -> Self {
        Self {
            department: record.department.clone(),
            state: grant_state(record.revoked, record.expires_ms, now_ms),
            attested_height: record.attested_height,
            attested: format_time_ms(record.attested_ms),
            expires_ms: record.expires_ms,
            expires: expiry(record.expires_ms),
            revocation_reason: record.revocation_reason.clone(),
            revoked: record.revoked.then(|| format_time_ms(record.revoked_ms)),
            transaction_id: hex::encode(&record.transaction_id),
        }
    }

    /// `civil (valid, expires never)`, for one line per attribute.
    pub fn text(&self) -> String {
        match self.state {
            "revoked" if !self.revocation_reason.is_empty() => {
                format!("{} (revoked: {})", self.department, self.revocation_reason)
            }
            "valid" => format!("{} (valid, expires {})", self.department, self.expires),
            state => format!("{} ({state})", self.department),
        }
    }
}

/// A consent record; its id is the id of the granting transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsentView {
    pub consent_id: String,
    pub citizen: String,
    pub department: String,
    pub attributes: Vec<String>,
    pub purpose: String,
    pub jurisdiction: String,
    pub state: &'static str,
    pub granted_height: u64,
    pub granted_ms: u64,
    pub granted: String,
    pub expires_ms: u64,
    pub expires: String,
    pub revoked_ms: Option<u64>,
    pub revoked: Option<String>,
}

impl ConsentView {
    pub fn new(record: &ConsentRecord, now_ms: u64) -> Self {
        Self {
            consent_id: hex::encode(&record.consent_id),
            citizen: did_of(&record.citizen),
            department: record.department.clone(),
            attributes: record.attributes.clone(),
            purpose: record.purpose.clone(),
            jurisdiction: record.jurisdiction.clone(),
            state: grant_state(record.revoked, record.expires_ms, now_ms),
            granted_height: record.granted_height,
            granted_ms: record.granted_ms,
            granted: format_time_ms(record.granted_ms),
            expires_ms: record.expires_ms,
            expires: expiry(record.expires_ms),
            revoked_ms: record.revoked.then_some(record.revoked_ms),
            revoked: record.revoked.then(|| format_time_ms(record.revoked_ms)),
        }
    }
}

/// One recorded read of a citizen's attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessView {
    pub sequence: u64,
    pub department: String,
    pub attribute: String,
    pub consent_id: String,
    pub purpose: String,
    pub cid: String,
    pub accessed_ms: u64,
    pub accessed: String,
    pub block_height: u64,
    pub transaction_id: String,
    /// A refused attempt: nothing was released, `refusal` says why.
    pub refused: bool,
    pub refusal: String,
}

impl AccessView {
    pub fn new(record: &AccessRecord) -> Self {
        Self {
            sequence: record.sequence,
            department: record.department.clone(),
            attribute: record.attribute.clone(),
            consent_id: hex::encode(&record.consent_id),
            purpose: record.purpose.clone(),
            cid: record.cid.clone(),
            accessed_ms: record.accessed_ms,
            accessed: format_time_ms(record.accessed_ms),
            block_height: record.block_height,
            transaction_id: hex::encode(&record.transaction_id),
            refused: record.refused,
            refusal: record.refusal.clone(),
        }
    }

    /// "read", or "REFUSED: <why>".
    pub fn outcome(&self) -> String {
        if self.refused {
            format!("REFUSED: {}", self.refusal)
        } else {
            "read".to_owned()
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
            ..Default::default()
        });
        assert_eq!(ok.text(), "success");
        assert_eq!(ok.reason, None);
        assert!(!ok.failed());
        let failed = ResultView::new(&TransactionResult {
            outcome: TransactionOutcome::Failed.into(),
            error: "record is owned by tax".into(),
            reason: ErrorReason::PermissionDenied.into(),
        });
        assert_eq!(failed.text(), "failed: record is owned by tax");
        assert_eq!(failed.reason.as_deref(), Some("PERMISSION_DENIED"));
        assert!(failed.failed());
    }

    #[test]
    fn grants_are_valid_until_revoked_or_expired() {
        assert_eq!(grant_state(false, 0, 5), "valid");
        assert_eq!(grant_state(false, 6, 5), "valid");
        assert_eq!(grant_state(false, 5, 5), "expired");
        assert_eq!(grant_state(true, 0, 5), "revoked");
        let record = AttestationRecord {
            department: "civil".into(),
            revoked: true,
            revocation_reason: "wrong person".into(),
            ..AttestationRecord::default()
        };
        assert_eq!(
            AttestationView::new(&record, 1).text(),
            "civil (revoked: wrong person)"
        );
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
