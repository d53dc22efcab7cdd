//! The devnet's demo directory: two datasets of the health department, one
//! `open` and one `by-request` whose requests go through a "data-sharing"
//! workflow with one health data steward, so that `govchain directory
//! search` shows something on a fresh devnet and a request can be walked to
//! a grant.

use std::path::{Path, PathBuf};
use std::time::Duration;

use govchain_crypto::SigningKey;
use govchain_proto::types::v1::{
    DatasetAccessPolicy, DatasetSensitivity, PublishDatasetEntry, RegisterOfficer,
    transaction::Body,
};

use crate::client::ConnectArgs;
use crate::cmd::approval::workflow::read_definition_file;
use crate::cmd::identity::{CommitArgs, Session, client_timeout};
use crate::cmd::keys::{load_signing_key, write_secret};

/// The workflow access requests for the by-request demo dataset go
/// through.
pub const DEMO_SHARING_WORKFLOW: &str = "data-sharing";
/// The by-request demo dataset.
pub const DEMO_BY_REQUEST_DATASET: &str = "health/vaccinations";
/// The open demo dataset.
pub const DEMO_OPEN_DATASET: &str = "health/clinic-visits";
/// The step of the sharing workflow, signed by a data steward.
pub const DEMO_SHARING_STEP: &str = "steward-review";

/// What [`demo_directory`] made.
pub struct DemoDirectory {
    pub owner: String,
    /// The data steward's key, who approves access requests.
    pub steward_key_file: PathBuf,
}

fn sharing_toml(owner: &str) -> String {
    format!(
        r#"# The devnet's data-sharing workflow: a request for a by-request dataset
# of {owner} is approved by one of its data stewards.
id = "{DEMO_SHARING_WORKFLOW}"
title = "Share a dataset with another department"

[[step]]
id = "{DEMO_SHARING_STEP}"
department = "{owner}"
role = "data-steward"
deadline = "14d"
"#
    )
}

fn demo_entries(owner: &str) -> [PublishDatasetEntry; 2] {
    [
        PublishDatasetEntry {
            dataset: DEMO_OPEN_DATASET.replace("health", owner),
            description: "Clinic visits per district and month, de-identified".into(),
            schema_cid: String::new(),
            sensitivity: DatasetSensitivity::Internal.into(),
            update_frequency: "monthly".into(),
            access_policy: DatasetAccessPolicy::Open.into(),
            workflow_id: String::new(),
        },
        PublishDatasetEntry {
            dataset: DEMO_BY_REQUEST_DATASET.replace("health", owner),
            description: "Vaccinations by district, age band and vaccine, de-identified".into(),
            schema_cid: String::new(),
            sensitivity: DatasetSensitivity::Restricted.into(),
            update_frequency: "weekly".into(),
            access_policy: DatasetAccessPolicy::ByRequest.into(),
            workflow_id: DEMO_SHARING_WORKFLOW.into(),
        },
    ]
}

/// The demo directory on a fresh devnet in `dir`, published by `owner`;
/// its files go to `<dir>/demo/`. An existing workflow file there means it
/// was done.
pub async fn demo_directory(dir: &Path, owner: &str) -> anyhow::Result<Option<DemoDirectory>> {
    let demo = dir.join("demo");
    let workflow_file = demo.join("data-sharing.toml");
    if workflow_file.exists() {
        return Ok(None);
    }
    std::fs::create_dir_all(demo.join("officers"))?;
    let commit = CommitArgs {
        wait: true,
        no_wait: false,
        timeout: Duration::from_secs(30),
    };
    let connect = ConnectArgs {
        dir: Some(dir.to_owned()),
        department: Some(owner.to_owned()),
        ..ConnectArgs::default()
    };
    let owner_key = load_signing_key(&dir.join("certs").join(owner).join("signing.key"))?;
    let mut session = Session::open(&connect, client_timeout()).await?;

    let steward = SigningKey::generate()?;
    let steward_key_file = demo.join("officers").join(format!("{owner}-steward.key"));
    write_secret(&steward_key_file, steward.to_pkcs8_pem()?.as_bytes(), false)?;
    let register = Body::RegisterOfficer(RegisterOfficer {
        officer: steward.public_key().as_bytes().to_vec(),
        role: "data-steward".into(),
    });
    session
        .submit(&owner_key, register, &commit, "the data steward")
        .await?;
    std::fs::write(&workflow_file, sharing_toml(owner))?;
    let definition = read_definition_file(&workflow_file)?;
    session
        .submit(
            &owner_key,
            Body::DefineWorkflow(definition),
            &commit,
            "the sharing workflow",
        )
        .await?;
    for entry in demo_entries(owner) {
        session
            .submit(
                &owner_key,
                Body::PublishDatasetEntry(entry),
                &commit,
                "the directory entry",
            )
            .await?;
    }
    Ok(Some(DemoDirectory {
        owner: owner.to_owned(),
        steward_key_file,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use govchain_exec::directory::validate_publish;

    #[test]
    fn the_demo_workflow_and_entries_are_valid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("sharing.toml");
        std::fs::write(&file, sharing_toml("health")).expect("write");
        let definition = read_definition_file(&file).expect("valid");
        assert_eq!(definition.workflow_id, DEMO_SHARING_WORKFLOW);
        assert_eq!(definition.steps[0].step_id, DEMO_SHARING_STEP);
        for entry in demo_entries("health") {
            validate_publish(&entry).expect("a valid entry");
        }
    }
}
