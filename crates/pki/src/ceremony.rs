//! The key ceremony without a key dealer: each department makes its own
//! keys and a request (`govchain certs csr`), whoever holds the consortium
//! CA signs the request (`govchain certs sign`), and anyone assembles
//! genesis from the departments' public parts (`govchain genesis
//! assemble`). `govchain certs init` runs the same three steps in one
//! process for a development consortium.
//!
//! A request carries three PKCS#10 CSRs (node, client and admin TLS keys,
//! each signed by its own key) and the department's two Ed25519 public
//! keys (consensus and transaction signing), each with a signature by its
//! key over the whole request, so the CA and genesis list only keys whose
//! holder asked for them. The CA takes nothing else from a CSR: names,
//! usages and validity are its own choice ([`crate::consortium`]).
//!
//! **Invariant:** no function here reads or writes another department's
//! private key; the CA's side sees public keys only.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use govchain_crypto::{DomainHasher, PublicKey, Signature, SigningKey};
use rcgen::{CertificateParams, CertificateSigningRequestParams, Issuer, KeyPair, SanType};
use serde::{Deserialize, Serialize};

use crate::consortium::{
    ADMIN_CERTIFICATE_FILE, ADMIN_KEY_FILE, CA_CERTIFICATE_FILE, CLIENT_CERTIFICATE_FILE,
    CLIENT_KEY_FILE, CONSENSUS_KEY_FILE, NODE_CERTIFICATE_FILE, NODE_KEY_FILE, SIGNING_KEY_FILE,
    client_certificate, node_certificate, parse_hosts, tls_key,
};
use crate::error::PkiError;
use crate::files::{PUBLIC_FILE_MODE, SECRET_FILE_MODE, create_dir, read_pem, write_file};
use crate::genesis::{
    ConsensusParams, DepartmentEntry, Genesis, VALIDATORS_MAX, ValidatorEntry, validate_chain_id,
};
use crate::identity::{TlsIdentity, validate_department};

/// The request's format tag.
pub const REQUEST_FORMAT: &str = "govchain-certificate-request/v1";
/// What `certs csr` writes beside the keys, for the CA.
pub const REQUEST_FILE: &str = "request.json";
/// What `certs sign` writes beside the certificates, for genesis.
pub const PUBLIC_FILE: &str = "public.json";
/// The CA's list of departments it issued to, so a name is issued once.
pub const ISSUED_FILE: &str = "issued.json";
/// Extra host names one request may ask for.
pub const REQUEST_HOSTS_MAX: usize = 16;

/// A department's private keys, made on its own machine.
pub struct DepartmentKeys {
    department: String,
    node: KeyPair,
    client: KeyPair,
    admin: KeyPair,
    consensus: SigningKey,
    signing: SigningKey,
}

/// What a department sends the CA: public parts only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateRequest {
    pub format: String,
    pub department: String,
    /// Extra DNS names or IP addresses for the node certificate.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// PKCS#10 CSRs (PEM), each signed by its own TLS key.
    pub node_csr: String,
    pub client_csr: String,
    pub admin_csr: String,
    /// Ed25519 public keys, hex.
    pub consensus_public_key: String,
    pub signing_public_key: String,
    /// Signatures by the consensus and the signing key over
    /// [`CertificateRequest::proof_digest`], hex: the keys' holder asked.
    pub consensus_proof: String,
    pub signing_proof: String,
}

/// A department's public parts as the CA issued them, for genesis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepartmentPublic {
    pub department: String,
    /// The node certificate's identity URI, as genesis lists it.
    pub tls_identity: String,
    pub consensus_public_key: String,
    pub signing_public_key: String,
}

/// The certificates the CA issued for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificates {
    pub node_pem: String,
    pub client_pem: String,
    pub admin_pem: String,
    pub public: DepartmentPublic,
}

impl DepartmentKeys {
    pub fn generate(department: &str) -> Result<Self, PkiError> {
        validate_department(department)?;
        let ed25519 = || {
            SigningKey::generate().map_err(|err| PkiError::ConsensusKey {
                department: department.to_owned(),
                reason: err.to_string(),
            })
        };
        Ok(Self {
            department: department.to_owned(),
            node: tls_key()?,
            client: tls_key()?,
            admin: tls_key()?,
            consensus: ed25519()?,
            signing: ed25519()?,
        })
    }

    /// The request for these keys, asking for `hosts` on the node
    /// certificate.
    pub fn request(&self, hosts: &[String]) -> Result<CertificateRequest, PkiError> {
        let csr = |key: &KeyPair| -> Result<String, PkiError> {
            let error = |err: rcgen::Error| PkiError::Certificate {
                what: "certificate request".to_owned(),
                reason: err.to_string(),
            };
            let mut params = CertificateParams::default();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params.distinguished_name.push(
                rcgen::DnType::CommonName,
                format!("govchain {}", self.department),
            );
            params
                .serialize_request(key)
                .and_then(|request| request.pem())
                .map_err(error)
        };
        let mut request = CertificateRequest {
            format: REQUEST_FORMAT.to_owned(),
            department: self.department.clone(),
            hosts: hosts.to_vec(),
            node_csr: csr(&self.node)?,
            client_csr: csr(&self.client)?,
            admin_csr: csr(&self.admin)?,
            consensus_public_key: self.consensus.public_key().to_hex(),
            signing_public_key: self.signing.public_key().to_hex(),
            consensus_proof: String::new(),
            signing_proof: String::new(),
        };
        let digest = request.proof_digest();
        request.consensus_proof = hex::encode(self.consensus.sign(digest.as_bytes()).to_bytes());
        request.signing_proof = hex::encode(self.signing.sign(digest.as_bytes()).to_bytes());
        Ok(request)
    }

    /// Writes the five private keys into `dir` (mode 0600), refusing to
    /// replace any: a key in use must not be lost.
    pub fn write(&self, dir: &Path) -> Result<(), PkiError> {
        let files = self.private_files()?;
        for (name, _) in &files {
            let path = dir.join(name);
            if path.exists() {
                return Err(PkiError::ClientKeyExists { path });
            }
        }
        create_dir(dir)?;
        for (name, pem) in files {
            write_file(&dir.join(name), pem.as_bytes(), SECRET_FILE_MODE)?;
        }
        Ok(())
    }

    /// `(file name, PEM)` of each private key.
    pub(crate) fn private_files(&self) -> Result<Vec<(&'static str, String)>, PkiError> {
        let ed25519 = |key: &SigningKey| {
            key.to_pkcs8_pem().map_err(|err| PkiError::ConsensusKey {
                department: self.department.clone(),
                reason: err.to_string(),
            })
        };
        Ok(vec![
            (NODE_KEY_FILE, self.node.serialize_pem()),
            (CLIENT_KEY_FILE, self.client.serialize_pem()),
            (ADMIN_KEY_FILE, self.admin.serialize_pem()),
            (CONSENSUS_KEY_FILE, ed25519(&self.consensus)?),
            (SIGNING_KEY_FILE, ed25519(&self.signing)?),
        ])
    }
}

impl CertificateRequest {
    /// What the two Ed25519 keys sign: every other field of the request.
    pub fn proof_digest(&self) -> govchain_crypto::Digest {
        let mut hasher = DomainHasher::new("govchain/certificate-request/v1");
        hasher
            .bytes(self.format.as_bytes())
            .bytes(self.department.as_bytes())
            .u64(self.hosts.len() as u64);
        for host in &self.hosts {
            hasher.bytes(host.as_bytes());
        }
        hasher
            .bytes(self.node_csr.as_bytes())
            .bytes(self.client_csr.as_bytes())
            .bytes(self.admin_csr.as_bytes())
            .bytes(self.consensus_public_key.as_bytes())
            .bytes(self.signing_public_key.as_bytes());
        hasher.finish()
    }

    pub fn load(path: &Path) -> Result<Self, PkiError> {
        let text = std::fs::read_to_string(path).map_err(|source| PkiError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|err| PkiError::Request {
            path: path.to_owned(),
            reason: err.to_string(),
        })
    }

    /// The request's own consistency: format, name, hosts, and that each
    /// Ed25519 key signed it. (Each CSR's self-signature is checked when
    /// it is parsed, in [`sign_request`].)
    fn check(&self) -> Result<(PublicKey, PublicKey), String> {
        if self.format != REQUEST_FORMAT {
            return Err(format!(
                "format is {:?}, expected {REQUEST_FORMAT:?}",
                self.format
            ));
        }
        validate_department(&self.department).map_err(|err| err.to_string())?;
        if self.hosts.len() > REQUEST_HOSTS_MAX {
            return Err(format!(
                "{} hosts; at most {REQUEST_HOSTS_MAX}",
                self.hosts.len()
            ));
        }
        let digest = self.proof_digest();
        let key = |name: &str, hex_key: &str, proof: &str| -> Result<PublicKey, String> {
            let key =
                PublicKey::from_hex(hex_key).map_err(|err| format!("{name} public key: {err}"))?;
            let signature = hex::decode(proof)
                .ok()
                .and_then(|bytes| Signature::from_slice(&bytes).ok())
                .ok_or_else(|| format!("{name} proof is not a signature"))?;
            key.verify(digest.as_bytes(), &signature)
                .map_err(|_| format!("the {name} key did not sign this request"))?;
            Ok(key)
        };
        let consensus = key(
            "consensus",
            &self.consensus_public_key,
            &self.consensus_proof,
        )?;
        let signing = key("signing", &self.signing_public_key, &self.signing_proof)?;
        if consensus == signing {
            return Err("the consensus and the signing key are the same key".to_owned());
        }
        Ok((consensus, signing))
    }
}

/// Issues the certificates a request asks for, with the CA's names,
/// usages and validity; `extra_hosts` are added to the node certificate's.
pub fn sign_request(
    request: &CertificateRequest,
    issuer: &Issuer<'_, KeyPair>,
    extra_hosts: &[SanType],
) -> Result<IssuedCertificates, PkiError> {
    let refused = |reason: String| PkiError::RequestRefused {
        department: request.department.clone(),
        reason,
    };
    request.check().map_err(refused)?;
    let mut hosts = parse_hosts(&request.hosts)?;
    for host in extra_hosts {
        if !hosts.contains(host) {
            hosts.push(host.clone());
        }
    }
    let csr = |name: &str, pem: &str| {
        CertificateSigningRequestParams::from_pem(pem)
            .map_err(|err| refused(format!("the {name} CSR: {err}")))
    };
    let node_csr = csr("node", &request.node_csr)?;
    let client_csr = csr("client", &request.client_csr)?;
    let admin_csr = csr("admin", &request.admin_csr)?;
    let keys: BTreeSet<&[u8]> = [&node_csr, &client_csr, &admin_csr]
        .iter()
        .map(|csr| rcgen::PublicKeyData::der_bytes(&csr.public_key))
        .collect();
    if keys.len() != 3 {
        return Err(refused(
            "two of its certificates would share one TLS key".to_owned(),
        ));
    }
    let department = &request.department;
    let node_identity = TlsIdentity::node(department)?;
    Ok(IssuedCertificates {
        node_pem: node_certificate(&node_identity, &hosts, &node_csr.public_key, issuer)?,
        client_pem: client_certificate(
            &TlsIdentity::client(department)?,
            &client_csr.public_key,
            issuer,
        )?,
        admin_pem: client_certificate(
            &TlsIdentity::admin(department)?,
            &admin_csr.public_key,
            issuer,
        )?,
        public: DepartmentPublic {
            department: department.clone(),
            tls_identity: node_identity.to_uri(),
            consensus_public_key: request.consensus_public_key.clone(),
            signing_public_key: request.signing_public_key.clone(),
        },
    })
}

impl IssuedCertificates {
    /// Writes the certificates, a copy of the CA certificate and
    /// `public.json` into `dir`: what goes back to the department (and the
    /// public part to whoever assembles genesis).
    pub fn write(&self, dir: &Path, ca_certificate_pem: &str) -> Result<(), PkiError> {
        create_dir(dir)?;
        for (name, pem) in [
            (CA_CERTIFICATE_FILE, ca_certificate_pem),
            (NODE_CERTIFICATE_FILE, &self.node_pem),
            (CLIENT_CERTIFICATE_FILE, &self.client_pem),
            (ADMIN_CERTIFICATE_FILE, &self.admin_pem),
        ] {
            write_file(&dir.join(name), pem.as_bytes(), PUBLIC_FILE_MODE)?;
        }
        self.public.write(&dir.join(PUBLIC_FILE))
    }
}

impl DepartmentPublic {
    pub fn load(path: &Path) -> Result<Self, PkiError> {
        let text = std::fs::read_to_string(path).map_err(|source| PkiError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|err| PkiError::Request {
            path: path.to_owned(),
            reason: err.to_string(),
        })
    }

    fn write(&self, path: &Path) -> Result<(), PkiError> {
        let text = serde_json::to_string_pretty(self).map_err(|err| PkiError::Request {
            path: path.to_owned(),
            reason: err.to_string(),
        })?;
        write_file(path, text.as_bytes(), PUBLIC_FILE_MODE)
    }
}

/// The departments a CA has issued to (`<ca dir>/issued.json`).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuedRegistry {
    departments: BTreeSet<String>,
}

/// Records `departments` as issued by the CA in `ca_dir`; one already
/// there is [`PkiError::DepartmentTaken`] and nothing is recorded.
pub fn record_issued(ca_dir: &Path, departments: &[&str]) -> Result<(), PkiError> {
    let path = ca_dir.join(ISSUED_FILE);
    let mut registry: IssuedRegistry = if path.exists() {
        let text = std::fs::read_to_string(&path).map_err(|source| PkiError::Io {
            action: "read",
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|err| PkiError::Request {
            path: path.clone(),
            reason: err.to_string(),
        })?
    } else {
        IssuedRegistry::default()
    };
    if let Some(taken) = departments
        .iter()
        .find(|d| registry.departments.contains(**d))
    {
        return Err(PkiError::DepartmentTaken {
            department: (*taken).to_owned(),
            registry: path,
        });
    }
    registry
        .departments
        .extend(departments.iter().map(|d| (*d).to_owned()));
    let text = serde_json::to_string_pretty(&registry).map_err(|err| PkiError::Request {
        path: path.clone(),
        reason: err.to_string(),
    })?;
    write_file(&path, text.as_bytes(), PUBLIC_FILE_MODE)
}

/// Whether `department` was issued by the CA in `ca_dir` already.
pub fn is_issued(ca_dir: &Path, department: &str) -> Result<bool, PkiError> {
    let path = ca_dir.join(ISSUED_FILE);
    if !path.exists() {
        return Ok(false);
    }
    let text = std::fs::read_to_string(&path).map_err(|source| PkiError::Io {
        action: "read",
        path: path.clone(),
        source,
    })?;
    let registry: IssuedRegistry =
        serde_json::from_str(&text).map_err(|err| PkiError::Request {
            path,
            reason: err.to_string(),
        })?;
    Ok(registry.departments.contains(department))
}

/// Signs the request in `request_path` with the CA in `ca_dir` and writes
/// the department's certificates into `out` (`govchain certs sign`).
pub fn sign_request_file(
    ca_dir: &Path,
    request_path: &Path,
    hosts: &[String],
    out: &Path,
) -> Result<IssuedCertificates, PkiError> {
    let request = CertificateRequest::load(request_path)?;
    if is_issued(ca_dir, &request.department)? {
        return Err(PkiError::DepartmentTaken {
            department: request.department.clone(),
            registry: ca_dir.join(ISSUED_FILE),
        });
    }
    let ca_certificate_path = ca_dir.join(CA_CERTIFICATE_FILE);
    let ca_certificate_pem = read_pem(&ca_certificate_path)?;
    let issuer = crate::consortium::load_issuer(
        &ca_certificate_path,
        &ca_certificate_pem,
        &ca_dir.join(crate::consortium::CA_KEY_FILE),
    )?;
    let issued = sign_request(&request, &issuer, &parse_hosts(hosts)?)?;
    issued.write(out, &ca_certificate_pem)?;
    record_issued(ca_dir, &[&request.department])?;
    Ok(issued)
}

/// The public key a renewed node certificate is for: a PKCS#10 request
/// (PEM) the department made with its node key, or the node key itself
/// (PEM, where the CA and the key are on one machine, as in a devnet).
pub enum RenewFrom<'a> {
    Csr(&'a str),
    Key(&'a str),
}

/// A new node certificate for `department` (a new serial and validity, the
/// same names and usages as at issue, `hosts` added), signed by the CA in
/// `ca_dir` and written to `out` in one rename, so that a node watching the
/// file never reads half of it (`govchain certs renew`). Only a department
/// the CA issued to may renew.
pub fn renew_node_certificate(
    ca_dir: &Path,
    department: &str,
    from: RenewFrom<'_>,
    hosts: &[String],
    out: &Path,
) -> Result<String, PkiError> {
    if !is_issued(ca_dir, department)? {
        return Err(PkiError::RequestRefused {
            department: department.to_owned(),
            reason: format!(
                "the CA in {} never issued to it ({ISSUED_FILE}): renewal is for a member; a new department goes through `govchain certs sign`",
                ca_dir.display()
            ),
        });
    }
    let refused = |reason: String| PkiError::RequestRefused {
        department: department.to_owned(),
        reason,
    };
    let ca_certificate_path = ca_dir.join(CA_CERTIFICATE_FILE);
    let ca_certificate_pem = read_pem(&ca_certificate_path)?;
    let issuer = crate::consortium::load_issuer(
        &ca_certificate_path,
        &ca_certificate_pem,
        &ca_dir.join(crate::consortium::CA_KEY_FILE),
    )?;
    let identity = TlsIdentity::node(department)?;
    let hosts = parse_hosts(hosts)?;
    let pem = match from {
        RenewFrom::Csr(pem) => {
            let csr = CertificateSigningRequestParams::from_pem(pem)
                .map_err(|err| refused(format!("the CSR: {err}")))?;
            node_certificate(&identity, &hosts, &csr.public_key, &issuer)?
        }
        RenewFrom::Key(pem) => {
            let key =
                KeyPair::from_pem(pem).map_err(|err| refused(format!("the node key: {err}")))?;
            node_certificate(&identity, &hosts, &key, &issuer)?
        }
    };
    write_file(out, pem.as_bytes(), PUBLIC_FILE_MODE)?;
    Ok(pem)
}

/// Genesis from the departments' public parts: `validators` in order, then
/// `observers`, with the attest permissions the consortium agreed.
pub fn assemble_genesis(
    chain_id: &str,
    validators: &[DepartmentPublic],
    observers: &[DepartmentPublic],
    attests: &[(String, Vec<String>)],
) -> Result<Genesis, PkiError> {
    validate_chain_id(chain_id)?;
    if validators.is_empty() || validators.len() > VALIDATORS_MAX {
        return Err(PkiError::DepartmentCount {
            got: validators.len(),
            max: VALIDATORS_MAX,
        });
    }
    let mut seen = BTreeSet::new();
    for public in validators.iter().chain(observers) {
        validate_department(&public.department)?;
        if !seen.insert(public.department.as_str()) {
            return Err(PkiError::DuplicateDepartment {
                name: public.department.clone(),
            });
        }
    }
    if let Some((name, _)) = attests
        .iter()
        .find(|(name, _)| !seen.contains(name.as_str()))
    {
        return Err(PkiError::UnknownAttester { name: name.clone() });
    }
    let genesis = Genesis {
        chain_id: chain_id.to_owned(),
        validators: validators
            .iter()
            .map(|public| ValidatorEntry {
                name: public.department.clone(),
                consensus_public_key: public.consensus_public_key.clone(),
                tls_identity: public.tls_identity.clone(),
            })
            .collect(),
        consensus: ConsensusParams::default(),
        departments: validators
            .iter()
            .chain(observers)
            .map(|public| DepartmentEntry {
                name: public.department.clone(),
                signing_public_key: public.signing_public_key.clone(),
                attests: attests
                    .iter()
                    .filter(|(name, _)| *name == public.department)
                    .flat_map(|(_, attributes)| attributes.iter().cloned())
                    .collect(),
            })
            .collect(),
    };
    genesis.validate()?;
    Ok(genesis)
}

/// The public parts named by `paths`, in order.
pub fn load_publics(paths: &[PathBuf]) -> Result<Vec<DepartmentPublic>, PkiError> {
    paths
        .iter()
        .map(|path| DepartmentPublic::load(path))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> Issuer<'static, KeyPair> {
        crate::consortium::make_ca("test").expect("ca").1
    }

    #[test]
    fn a_request_is_signed_with_the_cas_names_and_its_keys_proven() {
        let keys = DepartmentKeys::generate("health").expect("keys");
        let request = keys
            .request(&["health.gov.example".into()])
            .expect("request");
        let issued = sign_request(&request, &issuer(), &[]).expect("signed");
        assert_eq!(issued.public.department, "health");
        assert_eq!(
            issued.public.tls_identity,
            "spiffe://govchain/dept/health/node"
        );
        assert_eq!(
            issued.public.consensus_public_key,
            request.consensus_public_key
        );
        // The certificate carries the key of the CSR, not a new one.
        let (_, pem) = x509_parser::pem::parse_x509_pem(issued.node_pem.as_bytes()).expect("pem");
        let certificate = pem.parse_x509().expect("x509");
        assert_eq!(
            certificate.public_key().subject_public_key.data.as_ref(),
            keys.node.public_key_raw()
        );
    }

    #[test]
    fn tampered_or_malformed_requests_are_refused() {
        let keys = DepartmentKeys::generate("tax").expect("keys");
        let request = keys.request(&[]).expect("request");
        let issuer = issuer();
        let refused = |request: &CertificateRequest, fragment: &str| {
            let err = sign_request(request, &issuer, &[]).expect_err("refused");
            assert!(
                err.to_string().contains(fragment),
                "{err} lacks {fragment:?}"
            );
        };
        // Someone swaps in their own consensus key: its proof fails.
        let other = DepartmentKeys::generate("tax").expect("other");
        let mut swapped = request.clone();
        swapped.consensus_public_key = other.consensus.public_key().to_hex();
        refused(&swapped, "the consensus key did not sign this request");
        let mut renamed = request.clone();
        renamed.department = "police".into();
        refused(&renamed, "did not sign this request");
        let mut bad_name = request.clone();
        bad_name.department = "Police Dept".into();
        refused(&bad_name, "department");
        let mut bad_csr = request.clone();
        bad_csr.node_csr =
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".into();
        // The proofs cover the CSR, so resign to reach the CSR check.
        let digest = bad_csr.proof_digest();
        bad_csr.consensus_proof = hex::encode(keys.consensus.sign(digest.as_bytes()).to_bytes());
        bad_csr.signing_proof = hex::encode(keys.signing.sign(digest.as_bytes()).to_bytes());
        refused(&bad_csr, "the node CSR");
        let mut shared_key = request.clone();
        shared_key.client_csr = shared_key.node_csr.clone();
        let digest = shared_key.proof_digest();
        shared_key.consensus_proof = hex::encode(keys.consensus.sign(digest.as_bytes()).to_bytes());
        shared_key.signing_proof = hex::encode(keys.signing.sign(digest.as_bytes()).to_bytes());
        refused(&shared_key, "share one TLS key");
        let mut other_format = request;
        other_format.format = "something-else".into();
        refused(&other_format, "format");
    }

    #[test]
    fn a_request_cannot_ask_for_another_departments_name_or_a_wildcard() {
        let keys = DepartmentKeys::generate("police").expect("keys");
        for host in [
            "tax.node.govchain",
            "*.node.govchain",
            "TAX.NODE.GOVCHAIN",
            "node.govchain",
            "*.gov.example",
        ] {
            let request = keys.request(&[host.to_owned()]).expect("request");
            let err = sign_request(&request, &issuer(), &[]).expect_err(host);
            assert!(err.to_string().contains(host), "{err} names {host}");
        }
        // An ordinary name of its own is fine.
        let request = keys
            .request(&["police.gov.example".into()])
            .expect("request");
        sign_request(&request, &issuer(), &[]).expect("own host");
    }

    #[test]
    fn a_name_is_issued_once() {
        let dir = tempfile::tempdir().expect("dir");
        record_issued(dir.path(), &["health", "tax"]).expect("first");
        let err = record_issued(dir.path(), &["police", "tax"]).expect_err("taken");
        assert!(
            matches!(err, PkiError::DepartmentTaken { ref department, .. } if department == "tax")
        );
        assert!(is_issued(dir.path(), "health").expect("read"));
        assert!(
            !is_issued(dir.path(), "police").expect("read"),
            "nothing recorded on refusal"
        );
    }
}
