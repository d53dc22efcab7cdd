//! When automatic steps are decided.
//!
//! Every case transaction that commits (`OpenCase`, `ActOnCase`,
//! `AmendCase`) ends by [`settle`]: each ready automatic step of the case,
//! before its deadline, has its rule evaluated over the case as it then
//! stands; true approves the step (a "auto-approve" event), which may make
//! further steps ready, so settling repeats, at most once per step. False
//! or an error is recorded on the step (`rule_outcome`) and leaves it for
//! a later transaction of the case or an officer's override.
//!
//! An attestation of the applicant's attribute does not settle the
//! applicant's cases: that would mean reading every case of the applicant
//! in the attestation's transaction. Instead anyone on the case (the
//! applicant or an officer of one of its departments) may sign
//! `CASE_ACTION_EVALUATE` to have the case's rules evaluated again.

use std::collections::BTreeMap;

use govchain_crypto::PublicKey;
use govchain_proto::types::v1::{
    CaseAction, CaseRecord, CaseState, StepKind, StepState, WorkflowDefinition, WorkflowStep,
};

use super::rule::{self, RuleInput};
use super::{CASE_EVENTS_MAX, STEPS_MAX, complete_step, event, read_officer, step_state_name};
use crate::identity::{
    Context, Departments, Refusal, attestation_valid, attribute_names, current_attestations,
    read_attribute,
};
use crate::state::{StateError, StateRead};
use crate::transaction::VerifiedTransaction;

fn is_automatic(step: &WorkflowStep) -> bool {
    step.kind == StepKind::Automatic as i32
}

/// Whether `action` applies to a step of this kind: officers approve,
/// reject and return officer steps; they override automatic steps, which
/// anyone on the case may also have evaluated again.
pub(super) fn check_action_fits_step(
    defined: &WorkflowStep,
    action: CaseAction,
    case: &CaseRecord,
) -> Result<(), Refusal> {
    let automatic_only = matches!(
        action,
        CaseAction::OverrideApprove | CaseAction::OverrideReject | CaseAction::Evaluate
    );
    if is_automatic(defined) && !automatic_only {
        return Err(Refusal::FailedPrecondition(format!(
            "step {:?} of case {} is automatic: its rule decides it; an officer of department {:?} settles it with an override (CASE_ACTION_OVERRIDE_APPROVE or _REJECT, with a reason)",
            defined.step_id,
            super::short(&case.case_id),
            defined.department
        )));
    }
    if !is_automatic(defined) && automatic_only {
        return Err(Refusal::FailedPrecondition(format!(
            "step {:?} of case {} is signed by officers, not automatic: override and evaluate apply only to automatic steps",
            defined.step_id,
            super::short(&case.case_id)
        )));
    }
    Ok(())
}

/// Whether `signer` is on the case: its applicant, or a registered, not
/// revoked officer of one of its departments.
pub(super) fn check_on_case(
    state: &impl StateRead,
    departments: &Departments,
    case: &CaseRecord,
    signer: &PublicKey,
) -> Result<Result<(), Refusal>, StateError> {
    if super::is_applicant(case, departments, signer) {
        return Ok(Ok(()));
    }
    for department in &case.departments {
        if let Some(officer) = read_officer(state, department, signer)?
            && !officer.revoked
        {
            return Ok(Ok(()));
        }
    }
    Ok(Err(Refusal::PermissionDenied(format!(
        "signer {signer} is neither the applicant of case {} nor a registered officer of its departments ({})",
        super::short(&case.case_id),
        case.departments.join(", ")
    ))))
}

/// What a rule sees of `case` at `now_ms`: the applicant's attested
/// attributes (current value, attestation valid now), the steps' states,
/// the document names and the workflow.
pub fn rule_input(
    state: &impl StateRead,
    departments: &Departments,
    case: &CaseRecord,
    now_ms: u64,
) -> Result<RuleInput, StateError> {
    let mut attested = BTreeMap::new();
    if case.applicant_department.is_empty()
        && let Ok(citizen) = PublicKey::from_slice(&case.applicant)
    {
        for name in attribute_names(state, &citizen)? {
            let Some(attribute) = read_attribute(state, &citizen, &name)? else {
                continue;
            };
            let mut by: Vec<String> =
                current_attestations(state, departments, &attribute, &citizen)?
                    .into_iter()
                    .filter(|record| attestation_valid(record, now_ms))
                    .map(|record| record.department)
                    .collect();
            by.sort();
            attested.insert(name, by);
        }
    }
    Ok(RuleInput {
        attested,
        applicant_department: case.applicant_department.clone(),
        steps: case
            .steps
            .iter()
            .map(|s| (s.step_id.clone(), step_state_name(s.state).to_owned()))
            .collect(),
        documents: case.documents.iter().map(|d| d.name.clone()).collect(),
        workflow_id: case.workflow_id.clone(),
        workflow_version: case.workflow_version,
    })
}

/// Evaluates the ready automatic steps of an open case and approves those
/// whose rule is true, repeating while approvals make more steps ready.
pub(super) fn settle(
    state: &impl StateRead,
    context: &Context<'_>,
    transaction: &VerifiedTransaction,
    case: &mut CaseRecord,
    definition: &WorkflowDefinition,
) -> Result<(), StateError> {
    // Each round but the last approves at least one step.
    for _ in 0..=STEPS_MAX {
        if case.state != CaseState::Open as i32 {
            return Ok(());
        }
        let input = rule_input(state, context.departments, case, context.now_ms)?;
        let approved = evaluate_ready_steps(case, definition, &input, context, transaction);
        if approved.is_empty() {
            return Ok(());
        }
        for position in approved {
            complete_step(case, definition, position, context.now_ms);
        }
    }
    Ok(())
}

/// Records each ready automatic step's outcome; returns the positions of
/// those whose rule is true (and whose approval the history has room for).
fn evaluate_ready_steps(
    case: &mut CaseRecord,
    definition: &WorkflowDefinition,
    input: &RuleInput,
    context: &Context<'_>,
    transaction: &VerifiedTransaction,
) -> Vec<usize> {
    let mut approved = Vec::new();
    for (position, defined) in definition.steps.iter().enumerate() {
        let step = &case.steps[position];
        let past_deadline = step.deadline_ms != 0 && context.now_ms > step.deadline_ms;
        if !is_automatic(defined) || step.state != StepState::Ready as i32 || past_deadline {
            continue;
        }
        let mut outcome = rule::evaluate(&defined.rule, input);
        if outcome == Ok(true) && case.events.len() >= CASE_EVENTS_MAX {
            outcome = Err(format!(
                "the case has {CASE_EVENTS_MAX} events, the most one case keeps"
            ));
        }
        let text = rule::outcome_text(&outcome);
        if outcome == Ok(true) {
            case.events.push(event(
                "auto-approve",
                &defined.step_id,
                &defined.department,
                "rule: true",
                context,
                transaction,
            ));
            approved.push(position);
        }
        let step = &mut case.steps[position];
        step.rule_outcome = text;
        step.evaluated_height = context.height;
    }
    approved
}
