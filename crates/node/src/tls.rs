//! Mutual TLS: every connection, in and out, presents a certificate issued
//! by the consortium CA.

use govchain_pki::{Role, TlsIdentity, identity_from_certificate, node_dns_name};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic::{Request, Status};

use crate::config::Settings;

/// The server requires a client certificate that chains to the consortium
/// CA; the handshake fails for any other.
pub fn server_config(settings: &Settings) -> ServerTlsConfig {
    ServerTlsConfig::new()
        .identity(Identity::from_pem(
            &settings.certificate_pem,
            &settings.key_pem,
        ))
        .client_ca_root(Certificate::from_pem(&settings.ca_certificate_pem))
}

/// The configuration for connecting to peer `department`: this node's
/// certificate as client identity, and the peer's node DNS name as the
/// expected server name, so that one department's node can not answer for
/// another's.
pub fn peer_client_config(settings: &Settings, department: &str) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&settings.ca_certificate_pem))
        .identity(Identity::from_pem(
            &settings.certificate_pem,
            &settings.key_pem,
        ))
        .domain_name(node_dns_name(department))
}

/// The identity of the client certificate of a request.
pub fn caller_identity<T>(request: &Request<T>) -> Result<TlsIdentity, Status> {
    let certificates = request
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("no client certificate: connect with mutual TLS"))?;
    let leaf = certificates
        .first()
        .ok_or_else(|| Status::unauthenticated("no client certificate: connect with mutual TLS"))?;
    identity_from_certificate(leaf.as_ref()).map_err(|err| {
        Status::unauthenticated(format!(
            "client certificate has no govchain identity: {err}"
        ))
    })
}

/// The identity must be a validator node's.
pub fn require_node(identity: &TlsIdentity) -> Result<(), Status> {
    match identity.role {
        Role::Node => Ok(()),
        Role::Client => Err(Status::permission_denied(format!(
            "{identity} is a client certificate; only validator node certificates may call ConsensusService"
        ))),
    }
}
