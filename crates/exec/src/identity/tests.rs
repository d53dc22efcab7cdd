//! Tests of the identity rules. Every transaction goes through
//! `build_block` at a block time the test controls, and every built block
//! is checked with `check_block` as a backup would, before its writes are
//! applied to an in-memory state.

use std::collections::BTreeMap;
use std::sync::Arc;

use govchain_crypto::SigningKey;
use govchain_proto::types::v1::{
    CreateIdentity, TransactionOutcome, TransactionResult, transaction::Body,
};

use super::*;
use crate::block::{BlockLimits, CheckContext, Head, build_block, check_block};
use crate::execute::precheck;
use crate::state::{nonce_key, read_nonce};
use crate::state_tree::{MemoryTree, TreeRead, prove};
use crate::transaction::tests::{CHAIN, sign};
use crate::transaction::{TransactionError, check_envelope};

const PAYLOAD_BYTES_MAX: u32 = 4096;
const START_MS: u64 = 1_700_000_000_000;
const PURPOSE: &str = "benefit-eligibility-check";
const SALT: [u8; 16] = [7; 16];

// ----- keys and departments -----------------------------------------------

fn alice() -> SigningKey {
    SigningKey::from_seed([1; 32])
}

fn bob() -> SigningKey {
    SigningKey::from_seed([2; 32])
}

/// A key that is neither a department nor (unless it creates one) an
/// identity.
fn outsider() -> SigningKey {
    SigningKey::from_seed([3; 32])
}

/// Attests name, date of birth and photo.
fn registry() -> SigningKey {
    SigningKey::from_seed([10; 32])
}

/// Attests nothing; reads attributes under consent.
fn health() -> SigningKey {
    SigningKey::from_seed([11; 32])
}

/// The consensus key of the registry's validator node, which holds the
/// citizens' blobs in these tests and signs their upload receipts.
fn registry_node() -> SigningKey {
    SigningKey::from_seed([20; 32])
}

fn department(name: &str, key: &SigningKey, attests: &[&str]) -> Department {
    Department {
        name: name.into(),
        public_key: key.public_key(),
        attests: attests.iter().map(|name| (*name).to_owned()).collect(),
        node_key: None,
    }
}

/// The registry runs a validator node; health has no node.
fn departments() -> Departments {
    let mut registry = department("registry", &registry(), &["name", "date_of_birth", "photo"]);
    registry.node_key = Some(registry_node().public_key());
    Departments::new([registry, department("health", &health(), &[])])
}

/// The registry node's receipt for an upload of `cid` for `citizen`.
fn receipt(citizen: &PublicKey, cid: &str, size_bytes: u64) -> Vec<u8> {
    let digest = blob_receipt_digest(CHAIN, "registry", cid, citizen, size_bytes);
    registry_node().sign(digest.as_bytes()).to_vec()
}

// ----- bodies --------------------------------------------------------------

/// A base32 CIDv1-looking text derived from the attribute and its value.
fn cid_of(name: &str, value: &str) -> String {
    let digest = Digest::sha256(format!("{name}={value}").as_bytes());
    let letters: String = digest
        .as_bytes()
        .iter()
        .flat_map(|byte| [byte >> 4, byte & 0x0f])
        .map(|nibble| char::from(b'a' + nibble))
        .collect();
    format!("bafkrei{letters}")
}

fn commitment_of(value: &str) -> Digest {
    attribute_commitment(&SALT, value.as_bytes())
}

fn create() -> Body {
    Body::CreateIdentity(CreateIdentity {})
}

fn declare_with(name: &str, cid: &str, commitment: &[u8], holder: &str) -> Body {
    Body::DeclareAttribute(DeclareAttribute {
        name: name.into(),
        cid: cid.into(),
        commitment: commitment.to_vec(),
        holder: holder.into(),
        size_bytes: 128,
        holder_receipt: Vec::new(),
    })
}

/// Declares `name` = `value`, held by the registry.
fn declare(name: &str, value: &str) -> Body {
    declare_with(
        name,
        &cid_of(name, value),
        commitment_of(value).as_bytes(),
        "registry",
    )
}

fn attest(citizen: &SigningKey, name: &str, value: &str, expires_ms: u64) -> Body {
    Body::AttestAttribute(AttestAttribute {
        citizen: citizen.public_key().as_bytes().to_vec(),
        name: name.into(),
        commitment: commitment_of(value).to_vec(),
        expires_ms,
    })
}

fn revoke_attestation(citizen: &SigningKey, name: &str, reason: &str) -> Body {
    Body::RevokeAttestation(RevokeAttestation {
        citizen: citizen.public_key().as_bytes().to_vec(),
        name: name.into(),
        reason: reason.into(),
    })
}

fn grant(department: &str, attributes: &[&str], purpose: &str, expires_ms: u64) -> Body {
    Body::GrantConsent(GrantConsent {
        department: department.into(),
        attributes: attributes.iter().map(|name| (*name).to_owned()).collect(),
        purpose: purpose.into(),
        expires_ms,
        jurisdiction: "EU".into(),
    })
}

fn revoke_consent(consent_id: &Digest) -> Body {
    Body::RevokeConsent(RevokeConsent {
        consent_id: consent_id.to_vec(),
    })
}

fn access(citizen: &SigningKey, attribute: &str, consent_id: &Digest, purpose: &str) -> Body {
    Body::RecordAccess(RecordAccess {
        citizen: citizen.public_key().as_bytes().to_vec(),
        attribute: attribute.into(),
        consent_id: consent_id.to_vec(),
        purpose: purpose.into(),
    })
}

// ----- the chain -------------------------------------------------------------

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct MemoryState(BTreeMap<Vec<u8>, Vec<u8>>);

impl StateRead for MemoryState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.0.get(key).cloned())
    }
}

/// The state and its tree, as the ledger offers both to execution.
struct WithTree<'a>(&'a MemoryState, &'a MemoryTree);

impl StateRead for WithTree<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.0.get(key)
    }
}

impl TreeRead for WithTree<'_> {
    fn tree_node(&self, path: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.1.tree_node(path)
    }
}

impl MemoryState {
    fn apply(&mut self, writes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) {
        for (key, value) in writes {
            match value {
                Some(value) => self.0.insert(key.clone(), value.clone()),
                None => self.0.remove(key),
            };
        }
    }
}

/// A one-node chain: builds blocks at `now_ms`, checks each as a backup
/// would, and applies it.
struct Chain {
    state: MemoryState,
    tree: MemoryTree,
    head: Head,
    limits: BlockLimits,
    now_ms: u64,
}

impl Chain {
    fn new() -> Self {
        Self {
            state: MemoryState::default(),
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
                payload_bytes_max: PAYLOAD_BYTES_MAX,
                genesis_departments: Arc::new(
                    departments().with_genesis_validators(crate::governance::test_validators(4)),
                ),
            },
            now_ms: START_MS,
        }
    }

    fn departments(&self) -> &Departments {
        &self.limits.genesis_departments
    }

    fn advance_to(&mut self, now_ms: u64) {
        assert!(now_ms >= self.now_ms, "block time only goes forward");
        self.now_ms = now_ms;
    }

    /// `body` signed by `key` with an explicit nonce.
    ///
    /// A declaration without a receipt gets the registry node's receipt for
    /// its signer, as if the signer had uploaded the blob: the tests of the
    /// receipt rule give theirs explicitly.
    fn signed(&self, key: &SigningKey, nonce: u64, mut body: Body) -> VerifiedTransaction {
        if let Body::DeclareAttribute(declare) = &mut body
            && declare.holder_receipt.is_empty()
        {
            declare.holder_receipt = receipt(&key.public_key(), &declare.cid, declare.size_bytes);
        }
        check_envelope(
            sign(key, nonce, body),
            CHAIN,
            PAYLOAD_BYTES_MAX as usize,
            |_, _| false,
        )
        .expect("a well-formed transaction")
    }

    /// `body` signed by `key` with its next nonce on chain.
    fn transaction(&self, key: &SigningKey, body: Body) -> VerifiedTransaction {
        let committed = read_nonce(&self.state, &key.public_key()).expect("nonce reads");
        self.signed(key, committed + 1, body)
    }

    /// Builds a block of exactly `transactions` at `now_ms`, checks that
    /// `check_block` gets the same results and state root, and applies it.
    fn block(&mut self, transactions: &[VerifiedTransaction]) -> Vec<TransactionResult> {
        let built = build_block(
            CHAIN,
            &self.head,
            0,
            0,
            self.now_ms,
            transactions,
            &self.limits,
            &WithTree(&self.state, &self.tree),
        )
        .expect("build");
        assert_eq!(built.header.transaction_count as usize, transactions.len());
        assert_eq!(built.header.timestamp_ms, self.now_ms);
        let checked = check_block(
            &CheckContext {
                chain_id: CHAIN,
                head: &self.head,
                limits: &self.limits,
                timestamp_ms_max: self.now_ms,
            },
            &built.hash,
            &built.encoded,
            &WithTree(&self.state, &self.tree),
            |_, _| false,
        )
        .expect("the built block checks");
        assert_eq!(checked.executed, built.executed);
        assert_eq!(
            checked.executed.state_root.to_vec(),
            built.header.state_root
        );
        let ids: Vec<Digest> = built
            .executed
            .transactions
            .iter()
            .map(|(id, _)| *id)
            .collect();
        let expected: Vec<Digest> = transactions.iter().map(|t| t.id).collect();
        assert_eq!(ids, expected);
        self.state.apply(&built.executed.writes);
        self.tree.apply(&built.executed.tree_writes);
        // Every key of world state (identities, attributes, attestations,
        // consents, access logs, nonces) is covered by the state root.
        for (key, value) in &self.state.0 {
            prove(&self.tree, key)
                .expect("prove")
                .verify(&built.executed.state_root, key, Some(value))
                .expect("every state key proves its value against the root");
        }
        self.head = Head {
            height: built.header.height,
            hash: built.hash,
            state_root: built.executed.state_root,
            timestamp_ms: built.header.timestamp_ms,
        };
        built
            .executed
            .transactions
            .into_iter()
            .map(|(_, result)| result)
            .collect()
    }

    /// What admission says about `transaction` at the next block.
    fn precheck(&self, transaction: &VerifiedTransaction) -> Result<(), Refusal> {
        let before = self.state.clone();
        let verdict = precheck(
            &self.state,
            self.departments(),
            transaction,
            self.head.height + 1,
            self.now_ms,
        )
        .expect("state reads");
        assert_eq!(self.state, before, "precheck writes nothing");
        verdict
    }

    /// Executes `body` signed by `key` alone in a block; it must succeed,
    /// and precheck must have said so. Returns the transaction id.
    fn ok(&mut self, key: &SigningKey, body: Body) -> Digest {
        let transaction = self.transaction(key, body);
        assert_eq!(self.precheck(&transaction), Ok(()));
        let results = self.block(std::slice::from_ref(&transaction));
        assert_eq!(results[0].outcome(), TransactionOutcome::Success);
        assert_eq!(results[0].error, "");
        transaction.id
    }

    /// Executes `body` signed by `key` alone in a block; it must fail with
    /// an error containing `fragment` and change nothing but the signer's
    /// nonce. Precheck must refuse it with the same text; returns that
    /// refusal so that callers can check its kind.
    fn refused(&mut self, key: &SigningKey, body: Body, fragment: &str) -> Refusal {
        let transaction = self.transaction(key, body);
        let refusal = self
            .precheck(&transaction)
            .expect_err("precheck refuses what execution refuses");
        let before = self.state.clone();
        let results = self.block(std::slice::from_ref(&transaction));
        assert_eq!(results[0].outcome(), TransactionOutcome::Failed);
        assert!(
            results[0].error.contains(fragment),
            "error {:?} does not contain {fragment:?}",
            results[0].error
        );
        assert_eq!(results[0].error, refusal.to_string());
        let mut expected = before;
        expected.0.insert(
            nonce_key(&key.public_key()),
            transaction.nonce.to_be_bytes().to_vec(),
        );
        // A refused read of a department is the one failure that writes
        // more: the attempt, in the citizen's log, never as an access.
        if let Body::RecordAccess(access) = &transaction.body
            && let Some((citizen, _)) = refusal_logged_for(
                &before_state(&expected, &transaction),
                &self.limits.genesis_departments,
                &transaction.signer,
                access,
                self.now_ms,
            )
            .expect("state reads")
        {
            let logged = accesses(&self.state, &citizen).expect("state reads");
            let last = logged.last().expect("the refusal is logged");
            assert!(last.refused, "{last:?}");
            assert_eq!(last.refusal, "", "no error text in state");
            assert_eq!(last.transaction_id, transaction.id.to_vec());
            assert_eq!(last.cid, "", "a refusal names no blob");
            assert_eq!(
                read_access(&self.state, &transaction.id).expect("reads"),
                None
            );
            for (key, value) in &self.state.0 {
                if [&b"access-"[..]]
                    .iter()
                    .any(|prefix| key.starts_with(prefix))
                {
                    expected.0.insert(key.clone(), value.clone());
                }
            }
        }
        assert_eq!(
            self.state, expected,
            "a failed transaction changes only the nonce (and logs a refused read)"
        );
        refusal
    }

    fn attribute(&self, citizen: &SigningKey, name: &str) -> AttributeRecord {
        read_attribute(&self.state, &citizen.public_key(), name)
            .expect("state reads")
            .expect("declared")
    }

    fn attestation(&self, citizen: &SigningKey, name: &str, department: &str) -> AttestationRecord {
        read_attestation(&self.state, &citizen.public_key(), name, department)
            .expect("state reads")
            .expect("attested")
    }

    fn consent(&self, consent_id: &Digest) -> ConsentRecord {
        read_consent(&self.state, consent_id)
            .expect("state reads")
            .expect("granted")
    }

    fn nonce(&self, key: &SigningKey) -> u64 {
        read_nonce(&self.state, &key.public_key()).expect("state reads")
    }

    fn names(&self, citizen: &SigningKey) -> Vec<String> {
        attribute_names(&self.state, &citizen.public_key()).expect("state reads")
    }

    fn blob_reference(&self, cid: &str) -> Option<(PublicKey, String)> {
        blob_reference(&self.state, cid).expect("state reads")
    }

    fn consents(&self, citizen: &SigningKey) -> Vec<ConsentRecord> {
        consents(&self.state, &citizen.public_key()).expect("state reads")
    }

    fn access(&self, transaction_id: &Digest) -> Option<AccessRecord> {
        read_access(&self.state, transaction_id).expect("state reads")
    }

    fn accesses(&self, citizen: &SigningKey) -> Vec<AccessRecord> {
        accesses(&self.state, &citizen.public_key()).expect("state reads")
    }

    fn current_attestations(&self, citizen: &SigningKey, name: &str) -> Vec<AttestationRecord> {
        current_attestations(
            &self.state,
            self.departments(),
            &self.attribute(citizen, name),
            &citizen.public_key(),
        )
        .expect("state reads")
    }
}

/// Alice has an identity and a declared name and date of birth.
fn with_alice() -> Chain {
    let mut chain = Chain::new();
    chain.ok(&alice(), create());
    chain.ok(&alice(), declare("name", "Alice Example"));
    chain.ok(&alice(), declare("date_of_birth", "1990-01-01"));
    chain
}

/// Consents granted in [`with_consent`] end here.
const CONSENT_END_MS: u64 = START_MS + 1_000_000;

/// [`with_alice`], and a consent for health to read her name for
/// [`PURPOSE`] until [`CONSENT_END_MS`].
fn with_consent() -> (Chain, Digest) {
    let mut chain = with_alice();
    let consent = chain.ok(
        &alice(),
        grant("health", &["name"], PURPOSE, CONSENT_END_MS),
    );
    (chain, consent)
}

/// Asserts that health's refused reads released nothing: the citizen's log
/// holds only refusals (for a citizen with an identity), and none of them is
/// an access a holder would honour.
fn assert_no_access(chain: &Chain, citizen: &SigningKey) {
    for record in chain.accesses(citizen) {
        assert!(record.refused, "{record:?}");
        let id = Digest::from_slice(&record.transaction_id).expect("an id");
        assert_eq!(chain.access(&id), None, "a refusal is never an access");
    }
}

// ----- identities --------------------------------------------------------------

#[test]
fn create_identity_records_the_did_key_of_the_signer() {
    let mut chain = Chain::new();
    chain.advance_to(START_MS + 5);
    let id = chain.ok(&alice(), create());
    let record = read_identity(&chain.state, &alice().public_key())
        .expect("state reads")
        .expect("created");
    assert_eq!(record.did, alice().public_key().to_did_key());
    assert!(record.did.starts_with("did:key:z6Mk"), "{}", record.did);
    assert_eq!(
        PublicKey::from_did_key(&record.did),
        Ok(alice().public_key())
    );
    assert_eq!(record.public_key, alice().public_key().as_bytes().to_vec());
    assert_eq!(record.created_height, 1);
    assert_eq!(record.created_ms, START_MS + 5);
    assert_eq!(record.transaction_id, id.to_vec());
    assert_eq!(
        read_identity(&chain.state, &bob().public_key()).expect("state reads"),
        None
    );
}

#[test]
fn creating_an_identity_twice_is_already_exists() {
    let mut chain = Chain::new();
    chain.ok(&alice(), create());
    let refusal = chain.refused(&alice(), create(), "already exists");
    assert!(matches!(refusal, Refusal::AlreadyExists(_)), "{refusal:?}");
    assert!(
        refusal
            .to_string()
            .contains(&alice().public_key().to_did_key())
    );
}

#[test]
fn two_creations_in_one_block_leave_one_identity() {
    let mut chain = Chain::new();
    let first = chain.signed(&alice(), 1, create());
    let second = chain.signed(&alice(), 2, create());
    let results = chain.block(&[first.clone(), second]);
    assert_eq!(results[0].outcome(), TransactionOutcome::Success);
    assert_eq!(results[1].outcome(), TransactionOutcome::Failed);
    assert!(
        results[1].error.contains("already exists"),
        "{}",
        results[1].error
    );
    let record = read_identity(&chain.state, &alice().public_key())
        .expect("state reads")
        .expect("created");
    assert_eq!(record.transaction_id, first.id.to_vec());
    assert_eq!(chain.nonce(&alice()), 2);
}

// ----- attributes ------------------------------------------------------------

#[test]
fn declare_without_identity_is_not_found() {
    let mut chain = Chain::new();
    let refusal = chain.refused(&alice(), declare("name", "Alice"), "no identity");
    assert!(matches!(refusal, Refusal::NotFound(_)), "{refusal:?}");
    assert_eq!(chain.names(&alice()), Vec::<String>::new());
}

#[test]
fn declare_with_an_unknown_holder_is_not_found() {
    let mut chain = Chain::new();
    chain.ok(&alice(), create());
    let body = declare_with(
        "name",
        &cid_of("name", "Alice"),
        commitment_of("Alice").as_bytes(),
        "tax",
    );
    let refusal = chain.refused(&alice(), body, "holder \"tax\" is not a department");
    assert!(matches!(refusal, Refusal::NotFound(_)), "{refusal:?}");
}

#[test]
fn declare_writes_version_one_and_a_blob_reference() {
    let mut chain = Chain::new();
    chain.ok(&alice(), create());
    chain.advance_to(START_MS + 100);
    let id = chain.ok(&alice(), declare("name", "Alice Example"));
    let record = chain.attribute(&alice(), "name");
    assert_eq!(
        record,
        AttributeRecord {
            citizen: alice().public_key().as_bytes().to_vec(),
            name: "name".into(),
            cid: cid_of("name", "Alice Example"),
            commitment: commitment_of("Alice Example").to_vec(),
            holder: "registry".into(),
            size_bytes: 128,
            version: 1,
            declared_height: 2,
            declared_ms: START_MS + 100,
            transaction_id: id.to_vec(),
        }
    );
    assert_eq!(
        chain.blob_reference(&record.cid),
        Some((alice().public_key(), "name".to_owned()))
    );
    assert_eq!(chain.names(&alice()), vec!["name".to_owned()]);
}

#[test]
fn redeclare_bumps_the_version_and_moves_the_blob_reference() {
    let mut chain = with_alice();
    let old_cid = chain.attribute(&alice(), "name").cid;
    let id = chain.ok(&alice(), declare("name", "Alice Married"));
    let record = chain.attribute(&alice(), "name");
    assert_eq!(record.version, 2);
    assert_eq!(record.cid, cid_of("name", "Alice Married"));
    assert_eq!(record.commitment, commitment_of("Alice Married").to_vec());
    assert_eq!(record.transaction_id, id.to_vec());
    assert_eq!(chain.blob_reference(&old_cid), None);
    assert_eq!(
        chain.blob_reference(&record.cid),
        Some((alice().public_key(), "name".to_owned()))
    );
    chain.ok(&alice(), declare("name", "Alice Third"));
    assert_eq!(chain.attribute(&alice(), "name").version, 3);
    // Each name once, in the order of first declaration.
    assert_eq!(
        chain.names(&alice()),
        vec!["name".to_owned(), "date_of_birth".to_owned()]
    );
}

#[test]
fn redeclare_with_the_same_cid_keeps_the_blob_reference() {
    let mut chain = with_alice();
    let cid = chain.attribute(&alice(), "name").cid;
    chain.ok(&alice(), declare("name", "Alice Example"));
    assert_eq!(chain.attribute(&alice(), "name").version, 2);
    assert_eq!(
        chain.blob_reference(&cid),
        Some((alice().public_key(), "name".to_owned()))
    );
}

/// Bob can read Alice's CIDs on chain. Declaring one of them must not
/// point the blob reference at Bob's attribute, or Alice's sealed blob
/// would be released under Bob's consents.
#[test]
fn declaring_another_citizens_cid_does_not_take_over_its_blob_reference() {
    let mut chain = with_alice();
    let alice_name = chain.attribute(&alice(), "name");
    chain.ok(&bob(), create());
    let refusal = chain.refused(
        &bob(),
        declare_with("name", &alice_name.cid, &alice_name.commitment, "registry"),
        "is already declared as another attribute",
    );
    assert!(matches!(refusal, Refusal::AlreadyExists(_)), "{refusal:?}");
    assert_eq!(
        chain.blob_reference(&alice_name.cid),
        Some((alice().public_key(), "name".to_owned())),
        "bob's declaration took over the blob reference of alice's name"
    );
}

#[test]
fn one_blob_backs_one_attribute_of_one_citizen() {
    let mut chain = with_alice();
    let cid = chain.attribute(&alice(), "name").cid;
    let refusal = chain.refused(
        &alice(),
        declare_with("photo", &cid, commitment_of("x").as_bytes(), "registry"),
        "is already declared as another attribute",
    );
    assert!(matches!(refusal, Refusal::AlreadyExists(_)), "{refusal:?}");
    // Re-declaring the name releases its old blob from the attribute, but
    // the old value stays personal data that nobody may declare again.
    chain.ok(&alice(), declare("name", "Alice Married"));
    assert_eq!(chain.blob_reference(&cid), None);
    assert!(blob_is_personal(&chain.state, &cid).expect("state reads"));
    let commitment = commitment_of("x");
    for (who, name) in [(alice(), "name"), (alice(), "photo"), (bob(), "name")] {
        if who.public_key() == bob().public_key()
            && read_identity(&chain.state, &who.public_key())
                .expect("reads")
                .is_none()
        {
            chain.ok(&who, create());
        }
        let refusal = chain.refused(
            &who,
            declare_with(name, &cid, commitment.as_bytes(), "registry"),
            "is already declared as another attribute",
        );
        assert!(matches!(refusal, Refusal::AlreadyExists(_)), "{refusal:?}");
    }
}

#[test]
fn a_citizen_declares_at_most_attributes_max_names() {
    let mut chain = Chain::new();
    chain.ok(&alice(), create());
    let transactions: Vec<_> = (0..ATTRIBUTES_MAX as u64)
        .map(|n| chain.signed(&alice(), n + 2, declare(&format!("a{n}"), "v")))
        .collect();
    let results = chain.block(&transactions);
    assert!(
        results
            .iter()
            .all(|r| r.outcome() == TransactionOutcome::Success)
    );
    let names = attribute_names(&chain.state, &alice().public_key()).expect("state reads");
    assert_eq!(names.len(), ATTRIBUTES_MAX);
    let refusal = chain.refused(
        &alice(),
        declare("one_more", "v"),
        "already has 64 attributes",
    );
    assert!(
        matches!(refusal, Refusal::FailedPrecondition(_)),
        "{refusal:?}"
    );
    // Replacing a declared attribute is still allowed.
    chain.ok(&alice(), declare("a0", "w"));
    assert_eq!(chain.attribute(&alice(), "a0").version, 2);
}

// ----- attestations ----------------------------------------------------------

#[test]
fn a_department_with_the_role_attests() {
    let mut chain = with_alice();
    chain.advance_to(START_MS + 50);
    let expires_ms = START_MS + 10_000;
    let id = chain.ok(
        &registry(),
        attest(&alice(), "name", "Alice Example", expires_ms),
    );
    let record = chain.attestation(&alice(), "name", "registry");
    assert_eq!(
        record,
        AttestationRecord {
            citizen: alice().public_key().as_bytes().to_vec(),
            name: "name".into(),
            commitment: commitment_of("Alice Example").to_vec(),
            department: "registry".into(),
            attested_height: 4,
            attested_ms: START_MS + 50,
            expires_ms,
            revoked: false,
            revocation_reason: String::new(),
            revoked_ms: 0,
            transaction_id: id.to_vec(),
        }
    );
    assert_eq!(
        chain.current_attestations(&alice(), "name"),
        vec![record.clone()]
    );
    assert!(attestation_valid(&record, START_MS + 50));
    assert!(attestation_valid(&record, expires_ms - 1));
    assert!(!attestation_valid(&record, expires_ms));
}

#[test]
fn an_attestation_without_expiry_never_expires() {
    let mut chain = with_alice();
    chain.ok(
        &registry(),
        attest(&alice(), "date_of_birth", "1990-01-01", 0),
    );
    let record = chain.attestation(&alice(), "date_of_birth", "registry");
    assert_eq!(record.expires_ms, 0);
    assert!(attestation_valid(&record, u64::MAX));
}

#[test]
fn a_department_without_the_role_may_not_attest() {
    let mut chain = with_alice();
    let refusal = chain.refused(
        &health(),
        attest(&alice(), "name", "Alice Example", 0),
        "department \"health\" may not attest \"name\"; it may attest []",
    );
    assert!(
        matches!(refusal, Refusal::PermissionDenied(_)),
        "{refusal:?}"
    );
    let refusal = chain.refused(
        &registry(),
        attest(&alice(), "income", "1", 0),
        "may not attest \"income\"; it may attest [date_of_birth, name, photo]",
    );
    assert!(
        matches!(refusal, Refusal::PermissionDenied(_)),
        "{refusal:?}"
    );
}

#[test]
fn a_key_that_is_not_a_department_may_not_attest() {
    let mut chain = with_alice();
    for key in [outsider(), alice()] {
        let refusal = chain.refused(
            &key,
            attest(&alice(), "name", "Alice Example", 0),
            "is not a department's signing key in force, so it may not attest attributes",
        );
        assert!(
            matches!(refusal, Refusal::PermissionDenied(_)),
            "{refusal:?}"
        );
    }
}

#[test]
fn attesting_a_wrong_commitment_fails() {
    let mut chain = with_alice();
    let refusal = chain.refused(
        &registry(),
        attest(&alice(), "name", "Someone Else", 0),
        "the commitment does not match the current value of \"name\" (version 1)",
    );
    assert!(
        matches!(refusal, Refusal::FailedPrecondition(_)),
        "{refusal:?}"
    );
}

#[test]
fn attesting_an_undeclared_attribute_or_unknown_identity_is_not_found() {
    let mut chain = with_alice();
    let refusal = chain.refused(
        &registry(),
        attest(&alice(), "photo", "x", 0),
        "has not declared \"photo\"",
    );
    assert!(matches!(refusal, Refusal::NotFound(_)), "{refusal:?}");
    let refusal = chain.refused(
        &registry(),
        attest(&bob(), "name", "Bob", 0),
        &format!("no identity {} on chain", bob().public_key().to_did_key()),
    );
    assert!(matches!(refusal, Refusal::NotFound(_)), "{refusal:?}");
}

#[test]
fn attesting_with_an_expiry_not_after_the_block_time_fails() {
    let mut chain = with_alice();
    chain.advance_to(START_MS + 1_000);
    for expires_ms in [START_MS + 1_000, START_MS + 999, 1] {
        let refusal = chain.refused(
            &registry(),
            attest(&alice(), "name", "Alice Example", expires_ms),
            &format!(
                "expires_ms {expires_ms} is not after the block time {}",
                START_MS + 1_000
            ),
        );
        assert!(
            matches!(refusal, Refusal::FailedPrecondition(_)),
            "{refusal:?}"
        );
    }
    chain.ok(
        &registry(),
        attest(&alice(), "name", "Alice Example", START_MS + 1_001),
    );
}

#[test]
fn redeclaring_makes_earlier_attestations_stale() {
    let mut chain = with_alice();
    chain.ok(&registry(), attest(&alice(), "name", "Alice Example", 0));
    assert_eq!(chain.current_attestations(&alice(), "name").len(), 1);
    chain.ok(&alice(), declare("name", "Alice Married"));
    assert_eq!(chain.current_attestations(&alice(), "name"), vec![]);
    // The stale record stays, but attesting the old value again is refused.
    assert_eq!(
        chain.attestation(&alice(), "name", "registry").commitment,
        commitment_of("Alice Example").to_vec()
    );
    chain.refused(
        &registry(),
        attest(&alice(), "name", "Alice Example", 0),
        "(version 2)",
    );
    chain.ok(&registry(), attest(&alice(), "name", "Alice Married", 0));
    let current = chain.current_attestations(&alice(), "name");
    assert_eq!(current.len(), 1);
    assert_eq!(
        current[0].commitment,
        commitment_of("Alice Married").to_vec()
    );
}

#[test]
fn the_attester_revokes_its_attestation_once() {
    let mut chain = with_alice();
    chain.ok(&registry(), attest(&alice(), "name", "Alice Example", 0));
    chain.advance_to(START_MS + 777);
    chain.ok(
        &registry(),
        revoke_attestation(&alice(), "name", "document was forged"),
    );
    let record = chain.attestation(&alice(), "name", "registry");
    assert!(record.revoked);
    assert_eq!(record.revocation_reason, "document was forged");
    assert_eq!(record.revoked_ms, START_MS + 777);
    assert!(!attestation_valid(&record, START_MS + 777));
    assert!(!attestation_valid(&record, 0));
    let refusal = chain.refused(
        &registry(),
        revoke_attestation(&alice(), "name", "again"),
        &format!("already revoked at {} ms", START_MS + 777),
    );
    assert!(
        matches!(refusal, Refusal::FailedPrecondition(_)),
        "{refusal:?}"
    );
}

#[test]
fn only_the_attester_revokes_an_attestation() {
    let mut chain = with_alice();
    chain.ok(&registry(), attest(&alice(), "name", "Alice Example", 0));
    let refusal = chain.refused(
        &health(),
        revoke_attestation(&alice(), "name", ""),
        "department \"health\" has no attestation of \"name\"",
    );
    assert!(matches!(refusal, Refusal::NotFound(_)), "{refusal:?}");
    for key in [outsider(), alice()] {
        let refusal = chain.refused(
            &key,
            revoke_attestation(&alice(), "name", ""),
            "so it may not revoke attestations",
        );
        assert!(
            matches!(refusal, Refusal::PermissionDenied(_)),
            "{refusal:?}"
        );
    }
    let refusal = chain.refused(
        &registry(),
        revoke_attestation(&alice(), "photo", ""),
        "has no attestation of \"photo\"",
    );
    assert!(matches!(refusal, Refusal::NotFound(_)), "{refusal:?}");
    assert!(!chain.attestation(&alice(), "name", "registry").revoked);
}

// ----- consents --------------------------------------------------------------

#[test]
fn granting_consent_needs_an_identity() {
    let mut chain = Chain::new();
    let refusal = chain.refused(
        &alice(),
        grant("health", &["name"], PURPOSE, CONSENT_END_MS),
        "no identity",
    );
    assert!(matches!(refusal, Refusal::NotFound(_)), "{refusal:?}");
    assert_eq!(chain.consents(&alice()), vec![]);
}

#[test]
fn granting_consent_to_an_unknown_department_is_not_found() {
    let mut chain = with_alice();
    let refusal = chain.refused(
        &alice(),
        grant("tax", &["name"], PURPOSE, CONSENT_END_MS),
        "no department \"tax\" on this chain",
    );
    assert!(matches!(refusal, Refusal::NotFound(_)), "{refusal:?}");
}

#[test]
fn granting_consent_that_has_already_ended_fails() {
    let mut chain = with_alice();
    chain.advance_to(START_MS + 500);
    for expires_ms in [START_MS + 500, START_MS, 0] {
        let refusal = chain.refused(
            &alice(),
            grant("health", &["name"], PURPOSE, expires_ms),
            &format!(
                "the consent would expire at {expires_ms} ms, which is not after the block time {} ms",
                START_MS + 500
            ),
        );
        assert!(
            matches!(refusal, Refusal::FailedPrecondition(_)),
            "{refusal:?}"
        );
    }
    assert_eq!(chain.consents(&alice()), vec![]);
}

#[test]
fn consents_are_recorded_and_listed_in_grant_order() {
    let mut chain = with_alice();
    chain.advance_to(START_MS + 10);
    let first = chain.ok(
        &alice(),
        grant("health", &["name"], PURPOSE, CONSENT_END_MS),
    );
    // Two more in one block.
    let second = chain.transaction(
        &alice(),
        grant(
            "registry",
            &["name", "date_of_birth"],
            "census",
            CONSENT_END_MS + 1,
        ),
    );
    let third = chain.signed(
        &alice(),
        second.nonce + 1,
        grant("health", &["date_of_birth"], PURPOSE, CONSENT_END_MS + 2),
    );
    chain.advance_to(START_MS + 20);
    chain.block(&[second.clone(), third.clone()]);
    assert_eq!(
        chain.consent(&first),
        ConsentRecord {
            consent_id: first.to_vec(),
            citizen: alice().public_key().as_bytes().to_vec(),
            department: "health".into(),
            attributes: vec!["name".into()],
            purpose: PURPOSE.into(),
            granted_ms: START_MS + 10,
            expires_ms: CONSENT_END_MS,
            jurisdiction: "EU".into(),
            granted_height: 4,
            revoked: false,
            revoked_ms: 0,
        }
    );
    let listed = consents(&chain.state, &alice().public_key()).expect("state reads");
    let ids: Vec<Vec<u8>> = listed.iter().map(|c| c.consent_id.clone()).collect();
    assert_eq!(
        ids,
        vec![first.to_vec(), second.id.to_vec(), third.id.to_vec()]
    );
    assert_eq!(listed[1].department, "registry");
    assert_eq!(listed[1].attributes, vec!["name", "date_of_birth"]);
    assert_eq!(listed[2].granted_height, 5);
    assert_eq!(listed[2].granted_ms, START_MS + 20);
    assert_eq!(chain.consents(&bob()), vec![]);
}

#[test]
fn only_the_citizen_revokes_a_consent_and_only_once() {
    let (mut chain, consent) = with_consent();
    chain.ok(&bob(), create());
    for key in [bob(), health()] {
        let refusal = chain.refused(
            &key,
            revoke_consent(&consent),
            &format!("consent {consent} was granted by another citizen; only they may revoke it"),
        );
        assert!(
            matches!(refusal, Refusal::PermissionDenied(_)),
            "{refusal:?}"
        );
    }
    chain.advance_to(START_MS + 42);
    chain.ok(&alice(), revoke_consent(&consent));
    let record = chain.consent(&consent);
    assert!(record.revoked);
    assert_eq!(record.revoked_ms, START_MS + 42);
    let refusal = chain.refused(
        &alice(),
        revoke_consent(&consent),
        &format!(
            "consent {consent} was already revoked at {} ms",
            START_MS + 42
        ),
    );
    assert!(
        matches!(refusal, Refusal::FailedPrecondition(_)),
        "{refusal:?}"
    );
    // Still listed, as revoked.
    let listed = consents(&chain.state, &alice().public_key()).expect("state reads");
    assert_eq!(listed, vec![record]);
}

#[test]
fn revoking_an_unknown_consent_is_not_found() {
    let mut chain = with_alice();
    let unknown = Digest::sha256(b"no such consent");
    let refusal = chain.refused(
        &alice(),
        revoke_consent(&unknown),
        &format!("no consent {unknown}"),
    );
    assert!(matches!(refusal, Refusal::NotFound(_)), "{refusal:?}");
}

// ----- access ----------------------------------------------------------------

#[test]
fn an_access_under_consent_is_recorded() {
    let (mut chain, consent) = with_consent();
    chain.advance_to(START_MS + 300);
    let first = chain.ok(&health(), access(&alice(), "name", &consent, PURPOSE));
    let expected = AccessRecord {
        citizen: alice().public_key().as_bytes().to_vec(),
        attribute: "name".into(),
        department: "health".into(),
        consent_id: consent.to_vec(),
        purpose: PURPOSE.into(),
        cid: cid_of("name", "Alice Example"),
        accessed_ms: START_MS + 300,
        block_height: 5,
        transaction_id: first.to_vec(),
        sequence: 1,
        refused: false,
        refusal: String::new(),
    };
    assert_eq!(chain.access(&first), Some(expected.clone()));
    // After a re-declaration, the next access records the new CID.
    chain.ok(&alice(), declare("name", "Alice Married"));
    chain.advance_to(START_MS + 400);
    let second = chain.ok(&health(), access(&alice(), "name", &consent, PURPOSE));
    let second_record = read_access(&chain.state, &second)
        .expect("state reads")
        .expect("recorded");
    assert_eq!(second_record.sequence, 2);
    assert_eq!(second_record.cid, cid_of("name", "Alice Married"));
    assert_eq!(second_record.accessed_ms, START_MS + 400);
    assert_eq!(second_record.block_height, 7);
    assert_eq!(chain.accesses(&alice()), vec![expected, second_record]);
    assert_eq!(chain.accesses(&bob()), vec![]);
}

#[test]
fn accesses_in_one_block_get_consecutive_sequences() {
    let (mut chain, consent) = with_consent();
    let first = chain.transaction(&health(), access(&alice(), "name", &consent, PURPOSE));
    let second = chain.signed(
        &health(),
        first.nonce + 1,
        access(&alice(), "name", &consent, PURPOSE),
    );
    let results = chain.block(&[first.clone(), second.clone()]);
    assert!(
        results
            .iter()
            .all(|r| r.outcome() == TransactionOutcome::Success)
    );
    let listed = chain.accesses(&alice());
    let summary: Vec<(u64, Vec<u8>)> = listed
        .iter()
        .map(|r| (r.sequence, r.transaction_id.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![(1, first.id.to_vec()), (2, second.id.to_vec())]
    );
}

#[test]
fn accesses_are_listed_a_page_at_a_time() {
    let (mut chain, consent) = with_consent();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let read = chain.ok(&health(), access(&alice(), "name", &consent, PURPOSE));
        ids.push(read.to_vec());
    }
    let citizen = alice().public_key();
    let page = |first, limit| {
        let (records, next) = accesses_page(&chain.state, &citizen, first, limit).expect("reads");
        let ids: Vec<Vec<u8>> = records.into_iter().map(|r| r.transaction_id).collect();
        (ids, next)
    };
    assert_eq!(page(1, 2), (ids[0..2].to_vec(), Some(3)));
    assert_eq!(page(3, 2), (ids[2..4].to_vec(), Some(5)));
    assert_eq!(page(5, 2), (ids[4..].to_vec(), None));
    // A page that ends exactly at the last access says so.
    assert_eq!(page(4, 2), (ids[3..].to_vec(), None));
    assert_eq!(page(1, 100), (ids.clone(), None));
    assert_eq!(page(6, 2), (Vec::new(), None));
    // Numbering starts at 1; 0 reads as 1.
    assert_eq!(page(0, 1), (ids[0..1].to_vec(), Some(2)));
}

#[test]
fn access_without_a_consent_on_chain_is_refused() {
    let (mut chain, _) = with_consent();
    let unknown = Digest::sha256(b"no such consent");
    let refusal = chain.refused(
        &health(),
        access(&alice(), "name", &unknown, PURPOSE),
        &format!("no consent {unknown} on chain"),
    );
    assert!(
        matches!(refusal, Refusal::PermissionDenied(_)),
        "{refusal:?}"
    );
    assert_no_access(&chain, &alice());
}

#[test]
fn access_under_another_citizens_consent_is_refused() {
    let (mut chain, _) = with_consent();
    chain.ok(&bob(), create());
    chain.ok(&bob(), declare("name", "Bob"));
    let bobs = chain.ok(&bob(), grant("health", &["name"], PURPOSE, CONSENT_END_MS));
    let refusal = chain.refused(
        &health(),
        access(&alice(), "name", &bobs, PURPOSE),
        &format!(
            "consent {bobs} was granted by another citizen, not {}",
            alice().public_key().to_did_key()
        ),
    );
    assert!(
        matches!(refusal, Refusal::PermissionDenied(_)),
        "{refusal:?}"
    );
    assert_no_access(&chain, &alice());
    assert_no_access(&chain, &bob());
}

#[test]
fn access_under_a_consent_for_another_department_is_refused() {
    let mut chain = with_alice();
    let for_registry = chain.ok(
        &alice(),
        grant("registry", &["name"], PURPOSE, CONSENT_END_MS),
    );
    let refusal = chain.refused(
        &health(),
        access(&alice(), "name", &for_registry, PURPOSE),
        &format!("consent {for_registry} is for department \"registry\", not \"health\""),
    );
    assert!(
        matches!(refusal, Refusal::PermissionDenied(_)),
        "{refusal:?}"
    );
    assert_no_access(&chain, &alice());
}

#[test]
fn access_under_a_revoked_consent_is_refused() {
    let (mut chain, consent) = with_consent();
    chain.ok(&health(), access(&alice(), "name", &consent, PURPOSE));
    chain.advance_to(START_MS + 60);
    chain.ok(&alice(), revoke_consent(&consent));
    let refusal = chain.refused(
        &health(),
        access(&alice(), "name", &consent, PURPOSE),
        &format!("consent {consent} was revoked at {} ms", START_MS + 60),
    );
    assert!(
        matches!(refusal, Refusal::PermissionDenied(_)),
        "{refusal:?}"
    );
    let log = chain.accesses(&alice());
    assert_eq!(log.iter().filter(|r| !r.refused).count(), 1);
    assert_eq!(log.iter().filter(|r| r.refused).count(), 1);
}

#[test]
fn access_under_an_expired_consent_is_refused() {
    let (mut chain, consent) = with_consent();
    chain.advance_to(CONSENT_END_MS - 1);
    chain.ok(&health(), access(&alice(), "name", &consent, PURPOSE));
    chain.advance_to(CONSENT_END_MS);
    let refusal = chain.refused(
        &health(),
        access(&alice(), "name", &consent, PURPOSE),
        &format!("consent {consent} expired at {CONSENT_END_MS} ms"),
    );
    assert!(
        matches!(refusal, Refusal::PermissionDenied(_)),
        "{refusal:?}"
    );
    chain.advance_to(CONSENT_END_MS + 1_000_000);
    chain.refused(
        &health(),
        access(&alice(), "name", &consent, PURPOSE),
        "expired",
    );
    let log = chain.accesses(&alice());
    assert_eq!(log.iter().filter(|r| !r.refused).count(), 1);
    assert_eq!(log.iter().filter(|r| r.refused).count(), 2);
}

#[test]
fn access_to_an_attribute_the_consent_does_not_cover_is_refused() {
    let (mut chain, consent) = with_consent();
    let refusal = chain.refused(
        &health(),
        access(&alice(), "date_of_birth", &consent, PURPOSE),
        &format!("consent {consent} does not cover \"date_of_birth\"; it covers [name]"),
    );
    assert!(
        matches!(refusal, Refusal::PermissionDenied(_)),
        "{refusal:?}"
    );
    assert_no_access(&chain, &alice());
}

#[test]
fn access_for_another_purpose_is_refused() {
    let (mut chain, consent) = with_consent();
    let refusal = chain.refused(
        &health(),
        access(&alice(), "name", &consent, "marketing"),
        &format!("consent {consent} is for purpose \"{PURPOSE}\", not \"marketing\""),
    );
    assert!(
        matches!(refusal, Refusal::PermissionDenied(_)),
        "{refusal:?}"
    );
    assert_no_access(&chain, &alice());
}

#[test]
fn access_signed_by_a_key_that_is_not_a_department_is_refused() {
    let (mut chain, consent) = with_consent();
    for key in [outsider(), alice()] {
        let refusal = chain.refused(
            &key,
            access(&alice(), "name", &consent, PURPOSE),
            "is not a department's signing key in force, so it may not read citizens' attributes",
        );
        assert!(
            matches!(refusal, Refusal::PermissionDenied(_)),
            "{refusal:?}"
        );
    }
    assert_no_access(&chain, &alice());
}

#[test]
fn access_to_an_unknown_identity_or_attribute_is_not_found() {
    let (mut chain, consent) = with_consent();
    let refusal = chain.refused(
        &health(),
        access(&bob(), "name", &consent, PURPOSE),
        &format!("no identity {} on chain", bob().public_key().to_did_key()),
    );
    assert!(matches!(refusal, Refusal::NotFound(_)), "{refusal:?}");
    let refusal = chain.refused(
        &health(),
        access(&alice(), "photo", &consent, PURPOSE),
        "has not declared \"photo\"",
    );
    assert!(matches!(refusal, Refusal::NotFound(_)), "{refusal:?}");
    assert_no_access(&chain, &alice());
}

/// Everything from identity to audited read in one block: each
/// transaction sees the writes of those before it.
#[test]
fn a_whole_flow_in_one_block() {
    let mut chain = Chain::new();
    let citizen = alice();
    let transactions = vec![
        chain.signed(&citizen, 1, create()),
        chain.signed(&citizen, 2, declare("name", "Alice Example")),
        chain.signed(&registry(), 1, attest(&citizen, "name", "Alice Example", 0)),
        chain.signed(
            &citizen,
            3,
            grant("health", &["name"], PURPOSE, CONSENT_END_MS),
        ),
    ];
    let consent = transactions[3].id;
    let read = chain.signed(&health(), 1, access(&citizen, "name", &consent, PURPOSE));
    let revoke = chain.signed(&citizen, 4, revoke_consent(&consent));
    let late_read = chain.signed(&health(), 2, access(&citizen, "name", &consent, PURPOSE));
    let all = [transactions, vec![read.clone(), revoke, late_read.clone()]].concat();
    let results = chain.block(&all);
    let outcomes: Vec<TransactionOutcome> = results.iter().map(|r| r.outcome()).collect();
    let (ok, failed) = (TransactionOutcome::Success, TransactionOutcome::Failed);
    assert_eq!(outcomes, vec![ok, ok, ok, ok, ok, ok, failed]);
    assert!(
        results[6].error.contains("was revoked"),
        "{}",
        results[6].error
    );
    assert!(
        read_access(&chain.state, &read.id)
            .expect("state reads")
            .is_some()
    );
    assert_eq!(chain.access(&late_read.id), None);
    // The late read is in the citizen's log as a refusal, after the access.
    let log = chain.accesses(&citizen);
    assert_eq!(log.len(), 2);
    assert!(!log[0].refused);
    assert!(log[1].refused, "{:?}", log[1]);
    assert_eq!(log[1].transaction_id, late_read.id.to_vec());
    assert_eq!(chain.current_attestations(&citizen, "name").len(), 1);
}

/// The state before `transaction`: `expected` without its nonce write.
fn before_state(expected: &MemoryState, transaction: &VerifiedTransaction) -> MemoryState {
    let mut state = expected.clone();
    state.0.remove(&nonce_key(&transaction.signer));
    state
}

// ----- admission -------------------------------------------------------------

#[test]
fn precheck_refuses_like_execution_and_writes_nothing() {
    let (mut chain, consent) = with_consent();
    let before = chain.state.clone();
    let unauthorised = chain.transaction(&health(), attest(&alice(), "name", "Alice Example", 0));
    let refusal = chain.precheck(&unauthorised).expect_err("refused");
    assert!(
        matches!(&refusal, Refusal::PermissionDenied(m) if m.contains("may not attest")),
        "{refusal:?}"
    );
    let wrong_purpose = chain.transaction(&health(), access(&alice(), "name", &consent, "x"));
    assert!(matches!(
        chain.precheck(&wrong_purpose),
        Err(Refusal::PermissionDenied(_))
    ));
    let valid = chain.transaction(&registry(), attest(&alice(), "name", "Alice Example", 0));
    assert_eq!(chain.precheck(&valid), Ok(()));
    let read = chain.transaction(&health(), access(&alice(), "name", &consent, PURPOSE));
    assert_eq!(chain.precheck(&read), Ok(()));
    // Precheck took nothing: no nonce, no attestation, no access.
    assert_eq!(chain.state, before);
    assert!(
        read_attestation(&chain.state, &alice().public_key(), "name", "registry")
            .expect("state reads")
            .is_none()
    );
    // Executing the refused one fails with the same text.
    let results = chain.block(&[unauthorised]);
    assert_eq!(results[0].outcome(), TransactionOutcome::Failed);
    assert_eq!(results[0].error, refusal.to_string());
}

#[test]
fn precheck_uses_the_given_block_time() {
    let (chain, consent) = with_consent();
    let read = chain.transaction(&health(), access(&alice(), "name", &consent, PURPOSE));
    let at = |now_ms| {
        precheck(&chain.state, chain.departments(), &read, 9, now_ms).expect("state reads")
    };
    assert_eq!(at(CONSENT_END_MS - 1), Ok(()));
    assert!(matches!(
        at(CONSENT_END_MS),
        Err(Refusal::PermissionDenied(m)) if m.contains("expired")
    ));
}

// ----- stateless validation --------------------------------------------------

#[test]
fn malformed_identity_bodies_are_refused_by_check_envelope() {
    let key = alice();
    let citizen = key.public_key().as_bytes().to_vec();
    let commitment = commitment_of("v").to_vec();
    let consent_id = Digest::sha256(b"consent").to_vec();
    let good_cid = cid_of("name", "v");
    let long_name = "a".repeat(ATTRIBUTE_NAME_BYTES_MAX + 1);
    let declare_named = |name: &str| declare_with(name, &good_cid, &commitment, "registry");
    let attest_body = |citizen: Vec<u8>, name: &str, commitment: Vec<u8>| {
        Body::AttestAttribute(AttestAttribute {
            citizen,
            name: name.into(),
            commitment,
            expires_ms: 0,
        })
    };
    let access_body = |citizen: Vec<u8>, attribute: &str, consent_id: Vec<u8>, purpose: &str| {
        Body::RecordAccess(RecordAccess {
            citizen,
            attribute: attribute.into(),
            consent_id,
            purpose: purpose.into(),
        })
    };
    let cases: Vec<(Body, &str)> = vec![
        (
            declare_named("Name"),
            "declare_attribute.name \"Name\" is not an attribute name",
        ),
        (
            declare_named(""),
            "declare_attribute.name \"\" is not an attribute name",
        ),
        (declare_named(&long_name), "declare_attribute.name"),
        (declare_named("na me"), "declare_attribute.name"),
        (declare_named("name\nphoto"), "declare_attribute.name"),
        (
            declare_with("name", "not a cid", &commitment, "registry"),
            "declare_attribute.cid \"not a cid\" is not a base32 CIDv1",
        ),
        (
            declare_with(
                "name",
                "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
                &commitment,
                "registry",
            ),
            "declare_attribute.cid",
        ),
        (
            declare_with("name", "bafkrei", &commitment, "registry"),
            "declare_attribute.cid",
        ),
        (
            declare_with(
                "name",
                &format!("b{}", "a".repeat(CID_TEXT_BYTES_MAX)),
                &commitment,
                "registry",
            ),
            "declare_attribute.cid",
        ),
        (
            declare_with("name", &good_cid, &commitment[..31], "registry"),
            "declare_attribute.commitment must be 32 bytes, got 31",
        ),
        (
            declare_with("name", &good_cid, &commitment, ""),
            "declare_attribute.holder is empty",
        ),
        (
            attest_body(citizen[..31].to_vec(), "name", commitment.clone()),
            "attest_attribute.citizen must be 32 bytes, got 31",
        ),
        (
            attest_body(citizen.clone(), "Name", commitment.clone()),
            "attest_attribute.name",
        ),
        (
            attest_body(
                citizen.clone(),
                "name",
                [commitment.clone(), vec![0]].concat(),
            ),
            "attest_attribute.commitment must be 32 bytes, got 33",
        ),
        (
            Body::RevokeAttestation(RevokeAttestation {
                citizen: vec![],
                name: "name".into(),
                reason: String::new(),
            }),
            "revoke_attestation.citizen must be 32 bytes, got 0",
        ),
        (
            Body::RevokeAttestation(RevokeAttestation {
                citizen: citizen.clone(),
                name: "name".into(),
                reason: "x".repeat(TEXT_BYTES_MAX + 1),
            }),
            "revoke_attestation.reason is over 256 bytes",
        ),
        (
            grant("health", &[], PURPOSE, CONSENT_END_MS),
            "grant_consent.attributes must list 1 to 64 names, got 0",
        ),
        (
            grant("health", &["Name"], PURPOSE, CONSENT_END_MS),
            "grant_consent.attributes \"Name\"",
        ),
        (
            grant("health", &["name"], "", CONSENT_END_MS),
            "grant_consent.purpose is empty",
        ),
        (
            grant("", &["name"], PURPOSE, CONSENT_END_MS),
            "grant_consent.department is empty",
        ),
        (
            Body::RevokeConsent(RevokeConsent {
                consent_id: consent_id[..31].to_vec(),
            }),
            "revoke_consent.consent_id must be 32 bytes, got 31",
        ),
        (
            access_body(vec![1; 33], "name", consent_id.clone(), PURPOSE),
            "record_access.citizen must be 32 bytes, got 33",
        ),
        (
            access_body(citizen.clone(), "", consent_id.clone(), PURPOSE),
            "record_access.attribute \"\"",
        ),
        (
            access_body(citizen.clone(), "name", vec![], PURPOSE),
            "record_access.consent_id must be 32 bytes, got 0",
        ),
        (
            access_body(citizen.clone(), "name", consent_id.clone(), ""),
            "record_access.purpose is empty",
        ),
    ];
    for (body, fragment) in cases {
        let result = check_envelope(
            sign(&key, 1, body.clone()),
            CHAIN,
            PAYLOAD_BYTES_MAX as usize,
            |_, _| false,
        );
        match result {
            Err(TransactionError::Malformed(message)) => assert!(
                message.contains(fragment),
                "{message:?} does not contain {fragment:?}"
            ),
            other => panic!("{body:?} gave {other:?}, expected Malformed({fragment:?})"),
        }
    }
}

#[test]
fn too_many_consent_attributes_are_malformed() {
    let names: Vec<String> = (0..=ATTRIBUTES_MAX).map(|n| format!("a{n}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let result = check_envelope(
        sign(
            &alice(),
            1,
            grant("health", &names, PURPOSE, CONSENT_END_MS),
        ),
        CHAIN,
        PAYLOAD_BYTES_MAX as usize,
        |_, _| false,
    );
    assert!(
        matches!(&result, Err(TransactionError::Malformed(m)) if m.contains("got 65")),
        "{result:?}"
    );
    let result = check_envelope(
        sign(
            &alice(),
            1,
            grant("health", &names[..ATTRIBUTES_MAX], PURPOSE, CONSENT_END_MS),
        ),
        CHAIN,
        PAYLOAD_BYTES_MAX as usize,
        |_, _| false,
    );
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn well_formed_identity_bodies_pass_check_envelope() {
    let consent = Digest::sha256(b"consent");
    let longest = "a".repeat(ATTRIBUTE_NAME_BYTES_MAX);
    for body in [
        create(),
        declare("name", "v"),
        declare(&longest, "v"),
        declare("date_of_birth-2", "v"),
        attest(&alice(), "name", "v", 0),
        revoke_attestation(&alice(), "name", ""),
        grant("health", &["name", "photo"], PURPOSE, 1),
        revoke_consent(&consent),
        access(&alice(), "name", &consent, PURPOSE),
    ] {
        let result = check_envelope(
            sign(&alice(), 1, body),
            CHAIN,
            PAYLOAD_BYTES_MAX as usize,
            |_, _| false,
        );
        assert!(result.is_ok(), "{result:?}");
    }
}

#[test]
fn attribute_names_are_lower_case_bounded_words() {
    assert!(valid_attribute_name("name"));
    assert!(valid_attribute_name("date_of_birth"));
    assert!(valid_attribute_name("x-1"));
    assert!(valid_attribute_name(&"a".repeat(64)));
    assert!(!valid_attribute_name(&"a".repeat(65)));
    assert!(!valid_attribute_name(""));
    assert!(!valid_attribute_name("Name"));
    assert!(!valid_attribute_name("näme"));
    assert!(!valid_attribute_name("a/b"));
    assert!(!valid_attribute_name("a\n"));
}

// ----- commitments -----------------------------------------------------------

/// The framing documented on `SealedAttribute` in types.proto.
fn framed(salt: &[u8], value: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for part in [b"govchain/attribute/v1".as_slice(), salt, value] {
        let len = u32::try_from(part.len()).expect("short");
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(part);
    }
    bytes
}

#[test]
fn attribute_commitment_is_sha256_of_the_documented_framing() {
    let salt = [0x5a; 16];
    let value = b"1990-01-01";
    let bytes = framed(&salt, value);
    assert_eq!(&bytes[..4], &[0, 0, 0, 21]);
    assert_eq!(bytes.len(), 4 + 21 + 4 + salt.len() + 4 + value.len());
    assert_eq!(attribute_commitment(&salt, value), Digest::sha256(&bytes));
    assert_eq!(
        attribute_commitment(b"", b""),
        Digest::sha256(&framed(b"", b""))
    );
}

#[test]
fn attribute_commitment_separates_salt_from_value() {
    assert_ne!(
        attribute_commitment(b"salt-a", b"bc"),
        attribute_commitment(b"salt-ab", b"c")
    );
    assert_ne!(
        attribute_commitment(&[1; 16], b"v"),
        attribute_commitment(&[2; 16], b"v")
    );
    assert_ne!(Digest::sha256(b"v"), attribute_commitment(b"", b"v"));
}

// ----- departments -----------------------------------------------------------

#[test]
fn departments_are_found_by_key_and_by_name() {
    let departments = departments();
    let registry_key = registry().public_key();
    assert_eq!(
        departments.by_key(&registry_key).map(|d| d.name.as_str()),
        Some("registry")
    );
    assert_eq!(
        departments.by_name("health").map(|d| d.public_key),
        Some(health().public_key())
    );
    assert_eq!(departments.by_key(&alice().public_key()), None);
    assert_eq!(departments.by_name("tax"), None);
    let names: Vec<&str> = departments.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, vec!["health", "registry"]);
}

/// The race of the hardening review: Mallory's department learns Alice's
/// pending declaration (CID, commitment, size) and declares the same value
/// under a citizen key of its own, ordered first. Without a receipt that
/// binds the upload to Alice, Mallory's declaration owned the blob (and its
/// release), and Alice's failed with ALREADY_EXISTS.
#[test]
fn a_pending_declaration_cannot_be_claimed_first_by_someone_who_only_saw_it() {
    let mut chain = Chain::new();
    let mallory = outsider();
    chain.ok(&alice(), create());
    chain.ok(&mallory, create());
    let cid = cid_of("address", "1 Main Street");
    let commitment = commitment_of("1 Main Street");
    let size_bytes = 128;
    let alices = |holder_receipt: Vec<u8>| {
        Body::DeclareAttribute(DeclareAttribute {
            name: "address".into(),
            cid: cid.clone(),
            commitment: commitment.to_vec(),
            holder: "registry".into(),
            size_bytes,
            holder_receipt,
        })
    };
    let alice_receipt = receipt(&alice().public_key(), &cid, size_bytes);
    // Mallory copies the whole declaration, receipt included; or brings no
    // receipt; or one of another holder's key. Ordered first, in one block.
    let forged = SigningKey::from_seed([99; 32])
        .sign(
            blob_receipt_digest(CHAIN, "registry", &cid, &mallory.public_key(), size_bytes)
                .as_bytes(),
        )
        .to_vec();
    for (nonce, attempt) in [alice_receipt.clone(), vec![0; 64], forged]
        .into_iter()
        .enumerate()
    {
        let theft = chain.signed(&mallory, 2 + nonce as u64, alices(attempt));
        let results = chain.block(&[theft]);
        assert_eq!(
            results[0].outcome(),
            TransactionOutcome::Failed,
            "{results:?}"
        );
        assert!(
            results[0]
                .error
                .contains("no receipt from holder \"registry\""),
            "{}",
            results[0].error
        );
    }
    assert_eq!(chain.blob_reference(&cid), None);
    let declared = chain.signed(&alice(), 2, alices(alice_receipt));
    let results = chain.block(&[declared]);
    assert_eq!(
        results[0].outcome(),
        TransactionOutcome::Success,
        "{results:?}"
    );
    assert_eq!(
        chain.blob_reference(&cid),
        Some((alice().public_key(), "address".to_owned()))
    );
}

/// A receipt names its holder, blob and size: none of them can be changed,
/// and a holder that runs no node cannot have signed one.
#[test]
fn a_receipt_binds_holder_blob_and_size() {
    let mut chain = with_alice();
    let cid = cid_of("photo", "jpeg");
    let commitment = commitment_of("jpeg");
    let good = receipt(&alice().public_key(), &cid, 128);
    let body = |holder: &str, size_bytes: u64, holder_receipt: Vec<u8>| {
        Body::DeclareAttribute(DeclareAttribute {
            name: "photo".into(),
            cid: cid.clone(),
            commitment: commitment.to_vec(),
            holder: holder.into(),
            size_bytes,
            holder_receipt,
        })
    };
    let refusal = chain.refused(
        &alice(),
        body("registry", 129, good.clone()),
        "no receipt from holder",
    );
    assert!(
        matches!(refusal, Refusal::PermissionDenied(_)),
        "{refusal:?}"
    );
    let other_blob = receipt(&alice().public_key(), &cid_of("photo", "png"), 128);
    chain.refused(
        &alice(),
        body("registry", 128, other_blob),
        "no receipt from holder",
    );
    let refusal = chain.refused(
        &alice(),
        body("health", 128, good.clone()),
        "runs no validator node",
    );
    assert!(
        matches!(refusal, Refusal::FailedPrecondition(_)),
        "{refusal:?}"
    );
    chain.ok(&alice(), body("registry", 128, good));
}

/// A department cannot flood a citizen's log with refusals: 32 a day are
/// logged, later ones fail unlogged, and the next day logs again.
#[test]
fn refused_reads_are_logged_up_to_a_daily_bound() {
    let (mut chain, _) = with_consent();
    let wrong = Digest::sha256(b"no such consent");
    for _ in 0..REFUSALS_LOGGED_PER_DAY_MAX + 3 {
        let read = chain.transaction(&health(), access(&alice(), "name", &wrong, PURPOSE));
        let results = chain.block(&[read]);
        assert_eq!(results[0].outcome(), TransactionOutcome::Failed);
    }
    let logged = chain.accesses(&alice());
    assert_eq!(logged.len() as u64, REFUSALS_LOGGED_PER_DAY_MAX);
    assert!(logged.iter().all(|r| r.refused && r.department == "health"));
    chain.advance_to(START_MS + DAY_MS);
    let read = chain.transaction(&health(), access(&alice(), "name", &wrong, PURPOSE));
    chain.block(&[read]);
    assert_eq!(
        chain.accesses(&alice()).len() as u64,
        REFUSALS_LOGGED_PER_DAY_MAX + 1
    );
}

mod disclosure;
