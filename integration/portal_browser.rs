//! The web portal in a real browser: a four-validator devnet serves its
//! portal over HTTPS, headless Chromium (Debian's `chromium`, driven by
//! `playwright-core` from npm) trusts the devnet's CA through an NSS
//! database in a temporary `$HOME`, and `integration/portal/browser.test.mjs`
//! walks the QR login (the device's answer by `govchain identity login
//! respond`), the citizen's page and access log, a consent granted and
//! revoked by the device (`govchain identity respond`), an officer's login,
//! inbox and approval of the demo case's step, the explorer's live
//! update, an expired challenge, a form without its CSRF token, the login
//! without JavaScript, and a 360 px screen, with axe-core on every page.
//! Screenshots go to `target/portal-screenshots/`.
//!
//! Needs `chromium` and `certutil` (Debian's chromium and libnss3-tools,
//! which `.ci/run` installs) and the test's npm packages (`make
//! portal-deps`, part of `make test`). The test fails, never skips, when
//! one is missing. Its traffic stays on loopback: Chromium's background
//! services are off.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "support/bounded.rs"]
mod bounded;
#[path = "support/detached_devnet.rs"]
mod detached_devnet;

use bounded::run_bounded;
use detached_devnet::Devnet;

const REPOSITORY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const BIN: &str = env!("CARGO_BIN_EXE_govchain");
const CHROMIUM_DEFAULT: &str = "/usr/bin/chromium";
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
const BROWSER_TESTS_TIMEOUT: Duration = Duration::from_secs(600);
/// The portal the tests use: the demo citizen's consent is for tax.
const DEPARTMENT: &str = "tax";
/// The portal of the demo case's first officer step (health's inspector).
const OFFICER_DEPARTMENT: &str = "health";
/// The browser tests in browser.test.mjs, every one of which must pass.
const BROWSER_TESTS: usize = 10;

fn tests_dir() -> PathBuf {
    Path::new(REPOSITORY).join("integration/portal")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from(CHROMIUM_DEFAULT), PathBuf::from)
}

/// Fails (never skips) when the browser, certutil or the npm packages are
/// missing.
fn check_prerequisites() {
    let setup = "run `make portal-deps` first (npm ci in integration/portal)";
    for needed in [
        "node_modules/playwright-core/package.json",
        "node_modules/axe-core/axe.min.js",
    ] {
        let path = tests_dir().join(needed);
        assert!(path.exists(), "{} is missing: {setup}", path.display());
    }
    assert!(
        chromium().exists(),
        "{} is missing: install Debian's chromium (apt-get install chromium libnss3-tools; .ci/run does), or set CHROMIUM",
        chromium().display()
    );
}

/// An NSS database in `home` that trusts `ca` for TLS servers, as a
/// citizen's browser would trust the consortium's CA.
fn trust_ca(home: &Path, ca: &Path, logs: &Path) {
    let database = home.join(".pki/nssdb");
    std::fs::create_dir_all(&database).unwrap();
    let sql = format!("sql:{}", database.display());
    let mut create = Command::new("certutil");
    create.args(["-N", "--empty-password", "-d", &sql]);
    let run = run_bounded(create, &logs.join("certutil-create.log"), TOOL_TIMEOUT);
    assert!(
        run.success(),
        "{} (certutil is in Debian's libnss3-tools)",
        run.describe("certutil -N", TOOL_TIMEOUT)
    );
    let mut add = Command::new("certutil");
    add.args([
        "-A",
        "-t",
        "C,,",
        "-n",
        "govchain-devnet-ca",
        "-d",
        &sql,
        "-i",
    ])
    .arg(ca);
    let run = run_bounded(add, &logs.join("certutil-add.log"), TOOL_TIMEOUT);
    assert!(
        run.success(),
        "{}",
        run.describe("certutil -A", TOOL_TIMEOUT)
    );
}

/// The department's portal URL, from devnet.json.
fn portal_url(devnet: &Path, department: &str) -> String {
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(devnet.join("devnet.json")).unwrap()).unwrap();
    let node = file["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|node| node["name"] == department)
        .unwrap_or_else(|| panic!("no node {department} in devnet.json"));
    node["portal_url"]
        .as_str()
        .unwrap_or_else(|| panic!("node {department} has no portal_url: {node}"))
        .to_owned()
}

#[test]
fn portal_walks_login_record_access_log_and_explorer_in_chromium() {
    let started = Instant::now();
    check_prerequisites();
    let temporary = tempfile::tempdir().unwrap();
    let logs = temporary.path().join("logs");
    let home = temporary.path().join("home");
    std::fs::create_dir_all(&logs).unwrap();
    let devnet = Devnet::start(temporary.path().join("devnet"), logs.clone());
    eprintln!("devnet up after {:.1?}", started.elapsed());
    trust_ca(&home, &devnet.dir.join("certs/ca.crt"), &logs);
    let screenshots = Path::new(REPOSITORY).join("target/portal-screenshots");
    let mut command = Command::new("node");
    command
        .args(["--test", "--test-concurrency=1", "browser.test.mjs"])
        .current_dir(tests_dir())
        .env("HOME", &home)
        .env("PORTAL_URL", portal_url(&devnet.dir, DEPARTMENT))
        .env("DEVNET_DIR", &devnet.dir)
        .env("GOVCHAIN_BIN", BIN)
        .env("CITIZEN_KEY", devnet.dir.join("demo-citizen.key"))
        .env("OFFICER_KEY", devnet.dir.join("demo/officers/health.key"))
        .env(
            "OFFICER_PORTAL_URL",
            portal_url(&devnet.dir, OFFICER_DEPARTMENT),
        )
        .env("SCREENSHOTS", &screenshots)
        .env("CHROMIUM", chromium());
    let run = run_bounded(command, &logs.join("browser.log"), BROWSER_TESTS_TIMEOUT);
    eprintln!("{}", run.output);
    assert!(
        run.success(),
        "{}\nnode logs:\n{}",
        run.describe("browser.test.mjs", BROWSER_TESTS_TIMEOUT),
        devnet.node_logs()
    );
    for expected in [
        format!("# pass {BROWSER_TESTS}"),
        "# fail 0".to_owned(),
        "# skipped 0".to_owned(),
    ] {
        assert!(
            run.output.contains(&expected),
            "no {expected:?} in:\n{}",
            run.output
        );
    }
    for screenshot in ["01-start.png", "03-citizen.png", "05-explorer.png"] {
        assert!(
            screenshots.join(screenshot).exists(),
            "{screenshot} was not saved"
        );
    }
    drop(devnet);
    eprintln!("done in {:.1?}", started.elapsed());
}
