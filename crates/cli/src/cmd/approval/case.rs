//! `govchain case open|approve|reject|return|override|evaluate|amend|show|list`:
//! applications walked through a workflow's steps by officers' signed
//! actions and automatic steps' rules.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use govchain_crypto::{Digest, PublicKey};
use govchain_exec::approval::{state_name, step_state_name};
use govchain_exec::identity::disclosure::CitizenRead;
use govchain_proto::approval::v1::{
    GetCaseRequest, GetCaseResponse, GetWorkflowRequest, ListCasesRequest, ListCasesResponse,
};
use govchain_proto::types::v1::{
    ActOnCase, AmendCase, CaseAction, CaseDocument, CaseRecord, CaseState, OpenCase,
    WorkflowDefinition, transaction::Body,
};
use serde::Serialize;

use super::{SignedArgs, approval_client};
use crate::client::{ConnectArgs, rpc_error};
use crate::cmd::blob;
use crate::cmd::identity::{Session, Submitted, client_timeout, parse_citizen, print_view};
use crate::cmd::keys::load_signing_key;
use crate::output::{Fields, Table, format_time_ms, time_or_dash};
use crate::view::{did_of, or_dash};

#[derive(Debug, Args)]
pub struct CaseArgs {
    #[command(subcommand)]
    command: CaseCommand,
}

#[derive(Debug, Subcommand)]
enum CaseCommand {
    /// Open a case (an application) against a workflow, with its documents.
    #[command(
        long_about = "Open a case against a workflow definition version, signed by the \
            applicant: a citizen's key (whose identity is on chain) or a department's \
            signing key. Documents are blobs already uploaded (`govchain blob put`), named \
            as the workflow's steps name them. Prints the case id, which is the \
            transaction's id.",
        after_help = "Example:\n  \
            govchain case open --workflow open-restaurant --signing-key alice.key \\\n    \
            --document floor-plan=bafkrei... --dir devnet --department commerce"
    )]
    Open(OpenArgs),
    /// Approve a ready step of a case, as an officer.
    #[command(after_help = "Example:\n  \
            govchain case approve 5f0c...e1 --step fire-inspection --signing-key fire-officer.key \\\n    \
            --dir devnet --department fire")]
    Approve(ActArgs),
    /// Reject a case at a ready step, as an officer; closes the case.
    #[command(after_help = "Example:\n  \
            govchain case reject 5f0c...e1 --step health-inspection --reason \"no hand basin\" \\\n    \
            --signing-key health-officer.key --dir devnet --department health")]
    Reject(ActArgs),
    /// Return a case to the applicant for more information, as an officer.
    #[command(after_help = "Example:\n  \
            govchain case return 5f0c...e1 --step fire-inspection --reason \"send the evacuation plan\" \\\n    \
            --signing-key fire-officer.key --dir devnet --department fire")]
    Return(ActArgs),
    /// Override an automatic step's rule, as an officer of its department.
    #[command(
        long_about = "Settle an automatic step (one decided by its CEL rule) by hand, as an \
            officer of the step's department and role: --approve approves the ready step \
            whatever its rule says (one signature suffices), --reject closes the case as \
            rejected. A reason is required and recorded in the case's history as an \
            override-approve or override-reject event. Refused like any action on a closed \
            case, a step not ready or past its deadline, or by a revoked officer.",
        after_help = "Example:\n  \
            govchain case override 5f0c...e1 --step eligibility --approve \\\n    \
            --reason \"age checked on the paper birth certificate\" \\\n    \
            --signing-key civil-clerk.key --dir devnet --department civil"
    )]
    Override(OverrideArgs),
    /// Have a case's automatic steps evaluated again (e.g. after an attestation).
    #[command(
        long_about = "Evaluate the rules of a case's ready automatic steps again, as the \
            applicant or an officer of one of the case's departments. Rules are evaluated \
            whenever a transaction of the case commits; an attestation of the applicant's \
            attributes is not one, so after it, ask for an evaluation. `case show` prints \
            each automatic step's last outcome.",
        after_help = "Example:\n  \
            govchain case evaluate 5f0c...e1 --step eligibility --signing-key alice.key --dir devnet"
    )]
    Evaluate(EvaluateArgs),
    /// Amend a returned case with new or replaced documents, as the applicant.
    #[command(after_help = "Example:\n  \
            govchain case amend 5f0c...e1 --document evacuation-plan=bafkrei... --signing-key alice.key --dir devnet")]
    Amend(AmendArgs),
    /// Show a case: its state, steps, approvals and history.
    #[command(after_help = "Examples:\n  \
            govchain case show 5f0c...e1 --dir devnet --department fire\n  \
            govchain case show 5f0c...e1 --dir devnet --applicant-key alice.key   # as the applicant")]
    Show(ShowArgs),
    /// List cases a page at a time: the caller's department's by default.
    #[command(
        long_about = "List cases, oldest first: those the connecting department has a step in \
            or applied for (by default), an applicant's (--applicant; a citizen's needs \
            --applicant-key, the citizen's signed request), or a workflow's (--workflow). \
            Filter by --state and by --waiting DEPARTMENT (open cases with a ready step of \
            that department). Prints next_page_token when there is more; --all follows \
            every page.",
        after_help = "Examples:\n  \
            govchain case list --dir devnet --department fire --waiting fire\n  \
            govchain case list --dir devnet --workflow open-restaurant --state approved --json\n  \
            govchain case list --dir devnet --applicant-key alice.key --all"
    )]
    List(ListArgs),
    /// Write a case's evidence bundle: every transaction with its proof, and genesis.
    #[command(
        long_about = "Write a self-contained evidence bundle of a case (JSON, format \
            govchain-case-bundle/1): the workflow's definitions, the registrations of the \
            officers who acted, the applicant's identity and every transaction of the case, \
            each with its signed envelope, its block's header and commit certificate and its \
            RFC 6962 inclusion proof, plus the genesis it is checked against (--genesis, or the \
            devnet's with --dir). The node need not be trusted: the bundle is verified before \
            it is written, and anyone checks it offline with `govchain verify`. Ask as a \
            department the case is visible to, or as its applicant with --applicant-key.",
        after_help = "Examples:\n  \
            govchain case export 5f0c...e1 --out bundle.json --dir devnet --department tax\n  \
            govchain case export 5f0c...e1 --out mine.json --dir devnet --applicant-key alice.key\n  \
            govchain verify bundle.json --genesis devnet/certs/genesis.json"
    )]
    Export(super::export::ExportArgs),
}

/// A document as `NAME=CID`.
pub(crate) fn parse_document(text: &str) -> Result<CaseDocument, String> {
    let (name, cid) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=CID, e.g. floor-plan=bafkrei..."))?;
    Ok(CaseDocument {
        name: name.trim().to_owned(),
        cid: cid.trim().to_owned(),
    })
}

#[derive(Debug, Args)]
struct OpenArgs {
    /// The workflow id.
    #[arg(long, value_name = "WORKFLOW")]
    workflow: String,
    /// The definition version; the latest by default.
    #[arg(long, value_name = "N")]
    version: Option<u64>,
    /// A document, NAME=CID; repeat for each.
    #[arg(long = "document", value_name = "NAME=CID", value_parser = parse_document)]
    documents: Vec<CaseDocument>,
    #[command(flatten)]
    signed: SignedArgs,
}

#[derive(Debug, Args)]
struct ActArgs {
    /// The case id (hex).
    #[arg(value_name = "CASE_ID", value_parser = blob::parse_transaction_id)]
    case: Digest,
    /// The step acted on.
    #[arg(long, value_name = "STEP")]
    step: String,
    /// Why; required to reject or return.
    #[arg(long, value_name = "TEXT", default_value = "")]
    reason: String,
    #[command(flatten)]
    signed: SignedArgs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("outcome").required(true).args(["approve", "reject"])))]
struct OverrideArgs {
    /// The case id (hex).
    #[arg(value_name = "CASE_ID", value_parser = blob::parse_transaction_id)]
    case: Digest,
    /// The automatic step overridden.
    #[arg(long, value_name = "STEP")]
    step: String,
    /// Approve the step.
    #[arg(long)]
    approve: bool,
    /// Reject the case.
    #[arg(long)]
    reject: bool,
    /// Why; required, at most 256 bytes.
    #[arg(long, value_name = "TEXT")]
    reason: String,
    #[command(flatten)]
    signed: SignedArgs,
}

#[derive(Debug, Args)]
struct EvaluateArgs {
    /// The case id (hex).
    #[arg(value_name = "CASE_ID", value_parser = blob::parse_transaction_id)]
    case: Digest,
    /// A ready automatic step of the case (all ready ones are evaluated).
    #[arg(long, value_name = "STEP")]
    step: String,
    #[command(flatten)]
    signed: SignedArgs,
}

#[derive(Debug, Args)]
struct AmendArgs {
    /// The case id (hex).
    #[arg(value_name = "CASE_ID", value_parser = blob::parse_transaction_id)]
    case: Digest,
    /// A document, NAME=CID, new or replacing the one of that name.
    #[arg(long = "document", value_name = "NAME=CID", value_parser = parse_document, required = true)]
    documents: Vec<CaseDocument>,
    #[command(flatten)]
    signed: SignedArgs,
}

#[derive(Debug, Args)]
struct ShowArgs {
    /// The case id (hex).
    #[arg(value_name = "CASE_ID", value_parser = blob::parse_transaction_id)]
    case: Digest,
    /// Ask as the applicant (a citizen), signing the request with this key.
    #[arg(long, value_name = "KEYFILE")]
    applicant_key: Option<PathBuf>,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StateArg {
    Open,
    Returned,
    Rejected,
    Approved,
}

impl StateArg {
    fn proto(self) -> CaseState {
        match self {
            StateArg::Open => CaseState::Open,
            StateArg::Returned => CaseState::Returned,
            StateArg::Rejected => CaseState::Rejected,
            StateArg::Approved => CaseState::Approved,
        }
    }
}

#[derive(Debug, Args)]
struct ListArgs {
    /// The applicant's cases: a did:key or hex key (the connecting
    /// department's own key, or a citizen's with --applicant-key).
    #[arg(long, value_name = "KEY", value_parser = parse_citizen)]
    applicant: Option<PublicKey>,
    /// The applicant's own request, signed with this key (implies
    /// --applicant).
    #[arg(long, value_name = "KEYFILE")]
    applicant_key: Option<PathBuf>,
    /// Only this workflow's cases.
    #[arg(long, value_name = "WORKFLOW")]
    workflow: Option<String>,
    /// Only cases in this state.
    #[arg(long, value_enum)]
    state: Option<StateArg>,
    /// Only open cases with a ready step of this department.
    #[arg(long, value_name = "DEPARTMENT")]
    waiting: Option<String>,
    /// Cases per page (the node caps it at 1,000).
    #[arg(long, value_name = "N", default_value_t = 100)]
    page_size: u32,
    /// A next_page_token from an earlier page.
    #[arg(long, value_name = "TOKEN", default_value = "")]
    page_token: String,
    /// Follow next_page_token to the end.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub async fn run(args: CaseArgs, json: bool) -> anyhow::Result<()> {
    match args.command {
        CaseCommand::Open(args) => open(args, json).await,
        CaseCommand::Approve(args) => act(args, CaseAction::Approve, json).await,
        CaseCommand::Reject(args) => act(args, CaseAction::Reject, json).await,
        CaseCommand::Return(args) => act(args, CaseAction::Return, json).await,
        CaseCommand::Override(args) => {
            let action = if args.approve {
                CaseAction::OverrideApprove
            } else {
                CaseAction::OverrideReject
            };
            let act_args = ActArgs {
                case: args.case,
                step: args.step,
                reason: args.reason,
                signed: args.signed,
            };
            act(act_args, action, json).await
        }
        CaseCommand::Evaluate(args) => {
            let act_args = ActArgs {
                case: args.case,
                step: args.step,
                reason: String::new(),
                signed: args.signed,
            };
            act(act_args, CaseAction::Evaluate, json).await
        }
        CaseCommand::Amend(args) => amend(args, json).await,
        CaseCommand::Show(args) => show(args, json).await,
        CaseCommand::List(args) => list(args, json).await,
        CaseCommand::Export(args) => super::export::export(args, json).await,
    }
}

#[derive(Debug, Serialize)]
struct SubmittedCaseView {
    case_id: String,
    action: String,
    step: String,
    transaction: Submitted,
}

fn print_submitted(view: &SubmittedCaseView, json: bool) -> anyhow::Result<()> {
    let mut fields = Fields::new();
    fields
        .add("case", &view.case_id)
        .add("action", &view.action);
    if !view.step.is_empty() {
        fields.add("step", &view.step);
    }
    view.transaction.add_to(&mut fields);
    print_view(view, &fields, json)
}

async fn open(args: OpenArgs, json: bool) -> anyhow::Result<()> {
    let version = match args.version {
        Some(version) => version,
        None => {
            let session = Session::open(&args.signed.connect, client_timeout()).await?;
            approval_client(session.channel.clone())
                .get_workflow(GetWorkflowRequest {
                    workflow_id: args.workflow.clone(),
                    version: 0,
                })
                .await
                .map_err(rpc_error)?
                .into_inner()
                .workflow
                .unwrap_or_default()
                .version
        }
    };
    let body = Body::OpenCase(OpenCase {
        workflow_id: args.workflow,
        workflow_version: version,
        documents: args.documents,
    });
    let (_, transaction) = args.signed.submit(body, "the case").await?;
    let view = SubmittedCaseView {
        case_id: transaction.id.to_hex(),
        action: format!("open (version {version})"),
        step: String::new(),
        transaction,
    };
    print_submitted(&view, json)
}

async fn act(args: ActArgs, action: CaseAction, json: bool) -> anyhow::Result<()> {
    let name = crate::view::action_name(action.into());
    let body = Body::ActOnCase(ActOnCase {
        case_id: args.case.to_vec(),
        step_id: args.step.clone(),
        action: action.into(),
        reason: args.reason,
    });
    let (_, transaction) = args.signed.submit(body, &format!("the {name}")).await?;
    let view = SubmittedCaseView {
        case_id: args.case.to_hex(),
        action: name.to_owned(),
        step: args.step,
        transaction,
    };
    print_submitted(&view, json)
}

async fn amend(args: AmendArgs, json: bool) -> anyhow::Result<()> {
    let body = Body::AmendCase(AmendCase {
        case_id: args.case.to_vec(),
        documents: args.documents,
    });
    let (_, transaction) = args.signed.submit(body, "the amendment").await?;
    let view = SubmittedCaseView {
        case_id: args.case.to_hex(),
        action: "amend".into(),
        step: String::new(),
        transaction,
    };
    print_submitted(&view, json)
}

/// A case as `case show --json` and `case list --json` print it.
#[derive(Debug, Serialize)]
struct CaseView {
    case_id: String,
    workflow_id: String,
    workflow_version: u64,
    applicant: String,
    applicant_department: String,
    state: &'static str,
    reason: String,
    opened: String,
    updated: String,
    documents: Vec<String>,
    departments: Vec<String>,
    steps: Vec<CaseStepView>,
    events: Vec<EventView>,
}

#[derive(Debug, Serialize)]
struct CaseStepView {
    step_id: String,
    department: String,
    role: String,
    state: &'static str,
    approvals_required: u32,
    approvals: Vec<String>,
    ready: String,
    /// Unix ms; 0 for none.
    deadline_ms: u64,
    deadline: String,
    /// An automatic step's CEL rule; empty for an officer step.
    rule: String,
    /// Its last evaluation: "true", "false" or "error: ..."; empty before.
    rule_outcome: String,
    /// The height of that evaluation; 0 before.
    evaluated_height: u64,
}

#[derive(Debug, Serialize)]
struct EventView {
    kind: String,
    step_id: String,
    signer: String,
    department: String,
    reason: String,
    at: String,
    height: u64,
    transaction_id: String,
}

impl CaseView {
    fn new(case: &CaseRecord, definition: Option<&WorkflowDefinition>) -> Self {
        let defined = |i: usize| definition.and_then(|d| d.steps.get(i));
        Self {
            case_id: hex::encode(&case.case_id),
            workflow_id: case.workflow_id.clone(),
            workflow_version: case.workflow_version,
            applicant: did_of(&case.applicant),
            applicant_department: case.applicant_department.clone(),
            state: state_name(case.state),
            reason: case.reason.clone(),
            opened: format_time_ms(case.opened_ms),
            updated: format_time_ms(case.updated_ms),
            documents: case
                .documents
                .iter()
                .map(|d| format!("{}={}", d.name, d.cid))
                .collect(),
            departments: case.departments.clone(),
            steps: case
                .steps
                .iter()
                .enumerate()
                .map(|(i, step)| CaseStepView {
                    step_id: step.step_id.clone(),
                    department: step.department.clone(),
                    role: step.role.clone(),
                    state: step_state_name(step.state),
                    approvals_required: defined(i).map_or(0, |d| d.approvals_required),
                    approvals: step
                        .approvals
                        .iter()
                        .map(|a| hex::encode(&a.officer))
                        .collect(),
                    ready: time_or_dash(step.ready_ms),
                    deadline_ms: step.deadline_ms,
                    deadline: time_or_dash(step.deadline_ms),
                    rule: defined(i).map_or_else(String::new, |d| d.rule.clone()),
                    rule_outcome: step.rule_outcome.clone(),
                    evaluated_height: step.evaluated_height,
                })
                .collect(),
            events: case
                .events
                .iter()
                .map(|e| EventView {
                    kind: e.kind.clone(),
                    step_id: e.step_id.clone(),
                    signer: hex::encode(&e.signer),
                    department: e.department.clone(),
                    reason: e.reason.clone(),
                    at: format_time_ms(e.at_ms),
                    height: e.height,
                    transaction_id: hex::encode(&e.transaction_id),
                })
                .collect(),
        }
    }

    fn render(&self) -> String {
        let mut fields = Fields::new();
        fields
            .add("case", &self.case_id)
            .add(
                "workflow",
                format!("{} v{}", self.workflow_id, self.workflow_version),
            )
            .add("applicant", &self.applicant)
            .add("state", self.state)
            .add("reason", or_dash(&self.reason))
            .add("opened", &self.opened)
            .add("updated", &self.updated)
            .add("documents", or_dash(&self.documents.join(", ")));
        let mut steps = Table::new(&[
            "step",
            "department",
            "role",
            "state",
            "approvals",
            "deadline",
        ]);
        for step in &self.steps {
            steps.add(vec![
                step.step_id.clone(),
                or_dash(&step.department),
                or_dash(&step.role),
                step.state.to_owned(),
                if step.rule.is_empty() {
                    format!("{}/{}", step.approvals.len(), step.approvals_required)
                } else {
                    "automatic".into()
                },
                step.deadline.clone(),
            ]);
        }
        let mut events = Table::new(&["at", "event", "step", "department", "reason"]);
        for event in &self.events {
            events.add(vec![
                event.at.clone(),
                event.kind.clone(),
                or_dash(&event.step_id),
                or_dash(&event.department),
                or_dash(&event.reason),
            ]);
        }
        let mut rules = Table::new(&["automatic step", "rule", "last outcome", "at height"]);
        let automatic: Vec<&CaseStepView> =
            self.steps.iter().filter(|s| !s.rule.is_empty()).collect();
        for step in &automatic {
            rules.add(vec![
                step.step_id.clone(),
                step.rule.clone(),
                or_dash(&step.rule_outcome),
                if step.evaluated_height == 0 {
                    "-".into()
                } else {
                    step.evaluated_height.to_string()
                },
            ]);
        }
        if !automatic.is_empty() {
            return format!(
                "{}\n{}\n{}\n{}",
                fields.render(),
                steps.render(),
                rules.render(),
                events.render()
            );
        }
        format!(
            "{}\n{}\n{}",
            fields.render(),
            steps.render(),
            events.render()
        )
    }
}

/// `GetCase` through `session`: as its department, or as the applicant
/// whose key `applicant_key` signs the request.
pub(crate) async fn get_case(
    session: &Session,
    case_id: &Digest,
    applicant_key: Option<&Path>,
) -> anyhow::Result<GetCaseResponse> {
    let (request_time_ms, citizen_signature) = match applicant_key {
        None => (0, Vec::new()),
        Some(path) => {
            let key = load_signing_key(path)?;
            session.citizen_signature(CitizenRead::GetCase, &key.public_key(), Some(&key))?
        }
    };
    Ok(approval_client(session.channel.clone())
        .get_case(GetCaseRequest {
            case_id: case_id.to_vec(),
            request_time_ms,
            citizen_signature,
        })
        .await
        .map_err(rpc_error)?
        .into_inner())
}

async fn show(args: ShowArgs, json: bool) -> anyhow::Result<()> {
    let session = Session::open(&args.connect, client_timeout()).await?;
    let response = get_case(&session, &args.case, args.applicant_key.as_deref()).await?;
    let case = response.r#case.unwrap_or_default();
    let view = CaseView::new(&case, response.workflow.as_ref());
    if json {
        return crate::output::print_json(&view);
    }
    crate::output::print(&view.render())
}

#[derive(Debug, Serialize)]
struct ListView {
    cases: Vec<CaseView>,
    next_page_token: String,
}

async fn list(args: ListArgs, json: bool) -> anyhow::Result<()> {
    let session = Session::open(&args.connect, client_timeout()).await?;
    let mut client = approval_client(session.channel.clone());
    let key = args
        .applicant_key
        .as_deref()
        .map(load_signing_key)
        .transpose()?;
    let applicant = match (&key, args.applicant) {
        (Some(key), _) => Some(key.public_key()),
        (None, applicant) => applicant,
    };
    let mut token = args.page_token.clone();
    let mut cases = Vec::new();
    loop {
        let (request_time_ms, citizen_signature) = match (&key, &applicant) {
            (Some(key), Some(applicant)) => {
                session.citizen_signature(CitizenRead::ListCases, applicant, Some(key))?
            }
            _ => (0, Vec::new()),
        };
        let page: ListCasesResponse = client
            .list_cases(ListCasesRequest {
                applicant: applicant.map(|a| a.as_bytes().to_vec()).unwrap_or_default(),
                department: String::new(),
                workflow_id: args.workflow.clone().unwrap_or_default(),
                state: args
                    .state
                    .map_or(CaseState::Unspecified, StateArg::proto)
                    .into(),
                waiting_department: args.waiting.clone().unwrap_or_default(),
                page_size: args.page_size,
                page_token: token.clone(),
                request_time_ms,
                citizen_signature,
            })
            .await
            .map_err(rpc_error)?
            .into_inner();
        cases.extend(page.cases.iter().map(|case| CaseView::new(case, None)));
        token = page.next_page_token;
        if !args.all || token.is_empty() {
            break;
        }
    }
    let view = ListView {
        cases,
        next_page_token: token,
    };
    if json {
        return crate::output::print_json(&view);
    }
    crate::output::print(&view.render())
}

impl ListView {
    fn render(&self) -> String {
        let mut table = Table::new(&[
            "case",
            "workflow",
            "state",
            "applicant",
            "ready steps",
            "opened",
        ]);
        for case in &self.cases {
            let ready: Vec<&str> = case
                .steps
                .iter()
                .filter(|s| s.state == "ready")
                .map(|s| s.step_id.as_str())
                .collect();
            table.add(vec![
                case.case_id.clone(),
                format!("{} v{}", case.workflow_id, case.workflow_version),
                case.state.to_owned(),
                case.applicant.clone(),
                or_dash(&ready.join(", ")),
                case.opened.clone(),
            ]);
        }
        let mut text = table.render();
        if !self.next_page_token.is_empty() {
            text.push_str(&format!(
                "\nmore: --page-token {} (or --all)",
                self.next_page_token
            ));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::super::workflow::deadline_text;
    use super::*;

    #[test]
    fn documents_are_name_equals_cid() {
        let document = parse_document("floor-plan = bafkreiabc").expect("a document");
        assert_eq!(document.name, "floor-plan");
        assert_eq!(document.cid, "bafkreiabc");
        let err = parse_document("floor-plan").expect_err("no cid");
        assert!(err.contains("NAME=CID"), "{err}");
    }

    #[test]
    fn deadline_and_state_words() {
        assert_eq!(StateArg::Approved.proto(), CaseState::Approved);
        assert_eq!(deadline_text(3_600_000), "1h");
    }
}
