//! Automatic steps: rules checked at definition, evaluated when a case's
//! transaction commits, and officers' overrides.

use govchain_proto::types::v1::{AttestAttribute, DeclareAttribute};

use super::*;
use crate::approval::rule::{RuleInput, evaluate, validate_rule};
use crate::identity::{attribute_commitment, blob_receipt_digest};

const ELIGIBLE: &str = r#""age" in applicant.attested && "civil" in applicant.attested.age"#;

fn clerk() -> SigningKey {
    officer(20)
}

fn automatic(id: &str, department: &str, rule: &str, depends_on: &[&str]) -> WorkflowStep {
    WorkflowStep {
        kind: StepKind::Automatic.into(),
        approvals_required: 0,
        rule: rule.into(),
        ..step(id, department, "clerk", 1, depends_on)
    }
}

/// Civil's automatic eligibility check and one fire inspector, then
/// commerce licenses.
fn eligible_restaurant(rule: &str) -> DefineWorkflow {
    DefineWorkflow {
        workflow_id: "open-restaurant".into(),
        title: "Open a restaurant".into(),
        steps: vec![
            automatic("eligibility", "civil", rule, &[]),
            step("fire-inspection", "fire", "inspector", 1, &[]),
            step(
                "license",
                "commerce",
                "licensing",
                1,
                &["eligibility", "fire-inspection"],
            ),
        ],
    }
}

fn chain_with(definition: DefineWorkflow) -> Chain {
    let mut chain = Chain::new();
    chain.ok(&commerce(), Body::DefineWorkflow(definition));
    chain.ok(&civil(), register(&clerk(), "clerk"));
    chain.ok(&fire(), register(&fire_inspector_a(), "inspector"));
    chain.ok(&commerce(), register(&licensing(), "licensing"));
    chain.ok(&citizen(), Body::CreateIdentity(CreateIdentity {}));
    chain
}

/// The citizen declares an `age`, held by civil, and civil attests it.
fn attest_age(chain: &mut Chain) {
    let value = b"41";
    let commitment = attribute_commitment(&[7; 16], value);
    let cid = format!("bafkrei{}", "q".repeat(52));
    let size_bytes = 64;
    let digest = blob_receipt_digest(CHAIN, "civil", &cid, &citizen().public_key(), size_bytes);
    chain.ok(
        &citizen(),
        Body::DeclareAttribute(DeclareAttribute {
            name: "age".into(),
            cid,
            commitment: commitment.to_vec(),
            holder: "civil".into(),
            size_bytes,
            holder_receipt: civil_node().sign(digest.as_bytes()).to_vec(),
        }),
    );
    chain.ok(
        &civil(),
        Body::AttestAttribute(AttestAttribute {
            citizen: citizen().public_key().as_bytes().to_vec(),
            name: "age".into(),
            commitment: commitment.to_vec(),
            expires_ms: 0,
        }),
    );
}

fn kinds(case: &CaseRecord) -> Vec<&str> {
    case.events.iter().map(|e| e.kind.as_str()).collect()
}

// ----- definitions ------------------------------------------------------------

fn definition_error(rule: &str) -> String {
    malformed(Body::DefineWorkflow(eligible_restaurant(rule)))
}

#[test]
fn a_rule_that_does_not_parse_is_malformed() {
    let message = definition_error("applicant.attested &&");
    assert!(message.contains("step \"eligibility\": rule"), "{message}");
    assert!(message.contains("does not parse as CEL"), "{message}");
}

#[test]
fn a_rule_over_the_size_bound_is_malformed() {
    let rule = format!("{} || true", "true || ".repeat(200));
    assert!(definition_error(&rule).contains("at most 1024"));
    assert!(definition_error("").contains("the rule is empty"));
}

#[test]
fn a_rule_nested_too_deep_is_malformed() {
    let rule = format!("{}true{}", "(".repeat(17), ")".repeat(17));
    assert!(definition_error(&rule).contains("17 deep, at most 16"));
    let rule = format!("{}true{}", "(".repeat(16), ")".repeat(16));
    assert_eq!(validate_rule(&rule), Ok(()));
}

#[test]
fn a_rule_reading_an_unknown_variable_is_malformed() {
    let message = definition_error("salary > 1000");
    assert!(message.contains("unknown variable \"salary\""), "{message}");
}

#[test]
fn a_rule_with_a_comprehension_or_other_function_is_malformed() {
    assert!(definition_error("steps.all(s, steps[s] == \"approved\")").contains("comprehension"));
    assert!(definition_error("documents.exists(d, d == \"menu\")").contains("comprehension"));
    assert!(definition_error("string(steps) != \"\"").contains("calls \"string\""));
    assert!(definition_error("timestamp(\"2026-01-01T00:00:00Z\") != null").contains("timestamp"));
}

#[test]
fn a_rule_on_an_officer_step_and_officers_on_an_automatic_step_are_malformed() {
    let mut body = restaurant();
    body.steps[0].rule = "true".into();
    assert!(malformed(Body::DefineWorkflow(body)).contains("only STEP_KIND_AUTOMATIC"));
    let mut body = eligible_restaurant(ELIGIBLE);
    body.steps[0].approvals_required = 1;
    assert!(
        malformed(Body::DefineWorkflow(body))
            .contains("approvals_required must be 0 and officers empty")
    );
}

// ----- evaluation -------------------------------------------------------------

#[test]
fn an_unattested_applicant_leaves_the_step_ready_and_evaluate_approves_it_later() {
    let mut chain = chain_with(eligible_restaurant(ELIGIBLE));
    let id = chain.ok(&citizen(), open(1));
    let step = chain.step(&id, "eligibility");
    assert_eq!(step.state, StepState::Ready as i32);
    assert_eq!(step.rule_outcome, "false");
    assert_eq!(step.evaluated_height, chain.height);
    attest_age(&mut chain);
    // An attestation alone does not touch the case.
    assert_eq!(
        chain.step(&id, "eligibility").state,
        StepState::Ready as i32
    );
    chain.ok(
        &citizen(),
        act(&id, "eligibility", CaseAction::Evaluate, ""),
    );
    let case = chain.case(&id);
    assert_eq!(case.steps[0].state, StepState::Approved as i32);
    assert_eq!(case.steps[0].rule_outcome, "true");
    assert_eq!(kinds(&case), ["open", "auto-approve"]);
    assert_eq!(case.events[1].reason, "rule: true");
    assert_eq!(case.events[1].department, "civil");
    // The license waits for the fire inspection only.
    assert_eq!(case.steps[2].state, StepState::Blocked as i32);
    chain.ok(&fire_inspector_a(), approve(&id, "fire-inspection"));
    assert_eq!(chain.step(&id, "license").state, StepState::Ready as i32);
    chain.ok(&licensing(), approve(&id, "license"));
    assert_eq!(chain.case(&id).state, CaseState::Approved as i32);
}

#[test]
fn an_attested_applicant_is_approved_when_the_case_opens() {
    let mut chain = chain_with(eligible_restaurant(ELIGIBLE));
    attest_age(&mut chain);
    let id = chain.ok(&citizen(), open(1));
    let case = chain.case(&id);
    assert_eq!(case.steps[0].state, StepState::Approved as i32);
    assert_eq!(kinds(&case), ["open", "auto-approve"]);
}

#[test]
fn a_rule_over_steps_is_decided_by_the_approval_that_makes_it_true() {
    let mut body = eligible_restaurant(ELIGIBLE);
    body.steps[0] = automatic(
        "eligibility",
        "civil",
        r#"steps["fire-inspection"] == "approved" && "floor-plan" in documents"#,
        &["fire-inspection"],
    );
    let mut chain = chain_with(body);
    let id = chain.ok(&citizen(), open(1));
    let case = chain.case(&id);
    assert_eq!(case.steps[0].state, StepState::Blocked as i32);
    assert_eq!(
        case.steps[0].rule_outcome, "",
        "a blocked step is not evaluated"
    );
    chain.ok(&fire_inspector_a(), approve(&id, "fire-inspection"));
    let case = chain.case(&id);
    assert_eq!(case.steps[0].state, StepState::Approved as i32);
    assert_eq!(kinds(&case), ["open", "approve", "auto-approve"]);
    assert_eq!(
        case.events[2].signer,
        fire_inspector_a().public_key().as_bytes()
    );
    assert_eq!(case.steps[2].state, StepState::Ready as i32);
}

#[test]
fn an_evaluation_error_is_recorded_and_leaves_the_step_for_an_officer() {
    let mut chain = chain_with(eligible_restaurant(r#""civil" in applicant.attested.age"#));
    let id = chain.ok(&citizen(), open(1));
    let step = chain.step(&id, "eligibility");
    assert_eq!(step.state, StepState::Ready as i32);
    assert!(
        step.rule_outcome.starts_with("error: "),
        "{}",
        step.rule_outcome
    );
    assert!(step.rule_outcome.contains("age"), "{}", step.rule_outcome);
    chain.ok(
        &clerk(),
        act(
            &id,
            "eligibility",
            CaseAction::OverrideApprove,
            "age checked on paper",
        ),
    );
    let case = chain.case(&id);
    assert_eq!(case.steps[0].state, StepState::Approved as i32);
    assert_eq!(kinds(&case), ["open", "override-approve"]);
    assert_eq!(case.events[1].reason, "age checked on paper");
    assert_eq!(case.events[1].signer, clerk().public_key().as_bytes());
}

#[test]
fn a_long_chain_at_the_size_bound_evaluates() {
    let rule = format!("{}1 == 200", "1 + ".repeat(199));
    assert!(rule.len() <= crate::approval::rule::RULE_BYTES_MAX);
    assert_eq!(evaluate(&rule, &RuleInput::default()), Ok(true));
    let rule = format!("{}false", "!".repeat(1000));
    assert_eq!(validate_rule(&rule), Ok(()));
    assert_eq!(evaluate(&rule, &RuleInput::default()), Ok(false));
}

#[test]
fn evaluation_is_a_function_of_the_input() {
    let mut input = RuleInput {
        workflow_id: "open-restaurant".into(),
        workflow_version: 3,
        documents: vec!["menu".into()],
        ..RuleInput::default()
    };
    input.attested.insert("age".into(), vec!["civil".into()]);
    input.steps.insert("fire-inspection".into(), "ready".into());
    let rule = r#"case.workflow_version == 3 && size(documents) == 1 && steps["fire-inspection"] != "approved" && applicant.department == """#;
    for _ in 0..3 {
        assert_eq!(evaluate(rule, &input), Ok(true));
    }
    assert_eq!(evaluate(ELIGIBLE, &input), Ok(true));
    assert!(
        evaluate("size(documents)", &input)
            .expect_err("an int is not a bool")
            .contains("not a bool")
    );
    input.attested.insert("age".into(), vec!["health".into()]);
    assert_eq!(evaluate(ELIGIBLE, &input), Ok(false));
}

// ----- overrides and refusals ------------------------------------------------

#[test]
fn officers_may_not_approve_an_automatic_step_and_overrides_fit_only_automatic_steps() {
    let mut chain = chain_with(eligible_restaurant(ELIGIBLE));
    let id = chain.ok(&citizen(), open(1));
    assert_refusal(
        chain.run(&clerk(), approve(&id, "eligibility")),
        Refusal::FailedPrecondition,
        &["\"eligibility\"", "is automatic", "override"],
    );
    assert_refusal(
        chain.run(
            &fire_inspector_a(),
            act(&id, "fire-inspection", CaseAction::OverrideApprove, "why"),
        ),
        Refusal::FailedPrecondition,
        &["not automatic"],
    );
}

#[test]
fn an_override_needs_an_officer_of_the_steps_department_not_revoked() {
    let mut chain = chain_with(eligible_restaurant(ELIGIBLE));
    let id = chain.ok(&citizen(), open(1));
    let override_approve = || act(&id, "eligibility", CaseAction::OverrideApprove, "seen");
    assert_refusal(
        chain.run(&fire_inspector_a(), override_approve()),
        Refusal::PermissionDenied,
        &["not a registered officer of department \"civil\""],
    );
    chain.ok(&civil(), revoke(&clerk()));
    assert_refusal(
        chain.run(&clerk(), override_approve()),
        Refusal::PermissionDenied,
        &["was revoked"],
    );
    assert_eq!(
        chain.step(&id, "eligibility").state,
        StepState::Ready as i32
    );
}

#[test]
fn an_override_needs_a_reason() {
    let body = act(
        &Digest::sha256(b"case"),
        "eligibility",
        CaseAction::OverrideApprove,
        "",
    );
    assert!(malformed(body).contains("act_on_case.reason is empty"));
}

#[test]
fn an_override_reject_closes_the_case_and_nothing_acts_after_it() {
    let mut chain = chain_with(eligible_restaurant(ELIGIBLE));
    let id = chain.ok(&citizen(), open(1));
    chain.ok(
        &clerk(),
        act(
            &id,
            "eligibility",
            CaseAction::OverrideReject,
            "applicant is a minor",
        ),
    );
    let case = chain.case(&id);
    assert_eq!(case.state, CaseState::Rejected as i32);
    assert_eq!(case.reason, "applicant is a minor");
    assert_eq!(kinds(&case), ["open", "override-reject"]);
    assert_refusal(
        chain.run(
            &clerk(),
            act(&id, "eligibility", CaseAction::OverrideApprove, "oops"),
        ),
        Refusal::FailedPrecondition,
        &["closed (rejected)"],
    );
    assert_refusal(
        chain.run(
            &citizen(),
            act(&id, "eligibility", CaseAction::Evaluate, ""),
        ),
        Refusal::FailedPrecondition,
        &["closed (rejected)"],
    );
}

#[test]
fn an_override_after_the_deadline_is_refused_and_the_rule_no_longer_decides() {
    let mut body = eligible_restaurant(ELIGIBLE);
    body.steps[0].deadline_ms = HOUR_MS;
    let mut chain = chain_with(body);
    let id = chain.ok(&citizen(), open(1));
    chain.advance(2 * HOUR_MS);
    attest_age(&mut chain);
    assert_refusal(
        chain.run(
            &citizen(),
            act(&id, "eligibility", CaseAction::Evaluate, ""),
        ),
        Refusal::FailedPrecondition,
        &["passed its deadline"],
    );
    assert_refusal(
        chain.run(
            &clerk(),
            act(&id, "eligibility", CaseAction::OverrideApprove, "late"),
        ),
        Refusal::FailedPrecondition,
        &["passed its deadline"],
    );
    // Another action on the case does not approve it either.
    chain.ok(&fire_inspector_a(), approve(&id, "fire-inspection"));
    assert_eq!(
        chain.step(&id, "eligibility").state,
        StepState::Ready as i32
    );
}

#[test]
fn only_someone_on_the_case_may_have_it_evaluated() {
    let mut chain = chain_with(eligible_restaurant(ELIGIBLE));
    let id = chain.ok(&citizen(), open(1));
    assert_refusal(
        chain.run(
            &other_citizen(),
            act(&id, "eligibility", CaseAction::Evaluate, ""),
        ),
        Refusal::PermissionDenied,
        &["neither the applicant", "civil"],
    );
    assert_refusal(
        chain.run(
            &citizen(),
            act(&id, "fire-inspection", CaseAction::Evaluate, ""),
        ),
        Refusal::FailedPrecondition,
        &["not automatic"],
    );
    // An officer of another department of the case may.
    chain.ok(
        &fire_inspector_a(),
        act(&id, "eligibility", CaseAction::Evaluate, ""),
    );
}

// ----- properties ---------------------------------------------------------------

#[derive(Clone, Debug)]
enum AutoMove {
    Approve(usize),
    Override(usize, bool),
    Evaluate(usize),
    Advance,
}

fn auto_moves() -> impl Strategy<Value = AutoMove> {
    prop_oneof![
        (0..3usize).prop_map(AutoMove::Approve),
        ((0..3usize), any::<bool>()).prop_map(|(s, a)| AutoMove::Override(s, a)),
        (0..3usize).prop_map(AutoMove::Evaluate),
        Just(AutoMove::Advance),
    ]
}

const AUTO_STEPS: [&str; 3] = ["eligibility", "fire-inspection", "license"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// With a rule that is false for this applicant, random actions never
    /// approve the automatic step, nor the case, without an officer's
    /// override; the case's history says who settled it.
    #[test]
    fn a_false_rule_never_approves_without_an_override(
        moves in prop::collection::vec(auto_moves(), 1..24),
    ) {
        let mut body = eligible_restaurant(ELIGIBLE);
        body.steps[0].deadline_ms = 4 * HOUR_MS;
        let mut chain = chain_with(body);
        let id = chain.ok(&citizen(), open(1));
        for step in moves {
            let _ = match step {
                AutoMove::Approve(s) => chain.run(&actor_for(s), approve(&id, AUTO_STEPS[s])),
                AutoMove::Override(s, yes) => {
                    let action = if yes { CaseAction::OverrideApprove } else { CaseAction::OverrideReject };
                    chain.run(&actor_for(s), act(&id, AUTO_STEPS[s], action, "why"))
                }
                AutoMove::Evaluate(s) => chain.run(&citizen(), act(&id, AUTO_STEPS[s], CaseAction::Evaluate, "")),
                AutoMove::Advance => { chain.advance(HOUR_MS); Ok(id) }
            };
            let case = chain.case(&id);
            let overridden = case.events.iter().any(|e| e.kind == "override-approve");
            prop_assert!(!case.events.iter().any(|e| e.kind == "auto-approve"));
            if case.steps[0].state == StepState::Approved as i32 {
                prop_assert!(overridden);
            }
            if case.state == CaseState::Approved as i32 {
                prop_assert!(overridden);
            }
            if !case.steps[0].rule_outcome.is_empty() {
                prop_assert_eq!(case.steps[0].rule_outcome.as_str(), "false");
            }
        }
    }

    /// Any text of at most the bound is refused or accepted, never a
    /// panic: every node checks rules at admission.
    #[test]
    fn checking_any_rule_text_returns(text in "[ -~]{0,300}", tokens in prop::collection::vec(
        prop::sample::select(vec!["(", ")", "[", "]", "{", "}", "&&", "||", "!", "==", "in", ".", "steps",
            "documents", "applicant", "case", "\"a\"", "1", "size", ",", "?", ":", "-", "+", "has", "x"]),
        0..200,
    )) {
        let _ = validate_rule(&text);
        let joined = tokens.join(" ");
        if validate_rule(&joined).is_ok() {
            let _ = evaluate(&joined, &RuleInput::default());
        }
    }

    /// The same input gives the same outcome, whatever order its maps
    /// were filled in.
    #[test]
    fn evaluation_does_not_depend_on_insertion_order(
        names in prop::collection::btree_set("[a-z]{1,6}", 1..8),
        approved in any::<u8>(),
    ) {
        let names: Vec<String> = names.into_iter().collect();
        let mut forward = RuleInput::default();
        let mut backward = RuleInput::default();
        for (i, name) in names.iter().enumerate() {
            let state = if approved & (1 << (i % 8)) != 0 { "approved" } else { "ready" };
            forward.steps.insert(name.clone(), state.into());
        }
        for (i, name) in names.iter().enumerate().rev() {
            let state = if approved & (1 << (i % 8)) != 0 { "approved" } else { "ready" };
            backward.steps.insert(name.clone(), state.into());
        }
        let rule = format!("steps[{:?}] == \"approved\" && size(steps) == {}", names[0], names.len());
        let expected = approved & 1 != 0;
        prop_assert_eq!(evaluate(&rule, &forward), Ok(expected));
        prop_assert_eq!(evaluate(&rule, &backward), Ok(expected));
    }
}

/// The officer whose department signs the step.
fn actor_for(step: usize) -> SigningKey {
    match step {
        0 => clerk(),
        1 => fire_inspector_a(),
        _ => licensing(),
    }
}
