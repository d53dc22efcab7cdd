//! A case's evidence bundle: the format (`bundle`) and its collection from
//! a node (`collect`), shared by `govchain case export` and the web
//! portal's case page. Verification stays in the CLI (`govchain verify`),
//! which checks every proof with the node's code.
//!
//! **Boundary:** `FORMAT` names the JSON layout; a change to it is a new
//! format name.

#![forbid(unsafe_code)]

mod bundle;
pub mod collect;

pub use bundle::{
    BUNDLE_TRANSACTIONS_MAX, BundledCertificate, BundledDepartments, BundledEnvelope, BundledProof,
    BundledSignature, BundledStateProof, BundledTransaction, CaseBundle, FORMAT,
};
pub use collect::{CollectError, collect};
