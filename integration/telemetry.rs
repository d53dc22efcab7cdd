//! Telemetry seen from outside, on real `govchain` processes: a devnet
//! exporting spans over OTLP/gRPC to a receiver in this test process (one
//! transaction's trace spans several nodes), and a node's Prometheus
//! `/metrics` page, parsed, moving as a transaction commits.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;

const BIN: &str = env!("CARGO_BIN_EXE_govchain");
const DEADLINE: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A span as received: who sent it (`service.instance.id`, empty for the
/// CLI), its name and its trace id in hex.
#[derive(Clone, Debug)]
struct ReceivedSpan {
    instance: String,
    name: String,
    trace_id: String,
}

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    metric_names: Arc<Mutex<BTreeSet<String>>>,
}

fn string_attribute(
    attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> String {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let attributes = resource_spans
                .resource
                .map(|r| r.attributes)
                .unwrap_or_default();
            let instance = string_attribute(&attributes, "service.instance.id");
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(ReceivedSpan {
                        instance: instance.clone(),
                        name: span.name,
                        trace_id: hex::encode(&span.trace_id),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut names = self.metric_names.lock().unwrap();
        for resource in request.into_inner().resource_metrics {
            for scope in resource.scope_metrics {
                names.extend(scope.metrics.into_iter().map(|m| m.name));
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Starts the receiver on a free loopback port; returns its endpoint.
async fn start_receiver(receiver: Receiver) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .add_service(MetricsServiceServer::new(receiver))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{address}")
}

fn govchain(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let output = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (
        output.status.success(),
        text(output.stdout),
        text(output.stderr),
    )
}

/// A detached devnet on free ports, stopped when dropped.
struct Devnet {
    _temp: tempfile::TempDir,
    dir: String,
}

impl Devnet {
    fn start(env: &[(&str, &str)]) -> Self {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("devnet").to_str().unwrap().to_owned();
        let devnet = Self { _temp: temp, dir };
        let (ok, _, err) = govchain(
            &[
                "devnet",
                "--dir",
                &devnet.dir,
                "--base-port",
                "0",
                "--detach",
            ],
            env,
        );
        assert!(ok, "devnet failed: {err}");
        devnet
    }

    /// Anchors a new record and waits for its commit.
    fn anchor(&self, record_id: &str, env: &[(&str, &str)]) {
        let dir = Path::new(&self.dir);
        let file = dir.join(format!("{record_id}.txt"));
        std::fs::write(&file, record_id).unwrap();
        let key = dir.join(format!("{record_id}.key"));
        let (ok, _, err) = govchain(&["keys", "new", "--out", key.to_str().unwrap()], &[]);
        assert!(ok, "{err}");
        let (ok, out, err) = govchain(
            &[
                "record",
                "anchor",
                file.to_str().unwrap(),
                "--dataset",
                "telemetry",
                "--record-id",
                record_id,
                "--signing-key",
                key.to_str().unwrap(),
                "--wait",
                "--dir",
                &self.dir,
            ],
            env,
        );
        assert!(ok, "anchor failed: {out}{err}");
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        govchain(&["devnet", "stop", "--dir", &self.dir], &[]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_transaction_is_one_trace_across_nodes() {
    let receiver = Receiver::default();
    let endpoint: &'static str = Box::leak(start_receiver(receiver.clone()).await.into_boxed_str());
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        // Export spans and metrics every fraction of a second, not every 5 s / 60 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
        ("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
    ];
    let devnet = tokio::task::spawn_blocking(move || {
        let devnet = Devnet::start(&env);
        devnet.anchor("traced", &env);
        devnet
    })
    .await
    .unwrap();

    // The CLI's submission is the root; its trace id names the transaction.
    let deadline = Instant::now() + DEADLINE;
    let (trace_id, nodes) = loop {
        let spans = receiver.spans.lock().unwrap().clone();
        let root = spans
            .iter()
            .rev()
            .find(|s| s.name == "govchain submit" && s.instance.is_empty());
        if let Some(root) = root {
            let nodes: BTreeMap<String, BTreeSet<String>> = spans
                .iter()
                .filter(|s| s.trace_id == root.trace_id && !s.instance.is_empty())
                .fold(BTreeMap::new(), |mut nodes, s| {
                    nodes
                        .entry(s.instance.clone())
                        .or_default()
                        .insert(s.name.clone());
                    nodes
                });
            // Each node exports on its own schedule: wait until the serving
            // node's spans are in too, not just any three nodes'.
            let served = nodes
                .values()
                .any(|names| names.iter().any(|n| n.starts_with('/')));
            if nodes.len() >= 3 && served {
                break (root.trace_id.clone(), nodes);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no trace reached three nodes; spans received: {spans:#?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    assert_eq!(trace_id.len(), 32);
    assert!(
        trace_id.chars().any(|c| c != '0'),
        "a real trace id: {trace_id}"
    );
    // The node the client called served it in a span continuing the
    // client's trace; the others admitted it from the forwarded batch.
    let served: Vec<_> = nodes
        .values()
        .filter(|names| names.iter().any(|n| n.starts_with('/')))
        .collect();
    assert_eq!(served.len(), 1, "one node served the RPC: {nodes:?}");
    assert!(
        nodes.values().all(|names| names.contains("admission")),
        "every node's admission is in the trace: {nodes:?}"
    );
    // The metrics go out over OTLP too.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let names = receiver.metric_names.lock().unwrap().clone();
        if names.contains("govchain_height")
            && names.contains("govchain_committed_transactions_total")
        {
            break;
        }
        assert!(Instant::now() < deadline, "metrics over OTLP: {names:?}");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    drop(devnet);
}

/// GET over plain HTTP/1.1; returns (status line, body).
fn http_get(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (address, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// Prometheus text: metric name → type, and sample (name with labels) →
/// value.
fn parse_prometheus(text: &str) -> (BTreeMap<String, String>, BTreeMap<String, f64>) {
    let mut types = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_owned(), kind.to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            let (sample, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("a number: {line}"));
            samples.insert(sample.to_owned(), value);
        }
    }
    (types, samples)
}

#[test]
fn a_nodes_metrics_page_parses_and_moves_with_a_commit() {
    let devnet = Devnet::start(&[]);
    let (ok, out, err) = govchain(&["status", "--dir", &devnet.dir, "--json"], &[]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let urls: Vec<String> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            n["metrics_url"]
                .as_str()
                .expect("each node reports its metrics_url")
                .to_owned()
        })
        .collect();
    assert_eq!(urls.len(), 4);
    assert_eq!(
        urls.iter().collect::<BTreeSet<_>>().len(),
        4,
        "one port each: {urls:?}"
    );
    let url = &urls[0];

    let (status_line, body) = http_get(url);
    assert!(status_line.contains(" 200 "), "{status_line}");
    let (types, before) = parse_prometheus(&body);
    for (name, kind) in [
        ("govchain_height", "gauge"),
        ("govchain_committed_transactions_total", "counter"),
        ("govchain_block_interval_seconds", "histogram"),
        ("govchain_commit_latency_seconds", "histogram"),
        ("govchain_execution_cpu_seconds_total", "counter"),
        ("govchain_ledger_append_cpu_seconds_total", "counter"),
        ("govchain_signature_cpu_seconds_total", "counter"),
        ("govchain_view", "gauge"),
        ("govchain_mempool_transactions", "gauge"),
        ("govchain_mempool_bytes", "gauge"),
        ("govchain_admission_queue_jobs", "gauge"),
        ("govchain_peer_connected", "gauge"),
        ("govchain_blob_store_bytes", "gauge"),
        ("govchain_certificate_expiry_seconds", "gauge"),
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
    ] {
        assert_eq!(
            types.get(name).map(String::as_str),
            Some(kind),
            "{name}:\n{body}"
        );
    }
    assert_eq!(
        before.get("govchain_peer_connected{peer=\"tax\"}"),
        Some(&1.0),
        "{body}"
    );
    assert!(before["govchain_certificate_expiry_seconds{certificate=\"node\"}"] > 86_400.0);
    assert!(before["process_resident_memory_bytes"] > 0.0);
    let height = before["govchain_height"];
    let committed = before["govchain_committed_transactions_total"];
    let (not_found, _) = http_get(&url.replace("/metrics", "/other"));
    assert!(not_found.contains(" 404 "), "{not_found}");

    devnet.anchor("scraped", &[]);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (_, body) = http_get(url);
        let (_, after) = parse_prometheus(&body);
        if after["govchain_height"] > height
            && after["govchain_committed_transactions_total"] > committed
        {
            assert!(
                after["govchain_commit_latency_seconds_count"] >= 1.0,
                "{body}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "metrics did not move:\n{body}");
        std::thread::sleep(POLL_INTERVAL);
    }
}
