//! Transaction reads with inclusion proofs on a real four-node cluster:
//! transactions submitted through one node are fetched with proofs from
//! another and checked offline against genesis, in process
//! (`verify_transaction_proof`, `verify_anchoring_proof`) and through
//! `govchain tx get --verify` and `record verify --verify`; answers
//! tampered with after they left the node (a lying node) are refused,
//! naming the item that failed.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use govchain_crypto::{Digest, SigningKey};
use govchain_node::{
    CertifiedHeaderError, InclusionProofError, ProvenInclusion, validator_set,
    verify_anchoring_proof, verify_transaction_proof,
};
use govchain_pbft::ValidatorSet;
use govchain_pki::Genesis;
use govchain_proto::node::v1::*;
use govchain_proto::types::v1::AnchoredRecord;
use prost::Message as _;
use support::*;

const TRANSACTIONS: u64 = 6;

/// Runs `govchain` and returns its exit code, stdout and stderr.
fn govchain_status(args: &[String]) -> (i32, String, String) {
    let output = Command::new(BIN).args(args).output().unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn genesis_path(cluster: &Cluster) -> PathBuf {
    cluster.certs().join("genesis.json")
}

/// `tx get ID --verify --genesis G` and `extra`.
fn tx_get_verify(cluster: &Cluster, id: &Digest, extra: &[String]) -> (i32, String, String) {
    let mut args = strings(&[
        "tx",
        "get",
        &id.to_hex(),
        "--verify",
        "--genesis",
        genesis_path(cluster).to_str().unwrap(),
    ]);
    args.extend_from_slice(extra);
    govchain_status(&args)
}

/// Checks a saved `GetTransaction` answer offline (no node) and expects a
/// refusal naming `reason`.
fn assert_cli_refuses(cluster: &Cluster, id: &Digest, saved: &Path, reason: &str) {
    let (code, stdout, stderr) = tx_get_verify(
        cluster,
        id,
        &strings(&["--proof-file", saved.to_str().unwrap()]),
    );
    assert_eq!(code, 1, "refused with exit 1: {stdout} {stderr}");
    assert!(stderr.contains("PROOF REFUSED"), "{stderr}");
    assert!(stderr.contains(reason), "{reason:?} not in {stderr}");
    assert!(stdout.is_empty(), "nothing printed as proven: {stdout}");
}

/// Rewrites a saved answer.
fn tamper<M: prost::Message + Default>(saved: &Path, out: &Path, change: impl FnOnce(&mut M)) {
    let mut answer = M::decode(std::fs::read(saved).unwrap().as_slice()).unwrap();
    change(&mut answer);
    std::fs::write(out, answer.encode_to_vec()).unwrap();
}

struct Trust {
    chain_id: String,
    validators: ValidatorSet,
}

impl Trust {
    fn load(cluster: &Cluster) -> Self {
        let genesis = Genesis::load(&genesis_path(cluster)).unwrap();
        Self {
            validators: validator_set(&genesis).unwrap(),
            chain_id: genesis.chain_id,
        }
    }

    fn verify(
        &self,
        id: &Digest,
        answer: &GetTransactionResponse,
    ) -> Result<ProvenInclusion, InclusionProofError> {
        verify_transaction_proof(&self.chain_id, &self.validators, id, answer)
    }
}

async fn get_proven(
    client: &mut govchain_proto::node::v1::node_service_client::NodeServiceClient<
        tonic::transport::Channel,
    >,
    id: &Digest,
) -> GetTransactionResponse {
    client
        .get_transaction(GetTransactionRequest {
            transaction_id: id.to_vec(),
            prove: true,
        })
        .await
        .unwrap()
        .into_inner()
}

/// Submits `TRANSACTIONS` anchors in one batch (so that blocks hold several
/// and audit paths are not empty) and waits until all are committed.
async fn submit_anchors(cluster: &Cluster, key: &SigningKey) -> Vec<Digest> {
    let mut client = cluster.client(0).await.unwrap();
    let envelopes: Vec<_> = (1..=TRANSACTIONS)
        .map(|nonce| sign(key, nonce, anchor_body(&format!("inclusion-{nonce}"))))
        .collect();
    let ids: Vec<Digest> = envelopes.iter().map(transaction_id).collect();
    let results = client
        .submit_transactions(SubmitTransactionsRequest { envelopes })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), ids.len());
    for id in &ids {
        committed_height(&mut client, *id).await;
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_transactions_verify_offline_and_lies_are_caught() {
    let cluster = Cluster::start(4).await;
    let key = SigningKey::from_seed([43; 32]);
    let ids = submit_anchors(&cluster, &key).await;
    let trust = Trust::load(&cluster);

    // Every transaction, read from another node than the one it went to,
    // is proven in its block at the index the node names.
    let mut other = cluster.client(2).await.unwrap();
    let mut widest: Option<(Digest, GetTransactionResponse)> = None;
    for id in &ids {
        let answer = get_proven(&mut other, id).await;
        assert_eq!(answer.status(), TransactionStatus::Committed);
        let proven = trust.verify(id, &answer).unwrap();
        assert_eq!(proven.height, answer.block_height);
        assert_eq!(proven.index, u64::from(answer.index));
        assert_eq!(proven.block_hash.as_bytes().as_slice(), answer.block_hash);
        assert_eq!(proven.signers, 3, "the nodes keep a quorum's certificate");
        assert_eq!(proven.quorum, 3);
        let tree_size = answer.proof.as_ref().unwrap().tree_size;
        if widest
            .as_ref()
            .is_none_or(|(_, w)| w.proof.as_ref().unwrap().tree_size < tree_size)
        {
            widest = Some((*id, answer));
        }
    }
    let (id, honest) = widest.unwrap();
    let proof = honest.proof.as_ref().unwrap();
    assert!(
        proof.tree_size >= 2 && !proof.audit_path.is_empty(),
        "one batch of {TRANSACTIONS} makes a block of several: {proof:?}"
    );

    // Without prove, no proof; an unknown id with prove is still NOT_FOUND.
    let plain = other
        .get_transaction(GetTransactionRequest {
            transaction_id: id.to_vec(),
            prove: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(plain.proof.is_none());
    let unknown = other
        .get_transaction(GetTransactionRequest {
            transaction_id: vec![7; 32],
            prove: true,
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");

    // A lying node, item by item.
    let lie = |change: &dyn Fn(&mut GetTransactionResponse)| {
        let mut answer = honest.clone();
        change(&mut answer);
        trust.verify(&id, &answer).unwrap_err()
    };
    // One byte of the header (its state root: it still decodes).
    let err = lie(&|answer| {
        let header = &mut answer.proof.as_mut().unwrap().header;
        let state_root = govchain_proto::types::v1::BlockHeader::decode(header.as_slice())
            .unwrap()
            .state_root;
        let at = header
            .windows(32)
            .position(|window| window == state_root.as_slice())
            .unwrap();
        header[at + 5] ^= 0x10;
    });
    assert!(
        matches!(
            err,
            InclusionProofError::Header(CertifiedHeaderError::Certificate { .. })
        ),
        "{err}"
    );
    // A commit signature.
    let err = lie(&|answer| {
        let certificate = answer.proof.as_mut().unwrap().certificate.as_mut().unwrap();
        certificate.signatures[1].signature[10] ^= 1;
    });
    assert!(
        matches!(
            err,
            InclusionProofError::Header(CertifiedHeaderError::Certificate { .. })
        ),
        "{err}"
    );
    // A hash on the audit path.
    let err = lie(&|answer| answer.proof.as_mut().unwrap().audit_path[0][31] ^= 1);
    assert!(
        matches!(err, InclusionProofError::AuditPath { .. }),
        "{err}"
    );
    // The envelope.
    let err = lie(&|answer| answer.envelope.as_mut().unwrap().nonce += 1);
    assert!(
        matches!(err, InclusionProofError::EnvelopeId { .. }),
        "{err}"
    );
    let err = lie(&|answer| answer.envelope.as_mut().unwrap().signature[0] ^= 1);
    assert!(matches!(err, InclusionProofError::Signature(_)), "{err}");
    // The index, in the proof and in the answer.
    let err = lie(&|answer| {
        let proof = answer.proof.as_mut().unwrap();
        proof.leaf_index = (proof.leaf_index + 1) % proof.tree_size;
    });
    assert!(
        matches!(err, InclusionProofError::AuditPath { .. }),
        "{err}"
    );
    let err = lie(&|answer| answer.index = (answer.index + 1) % 2);
    assert!(
        matches!(err, InclusionProofError::Claim { what: "index", .. }),
        "{err}"
    );
    // The size, which the root alone does not fix.
    let err = lie(&|answer| answer.proof.as_mut().unwrap().tree_size += 1);
    assert!(matches!(err, InclusionProofError::TreeSize { .. }), "{err}");

    // The CLI: fetched, verified, saved; then checked again with no node.
    let work = tempfile::tempdir().unwrap();
    let saved = work.path().join("tx.proof");
    let mut extra = cluster.client_flags(1);
    extra.extend(strings(&["--save-proof", saved.to_str().unwrap()]));
    let (code, stdout, stderr) = tx_get_verify(&cluster, &id, &extra);
    assert_eq!(code, 0, "{stdout} {stderr}");
    assert!(
        stdout.contains("verified offline against genesis"),
        "{stdout}"
    );
    assert!(stdout.contains("commit signatures (quorum 3)"), "{stdout}");
    assert!(
        stdout.contains(&format!("at index {} of {}", honest.index, proof.tree_size)),
        "{stdout}"
    );
    let mut json = strings(&["--json"]);
    json.extend(strings(&[
        "tx",
        "get",
        &id.to_hex(),
        "--verify",
        "--genesis",
        genesis_path(&cluster).to_str().unwrap(),
        "--proof-file",
        saved.to_str().unwrap(),
    ]));
    let (code, stdout, stderr) = govchain_status(&json);
    assert_eq!(code, 0, "{stdout} {stderr}");
    let view: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(view["status"], "committed", "{view}");
    assert_eq!(view["proof"]["index"], u64::from(honest.index), "{view}");
    assert_eq!(view["proof"]["block_height"], honest.block_height, "{view}");
    assert_eq!(
        view["proof"]["block_transactions"], proof.tree_size,
        "{view}"
    );

    // Tampered saved answers are refused with the item named.
    let forged = work.path().join("forged.proof");
    tamper(&saved, &forged, |answer: &mut GetTransactionResponse| {
        answer.proof.as_mut().unwrap().audit_path[0][0] ^= 1;
    });
    assert_cli_refuses(&cluster, &id, &forged, "audit path");
    tamper(&saved, &forged, |answer: &mut GetTransactionResponse| {
        let certificate = answer.proof.as_mut().unwrap().certificate.as_mut().unwrap();
        certificate.signatures.truncate(2);
    });
    assert_cli_refuses(&cluster, &id, &forged, "not certified");
    tamper(&saved, &forged, |answer: &mut GetTransactionResponse| {
        answer.envelope.as_mut().unwrap().payload = b"another payload".to_vec().into();
    });
    assert_cli_refuses(&cluster, &id, &forged, "envelope's transaction id");
    tamper(&saved, &forged, |answer: &mut GetTransactionResponse| {
        answer.block_height += 1;
    });
    assert_cli_refuses(&cluster, &id, &forged, "block height");
    // A proof for another transaction of the same block does not prove this one.
    let neighbour = ids.iter().find(|other| **other != id).unwrap();
    let (code, _, stderr) = tx_get_verify(
        &cluster,
        neighbour,
        &strings(&["--proof-file", saved.to_str().unwrap()]),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("envelope's transaction id"), "{stderr}");

    // An unknown transaction: the node's NOT_FOUND, an error (exit 2).
    let (code, _, stderr) = tx_get_verify(
        &cluster,
        &Digest::sha256(b"never"),
        &cluster.client_flags(3),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("neither committed nor pending"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anchor_comes_with_the_inclusion_of_its_transaction() {
    let cluster = Cluster::start(4).await;
    let key = SigningKey::from_seed([44; 32]);
    let ids = submit_anchors(&cluster, &key).await;
    let trust = Trust::load(&cluster);
    let record = format!("inclusion-{TRANSACTIONS}");

    let mut client = cluster.client(3).await.unwrap();
    let answer = client
        .get_anchor(GetAnchorRequest {
            dataset: "test/records".into(),
            record_id: record.clone(),
            prove: true,
        })
        .await
        .unwrap()
        .into_inner();
    let anchored = AnchoredRecord::decode(answer.anchored_bytes.as_slice()).unwrap();
    assert_eq!(
        anchored.transaction_id,
        ids.last().unwrap().to_vec(),
        "the last anchor of the batch"
    );
    let proven = verify_anchoring_proof(
        &trust.chain_id,
        &trust.validators,
        &anchored,
        answer.anchoring_proof.as_ref(),
    )
    .unwrap();
    assert_eq!(proven.height, anchored.block_height);
    // Another transaction's proof does not prove this anchor's.
    let neighbour = get_proven(&mut client, &ids[0]).await;
    let err = verify_anchoring_proof(
        &trust.chain_id,
        &trust.validators,
        &anchored,
        neighbour.proof.as_ref(),
    )
    .unwrap_err();
    assert!(
        matches!(err, InclusionProofError::AuditPath { .. }),
        "{err}"
    );
    // An unanchored record has a proof of absence and no inclusion proof.
    let absent = client
        .get_anchor(GetAnchorRequest {
            dataset: "test/records".into(),
            record_id: "never-anchored".into(),
            prove: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(absent.anchored.is_none() && absent.anchoring_proof.is_none());

    // `record verify --verify` checks it too, and refuses a forged path.
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("record.txt");
    std::fs::write(&file, &record).unwrap();
    let saved = work.path().join("anchor.proof");
    let mut args = strings(&[
        "record",
        "verify",
        file.to_str().unwrap(),
        "--dataset",
        "test/records",
        "--record-id",
        &record,
        "--verify",
        "--genesis",
        genesis_path(&cluster).to_str().unwrap(),
    ]);
    let offline = args.clone();
    args.extend(cluster.client_flags(1));
    args.extend(strings(&["--save-proof", saved.to_str().unwrap()]));
    let (code, stdout, stderr) = govchain_status(&args);
    assert_eq!(code, 0, "{stdout} {stderr}");
    assert!(stdout.contains("MATCH"), "{stdout}");
    assert!(
        stdout.contains(&format!("{} at index", ids.last().unwrap().to_hex())),
        "{stdout}"
    );
    assert!(stdout.contains("anchoring transaction block"), "{stdout}");
    let forged = work.path().join("forged.proof");
    tamper(&saved, &forged, |answer: &mut GetAnchorResponse| {
        let proof = answer.anchoring_proof.as_mut().unwrap();
        proof.leaf_index = (proof.leaf_index + 1) % proof.tree_size.max(2);
    });
    let mut check = offline.clone();
    check.extend(strings(&["--proof-file", forged.to_str().unwrap()]));
    let (code, stdout, stderr) = govchain_status(&check);
    assert_eq!(code, 1, "{stdout} {stderr}");
    assert!(
        stderr.contains("PROOF REFUSED: anchoring transaction"),
        "{stderr}"
    );
    tamper(&saved, &forged, |answer: &mut GetAnchorResponse| {
        answer.anchoring_proof = None;
    });
    let mut check = offline;
    check.extend(strings(&["--proof-file", forged.to_str().unwrap()]));
    let (code, _, stderr) = govchain_status(&check);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no inclusion proof"), "{stderr}");
}
