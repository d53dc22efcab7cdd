//! Real nodes under faults: a killed primary, a stopped process, a restart
//! of the whole consortium, and a 7-validator consortium missing two.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use govchain_proto::node::v1::*;
use support::*;

const VIEW_TIMEOUT_MS: u64 = 1_000;
const LONG: Duration = Duration::from_secs(90);

async fn clients(
    cluster: &Cluster,
    nodes: &[usize],
) -> Vec<govchain_proto::node::v1::node_service_client::NodeServiceClient<tonic::transport::Channel>>
{
    let mut clients = Vec::new();
    for &i in nodes {
        clients.push(cluster.client(i).await.unwrap());
    }
    clients
}

async fn height(cluster: &Cluster, i: usize) -> u64 {
    cluster.status(i).await.height
}

/// Waits until node `i` commits `more` blocks past `from`.
async fn grows(cluster: &Cluster, i: usize, from: u64, more: u64) -> u64 {
    eventually(
        &format!("node {i} to pass height {}", from + more),
        LONG,
        || async {
            let height = cluster
                .client(i)
                .await
                .ok()?
                .get_status(GetStatusRequest {})
                .await
                .ok()?
                .into_inner()
                .height;
            (height >= from + more).then_some(height)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_primary_changes_the_view_and_it_rejoins_after_restart() {
    let mut cluster = Cluster::start_with(4, VIEW_TIMEOUT_MS).await;
    let primary = cluster.primary(1).await;
    let others: Vec<usize> = (0..4).filter(|i| *i != primary).collect();
    let load = Load::start(clients(&cluster, &others).await, 1);
    let before = grows(&cluster, others[0], 0, 3).await;

    cluster.kill_node(primary);
    let after_kill = height(&cluster, others[0]).await;
    grows(&cluster, others[0], after_kill, 5).await;
    let status = cluster.status(others[0]).await;
    assert!(status.view >= 1, "the others moved past view 0");
    assert_ne!(
        status.primary, cluster.nodes[primary].name,
        "a new primary leads"
    );
    assert!(after_kill >= before);

    cluster.start_node(primary);
    let head = height(&cluster, others[0]).await;
    // It catches up to where the others were when it came back, and beyond.
    eventually("the restarted primary to catch up", LONG, || async {
        let status = cluster
            .client(primary)
            .await
            .ok()?
            .get_status(GetStatusRequest {})
            .await
            .ok()?
            .into_inner();
        (status.height >= head + 2).then_some(())
    })
    .await;
    let acknowledged = load.stop().await;
    assert!(acknowledged.len() > 10, "the load kept being accepted");
    let last = height(&cluster, others[0]).await;
    cluster.wait_agree(&[0, 1, 2, 3], last, LONG).await;
    cluster.assert_no_fork(&[0, 1, 2, 3]).await;
    // It takes part again: it follows the current view.
    let view = cluster.status(others[0]).await.view;
    let rejoined = eventually(
        "the restarted node to adopt the current view",
        LONG,
        || async {
            let status = cluster
                .client(primary)
                .await
                .ok()?
                .get_status(GetStatusRequest {})
                .await
                .ok()?
                .into_inner();
            (status.view == view).then_some(status)
        },
    )
    .await;
    assert_eq!(rejoined.primary, cluster.status(others[0]).await.primary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_catches_up_without_a_fork() {
    let cluster = Cluster::start_with(4, VIEW_TIMEOUT_MS).await;
    let primary = cluster.primary(0).await;
    let stopped = (primary + 1) % 4;
    let live: Vec<usize> = (0..4).filter(|i| *i != stopped).collect();
    let load = Load::start(clients(&cluster, &live).await, 2);
    grows(&cluster, live[0], 0, 2).await;
    cluster.signal(stopped, "STOP");
    let stopped_at = tokio::time::Instant::now();
    let at_stop = height(&cluster, live[0]).await;
    // The others keep committing while it is stopped...
    grows(&cluster, live[0], at_stop, 10).await;
    // ...and it stays stopped for at least three of its view timeouts, so
    // that every timer it has is overdue when it resumes. This wait stays
    // on purpose: the length of the pause is what the test is about.
    tokio::time::sleep_until(stopped_at + Duration::from_millis(3 * VIEW_TIMEOUT_MS)).await;
    cluster.signal(stopped, "CONT");
    let target = height(&cluster, live[0]).await;
    grows(&cluster, stopped, 0, target).await;
    load.stop().await;
    let last = height(&cluster, live[0]).await;
    cluster.wait_agree(&[0, 1, 2, 3], last, LONG).await;
    cluster.assert_no_fork(&[0, 1, 2, 3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_every_node_loses_no_committed_transaction() {
    let mut cluster = Cluster::start_with(4, VIEW_TIMEOUT_MS).await;
    let load = Load::start(clients(&cluster, &[0, 1, 2, 3]).await, 3);
    grows(&cluster, 0, 0, 5).await;
    let acknowledged = load.stop().await;
    // Every transaction acknowledged as committed before the crash...
    let mut client = cluster.client(0).await.unwrap();
    let mut committed = Vec::new();
    for id in &acknowledged {
        let height = committed_height(&mut client, *id).await;
        committed.push((*id, height));
    }
    assert!(committed.len() > 5);
    for i in 0..4 {
        cluster.kill_node(i);
    }
    for i in 0..4 {
        cluster.start_node(i);
    }
    for i in 0..4 {
        cluster.wait_ready(i).await;
    }
    // The ledgers' indexes are committed durably only every 64 blocks:
    // the nodes re-applied the blocks above that from their block logs.
    let reapplied = (0..4)
        .filter(|i| {
            cluster
                .log_text(*i)
                .contains("re-applied logged blocks above the last checkpoint")
        })
        .count();
    assert!(
        reapplied > 0,
        "no node re-applied logged blocks after SIGKILL:\n{}",
        cluster.log_tail(0)
    );
    // ...is still there, at the same height, on every node.
    for i in 0..4 {
        let mut client = cluster.client(i).await.unwrap();
        for (id, height) in &committed {
            let response = client
                .get_transaction(GetTransactionRequest {
                    transaction_id: id.to_vec(),
                    prove: false,
                })
                .await;
            let response = response
                .unwrap_or_else(|s| panic!("node {i} lost transaction {id}: {s}"))
                .into_inner();
            assert_eq!(
                response.status,
                TransactionStatus::Committed as i32,
                "node {i}, transaction {id}"
            );
            assert_eq!(response.block_height, *height);
        }
    }
    // And the chain resumes.
    let before = height(&cluster, 0).await;
    let mut client = cluster.client(2).await.unwrap();
    let id = submit(
        &mut client,
        sign(
            &govchain_crypto::SigningKey::from_seed([77; 32]),
            1,
            anchor_body("after-restart"),
        ),
    )
    .await
    .unwrap();
    let at = committed_height(&mut client, id).await;
    assert!(at > before);
    cluster.assert_no_fork(&[0, 1, 2, 3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seven_validators_keep_committing_with_two_killed() {
    let mut cluster = Cluster::start_with(7, VIEW_TIMEOUT_MS).await;
    let primary = cluster.primary(0).await;
    // Kill the primary and one backup: f = 2 for n = 7.
    let killed = [primary, (primary + 3) % 7];
    let live: Vec<usize> = (0..7).filter(|i| !killed.contains(i)).collect();
    let load = Load::start(clients(&cluster, &live).await, 4);
    grows(&cluster, live[0], 0, 2).await;
    for i in killed {
        cluster.kill_node(i);
    }
    let at_kill = height(&cluster, live[0]).await;
    grows(&cluster, live[0], at_kill, 5).await;
    load.stop().await;
    let last = height(&cluster, live[0]).await;
    cluster.wait_agree(&live, last, LONG).await;
    cluster.assert_no_fork(&live).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_follows_the_chain_and_refuses_writes() {
    let mut cluster = Cluster::start_full(4, VIEW_TIMEOUT_MS, 1).await;
    let observer = 4;
    let load = Load::start(clients(&cluster, &[0, 1, 2, 3]).await, 5);
    grows(&cluster, 0, 0, 5).await;
    let target = height(&cluster, 0).await;
    grows(&cluster, observer, 0, target).await;
    let status = cluster.status(observer).await;
    assert!(status.observer);
    assert!(
        status.connected_peers.is_empty(),
        "an observer streams to nobody"
    );
    // Reads work; writes are refused with a pointer to the validators.
    let mut client = cluster.client(observer).await.unwrap();
    let status = submit(
        &mut client,
        sign(
            &govchain_crypto::SigningKey::from_seed([9; 32]),
            1,
            anchor_body("x"),
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("observer"),
        "{}",
        status.message()
    );
    // Stopped and restarted, it catches up again.
    cluster.kill_node(observer);
    let at_kill = height(&cluster, 0).await;
    grows(&cluster, 0, at_kill, 5).await;
    cluster.start_node(observer);
    let target = height(&cluster, 0).await;
    grows(&cluster, observer, 0, target).await;
    load.stop().await;
    let last = height(&cluster, 0).await;
    cluster
        .wait_agree(&[0, 1, 2, 3, observer], last, LONG)
        .await;
    cluster.assert_no_fork(&[0, 1, 2, 3, observer]).await;
}
