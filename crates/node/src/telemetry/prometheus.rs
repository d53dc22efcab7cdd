//! Renders collected OpenTelemetry metrics as Prometheus text (exposition
//! format 0.0.4), which every Prometheus-compatible scraper reads.
//!
//! Written here rather than taken from `opentelemetry-prometheus`: that
//! crate is discontinued and depends on the unmaintained `protobuf`. The
//! instruments are named in Prometheus form already (see `metrics.rs`), so
//! no name translation happens: a counter's OTLP name is its Prometheus name.

use std::fmt::Write as _;

use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::metrics::data::{
    AggregatedMetrics, Gauge, Histogram, Metric, MetricData, ResourceMetrics, Sum,
};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A sample value in Prometheus' number syntax.
trait Number: Copy {
    fn text(self) -> String;
}

impl Number for u64 {
    fn text(self) -> String {
        self.to_string()
    }
}

impl Number for i64 {
    fn text(self) -> String {
        self.to_string()
    }
}

impl Number for f64 {
    fn text(self) -> String {
        if self.is_nan() {
            "NaN".into()
        } else if self.is_infinite() {
            if self > 0.0 { "+Inf" } else { "-Inf" }.into()
        } else {
            self.to_string()
        }
    }
}

/// All metrics, sorted by name, each with `# HELP` and `# TYPE`.
pub fn render(metrics: &ResourceMetrics) -> String {
    let mut all: Vec<&Metric> = metrics
        .scope_metrics()
        .flat_map(|scope| scope.metrics())
        .collect();
    all.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = String::new();
    for metric in all {
        match metric.data() {
            AggregatedMetrics::F64(data) => render_data(&mut out, metric, data),
            AggregatedMetrics::I64(data) => render_data(&mut out, metric, data),
            AggregatedMetrics::U64(data) => render_data(&mut out, metric, data),
        }
    }
    out
}

fn render_data<T: Number>(out: &mut String, metric: &Metric, data: &MetricData<T>) {
    match data {
        MetricData::Gauge(gauge) => render_gauge(out, metric, gauge),
        MetricData::Sum(sum) => render_sum(out, metric, sum),
        MetricData::Histogram(histogram) => render_histogram(out, metric, histogram),
        // Not used by the node; Prometheus text has no form for it.
        MetricData::ExponentialHistogram(_) => {}
    }
}

fn header(out: &mut String, metric: &Metric, kind: &str) {
    let help = metric
        .description()
        .replace('\\', "\\\\")
        .replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {} {help}", metric.name());
    let _ = writeln!(out, "# TYPE {} {kind}", metric.name());
}

fn render_gauge<T: Number>(out: &mut String, metric: &Metric, gauge: &Gauge<T>) {
    header(out, metric, "gauge");
    for point in gauge.data_points() {
        sample(
            out,
            metric.name(),
            &labels(point.attributes(), None),
            point.value().text(),
        );
    }
}

fn render_sum<T: Number>(out: &mut String, metric: &Metric, sum: &Sum<T>) {
    header(
        out,
        metric,
        if sum.is_monotonic() {
            "counter"
        } else {
            "gauge"
        },
    );
    for point in sum.data_points() {
        sample(
            out,
            metric.name(),
            &labels(point.attributes(), None),
            point.value().text(),
        );
    }
}

fn render_histogram<T: Number>(out: &mut String, metric: &Metric, histogram: &Histogram<T>) {
    header(out, metric, "histogram");
    let name = metric.name();
    for point in histogram.data_points() {
        // OpenTelemetry counts per bucket; Prometheus counts cumulatively,
        // with a last `+Inf` bucket equal to the count.
        let mut cumulative = 0u64;
        for (bound, count) in point.bounds().zip(point.bucket_counts()) {
            cumulative += count;
            let le = labels(point.attributes(), Some(bound.text()));
            sample(out, &format!("{name}_bucket"), &le, cumulative.to_string());
        }
        let inf = labels(point.attributes(), Some("+Inf".into()));
        sample(
            out,
            &format!("{name}_bucket"),
            &inf,
            point.count().to_string(),
        );
        let plain = labels(point.attributes(), None);
        sample(out, &format!("{name}_sum"), &plain, point.sum().text());
        sample(
            out,
            &format!("{name}_count"),
            &plain,
            point.count().to_string(),
        );
    }
}

fn sample(out: &mut String, name: &str, labels: &str, value: String) {
    let _ = writeln!(out, "{name}{labels} {value}");
}

/// `{key="value",...}` with escaped values and an optional `le`; empty
/// when there are no labels.
fn labels<'a>(attributes: impl Iterator<Item = &'a KeyValue>, le: Option<String>) -> String {
    let mut pairs: Vec<(String, String)> = attributes
        .map(|kv| (label_name(kv.key.as_str()), label_value(&kv.value)))
        .collect();
    pairs.sort();
    if let Some(le) = le {
        pairs.push(("le".into(), le));
    }
    if pairs.is_empty() {
        return String::new();
    }
    let body: Vec<String> = pairs
        .into_iter()
        .map(|(key, value)| {
            let value = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{key}=\"{value}\"")
        })
        .collect();
    format!("{{{}}}", body.join(","))
}

/// A Prometheus label name: letters, digits and `_`, not starting with a
/// digit.
fn label_name(key: &str) -> String {
    let mut name: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

fn label_value(value: &Value) -> String {
    value.as_str().into_owned()
}

#[cfg(test)]
mod tests {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::reader::MetricReader as _;
    use opentelemetry_sdk::metrics::{ManualReader, SdkMeterProvider};

    use super::*;
    use crate::telemetry::metrics as names;

    /// Renders what `record` puts into a fresh provider.
    fn rendered(record: impl FnOnce(&opentelemetry::metrics::Meter)) -> String {
        let reader = std::sync::Arc::new(ManualReader::builder().build());
        #[derive(Debug)]
        struct Shared(std::sync::Arc<ManualReader>);
        impl opentelemetry_sdk::metrics::reader::MetricReader for Shared {
            fn register_pipeline(&self, p: std::sync::Weak<opentelemetry_sdk::metrics::Pipeline>) {
                self.0.register_pipeline(p);
            }
            fn collect(&self, m: &mut ResourceMetrics) -> opentelemetry_sdk::error::OTelSdkResult {
                self.0.collect(m)
            }
            fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
                Ok(())
            }
            fn shutdown_with_timeout(
                &self,
                _: std::time::Duration,
            ) -> opentelemetry_sdk::error::OTelSdkResult {
                Ok(())
            }
            fn temporality(
                &self,
                kind: opentelemetry_sdk::metrics::InstrumentKind,
            ) -> opentelemetry_sdk::metrics::Temporality {
                self.0.temporality(kind)
            }
        }
        let provider = SdkMeterProvider::builder()
            .with_reader(Shared(reader.clone()))
            .build();
        record(&provider.meter("test"));
        let mut metrics = ResourceMetrics::default();
        reader.collect(&mut metrics).expect("collects");
        render(&metrics)
    }

    #[test]
    fn counters_gauges_and_labels_render_as_prometheus_text() {
        let text = rendered(|meter| {
            let counter = meter
                .u64_counter(names::REFUSED_MESSAGES)
                .with_description("Refused.")
                .build();
            counter.add(2, &[KeyValue::new("reason", "bad \"sig\"")]);
            counter.add(1, &[KeyValue::new("reason", "wrong_view")]);
            let _gauge = meter
                .i64_observable_gauge(names::CERTIFICATE_EXPIRY)
                .with_description("Line one\nline two.")
                .with_callback(|o| o.observe(-5, &[KeyValue::new("certificate", "node")]))
                .build();
        });
        assert!(
            text.contains("# TYPE govchain_refused_messages_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("govchain_refused_messages_total{reason=\"bad \\\"sig\\\"\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("govchain_refused_messages_total{reason=\"wrong_view\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP govchain_certificate_expiry_seconds Line one\\nline two.\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE govchain_certificate_expiry_seconds gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("govchain_certificate_expiry_seconds{certificate=\"node\"} -5\n"),
            "{text}"
        );
    }

    #[test]
    fn histograms_have_cumulative_buckets_an_inf_bucket_a_sum_and_a_count() {
        let text = rendered(|meter| {
            let histogram = meter
                .f64_histogram(names::COMMIT_LATENCY)
                .with_boundaries(vec![0.1, 1.0])
                .build();
            for value in [0.05, 0.5, 0.7, 3.0] {
                histogram.record(value, &[]);
            }
        });
        assert!(
            text.contains("# TYPE govchain_commit_latency_seconds histogram\n"),
            "{text}"
        );
        assert!(
            text.contains("govchain_commit_latency_seconds_bucket{le=\"0.1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("govchain_commit_latency_seconds_bucket{le=\"1\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("govchain_commit_latency_seconds_bucket{le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("govchain_commit_latency_seconds_sum 4.25\n"),
            "{text}"
        );
        assert!(
            text.contains("govchain_commit_latency_seconds_count 4\n"),
            "{text}"
        );
    }

    #[test]
    fn label_names_are_made_valid() {
        assert_eq!(label_name("service.instance.id"), "service_instance_id");
        assert_eq!(label_name("9lives"), "_9lives");
    }
}
