//! What a twin did. The twin is a second process running correct code with
//! an honest validator's key; the harm it can do is that honest replicas
//! receive, for one slot, two different messages signed with that key, one
//! from each instance. [`TwinWatch`] counts the twin's messages that reached
//! honest replicas and the slots where the two instances' versions differ,
//! so that a scenario can assert the twin really acted.

use std::collections::BTreeMap;

use govchain_crypto::Digest;
use govchain_pbft::{Body, SequenceNumber, SignedMessage, View};

/// Slots remembered; past the bound the oldest is forgotten (its conflict,
/// if any, is already counted).
const SLOTS_REMEMBERED_MAX: usize = 4_096;

/// The kinds of message that name a digest for a `(view, seq)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    PrePrepare,
    Prepare,
    Commit,
}

/// The digests honest replicas received for one slot from each instance.
#[derive(Default)]
struct Versions {
    original: Option<Digest>,
    twin: Option<Digest>,
    counted: bool,
}

#[derive(Default)]
pub struct TwinWatch {
    slots: BTreeMap<(Kind, View, SequenceNumber), Versions>,
    twin_messages: u64,
    conflicts: u64,
}

impl TwinWatch {
    /// A message from one instance of the twinned validator (`from_twin`:
    /// the second process) reached an honest replica.
    pub fn on_received(&mut self, from_twin: bool, message: &SignedMessage) {
        if from_twin {
            self.twin_messages += 1;
        }
        let (kind, view, seq, digest) = match &message.body {
            Body::PrePrepare {
                view, seq, digest, ..
            } => (Kind::PrePrepare, *view, *seq, *digest),
            Body::Prepare { view, seq, digest } => (Kind::Prepare, *view, *seq, *digest),
            Body::Commit { view, seq, digest } => (Kind::Commit, *view, *seq, *digest),
            Body::ViewChange(_) | Body::NewView(_) | Body::Checkpoint { .. } => return,
        };
        let versions = self.slots.entry((kind, view, seq)).or_default();
        let mine = if from_twin {
            &mut versions.twin
        } else {
            &mut versions.original
        };
        mine.get_or_insert(digest);
        if let (Some(original), Some(twin)) = (versions.original, versions.twin)
            && original != twin
            && !versions.counted
        {
            versions.counted = true;
            self.conflicts += 1;
        }
        while self.slots.len() > SLOTS_REMEMBERED_MAX {
            self.slots.pop_first();
        }
    }

    /// Messages of the twin (the second process) that honest replicas
    /// received.
    pub fn twin_messages(&self) -> u64 {
        self.twin_messages
    }

    /// Slots `(kind, view, seq)` for which honest replicas received one
    /// digest from the original and another from the twin.
    pub fn conflicts(&self) -> u64 {
        self.conflicts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{CHAIN_ID, key};

    fn prepare(seq: SequenceNumber, digest: Digest) -> SignedMessage {
        SignedMessage::sign(
            CHAIN_ID,
            0,
            &key(0),
            Body::Prepare {
                view: 0,
                seq,
                digest,
            },
        )
    }

    #[test]
    fn a_slot_with_two_versions_counts_once() {
        let mut watch = TwinWatch::default();
        let (a, b) = (Digest::sha256(b"a"), Digest::sha256(b"b"));
        watch.on_received(false, &prepare(1, a));
        watch.on_received(true, &prepare(1, a));
        assert_eq!(watch.conflicts(), 0, "the same version from both");
        watch.on_received(true, &prepare(2, b));
        assert_eq!(watch.conflicts(), 0, "only the twin's version so far");
        watch.on_received(false, &prepare(2, a));
        watch.on_received(false, &prepare(2, a));
        watch.on_received(true, &prepare(2, b));
        assert_eq!(watch.conflicts(), 1);
        assert_eq!(watch.twin_messages(), 3);
    }
}
