//! Batched submission on real nodes: `SubmitTransactions` gives each
//! envelope its own result, in order, and `SubmitTransactionStream` answers
//! each batch of a feed in order; bounds are refused by name.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use govchain_crypto::{Digest, SigningKey};
use govchain_proto::node::v1::node_service_client::NodeServiceClient;
use govchain_proto::node::v1::*;
use govchain_proto::types::v1::{ErrorReason, TransactionEnvelope};
use support::*;
use tonic::Code;
use tonic_types::StatusExt as _;

fn key(i: u32) -> SigningKey {
    let mut seed = [7u8; 32];
    seed[..4].copy_from_slice(&i.to_be_bytes());
    SigningKey::from_seed(seed)
}

fn anchors(from: u32, count: u32) -> Vec<TransactionEnvelope> {
    (from..from + count)
        .map(|i| sign(&key(i), 1, anchor_body(&format!("batch-{i}"))))
        .collect()
}

async fn wait_committed(
    client: &mut NodeServiceClient<tonic::transport::Channel>,
    ids: &[Vec<u8>],
) {
    for id in ids {
        committed_height(client, Digest::from_slice(id).unwrap()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_gives_each_envelope_its_own_result_in_order() {
    let cluster = Cluster::start(4).await;
    // Node 1 is tax's; its client certificate is tax's.
    let mut client = cluster.client(1).await.unwrap();

    let mut envelopes = anchors(0, 300);
    // 10: a flipped signature bit; 20: another chain; 30: the same
    // envelope as 29; 40: signed with health's department key but sent
    // with tax's certificate; 50: a payload that is not a transaction.
    envelopes[10].signature[0] ^= 1;
    envelopes[20] = {
        let mut e = sign(&key(20), 1, anchor_body("batch-20"));
        e.chain_id = "another-chain".into();
        e
    };
    envelopes[30] = envelopes[29].clone();
    let health_key = govchain_crypto::SigningKey::from_pkcs8_pem(
        &std::fs::read_to_string(cluster.certs().join("health/signing.key")).unwrap(),
    )
    .unwrap();
    envelopes[40] = sign(&health_key, 1, anchor_body("squat"));
    envelopes[50].payload = bytes::Bytes::from_static(&[0xff, 0xff]);
    let expected_ids: Vec<Vec<u8>> = envelopes
        .iter()
        .map(|e| transaction_id(e).to_vec())
        .collect();

    let response = client
        .submit_transactions(SubmitTransactionsRequest {
            envelopes: envelopes.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.results.len(), 300);
    let refused = |i: usize, code: Code, reason: ErrorReason, fragment: &str| {
        let result = &response.results[i];
        assert_eq!(
            Code::from_i32(result.code),
            code,
            "envelope {i}: {result:?}"
        );
        assert_eq!(result.reason(), reason, "envelope {i}: {result:?}");
        assert!(
            result.message.contains(fragment),
            "envelope {i}: {result:?}"
        );
    };
    refused(
        10,
        Code::InvalidArgument,
        ErrorReason::BadSignature,
        "signature",
    );
    refused(
        20,
        Code::InvalidArgument,
        ErrorReason::WrongChain,
        "another-chain",
    );
    refused(
        30,
        Code::AlreadyExists,
        ErrorReason::DuplicateTransaction,
        "",
    );
    refused(
        40,
        Code::PermissionDenied,
        ErrorReason::PermissionDenied,
        "health",
    );
    refused(
        50,
        Code::InvalidArgument,
        ErrorReason::MalformedTransaction,
        "",
    );
    let mut admitted = Vec::new();
    for (i, result) in response.results.iter().enumerate() {
        assert_eq!(
            result.transaction_id, expected_ids[i],
            "results are in request order"
        );
        if ![10, 20, 30, 40, 50].contains(&i) {
            assert_eq!(result.code, 0, "envelope {i}: {result:?}");
            assert!(result.message.is_empty());
            assert_eq!(result.reason(), ErrorReason::Unspecified);
            admitted.push(result.transaction_id.clone());
        }
    }
    assert_eq!(admitted.len(), 295);
    // Every admitted transaction commits, and is found on another node.
    let mut other = cluster.client(3).await.unwrap();
    wait_committed(&mut other, &admitted).await;
    for i in [10usize, 20, 40, 50] {
        let status = other
            .get_transaction(GetTransactionRequest {
                transaction_id: expected_ids[i].clone(),
                prove: false,
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::NotFound,
            "refused envelope {i} is nowhere"
        );
    }

    // Over the count bound: the whole call is refused, naming the bound.
    let status = client
        .submit_transactions(SubmitTransactionsRequest {
            envelopes: anchors(1000, 1025),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("SUBMIT_BATCH_TRANSACTIONS_MAX"),
        "{status:?}"
    );
    // An empty batch is a valid, empty answer.
    let empty = client
        .submit_transactions(SubmitTransactionsRequest { envelopes: vec![] })
        .await
        .unwrap()
        .into_inner();
    assert!(empty.results.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_answers_each_batch_in_order_and_feeds_are_bounded() {
    let cluster = Cluster::start(4).await;
    let mut client = cluster.client(2).await.unwrap();
    let batches: Vec<Vec<TransactionEnvelope>> =
        (0..5).map(|b| anchors(5000 + b * 100, 100)).collect();
    let (sender, receiver) = tokio::sync::mpsc::channel(8);
    let mut responses = client
        .submit_transaction_stream(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    let mut ids = Vec::new();
    for batch in &batches {
        sender
            .send(SubmitTransactionStreamRequest {
                envelopes: batch.clone(),
            })
            .await
            .unwrap();
    }
    for batch in &batches {
        let response = tokio::time::timeout(Duration::from_secs(30), responses.message())
            .await
            .expect("an answer per batch")
            .unwrap()
            .expect("the feed stays open");
        assert_eq!(response.results.len(), batch.len());
        for (result, envelope) in response.results.iter().zip(batch) {
            assert_eq!(result.code, 0, "{result:?}");
            assert_eq!(result.transaction_id, transaction_id(envelope).to_vec());
            ids.push(result.transaction_id.clone());
        }
    }
    // A batch over the bound ends the feed with the bound's name.
    sender
        .send(SubmitTransactionStreamRequest {
            envelopes: anchors(9000, 1025),
        })
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), responses.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("SUBMIT_BATCH_TRANSACTIONS_MAX"));
    wait_committed(&mut client, &ids).await;

    // A message that is not a request, after one that is, ends the feed
    // with INVALID_ARGUMENT and the same structured details as every other
    // refusal (in the trailers, after the first answer).
    let valid = SubmitTransactionStreamRequest {
        envelopes: anchors(9500, 1),
    };
    let mut answers = raw_streaming::<SubmitTransactionStreamResponse>(
        cluster.channel(0).await,
        "/govchain.node.v1.NodeService/SubmitTransactionStream",
        vec![
            prost::Message::encode_to_vec(&valid),
            vec![0xff, 0xff, 0xff],
        ],
    )
    .await
    .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(30), answers.message())
        .await
        .unwrap()
        .unwrap()
        .expect("the valid batch is answered");
    assert_eq!(first.results[0].code, 0, "{first:?}");
    let status = tokio::time::timeout(Duration::from_secs(30), answers.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let info = status
        .get_error_details()
        .error_info()
        .cloned()
        .expect("an ErrorInfo");
    assert_eq!(
        (info.domain.as_str(), info.reason.as_str()),
        ("govchain", "INVALID_REQUEST")
    );

    // A department holds at most 8 feeds open on a node.
    let mut open = Vec::new();
    for _ in 0..8 {
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        let feed = client
            .submit_transaction_stream(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await
            .unwrap();
        open.push((sender, feed));
    }
    let (_sender, receiver) = tokio::sync::mpsc::channel::<SubmitTransactionStreamRequest>(1);
    let status = client
        .submit_transaction_stream(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("FEEDS_PER_DEPARTMENT_MAX"),
        "{status:?}"
    );
    // Closing one frees its place.
    drop(open.pop());
    let freed = eventually(
        "a closed feed to free its place",
        Duration::from_secs(10),
        || {
            let mut client = client.clone();
            async move {
                let (sender, receiver) =
                    tokio::sync::mpsc::channel::<SubmitTransactionStreamRequest>(1);
                let feed = client
                    .submit_transaction_stream(tokio_stream::wrappers::ReceiverStream::new(
                        receiver,
                    ))
                    .await
                    .ok()?;
                Some((sender, feed))
            }
        },
    )
    .await;
    drop(freed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_submit_with_several_envelopes_sends_a_batch_and_reports_each() {
    let cluster = Cluster::start(4).await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("me.key");
    govchain(&["keys", "new", "--out", key.to_str().unwrap()]);
    let mut files = Vec::new();
    let document = dir.path().join("document.txt");
    std::fs::write(&document, b"a record kept at the department").unwrap();
    for (nonce, record) in [(1, "a"), (2, "b"), (3, "c")] {
        let out = dir.path().join(format!("{record}.envelope"));
        govchain(&[
            "record",
            "anchor",
            document.to_str().unwrap(),
            "--dataset",
            "cli-batch",
            "--record-id",
            record,
            "--signing-key",
            key.to_str().unwrap(),
            "--nonce",
            &nonce.to_string(),
            "--chain-id",
            CHAIN,
            "--out",
            out.to_str().unwrap(),
        ]);
        files.push(out);
    }
    // The third file twice: the second copy is refused as a duplicate.
    files.push(files[2].clone());
    let certs = cluster.certs();
    let mut args: Vec<String> = vec!["--json".into(), "tx".into(), "submit".into()];
    for file in &files {
        args.extend(["--envelope".into(), file.display().to_string()]);
    }
    args.extend([
        "--wait".into(),
        "--node".into(),
        format!("https://127.0.0.1:{}", cluster.nodes[0].port),
        "--ca".into(),
        certs.join("ca.crt").display().to_string(),
        "--cert".into(),
        certs.join("health/client.crt").display().to_string(),
        "--key".into(),
        certs.join("health/client.key").display().to_string(),
    ]);
    let output = std::process::Command::new(BIN)
        .args(&args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "one refused: exit 1; {stderr}"
    );
    assert!(stderr.contains("1 of 4 envelopes refused"), "{stderr}");
    let view: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let results = view["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    for (i, result) in results.iter().take(3).enumerate() {
        assert_eq!(result["status"], "admitted", "{result}");
        assert_eq!(result["committed"]["status"], "committed", "{result}");
        assert_eq!(result["committed"]["nonce"], i as u64 + 1, "{result}");
    }
    assert_eq!(results[3]["status"], "already_exists", "{}", results[3]);
    assert_eq!(results[3]["transaction_id"], results[2]["transaction_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_and_wait_and_commit_status_answer_when_blocks_are_durable() {
    let cluster = Cluster::start(4).await;
    let mut client = cluster.client(0).await.unwrap();

    // One transaction, submitted and waited for in one call.
    let envelope = sign(&key(70_000), 1, anchor_body("wait-for-me"));
    let answer = client
        .submit_transaction_and_wait(SubmitTransactionAndWaitRequest {
            envelope: Some(envelope.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .transaction
        .unwrap();
    assert_eq!(answer.transaction_id, transaction_id(&envelope).to_vec());
    assert_eq!(answer.status, TransactionStatus::Committed as i32);
    assert!(answer.block_height > 0);
    // Durable before the answer: the node's own GetTransaction agrees.
    let looked_up = client
        .get_transaction(GetTransactionRequest {
            transaction_id: answer.transaction_id.clone(),
            prove: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(looked_up.block_height, answer.block_height);
    assert_eq!(looked_up.block_hash, answer.block_hash);
    // Admission errors are SubmitTransaction's: the same envelope again.
    let again = client
        .submit_transaction_and_wait(SubmitTransactionAndWaitRequest {
            envelope: Some(envelope),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");

    // Many at once: one answer per id, then the stream ends.
    let batch = anchors(71_000, 50);
    let ids: Vec<Vec<u8>> = batch.iter().map(|e| transaction_id(e).to_vec()).collect();
    let mut follow = cluster.client(2).await.unwrap();
    let mut stream = follow
        .commit_status(CommitStatusRequest {
            transaction_ids: ids.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let submitted = client
        .submit_transactions(SubmitTransactionsRequest { envelopes: batch })
        .await
        .unwrap()
        .into_inner();
    assert!(submitted.results.iter().all(|r| r.code == 0));
    let mut seen = std::collections::BTreeSet::new();
    while let Some(answer) = tokio::time::timeout(Duration::from_secs(60), stream.message())
        .await
        .expect("answers before the node's own bound")
        .unwrap()
    {
        let transaction = answer.transaction.unwrap();
        assert_eq!(transaction.status, TransactionStatus::Committed as i32);
        assert!(seen.insert(transaction.transaction_id), "each id once");
    }
    assert_eq!(
        seen,
        ids.iter().cloned().collect(),
        "every id, then the end"
    );

    // Already committed: answered at once. Never submitted: the deadline
    // ends the stream, naming what is still waiting.
    let unknown = Digest::sha256(b"never submitted").to_vec();
    let mut request = tonic::Request::new(CommitStatusRequest {
        transaction_ids: vec![ids[0].clone(), unknown],
    });
    request.set_timeout(Duration::from_millis(1500));
    let mut stream = follow.commit_status(request).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.transaction.unwrap().transaction_id, ids[0]);
    let end = stream.message().await.unwrap_err();
    assert_eq!(end.code(), Code::DeadlineExceeded, "{end:?}");
    assert!(
        end.message().contains("1 transactions did not commit"),
        "{end:?}"
    );

    // Bounds and malformed ids.
    let status = follow
        .commit_status(CommitStatusRequest {
            transaction_ids: vec![ids[1].clone(), ids[1].clone()],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("repeats"), "{status:?}");
    let status = follow
        .commit_status(CommitStatusRequest {
            transaction_ids: (0..1025u32)
                .map(|i| Digest::sha256(&i.to_be_bytes()).to_vec())
                .collect(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("COMMIT_STATUS_IDS_MAX"),
        "{status:?}"
    );
    let status = follow
        .commit_status(CommitStatusRequest {
            transaction_ids: vec![vec![1, 2, 3]],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("transaction_ids[0]"),
        "{status:?}"
    );
}
