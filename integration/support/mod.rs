//! Test support: a consortium of real `govchain node` processes on loopback
//! ports chosen at run time, with certificates made by `govchain certs init`.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use govchain_crypto::{Digest, SigningKey};
use govchain_node::{NodeFile, PeerFile};
use govchain_proto::node::v1::node_service_client::NodeServiceClient;
use govchain_proto::node::v1::*;
use govchain_proto::types::v1::{
    AnchorRecord, Transaction, TransactionEnvelope, transaction::Body,
};
use prost::Message as _;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub const BIN: &str = env!("CARGO_BIN_EXE_govchain");
pub const CHAIN: &str = "govchain-test";

pub struct Node {
    pub name: String,
    pub port: u16,
    /// The plaintext gRPC health port (`health_listen`).
    pub health_port: u16,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
}

/// Polls `check` until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        // The polling interval of this wait.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The nodes' log filter. The node names why it refused a TLS handshake
/// at `info` (`tls accept error: handshake refused`,
/// `connections::tls_handshakes`), so that a test can tell a refused
/// certificate from a node that was never reached.
pub const NODE_LOG_FILTER: &str = "info";

/// Ports for test nodes come from below Linux's default ephemeral range
/// (32768–60999). A port the kernel hands out for `:0` lies in that range,
/// so an outgoing connection (a client, or a peer reconnecting to a killed
/// node) could take it before the node binds it, or while a killed node is
/// down, and the node would then fail to start.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    // Test binaries run one after another, but start each at another
    // offset anyway so that leftovers of a previous one are not retried.
    let offset = std::process::id() % span;
    for _ in 0..span {
        let step = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = TEST_PORTS.start + ((offset + step) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {TEST_PORTS:?} on 127.0.0.1");
}

/// `--attests` of `certs init` for the departments that attest.
pub const ATTESTERS: [(&str, &str); 2] = [
    ("civil", "civil=name,date_of_birth,photo,address"),
    ("police", "police=name,photo"),
];

pub fn departments(n: usize) -> Vec<String> {
    [
        "health",
        "tax",
        "police",
        "civil",
        "transport",
        "education",
        "housing",
    ]
    .iter()
    .take(n)
    .map(|s| s.to_string())
    .collect()
}

/// `certs init` of a consortium of `n` validators and `observers` backup
/// replicas (`backup0`, ...) into `<dir>/certs`, with the devnet's
/// attestation roles, for [`Cluster::start_prepared`].
pub fn init_consortium(n: usize, observers: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let names = departments(n);
    let observer_names: Vec<String> = (0..observers).map(|i| format!("backup{i}")).collect();
    let mut init = vec![
        "certs",
        "init",
        "--out",
        certs.to_str().unwrap(),
        "--chain-id",
        CHAIN,
    ];
    let departments_arg = names.join(",");
    init.extend(["--departments", &departments_arg]);
    let observers_arg = observer_names.join(",");
    if observers > 0 {
        init.extend(["--observers", &observers_arg]);
    }
    // Attestation roles as on a devnet, for the departments present.
    for (department, roles) in ATTESTERS {
        if names.iter().any(|name| name == department) {
            init.extend(["--attests", roles]);
        }
    }
    govchain(&init);
    dir
}

/// Rewrites `<certs>/genesis.json` with `edit` (before the nodes start).
pub fn edit_genesis(certs: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = certs.join("genesis.json");
    let mut genesis: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut genesis);
    std::fs::write(&path, genesis.to_string()).unwrap();
}

/// Runs `govchain` with `args`, asserting success, and returns stdout.
pub fn govchain(args: &[&str]) -> String {
    let output = Command::new(BIN).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "govchain {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

impl Cluster {
    /// Makes certificates and configs for `n` validators and starts them.
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, 2_000).await
    }

    /// Like [`Cluster::start`], with the view-change timeout set in genesis.
    pub async fn start_with(n: usize, view_timeout_ms: u64) -> Self {
        Self::start_full(n, view_timeout_ms, 0).await
    }

    /// `n` validators and, after them (indexes n..), `observers` backup
    /// replicas that follow the chain.
    pub async fn start_full(n: usize, view_timeout_ms: u64, observers: usize) -> Self {
        Self::start_prepared(init_consortium(n, observers), view_timeout_ms).await
    }

    /// Starts the consortium in `<dir>/certs` (genesis.json, ca.crt and
    /// one folder per department, as `certs init` lays them out), however
    /// it was made: genesis' validators in order, then its other
    /// departments as observers.
    pub async fn start_prepared(dir: tempfile::TempDir, view_timeout_ms: u64) -> Self {
        let certs = dir.path().join("certs");
        let genesis_path = certs.join("genesis.json");
        let mut genesis: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&genesis_path).unwrap()).unwrap();
        let names: Vec<String> = genesis["validators"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_owned())
            .collect();
        let observer_names: Vec<String> = genesis["departments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_owned())
            .filter(|name| !names.contains(name))
            .collect();
        let (n, observers) = (names.len(), observer_names.len());
        genesis["consensus"]["view_timeout_ms"] = serde_json::json!(view_timeout_ms);
        std::fs::write(
            &genesis_path,
            serde_json::to_string_pretty(&genesis).unwrap(),
        )
        .unwrap();
        let all: Vec<String> = names.iter().chain(&observer_names).cloned().collect();
        let ports: Vec<u16> = all.iter().map(|_| free_port()).collect();
        let health_ports: Vec<u16> = all.iter().map(|_| free_port()).collect();
        let mut nodes = Vec::new();
        for (i, name) in all.iter().enumerate() {
            let node_dir = dir.path().join("nodes").join(name);
            std::fs::create_dir_all(&node_dir).unwrap();
            let dept = certs.join(name);
            let file = NodeFile {
                observer: i >= n,
                state_sync: false,
                prune_horizon_blocks: None,
                block_log_segment_bytes: None,
                name: name.clone(),
                listen: format!("127.0.0.1:{}", ports[i]).parse().unwrap(),
                data_dir: node_dir.join("data"),
                genesis: certs.join("genesis.json"),
                ca_certificate: certs.join("ca.crt"),
                certificate: dept.join("node.crt"),
                key: dept.join("node.key"),
                consensus_key: dept.join("consensus.key"),
                peers: names
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i && *j < n)
                    .map(|(j, peer)| PeerFile {
                        name: peer.clone(),
                        address: format!("https://127.0.0.1:{}", ports[j]),
                    })
                    .collect(),
                mempool: Default::default(),
                blobs: Default::default(),
                health_listen: Some(format!("127.0.0.1:{}", health_ports[i]).parse().unwrap()),
                metrics_listen: None,
                portal_listen: None,
                portal_url: None,
            };
            let config = node_dir.join("node.toml");
            file.save(&config).unwrap();
            nodes.push(Node {
                name: name.clone(),
                port: ports[i],
                health_port: health_ports[i],
                config,
                data_dir: node_dir.join("data"),
                log: node_dir.join("node.log"),
                child: None,
            });
        }
        let mut cluster = Self { dir, nodes };
        for i in 0..n + observers {
            cluster.start_node(i);
        }
        for i in 0..n {
            cluster.wait_ready(i).await;
        }
        cluster
    }

    pub fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// The `govchain` flags that reach node `i` as its department's client.
    pub fn client_flags(&self, i: usize) -> Vec<String> {
        let certs = self.certs();
        let department = certs.join(&self.nodes[i].name);
        vec![
            "--node".into(),
            format!("https://127.0.0.1:{}", self.nodes[i].port),
            "--ca".into(),
            certs.join("ca.crt").display().to_string(),
            "--cert".into(),
            department.join("client.crt").display().to_string(),
            "--key".into(),
            department.join("client.key").display().to_string(),
        ]
    }

    pub fn start_node(&mut self, i: usize) {
        self.start_node_with_env(i, &[]);
    }

    /// Starts node `i` with extra environment variables, e.g. a
    /// `GOVCHAIN_<KEY>` override of its `node.toml`.
    pub fn start_node_with_env(&mut self, i: usize, env: &[(&str, &str)]) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "node {} already runs", node.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let child = Command::new(BIN)
            .args(["node", "--config", node.config.to_str().unwrap()])
            .env("GOVCHAIN_LOG", NODE_LOG_FILTER)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        node.child = Some(child);
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Waits until node `i` answers and sees all its peers (the validators).
    pub async fn wait_ready(&self, i: usize) {
        let validators = self
            .nodes
            .iter()
            .filter(|n| !n.name.starts_with("backup"))
            .count();
        let peers = validators - 1;
        let name = self.nodes[i].name.clone();
        eventually(
            &format!("node {name} to start and connect"),
            Duration::from_secs(60),
            || async {
                let mut client = self.client(i).await.ok()?;
                let status = client
                    .get_status(GetStatusRequest {})
                    .await
                    .ok()?
                    .into_inner();
                (status.connected_peers.len() == peers).then_some(())
            },
        )
        .await;
    }

    /// A client of node `i` with department `i`'s client certificate.
    pub async fn client(
        &self,
        i: usize,
    ) -> Result<NodeServiceClient<Channel>, tonic::transport::Error> {
        let dept = self.certs().join(&self.nodes[i].name);
        connect(
            self.nodes[i].port,
            &self.certs().join("ca.crt"),
            &dept.join("client.crt"),
            &dept.join("client.key"),
        )
        .await
    }

    pub async fn status(&self, i: usize) -> GetStatusResponse {
        self.client(i)
            .await
            .unwrap()
            .get_status(GetStatusRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    /// Deletes node `i`'s ledger (the node stopped): `ledger.redb`, the
    /// block log and `consensus.redb`; its blob store stays.
    pub fn remove_ledger(&self, i: usize) {
        let data = &self.nodes[i].data_dir;
        for entry in ["ledger.redb", "consensus.redb", "blocks"] {
            let path = data.join(entry);
            if path.is_dir() {
                std::fs::remove_dir_all(&path).unwrap();
            } else if path.exists() {
                std::fs::remove_file(&path).unwrap();
            }
        }
    }

    /// Node `i`'s whole log, across restarts.
    pub fn log_text(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        text.lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Lines of each node's log shown when a test fails.
const FAILURE_LOG_LINES: usize = 30;

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
        // The logs go with the temporary directory; a failing test shows
        // their ends, so that a node that did not start says why.
        if std::thread::panicking() {
            for node in &self.nodes {
                let text = std::fs::read_to_string(&node.log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(FAILURE_LOG_LINES)..];
                eprintln!(
                    "--- last lines of {} ---\n{}",
                    node.log.display(),
                    tail.join("\n")
                );
            }
        }
    }
}

pub async fn connect(
    port: u16,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<NodeServiceClient<Channel>, tonic::transport::Error> {
    connect_at("127.0.0.1", port, ca, cert, key, None).await
}

/// A client of the node at `address:port` (the certificates name every
/// node's address); `timeout` bounds each call, for nodes that may be cut
/// off and never answer.
pub async fn connect_at(
    address: &str,
    port: u16,
    ca: &Path,
    cert: &Path,
    key: &Path,
    timeout: Option<Duration>,
) -> Result<NodeServiceClient<Channel>, tonic::transport::Error> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .identity(Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ));
    let endpoint = Endpoint::from_shared(format!("https://{address}:{port}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5));
    let endpoint = match timeout {
        Some(timeout) => endpoint.timeout(timeout),
        None => endpoint,
    };
    let channel = endpoint.connect().await?;
    Ok(NodeServiceClient::new(channel).max_encoding_message_size(64 << 20))
}

/// A set of nodes that hands out a client per node index: a loopback
/// [`Cluster`] or the namespaced cluster of `netns.rs`.
pub trait NodeClients {
    async fn node_client(
        &self,
        i: usize,
    ) -> Result<NodeServiceClient<Channel>, tonic::transport::Error>;
}

impl NodeClients for Cluster {
    async fn node_client(
        &self,
        i: usize,
    ) -> Result<NodeServiceClient<Channel>, tonic::transport::Error> {
        self.client(i).await
    }
}

/// Waits until every listed node has at least `height` and all agree on
/// the block at `height`.
pub async fn wait_agree(
    cluster: &impl NodeClients,
    nodes: &[usize],
    height: u64,
    timeout: Duration,
) {
    eventually(
        &format!("nodes {nodes:?} to agree at height {height}"),
        timeout,
        || async {
            let mut hashes = Vec::new();
            for &i in nodes {
                let mut client = cluster.node_client(i).await.ok()?;
                let request = GetBlockRequest {
                    selector: Some(get_block_request::Selector::Height(height)),
                };
                let block = client.get_block(request).await.ok()?.into_inner().block?;
                hashes.push(block.block_hash);
            }
            hashes.windows(2).all(|w| w[0] == w[1]).then_some(())
        },
    )
    .await;
}

/// Checks that no two nodes in `nodes` hold different blocks at any height
/// both have.
pub async fn assert_no_fork(cluster: &impl NodeClients, nodes: &[usize]) {
    let mut chains: Vec<Vec<Vec<u8>>> = Vec::new();
    for &i in nodes {
        let mut client = cluster.node_client(i).await.unwrap();
        let height = client
            .get_status(GetStatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .height;
        let mut chain = Vec::new();
        for h in 1..=height {
            let request = GetBlockRequest {
                selector: Some(get_block_request::Selector::Height(h)),
            };
            let block = client.get_block(request).await.unwrap().into_inner().block;
            chain.push(
                block
                    .unwrap_or_else(|| panic!("node {i} has no block {h}"))
                    .block_hash,
            );
        }
        chains.push(chain);
    }
    for (a, chain_a) in chains.iter().enumerate() {
        for (b, chain_b) in chains.iter().enumerate().skip(a + 1) {
            let common = chain_a.len().min(chain_b.len());
            assert_eq!(
                chain_a[..common],
                chain_b[..common],
                "nodes {} and {} forked",
                nodes[a],
                nodes[b]
            );
        }
    }
}

pub fn anchor_body(record_id: &str) -> Body {
    Body::AnchorRecord(AnchorRecord {
        dataset: "test/records".into(),
        record_id: record_id.into(),
        record_hash: Digest::sha256(record_id.as_bytes()).to_vec(),
        schema: "test".into(),
        record_time_ms: 1,
    })
}

pub fn sign(key: &SigningKey, nonce: u64, body: Body) -> TransactionEnvelope {
    sign_payload(
        key,
        nonce,
        Bytes::from(Transaction { body: Some(body) }.encode_to_vec()),
    )
}

pub fn sign_payload(key: &SigningKey, nonce: u64, payload: Bytes) -> TransactionEnvelope {
    let signer = key.public_key();
    let id = govchain_exec::transaction_id(CHAIN, signer.as_bytes(), nonce, &payload);
    TransactionEnvelope {
        payload,
        signer: signer.as_bytes().to_vec(),
        signature: key.sign(id.as_bytes()).to_vec(),
        chain_id: CHAIN.into(),
        nonce,
    }
}

pub fn transaction_id(envelope: &TransactionEnvelope) -> Digest {
    govchain_exec::transaction_id(
        &envelope.chain_id,
        &envelope.signer,
        envelope.nonce,
        &envelope.payload,
    )
}

pub async fn submit(
    client: &mut NodeServiceClient<Channel>,
    envelope: TransactionEnvelope,
) -> Result<Digest, tonic::Status> {
    let response = client
        .submit_transaction(SubmitTransactionRequest {
            envelope: Some(envelope),
        })
        .await?;
    Ok(Digest::from_slice(&response.into_inner().transaction_id).unwrap())
}

/// Waits until `id` is committed on the node behind `client`; returns its
/// height.
pub async fn committed_height(client: &mut NodeServiceClient<Channel>, id: Digest) -> u64 {
    eventually(
        &format!("transaction {id} to commit"),
        Duration::from_secs(60),
        || {
            let mut client = client.clone();
            async move {
                let response = client
                    .get_transaction(GetTransactionRequest {
                        transaction_id: id.to_vec(),
                        prove: false,
                    })
                    .await
                    .ok()?;
                let response = response.into_inner();
                (response.status == TransactionStatus::Committed as i32)
                    .then_some(response.block_height)
            }
        },
    )
    .await
}

/// Sends `bytes` as the raw body of a unary call, bypassing protobuf
/// encoding, to see how the server treats bytes that are not a message.
pub async fn raw_unary<R: prost::Message + Default + Send + 'static>(
    channel: Channel,
    path: &'static str,
    bytes: Vec<u8>,
) -> Result<R, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = RawCodec::<R>(std::marker::PhantomData);
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    Ok(grpc
        .unary(tonic::Request::new(bytes), path, codec)
        .await?
        .into_inner())
}

/// Sends each of `messages` as a raw message of a bidirectional stream,
/// bypassing protobuf encoding; returns the answers.
pub async fn raw_streaming<R: prost::Message + Default + Send + 'static>(
    channel: Channel,
    path: &'static str,
    messages: Vec<Vec<u8>>,
) -> Result<tonic::Streaming<R>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = RawCodec::<R>(std::marker::PhantomData);
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    Ok(grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter(messages)),
            path,
            codec,
        )
        .await?
        .into_inner())
}

pub struct RawCodec<R>(std::marker::PhantomData<R>);

pub struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl<R: prost::Message + Default + Send + 'static> tonic::codec::Codec for RawCodec<R> {
    type Encode = Vec<u8>;
    type Decode = R;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<R>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

impl Cluster {
    /// A raw channel to node `i` with department `i`'s client certificate.
    pub async fn channel(&self, i: usize) -> Channel {
        self.channel_as(i, &self.nodes[i].name.clone()).await
    }

    /// A raw channel to node `i` with `department`'s client certificate.
    pub async fn channel_as(&self, i: usize, department: &str) -> Channel {
        self.channel_with(i, department, "client").await
    }

    /// A raw channel to node `i` with `department`'s node certificate, as
    /// a peer validator connects (checking the node's DNS name).
    pub async fn peer_channel_as(&self, i: usize, department: &str) -> Channel {
        self.channel_with(i, department, "node").await
    }

    /// A raw channel to node `i` with `department`'s admin certificate.
    pub async fn admin_channel_as(&self, i: usize, department: &str) -> Channel {
        self.channel_with(i, department, "admin").await
    }

    /// `role` is "client", "admin" or "node": which of the department's
    /// certificates to present.
    async fn channel_with(&self, i: usize, department: &str, role: &str) -> Channel {
        let dept = self.certs().join(department);
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(
                std::fs::read(self.certs().join("ca.crt")).unwrap(),
            ))
            .identity(Identity::from_pem(
                std::fs::read(dept.join(format!("{role}.crt"))).unwrap(),
                std::fs::read(dept.join(format!("{role}.key"))).unwrap(),
            ));
        if role == "node" {
            tls = tls.domain_name(format!("{}.node.govchain", self.nodes[i].name));
        }
        Endpoint::from_shared(format!("https://127.0.0.1:{}", self.nodes[i].port))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub async fn terminate_node(&mut self, i: usize) -> std::process::ExitStatus {
        let mut child = self.nodes[i].child.take().unwrap();
        let pid = child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        eventually(
            "the node to exit after SIGTERM",
            Duration::from_secs(20),
            || {
                let status = child.try_wait().unwrap();
                async move { status }
            },
        )
        .await
    }
}

impl Cluster {
    /// Sends a signal (e.g. "STOP", "CONT") to node `i`.
    pub fn signal(&self, i: usize, signal: &str) {
        let pid = self.nodes[i].child.as_ref().unwrap().id().to_string();
        assert!(
            Command::new("kill")
                .args([&format!("-{signal}"), &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// The index of the node that the given node considers primary.
    pub async fn primary(&self, asking: usize) -> usize {
        let status = self.status(asking).await;
        self.nodes
            .iter()
            .position(|n| n.name == status.primary)
            .unwrap()
    }

    /// Waits until every listed node has at least `height` and all agree
    /// on the block at `height`.
    pub async fn wait_agree(&self, nodes: &[usize], height: u64, timeout: Duration) {
        wait_agree(self, nodes, height, timeout).await;
    }

    /// Checks that no two nodes in `nodes` hold different blocks at any
    /// height both have.
    pub async fn assert_no_fork(&self, nodes: &[usize]) {
        assert_no_fork(self, nodes).await;
    }
}

/// Submits a transaction every few milliseconds to a live node, round robin,
/// until stopped; returns the ids that were acknowledged.
pub struct Load {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Vec<Digest>>,
}

impl Load {
    /// Each transaction has its own signer (nonce 1), so a transaction lost
    /// with a killed node never blocks the ones after it.
    pub fn start(clients: Vec<NodeServiceClient<Channel>>, seed: u32) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut clients = clients;
            let mut acknowledged = Vec::new();
            let mut counter = 0u32;
            // Bounded: at most this many submissions per load.
            for turn in 0..20_000usize {
                if *stopped.borrow() {
                    break;
                }
                let mut key_seed = [0u8; 32];
                key_seed[..4].copy_from_slice(&seed.to_be_bytes());
                key_seed[4..8].copy_from_slice(&counter.to_be_bytes());
                let key = SigningKey::from_seed(key_seed);
                let envelope = sign(&key, 1, anchor_body(&format!("load-{seed}-{counter}")));
                let count = clients.len();
                let client = &mut clients[turn % count];
                // These sleeps stay on purpose: they pace the load (a
                // refused submission backs off a little longer).
                match submit(client, envelope).await {
                    Ok(id) => {
                        acknowledged.push(id);
                        counter += 1;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
                tokio::select! {
                    _ = stopped.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(15)) => {}
                }
            }
            acknowledged
        });
        Self { stop, task }
    }

    pub async fn stop(self) -> Vec<Digest> {
        let _ = self.stop.send(true);
        self.task.await.unwrap()
    }
}
