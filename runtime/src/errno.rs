//! The calling thread's `errno`, read right after a failed raw syscall.
//!
//! Input: nothing (the thread's last OS error). Output: the errno as an `i32`. Invariants:
//! allocation-free and lock-free, so the child may call it between `clone` and `execve`; it
//! reads `errno` only, so it must be called before anything else can overwrite it.

/// The last errno, 0 when the OS reported none (a verification failure carries 0 too).
pub fn last() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The last errno for a result that must carry one: `EIO` when the OS reported none, so a
/// failed call is never answered as success (a helper's reply, a packet's send).
pub fn last_or_eio() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}
