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

use govchain_proto::types::v1::ValidatorSetRecord;

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
    /// Aborted when the peer leaves the set: a supervised task that ends
    /// on its own would stop the node.
    task: crate::supervise::SupervisedTask,
}

impl PeerHandle {
    fn close(&self) {
        self.task.abort();
    }
}

/// The set of peers this node sends to: the configured validators, then
/// the validator set in force as governance changes it ([`PeerSet::update`]).
pub struct PeerSet {
    peers: std::sync::RwLock<Vec<PeerHandle>>,
    /// What new connection tasks need; `None` for a set that never
    /// connects (tests).
    spawner: Option<Spawner>,
}

struct Spawner {
    name: String,
    certificates: Arc<crate::certificates::NodeCertificates>,
    fatal: Fatal,
    /// Addresses from the configuration, by department; they win over an
    /// endpoint named on chain.
    configured: Vec<(String, String)>,
    /// The node's runtime: `update` is called from the consensus thread,
    /// which runs outside it.
    runtime: tokio::runtime::Handle,
}

impl Spawner {
    fn spawn(&self, name: &str, address: &str) -> PeerHandle {
        let _runtime = self.runtime.enter();
        let (queue, receiver) = mpsc::channel(PEER_QUEUE_MESSAGES_MAX);
        let connected = Arc::new(AtomicBool::new(false));
        let task = PeerTask {
            name: name.to_owned(),
            address: address.to_owned(),
            certificates: self.certificates.clone(),
            connected: connected.clone(),
        };
        let task = self
            .fatal
            .spawn_task(&format!("peer {name}"), task.run(receiver));
        PeerHandle {
            name: name.to_owned(),
            queue,
            connected,
            dropped: AtomicU64::new(0),
            task,
        }
    }
}

impl PeerSet {
    /// Starts one connection task per configured peer when `connect`
    /// (a validator); an observer starts none until it becomes one.
    pub fn start(settings: &Settings, fatal: &Fatal, connect: bool) -> Self {
        let spawner = Spawner {
            name: settings.name.clone(),
            certificates: settings.certificates.clone(),
            fatal: fatal.clone(),
            configured: settings
                .peers
                .iter()
                .map(|peer| (peer.name.clone(), peer.address.clone()))
                .collect(),
            runtime: tokio::runtime::Handle::current(),
        };
        let peers = if connect {
            spawner
                .configured
                .iter()
                .map(|(name, address)| spawner.spawn(name, address))
                .collect()
        } else {
            Vec::new()
        };
        Self {
            peers: std::sync::RwLock::new(peers),
            spawner: Some(spawner),
        }
    }

    pub fn none() -> Self {
        Self {
            peers: std::sync::RwLock::new(Vec::new()),
            spawner: None,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<PeerHandle>> {
        self.peers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes the peers the other members of `set`: a member not yet a
    /// peer gets a connection (to its configured address, else the
    /// endpoint on chain; a member with neither is logged and skipped),
    /// and a peer no longer a member is dropped (its task ends with its
    /// queue).
    pub fn update(&self, set: &ValidatorSetRecord) {
        let Some(spawner) = &self.spawner else {
            return;
        };
        let mut peers = self
            .peers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        peers.retain(|peer| {
            let member = set.members.iter().any(|m| m.department == peer.name);
            if !member {
                info!(peer = %peer.name, "peer left the validator set; closing its stream");
                peer.close();
            }
            member
        });
        for member in &set.members {
            if member.department == spawner.name
                || peers.iter().any(|peer| peer.name == member.department)
            {
                continue;
            }
            let configured = spawner
                .configured
                .iter()
                .find(|(name, _)| *name == member.department)
                .map(|(_, address)| address.clone());
            let endpoint = (!member.endpoint.is_empty()).then(|| {
                if member.endpoint.contains("://") {
                    member.endpoint.clone()
                } else {
                    format!("https://{}", member.endpoint)
                }
            });
            match configured.or(endpoint) {
                Some(address) => {
                    info!(peer = %member.department, %address, "new validator; connecting to it");
                    peers.push(spawner.spawn(&member.department, &address));
                }
                None => {
                    warn!(peer = %member.department, "new validator has no address: neither `peers` nor the proposal's endpoint names one");
                }
            }
        }
    }

    /// Drops every peer (a node that no longer votes sends nothing); their
    /// tasks end with their queues.
    pub fn clear(&self) {
        let mut peers = self
            .peers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for peer in peers.iter() {
            peer.close();
        }
        peers.clear();
    }

    /// Queues `message` for every peer without waiting.
    pub fn broadcast(&self, message: &StreamRequest) {
        for peer in self.read().iter() {
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
        self.read()
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
        self.read()
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
    certificates: Arc<crate::certificates::NodeCertificates>,
    connected: Arc<AtomicBool>,
}

impl PeerTask {
    async fn run(self, mut queue: mpsc::Receiver<StreamRequest>) {
        let mut delay = RECONNECT_DELAY_MIN;
        loop {
            if queue.is_closed() {
                return; // Dropped from the set (or the node stops).
            }
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
