//! Path templates: the paths of filesystem rules as they are stored in artifacts.
//!
//! Input: a string that is either an absolute path (`/usr/lib`) or a launch parameter
//! followed by an optional relative tail (`${WORKSPACE}/src`). Output: a validated,
//! normalised [`PathTemplate`] (no `.`/`..`, no empty components, no trailing slash) and,
//! at launch, its substitution against [`Params`]. Invariants: a template never holds `..`,
//! so substitution can never escape the parameter's directory lexically; parameter values
//! must be absolute paths that exist on the target host, or substitution fails.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a template string or a parameter value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("path template `{0}` must start with `/` or `${{NAME}}`")]
    NotRooted(String),
    #[error("path template `{0}` holds a `.` or `..` component or an empty component")]
    NotNormal(String),
    #[error(
        "path template `{0}` has a malformed parameter (expected `${{NAME}}`, NAME in [A-Z0-9_])"
    )]
    BadParameter(String),
    #[error("launch parameter `{name}` needed by `{template}` was not supplied")]
    MissingParameter { name: String, template: String },
    #[error("launch parameter `{name}` = `{value}` is not an absolute path")]
    RelativeParameter { name: String, value: String },
    #[error("launch parameter `{name}` = `{value}` does not exist on this host: {reason}")]
    ParameterNotFound {
        name: String,
        value: String,
        reason: String,
    },
}

/// A rule path, kept as written (normalised) until launch fills its parameter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PathTemplate {
    /// `None` for paths rooted at `/`, `Some(NAME)` for `${NAME}`.
    param: Option<String>,
    /// Components below the root, in order.
    components: Vec<String>,
}

impl PathTemplate {
    /// Parses and normalises a template string (a trailing `/` is dropped).
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let (param, rest) = if let Some(after) = text.strip_prefix("${") {
            let end = after
                .find('}')
                .ok_or_else(|| TemplateError::BadParameter(text.to_owned()))?;
            let (name, tail) = after.split_at(end);
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            let tail = &tail[1..];
            if !valid || !(tail.is_empty() || tail.starts_with('/')) {
                return Err(TemplateError::BadParameter(text.to_owned()));
            }
            (Some(name.to_owned()), tail)
        } else if text.starts_with('/') {
            (None, text)
        } else {
            return Err(TemplateError::NotRooted(text.to_owned()));
        };
        let rest = rest.strip_prefix('/').unwrap_or(rest);
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut components = Vec::new();
        if !rest.is_empty() {
            for c in rest.split('/') {
                if c.is_empty() || c == "." || c == ".." || c.contains('\0') || c.contains("${") {
                    return Err(TemplateError::NotNormal(text.to_owned()));
                }
                components.push(c.to_owned());
            }
        }
        Ok(Self { param, components })
    }

    /// A host path from components known to be normal (internal constants only).
    pub(crate) fn host<'a>(components: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            param: None,
            components: components.into_iter().map(str::to_owned).collect(),
        }
    }

    /// The launch parameter this template needs, if any.
    pub fn param(&self) -> Option<&str> {
        self.param.as_deref()
    }

    /// Path components below the root (`/` or the parameter).
    pub fn components(&self) -> &[String] {
        &self.components
    }

    /// `self` and every template above it up to its root (`/a/b` → `/a/b`, `/a`, `/`), so
    /// "is this path inside a denied one" is a few map lookups instead of a scan.
    pub fn ancestors(&self) -> impl Iterator<Item = PathTemplate> + '_ {
        (0..=self.components.len()).rev().map(|n| PathTemplate {
            param: self.param.clone(),
            components: self.components.get(..n).unwrap_or_default().to_vec(),
        })
    }

    /// True when `self` names `other` or a directory above it, judged lexically. Templates
    /// with different roots are unrelated here (their relation is only known at launch).
    pub fn contains(&self, other: &PathTemplate) -> bool {
        self.param == other.param
            && self.components.len() <= other.components.len()
            && self
                .components
                .iter()
                .zip(&other.components)
                .all(|(a, b)| a == b)
    }

    /// Fills the parameter from `params`; the result is absolute and lexically below the
    /// parameter's value. Symlinks are not resolved here.
    pub fn resolve(&self, params: &Params) -> Result<PathBuf, TemplateError> {
        let mut path = match &self.param {
            None => PathBuf::from("/"),
            Some(name) => params.get(name, self)?.to_path_buf(),
        };
        for c in &self.components {
            path.push(c);
        }
        Ok(path)
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.param {
            Some(name) => write!(f, "${{{name}}}")?,
            None if self.components.is_empty() => return f.write_str("/"),
            None => {}
        }
        for c in &self.components {
            write!(f, "/{c}")?;
        }
        Ok(())
    }
}

impl TryFrom<String> for PathTemplate {
    type Error = TemplateError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<PathTemplate> for String {
    fn from(t: PathTemplate) -> String {
        t.to_string()
    }
}

/// Launch parameters (`WORKSPACE` → `/home/me/project`), checked when built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    values: BTreeMap<String, PathBuf>,
}

impl Params {
    /// No parameters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a parameter; its value must be absolute and exist on this host (it is not
    /// canonicalised: rules resolve symlinks themselves when they open the path).
    pub fn insert(&mut self, name: &str, value: impl Into<PathBuf>) -> Result<(), TemplateError> {
        let value = value.into();
        let shown = value.display().to_string();
        if !value.is_absolute() {
            return Err(TemplateError::RelativeParameter {
                name: name.to_owned(),
                value: shown,
            });
        }
        if let Err(e) = std::fs::metadata(&value) {
            return Err(TemplateError::ParameterNotFound {
                name: name.to_owned(),
                value: shown,
                reason: e.to_string(),
            });
        }
        self.values.insert(name.to_owned(), value);
        Ok(())
    }

    /// Builds the map from `NAME=value` pairs.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a Path)>,
    ) -> Result<Self, TemplateError> {
        let mut p = Self::new();
        for (k, v) in pairs {
            p.insert(k, v)?;
        }
        Ok(p)
    }

    fn get(&self, name: &str, template: &PathTemplate) -> Result<&Path, TemplateError> {
        self.values
            .get(name)
            .map(PathBuf::as_path)
            .ok_or_else(|| TemplateError::MissingParameter {
                name: name.to_owned(),
                template: template.to_string(),
            })
    }
}

/// The set of parameter names a list of templates needs (for the bundle manifest).
pub fn required_params<'a>(
    templates: impl IntoIterator<Item = &'a PathTemplate>,
) -> BTreeSet<String> {
    templates
        .into_iter()
        .filter_map(|t| t.param().map(str::to_owned))
        .collect()
}
