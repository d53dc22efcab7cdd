//! The citizen's device answering a website: `govchain identity login
//! respond` signs a login payload and posts the answer to the callback the
//! payload names, over HTTPS checked against the consortium CA;
//! `govchain identity respond` also answers a request to sign a
//! transaction (`govchain_portal::request`), building the transaction from
//! the request itself.
//!
//! The post is one small HTTP/1.1 request over the hyper and rustls that
//! tonic already brings, rather than a second HTTP client crate.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

use govchain_portal::request::{DeviceSignature, SIGN_PAYLOAD_PREFIX, SignRequest};

use super::login::{LOGIN_PAYLOAD_PREFIX, login_signing_bytes};
use crate::cmd::keys::load_signing_key;
use crate::devnet_file::DevnetFile;
use crate::exit::Negative;
use crate::output::{self, Fields};

/// How long the whole answer may take.
const RESPOND_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest reply read from the website.
const REPLY_BYTES_MAX: usize = 64 * 1024;

#[derive(Debug, Args)]
pub(crate) struct RespondArgs {
    /// The citizen's key file.
    #[arg(long, value_name = "KEYFILE")]
    key: PathBuf,
    /// The consortium CA certificate (PEM) the website's certificate chains to.
    #[arg(long, env = "GOVCHAIN_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Devnet directory: trust its consortium CA (instead of --ca).
    #[arg(long, env = "GOVCHAIN_DIR", value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The login payload, as shown under the QR code.
    #[arg(value_name = "PAYLOAD")]
    payload: String,
}

/// What the device posts (the portal's `login::DeviceAnswer`).
#[derive(Debug, Serialize)]
struct Answer<'a> {
    payload: &'a str,
    public_key: String,
    signature: String,
}

/// What the website answers.
#[derive(Debug, Deserialize, Serialize)]
struct Reply {
    ok: bool,
    message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    did: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    transaction_id: String,
}

/// `identity respond`: a login payload or a signing request.
pub(super) async fn respond_any(args: RespondArgs, json: bool) -> anyhow::Result<()> {
    if args.payload.starts_with(SIGN_PAYLOAD_PREFIX) {
        return sign_request(args, json).await;
    }
    anyhow::ensure!(
        args.payload.starts_with(LOGIN_PAYLOAD_PREFIX),
        "this is neither a govchain login payload ({LOGIN_PAYLOAD_PREFIX:?}) nor a signing request \
         ({SIGN_PAYLOAD_PREFIX:?}); nothing was signed"
    );
    respond(args, json).await
}

/// Signs the transaction a request describes and posts it to its callback.
async fn sign_request(args: RespondArgs, json: bool) -> anyhow::Result<()> {
    let request = SignRequest::parse(&args.payload)?;
    let target = CallbackUrl::parse(&request.callback)?;
    let ca_pem = trusted_ca(&args)?;
    let key = load_signing_key(&args.key)?;
    // What the citizen's app would show before the holder approves.
    eprintln!("signing: {}", request.describe());
    let signed = crate::envelope::sign(&key, &request.chain, request.nonce, &request.transaction());
    let answer = DeviceSignature {
        payload: args.payload.clone(),
        envelope: hex::encode(prost::Message::encode_to_vec(&signed.envelope)),
    };
    let (status, reply) = post_json(&target, &ca_pem, serde_json::to_vec(&answer)?).await?;
    let reply: Reply = serde_json::from_slice(&reply).with_context(|| {
        format!(
            "{} answered HTTP {status} with something that is not a reply",
            request.callback
        )
    })?;
    finish(
        &target,
        &reply,
        status,
        json,
        "the website or the chain refused the transaction",
    )
}

/// `identity login respond`: signs a login payload and posts the answer.
pub(super) async fn respond(args: RespondArgs, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.payload.starts_with(LOGIN_PAYLOAD_PREFIX),
        "this is not a govchain login payload (it must start with {LOGIN_PAYLOAD_PREFIX:?}); nothing was signed"
    );
    let callback = payload_field(&args.payload, "cb").context(
        "the payload names no callback (cb=): this login is completed by the website \
         itself; sign it with `govchain identity login sign` and give the website the signature",
    )?;
    let target = CallbackUrl::parse(callback)?;
    let ca_pem = trusted_ca(&args)?;
    let key = load_signing_key(&args.key)?;
    let signature = key.sign(&login_signing_bytes(&args.payload));
    let answer = Answer {
        payload: &args.payload,
        public_key: key.public_key().to_hex(),
        signature: hex::encode(signature.to_bytes()),
    };
    let (status, reply) = post_json(&target, &ca_pem, serde_json::to_vec(&answer)?).await?;
    let reply: Reply = serde_json::from_slice(&reply).with_context(|| {
        format!("{callback} answered HTTP {status} with something that is not a login reply")
    })?;
    finish(
        &target,
        &reply,
        status,
        json,
        "the website refused the login",
    )
}

/// Prints the website's reply; a refusal is a negative answer (exit 1).
fn finish(
    target: &CallbackUrl,
    reply: &Reply,
    status: http::StatusCode,
    json: bool,
    refused: &str,
) -> anyhow::Result<()> {
    if json {
        output::print_json(reply)?;
    } else {
        let mut fields = Fields::new();
        fields
            .add("website", &target.authority)
            .add("answer", &reply.message);
        if !reply.did.is_empty() {
            fields.add("did", &reply.did);
        }
        if !reply.transaction_id.is_empty() {
            fields.add("transaction", &reply.transaction_id);
        }
        output::print(&fields.render())?;
    }
    if !reply.ok {
        return Err(Negative::new(format!("{refused} (HTTP {status}): {}", reply.message)).into());
    }
    Ok(())
}

/// The consortium CA certificate that the website's must chain to.
fn trusted_ca(args: &RespondArgs) -> anyhow::Result<Vec<u8>> {
    let ca = match (&args.ca, &args.dir) {
        (Some(ca), _) => ca.clone(),
        (None, Some(dir)) => DevnetFile::load(dir)?.ca_certificate(dir),
        (None, None) => anyhow::bail!(
            "give --ca FILE (the consortium CA certificate) or --dir DEVNET_DIR to check the website's certificate"
        ),
    };
    std::fs::read(&ca).with_context(|| format!("cannot read {}", ca.display()))
}

/// [`post`] within [`RESPOND_TIMEOUT`].
async fn post_json(
    target: &CallbackUrl,
    ca_pem: &[u8],
    body: Vec<u8>,
) -> anyhow::Result<(http::StatusCode, bytes::Bytes)> {
    tokio::time::timeout(RESPOND_TIMEOUT, post(target, ca_pem, body))
        .await
        .with_context(|| {
            format!(
                "{} did not answer within {} s",
                target.authority,
                RESPOND_TIMEOUT.as_secs()
            )
        })?
}

/// A field of a login payload's query part.
fn payload_field<'a>(payload: &'a str, name: &str) -> Option<&'a str> {
    payload
        .strip_prefix(LOGIN_PAYLOAD_PREFIX)?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// An https callback URL, split into what the connection needs.
#[derive(Debug, PartialEq, Eq)]
struct CallbackUrl {
    /// Host as the certificate must name it (no brackets for IPv6).
    host: String,
    port: u16,
    /// host:port as written, for the Host header.
    authority: String,
    path: String,
}

impl CallbackUrl {
    fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("https://")
            .with_context(|| format!("callback {url:?} is not an https:// URL"))?;
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .with_context(|| format!("callback {url:?}: unclosed '[' in the host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        anyhow::ensure!(!host.is_empty(), "callback {url:?} has no host");
        let port = match port {
            Some(port) => port
                .parse()
                .with_context(|| format!("callback {url:?}: port {port:?} is not a number"))?,
            None => 443,
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// Posts `body` as JSON to `target` and returns the status and the reply.
async fn post(
    target: &CallbackUrl,
    ca_pem: &[u8],
    body: Vec<u8>,
) -> anyhow::Result<(http::StatusCode, bytes::Bytes)> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(certificate.context("the CA file holds a malformed certificate")?)
            .context("the CA certificate is not usable as a trust anchor")?;
    }
    anyhow::ensure!(!roots.is_empty(), "the CA file holds no certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_name = rustls::pki_types::ServerName::try_from(target.host.clone())
        .with_context(|| format!("{:?} is not a host name or address", target.host))?;
    let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .with_context(|| format!("cannot connect to {}", target.authority))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(server_name, tcp)
        .await
        .with_context(|| {
            format!(
                "TLS with {} failed: is its certificate from this consortium CA?",
                target.authority
            )
        })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(connection);
    let request = http::Request::post(&target.path)
        .header(http::header::HOST, &target.authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes::Bytes::from(body)))?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("{} closed the connection", target.authority))?;
    let status = response.status();
    let reply = Limited::new(response.into_body(), REPLY_BYTES_MAX)
        .collect()
        .await
        .map_err(|err| anyhow::anyhow!("reading the reply failed: {err}"))?
        .to_bytes();
    driver.abort();
    Ok((status, reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callback_is_read_from_the_payload() {
        let payload = "govchain-login:v1?chain=c&rp=tax&site=s&nonce=00&attrs=&exp=1&cb=https://127.0.0.1:8443/login/callback&scope=account";
        assert_eq!(
            payload_field(payload, "cb"),
            Some("https://127.0.0.1:8443/login/callback")
        );
        assert_eq!(payload_field(payload, "scope"), Some("account"));
        assert_eq!(payload_field("govchain-login:v1?chain=c", "cb"), None);
    }

    #[test]
    fn callback_urls_split_into_host_port_and_path() {
        assert_eq!(
            CallbackUrl::parse("https://127.0.0.1:8443/login/callback").expect("url"),
            CallbackUrl {
                host: "127.0.0.1".into(),
                port: 8443,
                authority: "127.0.0.1:8443".into(),
                path: "/login/callback".into(),
            }
        );
        let v6 = CallbackUrl::parse("https://[::1]:9/cb").expect("url");
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 9));
        let default_port = CallbackUrl::parse("https://portal.tax.example").expect("url");
        assert_eq!((default_port.port, default_port.path.as_str()), (443, "/"));
        assert!(CallbackUrl::parse("http://127.0.0.1/cb").is_err());
        assert!(CallbackUrl::parse("https://127.0.0.1:x/cb").is_err());
    }
}
