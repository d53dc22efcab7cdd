//! `govchain genesis assemble`: genesis from the departments' public parts.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;

use crate::output::{self, Fields};

#[derive(Debug, Args)]
pub struct GenesisArgs {
    #[command(subcommand)]
    command: GenesisCommand,
}

#[derive(Debug, Subcommand)]
enum GenesisCommand {
    /// Build genesis.json from the public.json files `govchain certs sign`
    /// wrote, one per department.
    #[command(
        long_about = "Build genesis.json from the departments' public parts (the public.json \
            that `govchain certs sign` writes for each): validators in the order given, then \
            observers (backup replicas), with the attribute names each department may \
            attest. Nothing here is secret; every department can assemble it and compare \
            the genesis hash it prints.",
        after_help = "Example:\n  \
            govchain genesis assemble --chain-id gov-prod \\\n    \
            --validator issued/health/public.json --validator issued/tax/public.json \\\n    \
            --validator issued/police/public.json --validator issued/civil/public.json \\\n    \
            --attests civil=name,date_of_birth --out genesis.json"
    )]
    Assemble(AssembleArgs),
}

#[derive(Debug, Args)]
struct AssembleArgs {
    /// Chain id, the same as the CA's (`govchain certs ca --chain-id`).
    #[arg(long, value_name = "ID")]
    chain_id: String,
    /// A validator's public.json; repeat, in validator order.
    #[arg(long = "validator", value_name = "FILE", required = true)]
    validators: Vec<PathBuf>,
    /// An observer's public.json; repeat.
    #[arg(long = "observer", value_name = "FILE")]
    observers: Vec<PathBuf>,
    /// Attribute names a department may attest, e.g. civil=name,photo;
    /// repeat for more departments.
    #[arg(long, value_name = "DEPT=ATTRS", value_parser = crate::cmd::certs::parse_attests)]
    attests: Vec<(String, Vec<String>)>,
    /// Where to write genesis.json.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

#[derive(Debug, Serialize)]
struct AssembleView {
    genesis: PathBuf,
    chain_id: String,
    genesis_hash: String,
    validators: Vec<String>,
    observers: Vec<String>,
}

pub fn run(args: GenesisArgs, json: bool) -> anyhow::Result<()> {
    let GenesisCommand::Assemble(args) = args.command;
    let validators = govchain_pki::load_publics(&args.validators)?;
    let observers = govchain_pki::load_publics(&args.observers)?;
    let genesis =
        govchain_pki::assemble_genesis(&args.chain_id, &validators, &observers, &args.attests)?;
    genesis.write(&args.out)?;
    let view = AssembleView {
        genesis: args.out,
        chain_id: genesis.chain_id.clone(),
        genesis_hash: genesis.hash().to_hex(),
        validators: validators.into_iter().map(|p| p.department).collect(),
        observers: observers.into_iter().map(|p| p.department).collect(),
    };
    if json {
        return output::print_json(&view);
    }
    let mut fields = Fields::new();
    fields
        .add("genesis", view.genesis.display())
        .add("chain id", &view.chain_id)
        .add("genesis hash", &view.genesis_hash)
        .add("validators", view.validators.join(", "))
        .add(
            "observers",
            if view.observers.is_empty() {
                "none".to_owned()
            } else {
                view.observers.join(", ")
            },
        );
    output::print(&fields.render())
}
