//! `govchain config check`: validate a node's configuration before running
//! it, and show what the node would run with.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use govchain_node::config::{NodeFile, Override, Settings};
use serde::Serialize;

use crate::output;

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate node.toml with its GOVCHAIN_* overrides, and print the
    /// effective configuration.
    #[command(
        long_about = "Validate a node's configuration exactly as `govchain node` would load it: \
            node.toml, with every GOVCHAIN_<KEY> environment variable applied over it \
            (nested keys joined by `__`, e.g. GOVCHAIN_MEMPOOL__BYTES_MAX), and every file \
            it names (genesis, CA, certificate, keys) read and checked against genesis. \
            Prints the effective configuration and which keys the environment set. \
            node.toml holds paths to key files, never key material, and nothing read from \
            a key file is printed. Exits 2 with the key, the value and the rule when \
            something is wrong.",
        after_help = "Examples:\n  \
            govchain config check devnet/nodes/health/node.toml\n  \
            GOVCHAIN_LISTEN=0.0.0.0:7050 govchain config check node.toml --json"
    )]
    Check {
        /// The node's config file (TOML).
        #[arg(value_name = "FILE")]
        config: PathBuf,
    },
}

/// The `--json` answer.
#[derive(Debug, Serialize)]
struct CheckView {
    config: PathBuf,
    valid: bool,
    /// The effective configuration (node.toml's keys).
    effective: NodeFile,
    /// Keys the environment set, with their variables.
    overrides: Vec<OverrideView>,
    chain_id: String,
    genesis_hash: String,
    role: String,
    consensus_public_key: String,
}

#[derive(Debug, Serialize)]
struct OverrideView {
    key: String,
    variable: String,
}

pub fn run(args: ConfigArgs, json: bool) -> anyhow::Result<()> {
    match args.command {
        ConfigCommand::Check { config } => check(config, json),
    }
}

fn check(config: PathBuf, json: bool) -> anyhow::Result<()> {
    let (effective, overrides) = NodeFile::effective(&config)?;
    let settings = Settings::from_file(effective.clone(), &config)
        .with_context(|| format!("node config {} is not valid", config.display()))?;
    let role = if settings.observer {
        "observer (follows the chain, does not vote)".to_owned()
    } else {
        format!(
            "validator {} of {}",
            settings.index,
            settings.genesis.validators.len()
        )
    };
    let view = CheckView {
        valid: true,
        effective,
        overrides: overrides
            .into_iter()
            .map(|Override { key, variable }| OverrideView { key, variable })
            .collect(),
        chain_id: settings.genesis.chain_id.clone(),
        genesis_hash: settings.genesis.hash().to_hex(),
        role,
        consensus_public_key: settings.consensus_key.public_key().to_hex(),
        config,
    };
    if json {
        return output::print_json(&view);
    }
    output::print(&render(&view)?)
}

fn render(view: &CheckView) -> anyhow::Result<String> {
    let mut text = format!(
        "{} is valid: {} on chain {} (genesis {}), consensus key {}\n",
        view.config.display(),
        view.role,
        view.chain_id,
        &view.genesis_hash[..16.min(view.genesis_hash.len())],
        view.consensus_public_key
    );
    if view.overrides.is_empty() {
        text.push_str("no GOVCHAIN_* variable overrides a key\n");
    } else {
        text.push_str("set by the environment:\n");
        for o in &view.overrides {
            text.push_str(&format!("  {:<24} from {}\n", o.key, o.variable));
        }
    }
    text.push_str(
        "\n# effective configuration (relative paths are relative to the file's folder)\n",
    );
    text.push_str(&view.effective.to_toml()?);
    Ok(text)
}
