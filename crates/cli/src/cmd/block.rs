//! `govchain block get`: one committed block, its certificate and its
//! transactions.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use govchain_crypto::Digest;
use govchain_proto::node::v1::GetBlockRequest;
use govchain_proto::node::v1::get_block_request::Selector;
use govchain_proto::types::v1::CommittedBlock;
use serde::Serialize;

use crate::client::{self, ConnectArgs, rpc_error};
use crate::envelope;
use crate::output::{self, Fields, format_time_ms};
use crate::view::ResultView;

#[derive(Debug, Args)]
pub struct BlockArgs {
    #[command(subcommand)]
    command: BlockCommand,
}

#[derive(Debug, Subcommand)]
enum BlockCommand {
    /// Show a committed block: header, commit certificate and transactions.
    #[command(
        long_about = "Show a committed block: its header (height, hash, parent, transactions \
            root, state root, time, view, proposer), the validators whose commit signatures \
            are in its certificate, and its transaction ids with their results. Without \
            HEIGHT or --hash, shows the latest block.",
        after_help = "Examples:\n  \
            govchain block get --dir devnet            # the latest block\n  \
            govchain block get 12 --dir devnet\n  \
            govchain block get --hash 9a1f...c3 --json"
    )]
    Get(GetArgs),
}

#[derive(Debug, Args)]
struct GetArgs {
    /// Block height; the first block is 1.
    #[arg(value_name = "HEIGHT", conflicts_with_all = ["hash", "latest"])]
    height: Option<u64>,
    /// Block hash, 64 hex characters.
    #[arg(long, value_name = "HEX", conflicts_with = "latest")]
    hash: Option<String>,
    /// The latest committed block (the default).
    #[arg(long)]
    latest: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub async fn run(args: BlockArgs, json: bool) -> anyhow::Result<()> {
    let BlockCommand::Get(args) = args.command;
    let selector = match (&args.height, &args.hash) {
        (Some(height), _) => Selector::Height(*height),
        (None, Some(hash)) => Selector::Hash(
            Digest::from_hex(hash)
                .with_context(|| format!("{hash:?} is not a block hash"))?
                .to_vec(),
        ),
        (None, None) => Selector::Latest(true),
    };
    let target = args.connect.target()?;
    let mut client = client::connect(&target).await?;
    let response = client
        .get_block(GetBlockRequest {
            selector: Some(selector),
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let block = response
        .block
        .context("the node answered without a block")?;
    let view = BlockView::new(&block, &args.connect.validator_names());
    if json {
        output::print_json(&view)
    } else {
        output::print(&view.render())
    }
}

#[derive(Debug, Serialize)]
pub struct BlockView {
    pub height: u64,
    pub hash: String,
    pub chain_id: String,
    pub parent_hash: String,
    pub transactions_root: String,
    pub state_root: String,
    pub timestamp_ms: u64,
    pub time: String,
    pub view: u64,
    pub proposer_index: u32,
    /// The proposer's department, when genesis is at hand (`--dir`).
    pub proposer: Option<String>,
    pub transaction_count: u32,
    pub certificate: CertificateView,
    pub transactions: Vec<BlockTransactionView>,
}

#[derive(Debug, Serialize)]
pub struct CertificateView {
    pub view: u64,
    pub signers: Vec<SignerView>,
}

#[derive(Debug, Serialize)]
pub struct SignerView {
    pub validator_index: u32,
    pub name: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct BlockTransactionView {
    pub transaction_id: String,
    pub signer: String,
    pub nonce: u64,
    pub result: Option<ResultView>,
}

fn validator_name(names: &[String], index: u32) -> Option<String> {
    usize::try_from(index)
        .ok()
        .and_then(|index| names.get(index))
        .cloned()
}

impl BlockView {
    /// `names` are validator names in genesis order, possibly empty.
    pub fn new(block: &CommittedBlock, names: &[String]) -> Self {
        let header = block.header.clone().unwrap_or_default();
        let certificate = block.certificate.clone().unwrap_or_default();
        let envelopes = block
            .block
            .as_ref()
            .map(|body| body.transactions.as_slice())
            .unwrap_or_default();
        Self {
            height: header.height,
            hash: hex::encode(&block.block_hash),
            chain_id: header.chain_id.clone(),
            parent_hash: hex::encode(&header.parent_hash),
            transactions_root: hex::encode(&header.transactions_root),
            state_root: hex::encode(&header.state_root),
            timestamp_ms: header.timestamp_ms,
            time: format_time_ms(header.timestamp_ms),
            view: header.view,
            proposer_index: header.proposer_index,
            proposer: validator_name(names, header.proposer_index),
            transaction_count: header.transaction_count,
            certificate: CertificateView {
                view: certificate.view,
                signers: certificate
                    .signatures
                    .iter()
                    .map(|signature| SignerView {
                        validator_index: signature.validator_index,
                        name: validator_name(names, signature.validator_index),
                    })
                    .collect(),
            },
            transactions: envelopes
                .iter()
                .enumerate()
                .map(|(index, envelope)| BlockTransactionView {
                    transaction_id: envelope::envelope_id(envelope).to_hex(),
                    signer: hex::encode(&envelope.signer),
                    nonce: envelope.nonce,
                    result: block.results.get(index).map(ResultView::new),
                })
                .collect(),
        }
    }

    pub fn render(&self) -> String {
        let with_name = |index: u32, name: &Option<String>| match name {
            Some(name) => format!("{index} ({name})"),
            None => index.to_string(),
        };
        let signers: Vec<String> = self
            .certificate
            .signers
            .iter()
            .map(|signer| with_name(signer.validator_index, &signer.name))
            .collect();
        let mut fields = Fields::new();
        fields
            .add("height", self.height)
            .add("hash", &self.hash)
            .add("parent", &self.parent_hash)
            .add("transactions root", &self.transactions_root)
            .add("state root", &self.state_root)
            .add("time", &self.time)
            .add("view", self.view)
            .add("proposer", with_name(self.proposer_index, &self.proposer))
            .add("transactions", self.transaction_count)
            .add(
                "certificate",
                format!(
                    "view {}, {} signatures: {}",
                    self.certificate.view,
                    signers.len(),
                    if signers.is_empty() {
                        "none".to_owned()
                    } else {
                        signers.join(", ")
                    }
                ),
            );
        let mut text = fields.render();
        for (index, transaction) in self.transactions.iter().enumerate() {
            let result = transaction
                .result
                .as_ref()
                .map_or_else(|| "-".to_owned(), ResultView::text);
            text.push_str(&format!(
                "\n  {index:>4}  {}  nonce {}  {result}",
                transaction.transaction_id, transaction.nonce
            ));
        }
        text
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use govchain_crypto::SigningKey;
    use govchain_proto::types::v1::{
        Block, BlockHeader, CommitCertificate, CommitSignature, TransactionOutcome,
        TransactionResult,
    };

    use super::*;
    use crate::envelope::Anchor;

    pub(crate) fn committed_block() -> CommittedBlock {
        let key = SigningKey::from_seed([5; 32]);
        let anchor = Anchor {
            dataset: "d".into(),
            record_id: "r".into(),
            record_hash: Digest::sha256(b"x"),
            schema: String::new(),
            record_time_ms: 0,
        };
        let signed = envelope::sign(&key, "govchain-test", 1, &anchor.transaction());
        CommittedBlock {
            block_hash: vec![0xaa; 32],
            header: Some(BlockHeader {
                chain_id: "govchain-test".into(),
                height: 3,
                parent_hash: vec![0xbb; 32],
                transactions_root: vec![0xcc; 32],
                state_root: vec![0xdd; 32],
                timestamp_ms: 1_709_211_909_042,
                view: 1,
                proposer_index: 1,
                transaction_count: 1,
                next_validators: Vec::new(),
            }),
            block: Some(Block {
                header: Vec::new(),
                transactions: vec![signed.envelope],
            }),
            certificate: Some(CommitCertificate {
                height: 3,
                view: 1,
                block_hash: vec![0xaa; 32],
                signatures: [0, 1, 3]
                    .into_iter()
                    .map(|validator_index| CommitSignature {
                        validator_index,
                        signature: vec![0; 64],
                    })
                    .collect(),
            }),
            results: vec![TransactionResult {
                outcome: TransactionOutcome::Success.into(),
                error: String::new(),
                ..Default::default()
            }],
        }
    }

    #[test]
    fn block_view_names_validators_and_lists_transactions() {
        let names: Vec<String> = ["health", "tax", "education", "transport"]
            .iter()
            .map(|name| (*name).to_owned())
            .collect();
        let view = BlockView::new(&committed_block(), &names);
        let text = view.render();
        assert!(text.contains("proposer:          1 (tax)"), "{text}");
        assert!(
            text.contains("view 1, 3 signatures: 0 (health), 1 (tax), 3 (transport)"),
            "{text}"
        );
        assert!(
            text.contains("time:              2024-02-29T13:05:09.042Z"),
            "{text}"
        );
        assert!(text.contains("nonce 1  success"), "{text}");
        let json = serde_json::to_value(&view).expect("json");
        assert_eq!(json["hash"], "aa".repeat(32));
        assert_eq!(json["certificate"]["signers"][2]["name"], "transport");
        assert_eq!(json["transactions"][0]["result"]["outcome"], "success");
    }

    #[test]
    fn without_genesis_validators_are_indexes() {
        let view = BlockView::new(&committed_block(), &[]);
        assert!(view.render().contains("proposer:          1\n"));
        assert!(view.proposer.is_none());
    }
}
