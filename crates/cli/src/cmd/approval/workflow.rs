//! `govchain workflow define|show`: workflow definitions, written by hand
//! as TOML.
//!
//! The file format (every key but `id` and the steps' `id`, `department`
//! and `role` is optional):
//!
//! ```toml
//! id = "open-restaurant"            # the workflow id; a new file, a new version
//! title = "Open a restaurant"
//!
//! [[step]]
//! id = "health-inspection"          # names: a-z, 0-9, '_' and '-'
//! department = "health"             # a genesis department
//! role = "inspector"                # the officers' role
//! approvals = 1                     # M: distinct approvals needed (default 1)
//! officers = []                     # N: officer keys (hex or did:key); empty: any of the role
//! depends_on = []                   # steps that must be approved first
//! deadline = "14d"                  # once ready; s, m, h, d units; none by default
//! documents = ["floor-plan"]        # case documents the step may read
//! attributes = []                   # citizen attributes it may need (read under consent)
//! kind = "officer"                  # or "automatic" (implied by a rule)
//!
//! [[step]]
//! id = "eligibility"                # automatic: decided by a CEL rule
//! department = "civil"              # its officers of the role may override
//! role = "clerk"
//! rule = '"age" in applicant.attested && "civil" in applicant.attested.age'
//!
//! [[step]]
//! id = "license"
//! department = "commerce"
//! role = "licensing"
//! depends_on = ["health-inspection", "fire-inspection"]
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use govchain_exec::approval::validate_definition;
use govchain_proto::approval::v1::GetWorkflowRequest;
use govchain_proto::types::v1::{
    DefineWorkflow, StepKind, WorkflowDefinition, WorkflowStep, transaction::Body,
};
use serde::{Deserialize, Serialize};

use super::{SignedArgs, approval_client};
use crate::client::{ConnectArgs, rpc_error};
use crate::cmd::identity::{
    Session, Submitted, client_timeout, parse_citizen, parse_validity, print_view,
};
use crate::output::{Fields, Table, format_time_ms};
use crate::view::or_dash;

#[derive(Debug, Args)]
pub struct WorkflowArgs {
    #[command(subcommand)]
    command: WorkflowCommand,
}

#[derive(Debug, Subcommand)]
enum WorkflowCommand {
    /// Define a workflow (its next version) from a TOML file.
    #[command(
        long_about = "Define the next version of a workflow from a TOML file, signed with the \
            department's signing key. The first definition of an id makes the department its \
            owner; only the owner defines later versions. The steps form a DAG: each names \
            the department and role whose officers sign it, how many distinct approvals it \
            needs (M) out of the officers it names (N, or any of the role), the steps it \
            waits for, a deadline once it is ready, and the documents and citizen \
            attributes it may read. The file is checked here first, as every node will.\n\n\
            Format:\n  \
            id = \"open-restaurant\"\n  title = \"Open a restaurant\"\n  [[step]]\n  \
            id = \"fire-inspection\"\n  department = \"fire\"\n  role = \"inspector\"\n  \
            approvals = 2\n  officers = []            # keys (hex or did:key); empty: any of the role\n  \
            depends_on = []\n  deadline = \"14d\"\n  documents = [\"floor-plan\"]\n  \
            attributes = [\"name\"]   # read only under the citizen's consent\n\n\
            An automatic step has a CEL rule instead of approvals and officers; it is \
            approved when the rule is true as a transaction of the case commits, and an \
            officer of its department and role may override it (`govchain case override`):\n  \
            [[step]]\n  id = \"eligibility\"\n  department = \"civil\"\n  role = \"clerk\"\n  \
            rule = '\"age\" in applicant.attested && \"civil\" in applicant.attested.age'\n\n\
            Rule variables: applicant.attested (attribute name -> attesting departments), \
            applicant.department, steps (step id -> \"blocked\", \"ready\" or \"approved\"; \
            write steps[\"fire-inspection\"]), documents (names), case.workflow_id, \
            case.workflow_version. At most 1,024 bytes; operators, `in`, has(), size, \
            contains, startsWith and endsWith only (no all/exists/map/filter, no time).",
        after_help = "Example:\n  \
            govchain workflow define restaurant.toml --dir devnet --department commerce \\\n    \
            --signing-key devnet/certs/commerce/signing.key"
    )]
    Define(DefineArgs),
    /// Show a workflow definition (the latest version by default).
    #[command(
        after_help = "Example:\n  govchain workflow show open-restaurant --version 1 --dir devnet"
    )]
    Show(ShowArgs),
}

#[derive(Debug, Args)]
struct DefineArgs {
    /// The definition, as TOML (see --help for the format).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    #[command(flatten)]
    signed: SignedArgs,
}

#[derive(Debug, Args)]
struct ShowArgs {
    /// The workflow id.
    #[arg(value_name = "WORKFLOW")]
    workflow: String,
    /// The version; the latest by default.
    #[arg(long, value_name = "N", default_value_t = 0)]
    version: u64,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// A definition file, as written by hand.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefinitionFile {
    id: String,
    #[serde(default)]
    title: String,
    #[serde(rename = "step", default)]
    steps: Vec<StepFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFile {
    id: String,
    department: String,
    role: String,
    #[serde(default = "one")]
    approvals: u32,
    #[serde(default)]
    officers: Vec<String>,
    #[serde(default)]
    depends_on: Vec<String>,
    deadline: Option<String>,
    #[serde(default)]
    documents: Vec<String>,
    #[serde(default)]
    attributes: Vec<String>,
    kind: Option<String>,
    rule: Option<String>,
}

fn one() -> u32 {
    1
}

/// Reads and checks a definition file: the same checks every node makes.
pub fn read_definition_file(path: &Path) -> anyhow::Result<DefineWorkflow> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: DefinitionFile =
        toml::from_str(&text).with_context(|| format!("{} is not a workflow", path.display()))?;
    let steps = file
        .steps
        .into_iter()
        .map(step_of)
        .collect::<anyhow::Result<Vec<_>>>()
        .with_context(|| format!("in {}", path.display()))?;
    let body = DefineWorkflow {
        workflow_id: file.id,
        title: file.title,
        steps,
    };
    validate_definition(&body).map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
    Ok(body)
}

fn step_of(step: StepFile) -> anyhow::Result<WorkflowStep> {
    let implied = if step.rule.is_some() {
        "automatic"
    } else {
        "officer"
    };
    let kind = match step.kind.as_deref().unwrap_or(implied) {
        "officer" => StepKind::Officer,
        "automatic" => StepKind::Automatic,
        other => anyhow::bail!(
            "step {:?}: kind {other:?} is not known; steps are \"officer\" or \"automatic\"",
            step.id
        ),
    };
    // An automatic step's rule approves it: no M of N.
    let approvals_required = if kind == StepKind::Automatic {
        0
    } else {
        step.approvals
    };
    let deadline_ms = match &step.deadline {
        None => 0,
        Some(text) => {
            let duration = parse_validity(text)
                .map_err(|err| anyhow::anyhow!("step {:?}: deadline: {err}", step.id))?;
            u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
        }
    };
    let officers = step
        .officers
        .iter()
        .map(|text| {
            parse_citizen(text)
                .map(|key| key.as_bytes().to_vec())
                .map_err(|err| anyhow::anyhow!("step {:?}: officers: {err}", step.id))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(WorkflowStep {
        step_id: step.id,
        kind: kind.into(),
        department: step.department,
        role: step.role,
        approvals_required,
        officers,
        depends_on: step.depends_on,
        deadline_ms,
        documents: step.documents,
        attributes: step.attributes,
        rule: step.rule.unwrap_or_default(),
    })
}

pub async fn run(args: WorkflowArgs, json: bool) -> anyhow::Result<()> {
    match args.command {
        WorkflowCommand::Define(args) => define(args, json).await,
        WorkflowCommand::Show(args) => show(args, json).await,
    }
}

#[derive(Debug, Serialize)]
struct DefineView {
    workflow_id: String,
    steps: Vec<String>,
    transaction: Submitted,
}

async fn define(args: DefineArgs, json: bool) -> anyhow::Result<()> {
    let body = read_definition_file(&args.file)?;
    let workflow_id = body.workflow_id.clone();
    let steps = body.steps.iter().map(|s| s.step_id.clone()).collect();
    let (_, transaction) = args
        .signed
        .submit(Body::DefineWorkflow(body), "the definition")
        .await?;
    let view = DefineView {
        workflow_id,
        steps,
        transaction,
    };
    let mut fields = Fields::new();
    fields
        .add("workflow", &view.workflow_id)
        .add("steps", view.steps.join(", "))
        .add(
            "next",
            format!(
                "`govchain workflow show {}` for its version",
                view.workflow_id
            ),
        );
    view.transaction.add_to(&mut fields);
    print_view(&view, &fields, json)
}

/// A definition as `workflow show --json` prints it.
#[derive(Debug, Serialize)]
pub struct WorkflowView {
    pub workflow_id: String,
    pub version: u64,
    pub owner: String,
    pub title: String,
    pub defined: String,
    pub steps: Vec<StepView>,
}

#[derive(Debug, Serialize)]
pub struct StepView {
    pub step_id: String,
    pub department: String,
    pub role: String,
    pub approvals_required: u32,
    pub officers: Vec<String>,
    pub depends_on: Vec<String>,
    pub deadline_ms: u64,
    pub documents: Vec<String>,
    pub attributes: Vec<String>,
    /// An automatic step's CEL rule; empty for an officer step.
    pub rule: String,
}

impl WorkflowView {
    pub fn new(definition: &WorkflowDefinition) -> Self {
        Self {
            workflow_id: definition.workflow_id.clone(),
            version: definition.version,
            owner: definition.owner.clone(),
            title: definition.title.clone(),
            defined: format_time_ms(definition.defined_ms),
            steps: definition
                .steps
                .iter()
                .map(|step| StepView {
                    step_id: step.step_id.clone(),
                    department: step.department.clone(),
                    role: step.role.clone(),
                    approvals_required: step.approvals_required,
                    officers: step.officers.iter().map(hex::encode).collect(),
                    depends_on: step.depends_on.clone(),
                    deadline_ms: step.deadline_ms,
                    documents: step.documents.clone(),
                    attributes: step.attributes.clone(),
                    rule: step.rule.clone(),
                })
                .collect(),
        }
    }
}

async fn show(args: ShowArgs, json: bool) -> anyhow::Result<()> {
    let session = Session::open(&args.connect, client_timeout()).await?;
    let response = approval_client(session.channel.clone())
        .get_workflow(GetWorkflowRequest {
            workflow_id: args.workflow.clone(),
            version: args.version,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let view = WorkflowView::new(&response.workflow.unwrap_or_default());
    let mut fields = Fields::new();
    fields
        .add(
            "workflow",
            format!("{} v{}", view.workflow_id, view.version),
        )
        .add("owner", &view.owner)
        .add("title", or_dash(&view.title))
        .add("defined", &view.defined);
    let mut table = Table::new(&["step", "department", "role", "M of N", "after", "deadline"]);
    for step in &view.steps {
        table.add(vec![
            step.step_id.clone(),
            step.department.clone(),
            step.role.clone(),
            if step.rule.is_empty() {
                m_of_n(step.approvals_required, step.officers.len())
            } else {
                format!("rule: {}", step.rule)
            },
            or_dash(&step.depends_on.join(", ")),
            deadline_text(step.deadline_ms),
        ]);
    }
    if json {
        return crate::output::print_json(&view);
    }
    crate::output::print(&format!("{}\n{}", fields.render(), table.render()))
}

fn m_of_n(m: u32, named: usize) -> String {
    if named == 0 {
        format!("{m} of the role")
    } else {
        format!("{m} of {named}")
    }
}

/// A relative deadline in the largest whole unit.
pub fn deadline_text(ms: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    if ms == 0 {
        return "-".into();
    }
    for (unit, name) in UNITS {
        if (ms / unit) * unit == ms {
            return format!("{}{name}", ms / unit);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write");
        file
    }

    const RESTAURANT: &str = r#"
id = "open-restaurant"
title = "Open a restaurant"

[[step]]
id = "health-inspection"
department = "health"
role = "inspector"
deadline = "14d"
documents = ["floor-plan"]

[[step]]
id = "fire-inspection"
department = "fire"
role = "inspector"
approvals = 2

[[step]]
id = "license"
department = "commerce"
role = "licensing"
depends_on = ["health-inspection", "fire-inspection"]
"#;

    #[test]
    fn a_definition_file_becomes_the_transaction_body() {
        let file = write(RESTAURANT);
        let body = read_definition_file(file.path()).expect("a valid definition");
        assert_eq!(body.workflow_id, "open-restaurant");
        assert_eq!(body.steps.len(), 3);
        assert_eq!(body.steps[0].deadline_ms, 14 * 86_400_000);
        assert_eq!(body.steps[0].approvals_required, 1);
        assert_eq!(body.steps[1].approvals_required, 2);
        assert_eq!(
            body.steps[2].depends_on,
            vec!["health-inspection", "fire-inspection"]
        );
        assert_eq!(body.steps[2].kind, StepKind::Officer as i32);
    }

    #[test]
    fn a_cycle_or_an_unknown_key_is_refused_before_signing() {
        let cyclic =
            RESTAURANT.replace("approvals = 2", "approvals = 2\ndepends_on = [\"license\"]");
        let err = read_definition_file(write(&cyclic).path()).expect_err("a cycle");
        assert!(format!("{err:#}").contains("cycle"), "{err:#}");
        let typo = RESTAURANT.replace("approvals = 2", "aprovals = 2");
        let err = read_definition_file(write(&typo).path()).expect_err("unknown key");
        assert!(format!("{err:#}").contains("aprovals"), "{err:#}");
        let kind = RESTAURANT.replace("approvals = 2", "kind = \"cel\"");
        let err = read_definition_file(write(&kind).path()).expect_err("unknown kind");
        assert!(
            format!("{err:#}").contains("\"officer\" or \"automatic\""),
            "{err:#}"
        );
    }

    #[test]
    fn a_rule_makes_an_automatic_step_and_a_bad_rule_is_refused_before_signing() {
        let automatic = RESTAURANT.replace(
            "approvals = 2",
            "approvals = 2\nrule = 'steps[\"health-inspection\"] == \"approved\"'",
        );
        let body = read_definition_file(write(&automatic).path()).expect("an automatic step");
        assert_eq!(body.steps[1].kind, StepKind::Automatic as i32);
        assert_eq!(body.steps[1].approvals_required, 0);
        assert_eq!(
            body.steps[1].rule,
            "steps[\"health-inspection\"] == \"approved\""
        );
        let bad = RESTAURANT.replace("approvals = 2", "rule = 'salary > 3'");
        let err = read_definition_file(write(&bad).path()).expect_err("unknown variable");
        assert!(
            format!("{err:#}").contains("unknown variable \"salary\""),
            "{err:#}"
        );
    }

    #[test]
    fn deadlines_print_in_their_largest_unit() {
        assert_eq!(deadline_text(0), "-");
        assert_eq!(deadline_text(14 * 86_400_000), "14d");
        assert_eq!(deadline_text(90_000), "90s");
        assert_eq!(deadline_text(1_500), "1500ms");
    }
}
