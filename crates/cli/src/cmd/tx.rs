//! `govchain tx`: submit a signed envelope, wait for it, look it up.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use govchain_crypto::Digest;
use govchain_proto::node::v1::node_service_client::NodeServiceClient;
use govchain_proto::node::v1::{
    CommitStatusRequest, GetTransactionRequest, GetTransactionResponse, SubmitTransactionRequest,
    SubmitTransactionsRequest, TransactionStatus,
};
use govchain_proto::types::v1::TransactionEnvelope;
use serde::Serialize;
use tonic::Code;
use tonic::transport::Channel;
use tracing::Instrument as _;

use crate::client::{self, ConnectArgs, rpc_error};
use crate::envelope;
use crate::exit::Negative;
use crate::output::{self, Fields};
use crate::proof::{self, InclusionView, ProofArgs};
use crate::view::{BodyView, ResultView, status_name};

/// Transaction ids per `CommitStatus` call (the node's bound).
const COMMIT_STATUS_IDS_MAX: usize = 1024;
/// Largest envelope file read; far above any chain's payload limit, so the
/// node, not the CLI, is the one to refuse an oversized transaction.
const ENVELOPE_FILE_BYTES_MAX: u64 = 16 * 1024 * 1024;

#[derive(Debug, Args)]
pub struct TxArgs {
    #[command(subcommand)]
    command: TxCommand,
}

#[derive(Debug, Subcommand)]
enum TxCommand {
    /// Submit a signed transaction envelope to a node.
    #[command(
        long_about = "Submit a signed transaction envelope (binary protobuf \
            govchain.types.v1.TransactionEnvelope) to a node, which checks it and admits it to \
            its mempool; the validators then order it into a block. Prints the transaction id. \
            With --wait, also waits until it is committed and prints the block height and \
            result; a committed but failed transaction exits 1.\n\n\
            Several --envelope files go to the node in batches of up to 1,024 \
            (SubmitTransactions, one call per batch, signatures verified together); each \
            envelope gets its own line: its id and ADMITTED, or the gRPC code and reason it \
            was refused. The command exits 1 if any was refused (or, with --wait, failed).",
        after_help = "Examples:\n  \
            govchain record anchor r.pdf --dataset d --record-id r1 --signing-key k.pem \\\n    \
            --nonce 1 --chain-id govchain-devnet --out r1.envelope   # sign offline\n  \
            govchain tx submit --envelope r1.envelope --dir devnet --wait\n  \
            cat r1.envelope | govchain tx submit --envelope - --wait\n  \
            govchain tx submit --envelope r1.envelope --envelope r2.envelope --wait   # one batch\n  \
            govchain tx submit --envelope out/*.envelope --json                  # many files"
    )]
    Submit(SubmitArgs),
    /// Show a transaction's status, block, result, signer and nonce.
    #[command(
        long_about = "Show a transaction's status, block, result, signer and nonce, as the node \
            you ask has it; ask another with --department or --node for a second opinion.\n\n\
            With --verify the node need not be trusted: it returns the transaction with its \
            block's header, that block's commit certificate and an RFC 6962 audit path, which \
            are checked offline against genesis (--genesis, or the devnet's with --dir): the \
            envelope must hash to the id and carry a valid signature, the audit path must \
            lead from the id at its index to the header's transactions root, and a quorum of \
            the validators must have signed that header. It proves the envelope, block \
            height, block hash and index; not the result, which no header commits to. An \
            answer that does not verify is refused: PROOF REFUSED and the failing item on \
            stderr, exit 1; a transaction that is pending, not committed, has nothing to \
            prove yet (exit 1). --save-proof keeps the node's answer; --proof-file checks a \
            saved answer with no node at all.",
        after_help = "Examples:\n  \
            govchain tx get 5f0c...e1 --dir devnet --json\n  \
            govchain tx get 5f0c...e1 --dir devnet --verify --save-proof tx.proof\n  \
            govchain tx get 5f0c...e1 --verify --proof-file tx.proof --genesis devnet/genesis.json"
    )]
    Get(GetArgs),
    /// Print committed transactions that match a filter, as they commit.
    #[command(
        long_about = "Print one line per committed transaction that matches the filter \
            (position HEIGHT:INDEX, id, kind, signing department or signer, block time, \
            result), in chain order: from --from or --after, then each new one as it commits \
            (SubscribeTransactions). Filters of one kind are alternatives, filters of different \
            kinds must all match. If the connection breaks, the command resumes after the last \
            transaction it printed, with no gap and no repeat, waiting 1 s, then twice as \
            long after each failed attempt (at most 30 s; it gives up after 10 in a row); a \
            program that stops can do the same with --after and the last position it \
            processed. Runs until Ctrl-C, --limit, or the node ends the stream. With --json, prints one JSON object per line.",
        after_help = "Examples:\n  \
            govchain tx follow --dir devnet --kind anchor_record --dataset health/\n  \
            govchain tx follow --dir devnet --signed-by tax --from 1 --json\n  \
            govchain tx follow --dir devnet --after 120:3 --limit 100 --json | jq .position"
    )]
    Follow(super::tx_follow::FollowArgs),
    /// List a signer's committed transactions, oldest first.
    #[command(
        long_about = "List the committed transactions of one signer (ListTransactions), \
            whatever their result, oldest first, one page at a time: --page-size entries \
            (default 100), then a token for the next page on stderr; --all reads every page. \
            Each line shows the position HEIGHT:INDEX, id, kind, signing department, block \
            time and result.",
        after_help = "Examples:\n  \
            govchain tx list --signing-key devnet/certs/health/signing.key --dir devnet\n  \
            govchain tx list --signer 3b6a...c1 --all --json --dir devnet"
    )]
    List(super::listing::TxListArgs),
}

/// `--wait` and `--timeout`, shared with `record anchor`.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Wait until the transaction is committed, then print its block and result.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long, e.g. 30s, 500ms, 2m.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
struct SubmitArgs {
    /// Envelope file, or - for stdin; repeat it (or give several files
    /// after it) to submit in batches.
    #[arg(long, value_name = "FILE", num_args = 1.., required = true)]
    envelope: Vec<PathBuf>,
    #[command(flatten)]
    wait: WaitArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
struct GetArgs {
    /// Transaction id, 64 hex characters.
    #[arg(value_name = "ID_HEX")]
    id: String,
    #[command(flatten)]
    proof: ProofArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub async fn run(args: TxArgs, json: bool) -> anyhow::Result<()> {
    match args.command {
        TxCommand::Submit(args) => submit(args, json).await,
        TxCommand::Get(args) => get(args, json).await,
        TxCommand::Follow(args) => super::tx_follow::run(args, json).await,
        TxCommand::List(args) => super::listing::transactions(args, json).await,
    }
}

/// `30s`, `500ms`, `2m`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 500ms or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "" | "s" => Ok(Duration::from_secs(value)),
        "m" => value
            .checked_mul(60)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{text:?} is too long")),
        _ => Err(format!("unknown unit {unit:?} in {text:?}: use ms, s or m")),
    }
}

fn read_envelope(path: &Path) -> anyhow::Result<TransactionEnvelope> {
    let mut bytes = Vec::new();
    let name = if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(ENVELOPE_FILE_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .context("cannot read the envelope from stdin")?;
        "stdin".to_owned()
    } else {
        std::fs::File::open(path)
            .and_then(|file| {
                file.take(ENVELOPE_FILE_BYTES_MAX + 1)
                    .read_to_end(&mut bytes)
            })
            .with_context(|| format!("cannot read {}", path.display()))?;
        path.display().to_string()
    };
    anyhow::ensure!(
        bytes.len() as u64 <= ENVELOPE_FILE_BYTES_MAX,
        "{name} is over {ENVELOPE_FILE_BYTES_MAX} bytes; it is not a transaction envelope"
    );
    govchain_exec::decode_envelope(&bytes).with_context(|| {
        format!("{name} is not a binary TransactionEnvelope (make one with `govchain record anchor --out`)")
    })
}

/// Submits `envelope` and returns the id the node reports.
pub async fn submit_envelope(
    client: &mut NodeServiceClient<Channel>,
    envelope: TransactionEnvelope,
) -> anyhow::Result<Digest> {
    // The root of the transaction's trace when OTEL_* variables are set:
    // its context goes to the node in the request's metadata.
    let span = tracing::info_span!(
        "submit",
        otel.name = "govchain submit",
        otel.kind = "client"
    );
    let mut request = tonic::Request::new(SubmitTransactionRequest {
        envelope: Some(envelope),
    });
    span.in_scope(|| {
        govchain_node::telemetry::trace_context::inject_current(request.metadata_mut());
    });
    let response = client
        .submit_transaction(request)
        .instrument(span)
        .await
        .map_err(rpc_error)?
        .into_inner();
    Digest::from_slice(&response.transaction_id)
        .context("the node answered with a malformed transaction id")
}

/// Waits until the transaction is committed or `timeout` passes, with the
/// node's `CommitStatus` stream (the node answers the moment the block is
/// durable; no polling).
pub async fn wait_for_commit(
    client: &mut NodeServiceClient<Channel>,
    id: &Digest,
    timeout: Duration,
) -> anyhow::Result<GetTransactionResponse> {
    let mut committed = wait_for_commits(client, &[*id], timeout).await?;
    committed
        .pop()
        .context("the node ended the wait without an answer")
}

/// Waits for every one of `ids` (in calls of at most 1,024), and returns
/// them as committed, in commit order per call. After `timeout`, says
/// which are still pending and how to follow them up.
pub async fn wait_for_commits(
    client: &mut NodeServiceClient<Channel>,
    ids: &[Digest],
    timeout: Duration,
) -> anyhow::Result<Vec<GetTransactionResponse>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut committed = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(COMMIT_STATUS_IDS_MAX) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let mut request = tonic::Request::new(CommitStatusRequest {
            transaction_ids: chunk.iter().map(|id| id.to_vec()).collect(),
        });
        request.set_timeout(left);
        let mut stream = client
            .commit_status(request)
            .await
            .map_err(rpc_error)?
            .into_inner();
        loop {
            match stream.message().await {
                Ok(Some(answer)) => {
                    let transaction = answer
                        .transaction
                        .context("the node answered CommitStatus without the transaction")?;
                    if transaction.status() == TransactionStatus::Dropped {
                        anyhow::bail!(
                            "transaction {} was dropped without committing: {}",
                            hex::encode(&transaction.transaction_id),
                            transaction.drop_reason
                        );
                    }
                    committed.push(transaction);
                }
                Ok(None) => break,
                Err(status) if status.code() == Code::DeadlineExceeded => {
                    let first = chunk
                        .iter()
                        .find(|id| !committed.iter().any(|c| c.transaction_id == id.as_bytes()))
                        .unwrap_or(&chunk[0]);
                    anyhow::bail!(
                        "transaction {first} is not committed after {timeout:?} ({}); it may commit later: check with `govchain tx get {first}` and `govchain status`",
                        client::status_line(&status)
                    );
                }
                Err(status) => return Err(rpc_error(status)),
            }
        }
    }
    Ok(committed)
}

/// The answer to `tx submit`, `tx get` and `record anchor --wait`.
#[derive(Debug, Serialize)]
pub struct TransactionView {
    pub transaction_id: String,
    pub status: &'static str,
    pub block_height: Option<u64>,
    pub block_hash: Option<String>,
    pub index: Option<u32>,
    pub result: Option<ResultView>,
    pub signer: Option<String>,
    pub nonce: Option<u64>,
    pub chain_id: Option<String>,
    pub body: Option<BodyView>,
    /// Why the node dropped it (status `dropped`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<String>,
}

impl TransactionView {
    pub fn submitted(id: &Digest) -> Self {
        Self {
            transaction_id: id.to_hex(),
            status: status_name(TransactionStatus::Pending),
            block_height: None,
            block_hash: None,
            index: None,
            result: None,
            signer: None,
            nonce: None,
            chain_id: None,
            body: None,
            drop_reason: None,
        }
    }

    pub fn new(id: &Digest, response: &GetTransactionResponse) -> Self {
        let committed = response.status() == TransactionStatus::Committed;
        let envelope = response.envelope.as_ref();
        Self {
            transaction_id: id.to_hex(),
            status: status_name(response.status()),
            block_height: committed.then_some(response.block_height),
            block_hash: committed.then(|| hex::encode(&response.block_hash)),
            index: committed.then_some(response.index),
            result: response
                .result
                .as_ref()
                .filter(|_| committed)
                .map(ResultView::new),
            signer: envelope.map(|e| hex::encode(&e.signer)),
            nonce: envelope.map(|e| e.nonce),
            chain_id: envelope.map(|e| e.chain_id.clone()),
            body: envelope
                .and_then(envelope::body)
                .map(|body| BodyView::new(&body)),
            drop_reason: (response.status() == TransactionStatus::Dropped)
                .then(|| response.drop_reason.clone()),
        }
    }

    pub fn failed(&self) -> bool {
        self.result.as_ref().is_some_and(ResultView::failed)
    }

    pub fn fields(&self) -> Fields {
        let mut fields = Fields::new();
        fields
            .add("transaction", &self.transaction_id)
            .add("status", self.status);
        if let Some(height) = self.block_height {
            fields.add("block height", height);
        }
        if let Some(hash) = &self.block_hash {
            fields.add("block hash", hash);
        }
        if let Some(index) = self.index {
            fields.add("index", index);
        }
        if let Some(result) = &self.result {
            fields.add("result", result.text());
        }
        if let Some(reason) = &self.drop_reason {
            fields.add("dropped because", reason);
        }
        if let Some(signer) = &self.signer {
            fields.add("signer", signer);
        }
        if let Some(nonce) = self.nonce {
            fields.add("nonce", nonce);
        }
        if let Some(chain_id) = &self.chain_id {
            fields.add("chain id", chain_id);
        }
        for (key, value) in self.body.iter().flat_map(BodyView::fields) {
            fields.add(key, value);
        }
        fields
    }

    /// Prints the view, then exits 1 (after printing) if it failed.
    pub fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            output::print_json(self)?;
        } else {
            output::print(&self.fields().render())?;
        }
        self.check_outcome()
    }

    fn check_outcome(&self) -> anyhow::Result<()> {
        match &self.result {
            Some(result) if result.failed() => Err(Negative::new(format!(
                "transaction {} was committed but failed: {}",
                self.transaction_id,
                if result.error.is_empty() {
                    "no reason given"
                } else {
                    &result.error
                }
            ))
            .into()),
            _ => Ok(()),
        }
    }
}

async fn submit(args: SubmitArgs, json: bool) -> anyhow::Result<()> {
    if args.envelope.len() > 1 {
        return submit_batches(args, json).await;
    }
    let envelope = read_envelope(&args.envelope[0])?;
    let target = args.connect.target()?;
    let mut client = client::connect(&target).await?;
    let id = submit_envelope(&mut client, envelope).await?;
    if !args.wait.wait {
        let view = TransactionView::submitted(&id);
        return if json {
            output::print_json(&view)
        } else {
            output::print(&view.fields().render())
        };
    }
    let response = wait_for_commit(&mut client, &id, args.wait.timeout).await?;
    TransactionView::new(&id, &response).print(json)
}

/// Envelopes per `SubmitTransactions` call: the node's bound
/// (SUBMIT_BATCH_TRANSACTIONS_MAX).
const BATCH_ENVELOPES_MAX: usize = 1024;

/// One envelope's line of a batch submission (`--json`:
/// `{"results": [BatchLine, ...]}`).
#[derive(Debug, Serialize)]
struct BatchLine {
    file: String,
    transaction_id: String,
    /// "admitted", or the gRPC code of the refusal in snake case
    /// ("already_exists").
    status: String,
    /// Why it was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The refusal's stable reason ("NONCE_USED"), as ErrorInfo names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// With --wait: the committed transaction.
    #[serde(skip_serializing_if = "Option::is_none")]
    committed: Option<TransactionView>,
}

#[derive(Debug, Serialize)]
struct BatchView {
    results: Vec<BatchLine>,
}

async fn submit_batches(args: SubmitArgs, json: bool) -> anyhow::Result<()> {
    let envelopes = args
        .envelope
        .iter()
        .map(|path| read_envelope(path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let target = args.connect.target()?;
    let mut client = client::connect(&target).await?;
    let mut lines = Vec::with_capacity(envelopes.len());
    let mut files = args.envelope.iter();
    let mut envelopes = envelopes.into_iter().peekable();
    while envelopes.peek().is_some() {
        let batch: Vec<TransactionEnvelope> =
            envelopes.by_ref().take(BATCH_ENVELOPES_MAX).collect();
        let sent = batch.len();
        let response = client
            .submit_transactions(SubmitTransactionsRequest { envelopes: batch })
            .await
            .map_err(rpc_error)?
            .into_inner();
        anyhow::ensure!(
            response.results.len() == sent,
            "the node answered {} results for {sent} envelopes",
            response.results.len()
        );
        for result in response.results {
            let file = files
                .next()
                .map(|f| f.display().to_string())
                .unwrap_or_default();
            let code = Code::from_i32(result.code);
            lines.push(BatchLine {
                file,
                transaction_id: hex::encode(&result.transaction_id),
                status: if code == Code::Ok {
                    "admitted".to_owned()
                } else {
                    snake_case(&format!("{code:?}"))
                },
                reason: (code != Code::Ok).then(|| crate::view::reason_name(result.reason())),
                error: (code != Code::Ok).then_some(result.message),
                committed: None,
            });
        }
    }
    if args.wait.wait {
        let admitted = lines
            .iter()
            .filter(|l| l.error.is_none())
            .map(|l| Digest::from_hex(&l.transaction_id))
            .collect::<Result<Vec<_>, _>>()
            .context("the node answered with a malformed transaction id")?;
        for response in wait_for_commits(&mut client, &admitted, args.wait.timeout).await? {
            let id = Digest::from_slice(&response.transaction_id)
                .context("the node answered with a malformed transaction id")?;
            if let Some(line) = lines
                .iter_mut()
                .find(|l| l.error.is_none() && l.transaction_id == id.to_hex())
            {
                line.committed = Some(TransactionView::new(&id, &response));
            }
        }
    }
    let refused = lines.iter().filter(|l| l.error.is_some()).count();
    let failed = lines
        .iter()
        .filter(|l| l.committed.as_ref().is_some_and(TransactionView::failed))
        .count();
    let view = BatchView { results: lines };
    if json {
        output::print_json(&view)?;
    } else {
        output::print(&render_batch(&view))?;
    }
    if refused + failed > 0 {
        return Err(Negative::new(format!(
            "{refused} of {} envelopes refused, {failed} committed but failed",
            view.results.len()
        ))
        .into());
    }
    Ok(())
}

/// "AlreadyExists" → "already_exists".
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn render_batch(view: &BatchView) -> String {
    let mut table = crate::output::Table::new(&["FILE", "TRANSACTION", "STATUS", "DETAIL"]);
    for line in &view.results {
        let detail = match (&line.error, &line.committed) {
            (Some(error), _) => match &line.reason {
                Some(reason) => format!("{reason}: {error}"),
                None => error.clone(),
            },
            (None, Some(committed)) => format!(
                "committed at height {}{}",
                committed.block_height.unwrap_or(0),
                if committed.failed() { ", FAILED" } else { "" }
            ),
            (None, None) => String::new(),
        };
        table.add(vec![
            line.file.clone(),
            line.transaction_id.clone(),
            line.status.clone(),
            detail,
        ]);
    }
    table.render()
}

async fn get(args: GetArgs, json: bool) -> anyhow::Result<()> {
    let id = Digest::from_hex(&args.id)
        .with_context(|| format!("{:?} is not a transaction id", args.id))?;
    if args.proof.verify {
        return get_verified(&args, &id, json).await;
    }
    let response = ask_transaction(&args, &id, false).await?;
    let view = TransactionView::new(&id, &response);
    // `tx get` reports; a failed transaction is an answer, not an error.
    if json {
        output::print_json(&view)
    } else {
        output::print(&view.fields().render())
    }
}

async fn ask_transaction(
    args: &GetArgs,
    id: &Digest,
    prove: bool,
) -> anyhow::Result<GetTransactionResponse> {
    let target = args.connect.target()?;
    let mut client = client::connect(&target).await?;
    let response = client
        .get_transaction(GetTransactionRequest {
            transaction_id: id.to_vec(),
            prove,
        })
        .await
        .map_err(|status| match status.code() {
            Code::NotFound => anyhow::anyhow!(
                "{}; check the id, or ask another node with --department or --node",
                client::status_line(&status)
            ),
            _ => rpc_error(status),
        })?
        .into_inner();
    Ok(response)
}

/// `tx get` with its answer proven.
#[derive(Debug, Serialize)]
struct ProvenTransactionView {
    #[serde(flatten)]
    transaction: TransactionView,
    proof: InclusionProofView,
}

#[derive(Debug, Serialize)]
struct InclusionProofView {
    genesis: PathBuf,
    /// What the proof covers; the result is the node's word.
    proves: &'static str,
    #[serde(flatten)]
    inclusion: InclusionView,
}

/// What `--verify` proves of a transaction.
const PROVES: &str = "envelope, block height, block hash and index (not the result)";

/// `tx get --verify`: the answer (from the node or a saved file) is
/// checked offline against genesis; one that does not verify is a
/// negative answer naming the item that failed.
async fn get_verified(args: &GetArgs, id: &Digest, json: bool) -> anyhow::Result<()> {
    let (genesis_path, genesis) =
        proof::trusted_genesis(args.proof.genesis.as_deref(), &args.connect)?;
    let validators = govchain_node::validator_set(&genesis)?;
    let response = match &args.proof.proof_file {
        Some(path) => proof::read_saved(path, "GetTransaction")?,
        None => {
            let response = ask_transaction(args, id, true).await?;
            if let Some(path) = &args.proof.save_proof {
                proof::save(path, &response)?;
            }
            response
        }
    };
    if response.status() != TransactionStatus::Committed {
        return Err(Negative::new(format!(
            "NOT PROVEN: transaction {id} is {}, not committed; nothing to prove yet (wait with `govchain tx submit --wait`, or ask again)",
            status_name(response.status()),
        ))
        .into());
    }
    let proven =
        govchain_node::verify_transaction_proof(&genesis.chain_id, &validators, id, &response)
            .map_err(|err| Negative::new(format!("PROOF REFUSED: {err}")))?;
    let view = ProvenTransactionView {
        transaction: TransactionView::new(id, &response),
        proof: InclusionProofView {
            genesis: genesis_path,
            proves: PROVES,
            inclusion: InclusionView::new(&proven),
        },
    };
    if json {
        return output::print_json(&view);
    }
    let mut fields = Fields::new();
    fields
        .add("proof", proof::verified_against(&view.proof.genesis))
        .add("proves", view.proof.proves);
    view.proof.inclusion.add_to(&mut fields, "included");
    output::print(&format!(
        "{}\n{}",
        view.transaction.fields().render(),
        fields.render()
    ))
}

#[cfg(test)]
mod tests {
    use govchain_crypto::SigningKey;
    use govchain_proto::types::v1::{TransactionOutcome, TransactionResult};

    use super::*;
    use crate::envelope::Anchor;

    #[test]
    fn code_names_are_snake_case() {
        assert_eq!(
            snake_case(&format!("{:?}", Code::AlreadyExists)),
            "already_exists"
        );
        assert_eq!(
            snake_case(&format!("{:?}", Code::InvalidArgument)),
            "invalid_argument"
        );
        assert_eq!(
            snake_case(&format!("{:?}", Code::Unavailable)),
            "unavailable"
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("s").is_err());
    }

    fn committed(outcome: TransactionOutcome, error: &str) -> (Digest, GetTransactionResponse) {
        let key = SigningKey::from_seed([4; 32]);
        let anchor = Anchor {
            dataset: "d".into(),
            record_id: "r".into(),
            record_hash: Digest::sha256(b"x"),
            schema: String::new(),
            record_time_ms: 0,
        };
        let signed = envelope::sign(&key, "c", 7, &anchor.transaction());
        let response = GetTransactionResponse {
            transaction_id: signed.id.to_vec(),
            status: TransactionStatus::Committed.into(),
            block_height: 12,
            block_hash: vec![0xcd; 32],
            index: 2,
            result: Some(TransactionResult {
                outcome: outcome.into(),
                error: error.into(),
                ..Default::default()
            }),
            envelope: Some(signed.envelope),
            ..Default::default()
        };
        (signed.id, response)
    }

    #[test]
    fn a_committed_transaction_shows_block_result_and_body() {
        let (id, response) = committed(TransactionOutcome::Success, "");
        let view = TransactionView::new(&id, &response);
        let text = view.fields().render();
        assert!(text.contains("status:        committed"), "{text}");
        assert!(text.contains("block height:  12"), "{text}");
        assert!(text.contains("nonce:         7"), "{text}");
        assert!(text.contains("dataset:       d"), "{text}");
        assert!(!view.failed());
        let json = serde_json::to_value(&view).expect("json");
        assert_eq!(json["result"]["outcome"], "success");
        assert_eq!(json["body"]["anchor_record"]["record_id"], "r");
    }

    #[test]
    fn a_failed_transaction_is_a_negative_answer() {
        let (id, response) = committed(TransactionOutcome::Failed, "not the owner");
        let view = TransactionView::new(&id, &response);
        assert!(view.failed());
        let err = view.check_outcome().expect_err("failed");
        assert!(err.downcast_ref::<Negative>().is_some());
        assert!(err.to_string().contains("not the owner"));
    }

    #[test]
    fn a_pending_transaction_has_no_block() {
        let (id, mut response) = committed(TransactionOutcome::Success, "");
        response.status = TransactionStatus::Pending.into();
        let json = serde_json::to_value(TransactionView::new(&id, &response)).expect("json");
        assert_eq!(json["status"], "pending");
        assert!(json["block_height"].is_null());
        assert!(json["result"].is_null());
    }
}
