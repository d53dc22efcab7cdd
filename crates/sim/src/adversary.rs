//! Byzantine scripts. A Byzantine node runs the real `pbft` replica with its
//! own key; its [`Adversary`] rewrites what that replica sends (splitting
//! recipients between two versions of a message) and adds crafted messages
//! signed with the same key. Byzantine nodes share a [`Conspiracy`], so a
//! double-voting backup backs its primary's equivocation.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use govchain_crypto::{Digest, SigningKey};
use govchain_pbft::{
    Body, CommitCertificate, NewView, PreparedCertificate, ReplicaIndex, SequenceNumber,
    SignedMessage, ValidatorSet, View, ViewChange, commit_signing_bytes, decide,
};

use crate::app::{Block, EMPTY_BATCH};
use crate::node::{CHAIN_ID, VIEW_AHEAD_MAX, key};
use crate::rng::Rng;
use crate::scenario::Behaviour;

/// Salt of blocks a Byzantine node makes up (plus its identity), so that
/// they never equal an honest build.
const FORGED_SALT: u64 = 0xBAD0_0000;
/// View changes remembered per view, for this many recent views.
const VIEWS_REMEMBERED_MAX: usize = 8;
/// Honest prepares remembered, to paste into forged certificates.
const PREPARES_REMEMBERED_MAX: usize = 32;
/// Equivocations remembered by the conspiracy.
const EQUIVOCATIONS_MAX: usize = 256;
/// Decisions remembered per node about whether to equivocate.
const DECISIONS_MAX: usize = 1_024;

/// Where a message goes: to every other validator, or to some.
#[derive(Clone, Debug)]
pub struct Send {
    pub to: Option<Vec<ReplicaIndex>>,
    pub message: SignedMessage,
}

impl Send {
    fn all(message: SignedMessage) -> Self {
        Self { to: None, message }
    }

    fn to(to: Vec<ReplicaIndex>, message: SignedMessage) -> Self {
        Self {
            to: Some(to),
            message,
        }
    }
}

/// Two versions of one `(view, seq)`: `second` goes to `group`, `first` to
/// everyone else.
#[derive(Clone, Debug)]
pub struct Equivocation {
    pub first: Digest,
    pub second: Digest,
    pub second_message: SignedMessage,
    pub group: Vec<ReplicaIndex>,
}

/// What the Byzantine nodes share.
#[derive(Default)]
pub struct Conspiracy {
    equivocations: BTreeMap<(View, SequenceNumber), Equivocation>,
}

impl Conspiracy {
    fn register(&mut self, view: View, seq: SequenceNumber, equivocation: Equivocation) {
        self.equivocations
            .entry((view, seq))
            .or_insert(equivocation);
        while self.equivocations.len() > EQUIVOCATIONS_MAX {
            self.equivocations.pop_first();
        }
    }

    pub fn len(&self) -> usize {
        self.equivocations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.equivocations.is_empty()
    }
}

/// What the adversary knows about the world when it acts.
pub struct Context<'a> {
    pub now_ms: u64,
    pub validators: &'a ValidatorSet,
    /// Identities it attacks: everyone not in the conspiracy.
    pub victims: &'a [ReplicaIndex],
    pub view: View,
    pub normal: bool,
    pub last_delivered: SequenceNumber,
    pub last_certificate: Option<CommitCertificate>,
    /// The committed digest at a height, as far as anyone delivered it (the
    /// adversary is omniscient about the honest chain).
    pub committed: &'a dyn Fn(SequenceNumber) -> Option<Digest>,
}

pub struct Adversary {
    pub identity: ReplicaIndex,
    pub behaviour: Behaviour,
    key: SigningKey,
    rng: Rng,
    view_changes: BTreeMap<View, BTreeMap<ReplicaIndex, SignedMessage>>,
    prepares: VecDeque<SignedMessage>,
    /// Per (view, seq) of its own pre-prepares: whether it equivocates.
    decisions: BTreeMap<(View, SequenceNumber), bool>,
    /// Equivocations it already voted for.
    joined: BTreeSet<(View, SequenceNumber)>,
    next_forgery_ms: u64,
    next_below_floor_ms: u64,
}

impl Adversary {
    pub fn new(identity: ReplicaIndex, behaviour: Behaviour, rng: Rng) -> Self {
        Self {
            identity,
            behaviour,
            key: key(identity),
            rng,
            view_changes: BTreeMap::new(),
            prepares: VecDeque::new(),
            decisions: BTreeMap::new(),
            joined: BTreeSet::new(),
            next_forgery_ms: 0,
            next_below_floor_ms: 0,
        }
    }

    fn sign(&self, body: Body) -> SignedMessage {
        SignedMessage::sign(CHAIN_ID, self.identity, &self.key, body)
    }

    /// Remembers what an attack can reuse from an incoming message.
    pub fn on_incoming(&mut self, message: &SignedMessage, victims: &[ReplicaIndex]) {
        match &message.body {
            Body::ViewChange(change) if victims.contains(&message.sender) => {
                self.remember_view_change(change.new_view, message)
            }
            Body::Prepare { .. } => {
                if self.prepares.len() >= PREPARES_REMEMBERED_MAX {
                    self.prepares.pop_front();
                }
                self.prepares.push_back(message.clone());
            }
            _ => {}
        }
    }

    fn remember_view_change(&mut self, view: View, message: &SignedMessage) {
        self.view_changes
            .entry(view)
            .or_default()
            .insert(message.sender, message.clone());
        while self.view_changes.len() > VIEWS_REMEMBERED_MAX {
            self.view_changes.pop_first();
        }
    }

    /// Rewrites one broadcast of the inner replica.
    pub fn on_broadcast(
        &mut self,
        context: &Context<'_>,
        conspiracy: &mut Conspiracy,
        message: SignedMessage,
    ) -> Vec<Send> {
        if self.behaviour.silent {
            return Vec::new();
        }
        match message.body.clone() {
            Body::PrePrepare {
                view,
                seq,
                digest,
                block,
            } if self.behaviour.equivocate => {
                self.pre_prepare(context, conspiracy, message, (view, seq, digest), &block)
            }
            Body::Prepare { view, seq, .. } if self.behaviour.double_vote => {
                self.vote(context, conspiracy, message, (view, seq), false)
            }
            Body::Commit { view, seq, .. } if self.behaviour.double_vote => {
                self.vote(context, conspiracy, message, (view, seq), true)
            }
            Body::ViewChange(change) => {
                self.remember_view_change(change.new_view, &message);
                vec![Send::all(message)]
            }
            Body::NewView(new_view) if self.behaviour.equivocate || self.behaviour.forge => {
                self.new_view(context, conspiracy, message, &new_view)
            }
            _ => vec![Send::all(message)],
        }
    }

    /// A random strict, non-empty subset of the victims (empty if fewer
    /// than two).
    fn split(&mut self, victims: &[ReplicaIndex]) -> Vec<ReplicaIndex> {
        if victims.len() < 2 {
            return Vec::new();
        }
        let mut shuffled = victims.to_vec();
        self.rng.shuffle(&mut shuffled);
        let size = self.rng.range(1, victims.len() as u64 - 1) as usize;
        shuffled.truncate(size);
        shuffled.sort_unstable();
        shuffled
    }

    fn others(&self, context: &Context<'_>, group: &[ReplicaIndex]) -> Vec<ReplicaIndex> {
        context
            .validators
            .members()
            .iter()
            .map(|(index, _)| *index)
            .filter(|i| *i != self.identity && !group.contains(i))
            .collect()
    }

    fn made_up_block(&mut self, seq: SequenceNumber, parent: Digest) -> (Digest, Bytes) {
        let counter = self.rng.next_u64();
        Block {
            seq,
            parent,
            salt: FORGED_SALT + u64::from(self.identity),
            counter,
            batch: EMPTY_BATCH,
            validators: Vec::new(),
        }
        .seal()
    }

    /// Its own pre-prepare: usually one version to some and another (same
    /// height and parent) to the rest.
    fn pre_prepare(
        &mut self,
        context: &Context<'_>,
        conspiracy: &mut Conspiracy,
        message: SignedMessage,
        (view, seq, digest): (View, SequenceNumber, Digest),
        block: &Bytes,
    ) -> Vec<Send> {
        if let Some(known) = conspiracy.equivocations.get(&(view, seq))
            && known.first == digest
        {
            let others = self.others(context, &known.group);
            return vec![
                Send::to(others, message),
                Send::to(known.group.clone(), known.second_message.clone()),
            ];
        }
        let equivocate = *self
            .decisions
            .entry((view, seq))
            .or_insert_with(|| !self.rng.one_in(4));
        while self.decisions.len() > DECISIONS_MAX {
            self.decisions.pop_first();
        }
        let group = self.split(context.victims);
        if !equivocate || group.is_empty() || conspiracy.equivocations.contains_key(&(view, seq)) {
            return vec![Send::all(message)];
        }
        let parent = Block::decode(block).map_or(Digest::default(), |b| b.parent);
        let (second, bytes) = self.made_up_block(seq, parent);
        let second_message = self.sign(Body::PrePrepare {
            view,
            seq,
            digest: second,
            block: bytes,
        });
        let equivocation = Equivocation {
            first: digest,
            second,
            second_message: second_message.clone(),
            group: group.clone(),
        };
        conspiracy.register(view, seq, equivocation);
        let others = self.others(context, &group);
        vec![Send::to(others, message), Send::to(group, second_message)]
    }

    /// Its own prepare or commit: split like the conspiracy's equivocation
    /// of that slot, or else also a vote for a random digest to some.
    fn vote(
        &mut self,
        context: &Context<'_>,
        conspiracy: &Conspiracy,
        message: SignedMessage,
        (view, seq): (View, SequenceNumber),
        commit: bool,
    ) -> Vec<Send> {
        if let Some(known) = conspiracy.equivocations.get(&(view, seq)) {
            let known = known.clone();
            return self.split_votes(context, view, seq, &known, commit);
        }
        let mut sends = vec![Send::all(message)];
        if self.rng.one_in(2) {
            let group = self.split(context.victims);
            let random = Digest::sha256(&self.rng.next_u64().to_be_bytes());
            let body = if commit {
                Body::Commit {
                    view,
                    seq,
                    digest: random,
                }
            } else {
                Body::Prepare {
                    view,
                    seq,
                    digest: random,
                }
            };
            sends.push(Send::to(group, self.sign(body)));
        }
        sends
    }

    fn split_votes(
        &self,
        context: &Context<'_>,
        view: View,
        seq: SequenceNumber,
        known: &Equivocation,
        commit: bool,
    ) -> Vec<Send> {
        let body = |digest| {
            if commit {
                Body::Commit { view, seq, digest }
            } else {
                Body::Prepare { view, seq, digest }
            }
        };
        let others = self.others(context, &known.group);
        vec![
            Send::to(others, self.sign(body(known.first))),
            Send::to(known.group.clone(), self.sign(body(known.second))),
        ]
    }

    /// Its own new-view message: to some, a different valid one built from
    /// another quorum of view changes (and a fresh proposal if that quorum
    /// carries nothing over); to some, with `forge`, an invalid one.
    fn new_view(
        &mut self,
        context: &Context<'_>,
        conspiracy: &mut Conspiracy,
        message: SignedMessage,
        new_view: &NewView,
    ) -> Vec<Send> {
        let group = self.split(context.victims);
        if group.is_empty() {
            return vec![Send::all(message)];
        }
        let others = self.others(context, &group);
        if self.behaviour.equivocate
            && let Some(mut variant) = self.other_new_view(context, conspiracy, new_view, &group)
        {
            let mut sends = vec![Send::to(others, message)];
            sends.append(&mut variant);
            return sends;
        }
        if self.behaviour.forge {
            let invalid = self.invalid_new_view(new_view);
            return vec![Send::to(others, message), Send::to(group, invalid)];
        }
        vec![Send::all(message)]
    }

    fn other_new_view(
        &mut self,
        context: &Context<'_>,
        conspiracy: &mut Conspiracy,
        new_view: &NewView,
        group: &[ReplicaIndex],
    ) -> Option<Vec<Send>> {
        let view = new_view.view;
        let quorum = context.validators.quorum() as usize;
        let mut changes: Vec<SignedMessage> =
            self.view_changes.get(&view)?.values().cloned().collect();
        self.rng.shuffle(&mut changes);
        // Hide what was prepared and committed as far as a quorum allows.
        changes.sort_by_key(|m| match &m.body {
            Body::ViewChange(change) => (change.prepared.is_some(), change.committed_seq),
            _ => (true, u64::MAX),
        });
        if changes.len() < quorum {
            return None;
        }
        changes.truncate(quorum);
        let ours = decide(&new_view.view_changes);
        let theirs = decide(&changes);
        if ours == theirs {
            return None;
        }
        let seq = theirs.committed_seq + 1;
        let carried = theirs.carried.as_ref().map(|(digest, block)| {
            self.sign(Body::PrePrepare {
                view,
                seq,
                digest: *digest,
                block: block.clone(),
            })
        });
        let variant = self.sign(Body::NewView(NewView {
            view,
            view_changes: changes,
            pre_prepares: carried.iter().cloned().collect(),
        }));
        let mut sends = vec![Send::to(group.to_vec(), variant)];
        if theirs.carried.is_none() {
            // The variant lets this primary propose afresh at `seq`.
            let parent = (context.committed)(seq - 1).unwrap_or_default();
            let (second, bytes) = self.made_up_block(seq, parent);
            let second_message = self.sign(Body::PrePrepare {
                view,
                seq,
                digest: second,
                block: bytes,
            });
            sends.push(Send::to(group.to_vec(), second_message.clone()));
            let first = match (&ours.carried, ours.committed_seq + 1 == seq) {
                (Some((digest, _)), true) => *digest,
                _ => Digest::default(),
            };
            conspiracy.register(
                view,
                seq,
                Equivocation {
                    first,
                    second,
                    second_message,
                    group: group.to_vec(),
                },
            );
        }
        Some(sends)
    }

    fn invalid_new_view(&mut self, new_view: &NewView) -> SignedMessage {
        let mut invalid = new_view.clone();
        match self.rng.below(3) {
            0 if !invalid.pre_prepares.is_empty() => invalid.pre_prepares.clear(),
            0 => {
                let (digest, block) = self.made_up_block(1, Digest::default());
                let seq = decide(&invalid.view_changes).committed_seq + 1;
                let body = Body::PrePrepare {
                    view: invalid.view,
                    seq,
                    digest,
                    block,
                };
                invalid.pre_prepares.push(self.sign(body));
            }
            1 => {
                invalid.view_changes.pop();
            }
            _ => {
                if let Some(first) = invalid.view_changes.first().cloned() {
                    invalid.view_changes.pop();
                    invalid.view_changes.push(first);
                }
            }
        }
        self.sign(Body::NewView(invalid))
    }

    /// Things done on a clock: joining fellow Byzantine equivocations,
    /// forging messages, proposing below the view's floor.
    pub fn on_tick(&mut self, context: &Context<'_>, conspiracy: &Conspiracy) -> Vec<Send> {
        if self.behaviour.silent {
            return Vec::new();
        }
        let mut sends = Vec::new();
        if self.behaviour.double_vote {
            let recent: Vec<((View, SequenceNumber), Equivocation)> = conspiracy
                .equivocations
                .range((context.view.saturating_sub(1), 0)..)
                .filter(|(slot, _)| !self.joined.contains(*slot))
                .map(|(slot, e)| (*slot, e.clone()))
                .collect();
            for ((view, seq), known) in recent {
                self.joined.insert((view, seq));
                sends.extend(self.split_votes(context, view, seq, &known, false));
                sends.extend(self.split_votes(context, view, seq, &known, true));
            }
            while self.joined.len() > EQUIVOCATIONS_MAX {
                self.joined.pop_first();
            }
        }
        if self.behaviour.forge && context.now_ms >= self.next_forgery_ms {
            self.next_forgery_ms = context.now_ms + self.rng.range(100, 800);
            sends.push(Send::all(self.forgery(context)));
        }
        let primary = context.validators.primary(context.view) == self.identity;
        if self.behaviour.equivocate
            && primary
            && context.normal
            && context.now_ms >= self.next_below_floor_ms
        {
            self.next_below_floor_ms = context.now_ms + self.rng.range(200, 1_000);
            sends.extend(self.below_floor(context));
        }
        sends
    }

    /// A pre-prepare for a height this view's new-view message already
    /// settled (at or below its floor): correct replicas must refuse it.
    fn below_floor(&mut self, context: &Context<'_>) -> Option<Send> {
        let seq = context.last_delivered;
        if seq == 0 {
            return None;
        }
        let parent = (context.committed)(seq - 1)?;
        let (digest, block) = self.made_up_block(seq, parent);
        Some(Send::all(self.sign(Body::PrePrepare {
            view: context.view,
            seq,
            digest,
            block,
        })))
    }

    /// One invalid message, each a different way of lying.
    fn forgery(&mut self, context: &Context<'_>) -> SignedMessage {
        let new_view = context.view + 1;
        let height = context.last_delivered;
        let quorum = context.validators.quorum() as usize;
        let random = Digest::sha256(&self.rng.next_u64().to_be_bytes());
        let body = match self.rng.below(7) {
            // A short certificate: only this validator's signature.
            0 => {
                let certificate = self.own_certificate(height + 5, random, 1);
                view_change(new_view, height + 5, Some(certificate), None)
            }
            // A padded one: this validator's signature a quorum of times.
            1 => {
                let certificate = self.own_certificate(height + 5, random, quorum);
                view_change(new_view, height + 5, Some(certificate), None)
            }
            // A real certificate claimed for a later height.
            2 => match &context.last_certificate {
                Some(real) => view_change(new_view, real.seq + 3, Some(real.clone()), None),
                None => view_change(new_view, 2, None, None),
            },
            // A prepared certificate without enough (or matching) prepares.
            3 => {
                let prepared = self.forged_prepared(context, new_view, height + 1);
                view_change(
                    new_view,
                    height,
                    context.last_certificate.clone(),
                    Some(prepared),
                )
            }
            // A view change far beyond what anyone accepts.
            4 => view_change(
                new_view + VIEW_AHEAD_MAX + 5,
                height,
                context.last_certificate.clone(),
                None,
            ),
            // A new-view message for a view it is not the primary of.
            5 => {
                let change = self.sign(view_change(
                    new_view,
                    height,
                    context.last_certificate.clone(),
                    None,
                ));
                Body::NewView(NewView {
                    view: new_view,
                    view_changes: vec![change; quorum],
                    pre_prepares: Vec::new(),
                })
            }
            // A claim to be far ahead, to bait state transfers.
            _ => Body::Checkpoint {
                seq: height + 1_000,
                digest: random,
            },
        };
        self.sign(body)
    }

    fn own_certificate(
        &self,
        seq: SequenceNumber,
        digest: Digest,
        copies: usize,
    ) -> CommitCertificate {
        let signature = self
            .key
            .sign(&commit_signing_bytes(CHAIN_ID, 0, seq, &digest));
        CommitCertificate {
            seq,
            view: 0,
            digest,
            signatures: vec![(self.identity, signature); copies],
        }
    }

    fn forged_prepared(
        &mut self,
        context: &Context<'_>,
        new_view: View,
        seq: SequenceNumber,
    ) -> Box<PreparedCertificate> {
        // A view before `new_view` it was primary of, if any.
        let n = u64::from(context.validators.len());
        let view = (0..new_view)
            .rev()
            .take(n as usize)
            .find(|v| context.validators.primary(*v) == self.identity)
            .unwrap_or(new_view.saturating_sub(1));
        let parent = (context.committed)(seq - 1).unwrap_or_default();
        let (digest, block) = self.made_up_block(seq, parent);
        let pre_prepare = self.sign(Body::PrePrepare {
            view,
            seq,
            digest,
            block,
        });
        let quorum = context.validators.quorum() as usize;
        let mut prepares: Vec<SignedMessage> =
            self.prepares.iter().rev().take(quorum).cloned().collect();
        prepares.push(self.sign(Body::Prepare { view, seq, digest }));
        Box::new(PreparedCertificate {
            pre_prepare,
            prepares,
        })
    }
}

fn view_change(
    new_view: View,
    committed_seq: SequenceNumber,
    committed: Option<CommitCertificate>,
    prepared: Option<Box<PreparedCertificate>>,
) -> Body {
    Body::ViewChange(ViewChange {
        new_view,
        committed_seq,
        committed,
        prepared,
    })
}
