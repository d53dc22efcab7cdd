//! `IdentityService`: reads of identities and access logs (disclosed as
//! `exec::identity::disclosure` rules: everything to the citizen's signed
//! request, a department's share to a department), consented attribute
//! reads that are recorded on chain before any byte leaves, and QR-code
//! login.
//!
//! **Invariant:** `ReadAttribute` sends no byte of an attribute before the
//! caller's `RecordAccess` transaction has committed with success.
//!
//! **Invariant:** a login challenge verifies at most once: the first
//! correctly signed answer consumes it; it expires after its TTL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use govchain_crypto::{Digest, PublicKey, Signature};
use govchain_exec::identity::disclosure::{
    CitizenRead, CitizenRequestError, Reader, access_log_disclosure, check_citizen_request,
    identity_disclosure,
};
use govchain_exec::identity::{
    accesses_page_where, attestation_valid, attribute_names, check_access, consents,
    current_attestations, read_access, read_attribute, read_identity, valid_attribute_name,
};
use govchain_pki::TlsIdentity;
use govchain_proto::identity::v1::identity_service_server::IdentityService;
use govchain_proto::identity::v1::*;
use govchain_proto::types::v1::{
    AccessRecord, TransactionOutcome, TransactionResult, transaction::Body,
};
use tonic::{Request, Response, Status};
use tracing::info;

use crate::blob_service::ensure_local;
use crate::blobs::{parse_cid, stream_blob};
use crate::chain_state::LedgerState;
use crate::errors;
use crate::errors::internal;
use crate::service::NodeApi;
use crate::shared::Shared;
use crate::tls::department_caller;

/// How long `ReadAttribute` waits for its access to commit.
pub const ACCESS_COMMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Login challenges outstanding at once on one node.
pub const LOGIN_CHALLENGES_MAX: usize = 10_000;
/// Login challenges one relying department may have outstanding on one
/// node, so that one department cannot use up the node's room for all.
pub const LOGIN_CHALLENGES_PER_DEPARTMENT_MAX: usize = LOGIN_CHALLENGES_MAX / 4;
/// Default and longest lifetime of a login challenge.
pub const LOGIN_TTL_DEFAULT_SECS: u32 = 120;
pub const LOGIN_TTL_MAX_SECS: u32 = 600;
/// How long a login session (a login with `account_scope`) reads the
/// citizen's own record.
pub const LOGIN_SESSION_TTL_MS: u64 = 15 * 60 * 1000;
/// Login sessions open at once on one node.
pub const LOGIN_SESSIONS_MAX: usize = 10_000;
/// Longest callback URL of a login payload.
pub const LOGIN_CALLBACK_BYTES_MAX: usize = 256;
/// Attributes one login may ask for.
pub const LOGIN_ATTRIBUTES_MAX: usize = 16;
/// The prefix of every login payload, and the domain the device signs in.
pub const LOGIN_PAYLOAD_PREFIX: &str = "govchain-login:v1?";
pub const LOGIN_SIGNING_DOMAIN: &str = "govchain/login/v1\n";

struct Challenge {
    payload: String,
    relying_party: String,
    expires_ms: u64,
    used: bool,
}

/// Records a new challenge after forgetting the expired ones, unless the
/// node or the challenge's relying department has no room left.
fn add_challenge(
    challenges: &mut HashMap<[u8; 16], Challenge>,
    nonce: [u8; 16],
    challenge: Challenge,
    now_ms: u64,
) -> Result<(), Status> {
    challenges.retain(|_, outstanding| outstanding.expires_ms > now_ms);
    if challenges.len() >= LOGIN_CHALLENGES_MAX {
        return Err(errors::limit_reached(
            "LOGIN_CHALLENGES_MAX",
            format!("{LOGIN_CHALLENGES_MAX} login challenges are outstanding; retry later"),
        ));
    }
    let department = &challenge.relying_party;
    let of_department = challenges
        .values()
        .filter(|outstanding| outstanding.relying_party == *department)
        .count();
    if of_department >= LOGIN_CHALLENGES_PER_DEPARTMENT_MAX {
        return Err(errors::limit_reached(
            "LOGIN_CHALLENGES_PER_DEPARTMENT_MAX",
            format!(
                "department {department} has {of_department} unexpired login challenges on this \
                 node, the most one department may; retry when some expire"
            ),
        ));
    }
    challenges.insert(nonce, challenge);
    Ok(())
}

/// A citizen's leave to a department to read the citizen's own record,
/// given by signing a login payload with `scope=account`.
struct LoginSession {
    citizen: PublicKey,
    relying_party: String,
    expires_ms: u64,
}

#[derive(Clone)]
pub struct IdentityApi {
    node: NodeApi,
    challenges: Arc<Mutex<HashMap<[u8; 16], Challenge>>>,
    sessions: Arc<Mutex<HashMap<String, LoginSession>>>,
}

impl IdentityApi {
    pub fn new(node: NodeApi) -> Self {
        Self {
            node,
            challenges: Arc::new(Mutex::new(HashMap::new())),
            sessions: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, LoginSession>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens a login session after forgetting the expired ones.
    fn open_session(
        &self,
        citizen: PublicKey,
        relying_party: &str,
        now_ms: u64,
    ) -> Result<(String, u64), Status> {
        let mut token = [0u8; 32];
        getrandom::fill(&mut token)
            .map_err(|err| internal("the random number generator failed", err))?;
        let token = hex::encode(token);
        let expires_ms = now_ms + LOGIN_SESSION_TTL_MS;
        let mut sessions = self.sessions();
        sessions.retain(|_, session| session.expires_ms > now_ms);
        if sessions.len() >= LOGIN_SESSIONS_MAX {
            return Err(errors::limit_reached(
                "LOGIN_SESSIONS_MAX",
                format!("{LOGIN_SESSIONS_MAX} login sessions are open; retry later"),
            ));
        }
        sessions.insert(
            token.clone(),
            LoginSession {
                citizen,
                relying_party: relying_party.to_owned(),
                expires_ms,
            },
        );
        Ok((token, expires_ms))
    }

    /// Checks the login signature, then consumes the challenge (a
    /// concurrent answer may have won).
    fn verify_and_consume(
        &self,
        key: &PublicKey,
        signature: &Signature,
        payload: &str,
        nonce: &[u8; 16],
    ) -> Result<(), Status> {
        let signed = [LOGIN_SIGNING_DOMAIN.as_bytes(), payload.as_bytes()].concat();
        key.verify(&signed, signature).map_err(|_| {
            errors::unauthenticated(format!(
                "the signature does not verify for {}",
                key.to_did_key()
            ))
        })?;
        let mut challenges = self.challenges();
        match challenges.get_mut(nonce) {
            Some(challenge) if !challenge.used => {
                challenge.used = true;
                Ok(())
            }
            _ => Err(errors::already_exists(
                "the login challenge was already used; show a new QR code",
            )),
        }
    }

    /// Who reads: the citizen when `login_session` is the caller's open
    /// session for this citizen, else as [`reader_of`] decides.
    #[allow(clippy::too_many_arguments)]
    fn reader<'a>(
        &self,
        caller: &'a TlsIdentity,
        read: CitizenRead,
        citizen: &PublicKey,
        request_time_ms: u64,
        signature: &[u8],
        login_session: &str,
        now_ms: u64,
    ) -> Result<Reader<'a>, Status> {
        if login_session.is_empty() {
            return reader_of(
                self.shared(),
                caller,
                read,
                citizen,
                request_time_ms,
                signature,
                now_ms,
            );
        }
        if request_time_ms != 0 || !signature.is_empty() {
            return Err(errors::invalid_argument(
                "give either login_session or request_time_ms and citizen_signature, not both",
            ));
        }
        let sessions = self.sessions();
        let session = sessions
            .get(login_session)
            .filter(|session| session.expires_ms > now_ms)
            .ok_or_else(|| {
                errors::unauthenticated(
                    "unknown or expired login session: the citizen must log in again",
                )
            })?;
        if session.relying_party != caller.department || session.citizen != *citizen {
            return Err(errors::permission_denied(format!(
                "the login session is not {}'s with department {:?}",
                citizen.to_did_key(),
                caller.department
            )));
        }
        Ok(Reader::Citizen)
    }

    fn shared(&self) -> &Shared {
        &self.node.shared
    }

    fn challenges(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 16], Challenge>> {
        self.challenges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until `id` is committed and returns whether it succeeded (with
    /// the error text if not).
    async fn wait_committed(&self, id: &Digest) -> Result<Result<(), String>, Status> {
        let mut blocks = self.shared().blocks.subscribe();
        let deadline = tokio::time::Instant::now() + ACCESS_COMMIT_TIMEOUT;
        loop {
            if let Some(location) = self
                .shared()
                .ledger
                .transaction(id)
                .map_err(crate::errors::ledger_read)?
            {
                let result =
                    <govchain_proto::types::v1::TransactionResult as prost::Message>::decode(
                        location.result.as_slice(),
                    )
                    .map_err(|err| internal("stored result does not decode", err))?;
                return Ok(if result.outcome == TransactionOutcome::Success as i32 {
                    Ok(())
                } else {
                    Err(result.error)
                });
            }
            // Wake on the next block, or poll now and then in case the
            // subscription lagged.
            let wait = tokio::time::timeout(Duration::from_millis(200), blocks.recv());
            if tokio::time::Instant::now() >= deadline {
                return Err(errors::deadline_exceeded(format!(
                    "access {id} did not commit within {} s; it may still commit: retry with the same envelope",
                    ACCESS_COMMIT_TIMEOUT.as_secs()
                )));
            }
            if let Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) = wait.await {
                return Err(errors::unavailable(
                    "the node is shutting down",
                    errors::RETRY_AFTER_DEFAULT,
                ));
            }
        }
    }
}

fn citizen_from(public_key: &[u8], did: &str) -> Result<PublicKey, Status> {
    if !public_key.is_empty() {
        return PublicKey::from_slice(public_key)
            .map_err(|err| errors::invalid_argument(format!("public_key: {err}")));
    }
    if !did.is_empty() {
        return PublicKey::from_did_key(did)
            .map_err(|err| errors::invalid_argument(format!("did: {err}")));
    }
    Err(errors::invalid_argument(
        "give the citizen's public_key or did",
    ))
}

/// The fields of a login payload, in the order they are written.
struct LoginPayload {
    chain: String,
    relying_party: String,
    website: String,
    nonce: [u8; 16],
    attributes: Vec<String>,
    expires_ms: u64,
    /// Where the device posts its answer; empty for none.
    callback: String,
    /// `scope=account`: the citizen lets the relying party read the
    /// citizen's own record while the login lasts.
    account_scope: bool,
    /// `as=officer`: an officer of the relying party logs in.
    officer: bool,
}

impl LoginPayload {
    fn to_text(&self) -> String {
        let mut text = format!(
            "{LOGIN_PAYLOAD_PREFIX}chain={}&rp={}&site={}&nonce={}&attrs={}&exp={}",
            self.chain,
            self.relying_party,
            self.website,
            hex::encode(self.nonce),
            self.attributes.join(","),
            self.expires_ms
        );
        if !self.callback.is_empty() {
            text.push_str("&cb=");
            text.push_str(&self.callback);
        }
        if self.account_scope {
            text.push_str("&scope=account");
        }
        if self.officer {
            text.push_str("&as=officer");
        }
        text
    }

    fn parse(text: &str) -> Result<Self, Status> {
        let invalid = |reason: &str| {
            errors::invalid_argument(format!(
                "qr_payload is not a govchain login payload: {reason}"
            ))
        };
        let query = text
            .strip_prefix(LOGIN_PAYLOAD_PREFIX)
            .ok_or_else(|| invalid("wrong prefix"))?;
        let mut fields = HashMap::new();
        for pair in query.split('&') {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| invalid("a field has no '='"))?;
            if fields.insert(key, value).is_some() {
                return Err(invalid("a field appears twice"));
            }
        }
        let field = |name: &str| {
            fields
                .get(name)
                .copied()
                .ok_or_else(|| invalid(&format!("no {name} field")))
        };
        let nonce: [u8; 16] = hex::decode(field("nonce")?)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| invalid("nonce is not 32 hex characters"))?;
        let attributes = match field("attrs")? {
            "" => Vec::new(),
            list => list.split(',').map(str::to_owned).collect(),
        };
        Ok(Self {
            chain: field("chain")?.to_owned(),
            relying_party: field("rp")?.to_owned(),
            website: field("site")?.to_owned(),
            nonce,
            attributes,
            expires_ms: field("exp")?
                .parse()
                .map_err(|_| invalid("exp is not a number"))?,
            callback: fields.get("cb").copied().unwrap_or_default().to_owned(),
            account_scope: match fields.get("scope").copied() {
                None => false,
                Some("account") => true,
                Some(_) => return Err(invalid("scope is not \"account\"")),
            },
            officer: match fields.get("as").copied() {
                None => false,
                Some("officer") => true,
                Some(_) => return Err(invalid("as is not \"officer\"")),
            },
        })
    }
}

/// A login callback: an https URL of URL-safe characters that need no
/// escaping in the payload (no '&', '=' or '?').
fn valid_callback(url: &str) -> bool {
    url.is_empty()
        || (url.len() <= LOGIN_CALLBACK_BYTES_MAX
            && url.starts_with("https://")
            && url
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:/_".contains(&b)))
}

fn valid_website(website: &str) -> bool {
    website.len() <= 128
        && website
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:/".contains(&b))
}

/// Who asks for a citizen's record: the citizen, if the request carries
/// the citizen's valid signature (see `identity::disclosure`), else the
/// department of the caller's certificate.
fn reader_of<'a>(
    shared: &Shared,
    caller: &'a TlsIdentity,
    read: CitizenRead,
    citizen: &PublicKey,
    request_time_ms: u64,
    signature: &[u8],
    now_ms: u64,
) -> Result<Reader<'a>, Status> {
    match (request_time_ms, signature.is_empty()) {
        (0, true) => return Ok(Reader::Department(&caller.department)),
        (0, false) | (_, true) => {
            return Err(errors::invalid_argument(
                "give both request_time_ms and citizen_signature for the citizen's own request, \
                 or neither to ask as your department",
            ));
        }
        _ => {}
    }
    check_citizen_request(
        shared.chain_id(),
        read,
        citizen,
        request_time_ms,
        signature,
        now_ms,
    )
    .map_err(|err| match err {
        CitizenRequestError::Malformed { .. } => errors::invalid_argument(err.to_string()),
        CitizenRequestError::BadSignature { .. } => errors::unauthenticated(err.to_string()),
        CitizenRequestError::OutsideWindow { .. } => errors::failed_precondition(err.to_string()),
        _ => errors::invalid_argument(err.to_string()),
    })?;
    Ok(Reader::Citizen)
}

fn require_department_node(shared: &Shared, caller: &TlsIdentity) -> Result<(), Status> {
    if caller.department == shared.name {
        return Ok(());
    }
    Err(errors::permission_denied(format!(
        "this is {:?}'s node; department {:?} must call its own node",
        shared.name, caller.department
    )))
}

#[tonic::async_trait]
impl IdentityService for IdentityApi {
    async fn get_identity(
        &self,
        request: Request<GetIdentityRequest>,
    ) -> Result<Response<GetIdentityResponse>, Status> {
        let caller = department_caller(&request)?;
        let request = request.into_inner();
        let citizen = citizen_from(&request.public_key, &request.did)?;
        let shared = self.shared();
        let now = crate::clock::now_ms();
        let reader = self.reader(
            &caller,
            CitizenRead::GetIdentity,
            &citizen,
            request.request_time_ms,
            &request.citizen_signature,
            &request.login_session,
            now,
        )?;
        let state = LedgerState(&shared.ledger);
        let read_failed = |err| internal("state read failed", err);
        let identity = read_identity(&state, &citizen)
            .map_err(read_failed)?
            .ok_or_else(|| {
                errors::not_found_plain(format!("no identity {} on chain", citizen.to_did_key()))
            })?;
        let citizen_consents = consents(&state, &citizen).map_err(read_failed)?;
        let shown = identity_disclosure(
            &shared.departments(),
            reader,
            &citizen,
            &citizen_consents,
            now,
        )
        .map_err(|refusal| errors::permission_denied(refusal.to_string()))?;
        let mut attributes = Vec::new();
        for name in attribute_names(&state, &citizen).map_err(read_failed)? {
            if !shown.shows_attribute(&name) {
                continue;
            }
            let Some(attribute) = read_attribute(&state, &citizen, &name).map_err(read_failed)?
            else {
                continue;
            };
            let attestations =
                current_attestations(&state, &shared.departments(), &attribute, &citizen)
                    .map_err(read_failed)?;
            let attested = attestations.iter().any(|a| attestation_valid(a, now));
            attributes.push(AttributeState {
                attribute: Some(attribute),
                attestations,
                attested,
            });
        }
        let consents = citizen_consents
            .into_iter()
            .filter(|consent| shown.shows_consent(consent))
            .collect();
        Ok(Response::new(GetIdentityResponse {
            identity: Some(identity),
            attributes,
            consents,
        }))
    }

    async fn list_accesses(
        &self,
        request: Request<ListAccessesRequest>,
    ) -> Result<Response<ListAccessesResponse>, Status> {
        let caller = department_caller(&request)?;
        let request = request.into_inner();
        let citizen = citizen_from(&request.public_key, &request.did)?;
        let shared = self.shared();
        let reader = self.reader(
            &caller,
            CitizenRead::ListAccesses,
            &citizen,
            request.request_time_ms,
            &request.citizen_signature,
            &request.login_session,
            crate::clock::now_ms(),
        )?;
        let state = LedgerState(&shared.ledger);
        if read_identity(&state, &citizen)
            .map_err(|err| internal("state read failed", err))?
            .is_none()
        {
            return Err(errors::not_found_plain(format!(
                "no identity {} on chain",
                citizen.to_did_key()
            )));
        }
        let (first, limit) = page_request(request.page_size, &request.page_token)?;
        let shown = access_log_disclosure(reader);
        let (accesses, next) = accesses_page_where(&state, &citizen, first, limit, |access| {
            shown.shows_access(access)
        })
        .map_err(|err| internal("state read failed", err))?;
        let accesses = accesses
            .into_iter()
            .map(|access| with_refusal_text(&shared.ledger, access))
            .collect::<Result<Vec<_>, Status>>()?;
        Ok(Response::new(ListAccessesResponse {
            accesses,
            next_page_token: next
                .map(|sequence| sequence.to_string())
                .unwrap_or_default(),
        }))
    }

    type ReadAttributeStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<ReadAttributeResponse, Status>> + Send>,
    >;

    async fn read_attribute(
        &self,
        request: Request<ReadAttributeRequest>,
    ) -> Result<Response<Self::ReadAttributeStream>, Status> {
        let caller = department_caller(&request)?;
        let shared = self.shared();
        require_department_node(shared, &caller)?;
        let envelope = request
            .into_inner()
            .envelope
            .ok_or_else(|| errors::invalid_argument("envelope is required"))?;
        let departments = shared.departments();
        let department = departments.by_name(&caller.department).ok_or_else(|| {
            errors::permission_denied(format!(
                "department {:?} has no signing key on chain, so it may not read attributes",
                caller.department
            ))
        })?;
        let department_key = department.public_key;
        if envelope.signer != department.public_key.as_bytes() {
            return Err(errors::permission_denied(format!(
                "the access must be signed by {:?}'s signing key, the department of your certificate",
                caller.department
            )));
        }
        let payload = <govchain_proto::types::v1::Transaction as prost::Message>::decode(
            envelope.payload.clone(),
        )
        .map_err(|err| errors::invalid_argument(format!("payload: {err}")))?;
        let Some(Body::RecordAccess(asked)) = &payload.body else {
            return Err(errors::invalid_argument(
                "ReadAttribute takes a RecordAccess transaction",
            ));
        };
        // A refused read is still ordered, so that the citizen's log shows
        // the attempt; the answer keeps the refusal's precise code.
        let refused_now = check_access(
            &LedgerState(&shared.ledger),
            &shared.departments(),
            &department_key,
            asked,
            crate::clock::now_ms(),
        )
        .map_err(|err| internal("state read failed", err))?
        .err();
        let id = govchain_exec::transaction_id(
            &envelope.chain_id,
            &envelope.signer,
            envelope.nonce,
            &envelope.payload,
        );
        // A retry after DEADLINE_EXCEEDED resubmits the same envelope: it
        // is then pending or committed, and we wait for it again.
        match self.node.submit(&caller, envelope).await {
            Ok(_) => {}
            Err(status) if status.code() == tonic::Code::AlreadyExists => {}
            Err(status) => return Err(status),
        }
        if let Err(error) = self.wait_committed(&id).await? {
            let (code, reason) = refused_now.as_ref().map_or(
                (
                    tonic::Code::PermissionDenied,
                    errors::ErrorReason::PermissionDenied,
                ),
                crate::service::refusal_reason,
            );
            info!(department = %caller.department, transaction_id = %id.short(), "refused a read; the attempt is on chain");
            return Err(errors::Failure::new(
                code,
                reason,
                format!("the access was ordered but refused: {error}"),
            )
            .status());
        }
        let state = LedgerState(&shared.ledger);
        let access = read_access(&state, &id)
            .map_err(|err| internal("state read failed", err))?
            .ok_or_else(|| internal("committed access has no record", id))?;
        // A resubmitted envelope may name an old access: it releases the
        // bytes only within the access window and while the consent still
        // holds, as a fresh one would.
        let now = crate::clock::now_ms();
        if now.saturating_sub(access.accessed_ms) > crate::blobs::ACCESS_WINDOW_MS {
            return Err(errors::permission_denied(format!(
                "access {id} is older than {} minutes; sign a new access",
                crate::blobs::ACCESS_WINDOW_MS / 60_000
            )));
        }
        let Some(Body::RecordAccess(record_access)) = payload.body else {
            return Err(internal("checked access body changed", id));
        };
        check_access(
            &state,
            &shared.departments(),
            &department_key,
            &record_access,
            now,
        )
        .map_err(|err| internal("state read failed", err))?
        .map_err(|refusal| errors::permission_denied(refusal.to_string()))?;
        let cid = parse_cid(&access.cid)?;
        let citizen = PublicKey::from_slice(&access.citizen)
            .map_err(|err| internal("stored access has a bad citizen key", err))?;
        let holder = read_attribute(&state, &citizen, &access.attribute)
            .map_err(|err| internal("state read failed", err))?
            .map(|attribute| attribute.holder)
            .unwrap_or_default();
        ensure_local(shared, &cid, &holder, id.as_bytes()).await?;
        info!(access = %id.short(), attribute = %access.attribute, department = %access.department, "releasing an attribute under a recorded access");
        let pieces = stream_blob(shared.blobs.clone(), cid, 0, 0)?;
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::map(
            pieces,
            |piece| {
                piece.map(|piece| ReadAttributeResponse {
                    offset: piece.offset,
                    data: piece.data,
                    size_bytes: piece.size_bytes,
                })
            },
        ))))
    }

    async fn create_login_challenge(
        &self,
        request: Request<CreateLoginChallengeRequest>,
    ) -> Result<Response<CreateLoginChallengeResponse>, Status> {
        let caller = department_caller(&request)?;
        let request = request.into_inner();
        if request.requested_attributes.len() > LOGIN_ATTRIBUTES_MAX {
            return Err(errors::invalid_argument(format!(
                "at most {LOGIN_ATTRIBUTES_MAX} attributes per login"
            )));
        }
        if let Some(bad) = request
            .requested_attributes
            .iter()
            .find(|name| !valid_attribute_name(name))
        {
            return Err(errors::invalid_argument(format!(
                "{bad:?} is not an attribute name"
            )));
        }
        if !valid_website(&request.website) {
            return Err(errors::invalid_argument(
                "website must be at most 128 characters of letters, digits, '.', '-', ':' and '/'",
            ));
        }
        if !valid_callback(&request.callback_url) {
            return Err(errors::invalid_argument(format!(
                "callback_url must be an https:// URL of at most {LOGIN_CALLBACK_BYTES_MAX} \
                 letters, digits, '.', '-', ':', '/' and '_'"
            )));
        }
        if request.officer && (request.account_scope || !request.requested_attributes.is_empty()) {
            return Err(errors::invalid_argument(
                "an officer login takes no requested_attributes and no account_scope",
            ));
        }
        let ttl = match request.ttl_seconds {
            0 => LOGIN_TTL_DEFAULT_SECS,
            ttl if ttl <= LOGIN_TTL_MAX_SECS => ttl,
            ttl => {
                return Err(errors::invalid_argument(format!(
                    "ttl_seconds {ttl} is over the maximum {LOGIN_TTL_MAX_SECS}"
                )));
            }
        };
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce)
            .map_err(|err| internal("the random number generator failed", err))?;
        let now = crate::clock::now_ms();
        let payload = LoginPayload {
            chain: self.shared().chain_id().to_owned(),
            relying_party: caller.department.clone(),
            website: request.website,
            nonce,
            attributes: request.requested_attributes,
            expires_ms: now + u64::from(ttl) * 1000,
            callback: request.callback_url,
            account_scope: request.account_scope,
            officer: request.officer,
        };
        let text = payload.to_text();
        let svg = qrcode::QrCode::new(text.as_bytes())
            .map_err(|err| internal("QR encoding failed", err))?
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(256, 256)
            .build();
        let challenge = Challenge {
            payload: text.clone(),
            relying_party: payload.relying_party.clone(),
            expires_ms: payload.expires_ms,
            used: false,
        };
        add_challenge(&mut self.challenges(), nonce, challenge, now)?;
        Ok(Response::new(CreateLoginChallengeResponse {
            qr_payload: text,
            qr_svg: svg,
            nonce: nonce.to_vec(),
            expires_ms: payload.expires_ms,
            relying_party: payload.relying_party,
        }))
    }

    async fn complete_login(
        &self,
        request: Request<CompleteLoginRequest>,
    ) -> Result<Response<CompleteLoginResponse>, Status> {
        let caller = department_caller(&request)?;
        let request = request.into_inner();
        let payload = LoginPayload::parse(&request.qr_payload)?;
        let shared = self.shared();
        if payload.chain != shared.chain_id() {
            return Err(errors::invalid_argument(format!(
                "the challenge is for chain {:?}, this is {:?}",
                payload.chain,
                shared.chain_id()
            )));
        }
        if payload.relying_party != caller.department {
            return Err(errors::permission_denied(format!(
                "the challenge is for relying party {:?}; only it may complete the login",
                payload.relying_party
            )));
        }
        let citizen = PublicKey::from_slice(&request.public_key)
            .map_err(|err| errors::invalid_argument(format!("public_key: {err}")))?;
        let signature = Signature::from_slice(&request.signature)
            .map_err(|err| errors::invalid_argument(format!("signature: {err}")))?;
        let now = crate::clock::now_ms();
        {
            let challenges = self.challenges();
            let challenge = challenges.get(&payload.nonce).ok_or_else(|| {
                errors::not_found_plain(
                    "unknown login challenge: it was not issued by this node, or expired long ago",
                )
            })?;
            if challenge.payload != request.qr_payload {
                return Err(errors::invalid_argument(
                    "the payload differs from the challenge this node issued",
                ));
            }
            if challenge.expires_ms <= now {
                return Err(errors::failed_precondition(format!(
                    "the login challenge expired at {} ms",
                    challenge.expires_ms
                )));
            }
            if challenge.used {
                return Err(errors::already_exists(
                    "the login challenge was already used; show a new QR code",
                ));
            }
        }
        let state = LedgerState(&shared.ledger);
        let read_failed = |err| internal("state read failed", err);
        if payload.officer {
            let officer =
                govchain_exec::approval::read_officer(&state, &payload.relying_party, &citizen)
                    .map_err(read_failed)?
                    .filter(|officer| !officer.revoked)
                    .ok_or_else(|| {
                        errors::not_found_plain(format!(
                            "{} is not an officer of department {:?}: it was never registered (RegisterOfficer), or was revoked",
                            citizen.to_did_key(),
                            payload.relying_party
                        ))
                    })?;
            self.verify_and_consume(&citizen, &signature, &request.qr_payload, &payload.nonce)?;
            info!(officer = %citizen.to_did_key(), relying_party = %payload.relying_party, role = %officer.role, "officer login completed");
            return Ok(Response::new(CompleteLoginResponse {
                did: citizen.to_did_key(),
                public_key: citizen.as_bytes().to_vec(),
                relying_party: payload.relying_party,
                officer_role: officer.role,
                ..CompleteLoginResponse::default()
            }));
        }
        let identity = read_identity(&state, &citizen)
            .map_err(read_failed)?
            .ok_or_else(|| {
                errors::not_found_plain(format!("no identity {} on chain", citizen.to_did_key()))
            })?;
        self.verify_and_consume(&citizen, &signature, &request.qr_payload, &payload.nonce)?;
        let citizen_consents = consents(&state, &citizen).map_err(read_failed)?;
        let mut claims = Vec::new();
        for name in &payload.attributes {
            let attribute = read_attribute(&state, &citizen, name)
                .map_err(read_failed)?
                .ok_or_else(|| {
                    errors::permission_denied(format!("{} has not declared {name:?}", identity.did))
                })?;
            let attested_by: Vec<String> =
                current_attestations(&state, &shared.departments(), &attribute, &citizen)
                    .map_err(read_failed)?
                    .into_iter()
                    .filter(|a| attestation_valid(a, now))
                    .map(|a| a.department)
                    .collect();
            if attested_by.is_empty() {
                return Err(errors::permission_denied(format!(
                    "{name:?} of {} is not attested by any department",
                    identity.did
                )));
            }
            let consented = citizen_consents.iter().any(|consent| {
                consent.department == payload.relying_party
                    && !consent.revoked
                    && consent.expires_ms > now
                    && consent.attributes.contains(name)
            });
            if !consented {
                return Err(errors::permission_denied(format!(
                    "{} has no valid consent letting {:?} use {name:?}",
                    identity.did, payload.relying_party
                )));
            }
            claims.push(Claim {
                name: name.clone(),
                commitment: attribute.commitment,
                cid: attribute.cid,
                attested_by,
            });
        }
        let (session, session_expires_ms) = if payload.account_scope {
            self.open_session(citizen, &payload.relying_party, now)?
        } else {
            (String::new(), 0)
        };
        info!(did = %identity.did, relying_party = %payload.relying_party, "login completed");
        Ok(Response::new(CompleteLoginResponse {
            did: identity.did,
            public_key: citizen.as_bytes().to_vec(),
            relying_party: payload.relying_party,
            claims,
            session,
            session_expires_ms,
            officer_role: String::new(),
        }))
    }
}

/// Accesses per `ListAccesses` page when the request says 0.
pub const ACCESSES_PAGE_SIZE_DEFAULT: u32 = 100;
/// The most accesses one `ListAccesses` page holds; larger requests are
/// read as this (AIP-158), so a response stays far below the message limit.
pub const ACCESSES_PAGE_SIZE_MAX: u32 = 1000;

/// The first access number and the page size a `ListAccesses` request
/// asks for. A page token is the number of the next page's first access,
/// as the previous response gave it.
fn page_request(page_size: u32, page_token: &str) -> Result<(u64, usize), Status> {
    let size = match page_size {
        0 => ACCESSES_PAGE_SIZE_DEFAULT,
        size => size.min(ACCESSES_PAGE_SIZE_MAX),
    };
    let first = if page_token.is_empty() {
        1
    } else {
        page_token
            .parse::<u64>()
            .ok()
            .filter(|first| *first >= 1)
            .ok_or_else(|| {
                errors::invalid_argument(format!(
                    "page_token {page_token:?} was not issued by this service; \
                     pass a next_page_token from a previous response, or none for the first page"
                ))
            })?
    };
    Ok((first, size as usize))
}

/// A refused attempt's reason, from its transaction's committed result:
/// world state keeps the attempt but not the text (see
/// `exec::identity::REFUSALS_LOGGED_PER_DAY_MAX`).
fn with_refusal_text(
    ledger: &govchain_ledger::Ledger,
    mut access: AccessRecord,
) -> Result<AccessRecord, Status> {
    if !access.refused || !access.refusal.is_empty() {
        return Ok(access);
    }
    let id = Digest::from_slice(&access.transaction_id)
        .map_err(|err| internal("access record has no transaction id", err))?;
    let location = ledger
        .transaction(&id)
        .map_err(crate::errors::ledger_read)?
        .ok_or_else(|| internal("refused access has no committed transaction", id))?;
    let result = <TransactionResult as prost::Message>::decode(location.result.as_slice())
        .map_err(|err| internal("stored result does not decode", err))?;
    access.refusal = result.error;
    Ok(access)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_requests_default_cap_and_refuse_foreign_tokens() {
        assert_eq!(page_request(0, "").expect("first page"), (1, 100));
        assert_eq!(page_request(5, "").expect("first page"), (1, 5));
        assert_eq!(page_request(50_000, "7").expect("later page"), (7, 1000));
        for token in ["0", "-1", "abc", "1.5"] {
            let status = page_request(10, token).expect_err("refused");
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{token}");
            assert!(status.message().contains("next_page_token"), "{token}");
        }
    }

    fn challenge(department: &str, expires_ms: u64) -> Challenge {
        Challenge {
            payload: String::new(),
            relying_party: department.into(),
            expires_ms,
            used: false,
        }
    }

    fn nonce(n: usize) -> [u8; 16] {
        (n as u128).to_be_bytes()
    }

    #[test]
    fn one_department_cannot_take_every_login_challenge() {
        let mut challenges = HashMap::new();
        for n in 0..LOGIN_CHALLENGES_PER_DEPARTMENT_MAX {
            add_challenge(&mut challenges, nonce(n), challenge("tax", 2_000), 1_000).expect("room");
        }
        let status = add_challenge(
            &mut challenges,
            nonce(0xffff),
            challenge("tax", 2_000),
            1_000,
        )
        .expect_err("tax is at its cap");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("department tax"), "{status:?}");
        // Another department still gets one.
        add_challenge(
            &mut challenges,
            nonce(0x1_0000),
            challenge("health", 5_000),
            1_000,
        )
        .expect("health has room");
        // Once tax's challenges expire, tax has room again.
        add_challenge(
            &mut challenges,
            nonce(0x1_0001),
            challenge("tax", 9_000),
            2_000,
        )
        .expect("expired ones are forgotten");
        assert_eq!(challenges.len(), 2);
    }

    #[test]
    fn the_node_wide_cap_still_holds() {
        let mut challenges = HashMap::new();
        for n in 0..LOGIN_CHALLENGES_MAX {
            let department = format!("department-{}", n % 8);
            add_challenge(
                &mut challenges,
                nonce(n),
                challenge(&department, 2_000),
                1_000,
            )
            .expect("room");
        }
        let status = add_challenge(
            &mut challenges,
            nonce(LOGIN_CHALLENGES_MAX),
            challenge("new", 2_000),
            1_000,
        )
        .expect_err("the node is full");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("retry later"), "{status:?}");
    }

    #[test]
    fn login_payload_round_trips() {
        let payload = LoginPayload {
            chain: "govchain-dev".into(),
            relying_party: "tax".into(),
            website: "tax.gov.example".into(),
            nonce: [7; 16],
            attributes: vec!["name".into(), "photo".into()],
            expires_ms: 1_700_000_000_000,
            callback: String::new(),
            account_scope: false,
            officer: false,
        };
        let text = payload.to_text();
        assert!(text.starts_with("govchain-login:v1?chain=govchain-dev&rp=tax&"));
        assert!(!text.contains("cb=") && !text.contains("scope="), "{text}");
        let parsed = LoginPayload::parse(&text).expect("parse");
        assert_eq!(parsed.to_text(), text);
        assert_eq!(parsed.attributes, ["name", "photo"]);
        assert!(!parsed.account_scope);
    }

    #[test]
    fn a_web_login_payload_names_its_callback_and_scope() {
        let payload = LoginPayload {
            chain: "govchain-dev".into(),
            relying_party: "tax".into(),
            website: "127.0.0.1:8443".into(),
            nonce: [7; 16],
            attributes: Vec::new(),
            expires_ms: 1_700_000_000_000,
            callback: "https://127.0.0.1:8443/login/callback".into(),
            account_scope: true,
            officer: false,
        };
        let text = payload.to_text();
        assert!(
            text.ends_with("&cb=https://127.0.0.1:8443/login/callback&scope=account"),
            "{text}"
        );
        let parsed = LoginPayload::parse(&text).expect("parse");
        assert_eq!(parsed.callback, payload.callback);
        assert!(parsed.account_scope);
        assert_eq!(parsed.to_text(), text);
        let officer = LoginPayload {
            account_scope: false,
            officer: true,
            ..LoginPayload::parse(&text).expect("parse")
        };
        let officer_text = officer.to_text();
        assert!(
            officer_text.ends_with("/login/callback&as=officer"),
            "{officer_text}"
        );
        assert!(LoginPayload::parse(&officer_text).expect("parse").officer);
        let as_admin = officer_text.replace("as=officer", "as=admin");
        let status = LoginPayload::parse(&as_admin).err().expect("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let other_scope = text.replace("scope=account", "scope=everything");
        let status = LoginPayload::parse(&other_scope).err().expect("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn callbacks_are_https_urls_without_query_characters() {
        assert!(valid_callback(""));
        assert!(valid_callback("https://127.0.0.1:8443/login/callback"));
        assert!(valid_callback(
            "https://portal.tax.gov.example/login/callback"
        ));
        assert!(!valid_callback("http://127.0.0.1:8443/login/callback"));
        assert!(!valid_callback("https://evil.example/cb?x=1"));
        assert!(!valid_callback("https://evil.example/cb&scope=account"));
        assert!(!valid_callback(&format!(
            "https://{}",
            "a".repeat(LOGIN_CALLBACK_BYTES_MAX)
        )));
    }

    #[test]
    fn bad_login_payloads_are_invalid_arguments() {
        for text in [
            "",
            "https://example.org",
            "govchain-login:v1?chain=a&rp=b&site=&nonce=00&attrs=&exp=1",
            "govchain-login:v1?chain=a&rp=b&site=&nonce=07070707070707070707070707070707&attrs=&exp=x",
            "govchain-login:v1?chain=a&chain=a&rp=b",
        ] {
            let status = LoginPayload::parse(text).err().expect(text);
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{text}");
        }
    }
}
