//! The event loop: a simulated clock, a network of in-flight messages, and
//! the nodes. Everything happens in order of (time, insertion), so a run
//! depends on nothing but its scenario.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;

use govchain_crypto::Digest;
use govchain_pbft::{
    Action, CommitCertificate, Config, Epoch, Event, Record, ReplicaIndex, SequenceNumber,
    SignedMessage, Transferred, View, check_transferred, verify_commit_certificate,
};

use crate::adversary::{Adversary, Conspiracy, Context, Send};
use crate::app::{Block, batch_digest, block_digest, block_validators, check_block};
use crate::check::{Checker, Violation, ViolationKind};
use crate::node::{CHAIN_ID, DeferredCheck, Entry, LOG_WINDOW_SEQS, Node, Role, key};
use crate::rng::Rng;
use crate::scenario::{NetworkFaults, Scenario, TwinRoute};
use crate::twin::TwinWatch;

/// Every replica gets a `Tick` this often.
pub const TICK_MS: u64 = 10;
/// Events one input may cause at one node (its actions' answers fed back):
/// a bound so that a feedback loop is a reported failure, not a hang.
const STEPS_PER_INPUT_MAX: usize = 10_000;
/// How long a node waits before asking again for a batch it lacks.
const BATCH_ASK_INTERVAL_MS: u64 = 50;
/// A torn crash that finds no step with two actions happens plainly after
/// this long.
const TORN_CRASH_WAIT_MS: u64 = 500;

/// Counters for the summary.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub sim_ms: u64,
    /// Lowest and highest chain height among honest nodes at the end.
    pub height_min: SequenceNumber,
    pub height_max: SequenceNumber,
    /// Highest view an honest node worked in.
    pub view_max: View,
    /// Each honest node's view at the end and whether it works in it
    /// (`false`: it is changing views); `None` for a node that is down.
    pub views_at_end: Vec<Option<(View, bool)>>,
    /// View changes honest nodes started.
    pub view_changes: u64,
    pub messages: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub rejected: u64,
    pub crashes: u64,
    pub transfers: u64,
    pub blocks_transferred: u64,
    /// Corrupted blocks a Byzantine validator served to a node catching up,
    /// which the node's transfer rule (`pbft::check_transferred`) refused.
    pub transfers_refused: u64,
    pub equivocations: u64,
    /// Messages of the twin (the second process with an honest validator's
    /// key) that honest replicas received.
    pub twin_messages: u64,
    /// Slots `(kind, view, seq)` for which honest replicas received one
    /// digest from the twinned validator's original and another from its
    /// twin: the conflicting proposals and votes a twin causes.
    pub twin_conflicts: u64,
    /// When every honest node reached the target after the faults stopped.
    pub recovered_after_ms: Option<u64>,
    /// Blocks a Byzantine primary proposed naming a batch it never sent.
    pub batches_withheld: u64,
    /// Batch requests honest nodes sent for batches a proposal named.
    pub batch_requests: u64,
    /// Batches honest nodes got by asking for them.
    pub batches_fetched: u64,
    /// Replicas that left the validator set.
    pub retired: u64,
    /// Blocks whose commit certificate the validator a reconfiguration
    /// added signed: it caught up and votes.
    pub joiner_certified: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            out,
            "sim={}ms height={}..{} view_max={} view_changes={} messages={} dropped={} duplicated={} rejected={} crashes={} transfers={}({} blocks, {} refused) equivocations={} twin_messages={} twin_conflicts={} recovered_after={} batches_withheld={} batch_requests={} batches_fetched={} retired={} joiner_certified={} views_at_end=[{}]",
            self.sim_ms,
            self.height_min,
            self.height_max,
            self.view_max,
            self.view_changes,
            self.messages,
            self.dropped,
            self.duplicated,
            self.rejected,
            self.crashes,
            self.transfers,
            self.blocks_transferred,
            self.transfers_refused,
            self.equivocations,
            self.twin_messages,
            self.twin_conflicts,
            self.recovered_after_ms
                .map_or("-".to_owned(), |ms| format!("{ms}ms")),
            self.batches_withheld,
            self.batch_requests,
            self.batches_fetched,
            self.retired,
            self.joiner_certified,
            self.views_at_end
                .iter()
                .map(|view| match view {
                    Some((view, true)) => view.to_string(),
                    Some((view, false)) => format!("{view}*"),
                    None => "down".to_owned(),
                })
                .collect::<Vec<_>>()
                .join(" "),
        )
    }
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct Report {
    pub violations: Vec<Violation>,
    pub stats: Stats,
}

enum Happening {
    Tick(usize),
    Message {
        from: usize,
        to: usize,
        message: SignedMessage,
    },
    /// A batch of transactions on its way, forwarded or answering a request.
    Batch {
        to: usize,
        digest: Digest,
        answer: bool,
    },
    /// `from` asks `to` for a batch.
    BatchRequest {
        from: usize,
        to: usize,
        digest: Digest,
    },
    TransferDone {
        node: usize,
        incarnation: u64,
        target: SequenceNumber,
        peers: Vec<ReplicaIndex>,
    },
    Crash {
        node: usize,
        down_ms: u64,
        torn: bool,
    },
    Restart(usize),
    PartitionStart(usize),
    PartitionHeal,
    Calm,
}

struct Scheduled {
    at_ms: u64,
    id: u64,
    happening: Happening,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.id) == (other.at_ms, other.id)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    /// Reversed: the heap pops the earliest, then the first scheduled.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at_ms, other.id).cmp(&(self.at_ms, self.id))
    }
}

pub struct Simulator {
    scenario: Scenario,
    nodes: Vec<Node>,
    queue: BinaryHeap<Scheduled>,
    next_id: u64,
    now_ms: u64,
    network: NetworkFaults,
    groups: Option<Vec<u8>>,
    calm_since_ms: Option<u64>,
    /// The chain height clients want once faults stop.
    calm_target: SequenceNumber,
    checker: Checker,
    conspiracy: Conspiracy,
    twin_watch: TwinWatch,
    victims: Vec<ReplicaIndex>,
    net_rng: Rng,
    fault_rng: Rng,
    stats: Stats,
    trace: bool,
    done: bool,
    liveness_checked_ms: u64,
}

impl Simulator {
    pub fn new(scenario: Scenario) -> Self {
        let faulty = scenario.faulty_identities();
        let mut starts = vec![1];
        if let Some(change) = scenario.reconfiguration {
            starts.extend([change.add_after + 1, change.remove_after + 1]);
        }
        let sets = starts
            .into_iter()
            .map(|start| (start, scenario.set_at(start)))
            .collect();
        let checker = Checker::new(CHAIN_ID, sets, &faulty);
        let mut rng = Rng::new(scenario.seed);
        let nodes = build_nodes(&scenario, &mut rng);
        let joining = scenario.reconfiguration.map(|_| scenario.replicas);
        let victims = (0..scenario.replicas)
            .filter(|i| scenario.behaviour(*i).is_none())
            .chain(joining)
            .collect();
        Self {
            nodes,
            queue: BinaryHeap::new(),
            next_id: 0,
            now_ms: 0,
            network: scenario.network,
            groups: None,
            calm_since_ms: None,
            calm_target: 0,
            checker,
            conspiracy: Conspiracy::default(),
            twin_watch: TwinWatch::default(),
            victims,
            net_rng: rng.fork(),
            fault_rng: rng.fork(),
            stats: Stats::default(),
            trace: false,
            done: false,
            liveness_checked_ms: 0,
            scenario,
        }
    }

    /// Prints what happens, one line per event that matters.
    pub fn with_trace(mut self, trace: bool) -> Self {
        self.trace = trace;
        self
    }

    pub fn run(mut self) -> Report {
        self.schedule_start();
        while let Some(next) = self.queue.pop() {
            if next.at_ms > self.scenario.max_sim_ms {
                let why = match self.calm_since_ms {
                    Some(_) => "the hard stop (max_sim_ms) came first",
                    None => "the hard stop (max_sim_ms) came before the faults stopped",
                };
                self.fail_liveness(why);
                break;
            }
            self.now_ms = next.at_ms;
            self.handle(next.happening);
            if self.done || !self.checker.violations().is_empty() {
                break;
            }
        }
        self.finish()
    }

    fn schedule_start(&mut self) {
        for slot in 0..self.nodes.len() {
            if self.is_silent(slot) {
                continue;
            }
            self.start_or_observe(slot);
            let phase = self.net_rng.below(TICK_MS);
            self.schedule(phase, Happening::Tick(slot));
        }
        for crash in self.scenario.crashes.clone() {
            let happening = Happening::Crash {
                node: crash.node,
                down_ms: crash.down_ms,
                torn: crash.torn,
            };
            self.schedule(crash.at_ms, happening);
        }
        for (index, partition) in self.scenario.partitions.clone().iter().enumerate() {
            self.schedule(partition.start_ms, Happening::PartitionStart(index));
        }
        self.schedule(self.scenario.fault_phase_ms, Happening::Calm);
    }

    fn schedule(&mut self, at_ms: u64, happening: Happening) {
        self.next_id += 1;
        self.queue.push(Scheduled {
            at_ms,
            id: self.next_id,
            happening,
        });
    }

    fn is_silent(&self, slot: usize) -> bool {
        self.nodes[slot]
            .adversary
            .as_ref()
            .is_some_and(|a| a.behaviour.silent)
    }

    /// The replica's configuration for the node's next height.
    fn config(&self, slot: usize) -> Config {
        let identity = self.nodes[slot].identity;
        let next = self.nodes[slot].durable.height() + 1;
        Config {
            chain_id: CHAIN_ID.to_owned(),
            validators: self.scenario.set_at(next),
            epoch_start: self.scenario.epoch_start(next),
            me: identity,
            key: key(identity),
            empty_block_interval_ms: self.scenario.empty_block_interval_ms,
            view_timeout_ms: self.scenario.view_timeout_ms,
            block_digest,
            block_validators,
        }
    }

    /// Starts the node's replica if it is a validator at its next height,
    /// as the real node decides from its ledger; otherwise it follows the
    /// chain as an observer. Returns whether a replica started.
    fn start_or_observe(&mut self, slot: usize) -> bool {
        let next = self.nodes[slot].durable.height() + 1;
        if self
            .scenario
            .set_at(next)
            .contains(self.nodes[slot].identity)
        {
            let config = self.config(slot);
            self.nodes[slot].observer = false;
            self.nodes[slot].start(config);
            true
        } else {
            self.nodes[slot].observer = true;
            false
        }
    }

    /// An observer asks for the blocks honest nodes have beyond its own.
    fn follow(&mut self, slot: usize) {
        let height = self.nodes[slot].durable.height();
        let highest = self.honest_heights().into_iter().max().unwrap_or(0);
        if highest > height {
            self.start_transfer(slot, highest, Vec::new());
        }
    }

    /// A state transfer for `slot` lands after a while, unless one is
    /// already under way.
    fn start_transfer(&mut self, slot: usize, target: SequenceNumber, peers: Vec<ReplicaIndex>) {
        if self.nodes[slot].transfer_in_flight {
            return;
        }
        self.nodes[slot].transfer_in_flight = true;
        self.stats.transfers += 1;
        let incarnation = self.nodes[slot].incarnation;
        let delay = self.net_rng.range(1, self.scenario.transfer_delay_max_ms);
        self.schedule(
            self.now_ms + delay,
            Happening::TransferDone {
                node: slot,
                incarnation,
                target,
                peers,
            },
        );
    }

    fn trace(&self, line: impl FnOnce() -> String) {
        if self.trace {
            println!("{:>7}ms {}", self.now_ms, line());
        }
    }

    fn handle(&mut self, happening: Happening) {
        match happening {
            Happening::Tick(slot) => self.on_tick(slot),
            Happening::Message { from, to, message } => self.on_message(from, to, message),
            Happening::Batch { to, digest, answer } => self.on_batch(to, digest, answer),
            Happening::BatchRequest { from, to, digest } => {
                self.on_batch_request(from, to, digest);
            }
            Happening::TransferDone {
                node,
                incarnation,
                target,
                peers,
            } => {
                self.on_transfer_done(node, incarnation, target, &peers);
            }
            Happening::Crash {
                node,
                down_ms,
                torn,
            } => self.on_crash(node, down_ms, torn),
            Happening::Restart(node) => self.restart(node),
            Happening::PartitionStart(index) => {
                let partition = self.scenario.partitions[index].clone();
                self.trace(|| {
                    format!(
                        "partition {:?} until {}ms",
                        partition.groups, partition.heal_ms
                    )
                });
                self.groups = Some(partition.groups);
                self.schedule(partition.heal_ms, Happening::PartitionHeal);
            }
            Happening::PartitionHeal => {
                self.trace(|| "partition healed".to_owned());
                self.groups = None;
            }
            Happening::Calm => self.on_calm(),
        }
    }

    // ----- workload -----

    /// Blocks clients want at this moment: a steady stream during the
    /// fault phase, then a fixed number more once faults stop.
    fn target(&self) -> SequenceNumber {
        if self.calm_since_ms.is_some() {
            return self.calm_target;
        }
        (self.now_ms / self.scenario.block_interval_ms.max(1)).min(self.scenario.blocks)
    }

    fn pending_for(&self, slot: usize) -> u64 {
        self.target()
            .saturating_sub(self.nodes[slot].durable.height())
    }

    // ----- events -----

    fn on_tick(&mut self, slot: usize) {
        self.schedule(self.now_ms + TICK_MS, Happening::Tick(slot));
        if !self.nodes[slot].is_up() {
            return;
        }
        if let Some((deadline, down_ms)) = self.nodes[slot].torn_crash
            && self.now_ms >= deadline
        {
            return self.crash_now(slot, down_ms);
        }
        if self.nodes[slot].observer {
            self.follow(slot);
        } else {
            self.step_tick(slot);
        }
        if self.now_ms > self.liveness_checked_ms {
            self.liveness_checked_ms = self.now_ms;
            self.check_liveness();
        }
    }

    fn step_tick(&mut self, slot: usize) {
        let pending = self.pending_for(slot);
        if self.nodes[slot].told_pending != Some(pending) {
            self.nodes[slot].told_pending = Some(pending);
            self.step(slot, Event::PendingTransactions { count: pending });
        }
        self.step(
            slot,
            Event::Tick {
                now_ms: self.now_ms,
            },
        );
        self.recheck_waiting(slot);
        if self.nodes[slot].adversary.is_some() && self.nodes[slot].is_up() {
            let sends = self.with_adversary(slot, |adversary, context, conspiracy| {
                adversary.on_tick(context, conspiracy)
            });
            self.send_all(slot, sends);
        }
    }

    fn on_message(&mut self, from: usize, to: usize, message: SignedMessage) {
        if !self.nodes[to].is_up() || !self.reachable(from, to) {
            self.stats.dropped += 1;
            return;
        }
        if let Some(adversary) = self.nodes[to].adversary.as_mut() {
            adversary.on_incoming(&message, &self.victims);
        }
        let sender = self.nodes[from].role;
        if self.nodes[to].is_honest() && matches!(sender, Role::Original | Role::Twin) {
            self.twin_watch.on_received(sender == Role::Twin, &message);
        }
        self.step(to, Event::Message(message));
    }

    fn on_batch(&mut self, to: usize, digest: Digest, answer: bool) {
        if !self.nodes[to].is_up() {
            self.stats.dropped += 1;
            return;
        }
        if self.nodes[to].keep_batch(digest) {
            if answer && self.nodes[to].is_honest() {
                self.stats.batches_fetched += 1;
            }
            self.recheck_waiting(to);
        }
    }

    /// A node answers with a batch it holds; a withholding primary never
    /// held the batch it named.
    fn on_batch_request(&mut self, from: usize, to: usize, digest: Digest) {
        if !self.nodes[to].is_up() || self.is_silent(to) || !self.nodes[to].holds_batch(&digest) {
            return;
        }
        self.transmit(to, from, |to| Happening::Batch {
            to,
            digest,
            answer: true,
        });
    }

    /// Runs the node's next check again if it waits for a batch.
    fn recheck_waiting(&mut self, slot: usize) {
        if !self.nodes[slot].is_up() {
            return;
        }
        let next = self.nodes[slot].durable.height() + 1;
        if !self.nodes[slot].deferred.iter().any(|c| c.seq == next) {
            return;
        }
        for event in self.ready_checks(slot) {
            self.step(slot, event);
        }
    }

    fn on_crash(&mut self, node: usize, down_ms: u64, torn: bool) {
        if self.calm_since_ms.is_some() || !self.nodes[node].is_up() {
            return;
        }
        if torn {
            self.nodes[node].torn_crash = Some((self.now_ms + TORN_CRASH_WAIT_MS, down_ms));
        } else {
            self.crash_now(node, down_ms);
        }
    }

    fn crash_now(&mut self, node: usize, down_ms: u64) {
        self.trace(|| {
            format!(
                "node {node} crashes at height {} for {down_ms}ms",
                self.nodes[node].durable.height()
            )
        });
        self.nodes[node].crash();
        self.stats.crashes += 1;
        self.schedule(self.now_ms + down_ms, Happening::Restart(node));
    }

    fn restart(&mut self, node: usize) {
        if self.nodes[node].is_up() || self.is_silent(node) {
            return;
        }
        let started = self.start_or_observe(node);
        self.trace(|| {
            format!(
                "node {node} restarts at height {}{}",
                self.nodes[node].durable.height(),
                if started { "" } else { " as an observer" }
            )
        });
        if !started {
            return;
        }
        // As the node's driver does: the first event is the clock.
        self.step(
            node,
            Event::Tick {
                now_ms: self.now_ms,
            },
        );
    }

    /// Faults stop: partitions heal, crashed nodes restart, the network
    /// only delays. Byzantine nodes carry on.
    fn on_calm(&mut self) {
        self.calm_since_ms = Some(self.now_ms);
        self.groups = None;
        self.network = self.scenario.network.calm();
        let highest = self.honest_heights().into_iter().max().unwrap_or(0);
        self.calm_target = highest.max(self.scenario.blocks) + self.scenario.calm_blocks;
        self.trace(|| format!("faults stop; target height {}", self.calm_target));
        for node in 0..self.nodes.len() {
            self.nodes[node].torn_crash = None;
            self.restart(node);
        }
    }

    fn honest_heights(&self) -> Vec<SequenceNumber> {
        self.nodes
            .iter()
            .filter(|n| n.is_honest())
            .map(|n| n.durable.height())
            .collect()
    }

    fn check_liveness(&mut self) {
        let Some(calm_since) = self.calm_since_ms else {
            return;
        };
        let target = self.calm_target;
        if self
            .nodes
            .iter()
            .filter(|n| n.is_honest())
            .all(|n| n.durable.height() >= target)
        {
            self.stats.recovered_after_ms = Some(self.now_ms - calm_since);
            self.done = true;
        } else if self.now_ms >= calm_since + self.scenario.liveness_bound_ms {
            self.fail_liveness("the liveness bound passed");
        }
    }

    fn fail_liveness(&mut self, why: &str) {
        let states: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.is_honest())
            .map(|n| match &n.replica {
                Some(r) => format!(
                    "{}:h{}/v{}{}",
                    n.slot,
                    n.durable.height(),
                    r.view(),
                    if r.is_normal() { "" } else { "*" }
                ),
                None if n.observer => format!("{}:h{}/observer", n.slot, n.durable.height()),
                None => format!("{}:h{}/down", n.slot, n.durable.height()),
            })
            .collect();
        let detail = format!(
            "{why}: target height {} not reached by every honest node (node:height/view, * = changing view): {}",
            self.calm_target,
            states.join(" ")
        );
        self.checker
            .fail(self.now_ms, ViolationKind::Liveness, detail);
    }

    // ----- stepping a replica -----

    /// Feeds `event` to the node's replica and carries out its actions in
    /// order, feeding the application's answers back, until it is quiet.
    fn step(&mut self, slot: usize, event: Event) {
        let mut inputs = VecDeque::from([event]);
        let mut steps = 0;
        while let Some(input) = inputs.pop_front() {
            steps += 1;
            assert!(
                steps <= STEPS_PER_INPUT_MAX,
                "node {slot}: more than {STEPS_PER_INPUT_MAX} steps for one input"
            );
            let Some(replica) = self.nodes[slot].replica.as_mut() else {
                return;
            };
            let actions = replica.step(input);
            let log_len = replica.log_len();
            if log_len > LOG_WINDOW_SEQS as usize {
                let detail = format!(
                    "node {slot} holds {log_len} sequence numbers, the window is {LOG_WINDOW_SEQS}"
                );
                self.checker
                    .fail(self.now_ms, ViolationKind::LogUnbounded, detail);
            }
            let cut = self.torn_cut(slot, actions.len());
            for (index, action) in actions.into_iter().enumerate() {
                if cut == Some(index) {
                    let down_ms = self.nodes[slot].torn_crash.map_or(0, |(_, down)| down);
                    self.trace(|| format!("torn crash of node {slot} before action {index}"));
                    return self.crash_now(slot, down_ms);
                }
                self.carry_out(slot, action, &mut inputs);
                if !self.nodes[slot].is_up() {
                    return;
                }
            }
            self.note_view(slot);
        }
    }

    /// Where a pending torn crash cuts this step's actions, if it does.
    fn torn_cut(&mut self, slot: usize, actions: usize) -> Option<usize> {
        if self.nodes[slot].torn_crash.is_none() || actions < 2 {
            return None;
        }
        Some(self.fault_rng.range(1, actions as u64 - 1) as usize)
    }

    fn note_view(&mut self, slot: usize) {
        let node = &mut self.nodes[slot];
        let Some(replica) = &node.replica else { return };
        let now = (replica.view(), replica.is_normal());
        if now == node.seen_view {
            return;
        }
        node.seen_view = now;
        if node.is_honest() && now.1 {
            self.stats.view_max = self.stats.view_max.max(now.0);
        }
        let state = if now.1 { "works in" } else { "moves to" };
        self.trace(|| format!("node {slot} {state} view {}", now.0));
    }

    fn carry_out(&mut self, slot: usize, action: Action, inputs: &mut VecDeque<Event>) {
        match action {
            Action::Broadcast(message) => self.broadcast(slot, message),
            Action::Persist(record) => self.persist(slot, record),
            Action::BuildProposal { view, seq, .. } => {
                inputs.push_back(self.build(slot, view, seq))
            }
            Action::CheckProposal {
                view,
                seq,
                digest,
                block,
                ..
            } => {
                self.nodes[slot].defer_check(DeferredCheck {
                    view,
                    seq,
                    digest,
                    block,
                });
                inputs.extend(self.ready_checks(slot));
            }
            Action::Deliver {
                seq,
                digest,
                block,
                certificate,
            } => {
                self.deliver(slot, seq, digest, block, certificate);
                inputs.extend(self.ready_checks(slot));
                inputs.push_back(self.pending_event(slot));
            }
            Action::StateTransfer { target, peers } => self.start_transfer(slot, target, peers),
            Action::Rejected { .. } => self.stats.rejected += 1,
            Action::Retired { seq } => {
                self.trace(|| format!("node {slot} leaves the validator set at {seq}"));
                self.stats.retired += 1;
                self.nodes[slot].replica = None;
                self.nodes[slot].observer = true;
            }
        }
    }

    fn pending_event(&mut self, slot: usize) -> Event {
        let count = self.pending_for(slot);
        self.nodes[slot].told_pending = Some(count);
        Event::PendingTransactions { count }
    }

    fn persist(&mut self, slot: usize, record: Record) {
        if self.nodes[slot].is_honest() {
            match &record {
                Record::Vote(message) => self.checker.on_signed(self.now_ms, message),
                Record::Accepted { message, .. } if message.sender == self.nodes[slot].identity => {
                    self.checker.on_signed(self.now_ms, message);
                }
                Record::View { normal: false, .. } => self.stats.view_changes += 1,
                _ => {}
            }
        }
        self.nodes[slot].durable.persist(record);
    }

    fn broadcast(&mut self, slot: usize, message: SignedMessage) {
        if self.nodes[slot].is_honest() {
            self.checker.on_signed(self.now_ms, &message);
        }
        let sends = if self.nodes[slot].adversary.is_some() {
            self.with_adversary(slot, |adversary, context, conspiracy| {
                adversary.on_broadcast(context, conspiracy, message)
            })
        } else {
            vec![Send { to: None, message }]
        };
        self.send_all(slot, sends);
    }

    /// The application builds block `seq` on the node's head, or says there
    /// is nothing to build.
    fn build(&mut self, slot: usize, view: View, seq: SequenceNumber) -> Event {
        let node = &self.nodes[slot];
        let height = node.durable.height();
        if seq != height + 1 {
            let detail = format!("node {slot} was asked to build block {seq} on its head {height}");
            self.checker
                .fail(self.now_ms, ViolationKind::Protocol, detail);
            return Event::ProposalSkipped { view, seq };
        }
        let wanted = self.pending_for(slot) > 0 || self.scenario.empty_block_interval_ms > 0;
        if !wanted {
            return Event::ProposalSkipped { view, seq };
        }
        let node = &mut self.nodes[slot];
        node.builds += 1;
        let batch = batch_digest(slot, node.builds);
        let withhold = node
            .adversary
            .as_ref()
            .is_some_and(|a| a.behaviour.withhold_batches);
        let mut block = Block {
            seq,
            parent: node.durable.head_digest(),
            salt: slot as u64,
            counter: node.builds,
            batch,
            validators: self.scenario.change_at(seq),
        };
        if withhold && self.fault_rng.one_in(2) {
            // Named, never sent, never held: nobody can check the block.
            self.stats.batches_withheld += 1;
        } else {
            // The batch goes out before the pre-prepare, though the network
            // may drop or delay it.
            self.nodes[slot].keep_batch(batch);
            self.nodes[slot].keep_batch_durably(batch);
            for to in self.recipients(slot, None) {
                self.transmit(slot, to, |to| Happening::Batch {
                    to,
                    digest: batch,
                    answer: false,
                });
            }
        }
        let node = &mut self.nodes[slot];
        let wrong_parent = node
            .adversary
            .as_ref()
            .is_some_and(|a| a.behaviour.wrong_parent);
        if wrong_parent && self.fault_rng.one_in(2) {
            if self.fault_rng.one_in(2) {
                block.parent = Digest::sha256(&self.fault_rng.next_u64().to_be_bytes());
            } else {
                block.seq += 1;
            }
        }
        let (digest, block) = block.seal();
        Event::ProposalBuilt {
            view,
            seq,
            digest,
            block,
        }
    }

    /// Checks whose parent is applied and whose batch is here. One whose
    /// batch is missing waits, and the batch is asked for from every other
    /// validator (again after [`BATCH_ASK_INTERVAL_MS`]); the check is not
    /// answered until it arrives, so a primary that withholds its batch is
    /// replaced by the view-change timer.
    fn ready_checks(&mut self, slot: usize) -> Vec<Event> {
        let parent = self.nodes[slot].durable.head_digest();
        let ready = self.nodes[slot].ready_checks();
        let (ready, waiting): (Vec<DeferredCheck>, Vec<DeferredCheck>) =
            ready.into_iter().partition(|check| {
                Block::decode(&check.block)
                    .is_none_or(|block| self.nodes[slot].holds_batch(&block.batch))
            });
        for check in waiting {
            let batch = Block::decode(&check.block)
                .expect("only decodable blocks wait")
                .batch;
            self.ask_for_batch(slot, batch);
            self.nodes[slot].defer_check(check);
        }
        ready
            .into_iter()
            .map(|check| {
                let change = self.scenario.change_at(check.seq);
                let verdict = check_block(check.seq, &check.digest, &check.block, &parent, &change);
                if verdict.is_ok()
                    && let Some(block) = Block::decode(&check.block)
                {
                    self.nodes[slot].keep_batch_durably(block.batch);
                }
                Event::ProposalChecked {
                    view: check.view,
                    seq: check.seq,
                    digest: check.digest,
                    verdict,
                }
            })
            .collect()
    }

    fn ask_for_batch(&mut self, slot: usize, batch: Digest) {
        let asked = self.nodes[slot].batches_asked.get(&batch).copied();
        if asked.is_some_and(|at| self.now_ms < at + BATCH_ASK_INTERVAL_MS) {
            return;
        }
        self.nodes[slot].batches_asked.insert(batch, self.now_ms);
        for to in self.recipients(slot, None) {
            if self.nodes[slot].is_honest() {
                self.stats.batch_requests += 1;
            }
            self.transmit(slot, to, |to| Happening::BatchRequest {
                from: slot,
                to,
                digest: batch,
            });
        }
    }

    fn deliver(
        &mut self,
        slot: usize,
        seq: SequenceNumber,
        digest: Digest,
        block: bytes::Bytes,
        certificate: CommitCertificate,
    ) {
        let height = self.nodes[slot].durable.height();
        if seq != height + 1 {
            let detail = format!("node {slot} delivered block {seq} on its head {height}");
            return self
                .checker
                .fail(self.now_ms, ViolationKind::Protocol, detail);
        }
        if let Err(err) = self.verify_entry(slot, seq, &digest, &block, &certificate) {
            return self
                .checker
                .fail(self.now_ms, ViolationKind::BadDelivery, err);
        }
        if self.checker.delivered_at(seq).is_none() {
            let joiner = self
                .scenario
                .reconfiguration
                .map(|_| self.scenario.replicas);
            if joiner.is_some_and(|j| certificate.signatures.iter().any(|(i, _)| *i == j)) {
                self.stats.joiner_certified += 1;
            }
            self.trace(|| {
                format!(
                    "node {slot} delivers block {seq} {} (view {})",
                    digest.short(),
                    certificate.view
                )
            });
        }
        if self.nodes[slot].is_checked() {
            self.checker.on_delivered(self.now_ms, slot, seq, digest);
        }
        self.nodes[slot].durable.append(Entry {
            digest,
            block,
            certificate,
        });
        self.update_heights();
    }

    /// The application's own checks of a block about to be appended: its
    /// certificate, its digest, and that it extends the node's head.
    fn verify_entry(
        &self,
        slot: usize,
        seq: SequenceNumber,
        digest: &Digest,
        block: &[u8],
        certificate: &CommitCertificate,
    ) -> Result<(), String> {
        let validators = self.scenario.set_at(seq);
        verify_commit_certificate(CHAIN_ID, &validators, seq, digest, certificate).map_err(
            |err| {
                format!("node {slot}, block {seq} ({digest}): certificate does not verify: {err}")
            },
        )?;
        let parent = self.nodes[slot].durable.head_digest();
        let byzantine = self.nodes[slot].role == Role::Byzantine;
        match check_block(seq, digest, block, &parent, &self.scenario.change_at(seq)) {
            Err(err) if !byzantine => Err(format!(
                "node {slot} delivered block {seq} ({digest}) that does not check: {err}"
            )),
            _ => Ok(()),
        }
    }

    fn update_heights(&mut self) {
        let heights = self.honest_heights();
        self.stats.height_min = heights.iter().copied().min().unwrap_or(0);
        self.stats.height_max = heights.iter().copied().max().unwrap_or(0);
    }

    // ----- state transfer -----

    fn on_transfer_done(
        &mut self,
        slot: usize,
        incarnation: u64,
        target: SequenceNumber,
        peers: &[ReplicaIndex],
    ) {
        let node = &mut self.nodes[slot];
        if !node.is_up() || node.incarnation != incarnation {
            return;
        }
        node.transfer_in_flight = false;
        let height = node.durable.height();
        let Some(source) = self.transfer_source(slot, target, peers) else {
            return;
        };
        self.byzantine_transfer(slot, source);
        let available = self.nodes[source].durable.height();
        let upto = if self.net_rng.one_in(3) {
            self.net_rng.range(height + 1, available)
        } else {
            available
        };
        let mut last = None;
        for seq in height + 1..=upto {
            let entry = self.nodes[source]
                .durable
                .entry(seq)
                .expect("the source has its chain up to its height")
                .clone();
            if let Err(err) =
                self.verify_entry(slot, seq, &entry.digest, &entry.block, &entry.certificate)
            {
                return self.checker.fail(
                    self.now_ms,
                    ViolationKind::BadDelivery,
                    format!("state transfer from {source}: {err}"),
                );
            }
            if self.nodes[slot].is_checked() {
                self.checker
                    .on_delivered(self.now_ms, slot, seq, entry.digest);
            }
            last = Some(entry.certificate.clone());
            self.nodes[slot].durable.append(entry);
            self.stats.blocks_transferred += 1;
        }
        self.update_heights();
        let Some(certificate) = last else { return };
        self.trace(|| {
            format!(
                "node {slot} copies blocks {}..={upto} from node {source}",
                height + 1
            )
        });
        if self.nodes[slot].observer {
            // A validator from its next height on starts voting now.
            if self.start_or_observe(slot) {
                self.trace(|| format!("node {slot} joins the validator set at {}", upto + 1));
                let mut inputs = vec![Event::Tick {
                    now_ms: self.now_ms,
                }];
                inputs.push(self.pending_event(slot));
                for input in inputs {
                    self.step(slot, input);
                }
            }
            return;
        }
        // The set in force after the copied blocks, if one of them changed it.
        let epoch = (height + 1..=upto)
            .rev()
            .find(|seq| !self.scenario.change_at(*seq).is_empty())
            .map(|seq| Epoch {
                start: seq + 1,
                validators: self.scenario.set_at(seq + 1),
            });
        let mut inputs = vec![Event::StateTransferred { certificate, epoch }];
        inputs.extend(self.ready_checks(slot));
        inputs.push(self.pending_event(slot));
        for input in inputs {
            self.step(slot, input);
        }
    }

    /// Half the time, a Byzantine validator the node can reach answers the
    /// transfer first, with the next block corrupted one of three ways:
    /// other bytes under the block's certificate, a certificate cut below
    /// a quorum, or a block on another parent. The node must refuse it by
    /// `check_transferred`, the rule the real node's sync task applies, and
    /// then fetch from the honest `source` as before; accepting it is a
    /// violation.
    fn byzantine_transfer(&mut self, slot: usize, source: usize) {
        let liars: Vec<usize> = (0..self.nodes.len())
            // A Byzantine node runs an adversary, not a replica: it is
            // there whenever the network lets it be.
            .filter(|s| self.nodes[*s].role == Role::Byzantine && self.reachable(*s, slot))
            .collect();
        if liars.is_empty() || !self.net_rng.one_in(2) {
            return;
        }
        let liar = liars[self.net_rng.index(liars.len())];
        let seq = self.nodes[slot].durable.height() + 1;
        let Some(entry) = self.nodes[source].durable.entry(seq).cloned() else {
            return;
        };
        let Some(mut block) = Block::decode(&entry.block) else {
            return;
        };
        let mut certificate = entry.certificate.clone();
        match self.net_rng.index(3) {
            0 => block.counter ^= 1,
            1 => certificate.signatures.truncate(1),
            _ => block.parent = Digest::sha256(b"another chain"),
        }
        let bytes = block.encode();
        let head = self.nodes[slot].durable.head_digest();
        let validators = self.scenario.set_at(seq);
        let verdict = match block_digest(&bytes) {
            None => Err("malformed".to_owned()),
            Some(digest) => check_transferred(
                CHAIN_ID,
                &validators,
                seq,
                &head,
                Transferred {
                    digest,
                    parent: block.parent,
                    certificate: &certificate,
                },
            )
            .map_err(|err| err.to_string()),
        };
        match verdict {
            Err(reason) => {
                self.stats.transfers_refused += 1;
                self.trace(|| {
                    format!("node {slot} refuses block {seq} from Byzantine node {liar}: {reason}")
                });
            }
            Ok(()) => self.checker.fail(
                self.now_ms,
                ViolationKind::BadDelivery,
                format!("node {slot} accepted a corrupted block {seq} from Byzantine node {liar}"),
            ),
        }
    }

    /// An honest node this one can reach that has more blocks: one of the
    /// named peers that has `target` if possible, else any ahead.
    fn transfer_source(
        &mut self,
        slot: usize,
        target: SequenceNumber,
        peers: &[ReplicaIndex],
    ) -> Option<usize> {
        let height = self.nodes[slot].durable.height();
        let ahead: Vec<usize> = (0..self.nodes.len())
            .filter(|s| {
                *s != slot
                    && self.nodes[*s].is_honest()
                    && self.nodes[*s].is_up()
                    && self.reachable(*s, slot)
            })
            .filter(|s| self.nodes[*s].durable.height() > height)
            .collect();
        let named: Vec<usize> = ahead
            .iter()
            .copied()
            .filter(|s| {
                peers.contains(&self.nodes[*s].identity)
                    && self.nodes[*s].durable.height() >= target
            })
            .collect();
        let pool = if named.is_empty() { ahead } else { named };
        (!pool.is_empty()).then(|| pool[self.net_rng.index(pool.len())])
    }

    // ----- network -----

    fn reachable(&self, from: usize, to: usize) -> bool {
        // A node beyond the partition's groups (the validator that joins)
        // is cut off from everyone while it lasts.
        self.groups
            .as_ref()
            .is_none_or(|groups| groups.get(from).is_some_and(|g| groups.get(to) == Some(g)))
    }

    fn with_adversary(
        &mut self,
        slot: usize,
        act: impl FnOnce(&mut Adversary, &Context<'_>, &mut Conspiracy) -> Vec<Send>,
    ) -> Vec<Send> {
        let Some(mut adversary) = self.nodes[slot].adversary.take() else {
            return Vec::new();
        };
        let node = &self.nodes[slot];
        let (view, normal) = node
            .replica
            .as_ref()
            .map_or((0, false), |r| (r.view(), r.is_normal()));
        let validators = self.scenario.set_at(node.durable.height() + 1);
        let checker = &self.checker;
        let committed = |seq: SequenceNumber| {
            if seq == 0 {
                Some(crate::app::GENESIS_PARENT)
            } else {
                checker.delivered_at(seq)
            }
        };
        let context = Context {
            now_ms: self.now_ms,
            validators: &validators,
            victims: &self.victims,
            view,
            normal,
            last_delivered: node.durable.height(),
            last_certificate: node.durable.last_certificate(),
            committed: &committed,
        };
        let sends = act(&mut adversary, &context, &mut self.conspiracy);
        self.nodes[slot].adversary = Some(adversary);
        self.stats.equivocations = self.conspiracy.len() as u64;
        sends
    }

    fn send_all(&mut self, from: usize, sends: Vec<Send>) {
        for send in sends {
            self.checker.on_wire(self.now_ms, &send.message);
            let recipients = self.recipients(from, send.to.as_deref());
            for to in recipients {
                self.send(from, to, send.message.clone());
            }
        }
    }

    /// The nodes a message from `from` to `identities` (all other validators
    /// when `None`) reaches, routing the duplicated identity per sender.
    fn recipients(&self, from: usize, identities: Option<&[ReplicaIndex]>) -> Vec<usize> {
        let sender = self.nodes[from].identity;
        let route = self
            .scenario
            .twin_routes
            .get(sender as usize)
            .copied()
            .unwrap_or(TwinRoute::Both);
        self.nodes
            .iter()
            .filter(|node| node.identity != sender)
            .filter(|node| identities.is_none_or(|to| to.contains(&node.identity)))
            .filter(|node| {
                !matches!(
                    (node.role, route),
                    (Role::Original, TwinRoute::Twin) | (Role::Twin, TwinRoute::Original)
                )
            })
            .map(|node| node.slot)
            .collect()
    }

    /// Puts `happening` (made for the recipient) on the network from
    /// `from` to `to`, with the same faults as a consensus message.
    fn transmit(&mut self, from: usize, to: usize, happening: impl Fn(usize) -> Happening) {
        self.stats.messages += 1;
        if self.net_rng.chance(self.network.drop_ppm) || !self.reachable(from, to) {
            self.stats.dropped += 1;
            return;
        }
        let copies = if self.net_rng.chance(self.network.duplicate_ppm) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.delay();
            self.schedule(self.now_ms + delay, happening(to));
        }
    }

    fn send(&mut self, from: usize, to: usize, message: SignedMessage) {
        self.stats.messages += 1;
        if self.net_rng.chance(self.network.drop_ppm) {
            self.stats.dropped += 1;
            return;
        }
        let copies = if self.net_rng.chance(self.network.duplicate_ppm) {
            2
        } else {
            1
        };
        self.stats.duplicated += copies - 1;
        for _ in 0..copies {
            let delay = self.delay();
            self.schedule(
                self.now_ms + delay,
                Happening::Message {
                    from,
                    to,
                    message: message.clone(),
                },
            );
        }
    }

    fn delay(&mut self) -> u64 {
        let network = self.network;
        if self.net_rng.chance(network.long_delay_ppm) {
            return self.net_rng.range(
                network.delay_max_ms,
                network.long_delay_max_ms.max(network.delay_max_ms),
            );
        }
        self.net_rng
            .range(network.delay_min_ms, network.delay_max_ms)
    }

    fn finish(mut self) -> Report {
        self.update_heights();
        self.stats.views_at_end = self
            .nodes
            .iter()
            .filter(|n| n.is_honest())
            .map(|n| n.replica.as_ref().map(|r| (r.view(), r.is_normal())))
            .collect();
        self.stats.sim_ms = self.now_ms;
        self.stats.twin_messages = self.twin_watch.twin_messages();
        self.stats.twin_conflicts = self.twin_watch.conflicts();
        Report {
            violations: self.checker.violations().to_vec(),
            stats: self.stats,
        }
    }
}

fn build_nodes(scenario: &Scenario, rng: &mut Rng) -> Vec<Node> {
    let mut nodes: Vec<Node> = (0..scenario.replicas)
        .map(|identity| {
            let slot = identity as usize;
            match scenario.behaviour(identity) {
                Some(behaviour) => {
                    let adversary = Adversary::new(identity, behaviour, rng.fork());
                    Node::new(slot, identity, Role::Byzantine, Some(adversary))
                }
                None if scenario.twin == Some(identity) => {
                    Node::new(slot, identity, Role::Original, None)
                }
                None => Node::new(slot, identity, Role::Honest, None),
            }
        })
        .collect();
    if let Some(identity) = scenario.twin {
        nodes.push(Node::new(nodes.len(), identity, Role::Twin, None));
    }
    if scenario.reconfiguration.is_some() {
        nodes.push(Node::new(
            nodes.len(),
            scenario.replicas,
            Role::Honest,
            None,
        ));
    }
    nodes
}
