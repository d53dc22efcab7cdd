//! What `--verify` checks an answer against (genesis, from `--genesis` or
//! the devnet's), saved answers, and how a proven inclusion is shown; used
//! by `tx get --verify` and `record verify --verify`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use govchain_node::ProvenInclusion;
use govchain_pki::Genesis;
use prost::Message;
use serde::Serialize;

use crate::client::ConnectArgs;
use crate::output::Fields;

/// `--verify` and what goes with it, shared by the commands that read
/// with proofs.
#[derive(Debug, Default, Args)]
pub struct ProofArgs {
    /// Ask for a proof and check it offline against genesis; an answer
    /// that does not verify exits 1.
    #[arg(long)]
    pub verify: bool,
    /// Genesis to check the proof against; default with --dir: the devnet's.
    #[arg(long, value_name = "FILE", requires = "verify")]
    pub genesis: Option<PathBuf>,
    /// Write the node's answer with its proof (protobuf) to this file.
    #[arg(long, value_name = "FILE", requires = "verify")]
    pub save_proof: Option<PathBuf>,
    /// Check an answer saved with --save-proof instead of asking a node.
    #[arg(
        long,
        value_name = "FILE",
        requires = "verify",
        conflicts_with = "save_proof"
    )]
    pub proof_file: Option<PathBuf>,
}

/// The genesis to check proofs against, and where it was read from:
/// `genesis`, or else the devnet's when `connect` names one.
pub fn trusted_genesis(
    genesis: Option<&Path>,
    connect: &ConnectArgs,
) -> anyhow::Result<(PathBuf, Genesis)> {
    let path = match (genesis, connect.devnet()?) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(devnet)) => devnet.file.genesis_path(&devnet.dir),
        (None, None) => anyhow::bail!(
            "checking proofs needs the genesis to check against: give --genesis FILE (or --dir with a devnet)"
        ),
    };
    let genesis =
        Genesis::load(&path).with_context(|| format!("reading genesis {}", path.display()))?;
    Ok((path, genesis))
}

/// The text output's `proof` row.
pub fn verified_against(genesis: &Path) -> String {
    format!("verified offline against genesis {}", genesis.display())
}

/// A node's answer saved with `--save-proof`, named `what` in errors.
pub fn read_saved<M: Message + Default>(path: &Path, what: &str) -> anyhow::Result<M> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading the saved proof {}", path.display()))?;
    M::decode(bytes.as_slice())
        .with_context(|| format!("{} is not a saved {what} answer", path.display()))
}

/// Saves a node's answer for `--proof-file`.
pub fn save(path: &Path, answer: &impl Message) -> anyhow::Result<()> {
    std::fs::write(path, answer.encode_to_vec())
        .with_context(|| format!("writing the proof to {}", path.display()))
}

/// A transaction proven in a certified block, for both output formats.
#[derive(Debug, Serialize)]
pub struct InclusionView {
    pub transaction_id: String,
    pub block_height: u64,
    pub block_hash: String,
    pub transactions_root: String,
    pub index: u64,
    pub block_transactions: u64,
    pub audit_path_hashes: usize,
    pub commit_signatures: usize,
    pub quorum: u32,
}

impl InclusionView {
    pub fn new(proven: &ProvenInclusion) -> Self {
        Self {
            transaction_id: proven.transaction_id.to_hex(),
            block_height: proven.height,
            block_hash: proven.block_hash.to_hex(),
            transactions_root: proven.transactions_root.to_hex(),
            index: proven.index,
            block_transactions: proven.tree_size,
            audit_path_hashes: proven.path_len,
            commit_signatures: proven.signers,
            quorum: proven.quorum,
        }
    }

    /// Rows for the text output, each named after `what`.
    pub fn add_to(&self, fields: &mut Fields, what: &str) {
        fields
            .add(
                what,
                format!(
                    "{} at index {} of {} in block {}",
                    self.transaction_id, self.index, self.block_transactions, self.block_height
                ),
            )
            .add(
                &format!("{what} block"),
                format!(
                    "hash {}, {} commit signatures (quorum {})",
                    self.block_hash, self.commit_signatures, self.quorum
                ),
            )
            .add(
                &format!("{what} path"),
                format!(
                    "{} hashes (RFC 6962) to transactions root {}",
                    self.audit_path_hashes, self.transactions_root
                ),
            );
    }
}
