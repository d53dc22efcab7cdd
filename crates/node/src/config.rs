//! The node's configuration file (`node.toml`), read once and validated into
//! [`Settings`], which the rest of the node receives explicitly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use figment::providers::Format as _;
use govchain_crypto::SigningKey;
use govchain_pki::Genesis;
use serde::{Deserialize, Serialize};

/// Transactions a mempool holds at most, by default.
pub const MEMPOOL_TRANSACTIONS_MAX_DEFAULT: u64 = 100_000;
/// Bytes of encoded transactions a mempool holds at most, by default.
pub const MEMPOOL_BYTES_MAX_DEFAULT: u64 = 256 * 1024 * 1024;

/// `node.toml` as written. Relative paths are relative to the file's folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// This node's department name; must be a validator in genesis.
    pub name: String,
    /// Address to serve gRPC on, e.g. "127.0.0.1:7050" or "0.0.0.0:7050".
    pub listen: SocketAddr,
    /// Folder for the ledger.
    pub data_dir: PathBuf,
    pub genesis: PathBuf,
    /// The consortium CA certificate (PEM).
    pub ca_certificate: PathBuf,
    /// This node's TLS certificate and key (PEM), used as server and as
    /// client towards peers.
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// The Ed25519 consensus key (PKCS#8 PEM).
    pub consensus_key: PathBuf,
    #[serde(default)]
    pub peers: Vec<PeerFile>,
    /// A backup (non-voting) replica: it follows the chain from the
    /// validators in `peers`, checking every commit certificate, and serves
    /// reads. Its name must not be a validator's.
    #[serde(default)]
    pub observer: bool,
    /// When the data directory holds no ledger yet, join from a state
    /// snapshot: fetch a peer's state at its head in 256 verified parts
    /// (after checking the chain of commit certificates up to it), then
    /// fetch only the blocks after it. The node then holds no block below
    /// the snapshot's. Off (sync every block from genesis) when unset.
    #[serde(default)]
    pub state_sync: bool,
    /// Prune the transactions of blocks more than this many blocks below
    /// the head, keeping every block's header and commit certificate (the
    /// chain stays verifiable). Disk is freed a whole log segment at a time
    /// (`block_log_segment_bytes`). Such blocks then answer NOT_FOUND, and
    /// peers farther behind catch up from a node that keeps every block or
    /// by `state_sync`. At least 128; keep every block when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune_horizon_blocks: Option<u64>,
    /// The size at which the block log starts a new segment file (bytes;
    /// default 134217728, 128 MiB, at least 4096): the grain of pruning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_log_segment_bytes: Option<u64>,
    #[serde(default)]
    pub mempool: MempoolFile,
    #[serde(default)]
    pub blobs: BlobsFile,
    /// Address for a plaintext gRPC port that serves only
    /// `grpc.health.v1.Health`, for probes that cannot present a client
    /// certificate (Kubernetes' `grpc:` probe), e.g. "0.0.0.0:7052".
    /// Service "" is readiness (NOT_SERVING while starting or catching up),
    /// service "liveness" is SERVING while the process runs. Off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_listen: Option<SocketAddr>,
    /// Address to serve Prometheus metrics on, as plain HTTP at `/metrics`,
    /// e.g. "127.0.0.1:9464"; no metrics server when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Address to serve the web portal on, over HTTPS with the node's
    /// certificate, e.g. "127.0.0.1:8443"; no portal when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal_listen: Option<SocketAddr>,
    /// The address browsers use for the portal, when it is not
    /// `https://<portal_listen>/` (a DNS name, a load balancer), e.g.
    /// "https://portal.tax.gov.example/". Login callbacks point here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal_url: Option<String>,
}

/// The blob store (`<data_dir>/blobs/`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobsFile {
    /// The largest blob one upload may store; a request may ask for less.
    #[serde(default = "default_blob_bytes")]
    pub upload_bytes_max: u64,
    /// How often unreferenced blobs are collected; 0 turns collection off.
    #[serde(default = "default_gc_interval")]
    pub gc_interval_secs: u64,
    /// An uploaded blob that no attribute on chain references is kept this
    /// long, so that its declaration has time to commit.
    #[serde(default = "default_gc_grace")]
    pub gc_grace_secs: u64,
}

/// Bytes one upload may store, by default.
pub const BLOB_UPLOAD_BYTES_MAX_DEFAULT: u64 = 256 * 1024 * 1024;

impl Default for BlobsFile {
    fn default() -> Self {
        Self {
            upload_bytes_max: BLOB_UPLOAD_BYTES_MAX_DEFAULT,
            gc_interval_secs: default_gc_interval(),
            gc_grace_secs: default_gc_grace(),
        }
    }
}

fn default_blob_bytes() -> u64 {
    BLOB_UPLOAD_BYTES_MAX_DEFAULT
}

fn default_gc_interval() -> u64 {
    3600
}

fn default_gc_grace() -> u64 {
    3600
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerFile {
    /// The peer's department name, as in genesis.
    pub name: String,
    /// e.g. "https://127.0.0.1:7051".
    pub address: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MempoolFile {
    #[serde(default = "default_mempool_transactions")]
    pub transactions_max: u64,
    #[serde(default = "default_mempool_bytes")]
    pub bytes_max: u64,
    /// How long, in milliseconds, a transaction may wait behind a nonce gap
    /// before the node drops it (`DROPPED`); 10 minutes by default.
    #[serde(default = "default_parked_ttl_ms")]
    pub parked_ttl_ms: u64,
}

impl Default for MempoolFile {
    fn default() -> Self {
        Self {
            transactions_max: MEMPOOL_TRANSACTIONS_MAX_DEFAULT,
            bytes_max: MEMPOOL_BYTES_MAX_DEFAULT,
            parked_ttl_ms: default_parked_ttl_ms(),
        }
    }
}

fn default_mempool_transactions() -> u64 {
    MEMPOOL_TRANSACTIONS_MAX_DEFAULT
}

fn default_mempool_bytes() -> u64 {
    MEMPOOL_BYTES_MAX_DEFAULT
}

fn default_parked_ttl_ms() -> u64 {
    crate::mempool::PARKED_TTL_DEFAULT.as_millis() as u64
}

/// A peer after validation: its genesis index and address.
#[derive(Clone, Debug)]
pub struct Peer {
    pub name: String,
    pub index: u32,
    pub address: String,
}

/// The validated configuration.
pub struct Settings {
    pub name: String,
    pub index: u32,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub genesis: Genesis,
    pub ca_certificate_pem: String,
    /// The certificate and key as read at start; the ones in use are
    /// `certificates`', which reload when the files change.
    pub certificate_pem: String,
    pub key_pem: String,
    pub certificate_file: PathBuf,
    pub key_file: PathBuf,
    pub certificates: std::sync::Arc<crate::certificates::NodeCertificates>,
    pub consensus_key: SigningKey,
    pub peers: Vec<Peer>,
    pub mempool: MempoolFile,
    pub blobs: BlobsFile,
    pub observer: bool,
    pub state_sync: bool,
    pub prune_horizon_blocks: Option<u64>,
    pub block_log_segment_bytes: u64,
    pub health_listen: Option<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    pub portal_listen: Option<SocketAddr>,
    /// The portal's URL, ending in '/' (from `portal_url` or
    /// `portal_listen`); None without a portal.
    pub portal_url: Option<String>,
}

/// The smallest horizon `node.toml` accepts: peers this far behind (two
/// checkpoints of the ledger) still catch up block by block from a pruning
/// node, and a pruned block is never one a restart re-applies.
pub const PRUNE_HORIZON_BLOCKS_MIN: u64 = 128;

/// The smallest `block_log_segment_bytes`.
pub const BLOCK_LOG_SEGMENT_BYTES_MIN: u64 = 4096;

/// Environment variables that override `node.toml` keys start with this:
/// `GOVCHAIN_LISTEN`, and `__` between nested keys
/// (`GOVCHAIN_MEMPOOL__BYTES_MAX`). Values are TOML values where they parse
/// as one (`100`, `true`, `[{name = "tax", address = "https://..."}]`),
/// otherwise strings (`0.0.0.0:7050`).
pub const ENV_PREFIX: &str = "GOVCHAIN_";

/// Separates nested keys in an override's name.
pub const ENV_NESTING: &str = "__";

/// The top-level keys of `node.toml`. Only variables naming one of them
/// are overrides: other `GOVCHAIN_*` variables (`GOVCHAIN_LOG`, the CLI's
/// `GOVCHAIN_NODE`, ...) are other settings. A test keeps the list equal
/// to [`NodeFile`]'s fields.
pub const NODE_FILE_KEYS: &[&str] = &[
    "name",
    "listen",
    "data_dir",
    "genesis",
    "ca_certificate",
    "certificate",
    "key",
    "consensus_key",
    "peers",
    "observer",
    "state_sync",
    "prune_horizon_blocks",
    "block_log_segment_bytes",
    "mempool",
    "blobs",
    "health_listen",
    "metrics_listen",
    "portal_listen",
    "portal_url",
];

/// A `node.toml` key whose value came from the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    /// Dotted key, e.g. "mempool.bytes_max".
    pub key: String,
    /// The variable, e.g. "GOVCHAIN_MEMPOOL__BYTES_MAX".
    pub variable: String,
}

impl NodeFile {
    /// The file alone, as written (for tools that edit it).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read node config {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("node config {} is not valid", path.display()))
    }

    /// The configuration a node runs with: the file, with every
    /// `GOVCHAIN_<KEY>` environment variable applied over it; and which
    /// keys the environment set. Errors name the key, the value and where
    /// it came from (the file or the variable).
    pub fn effective(path: &Path) -> anyhow::Result<(Self, Vec<Override>)> {
        // The file must exist even when the environment sets everything:
        // relative paths are relative to its folder.
        if !path.is_file() {
            bail!("cannot read node config {}: no such file", path.display());
        }
        let figment = figment::Figment::new()
            .merge(figment::providers::Toml::file_exact(path))
            .merge(overrides_provider());
        let file: Self = figment.extract().map_err(|err| {
            anyhow::anyhow!(
                "node config {} is not valid: {}",
                path.display(),
                describe_figment_error(err)
            )
        })?;
        Ok((file, overrides()))
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = self.to_toml()?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    }

    /// The file's text.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string_pretty(self).context("node config does not serialize")
    }
}

/// Whether the environment variable `name` overrides a `node.toml` key.
pub fn is_override_variable(name: &str) -> bool {
    name.strip_prefix(ENV_PREFIX)
        .is_some_and(|key| is_override(&key.to_ascii_lowercase()))
}

/// Whether an environment variable's name (after the prefix, lower case)
/// is an override of a `node.toml` key.
fn is_override(key: &str) -> bool {
    let top = key.split(ENV_NESTING).next().unwrap_or(key);
    NODE_FILE_KEYS.contains(&top)
}

fn overrides_provider() -> figment::providers::Env {
    figment::providers::Env::prefixed(ENV_PREFIX)
        .filter(|key| is_override(&key.as_str().to_ascii_lowercase()))
        .split(ENV_NESTING)
}

/// The overrides present in this process's environment.
pub fn overrides() -> Vec<Override> {
    let mut found: Vec<Override> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter_map(|variable| {
            let key = variable.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
            is_override(&key).then(|| Override {
                key: key.replace(ENV_NESTING, "."),
                variable,
            })
        })
        .collect();
    found.sort_by(|a, b| a.key.cmp(&b.key));
    found
}

/// figment's error, each one on a line: "invalid type: found string
/// \"abc\", expected u64 for key \"mempool.bytes_max\" in
/// GOVCHAIN_ environment variable(s)".
fn describe_figment_error(err: figment::Error) -> String {
    err.into_iter()
        .map(|e| {
            let mut text = e.kind.to_string();
            if !e.path.is_empty() {
                text.push_str(&format!(" for key {:?}", e.path.join(".")));
            }
            if let Some(source) = &e.metadata {
                text.push_str(&format!(" in {}", source.name));
                if let Some(figment::Source::File(file)) = &source.source {
                    text.push_str(&format!(" {}", file.display()));
                }
            }
            text
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Settings {
    /// Reads `node.toml` and everything it points to, and checks that they
    /// agree: the node is a validator in genesis, its consensus key is the
    /// one genesis lists, and every peer is a validator.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let (file, _) = NodeFile::effective(path)?;
        Self::from_file(file, path)
    }

    /// Checks `file` (read from `path`, perhaps with overrides) and loads
    /// everything it points to.
    pub fn from_file(file: NodeFile, path: &Path) -> anyhow::Result<Self> {
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let read_file = |key: &str, p: &Path| {
            govchain_pki::read_pem(&resolve(p))
                .with_context(|| format!("{key} = {p:?}: cannot read {}", resolve(p).display()))
        };
        let genesis = Genesis::load(&resolve(&file.genesis)).with_context(|| {
            format!(
                "genesis = {:?}: cannot load {}",
                file.genesis,
                resolve(&file.genesis).display()
            )
        })?;
        let index = match (genesis.validator_index_by_name(&file.name), file.observer) {
            (Some(index), false) => index,
            (None, true) => u32::MAX,
            (Some(_), true) => bail!(
                "observer = true: node {:?} is a validator in genesis, and a validator must vote; remove `observer = true`",
                file.name
            ),
            (None, false) => bail!(
                "name = {:?}: not a validator in genesis (chain {}); set `observer = true` to run it as a backup replica",
                file.name,
                genesis.chain_id
            ),
        };
        let consensus_key =
            SigningKey::from_pkcs8_pem(&read_file("consensus_key", &file.consensus_key)?)
                .with_context(|| {
                    format!(
                        "consensus_key = {:?}: not an Ed25519 key in PKCS#8 PEM",
                        file.consensus_key
                    )
                })?;
        if !file.observer {
            let listed = &genesis.validators[index as usize].consensus_public_key;
            if consensus_key.public_key().to_hex() != *listed {
                bail!(
                    "consensus_key = {:?}: its public key {} is not the one genesis lists for {:?} ({listed})",
                    file.consensus_key,
                    consensus_key.public_key(),
                    file.name
                );
            }
        }
        let peers = file
            .peers
            .iter()
            .map(|peer| {
                let index = genesis
                    .validator_index_by_name(&peer.name)
                    .with_context(|| {
                        format!(
                            "peers.name = {:?}: not a validator in genesis; peers are the validators this node talks to",
                            peer.name
                        )
                    })?;
                Ok(Peer {
                    name: peer.name.clone(),
                    index,
                    address: peer.address.clone(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if file.mempool.transactions_max == 0 {
            bail!("mempool.transactions_max = 0: must be at least 1");
        }
        if file.mempool.parked_ttl_ms == 0 {
            bail!("mempool.parked_ttl_ms = 0: must be at least 1");
        }
        if file.mempool.bytes_max == 0 {
            bail!("mempool.bytes_max = 0: must be at least 1");
        }
        if file.blobs.upload_bytes_max == 0
            || file.blobs.upload_bytes_max > govchain_blobstore::BLOB_SIZE_BYTES_MAX
        {
            bail!(
                "blobs.upload_bytes_max = {}: must be 1 to {} bytes",
                file.blobs.upload_bytes_max,
                govchain_blobstore::BLOB_SIZE_BYTES_MAX
            );
        }
        if let Some(horizon) = file.prune_horizon_blocks
            && horizon < PRUNE_HORIZON_BLOCKS_MIN
        {
            bail!(
                "prune_horizon_blocks = {horizon}: must be at least {} (or unset, to keep every block)",
                PRUNE_HORIZON_BLOCKS_MIN
            );
        }
        if let Some(bytes) = file.block_log_segment_bytes
            && bytes < BLOCK_LOG_SEGMENT_BYTES_MIN
        {
            bail!(
                "block_log_segment_bytes = {bytes}: must be at least {BLOCK_LOG_SEGMENT_BYTES_MIN} (default {})",
                govchain_ledger::SEGMENT_BYTES_TARGET
            );
        }
        if let Some(health) = file.health_listen
            && health.port() == file.listen.port()
            && (health.ip() == file.listen.ip()
                || health.ip().is_unspecified()
                || file.listen.ip().is_unspecified())
        {
            bail!(
                "health_listen = \"{health}\": must be another port than listen ({}), which serves mutual TLS",
                file.listen
            );
        }
        let portal_url = portal_url(&file)?;
        let ca_certificate_pem = read_file("ca_certificate", &file.ca_certificate)?;
        let certificate_pem = read_file("certificate", &file.certificate)?;
        let key_pem = read_file("key", &file.key)?;
        let certificates = crate::certificates::NodeCertificates::new(
            &ca_certificate_pem,
            &certificate_pem,
            &key_pem,
        )
        .map_err(|err| {
            anyhow::anyhow!(
                "certificate {} and key {}: {err}",
                file.certificate.display(),
                file.key.display()
            )
        })?;
        Ok(Self {
            name: file.name.clone(),
            index,
            listen: file.listen,
            data_dir: resolve(&file.data_dir),
            ca_certificate_pem,
            certificate_pem,
            key_pem,
            certificate_file: resolve(&file.certificate),
            key_file: resolve(&file.key),
            certificates,
            genesis,
            consensus_key,
            peers,
            mempool: file.mempool,
            blobs: file.blobs,
            observer: file.observer,
            state_sync: file.state_sync,
            prune_horizon_blocks: file.prune_horizon_blocks,
            block_log_segment_bytes: file
                .block_log_segment_bytes
                .unwrap_or(govchain_ledger::SEGMENT_BYTES_TARGET),
            health_listen: file.health_listen,
            metrics_listen: file.metrics_listen,
            portal_listen: file.portal_listen,
            portal_url,
        })
    }
}

/// The portal's URL: `portal_url` as given (with a final '/'), else
/// `https://<portal_listen>/`, with 127.0.0.1 for an unspecified address
/// (the node's certificate names the loopback addresses and localhost).
fn portal_url(file: &NodeFile) -> anyhow::Result<Option<String>> {
    let Some(listen) = file.portal_listen else {
        if file.portal_url.is_some() {
            bail!(
                "portal_url is set but portal_listen is not: set portal_listen to serve the portal"
            );
        }
        return Ok(None);
    };
    if listen.port() == file.listen.port()
        && (listen.ip() == file.listen.ip()
            || listen.ip().is_unspecified()
            || file.listen.ip().is_unspecified())
    {
        bail!(
            "portal_listen = \"{listen}\": must be another port than listen ({}), which serves gRPC",
            file.listen
        );
    }
    if let Some(url) = &file.portal_url {
        if !url.starts_with("https://")
            || url.len() > 200
            || !url
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:/_".contains(&b))
        {
            bail!(
                "portal_url = {url:?}: must be an https:// URL of letters, digits, '.', '-', ':', '/' and '_'"
            );
        }
        let slash = if url.ends_with('/') { "" } else { "/" };
        return Ok(Some(format!("{url}{slash}")));
    }
    let host = match listen.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    Ok(Some(format!("https://{host}:{}/", listen.port())))
}

#[cfg(test)]
// figment::Jail's closures return figment::Error, which is large.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    const FILE: &str = r#"
name = "health"
listen = "127.0.0.1:7050"
data_dir = "data"
genesis = "genesis.json"
ca_certificate = "ca.crt"
certificate = "node.crt"
key = "node.key"
consensus_key = "consensus.key"

[mempool]
transactions_max = 10
"#;

    #[test]
    fn the_override_keys_are_the_files_keys() {
        let mut file: NodeFile = toml::from_str(FILE).expect("parse");
        file.health_listen = Some("127.0.0.1:7052".parse().expect("address"));
        file.metrics_listen = Some("127.0.0.1:9464".parse().expect("address"));
        file.portal_listen = Some("127.0.0.1:8443".parse().expect("address"));
        file.portal_url = Some("https://portal.tax.example/".into());
        file.prune_horizon_blocks = Some(1_000);
        file.block_log_segment_bytes = Some(1 << 20);
        file.peers.push(PeerFile {
            name: "tax".into(),
            address: "https://127.0.0.1:7051".into(),
        });
        let table = toml::Table::try_from(&file).expect("table");
        let mut keys: Vec<&str> = table.keys().map(String::as_str).collect();
        let mut listed = NODE_FILE_KEYS.to_vec();
        keys.sort_unstable();
        listed.sort_unstable();
        assert_eq!(keys, listed, "NODE_FILE_KEYS must list every node.toml key");
    }

    #[test]
    fn environment_variables_override_keys_nested_ones_with_double_underscores() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("node.toml", FILE)?;
            jail.set_env("GOVCHAIN_LISTEN", "0.0.0.0:9050");
            jail.set_env("GOVCHAIN_MEMPOOL__BYTES_MAX", "4096");
            jail.set_env("GOVCHAIN_HEALTH_LISTEN", "0.0.0.0:9052");
            jail.set_env(
                "GOVCHAIN_PEERS",
                r#"[{name = "tax", address = "https://tax-0.peers:7050"}]"#,
            );
            // Other settings of the same prefix are not node.toml keys.
            jail.set_env("GOVCHAIN_LOG", "debug");
            jail.set_env("GOVCHAIN_NODE", "https://somewhere:7050");
            let (file, overrides) = NodeFile::effective(Path::new("node.toml")).expect("effective");
            assert_eq!(file.listen, "0.0.0.0:9050".parse().expect("address"));
            assert_eq!(file.mempool.bytes_max, 4096);
            assert_eq!(file.mempool.transactions_max, 10, "the file's value stays");
            assert_eq!(
                file.health_listen,
                Some("0.0.0.0:9052".parse().expect("address"))
            );
            assert_eq!(file.peers.len(), 1);
            assert_eq!(file.peers[0].address, "https://tax-0.peers:7050");
            let keys: Vec<&str> = overrides.iter().map(|o| o.key.as_str()).collect();
            assert_eq!(
                keys,
                ["health_listen", "listen", "mempool.bytes_max", "peers"]
            );
            assert_eq!(overrides[2].variable, "GOVCHAIN_MEMPOOL__BYTES_MAX");
            Ok(())
        });
    }

    #[test]
    fn the_portal_url_comes_from_portal_listen_unless_given() {
        let mut file: NodeFile = toml::from_str(FILE).expect("parse");
        assert_eq!(portal_url(&file).expect("no portal"), None);
        file.portal_listen = Some("0.0.0.0:8443".parse().expect("address"));
        assert_eq!(
            portal_url(&file).expect("url").as_deref(),
            Some("https://127.0.0.1:8443/")
        );
        file.portal_url = Some("https://portal.tax.gov.example".into());
        assert_eq!(
            portal_url(&file).expect("url").as_deref(),
            Some("https://portal.tax.gov.example/")
        );
        file.portal_url = Some("http://portal.tax.gov.example/".into());
        let err = portal_url(&file).expect_err("http").to_string();
        assert!(err.contains("https://"), "{err}");
        file.portal_url = None;
        file.portal_listen = Some(file.listen);
        let err = portal_url(&file).expect_err("same port").to_string();
        assert!(err.contains("another port than listen"), "{err}");
        file.portal_listen = None;
        file.portal_url = Some("https://portal.tax.gov.example/".into());
        let err = portal_url(&file).expect_err("url alone").to_string();
        assert!(err.contains("portal_listen is not"), "{err}");
    }

    #[test]
    fn the_portal_listens_where_govchain_portal_listen_says() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("node.toml", FILE)?;
            jail.set_env("GOVCHAIN_PORTAL_LISTEN", "127.0.0.1:9443");
            let (file, overrides) = NodeFile::effective(Path::new("node.toml")).expect("effective");
            assert_eq!(
                file.portal_listen,
                Some("127.0.0.1:9443".parse().expect("address"))
            );
            assert_eq!(overrides[0].variable, "GOVCHAIN_PORTAL_LISTEN");
            Ok(())
        });
    }

    #[test]
    fn a_bad_override_names_the_key_the_value_and_the_variable() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("node.toml", FILE)?;
            jail.set_env("GOVCHAIN_MEMPOOL__BYTES_MAX", "lots");
            let err = NodeFile::effective(Path::new("node.toml"))
                .expect_err("not a number")
                .to_string();
            assert!(err.contains("\"lots\""), "{err}");
            assert!(err.contains("mempool.bytes_max"), "{err}");
            assert!(err.contains("GOVCHAIN_"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn an_unknown_key_in_the_file_is_refused_by_name() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("node.toml", &format!("{FILE}\nlisten_adress = \"x\"\n"))?;
            let err = NodeFile::effective(Path::new("node.toml"))
                .expect_err("unknown key")
                .to_string();
            assert!(err.contains("listen_adress"), "{err}");
            assert!(err.contains("node.toml"), "{err}");
            Ok(())
        });
    }
}
