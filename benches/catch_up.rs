//! Catch-up of a node far behind: from a state snapshot against block by
//! block, on real processes (release build, mTLS, durable ledgers).
//!
//! Four validators build a state with a load of transactions, then commit
//! empty blocks as fast as consensus goes (genesis `empty_block_interval_ms
//! = 1`) until the chain holds `--blocks` blocks. Then two observers with
//! empty ledgers start at once: one with `state_sync = true` (the chain of
//! certificates up to a validator's head, the state in 256 checked parts,
//! then the blocks after it), one without (every block from genesis,
//! executed). Each is timed until it reaches the height the validators had
//! when both started, and its process's CPU time (user and system) is read
//! at that moment: the wall-clock ratio depends on what else shares the
//! cores, the CPU ratio does not.
//!
//!     make bench-catch-up                          # 100,000 blocks
//!     cargo bench -p govchain-cli --bench catch_up -- --blocks 20000 --load-seconds 30
//!
//! Run by `cargo test --all-targets` (no `--bench` argument) it does the
//! same on 300 blocks and a 2 s load: a smoke test of the harness.
#![allow(clippy::unwrap_used)]

#[path = "../integration/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use govchain_crypto::SigningKey;
use govchain_proto::node::v1::node_service_client::NodeServiceClient;
use govchain_proto::node::v1::{GetStatusRequest, SubmitTransactionsRequest};
use support::*;
use tonic::transport::Channel;

const OBSERVERS: [usize; 2] = [4, 5];
const STATE_SYNC: usize = 4;
const BLOCK_SYNC: usize = 5;

struct Options {
    blocks: u64,
    load_seconds: u64,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let benching = args.iter().any(|a| a == "--bench");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.parse::<u64>().unwrap())
    };
    let (blocks, load_seconds) = if benching { (100_000, 60) } else { (300, 2) };
    Options {
        blocks: value("--blocks").unwrap_or(blocks),
        load_seconds: value("--load-seconds").unwrap_or(load_seconds),
    }
}

/// Envelopes per `SubmitTransactions` call.
const LOAD_BATCH: usize = 500;

/// Submits batches of transactions, each from a signer of its own, to the
/// validators in turn for `seconds`; returns how many were admitted. A
/// refusal (a full mempool) backs off a little.
async fn load(clients: &mut [NodeServiceClient<Channel>], seconds: u64) -> usize {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut admitted = 0;
    let mut counter = 0_u64;
    let mut turn = 0;
    while Instant::now() < deadline {
        let envelopes: Vec<_> = (0..LOAD_BATCH)
            .map(|_| {
                counter += 1;
                let mut seed = [7_u8; 32];
                seed[..8].copy_from_slice(&counter.to_be_bytes());
                let key = SigningKey::from_seed(seed);
                sign(&key, 1, anchor_body(&format!("catch-up-{counter}")))
            })
            .collect();
        let client = &mut clients[turn % 4];
        turn += 1;
        let results = client
            .submit_transactions(SubmitTransactionsRequest { envelopes })
            .await
            .unwrap()
            .into_inner()
            .results;
        let ok = results.iter().filter(|r| r.code == 0).count();
        // Only a full mempool is expected; anything else is a broken harness.
        if let Some(refused) = results.iter().find(|r| r.code != 0 && r.code != 8) {
            panic!("load refused: {} (code {})", refused.message, refused.code);
        }
        admitted += ok;
        if ok < results.len() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    admitted
}

async fn height(cluster: &Cluster, i: usize) -> Option<u64> {
    let mut client = cluster.client(i).await.ok()?;
    let status = client.get_status(GetStatusRequest {}).await.ok()?;
    Some(status.into_inner().height)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let options = options();
    let dir = init_consortium(4, OBSERVERS.len());
    edit_genesis(&dir.path().join("certs"), |genesis| {
        genesis["consensus"]["empty_block_interval_ms"] = serde_json::json!(1);
    });
    let mut cluster = Cluster::start_prepared(dir, 2_000).await;
    for observer in OBSERVERS {
        cluster.kill_node(observer);
        let data = cluster.nodes[observer].data_dir.clone();
        std::fs::remove_dir_all(&data).unwrap();
        std::fs::create_dir_all(&data).unwrap();
    }

    let started = Instant::now();
    let mut clients = Vec::new();
    for i in 0..4 {
        clients.push(cluster.client(i).await.unwrap());
    }
    let submitted = load(&mut clients, options.load_seconds).await;
    eprintln!(
        "state: {submitted} transactions in {} s",
        started.elapsed().as_secs()
    );
    let mut last_report = Instant::now();
    loop {
        let now = height(&cluster, 0).await.unwrap_or(0);
        if now >= options.blocks {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(15) {
            eprintln!("chain at {now} of {} blocks", options.blocks);
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let target = height(&cluster, 0).await.unwrap();
    eprintln!(
        "chain built: {target} blocks in {} s",
        started.elapsed().as_secs()
    );

    let begin = Instant::now();
    cluster.start_node_with_env(STATE_SYNC, &[("GOVCHAIN_STATE_SYNC", "true")]);
    cluster.start_node(BLOCK_SYNC);
    let mut done: [Option<Duration>; 2] = [None, None];
    let mut cpu: [f64; 2] = [0.0; 2];
    let limit = Duration::from_secs(3_600);
    while done.iter().any(Option::is_none) {
        assert!(begin.elapsed() < limit, "no catch-up within {limit:?}");
        for (slot, observer) in [STATE_SYNC, BLOCK_SYNC].into_iter().enumerate() {
            if done[slot].is_none() && height(&cluster, observer).await.unwrap_or(0) >= target {
                done[slot] = Some(begin.elapsed());
                cpu[slot] = cpu_seconds(&cluster, observer);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = cluster.log_text(STATE_SYNC);
    let installed = log
        .lines()
        .find(|line| line.contains("installed a state snapshot"))
        .unwrap_or_else(|| {
            panic!(
                "no snapshot was installed:\n{}",
                cluster.log_tail(STATE_SYNC)
            )
        });
    // "checked the certificates up to the snapshot's block" carries the
    // time the header chain took (`chain_seconds`).
    let checked = log
        .lines()
        .find(|line| line.contains("checked the certificates up to"))
        .unwrap_or_default();
    let field_of = |line: &str, name: &str| {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(&format!("{name}=")))
            .unwrap_or("?")
            .to_owned()
    };
    let field = |name: &str| field_of(installed, name);
    let (snapshot, block) = (done[0].unwrap(), done[1].unwrap());
    println!("catch-up of a node {target} blocks behind ({submitted} transactions of state):");
    println!(
        "  state sync:  {:>8.1} s (snapshot at height {} with {} state entries, {:.1} MB of keys and values, installed in {} s, then the blocks after it)",
        snapshot.as_secs_f64(),
        field("height"),
        field("entries"),
        field("state_bytes").parse::<f64>().unwrap_or(f64::NAN) / 1e6,
        field("seconds"),
    );
    println!(
        "                         of which the chain of {} headers and certificates: {} s",
        field("height"),
        field_of(checked, "chain_seconds"),
    );
    println!(
        "  block sync:  {:>8.1} s (every block from genesis, executed)",
        block.as_secs_f64()
    );
    println!(
        "  ratio:       {:>8.1}x",
        block.as_secs_f64() / snapshot.as_secs_f64()
    );
    // Both observers and the validators share the machine's cores, so the
    // wall-clock ratio depends on what else runs; the CPU each observer
    // spent to get there does not.
    println!(
        "  CPU:         {:>8.1} s state sync, {:.1} s block sync ({:.1}x)",
        cpu[0],
        cpu[1],
        cpu[1] / cpu[0]
    );
}

/// The CPU time (user and system) node `i`'s process has used so far.
fn cpu_seconds(cluster: &Cluster, i: usize) -> f64 {
    let pid = cluster.nodes[i].child.as_ref().unwrap().id();
    let stat = procfs::process::Process::new(pid as i32)
        .unwrap()
        .stat()
        .unwrap();
    (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64
}
