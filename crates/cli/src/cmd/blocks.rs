//! `govchain blocks follow`: committed blocks as they arrive.

use clap::{Args, Subcommand};
use govchain_proto::node::v1::SubscribeBlocksRequest;
use govchain_proto::types::v1::CommittedBlock;
use serde::Serialize;

use crate::client::{self, ConnectArgs, rpc_error};
use crate::output::{self, format_time_ms};

#[derive(Debug, Args)]
pub struct BlocksArgs {
    #[command(subcommand)]
    command: BlocksCommand,
}

#[derive(Debug, Subcommand)]
enum BlocksCommand {
    /// Print one line per committed block, as blocks commit.
    #[command(
        long_about = "Print one line per committed block (height, short hash, transaction \
            count, time), starting with the next block to commit or, with --from, with an \
            earlier height. Runs until Ctrl-C or until the node ends the stream. With --json, \
            prints one JSON object per line.",
        after_help = "Examples:\n  \
            govchain blocks follow --dir devnet\n  \
            govchain blocks follow --from 1 --json | jq .transaction_count"
    )]
    Follow(FollowArgs),
}

#[derive(Debug, Args)]
struct FollowArgs {
    /// First height to print; default: the next block to commit.
    #[arg(long, value_name = "HEIGHT", default_value_t = 0)]
    from: u64,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// One `--json` line.
#[derive(Debug, Serialize)]
struct FollowLine {
    height: u64,
    hash: String,
    transaction_count: u32,
    timestamp_ms: u64,
    time: String,
    view: u64,
    proposer_index: u32,
}

impl FollowLine {
    fn new(block: &CommittedBlock) -> Self {
        let header = block.header.clone().unwrap_or_default();
        Self {
            height: header.height,
            hash: hex::encode(&block.block_hash),
            transaction_count: header.transaction_count,
            timestamp_ms: header.timestamp_ms,
            time: format_time_ms(header.timestamp_ms),
            view: header.view,
            proposer_index: header.proposer_index,
        }
    }

    fn text(&self) -> String {
        let short = self.hash.get(..8).unwrap_or(&self.hash);
        format!(
            "height {:<8} hash {short}  {:>5} tx  {}",
            self.height, self.transaction_count, self.time
        )
    }
}

pub async fn run(args: BlocksArgs, json: bool) -> anyhow::Result<()> {
    let BlocksCommand::Follow(args) = args.command;
    let target = args.connect.target()?;
    let mut client = client::connect(&target).await?;
    let mut stream = client
        .subscribe_blocks(SubscribeBlocksRequest {
            from_height: args.from,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    loop {
        let message = tokio::select! {
            message = stream.message() => message.map_err(rpc_error)?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(message) = message else {
            eprintln!("the node ended the stream");
            return Ok(());
        };
        let Some(block) = message.block else {
            tracing::warn!("the node sent an empty message");
            continue;
        };
        let line = FollowLine::new(&block);
        if json {
            output::print_json_line(&line)?;
        } else {
            output::print(&line.text())?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::block::tests::committed_block;

    #[test]
    fn one_line_per_block() {
        let line = FollowLine::new(&committed_block());
        assert_eq!(
            line.text(),
            "height 3        hash aaaaaaaa      1 tx  2024-02-29T13:05:09.042Z"
        );
        let json = serde_json::to_string(&line).expect("json");
        assert!(!json.contains('\n'));
        assert!(json.contains(r#""transaction_count":1"#), "{json}");
    }
}
