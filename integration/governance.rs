//! Validator governance on real processes (issue "Consortium membership
//! over time", part 2): four validators and an observer commit under load
//! while, by `govchain governance` votes, the observer becomes a fifth
//! validator (it catches up, then its signatures appear in commit
//! certificates), and then one of the first four is removed (its consensus
//! streams are refused from that height on, and it follows the chain as an
//! observer). Every acknowledged transaction commits, and the nodes agree.
//! Then the departments: a signing key replaced, attest permissions
//! changed, and a bureau that genesis does not list registered, each by
//! vote; and a client certificate revoked.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use govchain_proto::consensus::v1::StreamRequest;
use govchain_proto::consensus::v1::consensus_service_client::ConsensusServiceClient;
use govchain_proto::node::v1::{GetBlockRequest, GetValidatorSetRequest, get_block_request};
use support::{Cluster, Load, committed_height, eventually, govchain};
use tonic::Code;

const CHANGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Validators 0..4 (health, tax, police, civil); the observer is node 4.
const OBSERVER: usize = 4;
/// The validator the second proposal removes.
const REMOVED: usize = 3;

/// `govchain governance <args>` through node `via`, writes signed with
/// `signer`'s department key; returns the JSON answer.
fn governance(cluster: &Cluster, via: usize, signer: &str, args: &[&str]) -> serde_json::Value {
    let signing_key = cluster.certs().join(signer).join("signing.key");
    governance_with_key(cluster, via, &signing_key, args)
}

/// `governance`, signed with the key in `signing_key`.
fn governance_with_key(
    cluster: &Cluster,
    via: usize,
    signing_key: &std::path::Path,
    args: &[&str],
) -> serde_json::Value {
    let mut all: Vec<String> = vec!["governance".into()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    if args[0] != "list" {
        all.extend(["--signing-key".into(), signing_key.display().to_string()]);
    }
    all.extend(cluster.client_flags(via));
    all.push("--json".into());
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    serde_json::from_str(&govchain(&refs)).unwrap()
}

/// The validator indexes whose signatures the certificate of block
/// `height` (read from node `via`) holds.
async fn signers(cluster: &Cluster, via: usize, height: u64) -> Vec<u32> {
    let block = cluster
        .client(via)
        .await
        .unwrap()
        .get_block(GetBlockRequest {
            selector: Some(get_block_request::Selector::Height(height)),
        })
        .await
        .unwrap()
        .into_inner()
        .block
        .unwrap();
    block
        .certificate
        .unwrap()
        .signatures
        .iter()
        .map(|s| s.validator_index)
        .collect()
}

/// Node `via`'s answer to `GetValidatorSet`.
async fn validator_set(
    cluster: &Cluster,
    via: usize,
) -> govchain_proto::node::v1::GetValidatorSetResponse {
    cluster
        .client(via)
        .await
        .unwrap()
        .get_validator_set(GetValidatorSetRequest::default())
        .await
        .unwrap()
        .into_inner()
}

async fn validator_indexes(cluster: &Cluster, via: usize) -> Vec<u32> {
    validator_set(cluster, via)
        .await
        .validators
        .unwrap()
        .members
        .iter()
        .map(|m| m.index)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_is_voted_in_and_a_validator_voted_out_while_the_chain_commits() {
    let mut cluster = Cluster::start_full(4, 1_000, 1).await;
    let certs = cluster.certs();
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(cluster.client(i).await.unwrap());
    }
    let load = Load::start(clients, 0x60);
    eventually("the observer to follow", CHANGE_TIMEOUT, || async {
        (cluster.status(OBSERVER).await.height >= 1).then_some(())
    })
    .await;
    assert!(cluster.status(OBSERVER).await.observer);

    // An observer signs no blob receipts: its key is no node key on chain.
    let citizen = govchain_crypto::SigningKey::from_seed([0x5c; 32]);
    let err = upload_for(&cluster, OBSERVER, &citizen).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("node key"), "{}", err.message());

    // health proposes the observer (backup0); tax and police approve: 3 of 4.
    let endpoint = format!("127.0.0.1:{}", cluster.nodes[OBSERVER].port);
    let consensus_key = certs.join("backup0").join("consensus.key");
    let proposed = governance(
        &cluster,
        0,
        "health",
        &[
            "propose",
            "add",
            "--candidate",
            "backup0",
            "--consensus-key",
            consensus_key.to_str().unwrap(),
            "--endpoint",
            &endpoint,
            "--reason",
            "backup0 becomes a validator",
        ],
    );
    let proposal = proposed["proposal_id"].as_str().unwrap().to_owned();
    assert_eq!(validator_indexes(&cluster, 0).await, vec![0, 1, 2, 3]);
    governance(&cluster, 1, "tax", &["sign", &proposal]);
    let approved = governance(&cluster, 2, "police", &["sign", &proposal]);
    let change_height = approved["transaction"]["committed"]["block_height"]
        .as_u64()
        .unwrap();
    for node in [0, 1, 2, 3, OBSERVER] {
        eventually(
            "every node to see five validators",
            CHANGE_TIMEOUT,
            || async {
                (validator_indexes(&cluster, node).await == vec![0, 1, 2, 3, 4]).then_some(())
            },
        )
        .await;
    }
    // The new validator votes. With civil stopped, the four others are
    // exactly a quorum of five, so no block commits without its signature.
    cluster.kill_node(REMOVED);
    let stopped_at = cluster.status(0).await.height;
    cluster
        .wait_agree(&[0, 1, 2, OBSERVER], stopped_at + 3, CHANGE_TIMEOUT)
        .await;
    for height in stopped_at + 2..=stopped_at + 3 {
        let signed = signers(&cluster, 0, height).await;
        assert!(signed.contains(&4), "block {height} signed by {signed:?}");
    }
    assert!(change_height < stopped_at + 2);
    assert!(
        !cluster.status(OBSERVER).await.observer,
        "the new validator votes"
    );
    let checked = cluster.status(0).await.height;
    // As a validator, its node's receipts verify against its consensus key,
    // as a declaration through it needs.
    let stored = upload_for(&cluster, OBSERVER, &citizen).await.unwrap();
    let digest = govchain_exec::identity::blob_receipt_digest(
        support::CHAIN,
        "backup0",
        &stored.cid,
        &citizen.public_key(),
        stored.size_bytes,
    );
    let node_key = load_key(&consensus_key).public_key();
    let receipt = govchain_crypto::Signature::from_slice(&stored.holder_receipt).unwrap();
    node_key.verify(digest.as_bytes(), &receipt).unwrap();

    // Now n = 5 and a quorum is 4: remove civil (index 3), voted by health,
    // tax, police and the new validator.
    let proposed = governance(
        &cluster,
        0,
        "health",
        &[
            "propose",
            "remove",
            "--index",
            "3",
            "--reason",
            "civil decommissions its node",
        ],
    );
    let proposal = proposed["proposal_id"].as_str().unwrap().to_owned();
    governance(&cluster, 1, "tax", &["sign", &proposal]);
    let pending = governance(&cluster, 0, "health", &["list"]);
    assert_eq!(pending["quorum"], 4, "{pending}");
    assert_eq!(
        pending["proposals"][0]["approvals"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    governance(&cluster, 2, "police", &["sign", &proposal]);
    let approved = governance(&cluster, OBSERVER, "backup0", &["approve", &proposal]);
    let removal_height = approved["transaction"]["committed"]["block_height"]
        .as_u64()
        .unwrap();
    for node in [0, 1, 2, OBSERVER] {
        eventually("the others to see the removal", CHANGE_TIMEOUT, || async {
            (validator_indexes(&cluster, node).await == vec![0, 1, 2, 4]).then_some(())
        })
        .await;
    }
    // The removed node's consensus streams are refused with a clear status.
    let status = ConsensusServiceClient::new(cluster.peer_channel_as(0, "civil").await)
        .stream(tokio_stream::iter(Vec::<StreamRequest>::new()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("civil"), "{}", status.message());
    // The chain goes on with the four, and no certificate after the removal
    // holds validator 3's signature.
    let target = removal_height + 3;
    cluster
        .wait_agree(&[0, 1, 2, OBSERVER], target, CHANGE_TIMEOUT)
        .await;
    for height in removal_height + 1..=target {
        let signed = signers(&cluster, 0, height).await;
        assert!(!signed.contains(&3), "block {height} signed by {signed:?}");
        assert!(signed.len() >= 3, "block {height} signed by {signed:?}");
    }
    assert!(checked < removal_height);
    let acknowledged = load.stop().await;
    assert!(!acknowledged.is_empty());
    let mut client = cluster.client(0).await.unwrap();
    let mut last = (0, acknowledged[0]);
    for id in &acknowledged {
        let height = committed_height(&mut client, *id).await;
        last = last.max((height, *id));
    }
    // A transaction committed after both changes proves offline against
    // genesis: the proof carries the two blocks that changed the set.
    assert!(last.0 > removal_height, "{last:?} {removal_height}");
    let genesis = certs.join("genesis.json");
    let mut verify = vec![
        "tx".to_owned(),
        "get".to_owned(),
        last.1.to_hex(),
        "--verify".to_owned(),
        "--genesis".to_owned(),
        genesis.display().to_string(),
        "--json".to_owned(),
    ];
    verify.extend(cluster.client_flags(1));
    let refs: Vec<&str> = verify.iter().map(String::as_str).collect();
    let proven: serde_json::Value = serde_json::from_str(&govchain(&refs)).unwrap();
    assert_eq!(proven["proof"]["block_height"], last.0, "{proven}");
    // The removed node, restarted, follows the chain without voting.
    cluster.start_node(REMOVED);
    let head = cluster.status(0).await.height;
    eventually("the removed node to follow", CHANGE_TIMEOUT, || async {
        let mut client = cluster.client(REMOVED).await.ok()?;
        let status = client
            .get_status(govchain_proto::node::v1::GetStatusRequest {})
            .await
            .ok()?
            .into_inner();
        (status.height >= head && status.observer).then_some(())
    })
    .await;
    cluster.assert_no_fork(&[0, 1, 2, REMOVED, OBSERVER]).await;
    let all = governance(&cluster, 0, "health", &["list", "--all"]);
    let statuses: Vec<&str> = all["proposals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["applied", "applied"], "{all}");
}

/// A client certificate revoked by vote: a call on a channel opened before
/// is refused with UNAUTHENTICATED naming the revocation, and so is a new
/// connection; the department's other certificate (a second application)
/// goes on working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_client_certificate_is_refused_on_its_next_call() {
    let cluster = Cluster::start(4).await;
    let certs = cluster.certs();
    let issue = |out: &str| {
        let out = cluster.dir.path().join(out);
        govchain(&[
            "certs",
            "issue-client",
            "--ca-dir",
            certs.to_str().unwrap(),
            "--department",
            "tax",
            "--out",
            out.to_str().unwrap(),
        ]);
        out
    };
    let (stolen, kept) = (issue("stolen-app"), issue("kept-app"));
    let connect = |dir: &std::path::Path| {
        let dir = dir.to_owned();
        let port = cluster.nodes[0].port;
        let ca = certs.join("ca.crt");
        async move {
            support::connect(port, &ca, &dir.join("client.crt"), &dir.join("client.key"))
                .await
                .unwrap()
        }
    };
    let mut stolen_client = connect(&stolen).await;
    let mut kept_client = connect(&kept).await;
    let status = govchain_proto::node::v1::GetStatusRequest {};
    stolen_client.get_status(status).await.unwrap();

    let certificate = stolen.join("client.crt");
    let proposed = governance(
        &cluster,
        0,
        "health",
        &[
            "propose",
            "revoke",
            "--certificate",
            certificate.to_str().unwrap(),
            "--reason",
            "the laptop was stolen",
        ],
    );
    let proposal = proposed["proposal_id"].as_str().unwrap().to_owned();
    governance(&cluster, 1, "tax", &["sign", &proposal]);
    governance(&cluster, 2, "police", &["sign", &proposal]);
    eventually(
        "every node to know the revocation",
        CHANGE_TIMEOUT,
        || async {
            let mut known = true;
            for node in 0..4 {
                known &= validator_set(&cluster, node).await.revocations.len() == 1;
            }
            known.then_some(())
        },
    )
    .await;
    // The channel opened before the revocation: its next call is refused.
    let err = stolen_client
        .get_status(govchain_proto::node::v1::GetStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("revoked"), "{}", err.message());
    assert!(
        err.message().contains("the laptop was stolen"),
        "{}",
        err.message()
    );
    // So is a new connection, on every node.
    for node in 0..4 {
        let port = cluster.nodes[node].port;
        let mut fresh = support::connect(
            port,
            &certs.join("ca.crt"),
            &stolen.join("client.crt"),
            &stolen.join("client.key"),
        )
        .await
        .unwrap();
        let err = fresh
            .get_status(govchain_proto::node::v1::GetStatusRequest {})
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "node {node}: {err:?}");
    }
    // The department's other application is untouched.
    kept_client
        .get_status(govchain_proto::node::v1::GetStatusRequest {})
        .await
        .unwrap();
    let listed = governance(&cluster, 0, "health", &["list"]);
    assert_eq!(
        listed["revocations"][0]["reason"], "the laptop was stolen",
        "{listed}"
    );
    // Revoking it again is refused before it is ordered.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_govchain"))
        .args(["governance", "propose", "revoke", "--certificate"])
        .arg(&certificate)
        .args(["--reason", "again", "--signing-key"])
        .arg(certs.join("health").join("signing.key"))
        .args(cluster.client_flags(0))
        .output()
        .unwrap();
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("already revoked"), "{stderr}");
}

/// Uploads a few bytes to node `via` for `citizen`, asking for the holder's
/// receipt.
async fn upload_for(
    cluster: &Cluster,
    via: usize,
    citizen: &govchain_crypto::SigningKey,
) -> Result<govchain_proto::blob::v1::UploadResponse, tonic::Status> {
    use govchain_proto::blob::v1::{UploadHeader, UploadRequest};
    let mut blobs = govchain_proto::blob::v1::blob_service_client::BlobServiceClient::new(
        cluster.channel(via).await,
    );
    let messages = vec![UploadRequest {
        header: Some(UploadHeader {
            receipt_for_citizen: citizen.public_key().as_bytes().to_vec(),
            ..UploadHeader::default()
        }),
        data: bytes::Bytes::from_static(b"sealed attribute value"),
        finish: true,
    }];
    blobs
        .upload(tokio_stream::iter(messages))
        .await
        .map(tonic::Response::into_inner)
}

/// A department's record in node `via`'s `GetValidatorSet`.
async fn department(
    cluster: &Cluster,
    via: usize,
    name: &str,
) -> Option<govchain_proto::types::v1::DepartmentRecord> {
    validator_set(cluster, via)
        .await
        .departments
        .into_iter()
        .find(|d| d.name == name)
}

fn load_key(path: &std::path::Path) -> govchain_crypto::SigningKey {
    govchain_crypto::SigningKey::from_pkcs8_pem(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn anchor(
    dataset: &str,
    record_id: &str,
    version: &str,
) -> govchain_proto::types::v1::transaction::Body {
    govchain_proto::types::v1::transaction::Body::AnchorRecord(
        govchain_proto::types::v1::AnchorRecord {
            dataset: dataset.into(),
            record_id: record_id.into(),
            record_hash: govchain_crypto::Digest::sha256(version.as_bytes()).to_vec(),
            schema: "permit".into(),
            record_time_ms: 1,
        },
    )
}

/// The departments a signer's transactions are listed under.
async fn listed_departments(
    client: &mut govchain_proto::node::v1::node_service_client::NodeServiceClient<
        tonic::transport::Channel,
    >,
    signer: &govchain_crypto::PublicKey,
) -> Vec<String> {
    client
        .list_transactions(govchain_proto::node::v1::ListTransactionsRequest {
            signer: signer.as_bytes().to_vec(),
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .transactions
        .into_iter()
        .map(|t| t.department)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn departments_change_keys_and_rights_and_a_bureau_joins_by_vote() {
    let mut cluster = Cluster::start(4).await;
    let certs = cluster.certs();
    let dir = cluster.dir.path().to_owned();
    let old_key = load_key(&certs.join("tax").join("signing.key"));
    let mut tax = cluster.client(1).await.unwrap();
    let first = support::submit(
        &mut tax,
        support::sign(&old_key, 1, anchor("tax/permits", "p-1", "v1")),
    )
    .await
    .unwrap();
    committed_height(&mut tax, first).await;

    // 1. Tax replaces its signing key: it proposes with the old one.
    let new_key_file = dir.join("tax-2027.key");
    govchain(&["keys", "new", "--out", new_key_file.to_str().unwrap()]);
    let new_key = load_key(&new_key_file);
    let proposed = governance(
        &cluster,
        1,
        "tax",
        &[
            "propose",
            "department",
            "--name",
            "tax",
            "--new-signing-key",
            new_key_file.to_str().unwrap(),
            "--reason",
            "yearly key rotation",
        ],
    );
    let proposal = proposed["proposal_id"].as_str().unwrap().to_owned();
    governance(&cluster, 0, "health", &["sign", &proposal]);
    governance(&cluster, 2, "police", &["sign", &proposal]);
    let expected = new_key.public_key().as_bytes().to_vec();
    eventually(
        "every node to know tax's new key",
        CHANGE_TIMEOUT,
        || async {
            let mut known = true;
            for node in 0..4 {
                known &= department(&cluster, node, "tax")
                    .await
                    .is_some_and(|d| d.signing_key == expected && d.former_keys.len() == 1);
            }
            known.then_some(())
        },
    )
    .await;
    // The old key (its nonce 2 signed the proposal) is refused before it
    // is ordered; the new one signs for tax from nonce 1, new versions of
    // tax's records included.
    let err = support::submit(
        &mut tax,
        support::sign(&old_key, 3, anchor("tax/permits", "p-1", "v2")),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("namespace"), "{}", err.message());
    let second = support::submit(
        &mut tax,
        support::sign(&new_key, 1, anchor("tax/permits", "p-1", "v2")),
    )
    .await
    .unwrap();
    committed_height(&mut tax, second).await;
    // Both keys' transactions (the old one's anchor and proposal) are
    // listed as tax's.
    assert_eq!(
        listed_departments(&mut tax, &old_key.public_key()).await,
        vec!["tax", "tax"]
    );
    assert_eq!(
        listed_departments(&mut tax, &new_key.public_key()).await,
        vec!["tax"]
    );

    // 2. Police may attest vehicles too; tax approves with its new key.
    let proposed = governance(
        &cluster,
        0,
        "health",
        &[
            "propose",
            "department",
            "--name",
            "police",
            "--attests",
            "residence,vehicle",
            "--reason",
            "police registers vehicles",
        ],
    );
    let police_proposal = proposed["proposal_id"].as_str().unwrap().to_owned();
    // Tax's old key may no longer vote.
    let stale = std::process::Command::new(env!("CARGO_BIN_EXE_govchain"))
        .args(["governance", "sign", &police_proposal, "--signing-key"])
        .arg(certs.join("tax").join("signing.key"))
        .args(cluster.client_flags(1))
        .output()
        .unwrap();
    assert!(!stale.status.success());
    let stderr = String::from_utf8_lossy(&stale.stderr);
    assert!(
        stderr.contains("not a department's signing key"),
        "{stderr}"
    );
    governance_with_key(&cluster, 1, &new_key_file, &["sign", &police_proposal]);
    governance(&cluster, 2, "police", &["sign", &police_proposal]);
    eventually(
        "police's new attest permissions",
        CHANGE_TIMEOUT,
        || async {
            department(&cluster, 3, "police")
                .await
                .filter(|d| d.attests == ["residence", "vehicle"])
        },
    )
    .await;

    // 3. The port authority, which genesis does not list, gets its keys
    // and certificates through the ceremony and is registered by vote.
    let keys = dir.join("ports-keys");
    let issued = dir.join("ports-issued");
    govchain(&[
        "certs",
        "csr",
        "--department",
        "ports",
        "--out",
        keys.to_str().unwrap(),
    ]);
    govchain(&[
        "certs",
        "sign",
        "--ca-dir",
        certs.to_str().unwrap(),
        keys.join("request.json").to_str().unwrap(),
        "--out",
        issued.to_str().unwrap(),
    ]);
    let ports_client = |node: usize| {
        let port = cluster.nodes[node].port;
        let (ca, crt, key) = (
            certs.join("ca.crt"),
            issued.join("client.crt"),
            keys.join("client.key"),
        );
        async move { support::connect(port, &ca, &crt, &key).await.unwrap() }
    };
    let err = ports_client(0)
        .await
        .get_status(govchain_proto::node::v1::GetStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("not a member"), "{}", err.message());
    let public = issued.join("public.json");
    let proposed = governance(
        &cluster,
        2,
        "police",
        &[
            "propose",
            "department",
            "--public",
            public.to_str().unwrap(),
            "--attests",
            "vessel",
            "--reason",
            "the port authority joins",
        ],
    );
    let proposal = proposed["proposal_id"].as_str().unwrap().to_owned();
    governance(&cluster, 0, "health", &["sign", &proposal]);
    governance(&cluster, 3, "civil", &["sign", &proposal]);
    for node in 0..4 {
        eventually(
            &format!("node {node} to admit the port authority"),
            CHANGE_TIMEOUT,
            || async {
                ports_client(node)
                    .await
                    .get_status(govchain_proto::node::v1::GetStatusRequest {})
                    .await
                    .ok()
            },
        )
        .await;
    }
    let ports_key = load_key(&keys.join("signing.key"));
    let mut ports = ports_client(0).await;
    let vessel = support::submit(
        &mut ports,
        support::sign(&ports_key, 1, anchor("ports/vessels", "imo-9321483", "v1")),
    )
    .await
    .unwrap();
    committed_height(&mut ports, vessel).await;
    assert_eq!(
        listed_departments(&mut ports, &ports_key.public_key()).await,
        vec!["ports"]
    );
    let listed = governance(&cluster, 0, "health", &["list"]);
    let registered = listed["departments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "ports")
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(registered["attests"][0], "vessel", "{listed}");

    // The ledger of a stopped node passes a full check: its query index
    // names each signer by the key it had at its block.
    let height = cluster.status(3).await.height;
    cluster.kill_node(3);
    let report = govchain(&[
        "ledger",
        "verify",
        "--data-dir",
        cluster.nodes[3].data_dir.to_str().unwrap(),
        "--genesis",
        certs.join("genesis.json").to_str().unwrap(),
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["blocks"].as_u64().unwrap() >= height, "{report}");
}
