//! `govchain node`: run one validator from its config file.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  govchain node --config nodes/health/node.toml")]
pub struct NodeArgs {
    /// The node's config file (TOML).
    #[arg(long, env = "GOVCHAIN_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
}

/// Runs the node until Ctrl-C or SIGTERM.
pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let settings = govchain_node::Settings::load(&args.config)
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
