//! `govchain directory publish|search|show|request|grants`: the data
//! resource directory. Writes are signed transactions (the rules are
//! `exec::directory`'s); reads go to the node's `DirectoryService`.

use clap::{Args, Subcommand, ValueEnum};
use govchain_exec::directory::{policy_name, sensitivity_name, validate_publish, validate_request};
use govchain_proto::directory::v1::directory_service_client::DirectoryServiceClient;
use govchain_proto::directory::v1::{GetDatasetRequest, ListGrantsRequest, SearchDatasetsRequest};
use govchain_proto::types::v1::{
    CaseDocument, DatasetAccessPolicy, DatasetEntry, DatasetGrant, DatasetSensitivity,
    DatasetVersionRecord, PublishDatasetEntry, RequestDatasetAccess, transaction::Body,
};
use serde::Serialize;
use tonic::transport::Channel;

use crate::client::{ConnectArgs, rpc_error};
use crate::cmd::approval::SignedArgs;
use crate::cmd::approval::case::parse_document;
use crate::cmd::identity::{Session, Submitted, client_timeout, print_view};
use crate::output::{Fields, Table, format_time_ms};
use crate::view::or_dash;

pub mod demo;

#[derive(Debug, Args)]
pub struct DirectoryArgs {
    #[command(subcommand)]
    command: DirectoryCommand,
}

#[derive(Debug, Subcommand)]
enum DirectoryCommand {
    /// Publish (the next version of) a dataset's catalogue entry.
    #[command(
        long_about = "Publish the next version of a dataset's catalogue entry, signed with the \
            owning department's signing key. A dataset named in a department's namespace \
            (\"health/...\") can only be that department's; any other name belongs to the \
            department that first publishes it. Once a dataset has an entry, only its owner \
            anchors records or appends versions in it. The access policy says who the \
            owner's node serves the versions' blobs to: `open` to every consortium member, \
            `by-request` to departments whose access request (an approval case against \
            --workflow, a workflow of the owner) was approved, `citizen-consent` only \
            under a citizen's consent.",
        after_help = "Example:\n  \
            govchain directory publish health/vaccinations --dir devnet --department health \\\n    \
            --signing-key devnet/certs/health/signing.key \\\n    \
            --description \"Vaccinations by district and month\" --sensitivity internal \\\n    \
            --frequency monthly --policy by-request --workflow data-sharing"
    )]
    Publish(PublishArgs),
    /// Search the directory by keyword and owner.
    #[command(after_help = "Examples:\n  \
            govchain directory search vaccination --dir devnet\n  \
            govchain directory search --owner health --json --dir devnet")]
    Search(SearchArgs),
    /// Show a dataset's latest entry and its data versions.
    #[command(after_help = "Example:\n  govchain directory show health/vaccinations --dir devnet")]
    Show(ShowArgs),
    /// Ask for access to a by-request dataset: opens an approval case.
    #[command(
        long_about = "Ask the owner of a by-request dataset for access, signed with your \
            department's signing key. This opens an approval case (its id is printed) \
            against the latest version of the entry's workflow; once the owner's officers \
            approve every step, the chain records a grant and the owner's node serves the \
            dataset's version blobs to your department. Follow the case with \
            `govchain case show <case>`.",
        after_help = "Example:\n  \
            govchain directory request health/vaccinations --dir devnet --department tax \\\n    \
            --signing-key devnet/certs/tax/signing.key --purpose \"benefit planning\""
    )]
    Request(RequestArgs),
    /// List the departments granted access to a dataset.
    #[command(
        after_help = "Example:\n  govchain directory grants health/vaccinations --dir devnet"
    )]
    Grants(GrantsArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SensitivityArg {
    Public,
    Internal,
    Restricted,
    Personal,
}

impl From<SensitivityArg> for DatasetSensitivity {
    fn from(arg: SensitivityArg) -> Self {
        match arg {
            SensitivityArg::Public => DatasetSensitivity::Public,
            SensitivityArg::Internal => DatasetSensitivity::Internal,
            SensitivityArg::Restricted => DatasetSensitivity::Restricted,
            SensitivityArg::Personal => DatasetSensitivity::Personal,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PolicyArg {
    Open,
    ByRequest,
    CitizenConsent,
}

impl From<PolicyArg> for DatasetAccessPolicy {
    fn from(arg: PolicyArg) -> Self {
        match arg {
            PolicyArg::Open => DatasetAccessPolicy::Open,
            PolicyArg::ByRequest => DatasetAccessPolicy::ByRequest,
            PolicyArg::CitizenConsent => DatasetAccessPolicy::CitizenConsent,
        }
    }
}

#[derive(Debug, Args)]
struct PublishArgs {
    /// The dataset's full name, e.g. "health/vaccinations".
    #[arg(value_name = "DATASET")]
    dataset: String,
    /// What the data is (searched by keyword); at most 1,024 bytes.
    #[arg(long, default_value = "")]
    description: String,
    /// CID of the schema blob (upload it with `govchain blob put`).
    #[arg(long = "schema", value_name = "CID", default_value = "")]
    schema_cid: String,
    #[arg(long, value_enum)]
    sensitivity: SensitivityArg,
    /// How often new versions come, e.g. "monthly".
    #[arg(long = "frequency", value_name = "TEXT", default_value = "")]
    update_frequency: String,
    /// Who the owner's node serves the data to.
    #[arg(long, value_enum)]
    policy: PolicyArg,
    /// For `--policy by-request`: the owner's workflow requests go through.
    #[arg(long, value_name = "WORKFLOW", default_value = "")]
    workflow: String,
    #[command(flatten)]
    signed: SignedArgs,
}

#[derive(Debug, Args)]
struct SearchArgs {
    /// Keywords, all of which must appear in the name or description.
    #[arg(value_name = "KEYWORD")]
    keywords: Vec<String>,
    /// Only datasets of this department.
    #[arg(long, value_name = "DEPARTMENT", default_value = "")]
    owner: String,
    /// The most results to print.
    #[arg(long, value_name = "N", default_value_t = 100)]
    limit: usize,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
struct ShowArgs {
    #[arg(value_name = "DATASET")]
    dataset: String,
    /// The most versions to print, newest first.
    #[arg(long, value_name = "N", default_value_t = 20)]
    versions: u32,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
struct RequestArgs {
    #[arg(value_name = "DATASET")]
    dataset: String,
    /// Why your department needs the data; at most 256 bytes.
    #[arg(long)]
    purpose: String,
    /// A document for the case, NAME=CID; repeat for each.
    #[arg(long = "document", value_name = "NAME=CID", value_parser = parse_document)]
    documents: Vec<CaseDocument>,
    #[command(flatten)]
    signed: SignedArgs,
}

#[derive(Debug, Args)]
struct GrantsArgs {
    #[arg(value_name = "DATASET")]
    dataset: String,
    /// Only this department's grant.
    #[arg(long, value_name = "DEPARTMENT", default_value = "")]
    grantee: String,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub async fn run(args: DirectoryArgs, json: bool) -> anyhow::Result<()> {
    match args.command {
        DirectoryCommand::Publish(args) => publish(args, json).await,
        DirectoryCommand::Search(args) => search(args, json).await,
        DirectoryCommand::Show(args) => show(args, json).await,
        DirectoryCommand::Request(args) => request(args, json).await,
        DirectoryCommand::Grants(args) => grants(args, json).await,
    }
}

pub(crate) fn directory_client(channel: Channel) -> DirectoryServiceClient<Channel> {
    DirectoryServiceClient::new(channel)
        .max_decoding_message_size(crate::client::BLOB_MESSAGE_BYTES_MAX)
}

/// An entry as the directory commands print it.
#[derive(Debug, Serialize)]
pub struct EntryView {
    pub dataset: String,
    pub owner: String,
    pub description: String,
    pub schema_cid: String,
    pub sensitivity: &'static str,
    pub update_frequency: String,
    pub access_policy: &'static str,
    pub workflow_id: String,
    pub entry_version: u64,
    pub published: String,
    pub published_height: u64,
}

impl EntryView {
    pub fn new(entry: &DatasetEntry) -> Self {
        let published = entry.entry.clone().unwrap_or_default();
        Self {
            dataset: published.dataset,
            owner: entry.owner.clone(),
            description: published.description,
            schema_cid: published.schema_cid,
            sensitivity: sensitivity_name(published.sensitivity),
            update_frequency: published.update_frequency,
            access_policy: policy_name(published.access_policy),
            workflow_id: published.workflow_id,
            entry_version: entry.entry_version,
            published: format_time_ms(entry.published_ms),
            published_height: entry.published_height,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct VersionView {
    pub number: u64,
    pub batch_cid: String,
    pub row_count: u64,
    pub rules_sha256: String,
    /// The smallest group size over the quasi-identifiers; `None` without
    /// a report.
    pub k: Option<u64>,
    pub quasi_identifiers: Vec<String>,
    pub recorded: String,
    pub height: u64,
}

impl VersionView {
    fn new(record: &DatasetVersionRecord) -> Self {
        let version = record.version.clone().unwrap_or_default();
        let report = version.k_anonymity.unwrap_or_default();
        Self {
            number: record.number,
            batch_cid: version.batch_cid,
            row_count: version.row_count,
            rules_sha256: hex::encode(version.rules_hash),
            k: (report.smallest_group_size > 0).then_some(report.smallest_group_size),
            quasi_identifiers: report.quasi_identifiers,
            recorded: format_time_ms(record.recorded_ms),
            height: record.height,
        }
    }
}

#[derive(Debug, Serialize)]
struct GrantView {
    dataset: String,
    grantee: String,
    case_id: String,
    purpose: String,
    granted: String,
    granted_height: u64,
}

impl GrantView {
    fn new(grant: &DatasetGrant) -> Self {
        Self {
            dataset: grant.dataset.clone(),
            grantee: grant.grantee.clone(),
            case_id: hex::encode(&grant.case_id),
            purpose: grant.purpose.clone(),
            granted: format_time_ms(grant.granted_ms),
            granted_height: grant.granted_height,
        }
    }
}

#[derive(Debug, Serialize)]
struct PublishView {
    dataset: String,
    access_policy: &'static str,
    transaction: Submitted,
}

async fn publish(args: PublishArgs, json: bool) -> anyhow::Result<()> {
    let body = PublishDatasetEntry {
        dataset: args.dataset.clone(),
        description: args.description,
        schema_cid: args.schema_cid,
        sensitivity: DatasetSensitivity::from(args.sensitivity).into(),
        update_frequency: args.update_frequency,
        access_policy: DatasetAccessPolicy::from(args.policy).into(),
        workflow_id: args.workflow,
    };
    // The checks every node makes, before signing.
    validate_publish(&body).map_err(|err| anyhow::anyhow!("{err}"))?;
    let access_policy = policy_name(body.access_policy);
    let (_, transaction) = args
        .signed
        .submit(Body::PublishDatasetEntry(body), "the directory entry")
        .await?;
    let view = PublishView {
        dataset: args.dataset,
        access_policy,
        transaction,
    };
    let mut fields = Fields::new();
    fields
        .add("dataset", &view.dataset)
        .add("access policy", view.access_policy)
        .add(
            "next",
            format!(
                "`govchain ingest --dataset ...` adds versions; `govchain directory show {}`",
                view.dataset
            ),
        );
    view.transaction.add_to(&mut fields);
    print_view(&view, &fields, json)
}

async fn search(args: SearchArgs, json: bool) -> anyhow::Result<()> {
    let session = Session::open(&args.connect, client_timeout()).await?;
    let mut client = directory_client(session.channel.clone());
    let query = args.keywords.join(" ");
    let mut found = Vec::new();
    let mut page_token = String::new();
    // Follow the pages (a selective search may return short ones) until
    // the last or the limit.
    loop {
        let response = client
            .search_datasets(SearchDatasetsRequest {
                query: query.clone(),
                owner: args.owner.clone(),
                page_size: u32::try_from(args.limit.min(1000)).unwrap_or(1000),
                page_token,
            })
            .await
            .map_err(rpc_error)?
            .into_inner();
        found.extend(response.datasets.iter().map(EntryView::new));
        page_token = response.next_page_token;
        if page_token.is_empty() || found.len() >= args.limit {
            break;
        }
    }
    found.truncate(args.limit);
    if json {
        return crate::output::print_json(&found);
    }
    let mut table = Table::new(&["dataset", "owner", "policy", "sensitivity", "description"]);
    for entry in &found {
        table.add(vec![
            entry.dataset.clone(),
            entry.owner.clone(),
            entry.access_policy.to_owned(),
            entry.sensitivity.to_owned(),
            or_dash(&entry.description),
        ]);
    }
    if found.is_empty() {
        return crate::output::print("no dataset matches");
    }
    crate::output::print(&table.render())
}

#[derive(Debug, Serialize)]
struct ShowView {
    entry: EntryView,
    version_count: u64,
    versions: Vec<VersionView>,
}

async fn show(args: ShowArgs, json: bool) -> anyhow::Result<()> {
    let session = Session::open(&args.connect, client_timeout()).await?;
    let response = directory_client(session.channel.clone())
        .get_dataset(GetDatasetRequest {
            dataset: args.dataset.clone(),
            page_size: args.versions.max(1),
            page_token: String::new(),
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let view = ShowView {
        entry: EntryView::new(&response.entry.unwrap_or_default()),
        version_count: response.version_count,
        versions: response.versions.iter().map(VersionView::new).collect(),
    };
    if json {
        return crate::output::print_json(&view);
    }
    let entry = &view.entry;
    let mut fields = Fields::new();
    fields
        .add("dataset", &entry.dataset)
        .add("owner", &entry.owner)
        .add("description", or_dash(&entry.description))
        .add("schema", or_dash(&entry.schema_cid))
        .add("sensitivity", entry.sensitivity)
        .add("update frequency", or_dash(&entry.update_frequency))
        .add("access policy", entry.access_policy)
        .add("workflow", or_dash(&entry.workflow_id))
        .add(
            "entry version",
            format!("{} (published {})", entry.entry_version, entry.published),
        )
        .add("data versions", view.version_count);
    let mut table = Table::new(&["version", "batch", "rows", "k", "recorded"]);
    for version in &view.versions {
        table.add(vec![
            version.number.to_string(),
            version.batch_cid.clone(),
            version.row_count.to_string(),
            version.k.map_or_else(|| "-".into(), |k| k.to_string()),
            version.recorded.clone(),
        ]);
    }
    crate::output::print(&format!("{}\n{}", fields.render(), table.render()))
}

#[derive(Debug, Serialize)]
struct RequestView {
    dataset: String,
    case_id: String,
    transaction: Submitted,
}

async fn request(args: RequestArgs, json: bool) -> anyhow::Result<()> {
    let body = RequestDatasetAccess {
        dataset: args.dataset.clone(),
        purpose: args.purpose,
        documents: args.documents,
    };
    validate_request(&body).map_err(|err| anyhow::anyhow!("{err}"))?;
    let (_, transaction) = args
        .signed
        .submit(Body::RequestDatasetAccess(body), "the access request")
        .await?;
    let view = RequestView {
        dataset: args.dataset,
        case_id: transaction.id.to_hex(),
        transaction,
    };
    let mut fields = Fields::new();
    fields
        .add("dataset", &view.dataset)
        .add("case", &view.case_id)
        .add(
            "next",
            format!(
                "the owner's officers act on it; follow it with `govchain case show {}`",
                view.case_id
            ),
        );
    view.transaction.add_to(&mut fields);
    print_view(&view, &fields, json)
}

async fn grants(args: GrantsArgs, json: bool) -> anyhow::Result<()> {
    let session = Session::open(&args.connect, client_timeout()).await?;
    let mut client = directory_client(session.channel.clone());
    let mut grants = Vec::new();
    let mut page_token = String::new();
    loop {
        let response = client
            .list_grants(ListGrantsRequest {
                dataset: args.dataset.clone(),
                grantee: args.grantee.clone(),
                page_size: 0,
                page_token,
            })
            .await
            .map_err(rpc_error)?
            .into_inner();
        grants.extend(response.grants.iter().map(GrantView::new));
        page_token = response.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    if json {
        return crate::output::print_json(&grants);
    }
    if grants.is_empty() {
        return crate::output::print(&format!("no grant for {}", args.dataset));
    }
    let mut table = Table::new(&["grantee", "case", "purpose", "granted"]);
    for grant in &grants {
        table.add(vec![
            grant.grantee.clone(),
            grant.case_id.clone(),
            grant.purpose.clone(),
            grant.granted.clone(),
        ]);
    }
    crate::output::print(&table.render())
}
