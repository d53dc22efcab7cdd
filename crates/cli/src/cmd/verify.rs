//! `govchain verify bundle.json`: a case's evidence bundle checked offline,
//! with no node (`case_bundle::verify`).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use govchain_pki::Genesis;
use serde::Serialize;

use crate::case_bundle::CaseBundle;
use crate::case_bundle::verify::verify_bundle;
use crate::cmd::identity::print_view;
use crate::exit::Negative;
use crate::output::Fields;

/// A bundle file larger than this is refused before it is parsed: 8,192
/// transactions of at most 64 KiB payload each, in hex, with their proofs.
const BUNDLE_FILE_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// `govchain verify --help`: on the subcommand in `main.rs`, where clap
/// reads it.
pub const LONG_ABOUT: &str = "Check a case's evidence bundle (from `govchain case export`) offline, with \
        no node: each transaction's envelope (its id and signature), its RFC 6962 inclusion \
        proof against the transactions root of its block's header, and each header's commit \
        certificate (signatures of 2f+1 distinct validators of the bundle's genesis); then the \
        case is replayed through the chain's approval rules (definitions, officer \
        registrations, the applicant's identity and the case's transactions, in chain order, \
        on an empty state) and must end in exactly the case the bundle claims.\n\n\
        A bundle carries its own genesis, which only makes it self-consistent: trust comes \
        from comparing the genesis hash printed here with that of a genesis you hold, or from \
        --genesis, which refuses a bundle with another genesis. The bundle proves each of its \
        transactions and the case they make; it cannot prove that no later transaction of the \
        case was left out (compare its last event with `govchain case show`).\n\n\
        Exit codes: 0 when everything holds; 1 when anything does not, naming the first \
        failing item (e.g. `action 3 (approve step health-inspection by ...): the audit path \
        ... does not lead ... to the header's transactions root`); 2 when the file cannot be \
        read.";

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
        govchain case export 5f0c...e1 --out bundle.json --dir devnet --department tax\n  \
        govchain verify bundle.json\n  \
        govchain verify bundle.json --genesis devnet/certs/genesis.json")]
pub struct VerifyArgs {
    /// The bundle (JSON, `govchain-case-bundle/1`).
    #[arg(value_name = "BUNDLE")]
    bundle: PathBuf,
    /// A genesis you trust; a bundle with another genesis fails.
    #[arg(long, value_name = "FILE")]
    genesis: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct VerifiedView {
    verified: bool,
    case_id: String,
    workflow_id: String,
    workflow_version: u64,
    state: &'static str,
    events: usize,
    transactions: usize,
    blocks: usize,
    quorum: u32,
    genesis_hash: String,
    /// The trusted genesis it matched, if --genesis was given.
    genesis: Option<PathBuf>,
}

pub fn run(args: VerifyArgs, json: bool) -> anyhow::Result<()> {
    let bundle = read_bundle(&args.bundle)?;
    let trusted = args
        .genesis
        .as_deref()
        .map(|path| {
            Genesis::load(path).with_context(|| format!("reading genesis {}", path.display()))
        })
        .transpose()?;
    let verified = verify_bundle(&bundle, trusted.as_ref())
        .map_err(|err| Negative::new(format!("NOT VERIFIED: {err}")))?;
    let case = &verified.case;
    let view = VerifiedView {
        verified: true,
        case_id: verified.case_id.to_hex(),
        workflow_id: case.workflow_id.clone(),
        workflow_version: case.workflow_version,
        state: govchain_exec::approval::state_name(case.state),
        events: case.events.len(),
        transactions: verified.transactions,
        blocks: verified.blocks,
        quorum: verified.quorum,
        genesis_hash: verified.genesis_hash.to_hex(),
        genesis: args.genesis.clone(),
    };
    let mut fields = Fields::new();
    fields
        .add(
            "verified",
            "every signature, inclusion proof and certificate holds",
        )
        .add("case", &view.case_id)
        .add(
            "workflow",
            format!("{} v{}", view.workflow_id, view.workflow_version),
        )
        .add(
            "state",
            format!("{} after {} events (replayed)", view.state, view.events),
        )
        .add(
            "evidence",
            format!(
                "{} transactions in {} certified blocks (quorum {})",
                view.transactions, view.blocks, view.quorum
            ),
        )
        .add(
            "genesis hash",
            match &view.genesis {
                Some(path) => format!("{} (matches {})", view.genesis_hash, path.display()),
                None => format!(
                    "{} (compare it with your genesis, or pass --genesis)",
                    view.genesis_hash
                ),
            },
        );
    print_view(&view, &fields, json)
}

/// The bundle file, parsed. A file that cannot be read is an error (exit
/// 2); one that is not a bundle is a negative answer (exit 1).
fn read_bundle(path: &std::path::Path) -> anyhow::Result<CaseBundle> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading the bundle {}", path.display()))?
        .len();
    anyhow::ensure!(
        size <= BUNDLE_FILE_BYTES_MAX,
        "{} is {size} bytes, over the {BUNDLE_FILE_BYTES_MAX} (BUNDLE_FILE_BYTES_MAX) a bundle may be",
        path.display()
    );
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the bundle {}", path.display()))?;
    // A file that no longer parses was altered as surely as one whose
    // signature fails: a negative answer, not an error.
    serde_json::from_str(&text).map_err(|err| {
        Negative::new(format!(
            "NOT VERIFIED: {} is not a case bundle (govchain-case-bundle/1 JSON, from `govchain case export`): {err}",
            path.display()
        ))
        .into()
    })
}
