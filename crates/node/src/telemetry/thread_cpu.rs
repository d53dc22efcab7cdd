//! The CPU time of the calling thread, from the kernel's scheduler
//! statistics (`/proc/thread-self/schedstat`, nanoseconds on the CPU), so
//! that the driver can say how much of its thread's time executing blocks
//! and appending them take (`govchain bench` splits a transaction's cost
//! with it). The standard library has no thread clock and this crate
//! forbids the `unsafe` a `clock_gettime` call needs; the file costs a few
//! microseconds to read, a few times per block.

use std::time::Duration;

/// CPU time of this thread so far; `None` where the kernel does not say
/// (not Linux, or scheduler statistics compiled out).
pub fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    parse_schedstat(&text)
}

/// The first field of a `schedstat` line: nanoseconds on the CPU.
pub fn parse_schedstat(text: &str) -> Option<Duration> {
    let nanos = text.split_whitespace().next()?.parse::<u64>().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// Runs `body`, returning its result and the CPU time this thread spent
/// in it (zero when the kernel does not say).
pub fn measured<T>(body: impl FnOnce() -> T) -> (T, Duration) {
    let before = thread_cpu();
    let result = body();
    let spent = match (before, thread_cpu()) {
        (Some(before), Some(after)) => after.saturating_sub(before),
        _ => Duration::ZERO,
    };
    (result, spent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_lines_parse() {
        assert_eq!(
            parse_schedstat("661454 3808967 2\n"),
            Some(Duration::from_nanos(661_454))
        );
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
    }

    #[test]
    fn busy_work_takes_cpu_time_where_the_kernel_says() {
        let Some(_) = thread_cpu() else { return };
        let (sum, spent) = measured(|| (0..5_000_000u64).fold(0u64, |a, b| a.wrapping_add(b ^ 7)));
        assert_ne!(sum, 0);
        assert!(spent > Duration::ZERO, "{spent:?}");
    }
}
