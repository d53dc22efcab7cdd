//! `govchain identity`: citizens' identities, attributes, attestations,
//! consent, audited reads of attributes, and QR-code login.
//!
//! Every write is an ordinary signed transaction (see `types.proto`); the
//! reads go through `IdentityService`. A citizen signs with their own key
//! file, a department with the signing key genesis lists for it (a devnet
//! keeps it in `<dir>/certs/<department>/signing.key`).

use std::fs::OpenOptions;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use govchain_crypto::{Digest, PublicKey, SigningKey};
use govchain_exec::identity::{attribute_commitment, valid_attribute_name};
use govchain_proto::blob::v1::UploadHeader;
use govchain_proto::identity::v1::identity_service_client::IdentityServiceClient;
use govchain_proto::identity::v1::{
    CompleteLoginRequest, CompleteLoginResponse, CreateLoginChallengeRequest,
    CreateLoginChallengeResponse, GetIdentityRequest, GetIdentityResponse, ListAccessesRequest,
    ReadAttributeRequest,
};
use govchain_proto::node::v1::node_service_client::NodeServiceClient;
use govchain_proto::node::v1::{GetAccountRequest, GetStatusRequest};
use govchain_proto::types::v1::{
    AttestAttribute, AttributeRecord, ConsentRecord, CreateIdentity, DeclareAttribute,
    GrantConsent, RecordAccess, RevokeAttestation, RevokeConsent, SealedAttribute, Transaction,
    transaction::Body,
};
use prost::Message as _;
use serde::Serialize;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::client::{
    self, CitizenConnectArgs, ConnectArgs, NodeConnectArgs, rpc_error, status_line,
};
use crate::cmd::blob;
use crate::cmd::keys::load_signing_key;
use crate::cmd::tx::{TransactionView, parse_duration, submit_envelope, wait_for_commit};
use crate::envelope::{self, Signed};
use crate::exit::Negative;
use crate::output::{self, Fields, Table, format_time_ms};
use crate::view::{AccessView, AttributeView, ConsentView, IdentityView, expiry, or_dash};

/// Salt of a sealed attribute: twice the chain's minimum of 16 bytes.
const SALT_BYTES: usize = 32;
/// Largest attribute value `declare` accepts. The sealed attribute is one
/// protobuf message, so it is held in memory whole, here and on `access`.
const ATTRIBUTE_VALUE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// `access` waits up to this long for the node's answer to start: the node
/// first waits (up to 30 s) for the access to commit.
const ACCESS_CALL_TIMEOUT: Duration = Duration::from_secs(90);
/// The citizen's device signs this prefix and then the QR payload
/// (`identity.proto`, `CompleteLoginRequest.signature`).
const LOGIN_SIGNING_DOMAIN: &str = "govchain/login/v1\n";
/// Every login payload starts so; anything else is not signed.
const LOGIN_PAYLOAD_PREFIX: &str = "govchain-login:v1?";
/// The Kantara consent receipt version the export follows.
const CONSENT_RECEIPT_VERSION: &str = "KI-CR-v1.1.0";
/// Attribute names that the consent export marks as sensitive personal
/// information (special categories in GDPR terms).
const SENSITIVE_ATTRIBUTES: [&str; 4] = ["photo", "vaccination_status", "health", "biometrics"];

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
            purpose. Each line is a committed transaction; no read can skip it.",
        after_help = "Example:\n  govchain identity log --citizen did:key:z6Mk... --dir devnet"
    )]
    Log(LogArgs),
    /// Show an identity: attributes, attestations and consents.
    #[command(
        long_about = "Show an identity as the chain holds it: each attribute's CID, size, \
            holder and version; its attestations (valid, revoked or expired; stale ones of an \
            older value are left out); and every consent with its state.",
        after_help = "Example:\n  govchain identity show did:key:z6Mk... --dir devnet --json"
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
}

/// `--wait` is the default for identity commands; `--no-wait` returns once
/// the node admitted the transaction.
#[derive(Debug, Clone, Args)]
struct CommitArgs {
    /// Wait until the transaction is committed (the default).
    #[arg(long, overrides_with = "no_wait")]
    wait: bool,
    /// Return as soon as the node admitted the transaction; follow it with
    /// `govchain tx get`.
    #[arg(long, overrides_with = "wait")]
    no_wait: bool,
    /// How long to wait for the commit, e.g. 30s, 2m.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
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
struct ConsentArgs {
    #[command(subcommand)]
    command: ConsentCommand,
}

#[derive(Debug, Subcommand)]
enum ConsentCommand {
    /// Let a department read some attributes for one purpose until a time.
    #[command(
        long_about = "Grant a consent, signed by the citizen: the department may read the \
            listed attributes, for this purpose only, until the consent expires or is \
            revoked. Prints the consent id, which is the transaction's id; the department \
            cites it in every read. Modelled on the Kantara consent receipt (ISO/IEC TS \
            27560): see `consent export`.",
        after_help = "Example:\n  \
            govchain identity consent grant --key alice.key --department tax \\\n    \
            --attributes name,photo --purpose benefit-check --expires 30d --jurisdiction EU\n\n\
            Here --department is the department the consent is for; the citizen talks to \
            the first devnet node, or to --node."
    )]
    Grant(GrantArgs),
    /// Withdraw a consent; later reads under it are refused.
    #[command(
        after_help = "Example:\n  govchain identity consent revoke --key alice.key 5f0c...e1"
    )]
    Revoke(RevokeArgs),
    /// List a citizen's consents and their state.
    #[command(after_help = "Example:\n  govchain identity consent list --citizen did:key:z6Mk...")]
    List(CitizenArgs),
    /// Export a consent as a Kantara consent receipt (JSON).
    #[command(
        long_about = "Export one consent as a consent receipt in the JSON form of the Kantara \
            Initiative Consent Receipt v1.1 (the basis of ISO/IEC TS 27560): version, \
            jurisdiction, consentTimestamp, collectionMethod, consentReceiptID, \
            piiPrincipalId (the citizen's DID), piiControllers, services with purposes \
            (consentType EXPLICIT, piiCategory = the attributes, termination), sensitive and \
            spiCat, plus a \"govchain\" object with the block height, transaction id and \
            current state. Always prints JSON.",
        after_help = "Example:\n  \
            govchain identity consent export 5f0c...e1 --citizen did:key:z6Mk... > receipt.json"
    )]
    Export(ExportArgs),
}

#[derive(Debug, Args)]
struct GrantArgs {
    /// The citizen's key file.
    #[arg(long, value_name = "KEYFILE")]
    key: PathBuf,
    /// The department that may read (the consent's, not the node's: the
    /// citizen talks to the first devnet node, or --node).
    #[arg(long, value_name = "D")]
    department: String,
    /// Attribute names, comma-separated.
    #[arg(long, value_name = "A,B", value_delimiter = ',', required = true, value_parser = parse_attribute_name)]
    attributes: Vec<String>,
    /// Why the department may read them, e.g. benefit-check.
    #[arg(long, value_name = "P")]
    purpose: String,
    /// How long the consent lasts, e.g. 30d, 12h.
    #[arg(long, value_name = "DURATION", value_parser = parse_validity)]
    expires: Duration,
    /// Jurisdiction of the processing, e.g. EU.
    #[arg(long, value_name = "J")]
    jurisdiction: Option<String>,
    #[command(flatten)]
    commit: CommitArgs,
    #[command(flatten)]
    connect: NodeConnectArgs,
}

#[derive(Debug, Args)]
struct RevokeArgs {
    /// The citizen's key file.
    #[arg(long, value_name = "KEYFILE")]
    key: PathBuf,
    /// The consent id (the granting transaction's id).
    #[arg(value_name = "CONSENT_ID", value_parser = blob::parse_transaction_id)]
    consent: Digest,
    #[command(flatten)]
    commit: CommitArgs,
    #[command(flatten)]
    connect: CitizenConnectArgs,
}

#[derive(Debug, Args)]
struct CitizenArgs {
    /// The citizen: did:key:z... or the public key in hex.
    #[arg(long, value_name = "DID", value_parser = parse_citizen)]
    citizen: PublicKey,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// The consent id.
    #[arg(value_name = "CONSENT_ID", value_parser = blob::parse_transaction_id)]
    consent: Digest,
    /// The citizen who granted it.
    #[arg(long, value_name = "DID", value_parser = parse_citizen)]
    citizen: PublicKey,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
struct AccessArgs {
    /// The reading department's signing key; connect with the same
    /// department's certificate (--department).
    #[arg(long, env = "GOVCHAIN_SIGNING_KEY", value_name = "KEYFILE")]
    signing_key: PathBuf,
    /// The citizen: did:key:z... or the public key in hex.
    #[arg(long, value_name = "DID", value_parser = parse_citizen)]
    citizen: PublicKey,
    /// The attribute to read.
    #[arg(long, value_name = "NAME", value_parser = parse_attribute_name)]
    name: String,
    /// The consent id the citizen gave the department.
    #[arg(long, value_name = "ID", value_parser = blob::parse_transaction_id)]
    consent: Digest,
    /// The purpose; must be the consent's.
    #[arg(long, value_name = "P")]
    purpose: String,
    /// Where to write the attribute's value.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    connect: ConnectArgs,
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
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
struct LoginArgs {
    #[command(subcommand)]
    command: LoginCommand,
}

#[derive(Debug, Subcommand)]
enum LoginCommand {
    /// As a website's department: make a login challenge and show its QR code.
    #[command(
        long_about = "Ask the node for a login challenge for a website of your department \
            (the relying party is the department of your client certificate): a nonce, the \
            requested attributes and an expiry, as a text payload. Prints the payload and \
            its QR code in the terminal; --svg also writes the QR code as an SVG image. The \
            citizen's device signs the payload (`identity login sign`) and the website \
            completes the login at the same node (`identity login complete`).",
        after_help = "Example:\n  \
            govchain identity login challenge --attributes name --website tax.gov.example \\\n    \
            --svg login.svg --department tax"
    )]
    Challenge(ChallengeArgs),
    /// As the citizen: sign a login payload (offline); prints the signature.
    #[command(
        long_about = "Sign a login payload with the citizen's key: an Ed25519 signature over \
            \"govchain/login/v1\\n\" followed by the payload. Needs no node. Prints the \
            signature in hex (with --json, also the public key and DID). Only govchain login \
            payloads are signed.",
        after_help = "Example:\n  govchain identity login sign --key alice.key 'govchain-login:v1?chain=...'"
    )]
    Sign(SignArgs),
    /// As the website's department: verify the signed payload and get the claims.
    #[command(
        long_about = "Complete a login at the node that made the challenge, with the same \
            department's certificate: the node checks the signature against the identity on \
            chain and that every requested attribute is attested and consented to your \
            department, consumes the challenge (a replay is refused), and returns the \
            claims: each attribute's commitment, CID and attesting departments.",
        after_help = "Example:\n  \
            govchain identity login complete --payload \"$PAYLOAD\" --public-key did:key:z6Mk... \\\n    \
            --signature 9a1f... --department tax"
    )]
    Complete(CompleteArgs),
}

#[derive(Debug, Args)]
struct ChallengeArgs {
    /// Attribute names the website wants, comma-separated.
    #[arg(long, value_name = "A,B", value_delimiter = ',', value_parser = parse_attribute_name)]
    attributes: Vec<String>,
    /// The website's label shown to the citizen, e.g. tax.gov.example.
    #[arg(long, value_name = "W", default_value = "")]
    website: String,
    /// How long the challenge stays valid, e.g. 120s (at most 10m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    ttl: Option<Duration>,
    /// Also write the QR code as an SVG image.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
struct SignArgs {
    /// The citizen's key file.
    #[arg(long, value_name = "KEYFILE")]
    key: PathBuf,
    /// The login payload, as shown in the QR code.
    #[arg(value_name = "PAYLOAD")]
    payload: String,
}

#[derive(Debug, Args)]
struct CompleteArgs {
    /// The login payload the citizen signed.
    #[arg(long, value_name = "P")]
    payload: String,
    /// The citizen: did:key:z... or the public key in hex.
    #[arg(long, value_name = "HEX_OR_DID", value_parser = parse_citizen)]
    public_key: PublicKey,
    /// The citizen's signature, in hex.
    #[arg(long, value_name = "HEX", value_parser = parse_signature)]
    signature: SignatureBytes,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub async fn run(args: IdentityArgs, json: bool) -> anyhow::Result<()> {
    match args.command {
        IdentityCommand::Create(args) => create(args, json).await,
        IdentityCommand::Declare(args) => declare(args, json).await,
        IdentityCommand::Attest(args) => attest(args, json).await,
        IdentityCommand::Consent(args) => match args.command {
            ConsentCommand::Grant(args) => grant(args, json).await,
            ConsentCommand::Revoke(args) => revoke(args, json).await,
            ConsentCommand::List(args) => list_consents(args, json).await,
            ConsentCommand::Export(args) => export(args).await,
        },
        IdentityCommand::Access(args) => access(args, json).await,
        IdentityCommand::Log(args) => log(args, json).await,
        IdentityCommand::Show(args) => show(args, json).await,
        IdentityCommand::Login(args) => match args.command {
            LoginCommand::Challenge(args) => challenge(args, json).await,
            LoginCommand::Sign(args) => sign_login(args, json),
            LoginCommand::Complete(args) => complete(args, json).await,
        },
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

/// An Ed25519 signature's 64 bytes, as given in hex.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SignatureBytes(Vec<u8>);

fn parse_signature(text: &str) -> Result<SignatureBytes, String> {
    let bytes = hex::decode(text.trim()).map_err(|err| format!("not hex: {err}"))?;
    if bytes.len() != 64 {
        return Err(format!(
            "an Ed25519 signature has 64 bytes, this has {}",
            bytes.len()
        ));
    }
    Ok(SignatureBytes(bytes))
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

fn now_ms() -> u64 {
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

// ----- devnet demo data -----------------------------------------------------

/// What [`demo_citizen`] made.
pub struct DemoCitizen {
    pub did: String,
    pub key_file: PathBuf,
    pub consent_id: Digest,
}

/// A demo citizen on a fresh devnet in `dir`: an identity with a declared
/// `name`, held by `holder`'s node and attested by `holder`, and a consent
/// letting `reader` read it for `purpose`. The key is written to
/// `<dir>/demo-citizen.key`; an existing key file means it was done.
pub async fn demo_citizen(
    dir: &Path,
    holder: &str,
    reader: &str,
    purpose: &str,
) -> anyhow::Result<Option<DemoCitizen>> {
    let key_file = dir.join("demo-citizen.key");
    if key_file.exists() {
        return Ok(None);
    }
    let department_key = load_signing_key(&dir.join("certs").join(holder).join("signing.key"))?;
    let connect = ConnectArgs {
        dir: Some(dir.to_owned()),
        department: Some(holder.to_owned()),
        ..ConnectArgs::default()
    };
    let mut session = Session::open(&connect, client_timeout()).await?;
    let commit = CommitArgs {
        wait: true,
        no_wait: false,
        timeout: Duration::from_secs(30),
    };
    let key = SigningKey::generate()?;
    crate::cmd::keys::write_secret(&key_file, key.to_pkcs8_pem()?.as_bytes(), false)?;
    session
        .submit(
            &key,
            Body::CreateIdentity(CreateIdentity {}),
            &commit,
            "the identity",
        )
        .await?;
    let (sealed, commitment) = seal(b"Demo Citizen".to_vec(), "text/plain".into())?;
    let mut blobs = client::blob_client(client::channel(&connect.target()?, None).await?);
    let uploaded = blob::upload(
        &mut blobs,
        io::Cursor::new(sealed),
        UploadHeader::default(),
        indicatif::ProgressBar::hidden(),
    )
    .await?;
    let declare = Body::DeclareAttribute(DeclareAttribute {
        name: "name".into(),
        cid: uploaded.cid,
        commitment: commitment.to_vec(),
        holder: session.department.clone(),
        size_bytes: uploaded.size_bytes,
    });
    session
        .submit(&key, declare, &commit, "the declaration")
        .await?;
    let attest = Body::AttestAttribute(AttestAttribute {
        citizen: key.public_key().as_bytes().to_vec(),
        name: "name".into(),
        commitment: commitment.to_vec(),
        expires_ms: 0,
    });
    session
        .submit(&department_key, attest, &commit, "the attestation")
        .await?;
    let consent = Body::GrantConsent(GrantConsent {
        department: reader.to_owned(),
        attributes: vec!["name".into()],
        purpose: purpose.to_owned(),
        expires_ms: govchain_node::now_ms() + 365 * 24 * 3600 * 1000,
        jurisdiction: String::new(),
    });
    let granted = session
        .submit(&key, consent, &commit, "the consent")
        .await?;
    Ok(Some(DemoCitizen {
        did: key.public_key().to_did_key(),
        key_file,
        consent_id: granted.id,
    }))
}

// ----- talking to the node --------------------------------------------------

/// A connection to one node, with what every transaction needs from it.
struct Session {
    node: NodeServiceClient<Channel>,
    identity: IdentityServiceClient<Channel>,
    chain_id: String,
    /// The node's department.
    department: String,
}

impl Session {
    async fn open(connect: &ConnectArgs, request_timeout: Duration) -> anyhow::Result<Self> {
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
            identity: client::identity_client(channel),
            chain_id: status.chain_id,
            department: status.node,
        })
    }

    /// Signs `body` at the signer's pending nonce + 1.
    async fn sign(&mut self, key: &SigningKey, body: Body) -> anyhow::Result<Signed> {
        let account = self
            .node
            .get_account(GetAccountRequest {
                public_key: key.public_key().as_bytes().to_vec(),
            })
            .await
            .map_err(rpc_error)?
            .into_inner();
        let nonce = account
            .pending_nonce
            .checked_add(1)
            .context("the signer's nonce is exhausted")?;
        let transaction = Transaction { body: Some(body) };
        Ok(envelope::sign(key, &self.chain_id, nonce, &transaction))
    }

    /// Signs and submits `body`, then (unless `--no-wait`) waits for the
    /// commit. A committed failure is a negative answer naming `what`.
    async fn submit(
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

    async fn get_identity(&mut self, citizen: &PublicKey) -> anyhow::Result<GetIdentityResponse> {
        self.identity
            .get_identity(GetIdentityRequest {
                public_key: citizen.as_bytes().to_vec(),
                did: String::new(),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| identity_error(status, citizen))
    }
}

fn identity_error(status: Status, citizen: &PublicKey) -> anyhow::Error {
    if status.code() == Code::NotFound {
        return anyhow::anyhow!(
            "{}; register {} with `govchain identity create --key KEYFILE`",
            status_line(&status),
            citizen.to_did_key()
        );
    }
    rpc_error(status)
}

/// A submitted transaction and, after the wait, its committed view.
#[derive(Debug, Serialize)]
struct Submitted {
    #[serde(serialize_with = "serialize_hex")]
    id: Digest,
    committed: Option<TransactionView>,
}

fn serialize_hex<S: serde::Serializer>(id: &Digest, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&id.to_hex())
}

impl Submitted {
    fn add_to(&self, fields: &mut Fields) {
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

fn print_view<T: Serialize>(view: &T, fields: &Fields, json: bool) -> anyhow::Result<()> {
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
fn client_timeout() -> Duration {
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
    };
    let bar = blob::progress_bar(sealed.len() as u64, json, "uploading");
    let uploaded = blob::upload(&mut blobs, io::Cursor::new(sealed), header, bar).await?;
    let body = Body::DeclareAttribute(DeclareAttribute {
        name: args.name.clone(),
        cid: uploaded.cid.clone(),
        commitment: commitment.to_vec(),
        holder: session.department.clone(),
        size_bytes: uploaded.size_bytes,
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
                "{did} has not declared {name:?}; the citizen declares it with `govchain identity declare`"
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
        let identity = session.get_identity(&args.citizen).await?;
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
            "{reason}; sign with the key of a department that genesis allows to attest it"
        ),
        None => err,
    }
}

// ----- consent ----------------------------------------------------------------

#[derive(Debug, Serialize)]
struct GrantView {
    consent_id: String,
    citizen: String,
    department: String,
    attributes: Vec<String>,
    purpose: String,
    expires_ms: u64,
    expires: String,
    jurisdiction: String,
    transaction: Submitted,
}

async fn grant(args: GrantArgs, json: bool) -> anyhow::Result<()> {
    let department = args.department.clone();
    let key = load_signing_key(&args.key)?;
    let mut session = Session::open(&args.connect.connect_args(), client_timeout()).await?;
    let expires_ms = expires_ms(args.expires);
    let body = Body::GrantConsent(GrantConsent {
        department: department.clone(),
        attributes: args.attributes.clone(),
        purpose: args.purpose.clone(),
        expires_ms,
        jurisdiction: args.jurisdiction.clone().unwrap_or_default(),
    });
    let transaction = session
        .submit(&key, body, &args.commit, "the consent")
        .await?;
    let view = GrantView {
        consent_id: transaction.id.to_hex(),
        citizen: key.public_key().to_did_key(),
        department,
        attributes: args.attributes,
        purpose: args.purpose,
        expires_ms,
        expires: format_time_ms(expires_ms),
        jurisdiction: args.jurisdiction.unwrap_or_default(),
        transaction,
    };
    let mut fields = Fields::new();
    fields
        .add("consent id", &view.consent_id)
        .add("citizen", &view.citizen)
        .add("department", &view.department)
        .add("attributes", view.attributes.join(", "))
        .add("purpose", &view.purpose)
        .add("expires", &view.expires)
        .add("jurisdiction", or_dash(&view.jurisdiction));
    view.transaction.add_to(&mut fields);
    print_view(&view, &fields, json)
}

#[derive(Debug, Serialize)]
struct RevokeView {
    consent_id: String,
    transaction: Submitted,
}

async fn revoke(args: RevokeArgs, json: bool) -> anyhow::Result<()> {
    let key = load_signing_key(&args.key)?;
    let mut session = Session::open(&args.connect.connect_args(), client_timeout()).await?;
    let body = Body::RevokeConsent(RevokeConsent {
        consent_id: args.consent.to_vec(),
    });
    let transaction = session
        .submit(&key, body, &args.commit, "the revocation")
        .await?;
    let view = RevokeView {
        consent_id: args.consent.to_hex(),
        transaction,
    };
    let mut fields = Fields::new();
    fields
        .add("consent id", &view.consent_id)
        .add("state", "revoked");
    view.transaction.add_to(&mut fields);
    print_view(&view, &fields, json)
}

async fn list_consents(args: CitizenArgs, json: bool) -> anyhow::Result<()> {
    let mut session = Session::open(&args.connect, client_timeout()).await?;
    let identity = session.get_identity(&args.citizen).await?;
    let now = now_ms();
    let views: Vec<ConsentView> = identity
        .consents
        .iter()
        .map(|consent| ConsentView::new(consent, now))
        .collect();
    if json {
        return output::print_json(&views);
    }
    if views.is_empty() {
        return output::print(&format!(
            "{} has granted no consent",
            args.citizen.to_did_key()
        ));
    }
    output::print(&consent_table(&views).render())
}

fn consent_table(views: &[ConsentView]) -> Table {
    let mut table = Table::new(&[
        "CONSENT ID",
        "DEPARTMENT",
        "ATTRIBUTES",
        "PURPOSE",
        "STATE",
        "EXPIRES",
    ]);
    for view in views {
        table.add(vec![
            view.consent_id.clone(),
            view.department.clone(),
            view.attributes.join(","),
            view.purpose.clone(),
            view.state.to_owned(),
            view.expires.clone(),
        ]);
    }
    table
}

/// A consent receipt after the Kantara Initiative Consent Receipt
/// Specification v1.1, the basis of ISO/IEC TS 27560.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ConsentReceipt {
    version: &'static str,
    jurisdiction: String,
    /// Seconds since the epoch, as the specification writes it.
    consent_timestamp: u64,
    collection_method: &'static str,
    #[serde(rename = "consentReceiptID")]
    consent_receipt_id: String,
    language: &'static str,
    pii_principal_id: String,
    pii_controllers: Vec<PiiController>,
    services: Vec<ReceiptService>,
    sensitive: bool,
    spi_cat: Vec<String>,
    /// Where the consent lives on chain and its state now.
    govchain: ReceiptChainFacts,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PiiController {
    pii_controller: String,
    on_behalf: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReceiptService {
    service: String,
    purposes: Vec<ReceiptPurpose>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReceiptPurpose {
    purpose: String,
    consent_type: &'static str,
    pii_category: Vec<String>,
    primary_purpose: bool,
    termination: String,
    third_party_disclosure: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReceiptChainFacts {
    block_height: u64,
    transaction_id: String,
    granted: String,
    expires: String,
    state: &'static str,
    revoked: Option<String>,
}

fn consent_receipt(consent: &ConsentRecord, now_ms: u64) -> ConsentReceipt {
    let view = ConsentView::new(consent, now_ms);
    let spi_cat: Vec<String> = consent
        .attributes
        .iter()
        .filter(|name| SENSITIVE_ATTRIBUTES.contains(&name.as_str()))
        .cloned()
        .collect();
    let termination = match &view.revoked {
        Some(revoked) => format!("revoked by the PII principal at {revoked}"),
        None => format!(
            "expires at {}; the PII principal may revoke it earlier with `govchain identity consent revoke {}`",
            view.expires, view.consent_id
        ),
    };
    ConsentReceipt {
        version: CONSENT_RECEIPT_VERSION,
        jurisdiction: consent.jurisdiction.clone(),
        consent_timestamp: consent.granted_ms / 1000,
        collection_method: "GrantConsent transaction signed by the PII principal's key and committed on the govchain ledger",
        consent_receipt_id: view.consent_id.clone(),
        language: "en",
        pii_principal_id: view.citizen.clone(),
        pii_controllers: vec![PiiController {
            pii_controller: consent.department.clone(),
            on_behalf: false,
        }],
        services: vec![ReceiptService {
            service: format!("govchain attribute access by {}", consent.department),
            purposes: vec![ReceiptPurpose {
                purpose: consent.purpose.clone(),
                consent_type: "EXPLICIT",
                pii_category: consent.attributes.clone(),
                primary_purpose: true,
                termination,
                third_party_disclosure: false,
            }],
        }],
        sensitive: !spi_cat.is_empty(),
        spi_cat,
        govchain: ReceiptChainFacts {
            block_height: consent.granted_height,
            transaction_id: view.consent_id,
            granted: view.granted,
            expires: view.expires,
            state: view.state,
            revoked: view.revoked,
        },
    }
}

async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let mut session = Session::open(&args.connect, client_timeout()).await?;
    let identity = session.get_identity(&args.citizen).await?;
    let consent = identity
        .consents
        .iter()
        .find(|consent| consent.consent_id == args.consent.as_bytes())
        .with_context(|| {
            format!(
                "{} has no consent {}; list them with `govchain identity consent list --citizen {}`",
                args.citizen.to_did_key(),
                args.consent,
                args.citizen.to_did_key()
            )
        })?;
    output::print_json(&consent_receipt(consent, now_ms()))
}

// ----- access, log, show --------------------------------------------------------

#[derive(Debug, Serialize)]
struct AccessedView {
    citizen: String,
    attribute: String,
    media_type: String,
    size_bytes: u64,
    file: PathBuf,
    cid: String,
    commitment: String,
    consent_id: String,
    purpose: String,
    access_transaction_id: String,
    block_height: Option<u64>,
}

async fn access(args: AccessArgs, json: bool) -> anyhow::Result<()> {
    let key = load_signing_key(&args.signing_key)?;
    if args.out.exists() && !args.force {
        anyhow::bail!(
            "{} already exists; pass --force to replace it or choose another --out",
            args.out.display()
        );
    }
    let mut session = Session::open(&args.connect, ACCESS_CALL_TIMEOUT).await?;
    let identity = session.get_identity(&args.citizen).await?;
    let attribute = find_attribute(&identity, &args.name)?;
    let body = Body::RecordAccess(RecordAccess {
        citizen: args.citizen.as_bytes().to_vec(),
        attribute: args.name.clone(),
        consent_id: args.consent.to_vec(),
        purpose: args.purpose.clone(),
    });
    let signed = session.sign(&key, body).await?;
    let id = signed.id;
    let sealed = read_sealed(&mut session, &args.citizen, signed, &attribute, json).await?;
    let value = open_sealed(&sealed, &attribute)?;
    write_value(&args.out, &value.value, args.force)?;
    // Committed before any byte was sent; ask where, for the record.
    let block_height = wait_for_commit(&mut session.node, &id, client_timeout())
        .await
        .ok()
        .map(|response| response.block_height);
    let view = AccessedView {
        citizen: args.citizen.to_did_key(),
        attribute: args.name,
        media_type: value.media_type,
        size_bytes: value.value.len() as u64,
        file: args.out,
        cid: attribute.cid,
        commitment: hex::encode(&attribute.commitment),
        consent_id: args.consent.to_hex(),
        purpose: args.purpose,
        access_transaction_id: id.to_hex(),
        block_height,
    };
    let mut fields = Fields::new();
    fields
        .add("attribute", &view.attribute)
        .add("media type", &view.media_type)
        .add("size", format!("{} bytes", view.size_bytes))
        .add("written to", view.file.display())
        .add("verified", "CID and commitment match the chain")
        .add("access", &view.access_transaction_id);
    if let Some(height) = view.block_height {
        fields.add("block height", height);
    }
    print_view(&view, &fields, json)
}

/// Sends the signed access with `ReadAttribute` and returns the sealed
/// attribute's bytes, checked against the CID the chain holds.
async fn read_sealed(
    session: &mut Session,
    citizen: &PublicKey,
    signed: Signed,
    attribute: &AttributeRecord,
    json: bool,
) -> anyhow::Result<Vec<u8>> {
    let mut stream = session
        .identity
        .read_attribute(ReadAttributeRequest {
            envelope: Some(signed.envelope),
        })
        .await
        .map_err(|status| access_error(status, citizen))?
        .into_inner();
    let mut sealed = Vec::new();
    let progress = (!json).then_some("reading");
    blob::receive(&mut stream, &mut sealed, 0, attribute.size_bytes, progress).await?;
    let cid = blob::cid_of_bytes(&sealed)?;
    anyhow::ensure!(
        cid.to_string() == attribute.cid,
        "the node sent bytes with CID {cid}, but the chain declares {}; nothing was written",
        attribute.cid
    );
    Ok(sealed)
}

fn access_error(status: Status, citizen: &PublicKey) -> anyhow::Error {
    match status.code() {
        Code::PermissionDenied => anyhow::anyhow!(
            "{}; nothing was released (the citizen's consents: `govchain identity consent list --citizen {}`)",
            status_line(&status),
            citizen.to_did_key()
        ),
        _ => rpc_error(status),
    }
}

/// Decodes a sealed attribute and checks its value against the chain's
/// commitment.
fn open_sealed(sealed: &[u8], attribute: &AttributeRecord) -> anyhow::Result<SealedAttribute> {
    let value =
        SealedAttribute::decode(sealed).context("the attribute blob is not a SealedAttribute")?;
    let commitment = attribute_commitment(&value.salt, &value.value);
    anyhow::ensure!(
        commitment.as_bytes() == attribute.commitment.as_slice(),
        "the value's commitment {commitment} differs from the chain's {}; nothing was written",
        hex::encode(&attribute.commitment)
    );
    Ok(value)
}

/// Writes a value with mode 0600: it is personal data.
fn write_value(path: &Path, value: &[u8], force: bool) -> anyhow::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).mode(0o600);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(value)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

async fn log(args: LogArgs, json: bool) -> anyhow::Result<()> {
    let citizen = &args.citizen.citizen;
    let mut session = Session::open(&args.citizen.connect, client_timeout()).await?;
    let accesses = session
        .identity
        .list_accesses(ListAccessesRequest {
            public_key: citizen.as_bytes().to_vec(),
            did: String::new(),
        })
        .await
        .map_err(|status| identity_error(status, citizen))?
        .into_inner()
        .accesses;
    let views: Vec<AccessView> = accesses.iter().map(AccessView::new).collect();
    if json {
        return output::print_json(&views);
    }
    if views.is_empty() {
        return output::print(&format!(
            "no department has read the data of {}",
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
    ]);
    for view in &views {
        table.add(vec![
            view.accessed.clone(),
            view.department.clone(),
            view.attribute.clone(),
            view.purpose.clone(),
            view.consent_id.clone(),
            view.transaction_id.clone(),
        ]);
    }
    output::print(&table.render())
}

async fn show(args: ShowArgs, json: bool) -> anyhow::Result<()> {
    let mut session = Session::open(&args.connect, client_timeout()).await?;
    let identity = session.get_identity(&args.citizen).await?;
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

// ----- login --------------------------------------------------------------------

#[derive(Debug, Serialize)]
struct ChallengeView {
    qr_payload: String,
    relying_party: String,
    nonce: String,
    expires_ms: u64,
    expires: String,
    svg_file: Option<PathBuf>,
}

async fn challenge(args: ChallengeArgs, json: bool) -> anyhow::Result<()> {
    let ttl_seconds = match args.ttl {
        None => 0,
        Some(ttl) => u32::try_from(ttl.as_secs())
            .ok()
            .filter(|secs| *secs > 0)
            .context("--ttl must be between 1s and 10m")?,
    };
    let mut session = Session::open(&args.connect, client_timeout()).await?;
    let response: CreateLoginChallengeResponse = session
        .identity
        .create_login_challenge(CreateLoginChallengeRequest {
            requested_attributes: args.attributes,
            ttl_seconds,
            website: args.website,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    if let Some(path) = &args.svg {
        std::fs::write(path, &response.qr_svg)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let view = ChallengeView {
        qr_payload: response.qr_payload,
        relying_party: response.relying_party,
        nonce: hex::encode(&response.nonce),
        expires_ms: response.expires_ms,
        expires: format_time_ms(response.expires_ms),
        svg_file: args.svg,
    };
    if json {
        return output::print_json(&view);
    }
    let mut fields = Fields::new();
    fields
        .add("payload", &view.qr_payload)
        .add("relying party", &view.relying_party)
        .add("expires", &view.expires);
    if let Some(path) = &view.svg_file {
        fields.add("svg", path.display());
    }
    output::print(&format!(
        "{}\n{}",
        terminal_qr(&view.qr_payload)?,
        fields.render()
    ))
}

/// The payload as a QR code of Unicode half blocks, light on dark so that
/// phones read it from a dark terminal.
fn terminal_qr(payload: &str) -> anyhow::Result<String> {
    use qrcode::render::unicode::Dense1x2;
    let code =
        qrcode::QrCode::new(payload.as_bytes()).context("the payload does not fit a QR code")?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .build())
}

/// The bytes a citizen signs to log in.
fn login_signing_bytes(payload: &str) -> Vec<u8> {
    [LOGIN_SIGNING_DOMAIN.as_bytes(), payload.as_bytes()].concat()
}

#[derive(Debug, Serialize)]
struct SignView {
    signature: String,
    public_key: String,
    did: String,
}

fn sign_login(args: SignArgs, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.payload.starts_with(LOGIN_PAYLOAD_PREFIX),
        "this is not a govchain login payload (it must start with {LOGIN_PAYLOAD_PREFIX:?}); nothing was signed"
    );
    let key = load_signing_key(&args.key)?;
    let signature = key.sign(&login_signing_bytes(&args.payload));
    let view = SignView {
        signature: hex::encode(signature.to_bytes()),
        public_key: key.public_key().to_hex(),
        did: key.public_key().to_did_key(),
    };
    if json {
        return output::print_json(&view);
    }
    // Only the signature, so that `$(govchain identity login sign ...)` works.
    output::print(&view.signature)
}

#[derive(Debug, Serialize)]
struct ClaimView {
    name: String,
    commitment: String,
    cid: String,
    attested_by: Vec<String>,
}

#[derive(Debug, Serialize)]
struct LoginView {
    did: String,
    public_key: String,
    relying_party: String,
    claims: Vec<ClaimView>,
}

impl LoginView {
    fn new(response: &CompleteLoginResponse) -> Self {
        Self {
            did: response.did.clone(),
            public_key: hex::encode(&response.public_key),
            relying_party: response.relying_party.clone(),
            claims: response
                .claims
                .iter()
                .map(|claim| ClaimView {
                    name: claim.name.clone(),
                    commitment: hex::encode(&claim.commitment),
                    cid: claim.cid.clone(),
                    attested_by: claim.attested_by.clone(),
                })
                .collect(),
        }
    }
}

async fn complete(args: CompleteArgs, json: bool) -> anyhow::Result<()> {
    let mut session = Session::open(&args.connect, client_timeout()).await?;
    let response = session
        .identity
        .complete_login(CompleteLoginRequest {
            qr_payload: args.payload,
            public_key: args.public_key.as_bytes().to_vec(),
            signature: args.signature.0,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let view = LoginView::new(&response);
    if json {
        return output::print_json(&view);
    }
    let mut fields = Fields::new();
    fields
        .add("login", "verified")
        .add("did", &view.did)
        .add("relying party", &view.relying_party);
    let mut table = Table::new(&["CLAIM", "ATTESTED BY", "COMMITMENT", "CID"]);
    for claim in &view.claims {
        table.add(vec![
            claim.name.clone(),
            claim.attested_by.join(","),
            claim.commitment.clone(),
            claim.cid.clone(),
        ]);
    }
    output::print(&format!("{}\n\n{}", fields.render(), table.render()))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// Just the identity commands, to test their parsing.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: IdentityCommand,
    }

    fn parse(args: &[&str]) -> Result<IdentityCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("identity").chain(args.iter().copied()))
            .map(|cli| cli.command)
    }

    fn did() -> String {
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
    fn consent_grant_splits_attributes_and_needs_an_expiry() {
        let parsed = parse(&[
            "consent",
            "grant",
            "--key",
            "k",
            "--department",
            "tax",
            "--attributes",
            "name,photo",
            "--purpose",
            "p",
            "--expires",
            "30d",
        ])
        .expect("parses");
        let IdentityCommand::Consent(ConsentArgs {
            command: ConsentCommand::Grant(grant),
        }) = parsed
        else {
            panic!("not grant");
        };
        assert_eq!(grant.attributes, ["name", "photo"]);
        assert_eq!(grant.expires, Duration::from_secs(30 * 86_400));
        assert!(
            parse(&[
                "consent",
                "grant",
                "--key",
                "k",
                "--department",
                "tax",
                "--attributes",
                "name",
                "--purpose",
                "p",
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
    fn login_complete_takes_a_did_and_a_hex_signature() {
        let did = did();
        let signature = "ab".repeat(64);
        let parsed = parse(&[
            "login",
            "complete",
            "--payload",
            "govchain-login:v1?x=1",
            "--public-key",
            &did,
            "--signature",
            &signature,
        ])
        .expect("parses");
        let IdentityCommand::Login(LoginArgs {
            command: LoginCommand::Complete(complete),
        }) = parsed
        else {
            panic!("not complete");
        };
        assert_eq!(complete.signature, SignatureBytes(vec![0xab; 64]));
        let short = parse(&[
            "login",
            "complete",
            "--payload",
            "p",
            "--public-key",
            &did,
            "--signature",
            "abcd",
        ]);
        assert!(short.is_err());
    }

    #[test]
    fn the_consent_receipt_has_the_kantara_shape() {
        let citizen = SigningKey::from_seed([3; 32]).public_key();
        let consent = ConsentRecord {
            consent_id: vec![0xab; 32],
            citizen: citizen.as_bytes().to_vec(),
            department: "tax".into(),
            attributes: vec!["name".into(), "photo".into()],
            purpose: "benefit-check".into(),
            granted_ms: 1_700_000_000_123,
            expires_ms: 1_800_000_000_000,
            jurisdiction: "EU".into(),
            granted_height: 42,
            revoked: false,
            revoked_ms: 0,
        };
        let receipt =
            serde_json::to_value(consent_receipt(&consent, 1_700_000_001_000)).expect("json");
        assert_eq!(receipt["version"], "KI-CR-v1.1.0");
        assert_eq!(receipt["jurisdiction"], "EU");
        assert_eq!(receipt["consentTimestamp"], 1_700_000_000);
        assert_eq!(receipt["consentReceiptID"], "ab".repeat(32));
        assert_eq!(receipt["piiPrincipalId"], citizen.to_did_key());
        assert_eq!(receipt["piiControllers"][0]["piiController"], "tax");
        let purpose = &receipt["services"][0]["purposes"][0];
        assert_eq!(purpose["purpose"], "benefit-check");
        assert_eq!(purpose["consentType"], "EXPLICIT");
        assert_eq!(purpose["piiCategory"], serde_json::json!(["name", "photo"]));
        assert_eq!(purpose["primaryPurpose"], true);
        assert!(
            purpose["termination"]
                .as_str()
                .expect("text")
                .contains("2027-01-15"),
            "{purpose}"
        );
        assert!(receipt["services"][0]["service"].is_string());
        assert_eq!(receipt["sensitive"], true);
        assert_eq!(receipt["spiCat"], serde_json::json!(["photo"]));
        assert_eq!(receipt["govchain"]["blockHeight"], 42);
        assert_eq!(receipt["govchain"]["state"], "valid");
    }

    #[test]
    fn a_revoked_consent_says_so_in_its_receipt() {
        let consent = ConsentRecord {
            consent_id: vec![1; 32],
            department: "health".into(),
            attributes: vec!["name".into()],
            revoked: true,
            revoked_ms: 1_000,
            expires_ms: 2_000_000,
            ..ConsentRecord::default()
        };
        let receipt = serde_json::to_value(consent_receipt(&consent, 5)).expect("json");
        assert_eq!(receipt["sensitive"], false);
        assert_eq!(receipt["govchain"]["state"], "revoked");
        assert!(
            receipt["services"][0]["purposes"][0]["termination"]
                .as_str()
                .expect("text")
                .starts_with("revoked")
        );
    }

    #[test]
    fn a_sealed_value_opens_only_against_its_commitment() {
        let (sealed, commitment) = seal(b"Alice".to_vec(), "text/plain".into()).expect("seal");
        let mut attribute = AttributeRecord {
            commitment: commitment.to_vec(),
            ..AttributeRecord::default()
        };
        let opened = open_sealed(&sealed, &attribute).expect("opens");
        assert_eq!(opened.value, b"Alice");
        assert_eq!(opened.salt.len(), SALT_BYTES);
        attribute.commitment = vec![0; 32];
        assert!(open_sealed(&sealed, &attribute).is_err());
    }

    #[test]
    fn login_signatures_cover_the_domain_and_the_payload() {
        let key = SigningKey::from_seed([5; 32]);
        let payload = "govchain-login:v1?chain=c&rp=tax&site=&nonce=00&attrs=name&exp=1";
        let signature = key.sign(&login_signing_bytes(payload));
        let signed = format!("govchain/login/v1\n{payload}");
        assert!(
            key.public_key()
                .verify(signed.as_bytes(), &signature)
                .is_ok()
        );
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
