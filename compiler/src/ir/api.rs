//! HTTP API rules and request-path canonicalisation.
//!
//! A rule is `METHOD /segment/segment/...` where METHOD is an HTTP method in upper case or
//! `*` (any method), and each segment is literal text, `*` (exactly one non-empty segment)
//! or `**` (zero or more segments). Requests are canonicalised before they are matched
//! (the proxy forwards exactly the canonical form it evaluated):
//! query and fragment are not part of the path; `%XX` escapes of unreserved characters are
//! decoded and other escapes are upper-cased; and a path is **rejected** (never matched,
//! never forwarded) if it has an empty segment (`//`, trailing `/`), a `.` or `..`
//! segment (also when spelt `%2e`), an encoded `/`, `\` or NUL, a backslash, or a `;`
//! (path parameters some servers strip, which would let `/send;x` reach `/send`).
//! Invariant: `canonical_path` is idempotent and its output only contains segments that
//! `HttpRule::matches` compares byte for byte.

use std::fmt;

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

/// Canonicalises one path segment; `Err` says why the path is refused.
fn canonical_segment(seg: &str) -> Result<String, String> {
    let bytes = seg.as_bytes();
    let mut out = String::with_capacity(seg.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let (Some(h), Some(l)) = (bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b))) else {
                    return Err("invalid percent-escape".into());
                };
                let v = h * 16 + l;
                match v {
                    b'/' => return Err("encoded `/` (%2F)".into()),
                    b'\\' => return Err("encoded `\\` (%5C)".into()),
                    0 => return Err("encoded NUL (%00)".into()),
                    b';' => return Err("encoded `;` (%3B)".into()),
                    v if is_unreserved(v) => out.push(char::from(v)),
                    v => out.push_str(&format!("%{v:02X}")),
                }
                i += 3;
            }
            b'\\' => return Err("backslash in path".into()),
            b';' => return Err("`;` path parameter".into()),
            b if b.is_ascii_graphic() => {
                out.push(char::from(b));
                i += 1;
            }
            _ => return Err("control, space or non-ASCII byte (must be percent-encoded)".into()),
        }
    }
    if out == "." || out == ".." {
        return Err(format!("`{out}` segment"));
    }
    if out.is_empty() {
        return Err("empty segment (`//` or a trailing `/`)".into());
    }
    Ok(out)
}

/// Canonical segments of a request target's path, or why it is refused.
pub fn canonical_path(target: &str) -> Result<Vec<String>, String> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let Some(rest) = path.strip_prefix('/') else {
        return Err("path must start with `/`".into());
    };
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    rest.split('/').map(canonical_segment).collect()
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
                    s => Segment::Literal(canonical_segment(s).map_err(|e| format!("segment `{s}`: {e}"))?),
                });
            }
        }
        Ok(HttpRule { method, segments })
    }

    pub fn matches(&self, method: &str, path: &[String]) -> bool {
        if let Some(m) = &self.method
            && m != method
        {
            return false;
        }
        match_segments(&self.segments, path)
    }
}

/// Whether `pattern` matches all of `path`. Dynamic programming over path prefixes:
/// O(pattern × path) even for rules with several `**`, whose naive backtracking is
/// exponential in a request path that the agent chooses (a denial of service of the proxy).
fn match_segments(pattern: &[Segment], path: &[String]) -> bool {
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
                        Segment::Literal(l) => l == p,
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

    fn m(rule: &str, method: &str, path: &str) -> bool {
        let r = HttpRule::parse(rule).unwrap();
        canonical_path(path).is_ok_and(|p| r.matches(method, &p))
    }

    #[test]
    fn globs_match_segments() {
        let r = "GET /gmail/v1/users/me/messages/**";
        assert!(m(r, "GET", "/gmail/v1/users/me/messages"));
        assert!(m(r, "GET", "/gmail/v1/users/me/messages/abc/attachments/x?alt=json"));
        assert!(!m(r, "POST", "/gmail/v1/users/me/messages/abc"));
        assert!(m("POST /m/*/modify", "POST", "/m/123/modify"));
        assert!(!m("POST /m/*/modify", "POST", "/m/modify"));
        assert!(!m("POST /m/*/modify", "POST", "/m/1/2/modify"));
        assert!(m("* /x", "DELETE", "/x"));
    }

    #[test]
    fn path_tricks_are_refused() {
        for bad in ["/a/../send", "/a/%2e%2e/send", "/a%2Fb", "/a/send;x", "//a", "/a/", "/a/./b", "/a\\b", "/a%00"] {
            assert!(canonical_path(bad).is_err(), "{bad} must be refused");
        }
        assert_eq!(canonical_path("/a/%7euser/%41%3a").unwrap(), vec!["a", "~user", "A%3A"]);
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
