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

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Certificate files (PEM) or folders to search for *.crt; a devnet's
    /// `devnet/certs`, or a node's folder.
    #[arg(value_name = "PATH", default_value = "devnet/certs")]
    pub paths: Vec<PathBuf>,
    /// Flag certificates that expire within this many days.
    #[arg(long, value_name = "DAYS", default_value_t = govchain_pki::EXPIRY_WARNING_DAYS)]
    pub warn_days: i64,
}

/// One certificate's line (`--json`: `{"certificates": [..]}`).
#[derive(Debug, Serialize)]
struct ExpiryLine {
    file: PathBuf,
    identity: Option<String>,
    subject: String,
    not_after: String,
    days_left: i64,
    /// "ok", "expires soon" or "expired".
    state: &'static str,
}

#[derive(Debug, Serialize)]
struct CheckView {
    certificates: Vec<ExpiryLine>,
}

/// Every *.crt below `path` (or `path` itself), sorted.
fn certificate_files(path: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut found = Vec::new();
    let mut stack = vec![path.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "crt") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Reports days to expiry of each certificate; exits 1 when one expires
/// within `--warn-days` or has expired.
pub fn check(args: CheckArgs, json: bool) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut lines = Vec::new();
    for path in &args.paths {
        for file in certificate_files(path)? {
            let pem = govchain_pki::read_pem(&file)?;
            let validity = govchain_pki::certificate_validity(&pem)
                .map_err(|err| anyhow::anyhow!("{} {err}", file.display()))?;
            let days_left = (validity.not_after_unix_s - now).div_euclid(86_400);
            lines.push(ExpiryLine {
                identity: validity.identity,
                subject: validity.subject,
                not_after: output::format_time_ms(
                    u64::try_from(validity.not_after_unix_s)
                        .unwrap_or(0)
                        .saturating_mul(1000),
                ),
                days_left,
                state: if validity.not_after_unix_s <= now {
                    "expired"
                } else if days_left < args.warn_days {
                    "expires soon"
                } else {
                    "ok"
                },
                file,
            });
        }
    }
    anyhow::ensure!(
        !lines.is_empty(),
        "no certificate (*.crt) in {}",
        args.paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let flagged = lines.iter().filter(|l| l.state != "ok").count();
    let view = CheckView {
        certificates: lines,
    };
    if json {
        output::print_json(&view)?;
    } else {
        let mut table = output::Table::new(&["FILE", "IDENTITY", "EXPIRES", "DAYS", "STATE"]);
        for line in &view.certificates {
            table.add(vec![
                line.file.display().to_string(),
                line.identity
                    .clone()
                    .unwrap_or_else(|| line.subject.clone()),
                line.not_after.clone(),
                line.days_left.to_string(),
                line.state.to_owned(),
            ]);
        }
        output::print(&table.render())?;
    }
    if flagged > 0 {
        return Err(crate::exit::Negative::new(format!(
            "{flagged} certificates expire within {} days or have expired: renew them",
            args.warn_days
        ))
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certs_check_flags_what_expires_within_the_warning() {
        let dir = tempfile::tempdir().expect("dir");
        govchain_pki::init_consortium(&govchain_pki::InitOptions {
            observers: Vec::new(),
            out: dir.path().to_owned(),
            chain_id: "c".into(),
            departments: vec!["health".into()],
            hosts: Vec::new(),
            force: false,
            attests: Vec::new(),
        })
        .expect("init");
        let args = |warn_days| CheckArgs {
            paths: vec![dir.path().to_owned()],
            warn_days,
        };
        // Leaves (node, client, admin) last about two years, the CA ten.
        check(args(30), true).expect("nothing close to expiry");
        let err = check(args(800), true).expect_err("the leaves expire within 800 days");
        let negative = err
            .downcast_ref::<crate::exit::Negative>()
            .expect("a negative answer");
        assert!(
            negative
                .message()
                .is_some_and(|m| m.starts_with("3 certificates expire within 800 days")),
            "{err:#}"
        );
        let empty = tempfile::tempdir().expect("dir");
        let err = check(
            CheckArgs {
                paths: vec![empty.path().to_owned()],
                warn_days: 30,
            },
            true,
        )
        .expect_err("no certificates");
        assert!(err.to_string().contains("no certificate"), "{err:#}");
    }
}
