//! The rules of the chain: what a valid transaction is, how a block is built
//! and checked, and how transactions change world state.
//!
//! **Invariant:** execution is deterministic: it never reads a clock, never
//! iterates a `HashMap`, and reads state only through [`StateRead`]. Two
//! nodes that execute the same blocks on the same state get the same writes
//! and the same state root, and the state root commits to the whole state
//! (see [`state_tree`]): a value and its proof verify against it.
#![forbid(unsafe_code)]

mod batch;
mod block;
pub mod departments;
mod execute;
// `refuse_unless!` is shared with `approval`, declared after it.
#[macro_use]
pub mod identity;
pub mod approval;
pub mod directory;
pub mod governance;
mod state;
pub mod state_tree;
mod transaction;

pub use batch::{
    AssembleError, CheckedProposal, assemble_block, batch_digest, decode_proposal, encode_proposal,
    proposal_digest, proposal_validators, push_slice,
};
pub use block::{
    BlockError, BlockLimits, BuiltBlock, CheckContext, CheckedBlock, ExecutedBlock, Head,
    block_digest, block_hash, build_block, check_block, check_block_reusing, check_fetched_block,
    decode_header,
};
pub use departments::{Department, Departments};
pub use execute::{Replayed, anchor_key, apply_committed, dataset_owner, precheck};
pub use identity::Refusal;
pub use state::{StateError, StateRead, nonce_key, read_nonce};
pub use state_tree::{
    EMPTY_ROOT, MemoryTree, ProofError, StateProof, TreeRead, TreeUpdate, prove, update_tree,
};
pub use transaction::{
    TRANSACTION_ENVELOPE_OVERHEAD_BYTES_MAX, TRANSACTION_KINDS, TransactionError,
    VerifiedTransaction, body_kind, check_envelope, check_envelope_with, decode_envelope,
    transaction_id,
};
