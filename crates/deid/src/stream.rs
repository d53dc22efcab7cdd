//! Streaming an export through the rules, row by row: CSV to CSV (RFC 4180,
//! the `csv` crate) and JSON Lines to JSON Lines.
//!
//! Memory is bounded by one row, never by the file: a CSV record is
//! buffered by the reader while it is parsed (one row; a quoted field can
//! span lines), a JSONL line is read only up to [`LINE_BYTES_MAX`], and the
//! k-anonymity counter keeps at most `kanon::GROUPS_MAX` groups. Output is
//! written as each row is done.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead, Read, Write};

use serde::Serialize;
use serde_json::Value;

use crate::cell::{self, CellError, PseudonymKey};
use crate::kanon::{KCounter, KReport};
use crate::rules::{Action, FieldRule, Rules};

/// Longest JSONL line; a longer one is a bad row, skipped without being
/// held in memory.
pub const LINE_BYTES_MAX: usize = 1024 * 1024;
/// Longest CSV record; a longer one is a bad row.
pub const RECORD_BYTES_MAX: usize = 1024 * 1024;
/// Bad rows kept for the report; the rest are counted only.
pub const ROW_ERRORS_KEPT_MAX: usize = 1000;

/// The export's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Csv,
    Jsonl,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Fail on the first bad row instead of skipping it.
    pub strict: bool,
}

/// Why a row was skipped. Never holds a value of the row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RowProblem {
    FieldCount { got: u64, expected: u64 },
    NotUtf8 { column: String },
    Value { column: String, reason: String },
    NotJson { reason: String },
    NotAnObject,
    NotAScalar { column: String },
    TooLong { max: u64 },
}

impl fmt::Display for RowProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowProblem::FieldCount { got, expected } => {
                write!(f, "{got} fields where the header has {expected}")
            }
            RowProblem::NotUtf8 { column } => write!(f, "column {column:?}: not UTF-8"),
            RowProblem::Value { column, reason } => write!(f, "column {column:?}: {reason}"),
            RowProblem::NotJson { reason } => write!(f, "not JSON: {reason}"),
            RowProblem::NotAnObject => f.write_str("not a JSON object"),
            RowProblem::NotAScalar { column } => write!(
                f,
                "field {column:?}: an array or object where its rule needs a string or number"
            ),
            RowProblem::TooLong { max } => write!(f, "longer than {max} bytes"),
        }
    }
}

/// A bad row and the line it starts on (1-based; a CSV header is line 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct RowError {
    pub line: u64,
    /// In JSON, the problem's fields sit beside `line`.
    #[serde(flatten)]
    pub problem: RowProblem,
}

/// Why the transform stopped. Nothing written before it may be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransformError {
    #[error("the export has no header line")]
    NoHeader,
    #[error("the header is not UTF-8: {reason}")]
    HeaderNotUtf8 { reason: String },
    #[error("column {column:?} appears twice in the header")]
    DuplicateColumn { column: String },
    #[error(
        "column(s) {columns:?} not named in the rules: add [fields.NAME] with an action for each, or set default = \"drop\""
    )]
    UnlistedColumns { columns: Vec<String> },
    #[error(
        "line {line}: field {field:?} is not named in the rules: add [fields.{field}] with an action, or set default = \"drop\""
    )]
    UnlistedField { line: u64, field: String },
    #[error("the rules name field(s) {fields:?}, which the header does not have")]
    MissingColumns { fields: Vec<String> },
    /// `--strict`: the first bad row.
    #[error("{0} (strict: nothing is written)")]
    Row(RowError),
    #[error("cannot read the export at line {line}: {reason}")]
    Read { line: u64, reason: String },
    #[error("cannot write the output: {0}")]
    Write(#[source] io::Error),
}

/// What a transform did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub format: Format,
    /// Output columns (CSV) or the fields the rules keep (JSONL).
    pub columns: Vec<String>,
    pub rows_read: u64,
    pub rows_written: u64,
    pub rows_skipped: u64,
    /// The first [`ROW_ERRORS_KEPT_MAX`] bad rows.
    pub errors: Vec<RowError>,
    pub k_anonymity: KReport,
}

impl Summary {
    fn new(format: Format, columns: Vec<String>, quasi_identifiers: Vec<String>) -> Self {
        Self {
            format,
            columns,
            rows_read: 0,
            rows_written: 0,
            rows_skipped: 0,
            errors: Vec::new(),
            k_anonymity: KCounter::new(quasi_identifiers).report(),
        }
    }

    /// Records a bad row, or ends the transform with it under `strict`.
    fn skip(&mut self, error: RowError, options: Options) -> Result<(), TransformError> {
        if options.strict {
            return Err(TransformError::Row(error));
        }
        self.rows_skipped += 1;
        if self.errors.len() < ROW_ERRORS_KEPT_MAX {
            self.errors.push(error);
        }
        Ok(())
    }
}

/// Transforms `input` in `format` into `output` in the same format.
pub fn transform(
    format: Format,
    input: impl Read,
    output: impl Write,
    rules: &Rules,
    key: &PseudonymKey,
    options: Options,
) -> Result<Summary, TransformError> {
    match format {
        Format::Csv => transform_csv(input, output, rules, key, options),
        Format::Jsonl => transform_jsonl(io::BufReader::new(input), output, rules, key, options),
    }
}

/// Each input column's rule, from the header.
struct CsvPlan {
    columns: Vec<(String, FieldRule)>,
    /// Output positions of the quasi-identifiers, in rules order.
    quasi_identifiers: Vec<usize>,
}

fn csv_plan(header: &csv::StringRecord, rules: &Rules) -> Result<CsvPlan, TransformError> {
    if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
        return Err(TransformError::NoHeader);
    }
    let mut columns: Vec<(String, FieldRule)> = Vec::new();
    let mut unlisted = Vec::new();
    for name in header {
        if columns.iter().any(|(seen, _)| seen == name) {
            return Err(TransformError::DuplicateColumn {
                column: name.to_owned(),
            });
        }
        match rules.rule_for(name) {
            Some(rule) => columns.push((name.to_owned(), rule)),
            None => unlisted.push(name.to_owned()),
        }
    }
    if !unlisted.is_empty() {
        return Err(TransformError::UnlistedColumns { columns: unlisted });
    }
    let missing: Vec<String> = rules
        .fields()
        .keys()
        .filter(|field| !header.iter().any(|name| name == field.as_str()))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(TransformError::MissingColumns { fields: missing });
    }
    let kept: Vec<&str> = columns
        .iter()
        .filter(|(_, rule)| rule.action != Action::Drop)
        .map(|(name, _)| name.as_str())
        .collect();
    let quasi_identifiers = rules
        .quasi_identifiers()
        .iter()
        .filter_map(|qi| kept.iter().position(|name| name == qi))
        .collect();
    Ok(CsvPlan {
        columns,
        quasi_identifiers,
    })
}

fn transform_csv(
    input: impl Read,
    output: impl Write,
    rules: &Rules,
    key: &PseudonymKey,
    options: Options,
) -> Result<Summary, TransformError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::Headers)
        .from_reader(input);
    let header = reader.headers().map_err(|err| match err.kind() {
        csv::ErrorKind::Utf8 { err, .. } => TransformError::HeaderNotUtf8 {
            reason: err.to_string(),
        },
        _ => read_error(&err, 1),
    })?;
    let plan = csv_plan(header, rules)?;
    let kept: Vec<String> = plan
        .columns
        .iter()
        .filter(|(_, rule)| rule.action != Action::Drop)
        .map(|(name, _)| name.clone())
        .collect();
    let quasi_identifiers = plan
        .quasi_identifiers
        .iter()
        .map(|i| kept[*i].clone())
        .collect();
    let mut counter = KCounter::new(quasi_identifiers);
    let mut summary = Summary::new(Format::Csv, kept.clone(), counter.columns().to_vec());
    let mut writer = csv::Writer::from_writer(output);
    writer.write_record(&kept).map_err(write_error)?;
    let mut record = csv::ByteRecord::new();
    let mut out = Vec::with_capacity(kept.len());
    loop {
        let line = reader.position().line();
        match reader.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(err) => return Err(read_error(&err, line)),
        }
        let line = record.position().map_or(line, |position| position.line());
        summary.rows_read += 1;
        out.clear();
        match csv_row(&record, &plan, key, &mut out) {
            Ok(()) => {
                counter.count(plan.quasi_identifiers.iter().map(|i| out[*i].as_str()));
                writer.write_record(&out).map_err(write_error)?;
                summary.rows_written += 1;
            }
            Err(problem) => summary.skip(RowError { line, problem }, options)?,
        }
    }
    writer.flush().map_err(TransformError::Write)?;
    summary.k_anonymity = counter.report();
    Ok(summary)
}

fn csv_row(
    record: &csv::ByteRecord,
    plan: &CsvPlan,
    key: &PseudonymKey,
    out: &mut Vec<String>,
) -> Result<(), RowProblem> {
    if record.as_slice().len() > RECORD_BYTES_MAX {
        return Err(RowProblem::TooLong {
            max: RECORD_BYTES_MAX as u64,
        });
    }
    if record.len() != plan.columns.len() {
        return Err(RowProblem::FieldCount {
            got: record.len() as u64,
            expected: plan.columns.len() as u64,
        });
    }
    for (bytes, (column, rule)) in record.iter().zip(&plan.columns) {
        if rule.action == Action::Drop {
            continue;
        }
        let value = std::str::from_utf8(bytes).map_err(|_| RowProblem::NotUtf8 {
            column: column.clone(),
        })?;
        if let Some(value) = apply(rule.action, value, key, column)? {
            out.push(value);
        }
    }
    Ok(())
}

fn apply(
    action: Action,
    value: &str,
    key: &PseudonymKey,
    column: &str,
) -> Result<Option<String>, RowProblem> {
    cell::apply(action, value, key).map_err(|err: CellError| RowProblem::Value {
        column: column.to_owned(),
        reason: err.to_string(),
    })
}

fn read_error(err: &csv::Error, line: u64) -> TransformError {
    TransformError::Read {
        line: err.position().map_or(line, |position| position.line()),
        reason: err.to_string(),
    }
}

fn write_error(err: csv::Error) -> TransformError {
    match err.into_kind() {
        csv::ErrorKind::Io(err) => TransformError::Write(err),
        other => TransformError::Write(io::Error::other(format!("{other:?}"))),
    }
}

/// How one bounded line read ended.
enum Line {
    /// A whole line is in the buffer (without its newline).
    Read,
    /// The line was longer than the bound; it was consumed, not kept.
    TooLong,
    End,
}

/// Reads one line into `buffer`, holding at most `max` bytes of it.
fn read_line_bounded(
    input: &mut impl BufRead,
    buffer: &mut Vec<u8>,
    max: usize,
) -> io::Result<Line> {
    buffer.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let available = input.fill_buf()?;
        if available.is_empty() {
            return Ok(match (any, too_long) {
                (false, _) => Line::End,
                (true, true) => Line::TooLong,
                (true, false) => Line::Read,
            });
        }
        any = true;
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(end) => (&available[..end], Some(end + 1)),
            None => (available, None),
        };
        if !too_long && buffer.len() + chunk.len() <= max {
            buffer.extend_from_slice(chunk);
        } else {
            too_long = true;
            buffer.clear();
        }
        let consumed = done.unwrap_or(available.len());
        input.consume(consumed);
        if done.is_some() {
            return Ok(if too_long { Line::TooLong } else { Line::Read });
        }
    }
}

fn transform_jsonl(
    mut input: impl BufRead,
    mut output: impl Write,
    rules: &Rules,
    key: &PseudonymKey,
    options: Options,
) -> Result<Summary, TransformError> {
    let kept: Vec<String> = rules
        .fields()
        .iter()
        .filter(|(_, rule)| rule.action != Action::Drop)
        .map(|(name, _)| name.clone())
        .collect();
    let quasi_identifiers: Vec<String> = rules
        .quasi_identifiers()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut counter = KCounter::new(quasi_identifiers.clone());
    let mut summary = Summary::new(Format::Jsonl, kept, quasi_identifiers.clone());
    let mut buffer = Vec::new();
    let mut line: u64 = 0;
    loop {
        line += 1;
        let read = read_line_bounded(&mut input, &mut buffer, LINE_BYTES_MAX).map_err(|err| {
            TransformError::Read {
                line,
                reason: err.to_string(),
            }
        })?;
        let problem = match read {
            Line::End => break,
            Line::TooLong => Some(RowProblem::TooLong {
                max: LINE_BYTES_MAX as u64,
            }),
            Line::Read if buffer.iter().all(u8::is_ascii_whitespace) => continue,
            Line::Read => None,
        };
        summary.rows_read += 1;
        let row = match problem {
            Some(problem) => Err(problem),
            None => jsonl_row(&buffer, rules, key, line)?,
        };
        match row {
            Ok(object) => {
                let group: Vec<String> = quasi_identifiers
                    .iter()
                    .map(|qi| group_text(object.get(qi)))
                    .collect();
                counter.count(group.iter().map(String::as_str));
                serde_json::to_writer(&mut output, &object)
                    .map_err(|err| TransformError::Write(err.into()))?;
                output.write_all(b"\n").map_err(TransformError::Write)?;
                summary.rows_written += 1;
            }
            Err(problem) => summary.skip(RowError { line, problem }, options)?,
        }
    }
    output.flush().map_err(TransformError::Write)?;
    summary.k_anonymity = counter.report();
    Ok(summary)
}

/// The counted text of an output value: its JSON text, so that the string
/// "34" and the number 34 are different groups (merging them would
/// overstate k); absent counts as null.
fn group_text(value: Option<&Value>) -> String {
    value.map_or_else(|| Value::Null.to_string(), Value::to_string)
}

/// One JSONL row: a bad row is `Ok(Err(problem))`; a field the rules do not
/// name (with default refuse) stops the transform, as a CSV column would.
fn jsonl_row(
    bytes: &[u8],
    rules: &Rules,
    key: &PseudonymKey,
    line: u64,
) -> Result<Result<BTreeMap<String, Value>, RowProblem>, TransformError> {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    // A syntax error names its place, never the text.
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(err) => {
            return Ok(Err(RowProblem::NotJson {
                reason: format!("{:?} error at column {}", err.classify(), err.column()),
            }));
        }
    };
    let Value::Object(object) = value else {
        return Ok(Err(RowProblem::NotAnObject));
    };
    let mut out = BTreeMap::new();
    for (field, value) in object {
        let Some(rule) = rules.rule_for(&field) else {
            return Err(TransformError::UnlistedField { line, field });
        };
        match json_value(rule.action, value, key, &field) {
            Ok(Some(value)) => {
                out.insert(field, value);
            }
            Ok(None) => {}
            Err(problem) => return Ok(Err(problem)),
        }
    }
    Ok(Ok(out))
}

fn json_value(
    action: Action,
    value: Value,
    key: &PseudonymKey,
    field: &str,
) -> Result<Option<Value>, RowProblem> {
    match (action, value) {
        (Action::Drop, _) => Ok(None),
        (Action::Keep, value) => Ok(Some(value)),
        (_, Value::Null) => Ok(Some(Value::Null)),
        (_, Value::Array(_) | Value::Object(_)) => Err(RowProblem::NotAScalar {
            column: field.to_owned(),
        }),
        (action, Value::String(text)) => Ok(apply(action, &text, key, field)?.map(Value::String)),
        (action, scalar) => Ok(apply(action, &scalar.to_string(), key, field)?.map(Value::String)),
    }
}

#[cfg(test)]
mod tests;
