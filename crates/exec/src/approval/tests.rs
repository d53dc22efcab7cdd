//! Tests of the approval rules. Each transaction is signed, checked with
//! `check_envelope`, prechecked as a node does at admission, and executed
//! as in a block; the harness asserts that precheck and execution agree.

use std::collections::BTreeMap;

use govchain_crypto::SigningKey;
use govchain_proto::types::v1::{CreateIdentity, TransactionOutcome, transaction::Body};
use proptest::prelude::*;

use super::*;
use crate::execute::{Overlay, execute, precheck};
use crate::identity::{Department, Departments};
use crate::transaction::tests::{CHAIN, sign};
use crate::transaction::{TransactionError, check_envelope};

const START_MS: u64 = 1_700_000_000_000;
const PAYLOAD_BYTES_MAX: usize = 16 * 1024;
const HOUR_MS: u64 = 60 * 60 * 1000;

// ----- keys and departments -------------------------------------------------

fn health() -> SigningKey {
    SigningKey::from_seed([10; 32])
}

fn fire() -> SigningKey {
    SigningKey::from_seed([11; 32])
}

fn commerce() -> SigningKey {
    SigningKey::from_seed([12; 32])
}

fn citizen() -> SigningKey {
    SigningKey::from_seed([1; 32])
}

fn other_citizen() -> SigningKey {
    SigningKey::from_seed([2; 32])
}

fn officer(n: u8) -> SigningKey {
    SigningKey::from_seed([100 + n; 32])
}

/// Health inspectors.
fn health_inspector() -> SigningKey {
    officer(1)
}

fn fire_inspector_a() -> SigningKey {
    officer(2)
}

fn fire_inspector_b() -> SigningKey {
    officer(3)
}

/// Commerce's licensing officer.
fn licensing() -> SigningKey {
    officer(4)
}

/// A commerce officer with the wrong role for the licensing step.
fn commerce_clerk() -> SigningKey {
    officer(5)
}

fn departments() -> Departments {
    let department = |name: &str, key: &SigningKey| Department {
        name: name.into(),
        public_key: key.public_key(),
        attests: Default::default(),
        node_key: None,
    };
    let mut civil = department("civil", &civil());
    civil.attests = ["age".to_owned()].into();
    civil.node_key = Some(civil_node().public_key());
    Departments::new([
        department("health", &health()),
        department("fire", &fire()),
        department("commerce", &commerce()),
        civil,
    ])
}

/// The civil registry: attests `age` and holds attribute values.
fn civil() -> SigningKey {
    SigningKey::from_seed([13; 32])
}

fn civil_node() -> SigningKey {
    SigningKey::from_seed([14; 32])
}

// ----- bodies ---------------------------------------------------------------

fn step(id: &str, department: &str, role: &str, m: u32, depends_on: &[&str]) -> WorkflowStep {
    WorkflowStep {
        step_id: id.into(),
        kind: StepKind::Officer.into(),
        department: department.into(),
        role: role.into(),
        approvals_required: m,
        officers: Vec::new(),
        depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
        deadline_ms: 0,
        documents: vec!["floor-plan".into()],
        attributes: Vec::new(),
        rule: String::new(),
    }
}

/// Health and fire inspect in parallel (fire needs two inspectors), then
/// commerce licenses.
fn restaurant() -> DefineWorkflow {
    DefineWorkflow {
        workflow_id: "open-restaurant".into(),
        title: "Open a restaurant".into(),
        steps: vec![
            step("health-inspection", "health", "inspector", 1, &[]),
            step("fire-inspection", "fire", "inspector", 2, &[]),
            step(
                "license",
                "commerce",
                "licensing",
                1,
                &["health-inspection", "fire-inspection"],
            ),
        ],
    }
}

fn register(officer: &SigningKey, role: &str) -> Body {
    Body::RegisterOfficer(RegisterOfficer {
        officer: officer.public_key().as_bytes().to_vec(),
        role: role.into(),
    })
}

fn revoke(officer: &SigningKey) -> Body {
    Body::RevokeOfficer(RevokeOfficer {
        officer: officer.public_key().as_bytes().to_vec(),
        reason: "left the department".into(),
    })
}

fn document(name: &str, cid_letter: char) -> CaseDocument {
    CaseDocument {
        name: name.into(),
        cid: format!("bafkrei{}", cid_letter.to_string().repeat(52)),
    }
}

fn open(version: u64) -> Body {
    Body::OpenCase(OpenCase {
        workflow_id: "open-restaurant".into(),
        workflow_version: version,
        documents: vec![document("floor-plan", 'a')],
    })
}

fn act(case: &Digest, step: &str, action: CaseAction, reason: &str) -> Body {
    Body::ActOnCase(ActOnCase {
        case_id: case.to_vec(),
        step_id: step.into(),
        action: action.into(),
        reason: reason.into(),
    })
}

fn approve(case: &Digest, step: &str) -> Body {
    act(case, step, CaseAction::Approve, "")
}

fn amend(case: &Digest) -> Body {
    Body::AmendCase(AmendCase {
        case_id: case.to_vec(),
        documents: vec![document("floor-plan", 'b'), document("menu", 'c')],
    })
}

// ----- the chain ------------------------------------------------------------

#[derive(Default)]
struct MemoryState(BTreeMap<Vec<u8>, Vec<u8>>);

impl StateRead for MemoryState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.0.get(key).cloned())
    }
}

/// One transaction per block, at a block time the test controls.
struct Chain {
    state: MemoryState,
    departments: Departments,
    nonces: BTreeMap<[u8; 32], u64>,
    height: u64,
    now_ms: u64,
}

impl Chain {
    fn new() -> Self {
        Self {
            state: MemoryState::default(),
            departments: departments(),
            nonces: BTreeMap::new(),
            height: 0,
            now_ms: START_MS,
        }
    }

    /// The restaurant defined by commerce, its officers registered, and a
    /// citizen with an identity.
    fn restaurant() -> Self {
        let mut chain = Self::new();
        chain.ok(&commerce(), Body::DefineWorkflow(restaurant()));
        chain.ok(&health(), register(&health_inspector(), "inspector"));
        chain.ok(&fire(), register(&fire_inspector_a(), "inspector"));
        chain.ok(&fire(), register(&fire_inspector_b(), "inspector"));
        chain.ok(&commerce(), register(&licensing(), "licensing"));
        chain.ok(&commerce(), register(&commerce_clerk(), "clerk"));
        chain.ok(&citizen(), Body::CreateIdentity(CreateIdentity {}));
        chain
    }

    fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
    }

    fn verified(&mut self, key: &SigningKey, body: Body) -> VerifiedTransaction {
        let nonce = self.nonces.entry(*key.public_key().as_bytes()).or_default();
        *nonce += 1;
        check_envelope(sign(key, *nonce, body), CHAIN, PAYLOAD_BYTES_MAX, |_, _| {
            false
        })
        .expect("a well-formed transaction")
    }

    /// Executes `body` signed by `key` in a new block; returns the
    /// transaction id or the refusal, after checking that the precheck
    /// at admission gives the same verdict as execution.
    fn run(&mut self, key: &SigningKey, body: Body) -> Result<Digest, Refusal> {
        let transaction = self.verified(key, body);
        self.height += 1;
        let prechecked = precheck(
            &self.state,
            &self.departments,
            &transaction,
            self.height,
            self.now_ms,
        )
        .expect("state reads");
        let context = Context {
            departments: &self.departments,
            height: self.height,
            now_ms: self.now_ms,
        };
        let mut overlay = Overlay::new(&self.state);
        let result = execute(&mut overlay, &transaction, &context).expect("state reads");
        let writes = std::mem::take(&mut overlay.writes);
        // A replay (`apply_committed`, as an evidence bundle's verifier
        // runs it) is this very execution.
        let replayed = crate::apply_committed(
            &self.state,
            &self.departments,
            &transaction,
            self.height,
            self.now_ms,
        )
        .expect("state reads");
        assert_eq!(replayed.result, result);
        assert_eq!(replayed.writes, writes);
        match &prechecked {
            Ok(()) => assert_eq!(result.outcome, TransactionOutcome::Success as i32),
            Err(refusal) => {
                assert_eq!(result.outcome, TransactionOutcome::Failed as i32);
                assert_eq!(result.error, refusal.to_string());
                // A refused transaction writes only its nonce.
                assert_eq!(writes.len(), 1, "refusal {refusal:?} wrote {writes:?}");
            }
        }
        for (key, value) in writes {
            match value {
                Some(value) => self.state.0.insert(key, value),
                None => self.state.0.remove(&key),
            };
        }
        prechecked.map(|()| transaction.id)
    }

    fn ok(&mut self, key: &SigningKey, body: Body) -> Digest {
        let described = format!("{body:?}");
        self.run(key, body)
            .unwrap_or_else(|refusal| panic!("{described} refused: {refusal:?}"))
    }

    fn case(&self, id: &Digest) -> CaseRecord {
        read_case(&self.state, id)
            .expect("state reads")
            .expect("the case exists")
    }

    fn step(&self, id: &Digest, step_id: &str) -> CaseStep {
        self.case(id)
            .steps
            .into_iter()
            .find(|s| s.step_id == step_id)
            .expect("the step exists")
    }
}

fn refused_with(result: Result<Digest, Refusal>) -> Refusal {
    result.expect_err("the transaction must be refused")
}

fn assert_refusal(result: Result<Digest, Refusal>, kind: fn(String) -> Refusal, words: &[&str]) {
    let refusal = refused_with(result);
    let message = refusal.to_string();
    assert_eq!(
        std::mem::discriminant(&refusal),
        std::mem::discriminant(&kind(String::new())),
        "wrong kind of refusal: {refusal:?}"
    );
    for word in words {
        assert!(
            message.contains(word),
            "{message:?} does not mention {word:?}"
        );
    }
}

fn malformed(body: Body) -> String {
    match check_envelope(
        sign(&commerce(), 1, body),
        CHAIN,
        PAYLOAD_BYTES_MAX,
        |_, _| false,
    ) {
        Err(TransactionError::Malformed(message)) => message,
        other => panic!("expected a malformed transaction, got {other:?}"),
    }
}

// ----- definitions ----------------------------------------------------------

#[test]
fn a_definition_orders_its_steps_after_their_dependencies() {
    let order = validate_definition(&restaurant()).expect("the restaurant is a DAG");
    assert_eq!(order, vec![0, 1, 2]);
    let mut reversed = restaurant();
    reversed.steps.reverse();
    assert_eq!(
        validate_definition(&reversed).expect("still a DAG"),
        vec![1, 2, 0]
    );
}

#[test]
fn a_definition_with_a_cycle_is_malformed_and_names_the_steps() {
    let mut body = restaurant();
    body.steps[0].depends_on = vec!["license".into()];
    let message = malformed(Body::DefineWorkflow(body));
    assert!(message.contains("cycle"), "{message}");
    assert!(message.contains("health-inspection"), "{message}");
    assert!(message.contains("license"), "{message}");
    assert!(!message.contains("fire-inspection"), "{message}");
}

#[test]
fn a_step_depending_on_itself_is_a_cycle() {
    let mut body = restaurant();
    body.steps[1].depends_on = vec!["fire-inspection".into()];
    assert!(malformed(Body::DefineWorkflow(body)).contains("cycle through fire-inspection"));
}

#[test]
fn a_definition_naming_an_unknown_step_is_malformed() {
    let mut body = restaurant();
    body.steps[2].depends_on.push("police-check".into());
    let message = malformed(Body::DefineWorkflow(body));
    assert!(
        message.contains("\"police-check\", which is not a step"),
        "{message}"
    );
}

#[test]
fn a_definition_without_steps_is_malformed() {
    let mut body = restaurant();
    body.steps.clear();
    assert!(malformed(Body::DefineWorkflow(body)).contains("1 to 32 steps, got 0"));
}

#[test]
fn a_definition_with_too_many_steps_is_malformed() {
    let mut body = restaurant();
    body.steps = (0..=STEPS_MAX)
        .map(|i| step(&format!("s{i}"), "health", "inspector", 1, &[]))
        .collect();
    assert!(malformed(Body::DefineWorkflow(body)).contains("got 33"));
}

#[test]
fn a_step_defined_twice_is_malformed() {
    let mut body = restaurant();
    body.steps[1].step_id = "health-inspection".into();
    assert!(
        malformed(Body::DefineWorkflow(body)).contains("\"health-inspection\" is defined twice")
    );
}

#[test]
fn more_approvals_than_named_officers_is_malformed() {
    let mut body = restaurant();
    body.steps[1].officers = vec![fire_inspector_a().public_key().as_bytes().to_vec()];
    let message = malformed(Body::DefineWorkflow(body));
    assert!(
        message.contains("needs 2 approvals (M) but names only 1 officers (N)"),
        "{message}"
    );
}

#[test]
fn zero_approvals_is_malformed() {
    let mut body = restaurant();
    body.steps[0].approvals_required = 0;
    assert!(
        malformed(Body::DefineWorkflow(body)).contains("approvals_required must be at least 1")
    );
}

#[test]
fn more_approvals_than_a_step_may_name_is_malformed() {
    let mut body = restaurant();
    body.steps[0].approvals_required = STEP_OFFICERS_MAX as u32 + 1;
    assert!(malformed(Body::DefineWorkflow(body)).contains("is 33, at most 32"));
    let mut body = restaurant();
    body.steps[0].approvals_required = STEP_OFFICERS_MAX as u32;
    assert!(validate_definition(&body).is_ok());
}

#[test]
fn an_unspecified_step_kind_is_malformed() {
    let mut body = restaurant();
    body.steps[0].kind = StepKind::Unspecified.into();
    assert!(
        malformed(Body::DefineWorkflow(body))
            .contains("is not STEP_KIND_OFFICER (1) or STEP_KIND_AUTOMATIC (2)")
    );
}

#[test]
fn a_definition_naming_a_department_not_in_genesis_is_not_found() {
    let mut chain = Chain::new();
    let mut body = restaurant();
    body.steps[0].department = "police".into();
    assert_refusal(
        chain.run(&commerce(), Body::DefineWorkflow(body)),
        Refusal::NotFound,
        &["\"police\"", "which is not a department"],
    );
}

#[test]
fn only_a_department_defines_workflows() {
    let mut chain = Chain::new();
    assert_refusal(
        chain.run(&citizen(), Body::DefineWorkflow(restaurant())),
        Refusal::PermissionDenied,
        &["not a department's signing key", "define workflows"],
    );
}

#[test]
fn versions_count_up_and_only_the_owner_defines_them() {
    let mut chain = Chain::new();
    chain.ok(&commerce(), Body::DefineWorkflow(restaurant()));
    let mut second = restaurant();
    second.steps[1].approvals_required = 1;
    chain.ok(&commerce(), Body::DefineWorkflow(second));
    assert_eq!(
        latest_version(&chain.state, "open-restaurant").expect("reads"),
        2
    );
    let first = read_definition(&chain.state, "open-restaurant", 1)
        .expect("reads")
        .expect("version 1 stays");
    assert_eq!(first.steps[1].approvals_required, 2);
    assert_eq!(first.owner, "commerce");
    assert_refusal(
        chain.run(&health(), Body::DefineWorkflow(restaurant())),
        Refusal::PermissionDenied,
        &["owned by department \"commerce\"", "\"health\""],
    );
    assert_eq!(
        latest_version(&chain.state, "open-restaurant").expect("reads"),
        2
    );
}

// ----- officers -------------------------------------------------------------

#[test]
fn only_a_department_registers_officers() {
    let mut chain = Chain::new();
    assert_refusal(
        chain.run(&citizen(), register(&officer(9), "inspector")),
        Refusal::PermissionDenied,
        &["register officers"],
    );
    assert_eq!(
        read_officer(&chain.state, "health", &officer(9).public_key()).expect("reads"),
        None
    );
}

#[test]
fn an_officer_is_registered_once_until_revoked() {
    let mut chain = Chain::new();
    chain.ok(&health(), register(&officer(9), "inspector"));
    assert_refusal(
        chain.run(&health(), register(&officer(9), "licensing")),
        Refusal::AlreadyExists,
        &["already registered", "\"inspector\""],
    );
    chain.ok(&health(), revoke(&officer(9)));
    assert_refusal(
        chain.run(&health(), revoke(&officer(9))),
        Refusal::FailedPrecondition,
        &["already revoked"],
    );
    chain.ok(&health(), register(&officer(9), "licensing"));
    let record = read_officer(&chain.state, "health", &officer(9).public_key())
        .expect("reads")
        .expect("registered");
    assert_eq!(record.role, "licensing");
    assert!(!record.revoked);
}

#[test]
fn a_department_revokes_only_its_own_officers() {
    let mut chain = Chain::new();
    chain.ok(&health(), register(&officer(9), "inspector"));
    assert_refusal(
        chain.run(&fire(), revoke(&officer(9))),
        Refusal::NotFound,
        &["not registered in department \"fire\""],
    );
    let record = read_officer(&chain.state, "health", &officer(9).public_key())
        .expect("reads")
        .expect("registered");
    assert!(!record.revoked);
}

// ----- cases ----------------------------------------------------------------

#[test]
fn a_citizen_without_an_identity_cannot_open_a_case() {
    let mut chain = Chain::restaurant();
    assert_refusal(
        chain.run(&other_citizen(), open(1)),
        Refusal::NotFound,
        &["no identity", "did:key:"],
    );
}

#[test]
fn a_case_names_an_existing_definition_version() {
    let mut chain = Chain::restaurant();
    assert_refusal(
        chain.run(&citizen(), open(2)),
        Refusal::NotFound,
        &["\"open-restaurant\" has no version 2"],
    );
}

#[test]
fn a_new_case_has_its_independent_steps_ready() {
    let mut chain = Chain::restaurant();
    let id = chain.ok(&citizen(), open(1));
    let case = chain.case(&id);
    assert_eq!(case.state, CaseState::Open as i32);
    assert_eq!(case.case_id, id.to_vec());
    assert_eq!(case.departments, vec!["commerce", "fire", "health"]);
    let states: Vec<&str> = case
        .steps
        .iter()
        .map(|s| step_state_name(s.state))
        .collect();
    assert_eq!(states, vec!["ready", "ready", "blocked"]);
    assert_eq!(case.steps[1].department, "fire");
    assert_eq!(case.steps[2].role, "licensing");
    assert_eq!(case.steps[0].ready_ms, chain.now_ms);
    assert_eq!(case.steps[2].ready_ms, 0);
}

#[test]
fn a_restaurant_is_approved_after_health_and_fire_then_commerce() {
    let mut chain = Chain::restaurant();
    let id = chain.ok(&citizen(), open(1));
    chain.advance(HOUR_MS);
    chain.ok(&fire_inspector_a(), approve(&id, "fire-inspection"));
    assert_eq!(
        chain.step(&id, "fire-inspection").state,
        StepState::Ready as i32
    );
    chain.ok(&health_inspector(), approve(&id, "health-inspection"));
    assert_eq!(chain.step(&id, "license").state, StepState::Blocked as i32);
    chain.advance(HOUR_MS);
    chain.ok(&fire_inspector_b(), approve(&id, "fire-inspection"));
    let license = chain.step(&id, "license");
    assert_eq!(license.state, StepState::Ready as i32);
    assert_eq!(license.ready_ms, chain.now_ms);
    assert_eq!(chain.case(&id).state, CaseState::Open as i32);
    chain.ok(&licensing(), approve(&id, "license"));
    let case = chain.case(&id);
    assert_eq!(case.state, CaseState::Approved as i32);
    let fire = &case.steps[1];
    assert_eq!(fire.approvals.len(), 2);
    assert_eq!(fire.approved_ms, START_MS + 2 * HOUR_MS);
    let kinds: Vec<&str> = case.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec!["open", "approve", "approve", "approve", "approve"]
    );
    assert_eq!(case.events[1].department, "fire");
}

#[test]
fn an_officer_of_another_department_is_refused() {
    let mut chain = Chain::restaurant();
    let id = chain.ok(&citizen(), open(1));
    assert_refusal(
        chain.run(&fire_inspector_a(), approve(&id, "health-inspection")),
        Refusal::PermissionDenied,
        &[
            "not a registered officer of department \"health\"",
            "health-inspection",
        ],
    );
    assert!(chain.step(&id, "health-inspection").approvals.is_empty());
}

#[test]
fn a_department_key_is_not_an_officer() {
    let mut chain = Chain::restaurant();
    let id = chain.ok(&citizen(), open(1));
    assert_refusal(
        chain.run(&health(), approve(&id, "health-inspection")),
        Refusal::PermissionDenied,
        &["not a registered officer"],
    );
}

#[test]
fn an_officer_with_the_wrong_role_is_refused() {
    let mut chain = Chain::restaurant();
    let id = chain.ok(&commerce(), open(1));
    chain.ok(&health_inspector(), approve(&id, "health-inspection"));
    chain.ok(&fire_inspector_a(), approve(&id, "fire-inspection"));
    chain.ok(&fire_inspector_b(), approve(&id, "fire-inspection"));
    assert_refusal(
        chain.run(&commerce_clerk(), approve(&id, "license")),
        Refusal::PermissionDenied,
        &["has role \"clerk\"", "needs role \"licensing\""],
    );
}

#[test]
fn a_step_before_its_dependencies_is_refused_naming_them() {
    let mut chain = Chain::restaurant();
    let id = chain.ok(&citizen(), open(1));
    chain.ok(&health_inspector(), approve(&id, "health-inspection"));
    assert_refusal(
        chain.run(&licensing(), approve(&id, "license")),
        Refusal::FailedPrecondition,
        &["not ready", "waits for fire-inspection"],
    );
    let message = refused_with(chain.run(&licensing(), approve(&id, "license"))).to_string();
    assert!(!message.contains("health-inspection"), "{message}");
    // Rejecting out of order is refused too.
    assert_refusal(
        chain.run(&licensing(), act(&id, "license", CaseAction::Reject, "no")),
        Refusal::FailedPrecondition,
        &["not ready"],
    );
    assert_eq!(chain.case(&id).state, CaseState::Open as i32);
}

#[test]
fn a_revoked_officer_is_refused() {
    let mut chain = Chain::restaurant();
    let id = chain.ok(&citizen(), open(1));
    chain.ok(&fire_inspector_a(), approve(&id, "fire-inspection"));
    chain.ok(&fire(), revoke(&fire_inspector_b()));
    assert_refusal(
        chain.run(&fire_inspector_b(), approve(&id, "fire-inspection")),
        Refusal::PermissionDenied,
        &["was revoked", "left the department", "no longer counts"],
    );
    assert_eq!(chain.step(&id, "fire-inspection").approvals.len(), 1);
}

#[test]
fn a_second_signature_by_the_same_officer_is_refused() {
    let mut chain = Chain::restaurant();
    let id = chain.ok(&citizen(), open(1));
    chain.ok(&fire_inspector_a(), approve(&id, "fire-inspection"));
    assert_refusal(
        chain.run(&fire_inspector_a(), approve(&id, "fire-inspection")),
        Refusal::AlreadyExists,
        &[
            "already approved step \"fire-inspection\"",
            "distinct officers",
        ],
    );
    let fire = chain.step(&id, "fire-inspection");
    assert_eq!(fire.state, StepState::Ready as i32);
    assert_eq!(fire.approvals.len(), 1);
}

#[test]
fn an_approved_step_takes_no_more_actions() {
    let mut chain = Chain::restaurant();
    let id = chain.ok(&citizen(), open(1));
    chain.ok(&health_inspector(), approve(&id, "health-inspection"));
    chain.ok(&health(), register(&officer(9), "inspector"));
    assert_refusal(
        chain.run(
            &officer(9),
            act(&id, "health-inspection", CaseAction::Reject, "late"),
        ),
        Refusal::FailedPrecondition,
        &["already approved"],
    );
}

#[test]
fn a_rejected_case_is_closed() {
    let mut chain = Chain::restaurant();
    let id = chain.ok(&citizen(), open(1));
    assert!(
        malformed(act(&id, "health-inspection", CaseAction::Reject, " "))
            .contains("reason is empty")
    );
    chain.ok(
        &health_inspector(),
        act(
            &id,
            "health-inspection",
            CaseAction::Reject,
            "kitchen drains into the street",
        ),
    );
    let case = chain.case(&id);
    assert_eq!(case.state, CaseState::Rejected as i32);
    assert_eq!(case.reason, "kitchen drains into the street");
    assert_refusal(
        chain.run(&fire_inspector_a(), approve(&id, "fire-inspection")),
        Refusal::FailedPrecondition,
        &["is closed (rejected)"],
    );
    assert_refusal(
        chain.run(&citizen(), amend(&id)),
        Refusal::FailedPrecondition,
        &["is rejected, not returned"],
    );
}

#[test]
fn an_approved_case_is_closed() {
    let mut chain = Chain::restaurant();
    let id = chain.ok(&citizen(), open(1));
    chain.ok(&health_inspector(), approve(&id, "health-inspection"));
    chain.ok(&fire_inspector_a(), approve(&id, "fire-inspection"));
    chain.ok(&fire_inspector_b(), approve(&id, "fire-inspection"));
    chain.ok(&licensing(), approve(&id, "license"));
    chain.ok(&commerce(), register(&officer(9), "licensing"));
    let before = chain.case(&id);
    assert_refusal(
        chain.run(
            &officer(9),
            act(&id, "license", CaseAction::Return, "one more"),
        ),
        Refusal::FailedPrecondition,
        &["is closed (approved)"],
    );
    assert_eq!(chain.case(&id), before);
}

#[test]
fn a_reject_or_return_without_a_reason_is_malformed() {
    let id = Digest::sha256(b"case");
    for action in [CaseAction::Reject, CaseAction::Return] {
        let message = malformed(act(&id, "license", action, ""));
        assert!(message.contains("act_on_case.reason is empty"), "{message}");
    }
    let message = malformed(act(&id, "license", CaseAction::Unspecified, ""));
    assert!(message.contains("is not APPROVE (1)"), "{message}");
}

#[test]
fn an_action_after_the_deadline_is_refused() {
    let mut chain = Chain::new();
    let mut body = restaurant();
    body.steps[0].deadline_ms = 2 * HOUR_MS;
    body.steps[2].deadline_ms = HOUR_MS;
    chain.ok(&commerce(), Body::DefineWorkflow(body));
    chain.ok(&health(), register(&health_inspector(), "inspector"));
    chain.ok(&fire(), register(&fire_inspector_a(), "inspector"));
    chain.ok(&fire(), register(&fire_inspector_b(), "inspector"));
    chain.ok(&commerce(), register(&licensing(), "licensing"));
    let id = chain.ok(&commerce(), open(1));
    let opened = chain.now_ms;
    assert_eq!(
        chain.step(&id, "health-inspection").deadline_ms,
        opened + 2 * HOUR_MS
    );
    assert_eq!(chain.step(&id, "fire-inspection").deadline_ms, 0);
    chain.advance(2 * HOUR_MS);
    // At the deadline itself the step still takes actions.
    chain.ok(&fire_inspector_a(), approve(&id, "fire-inspection"));
    chain.now_ms = opened + 2 * HOUR_MS + 1;
    assert_refusal(
        chain.run(&health_inspector(), approve(&id, "health-inspection")),
        Refusal::FailedPrecondition,
        &[
            "passed its deadline",
            &format!("{} ms", opened + 2 * HOUR_MS),
        ],
    );
    assert_eq!(
        chain.step(&id, "health-inspection").state,
        StepState::Ready as i32
    );
    // The license's deadline runs from when it became ready, not from the
    // opening.
    let mut chain = Chain::new();
    let mut body = restaurant();
    body.steps[2].deadline_ms = HOUR_MS;
    chain.ok(&commerce(), Body::DefineWorkflow(body));
    chain.ok(&health(), register(&health_inspector(), "inspector"));
    chain.ok(&fire(), register(&fire_inspector_a(), "inspector"));
    chain.ok(&fire(), register(&fire_inspector_b(), "inspector"));
    chain.ok(&commerce(), register(&licensing(), "licensing"));
    let id = chain.ok(&commerce(), open(1));
    chain.advance(10 * HOUR_MS);
    chain.ok(&health_inspector(), approve(&id, "health-inspection"));
    chain.ok(&fire_inspector_a(), approve(&id, "fire-inspection"));
    chain.ok(&fire_inspector_b(), approve(&id, "fire-inspection"));
    assert_eq!(
        chain.step(&id, "license").deadline_ms,
        chain.now_ms + HOUR_MS
    );
    chain.advance(HOUR_MS + 1);
    assert_refusal(
        chain.run(&licensing(), approve(&id, "license")),
        Refusal::FailedPrecondition,
        &["\"license\"", "passed its deadline"],
    );
}

#[test]
fn a_returned_case_waits_for_the_applicants_amendment() {
    let mut chain = Chain::restaurant();
    let id = chain.ok(&citizen(), open(1));
    chain.ok(&fire_inspector_a(), approve(&id, "fire-inspection"));
    chain.ok(&health_inspector(), approve(&id, "health-inspection"));
    chain.ok(
        &fire_inspector_b(),
        act(
            &id,
            "fire-inspection",
            CaseAction::Return,
            "send the evacuation plan",
        ),
    );
    let case = chain.case(&id);
    assert_eq!(case.state, CaseState::Returned as i32);
    assert_eq!(case.reason, "send the evacuation plan");
    assert_refusal(
        chain.run(&fire_inspector_b(), approve(&id, "fire-inspection")),
        Refusal::FailedPrecondition,
        &["returned to the applicant", "send the evacuation plan"],
    );
    assert_refusal(
        chain.run(&other_citizen(), amend(&id)),
        Refusal::PermissionDenied,
        &["only the applicant may amend"],
    );
    chain.advance(HOUR_MS);
    chain.ok(&citizen(), amend(&id));
    let case = chain.case(&id);
    assert_eq!(case.state, CaseState::Open as i32);
    let names: Vec<&str> = case.documents.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, vec!["floor-plan", "menu"]);
    assert!(case.documents[0].cid.starts_with("bafkreib"));
    // The approved step stays approved; the partial approval is cleared.
    assert_eq!(case.steps[0].state, StepState::Approved as i32);
    assert!(case.steps[1].approvals.is_empty());
    assert_eq!(case.steps[1].ready_ms, chain.now_ms);
    chain.ok(&fire_inspector_a(), approve(&id, "fire-inspection"));
    assert_refusal(
        chain.run(&citizen(), amend(&id)),
        Refusal::FailedPrecondition,
        &["is open, not returned"],
    );
}

#[test]
fn a_case_history_is_bounded() {
    let mut chain = Chain::restaurant();
    let id = chain.ok(&citizen(), open(1));
    let give_back = || act(&id, "fire-inspection", CaseAction::Return, "more");
    // Each round adds a return and an amendment to the opening.
    let refusal = loop {
        if let Err(refusal) = chain.run(&fire_inspector_a(), give_back()) {
            break refusal;
        }
        if let Err(refusal) = chain.run(&citizen(), amend(&id)) {
            break refusal;
        }
    };
    assert!(
        matches!(&refusal, Refusal::FailedPrecondition(m) if m.contains("2048 events, the most one case keeps")),
        "{refusal:?}"
    );
    let case = chain.case(&id);
    assert_eq!(case.events.len(), CASE_EVENTS_MAX);
    // The last return fit; its amendment did not.
    assert_eq!(case.state, CaseState::Returned as i32);
}

#[test]
fn a_step_naming_its_officers_takes_only_them() {
    let mut chain = Chain::new();
    let mut body = restaurant();
    body.steps[1].approvals_required = 1;
    body.steps[1].officers = vec![fire_inspector_b().public_key().as_bytes().to_vec()];
    chain.ok(&commerce(), Body::DefineWorkflow(body));
    chain.ok(&fire(), register(&fire_inspector_a(), "inspector"));
    chain.ok(&fire(), register(&fire_inspector_b(), "inspector"));
    let id = chain.ok(&commerce(), open(1));
    assert_refusal(
        chain.run(&fire_inspector_a(), approve(&id, "fire-inspection")),
        Refusal::PermissionDenied,
        &["not one of the 1 officers step \"fire-inspection\" names"],
    );
    chain.ok(&fire_inspector_b(), approve(&id, "fire-inspection"));
    assert_eq!(
        chain.step(&id, "fire-inspection").state,
        StepState::Approved as i32
    );
}

#[test]
fn unknown_cases_and_steps_are_not_found() {
    let mut chain = Chain::restaurant();
    let id = chain.ok(&citizen(), open(1));
    assert_refusal(
        chain.run(&health_inspector(), approve(&id, "police-check")),
        Refusal::NotFound,
        &["has no step \"police-check\""],
    );
    let unknown = Digest::sha256(b"no such case");
    assert_refusal(
        chain.run(&health_inspector(), approve(&unknown, "health-inspection")),
        Refusal::NotFound,
        &["no case", &unknown.to_hex()],
    );
}

#[test]
fn malformed_cases_are_refused_before_state() {
    let mut body = OpenCase {
        workflow_id: "open-restaurant".into(),
        workflow_version: 1,
        documents: vec![document("plan", 'a'), document("plan", 'b')],
    };
    assert!(malformed(Body::OpenCase(body.clone())).contains("names document \"plan\" twice"));
    body.documents = vec![CaseDocument {
        name: "plan".into(),
        cid: "QmNotBase32".into(),
    }];
    assert!(malformed(Body::OpenCase(body.clone())).contains("is not a base32 CIDv1"));
    body.documents.clear();
    body.workflow_version = 0;
    assert!(malformed(Body::OpenCase(body)).contains("workflow_version must be at least 1"));
}

// ----- lists ----------------------------------------------------------------

#[test]
fn cases_are_listed_by_applicant_department_and_workflow_in_pages() {
    let mut chain = Chain::restaurant();
    let mut health_definition = restaurant();
    health_definition.workflow_id = "food-stall".into();
    health_definition.steps.truncate(1);
    chain.ok(&health(), Body::DefineWorkflow(health_definition));
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(chain.ok(&citizen(), open(1)));
    }
    let stall = chain.ok(
        &citizen(),
        Body::OpenCase(OpenCase {
            workflow_id: "food-stall".into(),
            workflow_version: 1,
            documents: Vec::new(),
        }),
    );
    let by_fire = chain.ok(&fire(), open(1));
    chain.ok(&health_inspector(), approve(&ids[1], "health-inspection"));

    let list = |index: CaseIndex, first: u64, limit: usize| {
        let (cases, next) =
            cases_page(&chain.state, &index, first, limit, 1000, |_| true).expect("reads");
        let ids: Vec<Digest> = cases
            .iter()
            .map(|c| Digest::from_slice(&c.case_id).expect("an id"))
            .collect();
        (ids, next)
    };
    let mine = CaseIndex::Applicant(citizen().public_key());
    assert_eq!(
        list(mine.clone(), 1, 10),
        (vec![ids[0], ids[1], ids[2], stall], None)
    );
    assert_eq!(list(mine.clone(), 1, 2), (vec![ids[0], ids[1]], Some(3)));
    assert_eq!(list(mine, 3, 2), (vec![ids[2], stall], None));
    let fire_sees = list(CaseIndex::Department("fire".into()), 1, 10).0;
    assert_eq!(fire_sees, vec![ids[0], ids[1], ids[2], by_fire]);
    let health_sees = list(CaseIndex::Department("health".into()), 1, 10).0;
    assert_eq!(health_sees, vec![ids[0], ids[1], ids[2], stall, by_fire]);
    let restaurants = list(CaseIndex::Workflow("open-restaurant".into()), 1, 10).0;
    assert_eq!(restaurants, vec![ids[0], ids[1], ids[2], by_fire]);

    // Waiting for health: open with a ready health step.
    let (waiting, _) = cases_page(
        &chain.state,
        &CaseIndex::Workflow("open-restaurant".into()),
        1,
        10,
        1000,
        |case| case_waits_for(case, "health"),
    )
    .expect("reads");
    assert_eq!(waiting.len(), 3);
    assert!(waiting.iter().all(|c| c.case_id != ids[1].to_vec()));
    // A page reads at most `scanned_max` entries and says where to go on.
    let (cases, next) = cases_page(
        &chain.state,
        &CaseIndex::Workflow("open-restaurant".into()),
        1,
        10,
        2,
        |case| case.case_id == by_fire.to_vec(),
    )
    .expect("reads");
    assert!(cases.is_empty());
    assert_eq!(next, Some(3));
    assert!(case_visible_to(&chain.case(&by_fire), "fire"));
    assert!(!case_visible_to(&chain.case(&stall), "fire"));
    assert!(case_visible_to(&chain.case(&stall), "health"));
}

// ----- properties -----------------------------------------------------------

/// Who may act in the property test: the right officers, one of another
/// department, one with the wrong role, an unregistered key, the
/// applicant.
fn actors() -> Vec<SigningKey> {
    vec![
        health_inspector(),
        fire_inspector_a(),
        fire_inspector_b(),
        licensing(),
        commerce_clerk(),
        officer(9),
        citizen(),
    ]
}

const STEP_IDS: [&str; 4] = ["health-inspection", "fire-inspection", "license", "nope"];

#[derive(Clone, Debug)]
enum Move {
    Act {
        actor: usize,
        step: usize,
        action: i32,
    },
    Amend,
    Revoke(usize),
    Advance(u64),
}

fn moves() -> impl Strategy<Value = Move> {
    prop_oneof![
        8 => (0..7usize, 0..4usize, prop_oneof![6 => Just(1), 1 => Just(2), 1 => Just(3)])
            .prop_map(|(actor, step, action)| Move::Act { actor, step, action }),
        1 => Just(Move::Amend),
        1 => (0..4usize).prop_map(Move::Revoke),
        1 => (0..3 * HOUR_MS).prop_map(Move::Advance),
    ]
}

fn department_of(actor: usize) -> Option<(SigningKey, &'static str)> {
    match actor {
        0 => Some((health(), "health")),
        1 | 2 => Some((fire(), "fire")),
        3 => Some((commerce(), "commerce")),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Random actions never complete a step without M distinct officers
    /// of the step's department and role that were registered when they
    /// approved, never act on a blocked step, and never change a closed
    /// case.
    #[test]
    fn random_actions_keep_the_case_rules(moves in prop::collection::vec(moves(), 1..40)) {
        let mut chain = Chain::new();
        let mut body = restaurant();
        body.steps[0].deadline_ms = 4 * HOUR_MS;
        chain.ok(&commerce(), Body::DefineWorkflow(body));
        chain.ok(&health(), register(&health_inspector(), "inspector"));
        chain.ok(&fire(), register(&fire_inspector_a(), "inspector"));
        chain.ok(&fire(), register(&fire_inspector_b(), "inspector"));
        chain.ok(&commerce(), register(&licensing(), "licensing"));
        chain.ok(&commerce(), register(&commerce_clerk(), "clerk"));
        chain.ok(&citizen(), Body::CreateIdentity(CreateIdentity {}));
        let id = chain.ok(&citizen(), open(1));
        let definition = read_definition(&chain.state, "open-restaurant", 1).expect("reads").expect("defined");
        let actors = actors();
        // When each actor's registration was revoked.
        let mut revoked_at: BTreeMap<usize, u64> = BTreeMap::new();
        for step in moves {
            let before = chain.case(&id);
            let closed = before.state == CaseState::Approved as i32
                || before.state == CaseState::Rejected as i32;
            let result = match step {
                Move::Act { actor, step, action } => {
                    let body = act(&id, STEP_IDS[step], CaseAction::try_from(action).expect("valid"), "why");
                    Some(chain.run(&actors[actor], body))
                }
                Move::Amend => Some(chain.run(&citizen(), amend(&id))),
                Move::Revoke(actor) => {
                    if let Some((department, _)) = department_of(actor)
                        && !revoked_at.contains_key(&actor)
                    {
                        chain.ok(&department, revoke(&actors[actor]));
                        revoked_at.insert(actor, chain.now_ms);
                        // Later blocks are later in time, so an approval
                        // at the revocation's time came before it.
                        chain.advance(1);
                    }
                    None
                }
                Move::Advance(ms) => {
                    chain.advance(ms);
                    None
                }
            };
            let after = chain.case(&id);
            if closed {
                prop_assert_eq!(&after, &before, "a closed case changed");
                if let Some(result) = result {
                    prop_assert!(result.is_err(), "an action on a closed case was accepted");
                }
            }
            check_case(&after, &definition, &actors, &revoked_at)?;
        }
    }
}

/// The invariants of one case record.
fn check_case(
    case: &CaseRecord,
    definition: &WorkflowDefinition,
    actors: &[SigningKey],
    revoked_at: &BTreeMap<usize, u64>,
) -> Result<(), TestCaseError> {
    for (step, defined) in case.steps.iter().zip(&definition.steps) {
        let signers: BTreeSet<&[u8]> = step
            .approvals
            .iter()
            .map(|a| a.officer.as_slice())
            .collect();
        prop_assert_eq!(
            signers.len(),
            step.approvals.len(),
            "an officer signed twice"
        );
        for approval in &step.approvals {
            let actor = actors
                .iter()
                .position(|a| a.public_key().as_bytes() == approval.officer.as_slice())
                .expect("a known actor");
            prop_assert!(department_of(actor).is_some(), "a non-officer approved");
            let (_, department) = department_of(actor).expect("checked");
            prop_assert_eq!(department, defined.department.as_str());
            prop_assert!(actor != 4, "the clerk has the wrong role");
            if let Some(&revoked) = revoked_at.get(&actor) {
                prop_assert!(
                    approval.approved_ms <= revoked,
                    "approved by a revoked officer"
                );
            }
            prop_assert!(
                approval.approved_ms >= step.ready_ms,
                "approved before ready"
            );
            if step.deadline_ms != 0 {
                prop_assert!(
                    approval.approved_ms <= step.deadline_ms,
                    "approved after the deadline"
                );
            }
        }
        let approved = step.state == StepState::Approved as i32;
        prop_assert_eq!(
            approved,
            step.approvals.len() >= defined.approvals_required as usize,
            "step {} is {} with {} approvals",
            &step.step_id,
            step_state_name(step.state),
            step.approvals.len()
        );
        if step.state != StepState::Blocked as i32 {
            for dependency in &defined.depends_on {
                let dependency = case
                    .steps
                    .iter()
                    .find(|s| &s.step_id == dependency)
                    .expect("known");
                prop_assert_eq!(dependency.state, StepState::Approved as i32);
                prop_assert!(dependency.approved_ms <= step.ready_ms);
            }
        } else {
            prop_assert!(step.approvals.is_empty());
        }
    }
    let all_approved = case
        .steps
        .iter()
        .all(|s| s.state == StepState::Approved as i32);
    prop_assert_eq!(all_approved, case.state == CaseState::Approved as i32);
    Ok(())
}

mod automatic;
