//! The CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`, through
//! rustix, since this crate forbids `unsafe`), so that the driver can say
//! how much of its thread's time executing blocks and appending them take,
//! and the signature counters theirs (`govchain bench` splits a
//! transaction's cost with them). It is one system call, where reading
//! `/proc/thread-self/schedstat`, as this did before, took four (open,
//! statx, read, close) and a thousand calls a second per node under light
//! load, when every batch and block is small.

use std::time::Duration;

/// CPU time of this thread so far; `None` where the clock is unknown.
pub fn thread_cpu() -> Option<Duration> {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Some(Duration::new(
        u64::try_from(now.tv_sec).ok()?,
        u32::try_from(now.tv_nsec).ok()?,
    ))
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
    fn busy_work_takes_cpu_time_where_the_kernel_says() {
        let (sum, spent) = measured(|| (0..5_000_000u64).fold(0u64, |a, b| a.wrapping_add(b ^ 7)));
        assert_ne!(sum, 0);
        assert!(spent > Duration::ZERO, "{spent:?}");
    }

    #[test]
    fn another_threads_work_is_not_counted() {
        let burn = || (0..20_000_000u64).fold(0u64, |a, b| a.wrapping_add(b ^ 7));
        let (_, busy) = measured(burn);
        // Joining waits without using this thread's CPU.
        let (_, waiting) = measured(|| std::thread::spawn(burn).join());
        assert!(
            waiting < busy / 2,
            "waited {waiting:?} while the other thread worked (working here took {busy:?})"
        );
    }
}
