//! Operating a node, on real node processes: honest liveness and readiness
//! (a node that is far behind is NOT_SERVING and says `syncing` until it
//! caught up; a node whose ledger refuses writes exits non-zero, naming the
//! cause, instead of living on half alive) and `govchain config check`
//! with environment overrides.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use govchain_proto::node::v1::GetStatusRequest;
use support::*;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// Connects to a node's plaintext health port, retrying while it starts.
async fn health_client(port: u16) -> HealthClient<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match endpoint.connect().await {
            Ok(channel) => return HealthClient::new(channel),
            Err(err) => {
                assert!(
                    Instant::now() < deadline,
                    "health port {port} never opened: {err}"
                );
                // The retry interval while the node starts.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn check(client: &mut HealthClient<Channel>, service: &str) -> ServingStatus {
    let HealthCheckResponse { status } = client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner();
    ServingStatus::try_from(status).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_far_behind_is_not_ready_until_it_caught_up() {
    let mut cluster = Cluster::start(4).await;
    let mut client = health_client(cluster.nodes[3].health_port).await;
    // A caught-up node is ready, and alive.
    eventually("node 3 to be ready", Duration::from_secs(30), || {
        let mut client = client.clone();
        async move { (check(&mut client, "").await == ServingStatus::Serving).then_some(()) }
    })
    .await;
    assert_eq!(check(&mut client, "liveness").await, ServingStatus::Serving);
    assert!(!cluster.status(3).await.syncing);

    cluster.kill_node(3);
    let behind = cluster.status(0).await.height;
    let live = [0, 1, 2];
    let mut clients = Vec::new();
    for i in live {
        clients.push(cluster.client(i).await.unwrap());
    }
    let load = Load::start(clients, 41);
    let lag = 4 * govchain_node::SYNC_LAG_BLOCKS_MAX;
    eventually(
        "the chain to move well past the stopped node",
        Duration::from_secs(120),
        || async { (cluster.status(0).await.height > behind + lag).then_some(()) },
    )
    .await;
    load.stop().await;
    let target = cluster.status(0).await.height;

    cluster.start_node(3);
    let mut client = health_client(cluster.nodes[3].health_port).await;
    // Liveness holds from the start; readiness waits for the catch-up.
    let mut seen = Vec::new();
    let mut stream = client
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.last() != Some(&ServingStatus::Serving) {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, stream.message())
            .await
            .unwrap_or_else(|_| panic!("node 3 never became ready; saw {seen:?}"))
            .unwrap()
            .unwrap();
        seen.push(ServingStatus::try_from(message.status).unwrap());
    }
    assert_eq!(
        seen.first(),
        Some(&ServingStatus::NotServing),
        "a node that restarts {lag}+ blocks behind starts NOT_SERVING: {seen:?}"
    );
    assert_eq!(check(&mut client, "liveness").await, ServingStatus::Serving);
    // Ready means caught up: within the allowed lag of where the chain was.
    let status = cluster.status(3).await;
    assert!(!status.syncing);
    assert!(
        status.height + govchain_node::SYNC_LAG_BLOCKS_MAX >= target,
        "ready at height {} while the chain is at {target}",
        status.height
    );
    let log = std::fs::read_to_string(&cluster.nodes[3].log).unwrap();
    let behind_line = log
        .lines()
        .find(|line| line.contains("not ready: catching up"))
        .unwrap_or_else(|| panic!("no syncing line in node 3's log:\n{log}"));
    assert!(behind_line.contains("peers_at="), "{behind_line}");
    assert!(
        log.lines()
            .skip_while(|line| !line.contains("not ready: catching up"))
            .any(|line| line.contains("ready: caught up with the peers")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_fills_up_exits_non_zero_naming_the_cause() {
    let mut cluster = Cluster::start(4).await;
    cluster.kill_node(3);
    // Node 3 restarts with its data directory on a small tmpfs of its own
    // (a user and mount namespace, so no root is needed and nothing
    // outlives the process). When the test says so, the script fills the
    // tmpfs: the ledger's next write fails with "No space left on device".
    let node = &cluster.nodes[3];
    let trigger = node.config.with_file_name("fill-now");
    let script = r#"
        mount -t tmpfs -o size=64m govchain-test "$DATA" || exit 90
        "$BIN" node --config "$CONFIG" &
        node=$!
        i=0
        while [ ! -e "$TRIGGER" ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done
        dd if=/dev/zero of="$DATA/filler" bs=1M 2>/dev/null
        wait $node
    "#;
    std::fs::create_dir_all(&node.data_dir).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)
        .unwrap();
    let mut child = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", script])
        .env("DATA", &node.data_dir)
        .env("BIN", BIN)
        .env("CONFIG", &node.config)
        .env("TRIGGER", &trigger)
        .env("GOVCHAIN_LOG", NODE_LOG_FILTER)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("unshare (util-linux) must be installed to run this test");
    // The node runs and catches up on its tmpfs.
    let height = cluster.status(0).await.height;
    eventually(
        "node 3 to catch up on its tmpfs",
        Duration::from_secs(60),
        || {
            let cluster = &cluster;
            async move {
                let mut client = cluster.client(3).await.ok()?;
                let status = client.get_status(GetStatusRequest {}).await.ok()?;
                (status.into_inner().height >= height).then_some(())
            }
        },
    )
    .await;

    std::fs::write(&trigger, b"").unwrap();
    let mut clients = Vec::new();
    for i in 0..4 {
        clients.push(cluster.client(i).await.unwrap());
    }
    let load = Load::start(clients, 42);
    let status = eventually(
        "node 3 to exit once its disk is full",
        Duration::from_secs(90),
        || {
            let status = child.try_wait().unwrap();
            async move { status }
        },
    )
    .await;
    load.stop().await;
    let log = std::fs::read_to_string(&cluster.nodes[3].log).unwrap();
    assert_ne!(
        status.code(),
        Some(90),
        "the tmpfs could not be mounted:\n{log}"
    );
    assert!(!status.success(), "exit status {status}:\n{log}");
    assert_eq!(status.code(), Some(2), "the node's error exit code:\n{log}");
    // A part may end because the consensus thread failed (its queue
    // closed): the process's own error names the failure.
    assert!(
        log.lines()
            .any(|line| line.contains("fatal: consensus thread panicked")
                && line.contains("No space left on device")),
        "a fatal line names the cause:\n{log}"
    );
    let last = log
        .lines()
        .rev()
        .find(|line| line.starts_with("error: "))
        .unwrap_or_default();
    assert!(
        last.contains("consensus thread panicked") && last.contains("No space left on device"),
        "the process's error names the cause: {last}"
    );
    // The other three keep committing without it.
    let height = cluster.status(0).await.height;
    let mut client = cluster.client(0).await.unwrap();
    let key = govchain_crypto::SigningKey::from_seed([43; 32]);
    let id = submit(&mut client, sign(&key, 1, anchor_body("after-the-fatal")))
        .await
        .unwrap();
    assert!(committed_height(&mut client, id).await > height);
}

#[test]
fn config_check_applies_environment_overrides_and_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    govchain(&[
        "certs",
        "init",
        "--out",
        certs.to_str().unwrap(),
        "--departments",
        "health,tax,police,civil",
    ]);
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        r#"name = "health"
listen = "127.0.0.1:7050"
data_dir = "data"
genesis = "certs/genesis.json"
ca_certificate = "certs/ca.crt"
certificate = "certs/health/node.crt"
key = "certs/health/node.key"
consensus_key = "certs/health/consensus.key"
"#,
    )
    .unwrap();
    let check = |env: &[(&str, &str)]| {
        Command::new(BIN)
            .args(["config", "check", config.to_str().unwrap(), "--json"])
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let output = check(&[
        ("GOVCHAIN_LISTEN", "0.0.0.0:9050"),
        ("GOVCHAIN_MEMPOOL__TRANSACTIONS_MAX", "500"),
        ("GOVCHAIN_HEALTH_LISTEN", "0.0.0.0:9052"),
    ]);
    assert!(output.status.success(), "{output:?}");
    let view: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(view["valid"], true);
    assert_eq!(view["effective"]["listen"], "0.0.0.0:9050");
    assert_eq!(view["effective"]["health_listen"], "0.0.0.0:9052");
    assert_eq!(view["effective"]["mempool"]["transactions_max"], 500);
    assert_eq!(view["role"], "validator 0 of 4");
    assert_eq!(
        view["overrides"][1]["variable"], "GOVCHAIN_LISTEN",
        "{view}"
    );

    // Each mistake is named with its key, its value and the rule.
    for (env, expected) in [
        (
            ("GOVCHAIN_MEMPOOL__BYTES_MAX", "lots"),
            "found string \"lots\", expected u64 for key \"mempool.bytes_max\" in `GOVCHAIN_` environment",
        ),
        (
            ("GOVCHAIN_MEMPOOL__BYTES_MAX", "0"),
            "mempool.bytes_max = 0: must be at least 1",
        ),
        (
            ("GOVCHAIN_NAME", "nobody"),
            "name = \"nobody\": not a validator in genesis",
        ),
        (
            ("GOVCHAIN_HEALTH_LISTEN", "127.0.0.1:7050"),
            "must be another port than listen",
        ),
        (
            ("GOVCHAIN_KEY", "certs/missing.key"),
            "key = \"certs/missing.key\": cannot read",
        ),
    ] {
        let output = check(&[env]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{env:?}: {stderr}");
        assert!(stderr.contains(expected), "{env:?}: {stderr}");
    }
}
