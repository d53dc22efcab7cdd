//! `BlobService`: uploads into the node's blob store (`crate::blobs`),
//! verified downloads, the consent gate on citizens' attribute blobs, and
//! the release gates on datasets' and cases' documents.
//!
//! **Invariant:** a blob that the chain names as a citizen's attribute
//! (`blob-ref/<cid>` in state) leaves this node only under a committed
//! access record of the caller's department, less than
//! [`ACCESS_WINDOW_MS`] old.
//!
//! **Invariant:** `Stat` tells a department that a personal blob is stored
//! only if `exec::identity::disclosure::blob_visible_to` lets it know;
//! otherwise it answers as for a blob that is not stored. `Download` gives
//! such a department the one refusal it gives for any blob no attribute
//! names, stored or not.
//!
//! **Invariant:** a blob that is a data version of a directory dataset
//! (`dsv-cid/<cid>` in state) leaves its owner's node for another
//! department only as `exec::directory::blob_release` allows: an open
//! dataset to any member, a by-request one under a grant, a
//! citizen-consent one never through this path.
//!
//! **Invariant:** any other blob no attribute names leaves this node to
//! another department only as a document of an approval case that the
//! case's definition lets that department read
//! (`exec::approval::documents::readable_document`), each release logged.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use govchain_blobstore::Cid;
use govchain_crypto::{Digest, PublicKey};
use govchain_exec::approval::documents::readable_document;
use govchain_exec::approval::{document_case, read_case, read_definition};
use govchain_exec::directory::{
    Release, blob_dataset, blob_release, read_entry, read_grant, schema_dataset, schema_release,
};
use govchain_exec::identity::disclosure::blob_visible_to;
use govchain_exec::identity::{
    blob_is_personal, blob_reference, check_access, read_access, read_attribute,
};
use govchain_pki::TlsIdentity;
use govchain_proto::blob::v1::blob_service_client::BlobServiceClient;
use govchain_proto::blob::v1::blob_service_server::BlobService;
use govchain_proto::blob::v1::*;
use govchain_proto::types::v1::{AccessRecord, ErrorReason, RecordAccess};
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status, Streaming};
use tracing::info;

use crate::blobs::*;
use crate::chain_state::LedgerState;
use crate::errors;
use crate::errors::internal;
use crate::shared::Shared;
use crate::tls::department_caller;

/// Checks that `caller` may read `cid`, which the chain names as a
/// citizen's attribute: `access_id` must be a committed access of the
/// caller's department to that blob, within the access window. Returns the
/// access record.
pub fn authorize_personal(
    shared: &Shared,
    caller: &TlsIdentity,
    cid: &Cid,
    access_id: &[u8],
) -> Result<AccessRecord, Status> {
    if access_id.is_empty() {
        return Err(errors::permission_denied(format!(
            "blob {cid} holds a citizen's attribute: read it with IdentityService.ReadAttribute, \
             or pass access_transaction_id of a committed RecordAccess"
        )));
    }
    let id = Digest::from_slice(access_id)
        .map_err(|err| errors::invalid_argument(format!("access_transaction_id: {err}")))?;
    let state = LedgerState(&shared.ledger);
    let access = read_access(&state, &id)
        .map_err(|err| internal("state read failed", err))?
        .ok_or_else(|| errors::permission_denied(format!("no committed access {id} on chain")))?;
    if access.cid != cid.to_string() {
        return Err(errors::permission_denied(format!(
            "access {id} released blob {}, not {cid}",
            access.cid
        )));
    }
    if access.department != caller.department {
        return Err(errors::permission_denied(format!(
            "access {id} was recorded by department {:?}, not {:?}",
            access.department, caller.department
        )));
    }
    let now = crate::clock::now_ms();
    if now.saturating_sub(access.accessed_ms) > ACCESS_WINDOW_MS {
        return Err(errors::permission_denied(format!(
            "access {id} is older than {} minutes; record a new access",
            ACCESS_WINDOW_MS / 60_000
        )));
    }
    // The consent must still hold now: a revocation closes an open window.
    let departments = shared.departments();
    let department = departments
        .by_name(&access.department)
        .ok_or_else(|| internal("an access names an unknown department", &access.department))?;
    let again = RecordAccess {
        citizen: access.citizen.clone(),
        attribute: access.attribute.clone(),
        consent_id: access.consent_id.clone(),
        purpose: access.purpose.clone(),
    };
    check_access(&state, &departments, &department.public_key, &again, now)
        .map_err(|err| internal("state read failed", err))?
        .map_err(|refusal| errors::permission_denied(refusal.to_string()))?;
    Ok(access)
}

/// How long a holder waits for an access it has not seen yet: the reader's
/// node may have committed the block a moment before this one.
pub const ACCESS_WAIT: Duration = Duration::from_secs(5);

/// Waits up to [`ACCESS_WAIT`] for the access `access_id` to be in this
/// node's state; returns at once if the id is malformed or already there.
async fn wait_for_access(shared: &Shared, access_id: &[u8]) -> Result<(), Status> {
    let Ok(id) = Digest::from_slice(access_id) else {
        return Ok(());
    };
    let mut blocks = shared.blocks.subscribe();
    let deadline = tokio::time::Instant::now() + ACCESS_WAIT;
    loop {
        let found = read_access(&LedgerState(&shared.ledger), &id)
            .map_err(|err| internal("state read failed", err))?
            .is_some();
        if found || tokio::time::Instant::now() >= deadline {
            return Ok(());
        }
        let next = tokio::time::timeout(Duration::from_millis(100), blocks.recv()).await;
        if let Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) = next {
            return Err(errors::unavailable(
                "the node is shutting down",
                errors::RETRY_AFTER_DEFAULT,
            ));
        }
    }
}

/// Makes sure `cid` is stored here, fetching it from `holder`'s node (with
/// this node's certificate and the same access id) if needed.
pub async fn ensure_local(
    shared: &Shared,
    cid: &Cid,
    holder: &str,
    access_id: &[u8],
) -> Result<(), Status> {
    let blobs = shared.blobs.clone();
    if blobs.store.stat(cid).map_err(status_from_blob)?.is_some() {
        return Ok(());
    }
    let Some((address, tls)) = blobs.holders.get(holder).cloned() else {
        return Err(errors::failed_precondition(format!(
            "blob {cid} is held by department {holder:?}, and this node has no address for its node"
        )));
    };
    let unavailable = |err: &dyn std::fmt::Display| {
        errors::unavailable(
            format!("fetching blob {cid} from {holder}: {err}"),
            errors::RETRY_AFTER_DEFAULT,
        )
    };
    let channel = Endpoint::from_shared(address.clone())
        .map_err(|err| unavailable(&err))?
        .tls_config(tls)
        .map_err(|err| unavailable(&err))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|err| unavailable(&err))?;
    let mut client = BlobServiceClient::new(channel)
        .max_decoding_message_size(BLOB_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(BLOB_MESSAGE_BYTES_MAX);
    let stream = client
        .download(DownloadRequest {
            cid: cid.to_string(),
            offset: 0,
            length: 0,
            access_transaction_id: access_id.to_vec(),
            case_id: Vec::new(),
        })
        .await
        .map_err(|status| {
            // The holder's own reason and details, with who said it.
            errors::Failure::new(
                status.code(),
                errors::reason_of(&status),
                format!("holder {holder} refused blob {cid}: {}", status.message()),
            )
            .meta("holder", holder)
            .status()
        })?
        .into_inner();
    // A download ends cleanly only when the holder sent everything.
    let chunks = Box::pin(tokio_stream::StreamExt::chain(
        tokio_stream::StreamExt::map(stream, |item| item.map(|message| (message.data, false))),
        tokio_stream::once(Ok((Bytes::new(), true))),
    ));
    let limit = blobs.upload_bytes_max;
    store_stream(blobs, (Bytes::new(), false), chunks, limit, Some(*cid))
        .await
        .map_err(|status| {
            if status.code() == tonic::Code::InvalidArgument {
                errors::data_loss(format!(
                    "holder {holder} sent bytes that do not match {cid}; nothing was kept"
                ))
            } else {
                status
            }
        })?;
    info!(%cid, holder, "fetched a blob from its holder");
    Ok(())
}

#[derive(Clone)]
pub struct BlobApi {
    pub shared: Arc<Shared>,
}

impl BlobApi {
    /// Releases `cid` as a document of case `case_id` when the case's
    /// definition lets `caller`'s department read it
    /// (`exec::approval::documents`); logs the release.
    fn release_case_document(
        &self,
        caller: &TlsIdentity,
        case_id: &[u8],
        cid: &str,
    ) -> Result<(), Status> {
        let id = Digest::from_slice(case_id).map_err(|_| {
            errors::invalid_field(
                "case_id",
                format!("case_id is {} bytes; a case id is 32", case_id.len()),
            )
        })?;
        let state = LedgerState(&self.shared.ledger);
        let read_failed = |err| internal("state read failed", err);
        let case = read_case(&state, &id)
            .map_err(read_failed)?
            .ok_or_else(|| {
                errors::not_found("case", &id.to_hex(), format!("no case {}", id.to_hex()))
            })?;
        let definition = read_definition(&state, &case.workflow_id, case.workflow_version)
            .map_err(read_failed)?
            .ok_or_else(|| internal("case without its definition", &case.workflow_id))?;
        let first_case = document_case(&state, cid).map_err(read_failed)?;
        match readable_document(
            &case,
            &definition,
            first_case.as_ref().map(|id| id.as_bytes().as_slice()),
            &caller.department,
            cid,
        ) {
            Ok(name) => {
                info!(department = %caller.department, case = %id.short(), document = %name, %cid, "releasing a case document");
                Ok(())
            }
            Err(refusal) => {
                info!(department = %caller.department, case = %id.short(), %cid, reason = %refusal, "refused a case document");
                Err(errors::permission_denied(refusal.to_string()))
            }
        }
    }

    /// The Stat rule (`blob_visible_to`): whether the caller's department
    /// may learn that this node stores `cid` and that it is personal.
    fn visible_to(&self, caller: &TlsIdentity, cid: &str) -> Result<bool, Status> {
        blob_visible_to(
            &LedgerState(&self.shared.ledger),
            &caller.department,
            &self.shared.name,
            cid,
            crate::clock::now_ms(),
        )
        .map_err(|err| internal("state read failed", err))
    }
}

impl BlobApi {
    /// The directory's rule for a dataset version's blob: `Ok` to serve it
    /// to the caller, or the refusal, which names the dataset and how to
    /// get access.
    fn release_dataset_blob(
        &self,
        caller: &TlsIdentity,
        cid: &Cid,
        dataset: &str,
    ) -> Result<(), Status> {
        let state = LedgerState(&self.shared.ledger);
        let read_failed = |err| internal("state read failed", err);
        let entry = read_entry(&state, dataset)
            .map_err(read_failed)?
            .ok_or_else(|| internal("dataset version without an entry", dataset))?;
        let grant = read_grant(&state, dataset, &caller.department).map_err(read_failed)?;
        let release = blob_release(
            &entry,
            &caller.department,
            &self.shared.name,
            grant.as_ref(),
        );
        info!(department = %caller.department, %cid, dataset, release = ?release, "dataset blob requested");
        match release {
            Release::Serve => Ok(()),
            Release::GrantRequired { workflow_id } => Err(errors::Failure::new(
                tonic::Code::PermissionDenied,
                ErrorReason::DatasetGrantRequired,
                format!(
                    "blob {cid} is a version of by-request dataset {dataset:?} and department {:?} has no grant for it: request access with `govchain directory request {dataset} --purpose <why>` (an approval case against {:?}'s workflow {workflow_id:?}) and download again once it is approved",
                    caller.department, entry.owner
                ),
            )
            .meta("dataset", dataset)
            .meta("workflow_id", workflow_id)
            .status()),
            Release::NotReleased(why) => Err(errors::Failure::new(
                tonic::Code::PermissionDenied,
                ErrorReason::DatasetNotReleased,
                format!(
                    "blob {cid} is not released to department {:?} here: {why}",
                    caller.department
                ),
            )
            .meta("dataset", dataset)
            .status()),
        }
    }
}

impl BlobApi {
    /// A directory entry's schema blob: served by the owner's node to
    /// every member.
    fn release_schema_blob(
        &self,
        caller: &TlsIdentity,
        cid: &Cid,
        dataset: &str,
    ) -> Result<(), Status> {
        let state = LedgerState(&self.shared.ledger);
        let entry = read_entry(&state, dataset)
            .map_err(|err| internal("state read failed", err))?
            .ok_or_else(|| internal("schema without an entry", dataset))?;
        match schema_release(&entry, &self.shared.name) {
            Release::Serve => {
                info!(department = %caller.department, %cid, dataset, "releasing a dataset's schema");
                Ok(())
            }
            Release::NotReleased(why) | Release::GrantRequired { workflow_id: why } => {
                Err(errors::Failure::new(
                    tonic::Code::PermissionDenied,
                    ErrorReason::DatasetNotReleased,
                    format!("blob {cid} is not released here: {why}"),
                )
                .meta("dataset", dataset)
                .status())
            }
        }
    }
}

#[tonic::async_trait]
impl BlobService for BlobApi {
    async fn upload(
        &self,
        request: Request<Streaming<UploadRequest>>,
    ) -> Result<Response<UploadResponse>, Status> {
        let caller = department_caller(&request)?;
        // Held until the upload ends, however it ends.
        let _slot = self.shared.uploads.open(&caller.department)?;
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| errors::invalid_argument("empty upload: send a header first"))?;
        let header = first.header.ok_or_else(|| {
            errors::invalid_argument("the first upload message must carry the header")
        })?;
        let blobs = self.shared.blobs.clone();
        let limit = match header.size_limit_bytes {
            0 => blobs.upload_bytes_max,
            asked => asked.min(blobs.upload_bytes_max),
        };
        let expected = match header.expected_cid.as_str() {
            "" => None,
            text => Some(parse_cid(text)?),
        };
        let chunks = Box::pin(tokio_stream::StreamExt::map(stream, |item| {
            let message = item?;
            if message.header.is_some() {
                return Err(errors::invalid_argument(
                    "only the first upload message may carry a header",
                ));
            }
            Ok((message.data, message.finish))
        }));
        let receipt_for = header.receipt_for_citizen;
        if !receipt_for.is_empty() {
            // Refused before the bytes are read, not after.
            PublicKey::from_slice(&receipt_for).map_err(|err| {
                errors::invalid_argument(format!("receipt_for_citizen is not a citizen key: {err}"))
            })?;
            if blobs.receipts.is_none() {
                return Err(observer_holds_no_citizen_blobs());
            }
        }
        let info = store_stream(
            blobs.clone(),
            (first.data, first.finish),
            chunks,
            limit,
            expected,
        )
        .await?;
        let holder_receipt = if receipt_for.is_empty() {
            Vec::new()
        } else {
            blobs.receipt(&receipt_for, &info.cid, info.size_bytes)?
        };
        info!(cid = %info.cid, bytes = info.size_bytes, receipt = !holder_receipt.is_empty(), "stored an uploaded blob");
        Ok(Response::new(UploadResponse {
            cid: info.cid.to_string(),
            size_bytes: info.size_bytes,
            holder_receipt,
        }))
    }

    type DownloadStream = ChunkStream;

    async fn download(
        &self,
        request: Request<DownloadRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let caller = department_caller(&request)?;
        let request = request.into_inner();
        let cid = parse_cid(&request.cid)?;
        let state = LedgerState(&self.shared.ledger);
        let read_failed = |err| internal("state read failed", err);
        // The Stat rule first, with Stat's answer: a department that may not
        // learn that a personal blob exists must not learn it from which
        // refusal Download gives either.
        let visible = self.visible_to(&caller, &request.cid)?;
        // One refusal for "not a declared attribute, and not yours" and
        // "a citizen's blob you may not know of", whether or not it is stored.
        let not_released = || {
            errors::permission_denied(format!(
                "blob {cid} is not released to department {:?} here: blobs no attribute names are read only by {:?}, whose node this is, and a citizen's attribute only under a recorded access (IdentityService.ReadAttribute)",
                caller.department, self.shared.name
            ))
        };
        if !visible {
            info!(department = %caller.department, %cid, "refused a download of a blob this department may not know of");
            return Err(not_released());
        }
        let personal = blob_reference(&state, &request.cid).map_err(read_failed)?;
        if personal.is_none() && blob_is_personal(&state, &request.cid).map_err(read_failed)? {
            return Err(errors::permission_denied(format!(
                "blob {cid} held a citizen's attribute value that was replaced; it is not released"
            )));
        }
        if personal.is_none() && caller.department != self.shared.name {
            // A dataset version's batch and a schema go by the directory's
            // rule only, whatever case names them (a request case could
            // name the very batch it asks for); a case document by the
            // case's rule; any other upload no attribute names yet (a
            // declaration pending, or refused) may be a citizen's sealed
            // value too.
            match blob_dataset(&state, &request.cid).map_err(read_failed)? {
                Some(dataset) => self.release_dataset_blob(&caller, &cid, &dataset)?,
                None => match schema_dataset(&state, &request.cid).map_err(read_failed)? {
                    Some(dataset) => self.release_schema_blob(&caller, &cid, &dataset)?,
                    None if !request.case_id.is_empty() => {
                        self.release_case_document(&caller, &request.case_id, &request.cid)?;
                    }
                    None => return Err(not_released()),
                },
            }
        }
        if let Some((citizen, name)) = personal {
            let authorized = match wait_for_access(&self.shared, &request.access_transaction_id)
                .await
            {
                Ok(()) => {
                    authorize_personal(&self.shared, &caller, &cid, &request.access_transaction_id)
                }
                Err(status) => Err(status),
            };
            // Every release and refusal of a citizen's blob is logged, by
            // department and CID, never with the value.
            match &authorized {
                Ok(_) => {
                    info!(department = %caller.department, %cid, citizen = %citizen.to_did_key(), attribute = %name, "releasing a citizen's attribute blob under a recorded access");
                }
                Err(status) => {
                    info!(department = %caller.department, %cid, citizen = %citizen.to_did_key(), attribute = %name, reason = %status.message(), "refused a download of a citizen's attribute blob");
                }
            }
            authorized?;
            let holder = read_attribute(&state, &citizen, &name)
                .map_err(|err| internal("state read failed", err))?
                .map(|attribute| attribute.holder)
                .unwrap_or_default();
            if holder != self.shared.name {
                ensure_local(&self.shared, &cid, &holder, &request.access_transaction_id).await?;
            }
        }
        let stream = stream_blob(
            self.shared.blobs.clone(),
            cid,
            request.offset,
            request.length,
        )?;
        Ok(Response::new(stream))
    }

    async fn stat(&self, request: Request<StatRequest>) -> Result<Response<StatResponse>, Status> {
        let caller = department_caller(&request)?;
        let request = request.into_inner();
        let cid = parse_cid(&request.cid)?;
        let state = LedgerState(&self.shared.ledger);
        let read_failed = |err| internal("state read failed", err);
        // One answer for "not here" and "not yours to know about", so that
        // Stat reveals neither that a personal blob exists nor that it is
        // personal.
        let not_found =
            || errors::not_found_plain(format!("blob {cid} is not stored on this node"));
        let visible = self.visible_to(&caller, &request.cid)?;
        if !visible {
            return Err(not_found());
        }
        let info = self
            .shared
            .blobs
            .store
            .stat(&cid)
            .map_err(status_from_blob)?
            .ok_or_else(not_found)?;
        let personal = blob_is_personal(&state, &request.cid).map_err(read_failed)?;
        Ok(Response::new(StatResponse {
            cid: cid.to_string(),
            size_bytes: info.size_bytes,
            personal,
        }))
    }
}
