//! Which case documents a department may read: a document of a case is
//! released to a department when the case's definition gives that
//! department a step whose `documents` name it. The applicant's department
//! reads its own documents too. A document belongs to the first case that
//! named it (`approval::document_case`): a CID is in the blocks for every
//! member to see, and naming it in a case of one's own releases nothing.
//! Citizens' attributes never come through here: they stay on the consent
//! and audited-access path.

use govchain_proto::types::v1::{CaseRecord, WorkflowDefinition};

/// Why a department may not read a blob as a document of a case.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DocumentRefusal {
    #[error("blob {cid} is not a document of case {case}")]
    NotADocument { cid: String, case: String },
    #[error(
        "blob {cid} is a document of case {owner}, named first there; case {case} only names it, and only case {owner}'s rule releases it"
    )]
    OfAnotherCase {
        cid: String,
        case: String,
        owner: String,
    },
    #[error(
        "department {department:?} has no step of case {case} that may read document {name:?} (the workflow lets {readers} read it)"
    )]
    NoStepReads {
        department: String,
        case: String,
        name: String,
        readers: String,
    },
}

/// The name of the document `cid` of `case`, when `department` may read it
/// under `definition` (the case's definition version): as the applicant's
/// department, or through a step of its own whose `documents` list the
/// name; and only when `case` is the one that first named it
/// (`first_case`, from `approval::document_case`).
pub fn readable_document(
    case: &CaseRecord,
    definition: &WorkflowDefinition,
    first_case: Option<&[u8]>,
    department: &str,
    cid: &str,
) -> Result<String, DocumentRefusal> {
    let short = |id: &[u8]| -> String {
        id.iter()
            .take(4)
            .map(|byte| format!("{byte:02x}"))
            .collect()
    };
    let case_hex = short(&case.case_id);
    let Some(document) = case.documents.iter().find(|d| d.cid == cid) else {
        return Err(DocumentRefusal::NotADocument {
            cid: cid.to_owned(),
            case: case_hex,
        });
    };
    if let Some(first) = first_case
        && first != case.case_id.as_slice()
    {
        return Err(DocumentRefusal::OfAnotherCase {
            cid: cid.to_owned(),
            case: case_hex,
            owner: short(first),
        });
    }
    if !case.applicant_department.is_empty() && case.applicant_department == department {
        return Ok(document.name.clone());
    }
    let mut readers: Vec<&str> = definition
        .steps
        .iter()
        .filter(|step| step.documents.contains(&document.name))
        .map(|step| step.department.as_str())
        .collect();
    if readers.contains(&department) {
        return Ok(document.name.clone());
    }
    readers.sort_unstable();
    readers.dedup();
    Err(DocumentRefusal::NoStepReads {
        department: department.to_owned(),
        case: case_hex,
        name: document.name.clone(),
        readers: if readers.is_empty() {
            "no step".to_owned()
        } else {
            readers.join(", ")
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use govchain_proto::types::v1::{CaseDocument, WorkflowStep};
    use proptest::prelude::*;

    use super::*;

    fn step(department: &str, documents: &[&str]) -> WorkflowStep {
        WorkflowStep {
            step_id: format!("{department}-step"),
            department: department.into(),
            documents: documents.iter().map(|d| (*d).to_owned()).collect(),
            ..Default::default()
        }
    }

    fn case(applicant_department: &str) -> CaseRecord {
        CaseRecord {
            case_id: vec![0xab; 32],
            applicant_department: applicant_department.into(),
            documents: vec![
                CaseDocument {
                    name: "floor-plan".into(),
                    cid: "bafyplan".into(),
                },
                CaseDocument {
                    name: "accounts".into(),
                    cid: "bafyaccounts".into(),
                },
            ],
            ..Default::default()
        }
    }

    fn restaurant() -> WorkflowDefinition {
        WorkflowDefinition {
            steps: vec![
                step("health", &["floor-plan"]),
                step("police", &["floor-plan"]),
                step("tax", &["accounts"]),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn a_step_reads_the_documents_its_definition_names() {
        let case = case("");
        let definition = restaurant();
        assert_eq!(
            readable_document(&case, &definition, None, "health", "bafyplan").unwrap(),
            "floor-plan"
        );
        assert_eq!(
            readable_document(&case, &definition, None, "tax", "bafyaccounts").unwrap(),
            "accounts"
        );
        let refused = readable_document(&case, &definition, None, "tax", "bafyplan").unwrap_err();
        assert_eq!(
            refused.to_string(),
            "department \"tax\" has no step of case abababab that may read document \"floor-plan\" (the workflow lets health, police read it)"
        );
        assert!(matches!(
            readable_document(&case, &definition, None, "civil", "bafyaccounts"),
            Err(DocumentRefusal::NoStepReads { .. })
        ));
    }

    #[test]
    fn a_blob_the_case_does_not_name_is_refused_even_to_its_steps() {
        let refused = readable_document(&case(""), &restaurant(), None, "health", "bafyother");
        assert!(matches!(refused, Err(DocumentRefusal::NotADocument { .. })));
    }

    #[test]
    fn the_applicant_department_reads_its_own_documents() {
        let case = case("civil");
        assert_eq!(
            readable_document(&case, &restaurant(), None, "civil", "bafyaccounts").unwrap(),
            "accounts"
        );
        // A citizen's case has no applicant department to match an empty
        // name.
        assert!(
            readable_document(&super::tests::case(""), &restaurant(), None, "", "bafyplan")
                .is_err()
        );
    }

    #[test]
    fn a_document_another_case_named_first_is_not_released_through_this_one() {
        let case = case("");
        let first = [0x11_u8; 32];
        let refused = readable_document(&case, &restaurant(), Some(&first), "health", "bafyplan")
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "blob bafyplan is a document of case 11111111, named first there; case abababab only names it, and only case 11111111's rule releases it"
        );
        // The case that named it first releases it.
        assert_eq!(
            readable_document(
                &case,
                &restaurant(),
                Some(&case.case_id),
                "health",
                "bafyplan"
            )
            .unwrap(),
            "floor-plan"
        );
    }

    proptest! {
        /// Released only to a department that is the applicant or has a
        /// step listing the document's name, and always with that name.
        #[test]
        fn release_implies_a_step_or_the_applicant(
            department in prop::sample::select(vec!["health", "police", "tax", "civil", ""]),
            applicant in prop::sample::select(vec!["", "civil", "tax"]),
            cid in prop::sample::select(vec!["bafyplan", "bafyaccounts", "bafyother"]),
            plan_readers in prop::collection::vec(prop::sample::select(vec!["health", "police", "tax", "civil"]), 0..4),
        ) {
            let case = case(applicant);
            let mut definition = restaurant();
            definition.steps.retain(|s| s.documents != ["floor-plan"]);
            for reader in &plan_readers {
                definition.steps.push(step(reader, &["floor-plan"]));
            }
            if let Ok(name) = readable_document(&case, &definition, Some(case.case_id.as_slice()), department, cid) {
                let document = case.documents.iter().find(|d| d.cid == cid).unwrap();
                prop_assert_eq!(&name, &document.name);
                let by_step = definition
                    .steps
                    .iter()
                    .any(|s| s.department == department && s.documents.contains(&name));
                prop_assert!(by_step || (!applicant.is_empty() && applicant == department));
            }
        }
    }
}
