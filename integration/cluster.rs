//! Four real `govchain node` processes with mutual TLS on loopback.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use govchain_crypto::{Digest, SigningKey};
use govchain_proto::consensus::v1::consensus_service_client::ConsensusServiceClient;
use govchain_proto::consensus::v1::{
    ConsensusMessage, Prepare, StreamRequest, consensus_message, stream_request,
};
use govchain_proto::node::v1::*;
use support::*;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_types::StatusExt as _;

fn signer(i: u8) -> SigningKey {
    SigningKey::from_seed([i; 32])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_order_a_thousand_transactions_identically() {
    let cluster = Cluster::start(4).await;
    const CLIENTS: usize = 4;
    const PER_CLIENT: u64 = 250;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut client = cluster.client(c).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let key = signer(c as u8 + 1);
            let mut ids = Vec::new();
            for nonce in 1..=PER_CLIENT {
                let envelope = sign(
                    &key,
                    nonce,
                    anchor_body(&format!("client{c}-record{nonce}")),
                );
                ids.push(submit(&mut client, envelope).await.unwrap());
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.unwrap());
    }
    assert_eq!(ids.len(), CLIENTS * PER_CLIENT as usize);

    // Every transaction is retrievable from every node, at the same height.
    for id in &ids {
        let mut heights = Vec::new();
        for i in 0..4 {
            let mut client = cluster.client(i).await.unwrap();
            heights.push(committed_height(&mut client, *id).await);
        }
        assert!(
            heights.windows(2).all(|w| w[0] == w[1]),
            "transaction {id} at heights {heights:?}"
        );
    }
    // And every node has the same head.
    let statuses = eventually(
        "all nodes to reach the same height",
        Duration::from_secs(30),
        || async {
            let mut statuses = Vec::new();
            for i in 0..4 {
                statuses.push(cluster.status(i).await);
            }
            statuses
                .windows(2)
                .all(|w| w[0].height == w[1].height)
                .then_some(statuses)
        },
    )
    .await;
    for status in &statuses {
        assert_eq!(
            status.head_hash, statuses[0].head_hash,
            "node {} has another head",
            status.node
        );
        assert_eq!(status.state_root, statuses[0].state_root);
    }
    // Blocks are hash-chained and carry a quorum certificate.
    let mut client = cluster.client(2).await.unwrap();
    let mut parent = statuses[0].genesis_hash.clone();
    for height in 1..=statuses[0].height {
        let block = client
            .get_block(GetBlockRequest {
                selector: Some(get_block_request::Selector::Height(height)),
            })
            .await
            .unwrap();
        let block = block.into_inner().block.unwrap();
        let header = block.header.unwrap();
        assert_eq!(
            header.parent_hash, parent,
            "block {height} does not link to its parent"
        );
        assert!(block.certificate.unwrap().signatures.len() >= 3);
        parent = block.block_hash;
    }
    assert_eq!(parent, statuses[0].head_hash);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_transactions_get_precise_status_codes() {
    let cluster = Cluster::start(4).await;
    let mut client = cluster.client(1).await.unwrap();
    let key = signer(9);

    // `latest = false` selects nothing; it is not "the latest".
    let status = client
        .get_block(GetBlockRequest {
            selector: Some(get_block_request::Selector::Latest(false)),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("latest = false"), "{status:?}");

    let mut tampered = sign(&key, 1, anchor_body("r1"));
    tampered.signature[0] ^= 1;
    let status = submit(&mut client, tampered).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("signature"),
        "{}",
        status.message()
    );

    let mut wrong_chain = sign(&key, 1, anchor_body("r1"));
    wrong_chain.chain_id = "another-chain".into();
    let status = submit(&mut client, wrong_chain).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("another-chain"),
        "{}",
        status.message()
    );

    let huge = sign_payload(&key, 1, Bytes::from(vec![7u8; 10 * 1024 * 1024]));
    let status = submit(&mut client, huge).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("limit"), "{}", status.message());

    let garbage = govchain_proto::types::v1::TransactionEnvelope {
        payload: Bytes::from_static(&[0xff, 0xff, 0xff]),
        ..sign(&key, 1, anchor_body("r1"))
    };
    let status = submit(&mut client, garbage).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(reason(&status), "MALFORMED_TRANSACTION", "{status:?}");

    // Many submissions at once reach admission together and are verified
    // as a batch; forged ones among them (another signer's well-formed
    // signature) must still be told apart one by one.
    let mut tasks = Vec::new();
    for i in 0..96u8 {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let key = signer(100 + i);
            let mut envelope = sign(&key, 1, anchor_body(&format!("batch-{i}")));
            let forged = i % 5 == 3;
            if forged {
                envelope.signature = sign(&signer(99), 1, anchor_body("other")).signature;
            }
            (forged, submit(&mut client, envelope).await)
        }));
    }
    let mut admitted = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (false, Ok(id)) => admitted.push(id),
            (true, Err(status)) => {
                assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
                assert!(status.message().contains("signature"), "{status:?}");
                assert_eq!(reason(&status), "BAD_SIGNATURE", "{status:?}");
                let details = status.get_error_details();
                let violations = &details.bad_request().unwrap().field_violations;
                assert_eq!(violations[0].field, "envelope.signature");
            }
            (forged, verdict) => panic!("forged {forged}: {verdict:?}"),
        }
    }
    assert_eq!(admitted.len(), 96 - 19);
    for id in admitted {
        committed_height(&mut client, id).await;
    }

    let first = sign(&key, 1, anchor_body("r1"));
    let id = submit(&mut client, first.clone()).await.unwrap();
    committed_height(&mut client, id).await;
    // The same transaction again: a replay.
    let status = submit(&mut client, first).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert_eq!(reason(&status), "DUPLICATE_TRANSACTION", "{status:?}");
    // Another transaction with the used nonce: stale.
    let status = submit(&mut client, sign(&key, 1, anchor_body("r2")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("nonce"), "{}", status.message());
    // For programs: the reason, the committed nonce and the signer.
    let details = status.get_error_details();
    let info = details.error_info().unwrap();
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("NONCE_USED", "govchain")
    );
    assert_eq!(info.metadata["committed_nonce"], "1");
    let violation = &details.precondition_failure().unwrap().violations[0];
    assert_eq!(violation.r#type, "NONCE");
    assert_eq!(violation.subject, key.public_key().to_hex());
    // Unknown transaction and block.
    let status = client
        .get_transaction(GetTransactionRequest {
            transaction_id: vec![0; 32],
            prove: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status), "NOT_FOUND");
    let status = client
        .get_block(GetBlockRequest {
            selector: Some(get_block_request::Selector::Height(1_000_000)),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = client
        .get_transaction(GetTransactionRequest {
            transaction_id: vec![1, 2],
            prove: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status.get_error_details();
    assert_eq!(details.error_info().unwrap().reason, "INVALID_REQUEST");
    assert_eq!(
        details.bad_request().unwrap().field_violations[0].field,
        "transaction_id"
    );
}

/// The `ErrorInfo` reason a node's error status carries.
fn reason(status: &tonic::Status) -> String {
    let info = status.get_error_details().error_info().cloned();
    assert_eq!(
        info.as_ref().map(|i| i.domain.as_str()),
        Some("govchain"),
        "{status:?}"
    );
    info.unwrap().reason
}

/// `err` and every error in its source chain, outermost first.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut next = Some(err);
    while let Some(err) = next {
        parts.push(err.to_string());
        next = err.source();
    }
    parts.join(": ")
}

/// The lines of node `i`'s log in which its TLS server says why a
/// handshake failed (see [`NODE_LOG_FILTER`]).
fn tls_refusals(cluster: &Cluster, i: usize) -> Vec<String> {
    std::fs::read_to_string(&cluster.nodes[i].log)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("tls accept error"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_and_impersonating_certificates_are_refused() {
    let cluster = Cluster::start(4).await;
    let port = cluster.nodes[0].port;
    let ca = cluster.certs().join("ca.crt");
    // The node is up and serves a client certificate of its own CA, so a
    // failure below is not an unreachable node.
    let own = cluster.certs().join("health");
    let served = connect(port, &ca, &own.join("client.crt"), &own.join("client.key"))
        .await
        .unwrap()
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(served.node, "health");

    // A client certificate from another consortium's CA: the node's TLS
    // server refuses the handshake, because of that certificate's issuer.
    let foreign = tempfile::tempdir().unwrap();
    govchain(&[
        "certs",
        "init",
        "--out",
        foreign.path().to_str().unwrap(),
        "--departments",
        "health",
    ]);
    let dept = foreign.path().join("health");
    let earlier = tls_refusals(&cluster, 0).len();
    let refused = async {
        let mut client = connect(
            port,
            &ca,
            &dept.join("client.crt"),
            &dept.join("client.key"),
        )
        .await?;
        Ok::<_, Box<dyn std::error::Error>>(client.get_status(GetStatusRequest {}).await?)
    }
    .await;
    let Err(err) = refused else {
        panic!("a foreign-CA certificate was accepted");
    };
    // The client reached the node, and the transport failed: no refused
    // connection or timeout, and no gRPC status from a service either. The
    // client cannot name the reason: in TLS 1.3 the server judges the
    // client's certificate after the client's side of the handshake is
    // done, so the client reads the server's alert (unknown CA), or finds
    // the connection closed or its pipe broken, depending on timing.
    let chain = error_chain(err.as_ref());
    for unreachable in ["refused", "timed out", "deadline"] {
        assert!(
            !chain.contains(unreachable),
            "the node was not reached ({unreachable}): {chain}"
        );
    }
    assert!(
        chain.contains("transport error"),
        "not a failed connection: {chain}"
    );
    // The node names the reason: its TLS server refused the handshake
    // because the certificate's issuer is not the consortium CA.
    let refusals = eventually(
        "the node to log why it refused the handshake",
        Duration::from_secs(10),
        || {
            let lines = tls_refusals(&cluster, 0);
            async move { (lines.len() > earlier).then(|| lines[earlier..].to_vec()) }
        },
    )
    .await;
    for refusal in &refusals {
        assert!(
            refusal.contains("invalid peer certificate: UnknownIssuer"),
            "a handshake failed for another reason than the foreign CA: {refusal}"
        );
    }

    // Department tax's node certificate, on a stream to health, sending a
    // message that claims to come from police (signed with police's key).
    let certs = cluster.certs();
    let tax = certs.join("tax");
    let channel = Endpoint::from_shared(format!("https://127.0.0.1:{}", cluster.nodes[0].port))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(
                    std::fs::read(certs.join("ca.crt")).unwrap(),
                ))
                .identity(Identity::from_pem(
                    std::fs::read(tax.join("node.crt")).unwrap(),
                    std::fs::read(tax.join("node.key")).unwrap(),
                )),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let police_key = SigningKey::from_pkcs8_pem(
        &std::fs::read_to_string(certs.join("police/consensus.key")).unwrap(),
    )
    .unwrap();
    let body = govchain_pbft::Body::Prepare {
        view: 0,
        seq: 1,
        digest: Digest::default(),
    };
    let signed = govchain_pbft::SignedMessage::sign(CHAIN, 2, &police_key, body);
    let message = StreamRequest {
        kind: Some(stream_request::Kind::Consensus(ConsensusMessage {
            sender_index: 2,
            signature: signed.signature.to_vec(),
            body: Some(consensus_message::Body::Prepare(Prepare {
                view: 0,
                seq: 1,
                digest: vec![0; 32],
            })),
        })),
    };
    let status = ConsensusServiceClient::new(channel.clone())
        .stream(tokio_stream::iter(vec![message]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("police"), "{}", status.message());

    // A department client certificate may not speak for a validator at all.
    let health = certs.join("health");
    let client_channel =
        Endpoint::from_shared(format!("https://127.0.0.1:{}", cluster.nodes[1].port))
            .unwrap()
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(
                        std::fs::read(certs.join("ca.crt")).unwrap(),
                    ))
                    .identity(Identity::from_pem(
                        std::fs::read(health.join("client.crt")).unwrap(),
                        std::fs::read(health.join("client.key")).unwrap(),
                    )),
            )
            .unwrap()
            .connect()
            .await
            .unwrap();
    let status = ConsensusServiceClient::new(client_channel)
        .stream(tokio_stream::iter(Vec::<StreamRequest>::new()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_while_committing_reopens_with_a_prefix() {
    let mut cluster = Cluster::start(4).await;
    let key = signer(3);
    let mut client = cluster.client(0).await.unwrap();
    // Keep committing, and kill -9 a backup in the middle of it.
    let mut last = None;
    for nonce in 1..=150u64 {
        last = Some(
            submit(
                &mut client,
                sign(&key, nonce, anchor_body(&format!("k{nonce}"))),
            )
            .await
            .unwrap(),
        );
        if nonce == 100 {
            cluster.kill_node(3);
        }
    }
    committed_height(&mut client, last.unwrap()).await;
    // The ledger of the killed node passes a full check while it is down.
    let data_dir = cluster.nodes[3].data_dir.clone();
    let genesis = cluster.certs().join("genesis.json");
    let report = govchain(&[
        "ledger",
        "verify",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--genesis",
        genesis.to_str().unwrap(),
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    // Restarted on the same data, it serves a prefix of the others' chain.
    cluster.start_node(3);
    let restarted = eventually(
        "the killed node to serve again",
        Duration::from_secs(30),
        || async {
            let mut client = cluster.client(3).await.ok()?;
            Some(
                client
                    .get_status(GetStatusRequest {})
                    .await
                    .ok()?
                    .into_inner(),
            )
        },
    )
    .await;
    assert!(restarted.height > 0, "the killed node had committed blocks");
    let mut reference = cluster.client(1).await.unwrap();
    let block = reference
        .get_block(GetBlockRequest {
            selector: Some(get_block_request::Selector::Height(restarted.height)),
        })
        .await
        .unwrap()
        .into_inner()
        .block
        .unwrap();
    assert_eq!(
        block.block_hash, restarted.head_hash,
        "restarted node's head is not on the others' chain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_malformed_requests_and_sigterm() {
    let mut cluster = Cluster::start(4).await;
    let channel = cluster.channel(0).await;

    // gRPC health.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let request = tonic_health::pb::HealthCheckRequest {
        service: "govchain.node.v1.NodeService".into(),
    };
    let response = health.check(request).await.unwrap().into_inner();
    assert_eq!(
        response.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Reflection, in the v1alpha dialect grpcurl speaks and in v1.
    use tonic_reflection::pb::v1alpha;
    let mut reflection =
        v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("unexpected reflection answer {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "govchain.node.v1.NodeService",
        "govchain.consensus.v1.ConsensusService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    use tonic_reflection::pb::v1;
    let mut reflection = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                "govchain.node.v1.NodeService".into(),
            ),
        ),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    assert!(
        matches!(response.message_response, Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
        "{response:?}"
    );

    // Bytes that are not a protobuf message: INVALID_ARGUMENT, and the node
    // keeps serving.
    let status = raw_unary::<SubmitTransactionResponse>(
        channel.clone(),
        "/govchain.node.v1.NodeService/SubmitTransaction",
        vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("malformed protobuf"),
        "{}",
        status.message()
    );
    assert_eq!(cluster.status(0).await.node, "health");

    // SIGTERM: the node stops cleanly and promptly.
    let exit = cluster.terminate_node(3).await;
    assert!(
        exit.success(),
        "node exited with {exit:?}: {}",
        cluster.log_tail(3)
    );
    assert!(
        cluster.log_tail(3).contains("stopped"),
        "{}",
        cluster.log_tail(3)
    );
}
