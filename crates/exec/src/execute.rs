//! Applying one transaction to state.

use std::collections::BTreeMap;

use govchain_proto::types::v1::{
    AnchorRecord, AnchoredRecord, ErrorReason, TransactionOutcome, TransactionResult,
    transaction::Body,
};
use prost::Message as _;

use crate::approval;
use crate::directory;
use crate::governance;
use crate::identity::{self, Context, Department, Departments, Outcome, Refusal};
use crate::state::{StateError, StateRead, nonce_key};
use crate::transaction::VerifiedTransaction;

const ANCHOR_PREFIX: &[u8] = b"anchor/";

/// The state key of an anchored record. The dataset is length-prefixed so
/// that ("a/b", "c") and ("a", "b/c") never share a key.
pub fn anchor_key(dataset: &str, record_id: &str) -> Vec<u8> {
    let dataset_len = u32::try_from(dataset.len())
        .expect("names are bounded")
        .to_be_bytes();
    [
        ANCHOR_PREFIX,
        &dataset_len,
        dataset.as_bytes(),
        record_id.as_bytes(),
    ]
    .concat()
}

/// State as seen in the middle of a block: the writes so far over the head.
pub(crate) struct Overlay<'a, S: StateRead> {
    base: &'a S,
    pub(crate) writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Validator changes whose approvals reached a quorum in this block, in
    /// order, for `governance::end_block`.
    pub(crate) approved_changes: Vec<govchain_crypto::Digest>,
}

impl<'a, S: StateRead> Overlay<'a, S> {
    pub(crate) fn new(base: &'a S) -> Self {
        Self {
            base,
            writes: BTreeMap::new(),
            approved_changes: Vec::new(),
        }
    }

    pub(crate) fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    pub(crate) fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }
}

impl<S: StateRead> StateRead for Overlay<'_, S> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        match self.writes.get(key) {
            Some(value) => Ok(value.clone()),
            None => self.base.get(key),
        }
    }
}

/// Executes `transaction`, whose nonce the caller has checked. The nonce is
/// consumed whatever the outcome.
pub(crate) fn execute<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    transaction: &VerifiedTransaction,
    context: &Context<'_>,
) -> Result<TransactionResult, StateError> {
    overlay.put(
        nonce_key(&transaction.signer),
        transaction.nonce.to_be_bytes().to_vec(),
    );
    Ok(match apply(overlay, transaction, context)? {
        Ok(()) => TransactionResult {
            outcome: TransactionOutcome::Success.into(),
            error: String::new(),
            reason: ErrorReason::Unspecified.into(),
        },
        Err(refusal) => TransactionResult {
            outcome: TransactionOutcome::Failed.into(),
            error: refusal.to_string(),
            reason: refusal.reason().into(),
        },
    })
}

/// Applies the body of a transaction: its effect, or why it has none.
fn apply<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    transaction: &VerifiedTransaction,
    context: &Context<'_>,
) -> Outcome {
    match &transaction.body {
        Body::AnchorRecord(anchor) => execute_anchor(overlay, transaction, anchor, context),
        Body::CreateIdentity(_) => identity::create_identity(overlay, context, transaction),
        Body::DeclareAttribute(body) => {
            identity::declare_attribute(overlay, context, transaction, body)
        }
        Body::AttestAttribute(body) => {
            identity::attest_attribute(overlay, context, transaction, body)
        }
        Body::RevokeAttestation(body) => {
            identity::revoke_attestation(overlay, context, transaction, body)
        }
        Body::GrantConsent(body) => identity::grant_consent(overlay, context, transaction, body),
        Body::RevokeConsent(body) => identity::revoke_consent(overlay, context, transaction, body),
        Body::RecordAccess(body) => identity::record_access(overlay, context, transaction, body),
        Body::RegisterOfficer(body) => {
            approval::register_officer(overlay, context, transaction, body)
        }
        Body::RevokeOfficer(body) => approval::revoke_officer(overlay, context, transaction, body),
        Body::DefineWorkflow(body) => {
            approval::define_workflow(overlay, context, transaction, body)
        }
        Body::OpenCase(body) => approval::open_case(overlay, context, transaction, body),
        Body::ActOnCase(body) => approval::act_on_case(overlay, context, transaction, body),
        Body::AmendCase(body) => approval::amend_case(overlay, context, transaction, body),
        Body::PublishDatasetEntry(body) => {
            directory::publish_entry(overlay, context, transaction, body)
        }
        Body::DatasetVersion(body) => {
            directory::append_version(overlay, context, transaction, body)
        }
        Body::RequestDatasetAccess(body) => {
            directory::request_access(overlay, context, transaction, body)
        }
        Body::ProposeValidatorChange(body) => {
            governance::propose(overlay, context, transaction, body)
        }
        Body::ApproveValidatorChange(body) => {
            governance::approve(overlay, context, transaction, body)
        }
    }
}

/// Whether `transaction` would take effect on `state` in a block at
/// `height` with timestamp `now_ms`: a node asks this at admission, so that
/// a transaction that would fail (an attestation by a department without
/// the role, a read without consent, ...) is refused with the reason
/// instead of being ordered and failing. Writes nothing.
pub fn precheck<S: StateRead>(
    state: &S,
    departments: &Departments,
    transaction: &VerifiedTransaction,
    height: u64,
    now_ms: u64,
) -> Result<Result<(), Refusal>, StateError> {
    let mut overlay = Overlay::new(state);
    apply(
        &mut overlay,
        transaction,
        &Context {
            departments,
            height,
            now_ms,
        },
    )
}

/// A committed transaction's effect, as replayed on its own: what
/// [`apply_committed`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct Replayed {
    pub result: TransactionResult,
    /// State changes, sorted by key; `None` deletes.
    pub writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

/// Executes `transaction`, which a certified block at `height` with
/// timestamp `now_ms` committed, on `state`, by the same path a block's
/// execution takes: its result and its writes. The nonce is recorded but
/// not checked: the block's validators checked it, and a replay of some of
/// a signer's transactions (an evidence bundle holds only those of one
/// case) has gaps in its nonces.
pub fn apply_committed<S: StateRead>(
    state: &S,
    departments: &Departments,
    transaction: &VerifiedTransaction,
    height: u64,
    now_ms: u64,
) -> Result<Replayed, StateError> {
    let mut overlay = Overlay::new(state);
    let result = execute(
        &mut overlay,
        transaction,
        &Context {
            departments,
            height,
            now_ms,
        },
    )?;
    Ok(Replayed {
        result,
        writes: overlay.writes,
    })
}

/// The department whose namespace a dataset is in: its first path segment
/// ("health" for "health/vaccinations"), if genesis lists a department of
/// that name.
pub fn dataset_owner<'d>(departments: &'d Departments, dataset: &str) -> Option<&'d Department> {
    let first = dataset.split('/').next().unwrap_or(dataset);
    departments.by_name(first)
}

/// Anchors a new version of a record. A dataset named after a department
/// ("health/...") takes anchors only from that department's signing key, so
/// no one can squat another department's records before it anchors them;
/// and only the first signer of a record may anchor later versions, so one
/// signer can not overwrite another's (a department's record: the
/// department, with its signing key in force, which may have changed).
fn execute_anchor<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    transaction: &VerifiedTransaction,
    anchor: &AnchorRecord,
    context: &Context<'_>,
) -> Outcome {
    let signer_department = context.departments.by_key(&transaction.signer);
    if let Some(owner) = dataset_owner(context.departments, &anchor.dataset)
        && signer_department.is_none_or(|signer| signer.name != owner.name)
    {
        return Ok(Err(Refusal::PermissionDenied(format!(
            "dataset {:?} is in department {:?}'s namespace; only {:?}'s signing key may anchor records in it, and the signer is {}",
            anchor.dataset,
            owner.name,
            owner.name,
            signer_department.map_or_else(
                || format!("key {}", hex_short(transaction.signer.as_bytes())),
                |d| format!("department {:?}", d.name)
            )
        ))));
    }
    if let Err(refusal) = directory::check_anchor(overlay, signer_department, &anchor.dataset)? {
        return Ok(Err(refusal));
    }
    let key = anchor_key(&anchor.dataset, &anchor.record_id);
    let previous =
        match overlay.get(&key)? {
            None => None,
            Some(bytes) => Some(AnchoredRecord::decode(bytes.as_slice()).map_err(|err| {
                StateError::Corrupt {
                    key: format!("anchor {}/{}", anchor.dataset, anchor.record_id),
                    reason: err.to_string(),
                }
            })?),
        };
    if let Some(previous) = &previous {
        let same = if previous.department.is_empty() {
            previous.signer == transaction.signer.as_bytes()
        } else {
            signer_department.is_some_and(|d| d.name == previous.department)
        };
        if !same {
            let first = if previous.department.is_empty() {
                format!("signer {}", hex_short(&previous.signer))
            } else {
                format!("department {:?}", previous.department)
            };
            return Ok(Err(Refusal::PermissionDenied(format!(
                "record {:?} in dataset {:?} was anchored by {first}; only that {} may anchor new versions",
                anchor.record_id,
                anchor.dataset,
                if previous.department.is_empty() {
                    "signer"
                } else {
                    "department"
                },
            ))));
        }
    }
    let record = AnchoredRecord {
        record: Some(anchor.clone()),
        signer: transaction.signer.as_bytes().to_vec(),
        version: previous.map_or(1, |p| p.version.saturating_add(1)),
        block_height: context.height,
        transaction_id: transaction.id.to_vec(),
        department: signer_department
            .map(|d| d.name.clone())
            .unwrap_or_default(),
    };
    overlay.put(key, record.encode_to_vec());
    Ok(Ok(()))
}

fn hex_short(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
