//! The PBFT state machine at work: a fault-free simulator run of 4 and 7
//! replicas (real `Replica::step`, Ed25519 signing and checking of every
//! vote, simulated network and clock). Throughput counts the consensus
//! messages delivered, each one `Replica::step` on the receiver.

use criterion::{BenchmarkId, Criterion, Throughput};
use govchain_sim::{Scenario, Simulator};

use crate::fixtures::measuring;

const REPLICA_COUNTS: [u32; 2] = [4, 7];

pub fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("pbft_sim");
    group.sample_size(10);
    let blocks = if measuring() { 50 } else { 3 };
    for replicas in REPLICA_COUNTS {
        let scenario = scenario(replicas, blocks);
        // The run is deterministic, so one run tells how many messages
        // every run handles.
        let report = Simulator::new(scenario.clone()).run();
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        group.throughput(Throughput::Elements(report.stats.messages));
        let id = BenchmarkId::new(format!("{replicas}_replicas"), format!("{blocks}_blocks"));
        group.bench_function(id, |b| {
            b.iter(|| Simulator::new(scenario.clone()).run().stats.messages)
        });
    }
    group.finish();
}

/// Blocks requested back to back, so that the run is consensus work rather
/// than idle ticks.
fn scenario(replicas: u32, blocks: u64) -> Scenario {
    let mut scenario = Scenario::calm(1, replicas);
    scenario.blocks = blocks;
    scenario.block_interval_ms = 10;
    scenario.fault_phase_ms = blocks * scenario.block_interval_ms;
    scenario
}
