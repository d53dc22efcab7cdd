//! Cross-department approvals through the `govchain` binary, against a real
//! 4-validator devnet on loopback (departments health, tax, police, civil;
//! the devnet has no fire or commerce department, so police stands in for
//! the fire inspection and tax for licensing): an "open a restaurant"
//! workflow defined from TOML, officers registered per department, a case
//! walked to approved from the CLI, and each refusal the chain makes
//! (wrong department, out of order, double signature, revoked officer,
//! closed case, after a deadline) with its precise status; and an
//! automatic step approved by its CEL rule, and one settled by an
//! officer's override.

#![allow(clippy::unwrap_used)]

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BIN: &str = env!("CARGO_BIN_EXE_govchain");
/// Longest any one command may take (starting the devnet is the slowest).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// The deadline of the short-lived workflow's only step.
const SHORT_DEADLINE_S: u64 = 3;

const RESTAURANT: &str = r#"
id = "open-restaurant"
title = "Open a restaurant"

[[step]]
id = "health-inspection"
department = "health"
role = "inspector"
documents = ["floor-plan"]

[[step]]
id = "fire-inspection"
department = "police"
role = "fire-inspector"
approvals = 2
documents = ["floor-plan", "evacuation-plan"]

[[step]]
id = "license"
department = "tax"
role = "licensing"
depends_on = ["health-inspection", "fire-inspection"]
deadline = "30d"
attributes = ["name"]
"#;

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Output {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {}\n{}", self.stdout, self.stderr))
    }
}

/// Runs the binary, killing it after [`COMMAND_TIMEOUT`].
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            pipe.read_to_string(&mut text).unwrap();
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!(
                "`govchain {}` took over {COMMAND_TIMEOUT:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        code: status.code(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Runs the binary and insists on success.
fn ok(args: &[&str]) -> Output {
    let output = run(args);
    assert!(
        output.code == Some(0),
        "`govchain {}` failed ({:?}):\n{}\n{}",
        args.join(" "),
        output.code,
        output.stdout,
        output.stderr
    );
    output
}

/// Runs the binary and insists that the node refused it (exit code 2)
/// with a message containing every one of `words`.
fn refused(args: &[&str], words: &[&str]) -> String {
    let output = run(args);
    assert_eq!(
        output.code,
        Some(2),
        "`govchain {}` was not refused:\n{}\n{}",
        args.join(" "),
        output.stdout,
        output.stderr
    );
    for word in words {
        assert!(
            output.stderr.contains(word),
            "`govchain {}`: {:?} does not mention {word:?}",
            args.join(" "),
            output.stderr
        );
    }
    output.stderr
}

/// A detached devnet, stopped when dropped (also when a check fails).
struct Devnet {
    dir: PathBuf,
}

impl Devnet {
    fn start(dir: PathBuf) -> Self {
        let devnet = Self { dir };
        let d = devnet.d().to_owned();
        ok(&[
            "devnet",
            "--dir",
            &d,
            "--validators",
            "4",
            "--base-port",
            "0",
            "--detach",
            // The test counts cases: none but its own.
            "--no-demo",
        ]);
        devnet
    }

    fn d(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    fn signing_key(&self, department: &str) -> String {
        path_str(&self.dir.join("certs").join(department).join("signing.key")).to_owned()
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let stopped = run(&["devnet", "stop", "--dir", self.d()]);
        if stopped.code != Some(0) && !std::thread::panicking() {
            panic!("devnet stop failed: {}", stopped.stderr);
        }
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A new officer key file; returns its path and public key (hex).
fn officer_key(dir: &Path, name: &str) -> (String, String) {
    let path = dir.join(format!("{name}.key"));
    let made = ok(&["keys", "new", "--out", path_str(&path), "--json"]).json();
    (
        path_str(&path).to_owned(),
        made["public_key"].as_str().unwrap().to_owned(),
    )
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

struct Officers {
    health: (String, String),
    fire_a: (String, String),
    fire_b: (String, String),
    licensing: (String, String),
}

fn register(devnet: &Devnet, department: &str, officer: &str, role: &str) {
    let d = devnet.d();
    let key = devnet.signing_key(department);
    let out = ok(&[
        "officer",
        "register",
        "--officer",
        officer,
        "--role",
        role,
        "--signing-key",
        &key,
        "--dir",
        d,
        "--department",
        department,
        "--json",
    ])
    .json();
    assert_eq!(out["role"], role, "{out}");
    assert!(
        out["transaction"]["committed"]["block_height"].is_u64(),
        "{out}"
    );
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn case_json(d: &str, department: &str, case: &str) -> serde_json::Value {
    ok(&[
        "case",
        "show",
        case,
        "--dir",
        d,
        "--department",
        department,
        "--json",
    ])
    .json()
}

fn step_state(case: &serde_json::Value, step: &str) -> String {
    case["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step_id"] == step)
        .unwrap()["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_restaurant_is_approved_across_departments_and_every_refusal_is_precise() {
    let tmp = tempfile::tempdir().unwrap();
    let devnet = Devnet::start(tmp.path().join("devnet"));
    let d = devnet.d().to_owned();

    // Tax (standing in for commerce) owns the workflow.
    let file = tmp.path().join("restaurant.toml");
    std::fs::write(&file, RESTAURANT).unwrap();
    let tax_key = devnet.signing_key("tax");
    let defined = ok(&[
        "workflow",
        "define",
        path_str(&file),
        "--signing-key",
        &tax_key,
        "--dir",
        &d,
        "--department",
        "tax",
        "--json",
    ])
    .json();
    assert_eq!(defined["workflow_id"], "open-restaurant");
    let shown = ok(&["workflow", "show", "open-restaurant", "--dir", &d, "--json"]).json();
    assert_eq!(shown["version"], 1);
    assert_eq!(shown["owner"], "tax");
    assert_eq!(shown["steps"][1]["approvals_required"], 2);
    assert_eq!(shown["steps"][2]["deadline_ms"], 30 * 86_400_000u64);
    // Only the owner defines the next version.
    refused(
        &[
            "workflow",
            "define",
            path_str(&file),
            "--signing-key",
            &devnet.signing_key("police"),
            "--dir",
            &d,
            "--department",
            "police",
        ],
        &["PERMISSION_DENIED", "owned by department \"tax\""],
    );

    let officers = Officers {
        health: officer_key(tmp.path(), "health-inspector"),
        fire_a: officer_key(tmp.path(), "fire-a"),
        fire_b: officer_key(tmp.path(), "fire-b"),
        licensing: officer_key(tmp.path(), "licensing"),
    };
    register(&devnet, "health", &officers.health.1, "inspector");
    register(&devnet, "police", &officers.fire_a.1, "fire-inspector");
    register(&devnet, "police", &officers.fire_b.1, "fire-inspector");
    register(&devnet, "tax", &officers.licensing.1, "licensing");
    refused(
        &[
            "officer",
            "register",
            "--officer",
            &officers.health.1,
            "--role",
            "inspector",
            "--signing-key",
            &devnet.signing_key("health"),
            "--dir",
            &d,
            "--department",
            "health",
        ],
        &["ALREADY_EXISTS", "already registered"],
    );

    // A citizen applies.
    let citizen_path = tmp.path().join("citizen.key");
    let citizen = path_str(&citizen_path);
    ok(&["identity", "create", "--key", citizen, "--dir", &d]);
    let plan = format!("floor-plan=bafkrei{}", "a".repeat(52));
    let opened = ok(&[
        "case",
        "open",
        "--workflow",
        "open-restaurant",
        "--document",
        &plan,
        "--signing-key",
        citizen,
        "--dir",
        &d,
        "--json",
    ])
    .json();
    let case = opened["case_id"].as_str().unwrap().to_owned();
    assert_eq!(case.len(), 64, "{opened}");

    let act = |verb: &str, step: &str, officer: &(String, String), department: &str| {
        vec![
            "case".to_owned(),
            verb.to_owned(),
            case.clone(),
            "--step".to_owned(),
            step.to_owned(),
            "--signing-key".to_owned(),
            officer.0.clone(),
            "--dir".to_owned(),
            d.clone(),
            "--department".to_owned(),
            department.to_owned(),
        ]
    };

    // Wrong department: a fire inspector on the health step.
    refused(
        &args(&act(
            "approve",
            "health-inspection",
            &officers.fire_a,
            "police",
        )),
        &[
            "PERMISSION_DENIED",
            "not a registered officer of department \"health\"",
        ],
    );
    // Out of order: the license before the inspections.
    refused(
        &args(&act("approve", "license", &officers.licensing, "tax")),
        &[
            "FAILED_PRECONDITION",
            "not ready",
            "health-inspection",
            "fire-inspection",
        ],
    );
    // In parallel: health and the first fire inspector.
    ok(&args(&act(
        "approve",
        "health-inspection",
        &officers.health,
        "health",
    )));
    ok(&args(&act(
        "approve",
        "fire-inspection",
        &officers.fire_a,
        "police",
    )));
    // The same officer twice does not make two approvals.
    refused(
        &args(&act(
            "approve",
            "fire-inspection",
            &officers.fire_a,
            "police",
        )),
        &[
            "ALREADY_EXISTS",
            "already approved step \"fire-inspection\"",
        ],
    );
    let midway = case_json(&d, "police", &case);
    assert_eq!(step_state(&midway, "health-inspection"), "approved");
    assert_eq!(step_state(&midway, "fire-inspection"), "ready");
    assert_eq!(step_state(&midway, "license"), "blocked");

    // Waiting lists: police has the case waiting, tax not yet.
    let waiting = |department: &str| {
        ok(&[
            "case",
            "list",
            "--dir",
            &d,
            "--department",
            department,
            "--waiting",
            department,
            "--json",
        ])
        .json()["cases"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(waiting("police"), 1);
    assert_eq!(waiting("tax"), 0);

    // A revoked officer's signature no longer counts.
    ok(&[
        "officer",
        "revoke",
        "--officer",
        &officers.fire_b.1,
        "--reason",
        "moved to traffic",
        "--signing-key",
        &devnet.signing_key("police"),
        "--dir",
        &d,
        "--department",
        "police",
    ]);
    refused(
        &args(&act(
            "approve",
            "fire-inspection",
            &officers.fire_b,
            "police",
        )),
        &["PERMISSION_DENIED", "was revoked", "moved to traffic"],
    );
    let fire_c = officer_key(tmp.path(), "fire-c");
    register(&devnet, "police", &fire_c.1, "fire-inspector");
    ok(&args(&act("approve", "fire-inspection", &fire_c, "police")));
    assert_eq!(waiting("tax"), 1);
    assert_eq!(waiting("police"), 0);
    ok(&args(&act(
        "approve",
        "license",
        &officers.licensing,
        "tax",
    )));

    let done = case_json(&d, "tax", &case);
    assert_eq!(done["state"], "approved", "{done}");
    assert_eq!(done["steps"][1]["approvals"].as_array().unwrap().len(), 2);
    let events: Vec<&str> = done["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["open", "approve", "approve", "approve", "approve"]);
    // Closed: nothing more happens.
    let mut reject = act("reject", "license", &officers.licensing, "tax");
    reject.extend(["--reason".to_owned(), "second thoughts".to_owned()]);
    refused(
        &args(&reject),
        &["FAILED_PRECONDITION", "is closed (approved)"],
    );

    // The citizen sees the case by a signed request; civil, with no step,
    // does not see it at all.
    let mine = ok(&[
        "case",
        "list",
        "--applicant-key",
        citizen,
        "--dir",
        &d,
        "--department",
        "civil",
        "--json",
    ])
    .json();
    assert_eq!(mine["cases"].as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine["cases"][0]["state"], "approved");
    refused(
        &["case", "show", &case, "--dir", &d, "--department", "civil"],
        &["PERMISSION_DENIED", "no step in case"],
    );
    let as_citizen = ok(&[
        "case",
        "show",
        &case,
        "--applicant-key",
        citizen,
        "--dir",
        &d,
        "--department",
        "civil",
        "--json",
    ])
    .json();
    assert_eq!(as_citizen["case_id"], case.as_str());
    let approved = ok(&[
        "case",
        "list",
        "--dir",
        &d,
        "--department",
        "tax",
        "--workflow",
        "open-restaurant",
        "--state",
        "approved",
        "--json",
    ])
    .json();
    assert_eq!(approved["cases"][0]["case_id"], case.as_str());

    let rejected = returned_then_rejected(&d, citizen, &officers);
    after_the_deadline(&devnet, tmp.path(), citizen, &officers);
    automatic_steps(&devnet, tmp.path(), citizen, &officers);

    // The approved case's evidence, exported from one node, then checked
    // with every node stopped.
    let bundle = tmp.path().join("bundle.json");
    let exported = ok(&[
        "case",
        "export",
        &case,
        "--out",
        path_str(&bundle),
        "--dir",
        &d,
        "--department",
        "tax",
        "--json",
    ])
    .json();
    assert_eq!(exported["state"], "approved", "{exported}");
    // Every kind of action: return, amend, approve, reject; exported by
    // the citizen, through civil, which has no step in it.
    let rejected_bundle = tmp.path().join("rejected.json");
    ok(&[
        "case",
        "export",
        &rejected,
        "--out",
        path_str(&rejected_bundle),
        "--applicant-key",
        citizen,
        "--dir",
        &d,
        "--department",
        "civil",
    ]);
    let genesis = devnet.dir.join("certs").join("genesis.json");
    drop(devnet);
    let verified = ok(&[
        "verify",
        path_str(&rejected_bundle),
        "--genesis",
        path_str(&genesis),
        "--json",
    ])
    .json();
    assert_eq!(verified["state"], "rejected", "{verified}");
    assert_eq!(verified["events"], 5, "{verified}");
    // The definition, health's and fire-a's registrations, the identity
    // and open, return, amend, approve, reject.
    assert_eq!(verified["transactions"], 9, "{verified}");
    evidence_bundle_verifies_offline_and_any_tampering_fails(&bundle, &genesis, &officers);
}

/// `govchain verify` on the exported bundle with no node running: it holds
/// (exit 0), and each tampered copy fails (exit 1) naming the item.
fn evidence_bundle_verifies_offline_and_any_tampering_fails(
    bundle: &Path,
    genesis: &Path,
    officers: &Officers,
) {
    let verified = ok(&[
        "verify",
        path_str(bundle),
        "--genesis",
        path_str(genesis),
        "--json",
    ])
    .json();
    assert_eq!(verified["verified"], true, "{verified}");
    assert_eq!(verified["state"], "approved", "{verified}");
    assert_eq!(verified["events"], 5, "{verified}");
    // The definition, the four officers who acted (fire-b was revoked
    // before it could), the citizen's identity and the five case
    // transactions.
    assert_eq!(verified["transactions"], 11, "{verified}");
    let text = ok(&["verify", path_str(bundle)]).stdout;
    assert!(
        text.contains(verified["genesis_hash"].as_str().unwrap())
            && text.contains("compare it with your genesis"),
        "the summary prints the genesis hash to compare: {text}"
    );

    let original: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle).unwrap()).unwrap();
    let officers_section = original["officers"].as_array().unwrap();
    assert_eq!(officers_section.len(), 4, "{original}");
    // Registrations are the acting officers' only: fire-a's is there,
    // fire-b's (revoked before it could act) is not.
    let payloads: Vec<&str> = officers_section
        .iter()
        .map(|t| t["envelope"]["payload"].as_str().unwrap())
        .collect();
    assert!(payloads.iter().any(|p| p.contains(&officers.fire_a.1)));
    assert!(!payloads.iter().any(|p| p.contains(&officers.fire_b.1)));
    // (JSON pointer, what the failure names, why)
    let cases: [(&str, &str, &str); 5] = [
        (
            "/actions/2/proof/certificate/signatures/0/signature",
            "action 3 (approve step fire-inspection by",
            "not certified",
        ),
        (
            "/actions/1/envelope/payload",
            "action 2 (",
            "transaction id",
        ),
        (
            "/actions/4/envelope/signature",
            "action 5 (approve step license by",
            "signature",
        ),
        (
            "/officers/0/proof/header",
            "officer 1 (register officer",
            "",
        ),
        (
            "/definitions/0/block_hash",
            "definition 1 (define workflow open-restaurant)",
            "block hash",
        ),
    ];
    for (at, (pointer, item, why)) in cases.iter().enumerate() {
        let mut lie = original.clone();
        let field = lie.pointer_mut(pointer).unwrap();
        let hex = field.as_str().unwrap().to_owned();
        // One hex digit, in the middle: one byte of the field.
        let middle = hex.len() / 2;
        let digit = &hex[middle..=middle];
        let other = if digit == "0" { "1" } else { "0" };
        *field =
            serde_json::Value::String(format!("{}{other}{}", &hex[..middle], &hex[middle + 1..]));
        let path = bundle.with_file_name(format!("tampered-{at}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&lie).unwrap()).unwrap();
        let refused = run(&["verify", path_str(&path), "--genesis", path_str(genesis)]);
        assert_eq!(
            refused.code,
            Some(1),
            "{pointer} altered: {}\n{}",
            refused.stdout,
            refused.stderr
        );
        assert!(
            refused.stderr.starts_with(&format!("NOT VERIFIED: {item}")),
            "{pointer} altered: {:?} does not name {item:?}",
            refused.stderr
        );
        assert!(
            refused.stderr.contains(why),
            "{pointer}: {}",
            refused.stderr
        );
    }

    // A bundle checked against another genesis proves nothing.
    let other = bundle.with_file_name("other-genesis.json");
    let mut genesis_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(genesis).unwrap()).unwrap();
    genesis_json["chain_id"] = "another-chain".into();
    std::fs::write(&other, genesis_json.to_string()).unwrap();
    let refused = run(&["verify", path_str(bundle), "--genesis", path_str(&other)]);
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("is not the trusted genesis"),
        "{}",
        refused.stderr
    );
}

/// A second case: fire returns it for more information, officers cannot
/// act until the citizen amends it, then health rejects it for good.
/// Returns the rejected case's id.
fn returned_then_rejected(d: &str, citizen: &str, officers: &Officers) -> String {
    let plan = format!("floor-plan=bafkrei{}", "b".repeat(52));
    let case = ok(&[
        "case",
        "open",
        "--workflow",
        "open-restaurant",
        "--document",
        &plan,
        "--signing-key",
        citizen,
        "--dir",
        d,
        "--json",
    ])
    .json()["case_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let officer_args = |verb: &str, step: &str, key: &str, department: &str, reason: &str| {
        let mut args = vec![
            "case".to_owned(),
            verb.to_owned(),
            case.clone(),
            "--step".to_owned(),
            step.to_owned(),
            "--signing-key".to_owned(),
            key.to_owned(),
            "--dir".to_owned(),
            d.to_owned(),
            "--department".to_owned(),
            department.to_owned(),
        ];
        if !reason.is_empty() {
            args.extend(["--reason".to_owned(), reason.to_owned()]);
        }
        args
    };
    let fire_a = officers.fire_a.0.as_str();
    let health = officers.health.0.as_str();
    // A return without a reason is malformed.
    refused(
        &args(&officer_args(
            "return",
            "fire-inspection",
            fire_a,
            "police",
            "",
        )),
        &["INVALID_ARGUMENT", "reason is empty"],
    );
    ok(&args(&officer_args(
        "return",
        "fire-inspection",
        fire_a,
        "police",
        "send the evacuation plan",
    )));
    let returned = case_json(d, "police", &case);
    assert_eq!(returned["state"], "returned");
    assert_eq!(returned["reason"], "send the evacuation plan");
    refused(
        &args(&officer_args(
            "approve",
            "health-inspection",
            health,
            "health",
            "",
        )),
        &[
            "FAILED_PRECONDITION",
            "returned to the applicant",
            "evacuation plan",
        ],
    );
    let evacuation = format!("evacuation-plan=bafkrei{}", "c".repeat(52));
    ok(&[
        "case",
        "amend",
        &case,
        "--document",
        &evacuation,
        "--signing-key",
        citizen,
        "--dir",
        d,
    ]);
    let amended = case_json(d, "police", &case);
    assert_eq!(amended["state"], "open");
    assert_eq!(
        amended["documents"].as_array().unwrap().len(),
        2,
        "{amended}"
    );
    ok(&args(&officer_args(
        "approve",
        "fire-inspection",
        fire_a,
        "police",
        "",
    )));
    ok(&args(&officer_args(
        "reject",
        "health-inspection",
        health,
        "health",
        "no hand basin in the kitchen",
    )));
    let rejected = case_json(d, "health", &case);
    assert_eq!(rejected["state"], "rejected");
    assert_eq!(rejected["reason"], "no hand basin in the kitchen");
    refused(
        &args(&officer_args(
            "approve",
            "fire-inspection",
            &officers.fire_b.0,
            "police",
            "",
        )),
        &["is closed (rejected)"],
    );
    let text = ok(&["case", "show", &case, "--dir", d, "--department", "health"]).stdout;
    assert!(
        text.contains("rejected") && text.contains("no hand basin"),
        "{text}"
    );

    // Police sees both restaurant cases, a page at a time.
    let page = |token: &str, all: bool| {
        let mut list = vec![
            "case",
            "list",
            "--dir",
            d,
            "--department",
            "police",
            "--page-size",
            "1",
            "--json",
        ];
        if !token.is_empty() {
            list.extend(["--page-token", token]);
        }
        if all {
            list.push("--all");
        }
        ok(&list).json()
    };
    let first = page("", false);
    assert_eq!(first["cases"].as_array().unwrap().len(), 1, "{first}");
    let token = first["next_page_token"].as_str().unwrap().to_owned();
    assert!(!token.is_empty(), "{first}");
    let second = page(&token, false);
    assert_eq!(second["cases"][0]["case_id"], case.as_str(), "{second}");
    assert_eq!(second["next_page_token"], "", "{second}");
    let all = page("", true);
    assert_eq!(all["cases"].as_array().unwrap().len(), 2, "{all}");
    assert_eq!(all["cases"][0]["state"], "approved");
    assert_eq!(all["cases"][1]["state"], "rejected");
    refused(
        &[
            "case",
            "list",
            "--dir",
            d,
            "--department",
            "police",
            "--page-token",
            "x",
        ],
        &["INVALID_ARGUMENT", "next_page_token"],
    );
    case
}

/// A one-step workflow with a deadline of a few seconds: an approval in
/// time counts; after it, the node refuses.
fn after_the_deadline(devnet: &Devnet, dir: &Path, citizen: &str, officers: &Officers) {
    let d = devnet.d();
    let file = dir.join("quick.toml");
    std::fs::write(
        &file,
        format!(
            "id = \"quick-check\"\n[[step]]\nid = \"check\"\ndepartment = \"health\"\n\
             role = \"inspector\"\ndeadline = \"{SHORT_DEADLINE_S}s\"\n"
        ),
    )
    .unwrap();
    ok(&[
        "workflow",
        "define",
        path_str(&file),
        "--signing-key",
        &devnet.signing_key("health"),
        "--dir",
        d,
        "--department",
        "health",
    ]);
    let open = || {
        ok(&[
            "case",
            "open",
            "--workflow",
            "quick-check",
            "--signing-key",
            citizen,
            "--dir",
            d,
            "--json",
        ])
        .json()["case_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let late = open();
    let shown = case_json(d, "health", &late);
    let deadline_ms = shown["steps"][0]["deadline_ms"].as_u64().unwrap();
    assert!(deadline_ms > 0, "{shown}");
    // Wait for the wall clock (which block times follow) to pass it.
    let waited = Instant::now();
    while now_ms() <= deadline_ms + 500 {
        assert!(waited.elapsed() < Duration::from_secs(SHORT_DEADLINE_S + 30));
        std::thread::sleep(Duration::from_millis(100));
    }
    refused(
        &[
            "case",
            "approve",
            &late,
            "--step",
            "check",
            "--signing-key",
            &officers.health.0,
            "--dir",
            d,
            "--department",
            "health",
        ],
        &["FAILED_PRECONDITION", "passed its deadline"],
    );
    assert_eq!(step_state(&case_json(d, "health", &late), "check"), "ready");
    // A case opened now is still in time.
    let in_time = open();
    ok(&[
        "case",
        "approve",
        &in_time,
        "--step",
        "check",
        "--signing-key",
        &officers.health.0,
        "--dir",
        d,
        "--department",
        "health",
    ]);
    assert_eq!(case_json(d, "health", &in_time)["state"], "approved");
}

/// After a health inspection, civil's automatic eligibility step approves
/// a case whose documents include a menu, by its rule, in the inspection's
/// transaction; a case without one waits until a civil clerk overrides
/// the rule with a reason.
fn automatic_steps(devnet: &Devnet, dir: &Path, citizen: &str, officers: &Officers) {
    let d = devnet.d();
    let file = dir.join("kiosk.toml");
    let kiosk = r#"
id = "kiosk-permit"
[[step]]
id = "inspection"
department = "health"
role = "inspector"
[[step]]
id = "eligibility"
department = "civil"
role = "clerk"
depends_on = ["inspection"]
rule = 'steps["inspection"] == "approved" && "menu" in documents'
"#;
    // A rule reading an unknown variable is refused before signing.
    std::fs::write(&file, kiosk.replace("\"menu\" in documents", "salary > 3")).unwrap();
    let define = |file: &Path| {
        run(&[
            "workflow",
            "define",
            path_str(file),
            "--signing-key",
            &devnet.signing_key("health"),
            "--dir",
            d,
            "--department",
            "health",
        ])
    };
    let bad = define(&file);
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(
        bad.stderr.contains("unknown variable \"salary\""),
        "{}",
        bad.stderr
    );
    std::fs::write(&file, kiosk).unwrap();
    let defined = define(&file);
    assert_eq!(defined.code, Some(0), "{}", defined.stderr);
    let shown = ok(&["workflow", "show", "kiosk-permit", "--dir", d, "--json"]).json();
    assert_eq!(shown["steps"][1]["approvals_required"], 0, "{shown}");
    assert!(
        shown["steps"][1]["rule"].as_str().unwrap().contains("menu"),
        "{shown}"
    );
    let clerk = officer_key(dir, "civil-clerk");
    register(devnet, "civil", &clerk.1, "clerk");

    let open = |documents: &[String]| {
        let mut argv: Vec<String> = ["case", "open", "--workflow", "kiosk-permit"]
            .iter()
            .map(|a| (*a).to_owned())
            .collect();
        for document in documents {
            argv.extend(["--document".to_owned(), document.clone()]);
        }
        argv.extend(
            ["--signing-key", citizen, "--dir", d, "--json"]
                .iter()
                .map(|a| (*a).to_owned()),
        );
        ok(&args(&argv)).json()["case_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let inspect = |case: &str| {
        ok(&[
            "case",
            "approve",
            case,
            "--step",
            "inspection",
            "--signing-key",
            &officers.health.0,
            "--dir",
            d,
            "--department",
            "health",
        ]);
    };
    let automatic = |case: &serde_json::Value| {
        case["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step_id"] == "eligibility")
            .unwrap()
            .clone()
    };
    let kinds = |case: &serde_json::Value| -> Vec<String> {
        case["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    };

    // With a menu, the inspection's approval makes the rule true.
    let with_menu = open(&[format!("menu=bafkrei{}", "m".repeat(52))]);
    let before = case_json(d, "civil", &with_menu);
    assert_eq!(automatic(&before)["state"], "blocked", "{before}");
    inspect(&with_menu);
    let after = case_json(d, "civil", &with_menu);
    assert_eq!(automatic(&after)["state"], "approved", "{after}");
    assert_eq!(automatic(&after)["rule_outcome"], "true", "{after}");
    assert_eq!(after["state"], "approved", "{after}");
    assert_eq!(
        kinds(&after),
        ["open", "approve", "auto-approve"],
        "{after}"
    );

    // Without one, the rule is false and the step waits for an officer.
    let without = open(&[]);
    inspect(&without);
    let waiting = case_json(d, "civil", &without);
    assert_eq!(automatic(&waiting)["state"], "ready", "{waiting}");
    assert_eq!(automatic(&waiting)["rule_outcome"], "false", "{waiting}");
    let text = ok(&[
        "case",
        "show",
        &without,
        "--dir",
        d,
        "--department",
        "civil",
    ])
    .stdout;
    assert!(text.contains("automatic step"), "{text}");
    assert!(text.contains("\"menu\" in documents"), "{text}");
    refused(
        &[
            "case",
            "approve",
            &without,
            "--step",
            "eligibility",
            "--signing-key",
            &clerk.0,
            "--dir",
            d,
            "--department",
            "civil",
        ],
        &["FAILED_PRECONDITION", "is automatic", "override"],
    );
    refused(
        &[
            "case",
            "override",
            &without,
            "--step",
            "eligibility",
            "--approve",
            "--reason",
            "menu seen",
            "--signing-key",
            &officers.health.0,
            "--dir",
            d,
            "--department",
            "health",
        ],
        &[
            "PERMISSION_DENIED",
            "not a registered officer of department \"civil\"",
        ],
    );
    // The applicant may ask for an evaluation; the rule is still false.
    ok(&[
        "case",
        "evaluate",
        &without,
        "--step",
        "eligibility",
        "--signing-key",
        citizen,
        "--dir",
        d,
    ]);
    assert_eq!(
        step_state(&case_json(d, "civil", &without), "eligibility"),
        "ready"
    );
    ok(&[
        "case",
        "override",
        &without,
        "--step",
        "eligibility",
        "--approve",
        "--reason",
        "menu shown at the counter",
        "--signing-key",
        &clerk.0,
        "--dir",
        d,
        "--department",
        "civil",
    ]);
    let settled = case_json(d, "civil", &without);
    assert_eq!(settled["state"], "approved", "{settled}");
    assert_eq!(
        kinds(&settled),
        ["open", "approve", "override-approve"],
        "{settled}"
    );
    let last = settled["events"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["reason"], "menu shown at the counter", "{last}");
    assert_eq!(last["department"], "civil", "{last}");
    refused(
        &[
            "case",
            "override",
            &without,
            "--step",
            "eligibility",
            "--reject",
            "--reason",
            "too late",
            "--signing-key",
            &clerk.0,
            "--dir",
            d,
            "--department",
            "civil",
        ],
        &["FAILED_PRECONDITION", "closed (approved)"],
    );
}
