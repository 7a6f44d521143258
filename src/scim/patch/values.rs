//! Values inside a resource as PATCH touches them: attribute names matched case-insensitively
//! (SCIM attribute names are), and multi-valued attributes kept free of duplicates with at most
//! one `primary`.

use std::collections::HashSet;

use serde_json::{Map, Value};

/// The existing key spelling of `name` (exact match preferred, else case-insensitive).
pub(super) fn find_key(map: &Map<String, Value>, name: &str) -> Option<String> {
    if map.contains_key(name) {
        return Some(name.to_owned());
    }
    map.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()
}

/// Sets `name`, reusing an existing key of another casing.
pub(super) fn set_ci(map: &mut Map<String, Value>, name: &str, value: Value) {
    let key = find_key(map, name).unwrap_or_else(|| name.to_owned());
    map.insert(key, value);
}

pub(super) fn remove_ci(map: &mut Map<String, Value>, name: &str) {
    if let Some(key) = find_key(map, name) {
        map.remove(&key);
    }
}

fn get_ci<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    let obj = v.as_object()?;
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// True when `new` duplicates `existing` for the purpose of `add`.
fn duplicate(existing: &Value, new: &Value, by_value: bool) -> bool {
    if by_value && let (Some(a), Some(b)) = (get_ci(existing, "value"), get_ci(new, "value")) {
        return a == b;
    }
    existing == new
}

/// True when a removal value (`{"value": "u2"}` or `"u2"`) designates `existing`: every key it
/// gives has the same value in `existing`.
pub(super) fn designates(existing: &Value, given: &Value) -> bool {
    match given {
        Value::Object(fields) => {
            !fields.is_empty() && fields.iter().all(|(k, v)| get_ci(existing, k) == Some(v))
        }
        other => existing == other || get_ci(existing, "value") == Some(other),
    }
}

/// Appends `new` to `items`, skipping duplicates; returns the indices appended. Elements
/// compared by `value` use a hash set so large member lists stay linear.
pub(super) fn append(items: &mut Vec<Value>, new: Vec<Value>, by_value: bool) -> Vec<usize> {
    let id = |v: &Value| {
        get_ci(v, "value")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let mut ids: HashSet<String> = if by_value {
        items.iter().filter_map(id).collect()
    } else {
        HashSet::new()
    };
    let mut touched = Vec::new();
    for v in new {
        let dup = match id(&v).filter(|_| by_value) {
            Some(key) => !ids.insert(key),
            None => items.iter().any(|e| duplicate(e, &v, by_value)),
        };
        if !dup {
            touched.push(items.len());
            items.push(v);
        }
    }
    touched
}

/// Keeps at most one `primary: true`: the last touched element that claims it wins.
pub(super) fn enforce_primary(items: &mut [Value], touched: &[usize]) {
    let is_primary = |v: &Value| get_ci(v, "primary") == Some(&Value::Bool(true));
    let Some(&winner) = touched
        .iter()
        .rev()
        .find(|&&i| items.get(i).is_some_and(is_primary))
    else {
        return;
    };
    for (i, item) in items.iter_mut().enumerate() {
        if i != winner
            && is_primary(item)
            && let Value::Object(o) = item
        {
            set_ci(o, "primary", Value::Bool(false));
        }
    }
}
