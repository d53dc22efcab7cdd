//! `govchain record`: anchor a record file's SHA-256 on the chain, and check a
//! file against its anchor.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use govchain_crypto::{Digest, SigningKey};
use govchain_proto::node::v1::node_service_client::NodeServiceClient;
use govchain_proto::node::v1::{
    GetAccountRequest, GetAnchorRequest, GetAnchorResponse, GetStatusRequest,
};
use govchain_proto::types::v1::AnchoredRecord;
use prost::Message as _;
use serde::Serialize;
use tonic::Code;
use tonic::transport::Channel;

use crate::client::{self, ConnectArgs, rpc_error};
use crate::cmd::keys::load_signing_key;
use crate::cmd::tx::{TransactionView, WaitArgs, submit_envelope, wait_for_commit};
use crate::envelope::{self, Anchor, FileFacts, Signed, hash_file};
use crate::exit::Negative;
use crate::output::{self, Fields, format_time_ms};
use crate::proof::{self, InclusionView, ProofArgs};
use crate::view::{AnchorView, or_dash};

/// Any payload far over this is refused by every node, so the CLI refuses it
/// first; genesis may set a lower limit, which the node enforces.
pub(crate) const PAYLOAD_BYTES_MAX: usize = 64 * 1024;

#[derive(Debug, Args)]
pub struct RecordArgs {
    #[command(subcommand)]
    command: RecordCommand,
}

#[derive(Debug, Subcommand)]
enum RecordCommand {
    /// Anchor a record file's SHA-256 and metadata on the chain.
    #[command(
        long_about = "Anchor a record: hash the file (SHA-256), sign a transaction that \
            records the hash, dataset, record id, schema and the file's modification time, \
            and submit it. Only the department that first anchored a record may anchor new \
            versions of it.\n\n\
            The nonce comes from the node (the next usable nonce, GetAccount.next_nonce) unless --nonce is given, \
            and the chain id from the node unless --chain-id is given. With --out, the signed \
            envelope is written to a file instead of submitted; with --nonce and --chain-id \
            too, no node is needed at all (offline signing). Submit it later with \
            `govchain tx submit`.\n\n\
            With --wait, waits for the block and prints the result; a transaction that is \
            committed but fails (e.g. another department owns the record) exits 1.\n\n\
            A dataset whose first segment names a department (health/reports) is that \
            department's namespace: only its signing key (certs/<department>/signing.key) \
            may anchor there, and the transaction must come with its certificate \
            (--department with a devnet). Other datasets take any key.",
        after_help = "Examples:\n  \
            govchain record anchor report.pdf --dataset health/reports --record-id r-2024-001 \\\n    \
            --schema application/pdf --signing-key devnet/certs/health/signing.key \\\n    \
            --department health --dir devnet --wait\n  \
            govchain record anchor report.pdf --dataset health/reports --record-id r-2024-001 \\\n    \
            --signing-key health.key --nonce 7 --chain-id govchain-devnet --out r.envelope"
    )]
    Anchor(AnchorArgs),
    /// Every anchored version of one record, oldest first.
    #[command(
        long_about = "List every version of one record that was anchored (ListAnchors with \
            dataset and record id), oldest first: position HEIGHT:INDEX, transaction id, \
            signing department, block time; --json adds each version's hash, schema and \
            record time. Only anchors that took effect are versions.",
        after_help = "Example:\n  \
            govchain record history health/reports r-2024-001 --dir devnet --json"
    )]
    History(super::listing::HistoryArgs),
    /// List anchors by dataset, signing department or block time.
    #[command(
        long_about = "List the anchors that took effect (ListAnchors), oldest first, selected \
            by exactly one of: --dataset, --signed-by (a genesis department), or --since (with \
            an optional --until) over block time. One page at a time (--page-size, default \
            100; the token for the next page goes to stderr), or every page with --all.",
        after_help = "Examples:\n  \
            govchain record list --dataset health/reports --dir devnet\n  \
            govchain record list --signed-by tax --all --json --dir devnet\n  \
            govchain record list --since 2026-12-01T00:00:00Z --until 2026-12-02T00:00:00Z --dir devnet"
    )]
    List(super::listing::ListArgs),
    /// Check a file against the record's anchored hash.
    #[command(
        long_about = "Check a file against its anchor: hash the file and compare with the \
            SHA-256 anchored on the chain for that dataset and record id. Prints MATCH and \
            exits 0, or prints MISMATCH (exit 1) or NOT ANCHORED (exit 1). Without --verify \
            the answer comes from the node you ask; ask another with --department or --node \
            for a second opinion.\n\n\
            With --verify the node need not be trusted: it returns the anchor with a proof, \
            which is checked offline against genesis (--genesis, or the devnet's with --dir): \
            the block header's commit certificate needs a quorum of the validators' \
            signatures, and the state tree path must lead from the anchor (or, for NOT \
            ANCHORED, from its absence) to that header's state root; for an anchored record, \
            the transaction that anchored it must be in the block the anchor names (an RFC \
            6962 audit path to that certified header's transactions root). A proof or value \
            that does not verify is refused: PROOF REFUSED on stderr, exit 1. --save-proof keeps \
            the node's answer; --proof-file checks a saved answer with no node at all.",
        after_help = "Examples:\n  \
            govchain record verify report.pdf --dataset health/reports --record-id r-2024-001 --dir devnet\n  \
            govchain record verify report.pdf --dataset health/reports --record-id r-2024-001 \\\n    \
            --dir devnet --verify --save-proof r-2024-001.proof\n  \
            govchain record verify report.pdf --dataset health/reports --record-id r-2024-001 \\\n    \
            --verify --proof-file r-2024-001.proof --genesis devnet/genesis.json"
    )]
    Verify(VerifyArgs),
    /// Print a file's SHA-256, as `record anchor` computes it (offline).
    #[command(after_help = "Example:\n  govchain record hash report.pdf")]
    Hash(HashArgs),
}

#[derive(Debug, Args)]
struct AnchorArgs {
    /// The record file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Dataset the record belongs to, e.g. health/vaccinations.
    #[arg(long, value_name = "D")]
    dataset: String,
    /// The record's id within the dataset.
    #[arg(long, value_name = "R")]
    record_id: String,
    /// Schema or format of the record, e.g. fhir-r4/Immunization.
    #[arg(long, value_name = "S")]
    schema: Option<String>,
    /// Ed25519 signing key (PKCS#8 PEM), from `govchain keys new`.
    #[arg(long, env = "GOVCHAIN_SIGNING_KEY", value_name = "KEYFILE")]
    signing_key: PathBuf,
    /// Record time in Unix ms; default: the file's modification time.
    #[arg(long, value_name = "MS")]
    record_time_ms: Option<u64>,
    /// Nonce to sign with; default: ask the node (GetAccount.next_nonce).
    #[arg(long, value_name = "N")]
    nonce: Option<u64>,
    /// Chain id to sign for; default: ask the node.
    #[arg(long, value_name = "ID")]
    chain_id: Option<String>,
    /// Write the signed envelope to this file instead of submitting it.
    #[arg(long, value_name = "ENVELOPE_FILE", conflicts_with = "wait")]
    out: Option<PathBuf>,
    #[command(flatten)]
    wait: WaitArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The file to check.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Dataset the record belongs to.
    #[arg(long, value_name = "D")]
    dataset: String,
    /// The record's id within the dataset.
    #[arg(long, value_name = "R")]
    record_id: String,
    #[command(flatten)]
    proof: ProofArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
struct HashArgs {
    /// The file to hash.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

pub async fn run(args: RecordArgs, json: bool) -> anyhow::Result<()> {
    match args.command {
        RecordCommand::History(args) => super::listing::history(args, json).await,
        RecordCommand::List(args) => super::listing::list(args, json).await,
        RecordCommand::Anchor(args) => anchor(args, json).await,
        RecordCommand::Verify(args) => verify(args, json).await,
        RecordCommand::Hash(args) => hash(args, json),
    }
}

#[derive(Debug, Serialize)]
struct HashView {
    file: PathBuf,
    sha256: String,
    size_bytes: u64,
}

fn hash(args: HashArgs, json: bool) -> anyhow::Result<()> {
    let facts = hash_file(&args.file)?;
    if json {
        return output::print_json(&HashView {
            file: args.file,
            sha256: facts.sha256.to_hex(),
            size_bytes: facts.size_bytes,
        });
    }
    // The `sha256sum` format, so `sha256sum -c` can read it.
    output::print(&format!("{}  {}", facts.sha256, args.file.display()))
}

/// The anchor as signed, for both output formats.
#[derive(Debug, Serialize)]
struct AnchorSummary {
    transaction_id: String,
    file: PathBuf,
    size_bytes: u64,
    record: AnchorView,
    signer: String,
    nonce: u64,
    chain_id: String,
    /// Where the envelope was written (`--out`), if it was not submitted.
    envelope_file: Option<PathBuf>,
    submitted: bool,
    /// With `--wait`: the committed transaction.
    committed: Option<TransactionView>,
}

impl AnchorSummary {
    fn fields(&self) -> Fields {
        let mut fields = Fields::new();
        fields
            .add("transaction", &self.transaction_id)
            .add(
                "file",
                format!("{} ({} bytes)", self.file.display(), self.size_bytes),
            )
            .add("record sha256", &self.record.record_hash)
            .add("dataset", &self.record.dataset)
            .add("record id", &self.record.record_id)
            .add("schema", or_dash(&self.record.schema))
            .add("record time", &self.record.record_time)
            .add("signer", &self.signer)
            .add("nonce", self.nonce)
            .add("chain id", &self.chain_id);
        if let Some(path) = &self.envelope_file {
            fields.add("envelope", path.display());
        }
        if let Some(committed) = &self.committed {
            if let Some(height) = committed.block_height {
                fields.add("block height", height);
            }
            if let Some(result) = &committed.result {
                fields.add("result", result.text());
            }
        }
        fields
    }
}

async fn anchor(args: AnchorArgs, json: bool) -> anyhow::Result<()> {
    let facts = hash_file(&args.file)?;
    let key = load_signing_key(&args.signing_key)?;
    let offline = args.out.is_some() && args.nonce.is_some() && args.chain_id.is_some();
    let mut client = if offline {
        None
    } else {
        Some(client::connect(&args.connect.target()?).await?)
    };
    let chain_id = match (&args.chain_id, client.as_mut()) {
        (Some(chain_id), _) => chain_id.clone(),
        (None, Some(client)) => node_chain_id(client).await?,
        (None, None) => unreachable_offline()?,
    };
    let nonce = match (args.nonce, client.as_mut()) {
        (Some(nonce), _) => nonce,
        (None, Some(client)) => next_nonce(client, &key).await?,
        (None, None) => unreachable_offline()?,
    };
    let anchor = Anchor {
        dataset: args.dataset.clone(),
        record_id: args.record_id.clone(),
        record_hash: facts.sha256,
        schema: args.schema.clone().unwrap_or_default(),
        record_time_ms: args.record_time_ms.unwrap_or(facts.modified_ms),
    };
    let signed = sign_checked(&key, &chain_id, nonce, &anchor)?;
    let mut summary = summary(&args, &facts, &anchor, &signed);
    match (&args.out, client.as_mut()) {
        (Some(path), _) => {
            std::fs::write(path, signed.envelope.encode_to_vec())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        (None, Some(client)) => {
            submit_envelope(client, signed.envelope).await?;
            summary.submitted = true;
            if args.wait.wait {
                let response = wait_for_commit(client, &signed.id, args.wait.timeout).await?;
                summary.committed = Some(TransactionView::new(&signed.id, &response));
            }
        }
        (None, None) => unreachable_offline()?,
    }
    print_anchor(&summary, json)
}

/// Offline mode requires `--out`, `--nonce` and `--chain-id`, so every branch
/// that needs a node has one; this is the error if that ever changes.
fn unreachable_offline<T>() -> anyhow::Result<T> {
    anyhow::bail!("internal error: no node connection where one is needed")
}

pub async fn node_chain_id(client: &mut NodeServiceClient<Channel>) -> anyhow::Result<String> {
    let status = client
        .get_status(GetStatusRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    anyhow::ensure!(
        !status.chain_id.is_empty(),
        "the node did not say its chain id"
    );
    Ok(status.chain_id)
}

/// The signer's next usable nonce (`GetAccount.next_nonce`): transactions
/// still in the mempool are counted, up to the first gap.
pub async fn next_nonce(
    client: &mut NodeServiceClient<Channel>,
    key: &SigningKey,
) -> anyhow::Result<u64> {
    let account = client
        .get_account(GetAccountRequest {
            public_key: key.public_key().as_bytes().to_vec(),
            prove: false,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    Ok(account.next_nonce)
}

/// Signs, then runs the node's own envelope checks locally, so that a bad
/// dataset or record id is reported before anything is written or sent.
pub fn sign_checked(
    key: &SigningKey,
    chain_id: &str,
    nonce: u64,
    anchor: &Anchor,
) -> anyhow::Result<Signed> {
    let signed = envelope::sign(key, chain_id, nonce, &anchor.transaction());
    govchain_exec::check_envelope(
        signed.envelope.clone(),
        chain_id,
        PAYLOAD_BYTES_MAX,
        |_, _| false,
    )
    .context("the transaction would be refused")?;
    Ok(signed)
}

fn summary(
    args: &AnchorArgs,
    facts: &FileFacts,
    anchor: &Anchor,
    signed: &Signed,
) -> AnchorSummary {
    AnchorSummary {
        transaction_id: signed.id.to_hex(),
        file: args.file.clone(),
        size_bytes: facts.size_bytes,
        record: AnchorView::new(&anchor.record()),
        signer: hex::encode(&signed.envelope.signer),
        nonce: signed.envelope.nonce,
        chain_id: signed.envelope.chain_id.clone(),
        envelope_file: args.out.clone(),
        submitted: false,
        committed: None,
    }
}

fn print_anchor(summary: &AnchorSummary, json: bool) -> anyhow::Result<()> {
    if json {
        output::print_json(summary)?;
    } else {
        let mut text = summary.fields().render();
        if let Some(path) = &summary.envelope_file {
            text.push_str(&format!(
                "\n\nNot submitted. Submit it with:\n  govchain tx submit --envelope {} --wait",
                path.display()
            ));
        } else if summary.committed.is_none() {
            text.push_str(&format!(
                "\n\nSubmitted. Follow it with:\n  govchain tx get {}",
                summary.transaction_id
            ));
        }
        output::print(&text)?;
    }
    match &summary.committed {
        Some(committed) if committed.failed() => Err(Negative::new(format!(
            "the anchor was committed but failed: {}",
            committed
                .result
                .as_ref()
                .map_or("no reason given", |result| result.error.as_str())
        ))
        .into()),
        _ => Ok(()),
    }
}

/// The outcome of `record verify`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
enum Verdict {
    Match,
    Mismatch,
    NotAnchored,
}

#[derive(Debug, Serialize)]
struct VerifyView {
    result: Verdict,
    file: PathBuf,
    file_sha256: String,
    dataset: String,
    record_id: String,
    anchored: Option<AnchoredView>,
    /// With `--verify`: what the proof was checked against.
    #[serde(skip_serializing_if = "Option::is_none")]
    proof: Option<ProofView>,
}

#[derive(Debug, Serialize)]
struct AnchoredView {
    record: Option<AnchorView>,
    signer: String,
    /// The department whose key anchored it; empty for other keys.
    department: String,
    version: u64,
    block_height: u64,
    transaction_id: String,
}

impl AnchoredView {
    fn new(anchored: &AnchoredRecord) -> Self {
        Self {
            record: anchored.record.as_ref().map(AnchorView::new),
            signer: hex::encode(&anchored.signer),
            department: anchored.department.clone(),
            version: anchored.version,
            block_height: anchored.block_height,
            transaction_id: hex::encode(&anchored.transaction_id),
        }
    }

    fn record_hash(&self) -> &str {
        self.record
            .as_ref()
            .map_or("", |record| record.record_hash.as_str())
    }
}

async fn verify(args: VerifyArgs, json: bool) -> anyhow::Result<()> {
    let facts = hash_file(&args.file)?;
    let (anchored, proven) = if args.proof.verify {
        let (anchored, proven) = proven_anchor(&args).await?;
        (anchored, Some(proven))
    } else {
        (fetch_anchor(&args).await?, None)
    };
    let mut view = verify_view(args, &facts.sha256, anchored.as_ref());
    view.proof = proven;
    if json {
        output::print_json(&view)?;
    } else {
        output::print(&verify_text(&view))?;
    }
    match view.result {
        Verdict::Match => Ok(()),
        Verdict::Mismatch | Verdict::NotAnchored => Err(Negative::quiet().into()),
    }
}

async fn fetch_anchor(args: &VerifyArgs) -> anyhow::Result<Option<AnchoredRecord>> {
    let target = args.connect.target()?;
    let mut client = client::connect(&target).await?;
    let response = client
        .get_anchor(GetAnchorRequest {
            dataset: args.dataset.clone(),
            record_id: args.record_id.clone(),
            prove: false,
        })
        .await;
    match response {
        Ok(response) => Ok(response.into_inner().anchored),
        Err(status) if status.code() == Code::NotFound => Ok(None),
        Err(status) => Err(rpc_error(status)),
    }
}

/// What `--verify` checked, for both output formats.
#[derive(Debug, Serialize)]
struct ProofView {
    genesis: PathBuf,
    block_height: u64,
    block_hash: Option<String>,
    state_root: String,
    commit_signatures: usize,
    quorum: u32,
    proof_depth: usize,
    proves: &'static str,
    /// For a value: the transaction that anchored it, proven in its block.
    #[serde(skip_serializing_if = "Option::is_none")]
    anchoring: Option<InclusionView>,
}

/// The anchor from the node (or a saved answer), checked offline against
/// genesis; a proof that does not verify is a negative answer.
async fn proven_anchor(args: &VerifyArgs) -> anyhow::Result<(Option<AnchoredRecord>, ProofView)> {
    let (genesis_path, genesis) =
        proof::trusted_genesis(args.proof.genesis.as_deref(), &args.connect)?;
    let validators = govchain_node::validator_set(&genesis)?;
    let response: GetAnchorResponse = match &args.proof.proof_file {
        Some(path) => proof::read_saved(path, "GetAnchor")?,
        None => ask_with_proof(args).await?,
    };
    let proof = response
        .proof
        .as_ref()
        .ok_or_else(|| Negative::new("PROOF REFUSED: the node's answer carries no proof"))?;
    let key = govchain_exec::anchor_key(&args.dataset, &args.record_id);
    let value = (!response.anchored_bytes.is_empty()).then_some(response.anchored_bytes.as_slice());
    let proven =
        govchain_node::verify_state_proof(&genesis.chain_id, &validators, &key, value, proof)
            .map_err(|err| Negative::new(format!("PROOF REFUSED: {err}")))?;
    // The proven bytes are the answer; the decoded copy beside them is not
    // trusted.
    let anchored = match value {
        None => None,
        Some(bytes) => Some(AnchoredRecord::decode(bytes).map_err(|err| {
            Negative::new(format!(
                "PROOF REFUSED: the proven anchor does not decode: {err}"
            ))
        })?),
    };
    // The transaction that anchored it is in the block the anchor names.
    let anchoring = match &anchored {
        None => None,
        Some(anchored) => Some(
            govchain_node::verify_anchoring_proof(
                &genesis.chain_id,
                &validators,
                anchored,
                response.anchoring_proof.as_ref(),
            )
            .map_err(|err| Negative::new(format!("PROOF REFUSED: anchoring transaction: {err}")))?,
        ),
    };
    let view = ProofView {
        genesis: genesis_path,
        block_height: proven.height,
        block_hash: proven.block_hash.map(|hash| hash.to_hex()),
        state_root: proven.state_root.to_hex(),
        commit_signatures: proven.signers,
        quorum: proven.quorum,
        proof_depth: proven.proof_depth,
        proves: if value.is_some() { "value" } else { "absence" },
        anchoring: anchoring.as_ref().map(InclusionView::new),
    };
    Ok((anchored, view))
}

async fn ask_with_proof(args: &VerifyArgs) -> anyhow::Result<GetAnchorResponse> {
    let target = args.connect.target()?;
    let mut client = client::connect(&target).await?;
    let response = client
        .get_anchor(GetAnchorRequest {
            dataset: args.dataset.clone(),
            record_id: args.record_id.clone(),
            prove: true,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    if let Some(path) = &args.proof.save_proof {
        proof::save(path, &response)?;
    }
    Ok(response)
}

fn verify_view(args: VerifyArgs, sha256: &Digest, anchored: Option<&AnchoredRecord>) -> VerifyView {
    let anchored = anchored.map(AnchoredView::new);
    let result = match &anchored {
        None => Verdict::NotAnchored,
        Some(anchored) if anchored.record_hash() == sha256.to_hex() => Verdict::Match,
        Some(_) => Verdict::Mismatch,
    };
    VerifyView {
        result,
        file: args.file,
        file_sha256: sha256.to_hex(),
        dataset: args.dataset,
        record_id: args.record_id,
        anchored,
        proof: None,
    }
}

fn verify_text(view: &VerifyView) -> String {
    let text = answer_text(view);
    let Some(proof) = &view.proof else {
        return text;
    };
    let mut fields = Fields::new();
    fields
        .add("proof", proof::verified_against(&proof.genesis))
        .add("proves", proof.proves)
        .add(
            "certified block",
            match &proof.block_hash {
                Some(hash) => format!(
                    "height {} hash {hash}, {} commit signatures (quorum {})",
                    proof.block_height, proof.commit_signatures, proof.quorum
                ),
                None => "genesis state (height 0, empty)".into(),
            },
        )
        .add("state root", &proof.state_root)
        .add(
            "proof depth",
            format!("{} sibling hashes", proof.proof_depth),
        );
    if let Some(anchoring) = &proof.anchoring {
        anchoring.add_to(&mut fields, "anchoring transaction");
    }
    format!("{text}\n{}", fields.render())
}

fn answer_text(view: &VerifyView) -> String {
    let headline = match (&view.result, &view.anchored) {
        (Verdict::Match, Some(anchored)) => format!(
            "MATCH: {} is anchored version {} at height {} by signer {}",
            view.file.display(),
            anchored.version,
            anchored.block_height,
            anchored.signer
        ),
        (Verdict::Mismatch, Some(anchored)) => format!(
            "MISMATCH: file sha256 {}, anchored {}",
            view.file_sha256,
            or_dash(anchored.record_hash())
        ),
        _ => format!(
            "NOT ANCHORED: no record {:?} in dataset {:?}",
            view.record_id, view.dataset
        ),
    };
    let Some(anchored) = &view.anchored else {
        return headline;
    };
    let mut fields = Fields::new();
    fields
        .add("file sha256", &view.file_sha256)
        .add("anchored sha256", or_dash(anchored.record_hash()))
        .add("version", anchored.version)
        .add("block height", anchored.block_height)
        .add("transaction", &anchored.transaction_id)
        .add("signer", &anchored.signer)
        .add("department", or_dash(&anchored.department));
    if let Some(record) = &anchored.record {
        fields
            .add("schema", or_dash(&record.schema))
            .add("record time", format_time_ms(record.record_time_ms));
    }
    format!("{headline}\n{}", fields.render())
}

#[cfg(test)]
mod tests {
    use govchain_proto::types::v1::AnchorRecord;

    use super::*;

    fn verify_args() -> VerifyArgs {
        VerifyArgs {
            file: PathBuf::from("r.pdf"),
            dataset: "health/reports".into(),
            record_id: "r-1".into(),
            proof: ProofArgs::default(),
            connect: ConnectArgs::default(),
        }
    }

    fn anchored(hash: &Digest) -> AnchoredRecord {
        AnchoredRecord {
            record: Some(AnchorRecord {
                dataset: "health/reports".into(),
                record_id: "r-1".into(),
                record_hash: hash.to_vec(),
                schema: String::new(),
                record_time_ms: 0,
            }),
            signer: vec![0x11; 32],
            version: 2,
            block_height: 40,
            transaction_id: vec![0x22; 32],
            department: "health".into(),
        }
    }

    #[test]
    fn a_matching_file_names_version_height_and_signer() {
        let hash = Digest::sha256(b"report");
        let view = verify_view(verify_args(), &hash, Some(&anchored(&hash)));
        assert!(matches!(view.result, Verdict::Match));
        let text = verify_text(&view);
        let expected = format!(
            "MATCH: r.pdf is anchored version 2 at height 40 by signer {}",
            "11".repeat(32)
        );
        assert!(text.starts_with(&expected), "{text}");
    }

    #[test]
    fn a_changed_file_is_a_mismatch() {
        let hash = Digest::sha256(b"report");
        let other = Digest::sha256(b"tampered");
        let view = verify_view(verify_args(), &other, Some(&anchored(&hash)));
        assert!(matches!(view.result, Verdict::Mismatch));
        let text = verify_text(&view);
        assert!(
            text.starts_with(&format!("MISMATCH: file sha256 {other}, anchored {hash}")),
            "{text}"
        );
        let json = serde_json::to_value(&view).expect("json");
        assert_eq!(json["result"], "mismatch");
    }

    #[test]
    fn no_anchor_is_not_anchored() {
        let view = verify_view(verify_args(), &Digest::sha256(b"x"), None);
        assert!(matches!(view.result, Verdict::NotAnchored));
        assert_eq!(
            verify_text(&view),
            "NOT ANCHORED: no record \"r-1\" in dataset \"health/reports\""
        );
        let json = serde_json::to_value(&view).expect("json");
        assert_eq!(json["result"], "not_anchored");
    }

    #[test]
    fn bad_names_are_refused_before_signing_leaves_the_machine() {
        let key = SigningKey::from_seed([3; 32]);
        let anchor = Anchor {
            dataset: String::new(),
            record_id: "r".into(),
            record_hash: Digest::sha256(b"x"),
            schema: String::new(),
            record_time_ms: 0,
        };
        let message = format!(
            "{:#}",
            sign_checked(&key, "c", 1, &anchor).expect_err("empty")
        );
        assert!(message.contains("dataset"), "{message}");
    }

    #[test]
    fn offline_anchor_writes_a_submittable_envelope() {
        let dir = tempfile::tempdir().expect("tempdir");
        let record = dir.path().join("r.txt");
        std::fs::write(&record, b"hello").expect("write");
        let key_path = dir.path().join("k.pem");
        let key = SigningKey::from_seed([8; 32]);
        std::fs::write(&key_path, key.to_pkcs8_pem().expect("pem")).expect("write key");
        let out = dir.path().join("r.envelope");
        let args = AnchorArgs {
            file: record,
            dataset: "demo".into(),
            record_id: "r1".into(),
            schema: Some("text/plain".into()),
            signing_key: key_path,
            record_time_ms: Some(5),
            nonce: Some(1),
            chain_id: Some("govchain-test".into()),
            out: Some(out.clone()),
            wait: WaitArgs {
                wait: false,
                timeout: std::time::Duration::from_secs(1),
            },
            connect: ConnectArgs::default(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime
            .block_on(anchor(args, true))
            .expect("anchor offline");
        let bytes = std::fs::read(&out).expect("envelope written");
        let envelope = govchain_exec::decode_envelope(&bytes).expect("decodes");
        let verified =
            govchain_exec::check_envelope(envelope, "govchain-test", 65536, |_, _| false)
                .expect("verifies");
        assert_eq!(verified.signer, key.public_key());
        let expected = anchor_for_test(Digest::sha256(b"hello"));
        assert_eq!(Some(verified.body), expected.transaction().body);
    }

    fn anchor_for_test(hash: Digest) -> Anchor {
        Anchor {
            dataset: "demo".into(),
            record_id: "r1".into(),
            record_hash: hash,
            schema: "text/plain".into(),
            record_time_ms: 5,
        }
    }
}
