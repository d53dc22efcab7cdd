//! Criterion micro-benchmarks for the hot paths of a validator: admitting a
//! transaction, building, checking and appending a block, Merkle roots, the
//! PBFT state machine (through the simulator), the state tree's batch
//! update and proofs, and content-addressing a file. `cargo bench -p govchain-benches` (or `make bench-micro`) measures;
//! `cargo test` runs every benchmark once, on small inputs, as a smoke test.
//!
//! Speed is measured here, never asserted (see BENCHMARKS.md).

mod admission;
mod blob;
mod block;
mod fixtures;
mod merkle;
mod pbft;
mod state_tree;

use criterion::{criterion_group, criterion_main};

criterion_group!(
    micro,
    admission::bench,
    block::bench,
    merkle::bench,
    pbft::bench,
    state_tree::bench,
    blob::bench
);
criterion_main!(micro);
