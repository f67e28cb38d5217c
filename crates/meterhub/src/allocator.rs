//! The process's allocator, mimalloc, and how soon it gives freed memory back to the system.
//!
//! Bulk work (a fleet generated or imported) frees large amounts once, and its resident
//! size should then show what is live: freed memory goes back at once. Serving frees and
//! allocates the same small buffers all the time: giving each freed page back at once made
//! the kernel unmap and map pages again, about 4% of the pipeline's CPU (BENCHMARKS.md), so
//! serving keeps mimalloc's own delay.

use std::ffi::c_long;
use std::sync::OnceLock;

/// mimalloc rather than the C library's allocator: the pipeline allocates small buffers on
/// every thread, and glibc's arenas spent about a tenth of its CPU (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its option enum, v2 and v3 alike): milliseconds a
/// freed page is kept before it is given back.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The delay in force now, in milliseconds.
fn delay() -> c_long {
    // SAFETY: reads one of mimalloc's documented options.
    unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }
}

/// mimalloc's own delay, read before it is first changed.
fn own_delay() -> c_long {
    static OWN: OnceLock<c_long> = OnceLock::new();
    *OWN.get_or_init(delay)
}

fn set_delay(ms: c_long) {
    own_delay();
    // SAFETY: sets one of mimalloc's documented options; any value is valid for it.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms) };
}

/// Give freed memory back at once (every command starts so).
pub fn for_bulk_work() {
    set_delay(0);
}

/// Keep freed memory for mimalloc's own delay before giving it back (or what
/// `MIMALLOC_PURGE_DELAY` says; -1 never gives it back): for a long run of requests, once
/// any bulk load is over.
pub fn for_serving() {
    set_delay(own_delay());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bulk work gives memory back at once; serving goes back to mimalloc's own delay,
    /// which is not zero (were it, serving would pay for unmapping pages again).
    #[test]
    fn serving_keeps_freed_memory_for_mimallocs_own_delay() {
        for_bulk_work();
        assert_eq!(delay(), 0);
        for_serving();
        let own = own_delay();
        let set = std::env::var_os("MIMALLOC_PURGE_DELAY").is_some();
        assert!(own != 0 || set, "mimalloc's own purge delay was read as {own}");
        assert_eq!(delay(), own);
        for_bulk_work();
        assert_eq!(delay(), 0);
    }
}
