//! Filtered transaction events on real nodes (`SubscribeTransactions`):
//! the filter selects by kind, dataset (exact or prefix), department and
//! signer; every event has its chain position, and a subscriber that
//! reconnects after the last position it processed, to the same node or
//! another, gets exactly the events after it. The CLI's `tx follow` prints
//! them and resumes with `--after`.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use govchain_crypto::{Digest, SigningKey};
use govchain_proto::node::v1::node_service_client::NodeServiceClient;
use govchain_proto::node::v1::*;
use govchain_proto::types::v1::AnchorRecord;
use govchain_proto::types::v1::transaction::Body;
use support::*;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

fn department_key(cluster: &Cluster, department: &str) -> SigningKey {
    let pem =
        std::fs::read_to_string(cluster.certs().join(department).join("signing.key")).unwrap();
    SigningKey::from_pkcs8_pem(&pem).unwrap()
}

fn anchor(dataset: &str, record_id: &str) -> Body {
    Body::AnchorRecord(AnchorRecord {
        dataset: dataset.into(),
        record_id: record_id.into(),
        record_hash: Digest::sha256(record_id.as_bytes()).to_vec(),
        schema: "test".into(),
        record_time_ms: 1,
    })
}

async fn subscribe(
    client: &mut NodeServiceClient<Channel>,
    request: SubscribeTransactionsRequest,
) -> tonic::Streaming<SubscribeTransactionsResponse> {
    client
        .subscribe_transactions(request)
        .await
        .unwrap()
        .into_inner()
}

async fn next(
    stream: &mut tonic::Streaming<SubscribeTransactionsResponse>,
) -> CommittedTransaction {
    tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("an event in time")
        .unwrap()
        .expect("the stream goes on")
        .transaction
        .unwrap()
}

fn position(event: &CommittedTransaction) -> (u64, u32) {
    let p = event.position.unwrap();
    (p.height, p.index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_events_resume_after_a_position_without_gap_or_repeat() {
    let cluster = Cluster::start(4).await;
    let mut health = cluster.client(0).await.unwrap();
    let mut tax = cluster.client(1).await.unwrap();
    let health_key = department_key(&cluster, "health");
    let tax_key = department_key(&cluster, "tax");
    let citizen = SigningKey::from_seed([44; 32]);

    // Interleaved: health's anchors in two datasets, tax's, a citizen's.
    let mut expected_health = Vec::new();
    for i in 1..=3u64 {
        let dataset = if i == 2 {
            "health/visits"
        } else {
            "health/vaccinations"
        };
        let id = submit(
            &mut health,
            sign(&health_key, i, anchor(dataset, &format!("h{i}"))),
        )
        .await
        .unwrap();
        committed_height(&mut health, id).await;
        expected_health.push(id);
        let id = submit(
            &mut tax,
            sign(&tax_key, i, anchor("tax/returns", &format!("t{i}"))),
        )
        .await
        .unwrap();
        committed_height(&mut tax, id).await;
    }
    let id = submit(&mut health, sign(&citizen, 1, anchor("test/records", "c1")))
        .await
        .unwrap();
    committed_height(&mut health, id).await;

    // Health's datasets by prefix, from the start: its three, in order.
    let prefix = TransactionFilter {
        datasets: vec!["health/".into()],
        ..Default::default()
    };
    let mut stream = subscribe(
        &mut health,
        SubscribeTransactionsRequest {
            filter: Some(prefix.clone()),
            from_height: 1,
            ..Default::default()
        },
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let event = next(&mut stream).await;
        assert_eq!(event.kind, "anchor_record");
        assert_eq!(event.department, "health");
        assert_eq!(
            event.result.as_ref().unwrap().outcome(),
            govchain_proto::types::v1::TransactionOutcome::Success
        );
        seen.push(event);
    }
    drop(stream);
    // Resume after the second, on another node: exactly the third.
    let mut police = cluster.client(2).await.unwrap();
    let mut resumed = subscribe(
        &mut police,
        SubscribeTransactionsRequest {
            filter: Some(prefix.clone()),
            after: seen[1].position,
            ..Default::default()
        },
    )
    .await;
    let third = next(&mut resumed).await;
    seen.push(third);
    let ids: Vec<Digest> = seen
        .iter()
        .map(|e| Digest::from_slice(&e.transaction_id).unwrap())
        .collect();
    assert_eq!(ids, expected_health, "no gap, no repeat, chain order");
    assert!(position(&seen[0]) < position(&seen[1]) && position(&seen[1]) < position(&seen[2]));

    // Live: an exact dataset and a department, then a new matching commit.
    let new = submit(
        &mut health,
        sign(&health_key, 4, anchor("health/visits", "h4")),
    )
    .await
    .unwrap();
    let height = committed_height(&mut health, new).await;
    let event = next(&mut resumed).await;
    assert_eq!(Digest::from_slice(&event.transaction_id).unwrap(), new);
    assert_eq!(event.position.unwrap().height, height);

    // By signer and kind: only the citizen's.
    let mut by_signer = subscribe(
        &mut tax,
        SubscribeTransactionsRequest {
            filter: Some(TransactionFilter {
                kinds: vec!["anchor_record".into()],
                signers: vec![citizen.public_key().as_bytes().to_vec()],
                ..Default::default()
            }),
            from_height: 1,
            ..Default::default()
        },
    )
    .await;
    let event = next(&mut by_signer).await;
    assert_eq!(Digest::from_slice(&event.transaction_id).unwrap(), id);
    assert_eq!(event.department, "", "a citizen is no department");

    // By department: tax's three.
    let mut by_department = subscribe(
        &mut tax,
        SubscribeTransactionsRequest {
            filter: Some(TransactionFilter {
                departments: vec!["tax".into()],
                ..Default::default()
            }),
            from_height: 1,
            ..Default::default()
        },
    )
    .await;
    for _ in 0..3 {
        assert_eq!(next(&mut by_department).await.department, "tax");
    }

    // A position beyond the node's head (a client that followed a node
    // ahead of this one) waits until the node gets there, then goes on
    // after it.
    let head = cluster.status(0).await.height;
    let mut ahead = subscribe(
        &mut health,
        SubscribeTransactionsRequest {
            after: Some(ChainPosition {
                height: head + 1,
                index: 0,
            }),
            ..Default::default()
        },
    )
    .await;
    let late = SigningKey::from_seed([45; 32]);
    let first = submit(&mut health, sign(&late, 1, anchor("test/late", "l1")))
        .await
        .unwrap();
    let first_height = committed_height(&mut health, first).await;
    let second = submit(&mut health, sign(&late, 2, anchor("test/late", "l2")))
        .await
        .unwrap();
    committed_height(&mut health, second).await;
    // Alone in its block, `first` is at index 0: skipped when its block is
    // head + 1 (the position resumed after), delivered when later.
    let mut expected = Vec::new();
    if first_height > head + 1 {
        expected.push(first);
    }
    expected.push(second);
    for id in expected {
        let event = next(&mut ahead).await;
        assert_eq!(Digest::from_slice(&event.transaction_id).unwrap(), id);
        assert!(position(&event) > (head + 1, 0), "{event:?}");
    }

    // Refusals name the field.
    let status = health
        .subscribe_transactions(SubscribeTransactionsRequest {
            after: Some(ChainPosition {
                height: 0,
                index: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("height 0"), "{status:?}");
    assert_eq!(
        status
            .get_error_details()
            .bad_request()
            .unwrap()
            .field_violations[0]
            .field,
        "after.height"
    );
    let status = health
        .subscribe_transactions(SubscribeTransactionsRequest {
            filter: Some(TransactionFilter {
                kinds: vec!["mint_coins".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("unknown kind"), "{status:?}");

    // The CLI: after the first health event, the next two, as JSON lines.
    let certs = cluster.certs();
    let node = format!("https://127.0.0.1:{}", cluster.nodes[3].port);
    let (h, i) = position(&seen[0]);
    let out = govchain(&[
        "--json",
        "tx",
        "follow",
        "--dataset",
        "health/",
        "--after",
        &format!("{h}:{i}"),
        "--limit",
        "2",
        "--node",
        &node,
        "--ca",
        certs.join("ca.crt").to_str().unwrap(),
        "--cert",
        certs.join("civil/client.crt").to_str().unwrap(),
        "--key",
        certs.join("civil/client.key").to_str().unwrap(),
    ]);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["transaction_id"], expected_health[1].to_hex());
    assert_eq!(lines[1]["transaction_id"], expected_health[2].to_hex());
    assert_eq!(lines[0]["kind"], "anchor_record");
    assert_eq!(
        lines[1]["body"]["anchor_record"]["dataset"],
        "health/vaccinations"
    );
}
