//! Attribute paths (`[urn ":"] attrName ["." subAttr]`, shared with the filter grammar, which
//! re-exports [`AttrPath`]) and PATCH operation paths (RFC 7644 §3.5.2):
//! `attrPath [ "[" valFilter "]" ] [ "." subAttr ]`. The bracketed value filter is parsed with
//! the filter grammar of [`crate::scim::filter`].

use std::fmt;

use crate::scim::error::ScimError;
use crate::scim::filter::{self, Filter, MAX_FILTER_LEN};

pub(crate) const CORE_USER_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub(crate) const CORE_GROUP_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub(crate) const ENTERPRISE_URN: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// An attribute reference: optional schema URN, attribute name and optional sub-attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttrPath {
    /// Schema URN prefix as written, e.g. `urn:ietf:params:scim:schemas:core:2.0:User`.
    pub urn: Option<String>,
    /// Attribute name as written (compared case-insensitively).
    pub name: String,
    /// Sub-attribute name as written, e.g. `givenName` in `name.givenName`.
    pub sub: Option<String>,
}

impl AttrPath {
    /// Builds an unprefixed path, for callers constructing paths in code.
    pub fn new(name: impl Into<String>, sub: Option<&str>) -> Self {
        Self {
            urn: None,
            name: name.into(),
            sub: sub.map(str::to_owned),
        }
    }

    /// Parses a standalone attribute path (`sortBy`, `attributes`); errors are `invalidPath`.
    pub fn parse(input: &str) -> Result<Self, ScimError> {
        let input = input.trim();
        if input.len() > MAX_FILTER_LEN {
            return Err(ScimError::invalid_path("attribute path too long"));
        }
        parse_attr_token(input).map_err(ScimError::invalid_path)
    }

    /// `name` or `name.sub` without the URN, as written.
    pub fn dotted(&self) -> String {
        match &self.sub {
            Some(sub) => format!("{}.{}", self.name, sub),
            None => self.name.clone(),
        }
    }

    /// True when the URN prefix is absent or names a core schema (top-level attributes).
    pub fn is_core(&self) -> bool {
        self.urn.as_deref().is_none_or(is_core_urn)
    }

    /// True when the path addresses the enterprise User extension object.
    pub fn is_enterprise(&self) -> bool {
        self.urn
            .as_deref()
            .is_some_and(|u| u.eq_ignore_ascii_case(ENTERPRISE_URN))
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(urn) = &self.urn {
            write!(f, "{urn}:")?;
        }
        f.write_str(&self.dotted())
    }
}

pub(crate) fn is_core_urn(urn: &str) -> bool {
    urn.eq_ignore_ascii_case(CORE_USER_URN) || urn.eq_ignore_ascii_case(CORE_GROUP_URN)
}

/// Parses `[urn ":"] attrName ["." subAttr]`, returning a plain message on error.
pub(crate) fn parse_attr_token(tok: &str) -> Result<AttrPath, String> {
    let (urn, rest) = match tok.rfind(':') {
        None => (None, tok),
        Some(idx) => {
            // `idx` is the byte offset of an ASCII ':', so both slices are on char boundaries.
            let urn = &tok[..idx];
            let valid_urn = urn.len() > 4
                && urn.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
                && urn.split(':').all(|seg| !seg.is_empty())
                && urn
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'-' | b'_'));
            if !valid_urn {
                return Err(format!("'{tok}' has an invalid schema URN prefix"));
            }
            (Some(urn.to_owned()), &tok[idx + 1..])
        }
    };
    let mut parts = rest.split('.');
    let name = parts.next().unwrap_or_default();
    let sub = parts.next();
    if parts.next().is_some() {
        return Err(format!("'{tok}' has more than one sub-attribute"));
    }
    for part in std::iter::once(name).chain(sub) {
        if !is_attr_name(part) {
            return Err(format!("'{part}' is not a valid attribute name in '{tok}'"));
        }
    }
    Ok(AttrPath {
        urn,
        name: name.to_owned(),
        sub: sub.map(str::to_owned),
    })
}

fn is_attr_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() => {
            chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        }
        _ => s.eq_ignore_ascii_case("$ref"),
    }
}

/// A parsed PATCH `path`: the attribute, an optional value filter and a sub-attribute after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchPath {
    /// The addressed attribute; `attr.sub` is set for `name.givenName` (never with a filter).
    pub attr: AttrPath,
    /// The value filter of `emails[type eq "work"]`, relative to each element.
    pub filter: Option<Filter>,
    /// The sub-attribute following a value filter, e.g. `value` in `emails[...].value`.
    pub sub: Option<String>,
}

impl fmt::Display for PatchPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.attr)?;
        if let Some(filter) = &self.filter {
            write!(f, "[{filter}]")?;
        }
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

/// Parses a PATCH `path`; every error is `invalidPath`.
pub fn parse_patch_path(input: &str) -> Result<PatchPath, ScimError> {
    let input = input.trim();
    if input.is_empty() {
        return Err(ScimError::invalid_path("empty path"));
    }
    if input.len() > MAX_FILTER_LEN {
        return Err(ScimError::invalid_path(format!(
            "path is longer than {MAX_FILTER_LEN} bytes"
        )));
    }
    let Some(open) = input.find('[') else {
        if input.contains(']') {
            return Err(ScimError::invalid_path(format!(
                "unbalanced ']' in path '{input}'"
            )));
        }
        let attr = parse_attr_token(input).map_err(ScimError::invalid_path)?;
        return Ok(PatchPath {
            attr,
            filter: None,
            sub: None,
        });
    };
    // `open` and `close` index ASCII brackets: every slice below is on a char boundary.
    let attr = parse_attr_token(&input[..open]).map_err(ScimError::invalid_path)?;
    if attr.sub.is_some() {
        return Err(ScimError::invalid_path(format!(
            "a value filter must follow a multi-valued attribute, not '{}'",
            attr.dotted()
        )));
    }
    let close = closing_bracket(input, open + 1)
        .ok_or_else(|| ScimError::invalid_path(format!("unbalanced '[' in path '{input}'")))?;
    let filter = filter::parse(&input[open + 1..close]).map_err(|e| {
        ScimError::invalid_path(format!("invalid value filter in path: {}", e.detail))
    })?;
    let rest = &input[close + 1..];
    let sub = match rest.strip_prefix('.') {
        None if rest.is_empty() => None,
        None => {
            return Err(ScimError::invalid_path(format!(
                "unexpected '{rest}' after ']' in path"
            )));
        }
        Some(sub) => {
            let parsed = parse_attr_token(sub).map_err(ScimError::invalid_path)?;
            if parsed.urn.is_some() || parsed.sub.is_some() {
                return Err(ScimError::invalid_path(format!(
                    "invalid sub-attribute '{sub}'"
                )));
            }
            Some(parsed.name)
        }
    };
    Ok(PatchPath {
        attr,
        filter: Some(filter),
        sub,
    })
}

/// Byte index of the first `]` at or after `from` that is outside a string literal.
fn closing_bracket(input: &str, from: usize) -> Option<usize> {
    let bytes = input.as_bytes();
    let mut in_string = false;
    let mut i = from;
    while let Some(&b) = bytes.get(i) {
        match (in_string, b) {
            (true, b'\\') => i += 1,
            (_, b'"') => in_string = !in_string,
            (false, b']') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}
