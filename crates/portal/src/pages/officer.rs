//! The officers' approval inbox: the open cases waiting for the officer's
//! department and role, a case with its steps, documents and history, and
//! the decisions (approve, reject with a reason, return), each signed on
//! the officer's device (`signing::ask_device`), so that the department's
//! node never holds officers' keys.
//!
//! RPCs: `ApprovalService.ListCases` (`waiting_department`) and `GetCase`,
//! as the portal's department.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use govchain_proto::approval::v1::{GetCaseRequest, GetCaseResponse, ListCasesRequest};
use govchain_proto::blob::v1::DownloadRequest;
use govchain_proto::types::v1::{CaseRecord, CaseState, StepState};
use maud::{Markup, html};
use tokio_stream::StreamExt as _;
use tracing::info;

use super::{ErrorPage, Frame, csrf_field, format_time, layout, short_hex};
use crate::AppState;
use crate::login::{CsrfForm, check_csrf};
use crate::request::{CaseVerb, SignAction, valid_purpose};
use crate::sessions::{Officer, Session};

/// Cases on one page of the inbox.
pub const INBOX_CASES_MAX: u32 = 100;

/// The officer of the session, if an officer is logged in.
fn officer_session(portal: &crate::Portal, headers: &HeaderMap) -> Option<(Session, Officer)> {
    let session = portal.sessions.get(headers)?;
    let officer = session.officer.clone()?;
    Some((session, officer))
}

/// Where a visitor who is not a logged-in officer goes.
fn to_officer_login() -> Response {
    Redirect::to("/login?as=officer").into_response()
}

/// The steps of `case` that wait for this officer: ready, of the
/// department, and of the officer's role.
fn steps_for<'a>(case: &'a CaseRecord, department: &str, role: &str) -> Vec<&'a str> {
    case.steps
        .iter()
        .filter(|step| {
            step.state == StepState::Ready as i32
                && step.department == department
                && step.role == role
        })
        .map(|step| step.step_id.as_str())
        .collect()
}

/// Whether the case has a step of this department and role, in any state.
fn has_step(case: &CaseRecord, department: &str, role: &str) -> bool {
    case.steps
        .iter()
        .any(|step| step.department == department && step.role == role)
}

/// The officer and the case, for what only an officer whose role has a
/// step in the case may read (its documents, its bundle); `None` when no
/// officer is logged in.
async fn officer_with_step(
    portal: &crate::Portal,
    headers: &HeaderMap,
    id: &str,
) -> Result<Option<(Officer, [u8; 32], CaseRecord)>, ErrorPage> {
    let Some((_, officer)) = officer_session(portal, headers) else {
        return Ok(None);
    };
    let department = &portal.config.department;
    let (case_id, found) = read_case(portal, id).await?;
    let case = found.case.unwrap_or_default();
    if !has_step(&case, department, &officer.role) {
        return Err(ErrorPage::new(
            StatusCode::FORBIDDEN,
            department,
            "Your role has no step in this case, so its documents and evidence are not yours to read.",
        ));
    }
    Ok(Some((officer, case_id, case)))
}

/// A document name as a download file name: letters, digits, '-', '_'
/// and '.' only.
fn file_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .take(64)
        .collect();
    if cleaned.is_empty() || cleaned.starts_with('.') {
        format!("document{cleaned}")
    } else {
        cleaned
    }
}

/// `GET /officer/case/{id}/document/{index}`: one of the case's documents,
/// streamed from this node's blob store as the node releases it to the
/// department (`BlobService.Download` with the case id), for an officer
/// whose role has a step in the case. Each read is logged with the
/// officer's key.
pub async fn document(
    State(portal): State<AppState>,
    Path((id, index)): Path<(String, usize)>,
    headers: HeaderMap,
) -> Result<Response, ErrorPage> {
    let Some((officer, case_id, case)) = officer_with_step(&portal, &headers, &id).await? else {
        return Ok(to_officer_login());
    };
    let department = &portal.config.department;
    let document = case.documents.get(index).cloned().ok_or_else(|| {
        ErrorPage::new(
            StatusCode::NOT_FOUND,
            department,
            "The case has no such document.",
        )
    })?;
    let stream = portal
        .node
        .blob()
        .download(DownloadRequest {
            cid: document.cid.clone(),
            case_id: case_id.to_vec(),
            ..DownloadRequest::default()
        })
        .await
        .map_err(|status| ErrorPage::from_status(department, &status))?
        .into_inner();
    info!(officer = %officer.did, case = %&id[..16], document = %document.name, cid = %document.cid, "an officer read a case document");
    let body = axum::body::Body::from_stream(stream.map(|piece| piece.map(|piece| piece.data)));
    let disposition = format!("attachment; filename=\"{}\"", file_name(&document.name));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// `GET /officer/case/{id}/bundle`: the case's evidence bundle
/// (`govchain-case-bundle/1`), collected from this node for an officer
/// whose role has a step in the case. The node is not trusted: the reader
/// checks the bundle with `govchain verify`.
pub async fn bundle(
    State(portal): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ErrorPage> {
    let Some((officer, case_id, case)) = officer_with_step(&portal, &headers, &id).await? else {
        return Ok(to_officer_login());
    };
    let department = &portal.config.department;
    let case_id = govchain_crypto::Digest::from_bytes(case_id);
    let bundle = govchain_evidence::collect(
        portal.node.channel(),
        &case_id,
        &case,
        &portal.config.genesis,
    )
    .await
    .map_err(|err| match err {
        govchain_evidence::CollectError::Rpc { status, .. } => {
            ErrorPage::from_status(department, &status)
        }
        other => ErrorPage::new(StatusCode::BAD_GATEWAY, department, other.to_string()),
    })?;
    let mut json = serde_json::to_string_pretty(&bundle).map_err(|err| {
        ErrorPage::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            department,
            err.to_string(),
        )
    })?;
    json.push('\n');
    info!(officer = %officer.did, case = %&id[..16], "an officer downloaded a case's evidence bundle");
    let disposition = "attachment; filename=\"case-bundle.json\"".to_owned();
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        json,
    )
        .into_response())
}

/// `GET /officer`: the cases waiting for the officer's role.
pub async fn inbox(
    State(portal): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ErrorPage> {
    let Some((session, officer)) = officer_session(&portal, &headers) else {
        return Ok(to_officer_login());
    };
    let department = &portal.config.department;
    let cases = portal
        .node
        .approval()
        .list_cases(ListCasesRequest {
            waiting_department: department.clone(),
            state: CaseState::Open as i32,
            page_size: INBOX_CASES_MAX,
            ..ListCasesRequest::default()
        })
        .await
        .map_err(|status| ErrorPage::from_status(department, &status))?
        .into_inner()
        .cases;
    let mine: Vec<(&CaseRecord, Vec<&str>)> = cases
        .iter()
        .map(|case| (case, steps_for(case, department, &officer.role)))
        .filter(|(_, steps)| !steps.is_empty())
        .collect();
    let frame = Frame {
        department,
        session: Some(&session),
    };
    let page = layout(
        &frame,
        "Cases waiting for you",
        html! {
            p { "Logged in as " strong { (officer.role) } " of department " (department) ": " code { (officer.did) } }
            @if mine.is_empty() {
                p id="inbox-empty" { "No case waits for your role." }
            } @else {
                table id="inbox-table" {
                    thead { tr { th scope="col" { "Case" } th scope="col" { "Workflow" } th scope="col" { "Opened" } th scope="col" { "Waiting step" } } }
                    tbody {
                        @for (case, steps) in &mine {
                            tr {
                                th scope="row" { a href={ "/officer/case/" (hex::encode(&case.case_id)) } { (short_hex(&case.case_id)) } }
                                td { (case.workflow_id) }
                                td { (format_time(case.opened_ms)) }
                                td { (steps.join(", ")) }
                            }
                        }
                    }
                }
            }
            @let others = cases.len() - mine.len();
            @if others > 0 {
                p { (others) " other open cases wait for other roles of your department." }
            }
        },
    );
    Ok(Html(page.into_string()).into_response())
}

async fn read_case(
    portal: &crate::Portal,
    id: &str,
) -> Result<([u8; 32], GetCaseResponse), ErrorPage> {
    let department = &portal.config.department;
    let case_id: [u8; 32] = hex::decode(id)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| {
            ErrorPage::new(
                StatusCode::BAD_REQUEST,
                department,
                "a case id is 64 hex characters",
            )
        })?;
    let found = portal
        .node
        .approval()
        .get_case(GetCaseRequest {
            case_id: case_id.to_vec(),
            ..GetCaseRequest::default()
        })
        .await
        .map_err(|status| ErrorPage::from_status(department, &status))?
        .into_inner();
    Ok((case_id, found))
}

fn state_text(state: i32) -> &'static str {
    match CaseState::try_from(state) {
        Ok(CaseState::Open) => "Open",
        Ok(CaseState::Returned) => "Returned to the applicant",
        Ok(CaseState::Rejected) => "Rejected",
        Ok(CaseState::Approved) => "Approved",
        _ => "Unknown",
    }
}

fn step_state_text(state: i32) -> &'static str {
    match StepState::try_from(state) {
        Ok(StepState::Blocked) => "Waiting for earlier steps",
        Ok(StepState::Ready) => "Ready",
        Ok(StepState::Approved) => "Approved",
        _ => "Unknown",
    }
}

/// `GET /officer/case/{id}`: a case, its history, and the decisions the
/// officer may take.
pub async fn case(
    State(portal): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ErrorPage> {
    let Some((session, officer)) = officer_session(&portal, &headers) else {
        return Ok(to_officer_login());
    };
    let department = &portal.config.department;
    let (_, found) = read_case(&portal, &id).await?;
    let case = found.case.unwrap_or_default();
    let ready = steps_for(&case, department, &officer.role);
    let may_read = has_step(&case, department, &officer.role);
    let frame = Frame {
        department,
        session: Some(&session),
    };
    let page = layout(
        &frame,
        &format!("Case {}", &id[..16]),
        html! {
            dl class="summary" {
                dt { "Case" } dd { code class="wrap" id="case-id" { (id) } }
                dt { "Workflow" } dd { (case.workflow_id) " version " (case.workflow_version) }
                dt { "State" } dd id="case-state" { (state_text(case.state)) }
                dt { "Applicant" } dd { @if case.applicant_department.is_empty() { "a citizen " } @else { "department " (case.applicant_department) " " } (short_hex(&case.applicant)) }
                dt { "Opened" } dd { (format_time(case.opened_ms)) }
                @if !case.reason.is_empty() { dt { "Last reason" } dd { (case.reason) } }
            }
            h2 { "Steps" }
            table id="steps-table" {
                thead { tr { th scope="col" { "Step" } th scope="col" { "Department" } th scope="col" { "Role" } th scope="col" { "State" } th scope="col" { "Approvals" } } }
                tbody {
                    @for step in &case.steps {
                        tr {
                            th scope="row" { (step.step_id) }
                            td { (step.department) }
                            td { (step.role) }
                            td { (step_state_text(step.state)) }
                            td { (step.approvals.len()) }
                        }
                    }
                }
            }
            h2 { "Documents" }
            @if case.documents.is_empty() {
                p { "The applicant attached no documents." }
            } @else {
                ul id="case-documents" {
                    @for (index, document) in case.documents.iter().enumerate() {
                        li {
                            @if may_read {
                                a href={ "/officer/case/" (id) "/document/" (index) } download { (document.name) }
                            } @else {
                                (document.name)
                            }
                            " " code { (document.cid) }
                        }
                    }
                }
                p { "Each read is released by the node only when the workflow lets your step read the document, and is logged with your key. A document held by another department's node is read with " code { "govchain blob get CID --case " (id) } "." }
            }
            h2 { "Your decision" }
            @if ready.is_empty() {
                p id="no-decision" { "No step of this case waits for your role." }
            } @else {
                @for step in &ready { (decision_form(&session, &id, step)) }
            }
            h2 { "History" }
            (history(&case))
            h2 { "Evidence" }
            p {
                a id="case-bundle" href={ "/officer/case/" (id) "/bundle" } download { "Download the evidence bundle" }
                " (every transaction of the case with its inclusion proof and the commit certificate of its block, as "
                code { "govchain case export" } " writes it). Check it offline, without trusting this node: "
                code { "govchain verify case-bundle.json --genesis genesis.json" } "."
            }
        },
    );
    Ok(Html(page.into_string()).into_response())
}

fn decision_form(session: &Session, id: &str, step: &str) -> Markup {
    html! {
        form method="post" action={ "/officer/case/" (id) "/act" } class="stack decision" {
            (csrf_field(Some(session)))
            input type="hidden" name="step" value=(step);
            fieldset {
                legend { "Step " (step) }
                div { input type="radio" id={ (step) "-approve" } name="verb" value="approve" checked; " " label for={ (step) "-approve" } { "Approve" } }
                div { input type="radio" id={ (step) "-reject" } name="verb" value="reject"; " " label for={ (step) "-reject" } { "Reject" } }
                div { input type="radio" id={ (step) "-return" } name="verb" value="return"; " " label for={ (step) "-return" } { "Return to the applicant" } }
            }
            div {
                label for={ (step) "-reason" } { "Reason (needed to reject or return)" }
                input type="text" id={ (step) "-reason" } name="reason" maxlength="128";
            }
            button type="submit" class="button" { "Sign on my device" }
        }
    }
}

fn history(case: &CaseRecord) -> Markup {
    html! {
        table id="history-table" {
            thead { tr { th scope="col" { "When" } th scope="col" { "Event" } th scope="col" { "Step" } th scope="col" { "By" } th scope="col" { "Reason" } th scope="col" { "Transaction" } } }
            tbody {
                @for event in &case.events {
                    tr {
                        td { (format_time(event.at_ms)) }
                        th scope="row" { (event.kind) }
                        td { (event.step_id) }
                        td { @if event.department.is_empty() { "applicant " } @else { (event.department) " " } (short_hex(&event.signer)) }
                        td { (event.reason) }
                        td { a href={ "/explorer/tx/" (hex::encode(&event.transaction_id)) } { (short_hex(&event.transaction_id)) } }
                    }
                }
            }
        }
    }
}

/// `POST /officer/case/{id}/act`: step, verb, reason → a signing request
/// for the officer's device.
pub async fn act(
    State(portal): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ErrorPage> {
    let department = &portal.config.department;
    let fields: std::collections::HashMap<String, String> =
        form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| fields.get(name).map_or("", String::as_str);
    let form = CsrfForm {
        csrf: field("csrf").to_owned(),
    };
    let session = check_csrf(department, portal.sessions.get(&headers).as_ref(), &form)?;
    let Some(officer) = session.officer.clone() else {
        return Err(ErrorPage::new(
            StatusCode::UNAUTHORIZED,
            department,
            "Log in as an officer first.",
        ));
    };
    let refuse = |message: &str| ErrorPage::new(StatusCode::BAD_REQUEST, department, message);
    let verb = CaseVerb::parse(field("verb"))
        .ok_or_else(|| refuse("Choose approve, reject or return."))?;
    let reason = field("reason").trim().to_owned();
    if verb != CaseVerb::Approve && reason.is_empty() {
        return Err(refuse("Give a reason to reject or return a case."));
    }
    if !(reason.is_empty() || valid_purpose(&reason)) {
        return Err(refuse(
            "Write the reason in at most 128 letters, digits, spaces and - _ . , characters.",
        ));
    }
    let (case_id, found) = read_case(&portal, &id).await?;
    let case = found.case.unwrap_or_default();
    let step = field("step").to_owned();
    if !steps_for(&case, department, &officer.role).contains(&step.as_str()) {
        return Err(ErrorPage::new(
            StatusCode::CONFLICT,
            department,
            format!("Step {step:?} of this case does not wait for your role any more."),
        ));
    }
    let action = SignAction::ActOnCase {
        case_id,
        step,
        verb,
        reason,
    };
    let return_to = format!("/officer/case/{id}");
    crate::signing::ask_device(
        &portal,
        &session,
        &officer.public_key,
        action,
        "Sign your decision",
        &return_to,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_names_become_safe_file_names() {
        assert_eq!(file_name("floor-plan.pdf"), "floor-plan.pdf");
        assert_eq!(file_name("../../etc/passwd"), "document....etcpasswd");
        assert_eq!(file_name("a\"b; c"), "abc");
        assert_eq!(file_name(""), "document");
    }
}
