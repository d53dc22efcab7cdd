//! The wall clock, in the one unit the chain uses: Unix milliseconds.
//! Below every other module: a block's timestamp, a deadline, an upload's
//! time all read it here.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix milliseconds (0 before 1970, `u64::MAX` far ahead).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
