//! `govchain identity access`: a department reads a citizen's attribute
//! under consent; the node records the access on chain before it releases
//! the sealed value, and the CLI checks the value against the chain.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use govchain_crypto::{Digest, PublicKey};
use govchain_exec::identity::attribute_commitment;
use govchain_proto::identity::v1::ReadAttributeRequest;
use govchain_proto::types::v1::{
    AttributeRecord, RecordAccess, SealedAttribute, transaction::Body,
};
use prost::Message as _;
use serde::Serialize;
use tonic::{Code, Status};

use super::{
    Session, client_timeout, find_attribute, parse_attribute_name, parse_citizen, print_view,
};
use crate::client::{ConnectArgs, rpc_error, status_line};
use crate::cmd::blob;
use crate::cmd::keys::load_signing_key;
use crate::cmd::tx::wait_for_commit;
use crate::output::Fields;

/// `access` waits up to this long for the node's answer to start: the node
/// first waits (up to 30 s) for the access to commit.
const ACCESS_CALL_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, Args)]
pub(super) struct AccessArgs {
    /// The reading department's signing key; connect with the same
    /// department's certificate (--department).
    #[arg(long, env = "GOVCHAIN_SIGNING_KEY", value_name = "KEYFILE")]
    signing_key: PathBuf,
    /// The citizen: did:key:z... or the public key in hex.
    #[arg(long, value_name = "DID", value_parser = parse_citizen)]
    citizen: PublicKey,
    /// The attribute to read.
    #[arg(long, value_name = "NAME", value_parser = parse_attribute_name)]
    name: String,
    /// The consent id the citizen gave the department.
    #[arg(long, value_name = "ID", value_parser = blob::parse_transaction_id)]
    consent: Digest,
    /// The purpose; must be the consent's.
    #[arg(long, value_name = "P")]
    purpose: String,
    /// Where to write the attribute's value.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Serialize)]
struct AccessedView {
    citizen: String,
    attribute: String,
    media_type: String,
    size_bytes: u64,
    file: PathBuf,
    cid: String,
    commitment: String,
    consent_id: String,
    purpose: String,
    access_transaction_id: String,
    block_height: Option<u64>,
}

pub(super) async fn access(args: AccessArgs, json: bool) -> anyhow::Result<()> {
    let key = load_signing_key(&args.signing_key)?;
    if args.out.exists() && !args.force {
        anyhow::bail!(
            "{} already exists; pass --force to replace it or choose another --out",
            args.out.display()
        );
    }
    let mut session = Session::open(&args.connect, ACCESS_CALL_TIMEOUT).await?;
    // A department sees an attribute only while a consent in force covers
    // it (or it may attest it). Hidden, the read is still sent: the node's
    // refusal says precisely why (revoked, expired, not covered, not
    // declared).
    let visible = match session.get_identity(&args.citizen).await {
        Ok(identity) => find_attribute(&identity, &args.name).ok(),
        Err(_) => None,
    };
    let body = Body::RecordAccess(RecordAccess {
        citizen: args.citizen.as_bytes().to_vec(),
        attribute: args.name.clone(),
        consent_id: args.consent.to_vec(),
        purpose: args.purpose.clone(),
    });
    let signed = session.sign(&key, body).await?;
    let id = signed.id;
    let mut stream = session
        .identity
        .read_attribute(ReadAttributeRequest {
            envelope: Some(signed.envelope),
        })
        .await
        .map_err(|status| access_error(status, &args.citizen))?
        .into_inner();
    // The access committed under a consent in force, so the attribute is
    // visible now even if it was not a moment ago.
    let attribute = match visible {
        Some(attribute) => attribute,
        None => find_attribute(&session.get_identity(&args.citizen).await?, &args.name)?,
    };
    let sealed = read_sealed(&mut stream, &attribute, json).await?;
    let value = open_sealed(&sealed, &attribute)?;
    write_value(&args.out, &value.value, args.force)?;
    // Committed before any byte was sent; ask where, for the record.
    let block_height = wait_for_commit(&mut session.node, &id, client_timeout())
        .await
        .ok()
        .map(|response| response.block_height);
    let view = AccessedView {
        citizen: args.citizen.to_did_key(),
        attribute: args.name,
        media_type: value.media_type,
        size_bytes: value.value.len() as u64,
        file: args.out,
        cid: attribute.cid,
        commitment: hex::encode(&attribute.commitment),
        consent_id: args.consent.to_hex(),
        purpose: args.purpose,
        access_transaction_id: id.to_hex(),
        block_height,
    };
    let mut fields = Fields::new();
    fields
        .add("attribute", &view.attribute)
        .add("media type", &view.media_type)
        .add("size", format!("{} bytes", view.size_bytes))
        .add("written to", view.file.display())
        .add("verified", "CID and commitment match the chain")
        .add("access", &view.access_transaction_id);
    if let Some(height) = view.block_height {
        fields.add("block height", height);
    }
    print_view(&view, &fields, json)
}

/// Receives the sealed attribute's bytes that `ReadAttribute` streams,
/// checked against the CID the chain holds.
async fn read_sealed(
    stream: &mut tonic::Streaming<govchain_proto::identity::v1::ReadAttributeResponse>,
    attribute: &AttributeRecord,
    json: bool,
) -> anyhow::Result<Vec<u8>> {
    let mut sealed = Vec::new();
    let progress = (!json).then_some("reading");
    blob::receive(stream, &mut sealed, 0, attribute.size_bytes, progress).await?;
    let cid = blob::cid_of_bytes(&sealed)?;
    anyhow::ensure!(
        cid.to_string() == attribute.cid,
        "the node sent bytes with CID {cid}, but the chain declares {}; nothing was written",
        attribute.cid
    );
    Ok(sealed)
}

fn access_error(status: Status, citizen: &PublicKey) -> anyhow::Error {
    match status.code() {
        Code::PermissionDenied => anyhow::anyhow!(
            "{}; nothing was released (the citizen's consents: `govchain identity consent list --citizen {}`)",
            status_line(&status),
            citizen.to_did_key()
        ),
        _ => rpc_error(status),
    }
}

/// Decodes a sealed attribute and checks its value against the chain's
/// commitment.
fn open_sealed(sealed: &[u8], attribute: &AttributeRecord) -> anyhow::Result<SealedAttribute> {
    let value =
        SealedAttribute::decode(sealed).context("the attribute blob is not a SealedAttribute")?;
    let commitment = attribute_commitment(&value.salt, &value.value);
    anyhow::ensure!(
        commitment.as_bytes() == attribute.commitment.as_slice(),
        "the value's commitment {commitment} differs from the chain's {}; nothing was written",
        hex::encode(&attribute.commitment)
    );
    Ok(value)
}

/// Writes a value with mode 0600: it is personal data.
fn write_value(path: &Path, value: &[u8], force: bool) -> anyhow::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).mode(0o600);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(value)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::identity::{SALT_BYTES, seal};

    #[test]
    fn a_sealed_value_opens_only_against_its_commitment() {
        let (sealed, commitment) = seal(b"Alice".to_vec(), "text/plain".into()).expect("seal");
        let mut attribute = AttributeRecord {
            commitment: commitment.to_vec(),
            ..AttributeRecord::default()
        };
        let opened = open_sealed(&sealed, &attribute).expect("opens");
        assert_eq!(opened.value, b"Alice");
        assert_eq!(opened.salt.len(), SALT_BYTES);
        attribute.commitment = vec![0; 32];
        assert!(open_sealed(&sealed, &attribute).is_err());
    }
}
