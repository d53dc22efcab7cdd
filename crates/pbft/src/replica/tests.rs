//! An in-memory harness: n replicas, a message queue delivered in a seeded
//! random order, and a fake application that builds and checks blocks.

use std::collections::VecDeque;

use super::*;

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const CHAIN: &str = "test-chain";

fn key(i: u32) -> SigningKey {
    let mut seed = [7u8; 32];
    seed[..4].copy_from_slice(&i.to_be_bytes());
    SigningKey::from_seed(seed)
}

fn validators(n: u32) -> ValidatorSet {
    ValidatorSet::new((0..n).map(|i| key(i).public_key()).collect()).expect("valid")
}

fn sha256_digest(block: &[u8]) -> Option<Digest> {
    Some(Digest::sha256(block))
}

fn config(n: u32, me: u32, empty_block_interval_ms: u64) -> Config {
    Config {
        chain_id: CHAIN.into(),
        validators: validators(n),
        me,
        key: key(me),
        empty_block_interval_ms,
        view_timeout_ms: 1_000,
        block_digest: sha256_digest,
        epoch_start: 1,
        block_validators: |_| None,
    }
}

fn replica_with(n: u32, me: u32, empty_block_interval_ms: u64) -> Replica {
    Replica::new(
        config(n, me, empty_block_interval_ms),
        0,
        None,
        Restored::default(),
    )
}

fn replica(n: u32, me: u32) -> Replica {
    replica_with(n, me, 0)
}

fn block_for(seq: SequenceNumber, salt: u64) -> (Digest, Bytes) {
    let mut bytes = seq.to_be_bytes().to_vec();
    bytes.extend_from_slice(&salt.to_be_bytes());
    (Digest::sha256(&bytes), Bytes::from(bytes))
}

struct Cluster {
    replicas: Vec<Replica>,
    /// Messages in flight: (recipient, message).
    network: VecDeque<(u32, SignedMessage)>,
    delivered: Vec<Vec<(SequenceNumber, Digest)>>,
    deferred_checks: Vec<Vec<(View, SequenceNumber, Digest)>>,
    rejected: Vec<(u32, RejectReason)>,
    rng: SplitMix,
    /// The application builds blocks up to this height.
    max_seq: u64,
    /// Whether transactions wait after each delivery (below `max_seq`);
    /// without, only empty blocks are built.
    transactions: bool,
    /// The certificate of the highest block any replica delivered, for a
    /// state transfer.
    last_certificate: Option<CommitCertificate>,
    /// Replicas that left the validator set, and from which height.
    retired: Vec<(u32, SequenceNumber)>,
    /// The set before a reconfiguration, for checking certificates.
    previous_set: Option<ValidatorSet>,
}

impl Cluster {
    fn new(n: u32, seed: u64) -> Self {
        Self {
            replicas: (0..n).map(|i| replica(n, i)).collect(),
            network: VecDeque::new(),
            delivered: vec![Vec::new(); n as usize],
            deferred_checks: vec![Vec::new(); n as usize],
            rejected: Vec::new(),
            rng: SplitMix(seed),
            max_seq: 30,
            transactions: true,
            last_certificate: None,
            retired: Vec::new(),
            previous_set: None,
        }
    }

    /// Steps replica `at`, feeding the application's answers back until it
    /// is quiet. Stops after a bound so a bug can not loop forever.
    fn step(&mut self, at: u32, event: Event) {
        let mut queue = VecDeque::from([event]);
        for _ in 0..1_000 {
            let Some(event) = queue.pop_front() else {
                return;
            };
            let actions = self.replicas[at as usize].step(event);
            for action in actions {
                self.apply(at, action, &mut queue);
            }
        }
    }

    fn apply(&mut self, at: u32, action: Action, queue: &mut VecDeque<Event>) {
        match action {
            Action::Broadcast(message) => {
                for to in 0..self.replicas.len() as u32 {
                    if to != at {
                        self.network.push_back((to, message.clone()));
                    }
                }
            }
            Action::BuildProposal { view, seq, .. } => {
                // A bounded chain: stop proposing after 30 blocks.
                if seq <= self.max_seq {
                    let (digest, block) = block_for(seq, u64::from(at));
                    queue.push_back(Event::ProposalBuilt {
                        view,
                        seq,
                        digest,
                        block,
                    });
                } else {
                    queue.push_back(Event::ProposalSkipped { view, seq });
                }
            }
            Action::CheckProposal {
                view, seq, digest, ..
            } => {
                self.deferred_checks[at as usize].push((view, seq, digest));
            }
            Action::Deliver {
                seq,
                digest,
                certificate,
                ..
            } => {
                // The set that ordered `seq` (the replica has already switched
                // if this block changed it).
                let set = if seq < self.replicas[at as usize].epoch_start() {
                    self.previous_set
                        .clone()
                        .unwrap_or_else(|| validators(self.replicas.len() as u32))
                } else {
                    self.replicas[at as usize].validators().clone()
                };
                assert_eq!(
                    crate::verify_commit_certificate(CHAIN, &set, seq, &digest, &certificate),
                    Ok(())
                );
                self.delivered[at as usize].push((seq, digest));
                if self
                    .last_certificate
                    .as_ref()
                    .is_none_or(|last| last.seq < seq)
                {
                    self.last_certificate = Some(certificate.clone());
                }
                let count = u64::from(self.transactions && seq < self.max_seq);
                queue.push_back(Event::PendingTransactions { count });
            }
            Action::Rejected { sender, reason } => self.rejected.push((sender, reason)),
            Action::Retired { seq } => self.retired.push((at, seq)),
            Action::Persist(_) | Action::StateTransfer { .. } => {}
        }
        // The application checks a proposal once the previous block is in
        // (delivered, or brought by a state transfer).
        let height = self.replicas[at as usize].last_delivered();
        let (ready, later): (Vec<_>, Vec<_>) = self.deferred_checks[at as usize]
            .drain(..)
            .partition(|(_, seq, _)| *seq == height + 1);
        self.deferred_checks[at as usize] = later;
        for (view, seq, digest) in ready {
            queue.push_back(Event::ProposalChecked {
                view,
                seq,
                digest,
                verdict: Ok(()),
            });
        }
    }

    /// Delivers queued messages in a random order, skipping those `drop`
    /// selects, until the network is quiet or `max` messages were handled.
    fn run_filtered(&mut self, max: usize, drop: impl Fn(u32) -> bool) {
        for _ in 0..max {
            self.network.retain(|(to, _)| !drop(*to));
            if self.network.is_empty() {
                return;
            }
            let pick = self.rng.below(self.network.len());
            let (to, message) = self.network.remove(pick).expect("index in range");
            self.step(to, Event::Message(message));
        }
    }

    fn run(&mut self, max: usize) {
        self.run_filtered(max, |_| false);
    }
}

#[test]
fn four_replicas_commit_identical_blocks_in_order() {
    for seed in 0..50 {
        let mut cluster = Cluster::new(4, seed);
        cluster.step(0, Event::PendingTransactions { count: 1 });
        cluster.run(50_000);
        for (i, delivered) in cluster.delivered.iter().enumerate() {
            assert_eq!(
                delivered.len(),
                30,
                "seed {seed}: replica {i} delivered {}",
                delivered.len()
            );
            assert_eq!(
                delivered, &cluster.delivered[0],
                "seed {seed}: replica {i} diverged"
            );
            let seqs: Vec<u64> = delivered.iter().map(|(s, _)| *s).collect();
            assert_eq!(seqs, (1..=30).collect::<Vec<_>>());
        }
        assert!(
            cluster.rejected.is_empty(),
            "seed {seed}: {:?}",
            cluster.rejected
        );
        assert!(
            cluster.replicas.iter().all(|r| r.log_len() == 0),
            "seed {seed}: log not emptied"
        );
    }
}

#[test]
fn seven_replicas_commit_with_two_silent() {
    let mut cluster = Cluster::new(7, 3);
    cluster.step(0, Event::PendingTransactions { count: 1 });
    cluster.run_filtered(100_000, |to| to >= 5);
    assert_eq!(cluster.delivered[0].len(), 30);
    for i in 1..5 {
        assert_eq!(cluster.delivered[i], cluster.delivered[0]);
    }
    assert!(cluster.delivered[5].is_empty() && cluster.delivered[6].is_empty());
}

#[test]
fn no_progress_without_a_quorum() {
    let mut cluster = Cluster::new(4, 1);
    cluster.step(0, Event::PendingTransactions { count: 1 });
    cluster.run_filtered(5_000, |to| to >= 2);
    assert!(cluster.delivered.iter().all(Vec::is_empty));
}

#[test]
fn single_validator_commits_alone() {
    let mut cluster = Cluster::new(1, 0);
    cluster.step(0, Event::PendingTransactions { count: 1 });
    // Each delivery reports one more pending transaction, so it keeps going.
    assert_eq!(cluster.delivered[0].len(), 30);
}

#[test]
fn idle_primary_proposes_nothing() {
    let mut replica = replica(4, 0);
    assert!(replica.step(Event::Tick { now_ms: 10_000 }).is_empty());
}

#[test]
fn backups_never_propose() {
    let mut replica = replica(4, 1);
    assert!(
        replica
            .step(Event::PendingTransactions { count: 100 })
            .is_empty()
    );
}

#[test]
fn empty_blocks_when_configured() {
    let mut replica = replica_with(4, 0, 500);
    assert!(replica.step(Event::Tick { now_ms: 100 }).is_empty());
    let actions = replica.step(Event::Tick { now_ms: 600 });
    assert!(matches!(
        actions[..],
        [Action::BuildProposal { seq: 1, .. }]
    ));
}

#[test]
fn one_proposal_in_flight() {
    let mut primary = replica(4, 0);
    let actions = primary.step(Event::PendingTransactions { count: 5 });
    assert!(matches!(
        actions[..],
        [Action::BuildProposal { seq: 1, .. }]
    ));
    assert!(
        primary
            .step(Event::PendingTransactions { count: 6 })
            .is_empty()
    );
    let (digest, block) = block_for(1, 0);
    let actions = primary.step(Event::ProposalBuilt {
        view: 0,
        seq: 1,
        digest,
        block,
    });
    // Durable before it is sent: a restarted primary never proposes twice.
    assert!(matches!(
        &actions[..],
        [
            Action::Persist(Record::Accepted {
                reproposal: false,
                ..
            }),
            Action::Broadcast(SignedMessage {
                body: Body::PrePrepare { seq: 1, .. },
                ..
            })
        ]
    ));
    assert!(
        primary
            .step(Event::PendingTransactions { count: 7 })
            .is_empty()
    );
}

fn pre_prepare(from: u32, seq: u64, salt: u64) -> SignedMessage {
    let (digest, block) = block_for(seq, salt);
    SignedMessage::sign(
        CHAIN,
        from,
        &key(from),
        Body::PrePrepare {
            view: 0,
            seq,
            digest,
            block,
        },
    )
}

fn vote(from: u32, body: Body) -> Event {
    Event::Message(SignedMessage::sign(CHAIN, from, &key(from), body))
}

fn rejections(actions: &[Action]) -> Vec<RejectReason> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Rejected { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn equivocating_primary_is_refused_the_second_time() {
    let mut backup = replica(4, 1);
    let first = backup.step(Event::Message(pre_prepare(0, 1, 1)));
    assert!(matches!(first[..], [Action::CheckProposal { seq: 1, .. }]));
    let second = backup.step(Event::Message(pre_prepare(0, 1, 2)));
    assert!(matches!(
        rejections(&second)[..],
        [RejectReason::Equivocation {
            kind: "pre-prepare",
            seq: 1,
            ..
        }]
    ));
    assert!(
        !second
            .iter()
            .any(|a| matches!(a, Action::CheckProposal { .. }))
    );
}

#[test]
fn pre_prepare_from_a_backup_is_refused() {
    let mut backup = replica(4, 1);
    let actions = backup.step(Event::Message(pre_prepare(2, 1, 1)));
    assert!(matches!(
        rejections(&actions)[..],
        [RejectReason::NotPrimary {
            sender: 2,
            view: 0,
            primary: 0
        }]
    ));
}

#[test]
fn forged_signature_is_refused() {
    let mut backup = replica(4, 1);
    let mut message = pre_prepare(0, 1, 1);
    message.signature = key(3).sign(b"something else");
    let actions = backup.step(Event::Message(message));
    assert_eq!(rejections(&actions), vec![RejectReason::BadSignature]);
}

#[test]
fn message_signed_by_another_validator_is_refused() {
    let mut backup = replica(4, 1);
    let mut message = pre_prepare(0, 1, 1);
    // Validator 2 signs, but claims to be the primary.
    message.signature = SignedMessage::sign(CHAIN, 2, &key(2), message.body.clone()).signature;
    assert_eq!(
        rejections(&backup.step(Event::Message(message))),
        vec![RejectReason::BadSignature]
    );
}

#[test]
fn unknown_sender_and_own_identity_are_refused() {
    let mut backup = replica(4, 1);
    let prepare = Body::Prepare {
        view: 0,
        seq: 1,
        digest: Digest::default(),
    };
    assert_eq!(
        rejections(&backup.step(vote(9, prepare.clone()))),
        vec![RejectReason::UnknownSender { sender: 9 }]
    );
    assert_eq!(
        rejections(&backup.step(vote(1, prepare))),
        vec![RejectReason::OwnIdentity]
    );
}

#[test]
fn messages_outside_the_window_or_view_are_refused() {
    let mut backup = replica(4, 1);
    let far = pre_prepare(0, LOG_WINDOW_SEQS + 1, 1);
    assert!(matches!(
        rejections(&backup.step(Event::Message(far)))[..],
        [RejectReason::OutOfWindow { .. }]
    ));
    let other_view = vote(
        2,
        Body::Prepare {
            view: 5,
            seq: 1,
            digest: Digest::default(),
        },
    );
    assert!(matches!(
        rejections(&backup.step(other_view))[..],
        [RejectReason::WrongView { got: 5, current: 0 }]
    ));
    assert_eq!(backup.log_len(), 0);
}

#[test]
fn wrong_chain_signature_is_refused() {
    let mut backup = replica(4, 1);
    let (digest, block) = block_for(1, 1);
    let body = Body::PrePrepare {
        view: 0,
        seq: 1,
        digest,
        block,
    };
    let message = SignedMessage::sign("other-chain", 0, &key(0), body);
    assert_eq!(
        rejections(&backup.step(Event::Message(message))),
        vec![RejectReason::BadSignature]
    );
}

#[test]
fn block_bytes_must_match_the_digest() {
    let mut backup = replica(4, 1);
    let (digest, _) = block_for(1, 1);
    let body = Body::PrePrepare {
        view: 0,
        seq: 1,
        digest,
        block: Bytes::from_static(b"other"),
    };
    let actions = backup.step(vote(0, body));
    assert!(matches!(
        rejections(&actions)[..],
        [RejectReason::BlockMismatch { .. }]
    ));
}

#[test]
fn invalid_proposal_gets_no_prepare() {
    let mut backup = replica(4, 1);
    let (digest, _) = block_for(1, 1);
    backup.step(Event::Message(pre_prepare(0, 1, 1)));
    let verdict = Err("bad parent".to_string());
    let actions = backup.step(Event::ProposalChecked {
        view: 0,
        seq: 1,
        digest,
        verdict,
    });
    assert!(matches!(
        rejections(&actions)[..],
        [RejectReason::InvalidProposal { seq: 1, .. }]
    ));
    assert!(!actions.iter().any(|a| matches!(a, Action::Broadcast(_))));
    // Votes from others can not make it commit a block it found invalid.
    for from in [2, 3] {
        let actions = backup.step(vote(
            from,
            Body::Commit {
                view: 0,
                seq: 1,
                digest,
            },
        ));
        assert!(!actions.iter().any(|a| matches!(a, Action::Deliver { .. })));
    }
}

#[test]
fn duplicate_votes_count_once() {
    let mut backup = replica(4, 1);
    let (digest, _) = block_for(1, 1);
    backup.step(Event::Message(pre_prepare(0, 1, 1)));
    backup.step(Event::ProposalChecked {
        view: 0,
        seq: 1,
        digest,
        verdict: Ok(()),
    });
    // 1's own prepare and 2's make 2f: prepared, so 1 commits.
    let actions = backup.step(vote(
        2,
        Body::Prepare {
            view: 0,
            seq: 1,
            digest,
        },
    ));
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Broadcast(SignedMessage {
            body: Body::Commit { .. },
            ..
        })
    )));
    let conflicting = vote(
        2,
        Body::Prepare {
            view: 0,
            seq: 1,
            digest: Digest::default(),
        },
    );
    assert!(matches!(
        rejections(&backup.step(conflicting))[..],
        [RejectReason::Equivocation {
            kind: "prepare",
            ..
        }]
    ));
    let commit = Body::Commit {
        view: 0,
        seq: 1,
        digest,
    };
    backup.step(vote(2, commit.clone()));
    let actions = backup.step(vote(2, commit.clone()));
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Deliver { .. })),
        "two commits and a duplicate are not a quorum"
    );
    let actions = backup.step(vote(3, commit));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Deliver { seq: 1, .. }))
    );
    assert_eq!(backup.last_delivered(), 1);
}

#[test]
fn certificate_checks() {
    let set = validators(4);
    let digest = Digest::sha256(b"block");
    let sign = |i: u32| {
        let message = crate::commit_signing_bytes(CHAIN, 0, 1, &digest);
        (i, key(i).sign(&message))
    };
    let good = CommitCertificate {
        seq: 1,
        view: 0,
        digest,
        signatures: vec![sign(0), sign(1), sign(2)],
    };
    assert_eq!(
        crate::verify_commit_certificate(CHAIN, &set, 1, &digest, &good),
        Ok(())
    );
    let short = CommitCertificate {
        signatures: vec![sign(0), sign(1)],
        ..good.clone()
    };
    assert!(matches!(
        crate::verify_commit_certificate(CHAIN, &set, 1, &digest, &short),
        Err(crate::CertificateError::TooFewSignatures { got: 2, quorum: 3 })
    ));
    let duplicated = CommitCertificate {
        signatures: vec![sign(0), sign(1), sign(1)],
        ..good.clone()
    };
    assert!(matches!(
        crate::verify_commit_certificate(CHAIN, &set, 1, &digest, &duplicated),
        Err(crate::CertificateError::DuplicateSigner { index: 1 })
    ));
    assert!(matches!(
        crate::verify_commit_certificate(CHAIN, &set, 2, &digest, &good),
        Err(crate::CertificateError::WrongHeight { .. })
    ));
    let mut forged = good.clone();
    forged.signatures[2] = (2, key(3).sign(b"x"));
    assert!(matches!(
        crate::verify_commit_certificate(CHAIN, &set, 1, &digest, &forged),
        Err(crate::CertificateError::BadSignature { index: 2 })
    ));
}

#[test]
fn certificates_checked_in_a_batch_get_the_verdicts_of_one_by_one() {
    let set = validators(4);
    let digests: Vec<Digest> = (1..=6u64)
        .map(|seq| Digest::sha256(&seq.to_be_bytes()))
        .collect();
    let certificate = |seq: u64, signers: &[u32]| CommitCertificate {
        seq,
        view: 0,
        digest: digests[seq as usize - 1],
        signatures: signers
            .iter()
            .map(|i| {
                let message =
                    crate::commit_signing_bytes(CHAIN, 0, seq, &digests[seq as usize - 1]);
                (*i, key(*i).sign(&message))
            })
            .collect(),
    };
    let mut certificates: Vec<CommitCertificate> =
        (1..=6).map(|seq| certificate(seq, &[0, 1, 2])).collect();
    let batch = |certificates: &[CommitCertificate]| {
        let checks: Vec<crate::CertificateCheck<'_>> = certificates
            .iter()
            .enumerate()
            .map(|(i, certificate)| crate::CertificateCheck {
                validators: &set,
                seq: i as u64 + 1,
                digest: &digests[i],
                certificate,
            })
            .collect();
        crate::verify_commit_certificates(CHAIN, &checks)
    };
    assert_eq!(batch(&certificates), Ok(()));
    assert_eq!(batch(&[]), Ok(()));
    // A bad signature in the fourth, a short certificate in the sixth:
    // the fourth is named, with the error one by one gives.
    certificates[3].signatures[1] = (1, key(1).sign(b"something else"));
    certificates[5] = certificate(6, &[0, 1]);
    assert_eq!(
        batch(&certificates),
        Err((3, crate::CertificateError::BadSignature { index: 1 }))
    );
    certificates[3] = certificate(4, &[1, 2, 3]);
    assert_eq!(
        batch(&certificates),
        Err((
            5,
            crate::CertificateError::TooFewSignatures { got: 2, quorum: 3 }
        ))
    );
    // A signer outside the set, and a certificate for another block.
    certificates[5] = certificate(6, &[0, 1, 2]);
    certificates[1].signatures[0].0 = 9;
    assert!(matches!(
        batch(&certificates),
        Err((1, crate::CertificateError::UnknownSigner { index: 9, .. }))
    ));
    certificates[1] = certificate(3, &[0, 1, 2]);
    assert!(matches!(
        batch(&certificates),
        Err((1, crate::CertificateError::WrongHeight { .. }))
    ));
}

impl Cluster {
    /// Advances every replica's clock by `ms` in steps of 10 ms, delivering
    /// messages in between; `silent` replicas neither send nor receive.
    fn run_for(&mut self, ms: u64, now: &mut u64, silent: &[u32]) {
        for _ in 0..ms / 10 {
            *now += 10;
            for i in 0..self.replicas.len() as u32 {
                if !silent.contains(&i) {
                    self.step(i, Event::Tick { now_ms: *now });
                }
            }
            self.network
                .retain(|(to, m)| !silent.contains(to) && !silent.contains(&m.sender));
            self.run_filtered(200, |to| silent.contains(&to));
        }
    }
}

#[test]
fn with_empty_blocks_a_primary_that_changed_views_alone_is_followed() {
    // The primary hears nothing for a while: the backups commit its last
    // proposal without it, and it times out and asks for the next view
    // alone. State transfer then brings it that block, but it cannot go
    // back to the old view. No transaction is pending, so only the empty
    // block the primary owes every interval tells the backups that it is
    // gone: that silence must make them follow it into the next view.
    let n = 4;
    let mut cluster = Cluster::new(n, 9);
    cluster.replicas = (0..n).map(|i| replica_with(n, i, 10)).collect();
    cluster.max_seq = u64::MAX;
    cluster.transactions = false;
    let mut now = 0;
    cluster.run_for(200, &mut now, &[]);
    assert!(cluster.delivered[1].len() > 5, "empty blocks flow");
    for _ in 0..150 {
        now += 10;
        for i in 0..n {
            cluster.step(i, Event::Tick { now_ms: now });
        }
        cluster.run_filtered(200, |to| to == 0);
    }
    assert!(
        !cluster.replicas[0].is_normal(),
        "the deaf primary asks for a view change"
    );
    let certificate = cluster.last_certificate.clone().expect("blocks delivered");
    let transferred = certificate.seq;
    cluster.step(
        0,
        Event::StateTransferred {
            certificate,
            epoch: None,
        },
    );
    let caught_up = cluster.delivered[0].len();
    cluster.run_for(5_000, &mut now, &[]);
    let view = cluster.replicas[0].view();
    assert!(view > 0, "the chain stayed in view 0");
    for i in 0..n as usize {
        let replica = &cluster.replicas[i];
        assert!(replica.is_normal(), "replica {i} is stuck changing views");
        assert_eq!(replica.view(), view, "replica {i}");
        let last = cluster.delivered[i].last().map_or(0, |(seq, _)| *seq);
        assert!(
            last > transferred + 10,
            "replica {i} is at {last}, block {transferred} was transferred"
        );
    }
    assert!(cluster.delivered[0].len() > caught_up + 10);
    let from = (transferred + 1) as usize;
    let tail = |i: usize| -> Vec<(SequenceNumber, Digest)> {
        cluster.delivered[i]
            .iter()
            .filter(|(seq, _)| *seq as usize >= from)
            .copied()
            .collect()
    };
    let shortest = (0..n as usize).map(|i| tail(i).len()).min().expect("four");
    for i in 0..n as usize {
        assert_eq!(tail(i)[..shortest], tail(1)[..shortest], "replica {i}");
    }
}

#[test]
fn a_silent_primary_is_replaced_and_the_chain_goes_on() {
    let mut cluster = Cluster::new(4, 5);
    let mut now = 0;
    cluster.step(0, Event::PendingTransactions { count: 1 });
    cluster.run(20_000);
    assert_eq!(cluster.delivered[1].len(), 30);
    // Primary 0 goes silent while the others have work to do.
    cluster.max_seq = 40;
    for i in 1..4 {
        cluster.step(i, Event::PendingTransactions { count: 1 });
    }
    cluster.run_for(8_000, &mut now, &[0]);
    for i in 1..4 {
        let replica = &cluster.replicas[i];
        assert_eq!(replica.view(), 1, "replica {i}: one view change suffices");
        assert!(replica.is_normal(), "replica {i} is stuck changing views");
        assert_eq!(
            cluster.delivered[i].len(),
            40,
            "replica {i} did not go on committing"
        );
        assert_eq!(cluster.delivered[i], cluster.delivered[1]);
    }
}

#[test]
fn one_faulty_validator_can_not_force_a_view_change() {
    let mut backup = replica(4, 2);
    let change = Body::ViewChange(crate::ViewChange {
        new_view: 1,
        committed_seq: 0,
        committed: None,
        prepared: None,
    });
    let actions = backup.step(vote(3, change));
    assert!(
        actions.iter().all(|a| !matches!(a, Action::Broadcast(_))),
        "{actions:?}"
    );
    assert_eq!(backup.view(), 0);
    // A second validator asking too (f + 1 = 2) is enough to join.
    let change = Body::ViewChange(crate::ViewChange {
        new_view: 1,
        committed_seq: 0,
        committed: None,
        prepared: None,
    });
    let actions = backup.step(vote(0, change));
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Broadcast(SignedMessage {
            body: Body::ViewChange(_),
            ..
        })
    )));
    assert_eq!(backup.view(), 1);
    assert!(!backup.is_normal());
}

#[test]
fn a_view_change_claiming_blocks_without_a_certificate_is_refused() {
    let mut backup = replica(4, 1);
    let change = Body::ViewChange(crate::ViewChange {
        new_view: 1,
        committed_seq: 5,
        committed: None,
        prepared: None,
    });
    assert!(matches!(
        rejections(&backup.step(vote(3, change)))[..],
        [RejectReason::InvalidViewChange { .. }]
    ));
}

#[test]
fn a_restarted_backup_does_not_prepare_a_conflicting_block() {
    let (digest, _) = block_for(1, 1);
    let prepare = SignedMessage::sign(
        CHAIN,
        1,
        &key(1),
        Body::Prepare {
            view: 0,
            seq: 1,
            digest,
        },
    );
    let restored = Restored {
        view: 0,
        normal: true,
        votes: vec![prepare],
        ..Restored::default()
    };
    let mut backup = Replica::new(config(4, 1, 0), 0, None, restored);
    let actions = backup.step(Event::Message(pre_prepare(0, 1, 2)));
    assert!(matches!(
        rejections(&actions)[..],
        [RejectReason::Equivocation {
            kind: "pre-prepare",
            ..
        }]
    ));
    // The same block as before is fine, and its prepare is the stored one.
    let actions = backup.step(Event::Message(pre_prepare(0, 1, 1)));
    assert!(matches!(
        actions[..],
        [Action::CheckProposal { seq: 1, .. }]
    ));
    let actions = backup.step(Event::ProposalChecked {
        view: 0,
        seq: 1,
        digest,
        verdict: Ok(()),
    });
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Broadcast(_))),
        "no second prepare: {actions:?}"
    );
}

/// A replica driven by hand: its persisted records, what it sent, and what
/// it delivered. The application accepts every proposal.
struct Manual {
    replica: Replica,
    me: u32,
    records: Vec<Record>,
    sent: Vec<SignedMessage>,
    delivered: Vec<(SequenceNumber, Digest)>,
    salt: u64,
}

impl Manual {
    fn new(me: u32) -> Self {
        Self {
            replica: replica(4, me),
            me,
            records: Vec::new(),
            sent: Vec::new(),
            delivered: Vec::new(),
            salt: u64::from(me),
        }
    }

    fn step(&mut self, event: Event) {
        let mut queue = VecDeque::from([event]);
        while let Some(event) = queue.pop_front() {
            for action in self.replica.step(event) {
                match action {
                    Action::Broadcast(message) => self.sent.push(message),
                    Action::Persist(record) => self.records.push(record),
                    Action::BuildProposal { view, seq, .. } => {
                        let (digest, block) = block_for(seq, self.salt);
                        queue.push_back(Event::ProposalBuilt {
                            view,
                            seq,
                            digest,
                            block,
                        });
                    }
                    Action::CheckProposal {
                        view, seq, digest, ..
                    } => {
                        queue.push_back(Event::ProposalChecked {
                            view,
                            seq,
                            digest,
                            verdict: Ok(()),
                        });
                    }
                    Action::Deliver { seq, digest, .. } => self.delivered.push((seq, digest)),
                    Action::StateTransfer { .. }
                    | Action::Rejected { .. }
                    | Action::Retired { .. } => {}
                }
            }
        }
    }

    /// A crash: only the persisted records survive (nothing was delivered).
    fn restart(&mut self) {
        let mut restored = Restored::default();
        for record in self.records.clone() {
            match record {
                Record::View { view, normal } => (restored.view, restored.normal) = (view, normal),
                Record::Accepted {
                    message,
                    reproposal,
                } => restored.accepted.push((message, reproposal)),
                Record::Vote(message) => restored.votes.push(message),
                Record::Prepared(certificate) => restored.prepared.push(certificate),
            }
        }
        self.replica = Replica::new(config(4, self.me, 0), 0, None, restored);
        self.salt += 100; // A rebuilt block would differ.
    }
}

/// Hands every message sent so far by `from` that `pick` selects to `to`.
fn hand_over(
    nodes: &mut [Manual],
    from: &[usize],
    to: &[usize],
    pick: impl Fn(&SignedMessage) -> bool,
) {
    let messages: Vec<SignedMessage> = from
        .iter()
        .flat_map(|i| std::mem::take(&mut nodes[*i].sent))
        .collect();
    for message in messages.iter().filter(|m| pick(m)) {
        for &i in to {
            if nodes[i].me != message.sender {
                nodes[i].step(Event::Message(message.clone()));
            }
        }
    }
}

#[test]
fn a_restart_behind_the_new_view_floor_never_commits_another_block() {
    let mut nodes: Vec<Manual> = (0..4).map(Manual::new).collect();
    for node in &mut nodes {
        node.step(Event::PendingTransactions { count: 1 });
    }
    // Block 1 is prepared everywhere, but only replica 3 sees the commits.
    hand_over(&mut nodes, &[0], &[1, 2, 3], |_| true);
    hand_over(&mut nodes, &[0, 1, 2, 3], &[0, 1, 2, 3], |m| {
        matches!(m.body, Body::Prepare { .. })
    });
    hand_over(&mut nodes, &[0, 1, 2, 3], &[3], |m| {
        matches!(m.body, Body::Commit { .. })
    });
    let committed = nodes[3].delivered.clone();
    assert_eq!(committed.len(), 1);
    // Replicas 0-2 time out; the new primary 1 builds view 1 from the view
    // changes of 2 and 3, which prove block 1 committed: its floor is 1.
    for node in &mut nodes[..3] {
        node.step(Event::Tick { now_ms: 1_500 });
    }
    hand_over(&mut nodes, &[0], &[3], |_| true);
    hand_over(&mut nodes, &[2], &[1, 3], |_| true);
    hand_over(&mut nodes, &[3], &[1], |m| {
        matches!(m.body, Body::ViewChange(_))
    });
    hand_over(&mut nodes, &[1], &[0, 2], |m| {
        matches!(m.body, Body::NewView(_))
    });
    assert!(
        nodes[..3]
            .iter()
            .all(|n| n.replica.view() == 1 && n.replica.is_normal())
    );
    // A power cut hits 0-2 before they fetch block 1; they restart in view 1.
    for node in &mut nodes[..3] {
        node.sent.clear();
        node.restart();
        node.step(Event::Tick { now_ms: 1_600 });
        node.step(Event::PendingTransactions { count: 1 });
    }
    for _ in 0..4 {
        hand_over(&mut nodes, &[0, 1, 2], &[0, 1, 2], |_| true);
    }
    for node in &nodes[..3] {
        assert!(
            node.delivered.iter().all(|d| committed.contains(d)),
            "replica {} delivered {:?}, but {:?} is committed",
            node.me,
            node.delivered,
            committed
        );
    }
}

#[test]
fn a_replica_alone_in_a_view_change_waits_instead_of_running_ahead() {
    // Replica 2 has work, hears nothing, and asks for view 1.
    let mut backup = replica(4, 2);
    backup.step(Event::PendingTransactions { count: 1 });
    backup.step(Event::Tick { now_ms: 1_000 });
    assert_eq!((backup.view(), backup.is_normal()), (1, false));
    // Without a quorum asking for view 1 its timer does not run: were it to
    // move on alone, the others could never catch up with it (f + 1 are
    // needed to pull them), and with f silent validators no view would
    // ever have a quorum again.
    for now_ms in (2_000..60_000).step_by(500) {
        backup.step(Event::Tick { now_ms });
    }
    assert_eq!(backup.view(), 1);
    // Once a quorum asks for view 1 (its primary 1 stays silent), the timer
    // runs and the next view follows.
    for from in [0, 3] {
        let change = Body::ViewChange(crate::ViewChange {
            new_view: 1,
            committed_seq: 0,
            committed: None,
            prepared: None,
        });
        backup.step(vote(from, change));
    }
    backup.step(Event::Tick { now_ms: 60_000 });
    assert_eq!(
        backup.view(),
        1,
        "the timer starts when the quorum is there"
    );
    backup.step(Event::Tick {
        now_ms: 60_000 + 2_000,
    });
    assert_eq!((backup.view(), backup.is_normal()), (2, false));
}

/// Block 5 (of the test chain's `block_for` bytes) removes validator 3.
fn without_3_after_5(block: &[u8]) -> Option<ValidatorSet> {
    let seq = u64::from_be_bytes(block.get(..8)?.try_into().ok()?);
    (seq == 5).then(|| {
        ValidatorSet::from_members((0..3).map(|i| (i, key(i).public_key())).collect())
            .expect("valid")
    })
}

#[test]
fn a_removed_validator_retires_and_the_others_go_on_with_the_smaller_set() {
    for seed in 0..50 {
        let mut cluster = Cluster::new(4, seed);
        for (i, replica) in (0..).zip(cluster.replicas.iter_mut()) {
            let config = Config {
                block_validators: without_3_after_5,
                ..config(4, i, 0)
            };
            *replica = Replica::new(config, 0, None, Restored::default());
        }
        cluster.previous_set = Some(validators(4));
        cluster.step(0, Event::PendingTransactions { count: 1 });
        cluster.run(50_000);
        assert_eq!(cluster.retired, vec![(3, 6)], "seed {seed}");
        assert_eq!(cluster.delivered[3].len(), 5, "seed {seed}");
        for i in 0..3 {
            assert_eq!(cluster.delivered[i].len(), 30, "seed {seed}, replica {i}");
            assert_eq!(cluster.delivered[i], cluster.delivered[0], "seed {seed}");
            assert_eq!(cluster.replicas[i].epoch_start(), 6);
            assert_eq!(cluster.replicas[i].validators().len(), 3);
        }
        assert_eq!(cluster.delivered[3][..], cluster.delivered[0][..5]);
        // The retired replica ignores everything from now on.
        let message = pre_prepare(0, 7, 0);
        assert!(cluster.replicas[3].step(Event::Message(message)).is_empty());
    }
}

#[test]
fn after_a_switch_view_changes_from_the_old_set_are_refused() {
    // Replica 1 in a set that block 5 put in force.
    let set = ValidatorSet::from_members((0..3).map(|i| (i, key(i).public_key())).collect())
        .expect("valid");
    let config = Config {
        validators: set,
        epoch_start: 6,
        ..config(4, 1, 0)
    };
    let certificate = CommitCertificate {
        seq: 5,
        view: 0,
        digest: Digest::sha256(b"block 5"),
        signatures: Vec::new(),
    };
    let mut replica = Replica::new(config, 5, Some(certificate), Restored::default());
    // Replica 2, still in the old set, reports block 4 as its last.
    let change = SignedMessage::sign(
        CHAIN,
        2,
        &key(2),
        Body::ViewChange(crate::ViewChange {
            new_view: 1,
            committed_seq: 4,
            committed: None,
            prepared: None,
        }),
    );
    let reasons = rejections(&replica.step(Event::Message(change)));
    assert!(
        matches!(&reasons[..], [RejectReason::InvalidViewChange { reason }]
            if reason.contains("before this validator set took over at 6")),
        "{reasons:?}"
    );
    // Validator 3 is no longer a member at all.
    let prepare = SignedMessage::sign(
        CHAIN,
        3,
        &key(3),
        Body::Prepare {
            view: 0,
            seq: 6,
            digest: Digest::sha256(b"x"),
        },
    );
    let reasons = rejections(&replica.step(Event::Message(prepare)));
    assert_eq!(reasons, vec![RejectReason::UnknownSender { sender: 3 }]);
}
