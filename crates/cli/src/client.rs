//! Finding a node and connecting to it: the connection flags, `devnet.json`
//! lookup, the mutual-TLS channel, and one-line gRPC errors.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use govchain_pki::{Genesis, read_pem};
use govchain_proto::blob::v1::blob_service_client::BlobServiceClient;
use govchain_proto::identity::v1::identity_service_client::IdentityServiceClient;
use govchain_proto::node::v1::node_service_client::NodeServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use crate::devnet_file::DevnetFile;
use crate::output::one_line;

/// How long to wait for TCP and the TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one unary call may take until the response starts. Streams are
/// not cut off: the limit ends when the response headers arrive.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest blob message accepted: 1 MiB of data (one chunk of the blob
/// profile) plus room for framing, as the node's `BlobService` allows.
pub const BLOB_MESSAGE_BYTES_MAX: usize = BLOB_MESSAGE_DATA_BYTES_MAX + 64 * 1024;
/// Blob data per upload message: one chunk of the unixfs-v1-2025 profile.
pub const BLOB_MESSAGE_DATA_BYTES_MAX: usize = 1024 * 1024;
/// `govchain devnet` writes its files here unless told otherwise.
const DEVNET_DIR_DEFAULT: &str = "devnet";

/// Where the node is and which certificates to use. Either `--dir` (a devnet
/// directory) or `--node` with `--ca`, `--cert` and `--key`; explicit flags
/// override what `--dir` says. With none of them, `./devnet` is used when it
/// holds a `devnet.json`.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Connection")]
pub struct ConnectArgs {
    /// Node client API URL, e.g. https://127.0.0.1:7050.
    #[arg(long, env = "GOVCHAIN_NODE", value_name = "URL")]
    pub node: Option<String>,
    /// Consortium CA certificate (PEM) that signed the node's certificate.
    #[arg(long, env = "GOVCHAIN_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) issued by the consortium CA.
    #[arg(long, env = "GOVCHAIN_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of the client certificate.
    #[arg(long, env = "GOVCHAIN_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Devnet directory: node URLs and certificates come from its devnet.json.
    #[arg(long, env = "GOVCHAIN_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// With --dir: act as this department (its client certificate and node).
    /// Default: the first node.
    #[arg(long, env = "GOVCHAIN_DEPARTMENT", value_name = "NAME")]
    pub department: Option<String>,
    /// TLS name to check the node's certificate against, when the URL's host
    /// is not in it, e.g. health.node.govchain.
    #[arg(long, env = "GOVCHAIN_SERVER_NAME", value_name = "NAME")]
    pub server_name: Option<String>,
}

/// [`ConnectArgs`] for a citizen's commands, where `--key` is the citizen's
/// signing key: the client certificate's key is `--tls-key` here. Without
/// `--department`, which `consent grant` uses for the consent's department;
/// [`CitizenConnectArgs`] adds it back.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Connection")]
pub struct NodeConnectArgs {
    /// Node client API URL, e.g. https://127.0.0.1:7050.
    #[arg(long, env = "GOVCHAIN_NODE", value_name = "URL")]
    pub node: Option<String>,
    /// Consortium CA certificate (PEM) that signed the node's certificate.
    #[arg(long, env = "GOVCHAIN_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) issued by the consortium CA.
    #[arg(long, env = "GOVCHAIN_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of the client certificate (--key elsewhere; here
    /// --key is the citizen's signing key).
    #[arg(long = "tls-key", env = "GOVCHAIN_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Devnet directory: node URLs and certificates come from its devnet.json.
    #[arg(long, env = "GOVCHAIN_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// TLS name to check the node's certificate against, when the URL's host
    /// is not in it.
    #[arg(long, env = "GOVCHAIN_SERVER_NAME", value_name = "NAME")]
    pub server_name: Option<String>,
}

impl NodeConnectArgs {
    /// The devnet's first node, or `--node`.
    pub fn connect_args(&self) -> ConnectArgs {
        self.with_department(None)
    }

    fn with_department(&self, department: Option<String>) -> ConnectArgs {
        ConnectArgs {
            node: self.node.clone(),
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.tls_key.clone(),
            dir: self.dir.clone(),
            department,
            server_name: self.server_name.clone(),
        }
    }
}

/// [`NodeConnectArgs`] with `--department`: which department's node the
/// citizen talks to (and whose client certificate is used).
#[derive(Debug, Clone, Default, Args)]
pub struct CitizenConnectArgs {
    #[command(flatten)]
    pub node: NodeConnectArgs,
    /// With --dir: talk to this department's node, with its client
    /// certificate. Default: the first node.
    #[arg(
        long,
        env = "GOVCHAIN_DEPARTMENT",
        value_name = "NAME",
        help_heading = "Connection"
    )]
    pub department: Option<String>,
}

impl CitizenConnectArgs {
    pub fn connect_args(&self) -> ConnectArgs {
        self.node.with_department(self.department.clone())
    }
}

/// One node to talk to, with everything needed for mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The node's department name, when known from devnet.json.
    pub name: Option<String>,
    pub url: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub server_name: Option<String>,
}

/// A loaded devnet.json and the directory it lives in.
#[derive(Debug, Clone)]
pub struct Devnet {
    pub dir: PathBuf,
    pub file: DevnetFile,
}

impl ConnectArgs {
    fn any_explicit(&self) -> bool {
        self.node.is_some() || self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// The devnet from `--dir`, or `./devnet` when no connection flag is given
    /// and it exists.
    pub fn devnet(&self) -> anyhow::Result<Option<Devnet>> {
        let dir = match &self.dir {
            Some(dir) => dir.clone(),
            None => {
                let fallback = PathBuf::from(DEVNET_DIR_DEFAULT);
                if self.any_explicit() || !DevnetFile::path(&fallback).exists() {
                    return Ok(None);
                }
                fallback
            }
        };
        let file = DevnetFile::load(&dir)?;
        Ok(Some(Devnet { dir, file }))
    }

    /// The node to talk to: `--node`, else the department's devnet node.
    pub fn target(&self) -> anyhow::Result<Target> {
        let devnet = self.devnet()?;
        let department = self.department_in(devnet.as_ref())?;
        let url = match (&self.node, &devnet, &department) {
            (Some(url), _, _) => url.clone(),
            (None, Some(devnet), Some(department)) => devnet
                .file
                .node(department)
                .map(|node| node.url.clone())
                .with_context(|| no_such_department(department, devnet))?,
            _ => anyhow::bail!(
                "no node given: pass --dir DEVNET_DIR (after `govchain devnet`), or --node URL with --ca, --cert and --key"
            ),
        };
        let name = match self.node {
            Some(_) => None,
            None => department.clone(),
        };
        self.target_for(name, &url, devnet.as_ref(), department.as_deref())
    }

    /// Every devnet node, or just `--node` when given.
    pub fn all_targets(&self) -> anyhow::Result<Vec<Target>> {
        if self.node.is_some() {
            return Ok(vec![self.target()?]);
        }
        let Some(devnet) = self.devnet()? else {
            anyhow::bail!(
                "no nodes given: pass --dir DEVNET_DIR (after `govchain devnet`), or --node URL with --ca, --cert and --key"
            );
        };
        let department = self.department_in(Some(&devnet))?;
        devnet
            .file
            .nodes
            .iter()
            .map(|node| {
                self.target_for(
                    Some(node.name.clone()),
                    &node.url,
                    Some(&devnet),
                    department.as_deref(),
                )
            })
            .collect()
    }

    /// Validator names in genesis order, when a devnet's genesis is at hand;
    /// empty otherwise. Only used to put names next to validator indexes.
    pub fn validator_names(&self) -> Vec<String> {
        let Ok(Some(devnet)) = self.devnet() else {
            return Vec::new();
        };
        match Genesis::load(&devnet.file.genesis_path(&devnet.dir)) {
            Ok(genesis) => genesis.validators.into_iter().map(|v| v.name).collect(),
            Err(err) => {
                tracing::debug!(error = %err, "no validator names");
                Vec::new()
            }
        }
    }

    /// `--department`, else the devnet's first node; checked against the
    /// devnet when there is one.
    fn department_in(&self, devnet: Option<&Devnet>) -> anyhow::Result<Option<String>> {
        match (&self.department, devnet) {
            (Some(department), Some(devnet)) => {
                anyhow::ensure!(
                    devnet.file.node(department).is_some(),
                    "{}",
                    no_such_department(department, devnet)
                );
                Ok(Some(department.clone()))
            }
            (Some(department), None) => Ok(Some(department.clone())),
            (None, Some(devnet)) => Ok(devnet.file.first_node().map(|node| node.name.clone())),
            (None, None) => Ok(None),
        }
    }

    fn target_for(
        &self,
        name: Option<String>,
        url: &str,
        devnet: Option<&Devnet>,
        department: Option<&str>,
    ) -> anyhow::Result<Target> {
        let from_devnet = |flag: &str, path: &dyn Fn(&DevnetFile, &Path, &str) -> PathBuf| match (
            devnet, department,
        ) {
            (Some(devnet), Some(department)) => Ok(path(&devnet.file, &devnet.dir, department)),
            _ => Err(anyhow::anyhow!(
                "--node is given but {flag} is missing; pass --ca, --cert and --key (or --dir DEVNET_DIR)"
            )),
        };
        let ca = match &self.ca {
            Some(path) => path.clone(),
            None => from_devnet("--ca", &|file, dir, _| file.ca_certificate(dir))?,
        };
        let cert = match &self.cert {
            Some(path) => path.clone(),
            None => from_devnet("--cert", &|file, dir, dept| {
                file.client_certificate(dir, dept)
            })?,
        };
        let key = match &self.key {
            Some(path) => path.clone(),
            None => from_devnet("--key", &|file, dir, dept| file.client_key(dir, dept))?,
        };
        Ok(Target {
            name,
            url: normalize_url(url)?,
            ca,
            cert,
            key,
            server_name: self.server_name.clone(),
        })
    }
}

fn no_such_department(department: &str, devnet: &Devnet) -> String {
    format!(
        "department {department:?} has no node in {} (nodes: {})",
        DevnetFile::path(&devnet.dir).display(),
        devnet.file.node_names()
    )
}

/// Adds `https://` to a bare `host:port`, and refuses plain HTTP: nodes only
/// speak mutual TLS.
pub fn normalize_url(url: &str) -> anyhow::Result<String> {
    let url = url.trim();
    if let Some(rest) = url.strip_prefix("http://") {
        anyhow::bail!("govchain nodes only accept TLS; use https://{rest}");
    }
    if url.contains("://") {
        anyhow::ensure!(
            url.starts_with("https://"),
            "node URL {url:?} must start with https://"
        );
        return Ok(url.to_owned());
    }
    Ok(format!("https://{url}"))
}

/// Opens a mutual-TLS channel to the node. The node's certificate must chain
/// to the consortium CA and name the URL's host (`localhost`, `127.0.0.1` and
/// `::1` are in every node certificate), or `--server-name`.
pub async fn connect(target: &Target) -> anyhow::Result<NodeServiceClient<Channel>> {
    Ok(NodeServiceClient::new(
        channel(target, Some(REQUEST_TIMEOUT)).await?,
    ))
}

/// A channel whose calls may take `request_timeout` until their response
/// starts, for every service of the node. `None` suits a client-streaming
/// upload, whose response starts only after the last byte was sent; the
/// connection still times out after [`CONNECT_TIMEOUT`].
pub async fn channel(
    target: &Target,
    request_timeout: Option<Duration>,
) -> anyhow::Result<Channel> {
    let ca = read_pem(&target.ca)?;
    let cert = read_pem(&target.cert)?;
    let key = read_pem(&target.key)?;
    // A node refuses such a certificate during the TLS handshake, which a
    // client only sees as a closed connection: name the reason first.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    govchain_pki::check_issued_by(&cert, &ca, now).map_err(|mismatch| {
        anyhow::anyhow!(
            "client certificate {} {mismatch}; the node would refuse it: use a certificate issued by this chain's consortium CA (`govchain certs issue-client`), or the CA file of its chain with --ca",
            target.cert.display()
        )
    })?;
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key));
    if let Some(name) = &target.server_name {
        tls = tls.domain_name(name.clone());
    }
    let url = &target.url;
    let endpoint = Endpoint::from_shared(url.clone())
        .with_context(|| format!("{url:?} is not a valid node URL"))?
        .tls_config(tls)
        .map_err(|err| anyhow::anyhow!("bad TLS settings for {url}: {}", error_chain(&err)))?
        .connect_timeout(CONNECT_TIMEOUT);
    let endpoint = match request_timeout {
        Some(timeout) => endpoint.timeout(timeout),
        None => endpoint,
    };
    endpoint
        .connect()
        .await
        .map_err(|err| connect_error(url, &error_chain(&err)))
}

/// The same channel as [`connect`] for every service of the node: unary
/// calls get [`REQUEST_TIMEOUT`].
pub async fn connect_channel(target: &Target) -> anyhow::Result<Channel> {
    channel(target, Some(REQUEST_TIMEOUT)).await
}

/// A `BlobService` client that accepts the node's blob messages (1 MiB of
/// data plus framing) both ways.
pub fn blob_client(channel: Channel) -> BlobServiceClient<Channel> {
    BlobServiceClient::new(channel)
        .max_decoding_message_size(BLOB_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(BLOB_MESSAGE_BYTES_MAX)
}

/// An `IdentityService` client; `ReadAttribute` streams blob messages.
pub fn identity_client(channel: Channel) -> IdentityServiceClient<Channel> {
    IdentityServiceClient::new(channel).max_decoding_message_size(BLOB_MESSAGE_BYTES_MAX)
}

fn connect_error(url: &str, cause: &str) -> anyhow::Error {
    let lower = cause.to_lowercase();
    let hint = if lower.contains("certificate") || lower.contains("tls") {
        "check that --ca is the consortium CA and that the URL's host is in the node certificate (or pass --server-name)"
    } else {
        "is it running? try `govchain devnet`"
    };
    anyhow::anyhow!("cannot reach node at {url}: {cause}; {hint}")
}

/// An error and all its causes on one line, without repeats: tonic's
/// transport errors say little at the top and the reason at the bottom.
pub fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(cause) = current {
        let text = one_line(&cause.to_string());
        if !text.is_empty() && !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        current = cause.source();
    }
    parts.join(": ")
}

/// The canonical gRPC name of a status code, as in the API docs.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `<CODE>: <message>` on one line.
pub fn status_line(status: &Status) -> String {
    use tonic_types::StatusExt as _;
    let message = one_line(status.message());
    let code = code_name(status.code());
    // The node's reason, where it says more than the code.
    let head = match status.get_details_error_info() {
        Some(info) if info.reason != code && !info.reason.is_empty() => {
            format!("{code} ({})", info.reason)
        }
        _ => code.to_owned(),
    };
    if message.is_empty() {
        head
    } else {
        format!("{head}: {message}")
    }
}

/// The department whose signing key signed a transaction that the node
/// refused because it came with another department's certificate.
fn wrong_certificate_for(status: &Status) -> Option<&str> {
    if status.code() != Code::PermissionDenied {
        return None;
    }
    let rest = status
        .message()
        .strip_prefix("the transaction is signed with department \"")?;
    rest.split_once("\"'s signing key but arrived with")
        .map(|(department, _)| department)
}

/// What [`rpc_error`] adds to a `PERMISSION_DENIED`; commands that know
/// better replace it.
pub const PERMISSION_DENIED_HINT: &str = "; this department may not do that";

/// A failed call as an error for `main` to print: the status line, plus what
/// to do about it where the code says enough.
pub fn rpc_error(status: Status) -> anyhow::Error {
    if let Some(department) = wrong_certificate_for(&status) {
        return anyhow::anyhow!(
            "{}; connect as {department}: `--department {department}` with a devnet, else its client certificate with --cert and --key",
            status_line(&status)
        );
    }
    let hint = match status.code() {
        Code::Unauthenticated => {
            "; the node refused the client certificate: use one issued by this consortium's CA (`govchain certs issue-client`)"
        }
        Code::PermissionDenied => PERMISSION_DENIED_HINT,
        Code::Unavailable => {
            "; the node may be changing view, starting or stopping: retry in a moment"
        }
        Code::DeadlineExceeded => "; the node did not answer in time: check `govchain status`",
        Code::Cancelled | Code::Unknown if error_chain(&status).contains("connection closed") => {
            "; the node closed the connection: it may be stopping, or it refused this connection (a certificate of another chain is named before connecting): check `govchain status`"
        }
        Code::ResourceExhausted => "; the node is busy or a limit was hit: retry later",
        _ => "",
    };
    anyhow::anyhow!("{}{hint}", status_line(&status))
}

#[cfg(test)]
mod tests {
    use crate::devnet_file::DevnetNode;

    use super::*;

    fn devnet_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = |name: &str, port: u16| DevnetNode {
            name: name.into(),
            url: format!("https://127.0.0.1:{port}"),
            data_dir: format!("nodes/{name}").into(),
            config: format!("nodes/{name}/node.toml").into(),
            pid: None,
            metrics_url: None,
            portal_url: None,
        };
        DevnetFile {
            chain_id: "govchain-devnet".into(),
            genesis: "genesis.json".into(),
            certs: "certs".into(),
            nodes: vec![node("health", 7050), node("tax", 7051)],
        }
        .save(dir.path())
        .expect("save");
        dir
    }

    fn args(dir: &Path) -> ConnectArgs {
        ConnectArgs {
            dir: Some(dir.to_owned()),
            ..ConnectArgs::default()
        }
    }

    #[test]
    fn a_devnet_dir_gives_the_first_node_and_its_client_certificate() {
        let dir = devnet_dir();
        let target = args(dir.path()).target().expect("target");
        assert_eq!(target.name.as_deref(), Some("health"));
        assert_eq!(target.url, "https://127.0.0.1:7050");
        assert_eq!(target.ca, dir.path().join("certs/ca.crt"));
        assert_eq!(target.cert, dir.path().join("certs/health/client.crt"));
        assert_eq!(target.key, dir.path().join("certs/health/client.key"));
    }

    #[test]
    fn department_picks_node_and_certificate() {
        let dir = devnet_dir();
        let mut args = args(dir.path());
        args.department = Some("tax".into());
        let target = args.target().expect("target");
        assert_eq!(target.url, "https://127.0.0.1:7051");
        assert_eq!(target.cert, dir.path().join("certs/tax/client.crt"));
        args.department = Some("nope".into());
        let message = args.target().expect_err("unknown").to_string();
        assert!(message.contains("health, tax"), "{message}");
    }

    #[test]
    fn all_targets_use_one_client_certificate_for_every_node() {
        let dir = devnet_dir();
        let targets = args(dir.path()).all_targets().expect("targets");
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[1].name.as_deref(), Some("tax"));
        assert_eq!(targets[1].cert, dir.path().join("certs/health/client.crt"));
    }

    #[test]
    fn explicit_flags_override_the_devnet() {
        let dir = devnet_dir();
        let mut args = args(dir.path());
        args.node = Some("10.0.0.5:7050".into());
        args.key = Some("/k".into());
        let targets = args.all_targets().expect("targets");
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].url, "https://10.0.0.5:7050");
        assert_eq!(targets[0].key, PathBuf::from("/k"));
        assert_eq!(targets[0].ca, dir.path().join("certs/ca.crt"));
    }

    #[test]
    fn node_without_certificates_says_what_is_missing() {
        let args = ConnectArgs {
            node: Some("https://127.0.0.1:7050".into()),
            ..ConnectArgs::default()
        };
        let message = args.target().expect_err("incomplete").to_string();
        assert!(message.contains("--ca"), "{message}");
    }

    #[test]
    fn urls_must_be_tls() {
        assert_eq!(
            normalize_url("127.0.0.1:7050").expect("bare"),
            "https://127.0.0.1:7050"
        );
        assert!(normalize_url("http://127.0.0.1:7050").is_err());
        assert!(normalize_url("ftp://x").is_err());
    }

    #[test]
    fn statuses_are_one_line_with_the_canonical_code() {
        let status = Status::not_found("no transaction\nabc");
        assert_eq!(status_line(&status), "NOT_FOUND: no transaction abc");
        let message = rpc_error(Status::unavailable("view change")).to_string();
        assert!(
            message.starts_with("UNAVAILABLE: view change; "),
            "{message}"
        );
    }

    #[test]
    fn the_nodes_reason_shows_where_it_says_more_than_the_code() {
        use tonic_types::{ErrorDetails, StatusExt as _};
        let with = |reason: &str| {
            let mut details = ErrorDetails::new();
            details.set_error_info(reason, "govchain", std::collections::HashMap::new());
            Status::with_error_details(Code::FailedPrecondition, "nonce 3 is used", details)
        };
        assert_eq!(
            status_line(&with("NONCE_USED")),
            "FAILED_PRECONDITION (NONCE_USED): nonce 3 is used"
        );
        assert_eq!(
            status_line(&with("FAILED_PRECONDITION")),
            "FAILED_PRECONDITION: nonce 3 is used"
        );
    }
}
