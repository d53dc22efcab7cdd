//! `govchain bench` smoke run: the tool works end to end and its JSON
//! report parses. Speed is measured by running it on purpose (see
//! BENCHMARKS.md), never asserted here.

#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn bench_runs_and_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench.json");
    let output = Command::new(env!("CARGO_BIN_EXE_govchain"))
        .args([
            "bench",
            "--duration",
            "2s",
            "--concurrency",
            "16",
            "--transactions-max",
            "5000",
            "--blob-mib",
            "3",
            "--prefill",
            "3000",
            "--json-out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    for field in [
        "committed_tps",
        "ceiling_tps",
        "ratio",
        "latency_p50_ms",
        "latency_p99_ms",
        "mean_block_interval_ms",
    ] {
        assert!(report[field].is_number(), "{field} missing from {report}");
    }
    assert!(
        report["committed"].as_u64().unwrap() > 0,
        "nothing committed: {report}"
    );
    // The bench fails unless every prefill transaction committed.
    assert_eq!(report["prefilled"], 3000, "{report}");
    assert!(report["ceiling_tps"].as_f64().unwrap() > 0.0);
    // The ceiling is the mean of the measurements before and after the run.
    let before = report["ceiling_tps_before"].as_f64().unwrap();
    let after = report["ceiling_tps_after"].as_f64().unwrap();
    let ceiling = report["ceiling_tps"].as_f64().unwrap();
    assert!(before > 0.0 && after > 0.0, "{report}");
    assert!(
        (ceiling - (before + after) / 2.0).abs() <= 1e-6 * ceiling,
        "{report}"
    );
    let ratio = report["ratio"].as_f64().unwrap();
    let committed_tps = report["committed_tps"].as_f64().unwrap();
    assert!((ratio - committed_tps / ceiling).abs() <= 1e-9, "{report}");
    assert_eq!(report["validators"], 4);
    for quantile in ["p50", "p90", "p99", "p999"] {
        assert!(report["latency_ms"][quantile].is_number());
    }
    // One validator's CPU per committed transaction, and its parts, which
    // add up to it: the node threads were sampled by name, and the
    // execution and ledger counters scraped from each node's /metrics.
    let split = &report["cpu_us_per_tx"];
    let total = split["total"].as_f64().unwrap();
    assert!(total > 0.0, "{report}");
    let parts: f64 = [
        "signature",
        "admission",
        "execution",
        "ledger",
        "consensus",
        "grpc",
        "other",
    ]
    .iter()
    .map(|part| {
        let value = split[part].as_f64().unwrap();
        assert!(value >= 0.0, "{part}: {report}");
        value
    })
    .sum();
    assert!((parts - total).abs() < 1e-6 * total.max(1.0), "{report}");
    for part in ["signature", "execution", "ledger", "consensus", "grpc"] {
        assert!(split[part].as_f64().unwrap() > 0.0, "{part}: {report}");
    }
    assert_eq!(report["blob"]["bytes"], 3 * 1024 * 1024);
    for field in [
        "upload_mb_s",
        "download_mb_s",
        "sha256_mb_s",
        "upload_ratio",
    ] {
        assert!(
            report["blob"][field].as_f64().unwrap() > 0.0,
            "blob.{field} missing from {report}"
        );
    }
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("ratio to ceiling"), "{text}");
    assert!(
        text.contains("prefilled:           3000 transactions committed before the run"),
        "{text}"
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("prefilled 3000 transactions in"),
        "{stderr}"
    );
}
