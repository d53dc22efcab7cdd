//! The devnet's demo citizen: an identity with an attested name and a
//! consent, made by `govchain devnet` so that the read and the audit log
//! can be tried at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use govchain_crypto::{Digest, SigningKey};
use govchain_proto::blob::v1::UploadHeader;
use govchain_proto::types::v1::{
    AttestAttribute, CreateIdentity, DeclareAttribute, GrantConsent, transaction::Body,
};

use super::{CommitArgs, Session, client_timeout, seal};
use crate::client::{self, ConnectArgs};
use crate::cmd::blob;
use crate::cmd::keys::load_signing_key;

/// What [`demo_citizen`] made.
pub struct DemoCitizen {
    pub did: String,
    pub key_file: PathBuf,
    pub consent_id: Digest,
}

/// A demo citizen on a fresh devnet in `dir`: an identity with a declared
/// `name`, held by `holder`'s node and attested by `holder`, and a consent
/// letting `reader` read it for `purpose`. The key is written to
/// `<dir>/demo-citizen.key`; an existing key file means it was done.
pub async fn demo_citizen(
    dir: &Path,
    holder: &str,
    reader: &str,
    purpose: &str,
) -> anyhow::Result<Option<DemoCitizen>> {
    let key_file = dir.join("demo-citizen.key");
    if key_file.exists() {
        return Ok(None);
    }
    let department_key = load_signing_key(&dir.join("certs").join(holder).join("signing.key"))?;
    let connect = ConnectArgs {
        dir: Some(dir.to_owned()),
        department: Some(holder.to_owned()),
        ..ConnectArgs::default()
    };
    let mut session = Session::open(&connect, client_timeout()).await?;
    let commit = CommitArgs {
        wait: true,
        no_wait: false,
        timeout: Duration::from_secs(30),
    };
    let key = SigningKey::generate()?;
    crate::cmd::keys::write_secret(&key_file, key.to_pkcs8_pem()?.as_bytes(), false)?;
    session
        .submit(
            &key,
            Body::CreateIdentity(CreateIdentity {}),
            &commit,
            "the identity",
        )
        .await?;
    let commitment = declare_name(&mut session, &connect, &key, &commit).await?;
    let attest = Body::AttestAttribute(AttestAttribute {
        citizen: key.public_key().as_bytes().to_vec(),
        name: "name".into(),
        commitment: commitment.to_vec(),
        expires_ms: 0,
    });
    session
        .submit(&department_key, attest, &commit, "the attestation")
        .await?;
    let consent = Body::GrantConsent(GrantConsent {
        department: reader.to_owned(),
        attributes: vec!["name".into()],
        purpose: purpose.to_owned(),
        expires_ms: govchain_node::now_ms() + 365 * 24 * 3600 * 1000,
        jurisdiction: String::new(),
    });
    let granted = session
        .submit(&key, consent, &commit, "the consent")
        .await?;
    Ok(Some(DemoCitizen {
        did: key.public_key().to_did_key(),
        key_file,
        consent_id: granted.id,
    }))
}

/// Declares the demo citizen's `name`: seals it, uploads it to the node's
/// blob store, and submits the declaration. Returns the commitment.
async fn declare_name(
    session: &mut Session,
    connect: &ConnectArgs,
    key: &SigningKey,
    commit: &CommitArgs,
) -> anyhow::Result<Digest> {
    let (sealed, commitment) = seal(b"Demo Citizen".to_vec(), "text/plain".into())?;
    let mut blobs = client::blob_client(client::channel(&connect.target()?, None).await?);
    let uploaded = blob::upload(
        &mut blobs,
        bytes::Bytes::from(sealed),
        UploadHeader {
            receipt_for_citizen: key.public_key().as_bytes().to_vec(),
            ..UploadHeader::default()
        },
        indicatif::ProgressBar::hidden(),
    )
    .await?;
    let declare = Body::DeclareAttribute(DeclareAttribute {
        name: "name".into(),
        cid: uploaded.cid,
        commitment: commitment.to_vec(),
        holder: session.department.clone(),
        size_bytes: uploaded.size_bytes,
        holder_receipt: uploaded.holder_receipt,
    });
    session
        .submit(key, declare, commit, "the declaration")
        .await?;
    Ok(commitment)
}
