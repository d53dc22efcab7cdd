//! Telemetry: logs (text or JSON), traces over OTLP/gRPC, W3C trace context
//! across processes, and metrics for Prometheus and OTLP.
//!
//! Everything here is configured by the OpenTelemetry SDK's standard
//! environment variables and is entirely off when none is set: no exporter
//! is built, no thread is started, and spans stay local to `tracing`.
//! Only this module (and the node's handlers that open spans) knows about
//! OpenTelemetry; `pbft` and `exec` stay free of it.

pub mod driver_metrics;
pub mod json_log;
pub mod metrics;
pub mod prometheus;
pub mod thread_cpu;
pub mod trace_context;

mod http;

use std::io::{self, IsTerminal as _};
use std::str::FromStr;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub use driver_metrics::DriverMetrics;
pub use http::{metrics_url, serve_metrics};
pub use metrics::NodeMetrics;

/// The service name spans and metrics carry when `OTEL_SERVICE_NAME` is
/// not set.
pub const SERVICE_NAME_DEFAULT: &str = "govchain";

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per line, with `trace_id` and `span_id` when a
    /// traced span is active.
    Json,
}

#[derive(Debug, thiserror::Error)]
#[error("unknown log format {0:?}: expected \"text\" or \"json\"")]
pub struct UnknownLogFormat(String);

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(UnknownLogFormat(other.to_owned())),
        }
    }
}

/// Which OTLP signals the environment asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OtlpSignals {
    pub traces: bool,
    pub metrics: bool,
}

impl OtlpSignals {
    /// Reads the standard variables: a signal is exported when an OTLP
    /// endpoint is set for it (`OTEL_EXPORTER_OTLP_ENDPOINT`, or the
    /// signal's own `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT`), unless
    /// `OTEL_{TRACES,METRICS}_EXPORTER=none` or `OTEL_SDK_DISABLED=true`.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`OtlpSignals::from_env`] over any variable source (for tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let set = |name: &str| lookup(name).is_some_and(|value| !value.trim().is_empty());
        if lookup("OTEL_SDK_DISABLED")
            .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
        {
            return Self::default();
        }
        let signal = |endpoint: &str, exporter: &str| {
            let endpoint = set("OTEL_EXPORTER_OTLP_ENDPOINT") || set(endpoint);
            let disabled = lookup(exporter).is_some_and(|value| value.trim() == "none");
            endpoint && !disabled
        };
        Self {
            traces: signal("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER"),
            metrics: signal(
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "OTEL_METRICS_EXPORTER",
            ),
        }
    }
}

/// What [`init`] started; [`Telemetry::shutdown`] flushes it.
#[must_use = "call shutdown() so that buffered spans are exported"]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported over OTLP.
    pub fn traces_exported(&self) -> bool {
        self.tracer_provider.is_some()
    }

    /// Exports the spans still buffered and stops the exporter's thread.
    /// Call it while the tokio runtime that built the exporter still runs
    /// (but not from one of its tasks): the gRPC connection lives there.
    pub fn shutdown(self) {
        if let Some(provider) = self.tracer_provider
            && let Err(err) = provider.shutdown()
        {
            // The logger may be the thing that failed; stderr is certain.
            eprintln!("warning: could not flush traces to the OTLP endpoint: {err}");
        }
    }
}

/// The resource every span and metric carries: `service.name` (from
/// `OTEL_SERVICE_NAME`, else "govchain"), `OTEL_RESOURCE_ATTRIBUTES`, and
/// `service.instance.id` = the node's department name when known, so that
/// the nodes of one consortium sharing a service name stay apart.
pub fn resource(instance: Option<&str>) -> Resource {
    let mut builder = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none_or(|name| name.is_empty()) {
        builder = builder.with_service_name(SERVICE_NAME_DEFAULT);
    }
    if let Some(instance) = instance {
        builder = builder.with_attribute(KeyValue::new("service.instance.id", instance.to_owned()));
    }
    builder.build()
}

/// Installs the global `tracing` subscriber: the filter from `GOVCHAIN_LOG`
/// (or `RUST_LOG`, else `default_filter`), logs to stderr in `format`, and,
/// when the environment asks for traces, an OpenTelemetry layer exporting
/// spans over OTLP/gRPC in batches.
///
/// Call it inside the tokio runtime (`Runtime::enter`): the exporter's gRPC
/// channel is driven by it.
pub fn init(format: LogFormat, default_filter: &str, instance: Option<&str>) -> Telemetry {
    let filter = ["GOVCHAIN_LOG", "RUST_LOG"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
        .and_then(|value| EnvFilter::try_new(value).ok())
        .unwrap_or_else(|| EnvFilter::new(default_filter));
    let (tracer_provider, export_error) = if OtlpSignals::from_env().traces {
        match span_exporter() {
            Ok(exporter) => (
                Some(
                    SdkTracerProvider::builder()
                        .with_batch_exporter(exporter)
                        .with_resource(resource(instance))
                        .build(),
                ),
                None,
            ),
            Err(err) => (None, Some(err)),
        }
    } else {
        (None, None)
    };
    // Spans are traced from INFO whatever the log filter says: a client
    // command logs only warnings, yet its submission must start the trace.
    let otel = tracer_provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("govchain"))
            .with_threads(false)
            .with_filter(LevelFilter::INFO)
    });
    let registry = tracing_subscriber::registry().with(otel);
    // Colours only on a terminal: node logs usually go to files.
    let ansi = io::stderr().is_terminal();
    match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(io::stderr)
                    .with_ansi(ansi)
                    .with_filter(filter),
            )
            .init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(io::stderr)
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .event_format(json_log::JsonWithTrace)
                    .with_filter(filter),
            )
            .init(),
    }
    if let Some(err) = export_error {
        tracing::warn!(error = %err, "cannot set up the OTLP span exporter; traces are not exported");
    }
    Telemetry { tracer_provider }
}

fn span_exporter()
-> Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::WithExportConfig as _;
    // The builder reads OTEL_EXPORTER_OTLP_{,TRACES_}ENDPOINT, _HEADERS and
    // _TIMEOUT itself; the protocol is gRPC whatever OTEL_EXPORTER_OTLP_PROTOCOL says.
    opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_protocol(opentelemetry_otlp::Protocol::Grpc)
        .build()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn signals(vars: &[(&str, &str)]) -> OtlpSignals {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        OtlpSignals::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint() {
        assert_eq!(signals(&[]), OtlpSignals::default());
        assert_eq!(
            signals(&[
                ("OTEL_SERVICE_NAME", "x"),
                ("OTEL_TRACES_SAMPLER", "always_on")
            ]),
            OtlpSignals::default()
        );
    }

    #[test]
    fn the_common_endpoint_turns_on_both_signals() {
        let on = signals(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")]);
        assert!(on.traces);
        assert!(on.metrics);
    }

    #[test]
    fn a_signal_endpoint_or_exporter_none_selects_one_signal() {
        let traces = signals(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317")]);
        assert!(traces.traces);
        assert!(!traces.metrics);
        let no_metrics = signals(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_METRICS_EXPORTER", "none"),
        ]);
        assert!(no_metrics.traces);
        assert!(!no_metrics.metrics);
    }

    #[test]
    fn the_sdk_can_be_disabled_whatever_else_is_set() {
        let off = signals(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert_eq!(off, OtlpSignals::default());
    }

    #[test]
    fn log_formats_parse_and_others_are_refused() {
        assert_eq!("text".parse::<LogFormat>().ok(), Some(LogFormat::Text));
        assert_eq!("json".parse::<LogFormat>().ok(), Some(LogFormat::Json));
        let err = "yaml".parse::<LogFormat>().expect_err("refused");
        assert!(err.to_string().contains("\"yaml\""), "{err}");
    }
}
