//! Citizen identity over real mTLS between real node processes: the
//! consented, audited read across departments (the holder's node serves the
//! blob to the reader's node), and every refusal of issue 5's "bad input"
//! list with its status code, leaving state unchanged.

#![allow(clippy::unwrap_used)]

mod support;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use govchain_crypto::{Digest, SigningKey};
use govchain_exec::identity::attribute_commitment;
use govchain_exec::identity::disclosure::{CitizenRead, citizen_read_digest};
use govchain_proto::blob::v1::blob_service_client::BlobServiceClient;
use govchain_proto::blob::v1::*;
use govchain_proto::identity::v1::identity_service_client::IdentityServiceClient;
use govchain_proto::identity::v1::*;
use govchain_proto::node::v1::node_service_client::NodeServiceClient;
use govchain_proto::node::v1::*;
use govchain_proto::types::v1::*;
use prost::Message as _;
use support::*;
use tonic::Code;
use tonic::transport::Channel;

const HEALTH: usize = 0;
const TAX: usize = 1;
const POLICE: usize = 2;
const CIVIL: usize = 3;

const PURPOSE: &str = "benefit-eligibility-check";

/// Clients of one node, all with one department's certificate.
struct Clients {
    node: NodeServiceClient<Channel>,
    identity: IdentityServiceClient<Channel>,
    blob: BlobServiceClient<Channel>,
}

async fn clients(cluster: &Cluster, node: usize, department: &str) -> Clients {
    let channel = cluster.channel_as(node, department).await;
    Clients {
        node: NodeServiceClient::new(channel.clone()),
        identity: IdentityServiceClient::new(channel.clone()).max_decoding_message_size(4 << 20),
        blob: BlobServiceClient::new(channel)
            .max_decoding_message_size(4 << 20)
            .max_encoding_message_size(4 << 20),
    }
}

fn signing_key(cluster: &Cluster, department: &str) -> SigningKey {
    let pem =
        std::fs::read_to_string(cluster.certs().join(department).join("signing.key")).unwrap();
    SigningKey::from_pkcs8_pem(&pem).unwrap()
}

async fn next_nonce(node: &mut NodeServiceClient<Channel>, key: &SigningKey) -> u64 {
    node.get_account(GetAccountRequest {
        public_key: key.public_key().as_bytes().to_vec(),
        prove: false,
    })
    .await
    .unwrap()
    .into_inner()
    .pending_nonce
        + 1
}

async fn signed(
    node: &mut NodeServiceClient<Channel>,
    key: &SigningKey,
    body: transaction::Body,
) -> TransactionEnvelope {
    let nonce = next_nonce(node, key).await;
    sign(key, nonce, body)
}

/// Submits and waits for the commit; returns the id and the result.
async fn commit(
    node: &mut NodeServiceClient<Channel>,
    key: &SigningKey,
    body: transaction::Body,
) -> (Digest, TransactionResult) {
    let envelope = signed(node, key, body).await;
    let id = submit(node, envelope).await.unwrap();
    committed_height(node, id).await;
    let result = node
        .get_transaction(GetTransactionRequest {
            transaction_id: id.to_vec(),
            prove: false,
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    (id, result)
}

async fn commit_ok(
    node: &mut NodeServiceClient<Channel>,
    key: &SigningKey,
    body: transaction::Body,
) -> Digest {
    let (id, result) = commit(node, key, body).await;
    assert_eq!(
        result.outcome,
        TransactionOutcome::Success as i32,
        "{}",
        result.error
    );
    id
}

/// Submits a transaction that admission must refuse; returns the status.
async fn refused(
    node: &mut NodeServiceClient<Channel>,
    key: &SigningKey,
    body: transaction::Body,
) -> tonic::Status {
    let envelope = signed(node, key, body).await;
    let before = next_nonce(node, key).await;
    let status = submit(node, envelope)
        .await
        .expect_err("admission should refuse");
    assert_eq!(
        next_nonce(node, key).await,
        before,
        "a refused transaction must not use its nonce"
    );
    status
}

fn assert_status(status: &tonic::Status, code: Code, fragment: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(fragment),
        "{:?} does not mention {fragment:?}",
        status.message()
    );
}

fn seal(value: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let salt = Digest::sha256(value).to_vec();
    let sealed = SealedAttribute {
        salt: salt.clone(),
        media_type: "application/octet-stream".into(),
        value: value.to_vec(),
    };
    (
        sealed.encode_to_vec(),
        attribute_commitment(&salt, value).to_vec(),
    )
}

fn upload_messages(header: UploadHeader, bytes: &[u8]) -> Vec<UploadRequest> {
    let mut messages = vec![UploadRequest {
        header: Some(header),
        data: Bytes::new(),
        finish: false,
    }];
    messages.extend(bytes.chunks(256 * 1024).map(|chunk| UploadRequest {
        header: None,
        data: Bytes::copy_from_slice(chunk),
        finish: false,
    }));
    if let Some(last) = messages.last_mut() {
        last.finish = true;
    }
    messages
}

/// The messages of an upload as the call takes them from a channel,
/// recording, whenever the call asks for the next one before it is there,
/// how many it had taken by then.
struct WatchedStream {
    inner: tokio_stream::wrappers::ReceiverStream<UploadRequest>,
    taken: usize,
    waiting_after: Arc<AtomicUsize>,
}

impl WatchedStream {
    /// The stream, and the number of messages it had handed on the last
    /// time the call found it empty.
    fn new(receiver: tokio::sync::mpsc::Receiver<UploadRequest>) -> (Self, Arc<AtomicUsize>) {
        let waiting_after = Arc::new(AtomicUsize::new(0));
        let stream = Self {
            inner: tokio_stream::wrappers::ReceiverStream::new(receiver),
            taken: 0,
            waiting_after: waiting_after.clone(),
        };
        (stream, waiting_after)
    }
}

impl tokio_stream::Stream for WatchedStream {
    type Item = UploadRequest;

    fn poll_next(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<UploadRequest>> {
        let poll = Pin::new(&mut self.inner).poll_next(context);
        match &poll {
            Poll::Ready(Some(_)) => self.taken += 1,
            Poll::Pending => self.waiting_after.store(self.taken, Ordering::SeqCst),
            Poll::Ready(None) => {}
        }
        poll
    }
}

async fn upload(
    blob: &mut BlobServiceClient<Channel>,
    header: UploadHeader,
    bytes: &[u8],
) -> Result<UploadResponse, tonic::Status> {
    let messages = upload_messages(header, bytes);
    blob.upload(tokio_stream::iter(messages))
        .await
        .map(tonic::Response::into_inner)
}

/// Reassembles a download that starts at `start`; message offsets count
/// from the blob's first byte.
async fn read_stream(
    stream: tonic::Streaming<DownloadResponse>,
    start: u64,
) -> Result<Vec<u8>, tonic::Status> {
    let pieces = tokio_stream::StreamExt::map(stream, |piece| {
        piece.map(|piece| (piece.offset, piece.data))
    });
    reassemble(pieces, start).await
}

/// Joins `(offset, data)` pieces, checking that they arrive in order.
async fn reassemble(
    pieces: impl tokio_stream::Stream<Item = Result<(u64, bytes::Bytes), tonic::Status>>,
    start: u64,
) -> Result<Vec<u8>, tonic::Status> {
    let mut pieces = std::pin::pin!(pieces);
    let mut bytes = Vec::new();
    while let Some(piece) = tokio_stream::StreamExt::next(&mut pieces).await {
        let (offset, data) = piece?;
        assert_eq!(offset, start + bytes.len() as u64, "chunks arrive in order");
        bytes.extend_from_slice(&data);
    }
    Ok(bytes)
}

/// A declaration of `stored`, an upload made for the citizen (so that it
/// carries the holder's receipt), with the given holder and size.
fn declare(
    name: &str,
    stored: &UploadResponse,
    commitment: &[u8],
    holder: &str,
    size: usize,
) -> transaction::Body {
    transaction::Body::DeclareAttribute(DeclareAttribute {
        name: name.into(),
        cid: stored.cid.clone(),
        commitment: commitment.to_vec(),
        holder: holder.into(),
        size_bytes: size as u64,
        holder_receipt: stored.holder_receipt.clone(),
    })
}

/// An upload header asking the node for a receipt for `citizen`.
fn for_citizen(citizen: &SigningKey) -> UploadHeader {
    UploadHeader {
        receipt_for_citizen: citizen.public_key().as_bytes().to_vec(),
        ..UploadHeader::default()
    }
}

fn create_identity() -> transaction::Body {
    transaction::Body::CreateIdentity(CreateIdentity {})
}

/// A download of the whole blob from `offset`, without an access.
fn download_from(cid: &str, offset: u64) -> DownloadRequest {
    DownloadRequest {
        cid: cid.to_owned(),
        offset,
        length: 0,
        access_transaction_id: Vec::new(),
        case_id: Vec::new(),
    }
}

fn consent(department: &str, attributes: &[&str], expires_ms: u64) -> transaction::Body {
    transaction::Body::GrantConsent(GrantConsent {
        department: department.into(),
        attributes: attributes.iter().map(|a| (*a).to_owned()).collect(),
        purpose: PURPOSE.into(),
        expires_ms,
        jurisdiction: "EU".into(),
    })
}

fn access(citizen: &SigningKey, attribute: &str, consent_id: &Digest) -> transaction::Body {
    transaction::Body::RecordAccess(RecordAccess {
        citizen: citizen.public_key().as_bytes().to_vec(),
        attribute: attribute.into(),
        consent_id: consent_id.to_vec(),
        purpose: PURPOSE.into(),
    })
}

async fn read_attribute(
    clients: &mut Clients,
    key: &SigningKey,
    body: transaction::Body,
) -> Result<Vec<u8>, tonic::Status> {
    let envelope = signed(&mut clients.node, key, body).await;
    read_with(clients, envelope).await
}

async fn read_with(
    clients: &mut Clients,
    envelope: TransactionEnvelope,
) -> Result<Vec<u8>, tonic::Status> {
    let stream = clients
        .identity
        .read_attribute(ReadAttributeRequest {
            envelope: Some(envelope),
        })
        .await?
        .into_inner();
    // The same pieces as a download: offset, data, size.
    let pieces = tokio_stream::StreamExt::map(stream, |piece| {
        piece.map(|piece| (piece.offset, piece.data))
    });
    reassemble(pieces, 0).await
}

/// The request time and signature of `signer`'s read request for
/// `citizen`'s record, signed at `request_time_ms`.
fn citizen_signed(
    read: CitizenRead,
    citizen: &SigningKey,
    signer: &SigningKey,
    request_time_ms: u64,
) -> (u64, Vec<u8>) {
    let digest = citizen_read_digest(CHAIN, read, &citizen.public_key(), request_time_ms);
    (request_time_ms, signer.sign(digest.as_bytes()).to_vec())
}

/// A GetIdentity request: as the caller's department, or signed by
/// `signer` at `request_time_ms`.
fn get_identity_request(
    citizen: &SigningKey,
    signed_by: Option<(&SigningKey, u64)>,
) -> GetIdentityRequest {
    let (request_time_ms, citizen_signature) = signed_by.map_or((0, Vec::new()), |(key, at)| {
        citizen_signed(CitizenRead::GetIdentity, citizen, key, at)
    });
    GetIdentityRequest {
        public_key: citizen.public_key().as_bytes().to_vec(),
        did: String::new(),
        request_time_ms,
        citizen_signature,
        login_session: String::new(),
    }
}

/// The identity as the caller's department sees it.
async fn identity_of(
    identity: &mut IdentityServiceClient<Channel>,
    citizen: &SigningKey,
) -> GetIdentityResponse {
    identity
        .get_identity(get_identity_request(citizen, None))
        .await
        .unwrap()
        .into_inner()
}

/// The whole identity, asked with the citizen's signature.
async fn identity_as_citizen(
    identity: &mut IdentityServiceClient<Channel>,
    citizen: &SigningKey,
) -> GetIdentityResponse {
    identity
        .get_identity(get_identity_request(citizen, Some((citizen, now_ms()))))
        .await
        .unwrap()
        .into_inner()
}

/// The citizen's accesses as the caller's department sees them.
async fn accesses(
    identity: &mut IdentityServiceClient<Channel>,
    citizen: &SigningKey,
) -> Vec<AccessRecord> {
    accesses_with(identity, citizen, false).await
}

/// Every access, asked with the citizen's signature.
async fn accesses_as_citizen(
    identity: &mut IdentityServiceClient<Channel>,
    citizen: &SigningKey,
) -> Vec<AccessRecord> {
    accesses_with(identity, citizen, true).await
}

/// The citizen's accesses, read twice: in one default-sized page, and one
/// access per page following the page tokens; both must agree.
async fn accesses_with(
    identity: &mut IdentityServiceClient<Channel>,
    citizen: &SigningKey,
    as_citizen: bool,
) -> Vec<AccessRecord> {
    let (request_time_ms, citizen_signature) = if as_citizen {
        citizen_signed(CitizenRead::ListAccesses, citizen, citizen, now_ms())
    } else {
        (0, Vec::new())
    };
    let request = |page_size, page_token| ListAccessesRequest {
        public_key: Vec::new(),
        did: citizen.public_key().to_did_key(),
        page_size,
        page_token,
        request_time_ms,
        citizen_signature: citizen_signature.clone(),
        login_session: String::new(),
    };
    // The node read from may still be applying the block that holds the
    // latest access (it was submitted through another department's node):
    // compare the two readings once the log holds still between them.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let whole = identity
            .list_accesses(request(0, String::new()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(whole.next_page_token, "", "a few accesses fit one page");
        let mut paged = Vec::new();
        let mut token = String::new();
        loop {
            let page = identity
                .list_accesses(request(1, token))
                .await
                .unwrap()
                .into_inner();
            assert!(page.accesses.len() <= 1);
            paged.extend(page.accesses);
            if page.next_page_token.is_empty() {
                break;
            }
            assert!(paged.len() <= whole.accesses.len() + 1, "pages end");
            token = page.next_page_token;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = identity
            .list_accesses(request(0, String::new()))
            .await
            .unwrap()
            .into_inner();
        if after.accesses == whole.accesses {
            assert_eq!(paged, whole.accesses);
            return whole.accesses;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the access log kept changing"
        );
    }
}

fn now_ms() -> u64 {
    govchain_node::now_ms()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consented_reads_cross_departments_and_every_refusal_is_precise() {
    let cluster = Cluster::start(4).await;
    let citizen = SigningKey::from_seed([42; 32]);
    let stranger = SigningKey::from_seed([43; 32]);
    let (civil_key, tax_key, police_key) = (
        signing_key(&cluster, "civil"),
        signing_key(&cluster, "tax"),
        signing_key(&cluster, "police"),
    );
    // The citizen uses civil's portal; tax reads through its own node.
    let mut civil = clients(&cluster, CIVIL, "civil").await;
    let mut tax = clients(&cluster, TAX, "tax").await;

    // Unknown identity: nothing can be declared, read or listed.
    let photo: Vec<u8> = (0..1_300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (sealed, commitment) = seal(&photo);
    let stored = upload(&mut civil.blob, for_citizen(&citizen), &sealed)
        .await
        .unwrap();
    assert_eq!(stored.size_bytes, sealed.len() as u64);
    let body = declare("photo", &stored, &commitment, "civil", sealed.len());
    let status = refused(&mut civil.node, &citizen, body.clone()).await;
    assert_status(&status, Code::NotFound, "no identity did:key:z6Mk");
    let status = civil
        .identity
        .get_identity(get_identity_request(&citizen, None))
        .await
        .unwrap_err();
    assert_status(&status, Code::NotFound, "no identity");

    commit_ok(&mut civil.node, &citizen, create_identity()).await;
    let status = refused(&mut civil.node, &citizen, create_identity()).await;
    assert_status(&status, Code::AlreadyExists, "already exists");

    // The declaration must go through the holder's node, which must hold
    // the blob with the declared size.
    let status = refused(
        &mut civil.node,
        &citizen,
        declare("photo", &stored, &commitment, "tax", sealed.len()),
    )
    .await;
    assert_status(&status, Code::FailedPrecondition, "names \"tax\" as holder");
    let status = refused(&mut tax.node, &citizen, body.clone()).await;
    assert_status(
        &status,
        Code::FailedPrecondition,
        "names \"civil\" as holder",
    );
    let status = refused(
        &mut civil.node,
        &citizen,
        declare(
            "photo",
            &UploadResponse {
                cid: "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku".into(),
                ..stored.clone()
            },
            &commitment,
            "civil",
            5,
        ),
    )
    .await;
    assert_status(&status, Code::FailedPrecondition, "upload it first");
    let status = refused(
        &mut civil.node,
        &citizen,
        declare("photo", &stored, &commitment, "civil", 7),
    )
    .await;
    assert_status(&status, Code::InvalidArgument, "the declaration says 7");
    commit_ok(&mut civil.node, &citizen, body).await;

    // Attestation: only a department whose genesis role covers the name.
    let attest = transaction::Body::AttestAttribute(AttestAttribute {
        citizen: citizen.public_key().as_bytes().to_vec(),
        name: "photo".into(),
        commitment: commitment.clone(),
        expires_ms: 0,
    });
    let status = refused(&mut tax.node, &tax_key, attest.clone()).await;
    assert_status(&status, Code::PermissionDenied, "may not attest \"photo\"");
    let status = refused(&mut tax.node, &stranger, attest.clone()).await;
    assert_status(
        &status,
        Code::PermissionDenied,
        "not a department's signing key",
    );
    commit_ok(&mut civil.node, &civil_key, attest).await;
    // Civil may attest the photo, so it sees it without a consent.
    let state = identity_of(&mut civil.identity, &citizen).await;
    assert_eq!(state.attributes.len(), 1);
    assert!(state.attributes[0].attested);
    assert_eq!(state.attributes[0].attestations[0].department, "civil");

    // No consent yet: the read is refused, and still ordered, so that the
    // citizen's log shows who tried (first entry below).
    let fake_consent = Digest::sha256(b"no such consent");
    let status = read_attribute(&mut tax, &tax_key, access(&citizen, "photo", &fake_consent))
        .await
        .unwrap_err();
    assert_status(&status, Code::PermissionDenied, "no consent");

    // Consent to tax for the photo; tax reads it through its own node,
    // which fetches it from civil (the holder) and verifies it.
    let consent_id = commit_ok(
        &mut civil.node,
        &citizen,
        consent("tax", &["photo"], now_ms() + 3_600_000),
    )
    .await;
    let first_access = signed(
        &mut tax.node,
        &tax_key,
        access(&citizen, "photo", &consent_id),
    )
    .await;
    let bytes = read_with(&mut tax, first_access.clone()).await.unwrap();
    assert_eq!(bytes, sealed, "the sealed blob arrives intact");
    let opened = SealedAttribute::decode(bytes.as_slice()).unwrap();
    assert_eq!(opened.value, photo);
    // A second read is a second access on the log (and a second page when
    // `accesses` lists one access per page).
    let again = read_attribute(&mut tax, &tax_key, access(&citizen, "photo", &consent_id))
        .await
        .unwrap();
    assert_eq!(again, sealed);
    let log = accesses_as_citizen(&mut civil.identity, &citizen).await;
    assert_eq!(log.len(), 3);
    let (refusal, log) = (&log[0], &log[1..]);
    assert!(refusal.refused, "{refusal:?}");
    assert!(refusal.refusal.contains("no consent"), "{refusal:?}");
    assert_eq!(
        (refusal.department.as_str(), refusal.cid.as_str()),
        ("tax", "")
    );
    assert_eq!((log[0].sequence, log[1].sequence), (2, 3));
    assert!(!log[0].refused && !log[1].refused);
    assert_eq!(
        (
            log[0].department.as_str(),
            log[0].attribute.as_str(),
            log[0].purpose.as_str()
        ),
        ("tax", "photo", PURPOSE)
    );
    assert_eq!(log[0].consent_id, consent_id.to_vec());
    assert_eq!(log[0].cid, stored.cid);

    // The consent does not cover another department, another purpose, or
    // a read through another department's node.
    let mut police = clients(&cluster, POLICE, "police").await;
    let status = read_attribute(
        &mut police,
        &police_key,
        access(&citizen, "photo", &consent_id),
    )
    .await
    .unwrap_err();
    assert_status(&status, Code::PermissionDenied, "is for department \"tax\"");
    let mut wrong_purpose = access(&citizen, "photo", &consent_id);
    if let transaction::Body::RecordAccess(access) = &mut wrong_purpose {
        access.purpose = "marketing".into();
    }
    let status = read_attribute(&mut tax, &tax_key, wrong_purpose)
        .await
        .unwrap_err();
    assert_status(&status, Code::PermissionDenied, "not \"marketing\"");
    let mut tax_via_civil = clients(&cluster, CIVIL, "tax").await;
    let status = read_attribute(
        &mut tax_via_civil,
        &tax_key,
        access(&citizen, "photo", &consent_id),
    )
    .await
    .unwrap_err();
    assert_status(&status, Code::PermissionDenied, "must call its own node");

    // A consent signed by someone else: the stranger's own consent to tax
    // does not open the citizen's data, and only the citizen can revoke.
    commit_ok(&mut civil.node, &stranger, create_identity()).await;
    let strangers_consent = commit_ok(
        &mut civil.node,
        &stranger,
        consent("tax", &["photo"], now_ms() + 3_600_000),
    )
    .await;
    let status = read_attribute(
        &mut tax,
        &tax_key,
        access(&citizen, "photo", &strangers_consent),
    )
    .await
    .unwrap_err();
    assert_status(
        &status,
        Code::PermissionDenied,
        "granted by another citizen",
    );
    let status = refused(
        &mut civil.node,
        &stranger,
        transaction::Body::RevokeConsent(RevokeConsent {
            consent_id: consent_id.to_vec(),
        }),
    )
    .await;
    assert_status(
        &status,
        Code::PermissionDenied,
        "granted by another citizen",
    );

    // The blob itself is not readable without a recorded access of the
    // caller's department.
    let download = |access_transaction_id: Vec<u8>| DownloadRequest {
        cid: stored.cid.clone(),
        offset: 0,
        length: 0,
        access_transaction_id,
        case_id: Vec::new(),
    };
    let status = civil.blob.download(download(Vec::new())).await.unwrap_err();
    assert_status(
        &status,
        Code::PermissionDenied,
        "holds a citizen's attribute",
    );
    // Other spellings of the same CID are refused, not looked up as
    // some other, non-personal blob.
    for spelling in [format!("/ipfs/{}", stored.cid), stored.cid.to_uppercase()] {
        let mut request = download(Vec::new());
        request.cid = spelling.clone();
        let status = tax.blob.download(request).await.unwrap_err();
        assert_status(&status, Code::InvalidArgument, "canonical");
        let status = tax
            .blob
            .stat(StatRequest { cid: spelling })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }
    let status = civil.blob.download(download(Vec::new())).await.unwrap_err();
    assert_status(
        &status,
        Code::PermissionDenied,
        "holds a citizen's attribute",
    );
    let access_id = log[0].transaction_id.clone();
    let status = civil
        .blob
        .download(download(access_id.clone()))
        .await
        .unwrap_err();
    assert_status(
        &status,
        Code::PermissionDenied,
        "recorded by department \"tax\"",
    );
    // With tax's certificate and tax's access, the holder serves a range.
    let mut tax_at_civil = clients(&cluster, CIVIL, "tax").await;
    let mut ranged = download(access_id);
    ranged.offset = 1_000_000;
    ranged.length = 100;
    let range = read_stream(
        tax_at_civil
            .blob
            .download(ranged)
            .await
            .unwrap()
            .into_inner(),
        1_000_000,
    )
    .await
    .unwrap();
    assert_eq!(range, sealed[1_000_000..1_000_100]);

    // Expired consent: valid when granted, refused after its end.
    let short_end_ms = now_ms() + 4_000;
    let short = commit_ok(
        &mut civil.node,
        &citizen,
        consent("tax", &["photo"], short_end_ms),
    )
    .await;
    // Nodes judge expiry by their wall clock, the one `now_ms` reads.
    eventually(
        "the short consent's end to pass",
        Duration::from_secs(10),
        || {
            let passed = now_ms() > short_end_ms;
            async move { passed.then_some(()) }
        },
    )
    .await;
    let status = read_attribute(&mut tax, &tax_key, access(&citizen, "photo", &short))
        .await
        .unwrap_err();
    assert_status(&status, Code::PermissionDenied, "expired");
    let status = refused(
        &mut civil.node,
        &citizen,
        consent("tax", &["photo"], now_ms().saturating_sub(1_000)),
    )
    .await;
    assert_status(
        &status,
        Code::FailedPrecondition,
        "not after the block time",
    );

    // Revocation closes the door; the log keeps the two accesses.
    commit_ok(
        &mut civil.node,
        &citizen,
        transaction::Body::RevokeConsent(RevokeConsent {
            consent_id: consent_id.to_vec(),
        }),
    )
    .await;
    let status = read_attribute(&mut tax, &tax_key, access(&citizen, "photo", &consent_id))
        .await
        .unwrap_err();
    assert_status(&status, Code::PermissionDenied, "revoked");
    // Nor does replaying the access that committed before the revocation.
    let status = read_with(&mut tax, first_access).await.unwrap_err();
    assert_status(&status, Code::PermissionDenied, "revoked");
    // And the revocation closes the download window the access opened.
    let status = tax_at_civil
        .blob
        .download(download(log[0].transaction_id.clone()))
        .await
        .unwrap_err();
    assert_status(&status, Code::PermissionDenied, "revoked");
    // The log holds the two accesses and every refused attempt, in order:
    // who tried, and why they were refused.
    let log = accesses_as_citizen(&mut civil.identity, &citizen).await;
    assert_eq!(log.iter().filter(|a| !a.refused).count(), 2);
    let refusals: Vec<(&str, &str)> = log
        .iter()
        .filter(|a| a.refused)
        .map(|a| (a.department.as_str(), a.refusal.as_str()))
        .collect();
    let expected = [
        ("tax", "no consent"),
        ("police", "is for department \"tax\""),
        ("tax", "not \"marketing\""),
        ("tax", "granted by another citizen"),
        ("tax", "expired"),
        ("tax", "revoked"),
    ];
    assert_eq!(refusals.len(), expected.len(), "{refusals:?}");
    for ((department, reason), (want_department, want_reason)) in refusals.iter().zip(expected) {
        assert_eq!(*department, want_department, "{refusals:?}");
        assert!(
            reason.contains(want_reason),
            "{reason:?} lacks {want_reason:?}"
        );
    }
    let consents = identity_of(&mut tax.identity, &citizen).await.consents;
    assert_eq!(consents.len(), 2);
    assert!(consents[0].revoked);

    // Every node agrees on the resulting state.
    let head = cluster.status(CIVIL).await.height;
    cluster
        .wait_agree(&[HEALTH, TAX, POLICE, CIVIL], head, Duration::from_secs(30))
        .await;
    cluster.assert_no_fork(&[HEALTH, TAX, POLICE, CIVIL]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_refuse_bad_input_and_keep_nothing_half_stored() {
    let cluster = Cluster::start(4).await;
    let mut health = clients(&cluster, HEALTH, "health").await;
    let mut tax = clients(&cluster, TAX, "tax").await;
    let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();

    // Over the request's limit.
    let status = upload(
        &mut health.blob,
        UploadHeader {
            expected_cid: String::new(),
            size_limit_bytes: 1024 * 1024,
            ..UploadHeader::default()
        },
        &data,
    )
    .await
    .unwrap_err();
    assert_status(&status, Code::ResourceExhausted, "over the size limit");

    // Bytes that do not hash to the expected CID.
    let other = upload(&mut tax.blob, UploadHeader::default(), b"other bytes")
        .await
        .unwrap();
    let status = upload(
        &mut health.blob,
        UploadHeader {
            expected_cid: other.cid.clone(),
            ..UploadHeader::default()
        },
        &data,
    )
    .await
    .unwrap_err();
    assert_status(&status, Code::InvalidArgument, &other.cid);

    // No header, a second header, and a CID that is not one.
    let status = health
        .blob
        .upload(tokio_stream::iter(vec![UploadRequest {
            header: None,
            data: Bytes::from_static(b"x"),
            finish: true,
        }]))
        .await
        .unwrap_err();
    assert_status(&status, Code::InvalidArgument, "must carry the header");
    let mut twice = upload_messages(UploadHeader::default(), b"abc");
    twice[1].finish = false;
    twice.push(UploadRequest {
        header: Some(UploadHeader::default()),
        data: Bytes::new(),
        finish: true,
    });
    let status = health
        .blob
        .upload(tokio_stream::iter(twice))
        .await
        .unwrap_err();
    assert_status(&status, Code::InvalidArgument, "only the first");
    let status = health
        .blob
        .stat(StatRequest {
            cid: "not-a-cid".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // An upload cut off mid-stream records nothing: its prefix is not a
    // blob on the node. (Its CID is learned from another node.)
    let prefix = &data[..1024 * 1024];
    let prefix_cid = upload(&mut tax.blob, UploadHeader::default(), prefix)
        .await
        .unwrap()
        .cid;
    assert_eq!(
        health
            .blob
            .stat(StatRequest {
                cid: prefix_cid.clone(),
            })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound,
        "the prefix is not a blob before the cut-off upload"
    );
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let (stream, asked) = WatchedStream::new(receiver);
    let mut cut = health.blob.clone();
    let call = tokio::spawn(async move { cut.upload(stream).await });
    let mut messages = upload_messages(UploadHeader::default(), prefix);
    messages.last_mut().unwrap().finish = false;
    let count = messages.len();
    for message in messages {
        sender.send(message).await.unwrap();
    }
    // The call took every message and came back for another: hyper asks
    // for the next frame only after handing the last one to the HTTP/2
    // stream, so the whole prefix is on its way to the node.
    eventually(
        "the cut-off upload to ask for more after its last message",
        Duration::from_secs(20),
        || {
            let waiting = asked.load(Ordering::SeqCst) == count;
            async move { waiting.then_some(()) }
        },
    )
    .await;
    // The client goes away with its stream still open (the sender lives
    // on until the call is gone), as a crashed uploader would.
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    drop(sender);
    // A stream that ends without `finish` is just as cut off.
    let mut unfinished = upload_messages(UploadHeader::default(), prefix);
    unfinished.last_mut().unwrap().finish = false;
    let status = health
        .blob
        .upload(tokio_stream::iter(unfinished))
        .await
        .unwrap_err();
    assert_status(&status, Code::Aborted, "cut off");
    // This sleep stays on purpose: the abandoned upload must not be
    // recorded late either, and that something does not happen can only
    // be watched for a while; the node reports nothing to wait for.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = health
        .blob
        .stat(StatRequest {
            cid: prefix_cid.clone(),
        })
        .await
        .unwrap_err();
    assert_status(&status, Code::NotFound, "not stored on this node");

    // A good upload, and a resumed download from an offset.
    let stored = upload(&mut health.blob, UploadHeader::default(), &data)
        .await
        .unwrap();
    let stat = health
        .blob
        .stat(StatRequest {
            cid: stored.cid.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stat.size_bytes, stat.personal), (data.len() as u64, false));
    let offset = 1_500_000;
    let request = download_from(&stored.cid, offset);
    let received = read_stream(
        health.blob.download(request).await.unwrap().into_inner(),
        offset,
    )
    .await
    .unwrap();
    assert_eq!(received, data[offset as usize..]);
    // Another department may not read an upload that no attribute names:
    // it could be a citizen's sealed value whose declaration is pending.
    let mut tax_at_health = clients(&cluster, HEALTH, "tax").await;
    let status = tax_at_health
        .blob
        .download(download_from(&stored.cid, 0))
        .await
        .unwrap_err();
    assert_status(
        &status,
        Code::PermissionDenied,
        "is not released to department \"tax\"",
    );
    let status = health
        .blob
        .download(download_from(&stored.cid, data.len() as u64 + 1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange);
}

fn login_signature(citizen: &SigningKey, payload: &str) -> Vec<u8> {
    citizen
        .sign(format!("govchain/login/v1\n{payload}").as_bytes())
        .to_vec()
}

async fn challenge(
    identity: &mut IdentityServiceClient<Channel>,
    attributes: &[&str],
    ttl_seconds: u32,
) -> CreateLoginChallengeResponse {
    identity
        .create_login_challenge(CreateLoginChallengeRequest {
            requested_attributes: attributes.iter().map(|a| (*a).to_owned()).collect(),
            ttl_seconds,
            website: "police.gov.example".into(),
            ..CreateLoginChallengeRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn complete(
    identity: &mut IdentityServiceClient<Channel>,
    citizen: &SigningKey,
    payload: &str,
    signature: Vec<u8>,
) -> Result<CompleteLoginResponse, tonic::Status> {
    identity
        .complete_login(CompleteLoginRequest {
            qr_payload: payload.to_owned(),
            public_key: citizen.public_key().as_bytes().to_vec(),
            signature,
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qr_login_checks_key_attestation_and_consent_and_refuses_replays() {
    let cluster = Cluster::start(4).await;
    let citizen = SigningKey::from_seed([44; 32]);
    let civil_key = signing_key(&cluster, "civil");
    let mut civil = clients(&cluster, CIVIL, "civil").await;
    let mut police = clients(&cluster, POLICE, "police").await;

    // A login for a citizen the chain does not know.
    let fresh = challenge(&mut police.identity, &["name"], 0).await;
    assert!(
        fresh
            .qr_payload
            .starts_with("govchain-login:v1?chain=govchain-test&rp=police&")
    );
    assert!(fresh.qr_svg.contains("<svg"), "{}", &fresh.qr_svg[..40]);
    assert_eq!(fresh.relying_party, "police");
    let signature = login_signature(&citizen, &fresh.qr_payload);
    let status = complete(&mut police.identity, &citizen, &fresh.qr_payload, signature)
        .await
        .unwrap_err();
    assert_status(&status, Code::NotFound, "no identity");

    // The citizen declares a name, civil attests it.
    commit_ok(&mut civil.node, &citizen, create_identity()).await;
    let (sealed, commitment) = seal(b"Ada Lovelace");
    let stored = upload(&mut civil.blob, for_citizen(&citizen), &sealed)
        .await
        .unwrap();
    commit_ok(
        &mut civil.node,
        &citizen,
        declare("name", &stored, &commitment, "civil", sealed.len()),
    )
    .await;

    // Declared but not attested, then attested but not consented.
    let login = challenge(&mut police.identity, &["name"], 0).await;
    let signature = login_signature(&citizen, &login.qr_payload);
    let status = complete(&mut police.identity, &citizen, &login.qr_payload, signature)
        .await
        .unwrap_err();
    assert_status(&status, Code::PermissionDenied, "not attested");
    commit_ok(
        &mut civil.node,
        &civil_key,
        transaction::Body::AttestAttribute(AttestAttribute {
            citizen: citizen.public_key().as_bytes().to_vec(),
            name: "name".into(),
            commitment: commitment.clone(),
            expires_ms: 0,
        }),
    )
    .await;
    let login = challenge(&mut police.identity, &["name"], 0).await;
    let signature = login_signature(&citizen, &login.qr_payload);
    let status = complete(&mut police.identity, &citizen, &login.qr_payload, signature)
        .await
        .unwrap_err();
    assert_status(&status, Code::PermissionDenied, "no valid consent");
    commit_ok(
        &mut civil.node,
        &citizen,
        consent("police", &["name"], now_ms() + 3_600_000),
    )
    .await;

    // A wrong signature, another relying party, a tampered payload.
    let login = challenge(&mut police.identity, &["name"], 0).await;
    let other = SigningKey::from_seed([45; 32]);
    let status = complete(
        &mut police.identity,
        &citizen,
        &login.qr_payload,
        login_signature(&other, &login.qr_payload),
    )
    .await
    .unwrap_err();
    assert_status(&status, Code::Unauthenticated, "does not verify");
    let signature = login_signature(&citizen, &login.qr_payload);
    let mut tax_at_police = clients(&cluster, POLICE, "tax").await;
    let status = complete(
        &mut tax_at_police.identity,
        &citizen,
        &login.qr_payload,
        signature.clone(),
    )
    .await
    .unwrap_err();
    assert_status(&status, Code::PermissionDenied, "only it may complete");
    let tampered = login.qr_payload.replace("attrs=name", "attrs=name,photo");
    let status = complete(
        &mut police.identity,
        &citizen,
        &tampered,
        login_signature(&citizen, &tampered),
    )
    .await
    .unwrap_err();
    assert_status(&status, Code::InvalidArgument, "differs from the challenge");

    // The real login, then its replay.
    let done = complete(
        &mut police.identity,
        &citizen,
        &login.qr_payload,
        signature.clone(),
    )
    .await
    .unwrap();
    assert_eq!(done.did, citizen.public_key().to_did_key());
    assert_eq!(done.relying_party, "police");
    assert_eq!(done.claims.len(), 1);
    assert_eq!(done.claims[0].name, "name");
    assert_eq!(done.claims[0].attested_by, ["civil"]);
    assert_eq!(done.claims[0].commitment, commitment);
    let status = complete(&mut police.identity, &citizen, &login.qr_payload, signature)
        .await
        .unwrap_err();
    assert_status(&status, Code::AlreadyExists, "already used");

    // A challenge is only known to the node that issued it, and expires.
    let login = challenge(&mut police.identity, &["name"], 1).await;
    let signature = login_signature(&citizen, &login.qr_payload);
    let mut police_at_civil = clients(&cluster, CIVIL, "police").await;
    let status = complete(
        &mut police_at_civil.identity,
        &citizen,
        &login.qr_payload,
        signature.clone(),
    )
    .await
    .unwrap_err();
    assert_status(&status, Code::NotFound, "unknown login challenge");
    // The node judges expiry by its wall clock, the one `now_ms` reads.
    eventually(
        "the challenge's end to pass",
        Duration::from_secs(10),
        || {
            let passed = now_ms() > login.expires_ms;
            async move { passed.then_some(()) }
        },
    )
    .await;
    let status = complete(&mut police.identity, &citizen, &login.qr_payload, signature)
        .await
        .unwrap_err();
    assert_status(&status, Code::FailedPrecondition, "expired");

    // Bad requests.
    let status = police
        .identity
        .create_login_challenge(CreateLoginChallengeRequest {
            requested_attributes: vec!["Name".into()],
            ttl_seconds: 0,
            website: String::new(),
            ..CreateLoginChallengeRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = police
        .identity
        .create_login_challenge(CreateLoginChallengeRequest {
            requested_attributes: vec!["name".into()],
            ttl_seconds: 3_600,
            website: String::new(),
            ..CreateLoginChallengeRequest::default()
        })
        .await
        .unwrap_err();
    assert_status(&status, Code::InvalidArgument, "over the maximum");
    let status = police
        .identity
        .create_login_challenge(CreateLoginChallengeRequest {
            callback_url: "https://evil.example/cb?next=1".into(),
            ..CreateLoginChallengeRequest::default()
        })
        .await
        .unwrap_err();
    assert_status(&status, Code::InvalidArgument, "callback_url");

    // A web login with account_scope opens a session that reads the
    // citizen's own record at the relying party's node, and nowhere else.
    let web = police
        .identity
        .create_login_challenge(CreateLoginChallengeRequest {
            callback_url: "https://127.0.0.1:8443/login/callback".into(),
            account_scope: true,
            ..CreateLoginChallengeRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        web.qr_payload
            .ends_with("&cb=https://127.0.0.1:8443/login/callback&scope=account"),
        "{}",
        web.qr_payload
    );
    let signature = login_signature(&citizen, &web.qr_payload);
    let opened = complete(&mut police.identity, &citizen, &web.qr_payload, signature)
        .await
        .unwrap();
    assert_eq!(opened.session.len(), 64, "a 256-bit token in hex");
    assert!(opened.session_expires_ms > now_ms() + 14 * 60 * 1000);
    assert!(
        done.session.is_empty(),
        "a login without account_scope opened a session"
    );
    let with_session = |session: &str| GetIdentityRequest {
        public_key: citizen.public_key().as_bytes().to_vec(),
        login_session: session.to_owned(),
        ..GetIdentityRequest::default()
    };
    let own = police
        .identity
        .get_identity(with_session(&opened.session))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.attributes.len(), 1);
    assert!(own.attributes[0].attested);
    assert_eq!(own.consents.len(), 1, "the citizen sees every consent");
    let log = police
        .identity
        .list_accesses(ListAccessesRequest {
            public_key: citizen.public_key().as_bytes().to_vec(),
            login_session: opened.session.clone(),
            ..ListAccessesRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(log.next_page_token, "");
    let status = tax_at_police
        .identity
        .get_identity(with_session(&opened.session))
        .await
        .unwrap_err();
    assert_status(&status, Code::PermissionDenied, "is not");
    let status = police_at_civil
        .identity
        .get_identity(with_session(&opened.session))
        .await
        .unwrap_err();
    assert_status(
        &status,
        Code::Unauthenticated,
        "unknown or expired login session",
    );
    let status = police
        .identity
        .get_identity(with_session(&"0".repeat(64)))
        .await
        .unwrap_err();
    assert_status(
        &status,
        Code::Unauthenticated,
        "unknown or expired login session",
    );
    let mut both = with_session(&opened.session);
    both.request_time_ms = now_ms();
    both.citizen_signature = vec![0; 64];
    let status = police.identity.get_identity(both).await.unwrap_err();
    assert_status(&status, Code::InvalidArgument, "not both");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_removes_only_blobs_nothing_on_chain_references() {
    let mut cluster = Cluster::start(4).await;
    // Collect every second, keeping fresh uploads for one second.
    cluster.terminate_node(CIVIL).await;
    let config = cluster.nodes[CIVIL].config.clone();
    let mut file = govchain_node::NodeFile::load(&config).unwrap();
    file.blobs.gc_interval_secs = 1;
    file.blobs.gc_grace_secs = 1;
    file.save(&config).unwrap();
    cluster.start_node(CIVIL);
    cluster.wait_ready(CIVIL).await;

    let citizen = SigningKey::from_seed([46; 32]);
    let mut civil = clients(&cluster, CIVIL, "civil").await;
    commit_ok(&mut civil.node, &citizen, create_identity()).await;
    let (sealed, commitment) = seal(b"1990-01-01");
    let declared = upload(&mut civil.blob, for_citizen(&citizen), &sealed)
        .await
        .unwrap();
    commit_ok(
        &mut civil.node,
        &citizen,
        declare(
            "date_of_birth",
            &declared,
            &commitment,
            "civil",
            sealed.len(),
        ),
    )
    .await;
    let orphan = upload(&mut civil.blob, UploadHeader::default(), b"never declared")
        .await
        .unwrap();

    let stat_client = civil.blob.clone();
    let stat = |cid: String| {
        let mut blob = stat_client.clone();
        async move { blob.stat(StatRequest { cid }).await }
    };
    eventually(
        "the orphan blob to be collected",
        Duration::from_secs(30),
        || {
            let stat = stat(orphan.cid.clone());
            async move { (stat.await.err()?.code() == Code::NotFound).then_some(()) }
        },
    )
    .await;
    let kept = stat(declared.cid.clone()).await.unwrap().into_inner();
    assert!(kept.personal, "the declared blob is an attribute");
    assert_eq!(kept.size_bytes, sealed.len() as u64);

    // Replacing the attribute releases the old blob.
    let (sealed, commitment) = seal(b"1990-01-02");
    let replacement = upload(&mut civil.blob, for_citizen(&citizen), &sealed)
        .await
        .unwrap();
    commit_ok(
        &mut civil.node,
        &citizen,
        declare(
            "date_of_birth",
            &replacement,
            &commitment,
            "civil",
            sealed.len(),
        ),
    )
    .await;
    // The old value is still personal data: not released, whoever asks.
    let status = civil
        .blob
        .download(download_from(&declared.cid, 0))
        .await
        .unwrap_err();
    assert_status(&status, Code::PermissionDenied, "was replaced");
    eventually(
        "the replaced blob to be collected",
        Duration::from_secs(30),
        || {
            let stat = stat(declared.cid.clone());
            async move { (stat.await.err()?.code() == Code::NotFound).then_some(()) }
        },
    )
    .await;
    assert!(
        stat(replacement.cid.clone())
            .await
            .unwrap()
            .into_inner()
            .personal
    );
}

/// Uploads `value` sealed to `holder`'s node for the citizen, and declares
/// it as the attribute `name`; returns the CID.
async fn declare_value(
    holder: &mut Clients,
    holder_name: &str,
    citizen: &SigningKey,
    name: &str,
    value: &[u8],
) -> String {
    let (sealed, commitment) = seal(value);
    let stored = upload(&mut holder.blob, for_citizen(citizen), &sealed)
        .await
        .unwrap();
    let body = declare(name, &stored, &commitment, holder_name, sealed.len());
    commit_ok(&mut holder.node, citizen, body).await;
    stored.cid
}

fn names(response: &GetIdentityResponse) -> Vec<&str> {
    response
        .attributes
        .iter()
        .map(|state| state.attribute.as_ref().unwrap().name.as_str())
        .collect()
}

fn consent_departments(response: &GetIdentityResponse) -> Vec<&str> {
    response
        .consents
        .iter()
        .map(|consent| consent.department.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_citizens_record_is_disclosed_only_to_the_citizen_and_by_consent() {
    let cluster = Cluster::start(4).await;
    let citizen = SigningKey::from_seed([52; 32]);
    let other = SigningKey::from_seed([53; 32]);
    let (health_key, tax_key) = (
        signing_key(&cluster, "health"),
        signing_key(&cluster, "tax"),
    );
    let mut civil = clients(&cluster, CIVIL, "civil").await;
    let mut health = clients(&cluster, HEALTH, "health").await;
    let mut tax = clients(&cluster, TAX, "tax").await;
    // Health and tax, asking civil's node (the holder) about its blobs.
    let mut health_at_civil = clients(&cluster, CIVIL, "health").await;

    commit_ok(&mut civil.node, &citizen, create_identity()).await;
    let photo_cid = declare_value(&mut civil, "civil", &citizen, "photo", b"a photo").await;
    let address_cid = declare_value(&mut civil, "civil", &citizen, "address", b"1 Main St").await;

    // A department with no consent and no attestation role learns nothing
    // but how to get access.
    let status = health
        .identity
        .get_identity(get_identity_request(&citizen, None))
        .await
        .unwrap_err();
    assert_status(&status, Code::PermissionDenied, "no consent");
    assert_status(&status, Code::PermissionDenied, "citizen_signature");
    // Stat of the citizen's blob answers it exactly as an unknown CID.
    let unknown = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku";
    let stat = |cid: &str| StatRequest { cid: cid.into() };
    let of_unknown = health_at_civil.blob.stat(stat(unknown)).await.unwrap_err();
    let of_photo = health_at_civil
        .blob
        .stat(stat(&photo_cid))
        .await
        .unwrap_err();
    assert_eq!(of_photo.code(), Code::NotFound);
    assert_eq!(
        of_photo.message().replace(&photo_cid, "<cid>"),
        of_unknown.message().replace(unknown, "<cid>"),
        "the same answer as for a blob that is not stored"
    );
    // Download, too, refuses it exactly as a CID nobody uploaded.
    let download = |cid: &str| DownloadRequest {
        cid: cid.into(),
        ..DownloadRequest::default()
    };
    let of_unknown = health_at_civil
        .blob
        .download(download(unknown))
        .await
        .unwrap_err();
    let of_photo = health_at_civil
        .blob
        .download(download(&photo_cid))
        .await
        .unwrap_err();
    assert_eq!(of_photo.code(), of_unknown.code());
    assert_eq!(
        of_photo.message().replace(&photo_cid, "<cid>"),
        of_unknown.message().replace(unknown, "<cid>"),
        "the same refusal as for a blob that is not stored"
    );
    // The holder's department still sees it, as personal.
    let held = civil
        .blob
        .stat(stat(&photo_cid))
        .await
        .unwrap()
        .into_inner();
    assert!(held.personal);

    // A consent to health for the photo shows health the photo only, and
    // only health's consent; a consent to tax stays hidden from health.
    let health_consent = commit_ok(
        &mut civil.node,
        &citizen,
        consent("health", &["photo"], now_ms() + 3_600_000),
    )
    .await;
    let tax_consent = commit_ok(
        &mut civil.node,
        &citizen,
        consent("tax", &["photo", "address"], now_ms() + 3_600_000),
    )
    .await;
    let seen = identity_of(&mut health.identity, &citizen).await;
    assert_eq!(names(&seen), ["photo"]);
    assert_eq!(consent_departments(&seen), ["health"]);
    let stat_photo = health_at_civil
        .blob
        .stat(stat(&photo_cid))
        .await
        .unwrap()
        .into_inner();
    assert!(stat_photo.personal);
    let status = health_at_civil
        .blob
        .stat(stat(&address_cid))
        .await
        .unwrap_err();
    assert_status(&status, Code::NotFound, "not stored on this node");

    // The citizen's signed request sees everything.
    let everything = identity_as_citizen(&mut health.identity, &citizen).await;
    assert_eq!(names(&everything), ["photo", "address"]);
    assert_eq!(consent_departments(&everything), ["health", "tax"]);

    // Each department reads; each sees only its own accesses.
    read_attribute(
        &mut health,
        &health_key,
        access(&citizen, "photo", &health_consent),
    )
    .await
    .unwrap();
    for name in ["photo", "address"] {
        read_attribute(&mut tax, &tax_key, access(&citizen, name, &tax_consent))
            .await
            .unwrap();
    }
    let by_health = accesses(&mut health.identity, &citizen).await;
    assert_eq!(by_health.len(), 1);
    assert_eq!(by_health[0].department, "health");
    let by_tax = accesses(&mut tax.identity, &citizen).await;
    assert_eq!(
        by_tax
            .iter()
            .map(|a| a.attribute.as_str())
            .collect::<Vec<_>>(),
        ["photo", "address"]
    );
    assert!(by_tax.iter().all(|a| a.department == "tax"));
    let mut police = clients(&cluster, POLICE, "police").await;
    assert_eq!(accesses(&mut police.identity, &citizen).await, vec![]);
    let all = accesses_as_citizen(&mut police.identity, &citizen).await;
    assert_eq!(all.len(), 3);

    // A signed request outside the window, or signed by another key, or
    // half given, is refused precisely. `signed_as` is the RPC the citizen
    // signed for, which the request may or may not be.
    let list_signed = |signed_as: CitizenRead, at_ms: u64| {
        let (request_time_ms, citizen_signature) =
            citizen_signed(signed_as, &citizen, &citizen, at_ms);
        ListAccessesRequest {
            public_key: citizen.public_key().as_bytes().to_vec(),
            request_time_ms,
            citizen_signature,
            ..ListAccessesRequest::default()
        }
    };
    let old = now_ms() - 6 * 60 * 1000;
    let status = health
        .identity
        .get_identity(get_identity_request(&citizen, Some((&citizen, old))))
        .await
        .unwrap_err();
    assert_status(&status, Code::FailedPrecondition, "sign a new one");
    let status = police
        .identity
        .list_accesses(list_signed(CitizenRead::ListAccesses, old))
        .await
        .unwrap_err();
    assert_status(&status, Code::FailedPrecondition, "sign a new one");
    let status = health
        .identity
        .get_identity(get_identity_request(&citizen, Some((&other, now_ms()))))
        .await
        .unwrap_err();
    assert_status(&status, Code::Unauthenticated, "does not verify");
    // A GetIdentity signature is not a ListAccesses one.
    let status = police
        .identity
        .list_accesses(list_signed(CitizenRead::GetIdentity, now_ms()))
        .await
        .unwrap_err();
    assert_status(&status, Code::Unauthenticated, "does not verify");
    let mut half = get_identity_request(&citizen, Some((&citizen, now_ms())));
    half.request_time_ms = 0;
    let status = health.identity.get_identity(half).await.unwrap_err();
    assert_status(&status, Code::InvalidArgument, "both");

    // A revoked consent: health still sees the identity and its consent,
    // revoked, but no attribute.
    commit_ok(
        &mut civil.node,
        &citizen,
        transaction::Body::RevokeConsent(RevokeConsent {
            consent_id: health_consent.to_vec(),
        }),
    )
    .await;
    let seen = identity_of(&mut health.identity, &citizen).await;
    assert_eq!(names(&seen), Vec::<&str>::new());
    assert!(seen.consents[0].revoked);
}
