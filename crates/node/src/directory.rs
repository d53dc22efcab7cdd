//! `DirectoryService`: reads of the data resource directory. The rules and
//! the state are `exec::directory`'s; this module only authenticates the
//! caller and pages. The directory is visible to every consortium member.

use govchain_exec::directory::{
    entries_page, entry_matches, grants_page, read_entry, version_count, versions_page,
};
use govchain_proto::directory::v1::directory_service_server::DirectoryService;
use govchain_proto::directory::v1::{
    GetDatasetRequest, GetDatasetResponse, ListGrantsRequest, ListGrantsResponse,
    SearchDatasetsRequest, SearchDatasetsResponse,
};
use govchain_proto::types::v1::DatasetEntry;
use tonic::{Request, Response, Status};

use crate::chain_state::LedgerState;
use crate::errors;
use crate::errors::{echo, internal};
use crate::shared::Shared;
use crate::tls::department_caller;

/// Results per page when the request names no size, and the most.
pub const DIRECTORY_PAGE_SIZE_DEFAULT: u32 = 100;
pub const DIRECTORY_PAGE_SIZE_MAX: u32 = 1_000;
/// Directory entries read per result asked for: bounds the scan of one
/// search page (at most 10,000 entries) whatever the keywords.
pub const DIRECTORY_SCANNED_PER_PAGE_ENTRY: u64 = 10;
/// Longest search query.
pub const QUERY_BYTES_MAX: usize = 256;

#[derive(Clone)]
pub struct DirectoryApi {
    shared: std::sync::Arc<Shared>,
}

impl DirectoryApi {
    pub fn new(shared: std::sync::Arc<Shared>) -> Self {
        Self { shared }
    }
}

fn state_error(err: govchain_exec::StateError) -> Status {
    internal("state read failed", err)
}

/// The page size and the number the page starts at (a token this service
/// issued: a decimal number from 1), or `None` for the first page.
fn page_request(page_size: u32, page_token: &str) -> Result<(Option<u64>, usize), Status> {
    let size = match page_size {
        0 => DIRECTORY_PAGE_SIZE_DEFAULT,
        size => size.min(DIRECTORY_PAGE_SIZE_MAX),
    };
    if page_token.is_empty() {
        return Ok((None, size as usize));
    }
    let first = page_token
        .parse::<u64>()
        .ok()
        .filter(|first| *first >= 1)
        .ok_or_else(|| {
            errors::invalid_field(
                "page_token",
                format!(
                    "page_token {} was not issued by this service; pass a next_page_token from \
                     a previous response, or none for the first page",
                    echo(page_token)
                ),
            )
        })?;
    Ok((Some(first), size as usize))
}

fn token(next: Option<u64>) -> String {
    next.map(|n| n.to_string()).unwrap_or_default()
}

fn require_entry(state: &LedgerState<'_>, dataset: &str) -> Result<DatasetEntry, Status> {
    read_entry(state, dataset)
        .map_err(state_error)?
        .ok_or_else(|| {
            errors::not_found(
                "dataset",
                dataset,
                format!(
                    "dataset {} has no directory entry; search with `govchain directory search`",
                    echo(dataset)
                ),
            )
        })
}

#[tonic::async_trait]
impl DirectoryService for DirectoryApi {
    async fn search_datasets(
        &self,
        request: Request<SearchDatasetsRequest>,
    ) -> Result<Response<SearchDatasetsResponse>, Status> {
        department_caller(&request)?;
        let request = request.into_inner();
        if request.query.len() > QUERY_BYTES_MAX {
            return Err(errors::invalid_field(
                "query",
                format!(
                    "query is {} bytes, at most {QUERY_BYTES_MAX}",
                    request.query.len()
                ),
            ));
        }
        let (first, limit) = page_request(request.page_size, &request.page_token)?;
        let scanned_max = DIRECTORY_SCANNED_PER_PAGE_ENTRY.saturating_mul(limit as u64);
        let keep = |entry: &DatasetEntry| {
            (request.owner.is_empty() || entry.owner == request.owner)
                && entry_matches(entry, &request.query)
        };
        let state = LedgerState(&self.shared.ledger);
        let (datasets, next) = entries_page(&state, first.unwrap_or(1), limit, scanned_max, keep)
            .map_err(state_error)?;
        Ok(Response::new(SearchDatasetsResponse {
            datasets,
            next_page_token: token(next),
        }))
    }

    async fn get_dataset(
        &self,
        request: Request<GetDatasetRequest>,
    ) -> Result<Response<GetDatasetResponse>, Status> {
        department_caller(&request)?;
        let request = request.into_inner();
        let (from, limit) = page_request(request.page_size, &request.page_token)?;
        let state = LedgerState(&self.shared.ledger);
        let entry = require_entry(&state, &request.dataset)?;
        let count = version_count(&state, &request.dataset).map_err(state_error)?;
        let (versions, next) =
            versions_page(&state, &request.dataset, from, limit).map_err(state_error)?;
        Ok(Response::new(GetDatasetResponse {
            entry: Some(entry),
            versions,
            version_count: count,
            next_page_token: token(next),
        }))
    }

    async fn list_grants(
        &self,
        request: Request<ListGrantsRequest>,
    ) -> Result<Response<ListGrantsResponse>, Status> {
        department_caller(&request)?;
        let request = request.into_inner();
        let (first, limit) = page_request(request.page_size, &request.page_token)?;
        let state = LedgerState(&self.shared.ledger);
        require_entry(&state, &request.dataset)?;
        let (grants, next) =
            grants_page(&state, &request.dataset, first.unwrap_or(1), limit, |g| {
                request.grantee.is_empty() || g.grantee == request.grantee
            })
            .map_err(state_error)?;
        Ok(Response::new(ListGrantsResponse {
            grants,
            next_page_token: token(next),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_requests_default_cap_and_refuse_foreign_tokens() {
        assert_eq!(page_request(0, "").expect("first page"), (None, 100));
        assert_eq!(
            page_request(50_000, "7").expect("later page"),
            (Some(7), 1000)
        );
        for token in ["0", "x", "-3"] {
            let status = page_request(10, token).expect_err("refused");
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{token}");
        }
    }
}
