//! The node's own TLS certificate and key, as they are now: read at start
//! and replaced when the operator rotates the files (`reload`), with the
//! rustls configurations every connection, in and out, is made from. Below
//! the configuration (`Settings` holds them) and the TLS checks (`tls`).

use std::sync::Arc;

use govchain_pki::{TlsIdentity, identity_from_certificate, node_dns_name};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// How often the certificate and key files are checked for a change (a
/// SIGHUP reloads them at once).
pub const CERTIFICATE_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The node's TLS certificate and key as they are now: read at start, and
/// replaced by [`NodeCertificates::reload`] when the operator rotates the
/// files. New connections, in and out, use the current pair; established
/// ones keep theirs.
#[derive(Debug)]
pub struct NodeCertificates {
    ca_certificate_pem: String,
    roots: Arc<rustls::RootCertStore>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// The identity every pair must carry (department and role).
    identity: TlsIdentity,
    current: std::sync::RwLock<Arc<CurrentPair>>,
    /// notAfter of the current certificate, Unix seconds (for the metric).
    not_after: Arc<std::sync::atomic::AtomicI64>,
}

#[derive(Debug)]
struct CurrentPair {
    certificate_pem: String,
    key_pem: String,
    certified: Arc<rustls::sign::CertifiedKey>,
}

/// Why a certificate and key pair is not taken.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("the certificate file holds no usable certificate: {0}")]
    Certificate(String),
    #[error("the key file holds no usable private key: {0}")]
    Key(String),
    #[error("the key does not belong to the certificate: {0}")]
    Mismatch(String),
    #[error("the certificate does not chain to the consortium CA or is not valid now: {0}")]
    Chain(String),
    #[error("the certificate is {got}'s, and this node is {expected}'s")]
    Identity { got: String, expected: String },
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The files hold the pair in use.
    Unchanged,
    /// A new pair is in use; its notAfter in Unix seconds.
    Replaced { not_after_unix_s: i64 },
}

impl NodeCertificates {
    /// The pair read at start, checked as a reload would be.
    pub fn new(
        ca_certificate_pem: &str,
        certificate_pem: &str,
        key_pem: &str,
    ) -> Result<Arc<Self>, CertificateError> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(ca_certificate_pem.as_bytes()) {
            let certificate =
                certificate.map_err(|err| CertificateError::Chain(format!("CA: {err}")))?;
            roots
                .add(certificate)
                .map_err(|err| CertificateError::Chain(format!("CA: {err}")))?;
        }
        let leaf = first_certificate(certificate_pem)?;
        let identity = identity_from_certificate(leaf.as_ref())
            .map_err(|err| CertificateError::Certificate(err.to_string()))?;
        let certificates = Self {
            ca_certificate_pem: ca_certificate_pem.to_owned(),
            roots: Arc::new(roots),
            provider,
            identity,
            current: std::sync::RwLock::new(Arc::new(CurrentPair {
                certificate_pem: String::new(),
                key_pem: String::new(),
                certified: Arc::new(rustls::sign::CertifiedKey::new(vec![leaf], Arc::new(NoKey))),
            })),
            not_after: Arc::new(std::sync::atomic::AtomicI64::new(0)),
        };
        certificates.reload(certificate_pem, key_pem)?;
        Ok(Arc::new(certificates))
    }

    fn pair(&self) -> Arc<CurrentPair> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The current certificate's PEM text.
    pub fn certificate_pem(&self) -> String {
        self.pair().certificate_pem.clone()
    }

    /// notAfter of the current certificate, kept up to date by reloads.
    pub fn not_after(&self) -> Arc<std::sync::atomic::AtomicI64> {
        self.not_after.clone()
    }

    /// Checks `certificate_pem` and `key_pem` and, if they are a valid pair
    /// of this node's identity from the consortium CA, uses them for new
    /// connections from now on. On error the pair in use stays.
    pub fn reload(
        &self,
        certificate_pem: &str,
        key_pem: &str,
    ) -> Result<Reloaded, CertificateError> {
        let current = self.pair();
        if current.certificate_pem == certificate_pem && current.key_pem == key_pem {
            return Ok(Reloaded::Unchanged);
        }
        let certified = self.check_pair(certificate_pem, key_pem)?;
        let not_after = govchain_pki::certificate_validity(certificate_pem)
            .map_err(|err| CertificateError::Certificate(err.to_string()))?
            .not_after_unix_s;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(CurrentPair {
            certificate_pem: certificate_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            certified: Arc::new(certified),
        });
        self.not_after
            .store(not_after, std::sync::atomic::Ordering::Relaxed);
        Ok(Reloaded::Replaced {
            not_after_unix_s: not_after,
        })
    }

    fn check_pair(
        &self,
        certificate_pem: &str,
        key_pem: &str,
    ) -> Result<rustls::sign::CertifiedKey, CertificateError> {
        use rustls::client::danger::ServerCertVerifier as _;
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
        let chain = CertificateDer::pem_slice_iter(certificate_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| CertificateError::Certificate(err.to_string()))?;
        let leaf = chain
            .first()
            .cloned()
            .ok_or_else(|| CertificateError::Certificate("no certificate in the file".into()))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|err| CertificateError::Key(err.to_string()))?;
        let certified = rustls::sign::CertifiedKey::from_der(chain.clone(), key, &self.provider)
            .map_err(|err| CertificateError::Mismatch(err.to_string()))?;
        let identity = identity_from_certificate(leaf.as_ref())
            .map_err(|err| CertificateError::Certificate(err.to_string()))?;
        if identity != self.identity {
            return Err(CertificateError::Identity {
                got: identity.to_string(),
                expected: self.identity.to_string(),
            });
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            self.roots.clone(),
            self.provider.clone(),
        )
        .build()
        .map_err(|err| CertificateError::Chain(err.to_string()))?;
        let name = ServerName::try_from(node_dns_name(&self.identity.department))
            .map_err(|err| CertificateError::Chain(err.to_string()))?;
        verifier
            .verify_server_cert(&leaf, &chain[1..], &name, &[], UnixTime::now())
            .map_err(|err| CertificateError::Chain(err.to_string()))?;
        Ok(certified)
    }

    /// The client configuration for a new connection to peer `department`,
    /// with the current pair (see [`peer_client_config`]).
    pub fn client_config(&self, department: &str) -> ClientTlsConfig {
        let pair = self.pair();
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_certificate_pem))
            .identity(Identity::from_pem(&pair.certificate_pem, &pair.key_pem))
            .domain_name(node_dns_name(department))
    }

    /// The current certificate for other TLS servers of the node (the web
    /// portal), following reloads.
    pub fn resolver(self: &Arc<Self>) -> Arc<dyn rustls::server::ResolvesServerCert> {
        Arc::new(CurrentCertificate(self.clone()))
    }

    /// The server side: a client certificate from the consortium CA is
    /// required, and the node's certificate is the current one at each
    /// handshake.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, CertificateError> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots.clone(),
            self.provider.clone(),
        )
        .build()
        .map_err(|err| CertificateError::Chain(err.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| CertificateError::Chain(err.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(CurrentCertificate(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

fn first_certificate(
    pem: &str,
) -> Result<rustls::pki_types::CertificateDer<'static>, CertificateError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| CertificateError::Certificate("no certificate in the file".into()))?
        .map_err(|err| CertificateError::Certificate(err.to_string()))
}

/// The resolver the server's TLS asks at each handshake.
#[derive(Debug)]
struct CurrentCertificate(Arc<NodeCertificates>);

impl rustls::server::ResolvesServerCert for CurrentCertificate {
    fn resolve(
        &self,
        _client_hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.pair().certified.clone())
    }
}

/// A placeholder key that signs nothing, only until the first pair is
/// checked in [`NodeCertificates::new`] (which fails without one).
#[derive(Debug)]
struct NoKey;

impl rustls::sign::SigningKey for NoKey {
    fn choose_scheme(
        &self,
        _offered: &[rustls::SignatureScheme],
    ) -> Option<Box<dyn rustls::sign::Signer>> {
        None
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        rustls::SignatureAlgorithm::Anonymous
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consortium() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("dir");
        govchain_pki::init_consortium(&govchain_pki::InitOptions {
            observers: Vec::new(),
            out: dir.path().to_owned(),
            chain_id: "c".into(),
            departments: vec!["health".into(), "tax".into()],
            hosts: Vec::new(),
            force: false,
            attests: Vec::new(),
        })
        .expect("init");
        dir
    }

    fn read(dir: &tempfile::TempDir, path: &str) -> String {
        std::fs::read_to_string(dir.path().join(path)).expect("read")
    }

    #[test]
    fn only_a_valid_pair_of_the_nodes_identity_replaces_the_one_in_use() {
        let dir = consortium();
        let ca = read(&dir, "ca.crt");
        let certificate = read(&dir, "health/node.crt");
        let key = read(&dir, "health/node.key");
        let certificates = NodeCertificates::new(&ca, &certificate, &key).expect("valid pair");
        assert_eq!(
            certificates.reload(&certificate, &key).expect("same"),
            Reloaded::Unchanged
        );
        // Half copied: the new certificate beside the old key of another.
        let err = certificates
            .reload(&certificate, &read(&dir, "tax/node.key"))
            .expect_err("mismatch");
        assert!(matches!(err, CertificateError::Mismatch(_)), "{err}");
        // Another department's valid pair.
        let err = certificates
            .reload(&read(&dir, "tax/node.crt"), &read(&dir, "tax/node.key"))
            .expect_err("identity");
        let text = err.to_string();
        assert!(text.contains("tax") && text.contains("health"), "{text}");
        assert_eq!(
            certificates.certificate_pem(),
            certificate,
            "a refused pair replaced the one in use"
        );
        // A renewal of the same key is taken.
        let renewed = govchain_pki::renew_node_certificate(
            dir.path(),
            "health",
            govchain_pki::RenewFrom::Key(&key),
            &[],
            &dir.path().join("renewed.crt"),
        )
        .expect("renew");
        assert!(matches!(
            certificates.reload(&renewed, &key).expect("renewed"),
            Reloaded::Replaced { .. }
        ));
        assert_eq!(certificates.certificate_pem(), renewed);
        let not_after = govchain_pki::certificate_validity(&renewed)
            .expect("validity")
            .not_after_unix_s;
        assert_eq!(
            certificates
                .not_after()
                .load(std::sync::atomic::Ordering::Relaxed),
            not_after
        );
    }

    #[test]
    fn a_node_does_not_start_with_a_key_of_another_certificate() {
        let dir = consortium();
        let err = NodeCertificates::new(
            &read(&dir, "ca.crt"),
            &read(&dir, "health/node.crt"),
            &read(&dir, "tax/node.key"),
        )
        .expect_err("mismatch");
        assert!(matches!(err, CertificateError::Mismatch(_)), "{err}");
    }

    /// Governance registers departments by the rule certificates are
    /// issued by: a name the chain accepts is one the CA issues, and back.
    #[test]
    fn the_chain_and_the_ca_agree_on_department_names() {
        let long = "a".repeat(govchain_pki::DEPARTMENT_NAME_BYTES_MAX);
        let too_long = "a".repeat(govchain_pki::DEPARTMENT_NAME_BYTES_MAX + 1);
        for name in [
            "",
            "a",
            "tax",
            "land-registry2",
            "-x",
            "1x",
            "Tax",
            "x_y",
            "x.y",
            "x/y",
            "é",
            long.as_str(),
            too_long.as_str(),
        ] {
            assert_eq!(
                govchain_exec::departments::valid_department_name(name),
                govchain_pki::validate_department(name).is_ok(),
                "{name:?}"
            );
        }
        assert_eq!(
            govchain_exec::departments::DEPARTMENT_NAME_BYTES_MAX,
            govchain_pki::DEPARTMENT_NAME_BYTES_MAX
        );
    }
}
