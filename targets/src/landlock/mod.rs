//! The `landlock` target (under construction).
