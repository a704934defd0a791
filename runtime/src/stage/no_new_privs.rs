//! Stage 7, no_new_privs: after it, no execve can grant privileges (setuid bits, file
//! capabilities), which Landlock and seccomp require when the caller lacks CAP_SYS_ADMIN.
//! Input: nothing. Output: the flag set in the child, verified with `PR_GET_NO_NEW_PRIVS`.

use crate::stage::report::Fail;
use crate::stage::Stage;

pub const WHAT_SET: u32 = 1;
pub const WHAT_VERIFY: u32 = 2;

pub fn apply_in_child() -> Result<(), Fail> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(Fail::errno(Stage::NoNewPrivs, WHAT_SET));
    }
    // SAFETY: as above.
    if unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) } != 1 {
        return Err(Fail::check(Stage::NoNewPrivs, WHAT_VERIFY));
    }
    Ok(())
}

pub fn describe(what: u32) -> &'static str {
    match what {
        WHAT_SET => "prctl(PR_SET_NO_NEW_PRIVS)",
        WHAT_VERIFY => "no_new_privs not set after prctl",
        _ => "no_new_privs",
    }
}
