//! The server's live heap, counted (feature `heap-count`): what an idle
//! stream really holds, apart from what the allocator keeps of freed memory
//! (which RSS counts too). Off by default: the count costs atomic
//! operations per allocation, and the comparisons measure the build users
//! run.

/// The counting allocator `bench-ours` installs with the feature.
pub use stats_alloc::INSTRUMENTED_SYSTEM;

/// The bytes allocated through the Rust allocator and not yet freed (not
/// what C libraries allocate with their own `malloc`).
pub fn live_bytes() -> i128 {
    let stats = INSTRUMENTED_SYSTEM.stats();
    stats.bytes_allocated as i128 - stats.bytes_deallocated as i128
        + stats.bytes_reallocated as i128
}
