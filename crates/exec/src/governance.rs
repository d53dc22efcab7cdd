//! Validator governance: the validator set changes by on-chain vote of the
//! validators in force.
//!
//! A department that runs a validator in force proposes a change
//! (`ProposeValidatorChange`, its approval counted), the departments of the
//! other validators approve it (`ApproveValidatorChange`), and the
//! transaction that brings its approvals to a quorum of the set in force
//! (2f + 1 for n = 3f + 1, `pbft::ValidatorSet::quorum`) before its deadline
//! marks it approved. At the end of that block, [`end_block`] applies every
//! change approved in it, in order, writes the new set (in force from the
//! next height) and returns it for the header's `next_validators`.
//!
//! **Invariant:** the set in force for a block is the one [`current_set`]
//! reads at its start; nothing in a block changes it (approvals are counted
//! against it), so every replica orders a height with the same set, and the
//! header that announces a new set is signed by the old one.
//!
//! A change may also concern a department rather than the set
//! (`ChangeDepartment`: a new signing key, new attest permissions, or a
//! department that genesis does not list); it is voted on the same way and
//! the departments in force ([`departments_in_force`]) change from the
//! next block. Adding a validator records its consensus key as its
//! department's node key, which signs blob receipts.
//!
//! **Invariant:** an index is given once: genesis validators are `0..n`, an
//! added validator gets `next_index`, a removed one's index is never reused,
//! so an index names one consensus key for the life of the chain.

use std::collections::BTreeSet;
use std::sync::Arc;

use govchain_crypto::{Digest, PublicKey};
use govchain_pbft::ValidatorSet;
use govchain_proto::types::v1::{
    AddValidator, ApproveValidatorChange, ChangeDepartment, DepartmentRegistry, ProposalStatus,
    ProposeValidatorChange, RemoveValidator, Revocation, RevocationList, RevokeCertificate,
    ValidatorChange, ValidatorKey, ValidatorMember, ValidatorProposal, ValidatorSetRecord,
    validator_change::Change,
};
use prost::Message as _;

use crate::departments::valid_department_name;
use crate::execute::Overlay;
use crate::identity::{
    ATTRIBUTES_MAX, Context, Departments, Outcome, Refusal, TEXT_BYTES_MAX, valid_attribute_name,
};
use crate::state::{StateError, StateRead, read_message, read_u64};
use crate::transaction::VerifiedTransaction;

const SET_KEY: &[u8] = b"gov/validators";
/// The key of the departments in force once governance changed one: a
/// node re-reads them after a block that writes it.
pub const DEPARTMENTS_KEY: &[u8] = b"gov/departments";
/// The key of the revocation list: a node re-reads the list after a block
/// that writes it.
pub const REVOKED_KEY: &[u8] = b"gov/revoked";
/// Longest serial number: RFC 5280 allows 20 bytes.
pub const SERIAL_BYTES_MAX: usize = 20;
const PROPOSAL_PREFIX: &[u8] = b"gov/proposal/";
const PROPOSAL_COUNT_KEY: &[u8] = b"gov/proposal-count";
const PROPOSAL_AT_PREFIX: &[u8] = b"gov/proposal-at/";

/// Longest endpoint text (host:port).
pub const ENDPOINT_BYTES_MAX: usize = 256;
/// How far past the block's time a proposal's deadline may be.
pub const DEADLINE_MS_MAX: u64 = 30 * 24 * 60 * 60 * 1000;
/// Most proposals one listing page returns.
pub const PROPOSALS_PAGE_MAX: u64 = 100;

/// The TLS identity of a department's node.
pub fn node_tls_identity(department: &str) -> String {
    format!("spiffe://govchain/dept/{department}/node")
}

/// `n` genesis validators `node0..`, for tests that build and check blocks.
#[cfg(test)]
pub(crate) fn test_validators(n: u8) -> Vec<(String, PublicKey)> {
    (0..n)
        .map(|i| {
            let key = govchain_crypto::SigningKey::from_seed([0xC0 + i; 32]).public_key();
            (format!("node{i}"), key)
        })
        .collect()
}

pub fn proposal_key(id: &Digest) -> Vec<u8> {
    [PROPOSAL_PREFIX, id.as_bytes()].concat()
}

/// The set in force for the next block to execute on `state`: the one
/// governance last wrote, or genesis's.
pub fn current_set(
    state: &impl StateRead,
    departments: &Departments,
) -> Result<ValidatorSetRecord, StateError> {
    if let Some(record) = read_message(state, SET_KEY, "validator set")? {
        return Ok(record);
    }
    let members: Vec<ValidatorMember> = (0u32..)
        .zip(departments.genesis_validators())
        .map(|(index, (department, key))| ValidatorMember {
            index,
            department: department.clone(),
            consensus_key: key.as_bytes().to_vec(),
            tls_identity: node_tls_identity(department),
            endpoint: String::new(),
        })
        .collect();
    let next_index = u32::try_from(members.len()).expect("a bounded genesis");
    Ok(ValidatorSetRecord {
        members,
        since_height: 1,
        next_index,
        change_heights: Vec::new(),
    })
}

/// The departments in force for the next block to execute on `state`: the
/// ones governance last wrote, or genesis's (`genesis`, shared, then).
pub fn departments_in_force(
    state: &impl StateRead,
    genesis: &Arc<Departments>,
) -> Result<Arc<Departments>, StateError> {
    let Some(registry) = read_message::<DepartmentRegistry>(state, DEPARTMENTS_KEY, "departments")?
    else {
        return Ok(Arc::clone(genesis));
    };
    genesis
        .from_registry(&registry)
        .map(Arc::new)
        .map_err(|reason| StateError::Corrupt {
            key: "departments".into(),
            reason,
        })
}

/// The heights whose blocks changed the validator set, ascending.
pub fn change_heights(state: &impl StateRead) -> Result<Vec<u64>, StateError> {
    Ok(
        read_message::<ValidatorSetRecord>(state, SET_KEY, "validator set")?
            .map(|record| record.change_heights)
            .unwrap_or_default(),
    )
}

/// The consensus view of a set record: indexes and keys.
pub fn validator_set(record: &ValidatorSetRecord) -> Result<ValidatorSet, StateError> {
    let corrupt = |reason: String| StateError::Corrupt {
        key: "validator set".into(),
        reason,
    };
    let members = record
        .members
        .iter()
        .map(|member| {
            PublicKey::from_slice(&member.consensus_key)
                .map(|key| (member.index, key))
                .map_err(|err| corrupt(format!("validator {}: {err}", member.index)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    ValidatorSet::from_members(members).map_err(|err| corrupt(err.to_string()))
}

/// What a header's `next_validators` lists for `record`.
pub fn header_validators(record: &ValidatorSetRecord) -> Vec<ValidatorKey> {
    let mut keys: Vec<ValidatorKey> = record
        .members
        .iter()
        .map(|member| ValidatorKey {
            index: member.index,
            consensus_key: member.consensus_key.clone(),
        })
        .collect();
    keys.sort_by_key(|key| key.index);
    keys
}

/// The set a header announces, if it announces one.
pub fn announced_set(next_validators: &[ValidatorKey]) -> Option<Result<ValidatorSet, String>> {
    if next_validators.is_empty() {
        return None;
    }
    let members = next_validators
        .iter()
        .map(|key| {
            PublicKey::from_slice(&key.consensus_key)
                .map(|public| (key.index, public))
                .map_err(|err| format!("validator {}: {err}", key.index))
        })
        .collect::<Result<Vec<_>, _>>();
    Some(
        members
            .and_then(|members| ValidatorSet::from_members(members).map_err(|err| err.to_string())),
    )
}

/// The certificates revoked so far.
pub fn revocations(state: &impl StateRead) -> Result<RevocationList, StateError> {
    Ok(read_message(state, REVOKED_KEY, "revocation list")?.unwrap_or_default())
}

/// Whether `revoked` covers a certificate with this serial (lowercase hex)
/// and key fingerprint.
pub fn revocation_covers(revoked: &RevokeCertificate, serial: &str, fingerprint: &[u8]) -> bool {
    (!revoked.serial.is_empty() && revoked.serial == serial)
        || (!revoked.key_fingerprint.is_empty() && revoked.key_fingerprint == fingerprint)
}

/// Stateless checks of a revocation: a serial of lowercase hex digits (at
/// most 20 bytes) and/or a 32-byte fingerprint.
pub fn validate_revocation(revoke: &RevokeCertificate) -> Result<(), String> {
    if revoke.serial.is_empty() && revoke.key_fingerprint.is_empty() {
        return Err("revoke_certificate needs a serial or a key_fingerprint".into());
    }
    if !revoke.serial.is_empty() {
        let hex_ok = revoke.serial.len().is_multiple_of(2)
            && revoke.serial.len() <= 2 * SERIAL_BYTES_MAX
            && revoke
                .serial
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
            && (revoke.serial == "00" || !revoke.serial.starts_with("00"));
        if !hex_ok {
            return Err(format!(
                "revoke_certificate.serial {:?} must be lowercase hex of 1 to {SERIAL_BYTES_MAX} bytes, without leading zero bytes",
                revoke.serial
            ));
        }
    }
    if !revoke.key_fingerprint.is_empty() && revoke.key_fingerprint.len() != Digest::LEN {
        return Err(format!(
            "revoke_certificate.key_fingerprint must be {} bytes (SHA-256), got {}",
            Digest::LEN,
            revoke.key_fingerprint.len()
        ));
    }
    Ok(())
}

/// Why `revoke` does not apply to `list`: it revokes nothing new.
fn revocation_moot(list: &RevocationList, revoke: &RevokeCertificate) -> Option<String> {
    list.revocations
        .iter()
        .filter_map(|r| r.certificate.as_ref())
        .any(|held| {
            (!revoke.serial.is_empty() && held.serial == revoke.serial)
                || (!revoke.key_fingerprint.is_empty()
                    && held.key_fingerprint == revoke.key_fingerprint)
        })
        .then(|| "the certificate is already revoked".to_owned())
}

pub fn read_proposal(
    state: &impl StateRead,
    id: &Digest,
) -> Result<Option<ValidatorProposal>, StateError> {
    read_message(state, &proposal_key(id), "validator proposal")
}

/// Proposals in the order they were made, from the `after`-th (0: the
/// first), at most `limit` (capped at [`PROPOSALS_PAGE_MAX`]); and the
/// number to pass as `after` for the next page, if there is one.
pub fn proposals_page(
    state: &impl StateRead,
    after: u64,
    limit: u64,
) -> Result<(Vec<ValidatorProposal>, Option<u64>), StateError> {
    let count = read_u64(state, PROPOSAL_COUNT_KEY, "proposal count")?;
    let end = count.min(after.saturating_add(limit.clamp(1, PROPOSALS_PAGE_MAX)));
    let mut proposals = Vec::new();
    for number in after..end {
        let at = [PROPOSAL_AT_PREFIX, &number.to_be_bytes()].concat();
        let Some(id) = state.get(&at)? else { continue };
        let id = Digest::from_slice(&id).map_err(|err| StateError::Corrupt {
            key: "proposal index".into(),
            reason: err.to_string(),
        })?;
        if let Some(proposal) = read_proposal(state, &id)? {
            proposals.push(proposal);
        }
    }
    Ok((proposals, (end < count).then_some(end)))
}

/// Stateless checks of a proposal (`check_envelope`).
pub fn validate_propose(body: &ProposeValidatorChange) -> Result<(), String> {
    if body.reason.trim().is_empty() {
        return Err("reason is required".into());
    }
    if body.reason.len() > TEXT_BYTES_MAX {
        return Err(format!("reason is over {TEXT_BYTES_MAX} bytes"));
    }
    match body.change.as_ref().and_then(|c| c.change.as_ref()) {
        None => Err("change is required: add, remove, revoke_certificate or department".into()),
        Some(Change::Add(add)) => {
            if add.department.is_empty() {
                return Err("add.department is required".into());
            }
            PublicKey::from_slice(&add.consensus_key)
                .map_err(|err| format!("add.consensus_key: {err}"))?;
            if add.endpoint.len() > ENDPOINT_BYTES_MAX {
                return Err(format!("add.endpoint is over {ENDPOINT_BYTES_MAX} bytes"));
            }
            Ok(())
        }
        Some(Change::Remove(_)) => Ok(()),
        Some(Change::RevokeCertificate(revoke)) => validate_revocation(revoke),
        Some(Change::Department(change)) => validate_department_change(change),
    }
}

/// Stateless checks of a department change: a valid name, a 32-byte key
/// if one is given, valid and distinct attribute names, and something to
/// change.
fn validate_department_change(change: &ChangeDepartment) -> Result<(), String> {
    if !valid_department_name(&change.department) {
        return Err(format!(
            "department.department {:?} is not a department name: a lowercase letter, then lowercase letters, digits and '-', at most 31 bytes",
            change.department
        ));
    }
    if !change.signing_key.is_empty() {
        PublicKey::from_slice(&change.signing_key)
            .map_err(|err| format!("department.signing_key: {err}"))?;
    }
    if let Some(attests) = &change.attests {
        if attests.names.len() > ATTRIBUTES_MAX {
            return Err(format!(
                "department.attests lists {} names, more than {ATTRIBUTES_MAX}",
                attests.names.len()
            ));
        }
        let mut seen = BTreeSet::new();
        for name in &attests.names {
            if !valid_attribute_name(name) {
                return Err(format!(
                    "department.attests: {name:?} is not an attribute name"
                ));
            }
            if !seen.insert(name) {
                return Err(format!("department.attests lists {name:?} twice"));
            }
        }
    }
    if change.signing_key.is_empty() && change.attests.is_none() {
        return Err("department needs a signing_key, attests, or both".into());
    }
    Ok(())
}

/// Stateless checks of an approval (`check_envelope`).
pub fn validate_approve(body: &ApproveValidatorChange) -> Result<(), String> {
    if body.proposal_id.len() != Digest::LEN {
        return Err(format!(
            "proposal_id must be {} bytes, got {}",
            Digest::LEN,
            body.proposal_id.len()
        ));
    }
    Ok(())
}

/// The department of the signer, if it runs a validator in `set`.
fn voting_department(
    context: &Context<'_>,
    transaction: &VerifiedTransaction,
    set: &ValidatorSetRecord,
) -> Result<String, Refusal> {
    let Some(department) = context.departments.by_key(&transaction.signer) else {
        return Err(Refusal::PermissionDenied(
            "the signer is not a department's signing key in force".into(),
        ));
    };
    if !set.members.iter().any(|m| m.department == department.name) {
        return Err(Refusal::PermissionDenied(format!(
            "department {} runs no validator in the current set",
            department.name
        )));
    }
    Ok(department.name.clone())
}

/// What governance keeps: the validator set and the departments in force,
/// and whether a block changed them.
#[derive(Clone, Debug)]
struct Governed {
    set: ValidatorSetRecord,
    departments: Arc<Departments>,
    set_changed: bool,
    departments_changed: bool,
}

impl Governed {
    fn new(set: ValidatorSetRecord, departments: Arc<Departments>) -> Self {
        Self {
            set,
            departments,
            set_changed: false,
            departments_changed: false,
        }
    }

    /// Applies `change`, in force from `height + 1`; or says why it does
    /// not apply, and changes nothing.
    fn apply(&mut self, change: &Change, height: u64) -> Result<(), String> {
        match change {
            Change::RevokeCertificate(_) => Ok(()),
            Change::Add(add) => {
                let set = add_validator(&self.set, &self.departments, add, height)?;
                let key = PublicKey::from_slice(&add.consensus_key)
                    .map_err(|err| format!("add.consensus_key: {err}"))?;
                let mut departments = (*self.departments).clone();
                departments.set_node_key(&add.department, key, height + 1);
                self.set = set;
                self.departments = Arc::new(departments);
                self.set_changed = true;
                self.departments_changed = true;
                Ok(())
            }
            Change::Remove(RemoveValidator { validator_index }) => {
                let set = &self.set;
                if !set.members.iter().any(|m| m.index == *validator_index) {
                    return Err(format!("validator {validator_index} is not in the set"));
                }
                if set.members.len() == 1 {
                    return Err("the last validator can not be removed".into());
                }
                let mut next = set.clone();
                next.members.retain(|m| m.index != *validator_index);
                next.since_height = height + 1;
                validator_set(&next).map_err(|err| err.to_string())?;
                self.set = next;
                self.set_changed = true;
                Ok(())
            }
            Change::Department(change) => {
                self.departments = Arc::new(change_department(&self.departments, change, height)?);
                self.departments_changed = true;
                Ok(())
            }
        }
    }
}

/// The set with `add`'s validator, or why it does not apply.
fn add_validator(
    set: &ValidatorSetRecord,
    departments: &Departments,
    add: &AddValidator,
    height: u64,
) -> Result<ValidatorSetRecord, String> {
    let AddValidator {
        department,
        consensus_key,
        endpoint,
    } = add;
    if departments.by_name(department).is_none() {
        return Err(format!(
            "{department:?} is not a department: genesis lists none of that name and governance registered none"
        ));
    }
    if set.members.iter().any(|m| m.department == *department) {
        return Err(format!("department {department} already runs a validator"));
    }
    if set
        .members
        .iter()
        .any(|m| m.consensus_key == *consensus_key)
    {
        return Err("the consensus key is already a validator's".into());
    }
    let mut next = set.clone();
    next.members.push(ValidatorMember {
        index: set.next_index,
        department: department.clone(),
        consensus_key: consensus_key.clone(),
        tls_identity: node_tls_identity(department),
        endpoint: endpoint.clone(),
    });
    next.next_index = set.next_index + 1;
    next.members.sort_by_key(|m| m.index);
    next.since_height = height + 1;
    validator_set(&next).map_err(|err| err.to_string())?;
    Ok(next)
}

/// The departments after `change`, in force from `height + 1`, or why it
/// does not apply.
fn change_department(
    departments: &Departments,
    change: &ChangeDepartment,
    height: u64,
) -> Result<Departments, String> {
    let name = &change.department;
    let key = if change.signing_key.is_empty() {
        None
    } else {
        let key = PublicKey::from_slice(&change.signing_key)
            .map_err(|err| format!("department.signing_key: {err}"))?;
        if let Some(holder) = departments.by_key(&key) {
            return Err(format!(
                "the signing key is already department {}'s",
                holder.name
            ));
        }
        if departments.key_ever_used(&key) {
            return Err(
                "the signing key was a department's before: a key is never given twice".into(),
            );
        }
        Some(key)
    };
    let attests: Option<BTreeSet<String>> = change
        .attests
        .as_ref()
        .map(|a| a.names.iter().cloned().collect());
    let mut next = departments.clone();
    match departments.by_name(name) {
        None => {
            let Some(key) = key else {
                return Err(format!(
                    "{name:?} is not a department: registering it needs a signing_key"
                ));
            };
            next.register(name, key, attests.unwrap_or_default(), height + 1);
        }
        Some(current) => {
            if key.is_none() && attests.as_ref() == Some(&current.attests) {
                return Err(format!(
                    "department {name} already attests exactly these names: the change changes nothing"
                ));
            }
            if let Some(key) = key {
                next.replace_key(name, key, height + 1);
            }
            if let Some(attests) = attests {
                next.set_attests(name, attests, height + 1);
            }
        }
    }
    Ok(next)
}

fn quorum(set: &ValidatorSetRecord) -> Result<usize, StateError> {
    Ok(validator_set(set)?.quorum() as usize)
}

/// Approvals of `proposal` by departments that run a validator in `set`.
fn counted(proposal: &ValidatorProposal, set: &ValidatorSetRecord) -> usize {
    let voters: BTreeSet<&str> = set.members.iter().map(|m| m.department.as_str()).collect();
    proposal
        .approvals
        .iter()
        .filter(|d| voters.contains(d.as_str()))
        .count()
}

pub(crate) fn propose<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    context: &Context<'_>,
    transaction: &VerifiedTransaction,
    body: &ProposeValidatorChange,
) -> Outcome {
    let set = current_set(overlay, context.departments)?;
    let proposer = match voting_department(context, transaction, &set) {
        Ok(department) => department,
        Err(refusal) => return Ok(Err(refusal)),
    };
    if body.deadline_ms <= context.now_ms || body.deadline_ms - context.now_ms > DEADLINE_MS_MAX {
        return Ok(Err(Refusal::FailedPrecondition(format!(
            "deadline {} must be after the block's time {} and at most 30 days ahead",
            body.deadline_ms, context.now_ms
        ))));
    }
    let change = body
        .change
        .as_ref()
        .and_then(|c| c.change.as_ref())
        .expect("validate_propose requires a change");
    let mut governed = Governed::new(set.clone(), Arc::new(context.departments.clone()));
    if let Err(reason) = governed.apply(change, context.height) {
        return Ok(Err(Refusal::FailedPrecondition(reason)));
    }
    if let Change::RevokeCertificate(revoke) = change
        && let Some(reason) = revocation_moot(&revocations(overlay)?, revoke)
    {
        return Ok(Err(Refusal::FailedPrecondition(reason)));
    }
    let id = transaction.id;
    let mut proposal = ValidatorProposal {
        id: id.to_vec(),
        proposal: Some(body.clone()),
        proposer: proposer.clone(),
        proposed_height: context.height,
        status: ProposalStatus::Pending.into(),
        approvals: vec![proposer],
        applied_height: 0,
        error: String::new(),
    };
    let number = read_u64(overlay, PROPOSAL_COUNT_KEY, "proposal count")?;
    overlay.put(
        PROPOSAL_COUNT_KEY.to_vec(),
        (number + 1).to_be_bytes().to_vec(),
    );
    overlay.put(
        [PROPOSAL_AT_PREFIX, &number.to_be_bytes()].concat(),
        id.to_vec(),
    );
    settle(overlay, &set, &mut proposal)?;
    Ok(Ok(()))
}

pub(crate) fn approve<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    context: &Context<'_>,
    transaction: &VerifiedTransaction,
    body: &ApproveValidatorChange,
) -> Outcome {
    let set = current_set(overlay, context.departments)?;
    let department = match voting_department(context, transaction, &set) {
        Ok(department) => department,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let id = Digest::from_slice(&body.proposal_id).expect("validate_approve checks the length");
    let Some(mut proposal) = read_proposal(overlay, &id)? else {
        return Ok(Err(Refusal::NotFound(format!(
            "no validator proposal {id}"
        ))));
    };
    if proposal.status() != ProposalStatus::Pending {
        return Ok(Err(Refusal::FailedPrecondition(format!(
            "proposal {id} is no longer pending ({})",
            proposal.status().as_str_name()
        ))));
    }
    let deadline_ms = proposal.proposal.as_ref().map_or(0, |p| p.deadline_ms);
    if context.now_ms > deadline_ms {
        return Ok(Err(Refusal::FailedPrecondition(format!(
            "proposal {id} expired at {deadline_ms}"
        ))));
    }
    if proposal.approvals.contains(&department) {
        return Ok(Err(Refusal::AlreadyExists(format!(
            "department {department} already approved proposal {id}"
        ))));
    }
    proposal.approvals.push(department);
    settle(overlay, &set, &mut proposal)?;
    Ok(Ok(()))
}

/// Stores `proposal`; once its approvals reach the quorum of `set`, marks
/// it approved in this block, for [`end_block`] to apply.
fn settle<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    set: &ValidatorSetRecord,
    proposal: &mut ValidatorProposal,
) -> Result<(), StateError> {
    let id = Digest::from_slice(&proposal.id).expect("ids are digests");
    if counted(proposal, set) >= quorum(set)? && !overlay.approved_changes.contains(&id) {
        overlay.approved_changes.push(id);
    }
    overlay.put(proposal_key(&id), proposal.encode_to_vec());
    Ok(())
}

/// Applies the changes approved in the block at `height`, in order: each
/// one that still applies (another change in the block may have made it
/// moot) becomes `APPLIED`, the others `FAILED`. Writes the departments if
/// a change touched them. Returns the new set, in force from `height + 1`,
/// if it changed.
pub(crate) fn end_block<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    departments: &Arc<Departments>,
    height: u64,
) -> Result<Option<ValidatorSetRecord>, StateError> {
    let approved = std::mem::take(&mut overlay.approved_changes);
    if approved.is_empty() {
        return Ok(None);
    }
    let mut governed = Governed::new(current_set(overlay, departments)?, Arc::clone(departments));
    for id in approved {
        let Some(mut proposal) = read_proposal(overlay, &id)? else {
            continue;
        };
        let change = proposal
            .proposal
            .as_ref()
            .and_then(|p| p.change.as_ref())
            .and_then(|c: &ValidatorChange| c.change.clone());
        let Some(change) = change else { continue };
        let outcome = match &change {
            Change::RevokeCertificate(revoke) => {
                let mut list = revocations(overlay)?;
                match revocation_moot(&list, revoke) {
                    Some(reason) => Err(reason),
                    None => {
                        list.revocations.push(Revocation {
                            certificate: Some(revoke.clone()),
                            height,
                            proposal_id: id.to_vec(),
                            reason: proposal
                                .proposal
                                .as_ref()
                                .map(|p| p.reason.clone())
                                .unwrap_or_default(),
                        });
                        overlay.put(REVOKED_KEY.to_vec(), list.encode_to_vec());
                        Ok(())
                    }
                }
            }
            _ => governed.apply(&change, height),
        };
        match outcome {
            Ok(()) => proposal.status = ProposalStatus::Applied.into(),
            Err(reason) => {
                proposal.status = ProposalStatus::Failed.into();
                proposal.error = reason;
            }
        }
        proposal.applied_height = height;
        overlay.put(proposal_key(&id), proposal.encode_to_vec());
    }
    if governed.departments_changed {
        overlay.put(
            DEPARTMENTS_KEY.to_vec(),
            governed.departments.to_registry().encode_to_vec(),
        );
    }
    if !governed.set_changed {
        return Ok(None);
    }
    let mut set = governed.set;
    set.change_heights.push(height);
    overlay.put(SET_KEY.to_vec(), set.encode_to_vec());
    Ok(Some(set))
}

#[cfg(test)]
mod tests;
