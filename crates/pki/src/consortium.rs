//! `govchain certs init` and `govchain certs issue-client`: the consortium
//! root CA, each department's node, client and consensus keys, and genesis.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::ceremony::{
    DepartmentKeys, DepartmentPublic, assemble_genesis, record_issued, sign_request,
};
use crate::error::PkiError;
use crate::files::{PUBLIC_FILE_MODE, SECRET_FILE_MODE, create_dir, read_pem, write_file};
use crate::genesis::{Genesis, VALIDATORS_MAX, validate_chain_id};
use crate::identity::{TlsIdentity, node_dns_name, validate_department};

pub const CA_CERTIFICATE_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";
pub const GENESIS_FILE: &str = "genesis.json";
pub const NODE_CERTIFICATE_FILE: &str = "node.crt";
pub const NODE_KEY_FILE: &str = "node.key";
pub const CLIENT_CERTIFICATE_FILE: &str = "client.crt";
pub const CLIENT_KEY_FILE: &str = "client.key";
pub const CONSENSUS_KEY_FILE: &str = "consensus.key";
pub const ADMIN_CERTIFICATE_FILE: &str = "admin.crt";
pub const ADMIN_KEY_FILE: &str = "admin.key";
pub const SIGNING_KEY_FILE: &str = "signing.key";

/// Long enough that a dev or pilot consortium never re-keys its root; the CA
/// key is offline after init, so the exposure is small.
const CA_VALIDITY: Duration = Duration::days(3650);
/// Leaves expire long before the CA, so re-issuing one never needs a new root.
const LEAF_VALIDITY: Duration = Duration::days(730);
/// Backdating tolerates clocks that run a little behind the one that issued.
const CLOCK_SKEW: Duration = Duration::hours(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOptions {
    pub out: PathBuf,
    pub chain_id: String,
    /// Validators in genesis order.
    pub departments: Vec<String>,
    /// Extra DNS names or IP addresses for every node certificate, e.g. a
    /// Kubernetes service name.
    pub hosts: Vec<String>,
    /// Replace an existing consortium in `out`, CA key included.
    pub force: bool,
    /// Departments that get node certificates but are not validators:
    /// backup (non-voting) replicas that follow the chain.
    pub observers: Vec<String>,
    /// Attribute names each department may attest, by department name
    /// (validators and observers); departments not listed attest nothing.
    pub attests: Vec<(String, Vec<String>)>,
}

/// What [`init_consortium`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consortium {
    pub out: PathBuf,
    pub ca_certificate: PathBuf,
    pub ca_key: PathBuf,
    pub genesis_path: PathBuf,
    pub genesis: Genesis,
    pub departments: Vec<DepartmentFiles>,
}

/// The files in one department's folder, `<out>/<department>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepartmentFiles {
    pub department: String,
    pub dir: PathBuf,
    pub node_certificate: PathBuf,
    pub node_key: PathBuf,
    pub client_certificate: PathBuf,
    pub client_key: PathBuf,
    /// The platform team's certificate for the node's `AdminService`.
    pub admin_certificate: PathBuf,
    pub admin_key: PathBuf,
    pub consensus_key: PathBuf,
    /// The Ed25519 key the department signs transactions with, listed in
    /// genesis `departments`.
    pub signing_key: PathBuf,
    /// A copy of the CA certificate, so the folder is all a department needs.
    pub ca_certificate: PathBuf,
}

impl DepartmentFiles {
    /// The paths under `out`; touches no file.
    pub fn new(out: &Path, department: &str) -> Self {
        let dir = out.join(department);
        Self {
            department: department.to_owned(),
            node_certificate: dir.join(NODE_CERTIFICATE_FILE),
            node_key: dir.join(NODE_KEY_FILE),
            client_certificate: dir.join(CLIENT_CERTIFICATE_FILE),
            client_key: dir.join(CLIENT_KEY_FILE),
            admin_certificate: dir.join(ADMIN_CERTIFICATE_FILE),
            admin_key: dir.join(ADMIN_KEY_FILE),
            consensus_key: dir.join(CONSENSUS_KEY_FILE),
            signing_key: dir.join(SIGNING_KEY_FILE),
            ca_certificate: dir.join(CA_CERTIFICATE_FILE),
            dir,
        }
    }
}

/// A certificate with its private key, both PEM.
pub(crate) struct Issued {
    certificate_pem: String,
    key_pem: String,
}

/// One department's material, made in memory before anything is written.
struct DepartmentMaterial {
    files: DepartmentFiles,
    node: Issued,
    client: Issued,
    admin: Issued,
    consensus_key_pem: String,
    signing_key_pem: String,
    public: DepartmentPublic,
}

/// Creates a new consortium in `options.out`; see the crate docs for the files.
///
/// Everything is generated and checked in memory first, so bad input writes
/// nothing. `ca.key` is written last, so that a failed write leaves no CA key
/// behind to block a retry without `--force`.
pub fn init_consortium(options: &InitOptions) -> Result<Consortium, PkiError> {
    validate_options(options)?;
    let ca_key_path = options.out.join(CA_KEY_FILE);
    if !options.force && ca_key_path.exists() {
        return Err(PkiError::CaKeyExists { path: ca_key_path });
    }
    let hosts = parse_hosts(&options.hosts)?;
    let (ca, issuer) = make_ca(&options.chain_id)?;
    let departments = options
        .departments
        .iter()
        .map(|department| make_department(&options.out, department, &hosts, &issuer))
        .collect::<Result<Vec<_>, _>>()?;
    let observers = options
        .observers
        .iter()
        .map(|department| make_department(&options.out, department, &hosts, &issuer))
        .collect::<Result<Vec<_>, _>>()?;
    let publics = |materials: &[DepartmentMaterial]| -> Vec<DepartmentPublic> {
        materials.iter().map(|m| m.public.clone()).collect()
    };
    let genesis = assemble_genesis(
        &options.chain_id,
        &publics(&departments),
        &publics(&observers),
        &options.attests,
    )?;

    create_dir(&options.out)?;
    for material in departments.iter().chain(&observers) {
        write_department(material, &ca.certificate_pem)?;
    }
    let ca_certificate = options.out.join(CA_CERTIFICATE_FILE);
    write_file(
        &ca_certificate,
        ca.certificate_pem.as_bytes(),
        PUBLIC_FILE_MODE,
    )?;
    let genesis_path = options.out.join(GENESIS_FILE);
    genesis.write(&genesis_path)?;
    let names: Vec<&str> = departments
        .iter()
        .chain(&observers)
        .map(|m| m.public.department.as_str())
        .collect();
    // A fresh registry: `--force` replaced the CA, so nothing it issued
    // before counts.
    let registry = options.out.join(crate::ceremony::ISSUED_FILE);
    if registry.exists() {
        std::fs::remove_file(&registry).map_err(|source| PkiError::Io {
            action: "remove",
            path: registry.clone(),
            source,
        })?;
    }
    record_issued(&options.out, &names)?;
    write_file(&ca_key_path, ca.key_pem.as_bytes(), SECRET_FILE_MODE)?;
    Ok(Consortium {
        out: options.out.clone(),
        ca_certificate,
        ca_key: ca_key_path,
        genesis_path,
        genesis,
        departments: departments
            .into_iter()
            .map(|material| material.files)
            .collect(),
    })
}

/// Creates only the consortium CA in `out` (`ca.crt`, `ca.key` mode 0600,
/// and an empty `issued.json`), for a ceremony in which each department
/// makes its own keys (`govchain certs ca`). Refuses to replace a CA key
/// unless `force`.
pub fn init_ca(out: &Path, chain_id: &str, force: bool) -> Result<PathBuf, PkiError> {
    validate_chain_id(chain_id)?;
    let ca_key_path = out.join(CA_KEY_FILE);
    if !force && ca_key_path.exists() {
        return Err(PkiError::CaKeyExists { path: ca_key_path });
    }
    let (ca, _) = make_ca(chain_id)?;
    create_dir(out)?;
    let ca_certificate = out.join(CA_CERTIFICATE_FILE);
    write_file(
        &ca_certificate,
        ca.certificate_pem.as_bytes(),
        PUBLIC_FILE_MODE,
    )?;
    let registry = out.join(crate::ceremony::ISSUED_FILE);
    if registry.exists() {
        std::fs::remove_file(&registry).map_err(|source| PkiError::Io {
            action: "remove",
            path: registry.clone(),
            source,
        })?;
    }
    record_issued(out, &[])?;
    write_file(&ca_key_path, ca.key_pem.as_bytes(), SECRET_FILE_MODE)?;
    Ok(ca_certificate)
}

fn validate_options(options: &InitOptions) -> Result<(), PkiError> {
    validate_chain_id(&options.chain_id)?;
    let count = options.departments.len();
    if count == 0 || count > VALIDATORS_MAX {
        return Err(PkiError::DepartmentCount {
            got: count,
            max: VALIDATORS_MAX,
        });
    }
    let mut seen = HashSet::new();
    for department in options.departments.iter().chain(&options.observers) {
        validate_department(department)?;
        if !seen.insert(department.as_str()) {
            return Err(PkiError::DuplicateDepartment {
                name: department.clone(),
            });
        }
    }
    if let Some((name, _)) = options
        .attests
        .iter()
        .find(|(name, _)| !seen.contains(name.as_str()))
    {
        return Err(PkiError::UnknownAttester { name: name.clone() });
    }
    Ok(())
}

/// Issues another client certificate for `department` from the CA in
/// `ca_dir`, writing `client.crt`, `client.key` and a copy of `ca.crt` into
/// `out_dir`. It refuses to replace an existing `client.key`, which some
/// application may still be using.
pub fn issue_client(ca_dir: &Path, department: &str, out_dir: &Path) -> Result<(), PkiError> {
    issue_leaf(ca_dir, &TlsIdentity::client(department)?, out_dir)
}

/// Issues another admin certificate for `department` (the platform team
/// running its node), writing `admin.crt`, `admin.key` and a copy of
/// `ca.crt` into `out_dir`; it refuses to replace an existing `admin.key`.
pub fn issue_admin(ca_dir: &Path, department: &str, out_dir: &Path) -> Result<(), PkiError> {
    issue_leaf(ca_dir, &TlsIdentity::admin(department)?, out_dir)
}

/// `identity` is a client or admin identity: both are client-only leaves.
fn issue_leaf(ca_dir: &Path, identity: &TlsIdentity, out_dir: &Path) -> Result<(), PkiError> {
    let (certificate_file, key_file) = match identity.role {
        crate::identity::Role::Admin => (ADMIN_CERTIFICATE_FILE, ADMIN_KEY_FILE),
        _ => (CLIENT_CERTIFICATE_FILE, CLIENT_KEY_FILE),
    };
    let client_key_path = out_dir.join(key_file);
    if client_key_path.exists() {
        return Err(PkiError::ClientKeyExists {
            path: client_key_path,
        });
    }
    let ca_certificate_path = ca_dir.join(CA_CERTIFICATE_FILE);
    let ca_certificate_pem = read_pem(&ca_certificate_path)?;
    let issuer = load_issuer(
        &ca_certificate_path,
        &ca_certificate_pem,
        &ca_dir.join(CA_KEY_FILE),
    )?;
    let client = make_client(identity, &issuer)?;
    create_dir(out_dir)?;
    write_file(
        &out_dir.join(CA_CERTIFICATE_FILE),
        ca_certificate_pem.as_bytes(),
        PUBLIC_FILE_MODE,
    )?;
    write_file(
        &out_dir.join(certificate_file),
        client.certificate_pem.as_bytes(),
        PUBLIC_FILE_MODE,
    )?;
    write_file(
        &client_key_path,
        client.key_pem.as_bytes(),
        SECRET_FILE_MODE,
    )
}

/// Loads the CA as an rcgen issuer, checking that the key belongs to the
/// certificate: otherwise every certificate issued would fail to verify, and
/// only at the first TLS handshake.
pub(crate) fn load_issuer(
    certificate_path: &Path,
    certificate_pem: &str,
    key_path: &Path,
) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let key_pem = read_pem(key_path)?;
    let key = KeyPair::from_pem(&key_pem).map_err(|err| PkiError::Key {
        path: key_path.to_owned(),
        reason: err.to_string(),
    })?;
    let ca_error = |reason: String| PkiError::CaCertificate {
        path: certificate_path.to_owned(),
        reason,
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(certificate_pem.as_bytes())
        .map_err(|err| ca_error(err.to_string()))?;
    let certificate = pem.parse_x509().map_err(|err| ca_error(err.to_string()))?;
    if !certificate.is_ca() {
        return Err(ca_error("it is not a CA certificate".to_owned()));
    }
    if certificate.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(PkiError::CaKeyMismatch {
            key: key_path.to_owned(),
            certificate: certificate_path.to_owned(),
        });
    }
    Issuer::from_ca_cert_pem(certificate_pem, key).map_err(|err| ca_error(err.to_string()))
}

/// One department's keys and certificates, through the same request and
/// signing steps as the ceremony (`ceremony`): the keys never leave this
/// function but into the department's own folder.
fn make_department(
    out: &Path,
    department: &str,
    hosts: &[SanType],
    issuer: &Issuer<'_, KeyPair>,
) -> Result<DepartmentMaterial, PkiError> {
    let keys = DepartmentKeys::generate(department)?;
    let issued = sign_request(&keys.request(&[])?, issuer, hosts)?;
    let mut private: std::collections::BTreeMap<&str, String> =
        keys.private_files()?.into_iter().collect();
    let mut take = |name: &str| private.remove(name).unwrap_or_default();
    Ok(DepartmentMaterial {
        files: DepartmentFiles::new(out, department),
        node: Issued {
            certificate_pem: issued.node_pem,
            key_pem: take(NODE_KEY_FILE),
        },
        client: Issued {
            certificate_pem: issued.client_pem,
            key_pem: take(CLIENT_KEY_FILE),
        },
        admin: Issued {
            certificate_pem: issued.admin_pem,
            key_pem: take(ADMIN_KEY_FILE),
        },
        consensus_key_pem: take(CONSENSUS_KEY_FILE),
        signing_key_pem: take(SIGNING_KEY_FILE),
        public: issued.public,
    })
}

fn write_department(
    material: &DepartmentMaterial,
    ca_certificate_pem: &str,
) -> Result<(), PkiError> {
    let files = &material.files;
    create_dir(&files.dir)?;
    write_file(
        &files.ca_certificate,
        ca_certificate_pem.as_bytes(),
        PUBLIC_FILE_MODE,
    )?;
    write_file(
        &files.node_certificate,
        material.node.certificate_pem.as_bytes(),
        PUBLIC_FILE_MODE,
    )?;
    write_file(
        &files.node_key,
        material.node.key_pem.as_bytes(),
        SECRET_FILE_MODE,
    )?;
    write_file(
        &files.client_certificate,
        material.client.certificate_pem.as_bytes(),
        PUBLIC_FILE_MODE,
    )?;
    write_file(
        &files.client_key,
        material.client.key_pem.as_bytes(),
        SECRET_FILE_MODE,
    )?;
    write_file(
        &files.admin_certificate,
        material.admin.certificate_pem.as_bytes(),
        PUBLIC_FILE_MODE,
    )?;
    write_file(
        &files.admin_key,
        material.admin.key_pem.as_bytes(),
        SECRET_FILE_MODE,
    )?;
    write_file(
        &files.consensus_key,
        material.consensus_key_pem.as_bytes(),
        SECRET_FILE_MODE,
    )?;
    write_file(
        &files.signing_key,
        material.signing_key_pem.as_bytes(),
        SECRET_FILE_MODE,
    )
}

/// Extra hosts become IP SANs when they parse as addresses, DNS SANs otherwise.
pub(crate) fn parse_hosts(hosts: &[String]) -> Result<Vec<SanType>, PkiError> {
    hosts.iter().map(|host| parse_host(host)).collect()
}

fn parse_host(host: &str) -> Result<SanType, PkiError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let invalid = |reason: &str| PkiError::Host {
        host: host.to_owned(),
        reason: reason.to_owned(),
    };
    if host.is_empty() || host.len() > 253 {
        return Err(invalid("a DNS name is 1 to 253 characters"));
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.');
    if !host.bytes().all(allowed) {
        return Err(invalid(
            "a DNS name may only contain letters, digits, '-' and '.' (no wildcards: a wildcard could name another department's host)",
        ));
    }
    // Peers check a node by the name `<department>.node.govchain`, which
    // the CA puts on each node certificate itself: a host asking for any
    // name in that domain asks to be taken for another department's node.
    let lower = host.to_ascii_lowercase();
    if lower == NODE_DNS_DOMAIN || lower.ends_with(&format!(".{NODE_DNS_DOMAIN}")) {
        return Err(invalid(&format!(
            "names in {NODE_DNS_DOMAIN} are the CA's to give (each node certificate carries its own department's)"
        )));
    }
    dns(host).map_err(|err| invalid(&err.to_string()))
}

/// The domain of the names peers check nodes by (`node_dns_name`).
const NODE_DNS_DOMAIN: &str = "node.govchain";

fn dns(name: &str) -> Result<SanType, rcgen::Error> {
    Ok(SanType::DnsName(name.try_into()?))
}

fn certificate_error(what: &str) -> impl Fn(rcgen::Error) -> PkiError + '_ {
    move |err| PkiError::Certificate {
        what: what.to_owned(),
        reason: err.to_string(),
    }
}

pub(crate) fn make_ca(chain_id: &str) -> Result<(Issued, Issuer<'static, KeyPair>), PkiError> {
    let error = certificate_error("CA");
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(&error)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("govchain consortium root CA ({chain_id})"),
    );
    // Path length 0: the root signs leaves directly, never an intermediate CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, CA_VALIDITY);
    let certificate = params.self_signed(&key).map_err(&error)?;
    let issued = Issued {
        certificate_pem: certificate.pem(),
        key_pem: key.serialize_pem(),
    };
    Ok((issued, Issuer::new(params, key)))
}

/// A node serves peers and clients and also dials peers, so its certificate is
/// good for both server and client authentication. Signs `public_key`
/// (the node's own, from its request).
pub(crate) fn node_certificate(
    identity: &TlsIdentity,
    hosts: &[SanType],
    public_key: &impl rcgen::PublicKeyData,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<String, PkiError> {
    let error = certificate_error("node");
    let mut names = vec![
        SanType::URI(identity.to_uri().try_into().map_err(&error)?),
        dns(&node_dns_name(&identity.department)).map_err(&error)?,
        dns("localhost").map_err(&error)?,
        SanType::IpAddress(IpAddr::from([127, 0, 0, 1])),
        SanType::IpAddress(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])),
    ];
    for host in hosts {
        if !names.contains(host) {
            names.push(host.clone());
        }
    }
    let usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    sign_leaf(
        &format!("govchain node {}", identity.department),
        names,
        usages,
        public_key,
        issuer,
        &error,
    )
}

/// A client or admin certificate for `public_key`: client authentication
/// only.
pub(crate) fn client_certificate(
    identity: &TlsIdentity,
    public_key: &impl rcgen::PublicKeyData,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<String, PkiError> {
    let error = certificate_error("client");
    let names = vec![SanType::URI(identity.to_uri().try_into().map_err(&error)?)];
    let usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    sign_leaf(
        &format!("govchain {} {}", identity.role, identity.department),
        names,
        usages,
        public_key,
        issuer,
        &error,
    )
}

/// A new TLS key (ECDSA P-256), for a node, client or admin certificate.
pub(crate) fn tls_key() -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(certificate_error("TLS key"))
}

fn make_client(identity: &TlsIdentity, issuer: &Issuer<'_, KeyPair>) -> Result<Issued, PkiError> {
    let key = tls_key()?;
    Ok(Issued {
        certificate_pem: client_certificate(identity, &key, issuer)?,
        key_pem: key.serialize_pem(),
    })
}

/// Every leaf's parameters are the CA's choice: a request supplies only
/// the public key, never names, usages or validity.
fn sign_leaf(
    common_name: &str,
    names: Vec<SanType>,
    usages: Vec<ExtendedKeyUsagePurpose>,
    public_key: &impl rcgen::PublicKeyData,
    issuer: &Issuer<'_, KeyPair>,
    error: &impl Fn(rcgen::Error) -> PkiError,
) -> Result<String, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.subject_alt_names = names;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages;
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial().map_err(|err| PkiError::Certificate {
        what: "serial number".into(),
        reason: err.to_string(),
    })?);
    set_validity(&mut params, LEAF_VALIDITY);
    let certificate = params.signed_by(public_key, issuer).map_err(error)?;
    Ok(certificate.pem())
}

/// A random positive 127-bit serial: unique per certificate (RFC 5280
/// 4.1.2.2), even for a renewal of the same key, so that a serial names one
/// certificate (rcgen's default derives it from the key).
fn random_serial() -> Result<rcgen::SerialNumber, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}

fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + validity;
}

#[cfg(test)]
mod tests {
    use govchain_crypto::SigningKey;
    use std::fs;
    use std::os::unix::fs::PermissionsExt as _;

    use x509_parser::certificate::X509Certificate;
    use x509_parser::extensions::GeneralName;
    use x509_parser::pem::Pem;

    use super::*;
    use crate::identity::{IdentityError, Role, identity_from_certificate};

    const DEPARTMENTS: [&str; 4] = ["health", "tax", "police", "civil"];

    fn options(out: &Path) -> InitOptions {
        InitOptions {
            observers: Vec::new(),
            out: out.to_owned(),
            chain_id: "govchain-dev".to_owned(),
            departments: DEPARTMENTS.iter().map(|name| (*name).to_owned()).collect(),
            hosts: vec!["node.example.org".to_owned(), "10.1.2.3".to_owned()],
            force: false,
            attests: vec![(
                "civil".to_owned(),
                vec!["name".to_owned(), "photo".to_owned()],
            )],
        }
    }

    fn pem(path: &Path) -> Pem {
        let text = fs::read(path).expect("read certificate");
        let (_, pem) = x509_parser::pem::parse_x509_pem(&text).expect("PEM");
        pem
    }

    fn certificate(pem: &Pem) -> X509Certificate<'_> {
        pem.parse_x509().expect("X.509")
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    fn verifies(leaf: &Path, ca: &Path) -> bool {
        let (leaf, ca) = (pem(leaf), pem(ca));
        certificate(&leaf)
            .verify_signature(Some(certificate(&ca).public_key()))
            .is_ok()
    }

    fn san_names(certificate: &X509Certificate<'_>) -> (Vec<String>, Vec<Vec<u8>>) {
        let extension = certificate
            .subject_alternative_name()
            .expect("SAN")
            .expect("has SAN");
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        for name in &extension.value.general_names {
            match name {
                GeneralName::DNSName(name) => dns.push((*name).to_owned()),
                GeneralName::IPAddress(ip) => ips.push(ip.to_vec()),
                _ => {}
            }
        }
        (dns, ips)
    }

    #[test]
    fn init_writes_every_file_with_the_right_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("certs/dev");
        let consortium = init_consortium(&options(&out)).expect("init");
        assert_eq!(mode(&out.join(CA_KEY_FILE)), 0o600);
        assert_eq!(mode(&out.join(CA_CERTIFICATE_FILE)) & !0o644, 0);
        assert_eq!(mode(&out.join(GENESIS_FILE)) & !0o644, 0);
        assert_eq!(consortium.departments.len(), DEPARTMENTS.len());
        for (files, name) in consortium.departments.iter().zip(DEPARTMENTS) {
            assert_eq!(files, &DepartmentFiles::new(&out, name));
            for key in [
                &files.node_key,
                &files.client_key,
                &files.admin_key,
                &files.consensus_key,
            ] {
                assert_eq!(mode(key), 0o600, "{}", key.display());
                assert!(read_pem(key).expect("key").contains("PRIVATE KEY"));
            }
            for certificate in [
                &files.node_certificate,
                &files.client_certificate,
                &files.admin_certificate,
                &files.ca_certificate,
            ] {
                // The umask may narrow 0644 further, never widen it.
                assert_eq!(mode(certificate) & !0o644, 0, "{}", certificate.display());
                assert!(
                    read_pem(certificate)
                        .expect("certificate")
                        .contains("CERTIFICATE")
                );
            }
            assert_eq!(
                fs::read(&files.ca_certificate).expect("copy"),
                fs::read(out.join(CA_CERTIFICATE_FILE)).expect("root")
            );
        }
        let entries: Vec<_> = fs::read_dir(&out)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        // ca.crt, ca.key, genesis.json, issued.json and a folder each.
        assert_eq!(
            entries.len(),
            4 + DEPARTMENTS.len(),
            "no stray temporary files: {entries:?}"
        );
    }

    #[test]
    fn genesis_lists_departments_in_order_and_matches_the_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let consortium = init_consortium(&options(dir.path())).expect("init");
        let genesis = Genesis::load(&consortium.genesis_path).expect("load");
        assert_eq!(genesis, consortium.genesis);
        assert_eq!(genesis.chain_id, "govchain-dev");
        let names: Vec<&str> = genesis.validators.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, DEPARTMENTS);
        for (validator, files) in genesis.validators.iter().zip(&consortium.departments) {
            let key = SigningKey::from_pkcs8_pem(&read_pem(&files.consensus_key).expect("read"))
                .expect("Ed25519 key");
            assert_eq!(validator.consensus_public_key, key.public_key().to_hex());
            let node = pem(&files.node_certificate);
            let identity = identity_from_certificate(&node.contents).expect("identity");
            assert_eq!(validator.tls_identity, identity.to_uri());
            assert_eq!(
                genesis.validator_index_by_identity(&identity),
                genesis.validator_index_by_name(&validator.name)
            );
        }
    }

    #[test]
    fn genesis_hash_is_stable_across_load_and_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let consortium = init_consortium(&options(dir.path())).expect("init");
        let loaded = Genesis::load(&consortium.genesis_path).expect("load");
        let copy = dir.path().join("copy.json");
        loaded.write(&copy).expect("write");
        let reloaded = Genesis::load(&copy).expect("reload");
        assert_eq!(reloaded.hash(), consortium.genesis.hash());
        let mut changed = reloaded.clone();
        changed.validators[1].consensus_public_key =
            SigningKey::from_seed([42; 32]).public_key().to_hex();
        assert!(changed.validate().is_ok());
        assert_ne!(changed.hash(), reloaded.hash());
    }

    #[test]
    fn certificates_carry_identity_names_and_usages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let consortium = init_consortium(&options(dir.path())).expect("init");
        for files in &consortium.departments {
            let node_pem = pem(&files.node_certificate);
            let node = certificate(&node_pem);
            let identity = identity_from_certificate(&node_pem.contents).expect("node identity");
            assert_eq!(
                identity,
                TlsIdentity {
                    department: files.department.clone(),
                    role: Role::Node
                }
            );
            let (dns, ips) = san_names(&node);
            assert_eq!(
                dns,
                [
                    node_dns_name(&files.department).as_str(),
                    "localhost",
                    "node.example.org"
                ]
            );
            assert_eq!(
                ips,
                [
                    vec![127, 0, 0, 1],
                    [0u8; 15].iter().copied().chain([1]).collect(),
                    vec![10, 1, 2, 3]
                ]
            );
            let usage = node
                .extended_key_usage()
                .expect("EKU")
                .expect("has EKU")
                .value;
            assert!(usage.server_auth && usage.client_auth);
            assert!(!node.is_ca());

            let client_pem = pem(&files.client_certificate);
            let client = certificate(&client_pem);
            let identity =
                identity_from_certificate(&client_pem.contents).expect("client identity");
            assert_eq!(
                identity,
                TlsIdentity {
                    department: files.department.clone(),
                    role: Role::Client
                }
            );
            let usage = client
                .extended_key_usage()
                .expect("EKU")
                .expect("has EKU")
                .value;
            assert!(usage.client_auth && !usage.server_auth);
            assert_eq!(san_names(&client), (vec![], vec![]));
        }
    }

    #[test]
    fn ca_is_a_constrained_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let consortium = init_consortium(&options(dir.path())).expect("init");
        let ca_pem = pem(&consortium.ca_certificate);
        let ca = certificate(&ca_pem);
        let constraints = ca.basic_constraints().expect("BC").expect("has BC").value;
        assert!(constraints.ca);
        assert_eq!(constraints.path_len_constraint, Some(0));
        let usage = ca.key_usage().expect("KU").expect("has KU").value;
        assert!(usage.key_cert_sign() && usage.crl_sign());
        assert!(
            ca.subject()
                .to_string()
                .contains("govchain consortium root CA (govchain-dev)")
        );
        assert!(ca.verify_signature(None).is_ok(), "self-signed");
        let days =
            (ca.validity().not_after.timestamp() - ca.validity().not_before.timestamp()) / 86_400;
        assert!((3649..=3651).contains(&days), "{days}");
    }

    #[test]
    fn leaves_verify_against_their_ca_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = init_consortium(&options(&dir.path().join("first"))).expect("init first");
        let foreign = init_consortium(&options(&dir.path().join("foreign"))).expect("init foreign");
        assert_ne!(
            fs::read(&first.ca_certificate).expect("first"),
            fs::read(&foreign.ca_certificate).expect("foreign")
        );
        for files in &first.departments {
            assert!(verifies(&files.node_certificate, &first.ca_certificate));
            assert!(verifies(&files.client_certificate, &first.ca_certificate));
        }
        for files in &foreign.departments {
            assert!(verifies(&files.node_certificate, &foreign.ca_certificate));
            assert!(!verifies(&files.node_certificate, &first.ca_certificate));
            assert!(!verifies(&files.client_certificate, &first.ca_certificate));
        }
    }

    #[test]
    fn init_refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = options(dir.path());
        let first = init_consortium(&options).expect("init");
        let ca_before = fs::read(&first.ca_certificate).expect("read");
        let err = init_consortium(&options).expect_err("second init");
        assert!(matches!(err, PkiError::CaKeyExists { .. }));
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(
            fs::read(&first.ca_certificate).expect("read"),
            ca_before,
            "untouched"
        );
        options.force = true;
        let second = init_consortium(&options).expect("forced init");
        assert_ne!(fs::read(&second.ca_certificate).expect("read"), ca_before);
        assert_eq!(mode(&second.ca_key), 0o600);
    }

    #[test]
    fn bad_input_is_rejected_before_writing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let mut bad = options(&out);
        bad.departments[1] = "Tax Office".to_owned();
        let err = init_consortium(&bad).expect_err("bad name");
        assert!(matches!(
            err,
            PkiError::Identity(IdentityError::DepartmentName { .. })
        ));
        assert!(err.to_string().contains("\"Tax Office\""), "{err}");

        let mut duplicate = options(&out);
        duplicate.departments[2] = "health".to_owned();
        assert!(matches!(
            init_consortium(&duplicate),
            Err(PkiError::DuplicateDepartment { .. })
        ));

        let mut none = options(&out);
        none.departments.clear();
        assert!(matches!(
            init_consortium(&none),
            Err(PkiError::DepartmentCount { got: 0, .. })
        ));

        let mut host = options(&out);
        host.hosts.push("bad host".to_owned());
        assert!(matches!(init_consortium(&host), Err(PkiError::Host { .. })));

        let mut chain = options(&out);
        chain.chain_id = String::new();
        assert!(matches!(init_consortium(&chain), Err(PkiError::Genesis(_))));
        assert!(!out.exists(), "nothing written");
    }

    #[test]
    fn issue_client_signs_with_the_existing_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("ca");
        let consortium = init_consortium(&options(&out)).expect("init");
        let app = dir.path().join("tax-app");
        issue_client(&out, "tax", &app).expect("issue");
        let client_certificate = app.join(CLIENT_CERTIFICATE_FILE);
        assert!(verifies(&client_certificate, &consortium.ca_certificate));
        let client_pem = pem(&client_certificate);
        let identity = identity_from_certificate(&client_pem.contents).expect("identity");
        assert_eq!(
            identity,
            TlsIdentity {
                department: "tax".to_owned(),
                role: Role::Client
            }
        );
        let issuer = certificate(&client_pem).issuer().to_string();
        assert_eq!(
            issuer,
            certificate(&pem(&consortium.ca_certificate))
                .subject()
                .to_string()
        );
        assert_eq!(mode(&app.join(CLIENT_KEY_FILE)), 0o600);
        assert!(KeyPair::from_pem(&read_pem(&app.join(CLIENT_KEY_FILE)).expect("key")).is_ok());
        assert_eq!(
            fs::read(app.join(CA_CERTIFICATE_FILE)).expect("copy"),
            fs::read(&consortium.ca_certificate).expect("root")
        );
        let again = issue_client(&out, "tax", &app).expect_err("existing key");
        assert!(matches!(again, PkiError::ClientKeyExists { .. }));
    }

    #[test]
    fn admin_certificates_carry_the_admin_role_of_their_department() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("ca");
        let consortium = init_consortium(&options(&out)).expect("init");
        for files in &consortium.departments {
            let admin = pem(&files.admin_certificate);
            assert_eq!(
                identity_from_certificate(&admin.contents).expect("identity"),
                TlsIdentity::admin(&files.department).expect("valid")
            );
        }
        let ops = dir.path().join("tax-ops");
        issue_admin(&out, "tax", &ops).expect("issue");
        let admin_certificate = ops.join(ADMIN_CERTIFICATE_FILE);
        assert!(verifies(&admin_certificate, &consortium.ca_certificate));
        assert_eq!(
            identity_from_certificate(&pem(&admin_certificate).contents).expect("identity"),
            TlsIdentity::admin("tax").expect("valid")
        );
        assert_eq!(mode(&ops.join(ADMIN_KEY_FILE)), 0o600);
        assert!(!ops.join(CLIENT_KEY_FILE).exists());
        let again = issue_admin(&out, "tax", &ops).expect_err("existing key");
        assert!(matches!(again, PkiError::ClientKeyExists { .. }));
    }

    #[test]
    fn issue_client_errors_are_clear() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = issue_client(&dir.path().join("nowhere"), "tax", &dir.path().join("app"))
            .expect_err("no CA");
        assert!(
            missing.to_string().contains("govchain certs init"),
            "{missing}"
        );
        assert!(matches!(
            issue_client(dir.path(), "Tax", &dir.path().join("app")),
            Err(PkiError::Identity(_))
        ));

        let first = dir.path().join("first");
        let foreign = dir.path().join("foreign");
        init_consortium(&options(&first)).expect("init first");
        init_consortium(&options(&foreign)).expect("init foreign");
        fs::copy(foreign.join(CA_KEY_FILE), first.join(CA_KEY_FILE)).expect("swap key");
        let mismatch = issue_client(&first, "tax", &dir.path().join("app")).expect_err("mismatch");
        assert!(
            matches!(mismatch, PkiError::CaKeyMismatch { .. }),
            "{mismatch}"
        );
    }

    #[test]
    fn identity_needs_exactly_one_govchain_uri() {
        let key = KeyPair::generate().expect("key");
        let certificate_with = |uris: &[&str]| {
            let mut params =
                CertificateParams::new(vec!["example.org".to_owned()]).expect("params");
            for uri in uris {
                params
                    .subject_alt_names
                    .push(SanType::URI((*uri).try_into().expect("ia5")));
            }
            params
                .self_signed(&key)
                .expect("self-signed")
                .der()
                .to_vec()
        };
        assert_eq!(
            identity_from_certificate(&certificate_with(&[])),
            Err(IdentityError::NoIdentity)
        );
        let other = certificate_with(&["https://example.org/", "spiffe://govchain/dept/tax/node"]);
        assert_eq!(
            identity_from_certificate(&other),
            Ok(TlsIdentity::node("tax").expect("valid"))
        );
        let two = certificate_with(&[
            "spiffe://govchain/dept/tax/node",
            "spiffe://govchain/dept/health/node",
        ]);
        assert!(matches!(
            identity_from_certificate(&two),
            Err(IdentityError::SeveralIdentities { count: 2, .. })
        ));
        let admin = certificate_with(&["spiffe://govchain/dept/tax/admin"]);
        assert_eq!(
            identity_from_certificate(&admin),
            Ok(TlsIdentity::admin("tax").expect("valid"))
        );
        let bad = certificate_with(&["spiffe://govchain/dept/tax/root"]);
        assert!(matches!(
            identity_from_certificate(&bad),
            Err(IdentityError::Uri { .. })
        ));
    }

    #[test]
    fn a_member_renews_its_node_certificate_and_a_stranger_cannot() {
        let dir = tempfile::tempdir().expect("dir");
        init_consortium(&options(dir.path())).expect("init");
        let health = dir.path().join("health");
        let before = fs::read_to_string(health.join(NODE_CERTIFICATE_FILE)).expect("node.crt");
        let key = fs::read_to_string(health.join(NODE_KEY_FILE)).expect("node.key");
        let out = health.join(NODE_CERTIFICATE_FILE);
        let renewed = crate::renew_node_certificate(
            dir.path(),
            "health",
            crate::RenewFrom::Key(&key),
            &[],
            &out,
        )
        .expect("renew");
        assert_ne!(renewed, before, "the same certificate came back");
        // The same key, yet another certificate: its own serial.
        let (_, before_pem) = x509_parser::pem::parse_x509_pem(before.as_bytes()).expect("PEM");
        let before_serial = certificate(&before_pem).serial.clone();
        assert_eq!(fs::read_to_string(&out).expect("written"), renewed);
        let renewed_pem = pem(&out);
        let identity = identity_from_certificate(&renewed_pem.contents).expect("identity");
        assert_eq!(identity.department, "health");
        assert_eq!(identity.role, Role::Node);
        assert_ne!(certificate(&renewed_pem).serial, before_serial);
        let stranger = crate::renew_node_certificate(
            dir.path(),
            "treasury",
            crate::RenewFrom::Key(&key),
            &[],
            &dir.path().join("treasury.crt"),
        )
        .expect_err("never issued");
        assert!(stranger.to_string().contains("never issued"), "{stranger}");
        let garbage = crate::renew_node_certificate(
            dir.path(),
            "health",
            crate::RenewFrom::Csr(
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            ),
            &[],
            &dir.path().join("x.crt"),
        )
        .expect_err("malformed CSR");
        assert!(garbage.to_string().contains("CSR"), "{garbage}");
    }
}
