//! The govchain web portal: what citizens, officers and anyone curious see
//! of the chain in a browser, served by a department's node over HTTPS.
//!
//! The portal is a client of its own node's public gRPC API, over mutual
//! TLS with the node's certificate, like any department system: it holds no
//! ledger handle and no key that signs transactions. What a citizen does
//! (log in, grant or revoke a consent) is signed on the citizen's device;
//! the portal only shows challenges and reads the chain.
//!
//! - [`pages`]: the HTML pages (maud templates) and their handlers;
//! - [`login`]: QR login, the device's callback and the wait for it;
//! - [`request`], [`signing`]: transactions a page asks the citizen's
//!   device to sign (consents), and the device's signed answer;
//! - [`sessions`]: browser sessions, CSRF tokens and login rate limits;
//! - [`security`]: the headers every response carries;
//! - [`node`]: the gRPC clients of the node.

#![forbid(unsafe_code)]

pub mod login;
pub mod node;
pub mod pages;
pub mod request;
pub mod security;
pub mod sessions;
pub mod signing;
pub mod waiting;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower_service::Service as _;
use tracing::{debug, info, warn};

/// How long a browser may take to complete the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Browser connections open at once; past it new ones are closed at once.
pub const CONNECTIONS_MAX: usize = 512;

/// Everything the portal needs, from the node's settings.
#[derive(Clone)]
pub struct PortalConfig {
    /// The department whose node serves the portal.
    pub department: String,
    /// The URL browsers reach the portal at, ending in '/', e.g.
    /// `https://127.0.0.1:8443/`. Login callbacks point here.
    pub public_url: String,
    /// The node's gRPC endpoint, e.g. `https://127.0.0.1:7001`.
    pub node_endpoint: String,
    /// The DNS name in the node's certificate, checked on connecting.
    pub node_dns_name: String,
    pub ca_certificate_pem: String,
    /// The node's certificate and key: the portal's TLS identity towards
    /// browsers and its client identity towards the node.
    pub certificate_pem: String,
    pub key_pem: String,
    /// The validators' department names, in genesis order (commit
    /// certificates name signers by index).
    pub validators: Vec<String>,
    /// The chain's genesis, written into evidence bundles.
    pub genesis: govchain_pki::Genesis,
    /// Where browsers' handshakes get the certificate, when the node
    /// rotates it (`node::certificates::NodeCertificates`); None serves
    /// `certificate_pem` for good.
    pub certificate_resolver: Option<Arc<dyn rustls::server::ResolvesServerCert>>,
}

/// What the handlers share.
pub struct Portal {
    pub config: PortalConfig,
    pub node: node::NodeClients,
    pub sessions: sessions::Sessions,
    pub logins: login::PendingLogins,
    pub signs: signing::PendingSigns,
}

pub type AppState = Arc<Portal>;

/// The peer address of a browser's connection, for rate limits.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error("the portal's TLS certificate or key is unusable: {0}")]
    Tls(String),
    #[error("cannot reach the node's gRPC endpoint {endpoint}: {reason}")]
    Node { endpoint: String, reason: String },
}

/// The routes of the portal.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::home::show))
        .route("/login", get(login::show))
        .route("/login/events", get(login::events))
        .route("/login/finish", post(login::finish))
        .route("/login/callback", post(login::callback))
        .route("/logout", post(login::logout))
        .route("/me", get(pages::citizen::show))
        .route("/me/consents/new", post(signing::grant_consent))
        .route("/me/consents/revoke", post(signing::revoke_consent))
        .route("/officer", get(pages::officer::inbox))
        .route("/officer/case/{id}", get(pages::officer::case))
        .route("/officer/case/{id}/act", post(pages::officer::act))
        .route(
            "/officer/case/{id}/document/{index}",
            get(pages::officer::document),
        )
        .route("/officer/case/{id}/bundle", get(pages::officer::bundle))
        .route("/sign/events", get(signing::events))
        .route("/sign/callback", post(signing::callback))
        .route("/explorer", get(pages::explorer::overview))
        .route("/explorer/latest", get(pages::explorer::latest_fragment))
        .route("/explorer/events", get(pages::explorer::events))
        .route("/explorer/block/{height}", get(pages::explorer::block))
        .route("/explorer/tx/{id}", get(pages::explorer::transaction))
        .route("/explorer/anchors", get(pages::explorer::anchors))
        .route("/explorer/search", get(pages::explorer::search))
        .route("/assets/portal.css", get(pages::assets::css))
        .route("/assets/portal.js", get(pages::assets::js))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn(security::headers))
        .with_state(state)
}

/// Serves the portal on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: PortalConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), PortalError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(&config)?));
    let node = node::NodeClients::connect(&config)?;
    let state = Arc::new(Portal {
        config,
        node,
        sessions: sessions::Sessions::default(),
        logins: login::PendingLogins::default(),
        signs: signing::PendingSigns::default(),
    });
    info!(url = %state.config.public_url, "serving the web portal over HTTPS");
    let app = router(state);
    let places = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    warn!(error = %err, "portal accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            warn!(peer = %peer, "portal connection refused: {CONNECTIONS_MAX} are open");
            continue;
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let _place = place;
            let tls =
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(err)) => {
                        debug!(peer = %peer, error = %err, "portal TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let service = hyper::service::service_fn(move |mut request| {
                request.extensions_mut().insert(ClientAddr(peer));
                app.clone().call(request)
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tls), service)
                .await;
            if let Err(err) = served {
                debug!(peer = %peer, error = %err, "portal connection ended with an error");
            }
        });
    }
}

/// Server-side TLS towards browsers: the node's certificate (it names
/// `localhost` and the loopback addresses, and the node's DNS name), no
/// client certificate, HTTP/1.1.
fn tls_config(config: &PortalConfig) -> Result<rustls::ServerConfig, PortalError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |err: &dyn std::fmt::Display| PortalError::Tls(err.to_string());
    let chain = CertificateDer::pem_slice_iter(config.certificate_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| bad(&err))?;
    let key = PrivateKeyDer::from_pem_slice(config.key_pem.as_bytes()).map_err(|err| bad(&err))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| bad(&err))?
        .with_no_client_auth();
    let mut tls = match &config.certificate_resolver {
        Some(resolver) => builder.with_cert_resolver(resolver.clone()),
        None => builder
            .with_single_cert(chain, key)
            .map_err(|err| bad(&err))?,
    };
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}
