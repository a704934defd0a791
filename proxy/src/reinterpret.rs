//! What a server could read as another request than the one the rules checked: method and
//! path overrides in headers and bodies of requests to an `[api.NAME]`.
//!
//! Input: the headers of a request to an API, then its body, piece by piece, before each
//! piece is forwarded. Output: `Err(reason)` for a request some common framework would
//! route as another method or path (the proxy answers `400` and never completes the
//! request upstream), `Ok` otherwise. The path and query are judged by the shared
//! canonicaliser ([`aegis_policy::ir::api::canonical_request`]); this module covers what
//! only the proxy sees.
//!
//! Refused:
//! - a method-override header in any spelling a server may map to it (`X-HTTP-Method-Override`,
//!   `X-HTTP-Method`, `X-Method-Override`, with `_` for `-` as CGI, Rack and PHP read them),
//!   and the path-override headers `X-Original-URL` and `X-Rewrite-URL` (IIS, Laminas);
//! - more than one `Content-Type` (servers pick different ones);
//! - a body parameter named `_method` (Rails, Laravel, Symfony, Spring, ASP.NET Core), in
//!   a form body (`application/x-www-form-urlencoded`, or no `Content-Type`, which Rack
//!   parses as a form), a multipart body (any `Content-Disposition` line of the body naming
//!   it), or as a key of a JSON body (Laravel reads JSON input for `_method`), in every
//!   spelling those parsers decode (percent-escapes, `+`, JSON `\u` escapes, PHP's
//!   `.`/space/`[` for `_`, any case).
//!
//! Invariants: the scanners keep O(1) state per body except one bounded multipart line
//! (8 KiB; a longer line that mentions `Content-Disposition` is refused); a piece is
//! judged before it is written, so a refused body never reaches its end upstream.

use aegis_policy::ir::api::{framework_param_name, is_method_override_param};

use crate::http1::Header;

/// Header names (lower case, `-`) a server may act on as the request's method.
pub const METHOD_OVERRIDE_HEADERS: &[&str] = &["x-http-method-override", "x-http-method", "x-method-override"];
/// Header names a server may act on as the request's path.
pub const PATH_OVERRIDE_HEADERS: &[&str] = &["x-original-url", "x-rewrite-url"];

fn dashed(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// Checks the headers of a request to an API (see the module doc).
pub fn check_headers(headers: &[Header]) -> Result<(), String> {
    for h in headers {
        let n = dashed(&h.name);
        if METHOD_OVERRIDE_HEADERS.contains(&n.as_str()) {
            return Err(format!("method-override header `{}`: servers would act on another method than the one checked", h.name));
        }
        if PATH_OVERRIDE_HEADERS.contains(&n.as_str()) {
            return Err(format!("path-override header `{}`: servers would act on another path than the one checked", h.name));
        }
    }
    if headers.iter().filter(|h| dashed(&h.name) == "content-type").count() > 1 {
        return Err("more than one Content-Type".into());
    }
    Ok(())
}

const NEEDLE: &[u8] = b"_method";

/// Scans a request body for `_method` parameters; built by [`body_scan`].
#[derive(Default)]
pub struct BodyScan {
    form: Option<FormScan>,
    multipart: Option<MultipartScan>,
    json: Option<JsonScan>,
}

/// The scanners a body of this `Content-Type` needs (`None`: nothing to scan).
pub fn body_scan(headers: &[Header]) -> Option<BodyScan> {
    let ct = headers.iter().find(|h| dashed(&h.name) == "content-type").map(|h| String::from_utf8_lossy(&h.value).to_ascii_lowercase());
    let mut s = BodyScan::default();
    match &ct {
        None => s.form = Some(FormScan::default()),
        Some(ct) => {
            if ct.contains("form") || ct.contains("urlencoded") {
                s.form = Some(FormScan::default());
            }
            if ct.contains("multipart") {
                s.multipart = Some(MultipartScan::default());
            }
            if ct.contains("json") {
                s.json = Some(JsonScan::default());
            }
        }
    }
    (s.form.is_some() || s.multipart.is_some() || s.json.is_some()).then_some(s)
}

impl BodyScan {
    /// Judges the next piece of the body (call before forwarding it).
    pub fn feed(&mut self, piece: &[u8]) -> Result<(), String> {
        if let Some(f) = &mut self.form {
            f.feed(piece)?;
        }
        if let Some(m) = &mut self.multipart {
            m.feed(piece)?;
        }
        if let Some(j) = &mut self.json {
            j.feed(piece)?;
        }
        Ok(())
    }
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// `application/x-www-form-urlencoded`: parameter names, decoded as PHP and Rack do.
#[derive(Default)]
struct FormScan {
    in_value: bool,
    /// Bytes of a `%XX` escape seen so far in the name.
    pct: Vec<u8>,
    lead: bool,
    matched: usize,
    dead: bool,
    started: bool,
}

impl FormScan {
    fn name_char(&mut self, c: u8) -> Result<(), String> {
        if self.dead {
            return Ok(());
        }
        if self.lead && matches!(c, b' ' | b'\t' | b'\r' | b'\n' | 0) {
            return Ok(());
        }
        self.lead = false;
        let c = match c {
            b' ' | b'.' | b'[' => b'_',
            c => c.to_ascii_lowercase(),
        };
        if NEEDLE.get(self.matched) == Some(&c) {
            self.matched += 1;
            if self.matched == NEEDLE.len() {
                return Err("a `_method` parameter in the form body: Rails, Laravel and Spring act on it instead of the request method".into());
            }
        } else {
            self.dead = true;
        }
        Ok(())
    }

    fn feed(&mut self, piece: &[u8]) -> Result<(), String> {
        if !self.started {
            self.started = true;
            self.lead = true;
        }
        for &b in piece {
            if b == b'&' || b == b';' {
                self.in_value = false;
                self.pct.clear();
                self.lead = true;
                self.matched = 0;
                self.dead = false;
                continue;
            }
            if self.in_value {
                continue;
            }
            if b == b'=' {
                self.in_value = true;
                continue;
            }
            if !self.pct.is_empty() || b == b'%' {
                self.pct.push(b);
                if self.pct.len() < 3 {
                    continue;
                }
                let esc = std::mem::take(&mut self.pct);
                match (esc.get(1).copied().and_then(hex), esc.get(2).copied().and_then(hex)) {
                    (Some(h), Some(l)) => self.name_char(h * 16 + l)?,
                    // Not an escape: the bytes stand for themselves.
                    _ => {
                        for c in esc {
                            self.name_char(c)?;
                        }
                    }
                }
                continue;
            }
            self.name_char(if b == b'+' { b' ' } else { b })?;
        }
        Ok(())
    }
}

/// Longest multipart line examined whole.
const MAX_LINE: usize = 8 * 1024;
const DISPOSITION: &[u8] = b"content-disposition";

/// `multipart/*`: every line that mentions `Content-Disposition` has its `name` parameters
/// checked.
#[derive(Default)]
struct MultipartScan {
    line: Vec<u8>,
    /// The current line outgrew [`MAX_LINE`]: only whether it mentions the header is tracked.
    overflow: bool,
    tail: Vec<u8>,
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// The `name` / `name*` parameter values of a Content-Disposition line.
fn disposition_names(line: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let lower = line.to_ascii_lowercase();
    let mut from = 0;
    while let Some(off) = lower.get(from..).and_then(|s| s.windows(4).position(|w| w == b"name")) {
        let at = from + off;
        from = at + 4;
        if at > 0 && lower.get(at - 1).is_some_and(|b| b.is_ascii_alphanumeric()) {
            continue;
        }
        let mut i = at + 4;
        let skip_ws = |i: &mut usize| {
            while lower.get(*i).is_some_and(|b| *b == b' ' || *b == b'\t') {
                *i += 1;
            }
        };
        skip_ws(&mut i);
        let extended = lower.get(i) == Some(&b'*');
        if extended {
            i += 1;
            skip_ws(&mut i);
        }
        if lower.get(i) != Some(&b'=') {
            continue;
        }
        i += 1;
        skip_ws(&mut i);
        let mut value = Vec::new();
        if line.get(i) == Some(&b'"') {
            i += 1;
            while let Some(&c) = line.get(i) {
                match c {
                    b'\\' => {
                        value.extend(line.get(i + 1));
                        i += 2;
                    }
                    b'"' => break,
                    c => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while let Some(&c) = line.get(i) {
                if c == b';' || c == b' ' || c == b'\t' || c == b'\r' {
                    break;
                }
                value.push(c);
                i += 1;
            }
        }
        let mut v = String::from_utf8_lossy(&value).into_owned();
        if extended && let Some(p) = v.rfind('\'') {
            v = v.get(p + 1..).unwrap_or("").to_string();
        }
        out.push(v);
    }
    out
}

impl MultipartScan {
    fn end_line(&mut self) -> Result<(), String> {
        let line = std::mem::take(&mut self.line);
        let overflow = std::mem::replace(&mut self.overflow, false);
        self.tail.clear();
        if overflow {
            return Ok(());
        }
        if contains_ci(&line, DISPOSITION) && disposition_names(&line).iter().any(|n| is_method_override_param(&framework_param_name(n))) {
            return Err("a `_method` part in the multipart body: Rails, Laravel and Spring act on it instead of the request method".into());
        }
        Ok(())
    }

    fn feed(&mut self, piece: &[u8]) -> Result<(), String> {
        for part in piece.split_inclusive(|b| *b == b'\n') {
            let ends = part.last() == Some(&b'\n');
            if self.overflow {
                let mut window = std::mem::take(&mut self.tail);
                window.extend_from_slice(part);
                if contains_ci(&window, DISPOSITION) {
                    return Err(format!("a multipart line longer than {} KiB mentions Content-Disposition", MAX_LINE / 1024));
                }
                let keep = window.len().saturating_sub(DISPOSITION.len());
                self.tail = window.get(keep..).unwrap_or_default().to_vec();
            } else if self.line.len() + part.len() > MAX_LINE {
                let mut window = std::mem::take(&mut self.line);
                window.extend_from_slice(part);
                if contains_ci(&window, DISPOSITION) {
                    return Err(format!("a multipart line longer than {} KiB mentions Content-Disposition", MAX_LINE / 1024));
                }
                self.overflow = true;
                let keep = window.len().saturating_sub(DISPOSITION.len());
                self.tail = window.get(keep..).unwrap_or_default().to_vec();
            } else {
                self.line.extend_from_slice(part);
            }
            if ends {
                self.end_line()?;
            }
        }
        Ok(())
    }
}

/// JSON: object keys (a string followed by `:`), with escapes decoded.
#[derive(Default)]
struct JsonScan {
    in_str: bool,
    /// 0: none; 1: after `\`; 2..=5: reading the hex digits of `\u`.
    esc: u8,
    unit: u32,
    matched: usize,
    dead: bool,
    /// The last string matched: a `:` next makes it a key.
    pending: bool,
}

impl JsonScan {
    fn str_char(&mut self, c: u32) {
        if self.dead || self.matched >= NEEDLE.len() {
            return;
        }
        let c = char::from_u32(c).map(|c| c.to_ascii_lowercase());
        if c.is_some_and(|c| c.is_ascii() && NEEDLE.get(self.matched) == Some(&(c as u8))) {
            self.matched += 1;
        } else {
            self.dead = true;
        }
    }

    fn feed(&mut self, piece: &[u8]) -> Result<(), String> {
        for &b in piece {
            if !self.in_str {
                if b == b'"' {
                    self.in_str = true;
                    self.matched = 0;
                    self.dead = false;
                    self.pending = false;
                } else if self.pending && !matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
                    if b == b':' {
                        return Err("a `_method` key in the JSON body: Laravel acts on it instead of the request method".into());
                    }
                    self.pending = false;
                }
                continue;
            }
            match self.esc {
                1 => {
                    self.esc = 0;
                    match b {
                        b'u' => {
                            self.esc = 2;
                            self.unit = 0;
                        }
                        b'b' => self.str_char(8),
                        b'f' => self.str_char(12),
                        b'n' => self.str_char(10),
                        b'r' => self.str_char(13),
                        b't' => self.str_char(9),
                        c => self.str_char(u32::from(c)),
                    }
                }
                2..=5 => {
                    self.unit = self.unit * 16 + hex(b).map(u32::from).unwrap_or(0);
                    self.esc += 1;
                    if self.esc == 6 {
                        self.esc = 0;
                        self.str_char(self.unit);
                    }
                }
                _ => match b {
                    b'\\' => self.esc = 1,
                    b'"' => {
                        self.in_str = false;
                        self.pending = !self.dead && self.matched >= NEEDLE.len();
                    }
                    c => self.str_char(u32::from(c)),
                },
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test, with its message")]
    use super::*;

    fn scan(ct: Option<&str>, body: &[u8], piece: usize) -> Result<(), String> {
        let headers: Vec<Header> = ct.map(|c| Header::new("Content-Type", c)).into_iter().collect();
        let Some(mut s) = body_scan(&headers) else { return Ok(()) };
        body.chunks(piece.max(1)).try_for_each(|p| s.feed(p))
    }

    #[test]
    fn override_headers_in_every_spelling_are_refused() {
        for n in ["X-HTTP-Method-Override", "X_HTTP_METHOD_OVERRIDE", "X-HTTP_Method-Override", "x-http-method", "X-Method-Override", "X-Original-URL", "X_Rewrite_Url"] {
            assert!(check_headers(&[Header::new(n, "DELETE")]).is_err(), "{n}");
        }
        assert!(check_headers(&[Header::new("Content-Type", "a/b"), Header::new("content-type", "c/d")]).is_err());
        assert!(check_headers(&[Header::new("X-Method", "DELETE"), Header::new("Accept", "*/*")]).is_ok());
    }

    #[test]
    fn method_parameters_in_bodies_are_found_in_every_spelling_and_split() {
        let form = Some("application/x-www-form-urlencoded");
        let bad: Vec<(Option<&str>, &str)> = vec![
            (form, "a=1&_method=DELETE"),
            (form, "_method=DELETE"),
            (form, "a=1&%5Fmethod=DELETE"),
            (form, "a=1&_%6d%65thod=DELETE"),
            (form, "a=1;_METHOD=DELETE"),
            (form, "+ .method=DELETE"),
            (form, "_method[x]=DELETE"),
            (None, "_method=DELETE"),
            (Some("APPLICATION/X-WWW-FORM-URLENCODED; charset=utf-8"), "_method=put"),
            (Some("multipart/form-data; boundary=b"), "--b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--b--\r\n"),
            (Some("multipart/form-data; boundary=b"), "--b\r\ncontent-disposition:form-data;name=_method\r\n\r\nDELETE\r\n--b--\r\n"),
            (Some("multipart/form-data; boundary=b"), "--b\r\nContent-Disposition: form-data; name*=utf-8''%5Fmethod\r\n\r\nDELETE\r\n"),
            (Some("multipart/form-data; boundary=b"), "--b\r\nContent-Disposition: form-data; name=\".method\"\r\n\r\nDELETE\r\n"),
            (Some("application/json"), r#"{"a": 1, "_method": "DELETE"}"#),
            (Some("application/json"), r#"{"a": {"\u005fmethod" : "DELETE"}}"#),
            (Some("application/vnd.api+json"), r#"{"_Method":"DELETE"}"#),
        ];
        for (ct, body) in &bad {
            for piece in [1, 3, 7, 4096] {
                assert!(scan(*ct, body.as_bytes(), piece).is_err(), "{ct:?} {body} (pieces of {piece})");
            }
        }
        let good: Vec<(Option<&str>, &str)> = vec![
            (form, "method=DELETE&a_method=1&x=_method"),
            (form, "a=%26_method"),
            (Some("multipart/form-data; boundary=b"), "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"_method.txt\"\r\n\r\n_method=DELETE\r\n"),
            (Some("application/json"), r#"{"note": "_method", "x": ["_method"]}"#),
            (Some("application/octet-stream"), "_method=DELETE"),
            (Some("text/plain"), "a=1&_method=DELETE"),
        ];
        for (ct, body) in &good {
            assert!(scan(*ct, body.as_bytes(), 3).is_ok(), "{ct:?} {body}");
        }
    }

    #[test]
    fn a_long_multipart_line_naming_the_header_is_refused() {
        let long = format!("--b\r\nContent-Disposition: form-data; {}name=\"_method\"\r\n", "x=y; ".repeat(4000));
        assert!(scan(Some("multipart/form-data; boundary=b"), long.as_bytes(), 1000).is_err());
        let data = format!("--b\r\nContent-Type: application/octet-stream\r\n\r\n{}\r\n", "z".repeat(100_000));
        assert!(scan(Some("multipart/form-data; boundary=b"), data.as_bytes(), 1000).is_ok());
    }
}
