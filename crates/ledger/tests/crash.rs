//! Crash safety: a child process appends blocks until it is killed with
//! SIGKILL; the reopened ledger's log must hold every block the child
//! reported as appended, each block whole; the index is at a checkpoint at
//! most `CHECKPOINT_BLOCKS` below it, and once the parent re-applies the
//! logged blocks above it (as a node re-executes them), the ledger holds
//! them all and passes `check`. After each block the child
//! also writes the consensus records a validator would (its view, and its
//! vote for the next height); every one written before a report must be
//! back after the kill.
//!
//! The child is this test binary run again with `GOVCHAIN_LEDGER_CRASH_CHILD`
//! set to the ledger directory; it runs only the `crash_child` test, which
//! does nothing when the variable is unset. Every block's contents derive
//! from its height, so the parent can recompute what each height holds.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use govchain_crypto::{Digest, DomainHasher};
use govchain_ledger::{
    AppendBlock, CHECKPOINT_BLOCKS, CONSENSUS_KEY_BYTES, Head, Ledger, TransactionLocation,
    consensus_key,
};

const CHILD_ENV: &str = "GOVCHAIN_LEDGER_CRASH_CHILD";
const CHILD_TEST_NAME: &str = "crash_child";
const CHAIN: &str = "govchain-crash";
/// Blocks each round lets the child report before the kill; varied so that
/// the kill lands at different points of the file's growth; together they
/// pass the 64 heights after which a block's transactions have all moved
/// from the recent tier into the index, and cross several checkpoints
/// (every `CHECKPOINT_BLOCKS`).
const ROUND_BLOCKS: [u64; 4] = [5, 17, 60, 70];
/// How long one round may wait for the child's reports.
const ROUND_DURATION_MAX: Duration = Duration::from_secs(60);
/// The child stops on its own after this, should the parent never kill it.
const CHILD_DURATION_MAX: Duration = Duration::from_secs(120);
/// Lines in flight between the stdout reader thread and the parent.
const REPORTS_QUEUED_MAX: usize = 1024;
const TRANSACTIONS_PER_BLOCK: u32 = 3;
/// Block `h` deletes `key/{h - STATE_KEYS_KEPT}`, so that the state at
/// head `H` holds exactly `key/{H - STATE_KEYS_KEPT + 1}..=key/{H}`.
const STATE_KEYS_KEPT: u64 = 3;
const REPORT_PREFIX: &str = "appended ";

fn genesis() -> Digest {
    DomainHasher::new("crash/genesis").finish()
}

fn block_hash(height: u64) -> Digest {
    if height == 0 {
        genesis()
    } else {
        DomainHasher::new("crash/block").u64(height).finish()
    }
}

fn state_key(height: u64) -> Vec<u8> {
    format!("key/{height}").into_bytes()
}

fn state_value(height: u64) -> Vec<u8> {
    DomainHasher::new("crash/value")
        .u64(height)
        .finish()
        .to_vec()
}

/// The records a validator holds once block `height` is appended and it
/// voted for the next one: its view (here the next height) and that vote.
fn records_after(height: u64) -> Vec<([u8; CONSENSUS_KEY_BYTES], Vec<u8>)> {
    let next = height + 1;
    let vote = DomainHasher::new("crash/vote").u64(next).finish().to_vec();
    vec![
        (consensus_key(0, 0, 0, 0), next.to_be_bytes().to_vec()),
        (consensus_key(2, next, 0, 1), vote),
    ]
}

/// Everything block `height` holds, derived from the height alone.
struct CrashBlock {
    height: u64,
    encoded: Vec<u8>,
    transactions: Vec<(Digest, Vec<u8>)>,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Stand-ins for state tree nodes: the ledger stores them opaquely, so
    /// what matters is that they land with the state or not at all.
    tree_writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl CrashBlock {
    fn new(height: u64) -> Self {
        // Sizes from a few bytes to several 4 KiB redb pages.
        let size = 8 + (height % 5) * 2_000;
        let encoded = (0..size).map(|i| (height + i) as u8).collect();
        let transactions = (0..TRANSACTIONS_PER_BLOCK)
            .map(|index| {
                let id = DomainHasher::new("crash/tx")
                    .u64(height)
                    .u32(index)
                    .finish();
                (id, format!("ok {height}.{index}").into_bytes())
            })
            .collect();
        let mut writes = BTreeMap::new();
        writes.insert(b"height".to_vec(), Some(height.to_be_bytes().to_vec()));
        writes.insert(state_key(height), Some(state_value(height)));
        if height > STATE_KEYS_KEPT {
            writes.insert(state_key(height - STATE_KEYS_KEPT), None);
        }
        let mut tree_writes = BTreeMap::new();
        tree_writes.insert(b"root".to_vec(), Some(height.to_be_bytes().to_vec()));
        tree_writes.insert(state_key(height), Some(state_value(height)));
        if height > STATE_KEYS_KEPT {
            tree_writes.insert(state_key(height - STATE_KEYS_KEPT), None);
        }
        Self {
            height,
            encoded,
            transactions,
            writes,
            tree_writes,
        }
    }

    fn head(&self) -> Head {
        Head {
            height: self.height,
            hash: block_hash(self.height),
            state_root: DomainHasher::new("crash/root").u64(self.height).finish(),
            timestamp_ms: 1_000 * self.height,
        }
    }

    fn append_block(&self) -> AppendBlock<'_> {
        let head = self.head();
        AppendBlock {
            height: self.height,
            hash: head.hash,
            parent_hash: block_hash(self.height - 1),
            state_root: head.state_root,
            timestamp_ms: head.timestamp_ms,
            encoded: &self.encoded,
            transactions: &self.transactions,
            writes: &self.writes,
            tree_writes: &self.tree_writes,
            query_keys: &[],
        }
    }
}

/// The child: appends blocks from the stored head on, each followed by
/// its consensus records, reporting each height on stdout once both writes
/// returned, until killed.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let ledger = Ledger::open(Path::new(&dir), CHAIN, genesis()).expect("child opens");
    let deadline = Instant::now() + CHILD_DURATION_MAX;
    let mut height = ledger.head().height + 1;
    while Instant::now() < deadline {
        ledger
            .append(&CrashBlock::new(height).append_block())
            .expect("child appends");
        ledger
            .consensus_write(&records_after(height))
            .expect("child writes consensus records");
        // Rust's stdout is line-buffered: the line leaves the process
        // before the next append starts.
        println!("{REPORT_PREFIX}{height}");
        height += 1;
    }
}

/// Kills the child when a round ends early, so that a failing test never
/// leaves a process appending behind it.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // The child may already be dead and reaped; nothing to report then.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(dir: &Path) -> (ChildGuard, mpsc::Receiver<u64>, thread::JoinHandle<()>) {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .args([
            CHILD_TEST_NAME,
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("piped stdout");
    let (reports, received) = mpsc::sync_channel(REPORTS_QUEUED_MAX);
    // Ends at EOF, when the child is dead, or when the parent stops listening.
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            // libtest prints its own text around the child's, and starts
            // the first report's line with `test crash_child ... `.
            let Some((_, height)) = line.split_once(REPORT_PREFIX) else {
                continue;
            };
            let height = height.parse().expect("child reports a height");
            if reports.send(height).is_err() {
                return;
            }
        }
    });
    (ChildGuard(child), received, reader)
}

/// Receives one report, or `None` once the child's stdout closed.
///
/// # Panics
///
/// If `deadline` passes first.
fn next_report(received: &mpsc::Receiver<u64>, deadline: Instant) -> Option<u64> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    match received.recv_timeout(remaining) {
        Ok(height) => Some(height),
        Err(RecvTimeoutError::Disconnected) => None,
        Err(RecvTimeoutError::Timeout) => panic!("no report from the child within the deadline"),
    }
}

/// Runs the child until it reported `start + blocks`, kills it, and returns
/// the last height it reported.
fn run_round(dir: &Path, start: u64, blocks: u64) -> u64 {
    let deadline = Instant::now() + ROUND_DURATION_MAX;
    let (mut child, received, reader) = spawn_child(dir);
    let mut reported = start;
    while reported < start + blocks {
        let Some(height) = next_report(&received, deadline) else {
            let status = child.0.wait().expect("wait");
            panic!("child exited with {status} after reporting height {reported}");
        };
        assert_eq!(height, reported + 1, "the child reports heights in order");
        reported = height;
    }
    child.0.kill().expect("SIGKILL the child");
    child.0.wait().expect("reap the child");
    // Lines the child wrote before it died are still in the pipe.
    while let Some(height) = next_report(&received, deadline) {
        assert_eq!(height, reported + 1, "the child reports heights in order");
        reported = height;
    }
    reader.join().expect("stdout reader");
    reported
}

fn verify_block(ledger: &Ledger, block: &CrashBlock) {
    let height = block.height;
    let encoded = ledger.block_by_height(height).expect("read block");
    assert_eq!(
        encoded.as_deref(),
        Some(&block.encoded[..]),
        "block {height}"
    );
    let by_hash = ledger
        .block_by_hash(&block.head().hash)
        .expect("read by hash");
    assert_eq!(
        by_hash.map(|(h, _)| h),
        Some(height),
        "hash of block {height}"
    );
    for (index, (id, result)) in (0_u32..).zip(&block.transactions) {
        let location = ledger.transaction(id).expect("read transaction");
        let expected = TransactionLocation {
            height,
            index,
            result: result.clone(),
        };
        assert_eq!(
            location,
            Some(expected),
            "transaction {index} of block {height}"
        );
    }
}

/// The state at `head` is a function of the head height alone.
fn verify_state(ledger: &Ledger, head: u64) {
    let state = |key: &[u8]| ledger.state(key).expect("read state");
    let tree = |path: &[u8]| ledger.state_tree_node(path).expect("read the tree");
    assert_eq!(state(b"height"), Some(head.to_be_bytes().to_vec()));
    assert_eq!(tree(b"root"), Some(head.to_be_bytes().to_vec()));
    for height in 1..=head + 1 {
        let kept = height <= head && height + STATE_KEYS_KEPT > head;
        let expected = kept.then(|| state_value(height));
        assert_eq!(
            state(&state_key(height)),
            expected,
            "key/{height} at head {head}"
        );
        assert_eq!(
            tree(&state_key(height)),
            expected,
            "tree node {height} at head {head}"
        );
    }
}

/// Reopens the ledger after a kill and checks it holds `1..=head` whole,
/// with `head` the reported height or the one after it (committed, killed
/// before the report).
fn verify_after_crash(dir: &Path, reported: u64) -> u64 {
    let ledger = Ledger::open(dir, CHAIN, genesis()).expect("reopen after the kill");
    let (checkpoint, logged) = (ledger.head().height, ledger.log_head());
    assert!(
        logged >= reported,
        "the log ends at {logged}, before reported block {reported}"
    );
    assert!(
        logged - checkpoint <= CHECKPOINT_BLOCKS,
        "index at {checkpoint}, log at {logged}: more than a checkpoint apart"
    );
    assert_eq!(
        ledger
            .check()
            .expect("check before re-applying")
            .logged_above_head,
        logged - checkpoint
    );
    // Nothing above the checkpoint is visible before it is re-applied.
    assert_eq!(ledger.block_by_height(checkpoint + 1).expect("read"), None);
    for height in checkpoint + 1..=logged {
        let block = CrashBlock::new(height);
        assert_eq!(
            ledger
                .logged_block(height)
                .expect("read the log")
                .as_deref(),
            Some(&block.encoded[..]),
            "logged block {height}"
        );
        ledger
            .append(&block.append_block())
            .expect("re-apply a logged block");
    }
    println!("index at {checkpoint} after the kill, log at {logged}; re-applied");
    let report = ledger.check().expect("check after the kill");
    let head = ledger.head();
    assert_eq!(report.head, head);
    assert!(
        head.height >= reported,
        "head {} lost reported block {reported}",
        head.height
    );
    assert!(
        head.height <= reported + 1,
        "head {} beyond reported {reported} + 1",
        head.height
    );
    assert_eq!(head, CrashBlock::new(head.height).head());
    for height in 1..=head.height {
        verify_block(&ledger, &CrashBlock::new(height));
    }
    verify_state(&ledger, head.height);
    assert_eq!(
        report.transactions,
        u64::from(TRANSACTIONS_PER_BLOCK) * head.height
    );
    assert_eq!(report.state_entries, 1 + head.height.min(STATE_KEYS_KEPT));
    // Nothing of the block the kill interrupted is visible.
    let next = CrashBlock::new(head.height + 1);
    assert_eq!(ledger.block_by_height(next.height).expect("read"), None);
    for (id, _) in &next.transactions {
        assert_eq!(ledger.transaction(id).expect("read"), None);
    }
    verify_records(&ledger, reported, head.height);
    head.height
}

/// The consensus records after a kill: those written after block `head`
/// if the child got that far (always when it reported `head`), else those
/// written after the block before; never a record about a height at or
/// below the head.
fn verify_records(ledger: &Ledger, reported: u64, head: u64) {
    let stored: Vec<(Vec<u8>, Vec<u8>)> = ledger.consensus_records().expect("read records");
    let expected = |height: u64| -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut records: Vec<_> = records_after(height)
            .into_iter()
            .map(|(key, value)| (key.to_vec(), value))
            .collect();
        // A vote about the head's height went with the block.
        records.retain(|(key, _)| key[1..9] == [0; 8] || key[1..9] > head.to_be_bytes()[..]);
        records
    };
    if head == reported {
        assert_eq!(
            stored,
            expected(head),
            "records after reported block {head}"
        );
    } else {
        assert!(
            stored == expected(head) || stored == expected(head - 1),
            "records after unreported block {head}: {stored:?}"
        );
    }
}

#[test]
fn kill_during_appends_loses_no_reported_block() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut head = 0;
    for blocks in ROUND_BLOCKS {
        let reported = run_round(dir.path(), head, blocks);
        head = verify_after_crash(dir.path(), reported);
        // Captured by libtest; shown if a later round fails.
        println!("killed after height {reported} was reported; head after reopen {head}");
    }
    assert!(head >= ROUND_BLOCKS.iter().sum::<u64>());
}
