//! The node's blob store as the services use it (`Blobs`): uploads kept
//! with their receipts, streams in and out, fetching a blob from its
//! holder's node, and garbage collection of blobs nothing references. The
//! gRPC service and its consent and release gates are `blob_service`.
//!
//! **Invariant:** bytes fetched from a holder are stored only if they hash
//! to the CID asked for; the store verifies them again on every read.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use govchain_blobstore::{BlobError, BlobInfo, BlobStore, ChunkReadError, ChunkSource, Cid};
use govchain_crypto::{PublicKey, SigningKey};
use govchain_exec::directory::{blob_dataset, schema_dataset};
use govchain_exec::identity::blob_reference;
use govchain_proto::blob::v1::*;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::Status;
use tonic::transport::ClientTlsConfig;
use tracing::{info, warn};

use crate::chain_state::LedgerState;
use crate::errors;
use crate::errors::{echo, internal};

/// Bytes of blob data per streamed message: one chunk of the profile.
pub const BLOB_MESSAGE_DATA_BYTES_MAX: usize = 1024 * 1024;
/// Room for framing on top of the data in one message.
pub const BLOB_MESSAGE_BYTES_MAX: usize = BLOB_MESSAGE_DATA_BYTES_MAX + 64 * 1024;
/// How long a recorded access lets its department download the blob.
pub const ACCESS_WINDOW_MS: u64 = 10 * 60 * 1000;
/// Chunks buffered between the network and the store, each way: the
/// back-pressure bound of one transfer.
const TRANSFER_CHUNKS_BUFFERED_MAX: usize = 4;

/// Past this many recent uploads, an upload first forgets those older than
/// the grace period, so that the map stays bounded between collections.
/// The next prune waits until the map has doubled again, so a burst of
/// uploads within the grace period costs linear time, not quadratic.
const RECENT_UPLOADS_PRUNE_AT: usize = 4096;

/// The node's blob store and what serving it needs.
pub struct Blobs {
    pub store: BlobStore,
    pub upload_bytes_max: u64,
    /// Upload times (Unix ms) of blobs not yet referenced on chain, which
    /// garbage collection keeps for a grace period.
    recent: Mutex<HashMap<Cid, u64>>,
    /// That grace period, or `None` when collection is off and nothing
    /// needs the upload times.
    recent_grace_ms: Option<u64>,
    /// The size of `recent` at which the next upload prunes it.
    recent_prune_at: std::sync::atomic::AtomicUsize,
    /// Other departments' nodes, for fetching blobs they hold.
    pub(crate) holders: HashMap<String, (String, ClientTlsConfig)>,
    /// What signs receipts for uploads made for a citizen: this node's
    /// consensus key, with the chain id and department name the receipt
    /// names, while that key is the department's node key on chain. `None`
    /// only in tests.
    pub(crate) receipts: Option<Receipts>,
}

pub(crate) fn observer_holds_no_citizen_blobs() -> Status {
    errors::failed_precondition(
        "this node is an observer and holds no citizen's blobs: upload to a validator's node",
    )
}

fn not_the_node_key(holder: &str) -> Status {
    errors::failed_precondition(format!(
        "this node's consensus key is not department {holder:?}'s node key on chain, so its receipts would not verify: upload to a validator's node (an observer signs receipts once governance adds it as a validator)"
    ))
}

/// See [`Blobs::with_receipts`].
pub struct Receipts {
    pub key: SigningKey,
    pub chain_id: String,
    pub holder: String,
    /// The departments in force: the node signs receipts while `key` is
    /// `holder`'s node key there, as the chain checks a declaration.
    pub departments: Arc<crate::chain_state::InForce>,
}

impl Blobs {
    /// `recent_grace_ms` is garbage collection's grace period, `None` when
    /// collection is off.
    pub fn new(
        store: BlobStore,
        upload_bytes_max: u64,
        recent_grace_ms: Option<u64>,
        holders: HashMap<String, (String, ClientTlsConfig)>,
    ) -> Self {
        Self {
            store,
            upload_bytes_max,
            recent: Mutex::new(HashMap::new()),
            recent_grace_ms,
            recent_prune_at: std::sync::atomic::AtomicUsize::new(RECENT_UPLOADS_PRUNE_AT),
            holders,
            receipts: None,
        }
    }

    /// Signs a receipt for each upload made for a citizen
    /// ([`govchain_exec::identity::blob_receipt_digest`]).
    pub fn with_receipts(mut self, receipts: Receipts) -> Self {
        self.receipts = Some(receipts);
        self
    }

    /// The receipt binding an uploaded blob to `citizen` (32 key bytes).
    pub(crate) fn receipt(
        &self,
        citizen: &[u8],
        cid: &Cid,
        size_bytes: u64,
    ) -> Result<Vec<u8>, Status> {
        let Some(receipts) = &self.receipts else {
            return Err(observer_holds_no_citizen_blobs());
        };
        let node_key = receipts
            .departments
            .get()
            .by_name(&receipts.holder)
            .and_then(|d| d.node_key);
        if node_key != Some(receipts.key.public_key()) {
            return Err(not_the_node_key(&receipts.holder));
        }
        let citizen = PublicKey::from_slice(citizen).map_err(|err| {
            errors::invalid_argument(format!("receipt_for_citizen is not a citizen key: {err}"))
        })?;
        let digest = govchain_exec::identity::blob_receipt_digest(
            &receipts.chain_id,
            &receipts.holder,
            &cid.to_string(),
            &citizen,
            size_bytes,
        );
        Ok(receipts.key.sign(digest.as_bytes()).to_bytes().to_vec())
    }

    /// Remembers an upload's time for the collector's grace period.
    fn note_upload(&self, cid: Cid, now_ms: u64) {
        let Some(grace_ms) = self.recent_grace_ms else {
            return;
        };
        use std::sync::atomic::Ordering::Relaxed;
        let mut recent = self.recent();
        // Read and written under the map's lock.
        if recent.len() >= self.recent_prune_at.load(Relaxed) {
            recent.retain(|_, uploaded| now_ms.saturating_sub(*uploaded) < grace_ms);
            let next = (2 * recent.len()).max(RECENT_UPLOADS_PRUNE_AT);
            self.recent_prune_at.store(next, Relaxed);
        }
        recent.insert(cid, now_ms);
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, HashMap<Cid, u64>> {
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores a blob from `reader` (blocking). The blob is left unpinned:
    /// the chain's references keep it, and an upload is kept for the grace
    /// period so that its declaration can commit. If `expected` is given
    /// and the bytes hash to another CID, the upload is dropped again.
    fn store_blocking(
        &self,
        source: impl ChunkSource,
        limit: u64,
        expected: Option<&Cid>,
    ) -> Result<BlobInfo, Status> {
        let info = self
            .store
            .put_chunks(source, limit)
            .map_err(status_from_blob)?;
        // Release this upload's pin whatever happens next; the CID is in
        // `recent` first so that a collection in between keeps it.
        let matches = expected.is_none_or(|cid| *cid == info.cid);
        if matches {
            self.note_upload(info.cid, crate::clock::now_ms());
        }
        if let Err(err) = self.store.unpin(&info.cid) {
            warn!(cid = %info.cid, error = %err, "could not release an upload's pin");
        }
        match expected {
            Some(cid) if *cid != info.cid => Err(errors::invalid_argument(format!(
                "the uploaded bytes have CID {}, not the expected {cid}; nothing was kept",
                info.cid
            ))),
            _ => Ok(info),
        }
    }

    /// Collects blobs that no attribute references, no dataset version
    /// names, and that were not
    /// uploaded within `grace_ms`. The upload list is asked live, inside
    /// the collection: an upload that finishes meanwhile is listed before
    /// it drops its pin, so it is either pinned or listed when asked.
    pub fn collect_garbage(
        &self,
        ledger: &govchain_ledger::Ledger,
        grace_ms: u64,
    ) -> Result<(), BlobError> {
        let now = crate::clock::now_ms();
        self.recent()
            .retain(|_, uploaded| now.saturating_sub(*uploaded) < grace_ms);
        let state = LedgerState(ledger);
        let report = self.store.gc(|cid| {
            self.recent().contains_key(cid)
                // A read failure keeps the blob: never delete on doubt.
                || blob_reference(&state, &cid.to_string()).map_or(true, |r| r.is_some())
                || blob_dataset(&state, &cid.to_string()).map_or(true, |d| d.is_some())
                || schema_dataset(&state, &cid.to_string()).map_or(true, |d| d.is_some())
        })?;
        if report.roots_removed > 0 {
            info!(
                roots = report.roots_removed,
                bytes = report.bytes_removed,
                "collected unreferenced blobs"
            );
        }
        Ok(())
    }
}

pub fn status_from_blob(err: BlobError) -> Status {
    let message = err.to_string();
    match err {
        BlobError::NotFound { .. } => errors::not_found_plain(message),
        BlobError::TooLarge { .. } | BlobError::LimitAboveMax { .. } => {
            errors::limit_reached("blobs.blob_bytes_max", message)
        }
        BlobError::Thread { ref source } => {
            tracing::warn!(error = %source, "{message}");
            errors::limit_reached("threads", format!("{message}: {source}"))
        }
        BlobError::RangeOutOfBounds { .. } => errors::out_of_range(message),
        BlobError::Read { source, .. } => errors::Failure::new(
            tonic::Code::Aborted,
            errors::ErrorReason::Unavailable,
            format!("nothing was recorded: {message}: {source}"),
        )
        .retry_after(errors::RETRY_AFTER_DEFAULT)
        .status(),
        BlobError::Corrupt { .. }
        | BlobError::Missing { .. }
        | BlobError::Malformed { .. }
        | BlobError::RootSizeMismatch { .. } => errors::data_loss(message),
        _ => internal("blob store failed", message),
    }
}

/// Parses a CID given in its canonical text form (CIDv1, base32, as the
/// chain names blobs). Other spellings of the same CID (`/ipfs/...`,
/// base58, upper case) are refused: every lookup by CID text must find
/// what the chain says about that blob.
pub fn parse_cid(text: &str) -> Result<Cid, Status> {
    let cid = Cid::try_from(text).map_err(|err| {
        errors::invalid_argument(format!("cid {} is not a CID: {err}", echo(text)))
    })?;
    let canonical = cid.to_string();
    if canonical != text {
        return Err(errors::invalid_argument(format!(
            "cid {} is not in canonical form; use {canonical}",
            echo(text)
        )));
    }
    Ok(cid)
}

/// A [`ChunkSource`] over messages sent from async code; an `Err` item
/// fails the read, and the sender going away is the end of the data.
/// Clients send one chunk per message (1 MiB), and such a message becomes
/// the chunk as it is, without a copy; other message sizes are joined.
struct ChannelChunks {
    receiver: mpsc::Receiver<Result<Bytes, io::Error>>,
    current: Bytes,
}

impl ChunkSource for ChannelChunks {
    fn next_chunk(&mut self, len: usize) -> Result<Bytes, ChunkReadError> {
        let mut joined: Option<BytesMut> = None;
        loop {
            let filled = joined.as_ref().map_or(0, BytesMut::len);
            if self.current.is_empty() {
                // On the blocking writer thread, never on the runtime.
                match self.receiver.blocking_recv() {
                    Some(Ok(message)) => self.current = message,
                    Some(Err(source)) => return Err(ChunkReadError { filled, source }),
                    None => break,
                }
                continue;
            }
            if joined.is_none() && self.current.len() >= len {
                return Ok(self.current.split_to(len));
            }
            let joined = joined.get_or_insert_with(|| BytesMut::with_capacity(len));
            let take = (len - filled).min(self.current.len());
            joined.extend_from_slice(&self.current.split_to(take));
            if joined.len() == len {
                break;
            }
        }
        Ok(joined.map(BytesMut::freeze).unwrap_or_default())
    }
}

/// Stores the chunks that `chunks` yields, with back-pressure: at most
/// [`TRANSFER_CHUNKS_BUFFERED_MAX`] wait for the store.
/// `chunks` yields the data of each message and whether it was the last;
/// a stream that ends before its last message records nothing.
pub(crate) async fn store_stream<S>(
    blobs: Arc<Blobs>,
    first: (Bytes, bool),
    mut chunks: S,
    limit: u64,
    expected: Option<Cid>,
) -> Result<BlobInfo, Status>
where
    S: Stream<Item = Result<(Bytes, bool), Status>> + Unpin,
{
    use tokio_stream::StreamExt as _;
    let (sender, receiver) = mpsc::channel(TRANSFER_CHUNKS_BUFFERED_MAX);
    let writer = tokio::task::spawn_blocking(move || {
        let source = ChannelChunks {
            receiver,
            current: Bytes::new(),
        };
        blobs.store_blocking(source, limit, expected.as_ref())
    });
    // A send fails only when the writer stopped reading; its result says why.
    let send = |item| {
        let sender = sender.clone();
        async move { sender.send(item).await.is_ok() }
    };
    let (first, mut finished) = first;
    let mut open = first.is_empty() || send(Ok(first)).await;
    // A message the client should not have sent is reported as such, not
    // as the failed read it causes.
    let mut refusal = None;
    while open && !finished {
        match chunks.next().await {
            None => {
                let error = io::Error::other(
                    "the upload was cut off: the stream ended before a message with finish set",
                );
                let _ = send(Err(error)).await;
                break;
            }
            Some(Ok((chunk, last))) => {
                finished = last;
                if !chunk.is_empty() {
                    open = send(Ok(chunk)).await;
                }
            }
            Some(Err(status)) => {
                let error = io::Error::other(format!("stream ended early: {}", status.message()));
                let _ = send(Err(error)).await;
                if status.code() == tonic::Code::InvalidArgument {
                    refusal = Some(status);
                }
                break;
            }
        }
    }
    drop(sender);
    let stored = writer
        .await
        .map_err(|err| internal("blob writer task failed", err))?;
    match (stored, refusal) {
        (Err(_), Some(refusal)) => Err(errors::detailed(refusal)),
        (stored, _) => stored,
    }
}

pub(crate) type ChunkStream = Pin<Box<dyn Stream<Item = Result<DownloadResponse, Status>> + Send>>;

/// Streams `length` bytes (0: to the end) from `offset` of a stored blob,
/// every chunk verified by the store.
pub fn stream_blob(
    blobs: Arc<Blobs>,
    cid: Cid,
    offset: u64,
    length: u64,
) -> Result<ChunkStream, Status> {
    let info = blobs
        .store
        .stat(&cid)
        .map_err(status_from_blob)?
        .ok_or_else(|| errors::not_found_plain(format!("blob {cid} is not stored on this node")))?;
    if offset > info.size_bytes {
        return Err(errors::out_of_range(format!(
            "offset {offset} is past the end of blob {cid} ({} bytes)",
            info.size_bytes
        )));
    }
    let length = if length == 0 {
        info.size_bytes - offset
    } else {
        length
    };
    let mut reader = blobs
        .store
        .reader_range(&cid, offset, length)
        .map_err(status_from_blob)?;
    let (sender, receiver) = mpsc::channel(TRANSFER_CHUNKS_BUFFERED_MAX);
    let size_bytes = info.size_bytes;
    tokio::task::spawn_blocking(move || {
        let mut position = offset;
        let mut sent_any = false;
        loop {
            let item = match reader.next_chunk() {
                Ok(Some(chunk)) => {
                    let message = DownloadResponse {
                        offset: position,
                        size_bytes: if sent_any { 0 } else { size_bytes },
                        data: Bytes::from(chunk),
                    };
                    position += message.data.len() as u64;
                    Ok(message)
                }
                // An empty range still tells the size.
                Ok(None) if !sent_any => Ok(DownloadResponse {
                    offset: position,
                    data: Bytes::new(),
                    size_bytes,
                }),
                Ok(None) => return,
                Err(err) => Err(status_from_blob(err)),
            };
            let last = item.is_err() || item.as_ref().is_ok_and(|m| m.data.is_empty());
            if sender.blocking_send(item).is_err() || last {
                return;
            }
            sent_any = true;
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
        receiver,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs(dir: &std::path::Path, grace_ms: Option<u64>) -> Blobs {
        let store = BlobStore::open(dir).expect("store");
        Blobs::new(store, 1024, grace_ms, HashMap::new())
    }

    fn cid(n: u64) -> Cid {
        govchain_blobstore::cid_of_reader(
            &n.to_be_bytes()[..],
            govchain_blobstore::PROFILE_UNIXFS_V1_2025,
        )
        .expect("cid")
    }

    #[test]
    fn recent_uploads_stay_bounded_past_their_grace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = blobs(dir.path(), Some(1_000));
        let count = RECENT_UPLOADS_PRUNE_AT as u64;
        for n in 0..count {
            blobs.note_upload(cid(n), 10_000);
        }
        assert_eq!(blobs.recent().len(), RECENT_UPLOADS_PRUNE_AT);
        // Within the grace period nothing is forgotten...
        blobs.note_upload(cid(count), 10_500);
        assert_eq!(blobs.recent().len(), RECENT_UPLOADS_PRUNE_AT + 1);
        // ...and the next prune waits for the map to double: 8,192 entries,
        // reached within the loop, whose last upload prunes the expired.
        blobs.note_upload(cid(count + 1), 11_200);
        assert_eq!(blobs.recent().len(), RECENT_UPLOADS_PRUNE_AT + 2);
        for n in count + 2..2 * count + 1 {
            let before = blobs.recent().len();
            blobs.note_upload(cid(n), 11_200);
            if n < 2 * count {
                assert_eq!(blobs.recent().len(), before + 1, "no prune before doubling");
            }
        }
        let recent = blobs.recent();
        assert_eq!(recent.len(), RECENT_UPLOADS_PRUNE_AT + 1);
        assert!(!recent.contains_key(&cid(0)), "expired");
        assert_eq!(recent.get(&cid(count)), Some(&10_500));
        assert_eq!(recent.get(&cid(2 * count)), Some(&11_200));
    }

    /// A source fed `messages`, then closed.
    fn chunks_of(messages: Vec<Result<Bytes, io::Error>>) -> ChannelChunks {
        let (sender, receiver) = mpsc::channel(messages.len().max(1));
        for message in messages {
            sender.try_send(message).expect("room");
        }
        ChannelChunks {
            receiver,
            current: Bytes::new(),
        }
    }

    #[test]
    fn a_chunk_sized_message_is_the_chunk_itself() {
        let message = Bytes::from(vec![5_u8; 8]);
        let address = message.as_ptr();
        let mut source = chunks_of(vec![Ok(message)]);
        let chunk = source.next_chunk(8).expect("a chunk");
        assert_eq!(chunk.as_ptr(), address, "not copied");
        assert_eq!(source.next_chunk(8).expect("the end").len(), 0);
    }

    #[test]
    fn other_message_sizes_are_cut_and_joined_into_chunks() {
        let messages = vec![
            Ok(Bytes::from_static(b"abc")),
            Ok(Bytes::from_static(b"defghij")),
            Ok(Bytes::from_static(b"k")),
        ];
        let mut source = chunks_of(messages);
        let chunks: Vec<Bytes> = (0..4)
            .map(|_| source.next_chunk(4).expect("reads"))
            .collect();
        assert_eq!(chunks, vec![&b"abcd"[..], b"efgh", b"ijk", b""]);
    }

    #[test]
    fn a_failed_message_reports_what_the_chunk_had() {
        let messages = vec![
            Ok(Bytes::from_static(b"abcdef")),
            Err(io::Error::other("the client went away")),
        ];
        let mut source = chunks_of(messages);
        assert_eq!(source.next_chunk(4).expect("a chunk"), &b"abcd"[..]);
        let err = source.next_chunk(4).expect_err("fails");
        assert_eq!(err.filled, 2);
        assert_eq!(err.source.to_string(), "the client went away");
    }

    #[test]
    fn without_collection_uploads_are_not_tracked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = blobs(dir.path(), None);
        blobs.note_upload(cid(1), 10_000);
        assert!(blobs.recent().is_empty());
    }
}
