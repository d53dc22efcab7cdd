//! Who may see what of a citizen's record through the read RPCs
//! (`GetIdentity`, `ListAccesses`, `BlobService.Stat`): the pure rule, which
//! the node's handlers only ask.
//!
//! - The citizen sees everything. A request proves it comes from the
//!   citizen with a signature by the citizen's key over
//!   [`citizen_read_digest`], which binds the chain, the RPC, the citizen
//!   and a request time that a node accepts only within
//!   [`REQUEST_TIME_SKEW_MS_MAX`] of its clock ([`check_citizen_request`]).
//! - A department (the caller's TLS department) without that signature
//!   sees, of the identity record, the attributes that a currently valid
//!   consent of the citizen to it covers and those genesis lets it attest
//!   (it needs the commitment to attest), the consents granted to it (in
//!   any state: it must learn that its consent was revoked), and, of the
//!   access log, its own accesses. A department that holds no consent of
//!   the citizen, in any state, and attests nothing is refused.
//! - A personal blob's existence ([`blob_visible_to`]) is told only to its
//!   holder's department and to departments with a committed access to it
//!   or a valid consent covering its attribute.
//!
//! **Invariant:** deterministic and clock-free like the rest of `exec`:
//! "now" is an argument.
//!
//! What this does not hide: every department's node replicates the blocks,
//! whose transactions (`CreateIdentity`, `DeclareAttribute`, `GrantConsent`,
//! `RecordAccess`) name the citizen, CIDs, consents and accesses. The rule
//! limits what the query API hands out, so that a department's systems get
//! what they need to act and no more; it is not a confidentiality boundary
//! against a department that reads and indexes raw blocks.

use std::collections::BTreeSet;

use govchain_crypto::{Digest, DomainHasher, PublicKey, Signature};
use govchain_proto::types::v1::{AccessRecord, ConsentRecord};

use super::{
    Departments, Refusal, accesses, blob_is_personal, blob_reference, consents, read_attribute,
};
use crate::state::{StateError, StateRead};

/// The domain tag of a citizen's signed read request.
const DOMAIN_CITIZEN_READ: &str = "govchain/citizen-read/v1";

/// How far a signed request's `request_time_ms` may be from the node's
/// clock, either way: long enough for clocks a little apart and a slow
/// device, short enough that a captured signature is soon worthless.
pub const REQUEST_TIME_SKEW_MS_MAX: u64 = 5 * 60 * 1000;

/// The read RPCs a citizen signs requests for; the RPC's name is part of
/// what is signed, so a signature for one cannot be used for the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CitizenRead {
    GetIdentity,
    ListAccesses,
    /// `ApprovalService.GetCase`: the applicant reads its case.
    GetCase,
    /// `ApprovalService.ListCases`: the applicant lists its cases.
    ListCases,
}

impl CitizenRead {
    /// The RPC's name as the proto spells it, which is what is signed.
    pub fn rpc_name(self) -> &'static str {
        match self {
            CitizenRead::GetIdentity => "GetIdentity",
            CitizenRead::ListAccesses => "ListAccesses",
            CitizenRead::GetCase => "GetCase",
            CitizenRead::ListCases => "ListCases",
        }
    }
}

/// What a citizen signs (Ed25519 over these 32 bytes) to read its own
/// record: SHA-256 over the domain tag `govchain/citizen-read/v1`, the
/// chain id, the RPC name and the citizen's 32-byte key (each
/// length-prefixed with a big-endian u32), then `request_time_ms` as a
/// big-endian u64.
pub fn citizen_read_digest(
    chain_id: &str,
    read: CitizenRead,
    citizen: &PublicKey,
    request_time_ms: u64,
) -> Digest {
    DomainHasher::new(DOMAIN_CITIZEN_READ)
        .bytes(chain_id.as_bytes())
        .bytes(read.rpc_name().as_bytes())
        .bytes(citizen.as_bytes())
        .u64(request_time_ms)
        .finish()
}

/// Why a request that claims to be the citizen's is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CitizenRequestError {
    /// The signature field is not an Ed25519 signature.
    #[error("citizen_signature is {len} bytes; an Ed25519 signature is 64")]
    Malformed { len: usize },
    /// A well-formed signature that the citizen's key did not make over
    /// this request.
    #[error(
        "citizen_signature does not verify for {did} over this {rpc} request at request_time_ms \
         {request_time_ms}: sign the request with the citizen's own key"
    )]
    BadSignature {
        did: String,
        rpc: &'static str,
        request_time_ms: u64,
    },
    /// Signed by the citizen, but too far from the node's clock: an old
    /// (possibly captured) or post-dated request.
    #[error(
        "request_time_ms {request_time_ms} is {skew_ms} ms away from this node's clock \
         ({now_ms}); a signed request counts within {window_s} s of it: sign a new one"
    , window_s = REQUEST_TIME_SKEW_MS_MAX / 1000)]
    OutsideWindow {
        request_time_ms: u64,
        now_ms: u64,
        skew_ms: u64,
    },
}

/// Checks that `signature` is the citizen's over this request and that
/// the request time is within [`REQUEST_TIME_SKEW_MS_MAX`] of `now_ms`.
/// The signature is checked first, so that only the citizen learns that
/// its request was stale.
pub fn check_citizen_request(
    chain_id: &str,
    read: CitizenRead,
    citizen: &PublicKey,
    request_time_ms: u64,
    signature: &[u8],
    now_ms: u64,
) -> Result<(), CitizenRequestError> {
    let signature =
        Signature::from_slice(signature).map_err(|_| CitizenRequestError::Malformed {
            len: signature.len(),
        })?;
    let digest = citizen_read_digest(chain_id, read, citizen, request_time_ms);
    if citizen.verify(digest.as_bytes(), &signature).is_err() {
        return Err(CitizenRequestError::BadSignature {
            did: citizen.to_did_key(),
            rpc: read.rpc_name(),
            request_time_ms,
        });
    }
    let skew_ms = request_time_ms.abs_diff(now_ms);
    if skew_ms > REQUEST_TIME_SKEW_MS_MAX {
        return Err(CitizenRequestError::OutsideWindow {
            request_time_ms,
            now_ms,
            skew_ms,
        });
    }
    Ok(())
}

/// Who asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reader<'a> {
    /// The citizen, proven by [`check_citizen_request`].
    Citizen,
    /// A department, named by the caller's TLS certificate, without the
    /// citizen's signature.
    Department(&'a str),
}

/// What of one citizen's record a reader is shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disclosure {
    scope: Scope,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Scope {
    Everything,
    Department {
        name: String,
        attributes: BTreeSet<String>,
    },
}

impl Disclosure {
    fn everything() -> Self {
        Self {
            scope: Scope::Everything,
        }
    }

    fn department(name: &str, attributes: BTreeSet<String>) -> Self {
        Self {
            scope: Scope::Department {
                name: name.to_owned(),
                attributes,
            },
        }
    }

    /// Whether the reader sees the whole record (it is the citizen).
    pub fn is_everything(&self) -> bool {
        self.scope == Scope::Everything
    }

    /// Whether the attribute `name` (its record and attestations) is shown.
    pub fn shows_attribute(&self, name: &str) -> bool {
        match &self.scope {
            Scope::Everything => true,
            Scope::Department { attributes, .. } => attributes.contains(name),
        }
    }

    /// Whether the consent is shown: to a department, those granted to it.
    pub fn shows_consent(&self, consent: &ConsentRecord) -> bool {
        match &self.scope {
            Scope::Everything => true,
            Scope::Department { name, .. } => consent.department == *name,
        }
    }

    /// Whether the access is shown: to a department, its own.
    pub fn shows_access(&self, access: &AccessRecord) -> bool {
        match &self.scope {
            Scope::Everything => true,
            Scope::Department { name, .. } => access.department == *name,
        }
    }
}

/// Whether a consent lets its department read now: unrevoked, unexpired.
pub fn consent_in_force(consent: &ConsentRecord, now_ms: u64) -> bool {
    !consent.revoked && consent.expires_ms > now_ms
}

/// The `GetIdentity` rule: what of `citizen`'s identity `reader` sees,
/// given the citizen's `consents` (all of them, as [`consents`] reads
/// them) at `now_ms`; `PermissionDenied` for a department that holds no
/// consent of the citizen, in any state, and may attest nothing.
pub fn identity_disclosure(
    departments: &Departments,
    reader: Reader<'_>,
    citizen: &PublicKey,
    citizen_consents: &[ConsentRecord],
    now_ms: u64,
) -> Result<Disclosure, Refusal> {
    let Reader::Department(name) = reader else {
        return Ok(Disclosure::everything());
    };
    let attests = departments
        .by_name(name)
        .map(|department| department.attests.clone())
        .unwrap_or_default();
    let granted: Vec<&ConsentRecord> = citizen_consents
        .iter()
        .filter(|consent| consent.department == name)
        .collect();
    if granted.is_empty() && attests.is_empty() {
        return Err(Refusal::PermissionDenied(format!(
            "{} has granted department {name:?} no consent, and genesis lets {name:?} attest \
             none of its attributes: to read the identity, ask the citizen for a consent \
             (a GrantConsent to {name:?}), or send the request signed with the citizen's key \
             (request_time_ms and citizen_signature)",
            citizen.to_did_key()
        )));
    }
    let mut attributes = attests;
    for consent in granted {
        if consent_in_force(consent, now_ms) {
            attributes.extend(consent.attributes.iter().cloned());
        }
    }
    Ok(Disclosure::department(name, attributes))
}

/// The `ListAccesses` rule: the citizen sees every access, a department
/// its own (none, for a department that never read the citizen's data).
pub fn access_log_disclosure(reader: Reader<'_>) -> Disclosure {
    match reader {
        Reader::Citizen => Disclosure::everything(),
        Reader::Department(name) => Disclosure::department(name, BTreeSet::new()),
    }
}

/// The `Stat` rule: whether `department` may learn that this node stores
/// the blob `cid` and that it is personal. A blob no attribute names, and
/// none ever did, is anyone's to stat. A citizen's attribute blob is told
/// to the department of its holder, to a department with a committed
/// access to that blob (at any time: it has seen the bytes), and to one
/// that a consent in force at `now_ms` lets read the attribute. A replaced
/// value's blob names no holder any more, so only the department of the
/// node that stores it (`node_department`) is told.
pub fn blob_visible_to(
    state: &impl StateRead,
    department: &str,
    node_department: &str,
    cid: &str,
    now_ms: u64,
) -> Result<bool, StateError> {
    let Some((citizen, name)) = blob_reference(state, cid)? else {
        return Ok(!blob_is_personal(state, cid)? || department == node_department);
    };
    if read_attribute(state, &citizen, &name)?.is_some_and(|a| a.holder == department) {
        return Ok(true);
    }
    let consented = consents(state, &citizen)?.iter().any(|consent| {
        consent.department == department
            && consent_in_force(consent, now_ms)
            && consent.attributes.contains(&name)
    });
    if consented {
        return Ok(true);
    }
    Ok(accesses(state, &citizen)?
        .iter()
        .any(|access| access.department == department && access.cid == cid))
}
