//! `govchain ingest`: de-identify an export from a legacy system
//! (`govchain_deid`), store the de-identified batch in the node's blob
//! store, and record it on chain as a new version of a dataset in the
//! department's namespace.
//!
//! When the dataset has a directory entry (`govchain directory publish`),
//! the version is a `DatasetVersion`: the batch's CID, row count, the rules'
//! hash and, with `--report`, the k-anonymity report, numbered by the chain
//! and served under the entry's access policy. Nothing is published
//! implicitly: without an entry, a version is an ordinary `AnchorRecord`:
//! dataset `<department>/<NAME>`, record id `v<N>` (1, 2, … with no gaps, so
//! the versions can be walked with `GetAnchor`), record hash the SHA-256 of
//! the de-identified bytes, and the schema field
//! `govchain-ingest/v1 cid=… rows=… skipped=… rules=… k=…`.

mod secret;

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use govchain_blobstore::ReadChunks;
use govchain_crypto::{Digest, SigningKey};
use govchain_deid::{Format, Options, Rules, Summary, TransformError};
use govchain_proto::blob::v1::UploadHeader;
use govchain_proto::directory::v1::GetDatasetRequest;
use govchain_proto::node::v1::GetAnchorRequest;
use govchain_proto::node::v1::node_service_client::NodeServiceClient;
use govchain_proto::types::v1::{DatasetVersion, KAnonymityReport, Transaction, transaction::Body};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tonic::Code;
use tonic::transport::Channel;

use crate::client::{self, ConnectArgs, rpc_error};
use crate::cmd::blob;
use crate::cmd::directory::directory_client;
use crate::cmd::keys::load_signing_key;
use crate::cmd::record::{next_nonce, node_chain_id, sign_checked};
use crate::cmd::tx::{TransactionView, parse_duration, submit_envelope, wait_for_commit};
use crate::envelope::{self, Anchor};
use crate::output::{self, Fields};

/// Inputs at least this large show a progress bar (on a terminal).
const PROGRESS_BYTES_MIN: u64 = 16 * 1024 * 1024;
/// Bad rows printed on stderr; the rest are counted.
const ROW_ERRORS_PRINTED_MAX: usize = 20;
/// Buffer of the de-identified output file.
const OUTPUT_BUFFER_BYTES: usize = 1024 * 1024;
/// The schema's tag; the format of the rest is documented on [`schema`].
pub const SCHEMA_TAG: &str = "govchain-ingest/v1";
/// Longest schema an anchor takes (`exec`'s name limit).
const SCHEMA_BYTES_MAX: usize = 256;
/// Longest schema we write: the tag, a CID of at most 64 characters, three
/// u64s, the 64 hex digits of the rules hash and the keys and spaces.
const SCHEMA_BYTES_WRITTEN_MAX: usize = SCHEMA_TAG.len() + 64 + 3 * 20 + 64 + 32;

const _: () = assert!(SCHEMA_BYTES_WRITTEN_MAX <= SCHEMA_BYTES_MAX);

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// The export: CSV with a header line (.csv), or JSON Lines (.jsonl, .ndjson).
    #[arg(value_name = "FILE", required_unless_present = "new_secret")]
    input: Option<PathBuf>,
    /// The rules file (TOML): what happens to each field.
    #[arg(
        long,
        value_name = "RULES_TOML",
        required_unless_present = "new_secret"
    )]
    rules: Option<PathBuf>,
    /// The dataset's name in your department's namespace: `benefits` becomes
    /// `<department>/benefits` (a name that already starts with
    /// `<department>/` is taken as it is).
    #[arg(long, value_name = "NAME", required_unless_present_any = ["new_secret", "dry_run"])]
    dataset: Option<String>,
    /// The department secret for pseudonyms: 32 or more random bytes, mode
    /// 0600. It never leaves this machine.
    #[arg(
        long,
        env = "GOVCHAIN_INGEST_SECRET",
        value_name = "FILE",
        required_unless_present = "new_secret"
    )]
    secret_file: Option<PathBuf>,
    /// Make a new department secret in FILE (32 random bytes, mode 0600) and exit.
    #[arg(long, value_name = "FILE", exclusive = true)]
    new_secret: Option<PathBuf>,
    /// The export's format; default: from the file's extension.
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Stop at the first bad row (exit 2, naming its line) instead of skipping it.
    #[arg(long)]
    strict: bool,
    /// Print the k-anonymity report and store k with the version.
    #[arg(long)]
    report: bool,
    /// Only transform and report: nothing is uploaded or anchored.
    #[arg(long)]
    dry_run: bool,
    /// Also write the de-identified output to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Ed25519 signing key of your department (PKCS#8 PEM).
    #[arg(
        long,
        env = "GOVCHAIN_SIGNING_KEY",
        value_name = "KEYFILE",
        required_unless_present_any = ["new_secret", "dry_run"]
    )]
    signing_key: Option<PathBuf>,
    /// How long to wait for the anchor to commit, e.g. 30s, 2m.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Csv,
    Jsonl,
}

pub async fn run(args: IngestArgs, json: bool) -> anyhow::Result<()> {
    if let Some(path) = &args.new_secret {
        secret::create(path)?;
        if json {
            return output::print_json(&serde_json::json!({
                "secret_file": path,
                "size_bytes": secret::NEW_SECRET_BYTES,
            }));
        }
        return output::print(&format!(
            "made a new department secret in {} ({} random bytes, mode 0600)\n\
             Keep it with the department's keys: the same secret gives the same pseudonyms, \
             and it must never leave the department.",
            path.display(),
            secret::NEW_SECRET_BYTES
        ));
    }
    let input = required(&args.input, "FILE")?;
    let rules_path = required(&args.rules, "--rules")?;
    let rules_bytes = std::fs::read(rules_path)
        .with_context(|| format!("cannot read the rules file {}", rules_path.display()))?;
    let rules = Rules::parse(&rules_bytes)
        .with_context(|| format!("the rules file {} cannot be used", rules_path.display()))?;
    let key = secret::load(required(&args.secret_file, "--secret-file")?)?;
    let format = format_of(input, args.format)?;
    let destination = if args.dry_run {
        None
    } else {
        Some(destination(&args)?)
    };
    let batch = deidentify(input, format, rules.clone(), key, args.strict, json).await?;
    print_bad_rows(&batch.summary);
    if let Some(out) = &args.out {
        std::fs::copy(batch.file.path(), out)
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    let mut view = IngestView::new(&args, &rules, &batch);
    let Some(destination) = destination else {
        return print_view(&view, json);
    };
    anyhow::ensure!(
        batch.summary.rows_written > 0,
        "no row of {} passed the rules; nothing was uploaded or anchored",
        input.display()
    );
    publish(destination, args.timeout, &batch, &mut view, json).await?;
    print_view(&view, json)
}

fn required<'a, T>(value: &'a Option<T>, name: &str) -> anyhow::Result<&'a T> {
    value
        .as_ref()
        .with_context(|| format!("{name} is required (see `govchain ingest --help`)"))
}

fn format_of(input: &Path, given: Option<FormatArg>) -> anyhow::Result<Format> {
    if let Some(format) = given {
        return Ok(match format {
            FormatArg::Csv => Format::Csv,
            FormatArg::Jsonl => Format::Jsonl,
        });
    }
    let extension = input
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("csv") => Ok(Format::Csv),
        Some("jsonl" | "ndjson") => Ok(Format::Jsonl),
        _ => anyhow::bail!(
            "cannot tell the format of {} from its extension; pass --format csv or --format jsonl",
            input.display()
        ),
    }
}

/// The de-identified batch, in a temporary file readable only by its owner.
struct Batch {
    file: tempfile::NamedTempFile,
    sha256: Digest,
    size_bytes: u64,
    summary: Summary,
}

/// Streams `input` through the rules into a temporary file, on a blocking
/// thread, hashing the output as it is written.
async fn deidentify(
    input: &Path,
    format: Format,
    rules: Rules,
    key: govchain_deid::PseudonymKey,
    strict: bool,
    json: bool,
) -> anyhow::Result<Batch> {
    let source = File::open(input).with_context(|| format!("cannot open {}", input.display()))?;
    let size = source
        .metadata()
        .with_context(|| format!("cannot read {}", input.display()))?
        .len();
    let bar = progress(size, json);
    let name = input.display().to_string();
    tokio::task::spawn_blocking(move || {
        let mut file = tempfile::NamedTempFile::new()
            .context("cannot create a temporary file for the de-identified output")?;
        let mut sink = HashingWriter::new(BufWriter::with_capacity(OUTPUT_BUFFER_BYTES, &mut file));
        let result = govchain_deid::transform(
            format,
            bar.wrap_read(source),
            &mut sink,
            &rules,
            &key,
            Options { strict },
        );
        bar.finish_and_clear();
        let summary = result.map_err(|err| transform_error(err, &name))?;
        let (sha256, size_bytes) = sink
            .finish()
            .context("cannot write the de-identified output")?;
        Ok(Batch {
            file,
            sha256,
            size_bytes,
            summary,
        })
    })
    .await
    .context("the de-identification task failed")?
}

fn transform_error(err: TransformError, input: &str) -> anyhow::Error {
    match err {
        TransformError::Row(row) => anyhow::anyhow!(
            "{input} {row} (--strict: nothing was uploaded or anchored; fix the row or run without --strict to skip bad rows)"
        ),
        other => anyhow::Error::new(other).context(format!("cannot ingest {input}")),
    }
}

fn progress(size: u64, json: bool) -> indicatif::ProgressBar {
    if json || size < PROGRESS_BYTES_MIN || !io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    output::progress_bar(
        false,
        size,
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        "de-identifying",
    )
}

/// A writer that hashes and counts what passes through it.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    size_bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            size_bytes: 0,
        }
    }

    fn finish(mut self) -> io::Result<(Digest, u64)> {
        self.inner.flush()?;
        Ok((
            Digest::from_bytes(self.hasher.finalize().into()),
            self.size_bytes,
        ))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.size_bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Bad rows go to stderr by line number, never with their values.
fn print_bad_rows(summary: &Summary) {
    for error in summary.errors.iter().take(ROW_ERRORS_PRINTED_MAX) {
        eprintln!("skipped {error}");
    }
    let more = summary
        .rows_skipped
        .saturating_sub(ROW_ERRORS_PRINTED_MAX.min(summary.errors.len()) as u64);
    if more > 0 {
        eprintln!("skipped {more} more bad rows (--json lists the first 1000)");
    }
}

/// The dataset's name on chain: in the department's namespace.
fn namespaced(department: &str, name: &str) -> String {
    let prefix = format!("{department}/");
    if name.starts_with(&prefix) {
        name.to_owned()
    } else {
        format!("{prefix}{name}")
    }
}

/// The schema of a version's anchor: `govchain-ingest/v1 cid=<CID>
/// rows=<written> skipped=<skipped> rules=<hex SHA-256> k=<k or ->`.
/// `k=-` when k was not computed (no `--report`, no quasi-identifier, or
/// too many groups).
pub fn schema(cid: &str, summary: &Summary, rules_hash: &str, k: Option<u64>) -> String {
    let k = k.map_or_else(|| "-".to_owned(), |k| k.to_string());
    format!(
        "{SCHEMA_TAG} cid={cid} rows={} skipped={} rules={rules_hash} k={k}",
        summary.rows_written, summary.rows_skipped
    )
}

/// Where and as whom a batch is published, checked before any work.
struct Destination {
    target: client::Target,
    dataset: String,
    signing_key: SigningKey,
}

/// Reads the connection, the department of the client certificate and the
/// signing key, and refuses a dataset name the chain would refuse, before
/// the export is read.
fn destination(args: &IngestArgs) -> anyhow::Result<Destination> {
    let target = args.connect.target()?;
    let department = department_of(&target)?;
    let name = required(&args.dataset, "--dataset")?;
    let dataset = namespaced(&department, name);
    let signing_key = load_signing_key(required(&args.signing_key, "--signing-key")?)?;
    let preflight = Anchor {
        dataset: dataset.clone(),
        record_id: format!("v{}", u64::MAX),
        record_hash: Digest::sha256(b""),
        schema: SCHEMA_TAG.to_owned(),
        record_time_ms: 0,
    };
    sign_checked(&signing_key, "preflight", 1, &preflight)
        .with_context(|| format!("--dataset {name:?} cannot be used"))?;
    Ok(Destination {
        target,
        dataset,
        signing_key,
    })
}

/// Uploads the batch, anchors the version, and checks the anchor.
async fn publish(
    destination: Destination,
    timeout: Duration,
    batch: &Batch,
    view: &mut IngestView,
    json: bool,
) -> anyhow::Result<()> {
    let Destination {
        target,
        dataset,
        signing_key,
    } = destination;
    let channel = client::channel(&target, None).await?;
    let mut blobs = client::blob_client(channel.clone());
    let file = batch
        .file
        .reopen()
        .context("cannot read back the de-identified output")?;
    let bar = blob::progress_bar(batch.size_bytes, json, "uploading");
    let uploaded = blob::upload(&mut blobs, ReadChunks(file), UploadHeader::default(), bar).await?;
    anyhow::ensure!(
        uploaded.size_bytes == batch.size_bytes,
        "the node stored {} bytes of the {} de-identified bytes",
        uploaded.size_bytes,
        batch.size_bytes
    );
    let mut node = client::connect(&target).await?;
    if has_directory_entry(channel.clone(), &dataset).await? {
        let record = DirectoryVersion {
            node: &mut node,
            channel,
            signing_key: &signing_key,
            dataset: &dataset,
            timeout,
        };
        let (number, committed) = record.append(batch, &uploaded.cid, view).await?;
        view.published = Some(Published {
            cid: uploaded.cid,
            dataset,
            record_id: String::new(),
            version: number,
            schema: String::new(),
            directory: true,
            transaction: committed,
        });
        return Ok(());
    }
    let version = next_version(&mut node, &dataset).await?;
    let anchor = Anchor {
        dataset: dataset.clone(),
        record_id: format!("v{version}"),
        record_hash: batch.sha256,
        schema: schema(&uploaded.cid, &batch.summary, &view.rules_sha256, view.k),
        record_time_ms: now_ms(),
    };
    let chain_id = node_chain_id(&mut node).await?;
    let nonce = next_nonce(&mut node, &signing_key).await?;
    let signed = sign_checked(&signing_key, &chain_id, nonce, &anchor)?;
    submit_envelope(&mut node, signed.envelope).await?;
    let committed = TransactionView::new(
        &signed.id,
        &wait_for_commit(&mut node, &signed.id, timeout).await?,
    );
    if committed.failed() {
        anyhow::bail!(
            "the anchor was committed but failed: {}",
            committed
                .result
                .as_ref()
                .map_or("no reason given", |result| result.error.as_str())
        );
    }
    check_first_version(&mut node, &anchor).await?;
    view.published = Some(Published {
        cid: uploaded.cid,
        dataset,
        record_id: anchor.record_id,
        version,
        schema: anchor.schema,
        directory: false,
        transaction: committed,
    });
    Ok(())
}

/// Whether the dataset has a directory entry: then a version is a
/// `DatasetVersion`, else an anchor.
async fn has_directory_entry(channel: Channel, dataset: &str) -> anyhow::Result<bool> {
    let response = directory_client(channel)
        .get_dataset(GetDatasetRequest {
            dataset: dataset.to_owned(),
            page_size: 1,
            page_token: String::new(),
        })
        .await;
    match response {
        Ok(_) => Ok(true),
        Err(status) if status.code() == Code::NotFound => Ok(false),
        Err(status) => Err(rpc_error(status)),
    }
}

/// Appending a batch as a version of a dataset in the directory.
struct DirectoryVersion<'a> {
    node: &'a mut NodeServiceClient<Channel>,
    channel: Channel,
    signing_key: &'a SigningKey,
    dataset: &'a str,
    timeout: Duration,
}

impl DirectoryVersion<'_> {
    /// Signs, submits and awaits the `DatasetVersion`; returns the number
    /// the chain gave it and the committed transaction.
    async fn append(
        self,
        batch: &Batch,
        cid: &str,
        view: &IngestView,
    ) -> anyhow::Result<(u64, TransactionView)> {
        let body = DatasetVersion {
            dataset: self.dataset.to_owned(),
            batch_cid: cid.to_owned(),
            row_count: batch.summary.rows_written,
            rules_hash: hex::decode(&view.rules_sha256).context("the rules hash is not hex")?,
            k_anonymity: view.k_anonymity.as_ref().map(|report| KAnonymityReport {
                smallest_group_size: report.k.unwrap_or(0),
                quasi_identifiers: report.columns.clone(),
                groups: report.groups,
            }),
        };
        let transaction = Transaction {
            body: Some(Body::DatasetVersion(body)),
        };
        let chain_id = node_chain_id(self.node).await?;
        let nonce = next_nonce(self.node, self.signing_key).await?;
        let signed = envelope::sign(self.signing_key, &chain_id, nonce, &transaction);
        govchain_exec::check_envelope(
            signed.envelope.clone(),
            &chain_id,
            crate::cmd::record::PAYLOAD_BYTES_MAX,
            |_, _| false,
        )
        .context("the dataset version would be refused")?;
        submit_envelope(self.node, signed.envelope).await?;
        let committed = TransactionView::new(
            &signed.id,
            &wait_for_commit(self.node, &signed.id, self.timeout).await?,
        );
        if committed.failed() {
            anyhow::bail!(
                "the dataset version was committed but failed: {}",
                committed
                    .result
                    .as_ref()
                    .map_or("no reason given", |result| result.error.as_str())
            );
        }
        let number = self.number_of(&signed.id).await?;
        Ok((number, committed))
    }

    /// The number the chain gave the version this transaction appended:
    /// one of the newest, since versions only grow.
    async fn number_of(&self, id: &Digest) -> anyhow::Result<u64> {
        let response = directory_client(self.channel.clone())
            .get_dataset(GetDatasetRequest {
                dataset: self.dataset.to_owned(),
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .map_err(rpc_error)?
            .into_inner();
        response
            .versions
            .iter()
            .find(|version| version.transaction_id == id.as_bytes())
            .map(|version| version.number)
            .context("the committed version is not among the dataset's newest 100")
    }
}

/// The department a client certificate acts for: the namespace its key may
/// anchor in.
fn department_of(target: &client::Target) -> anyhow::Result<String> {
    let pem = govchain_pki::read_pem(&target.cert).with_context(|| {
        format!(
            "cannot read the client certificate {}",
            target.cert.display()
        )
    })?;
    let identity = govchain_pki::identity_from_certificate_pem(&pem).with_context(|| {
        format!(
            "the client certificate {} names no department",
            target.cert.display()
        )
    })?;
    Ok(identity.department)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Whether record `v<version>` of `dataset` is anchored.
async fn version_exists(
    node: &mut NodeServiceClient<Channel>,
    dataset: &str,
    version: u64,
) -> anyhow::Result<bool> {
    let response = node
        .get_anchor(GetAnchorRequest {
            dataset: dataset.to_owned(),
            record_id: format!("v{version}"),
            prove: false,
        })
        .await;
    match response {
        Ok(response) => Ok(response.into_inner().anchored.is_some()),
        Err(status) if status.code() == Code::NotFound => Ok(false),
        Err(status) => Err(rpc_error(status)),
    }
}

/// The first version not anchored yet. Versions are dense (v1, v2, … with
/// no gap), so doubling then bisecting finds it in O(log n) reads.
async fn next_version(node: &mut NodeServiceClient<Channel>, dataset: &str) -> anyhow::Result<u64> {
    let mut high: u64 = 1;
    while version_exists(node, dataset, high).await? {
        high = high
            .checked_mul(2)
            .context("the dataset has too many versions")?;
    }
    // v(high) is free; every version up to `low` exists.
    let mut low = high / 2;
    while low + 1 < high {
        let middle = low + (high - low) / 2;
        if version_exists(node, dataset, middle).await? {
            low = middle;
        } else {
            high = middle;
        }
    }
    Ok(low + 1)
}

/// Two ingests of one dataset at once could pick the same `v<N>`; the chain
/// keeps both (the second as version 2 of that record), so the later one
/// finds out here and says so rather than reporting success.
async fn check_first_version(
    node: &mut NodeServiceClient<Channel>,
    anchor: &Anchor,
) -> anyhow::Result<()> {
    let anchored = node
        .get_anchor(GetAnchorRequest {
            dataset: anchor.dataset.clone(),
            record_id: anchor.record_id.clone(),
            prove: false,
        })
        .await
        .map_err(rpc_error)?
        .into_inner()
        .anchored
        .context("the committed anchor is not in the node's state")?;
    let hash = anchored.record.map(|record| record.record_hash);
    anyhow::ensure!(
        anchored.version == 1 && hash == Some(anchor.record_hash.to_vec()),
        "{} {} was anchored by another ingest at the same time (it is now at version {}); \
         both are on chain: run the ingest again to anchor this batch as the next version",
        anchor.dataset,
        anchor.record_id,
        anchored.version
    );
    Ok(())
}

#[derive(Debug, Serialize)]
struct IngestView {
    input: PathBuf,
    format: Format,
    rules_sha256: String,
    rows_read: u64,
    rows_kept: u64,
    rows_skipped: u64,
    /// The first bad rows, by line (never with their values).
    bad_rows: Vec<govchain_deid::RowError>,
    output_sha256: String,
    output_bytes: u64,
    columns: Vec<String>,
    /// With `--report`: the k-anonymity report.
    #[serde(skip_serializing_if = "Option::is_none")]
    k_anonymity: Option<govchain_deid::KReport>,
    /// k as stored in the anchor (`None` without `--report`).
    k: Option<u64>,
    dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    published: Option<Published>,
}

#[derive(Debug, Serialize)]
struct Published {
    cid: String,
    dataset: String,
    /// The anchor's record id; empty for a directory version.
    record_id: String,
    version: u64,
    /// The anchor's schema; empty for a directory version.
    schema: String,
    /// Whether the version is a `DatasetVersion` in the directory (else an
    /// anchor).
    directory: bool,
    transaction: TransactionView,
}

impl IngestView {
    fn new(args: &IngestArgs, rules: &Rules, batch: &Batch) -> Self {
        let summary = &batch.summary;
        let report = args.report.then(|| summary.k_anonymity.clone());
        Self {
            input: args.input.clone().unwrap_or_default(),
            format: summary.format,
            rules_sha256: rules.hash_hex(),
            rows_read: summary.rows_read,
            rows_kept: summary.rows_written,
            rows_skipped: summary.rows_skipped,
            bad_rows: summary.errors.clone(),
            output_sha256: batch.sha256.to_hex(),
            output_bytes: batch.size_bytes,
            columns: summary.columns.clone(),
            k: report.as_ref().and_then(|report| report.k),
            k_anonymity: report,
            dry_run: args.dry_run,
            published: None,
        }
    }
}

fn print_view(view: &IngestView, json: bool) -> anyhow::Result<()> {
    if json {
        return output::print_json(view);
    }
    let mut fields = Fields::new();
    if let Some(published) = &view.published {
        fields
            .add("cid", &published.cid)
            .add("dataset", &published.dataset)
            .add(
                "version",
                if published.directory {
                    format!("{} (in the directory)", published.version)
                } else {
                    format!("{} (record id {})", published.version, published.record_id)
                },
            )
            .add("transaction", &published.transaction.transaction_id);
        if let Some(height) = published.transaction.block_height {
            fields.add("block height", height);
        }
    }
    fields
        .add("rows kept", view.rows_kept)
        .add("rows skipped", view.rows_skipped)
        .add("columns", view.columns.join(", "))
        .add("output sha256", &view.output_sha256)
        .add("rules sha256", &view.rules_sha256);
    if let Some(report) = &view.k_anonymity {
        fields.add("k-anonymity", k_text(report));
    }
    let mut text = fields.render();
    if view.dry_run {
        text.push_str("\n\nDry run: nothing was uploaded or anchored.");
    }
    output::print(&text)
}

fn k_text(report: &govchain_deid::KReport) -> String {
    let columns = report.columns.join(", ");
    match report.k {
        _ if report.columns.is_empty() => {
            "not computed: the rules mark no quasi_identifier".to_owned()
        }
        _ if report.overflowed => format!(
            "not computed: more than {} distinct combinations of {columns}; generalise them further",
            govchain_deid::GROUPS_MAX
        ),
        None => "not computed: no row was kept".to_owned(),
        Some(k) => format!(
            "k = {k} (smallest group over {columns}; {} distinct combinations)",
            report.groups
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datasets_live_in_the_departments_namespace() {
        assert_eq!(namespaced("health", "benefits"), "health/benefits");
        assert_eq!(namespaced("health", "health/benefits"), "health/benefits");
        assert_eq!(namespaced("health", "healthy/x"), "health/healthy/x");
    }

    #[test]
    fn the_schema_fits_an_anchor_with_the_largest_values() {
        let summary = Summary {
            format: Format::Csv,
            columns: Vec::new(),
            rows_read: u64::MAX,
            rows_written: u64::MAX,
            rows_skipped: u64::MAX,
            errors: Vec::new(),
            k_anonymity: govchain_deid::KCounter::new(Vec::new()).report(),
        };
        let cid = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";
        let text = schema(cid, &summary, &"ab".repeat(32), Some(u64::MAX));
        assert!(text.len() <= SCHEMA_BYTES_WRITTEN_MAX, "{}", text.len());
        assert_eq!(
            schema(cid, &summary, "r", None),
            format!(
                "govchain-ingest/v1 cid={cid} rows={} skipped={} rules=r k=-",
                u64::MAX,
                u64::MAX
            )
        );
    }

    #[test]
    fn the_format_comes_from_the_extension_or_the_flag() {
        assert_eq!(format_of(Path::new("a.CSV"), None).ok(), Some(Format::Csv));
        assert_eq!(
            format_of(Path::new("a.ndjson"), None).ok(),
            Some(Format::Jsonl)
        );
        assert_eq!(
            format_of(Path::new("a.txt"), Some(FormatArg::Jsonl)).ok(),
            Some(Format::Jsonl)
        );
        let message = format!(
            "{:#}",
            format_of(Path::new("a.txt"), None).expect_err("unknown")
        );
        assert!(message.contains("--format"), "{message}");
    }

    #[test]
    fn the_hashing_writer_hashes_exactly_what_it_wrote() {
        let mut out = Vec::new();
        let mut writer = HashingWriter::new(&mut out);
        writer.write_all(b"nid,year\n").expect("write");
        writer.write_all(b"ab,1980\n").expect("write");
        let (hash, size) = writer.finish().expect("finish");
        assert_eq!(size, 17);
        assert_eq!(hash, Digest::sha256(b"nid,year\nab,1980\n"));
    }
}
