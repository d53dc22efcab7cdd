//! De-identification of exports from legacy systems, before anything
//! leaves the department: per-field rules (`rules`), the value transforms
//! and keyed pseudonyms (`cell`), streaming CSV and JSONL row by row
//! (`stream`), and the k-anonymity count over quasi-identifiers (`kanon`).
//!
//! Pure: no file, network, clock or randomness; only the `Read` and
//! `Write` streams it is handed. The department secret comes in as bytes.
#![forbid(unsafe_code)]

pub mod cell;
pub mod kanon;
pub mod rules;
pub mod stream;

pub use cell::{CellError, KeyError, PseudonymKey, SECRET_BYTES_MIN};
pub use kanon::{GROUPS_MAX, KCounter, KReport};
pub use rules::{Action, DatePart, FieldRule, Rules, RulesError, Unlisted};
pub use stream::{Format, Options, RowError, RowProblem, Summary, TransformError, transform};
