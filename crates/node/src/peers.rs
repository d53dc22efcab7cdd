//! Outbound connections to the other validators: one gRPC stream per peer,
//! reconnected with backoff, fed from a bounded queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use govchain_proto::consensus::v1::StreamRequest;
use govchain_proto::consensus::v1::consensus_service_client::ConsensusServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tracing::{debug, info, warn};

use crate::config::Settings;
use crate::supervise::Fatal;

/// Messages queued for one peer; when full, new messages to it are dropped
/// (and counted) rather than stalling consensus for everyone.
pub const PEER_QUEUE_MESSAGES_MAX: usize = 16_384;
/// The largest consensus message: a full block plus framing.
pub const PEER_MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;
const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(50);
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(2);

struct PeerHandle {
    name: String,
    queue: mpsc::Sender<StreamRequest>,
    connected: Arc<AtomicBool>,
    dropped: AtomicU64,
}

/// The set of peers this node sends to.
pub struct PeerSet {
    peers: Vec<PeerHandle>,
}

impl PeerSet {
    /// Starts one connection task per configured peer.
    pub fn start(settings: &Settings, fatal: &Fatal) -> Self {
        let peers = settings
            .peers
            .iter()
            .map(|peer| {
                let (queue, receiver) = mpsc::channel(PEER_QUEUE_MESSAGES_MAX);
                let connected = Arc::new(AtomicBool::new(false));
                let task = PeerTask {
                    name: peer.name.clone(),
                    address: peer.address.clone(),
                    certificates: settings.certificates.clone(),
                    connected: connected.clone(),
                };
                fatal.spawn_task(&format!("peer {}", peer.name), task.run(receiver));
                PeerHandle {
                    name: peer.name.clone(),
                    queue,
                    connected,
                    dropped: AtomicU64::new(0),
                }
            })
            .collect();
        Self { peers }
    }

    /// No peers: for an observer, which sends nothing.
    pub fn none() -> Self {
        Self { peers: Vec::new() }
    }

    /// Queues `message` for every peer without waiting.
    pub fn broadcast(&self, message: &StreamRequest) {
        for peer in &self.peers {
            if peer.queue.try_send(message.clone()).is_err() {
                let dropped = peer.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    warn!(peer = %peer.name, dropped, "peer queue full; dropping messages to it");
                }
            }
        }
    }

    /// Each peer's name, whether its stream is open, and the messages to
    /// it dropped so far.
    pub fn states(&self) -> Vec<(String, bool, u64)> {
        self.peers
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.connected.load(Ordering::Relaxed),
                    p.dropped.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    pub fn connected(&self) -> Vec<String> {
        self.peers
            .iter()
            .filter(|p| p.connected.load(Ordering::Relaxed))
            .map(|p| p.name.clone())
            .collect()
    }
}

struct PeerTask {
    name: String,
    address: String,
    /// The node's certificate in use at each connection attempt: after a
    /// rotation, the next reconnection presents the new one.
    certificates: Arc<crate::tls::NodeCertificates>,
    connected: Arc<AtomicBool>,
}

impl PeerTask {
    async fn run(self, mut queue: mpsc::Receiver<StreamRequest>) {
        let mut delay = RECONNECT_DELAY_MIN;
        loop {
            match self.connect().await {
                Ok(client) => {
                    delay = RECONNECT_DELAY_MIN;
                    self.connected.store(true, Ordering::Relaxed);
                    info!(peer = %self.name, address = %self.address, "connected to peer");
                    let open = self.pump(client, &mut queue).await;
                    self.connected.store(false, Ordering::Relaxed);
                    if !open {
                        return; // The node is shutting down.
                    }
                }
                Err(err) => debug!(peer = %self.name, error = %err, "cannot connect to peer"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RECONNECT_DELAY_MAX);
        }
    }

    async fn connect(&self) -> anyhow::Result<ConsensusServiceClient<tonic::transport::Channel>> {
        let channel = Endpoint::from_shared(self.address.clone())?
            .tls_config(self.certificates.client_config(&self.name))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect()
            .await?;
        Ok(ConsensusServiceClient::new(channel)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX))
    }

    /// Forwards queued messages over one stream until it breaks. Returns
    /// false when the queue is closed (shutdown).
    async fn pump(
        &self,
        mut client: ConsensusServiceClient<tonic::transport::Channel>,
        queue: &mut mpsc::Receiver<StreamRequest>,
    ) -> bool {
        let (sender, receiver) = mpsc::channel(256);
        let mut call =
            tokio::spawn(async move { client.stream(ReceiverStream::new(receiver)).await });
        loop {
            tokio::select! {
                message = queue.recv() => {
                    let Some(message) = message else { call.abort(); return false };
                    if sender.send(message).await.is_err() {
                        break;
                    }
                }
                result = &mut call => {
                    match result {
                        Ok(Err(status)) => warn!(peer = %self.name, code = ?status.code(), error = %status.message(), "peer closed the stream"),
                        Ok(Ok(_)) => debug!(peer = %self.name, "peer stream ended"),
                        Err(err) => warn!(peer = %self.name, error = %err, "peer stream task failed"),
                    }
                    return true;
                }
            }
        }
        call.abort();
        true
    }
}
