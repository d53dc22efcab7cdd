//! Scripted scenarios: each sets up one kind of fault on purpose and checks
//! that the run keeps every invariant (agreement, valid certificates, one
//! vote per slot per honest validator, a bounded log, liveness once the
//! faults stop) and that the fault really happened.

use govchain_sim::{
    Behaviour, Byzantine, Crash, Outcome, Partition, Reconfiguration, RunOptions, Scenario, Stats,
    run_scenario, run_seed,
};

fn assert_clean(outcome: &Outcome) {
    let violations: Vec<String> = outcome
        .report
        .violations
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        outcome.passed(),
        "{}\n{}\n{}",
        outcome.scenario,
        outcome.report.stats,
        violations.join("\n")
    );
}

/// Runs `make` for each of `seeds` and checks every run; returns the stats.
fn run_all(seeds: std::ops::Range<u64>, make: impl Fn(u64) -> Scenario) -> Vec<Stats> {
    seeds
        .map(|seed| {
            let outcome = run_scenario(make(seed), false);
            assert_clean(&outcome);
            outcome.report.stats
        })
        .collect()
}

fn byzantine(identity: u32, behaviour: Behaviour) -> Byzantine {
    Byzantine {
        identity,
        behaviour,
    }
}

fn lossy(mut scenario: Scenario) -> Scenario {
    scenario.network.drop_ppm = 20_000;
    scenario.network.duplicate_ppm = 20_000;
    scenario.network.delay_max_ms = 30;
    scenario
}

const SILENT: Behaviour = Behaviour {
    silent: true,
    equivocate: false,
    double_vote: false,
    forge: false,
    wrong_parent: false,
    withhold_batches: false,
};

#[test]
fn a_silent_primary_is_replaced_and_blocks_go_on() {
    for (replicas, silent) in [(4, vec![0]), (7, vec![0, 1])] {
        let stats = run_all(0..5, |seed| {
            let mut scenario = lossy(Scenario::calm(seed, replicas));
            scenario.byzantine = silent.iter().map(|i| byzantine(*i, SILENT)).collect();
            scenario
        });
        for stats in stats {
            assert!(
                stats.view_max >= silent.len() as u64,
                "a view with a live primary was reached: {stats}"
            );
            assert!(stats.height_min >= 10 + 3, "blocks went on: {stats}");
        }
    }
}

/// A primary whose proposals name batches it never sends (nor serves) is
/// replaced: nobody can check its block, so nobody prepares it, and the
/// view-change timer moves on. Batches the lossy network drops are fetched
/// from other holders. Agreement is checked by every run.
#[test]
fn a_primary_withholding_batches_is_replaced_and_nobody_diverges() {
    let withholder = Behaviour {
        withhold_batches: true,
        ..Behaviour::default()
    };
    for replicas in [4, 7] {
        let stats = run_all(0..5, |seed| {
            let mut scenario = lossy(Scenario::calm(seed, replicas));
            scenario.byzantine = vec![byzantine(0, withholder)];
            scenario
        });
        for stats in &stats {
            assert!(stats.batches_withheld > 0, "a batch was withheld: {stats}");
            assert!(stats.view_max >= 1, "the view changed: {stats}");
            assert!(stats.height_min >= 10 + 3, "blocks went on: {stats}");
        }
        assert!(
            stats.iter().any(|s| s.batches_fetched > 0),
            "a dropped batch was fetched from a holder"
        );
    }
}

#[test]
fn an_equivocating_primary_never_causes_divergence() {
    let attacker = Behaviour {
        equivocate: true,
        double_vote: true,
        ..Behaviour::default()
    };
    let backer = Behaviour {
        double_vote: true,
        ..Behaviour::default()
    };
    let mut equivocations = 0;
    for replicas in [4, 7] {
        let stats = run_all(0..10, |seed| {
            let mut scenario = lossy(Scenario::calm(seed, replicas));
            scenario.byzantine = vec![byzantine(0, attacker)];
            if replicas == 7 {
                // A colluding backup votes for both versions too.
                scenario.byzantine.push(byzantine(3, backer));
            }
            scenario
        });
        equivocations += stats.iter().map(|s| s.equivocations).sum::<u64>();
    }
    assert!(equivocations > 0, "the primary did equivocate");
}

#[test]
fn a_byzantine_primary_proposing_bad_blocks_or_forging_certificates_is_refused() {
    let liar = Behaviour {
        forge: true,
        wrong_parent: true,
        equivocate: true,
        ..Behaviour::default()
    };
    for replicas in [4, 7] {
        let stats = run_all(0..5, |seed| {
            let mut scenario = lossy(Scenario::calm(seed, replicas));
            scenario.byzantine = vec![byzantine(0, liar)];
            if replicas == 7 {
                scenario.byzantine.push(byzantine(
                    4,
                    Behaviour {
                        forge: true,
                        ..Behaviour::default()
                    },
                ));
            }
            scenario
        });
        assert!(
            stats.iter().all(|s| s.rejected > 0),
            "forgeries were sent and refused"
        );
    }
}

#[test]
fn restarted_replicas_never_vote_twice() {
    // Every honest signature is recorded; two digests for one (kind, view,
    // seq) from one honest validator is a `DoubleVote` violation.
    let stats = run_all(0..12, |seed| {
        let replicas = if seed % 2 == 0 { 4 } else { 7 };
        let mut scenario = lossy(Scenario::calm(seed, replicas));
        scenario.blocks = 20;
        scenario.fault_phase_ms = 4_000;
        let honest = replicas as usize;
        scenario.crashes = (0..8)
            .map(|i| Crash {
                node: (i * 3 + seed as usize) % honest,
                at_ms: 150 + 400 * i as u64,
                down_ms: 50 + 90 * i as u64,
                torn: i % 2 == 0,
            })
            .collect();
        // And a power cut of all but one node mid-run.
        scenario.crashes.extend((1..honest).map(|node| Crash {
            node,
            at_ms: 2_100,
            down_ms: 100 * node as u64,
            torn: node % 2 == 1,
        }));
        scenario.crashes.sort_by_key(|c| c.at_ms);
        scenario
    });
    assert!(stats.iter().all(|s| s.crashes >= 8), "the crashes happened");
}

#[test]
fn a_second_process_with_an_honest_validators_key_breaks_nothing() {
    let stats = run_all(0..6, |seed| {
        let replicas = if seed % 2 == 0 { 4 } else { 7 };
        let mut scenario = lossy(Scenario::calm(seed, replicas));
        // Validator 0 is the first primary: its twin proposes other blocks.
        scenario.twin = Some(0);
        scenario.twin_routes = (0..replicas)
            .map(|i| {
                [
                    govchain_sim::scenario::TwinRoute::Both,
                    govchain_sim::scenario::TwinRoute::Twin,
                ][i as usize % 2]
            })
            .collect();
        if replicas == 7 {
            scenario.byzantine = vec![byzantine(
                5,
                Behaviour {
                    double_vote: true,
                    ..Behaviour::default()
                },
            )];
        }
        scenario
    });
    // The twin acted in every run: its messages reached honest replicas,
    // and for some slots they carried another digest than the original's.
    for stats in stats {
        assert!(stats.twin_messages > 0, "the twin was heard: {stats}");
        assert!(
            stats.twin_conflicts > 0,
            "honest replicas received conflicting proposals or votes under the twinned key: {stats}"
        );
    }
}

/// Seven validators; nodes 5 and 6 are cut off while the others commit
/// most of 30 blocks, then the partition heals.
fn minority_cut_off(seed: u64) -> Scenario {
    let mut scenario = lossy(Scenario::calm(seed, 7));
    scenario.blocks = 30;
    scenario.block_interval_ms = 100;
    scenario.fault_phase_ms = 4_500;
    scenario.partitions = vec![Partition {
        start_ms: 300,
        heal_ms: 4_000,
        groups: vec![0, 0, 0, 0, 0, 1, 1],
    }];
    scenario
}

#[test]
fn a_minority_cut_off_catches_up_by_state_transfer_after_the_partition_heals() {
    let stats = run_all(0..4, minority_cut_off);
    assert!(
        stats.iter().all(|s| s.blocks_transferred >= 2 * 20),
        "the minority fetched the blocks: {stats:?}"
    );
}

/// Nodes that catch up ask a Byzantine validator too, which serves them
/// corrupted blocks: every one is refused by the transfer rule the real
/// node applies (`pbft::check_transferred`), and the nodes still catch up
/// from honest ones, with no bad delivery.
#[test]
fn a_byzantine_validator_serving_state_transfer_is_refused() {
    let stats = run_all(0..4, |seed| {
        let mut scenario = minority_cut_off(seed);
        // Node 6 is Byzantine and cut off with node 5, which it then
        // "helps" catch up.
        scenario.byzantine = vec![byzantine(6, SILENT)];
        scenario
    });
    assert!(
        stats.iter().all(|s| s.transfers_refused > 0),
        "the Byzantine validator served corrupted blocks: {stats:?}"
    );
    assert!(
        stats.iter().all(|s| s.blocks_transferred >= 20),
        "the honest node of the minority still fetched the blocks: {stats:?}"
    );
}

#[test]
fn a_seed_replays_exactly() {
    let options = RunOptions::default();
    for seed in [3, 4, 5] {
        let first = run_seed(seed, &options, false);
        let second = run_seed(seed, &options, false);
        assert_eq!(first.scenario, second.scenario);
        assert_eq!(
            format!("{:?}", first.report),
            format!("{:?}", second.report)
        );
    }
}

/// Four validators; the primary of view 0 is cut off while the others
/// change view and go on under load, then the partition heals and its state
/// transfers are slow (up to three view timeouts). Catching up, it must not
/// blame the new primary for the blocks it has yet to fetch: a timeout then
/// would put it alone in a later view, which the others (making progress)
/// never join, and leave it out of every quorum.
fn primary_cut_off_with_slow_transfers(seed: u64) -> Scenario {
    let mut scenario = Scenario::calm(seed, 4);
    scenario.blocks = 80;
    scenario.block_interval_ms = 50;
    scenario.fault_phase_ms = 1_700;
    scenario.calm_blocks = 20;
    scenario.transfer_delay_max_ms = 3 * scenario.view_timeout_ms;
    scenario.partitions = vec![Partition {
        start_ms: 200,
        heal_ms: 1_500,
        groups: vec![1, 0, 0, 0],
    }];
    scenario
}

#[test]
fn a_healed_primary_catching_up_slowly_rejoins_the_view_of_the_others() {
    let stats = run_all(0..20, primary_cut_off_with_slow_transfers);
    for stats in stats {
        assert!(stats.view_max >= 1, "the others changed view: {stats}");
        assert!(
            stats.blocks_transferred > 0,
            "the healed node caught up by transfer: {stats}"
        );
        let first = stats.views_at_end[0];
        assert!(
            first.is_some_and(|(_, normal)| normal)
                && stats.views_at_end.iter().all(|view| *view == first),
            "every node works in one view at the end: {stats}"
        );
    }
}

#[test]
fn a_validator_joins_votes_and_another_leaves_while_the_chain_goes_on() {
    // 4 validators; block 3 adds validator 4, block 8 removes validator 0
    // (the primary of view 0): f stays 1 throughout.
    let stats = run_all(0..40, |seed| {
        let mut scenario = lossy(Scenario::calm(seed, 4));
        scenario.blocks = 14;
        scenario.reconfiguration = Some(Reconfiguration {
            add_after: 3,
            remove_after: 8,
            removed: 0,
        });
        scenario
    });
    for stats in &stats {
        assert_eq!(stats.retired, 1, "{stats}");
        // The new validator's signatures are in commit certificates.
        assert!(stats.joiner_certified > 0, "{stats}");
        assert!(stats.height_min >= 14, "{stats}");
    }
}

#[test]
fn reconfiguration_survives_a_byzantine_validator_and_crashes() {
    // 7 validators, one equivocating; validator 7 joins after block 2 and
    // an honest validator that crashes meanwhile is removed after block 5.
    let stats = run_all(0..30, |seed| {
        let mut scenario = lossy(Scenario::calm(seed, 7));
        scenario.blocks = 10;
        scenario.byzantine = vec![byzantine(
            2,
            Behaviour {
                equivocate: true,
                double_vote: true,
                ..Behaviour::default()
            },
        )];
        scenario.crashes = vec![Crash {
            node: 5,
            at_ms: 150,
            down_ms: 600,
            torn: seed % 2 == 0,
        }];
        scenario.reconfiguration = Some(Reconfiguration {
            add_after: 2,
            remove_after: 5,
            removed: 5,
        });
        scenario
    });
    assert!(stats.iter().any(|s| s.joiner_certified > 0));
    assert!(stats.iter().all(|s| s.retired >= 1));
}
