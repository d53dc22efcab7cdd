//! Test support for real network partitions: one network namespace per node,
//! each joined by a veth pair to a bridge in the root namespace, so that a
//! node's only link can be cut and healed with `ip link set ... down/up`.
//! The test process stays in the root namespace and reaches every node
//! through the bridge's address.
//!
//! Everything created here is removed on drop, including after a failed
//! assertion: [`NsCluster`] kills its node processes first, then [`Net`]
//! deletes the namespaces, the veth pairs and the bridge.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use govchain_node::{NodeFile, PeerFile};
use govchain_proto::node::v1::node_service_client::NodeServiceClient;
use govchain_proto::node::v1::*;
use tonic::transport::Channel;

use crate::support::{BIN, CHAIN, connect_at, departments, eventually, govchain};

/// The port every node listens on, each at its own address.
pub const PORT: u16 = 7050;
/// The bridge's host number in the test subnet.
const BRIDGE_HOST: u8 = 254;

/// The `ip` binary (iproute2): the usual sbin paths, else whatever `PATH`
/// finds.
fn ip_binary() -> &'static str {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .unwrap_or("ip")
}

/// Runs `ip args...`; the error names the command and carries its stderr.
fn ip(args: &[&str]) -> Result<String, String> {
    let output = Command::new(ip_binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run `{} {}`: {err}", ip_binary(), args.join(" ")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`{} {}` failed ({}): {}",
            ip_binary(),
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Like [`ip`], panicking on failure: for setup steps after the namespaces
/// exist, where a failure is a real error, not a reason to skip.
fn ip_ok(args: &[&str]) -> String {
    ip(args).unwrap_or_else(|err| panic!("{err}"))
}

/// Picks a /24 in 10.0.0.0/8 from the process id that no address or route
/// on this machine uses yet; returns its first three octets, e.g. "10.7.42".
fn pick_subnet(pid: u32) -> String {
    let in_use = format!(
        "{}\n{}",
        ip(&["-4", "-o", "addr", "show"]).unwrap_or_default(),
        ip(&["-4", "route", "show", "table", "all"]).unwrap_or_default()
    );
    // Bounded: a few hundred candidates, all derived from the pid.
    for k in 0..512u32 {
        let v = pid.wrapping_add(k.wrapping_mul(7_919));
        let subnet = format!("10.{}.{}", 100 + (v / 256) % 150, v % 256);
        let prefix = format!("{subnet}.");
        let taken = in_use
            .split_whitespace()
            .any(|word| word.starts_with(&prefix));
        if !taken {
            return subnet;
        }
    }
    panic!("no free 10.x.y.0/24 subnet for the partition test");
}

/// The namespaces, veth pairs and bridge of one test run. Names carry the
/// process id, so concurrent runs never clash.
pub struct Net {
    /// First three octets of the test's /24, e.g. "10.7.42".
    pub subnet: String,
    /// One namespace per node.
    pub namespaces: Vec<String>,
    /// The veth ends attached to the bridge (root namespace), one per node:
    /// setting one down cuts that node off.
    pub host_ends: Vec<String>,
    /// The veth ends inside the namespaces, one per node.
    pub node_ends: Vec<String>,
    pub bridge: Option<String>,
}

impl Net {
    /// Creates `n` namespaces joined by a bridge. Returns `Err` with the
    /// reason only when the namespaces cannot be created at all (not root,
    /// no iproute2, no permission): the caller fails, or skips if told to
    /// (`GOVCHAIN_SKIP_NETNS=1`, see `partition.rs`). Any later failure
    /// panics; whatever was made by then is removed on drop.
    pub fn create(n: usize) -> Result<Self, String> {
        let pid = std::process::id();
        // The pid and two digits of the clock: unique among live processes,
        // and unlikely to meet what a killed earlier run left behind.
        // Interface names stay under 15 bytes ("gv" + 7 + 2 + "a" + index).
        let salt = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.subsec_micros() % 100);
        let tag = format!("{pid}{salt:02}");
        let mut net = Self {
            subnet: pick_subnet(pid.wrapping_add(salt)),
            namespaces: Vec::new(),
            host_ends: Vec::new(),
            node_ends: Vec::new(),
            bridge: None,
        };
        for i in 0..n {
            let ns = format!("gc{tag}-{i}");
            match ip(&["netns", "add", &ns]) {
                Ok(_) => net.namespaces.push(ns),
                // A name clash is not a reason to skip.
                Err(err) if i == 0 && !err.contains("File exists") => return Err(err),
                Err(err) => panic!("{err}"),
            }
        }
        net.wire(&tag);
        Ok(net)
    }

    /// The bridge with an address, and per node a veth pair with one end on
    /// the bridge and the other, addressed, in the node's namespace.
    fn wire(&mut self, tag: &str) {
        let bridge = format!("gb{tag}");
        ip_ok(&["link", "add", &bridge, "type", "bridge"]);
        self.bridge = Some(bridge.clone());
        // Keep this bridge's frames out of iptables (where br_netfilter is
        // loaded, e.g. next to Docker, a FORWARD policy of DROP would
        // otherwise cut every link). Best effort: old kernels lack it.
        if let Err(err) = ip(&[
            "link",
            "set",
            &bridge,
            "type",
            "bridge",
            "nf_call_iptables",
            "0",
            "nf_call_ip6tables",
            "0",
            "nf_call_arptables",
            "0",
        ]) {
            eprintln!("partition test: {err}");
        }
        let bridge_address = format!("{}.{BRIDGE_HOST}/24", self.subnet);
        ip_ok(&["addr", "add", &bridge_address, "dev", &bridge]);
        ip_ok(&["link", "set", &bridge, "up"]);
        for i in 0..self.namespaces.len() {
            let ns = self.namespaces[i].clone();
            let host_end = format!("gv{tag}a{i}");
            let node_end = format!("gv{tag}b{i}");
            ip_ok(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", &node_end, "netns", &ns,
            ]);
            self.host_ends.push(host_end.clone());
            self.node_ends.push(node_end.clone());
            ip_ok(&["link", "set", &host_end, "master", &bridge]);
            ip_ok(&["link", "set", &host_end, "up"]);
            let address = format!("{}/24", self.address(i));
            ip_ok(&["-n", &ns, "addr", "add", &address, "dev", &node_end]);
            ip_ok(&["-n", &ns, "link", "set", &node_end, "up"]);
            ip_ok(&["-n", &ns, "link", "set", "lo", "up"]);
        }
    }

    /// Node `i`'s address, e.g. "10.7.42.1".
    pub fn address(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 1)
    }

    /// Cuts node `i`'s only link: its veth end on the bridge goes down, so
    /// nothing reaches it or leaves it (established TCP connections are not
    /// reset; they just stop getting through, as with a pulled cable).
    pub fn cut(&self, i: usize) {
        ip_ok(&["link", "set", &self.host_ends[i], "down"]);
    }

    /// Restores node `i`'s link.
    pub fn heal(&self, i: usize) {
        ip_ok(&["link", "set", &self.host_ends[i], "up"]);
    }

    /// A command that runs `program` inside node `i`'s namespace.
    pub fn command_in(&self, i: usize, program: &str) -> Command {
        let mut command = Command::new(ip_binary());
        command.args(["netns", "exec", &self.namespaces[i], program]);
        command
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            // Anything still running in the namespace was started by this
            // test (its node); end it by pid before deleting the namespace.
            if let Ok(pids) = ip(&["netns", "pids", ns]) {
                for pid in pids.split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            // Deleting the namespace deletes the veth end inside it, and with
            // it the pair's other end.
            if let Err(err) = ip(&["netns", "del", ns]) {
                eprintln!("partition test cleanup: {err}");
            }
        }
        for host_end in &self.host_ends {
            // Normally gone with its namespace; this catches the rest.
            if ip(&["link", "show", host_end]).is_ok()
                && let Err(err) = ip(&["link", "del", host_end])
            {
                eprintln!("partition test cleanup: {err}");
            }
        }
        if let Some(bridge) = &self.bridge
            && let Err(err) = ip(&["link", "del", bridge])
        {
            eprintln!("partition test cleanup: {err}");
        }
    }
}

/// What `govchain status` run inside a node's namespace reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InsideStatus {
    pub height: u64,
    pub view: u64,
}

pub struct NsNode {
    pub name: String,
    pub address: String,
    pub config: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

/// Validators, one per namespace of a [`Net`], with certificates made by
/// `govchain certs init` that also name every node's address.
pub struct NsCluster {
    pub nodes: Vec<NsNode>,
    pub net: Net,
    pub dir: tempfile::TempDir,
}

impl NsCluster {
    /// Writes certificates, genesis (with `view_timeout_ms`) and node
    /// configs for one validator per namespace of `net`, starts them, and
    /// waits until every node sees all its peers.
    pub async fn start(net: Net, view_timeout_ms: u64) -> Self {
        let n = net.namespaces.len();
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let names = departments(n);
        let addresses: Vec<String> = (0..n).map(|i| net.address(i)).collect();
        govchain(&[
            "certs",
            "init",
            "--out",
            certs.to_str().unwrap(),
            "--chain-id",
            CHAIN,
            "--departments",
            &names.join(","),
            "--hosts",
            &addresses.join(","),
        ]);
        let genesis_path = certs.join("genesis.json");
        let mut genesis: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&genesis_path).unwrap()).unwrap();
        genesis["consensus"]["view_timeout_ms"] = serde_json::json!(view_timeout_ms);
        std::fs::write(
            &genesis_path,
            serde_json::to_string_pretty(&genesis).unwrap(),
        )
        .unwrap();
        let mut nodes = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let node_dir = dir.path().join("nodes").join(name);
            std::fs::create_dir_all(&node_dir).unwrap();
            let dept = certs.join(name);
            let file = NodeFile {
                observer: false,
                state_sync: false,
                prune_horizon_blocks: None,
                block_log_segment_bytes: None,
                name: name.clone(),
                listen: format!("{}:{PORT}", addresses[i]).parse().unwrap(),
                data_dir: node_dir.join("data"),
                genesis: genesis_path.clone(),
                ca_certificate: certs.join("ca.crt"),
                certificate: dept.join("node.crt"),
                key: dept.join("node.key"),
                consensus_key: dept.join("consensus.key"),
                peers: names
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(j, peer)| PeerFile {
                        name: peer.clone(),
                        address: format!("https://{}:{PORT}", addresses[j]),
                    })
                    .collect(),
                mempool: Default::default(),
                blobs: Default::default(),
                health_listen: None,
                metrics_listen: None,
                portal_listen: None,
                portal_url: None,
            };
            let config = node_dir.join("node.toml");
            file.save(&config).unwrap();
            nodes.push(NsNode {
                name: name.clone(),
                address: addresses[i].clone(),
                config,
                log: node_dir.join("node.log"),
                child: None,
            });
        }
        let mut cluster = Self { nodes, net, dir };
        for i in 0..n {
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

    /// Starts node `i` inside its namespace (`ip netns exec` execs the node
    /// in place, so the child is the node process itself).
    pub fn start_node(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "node {i} already runs");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.nodes[i].log)
            .unwrap();
        let child = self
            .net
            .command_in(i, BIN)
            .args(["node", "--config", self.nodes[i].config.to_str().unwrap()])
            .env("GOVCHAIN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.nodes[i].child = Some(child);
    }

    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The index of the node named `name`.
    pub fn index(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|node| node.name == name)
            .unwrap_or_else(|| panic!("no node named {name:?}"))
    }

    /// A client of node `i`, from the root namespace, with department `i`'s
    /// client certificate.
    pub async fn client(
        &self,
        i: usize,
    ) -> Result<NodeServiceClient<Channel>, tonic::transport::Error> {
        let dept = self.certs().join(&self.nodes[i].name);
        // A node behind a cut link never answers; do not wait for ever.
        connect_at(
            &self.nodes[i].address,
            PORT,
            &self.certs().join("ca.crt"),
            &dept.join("client.crt"),
            &dept.join("client.key"),
            Some(Duration::from_secs(10)),
        )
        .await
    }

    /// Node `i`'s status, or `None` if it does not answer.
    pub async fn try_status(&self, i: usize) -> Option<GetStatusResponse> {
        let mut client = self.client(i).await.ok()?;
        Some(
            client
                .get_status(GetStatusRequest {})
                .await
                .ok()?
                .into_inner(),
        )
    }

    pub async fn status(&self, i: usize) -> GetStatusResponse {
        let mut client = self
            .client(i)
            .await
            .unwrap_or_else(|err| panic!("cannot connect to node {i}: {err:?}"));
        client
            .get_status(GetStatusRequest {})
            .await
            .unwrap_or_else(|status| panic!("node {i} does not answer: {status}"))
            .into_inner()
    }

    /// Node `i`'s height and view, asked from inside its own namespace with
    /// `govchain status`: this works while its link is cut.
    pub fn status_from_inside(&self, i: usize) -> InsideStatus {
        let dept = self.certs().join(&self.nodes[i].name);
        let output = self
            .net
            .command_in(i, BIN)
            .arg("--json")
            .arg("status")
            .arg("--node")
            .arg(format!("https://{}:{PORT}", self.nodes[i].address))
            .arg("--ca")
            .arg(self.certs().join("ca.crt"))
            .arg("--cert")
            .arg(dept.join("client.crt"))
            .arg("--key")
            .arg(dept.join("client.key"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "govchain status inside namespace {} failed: {}",
            self.net.namespaces[i],
            String::from_utf8_lossy(&output.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let node = &json["nodes"][0];
        InsideStatus {
            height: node["height"]
                .as_u64()
                .unwrap_or_else(|| panic!("no height in {json}")),
            view: node["view"]
                .as_u64()
                .unwrap_or_else(|| panic!("no view in {json}")),
        }
    }

    /// Waits until node `i` answers and sees all its peers.
    pub async fn wait_ready(&self, i: usize) {
        let peers = self.nodes.len() - 1;
        let name = self.nodes[i].name.clone();
        eventually(
            &format!("node {name} to start and connect to its {peers} peers"),
            Duration::from_secs(90),
            || async {
                let status = self.try_status(i).await?;
                (status.connected_peers.len() == peers).then_some(())
            },
        )
        .await;
    }

    /// See [`crate::support::wait_agree`].
    pub async fn wait_agree(&self, nodes: &[usize], height: u64, timeout: Duration) {
        crate::support::wait_agree(self, nodes, height, timeout).await;
    }

    /// See [`crate::support::assert_no_fork`].
    pub async fn assert_no_fork(&self, nodes: &[usize]) {
        crate::support::assert_no_fork(self, nodes).await;
    }

    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for NsCluster {
    /// Kills the nodes; then `net` removes the namespaces, veths and bridge.
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
        if panicking {
            // The temporary directory goes away; keep the logs for a look.
            let kept = std::env::temp_dir()
                .join(format!("govchain-partition-logs-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&kept);
            for (i, node) in self.nodes.iter().enumerate() {
                let _ = std::fs::copy(&node.log, kept.join(format!("{}.log", node.name)));
                eprintln!(
                    "--- last log lines of node {} ({}) ---\n{}",
                    node.name,
                    node.address,
                    self.log_tail(i)
                );
            }
            eprintln!("node logs kept in {}", kept.display());
        }
    }
}

/// Polls `check` until it returns `Ok`, or panics after `timeout` with the
/// last `Err`: what was seen instead.
pub async fn eventually_or<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let seen = match check().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last seen: {seen}"
        );
        // The polling interval of this wait.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl crate::support::NodeClients for NsCluster {
    async fn node_client(
        &self,
        i: usize,
    ) -> Result<NodeServiceClient<Channel>, tonic::transport::Error> {
        self.client(i).await
    }
}
