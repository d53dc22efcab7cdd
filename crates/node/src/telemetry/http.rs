//! The plain-HTTP `/metrics` endpoint (`metrics_listen` in `node.toml`),
//! on the node's tokio runtime with the hyper that tonic already brings.
//!
//! Plain HTTP, not mutual TLS: scrapers (Prometheus, the OpenTelemetry
//! collector) hold no consortium certificate, and the page carries no
//! personal data or keys, only counts. Bind it to an address that only the
//! monitoring network reaches.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::metrics::NodeMetrics;

/// Scrapes served at once; more connections are closed on accept.
pub const METRICS_CONNECTIONS_MAX: usize = 16;
/// A scraper must send its request headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `GET /metrics` on `listener` until the task is aborted.
/// How long the metrics server waits after a failed accept.
const ACCEPT_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(50);

pub async fn serve_metrics(listener: TcpListener, metrics: Arc<NodeMetrics>) {
    let slots = Arc::new(Semaphore::new(METRICS_CONNECTIONS_MAX));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::debug!(error = %err, "metrics: accept failed");
                tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics: too many connections; closing");
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let metrics = metrics.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&request, metrics).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(err) = served {
                tracing::debug!(%peer, error = %err, "metrics: connection ended");
            }
            drop(slot);
        });
    }
}

async fn respond(request: &Request<Incoming>, metrics: Arc<NodeMetrics>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return text(
            StatusCode::NOT_FOUND,
            "not found; metrics are at /metrics\n".into(),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into());
    }
    // Callbacks read the ledger, files and /proc: off the async threads.
    let collected = tokio::task::spawn_blocking(move || metrics.collect()).await;
    match collected {
        Ok(Some(Ok(collected))) => {
            let body = super::prometheus::render(&collected);
            let mut response = text(StatusCode::OK, body);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(super::prometheus::CONTENT_TYPE),
            );
            response
        }
        Ok(Some(Err(err))) => {
            tracing::warn!(error = %err, "metrics: collection failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "collection failed; see the node log\n".into(),
            )
        }
        Ok(None) | Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics are not available\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

/// The address `/metrics` is served on, for `GetStatus` and the devnet.
pub fn metrics_url(listen: SocketAddr) -> String {
    format!("http://{listen}/metrics")
}
