//! The data resource directory against a real four-node consortium on
//! loopback (health, tax, police, civil), through the `govchain` binary:
//! health publishes a by-request and an open dataset, tax finds them by
//! keyword, health ingests a de-identified batch as a version of the
//! by-request one, tax is refused its blob (PERMISSION_DENIED,
//! DATASET_GRANT_REQUIRED), requests access, health's data steward approves
//! the case, the grant appears and the blob is served; police, without a
//! grant, is still refused; and an anchor in a dataset another department
//! owns in the directory is refused.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use govchain_proto::blob::v1::DownloadRequest;
use govchain_proto::blob::v1::blob_service_client::BlobServiceClient;
use support::*;
use tonic_types::StatusExt as _;

const OWNER: usize = 0; // health
const REQUESTER: usize = 1; // tax
const OTHER: usize = 2; // police
const DATASET: &str = "health/vaccinations";

const RULES: &str = r#"
[fields.name]
action = "drop"
[fields.date_of_birth]
action = "generalise"
to = "year"
quasi_identifier = true
[fields.district]
action = "keep"
quasi_identifier = true
[fields.vaccine]
action = "keep"
"#;

const SHARING: &str = r#"
id = "data-sharing"
title = "Share a dataset"

[[step]]
id = "steward-review"
department = "health"
role = "data-steward"
"#;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {}\n{}", self.stdout, self.stderr))
    }
}

/// `govchain --json <args>` against node `i` as its department.
fn run_at(cluster: &Cluster, i: usize, args: &[&str]) -> Run {
    let output = Command::new(BIN)
        .arg("--json")
        .args(args)
        .args(cluster.client_flags(i))
        .output()
        .unwrap();
    Run {
        code: output.status.code().unwrap(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

fn ok_at(cluster: &Cluster, i: usize, args: &[&str]) -> serde_json::Value {
    let run = run_at(cluster, i, args);
    assert_eq!(
        run.code, 0,
        "govchain {args:?} failed:\n{}\n{}",
        run.stdout, run.stderr
    );
    run.json()
}

fn signing_key(cluster: &Cluster, i: usize) -> String {
    cluster
        .certs()
        .join(&cluster.nodes[i].name)
        .join("signing.key")
        .display()
        .to_string()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Downloads `cid` from node `at` with `department`'s client certificate.
async fn download(
    cluster: &Cluster,
    at: usize,
    department: &str,
    cid: &str,
) -> Result<Vec<u8>, tonic::Status> {
    let mut client = BlobServiceClient::new(cluster.channel_as(at, department).await);
    let mut stream = client
        .download(DownloadRequest {
            cid: cid.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(message) = stream.message().await? {
        bytes.extend_from_slice(&message.data);
    }
    Ok(bytes)
}

/// Health's sharing workflow and its data steward; returns the steward's
/// key file.
fn sharing_workflow(cluster: &Cluster, work: &Path) -> String {
    let file = work.join("sharing.toml");
    std::fs::write(&file, SHARING).unwrap();
    let health_key = signing_key(cluster, OWNER);
    ok_at(
        cluster,
        OWNER,
        &[
            "workflow",
            "define",
            path(&file),
            "--signing-key",
            &health_key,
        ],
    );
    let steward = work.join("steward.key");
    let made = govchain(&["--json", "keys", "new", "--out", path(&steward)]);
    let made: serde_json::Value = serde_json::from_str(&made).unwrap();
    let officer = made["public_key"].as_str().unwrap();
    ok_at(
        cluster,
        OWNER,
        &[
            "officer",
            "register",
            "--officer",
            officer,
            "--role",
            "data-steward",
            "--signing-key",
            &health_key,
        ],
    );
    path(&steward).to_owned()
}

fn publish(cluster: &Cluster, i: usize, dataset: &str, policy: &str, extra: &[&str]) -> Run {
    let key = signing_key(cluster, i);
    let mut args = vec![
        "directory",
        "publish",
        dataset,
        "--sensitivity",
        "restricted",
        "--policy",
        policy,
        "--frequency",
        "weekly",
        "--signing-key",
        &key,
    ];
    args.extend_from_slice(extra);
    run_at(cluster, i, &args)
}

/// Ingests a small export into `health/vaccinations` with a report.
fn ingest(cluster: &Cluster, work: &Path) -> serde_json::Value {
    std::fs::write(work.join("rules.toml"), RULES).unwrap();
    let secret = work.join("health.secret");
    govchain(&["ingest", "--new-secret", path(&secret)]);
    let mut lines = vec!["name,date_of_birth,district,vaccine".to_owned()];
    for i in 0..30 {
        lines.push(format!(
            "Person {i},19{}-0{}-1{},district-{},{}",
            60 + i % 3,
            1 + i % 9,
            i % 10,
            i % 2,
            ["mmr", "hpv"][i % 2]
        ));
    }
    let export = work.join("vaccinations.csv");
    std::fs::write(&export, lines.join("\n") + "\n").unwrap();
    let key = signing_key(cluster, OWNER);
    ok_at(
        cluster,
        OWNER,
        &[
            "ingest",
            path(&export),
            "--rules",
            path(&work.join("rules.toml")),
            "--secret-file",
            path(&secret),
            "--dataset",
            "vaccinations",
            "--signing-key",
            &key,
            "--report",
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_by_request_dataset_is_served_only_after_its_request_is_approved() {
    let cluster = Cluster::start(4).await;
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let steward = sharing_workflow(&cluster, work);

    // Publish: a by-request entry needs its owner's workflow.
    let published = publish(
        &cluster,
        OWNER,
        DATASET,
        "by-request",
        &[
            "--workflow",
            "data-sharing",
            "--description",
            "Vaccinations by district and vaccine",
        ],
    );
    assert_eq!(published.code, 0, "{}", published.stderr);
    let run = publish(
        &cluster,
        OWNER,
        "health/clinic-visits",
        "open",
        &["--description", "Clinic visits per month"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    // Only health publishes in its namespace.
    let run = publish(&cluster, REQUESTER, "health/tax-view", "open", &[]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stderr.contains("department \"health\"'s"),
        "{}",
        run.stderr
    );

    // Search, from another department and node.
    let found = ok_at(&cluster, REQUESTER, &["directory", "search", "vaccine"]);
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["dataset"], DATASET);
    assert_eq!(found[0]["access_policy"], "by-request");
    assert_eq!(found[0]["owner"], "health");
    let by_owner = ok_at(
        &cluster,
        REQUESTER,
        &["directory", "search", "--owner", "health"],
    );
    assert_eq!(by_owner.as_array().unwrap().len(), 2, "{by_owner}");
    let none = ok_at(
        &cluster,
        REQUESTER,
        &["directory", "search", "--owner", "police"],
    );
    assert_eq!(none.as_array().unwrap().len(), 0, "{none}");

    // Ingest: a version in the directory, with its k-anonymity report.
    let ingested = ingest(&cluster, work);
    let version = &ingested["published"];
    assert_eq!(version["directory"], true, "{ingested}");
    assert_eq!(version["version"], 1, "{ingested}");
    let cid = version["cid"].as_str().unwrap().to_owned();
    let k = ingested["k"].as_u64().expect("--report computes k");
    let shown = eventually(
        "the version on the tax node",
        Duration::from_secs(30),
        || {
            let shown = ok_at(&cluster, REQUESTER, &["directory", "show", DATASET]);
            async move { (shown["version_count"] == 1).then_some(shown) }
        },
    )
    .await;
    let listed = &shown["versions"][0];
    assert_eq!(listed["batch_cid"], cid.as_str());
    assert_eq!(listed["row_count"], 30);
    assert_eq!(listed["k"], k);
    assert_eq!(
        listed["quasi_identifiers"],
        serde_json::json!(["date_of_birth", "district"])
    );

    // Tax has no grant: refused by the owner's node, with the reason.
    let status = download(&cluster, OWNER, "tax", &cid)
        .await
        .expect_err("no grant yet");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    let info = status.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.reason, "DATASET_GRANT_REQUIRED");
    assert_eq!(info.metadata["dataset"], DATASET);
    assert_eq!(info.metadata["workflow_id"], "data-sharing");
    assert!(
        status.message().contains("govchain directory request"),
        "{status:?}"
    );

    // Tax requests access; health's steward approves; the grant appears.
    let tax_key = signing_key(&cluster, REQUESTER);
    let requested = ok_at(
        &cluster,
        REQUESTER,
        &[
            "directory",
            "request",
            DATASET,
            "--purpose",
            "benefit planning",
            "--document",
            &format!("sample={cid}"),
            "--signing-key",
            &tax_key,
        ],
    );
    let case = requested["case_id"].as_str().unwrap().to_owned();
    let grants = ok_at(&cluster, REQUESTER, &["directory", "grants", DATASET]);
    assert_eq!(grants.as_array().unwrap().len(), 0, "{grants}");
    assert!(download(&cluster, OWNER, "tax", &cid).await.is_err());
    // Naming the batch as a document of its own request case (tax is the
    // applicant's department) does not get around the grant: a dataset's
    // blob goes by the directory's rule only.
    let mut client = BlobServiceClient::new(cluster.channel_as(OWNER, "tax").await);
    let status = client
        .download(DownloadRequest {
            cid: cid.clone(),
            case_id: hex::decode(&case).unwrap(),
            ..Default::default()
        })
        .await
        .expect_err("a case does not release a dataset's blob");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    let info = status.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.reason, "DATASET_GRANT_REQUIRED", "{status:?}");
    ok_at(
        &cluster,
        OWNER,
        &[
            "case",
            "approve",
            &case,
            "--step",
            "steward-review",
            "--signing-key",
            &steward,
        ],
    );
    let grants = eventually("the grant on the tax node", Duration::from_secs(30), || {
        let grants = ok_at(&cluster, REQUESTER, &["directory", "grants", DATASET]);
        async move { (grants.as_array().unwrap().len() == 1).then_some(grants) }
    })
    .await;
    assert_eq!(grants[0]["grantee"], "tax");
    assert_eq!(grants[0]["case_id"], case.as_str());
    assert_eq!(grants[0]["purpose"], "benefit planning");

    // Now served to tax, and the bytes are the batch's.
    let bytes = download(&cluster, OWNER, "tax", &cid).await.unwrap();
    assert_eq!(
        bytes.len() as u64,
        ingested["output_bytes"].as_u64().unwrap()
    );
    assert!(String::from_utf8_lossy(&bytes).contains("district-1"));
    // Police has no grant.
    let status = download(&cluster, OWNER, "police", &cid)
        .await
        .expect_err("police has no grant");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    // A second request by tax is refused: it has access.
    let run = run_at(
        &cluster,
        REQUESTER,
        &[
            "directory",
            "request",
            DATASET,
            "--purpose",
            "again",
            "--signing-key",
            &tax_key,
        ],
    );
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(run.stderr.contains("already has access"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_dataset_is_served_to_members_and_its_owner_alone_anchors_in_it() {
    let cluster = Cluster::start(4).await;
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    // The schema, in police's blob store.
    let schema = work.join("schema.json");
    std::fs::write(&schema, br#"{"columns": ["district"]}"#).unwrap();
    let uploaded = ok_at(&cluster, OTHER, &["blob", "put", path(&schema)]);
    let schema_cid = uploaded["cid"].as_str().unwrap().to_owned();
    // Outside every department's namespace, the first publisher owns it.
    let run = publish(
        &cluster,
        OTHER,
        "census/districts",
        "open",
        &[
            "--description",
            "District boundaries",
            "--schema",
            &schema_cid,
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    // Any member reads the schema from the owner's node.
    let bytes = download(&cluster, OTHER, "civil", &schema_cid)
        .await
        .unwrap();
    assert_eq!(bytes, br#"{"columns": ["district"]}"#);
    // A personal dataset may not be open (refused before signing).
    let run = run_at(
        &cluster,
        OTHER,
        &[
            "directory",
            "publish",
            "police/suspects",
            "--sensitivity",
            "personal",
            "--policy",
            "open",
            "--signing-key",
            &signing_key(&cluster, OTHER),
        ],
    );
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stderr.contains("personal dataset may not be open"),
        "{}",
        run.stderr
    );
    let record = work.join("districts.txt");
    std::fs::write(&record, b"district-1, district-2").unwrap();
    let anchor = |i: usize| {
        let key = signing_key(&cluster, i);
        run_at(
            &cluster,
            i,
            &[
                "record",
                "anchor",
                path(&record),
                "--dataset",
                "census/districts",
                "--record-id",
                "2026",
                "--signing-key",
                &key,
                "--wait",
            ],
        )
    };
    let refused = anchor(REQUESTER);
    assert_eq!(refused.code, 2, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("owned by department \"police\""),
        "{}",
        refused.stderr
    );
    let anchored = anchor(OTHER);
    assert_eq!(anchored.code, 0, "{}", anchored.stderr);

    // An open dataset's version blob goes to any member from the owner's node.
    let uploaded = ok_at(&cluster, OTHER, &["blob", "put", path(&record)]);
    let cid = uploaded["cid"].as_str().unwrap().to_owned();
    // Before it is a version, it is an upload nothing names: not released.
    assert!(download(&cluster, OTHER, "civil", &cid).await.is_err());
    append_version(&cluster, &cid).await;
    let bytes = eventually(
        "the version on police's node",
        Duration::from_secs(30),
        || {
            let cluster = &cluster;
            let cid = cid.clone();
            async move { download(cluster, OTHER, "civil", &cid).await.ok() }
        },
    )
    .await;
    assert_eq!(bytes, b"district-1, district-2");
    // Another node than the owner's does not serve it.
    let status = download(&cluster, REQUESTER, "civil", &cid)
        .await
        .expect_err("not the owner's node");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
}

/// Police appends `cid` as a version of census/districts with a signed
/// transaction.
async fn append_version(cluster: &Cluster, cid: &str) {
    use govchain_proto::types::v1::{DatasetVersion, transaction::Body};
    let pem = std::fs::read_to_string(signing_key(cluster, OTHER)).unwrap();
    let key = govchain_crypto::SigningKey::from_pkcs8_pem(&pem).unwrap();
    let mut client = cluster.client(OTHER).await.unwrap();
    let nonce = client
        .get_account(govchain_proto::node::v1::GetAccountRequest {
            public_key: key.public_key().as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .next_nonce;
    let body = Body::DatasetVersion(DatasetVersion {
        dataset: "census/districts".into(),
        batch_cid: cid.into(),
        row_count: 2,
        rules_hash: vec![0; 32],
        k_anonymity: None,
    });
    let id = submit(&mut client, sign(&key, nonce, body)).await.unwrap();
    committed_height(&mut client, id).await;
}
