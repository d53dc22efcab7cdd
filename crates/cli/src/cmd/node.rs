//! `govchain node`: run one validator from its config file.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

#[derive(Debug, Args)]
#[command(
    long_about = "Run one node (a validator, or an observer with `observer = true`) from its \
        config file. Every node.toml key can be overridden by a GOVCHAIN_<KEY> environment \
        variable, nested keys joined by `__` (GOVCHAIN_MEMPOOL__BYTES_MAX); the node logs each \
        key the environment set. `govchain config check FILE` validates the same way without \
        starting. A part the node cannot work without (consensus, admission, state transfer, \
        a peer link) that fails ends the process with exit code 2 and a `fatal:` log line \
        naming the cause. After a crash the node first re-applies the blocks its block log \
        holds above the ledger's last checkpoint. With `state_sync = true` and no ledger in \
        data_dir yet, it joins from a peer's state snapshot instead of replaying every block. \
        With `prune_horizon_blocks = N`, it keeps the transactions of the last N blocks only, \
        and every block's header and commit certificate.",
    after_help = "Examples:\n  govchain node --config nodes/health/node.toml\n  \
        GOVCHAIN_LISTEN=0.0.0.0:7050 GOVCHAIN_HEALTH_LISTEN=0.0.0.0:7052 govchain node --config node.toml\n  \
        GOVCHAIN_STATE_SYNC=true govchain node --config backup-a/node.toml   # a new observer joins from a snapshot\n  \
        GOVCHAIN_PRUNE_HORIZON_BLOCKS=100000 govchain node --config node.toml   # keep whole only the last 100,000 blocks"
)]
pub struct NodeArgs {
    /// The node's config file (TOML).
    #[arg(long, env = "GOVCHAIN_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
}

/// Runs the node until Ctrl-C or SIGTERM.
pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let (file, overrides) = govchain_node::NodeFile::effective(&args.config)
        .with_context(|| format!("cannot start from {}", args.config.display()))?;
    for applied in &overrides {
        tracing::info!(key = %applied.key, variable = %applied.variable, "node.toml key set by the environment");
    }
    let settings = govchain_node::Settings::from_file(file, &args.config)
        .with_context(|| format!("cannot start from {}", args.config.display()))?;
    govchain_node::run(settings, shutdown_signal()).await
}

/// Completes on SIGTERM (how Kubernetes and `govchain devnet` stop a node)
/// or Ctrl-C.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; only Ctrl-C stops the node");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: shutting down"),
    }
}
