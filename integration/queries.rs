//! History and listings on real nodes: every version of a record, anchors
//! by dataset, department and block time, a signer's transactions; paged
//! with tokens, in chain order, the same on every node; bad requests name
//! their field. The CLI's `record history`, `record list` and `tx list`.

#![allow(clippy::unwrap_used)]

mod support;

use govchain_crypto::{Digest, SigningKey};
use govchain_proto::node::v1::node_service_client::NodeServiceClient;
use govchain_proto::node::v1::*;
use govchain_proto::types::v1::AnchorRecord;
use govchain_proto::types::v1::transaction::Body;
use support::*;
use tonic::transport::Channel;

fn department_key(cluster: &Cluster, department: &str) -> SigningKey {
    let pem =
        std::fs::read_to_string(cluster.certs().join(department).join("signing.key")).unwrap();
    SigningKey::from_pkcs8_pem(&pem).unwrap()
}

fn anchor(dataset: &str, record_id: &str, version: u32) -> Body {
    Body::AnchorRecord(AnchorRecord {
        dataset: dataset.into(),
        record_id: record_id.into(),
        record_hash: Digest::sha256(format!("{record_id} v{version}").as_bytes()).to_vec(),
        schema: "test".into(),
        record_time_ms: u64::from(version),
    })
}

fn ids(entries: &[CommittedTransaction]) -> Vec<Digest> {
    entries
        .iter()
        .map(|e| Digest::from_slice(&e.transaction_id).unwrap())
        .collect()
}

/// Every page of `request`, `page_size` at a time.
async fn all_anchors(
    client: &mut NodeServiceClient<Channel>,
    request: ListAnchorsRequest,
    page_size: u32,
) -> (Vec<CommittedTransaction>, usize) {
    let mut entries = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_anchors(ListAnchorsRequest {
                page_size,
                page_token: token,
                ..request.clone()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        let size = if page_size == 0 {
            100
        } else {
            page_size as usize
        };
        assert!(page.anchors.len() <= size);
        entries.extend(page.anchors);
        if page.next_page_token.is_empty() {
            return (entries, pages);
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_have_a_history_and_anchors_list_by_dataset_department_time_and_signer() {
    let cluster = Cluster::start(4).await;
    let mut health = cluster.client(0).await.unwrap();
    let mut tax = cluster.client(1).await.unwrap();
    let health_key = department_key(&cluster, "health");
    let tax_key = department_key(&cluster, "tax");

    // Three versions of health/reports r1, with other anchors between.
    let mut versions = Vec::new();
    let mut health_all = Vec::new();
    let mut tax_all = Vec::new();
    let mut nonce = 0;
    for version in 1..=3 {
        nonce += 1;
        let id = submit(
            &mut health,
            sign(&health_key, nonce, anchor("health/reports", "r1", version)),
        )
        .await
        .unwrap();
        committed_height(&mut health, id).await;
        versions.push(id);
        health_all.push(id);
        nonce += 1;
        let other = format!("other-{version}");
        let id = submit(
            &mut health,
            sign(&health_key, nonce, anchor("health/reports", &other, 1)),
        )
        .await
        .unwrap();
        committed_height(&mut health, id).await;
        health_all.push(id);
        let id = submit(
            &mut tax,
            sign(
                &tax_key,
                version.into(),
                anchor("tax/returns", "t", version),
            ),
        )
        .await
        .unwrap();
        committed_height(&mut tax, id).await;
        tax_all.push(id);
    }

    // A record's versions, two per page: two pages, oldest first, the
    // same on another node.
    let record = ListAnchorsRequest {
        dataset: "health/reports".into(),
        record_id: "r1".into(),
        ..Default::default()
    };
    let (history, pages) = all_anchors(&mut health, record.clone(), 2).await;
    assert_eq!(ids(&history), versions);
    assert_eq!(pages, 2);
    let mut police = cluster.client(2).await.unwrap();
    let (elsewhere, _) = all_anchors(&mut police, record, 1).await;
    assert_eq!(ids(&elsewhere), versions, "every node indexes alike");
    assert_eq!(history[2].department, "health");

    // A dataset: all six of health's; a department: tax's three.
    let (dataset, _) = all_anchors(
        &mut tax,
        ListAnchorsRequest {
            dataset: "health/reports".into(),
            ..Default::default()
        },
        4,
    )
    .await;
    assert_eq!(ids(&dataset), health_all);
    let (by_tax, _) = all_anchors(
        &mut health,
        ListAnchorsRequest {
            department: "tax".into(),
            ..Default::default()
        },
        0,
    )
    .await;
    assert_eq!(ids(&by_tax), tax_all);

    // Block time: from the second version's block to before the third's.
    let from = history[1].block_timestamp_ms;
    let to = history[2].block_timestamp_ms;
    let (window, _) = all_anchors(
        &mut health,
        ListAnchorsRequest {
            from_time_ms: from,
            to_time_ms: to,
            ..Default::default()
        },
        3,
    )
    .await;
    assert!(!window.is_empty());
    assert!(
        window
            .iter()
            .all(|e| e.block_timestamp_ms >= from && e.block_timestamp_ms < to),
        "inside the window"
    );
    assert_eq!(window[0].transaction_id, history[1].transaction_id);
    assert!(!ids(&window).contains(&versions[2]), "the end is exclusive");
    // A token that would start before the range is not this listing's.
    let first_page = health
        .list_anchors(ListAnchorsRequest {
            from_time_ms: history[0].block_timestamp_ms,
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!first_page.next_page_token.is_empty());
    let status = health
        .list_anchors(ListAnchorsRequest {
            from_time_ms: from,
            to_time_ms: to,
            page_token: first_page.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("page_token"), "{status:?}");

    // A signer's transactions, whatever their kind, in chain order.
    let signed = health
        .list_transactions(ListTransactionsRequest {
            signer: health_key.public_key().as_bytes().to_vec(),
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&signed.transactions), health_all);
    assert!(signed.next_page_token.is_empty());

    // Bad requests.
    for (request, fragment) in [
        (
            ListAnchorsRequest {
                dataset: "health/reports".into(),
                department: "tax".into(),
                ..Default::default()
            },
            "exactly one",
        ),
        (
            ListAnchorsRequest {
                record_id: "r1".into(),
                ..Default::default()
            },
            "exactly one",
        ),
        (
            ListAnchorsRequest {
                dataset: "health/reports".into(),
                page_token: "00ff".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            ListAnchorsRequest {
                dataset: "health/reports".into(),
                page_size: 5_000,
                ..Default::default()
            },
            "PAGE_SIZE_MAX",
        ),
    ] {
        let status = health.list_anchors(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(fragment), "{status:?}");
    }

    // The CLI.
    let flags = |i: usize| {
        let certs = cluster.certs();
        let name = &cluster.nodes[i].name;
        vec![
            "--node".to_owned(),
            format!("https://127.0.0.1:{}", cluster.nodes[i].port),
            "--ca".to_owned(),
            certs.join("ca.crt").display().to_string(),
            "--cert".to_owned(),
            certs.join(name).join("client.crt").display().to_string(),
            "--key".to_owned(),
            certs.join(name).join("client.key").display().to_string(),
        ]
    };
    let run = |args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        all.extend(flags(3));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        serde_json::from_str::<serde_json::Value>(&govchain(&refs)).unwrap()
    };
    let history = run(&[
        "--json",
        "record",
        "history",
        "health/reports",
        "r1",
        "--page-size",
        "1",
        "--all",
    ]);
    let shown: Vec<&str> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["transaction_id"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = versions.iter().map(Digest::to_hex).collect();
    assert_eq!(shown, expected);
    assert_eq!(history["next_page_token"], "");
    let key_file = cluster.certs().join("tax/signing.key");
    let listed = run(&[
        "--json",
        "tx",
        "list",
        "--signing-key",
        key_file.to_str().unwrap(),
    ]);
    assert_eq!(listed["entries"].as_array().unwrap().len(), 3);
    let page = run(&[
        "--json",
        "record",
        "list",
        "--signed-by",
        "tax",
        "--page-size",
        "2",
    ]);
    assert_eq!(page["entries"].as_array().unwrap().len(), 2);
    assert_ne!(page["next_page_token"], "", "a token for the rest");
}
