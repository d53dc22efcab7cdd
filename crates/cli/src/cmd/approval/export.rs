//! `govchain case export`: a case's evidence bundle, collected from one
//! node and checked before it is written (`case_bundle`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use govchain_crypto::{Digest, PublicKey};
use govchain_pki::Genesis;
use govchain_proto::approval::v1::GetWorkflowRequest;
use govchain_proto::node::v1::node_service_client::NodeServiceClient;
use govchain_proto::node::v1::{
    CommittedTransaction, GetTransactionRequest, ListTransactionsRequest, TransactionStatus,
};
use govchain_proto::types::v1::{CaseRecord, Transaction, TransactionOutcome, transaction::Body};
use prost::Message as _;
use serde::Serialize;
use tonic::transport::Channel;

use super::approval_client;
use crate::case_bundle::verify::verify_bundle;
use crate::case_bundle::{BUNDLE_TRANSACTIONS_MAX, BundledTransaction, CaseBundle, FORMAT};
use crate::client::{ConnectArgs, rpc_error};
use crate::cmd::blob;
use crate::cmd::identity::{Session, client_timeout, print_view};
use crate::output::Fields;
use crate::proof;

/// Pages of a signer's transactions read to find an officer's registration
/// or an applicant's identity: 100,000 transactions at most.
const LISTING_PAGES_MAX: u32 = 100;
const LISTING_PAGE_SIZE: u32 = 1_000;

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// The case id (hex).
    #[arg(value_name = "CASE_ID", value_parser = blob::parse_transaction_id)]
    case: Digest,
    /// Where to write the bundle (JSON).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The genesis to put in the bundle and check it against; default with
    /// --dir: the devnet's.
    #[arg(long, value_name = "FILE")]
    genesis: Option<PathBuf>,
    /// Ask for the case as its applicant (a citizen), signing the request
    /// with this key, as `case show --applicant-key`.
    #[arg(long, value_name = "KEYFILE")]
    applicant_key: Option<PathBuf>,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Serialize)]
struct ExportView {
    case_id: String,
    state: &'static str,
    out: PathBuf,
    transactions: usize,
    blocks: usize,
    genesis_hash: String,
}

pub(crate) async fn export(args: ExportArgs, json: bool) -> anyhow::Result<()> {
    let (_, genesis) = proof::trusted_genesis(args.genesis.as_deref(), &args.connect)?;
    let session = Session::open(&args.connect, client_timeout()).await?;
    let mut node = NodeServiceClient::new(session.channel.clone())
        .max_decoding_message_size(crate::client::BLOB_MESSAGE_BYTES_MAX);
    let case = super::case::get_case(&session, &args.case, args.applicant_key.as_deref())
        .await?
        .r#case
        .context("the node's GetCase answer has no case")?;
    let mut bundle = CaseBundle {
        format: FORMAT.into(),
        case_id: args.case.to_vec(),
        genesis: genesis.clone(),
        case: case.encode_to_vec(),
        definitions: Vec::new(),
        officers: Vec::new(),
        applicant: Vec::new(),
        actions: Vec::new(),
    };
    let ids = Sections {
        definitions: definition_ids(&session.channel, &case).await?,
        officers: officer_ids(&mut node, &genesis, &case).await?,
        applicant: applicant_ids(&mut node, &genesis, &case).await?,
        actions: action_ids(&case),
    };
    let count = ids.definitions.len() + ids.officers.len() + ids.applicant.len();
    anyhow::ensure!(
        count + ids.actions.len() <= BUNDLE_TRANSACTIONS_MAX,
        "case {} needs {} transactions, over the {BUNDLE_TRANSACTIONS_MAX} a bundle holds",
        args.case,
        count + ids.actions.len()
    );
    for (section, ids) in bundle.sections_mut().into_iter().zip(ids.into_array()) {
        for id in ids {
            section.push(proven_transaction(&mut node, &id).await?);
        }
    }
    // A bundle that does not verify is the node's fault; never write one.
    let verified = verify_bundle(&bundle, Some(&genesis)).map_err(|err| {
        anyhow::anyhow!(
            "the node's answers for case {} do not verify, so no bundle was written: {err}; ask another node with --department or --node",
            args.case
        )
    })?;
    let mut text = serde_json::to_string_pretty(&bundle)?;
    text.push('\n');
    std::fs::write(&args.out, text)
        .with_context(|| format!("writing the bundle to {}", args.out.display()))?;
    let view = ExportView {
        case_id: args.case.to_hex(),
        state: govchain_exec::approval::state_name(verified.case.state),
        out: args.out.clone(),
        transactions: verified.transactions,
        blocks: verified.blocks,
        genesis_hash: verified.genesis_hash.to_hex(),
    };
    let mut fields = Fields::new();
    fields
        .add("case", &view.case_id)
        .add("state", view.state)
        .add(
            "bundle",
            format!(
                "{} ({} transactions in {} blocks)",
                view.out.display(),
                view.transactions,
                view.blocks
            ),
        )
        .add("genesis hash", &view.genesis_hash)
        .add("check", format!("govchain verify {}", view.out.display()));
    print_view(&view, &fields, json)
}

/// The transaction ids of each section, in bundle order.
struct Sections {
    definitions: Vec<Digest>,
    officers: Vec<Digest>,
    applicant: Vec<Digest>,
    actions: Vec<Digest>,
}

impl Sections {
    fn into_array(self) -> [Vec<Digest>; 4] {
        [
            self.definitions,
            self.officers,
            self.applicant,
            self.actions,
        ]
    }
}

fn digest(what: &str, bytes: &[u8]) -> anyhow::Result<Digest> {
    Digest::from_slice(bytes)
        .map_err(|_| anyhow::anyhow!("the node's {what} is {} bytes, not 32", bytes.len()))
}

/// Every version of the case's workflow up to its own: replaying version N
/// needs the versions before it.
async fn definition_ids(channel: &Channel, case: &CaseRecord) -> anyhow::Result<Vec<Digest>> {
    let mut client = approval_client(channel.clone());
    let mut ids = Vec::new();
    for version in 1..=case.workflow_version {
        let definition = client
            .get_workflow(GetWorkflowRequest {
                workflow_id: case.workflow_id.clone(),
                version,
            })
            .await
            .map_err(rpc_error)?
            .into_inner()
            .workflow
            .context("the node's GetWorkflow answer has no workflow")?;
        ids.push(digest(
            "definition's transaction id",
            &definition.transaction_id,
        )?);
    }
    Ok(ids)
}

/// The registrations and revocations of each officer who acted on the
/// case, by the officer's department, up to the officer's last action: the
/// officer history the replay needs.
async fn officer_ids(
    node: &mut NodeServiceClient<Channel>,
    genesis: &Genesis,
    case: &CaseRecord,
) -> anyhow::Result<Vec<Digest>> {
    // (department, officer) -> height of its last action.
    let mut acted: BTreeMap<(String, Vec<u8>), u64> = BTreeMap::new();
    for event in case.events.iter().filter(|e| !e.step_id.is_empty()) {
        let last = acted
            .entry((event.department.clone(), event.signer.clone()))
            .or_default();
        *last = (*last).max(event.height);
    }
    let mut ids = Vec::new();
    let departments: std::collections::BTreeSet<&String> = acted.keys().map(|(d, _)| d).collect();
    for department in departments {
        let Some(entry) = genesis.departments.iter().find(|d| &d.name == department) else {
            continue;
        };
        let key = PublicKey::from_hex(&entry.signing_public_key)
            .with_context(|| format!("genesis signing key of {department}"))?;
        for committed in signer_transactions(node, &key).await? {
            let officer = match decoded_body(&committed) {
                Some(Body::RegisterOfficer(body)) => body.officer,
                Some(Body::RevokeOfficer(body)) => body.officer,
                _ => continue,
            };
            let height = committed.position.map_or(0, |p| p.height);
            if acted
                .get(&(department.clone(), officer))
                .is_some_and(|last| height <= *last)
            {
                ids.push(digest("officer transaction id", &committed.transaction_id)?);
            }
        }
    }
    Ok(ids)
}

/// A citizen applicant's identity and attribute history up to the case's
/// last event, in chain order: its `CreateIdentity` and `DeclareAttribute`s,
/// and the attestations and revocations departments signed about it, which
/// automatic steps' rules read (`applicant.attested`); none for a
/// department.
async fn applicant_ids(
    node: &mut NodeServiceClient<Channel>,
    genesis: &Genesis,
    case: &CaseRecord,
) -> anyhow::Result<Vec<Digest>> {
    if !case.applicant_department.is_empty() {
        return Ok(Vec::new());
    }
    let applicant = PublicKey::from_slice(&case.applicant)
        .map_err(|err| anyhow::anyhow!("the case's applicant key: {err}"))?;
    let last = case.events.iter().map(|e| e.height).max().unwrap_or(0);
    let up_to_last =
        |committed: &CommittedTransaction| committed.position.map_or(0, |p| p.height) <= last;
    // (height, index, id), sorted at the end into chain order.
    let mut found = Vec::new();
    let mut created = false;
    for committed in signer_transactions(node, &applicant).await? {
        match decoded_body(&committed) {
            Some(Body::CreateIdentity(_)) => created = true,
            Some(Body::DeclareAttribute(_)) if up_to_last(&committed) => {}
            _ => continue,
        }
        found.push(positioned(&committed)?);
    }
    anyhow::ensure!(
        created,
        "the applicant {} has no committed CreateIdentity on this node",
        applicant.to_did_key()
    );
    for department in genesis.departments.iter().filter(|d| !d.attests.is_empty()) {
        let key = PublicKey::from_hex(&department.signing_public_key)
            .with_context(|| format!("genesis signing key of {}", department.name))?;
        for committed in signer_transactions(node, &key).await? {
            let about = match decoded_body(&committed) {
                Some(Body::AttestAttribute(body)) => body.citizen,
                Some(Body::RevokeAttestation(body)) => body.citizen,
                _ => continue,
            };
            if about == applicant.as_bytes() && up_to_last(&committed) {
                found.push(positioned(&committed)?);
            }
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, _, id)| id).collect())
}

/// A committed transaction's position and id.
fn positioned(committed: &CommittedTransaction) -> anyhow::Result<(u64, u32, Digest)> {
    let position = committed.position.unwrap_or_default();
    Ok((
        position.height,
        position.index,
        digest("applicant transaction id", &committed.transaction_id)?,
    ))
}

/// The case's own transactions, in the order of its events.
fn action_ids(case: &CaseRecord) -> Vec<Digest> {
    let mut ids: Vec<Digest> = Vec::new();
    for event in &case.events {
        if let Ok(id) = Digest::from_slice(&event.transaction_id)
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    }
    ids
}

/// The body of a committed transaction that took effect.
fn decoded_body(committed: &CommittedTransaction) -> Option<Body> {
    let succeeded = committed
        .result
        .as_ref()
        .is_some_and(|r| r.outcome() == TransactionOutcome::Success);
    if !succeeded {
        return None;
    }
    let envelope = committed.envelope.as_ref()?;
    Transaction::decode(envelope.payload.clone()).ok()?.body
}

/// A signer's committed transactions, oldest first, up to
/// [`LISTING_PAGES_MAX`] pages.
async fn signer_transactions(
    node: &mut NodeServiceClient<Channel>,
    signer: &PublicKey,
) -> anyhow::Result<Vec<CommittedTransaction>> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    for _ in 0..LISTING_PAGES_MAX {
        let page = node
            .list_transactions(ListTransactionsRequest {
                signer: signer.as_bytes().to_vec(),
                page_size: LISTING_PAGE_SIZE,
                page_token,
            })
            .await
            .map_err(rpc_error)?
            .into_inner();
        all.extend(page.transactions);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
    anyhow::bail!(
        "signer {signer} has over {} transactions; a bundle reads at most that many",
        LISTING_PAGES_MAX * LISTING_PAGE_SIZE
    )
}

/// One transaction with its inclusion proof.
async fn proven_transaction(
    node: &mut NodeServiceClient<Channel>,
    id: &Digest,
) -> anyhow::Result<BundledTransaction> {
    let response = node
        .get_transaction(GetTransactionRequest {
            transaction_id: id.to_vec(),
            prove: true,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    anyhow::ensure!(
        response.status() == TransactionStatus::Committed,
        "transaction {id} is not committed on this node"
    );
    BundledTransaction::from_response(&response)
        .with_context(|| format!("the node's answer for transaction {id} carries no proof"))
}
