//! `govchain blob`: content-addressed files on a node (`BlobService`), and
//! their CIDs computed offline exactly as IPFS computes them.

use std::fs::File;
use std::io::{self, BufReader, IsTerminal as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use govchain_blobstore::{ChunkSource, Cid, PROFILE_UNIXFS_V1_2025, ReadChunks, cid_of_reader};
use govchain_crypto::Digest;
use govchain_proto::blob::v1::blob_service_client::BlobServiceClient;
use govchain_proto::blob::v1::{
    DownloadRequest, DownloadResponse, StatRequest, UploadHeader, UploadRequest, UploadResponse,
};
use indicatif::ProgressBar;
use serde::Serialize;
use tokio::io::{AsyncSeekExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tonic::Streaming;
use tonic::transport::Channel;

use crate::client::{self, BLOB_MESSAGE_DATA_BYTES_MAX, ConnectArgs, rpc_error};
use crate::output::{self, Fields};

/// Transfers at least this large show a progress bar (on a terminal).
const PROGRESS_BYTES_MIN: u64 = 4 * 1024 * 1024;
/// Upload messages read ahead of the network: the client's back-pressure
/// bound, so a large file is never held in memory.
const UPLOAD_MESSAGES_BUFFERED_MAX: usize = 4;
/// Read size when computing a CID offline.
const CID_READ_BUFFER_BYTES: usize = 1024 * 1024;

const _: () = assert!(BLOB_MESSAGE_DATA_BYTES_MAX as u64 <= PROGRESS_BYTES_MIN);

#[derive(Debug, Args)]
pub struct BlobArgs {
    #[command(subcommand)]
    command: BlobCommand,
}

#[derive(Debug, Subcommand)]
enum BlobCommand {
    /// Upload a file to a node's blob store; prints its CID and size.
    #[command(
        long_about = "Upload a file to the blob store of the node you talk to, streamed in \
            1 MiB messages (a progress bar on a terminal for large files). The node chunks \
            and addresses it as IPFS does (profile unixfs-v1-2025), stores each chunk once, \
            and answers with the CID and size; the same bytes always get the same CID, and \
            `govchain blob cid FILE` computes it offline.\n\n\
            An upload that nothing on chain refers to is kept for a grace period only, so \
            that a declaration can follow; a citizen's attribute is uploaded by \
            `govchain identity declare`, not by hand.\n\n\
            With --expect-cid, the node refuses the bytes (and keeps nothing) unless they \
            hash to that CID.",
        after_help = "Examples:\n  \
            govchain blob put scan.pdf --dir devnet\n  \
            govchain blob put scan.pdf --expect-cid \"$(govchain blob cid scan.pdf)\"\n  \
            govchain blob put scan.pdf --json | jq -r .cid"
    )]
    Put(PutArgs),
    /// Download a blob to a file, resuming and verifying its CID.
    #[command(
        long_about = "Download a blob into --out and check, offline, that the file's CID is \
            the one asked for; a mismatch is an error and the file is moved aside to \
            FILE.mismatch. A cut-off download continues where it stopped with --resume \
            (from the length of the existing file).\n\n\
            A blob that the chain names as a citizen's attribute is released only under a \
            committed access of your department: pass the access transaction id printed by \
            `govchain identity access` as --access, with your department's certificate \
            (--department). Such a blob is the sealed attribute (salt, media type, value); \
            `govchain identity access` decodes it for you.\n\n\
            Another department's blobs are otherwise read only as documents of an approval \
            case: pass the case id as --case, from the node that holds the document, with the \
            certificate of a department whose step may read it (`govchain case show` lists \
            the documents).",
        after_help = "Examples:\n  \
            govchain blob get bafybei... --out scan.pdf --dir devnet\n  \
            govchain blob get bafybei... --out scan.pdf --resume      # after a cut-off\n  \
            govchain blob get bafkrei... --out photo.sealed --access 5f0c...e1 --department tax\n  \
            govchain blob get bafkrei... --out plan.txt --case 9cd3...61 --department police --node health"
    )]
    Get(GetArgs),
    /// Show whether a node holds a blob, its size, and whether it is personal.
    #[command(
        long_about = "Ask the node whether it holds a blob: its size, and whether the chain \
            names it as a citizen's attribute (\"personal\"), which makes downloads need a \
            recorded access. NOT_FOUND means this node does not hold it.",
        after_help = "Example:\n  govchain blob stat bafybei... --dir devnet --json"
    )]
    Stat(StatArgs),
    /// Print a file's CID offline, as `ipfs add --only-hash` with the
    /// unixfs-v1-2025 profile computes it.
    #[command(
        long_about = "Compute a file's CID without contacting any node: CIDv1, SHA-256, raw \
            1 MiB leaves, a balanced UnixFS DAG of width 1024 (the IPIP-499 \
            unixfs-v1-2025 profile). It equals `ipfs add --only-hash --cid-version 1 \
            --raw-leaves --chunker size-1048576` (with a width of 1024 links) and the CID \
            `govchain blob put` reports for the same bytes. Prints only the CID.",
        after_help = "Examples:\n  \
            govchain blob cid photo.jpg\n  \
            ipfs add -Q --only-hash --cid-version 1 --raw-leaves --chunker size-1048576 photo.jpg"
    )]
    Cid(CidArgs),
}

#[derive(Debug, Args)]
struct PutArgs {
    /// The file to upload.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Refuse the upload unless the bytes hash to this CID.
    #[arg(long, value_name = "CID", value_parser = parse_cid)]
    expect_cid: Option<Cid>,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
struct GetArgs {
    /// The blob's CID.
    #[arg(value_name = "CID", value_parser = parse_cid)]
    cid: Cid,
    /// Where to write the blob.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Continue a cut-off download: keep the bytes already in --out and
    /// fetch the rest.
    #[arg(long, conflicts_with = "force")]
    resume: bool,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
    /// For a citizen's attribute blob: the id of your department's committed
    /// access (from `govchain identity access`).
    #[arg(long, value_name = "TXID", value_parser = parse_transaction_id)]
    access: Option<Digest>,
    /// For a document of an approval case: the case id (hex). Released to
    /// a department whose step of the case may read the document, and to
    /// the applicant's department.
    #[arg(long = "case", value_name = "CASE_ID", value_parser = parse_transaction_id, conflicts_with = "access")]
    case: Option<Digest>,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
struct StatArgs {
    /// The blob's CID.
    #[arg(value_name = "CID", value_parser = parse_cid)]
    cid: Cid,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
struct CidArgs {
    /// The file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

pub async fn run(args: BlobArgs, json: bool) -> anyhow::Result<()> {
    match args.command {
        BlobCommand::Put(args) => put(args, json).await,
        BlobCommand::Get(args) => get(args, json).await,
        BlobCommand::Stat(args) => stat(args, json).await,
        BlobCommand::Cid(args) => cid(args, json).await,
    }
}

pub fn parse_cid(text: &str) -> Result<Cid, String> {
    Cid::try_from(text.trim()).map_err(|err| format!("{text:?} is not a CID: {err}"))
}

pub fn parse_transaction_id(text: &str) -> Result<Digest, String> {
    Digest::from_hex(text.trim())
        .map_err(|_| format!("{text:?} is not a transaction id (64 hex characters)"))
}

/// A byte progress bar on stderr, or a hidden one for small transfers, for
/// `--json`, and when stderr is not a terminal.
pub fn progress_bar(size_bytes: u64, json: bool, message: &str) -> ProgressBar {
    if json || size_bytes < PROGRESS_BYTES_MIN || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    crate::output::progress_bar(
        false,
        size_bytes,
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        message,
    )
}

/// Uploads everything `source` yields, in messages of 1 MiB: the header in
/// the first, `finish` on the last. A source that fails mid-way cancels the
/// call before `finish` is sent, so the node keeps nothing.
pub async fn upload(
    client: &mut BlobServiceClient<Channel>,
    source: impl ChunkSource + Send + 'static,
    header: UploadHeader,
    bar: ProgressBar,
) -> anyhow::Result<UploadResponse> {
    let (sender, receiver) = mpsc::channel(UPLOAD_MESSAGES_BUFFERED_MAX);
    let mut source =
        tokio::task::spawn_blocking(move || send_chunks(source, &sender, header, &bar));
    let mut call = Box::pin(client.upload(tokio_stream::wrappers::ReceiverStream::new(receiver)));
    let mut source_done = false;
    let failure = loop {
        tokio::select! {
            response = &mut call => match response {
                Ok(response) => return Ok(response.into_inner()),
                // The node saw the stream end without `finish`: the read
                // error, if that was the cause, says more.
                Err(status) if !source_done => match source.await {
                    Ok(Err(err)) => break err,
                    _ => return Err(rpc_error(status)),
                },
                Err(status) => return Err(rpc_error(status)),
            },
            read = &mut source, if !source_done => match read {
                Ok(Ok(())) => source_done = true,
                Ok(Err(err)) => break err,
                Err(err) => break anyhow::anyhow!("the upload reader failed: {err}"),
            },
        }
    };
    drop(call);
    Err(failure)
}

fn send_chunks(
    mut source: impl ChunkSource,
    sender: &mpsc::Sender<UploadRequest>,
    header: UploadHeader,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let mut header = Some(header);
    loop {
        let data = source
            .next_chunk(BLOB_MESSAGE_DATA_BYTES_MAX)
            .map_err(|err| err.source)
            .context("cannot read the bytes to upload")?;
        let filled = data.len();
        // A short read is the end; a file of whole chunks ends with an
        // empty message.
        let finish = filled < BLOB_MESSAGE_DATA_BYTES_MAX;
        let message = UploadRequest {
            header: header.take(),
            data,
            finish,
        };
        // A closed channel means the call ended; its result says why.
        if sender.blocking_send(message).is_err() {
            return Ok(());
        }
        bar.inc(filled as u64);
        if finish {
            bar.finish_and_clear();
            return Ok(());
        }
    }
}

/// One message of a streamed blob: `BlobService.Download` and
/// `IdentityService.ReadAttribute` send the same pieces.
pub trait Piece: prost::Message + Default + 'static {
    fn offset(&self) -> u64;
    fn data(&self) -> &[u8];
    fn size_bytes(&self) -> u64;
}

impl Piece for DownloadResponse {
    fn offset(&self) -> u64 {
        self.offset
    }
    fn data(&self) -> &[u8] {
        &self.data
    }
    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
}

impl Piece for govchain_proto::identity::v1::ReadAttributeResponse {
    fn offset(&self) -> u64 {
        self.offset
    }
    fn data(&self) -> &[u8] {
        &self.data
    }
    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
}

/// Writes a download stream starting at `offset` into `writer`, checking
/// that the pieces arrive in order and add up to the blob's size, which is
/// returned. A blob over `size_bytes_max` is refused before its bytes.
/// With `progress` (a label), a large blob shows a progress bar.
pub async fn receive<W: AsyncWrite + Unpin, P: Piece>(
    stream: &mut Streaming<P>,
    writer: &mut W,
    offset: u64,
    size_bytes_max: u64,
    progress: Option<&str>,
) -> anyhow::Result<u64> {
    let mut position = offset;
    let mut size: Option<u64> = None;
    let mut bar = ProgressBar::hidden();
    while let Some(message) = stream.message().await.map_err(rpc_error)? {
        let size = *size.get_or_insert_with(|| {
            if let Some(label) = progress {
                bar = progress_bar(message.size_bytes(), false, label);
                bar.set_position(offset);
            }
            message.size_bytes()
        });
        anyhow::ensure!(
            size <= size_bytes_max,
            "the blob has {size} bytes, over the {size_bytes_max} expected"
        );
        anyhow::ensure!(
            message.offset() == position,
            "the node sent bytes at offset {} where {position} was expected",
            message.offset()
        );
        position = position
            .checked_add(message.data().len() as u64)
            .filter(|end| *end <= size)
            .with_context(|| format!("the node sent more than the blob's {size} bytes"))?;
        writer.write_all(message.data()).await?;
        bar.set_position(position);
    }
    writer.flush().await?;
    bar.finish_and_clear();
    let size = size.context("the node ended the download without sending the blob's size")?;
    anyhow::ensure!(
        position == size,
        "the download stopped at byte {position} of {size}; run the command again with --resume"
    );
    Ok(size)
}

/// The CID of a file, computed offline.
pub async fn cid_of_file(path: &Path) -> anyhow::Result<(Cid, u64)> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    let name = path.display().to_string();
    let cid = tokio::task::spawn_blocking(move || {
        cid_of_reader(
            BufReader::with_capacity(CID_READ_BUFFER_BYTES, file),
            PROFILE_UNIXFS_V1_2025,
        )
    })
    .await
    .context("the CID task failed")?
    .with_context(|| format!("cannot compute the CID of {name}"))?;
    Ok((cid, size))
}

/// The CID of bytes in memory.
pub fn cid_of_bytes(bytes: &[u8]) -> anyhow::Result<Cid> {
    cid_of_reader(bytes, PROFILE_UNIXFS_V1_2025).context("cannot compute the CID")
}

#[derive(Debug, Serialize)]
struct PutView {
    file: PathBuf,
    cid: String,
    size_bytes: u64,
    /// The department whose node stored the blob, when known.
    node: Option<String>,
}

async fn put(args: PutArgs, json: bool) -> anyhow::Result<()> {
    let file =
        File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let size = file
        .metadata()
        .with_context(|| format!("cannot read {}", args.file.display()))?
        .len();
    let target = args.connect.target()?;
    // No whole-call timeout: the answer comes only after the last byte.
    let mut blobs = client::blob_client(client::channel(&target, None).await?);
    let header = UploadHeader {
        expected_cid: args
            .expect_cid
            .map(|cid| cid.to_string())
            .unwrap_or_default(),
        ..UploadHeader::default()
    };
    let bar = progress_bar(size, json, "uploading");
    let response = upload(&mut blobs, ReadChunks(file), header, bar).await?;
    let view = PutView {
        file: args.file,
        cid: response.cid,
        size_bytes: response.size_bytes,
        node: target.name,
    };
    if json {
        return output::print_json(&view);
    }
    let mut fields = Fields::new();
    fields
        .add("cid", &view.cid)
        .add("size", format!("{} bytes", view.size_bytes));
    if let Some(node) = &view.node {
        fields.add("node", node);
    }
    output::print(&fields.render())
}

#[derive(Debug, Serialize)]
struct GetView {
    cid: String,
    file: PathBuf,
    size_bytes: u64,
    /// Bytes that were already in the file (`--resume`).
    resumed_from: u64,
    verified: bool,
}

async fn get(args: GetArgs, json: bool) -> anyhow::Result<()> {
    let (mut file, offset) = open_output(&args.out, args.resume, args.force).await?;
    let target = args.connect.target()?;
    // The node may first fetch the blob from its holder: no call timeout.
    let mut blobs = client::blob_client(client::channel(&target, None).await?);
    let mut stream = blobs
        .download(DownloadRequest {
            cid: args.cid.to_string(),
            offset,
            length: 0,
            access_transaction_id: args.access.map(|id| id.to_vec()).unwrap_or_default(),
            case_id: args.case.map(|id| id.to_vec()).unwrap_or_default(),
        })
        .await
        .map_err(|status| download_error(status, args.resume))?
        .into_inner();
    let progress = (!json).then_some("downloading");
    let size = receive(&mut stream, &mut file, offset, u64::MAX, progress).await?;
    file.sync_all()
        .await
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    drop(file);
    verify_download(&args.out, &args.cid).await?;
    let view = GetView {
        cid: args.cid.to_string(),
        file: args.out,
        size_bytes: size,
        resumed_from: offset,
        verified: true,
    };
    if json {
        return output::print_json(&view);
    }
    let mut fields = Fields::new();
    fields
        .add("cid", &view.cid)
        .add("file", view.file.display())
        .add("size", format!("{} bytes", view.size_bytes));
    if view.resumed_from > 0 {
        fields.add("resumed from", format!("byte {}", view.resumed_from));
    }
    fields.add("verified", "the file's CID matches");
    output::print(&fields.render())
}

fn download_error(status: tonic::Status, resume: bool) -> anyhow::Error {
    match status.code() {
        tonic::Code::OutOfRange if resume => anyhow::anyhow!(
            "{}; the existing file is longer than the blob: download again with --force",
            client::status_line(&status)
        ),
        tonic::Code::PermissionDenied => anyhow::anyhow!(
            "{}; a citizen's attribute needs --access with your department's access id (see `govchain identity access`)",
            client::status_line(&status)
        ),
        _ => rpc_error(status),
    }
}

/// Opens `--out` for writing and returns where the download starts: the
/// end of the file with `resume`, else 0 (an existing file needs `force`).
async fn open_output(
    path: &Path,
    resume: bool,
    force: bool,
) -> anyhow::Result<(tokio::fs::File, u64)> {
    let exists = tokio::fs::try_exists(path).await.unwrap_or(false);
    if exists && !resume && !force {
        anyhow::bail!(
            "{} already exists; pass --resume to continue a cut-off download, or --force to replace it",
            path.display()
        );
    }
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create(true).truncate(!resume);
    let mut file = options
        .open(path)
        .await
        .with_context(|| format!("cannot open {} for writing", path.display()))?;
    let offset = file.seek(io::SeekFrom::End(0)).await?;
    Ok((file, offset))
}

/// Checks the finished file's CID offline; on a mismatch the file is moved
/// to `FILE.mismatch`, so that nobody uses it by mistake.
async fn verify_download(path: &Path, expected: &Cid) -> anyhow::Result<()> {
    let (actual, _) = cid_of_file(path).await?;
    if actual == *expected {
        return Ok(());
    }
    let mut aside = path.as_os_str().to_owned();
    aside.push(".mismatch");
    let aside = PathBuf::from(aside);
    let moved = match tokio::fs::rename(path, &aside).await {
        Ok(()) => format!("it was moved to {}", aside.display()),
        Err(err) => format!("and it could not be moved aside ({err}): do not use it"),
    };
    anyhow::bail!(
        "the downloaded file has CID {actual}, not {expected}: it is damaged or, after --resume, \
         began with other bytes; {moved}; download again with --force"
    )
}

#[derive(Debug, Serialize)]
struct StatView {
    cid: String,
    size_bytes: u64,
    personal: bool,
    node: Option<String>,
}

async fn stat(args: StatArgs, json: bool) -> anyhow::Result<()> {
    let target = args.connect.target()?;
    let mut blobs = client::blob_client(client::connect_channel(&target).await?);
    let response = blobs
        .stat(StatRequest {
            cid: args.cid.to_string(),
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let view = StatView {
        cid: response.cid,
        size_bytes: response.size_bytes,
        personal: response.personal,
        node: target.name,
    };
    if json {
        return output::print_json(&view);
    }
    let mut fields = Fields::new();
    fields
        .add("cid", &view.cid)
        .add("size", format!("{} bytes", view.size_bytes))
        .add(
            "personal",
            if view.personal {
                "yes: a citizen's attribute; reads need a recorded access"
            } else {
                "no"
            },
        );
    if let Some(node) = &view.node {
        fields.add("node", node);
    }
    output::print(&fields.render())
}

#[derive(Debug, Serialize)]
struct CidView {
    file: PathBuf,
    cid: String,
    size_bytes: u64,
    profile: &'static str,
}

async fn cid(args: CidArgs, json: bool) -> anyhow::Result<()> {
    let (cid, size) = cid_of_file(&args.file).await?;
    if json {
        return output::print_json(&CidView {
            file: args.file,
            cid: cid.to_string(),
            size_bytes: size,
            profile: "unixfs-v1-2025",
        });
    }
    output::print(&cid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_file_has_the_ipfs_cid() {
        // `ipfs add --only-hash --cid-version 1 --raw-leaves` of an empty file.
        assert_eq!(
            cid_of_bytes(b"").expect("cid").to_string(),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
    }

    #[test]
    fn cids_and_transaction_ids_are_checked_when_parsed() {
        assert!(parse_cid("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku").is_ok());
        assert!(parse_cid("not-a-cid").is_err());
        assert!(parse_transaction_id(&"ab".repeat(32)).is_ok());
        assert!(parse_transaction_id("abc").is_err());
    }

    #[tokio::test]
    async fn a_resumed_output_starts_at_its_length() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("blob");
        std::fs::write(&path, b"12345").expect("write");
        let message = open_output(&path, false, false)
            .await
            .expect_err("exists")
            .to_string();
        assert!(message.contains("--resume"), "{message}");
        let (_, offset) = open_output(&path, true, false).await.expect("resume");
        assert_eq!(offset, 5);
        let (_, offset) = open_output(&path, false, true).await.expect("force");
        assert_eq!(offset, 0);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 0);
    }

    #[tokio::test]
    async fn a_mismatching_download_is_moved_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("blob");
        std::fs::write(&path, b"not empty").expect("write");
        let empty = cid_of_bytes(b"").expect("cid");
        let message = verify_download(&path, &empty)
            .await
            .expect_err("mismatch")
            .to_string();
        assert!(message.contains("not bafkrei"), "{message}");
        assert!(!path.exists());
        assert!(dir.path().join("blob.mismatch").exists());
    }
}
