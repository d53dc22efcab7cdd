use std::collections::BTreeMap;

use govchain_crypto::SigningKey;
use govchain_proto::types::v1::{AnchoredRecord, TransactionOutcome};

use super::*;
use crate::transaction::tests::{CHAIN, anchor, sign};
use crate::{MemoryTree, anchor_key, check_envelope, prove};

#[derive(Default)]
struct MemoryState(BTreeMap<Vec<u8>, Vec<u8>>, MemoryTree);

impl StateRead for MemoryState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.0.get(key).cloned())
    }
}

impl TreeRead for MemoryState {
    fn tree_node(&self, path: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.1.tree_node(path)
    }
}

impl MemoryState {
    fn apply(&mut self, executed: &ExecutedBlock) {
        self.1.apply(&executed.tree_writes);
        for (key, value) in &executed.writes {
            match value {
                Some(value) => self.0.insert(key.clone(), value.clone()),
                None => self.0.remove(key),
            };
        }
    }
}

static LIMITS: std::sync::LazyLock<BlockLimits> = std::sync::LazyLock::new(|| BlockLimits {
    transactions_max: 100,
    bytes_max: 1 << 20,
    payload_bytes_max: 4096,
    genesis_departments: Arc::new(
        crate::identity::Departments::default()
            .with_genesis_validators(crate::governance::test_validators(4)),
    ),
});

fn genesis() -> Head {
    Head {
        height: 0,
        hash: Digest::sha256(b"genesis"),
        state_root: Digest::default(),
        timestamp_ms: 0,
    }
}

fn verified(key: &SigningKey, nonce: u64, record: &str) -> VerifiedTransaction {
    check_envelope(sign(key, nonce, anchor(record)), CHAIN, 4096, |_, _| false).expect("valid")
}

fn context(head: &Head) -> CheckContext<'_> {
    CheckContext {
        chain_id: CHAIN,
        head,
        limits: &LIMITS,
        timestamp_ms_max: u64::MAX,
    }
}

fn build(head: &Head, state: &MemoryState, txs: &[VerifiedTransaction]) -> BuiltBlock {
    build_block(CHAIN, head, 0, 0, 1_000, txs, &LIMITS, state).expect("build")
}

#[test]
fn built_block_checks_and_executes_the_same() {
    let (a, b) = (
        SigningKey::from_seed([1; 32]),
        SigningKey::from_seed([2; 32]),
    );
    let txs = vec![
        verified(&a, 1, "r1"),
        verified(&b, 1, "r2"),
        verified(&a, 2, "r3"),
    ];
    let state = MemoryState::default();
    let built = build(&genesis(), &state, &txs);
    assert_eq!(built.header.transaction_count, 3);
    let checked = check_block(
        &context(&genesis()),
        &built.hash,
        &built.encoded,
        &state,
        |_, _| false,
    )
    .expect("valid");
    assert_eq!(checked.executed, built.executed);
    assert_eq!(checked.hash, built.hash);
    assert!(
        checked
            .executed
            .transactions
            .iter()
            .all(|(_, r)| r.outcome == TransactionOutcome::Success as i32)
    );
}

#[test]
fn builder_skips_transactions_whose_nonce_is_not_next() {
    let a = SigningKey::from_seed([1; 32]);
    // Nonce 3 arrives before 2: it waits for a later block.
    let txs = vec![
        verified(&a, 1, "r1"),
        verified(&a, 3, "r3"),
        verified(&a, 2, "r2"),
    ];
    let built = build(&genesis(), &MemoryState::default(), &txs);
    let ids: Vec<Digest> = built
        .executed
        .transactions
        .iter()
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(ids, vec![txs[0].id, txs[2].id]);
}

#[test]
fn builder_respects_the_count_limit() {
    let a = SigningKey::from_seed([1; 32]);
    let txs: Vec<_> = (1..=5).map(|n| verified(&a, n, &format!("r{n}"))).collect();
    let limits = BlockLimits {
        transactions_max: 2,
        ..LIMITS.clone()
    };
    let built = build_block(
        CHAIN,
        &genesis(),
        0,
        0,
        1,
        &txs,
        &limits,
        &MemoryState::default(),
    )
    .expect("build");
    assert_eq!(built.header.transaction_count, 2);
}

#[test]
fn chained_blocks_track_nonces_and_state_roots() {
    let a = SigningKey::from_seed([1; 32]);
    let mut state = MemoryState::default();
    let first = build(&genesis(), &state, &[verified(&a, 1, "r1")]);
    state.apply(&first.executed);
    let head = Head {
        height: 1,
        hash: first.hash,
        state_root: first.executed.state_root,
        timestamp_ms: 1_000,
    };
    // Replaying nonce 1 in the next block is not possible.
    let replay = build(&head, &state, &[verified(&a, 1, "r1")]);
    assert_eq!(replay.header.transaction_count, 0);
    let second = build(&head, &state, &[verified(&a, 2, "r2")]);
    assert_eq!(second.header.parent_hash, first.hash.to_vec());
    assert_ne!(second.executed.state_root, first.executed.state_root);
    assert!(
        check_block(
            &context(&head),
            &second.hash,
            &second.encoded,
            &state,
            |_, _| false
        )
        .is_ok()
    );
}

#[test]
fn wrong_parent_is_refused() {
    let a = SigningKey::from_seed([1; 32]);
    let state = MemoryState::default();
    let built = build(&genesis(), &state, &[verified(&a, 1, "r1")]);
    let other = Head {
        hash: Digest::sha256(b"other"),
        ..genesis()
    };
    let err = check_block(
        &context(&other),
        &built.hash,
        &built.encoded,
        &state,
        |_, _| false,
    )
    .err();
    assert!(
        matches!(
            err,
            Some(BlockError::WrongField {
                field: "parent_hash",
                ..
            })
        ),
        "{err:?}"
    );
}

#[test]
fn wrong_digest_is_refused() {
    let state = MemoryState::default();
    let built = build(&genesis(), &state, &[]);
    let err = check_block(
        &context(&genesis()),
        &Digest::sha256(b"x"),
        &built.encoded,
        &state,
        |_, _| false,
    )
    .err();
    assert!(matches!(err, Some(BlockError::WrongHash { .. })));
}

/// Re-encodes a block with a modified header and returns its new hash.
fn tamper(
    built: &BuiltBlock,
    change: impl FnOnce(&mut BlockHeader, &mut Block),
) -> (Digest, Vec<u8>) {
    let mut block = Block::decode(built.encoded.clone()).expect("decodes");
    let mut header = built.header.clone();
    change(&mut header, &mut block);
    block.header = header.encode_to_vec();
    (block_hash(&block.header), block.encode_to_vec())
}

#[test]
fn wrong_state_root_or_transactions_root_is_refused() {
    let a = SigningKey::from_seed([1; 32]);
    let state = MemoryState::default();
    let built = build(&genesis(), &state, &[verified(&a, 1, "r1")]);
    let (hash, bytes) = tamper(&built, |h, _| h.state_root = vec![0; 32]);
    let err = check_block(&context(&genesis()), &hash, &bytes, &state, |_, _| false).err();
    assert!(
        matches!(
            err,
            Some(BlockError::WrongField {
                field: "state_root",
                ..
            })
        ),
        "{err:?}"
    );
    let (hash, bytes) = tamper(&built, |h, _| h.transactions_root = vec![0; 32]);
    let err = check_block(&context(&genesis()), &hash, &bytes, &state, |_, _| false).err();
    assert!(
        matches!(
            err,
            Some(BlockError::WrongField {
                field: "transactions_root",
                ..
            })
        ),
        "{err:?}"
    );
}

#[test]
fn wrong_proposer_and_forged_transaction_are_refused() {
    let a = SigningKey::from_seed([1; 32]);
    let state = MemoryState::default();
    let built = build(&genesis(), &state, &[verified(&a, 1, "r1")]);
    let (hash, bytes) = tamper(&built, |h, _| h.proposer_index = 2);
    let err = check_block(&context(&genesis()), &hash, &bytes, &state, |_, _| false).err();
    assert!(
        matches!(
            err,
            Some(BlockError::WrongField {
                field: "proposer_index",
                ..
            })
        ),
        "{err:?}"
    );
    let (hash, bytes) = tamper(&built, |_, b| b.transactions[0].signature = vec![1; 64]);
    let err = check_block(&context(&genesis()), &hash, &bytes, &state, |_, _| false).err();
    assert!(
        matches!(err, Some(BlockError::Transaction { index: 0, .. })),
        "{err:?}"
    );
}

fn assert_bad_signature_at(err: Option<BlockError>, expected: usize) {
    assert!(
        matches!(
            err,
            Some(BlockError::Transaction {
                index,
                error: TransactionError::BadSignature { .. }
            }) if index == expected
        ),
        "{err:?}"
    );
}

#[test]
fn signatures_not_checked_at_admission_are_checked_in_one_batch() {
    let keys: Vec<SigningKey> = (1..=5).map(|i| SigningKey::from_seed([i; 32])).collect();
    let state = MemoryState::default();
    let txs: Vec<VerifiedTransaction> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| verified(k, 1, &format!("r{i}")))
        .collect();
    let built = build(&genesis(), &state, &txs);
    // All unverified and all good: the batch passes.
    check_block(
        &context(&genesis()),
        &built.hash,
        &built.encoded,
        &state,
        |_, _| false,
    )
    .expect("valid block");
    // Transactions 1 and 3 carry another transaction's (well-formed)
    // signature; the first of them is the error, whatever the batch.
    let (hash, bytes) = tamper(&built, |_, b| {
        b.transactions[1].signature = b.transactions[0].signature.clone();
        b.transactions[3].signature = b.transactions[0].signature.clone();
    });
    let err = check_block(&context(&genesis()), &hash, &bytes, &state, |_, _| false).err();
    assert_bad_signature_at(err, 1);
    // Reusing admitted transactions: only byte-identical envelopes are
    // taken, so the forged ones are still checked and still fail.
    let admitted =
        |envelope: &TransactionEnvelope| txs.iter().find(|t| t.envelope == *envelope).cloned();
    let reused = check_block_reusing(
        &context(&genesis()),
        &built.hash,
        &built.encoded,
        &state,
        admitted,
        |_, _| false,
    )
    .expect("valid block");
    assert_eq!(reused.executed.state_root, built.executed.state_root);
    let err = check_block_reusing(
        &context(&genesis()),
        &hash,
        &bytes,
        &state,
        admitted,
        |_, _| false,
    )
    .err();
    assert_bad_signature_at(err, 1);
    // A signature vouched for at admission is not checked again: only
    // transaction 3 is left to fail.
    let forged_1 = crate::transaction::transaction_id(
        CHAIN,
        keys[1].public_key().as_bytes(),
        1,
        &txs[1].envelope.payload,
    );
    let err = check_block(&context(&genesis()), &hash, &bytes, &state, |id, _| {
        *id == forged_1
    })
    .err();
    assert_bad_signature_at(err, 3);
}

#[test]
fn out_of_order_nonces_make_a_block_invalid() {
    let a = SigningKey::from_seed([1; 32]);
    let state = MemoryState::default();
    let built = build(&genesis(), &state, &[verified(&a, 1, "r1")]);
    let (hash, bytes) = tamper(&built, |h, b| {
        b.transactions[0] = sign(&a, 2, anchor("r1"));
        h.transaction_count = 1;
    });
    let err = check_block(&context(&genesis()), &hash, &bytes, &state, |_, _| false).err();
    assert!(
        matches!(
            err,
            Some(BlockError::WrongNonce {
                index: 0,
                expected: 1,
                got: 2
            })
        ),
        "{err:?}"
    );
}

#[test]
fn only_the_first_signer_may_reanchor_a_record() {
    let (a, b) = (
        SigningKey::from_seed([1; 32]),
        SigningKey::from_seed([2; 32]),
    );
    let state = MemoryState::default();
    let txs = vec![
        verified(&a, 1, "r1"),
        verified(&b, 1, "r1"),
        verified(&a, 2, "r1"),
    ];
    let built = build(&genesis(), &state, &txs);
    let outcomes: Vec<i32> = built
        .executed
        .transactions
        .iter()
        .map(|(_, r)| r.outcome)
        .collect();
    let (ok, failed) = (
        TransactionOutcome::Success as i32,
        TransactionOutcome::Failed as i32,
    );
    assert_eq!(outcomes, vec![ok, failed, ok]);
    let stored = built.executed.writes[&anchor_key("health/vaccinations", "r1")]
        .clone()
        .expect("written");
    let record = AnchoredRecord::decode(stored.as_slice()).expect("decodes");
    assert_eq!(record.version, 2);
    assert_eq!(record.signer, a.public_key().as_bytes().to_vec());
}

#[test]
fn garbage_block_bytes_are_malformed() {
    let state = MemoryState::default();
    let err = check_block(
        &context(&genesis()),
        &Digest::default(),
        &[0xff, 0xff, 0x01],
        &state,
        |_, _| false,
    )
    .err();
    assert!(matches!(err, Some(BlockError::Malformed(_))));
}

#[test]
fn a_fetched_block_proves_its_hash_signatures_and_transaction_root() {
    let keys: Vec<SigningKey> = (1..=3).map(|i| SigningKey::from_seed([i; 32])).collect();
    let state = MemoryState::default();
    let txs: Vec<VerifiedTransaction> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| verified(k, 1, &format!("r{i}")))
        .collect();
    let built = build(&genesis(), &state, &txs);
    let block = Block::decode(built.encoded.clone()).expect("decodes");
    let (hash, header) = check_fetched_block(CHAIN, &LIMITS, &block).expect("an honest block");
    assert_eq!(hash, built.hash);
    assert_eq!(header, built.header);

    // A forged signature leaves the ids, the root and the hash unchanged:
    // only verifying every signature finds it.
    let mut forged = block.clone();
    forged.transactions[1].signature = keys[0].sign(b"something else").to_bytes().to_vec();
    assert_eq!(block_hash(&forged.header), built.hash);
    assert_bad_signature_at(check_fetched_block(CHAIN, &LIMITS, &forged).err(), 1);

    // A transaction swapped for another signed one breaks the root.
    let mut swapped = block.clone();
    swapped.transactions[2] = sign(&keys[2], 1, anchor("other"));
    let err = check_fetched_block(CHAIN, &LIMITS, &swapped).err();
    assert!(
        matches!(
            err,
            Some(BlockError::WrongField {
                field: "transactions_root",
                ..
            })
        ),
        "{err:?}"
    );

    // One dropped: the count in the header no longer matches.
    let mut short = block.clone();
    short.transactions.pop();
    let err = check_fetched_block(CHAIN, &LIMITS, &short).err();
    assert!(
        matches!(
            err,
            Some(BlockError::WrongField {
                field: "transaction_count",
                ..
            })
        ),
        "{err:?}"
    );

    // Another chain's block, and a header that does not decode.
    let err = check_fetched_block("another-chain", &LIMITS, &block).err();
    assert!(
        matches!(
            err,
            Some(BlockError::WrongField {
                field: "chain_id",
                ..
            })
        ),
        "{err:?}"
    );
    let mut garbage = block;
    garbage.header = vec![0xff; 7];
    let err = check_fetched_block(CHAIN, &LIMITS, &garbage).err();
    assert!(matches!(err, Some(BlockError::Malformed(_))), "{err:?}");
}

/// The attack run anchored `health/...` records with keys that were no
/// department's. A department's name as the dataset's first segment is its
/// namespace now.
#[test]
fn a_departments_namespace_takes_anchors_only_from_its_key() {
    use crate::identity::Department;
    let health = SigningKey::from_seed([30; 32]);
    let squatter = SigningKey::from_seed([31; 32]);
    let tax = SigningKey::from_seed([32; 32]);
    let department = |name: &str, key: &SigningKey| Department {
        name: name.into(),
        public_key: key.public_key(),
        attests: Default::default(),
        node_key: None,
    };
    let limits = BlockLimits {
        genesis_departments: Arc::new(
            crate::identity::Departments::new([
                department("health", &health),
                department("tax", &tax),
            ])
            .with_genesis_validators(crate::governance::test_validators(4)),
        ),
        ..LIMITS.clone()
    };
    let anchor_in = |key: &SigningKey, nonce: u64, dataset: &str| {
        let body = govchain_proto::types::v1::transaction::Body::AnchorRecord(
            govchain_proto::types::v1::AnchorRecord {
                dataset: dataset.into(),
                record_id: "r1".into(),
                record_hash: vec![1; 32],
                schema: "s".into(),
                record_time_ms: 1,
            },
        );
        check_envelope(sign(key, nonce, body), CHAIN, 4096, |_, _| false).expect("valid")
    };
    let txs = vec![
        anchor_in(&squatter, 1, "health/vaccinations"),
        anchor_in(&tax, 1, "health/other"),
        anchor_in(&health, 1, "health/vaccinations"),
        anchor_in(&squatter, 2, "shared/open-data"),
    ];
    let state = MemoryState::default();
    let built = build_block(CHAIN, &genesis(), 0, 0, 1_000, &txs, &limits, &state).expect("build");
    let results: Vec<_> = built.executed.transactions.iter().map(|(_, r)| r).collect();
    assert_eq!(results[0].outcome(), TransactionOutcome::Failed);
    assert!(
        results[0]
            .error
            .contains("in department \"health\"'s namespace"),
        "{}",
        results[0].error
    );
    assert_eq!(results[1].outcome(), TransactionOutcome::Failed);
    assert!(
        results[1]
            .error
            .contains("the signer is department \"tax\""),
        "{}",
        results[1].error
    );
    assert_eq!(results[2].outcome(), TransactionOutcome::Success);
    assert_eq!(results[3].outcome(), TransactionOutcome::Success);
    let stored = built.executed.writes[&anchor_key("health/vaccinations", "r1")]
        .clone()
        .expect("written");
    let record = AnchoredRecord::decode(stored.as_slice()).expect("decodes");
    assert_eq!(record.department, "health");
    assert_eq!(record.signer, health.public_key().as_bytes().to_vec());
    let open = built.executed.writes[&anchor_key("shared/open-data", "r1")]
        .clone()
        .expect("written");
    assert_eq!(
        AnchoredRecord::decode(open.as_slice())
            .expect("decodes")
            .department,
        ""
    );
}

#[test]
fn the_state_root_proves_anchors_nonces_and_absence() {
    let a = SigningKey::from_seed([1; 32]);
    let mut state = MemoryState::default();
    let first = build(&genesis(), &state, &[verified(&a, 1, "r1")]);
    state.apply(&first.executed);
    let root = first.executed.state_root;
    assert_eq!(first.header.state_root, root.to_vec());
    assert_ne!(root, crate::EMPTY_ROOT);
    for (key, value) in &state.0 {
        prove(&state, key)
            .expect("prove")
            .verify(&root, key, Some(value))
            .expect("each written key proves its value");
    }
    let nonce = crate::nonce_key(&a.public_key());
    assert!(state.0.contains_key(&nonce), "the nonce is state too");
    let missing = anchor_key("health/vaccinations", "never");
    prove(&state, &missing)
        .expect("prove")
        .verify(&root, &missing, None)
        .expect("an unanchored record proves absent");
}
