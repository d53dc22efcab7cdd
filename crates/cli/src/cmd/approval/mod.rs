//! `govchain officer`, `govchain workflow` and `govchain case`: paperless
//! cross-department approvals. Writes are signed transactions (the rules
//! are `exec::approval`'s), submitted and awaited like the identity
//! commands; reads go to the node's `ApprovalService`.

use std::path::PathBuf;

use clap::Args;
use govchain_crypto::SigningKey;
use govchain_proto::approval::v1::approval_service_client::ApprovalServiceClient;
use govchain_proto::types::v1::transaction::Body;
use tonic::transport::Channel;

use crate::client::ConnectArgs;
use crate::cmd::identity::{CommitArgs, Session, Submitted, client_timeout};
use crate::cmd::keys::load_signing_key;

pub mod case;
pub mod demo;
pub mod export;
pub mod officer;
pub mod workflow;

/// The transaction's signer and where to send it.
#[derive(Debug, Args)]
pub(crate) struct SignedArgs {
    /// The key that signs: the department's signing key (genesis
    /// `departments`) for officers and workflows; the officer's key to act
    /// on a case; the citizen's key (or the department's) to open one.
    #[arg(long, env = "GOVCHAIN_SIGNING_KEY", value_name = "KEYFILE")]
    signing_key: PathBuf,
    #[command(flatten)]
    commit: CommitArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

impl SignedArgs {
    /// Signs `body`, submits it and (unless `--no-wait`) waits for its
    /// commit; a committed failure is a negative answer naming `what`.
    pub(crate) async fn submit(
        &self,
        body: Body,
        what: &str,
    ) -> anyhow::Result<(SigningKey, Submitted)> {
        let key = load_signing_key(&self.signing_key)?;
        let mut session = Session::open(&self.connect, client_timeout()).await?;
        let submitted = session.submit(&key, body, &self.commit, what).await?;
        Ok((key, submitted))
    }
}

fn approval_client(channel: Channel) -> ApprovalServiceClient<Channel> {
    ApprovalServiceClient::new(channel)
        .max_decoding_message_size(crate::client::BLOB_MESSAGE_BYTES_MAX)
}
