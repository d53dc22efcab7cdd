//! Governance through the block path: proposals and approvals built into
//! blocks by `build_block`, checked by `check_block`, applied to a memory
//! state, and the header's `next_validators` read back.

use std::collections::BTreeMap;
use std::sync::Arc;

use govchain_crypto::SigningKey;
use govchain_proto::types::v1::transaction::Body;
use govchain_proto::types::v1::{
    Block, BlockHeader, ErrorReason, TransactionOutcome, TransactionResult,
};
use prost::Message as _;

use super::*;
use crate::identity::Department;
use crate::state_tree::{MemoryTree, TreeRead};
use crate::transaction::tests::{CHAIN, sign};
use crate::{BlockLimits, CheckContext, Head, build_block, check_block, check_envelope};

const START_MS: u64 = 1_000_000;

/// Five genesis departments `dept0..dept4`; the first four run the genesis
/// validators 0..3, `dept4` runs an observer with `observer_key()`.
struct Chain {
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    tree: MemoryTree,
    head: Head,
    limits: BlockLimits,
    nonces: BTreeMap<u8, u64>,
    now_ms: u64,
}

fn signing(i: u8) -> SigningKey {
    SigningKey::from_seed([0x40 + i; 32])
}

fn consensus(i: u8) -> SigningKey {
    SigningKey::from_seed([0x80 + i; 32])
}

struct View<'a>(&'a BTreeMap<Vec<u8>, Vec<u8>>, &'a MemoryTree);

impl StateRead for View<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.0.get(key).cloned())
    }
}

impl TreeRead for View<'_> {
    fn tree_node(&self, path: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.1.tree_node(path)
    }
}

fn add(department: u8) -> ProposeValidatorChange {
    ProposeValidatorChange {
        change: Some(ValidatorChange {
            change: Some(Change::Add(AddValidator {
                department: format!("dept{department}"),
                consensus_key: consensus(department).public_key().as_bytes().to_vec(),
                endpoint: format!("127.0.0.1:{}", 7000 + u32::from(department)),
            })),
        }),
        deadline_ms: START_MS + 60_000,
        reason: "a new bureau joins".into(),
    }
}

fn remove(index: u32) -> ProposeValidatorChange {
    ProposeValidatorChange {
        change: Some(ValidatorChange {
            change: Some(Change::Remove(RemoveValidator {
                validator_index: index,
            })),
        }),
        deadline_ms: START_MS + 60_000,
        reason: "decommissioned".into(),
    }
}

impl Chain {
    fn new() -> Self {
        let departments = Departments::new((0..5).map(|i| Department {
            name: format!("dept{i}"),
            public_key: signing(i).public_key(),
            attests: Default::default(),
            node_key: (i < 4).then(|| consensus(i).public_key()),
        }))
        .with_genesis_validators(
            (0..4)
                .map(|i| (format!("dept{i}"), consensus(i).public_key()))
                .collect(),
        );
        Self {
            state: BTreeMap::new(),
            tree: MemoryTree::default(),
            head: Head {
                height: 0,
                hash: Digest::sha256(b"genesis"),
                state_root: Digest::default(),
                timestamp_ms: START_MS,
            },
            limits: BlockLimits {
                transactions_max: 100,
                bytes_max: 1 << 20,
                payload_bytes_max: 4096,
                genesis_departments: Arc::new(departments),
            },
            nonces: BTreeMap::new(),
            now_ms: START_MS,
        }
    }

    fn tx(&mut self, department: u8, body: Body) -> crate::VerifiedTransaction {
        let nonce = self.nonces.entry(department).or_insert(0);
        *nonce += 1;
        let envelope = sign(&signing(department), *nonce, body);
        check_envelope(envelope, CHAIN, 4096, |_, _| false).expect("well formed")
    }

    fn approve(&mut self, department: u8, id: &Digest) -> crate::VerifiedTransaction {
        self.tx(
            department,
            Body::ApproveValidatorChange(ApproveValidatorChange {
                proposal_id: id.to_vec(),
            }),
        )
    }

    fn set(&self) -> ValidatorSetRecord {
        current_set(
            &View(&self.state, &self.tree),
            &self.limits.genesis_departments,
        )
        .expect("set")
    }

    /// Builds, checks and applies one block of `transactions` proposed by
    /// the primary of view 0 in the set in force; returns the results and
    /// the header.
    fn block(
        &mut self,
        transactions: Vec<crate::VerifiedTransaction>,
    ) -> (Vec<TransactionResult>, BlockHeader) {
        self.now_ms += 1_000;
        let primary = validator_set(&self.set()).expect("valid").primary(0);
        let view = View(&self.state, &self.tree);
        let built = build_block(
            CHAIN,
            &self.head,
            0,
            primary,
            self.now_ms,
            &transactions,
            &self.limits,
            &view,
        )
        .expect("build");
        let checked = check_block(
            &CheckContext {
                chain_id: CHAIN,
                head: &self.head,
                limits: &self.limits,
                timestamp_ms_max: self.now_ms,
            },
            &built.hash,
            &built.encoded,
            &view,
            |_, _| false,
        )
        .expect("the built block checks");
        assert_eq!(checked.executed, built.executed);
        self.tree.apply(&built.executed.tree_writes);
        for (key, value) in &built.executed.writes {
            match value {
                Some(value) => self.state.insert(key.clone(), value.clone()),
                None => self.state.remove(key),
            };
        }
        self.head = Head {
            height: built.header.height,
            hash: built.hash,
            state_root: built.executed.state_root,
            timestamp_ms: built.header.timestamp_ms,
        };
        let results = built
            .executed
            .transactions
            .iter()
            .map(|(_, r)| r.clone())
            .collect();
        (results, built.header)
    }

    fn proposal(&self, id: &Digest) -> ValidatorProposal {
        read_proposal(&View(&self.state, &self.tree), id)
            .expect("read")
            .expect("stored")
    }
}

fn ok(result: &TransactionResult) {
    assert_eq!(
        result.outcome(),
        TransactionOutcome::Success,
        "{}",
        result.error
    );
}

fn refused(result: &TransactionResult, reason: ErrorReason, text: &str) {
    assert_eq!(result.outcome(), TransactionOutcome::Failed);
    assert_eq!(result.reason(), reason, "{}", result.error);
    assert!(result.error.contains(text), "{}", result.error);
}

fn indexes(header: &BlockHeader) -> Vec<u32> {
    header.next_validators.iter().map(|v| v.index).collect()
}

#[test]
fn an_added_validator_takes_effect_after_a_quorum_and_then_votes_to_remove_one() {
    let mut chain = Chain::new();
    assert_eq!(chain.set().members.len(), 4);
    // dept0 proposes dept4's node; its own approval counts: 1 of 3.
    let propose = chain.tx(0, Body::ProposeValidatorChange(add(4)));
    let id = propose.id;
    let (results, header) = chain.block(vec![propose]);
    ok(&results[0]);
    assert!(header.next_validators.is_empty());
    assert_eq!(chain.proposal(&id).status(), ProposalStatus::Pending);
    // dept1 approves: 2 of 3, nothing changes yet.
    let first = chain.approve(1, &id);
    let (results, header) = chain.block(vec![first]);
    ok(&results[0]);
    assert!(header.next_validators.is_empty());
    // dept2's approval reaches 3 of 4: the block announces the new set.
    let second = chain.approve(2, &id);
    let (results, header) = chain.block(vec![second]);
    ok(&results[0]);
    assert_eq!(indexes(&header), vec![0, 1, 2, 3, 4]);
    let set = chain.set();
    assert_eq!(set.since_height, header.height + 1);
    assert_eq!(set.change_heights, vec![header.height]);
    assert_eq!(set.next_index, 5);
    let added = set.members.iter().find(|m| m.index == 4).expect("added");
    assert_eq!(added.department, "dept4");
    assert_eq!(added.tls_identity, "spiffe://govchain/dept/dept4/node");
    assert_eq!(added.endpoint, "127.0.0.1:7004");
    let proposal = chain.proposal(&id);
    assert_eq!(proposal.status(), ProposalStatus::Applied);
    assert_eq!(proposal.applied_height, header.height);
    assert_eq!(proposal.approvals, vec!["dept0", "dept1", "dept2"]);
    // A late approval of an applied proposal is refused.
    let late = chain.approve(3, &id);
    let (results, _) = chain.block(vec![late]);
    refused(
        &results[0],
        ErrorReason::FailedPrecondition,
        "no longer pending",
    );

    // Now n = 5 and a quorum is 4; the new member proposes removing 1.
    let propose = chain.tx(4, Body::ProposeValidatorChange(remove(1)));
    let id = propose.id;
    let approvals: Vec<_> = [0, 2].into_iter().map(|d| chain.approve(d, &id)).collect();
    let (results, header) = chain.block([vec![propose], approvals].concat());
    results.iter().for_each(ok);
    assert!(header.next_validators.is_empty(), "3 of 5 is not a quorum");
    let last = chain.approve(3, &id);
    let (_, header) = chain.block(vec![last]);
    assert_eq!(indexes(&header), vec![0, 2, 3, 4]);
    // The removed validator's department may no longer vote.
    let stale = chain.tx(1, Body::ProposeValidatorChange(add(1)));
    let (results, _) = chain.block(vec![stale]);
    refused(
        &results[0],
        ErrorReason::PermissionDenied,
        "runs no validator",
    );
    // Blocks are now proposed by the primary of the new set: view 1's is 2.
    let set = validator_set(&chain.set()).expect("valid");
    assert_eq!(set.primary(1), 2);
}

#[test]
fn proposals_and_approvals_are_refused_with_reasons() {
    let mut chain = Chain::new();
    let cases = [
        // dept4 runs no validator.
        (
            4,
            add(4),
            ErrorReason::PermissionDenied,
            "runs no validator",
        ),
        // dept1 already runs one.
        (
            0,
            add(1),
            ErrorReason::FailedPrecondition,
            "already runs a validator",
        ),
        (
            0,
            remove(9),
            ErrorReason::FailedPrecondition,
            "not in the set",
        ),
        (
            0,
            ProposeValidatorChange {
                deadline_ms: START_MS,
                ..add(4)
            },
            ErrorReason::FailedPrecondition,
            "deadline",
        ),
    ];
    for (department, body, reason, text) in cases {
        let tx = chain.tx(department, Body::ProposeValidatorChange(body));
        let (results, _) = chain.block(vec![tx]);
        refused(&results[0], reason, text);
    }
    let unknown = chain.tx(
        1,
        Body::ApproveValidatorChange(ApproveValidatorChange {
            proposal_id: vec![7; 32],
        }),
    );
    let (results, _) = chain.block(vec![unknown]);
    refused(&results[0], ErrorReason::NotFound, "no validator proposal");
    // Approving twice, and after the deadline.
    let propose = chain.tx(0, Body::ProposeValidatorChange(add(4)));
    let id = propose.id;
    chain.block(vec![propose]);
    let again = chain.approve(0, &id);
    let (results, _) = chain.block(vec![again]);
    refused(&results[0], ErrorReason::AlreadyExists, "already approved");
    chain.now_ms = START_MS + 120_000;
    let late = chain.approve(1, &id);
    let (results, header) = chain.block(vec![late]);
    refused(&results[0], ErrorReason::FailedPrecondition, "expired");
    assert!(header.next_validators.is_empty());
    assert_eq!(chain.set().members.len(), 4);
    // Stateless checks happen at admission.
    let empty = sign(
        &signing(0),
        99,
        Body::ProposeValidatorChange(ProposeValidatorChange {
            reason: " ".into(),
            ..add(4)
        }),
    );
    let err = check_envelope(empty, CHAIN, 4096, |_, _| false).expect_err("no reason");
    assert!(err.to_string().contains("reason is required"), "{err}");
}

#[test]
fn two_changes_approved_in_one_block_apply_in_order_and_a_moot_one_fails() {
    let mut chain = Chain::new();
    // Two proposals to add dept4 with different keys.
    let first = chain.tx(0, Body::ProposeValidatorChange(add(4)));
    let mut other = add(4);
    if let Some(ValidatorChange {
        change: Some(Change::Add(add)),
    }) = other.change.as_mut()
    {
        add.consensus_key = consensus(9).public_key().as_bytes().to_vec();
    }
    let second = chain.tx(1, Body::ProposeValidatorChange(other));
    let (first_id, second_id) = (first.id, second.id);
    chain.block(vec![first, second]);
    let txs = vec![
        chain.approve(1, &first_id),
        chain.approve(2, &first_id),
        chain.approve(0, &second_id),
        chain.approve(2, &second_id),
    ];
    let (results, header) = chain.block(txs);
    results.iter().for_each(ok);
    assert_eq!(indexes(&header), vec![0, 1, 2, 3, 4]);
    assert_eq!(chain.proposal(&first_id).status(), ProposalStatus::Applied);
    let second = chain.proposal(&second_id);
    assert_eq!(second.status(), ProposalStatus::Failed);
    assert!(
        second.error.contains("already runs a validator"),
        "{}",
        second.error
    );
    let key = &chain.set().members[4].consensus_key;
    assert_eq!(key, consensus(4).public_key().as_bytes());
}

#[test]
fn a_header_must_announce_exactly_the_set_execution_gives() {
    let mut chain = Chain::new();
    let propose = chain.tx(0, Body::ProposeValidatorChange(add(4)));
    let id = propose.id;
    chain.block(vec![propose]);
    let approvals: Vec<_> = [1, 2].into_iter().map(|d| chain.approve(d, &id)).collect();
    chain.now_ms += 1_000;
    let view = View(&chain.state, &chain.tree);
    let built = build_block(
        CHAIN,
        &chain.head,
        0,
        0,
        chain.now_ms,
        &approvals,
        &chain.limits,
        &view,
    )
    .expect("build");
    assert_eq!(indexes(&built.header), vec![0, 1, 2, 3, 4]);
    // A proposer that leaves the change out (or makes one up) is refused.
    for tamper in [Vec::new(), built.header.next_validators[..4].to_vec()] {
        let header = BlockHeader {
            next_validators: tamper,
            ..built.header.clone()
        };
        let mut block = Block::decode(built.encoded.as_ref()).expect("decode");
        block.header = header.encode_to_vec();
        let encoded = block.encode_to_vec();
        let hash = crate::block_hash(&block.header);
        let err = check_block(
            &CheckContext {
                chain_id: CHAIN,
                head: &chain.head,
                limits: &chain.limits,
                timestamp_ms_max: chain.now_ms,
            },
            &hash,
            &encoded,
            &view,
            |_, _| false,
        )
        .expect_err("a wrong set is refused");
        assert!(err.to_string().contains("next_validators"), "{err}");
    }
    // And the proposer must be the primary of the set in force.
    let err = check_block(
        &CheckContext {
            chain_id: CHAIN,
            head: &chain.head,
            limits: &chain.limits,
            timestamp_ms_max: chain.now_ms,
        },
        &built.hash,
        &built.encoded,
        &view,
        |_, _| false,
    );
    assert!(err.is_ok());
    let announced = announced_set(&built.header.next_validators)
        .expect("announced")
        .expect("valid");
    assert_eq!(announced.len(), 5);
}

#[test]
fn a_certificate_revoked_by_vote_is_listed_once() {
    let mut chain = Chain::new();
    let revoke = |serial: &str| ProposeValidatorChange {
        change: Some(ValidatorChange {
            change: Some(Change::RevokeCertificate(RevokeCertificate {
                serial: serial.into(),
                key_fingerprint: vec![9; 32],
            })),
        }),
        deadline_ms: START_MS + 60_000,
        reason: "key compromise".into(),
    };
    let propose = chain.tx(0, Body::ProposeValidatorChange(revoke("0a1b")));
    let id = propose.id;
    let approvals: Vec<_> = [1, 2].into_iter().map(|d| chain.approve(d, &id)).collect();
    let (results, header) = chain.block([vec![propose], approvals].concat());
    results.iter().for_each(ok);
    // A revocation does not change the set.
    assert!(header.next_validators.is_empty());
    assert_eq!(chain.set().members.len(), 4);
    let list = revocations(&View(&chain.state, &chain.tree)).expect("read");
    assert_eq!(list.revocations.len(), 1);
    let revocation = &list.revocations[0];
    assert_eq!(revocation.height, header.height);
    assert_eq!(revocation.reason, "key compromise");
    assert_eq!(revocation.proposal_id, id.to_vec());
    let revoked = revocation.certificate.as_ref().expect("named");
    assert!(revocation_covers(revoked, "0a1b", &[0; 32]));
    assert!(revocation_covers(revoked, "ffff", &[9; 32]));
    assert!(!revocation_covers(revoked, "ffff", &[0; 32]));
    // The same key again is moot.
    let again = chain.tx(0, Body::ProposeValidatorChange(revoke("0c")));
    let (results, _) = chain.block(vec![again]);
    refused(
        &results[0],
        ErrorReason::FailedPrecondition,
        "already revoked",
    );
}

#[test]
fn revocations_name_a_serial_or_a_fingerprint_in_canonical_form() {
    let named = |serial: &str, fingerprint: Vec<u8>| RevokeCertificate {
        serial: serial.into(),
        key_fingerprint: fingerprint,
    };
    assert!(validate_revocation(&named("0a1b", Vec::new())).is_ok());
    assert!(validate_revocation(&named("", vec![1; 32])).is_ok());
    assert!(validate_revocation(&named("00", Vec::new())).is_ok());
    for (serial, fingerprint) in [
        ("", Vec::new()),
        ("0A1B", Vec::new()),
        ("a1b", Vec::new()),
        ("00a1", Vec::new()),
        ("zz", Vec::new()),
        ("", vec![1; 31]),
    ] {
        let err = validate_revocation(&named(serial, fingerprint.clone()));
        assert!(err.is_err(), "{serial:?} {fingerprint:?}");
    }
    assert!(validate_revocation(&named(&"ab".repeat(21), Vec::new())).is_err());
}

fn anchor(version: &str) -> Body {
    Body::AnchorRecord(govchain_proto::types::v1::AnchorRecord {
        dataset: "dept3/permits".into(),
        record_id: "permit-1".into(),
        record_hash: Digest::sha256(version.as_bytes()).to_vec(),
        schema: "permit".into(),
        record_time_ms: 1,
    })
}

fn department_change(
    department: &str,
    signing_key: Option<&SigningKey>,
    attests: Option<&[&str]>,
) -> ProposeValidatorChange {
    ProposeValidatorChange {
        change: Some(ValidatorChange {
            change: Some(Change::Department(ChangeDepartment {
                department: department.into(),
                signing_key: signing_key
                    .map(|k| k.public_key().as_bytes().to_vec())
                    .unwrap_or_default(),
                attests: attests.map(|names| govchain_proto::types::v1::AttestPermissions {
                    names: names.iter().map(|n| (*n).to_owned()).collect(),
                }),
            })),
        }),
        deadline_ms: START_MS + 60_000,
        reason: "the department's key was lost".into(),
    }
}

impl Chain {
    /// Signed by `key`, with the nonces of slot `slot` (a key that is not
    /// `signing(slot)`).
    fn tx_with(&mut self, key: &SigningKey, slot: u8, body: Body) -> crate::VerifiedTransaction {
        let nonce = self.nonces.entry(slot).or_insert(0);
        *nonce += 1;
        let envelope = sign(key, *nonce, body);
        check_envelope(envelope, CHAIN, 4096, |_, _| false).expect("well formed")
    }

    fn departments(&self) -> Arc<Departments> {
        departments_in_force(
            &View(&self.state, &self.tree),
            &self.limits.genesis_departments,
        )
        .expect("departments")
    }

    /// Proposes `body` as dept0 and has dept1 and dept2 approve it: a
    /// quorum of the four genesis validators. Returns the block's header.
    fn pass(&mut self, body: ProposeValidatorChange) -> (Digest, BlockHeader) {
        let propose = self.tx(0, Body::ProposeValidatorChange(body));
        let id = propose.id;
        let approvals: Vec<_> = [1, 2].into_iter().map(|d| self.approve(d, &id)).collect();
        let (results, header) = self.block([vec![propose], approvals].concat());
        results.iter().for_each(ok);
        (id, header)
    }
}

#[test]
fn a_department_changes_its_signing_key_by_vote() {
    let mut chain = Chain::new();
    let new_key = SigningKey::from_seed([0x61; 32]);
    // dept0 has a proposal pending; dept3 anchored a record.
    let pending = chain.tx(0, Body::ProposeValidatorChange(add(4)));
    let pending_id = pending.id;
    let anchored = chain.tx(3, anchor("v1"));
    let (results, _) = chain.block(vec![pending, anchored]);
    results.iter().for_each(ok);

    let (id, header) = chain.pass(department_change("dept3", Some(&new_key), None));
    assert!(
        header.next_validators.is_empty(),
        "the validator set is unchanged"
    );
    assert_eq!(chain.proposal(&id).status(), ProposalStatus::Applied);
    let changed_at = header.height;
    let departments = chain.departments();
    let dept3 = departments.by_name("dept3").expect("still a department");
    assert_eq!(dept3.public_key, new_key.public_key());
    assert!(departments.by_key(&signing(3).public_key()).is_none());
    assert_eq!(
        departments.name_at(&signing(3).public_key(), changed_at),
        Some("dept3")
    );
    assert_eq!(
        departments.name_at(&signing(3).public_key(), changed_at + 1),
        None
    );
    assert_eq!(
        departments.name_at(&new_key.public_key(), changed_at + 1),
        Some("dept3")
    );

    // The old key no longer signs for dept3; the new one does, from
    // nonce 1.
    let old = chain.approve(3, &id);
    let (results, _) = chain.block(vec![old]);
    refused(
        &results[0],
        ErrorReason::PermissionDenied,
        "not a department's signing key in force",
    );
    let approval = chain.tx_with(
        &new_key,
        103,
        Body::ApproveValidatorChange(ApproveValidatorChange {
            proposal_id: pending_id.to_vec(),
        }),
    );
    let (results, _) = chain.block(vec![approval]);
    ok(&results[0]);
    assert_eq!(
        chain.proposal(&pending_id).approvals,
        vec!["dept0", "dept3"]
    );
    // dept3's record takes a new version signed with the new key; its
    // namespace refuses the old key.
    let old = chain.tx(3, anchor("v2"));
    let new = chain.tx_with(&new_key, 103, anchor("v2"));
    let (results, _) = chain.block(vec![old, new]);
    refused(&results[0], ErrorReason::PermissionDenied, "namespace");
    ok(&results[1]);
}

#[test]
fn department_changes_that_do_not_apply_are_refused_with_reasons() {
    let mut chain = Chain::new();
    let fresh = SigningKey::from_seed([0x62; 32]);
    let cases = [
        (
            department_change("dept1", Some(&signing(2)), None),
            "already department dept2's",
        ),
        (
            department_change("ports", None, Some(&["vessel"])),
            "registering it needs a signing_key",
        ),
        (
            department_change("dept1", None, Some(&[])),
            "changes nothing",
        ),
    ];
    for (body, text) in cases {
        let tx = chain.tx(0, Body::ProposeValidatorChange(body));
        let (results, _) = chain.block(vec![tx]);
        refused(&results[0], ErrorReason::FailedPrecondition, text);
    }
    // A key a department used before is never given again.
    chain.pass(department_change("dept4", Some(&fresh), None));
    let reuse = chain.tx(
        0,
        Body::ProposeValidatorChange(department_change("dept4", Some(&signing(4)), None)),
    );
    let (results, _) = chain.block(vec![reuse]);
    refused(
        &results[0],
        ErrorReason::FailedPrecondition,
        "a key is never given twice",
    );
    // Stateless checks: a bad name, a short key, nothing to change.
    for (body, text) in [
        (
            department_change("Ports", Some(&fresh), None),
            "not a department name",
        ),
        (
            department_change("dept1", None, None),
            "needs a signing_key",
        ),
        (
            department_change("dept1", None, Some(&["income", "income"])),
            "twice",
        ),
    ] {
        let err = validate_propose(&body).expect_err(text);
        assert!(err.contains(text), "{err}");
    }
}

#[test]
fn attest_permissions_change_by_vote() {
    let mut chain = Chain::new();
    assert!(
        chain
            .departments()
            .by_name("dept2")
            .is_some_and(|d| d.attests.is_empty())
    );
    chain.pass(department_change(
        "dept2",
        None,
        Some(&["income", "residence"]),
    ));
    let attests = chain
        .departments()
        .by_name("dept2")
        .map(|d| d.attests.clone())
        .expect("dept2");
    assert_eq!(
        attests.into_iter().collect::<Vec<_>>(),
        vec!["income", "residence"]
    );
    // Keys are untouched.
    assert!(
        chain
            .departments()
            .by_key(&signing(2).public_key())
            .is_some()
    );
}

#[test]
fn a_new_department_registers_by_vote_and_then_runs_a_validator() {
    let mut chain = Chain::new();
    let ports = SigningKey::from_seed([0x63; 32]);
    let node = SigningKey::from_seed([0x64; 32]);
    // Its validator can not be added before it is a department.
    let early = chain.tx(
        0,
        Body::ProposeValidatorChange(ProposeValidatorChange {
            change: Some(ValidatorChange {
                change: Some(Change::Add(AddValidator {
                    department: "ports".into(),
                    consensus_key: node.public_key().as_bytes().to_vec(),
                    endpoint: String::new(),
                })),
            }),
            ..add(4)
        }),
    );
    let (results, _) = chain.block(vec![early]);
    refused(
        &results[0],
        ErrorReason::FailedPrecondition,
        "is not a department",
    );

    let (_, header) = chain.pass(department_change("ports", Some(&ports), Some(&["vessel"])));
    let registered = chain.departments();
    let record = registered.by_name("ports").expect("registered");
    assert_eq!(record.public_key, ports.public_key());
    assert_eq!(record.node_key, None);
    assert_eq!(
        registered.name_at(&ports.public_key(), header.height + 1),
        Some("ports")
    );
    // A new department runs no validator, so it does not vote yet.
    let vote = chain.tx_with(&ports, 110, Body::ProposeValidatorChange(remove(0)));
    let (results, _) = chain.block(vec![vote]);
    refused(
        &results[0],
        ErrorReason::PermissionDenied,
        "runs no validator",
    );

    let (_, header) = chain.pass(ProposeValidatorChange {
        change: Some(ValidatorChange {
            change: Some(Change::Add(AddValidator {
                department: "ports".into(),
                consensus_key: node.public_key().as_bytes().to_vec(),
                endpoint: "127.0.0.1:7010".into(),
            })),
        }),
        ..add(4)
    });
    assert_eq!(indexes(&header), vec![0, 1, 2, 3, 4]);
    // Its node's key now signs its blob receipts.
    assert_eq!(
        chain
            .departments()
            .by_name("ports")
            .and_then(|d| d.node_key),
        Some(node.public_key())
    );
    let vote = chain.tx_with(&ports, 110, Body::ProposeValidatorChange(remove(0)));
    let (results, _) = chain.block(vec![vote]);
    ok(&results[0]);
}
