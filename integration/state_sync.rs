//! A node joins from a state snapshot: an observer whose data directory
//! holds no ledger, started with `state_sync = true`, fetches a validator's
//! state at its head in verified parts (after checking the certificates up
//! to it), then only the blocks after it, and serves the same state as the
//! validators; it holds no block below the snapshot's, and `ledger verify`
//! accepts its ledger.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use govchain_crypto::SigningKey;
use govchain_proto::node::v1::*;
use support::*;

const VIEW_TIMEOUT_MS: u64 = 1_000;
const LONG: Duration = Duration::from_secs(90);
const OBSERVER: usize = 4;

async fn committed_nonce(cluster: &Cluster, i: usize, key: &SigningKey) -> Option<u64> {
    let mut client = cluster.client(i).await.ok()?;
    let account = client
        .get_account(GetAccountRequest {
            public_key: key.public_key().as_bytes().to_vec(),
            prove: false,
        })
        .await
        .ok()?
        .into_inner();
    Some(account.committed_nonce)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_joins_from_a_state_snapshot_and_follows() {
    let mut cluster = Cluster::start_full(4, VIEW_TIMEOUT_MS, 1).await;
    // The observer starts over with an empty ledger; its blob store stays.
    cluster.kill_node(OBSERVER);
    cluster.remove_ledger(OBSERVER);
    let data = cluster.nodes[OBSERVER].data_dir.clone();

    // State before the snapshot: an account with three transactions and
    // the load's many others.
    let key = SigningKey::from_seed([41; 32]);
    let mut client = cluster.client(0).await.unwrap();
    for nonce in 1..=3 {
        let id = submit(
            &mut client,
            sign(&key, nonce, anchor_body(&format!("before-{nonce}"))),
        )
        .await
        .unwrap();
        committed_height(&mut client, id).await;
    }
    let mut clients = Vec::new();
    for i in 0..4 {
        clients.push(cluster.client(i).await.unwrap());
    }
    let load = Load::start(clients, 11);
    let before = cluster.status(0).await.height;
    eventually("the chain to grow", LONG, || async {
        (cluster.status(0).await.height >= before + 10).then_some(())
    })
    .await;
    load.stop().await;
    let snapshot_from = cluster.status(0).await.height;

    cluster.start_node_with_env(OBSERVER, &[("GOVCHAIN_STATE_SYNC", "true")]);
    eventually("the observer to install a snapshot", LONG, || async {
        cluster
            .log_text(OBSERVER)
            .contains("installed a state snapshot")
            .then_some(())
    })
    .await;
    let log = cluster.log_text(OBSERVER);
    assert!(
        !log.contains("state snapshot from peer failed"),
        "{}",
        cluster.log_tail(OBSERVER)
    );
    // The state came with the snapshot: the account's nonce is there
    // although no block before the snapshot was applied.
    eventually("the observer to serve the account", LONG, || async {
        (committed_nonce(&cluster, OBSERVER, &key).await == Some(3)).then_some(())
    })
    .await;
    let mut observer = cluster.client(OBSERVER).await.unwrap();
    let status = observer
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.height >= snapshot_from, "{status:?}");
    let refused = observer
        .get_block(GetBlockRequest {
            selector: Some(get_block_request::Selector::Height(1)),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);
    assert!(refused.message().contains("state snapshot"), "{refused:?}");

    // Blocks after the snapshot arrive block by block.
    let id = submit(&mut client, sign(&key, 4, anchor_body("after")))
        .await
        .unwrap();
    let at = committed_height(&mut client, id).await;
    eventually("the observer to apply the block after", LONG, || async {
        (committed_nonce(&cluster, OBSERVER, &key).await == Some(4)).then_some(())
    })
    .await;
    let mut observer = cluster.client(OBSERVER).await.unwrap();
    let found = observer
        .get_transaction(GetTransactionRequest {
            transaction_id: id.to_vec(),
            prove: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.block_height, at);
    let ours = observer
        .get_block(GetBlockRequest {
            selector: Some(get_block_request::Selector::Height(at)),
        })
        .await
        .unwrap()
        .into_inner();
    let theirs = client
        .get_block(GetBlockRequest {
            selector: Some(get_block_request::Selector::Height(at)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ours.block.unwrap().block_hash,
        theirs.block.unwrap().block_hash
    );

    // Its ledger verifies offline, from the snapshot's block on.
    assert!(cluster.terminate_node(OBSERVER).await.success());
    let genesis = cluster.certs().join("genesis.json");
    let verified = std::process::Command::new(BIN)
        .args(["ledger", "verify", "--json", "--data-dir"])
        .arg(&data)
        .arg("--genesis")
        .arg(&genesis)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert!(verified.status.success(), "{report}");
    let first = report["first_height"].as_u64().unwrap();
    assert!(first > 3 && first <= at, "{report}");
}
