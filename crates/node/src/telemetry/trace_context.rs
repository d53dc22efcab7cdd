//! W3C trace context (`traceparent`, `tracestate`) across processes: in
//! gRPC metadata for unary calls (a tower layer on the server, an injector
//! for clients), and in a forwarded `TransactionBatch`'s `trace_context`
//! map for transactions that travel on a peer's long-lived consensus
//! stream, whose metadata was sent once when the stream opened.

use std::collections::HashMap;
use std::task::{Context as TaskContext, Poll};

use govchain_crypto::Digest;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Instrument as _;
use tracing::instrument::Instrumented;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Injects the current span's context into a request's metadata (no-op
/// when no traced span is active).
pub fn inject_current(metadata: &mut tonic::metadata::MetadataMap) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut MetadataInjector(metadata));
}

/// The context the caller sent in `headers`; invalid when none was sent.
pub fn extract_headers(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// `context` as a W3C carrier map (empty when nothing is traced).
pub fn to_map(context: &Context) -> HashMap<String, String> {
    let mut map = HashMap::new();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(context, &mut map);
    }
    map
}

/// The carrier map of the first traced one of `ids` (empty when none is
/// traced), for a batch a primary seals itself: the trace of a
/// transaction it proposes before admission sealed it still reaches the
/// peers.
pub fn map_of_first<'a>(
    traces: &TransactionTraces,
    ids: impl Iterator<Item = &'a Digest>,
) -> HashMap<String, String> {
    traces
        .spans_of(ids)
        .into_iter()
        .next()
        .map(|span| to_map(&Context::new().with_remote_span_context(span)))
        .unwrap_or_default()
}

/// The context in a carrier map; invalid when the map holds none.
pub fn from_map(map: &HashMap<String, String>) -> Context {
    TraceContextPropagator::new().extract(map)
}

/// Makes `span` a child of `parent` when `parent` carries a trace.
pub fn adopt(span: &tracing::Span, parent: Context) {
    if parent.span().span_context().is_valid() {
        // Fails only when the span is disabled or already started.
        let _ = span.set_parent(parent);
    }
}

/// Transactions' admission spans kept for the block that includes them; at
/// most this many (the oldest are forgotten first).
pub const TRACED_TRANSACTIONS_MAX: usize = 65_536;

/// The admission span of each traced transaction in the mempool, so that
/// the block that commits it continues (first transaction) or links to
/// (the others) its trace. Empty when nothing is traced.
#[derive(Default)]
pub struct TransactionTraces {
    inner: std::sync::Mutex<(
        HashMap<Digest, SpanContext>,
        std::collections::VecDeque<Digest>,
    )>,
}

impl TransactionTraces {
    /// Remembers the span of a traced transaction; ignores untraced ones.
    pub fn record(&self, id: Digest, span: &tracing::Span) {
        let context = span.context();
        let span_context = context.span().span_context().clone();
        if !span_context.is_valid() {
            return;
        }
        let mut inner = self.lock();
        let (map, order) = &mut *inner;
        if map.insert(id, span_context).is_none() {
            order.push_back(id);
        }
        while order.len() > TRACED_TRANSACTIONS_MAX {
            if let Some(oldest) = order.pop_front() {
                map.remove(&oldest);
            }
        }
    }

    /// The recorded spans of `ids`, in order (untraced ones skipped).
    pub fn spans_of<'a>(&self, ids: impl Iterator<Item = &'a Digest>) -> Vec<SpanContext> {
        let inner = self.lock();
        ids.filter_map(|id| inner.0.get(id).cloned()).collect()
    }

    /// Forgets committed transactions.
    pub fn forget<'a>(&self, ids: impl Iterator<Item = &'a Digest>) {
        let mut inner = self.lock();
        let (map, order) = &mut *inner;
        let mut removed = false;
        for id in ids {
            removed |= map.remove(id).is_some();
        }
        if removed {
            order.retain(|id| map.contains_key(id));
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        (
            HashMap<Digest, SpanContext>,
            std::collections::VecDeque<Digest>,
        ),
    > {
        // Plain maps: a panic elsewhere leaves them consistent.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A span for work done on behalf of traced transactions: its parent is
/// the first one's span and it links to the others', so the first
/// transaction's trace shows the whole path and the others lead to it.
pub fn continue_traces(span: &tracing::Span, transactions: &[SpanContext]) {
    let Some((first, rest)) = transactions.split_first() else {
        return;
    };
    adopt(span, Context::new().with_remote_span_context(first.clone()));
    for other in rest {
        span.add_link(other.clone());
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let Ok(key) = tonic::metadata::MetadataKey::from_bytes(key.as_bytes()) else {
            return;
        };
        if let Ok(value) = tonic::metadata::MetadataValue::try_from(value.as_str()) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// A tower layer for the gRPC server: a request that carries a
/// `traceparent` is served inside a `grpc.server` span that continues the
/// caller's trace. Requests without one (peers' consensus streams, most
/// reads) get no span here, so that a stream open for hours is not one
/// endless span.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerTraceLayer;

impl<S> tower_layer::Layer<S> for ServerTraceLayer {
    type Service = ServerTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerTrace { inner }
    }
}

#[derive(Clone, Debug)]
pub struct ServerTrace<S> {
    inner: S,
}

impl<S, B> tower_service::Service<http::Request<B>> for ServerTrace<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let parent = extract_headers(request.headers());
        if !parent.span().span_context().is_valid() {
            return self.inner.call(request).instrument(tracing::Span::none());
        }
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %request.uri().path(),
            otel.kind = "server",
            rpc.system = "grpc",
        );
        adopt(&span, parent);
        let future = span.in_scope(|| self.inner.call(request));
        future.instrument(span)
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    fn remote() -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex"),
            SpanId::from_hex("00f067aa0ba902b7").expect("hex"),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ))
    }

    #[test]
    fn a_context_survives_the_batch_map() {
        let map = to_map(&remote());
        assert_eq!(
            map.get("traceparent").map(String::as_str),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        let back = from_map(&map);
        assert_eq!(
            back.span().span_context().trace_id(),
            remote().span().span_context().trace_id()
        );
        assert_eq!(
            back.span().span_context().span_id(),
            remote().span().span_context().span_id()
        );
        assert!(back.span().span_context().is_remote());
    }

    #[test]
    fn no_trace_gives_an_empty_map_and_an_invalid_context() {
        assert!(to_map(&Context::new()).is_empty());
        assert!(!from_map(&HashMap::new()).span().span_context().is_valid());
        let mut bad = HashMap::new();
        bad.insert("traceparent".to_owned(), "00-zz-yy-01".to_owned());
        assert!(!from_map(&bad).span().span_context().is_valid());
    }

    #[test]
    fn metadata_carries_the_traceparent_a_server_extracts() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        TraceContextPropagator::new()
            .inject_context(&remote(), &mut MetadataInjector(&mut metadata));
        let headers = metadata.into_headers();
        assert!(headers.contains_key("traceparent"));
        let extracted = extract_headers(&headers);
        assert_eq!(
            extracted.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn a_server_span_continues_the_callers_trace() {
        use opentelemetry::trace::TracerProvider as _;
        use tower_service::Service as _;
        use tracing_subscriber::layer::SubscriberExt as _;

        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let seen = tracing::subscriber::with_default(subscriber, || {
            let mut service = tower_layer::Layer::layer(&ServerTraceLayer, CurrentTrace);
            let mut headers = tonic::metadata::MetadataMap::new();
            TraceContextPropagator::new()
                .inject_context(&remote(), &mut MetadataInjector(&mut headers));
            let mut request = http::Request::new(());
            *request.headers_mut() = headers.into_headers();
            let future = service.call(request);
            futures_block_on(future)
        });
        assert_eq!(
            seen.expect("infallible").to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    /// Answers with the trace id of the span it runs in.
    struct CurrentTrace;

    impl tower_service::Service<http::Request<()>> for CurrentTrace {
        type Response = TraceId;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<TraceId, Self::Error>>;

        fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            let context = tracing::Span::current().context();
            let trace = context.span().span_context().trace_id();
            std::future::ready(Ok(trace))
        }
    }

    /// Polls a future that never waits.
    fn futures_block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(future)
    }
}
