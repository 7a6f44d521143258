//! Evaluating a parsed SCIM filter against a resource's SCIM JSON under the matching rules
//! of the grammar module (caseExact attributes, date-times, typed ordering), plus the index
//! hint for `eq` filters and the `sortBy` ordering.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Number, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{AttrPath, CompareOp, Filter};
use crate::scim::path::is_core_urn;

impl Filter {
    /// True when the SCIM JSON `resource` satisfies this filter.
    pub fn matches(&self, resource: &Value) -> bool {
        eval(self, resource, None)
    }

    /// Evaluates a value filter against one element of the multi-valued attribute `parent`
    /// (e.g. `members`), so that caseExact rules such as `members.value` apply.
    pub fn matches_element(&self, element: &Value, parent: &str) -> bool {
        eval(self, element, Some(parent))
    }
}

fn eval(f: &Filter, node: &Value, parent: Option<&str>) -> bool {
    match f {
        Filter::And(l, r) => eval(l, node, parent) && eval(r, node, parent),
        Filter::Or(l, r) => eval(l, node, parent) || eval(r, node, parent),
        Filter::Not(x) => !eval(x, node, parent),
        Filter::Present(path) => match &path.sub {
            None => attr_value(node, path).is_some_and(is_present),
            Some(_) => resolve(node, path).into_iter().any(is_present),
        },
        Filter::ValuePath { path, filter } => {
            let ctx = path.sub.as_deref().unwrap_or(&path.name);
            resolve(node, path)
                .into_iter()
                .any(|el| eval(filter, el, Some(ctx)))
        }
        Filter::Compare { path, op, value } => {
            let targets = compare_targets(node, path);
            let rules = Rules::of(parent, path);
            let eq = |t: &&Value| compare_one(t, CompareOp::Eq, value, rules);
            match (op, value) {
                (CompareOp::Eq, Value::Null) => targets.is_empty(),
                (CompareOp::Ne, Value::Null) => !targets.is_empty(),
                (CompareOp::Ne, _) => !targets.iter().any(eq),
                (op, _) => targets.iter().any(|t| compare_one(t, *op, value, rules)),
            }
        }
    }
}

fn is_present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

/// Case-insensitive lookup of `key` in a JSON object (exact spelling preferred).
pub(crate) fn get_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let obj = v.as_object()?;
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn root_of<'a>(resource: &'a Value, path: &AttrPath) -> Option<&'a Value> {
    match &path.urn {
        Some(urn) if !is_core_urn(urn) => get_ci(resource, urn),
        _ => Some(resource),
    }
}

fn attr_value<'a>(resource: &'a Value, path: &AttrPath) -> Option<&'a Value> {
    root_of(resource, path).and_then(|root| get_ci(root, &path.name))
}

/// Resolve an attribute path in a resource: the values it denotes (multi-valued attributes flatten).
pub fn resolve<'a>(resource: &'a Value, path: &AttrPath) -> Vec<&'a Value> {
    fn push<'a>(out: &mut Vec<&'a Value>, v: &'a Value) {
        match v {
            Value::Null => {}
            Value::Array(items) => out.extend(items.iter().filter(|x| !x.is_null())),
            other => out.push(other),
        }
    }
    let mut out = Vec::new();
    let Some(v) = attr_value(resource, path) else {
        return out;
    };
    match &path.sub {
        None => push(&mut out, v),
        Some(sub) => {
            let parents: Vec<&Value> = match v {
                Value::Array(items) => items.iter().collect(),
                other => vec![other],
            };
            for p in parents {
                if let Some(x) = get_ci(p, sub) {
                    push(&mut out, x);
                }
            }
        }
    }
    out
}

/// The values a comparison looks at: complex values stand for their `value` sub-attribute.
fn compare_targets<'a>(node: &'a Value, path: &AttrPath) -> Vec<&'a Value> {
    let vals = resolve(node, path);
    if path.sub.is_some() {
        return vals;
    }
    vals.into_iter()
        .filter_map(|v| {
            if v.is_object() {
                get_ci(v, "value").filter(|x| !x.is_null())
            } else {
                Some(v)
            }
        })
        .collect()
}

#[derive(Clone, Copy)]
struct Rules {
    case_exact: bool,
    date: bool,
}

impl Rules {
    fn of(parent: Option<&str>, path: &AttrPath) -> Self {
        let (outer, inner) = match (parent, &path.sub) {
            (Some(p), _) => (Some(p), path.name.as_str()),
            (None, Some(sub)) => (Some(path.name.as_str()), sub.as_str()),
            (None, None) => (None, path.name.as_str()),
        };
        let is = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        let case_exact = match outer {
            None if !path.is_core() => false,
            None => {
                ["id", "externalId", "password"].iter().any(|n| is(inner, n))
                    // `members eq "id"` compares members.value.
                    || is(inner, "members")
                    || is(inner, "groups")
            }
            Some(o) => {
                (is(o, "meta") && is(inner, "version"))
                    || ((is(o, "members") || is(o, "groups")) && is(inner, "value"))
            }
        };
        let date = outer.is_some_and(|o| is(o, "meta"))
            && (is(inner, "created") || is(inner, "lastModified"));
        Rules { case_exact, date }
    }
}

fn parse_date(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

fn num_cmp(a: &Number, b: &Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

fn ordering_matches(op: CompareOp, ord: Ordering) -> bool {
    match op {
        CompareOp::Eq => ord == Ordering::Equal,
        CompareOp::Ne => ord != Ordering::Equal,
        CompareOp::Gt => ord == Ordering::Greater,
        CompareOp::Ge => ord != Ordering::Less,
        CompareOp::Lt => ord == Ordering::Less,
        CompareOp::Le => ord != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

fn compare_one(target: &Value, op: CompareOp, lit: &Value, rules: Rules) -> bool {
    match (target, lit) {
        (Value::String(a), Value::String(b)) => {
            if rules.date
                && !matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew)
                && let (Some(x), Some(y)) = (parse_date(a), parse_date(b))
            {
                return ordering_matches(op, x.cmp(&y));
            }
            let (a, b): (Cow<str>, Cow<str>) = if rules.case_exact {
                (a.into(), b.into())
            } else {
                (a.to_lowercase().into(), b.to_lowercase().into())
            };
            match op {
                CompareOp::Co => a.contains(&*b),
                CompareOp::Sw => a.starts_with(&*b),
                CompareOp::Ew => a.ends_with(&*b),
                _ => ordering_matches(op, a.cmp(&b)),
            }
        }
        (Value::Number(a), Value::Number(b)) => {
            num_cmp(a, b).is_some_and(|o| ordering_matches(op, o))
        }
        (Value::Bool(a), Value::Bool(b)) => {
            matches!(op, CompareOp::Eq | CompareOp::Ne) && ordering_matches(op, a.cmp(b))
        }
        _ => false,
    }
}

/// The first `attr eq "string"` found at the top level or inside top-level ANDs, for index use.
pub fn eq_hint(filter: &Filter) -> Option<(&AttrPath, &str)> {
    match filter {
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value: Value::String(s),
        } => Some((path, s.as_str())),
        Filter::And(l, r) => eq_hint(l).or_else(|| eq_hint(r)),
        _ => None,
    }
}

/// The single value `sortBy` orders on: the primary (else first) element of a multi-valued
/// attribute, complex values standing for their `value` sub-attribute.
fn sort_value<'a>(resource: &'a Value, path: &AttrPath) -> Option<&'a Value> {
    let raw = attr_value(resource, path)?;
    let elem = match raw {
        Value::Array(items) => items
            .iter()
            .find(|e| get_ci(e, "primary") == Some(&Value::Bool(true)))
            .or_else(|| items.first())?,
        other => other,
    };
    let v = match &path.sub {
        Some(sub) => get_ci(elem, sub)?,
        None if elem.is_object() => get_ci(elem, "value")?,
        None => elem,
    };
    (!v.is_null()).then_some(v)
}

/// Ordering for `sortBy` (ascending; missing values sort last; strings case-insensitively,
/// caseExact attributes and ties case-sensitively). Reversing the whole result gives the RFC 7644
/// §3.4.2.3 descending order, in which missing values come first.
pub fn sort_key_cmp(a: &Value, b: &Value, path: &AttrPath) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Bool(_) => 0,
            Value::Number(_) => 1,
            Value::String(_) => 2,
            _ => 3,
        }
    }
    match (sort_value(a, path), sort_value(b, path)) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => match (x, y) {
            (Value::String(x), Value::String(y)) => {
                let rules = Rules::of(None, path);
                if rules.date
                    && let (Some(dx), Some(dy)) = (parse_date(x), parse_date(y))
                {
                    return dx.cmp(&dy);
                }
                if rules.case_exact {
                    return x.cmp(y);
                }
                x.to_lowercase()
                    .cmp(&y.to_lowercase())
                    .then_with(|| x.cmp(y))
            }
            (Value::Number(x), Value::Number(y)) => num_cmp(x, y).unwrap_or(Ordering::Equal),
            (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
            (x, y) => rank(x).cmp(&rank(y)),
        },
    }
}
