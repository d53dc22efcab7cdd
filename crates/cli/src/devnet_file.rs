//! `devnet.json`: what `govchain devnet` started, so that client commands
//! given `--dir DEVNET` find node URLs and certificates without more flags.
//!
//! ```json
//! {"chain_id":"govchain-devnet","genesis":"genesis.json","certs":"certs",
//!  "nodes":[{"name":"health","url":"https://127.0.0.1:7050",
//!            "data_dir":"nodes/health","config":"nodes/health/node.toml","pid":1234}]}
//! ```
//!
//! Paths in the file are relative to the devnet directory, so the directory
//! can be moved or mounted elsewhere. A department's client certificate is
//! `<dir>/<certs>/<dept>/client.crt` (and `client.key`), the CA
//! `<dir>/<certs>/ca.crt`.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use govchain_pki::{CA_CERTIFICATE_FILE, CLIENT_CERTIFICATE_FILE, CLIENT_KEY_FILE};
use serde::{Deserialize, Serialize};

pub const DEVNET_FILE: &str = "devnet.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevnetFile {
    pub chain_id: String,
    /// Genesis file, relative to the devnet directory.
    pub genesis: PathBuf,
    /// Output directory of `govchain certs init`, relative to the devnet
    /// directory.
    pub certs: PathBuf,
    /// Validators in genesis order; the first is the default for clients.
    pub nodes: Vec<DevnetNode>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevnetNode {
    /// Department name, as in genesis.
    pub name: String,
    /// Client API address, e.g. `https://127.0.0.1:7050`.
    pub url: String,
    /// Relative to the devnet directory.
    pub data_dir: PathBuf,
    /// Relative to the devnet directory.
    pub config: PathBuf,
    /// Process id while the node runs detached; `None` once stopped.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Where the node serves Prometheus metrics (`metrics_listen`), e.g.
    /// `http://127.0.0.1:9464/metrics`; absent in devnets made before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_url: Option<String>,
    /// Where the node serves the web portal (`portal_listen`), e.g.
    /// `https://127.0.0.1:8443/`; absent in devnets made before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal_url: Option<String>,
}

impl DevnetFile {
    /// The path of `devnet.json` in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(DEVNET_FILE)
    }

    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = Self::path(dir);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
                "{} does not exist; start a devnet there with `govchain devnet --dir {}`",
                path.display(),
                dir.display()
            ),
            Err(err) => {
                return Err(err).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        let file: Self = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid devnet file", path.display()))?;
        anyhow::ensure!(
            !file.nodes.is_empty(),
            "{} lists no nodes; recreate the devnet with `govchain devnet --reset`",
            path.display()
        );
        Ok(file)
    }

    /// Writes `<dir>/devnet.json` through a temporary file and a rename, so a
    /// reader never sees half a file.
    #[allow(
        dead_code,
        reason = "`govchain devnet` writes the file; it is wired by the node's author"
    )]
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let path = Self::path(dir);
        let temporary = dir.join(format!(".{DEVNET_FILE}.tmp"));
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        let write = || -> std::io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&temporary)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            fs::rename(&temporary, &path)
        };
        write().with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn node(&self, name: &str) -> Option<&DevnetNode> {
        self.nodes.iter().find(|node| node.name == name)
    }

    /// The first node: the default department and node for clients.
    pub fn first_node(&self) -> Option<&DevnetNode> {
        self.nodes.first()
    }

    pub fn genesis_path(&self, dir: &Path) -> PathBuf {
        dir.join(&self.genesis)
    }

    pub fn ca_certificate(&self, dir: &Path) -> PathBuf {
        dir.join(&self.certs).join(CA_CERTIFICATE_FILE)
    }

    pub fn client_certificate(&self, dir: &Path, department: &str) -> PathBuf {
        dir.join(&self.certs)
            .join(department)
            .join(CLIENT_CERTIFICATE_FILE)
    }

    pub fn client_key(&self, dir: &Path, department: &str) -> PathBuf {
        dir.join(&self.certs).join(department).join(CLIENT_KEY_FILE)
    }

    /// The names of the nodes, for error messages.
    pub fn node_names(&self) -> String {
        self.nodes
            .iter()
            .map(|node| node.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"chain_id":"govchain-devnet","genesis":"genesis.json","certs":"certs","nodes":[{"name":"health","url":"https://127.0.0.1:7050","data_dir":"nodes/health","config":"nodes/health/node.toml","pid":1234}]}"#;

    fn sample() -> DevnetFile {
        DevnetFile {
            chain_id: "govchain-devnet".into(),
            genesis: "genesis.json".into(),
            certs: "certs".into(),
            nodes: vec![
                DevnetNode {
                    name: "health".into(),
                    url: "https://127.0.0.1:7050".into(),
                    data_dir: "nodes/health".into(),
                    config: "nodes/health/node.toml".into(),
                    pid: Some(1234),
                    metrics_url: None,
                    portal_url: None,
                },
                DevnetNode {
                    name: "tax".into(),
                    url: "https://127.0.0.1:7051".into(),
                    data_dir: "nodes/tax".into(),
                    config: "nodes/tax/node.toml".into(),
                    pid: None,
                    metrics_url: None,
                    portal_url: None,
                },
            ],
        }
    }

    #[test]
    fn the_documented_example_parses() {
        let file: DevnetFile = serde_json::from_str(EXAMPLE).expect("parses");
        assert_eq!(file.nodes[0].pid, Some(1234));
        assert_eq!(
            file.nodes[0].config,
            PathBuf::from("nodes/health/node.toml")
        );
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = sample();
        file.save(dir.path()).expect("save");
        assert_eq!(DevnetFile::load(dir.path()).expect("load"), file);
        assert!(!dir.path().join(".devnet.json.tmp").exists());
    }

    #[test]
    fn a_missing_pid_means_stopped() {
        let text = EXAMPLE.replace(r#","pid":1234"#, "");
        let file: DevnetFile = serde_json::from_str(&text).expect("parses");
        assert_eq!(file.nodes[0].pid, None);
    }

    #[test]
    fn paths_resolve_under_the_devnet_dir() {
        let file = sample();
        let dir = Path::new("/x/devnet");
        assert_eq!(
            file.ca_certificate(dir),
            PathBuf::from("/x/devnet/certs/ca.crt")
        );
        assert_eq!(
            file.client_key(dir, "tax"),
            PathBuf::from("/x/devnet/certs/tax/client.key")
        );
        assert_eq!(
            file.genesis_path(dir),
            PathBuf::from("/x/devnet/genesis.json")
        );
        assert_eq!(file.node_names(), "health, tax");
    }

    #[test]
    fn a_missing_file_suggests_govchain_devnet() {
        let dir = tempfile::tempdir().expect("tempdir");
        let message = DevnetFile::load(dir.path())
            .expect_err("missing")
            .to_string();
        assert!(message.contains("govchain devnet"), "{message}");
    }
}
