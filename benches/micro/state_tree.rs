//! The state tree: one block's batch update (1,000 writes, half new keys,
//! half updates, on a tree of 100,000 keys), a proof, and a client's
//! verification of it.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use govchain_crypto::DomainHasher;
use govchain_exec::{MemoryTree, prove, update_tree};

use crate::fixtures::measuring;

type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// State keys of the size the chain uses (a prefix and a 32-byte id).
fn key(index: u64) -> Vec<u8> {
    let id = DomainHasher::new("bench/state-key").u64(index).finish();
    [&b"anchor/"[..], id.as_bytes()].concat()
}

/// A stored anchor's size, about.
fn value(index: u64, version: u64) -> Vec<u8> {
    let mut value = vec![0_u8; 200];
    value[..8].copy_from_slice(&index.to_be_bytes());
    value[8..16].copy_from_slice(&version.to_be_bytes());
    value
}

pub fn bench(c: &mut Criterion) {
    let (keys, writes_per_block) = if measuring() {
        (100_000, 1_000)
    } else {
        (2_000, 100)
    };
    let mut tree = MemoryTree::default();
    let initial: Writes = (0..keys).map(|i| (key(i), Some(value(i, 1)))).collect();
    let built = update_tree(&tree, &initial).expect("initial tree");
    tree.apply(&built.writes);
    let root = built.root;

    // Half the block's writes update existing keys, half add new ones.
    let block: Writes = (0..writes_per_block)
        .map(|i| {
            let index = if i % 2 == 0 { i * 37 % keys } else { keys + i };
            (key(index), Some(value(index, 2)))
        })
        .collect();

    // What the ledger stores per block besides the state rows: one row per
    // tree node the update rewrites.
    let rows = update_tree(&tree, &block).expect("update").writes.len();
    println!(
        "state_tree: a block of {writes_per_block} writes on {keys} keys rewrites {rows} tree nodes ({:.1} per write)",
        rows as f64 / writes_per_block as f64
    );

    let mut group = c.benchmark_group("state_tree");
    group.throughput(Throughput::Elements(writes_per_block));
    group.bench_function(
        BenchmarkId::new(
            "block_update",
            format!("{writes_per_block}_writes_{keys}_keys"),
        ),
        |b| b.iter(|| update_tree(&tree, black_box(&block)).expect("update")),
    );
    group.throughput(Throughput::Elements(1));
    let present = key(keys / 2);
    let present_value = value(keys / 2, 1);
    group.bench_function(BenchmarkId::new("prove", keys), |b| {
        b.iter(|| prove(&tree, black_box(&present)).expect("prove"))
    });
    let proof = prove(&tree, &present).expect("prove");
    group.bench_function(BenchmarkId::new("verify", keys), |b| {
        b.iter(|| {
            proof
                .verify(&root, black_box(&present), Some(&present_value))
                .expect("verifies")
        })
    });
    let absent = key(keys * 10);
    let absence = prove(&tree, &absent).expect("prove");
    group.bench_function(BenchmarkId::new("verify_absent", keys), |b| {
        b.iter(|| {
            absence
                .verify(&root, black_box(&absent), None)
                .expect("verifies")
        })
    });
    group.finish();
}
