//! `govchain ledger verify`: check a node's ledger files offline;
//! `govchain ledger migrate`: bring an older ledger to this build's format;
//! `govchain ledger prune`: drop old blocks' transactions offline.

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
    /// Move the blocks of a ledger written by an older govchain (format 4,
    /// blocks inside ledger.redb) into the block log (format 5). Stop the
    /// node first. Safe to interrupt and run again; a ledger already at
    /// format 5 is left as it is.
    #[command(
        after_help = "Example:\n  govchain ledger migrate --data-dir /var/lib/govchain/health\n\nInstead of migrating, a node can also start from an empty data directory\nand sync the chain from its peers."
    )]
    Migrate(LedgerMigrateArgs),
    /// Drop the transactions of blocks more than --keep-blocks below the
    /// head, keeping every block's header and commit certificate, as a node
    /// with `prune_horizon_blocks` does while it runs. Stop the node first.
    /// Space is freed a whole block log segment at a time, and the last
    /// segment is kept whole.
    #[command(
        after_help = "Example:\n  govchain ledger prune --data-dir /var/lib/govchain/health --genesis genesis.json --keep-blocks 100000\n\nPruned blocks answer NOT_FOUND on this node; `ledger verify` still checks their\ncertificates. Set prune_horizon_blocks in node.toml to keep pruning as the chain grows."
    )]
    Prune(LedgerPruneArgs),
}

#[derive(Debug, Args)]
pub struct LedgerPruneArgs {
    /// The node's data directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The chain's genesis file (names the signers of old blocks, whose
    /// listing keys are counted for `ledger verify`).
    #[arg(long, value_name = "FILE")]
    pub genesis: PathBuf,
    /// How many blocks below the head stay whole (at least 128).
    #[arg(long, value_name = "N")]
    pub keep_blocks: u64,
}

#[derive(Debug, Args)]
pub struct LedgerMigrateArgs {
    /// The node's data directory (holding ledger.redb).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
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

pub fn run(args: LedgerArgs, json: bool) -> anyhow::Result<()> {
    match args.command {
        LedgerCommand::Verify(args) => verify(args, json),
        LedgerCommand::Migrate(args) => migrate(args, json),
        LedgerCommand::Prune(args) => prune(args, json),
    }
}

fn prune(args: LedgerPruneArgs, json: bool) -> anyhow::Result<()> {
    let genesis = govchain_pki::Genesis::load(&args.genesis)
        .with_context(|| format!("cannot load genesis {}", args.genesis.display()))?;
    let bar = crate::output::progress_bar(
        json,
        0,
        "{msg} [{bar:40}] {pos}/{len} blocks ({per_sec}, {eta})",
        "pruning",
    );
    let report = govchain_node::prune_ledger(
        &args.data_dir,
        &genesis,
        args.keep_blocks,
        &mut |done, at_most| {
            bar.set_length(at_most);
            bar.set_position(done);
        },
    )
    .with_context(|| format!("cannot prune the ledger in {}", args.data_dir.display()))?;
    bar.finish_and_clear();
    let freed = report.bytes_before.saturating_sub(report.bytes_after);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "segments": report.segments,
                "blocks": report.blocks,
                "freed_bytes": freed,
                "bodies_from": report.bodies_from,
            })
        );
    } else if report.segments == 0 {
        println!(
            "nothing to prune: no sealed block log segment lies wholly more than {} blocks below the head (whole blocks from height {})",
            args.keep_blocks, report.bodies_from
        );
    } else {
        println!(
            "pruned {} blocks in {} segments, freeing {freed} bytes; whole blocks from height {} on",
            report.blocks, report.segments, report.bodies_from
        );
    }
    Ok(())
}

fn migrate(args: LedgerMigrateArgs, json: bool) -> anyhow::Result<()> {
    let bar = crate::output::progress_bar(
        json,
        0,
        "{msg} [{bar:40}] {pos}/{len} blocks ({per_sec}, {eta})",
        "moving blocks",
    );
    let migrated = govchain_ledger::migrate(&args.data_dir, &mut |done, all| {
        bar.set_length(all);
        bar.set_position(done);
    })
    .with_context(|| format!("cannot migrate the ledger in {}", args.data_dir.display()))?;
    bar.finish_and_clear();
    let log = args.data_dir.join(govchain_ledger::LOG_DIR_NAME);
    let (moved, height) = match migrated {
        govchain_ledger::Migrated::Moved { blocks } => (true, blocks),
        govchain_ledger::Migrated::AlreadyCurrent { height } => (false, height),
    };
    if json {
        println!(
            "{}",
            serde_json::json!({"migrated": moved, "height": height, "block_log": log})
        );
    } else if moved {
        println!(
            "moved {height} blocks into {}; the ledger is at the current format",
            log.display()
        );
    } else {
        println!("the ledger is at the current format already (height {height}); nothing to do");
    }
    Ok(())
}

/// Audits the ledger; a ledger that does not verify exits 1.
fn verify(args: LedgerVerifyArgs, json: bool) -> anyhow::Result<()> {
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
        if report.first_height > 1 {
            println!(
                "first block:  {} (installed from a state snapshot; no block below it is held)",
                report.first_height
            );
        }
        if report.bodies_from > report.first_height {
            println!(
                "pruned:       blocks {}..{} hold only their header and certificate (prune_horizon_blocks); their transaction roots are not re-checked",
                report.first_height,
                report.bodies_from - 1
            );
        }
        println!("transactions: {}", report.transactions);
        if report.logged_above_head > 0 {
            println!(
                "block log:    {} more blocks, above the last checkpoint; the node re-applies them when it starts",
                report.logged_above_head
            );
        }
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
