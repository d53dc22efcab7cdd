//! The rules of automatic workflow steps: CEL expressions (the `cel`
//! crate) checked when a workflow is defined and evaluated when a case's
//! transaction commits.
//!
//! **Invariant:** evaluation is a function of its [`RuleInput`] alone.
//! The input is built from world state at the transaction, with sorted
//! collections; rules may not iterate a map (comprehension macros are
//! refused, and CEL maps iterate in no fixed order), read a clock (the
//! crate is built without `chrono`, so no `timestamp`, `duration` or
//! `now`), or call anything outside [`FUNCTIONS`].
//!
//! **Invariant:** cost is bounded. A rule is at most [`RULE_BYTES_MAX`]
//! bytes with brackets nested at most [`RULE_NESTING_MAX`] deep, and,
//! without comprehensions, evaluation visits each node of the expression
//! once; the input is bounded by the case ([`super::STEPS_MAX`] steps,
//! [`super::DOCUMENTS_MAX`] documents) and the applicant's attributes
//! ([`crate::identity::ATTRIBUTES_MAX`], each attested by at most every
//! genesis department).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::objects::{Key, Map};
use cel::{Context, Program, Value};

/// Longest rule, in bytes.
pub const RULE_BYTES_MAX: usize = 1024;
/// Deepest nesting of `(`, `[` and `{` in a rule: bounds the parser's
/// recursion before it runs.
pub const RULE_NESTING_MAX: usize = 16;
/// Longest recorded outcome ([`super::TEXT_BYTES_MAX`]).
const OUTCOME_BYTES_MAX: usize = super::TEXT_BYTES_MAX;

/// The variables a rule may read.
pub const VARIABLES: [&str; 4] = ["applicant", "steps", "documents", "case"];

/// The functions and operators a rule may call: comparisons, boolean
/// logic, arithmetic, indexing, `in`, and a few pure functions of strings
/// and lists. `has(x.f)` is a field test, not a call, and is allowed.
pub const FUNCTIONS: [&str; 23] = [
    "_?_:_",
    "_&&_",
    "_||_",
    "!_",
    "@not_strictly_false",
    "_==_",
    "_!=_",
    "_<_",
    "_<=_",
    "_>_",
    "_>=_",
    "_+_",
    "_-_",
    "_*_",
    "_/_",
    "_%_",
    "-_",
    "_[_]",
    "@in",
    "size",
    "contains",
    "startsWith",
    "endsWith",
];

/// What a rule sees of a case, built from world state (sorted maps, so
/// that every validator builds the same input).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleInput {
    /// Attribute name → the departments with a current, valid attestation
    /// of the applicant's value, sorted.
    pub attested: BTreeMap<String, Vec<String>>,
    /// The applicant's department; empty for a citizen.
    pub applicant_department: String,
    /// Step id → "blocked", "ready" or "approved".
    pub steps: BTreeMap<String, String>,
    /// The case's document names, in the case's order.
    pub documents: Vec<String>,
    pub workflow_id: String,
    pub workflow_version: u64,
}

/// Checks a rule when a workflow is defined: its size and nesting, that it
/// parses, and that it uses only [`VARIABLES`] and [`FUNCTIONS`] and no
/// comprehension. The error is the message of the refused transaction.
pub fn validate_rule(rule: &str) -> Result<(), String> {
    compile(rule).map(|_| ())
}

fn compile(rule: &str) -> Result<Program, String> {
    if rule.trim().is_empty() {
        return Err("the rule is empty".into());
    }
    if rule.len() > RULE_BYTES_MAX {
        return Err(format!(
            "the rule is {} bytes, at most {RULE_BYTES_MAX}",
            rule.len()
        ));
    }
    let nesting = nesting_depth(rule);
    if nesting > RULE_NESTING_MAX {
        return Err(format!(
            "the rule nests brackets {nesting} deep, at most {RULE_NESTING_MAX}"
        ));
    }
    let program = Program::compile(rule).map_err(|err| {
        let text = err.to_string();
        format!("the rule does not parse as CEL: {}", text.trim())
    })?;
    check_expression(program.expression())?;
    Ok(program)
}

/// The deepest bracket nesting, counting outside string literals loosely
/// (a bracket inside a string counts too, which only errs on the safe
/// side).
fn nesting_depth(rule: &str) -> usize {
    let mut depth: usize = 0;
    let mut deepest = 0;
    for byte in rule.bytes() {
        match byte {
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn check_expression(expression: &IdedExpr) -> Result<(), String> {
    match &expression.expr {
        Expr::Unspecified => Err("the rule has an empty expression".into()),
        Expr::Literal(_) => Ok(()),
        Expr::Ident(name) => {
            if VARIABLES.contains(&name.as_str()) {
                return Ok(());
            }
            Err(format!(
                "the rule reads unknown variable {name:?}; the variables are {}",
                VARIABLES.join(", ")
            ))
        }
        Expr::Select(select) => check_expression(&select.operand),
        Expr::Call(call) => {
            if !FUNCTIONS.contains(&call.func_name.as_str()) {
                return Err(format!(
                    "the rule calls {:?}, which rules may not use; they may use operators, indexing, `in`, has(), size, contains, startsWith and endsWith",
                    call.func_name
                ));
            }
            if let Some(target) = &call.target {
                check_expression(target)?;
            }
            call.args.iter().try_for_each(check_expression)
        }
        Expr::List(list) => list.elements.iter().try_for_each(check_expression),
        Expr::Map(map) => map.entries.iter().try_for_each(|entry| match &entry.expr {
            EntryExpr::MapEntry(entry) => {
                check_expression(&entry.key)?;
                check_expression(&entry.value)
            }
            EntryExpr::StructField(_) => Err("the rule builds a message, which rules may not".into()),
        }),
        Expr::Comprehension(_) => Err(
            "the rule uses a comprehension (all, exists, exists_one, map or filter), which rules may not: CEL maps iterate in no fixed order; test membership with `in` instead".into(),
        ),
        Expr::Struct(_) => Err("the rule builds a message, which rules may not".into()),
    }
}

/// Evaluates a rule over a case: `Ok(true)` approves the step, `Ok(false)`
/// leaves it waiting, `Err` says why it could not be decided (a rule that
/// no longer checks, a missing key, a result that is not a bool).
pub fn evaluate(rule: &str, input: &RuleInput) -> Result<bool, String> {
    let program = compile(rule)?;
    let mut context = Context::default();
    context.add_variable_from_value("applicant", applicant_value(input));
    context.add_variable_from_value("steps", string_map(&input.steps));
    context.add_variable_from_value(
        "documents",
        Value::List(Arc::new(
            input.documents.iter().map(|d| string(d)).collect(),
        )),
    );
    context.add_variable_from_value("case", case_value(input));
    match program.execute(&context) {
        Ok(Value::Bool(result)) => Ok(result),
        Ok(other) => Err(format!("the rule gave a {}, not a bool", other.type_of())),
        Err(err) => Err(err.to_string()),
    }
}

/// The outcome recorded on the case step, at most 256 bytes.
pub fn outcome_text(outcome: &Result<bool, String>) -> String {
    let mut text = match outcome {
        Ok(result) => result.to_string(),
        Err(why) => format!("error: {why}"),
    };
    if text.len() > OUTCOME_BYTES_MAX {
        let mut end = OUTCOME_BYTES_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

fn string(text: &str) -> Value {
    Value::String(Arc::new(text.to_owned()))
}

fn map(entries: impl IntoIterator<Item = (String, Value)>) -> Value {
    let map: HashMap<Key, Value> = entries
        .into_iter()
        .map(|(key, value)| (Key::String(Arc::new(key)), value))
        .collect();
    Value::Map(Map { map: Arc::new(map) })
}

fn string_map(entries: &BTreeMap<String, String>) -> Value {
    map(entries.iter().map(|(k, v)| (k.clone(), string(v))))
}

fn applicant_value(input: &RuleInput) -> Value {
    let attested = map(input.attested.iter().map(|(name, departments)| {
        let list = departments.iter().map(|d| string(d)).collect();
        (name.clone(), Value::List(Arc::new(list)))
    }));
    map([
        ("attested".to_owned(), attested),
        ("department".to_owned(), string(&input.applicant_department)),
    ])
}

fn case_value(input: &RuleInput) -> Value {
    let version = i64::try_from(input.workflow_version).unwrap_or(i64::MAX);
    map([
        ("workflow_id".to_owned(), string(&input.workflow_id)),
        ("workflow_version".to_owned(), Value::Int(version)),
    ])
}
