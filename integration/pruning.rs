//! Pruning old block bodies: an observer restarted with
//! `prune_horizon_blocks` (and small log segments, the grain of pruning)
//! rewrites the segments more than the horizon below its head to headers
//! and certificates. An old transaction and its block then answer
//! NOT_FOUND there, naming the pruning, while the validators still serve
//! them; a `headers_only` fetch still gets the old headers; the observer
//! follows the chain across a restart; `ledger prune` prunes offline; and
//! `ledger verify` accepts its ledger, checking the pruned blocks'
//! certificates.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use govchain_crypto::SigningKey;
use govchain_proto::consensus::v1::FetchBlocksRequest;
use govchain_proto::consensus::v1::consensus_service_client::ConsensusServiceClient;
use govchain_proto::node::v1::*;
use support::*;

const VIEW_TIMEOUT_MS: u64 = 2_000;
const LONG: Duration = Duration::from_secs(120);
const OBSERVER: usize = 4;
const HORIZON: u64 = 128;

fn block_at(height: u64) -> GetBlockRequest {
    GetBlockRequest {
        selector: Some(get_block_request::Selector::Height(height)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_prunes_old_bodies_and_keeps_headers_and_certificates() {
    // An empty block every 20 ms, so the chain passes the horizon in
    // seconds.
    let dir = init_consortium(4, 1);
    let certs = dir.path().join("certs");
    edit_genesis(&certs, |genesis| {
        genesis["consensus"]["empty_block_interval_ms"] = serde_json::json!(20);
    });
    let genesis_path = certs.join("genesis.json");
    let mut cluster = Cluster::start_prepared(dir, VIEW_TIMEOUT_MS).await;

    let key = SigningKey::from_seed([43; 32]);
    let mut validator = cluster.client(0).await.unwrap();
    let id = submit(&mut validator, sign(&key, 1, anchor_body("old record")))
        .await
        .unwrap();
    let old = committed_height(&mut validator, id).await;

    assert!(cluster.terminate_node(OBSERVER).await.success());
    let prune = [
        ("GOVCHAIN_PRUNE_HORIZON_BLOCKS", "128"),
        ("GOVCHAIN_BLOCK_LOG_SEGMENT_BYTES", "4096"),
    ];
    cluster.start_node_with_env(OBSERVER, &prune);
    eventually("the observer to prune", LONG, || async {
        cluster
            .log_text(OBSERVER)
            .contains("pruned old block bodies")
            .then_some(())
    })
    .await;

    // The old transaction is gone from the observer, with the reason; the
    // validators still have it.
    let mut observer = cluster.client(OBSERVER).await.unwrap();
    let refused = observer.get_block(block_at(old)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    assert!(refused.message().contains("pruned"), "{refused:?}");
    let refused = observer
        .get_transaction(GetTransactionRequest {
            transaction_id: id.to_vec(),
            prove: false,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    assert!(refused.message().contains("pruned"), "{refused:?}");
    let kept = validator
        .get_block(block_at(old))
        .await
        .unwrap()
        .into_inner();
    let kept = kept.block.unwrap();
    assert_eq!(kept.block.as_ref().unwrap().transactions.len(), 1);

    // Its recent blocks are whole.
    let head = observer
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .height;
    let recent = observer
        .get_block(block_at(head))
        .await
        .unwrap()
        .into_inner();
    assert!(recent.block.is_some());

    // Headers and certificates of the pruned blocks still go to peers;
    // their bodies do not.
    let mut peer = ConsensusServiceClient::new(cluster.peer_channel_as(OBSERVER, "tax").await);
    let mut headers = peer
        .fetch_blocks(FetchBlocksRequest {
            from_height: old,
            to_height: old,
            headers_only: true,
        })
        .await
        .unwrap()
        .into_inner();
    let header = headers.message().await.unwrap().unwrap().block.unwrap();
    assert_eq!(header.block_hash, kept.block_hash);
    assert_eq!(header.certificate, kept.certificate);
    assert!(header.block.unwrap().transactions.is_empty());
    let mut bodies = peer
        .fetch_blocks(FetchBlocksRequest {
            from_height: old,
            to_height: old,
            headers_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    let refused = bodies.message().await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");

    // Across a restart it keeps following the chain.
    let before = cluster.status(OBSERVER).await.height;
    assert!(cluster.terminate_node(OBSERVER).await.success());
    cluster.start_node_with_env(OBSERVER, &prune);
    eventually("the observer to follow after a restart", LONG, || async {
        let mut client = cluster.client(OBSERVER).await.ok()?;
        let status = client.get_status(GetStatusRequest {}).await.ok()?;
        (status.into_inner().height >= before + 20).then_some(())
    })
    .await;

    // Offline, `ledger prune` does the same: nothing under a horizon
    // longer than the chain, the segments below it otherwise, and it
    // refuses a horizon below the minimum.
    assert!(cluster.terminate_node(OBSERVER).await.success());
    let data = cluster.nodes[OBSERVER].data_dir.clone();
    let prune_offline = |keep: &str| {
        std::process::Command::new(BIN)
            .args([
                "ledger",
                "prune",
                "--json",
                "--keep-blocks",
                keep,
                "--data-dir",
            ])
            .arg(&data)
            .arg("--genesis")
            .arg(&genesis_path)
            .output()
            .unwrap()
    };
    let none = prune_offline("1000000");
    assert!(none.status.success(), "{none:?}");
    let none: serde_json::Value = serde_json::from_slice(&none.stdout).unwrap();
    assert_eq!(none["segments"], 0, "{none}");
    let kept_from = none["bodies_from"].as_u64().unwrap();
    assert!(kept_from > old, "{none}");
    let more = prune_offline("128");
    assert!(more.status.success(), "{more:?}");
    let more: serde_json::Value = serde_json::from_slice(&more.stdout).unwrap();
    assert!(more["bodies_from"].as_u64().unwrap() >= kept_from, "{more}");
    let refused = prune_offline("5");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("at least 128"),
        "{refused:?}"
    );

    // Its ledger verifies offline: every certificate from genesis, and
    // the transaction roots of the blocks it keeps whole.
    let verified = std::process::Command::new(BIN)
        .args(["ledger", "verify", "--json", "--data-dir"])
        .arg(&cluster.nodes[OBSERVER].data_dir)
        .arg("--genesis")
        .arg(&genesis_path)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert!(verified.status.success(), "{report}");
    let bodies_from = report["bodies_from"].as_u64().unwrap();
    assert!(bodies_from > old, "{report}");
    assert_eq!(report["first_height"], 1, "{report}");
    assert_eq!(report["blocks"], report["height"], "{report}");
    let height = report["height"].as_u64().unwrap();
    assert!(height - bodies_from >= HORIZON - 1, "{report}");
}
