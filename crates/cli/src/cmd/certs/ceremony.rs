//! `govchain certs ca|csr|sign` and `govchain genesis assemble`: the key
//! ceremony in which no one but a department ever holds its private keys.

use std::path::PathBuf;

use clap::Args;
use govchain_pki::{DepartmentKeys, REQUEST_FILE};
use serde::Serialize;

use crate::output::{self, Fields};

#[derive(Debug, Args)]
pub struct CaArgs {
    /// Directory for ca.crt, ca.key (mode 0600) and issued.json.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The chain id the CA is named after (the same as genesis').
    #[arg(long, value_name = "ID")]
    pub chain_id: String,
    /// Replace an existing CA key in --out.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CsrArgs {
    /// The department's name (lower case letters, digits and '-').
    #[arg(long, value_name = "NAME")]
    pub department: String,
    /// Directory for the five private keys (mode 0600) and request.json.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// DNS names or IP addresses to ask for on the node certificate,
    /// comma-separated (localhost, 127.0.0.1 and ::1 are always on it).
    #[arg(long, value_delimiter = ',', value_name = "HOSTS")]
    pub hosts: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// Directory holding the consortium's ca.crt, ca.key and issued.json.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// A department's request.json from `govchain certs csr`.
    #[arg(value_name = "REQUEST")]
    pub request: PathBuf,
    /// Directory for the department's certificates, ca.crt and public.json.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// More DNS names or IP addresses for the node certificate, besides
    /// those the request asks for.
    #[arg(long, value_delimiter = ',', value_name = "HOSTS")]
    pub hosts: Vec<String>,
}

#[derive(Debug, Serialize)]
struct CaView {
    ca_certificate: PathBuf,
    chain_id: String,
}

#[derive(Debug, Serialize)]
struct CsrView {
    department: String,
    request: PathBuf,
    keys: PathBuf,
    consensus_public_key: String,
    signing_public_key: String,
}

#[derive(Debug, Serialize)]
struct SignView {
    department: String,
    out: PathBuf,
    tls_identity: String,
    consensus_public_key: String,
}

pub fn ca(args: CaArgs, json: bool) -> anyhow::Result<()> {
    let ca_certificate = govchain_pki::init_ca(&args.out, &args.chain_id, args.force)?;
    let view = CaView {
        ca_certificate,
        chain_id: args.chain_id,
    };
    if json {
        return output::print_json(&view);
    }
    output::print(&format!(
        "consortium CA for chain {} in {} (keep ca.key offline)\n\n\
         Next: each department runs `govchain certs csr` on its own machine and sends you \
         its request.json; sign each with `govchain certs sign --ca-dir {}`.",
        view.chain_id,
        args.out.display(),
        args.out.display()
    ))
}

pub fn csr(args: CsrArgs, json: bool) -> anyhow::Result<()> {
    let keys = DepartmentKeys::generate(&args.department)?;
    let request = keys.request(&args.hosts)?;
    keys.write(&args.out)?;
    let path = args.out.join(REQUEST_FILE);
    let text = serde_json::to_string_pretty(&request)?;
    std::fs::write(&path, text)
        .map_err(|err| anyhow::anyhow!("cannot write {}: {err}", path.display()))?;
    let view = CsrView {
        department: request.department.clone(),
        request: path,
        keys: args.out.clone(),
        consensus_public_key: request.consensus_public_key.clone(),
        signing_public_key: request.signing_public_key.clone(),
    };
    if json {
        return output::print_json(&view);
    }
    let mut fields = Fields::new();
    fields
        .add("department", &view.department)
        .add(
            "private keys",
            format!(
                "{} (mode 0600; they never leave this machine)",
                view.keys.display()
            ),
        )
        .add("request", view.request.display())
        .add("consensus key", &view.consensus_public_key)
        .add("signing key", &view.signing_public_key);
    output::print(&format!(
        "{}\n\nNext: send {} (public parts only) to the holder of the consortium CA.",
        fields.render(),
        view.request.display()
    ))
}

pub fn sign(args: SignArgs, json: bool) -> anyhow::Result<()> {
    let issued =
        govchain_pki::sign_request_file(&args.ca_dir, &args.request, &args.hosts, &args.out)?;
    let view = SignView {
        department: issued.public.department.clone(),
        out: args.out.clone(),
        tls_identity: issued.public.tls_identity.clone(),
        consensus_public_key: issued.public.consensus_public_key.clone(),
    };
    if json {
        return output::print_json(&view);
    }
    output::print(&format!(
        "issued node, client and admin certificates for {} in {}\n\n\
         Next: send the department its *.crt files and ca.crt; give public.json to whoever \
         assembles genesis (`govchain genesis assemble`).",
        view.department,
        view.out.display()
    ))
}
