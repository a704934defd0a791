//! The `nftables` target (under construction).
