//! What a run does, drawn from its seed: fault rates, the crash and
//! partition schedule, which validators are Byzantine and how.

use std::fmt;

use govchain_pbft::{ReplicaIndex, SequenceNumber, ValidatorSet};

use crate::app::validator_set_of;
use crate::rng::{PPM, Rng};

/// What a Byzantine validator does. It runs the real `pbft` replica with its
/// own key and mutates, duplicates or adds to what that replica sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Behaviour {
    /// Sends nothing at all.
    pub silent: bool,
    /// As primary: different pre-prepares for one sequence number to
    /// different replicas, different (valid) new-view messages built from
    /// different quorums of view changes, and pre-prepares below the floor
    /// its new-view message set.
    pub equivocate: bool,
    /// Prepares and commits for two digests of one `(view, seq)`, split
    /// across the replicas the same way as a fellow primary's equivocation.
    pub double_vote: bool,
    /// Forged or short commit certificates and prepared certificates in view
    /// changes, invalid new-view messages, inflated checkpoints.
    pub forge: bool,
    /// Proposes blocks whose parent (or height) is wrong.
    pub wrong_parent: bool,
    /// As primary: proposes blocks naming a batch it never sends and never
    /// serves when asked.
    pub withhold_batches: bool,
}

impl fmt::Display for Behaviour {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (self.silent, "silent"),
            (self.equivocate, "equivocate"),
            (self.double_vote, "double-vote"),
            (self.forge, "forge"),
            (self.wrong_parent, "wrong-parent"),
            (self.withhold_batches, "withhold-batches"),
        ];
        let on: Vec<&str> = names
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| *name)
            .collect();
        if on.is_empty() {
            write!(out, "honest-code")
        } else {
            write!(out, "{}", on.join("+"))
        }
    }
}

/// A Byzantine validator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Byzantine {
    pub identity: ReplicaIndex,
    pub behaviour: Behaviour,
}

/// Message faults. Reordering follows from independent delays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkFaults {
    pub drop_ppm: u32,
    pub duplicate_ppm: u32,
    pub delay_min_ms: u64,
    pub delay_max_ms: u64,
    /// A message is occasionally held much longer, up to `long_delay_max_ms`.
    pub long_delay_ppm: u32,
    pub long_delay_max_ms: u64,
}

impl NetworkFaults {
    /// Delays only: what the network does once faults stop.
    pub fn calm(&self) -> Self {
        Self {
            drop_ppm: 0,
            duplicate_ppm: 0,
            long_delay_ppm: 0,
            ..*self
        }
    }
}

/// Nodes split into groups that cannot reach each other, from `start_ms`
/// until `heal_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub start_ms: u64,
    pub heal_ms: u64,
    /// Group of each node (indexed like the simulator's nodes).
    pub groups: Vec<u8>,
}

/// An honest node stops at `at_ms` (losing everything not persisted) and
/// restarts `down_ms` later. A `torn` crash happens part way through the
/// actions of one step, between two of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crash {
    pub node: usize,
    pub at_ms: u64,
    pub down_ms: u64,
    pub torn: bool,
}

/// Where peers' messages to the duplicated identity go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TwinRoute {
    Original,
    Twin,
    Both,
}

/// One run, fully determined by `seed` (and the replica count).
/// Membership changes during a run: block `add_after` adds a new validator
/// (identity `replicas`, a node that starts as an observer and catches up),
/// and block `remove_after` removes `removed`. n is back to `replicas` at
/// the end, so f is the same in all three sets and the faulty identities
/// stay within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reconfiguration {
    pub add_after: SequenceNumber,
    pub remove_after: SequenceNumber,
    pub removed: ReplicaIndex,
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub seed: u64,
    pub replicas: u32,
    pub byzantine: Vec<Byzantine>,
    /// An honest validator whose key a second node also runs with. The
    /// identity then counts as one of the f faulty ones.
    pub twin: Option<ReplicaIndex>,
    /// Per sending validator, which instance of `twin` its messages reach.
    pub twin_routes: Vec<TwinRoute>,
    pub network: NetworkFaults,
    pub partitions: Vec<Partition>,
    pub crashes: Vec<Crash>,
    pub view_timeout_ms: u64,
    pub empty_block_interval_ms: u64,
    /// Blocks the clients want during the fault phase, one every
    /// `block_interval_ms`.
    pub blocks: u64,
    pub block_interval_ms: u64,
    /// Faults happen before this time; then partitions heal, crashed nodes
    /// restart and the network stops dropping (Byzantine nodes go on).
    pub fault_phase_ms: u64,
    /// After the faults stop, clients want this many more blocks than the
    /// highest honest height, and every honest node must deliver them
    /// within `liveness_bound_ms`.
    pub calm_blocks: u64,
    pub liveness_bound_ms: u64,
    /// A state transfer takes up to this long.
    pub transfer_delay_max_ms: u64,
    /// Hard stop, whatever happens.
    pub max_sim_ms: u64,
    pub reconfiguration: Option<Reconfiguration>,
}

/// Overrides from the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub blocks: Option<u64>,
    pub max_sim_ms: Option<u64>,
}

/// 20 validators cost ~25 times more signature checks per block than 4:
/// their runs are shorter and calmer so a seed stays cheap.
const LARGE_CLUSTER: u32 = 10;

impl Scenario {
    /// Draws a scenario for `replicas` validators from `seed`.
    pub fn generate(seed: u64, replicas: u32, overrides: &Overrides) -> Self {
        assert!(replicas >= 1, "a cluster needs a validator");
        let mut rng = Rng::new(seed ^ 0x005E_ED0F_600C_4A1E);
        let large = replicas >= LARGE_CLUSTER;
        let f = (replicas - 1) / 3;
        // Large clusters retransmit less often (a quarter of the timeout):
        // each re-sent view change costs every receiver ~2q signature checks.
        let view_timeout_ms = if large {
            [800, 1_000][rng.index(2)]
        } else {
            [300, 500, 800, 1_000][rng.index(4)]
        };
        // Cost grows with n^2 (every replica checks every replica's votes,
        // 63 us each in the dev profile), so bigger clusters run shorter:
        // at most 10 s and 25 blocks for 4 replicas, 2 s and 5 for 20.
        let fault_phase_ms = rng.range(1_000, (40_000 / u64::from(replicas)).max(1_500));
        let blocks = overrides
            .blocks
            .unwrap_or_else(|| rng.range(2, (100 / u64::from(replicas)).max(3)));
        let block_interval_ms = rng.range(20, (fault_phase_ms / blocks.max(1)).max(20));
        let network = network_faults(&mut rng, large);
        let (byzantine, twin) = adversaries(&mut rng, replicas, f, large);
        let nodes = replicas as usize + usize::from(twin.is_some());
        let twin_routes = (0..replicas)
            .map(|_| [TwinRoute::Original, TwinRoute::Twin, TwinRoute::Both][rng.index(3)])
            .collect();
        let partitions = partitions(&mut rng, nodes, fault_phase_ms, large);
        let honest: Vec<usize> = (0..replicas as usize)
            .filter(|i| !byzantine.iter().any(|b| b.identity as usize == *i))
            .collect();
        let crashes = crashes(&mut rng, &honest, fault_phase_ms, large);
        let empty_block_interval_ms = if rng.one_in(5) {
            rng.range(200, 1_000)
        } else {
            0
        };
        let calm_blocks = if large { 2 } else { rng.range(3, 6) };
        // Time for the worst expected recovery: views that failed during the
        // faults doubled their timeouts (up to 64 times), and up to f
        // Byzantine primaries in a row each cost a timeout.
        let liveness_bound_ms = 60 * view_timeout_ms + 10_000;
        let max_sim_ms = overrides
            .max_sim_ms
            .unwrap_or(fault_phase_ms + liveness_bound_ms + 1_000);
        let transfer_delay_max_ms = rng.range(5, 200);
        // Drawn last, so that the rest of a seed's scenario is what it was
        // before reconfiguration existed.
        let reconfiguration = reconfiguration(&mut rng, replicas, blocks, twin, large);
        Self {
            seed,
            replicas,
            byzantine,
            twin,
            twin_routes,
            network,
            partitions,
            crashes,
            view_timeout_ms,
            empty_block_interval_ms,
            blocks,
            block_interval_ms,
            fault_phase_ms,
            calm_blocks,
            liveness_bound_ms,
            transfer_delay_max_ms,
            max_sim_ms,
            reconfiguration,
        }
    }

    /// A scenario without any fault, for scripted tests to add to.
    pub fn calm(seed: u64, replicas: u32) -> Self {
        Self {
            seed,
            replicas,
            byzantine: Vec::new(),
            twin: None,
            twin_routes: vec![TwinRoute::Both; replicas as usize],
            network: NetworkFaults {
                drop_ppm: 0,
                duplicate_ppm: 0,
                delay_min_ms: 1,
                delay_max_ms: 20,
                long_delay_ppm: 0,
                long_delay_max_ms: 0,
            },
            partitions: Vec::new(),
            crashes: Vec::new(),
            view_timeout_ms: 500,
            empty_block_interval_ms: 0,
            blocks: 10,
            block_interval_ms: 50,
            fault_phase_ms: 2_000,
            calm_blocks: 3,
            liveness_bound_ms: 30_000,
            transfer_delay_max_ms: 50,
            max_sim_ms: 60_000,
            reconfiguration: None,
        }
    }

    /// f, the number of faulty validators tolerated.
    pub fn faults_tolerated(&self) -> u32 {
        (self.replicas - 1) / 3
    }

    /// Validators that are not correct: the Byzantine ones and the
    /// duplicated identity.
    pub fn faulty_identities(&self) -> Vec<ReplicaIndex> {
        let mut faulty: Vec<ReplicaIndex> = self.byzantine.iter().map(|b| b.identity).collect();
        faulty.extend(self.twin);
        faulty.sort_unstable();
        faulty.dedup();
        faulty
    }

    /// Number of simulated nodes: one per validator, plus the twin and the
    /// validator a reconfiguration adds.
    pub fn nodes(&self) -> usize {
        self.replicas as usize
            + usize::from(self.twin.is_some())
            + usize::from(self.reconfiguration.is_some())
    }

    /// The validators in force at height `seq`, by identity.
    pub fn members_at(&self, seq: SequenceNumber) -> Vec<ReplicaIndex> {
        let mut members: Vec<ReplicaIndex> = (0..self.replicas).collect();
        if let Some(change) = self.reconfiguration {
            if seq > change.add_after {
                members.push(self.replicas);
            }
            if seq > change.remove_after {
                members.retain(|identity| *identity != change.removed);
            }
        }
        members
    }

    /// The first height of the set in force at `seq`.
    pub fn epoch_start(&self, seq: SequenceNumber) -> SequenceNumber {
        let mut start = 1;
        if let Some(change) = self.reconfiguration {
            for after in [change.add_after, change.remove_after] {
                if seq > after {
                    start = start.max(after + 1);
                }
            }
        }
        start
    }

    /// The set in force at `seq`.
    pub fn set_at(&self, seq: SequenceNumber) -> ValidatorSet {
        validator_set_of(&self.members_at(seq)).expect("distinct seeded keys")
    }

    /// What execution of block `seq` does to the set: the members from
    /// `seq + 1` if it changes them, else nothing.
    pub fn change_at(&self, seq: SequenceNumber) -> Vec<ReplicaIndex> {
        match self.reconfiguration {
            Some(change) if seq == change.add_after || seq == change.remove_after => {
                self.members_at(seq + 1)
            }
            _ => Vec::new(),
        }
    }

    pub fn behaviour(&self, identity: ReplicaIndex) -> Option<Behaviour> {
        self.byzantine
            .iter()
            .find(|b| b.identity == identity)
            .map(|b| b.behaviour)
    }
}

/// One seed in three of a small cluster adds a validator and then removes
/// one (never the twin's identity, whose two processes would retire
/// apart). Large clusters skip it: their runs are kept short.
fn reconfiguration(
    rng: &mut Rng,
    replicas: u32,
    blocks: u64,
    twin: Option<ReplicaIndex>,
    large: bool,
) -> Option<Reconfiguration> {
    if large || replicas < 4 || blocks < 2 || !rng.one_in(3) {
        return None;
    }
    let add_after = rng.range(1, blocks - 1);
    let remove_after = rng.range(add_after + 1, blocks);
    let candidates: Vec<ReplicaIndex> = (0..replicas).filter(|i| Some(*i) != twin).collect();
    let removed = candidates[rng.index(candidates.len())];
    Some(Reconfiguration {
        add_after,
        remove_after,
        removed,
    })
}

fn network_faults(rng: &mut Rng, large: bool) -> NetworkFaults {
    // One seed in eight has a perfect network in that respect.
    let mut rate = |max_ppm: u32| {
        if rng.one_in(8) {
            0
        } else {
            rng.range(0, u64::from(max_ppm)) as u32
        }
    };
    let drop_ppm = rate(if large { 30_000 } else { 100_000 });
    let duplicate_ppm = rate(50_000);
    let long_delay_ppm = rate(if large { 5_000 } else { 20_000 });
    NetworkFaults {
        drop_ppm,
        duplicate_ppm,
        delay_min_ms: 1,
        delay_max_ms: rng.range(5, 50),
        long_delay_ppm,
        long_delay_max_ms: rng.range(100, 2_500),
    }
}

fn adversaries(
    rng: &mut Rng,
    replicas: u32,
    f: u32,
    large: bool,
) -> (Vec<Byzantine>, Option<ReplicaIndex>) {
    let budget = if large { f.min(3) } else { f };
    let faulty = if budget == 0 {
        0
    } else {
        rng.range(0, u64::from(budget)) as u32
    };
    let mut identities: Vec<ReplicaIndex> = (0..replicas).collect();
    rng.shuffle(&mut identities);
    identities.truncate(faulty as usize);
    let twin = if faulty > 0 && rng.one_in(4) {
        identities.pop()
    } else {
        None
    };
    let byzantine = identities
        .into_iter()
        .map(|identity| Byzantine {
            identity,
            behaviour: behaviour(rng),
        })
        .collect();
    (byzantine, twin)
}

fn behaviour(rng: &mut Rng) -> Behaviour {
    if rng.one_in(4) {
        return Behaviour {
            silent: true,
            ..Behaviour::default()
        };
    }
    let mut behaviour = Behaviour {
        silent: false,
        equivocate: rng.one_in(2),
        double_vote: rng.one_in(2),
        forge: rng.one_in(2),
        wrong_parent: rng.one_in(3),
        withhold_batches: rng.one_in(3),
    };
    if behaviour == Behaviour::default() {
        behaviour.equivocate = true;
        behaviour.double_vote = true;
    }
    behaviour
}

fn partitions(rng: &mut Rng, nodes: usize, fault_phase_ms: u64, large: bool) -> Vec<Partition> {
    let count = rng.range(0, if large { 1 } else { 3 });
    let mut partitions = Vec::new();
    let mut at = 0;
    for _ in 0..count {
        let start_ms = at + rng.range(100, fault_phase_ms / 2);
        if start_ms >= fault_phase_ms {
            break;
        }
        let longest = match (large, rng.one_in(6)) {
            (true, _) => 1_500,
            (false, true) => 15_000,
            (false, false) => 4_000,
        };
        let heal_ms = (start_ms + rng.range(100, longest)).min(fault_phase_ms);
        partitions.push(Partition {
            start_ms,
            heal_ms,
            groups: split(rng, nodes),
        });
        at = heal_ms;
    }
    partitions
}

/// Either one random minority cut off, or every node in one of up to three
/// groups at random.
fn split(rng: &mut Rng, nodes: usize) -> Vec<u8> {
    if rng.one_in(2) {
        let mut order: Vec<usize> = (0..nodes).collect();
        rng.shuffle(&mut order);
        let cut = rng.range(1, (nodes as u64 / 2).max(1)) as usize;
        let mut groups = vec![0; nodes];
        for node in &order[..cut] {
            groups[*node] = 1;
        }
        groups
    } else {
        let count = rng.range(2, 3);
        (0..nodes).map(|_| rng.below(count) as u8).collect()
    }
}

fn crashes(rng: &mut Rng, honest: &[usize], fault_phase_ms: u64, large: bool) -> Vec<Crash> {
    if honest.is_empty() {
        return Vec::new();
    }
    let most = if large { 3 } else { honest.len().min(6) as u64 };
    let count = rng.range(0, most);
    let mut crashes = Vec::new();
    for _ in 0..count {
        let node = honest[rng.index(honest.len())];
        let at_ms = rng.range(50, fault_phase_ms);
        crashes.push(crash(rng, node, at_ms));
    }
    // A power cut: several nodes at the same moment, back at different times.
    if rng.one_in(4) {
        let mut struck = honest.to_vec();
        rng.shuffle(&mut struck);
        struck.truncate(rng.range(2.min(honest.len() as u64), honest.len() as u64) as usize);
        let at_ms = rng.range(50, fault_phase_ms);
        crashes.extend(struck.into_iter().map(|node| crash(rng, node, at_ms)));
    }
    crashes.sort_by_key(|c| (c.at_ms, c.node));
    crashes
}

fn crash(rng: &mut Rng, node: usize, at_ms: u64) -> Crash {
    Crash {
        node,
        at_ms,
        down_ms: rng.range(20, 3_000),
        torn: rng.one_in(2),
    }
}

fn ppm(value: u32) -> String {
    format!("{:.4}", f64::from(value) / f64::from(PPM))
}

impl fmt::Display for Scenario {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = &self.network;
        write!(
            out,
            "SEED={} replicas={} f={}",
            self.seed,
            self.replicas,
            self.faults_tolerated()
        )?;
        let byzantine: Vec<String> = self
            .byzantine
            .iter()
            .map(|b| format!("{}:{}", b.identity, b.behaviour))
            .collect();
        write!(out, " byzantine=[{}]", byzantine.join(","))?;
        match self.twin {
            Some(identity) => write!(out, " twin={identity}")?,
            None => write!(out, " twin=none")?,
        }
        write!(
            out,
            " drop={} dup={} delay={}..{}ms long={}@..{}ms",
            ppm(n.drop_ppm),
            ppm(n.duplicate_ppm),
            n.delay_min_ms,
            n.delay_max_ms,
            ppm(n.long_delay_ppm),
            n.long_delay_max_ms
        )?;
        let partitions: Vec<String> = self
            .partitions
            .iter()
            .map(|p| format!("{}..{}ms", p.start_ms, p.heal_ms))
            .collect();
        write!(out, " partitions=[{}]", partitions.join(","))?;
        let crashes: Vec<String> = self
            .crashes
            .iter()
            .map(|c| {
                format!(
                    "{}@{}+{}ms{}",
                    c.node,
                    c.at_ms,
                    c.down_ms,
                    if c.torn { "/torn" } else { "" }
                )
            })
            .collect();
        write!(out, " crashes=[{}]", crashes.join(","))?;
        write!(
            out,
            " view_timeout={}ms empty_blocks={}ms blocks={} every={}ms transfer<={}ms faults_until={}ms calm_blocks={} liveness_bound={}ms max_sim={}ms",
            self.view_timeout_ms,
            self.empty_block_interval_ms,
            self.blocks,
            self.block_interval_ms,
            self.transfer_delay_max_ms,
            self.fault_phase_ms,
            self.calm_blocks,
            self.liveness_bound_ms,
            self.max_sim_ms
        )?;
        match self.reconfiguration {
            Some(change) => write!(
                out,
                " reconfigure=add:{}@{},remove:{}@{}",
                self.replicas, change.add_after, change.removed, change.remove_after
            ),
            None => write!(out, " reconfigure=none"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_within_f() {
        for seed in 0..500 {
            for n in [4, 7, 20] {
                let a = Scenario::generate(seed, n, &Overrides::default());
                let b = Scenario::generate(seed, n, &Overrides::default());
                assert_eq!(a.to_string(), b.to_string());
                assert!(a.faulty_identities().len() as u32 <= a.faults_tolerated());
                // Every set in force keeps the faulty identities within its f.
                for seq in 1..=a.blocks + 1 {
                    let set = a.set_at(seq);
                    let faulty = a
                        .faulty_identities()
                        .into_iter()
                        .filter(|i| set.contains(*i))
                        .count() as u32;
                    assert!(faulty <= set.faults_tolerated(), "{a}");
                    assert!(a.epoch_start(seq) <= seq);
                }
                assert!(
                    a.crashes
                        .iter()
                        .all(|c| a.behaviour(c.node as u32).is_none())
                );
            }
        }
    }
}
