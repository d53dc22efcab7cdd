//! The node's configuration file (`node.toml`), read once and validated into
//! [`Settings`], which the rest of the node receives explicitly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
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
    #[serde(default)]
    pub mempool: MempoolFile,
    #[serde(default)]
    pub blobs: BlobsFile,
    /// Address to serve Prometheus metrics on, as plain HTTP at `/metrics`,
    /// e.g. "127.0.0.1:9464"; no metrics server when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
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
}

impl Default for MempoolFile {
    fn default() -> Self {
        Self {
            transactions_max: MEMPOOL_TRANSACTIONS_MAX_DEFAULT,
            bytes_max: MEMPOOL_BYTES_MAX_DEFAULT,
        }
    }
}

fn default_mempool_transactions() -> u64 {
    MEMPOOL_TRANSACTIONS_MAX_DEFAULT
}

fn default_mempool_bytes() -> u64 {
    MEMPOOL_BYTES_MAX_DEFAULT
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
    pub certificate_pem: String,
    pub key_pem: String,
    pub consensus_key: SigningKey,
    pub peers: Vec<Peer>,
    pub mempool: MempoolFile,
    pub blobs: BlobsFile,
    pub observer: bool,
    pub metrics_listen: Option<SocketAddr>,
}

impl NodeFile {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read node config {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("node config {} is not valid", path.display()))
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = toml::to_string_pretty(self).context("node config does not serialize")?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    }
}

impl Settings {
    /// Reads `node.toml` and everything it points to, and checks that they
    /// agree: the node is a validator in genesis, its consensus key is the
    /// one genesis lists, and every peer is a validator.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let file = NodeFile::load(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let genesis = Genesis::load(&resolve(&file.genesis))
            .with_context(|| format!("cannot load genesis {}", resolve(&file.genesis).display()))?;
        let index = match (genesis.validator_index_by_name(&file.name), file.observer) {
            (Some(index), false) => index,
            (None, true) => u32::MAX,
            (Some(_), true) => bail!(
                "node {:?} is a validator in genesis; remove `observer = true`",
                file.name
            ),
            (None, false) => bail!(
                "node {:?} is not a validator in genesis (chain {}); set `observer = true` to run it as a backup replica",
                file.name,
                genesis.chain_id
            ),
        };
        let consensus_key =
            SigningKey::from_pkcs8_pem(&govchain_pki::read_pem(&resolve(&file.consensus_key))?)
                .context("consensus key")?;
        if !file.observer {
            let listed = &genesis.validators[index as usize].consensus_public_key;
            if consensus_key.public_key().to_hex() != *listed {
                bail!(
                    "consensus key {} does not match genesis, which lists {listed} for {:?}",
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
                        format!("peer {:?} is not a validator in genesis", peer.name)
                    })?;
                Ok(Peer {
                    name: peer.name.clone(),
                    index,
                    address: peer.address.clone(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if file.mempool.transactions_max == 0 || file.mempool.bytes_max == 0 {
            bail!("mempool limits must be above zero");
        }
        if file.blobs.upload_bytes_max == 0
            || file.blobs.upload_bytes_max > govchain_blobstore::BLOB_SIZE_BYTES_MAX
        {
            bail!(
                "blobs.upload_bytes_max must be 1 to {} bytes",
                govchain_blobstore::BLOB_SIZE_BYTES_MAX
            );
        }
        Ok(Self {
            name: file.name.clone(),
            index,
            listen: file.listen,
            data_dir: resolve(&file.data_dir),
            ca_certificate_pem: govchain_pki::read_pem(&resolve(&file.ca_certificate))?,
            certificate_pem: govchain_pki::read_pem(&resolve(&file.certificate))?,
            key_pem: govchain_pki::read_pem(&resolve(&file.key))?,
            genesis,
            consensus_key,
            peers,
            mempool: file.mempool,
            blobs: file.blobs,
            observer: file.observer,
            metrics_listen: file.metrics_listen,
        })
    }
}
