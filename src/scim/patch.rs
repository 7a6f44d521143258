//! The SCIM PATCH engine (RFC 7644 §3.5.2) with the dialects Okta and Microsoft Entra send:
//! case-insensitive op names, path-less operations whose value keys are themselves paths,
//! value-filter paths that create the element when nothing matches (`emails[type eq "work"].value`),
//! member removal by value list, and the enterprise `manager` given as a bare id.
//!
//! Values are stored as given (no type coercion). Operations apply in order to the caller's
//! copy of the resource; the first error aborts and atomicity is the caller's concern.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::scim::ResourceKind;
use crate::scim::error::ScimError;
use crate::scim::filter::{CompareOp, Filter};
use crate::scim::path::{
    CORE_GROUP_URN, CORE_USER_URN, ENTERPRISE_URN, PatchPath, is_core_urn, parse_patch_path,
};

#[cfg(test)]
mod tests;
mod values;

use values::{append, designates, enforce_primary, find_key, remove_ci, set_ci};

/// The schema URN every PATCH request body must declare.
pub const PATCH_OP_URN: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// A PATCH request body (`Operations` is also accepted as `operations`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct PatchRequest {
    /// Must contain [`PATCH_OP_URN`]; defaulted so a missing list yields a SCIM error.
    #[serde(default)]
    pub schemas: Vec<String>,
    /// The operations, applied in order.
    #[serde(
        rename = "Operations",
        alias = "operations",
        alias = "OPERATIONS",
        default
    )]
    pub operations: Vec<PatchOp>,
}

/// One PATCH operation as sent on the wire; `op` is validated by [`OpKind::parse`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct PatchOp {
    /// `add`, `remove` or `replace` in any case.
    #[serde(alias = "Op", alias = "OP")]
    pub op: String,
    /// Target path; absent means the resource itself.
    #[serde(default, alias = "Path", skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Operand; JSON `null` is indistinguishable from absent.
    #[serde(default, alias = "Value", skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// The three PATCH operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Add values (append to multi-valued attributes).
    Add,
    /// Remove an attribute, elements or a sub-attribute.
    Remove,
    /// Replace values.
    Replace,
}

impl OpKind {
    /// Parses an op name case-insensitively (`add`, `Add`, `REPLACE`…); unknown → `invalidSyntax`.
    pub fn parse(op: &str) -> Result<Self, ScimError> {
        match op.trim().to_ascii_lowercase().as_str() {
            "add" => Ok(OpKind::Add),
            "remove" => Ok(OpKind::Remove),
            "replace" => Ok(OpKind::Replace),
            _ => Err(ScimError::invalid_syntax(format!(
                "unknown PATCH op '{}' (expected add, remove or replace)",
                op.chars().take(64).collect::<String>()
            ))),
        }
    }
}

/// Structural checks on a PATCH body before any operation is applied.
pub fn validate_request(req: &PatchRequest) -> Result<(), ScimError> {
    if !req
        .schemas
        .iter()
        .any(|s| s.eq_ignore_ascii_case(PATCH_OP_URN))
    {
        return Err(ScimError::invalid_syntax(format!(
            "schemas must contain {PATCH_OP_URN}"
        )));
    }
    if req.operations.is_empty() {
        return Err(ScimError::invalid_value(
            "Operations must contain at least one operation",
        ));
    }
    for (i, op) in req.operations.iter().enumerate() {
        OpKind::parse(&op.op).map_err(|e| at_op(i, e))?;
    }
    Ok(())
}

/// Applies `ops` in order to the SCIM JSON of a User or Group; stops at the first error.
pub fn apply(resource: &mut Value, ops: &[PatchOp], kind: ResourceKind) -> Result<(), ScimError> {
    if !resource.is_object() {
        return Err(ScimError::invalid_value(
            "the resource is not a JSON object",
        ));
    }
    for (i, op) in ops.iter().enumerate() {
        apply_one(resource, op, kind).map_err(|e| at_op(i, e))?;
    }
    Ok(())
}

fn at_op(i: usize, mut e: ScimError) -> ScimError {
    e.detail = format!("Operations[{i}]: {}", e.detail);
    e
}

fn apply_one(resource: &mut Value, op: &PatchOp, kind: ResourceKind) -> Result<(), ScimError> {
    let op_kind = OpKind::parse(&op.op)?;
    match op.path.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
        None => apply_no_path(resource, kind, op_kind, op.value.as_ref(), false),
        Some(path) => apply_path_str(resource, kind, op_kind, path, op.value.as_ref(), false),
    }
}

fn core_urn(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::User => CORE_USER_URN,
        ResourceKind::Group => CORE_GROUP_URN,
    }
}

/// A path-less op: each key of the value object is applied as if it were the path.
fn apply_no_path(
    resource: &mut Value,
    kind: ResourceKind,
    op: OpKind,
    value: Option<&Value>,
    nested: bool,
) -> Result<(), ScimError> {
    if op == OpKind::Remove {
        return Err(ScimError::no_target("remove requires a path"));
    }
    let Some(value) = value else {
        return Err(ScimError::invalid_value(
            "an operation without a path requires a value",
        ));
    };
    let Value::Object(fields) = value else {
        return Err(ScimError::invalid_value(
            "an operation without a path requires an object value",
        ));
    };
    for (key, v) in fields {
        let is = |name: &str| key.eq_ignore_ascii_case(name);
        if is("schemas") || is("meta") {
            continue;
        }
        if is("id") {
            if resource.get("id") == Some(v) {
                continue;
            }
            return Err(ScimError::mutability("id is immutable"));
        }
        apply_path_str(resource, kind, op, key, Some(v), nested)?;
    }
    Ok(())
}

fn apply_path_str(
    resource: &mut Value,
    kind: ResourceKind,
    op: OpKind,
    path: &str,
    value: Option<&Value>,
    nested: bool,
) -> Result<(), ScimError> {
    if path.eq_ignore_ascii_case(ENTERPRISE_URN) {
        return apply_extension_object(resource, kind, op, value);
    }
    if is_core_urn(path) {
        if !path.eq_ignore_ascii_case(core_urn(kind)) || op == OpKind::Remove || nested {
            return Err(ScimError::invalid_path(format!(
                "'{path}' cannot be targeted here"
            )));
        }
        return apply_no_path(resource, kind, op, value, true);
    }
    let pp = parse_patch_path(path)?;
    apply_target(resource, kind, op, &pp, value)
}

/// `path` is exactly the enterprise extension URN: merge into (or remove) the whole object.
fn apply_extension_object(
    resource: &mut Value,
    kind: ResourceKind,
    op: OpKind,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    if kind != ResourceKind::User {
        return Err(ScimError::invalid_path(
            "the enterprise extension applies to Users only",
        ));
    }
    if op == OpKind::Remove {
        if let Some(obj) = resource.as_object_mut() {
            if let Some(key) = find_key(obj, ENTERPRISE_URN) {
                obj.remove(&key);
            }
            if let Some(Value::Array(schemas)) = obj.get_mut("schemas") {
                schemas.retain(|s| !is_enterprise_urn(s));
            }
        }
        return Ok(());
    }
    let Some(Value::Object(fields)) = value else {
        return Err(ScimError::invalid_value(format!(
            "{ENTERPRISE_URN} requires an object value"
        )));
    };
    container_mut(resource, kind, true, true)?;
    for (key, v) in fields {
        let mut pp = parse_patch_path(key)?;
        if pp.attr.urn.is_some() {
            return Err(ScimError::invalid_path(format!(
                "unexpected schema prefix in '{key}'"
            )));
        }
        pp.attr.urn = Some(ENTERPRISE_URN.to_owned());
        apply_target(resource, kind, op, &pp, Some(v))?;
    }
    Ok(())
}

fn is_enterprise_urn(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.eq_ignore_ascii_case(ENTERPRISE_URN))
}

fn check_mutable(kind: ResourceKind, name: &str) -> Result<(), ScimError> {
    let read_only = ["id", "meta", "schemas"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
        || (kind == ResourceKind::User && name.eq_ignore_ascii_case("groups"));
    if read_only {
        return Err(ScimError::mutability(format!("'{name}' is read-only")));
    }
    Ok(())
}

fn is_multi_valued(kind: ResourceKind, name: &str) -> bool {
    let names = match kind {
        ResourceKind::User => {
            "emails phoneNumbers ims photos addresses groups entitlements roles x509Certificates"
        }
        ResourceKind::Group => "members",
    };
    names.split(' ').any(|n| name.eq_ignore_ascii_case(n))
}

/// Where a single op lands once its path is parsed.
struct Target<'p> {
    name: &'p str,
    /// A known multi-valued core attribute: scalar values are wrapped in an array.
    multi: bool,
    /// Elements are compared by `value` (members, groups).
    by_value: bool,
    /// The enterprise `manager`, whose bare-string form becomes `{"value": …}`.
    manager: bool,
}

fn apply_target(
    resource: &mut Value,
    kind: ResourceKind,
    op: OpKind,
    pp: &PatchPath,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let attr = &pp.attr;
    let ext = match attr.urn.as_deref() {
        None => false,
        Some(u) if u.eq_ignore_ascii_case(core_urn(kind)) => false,
        Some(u) if kind == ResourceKind::User && u.eq_ignore_ascii_case(ENTERPRISE_URN) => true,
        Some(u) => return Err(ScimError::invalid_path(format!("unsupported schema '{u}'"))),
    };
    if !ext {
        check_mutable(kind, &attr.name)?;
    }
    let value = match (op, value) {
        (OpKind::Remove, v) => v,
        (_, Some(v)) => Some(v),
        (_, None) => return Err(ScimError::invalid_value(format!("'{pp}' requires a value"))),
    };
    let Some(map) = container_mut(resource, kind, ext, op != OpKind::Remove)? else {
        return Ok(());
    };
    let name = attr.name.as_str();
    let target = Target {
        name,
        multi: !ext && is_multi_valued(kind, name),
        by_value: !ext
            && (name.eq_ignore_ascii_case("members") || name.eq_ignore_ascii_case("groups")),
        manager: ext && name.eq_ignore_ascii_case("manager"),
    };
    match (&pp.filter, attr.sub.as_deref()) {
        (None, None) => plain(map, op, &target, value),
        (None, Some(sub)) => sub_attr(map, op, &target, sub, value),
        (Some(filter), _) => filtered(map, op, &target, filter, pp.sub.as_deref(), value),
    }
}

/// The object holding the target: the resource itself or its enterprise extension object
/// (created, and its URN added to `schemas`, when `create`). `None`: nothing to remove from.
fn container_mut(
    resource: &mut Value,
    kind: ResourceKind,
    ext: bool,
    create: bool,
) -> Result<Option<&mut Map<String, Value>>, ScimError> {
    let not_object = || ScimError::invalid_value("the resource is not a JSON object");
    let obj = resource.as_object_mut().ok_or_else(not_object)?;
    if !ext {
        return Ok(Some(obj));
    }
    let key = find_key(obj, ENTERPRISE_URN).unwrap_or_else(|| ENTERPRISE_URN.to_owned());
    let missing = obj.get(&key).is_none_or(Value::is_null);
    if missing {
        if !create {
            return Ok(None);
        }
        let schemas = obj
            .entry("schemas")
            .or_insert_with(|| Value::Array(vec![Value::String(core_urn(kind).to_owned())]));
        if let Value::Array(list) = schemas
            && !list.iter().any(is_enterprise_urn)
        {
            list.push(Value::String(ENTERPRISE_URN.to_owned()));
        }
        obj.insert(key.clone(), Value::Object(Map::new()));
    }
    match obj.get_mut(&key) {
        Some(Value::Object(ext_obj)) => Ok(Some(ext_obj)),
        _ => Err(ScimError::invalid_value(format!(
            "{ENTERPRISE_URN} is not an object"
        ))),
    }
}

fn shaped(target: &Target<'_>, value: &Value) -> Value {
    match value {
        Value::String(_) if target.manager => single("value", value.clone()),
        Value::Array(_) | Value::Null => value.clone(),
        other if target.multi => Value::Array(vec![other.clone()]),
        other => other.clone(),
    }
}

/// `attr` with no sub-attribute and no filter.
fn plain(
    map: &mut Map<String, Value>,
    op: OpKind,
    target: &Target<'_>,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let key = find_key(map, target.name);
    let Some(value) = value else {
        // Remove without a value: drop the attribute (absent is already the desired state).
        if let Some(key) = key {
            map.remove(&key);
        }
        return Ok(());
    };
    let Some(key) = key else {
        if op == OpKind::Remove {
            return Ok(());
        }
        let mut new = shaped(target, value);
        if let Value::Array(items) = &mut new {
            let all = std::mem::take(items);
            append(items, all, target.by_value);
        }
        map.insert(target.name.to_owned(), new);
        return Ok(());
    };
    let Some(slot) = map.get_mut(&key) else {
        return Ok(());
    };
    match (op, slot) {
        (OpKind::Remove, Value::Array(items)) => {
            let Value::Array(victims) = value else {
                return Err(ScimError::invalid_value(format!(
                    "removing values from '{}' requires an array value",
                    target.name
                )));
            };
            items.retain(|e| !victims.iter().any(|v| designates(e, v)));
            if items.is_empty() {
                map.remove(&key);
            }
        }
        (OpKind::Remove, _) => {
            map.remove(&key);
        }
        (OpKind::Add, Value::Array(items)) => {
            let new = match shaped(target, value) {
                Value::Array(new) => new,
                other => vec![other],
            };
            let touched = append(items, new, target.by_value);
            enforce_primary(items, &touched);
        }
        (_, Value::Object(existing)) if value.is_object() && !target.multi => {
            // RFC 7644 §3.5.2.1/3: sub-attributes not given are left unchanged.
            if let Value::Object(fields) = value {
                for (k, v) in fields {
                    set_ci(existing, k, v.clone());
                }
            }
        }
        (_, slot) => {
            let mut new = shaped(target, value);
            if let Value::Array(items) = &mut new {
                let all = std::mem::take(items);
                append(items, all, target.by_value);
            }
            *slot = new;
        }
    }
    Ok(())
}

fn single(key: &str, value: Value) -> Value {
    let mut m = Map::new();
    m.insert(key.to_owned(), value);
    Value::Object(m)
}

/// `attr.sub` without a filter (`name.givenName`, `urn:…:User:manager.value`).
fn sub_attr(
    map: &mut Map<String, Value>,
    op: OpKind,
    target: &Target<'_>,
    sub: &str,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let key = find_key(map, target.name);
    let slot = key.and_then(|k| map.get_mut(&k));
    let Some(value) = value.filter(|_| op != OpKind::Remove) else {
        match slot {
            Some(Value::Object(o)) => remove_ci(o, sub),
            Some(Value::Array(items)) => items
                .iter_mut()
                .filter_map(Value::as_object_mut)
                .for_each(|o| remove_ci(o, sub)),
            _ => {}
        }
        return Ok(());
    };
    let fresh = || single(sub, value.clone());
    match slot {
        None => {
            let new = if target.multi {
                Value::Array(vec![fresh()])
            } else {
                fresh()
            };
            map.insert(target.name.to_owned(), new);
        }
        Some(slot @ Value::Null) => *slot = fresh(),
        Some(Value::Object(o)) => set_ci(o, sub, value.clone()),
        Some(Value::Array(items)) if items.is_empty() => items.push(fresh()),
        Some(Value::Array(items)) => {
            for item in items.iter_mut() {
                match item {
                    Value::Object(o) => set_ci(o, sub, value.clone()),
                    _ => return Err(not_complex(target.name)),
                }
            }
        }
        Some(_) => return Err(not_complex(target.name)),
    }
    Ok(())
}

fn not_complex(name: &str) -> ScimError {
    ScimError::invalid_path(format!("'{name}' has no sub-attributes"))
}

/// Collects the `attr eq literal` terms of an AND-only filter: the attributes a new element
/// needs so that it matches. `false` when the filter is anything else.
fn eq_seed(filter: &Filter, out: &mut Map<String, Value>) -> bool {
    match filter {
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value,
        } if path.urn.is_none() && path.sub.is_none() && !value.is_null() => {
            set_ci(out, &path.name, value.clone());
            true
        }
        Filter::And(l, r) => eq_seed(l, out) && eq_seed(r, out),
        _ => false,
    }
}

/// `attr[filter]` optionally followed by `.sub`.
fn filtered(
    map: &mut Map<String, Value>,
    op: OpKind,
    target: &Target<'_>,
    filter: &Filter,
    sub: Option<&str>,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let name = target.name;
    let key = find_key(map, name).unwrap_or_else(|| name.to_owned());
    let hits: Vec<usize> = match map.get(&key) {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter(|(_, e)| filter.matches_element(e, name))
            .map(|(i, _)| i)
            .collect(),
        None | Some(Value::Null) => Vec::new(),
        Some(_) => {
            return Err(ScimError::invalid_path(format!(
                "'{name}' is not multi-valued"
            )));
        }
    };
    let Some(value) = value.filter(|_| op != OpKind::Remove) else {
        // Remove: a filter matching nothing is a successful no-op (IdPs re-send removals).
        if let Some(Value::Array(items)) = map.get_mut(&key) {
            match sub {
                Some(s) => {
                    for &i in &hits {
                        if let Some(Value::Object(o)) = items.get_mut(i) {
                            remove_ci(o, s);
                        }
                    }
                }
                None => {
                    let mut i = 0;
                    items.retain(|_| {
                        i += 1;
                        !hits.contains(&(i - 1))
                    });
                }
            }
            if items.is_empty() {
                map.remove(&key);
            }
        }
        return Ok(());
    };
    let require_object = || {
        ScimError::invalid_value(format!(
            "a value for '{name}[…]' without a sub-attribute must be an object"
        ))
    };
    if hits.is_empty() {
        let mut element = Map::new();
        if !eq_seed(filter, &mut element) {
            return Err(ScimError::no_target(format!(
                "no value of '{name}' matches [{filter}]"
            )));
        }
        match (sub, value) {
            (Some(s), v) => set_ci(&mut element, s, v.clone()),
            (None, Value::Object(fields)) => fields
                .iter()
                .for_each(|(k, v)| set_ci(&mut element, k, v.clone())),
            (None, _) => return Err(require_object()),
        }
        let slot = map.entry(key).or_insert(Value::Null);
        if !slot.is_array() {
            *slot = Value::Array(Vec::new());
        }
        if let Value::Array(items) = slot {
            items.push(Value::Object(element));
            let last = items.len() - 1;
            enforce_primary(items, &[last]);
        }
        return Ok(());
    }
    let Some(Value::Array(items)) = map.get_mut(&key) else {
        return Ok(());
    };
    for &i in &hits {
        let Some(item) = items.get_mut(i) else {
            continue;
        };
        match (sub, op, &mut *item, value) {
            (Some(s), _, Value::Object(o), v) => set_ci(o, s, v.clone()),
            (Some(_), ..) => return Err(not_complex(name)),
            (None, OpKind::Add, Value::Object(o), Value::Object(fields)) => {
                fields.iter().for_each(|(k, v)| set_ci(o, k, v.clone()));
            }
            (None, _, _, v @ Value::Object(_)) => *item = v.clone(),
            (None, ..) => return Err(require_object()),
        }
    }
    enforce_primary(items, &hits);
    Ok(())
}
