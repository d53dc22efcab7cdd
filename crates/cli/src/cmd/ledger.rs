//! `govchain ledger verify`: check a node's ledger files offline.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct LedgerArgs {
    #[command(subcommand)]
    pub command: LedgerCommand,
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Re-check every block's hash chain and commit certificate against
    /// genesis. Exits 1 if the ledger does not verify.
    #[command(
        after_help = "Example:\n  govchain ledger verify --data-dir devnet/nodes/health --genesis devnet/genesis.json"
    )]
    Verify(LedgerVerifyArgs),
}

#[derive(Debug, Args)]
pub struct LedgerVerifyArgs {
    /// The node's data directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The chain's genesis file.
    #[arg(long, value_name = "FILE")]
    pub genesis: PathBuf,
}

/// Audits the ledger; a ledger that does not verify exits 1.
pub fn run(args: LedgerArgs, json: bool) -> anyhow::Result<()> {
    let LedgerCommand::Verify(args) = args.command;
    let genesis = govchain_pki::Genesis::load(&args.genesis)
        .with_context(|| format!("cannot load genesis {}", args.genesis.display()))?;
    let bar = crate::output::progress_bar(
        json,
        0,
        "{msg} [{bar:40}] {pos}/{len} blocks ({per_sec}, {eta})",
        "verifying",
    );
    let report = govchain_node::audit_ledger(&args.data_dir, &genesis, |height, head| {
        bar.set_length(head);
        bar.set_position(height);
    })?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("chain:        {}", report.chain_id);
        println!("height:       {}", report.height);
        println!("head:         {}", report.head_hash);
        println!("blocks:       {} verified", report.blocks);
        println!("transactions: {}", report.transactions);
        match &report.error {
            None => println!(
                "result:       OK (hash chain, transaction roots and commit certificates verify)"
            ),
            Some(error) => println!("result:       FAILED: {error}"),
        }
    }
    if report.ok {
        Ok(())
    } else {
        Err(crate::exit::Negative::quiet().into())
    }
}
