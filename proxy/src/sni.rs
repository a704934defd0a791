//! The server name (SNI) of a TLS ClientHello, read from the first bytes a client sends
//! through a tunnel.
//!
//! Input: the bytes at the start of a connection (possibly incomplete). Output: a
//! [`Hello`] verdict. Invariants: the parser never reads past the declared lengths; a
//! ClientHello split over several TLS records is reassembled (up to [`MAX_HELLO`] bytes);
//! anything that is not a well-formed TLS handshake is `NotTls` or `Malformed`, never a
//! name; SSLv2-style hellos carry no SNI and are `NotTls`.

/// Largest ClientHello we reassemble (post-quantum key shares make hellos ~2 KiB; 64 KiB
/// is the handshake message limit most stacks use).
pub const MAX_HELLO: usize = 64 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// More bytes are needed.
    Incomplete,
    /// The client does not speak TLS (or not a TLS version with handshake records).
    NotTls,
    /// A ClientHello without a server_name extension.
    NoSni,
    /// The host name (lower case, no trailing dot).
    Sni(String),
    /// Lengths or structure are wrong.
    Malformed(&'static str),
}

struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (h, t) = self.b.split_at_checked(n)?;
        self.b = t;
        Some(h)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (h, t) = self.b.split_first_chunk::<N>()?;
        self.b = t;
        Some(*h)
    }
    fn u8(&mut self) -> Option<usize> {
        self.array().map(|[a]: [u8; 1]| a as usize)
    }
    fn u16(&mut self) -> Option<usize> {
        self.array().map(|[a, b]: [u8; 2]| (a as usize) << 8 | b as usize)
    }
    fn u24(&mut self) -> Option<usize> {
        self.array().map(|[a, b, c]: [u8; 3]| (a as usize) << 16 | (b as usize) << 8 | c as usize)
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// Parses as much of a ClientHello as `data` holds.
pub fn parse(data: &[u8]) -> Hello {
    // Reassemble the handshake layer from consecutive handshake records.
    let mut hs = Vec::new();
    let mut rest = data;
    while let Some(&content_type) = rest.first() {
        if content_type != 0x16 {
            return if hs.is_empty() { Hello::NotTls } else { Hello::Malformed("non-handshake record inside the ClientHello") };
        }
        // Record header: content type, version (major, minor), length (big endian).
        let Some(&[_, major, _, len_hi, len_lo]) = rest.first_chunk::<5>() else {
            return Hello::Incomplete;
        };
        if major != 3 {
            return Hello::NotTls;
        }
        let len = (len_hi as usize) << 8 | len_lo as usize;
        if len == 0 || len > 16384 + 2048 {
            return Hello::Malformed("bad record length");
        }
        let Some((body, after)) = rest.get(5..).and_then(|r| r.split_at_checked(len)) else {
            if hs.len() + rest.len() > MAX_HELLO {
                return Hello::Malformed("ClientHello too large");
            }
            return Hello::Incomplete;
        };
        hs.extend_from_slice(body);
        rest = after;
        // Handshake header: message type, length (24 bits, big endian).
        if let Some(&[_, l2, l1, l0]) = hs.first_chunk::<4>() {
            let need = 4 + ((l2 as usize) << 16 | (l1 as usize) << 8 | l0 as usize);
            if need > MAX_HELLO {
                return Hello::Malformed("ClientHello too large");
            }
            if hs.len() >= need {
                break;
            }
        }
    }
    if hs.len() < 4 {
        return Hello::Incomplete;
    }
    let Some((&1, after_type)) = hs.split_first() else {
        return Hello::Malformed("first handshake message is not a ClientHello");
    };
    let mut c = Cursor { b: after_type };
    let Some(len) = c.u24() else { return Hello::Incomplete };
    let Some(body) = c.take(len) else { return Hello::Incomplete };
    client_hello_sni(body)
}

fn client_hello_sni(body: &[u8]) -> Hello {
    let mut c = Cursor { b: body };
    let fixed = (|| {
        c.take(2)?; // legacy_version
        c.take(32)?; // random
        c.vec8()?; // session id
        c.vec16()?; // cipher suites
        c.vec8()?; // compression methods
        Some(())
    })();
    if fixed.is_none() {
        return Hello::Malformed("truncated ClientHello");
    }
    if c.b.is_empty() {
        return Hello::NoSni;
    }
    let Some(exts) = c.vec16() else { return Hello::Malformed("truncated extensions") };
    let mut e = Cursor { b: exts };
    let mut found = None;
    while !e.b.is_empty() {
        let (Some(ty), Some(data)) = (e.u16(), e.vec16()) else {
            return Hello::Malformed("truncated extension");
        };
        if ty != 0 {
            continue;
        }
        if found.is_some() {
            return Hello::Malformed("two server_name extensions");
        }
        let mut s = Cursor { b: data };
        let Some(list) = s.vec16() else { return Hello::Malformed("truncated server_name") };
        let mut l = Cursor { b: list };
        let mut names = Vec::new();
        while !l.b.is_empty() {
            let (Some(kind), Some(name)) = (l.u8(), l.vec16()) else {
                return Hello::Malformed("truncated server_name entry");
            };
            if kind == 0 {
                names.push(name);
            }
        }
        // RFC 6066: at most one host_name; more than one is ambiguous, so refuse it.
        match names.as_slice() {
            [one] => match std::str::from_utf8(one) {
                Ok(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic()) => {
                    found = Some(n.trim_end_matches('.').to_ascii_lowercase());
                }
                _ => return Hello::Malformed("server_name is not an ASCII host name"),
            },
            [] => {}
            _ => return Hello::Malformed("several host names in server_name"),
        }
    }
    match found {
        Some(n) => Hello::Sni(n),
        None => Hello::NoSni,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test, with its message")]
    use super::*;

    /// A ClientHello as rustls produces it for `name`.
    fn hello(name: Option<&str>) -> Vec<u8> {
        use std::sync::Arc;
        let roots = rustls::RootCertStore::empty();
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut cfg = cfg;
        let sn: rustls::pki_types::ServerName<'static> = match name {
            Some(n) => rustls::pki_types::ServerName::try_from(n.to_string()).unwrap(),
            None => rustls::pki_types::ServerName::IpAddress("10.0.0.1".parse::<std::net::IpAddr>().unwrap().into()),
        };
        cfg.enable_sni = true;
        let mut conn = rustls::ClientConnection::new(Arc::new(cfg), sn).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn finds_the_server_name_in_every_prefix_length() {
        let h = hello(Some("Gmail.GoogleAPIs.com"));
        assert_eq!(parse(&h), Hello::Sni("gmail.googleapis.com".into()));
        for n in 0..h.len() {
            assert_eq!(parse(&h[..n]), Hello::Incomplete, "prefix {n}");
        }
    }

    #[test]
    fn ip_connections_have_no_sni() {
        assert_eq!(parse(&hello(None)), Hello::NoSni);
    }

    #[test]
    fn a_hello_split_over_two_records_is_reassembled() {
        let h = hello(Some("example.com"));
        let body = &h[5..];
        let (a, b) = body.split_at(40);
        let mut two = vec![0x16, 3, 1, 0, a.len() as u8];
        two.extend_from_slice(a);
        two.extend_from_slice(&[0x16, 3, 1, (b.len() >> 8) as u8, b.len() as u8]);
        two.extend_from_slice(b);
        assert_eq!(parse(&two), Hello::Sni("example.com".into()));
    }

    #[test]
    fn plain_text_and_garbage_are_not_names() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        assert_eq!(parse(b"SSH-2.0-OpenSSH_9.2\r\n"), Hello::NotTls);
        assert!(matches!(parse(&[0x16, 3, 1, 0, 4, 1, 0, 0, 0]), Hello::Malformed(_)));
        assert!(matches!(parse(&[0x16, 3, 1, 0, 4, 2, 0, 0, 0]), Hello::Malformed(_)));
        // Random bytes never panic.
        let mut x: u32 = 0x1234_5678;
        for _ in 0..2000 {
            let mut buf = vec![0x16, 3, 1];
            for _ in 0..(x % 300) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                buf.push(x as u8);
            }
            let _ = parse(&buf);
        }
    }
}
