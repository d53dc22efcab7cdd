//! Child processes with a deadline, for the tests that run Python tools
//! (`python_client.rs`, `helm_chart.rs`): a hung pip, protoc or Helm
//! render cannot hang the test.

#![allow(dead_code, clippy::unwrap_used)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What a finished (or timed-out) child process left behind.
pub struct Run {
    /// `None` if it was killed at the deadline.
    pub status: Option<ExitStatus>,
    pub output: String,
}

impl Run {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn describe(&self, what: &str, timeout: Duration) -> String {
        let ending = match self.status {
            Some(status) => format!("exited with {status}"),
            None => format!("was killed after {timeout:?}"),
        };
        format!(
            "{what} {ending}; its output:\n{}\n--- end of output",
            self.output
        )
    }
}

/// Runs `command` with stdout and stderr in one file, killing it at
/// `timeout`. A fixed deadline rather than `output()`, so that a hung pip
/// or node cannot hang the test.
pub fn run_bounded(mut command: Command, log: &Path, timeout: Duration) -> Run {
    let file = File::create(log).unwrap();
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    let program = format!("{command:?}");
    let mut child = command
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {program}: {err}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    let output = std::fs::read_to_string(log).unwrap_or_default();
    Run { status, output }
}

const REPOSITORY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
/// How long the check that the virtualenv has its packages may take.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(60);

/// The python of the virtualenv `make python-deps` makes
/// (`target/python-venv`, or `GOVCHAIN_PYTHON_VENV`), checked to run
/// `import_check`; `packages` names what it needs, for the failure
/// message. The test fails (never skips) when it is missing.
pub fn prepare_python(logs: &Path, import_check: &str, packages: &str) -> PathBuf {
    let venv = std::env::var_os("GOVCHAIN_PYTHON_VENV").map_or_else(
        || Path::new(REPOSITORY).join("target/python-venv"),
        PathBuf::from,
    );
    let python = venv.join("bin").join("python");
    let setup = format!(
        "run `make python-deps` first (it creates {} with {packages}), or set GOVCHAIN_PYTHON_VENV to such a virtualenv",
        venv.display()
    );
    assert!(
        python.exists(),
        "no virtualenv at {}: {setup}",
        venv.display()
    );
    let mut command = Command::new(&python);
    command.args(["-c", import_check]);
    let run = run_bounded(command, &logs.join("imports.log"), IMPORT_TIMEOUT);
    assert!(
        run.success(),
        "the virtualenv lacks {packages}: {setup}. {}",
        run.describe("import", IMPORT_TIMEOUT)
    );
    python
}
