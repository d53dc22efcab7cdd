//! The rules file: what happens to each field of an export.
//!
//! ```toml
//! default = "refuse"          # or "keep" / "drop"; "refuse" if absent
//!
//! [fields.name]
//! action = "drop"
//! [fields.national_id]
//! action = "pseudonymise"
//! [fields.date_of_birth]
//! action = "generalise"
//! to = "year"                 # or "month"
//! quasi_identifier = true
//! [fields.postcode]
//! action = "prefix"
//! keep = 3
//! quasi_identifier = true
//! [fields.age]
//! action = "band"
//! width = 10
//! [fields.phone]
//! action = "mask"
//! keep_last = 2
//! [fields.diagnosis]
//! action = "keep"
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Longest rules file accepted: rules name columns, they are never large.
pub const RULES_BYTES_MAX: usize = 1024 * 1024;
/// Most fields one rules file may name.
pub const RULES_FIELDS_MAX: usize = 4096;
/// Widest prefix, band and mask parameter: beyond it a rule keeps nothing
/// out (a prefix of 10,000 characters is a typo).
pub const PARAMETER_MAX: u32 = 1_000_000;
/// Domain of the rules hash, so that it never equals another file's hash.
const RULES_HASH_DOMAIN: &str = "govchain-ingest-rules/v1";

/// What to do with one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Copied as it is: for fields that are not personal.
    Keep,
    /// Left out of the output.
    Drop,
    /// Replaced by a keyed pseudonym (HMAC-SHA-256 under the department's
    /// secret): the same value gives the same pseudonym under one secret.
    Pseudonymise,
    /// A date (`YYYY-MM-DD`, optionally with a time) cut to its year or month.
    Generalise { to: DatePart },
    /// The first `keep` characters (a postcode's district).
    Prefix { keep: u32 },
    /// A whole number replaced by its band `lo-hi` of `width` numbers.
    Band { width: u32 },
    /// Every character but the last `keep_last` replaced by `*`.
    Mask { keep_last: u32 },
}

impl Action {
    /// Whether the field's raw value can never appear in the output.
    pub fn hides_value(self) -> bool {
        matches!(self, Action::Drop | Action::Pseudonymise)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DatePart {
    Year,
    Month,
}

/// What happens to a field the rules do not name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unlisted {
    /// The export is refused, naming the field: the safe default, so that a
    /// column added to a legacy export never flows out unreviewed.
    Refuse,
    Keep,
    Drop,
}

/// One field's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FieldRule {
    #[serde(flatten)]
    pub action: Action,
    /// Counted by the k-anonymity report (on the output values).
    pub quasi_identifier: bool,
}

/// Validated rules. Built only by [`Rules::parse`], so a `Rules` always
/// names at least one field, each with a known action and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    default: Unlisted,
    fields: BTreeMap<String, FieldRule>,
    hash: [u8; 32],
}

/// A rules file that cannot be used, with the field and the reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RulesError {
    #[error("the rules file has {got} bytes, over the {max} allowed")]
    TooLarge { got: usize, max: usize },
    #[error("the rules file is not valid TOML: {reason}")]
    Toml { reason: String },
    #[error("the rules name no field: add a [fields.NAME] table for each column")]
    NoFields,
    #[error("the rules name {got} fields, over the {max} allowed")]
    TooManyFields { got: usize, max: usize },
    #[error("default {got:?} is not one of \"refuse\", \"keep\", \"drop\"")]
    UnknownDefault { got: String },
    #[error(
        "field {field:?}: unknown action {got:?}; expected one of keep, drop, pseudonymise, generalise, prefix, band, mask"
    )]
    UnknownAction { field: String, got: String },
    #[error("field {field:?}: action {action} needs `{parameter}`")]
    MissingParameter {
        field: String,
        action: &'static str,
        parameter: &'static str,
    },
    #[error("field {field:?}: `{parameter}` does not apply to action {action}")]
    UnexpectedParameter {
        field: String,
        action: &'static str,
        parameter: &'static str,
    },
    #[error("field {field:?}: `{parameter}` = {got} is out of range {min}..={max}")]
    ParameterRange {
        field: String,
        parameter: &'static str,
        got: i64,
        min: u32,
        max: u32,
    },
    #[error("field {field:?}: `to` = {got:?} is not \"year\" or \"month\"")]
    UnknownDatePart { field: String, got: String },
    #[error(
        "field {field:?}: a dropped field cannot be a quasi-identifier (it is not in the output)"
    )]
    DroppedQuasiIdentifier { field: String },
    #[error("field {field:?}: the field name is empty")]
    EmptyName { field: String },
}

/// The file as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    default: Option<String>,
    #[serde(default)]
    fields: BTreeMap<String, FieldFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldFile {
    action: String,
    to: Option<String>,
    keep: Option<i64>,
    width: Option<i64>,
    keep_last: Option<i64>,
    #[serde(default)]
    quasi_identifier: bool,
}

impl Rules {
    /// Parses and validates a rules file.
    pub fn parse(bytes: &[u8]) -> Result<Self, RulesError> {
        if bytes.len() > RULES_BYTES_MAX {
            return Err(RulesError::TooLarge {
                got: bytes.len(),
                max: RULES_BYTES_MAX,
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|err| RulesError::Toml {
            reason: format!("not UTF-8: {err}"),
        })?;
        let file: RulesFile = toml::from_str(text).map_err(|err| RulesError::Toml {
            reason: err.message().to_owned(),
        })?;
        let default = match file.default.as_deref() {
            None | Some("refuse") => Unlisted::Refuse,
            Some("keep") => Unlisted::Keep,
            Some("drop") => Unlisted::Drop,
            Some(other) => {
                return Err(RulesError::UnknownDefault {
                    got: other.to_owned(),
                });
            }
        };
        if file.fields.is_empty() {
            return Err(RulesError::NoFields);
        }
        if file.fields.len() > RULES_FIELDS_MAX {
            return Err(RulesError::TooManyFields {
                got: file.fields.len(),
                max: RULES_FIELDS_MAX,
            });
        }
        let mut fields = BTreeMap::new();
        for (name, field) in file.fields {
            let rule = field_rule(&name, field)?;
            fields.insert(name, rule);
        }
        let hash = canonical_hash(default, &fields);
        Ok(Self {
            default,
            fields,
            hash,
        })
    }

    pub fn unlisted(&self) -> Unlisted {
        self.default
    }

    /// The named fields, in name order.
    pub fn fields(&self) -> &BTreeMap<String, FieldRule> {
        &self.fields
    }

    pub fn field(&self, name: &str) -> Option<&FieldRule> {
        self.fields.get(name)
    }

    /// The rule for a field, named or not; `None` when the default refuses it.
    pub fn rule_for(&self, name: &str) -> Option<FieldRule> {
        if let Some(rule) = self.fields.get(name) {
            return Some(*rule);
        }
        let action = match self.default {
            Unlisted::Refuse => return None,
            Unlisted::Keep => Action::Keep,
            Unlisted::Drop => Action::Drop,
        };
        Some(FieldRule {
            action,
            quasi_identifier: false,
        })
    }

    /// Names of the quasi-identifier fields, in name order.
    pub fn quasi_identifiers(&self) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(_, rule)| rule.quasi_identifier)
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// SHA-256 of the canonical form of the rules: the validated rules as
    /// JSON with sorted keys and no spaces, after the domain line
    /// `govchain-ingest-rules/v1\n`. Comments, key order and spacing of the
    /// file do not change it; any change of meaning does.
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }

    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash)
    }

    /// The canonical bytes that [`Rules::hash`] hashes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        canonical_bytes(self.default, &self.fields)
    }
}

fn canonical_bytes(default: Unlisted, fields: &BTreeMap<String, FieldRule>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Canonical<'a> {
        default: Unlisted,
        fields: &'a BTreeMap<String, FieldRule>,
    }
    let mut bytes = format!("{RULES_HASH_DOMAIN}\n").into_bytes();
    // serde_json's map is a BTreeMap here (no `preserve_order`), so going
    // through a `Value` sorts every object's keys.
    let value = serde_json::to_value(Canonical { default, fields })
        .unwrap_or_else(|err| unreachable!("rules always serialize: {err}"));
    bytes.extend(value.to_string().into_bytes());
    bytes
}

fn canonical_hash(default: Unlisted, fields: &BTreeMap<String, FieldRule>) -> [u8; 32] {
    Sha256::digest(canonical_bytes(default, fields)).into()
}

fn field_rule(name: &str, field: FieldFile) -> Result<FieldRule, RulesError> {
    if name.is_empty() {
        return Err(RulesError::EmptyName {
            field: name.to_owned(),
        });
    }
    let action = action(name, &field)?;
    if field.quasi_identifier && action == Action::Drop {
        return Err(RulesError::DroppedQuasiIdentifier {
            field: name.to_owned(),
        });
    }
    Ok(FieldRule {
        action,
        quasi_identifier: field.quasi_identifier,
    })
}

/// The action and its parameters; a parameter of another action is refused.
fn action(name: &str, field: &FieldFile) -> Result<Action, RulesError> {
    let (action, wanted): (&'static str, Option<&'static str>) = match field.action.as_str() {
        "keep" => ("keep", None),
        "drop" => ("drop", None),
        "pseudonymise" | "pseudonymize" => ("pseudonymise", None),
        "generalise" | "generalize" => ("generalise", Some("to")),
        "prefix" => ("prefix", Some("keep")),
        "band" => ("band", Some("width")),
        "mask" => ("mask", Some("keep_last")),
        other => {
            return Err(RulesError::UnknownAction {
                field: name.to_owned(),
                got: other.to_owned(),
            });
        }
    };
    let given = [
        ("to", field.to.is_some()),
        ("keep", field.keep.is_some()),
        ("width", field.width.is_some()),
        ("keep_last", field.keep_last.is_some()),
    ];
    for (parameter, present) in given {
        if present && wanted != Some(parameter) {
            return Err(RulesError::UnexpectedParameter {
                field: name.to_owned(),
                action,
                parameter,
            });
        }
    }
    let missing = |parameter| RulesError::MissingParameter {
        field: name.to_owned(),
        action,
        parameter,
    };
    Ok(match action {
        "keep" => Action::Keep,
        "drop" => Action::Drop,
        "pseudonymise" => Action::Pseudonymise,
        "generalise" => {
            let to = field.to.as_deref().ok_or_else(|| missing("to"))?;
            Action::Generalise {
                to: match to {
                    "year" => DatePart::Year,
                    "month" => DatePart::Month,
                    other => {
                        return Err(RulesError::UnknownDatePart {
                            field: name.to_owned(),
                            got: other.to_owned(),
                        });
                    }
                },
            }
        }
        "prefix" => Action::Prefix {
            keep: parameter(name, "keep", field.keep.ok_or_else(|| missing("keep"))?, 1)?,
        },
        "band" => Action::Band {
            width: parameter(
                name,
                "width",
                field.width.ok_or_else(|| missing("width"))?,
                1,
            )?,
        },
        _ => Action::Mask {
            keep_last: parameter(
                name,
                "keep_last",
                field.keep_last.ok_or_else(|| missing("keep_last"))?,
                0,
            )?,
        },
    })
}

fn parameter(field: &str, parameter: &'static str, got: i64, min: u32) -> Result<u32, RulesError> {
    u32::try_from(got)
        .ok()
        .filter(|value| (min..=PARAMETER_MAX).contains(value))
        .ok_or(RulesError::ParameterRange {
            field: field.to_owned(),
            parameter,
            got,
            min,
            max: PARAMETER_MAX,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Rules, RulesError> {
        Rules::parse(text.as_bytes())
    }

    const EXAMPLE: &str = r#"
        [fields.name]
        action = "drop"
        [fields.nid]
        action = "pseudonymise"
        [fields.dob]
        action = "generalise"
        to = "year"
        quasi_identifier = true
        [fields.postcode]
        action = "prefix"
        keep = 3
        quasi_identifier = true
        [fields.age]
        action = "band"
        width = 10
        [fields.phone]
        action = "mask"
        keep_last = 2
        [fields.diagnosis]
        action = "keep"
    "#;

    #[test]
    fn every_action_parses_with_its_parameter() {
        let rules = parse(EXAMPLE).expect("valid");
        assert_eq!(rules.unlisted(), Unlisted::Refuse);
        let action = |name: &str| rules.field(name).expect(name).action;
        assert_eq!(action("name"), Action::Drop);
        assert_eq!(action("nid"), Action::Pseudonymise);
        assert_eq!(action("dob"), Action::Generalise { to: DatePart::Year });
        assert_eq!(action("postcode"), Action::Prefix { keep: 3 });
        assert_eq!(action("age"), Action::Band { width: 10 });
        assert_eq!(action("phone"), Action::Mask { keep_last: 2 });
        assert_eq!(action("diagnosis"), Action::Keep);
        assert_eq!(rules.quasi_identifiers(), vec!["dob", "postcode"]);
    }

    #[test]
    fn an_unlisted_field_is_refused_unless_a_default_says_otherwise() {
        let rules = parse(EXAMPLE).expect("valid");
        assert_eq!(rules.rule_for("email"), None);
        let keep = parse(&format!("default = \"keep\"\n{EXAMPLE}")).expect("valid");
        assert_eq!(keep.rule_for("email").map(|r| r.action), Some(Action::Keep));
        let drop = parse(&format!("default = \"drop\"\n{EXAMPLE}")).expect("valid");
        assert_eq!(drop.rule_for("email").map(|r| r.action), Some(Action::Drop));
        assert_eq!(
            parse(&format!("default = \"allow\"\n{EXAMPLE}")),
            Err(RulesError::UnknownDefault {
                got: "allow".into()
            })
        );
    }

    #[test]
    fn mistakes_are_named_precisely() {
        assert_eq!(
            parse("[fields.a]\naction = \"hash\""),
            Err(RulesError::UnknownAction {
                field: "a".into(),
                got: "hash".into()
            })
        );
        assert_eq!(
            parse("[fields.a]\naction = \"prefix\""),
            Err(RulesError::MissingParameter {
                field: "a".into(),
                action: "prefix",
                parameter: "keep"
            })
        );
        assert_eq!(
            parse("[fields.a]\naction = \"band\"\nwidth = 0"),
            Err(RulesError::ParameterRange {
                field: "a".into(),
                parameter: "width",
                got: 0,
                min: 1,
                max: PARAMETER_MAX
            })
        );
        assert_eq!(
            parse("[fields.a]\naction = \"mask\"\nkeep_last = -1"),
            Err(RulesError::ParameterRange {
                field: "a".into(),
                parameter: "keep_last",
                got: -1,
                min: 0,
                max: PARAMETER_MAX
            })
        );
        assert_eq!(
            parse("[fields.a]\naction = \"drop\"\nwidth = 3"),
            Err(RulesError::UnexpectedParameter {
                field: "a".into(),
                action: "drop",
                parameter: "width"
            })
        );
        assert_eq!(
            parse("[fields.a]\naction = \"generalise\"\nto = \"week\""),
            Err(RulesError::UnknownDatePart {
                field: "a".into(),
                got: "week".into()
            })
        );
        assert_eq!(
            parse("[fields.a]\naction = \"drop\"\nquasi_identifier = true"),
            Err(RulesError::DroppedQuasiIdentifier { field: "a".into() })
        );
        assert_eq!(parse("default = \"keep\""), Err(RulesError::NoFields));
        let Err(RulesError::Toml { reason }) = parse("[fields.a]\nacton = \"drop\"") else {
            panic!("a misspelt key is refused");
        };
        assert!(reason.contains("acton"), "{reason}");
    }

    #[test]
    fn the_hash_ignores_layout_and_follows_meaning() {
        let a =
            parse("[fields.a]\naction = \"drop\"\n[fields.b]\naction = \"keep\"").expect("valid");
        let b =
            parse("# comment\n[fields.b]\naction   = \"keep\"\n\n[fields.a]\naction = \"drop\"\n")
                .expect("valid");
        assert_eq!(a.hash(), b.hash());
        let c = parse("[fields.a]\naction = \"drop\"\n[fields.b]\naction = \"pseudonymise\"")
            .expect("valid");
        assert_ne!(a.hash(), c.hash());
        assert_eq!(
            a.hash(),
            <[u8; 32]>::from(Sha256::digest(a.canonical_bytes()))
        );
        assert!(
            a.canonical_bytes()
                .starts_with(b"govchain-ingest-rules/v1\n")
        );
    }
}
