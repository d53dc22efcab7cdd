use std::path::PathBuf;

use crate::genesis::GenesisError;
use crate::identity::IdentityError;

/// Errors from creating the consortium's files and reading them back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Genesis(#[from] GenesisError),
    #[error(
        "{} already exists; refusing to replace the consortium CA key (pass --force to overwrite every file)",
        path.display()
    )]
    CaKeyExists { path: PathBuf },
    #[error(
        "{} already exists; refusing to replace a client or admin key (choose another output directory)",
        path.display()
    )]
    ClientKeyExists { path: PathBuf },
    #[error("got {got} departments, expected 1 to {max}")]
    DepartmentCount { got: usize, max: usize },
    #[error("department {name:?} is listed twice")]
    DuplicateDepartment { name: String },
    #[error("--attests names department {name:?}, which is neither a department nor an observer")]
    UnknownAttester { name: String },
    #[error("extra host {host:?} is neither an IP address nor a DNS name: {reason}")]
    Host { host: String, reason: String },
    #[error("{} does not exist; run `govchain certs init` first", path.display())]
    Missing { path: PathBuf },
    #[error("{} is not a PEM file (no \"-----BEGIN\" line)", path.display())]
    NotPem { path: PathBuf },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make the {what} certificate: {reason}")]
    Certificate { what: String, reason: String },
    #[error("{} is not a usable private key: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("{} is not a usable CA certificate: {reason}", path.display())]
    CaCertificate { path: PathBuf, reason: String },
    #[error("CA key {} does not belong to CA certificate {}", key.display(), certificate.display())]
    CaKeyMismatch { key: PathBuf, certificate: PathBuf },
    #[error("cannot make a consensus key for {department:?}: {reason}")]
    ConsensusKey { department: String, reason: String },
    #[error("{} is not a valid request or public part: {reason}", path.display())]
    Request { path: PathBuf, reason: String },
    #[error("the certificate request of department {department:?} is refused: {reason}")]
    RequestRefused { department: String, reason: String },
    #[error(
        "department {department:?} already has certificates from this CA (see {}): a name is issued once",
        registry.display()
    )]
    DepartmentTaken {
        department: String,
        registry: PathBuf,
    },
}
