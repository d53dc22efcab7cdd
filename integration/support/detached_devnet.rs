//! A detached `govchain devnet` (four validators on ports chosen at run
//! time) for the generated-client tests (`python_client.rs`,
//! `typescript_client.rs`), stopped when dropped so that a failed assertion
//! leaves no nodes running. Uses `bounded.rs`, which the test declares as
//! the module `bounded` beside this one.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::bounded::run_bounded;

const BIN: &str = env!("CARGO_BIN_EXE_govchain");
const DEVNET_START_TIMEOUT: Duration = Duration::from_secs(180);
const DEVNET_STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// The devnet's departments, one validator each.
const DEPARTMENTS: [&str; 4] = ["health", "tax", "police", "civil"];
/// Lines of each node's log in a failure message.
const LOG_TAIL_LINES: usize = 15;

pub struct Devnet {
    /// The devnet directory: `devnet.json`, `certs/`, `nodes/<name>/`.
    pub dir: PathBuf,
    logs: PathBuf,
}

impl Devnet {
    /// Starts the devnet in `dir`, with the command's output in
    /// `logs/devnet.log`.
    pub fn start(dir: PathBuf, logs: PathBuf) -> Self {
        let mut command = Command::new(BIN);
        command
            .args([
                "devnet",
                "--validators",
                "4",
                "--base-port",
                "0",
                "--detach",
            ])
            .arg("--dir")
            .arg(&dir);
        let run = run_bounded(command, &logs.join("devnet.log"), DEVNET_START_TIMEOUT);
        // Guard first: a start that failed halfway may have left nodes.
        let devnet = Self { dir, logs };
        assert!(
            run.success(),
            "{}",
            run.describe("govchain devnet", DEVNET_START_TIMEOUT)
        );
        devnet
    }

    /// The last lines of each node's log, for a failure message.
    pub fn node_logs(&self) -> String {
        let mut text = String::new();
        for name in DEPARTMENTS {
            let log = self.dir.join("nodes").join(name).join("node.log");
            let content = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = content.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            text.push_str(&format!("--- {name} ({})\n", log.display()));
            for line in tail {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let mut command = Command::new(BIN);
        command.args(["devnet", "stop", "--dir"]).arg(&self.dir);
        let run = run_bounded(command, &self.logs.join("stop.log"), DEVNET_STOP_TIMEOUT);
        if !run.success() {
            eprintln!(
                "{}",
                run.describe("govchain devnet stop", DEVNET_STOP_TIMEOUT)
            );
        }
    }
}
