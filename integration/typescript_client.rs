//! The TypeScript client package (`clients/typescript`), as a department
//! system would use it: the test runs the package's unit tests (`npm test`:
//! code generated from `proto/` by buf and protoc-gen-es, compiled by tsc,
//! then node's test runner, with the transaction id vector as the Rust code
//! path computes it), starts a four-validator devnet and runs
//! `clients/typescript/tests/devnet_flow.ts` against it over mutual TLS:
//! sign and submit-and-wait an anchor, read it back with a proof verified
//! against genesis (and refused once tampered), follow a filtered stream
//! across a closed connection, and read NONCE_USED from a reused nonce.
//!
//! Needs node 20 or newer and the package's npm packages:
//! `make typescript-deps` (which `make test` runs first) installs them into
//! `clients/typescript/node_modules` with `npm ci`. The test itself talks
//! only to loopback: the packages are installed before it runs, not by it.

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

/// connect-node 2.1 needs node 20 (package.json's `engines`).
const NODE_MAJOR_MIN: u32 = 20;
const VERSION_TIMEOUT: Duration = Duration::from_secs(60);
/// Generating, compiling and running the unit tests, on two busy cores.
const UNIT_TESTS_TIMEOUT: Duration = Duration::from_secs(300);
const FLOW_TIMEOUT: Duration = Duration::from_secs(600);

fn package_dir() -> PathBuf {
    Path::new(REPOSITORY).join("clients/typescript")
}

/// Fails (never skips) when node or the package's npm packages are missing.
fn check_prerequisites(logs: &Path) {
    let package = package_dir();
    let setup = "run `make typescript-deps` first (it runs `npm ci` in clients/typescript, then `npm run build`)";
    for needed in [
        "node_modules/.bin/tsc",
        "node_modules/.bin/buf",
        "node_modules/.bin/protoc-gen-es",
        "node_modules/@connectrpc/connect-node/package.json",
    ] {
        let path = package.join(needed);
        assert!(path.exists(), "{} is missing: {setup}", path.display());
    }
    let mut command = Command::new("node");
    command.arg("--version");
    let run = run_bounded(command, &logs.join("node-version.log"), VERSION_TIMEOUT);
    let major = run
        .output
        .trim()
        .strip_prefix('v')
        .and_then(|version| version.split('.').next())
        .and_then(|major| major.parse::<u32>().ok());
    assert!(
        run.success() && major.is_some_and(|major| major >= NODE_MAJOR_MIN),
        "node {NODE_MAJOR_MIN} or newer is needed: {}",
        run.describe("node --version", VERSION_TIMEOUT)
    );
}

/// An npm command in the package folder, with no registry access: the
/// update check is off (the test talks only to loopback).
fn npm(args: &[&str]) -> Command {
    let mut command = Command::new("npm");
    command
        .args(args)
        .current_dir(package_dir())
        .env("npm_config_update_notifier", "false")
        .env("npm_config_fund", "false");
    command
}

/// `npm test`: generates, compiles and runs the unit tests, with the
/// transaction id vector as the Rust code path computes it.
fn run_unit_tests(logs: &Path) {
    let vector = govchain_exec::transaction_id("chain-x", &[7u8; 32], 9, b"payload");
    let mut command = npm(&["test"]);
    command.env("GOVCHAIN_TX_ID_VECTOR", vector.to_hex());
    let run = run_bounded(command, &logs.join("unit.log"), UNIT_TESTS_TIMEOUT);
    eprintln!("{}", run.output);
    assert!(
        run.success(),
        "{}",
        run.describe("clients/typescript npm test", UNIT_TESTS_TIMEOUT)
    );
    for expected in [
        "matches the vector from the Rust code path",
        "makes the Python client's envelope byte for byte",
        "resumes after the last transaction it yielded",
        "ℹ fail 0",
        "ℹ skipped 0",
        "ℹ todo 0",
    ] {
        assert!(
            run.output.contains(expected),
            "no {expected:?} in the output:\n{}",
            run.output
        );
    }
}

#[test]
fn typescript_client_proves_follows_and_reads_error_reasons() {
    let started = Instant::now();
    let temporary = tempfile::tempdir().unwrap();
    let logs = temporary.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();

    check_prerequisites(&logs);
    run_unit_tests(&logs);
    eprintln!("package built and unit-tested in {:.1?}", started.elapsed());

    let devnet = Devnet::start(temporary.path().join("devnet"), logs.clone());
    eprintln!("devnet up after {:.1?}", started.elapsed());
    let mut command = Command::new("node");
    command
        .arg(package_dir().join("dist/tests/devnet_flow.js"))
        .arg("--devnet")
        .arg(&devnet.dir)
        .current_dir(&logs);
    let run = run_bounded(command, &logs.join("flow.log"), FLOW_TIMEOUT);
    eprintln!("{}", run.output);
    assert!(
        run.success(),
        "{}\nnode logs:\n{}",
        run.describe("devnet_flow.js", FLOW_TIMEOUT),
        devnet.node_logs()
    );
    assert!(run.output.contains("all steps passed"), "{}", run.output);
    drop(devnet);
    eprintln!("done in {:.1?}", started.elapsed());
}
