//! State reads with proofs on a real four-node cluster: a record anchored
//! through one node is fetched with a proof from another, and checked
//! offline against genesis by `govchain record verify --verify`; answers
//! tampered with after they left the node (a lying node) are refused.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Command;

use govchain_crypto::SigningKey;
use govchain_exec::nonce_key;
use govchain_node::{CertifiedHeaderError, StateProofError, validator_set, verify_state_proof};
use govchain_pki::Genesis;
use govchain_proto::node::v1::*;
use govchain_proto::types::v1::AnchoredRecord;
use prost::Message as _;
use support::*;

const DATASET: &str = "test/records";
const RECORD: &str = "proof-r1";

/// Runs `govchain` and returns its exit code, stdout and stderr.
fn govchain_status(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(BIN).args(args).output().unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// `record verify --verify` against node `i`, with extra arguments.
fn verify_args(cluster: &Cluster, i: usize, file: &Path, record: &str) -> Vec<String> {
    let certs = cluster.certs();
    let mut args: Vec<String> = [
        "record",
        "verify",
        file.to_str().unwrap(),
        "--dataset",
        DATASET,
        "--record-id",
        record,
        "--verify",
        "--genesis",
        certs.join("genesis.json").to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(cluster.client_flags(i));
    args
}

fn run(args: &[String]) -> (i32, String, String) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    govchain_status(&args)
}

/// Checks a saved answer offline (no node) and expects a refusal naming
/// `reason`.
fn assert_refused(cluster: &Cluster, file: &Path, saved: &Path, reason: &str) {
    let certs = cluster.certs();
    let (code, stdout, stderr) = govchain_status(&[
        "record",
        "verify",
        file.to_str().unwrap(),
        "--dataset",
        DATASET,
        "--record-id",
        RECORD,
        "--verify",
        "--proof-file",
        saved.to_str().unwrap(),
        "--genesis",
        certs.join("genesis.json").to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "refused with exit 1: {stdout} {stderr}");
    assert!(stderr.contains("PROOF REFUSED"), "{stderr}");
    assert!(stderr.contains(reason), "{reason:?} not in {stderr}");
    assert!(!stdout.contains("MATCH"), "no verdict printed: {stdout}");
}

/// Rewrites a saved answer.
fn tamper(saved: &Path, out: &Path, change: impl FnOnce(&mut GetAnchorResponse)) {
    let mut response = GetAnchorResponse::decode(std::fs::read(saved).unwrap().as_slice()).unwrap();
    change(&mut response);
    std::fs::write(out, response.encode_to_vec()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anchors_and_nonces_verify_offline_and_lies_are_caught() {
    let cluster = Cluster::start(4).await;
    let key = SigningKey::from_seed([42; 32]);
    let mut client = cluster.client(0).await.unwrap();
    let id = submit(&mut client, sign(&key, 1, anchor_body(RECORD)))
        .await
        .unwrap();
    let height = committed_height(&mut client, id).await;
    // The file whose hash `anchor_body` anchored.
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("record.txt");
    std::fs::write(&file, RECORD).unwrap();
    let saved = work.path().join("answer.proof");

    // Fetched from another node than the one it was submitted to, and
    // checked against genesis.
    let mut args = verify_args(&cluster, 2, &file, RECORD);
    args.extend(["--save-proof".into(), saved.to_str().unwrap().into()]);
    let (code, stdout, stderr) = run(&args);
    assert_eq!(code, 0, "{stdout} {stderr}");
    assert!(stdout.contains("MATCH"), "{stdout}");
    assert!(
        stdout.contains("verified offline against genesis"),
        "{stdout}"
    );
    assert!(stdout.contains("commit signatures (quorum 3)"), "{stdout}");
    let answer = GetAnchorResponse::decode(std::fs::read(&saved).unwrap().as_slice()).unwrap();
    let certificate = answer.proof.as_ref().unwrap().certificate.as_ref().unwrap();
    assert!(
        certificate.height >= height,
        "proved at or after the anchor's block"
    );

    // The saved answer checks again with no node at all.
    let certs = cluster.certs();
    let (code, stdout, stderr) = govchain_status(&[
        "--json",
        "record",
        "verify",
        file.to_str().unwrap(),
        "--dataset",
        DATASET,
        "--record-id",
        RECORD,
        "--verify",
        "--proof-file",
        saved.to_str().unwrap(),
        "--genesis",
        certs.join("genesis.json").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout} {stderr}");
    let view: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(view["result"], "match", "{view}");
    assert_eq!(view["proof"]["proves"], "value", "{view}");

    // A lying node: another record's hash in the value.
    let lie = work.path().join("lie.proof");
    tamper(&saved, &lie, |response| {
        let mut record = AnchoredRecord::decode(response.anchored_bytes.as_slice()).unwrap();
        record.record.as_mut().unwrap().record_hash = vec![7; 32];
        response.anchored_bytes = record.encode_to_vec();
        response.anchored = Some(record);
    });
    assert_refused(&cluster, &file, &lie, "value hash");
    // ... a forged sibling hash in the proof ...
    tamper(&saved, &lie, |response| {
        let proof = response.proof.as_mut().unwrap();
        assert!(!proof.siblings.is_empty(), "several keys make a path");
        proof.siblings[0] = vec![9; 32];
    });
    assert_refused(&cluster, &file, &lie, "state root");
    // ... the record hidden (claimed absent) ...
    tamper(&saved, &lie, |response| {
        response.anchored = None;
        response.anchored_bytes.clear();
    });
    assert_refused(&cluster, &file, &lie, "key present");
    // ... a header the validators did not sign ...
    tamper(&saved, &lie, |response| {
        let certificate = response
            .proof
            .as_mut()
            .unwrap()
            .certificate
            .as_mut()
            .unwrap();
        certificate.signatures.truncate(2);
    });
    assert_refused(&cluster, &file, &lie, "not certified");

    // Absence is proven too: NOT ANCHORED (exit 1), with a verified proof.
    let (code, stdout, stderr) = run(&verify_args(&cluster, 1, &file, "never-anchored"));
    assert_eq!(code, 1, "{stdout} {stderr}");
    assert!(stdout.contains("NOT ANCHORED"), "{stdout}");
    assert!(stdout.contains("absence"), "{stdout}");
    assert!(!stderr.contains("PROOF REFUSED"), "{stderr}");

    // GetAccount: the committed nonce with its proof, checked in process
    // with the same function the CLI uses.
    let genesis = Genesis::load(&cluster.certs().join("genesis.json")).unwrap();
    let validators = validator_set(&genesis).unwrap();
    let mut other = cluster.client(3).await.unwrap();
    let account = other
        .get_account(GetAccountRequest {
            public_key: key.public_key().as_bytes().to_vec(),
            prove: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(account.committed_nonce, 1);
    let proof = account.proof.unwrap();
    let nonce_state_key = nonce_key(&key.public_key());
    let proven = verify_state_proof(
        &genesis.chain_id,
        &validators,
        &nonce_state_key,
        Some(&1_u64.to_be_bytes()),
        &proof,
    )
    .unwrap();
    assert!(proven.height >= height);
    // A node claiming another nonce is caught.
    let err = verify_state_proof(
        &genesis.chain_id,
        &validators,
        &nonce_state_key,
        Some(&2_u64.to_be_bytes()),
        &proof,
    )
    .unwrap_err();
    assert!(matches!(err, StateProofError::Proof(_)), "{err}");
    // A proof for another chain's genesis is refused.
    let err = verify_state_proof("another-chain", &validators, &nonce_state_key, None, &proof)
        .unwrap_err();
    assert!(
        matches!(
            err,
            StateProofError::Header(CertifiedHeaderError::ChainId { .. })
        ),
        "{err}"
    );
}
