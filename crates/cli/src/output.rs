//! Formatting answers for people (aligned `key: value` lines and tables) and
//! for programs (JSON), and writing them to stdout.
//!
//! **Invariant:** answers go to stdout, everything else (warnings, progress,
//! errors) to stderr, so that `govchain ... --json | jq` always sees JSON.

use std::io::{self, Write as _};

use serde::Serialize;

/// Writes `text` and a newline to stdout. A closed pipe comes back as an
/// `io::Error`, which `main` treats as a normal end.
/// A progress bar on stderr with `template` (indicatif's syntax) and the
/// project's `=> ` bar; hidden with `--json`. Every long command uses it.
pub fn progress_bar(
    json: bool,
    length: u64,
    template: &str,
    message: &str,
) -> indicatif::ProgressBar {
    let bar = if json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(length)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(template).map_or_else(
            |_| indicatif::ProgressStyle::default_bar(),
            |style| style.progress_chars("=> "),
        ),
    );
    bar.set_message(message.to_owned());
    bar
}

pub fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        stdout.write_all(b"\n")?;
    }
    stdout.flush()?;
    Ok(())
}

/// Pretty JSON for one answer.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    print(&serde_json::to_string_pretty(value)?)
}

/// Compact JSON, one value per line, for streams (`blocks follow`).
pub fn print_json_line<T: Serialize>(value: &T) -> anyhow::Result<()> {
    print(&serde_json::to_string(value)?)
}

/// Folds any line breaks and control characters into spaces, so that an error
/// from a remote node can not break the one-line error contract.
pub fn one_line(text: &str) -> String {
    let replaced: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    replaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `key: value` lines with the values aligned in one column.
#[derive(Debug, Default)]
pub struct Fields {
    rows: Vec<(String, String)>,
}

impl Fields {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, key: &str, value: impl ToString) -> &mut Self {
        self.rows.push((key.to_owned(), value.to_string()));
        self
    }

    pub fn render(&self) -> String {
        let width = self
            .rows
            .iter()
            .map(|(key, _)| key.chars().count())
            .max()
            .unwrap_or(0);
        self.rows
            .iter()
            .map(|(key, value)| {
                let label = format!("{key}:");
                format!("{label:<pad$}{value}", pad = width + 2)
                    .trim_end()
                    .to_owned()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A table with a header row and left-aligned columns two spaces apart.
#[derive(Debug)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|cell| (*cell).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn add(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self
            .header
            .iter()
            .map(|cell| cell.chars().count())
            .collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        std::iter::once(&self.header)
            .chain(&self.rows)
            .map(|row| {
                let line: String = row
                    .iter()
                    .take(columns)
                    .zip(&widths)
                    .map(|(cell, width)| format!("{cell:<width$}  "))
                    .collect();
                line.trim_end().to_owned()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds,
/// e.g. `2024-02-29T13:05:09.042Z`. Written out here rather than pulling in a
/// date crate for one format.
pub fn format_time_ms(unix_ms: u64) -> String {
    const MS_PER_DAY: u64 = 86_400_000;
    let days = unix_ms / MS_PER_DAY;
    let ms_of_day = unix_ms % MS_PER_DAY;
    let (year, month, day) = civil_from_days(days);
    let hours = ms_of_day / 3_600_000;
    let minutes = ms_of_day / 60_000 % 60;
    let seconds = ms_of_day / 1000 % 60;
    let millis = ms_of_day % 1000;
    format!("{year:04}-{month:02}-{day:02}T{hours:02}:{minutes:02}:{seconds:02}.{millis:03}Z")
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), after
/// Howard Hinnant's `civil_from_days`, for non-negative day counts.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A time for people: RFC 3339, or `-` for 0, which the API uses for "none".
pub fn time_or_dash(unix_ms: u64) -> String {
    if unix_ms == 0 {
        "-".to_owned()
    } else {
        format_time_ms(unix_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_align_values() {
        let mut fields = Fields::new();
        fields.add("height", 12).add("head hash", "ab").add("x", "");
        assert_eq!(fields.render(), "height:    12\nhead hash: ab\nx:");
    }

    #[test]
    fn table_aligns_columns() {
        let mut table = Table::new(&["NODE", "HEIGHT"]);
        table.add(vec!["health".into(), "7".into()]);
        table.add(vec!["tax".into(), "12".into()]);
        assert_eq!(table.render(), "NODE    HEIGHT\nhealth  7\ntax     12");
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(format_time_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_time_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            format_time_ms(1_709_211_909_042),
            "2024-02-29T13:05:09.042Z"
        );
        assert_eq!(
            format_time_ms(4_102_444_799_999),
            "2099-12-31T23:59:59.999Z"
        );
        assert_eq!(time_or_dash(0), "-");
    }

    #[test]
    fn one_line_folds_line_breaks() {
        assert_eq!(one_line("a\nb\r\n  c\t"), "a b c");
    }
}
