//! The consortium's PKI: a root CA made with rcgen, each department's TLS and
//! consensus keys, the genesis file, and the identities certificates carry.
//!
//! # Files
//!
//! [`init_consortium`] (`govchain certs init --out <out> --departments a,b`)
//! writes:
//!
//! ```text
//! <out>/ca.crt              root CA certificate (ECDSA P-256, path length 0, ~10 years)
//! <out>/ca.key              root CA private key (PKCS#8 PEM, mode 0600); keep it offline
//! <out>/genesis.json        chain id, validators in order, consensus limits
//! <out>/<dept>/ca.crt       copy of the root, so the folder is self-contained
//! <out>/<dept>/node.crt     node certificate: serverAuth + clientAuth, ~2 years
//! <out>/<dept>/node.key     its key (mode 0600)
//! <out>/<dept>/client.crt   client certificate: clientAuth, for the CLI and apps
//! <out>/<dept>/client.key   its key (mode 0600)
//! <out>/<dept>/admin.crt    admin certificate: clientAuth, for the node's platform team
//! <out>/<dept>/admin.key    its key (mode 0600)
//! <out>/<dept>/consensus.key  Ed25519 consensus signing key (PKCS#8 PEM, mode 0600)
//! ```
//!
//! [`issue_client`] writes another `client.crt`, `client.key` and `ca.crt`
//! into a directory of its own; [`issue_admin`] the same for `admin.crt`
//! and `admin.key`.
//!
//! # Identities
//!
//! A department name matches `[a-z][a-z0-9-]{0,30}`. Each certificate carries
//! exactly one govchain URI SAN, which is what authorization looks at:
//!
//! - node: `spiffe://govchain/dept/<dept>/node`
//! - client: `spiffe://govchain/dept/<dept>/client`
//! - admin: `spiffe://govchain/dept/<dept>/admin` (only the department's own
//!   node's `AdminService` accepts it)
//!
//! A node certificate also has the DNS name `<dept>.node.govchain` (see
//! [`node_dns_name`]), which peers use as the TLS server name, plus
//! `localhost`, `127.0.0.1`, `::1` and any `--hosts`.
//!
//! **Invariant:** private keys are created with mode 0600 and are never
//! world-readable, not even briefly.
//!
//! **Invariant:** [`Genesis::load`] returns only genesis files that pass
//! [`Genesis::validate`]; [`Genesis::hash`] depends on values, not formatting.
#![forbid(unsafe_code)]

mod ceremony;
mod consortium;
mod error;
mod files;
mod genesis;
mod identity;

pub use ceremony::{
    CertificateRequest, DepartmentKeys, DepartmentPublic, ISSUED_FILE, IssuedCertificates,
    PUBLIC_FILE, REQUEST_FILE, RenewFrom, assemble_genesis, load_publics, renew_node_certificate,
    sign_request_file,
};
pub use consortium::{
    ADMIN_CERTIFICATE_FILE, ADMIN_KEY_FILE, CA_CERTIFICATE_FILE, CA_KEY_FILE,
    CLIENT_CERTIFICATE_FILE, CLIENT_KEY_FILE, CONSENSUS_KEY_FILE, Consortium, DepartmentFiles,
    GENESIS_FILE, InitOptions, NODE_CERTIFICATE_FILE, NODE_KEY_FILE, SIGNING_KEY_FILE, init_ca,
    init_consortium, issue_admin, issue_client,
};
pub use error::PkiError;
pub use files::{read_pem, write_private_file};
pub use genesis::{
    BLOCK_BYTES_MAX_LIMIT, CHAIN_ID_BYTES_MAX, ConsensusParams, DepartmentEntry, Genesis,
    GenesisError, VALIDATORS_MAX, ValidatorEntry, validate_chain_id,
};
pub use identity::{
    CertificateIds, DEPARTMENT_NAME_BYTES_MAX, EXPIRY_WARNING_DAYS, IdentityError, IssuerMismatch,
    Role, TlsIdentity, Validity, certificate_ids, certificate_ids_pem, certificate_validity,
    check_issued_by, identity_from_certificate, identity_from_certificate_pem, node_dns_name,
    normalize_serial, validate_department,
};
