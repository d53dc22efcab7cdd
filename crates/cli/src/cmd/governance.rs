//! `govchain governance propose|sign|list`: the validator set, the
//! revoked certificates and the departments (signing keys, attest
//! permissions, new members) change by on-chain vote of the validators in
//! force (`exec::governance` has the rules). Writes are transactions signed with a department's signing key;
//! reads go to `NodeService.GetValidatorSet`.

use std::path::PathBuf;
use std::time::Duration;

pub(crate) mod demo;

use clap::{Args, Subcommand};
use govchain_crypto::{Digest, PublicKey};
use govchain_exec::governance::{validate_approve, validate_propose};
use govchain_proto::node::v1::{GetValidatorSetRequest, GetValidatorSetResponse};
use govchain_proto::types::v1::{
    AddValidator, ApproveValidatorChange, AttestPermissions, ChangeDepartment, DepartmentRecord,
    ProposalStatus, ProposeValidatorChange, RemoveValidator, RevokeCertificate, ValidatorChange,
    ValidatorProposal, transaction::Body, validator_change::Change,
};
use serde::Serialize;

use crate::client::{ConnectArgs, rpc_error};
use crate::cmd::approval::SignedArgs;
use crate::cmd::identity::{Session, Submitted, client_timeout, now_ms, print_view};
use crate::output::{Fields, Table, format_time_ms};
use crate::view::{change_text, or_dash};

#[derive(Debug, Args)]
pub struct GovernanceArgs {
    #[command(subcommand)]
    command: GovernanceCommand,
}

#[derive(Debug, Subcommand)]
enum GovernanceCommand {
    /// Propose a change to the validator set or a department (your approval
    /// counts).
    #[command(subcommand)]
    Propose(ProposeCommand),
    /// Sign (approve) a pending proposal.
    #[command(
        visible_alias = "approve",
        long_about = "Sign a pending validator proposal: your department's approval, made \
            with its signing key (`approve` is another name for this command). Your \
            department must run a validator in the set in force. Once \
            2f+1 of the set have approved it before its deadline, the change takes effect \
            from the block after the one that reached the quorum.",
        after_help = "Example:\n  \
            govchain governance sign 3f1c…e2 --dir devnet --department tax \\\n    \
            --signing-key devnet/certs/tax/signing.key"
    )]
    Sign(ApproveArgs),
    /// The validator set in force and the proposals.
    #[command(after_help = "Examples:\n  \
            govchain governance list --dir devnet\n  \
            govchain governance list --json --dir devnet")]
    List(ListArgs),
}

#[derive(Debug, Subcommand)]
enum ProposeCommand {
    /// Add a genesis department's node (an observer, say) as a validator.
    #[command(
        long_about = "Propose adding the node of a genesis department that runs no validator \
            in the set in force, with its consensus key, signed with your department's \
            signing key (your department must run a validator). The node should already \
            run (as an observer) and follow the chain: once the change takes effect it \
            votes, and the other validators connect to it at --endpoint (unless their \
            `peers` configuration names it).",
        after_help = "Example (the devnet's observer joins):\n  \
            govchain governance propose add --candidate backup0 \\\n    \
            --consensus-key devnet/certs/backup0/consensus.key --endpoint 127.0.0.1:7054 \\\n    \
            --reason \"backup0 becomes a validator\" \\\n    \
            --dir devnet --department health --signing-key devnet/certs/health/signing.key"
    )]
    Add(AddArgs),
    /// Remove a validator by its index.
    #[command(
        long_about = "Propose removing the validator with this index (see `governance list`). \
            From the block after the change takes effect the removed node no longer votes: \
            the other validators refuse its consensus streams, and it follows the chain as \
            an observer.",
        after_help = "Example:\n  \
            govchain governance propose remove --index 3 --reason \"decommissioned\" \\\n    \
            --dir devnet --department health --signing-key devnet/certs/health/signing.key"
    )]
    Remove(RemoveArgs),
    /// Revoke a certificate issued by the consortium CA.
    #[command(
        long_about = "Propose revoking a certificate: from the block after the change takes \
            effect, every node refuses calls made with it (UNAUTHENTICATED, naming the \
            revocation) and closes its connections, open ones included, within 2 s. Name \
            the certificate by its file (its serial and its key's fingerprint are revoked), \
            or by --serial (as `openssl x509 -noout -serial` prints it) or \
            --key-fingerprint (SHA-256 of its SubjectPublicKeyInfo, hex: revokes every \
            certificate of that key).",
        after_help = "Examples:\n  \
            govchain governance propose revoke --certificate stolen-client.crt \\\n    \
            --reason \"laptop stolen\" --dir devnet --department health \\\n    \
            --signing-key devnet/certs/health/signing.key\n  \
            govchain governance propose revoke --serial 3A:0F:…:91 --reason \"key compromise\" ..."
    )]
    Revoke(RevokeArgs),
    /// Change a department's signing key or attest permissions, or register
    /// a new department.
    #[command(
        long_about = "Propose changing a department: give it a new signing key (--new-signing-key, \
            when its key is lost or compromised, or on a schedule), change the attribute names \
            it may attest (--attests, or --attests-none), or register a department genesis does \
            not list (a bureau joining: --new-signing-key is required, and --public reads its \
            name and key from the public.json `certs sign` wrote for it). From the block after \
            the change takes effect the department signs with the new key; transactions signed \
            with the old one are refused. Its attestations, consents, grants and cases are \
            recorded under its name and stay. A registered department's certificates are \
            accepted by every node; its node joins the validators with `propose add`.",
        after_help = "Examples:\n  \
            govchain keys new --out tax-2027.key\n  \
            govchain governance propose department --name tax --new-signing-key tax-2027.key \\\n    \
            --reason \"yearly key rotation\" --dir devnet --department tax \\\n    \
            --signing-key devnet/certs/tax/signing.key\n  \
            govchain governance propose department --name police --attests residence,vehicle \\\n    \
            --reason \"police attests vehicles\" --dir devnet --department health \\\n    \
            --signing-key devnet/certs/health/signing.key\n  \
            govchain governance propose department --public ports/public.json --attests vessel \\\n    \
            --reason \"the port authority joins\" --dir devnet --department health \\\n    \
            --signing-key devnet/certs/health/signing.key"
    )]
    Department(DepartmentArgs),
}

#[derive(Debug, Args)]
struct ProposalArgs {
    /// Why, for the record (at most 256 bytes).
    #[arg(long)]
    reason: String,
    /// How long the proposal collects approvals: 30s, 10m, 24h, 7d (at most
    /// 30 days).
    #[arg(long, default_value = "24h", value_parser = parse_deadline)]
    deadline: Duration,
    #[command(flatten)]
    signed: SignedArgs,
}

#[derive(Debug, Args)]
struct AddArgs {
    /// The genesis department whose node becomes a validator.
    #[arg(long)]
    candidate: String,
    /// The node's consensus key: 64 hex characters, or its key file (PKCS#8
    /// PEM, as `certs init` writes `<department>/consensus.key`).
    #[arg(long, value_name = "HEX|FILE")]
    consensus_key: String,
    /// Where the validators reach the node's gRPC port (host:port).
    #[arg(long)]
    endpoint: Option<String>,
    #[command(flatten)]
    proposal: ProposalArgs,
}

#[derive(Debug, Args)]
struct RemoveArgs {
    /// The validator's index (`governance list`).
    #[arg(long)]
    index: u32,
    #[command(flatten)]
    proposal: ProposalArgs,
}

#[derive(Debug, Args)]
struct RevokeArgs {
    /// The certificate (PEM): revokes its serial and its key.
    #[arg(long, value_name = "FILE", required_unless_present_any = ["serial", "key_fingerprint"])]
    certificate: Option<PathBuf>,
    /// A serial number in hex (colons and case do not matter).
    #[arg(long, conflicts_with = "certificate")]
    serial: Option<String>,
    /// SHA-256 of the SubjectPublicKeyInfo, 64 hex characters.
    #[arg(long, conflicts_with = "certificate")]
    key_fingerprint: Option<String>,
    #[command(flatten)]
    proposal: ProposalArgs,
}

#[derive(Debug, Args)]
struct DepartmentArgs {
    /// The department to change, or to register.
    #[arg(long, required_unless_present = "public", conflicts_with = "public")]
    name: Option<String>,
    /// Its new signing key: 64 hex characters, or a key file (PKCS#8 PEM, as
    /// `govchain keys new` writes; only its public part is used).
    #[arg(long, value_name = "HEX|FILE", conflicts_with = "public")]
    new_signing_key: Option<String>,
    /// A department's public.json, as `govchain certs sign` writes it: its
    /// name and signing key.
    #[arg(long, value_name = "FILE")]
    public: Option<PathBuf>,
    /// The attribute names it may attest from then on, comma-separated
    /// (replaces the current list).
    #[arg(long, value_delimiter = ',', conflicts_with = "attests_none")]
    attests: Option<Vec<String>>,
    /// It may attest nothing from then on.
    #[arg(long)]
    attests_none: bool,
    #[command(flatten)]
    proposal: ProposalArgs,
}

#[derive(Debug, Args)]
struct ApproveArgs {
    /// The proposal id (64 hex characters).
    proposal: String,
    #[command(flatten)]
    signed: SignedArgs,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Also list proposals that are applied, failed or expired.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

fn parse_deadline(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 10m, 24h or 7d"))?;
    let seconds = match unit {
        "s" | "" => Some(value),
        "m" => value.checked_mul(60),
        "h" => value.checked_mul(3_600),
        "d" => value.checked_mul(86_400),
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}: use s, m, h or d"
            ));
        }
    };
    match seconds {
        Some(seconds) if seconds > 0 && seconds <= 30 * 86_400 => Ok(Duration::from_secs(seconds)),
        _ => Err(format!("{text:?}: a deadline is 1 s to 30 days away")),
    }
}

/// What `propose revoke` names.
fn revocation(args: &RevokeArgs) -> anyhow::Result<RevokeCertificate> {
    if let Some(path) = &args.certificate {
        let pem = std::fs::read_to_string(path)
            .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", path.display()))?;
        let ids = govchain_pki::certificate_ids_pem(&pem)
            .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
        return Ok(RevokeCertificate {
            serial: ids.serial,
            key_fingerprint: ids.key_fingerprint.to_vec(),
        });
    }
    let key_fingerprint = match &args.key_fingerprint {
        Some(text) => hex::decode(text.trim())
            .map_err(|err| anyhow::anyhow!("--key-fingerprint {text:?}: not hex: {err}"))?,
        None => Vec::new(),
    };
    let revoke = RevokeCertificate {
        serial: args
            .serial
            .as_deref()
            .map(govchain_pki::normalize_serial)
            .unwrap_or_default(),
        key_fingerprint,
    };
    govchain_exec::governance::validate_revocation(&revoke)
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    Ok(revoke)
}

/// A public key given (to `flag`) as hex or as a private key file.
fn parse_public_key(flag: &str, text: &str) -> anyhow::Result<PublicKey> {
    if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
        return PublicKey::from_hex(text).map_err(|err| anyhow::anyhow!("{flag}: {err}"));
    }
    let path = PathBuf::from(text);
    let pem = std::fs::read_to_string(&path).map_err(|err| {
        anyhow::anyhow!(
            "{flag} {text:?} is neither 64 hex characters nor a readable key file: {err}"
        )
    })?;
    let key = govchain_crypto::SigningKey::from_pkcs8_pem(&pem)
        .map_err(|err| anyhow::anyhow!("{flag} {}: {err}", path.display()))?;
    Ok(key.public_key())
}

/// What `propose department` changes.
fn department_change(args: &DepartmentArgs) -> anyhow::Result<ChangeDepartment> {
    let (department, signing_key) = match &args.public {
        Some(path) => {
            let public = govchain_pki::load_publics(std::slice::from_ref(path))?
                .pop()
                .ok_or_else(|| anyhow::anyhow!("{} lists no department", path.display()))?;
            let key = parse_public_key("--public", &public.signing_public_key)?;
            (public.department, Some(key))
        }
        None => (
            args.name.clone().unwrap_or_default(),
            args.new_signing_key
                .as_deref()
                .map(|text| parse_public_key("--new-signing-key", text))
                .transpose()?,
        ),
    };
    let attests = if args.attests_none {
        Some(AttestPermissions { names: Vec::new() })
    } else {
        args.attests.as_ref().map(|names| AttestPermissions {
            names: names.iter().map(|n| n.trim().to_owned()).collect(),
        })
    };
    Ok(ChangeDepartment {
        department,
        signing_key: signing_key
            .map(|k| k.as_bytes().to_vec())
            .unwrap_or_default(),
        attests,
    })
}

pub async fn run(args: GovernanceArgs, json: bool) -> anyhow::Result<()> {
    match args.command {
        GovernanceCommand::Propose(ProposeCommand::Add(args)) => {
            let key = parse_public_key("--consensus-key", &args.consensus_key)?;
            let change = Change::Add(AddValidator {
                department: args.candidate,
                consensus_key: key.as_bytes().to_vec(),
                endpoint: args.endpoint.unwrap_or_default(),
            });
            propose(change, args.proposal, json).await
        }
        GovernanceCommand::Propose(ProposeCommand::Remove(args)) => {
            let change = Change::Remove(RemoveValidator {
                validator_index: args.index,
            });
            propose(change, args.proposal, json).await
        }
        GovernanceCommand::Propose(ProposeCommand::Revoke(args)) => {
            let revoke = revocation(&args)?;
            propose(Change::RevokeCertificate(revoke), args.proposal, json).await
        }
        GovernanceCommand::Propose(ProposeCommand::Department(args)) => {
            let change = department_change(&args)?;
            propose(Change::Department(change), args.proposal, json).await
        }
        GovernanceCommand::Sign(args) => approve(args, json).await,
        GovernanceCommand::List(args) => list(args, json).await,
    }
}

#[derive(Serialize)]
struct ProposedView {
    proposal_id: String,
    change: String,
    deadline_ms: u64,
    transaction: Submitted,
}

async fn propose(change: Change, args: ProposalArgs, json: bool) -> anyhow::Result<()> {
    let deadline_ms =
        now_ms().saturating_add(u64::try_from(args.deadline.as_millis()).unwrap_or(u64::MAX));
    let body = ProposeValidatorChange {
        change: Some(ValidatorChange {
            change: Some(change),
        }),
        deadline_ms,
        reason: args.reason,
    };
    validate_propose(&body).map_err(|err| anyhow::anyhow!("{err}"))?;
    let text = change_text(body.change.as_ref());
    let (_, transaction) = args
        .signed
        .submit(Body::ProposeValidatorChange(body), "the proposal")
        .await?;
    let view = ProposedView {
        proposal_id: transaction.id.to_hex(),
        change: text,
        deadline_ms,
        transaction,
    };
    let mut fields = Fields::new();
    fields
        .add("proposal", &view.proposal_id)
        .add("change", &view.change)
        .add("deadline", format_time_ms(deadline_ms))
        .add(
            "next",
            format!(
                "the other validators' departments approve it: `govchain governance sign {}`",
                view.proposal_id
            ),
        );
    view.transaction.add_to(&mut fields);
    print_view(&view, &fields, json)
}

#[derive(Serialize)]
struct ApprovedView {
    proposal_id: String,
    transaction: Submitted,
}

async fn approve(args: ApproveArgs, json: bool) -> anyhow::Result<()> {
    let id = Digest::from_hex(args.proposal.trim()).map_err(|err| {
        anyhow::anyhow!(
            "proposal {:?}: not a 64-hex-character id: {err}",
            args.proposal
        )
    })?;
    let body = ApproveValidatorChange {
        proposal_id: id.to_vec(),
    };
    validate_approve(&body).map_err(|err| anyhow::anyhow!("{err}"))?;
    let (_, transaction) = args
        .signed
        .submit(Body::ApproveValidatorChange(body), "the approval")
        .await?;
    let view = ApprovedView {
        proposal_id: id.to_hex(),
        transaction,
    };
    let mut fields = Fields::new();
    fields.add("proposal", &view.proposal_id);
    view.transaction.add_to(&mut fields);
    print_view(&view, &fields, json)
}

#[derive(Serialize)]
struct MemberView {
    index: u32,
    department: String,
    consensus_key: String,
    tls_identity: String,
    endpoint: String,
}

#[derive(Serialize)]
struct ProposalView {
    id: String,
    change: String,
    reason: String,
    proposer: String,
    proposed_height: u64,
    /// pending, expired, applied or failed.
    status: String,
    deadline_ms: u64,
    approvals: Vec<String>,
    applied_height: u64,
    error: String,
}

#[derive(Serialize)]
struct ListView {
    /// The head the answer was read at; `validators` orders the next block.
    height: u64,
    since_height: u64,
    quorum: u32,
    validators: Vec<MemberView>,
    proposals: Vec<ProposalView>,
    revocations: Vec<RevocationView>,
    departments: Vec<DepartmentView>,
}

#[derive(Serialize)]
struct DepartmentView {
    name: String,
    signing_key: String,
    /// The height from which `signing_key` signs for it.
    key_since_height: u64,
    attests: Vec<String>,
    /// Its node's consensus key (signs blob receipts); empty without one.
    node_key: String,
    /// Keys it signed with before, oldest first, with the heights.
    former_keys: Vec<FormerKeyView>,
    member_since_height: u64,
}

#[derive(Serialize)]
struct FormerKeyView {
    signing_key: String,
    from_height: u64,
    until_height: u64,
}

fn department_view(record: &DepartmentRecord) -> DepartmentView {
    DepartmentView {
        name: record.name.clone(),
        signing_key: hex::encode(&record.signing_key),
        key_since_height: record.key_since_height,
        attests: record.attests.clone(),
        node_key: hex::encode(&record.node_key),
        former_keys: record
            .former_keys
            .iter()
            .map(|k| FormerKeyView {
                signing_key: hex::encode(&k.signing_key),
                from_height: k.from_height,
                until_height: k.until_height,
            })
            .collect(),
        member_since_height: record.member_since_height,
    }
}

#[derive(Serialize)]
struct RevocationView {
    serial: String,
    key_fingerprint: String,
    height: u64,
    proposal_id: String,
    reason: String,
}

fn proposal_view(proposal: &ValidatorProposal, now_ms: u64) -> ProposalView {
    let body = proposal.proposal.clone().unwrap_or_default();
    let status = match proposal.status() {
        ProposalStatus::Pending if body.deadline_ms < now_ms => "expired",
        ProposalStatus::Pending => "pending",
        ProposalStatus::Applied => "applied",
        ProposalStatus::Failed => "failed",
        ProposalStatus::Unspecified => "unknown",
    };
    ProposalView {
        id: hex::encode(&proposal.id),
        change: change_text(body.change.as_ref()),
        reason: body.reason,
        proposer: proposal.proposer.clone(),
        proposed_height: proposal.proposed_height,
        status: status.to_owned(),
        deadline_ms: body.deadline_ms,
        approvals: proposal.approvals.clone(),
        applied_height: proposal.applied_height,
        error: proposal.error.clone(),
    }
}

async fn list(args: ListArgs, json: bool) -> anyhow::Result<()> {
    let session = Session::open(&args.connect, client_timeout()).await?;
    let mut client =
        govchain_proto::node::v1::node_service_client::NodeServiceClient::new(session.channel);
    let mut after = 0;
    let mut first: Option<GetValidatorSetResponse> = None;
    let mut proposals = Vec::new();
    loop {
        let page = client
            .get_validator_set(GetValidatorSetRequest {
                proposals_after: after,
                proposals_limit: 0,
                prove_departments: false,
            })
            .await
            .map_err(rpc_error)?
            .into_inner();
        proposals.extend(page.proposals.iter().cloned());
        let next = page.next_proposals_after;
        first.get_or_insert(page);
        if next == 0 {
            break;
        }
        after = next;
    }
    let first = first.expect("one page at least");
    let set = first.validators.clone().unwrap_or_default();
    let now = now_ms();
    let view = ListView {
        height: first.height,
        since_height: set.since_height,
        quorum: first.quorum,
        validators: set
            .members
            .iter()
            .map(|m| MemberView {
                index: m.index,
                department: m.department.clone(),
                consensus_key: hex::encode(&m.consensus_key),
                tls_identity: m.tls_identity.clone(),
                endpoint: m.endpoint.clone(),
            })
            .collect(),
        proposals: proposals
            .iter()
            .map(|p| proposal_view(p, now))
            .filter(|p| args.all || p.status == "pending")
            .collect(),
        revocations: first
            .revocations
            .iter()
            .map(|r| {
                let certificate = r.certificate.clone().unwrap_or_default();
                RevocationView {
                    serial: certificate.serial,
                    key_fingerprint: hex::encode(&certificate.key_fingerprint),
                    height: r.height,
                    proposal_id: hex::encode(&r.proposal_id),
                    reason: r.reason.clone(),
                }
            })
            .collect(),
        departments: first.departments.iter().map(department_view).collect(),
    };
    if json {
        return crate::output::print_json(&view);
    }
    let mut text = format!(
        "{} validators in force since block {} (a quorum is {}):\n",
        view.validators.len(),
        view.since_height,
        view.quorum
    );
    let mut table = Table::new(&["INDEX", "DEPARTMENT", "CONSENSUS KEY", "ENDPOINT"]);
    for member in &view.validators {
        table.add(vec![
            member.index.to_string(),
            member.department.clone(),
            member
                .consensus_key
                .get(..16)
                .unwrap_or_default()
                .to_owned()
                + "…",
            if member.endpoint.is_empty() {
                "-".to_owned()
            } else {
                member.endpoint.clone()
            },
        ]);
    }
    text.push_str(&table.render());
    text.push_str(if args.all {
        "\n\nProposals:\n"
    } else {
        "\n\nPending proposals (--all for every one):\n"
    });
    if view.proposals.is_empty() {
        text.push_str("none");
    } else {
        let mut table = Table::new(&[
            "PROPOSAL",
            "CHANGE",
            "STATUS",
            "APPROVALS",
            "DEADLINE",
            "PROPOSER",
        ]);
        for proposal in &view.proposals {
            table.add(vec![
                proposal.id.clone(),
                proposal.change.clone(),
                if proposal.error.is_empty() {
                    proposal.status.clone()
                } else {
                    format!("{}: {}", proposal.status, proposal.error)
                },
                format!("{}/{}", proposal.approvals.len(), view.quorum),
                format_time_ms(proposal.deadline_ms),
                proposal.proposer.clone(),
            ]);
        }
        text.push_str(&table.render());
    }
    if !view.revocations.is_empty() {
        text.push_str("\n\nRevoked certificates:\n");
        let mut table = Table::new(&["SERIAL", "KEY SHA-256", "BLOCK", "REASON"]);
        for revocation in &view.revocations {
            table.add(vec![
                or_dash(&revocation.serial),
                or_dash(&revocation.key_fingerprint),
                revocation.height.to_string(),
                revocation.reason.clone(),
            ]);
        }
        text.push_str(&table.render());
    }
    text.push_str("\n\nDepartments:\n");
    let mut table = Table::new(&[
        "DEPARTMENT",
        "SIGNING KEY",
        "SINCE",
        "ATTESTS",
        "FORMER KEYS",
    ]);
    for department in &view.departments {
        table.add(vec![
            department.name.clone(),
            department
                .signing_key
                .get(..16)
                .unwrap_or_default()
                .to_owned()
                + "…",
            format!("block {}", department.key_since_height),
            or_dash(&department.attests.join(",")),
            department.former_keys.len().to_string(),
        ]);
    }
    text.push_str(&table.render());
    crate::output::print(&text)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn deadlines_parse_within_thirty_days() {
        assert_eq!(parse_deadline("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_deadline("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_deadline("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_deadline("31d").is_err());
        assert!(parse_deadline("0s").is_err());
        assert!(parse_deadline("2w").is_err());
    }

    #[test]
    fn consensus_keys_are_hex_or_a_key_file() {
        let key = govchain_crypto::SigningKey::from_seed([5; 32]);
        let hex = key.public_key().to_hex();
        assert_eq!(
            parse_public_key("--consensus-key", &hex).expect("hex"),
            key.public_key()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("consensus.key");
        std::fs::write(&path, key.to_pkcs8_pem().expect("pem")).expect("write");
        let text = path.to_string_lossy().into_owned();
        assert_eq!(
            parse_public_key("--consensus-key", &text).expect("file"),
            key.public_key()
        );
        let err = parse_public_key("--consensus-key", "nope").expect_err("neither");
        assert!(
            err.to_string().contains("neither 64 hex characters"),
            "{err}"
        );
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        governance: GovernanceArgs,
    }

    fn department_args(args: &[&str]) -> DepartmentArgs {
        let base = [
            "govchain",
            "propose",
            "department",
            "--reason",
            "r",
            "--department",
            "health",
            "--signing-key",
            "k",
        ];
        let cli = Cli::try_parse_from(base.iter().chain(args)).expect("parses");
        match cli.governance.command {
            GovernanceCommand::Propose(ProposeCommand::Department(args)) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn department_changes_come_from_flags_or_a_public_file() {
        let key = govchain_crypto::SigningKey::from_seed([6; 32]).public_key();
        let change = department_change(&department_args(&[
            "--name",
            "tax",
            "--new-signing-key",
            &key.to_hex(),
            "--attests",
            "income, residence",
        ]))
        .expect("a change");
        assert_eq!(change.department, "tax");
        assert_eq!(change.signing_key, key.as_bytes());
        assert_eq!(
            change.attests.map(|a| a.names),
            Some(vec!["income".to_owned(), "residence".to_owned()])
        );

        let none = department_change(&department_args(&["--name", "tax", "--attests-none"]))
            .expect("a change");
        assert!(none.signing_key.is_empty());
        assert_eq!(none.attests.map(|a| a.names), Some(Vec::new()));

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("public.json");
        let public = govchain_pki::DepartmentPublic {
            department: "ports".into(),
            tls_identity: "spiffe://govchain/dept/ports/node".into(),
            consensus_public_key: govchain_crypto::SigningKey::from_seed([7; 32])
                .public_key()
                .to_hex(),
            signing_public_key: key.to_hex(),
        };
        std::fs::write(&path, serde_json::to_vec(&public).expect("json")).expect("write");
        let registered = department_change(&department_args(&[
            "--public",
            &path.to_string_lossy(),
            "--attests",
            "vessel",
        ]))
        .expect("a change");
        assert_eq!(registered.department, "ports");
        assert_eq!(registered.signing_key, key.as_bytes());
        assert!(
            Cli::try_parse_from([
                "govchain",
                "propose",
                "department",
                "--name",
                "tax",
                "--public",
                "p.json",
                "--reason",
                "r",
                "--department",
                "health",
                "--signing-key",
                "k",
            ])
            .is_err(),
            "--name and --public conflict"
        );
    }
}
