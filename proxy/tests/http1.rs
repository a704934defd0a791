#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "test code: a failed unwrap or index is a failed test, with its message")]
//! Strict HTTP/1.1 framing of the egress proxy: every request-smuggling shape is refused with
//! its own error, bodies are re-framed exactly, and streaming bodies are flushed as they come.

use std::cell::RefCell;
use std::io::{self, BufReader, Read, Write};
use std::rc::Rc;

use proptest::prelude::*;
use aegis_proxy::http1::{
    Framing, Header, HttpError, Request, RequestHead, ResponseHead, copy_body, forwardable_headers,
    forwardable_response_headers, has_connection_token, header, read_request_head,
    read_response_head, response_framing, simple_response, validate_request, write_request_head,
    write_response_head,
};

const MAX: usize = 64 * 1024;

fn read(raw: &[u8]) -> Result<Option<RequestHead>, HttpError> {
    let mut r = raw;
    read_request_head(&mut r, MAX)
}

fn parse(raw: &str) -> Result<Request, HttpError> {
    let head = read(raw.as_bytes())?.expect("a head");
    validate_request(head)
}

fn err(raw: &str) -> HttpError {
    match parse(raw) {
        Ok(req) => panic!("accepted {raw:?}: {req:?}"),
        Err(e) => e,
    }
}

fn head(method: &str, target: &str, headers: &[(&str, &[u8])]) -> RequestHead {
    RequestHead {
        method: method.into(),
        target: target.into(),
        minor_version: 1,
        headers: headers
            .iter()
            .map(|(n, v)| Header {
                name: (*n).into(),
                value: v.to_vec(),
            })
            .collect(),
    }
}

// ----- request heads ------------------------------------------------------------------

#[test]
fn plain_get_is_parsed_and_body_left_unread() {
    let raw = b"GET /a?b=1 HTTP/1.1\r\nHost: API.Example.com:443\r\nX-Y:  v  \r\n\r\nNEXT";
    let mut r = &raw[..];
    let h = read_request_head(&mut r, MAX).unwrap().unwrap();
    assert_eq!(r, b"NEXT", "only the head is consumed");
    assert_eq!(h.method, "GET");
    assert_eq!(h.target, "/a?b=1");
    assert_eq!(h.minor_version, 1);
    assert_eq!(header(&h.headers, "x-y"), Some(&b"v"[..]), "OWS trimmed");
    assert_eq!(h.headers[0].name, "Host", "name case preserved");
    let req = validate_request(h).unwrap();
    assert_eq!(req.host.as_deref(), Some("api.example.com:443"));
    assert_eq!(req.framing, Framing::None);
    assert!(req.keep_alive);
    assert_eq!(req.upgrade, None);
    assert!(!req.expect_continue);
}

#[test]
fn clean_eof_is_none_and_eof_mid_head_is_an_error() {
    assert!(read(b"").unwrap().is_none());
    assert!(matches!(
        read(b"GET / HTTP/1.1\r\nHost: a\r\n"),
        Err(HttpError::TruncatedHead)
    ));
    assert!(matches!(read(b"\r\n"), Err(HttpError::TruncatedHead)));
}

#[test]
fn leading_empty_lines_are_skipped() {
    let req = parse("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(req.head.method, "GET");
}

#[test]
fn pipelined_requests_are_read_one_after_another() {
    let raw = b"POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut r = &raw[..];
    let first = validate_request(read_request_head(&mut r, MAX).unwrap().unwrap()).unwrap();
    let mut body = Vec::new();
    assert_eq!(
        copy_body(&mut r, &mut body, first.framing, None).unwrap(),
        3
    );
    assert_eq!(body, b"abc");
    let second = validate_request(read_request_head(&mut r, MAX).unwrap().unwrap()).unwrap();
    assert_eq!(second.head.target, "/2");
    assert!(read_request_head(&mut r, MAX).unwrap().is_none());
}

#[test]
fn head_limits_are_431() {
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
        "a".repeat(MAX)
    );
    let e = err(&big);
    assert!(matches!(e, HttpError::HeadTooLarge { .. }), "{e}");
    assert_eq!(e.status(), 431);
    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..100 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let e = err(&many);
    assert!(matches!(e, HttpError::TooManyHeaders), "{e}");
    assert_eq!(e.status(), 431);
    // 100 headers exactly is fine.
    let mut ok = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..99 {
        ok.push_str(&format!("X-{i}: v\r\n"));
    }
    ok.push_str("\r\n");
    assert_eq!(parse(&ok).unwrap().head.headers.len(), 100);
}

#[test]
fn head_read_from_one_byte_pieces() {
    let raw = b"\r\nPOST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nrest";
    let mut r = BufReader::with_capacity(1, &raw[..]);
    let req = validate_request(read_request_head(&mut r, MAX).unwrap().unwrap()).unwrap();
    assert_eq!(req.framing, Framing::Chunked);
    let mut out = Vec::new();
    assert_eq!(copy_body(&mut r, &mut out, req.framing, None).unwrap(), 3);
    assert_eq!(out, b"3\r\nabc\r\n0\r\n\r\n");
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"rest");
}

// ----- smuggling shapes ---------------------------------------------------------------

#[test]
fn cl_te_and_te_cl_are_refused() {
    for raw in [
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 0\r\ntransfer-encoding: CHUNKED\r\n\r\n",
    ] {
        let e = err(raw);
        assert!(matches!(e, HttpError::ConflictingFraming), "{raw:?}: {e}");
        assert_eq!(e.status(), 400);
    }
}

#[test]
fn obfuscated_transfer_encoding_is_refused() {
    for te in [
        "gzip, chunked",
        "chunked, chunked",
        "chunked,",
        "xchunked",
        "chunkedx",
        "chunk ed",
        "identity",
        "chunked;q=1",
        "\"chunked\"",
    ] {
        let raw = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n");
        let e = err(&raw);
        assert!(
            matches!(e, HttpError::UnsupportedTransferEncoding),
            "{te:?}: {e}"
        );
        assert_eq!(e.status(), 501);
    }
    // Two TE headers, each `chunked`, are a list `chunked, chunked`.
    let e = err(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert!(matches!(e, HttpError::UnsupportedTransferEncoding), "{e}");
    // Control whitespace around the value never reaches the TE check.
    for raw in [
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0bchunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0cchunked\r\n\r\n",
    ] {
        let e = err(raw);
        assert!(
            matches!(e, HttpError::InvalidHeaderValue { .. }),
            "{raw:?}: {e}"
        );
    }
    // Name spellings a lenient upstream might read as TE or CL.
    for raw in [
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent_Length: 5\r\n\r\n",
    ] {
        let e = err(raw);
        assert!(
            matches!(e, HttpError::AmbiguousHeaderName { .. }),
            "{raw:?}: {e}"
        );
    }
    let e = err("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n");
    assert!(matches!(e, HttpError::SpaceBeforeColon), "{e}");
}

#[test]
fn chunked_in_any_letter_case_with_ordinary_ows_is_accepted() {
    for te in ["chunked", "Chunked", "CHUNKED", "chunked \t", "\tchunked"] {
        let raw = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:{te}\r\n\r\n");
        assert_eq!(parse(&raw).unwrap().framing, Framing::Chunked, "{te:?}");
    }
}

#[test]
fn transfer_encoding_in_http10_is_refused() {
    let e = err("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert!(matches!(e, HttpError::TransferEncodingInHttp10), "{e}");
}

#[test]
fn content_length_must_be_one_plain_number() {
    let e = err("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
    assert!(matches!(e, HttpError::DuplicateContentLength), "{e}");
    let e = err("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n");
    assert!(matches!(e, HttpError::DuplicateContentLength), "{e}");
    for cl in [
        "5, 5",
        "+5",
        "-1",
        "0x10",
        "1e3",
        "5 5",
        "",
        "18446744073709551616",
        "99999999999999999999999",
    ] {
        let raw = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {cl}\r\n\r\n");
        let e = err(&raw);
        assert!(matches!(e, HttpError::InvalidContentLength), "{cl:?}: {e}");
    }
    let req = parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n")
        .unwrap();
    assert_eq!(req.framing, Framing::Length(u64::MAX));
    let req = parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n").unwrap();
    assert_eq!(req.framing, Framing::Length(7));
}

#[test]
fn obs_fold_and_space_before_colon_are_refused() {
    let e = err("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n");
    assert!(matches!(e, HttpError::ObsFold), "{e}");
    let e = err("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\tfolded\r\n\r\n");
    assert!(matches!(e, HttpError::ObsFold), "{e}");
    let e = err("GET / HTTP/1.1\r\n Host: a\r\n\r\n");
    assert!(matches!(e, HttpError::ObsFold), "{e}");
    let e = err("GET / HTTP/1.1\r\nHost : a\r\n\r\n");
    assert!(matches!(e, HttpError::SpaceBeforeColon), "{e}");
    let e = err("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n");
    assert!(matches!(e, HttpError::SpaceBeforeColon), "{e}");
    let e = err("GET / HTTP/1.1\r\nHost: a\r\nNo colon here\r\n\r\n");
    assert!(matches!(e, HttpError::InvalidHeaderName), "{e}");
    let e = err("GET / HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n");
    assert!(matches!(e, HttpError::InvalidHeaderName), "{e}");
}

/// Bare LF line endings are refused (RFC 9112 lets a recipient accept them; a proxy that
/// did would end heads where a stricter upstream does not).
#[test]
fn bare_lf_bare_cr_and_nul_are_refused() {
    for raw in [
        &b"GET / HTTP/1.1\nHost: a\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\nb\r\n\r\n",
    ] {
        let e = read(raw).unwrap_err();
        assert!(matches!(e, HttpError::BareLf { .. }), "{raw:?}: {e}");
    }
    for raw in [
        &b"GET / HTTP/1.1\rHost: a\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nX: a\rb\r\nHost: a\r\n\r\n",
    ] {
        let e = read(raw).unwrap_err();
        assert!(matches!(e, HttpError::BareCr { .. }), "{raw:?}: {e}");
    }
    let e = read(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n").unwrap_err();
    assert!(matches!(e, HttpError::NulByte { .. }), "{e}");
}

#[test]
fn constructed_heads_with_cr_lf_nul_are_refused() {
    for value in [&b"a\r\nX-Evil: 1"[..], b"a\nb", b"a\0b", b"a\rb", b"\x7f"] {
        let h = head("GET", "/", &[("Host", b"a"), ("X", value)]);
        let e = validate_request(h).unwrap_err();
        assert!(
            matches!(e, HttpError::InvalidHeaderValue { .. }),
            "{value:?}: {e}"
        );
    }
    for name in ["X\r\nY", "X Y", "X:Y", "", "X\0"] {
        let h = head("GET", "/", &[("Host", b"a"), (name, b"v")]);
        let e = validate_request(h).unwrap_err();
        assert!(matches!(e, HttpError::InvalidHeaderName), "{name:?}: {e}");
    }
}

#[test]
fn host_must_appear_once_in_http11() {
    let e = err("GET / HTTP/1.1\r\n\r\n");
    assert!(matches!(e, HttpError::MissingHost), "{e}");
    let e = err("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    assert!(matches!(e, HttpError::DuplicateHost), "{e}");
    let e = err("GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n");
    assert!(matches!(e, HttpError::DuplicateHost), "{e}");
    for bad in ["", "a b", "a/b", "a@b", "a\\b", "é"] {
        let h = head("GET", "/", &[("Host", bad.as_bytes())]);
        let e = validate_request(h).unwrap_err();
        assert!(matches!(e, HttpError::InvalidHost), "{bad:?}: {e}");
    }
    let req = parse("GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(req.host, None);
    let req = parse("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n").unwrap();
    assert_eq!(req.host.as_deref(), Some("[::1]:8080"));
}

#[test]
fn h2c_and_http2_preface_are_refused() {
    let e = err(
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    );
    assert!(matches!(e, HttpError::H2cUpgrade), "{e}");
    let e = err("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: H2C\r\n\r\n");
    assert!(matches!(e, HttpError::H2cUpgrade), "{e}");
    let e = err("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket, h2c\r\n\r\n");
    assert!(matches!(e, HttpError::H2cUpgrade), "{e}");
    let e = err("GET / HTTP/1.1\r\nHost: a\r\nHTTP2-Settings: AAMAAABk\r\n\r\n");
    assert!(matches!(e, HttpError::H2cUpgrade), "{e}");
    let e = read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap_err();
    assert!(matches!(e, HttpError::Http2Preface), "{e}");
    assert_eq!(e.status(), 400);
}

#[test]
fn versions_other_than_10_and_11_are_505() {
    for v in ["HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/3", "HTTP/9.9"] {
        let raw = format!("GET / {v}\r\nHost: a\r\n\r\n");
        let e = err(&raw);
        assert!(
            matches!(e, HttpError::UnsupportedVersion { .. }),
            "{v}: {e}"
        );
        assert_eq!(e.status(), 505);
    }
    for line in [
        "GET /",
        "GET / http/1.1",
        "GET / HTTP/1.1 extra",
        "GET  / HTTP/1.1",
        "GET / HTTP/1.1 ",
        "GET\t/ HTTP/1.1",
    ] {
        let raw = format!("{line}\r\nHost: a\r\n\r\n");
        let e = err(&raw);
        assert_eq!(e.status(), 400, "{line:?}: {e}");
    }
    let mut h = head("GET", "/", &[("Host", b"a")]);
    h.minor_version = 2;
    assert_eq!(validate_request(h).unwrap_err().status(), 505);
}

#[test]
fn odd_targets_and_methods_are_refused() {
    let e = err("GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(matches!(e, HttpError::InvalidTarget), "{e}");
    let e = read(b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n").unwrap_err();
    assert!(matches!(e, HttpError::InvalidTarget), "{e}");
    let e = read("GET /é HTTP/1.1\r\nHost: a\r\n\r\n".as_bytes()).unwrap_err();
    assert!(matches!(e, HttpError::InvalidTarget), "{e}");
    let e = err("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(matches!(e, HttpError::InvalidRequestLine), "{e}");
    for t in ["/a b", "/a#b", "/a\x01", "/a\x7f", "", "/\t"] {
        let e = validate_request(head("GET", t, &[("Host", b"a")])).unwrap_err();
        assert!(matches!(e, HttpError::InvalidTarget), "{t:?}: {e}");
    }
    let e = err("G(T / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(matches!(e, HttpError::InvalidMethod), "{e}");
    let e = validate_request(head("GE T", "/", &[("Host", b"a")])).unwrap_err();
    assert!(matches!(e, HttpError::InvalidMethod), "{e}");
}

#[test]
fn get_and_head_with_framed_bodies_are_allowed() {
    let req = parse("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n").unwrap();
    assert_eq!(req.framing, Framing::Length(4));
    let req = parse("HEAD / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    assert_eq!(req.framing, Framing::Chunked);
}

#[test]
fn connect_with_a_body_is_refused() {
    let req = parse("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n").unwrap();
    assert_eq!(req.framing, Framing::None);
    let e = err("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nContent-Length: 5\r\n\r\n");
    assert!(matches!(e, HttpError::ConnectWithBody), "{e}");
    let e = err("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert!(matches!(e, HttpError::ConnectWithBody), "{e}");
}

#[test]
fn keep_alive_follows_version_and_connection() {
    let cases = [
        ("HTTP/1.1", "", true),
        ("HTTP/1.1", "Connection: close\r\n", false),
        ("HTTP/1.1", "Connection: keep-alive, CLOSE\r\n", false),
        (
            "HTTP/1.1",
            "Connection: foo\r\nConnection: close\r\n",
            false,
        ),
        ("HTTP/1.0", "", false),
        ("HTTP/1.0", "Connection: Keep-Alive\r\n", true),
        ("HTTP/1.0", "Connection: keep-alive, close\r\n", false),
    ];
    for (v, extra, want) in cases {
        let raw = format!("GET / {v}\r\nHost: a\r\n{extra}\r\n");
        assert_eq!(parse(&raw).unwrap().keep_alive, want, "{v} {extra:?}");
    }
}

#[test]
fn upgrade_needs_connection_upgrade_and_one_protocol() {
    let req = parse(
        "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n\r\n",
    )
    .unwrap();
    assert_eq!(req.upgrade.as_deref(), Some("websocket"));
    let req = parse("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n").unwrap();
    assert_eq!(
        req.upgrade, None,
        "Upgrade without Connection: upgrade is not an upgrade"
    );
    let e = err(
        "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket, foo/2\r\n\r\n",
    );
    assert!(matches!(e, HttpError::InvalidUpgrade), "{e}");
}

#[test]
fn expect_100_continue_only() {
    let req =
        parse("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")
            .unwrap();
    assert!(req.expect_continue);
    let req = parse("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").unwrap();
    assert!(!req.expect_continue, "HTTP/1.0 clients cannot receive 100");
    let e = err("POST / HTTP/1.1\r\nHost: a\r\nExpect: something-else\r\n\r\n");
    assert!(matches!(e, HttpError::UnsupportedExpectation), "{e}");
    assert_eq!(e.status(), 417);
}

// ----- forwarding ---------------------------------------------------------------------

#[test]
fn forwardable_headers_drop_hop_by_hop_and_overrides() {
    let req = parse(concat!(
        "POST /x HTTP/1.1\r\n",
        "Host: a\r\n",
        "Connection: keep-alive, X-Secret, Host\r\n",
        "Keep-Alive: timeout=5\r\n",
        "Proxy-Connection: keep-alive\r\n",
        "Proxy-Authorization: Basic Zm9v\r\n",
        "Proxy-Authenticate: x\r\n",
        "TE: trailers\r\n",
        "Trailer: X-T\r\n",
        "X-Secret: s\r\n",
        "X-HTTP-Method-Override: DELETE\r\n",
        "X-HTTP-Method: DELETE\r\n",
        "X-Method-Override: DELETE\r\n",
        "Expect: 100-continue\r\n",
        "Transfer-Encoding: chunked\r\n",
        "Accept: */*\r\n",
        "\r\n"
    ))
    .unwrap();
    let fwd = forwardable_headers(&req, false);
    let names: Vec<&str> = fwd.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["Host", "Accept", "Transfer-Encoding"]);
    assert_eq!(header(&fwd, "transfer-encoding"), Some(&b"chunked"[..]));
}

#[test]
fn forwardable_headers_regenerate_framing_and_keep_upgrade_on_request() {
    let req = parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0012\r\n\r\n").unwrap();
    let fwd = forwardable_headers(&req, false);
    assert_eq!(header(&fwd, "content-length"), Some(&b"12"[..]));
    let req = parse(
        "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
    )
    .unwrap();
    let without = forwardable_headers(&req, false);
    assert!(header(&without, "upgrade").is_none());
    assert!(header(&without, "connection").is_none());
    assert_eq!(header(&without, "sec-websocket-key"), Some(&b"k"[..]));
    let with = forwardable_headers(&req, true);
    assert_eq!(header(&with, "upgrade"), Some(&b"websocket"[..]));
}

#[test]
fn write_request_head_is_exact_and_refuses_injection() {
    let mut out = Vec::new();
    let hs = [Header::new("Host", "a"), Header::new("Content-Length", "3")];
    write_request_head(&mut out, "POST", "/x?y", &hs, None).unwrap();
    assert_eq!(
        out,
        b"POST /x?y HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n"
    );

    let mut out = Vec::new();
    let hs = [
        Header::new("Host", "a"),
        Header::new("Upgrade", "other"),
        Header::new("Connection", "close"),
    ];
    write_request_head(&mut out, "GET", "/ws", &hs, Some("websocket")).unwrap();
    assert_eq!(
        out,
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
    );

    let bad = [Header {
        name: "X".into(),
        value: b"a\r\nX-Injected: 1".to_vec(),
    }];
    let mut out = Vec::new();
    let e = write_request_head(&mut out, "GET", "/", &bad, None).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(out.is_empty(), "nothing written on refusal");
    for (m, t) in [("GET", "/a b"), ("G T", "/"), ("GET", "/\r\n")] {
        assert!(
            write_request_head(&mut Vec::new(), m, t, &[], None).is_err(),
            "{m:?} {t:?}"
        );
    }
    assert!(write_request_head(&mut Vec::new(), "GET", "/", &[], Some("a\r\nb")).is_err());
}

#[test]
fn write_request_head_output_parses_back_identically() {
    let req = parse(
        "PUT /p HTTP/1.1\r\nHost: A\r\nX-Y: z\r\nConnection: close\r\nContent-Length: 2\r\n\r\n",
    )
    .unwrap();
    let fwd = forwardable_headers(&req, false);
    let mut out = Vec::new();
    write_request_head(&mut out, &req.head.method, &req.head.target, &fwd, None).unwrap();
    let again = validate_request(read(&out).unwrap().unwrap()).unwrap();
    assert_eq!(again.head.headers, fwd);
    assert_eq!(again.framing, req.framing);
    assert_eq!(again.host, req.host);
}

// ----- responses ----------------------------------------------------------------------

fn resp(status: u16, minor: u8, headers: &[(&str, &str)]) -> ResponseHead {
    ResponseHead {
        status,
        reason: "R".into(),
        minor_version: minor,
        headers: headers.iter().map(|(n, v)| Header::new(n, v)).collect(),
    }
}

#[test]
fn response_framing_table() {
    use Framing::*;
    let te = [("Transfer-Encoding", "chunked")];
    let cl = [("Content-Length", "10")];
    type Case<'a> = (&'a str, u16, &'a [(&'a str, &'a str)], Framing);
    let cases: &[Case] = &[
        ("GET", 200, &te, Chunked),
        ("GET", 200, &cl, Length(10)),
        ("GET", 200, &[], UntilClose),
        ("HEAD", 200, &cl, None),
        ("HEAD", 200, &te, None),
        ("GET", 100, &[], None),
        ("GET", 101, &[], None),
        ("GET", 103, &cl, None),
        ("GET", 204, &cl, None),
        ("GET", 304, &cl, None),
        ("CONNECT", 200, &cl, None),
        ("CONNECT", 407, &cl, Length(10)),
        ("POST", 404, &te, Chunked),
        (
            "GET",
            200,
            &[("Content-Length", "10"), ("Content-Length", "10")],
            Length(10),
        ),
        ("GET", 200, &[("Content-Length", "10, 10")], Length(10)),
        ("GET", 200, &[("Transfer-Encoding", "Chunked")], Chunked),
    ];
    for (method, status, hs, want) in cases {
        let got = response_framing(method, &resp(*status, 1, hs)).unwrap();
        assert_eq!(got, *want, "{method} {status} {hs:?}");
    }
    let bad: &[(u8, &[(&str, &str)])] = &[
        (
            1,
            &[("Content-Length", "10"), ("Transfer-Encoding", "chunked")],
        ),
        (1, &[("Content-Length", "10"), ("Content-Length", "11")]),
        (1, &[("Content-Length", "10, 11")]),
        (1, &[("Content-Length", "-1")]),
        (1, &[("Content-Length", "")]),
        (1, &[("Transfer-Encoding", "gzip, chunked")]),
        (
            1,
            &[
                ("Transfer-Encoding", "chunked"),
                ("Transfer-Encoding", "chunked"),
            ],
        ),
        (0, &[("Transfer-Encoding", "chunked")]),
    ];
    for (minor, hs) in bad {
        let e = response_framing("GET", &resp(200, *minor, hs)).unwrap_err();
        assert_eq!(e.status(), 502, "{hs:?}: {e}");
        assert!(matches!(e, HttpError::Upstream(_)));
    }
}

#[test]
fn response_heads_parse_strictly_and_fail_as_502() {
    let raw = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nX: y\r\n\r\nabc";
    let mut r = &raw[..];
    let h = read_response_head(&mut r, MAX).unwrap();
    assert_eq!(
        (h.status, h.reason.as_str(), h.minor_version),
        (404, "Not Found", 1)
    );
    assert_eq!(r, b"abc");
    let h = read_response_head(&mut &b"HTTP/1.0 200\r\n\r\n"[..], MAX).unwrap();
    assert_eq!((h.status, h.reason.as_str(), h.minor_version), (200, "", 0));
    for raw in [
        &b""[..],
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\nX: y\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX : y\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: y\r\n folded\r\n\r\n",
        b"HTTP/1.1 200 O\x01K\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
    ] {
        let e = read_response_head(&mut &raw[..], MAX).unwrap_err();
        assert_eq!(e.status(), 502, "{raw:?}: {e}");
    }
}

#[test]
fn write_response_head_round_trips() {
    let h = resp(201, 1, &[("Location", "/x"), ("Content-Length", "0")]);
    let mut out = Vec::new();
    write_response_head(&mut out, &h).unwrap();
    assert_eq!(
        out,
        b"HTTP/1.1 201 R\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n"
    );
    assert_eq!(read_response_head(&mut &out[..], MAX).unwrap(), h);
    let mut bad = h.clone();
    bad.reason = "OK\r\nSet-Cookie: a".into();
    assert!(write_response_head(&mut Vec::new(), &bad).is_err());
    let mut bad = h;
    bad.status = 42;
    assert!(write_response_head(&mut Vec::new(), &bad).is_err());
}

#[test]
fn forwardable_response_headers_regenerate_framing() {
    let h = resp(
        200,
        1,
        &[
            ("Content-Length", "5"),
            ("Connection", "close, X-Hop"),
            ("X-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("ETag", "\"e\""),
        ],
    );
    let f = response_framing("GET", &h).unwrap();
    let out = forwardable_response_headers("GET", &h, f, false);
    let names: Vec<&str> = out.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["ETag", "Content-Length"]);
    // HEAD: the length of the representation is kept, no body follows.
    let f = response_framing("HEAD", &h).unwrap();
    let out = forwardable_response_headers("HEAD", &h, f, false);
    assert_eq!(header(&out, "content-length"), Some(&b"5"[..]));
    // 204 never carries one.
    let h204 = resp(204, 1, &[("Content-Length", "5")]);
    let out = forwardable_response_headers("GET", &h204, Framing::None, false);
    assert!(header(&out, "content-length").is_none());
}

#[test]
fn simple_response_is_one_well_formed_message() {
    let out = simple_response(403, "denied:\r\nSet-Cookie: evil\u{7}é", "no\n", true);
    let mut r = &out[..];
    let h = read_response_head(&mut r, MAX).unwrap();
    assert_eq!((h.status, h.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        header(&h.headers, "x-aegis-reason"),
        Some(&b"denied:  Set-Cookie: evil"[..])
    );
    assert!(header(&h.headers, "set-cookie").is_none());
    assert_eq!(
        header(&h.headers, "content-type"),
        Some(&b"text/plain; charset=utf-8"[..])
    );
    assert_eq!(header(&h.headers, "connection"), Some(&b"close"[..]));
    assert_eq!(response_framing("GET", &h).unwrap(), Framing::Length(3));
    assert_eq!(r, b"no\n");

    let out = simple_response(502, "upstream failed", "", false);
    let h = read_response_head(&mut &out[..], MAX).unwrap();
    assert_eq!(h.reason, "Bad Gateway");
    assert!(header(&h.headers, "connection").is_none());
    assert_eq!(header(&h.headers, "content-length"), Some(&b"0"[..]));
}

// ----- bodies -------------------------------------------------------------------------

fn copy(raw: &[u8], framing: Framing, limit: Option<u64>) -> Result<(u64, Vec<u8>), HttpError> {
    let mut r = raw;
    let mut out = Vec::new();
    let n = copy_body(&mut r, &mut out, framing, limit)?;
    Ok((n, out))
}

#[test]
fn length_bodies_copy_exactly_and_fail_on_early_eof() {
    assert_eq!(
        copy(b"abcdef", Framing::Length(4), None).unwrap(),
        (4, b"abcd".to_vec())
    );
    assert_eq!(copy(b"", Framing::Length(0), None).unwrap(), (0, vec![]));
    assert_eq!(copy(b"abc", Framing::None, None).unwrap(), (0, vec![]));
    let e = copy(b"abc", Framing::Length(4), None).unwrap_err();
    assert!(matches!(e, HttpError::BodyTruncated { got: 3, .. }), "{e}");
    assert_eq!(e.status(), 400);
    assert_eq!(e.upstream().status(), 502);
}

#[test]
fn until_close_copies_everything() {
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut r = BufReader::with_capacity(7, &data[..]);
    let mut out = Vec::new();
    let n = copy_body(&mut r, &mut out, Framing::UntilClose, None).unwrap();
    assert_eq!(n, 200_000);
    assert_eq!(out, data);
}

#[test]
fn limits_are_413_and_length_over_limit_writes_nothing() {
    let e = copy(b"abcdef", Framing::Length(6), Some(5)).unwrap_err();
    assert!(matches!(e, HttpError::BodyTooLarge { limit: 5 }), "{e}");
    assert_eq!(e.status(), 413);
    let mut out = Vec::new();
    let _ = copy_body(&mut &b"abcdef"[..], &mut out, Framing::Length(6), Some(5));
    assert!(out.is_empty());
    let e = copy(b"abcdef", Framing::UntilClose, Some(5)).unwrap_err();
    assert_eq!(e.status(), 413);
    let e = copy(
        b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n",
        Framing::Chunked,
        Some(5),
    )
    .unwrap_err();
    assert_eq!(e.status(), 413);
    assert_eq!(
        copy(
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            Framing::Chunked,
            Some(5)
        )
        .unwrap()
        .0,
        5
    );
}

#[test]
fn chunked_bodies_are_decoded_and_reencoded() {
    let cases: &[(&[u8], &[u8], u64)] = &[
        (b"0\r\n\r\n", b"0\r\n\r\n", 0),
        (
            b"1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n",
            b"1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n",
            3,
        ),
        // Extensions are dropped, sizes normalised to lower-case hex without leading zeros.
        (
            b"000A;name=\"v\";x\r\n0123456789\r\n0;last\r\n\r\n",
            b"a\r\n0123456789\r\n0\r\n\r\n",
            10,
        ),
        // Trailers are read and dropped.
        (
            b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n",
            b"3\r\nabc\r\n0\r\n\r\n",
            3,
        ),
        (
            b"F\r\n0123456789abcde\r\n0\r\n\r\n",
            b"f\r\n0123456789abcde\r\n0\r\n\r\n",
            15,
        ),
    ];
    for (input, want, n) in cases {
        let (got_n, out) = copy(input, Framing::Chunked, None).unwrap();
        assert_eq!(out, *want, "{:?}", String::from_utf8_lossy(input));
        assert_eq!(got_n, *n);
    }
    // Nothing after the final CRLF is consumed: the next request stays in the reader.
    let raw = b"1\r\na\r\n0\r\n\r\nGET";
    let mut r = &raw[..];
    copy_body(&mut r, &mut io::sink(), Framing::Chunked, None).unwrap();
    assert_eq!(r, b"GET");
}

#[test]
fn malformed_chunked_bodies_are_refused() {
    type Check = fn(&HttpError) -> bool;
    let cases: &[(&[u8], Check)] = &[
        (b"ffffffffffffffffff\r\n", |e| {
            matches!(e, HttpError::ChunkSizeOverflow)
        }),
        (b"10000000000000000\r\n", |e| {
            matches!(e, HttpError::ChunkSizeOverflow)
        }),
        (b"-1\r\na\r\n0\r\n\r\n", |e| {
            matches!(e, HttpError::InvalidChunkSize)
        }),
        (b"0x5\r\nabcde\r\n0\r\n\r\n", |e| {
            matches!(e, HttpError::InvalidChunkSize)
        }),
        (b"+5\r\nabcde\r\n0\r\n\r\n", |e| {
            matches!(e, HttpError::InvalidChunkSize)
        }),
        (b" 5\r\nabcde\r\n0\r\n\r\n", |e| {
            matches!(e, HttpError::InvalidChunkSize)
        }),
        (b"5 \r\nabcde\r\n0\r\n\r\n", |e| {
            matches!(e, HttpError::InvalidChunkSize)
        }),
        (b"\r\nabcde\r\n0\r\n\r\n", |e| {
            matches!(e, HttpError::InvalidChunkSize)
        }),
        (b"g\r\n", |e| matches!(e, HttpError::InvalidChunkSize)),
        (b"5\nabcde\r\n0\r\n\r\n", |e| {
            matches!(e, HttpError::InvalidChunkSize)
        }),
        (b"5\rabcde\r\n0\r\n\r\n", |e| {
            matches!(e, HttpError::InvalidChunkSize)
        }),
        (b"5;a\nb\r\nabcde\r\n0\r\n\r\n", |e| {
            matches!(e, HttpError::InvalidChunkSize)
        }),
        (b"5;a\x00\r\nabcde\r\n0\r\n\r\n", |e| {
            matches!(e, HttpError::InvalidChunkSize)
        }),
        (b"5\r\nabcdef\r\n0\r\n\r\n", |e| {
            matches!(e, HttpError::MissingChunkCrlf)
        }),
        (b"5\r\nabcde0\r\n\r\n", |e| {
            matches!(e, HttpError::MissingChunkCrlf)
        }),
        (b"5\r\nabcde\n0\r\n\r\n", |e| {
            matches!(e, HttpError::MissingChunkCrlf)
        }),
        (b"5\r\nabc", |e| {
            matches!(e, HttpError::BodyTruncated { got: 3, .. })
        }),
        (b"5\r\nabcde", |e| {
            matches!(e, HttpError::BodyTruncated { .. })
        }),
        (b"5\r\nabcde\r\n", |e| {
            matches!(e, HttpError::BodyTruncated { .. })
        }),
        (b"0\r\n", |e| matches!(e, HttpError::BodyTruncated { .. })),
        (b"0\r\nX: 1\n\r\n", |e| {
            matches!(e, HttpError::InvalidTrailers)
        }),
        (b"0\r\nX: 1\r\n folded\r\n\r\n", |e| {
            matches!(e, HttpError::InvalidTrailers)
        }),
        (b"", |e| {
            matches!(e, HttpError::BodyTruncated { got: 0, .. })
        }),
    ];
    for (input, check) in cases {
        let e = copy(input, Framing::Chunked, None).unwrap_err();
        assert!(check(&e), "{:?}: {e}", String::from_utf8_lossy(input));
        assert_eq!(e.status(), 400);
    }
    let long_ext = [b"1;".as_slice(), &[b'x'; 5000], b"\r\na\r\n0\r\n\r\n"].concat();
    let e = copy(&long_ext, Framing::Chunked, None).unwrap_err();
    assert!(matches!(e, HttpError::InvalidChunkSize), "{e}");
    let big_trailer = [b"0\r\nX: ".as_slice(), &[b'x'; 70_000], b"\r\n\r\n"].concat();
    let e = copy(&big_trailer, Framing::Chunked, None).unwrap_err();
    assert!(matches!(e, HttpError::InvalidTrailers), "{e}");
}

/// A reader that hands out at most `step` bytes per `read`.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn tiny_reads_still_decode_every_framing() {
    let chunked = b"3;e=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\n";
    for step in [1, 2, 3, 5] {
        let mut r = BufReader::with_capacity(
            64 * 1024,
            Trickle {
                data: chunked,
                step,
            },
        );
        let mut out = Vec::new();
        assert_eq!(
            copy_body(&mut r, &mut out, Framing::Chunked, None).unwrap(),
            19
        );
        assert_eq!(out, b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n");
        let mut r = BufReader::new(Trickle {
            data: b"hello world",
            step,
        });
        let mut out = Vec::new();
        assert_eq!(
            copy_body(&mut r, &mut out, Framing::Length(11), None).unwrap(),
            11
        );
        assert_eq!(out, b"hello world");
    }
}

/// Shared record of what a writer has written and flushed.
#[derive(Default)]
struct Wire {
    written: Vec<u8>,
    flushed: usize,
}

struct RecordingWriter(Rc<RefCell<Wire>>);

impl Write for RecordingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().written.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        let mut w = self.0.borrow_mut();
        w.flushed = w.written.len();
        Ok(())
    }
}

/// An event stream: each `read` returns one event; before handing out event k it records
/// what the writer had flushed, i.e. what a client would have seen while the proxy waited.
struct EventSource {
    events: Vec<Vec<u8>>,
    next: usize,
    wire: Rc<RefCell<Wire>>,
    seen_before_read: Vec<Vec<u8>>,
}

impl Read for EventSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let w = self.wire.borrow();
        self.seen_before_read.push(w.written[..w.flushed].to_vec());
        let Some(ev) = self.events.get(self.next) else {
            return Ok(0);
        };
        assert!(buf.len() >= ev.len());
        buf[..ev.len()].copy_from_slice(ev);
        self.next += 1;
        Ok(ev.len())
    }
}

fn sse_events() -> Vec<Vec<u8>> {
    (0..4)
        .map(|i| format!("data: event {i}\n\n").into_bytes())
        .collect()
}

#[test]
fn chunked_event_stream_is_flushed_before_each_read() {
    let wire = Rc::new(RefCell::new(Wire::default()));
    let payloads = sse_events();
    let mut events: Vec<Vec<u8>> = payloads
        .iter()
        .map(|p| {
            [
                format!("{:x}\r\n", p.len()).into_bytes(),
                p.clone(),
                b"\r\n".to_vec(),
            ]
            .concat()
        })
        .collect();
    events.push(b"0\r\n\r\n".to_vec());
    let src = EventSource {
        events,
        next: 0,
        wire: wire.clone(),
        seen_before_read: vec![],
    };
    let mut r = BufReader::new(src);
    let mut w = RecordingWriter(wire.clone());
    copy_body(&mut r, &mut w, Framing::Chunked, None).unwrap();
    let seen = &r.get_ref().seen_before_read;
    // Before reading event k+1, the client must already have every byte of event k.
    for (k, p) in payloads.iter().enumerate() {
        let visible = &seen[k + 1];
        let text = String::from_utf8_lossy(visible);
        assert!(
            text.contains(std::str::from_utf8(p).unwrap()),
            "event {k} not flushed before the next read; client saw {text:?}"
        );
    }
    let wire = wire.borrow();
    assert_eq!(wire.flushed, wire.written.len(), "final flush");
}

#[test]
fn until_close_event_stream_is_flushed_before_each_read() {
    let wire = Rc::new(RefCell::new(Wire::default()));
    let payloads = sse_events();
    let src = EventSource {
        events: payloads.clone(),
        next: 0,
        wire: wire.clone(),
        seen_before_read: vec![],
    };
    let mut r = BufReader::new(src);
    let mut w = RecordingWriter(wire.clone());
    let n = copy_body(&mut r, &mut w, Framing::UntilClose, None).unwrap();
    assert_eq!(n, payloads.iter().map(|p| p.len() as u64).sum::<u64>());
    let seen = &r.get_ref().seen_before_read;
    for k in 0..payloads.len() {
        assert_eq!(seen[k + 1], payloads[..=k].concat(), "after event {k}");
    }
}

#[test]
fn write_failures_are_reported_as_such() {
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let e = copy_body(&mut &b"abc"[..], &mut Broken, Framing::Length(3), None).unwrap_err();
    assert!(matches!(e, HttpError::WriteFailed { .. }), "{e}");
    assert_eq!(e.status(), 502);
}

/// A strict, independent chunked decoder for the property test.
fn decode_chunked(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap(), 16).unwrap();
        b = &b[nl + 2..];
        if size == 0 {
            assert_eq!(b, b"\r\n");
            return out;
        }
        out.extend_from_slice(&b[..size]);
        assert_eq!(&b[size..size + 2], b"\r\n");
        b = &b[size + 2..];
    }
}

proptest! {
    #[test]
    fn any_body_reframed_as_chunked_decodes_to_itself(
        body in proptest::collection::vec(any::<u8>(), 0..3000),
        cuts in proptest::collection::vec(1usize..700, 1..20),
        ext in proptest::option::of("[a-z]{1,8}(=[a-z0-9]{1,8})?"),
        upper in any::<bool>(),
        step in 1usize..64,
    ) {
        // Encode with arbitrary chunk sizes, extensions and hex case.
        let mut enc = Vec::new();
        let mut rest = &body[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            let size = if upper { format!("{n:X}") } else { format!("{n:x}") };
            enc.extend_from_slice(size.as_bytes());
            if let Some(e) = &ext { enc.push(b';'); enc.extend_from_slice(e.as_bytes()); }
            enc.extend_from_slice(b"\r\n");
            enc.extend_from_slice(&rest[..n]);
            enc.extend_from_slice(b"\r\n");
            rest = &rest[n..];
            i += 1;
        }
        enc.extend_from_slice(b"0\r\nX-T: 1\r\n\r\n");

        let mut r = BufReader::with_capacity(64, Trickle { data: &enc, step });
        let mut out = Vec::new();
        let n = copy_body(&mut r, &mut out, Framing::Chunked, None).unwrap();
        prop_assert_eq!(n, body.len() as u64);
        prop_assert_eq!(decode_chunked(&out), body.clone());
        // Our own output is canonical: decoding and re-encoding it changes nothing.
        let mut again = Vec::new();
        let n2 = copy_body(&mut &out[..], &mut again, Framing::Chunked, None).unwrap();
        prop_assert_eq!(n2, n);
        prop_assert_eq!(again, out);
        // Length framing of the same body copies the same bytes.
        let mut plain = Vec::new();
        copy_body(&mut &body[..], &mut plain, Framing::Length(body.len() as u64), None).unwrap();
        prop_assert_eq!(plain, body);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parsers(raw in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut r = &raw[..];
        if let Ok(Some(h)) = read_request_head(&mut r, 1024) {
            let _ = validate_request(h);
        }
        let _ = read_response_head(&mut &raw[..], 1024);
        let _ = copy_body(&mut &raw[..], &mut io::sink(), Framing::Chunked, Some(1 << 20));
    }
}

#[test]
fn statuses_match_the_documented_table() {
    assert_eq!(HttpError::ConflictingFraming.status(), 400);
    assert_eq!(HttpError::HeadTooLarge { limit: 1 }.status(), 431);
    assert_eq!(HttpError::UnsupportedTransferEncoding.status(), 501);
    assert_eq!(
        HttpError::UnsupportedVersion {
            version: "HTTP/2.0".into()
        }
        .status(),
        505
    );
    assert_eq!(HttpError::BodyTooLarge { limit: 1 }.status(), 413);
    assert_eq!(HttpError::ConflictingFraming.upstream().status(), 502);
    assert_eq!(
        HttpError::ConflictingFraming
            .upstream()
            .upstream()
            .to_string(),
        "upstream: both Content-Length and Transfer-Encoding present"
    );
}

/// A reader that fails with `kind` before yielding anything.
struct Failing(io::ErrorKind);

impl Read for Failing {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::new(self.0, "test"))
    }
}

#[test]
fn idle_timeouts_and_eof_between_requests() {
    for kind in [io::ErrorKind::WouldBlock, io::ErrorKind::TimedOut] {
        let e = read_request_head(&mut BufReader::new(Failing(kind)), MAX).unwrap_err();
        assert!(matches!(e, HttpError::IdleTimeout), "{kind:?}: {e}");
        assert_eq!(e.status(), 408);
    }
    // A TLS client that leaves without close_notify between requests has just gone.
    let got = read_request_head(
        &mut BufReader::new(Failing(io::ErrorKind::UnexpectedEof)),
        MAX,
    );
    assert!(got.unwrap().is_none());
    let e = read_request_head(
        &mut BufReader::new(Failing(io::ErrorKind::ConnectionReset)),
        MAX,
    )
    .unwrap_err();
    assert!(matches!(e, HttpError::ReadFailed { .. }), "{e}");
    // Mid-head, a timeout is a failed read, not an idle connection.
    let mut r = BufReader::new(Read::chain(
        &b"GET / HT"[..],
        Failing(io::ErrorKind::TimedOut),
    ));
    let e = read_request_head(&mut r, MAX).unwrap_err();
    assert!(matches!(e, HttpError::ReadFailed { .. }), "{e}");
    let e =
        read_response_head(&mut BufReader::new(Failing(io::ErrorKind::TimedOut)), MAX).unwrap_err();
    assert_eq!(e.status(), 502);
}

#[test]
fn connection_tokens_are_found_in_lists() {
    let h = resp(
        200,
        1,
        &[("Connection", "keep-alive"), ("connection", "Foo, CLOSE")],
    );
    assert!(has_connection_token(&h.headers, "close"));
    assert!(has_connection_token(&h.headers, "foo"));
    assert!(!has_connection_token(&h.headers, "upgrade"));
    let h = resp(200, 1, &[("Connection", "closed")]);
    assert!(!has_connection_token(&h.headers, "close"));
}

fn header_strategy() -> impl Strategy<Value = (String, String)> {
    let names = prop_oneof![
        Just("Host"),
        Just("Content-Length"),
        Just("Transfer-Encoding"),
        Just("Connection"),
        Just("Keep-Alive"),
        Just("Upgrade"),
        Just("TE"),
        Just("Trailer"),
        Just("Expect"),
        Just("Proxy-Authorization"),
        Just("X-HTTP-Method-Override"),
        Just("X-Custom"),
        Just("Accept"),
        Just("Cookie"),
    ];
    let values = prop_oneof![
        Just("chunked".to_string()),
        Just("close".to_string()),
        Just("keep-alive, x-custom".to_string()),
        Just("upgrade".to_string()),
        Just("websocket".to_string()),
        Just("100-continue".to_string()),
        "[0-9]{1,4}",
        "[ -~]{0,12}",
    ];
    (names.prop_map(String::from), values)
}

proptest! {
    /// Whatever a client sends, if the proxy accepts it, the head it forwards parses back to
    /// the same request, with the same framing, and carries no hop-by-hop or override header.
    #[test]
    fn accepted_requests_forward_to_an_equivalent_head(
        method in prop_oneof![Just("GET"), Just("POST"), Just("HEAD"), Just("DELETE")],
        minor in 0u8..2,
        headers in proptest::collection::vec(header_strategy(), 0..8),
        keep_upgrade in any::<bool>(),
        with_host in proptest::bool::weighted(0.8),
    ) {
        let mut raw = format!("{method} /p?q=1 HTTP/1.{minor}\r\n");
        if with_host {
            raw.push_str("Host: Example.COM\r\n");
        }
        for (n, v) in &headers {
            raw.push_str(&format!("{n}: {v}\r\n"));
        }
        raw.push_str("\r\n");
        let Ok(Some(h)) = read(raw.as_bytes()) else { return Ok(()) };
        let Ok(req) = validate_request(h) else { return Ok(()) };
        let fwd = forwardable_headers(&req, keep_upgrade);
        for banned in ["connection", "keep-alive", "te", "trailer", "expect",
                       "proxy-authorization", "x-http-method-override"] {
            prop_assert!(header(&fwd, banned).is_none(), "{} forwarded", banned);
        }
        let mut out = Vec::new();
        write_request_head(&mut out, &req.head.method, &req.head.target, &fwd, None).unwrap();
        let again = validate_request(read(&out).unwrap().unwrap());
        // An HTTP/1.0 request without Host is forwarded as HTTP/1.1, which needs one: the
        // caller adds Host from the target; everything else must round-trip.
        if req.host.is_none() {
            prop_assert!(matches!(again, Err(HttpError::MissingHost)));
            return Ok(());
        }
        let again = again.unwrap();
        prop_assert_eq!(again.framing, req.framing);
        prop_assert_eq!(&again.host, &req.host);
        prop_assert_eq!(&again.head.method, &req.head.method);
        prop_assert_eq!(&again.head.target, &req.head.target);
        prop_assert_eq!(&again.head.headers, &fwd);
    }
}
