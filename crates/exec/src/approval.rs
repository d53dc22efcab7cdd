//! Cross-department approval workflows: officers, versioned workflow
//! definitions (a DAG of steps) and cases, with the state they keep and
//! the rules every node applies when executing them.
//!
//! **Invariant:** a step of a case is approved only with the approvals of
//! `approvals_required` distinct officers, each registered (and not
//! revoked, at the block's time) by the step's department with the step's
//! role, and named by the step when it names officers; every approval was
//! given while the step was ready (all its dependencies approved) and
//! before its deadline, on an open case. A closed case (approved or
//! rejected) never changes again.
//!
//! **Invariant:** definitions are checked when defined (1 to
//! [`STEPS_MAX`] steps, unique ids, known dependencies, no cycle, `M ≤ N`,
//! genesis departments), so a case never meets a step it cannot reach.
//!
//! **Invariant:** an automatic step (`STEP_KIND_AUTOMATIC`) is approved
//! only by its rule evaluating to true over the case ([`rule`]), in the
//! transaction whose commit made it so, or by one officer's signed
//! override; a false or failing rule leaves it ready for an officer. See
//! `approval/automatic.rs` for when rules are evaluated.
//!
//! Citizen attributes named by a step are declarative: a department reads
//! them only through a consent and a recorded access (`exec::identity`),
//! never through a case.
//!
//! State keys (names are length-prefixed and keys and ids fixed-length, so
//! no two keys collide; every list is a count and numbered entries, read by
//! page without scanning):
//! - `officer/<len><department><officer key>`: [`OfficerRecord`]
//! - `wf/<len><workflow id><u64 version>`: [`WorkflowDefinition`]
//! - `wf-latest/<workflow id>`: the latest version (u64)
//! - `case/<case id>`: [`CaseRecord`]
//! - `case-a-n/<applicant key>`, `case-a/<applicant key><u64 seq>`: the
//!   applicant's cases
//! - `case-d-n/<department>`, `case-d/<len><department><u64 seq>`: the
//!   cases a department has a step in or applied for
//! - `case-w-n/<workflow id>`, `case-w/<len><workflow id><u64 seq>`: the
//!   cases of a workflow, all versions

use std::collections::{BTreeMap, BTreeSet};

use govchain_crypto::{Digest, PublicKey};
use govchain_proto::types::v1::{
    ActOnCase, AmendCase, CaseAction, CaseDocument, CaseEvent, CaseRecord, CaseState, CaseStep,
    DefineWorkflow, OfficerRecord, OpenCase, RegisterOfficer, RevokeOfficer, StepApproval,
    StepKind, StepState, WorkflowDefinition, WorkflowStep,
};
use prost::Message;

use crate::execute::Overlay;
use crate::identity::{Context, Outcome, Refusal, read_identity, valid_attribute_name};
use crate::state::{StateError, StateRead, read_message, read_u64};
use crate::transaction::VerifiedTransaction;

mod automatic;
pub mod rule;

pub use automatic::rule_input;

/// Most steps in one definition.
pub const STEPS_MAX: usize = 32;
/// Most officers one step names (N), and most approvals it needs (M).
pub const STEP_OFFICERS_MAX: usize = 32;
/// Most documents, or document and attribute names, per case or step.
pub const DOCUMENTS_MAX: usize = 32;
/// Most events in one case's history: bounds the record, and so the
/// returns and amendments of one case.
pub const CASE_EVENTS_MAX: usize = 2048;
/// Longest title, reason or CID text.
pub const TEXT_BYTES_MAX: usize = 256;

// A case walked straight through (open, every approval, a reject) always
// fits: only returns and amendments can use up the history.
const _: () = assert!(1 + STEPS_MAX * STEP_OFFICERS_MAX + 1 < CASE_EVENTS_MAX);

// ----- stateless checks -----------------------------------------------------

/// Whether a workflow id, step id, role or document name is valid: the
/// charset of attribute names (1 to 64 lower-case letters, digits, `_`,
/// `-`).
pub fn valid_name(name: &str) -> bool {
    valid_attribute_name(name)
}

fn check_name(field: &str, name: &str) -> Result<(), String> {
    if valid_name(name) {
        return Ok(());
    }
    Err(format!(
        "{field} {name:?} is not a name: use 1 to 64 lower-case letters, digits, '_' or '-'"
    ))
}

fn check_text(field: &str, text: &str, required: bool) -> Result<(), String> {
    if required && text.trim().is_empty() {
        return Err(format!("{field} is empty"));
    }
    if text.len() > TEXT_BYTES_MAX {
        return Err(format!(
            "{field} is {} bytes, at most {TEXT_BYTES_MAX}",
            text.len()
        ));
    }
    Ok(())
}

fn check_key(field: &str, bytes: &[u8]) -> Result<(), String> {
    if bytes.len() == PublicKey::LEN {
        return Ok(());
    }
    Err(format!(
        "{field} must be {} bytes, got {}",
        PublicKey::LEN,
        bytes.len()
    ))
}

/// The stateless rule of `RegisterOfficer`.
pub fn validate_register_officer(body: &RegisterOfficer) -> Result<(), String> {
    check_key("register_officer.officer", &body.officer)?;
    check_name("register_officer.role", &body.role)
}

/// The stateless rule of `RevokeOfficer`.
pub fn validate_revoke_officer(body: &RevokeOfficer) -> Result<(), String> {
    check_key("revoke_officer.officer", &body.officer)?;
    check_text("revoke_officer.reason", &body.reason, false)
}

/// The stateless rule of a definition: names, bounds, `M ≤ N`, known
/// dependencies and no cycle. Returns the step indices in an order where
/// every step comes after its dependencies.
pub fn validate_definition(body: &DefineWorkflow) -> Result<Vec<usize>, String> {
    check_name("define_workflow.workflow_id", &body.workflow_id)?;
    check_text("define_workflow.title", &body.title, false)?;
    if body.steps.is_empty() || body.steps.len() > STEPS_MAX {
        return Err(format!(
            "a workflow has 1 to {STEPS_MAX} steps, got {}",
            body.steps.len()
        ));
    }
    let mut index = BTreeMap::new();
    for (position, step) in body.steps.iter().enumerate() {
        validate_step(step)?;
        if index.insert(step.step_id.as_str(), position).is_some() {
            return Err(format!("step {:?} is defined twice", step.step_id));
        }
    }
    let mut dependencies = Vec::with_capacity(body.steps.len());
    for step in &body.steps {
        let mut of_step = BTreeSet::new();
        for dependency in &step.depends_on {
            let Some(&position) = index.get(dependency.as_str()) else {
                return Err(format!(
                    "step {:?} depends on {dependency:?}, which is not a step of this workflow",
                    step.step_id
                ));
            };
            if !of_step.insert(position) {
                return Err(format!(
                    "step {:?} names dependency {dependency:?} twice",
                    step.step_id
                ));
            }
        }
        dependencies.push(of_step);
    }
    topological_order(body, &dependencies)
}

fn validate_step(step: &WorkflowStep) -> Result<(), String> {
    check_name("step_id", &step.step_id)?;
    let at = |field: &str| format!("step {:?}: {field}", step.step_id);
    check_name(&at("department"), &step.department)?;
    check_name(&at("role"), &step.role)?;
    match StepKind::try_from(step.kind) {
        Ok(StepKind::Officer) => {
            if !step.rule.is_empty() {
                return Err(format!(
                    "{} is set, but only STEP_KIND_AUTOMATIC (2) steps have a rule",
                    at("rule")
                ));
            }
        }
        Ok(StepKind::Automatic) => return validate_automatic_step(step),
        _ => {
            return Err(format!(
                "{} {} is not STEP_KIND_OFFICER (1) or STEP_KIND_AUTOMATIC (2)",
                at("kind"),
                step.kind
            ));
        }
    }
    if step.approvals_required == 0 {
        return Err(format!("{} must be at least 1", at("approvals_required")));
    }
    let required = usize::try_from(step.approvals_required).unwrap_or(usize::MAX);
    if required > STEP_OFFICERS_MAX {
        return Err(format!(
            "{} is {}, at most {STEP_OFFICERS_MAX}",
            at("approvals_required"),
            step.approvals_required
        ));
    }
    if step.officers.len() > STEP_OFFICERS_MAX {
        return Err(format!(
            "{} names {} officers, at most {STEP_OFFICERS_MAX}",
            at("officers"),
            step.officers.len()
        ));
    }
    let named: BTreeSet<&[u8]> = step.officers.iter().map(Vec::as_slice).collect();
    if named.len() != step.officers.len() {
        return Err(format!("{} names an officer twice", at("officers")));
    }
    for officer in &step.officers {
        check_key(&at("officers"), officer)?;
    }
    if !step.officers.is_empty() && required > step.officers.len() {
        return Err(format!(
            "{} needs {} approvals (M) but names only {} officers (N); M must be at most N",
            at("approvals_required"),
            step.approvals_required,
            step.officers.len()
        ));
    }
    check_lists(step)
}

/// An automatic step: a rule that checks, no M-of-N officers (its
/// department and role say who may override it), and the common lists.
fn validate_automatic_step(step: &WorkflowStep) -> Result<(), String> {
    let at = |field: &str| format!("step {:?}: {field}", step.step_id);
    if step.approvals_required != 0 || !step.officers.is_empty() {
        return Err(format!(
            "{} is automatic: its rule approves it, so approvals_required must be 0 and officers empty (got {} and {} keys); officers of its department and role may override it",
            at("kind"),
            step.approvals_required,
            step.officers.len()
        ));
    }
    rule::validate_rule(&step.rule).map_err(|why| format!("{}: {why}", at("rule")))?;
    check_lists(step)
}

fn check_lists(step: &WorkflowStep) -> Result<(), String> {
    let at = |field: &str| format!("step {:?}: {field}", step.step_id);
    for (field, names) in [
        ("documents", &step.documents),
        ("attributes", &step.attributes),
    ] {
        if names.len() > DOCUMENTS_MAX {
            return Err(format!("{} lists over {DOCUMENTS_MAX} names", at(field)));
        }
        for name in names {
            check_name(&at(field), name)?;
        }
    }
    Ok(())
}

/// Kahn's algorithm, taking the lowest ready index first, so the order is
/// a function of the definition alone.
fn topological_order(
    body: &DefineWorkflow,
    dependencies: &[BTreeSet<usize>],
) -> Result<Vec<usize>, String> {
    let mut waiting: Vec<usize> = dependencies.iter().map(BTreeSet::len).collect();
    let mut ready: BTreeSet<usize> = (0..waiting.len()).filter(|&i| waiting[i] == 0).collect();
    let mut order = Vec::with_capacity(waiting.len());
    while let Some(next) = ready.pop_first() {
        order.push(next);
        for (step, of_step) in dependencies.iter().enumerate() {
            if of_step.contains(&next) {
                waiting[step] -= 1;
                if waiting[step] == 0 {
                    ready.insert(step);
                }
            }
        }
    }
    if order.len() == dependencies.len() {
        return Ok(order);
    }
    let cycle: Vec<&str> = (0..waiting.len())
        .filter(|&i| waiting[i] > 0)
        .map(|i| body.steps[i].step_id.as_str())
        .collect();
    Err(format!(
        "the step dependencies form a cycle through {}",
        cycle.join(", ")
    ))
}

pub(crate) fn validate_documents(field: &str, documents: &[CaseDocument]) -> Result<(), String> {
    if documents.len() > DOCUMENTS_MAX {
        return Err(format!(
            "{field} lists {} documents, at most {DOCUMENTS_MAX}",
            documents.len()
        ));
    }
    let mut names = BTreeSet::new();
    for document in documents {
        check_name(field, &document.name)?;
        if !names.insert(document.name.as_str()) {
            return Err(format!("{field} names document {:?} twice", document.name));
        }
        if !valid_cid_text(&document.cid) {
            return Err(format!(
                "{field} {:?}: {:?} is not a base32 CIDv1 (like \"bafkrei...\")",
                document.name, document.cid
            ));
        }
    }
    Ok(())
}

pub(crate) fn valid_cid_text(cid: &str) -> bool {
    cid.len() > 8
        && cid.len() <= TEXT_BYTES_MAX
        && cid.starts_with('b')
        && cid
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
}

/// The stateless rule of `OpenCase`.
pub fn validate_open_case(body: &OpenCase) -> Result<(), String> {
    check_name("open_case.workflow_id", &body.workflow_id)?;
    if body.workflow_version == 0 {
        return Err("open_case.workflow_version must be at least 1".into());
    }
    validate_documents("open_case.documents", &body.documents)
}

/// The stateless rule of `ActOnCase`.
pub fn validate_act_on_case(body: &ActOnCase) -> Result<(), String> {
    check_case_id("act_on_case.case_id", &body.case_id)?;
    check_name("act_on_case.step_id", &body.step_id)?;
    let action = CaseAction::try_from(body.action).unwrap_or(CaseAction::Unspecified);
    match action {
        CaseAction::Unspecified => Err(format!(
            "act_on_case.action {} is not APPROVE (1), REJECT (2), RETURN (3), OVERRIDE_APPROVE (4), OVERRIDE_REJECT (5) or EVALUATE (6)",
            body.action
        )),
        CaseAction::Approve | CaseAction::Evaluate => {
            check_text("act_on_case.reason", &body.reason, false)
        }
        CaseAction::Reject
        | CaseAction::Return
        | CaseAction::OverrideApprove
        | CaseAction::OverrideReject => check_text("act_on_case.reason", &body.reason, true),
    }
}

/// The stateless rule of `AmendCase`.
pub fn validate_amend_case(body: &AmendCase) -> Result<(), String> {
    check_case_id("amend_case.case_id", &body.case_id)?;
    if body.documents.is_empty() {
        return Err(
            "amend_case.documents is empty: an amendment adds or replaces documents".into(),
        );
    }
    validate_documents("amend_case.documents", &body.documents)
}

fn check_case_id(field: &str, bytes: &[u8]) -> Result<(), String> {
    if bytes.len() == Digest::LEN {
        return Ok(());
    }
    Err(format!(
        "{field} must be {} bytes, got {}",
        Digest::LEN,
        bytes.len()
    ))
}

// ----- keys -----------------------------------------------------------------

fn name_part(name: &str) -> Vec<u8> {
    let len = u32::try_from(name.len()).expect("names are bounded");
    [&len.to_be_bytes()[..], name.as_bytes()].concat()
}

pub fn officer_key(department: &str, officer: &PublicKey) -> Vec<u8> {
    [
        b"officer/".as_slice(),
        &name_part(department),
        officer.as_bytes(),
    ]
    .concat()
}

pub fn definition_key(workflow_id: &str, version: u64) -> Vec<u8> {
    [
        b"wf/".as_slice(),
        &name_part(workflow_id),
        &version.to_be_bytes(),
    ]
    .concat()
}

fn latest_version_key(workflow_id: &str) -> Vec<u8> {
    [b"wf-latest/".as_slice(), workflow_id.as_bytes()].concat()
}

pub fn case_key(case_id: &Digest) -> Vec<u8> {
    [b"case/".as_slice(), case_id.as_bytes()].concat()
}

/// The case that first named document `cid` (its value: the case id):
/// only that case's rule releases the document (`documents`), so naming
/// another case's document (its CID is in the blocks) in a case of one's
/// own releases nothing.
pub fn case_document_key(cid: &str) -> Vec<u8> {
    [b"case-doc/".as_slice(), cid.as_bytes()].concat()
}

/// The case that first named document `cid`, if any.
pub fn document_case(state: &impl StateRead, cid: &str) -> Result<Option<Digest>, StateError> {
    match state.get(&case_document_key(cid))? {
        None => Ok(None),
        Some(bytes) => Digest::from_slice(&bytes)
            .map(Some)
            .map_err(|_| StateError::Corrupt {
                key: "case document".into(),
                reason: format!("{} bytes, expected 32", bytes.len()),
            }),
    }
}

/// Records `case_id` as the case of each of `documents` no case named
/// before.
fn claim_documents<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    case_id: &Digest,
    documents: &[CaseDocument],
) -> Result<(), StateError> {
    for document in documents {
        if document_case(overlay, &document.cid)?.is_none() {
            overlay.put(case_document_key(&document.cid), case_id.to_vec());
        }
    }
    Ok(())
}

/// One of the lists of cases kept at execution time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaseIndex {
    /// The cases an applicant (a citizen's or a department's key) opened.
    Applicant(PublicKey),
    /// The cases a department has a step in or applied for.
    Department(String),
    /// The cases of a workflow, every version.
    Workflow(String),
}

impl CaseIndex {
    fn count_key(&self) -> Vec<u8> {
        match self {
            CaseIndex::Applicant(key) => [b"case-a-n/".as_slice(), key.as_bytes()].concat(),
            CaseIndex::Department(name) => [b"case-d-n/".as_slice(), name.as_bytes()].concat(),
            CaseIndex::Workflow(id) => [b"case-w-n/".as_slice(), id.as_bytes()].concat(),
        }
    }

    fn entry_key(&self, sequence: u64) -> Vec<u8> {
        let (prefix, owner): (&[u8], Vec<u8>) = match self {
            CaseIndex::Applicant(key) => (b"case-a/", key.as_bytes().to_vec()),
            CaseIndex::Department(name) => (b"case-d/", name_part(name)),
            CaseIndex::Workflow(id) => (b"case-w/", name_part(id)),
        };
        [prefix, &owner, &sequence.to_be_bytes()].concat()
    }
}

// ----- reads ----------------------------------------------------------------

pub fn read_officer(
    state: &impl StateRead,
    department: &str,
    officer: &PublicKey,
) -> Result<Option<OfficerRecord>, StateError> {
    read_message(state, &officer_key(department, officer), "officer")
}

/// The latest version of a workflow; 0 if it was never defined.
pub fn latest_version(state: &impl StateRead, workflow_id: &str) -> Result<u64, StateError> {
    read_u64(state, &latest_version_key(workflow_id), "workflow version")
}

pub fn read_definition(
    state: &impl StateRead,
    workflow_id: &str,
    version: u64,
) -> Result<Option<WorkflowDefinition>, StateError> {
    read_message(state, &definition_key(workflow_id, version), "workflow")
}

pub fn read_case(
    state: &impl StateRead,
    case_id: &Digest,
) -> Result<Option<CaseRecord>, StateError> {
    read_message(state, &case_key(case_id), "case")
}

/// How many cases a list holds.
pub fn case_count(state: &impl StateRead, index: &CaseIndex) -> Result<u64, StateError> {
    read_u64(state, &index.count_key(), "case count")
}

/// At most `limit` cases of a list that `keep` accepts, oldest first, from
/// the one numbered `first` (from 1, in the order they were opened), and
/// the number the next page starts at, or `None` after the last. At most
/// `scanned_max` entries are read per page, so a filter that keeps few
/// cases returns a short page with a next number rather than reading the
/// whole list.
pub fn cases_page(
    state: &impl StateRead,
    index: &CaseIndex,
    first: u64,
    limit: usize,
    scanned_max: u64,
    keep: impl Fn(&CaseRecord) -> bool,
) -> Result<(Vec<CaseRecord>, Option<u64>), StateError> {
    let count = case_count(state, index)?;
    let mut cases = Vec::new();
    let mut sequence = first.max(1);
    let mut scanned = 0;
    while sequence <= count && cases.len() < limit && scanned < scanned_max {
        let id = state
            .get(&index.entry_key(sequence))?
            .ok_or_else(|| StateError::Corrupt {
                key: "case index".into(),
                reason: format!("entry {sequence} of {count} is missing"),
            })?;
        let id = Digest::from_slice(&id).map_err(|err| StateError::Corrupt {
            key: "case index".into(),
            reason: err.to_string(),
        })?;
        let case = read_case(state, &id)?.ok_or_else(|| StateError::Corrupt {
            key: "case index".into(),
            reason: format!("case {} is listed but not stored", id.short()),
        })?;
        if keep(&case) {
            cases.push(case);
        }
        sequence += 1;
        scanned += 1;
    }
    Ok((cases, (sequence <= count).then_some(sequence)))
}

/// Whether a department sees a case: it applied for it or has a step in it.
pub fn case_visible_to(case: &CaseRecord, department: &str) -> bool {
    case.applicant_department == department || case.departments.iter().any(|d| d == department)
}

/// Whether a case is open with a ready step of `department`: the case
/// waits for that department.
pub fn case_waits_for(case: &CaseRecord, department: &str) -> bool {
    case.state == CaseState::Open as i32
        && case
            .steps
            .iter()
            .any(|step| step.state == StepState::Ready as i32 && step.department == department)
}

// ----- execution ------------------------------------------------------------

fn require_department<'d>(
    context: &Context<'d>,
    signer: &PublicKey,
    action: &str,
) -> Result<&'d crate::identity::Department, Refusal> {
    context.departments.by_key(signer).ok_or_else(|| {
        Refusal::PermissionDenied(format!(
            "signer {signer} is not a department's signing key in force, so it may not {action}"
        ))
    })
}

fn public_key(bytes: &[u8]) -> Result<PublicKey, Refusal> {
    // The body was validated at admission; kept a refusal, not a panic.
    PublicKey::from_slice(bytes).map_err(|err| Refusal::FailedPrecondition(format!("key: {err}")))
}

fn case_id(bytes: &[u8]) -> Result<Digest, Refusal> {
    Digest::from_slice(bytes).map_err(|err| Refusal::FailedPrecondition(format!("case id: {err}")))
}

pub(crate) fn register_officer<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    context: &Context<'_>,
    transaction: &VerifiedTransaction,
    body: &RegisterOfficer,
) -> Outcome {
    let department = refuse_unless!(require_department(
        context,
        &transaction.signer,
        "register officers"
    ));
    let officer = refuse_unless!(public_key(&body.officer));
    if let Some(existing) = read_officer(overlay, &department.name, &officer)?
        && !existing.revoked
    {
        return Ok(Err(Refusal::AlreadyExists(format!(
            "officer {officer} is already registered in department {:?} with role {:?}; revoke it first to change the role",
            department.name, existing.role
        ))));
    }
    let record = OfficerRecord {
        officer: body.officer.clone(),
        department: department.name.clone(),
        role: body.role.clone(),
        registered_ms: context.now_ms,
        registered_height: context.height,
        revoked: false,
        revoked_ms: 0,
        revocation_reason: String::new(),
        transaction_id: transaction.id.to_vec(),
    };
    overlay.put(
        officer_key(&department.name, &officer),
        record.encode_to_vec(),
    );
    Ok(Ok(()))
}

pub(crate) fn revoke_officer<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    context: &Context<'_>,
    transaction: &VerifiedTransaction,
    body: &RevokeOfficer,
) -> Outcome {
    let department = refuse_unless!(require_department(
        context,
        &transaction.signer,
        "revoke officers"
    ));
    let officer = refuse_unless!(public_key(&body.officer));
    let Some(mut record) = read_officer(overlay, &department.name, &officer)? else {
        return Ok(Err(Refusal::NotFound(format!(
            "officer {officer} is not registered in department {:?}",
            department.name
        ))));
    };
    if record.revoked {
        return Ok(Err(Refusal::FailedPrecondition(format!(
            "officer {officer} of department {:?} was already revoked at {} ms",
            department.name, record.revoked_ms
        ))));
    }
    record.revoked = true;
    record.revoked_ms = context.now_ms;
    record.revocation_reason = body.reason.clone();
    overlay.put(
        officer_key(&department.name, &officer),
        record.encode_to_vec(),
    );
    Ok(Ok(()))
}

pub(crate) fn define_workflow<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    context: &Context<'_>,
    transaction: &VerifiedTransaction,
    body: &DefineWorkflow,
) -> Outcome {
    let owner = refuse_unless!(require_department(
        context,
        &transaction.signer,
        "define workflows"
    ));
    for step in &body.steps {
        if context.departments.by_name(&step.department).is_none() {
            return Ok(Err(Refusal::NotFound(format!(
                "step {:?} names department {:?}, which is not a department",
                step.step_id, step.department
            ))));
        }
    }
    let latest = latest_version(overlay, &body.workflow_id)?;
    if let Some(previous) = read_definition(overlay, &body.workflow_id, latest)?
        && previous.owner != owner.name
    {
        return Ok(Err(Refusal::PermissionDenied(format!(
            "workflow {:?} is owned by department {:?}; only it may define new versions, and the signer is {:?}",
            body.workflow_id, previous.owner, owner.name
        ))));
    }
    let version = latest
        .checked_add(1)
        .expect("versions are bounded by blocks");
    let definition = WorkflowDefinition {
        workflow_id: body.workflow_id.clone(),
        version,
        owner: owner.name.clone(),
        title: body.title.clone(),
        steps: body.steps.clone(),
        defined_ms: context.now_ms,
        defined_height: context.height,
        transaction_id: transaction.id.to_vec(),
    };
    overlay.put(
        definition_key(&body.workflow_id, version),
        definition.encode_to_vec(),
    );
    overlay.put(
        latest_version_key(&body.workflow_id),
        version.to_be_bytes().to_vec(),
    );
    Ok(Ok(()))
}

fn require_definition<S: StateRead>(
    state: &S,
    workflow_id: &str,
    version: u64,
) -> Result<Result<WorkflowDefinition, Refusal>, StateError> {
    Ok(
        read_definition(state, workflow_id, version)?.ok_or_else(|| {
            Refusal::NotFound(format!("workflow {workflow_id:?} has no version {version}"))
        }),
    )
}

/// The deadline of a step that became ready at `ready_ms`; 0 for none.
fn step_deadline(step: &WorkflowStep, ready_ms: u64) -> u64 {
    if step.deadline_ms == 0 {
        return 0;
    }
    ready_ms.saturating_add(step.deadline_ms)
}

fn event(
    kind: &str,
    step_id: &str,
    department: &str,
    reason: &str,
    context: &Context<'_>,
    transaction: &VerifiedTransaction,
) -> CaseEvent {
    CaseEvent {
        kind: kind.into(),
        step_id: step_id.into(),
        signer: transaction.signer.as_bytes().to_vec(),
        department: department.into(),
        reason: reason.into(),
        at_ms: context.now_ms,
        height: context.height,
        transaction_id: transaction.id.to_vec(),
    }
}

pub(crate) fn open_case<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    context: &Context<'_>,
    transaction: &VerifiedTransaction,
    body: &OpenCase,
) -> Outcome {
    let applicant = &transaction.signer;
    let applicant_department = context
        .departments
        .by_key(applicant)
        .map(|d| d.name.clone());
    if applicant_department.is_none() && read_identity(overlay, applicant)?.is_none() {
        return Ok(Err(Refusal::NotFound(format!(
            "no identity {} on chain: a citizen creates an identity before opening a case",
            applicant.to_did_key()
        ))));
    }
    let definition = refuse_unless!(require_definition(
        overlay,
        &body.workflow_id,
        body.workflow_version
    )?);
    let departments: BTreeSet<String> = definition
        .steps
        .iter()
        .map(|step| step.department.clone())
        .collect();
    let steps = definition
        .steps
        .iter()
        .map(|step| initial_step(step, context.now_ms))
        .collect();
    let applicant_department = applicant_department.unwrap_or_default();
    let case = CaseRecord {
        case_id: transaction.id.to_vec(),
        workflow_id: body.workflow_id.clone(),
        workflow_version: body.workflow_version,
        applicant: applicant.as_bytes().to_vec(),
        applicant_department: applicant_department.clone(),
        documents: body.documents.clone(),
        state: CaseState::Open.into(),
        steps,
        reason: String::new(),
        opened_ms: context.now_ms,
        opened_height: context.height,
        updated_ms: context.now_ms,
        events: vec![event("open", "", "", "", context, transaction)],
        departments: departments.iter().cloned().collect(),
    };
    let mut case = case;
    automatic::settle(overlay, context, transaction, &mut case, &definition)?;
    claim_documents(overlay, &transaction.id, &case.documents)?;
    store_case(overlay, context, &transaction.id, &case)?;
    let mut indexes = vec![
        CaseIndex::Applicant(*applicant),
        CaseIndex::Workflow(body.workflow_id.clone()),
    ];
    let mut listed = departments;
    if !applicant_department.is_empty() {
        listed.insert(applicant_department);
    }
    indexes.extend(listed.into_iter().map(CaseIndex::Department));
    for index in &indexes {
        append_to_index(overlay, index, &transaction.id)?;
    }
    Ok(Ok(()))
}

fn initial_step(step: &WorkflowStep, now_ms: u64) -> CaseStep {
    let ready = step.depends_on.is_empty();
    CaseStep {
        step_id: step.step_id.clone(),
        state: if ready {
            StepState::Ready.into()
        } else {
            StepState::Blocked.into()
        },
        ready_ms: if ready { now_ms } else { 0 },
        deadline_ms: if ready {
            step_deadline(step, now_ms)
        } else {
            0
        },
        approvals: Vec::new(),
        approved_ms: 0,
        department: step.department.clone(),
        role: step.role.clone(),
        rule_outcome: String::new(),
        evaluated_height: 0,
    }
}

fn append_to_index<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    index: &CaseIndex,
    case_id: &Digest,
) -> Result<(), StateError> {
    let sequence = case_count(overlay, index)?
        .checked_add(1)
        .expect("a list grows by one per transaction");
    overlay.put(index.count_key(), sequence.to_be_bytes().to_vec());
    overlay.put(index.entry_key(sequence), case_id.to_vec());
    Ok(())
}

/// A case that exists and is open (officers may act), or why not.
fn require_open_case<S: StateRead>(
    state: &S,
    case_id: &Digest,
) -> Result<Result<CaseRecord, Refusal>, StateError> {
    let Some(case) = read_case(state, case_id)? else {
        return Ok(Err(Refusal::NotFound(format!(
            "no case {}",
            case_id.to_hex()
        ))));
    };
    Ok(match CaseState::try_from(case.state) {
        Ok(CaseState::Open) => Ok(case),
        Ok(CaseState::Returned) => Err(Refusal::FailedPrecondition(format!(
            "case {} was returned to the applicant ({}); officers act again once the applicant amends it",
            case_id.short(),
            case.reason
        ))),
        Ok(CaseState::Approved) => Err(closed(case_id, "approved")),
        Ok(CaseState::Rejected) => Err(closed(case_id, "rejected")),
        _ => Err(Refusal::FailedPrecondition(format!(
            "case {} is in unknown state {}",
            case_id.short(),
            case.state
        ))),
    })
}

fn closed(case_id: &Digest, how: &str) -> Refusal {
    Refusal::FailedPrecondition(format!(
        "case {} is closed ({how}); no further action is possible",
        case_id.short()
    ))
}

/// Whether `officer` may sign `step` now: registered by the step's
/// department, not revoked, with the step's role, and named by the step
/// if it names officers.
pub fn check_officer(
    state: &impl StateRead,
    step: &WorkflowStep,
    officer: &PublicKey,
) -> Result<Result<OfficerRecord, Refusal>, StateError> {
    let Some(record) = read_officer(state, &step.department, officer)? else {
        return Ok(Err(Refusal::PermissionDenied(format!(
            "signer {officer} is not a registered officer of department {:?}, which signs step {:?}",
            step.department, step.step_id
        ))));
    };
    if record.revoked {
        return Ok(Err(Refusal::PermissionDenied(format!(
            "officer {officer} of department {:?} was revoked at {} ms ({}); its signature no longer counts",
            step.department, record.revoked_ms, record.revocation_reason
        ))));
    }
    if record.role != step.role {
        return Ok(Err(Refusal::PermissionDenied(format!(
            "officer {officer} of department {:?} has role {:?}, but step {:?} needs role {:?}",
            step.department, record.role, step.step_id, step.role
        ))));
    }
    if !step.officers.is_empty() && !step.officers.iter().any(|k| k == officer.as_bytes()) {
        return Ok(Err(Refusal::PermissionDenied(format!(
            "officer {officer} is not one of the {} officers step {:?} names",
            step.officers.len(),
            step.step_id
        ))));
    }
    Ok(Ok(record))
}

/// Whether a step of an open case takes an action now: it is ready, not
/// yet approved, and its deadline has not passed.
fn check_step_actionable(
    step: &CaseStep,
    defined: &WorkflowStep,
    case: &CaseRecord,
    now_ms: u64,
) -> Result<(), Refusal> {
    match StepState::try_from(step.state) {
        Ok(StepState::Ready) => {}
        Ok(StepState::Approved) => {
            return Err(Refusal::FailedPrecondition(format!(
                "step {:?} of case {} is already approved",
                step.step_id,
                short(&case.case_id)
            )));
        }
        _ => {
            let waiting = waiting_on(defined, case);
            return Err(Refusal::FailedPrecondition(format!(
                "step {:?} of case {} is not ready: it waits for {}",
                step.step_id,
                short(&case.case_id),
                waiting.join(", ")
            )));
        }
    }
    if step.deadline_ms != 0 && now_ms > step.deadline_ms {
        return Err(Refusal::FailedPrecondition(format!(
            "step {:?} of case {} passed its deadline at {} ms (now {now_ms} ms)",
            step.step_id,
            short(&case.case_id),
            step.deadline_ms
        )));
    }
    Ok(())
}

fn waiting_on<'a>(defined: &'a WorkflowStep, case: &CaseRecord) -> Vec<&'a str> {
    defined
        .depends_on
        .iter()
        .filter(|dependency| {
            case.steps
                .iter()
                .any(|s| &s.step_id == *dependency && s.state != StepState::Approved as i32)
        })
        .map(String::as_str)
        .collect()
}

fn short(case_id: &[u8]) -> String {
    Digest::from_slice(case_id).map_or_else(|_| "?".into(), |id| id.short())
}

fn events_room(case: &CaseRecord) -> Result<(), Refusal> {
    if case.events.len() < CASE_EVENTS_MAX {
        return Ok(());
    }
    Err(Refusal::FailedPrecondition(format!(
        "case {} has {CASE_EVENTS_MAX} events, the most one case keeps; open a new case",
        short(&case.case_id)
    )))
}

pub(crate) fn act_on_case<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    context: &Context<'_>,
    transaction: &VerifiedTransaction,
    body: &ActOnCase,
) -> Outcome {
    let id = refuse_unless!(case_id(&body.case_id));
    let mut case = refuse_unless!(require_open_case(overlay, &id)?);
    let definition = refuse_unless!(require_definition(
        overlay,
        &case.workflow_id,
        case.workflow_version
    )?);
    // A case's steps are its definition's, in order, from `open_case`;
    // otherwise state is corrupt, and crashing beats diverging.
    assert_eq!(case.steps.len(), definition.steps.len());
    let Some(position) = definition
        .steps
        .iter()
        .position(|step| step.step_id == body.step_id)
    else {
        return Ok(Err(Refusal::NotFound(format!(
            "workflow {:?} version {} has no step {:?}",
            case.workflow_id, case.workflow_version, body.step_id
        ))));
    };
    let defined = &definition.steps[position];
    let action = CaseAction::try_from(body.action).unwrap_or(CaseAction::Unspecified);
    refuse_unless!(automatic::check_action_fits_step(defined, action, &case));
    if action == CaseAction::Evaluate {
        refuse_unless!(automatic::check_on_case(
            overlay,
            context.departments,
            &case,
            &transaction.signer
        )?);
        refuse_unless!(check_step_actionable(
            &case.steps[position],
            defined,
            &case,
            context.now_ms
        ));
        automatic::settle(overlay, context, transaction, &mut case, &definition)?;
        case.updated_ms = context.now_ms;
        store_case(overlay, context, &id, &case)?;
        return Ok(Ok(()));
    }
    let officer = refuse_unless!(check_officer(overlay, defined, &transaction.signer)?);
    refuse_unless!(check_step_actionable(
        &case.steps[position],
        defined,
        &case,
        context.now_ms
    ));
    refuse_unless!(events_room(&case));
    let kind = refuse_unless!(apply_action(
        &mut case,
        &definition,
        position,
        body,
        context,
        transaction
    ));
    case.events.push(event(
        kind,
        &body.step_id,
        &officer.department,
        &body.reason,
        context,
        transaction,
    ));
    automatic::settle(overlay, context, transaction, &mut case, &definition)?;
    case.updated_ms = context.now_ms;
    store_case(overlay, context, &id, &case)?;
    Ok(Ok(()))
}

/// Writes `case`, and, when it is approved (a closed case takes no further
/// action, so this is the transaction that approved it, by an officer, a
/// rule or an override), calls the one hook of the data directory: an
/// approved access request becomes a grant in the same transaction.
fn store_case<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    context: &Context<'_>,
    id: &Digest,
    case: &CaseRecord,
) -> Result<(), StateError> {
    overlay.put(case_key(id), case.encode_to_vec());
    if case.state == CaseState::Approved as i32 {
        crate::directory::on_case_approved(overlay, context, case)?;
    }
    Ok(())
}

/// Applies an officer's checked action to the case; returns the event's
/// kind.
fn apply_action(
    case: &mut CaseRecord,
    definition: &WorkflowDefinition,
    position: usize,
    body: &ActOnCase,
    context: &Context<'_>,
    transaction: &VerifiedTransaction,
) -> Result<&'static str, Refusal> {
    match CaseAction::try_from(body.action).unwrap_or(CaseAction::Unspecified) {
        CaseAction::Approve => {
            approve(case, definition, position, context, transaction)?;
            Ok("approve")
        }
        CaseAction::Reject => {
            close_or_return(case, CaseState::Rejected, &body.reason);
            Ok("reject")
        }
        CaseAction::Return => {
            close_or_return(case, CaseState::Returned, &body.reason);
            Ok("return")
        }
        CaseAction::OverrideApprove => {
            complete_step(case, definition, position, context.now_ms);
            Ok("override-approve")
        }
        CaseAction::OverrideReject => {
            close_or_return(case, CaseState::Rejected, &body.reason);
            Ok("override-reject")
        }
        CaseAction::Unspecified | CaseAction::Evaluate => Err(Refusal::FailedPrecondition(
            format!("unknown case action {}", body.action),
        )),
    }
}

fn close_or_return(case: &mut CaseRecord, state: CaseState, reason: &str) {
    case.state = state.into();
    case.reason = reason.to_owned();
}

/// Counts one approval of the ready step at `position`; with M approvals
/// the step is approved, the steps that waited only for it become ready,
/// and with every step approved the case is.
fn approve(
    case: &mut CaseRecord,
    definition: &WorkflowDefinition,
    position: usize,
    context: &Context<'_>,
    transaction: &VerifiedTransaction,
) -> Result<(), Refusal> {
    let officer = transaction.signer.as_bytes();
    let step = &mut case.steps[position];
    if step.approvals.iter().any(|a| a.officer == officer) {
        return Err(Refusal::AlreadyExists(format!(
            "officer {} already approved step {:?} of case {}; M approvals must come from distinct officers",
            transaction.signer,
            step.step_id,
            short(&case.case_id)
        )));
    }
    step.approvals.push(StepApproval {
        officer: officer.to_vec(),
        approved_ms: context.now_ms,
        transaction_id: transaction.id.to_vec(),
    });
    let required =
        usize::try_from(definition.steps[position].approvals_required).unwrap_or(usize::MAX);
    if step.approvals.len() < required {
        return Ok(());
    }
    complete_step(case, definition, position, context.now_ms);
    Ok(())
}

/// Marks the step at `position` approved; the steps that waited only for
/// it become ready, and with every step approved the case is.
fn complete_step(
    case: &mut CaseRecord,
    definition: &WorkflowDefinition,
    position: usize,
    now_ms: u64,
) {
    let step = &mut case.steps[position];
    step.state = StepState::Approved.into();
    step.approved_ms = now_ms;
    release_ready_steps(case, definition, now_ms);
    if case
        .steps
        .iter()
        .all(|s| s.state == StepState::Approved as i32)
    {
        case.state = CaseState::Approved.into();
    }
}

/// Makes ready every blocked step whose dependencies are all approved.
fn release_ready_steps(case: &mut CaseRecord, definition: &WorkflowDefinition, now_ms: u64) {
    let approved: BTreeSet<String> = case
        .steps
        .iter()
        .filter(|s| s.state == StepState::Approved as i32)
        .map(|s| s.step_id.clone())
        .collect();
    for (step, defined) in case.steps.iter_mut().zip(&definition.steps) {
        if step.state == StepState::Blocked as i32
            && defined.depends_on.iter().all(|d| approved.contains(d))
        {
            step.state = StepState::Ready.into();
            step.ready_ms = now_ms;
            step.deadline_ms = step_deadline(defined, now_ms);
        }
    }
}

/// Whether `signer` is the case's applicant: the key that opened it, or,
/// for a department's case, the department's signing key in force (it may
/// have changed its key since).
pub(crate) fn is_applicant(
    case: &CaseRecord,
    departments: &crate::Departments,
    signer: &PublicKey,
) -> bool {
    case.applicant == signer.as_bytes()
        || (!case.applicant_department.is_empty()
            && departments
                .by_key(signer)
                .is_some_and(|d| d.name == case.applicant_department))
}

pub(crate) fn amend_case<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    context: &Context<'_>,
    transaction: &VerifiedTransaction,
    body: &AmendCase,
) -> Outcome {
    let id = refuse_unless!(case_id(&body.case_id));
    let Some(mut case) = read_case(overlay, &id)? else {
        return Ok(Err(Refusal::NotFound(format!("no case {}", id.to_hex()))));
    };
    if !is_applicant(&case, context.departments, &transaction.signer) {
        return Ok(Err(Refusal::PermissionDenied(format!(
            "only the applicant may amend case {}, and the signer {} is not",
            id.short(),
            transaction.signer
        ))));
    }
    if case.state != CaseState::Returned as i32 {
        return Ok(Err(Refusal::FailedPrecondition(format!(
            "case {} is {}, not returned: only a returned case is amended",
            id.short(),
            state_name(case.state)
        ))));
    }
    refuse_unless!(events_room(&case));
    refuse_unless!(merge_documents(&mut case, &body.documents));
    let definition = refuse_unless!(require_definition(
        overlay,
        &case.workflow_id,
        case.workflow_version
    )?);
    for (step, defined) in case.steps.iter_mut().zip(&definition.steps) {
        if step.state == StepState::Ready as i32 {
            step.approvals.clear();
            step.ready_ms = context.now_ms;
            step.deadline_ms = step_deadline(defined, context.now_ms);
        }
    }
    case.state = CaseState::Open.into();
    case.events
        .push(event("amend", "", "", "", context, transaction));
    automatic::settle(overlay, context, transaction, &mut case, &definition)?;
    case.updated_ms = context.now_ms;
    claim_documents(overlay, &id, &body.documents)?;
    store_case(overlay, context, &id, &case)?;
    Ok(Ok(()))
}

fn merge_documents(case: &mut CaseRecord, documents: &[CaseDocument]) -> Result<(), Refusal> {
    for document in documents {
        match case.documents.iter_mut().find(|d| d.name == document.name) {
            Some(existing) => existing.cid = document.cid.clone(),
            None => case.documents.push(document.clone()),
        }
    }
    if case.documents.len() > DOCUMENTS_MAX {
        return Err(Refusal::FailedPrecondition(format!(
            "the amended case would hold {} documents, at most {DOCUMENTS_MAX}",
            case.documents.len()
        )));
    }
    Ok(())
}

/// The lower-case name of a case state, as the CLI prints it.
pub fn state_name(state: i32) -> &'static str {
    match CaseState::try_from(state) {
        Ok(CaseState::Open) => "open",
        Ok(CaseState::Returned) => "returned",
        Ok(CaseState::Rejected) => "rejected",
        Ok(CaseState::Approved) => "approved",
        _ => "unspecified",
    }
}

/// The lower-case name of a step state, as the CLI prints it.
pub fn step_state_name(state: i32) -> &'static str {
    match StepState::try_from(state) {
        Ok(StepState::Blocked) => "blocked",
        Ok(StepState::Ready) => "ready",
        Ok(StepState::Approved) => "approved",
        _ => "unspecified",
    }
}

pub mod documents;

#[cfg(test)]
mod tests;
