//! `govchain ingest` against a real four-node cluster: a synthetic export
//! full of personal values (names, national ids, dates of birth, phone
//! numbers) is de-identified, uploaded and anchored; then every block,
//! every transaction, the shared blob and the nodes' logs are scanned for
//! every raw personal value, and none may be found. Bad rows are reported by line and skipped;
//! `--strict` stops at the first one and anchors nothing.
//!
//! Bounded memory on large files is a property of the design (row by row
//! streaming, `crates/deid/src/stream.rs`), for a benchmark rather than a
//! timed test.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use govchain_crypto::Digest;
use govchain_proto::node::v1::get_block_request::Selector;
use govchain_proto::node::v1::*;
use prost::Message as _;
use support::*;

/// Node 0's department, which ingests.
const DEPARTMENT: &str = "health";
const DATASET: &str = "benefits";
const PEOPLE: usize = 60;

const RULES: &str = r#"
# Benefit claims exported from the legacy claims system.
[fields.name]
action = "drop"
[fields.national_id]
action = "pseudonymise"
[fields.date_of_birth]
action = "generalise"
to = "year"
quasi_identifier = true
[fields.postcode]
action = "prefix"
keep = 3
quasi_identifier = true
[fields.phone]
action = "mask"
keep_last = 2
[fields.age]
action = "band"
width = 10
[fields.benefit]
action = "keep"
"#;

/// One synthetic person: every field but `benefit` is personal.
struct Person {
    name: String,
    national_id: String,
    date_of_birth: String,
    postcode: String,
    phone: String,
    age: u32,
    benefit: &'static str,
}

impl Person {
    /// The raw values that must never leave the department.
    fn personal_values(&self) -> [&str; 4] {
        [
            &self.name,
            &self.national_id,
            &self.date_of_birth,
            &self.phone,
        ]
    }
}

/// Deterministic synthetic people (a fixed linear congruential sequence:
/// the same file on every run).
fn people() -> Vec<Person> {
    const FIRST: [&str; 6] = [
        "Margarethe",
        "Oluwaseun",
        "Bartholomew",
        "Annelise",
        "Thaddeus",
        "Ingeborg",
    ];
    const LAST: [&str; 5] = [
        "Oyelaran",
        "Vasquez-Lindqvist",
        "Fairweather",
        "Kowalczyk",
        "Abernathy",
    ];
    const BENEFITS: [&str; 3] = ["housing-support", "child-allowance", "disability-grant"];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |bound: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % bound
    };
    (0..PEOPLE)
        .map(|i| {
            let year = 1950 + 10 * next(3);
            Person {
                name: format!("{} {}", FIRST[i % FIRST.len()], LAST[i % LAST.len()]),
                national_id: format!("NI-{:09}", 100_000_000 + next(900_000_000)),
                date_of_birth: format!("{year}-{:02}-{:02}", 1 + next(12), 1 + next(28)),
                postcode: format!(
                    "{} {}AB",
                    ["SW1A", "SW1B", "EC2V"][next(3) as usize],
                    next(10)
                ),
                phone: format!("+44 7700 9{:05}", next(100_000)),
                age: (2026 - year) as u32,
                benefit: BENEFITS[i % BENEFITS.len()],
            }
        })
        .collect()
}

const HEADER: &str = "name,national_id,date_of_birth,postcode,phone,age,benefit";

fn row(person: &Person) -> String {
    format!(
        "\"{}\",{},{},{},{},{},{}",
        person.name,
        person.national_id,
        person.date_of_birth,
        person.postcode,
        person.phone,
        person.age,
        person.benefit
    )
}

/// The export, with two bad rows; returns the file and the bad rows' lines.
fn write_export(dir: &Path, people: &[Person]) -> (PathBuf, Vec<u64>) {
    let mut lines = vec![HEADER.to_owned()];
    let mut bad = Vec::new();
    for (i, person) in people.iter().enumerate() {
        lines.push(row(person));
        if i == 10 {
            // A date the generalise rule cannot read, with a name and id
            // that must not be echoed in the error.
            lines.push(format!(
                "\"Wilhelmina Quartermaine\",NI-000000042,17/03/1984,SW1A 1AA,+44 7700 900042,42,{}",
                person.benefit
            ));
            bad.push(lines.len() as u64);
        }
        if i == 20 {
            lines.push("\"Cornelius Truncated\",NI-000000043".to_owned());
            bad.push(lines.len() as u64);
        }
    }
    let path = dir.join("claims.csv");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    (path, bad)
}

/// The values of the bad rows, which must not leave the department either.
const BAD_ROW_VALUES: [&str; 5] = [
    "Wilhelmina Quartermaine",
    "NI-000000042",
    "17/03/1984",
    "Cornelius Truncated",
    "NI-000000043",
];

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn govchain_run(args: &[&str]) -> Run {
    let output = Command::new(BIN).args(args).output().unwrap();
    Run {
        code: output.status.code().unwrap(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// `--node`, `--ca`, `--cert`, `--key` for node 0 as its department.
fn connection(cluster: &Cluster) -> Vec<String> {
    let certs = cluster.certs();
    let department = certs.join(DEPARTMENT);
    vec![
        "--node".into(),
        format!("https://127.0.0.1:{}", cluster.nodes[0].port),
        "--ca".into(),
        certs.join("ca.crt").to_str().unwrap().into(),
        "--cert".into(),
        department.join("client.crt").to_str().unwrap().into(),
        "--key".into(),
        department.join("client.key").to_str().unwrap().into(),
    ]
}

fn ingest(cluster: &Cluster, work: &Path, export: &Path, extra: &[&str]) -> Run {
    let signing_key = cluster.certs().join(DEPARTMENT).join("signing.key");
    let mut args: Vec<String> = [
        "--json",
        "ingest",
        export.to_str().unwrap(),
        "--rules",
        work.join("rules.toml").to_str().unwrap(),
        "--secret-file",
        work.join("health.secret").to_str().unwrap(),
        "--dataset",
        DATASET,
        "--signing-key",
        signing_key.to_str().unwrap(),
        "--report",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(connection(cluster));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    govchain_run(&args)
}

/// Every place in `haystack` where one of `needles` occurs.
fn hits<'a>(haystack: &[u8], needles: &[&'a str]) -> Vec<&'a str> {
    needles
        .iter()
        .filter(|needle| {
            haystack
                .windows(needle.len())
                .any(|window| window == needle.as_bytes())
        })
        .copied()
        .collect()
}

/// Every committed block of node `i` and every transaction in it (as the
/// node answers `GetTransaction`), encoded.
async fn chain_bytes(cluster: &Cluster, i: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut client = cluster.client(i).await.unwrap();
    let height = cluster.status(i).await.height;
    let (mut blocks, mut transactions) = (Vec::new(), Vec::new());
    for h in 1..=height {
        let block = client
            .get_block(GetBlockRequest {
                selector: Some(Selector::Height(h)),
            })
            .await
            .unwrap()
            .into_inner()
            .block
            .unwrap();
        for envelope in &block.block.as_ref().unwrap().transactions {
            let response = client
                .get_transaction(GetTransactionRequest {
                    transaction_id: transaction_id(envelope).to_vec(),
                    prove: false,
                })
                .await
                .unwrap()
                .into_inner();
            transactions.push(response.encode_to_vec());
        }
        blocks.push(block.encode_to_vec());
    }
    (blocks, transactions)
}

async fn anchored(
    cluster: &Cluster,
    record_id: &str,
) -> Option<govchain_proto::types::v1::AnchoredRecord> {
    let mut client = cluster.client(1).await.unwrap();
    match client
        .get_anchor(GetAnchorRequest {
            dataset: format!("{DEPARTMENT}/{DATASET}"),
            record_id: record_id.into(),
            prove: false,
        })
        .await
    {
        Ok(response) => response.into_inner().anchored,
        Err(status) if status.code() == tonic::Code::NotFound => None,
        Err(status) => panic!("GetAnchor: {status}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingested_export_leaves_no_personal_value_on_chain_or_in_the_blob() {
    let cluster = Cluster::start(4).await;
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    std::fs::write(work.join("rules.toml"), RULES).unwrap();
    let secret = work.join("health.secret");
    let made = govchain_run(&["ingest", "--new-secret", secret.to_str().unwrap()]);
    assert_eq!(made.code, 0, "{}", made.stderr);
    let people = people();
    let (export, bad_lines) = write_export(work, &people);
    let personal: Vec<&str> = people
        .iter()
        .flat_map(Person::personal_values)
        .chain(BAD_ROW_VALUES)
        .collect();
    // The scanner finds what is there: every value is in the export.
    let raw = std::fs::read(&export).unwrap();
    assert_eq!(hits(&raw, &personal).len(), personal.len());

    let run = ingest(&cluster, work, &export, &[]);
    assert_eq!(run.code, 0, "{} {}", run.stdout, run.stderr);
    let view: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(view["rows_kept"], PEOPLE as u64);
    assert_eq!(view["rows_skipped"], 2);
    let lines: Vec<u64> = view["bad_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, bad_lines);
    for line in &bad_lines {
        assert!(
            run.stderr.contains(&format!("skipped line {line}:")),
            "{}",
            run.stderr
        );
    }
    // Errors name lines and columns, never values.
    assert_eq!(hits(run.stderr.as_bytes(), &personal), Vec::<&str>::new());
    assert_eq!(hits(run.stdout.as_bytes(), &personal), Vec::<&str>::new());

    let published = &view["published"];
    let cid = published["cid"].as_str().unwrap().to_owned();
    assert_eq!(published["dataset"], format!("{DEPARTMENT}/{DATASET}"));
    assert_eq!(published["record_id"], "v1");

    // The blob as any member of the department downloads it.
    let blob_path = work.join("batch.csv");
    let mut get = vec![
        "blob".to_string(),
        "get".into(),
        cid.clone(),
        "--out".into(),
        blob_path.to_str().unwrap().into(),
    ];
    get.extend(connection(&cluster));
    let get: Vec<&str> = get.iter().map(String::as_str).collect();
    let fetched = govchain_run(&get);
    assert_eq!(fetched.code, 0, "{}", fetched.stderr);
    let blob = std::fs::read(&blob_path).unwrap();

    // The anchor: the batch's hash, its CID, rows, the rules' hash and k.
    // Asked of another node than the one that took the transaction.
    let anchor = eventually("v1 on node 1", std::time::Duration::from_secs(30), || {
        anchored(&cluster, "v1")
    })
    .await;
    let record = anchor.record.unwrap();
    assert_eq!(record.record_hash, Digest::sha256(&blob).to_vec());
    assert_eq!(anchor.department, DEPARTMENT);
    assert_eq!(anchor.version, 1);
    let rules = govchain_deid::Rules::parse(RULES.as_bytes()).unwrap();
    let k = view["k"].as_u64().expect("--report computes k");
    assert!(k >= 1);
    assert_eq!(
        record.schema,
        format!(
            "govchain-ingest/v1 cid={cid} rows={PEOPLE} skipped=2 rules={} k={k}",
            rules.hash_hex()
        )
    );

    // Zero hits in every block, every transaction and the blob.
    let (blocks, transactions) = chain_bytes(&cluster, 1).await;
    assert!(!blocks.is_empty() && !transactions.is_empty());
    for (height, block) in blocks.iter().enumerate() {
        assert_eq!(
            hits(block, &personal),
            Vec::<&str>::new(),
            "block {}",
            height + 1
        );
    }
    for transaction in &transactions {
        assert_eq!(hits(transaction, &personal), Vec::<&str>::new());
    }
    assert_eq!(hits(&blob, &personal), Vec::<&str>::new());
    // Nor in any node's log.
    for node in &cluster.nodes {
        let log = std::fs::read(&node.log).unwrap();
        assert!(!log.is_empty(), "{} logs", node.name);
        assert_eq!(hits(&log, &personal), Vec::<&str>::new(), "{}", node.name);
    }

    // ...while the scans do see what was published: the anchor in a block,
    // and in the blob the kept column, the generalised years and the
    // pseudonyms under the department's secret.
    assert!(
        blocks
            .iter()
            .any(|block| !hits(block, &[cid.as_str()]).is_empty())
    );
    let key = govchain_deid::PseudonymKey::new(&std::fs::read(&secret).unwrap()).unwrap();
    let pseudonym = key.pseudonym(&people[0].national_id);
    let year = &people[0].date_of_birth[..4];
    assert_eq!(
        hits(&blob, &["housing-support", pseudonym.as_str(), year]).len(),
        3,
        "{}",
        String::from_utf8_lossy(&blob)
    );

    // A second batch is the next version.
    let again = ingest(&cluster, work, &export, &[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let view: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(view["published"]["record_id"], "v2");

    // --strict: the first bad row stops the ingest with its line, and
    // nothing is uploaded or anchored.
    let strict = ingest(&cluster, work, &export, &["--strict"]);
    assert_eq!(strict.code, 2, "{}", strict.stdout);
    assert!(
        strict.stderr.contains(&format!("line {}:", bad_lines[0])),
        "{}",
        strict.stderr
    );
    assert!(strict.stderr.contains("--strict"), "{}", strict.stderr);
    assert_eq!(
        hits(strict.stderr.as_bytes(), &personal),
        Vec::<&str>::new()
    );
    assert!(anchored(&cluster, "v3").await.is_none());
}
