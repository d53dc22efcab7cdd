//! The devnet's demo case: an "open a restaurant" workflow (an automatic
//! eligibility check, a health and a fire inspection in parallel, then the
//! licence), an officer per
//! department, and a case the demo citizen opened, so that the walk to
//! "approved" can be tried at once from the commands `govchain devnet`
//! prints.

use std::path::{Path, PathBuf};
use std::time::Duration;

use govchain_crypto::{Digest, SigningKey};
use govchain_proto::blob::v1::UploadHeader;
use govchain_proto::types::v1::{CaseDocument, OpenCase, RegisterOfficer, transaction::Body};

use super::workflow::read_definition_file;
use crate::client::{self, ConnectArgs};
use crate::cmd::blob;
use crate::cmd::identity::{CommitArgs, Session, client_timeout};
use crate::cmd::keys::{load_signing_key, write_secret};

/// The demo workflow's id.
pub const DEMO_WORKFLOW: &str = "open-restaurant";

/// One officer of the demo: a department's, with its role and the step it
/// signs.
pub struct DemoOfficer {
    pub department: String,
    pub role: &'static str,
    pub step: &'static str,
    pub key_file: PathBuf,
}

/// A document of the demo case: its CID and the department whose node
/// holds it.
pub struct DemoDocument {
    pub cid: String,
    pub holder: String,
}

/// What [`demo_case`] made.
pub struct DemoCase {
    pub case_id: Digest,
    pub workflow_file: PathBuf,
    /// The officers of the officer steps, one per step.
    pub officers: Vec<DemoOfficer>,
    /// Civil's clerk, who may override the automatic eligibility step.
    pub clerk: DemoOfficer,
    /// The case's floor plan.
    pub plan: DemoDocument,
}

/// The department whose automatic step checks that the applicant's name is
/// attested by it (the demo citizen's is).
pub const DEMO_ELIGIBILITY_DEPARTMENT: &str = "civil";

/// The devnet has no fire or commerce department: `inspections` stands in
/// for the fire brigade and `licensing` for commerce. The eligibility step
/// is automatic: its rule approves it when the case opens.
fn workflow_toml(health: &str, inspections: &str, licensing: &str) -> String {
    let civil = DEMO_ELIGIBILITY_DEPARTMENT;
    format!(
        r#"# The devnet's demo workflow: `govchain workflow define` takes this file.
id = "{DEMO_WORKFLOW}"
title = "Open a restaurant"

[[step]]
id = "eligibility"
department = "{civil}"
role = "clerk"
rule = '"name" in applicant.attested && "{civil}" in applicant.attested.name'

[[step]]
id = "health-inspection"
department = "{health}"
role = "inspector"
documents = ["floor-plan"]

[[step]]
id = "fire-inspection"
department = "{inspections}"
role = "fire-inspector"
documents = ["floor-plan"]

[[step]]
id = "license"
department = "{licensing}"
role = "licensing"
depends_on = ["eligibility", "health-inspection", "fire-inspection"]
deadline = "30d"
"#
    )
}

/// The demo case on a fresh devnet in `dir`, opened by the citizen whose
/// key is `citizen_key`; its files go to `<dir>/demo/`. An existing
/// workflow file there means it was done.
pub async fn demo_case(
    dir: &Path,
    citizen_key: &Path,
    departments: [&str; 3],
) -> anyhow::Result<Option<DemoCase>> {
    let [health, inspections, licensing] = departments;
    let demo = dir.join("demo");
    let workflow_file = demo.join("restaurant.toml");
    if workflow_file.exists() {
        return Ok(None);
    }
    std::fs::create_dir_all(demo.join("officers"))?;
    let commit = CommitArgs {
        wait: true,
        no_wait: false,
        timeout: Duration::from_secs(30),
    };
    let connect = |department: &str| ConnectArgs {
        dir: Some(dir.to_owned()),
        department: Some(department.to_owned()),
        ..ConnectArgs::default()
    };
    let department_key = |department: &str| {
        load_signing_key(&dir.join("certs").join(department).join("signing.key"))
    };

    // An officer per step (a clerk for the automatic one, who may
    // override it), registered by its department through its own
    // certificate.
    let mut officers = Vec::new();
    for (department, role, step) in [
        (DEMO_ELIGIBILITY_DEPARTMENT, "clerk", "eligibility"),
        (health, "inspector", "health-inspection"),
        (inspections, "fire-inspector", "fire-inspection"),
        (licensing, "licensing", "license"),
    ] {
        let key = SigningKey::generate()?;
        let key_file = demo.join("officers").join(format!("{department}.key"));
        write_secret(&key_file, key.to_pkcs8_pem()?.as_bytes(), false)?;
        let mut session = Session::open(&connect(department), client_timeout()).await?;
        let register = Body::RegisterOfficer(RegisterOfficer {
            officer: key.public_key().as_bytes().to_vec(),
            role: role.to_owned(),
        });
        session
            .submit(
                &department_key(department)?,
                register,
                &commit,
                "the officer",
            )
            .await?;
        officers.push(DemoOfficer {
            department: department.to_owned(),
            role,
            step,
            key_file,
        });
    }

    // The definition, owned by the licensing department.
    std::fs::write(
        &workflow_file,
        workflow_toml(health, inspections, licensing),
    )?;
    let definition = read_definition_file(&workflow_file)?;
    let mut session = Session::open(&connect(licensing), client_timeout()).await?;
    session
        .submit(
            &department_key(licensing)?,
            Body::DefineWorkflow(definition),
            &commit,
            "the workflow",
        )
        .await?;

    // The citizen's application, with a floor plan in the health node's
    // blob store.
    let citizen = load_signing_key(citizen_key)?;
    let mut blobs = client::blob_client(client::channel(&connect(health).target()?, None).await?);
    let plan = blob::upload(
        &mut blobs,
        bytes::Bytes::from_static(b"Demo floor plan: kitchen, dining room, two exits.\n"),
        UploadHeader::default(),
        indicatif::ProgressBar::hidden(),
    )
    .await?;
    let open = Body::OpenCase(OpenCase {
        workflow_id: DEMO_WORKFLOW.to_owned(),
        workflow_version: 1,
        documents: vec![CaseDocument {
            name: "floor-plan".into(),
            cid: plan.cid.clone(),
        }],
    });
    let mut session = Session::open(&connect(health), client_timeout()).await?;
    let opened = session.submit(&citizen, open, &commit, "the case").await?;
    let clerk = officers.remove(0);
    Ok(Some(DemoCase {
        case_id: opened.id,
        workflow_file,
        officers,
        clerk,
        plan: DemoDocument {
            cid: plan.cid,
            holder: health.to_owned(),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_workflow_is_a_valid_definition() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("restaurant.toml");
        std::fs::write(&file, workflow_toml("health", "police", "tax")).expect("write");
        let definition = read_definition_file(&file).expect("valid");
        assert_eq!(definition.workflow_id, DEMO_WORKFLOW);
        let steps: Vec<&str> = definition
            .steps
            .iter()
            .map(|s| s.step_id.as_str())
            .collect();
        assert_eq!(
            steps,
            [
                "eligibility",
                "health-inspection",
                "fire-inspection",
                "license"
            ]
        );
        assert_eq!(
            definition.steps[3].depends_on,
            ["eligibility", "health-inspection", "fire-inspection"]
        );
        assert_eq!(
            definition.steps[0].kind,
            govchain_proto::types::v1::StepKind::Automatic as i32
        );
    }
}
