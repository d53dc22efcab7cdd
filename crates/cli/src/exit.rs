//! The one error that is not an error: a negative answer, which exits 1.

use std::fmt;

/// A command reached a definite "no": the file does not match its anchor,
/// the transaction was committed but failed. `main` exits 1 and prints the
/// message, if any, to stderr. The answer itself is usually already on
/// stdout, so the message is optional.
///
/// Any command can return it as an `anyhow::Error`:
/// `return Err(Negative::new("ledger check failed: ...").into())`.
#[derive(Debug)]
pub struct Negative {
    message: Option<String>,
}

impl Negative {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: Some(message.into()),
        }
    }

    /// A negative answer already printed on stdout.
    pub fn quiet() -> Self {
        Self { message: None }
    }

    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
}

impl fmt::Display for Negative {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message.as_deref().unwrap_or("negative answer"))
    }
}

impl std::error::Error for Negative {}
