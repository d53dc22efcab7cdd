//! `govchain-sim`, the VOPR for govchain's PBFT core (after TigerBeetle's
//! `src/simulator.zig`): n replicas of the real [`govchain_pbft::Replica`]
//! over a simulated network and clock, driven by one seed.
//!
//! A seed determines everything: message loss, delay, reordering and
//! duplication; partitions that heal; crashes (some torn between two actions
//! of one step) and restarts from the persisted records and chain; up to f
//! Byzantine validators with scripted misbehaviour; and the client workload.
//! The run checks agreement, certificates, single votes and the log bound
//! continuously, and liveness once the faults stop.
//!
//! **Invariant:** a run reads no clock, spawns nothing and iterates no hash
//! map: the same seed gives the same run, event for event.
#![forbid(unsafe_code)]

pub mod adversary;
pub mod app;
pub mod check;
pub mod node;
pub mod rng;
pub mod scenario;
pub mod simulator;
pub mod twin;

use std::panic::{AssertUnwindSafe, catch_unwind};

pub use check::{Violation, ViolationKind};
pub use scenario::{
    Behaviour, Byzantine, Crash, NetworkFaults, Overrides, Partition, Reconfiguration, Scenario,
};
pub use simulator::{Report, Simulator, Stats};

/// Replica counts a seed cycles through by default.
pub const VALIDATORS_DEFAULT: [u32; 3] = [4, 7, 20];

/// What, besides the seed, decides a run. Everything here must appear in a
/// replay command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Seed `s` runs `validators[s % len]` replicas.
    pub validators: Vec<u32>,
    pub overrides: Overrides,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            validators: VALIDATORS_DEFAULT.to_vec(),
            overrides: Overrides::default(),
        }
    }
}

impl RunOptions {
    /// # Panics
    /// If `validators` is empty.
    pub fn replicas(&self, seed: u64) -> u32 {
        assert!(!self.validators.is_empty(), "at least one cluster size");
        let index = usize::try_from(seed % self.validators.len() as u64).expect("index below len");
        self.validators[index]
    }

    pub fn scenario(&self, seed: u64) -> Scenario {
        Scenario::generate(seed, self.replicas(seed), &self.overrides)
    }

    /// The exact command that replays `seed`.
    pub fn replay_command(&self, seed: u64) -> String {
        let mut command = format!("cargo run -p govchain-sim -- --seed {seed}");
        if self.validators != VALIDATORS_DEFAULT {
            let list: Vec<String> = self.validators.iter().map(u32::to_string).collect();
            command.push_str(&format!(" --validators {}", list.join(",")));
        }
        if let Some(blocks) = self.overrides.blocks {
            command.push_str(&format!(" --blocks {blocks}"));
        }
        if let Some(max_sim_ms) = self.overrides.max_sim_ms {
            command.push_str(&format!(" --max-sim-ms {max_sim_ms}"));
        }
        command
    }
}

/// One seed's run.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub seed: u64,
    /// The `SEED=` line with every fault rate.
    pub scenario: String,
    pub report: Report,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.report.violations.is_empty()
    }
}

/// Runs `seed`. A panic (a `pbft` assertion, say) is a violation too.
pub fn run_seed(seed: u64, options: &RunOptions, trace: bool) -> Outcome {
    run_scenario(options.scenario(seed), trace)
}

/// Runs a given (perhaps hand-written) scenario.
pub fn run_scenario(scenario: Scenario, trace: bool) -> Outcome {
    let seed = scenario.seed;
    let line = scenario.to_string();
    let result = catch_unwind(AssertUnwindSafe(|| {
        Simulator::new(scenario).with_trace(trace).run()
    }));
    let report = result.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic without a message".to_owned());
        let violation = Violation {
            at_ms: 0,
            kind: ViolationKind::Panic,
            detail: message,
        };
        Report {
            violations: vec![violation],
            stats: Stats::default(),
        }
    });
    Outcome {
        seed,
        scenario: line,
        report,
    }
}
