//! The portal's gRPC clients of its own node, over mutual TLS with the
//! node's certificate: the portal reads the chain as the department does,
//! through the same public API as any department system.
//!
//! RPCs used: `NodeService.GetStatus`, `GetBlock`, `GetTransaction`,
//! `ListAnchors`; `IdentityService.CreateLoginChallenge`, `CompleteLogin`,
//! `GetIdentity` and `ListAccesses` (with the citizen's login session);
//! `NodeService.GetAccount`, `SubmitTransactionAndWait` (transactions the
//! citizen's or officer's device signed); `ApprovalService.ListCases`,
//! `GetCase`; `BlobService.Download` (a case document, with the case id).

use std::time::Duration;

use govchain_proto::approval::v1::approval_service_client::ApprovalServiceClient;
use govchain_proto::blob::v1::blob_service_client::BlobServiceClient;
use govchain_proto::identity::v1::identity_service_client::IdentityServiceClient;
use govchain_proto::node::v1::node_service_client::NodeServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::{PortalConfig, PortalError};

/// How long one call to the node may take before the page shows an error.
pub const NODE_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer the portal decodes (a block of the chain's largest
/// size, with its certificate and results).
pub const NODE_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

#[derive(Clone)]
pub struct NodeClients {
    channel: Channel,
}

impl NodeClients {
    /// A lazily connected channel: the node may still be starting.
    pub fn connect(config: &PortalConfig) -> Result<Self, PortalError> {
        let failed = |reason: String| PortalError::Node {
            endpoint: config.node_endpoint.clone(),
            reason,
        };
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&config.ca_certificate_pem))
            .identity(Identity::from_pem(&config.certificate_pem, &config.key_pem))
            .domain_name(config.node_dns_name.clone());
        let channel = Endpoint::from_shared(config.node_endpoint.clone())
            .map_err(|err| failed(err.to_string()))?
            .timeout(NODE_CALL_TIMEOUT)
            .connect_timeout(NODE_CALL_TIMEOUT)
            .tls_config(tls)
            .map_err(|err| failed(err.to_string()))?
            .connect_lazy();
        Ok(Self { channel })
    }

    pub fn node(&self) -> NodeServiceClient<Channel> {
        NodeServiceClient::new(self.channel.clone())
            .max_decoding_message_size(NODE_MESSAGE_BYTES_MAX)
    }

    /// The channel itself, for clients built elsewhere
    /// (`govchain_evidence::collect`).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn blob(&self) -> BlobServiceClient<Channel> {
        BlobServiceClient::new(self.channel.clone())
            .max_decoding_message_size(NODE_MESSAGE_BYTES_MAX)
    }

    pub fn approval(&self) -> ApprovalServiceClient<Channel> {
        ApprovalServiceClient::new(self.channel.clone())
            .max_decoding_message_size(NODE_MESSAGE_BYTES_MAX)
    }

    pub fn identity(&self) -> IdentityServiceClient<Channel> {
        IdentityServiceClient::new(self.channel.clone())
            .max_decoding_message_size(NODE_MESSAGE_BYTES_MAX)
    }
}
