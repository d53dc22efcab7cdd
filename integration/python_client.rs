//! A generated client, as a legacy department system would wire one in: the
//! test generates a Python client from `proto/` with grpcio-tools, starts a
//! four-validator devnet and runs
//! `integration/python/citizen_flow.py` against it over mutual TLS. The
//! script knows nothing but the proto files, a department's certificates and
//! its signing key.
//!
//! Needs a virtualenv with the packages pinned in
//! `integration/python/requirements.txt`: `make python-deps` (which `make
//! test` runs first) creates it in `target/python-venv`;
//! `GOVCHAIN_PYTHON_VENV` names another. The test itself talks only to
//! loopback: the packages are installed before it runs, not by it.
//!
//! The second test does the same through the `govchain-client` package
//! (`clients/python`): it installs the package offline into that virtualenv
//! (its build generates the stubs from `proto/`), runs the package's unit
//! tests, then `clients/python/tests/devnet_flow.py` against a devnet, and
//! `clients/python/tests/approval_flow.py`: the demo's restaurant case end
//! to end.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "support/bounded.rs"]
mod bounded;
#[path = "support/detached_devnet.rs"]
mod detached_devnet;

use bounded::{prepare_python, run_bounded};
use detached_devnet::Devnet;

const REPOSITORY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

const PROTOC_TIMEOUT: Duration = Duration::from_secs(120);
const FLOW_TIMEOUT: Duration = Duration::from_secs(600);
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);
const UNIT_TESTS_TIMEOUT: Duration = Duration::from_secs(120);

/// Generates the Python client from every file in `proto/`.
fn generate_client(python: &Path, out: &Path, logs: &Path) {
    let proto = Path::new(REPOSITORY).join("proto");
    let mut files = Vec::new();
    collect_protos(&proto, &mut files);
    files.sort();
    assert!(
        !files.is_empty(),
        "no .proto files under {}",
        proto.display()
    );
    std::fs::create_dir_all(out).unwrap();
    let mut command = Command::new(python);
    command
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&proto)
        .arg(format!("--python_out={}", out.display()))
        .arg(format!("--grpc_python_out={}", out.display()))
        .args(&files);
    let run = run_bounded(command, &logs.join("protoc.log"), PROTOC_TIMEOUT);
    assert!(
        run.success(),
        "{}",
        run.describe("grpc_tools.protoc", PROTOC_TIMEOUT)
    );
}

fn collect_protos(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_protos(&path, files);
        } else if path.extension().is_some_and(|e| e == "proto") {
            files.push(path);
        }
    }
}

#[test]
fn generated_python_client_runs_the_citizen_flow() {
    let started = Instant::now();
    let temporary = tempfile::tempdir().unwrap();
    let logs = temporary.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();

    let python = prepare_python(
        &logs,
        "import grpc, grpc_tools, google.protobuf, cryptography",
        "integration/python/requirements.txt (the client packages)",
    );
    let generated = temporary.path().join("generated");
    generate_client(&python, &generated, &logs);
    eprintln!("python client generated in {:.1?}", started.elapsed());

    let devnet = Devnet::start(temporary.path().join("devnet"), logs.clone());
    eprintln!("devnet up after {:.1?}", started.elapsed());

    let script = Path::new(REPOSITORY).join("integration/python/citizen_flow.py");
    let mut command = Command::new(&python);
    command
        .arg(&script)
        .arg("--devnet")
        .arg(&devnet.dir)
        .arg("--generated")
        .arg(&generated)
        .env("PYTHONUNBUFFERED", "1");
    let run = run_bounded(command, &logs.join("flow.log"), FLOW_TIMEOUT);
    eprintln!("{}", run.output);
    assert!(
        run.success(),
        "{}\nnode logs:\n{}",
        run.describe("citizen_flow.py", FLOW_TIMEOUT),
        devnet.node_logs()
    );
    assert!(run.output.contains("all steps passed"), "{}", run.output);
    drop(devnet);
    eprintln!("done in {:.1?}", started.elapsed());
}

/// Runs `clients/python/tests/<script>` against `devnet`; asserts that every
/// step passed and returns its output.
fn run_package_flow(python: &Path, devnet: &Devnet, logs: &Path, script: &str) -> String {
    let mut command = Command::new(python);
    command
        .arg(
            Path::new(REPOSITORY)
                .join("clients/python/tests")
                .join(script),
        )
        .arg("--devnet")
        .arg(&devnet.dir)
        .current_dir(logs)
        .env("PYTHONUNBUFFERED", "1");
    let log = logs.join(script).with_extension("log");
    let run = run_bounded(command, &log, FLOW_TIMEOUT);
    eprintln!("{}", run.output);
    assert!(
        run.success(),
        "{}\nnode logs:\n{}",
        run.describe(script, FLOW_TIMEOUT),
        devnet.node_logs()
    );
    assert!(run.output.contains("all steps passed"), "{}", run.output);
    run.output
}

/// Installs `clients/python` into the virtualenv from the local folder, with
/// no index: the build and runtime packages come from `make python-deps`.
fn install_client_package(python: &Path, logs: &Path) {
    let package = Path::new(REPOSITORY).join("clients/python");
    let mut command = Command::new(python);
    command
        .args([
            "-m",
            "pip",
            "install",
            "--no-index",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--force-reinstall",
            "--no-deps",
        ])
        .arg(&package);
    let run = run_bounded(command, &logs.join("install.log"), INSTALL_TIMEOUT);
    assert!(
        run.success(),
        "{}",
        run.describe("pip install clients/python", INSTALL_TIMEOUT)
    );
}

/// Runs the package's unit tests against the installed package, with the
/// transaction id vector as the Rust code path computes it.
fn run_client_unit_tests(python: &Path, logs: &Path) {
    let vector = govchain_exec::transaction_id("chain-x", &[7u8; 32], 9, b"payload");
    let mut command = Command::new(python);
    command
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(Path::new(REPOSITORY).join("clients/python/tests"))
        // Not the source folder: the tests must import the installed package.
        .current_dir(logs)
        .env("GOVCHAIN_TX_ID_VECTOR", vector.to_hex());
    let run = run_bounded(command, &logs.join("unit.log"), UNIT_TESTS_TIMEOUT);
    eprintln!("{}", run.output);
    assert!(
        run.success(),
        "{}",
        run.describe("clients/python unit tests", UNIT_TESTS_TIMEOUT)
    );
    assert!(
        run.output.contains("test_vector_from_rust"),
        "{}",
        run.output
    );
    assert!(!run.output.contains("skipped"), "{}", run.output);
}

#[test]
fn python_client_package_proves_follows_and_reads_error_reasons() {
    let started = Instant::now();
    let temporary = tempfile::tempdir().unwrap();
    let logs = temporary.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();

    let python = prepare_python(
        &logs,
        "import grpc, grpc_tools, grpc_status, google.rpc.error_details_pb2, cryptography, setuptools",
        "integration/python/requirements.txt and clients/python/requirements.txt",
    );
    install_client_package(&python, &logs);
    run_client_unit_tests(&python, &logs);
    eprintln!(
        "package installed and unit-tested in {:.1?}",
        started.elapsed()
    );

    let devnet = Devnet::start(temporary.path().join("devnet"), logs.clone());
    eprintln!("devnet up after {:.1?}", started.elapsed());
    run_package_flow(&python, &devnet, &logs, "devnet_flow.py");
    // The restaurant case, opened, refused out of order, approved step by
    // step by the demo's officers and proven, through the package.
    let output = run_package_flow(&python, &devnet, &logs, "approval_flow.py");
    assert!(output.contains("APPROVED after"), "{output}");
    drop(devnet);
    eprintln!("done in {:.1?}", started.elapsed());
}
