//! The Helm chart (`helm/govchain`) against what `govchain certs
//! k8s-secrets` writes: two consortia made with `govchain certs init` (the
//! default values' four departments; the seven departments and two
//! observers of `helm/govchain/ci/seven-departments-values.yaml`), each
//! turned into Secret manifests, then `helm/govchain/tests/render_test.py`
//! lints and renders the chart with Helm's Go SDK (PyPI `helm-python-sdk`,
//! no `helm` binary), validates every manifest against the Kubernetes 1.30
//! schema (`kubernetes-validate`), checks that every Secret the pods mount
//! is one k8s-secrets wrote, and that each bad values file in
//! `helm/govchain/tests/bad-values/` is refused with its message.
//!
//! Needs the virtualenv of `make python-deps` (`target/python-venv`, or
//! `GOVCHAIN_PYTHON_VENV`), which installs `helm/govchain/tests/requirements.txt`;
//! without it the test fails and says so. Everything runs offline.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[path = "support/bounded.rs"]
mod bounded;

use bounded::{prepare_python, run_bounded};

const BIN: &str = env!("CARGO_BIN_EXE_govchain");
const REPOSITORY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

const CERTS_TIMEOUT: Duration = Duration::from_secs(60);
const RENDER_TIMEOUT: Duration = Duration::from_secs(300);

/// The departments of `helm/govchain/values.yaml`.
const DEFAULT_DEPARTMENTS: &str = "health,tax,police,civil";
/// The validators and observers of `helm/govchain/ci/seven-departments-values.yaml`.
const CI_DEPARTMENTS: &str = "health,tax,police,civil,education,transport,justice";
const CI_OBSERVERS: &str = "backup-a,backup-b";

fn govchain(args: &[&str], logs: &Path, name: &str) {
    let mut command = Command::new(BIN);
    command.args(args);
    let run = run_bounded(command, &logs.join(name), CERTS_TIMEOUT);
    assert!(
        run.success(),
        "{}",
        run.describe(&format!("govchain {args:?}"), CERTS_TIMEOUT)
    );
}

/// `certs init` then `certs k8s-secrets` into `<root>/<name>.yaml`, over a
/// world-readable file left there: the keys must end up 0600 regardless.
fn secrets(root: &Path, name: &str, departments: &str, observers: Option<&str>) -> PathBuf {
    let certs = root.join(name);
    let out = root.join(format!("{name}.yaml"));
    std::fs::write(&out, "stale").unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut init = vec![
        "certs",
        "init",
        "--out",
        certs.to_str().unwrap(),
        "--chain-id",
        "gov-k8s",
        "--departments",
        departments,
    ];
    if let Some(observers) = observers {
        init.extend(["--observers", observers]);
    }
    govchain(&init, root, &format!("init-{name}.log"));
    govchain(
        &[
            "certs",
            "k8s-secrets",
            "--dir",
            certs.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        root,
        &format!("k8s-secrets-{name}.log"),
    );
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} holds keys", out.display());
    let text = std::fs::read_to_string(&out).unwrap();
    let node_key = std::fs::read_to_string(certs.join("tax/node.key")).unwrap();
    assert!(!text.contains("stale"));
    assert!(
        !text.contains(node_key.trim()),
        "keys are base64 in Secret data"
    );
    out
}

#[test]
fn chart_renders_lints_and_validates_with_k8s_secrets_output() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let python = prepare_python(
        root,
        "import helm_python, kubernetes_validate, yaml; print('helm', helm_python.helm_sdk_version())",
        "helm/govchain/tests/requirements.txt (helm-python-sdk, kubernetes-validate)",
    );
    let default_secrets = secrets(root, "default", DEFAULT_DEPARTMENTS, None);
    let ci_secrets = secrets(root, "ci", CI_DEPARTMENTS, Some(CI_OBSERVERS));

    let chart = Path::new(REPOSITORY).join("helm/govchain");
    let mut command = Command::new(&python);
    command
        .arg(chart.join("tests/render_test.py"))
        .arg("--chart")
        .arg(&chart)
        .arg("--default-secrets")
        .arg(&default_secrets)
        .arg("--ci-secrets")
        .arg(&ci_secrets)
        .arg("--dump-configs")
        .arg(root.join("configs"));
    let run = run_bounded(command, &root.join("render.log"), RENDER_TIMEOUT);
    assert!(
        run.success(),
        "{}",
        run.describe("render_test.py", RENDER_TIMEOUT)
    );
    // The default values, each ci/ file and each bad values file: one
    // check apiece, none left out.
    let files_in = |folder: &str| std::fs::read_dir(chart.join(folder)).unwrap().count();
    let expected = format!(
        "{} passed, 0 failed",
        1 + files_in("ci") + files_in("tests/bad-values")
    );
    assert!(
        run.output.contains(&expected),
        "expected {expected:?} in:\n{}",
        run.output
    );

    // Each pod's node.toml, with the pod's mounts mapped onto the
    // consortium the Secrets came from, is one the node accepts: every
    // key known (metrics_listen, health_listen), the department a
    // validator whose consensus key genesis lists, the peers validators.
    let certs = root.join("default");
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("configs")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace(
                "/etc/govchain/credentials/",
                &format!("{}/", certs.display()),
            )
            .replace(
                "/etc/govchain/genesis/genesis.json",
                &certs.join("genesis.json").display().to_string(),
            )
            .replace(
                "/var/lib/govchain",
                &root.join("data").display().to_string(),
            );
        let local = root.join(format!(
            "local-{}",
            path.file_name().unwrap().to_string_lossy()
        ));
        std::fs::write(&local, text).unwrap();
        let output = Command::new(BIN)
            .args(["--json", "config", "check", local.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let view: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(view["effective"]["health_listen"], "0.0.0.0:7052", "{view}");
        assert_eq!(
            view["effective"]["metrics_listen"], "0.0.0.0:9464",
            "{view}"
        );
        assert_eq!(
            view["effective"]["peers"].as_array().unwrap().len(),
            3,
            "{view}"
        );
        checked += 1;
    }
    assert_eq!(
        checked, 4,
        "one node.toml per validator of the default values"
    );
}
