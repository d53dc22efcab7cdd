//! Content-addressing a file: the IPFS unixfs-v1-2025 CID of 64 MiB
//! (chunking, SHA-256 of every 1 MiB leaf, the dag-pb root), against plain
//! SHA-256 of the same bytes as the ceiling it can approach.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput};
use govchain_blobstore::{PROFILE_UNIXFS_V1_2025, cid_of_reader};
use govchain_crypto::Digest;

use crate::fixtures::measuring;

const FILE_SIZE_BYTES: usize = 64 * 1024 * 1024;
/// What `cargo test` hashes instead: just over one chunk, so that the test
/// pass still builds a two-leaf DAG.
const FILE_SIZE_BYTES_TEST: usize = 1024 * 1024 + 1;

pub fn bench(c: &mut Criterion) {
    let size = if measuring() {
        FILE_SIZE_BYTES
    } else {
        FILE_SIZE_BYTES_TEST
    };
    let data = pseudo_random(size);
    let mut group = c.benchmark_group("blob");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Bytes(size as u64));
    let label = format!("{}_MiB", size >> 20);
    group.bench_function(format!("cid_unixfs_v1_2025/{label}"), |b| {
        b.iter(|| cid_of_reader(black_box(&data[..]), PROFILE_UNIXFS_V1_2025).expect("cid"))
    });
    group.bench_function(format!("sha256/{label}"), |b| {
        b.iter(|| Digest::sha256(black_box(&data)))
    });
    group.finish();
}

/// Incompressible bytes without a random-number crate (xorshift64).
fn pseudo_random(size: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut data = Vec::with_capacity(size + 8);
    while data.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_be_bytes());
    }
    data.truncate(size);
    data
}
