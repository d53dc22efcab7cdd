//! Mutual TLS: every connection, in and out, presents a certificate issued
//! by the consortium CA.

use std::collections::BTreeSet;
use std::sync::Arc;

use govchain_pki::{Genesis, Role, TlsIdentity, identity_from_certificate};
use tonic::service::Interceptor;
use tonic::transport::ClientTlsConfig;
use tonic::{Request, Status};

use crate::config::Settings;

/// How long a client may take to complete the TLS handshake before the
/// connection is closed: half-open connections do not hold a place.
pub const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The configuration for connecting to peer `department`: this node's
/// certificate as client identity, and the peer's node DNS name as the
/// expected server name, so that one department's node can not answer for
/// another's.
pub fn peer_client_config(settings: &Settings, department: &str) -> ClientTlsConfig {
    settings.certificates.client_config(department)
}

/// The identity of the client certificate of a request.
pub fn caller_identity<T>(request: &Request<T>) -> Result<TlsIdentity, Status> {
    let certificates = request.peer_certs().ok_or_else(|| {
        crate::errors::unauthenticated("no client certificate: connect with mutual TLS")
    })?;
    let leaf = certificates.first().ok_or_else(|| {
        crate::errors::unauthenticated("no client certificate: connect with mutual TLS")
    })?;
    identity_from_certificate(leaf.as_ref()).map_err(|err| {
        crate::errors::unauthenticated(format!(
            "client certificate has no govchain identity: {err}"
        ))
    })
}

/// The identity of a caller acting for its department: submitting,
/// subscribing, uploading, reading citizens' data. An admin certificate is
/// the platform team's, for `AdminService` (and reads of the chain's
/// status); it does not act for the department.
pub fn department_caller<T>(request: &Request<T>) -> Result<TlsIdentity, Status> {
    let identity = caller_identity(request)?;
    if identity.role == Role::Admin {
        return Err(crate::errors::permission_denied(format!(
            "{identity} is an admin certificate, for AdminService: it does not act for department {:?}; use one of its client certificates",
            identity.department
        )));
    }
    Ok(identity)
}

/// The identity must be a validator node's.
pub fn require_node(identity: &TlsIdentity) -> Result<(), Status> {
    match identity.role {
        Role::Node => Ok(()),
        Role::Client | Role::Admin => Err(crate::errors::permission_denied(format!(
            "{identity} is a {} certificate; only validator node certificates may call ConsensusService",
            identity.role
        ))),
    }
}

/// The identity must be an admin certificate of `department`, the node's
/// own: the platform team that runs this node, and no other department's,
/// may copy its whole ledger and blob store.
pub fn require_admin_of(identity: &TlsIdentity, department: &str) -> Result<(), Status> {
    if identity.role != Role::Admin {
        return Err(crate::errors::permission_denied(format!(
            "{identity} is a {} certificate; AdminService takes only an admin certificate of department {department:?} (govchain certs issue-client --admin)",
            identity.role
        )));
    }
    if identity.department != department {
        return Err(crate::errors::permission_denied(format!(
            "{identity} is an admin certificate of department {:?}; this node belongs to department {department:?}, whose admin certificates alone may call AdminService",
            identity.department
        )));
    }
    Ok(())
}

/// The departments of the chain: the validators and every department
/// genesis lists (observers among them), and those governance registered
/// since. The consortium CA may have issued
/// certificates to others (a department that was never admitted, or a
/// test CA shared with another chain); a certificate is necessary but not
/// sufficient.
#[derive(Clone, Debug)]
pub struct Members {
    chain_id: Arc<str>,
    names: Arc<BTreeSet<String>>,
    rates: Arc<crate::limits::RequestRates>,
    /// Certificates governance revoked; `None` checks none (tests).
    revocations: Option<Arc<crate::chain_state::Revocations>>,
    /// The departments in force; `None`: genesis's only (tests).
    departments: Option<Arc<crate::chain_state::InForce>>,
}

impl Members {
    pub fn from_genesis(genesis: &Genesis) -> Self {
        let names = genesis
            .validators
            .iter()
            .map(|validator| validator.name.clone())
            .chain(genesis.departments.iter().map(|d| d.name.clone()))
            .collect();
        Self {
            chain_id: genesis.chain_id.as_str().into(),
            names: Arc::new(names),
            rates: Arc::default(),
            revocations: None,
            departments: None,
        }
    }

    /// Also admits the departments governance registered.
    #[must_use]
    pub fn with_departments(mut self, departments: Arc<crate::chain_state::InForce>) -> Self {
        self.departments = Some(departments);
        self
    }

    /// Also refuses certificates governance revoked.
    #[must_use]
    pub fn with_revocations(mut self, revocations: Arc<crate::chain_state::Revocations>) -> Self {
        self.revocations = Some(revocations);
        self
    }

    pub fn contains(&self, department: &str) -> bool {
        self.names.contains(department)
            || self
                .departments
                .as_ref()
                .is_some_and(|d| d.get().by_name(department).is_some())
    }

    /// The caller's identity, if its department is a member.
    pub fn check<T>(&self, request: &Request<T>) -> Result<TlsIdentity, Status> {
        let identity = caller_identity(request)?;
        if let Some(revocations) = &self.revocations
            && let Some(leaf) = request.peer_certs().and_then(|c| c.first().cloned())
            && let Some(refusal) = revocations.refusal(leaf.as_ref())
        {
            return Err(crate::errors::unauthenticated(format!(
                "{identity}: {refusal}"
            )));
        }
        if !self.contains(&identity.department) {
            return Err(crate::errors::permission_denied(format!(
                "department {:?} is not a member of chain {}: its certificate is from the consortium CA, but neither genesis nor governance lists such a department",
                identity.department, self.chain_id
            )));
        }
        Ok(identity)
    }
}

/// Every RPC, health and reflection included, passes this check first,
/// then the department's request rate
/// (`limits::REQUESTS_PER_SECOND_PER_DEPARTMENT`).
impl Interceptor for Members {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let identity = self.check(&request)?;
        // By certificate (department and role): a department's clients
        // cannot spend the budget its node needs for peer calls.
        self.rates
            .take(&identity.to_string(), std::time::Instant::now())?;
        Ok(request)
    }
}
