//! The node's metrics, recorded through the OpenTelemetry SDK and read by
//! two readers: `/metrics` (Prometheus text, collected on each scrape from
//! a `ManualReader`) and, when the environment asks for it, a periodic
//! OTLP/gRPC exporter.
//!
//! Names follow Prometheus conventions: a `govchain_` prefix, base units
//! (`_seconds`, `_bytes`), `_total` on counters; process metrics keep the
//! standard `process_` names that dashboards expect. Most values are
//! observed at collection time from state the node keeps anyway (the
//! ledger head, the mempool, the peer flags), so nothing on the consensus
//! path pays for them; only the driver's counters and histograms are
//! recorded as blocks commit.

use std::any::Any;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality,
};

use super::driver_metrics::DriverMetrics;
use crate::admission::Admission;
use crate::shared::Shared;

pub const HEIGHT: &str = "govchain_height";
pub const COMMITTED_TRANSACTIONS: &str = "govchain_committed_transactions_total";
pub const COMMITTED_BLOCKS: &str = "govchain_committed_blocks_total";
pub const BLOCK_INTERVAL: &str = "govchain_block_interval_seconds";
pub const COMMIT_LATENCY: &str = "govchain_commit_latency_seconds";
pub const EXECUTION_CPU: &str = "govchain_execution_cpu_seconds_total";
pub const LEDGER_APPEND_CPU: &str = "govchain_ledger_append_cpu_seconds_total";
pub const SIGNATURE_CPU: &str = "govchain_signature_cpu_seconds_total";
pub const VIEW: &str = "govchain_view";
pub const VIEW_CHANGES: &str = "govchain_view_changes_total";
pub const MEMPOOL_TRANSACTIONS: &str = "govchain_mempool_transactions";
pub const MEMPOOL_BYTES: &str = "govchain_mempool_bytes";
pub const MEMPOOL_DROPPED: &str = "govchain_mempool_dropped_total";
pub const ADMISSION_QUEUE_DEPTH: &str = "govchain_admission_queue_jobs";
pub const PEER_CONNECTED: &str = "govchain_peer_connected";
pub const PEER_DROPPED_MESSAGES: &str = "govchain_peer_dropped_messages_total";
pub const REFUSED_MESSAGES: &str = "govchain_refused_messages_total";
pub const BLOB_STORE_BYTES: &str = "govchain_blob_store_bytes";
pub const CERTIFICATE_EXPIRY: &str = "govchain_certificate_expiry_seconds";
pub const PROCESS_CPU: &str = "process_cpu_seconds_total";
pub const PROCESS_MEMORY: &str = "process_resident_memory_bytes";

/// A `ManualReader` shared between the meter provider (which owns its
/// readers) and the `/metrics` handler (which collects from it).
#[derive(Clone, Debug)]
struct ScrapeReader(Arc<ManualReader>);

impl MetricReader for ScrapeReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }
    fn collect(&self, metrics: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(metrics)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// The node's meter provider and its readers.
pub struct NodeMetrics {
    provider: SdkMeterProvider,
    meter: Meter,
    scrape: Option<Arc<ManualReader>>,
    driver: DriverMetrics,
    /// Observable instruments, kept for the provider's lifetime.
    observers: Vec<Box<dyn Any + Send + Sync>>,
}

impl NodeMetrics {
    /// A provider with a scrape reader when `scrape` (a `metrics_listen`
    /// is configured) and an OTLP exporter when `otlp` is given. With
    /// neither, instruments record into nothing and no thread runs.
    pub fn new(
        scrape: bool,
        otlp: Option<opentelemetry_otlp::MetricExporter>,
        instance: &str,
    ) -> Self {
        let mut builder =
            SdkMeterProvider::builder().with_resource(super::resource(Some(instance)));
        let scrape = scrape.then(|| Arc::new(ManualReader::builder().build()));
        if let Some(reader) = &scrape {
            builder = builder.with_reader(ScrapeReader(reader.clone()));
        }
        if let Some(exporter) = otlp {
            // The interval comes from OTEL_METRIC_EXPORT_INTERVAL (60 s by default).
            builder = builder.with_periodic_exporter(exporter);
        }
        let provider = builder.build();
        let meter = provider.meter("govchain");
        let driver = DriverMetrics::new(&meter);
        Self {
            provider,
            meter,
            scrape,
            driver,
            observers: Vec::new(),
        }
    }

    pub fn driver(&self) -> DriverMetrics {
        self.driver.clone()
    }

    /// Collects every metric now, for `/metrics`; `None` without a scrape
    /// reader.
    pub fn collect(&self) -> Option<Result<ResourceMetrics, String>> {
        let reader = self.scrape.as_ref()?;
        let mut metrics = ResourceMetrics::default();
        Some(
            reader
                .collect(&mut metrics)
                .map(|()| metrics)
                .map_err(|err| err.to_string()),
        )
    }

    /// Exports what the OTLP reader has not sent yet and stops its thread.
    pub fn shutdown(&self) {
        if let Err(err) = self.provider.shutdown() {
            tracing::debug!(error = %err, "metrics provider shutdown");
        }
    }

    /// Registers the gauges read at collection time. Callbacks hold weak
    /// references: the metrics must not keep the node's state alive.
    pub fn observe(&mut self, shared: &Arc<Shared>, admission: &Admission, sources: Sources) {
        let weak = Arc::downgrade(shared);
        let read = move |f: &dyn Fn(&Shared) -> u64| weak.upgrade().map(|shared| f(&shared));
        let read = Arc::new(read);
        let gauge =
            |name: &'static str, help: &'static str, unit: &'static str, f: fn(&Shared) -> u64| {
                let read = read.clone();
                let mut builder = self
                    .meter
                    .u64_observable_gauge(name)
                    .with_description(help)
                    .with_callback(move |observer| {
                        if let Some(value) = read(&f) {
                            observer.observe(value, &[]);
                        }
                    });
                if !unit.is_empty() {
                    builder = builder.with_unit(unit);
                }
                Box::new(builder.build()) as Box<dyn Any + Send + Sync>
            };
        let mut observers = vec![
            gauge(
                HEIGHT,
                "Height of the latest block in this node's ledger.",
                "",
                |s| s.ledger.head().height,
            ),
            gauge(
                VIEW,
                "The PBFT view this replica is in.",
                "",
                Shared::current_view,
            ),
            gauge(
                MEMPOOL_TRANSACTIONS,
                "Transactions waiting in the mempool.",
                "",
                |s| s.mempool().len(),
            ),
            gauge(
                MEMPOOL_BYTES,
                "Encoded bytes of the mempool's transactions.",
                "By",
                |s| s.mempool().bytes(),
            ),
        ];
        let queue = admission.weak_queue();
        observers.push(Box::new(
            self.meter
                .u64_observable_gauge(ADMISSION_QUEUE_DEPTH)
                .with_description(
                    "Submissions and forwarded batches waiting for the admission thread.",
                )
                .with_callback(move |observer| {
                    if let Some(depth) = queue.depth() {
                        observer.observe(depth, &[]);
                    }
                })
                .build(),
        ));
        let weak = Arc::downgrade(shared);
        observers.push(Box::new(
            self.meter
                .u64_observable_gauge(PEER_CONNECTED)
                .with_description("1 while this node has an open stream to the peer, else 0.")
                .with_callback(move |observer| {
                    let Some(shared) = weak.upgrade() else { return };
                    for (peer, connected, _) in shared.peers.states() {
                        observer.observe(u64::from(connected), &[KeyValue::new("peer", peer)]);
                    }
                })
                .build(),
        ));
        let weak = Arc::downgrade(shared);
        observers.push(Box::new(
            self.meter
                .u64_observable_counter(PEER_DROPPED_MESSAGES)
                .with_description("Messages to a peer dropped because its queue was full.")
                .with_callback(move |observer| {
                    let Some(shared) = weak.upgrade() else { return };
                    for (peer, _, dropped) in shared.peers.states() {
                        observer.observe(dropped, &[KeyValue::new("peer", peer)]);
                    }
                })
                .build(),
        ));
        observers.extend(self.observe_files(sources));
        observers.extend(self.observe_process());
        self.observers.extend(observers);
    }

    fn observe_files(&self, sources: Sources) -> Vec<Box<dyn Any + Send + Sync>> {
        let blob_file = sources.blob_file;
        let blob = self
            .meter
            .u64_observable_gauge(BLOB_STORE_BYTES)
            .with_unit("By")
            .with_description("Size on disk of the blob store's file.")
            .with_callback(move |observer| {
                if let Ok(metadata) = std::fs::metadata(&blob_file) {
                    observer.observe(metadata.len(), &[]);
                }
            })
            .build();
        let expiry = sources.certificates_not_after;
        let certificates = self
            .meter
            .i64_observable_gauge(CERTIFICATE_EXPIRY)
            .with_unit("s")
            .with_description(
                "Seconds until a certificate this node uses expires (negative: expired).",
            )
            .with_callback(move |observer| {
                let now = i64::try_from(crate::clock::now_ms() / 1000).unwrap_or(i64::MAX);
                for (certificate, not_after) in &expiry {
                    let not_after = not_after.load(std::sync::atomic::Ordering::Relaxed);
                    observer.observe(
                        not_after.saturating_sub(now),
                        &[KeyValue::new("certificate", *certificate)],
                    );
                }
            })
            .build();
        vec![Box::new(blob), Box::new(certificates)]
    }

    fn observe_process(&self) -> Vec<Box<dyn Any + Send + Sync>> {
        let signatures = self
            .meter
            .f64_observable_counter(SIGNATURE_CPU)
            .with_unit("s")
            .with_description(
                "CPU time spent verifying batches of transaction signatures (admission, peers' batches), on the calling thread (thread=caller) and on the threads a large batch is spread over (thread=spread).",
            )
            .with_callback(|observer| {
                let (caller, spread) = crate::batches::signature_cpu();
                observer.observe(caller.as_secs_f64(), &[KeyValue::new("thread", "caller")]);
                observer.observe(spread.as_secs_f64(), &[KeyValue::new("thread", "spread")]);
            })
            .build();
        let cpu = self
            .meter
            .f64_observable_counter(PROCESS_CPU)
            .with_unit("s")
            .with_description("CPU time this process used, user and system.")
            .with_callback(|observer| {
                if let Some(usage) = process::usage() {
                    observer.observe(usage.cpu_seconds, &[]);
                }
            })
            .build();
        let memory = self
            .meter
            .u64_observable_gauge(PROCESS_MEMORY)
            .with_unit("By")
            .with_description("Resident memory of this process.")
            .with_callback(|observer| {
                if let Some(usage) = process::usage() {
                    observer.observe(usage.resident_bytes, &[]);
                }
            })
            .build();
        vec![Box::new(signatures), Box::new(cpu), Box::new(memory)]
    }
}

/// Where the file-based metrics read from.
pub struct Sources {
    pub blob_file: PathBuf,
    /// (label, Unix seconds of notAfter) of the node and CA certificates;
    /// the node's changes when its certificate is rotated.
    pub certificates_not_after: Vec<(&'static str, std::sync::Arc<std::sync::atomic::AtomicI64>)>,
}

/// The notAfter of the first certificate in a PEM text, in Unix seconds.
pub fn certificate_not_after(pem: &str) -> Option<i64> {
    govchain_pki::certificate_validity(pem)
        .ok()
        .map(|validity| validity.not_after_unix_s)
}

mod process {
    pub struct Usage {
        pub cpu_seconds: f64,
        pub resident_bytes: u64,
    }

    #[cfg(target_os = "linux")]
    #[allow(clippy::cast_precision_loss)] // Clock ticks below 2^53.
    pub fn usage() -> Option<Usage> {
        let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
        let ticks = procfs::ticks_per_second() as f64;
        Some(Usage {
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            resident_bytes: stat.rss.saturating_mul(procfs::page_size()),
        })
    }

    #[cfg(not(target_os = "linux"))]
    pub fn usage() -> Option<Usage> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, is a counter, unit suffix expected)
    const ALL: [(&str, bool, &str); 21] = [
        (HEIGHT, false, ""),
        (COMMITTED_TRANSACTIONS, true, ""),
        (COMMITTED_BLOCKS, true, ""),
        (BLOCK_INTERVAL, false, "_seconds"),
        (COMMIT_LATENCY, false, "_seconds"),
        (VIEW, false, ""),
        (VIEW_CHANGES, true, ""),
        (MEMPOOL_TRANSACTIONS, false, ""),
        (MEMPOOL_BYTES, false, "_bytes"),
        (MEMPOOL_DROPPED, true, ""),
        (ADMISSION_QUEUE_DEPTH, false, ""),
        (PEER_CONNECTED, false, ""),
        (PEER_DROPPED_MESSAGES, true, ""),
        (REFUSED_MESSAGES, true, ""),
        (BLOB_STORE_BYTES, false, "_bytes"),
        (CERTIFICATE_EXPIRY, false, "_seconds"),
        (EXECUTION_CPU, true, "_seconds_total"),
        (LEDGER_APPEND_CPU, true, "_seconds_total"),
        (SIGNATURE_CPU, true, "_seconds_total"),
        (PROCESS_CPU, true, "_seconds_total"),
        (PROCESS_MEMORY, false, "_bytes"),
    ];

    #[test]
    fn names_follow_prometheus_conventions() {
        for (name, counter, unit) in ALL {
            assert!(
                name.starts_with("govchain_") || name.starts_with("process_"),
                "{name}: prefix"
            );
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}: snake case"
            );
            assert_eq!(
                name.ends_with("_total"),
                counter,
                "{name}: _total iff counter"
            );
            assert!(name.contains(unit), "{name}: unit {unit}");
            assert!(
                !name.contains("_ms") && !name.contains("milli"),
                "{name}: base units"
            );
        }
        let mut names: Vec<&str> = ALL.iter().map(|(name, _, _)| *name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "names are distinct");
    }

    #[test]
    fn the_driver_metrics_render_with_their_prometheus_types() {
        let metrics = NodeMetrics::new(true, None, "tax");
        let driver = metrics.driver();
        driver.block_appended(3, Some(1_500), 10_000, 10_250);
        driver.views_changed(1);
        driver.message_refused("bad_signature".into());
        let collected = metrics
            .collect()
            .expect("a scrape reader")
            .expect("collects");
        let text = super::super::prometheus::render(&collected);
        for (name, kind) in [
            (COMMITTED_TRANSACTIONS, "counter"),
            (COMMITTED_BLOCKS, "counter"),
            (VIEW_CHANGES, "counter"),
            (REFUSED_MESSAGES, "counter"),
            (BLOCK_INTERVAL, "histogram"),
            (COMMIT_LATENCY, "histogram"),
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "{name} {kind}:\n{text}"
            );
        }
        assert!(
            text.contains("govchain_committed_transactions_total 3\n"),
            "{text}"
        );
        assert!(
            text.contains("govchain_block_interval_seconds_sum 1.5\n"),
            "{text}"
        );
        assert!(
            text.contains("govchain_commit_latency_seconds_sum 0.25\n"),
            "{text}"
        );
        assert!(
            text.contains("govchain_refused_messages_total{reason=\"bad_signature\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn without_a_scrape_reader_there_is_nothing_to_collect() {
        assert!(NodeMetrics::new(false, None, "tax").collect().is_none());
    }

    #[test]
    fn a_certificates_expiry_is_read_from_its_pem() {
        let pem = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n";
        assert_eq!(certificate_not_after(pem), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_process_uses_memory_and_cpu() {
        let usage = process::usage().expect("/proc/self/stat");
        assert!(usage.resident_bytes > 0);
        assert!(usage.cpu_seconds >= 0.0);
    }
}
