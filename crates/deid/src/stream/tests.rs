use proptest::prelude::*;

use super::*;

const RULES: &str = r#"
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
    [fields.phone]
    action = "mask"
    keep_last = 2
    [fields.diagnosis]
    action = "keep"
"#;

fn rules() -> Rules {
    Rules::parse(RULES.as_bytes()).expect("valid rules")
}

fn key() -> PseudonymKey {
    PseudonymKey::new(&[9; 32]).expect("key")
}

fn run(format: Format, input: &str, strict: bool) -> (Result<Summary, TransformError>, String) {
    let mut out = Vec::new();
    let result = transform(
        format,
        input.as_bytes(),
        &mut out,
        &rules(),
        &key(),
        Options { strict },
    );
    (result, String::from_utf8(out).expect("utf-8 output"))
}

const CSV: &str = "name,nid,dob,postcode,phone,diagnosis\n\
    Ada Lovelace,NI-1001,1815-12-10,SW1A 1AA,07700900123,flu\n\
    Alan Turing,NI-1002,1912-06-23,SW1B 2BB,07700900456,cold\n";

#[test]
fn csv_rows_are_transformed_column_by_column() {
    let (result, out) = run(Format::Csv, CSV, false);
    let summary = result.expect("transforms");
    let nid = key().pseudonym("NI-1001");
    assert_eq!(
        out,
        format!(
            "nid,dob,postcode,phone,diagnosis\n{nid},1815,SW1,*********23,flu\n{},1912,SW1,*********56,cold\n",
            key().pseudonym("NI-1002")
        )
    );
    assert_eq!(
        (
            summary.rows_read,
            summary.rows_written,
            summary.rows_skipped
        ),
        (2, 2, 0)
    );
    assert_eq!(
        summary.columns,
        ["nid", "dob", "postcode", "phone", "diagnosis"]
    );
    assert_eq!(summary.k_anonymity.columns, ["dob", "postcode"]);
    assert_eq!(summary.k_anonymity.k, Some(1));
}

#[test]
fn bad_rows_are_skipped_with_their_line_numbers() {
    let input = format!(
        "{CSV}Bad Date,NI-1003,10/12/1815,SW1A,0770,flu\nShort,NI-1004\n\"Quoted\nName\",NI-1005,1900-01-01,N1 1AA,0123,ok\nx,NI-1006,1900-13-01,N1,1,ok\n"
    );
    let (result, out) = run(Format::Csv, &input, false);
    let summary = result.expect("transforms");
    assert_eq!(
        (
            summary.rows_read,
            summary.rows_written,
            summary.rows_skipped
        ),
        (6, 3, 3)
    );
    let lines: Vec<u64> = summary.errors.iter().map(|e| e.line).collect();
    // The quoted name spans lines 6 and 7, so the next row starts on 8.
    assert_eq!(lines, [4, 5, 8]);
    assert_eq!(
        summary.errors[0].to_string(),
        "line 4: column \"dob\": not a date (expected YYYY-MM-DD, YYYY-MM or YYYY; got 10 characters)"
    );
    assert_eq!(
        summary.errors[1].to_string(),
        "line 5: 2 fields where the header has 6"
    );
    assert_eq!(
        serde_json::to_value(&summary.errors[1]).expect("json"),
        serde_json::json!({"line": 5, "problem": "field_count", "got": 2, "expected": 6})
    );
    assert!(!out.contains("NI-100"), "{out}");
    for error in &summary.errors {
        assert!(
            !error.to_string().contains("10/12/1815"),
            "no value in {error}"
        );
    }
}

#[test]
fn strict_stops_at_the_first_bad_row() {
    let input = format!("{CSV}Short,NI-1004\nAlso,Short\n");
    let (result, _) = run(Format::Csv, &input, true);
    let Err(TransformError::Row(error)) = result else {
        panic!("strict fails: {result:?}");
    };
    assert_eq!(error.line, 4);
    assert_eq!(
        error.problem,
        RowProblem::FieldCount {
            got: 2,
            expected: 6
        }
    );
}

#[test]
fn the_header_must_match_the_rules() {
    let (result, _) = run(
        Format::Csv,
        "name,nid,email,dob,postcode,phone,diagnosis,notes\n",
        false,
    );
    let Err(TransformError::UnlistedColumns { columns }) = result else {
        panic!("refused: {result:?}");
    };
    assert_eq!(columns, ["email", "notes"]);
    let (result, _) = run(Format::Csv, "name,nid,dob\n", false);
    let Err(TransformError::MissingColumns { fields }) = result else {
        panic!("refused: {result:?}");
    };
    assert_eq!(fields, ["diagnosis", "phone", "postcode"]);
    let (result, _) = run(Format::Csv, "name,name,nid\n", false);
    assert!(
        matches!(&result, Err(TransformError::DuplicateColumn { column }) if column == "name"),
        "{result:?}"
    );
}

#[test]
fn jsonl_rows_are_transformed_and_bad_lines_skipped() {
    let input = "{\"name\":\"Ada\",\"nid\":\"NI-1\",\"dob\":\"1815-12-10\",\"postcode\":\"SW1A\",\"phone\":\"0123\",\"diagnosis\":{\"code\":\"J10\"}}\n\
        \n\
        not json at all\n\
        [1,2]\n\
        {\"nid\":[\"NI-2\"]}\n\
        {\"name\":\"Bob\",\"dob\":null,\"phone\":12345}\r\n";
    let (result, out) = run(Format::Jsonl, input, false);
    let summary = result.expect("transforms");
    assert_eq!(
        (
            summary.rows_read,
            summary.rows_written,
            summary.rows_skipped
        ),
        (5, 2, 3)
    );
    let lines: Vec<u64> = summary.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [3, 4, 5]);
    assert_eq!(summary.errors[1].problem, RowProblem::NotAnObject);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(
        rows[0],
        serde_json::json!({"nid": key().pseudonym("NI-1"), "dob": "1815", "postcode": "SW1",
            "phone": "**23", "diagnosis": {"code": "J10"}})
    );
    assert_eq!(rows[1], serde_json::json!({"dob": null, "phone": "***45"}));
    assert!(!out.contains("Ada") && !out.contains("Bob"), "{out}");
}

#[test]
fn jsonl_groups_tell_numbers_strings_and_absence_apart() {
    let rules =
        Rules::parse(b"[fields.age]\naction = \"keep\"\nquasi_identifier = true\n").expect("valid");
    let count = |input: &str| {
        let summary = transform(
            Format::Jsonl,
            input.as_bytes(),
            Vec::new(),
            &rules,
            &key(),
            Options::default(),
        )
        .expect("transforms");
        (summary.k_anonymity.k, summary.k_anonymity.groups)
    };
    assert_eq!(count("{\"age\":30}\n{\"age\":31}\n"), (Some(1), 2));
    assert_eq!(count("{\"age\":30}\n{\"age\":\"30\"}\n"), (Some(1), 2));
    assert_eq!(count("{\"age\":30}\n{\"age\":30}\n"), (Some(2), 1));
    assert_eq!(count("{}\n{\"age\":null}\n"), (Some(2), 1));
}

#[test]
fn a_jsonl_field_the_rules_do_not_name_stops_the_transform() {
    let (result, _) = run(
        Format::Jsonl,
        "{\"name\":\"a\"}\n{\"email\":\"a@b\"}\n",
        false,
    );
    let Err(TransformError::UnlistedField { line, field }) = result else {
        panic!("refused: {result:?}");
    };
    assert_eq!((line, field.as_str()), (2, "email"));
}

#[test]
fn an_overlong_jsonl_line_is_skipped_without_being_kept() {
    let long = format!("{{\"diagnosis\":\"{}\"}}\n", "x".repeat(LINE_BYTES_MAX));
    let input = format!("{long}{{\"diagnosis\":\"ok\"}}\n");
    let (result, out) = run(Format::Jsonl, &input, false);
    let summary = result.expect("transforms");
    assert_eq!(summary.errors[0].line, 1);
    assert_eq!(
        summary.errors[0].problem,
        RowProblem::TooLong {
            max: LINE_BYTES_MAX as u64
        }
    );
    assert_eq!(out, "{\"diagnosis\":\"ok\"}\n");
}

#[test]
fn bounded_lines_split_at_newlines_only() {
    let mut input = io::BufReader::with_capacity(4, "abcdef\nxy\n\nlast".as_bytes());
    let mut buffer = Vec::new();
    let mut lines = Vec::new();
    loop {
        match read_line_bounded(&mut input, &mut buffer, 5).expect("reads") {
            Line::End => break,
            Line::TooLong => lines.push("<too long>".to_owned()),
            Line::Read => lines.push(String::from_utf8(buffer.clone()).expect("utf-8")),
        }
    }
    assert_eq!(lines, ["<too long>", "xy", "", "last"]);
}

fn cell_value() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9 .'-]{3,20}"
}

proptest! {
    /// No output cell ever equals an input cell of a dropped or
    /// pseudonymised column, and each is written exactly once per row.
    #[test]
    fn dropped_and_pseudonymised_values_never_reach_the_output(
        rows in proptest::collection::vec((cell_value(), cell_value(), 1900u32..2020, cell_value()), 1..30)
    ) {
        let mut input = String::from("name,nid,dob,postcode,phone,diagnosis\n");
        for (name, nid, year, diagnosis) in &rows {
            input.push_str(&format!("\"{name}\",\"{nid}\",{year}-01-02,AB1 2CD,0123456,\"{diagnosis}\"\n"));
        }
        let (result, out) = run(Format::Csv, &input, true);
        let summary = result.expect("every row is valid");
        prop_assert_eq!(summary.rows_written, rows.len() as u64);
        let mut reader = csv::Reader::from_reader(out.as_bytes());
        for (record, (name, nid, _, _)) in reader.records().zip(&rows) {
            let record = record.expect("csv output");
            for cell in record.iter() {
                prop_assert_ne!(cell, name.as_str());
                prop_assert_ne!(cell, nid.as_str());
            }
            let pseudonym = key().pseudonym(nid);
            prop_assert_eq!(&record[0], pseudonym.as_str());
        }
    }
}

proptest! {
    /// The same for JSON Lines, whatever the values' characters (JSON
    /// escapes included): the raw value is never in the output text.
    #[test]
    fn jsonl_hides_dropped_and_pseudonymised_values(
        rows in proptest::collection::vec(("\\PC{6,20}", "\\PC{6,20}"), 1..20)
    ) {
        let mut input = String::new();
        for (name, nid) in &rows {
            input.push_str(&serde_json::json!({"name": name, "nid": nid, "diagnosis": "ok"}).to_string());
            input.push('\n');
        }
        let (result, out) = run(Format::Jsonl, &input, true);
        prop_assert_eq!(result.expect("valid rows").rows_written, rows.len() as u64);
        for ((name, nid), line) in rows.iter().zip(out.lines()) {
            let value: serde_json::Value = serde_json::from_str(line).expect("json");
            prop_assert_eq!(value.get("name"), None);
            let pseudonym = key().pseudonym(nid);
            prop_assert_eq!(value["nid"].as_str(), Some(pseudonym.as_str()));
            prop_assert!(!line.contains(name.as_str()) && !line.contains(nid.as_str()));
        }
    }
}
