//! Validation and canonicalization of what identity providers send (POST and PUT bodies, and
//! the resources PATCH produces) into the form the broker stores.
//!
//! Okta and Entra are accepted unmodified: attribute names in any case (RFC 7643 §2.1), booleans
//! as `"True"`/`"false"` strings, a missing `schemas`, enterprise attributes flattened into
//! URN-prefixed top-level keys, and the enterprise `manager` as a bare string. What comes out has
//! canonical key casing, typed values, no read-only or write-only attributes (`id`, `meta`,
//! `groups`, `password`), no unknown attributes and no `null`s.
//!
//! Leniencies, on purpose: a single value sent for a multi-valued attribute is wrapped into an
//! array; unknown schema URNs in `schemas` are ignored; unknown attributes are dropped; empty
//! arrays and empty complex values are treated as unassigned (RFC 7643 §2.5) and dropped.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value};

use crate::scim::ScimError;
use crate::scim::schema::{
    self, AttrDef, AttrType, ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, Mutability, USER_SCHEMA,
};

#[cfg(test)]
mod tests;

/// Most values a multi-valued attribute may hold (emails, roles, …).
pub const MAX_MULTI_VALUES: usize = 100;
/// Most members a group may hold in one body.
pub const MAX_GROUP_MEMBERS: usize = 100_000;
/// Longest string value accepted, in bytes.
pub const MAX_STRING_BYTES: usize = 8 * 1024;

/// Reads a SCIM boolean: JSON `true`/`false`, or the strings `"true"`/`"false"` in any case
/// (Entra sends `"True"`/`"False"`).
pub fn bool_attr(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// Validates a User body and returns its canonical form: the stored attributes only (no `id`,
/// `meta`, `groups`, `password`).
pub fn normalize_user(input: Value) -> Result<Value, ScimError> {
    let Value::Object(body) = input else {
        return Err(ScimError::invalid_syntax(
            "the request body must be a JSON object",
        ));
    };
    let core_defs = schema::core_attributes(crate::scim::ResourceKind::User);
    let ext_defs = schema::enterprise_attributes();
    let ext_prefix = format!("{ENTERPRISE_USER_SCHEMA}:");
    let core_prefix = format!("{USER_SCHEMA}:");

    let mut schemas_seen = false;
    let mut ext_object_seen = false;
    let mut core = Fields::default();
    let mut ext = Fields::default();
    for (key, value) in body {
        if key.eq_ignore_ascii_case("schemas") {
            claim(&mut schemas_seen, "schemas")?;
            check_schemas(&value)?;
        } else if key.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA) {
            claim(&mut ext_object_seen, ENTERPRISE_USER_SCHEMA)?;
            match value {
                Value::Null => {}
                Value::Object(members) => {
                    for (k, v) in members {
                        if let Some(def) = schema::find_attr(ext_defs, &k) {
                            ext.insert(def, v)?;
                        }
                    }
                }
                _ => {
                    return Err(ScimError::invalid_value(format!(
                        "{ENTERPRISE_USER_SCHEMA} must be an object"
                    )));
                }
            }
        } else if let Some(name) = schema::strip_prefix_ci(&key, &ext_prefix) {
            if let Some(def) = schema::find_attr(ext_defs, name) {
                ext.insert(def, value)?;
            }
        } else {
            let name = schema::strip_prefix_ci(&key, &core_prefix).unwrap_or(&key);
            if let Some(def) = schema::find_attr(core_defs, name) {
                core.insert(def, value)?;
            }
        }
    }

    let mut out = Map::new();
    for (def, value) in core.0.into_values() {
        if let Some(v) = normalize_attr(def, value, def.name)? {
            out.insert(def.name.to_owned(), v);
        }
    }
    let user_name_ok =
        matches!(out.get("userName"), Some(Value::String(s)) if !s.trim().is_empty());
    if !user_name_ok {
        return Err(ScimError::invalid_value(
            "userName is required and must not be empty",
        ));
    }

    let mut extension = Map::new();
    for (def, value) in ext.0.into_values() {
        let value = if def.name == "manager" {
            manager_value(value)
        } else {
            value
        };
        if let Some(v) = normalize_attr(def, value, def.name)? {
            if def.name == "manager" && !has_nonempty_value(&v) {
                continue;
            }
            extension.insert(def.name.to_owned(), v);
        }
    }
    let mut schemas = vec![Value::from(USER_SCHEMA)];
    if !extension.is_empty() {
        schemas.push(ENTERPRISE_USER_SCHEMA.into());
        out.insert(ENTERPRISE_USER_SCHEMA.to_owned(), Value::Object(extension));
    }
    out.insert("schemas".to_owned(), Value::Array(schemas));
    Ok(Value::Object(out))
}

/// Same for a Group: `displayName` required; `members` an array of objects each with a
/// non-empty string `value` (keeping `value`, `display`, `type`, `$ref` only; duplicates of the
/// same `value` are collapsed to the first).
pub fn normalize_group(input: Value) -> Result<Value, ScimError> {
    let Value::Object(body) = input else {
        return Err(ScimError::invalid_syntax(
            "the request body must be a JSON object",
        ));
    };
    let defs = schema::core_attributes(crate::scim::ResourceKind::Group);
    let core_prefix = format!("{GROUP_SCHEMA}:");

    let mut schemas_seen = false;
    let mut fields = Fields::default();
    for (key, value) in body {
        if key.eq_ignore_ascii_case("schemas") {
            claim(&mut schemas_seen, "schemas")?;
            check_schemas(&value)?;
            continue;
        }
        let name = schema::strip_prefix_ci(&key, &core_prefix).unwrap_or(&key);
        if let Some(def) = schema::find_attr(defs, name) {
            fields.insert(def, value)?;
        }
    }

    let mut out = Map::new();
    for (def, value) in fields.0.into_values() {
        let normalized = if def.name == "members" {
            normalize_members(def, value)?
        } else {
            normalize_attr(def, value, def.name)?
        };
        if let Some(v) = normalized {
            out.insert(def.name.to_owned(), v);
        }
    }
    let name_ok = matches!(out.get("displayName"), Some(Value::String(s)) if !s.trim().is_empty());
    if !name_ok {
        return Err(ScimError::invalid_value(
            "displayName is required and must not be empty",
        ));
    }
    out.insert(
        "schemas".to_owned(),
        Value::Array(vec![GROUP_SCHEMA.into()]),
    );
    Ok(Value::Object(out))
}

/// Group members: every non-null entry must carry a non-empty string `value`; repeated values
/// keep their first occurrence.
fn normalize_members(def: &AttrDef, value: Value) -> Result<Option<Value>, ScimError> {
    let items = multi_items(value, MAX_GROUP_MEMBERS, def.name)?;
    let mut seen = HashSet::new();
    let mut kept = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        if item.is_null() {
            continue;
        }
        let path = format!("members[{i}]");
        let missing = || {
            ScimError::invalid_value(format!(
                "{path}.value is required and must be a non-empty string"
            ))
        };
        let Some(member) = normalize_single(def, item, &path)? else {
            return Err(missing());
        };
        let value = match member.get("value") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            _ => return Err(missing()),
        };
        if seen.insert(value) {
            kept.push(member);
        }
    }
    Ok((!kept.is_empty()).then_some(Value::Array(kept)))
}

/// Attributes of one object keyed by canonical name, rejecting names that collide once case is
/// ignored.
#[derive(Default)]
struct Fields(BTreeMap<&'static str, (&'static AttrDef, Value)>);

impl Fields {
    fn insert(&mut self, def: &'static AttrDef, value: Value) -> Result<(), ScimError> {
        if self.0.insert(def.name, (def, value)).is_some() {
            return Err(duplicate(def.name));
        }
        Ok(())
    }
}

fn duplicate(name: &str) -> ScimError {
    ScimError::invalid_syntax(format!(
        "attribute '{name}' is given more than once (attribute names are case-insensitive)"
    ))
}

/// Marks a special key as seen, failing on its second spelling.
fn claim(seen: &mut bool, name: &str) -> Result<(), ScimError> {
    if std::mem::replace(seen, true) {
        return Err(duplicate(name));
    }
    Ok(())
}

/// `schemas` must be an array of strings; which URNs it lists is not enforced (the result's
/// `schemas` is recomputed from the attributes present).
fn check_schemas(value: &Value) -> Result<(), ScimError> {
    match value {
        Value::Null => Ok(()),
        Value::Array(items)
            if items.len() <= MAX_MULTI_VALUES
                && items
                    .iter()
                    .all(|s| s.as_str().is_some_and(|s| s.len() <= MAX_STRING_BYTES)) =>
        {
            Ok(())
        }
        _ => Err(ScimError::invalid_value(
            "schemas must be an array of schema URN strings",
        )),
    }
}

/// Entra sends the manager as a bare id string; store it as `{"value": id}`.
fn manager_value(value: Value) -> Value {
    match value {
        Value::String(id) => {
            let mut m = Map::new();
            m.insert("value".to_owned(), Value::String(id));
            Value::Object(m)
        }
        other => other,
    }
}

/// Whether a normalized manager names someone: an empty `value` means "no manager".
fn has_nonempty_value(manager: &Value) -> bool {
    matches!(manager.get("value"), Some(Value::String(s)) if !s.trim().is_empty())
}

/// Normalizes one attribute value; `Ok(None)` means unassigned or not stored.
fn normalize_attr(def: &AttrDef, value: Value, path: &str) -> Result<Option<Value>, ScimError> {
    if matches!(def.mutability, Mutability::ReadOnly | Mutability::WriteOnly) {
        return Ok(None);
    }
    if value.is_null() {
        return Ok(None);
    }
    if !def.multi_valued {
        return normalize_single(def, value, path);
    }
    let items = multi_items(value, MAX_MULTI_VALUES, path)?;
    let mut out = Vec::with_capacity(items.len());
    let mut primaries = 0usize;
    for (i, item) in items.into_iter().enumerate() {
        if let Some(v) = normalize_single(def, item, &format!("{path}[{i}]"))? {
            if v.get("primary") == Some(&Value::Bool(true)) {
                primaries += 1;
            }
            out.push(v);
        }
    }
    if primaries > 1 {
        return Err(ScimError::invalid_value(format!(
            "{path} has more than one value with primary set to true"
        )));
    }
    Ok((!out.is_empty()).then_some(Value::Array(out)))
}

/// The elements of a multi-valued attribute, a lone value being wrapped into an array.
fn multi_items(value: Value, max: usize, path: &str) -> Result<Vec<Value>, ScimError> {
    let items = match value {
        Value::Array(items) => items,
        single => vec![single],
    };
    if items.len() > max {
        return Err(ScimError::invalid_value(format!(
            "{path} holds more than {max} values"
        )));
    }
    Ok(items)
}

/// Normalizes one value (an element, for multi-valued attributes) according to its type.
fn normalize_single(def: &AttrDef, value: Value, path: &str) -> Result<Option<Value>, ScimError> {
    match (def.kind, value) {
        (_, Value::Null) => Ok(None),
        (AttrType::Complex, Value::Object(members)) => {
            let mut fields = Fields::default();
            for (k, v) in members {
                if let Some(sub) = def.sub(&k) {
                    fields.insert(sub, v)?;
                }
            }
            let mut out = Map::new();
            for (sub, v) in fields.0.into_values() {
                if let Some(v) = normalize_attr(sub, v, &format!("{path}.{}", sub.name))? {
                    out.insert(sub.name.to_owned(), v);
                }
            }
            Ok((!out.is_empty()).then_some(Value::Object(out)))
        }
        (AttrType::Complex, _) => Err(type_error(path, "an object")),
        (AttrType::Boolean, v) => match bool_attr(&v) {
            Some(b) => Ok(Some(Value::Bool(b))),
            None => Err(type_error(path, "a boolean")),
        },
        (AttrType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => {
            Ok(Some(Value::Number(n)))
        }
        (AttrType::Integer, _) => Err(type_error(path, "an integer")),
        (AttrType::Decimal, Value::Number(n)) => Ok(Some(Value::Number(n))),
        (AttrType::Decimal, _) => Err(type_error(path, "a number")),
        (
            AttrType::String | AttrType::Reference | AttrType::DateTime | AttrType::Binary,
            Value::String(s),
        ) => {
            if s.len() > MAX_STRING_BYTES {
                return Err(ScimError::invalid_value(format!(
                    "{path} is longer than {MAX_STRING_BYTES} bytes"
                )));
            }
            Ok(Some(Value::String(s)))
        }
        (AttrType::String | AttrType::Reference | AttrType::DateTime | AttrType::Binary, _) => {
            Err(type_error(path, "a string"))
        }
    }
}

fn type_error(path: &str, expected: &str) -> ScimError {
    ScimError::invalid_value(format!("{path} must be {expected}"))
}
