//! The devnet's demo proposal: the first department proposes that police
//! may also attest vehicle registrations (`ChangeDepartment`), so that a
//! fresh devnet shows a pending proposal that `govchain governance sign`
//! by the other departments' keys puts in force.

use std::path::Path;
use std::time::Duration;

use govchain_proto::node::v1::GetValidatorSetRequest;
use govchain_proto::node::v1::node_service_client::NodeServiceClient;
use govchain_proto::types::v1::{
    AttestPermissions, ChangeDepartment, ProposeValidatorChange, ValidatorChange,
    transaction::Body, validator_change::Change,
};

use crate::client::{ConnectArgs, rpc_error};
use crate::cmd::identity::{CommitArgs, Session, client_timeout, now_ms};
use crate::cmd::keys::load_signing_key;

/// The department whose attest permissions the demo proposal changes.
pub const DEMO_SUBJECT: &str = "police";
/// What the proposal lets it attest besides what it may attest now.
pub const DEMO_ATTRIBUTE: &str = "vehicle";
/// How long the demo proposal collects approvals.
const DEMO_DEADLINE: Duration = Duration::from_secs(7 * 86_400);

/// What [`demo_proposal`] made.
pub struct DemoProposal {
    pub id: String,
    pub proposer: String,
    /// The other validators' departments, as many as the quorum still
    /// needs, in set order.
    pub signers: Vec<String>,
    pub text: String,
}

/// On a fresh devnet whose validators include [`DEMO_SUBJECT`]: the
/// proposal, made by `proposer` with its signing key in `dir`. `None` when
/// the subject is absent or a demo proposal exists already.
pub async fn demo_proposal(dir: &Path, proposer: &str) -> anyhow::Result<Option<DemoProposal>> {
    let connect = ConnectArgs {
        dir: Some(dir.to_owned()),
        department: Some(proposer.to_owned()),
        ..ConnectArgs::default()
    };
    let mut session = Session::open(&connect, client_timeout()).await?;
    let set = NodeServiceClient::new(session.channel.clone())
        .get_validator_set(GetValidatorSetRequest::default())
        .await
        .map_err(rpc_error)?
        .into_inner();
    let Some(subject) = set.departments.iter().find(|d| d.name == DEMO_SUBJECT) else {
        return Ok(None);
    };
    if !set.proposals.is_empty() || subject.attests.iter().any(|a| a == DEMO_ATTRIBUTE) {
        return Ok(None);
    }
    let mut names = subject.attests.clone();
    names.push(DEMO_ATTRIBUTE.to_owned());
    let change = ChangeDepartment {
        department: DEMO_SUBJECT.to_owned(),
        signing_key: Vec::new(),
        attests: Some(AttestPermissions { names }),
    };
    let text = crate::view::department_change_text(&change);
    let body = ProposeValidatorChange {
        change: Some(ValidatorChange {
            change: Some(Change::Department(change)),
        }),
        deadline_ms: now_ms() + DEMO_DEADLINE.as_millis() as u64,
        reason: format!("{DEMO_SUBJECT} registers vehicles"),
    };
    let key = load_signing_key(&dir.join("certs").join(proposer).join("signing.key"))?;
    let commit = CommitArgs {
        wait: true,
        no_wait: false,
        timeout: Duration::from_secs(30),
    };
    let submitted = session
        .submit(
            &key,
            Body::ProposeValidatorChange(body),
            &commit,
            "the demo proposal",
        )
        .await?;
    let needed = (set.quorum as usize).saturating_sub(1);
    let validators = set.validators.unwrap_or_default();
    let signers = validators
        .members
        .iter()
        .map(|m| m.department.clone())
        .filter(|d| d != proposer)
        .take(needed)
        .collect();
    Ok(Some(DemoProposal {
        id: submitted.id.to_hex(),
        proposer: proposer.to_owned(),
        signers,
        text,
    }))
}
