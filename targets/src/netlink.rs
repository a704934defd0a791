//! Building netlink request messages (rtnetlink, nfnetlink, sock_diag), for the few raw
//! netlink calls AEGIS makes without a netlink library.
//!
//! Input: the message type and flags, a sequence number, the family-specific header
//! ("preamble": `nfgenmsg`, `rtmsg`, `ifaddrmsg`, `inet_diag_req_v2`, ...) and TLV
//! attributes. Output: the bytes of one message. Invariants: the header's length is the
//! whole message; the preamble and every attribute are padded to 4 bytes (NLMSG_ALIGN /
//! RTA_ALIGN); the port id is 0 (the kernel fills in ours).

/// Size of `struct nlmsghdr`.
pub const HEADER_LEN: usize = 16;

/// NLMSG_ALIGN / RTA_ALIGN.
pub fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One netlink message: header, preamble, attributes (type, payload).
pub fn message(ty: u16, flags: u16, seq: u32, preamble: &[u8], attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut msg = vec![0u8; HEADER_LEN];
    msg.extend_from_slice(preamble);
    msg.resize(align4(msg.len()), 0);
    for (t, payload) in attrs {
        msg.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        msg.extend_from_slice(&t.to_ne_bytes());
        msg.extend_from_slice(payload);
        msg.resize(align4(msg.len()), 0);
    }
    let len = (msg.len() as u32).to_ne_bytes();
    msg.splice(0..4, len);
    msg.splice(4..6, ty.to_ne_bytes());
    msg.splice(6..8, flags.to_ne_bytes());
    msg.splice(8..12, seq.to_ne_bytes());
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_padding() {
        let m = message(20, 1, 7, &[1, 2, 3], &[(5, &[9]), (6, &[1, 2, 3, 4])]);
        // 16 header + 4 (3 padded) + 8 (4+1 padded) + 8 (4+4).
        assert_eq!(m.len(), 36);
        assert_eq!(&m[0..4], &36u32.to_ne_bytes());
        assert_eq!(&m[4..6], &20u16.to_ne_bytes());
        assert_eq!(&m[8..12], &7u32.to_ne_bytes());
        // First attribute: length 5 (4 + 1 byte), type 5, payload 9, then 3 bytes of padding.
        assert_eq!(&m[20..22], &5u16.to_ne_bytes());
        assert_eq!(&m[22..24], &5u16.to_ne_bytes());
        assert_eq!(&m[24..28], &[9, 0, 0, 0]);
        assert_eq!(&m[28..30], &8u16.to_ne_bytes());
    }
}
