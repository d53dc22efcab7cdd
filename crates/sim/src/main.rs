//! `govchain-sim`: runs the PBFT simulator for one seed or a range of seeds.
//!
//! Exit codes: 0 when every run kept every invariant, 1 when one did not
//! (each failing seed is printed with the command that replays it), 2 for
//! a usage error.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use govchain_sim::{Outcome, Overrides, RunOptions, run_seed};

#[derive(Debug, Parser)]
#[command(
    name = "govchain-sim",
    version,
    about = "Deterministic simulator (VOPR) for govchain's PBFT core",
    after_help = "Examples:\n  \
        govchain-sim --seed 42                    # one seed, verbose\n  \
        govchain-sim --seed 42 --trace            # and every event that matters\n  \
        govchain-sim --seed-start 0 --seeds 10000 # a soak; exit 1 on any violation\n\n\
        Without --seed or --seeds, one seed is picked from the clock and printed."
)]
struct Args {
    /// Run this one seed and print its scenario and result (wins over --seeds).
    #[arg(long)]
    seed: Option<u64>,
    /// First seed of a range (with --seeds).
    #[arg(long, default_value_t = 0, env = "GOVCHAIN_SIM_SEED_START")]
    seed_start: u64,
    /// Run this many consecutive seeds.
    #[arg(long, env = "GOVCHAIN_SIM_SEEDS")]
    seeds: Option<u64>,
    /// Cluster sizes; seed s runs validators[s % len] replicas.
    #[arg(long, value_delimiter = ',', default_values_t = govchain_sim::VALIDATORS_DEFAULT)]
    validators: Vec<u32>,
    /// Blocks the clients want during the fault phase (default: drawn from the seed).
    #[arg(long)]
    blocks: Option<u64>,
    /// Hard stop in simulated ms (default: the fault phase plus the liveness bound).
    #[arg(long)]
    max_sim_ms: Option<u64>,
    /// Print every event that matters (single seed).
    #[arg(long)]
    trace: bool,
    /// Worker threads for --seeds (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(bad) = args.validators.iter().find(|n| !(1..=256).contains(*n)) {
        eprintln!("error: --validators takes sizes from 1 to 256, got {bad}");
        return ExitCode::from(2);
    }
    let options = RunOptions {
        validators: args.validators.clone(),
        overrides: Overrides {
            blocks: args.blocks,
            max_sim_ms: args.max_sim_ms,
        },
    };
    match (args.seed, args.seeds) {
        (Some(seed), _) => run_one(seed, &options, args.trace),
        (None, Some(count)) => run_many(args.seed_start, count, &options, args.jobs),
        (None, None) => {
            let seed = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            run_one(seed, &options, args.trace)
        }
    }
}

fn run_one(seed: u64, options: &RunOptions, trace: bool) -> ExitCode {
    println!("{}", options.scenario(seed));
    let outcome = run_seed(seed, options, trace);
    println!("{}", outcome.report.stats);
    for violation in &outcome.report.violations {
        println!("VIOLATION {violation}");
    }
    summary(&[outcome], options)
}

fn run_many(start: u64, count: u64, options: &RunOptions, jobs: Option<usize>) -> ExitCode {
    let jobs = jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let next = AtomicU64::new(0);
    let outcomes = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= count {
                        return;
                    }
                    let outcome = run_seed(start + index, options, false);
                    if !outcome.passed() {
                        print_failure(&outcome, options);
                    }
                    outcomes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(outcome);
                }
            });
        }
    });
    let mut outcomes = outcomes.into_inner().unwrap_or_else(|e| e.into_inner());
    outcomes.sort_by_key(|o| o.seed);
    summary(&outcomes, options)
}

fn print_failure(outcome: &Outcome, options: &RunOptions) {
    let mut text = format!("FAILED {}\n", outcome.scenario);
    for violation in &outcome.report.violations {
        text.push_str(&format!("  VIOLATION {violation}\n"));
    }
    text.push_str(&format!(
        "  replay: {}",
        options.replay_command(outcome.seed)
    ));
    println!("{text}");
}

fn summary(outcomes: &[Outcome], options: &RunOptions) -> ExitCode {
    let blocks: u64 = outcomes.iter().map(|o| o.report.stats.height_max).sum();
    let view_changes: u64 = outcomes.iter().map(|o| o.report.stats.view_changes).sum();
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.passed()).collect();
    let violations: usize = failed.iter().map(|o| o.report.violations.len()).sum();
    // The slowest recovery once faults stopped, to judge the liveness bound.
    let recovery_max_ms = outcomes
        .iter()
        .filter_map(|o| o.report.stats.recovered_after_ms)
        .max()
        .unwrap_or(0);
    println!(
        "seeds={} blocks_committed={blocks} view_changes={view_changes} violations={violations} failing_seeds={} recovery_max={recovery_max_ms}ms",
        outcomes.len(),
        failed.len()
    );
    for outcome in &failed {
        println!("replay: {}", options.replay_command(outcome.seed));
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
