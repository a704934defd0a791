//! The `bundle` target (under construction).
