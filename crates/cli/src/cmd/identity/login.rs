//! `govchain identity login challenge|sign|complete`: QR-code login of a
//! citizen to a department's website, with the QR code drawn in the
//! terminal.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use govchain_crypto::PublicKey;
use govchain_proto::identity::v1::{
    CompleteLoginRequest, CompleteLoginResponse, CreateLoginChallengeRequest,
    CreateLoginChallengeResponse,
};
use serde::Serialize;

use super::{Session, client_timeout, parse_attribute_name, parse_citizen};
use crate::client::{ConnectArgs, rpc_error};
use crate::cmd::keys::load_signing_key;
use crate::cmd::tx::parse_duration;
use crate::output::{self, Fields, Table, format_time_ms};

/// The citizen's device signs this prefix and then the QR payload
/// (`identity.proto`, `CompleteLoginRequest.signature`).
const LOGIN_SIGNING_DOMAIN: &str = "govchain/login/v1\n";
/// Every login payload starts so; anything else is not signed.
pub(super) const LOGIN_PAYLOAD_PREFIX: &str = "govchain-login:v1?";

#[derive(Debug, Args)]
pub(super) struct LoginArgs {
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
    /// As the citizen's device: sign a web login's payload and send it to the website.
    #[command(
        long_about = "Answer a login shown by a website (the node's web portal): sign the \
            payload as `identity login sign` does and post the answer to the callback URL the \
            payload names (its cb= field), over HTTPS checked against the consortium CA \
            (--ca, or --dir for a devnet). The website's page then logs you in by itself. \
            Prints the website's answer; exits 1 if it refused the login (an expired or \
            already used code, or a key with no identity on chain).",
        after_help = "Example (the payload is the text under the QR code's \"Cannot scan?\"):\n  \
            govchain identity login respond --key alice.key --dir devnet \\\n    \
            'govchain-login:v1?chain=...&cb=https://127.0.0.1:8443/login/callback&scope=account'"
    )]
    Respond(super::device::RespondArgs),
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

pub(super) async fn run(args: LoginArgs, json: bool) -> anyhow::Result<()> {
    match args.command {
        LoginCommand::Challenge(args) => challenge(args, json).await,
        LoginCommand::Sign(args) => sign_login(args, json),
        LoginCommand::Respond(args) => super::device::respond(args, json).await,
        LoginCommand::Complete(args) => complete(args, json).await,
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
            ..CreateLoginChallengeRequest::default()
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
pub(super) fn login_signing_bytes(payload: &str) -> Vec<u8> {
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
    use govchain_crypto::SigningKey;

    use super::*;
    use crate::cmd::identity::IdentityCommand;
    use crate::cmd::identity::tests::{did, parse};

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
}
