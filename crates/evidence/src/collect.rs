//! Collecting a case's bundle from a node: the case as `GetCase` answered
//! it, then each transaction that made it, proven (`GetTransaction` with
//! `prove`), in four sections (see [`CaseBundle`]).
//!
//! The node is not trusted: whoever writes the bundle checks it (the CLI
//! before writing, anyone afterwards with `govchain verify`).

use std::collections::{BTreeMap, BTreeSet};

use govchain_crypto::{Digest, PublicKey};
use govchain_pki::Genesis;
use govchain_proto::approval::v1::GetWorkflowRequest;
use govchain_proto::approval::v1::approval_service_client::ApprovalServiceClient;
use govchain_proto::node::v1::node_service_client::NodeServiceClient;
use govchain_proto::node::v1::{
    CommittedTransaction, GetTransactionRequest, GetValidatorSetRequest, ListTransactionsRequest,
    TransactionStatus,
};
use govchain_proto::types::v1::{
    CaseRecord, DepartmentRegistry, Transaction, TransactionOutcome, transaction::Body,
};
use prost::Message as _;
use tonic::transport::Channel;

use crate::bundle::{
    BUNDLE_TRANSACTIONS_MAX, BundledDepartments, BundledStateProof, BundledTransaction, CaseBundle,
    FORMAT,
};

/// Pages of a signer's transactions read to find an officer's registration
/// or an applicant's identity: 100,000 transactions at most.
pub const LISTING_PAGES_MAX: u32 = 100;
pub const LISTING_PAGE_SIZE: u32 = 1_000;
/// The largest answer decoded (a listing page of large transactions).
pub const ANSWER_BYTES_MAX: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectError {
    /// A call failed; `what` says which.
    #[error("{what}: {status}")]
    Rpc { what: String, status: tonic::Status },
    /// The node's answers do not make a bundle.
    #[error("{0}")]
    Answer(String),
}

fn rpc(what: impl Into<String>) -> impl FnOnce(tonic::Status) -> CollectError {
    let what = what.into();
    move |status| CollectError::Rpc { what, status }
}

fn digest(what: &str, bytes: &[u8]) -> Result<Digest, CollectError> {
    Digest::from_slice(bytes).map_err(|_| {
        CollectError::Answer(format!(
            "the node's {what} is {} bytes, not 32",
            bytes.len()
        ))
    })
}

/// The bundle of case `case_id`, whose record the node answered as
/// `case`, with `genesis` (the reader's trusted one) in it.
pub async fn collect(
    channel: Channel,
    case_id: &Digest,
    case: &CaseRecord,
    genesis: &Genesis,
) -> Result<CaseBundle, CollectError> {
    let mut node =
        NodeServiceClient::new(channel.clone()).max_decoding_message_size(ANSWER_BYTES_MAX);
    // First: a registry proven at a head at or after every transaction
    // collected below.
    let (departments, registry) = proven_departments(&mut node).await?;
    let signers = Signers::new(genesis, registry.as_ref())?;
    let mut bundle = CaseBundle {
        format: FORMAT.into(),
        case_id: case_id.to_vec(),
        genesis: genesis.clone(),
        case: case.encode_to_vec(),
        definitions: Vec::new(),
        officers: Vec::new(),
        applicant: Vec::new(),
        actions: Vec::new(),
        departments,
    };
    let ids = [
        definition_ids(channel, case).await?,
        officer_ids(&mut node, &signers, case).await?,
        applicant_ids(&mut node, &signers, case).await?,
        action_ids(case),
    ];
    let count: usize = ids.iter().map(Vec::len).sum();
    if count > BUNDLE_TRANSACTIONS_MAX {
        return Err(CollectError::Answer(format!(
            "case {case_id} needs {count} transactions, over the {BUNDLE_TRANSACTIONS_MAX} a bundle holds"
        )));
    }
    for (section, ids) in bundle.sections_mut().into_iter().zip(ids) {
        for id in ids {
            section.push(proven_transaction(&mut node, &id).await?);
        }
    }
    Ok(bundle)
}

/// The departments' registry with its proof (`None` when governance never
/// changed a department, so no bundle needs it), and the registry.
async fn proven_departments(
    node: &mut NodeServiceClient<Channel>,
) -> Result<(Option<BundledDepartments>, Option<DepartmentRegistry>), CollectError> {
    let answer = node
        .get_validator_set(GetValidatorSetRequest {
            proposals_after: 0,
            proposals_limit: 1,
            prove_departments: true,
        })
        .await
        .map_err(rpc("GetValidatorSet"))?
        .into_inner();
    if answer.departments_state.is_empty() {
        return Ok((None, None));
    }
    let registry = DepartmentRegistry::decode(answer.departments_state.as_slice())
        .map_err(|err| CollectError::Answer(format!("the node's departments: {err}")))?;
    let proof = answer
        .departments_proof
        .as_ref()
        .and_then(BundledStateProof::from_wire)
        .ok_or_else(|| {
            CollectError::Answer("the node's departments come without a certified proof".into())
        })?;
    Ok((
        Some(BundledDepartments {
            value: answer.departments_state,
            proof,
        }),
        Some(registry),
    ))
}

/// Each department's signing keys, current and former, and whether it may
/// or might attest: whose transactions the bundle looks through.
struct Signers(BTreeMap<String, (Vec<PublicKey>, bool)>);

impl Signers {
    fn new(genesis: &Genesis, registry: Option<&DepartmentRegistry>) -> Result<Self, CollectError> {
        let mut signers = BTreeMap::new();
        match registry {
            None => {
                for department in &genesis.departments {
                    let key = genesis_key(&department.signing_public_key, &department.name)?;
                    signers.insert(
                        department.name.clone(),
                        (vec![key], !department.attests.is_empty()),
                    );
                }
            }
            Some(registry) => {
                for record in &registry.departments {
                    let key = |bytes: &[u8]| {
                        PublicKey::from_slice(bytes).map_err(|err| {
                            CollectError::Answer(format!(
                                "the node's departments: a key of {}: {err}",
                                record.name
                            ))
                        })
                    };
                    let mut keys = vec![key(&record.signing_key)?];
                    for former in &record.former_keys {
                        keys.push(key(&former.signing_key)?);
                    }
                    let attests = !record.attests.is_empty()
                        || record.former_attests.iter().any(|a| !a.names.is_empty());
                    signers.insert(record.name.clone(), (keys, attests));
                }
            }
        }
        Ok(Self(signers))
    }

    fn keys(&self, department: &str) -> &[PublicKey] {
        self.0
            .get(department)
            .map_or(&[], |(keys, _)| keys.as_slice())
    }

    /// The keys of departments that may or might attest.
    fn attesters(&self) -> impl Iterator<Item = &PublicKey> {
        self.0
            .values()
            .filter(|(_, attests)| *attests)
            .flat_map(|(keys, _)| keys)
    }
}

/// Every version of the case's workflow up to its own: replaying version N
/// needs the versions before it.
async fn definition_ids(channel: Channel, case: &CaseRecord) -> Result<Vec<Digest>, CollectError> {
    let mut client =
        ApprovalServiceClient::new(channel).max_decoding_message_size(ANSWER_BYTES_MAX);
    let mut ids = Vec::new();
    for version in 1..=case.workflow_version {
        let definition = client
            .get_workflow(GetWorkflowRequest {
                workflow_id: case.workflow_id.clone(),
                version,
            })
            .await
            .map_err(rpc(format!("GetWorkflow {} v{version}", case.workflow_id)))?
            .into_inner()
            .workflow
            .ok_or_else(|| {
                CollectError::Answer("the node's GetWorkflow answer has no workflow".into())
            })?;
        ids.push(digest(
            "definition's transaction id",
            &definition.transaction_id,
        )?);
    }
    Ok(ids)
}

/// The registrations and revocations of each officer who acted on the
/// case, by the officer's department, up to the officer's last action: the
/// officer history the replay needs.
async fn officer_ids(
    node: &mut NodeServiceClient<Channel>,
    signers: &Signers,
    case: &CaseRecord,
) -> Result<Vec<Digest>, CollectError> {
    // (department, officer) -> height of its last action.
    let mut acted: BTreeMap<(String, Vec<u8>), u64> = BTreeMap::new();
    for event in case.events.iter().filter(|e| !e.step_id.is_empty()) {
        let last = acted
            .entry((event.department.clone(), event.signer.clone()))
            .or_default();
        *last = (*last).max(event.height);
    }
    let mut ids = Vec::new();
    let departments: BTreeSet<&String> = acted.keys().map(|(d, _)| d).collect();
    for department in departments {
        for committed in signer_transactions_of(node, signers.keys(department)).await? {
            let officer = match decoded_body(&committed) {
                Some(Body::RegisterOfficer(body)) => body.officer,
                Some(Body::RevokeOfficer(body)) => body.officer,
                _ => continue,
            };
            let height = committed.position.map_or(0, |p| p.height);
            if acted
                .get(&(department.clone(), officer))
                .is_some_and(|last| height <= *last)
            {
                ids.push(digest("officer transaction id", &committed.transaction_id)?);
            }
        }
    }
    Ok(ids)
}

fn genesis_key(hex: &str, department: &str) -> Result<PublicKey, CollectError> {
    PublicKey::from_hex(hex)
        .map_err(|err| CollectError::Answer(format!("genesis signing key of {department}: {err}")))
}

/// A citizen applicant's identity and attribute history up to the case's
/// last event, in chain order: its `CreateIdentity` and `DeclareAttribute`s,
/// and the attestations and revocations departments signed about it, which
/// automatic steps' rules read (`applicant.attested`); none for a
/// department.
async fn applicant_ids(
    node: &mut NodeServiceClient<Channel>,
    signers: &Signers,
    case: &CaseRecord,
) -> Result<Vec<Digest>, CollectError> {
    if !case.applicant_department.is_empty() {
        return Ok(Vec::new());
    }
    let applicant = PublicKey::from_slice(&case.applicant)
        .map_err(|err| CollectError::Answer(format!("the case's applicant key: {err}")))?;
    let last = case.events.iter().map(|e| e.height).max().unwrap_or(0);
    let up_to_last =
        |committed: &CommittedTransaction| committed.position.map_or(0, |p| p.height) <= last;
    // (height, index, id), sorted at the end into chain order.
    let mut found = Vec::new();
    let mut created = false;
    for committed in signer_transactions(node, &applicant).await? {
        match decoded_body(&committed) {
            Some(Body::CreateIdentity(_)) => created = true,
            Some(Body::DeclareAttribute(_)) if up_to_last(&committed) => {}
            _ => continue,
        }
        found.push(positioned(&committed)?);
    }
    if !created {
        return Err(CollectError::Answer(format!(
            "the applicant {} has no committed CreateIdentity on this node",
            applicant.to_did_key()
        )));
    }
    let attesters: Vec<PublicKey> = signers.attesters().copied().collect();
    for key in &attesters {
        for committed in signer_transactions(node, key).await? {
            let about = match decoded_body(&committed) {
                Some(Body::AttestAttribute(body)) => body.citizen,
                Some(Body::RevokeAttestation(body)) => body.citizen,
                _ => continue,
            };
            if about == applicant.as_bytes() && up_to_last(&committed) {
                found.push(positioned(&committed)?);
            }
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, _, id)| id).collect())
}

/// A committed transaction's position and id.
fn positioned(committed: &CommittedTransaction) -> Result<(u64, u32, Digest), CollectError> {
    let position = committed.position.unwrap_or_default();
    Ok((
        position.height,
        position.index,
        digest("applicant transaction id", &committed.transaction_id)?,
    ))
}

/// The case's own transactions, in the order of its events.
fn action_ids(case: &CaseRecord) -> Vec<Digest> {
    let mut ids: Vec<Digest> = Vec::new();
    for event in &case.events {
        if let Ok(id) = Digest::from_slice(&event.transaction_id)
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    }
    ids
}

/// The body of a committed transaction that took effect.
fn decoded_body(committed: &CommittedTransaction) -> Option<Body> {
    let succeeded = committed
        .result
        .as_ref()
        .is_some_and(|r| r.outcome() == TransactionOutcome::Success);
    if !succeeded {
        return None;
    }
    let envelope = committed.envelope.as_ref()?;
    Transaction::decode(envelope.payload.clone()).ok()?.body
}

/// The committed transactions of several keys (one department's), in
/// chain order.
async fn signer_transactions_of(
    node: &mut NodeServiceClient<Channel>,
    keys: &[PublicKey],
) -> Result<Vec<CommittedTransaction>, CollectError> {
    let mut all = Vec::new();
    for key in keys {
        all.extend(signer_transactions(node, key).await?);
    }
    all.sort_by_key(|c| c.position.map(|p| (p.height, p.index)));
    Ok(all)
}

/// A signer's committed transactions, oldest first, up to
/// [`LISTING_PAGES_MAX`] pages.
async fn signer_transactions(
    node: &mut NodeServiceClient<Channel>,
    signer: &PublicKey,
) -> Result<Vec<CommittedTransaction>, CollectError> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    for _ in 0..LISTING_PAGES_MAX {
        let page = node
            .list_transactions(ListTransactionsRequest {
                signer: signer.as_bytes().to_vec(),
                page_size: LISTING_PAGE_SIZE,
                page_token,
            })
            .await
            .map_err(rpc(format!("ListTransactions of {signer}")))?
            .into_inner();
        all.extend(page.transactions);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
    Err(CollectError::Answer(format!(
        "signer {signer} has over {} transactions; a bundle reads at most that many",
        LISTING_PAGES_MAX * LISTING_PAGE_SIZE
    )))
}

/// One transaction with its inclusion proof.
async fn proven_transaction(
    node: &mut NodeServiceClient<Channel>,
    id: &Digest,
) -> Result<BundledTransaction, CollectError> {
    let response = node
        .get_transaction(GetTransactionRequest {
            transaction_id: id.to_vec(),
            prove: true,
        })
        .await
        .map_err(rpc(format!("GetTransaction {id}")))?
        .into_inner();
    if response.status() != TransactionStatus::Committed {
        return Err(CollectError::Answer(format!(
            "transaction {id} is not committed on this node"
        )));
    }
    BundledTransaction::from_response(&response).ok_or_else(|| {
        CollectError::Answer(format!(
            "the node's answer for transaction {id} carries no proof"
        ))
    })
}
