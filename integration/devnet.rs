//! `govchain devnet`, the main job, end to end: start, query, stop; and the
//! binary's malloc tuning, seen from outside.

#![allow(clippy::unwrap_used)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_govchain");

fn govchain(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(BIN).args(args).output().unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (
        output.status.success(),
        text(output.stdout),
        text(output.stderr),
    )
}

/// `govchain case export` of the devnet's `case` (as tax) into `out`, then
/// `govchain verify` of it against `genesis`, which must find the case
/// approved; returns the bundle.
fn export_and_verify(
    d: &str,
    case: &str,
    out: &std::path::Path,
    genesis: &std::path::Path,
) -> serde_json::Value {
    let (ok, _, err) = govchain(&[
        "case",
        "export",
        case,
        "--out",
        out.to_str().unwrap(),
        "--dir",
        d,
        "--department",
        "tax",
    ]);
    assert!(ok, "case export: {err}");
    let (ok, verified, err) = govchain(&[
        "verify",
        out.to_str().unwrap(),
        "--genesis",
        genesis.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "verify: {err}");
    let verified: serde_json::Value = serde_json::from_str(&verified).unwrap();
    assert_eq!(verified["state"], "approved", "{verified}");
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

#[test]
fn devnet_starts_answers_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().join("devnet");
    let d = dir.to_str().unwrap();
    let (ok, out, err) = govchain(&["devnet", "--dir", d, "--base-port", "0", "--detach"]);
    let stop = || govchain(&["devnet", "stop", "--dir", d]);
    if !ok {
        stop();
        panic!("devnet failed: {err}");
    }
    assert!(out.contains("anchored 8 demo records"), "{out}");
    assert!(
        out.contains("demo citizen: did:key:z6Mk"),
        "the summary shows the demo citizen: {out}"
    );
    let did = out
        .split_whitespace()
        .find(|word| word.starts_with("did:key:"))
        .unwrap()
        .to_owned();
    // As the citizen (its key signs the request), every consent shows.
    let key = dir.join("demo-citizen.key");
    let key = key.to_str().unwrap();
    let (ok, shown, err) =
        govchain(&["identity", "show", &did, "--key", key, "--dir", d, "--json"]);
    assert!(ok, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["consents"][0]["department"], "tax", "{shown}");
    // Without the key, police (which genesis lets attest names) sees the
    // name it may attest, but not the citizen's consent to tax.
    let (ok, shown, err) = govchain(&[
        "identity",
        "show",
        &did,
        "--department",
        "police",
        "--dir",
        d,
        "--json",
    ]);
    assert!(ok, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["consents"], serde_json::json!([]), "{shown}");
    assert_eq!(shown["attributes"][0]["name"], "name", "{shown}");
    assert!(
        out.contains("govchain status --dir"),
        "the summary tells how to query: {out}"
    );
    // The demo case walks to approved with the commands the summary prints,
    // as printed: the two inspections, then the licence (the automatic
    // eligibility step needs no command).
    let case = out
        .lines()
        .find_map(|line| line.strip_prefix("demo case "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the summary shows the demo case: {out}"))
        .to_owned();
    let approvals: Vec<Vec<String>> = out
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("govchain case approve "))
        .map(|rest| {
            let command = rest.split('#').next().unwrap();
            std::iter::once("case".to_owned())
                .chain(std::iter::once("approve".to_owned()))
                .chain(command.split_whitespace().map(str::to_owned))
                .collect()
        })
        .collect();
    assert_eq!(approvals.len(), 3, "one approval per step: {out}");
    for approval in &approvals {
        let args: Vec<&str> = approval.iter().map(String::as_str).collect();
        let (ok, _, err) = govchain(&args);
        assert!(ok, "{args:?}: {err}");
    }
    let (ok, shown, err) = govchain(&[
        "case",
        "show",
        &case,
        "--dir",
        d,
        "--department",
        "tax",
        "--json",
    ]);
    assert!(ok, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["state"], "approved", "{shown}");
    // The demo case's evidence (its automatic step decided by the demo
    // citizen's attested name) verifies offline.
    let genesis = dir.join("certs").join("genesis.json");
    let bundle = dir.join("demo-case.json");
    export_and_verify(d, &case, &bundle, &genesis);
    // The eligibility step was approved by its rule as the case opened
    // (the demo citizen's name is attested by civil), not by an officer.
    let eligibility = &shown["steps"][0];
    assert_eq!(eligibility["step_id"], "eligibility", "{shown}");
    assert_eq!(eligibility["rule_outcome"], "true", "{shown}");
    assert_eq!(shown["events"][1]["kind"], "auto-approve", "{shown}");
    // The floor plan, on health's node, is read by police (its step may
    // read it) as a document of the case, and refused to tax (its step may
    // not) and to police without the case.
    let plan = shown["documents"][0]
        .as_str()
        .and_then(|document| document.strip_prefix("floor-plan="))
        .unwrap_or_else(|| panic!("the case shows its documents as NAME=CID: {shown}"))
        .to_owned();
    let devnet: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("devnet.json")).unwrap()).unwrap();
    let health_url = devnet["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|node| node["name"] == "health")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let out_file = dir.join("plan.txt");
    let get = |department: &str, case: Option<&str>| {
        let mut args = vec![
            "blob",
            "get",
            &plan,
            "--out",
            out_file.to_str().unwrap(),
            "--force",
            "--dir",
            d,
            "--department",
            department,
            "--node",
            &health_url,
            "--server-name",
            "health.node.govchain",
        ];
        if let Some(case) = case {
            args.extend(["--case", case]);
        }
        govchain(&args)
    };
    assert!(
        out.contains(&format!("govchain blob get {plan} --case {case}")),
        "the summary shows how to read the floor plan: {out}"
    );
    assert!(
        out.contains(&format!("govchain case export {case}")) && out.contains("govchain verify "),
        "the summary shows how to export and verify the case: {out}"
    );
    // The demo governance proposal: signed by the departments the summary
    // names, as printed, it puts police's new attest permission in force.
    let signs: Vec<Vec<String>> = out
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("govchain governance sign "))
        .map(|rest| {
            ["governance", "sign"]
                .into_iter()
                .map(str::to_owned)
                .chain(rest.split_whitespace().map(str::to_owned))
                .collect()
        })
        .collect();
    assert_eq!(signs.len(), 2, "two more signatures make 3 of 4: {out}");
    for sign in &signs {
        let args: Vec<&str> = sign.iter().map(String::as_str).collect();
        let (ok, _, err) = govchain(&args);
        assert!(ok, "{args:?}: {err}");
    }
    let police_attests = || {
        let (ok, listed, err) = govchain(&["governance", "list", "--all", "--dir", d, "--json"]);
        assert!(ok, "{err}");
        let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
        listed["departments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|department| department["name"] == "police")
            .unwrap()["attests"]
            .clone()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while police_attests() != serde_json::json!(["name", "photo", "vehicle"]) {
        assert!(
            std::time::Instant::now() < deadline,
            "police may attest vehicles: {}",
            police_attests()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Governance changed a department: the case's evidence now carries the
    // departments' registry, proven, and still verifies offline.
    let after = dir.join("demo-case-after.json");
    let exported = export_and_verify(d, &case, &after, &genesis);
    assert!(
        !exported["departments"]["value"]
            .as_str()
            .unwrap()
            .is_empty(),
        "the bundle carries the registry"
    );
    let (ok, _, err) = get("police", Some(&case));
    assert!(ok, "police reads the floor plan of the case: {err}");
    assert!(
        std::fs::read_to_string(&out_file)
            .unwrap()
            .contains("floor plan"),
        "the floor plan's bytes"
    );
    let (ok, _, err) = get("tax", Some(&case));
    assert!(!ok, "tax's step may not read the floor plan");
    assert!(err.contains("PERMISSION_DENIED"), "{err}");
    assert!(err.contains("may read document \"floor-plan\""), "{err}");
    let (ok, _, err) = get("police", None);
    assert!(
        !ok,
        "without --case, another department's blob is not released"
    );
    assert!(err.contains("PERMISSION_DENIED"), "{err}");
    // Tax names the floor plan (its CID is in the blocks) in a case of its
    // own: the plan still belongs to the demo case, which named it first.
    let tax_key = dir.join("certs").join("tax").join("signing.key");
    let (ok, opened, err) = govchain(&[
        "case",
        "open",
        "--workflow",
        "open-restaurant",
        "--document",
        &format!("floor-plan={plan}"),
        "--signing-key",
        tax_key.to_str().unwrap(),
        "--dir",
        d,
        "--department",
        "tax",
        "--json",
    ]);
    assert!(ok, "tax opens a case naming the plan: {err}");
    let opened: serde_json::Value = serde_json::from_str(&opened).unwrap();
    let own_case = opened["case_id"].as_str().unwrap().to_owned();
    let (ok, _, err) = get("tax", Some(&own_case));
    assert!(!ok, "naming another case's document releases nothing");
    assert!(err.contains("PERMISSION_DENIED"), "{err}");
    assert!(
        err.contains(&format!("a document of case {}", &case[..8])),
        "{err}"
    );
    // The demo directory: health's open and by-request datasets.
    assert!(out.contains("demo directory:"), "{out}");
    let (ok, found, err) = govchain(&["directory", "search", "--dir", d, "--json"]);
    assert!(ok, "{err}");
    let found: serde_json::Value = serde_json::from_str(&found).unwrap();
    let policies: Vec<(&str, &str)> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["dataset"].as_str().unwrap(),
                e["access_policy"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        policies,
        [
            ("health/clinic-visits", "open"),
            ("health/vaccinations", "by-request")
        ],
        "{found}"
    );
    // The test's govchain is not on the PATH: the summary says how to put
    // it there, so that the commands after it run as printed.
    let bin_dir = std::path::Path::new(BIN)
        .canonicalize()
        .unwrap()
        .parent()
        .unwrap()
        .display()
        .to_string();
    assert!(
        out.contains(&format!("export PATH=\"{bin_dir}:$PATH\"")),
        "the summary puts govchain on the PATH: {out}"
    );

    let (ok, out, err) = govchain(&["status", "--dir", d, "--json"]);
    let (stopped, stop_out, _) = stop();
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 4);
    let heights: Vec<u64> = nodes
        .iter()
        .map(|n| n["height"].as_u64().unwrap())
        .collect();
    assert!(
        heights.iter().all(|h| *h >= 1),
        "demo transactions committed: {heights:?}"
    );
    for node in nodes {
        assert_eq!(node["head_hash"].as_str().unwrap().len(), 64, "{node}");
    }
    assert!(stopped, "devnet stop failed");
    assert!(stop_out.contains("stopped 4 nodes"), "{stop_out}");
    // Stopped for real: status now reports every node as unreachable.
    let (ok, _, _) = govchain(&["status", "--dir", d]);
    assert!(!ok, "status succeeded against a stopped devnet");
}

/// The malloc tuning is a debug log line of every command; `mallopt` must
/// run in a fresh process (before any thread), so it is checked here.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn the_binary_tunes_malloc_unless_the_environment_does() {
    let dir = tempfile::tempdir().unwrap();
    let tuning = |env: &[(&str, &str)]| {
        let key = dir.path().join("k.key");
        let _ = std::fs::remove_file(&key);
        let output = Command::new(BIN)
            .args(["keys", "new", "--out", key.to_str().unwrap()])
            .env("GOVCHAIN_LOG", "debug")
            // Whatever the caller's environment says about malloc.
            .env_remove("GLIBC_TUNABLES")
            .env_remove("MALLOC_MMAP_THRESHOLD_")
            .env_remove("MALLOC_TRIM_THRESHOLD_")
            .env_remove("MALLOC_TOP_PAD_")
            .env_remove("MALLOC_MMAP_MAX_")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        stderr
            .lines()
            .find(|line| line.contains("malloc thresholds"))
            .unwrap_or_else(|| panic!("no malloc line in: {stderr}"))
            .to_owned()
    };
    // glibc accepts both thresholds (it refuses an mmap threshold over
    // 32 MiB).
    assert!(tuning(&[]).contains("Applied"));
    for env in [
        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1048576"),
        ("MALLOC_TRIM_THRESHOLD_", "1048576"),
    ] {
        let line = tuning(&[env]);
        assert!(line.contains("LeftToEnvironment"), "{env:?}: {line}");
    }
}
