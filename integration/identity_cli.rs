//! The citizen identity flow through the `govchain` binary, against a real
//! 4-validator devnet on loopback: offline and uploaded CIDs agree, a
//! citizen registers, declares a name and a multi-chunk photo, the civil
//! registry attests (the tax office may not), the citizen consents to the
//! tax office reading the photo, the read is recorded and returns the exact
//! bytes, a revoked consent stops the next read, and a QR login completes
//! once and is refused when replayed.

#![allow(clippy::unwrap_used)]

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_govchain");
/// Longest any one command may take (starting the devnet is the slowest).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Size of the test photo: more than one 1 MiB chunk, so its blob is a tree.
const PHOTO_BYTES: usize = 1024 * 1024 + 512 * 1024 + 7;
const PURPOSE: &str = "benefit-eligibility-check";

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Output {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }

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
        output.ok(),
        "`govchain {}` failed ({:?}):\n{}\n{}",
        args.join(" "),
        output.code,
        output.stdout,
        output.stderr
    );
    output
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
        ]);
        devnet
    }

    fn d(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    fn signing_key(&self, department: &str) -> String {
        self.dir
            .join("certs")
            .join(department)
            .join("signing.key")
            .to_str()
            .unwrap()
            .to_owned()
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let stopped = run(&["devnet", "stop", "--dir", self.d()]);
        if !stopped.ok() && !std::thread::panicking() {
            panic!("devnet stop failed: {}", stopped.stderr);
        }
    }
}

/// Bytes that compress badly, the same on every run.
fn photo_bytes() -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..PHOTO_BYTES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn citizen_flow_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let devnet = Devnet::start(tmp.path().join("devnet"));
    let d = devnet.d().to_owned();
    let photo = tmp.path().join("photo.jpg");
    std::fs::write(&photo, photo_bytes()).unwrap();

    blobs_round_trip(&d, tmp.path(), &photo);

    // A citizen, with a key file made on the spot.
    let key_path = tmp.path().join("citizen.key");
    let key = path_str(&key_path);
    let created = ok(&["identity", "create", "--key", key, "--dir", &d, "--json"]).json();
    let did = created["did"].as_str().unwrap().to_owned();
    assert!(did.starts_with("did:key:z6Mk"), "{created}");
    assert_eq!(created["key_created"], true);
    let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // Attributes: a text value and a file of two chunks.
    let name = ok(&[
        "identity",
        "declare",
        "--key",
        key,
        "--name",
        "name",
        "--value",
        "Alice Example",
        "--dir",
        &d,
        "--json",
    ])
    .json();
    assert_eq!(name["commitment"].as_str().unwrap().len(), 64, "{name}");
    assert!(name["transaction"]["committed"]["block_height"].is_u64());
    let declared = ok(&[
        "identity",
        "declare",
        "--key",
        key,
        "--name",
        "photo",
        "--file",
        path_str(&photo),
        "--dir",
        &d,
        "--json",
    ])
    .json();
    assert_eq!(declared["media_type"], "image/jpeg");
    assert_eq!(declared["value_size_bytes"], PHOTO_BYTES as u64);
    let photo_cid = declared["cid"].as_str().unwrap().to_owned();

    attestations(&devnet, &did);

    // Consent to the tax office for the photo; it reads it, on the record.
    let consent = grant(&d, key, "photo", PURPOSE);
    let tax_key = devnet.signing_key("tax");
    let read = tmp.path().join("read.jpg");
    let accessed = ok(&[
        "identity",
        "access",
        "--signing-key",
        &tax_key,
        "--department",
        "tax",
        "--citizen",
        &did,
        "--name",
        "photo",
        "--consent",
        &consent,
        "--purpose",
        PURPOSE,
        "--out",
        path_str(&read),
        "--dir",
        &d,
        "--json",
    ])
    .json();
    assert_eq!(std::fs::read(&read).unwrap(), photo_bytes(), "exact bytes");
    assert_eq!(accessed["media_type"], "image/jpeg");
    let access_id = accessed["access_transaction_id"]
        .as_str()
        .unwrap()
        .to_owned();
    personal_blob(&d, tmp.path(), &photo_cid, &access_id);

    // The citizen's key signs the request: the whole log.
    let log = ok(&[
        "identity",
        "log",
        "--citizen",
        &did,
        "--key",
        key,
        "--dir",
        &d,
        "--json",
    ])
    .json();
    let entries = log.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{log}");
    assert_eq!(entries[0]["department"], "tax");
    assert_eq!(entries[0]["attribute"], "photo");
    assert_eq!(entries[0]["consent_id"], consent.as_str());
    assert_eq!(entries[0]["purpose"], PURPOSE);
    assert_eq!(entries[0]["transaction_id"], access_id.as_str());
    let text = ok(&[
        "identity",
        "log",
        "--citizen",
        &did,
        "--key",
        key,
        "--dir",
        &d,
    ])
    .stdout;
    assert!(text.contains("tax") && text.contains(PURPOSE), "{text}");
    // As a department: tax sees its own access, police none.
    let as_tax = ok(&[
        "identity",
        "log",
        "--citizen",
        &did,
        "--department",
        "tax",
        "--dir",
        &d,
        "--json",
    ])
    .json();
    assert_eq!(as_tax, log, "tax's only access is the whole log");
    let as_police = ok(&[
        "identity",
        "log",
        "--citizen",
        &did,
        "--department",
        "police",
        "--dir",
        &d,
        "--json",
    ])
    .json();
    assert_eq!(as_police, serde_json::json!([]), "{as_police}");

    let receipt = ok(&[
        "identity",
        "consent",
        "export",
        &consent,
        "--citizen",
        &did,
        "--department",
        "tax",
        "--dir",
        &d,
    ])
    .json();
    assert_eq!(receipt["piiPrincipalId"], did.as_str());
    assert_eq!(receipt["piiControllers"][0]["piiController"], "tax");
    assert_eq!(
        receipt["services"][0]["purposes"][0]["piiCategory"],
        serde_json::json!(["photo"])
    );

    // Revoked: the next read is refused, and nothing is written.
    ok(&[
        "identity", "consent", "revoke", "--key", key, &consent, "--dir", &d,
    ]);
    let again = tmp.path().join("again.jpg");
    let refused = run(&[
        "identity",
        "access",
        "--signing-key",
        &tax_key,
        "--department",
        "tax",
        "--citizen",
        &did,
        "--name",
        "photo",
        "--consent",
        &consent,
        "--purpose",
        PURPOSE,
        "--out",
        path_str(&again),
        "--dir",
        &d,
    ]);
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("PERMISSION_DENIED"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("revoked"), "{}", refused.stderr);
    assert!(!again.exists());
    // No second access: the refused attempt is in the log as a refusal.
    let log = ok(&[
        "identity",
        "log",
        "--citizen",
        &did,
        "--key",
        key,
        "--dir",
        &d,
        "--json",
    ])
    .json();
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0]["refused"], false, "{log:?}");
    assert_eq!(log[1]["refused"], true, "{log:?}");
    assert_eq!(log[1]["cid"], "", "a refusal releases nothing: {log:?}");
    assert!(
        log[1]["refusal"].as_str().unwrap().contains("revoked"),
        "{log:?}"
    );
    let table = ok(&[
        "identity",
        "log",
        "--citizen",
        &did,
        "--key",
        key,
        "--dir",
        &d,
    ])
    .stdout;
    assert!(table.contains("REFUSED: consent"), "{table}");

    login(&d, key, &did);

    let shown = ok(&[
        "identity", "show", &did, "--key", key, "--dir", &d, "--json",
    ])
    .json();
    let attributes = shown["attributes"].as_array().unwrap();
    let photo_state = attributes.iter().find(|a| a["name"] == "photo").unwrap();
    assert_eq!(photo_state["attested"], true, "{shown}");
    assert_eq!(photo_state["attestations"][0]["department"], "civil");
    let states: Vec<&str> = shown["consents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["revoked", "valid"], "{shown}");
    let text = ok(&["identity", "show", &did, "--key", key, "--dir", &d]).stdout;
    assert!(text.contains("civil (valid"), "{text}");
    // Without the key, health (which attests only vaccination_status,
    // not declared, and holds no consent) sees the identity and nothing of
    // it.
    let as_health = ok(&[
        "identity",
        "show",
        &did,
        "--department",
        "health",
        "--dir",
        &d,
        "--json",
    ])
    .json();
    assert_eq!(as_health["did"], did.as_str());
    assert_eq!(
        as_health["attributes"],
        serde_json::json!([]),
        "{as_health}"
    );
    assert_eq!(as_health["consents"], serde_json::json!([]), "{as_health}");
}

/// `blob cid` offline equals `blob put`; a download verifies and resumes.
fn blobs_round_trip(d: &str, tmp: &Path, photo: &Path) {
    let offline = ok(&["blob", "cid", path_str(photo)])
        .stdout
        .trim()
        .to_owned();
    assert!(
        offline.starts_with("bafybei"),
        "a multi-chunk blob is a dag-pb root: {offline}"
    );
    let put = ok(&[
        "blob",
        "put",
        path_str(photo),
        "--expect-cid",
        &offline,
        "--dir",
        d,
        "--json",
    ])
    .json();
    assert_eq!(put["cid"], offline.as_str());
    assert_eq!(put["size_bytes"], PHOTO_BYTES as u64);
    let stat = ok(&["blob", "stat", &offline, "--dir", d, "--json"]).json();
    assert_eq!(stat["personal"], false);

    let copy = tmp.join("copy.bin");
    ok(&[
        "blob",
        "get",
        &offline,
        "--out",
        path_str(&copy),
        "--dir",
        d,
    ]);
    assert_eq!(std::fs::read(&copy).unwrap(), photo_bytes());
    // Cut it off mid-way and resume.
    let file = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
    file.set_len(700_000).unwrap();
    drop(file);
    let exists = run(&[
        "blob",
        "get",
        &offline,
        "--out",
        path_str(&copy),
        "--dir",
        d,
    ]);
    assert_eq!(exists.code, Some(2));
    assert!(exists.stderr.contains("--resume"), "{}", exists.stderr);
    let resumed = ok(&[
        "blob",
        "get",
        &offline,
        "--out",
        path_str(&copy),
        "--resume",
        "--dir",
        d,
        "--json",
    ])
    .json();
    assert_eq!(resumed["resumed_from"], 700_000);
    assert_eq!(std::fs::read(&copy).unwrap(), photo_bytes());

    // Another file under the same CID is refused by the node.
    let other = tmp.join("other.bin");
    std::fs::write(&other, b"not the photo").unwrap();
    let refused = run(&[
        "blob",
        "put",
        path_str(&other),
        "--expect-cid",
        &offline,
        "--dir",
        d,
    ]);
    assert_eq!(refused.code, Some(2));
    assert!(
        refused.stderr.contains("INVALID_ARGUMENT"),
        "{}",
        refused.stderr
    );
}

/// The civil registry attests; the tax office may not.
fn attestations(devnet: &Devnet, did: &str) {
    let d = devnet.d();
    let civil = devnet.signing_key("civil");
    for name in ["name", "photo"] {
        let attested = ok(&[
            "identity",
            "attest",
            "--signing-key",
            &civil,
            "--department",
            "civil",
            "--citizen",
            did,
            "--name",
            name,
            "--expires",
            "365d",
            "--dir",
            d,
            "--json",
        ])
        .json();
        assert_eq!(attested["revoked"], false, "{attested}");
    }
    let tax = devnet.signing_key("tax");
    // Tax's key attesting the name, through `department`'s certificate.
    let attest_with_tax_key_as = |department: &str| {
        run(&[
            "identity",
            "attest",
            "--signing-key",
            &tax,
            "--citizen",
            did,
            "--name",
            "name",
            "--dir",
            d,
            "--department",
            department,
        ])
    };
    // Tax's key through civil's certificate (civil may see the name, as its
    // attester): refused before the rules are even asked, with the way out.
    let refused = attest_with_tax_key_as("civil");
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("signed with department \"tax\"'s signing key")
            && refused.stderr.contains("--department tax"),
        "{}",
        refused.stderr
    );
    // With tax's key and tax's certificate: tax holds no consent yet and
    // attests nothing, so it may not even see the identity.
    let refused = attest_with_tax_key_as("tax");
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("PERMISSION_DENIED"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("may not attest"),
        "{}",
        refused.stderr
    );
    assert_eq!(refused.stderr.lines().count(), 1, "{}", refused.stderr);
    // Nor show it, and it is told how to get access.
    let refused = run(&["identity", "show", did, "--department", "tax", "--dir", d]);
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("PERMISSION_DENIED") && refused.stderr.contains("--key"),
        "{}",
        refused.stderr
    );
}

/// A consent to the tax office; returns its id.
fn grant(d: &str, key: &str, attributes: &str, purpose: &str) -> String {
    let granted = ok(&[
        "identity",
        "consent",
        "grant",
        "--key",
        key,
        "--department",
        "tax",
        "--attributes",
        attributes,
        "--purpose",
        purpose,
        "--expires",
        "30d",
        "--jurisdiction",
        "EU",
        "--dir",
        d,
        "--json",
    ])
    .json();
    let id = granted["consent_id"].as_str().unwrap().to_owned();
    assert_eq!(granted["transaction"]["id"], id.as_str(), "{granted}");
    id
}

/// The sealed photo blob leaves a node only with the access id.
fn personal_blob(d: &str, tmp: &Path, cid: &str, access_id: &str) {
    let sealed = tmp.join("sealed.bin");
    let refused = run(&[
        "blob",
        "get",
        cid,
        "--out",
        path_str(&sealed),
        "--department",
        "tax",
        "--dir",
        d,
    ]);
    assert_eq!(refused.code, Some(2));
    assert!(
        refused.stderr.contains("PERMISSION_DENIED"),
        "{}",
        refused.stderr
    );
    ok(&[
        "blob",
        "get",
        cid,
        "--out",
        path_str(&sealed),
        "--access",
        access_id,
        "--force",
        "--department",
        "tax",
        "--dir",
        d,
    ]);
    assert!(std::fs::metadata(&sealed).unwrap().len() > PHOTO_BYTES as u64);
}

/// QR login at the tax office for the attested name, consented to it.
fn login(d: &str, key: &str, did: &str) {
    grant(d, key, "name", "login");
    let challenge = ok(&[
        "identity",
        "login",
        "challenge",
        "--attributes",
        "name",
        "--website",
        "tax.gov.example",
        "--department",
        "tax",
        "--dir",
        d,
        "--json",
    ])
    .json();
    let payload = challenge["qr_payload"].as_str().unwrap().to_owned();
    assert_eq!(challenge["relying_party"], "tax");
    let text = ok(&[
        "identity",
        "login",
        "challenge",
        "--attributes",
        "name",
        "--department",
        "tax",
        "--dir",
        d,
    ])
    .stdout;
    assert!(
        text.contains('█') || text.contains('▀'),
        "a QR code: {text}"
    );
    let signature = ok(&["identity", "login", "sign", "--key", key, &payload])
        .stdout
        .trim()
        .to_owned();
    assert_eq!(signature.len(), 128, "{signature}");
    let complete = [
        "identity",
        "login",
        "complete",
        "--payload",
        &payload,
        "--public-key",
        did,
        "--signature",
        &signature,
        "--department",
        "tax",
        "--dir",
        d,
    ];
    let done = ok(&[&complete[..], &["--json"]].concat()).json();
    assert_eq!(done["did"], did);
    assert_eq!(done["claims"][0]["name"], "name");
    assert_eq!(
        done["claims"][0]["attested_by"],
        serde_json::json!(["civil"])
    );
    let replay = run(&complete);
    assert_eq!(replay.code, Some(2));
    assert!(replay.stderr.contains("already used"), "{}", replay.stderr);
}
