//! `govchain certs`: the consortium CA, department certificates and genesis.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use govchain_pki::{
    ADMIN_CERTIFICATE_FILE, ADMIN_KEY_FILE, CA_CERTIFICATE_FILE, CLIENT_CERTIFICATE_FILE,
    CLIENT_KEY_FILE, Consortium, InitOptions,
};
use serde::Serialize;

use crate::output::{self, Fields};

mod ceremony;
mod k8s_secrets;

#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Create a consortium: root CA, each department's node, client and
    /// consensus keys, and genesis.
    #[command(
        long_about = "Create a consortium: a root CA; for each department a node certificate, \
            a client certificate and an Ed25519 consensus key; and genesis.json listing the \
            departments as validators in the order given.\n\n\
            Each <out>/<department>/ folder is everything that department's node needs, \
            together with <out>/genesis.json. Keep <out>/ca.key offline: it is only needed \
            to issue more certificates.",
        after_help = "Examples:\n  \
            govchain certs init --out certs --departments health,tax,education,transport\n  \
            govchain certs init --out certs --departments health,tax --chain-id pilot-1 \\\n    \
            --hosts health.gov.example,10.0.0.5"
    )]
    Init(InitArgs),
    /// Issue another client certificate for a department, e.g. for an
    /// application.
    #[command(
        long_about = "Issue another client certificate for a department, signed by the \
            consortium CA, e.g. for an application that submits transactions. Writes \
            client.crt, client.key (mode 0600) and a copy of ca.crt into --out, and refuses \
            to replace an existing client.key. With --admin, writes admin.crt and admin.key \
            instead: a certificate for the platform team that runs the department's node, \
            the only one that node's AdminService (govchain admin backup) accepts.",
        after_help = "Example:\n  \
            govchain certs issue-client --ca-dir certs --department health --out app-certs\n  \
            govchain status --node https://127.0.0.1:7050 \\\n    \
            --ca app-certs/ca.crt --cert app-certs/client.crt --key app-certs/client.key\n  \
            govchain certs issue-client --ca-dir certs --department health --admin --out ops-certs"
    )]
    IssueClient(IssueClientArgs),
    /// Create only the consortium CA, for a ceremony in which each
    /// department makes its own keys (`certs csr`, then `certs sign`).
    #[command(
        long_about = "Create only the consortium CA (ca.crt, ca.key mode 0600, and issued.json,             the list of departments it has issued to), for a key ceremony without a key             dealer: each department runs `govchain certs csr` on its own machine, sends the             request.json, and gets back certificates from `govchain certs sign`; genesis comes             from `govchain genesis assemble`. `certs init` does all of it in one process, for             development.",
        after_help = "Example:
  govchain certs ca --out ca --chain-id gov-prod"
    )]
    Ca(ceremony::CaArgs),
    /// Make a department's private keys here and a request for its
    /// certificates.
    #[command(
        long_about = "Make a department's keys on its own machine: node, client and admin TLS             keys, the Ed25519 consensus key and the transaction signing key, each written with             mode 0600 into --out, which must not hold them already. Writes request.json beside             them: three certificate signing requests and the two public keys, each key signing             the request, so the CA knows the keys' holder asked. Only request.json leaves the             machine.",
        after_help = "Example:
              govchain certs csr --department health --out health-keys --hosts health.gov.example
              scp health-keys/request.json ca-host:requests/health.json"
    )]
    Csr(ceremony::CsrArgs),
    /// Sign a department's request with the consortium CA.
    #[command(
        long_about = "Issue a department's node, client and admin certificates from its             request.json with the consortium CA in --ca-dir: the CA checks the request (each             CSR signed by its key, the consensus and signing keys' signatures over the             request, a valid and unused department name) and chooses the certificates' names,             usages and validity itself. Writes node.crt, client.crt, admin.crt, ca.crt and             public.json into --out and records the department in issued.json, so a name is             issued once.",
        after_help = "Example:
              govchain certs sign --ca-dir ca requests/health.json --out issued/health"
    )]
    Sign(ceremony::SignArgs),
    /// Report days to expiry of certificates; exit 1 when one is close.
    #[command(
        long_about = "Report each certificate's identity, expiry and days left: the files given, \
            or every *.crt below the folders given (a devnet's certs by default). Exits 1 when \
            one expires within --warn-days (30 by default) or has expired. Nodes log a warning \
            for their own certificates from 30 days before, and export \
            govchain_certificate_expiry_seconds.",
        after_help = "Examples:\n  \
            govchain certs check                      # every certificate of ./devnet\n  \
            govchain certs check /etc/govchain/tls --warn-days 60 --json"
    )]
    Check(ceremony::CheckArgs),
    /// Issue a department's node a new certificate before the old one expires.
    #[command(
        long_about = "Issue a new node certificate for a department the CA in --ca-dir has \
            issued to (a new serial and validity; the same names and usages), for the public \
            key of a certificate signing request (--csr, PKCS#10 PEM, e.g. `openssl req -new \
            -key node.key -subj /CN=health`) or of the node key itself (--key, where CA and key \
            share a machine). Writes the certificate to --out in one rename. A running node \
            picks it up without a restart: on SIGHUP, or by itself within 5 seconds of the \
            file's change; new connections then present it, established ones keep theirs. \
            With --dir (a devnet), the CA, key and output default to the devnet's files.",
        after_help = "Examples:\n  \
            govchain certs renew --dir devnet --department tax          # devnet: new certs/tax/node.crt\n  \
            govchain certs renew --ca-dir ca --department health --csr health-node.csr --out health-node.crt"
    )]
    Renew(RenewArgs),
    /// Turn a `certs init` output into Kubernetes Secrets (one node and one
    /// client Secret per department) and the genesis ConfigMap, for the Helm
    /// chart in helm/govchain.
    #[command(
        name = "k8s-secrets",
        long_about = "Turn a `certs init` output into Kubernetes manifests for the Helm chart \
            (helm/govchain): per department (validators and observers) a Secret \
            govchain-<dept>-node with ca.crt, node.crt, node.key and consensus.key, and a \
            Secret govchain-<dept>-client with ca.crt, client.crt and client.key; and a \
            ConfigMap govchain-genesis with genesis.json. These are the names the chart's \
            values expect by default.\n\n\
            ca.key and each department's signing.key are never included: the CA key stays \
            offline, and the node never reads the signing key. The file holds private keys, \
            so it is written with mode 0600: apply it, then delete it.",
        after_help = "Example:\n  \
            govchain certs init --out certs/prod --chain-id gov-prod \\\n    \
            --departments health,tax,police,civil --observers backup-a\n  \
            govchain certs k8s-secrets --dir certs/prod --out secrets.yaml\n  \
            kubectl apply --namespace govchain -f secrets.yaml && rm secrets.yaml\n  \
            helm install govchain helm/govchain --namespace govchain"
    )]
    K8sSecrets(K8sSecretsArgs),
}

#[derive(Debug, Args)]
struct K8sSecretsArgs {
    /// The output folder of `govchain certs init` (genesis.json and one
    /// folder per department).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// File to write the manifests to (multi-document YAML, mode 0600).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct InitArgs {
    /// Directory to write the consortium into.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Department names, comma-separated, in validator order
    /// (lower case letters, digits and '-').
    #[arg(long, value_name = "A,B,C", value_delimiter = ',', required = true)]
    departments: Vec<String>,
    /// Chain id written into genesis; every transaction is bound to it.
    #[arg(long, value_name = "ID", default_value = "govchain-dev")]
    chain_id: String,
    /// Extra DNS names or IP addresses for every node certificate,
    /// comma-separated. localhost, 127.0.0.1 and ::1 are always included.
    #[arg(long, value_name = "H1,H2", value_delimiter = ',')]
    hosts: Vec<String>,
    /// Replace an existing consortium in --out, CA key included.
    #[arg(long)]
    force: bool,
    /// Departments that get node certificates but do not vote: backup
    /// replicas that follow the chain (run them with `observer = true`).
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    observers: Vec<String>,
    /// Attribute names a department may attest about citizens, e.g.
    /// `--attests civil-registry=name,date_of_birth,photo`. Repeat for more
    /// departments. Every department gets a signing key (signing.key) that
    /// genesis lists; departments not named here attest nothing.
    #[arg(long, value_name = "DEPT=ATTR,ATTR", value_parser = parse_attests)]
    attests: Vec<(String, Vec<String>)>,
}

pub fn parse_attests(text: &str) -> Result<(String, Vec<String>), String> {
    let (department, attributes) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not DEPARTMENT=ATTRIBUTE,ATTRIBUTE"))?;
    let attributes: Vec<String> = attributes
        .split(',')
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    if department.is_empty() || attributes.is_empty() {
        return Err(format!("{text:?} is not DEPARTMENT=ATTRIBUTE,ATTRIBUTE"));
    }
    Ok((department.to_owned(), attributes))
}

#[derive(Debug, Args)]
struct IssueClientArgs {
    /// Directory holding the consortium's ca.crt and ca.key.
    #[arg(long, value_name = "DIR")]
    ca_dir: PathBuf,
    /// Department the certificate is for.
    #[arg(long, value_name = "NAME")]
    department: String,
    /// Directory to write client.crt, client.key and ca.crt into
    /// (admin.crt and admin.key with --admin).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Issue an admin certificate for the platform team that runs the
    /// department's node (govchain admin backup), not an application's.
    #[arg(long)]
    admin: bool,
}

pub fn run(args: CertsArgs, json: bool) -> anyhow::Result<()> {
    match args.command {
        CertsCommand::Init(args) => init(args, json),
        CertsCommand::IssueClient(args) => issue_client(args, json),
        CertsCommand::Ca(args) => ceremony::ca(args, json),
        CertsCommand::Csr(args) => ceremony::csr(args, json),
        CertsCommand::Sign(args) => ceremony::sign(args, json),
        CertsCommand::Check(args) => ceremony::check(args, json),
        CertsCommand::Renew(args) => renew(args, json),
        CertsCommand::K8sSecrets(args) => k8s_secrets(args, json),
    }
}

fn k8s_secrets(args: K8sSecretsArgs, json: bool) -> anyhow::Result<()> {
    let bundle = k8s_secrets::collect(&args.dir)?;
    govchain_pki::write_private_file(&args.out, bundle.to_yaml(&args.dir).as_bytes())?;
    let view = bundle.view(&args.out);
    if json {
        return output::print_json(&view);
    }
    let mut fields = Fields::new();
    fields
        .add("chain id", &view.chain_id)
        .add("genesis hash", &view.genesis_hash)
        .add("departments", view.departments.join(", "))
        .add("secrets", view.secrets.len())
        .add("config map", &view.config_map)
        .add("written", format!("{} (mode 0600)", args.out.display()));
    output::print(&format!(
        "{}\n\nNext steps:\n  \
         kubectl apply --namespace NAMESPACE -f {out} && rm {out}\n  \
         helm install govchain helm/govchain --namespace NAMESPACE \
         (values: validators[].name and secretName, see helm/govchain/README.md)",
        fields.render(),
        out = args.out.display()
    ))
}

#[derive(Debug, Serialize)]
struct InitView {
    chain_id: String,
    genesis_hash: String,
    ca_certificate: PathBuf,
    ca_key: PathBuf,
    genesis: PathBuf,
    departments: Vec<DepartmentView>,
}

#[derive(Debug, Serialize)]
struct DepartmentView {
    name: String,
    dir: PathBuf,
    files: Vec<PathBuf>,
}

fn init(args: InitArgs, json: bool) -> anyhow::Result<()> {
    let consortium = govchain_pki::init_consortium(&InitOptions {
        observers: args.observers,
        out: args.out,
        chain_id: args.chain_id,
        departments: args.departments,
        hosts: args.hosts,
        force: args.force,
        attests: args.attests,
    })?;
    if json {
        return output::print_json(&init_view(&consortium));
    }
    output::print(&init_text(&consortium))
}

fn init_view(consortium: &Consortium) -> InitView {
    InitView {
        chain_id: consortium.genesis.chain_id.clone(),
        genesis_hash: consortium.genesis.hash().to_hex(),
        ca_certificate: consortium.ca_certificate.clone(),
        ca_key: consortium.ca_key.clone(),
        genesis: consortium.genesis_path.clone(),
        departments: consortium
            .departments
            .iter()
            .map(|files| DepartmentView {
                name: files.department.clone(),
                dir: files.dir.clone(),
                files: vec![
                    files.ca_certificate.clone(),
                    files.node_certificate.clone(),
                    files.node_key.clone(),
                    files.client_certificate.clone(),
                    files.client_key.clone(),
                    files.admin_certificate.clone(),
                    files.admin_key.clone(),
                    files.consensus_key.clone(),
                ],
            })
            .collect(),
    }
}

fn init_text(consortium: &Consortium) -> String {
    let genesis = &consortium.genesis;
    let mut fields = Fields::new();
    fields
        .add("chain id", &genesis.chain_id)
        .add("genesis hash", genesis.hash())
        .add("validators", genesis.validators.len())
        .add("CA certificate", consortium.ca_certificate.display())
        .add(
            "CA key",
            format!("{} (keep offline)", consortium.ca_key.display()),
        )
        .add("genesis", consortium.genesis_path.display());
    for files in &consortium.departments {
        fields.add(
            &files.department,
            format!(
                "{}/ (ca.crt node.crt node.key client.crt client.key admin.crt admin.key consensus.key)",
                files.dir.display()
            ),
        );
    }
    let out = consortium.out.display();
    let first = consortium
        .departments
        .first()
        .map_or("<dept>", |files| files.department.as_str());
    format!(
        "{}\n\nNext steps:\n  \
         give each department its {out}/<department>/ folder and {out}/genesis.json\n  \
         write a node.toml for each node and run: govchain node --config node.toml\n  \
         or try it all locally: govchain devnet\n  \
         more client certificates: govchain certs issue-client --ca-dir {out} --department {first} --out DIR",
        fields.render()
    )
}

#[derive(Debug, Args)]
struct RenewArgs {
    /// Department whose node certificate is renewed.
    #[arg(long, value_name = "NAME")]
    department: String,
    /// Directory holding the consortium's ca.crt, ca.key and issued.json
    /// (default with --dir: DIR/certs).
    #[arg(long, value_name = "DIR")]
    ca_dir: Option<PathBuf>,
    /// A certificate signing request (PEM) for the node's key.
    #[arg(long, value_name = "FILE", conflicts_with = "key")]
    csr: Option<PathBuf>,
    /// The node's private key (PEM) instead of a request (default with
    /// --dir: DIR/certs/<department>/node.key).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Where to write the certificate (default with --dir:
    /// DIR/certs/<department>/node.crt, the file the node reads).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Extra DNS names or IP addresses for the certificate, comma-separated.
    #[arg(long, value_name = "HOSTS", value_delimiter = ',')]
    hosts: Vec<String>,
    /// A devnet directory, for the defaults above.
    #[arg(long, env = "GOVCHAIN_DIR", value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Debug, serde::Serialize)]
struct RenewView {
    department: String,
    certificate: PathBuf,
    not_after: String,
}

fn renew(args: RenewArgs, json: bool) -> anyhow::Result<()> {
    let devnet_certs = args.dir.as_ref().map(|dir| dir.join("certs"));
    let need = |given: Option<PathBuf>, default: Option<PathBuf>, flag: &str| {
        given
            .or(default)
            .with_context(|| format!("give {flag} (or --dir with a devnet)"))
    };
    let ca_dir = need(args.ca_dir, devnet_certs.clone(), "--ca-dir")?;
    let department_dir = devnet_certs.map(|certs| certs.join(&args.department));
    let out = need(
        args.out,
        department_dir
            .as_ref()
            .map(|dir| dir.join(govchain_pki::NODE_CERTIFICATE_FILE)),
        "--out",
    )?;
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let pem = match args.csr {
        Some(csr) => {
            let text = read(&csr)?;
            govchain_pki::renew_node_certificate(
                &ca_dir,
                &args.department,
                govchain_pki::RenewFrom::Csr(&text),
                &args.hosts,
                &out,
            )?
        }
        None => {
            let key = need(
                args.key,
                department_dir.map(|dir| dir.join(govchain_pki::NODE_KEY_FILE)),
                "--csr or --key",
            )?;
            let text = read(&key)?;
            govchain_pki::renew_node_certificate(
                &ca_dir,
                &args.department,
                govchain_pki::RenewFrom::Key(&text),
                &args.hosts,
                &out,
            )?
        }
    };
    let validity = govchain_pki::certificate_validity(&pem)?;
    let view = RenewView {
        department: args.department,
        certificate: out,
        not_after: crate::output::format_time_ms(
            u64::try_from(validity.not_after_unix_s).unwrap_or(0) * 1000,
        ),
    };
    if json {
        return output::print_json(&view);
    }
    let mut fields = Fields::new();
    fields
        .add("department", &view.department)
        .add("certificate", view.certificate.display())
        .add("valid until", &view.not_after);
    output::print(&format!(
        "{}\n\nThe node uses it within 5 seconds, or at once on: kill -HUP <node pid>",
        fields.render()
    ))
}

fn issue_client(args: IssueClientArgs, json: bool) -> anyhow::Result<()> {
    if args.admin {
        govchain_pki::issue_admin(&args.ca_dir, &args.department, &args.out)?;
    } else {
        govchain_pki::issue_client(&args.ca_dir, &args.department, &args.out)?;
    }
    let files = issued_files(&args.out, args.admin);
    if json {
        return output::print_json(&DepartmentView {
            name: args.department,
            dir: args.out,
            files: files.to_vec(),
        });
    }
    let [ca, cert, key] = &files;
    let mut fields = Fields::new();
    fields
        .add("department", &args.department)
        .add("certificate", cert.display())
        .add("key", format!("{} (mode 0600)", key.display()))
        .add("CA certificate", ca.display());
    output::print(&format!(
        "{}\n\nUse it with:\n  govchain {} --node URL --ca {} --cert {} --key {}",
        fields.render(),
        if args.admin {
            "admin backup --out DIR"
        } else {
            "status"
        },
        ca.display(),
        cert.display(),
        key.display()
    ))
}

fn issued_files(out: &Path, admin: bool) -> [PathBuf; 3] {
    let (certificate, key) = if admin {
        (ADMIN_CERTIFICATE_FILE, ADMIN_KEY_FILE)
    } else {
        (CLIENT_CERTIFICATE_FILE, CLIENT_KEY_FILE)
    };
    [
        out.join(CA_CERTIFICATE_FILE),
        out.join(certificate),
        out.join(key),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_text_lists_files_and_next_steps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("certs");
        let consortium = govchain_pki::init_consortium(&InitOptions {
            observers: Vec::new(),
            out: out.clone(),
            chain_id: "govchain-test".into(),
            departments: vec!["health".into(), "tax".into()],
            hosts: Vec::new(),
            force: false,
            attests: Vec::new(),
        })
        .expect("init");
        let text = init_text(&consortium);
        assert!(text.contains("chain id:"), "{text}");
        assert!(text.contains(&format!("{}/tax/", out.display())), "{text}");
        assert!(text.contains("govchain node --config"), "{text}");
        let view = serde_json::to_value(init_view(&consortium)).expect("json");
        assert_eq!(view["departments"][1]["name"], "tax");
        assert_eq!(
            view["departments"][0]["files"].as_array().map(Vec::len),
            Some(8)
        );
    }
}
