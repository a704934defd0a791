//! Filesystem path patterns.
//!
//! A pattern names one **subtree**: the path itself and, if it is a directory, everything
//! beneath it. That is exactly what the kernel can enforce (Landlock rules and bind mounts
//! both apply to a whole hierarchy), so the evaluator and every target agree by construction.
//! A pattern is rooted at `/` or at a launch parameter (`${WORKSPACE}/src`). The spelling
//! `/usr/**` is accepted as a synonym of `/usr`. Other glob forms (`*.pem`, `/home/*/.ssh`,
//! `/a/**/b`) are rejected: no kernel mechanism can enforce them without walking the
//! filesystem at launch, and a rule that is silently not enforced is worse than none.
//! Invariants: components are non-empty, never `.` or `..`, contain no `/` or NUL; the
//! textual form is canonical (`Display` prints what `parse` accepts).

use std::fmt;

/// Where a pattern starts.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Root {
    /// The filesystem root `/`.
    Absolute,
    /// A launch parameter such as `${WORKSPACE}`, substituted by aegis-exec.
    Param(String),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathPattern {
    pub root: Root,
    pub components: Vec<String>,
}

impl serde::Serialize for PathPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for PathPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PathPattern::parse(&s, &|_| true).map_err(|e| serde::de::Error::custom(format!("path `{s}`: {e:?}")))
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.root {
            Root::Absolute => {
                if self.components.is_empty() {
                    return f.write_str("/");
                }
            }
            Root::Param(p) => write!(f, "${{{p}}}")?,
        }
        for c in &self.components {
            write!(f, "/{c}")?;
        }
        Ok(())
    }
}

/// Why a path string is not a valid pattern. `suggestion` is a corrected spelling when one
/// is obvious.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathError {
    Empty,
    Relative,
    Home,
    NonNormal { suggestion: String },
    DotDot,
    UnsupportedGlob,
    InvalidGlob,
    BadParameter,
    UnknownParameter(String),
    Invalid(&'static str),
}

pub const MAX_PATH_BYTES: usize = 4095;
pub const MAX_COMPONENT_BYTES: usize = 255;

fn is_param_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

impl PathPattern {
    /// Parses a policy path. `known_param` says whether a parameter name is declared.
    pub fn parse(text: &str, known_param: &dyn Fn(&str) -> bool) -> Result<PathPattern, PathError> {
        if text.is_empty() {
            return Err(PathError::Empty);
        }
        if text.len() > MAX_PATH_BYTES {
            return Err(PathError::Invalid("longer than 4095 bytes (PATH_MAX)"));
        }
        if text.contains('\0') {
            return Err(PathError::Invalid("contains a NUL byte"));
        }
        let (root, rest) = if let Some(after) = text.strip_prefix("${") {
            let Some(end) = after.find('}') else { return Err(PathError::BadParameter) };
            let name = after.get(..end).unwrap_or("");
            if !is_param_name(name) {
                return Err(PathError::BadParameter);
            }
            if !known_param(name) {
                return Err(PathError::UnknownParameter(name.to_string()));
            }
            let rest = after.get(end + 1..).unwrap_or("");
            if !rest.is_empty() && !rest.starts_with('/') {
                return Err(PathError::BadParameter);
            }
            (Root::Param(name.to_string()), rest)
        } else if text.starts_with('/') {
            (Root::Absolute, text)
        } else if text.starts_with('~') {
            return Err(PathError::Home);
        } else if text.starts_with('$') {
            return Err(PathError::BadParameter);
        } else {
            return Err(PathError::Relative);
        };
        if rest.contains('$') {
            return Err(PathError::BadParameter);
        }
        let mut parts: Vec<&str> = if rest.is_empty() { Vec::new() } else { rest.split('/').skip(1).collect() };
        // `/usr/**` is a synonym of `/usr`; a bare `/**` is the whole filesystem.
        if parts.last() == Some(&"**") {
            parts.pop();
        }
        let mut components = Vec::with_capacity(parts.len());
        let mut non_normal = false;
        for (i, part) in parts.iter().enumerate() {
            match *part {
                "" => {
                    // `//` in the middle, or a trailing `/` (but `/` alone is fine)
                    if !(i + 1 == parts.len() && parts.len() == 1 && root == Root::Absolute) {
                        non_normal = true;
                    }
                }
                "." => non_normal = true,
                ".." => return Err(PathError::DotDot),
                p if p.contains(['*', '?', '[', ']', '{', '}']) => {
                    let valid_glob = p.chars().filter(|c| *c == '*').count() <= 2
                        && !p.contains("***")
                        && p.matches('[').count() == p.matches(']').count()
                        && p.matches('{').count() == p.matches('}').count();
                    return Err(if valid_glob { PathError::UnsupportedGlob } else { PathError::InvalidGlob });
                }
                p if p.len() > MAX_COMPONENT_BYTES => {
                    return Err(PathError::Invalid("has a component longer than 255 bytes (NAME_MAX)"));
                }
                p => components.push(p.to_string()),
            }
        }
        let pattern = PathPattern { root, components };
        if non_normal {
            return Err(PathError::NonNormal { suggestion: pattern.to_string() });
        }
        Ok(pattern)
    }

    /// Whether `self` covers `other` (the subtree of `self` contains `other`'s).
    pub fn covers(&self, other: &PathPattern) -> bool {
        self.root == other.root
            && self.components.len() <= other.components.len()
            && self.components.iter().zip(&other.components).all(|(a, b)| a == b)
    }

    pub fn is_root(&self) -> bool {
        self.root == Root::Absolute && self.components.is_empty()
    }

    pub fn param(&self) -> Option<&str> {
        match &self.root {
            Root::Param(p) => Some(p),
            Root::Absolute => None,
        }
    }

    /// The pattern with parameters replaced by their values (absolute, normalised paths).
    pub fn instantiate(&self, value_of: &dyn Fn(&str) -> Option<PathPattern>) -> Option<PathPattern> {
        match &self.root {
            Root::Absolute => Some(self.clone()),
            Root::Param(p) => {
                let mut base = value_of(p)?;
                base.components.extend(self.components.iter().cloned());
                Some(base)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<PathPattern, PathError> {
        PathPattern::parse(s, &|n| n == "WORKSPACE")
    }

    #[test]
    fn canonical_forms_round_trip() {
        for s in ["/", "/etc/passwd", "${WORKSPACE}", "${WORKSPACE}/src/main.rs"] {
            assert_eq!(p(s).unwrap().to_string(), s);
        }
        assert_eq!(p("/usr/**").unwrap().to_string(), "/usr");
        assert_eq!(p("/**").unwrap().to_string(), "/");
        assert_eq!(p("${WORKSPACE}/**").unwrap().to_string(), "${WORKSPACE}");
    }

    #[test]
    fn rejects_bad_forms_with_the_right_reason() {
        assert_eq!(p("etc/passwd"), Err(PathError::Relative));
        assert_eq!(p("~/.ssh"), Err(PathError::Home));
        assert_eq!(p("/etc/../root"), Err(PathError::DotDot));
        assert_eq!(p("/etc//passwd"), Err(PathError::NonNormal { suggestion: "/etc/passwd".into() }));
        assert_eq!(p("/etc/"), Err(PathError::NonNormal { suggestion: "/etc".into() }));
        assert_eq!(p("/etc/./x"), Err(PathError::NonNormal { suggestion: "/etc/x".into() }));
        assert_eq!(p("/etc/*.conf"), Err(PathError::UnsupportedGlob));
        assert_eq!(p("/a/**/b"), Err(PathError::UnsupportedGlob));
        assert_eq!(p("/a/***"), Err(PathError::InvalidGlob));
        assert_eq!(p("/a/[x"), Err(PathError::InvalidGlob));
        assert_eq!(p("${HOME}/x"), Err(PathError::UnknownParameter("HOME".into())));
        assert_eq!(p("$WORKSPACE/x"), Err(PathError::BadParameter));
        assert_eq!(p("${WORKSPACE}x"), Err(PathError::BadParameter));
        assert_eq!(p("/a/${WORKSPACE}"), Err(PathError::BadParameter));
        assert_eq!(p(""), Err(PathError::Empty));
    }

    #[test]
    fn covers_is_component_prefix() {
        let usr = p("/usr").unwrap();
        assert!(usr.covers(&p("/usr/bin/git").unwrap()));
        assert!(usr.covers(&usr));
        assert!(!usr.covers(&p("/usrx").unwrap()));
        assert!(!usr.covers(&p("/").unwrap()));
        assert!(p("/").unwrap().covers(&usr));
        assert!(!p("${WORKSPACE}").unwrap().covers(&usr));
    }
}
