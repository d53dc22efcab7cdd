//! `govchain certs k8s-secrets`: a `certs init` output as Kubernetes
//! manifests for the Helm chart in `helm/govchain`.
//!
//! Per department (validators and observers) two Secrets, split by who reads
//! them: `govchain-<dept>-node` holds what the node process reads (`ca.crt`,
//! `node.crt`, `node.key`, `consensus.key`) and `govchain-<dept>-client`
//! holds the department's client certificate (`ca.crt`, `client.crt`,
//! `client.key`), which `helm test` and in-cluster tools use. One ConfigMap,
//! `govchain-genesis`, holds `genesis.json`, which is public.
//!
//! Deliberately absent: `ca.key` (it stays offline) and each department's
//! `signing.key`. The node never reads the signing key; it belongs to the
//! department's own systems, and putting it into the cluster would only
//! widen who can sign transactions in the department's name.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use govchain_pki::{
    CA_CERTIFICATE_FILE, CLIENT_CERTIFICATE_FILE, CLIENT_KEY_FILE, CONSENSUS_KEY_FILE,
    GENESIS_FILE, Genesis, NODE_CERTIFICATE_FILE, NODE_KEY_FILE,
};
use serde::Serialize;

/// The chart's default names (`helm/govchain/values.yaml`) are these, so
/// that `kubectl apply -f secrets.yaml` and `helm install` fit together
/// without editing.
pub const GENESIS_CONFIG_MAP_NAME: &str = "govchain-genesis";
/// The key of `genesis.json` in [`GENESIS_CONFIG_MAP_NAME`].
pub const GENESIS_CONFIG_MAP_KEY: &str = "genesis.json";

/// Files of a department's folder that its node reads.
const NODE_SECRET_FILES: [&str; 4] = [
    CA_CERTIFICATE_FILE,
    NODE_CERTIFICATE_FILE,
    NODE_KEY_FILE,
    CONSENSUS_KEY_FILE,
];
/// Files of a department's folder that its clients read.
const CLIENT_SECRET_FILES: [&str; 3] = [
    CA_CERTIFICATE_FILE,
    CLIENT_CERTIFICATE_FILE,
    CLIENT_KEY_FILE,
];

/// The Secret with `department`'s node credentials.
pub fn node_secret_name(department: &str) -> String {
    format!("govchain-{department}-node")
}

/// The Secret with `department`'s client certificate.
pub fn client_secret_name(department: &str) -> String {
    format!("govchain-{department}-client")
}

/// One Kubernetes object to write.
#[derive(Debug)]
struct Manifest {
    kind: &'static str,
    name: String,
    component: &'static str,
    department: Option<String>,
    /// Key and contents; Secrets are written base64 under `data`.
    entries: Vec<(String, String)>,
}

/// What [`collect`] read from a `certs init` output.
#[derive(Debug)]
pub struct Bundle {
    chain_id: String,
    genesis_hash: String,
    /// Validators in genesis order, then observers.
    departments: Vec<String>,
    manifests: Vec<Manifest>,
}

/// The `--json` answer.
#[derive(Debug, Serialize)]
pub struct BundleView {
    pub out: PathBuf,
    pub chain_id: String,
    pub genesis_hash: String,
    pub departments: Vec<String>,
    pub secrets: Vec<String>,
    pub config_map: String,
}

/// Reads `dir/genesis.json` and every department's folder it implies.
pub fn collect(dir: &Path) -> anyhow::Result<Bundle> {
    let genesis_path = dir.join(GENESIS_FILE);
    let genesis = Genesis::load(&genesis_path).with_context(|| {
        format!(
            "cannot load {} (is {} the output of `govchain certs init`?)",
            genesis_path.display(),
            dir.display()
        )
    })?;
    let genesis_text = std::fs::read_to_string(&genesis_path)
        .with_context(|| format!("cannot read {}", genesis_path.display()))?;
    let departments = department_names(&genesis);
    let mut manifests = Vec::with_capacity(departments.len() * 2 + 1);
    for department in &departments {
        let folder = dir.join(department);
        manifests.push(secret(
            node_secret_name(department),
            "node-credentials",
            department,
            &folder,
            &NODE_SECRET_FILES,
        )?);
        manifests.push(secret(
            client_secret_name(department),
            "client-credentials",
            department,
            &folder,
            &CLIENT_SECRET_FILES,
        )?);
    }
    manifests.push(Manifest {
        kind: "ConfigMap",
        name: GENESIS_CONFIG_MAP_NAME.to_owned(),
        component: "genesis",
        department: None,
        entries: vec![(GENESIS_CONFIG_MAP_KEY.to_owned(), genesis_text)],
    });
    Ok(Bundle {
        chain_id: genesis.chain_id.clone(),
        genesis_hash: genesis.hash().to_hex(),
        departments,
        manifests,
    })
}

/// Validators in genesis order, then the other departments genesis lists
/// (observers), each once.
fn department_names(genesis: &Genesis) -> Vec<String> {
    let mut names: Vec<String> = genesis.validators.iter().map(|v| v.name.clone()).collect();
    for entry in &genesis.departments {
        if !names.contains(&entry.name) {
            names.push(entry.name.clone());
        }
    }
    names
}

fn secret(
    name: String,
    component: &'static str,
    department: &str,
    folder: &Path,
    files: &[&str],
) -> anyhow::Result<Manifest> {
    let entries = files
        .iter()
        .map(|file| {
            let path = folder.join(file);
            let pem = govchain_pki::read_pem(&path).with_context(|| {
                format!("department {department:?} in genesis has no usable {file}")
            })?;
            Ok(((*file).to_owned(), pem))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Manifest {
        kind: "Secret",
        name,
        component,
        department: Some(department.to_owned()),
        entries,
    })
}

impl Bundle {
    /// The manifests as one multi-document YAML file. Every free-form
    /// string is written as a JSON string, which is a YAML double-quoted
    /// scalar, so no content can break the document's structure.
    pub fn to_yaml(&self, source: &Path) -> String {
        let mut yaml = format!(
            "# Made by `govchain certs k8s-secrets` from {} for chain {} (genesis {}).\n\
             # It holds private keys: apply it (kubectl apply -f FILE), then delete it; never commit it.\n",
            source.display(),
            self.chain_id,
            self.genesis_hash
        );
        for manifest in &self.manifests {
            self.write_manifest(&mut yaml, manifest);
        }
        yaml
    }

    fn write_manifest(&self, yaml: &mut String, manifest: &Manifest) {
        // Writing into a String cannot fail.
        let _ = write!(
            yaml,
            "---\napiVersion: v1\nkind: {}\nmetadata:\n  name: {}\n  labels:\n    \
             app.kubernetes.io/name: govchain\n    app.kubernetes.io/component: {}\n",
            manifest.kind, manifest.name, manifest.component
        );
        if let Some(department) = &manifest.department {
            let _ = writeln!(yaml, "    govchain/department: {department}");
        }
        let _ = write!(
            yaml,
            "  annotations:\n    govchain/chain-id: {}\n    govchain/genesis-hash: {}\n",
            quoted(&self.chain_id),
            quoted(&self.genesis_hash)
        );
        if manifest.kind == "Secret" {
            yaml.push_str("type: Opaque\ndata:\n");
            for (key, value) in &manifest.entries {
                let _ = writeln!(yaml, "  {key}: {}", BASE64.encode(value));
            }
        } else {
            yaml.push_str("data:\n");
            for (key, value) in &manifest.entries {
                let _ = writeln!(yaml, "  {key}: {}", quoted(value));
            }
        }
    }

    pub fn view(&self, out: &Path) -> BundleView {
        BundleView {
            out: out.to_owned(),
            chain_id: self.chain_id.clone(),
            genesis_hash: self.genesis_hash.clone(),
            departments: self.departments.clone(),
            secrets: self
                .manifests
                .iter()
                .filter(|manifest| manifest.kind == "Secret")
                .map(|manifest| manifest.name.clone())
                .collect(),
            config_map: GENESIS_CONFIG_MAP_NAME.to_owned(),
        }
    }
}

fn quoted(text: &str) -> String {
    // A `str` always serializes.
    serde_json::to_string(text).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use govchain_pki::InitOptions;

    fn consortium(out: &Path) {
        govchain_pki::init_consortium(&InitOptions {
            out: out.to_owned(),
            chain_id: "gov-k8s".into(),
            departments: vec![
                "health".into(),
                "tax".into(),
                "police".into(),
                "civil".into(),
            ],
            hosts: Vec::new(),
            force: false,
            observers: vec!["backup-a".into()],
            attests: Vec::new(),
        })
        .expect("init");
    }

    /// The base64 value of `key` in the document named `name`.
    fn data_value<'a>(yaml: &'a str, name: &str, key: &str) -> &'a str {
        let document = yaml
            .split("---\n")
            .find(|document| document.contains(&format!("  name: {name}\n")))
            .unwrap_or_else(|| panic!("no document {name} in\n{yaml}"));
        let prefix = format!("  {key}: ");
        document
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {key} in {name}:\n{document}"))
    }

    #[test]
    fn one_node_and_one_client_secret_per_department_and_the_genesis() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("certs");
        consortium(&out);
        let bundle = collect(&out).expect("collect");
        assert_eq!(
            bundle.departments,
            ["health", "tax", "police", "civil", "backup-a"]
        );
        let yaml = bundle.to_yaml(&out);
        assert_eq!(yaml.matches("\nkind: Secret\n").count(), 10, "{yaml}");
        assert_eq!(yaml.matches("\nkind: ConfigMap\n").count(), 1, "{yaml}");
        let node_key = std::fs::read(out.join("police/node.key")).expect("key");
        assert_eq!(
            BASE64
                .decode(data_value(&yaml, "govchain-police-node", "node.key"))
                .expect("base64"),
            node_key
        );
        let client_key = std::fs::read(out.join("backup-a/client.key")).expect("key");
        assert_eq!(
            BASE64
                .decode(data_value(&yaml, "govchain-backup-a-client", "client.key"))
                .expect("base64"),
            client_key
        );
        let genesis: String =
            serde_json::from_str(data_value(&yaml, GENESIS_CONFIG_MAP_NAME, "genesis.json"))
                .expect("quoted genesis");
        assert_eq!(
            genesis,
            std::fs::read_to_string(out.join("genesis.json")).expect("genesis")
        );
    }

    #[test]
    fn keys_that_stay_out_of_the_cluster_are_absent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("certs");
        consortium(&out);
        let yaml = collect(&out).expect("collect").to_yaml(&out);
        assert!(!yaml.contains("signing.key"), "{yaml}");
        assert!(!yaml.contains("ca.key"), "{yaml}");
        let ca_key = BASE64.encode(std::fs::read(out.join("ca.key")).expect("ca key"));
        assert!(!yaml.contains(&ca_key));
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("certs");
        consortium(&out);
        std::fs::remove_file(out.join("tax/consensus.key")).expect("remove");
        let message = format!("{:#}", collect(&out).expect_err("missing key"));
        assert!(message.contains("\"tax\""), "{message}");
        assert!(message.contains("consensus.key"), "{message}");
    }

    #[test]
    fn a_folder_without_genesis_says_what_it_expected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let message = format!("{:#}", collect(dir.path()).expect_err("no genesis"));
        assert!(message.contains("govchain certs init"), "{message}");
    }
}
