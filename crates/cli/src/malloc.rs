//! glibc `malloc` settings for a process that moves megabyte buffers.
//!
//! Blob transfers and gRPC move 1 MiB messages: each is allocated, filled,
//! handed on and freed, many times a second. glibc's default tuning
//! returns such memory to the kernel almost at once: after the first 1 MiB
//! buffer is freed, its dynamic thresholds keep at most 2 MiB free at the
//! top of a heap, so a burst of frees gives the pages back (`madvise`,
//! `brk`) and the next buffers fault them in again, zeroed by the kernel. A
//! profile of a 250 MiB upload put those page faults and `madvise` calls
//! among the largest costs of both the client and the node (BENCHMARKS.md).
//!
//! [`tune`] fixes the thresholds instead: blocks under 4 MiB come from the
//! heap, and up to 64 MiB of free memory at the top of a heap is kept for
//! reuse. What is kept was in use at some point, so the process never holds
//! more than its own peak. Malloc settings in the environment win
//! (`GLIBC_TUNABLES` with any `glibc.malloc.` tunable, or one of the
//! variables in [`MALLOC_VARIABLES`]): then nothing is changed.
//!
//! [`consolidate_free_memory`] lets the load generator tidy its heap before
//! it times something.
//!
//! This is the one module of the workspace with `unsafe` code: `mallopt`
//! and `malloc_trim` have no safe wrapper in the crates we use, and the
//! calls are sound (below).

/// Heap blocks up to this size are reused instead of mapped afresh.
const MMAP_THRESHOLD_BYTES: i32 = 4 << 20;
/// Free memory kept at the top of a heap before it is returned.
const TRIM_THRESHOLD_BYTES: i32 = 64 << 20;

/// What [`tune`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuning {
    /// Both thresholds are set.
    Applied,
    /// The environment sets malloc parameters (`GLIBC_TUNABLES` or a
    /// variable of [`MALLOC_VARIABLES`]): they are left alone.
    LeftToEnvironment,
    /// glibc refused a setting (the mmap threshold may then be set alone),
    /// or this is not glibc.
    Unavailable,
}

/// glibc's older variables for the parameters that [`tune`] sets or that
/// interact with them.
const MALLOC_VARIABLES: [&str; 4] = [
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
];

/// Sets the thresholds above, unless the environment has malloc settings.
/// Call it first thing in `main`, before any thread exists (glibc marks
/// `mallopt` unsafe to call while other threads allocate).
pub fn tune() -> Tuning {
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if set_by_environment(&tunables, |name| std::env::var_os(name).is_some()) {
        return Tuning::LeftToEnvironment;
    }
    set_thresholds()
}

/// Whether `GLIBC_TUNABLES` (`tunables`) or a variable that `is_set` has
/// malloc settings.
fn set_by_environment(tunables: &str, is_set: impl Fn(&str) -> bool) -> bool {
    tunables.contains("glibc.malloc.") || MALLOC_VARIABLES.into_iter().any(is_set)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_thresholds() -> Tuning {
    // SAFETY: `mallopt` takes plain integers and changes only the
    // allocator's parameters; it touches no memory of ours. glibc documents
    // it as "MT-Unsafe init": it must not race with other threads'
    // allocations, and `tune`'s one caller, `main`, runs it before any
    // thread is started.
    let set = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    };
    if set {
        Tuning::Applied
    } else {
        Tuning::Unavailable
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> Tuning {
    Tuning::Unavailable
}

/// Merges the free memory of every malloc arena and returns what it can to
/// the kernel. `govchain bench` calls it before it times the blob upload:
/// the first large allocation after the transaction phase otherwise merges
/// hundreds of thousands of small freed blocks on the spot (a profile put
/// 0.1 s of one core in glibc's `malloc_consolidate` at the start of a
/// 250 MiB upload, with the node waiting), which is the load generator's
/// cost, not the node's.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn consolidate_free_memory() {
    // SAFETY: `malloc_trim` takes an integer (the padding to keep) and
    // works under each arena's lock; glibc documents it as MT-Safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn consolidate_free_memory() {}

#[cfg(test)]
mod tests {
    use super::*;

    // Setting the thresholds is checked in a fresh process
    // (integration/devnet.rs): in this multi-threaded test binary it would
    // race with other tests' allocations.

    #[test]
    fn malloc_settings_in_the_environment_win() {
        let none = |_: &str| false;
        assert!(set_by_environment(
            "glibc.malloc.trim_threshold=1048576",
            none
        ));
        assert!(!set_by_environment(
            "glibc.rtld.optional_static_tls=512",
            none
        ));
        assert!(!set_by_environment("", none));
        assert!(set_by_environment("", |name| name == "MALLOC_TOP_PAD_"));
        assert!(!set_by_environment("", |name| name == "MALLOC_CHECK_"));
    }
}
