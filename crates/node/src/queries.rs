//! History and listings: the reads behind `ListAnchors` and
//! `ListTransactions` ([`list`]) over the query index the driver writes
//! (the `query_index` module).

use govchain_crypto::PublicKey;
use govchain_exec::Departments;
use govchain_proto::node::v1::{ChainPosition, CommittedTransaction};
use govchain_proto::types::v1::{CommittedBlock, Transaction};
use prost::Message as _;
use tonic::Status;

use crate::errors;
pub use crate::query_index::Listing;
use crate::query_index::{TIME, position_of};
use crate::shared::Shared;

/// Entries one page holds at most, and when the request names no size.
pub const PAGE_SIZE_MAX: u32 = 1_000;
pub const PAGE_SIZE_DEFAULT: u32 = 100;
/// Encoded bytes of the entries of one page at most: a page ends early
/// rather than pass the 4 MiB a default gRPC client receives.
pub const PAGE_BYTES_MAX: usize = 3 * 1024 * 1024;
/// Stored block bytes one page reads and decodes at most: entries sit in
/// whole blocks, so a page of entries from a thousand large blocks would
/// otherwise decode gigabytes. A page ends early (with a token) past it.
pub const PAGE_READ_BYTES_MAX: usize = 64 * 1024 * 1024;

/// One page of `listing`: the transactions, and the token of the next page
/// (empty after the last).
pub fn list(
    shared: &Shared,
    listing: &Listing,
    page_size: u32,
    page_token: &str,
) -> Result<(Vec<CommittedTransaction>, String), Status> {
    if page_size > PAGE_SIZE_MAX {
        return Err(errors::invalid_field(
            "page_size",
            format!("page_size {page_size} is above {PAGE_SIZE_MAX} (PAGE_SIZE_MAX)"),
        ));
    }
    let size = if page_size == 0 {
        PAGE_SIZE_DEFAULT
    } else {
        page_size
    } as usize;
    let prefix = listing.prefix();
    let after = if page_token.is_empty() {
        match listing {
            // Just before the first key at `from_ms`.
            Listing::Time { from_ms, .. } if *from_ms > 0 => {
                let mut start = vec![TIME];
                start.extend_from_slice(&(from_ms - 1).to_be_bytes());
                start.extend_from_slice(&[0xff; 12]);
                Some(start)
            }
            _ => None,
        }
    } else {
        let token = hex::decode(page_token).ok().filter(|t| {
            // A whole key of this listing; in a time range, not before it.
            let in_range = match listing {
                Listing::Time { from_ms, .. } => t
                    .get(1..9)
                    .and_then(|time| time.try_into().ok())
                    .is_some_and(|time| u64::from_be_bytes(time) >= *from_ms),
                _ => true,
            };
            t.starts_with(&prefix) && t.len() >= prefix.len() + 12 && in_range
        });
        Some(token.ok_or_else(|| {
            errors::invalid_field(
                "page_token",
                "page_token is not one this listing returned; pass next_page_token as it came, with the same request",
            )
        })?)
    };
    // One more than a page, to know whether another follows.
    let mut found = shared
        .ledger
        .query(&prefix, after.as_deref(), size + 1)
        .map_err(|e| crate::errors::internal("query index read failed", e))?;
    if let Listing::Time { to_ms, .. } = listing
        && *to_ms > 0
    {
        found.retain(|key| {
            key.get(1..9)
                .and_then(|t| t.try_into().ok())
                .is_some_and(|t| u64::from_be_bytes(t) < *to_ms)
        });
    }
    let mut transactions = Vec::with_capacity(found.len().min(size));
    let mut bytes = 0usize;
    let mut last_key: Option<&Vec<u8>> = None;
    let mut block: Option<CommittedBlock> = None;
    let mut read = 0usize;
    for key in found.iter().take(size) {
        let (height, index) = position_of(key)
            .ok_or_else(|| crate::errors::internal("query index key too short", key.len()))?;
        if block
            .as_ref()
            .and_then(|b| b.header.as_ref())
            .is_none_or(|h| h.height != height)
        {
            if !transactions.is_empty() && read >= PAGE_READ_BYTES_MAX {
                break;
            }
            let (next, stored) = committed_block(shared, height)?;
            read += stored;
            block = Some(next);
        }
        let Some(block) = &block else { continue };
        let entry = entry(block, index, &shared.departments())?;
        let size = entry.encoded_len();
        // The answer stays under what a default client receives.
        if !transactions.is_empty() && bytes + size > PAGE_BYTES_MAX {
            break;
        }
        bytes += size;
        transactions.push(entry);
        last_key = Some(key);
    }
    let more = found.len() > transactions.len();
    let next_page_token = match last_key {
        Some(key) if more => hex::encode(key),
        _ => String::new(),
    };
    Ok((transactions, next_page_token))
}

/// The block at `height`, and its stored size in bytes.
fn committed_block(shared: &Shared, height: u64) -> Result<(CommittedBlock, usize), Status> {
    let bytes = shared
        .ledger
        .block_by_height(height)
        .map_err(crate::errors::ledger_read)?
        .ok_or_else(|| crate::errors::internal("indexed block missing", height))?;
    let block = CommittedBlock::decode(bytes.as_slice())
        .map_err(|e| crate::errors::internal("stored block does not decode", e))?;
    Ok((block, bytes.len()))
}

fn entry(
    block: &CommittedBlock,
    index: u32,
    departments: &Departments,
) -> Result<CommittedTransaction, Status> {
    let header = block.header.clone().unwrap_or_default();
    let envelope = block
        .block
        .as_ref()
        .and_then(|b| b.transactions.get(index as usize))
        .cloned()
        .ok_or_else(|| crate::errors::internal("indexed transaction missing", index))?;
    let body = Transaction::decode(envelope.payload.as_ref())
        .ok()
        .and_then(|t| t.body);
    let department = PublicKey::from_slice(&envelope.signer)
        .ok()
        .and_then(|key| departments.name_at(&key, header.height).map(str::to_owned))
        .unwrap_or_default();
    Ok(CommittedTransaction {
        position: Some(ChainPosition {
            height: header.height,
            index,
        }),
        transaction_id: govchain_exec::transaction_id(
            &envelope.chain_id,
            &envelope.signer,
            envelope.nonce,
            &envelope.payload,
        )
        .to_vec(),
        block_hash: block.block_hash.clone(),
        block_timestamp_ms: header.timestamp_ms,
        kind: body
            .as_ref()
            .map(govchain_exec::body_kind)
            .unwrap_or_default()
            .to_owned(),
        department,
        result: block.results.get(index as usize).cloned(),
        envelope: Some(envelope),
    })
}
