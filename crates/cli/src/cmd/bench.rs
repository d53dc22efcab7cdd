//! `govchain bench`: a load generator that measures committed throughput and
//! submit-to-commit latency against real nodes, next to the signature
//! verification ceiling of the same machine, measured in the same run.

mod cpu;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use govchain_crypto::{Digest, PublicKey, Signature, SigningKey, verify_batch};
use govchain_proto::node::v1::node_service_client::NodeServiceClient;
use govchain_proto::node::v1::{
    GetStatusRequest, SubmitTransactionRequest, SubmitTransactionsRequest, SubscribeBlocksRequest,
    SubscribeBlocksResponse,
};
use govchain_proto::types::v1::{
    AnchorRecord, Transaction, TransactionEnvelope, transaction::Body,
};
use hdrhistogram::Histogram;
use prost::Message as _;
use serde::Serialize;
use tokio::sync::{Semaphore, oneshot};
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;

use crate::client::connect;
use crate::cmd::devnet::{self, DevnetArgs};
use crate::devnet_file::DevnetFile;

/// Transactions signed before a run, at most.
const TRANSACTIONS_MAX_DEFAULT: u64 = 200_000;
/// Requests in flight in open-loop mode, at most; beyond, sends are
/// counted as dropped rather than queued without bound.
const OPEN_LOOP_IN_FLIGHT_MAX: usize = 20_000;
/// How long to wait for transactions still in flight after the run.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// `--prefill`'s signers, one client each.
const PREFILL_SIGNERS: u64 = 2048;
/// `--prefill` signs and commits this many at a time, bounding the memory
/// its signed transactions take (a multiple of the signers, so that each
/// client keeps one signer).
const PREFILL_CHUNK: u64 = 64 * PREFILL_SIGNERS;
/// `--prefill` gives up on a signer whose transaction has not committed in
/// this long.
const PREFILL_STALL: Duration = Duration::from_secs(60);
/// How long the verification ceiling is measured.
const CEILING_MEASURE: Duration = Duration::from_millis(1500);
/// Signatures per batch when measuring the ceiling.
const CEILING_BATCH: usize = 64;

#[derive(Debug, Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `--concurrency` clients, each waiting for its transaction to commit
    /// before sending the next.
    Closed,
    /// A fixed `--rate`, whatever the latency; latency counts from when each
    /// transaction was due, so a stalled node is not hidden (no coordinated
    /// omission).
    Open,
}

/// How the load generator hands transactions to the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Submit {
    /// One `SubmitTransaction` call per transaction.
    Single,
    /// A batcher per node gathers what the clients send for up to
    /// `BATCH_LINGER` (or 1,024 transactions) into one `SubmitTransactions`
    /// call, as a department's gateway would.
    Batch,
}

/// How long a node's batcher waits for more transactions before sending.
const BATCH_LINGER: Duration = Duration::from_millis(2);
/// Transactions per `SubmitTransactions` call, at most (the node's bound).
const BATCH_TRANSACTIONS_MAX: usize = 1024;
/// `SubmitTransactions` calls one batcher has in flight at once.
const BATCH_CALLS_IN_FLIGHT_MAX: usize = 8;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    govchain bench                                  # 4 validators, closed loop, 30 s\n  \
    govchain bench --validators 7 --duration 20s --json out.json\n  \
    govchain bench --mode open --rate 2000 --duration 20s\n  \
    govchain bench --submit batch                   # SubmitTransactions, batched per node\n  \
    govchain bench --dir devnet                     # against a running devnet\n  \
    govchain bench --prefill 200000 --submit batch  # on a chain of 200,000 transactions\n\n\
The ceiling is what this machine can verify: Ed25519 batch verifications per\n\
second on all cores, divided by the number of validators (each verifies\n\
every signature once), measured before and after the load; the mean is used.\n\
Throughput is reported as a ratio of it, since absolute figures on shared\n\
machines vary between runs.\n\n\
CPU per tx is one validator's CPU time per committed transaction (all\n\
nodes' CPU, divided by validators and committed transactions), split by\n\
the nodes' threads (admission, consensus, tokio's gRPC/TLS workers) and,\n\
within the consensus thread, by the nodes' execution and ledger counters\n\
on /metrics; signatures are the nodes' own count of the CPU their batch\n\
verifications took. Linux only (it reads /proc).")]
pub struct BenchArgs {
    /// Validators of the devnet the bench starts (ignored with --dir).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub validators: u32,
    /// Measured run time, e.g. 30s, 500ms, 2m.
    #[arg(long, value_name = "TIME", default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    #[arg(long, value_enum, default_value_t = Mode::Closed)]
    pub mode: Mode,
    /// One call per transaction, or batches per node (SubmitTransactions).
    #[arg(long, value_enum, default_value_t = Submit::Single)]
    pub submit: Submit,
    /// Closed loop: clients in flight.
    #[arg(long, value_name = "C", default_value_t = 256)]
    pub concurrency: u32,
    /// Open loop: transactions per second.
    #[arg(long, value_name = "TPS", default_value_t = 1000)]
    pub rate: u32,
    /// Most transactions to pre-sign (bounds memory and the run).
    #[arg(long, value_name = "N", default_value_t = TRANSACTIONS_MAX_DEFAULT)]
    pub transactions_max: u64,
    /// Before the measured run, commit N transactions of 2,048 other
    /// signers (batched, closed loop) and wait for all of them: the run
    /// then measures a chain that already holds them, as a node in service
    /// would. Costs grow with the state, so a fresh devnet flatters.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub prefill: u64,
    /// Use the running devnet in DIR instead of starting one.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Also write the report as JSON to FILE.
    #[arg(long = "json-out", visible_alias = "json-file", value_name = "FILE")]
    pub json_out: Option<PathBuf>,
    /// Write the report as JSON to this file, as --json-out does: so
    /// `govchain bench --json out.json` prints JSON and writes out.json.
    #[arg(value_name = "JSON_FILE")]
    pub json_file: Option<PathBuf>,
    /// After the transactions, upload and download a blob of this many MiB
    /// over mTLS and compare with single-core SHA-256 of the same bytes,
    /// measured in the same run; 0 skips it.
    #[arg(long, value_name = "MIB", default_value_t = 0)]
    pub blob_mib: u64,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(text.len()),
    );
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 500ms or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit {unit:?} in {text:?}; use ms, s or m")),
    };
    if !(0.0..=3600.0).contains(&seconds) {
        return Err(format!("{text:?} is out of range (at most an hour)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: Mode,
    pub submit: Submit,
    pub validators: usize,
    /// Transactions `--prefill` committed before the run (0 without it).
    pub prefilled: u64,
    pub duration_s: f64,
    pub submitted: u64,
    pub rejected: u64,
    pub dropped: u64,
    pub committed: u64,
    pub committed_tps: f64,
    /// The mean of the two measurements, before and after the load.
    pub verifications_per_second: f64,
    /// `verifications_per_second` / validators.
    pub ceiling_tps: f64,
    /// The ceiling measured before the load, and after it: how far the
    /// machine drifted during the run.
    pub ceiling_tps_before: f64,
    pub ceiling_tps_after: f64,
    /// `committed_tps` / `ceiling_tps`.
    pub ratio: f64,
    pub signing_tps: f64,
    pub latency_ms: Latency,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub blocks: u64,
    pub mean_block_interval_ms: f64,
    pub mean_block_transactions: f64,
    pub view_changes: u64,
    pub node_cpu_cores: f64,
    /// One validator's CPU per committed transaction, in µs, and where it
    /// goes (`cpu::Split`); absent where /proc does not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_us_per_tx: Option<cpu::Split>,
    pub machine_cores: usize,
    /// With `--blob-mib`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blob: Option<BlobReport>,
}

impl Report {
    /// Adds the ceiling measured after the run (`verifications_per_second`
    /// then): the report's ceiling and ratio use the mean of both.
    fn include_ceiling_after(&mut self, verifications_per_second: f64) {
        let validators = self.validators as f64;
        let before = self.ceiling_tps_before * validators;
        self.verifications_per_second = (before + verifications_per_second) / 2.0;
        self.ceiling_tps_after = verifications_per_second / validators;
        self.ceiling_tps = self.verifications_per_second / validators;
        self.ratio = self.committed_tps / self.ceiling_tps;
    }
}

/// Blob transfer over mTLS against hashing the same bytes on one core.
#[derive(Debug, Serialize)]
pub struct BlobReport {
    pub bytes: u64,
    pub upload_mb_s: f64,
    pub download_mb_s: f64,
    /// SHA-256 of the same bytes on one core, in MB/s (10^6 bytes).
    pub sha256_mb_s: f64,
    /// Upload MB/s as a fraction of single-core SHA-256 MB/s.
    pub upload_ratio: f64,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// Shared between the submitters and the block follower.
#[derive(Default)]
struct Tracker {
    /// Transaction id -> when it was due (open) or sent (closed), and who
    /// waits for it.
    waiting: HashMap<Digest, (Instant, Option<oneshot::Sender<()>>)>,
    committed: u64,
    latencies: Vec<u64>,
    block_times: Vec<u64>,
    block_sizes: Vec<u64>,
}

pub async fn run(args: BenchArgs, json: bool) -> anyhow::Result<()> {
    if args.concurrency == 0 || args.rate == 0 {
        bail!("--concurrency and --rate must be above zero");
    }
    let json_out = json_path(&args)?.cloned();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    eprintln!("measuring the signature verification ceiling on {cores} cores...");
    let verifications_per_second =
        tokio::task::spawn_blocking(move || measure_verifications(cores)).await?;

    let (dir, _temp, mut children) = match &args.dir {
        Some(dir) => (dir.clone(), None, Vec::new()),
        None => start_devnet(args.validators).await?,
    };
    let file = DevnetFile::load(&dir)?;
    let mut result = drive(&args, &dir, &file, verifications_per_second, cores).await;
    if let Ok(report) = &mut result {
        // Measured again, so that a machine that got faster or slower
        // during the run moves both ends of the ratio alike.
        eprintln!("measuring the ceiling again after the run...");
        let after = tokio::task::spawn_blocking(move || measure_verifications(cores)).await?;
        report.include_ceiling_after(after);
    }
    if args.blob_mib > 0
        && let Ok(report) = &mut result
    {
        match blob_phase(&dir, &file, args.blob_mib).await {
            Ok(blob) => report.blob = Some(blob),
            Err(err) => result = Err(err.context("the blob measurement failed")),
        }
    }
    if !children.is_empty() {
        devnet::stop_children(&mut children);
    }
    let report = result?;
    print_report(&report, json)?;
    if let Some(path) = &json_out {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Where the JSON report goes: `--json-out` or the positional file, which
/// must agree if both are given.
fn json_path(args: &BenchArgs) -> anyhow::Result<Option<&PathBuf>> {
    match (&args.json_out, &args.json_file) {
        (Some(flag), Some(file)) if flag != file => bail!(
            "two JSON files given, {} (--json-out) and {}: give one",
            flag.display(),
            file.display()
        ),
        (flag, file) => Ok(flag.as_ref().or(file.as_ref())),
    }
}

async fn start_devnet(
    validators: u32,
) -> anyhow::Result<(
    PathBuf,
    Option<tempfile_dir::TempDir>,
    Vec<std::process::Child>,
)> {
    let temp = tempfile_dir::TempDir::new()?;
    let dir = temp.path().join("devnet");
    let args = DevnetArgs {
        command: None,
        dir: dir.clone(),
        validators,
        base_port: 0,
        metrics_base_port: None,
        portal_base_port: None,
        reset: false,
        detach: false,
        no_demo: true,
    };
    let file = devnet::prepare(&dir, &args)?;
    file.save(&dir)?;
    let mut children = devnet::start_nodes(&dir, &file, false)?;
    if let Err(err) = devnet::wait_until_connected(&dir, &file, &mut children).await {
        devnet::stop_children(&mut children);
        return Err(err);
    }
    Ok((dir, Some(temp), children))
}

/// A temporary folder removed on drop, without a dependency for it.
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> std::io::Result<Self> {
            let path = std::env::temp_dir().join(format!(
                "govchain-bench-{}-{}",
                std::process::id(),
                crate::cmd::bench::nanos()
            ));
            std::fs::create_dir_all(&path)?;
            Ok(Self(path))
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub(crate) fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Ed25519 batch verifications per second, all cores busy.
fn measure_verifications(cores: usize) -> f64 {
    let key = SigningKey::from_seed([42; 32]);
    let messages: Vec<Vec<u8>> = (0..CEILING_BATCH)
        .map(|i| format!("ceiling {i}").into_bytes())
        .collect();
    let signatures: Vec<Signature> = messages.iter().map(|m| key.sign(m)).collect();
    let keys: Vec<PublicKey> = vec![key.public_key(); CEILING_BATCH];
    let counts: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..cores)
            .map(|_| {
                scope.spawn(|| {
                    let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
                    let start = Instant::now();
                    let mut verified = 0u64;
                    while start.elapsed() < CEILING_MEASURE {
                        if verify_batch(&refs, &signatures, &keys).is_ok() {
                            verified += CEILING_BATCH as u64;
                        }
                    }
                    verified
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
    });
    counts.iter().sum::<u64>() as f64 / CEILING_MEASURE.as_secs_f64()
}

/// Pre-signed transactions `first..first + count` of `signers` signers derived from
/// `salt`: transaction `j` is signer `j mod signers`'s nonce
/// `j / signers + 1`.
fn presign(
    chain_id: &str,
    first: u64,
    count: u64,
    signers: u64,
    salt: u128,
) -> Vec<(Digest, TransactionEnvelope)> {
    let keys: Vec<SigningKey> = (0..signers)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..16].copy_from_slice(&salt.to_be_bytes());
            seed[16..24].copy_from_slice(&i.to_be_bytes());
            SigningKey::from_seed(seed)
        })
        .collect();
    (first..first + count)
        .map(|j| {
            let key = &keys[(j % signers) as usize];
            let nonce = j / signers + 1;
            let body = Body::AnchorRecord(AnchorRecord {
                dataset: "bench".into(),
                record_id: format!("{salt}-{j}"),
                record_hash: Digest::sha256(&j.to_be_bytes()).to_vec(),
                schema: "bench/v1".into(),
                record_time_ms: 0,
            });
            let payload = Bytes::from(Transaction { body: Some(body) }.encode_to_vec());
            let signer = key.public_key();
            let id = govchain_exec::transaction_id(chain_id, signer.as_bytes(), nonce, &payload);
            let envelope = TransactionEnvelope {
                payload,
                signer: signer.as_bytes().to_vec(),
                signature: key.sign(id.as_bytes()).to_vec(),
                chain_id: chain_id.to_owned(),
                nonce,
            };
            (id, envelope)
        })
        .collect()
}

async fn clients(
    dir: &std::path::Path,
    file: &DevnetFile,
) -> anyhow::Result<Vec<NodeServiceClient<Channel>>> {
    let mut clients = Vec::new();
    for i in 0..file.nodes.len() {
        clients.push(connect(&devnet::target(dir, file, i)).await?);
    }
    Ok(clients)
}

async fn drive(
    args: &BenchArgs,
    dir: &std::path::Path,
    file: &DevnetFile,
    verifications_per_second: f64,
    cores: usize,
) -> anyhow::Result<Report> {
    let clients = clients(dir, file).await?;
    let validators = file.nodes.len();
    if args.prefill > 0 {
        prefill(args.prefill, &clients, &file.chain_id).await?;
    }
    let (signers, count) = match args.mode {
        Mode::Closed => (u64::from(args.concurrency), args.transactions_max),
        Mode::Open => (
            1024,
            (u64::from(args.rate) * args.duration.as_secs().max(1) + 1).min(args.transactions_max),
        ),
    };
    eprintln!("signing {count} transactions from {signers} signers...");
    let chain_id = file.chain_id.clone();
    let salt = nanos();
    let signing = Instant::now();
    let transactions =
        tokio::task::spawn_blocking(move || presign(&chain_id, 0, count, signers, salt)).await?;
    let signing_tps = count as f64 / signing.elapsed().as_secs_f64();

    let start_views = views(&clients).await;
    let pids: Vec<u32> = file.nodes.iter().filter_map(|n| n.pid).collect();
    let metrics_urls: Vec<String> = file
        .nodes
        .iter()
        .filter_map(|n| n.metrics_url.clone())
        .collect();
    let cpu_before = cpu::sample(&pids, &metrics_urls).await;
    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let follower = start_follower(clients[0].clone(), tracker.clone()).await?;

    let bar = crate::output::progress_bar(
        false,
        args.duration.as_millis() as u64,
        "{spinner} {msg} [{bar:30}] {elapsed}/{duration}",
        "",
    );
    let submitter = Submitter::new(args.submit, &clients);
    let started = Instant::now();
    let (submitted, rejected, dropped) = match args.mode {
        Mode::Closed => {
            closed_loop(
                submitter,
                transactions,
                tracker.clone(),
                &bar,
                signers,
                Until::Deadline(started + args.duration),
            )
            .await
        }
        Mode::Open => open_loop(args, submitter, transactions, tracker.clone(), &bar).await,
    };
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let committed_in_window = tracker.lock().map_or(0, |t| t.committed);
    // Let what is in flight land, for the latency figures only.
    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    while Instant::now() < drain_deadline && tracker.lock().is_ok_and(|t| !t.waiting.is_empty()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    follower.abort();
    let cpu_after = cpu::sample(&pids, &metrics_urls).await;
    let committed_all = tracker.lock().map_or(0, |t| t.committed);
    let cpu_used = cpu_before
        .zip(cpu_after)
        .map(|(before, after)| after.since(&before));
    let end_views = views(&clients).await;

    let tracker = tracker
        .lock()
        .map_err(|_| anyhow::anyhow!("tracker poisoned"))?;
    let committed_tps = committed_in_window as f64 / elapsed.as_secs_f64();
    let ceiling_tps = verifications_per_second / validators as f64;
    Ok(Report {
        mode: args.mode,
        submit: args.submit,
        validators,
        prefilled: args.prefill,
        duration_s: elapsed.as_secs_f64(),
        submitted,
        rejected,
        dropped,
        committed: committed_in_window,
        committed_tps,
        verifications_per_second,
        ceiling_tps,
        ceiling_tps_before: ceiling_tps,
        ceiling_tps_after: ceiling_tps,
        ratio: committed_tps / ceiling_tps,
        signing_tps,
        latency_ms: latency(&tracker.latencies),
        latency_p50_ms: percentile(&tracker.latencies, 50.0),
        latency_p99_ms: percentile(&tracker.latencies, 99.0),
        blocks: tracker.block_times.len() as u64,
        mean_block_interval_ms: mean_interval(&tracker.block_times),
        mean_block_transactions: mean(&tracker.block_sizes),
        view_changes: end_views.saturating_sub(start_views),
        node_cpu_cores: cpu_used.map_or(0.0, |used| used.total / elapsed.as_secs_f64()),
        cpu_us_per_tx: cpu_used.map(|used| cpu::Split::new(&used, validators, committed_all)),
        machine_cores: cores,
        blob: None,
    })
}

/// Uploads `mib` MiB of pseudo-random bytes to the first node and
/// downloads them again, checking the CID; hashes the same bytes with
/// SHA-256 on one core for comparison.
async fn blob_phase(
    dir: &std::path::Path,
    file: &DevnetFile,
    mib: u64,
) -> anyhow::Result<BlobReport> {
    use sha2::Digest as _;
    let bytes = mib
        .checked_mul(1024 * 1024)
        .filter(|b| *b <= 4 * 1024 * 1024 * 1024)
        .context("--blob-mib is over 4096")?;
    eprintln!("blob: {mib} MiB over mTLS...");
    let data = Bytes::from(pseudo_random(bytes as usize, nanos() as u64));
    let hashing = data.clone();
    let sha256_s = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        std::hint::black_box(sha2::Sha256::digest(&hashing[..]));
        started.elapsed().as_secs_f64()
    })
    .await?;
    let expected = crate::cmd::blob::cid_of_bytes(&data)?;
    let target = devnet::target(dir, file, 0);
    let mut client = crate::client::blob_client(crate::client::channel(&target, None).await?);
    crate::malloc::consolidate_free_memory();
    let started = Instant::now();
    // Slices of `data`, handed to the messages without a copy: the load
    // generator's reading is not the node's upload speed.
    let stored = crate::cmd::blob::upload(
        &mut client,
        data.clone(),
        Default::default(),
        indicatif::ProgressBar::hidden(),
    )
    .await?;
    let upload_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        stored.cid == expected.to_string(),
        "the node computed CID {} for bytes whose CID is {expected}",
        stored.cid
    );
    let started = Instant::now();
    let mut stream = client
        .download(govchain_proto::blob::v1::DownloadRequest {
            cid: stored.cid.clone(),
            ..Default::default()
        })
        .await
        .map_err(crate::client::rpc_error)?
        .into_inner();
    let received =
        crate::cmd::blob::receive(&mut stream, &mut tokio::io::sink(), 0, bytes, None).await?;
    let download_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(received == bytes, "downloaded {received} of {bytes} bytes");
    let mb = bytes as f64 / 1e6;
    Ok(BlobReport {
        bytes,
        upload_mb_s: mb / upload_s,
        download_mb_s: mb / download_s,
        sha256_mb_s: mb / sha256_s,
        upload_ratio: sha256_s / upload_s,
    })
}

/// Incompressible-looking bytes (xorshift64*), so that nothing downstream
/// could shortcut them.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// When a closed loop stops sending.
#[derive(Clone, Copy)]
enum Until {
    /// The measured run: at this instant.
    Deadline(Instant),
    /// The prefill: when every transaction has committed. A signer whose
    /// transaction is rejected, or not committed within `stall`, stops
    /// (its later nonces could not commit).
    AllCommitted { stall: Duration },
}

/// One client per signer, so its nonces arrive in order, each waiting for
/// its transaction to commit before sending the next. Returns (submitted,
/// rejected, dropped).
async fn closed_loop(
    submitter: Submitter,
    transactions: Vec<(Digest, TransactionEnvelope)>,
    tracker: Arc<Mutex<Tracker>>,
    bar: &indicatif::ProgressBar,
    signers: u64,
    until: Until,
) -> (u64, u64, u64) {
    let mut per_signer: Vec<Vec<(Digest, TransactionEnvelope)>> =
        (0..signers).map(|_| Vec::new()).collect();
    for (j, transaction) in transactions.into_iter().enumerate() {
        per_signer[j % signers as usize].push(transaction);
    }
    let mut tasks = Vec::new();
    for (w, queue) in per_signer.into_iter().enumerate() {
        let submitter = submitter.clone();
        let tracker = tracker.clone();
        tasks.push(tokio::spawn(async move {
            let (mut submitted, mut rejected) = (0u64, 0u64);
            for (id, envelope) in queue {
                if let Until::Deadline(deadline) = until
                    && Instant::now() >= deadline
                {
                    break;
                }
                let (done, committed) = oneshot::channel();
                if let Ok(mut t) = tracker.lock() {
                    t.waiting.insert(id, (Instant::now(), Some(done)));
                }
                submitted += 1;
                if !submitter.submit(w, envelope).await {
                    rejected += 1;
                    if let Ok(mut t) = tracker.lock() {
                        t.waiting.remove(&id);
                    }
                    match until {
                        Until::Deadline(_) => continue,
                        Until::AllCommitted { .. } => break,
                    }
                }
                let left = match until {
                    Until::Deadline(deadline) => {
                        deadline.saturating_duration_since(Instant::now()) + DRAIN_TIMEOUT
                    }
                    Until::AllCommitted { stall } => stall,
                };
                if tokio::time::timeout(left, committed).await.is_err() {
                    break;
                }
            }
            (submitted, rejected)
        }));
    }
    match until {
        Until::Deadline(deadline) => {
            tick_bar(bar, deadline.saturating_duration_since(Instant::now())).await;
        }
        Until::AllCommitted { .. } => {
            while !tasks.iter().all(tokio::task::JoinHandle::is_finished) {
                bar.set_position(tracker.lock().map_or(0, |t| t.committed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let mut totals = (0, 0, 0);
    for task in tasks {
        if let Ok((submitted, rejected)) = task.await {
            totals.0 += submitted;
            totals.1 += rejected;
        }
    }
    totals
}

/// Commits `count` transactions of [`PREFILL_SIGNERS`] signers of its own,
/// batched, [`PREFILL_CHUNK`] at a time, and waits for all of them.
async fn prefill(
    count: u64,
    clients: &[NodeServiceClient<Channel>],
    chain_id: &str,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let bar = crate::output::progress_bar(
        false,
        count,
        "{spinner} prefilling [{bar:30}] {pos}/{len} transactions, {per_sec}, {eta} left",
        "",
    );
    let submitter = Submitter::new(Submit::Batch, clients);
    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let follower = start_follower(clients[0].clone(), tracker.clone()).await?;
    let salt = nanos();
    let mut rejected = 0;
    let mut first = 0;
    while first < count {
        let chunk = (count - first).min(PREFILL_CHUNK);
        let chain_id = chain_id.to_owned();
        let transactions = tokio::task::spawn_blocking(move || {
            presign(&chain_id, first, chunk, PREFILL_SIGNERS, salt)
        })
        .await?;
        let until = Until::AllCommitted {
            stall: PREFILL_STALL,
        };
        let (_, chunk_rejected, _) = closed_loop(
            submitter.clone(),
            transactions,
            tracker.clone(),
            &bar,
            PREFILL_SIGNERS,
            until,
        )
        .await;
        rejected += chunk_rejected;
        let committed = tracker.lock().map_or(0, |t| t.committed);
        if committed < first + chunk {
            break;
        }
        first += chunk;
    }
    follower.abort();
    bar.finish_and_clear();
    let committed = tracker.lock().map_or(0, |t| t.committed);
    if committed < count {
        bail!(
            "the prefill committed {committed} of {count} transactions: {rejected} were rejected, \
             the others did not commit within {} s of their submission; see the nodes' logs",
            PREFILL_STALL.as_secs()
        );
    }
    eprintln!(
        "prefilled {count} transactions in {:.1} s ({:.0} tx/s)",
        started.elapsed().as_secs_f64(),
        count as f64 / started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Sends at a fixed rate; each transaction's latency counts from when it
/// was due, not from when a busy client got round to sending it.
async fn open_loop(
    args: &BenchArgs,
    submitter: Submitter,
    transactions: Vec<(Digest, TransactionEnvelope)>,
    tracker: Arc<Mutex<Tracker>>,
    bar: &indicatif::ProgressBar,
) -> (u64, u64, u64) {
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let in_flight = Arc::new(Semaphore::new(OPEN_LOOP_IN_FLIGHT_MAX));
    let rejected = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (mut submitted, mut dropped) = (0u64, 0u64);
    for (j, (id, envelope)) in transactions.into_iter().enumerate() {
        let due = start + interval.mul_f64(j as f64);
        if due >= start + args.duration {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        bar.set_position(start.elapsed().as_millis() as u64);
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            dropped += 1;
            continue;
        };
        if let Ok(mut t) = tracker.lock() {
            t.waiting.insert(id, (due, None));
        }
        submitted += 1;
        // Signer j mod 1024 always goes to the same node, keeping its nonces in order.
        let submitter = submitter.clone();
        let (tracker, rejected) = (tracker.clone(), rejected.clone());
        tokio::spawn(async move {
            if !submitter.submit(j % 1024, envelope).await {
                rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Ok(mut t) = tracker.lock() {
                    t.waiting.remove(&id);
                }
            }
            drop(permit);
        });
    }
    tokio::time::sleep_until((start + args.duration).into()).await;
    (
        submitted,
        rejected.load(std::sync::atomic::Ordering::Relaxed),
        dropped,
    )
}

/// Hands a transaction to node `worker mod n`, one call each or through
/// that node's batcher; `submit` says whether the node admitted it.
#[derive(Clone)]
enum Submitter {
    Single(Vec<NodeServiceClient<Channel>>),
    Batch(Vec<tokio::sync::mpsc::Sender<(TransactionEnvelope, oneshot::Sender<bool>)>>),
}

impl Submitter {
    fn new(submit: Submit, clients: &[NodeServiceClient<Channel>]) -> Self {
        match submit {
            Submit::Single => Self::Single(clients.to_vec()),
            Submit::Batch => Self::Batch(
                clients
                    .iter()
                    .map(|client| {
                        let (sender, receiver) =
                            tokio::sync::mpsc::channel(BATCH_TRANSACTIONS_MAX * 4);
                        tokio::spawn(batcher(client.clone(), receiver));
                        sender
                    })
                    .collect(),
            ),
        }
    }

    async fn submit(&self, worker: usize, envelope: TransactionEnvelope) -> bool {
        match self {
            Self::Single(clients) => clients[worker % clients.len()]
                .clone()
                .submit_transaction(SubmitTransactionRequest {
                    envelope: Some(envelope),
                })
                .await
                .is_ok(),
            Self::Batch(batchers) => {
                let (reply, admitted) = oneshot::channel();
                if batchers[worker % batchers.len()]
                    .send((envelope, reply))
                    .await
                    .is_err()
                {
                    return false;
                }
                admitted.await.unwrap_or(false)
            }
        }
    }
}

/// One node's batcher: gathers what arrives within [`BATCH_LINGER`] of the
/// first transaction (at most [`BATCH_TRANSACTIONS_MAX`]) into one
/// `SubmitTransactions` call, with up to [`BATCH_CALLS_IN_FLIGHT_MAX`]
/// calls in flight; each sender learns whether its transaction was
/// admitted. Batches go out in order, so one signer's nonces stay in order.
async fn batcher(
    client: NodeServiceClient<Channel>,
    mut queue: tokio::sync::mpsc::Receiver<(TransactionEnvelope, oneshot::Sender<bool>)>,
) {
    let calls = Arc::new(Semaphore::new(BATCH_CALLS_IN_FLIGHT_MAX));
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        let linger = tokio::time::sleep(BATCH_LINGER);
        tokio::pin!(linger);
        while batch.len() < BATCH_TRANSACTIONS_MAX {
            tokio::select! {
                next = queue.recv() => match next {
                    Some(item) => batch.push(item),
                    None => break,
                },
                () = &mut linger => break,
            }
        }
        let Ok(permit) = calls.clone().acquire_owned().await else {
            return;
        };
        let (envelopes, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let mut client = client.clone();
        tokio::spawn(async move {
            let results = client
                .submit_transactions(SubmitTransactionsRequest { envelopes })
                .await
                .map(|r| r.into_inner().results);
            drop(permit);
            match results {
                Ok(results) => {
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(result.code == 0);
                    }
                }
                Err(_) => {
                    for reply in replies {
                        let _ = reply.send(false);
                    }
                }
            }
        });
    }
}

async fn tick_bar(bar: &indicatif::ProgressBar, duration: Duration) {
    let start = Instant::now();
    bar.set_message("loading");
    while start.elapsed() < duration {
        bar.set_position(start.elapsed().as_millis() as u64);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Subscribes to the blocks `client`'s node commits from now on and
/// follows them in a task of its own ([`follow`]). Returns once the node
/// has taken the subscription, so no transaction sent after it is missed.
async fn start_follower(
    mut client: NodeServiceClient<Channel>,
    tracker: Arc<Mutex<Tracker>>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let stream = client
        .subscribe_blocks(SubscribeBlocksRequest { from_height: 0 })
        .await
        .context("cannot subscribe to the first node's blocks")?
        .into_inner();
    Ok(tokio::spawn(follow(stream, tracker)))
}

/// Follows committed blocks and matches their transactions to the waiting
/// ones: latency is the moment the block arrives minus the send time.
async fn follow(
    mut stream: tonic::Streaming<SubscribeBlocksResponse>,
    tracker: Arc<Mutex<Tracker>>,
) {
    while let Some(Ok(response)) = stream.next().await {
        let Some(block) = response.block else {
            continue;
        };
        let now = Instant::now();
        let Ok(mut t) = tracker.lock() else { return };
        if let Some(header) = &block.header {
            t.block_times.push(header.timestamp_ms);
            t.block_sizes.push(u64::from(header.transaction_count));
        }
        for envelope in block.block.map(|b| b.transactions).unwrap_or_default() {
            let id = govchain_exec::transaction_id(
                &envelope.chain_id,
                &envelope.signer,
                envelope.nonce,
                &envelope.payload,
            );
            if let Some((sent, done)) = t.waiting.remove(&id) {
                t.committed += 1;
                t.latencies
                    .push(now.saturating_duration_since(sent).as_micros() as u64);
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
        }
    }
}

async fn views(clients: &[NodeServiceClient<Channel>]) -> u64 {
    let mut highest = 0;
    for client in clients {
        if let Ok(status) = client.clone().get_status(GetStatusRequest {}).await {
            highest = highest.max(status.into_inner().view);
        }
    }
    highest
}

fn latency(micros: &[u64]) -> Latency {
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
    for value in micros {
        let _ = histogram.record((*value).max(1));
    }
    let ms = |v: u64| v as f64 / 1000.0;
    Latency {
        p50: ms(histogram.value_at_quantile(0.5)),
        p90: ms(histogram.value_at_quantile(0.9)),
        p99: ms(histogram.value_at_quantile(0.99)),
        p999: ms(histogram.value_at_quantile(0.999)),
        max: ms(histogram.max()),
        mean: histogram.mean() / 1000.0,
    }
}

fn percentile(micros: &[u64], q: f64) -> f64 {
    let latency = latency(micros);
    match q {
        50.0 => latency.p50,
        _ => latency.p99,
    }
}

fn mean(values: &[u64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().sum::<u64>() as f64 / values.len() as f64
}

fn mean_interval(times: &[u64]) -> f64 {
    if times.len() < 2 {
        return 0.0;
    }
    (times[times.len() - 1].saturating_sub(times[0])) as f64 / (times.len() - 1) as f64
}

fn print_report(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let l = &report.latency_ms;
    println!("validators:          {}", report.validators);
    if report.prefilled > 0 {
        println!(
            "prefilled:           {} transactions committed before the run",
            report.prefilled
        );
    }
    println!(
        "mode:                {:?}, {:.1} s",
        report.mode, report.duration_s
    );
    println!(
        "submitted:           {} ({} rejected, {} dropped)",
        report.submitted, report.rejected, report.dropped
    );
    println!(
        "committed:           {} ({:.0} tx/s)",
        report.committed, report.committed_tps
    );
    println!(
        "ceiling:             {:.0} tx/s ({:.0} verifications/s on {} cores / {} validators; {:.0} before the run, {:.0} after)",
        report.ceiling_tps,
        report.verifications_per_second,
        report.machine_cores,
        report.validators,
        report.ceiling_tps_before,
        report.ceiling_tps_after
    );
    println!("ratio to ceiling:    {:.1}%", report.ratio * 100.0);
    println!(
        "latency ms:          p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
        l.p50, l.p90, l.p99, l.p999, l.max
    );
    println!(
        "blocks:              {} (mean interval {:.1} ms, {:.1} tx/block)",
        report.blocks, report.mean_block_interval_ms, report.mean_block_transactions
    );
    println!("view changes:        {}", report.view_changes);
    println!("node CPU:            {:.2} cores", report.node_cpu_cores);
    match &report.cpu_us_per_tx {
        Some(split) => {
            println!(
                "CPU per tx:          {:.1} µs per validator: signature {:.1}, admission {:.1}, execution {:.1}, ledger {:.1}, consensus {:.1}, gRPC/TLS {:.1}, other {:.1}",
                split.total,
                split.signature,
                split.admission,
                split.execution,
                split.ledger,
                split.consensus,
                split.grpc,
                split.other
            );
        }
        None => println!("CPU per tx:          unknown (no /proc)"),
    }
    println!(
        "signing (client):    {:.0} tx/s, not charged to the nodes",
        report.signing_tps
    );
    if let Some(blob) = &report.blob {
        println!(
            "blob {:.0} MiB:        upload {:.1} MB/s, download {:.1} MB/s; SHA-256 on one core {:.1} MB/s (upload {:.0}% of it)",
            blob.bytes as f64 / 1_048_576.0,
            blob.upload_mb_s,
            blob.download_mb_s,
            blob.sha256_mb_s,
            blob.upload_ratio * 100.0
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn presigned_transactions_verify() {
        let transactions = presign("c", 0, 10, 3, 1);
        for (id, envelope) in transactions {
            let verified =
                govchain_exec::check_envelope(envelope, "c", 65_536, |_, _| false).expect("valid");
            assert_eq!(verified.id, id);
        }
    }

    #[test]
    fn histogram_percentiles() {
        let micros: Vec<u64> = (1..=1000).map(|ms| ms * 1000).collect();
        let latency = latency(&micros);
        assert!((latency.p50 - 500.0).abs() < 5.0, "{}", latency.p50);
        assert!((latency.p99 - 990.0).abs() < 10.0, "{}", latency.p99);
    }
}
