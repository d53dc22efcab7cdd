//! A case's evidence bundle: the format and its collection from a node are
//! `govchain_evidence`'s (shared with the web portal); the offline checks
//! are here (`verify`), since they use the node's proof verification.

pub use govchain_evidence::{BUNDLE_TRANSACTIONS_MAX, BundledTransaction, CaseBundle, FORMAT};

pub mod verify;

#[cfg(test)]
mod tests;
