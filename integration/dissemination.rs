//! Batched dissemination on real nodes: proposals name batches by digest,
//! a backup that lacks a named batch fetches it, and a hostile batch is
//! refused whole with its reason.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use govchain_crypto::{Digest, SigningKey};
use govchain_proto::consensus::v1::consensus_service_client::ConsensusServiceClient;
use govchain_proto::consensus::v1::stream_request::Kind;
use govchain_proto::consensus::v1::{StreamRequest, TransactionBatch};
use govchain_proto::types::v1::TransactionEnvelope;
use support::*;

const LONG: Duration = Duration::from_secs(60);

/// The digest a batch of `envelopes` has (`exec::batch_digest`).
fn digest_of(envelopes: &[TransactionEnvelope]) -> Digest {
    let ids: Vec<Digest> = envelopes.iter().map(transaction_id).collect();
    govchain_exec::batch_digest(
        ids.iter()
            .zip(envelopes)
            .map(|(id, e)| (id, e.signature.as_slice())),
    )
}

fn batch(envelopes: Vec<TransactionEnvelope>, digest: Digest) -> StreamRequest {
    StreamRequest {
        kind: Some(Kind::Transactions(TransactionBatch {
            transactions: envelopes,
            trace_context: Default::default(),
            digest: digest.to_vec(),
        })),
    }
}

/// Sends `messages` to node `to` on a consensus stream authenticated as
/// validator `as_validator`, as that validator's node would.
async fn send_as(cluster: &Cluster, to: usize, as_validator: usize, messages: Vec<StreamRequest>) {
    let name = cluster.nodes[as_validator].name.clone();
    let mut client = ConsensusServiceClient::new(cluster.peer_channel_as(to, &name).await)
        .max_encoding_message_size(64 << 20);
    let accepted = client
        .stream(tokio_stream::iter(messages.clone()))
        .await
        .unwrap()
        .into_inner()
        .messages_accepted;
    assert_eq!(accepted, messages.len() as u64);
}

fn log_of(cluster: &Cluster, i: usize) -> String {
    std::fs::read_to_string(&cluster.nodes[i].log).unwrap()
}

/// Validator 3 is down and its certificate speaks for it: it hands a batch
/// to the primary alone. The primary proposes the batch's transaction by
/// reference; the two other live backups never received the batch, and a
/// quorum (3 of 4) needs both, so the transaction commits only if both
/// fetched the batch from a holder. Then hostile batches on the same
/// stream are refused whole, each with its reason in the primary's log,
/// and none of their transactions is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_fetches_a_batch_it_lacks_and_hostile_batches_are_refused() {
    let mut cluster = Cluster::start(4).await;
    let speaker = 3;
    cluster.kill_node(speaker);
    let primary = cluster.primary(0).await;
    assert_ne!(primary, speaker, "validator 3 is not the first primary");
    let backups: Vec<usize> = (0..3).filter(|i| *i != primary).collect();

    let key = SigningKey::from_seed([41; 32]);
    let envelopes = vec![
        sign(&key, 1, anchor_body("by-reference-1")),
        sign(&key, 2, anchor_body("by-reference-2")),
    ];
    let digest = digest_of(&envelopes);
    send_as(
        &cluster,
        primary,
        speaker,
        vec![batch(envelopes.clone(), digest)],
    )
    .await;
    let mut client = cluster.client(primary).await.unwrap();
    let last = transaction_id(&envelopes[1]);
    let height = committed_height(&mut client, last).await;
    cluster.wait_agree(&[0, 1, 2], height, LONG).await;
    for &backup in &backups {
        let mut client = cluster.client(backup).await.unwrap();
        assert_eq!(committed_height(&mut client, last).await, height);
        let log = log_of(&cluster, backup);
        assert!(
            log.lines()
                .any(|l| l.contains("fetched batch") && l.contains(&digest.short())),
            "backup {backup} did not fetch batch {}:\n{}",
            digest.short(),
            cluster.log_tail(backup)
        );
    }

    // Hostile batches, each of otherwise admissible transactions.
    let bad_signature = {
        let mut envelope = sign(&key, 3, anchor_body("forged"));
        envelope.signature = SigningKey::from_seed([42; 32])
            .sign(transaction_id(&envelope).as_bytes())
            .to_vec();
        let envelopes = vec![sign(&key, 3, anchor_body("honest")), envelope];
        let digest = digest_of(&envelopes);
        batch(envelopes, digest)
    };
    let wrong_digest = batch(
        vec![sign(&key, 3, anchor_body("mislabelled"))],
        Digest::sha256(b"another batch"),
    );
    let too_many = {
        let envelopes: Vec<_> = (0..4097)
            .map(|i| sign(&key, 3 + i, anchor_body("many")))
            .collect();
        let digest = digest_of(&envelopes);
        batch(envelopes, digest)
    };
    let too_large = {
        let envelopes: Vec<_> = (0..5)
            .map(|i| sign_payload(&key, 3 + i, bytes::Bytes::from(vec![0u8; 1024 * 1024])))
            .collect();
        let digest = digest_of(&envelopes);
        batch(envelopes, digest)
    };
    send_as(
        &cluster,
        primary,
        speaker,
        vec![bad_signature, wrong_digest, too_many, too_large],
    )
    .await;
    let reasons = [
        "transaction 1 of the batch has a bad signature",
        "its transactions hash to",
        "batch holds 4097 transactions, the limit is 4096",
        "bytes of transactions, the limit is 4194304",
    ];
    let refusals = eventually("the four refusals in the log", LONG, || async {
        let refusals: Vec<String> = log_of(&cluster, primary)
            .lines()
            .filter(|l| l.contains("refused transaction batch"))
            .map(str::to_owned)
            .collect();
        (refusals.len() >= reasons.len()).then_some(refusals)
    })
    .await;
    for reason in reasons {
        assert!(
            refusals.iter().any(|l| l.contains(reason)),
            "no refusal says {reason:?}:\n{}",
            refusals.join("\n")
        );
    }
    // Nothing of a refused batch entered the mempool, not even the honest
    // transaction beside the forged one.
    let status = cluster.status(primary).await;
    assert_eq!(status.mempool_transactions, 0, "{status:?}");
    cluster.assert_no_fork(&[0, 1, 2]).await;
}
