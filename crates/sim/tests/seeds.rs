//! The VOPR over thousands of consecutive seeds, on every core.
//!
//! `GOVCHAIN_SIM_SEEDS` overrides how many (the binary, `govchain-sim
//! --seeds N`, is the tool for long soaks) and `GOVCHAIN_SIM_SEED_START`
//! where they start. Every failing seed is printed with the command that
//! replays it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use govchain_sim::{Outcome, RunOptions, run_seed};

/// At least 2,000, and a multiple of the cluster sizes cycled through.
const SEEDS_DEFAULT: u64 = 2_001;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {text:?}")),
        Err(_) => default,
    }
}

#[test]
fn every_seed_keeps_agreement_certificates_single_votes_and_liveness() {
    let count = env_u64("GOVCHAIN_SIM_SEEDS", SEEDS_DEFAULT);
    let start = env_u64("GOVCHAIN_SIM_SEED_START", 0);
    let options = RunOptions::default();
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = AtomicU64::new(0);
    let failures: Mutex<Vec<Outcome>> = Mutex::new(Vec::new());
    let totals = Mutex::new((0u64, 0u64));
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= count {
                        return;
                    }
                    let outcome = run_seed(start + index, &options, false);
                    if let Ok(mut totals) = totals.lock() {
                        totals.0 += outcome.report.stats.height_max;
                        totals.1 += outcome.report.stats.view_changes;
                    }
                    if !outcome.passed()
                        && let Ok(mut failures) = failures.lock()
                    {
                        failures.push(outcome);
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    failures.sort_by_key(|o| o.seed);
    let (blocks, view_changes) = totals.into_inner().unwrap_or_else(|e| e.into_inner());
    println!(
        "seeds={count} blocks_committed={blocks} view_changes={view_changes} failing_seeds={}",
        failures.len()
    );
    let report: Vec<String> = failures
        .iter()
        .map(|outcome| {
            let violations: Vec<String> = outcome
                .report
                .violations
                .iter()
                .map(|v| format!("  VIOLATION {v}"))
                .collect();
            format!(
                "FAILED {}\n{}\n  replay: {}",
                outcome.scenario,
                violations.join("\n"),
                options.replay_command(outcome.seed)
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {count} seeds failed:\n{}",
        failures.len(),
        report.join("\n")
    );
}
