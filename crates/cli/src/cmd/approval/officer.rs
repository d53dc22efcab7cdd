//! `govchain officer register|revoke`: a department's officers and roles.

use clap::{Args, Subcommand};
use govchain_crypto::PublicKey;
use govchain_proto::types::v1::{RegisterOfficer, RevokeOfficer, transaction::Body};
use serde::Serialize;

use super::SignedArgs;
use crate::cmd::identity::{Submitted, parse_citizen, print_view};
use crate::output::Fields;
use crate::view::or_dash;

#[derive(Debug, Args)]
pub struct OfficerArgs {
    #[command(subcommand)]
    command: OfficerCommand,
}

#[derive(Debug, Subcommand)]
enum OfficerCommand {
    /// Register an officer's key with a role, signed by the department.
    #[command(
        long_about = "Register one of the department's officers: their Ed25519 public key \
            (make one with `govchain keys new`) and their role. The transaction is signed \
            with the department's signing key from genesis; the officer's signature then \
            counts on case steps of this department that need this role, until revoked.",
        after_help = "Example:\n  \
            govchain keys new --out alice-inspector.key\n  \
            govchain officer register --dir devnet --department health \\\n    \
            --signing-key devnet/certs/health/signing.key \\\n    \
            --officer $(govchain keys show alice-inspector.key --json | jq -r .public_key) --role inspector"
    )]
    Register(RegisterArgs),
    /// Revoke an officer: their signature no longer counts from the next block.
    #[command(after_help = "Example:\n  \
            govchain officer revoke --dir devnet --department health \\\n    \
            --signing-key devnet/certs/health/signing.key --officer 3b6a...9f --reason \"left the department\"")]
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
struct RegisterArgs {
    /// The officer's public key: hex or did:key.
    #[arg(long, value_name = "KEY", value_parser = parse_citizen)]
    officer: PublicKey,
    /// The officer's role, e.g. inspector, licensing.
    #[arg(long, value_name = "ROLE")]
    role: String,
    #[command(flatten)]
    signed: SignedArgs,
}

#[derive(Debug, Args)]
struct RevokeArgs {
    /// The officer's public key: hex or did:key.
    #[arg(long, value_name = "KEY", value_parser = parse_citizen)]
    officer: PublicKey,
    /// Why, e.g. "left the department".
    #[arg(long, value_name = "TEXT", default_value = "")]
    reason: String,
    #[command(flatten)]
    signed: SignedArgs,
}

#[derive(Debug, Serialize)]
struct OfficerView {
    officer: String,
    role: String,
    reason: String,
    revoked: bool,
    transaction: Submitted,
}

pub async fn run(args: OfficerArgs, json: bool) -> anyhow::Result<()> {
    let (view, what) = match args.command {
        OfficerCommand::Register(args) => {
            let body = Body::RegisterOfficer(RegisterOfficer {
                officer: args.officer.as_bytes().to_vec(),
                role: args.role.clone(),
            });
            let (_, transaction) = args.signed.submit(body, "the registration").await?;
            let view = OfficerView {
                officer: args.officer.to_hex(),
                role: args.role,
                reason: String::new(),
                revoked: false,
                transaction,
            };
            (view, "registered")
        }
        OfficerCommand::Revoke(args) => {
            let body = Body::RevokeOfficer(RevokeOfficer {
                officer: args.officer.as_bytes().to_vec(),
                reason: args.reason.clone(),
            });
            let (_, transaction) = args.signed.submit(body, "the revocation").await?;
            let view = OfficerView {
                officer: args.officer.to_hex(),
                role: String::new(),
                reason: args.reason,
                revoked: true,
                transaction,
            };
            (view, "revoked")
        }
    };
    let mut fields = Fields::new();
    fields.add("officer", &view.officer).add("status", what);
    if !view.role.is_empty() {
        fields.add("role", &view.role);
    }
    if view.revoked {
        fields.add("reason", or_dash(&view.reason));
    }
    view.transaction.add_to(&mut fields);
    print_view(&view, &fields, json)
}
