//! `govchain case export`: a case's evidence bundle, collected from one
//! node (`govchain_evidence::collect`) and checked before it is written
//! (`case_bundle::verify`).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use govchain_crypto::Digest;
use serde::Serialize;

use crate::case_bundle::verify::verify_bundle;
use crate::client::{ConnectArgs, rpc_error};
use crate::cmd::blob;
use crate::cmd::identity::{Session, client_timeout, print_view};
use crate::output::Fields;
use crate::proof;

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
    let case = super::case::get_case(&session, &args.case, args.applicant_key.as_deref())
        .await?
        .r#case
        .context("the node's GetCase answer has no case")?;
    let bundle = govchain_evidence::collect(session.channel.clone(), &args.case, &case, &genesis)
        .await
        .map_err(|err| match err {
            govchain_evidence::CollectError::Rpc { what, status } => {
                rpc_error(status).context(what)
            }
            other => anyhow::anyhow!(other),
        })?;
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
