//! PBFT (Castro and Liskov, OSDI '99) as a deterministic state machine.
//!
//! The whole API is [`Replica::step`]: an [`Event`] in, a list of [`Action`]s
//! out. The replica never reads a clock (time arrives in [`Event::Tick`]),
//! never performs I/O and never spawns work, so the same code runs in the node
//! and, seeded, in simulation.
//!
//! **Invariant:** a replica sends at most one prepare and one commit per
//! `(view, seq)`, accepts at most one pre-prepare per `(view, seq)`, and
//! delivers sequence numbers in order, each exactly once, only with a quorum
//! of matching commit signatures.
//!
//! This version implements the normal case (pre-prepare, prepare, commit).
//! The messages for checkpoints and view changes are defined so the wire
//! format is stable, but a replica rejects them until view change lands.
#![forbid(unsafe_code)]

mod message;
mod quorum;
mod replica;

pub use message::{
    Body, CertificateCheck, CertificateError, CommitCertificate, NewView, PreparedCertificate,
    PreparedCertificateError, SignedMessage, TransferError, Transferred, ViewChange,
    check_transferred, commit_signing_bytes, verify_commit_certificate, verify_commit_certificates,
};
pub use quorum::{ValidatorSet, ValidatorSetError};
// The new-view rule is public so that the simulator's Byzantine primaries
// build new-views exactly as a correct one would, instead of a copy of it.
pub use replica::{
    Action, Config, Decision, Epoch, Event, Record, RejectReason, Replica, Restored, decide,
};

/// Index of a validator: genesis validators are `0..n`, later ones get the
/// next unused index (see [`ValidatorSet`]).
pub type ReplicaIndex = u32;
/// A PBFT view; the primary of view `v` is validator `v mod n`.
pub type View = u64;
/// A PBFT sequence number; equal to the block height it orders.
pub type SequenceNumber = u64;
