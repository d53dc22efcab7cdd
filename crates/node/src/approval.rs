//! `ApprovalService`: reads of cases and workflow definitions. The rules
//! (state, who sees a case, the lists) are `exec::approval`'s; this module
//! only authenticates the caller and pages.

use govchain_crypto::{Digest, PublicKey};
use govchain_exec::approval::{
    CaseIndex, case_visible_to, case_waits_for, cases_page, latest_version, read_case,
    read_definition,
};
use govchain_exec::identity::disclosure::{
    CitizenRead, CitizenRequestError, check_citizen_request,
};
use govchain_pki::TlsIdentity;
use govchain_proto::approval::v1::approval_service_server::ApprovalService;
use govchain_proto::approval::v1::{
    GetCaseRequest, GetCaseResponse, GetWorkflowRequest, GetWorkflowResponse, ListCasesRequest,
    ListCasesResponse,
};
use govchain_proto::types::v1::{CaseRecord, CaseState, WorkflowDefinition};
use tonic::{Request, Response, Status};

use crate::chain_state::LedgerState;
use crate::errors;
use crate::errors::internal;
use crate::service::NodeApi;
use crate::shared::Shared;
use crate::tls::department_caller;

/// Cases per page when the request names no size, and the most.
pub const CASES_PAGE_SIZE_DEFAULT: u32 = 100;
pub const CASES_PAGE_SIZE_MAX: u32 = 1_000;
/// Index entries read per case asked for: bounds the work of a page whose
/// filter keeps few cases.
pub const CASES_SCANNED_PER_PAGE_ENTRY: u64 = 10;

#[derive(Clone)]
pub struct ApprovalApi {
    node: NodeApi,
}

impl ApprovalApi {
    pub fn new(node: NodeApi) -> Self {
        Self { node }
    }

    fn shared(&self) -> &Shared {
        &self.node.shared
    }
}

/// Who asks: a department, or a citizen (the applicant) by a signed request.
enum Asker<'a> {
    Department(&'a str),
    Applicant(PublicKey),
}

/// The applicant's signed request, when the request carries one.
fn applicant_asker(
    shared: &Shared,
    read: CitizenRead,
    applicant: &PublicKey,
    request_time_ms: u64,
    signature: &[u8],
) -> Result<bool, Status> {
    match (request_time_ms, signature.is_empty()) {
        (0, true) => return Ok(false),
        (0, false) | (_, true) => {
            return Err(errors::invalid_argument(
                "give both request_time_ms and citizen_signature for the applicant's own request, \
                 or neither to ask as your department",
            ));
        }
        _ => {}
    }
    check_citizen_request(
        shared.chain_id(),
        read,
        applicant,
        request_time_ms,
        signature,
        crate::clock::now_ms(),
    )
    .map_err(|err| match err {
        CitizenRequestError::BadSignature { .. } => errors::unauthenticated(err.to_string()),
        CitizenRequestError::OutsideWindow { .. } => errors::failed_precondition(err.to_string()),
        _ => errors::invalid_argument(err.to_string()),
    })?;
    Ok(true)
}

fn state_error(err: govchain_exec::StateError) -> Status {
    internal("state read failed", err)
}

fn definition_of(state: &LedgerState<'_>, case: &CaseRecord) -> Result<WorkflowDefinition, Status> {
    read_definition(state, &case.workflow_id, case.workflow_version)
        .map_err(state_error)?
        .ok_or_else(|| {
            internal(
                "case without its definition",
                format!("{} v{}", case.workflow_id, case.workflow_version),
            )
        })
}

fn page_request(page_size: u32, page_token: &str) -> Result<(u64, usize), Status> {
    let size = match page_size {
        0 => CASES_PAGE_SIZE_DEFAULT,
        size => size.min(CASES_PAGE_SIZE_MAX),
    };
    let first = if page_token.is_empty() {
        1
    } else {
        page_token
            .parse::<u64>()
            .ok()
            .filter(|first| *first >= 1)
            .ok_or_else(|| {
                errors::invalid_argument(format!(
                    "page_token {} was not issued by this service; pass a next_page_token from \
                     a previous response, or none for the first page",
                    crate::errors::echo(page_token)
                ))
            })?
    };
    Ok((first, size as usize))
}

/// The list a request reads and who reads it.
fn list_of<'a>(
    shared: &Shared,
    caller: &'a TlsIdentity,
    request: &ListCasesRequest,
) -> Result<(CaseIndex, Asker<'a>), Status> {
    let department = caller.department.as_str();
    if !request.applicant.is_empty() {
        if !request.department.is_empty() {
            return Err(errors::invalid_argument(
                "give applicant or department, not both",
            ));
        }
        let applicant = PublicKey::from_slice(&request.applicant)
            .map_err(|err| errors::invalid_argument(format!("applicant: {err}")))?;
        let signed = applicant_asker(
            shared,
            CitizenRead::ListCases,
            &applicant,
            request.request_time_ms,
            &request.citizen_signature,
        )?;
        let own_key = shared
            .departments()
            .by_name(department)
            .is_some_and(|d| d.public_key == applicant);
        if !signed && !own_key {
            return Err(errors::permission_denied(format!(
                "department {department:?} may list by applicant only its own cases; a citizen's \
                 list needs the citizen's signed request (request_time_ms, citizen_signature)"
            )));
        }
        let asker = if signed {
            Asker::Applicant(applicant)
        } else {
            Asker::Department(department)
        };
        return Ok((CaseIndex::Applicant(applicant), asker));
    }
    if !request.department.is_empty() && request.department != department {
        return Err(errors::permission_denied(format!(
            "department {department:?} may list only its own cases, not {}'s",
            crate::errors::echo(&request.department)
        )));
    }
    let index = if request.department.is_empty() && !request.workflow_id.is_empty() {
        CaseIndex::Workflow(request.workflow_id.clone())
    } else {
        CaseIndex::Department(department.to_owned())
    };
    Ok((index, Asker::Department(department)))
}

#[tonic::async_trait]
impl ApprovalService for ApprovalApi {
    async fn get_case(
        &self,
        request: Request<GetCaseRequest>,
    ) -> Result<Response<GetCaseResponse>, Status> {
        let caller = department_caller(&request)?;
        let request = request.into_inner();
        let id = Digest::from_slice(&request.case_id)
            .map_err(|err| errors::invalid_argument(format!("case_id: {err}")))?;
        let shared = self.shared();
        let state = LedgerState(&shared.ledger);
        let case = read_case(&state, &id)
            .map_err(state_error)?
            .ok_or_else(|| errors::not_found_plain(format!("no case {}", id.to_hex())))?;
        let applicant = PublicKey::from_slice(&case.applicant)
            .map_err(|err| internal("case applicant", err))?;
        let signed = applicant_asker(
            shared,
            CitizenRead::GetCase,
            &applicant,
            request.request_time_ms,
            &request.citizen_signature,
        )?;
        if !signed && !case_visible_to(&case, &caller.department) {
            return Err(errors::permission_denied(format!(
                "department {:?} has no step in case {} and did not apply for it",
                caller.department,
                id.short()
            )));
        }
        let workflow = definition_of(&state, &case)?;
        Ok(Response::new(GetCaseResponse {
            r#case: Some(case),
            workflow: Some(workflow),
        }))
    }

    async fn list_cases(
        &self,
        request: Request<ListCasesRequest>,
    ) -> Result<Response<ListCasesResponse>, Status> {
        let caller = department_caller(&request)?;
        let request = request.into_inner();
        let shared = self.shared();
        let (index, asker) = list_of(shared, &caller, &request)?;
        let (first, limit) = page_request(request.page_size, &request.page_token)?;
        let state = LedgerState(&shared.ledger);
        let wanted_state = request.state;
        let scanned_max = CASES_SCANNED_PER_PAGE_ENTRY.saturating_mul(limit as u64);
        let keep = |case: &CaseRecord| {
            let visible = match &asker {
                Asker::Department(department) => case_visible_to(case, department),
                Asker::Applicant(key) => case.applicant == key.as_bytes(),
            };
            let in_state =
                wanted_state == CaseState::Unspecified as i32 || case.state == wanted_state;
            let of_workflow =
                request.workflow_id.is_empty() || case.workflow_id == request.workflow_id;
            let waiting = request.waiting_department.is_empty()
                || case_waits_for(case, &request.waiting_department);
            visible && in_state && of_workflow && waiting
        };
        let (cases, next) =
            cases_page(&state, &index, first, limit, scanned_max, keep).map_err(state_error)?;
        Ok(Response::new(ListCasesResponse {
            cases,
            next_page_token: next.map(|n| n.to_string()).unwrap_or_default(),
        }))
    }

    async fn get_workflow(
        &self,
        request: Request<GetWorkflowRequest>,
    ) -> Result<Response<GetWorkflowResponse>, Status> {
        department_caller(&request)?;
        let request = request.into_inner();
        let state = LedgerState(&self.shared().ledger);
        let version = match request.version {
            0 => latest_version(&state, &request.workflow_id).map_err(state_error)?,
            version => version,
        };
        let workflow = read_definition(&state, &request.workflow_id, version)
            .map_err(state_error)?
            .ok_or_else(|| {
                errors::not_found_plain(format!(
                    "no workflow {} version {version}",
                    crate::errors::echo(&request.workflow_id)
                ))
            })?;
        Ok(Response::new(GetWorkflowResponse {
            workflow: Some(workflow),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_requests_default_cap_and_refuse_foreign_tokens() {
        assert_eq!(page_request(0, "").expect("first page"), (1, 100));
        assert_eq!(page_request(50_000, "7").expect("later page"), (7, 1000));
        for token in ["0", "x", "-3"] {
            let status = page_request(10, token).expect_err("refused");
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{token}");
        }
    }
}
