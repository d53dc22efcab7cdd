//! `govchain admin backup` and `govchain admin restore`: online backup of a
//! running node over its `AdminService`, and offline restore of a data
//! directory from such a backup.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use govchain_node::backup::format::{
    BLOBS_DUMP_FILE, LEDGER_DUMP_FILE, MANIFEST_FILE, MANIFEST_FORMAT_VERSION, Manifest,
    ManifestFile,
};
use govchain_node::backup::{RestoreOptions, restore};
use govchain_pki::{ADMIN_CERTIFICATE_FILE, ADMIN_KEY_FILE};
use govchain_proto::admin::v1::admin_service_client::AdminServiceClient;
use govchain_proto::admin::v1::{BackupHeader, BackupRequest, backup_response::Item};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::client::{self, ConnectArgs};
use crate::output::{self, Fields};

/// A backup message: 1 MiB of data plus framing, as the node sends.
const BACKUP_MESSAGE_BYTES_MAX: usize = 1024 * 1024 + 64 * 1024;

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Copy a running node's ledger and blob store into a directory,
    /// without pausing consensus.
    #[command(
        long_about = "Copy a running node's ledger and blob store into --out, without pausing \
            consensus: the node streams one consistent snapshot (a redb read transaction) \
            while it keeps committing. Needs an admin certificate of the node's own \
            department (admin.crt from `govchain certs init`, or `govchain certs issue-client \
            --admin`); with --dir, the department's admin.crt is used. manifest.json (chain \
            id, genesis hash, height, head hash, each file's SHA-256) is written last: a \
            directory without it is a partial backup. The validator's consensus records are \
            not copied.",
        after_help = "Examples:\n  \
            govchain admin backup --dir devnet --department health --out backups/health-1\n  \
            govchain admin backup --node https://health.example.org:7050 --ca certs/ca.crt \\\n    \
            --cert ops/admin.crt --key ops/admin.key --out /backups/health/2026-12-04"
    )]
    Backup(BackupArgs),
    /// Rebuild a node's data directory from a backup; the node then
    /// catches up from its peers.
    #[command(
        long_about = "Rebuild a node's data directory from a `govchain admin backup` directory, \
            offline (the node must be stopped). Checks the manifest (refusing a partial \
            backup), that the backup is of the chain --genesis defines (refusing another \
            chain id or genesis), and every file's length and SHA-256, before writing \
            anything; refuses a non-empty --data-dir unless --force. Then imports the ledger \
            and blob store, opens and checks the ledger, and checks its head against the \
            manifest. Start the node as before: it catches up from its peers by state \
            transfer.",
        after_help = "Example:\n  \
            govchain admin restore --from backups/health-1 --data-dir devnet/nodes/health \\\n    \
            --genesis devnet/genesis.json --force\n  \
            govchain ledger verify --data-dir devnet/nodes/health --genesis devnet/genesis.json"
    )]
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
struct BackupArgs {
    /// Directory to write the backup into; it must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
struct RestoreArgs {
    /// The backup directory (`govchain admin backup --out`).
    #[arg(long, value_name = "DIR")]
    from: PathBuf,
    /// The node's data directory to rebuild (`data_dir` in node.toml).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// The chain's genesis file: the backup must be of this chain.
    #[arg(long, value_name = "FILE")]
    genesis: PathBuf,
    /// Replace the ledger, consensus records and blob store in --data-dir.
    #[arg(long)]
    force: bool,
}

pub async fn run(args: AdminArgs, json: bool) -> anyhow::Result<()> {
    match args.command {
        AdminCommand::Backup(args) => backup(args, json).await,
        AdminCommand::Restore(args) => {
            tokio::task::spawn_blocking(move || restore_command(&args, json)).await?
        }
    }
}

async fn backup(args: BackupArgs, json: bool) -> anyhow::Result<()> {
    prepare_out_dir(&args.out)?;
    let mut target = args.connect.target()?;
    if args.connect.cert.is_none() && args.connect.key.is_none() {
        // With --dir: the department's admin certificate, next to its client one.
        target.cert = target.cert.with_file_name(ADMIN_CERTIFICATE_FILE);
        target.key = target.key.with_file_name(ADMIN_KEY_FILE);
    }
    let channel = client::channel(&target, None).await?;
    let mut admin =
        AdminServiceClient::new(channel).max_decoding_message_size(BACKUP_MESSAGE_BYTES_MAX);
    let mut stream = admin
        .backup(BackupRequest {})
        .await
        .map_err(backup_error)?
        .into_inner();
    let bar = progress_bar(json);
    let mut receiver = Receiver::new(&args.out, bar.clone());
    while let Some(response) = stream.message().await.map_err(backup_error)? {
        if receiver.take(response.item)? {
            break;
        }
    }
    bar.finish_and_clear();
    let manifest = receiver.finish()?;
    print_backup(&args.out, &manifest, json)
}

/// The node's `PERMISSION_DENIED` already says which certificate it wants.
fn backup_error(status: tonic::Status) -> anyhow::Error {
    if status.code() == tonic::Code::PermissionDenied {
        return anyhow::anyhow!("{}", client::status_line(&status));
    }
    client::rpc_error(status)
}

fn progress_bar(json: bool) -> indicatif::ProgressBar {
    crate::output::progress_bar(
        json,
        0,
        "{msg} [{bar:40}] {bytes}/~{total_bytes} ({bytes_per_sec}, {eta})",
        "backing up",
    )
}

/// An absent or empty directory; a backup never mixes with other files.
fn prepare_out_dir(out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        let mut entries =
            fs::read_dir(out).with_context(|| format!("cannot read {}", out.display()))?;
        anyhow::ensure!(
            entries.next().is_none(),
            "{} is not empty; back up into a new directory",
            out.display()
        );
    }
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))
}

/// Writes the stream's files and checks each against the node's length
/// and SHA-256.
struct Receiver<'a> {
    out: &'a Path,
    bar: indicatif::ProgressBar,
    header: Option<BackupHeader>,
    current: Option<(String, fs::File, Sha256, u64)>,
    files: Vec<ManifestFile>,
}

impl<'a> Receiver<'a> {
    fn new(out: &'a Path, bar: indicatif::ProgressBar) -> Self {
        Self {
            out,
            bar,
            header: None,
            current: None,
            files: Vec::new(),
        }
    }

    /// Handles one message; true once the node said the backup is finished.
    fn take(&mut self, item: Option<Item>) -> anyhow::Result<bool> {
        match item {
            Some(Item::Header(header)) => {
                anyhow::ensure!(self.header.is_none(), "the node sent two backup headers");
                self.bar.set_length(header.estimated_bytes);
                self.header = Some(header);
            }
            Some(Item::Chunk(chunk)) => self.chunk(&chunk.file, &chunk.data)?,
            Some(Item::FileEnd(end)) => self.file_end(&end.file, end.bytes, &end.sha256)?,
            Some(Item::Finished(_)) => return Ok(true),
            None => anyhow::bail!("the node sent an empty backup message"),
        }
        Ok(false)
    }

    fn chunk(&mut self, file: &str, data: &[u8]) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.header.is_some(),
            "the node sent data before its header"
        );
        if self.current.is_none() {
            anyhow::ensure!(
                [LEDGER_DUMP_FILE, BLOBS_DUMP_FILE].contains(&file)
                    && !self.files.iter().any(|f| f.name == file),
                "the node sent an unexpected backup file {file:?}"
            );
            let path = self.out.join(file);
            let handle = fs::File::create_new(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            self.current = Some((file.to_owned(), handle, Sha256::new(), 0));
        }
        let Some((name, handle, hasher, bytes)) = self.current.as_mut() else {
            anyhow::bail!("no backup file is open");
        };
        anyhow::ensure!(name == file, "the node interleaved {name:?} and {file:?}");
        handle
            .write_all(data)
            .with_context(|| format!("cannot write {}", self.out.join(file).display()))?;
        hasher.update(data);
        *bytes += data.len() as u64;
        self.bar.inc(data.len() as u64);
        if self.bar.position() > self.bar.length().unwrap_or(0) {
            self.bar.set_length(self.bar.position());
        }
        Ok(())
    }

    fn file_end(&mut self, file: &str, sent_bytes: u64, sent_sha256: &[u8]) -> anyhow::Result<()> {
        let (name, handle, hasher, bytes) = self
            .current
            .take()
            .with_context(|| format!("the node ended {file:?}, which it never began"))?;
        anyhow::ensure!(
            name == file,
            "the node ended {file:?} while sending {name:?}"
        );
        handle
            .sync_all()
            .with_context(|| format!("cannot sync {}", self.out.join(file).display()))?;
        let sha256 = hasher.finalize().to_vec();
        anyhow::ensure!(
            bytes == sent_bytes && sha256 == sent_sha256,
            "{file}: wrote {bytes} bytes with SHA-256 {}, the node sent {sent_bytes} bytes with SHA-256 {}",
            hex::encode(&sha256),
            hex::encode(sent_sha256)
        );
        self.files.push(ManifestFile {
            name,
            bytes,
            sha256: hex::encode(sha256),
        });
        Ok(())
    }

    /// Writes `manifest.json` last, atomically: only a complete backup has one.
    fn finish(self) -> anyhow::Result<Manifest> {
        let header = self.header.context("the node sent no backup header")?;
        anyhow::ensure!(self.current.is_none(), "the node finished mid-file");
        let manifest = Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            chain_id: header.chain_id,
            genesis_hash: hex::encode(&header.genesis_hash),
            height: header.height,
            head_hash: hex::encode(&header.head_hash),
            node: header.node,
            created_at_ms: header.created_at_ms,
            files: self.files,
        };
        let partial = self.out.join(format!("{MANIFEST_FILE}.partial"));
        let mut text = serde_json::to_vec_pretty(&manifest)?;
        text.push(b'\n');
        let mut file = fs::File::create(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        file.write_all(&text)?;
        file.sync_all()?;
        fs::rename(&partial, self.out.join(MANIFEST_FILE))
            .with_context(|| format!("cannot write {}", self.out.join(MANIFEST_FILE).display()))?;
        fs::File::open(self.out)?.sync_all()?;
        Ok(manifest)
    }
}

#[derive(Serialize)]
struct BackupView<'a> {
    out: &'a Path,
    #[serde(flatten)]
    manifest: &'a Manifest,
}

fn print_backup(out: &Path, manifest: &Manifest, json: bool) -> anyhow::Result<()> {
    if json {
        return output::print_json(&BackupView { out, manifest });
    }
    let mut fields = Fields::new();
    fields
        .add("backup", out.display())
        .add("node", &manifest.node)
        .add("chain id", &manifest.chain_id)
        .add("height", manifest.height)
        .add("head", &manifest.head_hash);
    for file in &manifest.files {
        fields.add(
            &file.name,
            format!("{} bytes, sha256 {}", file.bytes, file.sha256),
        );
    }
    output::print(&fields.render())
}

fn restore_command(args: &RestoreArgs, json: bool) -> anyhow::Result<()> {
    let genesis = govchain_pki::Genesis::load(&args.genesis)
        .with_context(|| format!("cannot load genesis {}", args.genesis.display()))?;
    let report = restore(&RestoreOptions {
        from: args.from.clone(),
        data_dir: args.data_dir.clone(),
        genesis,
        force: args.force,
    })?;
    if json {
        return output::print_json(&BackupView {
            out: &args.data_dir,
            manifest: &report.manifest,
        });
    }
    let mut fields = Fields::new();
    fields
        .add("restored", args.data_dir.display())
        .add("from", args.from.display())
        .add("node backed up", &report.manifest.node)
        .add("height", report.head.height)
        .add("head", report.head.hash.to_hex());
    output::print(&format!(
        "{}\n\nStart the node as before; it catches up from its peers by state transfer.",
        fields.render()
    ))
}
