//! Online backup (`AdminService.Backup`) and offline restore.
//!
//! A backup is a logical dump of two read transactions, the ledger's and
//! then the blob store's, streamed while consensus keeps committing: redb
//! keeps the pages a read transaction sees until it ends, so the dump is
//! the state of one moment however long the stream takes. The blob
//! snapshot begins after the ledger's, so it holds every blob the ledger's
//! state refers to (a blob is stored before it can be declared; garbage
//! collection only removes blobs nothing refers to).
//!
//! **Invariant:** a validator's consensus records (`consensus.redb`) are
//! never in a backup, so a restore can never hand one validator's votes to
//! another node or replay old votes under a newer ledger; see `restore`.

pub mod format;
mod restore;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use govchain_proto::admin::v1::admin_service_server::AdminService;
use govchain_proto::admin::v1::{
    BackupChunk, BackupFileEnd, BackupFinished, BackupHeader, BackupRequest, BackupResponse,
    backup_response::Item,
};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

pub use restore::{RestoreError, RestoreOptions, RestoreReport, restore};

use crate::shared::Shared;
use format::{BLOBS_DUMP_FILE, DUMP_MAGIC, LEDGER_DUMP_FILE};

/// Data per stream message: well under the 4 MiB gRPC default.
pub const BACKUP_CHUNK_BYTES_MAX: usize = 1024 * 1024;
/// Messages waiting for a slow client; the dump waits, it never buffers more.
pub const BACKUP_MESSAGES_QUEUED_MAX: usize = 8;

/// `AdminService`: the node's platform team only.
#[derive(Clone)]
pub struct AdminApi {
    shared: Arc<Shared>,
    /// For the size estimate the client's progress bar shows.
    data_dir: std::path::PathBuf,
    /// One backup at a time: each holds two read transactions, which keep
    /// the pages they see from being reused until it ends.
    running: Arc<AtomicBool>,
}

impl AdminApi {
    pub fn new(shared: Arc<Shared>, data_dir: std::path::PathBuf) -> Self {
        Self {
            shared,
            data_dir,
            running: Arc::default(),
        }
    }
}

type BackupStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<BackupResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AdminService for AdminApi {
    type BackupStream = BackupStream;

    async fn backup(
        &self,
        request: Request<BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let identity = crate::tls::caller_identity(&request)?;
        crate::tls::require_admin_of(&identity, &self.shared.name)?;
        let slot = RunningBackup::take(&self.running)?;
        let mut snapshots = Snapshots::begin(&self.shared)?;
        snapshots.header.estimated_bytes = estimated_bytes(&self.data_dir);
        let (sender, receiver) = mpsc::channel(BACKUP_MESSAGES_QUEUED_MAX);
        info!(node = %self.shared.name, height = snapshots.header.height, caller = %identity, "backup started");
        let node = self.shared.name.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            match snapshots.stream(&sender) {
                Ok(()) => info!(node = %node, "backup sent"),
                Err(err) => {
                    warn!(node = %node, error = %err, "backup stopped");
                    let _ =
                        sender.blocking_send(Err(crate::errors::internal("backup failed", err)));
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}

/// The files' sizes on disk: the dump is of their live rows, so usually
/// somewhat smaller.
fn estimated_bytes(data_dir: &std::path::Path) -> u64 {
    [
        data_dir.join(govchain_ledger::LEDGER_FILE_NAME),
        data_dir
            .join("blobs")
            .join(govchain_blobstore::BLOBSTORE_FILE_NAME),
    ]
    .iter()
    .filter_map(|path| std::fs::metadata(path).ok())
    .map(|metadata| metadata.len())
    .sum()
}

/// The place of the one running backup, given back when dropped.
struct RunningBackup(Arc<AtomicBool>);

impl RunningBackup {
    fn take(running: &Arc<AtomicBool>) -> Result<Self, Status> {
        if running.swap(true, Ordering::AcqRel) {
            return Err(crate::errors::limit_reached(
                "one backup at a time",
                "another backup of this node is running (one at a time); try again when it ends",
            ));
        }
        Ok(Self(running.clone()))
    }
}

impl Drop for RunningBackup {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The two read transactions of one backup, and what they are of.
struct Snapshots {
    header: BackupHeader,
    ledger: govchain_ledger::Snapshot,
    blobs: govchain_blobstore::dump::BlobSnapshot,
}

impl Snapshots {
    /// The ledger's first, then the blob store's (see the module docs).
    fn begin(shared: &Shared) -> Result<Self, Status> {
        let ledger = shared
            .ledger
            .snapshot()
            .map_err(|err| crate::errors::internal("cannot begin the ledger snapshot", err))?;
        let blobs = shared
            .blobs
            .store
            .snapshot()
            .map_err(|err| crate::errors::internal("cannot begin the blob snapshot", err))?;
        let head = ledger.head();
        let header = BackupHeader {
            chain_id: ledger.chain_id().to_owned(),
            genesis_hash: ledger.genesis_hash().as_bytes().to_vec(),
            height: head.height,
            head_hash: head.hash.as_bytes().to_vec(),
            node: shared.name.clone(),
            estimated_bytes: 0,
            created_at_ms: crate::clock::now_ms(),
        };
        Ok(Self {
            header,
            ledger,
            blobs,
        })
    }

    fn stream(self, sender: &mpsc::Sender<Result<BackupResponse, Status>>) -> io::Result<()> {
        send(sender, Item::Header(self.header))?;
        let mut file = FileSender::new(LEDGER_DUMP_FILE, sender)?;
        self.ledger
            .export(&mut |table, key, value| file.row(table, key, value))
            .map_err(io::Error::other)?;
        file.finish()?;
        let mut file = FileSender::new(BLOBS_DUMP_FILE, sender)?;
        self.blobs
            .export(&mut |table, key, value| file.row(table, key, value))
            .map_err(io::Error::other)?;
        file.finish()?;
        send(sender, Item::Finished(BackupFinished {}))
    }
}

/// Frames rows into one file's chunks, hashing what it sends.
struct FileSender<'a> {
    file: &'static str,
    sender: &'a mpsc::Sender<Result<BackupResponse, Status>>,
    pending: Vec<u8>,
    hasher: Sha256,
    sent_bytes: u64,
}

impl<'a> FileSender<'a> {
    fn new(
        file: &'static str,
        sender: &'a mpsc::Sender<Result<BackupResponse, Status>>,
    ) -> io::Result<Self> {
        let mut pending = Vec::with_capacity(2 * BACKUP_CHUNK_BYTES_MAX);
        pending.extend_from_slice(DUMP_MAGIC);
        Ok(Self {
            file,
            sender,
            pending,
            hasher: Sha256::new(),
            sent_bytes: 0,
        })
    }

    fn row(&mut self, table: &str, key: &[u8], value: &[u8]) -> io::Result<()> {
        format::encode_row(&mut self.pending, table, key, value);
        let mut start = 0;
        while self.pending.len() - start >= BACKUP_CHUNK_BYTES_MAX {
            let end = start + BACKUP_CHUNK_BYTES_MAX;
            let chunk = self.pending[start..end].to_vec();
            self.send_chunk(chunk)?;
            start = end;
        }
        self.pending.drain(..start);
        Ok(())
    }

    fn send_chunk(&mut self, data: Vec<u8>) -> io::Result<()> {
        self.hasher.update(&data);
        self.sent_bytes += data.len() as u64;
        send(
            self.sender,
            Item::Chunk(BackupChunk {
                file: self.file.to_owned(),
                data: data.into(),
            }),
        )
    }

    fn finish(mut self) -> io::Result<()> {
        let rest = std::mem::take(&mut self.pending);
        if !rest.is_empty() {
            self.send_chunk(rest)?;
        }
        send(
            self.sender,
            Item::FileEnd(BackupFileEnd {
                file: self.file.to_owned(),
                bytes: self.sent_bytes,
                sha256: self.hasher.finalize().to_vec(),
            }),
        )
    }
}

/// Waits for room in the stream; fails when the client went away, which
/// ends the dump and its read transactions.
fn send(sender: &mpsc::Sender<Result<BackupResponse, Status>>, item: Item) -> io::Result<()> {
    sender
        .blocking_send(Ok(BackupResponse { item: Some(item) }))
        .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the backup client went away"))
}
