//! Citizen identity, attestations, consent and audited access: the state
//! they keep and the rules that every node applies when executing them.
//!
//! **Invariant:** the chain holds no personal data in clear: attribute
//! values stay in the holder's blob store, sealed with a salt; the state
//! has their CIDs, salted commitments and the records about them.
//!
//! **Invariant:** an access record is written only if, at the executing
//! block's timestamp, the cited consent was granted by the citizen to the
//! signing department, is unrevoked and unexpired, and covers the
//! attribute and the purpose. [`check_access`] is that rule; a node runs it
//! at admission too, so that a refused read is refused before it is
//! ordered.
//!
//! State keys (every key starts with a prefix and a fixed-length citizen
//! key or id, and names are length-prefixed, so no two keys collide):
//! - `id/<citizen>`: [`IdentityRecord`]
//! - `attr/<citizen><name>`: [`AttributeRecord`]
//! - `attr-names/<citizen>`: the declared attribute names, `\n`-separated
//! - `attn/<citizen><len><name><department>`: [`AttestationRecord`]
//! - `consent/<consent id>`: [`ConsentRecord`]
//! - `consent-n/<citizen>`, `consent-i/<citizen><u64 seq>`: the consent ids
//! - `access-n/<citizen>`, `access-i/<citizen><u64 seq>`: the access log
//! - `access-tx/<transaction id>`: [`AccessRecord`] of an access
//! - `access-refused/<transaction id>`: [`AccessRecord`] of a refused
//!   attempt (never read when a blob is released);
//!   `access-refused-n/<citizen><len><department><u64 day>`: how many
//!   refusals that department left in that citizen's log that day
//! - `blob-ref/<cid>`: the citizen key and name of the attribute whose
//!   sealed blob has that CID
//! - `blob-retired/<cid>`: the CID of a replaced attribute value

use std::fmt;

use govchain_crypto::{Digest, DomainHasher, PublicKey, Signature};
use govchain_proto::types::v1::{
    AccessRecord, AttestAttribute, AttestationRecord, AttributeRecord, ConsentRecord,
    DeclareAttribute, GrantConsent, IdentityRecord, RecordAccess, RevokeAttestation, RevokeConsent,
};
use prost::Message;

use crate::execute::Overlay;
use crate::state::{StateError, StateRead, read_message, read_u64};
use crate::transaction::VerifiedTransaction;

pub mod disclosure;

pub use crate::departments::{Department, Departments};

/// Longest attribute name.
pub const ATTRIBUTE_NAME_BYTES_MAX: usize = 64;
/// Most attributes one consent covers, and most one citizen declares.
pub const ATTRIBUTES_MAX: usize = 64;
/// Longest purpose, reason or jurisdiction text.
pub const TEXT_BYTES_MAX: usize = 256;
/// Longest CID text (a CIDv1 SHA-256 in base32 is 59 characters).
pub const CID_TEXT_BYTES_MAX: usize = 128;
/// Shortest salt of a sealed attribute.
pub const SALT_BYTES_MIN: usize = 16;

const DOMAIN_ATTRIBUTE: &str = "govchain/attribute/v1";
const DOMAIN_BLOB_RECEIPT: &str = "govchain/blob-receipt/v1";

/// Why an identity transaction has no effect. Each kind maps to one gRPC
/// status code when a node refuses the transaction at admission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    NotFound(String),
    AlreadyExists(String),
    PermissionDenied(String),
    FailedPrecondition(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotFound(message)
            | Refusal::AlreadyExists(message)
            | Refusal::PermissionDenied(message)
            | Refusal::FailedPrecondition(message) => f.write_str(message),
        }
    }
}

impl Refusal {
    /// The stable reason a program reads (`TransactionResult.reason`, and
    /// the `ErrorInfo` of the status at admission).
    pub fn reason(&self) -> govchain_proto::types::v1::ErrorReason {
        use govchain_proto::types::v1::ErrorReason;
        match self {
            Refusal::NotFound(_) => ErrorReason::NotFound,
            Refusal::AlreadyExists(_) => ErrorReason::AlreadyExists,
            Refusal::PermissionDenied(_) => ErrorReason::PermissionDenied,
            Refusal::FailedPrecondition(_) => ErrorReason::FailedPrecondition,
        }
    }
}

pub(crate) type Outcome = Result<Result<(), Refusal>, StateError>;

/// The commitment to an attribute value: SHA-256 over the domain tag, the
/// salt and the value, each length-prefixed.
pub fn attribute_commitment(salt: &[u8], value: &[u8]) -> Digest {
    DomainHasher::new(DOMAIN_ATTRIBUTE)
        .bytes(salt)
        .bytes(value)
        .finish()
}

/// What a holder's node signs, with its consensus key, when a client
/// uploads a blob for a citizen (`UploadHeader.receipt_for_citizen`): that
/// these exact bytes (`cid`, `size_bytes`) were uploaded to `holder` for
/// `citizen`. A declaration must carry this signature, so only someone who
/// had the bytes can bind a stored value to a citizen: a department that
/// learns a pending declaration's CID cannot declare it first under a key
/// of its own and have the value released to itself.
pub fn blob_receipt_digest(
    chain_id: &str,
    holder: &str,
    cid: &str,
    citizen: &PublicKey,
    size_bytes: u64,
) -> Digest {
    DomainHasher::new(DOMAIN_BLOB_RECEIPT)
        .bytes(chain_id.as_bytes())
        .bytes(holder.as_bytes())
        .bytes(cid.as_bytes())
        .bytes(citizen.as_bytes())
        .u64(size_bytes)
        .finish()
}

/// Whether the name is a valid attribute name: 1 to 64 bytes of lower-case
/// letters, digits, `_` and `-`.
pub fn valid_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= ATTRIBUTE_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

// ----- keys ---------------------------------------------------------------

fn key(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut key = prefix.to_vec();
    for part in parts {
        key.extend_from_slice(part);
    }
    key
}

fn name_part(name: &str) -> Vec<u8> {
    let len = u32::try_from(name.len()).expect("names are bounded");
    [&len.to_be_bytes()[..], name.as_bytes()].concat()
}

pub fn identity_key(citizen: &PublicKey) -> Vec<u8> {
    key(b"id/", &[citizen.as_bytes()])
}

pub fn attribute_key(citizen: &PublicKey, name: &str) -> Vec<u8> {
    key(b"attr/", &[citizen.as_bytes(), name.as_bytes()])
}

fn attribute_names_key(citizen: &PublicKey) -> Vec<u8> {
    key(b"attr-names/", &[citizen.as_bytes()])
}

pub fn attestation_key(citizen: &PublicKey, name: &str, department: &str) -> Vec<u8> {
    key(
        b"attn/",
        &[citizen.as_bytes(), &name_part(name), department.as_bytes()],
    )
}

pub fn consent_key(consent_id: &Digest) -> Vec<u8> {
    key(b"consent/", &[consent_id.as_bytes()])
}

fn consent_count_key(citizen: &PublicKey) -> Vec<u8> {
    key(b"consent-n/", &[citizen.as_bytes()])
}

fn consent_index_key(citizen: &PublicKey, sequence: u64) -> Vec<u8> {
    key(
        b"consent-i/",
        &[citizen.as_bytes(), &sequence.to_be_bytes()],
    )
}

fn access_count_key(citizen: &PublicKey) -> Vec<u8> {
    key(b"access-n/", &[citizen.as_bytes()])
}

fn access_index_key(citizen: &PublicKey, sequence: u64) -> Vec<u8> {
    key(b"access-i/", &[citizen.as_bytes(), &sequence.to_be_bytes()])
}

pub fn access_key(transaction_id: &Digest) -> Vec<u8> {
    key(b"access-tx/", &[transaction_id.as_bytes()])
}

pub fn blob_reference_key(cid: &str) -> Vec<u8> {
    key(b"blob-ref/", &[cid.as_bytes()])
}

/// Marks the CID of a replaced attribute value: still personal data, so
/// never released without an access (and no access can name it), never
/// declared again; garbage collection may remove the bytes.
fn retired_blob_key(cid: &str) -> Vec<u8> {
    key(b"blob-retired/", &[cid.as_bytes()])
}

/// Whether the CID is, or was, a citizen's attribute value. Such a blob is
/// released only under a recorded access.
pub fn blob_is_personal(state: &impl StateRead, cid: &str) -> Result<bool, StateError> {
    Ok(state.get(&blob_reference_key(cid))?.is_some()
        || state.get(&retired_blob_key(cid))?.is_some())
}

// ----- reads --------------------------------------------------------------

pub fn read_identity(
    state: &impl StateRead,
    citizen: &PublicKey,
) -> Result<Option<IdentityRecord>, StateError> {
    read_message(state, &identity_key(citizen), "identity")
}

pub fn read_attribute(
    state: &impl StateRead,
    citizen: &PublicKey,
    name: &str,
) -> Result<Option<AttributeRecord>, StateError> {
    read_message(state, &attribute_key(citizen, name), "attribute")
}

/// The names a citizen has declared, in declaration order.
pub fn attribute_names(
    state: &impl StateRead,
    citizen: &PublicKey,
) -> Result<Vec<String>, StateError> {
    Ok(match state.get(&attribute_names_key(citizen))? {
        None => Vec::new(),
        Some(bytes) => String::from_utf8_lossy(&bytes)
            .split('\n')
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

pub fn read_attestation(
    state: &impl StateRead,
    citizen: &PublicKey,
    name: &str,
    department: &str,
) -> Result<Option<AttestationRecord>, StateError> {
    read_message(
        state,
        &attestation_key(citizen, name, department),
        "attestation",
    )
}

/// Attestations of the attribute's current value (stale ones, of an
/// earlier commitment, are left out), by departments allowed to attest it.
pub fn current_attestations(
    state: &impl StateRead,
    departments: &Departments,
    attribute: &AttributeRecord,
    citizen: &PublicKey,
) -> Result<Vec<AttestationRecord>, StateError> {
    let mut found = Vec::new();
    for department in departments
        .iter()
        .filter(|d| d.attests.contains(&attribute.name))
    {
        if let Some(record) = read_attestation(state, citizen, &attribute.name, &department.name)?
            && record.commitment == attribute.commitment
        {
            found.push(record);
        }
    }
    Ok(found)
}

/// Whether an attestation counts at `now_ms`.
pub fn attestation_valid(record: &AttestationRecord, now_ms: u64) -> bool {
    !record.revoked && (record.expires_ms == 0 || record.expires_ms > now_ms)
}

pub fn read_consent(
    state: &impl StateRead,
    consent_id: &Digest,
) -> Result<Option<ConsentRecord>, StateError> {
    read_message(state, &consent_key(consent_id), "consent")
}

/// A citizen's consents, oldest first.
pub fn consents(
    state: &impl StateRead,
    citizen: &PublicKey,
) -> Result<Vec<ConsentRecord>, StateError> {
    let count = read_u64(state, &consent_count_key(citizen), "consent count")?;
    let mut records = Vec::new();
    for sequence in 1..=count {
        let Some(id) = state.get(&consent_index_key(citizen, sequence))? else {
            continue;
        };
        let id = Digest::from_slice(&id).map_err(|err| StateError::Corrupt {
            key: "consent index".into(),
            reason: err.to_string(),
        })?;
        if let Some(record) = read_consent(state, &id)? {
            records.push(record);
        }
    }
    Ok(records)
}

pub fn read_access(
    state: &impl StateRead,
    transaction_id: &Digest,
) -> Result<Option<AccessRecord>, StateError> {
    read_message(state, &access_key(transaction_id), "access")
}

/// Every recorded access to a citizen's data, oldest first.
pub fn accesses(
    state: &impl StateRead,
    citizen: &PublicKey,
) -> Result<Vec<AccessRecord>, StateError> {
    let (records, _) = accesses_page(state, citizen, 1, usize::MAX)?;
    Ok(records)
}

/// At most `limit` of a citizen's recorded accesses, oldest first, from
/// the one numbered `first` (accesses are numbered from 1 in the order
/// they were recorded), and the number the next page starts at, or `None`
/// after the last access.
pub fn accesses_page(
    state: &impl StateRead,
    citizen: &PublicKey,
    first: u64,
    limit: usize,
) -> Result<(Vec<AccessRecord>, Option<u64>), StateError> {
    accesses_page_where(state, citizen, first, limit, |_| true)
}

/// As [`accesses_page`], counting and returning only the accesses `keep`
/// accepts (e.g. one department's own): a page is full with `limit` kept
/// accesses, so every page but the last holds some.
pub fn accesses_page_where(
    state: &impl StateRead,
    citizen: &PublicKey,
    first: u64,
    limit: usize,
    keep: impl Fn(&AccessRecord) -> bool,
) -> Result<(Vec<AccessRecord>, Option<u64>), StateError> {
    let count = read_u64(state, &access_count_key(citizen), "access count")?;
    let mut records = Vec::new();
    let mut sequence = first.max(1);
    while sequence <= count {
        if records.len() == limit {
            return Ok((records, Some(sequence)));
        }
        let index = state.get(&access_index_key(citizen, sequence))?;
        sequence += 1;
        let Some(id) = index else {
            continue;
        };
        let id = Digest::from_slice(&id).map_err(|err| StateError::Corrupt {
            key: "access index".into(),
            reason: err.to_string(),
        })?;
        let record = match read_access(state, &id)? {
            Some(record) => Some(record),
            None => read_message(state, &refused_access_key(&id), "refused access")?,
        };
        if let Some(record) = record
            && keep(&record)
        {
            records.push(record);
        }
    }
    Ok((records, None))
}

/// The citizen and attribute whose sealed blob has this CID, if any: such
/// a blob is released only under a recorded access.
pub fn blob_reference(
    state: &impl StateRead,
    cid: &str,
) -> Result<Option<(PublicKey, String)>, StateError> {
    let Some(bytes) = state.get(&blob_reference_key(cid))? else {
        return Ok(None);
    };
    let corrupt = |reason: String| StateError::Corrupt {
        key: format!("blob-ref/{cid}"),
        reason,
    };
    if bytes.len() < PublicKey::LEN {
        return Err(corrupt(format!("{} bytes", bytes.len())));
    }
    let (key, name) = bytes.split_at(PublicKey::LEN);
    let key = PublicKey::from_slice(key).map_err(|err| corrupt(err.to_string()))?;
    let name = String::from_utf8(name.to_vec()).map_err(|err| corrupt(err.to_string()))?;
    Ok(Some((key, name)))
}

// ----- execution ----------------------------------------------------------

/// What executing an identity transaction needs besides state.
pub(crate) struct Context<'a> {
    pub departments: &'a Departments,
    pub height: u64,
    /// The block's timestamp: the "now" of every expiry check.
    pub now_ms: u64,
}

fn citizen_key(bytes: &[u8]) -> Result<PublicKey, Refusal> {
    // The body was validated at admission, so this holds for every
    // transaction in a block; kept as a refusal rather than a panic.
    PublicKey::from_slice(bytes)
        .map_err(|err| Refusal::FailedPrecondition(format!("citizen key: {err}")))
}

fn require_identity<S: StateRead>(
    state: &S,
    citizen: &PublicKey,
) -> Result<Result<IdentityRecord, Refusal>, StateError> {
    Ok(read_identity(state, citizen)?
        .ok_or_else(|| Refusal::NotFound(format!("no identity {} on chain", citizen.to_did_key()))))
}

fn require_department<'d>(
    departments: &'d Departments,
    signer: &PublicKey,
    action: &str,
) -> Result<&'d Department, Refusal> {
    departments.by_key(signer).ok_or_else(|| {
        Refusal::PermissionDenied(format!(
            "signer {signer} is not a department's signing key in force, so it may not {action}"
        ))
    })
}

macro_rules! refuse_unless {
    ($result:expr) => {
        match $result {
            Ok(value) => value,
            Err(refusal) => return Ok(Err(refusal)),
        }
    };
}

pub(crate) fn create_identity<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    context: &Context<'_>,
    transaction: &VerifiedTransaction,
) -> Outcome {
    let citizen = &transaction.signer;
    if read_identity(overlay, citizen)?.is_some() {
        return Ok(Err(Refusal::AlreadyExists(format!(
            "identity {} already exists",
            citizen.to_did_key()
        ))));
    }
    let record = IdentityRecord {
        public_key: citizen.as_bytes().to_vec(),
        did: citizen.to_did_key(),
        created_height: context.height,
        created_ms: context.now_ms,
        transaction_id: transaction.id.to_vec(),
    };
    overlay.put(identity_key(citizen), record.encode_to_vec());
    Ok(Ok(()))
}

pub(crate) fn declare_attribute<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    context: &Context<'_>,
    transaction: &VerifiedTransaction,
    declare: &DeclareAttribute,
) -> Outcome {
    let citizen = &transaction.signer;
    refuse_unless!(require_identity(overlay, citizen)?);
    let Some(holder) = context.departments.by_name(&declare.holder) else {
        return Ok(Err(Refusal::NotFound(format!(
            "holder {:?} is not a department",
            declare.holder
        ))));
    };
    refuse_unless!(check_receipt(
        holder,
        &transaction.envelope.chain_id,
        citizen,
        declare
    ));
    // One sealed blob is one attribute of one citizen: otherwise anyone
    // could declare a public CID as their own and have the blob released
    // under their consents.
    let retired = overlay.get(&retired_blob_key(&declare.cid))?.is_some();
    if retired
        || blob_reference(overlay, &declare.cid)?
            .is_some_and(|(owner, name)| owner != *citizen || name != declare.name)
    {
        return Ok(Err(Refusal::AlreadyExists(format!(
            "blob {} is already declared as another attribute; seal the value with a fresh salt and upload it again",
            declare.cid
        ))));
    }
    let previous = read_attribute(overlay, citizen, &declare.name)?;
    let mut names = attribute_names(overlay, citizen)?;
    if previous.is_none() {
        if names.len() >= ATTRIBUTES_MAX {
            return Ok(Err(Refusal::FailedPrecondition(format!(
                "identity {} already has {ATTRIBUTES_MAX} attributes, the most it may have",
                citizen.to_did_key()
            ))));
        }
        names.push(declare.name.clone());
        overlay.put(attribute_names_key(citizen), names.join("\n").into_bytes());
    }
    // The old blob is this attribute's alone (see above), so nothing
    // references it any more; it stays personal data.
    if let Some(previous) = &previous
        && previous.cid != declare.cid
    {
        overlay.delete(blob_reference_key(&previous.cid));
        overlay.put(retired_blob_key(&previous.cid), Vec::new());
    }
    let record = AttributeRecord {
        citizen: citizen.as_bytes().to_vec(),
        name: declare.name.clone(),
        cid: declare.cid.clone(),
        commitment: declare.commitment.clone(),
        holder: declare.holder.clone(),
        size_bytes: declare.size_bytes,
        version: previous.map_or(1, |p| p.version.saturating_add(1)),
        declared_height: context.height,
        declared_ms: context.now_ms,
        transaction_id: transaction.id.to_vec(),
    };
    overlay.put(
        attribute_key(citizen, &declare.name),
        record.encode_to_vec(),
    );
    overlay.put(
        blob_reference_key(&declare.cid),
        [citizen.as_bytes(), declare.name.as_bytes()].concat(),
    );
    Ok(Ok(()))
}

/// The declaration's `holder_receipt` must be the holder node's signature
/// of [`blob_receipt_digest`] for this blob and this citizen.
fn check_receipt(
    holder: &Department,
    chain_id: &str,
    citizen: &PublicKey,
    declare: &DeclareAttribute,
) -> Result<(), Refusal> {
    let Some(node_key) = &holder.node_key else {
        return Err(Refusal::FailedPrecondition(format!(
            "holder {:?} runs no validator node, so it holds no blobs",
            holder.name
        )));
    };
    let digest = blob_receipt_digest(
        chain_id,
        &holder.name,
        &declare.cid,
        citizen,
        declare.size_bytes,
    );
    let signed = Signature::from_slice(&declare.holder_receipt)
        .is_ok_and(|signature| node_key.verify(digest.as_bytes(), &signature).is_ok());
    if signed {
        return Ok(());
    }
    Err(Refusal::PermissionDenied(format!(
        "the declaration carries no receipt from holder {:?} for blob {} of {} bytes uploaded for {}: upload the sealed value to {:?}'s node with receipt_for_citizen set to this citizen's key, and put the receipt in holder_receipt",
        holder.name,
        declare.cid,
        declare.size_bytes,
        citizen.to_did_key(),
        holder.name
    )))
}

pub(crate) fn attest_attribute<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    context: &Context<'_>,
    transaction: &VerifiedTransaction,
    attest: &AttestAttribute,
) -> Outcome {
    let department = refuse_unless!(require_department(
        context.departments,
        &transaction.signer,
        "attest attributes"
    ));
    if !department.attests.contains(&attest.name) {
        return Ok(Err(Refusal::PermissionDenied(format!(
            "department {:?} may not attest {:?}; it may attest [{}]",
            department.name,
            attest.name,
            department
                .attests
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ))));
    }
    let citizen = refuse_unless!(citizen_key(&attest.citizen));
    refuse_unless!(require_identity(overlay, &citizen)?);
    let Some(attribute) = read_attribute(overlay, &citizen, &attest.name)? else {
        return Ok(Err(Refusal::NotFound(format!(
            "identity {} has not declared {:?}",
            citizen.to_did_key(),
            attest.name
        ))));
    };
    if attribute.commitment != attest.commitment {
        return Ok(Err(Refusal::FailedPrecondition(format!(
            "the commitment does not match the current value of {:?} (version {}); read the identity again",
            attest.name, attribute.version
        ))));
    }
    if attest.expires_ms != 0 && attest.expires_ms <= context.now_ms {
        return Ok(Err(Refusal::FailedPrecondition(format!(
            "expires_ms {} is not after the block time {}",
            attest.expires_ms, context.now_ms
        ))));
    }
    let record = AttestationRecord {
        citizen: citizen.as_bytes().to_vec(),
        name: attest.name.clone(),
        commitment: attest.commitment.clone(),
        department: department.name.clone(),
        attested_height: context.height,
        attested_ms: context.now_ms,
        expires_ms: attest.expires_ms,
        revoked: false,
        revocation_reason: String::new(),
        revoked_ms: 0,
        transaction_id: transaction.id.to_vec(),
    };
    overlay.put(
        attestation_key(&citizen, &attest.name, &department.name),
        record.encode_to_vec(),
    );
    Ok(Ok(()))
}

pub(crate) fn revoke_attestation<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    context: &Context<'_>,
    transaction: &VerifiedTransaction,
    revoke: &RevokeAttestation,
) -> Outcome {
    let department = refuse_unless!(require_department(
        context.departments,
        &transaction.signer,
        "revoke attestations"
    ));
    let citizen = refuse_unless!(citizen_key(&revoke.citizen));
    let Some(mut record) = read_attestation(overlay, &citizen, &revoke.name, &department.name)?
    else {
        return Ok(Err(Refusal::NotFound(format!(
            "department {:?} has no attestation of {:?} for {}",
            department.name,
            revoke.name,
            citizen.to_did_key()
        ))));
    };
    if record.revoked {
        return Ok(Err(Refusal::FailedPrecondition(format!(
            "the attestation of {:?} was already revoked at {} ms",
            revoke.name, record.revoked_ms
        ))));
    }
    record.revoked = true;
    record.revocation_reason = revoke.reason.clone();
    record.revoked_ms = context.now_ms;
    overlay.put(
        attestation_key(&citizen, &revoke.name, &department.name),
        record.encode_to_vec(),
    );
    Ok(Ok(()))
}

pub(crate) fn grant_consent<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    context: &Context<'_>,
    transaction: &VerifiedTransaction,
    grant: &GrantConsent,
) -> Outcome {
    let citizen = &transaction.signer;
    refuse_unless!(require_identity(overlay, citizen)?);
    if context.departments.by_name(&grant.department).is_none() {
        return Ok(Err(Refusal::NotFound(format!(
            "no department {:?} on this chain",
            grant.department
        ))));
    }
    if grant.expires_ms <= context.now_ms {
        return Ok(Err(Refusal::FailedPrecondition(format!(
            "the consent would expire at {} ms, which is not after the block time {} ms",
            grant.expires_ms, context.now_ms
        ))));
    }
    let count = read_u64(overlay, &consent_count_key(citizen), "consent count")?;
    let sequence = count.saturating_add(1);
    let record = ConsentRecord {
        consent_id: transaction.id.to_vec(),
        citizen: citizen.as_bytes().to_vec(),
        department: grant.department.clone(),
        attributes: grant.attributes.clone(),
        purpose: grant.purpose.clone(),
        granted_ms: context.now_ms,
        expires_ms: grant.expires_ms,
        jurisdiction: grant.jurisdiction.clone(),
        granted_height: context.height,
        revoked: false,
        revoked_ms: 0,
    };
    overlay.put(consent_key(&transaction.id), record.encode_to_vec());
    overlay.put(consent_count_key(citizen), sequence.to_be_bytes().to_vec());
    overlay.put(
        consent_index_key(citizen, sequence),
        transaction.id.to_vec(),
    );
    Ok(Ok(()))
}

pub(crate) fn revoke_consent<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    context: &Context<'_>,
    transaction: &VerifiedTransaction,
    revoke: &RevokeConsent,
) -> Outcome {
    let id = refuse_unless!(
        Digest::from_slice(&revoke.consent_id)
            .map_err(|err| Refusal::FailedPrecondition(format!("consent_id: {err}")))
    );
    let Some(mut record) = read_consent(overlay, &id)? else {
        return Ok(Err(Refusal::NotFound(format!("no consent {id}"))));
    };
    if record.citizen != transaction.signer.as_bytes() {
        return Ok(Err(Refusal::PermissionDenied(format!(
            "consent {id} was granted by another citizen; only they may revoke it"
        ))));
    }
    if record.revoked {
        return Ok(Err(Refusal::FailedPrecondition(format!(
            "consent {id} was already revoked at {} ms",
            record.revoked_ms
        ))));
    }
    record.revoked = true;
    record.revoked_ms = context.now_ms;
    overlay.put(consent_key(&id), record.encode_to_vec());
    Ok(Ok(()))
}

/// The access rule (see the module invariant): returns the attribute and
/// the consent that allow `signer` to read `access.attribute` at
/// `now_ms`, or why not.
pub fn check_access(
    state: &impl StateRead,
    departments: &Departments,
    signer: &PublicKey,
    access: &RecordAccess,
    now_ms: u64,
) -> Result<Result<(AttributeRecord, ConsentRecord), Refusal>, StateError> {
    let department = refuse_unless!(require_department(
        departments,
        signer,
        "read citizens' attributes"
    ));
    let citizen = refuse_unless!(citizen_key(&access.citizen));
    refuse_unless!(require_identity(state, &citizen)?);
    let Some(attribute) = read_attribute(state, &citizen, &access.attribute)? else {
        return Ok(Err(Refusal::NotFound(format!(
            "identity {} has not declared {:?}",
            citizen.to_did_key(),
            access.attribute
        ))));
    };
    let id = refuse_unless!(
        Digest::from_slice(&access.consent_id)
            .map_err(|err| Refusal::PermissionDenied(format!("consent_id: {err}")))
    );
    let Some(consent) = read_consent(state, &id)? else {
        return Ok(Err(Refusal::PermissionDenied(format!(
            "no consent {id} on chain"
        ))));
    };
    let denied = |reason: String| Ok(Err(Refusal::PermissionDenied(reason)));
    if consent.citizen != citizen.as_bytes() {
        return denied(format!(
            "consent {id} was granted by another citizen, not {}",
            citizen.to_did_key()
        ));
    }
    if consent.department != department.name {
        return denied(format!(
            "consent {id} is for department {:?}, not {:?}",
            consent.department, department.name
        ));
    }
    if consent.revoked {
        return denied(format!(
            "consent {id} was revoked at {} ms",
            consent.revoked_ms
        ));
    }
    if consent.expires_ms <= now_ms {
        return denied(format!("consent {id} expired at {} ms", consent.expires_ms));
    }
    if !consent.attributes.contains(&access.attribute) {
        return denied(format!(
            "consent {id} does not cover {:?}; it covers [{}]",
            access.attribute,
            consent.attributes.join(", ")
        ));
    }
    if consent.purpose != access.purpose {
        return denied(format!(
            "consent {id} is for purpose {:?}, not {:?}",
            consent.purpose, access.purpose
        ));
    }
    Ok(Ok((attribute, consent)))
}

/// Refused reads one department may leave in one citizen's access log per
/// UTC day (by block time); later ones still fail, unlogged, so that a
/// department cannot flood a citizen's log.
pub const REFUSALS_LOGGED_PER_DAY_MAX: u64 = 32;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

fn refusal_count_key(citizen: &PublicKey, department: &str, day: u64) -> Vec<u8> {
    key(
        b"access-refused-n/",
        &[
            citizen.as_bytes(),
            &name_part(department),
            &day.to_be_bytes(),
        ],
    )
}

/// Where a refused read's record lives: apart from `access-tx/`, which is
/// what a holder checks before releasing a blob, so a refusal can never be
/// mistaken for an access.
fn refused_access_key(transaction_id: &Digest) -> Vec<u8> {
    key(b"access-refused/", &[transaction_id.as_bytes()])
}

/// The citizen and department a refused `RecordAccess` is logged for, if
/// it is: signed by a genesis department, naming a citizen with an
/// identity, within [`REFUSALS_LOGGED_PER_DAY_MAX`]. A node admits such a
/// transaction even though its rule refuses it, so that the attempt is
/// ordered and the citizen sees who tried.
pub fn refusal_logged_for(
    state: &impl StateRead,
    departments: &Departments,
    signer: &PublicKey,
    access: &RecordAccess,
    now_ms: u64,
) -> Result<Option<(PublicKey, String)>, StateError> {
    let Some(department) = departments.by_key(signer) else {
        return Ok(None);
    };
    let Ok(citizen) = PublicKey::from_slice(&access.citizen) else {
        return Ok(None);
    };
    if read_identity(state, &citizen)?.is_none() {
        return Ok(None);
    }
    let day = now_ms / DAY_MS;
    let logged = read_u64(
        state,
        &refusal_count_key(&citizen, &department.name, day),
        "refusal count",
    )?;
    Ok((logged < REFUSALS_LOGGED_PER_DAY_MAX).then(|| (citizen, department.name.clone())))
}

/// Appends a refused read to the citizen's access log (see
/// [`refusal_logged_for`]): the one case where a transaction that fails its
/// rule writes more than its nonce.
fn log_refusal<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    context: &Context<'_>,
    transaction: &VerifiedTransaction,
    access: &RecordAccess,
) -> Result<(), StateError> {
    let Some((citizen, department)) = refusal_logged_for(
        overlay,
        context.departments,
        &transaction.signer,
        access,
        context.now_ms,
    )?
    else {
        return Ok(());
    };
    let count_key = refusal_count_key(&citizen, &department, context.now_ms / DAY_MS);
    let logged = read_u64(overlay, &count_key, "refusal count")?;
    overlay.put(count_key, logged.saturating_add(1).to_be_bytes().to_vec());
    let record = AccessRecord {
        citizen: access.citizen.clone(),
        attribute: access.attribute.clone(),
        department,
        consent_id: access.consent_id.clone(),
        purpose: access.purpose.clone(),
        cid: String::new(),
        accessed_ms: context.now_ms,
        block_height: context.height,
        transaction_id: transaction.id.to_vec(),
        sequence: 0,
        refused: true,
        // Not the refusal's text: state is hashed into the state root, and
        // a message's wording (and how a toolchain escapes the strings it
        // quotes) must never be consensus. Readers take the text from the
        // transaction's result (the node's `with_refusal_text`).
        refusal: String::new(),
    };
    append_to_log(
        overlay,
        &citizen,
        refused_access_key(&transaction.id),
        record,
        &transaction.id,
    )
}

/// Appends `record` to the citizen's access log under `record_key`, as the
/// next entry (its `sequence` is set here).
fn append_to_log<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    citizen: &PublicKey,
    record_key: Vec<u8>,
    mut record: AccessRecord,
    transaction_id: &Digest,
) -> Result<(), StateError> {
    let sequence = read_u64(overlay, &access_count_key(citizen), "access count")?.saturating_add(1);
    record.sequence = sequence;
    overlay.put(record_key, record.encode_to_vec());
    overlay.put(access_count_key(citizen), sequence.to_be_bytes().to_vec());
    overlay.put(access_index_key(citizen, sequence), transaction_id.to_vec());
    Ok(())
}

pub(crate) fn record_access<S: StateRead>(
    overlay: &mut Overlay<'_, S>,
    context: &Context<'_>,
    transaction: &VerifiedTransaction,
    access: &RecordAccess,
) -> Outcome {
    let checked = check_access(
        overlay,
        context.departments,
        &transaction.signer,
        access,
        context.now_ms,
    )?;
    let (attribute, consent) = match checked {
        Ok(allowed) => allowed,
        Err(refusal) => {
            log_refusal(overlay, context, transaction, access)?;
            return Ok(Err(refusal));
        }
    };
    let citizen = refuse_unless!(citizen_key(&access.citizen));
    let record = AccessRecord {
        citizen: access.citizen.clone(),
        attribute: access.attribute.clone(),
        department: consent.department,
        consent_id: consent.consent_id,
        purpose: access.purpose.clone(),
        cid: attribute.cid,
        accessed_ms: context.now_ms,
        block_height: context.height,
        transaction_id: transaction.id.to_vec(),
        sequence: 0,
        refused: false,
        refusal: String::new(),
    };
    append_to_log(
        overlay,
        &citizen,
        access_key(&transaction.id),
        record,
        &transaction.id,
    )?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests;
