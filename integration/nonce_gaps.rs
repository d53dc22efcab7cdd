//! The nonce rule on real nodes: `GetAccount.next_nonce` is the nonce to
//! use and `parked` shows a gap; a transaction waiting behind the gap
//! longer than `mempool.parked_ttl_ms` is dropped, and `GetTransaction`,
//! `CommitStatus` and the CLI say so with the missing nonce; it can be
//! submitted again once the gap is filled.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use govchain_crypto::SigningKey;
use govchain_node::config::NodeFile;
use govchain_proto::node::v1::node_service_client::NodeServiceClient;
use govchain_proto::node::v1::*;
use support::*;
use tonic::transport::Channel;

/// How long node 0 lets a transaction wait behind a gap in this test.
const PARKED_TTL_MS: u64 = 1_500;

async fn account(client: &mut NodeServiceClient<Channel>, key: &SigningKey) -> GetAccountResponse {
    client
        .get_account(GetAccountRequest {
            public_key: key.public_key().as_bytes().to_vec(),
            prove: false,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn submit_and_wait(
    client: &mut NodeServiceClient<Channel>,
    envelope: govchain_proto::types::v1::TransactionEnvelope,
) -> GetTransactionResponse {
    let mut request = tonic::Request::new(SubmitTransactionAndWaitRequest {
        envelope: Some(envelope),
    });
    request.set_timeout(Duration::from_secs(30));
    client
        .submit_transaction_and_wait(request)
        .await
        .unwrap()
        .into_inner()
        .transaction
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_behind_a_nonce_gap_is_dropped_and_can_be_sent_again() {
    let mut cluster = Cluster::start(4).await;
    // Node 0 with a short parked time to live.
    cluster.kill_node(0);
    let config = cluster.nodes[0].config.clone();
    let mut file = NodeFile::load(&config).unwrap();
    file.mempool.parked_ttl_ms = PARKED_TTL_MS;
    file.save(&config).unwrap();
    cluster.start_node(0);
    cluster.wait_ready(0).await;
    let mut client = cluster.client(0).await.unwrap();

    let key = SigningKey::from_seed([61; 32]);
    let first = submit_and_wait(&mut client, sign(&key, 1, anchor_body("gap-1"))).await;
    assert_eq!(first.status(), TransactionStatus::Committed);
    let fresh = account(&mut client, &key).await;
    assert_eq!(
        (fresh.committed_nonce, fresh.next_nonce, fresh.parked),
        (1, 2, 0)
    );

    // Nonce 3 while 2 is missing: admitted, parked, visible as a gap.
    let parked = sign(&key, 3, anchor_body("gap-3"));
    let parked_id = submit(&mut client, parked.clone()).await.unwrap();
    let gap = account(&mut client, &key).await;
    assert_eq!(
        (
            gap.committed_nonce,
            gap.next_nonce,
            gap.parked,
            gap.pending_nonce
        ),
        (1, 2, 1, 3),
        "next_nonce names the missing nonce, parked counts what waits behind it"
    );

    // CommitStatus follows it to its end: dropped, naming the gap.
    let mut request = tonic::Request::new(CommitStatusRequest {
        transaction_ids: vec![parked_id.to_vec()],
    });
    request.set_timeout(Duration::from_secs(30));
    let mut stream = client.commit_status(request).await.unwrap().into_inner();
    let answer = stream
        .message()
        .await
        .unwrap()
        .unwrap()
        .transaction
        .unwrap();
    assert_eq!(answer.status(), TransactionStatus::Dropped, "{answer:?}");
    assert!(
        answer
            .drop_reason
            .contains("nonce 2 of the signer never arrived"),
        "{}",
        answer.drop_reason
    );
    assert!(
        stream.message().await.unwrap().is_none(),
        "then the stream ends"
    );

    let read = client
        .get_transaction(GetTransactionRequest {
            transaction_id: parked_id.to_vec(),
            prove: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.status(), TransactionStatus::Dropped);
    assert_eq!(read.drop_reason, answer.drop_reason);
    let after = account(&mut client, &key).await;
    assert_eq!((after.next_nonce, after.parked), (2, 0), "the gap is gone");

    // The CLI shows it as dropped, with the reason.
    let certs = cluster.certs();
    let node = format!("https://127.0.0.1:{}", cluster.nodes[0].port);
    let shown = govchain(&[
        "--json",
        "tx",
        "get",
        &parked_id.to_hex(),
        "--node",
        &node,
        "--ca",
        certs.join("ca.crt").to_str().unwrap(),
        "--cert",
        certs.join("health/client.crt").to_str().unwrap(),
        "--key",
        certs.join("health/client.key").to_str().unwrap(),
    ]);
    let view: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(view["status"], "dropped", "{view}");
    assert!(
        view["drop_reason"]
            .as_str()
            .unwrap()
            .contains("nonce 2 of the signer never arrived"),
        "{view}"
    );

    // Fill the gap, then send the dropped one again: both commit in order.
    let second = submit_and_wait(&mut client, sign(&key, 2, anchor_body("gap-2"))).await;
    // The other validators still hold their forwarded copy (their own time
    // to live), so after a view change one of them may have ordered it
    // already: then the node refuses it as committed, which is the same end.
    let mut request = tonic::Request::new(SubmitTransactionAndWaitRequest {
        envelope: Some(parked),
    });
    request.set_timeout(Duration::from_secs(30));
    let again = match client.submit_transaction_and_wait(request).await {
        Ok(response) => response.into_inner().transaction.unwrap(),
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
            assert!(status.message().contains("committed"), "{status:?}");
            client
                .get_transaction(GetTransactionRequest {
                    transaction_id: parked_id.to_vec(),
                    prove: false,
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    assert_eq!(again.status(), TransactionStatus::Committed);
    assert_eq!(again.transaction_id, parked_id.to_vec());
    assert!(again.block_height >= second.block_height);
    let done = account(&mut client, &key).await;
    assert_eq!((done.committed_nonce, done.next_nonce), (3, 4));
}
