//! The key ceremony without a key dealer, each party in a folder of its own
//! as on its own machine: the CA holder makes the CA, three departments
//! make their keys and requests, the CA signs the requests, genesis is
//! assembled from the public parts, and the consortium runs. No folder
//! ever holds another party's private key.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use govchain_crypto::SigningKey;
use support::*;

const DEPARTMENTS: [&str; 3] = ["health", "tax", "police"];

/// `govchain ARGS`, which must fail; returns its stderr.
fn govchain_fails(args: &[&str]) -> String {
    let output = Command::new(BIN).args(args).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "govchain {args:?} should fail"
    );
    String::from_utf8(output.stderr).unwrap()
}

/// Every private key file below `dir`, by content.
fn private_keys(dir: &Path) -> BTreeMap<String, PathBuf> {
    let mut keys = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "key") {
                keys.insert(std::fs::read_to_string(&path).unwrap(), path);
            }
        }
    }
    keys
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_departments_and_a_ca_make_a_consortium_without_sharing_a_private_key() {
    let root = tempfile::tempdir().unwrap();
    let machine = |name: &str| root.path().join(name);
    let ca = machine("ca-holder");
    govchain(&[
        "certs",
        "ca",
        "--out",
        path(&ca.join("ca")),
        "--chain-id",
        CHAIN,
    ]);

    // Each department, on its own machine: keys and a request.
    for department in DEPARTMENTS {
        let keys = machine(department).join("keys");
        govchain(&[
            "certs",
            "csr",
            "--department",
            department,
            "--out",
            path(&keys),
        ]);
        for key in ["node", "client", "admin", "consensus", "signing"] {
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(keys.join(format!("{key}.key")))
                    .unwrap()
                    .permissions(),
            ) & 0o777;
            assert_eq!(mode, 0o600, "{department}'s {key}.key");
        }
        // Only the request travels to the CA holder.
        let request = ca.join("requests").join(format!("{department}.json"));
        std::fs::create_dir_all(request.parent().unwrap()).unwrap();
        std::fs::copy(keys.join("request.json"), &request).unwrap();
    }

    // The CA holder signs each request.
    for department in DEPARTMENTS {
        govchain(&[
            "certs",
            "sign",
            "--ca-dir",
            path(&ca.join("ca")),
            path(&ca.join("requests").join(format!("{department}.json"))),
            "--out",
            path(&ca.join("issued").join(department)),
        ]);
    }
    // A name is issued once; a malformed or tampered request is refused.
    let again = govchain_fails(&[
        "certs",
        "sign",
        "--ca-dir",
        path(&ca.join("ca")),
        path(&ca.join("requests/tax.json")),
        "--out",
        path(&ca.join("issued/tax-again")),
    ]);
    assert!(
        again.contains("department \"tax\" already has certificates"),
        "{again}"
    );
    let malformed = ca.join("requests/malformed.json");
    std::fs::write(
        &malformed,
        "{\"format\": \"govchain-certificate-request/v1\"}",
    )
    .unwrap();
    let refused = govchain_fails(&[
        "certs",
        "sign",
        "--ca-dir",
        path(&ca.join("ca")),
        path(&malformed),
        "--out",
        path(&ca.join("issued/malformed")),
    ]);
    assert!(refused.contains("is not a valid request"), "{refused}");
    // Someone puts their own consensus key into a newcomer's request.
    govchain(&[
        "certs",
        "csr",
        "--department",
        "civil",
        "--out",
        path(&machine("civil")),
    ]);
    let mut request: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(machine("civil").join("request.json")).unwrap(),
    )
    .unwrap();
    request["consensus_public_key"] =
        serde_json::json!(SigningKey::from_seed([5; 32]).public_key().to_hex());
    let tampered = ca.join("requests/civil.json");
    std::fs::write(&tampered, request.to_string()).unwrap();
    let refused = govchain_fails(&[
        "certs",
        "sign",
        "--ca-dir",
        path(&ca.join("ca")),
        path(&tampered),
        "--out",
        path(&ca.join("issued/civil")),
    ]);
    assert!(
        refused.contains("the consensus key did not sign this request"),
        "{refused}"
    );

    // Genesis from the public parts alone.
    let genesis = ca.join("genesis.json");
    let mut assemble = vec![
        "--json".to_owned(),
        "genesis".into(),
        "assemble".into(),
        "--chain-id".into(),
        CHAIN.into(),
        "--attests".into(),
        "police=name,photo".into(),
        "--out".into(),
        path(&genesis).into(),
    ];
    for department in DEPARTMENTS {
        assemble.push("--validator".into());
        assemble.push(path(&ca.join("issued").join(department).join("public.json")).into());
    }
    let assemble: Vec<&str> = assemble.iter().map(String::as_str).collect();
    let view: serde_json::Value = serde_json::from_str(&govchain(&assemble)).unwrap();
    assert_eq!(view["validators"], serde_json::json!(DEPARTMENTS));

    // No private key is in two places, and the CA holder has only its own.
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    for party in ["ca-holder", "health", "tax", "police"] {
        for (key, file) in private_keys(&machine(party)) {
            if let Some(other) = owners.insert(key, party.to_owned()) {
                panic!("{} of {party} is also {other}'s", file.display());
            }
            if party == "ca-holder" {
                assert_eq!(
                    file.file_name().unwrap(),
                    "ca.key",
                    "the CA holder holds {}",
                    file.display()
                );
            }
        }
    }

    // Each department puts its certificates beside its keys, and the
    // consortium runs (laid out for the test harness in one folder, as
    // each node would find its own files on its own machine).
    let cluster_dir = tempfile::tempdir().unwrap();
    let certs = cluster_dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&genesis, certs.join("genesis.json")).unwrap();
    std::fs::copy(ca.join("ca/ca.crt"), certs.join("ca.crt")).unwrap();
    for department in DEPARTMENTS {
        let folder = certs.join(department);
        std::fs::create_dir_all(&folder).unwrap();
        for entry in std::fs::read_dir(machine(department).join("keys")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), folder.join(entry.file_name())).unwrap();
        }
        for file in ["node.crt", "client.crt", "admin.crt", "ca.crt"] {
            std::fs::copy(
                ca.join("issued").join(department).join(file),
                folder.join(file),
            )
            .unwrap();
        }
    }
    let cluster = Cluster::start_prepared(cluster_dir, 2_000).await;
    let mut client = cluster.client(1).await.unwrap();
    let tax_key = SigningKey::from_pkcs8_pem(
        &std::fs::read_to_string(machine("tax").join("keys/signing.key")).unwrap(),
    )
    .unwrap();
    let id = submit(
        &mut client,
        sign(&tax_key, 1, anchor_body("made-by-ceremony")),
    )
    .await
    .unwrap();
    let height = committed_height(&mut client, id).await;
    cluster
        .wait_agree(&[0, 1, 2], height, Duration::from_secs(30))
        .await;
    // The department's own signing key is the one genesis lists: its
    // anchor records the department.
    let anchored = client
        .get_anchor(govchain_proto::node::v1::GetAnchorRequest {
            dataset: "test/records".into(),
            record_id: "made-by-ceremony".into(),
            prove: false,
        })
        .await
        .unwrap()
        .into_inner()
        .anchored
        .unwrap();
    assert_eq!(anchored.department, "tax");
}
