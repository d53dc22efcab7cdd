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
//! more than its own peak. `GLIBC_TUNABLES` with any `glibc.malloc.` setting
//! wins: then nothing is changed.
//!
//! This is the one module of the workspace with `unsafe` code: `mallopt` has
//! no safe wrapper in the crates we use, and the call is sound (below).

/// Heap blocks up to this size are reused instead of mapped afresh.
const MMAP_THRESHOLD_BYTES: i32 = 4 << 20;
/// Free memory kept at the top of a heap before it is returned.
const TRIM_THRESHOLD_BYTES: i32 = 64 << 20;

/// What [`tune`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuning {
    /// Both thresholds are set.
    Applied,
    /// `GLIBC_TUNABLES` sets malloc parameters: they are left alone.
    LeftToEnvironment,
    /// glibc refused a setting, or this is not glibc.
    Unavailable,
}

/// Sets the thresholds above; call it first thing in `main`.
pub fn tune() -> Tuning {
    tune_unless(&std::env::var("GLIBC_TUNABLES").unwrap_or_default())
}

/// [`tune`], given the value of `GLIBC_TUNABLES`.
fn tune_unless(tunables: &str) -> Tuning {
    if tunables.contains("glibc.malloc.") {
        return Tuning::LeftToEnvironment;
    }
    set_thresholds()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_thresholds() -> Tuning {
    // SAFETY: `mallopt` takes plain integers and only changes the
    // allocator's parameters, under glibc's own lock; it touches no memory
    // of ours and may be called at any time, from any thread.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_both_thresholds() {
        // glibc refuses an mmap threshold over 32 MiB (on 64-bit): the
        // values must stay inside what it accepts.
        assert_eq!(set_thresholds(), Tuning::Applied);
    }

    #[test]
    fn malloc_tunables_in_the_environment_win() {
        assert_eq!(
            tune_unless("glibc.malloc.trim_threshold=1048576"),
            Tuning::LeftToEnvironment
        );
        // Other tunables do not stop the tuning.
        assert_ne!(
            tune_unless("glibc.rtld.optional_static_tls=512"),
            Tuning::LeftToEnvironment
        );
    }
}
