//! `govchain identity`: citizens' identities, attributes, attestations,
//! consent, audited reads of attributes, and QR-code login.
//!
//! Every write is an ordinary signed transaction (see `types.proto`); the
//! reads go through `IdentityService`. A citizen signs with their own key
//! file, a department with the signing key genesis lists for it (a devnet
//! keeps it in `<dir>/certs/<department>/signing.key`).
//!
//! This module holds the arguments, the shared `Session` and the commands
//! on the identity itself (create, declare, attest, show, log); consents,
//! the consented read, login and the devnet demo citizen live in their own
//! modules.

mod access;
mod consent;
mod demo;
mod device;
mod login;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use govchain_crypto::{Digest, PublicKey, SigningKey};
use govchain_exec::identity::disclosure::{CitizenRead, citizen_read_digest};
use govchain_exec::identity::{attribute_commitment, valid_attribute_name};
use govchain_proto::blob::v1::UploadHeader;
use govchain_proto::identity::v1::identity_service_client::IdentityServiceClient;
use govchain_proto::identity::v1::{GetIdentityRequest, GetIdentityResponse, ListAccessesRequest};
use govchain_proto::node::v1::node_service_client::NodeServiceClient;
use govchain_proto::node::v1::{GetAccountRequest, GetStatusRequest};
use govchain_proto::types::v1::{
    AttestAttribute, AttributeRecord, CreateIdentity, DeclareAttribute, RevokeAttestation,
    SealedAttribute, Transaction, transaction::Body,
};
use prost::Message as _;
use serde::Serialize;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::client::{self, CitizenConnectArgs, ConnectArgs, rpc_error, status_line};
use crate::cmd::blob;
use crate::cmd::keys::load_signing_key;
use crate::cmd::tx::{TransactionView, parse_duration, submit_envelope, wait_for_commit};
use crate::envelope::{self, Signed};
use crate::exit::Negative;
use crate::output::{self, Fields, Table};
use crate::view::{AccessView, AttributeView, IdentityView, expiry, or_dash};

use access::AccessArgs;
use consent::{ConsentArgs, consent_table};
pub use demo::{DemoCitizen, demo_citizen};
use login::LoginArgs;

/// Salt of a sealed attribute: twice the chain's minimum of 16 bytes.
const SALT_BYTES: usize = 32;
/// Largest attribute value `declare` accepts. The sealed attribute is one
/// protobuf message, so it is held in memory whole, here and on `access`.
const ATTRIBUTE_VALUE_BYTES_MAX: u64 = 64 * 1024 * 1024;

#[derive(Debug, Args)]
pub struct IdentityArgs {
    #[command(subcommand)]
    command: IdentityCommand,
}

#[derive(Debug, Subcommand)]
enum IdentityCommand {
    /// Register a citizen's key as an identity (a did:key) on the chain.
    #[command(
        long_about = "Register a citizen: the Ed25519 key in --key becomes the identity, named \
            by its W3C did:key. No personal data goes on the chain. If the key file does not \
            exist it is created first (PKCS#8 PEM, mode 0600), as `govchain keys new` does; \
            keep it safe, it is the citizen.\n\n\
            Identity commands wait for the commit by default (--no-wait to skip), and exit 2 \
            if the node refuses the transaction or 1 if it commits but fails.",
        after_help = "Example:\n  govchain identity create --key alice.key --dir devnet"
    )]
    Create(CreateArgs),
    /// Declare an attribute: its sealed value goes to the node's blob store,
    /// its CID and a salted commitment to the chain.
    #[command(
        long_about = "Declare (or replace) one of the citizen's attributes. The value (--value \
            text, or a --file such as a photo) is sealed with a fresh 32-byte random salt into \
            a SealedAttribute, uploaded to the blob store of the node you talk to, and the \
            chain records only the blob's CID, its size, the salted commitment \
            SHA-256(\"govchain/attribute/v1\", salt, value) and the holder: that node's \
            department. Replacing a value makes its attestations stale.\n\n\
            Prints the CID and the commitment.",
        after_help = "Examples:\n  \
            govchain identity declare --key alice.key --name name --value \"Alice Example\"\n  \
            govchain identity declare --key alice.key --name photo --file alice.jpg\n  \
            govchain identity declare --key alice.key --name date_of_birth --value 1990-02-01 \\\n    \
            --department civil --dir devnet"
    )]
    Declare(DeclareArgs),
    /// Attest (as a department) that a citizen's attribute is true, or
    /// revoke the attestation.
    #[command(
        long_about = "Attest, as a department, that the citizen's current value of an \
            attribute is true: signed with the department's signing key from genesis, for the \
            commitment the chain holds now (read with GetIdentity), so the attestation never \
            carries over to a changed value. Genesis says which attribute names each \
            department may attest; others are refused with PERMISSION_DENIED.\n\n\
            With --revoke, withdraws the department's attestation instead (--reason says why).",
        after_help = "Examples:\n  \
            govchain identity attest --signing-key devnet/certs/civil/signing.key \\\n    \
            --citizen did:key:z6Mk... --name name --expires 365d --department civil\n  \
            govchain identity attest --signing-key devnet/certs/civil/signing.key \\\n    \
            --citizen did:key:z6Mk... --name name --revoke --reason \"document was forged\""
    )]
    Attest(AttestArgs),
    /// Grant, revoke, list and export consents.
    #[command(
        long_about = "A citizen's consents: which department may read which attributes, for \
            what purpose, until when. A consent's id is the id of the transaction that \
            granted it; departments cite it in every read (`identity access`).",
        after_help = "Examples:\n  \
            govchain identity consent grant --key alice.key --department tax --attributes photo \\\n    \
            --purpose benefit-check --expires 30d\n  \
            govchain identity consent list --citizen did:key:z6Mk...\n  \
            govchain identity consent export <id> --citizen did:key:z6Mk... > receipt.json\n  \
            govchain identity consent revoke --key alice.key <id>"
    )]
    Consent(ConsentArgs),
    /// Read a citizen's attribute as a department, under consent, recorded on chain.
    #[command(
        long_about = "Read a citizen's attribute as a department. Signs a RecordAccess \
            transaction (who, attribute, consent, purpose) with the department's signing key \
            and sends it to the department's own node (--department, whose client \
            certificate is used) with IdentityService.ReadAttribute. The node checks the \
            consent, commits the access record, and only then releases the sealed attribute. \
            The CLI checks the blob's CID and the value's commitment against the chain and \
            writes the value to --out.\n\n\
            No valid consent (revoked, expired, other department, attribute or purpose not \
            covered): PERMISSION_DENIED with the reason, nothing is released, exit 2.",
        after_help = "Example:\n  \
            govchain identity access --signing-key devnet/certs/tax/signing.key --department tax \\\n    \
            --citizen did:key:z6Mk... --name photo --consent 5f0c...e1 \\\n    \
            --purpose benefit-check --out photo.jpg"
    )]
    Access(AccessArgs),
    /// List every recorded access to a citizen's data.
    #[command(
        long_about = "List every recorded access to a citizen's attributes, oldest first: \
            when, which department, which attribute, under which consent and for what \
            purpose. Each line is a committed transaction; no read can skip it.\n\n\
            With --key (the citizen's key file) the request is signed as the citizen's own, \
            valid for 5 minutes, and lists every access. Without it you ask as the department \
            of the client certificate (--department with --dir), which sees only its own \
            accesses.",
        after_help = "Examples:\n  \
            govchain identity log --citizen did:key:z6Mk... --key alice.key --dir devnet\n  \
            govchain identity log --citizen did:key:z6Mk... --department tax --dir devnet   # tax's reads only"
    )]
    Log(LogArgs),
    /// Show an identity: attributes, attestations and consents.
    #[command(
        long_about = "Show an identity as the chain holds it: each attribute's CID, size, \
            holder and version; its attestations (valid, revoked or expired; stale ones of an \
            older value are left out); and every consent with its state.\n\n\
            With --key (the citizen's key file) the request is signed as the citizen's own, \
            valid for 5 minutes, and shows everything. Without it you ask as the department \
            of the client certificate (--department with --dir): it sees the attributes its \
            consents in force cover or genesis lets it attest, and only its own consents; a \
            department with neither a consent nor an attestation role is refused \
            (PERMISSION_DENIED).",
        after_help = "Examples:\n  \
            govchain identity show did:key:z6Mk... --key alice.key --dir devnet --json\n  \
            govchain identity show did:key:z6Mk... --department tax --dir devnet   # what tax may see"
    )]
    Show(ShowArgs),
    /// QR-code login: make a challenge, sign it as the citizen, complete it.
    #[command(
        long_about = "Log a citizen in to a department's website with their identity. The \
            website's department asks its node for a challenge (shown as a QR code), the \
            citizen's device signs it, and the same node verifies the signature against the \
            chain and returns the requested attributes if they are attested and consented to \
            that department. A challenge works once and expires (120 s by default).",
        after_help = "Example (the website is the tax office's):\n  \
            PAYLOAD=$(govchain identity login challenge --attributes name --department tax --json | jq -r .qr_payload)\n  \
            SIG=$(govchain identity login sign --key alice.key \"$PAYLOAD\")\n  \
            govchain identity login complete --payload \"$PAYLOAD\" --public-key did:key:z6Mk... \\\n    \
            --signature \"$SIG\" --department tax"
    )]
    Login(LoginArgs),
    /// As the citizen's device: answer a QR code a website shows (a login or a consent to sign).
    #[command(
        long_about = "Answer what a website (a node's web portal) shows as a QR code, as the \
            citizen's device would: a login payload (govchain-login:v1?..., as `identity login \
            respond`) or a request to sign a transaction (govchain-sign:v1?...: grant or revoke a \
            consent). For a request, the command prints what it is about to sign, builds the \
            transaction itself from the request (never taking one from the website), signs it \
            with your key and posts the envelope to the callback URL the request names, over \
            HTTPS checked against the consortium CA. The website submits it and shows the result \
            once it is recorded on chain. Exits 1 if the website or the chain refused it.",
        after_help = "Example (the text is under the QR code's \"Cannot scan?\"):\n  \
            govchain identity respond --key alice.key --dir devnet \\\n    \
            'govchain-sign:v1?chain=...&action=revoke-consent&consent=...&cb=https://127.0.0.1:8444/sign/callback'"
    )]
    Respond(device::RespondArgs),
}

/// `--wait` is the default for identity commands; `--no-wait` returns once
/// the node admitted the transaction.
#[derive(Debug, Clone, Args)]
pub(crate) struct CommitArgs {
    /// Wait until the transaction is committed (the default).
    #[arg(long, overrides_with = "no_wait")]
    pub(crate) wait: bool,
    /// Return as soon as the node admitted the transaction; follow it with
    /// `govchain tx get`.
    #[arg(long, overrides_with = "wait")]
    pub(crate) no_wait: bool,
    /// How long to wait for the commit, e.g. 30s, 2m.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// The citizen's Ed25519 key (PKCS#8 PEM); created if missing.
    #[arg(long, value_name = "KEYFILE")]
    key: PathBuf,
    #[command(flatten)]
    commit: CommitArgs,
    #[command(flatten)]
    connect: CitizenConnectArgs,
}

#[derive(Debug, Args)]
struct DeclareArgs {
    /// The citizen's key file.
    #[arg(long, value_name = "KEYFILE")]
    key: PathBuf,
    /// Attribute name: lower-case letters, digits, '_' and '-', e.g. name,
    /// date_of_birth, photo.
    #[arg(long, value_name = "NAME", value_parser = parse_attribute_name)]
    name: String,
    /// The value as text.
    #[arg(
        long,
        value_name = "TEXT",
        required_unless_present = "file",
        conflicts_with = "file"
    )]
    value: Option<String>,
    /// The value as a file, e.g. a photo.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// MIME type of the value; default text/plain for --value, else guessed
    /// from the file name.
    #[arg(long, value_name = "T")]
    media_type: Option<String>,
    #[command(flatten)]
    commit: CommitArgs,
    #[command(flatten)]
    connect: CitizenConnectArgs,
}

#[derive(Debug, Args)]
struct AttestArgs {
    /// The department's signing key (genesis `departments`).
    #[arg(long, env = "GOVCHAIN_SIGNING_KEY", value_name = "KEYFILE")]
    signing_key: PathBuf,
    /// The citizen: did:key:z... or the public key in hex.
    #[arg(long, value_name = "DID", value_parser = parse_citizen)]
    citizen: PublicKey,
    /// The attribute to attest.
    #[arg(long, value_name = "NAME", value_parser = parse_attribute_name)]
    name: String,
    /// How long the attestation counts, e.g. 365d, or never.
    #[arg(long, value_name = "DURATION", default_value = "never", value_parser = parse_expiry, conflicts_with = "revoke")]
    expires: Expiry,
    /// Revoke this department's attestation instead.
    #[arg(long)]
    revoke: bool,
    /// With --revoke: why.
    #[arg(long, value_name = "TEXT", requires = "revoke")]
    reason: Option<String>,
    #[command(flatten)]
    commit: CommitArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
struct CitizenArgs {
    /// The citizen: did:key:z... or the public key in hex.
    #[arg(long, value_name = "DID", value_parser = parse_citizen)]
    citizen: PublicKey,
    /// The citizen's key file: sign the request as the citizen, who sees
    /// everything. Without it, you ask as the department of the client
    /// certificate and see only that department's share.
    #[arg(long, value_name = "KEYFILE")]
    key: Option<PathBuf>,
    #[command(flatten)]
    connect: CitizenConnectArgs,
}

#[derive(Debug, Args)]
struct LogArgs {
    #[command(flatten)]
    citizen: CitizenArgs,
}

#[derive(Debug, Args)]
struct ShowArgs {
    /// The citizen: did:key:z... or the public key in hex.
    #[arg(value_name = "DID", value_parser = parse_citizen)]
    citizen: PublicKey,
    /// The citizen's key file: sign the request as the citizen, who sees
    /// everything. Without it, you ask as the department of the client
    /// certificate and see only that department's share.
    #[arg(long, value_name = "KEYFILE")]
    key: Option<PathBuf>,
    #[command(flatten)]
    connect: CitizenConnectArgs,
}

pub async fn run(args: IdentityArgs, json: bool) -> anyhow::Result<()> {
    match args.command {
        IdentityCommand::Create(args) => create(args, json).await,
        IdentityCommand::Declare(args) => declare(args, json).await,
        IdentityCommand::Attest(args) => attest(args, json).await,
        IdentityCommand::Consent(args) => consent::run(args, json).await,
        IdentityCommand::Access(args) => access::access(args, json).await,
        IdentityCommand::Log(args) => log(args, json).await,
        IdentityCommand::Show(args) => show(args, json).await,
        IdentityCommand::Login(args) => login::run(args, json).await,
        IdentityCommand::Respond(args) => device::respond_any(args, json).await,
    }
}

// ----- parsing ------------------------------------------------------------

/// A citizen as `did:key:z...` or 64 hex characters.
pub fn parse_citizen(text: &str) -> Result<PublicKey, String> {
    let text = text.trim();
    if text.starts_with("did:") {
        return PublicKey::from_did_key(text).map_err(|err| format!("{text:?}: {err}"));
    }
    PublicKey::from_hex(text)
        .map_err(|err| format!("{text:?} is neither a did:key nor a hex public key: {err}"))
}

fn parse_attribute_name(text: &str) -> Result<String, String> {
    if valid_attribute_name(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not an attribute name: use 1 to 64 lower-case letters, digits, '_' and '-'"
        ))
    }
}

/// A validity period: a positive number with a unit of s, m, h, d (days),
/// w (weeks) or y (365 days), e.g. `30d`.
pub fn parse_validity(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30d, 12h or 90m"))?;
    if value == 0 {
        return Err(format!(
            "{text:?} is no time at all; give a positive duration"
        ));
    }
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "y" => 365 * 86_400,
        "" => return Err(format!("{text:?} needs a unit: s, m, h, d, w or y")),
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}: use s, m, h, d, w or y"
            ));
        }
    };
    value
        .checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// How long something counts: `None` is never-ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry(Option<Duration>);

impl Expiry {
    /// Unix ms of the end, or 0 for never, as the chain writes it.
    fn expires_ms(self) -> u64 {
        self.0.map_or(0, expires_ms)
    }
}

/// `never` (no expiry), or a validity period.
pub fn parse_expiry(text: &str) -> Result<Expiry, String> {
    if text.trim().eq_ignore_ascii_case("never") {
        return Ok(Expiry(None));
    }
    parse_validity(text).map(|validity| Expiry(Some(validity)))
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Unix ms `validity` from now, by this machine's clock; the chain compares
/// it with block times.
fn expires_ms(validity: Duration) -> u64 {
    let millis = u64::try_from(validity.as_millis()).unwrap_or(u64::MAX);
    now_ms().saturating_add(millis)
}

/// A MIME type from a file name's extension, for common document and image
/// formats.
fn guess_media_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "json" => "application/json",
        "xml" => "application/xml",
        _ => "application/octet-stream",
    }
}

// ----- talking to the node --------------------------------------------------

/// A connection to one node, with what every transaction needs from it.
pub(crate) struct Session {
    node: NodeServiceClient<Channel>,
    identity: IdentityServiceClient<Channel>,
    /// The connection, for the clients of other services.
    pub(crate) channel: Channel,
    pub(crate) chain_id: String,
    /// The node's department.
    pub(crate) department: String,
}

impl Session {
    pub(crate) async fn open(
        connect: &ConnectArgs,
        request_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let target = connect.target()?;
        let channel = client::channel(&target, Some(request_timeout)).await?;
        let mut node = NodeServiceClient::new(channel.clone());
        let status = node
            .get_status(GetStatusRequest {})
            .await
            .map_err(rpc_error)?
            .into_inner();
        anyhow::ensure!(
            !status.chain_id.is_empty(),
            "the node did not say its chain id"
        );
        Ok(Self {
            node,
            identity: client::identity_client(channel.clone()),
            channel,
            chain_id: status.chain_id,
            department: status.node,
        })
    }

    /// Signs `body` at the signer's next usable nonce (`GetAccount.next_nonce`).
    async fn sign(&mut self, key: &SigningKey, body: Body) -> anyhow::Result<Signed> {
        let account = self
            .node
            .get_account(GetAccountRequest {
                public_key: key.public_key().as_bytes().to_vec(),
                prove: false,
            })
            .await
            .map_err(rpc_error)?
            .into_inner();
        let nonce = account.next_nonce;
        let transaction = Transaction { body: Some(body) };
        Ok(envelope::sign(key, &self.chain_id, nonce, &transaction))
    }

    /// Signs and submits `body`, then (unless `--no-wait`) waits for the
    /// commit. A committed failure is a negative answer naming `what`.
    pub(crate) async fn submit(
        &mut self,
        key: &SigningKey,
        body: Body,
        commit: &CommitArgs,
        what: &str,
    ) -> anyhow::Result<Submitted> {
        let signed = self.sign(key, body).await?;
        submit_envelope(&mut self.node, signed.envelope).await?;
        if commit.no_wait {
            return Ok(Submitted {
                id: signed.id,
                committed: None,
            });
        }
        let response = wait_for_commit(&mut self.node, &signed.id, commit.timeout).await?;
        let view = TransactionView::new(&signed.id, &response);
        if let Some(result) = view.result.as_ref().filter(|result| result.failed()) {
            return Err(Negative::new(format!(
                "{what} ({}) was committed but failed: {}",
                signed.id,
                or_dash(&result.error)
            ))
            .into());
        }
        Ok(Submitted {
            id: signed.id,
            committed: Some(view),
        })
    }

    /// The identity as this session's department may see it.
    async fn get_identity(&mut self, citizen: &PublicKey) -> anyhow::Result<GetIdentityResponse> {
        self.get_identity_as(citizen, None).await
    }

    /// The identity, asked as the citizen if `key` (the citizen's) is
    /// given, else as this session's department.
    async fn get_identity_as(
        &mut self,
        citizen: &PublicKey,
        key: Option<&SigningKey>,
    ) -> anyhow::Result<GetIdentityResponse> {
        let (request_time_ms, citizen_signature) =
            self.citizen_signature(CitizenRead::GetIdentity, citizen, key)?;
        self.read_identity(citizen, request_time_ms, citizen_signature)
            .await
            .map_err(|status| identity_error(status, citizen))
    }

    /// `GetIdentity`, with the node's status for callers that explain a
    /// refusal their own way.
    async fn read_identity(
        &mut self,
        citizen: &PublicKey,
        request_time_ms: u64,
        citizen_signature: Vec<u8>,
    ) -> Result<GetIdentityResponse, Status> {
        self.identity
            .get_identity(GetIdentityRequest {
                public_key: citizen.as_bytes().to_vec(),
                did: String::new(),
                request_time_ms,
                citizen_signature,
                login_session: String::new(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// The request time and the citizen's signature of a read request, or
    /// `(0, [])` to ask as the department.
    pub(crate) fn citizen_signature(
        &self,
        read: CitizenRead,
        citizen: &PublicKey,
        key: Option<&SigningKey>,
    ) -> anyhow::Result<(u64, Vec<u8>)> {
        let Some(key) = key else {
            return Ok((0, Vec::new()));
        };
        anyhow::ensure!(
            key.public_key() == *citizen,
            "--key holds the key of {}, not of {}; give the citizen's own key file",
            key.public_key().to_did_key(),
            citizen.to_did_key()
        );
        let request_time_ms = now_ms();
        let digest = citizen_read_digest(&self.chain_id, read, citizen, request_time_ms);
        Ok((request_time_ms, key.sign(digest.as_bytes()).to_vec()))
    }
}

/// The citizen's key from `--key`, if given.
fn citizen_key(path: Option<&Path>) -> anyhow::Result<Option<SigningKey>> {
    path.map(load_signing_key).transpose()
}

fn identity_error(status: Status, citizen: &PublicKey) -> anyhow::Error {
    match status.code() {
        Code::NotFound => anyhow::anyhow!(
            "{}; register {} with `govchain identity create --key KEYFILE`",
            status_line(&status),
            citizen.to_did_key()
        ),
        Code::PermissionDenied => anyhow::anyhow!(
            "{}; as the citizen, pass --key with the citizen's key file",
            status_line(&status)
        ),
        Code::FailedPrecondition | Code::Unauthenticated => anyhow::anyhow!(
            "{}; check this machine's clock and that --key is the citizen's key",
            status_line(&status)
        ),
        _ => rpc_error(status),
    }
}

/// A submitted transaction and, after the wait, its committed view.
#[derive(Debug, Serialize)]
pub(crate) struct Submitted {
    #[serde(serialize_with = "serialize_hex")]
    pub(crate) id: Digest,
    pub(crate) committed: Option<TransactionView>,
}

fn serialize_hex<S: serde::Serializer>(id: &Digest, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&id.to_hex())
}

impl Submitted {
    pub(crate) fn add_to(&self, fields: &mut Fields) {
        fields.add("transaction", self.id.to_hex());
        match self.committed.as_ref().and_then(|view| view.block_height) {
            Some(height) => fields.add("block height", height),
            None => fields.add(
                "status",
                format!("submitted; follow it with `govchain tx get {}`", self.id),
            ),
        };
    }
}

pub(crate) fn print_view<T: Serialize>(
    view: &T,
    fields: &Fields,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        output::print_json(view)
    } else {
        output::print(&fields.render())
    }
}

// ----- identity create / declare / attest -------------------------------------

/// Loads the key file, or creates it (mode 0600) if it does not exist.
/// Returns the key and whether it was created.
fn load_or_create_key(path: &Path) -> anyhow::Result<(SigningKey, bool)> {
    if path.exists() {
        return Ok((load_signing_key(path)?, false));
    }
    let key = SigningKey::generate()?;
    // Never replaces a file that appeared meanwhile (no `force`).
    crate::cmd::keys::write_secret(path, key.to_pkcs8_pem()?.as_bytes(), false)?;
    Ok((key, true))
}

#[derive(Debug, Serialize)]
struct CreateView {
    did: String,
    public_key: String,
    key_file: PathBuf,
    key_created: bool,
    transaction: Submitted,
}

async fn create(args: CreateArgs, json: bool) -> anyhow::Result<()> {
    let (key, key_created) = load_or_create_key(&args.key)?;
    let mut session = Session::open(&args.connect.connect_args(), client_timeout()).await?;
    let body = Body::CreateIdentity(CreateIdentity {});
    let transaction = session
        .submit(&key, body, &args.commit, "the identity")
        .await?;
    let view = CreateView {
        did: key.public_key().to_did_key(),
        public_key: key.public_key().to_hex(),
        key_file: args.key,
        key_created,
        transaction,
    };
    let mut fields = Fields::new();
    fields
        .add("did", &view.did)
        .add("public key", &view.public_key)
        .add(
            "key file",
            format!(
                "{}{}",
                view.key_file.display(),
                if view.key_created { " (created)" } else { "" }
            ),
        );
    view.transaction.add_to(&mut fields);
    print_view(&view, &fields, json)
}

/// The unary request timeout of every other client command.
pub(crate) fn client_timeout() -> Duration {
    Duration::from_secs(15)
}

/// The value and media type `declare` seals.
fn declared_value(args: &DeclareArgs) -> anyhow::Result<(Vec<u8>, String)> {
    if let Some(text) = &args.value {
        let media_type = args.media_type.as_deref().unwrap_or("text/plain");
        return Ok((text.as_bytes().to_vec(), media_type.to_owned()));
    }
    let path = args
        .file
        .as_ref()
        .context("give the value with --value TEXT or --file PATH")?;
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    anyhow::ensure!(
        size <= ATTRIBUTE_VALUE_BYTES_MAX,
        "{} has {size} bytes; an attribute value may have at most {ATTRIBUTE_VALUE_BYTES_MAX}",
        path.display()
    );
    let value = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let media_type = args
        .media_type
        .clone()
        .unwrap_or_else(|| guess_media_type(path).to_owned());
    Ok((value, media_type))
}

/// Seals `value` with a fresh random salt; returns the encoded
/// `SealedAttribute` and the commitment to the value.
fn seal(value: Vec<u8>, media_type: String) -> anyhow::Result<(Vec<u8>, Digest)> {
    let mut salt = vec![0_u8; SALT_BYTES];
    getrandom::fill(&mut salt)
        .map_err(|err| anyhow::anyhow!("the random number generator failed: {err}"))?;
    let commitment = attribute_commitment(&salt, &value);
    let sealed = SealedAttribute {
        salt,
        media_type,
        value,
    };
    Ok((sealed.encode_to_vec(), commitment))
}

#[derive(Debug, Serialize)]
struct DeclareView {
    did: String,
    name: String,
    cid: String,
    commitment: String,
    media_type: String,
    value_size_bytes: u64,
    sealed_size_bytes: u64,
    holder: String,
    transaction: Submitted,
}

async fn declare(args: DeclareArgs, json: bool) -> anyhow::Result<()> {
    let key = load_signing_key(&args.key)?;
    let (value, media_type) = declared_value(&args)?;
    let value_size = value.len() as u64;
    let (sealed, commitment) = seal(value, media_type.clone())?;
    let cid = blob::cid_of_bytes(&sealed)?;
    let connect = args.connect.connect_args();
    let mut session = Session::open(&connect, client_timeout()).await?;
    // The upload's answer comes after its last byte: no call timeout.
    let target = connect.target()?;
    let mut blobs = client::blob_client(client::channel(&target, None).await?);
    let header = UploadHeader {
        expected_cid: cid.to_string(),
        size_limit_bytes: 0,
        receipt_for_citizen: key.public_key().as_bytes().to_vec(),
    };
    let bar = blob::progress_bar(sealed.len() as u64, json, "uploading");
    let uploaded = blob::upload(&mut blobs, bytes::Bytes::from(sealed), header, bar).await?;
    let body = Body::DeclareAttribute(DeclareAttribute {
        name: args.name.clone(),
        cid: uploaded.cid.clone(),
        commitment: commitment.to_vec(),
        holder: session.department.clone(),
        size_bytes: uploaded.size_bytes,
        holder_receipt: uploaded.holder_receipt,
    });
    let transaction = session
        .submit(&key, body, &args.commit, "the declaration")
        .await?;
    let view = DeclareView {
        did: key.public_key().to_did_key(),
        name: args.name,
        cid: uploaded.cid,
        commitment: commitment.to_hex(),
        media_type,
        value_size_bytes: value_size,
        sealed_size_bytes: uploaded.size_bytes,
        holder: session.department,
        transaction,
    };
    let mut fields = Fields::new();
    fields
        .add("attribute", &view.name)
        .add("cid", &view.cid)
        .add("commitment", &view.commitment)
        .add("media type", &view.media_type)
        .add(
            "size",
            format!(
                "{} bytes ({} sealed)",
                view.value_size_bytes, view.sealed_size_bytes
            ),
        )
        .add("holder", &view.holder)
        .add("did", &view.did);
    view.transaction.add_to(&mut fields);
    print_view(&view, &fields, json)
}

/// The attribute `name` of an identity, or an error that says what to do.
fn find_attribute(response: &GetIdentityResponse, name: &str) -> anyhow::Result<AttributeRecord> {
    response
        .attributes
        .iter()
        .filter_map(|state| state.attribute.as_ref())
        .find(|attribute| attribute.name == name)
        .cloned()
        .with_context(|| {
            let did = response
                .identity
                .as_ref()
                .map_or_else(String::new, |identity| identity.did.clone());
            format!(
                "{did} has not declared {name:?}, or this department may not see it (a department \
                 sees the attributes a consent in force or its attestation role covers); the \
                 citizen declares it with `govchain identity declare`"
            )
        })
}

#[derive(Debug, Serialize)]
struct AttestView {
    citizen: String,
    name: String,
    revoked: bool,
    commitment: Option<String>,
    expires: Option<String>,
    reason: Option<String>,
    transaction: Submitted,
}

async fn attest(args: AttestArgs, json: bool) -> anyhow::Result<()> {
    let key = load_signing_key(&args.signing_key)?;
    let mut session = Session::open(&args.connect, client_timeout()).await?;
    let citizen = args.citizen.as_bytes().to_vec();
    let (body, commitment, expires) = if args.revoke {
        let body = Body::RevokeAttestation(RevokeAttestation {
            citizen,
            name: args.name.clone(),
            reason: args.reason.clone().unwrap_or_default(),
        });
        (body, None, None)
    } else {
        // A department sees every declared attribute it may attest.
        let identity = match session.read_identity(&args.citizen, 0, Vec::new()).await {
            Ok(identity) => identity,
            Err(status) if status.code() == Code::PermissionDenied => {
                anyhow::bail!(
                    "{}; so this department may not attest {:?} either: genesis gives it no \
                     attestation role",
                    status_line(&status),
                    args.name
                );
            }
            Err(status) => return Err(identity_error(status, &args.citizen)),
        };
        let attribute = find_attribute(&identity, &args.name)?;
        let expires_ms = args.expires.expires_ms();
        let body = Body::AttestAttribute(AttestAttribute {
            citizen,
            name: args.name.clone(),
            commitment: attribute.commitment.clone(),
            expires_ms,
        });
        (
            body,
            Some(hex::encode(&attribute.commitment)),
            Some(expiry(expires_ms)),
        )
    };
    let what = if args.revoke {
        "the revocation"
    } else {
        "the attestation"
    };
    let transaction = session
        .submit(&key, body, &args.commit, what)
        .await
        .map_err(attest_error)?;
    let view = AttestView {
        citizen: args.citizen.to_did_key(),
        name: args.name,
        revoked: args.revoke,
        commitment,
        expires,
        reason: args.reason,
        transaction,
    };
    let mut fields = Fields::new();
    fields
        .add("citizen", &view.citizen)
        .add("attribute", &view.name)
        .add("action", if view.revoked { "revoked" } else { "attested" });
    if let Some(commitment) = &view.commitment {
        fields.add("commitment", commitment);
    }
    if let Some(expires) = &view.expires {
        fields.add("expires", expires);
    }
    if let Some(reason) = &view.reason {
        fields.add("reason", reason);
    }
    view.transaction.add_to(&mut fields);
    print_view(&view, &fields, json)
}

/// A refused attestation usually means the key is not the right
/// department's, or genesis does not let it attest that name.
fn attest_error(err: anyhow::Error) -> anyhow::Error {
    let text = err.to_string();
    match text.strip_suffix(client::PERMISSION_DENIED_HINT) {
        Some(reason) => anyhow::anyhow!(
            "{reason}; sign with the key of a department allowed to attest it (`govchain governance list` shows who may)"
        ),
        None => err,
    }
}

// ----- log, show ------------------------------------------------------------------

/// Whether `next` names a later page than `current` (empty for the first):
/// a node's page tokens are access numbers.
fn next_page_after(current: &str, next: &str) -> bool {
    let current = if current.is_empty() {
        Some(0)
    } else {
        current.parse::<u64>().ok()
    };
    matches!((current, next.parse::<u64>()), (Some(current), Ok(next)) if next > current)
}

async fn log(args: LogArgs, json: bool) -> anyhow::Result<()> {
    let citizen = &args.citizen.citizen;
    let key = citizen_key(args.citizen.key.as_deref())?;
    let mut session = Session::open(&args.citizen.connect.connect_args(), client_timeout()).await?;
    // One signature for every page: it stays good for a few minutes.
    let (request_time_ms, citizen_signature) =
        session.citizen_signature(CitizenRead::ListAccesses, citizen, key.as_ref())?;
    let mut accesses = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = session
            .identity
            .list_accesses(ListAccessesRequest {
                public_key: citizen.as_bytes().to_vec(),
                did: String::new(),
                page_size: 0,
                page_token: page_token.clone(),
                request_time_ms,
                citizen_signature: citizen_signature.clone(),
                login_session: String::new(),
            })
            .await
            .map_err(|status| identity_error(status, citizen))?
            .into_inner();
        if page.next_page_token.is_empty() {
            accesses.extend(page.accesses);
            break;
        }
        // Each page but the last holds accesses, and the next one starts
        // further on, so this loop ends however the node answers.
        let advances = next_page_after(&page_token, &page.next_page_token);
        anyhow::ensure!(
            !page.accesses.is_empty() && advances,
            "the node returned a page of accesses that does not advance (token {:?} after {:?})",
            page.next_page_token,
            page_token
        );
        accesses.extend(page.accesses);
        page_token = page.next_page_token;
    }
    let views: Vec<AccessView> = accesses.iter().map(AccessView::new).collect();
    if json {
        return output::print_json(&views);
    }
    if views.is_empty() {
        return output::print(&format!(
            "no department has read, or tried to read, the data of {}",
            citizen.to_did_key()
        ));
    }
    let mut table = Table::new(&[
        "WHEN",
        "DEPARTMENT",
        "ATTRIBUTE",
        "PURPOSE",
        "CONSENT",
        "TRANSACTION",
        "OUTCOME",
    ]);
    for view in &views {
        table.add(vec![
            view.accessed.clone(),
            view.department.clone(),
            view.attribute.clone(),
            view.purpose.clone(),
            view.consent_id.clone(),
            view.transaction_id.clone(),
            view.outcome(),
        ]);
    }
    output::print(&table.render())
}

async fn show(args: ShowArgs, json: bool) -> anyhow::Result<()> {
    let key = citizen_key(args.key.as_deref())?;
    let mut session = Session::open(&args.connect.connect_args(), client_timeout()).await?;
    let identity = session.get_identity_as(&args.citizen, key.as_ref()).await?;
    let view = IdentityView::new(&identity, now_ms());
    if json {
        return output::print_json(&view);
    }
    output::print(&identity_text(&view))
}

fn identity_text(view: &IdentityView) -> String {
    let mut fields = Fields::new();
    fields
        .add("did", &view.did)
        .add("public key", &view.public_key)
        .add(
            "created",
            format!("{} (block {})", view.created, view.created_height),
        );
    let mut text = fields.render();
    text.push_str("\n\nAttributes:\n");
    if view.attributes.is_empty() {
        text.push_str("  none declared");
    } else {
        text.push_str(&attribute_table(&view.attributes).render());
    }
    text.push_str("\n\nConsents:\n");
    if view.consents.is_empty() {
        text.push_str("  none granted");
    } else {
        text.push_str(&consent_table(&view.consents).render());
    }
    text
}

fn attribute_table(attributes: &[AttributeView]) -> Table {
    let mut table = Table::new(&["NAME", "VERSION", "SIZE", "HOLDER", "CID", "ATTESTATIONS"]);
    for attribute in attributes {
        let attestations = if attribute.attestations.is_empty() {
            "none".to_owned()
        } else {
            attribute
                .attestations
                .iter()
                .map(|a| a.text())
                .collect::<Vec<_>>()
                .join("; ")
        };
        table.add(vec![
            attribute.name.clone(),
            attribute.version.to_string(),
            attribute.size_bytes.to_string(),
            attribute.holder.clone(),
            attribute.cid.clone(),
            attestations,
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn only_page_tokens_that_advance_are_followed() {
        assert!(next_page_after("", "101"));
        assert!(next_page_after("101", "201"));
        assert!(!next_page_after("101", "101"), "the same page again");
        assert!(!next_page_after("201", "101"), "backwards");
        assert!(!next_page_after("", "next"), "not a token this node issues");
    }

    /// Just the identity commands, to test their parsing.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: IdentityCommand,
    }

    pub(super) fn parse(args: &[&str]) -> Result<IdentityCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("identity").chain(args.iter().copied()))
            .map(|cli| cli.command)
    }

    pub(super) fn did() -> String {
        SigningKey::from_seed([3; 32]).public_key().to_did_key()
    }

    #[test]
    fn validities_parse() {
        assert_eq!(parse_validity("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_validity("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_validity("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_validity("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_validity("1y"), Ok(Duration::from_secs(365 * 86_400)));
        assert!(parse_validity("0d").is_err());
        assert!(parse_validity("30").is_err());
        assert!(parse_validity("3x").is_err());
        assert!(parse_validity("99999999999999999999y").is_err());
        assert_eq!(parse_expiry("never"), Ok(Expiry(None)));
        assert_eq!(
            parse_expiry("1d"),
            Ok(Expiry(Some(Duration::from_secs(86_400))))
        );
        assert_eq!(parse_expiry("never").map(Expiry::expires_ms), Ok(0));
    }

    #[test]
    fn citizens_are_dids_or_hex_keys() {
        let key = SigningKey::from_seed([3; 32]).public_key();
        assert_eq!(parse_citizen(&key.to_did_key()), Ok(key));
        assert_eq!(parse_citizen(&key.to_hex()), Ok(key));
        assert!(parse_citizen("did:web:example.org").is_err());
        assert!(parse_citizen("abc").is_err());
    }

    #[test]
    fn identity_commands_wait_unless_told_not_to() {
        let IdentityCommand::Create(create) = parse(&["create", "--key", "a.key"]).expect("parses")
        else {
            panic!("not create");
        };
        assert!(!create.commit.no_wait);
        let IdentityCommand::Create(create) =
            parse(&["create", "--key", "a.key", "--no-wait"]).expect("parses")
        else {
            panic!("not create");
        };
        assert!(create.commit.no_wait);
        let IdentityCommand::Create(create) =
            parse(&["create", "--key", "a.key", "--no-wait", "--wait"]).expect("parses")
        else {
            panic!("not create");
        };
        assert!(!create.commit.no_wait, "the last flag wins");
    }

    #[test]
    fn declare_takes_exactly_one_value_source() {
        assert!(parse(&["declare", "--key", "k", "--name", "name", "--value", "A"]).is_ok());
        assert!(
            parse(&[
                "declare", "--key", "k", "--name", "photo", "--file", "p.jpg"
            ])
            .is_ok()
        );
        assert!(parse(&["declare", "--key", "k", "--name", "name"]).is_err());
        assert!(
            parse(&[
                "declare", "--key", "k", "--name", "n", "--value", "A", "--file", "f"
            ])
            .is_err()
        );
        assert!(
            parse(&[
                "declare", "--key", "k", "--name", "Bad Name", "--value", "A"
            ])
            .is_err()
        );
    }

    #[test]
    fn attest_revoke_excludes_an_expiry_and_reason_needs_revoke() {
        let did = did();
        let base = [
            "attest",
            "--signing-key",
            "k",
            "--citizen",
            &did,
            "--name",
            "name",
        ];
        let with = |extra: &[&str]| parse(&[&base[..], extra].concat());
        assert!(with(&[]).is_ok());
        assert!(with(&["--expires", "365d"]).is_ok());
        assert!(with(&["--revoke", "--reason", "wrong"]).is_ok());
        assert!(with(&["--reason", "wrong"]).is_err());
        assert!(with(&["--revoke", "--expires", "1d"]).is_err());
    }

    #[test]
    fn media_types_are_guessed_from_the_extension() {
        assert_eq!(guess_media_type(Path::new("a.JPG")), "image/jpeg");
        assert_eq!(guess_media_type(Path::new("scan.pdf")), "application/pdf");
        assert_eq!(
            guess_media_type(Path::new("blob")),
            "application/octet-stream"
        );
    }

    #[test]
    fn a_new_key_file_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("citizen.key");
        let (key, created) = load_or_create_key(&path).expect("create");
        assert!(created);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, created) = load_or_create_key(&path).expect("load");
        assert!(!created);
        assert_eq!(again.public_key(), key.public_key());
    }
}
