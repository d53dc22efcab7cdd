//! One value through one rule: pure functions of the value (and, for
//! pseudonyms, the key).
//!
//! An empty value stays empty under every action but `drop`: absence is
//! not personal, and a constant pseudonym for "missing" would be noise.
//! Errors never quote the value: they are printed, and the value may be
//! personal.

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use crate::rules::{Action, DatePart};

/// Shortest department secret: 256 bits, the HMAC-SHA-256 key size.
pub const SECRET_BYTES_MIN: usize = 32;
/// Longest department secret (HMAC hashes longer keys first; more is pointless).
pub const SECRET_BYTES_MAX: usize = 4096;
/// Bytes of the HMAC kept in a pseudonym: 128 bits, hex-encoded. Collisions
/// among 2^32 distinct values have probability about 2^-65.
pub const PSEUDONYM_BYTES: usize = 16;
/// Domain of the pseudonym MAC: a department secret used elsewhere gives
/// other values.
const PSEUDONYM_DOMAIN: &[u8] = b"govchain-ingest/pseudonym/v1\0";

/// The department secret behind pseudonyms. It never leaves the
/// department: only pseudonyms computed under it do. `Debug` does not show it.
#[derive(Clone)]
pub struct PseudonymKey {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PseudonymKey(..)")
    }
}

/// A secret of the wrong size.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    #[error(
        "the secret has {got} bytes; it needs {min} to {max} random bytes (`govchain ingest --new-secret FILE` makes one)"
    )]
    Length { got: usize, min: usize, max: usize },
}

impl PseudonymKey {
    pub fn new(secret: &[u8]) -> Result<Self, KeyError> {
        if !(SECRET_BYTES_MIN..=SECRET_BYTES_MAX).contains(&secret.len()) {
            return Err(KeyError::Length {
                got: secret.len(),
                min: SECRET_BYTES_MIN,
                max: SECRET_BYTES_MAX,
            });
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret)
            .unwrap_or_else(|err| unreachable!("HMAC takes keys of any length: {err}"));
        Ok(Self { mac })
    }

    /// The pseudonym of `value`: hex of the first [`PSEUDONYM_BYTES`] of
    /// HMAC-SHA-256(secret, domain ‖ value).
    pub fn pseudonym(&self, value: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(PSEUDONYM_DOMAIN);
        mac.update(value.as_bytes());
        let tag = mac.finalize().into_bytes();
        hex::encode(&tag[..PSEUDONYM_BYTES])
    }
}

/// Why one value could not go through its rule. Never holds the value.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CellError {
    #[error("not a date (expected YYYY-MM-DD, YYYY-MM or YYYY; got {chars} characters)")]
    NotADate { chars: usize },
    #[error("not a whole number from 0 to {max} (got {chars} characters)")]
    NotANumber { chars: usize, max: u64 },
}

/// Largest number `band` accepts.
pub const BAND_NUMBER_MAX: u64 = u32::MAX as u64;

/// Applies `action` to a value. `Drop` gives `None`; every other action
/// gives the output value.
pub fn apply(action: Action, value: &str, key: &PseudonymKey) -> Result<Option<String>, CellError> {
    if action == Action::Drop {
        return Ok(None);
    }
    if value.is_empty() {
        return Ok(Some(String::new()));
    }
    let out = match action {
        Action::Keep => value.to_owned(),
        Action::Drop => return Ok(None),
        Action::Pseudonymise => key.pseudonym(value),
        Action::Generalise { to } => generalise_date(value, to)?,
        Action::Prefix { keep } => prefix(value, keep),
        Action::Band { width } => band(value, width)?,
        Action::Mask { keep_last } => mask(value, keep_last),
    };
    Ok(Some(out))
}

/// `YYYY-MM-DD` (with any time after a `T` or a space), `YYYY-MM` or
/// `YYYY`, cut to the year or the month. A value already as coarse as
/// asked is returned as it is, so the rule is idempotent; a year-only
/// value asked for its month is refused rather than made up.
pub fn generalise_date(value: &str, to: DatePart) -> Result<String, CellError> {
    let not_a_date = || CellError::NotADate {
        chars: value.chars().count(),
    };
    let value = value.trim();
    let date = value.split(['T', ' ']).next().unwrap_or(value);
    let parts: Vec<&str> = date.split('-').collect();
    let number = |text: &str, digits: usize| -> Option<u32> {
        (text.len() == digits && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse().ok())
            .flatten()
    };
    // A time is allowed only after a whole date.
    if date.len() != value.len() && parts.len() != 3 {
        return Err(not_a_date());
    }
    let year = parts
        .first()
        .and_then(|y| number(y, 4))
        .ok_or_else(not_a_date)?;
    let month = match parts.get(1) {
        None => None,
        Some(m) => Some(
            number(m, 2)
                .filter(|m| (1..=12).contains(m))
                .ok_or_else(not_a_date)?,
        ),
    };
    if let (Some(month), Some(day)) = (month, parts.get(2)) {
        number(day, 2)
            .filter(|day| (1..=days_in_month(year, month)).contains(day))
            .ok_or_else(not_a_date)?;
    }
    if parts.len() > 3 {
        return Err(not_a_date());
    }
    match (to, month) {
        (DatePart::Year, _) => Ok(format!("{year:04}")),
        (DatePart::Month, Some(month)) => Ok(format!("{year:04}-{month:02}")),
        (DatePart::Month, None) => Err(not_a_date()),
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The first `keep` characters, trimmed on both sides (so that the prefix
/// of a prefix is itself). Shorter values are kept whole.
pub fn prefix(value: &str, keep: u32) -> String {
    let kept: String = value.trim().chars().take(keep as usize).collect();
    kept.trim_end().to_owned()
}

/// A whole number's band of `width`: `30-39` for 34 with width 10. A value
/// that is already that band is returned as it is (idempotent).
pub fn band(value: &str, width: u32) -> Result<String, CellError> {
    let value = value.trim();
    let chars = value.chars().count();
    let parse = |text: &str| -> Option<u64> {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<u64>().ok())
            .flatten()
            .filter(|n| *n <= BAND_NUMBER_MAX)
    };
    let not_a_number = CellError::NotANumber {
        chars,
        max: BAND_NUMBER_MAX,
    };
    let number = match value.split_once('-') {
        Some((low, high)) => {
            let (low, high) = parse(low).zip(parse(high)).ok_or(not_a_number.clone())?;
            let (start, end) = band_of(low, width);
            if (start, end) != (low, high) {
                return Err(not_a_number);
            }
            low
        }
        None => parse(value).ok_or(not_a_number)?,
    };
    let (start, end) = band_of(number, width);
    Ok(format!("{start}-{end}"))
}

fn band_of(number: u64, width: u32) -> (u64, u64) {
    let width = u64::from(width.max(1));
    let start = number - number % width;
    (start, start + width - 1)
}

/// Every character but the last `keep_last` replaced by `*`; a value no
/// longer than `keep_last` is masked whole, so that masking never shows a
/// short value in full.
pub fn mask(value: &str, keep_last: u32) -> String {
    let chars = value.chars().count();
    let keep = keep_last as usize;
    if chars <= keep {
        return "*".repeat(chars);
    }
    value
        .chars()
        .enumerate()
        .map(|(i, c)| if i < chars - keep { '*' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(byte: u8) -> PseudonymKey {
        PseudonymKey::new(&[byte; 32]).expect("32 bytes")
    }

    #[test]
    fn dates_generalise_to_year_or_month() {
        assert_eq!(
            generalise_date("1984-03-17", DatePart::Year).as_deref(),
            Ok("1984")
        );
        assert_eq!(
            generalise_date("1984-03-17", DatePart::Month).as_deref(),
            Ok("1984-03")
        );
        assert_eq!(
            generalise_date("1984-03-17T10:00:00Z", DatePart::Month).as_deref(),
            Ok("1984-03")
        );
        assert_eq!(
            generalise_date("2000-02-29", DatePart::Year).as_deref(),
            Ok("2000")
        );
        for bad in [
            "17/03/1984",
            "1984-13-01",
            "1900-02-29",
            "1984-04-31",
            "84-03-17",
            "1984-03-17-1",
            "1984T1",
        ] {
            assert_eq!(
                generalise_date(bad, DatePart::Year),
                Err(CellError::NotADate {
                    chars: bad.chars().count()
                }),
                "{bad}"
            );
        }
        assert!(generalise_date("1984", DatePart::Month).is_err());
    }

    #[test]
    fn prefix_band_and_mask() {
        assert_eq!(prefix(" SW1A 1AA", 3), "SW1");
        assert_eq!(prefix("AB", 3), "AB");
        assert_eq!(prefix("N1 1AA", 3), "N1");
        assert_eq!(band("34", 10).as_deref(), Ok("30-39"));
        assert_eq!(band("30-39", 10).as_deref(), Ok("30-39"));
        assert_eq!(band("7", 5).as_deref(), Ok("5-9"));
        assert_eq!(
            band("31-40", 10),
            Err(CellError::NotANumber {
                chars: 5,
                max: BAND_NUMBER_MAX
            })
        );
        assert_eq!(
            band("-3", 10),
            Err(CellError::NotANumber {
                chars: 2,
                max: BAND_NUMBER_MAX
            })
        );
        assert_eq!(
            band("thirty", 10),
            Err(CellError::NotANumber {
                chars: 6,
                max: BAND_NUMBER_MAX
            })
        );
        assert_eq!(mask("07700900123", 2), "*********23");
        assert_eq!(mask("12", 2), "**");
        assert_eq!(mask("ab", 0), "**");
    }

    #[test]
    fn empty_values_stay_empty_and_drop_drops() {
        let key = key(1);
        assert_eq!(
            apply(Action::Pseudonymise, "", &key),
            Ok(Some(String::new()))
        );
        assert_eq!(apply(Action::Drop, "Jane", &key), Ok(None));
        assert_eq!(apply(Action::Keep, "flu", &key), Ok(Some("flu".into())));
    }

    #[test]
    fn a_short_secret_is_refused() {
        assert_eq!(
            PseudonymKey::new(&[0; 31]).map(|_| ()),
            Err(KeyError::Length {
                got: 31,
                min: SECRET_BYTES_MIN,
                max: SECRET_BYTES_MAX
            })
        );
        assert!(!format!("{:?}", key(7)).contains('7'));
    }

    fn date() -> impl Strategy<Value = String> {
        (1000u32..=9999, 1u32..=12, 1u32..=28).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}"))
    }

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            Just(Action::Keep),
            Just(Action::Drop),
            Just(Action::Pseudonymise),
            Just(Action::Generalise { to: DatePart::Year }),
            Just(Action::Generalise {
                to: DatePart::Month
            }),
            (1u32..8).prop_map(|keep| Action::Prefix { keep }),
            (1u32..100).prop_map(|width| Action::Band { width }),
            (0u32..6).prop_map(|keep_last| Action::Mask { keep_last }),
        ]
    }

    fn value_for(action: Action) -> BoxedStrategy<String> {
        match action {
            Action::Generalise { .. } => date().boxed(),
            Action::Band { .. } => (0u64..200).prop_map(|n| n.to_string()).boxed(),
            _ => "[a-zA-Z0-9 +-]{1,24}".boxed(),
        }
    }

    proptest! {
        #[test]
        fn hidden_values_never_reach_the_output(value in "\\PC{1,40}", secret in any::<[u8; 32]>()) {
            let key = PseudonymKey::new(&secret).expect("32 bytes");
            for action in [Action::Drop, Action::Pseudonymise] {
                let out = apply(action, &value, &key).expect("never fails");
                prop_assert_ne!(out.as_deref(), Some(value.as_str()));
                // A pseudonym is hex: only a value with some other
                // character could not be inside one by chance.
                if let Some(out) = out.filter(|_| !value.bytes().all(|b| b.is_ascii_hexdigit())) {
                    prop_assert!(!out.contains(value.as_str()));
                }
            }
        }

        #[test]
        fn pseudonyms_are_stable_under_one_key_and_differ_across_keys(
            value in "\\PC{1,40}",
            other in "\\PC{1,40}",
            a in any::<[u8; 32]>(),
            b in any::<[u8; 32]>(),
        ) {
            let (key_a, key_b) = (PseudonymKey::new(&a).expect("a"), PseudonymKey::new(&b).expect("b"));
            prop_assert_eq!(key_a.pseudonym(&value), key_a.clone().pseudonym(&value));
            prop_assert_eq!(key_a.pseudonym(&value).len(), 2 * PSEUDONYM_BYTES);
            if a != b {
                prop_assert_ne!(key_a.pseudonym(&value), key_b.pseudonym(&value));
            }
            if value != other {
                prop_assert_ne!(key_a.pseudonym(&value), key_a.pseudonym(&other));
            }
        }

        #[test]
        fn generalisation_is_idempotent(
            (action, value) in action()
                .prop_filter("not a keyed or dropping action", |a| !matches!(a, Action::Drop | Action::Pseudonymise | Action::Keep))
                .prop_flat_map(|a| (Just(a), value_for(a)))
        ) {
            let key = key(0);
            let once = apply(action, &value, &key).expect("valid input").expect("kept");
            let twice = apply(action, &once, &key).expect("its own output is valid").expect("kept");
            prop_assert_eq!(once, twice);
        }

        #[test]
        fn a_year_keeps_only_the_year(date in date()) {
            let year = generalise_date(&date, DatePart::Year).expect("a date");
            prop_assert_eq!(year.as_str(), &date[..4]);
            let month = generalise_date(&date, DatePart::Month).expect("a date");
            prop_assert_eq!(month.as_str(), &date[..7]);
        }

        #[test]
        fn a_band_contains_its_number(n in 0u64..=BAND_NUMBER_MAX, width in 1u32..1000) {
            let out = band(&n.to_string(), width).expect("a number");
            let (low, high) = out.split_once('-').expect("a band");
            let (low, high): (u64, u64) = (low.parse().expect("low"), high.parse().expect("high"));
            prop_assert!(low <= n && n <= high);
            prop_assert_eq!(high - low + 1, u64::from(width));
            prop_assert_eq!(low % u64::from(width), 0);
        }
    }
}
