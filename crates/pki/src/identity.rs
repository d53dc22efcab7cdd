//! Department names and the SPIFFE-style URI identities in TLS certificates.

use std::fmt;

use x509_parser::extensions::GeneralName;

/// Every govchain identity URI starts with this; a URI SAN with this prefix
/// that does not parse is an error, any other URI SAN is ignored.
const URI_PREFIX: &str = "spiffe://govchain/dept/";

/// The longest department name: one leading letter and up to 30 more.
pub const DEPARTMENT_NAME_BYTES_MAX: usize = 31;

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A validator node: serves gRPC to peers and clients and connects to peers.
    Node,
    /// A department's own applications and the CLI.
    Client,
    /// The platform team that runs the department's node: may call the
    /// node's `AdminService` (online backup). Kept apart from `Client` so
    /// that an application's certificate, which many systems hold, can never
    /// copy the node's whole ledger and blob store.
    Admin,
}

/// The identity a govchain certificate carries as its one govchain URI SAN.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsIdentity {
    pub department: String,
    pub role: Role,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityError {
    #[error(
        "department name {name:?} is invalid: {reason} (expected a lowercase letter, then up to 30 of a-z, 0-9, '-')"
    )]
    DepartmentName { name: String, reason: &'static str },
    #[error(
        "{uri:?} is not a govchain identity: {reason} (expected spiffe://govchain/dept/<dept>/node, .../client or .../admin)"
    )]
    Uri { uri: String, reason: String },
    #[error("certificate does not parse as X.509: {reason}")]
    Certificate { reason: String },
    #[error("certificate has no govchain identity (no URI SAN starting with {URI_PREFIX})")]
    NoIdentity,
    #[error("certificate has {count} govchain identities ({uris}), expected exactly 1")]
    SeveralIdentities { count: usize, uris: String },
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Client => "client",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TlsIdentity {
    /// The identity of `department`'s node; checks the department name.
    pub fn node(department: &str) -> Result<Self, IdentityError> {
        validate_department(department)?;
        Ok(Self {
            department: department.to_owned(),
            role: Role::Node,
        })
    }

    /// The identity of `department`'s clients; checks the department name.
    pub fn client(department: &str) -> Result<Self, IdentityError> {
        validate_department(department)?;
        Ok(Self {
            department: department.to_owned(),
            role: Role::Client,
        })
    }

    /// The identity of `department`'s node administrators; checks the
    /// department name.
    pub fn admin(department: &str) -> Result<Self, IdentityError> {
        validate_department(department)?;
        Ok(Self {
            department: department.to_owned(),
            role: Role::Admin,
        })
    }

    pub fn to_uri(&self) -> String {
        format!("{URI_PREFIX}{}/{}", self.department, self.role)
    }

    /// Parses exactly `spiffe://govchain/dept/<dept>/<node|client|admin>`: no
    /// trailing slash, query, fragment or case variation, so that one identity
    /// has one spelling and string comparison of URIs is identity comparison.
    pub fn parse_uri(uri: &str) -> Result<Self, IdentityError> {
        let malformed = |reason: &str| IdentityError::Uri {
            uri: uri.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = uri
            .strip_prefix(URI_PREFIX)
            .ok_or_else(|| malformed("wrong scheme, trust domain or path"))?;
        let (department, role) = rest
            .split_once('/')
            .ok_or_else(|| malformed("missing role after the department"))?;
        let role = match role {
            "node" => Role::Node,
            "client" => Role::Client,
            "admin" => Role::Admin,
            _ => {
                return Err(malformed("role must be \"node\", \"client\" or \"admin\""));
            }
        };
        validate_department(department).map_err(|err| malformed(&err.to_string()))?;
        Ok(Self {
            department: department.to_owned(),
            role,
        })
    }
}

impl fmt::Display for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_uri())
    }
}

/// Checks that `name` matches `[a-z][a-z0-9-]{0,30}`. The name goes into URIs,
/// DNS names and directory names, so it must be safe in all three.
pub fn validate_department(name: &str) -> Result<(), IdentityError> {
    let invalid = |reason| IdentityError::DepartmentName {
        name: name.to_owned(),
        reason,
    };
    let mut bytes = name.bytes();
    match bytes.next() {
        None => return Err(invalid("it is empty")),
        Some(b'a'..=b'z') => {}
        Some(_) => return Err(invalid("it must start with a lowercase letter")),
    }
    if name.len() > DEPARTMENT_NAME_BYTES_MAX {
        return Err(invalid("it is longer than 31 characters"));
    }
    if !bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-')) {
        return Err(invalid("it may only contain a-z, 0-9 and '-'"));
    }
    Ok(())
}

/// The DNS name in a node's certificate, which peers use as the TLS server
/// name: a peer dialling `health` then rejects a certificate issued to `tax`,
/// even though both chain to the same CA.
pub fn node_dns_name(department: &str) -> String {
    format!("{department}.node.govchain")
}

/// The one govchain identity in a DER certificate, e.g. a TLS peer's.
///
/// This does not verify the certificate; the TLS layer has already checked
/// that it chains to the consortium CA.
pub fn identity_from_certificate(der: &[u8]) -> Result<TlsIdentity, IdentityError> {
    let certificate_error = |reason: String| IdentityError::Certificate { reason };
    let (rest, certificate) = x509_parser::parse_x509_certificate(der)
        .map_err(|err| certificate_error(err.to_string()))?;
    if !rest.is_empty() {
        return Err(certificate_error(format!(
            "{} trailing bytes after the certificate",
            rest.len()
        )));
    }
    let names = certificate
        .subject_alternative_name()
        .map_err(|err| certificate_error(err.to_string()))?
        .map(|extension| extension.value.general_names.as_slice())
        .unwrap_or_default();
    let uris: Vec<&str> = names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with("spiffe://govchain") => Some(*uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(IdentityError::NoIdentity),
        [uri] => TlsIdentity::parse_uri(uri),
        _ => Err(IdentityError::SeveralIdentities {
            count: uris.len(),
            uris: uris.join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_round_trip() {
        for identity in [
            TlsIdentity::node("health"),
            TlsIdentity::client("civil-2"),
            TlsIdentity::admin("tax"),
        ] {
            let identity = identity.expect("valid name");
            let uri = identity.to_uri();
            assert_eq!(TlsIdentity::parse_uri(&uri), Ok(identity.clone()));
            assert_eq!(identity.to_string(), uri);
        }
        assert_eq!(
            TlsIdentity::node("tax").expect("valid").to_uri(),
            "spiffe://govchain/dept/tax/node"
        );
    }

    #[test]
    fn malformed_uris_are_rejected() {
        for uri in [
            "",
            "spiffe://govchain/dept/tax",
            "spiffe://govchain/dept/tax/",
            "spiffe://govchain/dept/tax/node/",
            "spiffe://govchain/dept/tax/root",
            "spiffe://govchain/dept/tax/Admin",
            "spiffe://govchain/dept/Tax/node",
            "spiffe://govchain/dept//node",
            "spiffe://other/dept/tax/node",
            "https://govchain/dept/tax/node",
            "SPIFFE://govchain/dept/tax/node",
            "spiffe://govchain/dept/tax/node?x=1",
        ] {
            assert!(
                matches!(TlsIdentity::parse_uri(uri), Err(IdentityError::Uri { .. })),
                "{uri:?} should be rejected"
            );
        }
    }

    #[test]
    fn department_names() {
        for good in [
            "a",
            "health",
            "civil-registry",
            "d2",
            &format!("a{}", "b".repeat(30)),
        ] {
            assert_eq!(validate_department(good), Ok(()), "{good:?}");
        }
        for bad in [
            "",
            "Health",
            "2tax",
            "-tax",
            "tax_office",
            "tax office",
            "tàx",
            &"a".repeat(32),
        ] {
            assert!(validate_department(bad).is_err(), "{bad:?}");
        }
        let message = validate_department("Health")
            .expect_err("uppercase")
            .to_string();
        assert!(message.contains("\"Health\""), "{message}");
        assert!(message.contains("lowercase letter"), "{message}");
    }

    #[test]
    fn node_dns_name_is_per_department() {
        assert_eq!(node_dns_name("police"), "police.node.govchain");
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(matches!(
            identity_from_certificate(b"not a certificate"),
            Err(IdentityError::Certificate { .. })
        ));
    }
}

/// Why a client certificate would be refused by a node that trusts `ca`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IssuerMismatch {
    #[error("is not a PEM certificate: {0}")]
    NotACertificate(String),
    #[error(
        "was not issued by the CA the node uses ({ca:?}) but by {issuer:?} (a CA of the same name is another consortium's, or one made again)"
    )]
    OtherIssuer { issuer: String, ca: String },
    #[error("expired at {not_after}")]
    Expired { not_after: String },
    #[error("is not valid before {not_before}")]
    NotYetValid { not_before: String },
}

/// [`identity_from_certificate`] of the first certificate in a PEM file:
/// a client learns which department its own certificate acts for.
/// What a revocation names a certificate by: its serial number (lowercase
/// hex of the integer's bytes, without leading zero bytes, as `openssl x509
/// -serial` prints it but in lowercase) and the SHA-256 of its
/// SubjectPublicKeyInfo (DER).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateIds {
    pub serial: String,
    pub key_fingerprint: [u8; 32],
}

/// The [`CertificateIds`] of a DER certificate.
pub fn certificate_ids(der: &[u8]) -> Result<CertificateIds, IdentityError> {
    let (_, certificate) =
        x509_parser::parse_x509_certificate(der).map_err(|err| IdentityError::Certificate {
            reason: err.to_string(),
        })?;
    let serial = normalize_serial(&hex::encode(certificate.tbs_certificate.raw_serial()));
    let spki = certificate.tbs_certificate.subject_pki.raw;
    Ok(CertificateIds {
        serial,
        key_fingerprint: *govchain_crypto::Digest::sha256(spki).as_bytes(),
    })
}

/// The [`CertificateIds`] of a PEM certificate.
pub fn certificate_ids_pem(pem: &str) -> Result<CertificateIds, IdentityError> {
    certificate_ids(&pem_contents(pem)?)
}

/// The DER bytes of a PEM certificate.
fn pem_contents(pem: &str) -> Result<Vec<u8>, IdentityError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|err| {
        IdentityError::Certificate {
            reason: format!("not a PEM certificate: {err}"),
        }
    })?;
    Ok(pem.contents)
}

/// A serial number as revocations name it: lowercase, no colons, no
/// leading zero bytes (one "00" stays for zero). `AB:CD`, `00abcd` and
/// `abcd` are the same serial.
pub fn normalize_serial(text: &str) -> String {
    let mut hex: String = text
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if !hex.len().is_multiple_of(2) {
        hex.insert(0, '0');
    }
    while hex.len() > 2 && hex.starts_with("00") {
        hex.drain(..2);
    }
    hex
}

pub fn identity_from_certificate_pem(pem: &str) -> Result<TlsIdentity, IdentityError> {
    identity_from_certificate(&pem_contents(pem)?)
}

/// Checks, before any connection, that `certificate_pem` is signed by
/// `ca_pem` and valid at `now_unix_s`: what a node checks first of a
/// client. TLS 1.3 lets the client finish its handshake before the server
/// judges its certificate, so a refused client only sees a closed
/// connection; this names the reason instead.
pub fn check_issued_by(
    certificate_pem: &str,
    ca_pem: &str,
    now_unix_s: i64,
) -> Result<(), IssuerMismatch> {
    let parse = |pem: &str| -> Result<Vec<u8>, IssuerMismatch> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .map_err(|err| IssuerMismatch::NotACertificate(err.to_string()))?;
        Ok(pem.contents)
    };
    let leaf_der = parse(certificate_pem)?;
    let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der)
        .map_err(|err| IssuerMismatch::NotACertificate(err.to_string()))?;
    // A CA file may hold several certificates (a rollover): the node
    // trusts each, so any may have issued the leaf.
    let mut cas = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(ca_pem.as_bytes()) {
        let pem = pem.map_err(|err| IssuerMismatch::NotACertificate(err.to_string()))?;
        cas.push(pem.contents);
    }
    let mut subjects = Vec::new();
    for der in &cas {
        let (_, ca) = x509_parser::parse_x509_certificate(der)
            .map_err(|err| IssuerMismatch::NotACertificate(err.to_string()))?;
        if leaf.verify_signature(Some(ca.public_key())).is_ok() {
            subjects.clear();
            break;
        }
        subjects.push(ca.subject().to_string());
    }
    if cas.is_empty() {
        return Err(IssuerMismatch::NotACertificate(
            "the CA file holds no certificate".to_owned(),
        ));
    }
    if !subjects.is_empty() {
        return Err(IssuerMismatch::OtherIssuer {
            issuer: leaf.issuer().to_string(),
            ca: subjects.join(", "),
        });
    }
    let validity = leaf.validity();
    if now_unix_s > validity.not_after.timestamp() {
        return Err(IssuerMismatch::Expired {
            not_after: validity.not_after.to_string(),
        });
    }
    if now_unix_s < validity.not_before.timestamp() {
        return Err(IssuerMismatch::NotYetValid {
            not_before: validity.not_before.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod issuer_tests {
    use super::*;

    #[test]
    fn a_certificate_of_another_ca_is_named_before_connecting() {
        let dir = tempfile::tempdir().expect("dir");
        let init = |name: &str| {
            crate::init_consortium(&crate::InitOptions {
                observers: Vec::new(),
                out: dir.path().join(name),
                chain_id: "c".into(),
                departments: vec!["health".into()],
                hosts: Vec::new(),
                force: false,
                attests: Vec::new(),
            })
            .expect("init");
        };
        init("ours");
        init("theirs");
        // A client reads its own department from its certificate.
        let client = std::fs::read_to_string(dir.path().join("ours/health/client.crt"))
            .expect("client certificate");
        assert_eq!(
            identity_from_certificate_pem(&client),
            Ok(TlsIdentity {
                department: "health".into(),
                role: Role::Client
            })
        );
        assert!(matches!(
            identity_from_certificate_pem("not pem"),
            Err(IdentityError::Certificate { .. })
        ));
        let read = |path: &str| std::fs::read_to_string(dir.path().join(path)).expect("read");
        let ca = read("ours/ca.crt");
        let ours = read("ours/health/client.crt");
        let theirs = read("theirs/health/client.crt");
        let now = 1_800_000_000;
        assert_eq!(check_issued_by(&ours, &ca, now), Ok(()));
        // A bundle of both CAs (a rollover) trusts either's certificates.
        let bundle = format!("{}{ca}", read("theirs/ca.crt"));
        assert_eq!(check_issued_by(&ours, &bundle, now), Ok(()));
        assert_eq!(check_issued_by(&theirs, &bundle, now), Ok(()));
        assert!(matches!(
            check_issued_by(&theirs, &ca, now),
            Err(IssuerMismatch::OtherIssuer { .. })
        ));
        assert!(matches!(
            check_issued_by(&ours, &ca, 4_200_000_000),
            Err(IssuerMismatch::Expired { .. })
        ));
        assert!(matches!(
            check_issued_by(&ours, &ca, 0),
            Err(IssuerMismatch::NotYetValid { .. })
        ));
        assert!(matches!(
            check_issued_by("junk", &ca, now),
            Err(IssuerMismatch::NotACertificate(_))
        ));
    }
}

/// A certificate's subject and the end of its validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validity {
    pub subject: String,
    /// Its govchain identity URI, when it has one.
    pub identity: Option<String>,
    pub not_before_unix_s: i64,
    pub not_after_unix_s: i64,
}

/// Nodes warn this long before a certificate they use expires, and `govchain
/// certs check` flags it.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// The validity of a PEM certificate.
pub fn certificate_validity(pem: &str) -> Result<Validity, IssuerMismatch> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|err| IssuerMismatch::NotACertificate(err.to_string()))?;
    let certificate = pem
        .parse_x509()
        .map_err(|err| IssuerMismatch::NotACertificate(err.to_string()))?;
    let validity = certificate.validity();
    Ok(Validity {
        subject: certificate.subject().to_string(),
        identity: identity_from_certificate(&pem.contents)
            .ok()
            .map(|identity| identity.to_uri()),
        not_before_unix_s: validity.not_before.timestamp(),
        not_after_unix_s: validity.not_after.timestamp(),
    })
}

#[cfg(test)]
mod revocation_id_tests {
    use super::*;

    #[test]
    fn serials_normalize_as_openssl_prints_them() {
        assert_eq!(normalize_serial("3A:0F:91"), "3a0f91");
        assert_eq!(normalize_serial("003a0f91"), "3a0f91");
        assert_eq!(normalize_serial("A0F91"), "0a0f91");
        assert_eq!(normalize_serial("00"), "00");
        assert_eq!(normalize_serial("0000"), "00");
    }

    #[test]
    fn two_certificates_of_one_department_have_their_own_ids() {
        let dir = tempfile::tempdir().expect("dir");
        crate::init_consortium(&crate::InitOptions {
            observers: Vec::new(),
            out: dir.path().join("c"),
            chain_id: "c".into(),
            departments: vec!["health".into()],
            hosts: Vec::new(),
            force: false,
            attests: Vec::new(),
        })
        .expect("init");
        crate::issue_client(&dir.path().join("c"), "health", &dir.path().join("app"))
            .expect("issue");
        let read = |path: &str| {
            let pem = std::fs::read_to_string(dir.path().join(path)).expect("certificate");
            certificate_ids_pem(&pem).expect("ids")
        };
        let (first, second) = (read("c/health/client.crt"), read("app/client.crt"));
        assert_ne!(first.serial, second.serial);
        assert_ne!(first.key_fingerprint, second.key_fingerprint);
        // Canonical form: lowercase, even length, no leading zero byte.
        assert_eq!(first.serial, normalize_serial(&first.serial));
        assert!(!first.serial.starts_with("00"));
        // The fingerprint is SHA-256 of the SubjectPublicKeyInfo DER.
        let pem = std::fs::read_to_string(dir.path().join("app/client.crt")).expect("pem");
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
        let (_, parsed) = x509_parser::parse_x509_certificate(&pem.contents).expect("der");
        let spki = parsed.tbs_certificate.subject_pki.raw;
        assert_eq!(
            second.key_fingerprint,
            *govchain_crypto::Digest::sha256(spki).as_bytes()
        );
        assert!(certificate_ids(b"not a certificate").is_err());
    }
}
