//! The govchain node: serves `NodeService` to department systems and
//! `ConsensusService` to peers over mutual TLS, admits transactions into a
//! bounded mempool, and drives the PBFT replica against the redb ledger.
//!
//! **Invariant:** only this crate (servers) and `cli` (clients) touch the
//! network; the replica runs on one thread of its own and never waits on a
//! peer.
#![forbid(unsafe_code)]

mod admission;
mod apply;
mod approval;
mod audit;
pub mod backup;
mod batches;
mod blob_service;
mod blobs;
mod certificates;
mod certified_header;
mod chain_state;
mod clock;
pub mod config;
mod connections;
mod consensus_store;
mod directory;
mod dissemination;
mod driver;
pub mod errors;
pub mod events;
mod identity;
mod inclusion_proof;
mod limits;
mod mempool;
mod peers;
mod prune;
pub mod queries;
mod query_index;
mod readiness;
mod reload;
mod requests;
mod service;
mod shared;
mod state_proof;
mod state_sync;
mod supervise;
mod sync;
pub mod telemetry;
pub mod tls;
mod wire;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use govchain_crypto::PublicKey;
use govchain_ledger::Ledger;
use govchain_pbft::{Config, Event, Replica, ValidatorSet};
use govchain_proto::admin::v1::admin_service_server::AdminServiceServer;
use govchain_proto::approval::v1::approval_service_server::ApprovalServiceServer;
use govchain_proto::blob::v1::blob_service_server::BlobServiceServer;
use govchain_proto::consensus::v1::consensus_service_server::ConsensusServiceServer;
use govchain_proto::directory::v1::directory_service_server::DirectoryServiceServer;
use govchain_proto::identity::v1::identity_service_server::IdentityServiceServer;
use govchain_proto::node::v1::node_service_server::NodeServiceServer;
use prost::Message as _;
use tokio::sync::mpsc;
use tonic::transport::Server;
use tracing::{info, warn};

pub use audit::{AuditReport, audit_ledger};
pub use certified_header::CertifiedHeaderError;
pub use chain_state::departments;
pub use clock::now_ms;
pub use config::{NodeFile, PeerFile, Settings};
pub use inclusion_proof::{
    InclusionProofError, ProvenInclusion, verify_anchoring_proof, verify_inclusion_proof,
    verify_transaction_proof,
};
pub use mempool::NONCE_AHEAD_MAX;
pub use prune::{PRUNE_HORIZON_BLOCKS_MIN, prune_ledger};
pub use readiness::{LIVENESS_SERVICE, SYNC_LAG_BLOCKS_MAX};
pub use state_proof::{ProvenHead, StateProofError, verify_state_proof};
pub use supervise::FatalError;
pub use wire::{certificate_from_wire, certificate_to_wire};

use crate::admission::Admission;
use crate::approval::ApprovalApi;
use crate::blob_service::BlobApi;
use crate::blobs::{BLOB_MESSAGE_BYTES_MAX, Blobs};
use crate::directory::DirectoryApi;
use crate::driver::{DRIVER_EVENTS_MAX, Driver, DriverEvent, TICK_INTERVAL};
use crate::identity::IdentityApi;
use crate::mempool::Mempool;
use crate::peers::{PEER_MESSAGE_BYTES_MAX, PeerSet};
use crate::service::{ConsensusApi, NodeApi};
use crate::shared::Shared;

/// The largest request a client may send: well above the transaction payload
/// limit, so that an oversized transaction gets a precise
/// `RESOURCE_EXHAUSTED` from admission rather than a transport error.
pub const CLIENT_MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The largest `IdentityService` request: a `ReadAttribute` envelope (the
/// genesis payload limit and its framing), with room for the other fields.
/// Not the generic 16 MiB: these requests hold repeated strings, which take
/// about twelve times their encoded size once decoded (a 16 MiB request of
/// empty strings peaked near 200 MB).
pub fn identity_request_bytes_max(genesis: &govchain_pki::Genesis) -> usize {
    genesis.consensus.transaction_payload_bytes_max as usize
        + govchain_exec::TRANSACTION_ENVELOPE_OVERHEAD_BYTES_MAX
        + 16 * 1024
}

/// How long in-flight requests may finish after a shutdown signal.
/// Concurrent calls on one connection (HTTP/2 streams). The load
/// generator puts up to 512 on one connection per node.
pub const STREAMS_PER_CONNECTION_MAX: u32 = 1024;
/// A connection that answers no HTTP/2 ping within the timeout is closed,
/// so a peer that vanished does not hold its streams for ever.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// The validator set of a genesis, as `pbft` wants it.
pub fn validator_set(genesis: &govchain_pki::Genesis) -> anyhow::Result<ValidatorSet> {
    let keys = genesis
        .validators
        .iter()
        .map(|v| {
            PublicKey::from_hex(&v.consensus_public_key)
                .with_context(|| format!("consensus key of {}", v.name))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(ValidatorSet::new(keys)?)
}

/// Runs a node until `shutdown` completes, or until a part it needs fails
/// ([`FatalError`], returned as the error).
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (fatal, mut fatal_errors) = supervise::Fatal::new();
    let genesis = settings.genesis.clone();
    let no_ledger = !settings
        .data_dir
        .join(govchain_ledger::LEDGER_FILE_NAME)
        .exists();
    if settings.state_sync
        && no_ledger
        && let Some(joined) = state_sync::join(&settings).await
    {
        info!(node = %settings.name, height = joined.height, entries = joined.state_entries, state_bytes = joined.state_bytes, peer = %joined.peer, seconds = joined.elapsed.as_secs_f64(), "installed a state snapshot; fetching the blocks after it");
    }
    let ledger = Arc::new(
        Ledger::open_with(
            &settings.data_dir,
            &genesis.chain_id,
            genesis.hash(),
            settings.block_log_segment_bytes,
        )
        .with_context(|| format!("cannot open the ledger in {}", settings.data_dir.display()))?,
    );
    // Validators checkpoint at different heights, so one's write-out never
    // stalls the quorum (`Ledger::stagger`).
    ledger.stagger(settings.index);
    let recovered = ledger.recovered();
    if recovered.torn_bytes > 0 || recovered.removed_segment.is_some() {
        tracing::warn!(node = %settings.name, torn_bytes = recovered.torn_bytes, removed_segment = ?recovered.removed_segment, "cut a record torn by a crash off the end of the block log");
    }
    let replayed = apply::replay_log(&ledger, &genesis).with_context(|| {
        format!(
            "cannot re-apply the logged blocks above the ledger's last checkpoint in {}",
            settings.data_dir.display()
        )
    })?;
    if replayed > 0 {
        info!(node = %settings.name, blocks = replayed, "re-applied logged blocks above the last checkpoint");
    }
    let head = ledger.head();
    info!(node = %settings.name, height = head.height, head = %head.hash.short(), chain = %genesis.chain_id, "ledger opened");
    // Kept to checkpoint the ledger once the driver stopped.
    let ledger_at_stop = ledger.clone();
    if let Some(warning) = genesis.consensus.response_limit_warning() {
        tracing::warn!(node = %settings.name, "{warning}");
    }

    // An observer does not stream to validators (they would refuse it); it
    // only fetches blocks.
    let peers = PeerSet::start(&settings, &fatal, !settings.observer);
    let mempool = Mempool::new(
        settings.mempool.transactions_max,
        settings.mempool.bytes_max,
        std::time::Duration::from_millis(settings.mempool.parked_ttl_ms),
    );
    let blob_dir = settings.data_dir.join("blobs");
    let store = govchain_blobstore::BlobStore::open(&blob_dir)
        .with_context(|| format!("cannot open the blob store in {}", blob_dir.display()))?;
    let holders = settings
        .peers
        .iter()
        .map(|peer| {
            (
                peer.name.clone(),
                (
                    peer.address.clone(),
                    tls::peer_client_config(&settings, &peer.name),
                ),
            )
        })
        .collect();
    let gc_grace_ms = (settings.blobs.gc_interval_secs > 0)
        .then(|| settings.blobs.gc_grace_secs.saturating_mul(1000));
    let blobs = Blobs::new(store, settings.blobs.upload_bytes_max, gc_grace_ms, holders);
    let departments = Arc::new(chain_state::InForce::new(Arc::new(
        chain_state::departments(&genesis),
    )));
    departments.refresh(&ledger)?;
    // Every node can sign receipts; it does while its consensus key is its
    // department's node key on chain (a validator, in genesis or voted in).
    let blobs = Arc::new(blobs.with_receipts(blobs::Receipts {
        // The same key as the replica's (a copy, as there).
        key: govchain_crypto::SigningKey::from_pkcs8_pem(&settings.consensus_key.to_pkcs8_pem()?)?,
        chain_id: genesis.chain_id.clone(),
        holder: settings.name.clone(),
        departments: departments.clone(),
    }));
    let shared = Arc::new(Shared::new(
        departments,
        settings.observer,
        settings.name.clone(),
        settings.index,
        genesis.clone(),
        ledger,
        blobs,
        mempool,
        peers,
    )?);

    // An observer whose department governance made a validator votes too.
    let restored = dissemination::restore_batches(&shared)
        .context("cannot reload the batches of this node's votes")?;
    info!(node = %settings.name, batches = restored, "batches of pending proposals reloaded");
    let replica = start_replica(&shared, &settings.consensus_key)?;
    if replica.is_none() {
        shared.peers.clear();
    }
    if replica.is_none() && !settings.observer {
        warn!(node = %settings.name, "this node's consensus key is not in the validator set in force (governance removed it): following the chain without voting");
    }
    if replica.is_some() && settings.observer {
        info!(node = %settings.name, "configured as an observer, but governance made this node a validator: it votes");
    }
    let (events, receiver) = mpsc::channel(DRIVER_EVENTS_MAX);
    let sync = sync::start(&settings, shared.clone(), events.clone(), &fatal);
    let mut tasks = Vec::new();
    shared
        .voting
        .store(replica.is_some(), std::sync::atomic::Ordering::Relaxed);
    tasks.push(fatal.spawn_task(
        "follow",
        sync::follow(
            sync.clone(),
            settings.peers.iter().map(|p| p.index).collect(),
            shared.clone(),
        ),
    ));
    let mut metrics = node_metrics(&settings);
    // Observers too: governance may make one a validator.
    let fetch = Some(dissemination::Fetcher::start(
        &settings,
        shared.clone(),
        events.clone(),
        &fatal,
    ));
    let driver = Driver::new(
        shared.clone(),
        replica,
        govchain_crypto::SigningKey::from_pkcs8_pem(&settings.consensus_key.to_pkcs8_pem()?)?,
        sync.clone(),
        fetch,
        metrics.driver(),
    );
    let driver_thread = fatal
        .spawn_thread("consensus", move || {
            driver.run(receiver);
            Ok(())
        })
        .context("cannot start the consensus thread")?;
    tasks.push(fatal.spawn_task("ticker", tick(events.clone())));
    tasks.push(fatal.spawn_task(
        "certificate expiry",
        warn_of_expiry(
            settings.name.clone(),
            settings.certificates.clone(),
            settings.ca_certificate_pem.clone(),
        ),
    ));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    // Not ready until the peers were asked how far the chain is.
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    tasks.push(fatal.spawn_task(
        "readiness",
        readiness::watch(
            readiness::PeerAddresses::of(&settings),
            shared.clone(),
            health_reporter.clone(),
            sync,
        ),
    ));
    health_reporter
        .set_serving::<NodeServiceServer<NodeApi>>()
        .await;
    health_reporter
        .set_serving::<ConsensusServiceServer<ConsensusApi>>()
        .await;
    health_reporter
        .set_serving::<BlobServiceServer<BlobApi>>()
        .await;
    health_reporter
        .set_serving::<IdentityServiceServer<IdentityApi>>()
        .await;
    health_reporter
        .set_serving::<ApprovalServiceServer<ApprovalApi>>()
        .await;
    health_reporter
        .set_serving::<DirectoryServiceServer<DirectoryApi>>()
        .await;
    health_reporter
        .set_serving::<AdminServiceServer<backup::AdminApi>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(govchain_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(govchain_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let admission = Admission::start(shared.clone(), events.clone(), &fatal)
        .context("cannot start the admission thread")?;
    metrics.observe(&shared, &admission, metric_sources(&settings));
    let metrics = Arc::new(metrics);
    if let Some(address) = settings.metrics_listen {
        let listener = bind_metrics(&shared, address).await?;
        tasks.push(fatal.spawn_task(
            "metrics server",
            telemetry::serve_metrics(listener, metrics.clone()),
        ));
    }
    let node_api = NodeApi {
        shared: shared.clone(),
        admission: admission.clone(),
    };
    let consensus_api = ConsensusApi {
        shared: shared.clone(),
        driver: events.clone(),
        admission,
        snapshots: Arc::new(state_sync::Server::new(&settings.data_dir)),
    };
    let blob_api = BlobApi {
        shared: shared.clone(),
    };
    let identity_api = IdentityApi::new(node_api.clone());
    let approval_api = ApprovalApi::new(node_api.clone());
    let directory_api = DirectoryApi::new(shared.clone());
    let admin_api = backup::AdminApi::new(shared.clone(), settings.data_dir.clone());
    if settings.blobs.gc_interval_secs > 0 {
        tasks.push(fatal.spawn_task(
            "blob collector",
            collect_blobs(
                shared.clone(),
                Duration::from_secs(settings.blobs.gc_interval_secs),
                settings.blobs.gc_grace_secs.saturating_mul(1000),
            ),
        ));
    }
    if let Some(horizon) = settings.prune_horizon_blocks {
        info!(node = %settings.name, horizon, "pruning block bodies more than prune_horizon_blocks below the head");
        tasks.push(fatal.spawn_task("block pruner", prune::run(shared.clone(), horizon)));
    }
    if let Some(address) = settings.health_listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address} (health_listen)"))?;
        info!(node = %settings.name, listen = %address, "serving gRPC health in plaintext for probes");
        tasks.push(fatal.spawn_task(
            "health server",
            serve_health(listener, health_service.clone()),
        ));
    }
    info!(node = %settings.name, listen = %settings.listen, "serving gRPC with mutual TLS");
    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    if let Some(portal) = bind_portal(&settings, &genesis, &shared).await? {
        let stopped_portal = stopped(stop.clone());
        tasks.push(fatal.spawn_task("web portal", async move {
            let (listener, config) = portal;
            if let Err(err) = govchain_portal::serve(listener, config, stopped_portal).await {
                tracing::error!(error = %err, "the web portal stopped");
            }
        }));
    }
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_sender.send(true);
    });
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
        settings
            .certificates
            .server_config()
            .context("cannot make the server's TLS configuration")?,
    ));
    tasks.push(fatal.spawn_task(
        "certificate reload",
        reload::watch(
            settings.certificates.clone(),
            settings.certificate_file.clone(),
            settings.key_file.clone(),
        ),
    ));
    let server = Server::builder()
        .max_concurrent_streams(STREAMS_PER_CONNECTION_MAX)
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .layer(errors::ErrorDetailsLayer)
        .layer(tonic::service::InterceptorLayer::new(
            tls::Members::from_genesis(&genesis)
                .with_revocations(shared.revocations.clone())
                .with_departments(shared.departments_in_force.clone()),
        ))
        .layer(telemetry::trace_context::ServerTraceLayer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            NodeServiceServer::new(node_api)
                .max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(CLIENT_MESSAGE_BYTES_MAX),
        )
        .add_service(
            BlobServiceServer::new(blob_api)
                .max_decoding_message_size(BLOB_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(BLOB_MESSAGE_BYTES_MAX),
        )
        .add_service(
            IdentityServiceServer::new(identity_api)
                .max_decoding_message_size(identity_request_bytes_max(&genesis))
                .max_encoding_message_size(BLOB_MESSAGE_BYTES_MAX),
        )
        .add_service(
            ApprovalServiceServer::new(approval_api)
                .max_decoding_message_size(identity_request_bytes_max(&genesis))
                .max_encoding_message_size(CLIENT_MESSAGE_BYTES_MAX),
        )
        .add_service(
            DirectoryServiceServer::new(directory_api)
                .max_encoding_message_size(CLIENT_MESSAGE_BYTES_MAX),
        )
        .add_service(
            AdminServiceServer::new(admin_api)
                .max_encoding_message_size(backup::BACKUP_CHUNK_BYTES_MAX + 64 * 1024),
        )
        .add_service(
            ConsensusServiceServer::new(consensus_api)
                .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX),
        )
        .serve_with_incoming_shutdown(
            connections::tls_handshakes(
                connections::incoming(listener, connections::CONNECTIONS_MAX),
                acceptor,
                shared.revocations.clone(),
            ),
            stopped(stop.clone()),
        );
    // Peers keep their streams open for good, so a graceful shutdown would
    // wait for ever: after a grace period the server is dropped.
    let outcome = tokio::select! {
        served = server => served.with_context(|| format!("gRPC server on {} failed", settings.listen)),
        () = async { stopped(stop).await; tokio::time::sleep(SHUTDOWN_GRACE).await } => Ok(()),
        failure = fatal_errors.first() => Err(anyhow::Error::new(failure)),
    };
    fatal.stopping();
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        task.ended().await;
    }
    // The OTLP reader's last export runs on its own thread and needs this
    // runtime's I/O: wait for it off the async threads.
    let _ = tokio::task::spawn_blocking(move || metrics.shutdown()).await;
    // Connections may outlive the server future and hold event senders, so
    // the driver is told to stop rather than left to notice.
    // Bounded: after a fatal error the consensus thread may be stuck with
    // its queue full, and the process must still exit.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, events.send(DriverEvent::Stop)).await;
    drop(shared);
    if outcome.is_ok() {
        let _ = tokio::task::spawn_blocking(move || driver_thread.join()).await;
        // The last appends durable in the index too: the next start has
        // nothing to re-apply. Were this to fail, the log still holds them.
        if let Err(err) = ledger_at_stop.checkpoint() {
            tracing::warn!(node = %settings.name, error = %err, "cannot checkpoint the ledger; the next start re-applies the blocks since the last checkpoint");
        }
        info!(node = %settings.name, "stopped");
    }
    // After a fatal error the consensus thread may be the part that failed
    // (or be stuck behind it): the process exits without waiting for it.
    outcome
}

/// Serves only gRPC health, in plaintext, for probes that cannot speak
/// mutual TLS (Kubernetes' `grpc:` probe). It tells nothing but
/// SERVING/NOT_SERVING, so it needs no client certificate.
async fn serve_health(
    listener: tokio::net::TcpListener,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
) {
    let served = Server::builder()
        .concurrency_limit_per_connection(HEALTH_STREAMS_PER_CONNECTION_MAX)
        .add_service(health)
        .serve_with_incoming(connections::incoming(listener, HEALTH_CONNECTIONS_MAX))
        .await;
    if let Err(err) = served {
        tracing::error!(error = %err, "the health server failed");
    }
}

/// Bounds of the plaintext health port: probes open one connection and
/// one call at a time.
const HEALTH_CONNECTIONS_MAX: usize = 64;
const HEALTH_STREAMS_PER_CONNECTION_MAX: usize = 8;

/// The node's meter provider: a scrape reader when `metrics_listen` is
/// set, an OTLP exporter when the environment asks for metrics.
fn node_metrics(settings: &Settings) -> telemetry::NodeMetrics {
    let otlp = telemetry::OtlpSignals::from_env().metrics.then(|| {
        opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .build()
    });
    let otlp = match otlp {
        Some(Ok(exporter)) => Some(exporter),
        Some(Err(err)) => {
            tracing::warn!(error = %err, "cannot set up the OTLP metric exporter; metrics are not exported over OTLP");
            None
        }
        None => None,
    };
    telemetry::NodeMetrics::new(settings.metrics_listen.is_some(), otlp, &settings.name)
}

fn metric_sources(settings: &Settings) -> telemetry::metrics::Sources {
    let ca_not_after = telemetry::metrics::certificate_not_after(&settings.ca_certificate_pem)
        .map(|not_after| Arc::new(std::sync::atomic::AtomicI64::new(not_after)));
    // The node's entry follows certificate reloads.
    let certificates_not_after = std::iter::once(("node", settings.certificates.not_after()))
        .chain(ca_not_after.map(|not_after| ("ca", not_after)))
        .collect();
    telemetry::metrics::Sources {
        blob_file: settings
            .data_dir
            .join("blobs")
            .join(govchain_blobstore::BLOBSTORE_FILE_NAME),
        certificates_not_after,
    }
}

/// Binds `portal_listen` and makes the portal's configuration: it reaches
/// this node's gRPC port on loopback with the node's own certificate.
async fn bind_portal(
    settings: &Settings,
    genesis: &govchain_pki::Genesis,
    shared: &Shared,
) -> anyhow::Result<Option<(tokio::net::TcpListener, govchain_portal::PortalConfig)>> {
    let (Some(address), Some(url)) = (settings.portal_listen, settings.portal_url.clone()) else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| {
            format!("cannot listen for the web portal on {address} (portal_listen)")
        })?;
    let grpc_host = match settings.listen.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let _ = shared.portal_url.set(url.clone());
    let config = govchain_portal::PortalConfig {
        department: settings.name.clone(),
        public_url: url,
        node_endpoint: format!("https://{grpc_host}:{}", settings.listen.port()),
        node_dns_name: govchain_pki::node_dns_name(&settings.name),
        ca_certificate_pem: settings.ca_certificate_pem.clone(),
        certificate_pem: settings.certificate_pem.clone(),
        key_pem: settings.key_pem.clone(),
        validators: genesis.validators.iter().map(|v| v.name.clone()).collect(),
        genesis: genesis.clone(),
        certificate_resolver: Some(settings.certificates.resolver()),
    };
    Ok(Some((listener, config)))
}

/// Binds `metrics_listen`, where `/metrics` is then served.
async fn bind_metrics(
    shared: &Shared,
    address: std::net::SocketAddr,
) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen for metrics on {address}"))?;
    let bound = listener.local_addr().unwrap_or(address);
    let url = telemetry::metrics_url(bound);
    info!(node = %shared.name, url = %url, "serving Prometheus metrics");
    let _ = shared.metrics_url.set(url);
    Ok(listener)
}

/// The PBFT replica of a validator, resumed from its ledger and records,
/// with the validator set in force at the head; `None` if this node's
/// consensus key is not in it (governance removed it): it then follows the
/// chain without voting.
pub(crate) fn start_replica(
    shared: &Shared,
    key: &govchain_crypto::SigningKey,
) -> anyhow::Result<Option<Replica>> {
    let genesis = &shared.genesis;
    let membership = shared.membership();
    let Some(me) = membership.set.index_of(&key.public_key()) else {
        return Ok(None);
    };
    let restored =
        consensus_store::load(&shared.ledger).context("cannot read the consensus records")?;
    let last_certificate = head_certificate(&shared.ledger)?;
    info!(node = %shared.name, view = restored.view, votes = restored.votes.len(), index = me, "consensus state restored");
    Ok(Some(Replica::new(
        Config {
            chain_id: genesis.chain_id.clone(),
            validators: membership.set.clone(),
            epoch_start: membership.record.since_height,
            me,
            key: govchain_crypto::SigningKey::from_pkcs8_pem(&key.to_pkcs8_pem()?)?,
            empty_block_interval_ms: genesis.consensus.empty_block_interval_ms,
            view_timeout_ms: genesis.consensus.view_timeout_ms,
            // Pre-prepares carry proposals (header and batch slices), not
            // blocks: see `dissemination`.
            block_digest: govchain_exec::proposal_digest,
            block_validators: govchain_exec::proposal_validators,
        },
        shared.ledger.head().height,
        last_certificate,
        restored,
    )))
}

/// The commit certificate of the ledger's head block, for the replica's
/// view changes; `None` at genesis.
fn head_certificate(ledger: &Ledger) -> anyhow::Result<Option<govchain_pbft::CommitCertificate>> {
    let height = ledger.head().height;
    if height == 0 {
        return Ok(None);
    }
    let bytes = ledger
        .block_by_height(height)?
        .with_context(|| format!("head block {height} is missing"))?;
    let block = govchain_proto::types::v1::CommittedBlock::decode(bytes.as_slice())?;
    let certificate = block
        .certificate
        .with_context(|| format!("head block {height} has no certificate"))?;
    Ok(Some(
        wire::certificate_from_wire(&certificate).map_err(anyhow::Error::msg)?,
    ))
}

async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens after it sent.
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Collects unreferenced blobs now and then, off the async threads.
async fn collect_blobs(shared: Arc<Shared>, interval: Duration, grace_ms: u64) {
    let mut timer = tokio::time::interval(interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    timer.tick().await;
    loop {
        timer.tick().await;
        let shared = shared.clone();
        let result = tokio::task::spawn_blocking(move || {
            shared.blobs.collect_garbage(&shared.ledger, grace_ms)
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "blob garbage collection failed"),
            Err(err) => tracing::warn!(error = %err, "blob garbage collection panicked"),
        }
    }
}

/// Logs a warning, at start and once a day, for each certificate the node
/// uses that expires within `govchain_pki::EXPIRY_WARNING_DAYS` (or has):
/// an expired certificate is the most common cause of a consortium's
/// outage, and a month is time to renew it.
async fn warn_of_expiry(
    node: String,
    certificates: Arc<certificates::NodeCertificates>,
    ca_certificate_pem: String,
) {
    const CHECK_INTERVAL: Duration = Duration::from_secs(24 * 3600);
    let mut timer = tokio::time::interval(CHECK_INTERVAL);
    loop {
        timer.tick().await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        // The node certificate in use now: a rotated one replaces the one
        // read at start.
        let current = [
            ("node certificate", certificates.certificate_pem()),
            ("CA certificate", ca_certificate_pem.clone()),
        ];
        for (what, pem) in &current {
            let Ok(validity) = govchain_pki::certificate_validity(pem) else {
                continue;
            };
            let days_left = (validity.not_after_unix_s - now).div_euclid(86_400);
            if days_left < govchain_pki::EXPIRY_WARNING_DAYS {
                tracing::warn!(node = %node, certificate = what, subject = %validity.subject, days_left, "certificate expires soon: renew it (govchain certs check)");
            }
        }
    }
}

async fn tick(events: mpsc::Sender<DriverEvent>) {
    let mut interval = tokio::time::interval(TICK_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        // Skipping a tick when the driver is busy is harmless.
        let _ = events.try_send(DriverEvent::Consensus(Event::Tick { now_ms: now_ms() }));
    }
}
