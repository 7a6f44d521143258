//! Attribute projection: the `attributes` and `excludedAttributes` query parameters
//! (RFC 7644 §3.4.2.5, §3.9) combined with each attribute's `returned` characteristic
//! (RFC 7643 §2.2), applied to a full resource just before it is sent.
//!
//! - `returned: never` attributes (`password`) are always removed;
//! - `returned: always` attributes (`id`) and `schemas` are always kept;
//! - with `attributes`, only the listed attributes (plus the always-returned ones) are kept:
//!   `name` keeps the whole complex value, `name.givenName` only that sub-attribute, and `meta`
//!   goes unless listed;
//! - otherwise, the `excludedAttributes` are removed, and `returned: request` attributes too.
//!
//! Names match case-insensitively. A name prefixed with the core schema URN addresses the top
//! level; one prefixed with the enterprise URN addresses the extension object (the bare URN means
//! the whole extension). Unqualified names that only the enterprise extension defines
//! (`department`, `manager`) address the extension as well.

use serde_json::{Map, Value};

use crate::scim::ResourceKind;
use crate::scim::schema::{self, AttrDef, AttrType, ENTERPRISE_USER_SCHEMA, Returned};

#[cfg(test)]
mod tests;

/// Parses a comma-separated attribute list query parameter (trims, ignores empty entries;
/// supports `name.givenName` and URN-prefixed names).
pub fn parse_attr_list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Applies returned-ness rules and the two lists to a full resource JSON in place; when both
/// lists are given, `attributes` wins (they are mutually exclusive, RFC 7644 §3.4.2.5).
pub fn project(
    resource: &mut Value,
    kind: ResourceKind,
    attributes: &[String],
    excluded: &[String],
) {
    let Value::Object(obj) = resource else {
        return;
    };
    let include = !attributes.is_empty();
    let names = if include { attributes } else { excluded };
    let mut core = Selection::default();
    let mut ext = Selection::default();
    for name in names {
        match resolve(name, kind) {
            Some((Scope::Core, path)) => core.add(path),
            Some((Scope::Extension, path)) => ext.add(path),
            None => {}
        }
    }

    let with_extension = kind == ResourceKind::User;
    let is_special = |key: &str| {
        key.eq_ignore_ascii_case("schemas")
            || (with_extension && key.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA))
    };
    project_level(
        obj,
        schema::core_attributes(kind),
        &core,
        include,
        &is_special,
    );

    if !with_extension {
        return;
    }
    let Some(ext_key) = obj
        .keys()
        .find(|k| k.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA))
        .cloned()
    else {
        return;
    };
    let keep = match obj.get_mut(&ext_key) {
        Some(Value::Object(ext_obj)) => {
            project_level(
                ext_obj,
                schema::enterprise_attributes(),
                &ext,
                include,
                &|_| false,
            );
            !ext_obj.is_empty()
        }
        _ => true,
    };
    if !keep {
        obj.remove(&ext_key);
        if let Some(Value::Array(urns)) = obj.get_mut("schemas") {
            urns.retain(|u| {
                !u.as_str()
                    .is_some_and(|u| u.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA))
            });
        }
    }
}

/// Which object a requested name addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The resource's top level (core schema attributes).
    Core,
    /// The enterprise extension object.
    Extension,
}

/// A requested path within one scope: `None` is the whole scope, else `attr` or `attr.sub`.
type Path = Option<(String, Option<String>)>;

/// The names requested (or excluded) within one scope.
#[derive(Debug, Default)]
struct Selection {
    /// The whole scope was named (bare schema URN).
    whole: bool,
    /// `(attribute, sub-attribute)` pairs as given, compared case-insensitively.
    paths: Vec<(String, Option<String>)>,
}

impl Selection {
    fn add(&mut self, path: Path) {
        match path {
            None => self.whole = true,
            Some(p) => self.paths.push(p),
        }
    }

    /// Whether the attribute is named as a whole (or its whole scope is).
    fn whole_attr(&self, name: &str) -> bool {
        self.whole
            || self
                .paths
                .iter()
                .any(|(a, s)| s.is_none() && a.eq_ignore_ascii_case(name))
    }

    /// The sub-attributes named for the attribute.
    fn subs(&self, name: &str) -> Vec<&str> {
        self.paths
            .iter()
            .filter(|(a, _)| a.eq_ignore_ascii_case(name))
            .filter_map(|(_, s)| s.as_deref())
            .collect()
    }
}

/// Resolves one requested name to its scope and path; `None` for names that address nothing here.
fn resolve(name: &str, kind: ResourceKind) -> Option<(Scope, Path)> {
    if kind == ResourceKind::User
        && let Some(rest) = schema::strip_prefix_ci(name, ENTERPRISE_USER_SCHEMA)
    {
        return Some((Scope::Extension, split_path(rest)?));
    }
    if let Some(rest) = schema::strip_prefix_ci(name, kind.core_schema()) {
        return Some((Scope::Core, split_path(rest)?));
    }
    if name
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
    {
        return None;
    }
    let path = split_path(&format!(":{name}"))?;
    let scope = match &path {
        Some((attr, _))
            if kind == ResourceKind::User
                && schema::find_attr(schema::core_attributes(kind), attr).is_none()
                && schema::find_attr(schema::enterprise_attributes(), attr).is_some() =>
        {
            Scope::Extension
        }
        _ => Scope::Core,
    };
    Some((scope, path))
}

/// Splits what follows a schema URN: empty is the whole schema, `:attr[.sub]` an attribute path.
fn split_path(rest: &str) -> Option<Path> {
    if rest.is_empty() {
        return Some(None);
    }
    let path = rest.strip_prefix(':')?;
    let (attr, sub) = match path.split_once('.') {
        Some((attr, sub)) => (attr, Some(sub.to_owned())),
        None => (path, None),
    };
    if attr.is_empty() || sub.as_deref() == Some("") {
        return None;
    }
    Some(Some((attr.to_owned(), sub)))
}

/// Projects the attributes of one object (the resource or its extension object).
fn project_level(
    obj: &mut Map<String, Value>,
    defs: &'static [AttrDef],
    sel: &Selection,
    include: bool,
    skip: &dyn Fn(&str) -> bool,
) {
    obj.retain(|key, value| {
        if skip(key) {
            return true;
        }
        let def = schema::find_attr(defs, key);
        let returned = def.map_or(Returned::Default, |d| d.returned);
        let whole = sel.whole_attr(key);
        let subs = sel.subs(key);
        let listed = |k: &str| subs.iter().any(|s| s.eq_ignore_ascii_case(k));
        match returned {
            Returned::Never => false,
            Returned::Always => {
                retain_subs(value, def, &default_sub);
                true
            }
            _ if include && whole => retain_subs(value, def, &default_sub),
            _ if include && !subs.is_empty() => retain_subs(value, def, &|k, r| {
                r == Returned::Always || (r != Returned::Never && listed(k))
            }),
            _ if include => false,
            Returned::Request => false,
            _ if whole => false,
            _ => retain_subs(value, def, &|k, r| {
                r == Returned::Always || (r == Returned::Default && !listed(k))
            }),
        }
    });
}

/// Sub-attributes shown when nothing names them: all but `never` and `request` ones.
fn default_sub(_: &str, returned: Returned) -> bool {
    matches!(returned, Returned::Always | Returned::Default)
}

/// Keeps the sub-attributes of a complex value (or of each element of a multi-valued one) that
/// `keep` accepts; elements left empty are removed. Returns whether anything is left.
fn retain_subs(
    value: &mut Value,
    def: Option<&AttrDef>,
    keep: &dyn Fn(&str, Returned) -> bool,
) -> bool {
    let Some(def) = def.filter(|d| d.kind == AttrType::Complex) else {
        return true;
    };
    let filter = |m: &mut Map<String, Value>| {
        m.retain(|k, _| keep(k, def.sub(k).map_or(Returned::Default, |s| s.returned)));
        !m.is_empty()
    };
    match value {
        Value::Object(m) => filter(m),
        Value::Array(items) => {
            items.retain_mut(|item| match item {
                Value::Object(m) => filter(m),
                _ => true,
            });
            !items.is_empty()
        }
        _ => true,
    }
}
