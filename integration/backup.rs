//! Online backup and restore with real processes: a 4-validator cluster
//! under load, one node backed up with `govchain admin backup`, stopped,
//! its data directory destroyed, restored with `govchain admin restore`,
//! restarted; it rejoins with the others' head hash and its ledger
//! verifies. Along the way: only the node's own department's admin
//! certificate may back it up, and restore refuses a backup of another
//! chain, a damaged file, a partial backup and a non-empty data directory.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use govchain_proto::admin::v1::BackupRequest;
use govchain_proto::admin::v1::admin_service_client::AdminServiceClient;
use govchain_proto::node::v1::{GetBlockRequest, get_block_request};
use support::*;

const LONG: Duration = Duration::from_secs(90);
/// The node that is backed up and restored.
const RESTORED: usize = 0;

/// Runs `govchain` with `args` and returns its output, whatever the exit.
fn govchain_output(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `govchain admin backup` of node `i` with `department`'s `role`
/// certificate, off the async threads (it is a real process).
async fn backup_with(
    cluster: &Cluster,
    i: usize,
    department: &str,
    role: &str,
    out: &Path,
) -> Output {
    let certs = cluster.certs();
    let dept = certs.join(department);
    let args: Vec<String> = vec![
        "admin".into(),
        "backup".into(),
        "--node".into(),
        format!("https://127.0.0.1:{}", cluster.nodes[i].port),
        "--ca".into(),
        path(&certs.join("ca.crt")).into(),
        "--cert".into(),
        path(&dept.join(format!("{role}.crt"))).into(),
        "--key".into(),
        path(&dept.join(format!("{role}.key"))).into(),
        "--out".into(),
        path(out).into(),
        "--json".into(),
    ];
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        govchain_output(&args)
    })
    .await
    .unwrap()
}

fn restore(from: &Path, data_dir: &Path, genesis: &Path, force: bool) -> Output {
    let mut args = vec![
        "admin",
        "restore",
        "--from",
        path(from),
        "--data-dir",
        path(data_dir),
        "--genesis",
        path(genesis),
        "--json",
    ];
    if force {
        args.push("--force");
    }
    govchain_output(&args)
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
}

async fn block_hash(cluster: &Cluster, i: usize, height: u64) -> Vec<u8> {
    let mut client = cluster.client(i).await.unwrap();
    let request = GetBlockRequest {
        selector: Some(get_block_request::Selector::Height(height)),
    };
    let block = client.get_block(request).await.unwrap().into_inner();
    block.block.unwrap().block_hash
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Uploads a small blob to node `i` and returns its CID.
fn put_blob(cluster: &Cluster, i: usize) -> String {
    let file = cluster.dir.path().join("scan.txt");
    std::fs::write(&file, b"a scanned certificate, kept by the health node\n").unwrap();
    let certs = cluster.certs();
    let dept = certs.join(&cluster.nodes[i].name);
    let url = format!("https://127.0.0.1:{}", cluster.nodes[i].port);
    let out = govchain(&[
        "blob",
        "put",
        path(&file),
        "--node",
        &url,
        "--ca",
        path(&certs.join("ca.crt")),
        "--cert",
        path(&dept.join("client.crt")),
        "--key",
        path(&dept.join("client.key")),
        "--json",
    ]);
    let view: serde_json::Value = serde_json::from_str(&out).unwrap();
    view["cid"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_backed_up_under_load_is_restored_and_rejoins_with_the_same_head() {
    let mut cluster = Cluster::start(4).await;
    let genesis = cluster.certs().join("genesis.json");
    let cid = put_blob(&cluster, RESTORED);
    let mut clients = Vec::new();
    for i in 0..4 {
        clients.push(cluster.client(i).await.unwrap());
    }
    let load = Load::start(clients, 15);
    eventually("a few blocks under load", LONG, || async {
        (cluster.status(RESTORED).await.height >= 3).then_some(())
    })
    .await;

    refuse_backup_to_other_certificates(&cluster).await;

    // Backed up while the load keeps committing.
    let backups = cluster.dir.path().join("backups");
    let backup = backups.join("health-1");
    let output = backup_with(&cluster, RESTORED, "health", "admin", &backup).await;
    assert!(
        output.status.success(),
        "backup failed: {}",
        stderr(&output)
    );
    let manifest = manifest(&backup);
    let height = manifest["height"].as_u64().unwrap();
    assert!(height >= 3, "{manifest}");
    assert_eq!(manifest["chain_id"], CHAIN);
    assert_eq!(manifest["node"], "health");
    // The snapshot is of one committed block: the others hold the same.
    assert_eq!(
        manifest["head_hash"].as_str().unwrap(),
        hex::encode(block_hash(&cluster, 1, height).await)
    );
    let files: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|file| file["name"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["ledger.dump", "blobs.dump"]);

    refuse_bad_restores(&cluster, &backups, &backup, &genesis);

    let data_dir = cluster.nodes[RESTORED].data_dir.clone();
    assert!(cluster.terminate_node(RESTORED).await.success());
    let refused = restore(&backup, &data_dir, &genesis, false);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("is not empty"),
        "{}",
        stderr(&refused)
    );
    assert!(stderr(&refused).contains("--force"), "{}", stderr(&refused));

    // Destroyed, restored, verified offline, restarted.
    std::fs::remove_dir_all(&data_dir).unwrap();
    let restored = restore(&backup, &data_dir, &genesis, false);
    assert!(
        restored.status.success(),
        "restore failed: {}",
        stderr(&restored)
    );
    let report: serde_json::Value = serde_json::from_slice(&restored.stdout).unwrap();
    assert_eq!(report["height"].as_u64(), Some(height), "{report}");
    assert_eq!(report["head_hash"], manifest["head_hash"], "{report}");
    govchain(&[
        "ledger",
        "verify",
        "--data-dir",
        path(&data_dir),
        "--genesis",
        path(&genesis),
    ]);
    cluster.start_node(RESTORED);
    cluster.wait_ready(RESTORED).await;
    let acknowledged = load.stop().await;
    assert!(!acknowledged.is_empty());

    let others_height = cluster.status(1).await.height;
    assert!(
        others_height > height,
        "the chain moved on while the node was down"
    );
    cluster.wait_agree(&[0, 1, 2, 3], others_height, LONG).await;
    assert_eq!(
        block_hash(&cluster, RESTORED, others_height).await,
        block_hash(&cluster, 1, others_height).await
    );
    cluster.assert_no_fork(&[0, 1, 2, 3]).await;
    let mut client = cluster.client(RESTORED).await.unwrap();
    for id in acknowledged.iter().rev().take(5) {
        committed_height(&mut client, *id).await;
    }
    assert_blob_survived(&cluster, &cid);

    assert!(cluster.terminate_node(RESTORED).await.success());
    govchain(&[
        "ledger",
        "verify",
        "--data-dir",
        path(&data_dir),
        "--genesis",
        path(&genesis),
    ]);
    // The restore wrote the blocks into the block log, at this format.
    assert!(data_dir.join("blocks").read_dir().unwrap().next().is_some());
    let migrated = govchain_output(&["ledger", "migrate", "--data-dir", path(&data_dir), "--json"]);
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    let migrated: serde_json::Value = serde_json::from_slice(&migrated.stdout).unwrap();
    assert_eq!(migrated["migrated"], false, "{migrated}");
    assert!(
        migrated["height"].as_u64().unwrap() >= others_height,
        "{migrated}"
    );
}

/// The restored node still holds the blob it held when backed up.
fn assert_blob_survived(cluster: &Cluster, cid: &str) {
    let certs = cluster.certs();
    let dept = certs.join("health");
    let out = govchain(&[
        "blob",
        "stat",
        cid,
        "--node",
        &format!("https://127.0.0.1:{}", cluster.nodes[RESTORED].port),
        "--ca",
        path(&certs.join("ca.crt")),
        "--cert",
        path(&dept.join("client.crt")),
        "--key",
        path(&dept.join("client.key")),
        "--json",
    ]);
    assert!(out.contains(cid), "{out}");
}

/// A client certificate of the node's department and an admin certificate
/// of another department are both refused, each with its reason.
async fn refuse_backup_to_other_certificates(cluster: &Cluster) {
    let as_client = AdminServiceClient::new(cluster.channel_as(RESTORED, "health").await)
        .backup(BackupRequest {})
        .await
        .expect_err("a client certificate is refused");
    assert_eq!(as_client.code(), tonic::Code::PermissionDenied);
    assert!(
        as_client.message().contains("is a client certificate"),
        "{}",
        as_client.message()
    );
    let foreign_admin = AdminServiceClient::new(cluster.admin_channel_as(RESTORED, "tax").await)
        .backup(BackupRequest {})
        .await
        .expect_err("another department's admin is refused");
    assert_eq!(foreign_admin.code(), tonic::Code::PermissionDenied);
    assert!(
        foreign_admin
            .message()
            .contains("admin certificate of department \"tax\""),
        "{}",
        foreign_admin.message()
    );
    assert!(
        foreign_admin.message().contains("\"health\""),
        "{}",
        foreign_admin.message()
    );

    // An admin certificate does not act for its department: it can read
    // the chain's status, but not submit as the department.
    let admin = cluster.admin_channel_as(RESTORED, "health").await;
    let mut node = govchain_proto::node::v1::node_service_client::NodeServiceClient::new(admin);
    node.get_status(govchain_proto::node::v1::GetStatusRequest {})
        .await
        .expect("an admin certificate reads the status");
    let key = govchain_crypto::SigningKey::from_seed([61; 32]);
    let refused = submit(
        &mut node,
        sign(&key, 1, anchor_body("by-the-platform-team")),
    )
    .await
    .expect_err("an admin certificate does not submit");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused
            .message()
            .contains("is an admin certificate, for AdminService"),
        "{}",
        refused.message()
    );

    // The command says the same, exits 2 and leaves no manifest.
    let out = cluster.dir.path().join("refused-backup");
    let output = backup_with(cluster, RESTORED, "health", "client", &out).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("PERMISSION_DENIED"),
        "{}",
        stderr(&output)
    );
    assert!(!out.join("manifest.json").exists());
}

/// Another chain's genesis, a damaged or cut file and a missing manifest
/// are refused before anything is written.
fn refuse_bad_restores(cluster: &Cluster, backups: &Path, backup: &Path, genesis: &Path) {
    let scratch = cluster.dir.path().join("scratch-restore");

    let other = cluster.dir.path().join("other-chain");
    govchain(&[
        "certs",
        "init",
        "--out",
        path(&other),
        "--chain-id",
        "other-chain",
        "--departments",
        "a,b,c,d",
    ]);
    let refused = restore(backup, &scratch, &other.join("genesis.json"), false);
    assert_eq!(refused.status.code(), Some(2));
    let message = stderr(&refused);
    assert!(message.contains("\"govchain-test\""), "{message}");
    assert!(message.contains("\"other-chain\""), "{message}");

    let damaged = backups.join("damaged");
    copy_dir(backup, &damaged);
    let dump = damaged.join("ledger.dump");
    let mut bytes = std::fs::read(&dump).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&dump, &bytes).unwrap();
    let refused = restore(&damaged, &scratch, genesis, false);
    assert_eq!(refused.status.code(), Some(2));
    let message = stderr(&refused);
    assert!(message.contains("ledger.dump"), "{message}");
    assert!(message.contains("SHA-256"), "{message}");

    let cut = backups.join("cut");
    copy_dir(backup, &cut);
    let dump = cut.join("blobs.dump");
    let bytes = std::fs::read(&dump).unwrap();
    std::fs::write(&dump, &bytes[..bytes.len() - 1]).unwrap();
    let refused = restore(&cut, &scratch, genesis, false);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("damaged or cut"),
        "{}",
        stderr(&refused)
    );

    let partial = backups.join("partial");
    copy_dir(backup, &partial);
    std::fs::remove_file(partial.join("manifest.json")).unwrap();
    let refused = restore(&partial, &scratch, genesis, false);
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("partial"), "{}", stderr(&refused));

    // Nothing was written by any refusal.
    assert!(!scratch.exists(), "{}", scratch.display());
}
