//! The data resource directory: dataset catalogue entries, their data
//! versions, access requests and grants, with the state they keep and the
//! rules every node applies when executing them; and the rule a node asks
//! before serving a dataset version's blob ([`blob_release`]).
//!
//! **Invariant:** a dataset has one owner for good: the department whose
//! namespace its name is in ("health/…"), or else the department that first
//! published it. Only the owner publishes entries, appends versions and
//! anchors records in it once it has an entry.
//!
//! **Invariant:** a grant exists only for a department whose access
//! request (an approval case against the entry's workflow) was approved;
//! it is written in the same transaction that approves the case.
//!
//! State keys (names length-prefixed, numbers big-endian; every list is a
//! count and numbered entries, read by page without scanning):
//! - `dir/<len><dataset>`: the latest [`DatasetEntry`]
//! - `dir-h/<len><dataset><u64 entry version>`: every [`DatasetEntry`]
//! - `dir-n`, `dir-i/<u64 seq>`: dataset names in first-publication order
//! - `dsv-n/<dataset>`, `dsv/<len><dataset><u64 number>`:
//!   [`DatasetVersionRecord`]s
//! - `dsv-cid/<cid>`: the dataset a batch blob is a version of
//! - `dir-schema/<cid>`: the dataset whose entry last named the blob as its
//!   schema
//! - `dsreq/<case id>`: a [`DatasetAccessRequest`]
//! - `grant/<len><dataset><grantee>`: a [`DatasetGrant`]
//! - `grant-n/<dataset>`, `grant-i/<len><dataset><u64 seq>`: grantees in
//!   grant order

use govchain_crypto::Digest;
use govchain_proto::types::v1::{
    CaseRecord, CaseState, DatasetAccessPolicy, DatasetAccessRequest, DatasetEntry, DatasetGrant,
    DatasetSensitivity, DatasetVersion, DatasetVersionRecord, OpenCase, PublishDatasetEntry,
    RequestDatasetAccess,
};
use prost::Message;

use crate::approval::{self, TEXT_BYTES_MAX, valid_cid_text, valid_name};
use crate::execute::{Overlay, dataset_owner};
use crate::identity::{Context, Department, Outcome, Refusal};
use crate::state::{StateError, StateRead, read_message, read_u64};
use crate::transaction::VerifiedTransaction;

/// Longest dataset name (as for anchors).
pub const DATASET_BYTES_MAX: usize = 256;
/// Longest entry description.
pub const DESCRIPTION_BYTES_MAX: usize = 1024;
/// Longest update frequency text.
pub const FREQUENCY_BYTES_MAX: usize = 64;
/// Most quasi-identifier columns a k-anonymity report names.
pub const QUASI_IDENTIFIERS_MAX: usize = 64;
/// Longest quasi-identifier column name.
pub const COLUMN_BYTES_MAX: usize = 64;

// ----- stateless checks -----------------------------------------------------

/// Whether a dataset name is valid: 1 to [`DATASET_BYTES_MAX`] bytes of
/// lower-case letters, digits, `_`, `-`, `.` and `/`, with no empty path
/// segment.
pub fn valid_dataset_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= DATASET_BYTES_MAX
        && name.split('/').all(|segment| !segment.is_empty())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.' | b'/')
        })
}

fn check_dataset(field: &str, name: &str) -> Result<(), String> {
    if valid_dataset_name(name) {
        return Ok(());
    }
    Err(format!(
        "{field} {name:?} is not a dataset name: use 1 to {DATASET_BYTES_MAX} bytes of lower-case letters, digits, '_', '-', '.' and '/', with no empty segment (e.g. \"health/vaccinations\")"
    ))
}

fn check_len(field: &str, text: &str, max: usize) -> Result<(), String> {
    if text.len() > max {
        return Err(format!("{field} is {} bytes, at most {max}", text.len()));
    }
    Ok(())
}

fn check_cid(field: &str, cid: &str) -> Result<(), String> {
    if valid_cid_text(cid) {
        return Ok(());
    }
    Err(format!(
        "{field} {cid:?} is not a base32 CIDv1 (like \"bafkrei...\")"
    ))
}

/// The stateless rule of `PublishDatasetEntry`.
pub fn validate_publish(body: &PublishDatasetEntry) -> Result<(), String> {
    check_dataset("publish_dataset_entry.dataset", &body.dataset)?;
    check_len(
        "publish_dataset_entry.description",
        &body.description,
        DESCRIPTION_BYTES_MAX,
    )?;
    if !body.schema_cid.is_empty() {
        check_cid("publish_dataset_entry.schema_cid", &body.schema_cid)?;
    }
    check_len(
        "publish_dataset_entry.update_frequency",
        &body.update_frequency,
        FREQUENCY_BYTES_MAX,
    )?;
    match DatasetSensitivity::try_from(body.sensitivity) {
        Ok(DatasetSensitivity::Unspecified) | Err(_) => {
            return Err(format!(
                "publish_dataset_entry.sensitivity {} is not public, internal, restricted or personal",
                body.sensitivity
            ));
        }
        Ok(_) => {}
    }
    let policy = DatasetAccessPolicy::try_from(body.access_policy)
        .unwrap_or(DatasetAccessPolicy::Unspecified);
    if body.sensitivity == DatasetSensitivity::Personal as i32
        && policy == DatasetAccessPolicy::Open
    {
        return Err(
            "publish_dataset_entry: a personal dataset may not be open; use by-request or citizen-consent"
                .into(),
        );
    }
    match (policy, body.workflow_id.is_empty()) {
        (DatasetAccessPolicy::Unspecified, _) => Err(format!(
            "publish_dataset_entry.access_policy {} is not open, by-request or citizen-consent",
            body.access_policy
        )),
        (DatasetAccessPolicy::ByRequest, true) => Err(
            "publish_dataset_entry.workflow_id is required for a by-request dataset: the workflow access requests go through"
                .into(),
        ),
        (DatasetAccessPolicy::ByRequest, false) => {
            if valid_name(&body.workflow_id) {
                Ok(())
            } else {
                Err(format!(
                    "publish_dataset_entry.workflow_id {:?} is not a workflow id",
                    body.workflow_id
                ))
            }
        }
        (_, false) => Err(
            "publish_dataset_entry.workflow_id is only for a by-request dataset; leave it empty"
                .into(),
        ),
        (_, true) => Ok(()),
    }
}

/// The stateless rule of `DatasetVersion`.
pub fn validate_version(body: &DatasetVersion) -> Result<(), String> {
    check_dataset("dataset_version.dataset", &body.dataset)?;
    check_cid("dataset_version.batch_cid", &body.batch_cid)?;
    if body.rules_hash.len() != Digest::LEN {
        return Err(format!(
            "dataset_version.rules_hash must be a 32-byte SHA-256, got {} bytes",
            body.rules_hash.len()
        ));
    }
    if let Some(report) = &body.k_anonymity {
        if report.quasi_identifiers.len() > QUASI_IDENTIFIERS_MAX {
            return Err(format!(
                "dataset_version.k_anonymity names {} quasi-identifiers, at most {QUASI_IDENTIFIERS_MAX}",
                report.quasi_identifiers.len()
            ));
        }
        for column in &report.quasi_identifiers {
            if column.is_empty() || column.len() > COLUMN_BYTES_MAX {
                return Err(format!(
                    "dataset_version.k_anonymity.quasi_identifiers: a column name must be 1 to {COLUMN_BYTES_MAX} bytes, got {}",
                    column.len()
                ));
            }
        }
    }
    Ok(())
}

/// The stateless rule of `RequestDatasetAccess`.
pub fn validate_request(body: &RequestDatasetAccess) -> Result<(), String> {
    check_dataset("request_dataset_access.dataset", &body.dataset)?;
    if body.purpose.trim().is_empty() {
        return Err("request_dataset_access.purpose is empty: say why the data is needed".into());
    }
    check_len(
        "request_dataset_access.purpose",
        &body.purpose,
        TEXT_BYTES_MAX,
    )?;
    approval::validate_documents("request_dataset_access.documents", &body.documents)
}

// ----- keys -----------------------------------------------------------------

fn name_part(name: &str) -> Vec<u8> {
    let len = u32::try_from(name.len()).expect("names are bounded");
    [&len.to_be_bytes()[..], name.as_bytes()].concat()
}

fn entry_key(dataset: &str) -> Vec<u8> {
    [b"dir/".as_slice(), &name_part(dataset)].concat()
}

fn entry_history_key(dataset: &str, entry_version: u64) -> Vec<u8> {
    [
        b"dir-h/".as_slice(),
        &name_part(dataset),
        &entry_version.to_be_bytes(),
    ]
    .concat()
}

const DATASET_COUNT_KEY: &[u8] = b"dir-n";

fn dataset_index_key(sequence: u64) -> Vec<u8> {
    [b"dir-i/".as_slice(), &sequence.to_be_bytes()].concat()
}

fn version_count_key(dataset: &str) -> Vec<u8> {
    [b"dsv-n/".as_slice(), dataset.as_bytes()].concat()
}

fn version_key(dataset: &str, number: u64) -> Vec<u8> {
    [
        b"dsv/".as_slice(),
        &name_part(dataset),
        &number.to_be_bytes(),
    ]
    .concat()
}

fn blob_dataset_key(cid: &str) -> Vec<u8> {
    [b"dsv-cid/".as_slice(), cid.as_bytes()].concat()
}

fn schema_dataset_key(cid: &str) -> Vec<u8> {
    [b"dir-schema/".as_slice(), cid.as_bytes()].concat()
}

fn request_key(case_id: &[u8]) -> Vec<u8> {
    [b"dsreq/".as_slice(), case_id].concat()
}

fn grant_key(dataset: &str, grantee: &str) -> Vec<u8> {
    [
        b"grant/".as_slice(),
        &name_part(dataset),
        grantee.as_bytes(),
    ]
    .concat()
}

fn grant_count_key(dataset: &str) -> Vec<u8> {
    [b"grant-n/".as_slice(), dataset.as_bytes()].concat()
}

fn grant_index_key(dataset: &str, sequence: u64) -> Vec<u8> {
    [
        b"grant-i/".as_slice(),
        &name_part(dataset),
        &sequence.to_be_bytes(),
    ]
    .concat()
}

// ----- reads ----------------------------------------------------------------

fn read_name(state: &impl StateRead, key: &[u8], what: &str) -> Result<String, StateError> {
    let bytes = state.get(key)?.ok_or_else(|| StateError::Corrupt {
        key: what.to_owned(),
        reason: "a listed entry is missing".into(),
    })?;
    String::from_utf8(bytes).map_err(|err| StateError::Corrupt {
        key: what.to_owned(),
        reason: err.to_string(),
    })
}

/// A dataset's latest directory entry.
pub fn read_entry(
    state: &impl StateRead,
    dataset: &str,
) -> Result<Option<DatasetEntry>, StateError> {
    read_message(state, &entry_key(dataset), "directory entry")
}

/// One version of a dataset's directory entry.
pub fn read_entry_version(
    state: &impl StateRead,
    dataset: &str,
    entry_version: u64,
) -> Result<Option<DatasetEntry>, StateError> {
    read_message(
        state,
        &entry_history_key(dataset, entry_version),
        "directory entry version",
    )
}

/// How many datasets the directory lists.
pub fn dataset_count(state: &impl StateRead) -> Result<u64, StateError> {
    read_u64(state, DATASET_COUNT_KEY, "directory count")
}

/// How many data versions a dataset has.
pub fn version_count(state: &impl StateRead, dataset: &str) -> Result<u64, StateError> {
    read_u64(state, &version_count_key(dataset), "dataset version count")
}

/// Data version `number` (from 1) of a dataset.
pub fn read_version(
    state: &impl StateRead,
    dataset: &str,
    number: u64,
) -> Result<Option<DatasetVersionRecord>, StateError> {
    read_message(state, &version_key(dataset, number), "dataset version")
}

/// The dataset a blob is a data version of, if any.
pub fn blob_dataset(state: &impl StateRead, cid: &str) -> Result<Option<String>, StateError> {
    match state.get(&blob_dataset_key(cid))? {
        None => Ok(None),
        Some(_) => read_name(state, &blob_dataset_key(cid), "blob dataset").map(Some),
    }
}

/// The dataset whose entry (last) named `cid` as its schema, if any.
pub fn schema_dataset(state: &impl StateRead, cid: &str) -> Result<Option<String>, StateError> {
    match state.get(&schema_dataset_key(cid))? {
        None => Ok(None),
        Some(_) => read_name(state, &schema_dataset_key(cid), "schema dataset").map(Some),
    }
}

/// A department's grant for a dataset.
pub fn read_grant(
    state: &impl StateRead,
    dataset: &str,
    grantee: &str,
) -> Result<Option<DatasetGrant>, StateError> {
    read_message(state, &grant_key(dataset, grantee), "dataset grant")
}

/// The access request a case was opened for, if it was.
pub fn read_request(
    state: &impl StateRead,
    case_id: &[u8],
) -> Result<Option<DatasetAccessRequest>, StateError> {
    read_message(state, &request_key(case_id), "dataset access request")
}

/// How many grants a dataset has.
pub fn grant_count(state: &impl StateRead, dataset: &str) -> Result<u64, StateError> {
    read_u64(state, &grant_count_key(dataset), "grant count")
}

/// At most `limit` latest entries that `keep` accepts, in first-publication
/// order, from the dataset numbered `first` (from 1), and the number the
/// next page starts at, or `None` after the last. At most `scanned_max`
/// datasets are read per page.
pub fn entries_page(
    state: &impl StateRead,
    first: u64,
    limit: usize,
    scanned_max: u64,
    keep: impl Fn(&DatasetEntry) -> bool,
) -> Result<(Vec<DatasetEntry>, Option<u64>), StateError> {
    let count = dataset_count(state)?;
    let mut entries = Vec::new();
    let mut sequence = first.max(1);
    let mut scanned = 0;
    while sequence <= count && entries.len() < limit && scanned < scanned_max {
        let name = read_name(state, &dataset_index_key(sequence), "directory index")?;
        let entry = read_entry(state, &name)?.ok_or_else(|| StateError::Corrupt {
            key: "directory index".into(),
            reason: format!("dataset {name:?} is listed but has no entry"),
        })?;
        if keep(&entry) {
            entries.push(entry);
        }
        sequence += 1;
        scanned += 1;
    }
    Ok((entries, (sequence <= count).then_some(sequence)))
}

/// At most `limit` data versions of a dataset, newest first, from the one
/// numbered `from` (or the newest when `None`), and the number the next
/// page starts at, or `None` after the oldest.
pub fn versions_page(
    state: &impl StateRead,
    dataset: &str,
    from: Option<u64>,
    limit: usize,
) -> Result<(Vec<DatasetVersionRecord>, Option<u64>), StateError> {
    let count = version_count(state, dataset)?;
    let mut number = from.unwrap_or(count).min(count);
    let mut versions = Vec::new();
    while number >= 1 && versions.len() < limit {
        let version = read_version(state, dataset, number)?.ok_or_else(|| StateError::Corrupt {
            key: "dataset versions".into(),
            reason: format!("version {number} of {count} of {dataset:?} is missing"),
        })?;
        versions.push(version);
        number -= 1;
    }
    Ok((versions, (number >= 1).then_some(number)))
}

/// At most `limit` grants of a dataset that `keep` accepts, oldest first,
/// from the one numbered `first` (from 1), and the next number, or `None`
/// after the last.
pub fn grants_page(
    state: &impl StateRead,
    dataset: &str,
    first: u64,
    limit: usize,
    keep: impl Fn(&DatasetGrant) -> bool,
) -> Result<(Vec<DatasetGrant>, Option<u64>), StateError> {
    let count = grant_count(state, dataset)?;
    let mut grants = Vec::new();
    let mut sequence = first.max(1);
    while sequence <= count && grants.len() < limit {
        let grantee = read_name(state, &grant_index_key(dataset, sequence), "grant index")?;
        let grant = read_grant(state, dataset, &grantee)?.ok_or_else(|| StateError::Corrupt {
            key: "grant index".into(),
            reason: format!("grant of {dataset:?} to {grantee:?} is listed but not stored"),
        })?;
        if keep(&grant) {
            grants.push(grant);
        }
        sequence += 1;
    }
    Ok((grants, (sequence <= count).then_some(sequence)))
}

/// Whether an entry matches a keyword search: every whitespace-separated
/// keyword is a case-insensitive substring of the name or description.
pub fn entry_matches(entry: &DatasetEntry, query: &str) -> bool {
    let Some(published) = &entry.entry else {
        return false;
    };
    let haystack = format!("{} {}", published.dataset, published.description).to_lowercase();
    query
        .split_whitespace()
        .all(|keyword| haystack.contains(&keyword.to_lowercase()))
}

// ----- the release rule -----------------------------------------------------

/// What a node does with a request for a dataset version's blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Release {
    /// Serve it.
    Serve,
    /// A by-request dataset and no grant: request access through the
    /// workflow.
    GrantRequired { workflow_id: String },
    /// Not served here: a citizen-consent dataset, or a node that is not
    /// the owner's.
    NotReleased(String),
}

/// Whether the node of `node_department` serves a version blob of the
/// dataset with `entry` to `department`, which holds `grant` or none.
/// Only the owner's node serves a dataset's blobs; the owner always gets
/// them; an open dataset goes to every member, a by-request one to
/// grantees, and a citizen-consent one only through the identity service.
pub fn blob_release(
    entry: &DatasetEntry,
    department: &str,
    node_department: &str,
    grant: Option<&DatasetGrant>,
) -> Release {
    let dataset = entry.entry.as_ref().map_or("", |e| e.dataset.as_str());
    if node_department != entry.owner {
        return Release::NotReleased(format!(
            "dataset {dataset:?} is served by its owner {:?}'s node, not by {node_department:?}'s",
            entry.owner
        ));
    }
    if department == entry.owner {
        return Release::Serve;
    }
    let policy = entry
        .entry
        .as_ref()
        .and_then(|e| DatasetAccessPolicy::try_from(e.access_policy).ok())
        .unwrap_or(DatasetAccessPolicy::Unspecified);
    match policy {
        DatasetAccessPolicy::Open => Release::Serve,
        DatasetAccessPolicy::ByRequest if grant.is_some() => Release::Serve,
        DatasetAccessPolicy::ByRequest => Release::GrantRequired {
            workflow_id: entry
                .entry
                .as_ref()
                .map(|e| e.workflow_id.clone())
                .unwrap_or_default(),
        },
        DatasetAccessPolicy::CitizenConsent | DatasetAccessPolicy::Unspecified => {
            Release::NotReleased(format!(
                "dataset {dataset:?} holds citizens' data: it is released only under a citizen's consent and a recorded access (IdentityService.ReadAttribute)"
            ))
        }
    }
}

/// Whether the node of `node_department` serves the schema blob of the
/// dataset with `entry`: a schema is catalogue metadata, like the entry,
/// so the owner's node serves it to every member.
pub fn schema_release(entry: &DatasetEntry, node_department: &str) -> Release {
    if node_department == entry.owner {
        return Release::Serve;
    }
    Release::NotReleased(format!(
        "a dataset's schema is served by its owner {:?}'s node, not by {node_department:?}'s",
        entry.owner
    ))
}

// ----- execution ------------------------------------------------------------

fn require_department<'d>(
    context: &Context<'d>,
    transaction: &VerifiedTransaction,
    action: &str,
) -> Result<&'d Department, Refusal> {
    context
        .departments
        .by_key(&transaction.signer)
        .ok_or_else(|| {
            Refusal::PermissionDenied(format!(
                "signer {} is not a department's signing key in force, so it may not {action}",
                transaction.signer
            ))
        })
}

/// The department that owns `dataset`, or would own it if `department`
/// published it now.
fn owner_of<S: StateRead>(
    state: &S,
    context: &Context<'_>,
    dataset: &str,
) -> Result<Option<String>, StateError> {
    if let Some(entry) = read_entry(state, dataset)? {
        return Ok(Some(entry.owner));
    }
    Ok(dataset_owner(context.departments, dataset).map(|d| d.name.clone()))
}

/// Refuses an `AnchorRecord` in a dataset that has a directory entry when
/// the signer is not the dataset's owner.
pub(crate) fn check_anchor<S: StateRead>(
    state: &S,
    signer_department: Option<&Department>,
    dataset: &str,
) -> Result<Result<(), Refusal>, StateError> {
    let Some(entry) = read_entry(state, dataset)? else {
        return Ok(Ok(()));
    };
    if signer_department.is_some_and(|d| d.name == entry.owner) {
        return Ok(Ok(()));
    }
    Ok(Err(Refusal::PermissionDenied(format!(
        "dataset {dataset:?} is in the directory, owned by department {:?}; only its signing key may anchor records in it",
        entry.owner
    ))))
}

fn append_name<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    count_key: Vec<u8>,
    entry_key: impl Fn(u64) -> Vec<u8>,
    name: &str,
) -> Result<(), StateError> {
    let sequence = read_u64(overlay, &count_key, "list count")?
        .checked_add(1)
        .expect("a list grows by one per transaction");
    overlay.put(count_key, sequence.to_be_bytes().to_vec());
    overlay.put(entry_key(sequence), name.as_bytes().to_vec());
    Ok(())
}

pub(crate) fn publish_entry<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    context: &Context<'_>,
    transaction: &VerifiedTransaction,
    body: &PublishDatasetEntry,
) -> Outcome {
    let department = refuse_unless!(require_department(
        context,
        transaction,
        "publish directory entries"
    ));
    if let Some(owner) = owner_of(overlay, context, &body.dataset)?
        && owner != department.name
    {
        return Ok(Err(Refusal::PermissionDenied(format!(
            "dataset {:?} is department {owner:?}'s; only its owner publishes its entry, and the signer is department {:?}",
            body.dataset, department.name
        ))));
    }
    if !body.workflow_id.is_empty() {
        refuse_unless!(check_workflow(
            overlay,
            &body.workflow_id,
            &department.name
        )?);
    }
    let previous = read_entry(overlay, &body.dataset)?;
    let entry_version = previous
        .as_ref()
        .map_or(1, |p| p.entry_version.saturating_add(1));
    let entry = DatasetEntry {
        entry: Some(body.clone()),
        owner: department.name.clone(),
        entry_version,
        published_height: context.height,
        published_ms: context.now_ms,
        transaction_id: transaction.id.to_vec(),
        created_height: previous.map_or(context.height, |p| p.created_height),
    };
    let encoded = entry.encode_to_vec();
    if !body.schema_cid.is_empty() {
        overlay.put(
            schema_dataset_key(&body.schema_cid),
            body.dataset.as_bytes().to_vec(),
        );
    }
    overlay.put(entry_key(&body.dataset), encoded.clone());
    overlay.put(entry_history_key(&body.dataset, entry_version), encoded);
    if entry_version == 1 {
        append_name(
            overlay,
            DATASET_COUNT_KEY.to_vec(),
            dataset_index_key,
            &body.dataset,
        )?;
    }
    Ok(Ok(()))
}

/// A by-request entry's workflow must exist and be its owner's.
fn check_workflow<S: StateRead>(
    state: &S,
    workflow_id: &str,
    owner: &str,
) -> Result<Result<(), Refusal>, StateError> {
    let version = approval::latest_version(state, workflow_id)?;
    let Some(definition) = approval::read_definition(state, workflow_id, version)? else {
        return Ok(Err(Refusal::NotFound(format!(
            "no workflow {workflow_id:?} on chain: define the workflow access requests go through first"
        ))));
    };
    if definition.owner != owner {
        return Ok(Err(Refusal::PermissionDenied(format!(
            "workflow {workflow_id:?} is department {:?}'s; a dataset's requests go through a workflow of the dataset's owner {owner:?}",
            definition.owner
        ))));
    }
    Ok(Ok(()))
}

fn require_entry<S: StateRead>(
    state: &S,
    dataset: &str,
) -> Result<Result<DatasetEntry, Refusal>, StateError> {
    Ok(read_entry(state, dataset)?.ok_or_else(|| {
        Refusal::NotFound(format!(
            "dataset {dataset:?} has no directory entry: its owner publishes one first (govchain directory publish)"
        ))
    }))
}

pub(crate) fn append_version<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    context: &Context<'_>,
    transaction: &VerifiedTransaction,
    body: &DatasetVersion,
) -> Outcome {
    let department = refuse_unless!(require_department(
        context,
        transaction,
        "append dataset versions"
    ));
    let entry = refuse_unless!(require_entry(overlay, &body.dataset)?);
    if entry.owner != department.name {
        return Ok(Err(Refusal::PermissionDenied(format!(
            "dataset {:?} is department {:?}'s; only its owner appends versions, and the signer is department {:?}",
            body.dataset, entry.owner, department.name
        ))));
    }
    if let Some(other) = blob_dataset(overlay, &body.batch_cid)?
        && other != body.dataset
    {
        return Ok(Err(Refusal::AlreadyExists(format!(
            "blob {} is already a version of dataset {other:?}; a batch belongs to one dataset",
            body.batch_cid
        ))));
    }
    let number = version_count(overlay, &body.dataset)?
        .checked_add(1)
        .expect("versions grow by one per transaction");
    let record = DatasetVersionRecord {
        version: Some(body.clone()),
        number,
        owner: entry.owner,
        height: context.height,
        recorded_ms: context.now_ms,
        transaction_id: transaction.id.to_vec(),
    };
    overlay.put(version_key(&body.dataset, number), record.encode_to_vec());
    overlay.put(
        version_count_key(&body.dataset),
        number.to_be_bytes().to_vec(),
    );
    overlay.put(
        blob_dataset_key(&body.batch_cid),
        body.dataset.as_bytes().to_vec(),
    );
    Ok(Ok(()))
}

pub(crate) fn request_access<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    context: &Context<'_>,
    transaction: &VerifiedTransaction,
    body: &RequestDatasetAccess,
) -> Outcome {
    let department = refuse_unless!(require_department(
        context,
        transaction,
        "request dataset access"
    ));
    let entry = refuse_unless!(require_entry(overlay, &body.dataset)?);
    let published = entry.entry.clone().unwrap_or_default();
    if published.access_policy != DatasetAccessPolicy::ByRequest as i32 {
        return Ok(Err(Refusal::FailedPrecondition(format!(
            "dataset {:?} is not by-request (its policy is {}); there is nothing to request",
            body.dataset,
            policy_name(published.access_policy)
        ))));
    }
    if entry.owner == department.name {
        return Ok(Err(Refusal::AlreadyExists(format!(
            "department {:?} owns dataset {:?} and always has access",
            department.name, body.dataset
        ))));
    }
    if let Some(grant) = read_grant(overlay, &body.dataset, &department.name)? {
        return Ok(Err(Refusal::AlreadyExists(format!(
            "department {:?} already has access to dataset {:?} (case {})",
            department.name,
            body.dataset,
            short(&grant.case_id)
        ))));
    }
    let workflow_version = approval::latest_version(overlay, &published.workflow_id)?;
    let open = OpenCase {
        workflow_id: published.workflow_id.clone(),
        workflow_version,
        documents: body.documents.clone(),
    };
    refuse_unless!(approval::open_case(overlay, context, transaction, &open)?);
    let request = DatasetAccessRequest {
        dataset: body.dataset.clone(),
        grantee: department.name.clone(),
        purpose: body.purpose.clone(),
        case_id: transaction.id.to_vec(),
    };
    overlay.put(
        request_key(transaction.id.as_bytes()),
        request.encode_to_vec(),
    );
    // A workflow of automatic steps only may approve the case as it opens,
    // before the request above existed for the hook to find.
    if let Some(case) = approval::read_case(overlay, &transaction.id)?
        && case.state == CaseState::Approved as i32
    {
        on_case_approved(overlay, context, &case)?;
    }
    Ok(Ok(()))
}

/// Called when a case becomes approved: records the grant when the case is
/// a dataset access request.
pub(crate) fn on_case_approved<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    context: &Context<'_>,
    case: &CaseRecord,
) -> Result<(), StateError> {
    let Some(request) = read_request(overlay, &case.case_id)? else {
        return Ok(());
    };
    let fresh = read_grant(overlay, &request.dataset, &request.grantee)?.is_none();
    let grant = DatasetGrant {
        dataset: request.dataset.clone(),
        grantee: request.grantee.clone(),
        case_id: case.case_id.clone(),
        purpose: request.purpose,
        granted_height: context.height,
        granted_ms: context.now_ms,
    };
    overlay.put(
        grant_key(&request.dataset, &request.grantee),
        grant.encode_to_vec(),
    );
    if fresh {
        let dataset = request.dataset.clone();
        append_name(
            overlay,
            grant_count_key(&dataset),
            |sequence| grant_index_key(&dataset, sequence),
            &request.grantee,
        )?;
    }
    Ok(())
}

/// The policy's name as the CLI spells it.
pub fn policy_name(policy: i32) -> &'static str {
    match DatasetAccessPolicy::try_from(policy) {
        Ok(DatasetAccessPolicy::Open) => "open",
        Ok(DatasetAccessPolicy::ByRequest) => "by-request",
        Ok(DatasetAccessPolicy::CitizenConsent) => "citizen-consent",
        _ => "unspecified",
    }
}

/// The sensitivity's name as the CLI spells it.
pub fn sensitivity_name(sensitivity: i32) -> &'static str {
    match DatasetSensitivity::try_from(sensitivity) {
        Ok(DatasetSensitivity::Public) => "public",
        Ok(DatasetSensitivity::Internal) => "internal",
        Ok(DatasetSensitivity::Restricted) => "restricted",
        Ok(DatasetSensitivity::Personal) => "personal",
        _ => "unspecified",
    }
}

fn short(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
