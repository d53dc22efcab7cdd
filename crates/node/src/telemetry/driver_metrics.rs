//! What the consensus driver records as blocks commit: counters and
//! histograms on the node's meter (`metrics::NodeMetrics` makes it). Its
//! own module, with nothing of the node's, so that the driver does not
//! depend on what the rest of the metrics observe.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter};

use super::metrics::{
    BLOCK_INTERVAL, COMMIT_LATENCY, COMMITTED_BLOCKS, COMMITTED_TRANSACTIONS, EXECUTION_CPU,
    LEDGER_APPEND_CPU, MEMPOOL_DROPPED, REFUSED_MESSAGES, VIEW_CHANGES,
};

/// Bucket bounds of the block interval, in seconds: from back-to-back
/// blocks under load to the empty-block interval and view changes.
const BLOCK_INTERVAL_BOUNDS_SECONDS: [f64; 11] =
    [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0];
/// Bucket bounds of the commit latency, in seconds.
const COMMIT_LATENCY_BOUNDS_SECONDS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// What the consensus driver records as blocks commit.
#[derive(Clone)]
pub struct DriverMetrics {
    committed_transactions: Counter<u64>,
    committed_blocks: Counter<u64>,
    block_interval: Histogram<f64>,
    commit_latency: Histogram<f64>,
    view_changes: Counter<u64>,
    refused_messages: Counter<u64>,
    dropped: Counter<u64>,
    execution_cpu: Counter<f64>,
    ledger_append_cpu: Counter<f64>,
}

impl DriverMetrics {
    pub(crate) fn new(meter: &Meter) -> Self {
        Self {
            committed_transactions: meter
                .u64_counter(COMMITTED_TRANSACTIONS)
                .with_description("Transactions in blocks appended to this node's ledger.")
                .build(),
            committed_blocks: meter
                .u64_counter(COMMITTED_BLOCKS)
                .with_description("Blocks appended to this node's ledger.")
                .build(),
            block_interval: meter
                .f64_histogram(BLOCK_INTERVAL)
                .with_unit("s")
                .with_description("Time between the timestamps of consecutive blocks.")
                .with_boundaries(BLOCK_INTERVAL_BOUNDS_SECONDS.to_vec())
                .build(),
            commit_latency: meter
                .f64_histogram(COMMIT_LATENCY)
                .with_unit("s")
                .with_description(
                    "Time from a block's timestamp (set by its proposer) to its durable append here.",
                )
                .with_boundaries(COMMIT_LATENCY_BOUNDS_SECONDS.to_vec())
                .build(),
            view_changes: meter
                .u64_counter(VIEW_CHANGES)
                .with_description("Views this replica moved to after its first.")
                .build(),
            refused_messages: meter
                .u64_counter(REFUSED_MESSAGES)
                .with_description("Consensus messages refused, by reason.")
                .build(),
            dropped: meter
                .u64_counter(MEMPOOL_DROPPED)
                .with_description(
                    "Transactions dropped from the mempool after waiting behind a nonce gap for mempool.parked_ttl_ms.",
                )
                .build(),
            execution_cpu: meter
                .f64_counter(EXECUTION_CPU)
                .with_unit("s")
                .with_description(
                    "CPU time the consensus thread spent building, assembling and checking blocks (execution included).",
                )
                .build(),
            ledger_append_cpu: meter
                .f64_counter(LEDGER_APPEND_CPU)
                .with_unit("s")
                .with_description(
                    "CPU time the consensus thread spent appending committed blocks to the ledger (waiting for fsync excluded).",
                )
                .build(),
        }
    }

    /// CPU time spent executing blocks (building, assembling, checking).
    pub fn execution_cpu(&self, spent: Duration) {
        self.execution_cpu.add(spent.as_secs_f64(), &[]);
    }

    /// CPU time spent appending a block to the ledger.
    pub fn ledger_append_cpu(&self, spent: Duration) {
        self.ledger_append_cpu.add(spent.as_secs_f64(), &[]);
    }

    /// `count` parked transactions expired from the mempool.
    pub fn transactions_dropped(&self, count: u64) {
        self.dropped.add(count, &[]);
    }

    /// A block of `transactions` transactions appended, stamped
    /// `timestamp_ms` by its proposer, `interval_ms` after its parent.
    pub fn block_appended(
        &self,
        transactions: u64,
        interval_ms: Option<u64>,
        timestamp_ms: u64,
        now_ms: u64,
    ) {
        self.committed_blocks.add(1, &[]);
        self.committed_transactions.add(transactions, &[]);
        if let Some(interval_ms) = interval_ms {
            self.block_interval.record(seconds(interval_ms), &[]);
        }
        self.commit_latency
            .record(seconds(now_ms.saturating_sub(timestamp_ms)), &[]);
    }

    pub fn views_changed(&self, count: u64) {
        self.view_changes.add(count, &[]);
    }

    /// `reason` is a fixed, low-cardinality name (`RejectReason`'s variant).
    pub fn message_refused(&self, reason: String) {
        self.refused_messages
            .add(1, &[KeyValue::new("reason", reason)]);
    }
}

#[allow(clippy::cast_precision_loss)] // Milliseconds below 2^53.
fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}
