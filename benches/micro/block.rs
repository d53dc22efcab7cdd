//! A block of 10, 100 and 1,000 transactions: built by the primary, checked
//! by a backup (with every signature verified, and with the signatures
//! already verified at admission), and appended durably to a redb ledger in
//! a temporary directory on the real file system.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use govchain_crypto::{Digest, DomainHasher};
use govchain_exec::{
    BuiltBlock, CheckContext, StateError, TreeRead, build_block, check_block, update_tree,
};
use govchain_ledger::{AppendBlock, Ledger, consensus_key};
use prost::Message as _;

use crate::fixtures::{CHAIN, LIMITS, MemoryState, genesis, transactions};

const BLOCK_SIZES: [u64; 3] = [10, 100, 1_000];
/// A prepare or commit vote as the node stores it: a signed consensus
/// message of about this many bytes.
const VOTE_RECORD_BYTES: usize = 160;

pub fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("block");
    // The ledger benchmarks fsync; fewer, longer samples keep them steady.
    group.sample_size(20);
    for size in BLOCK_SIZES {
        let candidates = transactions(size);
        let state = MemoryState::default();
        let head = genesis();
        let build = || {
            build_block(CHAIN, &head, 0, 0, 1_000, &candidates, &LIMITS, &state).expect("builds")
        };
        let built = build();
        assert_eq!(u64::from(built.header.transaction_count), size);
        group.throughput(Throughput::Elements(size));
        group.bench_function(BenchmarkId::new("build", size), |b| b.iter(build));
        let context = CheckContext {
            chain_id: CHAIN,
            head: &head,
            limits: &LIMITS,
            timestamp_ms_max: u64::MAX,
        };
        for (name, verified) in [("check", false), ("check_already_verified", true)] {
            group.bench_function(BenchmarkId::new(name, size), |b| {
                b.iter(|| {
                    check_block(&context, &built.hash, &built.encoded, &state, |_, _| {
                        verified
                    })
                    .expect("checks")
                })
            });
        }
        for (name, keys) in [
            ("ledger_append", StateKeys::ByHeight),
            ("ledger_append_hashed_keys", StateKeys::Hashed),
        ] {
            let fixture = AppendFixture::new(&built, keys);
            let dir = tempfile::tempdir().expect("tempdir");
            let ledger = Ledger::open(dir.path(), CHAIN, head.hash).expect("open");
            group.bench_function(BenchmarkId::new(name, size), |b| {
                b.iter_custom(|iterations| {
                    (0..iterations)
                        .map(|_| fixture.append_next(&ledger))
                        .sum::<Duration>()
                })
            });
        }
    }
    group.finish();
    bench_vote_record(c);
}

/// One durable consensus record: what a validator writes before it sends a
/// prepare or a commit.
fn bench_vote_record(c: &mut Criterion) {
    let mut group = c.benchmark_group("consensus_record");
    group.sample_size(20);
    group.throughput(Throughput::Elements(1));
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Ledger::open(dir.path(), CHAIN, genesis().hash).expect("open");
    let mut seq = 0_u64;
    group.bench_function("durable_write", |b| {
        b.iter(|| {
            seq += 1;
            let record = (consensus_key(2, seq, 0, 0), vec![7_u8; VOTE_RECORD_BYTES]);
            ledger.consensus_write(&[record]).expect("write");
        })
    });
    group.finish();
}

/// Where a replayed block's state keys fall in the state table.
#[derive(Clone, Copy)]
enum StateKeys {
    /// The block's keys prefixed by its height: each block's writes are
    /// neighbours, at the table's end, and share leaves. The cheapest case.
    ByHeight,
    /// Hashed with the height: spread over the whole table, as the keys of
    /// records anchored by many departments are. Each write dirties its
    /// own leaf once the table has more leaves than the block has writes.
    Hashed,
}

/// The bytes a block of one size stores, replayed at any height with fresh
/// hashes, transaction ids and state keys, so that the ledger grows as it
/// does on a busy chain.
struct AppendFixture {
    encoded: Vec<u8>,
    results: Vec<Vec<u8>>,
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    keys: StateKeys,
}

impl AppendFixture {
    fn new(built: &BuiltBlock, keys: StateKeys) -> Self {
        Self {
            keys,
            encoded: built.encoded.to_vec(),
            results: built
                .executed
                .transactions
                .iter()
                .map(|(_, result)| result.encode_to_vec())
                .collect(),
            writes: built
                .executed
                .writes
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        }
    }

    /// Appends the next block and returns how long the append took; the
    /// preparation of its inputs is not counted.
    fn append_next(&self, ledger: &Ledger) -> Duration {
        let head = ledger.head();
        let height = head.height + 1;
        let transactions: Vec<(Digest, Vec<u8>)> = self
            .results
            .iter()
            .enumerate()
            .map(|(index, result)| {
                let id = DomainHasher::new("bench/tx")
                    .u64(height)
                    .u64(index as u64)
                    .finish();
                (id, result.clone())
            })
            .collect();
        let writes: BTreeMap<Vec<u8>, Option<Vec<u8>>> = self
            .writes
            .iter()
            .map(|(key, value)| {
                let key = match self.keys {
                    StateKeys::ByHeight => [&height.to_be_bytes()[..], key].concat(),
                    StateKeys::Hashed => DomainHasher::new("bench/state-key")
                        .u64(height)
                        .bytes(key)
                        .finish()
                        .to_vec(),
                };
                (key, value.clone())
            })
            .collect();
        // The state tree grows with the state, as on a node; its update is
        // execution's cost (see `state_tree`), its nodes are the append's.
        let tree = update_tree(&LedgerTree(ledger), &writes).expect("tree update");
        // Listing keys as a node writes for anchors (`node::queries`): the
        // signer's (spread like keys), the dataset's and block time's
        // (clustered at the end of their listings).
        let position = |index: usize| {
            [
                height.to_be_bytes().as_slice(),
                &(index as u32).to_be_bytes(),
            ]
            .concat()
        };
        let query_keys: Vec<Vec<u8>> = transactions
            .iter()
            .enumerate()
            .flat_map(|(index, (id, _))| {
                [
                    [&[1u8][..], id.as_bytes(), &position(index)].concat(),
                    [&[2u8][..], b"\0\0\0\x0cbench/record", &position(index)].concat(),
                    [&[5u8][..], &height.to_be_bytes(), &position(index)].concat(),
                ]
            })
            .collect();
        let block = AppendBlock {
            height,
            hash: DomainHasher::new("bench/block").u64(height).finish(),
            parent_hash: head.hash,
            state_root: tree.root,
            timestamp_ms: height,
            encoded: &self.encoded,
            transactions: &transactions,
            writes: &writes,
            tree_writes: &tree.writes,
            query_keys: &query_keys,
        };
        let start = Instant::now();
        ledger.append(&block).expect("append");
        start.elapsed()
    }
}

/// The ledger's stored state tree, as the node reads it.
struct LedgerTree<'a>(&'a Ledger);

impl TreeRead for LedgerTree<'_> {
    fn tree_node(&self, path: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.0
            .state_tree_node(path)
            .map_err(|err| StateError::Read(err.to_string()))
    }
}
