//! The transaction root of a block: an RFC 6962 Merkle root over the ids.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use govchain_crypto::{Digest, DomainHasher, merkle_root};

const LEAF_COUNTS: [u64; 3] = [100, 1_000, 10_000];

pub fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("merkle_root");
    for count in LEAF_COUNTS {
        let leaves: Vec<Digest> = (0..count)
            .map(|i| DomainHasher::new("bench/leaf").u64(i).finish())
            .collect();
        group.throughput(Throughput::Elements(count));
        group.bench_with_input(BenchmarkId::from_parameter(count), &leaves, |b, leaves| {
            b.iter(|| merkle_root(black_box(leaves)))
        });
    }
    group.finish();
}
