//! The offline check of a case bundle: every transaction proven in a
//! certified block (`node::verify_transaction_proof`, the check `tx get
//! --verify` makes), then the whole case replayed through `exec`'s rules
//! on a scratch state, which must end in exactly the claimed case. Each
//! transaction replays with the departments in force at its height: from
//! the bundle's proven departments registry when governance changed one,
//! else genesis's.

use std::collections::{BTreeMap, BTreeSet};

use govchain_crypto::{Digest, PublicKey};
use govchain_exec::approval::{read_case, state_name};
use govchain_exec::{
    Departments, StateError, StateRead, VerifiedTransaction, apply_committed, check_envelope,
};
use govchain_pki::Genesis;
use govchain_proto::types::v1::{CaseRecord, Transaction, TransactionOutcome, transaction::Body};
use prost::Message as _;

use super::{BUNDLE_TRANSACTIONS_MAX, BundledTransaction, CaseBundle, FORMAT};

/// The first thing in a bundle that does not hold.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    #[error("the bundle's format is {got:?}; this govchain reads {expected:?}")]
    Format { got: String, expected: &'static str },
    #[error("the bundle's genesis is not a valid genesis: {0}")]
    Genesis(String),
    #[error(
        "the bundle's genesis (hash {bundled}) is not the trusted genesis (hash {trusted}): its \
         certificates prove nothing to you"
    )]
    UntrustedGenesis { bundled: Digest, trusted: Digest },
    #[error("the bundle holds {got} transactions, at most {max} are read")]
    TooManyTransactions { got: usize, max: usize },
    #[error("the bundle's case id is {got} bytes, expected 32")]
    CaseId { got: usize },
    #[error("the bundle's claimed case does not decode: {0}")]
    ClaimedCase(String),
    /// One transaction's proof, signature or replay failed.
    #[error("{item}: {error}")]
    Item { item: String, error: String },
    #[error("the replay of the bundle's transactions opens no case {case_id}")]
    NoCase { case_id: Digest },
    #[error("the claimed case differs from the replay of its transactions: {0}")]
    Outcome(String),
    #[error("replay state: {0}")]
    State(#[from] StateError),
    /// The departments registry or its proof does not hold.
    #[error("the bundle's departments: {0}")]
    Departments(String),
}

/// What a bundle that verifies established.
#[derive(Debug)]
pub struct VerifiedCase {
    pub case_id: Digest,
    pub genesis_hash: Digest,
    /// The case, as both claimed and replayed.
    pub case: CaseRecord,
    pub transactions: usize,
    /// Distinct certified blocks that hold them.
    pub blocks: usize,
    /// Each block's commit certificate had at least this many signatures.
    pub quorum: u32,
}

/// One proven transaction, ready to be replayed.
struct Proven {
    item: String,
    height: u64,
    index: u64,
    timestamp_ms: u64,
    transaction: VerifiedTransaction,
}

/// Checks `bundle` offline: its genesis against `trusted` when given, every
/// transaction's envelope, inclusion proof and block certificate against
/// the bundle's genesis, then the replay of all of them in chain order
/// against the claimed case. The first failure is the error.
pub fn verify_bundle(
    bundle: &CaseBundle,
    trusted: Option<&Genesis>,
) -> Result<VerifiedCase, BundleError> {
    if bundle.format != FORMAT {
        return Err(BundleError::Format {
            got: bundle.format.clone(),
            expected: FORMAT,
        });
    }
    let genesis = &bundle.genesis;
    genesis
        .validate()
        .map_err(|err| BundleError::Genesis(err.to_string()))?;
    let genesis_hash = genesis.hash();
    if let Some(trusted) = trusted
        && trusted.hash() != genesis_hash
    {
        return Err(BundleError::UntrustedGenesis {
            bundled: genesis_hash,
            trusted: trusted.hash(),
        });
    }
    let count: usize = bundle.sections().iter().map(|(_, s)| s.len()).sum();
    if count > BUNDLE_TRANSACTIONS_MAX {
        return Err(BundleError::TooManyTransactions {
            got: count,
            max: BUNDLE_TRANSACTIONS_MAX,
        });
    }
    let case_id = Digest::from_slice(&bundle.case_id).map_err(|_| BundleError::CaseId {
        got: bundle.case_id.len(),
    })?;
    let claimed = CaseRecord::decode(bundle.case.as_slice())
        .map_err(|err| BundleError::ClaimedCase(err.to_string()))?;
    let (mut proven, quorum) = prove_all(bundle, genesis)?;
    // Chain order: the order the validators executed them in.
    proven.sort_by_key(|p| (p.height, p.index));
    let departments = departments(bundle, genesis, &proven)?;
    let replayed = replay(&departments, &proven, &case_id)?;
    check_actions_are_events(&bundle.actions, &replayed)?;
    if let Some(difference) = difference(&claimed, &replayed) {
        return Err(BundleError::Outcome(difference));
    }
    let blocks: BTreeSet<u64> = proven.iter().map(|p| p.height).collect();
    Ok(VerifiedCase {
        case_id,
        genesis_hash,
        case: replayed,
        transactions: proven.len(),
        blocks: blocks.len(),
        quorum,
    })
}

/// Every transaction of every section proven against genesis, each named
/// as its section's item ("action 3 (approve step ...)"); and genesis's
/// quorum.
fn prove_all(bundle: &CaseBundle, genesis: &Genesis) -> Result<(Vec<Proven>, u32), BundleError> {
    let validators = govchain_node::validator_set(genesis)
        .map_err(|err| BundleError::Genesis(format!("{err:#}")))?;
    let payload_bytes_max = genesis.consensus.transaction_payload_bytes_max as usize;
    let mut seen = BTreeSet::new();
    let mut proven = Vec::new();
    for (section, transactions) in bundle.sections() {
        for (number, bundled) in (1..).zip(transactions) {
            let item = format!("{section} {number} ({})", describe(bundled));
            let failed = |error: String| BundleError::Item {
                item: item.clone(),
                error,
            };
            let id = Digest::from_slice(&bundled.transaction_id).map_err(|_| {
                failed(format!(
                    "the transaction id is {} bytes, expected 32",
                    bundled.transaction_id.len()
                ))
            })?;
            if !seen.insert(id) {
                return Err(failed(format!("transaction {id} is in the bundle twice")));
            }
            let inclusion = govchain_node::verify_transaction_proof(
                &genesis.chain_id,
                &validators,
                &id,
                &bundled.to_response(),
            )
            .map_err(|err| failed(err.to_string()))?;
            // The signature was verified with the proof just above.
            let transaction = check_envelope(
                bundled.envelope(),
                &genesis.chain_id,
                payload_bytes_max,
                |_, _| true,
            )
            .map_err(|err| failed(err.to_string()))?;
            proven.push(Proven {
                item,
                height: inclusion.height,
                index: inclusion.index,
                timestamp_ms: inclusion.timestamp_ms,
                transaction,
            });
        }
    }
    Ok((proven, validators.quorum()))
}

/// The departments whose history the replay reads: the bundle's registry,
/// proven against a certified header at or after every transaction's
/// block, or genesis's when the bundle has none.
fn departments(
    bundle: &CaseBundle,
    genesis: &Genesis,
    proven: &[Proven],
) -> Result<Departments, BundleError> {
    let genesis_departments = govchain_node::departments(genesis);
    let Some(bundled) = &bundle.departments else {
        return Ok(genesis_departments);
    };
    let invalid = |reason: String| BundleError::Departments(reason);
    let validators = govchain_node::validator_set(genesis)
        .map_err(|err| BundleError::Genesis(format!("{err:#}")))?;
    let value = (!bundled.value.is_empty()).then_some(bundled.value.as_slice());
    let head = govchain_node::verify_state_proof(
        &genesis.chain_id,
        &validators,
        govchain_exec::governance::DEPARTMENTS_KEY,
        value,
        &bundled.proof.to_wire(),
    )
    .map_err(|err| invalid(err.to_string()))?;
    let last = proven.iter().map(|p| p.height).max().unwrap_or(0);
    if head.height < last {
        return Err(invalid(format!(
            "proven at block {}, before the bundle's last transaction (block {last}): a change in between would be missed",
            head.height
        )));
    }
    let Some(value) = value else {
        return Ok(genesis_departments);
    };
    let registry = govchain_proto::types::v1::DepartmentRegistry::decode(value)
        .map_err(|err| invalid(format!("the registry does not decode: {err}")))?;
    genesis_departments
        .from_registry(&registry)
        .map_err(invalid)
}

/// World state that starts empty: only what the bundle's transactions
/// write.
#[derive(Default)]
struct ScratchState(BTreeMap<Vec<u8>, Vec<u8>>);

impl StateRead for ScratchState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.0.get(key).cloned())
    }
}

/// Applies each transaction, in chain order, with its block's height and
/// time, by `exec`'s own execution path; every one must succeed, as it did
/// on chain for its effect to be in the case. Returns the case.
fn replay(
    departments: &Departments,
    proven: &[Proven],
    case_id: &Digest,
) -> Result<CaseRecord, BundleError> {
    let mut state = ScratchState::default();
    for p in proven {
        let replayed = apply_committed(
            &state,
            &departments.as_of(p.height),
            &p.transaction,
            p.height,
            p.timestamp_ms,
        )?;
        if replayed.result.outcome() != TransactionOutcome::Success {
            return Err(BundleError::Item {
                item: p.item.clone(),
                error: format!(
                    "replayed at height {} through the approval rules, it fails: {}",
                    p.height, replayed.result.error
                ),
            });
        }
        for (key, value) in replayed.writes {
            match value {
                Some(value) => state.0.insert(key, value),
                None => state.0.remove(&key),
            };
        }
    }
    read_case(&state, case_id)?.ok_or(BundleError::NoCase { case_id: *case_id })
}

/// An action that is no event of the case proves nothing about it.
fn check_actions_are_events(
    actions: &[BundledTransaction],
    case: &CaseRecord,
) -> Result<(), BundleError> {
    let events: BTreeSet<&[u8]> = case
        .events
        .iter()
        .map(|e| e.transaction_id.as_slice())
        .collect();
    for (number, action) in (1..).zip(actions) {
        if !events.contains(action.transaction_id.as_slice()) {
            return Err(BundleError::Item {
                item: format!("action {number} ({})", describe(action)),
                error: format!(
                    "transaction {} is not an event of case {}",
                    hex::encode(&action.transaction_id),
                    hex::encode(&case.case_id)
                ),
            });
        }
    }
    Ok(())
}

/// The first way `claimed` differs from `replayed`, for the message.
fn difference(claimed: &CaseRecord, replayed: &CaseRecord) -> Option<String> {
    if claimed == replayed {
        return None;
    }
    if claimed.state != replayed.state {
        return Some(format!(
            "it claims state {}, the replay gives {}",
            state_name(claimed.state),
            state_name(replayed.state)
        ));
    }
    if claimed.events.len() != replayed.events.len() {
        return Some(format!(
            "it claims {} events, the replay gives {}",
            claimed.events.len(),
            replayed.events.len()
        ));
    }
    if claimed.steps != replayed.steps {
        return Some("its steps are not the replayed steps".into());
    }
    if claimed.events != replayed.events {
        return Some("its events are not the replayed events".into());
    }
    Some("a field other than state, steps or events differs".into())
}

/// What a bundled transaction says it is, from its payload as given (the
/// checks come after): names the item in messages.
pub fn describe(bundled: &BundledTransaction) -> String {
    let Ok(transaction) = Transaction::decode(bundled.envelope.payload.as_slice()) else {
        return "a payload that does not decode".into();
    };
    let signer = short(&bundled.envelope.signer);
    match transaction.body {
        None => "no body".into(),
        Some(Body::DefineWorkflow(body)) => format!("define workflow {}", body.workflow_id),
        Some(Body::RegisterOfficer(body)) => {
            format!("register officer {} as {}", short(&body.officer), body.role)
        }
        Some(Body::RevokeOfficer(body)) => format!("revoke officer {}", short(&body.officer)),
        Some(Body::CreateIdentity(_)) => match PublicKey::from_slice(&bundled.envelope.signer) {
            Ok(key) => format!("identity {}", key.to_did_key()),
            Err(_) => format!("identity {signer}"),
        },
        Some(Body::OpenCase(body)) => format!(
            "open on {} v{} by {signer}",
            body.workflow_id, body.workflow_version
        ),
        Some(Body::ActOnCase(body)) => format!(
            "{} step {} by {signer}",
            crate::view::action_name(body.action),
            body.step_id
        ),
        Some(Body::AmendCase(_)) => format!("amend by {signer}"),
        Some(other) => govchain_exec::body_kind(&other).into(),
    }
}

/// The first 8 bytes of a key, hex: enough to tell officers apart.
fn short(bytes: &[u8]) -> String {
    hex::encode(bytes.iter().take(8).copied().collect::<Vec<_>>())
}
