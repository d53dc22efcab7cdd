//! A realistic bundle built here as a chain would make it (transactions
//! executed by `exec`, blocks with RFC 6962 roots, commit certificates of
//! three or four of four validators), then every byte of every signed
//! field, proof step and certificate altered, one at a time.

use std::collections::BTreeMap;

use govchain_crypto::{Digest, SigningKey, merkle_inclusion_proof, merkle_root};
use govchain_exec::{
    Departments, MemoryTree, StateError, StateRead, apply_committed, block_hash, check_envelope,
    update_tree,
};
use govchain_pbft::commit_signing_bytes;
use govchain_pki::{ConsensusParams, DepartmentEntry, Genesis, ValidatorEntry};
use govchain_proto::node::v1::{GetTransactionResponse, TransactionStatus};
use govchain_proto::types::v1::{
    ActOnCase, BlockHeader, CaseAction, CaseDocument, CaseRecord, CaseState, CommitCertificate,
    CommitSignature, CreateIdentity, DefineWorkflow, InclusionProof, OpenCase, RegisterOfficer,
    StepKind, Transaction, TransactionEnvelope, TransactionOutcome, WorkflowStep,
    transaction::Body,
};
use prost::Message as _;

use super::verify::{BundleError, verify_bundle};
use super::*;

const CHAIN: &str = "bundle-test";
const DEPARTMENTS: [&str; 4] = ["health", "tax", "police", "civil"];

fn validator_key(i: u8) -> SigningKey {
    SigningKey::from_seed([i + 1; 32])
}

fn department_key(name: &str) -> SigningKey {
    let i = DEPARTMENTS.iter().position(|d| *d == name).expect("known") as u8;
    SigningKey::from_seed([i + 20; 32])
}

fn genesis() -> Genesis {
    Genesis {
        chain_id: CHAIN.into(),
        validators: (0..4u8)
            .map(|i| {
                let name = DEPARTMENTS[i as usize];
                ValidatorEntry {
                    name: name.into(),
                    consensus_public_key: validator_key(i).public_key().to_hex(),
                    tls_identity: format!("spiffe://govchain/dept/{name}/node"),
                }
            })
            .collect(),
        consensus: ConsensusParams::default(),
        departments: DEPARTMENTS
            .iter()
            .map(|name| DepartmentEntry {
                name: (*name).into(),
                signing_public_key: department_key(name).public_key().to_hex(),
                attests: Vec::new(),
            })
            .collect(),
    }
}

/// A signer and its next nonce.
struct Signer {
    key: SigningKey,
    nonce: u64,
}

impl Signer {
    fn new(key: SigningKey) -> Self {
        Self { key, nonce: 0 }
    }

    fn sign(&mut self, body: Body) -> TransactionEnvelope {
        self.nonce += 1;
        let payload = Transaction { body: Some(body) }.encode_to_vec();
        let signer = self.key.public_key().as_bytes().to_vec();
        let id = govchain_exec::transaction_id(CHAIN, &signer, self.nonce, &payload);
        TransactionEnvelope {
            chain_id: CHAIN.into(),
            signer,
            nonce: self.nonce,
            payload: payload.into(),
            signature: self.key.sign(id.as_bytes()).to_vec(),
        }
    }
}

fn id_of(envelope: &TransactionEnvelope) -> Digest {
    govchain_exec::transaction_id(
        &envelope.chain_id,
        &envelope.signer,
        envelope.nonce,
        &envelope.payload,
    )
}

#[derive(Default)]
struct Memory(BTreeMap<Vec<u8>, Vec<u8>>);

impl StateRead for Memory {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.0.get(key).cloned())
    }
}

/// A small chain: blocks of transactions, executed in order by `exec`,
/// each block certified; answers `GetTransaction` with proofs.
struct Chain {
    genesis: Genesis,
    /// In force now, with their history (as governance keeps them).
    departments: Departments,
    state: Memory,
    tree: MemoryTree,
    answers: BTreeMap<Digest, GetTransactionResponse>,
    height: u64,
    /// The last block's header and certificate, for state proofs.
    last: Option<(Vec<u8>, CommitCertificate)>,
}

impl Chain {
    fn new() -> Self {
        let genesis = genesis();
        Self {
            departments: govchain_node::departments(&genesis),
            genesis,
            state: Memory::default(),
            tree: MemoryTree::default(),
            answers: BTreeMap::new(),
            height: 0,
            last: None,
        }
    }

    /// Appends a block of `transactions`, certified by the first `signers`
    /// validators; every transaction must succeed.
    fn block(&mut self, transactions: Vec<TransactionEnvelope>, signers: u8) {
        self.block_writing(transactions, signers, BTreeMap::new());
    }

    /// `block`, whose execution also writes `extra` (what governance's end
    /// of block writes).
    fn block_writing(
        &mut self,
        transactions: Vec<TransactionEnvelope>,
        signers: u8,
        extra: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ) {
        self.height += 1;
        let timestamp_ms = 1_700_000_000_000 + self.height * 1_000;
        let mut writes = extra;
        let departments = self.departments.as_of(self.height);
        for envelope in &transactions {
            let verified =
                check_envelope(envelope.clone(), CHAIN, 65_536, |_, _| false).expect("valid");
            let replayed = apply_committed(
                &self.state,
                &departments,
                &verified,
                self.height,
                timestamp_ms,
            )
            .expect("state");
            assert_eq!(
                replayed.result.outcome(),
                TransactionOutcome::Success,
                "{}",
                replayed.result.error
            );
            for (key, value) in replayed.writes {
                match &value {
                    Some(value) => self.state.0.insert(key.clone(), value.clone()),
                    None => self.state.0.remove(&key),
                };
                writes.insert(key, value);
            }
        }
        for (key, value) in &writes {
            if let Some(value) = value {
                self.state.0.insert(key.clone(), value.clone());
            }
        }
        let update = update_tree(&self.tree, &writes).expect("tree");
        self.tree.apply(&update.writes);
        let ids: Vec<Digest> = transactions.iter().map(id_of).collect();
        let view = 2;
        let header = BlockHeader {
            chain_id: CHAIN.into(),
            height: self.height,
            parent_hash: vec![7; 32],
            transactions_root: merkle_root(&ids).to_vec(),
            state_root: update.root.to_vec(),
            timestamp_ms,
            view,
            proposer_index: 1,
            transaction_count: ids.len() as u32,
            next_validators: Vec::new(),
        };
        let header_bytes = header.encode_to_vec();
        let hash = block_hash(&header_bytes);
        let signing = commit_signing_bytes(CHAIN, view, self.height, &hash);
        let certificate = CommitCertificate {
            height: self.height,
            view,
            block_hash: hash.to_vec(),
            signatures: (0..signers)
                .map(|i| CommitSignature {
                    validator_index: u32::from(i),
                    signature: validator_key(i).sign(&signing).to_vec(),
                })
                .collect(),
        };
        self.last = Some((header_bytes.clone(), certificate.clone()));
        for (index, envelope) in transactions.into_iter().enumerate() {
            let path = merkle_inclusion_proof(&ids, index).expect("in the block");
            self.answers.insert(
                ids[index],
                GetTransactionResponse {
                    transaction_id: ids[index].to_vec(),
                    status: TransactionStatus::Committed.into(),
                    block_height: self.height,
                    block_hash: hash.to_vec(),
                    index: index as u32,
                    envelope: Some(envelope),
                    proof: Some(InclusionProof {
                        header: header_bytes.clone(),
                        certificate: Some(certificate.clone()),
                        leaf_index: index as u64,
                        tree_size: ids.len() as u64,
                        audit_path: path.iter().map(Digest::to_vec).collect(),
                        validator_set_changes: Vec::new(),
                    }),
                    ..Default::default()
                },
            );
        }
    }

    fn bundled(&self, envelope: &TransactionEnvelope) -> BundledTransaction {
        BundledTransaction::from_response(&self.answers[&id_of(envelope)]).expect("proven")
    }

    /// A block in which governance gives `department` the signing key
    /// `key`, in force from the next block.
    fn replace_key(&mut self, department: &str, key: &SigningKey) {
        let height = self.height + 1;
        let mut registry = self.departments.to_registry();
        let record = registry
            .departments
            .iter_mut()
            .find(|d| d.name == department)
            .expect("a department");
        record
            .former_keys
            .push(govchain_proto::types::v1::FormerSigningKey {
                signing_key: record.signing_key.clone(),
                from_height: record.key_since_height,
                until_height: height,
            });
        record.signing_key = key.public_key().as_bytes().to_vec();
        record.key_since_height = height + 1;
        self.departments = govchain_node::departments(&self.genesis)
            .from_registry(&registry)
            .expect("a registry");
        let writes = BTreeMap::from([(
            govchain_exec::governance::DEPARTMENTS_KEY.to_vec(),
            Some(registry.encode_to_vec()),
        )]);
        self.block_writing(Vec::new(), 3, writes);
    }

    /// The departments registry, proven against the last block.
    fn departments_proof(&self) -> govchain_evidence::BundledDepartments {
        let key = govchain_exec::governance::DEPARTMENTS_KEY;
        let proof = govchain_exec::prove(&self.tree, key).expect("proof");
        let (header, certificate) = self.last.clone().expect("a block");
        let (leaf_key_hash, leaf_value_hash) = proof
            .leaf()
            .map_or((Vec::new(), Vec::new()), |(k, v)| (k.to_vec(), v.to_vec()));
        let wire = govchain_proto::types::v1::StateProof {
            header,
            certificate: Some(certificate),
            siblings: proof.siblings().iter().map(Digest::to_vec).collect(),
            leaf_key_hash,
            leaf_value_hash,
            validator_set_changes: Vec::new(),
        };
        govchain_evidence::BundledDepartments {
            value: self.state.0.get(key).cloned().unwrap_or_default(),
            proof: govchain_evidence::BundledStateProof::from_wire(&wire).expect("certified"),
        }
    }
}

fn step(id: &str, department: &str, role: &str, depends_on: &[&str]) -> WorkflowStep {
    WorkflowStep {
        step_id: id.into(),
        kind: StepKind::Officer.into(),
        department: department.into(),
        role: role.into(),
        approvals_required: 1,
        depends_on: depends_on.iter().map(|d| (*d).into()).collect(),
        documents: vec!["floor-plan".into()],
        ..Default::default()
    }
}

fn act(case_id: &Digest, step: &str) -> Body {
    Body::ActOnCase(ActOnCase {
        case_id: case_id.to_vec(),
        step_id: step.into(),
        action: CaseAction::Approve.into(),
        reason: String::new(),
    })
}

/// The restaurant workflow: a health inspection, then tax's licence.
fn define_restaurant() -> Body {
    Body::DefineWorkflow(DefineWorkflow {
        workflow_id: "open-restaurant".into(),
        title: "Open a restaurant".into(),
        steps: vec![
            step("health-inspection", "health", "inspector", &[]),
            step("license", "tax", "licensing", &["health-inspection"]),
        ],
    })
}

fn register(officer: &SigningKey, role: &str) -> Body {
    Body::RegisterOfficer(RegisterOfficer {
        officer: officer.public_key().as_bytes().to_vec(),
        role: role.into(),
    })
}

/// A citizen's restaurant case, with its floor plan.
fn open_restaurant() -> Body {
    Body::OpenCase(OpenCase {
        workflow_id: "open-restaurant".into(),
        workflow_version: 1,
        documents: vec![CaseDocument {
            name: "floor-plan".into(),
            cid: format!("bafkrei{}", "a".repeat(52)),
        }],
    })
}

/// The restaurant case, approved: definition, two officers, the citizen's
/// identity, the case opened and both steps approved (in one block, in
/// dependency order), with an unrelated transaction beside the opening.
fn restaurant_bundle() -> CaseBundle {
    let mut chain = Chain::new();
    let mut tax = Signer::new(department_key("tax"));
    let mut health = Signer::new(department_key("health"));
    let mut inspector = Signer::new(SigningKey::from_seed([40; 32]));
    let mut licenser = Signer::new(SigningKey::from_seed([41; 32]));
    let mut citizen = Signer::new(SigningKey::from_seed([42; 32]));
    let mut other = Signer::new(SigningKey::from_seed([43; 32]));

    let define = tax.sign(define_restaurant());
    let register_inspector = health.sign(register(&inspector.key, "inspector"));
    let register_licenser = tax.sign(register(&licenser.key, "licensing"));
    let identity = citizen.sign(Body::CreateIdentity(CreateIdentity {}));
    chain.block(
        vec![
            define.clone(),
            register_inspector.clone(),
            register_licenser.clone(),
            identity.clone(),
        ],
        3,
    );
    let open = citizen.sign(open_restaurant());
    let unrelated = other.sign(Body::CreateIdentity(CreateIdentity {}));
    chain.block(vec![unrelated.clone(), open.clone()], 4);
    let case_id = id_of(&open);
    let approve_health = inspector.sign(act(&case_id, "health-inspection"));
    let approve_license = licenser.sign(act(&case_id, "license"));
    chain.block(vec![approve_health.clone(), approve_license.clone()], 3);

    let case = govchain_exec::approval::read_case(&chain.state, &case_id)
        .expect("state")
        .expect("opened");
    assert_eq!(case.state(), CaseState::Approved);
    CaseBundle {
        format: FORMAT.into(),
        case_id: case_id.to_vec(),
        genesis: chain.genesis.clone(),
        case: case.encode_to_vec(),
        definitions: vec![chain.bundled(&define)],
        officers: vec![
            chain.bundled(&register_inspector),
            chain.bundled(&register_licenser),
        ],
        applicant: vec![chain.bundled(&identity)],
        actions: vec![
            chain.bundled(&open),
            chain.bundled(&approve_health),
            chain.bundled(&approve_license),
        ],
        departments: None,
    }
}

/// Tax replaces its signing key between defining the workflow (old key)
/// and registering its licensing officer (new key); the bundle carries the
/// departments registry proven at its last block.
fn key_change_bundle() -> CaseBundle {
    let mut chain = Chain::new();
    let mut tax = Signer::new(department_key("tax"));
    let mut health = Signer::new(department_key("health"));
    let mut inspector = Signer::new(SigningKey::from_seed([40; 32]));
    let mut licenser = Signer::new(SigningKey::from_seed([41; 32]));
    let mut citizen = Signer::new(SigningKey::from_seed([42; 32]));

    let define = tax.sign(define_restaurant());
    chain.block(vec![define.clone()], 3);
    let mut new_tax = Signer::new(SigningKey::from_seed([77; 32]));
    chain.replace_key("tax", &new_tax.key);
    let register_inspector = health.sign(register(&inspector.key, "inspector"));
    let register_licenser = new_tax.sign(register(&licenser.key, "licensing"));
    let identity = citizen.sign(Body::CreateIdentity(CreateIdentity {}));
    chain.block(
        vec![
            register_inspector.clone(),
            register_licenser.clone(),
            identity.clone(),
        ],
        3,
    );
    let open = citizen.sign(open_restaurant());
    chain.block(vec![open.clone()], 4);
    let case_id = id_of(&open);
    let approve_health = inspector.sign(act(&case_id, "health-inspection"));
    let approve_license = licenser.sign(act(&case_id, "license"));
    chain.block(vec![approve_health.clone(), approve_license.clone()], 3);
    let case = govchain_exec::approval::read_case(&chain.state, &case_id)
        .expect("state")
        .expect("opened");
    assert_eq!(case.state(), CaseState::Approved);
    CaseBundle {
        format: FORMAT.into(),
        case_id: case_id.to_vec(),
        genesis: chain.genesis.clone(),
        case: case.encode_to_vec(),
        definitions: vec![chain.bundled(&define)],
        officers: vec![
            chain.bundled(&register_inspector),
            chain.bundled(&register_licenser),
        ],
        applicant: vec![chain.bundled(&identity)],
        actions: vec![
            chain.bundled(&open),
            chain.bundled(&approve_health),
            chain.bundled(&approve_license),
        ],
        departments: Some(chain.departments_proof()),
    }
}

#[test]
fn a_department_key_changed_mid_case_replays_with_each_heights_key() {
    let bundle = key_change_bundle();
    let verified = verify_bundle(&bundle, Some(&genesis())).expect("an honest bundle");
    assert_eq!(verified.case.state(), CaseState::Approved);
    let text = serde_json::to_string(&bundle).expect("serializes");
    let back: CaseBundle = serde_json::from_str(&text).expect("parses");
    assert_eq!(back, bundle);

    // Without the registry, the new key is no department's.
    let without = CaseBundle {
        departments: None,
        ..bundle.clone()
    };
    let err = verify_bundle(&without, None).expect_err("genesis's departments only");
    assert_names_item(&err, "officer 2", "");
    // A registry other than the proven one.
    let mut forged = bundle.clone();
    if let Some(departments) = &mut forged.departments {
        departments.value = Vec::new();
    }
    let err = verify_bundle(&forged, None).expect_err("not the proven value");
    assert!(matches!(err, BundleError::Departments(_)), "{err}");
    // A registry proven before the last transaction could miss a change.
    let early = CaseBundle {
        departments: Some(registry_proven_at_the_change()),
        ..bundle.clone()
    };
    let err = verify_bundle(&early, None).expect_err("proven too early");
    assert!(
        err.to_string()
            .contains("before the bundle's last transaction"),
        "{err}"
    );
}

/// The registry proven at block 2, where the key changed: a chain that
/// ends there has the same first two blocks as `key_change_bundle`'s.
fn registry_proven_at_the_change() -> govchain_evidence::BundledDepartments {
    let mut early = Chain::new();
    let mut tax = Signer::new(department_key("tax"));
    let define = tax.sign(define_restaurant());
    early.block(vec![define], 3);
    early.replace_key("tax", &SigningKey::from_seed([77; 32]));
    early.departments_proof()
}

#[test]
fn an_honest_bundle_verifies_and_survives_json() {
    let bundle = restaurant_bundle();
    let verified = verify_bundle(&bundle, Some(&genesis())).expect("an honest bundle");
    assert_eq!(verified.case.state(), CaseState::Approved);
    assert_eq!(verified.case.events.len(), 3);
    assert_eq!(verified.transactions, 7);
    assert_eq!(verified.blocks, 3);
    assert_eq!(verified.quorum, 3);
    assert_eq!(verified.genesis_hash, genesis().hash());
    let text = serde_json::to_string_pretty(&bundle).expect("serializes");
    assert!(
        text.contains("\"format\": \"govchain-case-bundle/1\""),
        "{text}"
    );
    let back: CaseBundle = serde_json::from_str(&text).expect("parses");
    assert_eq!(back, bundle);
}

/// Where a byte can be altered in one bundled transaction: every signed
/// field, the claims about where it is, every proof step and every
/// certificate field.
fn byte_fields(t: &mut BundledTransaction) -> Vec<(&'static str, &mut [u8])> {
    let mut fields: Vec<(&'static str, &mut [u8])> = vec![
        ("transaction id", t.transaction_id.as_mut_slice()),
        ("block hash", t.block_hash.as_mut_slice()),
        ("signer", t.envelope.signer.as_mut_slice()),
        ("payload", t.envelope.payload.as_mut_slice()),
        ("signature", t.envelope.signature.as_mut_slice()),
        ("header", t.proof.header.as_mut_slice()),
        (
            "certificate block hash",
            t.proof.certificate.block_hash.as_mut_slice(),
        ),
    ];
    for step in &mut t.proof.audit_path {
        fields.push(("audit path step", step.as_mut_slice()));
    }
    for signature in &mut t.proof.certificate.signatures {
        fields.push(("commit signature", signature.signature.as_mut_slice()));
    }
    fields
}

/// The integer fields of a bundled transaction, by name.
const INTEGERS: [&str; 7] = [
    "nonce",
    "block height",
    "index",
    "leaf index",
    "tree size",
    "certificate height",
    "certificate view",
];

/// Flips the bits of `mask` in the integer field `which`; false if the
/// field is too narrow for it.
fn flip_integer(t: &mut BundledTransaction, which: &str, mask: u64) -> bool {
    match which {
        "nonce" => t.envelope.nonce ^= mask,
        "block height" => t.block_height ^= mask,
        "leaf index" => t.proof.leaf_index ^= mask,
        "tree size" => t.proof.tree_size ^= mask,
        "certificate height" => t.proof.certificate.height ^= mask,
        "certificate view" => t.proof.certificate.view ^= mask,
        "index" => match u32::try_from(mask) {
            Ok(mask) => t.index ^= mask,
            Err(_) => return false,
        },
        other => panic!("no integer {other}"),
    }
    true
}

/// Transaction `number` (from 0) of section `section` (bundle order).
fn item_mut(bundle: &mut CaseBundle, section: usize, number: usize) -> &mut BundledTransaction {
    let [definitions, officers, applicant, actions] = bundle.sections_mut();
    let list = match section {
        0 => definitions,
        1 => officers,
        2 => applicant,
        _ => actions,
    };
    &mut list[number]
}

fn assert_names_item(err: &BundleError, item: &str, what: &str) {
    match err {
        BundleError::Item { item: named, .. } => assert!(
            named.starts_with(&format!("{item} (")),
            "{what} of {item} altered, but {named} is named: {err}"
        ),
        other => panic!("{what} of {item} altered: {other}"),
    }
}

#[test]
fn altering_any_byte_of_any_signed_field_proof_step_or_certificate_fails() {
    let honest = restaurant_bundle();
    let trusted = genesis();
    let mut checked = 0usize;
    for section in 0..4 {
        let (name, transactions) = honest.sections()[section];
        for (number, transaction) in transactions.iter().enumerate() {
            let item = format!("{name} {}", number + 1);
            let field_count = byte_fields(&mut transaction.clone()).len();
            for field in 0..field_count {
                let len = byte_fields(&mut transaction.clone())[field].1.len();
                assert!(len > 0, "{item}: field {field} is empty");
                for at in 0..len {
                    let mut lie = honest.clone();
                    let target = item_mut(&mut lie, section, number);
                    let mut fields = byte_fields(target);
                    let what = fields[field].0;
                    fields[field].1[at] ^= 0x01;
                    let err = verify_bundle(&lie, Some(&trusted))
                        .expect_err(&format!("{item}: byte {at} of its {what} altered"));
                    assert_names_item(&err, &item, what);
                    checked += 1;
                }
            }
            for which in INTEGERS {
                for byte in 0..8 {
                    let mut lie = honest.clone();
                    let target = item_mut(&mut lie, section, number);
                    if !flip_integer(target, which, 1 << (8 * byte)) {
                        continue;
                    }
                    let err = verify_bundle(&lie, Some(&trusted))
                        .expect_err(&format!("{item}: byte {byte} of its {which}"));
                    assert_names_item(&err, &item, which);
                    checked += 1;
                }
            }
            // Each commit signature's validator index, and the chain id.
            let signatures = transaction.proof.certificate.signatures.len();
            for s in 0..signatures {
                for byte in 0..4 {
                    let mut lie = honest.clone();
                    item_mut(&mut lie, section, number)
                        .proof
                        .certificate
                        .signatures[s]
                        .validator_index ^= 1 << (8 * byte);
                    let err = verify_bundle(&lie, Some(&trusted))
                        .expect_err(&format!("{item}: validator index of signature {s}"));
                    assert_names_item(&err, &item, "validator index");
                    checked += 1;
                }
            }
            for at in 0..CHAIN.len() {
                let mut lie = honest.clone();
                let chain_id = &mut item_mut(&mut lie, section, number).envelope.chain_id;
                let mut bytes = std::mem::take(chain_id).into_bytes();
                bytes[at] ^= 0x01;
                *chain_id = String::from_utf8(bytes).expect("still ASCII");
                let err = verify_bundle(&lie, Some(&trusted))
                    .expect_err(&format!("{item}: byte {at} of its chain id"));
                assert_names_item(&err, &item, "chain id");
                checked += 1;
            }
        }
    }
    // 7 transactions of several hundred bytes each: thousands of checks,
    // not a sample.
    assert!(checked > 3_000, "only {checked} alterations checked");
}

#[test]
fn an_altered_claim_about_the_case_is_refused_or_means_the_same_case() {
    let honest = restaurant_bundle();
    let claimed = CaseRecord::decode(honest.case.as_slice()).expect("decodes");
    for at in 0..honest.case.len() {
        let mut lie = honest.clone();
        lie.case[at] ^= 0x01;
        match verify_bundle(&lie, None) {
            Err(BundleError::ClaimedCase(_) | BundleError::Outcome(_)) => {}
            Err(other) => panic!("byte {at} of the claimed case: {other}"),
            // Protobuf can spell one record several ways; what counts is
            // that no other case is accepted.
            Ok(verified) => assert_eq!(verified.case, claimed, "byte {at}"),
        }
    }
    let mut lie = honest.clone();
    let mut case = claimed.clone();
    case.state = CaseState::Rejected.into();
    lie.case = case.encode_to_vec();
    let err = verify_bundle(&lie, None).expect_err("a claimed rejection");
    assert!(
        err.to_string()
            .contains("it claims state rejected, the replay gives approved"),
        "{err}"
    );
}

#[test]
fn leaving_out_or_reordering_evidence_fails_the_replay() {
    let honest = restaurant_bundle();

    // Without the licensing officer's registration the licence was given
    // by no officer.
    let mut lie = honest.clone();
    lie.officers.remove(1);
    let err = verify_bundle(&lie, None).expect_err("an officer left out");
    assert!(
        err.to_string()
            .starts_with("action 3 (approve step license by"),
        "{err}"
    );
    assert!(err.to_string().contains("fails"), "{err}");

    // Without the last approval the case is not approved.
    let mut lie = honest.clone();
    lie.actions.pop();
    let err = verify_bundle(&lie, None).expect_err("an approval left out");
    assert!(matches!(err, BundleError::Outcome(_)), "{err}");

    // The replay follows the chain's order, not the bundle's.
    let mut reordered = honest.clone();
    reordered.actions.reverse();
    reordered.officers.reverse();
    verify_bundle(&reordered, None).expect("chain order comes from the proofs");

    // A transaction twice.
    let mut lie = honest.clone();
    let open = lie.actions[0].clone();
    lie.actions.push(open);
    let err = verify_bundle(&lie, None).expect_err("a duplicate");
    assert!(err.to_string().contains("in the bundle twice"), "{err}");

    // An unrelated (but proven) transaction passed off as an action.
    let mut lie = honest.clone();
    let identity = lie.applicant[0].clone();
    lie.actions.push(identity);
    lie.applicant.clear();
    let err = verify_bundle(&lie, None).expect_err("not an event");
    assert!(err.to_string().contains("is not an event of case"), "{err}");
}

#[test]
fn another_genesis_or_format_is_refused() {
    let honest = restaurant_bundle();
    let mut other = genesis();
    other.chain_id = "another-chain".into();
    let err = verify_bundle(&honest, Some(&other)).expect_err("another genesis");
    assert!(matches!(err, BundleError::UntrustedGenesis { .. }), "{err}");

    // A bundle whose genesis names other validators: their certificates
    // are not the ones in the blocks.
    let mut lie = honest.clone();
    lie.genesis.validators[0].consensus_public_key =
        SigningKey::from_seed([99; 32]).public_key().to_hex();
    let err = verify_bundle(&lie, None).expect_err("other validators");
    assert_names_item(&err, "definition 1", "validator key");

    let mut lie = honest.clone();
    lie.format = "govchain-case-bundle/2".into();
    assert!(matches!(
        verify_bundle(&lie, None),
        Err(BundleError::Format { .. })
    ));
}
