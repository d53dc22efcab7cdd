//! Tests of the directory rules. Each transaction is signed, checked with
//! `check_envelope`, prechecked as at admission and executed as in a block;
//! the harness asserts that precheck and execution agree.

use std::collections::BTreeMap;

use govchain_crypto::SigningKey;
use govchain_proto::types::v1::{
    ActOnCase, AnchorRecord, CaseAction, CaseState, DefineWorkflow, KAnonymityReport,
    RegisterOfficer, StepKind, TransactionOutcome, WorkflowStep, transaction::Body,
};
use proptest::prelude::*;

use super::*;
use crate::execute::{Overlay, execute, precheck};
use crate::identity::Departments;
use crate::transaction::tests::{CHAIN, sign};
use crate::transaction::{TransactionError, check_envelope};

const PAYLOAD_BYTES_MAX: usize = 16 * 1024;

fn health() -> SigningKey {
    SigningKey::from_seed([10; 32])
}

fn fire() -> SigningKey {
    SigningKey::from_seed([11; 32])
}

fn data_officer() -> SigningKey {
    SigningKey::from_seed([120; 32])
}

fn departments() -> Departments {
    let department = |name: &str, key: &SigningKey| Department {
        name: name.into(),
        public_key: key.public_key(),
        attests: Default::default(),
        node_key: None,
    };
    Departments::new([department("health", &health()), department("fire", &fire())])
}

fn cid(letter: char) -> String {
    format!("bafkrei{}", letter.to_string().repeat(52))
}

fn entry(dataset: &str, policy: DatasetAccessPolicy) -> PublishDatasetEntry {
    PublishDatasetEntry {
        dataset: dataset.into(),
        description: "Vaccinations by district and month".into(),
        schema_cid: cid('s'),
        sensitivity: DatasetSensitivity::Internal.into(),
        update_frequency: "monthly".into(),
        access_policy: policy.into(),
        workflow_id: if policy == DatasetAccessPolicy::ByRequest {
            "data-sharing".into()
        } else {
            String::new()
        },
    }
}

fn version(dataset: &str, letter: char) -> DatasetVersion {
    DatasetVersion {
        dataset: dataset.into(),
        batch_cid: cid(letter),
        row_count: 120,
        rules_hash: vec![7; 32],
        k_anonymity: Some(KAnonymityReport {
            smallest_group_size: 5,
            quasi_identifiers: vec!["district".into(), "birth_year".into()],
            groups: 12,
        }),
    }
}

fn request(dataset: &str) -> Body {
    Body::RequestDatasetAccess(RequestDatasetAccess {
        dataset: dataset.into(),
        purpose: "fire risk planning".into(),
        documents: Vec::new(),
    })
}

fn sharing_workflow() -> DefineWorkflow {
    DefineWorkflow {
        workflow_id: "data-sharing".into(),
        title: "Share a dataset".into(),
        steps: vec![WorkflowStep {
            step_id: "steward-review".into(),
            kind: StepKind::Officer.into(),
            department: "health".into(),
            role: "data-steward".into(),
            approvals_required: 1,
            officers: Vec::new(),
            depends_on: Vec::new(),
            deadline_ms: 0,
            documents: Vec::new(),
            attributes: Vec::new(),
            rule: String::new(),
        }],
    }
}

/// An access workflow of one automatic step that `rule` decides; health's
/// data stewards may override it.
fn automatic_sharing_workflow(rule: &str) -> DefineWorkflow {
    let mut workflow = sharing_workflow();
    workflow.workflow_id = "auto-sharing".into();
    let step = &mut workflow.steps[0];
    step.kind = StepKind::Automatic.into();
    step.approvals_required = 0;
    step.rule = rule.into();
    workflow
}

#[derive(Default)]
struct MemoryState(BTreeMap<Vec<u8>, Vec<u8>>);

impl StateRead for MemoryState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.0.get(key).cloned())
    }
}

struct Chain {
    state: MemoryState,
    departments: Departments,
    nonces: BTreeMap<[u8; 32], u64>,
    height: u64,
}

impl Chain {
    fn new() -> Self {
        Self {
            state: MemoryState::default(),
            departments: departments(),
            nonces: BTreeMap::new(),
            height: 0,
        }
    }

    /// Health defines the data-sharing workflow and registers its steward.
    fn with_workflow() -> Self {
        let mut chain = Self::new();
        chain.ok(&health(), Body::DefineWorkflow(sharing_workflow()));
        chain.ok(
            &health(),
            Body::RegisterOfficer(RegisterOfficer {
                officer: data_officer().public_key().as_bytes().to_vec(),
                role: "data-steward".into(),
            }),
        );
        chain
    }

    fn run(&mut self, key: &SigningKey, body: Body) -> Result<Digest, Refusal> {
        let nonce = self.nonces.entry(*key.public_key().as_bytes()).or_default();
        *nonce += 1;
        let transaction =
            check_envelope(sign(key, *nonce, body), CHAIN, PAYLOAD_BYTES_MAX, |_, _| {
                false
            })
            .expect("a well-formed transaction");
        self.height += 1;
        let now_ms = 1_700_000_000_000 + self.height;
        let prechecked = precheck(
            &self.state,
            &self.departments,
            &transaction,
            self.height,
            now_ms,
        )
        .expect("state reads");
        let context = Context {
            departments: &self.departments,
            height: self.height,
            now_ms,
        };
        let mut overlay = Overlay::new(&self.state);
        let result = execute(&mut overlay, &transaction, &context).expect("state reads");
        let writes = std::mem::take(&mut overlay.writes);
        match &prechecked {
            Ok(()) => assert_eq!(result.outcome, TransactionOutcome::Success as i32),
            Err(refusal) => {
                assert_eq!(result.outcome, TransactionOutcome::Failed as i32);
                assert_eq!(result.error, refusal.to_string());
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

    fn refused(&mut self, key: &SigningKey, body: Body) -> Refusal {
        self.run(key, body)
            .expect_err("the transaction must be refused")
    }
}

fn publish(dataset: &str, policy: DatasetAccessPolicy) -> Body {
    Body::PublishDatasetEntry(entry(dataset, policy))
}

fn malformed(body: Body) -> String {
    match check_envelope(
        sign(&health(), 1, body),
        CHAIN,
        PAYLOAD_BYTES_MAX,
        |_, _| false,
    ) {
        Err(TransactionError::Malformed(message)) => message,
        other => panic!("expected a malformed transaction, got {other:?}"),
    }
}

#[test]
fn publishing_again_makes_the_next_entry_version_and_keeps_the_first() {
    let mut chain = Chain::new();
    chain.ok(
        &health(),
        publish("health/vaccinations", DatasetAccessPolicy::Open),
    );
    let mut changed = entry("health/vaccinations", DatasetAccessPolicy::Open);
    changed.description = "Vaccinations by district, weekly".into();
    chain.ok(&health(), Body::PublishDatasetEntry(changed));
    let latest = read_entry(&chain.state, "health/vaccinations")
        .expect("reads")
        .expect("published");
    assert_eq!(latest.entry_version, 2);
    assert_eq!(latest.owner, "health");
    assert_eq!(latest.created_height, 1);
    let first = read_entry_version(&chain.state, "health/vaccinations", 1)
        .expect("reads")
        .expect("kept");
    assert_eq!(
        first.entry.expect("body").description,
        "Vaccinations by district and month"
    );
    // Listed once, however often it is published.
    assert_eq!(dataset_count(&chain.state).expect("reads"), 1);
    // Its schema blob is known as its, and served by the owner's node only.
    assert_eq!(
        schema_dataset(&chain.state, &cid('s'))
            .expect("reads")
            .as_deref(),
        Some("health/vaccinations")
    );
    assert_eq!(
        schema_dataset(&chain.state, &cid('t')).expect("reads"),
        None
    );
    assert_eq!(schema_release(&latest, "health"), Release::Serve);
    assert!(matches!(
        schema_release(&latest, "fire"),
        Release::NotReleased(_)
    ));
}

#[test]
fn only_the_owner_publishes_in_its_namespace_or_after_the_first_publication() {
    let mut chain = Chain::new();
    let refusal = chain.refused(
        &fire(),
        publish("health/vaccinations", DatasetAccessPolicy::Open),
    );
    assert!(
        matches!(refusal, Refusal::PermissionDenied(_)),
        "{refusal:?}"
    );
    assert!(
        refusal.to_string().contains("department \"health\"'s"),
        "{refusal}"
    );
    // A name outside every namespace belongs to its first publisher.
    chain.ok(
        &fire(),
        publish("census/districts", DatasetAccessPolicy::Open),
    );
    let refusal = chain.refused(
        &health(),
        publish("census/districts", DatasetAccessPolicy::Open),
    );
    assert!(
        refusal.to_string().contains("department \"fire\"'s"),
        "{refusal}"
    );
    let refusal = chain.refused(
        &data_officer(),
        publish("other/x", DatasetAccessPolicy::Open),
    );
    assert!(
        refusal
            .to_string()
            .contains("not a department's signing key"),
        "{refusal}"
    );
}

#[test]
fn a_by_request_entry_needs_a_workflow_of_its_owner() {
    let mut chain = Chain::new();
    let refusal = chain.refused(
        &health(),
        publish("health/visits", DatasetAccessPolicy::ByRequest),
    );
    assert!(matches!(refusal, Refusal::NotFound(_)), "{refusal:?}");
    chain.ok(&fire(), Body::DefineWorkflow(sharing_workflow()));
    let refusal = chain.refused(
        &health(),
        publish("health/visits", DatasetAccessPolicy::ByRequest),
    );
    assert!(
        matches!(refusal, Refusal::PermissionDenied(_)),
        "{refusal:?}"
    );
    assert!(
        refusal
            .to_string()
            .contains("workflow \"data-sharing\" is department \"fire\"'s")
    );
}

#[test]
fn entries_are_checked_before_they_are_ordered() {
    let mut body = entry("Health/X", DatasetAccessPolicy::Open);
    assert!(malformed(Body::PublishDatasetEntry(body.clone())).contains("is not a dataset name"));
    body.dataset = "health//x".into();
    assert!(malformed(Body::PublishDatasetEntry(body.clone())).contains("is not a dataset name"));
    body.dataset = "health/x".into();
    body.description = "d".repeat(DESCRIPTION_BYTES_MAX + 1);
    assert!(malformed(Body::PublishDatasetEntry(body.clone())).contains("at most 1024"));
    body.description.clear();
    body.access_policy = DatasetAccessPolicy::ByRequest.into();
    assert!(malformed(Body::PublishDatasetEntry(body.clone())).contains("workflow_id is required"));
    body.access_policy = DatasetAccessPolicy::Open.into();
    body.workflow_id = "data-sharing".into();
    assert!(malformed(Body::PublishDatasetEntry(body.clone())).contains("only for a by-request"));
    body.workflow_id.clear();
    body.sensitivity = 0;
    assert!(malformed(Body::PublishDatasetEntry(body.clone())).contains("sensitivity 0"));
    body.sensitivity = 9;
    assert!(malformed(Body::PublishDatasetEntry(body.clone())).contains("sensitivity 9"));
    body.sensitivity = DatasetSensitivity::Personal.into();
    assert!(
        malformed(Body::PublishDatasetEntry(body)).contains("personal dataset may not be open")
    );
    let mut data = version("health/x", 'a');
    data.rules_hash = vec![1; 31];
    assert!(malformed(Body::DatasetVersion(data.clone())).contains("32-byte"));
    data.rules_hash = vec![1; 32];
    data.batch_cid = "not-a-cid".into();
    assert!(malformed(Body::DatasetVersion(data)).contains("base32 CIDv1"));
    let mut ask = RequestDatasetAccess {
        dataset: "health/x".into(),
        purpose: " ".into(),
        documents: Vec::new(),
    };
    assert!(malformed(Body::RequestDatasetAccess(ask.clone())).contains("purpose is empty"));
    ask.purpose = "p".repeat(TEXT_BYTES_MAX + 1);
    assert!(malformed(Body::RequestDatasetAccess(ask)).contains("at most 256"));
}

#[test]
fn versions_are_numbered_by_the_owner_and_need_an_entry() {
    let mut chain = Chain::new();
    let refusal = chain.refused(
        &health(),
        Body::DatasetVersion(version("health/vaccinations", 'a')),
    );
    assert!(matches!(refusal, Refusal::NotFound(_)), "{refusal:?}");
    assert!(refusal.to_string().contains("has no directory entry"));
    chain.ok(
        &health(),
        publish("health/vaccinations", DatasetAccessPolicy::Open),
    );
    chain.ok(
        &health(),
        Body::DatasetVersion(version("health/vaccinations", 'a')),
    );
    chain.ok(
        &health(),
        Body::DatasetVersion(version("health/vaccinations", 'b')),
    );
    let refusal = chain.refused(
        &fire(),
        Body::DatasetVersion(version("health/vaccinations", 'c')),
    );
    assert!(
        matches!(refusal, Refusal::PermissionDenied(_)),
        "{refusal:?}"
    );
    let (versions, next) =
        versions_page(&chain.state, "health/vaccinations", None, 10).expect("reads");
    assert_eq!(
        versions.iter().map(|v| v.number).collect::<Vec<_>>(),
        vec![2, 1]
    );
    assert_eq!(next, None);
    let (page, next) = versions_page(&chain.state, "health/vaccinations", None, 1).expect("reads");
    assert_eq!(page[0].number, 2);
    assert_eq!(next, Some(1));
    assert_eq!(
        versions[1]
            .version
            .as_ref()
            .and_then(|v| v.k_anonymity.as_ref())
            .map(|k| k.smallest_group_size),
        Some(5)
    );
    assert_eq!(
        blob_dataset(&chain.state, &cid('a'))
            .expect("reads")
            .as_deref(),
        Some("health/vaccinations")
    );
    // A batch is one dataset's.
    chain.ok(
        &health(),
        publish("health/other", DatasetAccessPolicy::Open),
    );
    let refusal = chain.refused(
        &health(),
        Body::DatasetVersion(version("health/other", 'a')),
    );
    assert!(matches!(refusal, Refusal::AlreadyExists(_)), "{refusal:?}");
}

#[test]
fn anchors_in_a_published_dataset_come_only_from_its_owner() {
    let mut chain = Chain::new();
    let anchor = |dataset: &str, record_id: &str| {
        Body::AnchorRecord(AnchorRecord {
            dataset: dataset.into(),
            record_id: record_id.into(),
            record_hash: vec![3; 32],
            schema: String::new(),
            record_time_ms: 1,
        })
    };
    // Outside every namespace and the directory, anyone anchors.
    chain.ok(&health(), anchor("census/districts", "r1"));
    chain.ok(
        &fire(),
        publish("census/districts", DatasetAccessPolicy::Open),
    );
    let refusal = chain.refused(&health(), anchor("census/districts", "r2"));
    assert!(
        matches!(refusal, Refusal::PermissionDenied(_)),
        "{refusal:?}"
    );
    assert!(
        refusal.to_string().contains("owned by department \"fire\""),
        "{refusal}"
    );
    chain.ok(&fire(), anchor("census/districts", "r2"));
}

#[test]
fn an_approved_request_records_a_grant_and_the_release_rule_follows_it() {
    let mut chain = Chain::with_workflow();
    chain.ok(
        &health(),
        publish("health/visits", DatasetAccessPolicy::ByRequest),
    );
    chain.ok(
        &health(),
        Body::DatasetVersion(version("health/visits", 'a')),
    );
    let entry = read_entry(&chain.state, "health/visits")
        .expect("reads")
        .expect("entry");
    assert_eq!(
        blob_release(&entry, "fire", "health", None),
        Release::GrantRequired {
            workflow_id: "data-sharing".into()
        }
    );
    assert_eq!(
        blob_release(&entry, "health", "health", None),
        Release::Serve
    );
    assert!(matches!(
        blob_release(&entry, "health", "fire", None),
        Release::NotReleased(_)
    ));
    let refusal = chain.refused(&health(), request("health/visits"));
    assert!(matches!(refusal, Refusal::AlreadyExists(_)), "{refusal:?}");
    let case_id = chain.ok(&fire(), request("health/visits"));
    let case = approval::read_case(&chain.state, &case_id)
        .expect("reads")
        .expect("opened");
    assert_eq!(case.applicant_department, "fire");
    assert_eq!(case.workflow_id, "data-sharing");
    assert!(
        read_grant(&chain.state, "health/visits", "fire")
            .expect("reads")
            .is_none()
    );
    chain.ok(
        &data_officer(),
        Body::ActOnCase(ActOnCase {
            case_id: case_id.to_vec(),
            step_id: "steward-review".into(),
            action: CaseAction::Approve.into(),
            reason: String::new(),
        }),
    );
    let case = approval::read_case(&chain.state, &case_id)
        .expect("reads")
        .expect("case");
    assert_eq!(case.state, CaseState::Approved as i32);
    let grant = read_grant(&chain.state, "health/visits", "fire")
        .expect("reads")
        .expect("granted");
    assert_eq!(grant.case_id, case_id.to_vec());
    assert_eq!(grant.purpose, "fire risk planning");
    assert_eq!(
        blob_release(&entry, "fire", "health", Some(&grant)),
        Release::Serve
    );
    let (grants, next) =
        grants_page(&chain.state, "health/visits", 1, 10, |_| true).expect("reads");
    assert_eq!(grants.len(), 1);
    assert_eq!(next, None);
    let refusal = chain.refused(&fire(), request("health/visits"));
    assert!(
        refusal.to_string().contains("already has access"),
        "{refusal}"
    );
}

/// The grant follows the case however it is approved: by its rule as the
/// request opens it, or by an officer's override of an automatic step.
#[test]
fn a_request_approved_by_a_rule_or_an_override_records_the_grant() {
    for (rule, overridden) in [("true", false), ("false", true)] {
        let mut chain = Chain::with_workflow();
        chain.ok(
            &health(),
            Body::DefineWorkflow(automatic_sharing_workflow(rule)),
        );
        let mut entry = entry("health/visits", DatasetAccessPolicy::ByRequest);
        entry.workflow_id = "auto-sharing".into();
        chain.ok(&health(), Body::PublishDatasetEntry(entry));
        let case_id = chain.ok(&fire(), request("health/visits"));
        let granted = |chain: &Chain| {
            read_grant(&chain.state, "health/visits", "fire")
                .expect("reads")
                .map(|grant| grant.case_id)
        };
        if overridden {
            assert_eq!(granted(&chain), None, "rule {rule}: no grant yet");
            chain.ok(
                &data_officer(),
                Body::ActOnCase(ActOnCase {
                    case_id: case_id.to_vec(),
                    step_id: "steward-review".into(),
                    action: CaseAction::OverrideApprove.into(),
                    reason: "checked by hand".into(),
                }),
            );
        }
        let case = approval::read_case(&chain.state, &case_id)
            .expect("reads")
            .expect("case");
        assert_eq!(case.state, CaseState::Approved as i32, "rule {rule}");
        assert_eq!(granted(&chain), Some(case_id.to_vec()), "rule {rule}");
    }
}

#[test]
fn only_by_request_datasets_take_requests_and_cases_of_other_workflows_grant_nothing() {
    let mut chain = Chain::with_workflow();
    chain.ok(&health(), publish("health/open", DatasetAccessPolicy::Open));
    let refusal = chain.refused(&fire(), request("health/open"));
    assert!(
        matches!(refusal, Refusal::FailedPrecondition(_)),
        "{refusal:?}"
    );
    let refusal = chain.refused(&fire(), request("health/none"));
    assert!(matches!(refusal, Refusal::NotFound(_)), "{refusal:?}");
    // A plain case against the same workflow is no request.
    let case_id = chain.ok(
        &fire(),
        Body::OpenCase(OpenCase {
            workflow_id: "data-sharing".into(),
            workflow_version: 1,
            documents: Vec::new(),
        }),
    );
    chain.ok(
        &data_officer(),
        Body::ActOnCase(ActOnCase {
            case_id: case_id.to_vec(),
            step_id: "steward-review".into(),
            action: CaseAction::Approve.into(),
            reason: String::new(),
        }),
    );
    assert!(
        read_request(&chain.state, case_id.as_bytes())
            .expect("reads")
            .is_none()
    );
    assert_eq!(grant_count(&chain.state, "health/open").expect("reads"), 0);
    let entry = read_entry(&chain.state, "health/open")
        .expect("reads")
        .expect("entry");
    assert_eq!(blob_release(&entry, "fire", "health", None), Release::Serve);
}

#[test]
fn search_pages_in_publication_order_with_a_scan_bound() {
    let mut chain = Chain::new();
    for name in ["health/a-vax", "health/b-visits", "health/c-vax"] {
        chain.ok(&health(), publish(name, DatasetAccessPolicy::Open));
    }
    let keep = |e: &DatasetEntry| entry_matches(e, "VAX");
    let (found, next) = entries_page(&chain.state, 1, 10, 100, keep).expect("reads");
    let names: Vec<_> = found
        .iter()
        .map(|e| e.entry.as_ref().expect("body").dataset.clone())
        .collect();
    assert_eq!(names, vec!["health/a-vax", "health/c-vax"]);
    assert_eq!(next, None);
    // Two entries scanned: one match and a token to go on.
    let (found, next) = entries_page(&chain.state, 1, 10, 2, keep).expect("reads");
    assert_eq!(found.len(), 1);
    assert_eq!(next, Some(3));
    assert!(entry_matches(&found[0], "district vaccinations"));
    assert!(!entry_matches(&found[0], "district census"));
}

proptest! {
    /// Whoever signs and in whatever order, a dataset has one owner for
    /// good, its entry versions count every successful publication, and
    /// its data versions are numbered 1, 2, … by the owner alone.
    #[test]
    fn a_dataset_keeps_one_owner_and_dense_versions(
        steps in proptest::collection::vec((any::<bool>(), any::<bool>(), 0u8..3), 1..24)
    ) {
        let mut chain = Chain::new();
        let mut owner: Option<&str> = None;
        let mut published = 0u64;
        let mut versions = 0u64;
        for (by_fire, is_version, letter) in steps {
            let (key, name) = if by_fire { (fire(), "fire") } else { (health(), "health") };
            let body = if is_version {
                // Batches repeat: a batch may be a version of its dataset twice.
                let data = version("shared/data", char::from(b'a' + letter));
                Body::DatasetVersion(data)
            } else {
                publish("shared/data", DatasetAccessPolicy::Open)
            };
            let result = chain.run(&key, body);
            let expect_ok = owner.is_none_or(|o| o == name) && (!is_version || owner.is_some());
            prop_assert_eq!(result.is_ok(), expect_ok);
            if result.is_ok() {
                if is_version { versions += 1 } else { published += 1; owner = Some(name) }
            }
        }
        let entry = read_entry(&chain.state, "shared/data").expect("reads");
        prop_assert_eq!(entry.as_ref().map_or(0, |e| e.entry_version), published);
        prop_assert_eq!(entry.map(|e| e.owner), owner.map(str::to_owned));
        prop_assert_eq!(version_count(&chain.state, "shared/data").expect("reads"), versions);
        for number in 1..=versions {
            let record = read_version(&chain.state, "shared/data", number).expect("reads");
            prop_assert_eq!(record.map(|r| r.number), Some(number));
        }
    }
}
