//! HTTP API rules and the canonical form of API requests.
//!
//! A rule is `METHOD /segment/segment/...` where METHOD is an HTTP method in upper case or
//! `*` (any method), and each segment is literal text, `*` (exactly one non-empty segment)
//! or `**` (zero or more segments).
//!
//! Input: a request's method and target (`/path?query`), from the proxy or a query of
//! `aegisc check`. Output: a [`CanonicalRequest`] (what is matched, and exactly what the
//! proxy forwards), or why the request is **refused**: a request that common servers could
//! read as another method or another path never reaches a rule. Both the evaluator and the
//! proxy call [`canonical_request`]; there is no second canonicaliser.
//!
//! The canonical form (see `docs/proxy.md`, "The canonical form of API requests"):
//! - the method is an upper-case token (servers that upper-case `delete` would otherwise
//!   act on a method the rules never saw);
//! - the path is split at `/` into segments; `%XX` escapes of unreserved characters are
//!   decoded, every other escape is kept upper-cased;
//! - refused: empty segments (`//`, a trailing `/`), `.` and `..` (in any spelling), a raw
//!   `\` or `;`, escapes of `/ \ ; ? # NUL`, any control character (`%09`, `%0A`, ...),
//!   U+2028/U+2029, white space at either end of a segment (`%20`, U+00A0), double encoding
//!   (`%2561`: a second decoding would change the path), escapes that are not valid UTF-8
//!   (overlong `%C0%AE`, lone bytes), and segments whose NFKC form contains a character
//!   that separates or re-encodes paths (fullwidth `／`, `．．`, `％`);
//! - refused: a `_method` query parameter in any spelling PHP, Rails, Laravel, Spring or
//!   Jersey decode (`_method`, `%5Fmethod`, `.method`, ` _method`), since those frameworks
//!   route on it instead of the request method.
//!
//! Matching: an `allow` rule compares each literal segment byte for byte with the
//! canonical text (and its method exactly), so only the spelling written in the policy is
//! allowed. A `deny` rule compares the *fold* of each segment: NFKC, then case folded
//! (`ADMIN`, `%41dmin`, `ａｄｍｉｎ`, `admın` all fold to `admin`), and a literal also
//! denies the segment with any format suffix (`secret` denies `secret.json`, `secret.`),
//! and a deny of `GET` also denies `HEAD` (servers answer HEAD with their GET handler); so
//! no spelling that a case-insensitive, normalising or suffix-stripping server routes to a
//! denied path is allowed.
//! Invariants: canonicalisation is idempotent (the canonical text of a canonical path is
//! itself); it never panics; what it accepts contains no byte a server could split on.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**`: zero or more segments.
    Any,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HttpRule {
    /// `None` means any method (`*`).
    pub method: Option<String>,
    pub segments: Vec<Segment>,
}

/// One segment of a canonical path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathSegment {
    /// Canonical text: forwarded, and compared with `allow` literals.
    pub text: String,
    /// Decoded, NFKC-normalised, case-folded: compared with the fold of `deny` literals.
    pub fold: String,
}

/// A request in canonical form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanonicalRequest {
    pub method: String,
    pub segments: Vec<PathSegment>,
    /// The query as sent (without `?`), if any: rules do not match it, the proxy forwards it.
    pub query: Option<String>,
}

impl CanonicalRequest {
    /// `/a/b` (or `/`): the canonical path.
    pub fn path(&self) -> String {
        if self.segments.is_empty() {
            return "/".into();
        }
        self.segments.iter().fold(String::new(), |mut s, p| {
            s.push('/');
            s.push_str(&p.text);
            s
        })
    }

    /// The request target to forward: the canonical path and the query as sent.
    pub fn target(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path()),
            None => self.path(),
        }
    }
}

impl fmt::Display for HttpRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.method.as_deref().unwrap_or("*"))?;
        f.write_str(" ")?;
        if self.segments.is_empty() {
            return f.write_str("/");
        }
        for s in &self.segments {
            f.write_str("/")?;
            match s {
                Segment::Literal(l) => f.write_str(l)?,
                Segment::One => f.write_str("*")?,
                Segment::Any => f.write_str("**")?,
            }
        }
        Ok(())
    }
}

impl serde::Serialize for HttpRule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for HttpRule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HttpRule::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte a `%XX` escape at `bytes[i]` stands for.
fn escape_at(bytes: &[u8], i: usize) -> Option<u8> {
    if bytes.get(i) != Some(&b'%') {
        return None;
    }
    let h = bytes.get(i + 1).and_then(|b| hex(*b))?;
    let l = bytes.get(i + 2).and_then(|b| hex(*b))?;
    Some(h * 16 + l)
}

/// Characters that separate, end or re-encode a path for some server, after decoding or
/// NFKC normalisation.
fn splits_paths(c: char) -> bool {
    matches!(c, '/' | '\\' | '?' | '#' | ';' | '%') || c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// The fold a `deny` literal is compared under: NFKC, then each character upper- and then
/// lower-cased with its simple mapping (`ı` → `I` → `i`, `ſ` → `s`, `K` (Kelvin) → `k`,
/// `İ` → `i`).
fn fold(decoded: &str) -> String {
    if decoded.is_ascii() {
        return decoded.to_ascii_lowercase();
    }
    let mut out = String::with_capacity(decoded.len());
    for c in decoded.nfkc() {
        for u in c.to_uppercase() {
            out.extend(u.to_lowercase().next());
        }
    }
    out
}

/// Canonicalises one path segment (`seg` is what lies between two `/`); `Err` says why the
/// path is refused.
fn canonical_segment(seg: &str) -> Result<PathSegment, String> {
    let bytes = seg.as_bytes();
    let mut text = String::with_capacity(seg.len());
    let mut decoded: Vec<u8> = Vec::with_capacity(seg.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let Some(v) = escape_at(bytes, i) else {
                return Err("invalid percent-escape".into());
            };
            match v {
                b'/' => return Err("encoded `/` (%2F)".into()),
                b'\\' => return Err("encoded `\\` (%5C)".into()),
                b';' => return Err("encoded `;` (%3B)".into()),
                b'?' => return Err("encoded `?` (%3F): a server that decodes it starts the query there".into()),
                b'#' => return Err("encoded `#` (%23): a server that decodes it ends the path there".into()),
                0 => return Err("encoded NUL (%00)".into()),
                v if v < 0x20 || v == 0x7f => return Err(format!("encoded control character (%{v:02X})")),
                v if is_unreserved(v) => text.push(char::from(v)),
                v => text.push_str(&format!("%{v:02X}")),
            }
            decoded.push(v);
            i += 3;
            continue;
        }
        match b {
            b'\\' => return Err("backslash in path".into()),
            b';' => return Err("`;` path parameter".into()),
            b if b.is_ascii_graphic() => {
                text.push(char::from(b));
                decoded.push(b);
            }
            _ => return Err("control, space or non-ASCII byte (must be percent-encoded)".into()),
        }
        i += 1;
    }
    if text.is_empty() {
        return Err("empty segment (`//` or a trailing `/`)".into());
    }
    // A second decoding (done by some servers and frameworks) would change the path.
    if (0..decoded.len()).any(|k| escape_at(&decoded, k).is_some()) {
        return Err("double percent-encoding (`%25XX`): a server that decodes twice reads another path".into());
    }
    let decoded = String::from_utf8(decoded).map_err(|_| "escapes that are not valid UTF-8 (an overlong or broken sequence such as %C0%AE)".to_string())?;
    if decoded == "." || decoded == ".." {
        return Err(format!("`{decoded}` segment"));
    }
    if let Some(c) = decoded.chars().find(|c| splits_paths(*c)) {
        return Err(format!("character U+{:04X} in a segment", u32::from(c)));
    }
    if decoded.starts_with(char::is_whitespace) || decoded.ends_with(char::is_whitespace) {
        return Err("white space at the start or end of a segment (servers that trim it read another path)".into());
    }
    let fold = fold(&decoded);
    if fold == "." || fold == ".." || fold.chars().any(splits_paths) || fold.starts_with(char::is_whitespace) || fold.ends_with(char::is_whitespace) {
        return Err(format!("`{decoded}` normalises (NFKC) to `{}`, which a normalising server reads as another path", decoded.nfkc().collect::<String>()));
    }
    Ok(PathSegment { text, fold })
}

/// Canonical segments of a request target's path (the query and fragment are cut off), or
/// why it is refused.
pub fn canonical_path(target: &str) -> Result<Vec<PathSegment>, String> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let Some(rest) = path.strip_prefix('/') else {
        return Err("path must start with `/`".into());
    };
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    rest.split('/').map(canonical_segment).collect()
}

/// The name a query parameter has for the frameworks that read it: percent- and
/// `+`-decoded, leading spaces dropped and ` `, `.`, `[` read as `_` (PHP), lower case.
pub fn framework_param_name(raw: &str) -> String {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match escape_at(b, i) {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(if c == b'+' { b' ' } else { c });
                i += 1;
            }
        }
    }
    let s = String::from_utf8_lossy(&out);
    s.trim_start_matches([' ', '\t', '\r', '\n', '\0'])
        .chars()
        .map(|c| if matches!(c, ' ' | '.' | '[') { '_' } else { c.to_ascii_lowercase() })
        .collect()
}

/// Whether a parameter name (as [`framework_param_name`] reads it) overrides the method.
pub fn is_method_override_param(name: &str) -> bool {
    name.starts_with("_method")
}

/// The canonical form of a request, or why it is refused (see the module doc).
pub fn canonical_request(method: &str, target: &str) -> Result<CanonicalRequest, String> {
    if !is_http_method(method) {
        return Err(format!("method `{method}` is not an upper-case HTTP method (servers that upper-case it would act on a method the rules never saw)"));
    }
    let segments = canonical_path(target)?;
    let query = target.split('#').next().unwrap_or("").split_once('?').map(|(_, q)| q.to_string());
    if let Some(q) = &query {
        // `&` and `;` both separate parameters for some parsers (Rack before 3).
        if let Some(p) = q.split(['&', ';']).find(|p| is_method_override_param(&framework_param_name(p.split('=').next().unwrap_or("")))) {
            return Err(format!("method override in the query (`{}`): Laravel, Symfony, Spring and Jersey act on it instead of {method}", p.split('=').next().unwrap_or("")));
        }
    }
    Ok(CanonicalRequest { method: method.to_string(), segments, query })
}

pub fn is_http_method(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_uppercase())
}

impl HttpRule {
    pub fn parse(text: &str) -> Result<HttpRule, String> {
        let Some((method, path)) = text.split_once(' ') else {
            return Err("expected `METHOD /path`, e.g. `GET /gmail/v1/users/me/messages/**`".into());
        };
        let path = path.trim_start();
        let method = match method {
            "*" => None,
            m if is_http_method(m) => Some(m.to_string()),
            m if is_http_method(&m.to_ascii_uppercase()) => {
                return Err(format!("methods are upper case: write `{}`", m.to_ascii_uppercase()));
            }
            m => return Err(format!("`{m}` is not an HTTP method")),
        };
        if path.contains(['?', '#']) {
            return Err("rules match paths only; remove the query string".into());
        }
        let Some(rest) = path.strip_prefix('/') else {
            return Err("the path must start with `/`".into());
        };
        let mut segments = Vec::new();
        if !rest.is_empty() {
            for seg in rest.split('/') {
                segments.push(match seg {
                    "*" => Segment::One,
                    "**" => Segment::Any,
                    s if s.contains('*') => {
                        return Err(format!("`{s}`: `*` and `**` must be a whole segment"));
                    }
                    s => Segment::Literal(canonical_segment(s).map_err(|e| format!("segment `{s}`: {e}"))?.text),
                });
            }
        }
        Ok(HttpRule { method, segments })
    }

    /// Whether this rule, as an `allow` rule, admits the request: the method exactly, each
    /// literal segment byte for byte.
    pub fn matches(&self, method: &str, path: &[PathSegment]) -> bool {
        if let Some(m) = &self.method
            && m != method
        {
            return false;
        }
        match_segments(&self.segments, path, |l, p| l == p.text)
    }

    /// Whether this rule, as a `deny` rule, catches the request: a `GET` rule also catches
    /// `HEAD`; literal segments compare folded, and also catch the segment with a format
    /// suffix (`secret` catches `SECRET.json`). See the module doc.
    pub fn denies(&self, method: &str, path: &[PathSegment]) -> bool {
        if let Some(m) = &self.method
            && m != method
            && !(m == "GET" && method == "HEAD")
        {
            return false;
        }
        let folded: Vec<Segment> = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => Segment::Literal(canonical_segment(l).map(|c| c.fold).unwrap_or_else(|_| l.to_ascii_lowercase())),
                other => other.clone(),
            })
            .collect();
        match_segments(&folded, path, |l, p| p.fold == l || p.fold.strip_prefix(l).is_some_and(|rest| rest.starts_with('.')))
    }
}

/// Whether `pattern` matches all of `path`, literals compared by `eq`. Dynamic programming
/// over path prefixes: O(pattern × path) even for rules with several `**`, whose naive
/// backtracking is exponential in a request path that the agent chooses (a denial of
/// service of the proxy).
fn match_segments(pattern: &[Segment], path: &[PathSegment], eq: impl Fn(&str, &PathSegment) -> bool) -> bool {
    // reach[j]: the pattern segments seen so far match exactly path[..j].
    let mut reach: Vec<bool> = std::iter::once(true).chain(path.iter().map(|_| false)).collect();
    for seg in pattern {
        reach = match seg {
            Segment::Any => reach
                .iter()
                .scan(false, |seen, r| {
                    *seen |= *r;
                    Some(*seen)
                })
                .collect(),
            Segment::One | Segment::Literal(_) => std::iter::once(false)
                .chain(reach.iter().zip(path).map(|(r, p)| {
                    *r && match seg {
                        Segment::Literal(l) => eq(l, p),
                        _ => true,
                    }
                }))
                .collect(),
        };
    }
    reach.last().copied().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(rule: &str, method: &str, path: &str) -> bool {
        let r = HttpRule::parse(rule).unwrap();
        canonical_path(path).is_ok_and(|p| r.matches(method, &p))
    }

    fn denies(rule: &str, method: &str, path: &str) -> bool {
        let r = HttpRule::parse(rule).unwrap();
        r.denies(method, &canonical_path(path).unwrap())
    }

    fn texts(path: &str) -> Vec<String> {
        canonical_path(path).unwrap().into_iter().map(|s| s.text).collect()
    }

    #[test]
    fn globs_match_segments() {
        let r = "GET /gmail/v1/users/me/messages/**";
        assert!(allows(r, "GET", "/gmail/v1/users/me/messages"));
        assert!(allows(r, "GET", "/gmail/v1/users/me/messages/abc/attachments/x?alt=json"));
        assert!(!allows(r, "POST", "/gmail/v1/users/me/messages/abc"));
        assert!(allows("POST /m/*/modify", "POST", "/m/123/modify"));
        assert!(!allows("POST /m/*/modify", "POST", "/m/modify"));
        assert!(!allows("POST /m/*/modify", "POST", "/m/1/2/modify"));
        assert!(allows("* /x", "DELETE", "/x"));
    }

    #[test]
    fn path_tricks_are_refused() {
        for bad in [
            "/a/../send", "/a/%2e%2e/send", "/a%2Fb", "/a/send;x", "//a", "/a/", "/a/./b", "/a\\b", "/a%00",
            // issue 13: encoded query and fragment, controls, trailing white space, U+2028,
            // overlong UTF-8, double encoding, NFKC separators.
            "/a/send%3Fx", "/a/send%23x", "/a/send%09", "/a/send%0a", "/a/send%20", "/a/%20send", "/a/send%E2%80%A8",
            "/a/send%C2%A0", "/a/%c0%ae%c0%ae/send", "/a/%C0%AF", "/a/%ff", "/a/%2561dmin", "/a/%25%36%31", "/a/%EF%BC%8Fsend",
            "/a/%EF%BC%8E%EF%BC%8E", "/a/x%EF%BC%85%36%31", "/a/%C2%85",
        ] {
            assert!(canonical_path(bad).is_err(), "{bad} must be refused");
        }
        assert_eq!(texts("/a/%7euser/%41%3a"), vec!["a", "~user", "A%3A"]);
        assert_eq!(texts("/files/caf%c3%a9%20menu.txt"), vec!["files", "caf%C3%A9%20menu.txt"]);
    }

    #[test]
    fn canonicalisation_is_idempotent() {
        for p in ["/a/%7euser/%41%3a", "/files/caf%c3%a9%20menu.txt", "/x/%E2%84%AA", "/"] {
            let once = CanonicalRequest { method: "GET".into(), segments: canonical_path(p).unwrap(), query: None }.path();
            let twice = CanonicalRequest { method: "GET".into(), segments: canonical_path(&once).unwrap(), query: None }.path();
            assert_eq!(once, twice, "{p}");
        }
    }

    #[test]
    fn deny_rules_catch_every_spelling_a_lenient_server_routes_to_them() {
        let deny = "* /v1/admin/**";
        for p in [
            "/v1/admin/x", "/v1/ADMIN/x", "/v1/%41DMIN/x", "/v1/%61dmin/x", "/v1/Admin.json/x", "/v1/admin%2Ejson", "/v1/admin.",
            "/v1/%EF%BD%81%EF%BD%84%EF%BD%8D%EF%BD%89%EF%BD%8E/x", "/v1/adm%C4%B1n", "/v1/ADM%C4%B0N",
        ] {
            assert!(denies(deny, "GET", p), "{p} must be denied");
        }
        assert!(denies("GET /v1/secret", "GET", "/v1/secret.json"));
        assert!(denies("GET /v1/secret", "HEAD", "/v1/SECRET"));
        assert!(!denies("GET /v1/secret", "POST", "/v1/secret"));
        assert!(denies("* /v1/%E2%84%AA", "GET", "/v1/k"), "Kelvin sign folds to k");
        assert!(!denies(deny, "GET", "/v1/administrator/x"));
        assert!(!denies(deny, "GET", "/v1/adminx"));
        // Allow rules admit only the spelling the policy wrote.
        assert!(allows("GET /v1/admin", "GET", "/v1/%61dmin"), "unreserved escapes are decoded");
        assert!(!allows("GET /v1/admin", "GET", "/v1/ADMIN"));
        assert!(!allows("GET /v1/admin", "GET", "/v1/admin.json"));
    }

    #[test]
    fn method_overrides_in_the_query_and_lower_case_methods_are_refused() {
        for q in ["_method=DELETE", "a=1&_method=DELETE", "%5Fmethod=DELETE", "_%6Dethod=DELETE", ".method=DELETE", "+_method=DELETE", "_METHOD=DELETE", "x=1;_method=DELETE", "_method[]=DELETE"] {
            assert!(canonical_request("POST", &format!("/v1/x?{q}")).is_err(), "{q}");
        }
        assert!(canonical_request("delete", "/v1/x").is_err());
        let c = canonical_request("POST", "/v1/%78?method=1&a_method=2").unwrap();
        assert_eq!(c.target(), "/v1/x?method=1&a_method=2");
    }

    #[test]
    fn bad_rules_are_rejected() {
        assert!(HttpRule::parse("get /x").unwrap_err().contains("upper case"));
        assert!(HttpRule::parse("GET x").is_err());
        assert!(HttpRule::parse("GET /x*").is_err());
        assert!(HttpRule::parse("GET /x?y=1").is_err());
        assert!(HttpRule::parse("GET").is_err());
    }
}
