//! JSON log lines carrying the OpenTelemetry trace and span ids, so that a
//! log search can jump to the trace and back.
//!
//! tracing-subscriber's own JSON format knows nothing of OpenTelemetry ids,
//! hence this formatter: one object per line with `timestamp`, `level`,
//! `target`, `fields`, `span` and `spans` (as tracing-subscriber writes
//! them), plus `trace_id` and `span_id` when the current span is traced.

use std::fmt;

use opentelemetry::trace::TraceContextExt as _;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime as _, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter of `--log-format json`.
pub struct JsonWithTrace;

impl<S, N> FormatEvent<S, N> for JsonWithTrace
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = FieldsToJson(Map::new());
        event.record(&mut fields);
        let mut line = Map::new();
        line.insert("timestamp".into(), Value::String(timestamp));
        line.insert(
            "level".into(),
            Value::String(event.metadata().level().to_string()),
        );
        line.insert(
            "target".into(),
            Value::String(event.metadata().target().to_owned()),
        );
        line.insert("fields".into(), Value::Object(fields.0));
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<Value> = scope.from_root().map(|span| span_json(&span)).collect();
            if let Some(current) = spans.last() {
                line.insert("span".into(), current.clone());
            }
            line.insert("spans".into(), Value::Array(spans));
        }
        let (trace_id, span_id) = trace_ids();
        if let Some(trace_id) = trace_id {
            line.insert("trace_id".into(), Value::String(trace_id));
        }
        if let Some(span_id) = span_id {
            line.insert("span_id".into(), Value::String(span_id));
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// A span as `{"name": ..., <its fields>}`; its fields were recorded by
/// `JsonFields`, so they are a JSON object already.
fn span_json<S>(span: &tracing_subscriber::registry::SpanRef<'_, S>) -> Value
where
    S: for<'a> LookupSpan<'a>,
{
    let mut object = Map::new();
    object.insert("name".into(), Value::String(span.name().to_owned()));
    let extensions = span.extensions();
    let recorded = extensions
        .get::<FormattedFields<tracing_subscriber::fmt::format::JsonFields>>()
        .and_then(|fields| serde_json::from_str::<Map<String, Value>>(fields).ok());
    if let Some(recorded) = recorded {
        object.extend(recorded);
    }
    Value::Object(object)
}

/// The W3C ids of the entered span, when OpenTelemetry traces it. The
/// OpenTelemetry layer makes an entered span's context the current one
/// (context activation); the dispatcher itself cannot be asked from
/// inside an event (tracing refuses re-entry).
fn trace_ids() -> (Option<String>, Option<String>) {
    let context = opentelemetry::Context::current();
    let span = context.span();
    let span_context = span.span_context();
    if !span_context.is_valid() {
        return (None, None);
    }
    (
        Some(span_context.trace_id().to_string()),
        Some(span_context.span_id().to_string()),
    )
}

struct FieldsToJson(Map<String, Value>);

impl Visit for FieldsToJson {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn lines(buffer: &Buffer) -> Vec<Value> {
        let bytes = buffer.0.lock().expect("buffer").clone();
        String::from_utf8(bytes)
            .expect("utf-8")
            .lines()
            .map(|line| serde_json::from_str(line).expect("each line is JSON"))
            .collect()
    }

    #[test]
    fn a_line_in_a_traced_span_carries_its_trace_and_span_ids() {
        let buffer = Buffer::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(move || writer.clone())
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .event_format(JsonWithTrace),
            );
        let expected = tracing::subscriber::with_default(subscriber, || {
            tracing::info!(seq = 1u64, "outside");
            let span = tracing::info_span!("admission", node = "tax");
            let _entered = span.enter();
            tracing::info!(transaction_id = "ab12", "admitted");
            let context = span.context();
            let otel = context.span();
            let ids = otel.span_context();
            (ids.trace_id().to_string(), ids.span_id().to_string())
        });
        let lines = lines(&buffer);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["fields"]["message"], "outside");
        assert_eq!(lines[0]["fields"]["seq"], 1);
        assert!(lines[0].get("trace_id").is_none(), "{}", lines[0]);
        assert_eq!(lines[1]["level"], "INFO");
        assert_eq!(lines[1]["fields"]["transaction_id"], "ab12");
        assert_eq!(lines[1]["span"]["name"], "admission");
        assert_eq!(lines[1]["span"]["node"], "tax");
        assert_eq!(lines[1]["trace_id"], expected.0.as_str());
        assert_eq!(lines[1]["span_id"], expected.1.as_str());
        assert_eq!(expected.0.len(), 32);
    }
}
