//! Strict HTTP/1.1 message framing for the egress proxy (blocking I/O).
//!
//! Input: bytes from a client (requests) or an upstream server (responses) behind
//! `std::io::BufRead`. Output: parsed heads ([`RequestHead`], [`ResponseHead`]), a validated
//! [`Request`] whose body [`Framing`] is unambiguous, head writers, and [`copy_body`], which
//! decodes a body and re-frames it on the way out. Invariants: a message is either understood
//! exactly one way or refused (every request-smuggling shape — CL.TE, TE.CL, obfuscated
//! Transfer-Encoding, duplicate Content-Length, obs-fold, whitespace before the colon, bare CR
//! or LF line endings, NUL bytes, h2c and the HTTP/2 preface — is an error with its own
//! variant); the proxy forwards only what it parsed, re-encoded by this module (framing
//! headers are regenerated from [`Framing`], chunk extensions and trailers are dropped), so
//! the upstream can never see a byte stream it would split differently; nothing here panics
//! on any input. Bare LF line endings, which RFC 9112 lets a recipient accept, are refused:
//! accepting them is what lets two parsers disagree about where a head ends.

use std::io::{self, BufRead, Write};

/// Most headers a head may carry (requests, responses and chunked trailers).
pub const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (size plus extensions) accepted in a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
/// Most bytes of trailer section read (and dropped) after the last chunk.
const MAX_TRAILERS: usize = 64 * 1024;

/// One header as received: name case preserved, value raw bytes (no CR/LF/NUL allowed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

impl Header {
    /// A header from a name and a textual value.
    pub fn new(name: &str, value: &str) -> Self {
        Header {
            name: name.to_owned(),
            value: value.as_bytes().to_vec(),
        }
    }
}

/// A request line plus headers, as read (not yet validated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    pub minor_version: u8,
    pub headers: Vec<Header>,
}

/// A status line plus headers, as read from an upstream server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    pub minor_version: u8,
    pub headers: Vec<Header>,
}

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    None,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the peer closes the connection (responses only).
    UntilClose,
}

/// A request that passed [`validate_request`]: its framing and routing facts are unambiguous.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub head: RequestHead,
    pub framing: Framing,
    /// The Host header, lower-cased (absent only in HTTP/1.0 requests without one).
    pub host: Option<String>,
    /// Whether the client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// The lower-cased Upgrade token when `Connection: upgrade` asks for one (e.g. `websocket`).
    pub upgrade: Option<String>,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
}

/// Why a message was refused or could not be relayed. [`HttpError::status`] gives the status
/// code to answer with; the `Display` text is a short reason for the `X-Aegis-Reason` header.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("message head is larger than {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("message has more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    #[error("connection closed in the middle of the message head")]
    TruncatedHead,
    #[error("timed out waiting for a request")]
    IdleTimeout,
    #[error("bare LF line ending in the {what} (only CRLF is accepted)")]
    BareLf { what: &'static str },
    #[error("CR not followed by LF in the {what}")]
    BareCr { what: &'static str },
    #[error("NUL byte in the {what}")]
    NulByte { what: &'static str },
    #[error("malformed request line")]
    InvalidRequestLine,
    #[error("invalid request method")]
    InvalidMethod,
    #[error("invalid request target (fragments, spaces, control and non-ASCII bytes are refused)")]
    InvalidTarget,
    #[error("HTTP version {version} is not supported (only HTTP/1.0 and HTTP/1.1)")]
    UnsupportedVersion { version: String },
    #[error("HTTP/2 connection preface on an HTTP/1.1 proxy")]
    Http2Preface,
    #[error("h2c (HTTP/2 over cleartext upgrade) is refused")]
    H2cUpgrade,
    #[error("obsolete header line folding (a header line starting with whitespace)")]
    ObsFold,
    #[error("whitespace between header name and colon")]
    SpaceBeforeColon,
    #[error("invalid header name")]
    InvalidHeaderName,
    #[error("header name {name} could be read as a framing header (underscore for dash)")]
    AmbiguousHeaderName { name: String },
    #[error("invalid header value (CR, LF, NUL or control byte) in {name}")]
    InvalidHeaderValue { name: String },
    #[error("both Content-Length and Transfer-Encoding present")]
    ConflictingFraming,
    #[error("more than one Content-Length")]
    DuplicateContentLength,
    #[error("invalid Content-Length (must be decimal digits that fit in 64 bits)")]
    InvalidContentLength,
    #[error("Transfer-Encoding other than exactly `chunked`")]
    UnsupportedTransferEncoding,
    #[error("Transfer-Encoding in an HTTP/1.0 message")]
    TransferEncodingInHttp10,
    #[error("missing Host header")]
    MissingHost,
    #[error("more than one Host header")]
    DuplicateHost,
    #[error("invalid Host header")]
    InvalidHost,
    #[error("invalid or ambiguous Upgrade header")]
    InvalidUpgrade,
    #[error("unsupported Expect value (only 100-continue)")]
    UnsupportedExpectation,
    #[error("CONNECT request with a body")]
    ConnectWithBody,
    #[error("malformed status line")]
    InvalidStatusLine,
    #[error("invalid chunk size line in chunked body")]
    InvalidChunkSize,
    #[error("chunk size does not fit in 64 bits")]
    ChunkSizeOverflow,
    #[error("chunk data not followed by CRLF")]
    MissingChunkCrlf,
    #[error("malformed or oversized trailer section in chunked body")]
    InvalidTrailers,
    #[error("body ended early after {got} bytes ({what})")]
    BodyTruncated { got: u64, what: &'static str },
    #[error("body larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("request body refused: {0}")]
    BodyRefused(String),
    #[error("read failed while {during}: {source}")]
    ReadFailed {
        during: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("write failed while {during}: {source}")]
    WriteFailed {
        during: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("upstream: {0}")]
    Upstream(Box<HttpError>),
}

impl HttpError {
    /// The status code the proxy answers with: 400 malformed, 408 idle timeout, 413 body
    /// too large, 417
    /// unsupported expectation, 431 head too large, 501 unknown transfer coding, 505
    /// unsupported version, 502 for upstream faults (wrapped with [`HttpError::upstream`])
    /// and failed writes to the peer being relayed to.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge { .. } | HttpError::TooManyHeaders => 431,
            HttpError::BodyTooLarge { .. } => 413,
            HttpError::UnsupportedExpectation => 417,
            HttpError::IdleTimeout => 408,
            HttpError::UnsupportedTransferEncoding => 501,
            HttpError::UnsupportedVersion { .. } => 505,
            HttpError::Upstream(_) | HttpError::WriteFailed { .. } => 502,
            _ => 400,
        }
    }

    /// Marks an error as the upstream server's fault (status 502). Use it on errors from
    /// [`copy_body`] when relaying a response body.
    pub fn upstream(self) -> HttpError {
        match self {
            HttpError::Upstream(_) => self,
            other => HttpError::Upstream(Box::new(other)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reading heads
// ---------------------------------------------------------------------------------------

/// `fill_buf` that retries on EINTR.
fn fill<'a, R: BufRead>(r: &'a mut R, during: &'static str) -> Result<&'a [u8], HttpError> {
    loop {
        // Returning the slice from inside this loop does not borrow-check (NLL), so the
        // loop only waits out EINTR and the buffered data is fetched again below (at EOF
        // that is a second zero-byte read, which is harmless).
        match r.fill_buf() {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(HttpError::ReadFailed { during, source }),
        }
    }
    r.fill_buf()
        .map_err(|source| HttpError::ReadFailed { during, source })
}

/// Reads bytes up to and including the empty line that ends a head, refusing bare CR/LF and
/// NUL. Leading empty lines (CRLF) are skipped, as RFC 9112 §2.2 recommends. Returns
/// `None` on EOF before any byte. Consumes exactly the head from `r`.
fn read_head_bytes<R: BufRead>(
    r: &mut R,
    max_head: usize,
    what: &'static str,
) -> Result<Option<Vec<u8>>, HttpError> {
    let mut head: Vec<u8> = Vec::with_capacity(1024);
    let mut total = 0usize; // bytes consumed, including skipped leading CRLFs
    let mut leading = true; // still before the first byte of the start line
    let mut prev_cr = false;
    let mut line_empty = true;
    loop {
        let buf = match fill(r, "reading a message head") {
            Ok(buf) => buf,
            // Between messages, a read timeout is an idle connection and a TLS peer that
            // closed without close_notify has simply gone: nothing was cut short.
            Err(HttpError::ReadFailed { source, .. }) if total == 0 => {
                return match source.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        Err(HttpError::IdleTimeout)
                    }
                    io::ErrorKind::UnexpectedEof => Ok(None),
                    _ => Err(HttpError::ReadFailed {
                        during: "waiting for a message head",
                        source,
                    }),
                };
            }
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return if total == 0 {
                Ok(None)
            } else {
                Err(HttpError::TruncatedHead)
            };
        }
        // Only look at as many bytes as the limit still allows.
        let room = max_head.saturating_sub(total);
        if room == 0 {
            return Err(HttpError::HeadTooLarge { limit: max_head });
        }
        let scan = buf.get(..room).unwrap_or(buf);
        // Where this buffer's part of the head starts (None while skipping leading CRLFs).
        let mut start = if leading { None } else { Some(0) };
        let mut end = None;
        let mut i = 0;
        while i < scan.len() {
            if prev_cr {
                prev_cr = false;
                if scan.get(i) != Some(&b'\n') {
                    return Err(HttpError::BareCr { what });
                }
                if line_empty && !leading {
                    end = Some(i);
                    break;
                }
                line_empty = true;
                i += 1;
                continue;
            }
            // Fast path: skip the run of bytes above CR (everything printable); only CR,
            // LF, NUL and other control bytes need a decision.
            let run = i;
            while scan.get(i).is_some_and(|&b| b > b'\r') {
                i += 1;
            }
            let special = scan.get(i).copied();
            if i > run || special.is_some_and(|b| b != b'\r' && b != b'\n' && b != 0) {
                // Content (other control bytes such as HTAB are judged by the parser).
                if leading {
                    leading = false;
                    start = Some(run);
                }
                line_empty = false;
            }
            match special {
                None => break,
                Some(b'\r') => prev_cr = true,
                Some(b'\n') => return Err(HttpError::BareLf { what }),
                Some(0) => return Err(HttpError::NulByte { what }),
                Some(_) => {}
            }
            i += 1;
        }
        match (start, end) {
            (Some(s), Some(e)) => {
                // `s <= e < scan.len()`: both are positions the loop above visited.
                head.extend_from_slice(scan.get(s..=e).unwrap_or_default());
                r.consume(e + 1);
                return Ok(Some(head));
            }
            (Some(s), None) => head.extend_from_slice(scan.get(s..).unwrap_or_default()),
            (None, _) => {}
        }
        let n = scan.len();
        total += n;
        r.consume(n);
    }
}

/// Splits a head into its first line and the header block (which ends with the empty line).
fn split_first_line(head: &[u8]) -> (&[u8], &[u8]) {
    match head.windows(2).position(|w| w == b"\r\n").and_then(|p| head.split_at_checked(p)) {
        Some((line, rest)) => (line, rest.get(2..).unwrap_or_default()),
        None => (head, &[]),
    }
}

/// Parses the header block with httparse. httparse refuses obs-fold and whitespace before
/// the colon as a bad header name; only then is the block looked at again, so that each of
/// these smuggling shapes gets its own error.
fn parse_header_block(block: &[u8]) -> Result<Vec<Header>, HttpError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(block, &mut slots) {
        Ok(httparse::Status::Complete((_, parsed))) => Ok(parsed
            .iter()
            .map(|h| Header {
                name: h.name.to_owned(),
                value: h.value.to_vec(),
            })
            .collect()),
        Ok(httparse::Status::Partial) => Err(HttpError::TruncatedHead),
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::TooManyHeaders),
        Err(httparse::Error::HeaderValue) => Err(HttpError::InvalidHeaderValue {
            name: String::from("a header"),
        }),
        Err(_) => Err(diagnose_header_block(block)),
    }
}

/// Names the first obs-fold or whitespace-before-colon line of a block httparse refused.
fn diagnose_header_block(block: &[u8]) -> HttpError {
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            return HttpError::ObsFold;
        }
        let name = line.split(|&b| b == b':').next().unwrap_or(line);
        if name
            .last()
            .is_some_and(|&b| b == b' ' || b == b'\t')
        {
            return HttpError::SpaceBeforeColon;
        }
    }
    HttpError::InvalidHeaderName
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// Parses `HTTP/1.x`; other well-formed versions are 505, anything else `malformed`.
fn parse_version(v: &[u8], malformed: HttpError) -> Result<u8, HttpError> {
    match v {
        b"HTTP/1.1" => Ok(1),
        b"HTTP/1.0" => Ok(0),
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Err(HttpError::UnsupportedVersion {
                version: String::from_utf8_lossy(v).into_owned(),
            })
        }
        [b'H', b'T', b'T', b'P', b'/', major] if major.is_ascii_digit() => {
            Err(HttpError::UnsupportedVersion {
                version: String::from_utf8_lossy(v).into_owned(),
            })
        }
        _ => Err(malformed),
    }
}

fn is_valid_target(t: &[u8]) -> bool {
    !t.is_empty() && t.iter().all(|&b| (0x21..=0x7e).contains(&b) && b != b'#')
}

/// Reads one request head (request line + headers, up to `max_head` bytes and at most
/// [`MAX_HEADERS`] headers). `Ok(None)` on clean EOF before the first byte. Leaves the body
/// unread in `r`. Only lexical checks happen here; call [`validate_request`] next.
pub fn read_request_head<R: BufRead>(
    r: &mut R,
    max_head: usize,
) -> Result<Option<RequestHead>, HttpError> {
    let Some(head) = read_head_bytes(r, max_head, "request head")? else {
        return Ok(None);
    };
    let (line, block) = split_first_line(&head);
    if line == b"PRI * HTTP/2.0" {
        return Err(HttpError::Http2Preface);
    }
    // request-line = method SP request-target SP HTTP-version, single spaces only.
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::InvalidRequestLine);
    };
    if !is_token(method) {
        return Err(HttpError::InvalidMethod);
    }
    let minor_version = parse_version(version, HttpError::InvalidRequestLine)?;
    if !is_valid_target(target) {
        return Err(HttpError::InvalidTarget);
    }
    let headers = parse_header_block(block)?;
    Ok(Some(RequestHead {
        // Both were checked to be ASCII above, so these conversions cannot lose bytes.
        method: String::from_utf8_lossy(method).into_owned(),
        target: String::from_utf8_lossy(target).into_owned(),
        minor_version,
        headers,
    }))
}

/// Reads one response head from an upstream server. Every error is wrapped as
/// [`HttpError::Upstream`] (502). EOF before the first byte is `Upstream(TruncatedHead)`.
pub fn read_response_head<R: BufRead>(
    r: &mut R,
    max_head: usize,
) -> Result<ResponseHead, HttpError> {
    parse_response_head(r, max_head).map_err(HttpError::upstream)
}

fn parse_response_head<R: BufRead>(r: &mut R, max_head: usize) -> Result<ResponseHead, HttpError> {
    let head = read_head_bytes(r, max_head, "response head")?.ok_or(HttpError::TruncatedHead)?;
    let (line, block) = split_first_line(&head);
    // status-line = HTTP-version SP 3DIGIT SP [reason-phrase]; a missing final SP is tolerated.
    let mut parts = line.splitn(2, |&b| b == b' ');
    let (Some(version), Some(rest)) = (parts.next(), parts.next()) else {
        return Err(HttpError::InvalidStatusLine);
    };
    let minor_version = parse_version(version, HttpError::InvalidStatusLine)?;
    let (code, reason) = match rest {
        [a, b, c] => ([*a, *b, *c], &[][..]),
        [a, b, c, b' ', reason @ ..] => ([*a, *b, *c], reason),
        _ => return Err(HttpError::InvalidStatusLine),
    };
    if !code.iter().all(u8::is_ascii_digit) || code[0] == b'0' {
        return Err(HttpError::InvalidStatusLine);
    }
    let status = code
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    if !reason
        .iter()
        .all(|&b| b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80)
    {
        return Err(HttpError::InvalidStatusLine);
    }
    let headers = parse_header_block(block)?;
    Ok(ResponseHead {
        status,
        reason: String::from_utf8_lossy(reason).into_owned(),
        minor_version,
        headers,
    })
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

/// The first header named `name` (case-insensitive).
pub fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_slice())
}

fn all_named<'a>(headers: &'a [Header], name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_slice())
}

/// The first two values of headers named `name` (to tell "none", "one" and "several").
fn first_two<'a>(headers: &'a [Header], name: &str) -> (Option<&'a [u8]>, Option<&'a [u8]>) {
    let mut it = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_slice());
    (it.next(), it.next())
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Comma-separated list elements of every header named `name`, trimmed, empty ones skipped.
fn list_tokens<'a>(headers: &'a [Header], name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    all_named(headers, name)
        .flat_map(|v| v.split(|&b| b == b','))
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

fn has_token(headers: &[Header], name: &str, token: &str) -> bool {
    list_tokens(headers, name).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// Whether the `Connection` headers list `token` (case-insensitive, any of several
/// headers, comma-separated): e.g. `has_connection_token(&resp.headers, "close")`.
pub fn has_connection_token(headers: &[Header], token: &str) -> bool {
    has_token(headers, "connection", token)
}

fn parse_content_length(v: &[u8]) -> Result<u64, HttpError> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::InvalidContentLength);
    }
    v.iter().try_fold(0u64, |acc, d| {
        acc.checked_mul(10)
            .and_then(|a| a.checked_add(u64::from(d - b'0')))
            .ok_or(HttpError::InvalidContentLength)
    })
}

/// Checks every header line for bytes that could split or hide a header.
fn check_header_bytes(headers: &[Header]) -> Result<(), HttpError> {
    for h in headers {
        if !is_token(h.name.as_bytes()) {
            return Err(HttpError::InvalidHeaderName);
        }
        // Some servers (CGI/WSGI style) map `_` to `-`: a `Transfer_Encoding` the proxy
        // ignores could then frame the body for the upstream.
        if h.name.contains('_') {
            let dashed = h.name.to_ascii_lowercase().replace('_', "-");
            if dashed == "content-length" || dashed == "transfer-encoding" {
                return Err(HttpError::AmbiguousHeaderName {
                    name: h.name.clone(),
                });
            }
        }
        if h.value
            .iter()
            .any(|&b| b != b'\t' && (b < 0x20 || b == 0x7f))
        {
            return Err(HttpError::InvalidHeaderValue {
                name: h.name.clone(),
            });
        }
    }
    Ok(())
}

fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b)
}

/// Body framing of a request, refusing every ambiguous combination.
fn request_framing(head: &RequestHead) -> Result<Framing, HttpError> {
    let te = first_two(&head.headers, "transfer-encoding");
    let cl = first_two(&head.headers, "content-length");
    if te.0.is_some() && cl.0.is_some() {
        return Err(HttpError::ConflictingFraming);
    }
    if te.0.is_some() && head.minor_version == 0 {
        return Err(HttpError::TransferEncodingInHttp10);
    }
    // Exactly one TE header whose whole value is `chunked`: `gzip, chunked`,
    // `chunked, chunked` (in one header or two), `xchunked` and stray bytes are refused.
    match (te, cl) {
        ((Some(v), None), _) if v.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
        ((Some(_), _), _) => Err(HttpError::UnsupportedTransferEncoding),
        (_, (None, _)) => Ok(Framing::None),
        (_, (Some(v), None)) => Ok(Framing::Length(parse_content_length(v)?)),
        (_, (Some(_), Some(_))) => Err(HttpError::DuplicateContentLength),
    }
}

/// Strict validation, refusing every ambiguity a smuggling attack needs: conflicting or
/// duplicate framing headers, transfer codings other than exactly `chunked`, malformed
/// header bytes, a missing or repeated Host, h2c, unsupported versions and odd targets.
pub fn validate_request(head: RequestHead) -> Result<Request, HttpError> {
    if head.minor_version > 1 {
        return Err(HttpError::UnsupportedVersion {
            version: format!("HTTP/1.{}", head.minor_version),
        });
    }
    if head.method == "PRI" {
        return Err(HttpError::Http2Preface);
    }
    if !is_token(head.method.as_bytes()) {
        return Err(HttpError::InvalidMethod);
    }
    if !is_valid_target(head.target.as_bytes()) {
        return Err(HttpError::InvalidTarget);
    }
    check_header_bytes(&head.headers)?;

    let framing = request_framing(&head)?;
    let is_connect = head.method.eq_ignore_ascii_case("CONNECT");
    if is_connect && !matches!(framing, Framing::None | Framing::Length(0)) {
        return Err(HttpError::ConnectWithBody);
    }

    let host = match first_two(&head.headers, "host") {
        (Some(_), Some(_)) => return Err(HttpError::DuplicateHost),
        (None, _) if head.minor_version == 1 => return Err(HttpError::MissingHost),
        (None, _) => None,
        (Some(v), None) => {
            if v.is_empty() || !v.iter().all(|&b| is_host_byte(b)) {
                return Err(HttpError::InvalidHost);
            }
            Some(String::from_utf8_lossy(v).to_ascii_lowercase())
        }
    };

    // h2c: refuse the upgrade token and its settings header whatever Connection says.
    if header(&head.headers, "http2-settings").is_some()
        || list_tokens(&head.headers, "upgrade").any(|t| {
            let proto = t.split(|&b| b == b'/').next().unwrap_or(t);
            proto.eq_ignore_ascii_case(b"h2c") || proto.eq_ignore_ascii_case(b"h2")
        })
    {
        return Err(HttpError::H2cUpgrade);
    }

    let close = has_token(&head.headers, "connection", "close");
    let keep_alive = if head.minor_version == 1 {
        !close
    } else {
        !close && has_token(&head.headers, "connection", "keep-alive")
    };

    let upgrade = if head.minor_version == 1 && has_token(&head.headers, "connection", "upgrade") {
        let tokens: Vec<&[u8]> = list_tokens(&head.headers, "upgrade").collect();
        match tokens.as_slice() {
            [] => None,
            [t] if t.iter().all(|&b| is_tchar(b) || b == b'/') => {
                Some(String::from_utf8_lossy(t).to_ascii_lowercase())
            }
            // Several protocols: the proxy could not tell which one the server picks.
            _ => return Err(HttpError::InvalidUpgrade),
        }
    } else {
        None
    };
    if upgrade.is_some() && is_connect {
        return Err(HttpError::InvalidUpgrade);
    }

    let expect_continue = match first_two(&head.headers, "expect") {
        (None, _) => false,
        (Some(v), None) if v.eq_ignore_ascii_case(b"100-continue") => head.minor_version == 1,
        _ => return Err(HttpError::UnsupportedExpectation),
    };

    Ok(Request {
        head,
        framing,
        host,
        keep_alive,
        upgrade,
        expect_continue,
    })
}

// ---------------------------------------------------------------------------------------
// Forwarding
// ---------------------------------------------------------------------------------------

/// Headers that are never forwarded as received: hop-by-hop ones, method overrides (the
/// proxy evaluated the real method) and the framing headers (regenerated from `Framing`).
const DROPPED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "content-length",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "expect",
    "http2-settings",
];

/// Headers the client may not remove by naming them in `Connection` (Host is end-to-end).
const NOT_REMOVABLE_BY_CONNECTION: &[&str] = &["host"];

fn framing_header(framing: Framing) -> Option<Header> {
    match framing {
        Framing::Chunked => Some(Header::new("Transfer-Encoding", "chunked")),
        Framing::Length(n) => Some(Header::new("Content-Length", &n.to_string())),
        Framing::None | Framing::UntilClose => None,
    }
}

fn strip_hop_by_hop(headers: &[Header], keep_upgrade: bool, framing: Framing) -> Vec<Header> {
    let named_by_connection: Vec<&[u8]> = list_tokens(headers, "connection").collect();
    let mut out: Vec<Header> = headers
        .iter()
        .filter(|h| {
            let n = h.name.as_str();
            if DROPPED.iter().any(|d| n.eq_ignore_ascii_case(d)) {
                return false;
            }
            if n.eq_ignore_ascii_case("upgrade") {
                // `Connection: upgrade` names it, so only `keep_upgrade` decides.
                return keep_upgrade;
            }
            if NOT_REMOVABLE_BY_CONNECTION
                .iter()
                .any(|d| n.eq_ignore_ascii_case(d))
            {
                return true;
            }
            !named_by_connection
                .iter()
                .any(|t| t.eq_ignore_ascii_case(n.as_bytes()))
        })
        .cloned()
        .collect();
    out.extend(framing_header(framing));
    out
}

/// Headers to forward upstream: drops hop-by-hop headers (Connection and every header it
/// names except Host, Keep-Alive, Proxy-Connection, Proxy-Authorization,
/// Proxy-Authenticate, TE, Trailer, Upgrade unless `keep_upgrade`), method-override headers
/// (X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override), Expect and HTTP2-Settings.
/// Transfer-Encoding/Content-Length are removed and one header matching `req.framing` is
/// appended, so the forwarded head always agrees with the body [`copy_body`] writes.
pub fn forwardable_headers(req: &Request, keep_upgrade: bool) -> Vec<Header> {
    strip_hop_by_hop(&req.head.headers, keep_upgrade, req.framing)
}

/// Response headers to relay to the client for a body re-framed as `framing` (as returned
/// by [`response_framing`] for `request_method`): the same hop-by-hop removal as
/// [`forwardable_headers`] and one framing header regenerated. A valid Content-Length on a
/// response to HEAD or a 304 is kept as sent: there it describes the representation, not
/// this message's (absent) body.
pub fn forwardable_response_headers(
    request_method: &str,
    resp: &ResponseHead,
    framing: Framing,
    keep_upgrade: bool,
) -> Vec<Header> {
    let mut out = strip_hop_by_hop(&resp.headers, keep_upgrade, framing);
    let describes_representation =
        request_method.eq_ignore_ascii_case("HEAD") || resp.status == 304;
    if framing == Framing::None
        && describes_representation
        && let (Some(cl), None) = first_two(&resp.headers, "content-length")
        && let Ok(n) = parse_content_length(cl)
    {
        out.push(Header::new("Content-Length", &n.to_string()));
    }
    out
}

fn invalid_input(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_owned())
}

fn check_out_header(h: &Header) -> io::Result<()> {
    if !is_token(h.name.as_bytes()) {
        return Err(invalid_input("refusing to write an invalid header name"));
    }
    if h.value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(invalid_input(
            "refusing to write a header value with CR, LF or NUL",
        ));
    }
    Ok(())
}

fn put_headers(out: &mut Vec<u8>, headers: &[Header]) -> io::Result<()> {
    for h in headers {
        check_out_header(h)?;
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&h.value);
        out.extend_from_slice(b"\r\n");
    }
    Ok(())
}

/// Writes `METHOD target HTTP/1.1\r\n` + headers + (`Connection: upgrade` and
/// `Upgrade: <token>` when `upgrade` is given; any Connection/Upgrade in `headers` is then
/// skipped so each appears once) + CRLF, in one `write_all`. Refuses (InvalidInput) a method,
/// target or header that could split the head.
pub fn write_request_head<W: Write>(
    w: &mut W,
    method: &str,
    target: &str,
    headers: &[Header],
    upgrade: Option<&str>,
) -> io::Result<()> {
    if !is_token(method.as_bytes()) {
        return Err(invalid_input("refusing to write an invalid method"));
    }
    if !is_valid_target(target.as_bytes()) {
        return Err(invalid_input("refusing to write an invalid request target"));
    }
    let mut out = Vec::with_capacity(256 + headers.len() * 48);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    match upgrade {
        Some(token) => {
            if !token.bytes().all(|b| is_tchar(b) || b == b'/') || token.is_empty() {
                return Err(invalid_input("refusing to write an invalid Upgrade token"));
            }
            let rest: Vec<Header> = headers
                .iter()
                .filter(|h| {
                    !h.name.eq_ignore_ascii_case("connection")
                        && !h.name.eq_ignore_ascii_case("upgrade")
                })
                .cloned()
                .collect();
            put_headers(&mut out, &rest)?;
            out.extend_from_slice(b"Connection: upgrade\r\nUpgrade: ");
            out.extend_from_slice(token.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        None => put_headers(&mut out, headers)?,
    }
    out.extend_from_slice(b"\r\n");
    w.write_all(&out)
}

/// Writes `HTTP/1.<minor_version> status reason\r\n` + headers + CRLF in one `write_all`.
/// Refuses (InvalidInput) a status outside 100..=999 or bytes that could split the head.
pub fn write_response_head<W: Write>(w: &mut W, resp: &ResponseHead) -> io::Result<()> {
    if !(100..=999).contains(&resp.status) || resp.minor_version > 1 {
        return Err(invalid_input("refusing to write an invalid status line"));
    }
    if resp
        .reason
        .bytes()
        .any(|b| b == b'\r' || b == b'\n' || b == 0)
    {
        return Err(invalid_input(
            "refusing to write a reason with CR, LF or NUL",
        ));
    }
    let mut out = Vec::with_capacity(128 + resp.headers.len() * 48);
    out.extend_from_slice(b"HTTP/1.");
    out.push(b'0' + resp.minor_version);
    out.push(b' ');
    out.extend_from_slice(resp.status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(resp.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    put_headers(&mut out, &resp.headers)?;
    out.extend_from_slice(b"\r\n");
    w.write_all(&out)
}

/// Body framing of a response to `request_method`: HEAD, 1xx, 204, 304 → None; CONNECT 2xx
/// → None; `Transfer-Encoding: chunked` → Chunked; Content-Length → Length; otherwise
/// UntilClose. Both CL and TE, differing CLs, a transfer coding other than exactly
/// `chunked`, or TE in an HTTP/1.0 response: `Upstream` error (502). Identical repeated
/// Content-Length values are accepted (RFC 9112 §6.3).
pub fn response_framing(request_method: &str, resp: &ResponseHead) -> Result<Framing, HttpError> {
    if request_method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&resp.status)
        || resp.status == 204
        || resp.status == 304
    {
        return Ok(Framing::None);
    }
    if request_method.eq_ignore_ascii_case("CONNECT") && (200..300).contains(&resp.status) {
        return Ok(Framing::None);
    }
    let upstream = |e: HttpError| HttpError::Upstream(Box::new(e));
    let te: Vec<&[u8]> = all_named(&resp.headers, "transfer-encoding").collect();
    let mut cls = list_tokens(&resp.headers, "content-length");
    let has_cl = header(&resp.headers, "content-length").is_some();
    if !te.is_empty() {
        if has_cl {
            return Err(upstream(HttpError::ConflictingFraming));
        }
        if resp.minor_version == 0 {
            return Err(upstream(HttpError::TransferEncodingInHttp10));
        }
        return match te.as_slice() {
            [v] if v.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
            _ => Err(upstream(HttpError::UnsupportedTransferEncoding)),
        };
    }
    if !has_cl {
        return Ok(Framing::UntilClose);
    }
    let first = cls
        .next()
        .ok_or(HttpError::InvalidContentLength)
        .and_then(parse_content_length)
        .map_err(upstream)?;
    for v in cls {
        if parse_content_length(v).map_err(upstream)? != first {
            return Err(upstream(HttpError::DuplicateContentLength));
        }
    }
    Ok(Framing::Length(first))
}

/// Canonical reason phrase for the statuses the proxy itself sends.
fn canonical_reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Longest `X-Aegis-Reason` value written.
const MAX_REASON: usize = 512;

/// A complete small response the proxy itself sends (403 denials, 400s, 502s): status line,
/// `X-Aegis-Reason: <reason sanitised to one line of visible ASCII>`, `Content-Type:
/// text/plain; charset=utf-8`, `Content-Length`, `Connection: close` when `close`, and `body`.
/// A status outside 100..=999 is sent as 500.
pub fn simple_response(status: u16, reason: &str, body: &str, close: bool) -> Vec<u8> {
    let status = if (100..=999).contains(&status) {
        status
    } else {
        500
    };
    let mut clean: String = reason
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { ' ' })
        .take(MAX_REASON)
        .collect();
    clean = clean.trim().to_owned();
    if clean.is_empty() {
        clean.push('-');
    }
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nX-Aegis-Reason: {clean}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
        canonical_reason(status),
        body.len()
    );
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

// ---------------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------------

fn write_out<W: Write>(w: &mut W, data: &[u8], during: &'static str) -> Result<(), HttpError> {
    w.write_all(data)
        .map_err(|source| HttpError::WriteFailed { during, source })
}

fn flush_out<W: Write>(w: &mut W) -> Result<(), HttpError> {
    w.flush().map_err(|source| HttpError::WriteFailed {
        during: "flushing a body",
        source,
    })
}

fn check_limit(total: u64, more: u64, limit: Option<u64>) -> Result<u64, HttpError> {
    let next = total.checked_add(more).ok_or(HttpError::BodyTooLarge {
        limit: limit.unwrap_or(u64::MAX),
    })?;
    match limit {
        Some(l) if next > l => Err(HttpError::BodyTooLarge { limit: l }),
        _ => Ok(next),
    }
}

/// Copies exactly `n` bytes, flushing after each piece read. `what` names the body part for
/// truncation errors.
fn copy_exact<R: BufRead, W: Write>(
    r: &mut R,
    w: &mut W,
    mut n: u64,
    what: &'static str,
    got_before: u64,
    check: &mut Check<'_>,
) -> Result<(), HttpError> {
    let mut got = got_before;
    while n > 0 {
        let buf = fill(r, "reading a body")?;
        if buf.is_empty() {
            return Err(HttpError::BodyTruncated { got, what });
        }
        // What is left of the body, or the whole buffer when it holds less.
        let piece = usize::try_from(n).ok().and_then(|n| buf.get(..n)).unwrap_or(buf);
        let take = piece.len();
        check(piece).map_err(HttpError::BodyRefused)?;
        write_out(w, piece, "writing a body")?;
        r.consume(take);
        n -= take as u64;
        got += take as u64;
        flush_out(w)?;
    }
    Ok(())
}

/// Reads one CRLF-terminated line of at most `max` bytes (without the CRLF) into `line`.
/// Bare CR, bare LF and NUL are refused with `bad`.
fn read_crlf_line<R: BufRead>(
    r: &mut R,
    line: &mut Vec<u8>,
    max: usize,
    bad: fn() -> HttpError,
    got: u64,
) -> Result<(), HttpError> {
    line.clear();
    let mut prev_cr = false;
    loop {
        let buf = fill(r, "reading a chunked body")?;
        if buf.is_empty() {
            return Err(HttpError::BodyTruncated {
                got,
                what: "in a chunk size line or trailer",
            });
        }
        for (i, &b) in buf.iter().enumerate() {
            if prev_cr {
                if b != b'\n' {
                    return Err(bad());
                }
                r.consume(i + 1);
                return Ok(());
            }
            match b {
                b'\r' => prev_cr = true,
                b'\n' | 0 => return Err(bad()),
                _ => {
                    if line.len() >= max {
                        return Err(bad());
                    }
                    line.push(b);
                }
            }
        }
        let n = buf.len();
        r.consume(n);
    }
}

/// Parses `chunk-size [ chunk-ext ]`: hex digits without sign or prefix, then nothing or
/// `;` extensions (dropped; visible ASCII, SP and HTAB only).
fn parse_chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(HttpError::InvalidChunkSize);
    }
    let (hex, ext) = line.split_at(digits);
    if let Some((&first, rest)) = ext.split_first()
        && (first != b';'
            || !rest
                .iter()
                .all(|&b| b == b'\t' || (0x20..=0x7e).contains(&b)))
    {
        return Err(HttpError::InvalidChunkSize);
    }
    hex.iter().try_fold(0u64, |acc, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => d - b'A' + 10,
        };
        acc.checked_mul(16)
            .and_then(|a| a.checked_add(u64::from(v)))
            .ok_or(HttpError::ChunkSizeOverflow)
    })
}

fn copy_chunked<R: BufRead, W: Write>(
    r: &mut R,
    w: &mut W,
    limit: Option<u64>,
    check: &mut Check<'_>,
) -> Result<u64, HttpError> {
    let mut total = 0u64;
    let mut line = Vec::with_capacity(64);
    loop {
        read_crlf_line(
            r,
            &mut line,
            MAX_CHUNK_LINE,
            || HttpError::InvalidChunkSize,
            total,
        )?;
        let size = parse_chunk_size(&line)?;
        if size == 0 {
            break;
        }
        total = check_limit(total, size, limit)?;
        let mut size_line = [0u8; 20];
        write_out(w, write_hex(size, &mut size_line), "writing a chunk size")?;
        copy_exact(r, w, size, "inside a chunk", total - size, check)?;
        let mut crlf = [0u8; 2];
        read_exact_bytes(r, &mut crlf, total)?;
        if &crlf != b"\r\n" {
            return Err(HttpError::MissingChunkCrlf);
        }
        write_out(w, b"\r\n", "writing a chunk end")?;
        flush_out(w)?;
    }
    // Trailer section: header lines until an empty line; read, bounded, and dropped
    // (forwarding them would let a client set headers after the proxy's checks).
    let mut trailer_bytes = 0usize;
    loop {
        read_crlf_line(
            r,
            &mut line,
            MAX_TRAILERS,
            || HttpError::InvalidTrailers,
            total,
        )?;
        if line.is_empty() {
            break;
        }
        trailer_bytes += line.len() + 2;
        if trailer_bytes > MAX_TRAILERS || matches!(line.first(), Some(b' ' | b'\t')) {
            return Err(HttpError::InvalidTrailers);
        }
    }
    write_out(w, b"0\r\n\r\n", "writing the last chunk")?;
    flush_out(w)?;
    Ok(total)
}

/// Formats `size` as lower-case hex followed by CRLF into `out`; returns that part of it.
#[expect(clippy::indexing_slicing, reason = "a u64 has at most 16 hex digits, so digits + 2 <= 18 < 20; a nibble indexes 16 digits")]
fn write_hex(size: u64, out: &mut [u8; 20]) -> &[u8] {
    let digits = if size == 0 {
        1
    } else {
        (64 - size.leading_zeros()).div_ceil(4) as usize
    };
    for (i, slot) in out.iter_mut().take(digits).enumerate() {
        let shift = 4 * (digits - 1 - i);
        *slot = b"0123456789abcdef"[((size >> shift) & 0xf) as usize];
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    &out[..digits + 2]
}

fn read_exact_bytes<R: BufRead>(r: &mut R, out: &mut [u8], got: u64) -> Result<(), HttpError> {
    let mut filled = 0;
    while filled < out.len() {
        let buf = fill(r, "reading a chunked body")?;
        if buf.is_empty() {
            return Err(HttpError::BodyTruncated {
                got,
                what: "before the CRLF after a chunk",
            });
        }
        let take = buf.len().min(out.len() - filled);
        for (o, b) in out.iter_mut().skip(filled).zip(buf) {
            *o = *b;
        }
        r.consume(take);
        filled += take;
    }
    Ok(())
}

/// Copies a body with the given framing from `r` to `w`, re-framing strictly: `Length`
/// copies exactly n bytes (early EOF = error); `Chunked` parses every chunk strictly (hex
/// size without overflow, chunk extensions dropped, CRLF exactly, trailers dropped) and
/// writes it re-encoded as chunked; `UntilClose` copies to EOF; `None` copies nothing.
/// Flushes `w` after each piece read, so server-sent events stream. Data moves straight from
/// `r`'s buffer to `w` (wrap sockets in `BufReader::with_capacity(64 * 1024, ..)`).
/// Returns the number of payload bytes. `limit`: optional max payload bytes (413 when
/// exceeded; a `Length` body over the limit is refused before any byte is written).
/// Errors carry client-side statuses; use [`HttpError::upstream`] when relaying a response.
pub fn copy_body<R: BufRead, W: Write>(
    r: &mut R,
    w: &mut W,
    framing: Framing,
    limit: Option<u64>,
) -> Result<u64, HttpError> {
    copy_body_checked(r, w, framing, limit, &mut |_| Ok(()))
}

/// A judge of body pieces: `Err(reason)` stops the copy before the piece is written.
pub type Check<'a> = dyn FnMut(&[u8]) -> Result<(), String> + 'a;

/// [`copy_body`] that passes every piece of payload (never framing bytes) to `check` before
/// writing it; a refusal ends the copy with [`HttpError::BodyRefused`] (400), so a body
/// refused anywhere never reaches its last byte (nor, when chunked, its last chunk).
pub fn copy_body_checked<R: BufRead, W: Write>(
    r: &mut R,
    w: &mut W,
    framing: Framing,
    limit: Option<u64>,
    check: &mut Check<'_>,
) -> Result<u64, HttpError> {
    match framing {
        Framing::None => Ok(0),
        Framing::Length(n) => {
            check_limit(0, n, limit)?;
            copy_exact(r, w, n, "before Content-Length bytes", 0, check)?;
            Ok(n)
        }
        Framing::Chunked => copy_chunked(r, w, limit, check),
        Framing::UntilClose => {
            let mut total = 0u64;
            loop {
                let buf = fill(r, "reading a body")?;
                if buf.is_empty() {
                    return Ok(total);
                }
                let n = buf.len();
                total = check_limit(total, n as u64, limit)?;
                check(buf).map_err(HttpError::BodyRefused)?;
                write_out(w, buf, "writing a body")?;
                r.consume(n);
                flush_out(w)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_sizes_are_minimal_lower_case() {
        for (n, want) in [
            (0u64, "0\r\n"),
            (1, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (0xabcdef, "abcdef\r\n"),
            (u64::MAX, "ffffffffffffffff\r\n"),
        ] {
            let mut buf = [0u8; 20];
            assert_eq!(write_hex(n, &mut buf), want.as_bytes(), "{n}");
        }
    }

    #[test]
    fn chunk_size_lines() {
        assert_eq!(parse_chunk_size(b"0").unwrap(), 0);
        assert_eq!(parse_chunk_size(b"00000000000000000000001A").unwrap(), 26);
        assert_eq!(parse_chunk_size(b"a;x=\"y z\"").unwrap(), 10);
        assert_eq!(parse_chunk_size(b"ffffffffffffffff").unwrap(), u64::MAX);
        assert!(matches!(
            parse_chunk_size(b"1ffffffffffffffff"),
            Err(HttpError::ChunkSizeOverflow)
        ));
        for bad in [&b""[..], b";x", b"a x", b"a\tx", b"-1", b"0x1", b"a;\x01"] {
            assert!(
                matches!(parse_chunk_size(bad), Err(HttpError::InvalidChunkSize)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn content_lengths() {
        assert_eq!(parse_content_length(b"0").unwrap(), 0);
        assert_eq!(
            parse_content_length(b"18446744073709551615").unwrap(),
            u64::MAX
        );
        for bad in [
            &b""[..],
            b"18446744073709551616",
            b" 1",
            b"1 ",
            b"1,1",
            b"+1",
        ] {
            assert!(parse_content_length(bad).is_err(), "{bad:?}");
        }
    }
}
