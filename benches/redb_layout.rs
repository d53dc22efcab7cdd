//! What one checkpoint interval of state tree writes costs redb, by key
//! layout (BENCHMARKS.md, "the state tree's key layout"). It measures redb
//! alone: the version layout it favours was then built into the ledger
//! and measured slower end to end ("the state tree's nodes by version").
//!
//! A table of `--rows` nodes (34-byte keys, 65-byte values, as the state
//! tree stores them) takes `--blocks` commits of `--per-block` node writes
//! each, without `fsync` but the last, which is durable: one checkpoint
//! interval of `Ledger::append`. Four layouts:
//!
//! - *by path*: a node's key is its path, so a write rewrites a row at a
//!   random place (the layout today);
//! - *by version*: a node's key starts with the height that wrote it, so a
//!   block's nodes are appended at the end of the table and the rows they
//!   replace stay (the Jellyfish Merkle tree's layout, stale nodes left for
//!   a later collection);
//! - *by version, stale deleted*: the same, deleting in the same commit
//!   the row each write replaces;
//! - *by version, stale collected*: the same, the replaced rows recorded
//!   and left until they are as many as the live ones, then deleted in one
//!   durable pass in key order (a collector could spread that pass over
//!   many appends, a key range each).
//!
//! It prints the milliseconds of each interval: its commits without
//! `fsync`, and the durable one; for the collected layout, enough
//! intervals to collect once, the pass, and the cost per interval with the
//! pass spread over them.
//!
//!     make bench-redb-layout
//!     cargo bench -p govchain-benches --bench redb_layout -- --rows 350000 --per-block 240 --blocks 64 --rounds 3
//!
//! Run by `cargo test --all-targets` (no `--bench` argument) it does the
//! same on 5,000 rows (one collection after 26 intervals) and checks the
//! row counts: a smoke test.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use govchain_crypto::DomainHasher;
use redb::{Database, Durability, ReadableDatabase, ReadableTableMetadata, TableDefinition};

const NODES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("nodes");
/// A tag and two digests, as the state tree encodes an internal node.
const NODE: [u8; 65] = [7; 65];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    Path,
    Version,
    VersionStaleDeleted,
    VersionCollected,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Path => "by path",
            Layout::Version => "by version",
            Layout::VersionStaleDeleted => "by version, stale deleted",
            Layout::VersionCollected => "by version, stale collected",
        }
    }

    /// The key of node `n` written at `version`: 34 bytes either way.
    fn key(self, version: u64, n: u64) -> Vec<u8> {
        let hash = DomainHasher::new("redb-layout/node").u64(n).finish();
        match self {
            // A depth and 32 bytes of key hash prefix.
            Layout::Path => [&[0, 17][..], hash.as_bytes()].concat(),
            // The version, then the path's first 26 bytes.
            Layout::Version | Layout::VersionStaleDeleted | Layout::VersionCollected => {
                [&version.to_be_bytes()[..], &hash.as_bytes()[..26]].concat()
            }
        }
    }
}

struct Options {
    rows: u64,
    per_block: u64,
    blocks: u64,
    rounds: u64,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|arg| arg == "--bench") {
        return Options {
            rows: 5_000,
            per_block: 50,
            blocks: 4,
            rounds: 1,
        };
    }
    let value = |name: &str, default: u64| {
        args.iter()
            .position(|arg| arg == name)
            .map_or(default, |at| {
                let given = args
                    .get(at + 1)
                    .unwrap_or_else(|| panic!("{name} needs a number"));
                given
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}: not a number: {given}"))
            })
    };
    Options {
        rows: value("--rows", 350_000),
        per_block: value("--per-block", 240),
        blocks: value("--blocks", 64),
        rounds: value("--rounds", 3),
    }
}

/// A row of the loaded table, picked by `seed`.
fn pick(seed: u64, rows: u64) -> u64 {
    let hash = DomainHasher::new("redb-layout/pick").u64(seed).finish();
    let bytes = hash.as_bytes();
    u64::from_be_bytes(bytes[..8].try_into().unwrap()) % rows
}

fn run(layout: Layout, options: &Options) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::builder()
        .set_cache_size(256 << 20)
        .create(dir.path().join("nodes.redb"))
        .unwrap();
    // The table as a snapshot install leaves it: every row at version 0,
    // inserted in key order.
    let write = db.begin_write().unwrap();
    {
        let mut table = write.open_table(NODES).unwrap();
        let mut keys: Vec<_> = (0..options.rows).map(|n| layout.key(0, n)).collect();
        keys.sort_unstable();
        for key in &keys {
            table.insert(&key[..], &NODE[..]).unwrap();
        }
    }
    write.commit().unwrap();

    let mut version = 1;
    let mut seed = 0;
    let mut expected = options.rows;
    // The version of each node's live row, and the rows replaced since.
    let mut live = vec![0_u64; usize::try_from(options.rows).unwrap()];
    let mut stale: Vec<Vec<u8>> = Vec::new();
    let mut intervals_ms = Vec::new();
    let mut collected = None;
    // Enough intervals for one collection, where there is one.
    let rounds = if layout == Layout::VersionCollected {
        let per_round = options.per_block * options.blocks;
        options.rounds.max(options.rows.div_ceil(per_round) + 1)
    } else {
        options.rounds
    };
    for round in 0..rounds {
        let mut unsynced_ms = 0.0;
        let mut durable_ms = 0.0;
        for block in 0..options.blocks {
            let started = Instant::now();
            let mut write = db.begin_write().unwrap();
            let durable = block + 1 == options.blocks;
            if !durable {
                write.set_durability(Durability::None).unwrap();
            }
            {
                let mut table = write.open_table(NODES).unwrap();
                // The nodes this block replaces.
                let mut replaced: Vec<usize> = (0..options.per_block)
                    .map(|i| usize::try_from(pick(seed + i, options.rows)).unwrap())
                    .collect();
                seed += options.per_block;
                replaced.sort_unstable();
                replaced.dedup();
                let mut keys: Vec<_> = replaced
                    .iter()
                    .map(|&n| layout.key(version, n as u64))
                    .collect();
                keys.sort_unstable();
                for key in &keys {
                    table.insert(&key[..], &NODE[..]).unwrap();
                }
                // The rows the new ones replace, for the layouts that keep
                // them apart.
                let old = || {
                    let mut old: Vec<_> = replaced
                        .iter()
                        .map(|&n| layout.key(live[n], n as u64))
                        .collect();
                    old.sort_unstable();
                    old
                };
                match layout {
                    Layout::Path => {}
                    Layout::Version => expected += keys.len() as u64,
                    Layout::VersionStaleDeleted => {
                        for key in &old() {
                            assert!(table.remove(&key[..]).unwrap().is_some(), "a live row");
                        }
                    }
                    Layout::VersionCollected => {
                        expected += keys.len() as u64;
                        stale.extend(old());
                    }
                }
                for &n in &replaced {
                    live[n] = version;
                }
            }
            write.commit().unwrap();
            let elapsed = started.elapsed().as_secs_f64() * 1e3;
            if durable {
                durable_ms += elapsed;
            } else {
                unsynced_ms += elapsed;
            }
            version += 1;
        }
        intervals_ms.push(unsynced_ms + durable_ms);
        if layout == Layout::VersionCollected
            && collected.is_none()
            && stale.len() as u64 >= options.rows
        {
            let started = Instant::now();
            let write = db.begin_write().unwrap();
            {
                let mut table = write.open_table(NODES).unwrap();
                stale.sort_unstable();
                for key in &stale {
                    assert!(table.remove(&key[..]).unwrap().is_some(), "a stale row");
                }
            }
            write.commit().unwrap();
            let pass_ms = started.elapsed().as_secs_f64() * 1e3;
            expected -= stale.len() as u64;
            collected = Some((stale.len(), pass_ms, intervals_ms.len()));
            stale.clear();
        }
        let read = db.begin_read().unwrap();
        let rows = read.open_table(NODES).unwrap().len().unwrap();
        assert_eq!(
            rows,
            expected,
            "{}: rows after round {round}",
            layout.name()
        );
        if round < options.rounds {
            println!(
                "{:<27} round {round}: {} commits of {} node writes: {:7.1} ms ({:6.1} without fsync, {:6.1} the durable one), {rows} rows",
                layout.name(),
                options.blocks,
                options.per_block,
                unsynced_ms + durable_ms,
                unsynced_ms,
                durable_ms,
            );
        }
    }
    if let Some((stale_rows, pass_ms, intervals)) = collected {
        let mean = intervals_ms[..intervals].iter().sum::<f64>() / intervals as f64;
        println!(
            "{:<27} {intervals} intervals, {mean:.1} ms each on average; then one pass deleting {stale_rows} stale rows: {pass_ms:.1} ms; spread over the intervals, {:.1} ms per interval",
            layout.name(),
            mean + pass_ms / intervals as f64,
        );
    }
}

fn main() {
    let options = options();
    for layout in [
        Layout::Path,
        Layout::Version,
        Layout::VersionStaleDeleted,
        Layout::VersionCollected,
    ] {
        run(layout, &options);
    }
}
