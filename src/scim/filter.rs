//! The SCIM filter grammar of RFC 7644 §3.4.2.2: parsing, evaluation against a resource's
//! SCIM JSON, index hints and `sortBy` ordering.
//!
//! Matching rules: attribute names compare case-insensitively to JSON keys; string values
//! compare case-insensitively except for the caseExact attributes (`id`, `externalId`,
//! `password`, `meta.version`, `members.value`, `groups.value`); `meta.created` and
//! `meta.lastModified` compare as RFC 3339 date-times. Ordering operators (`gt`, `ge`, `lt`,
//! `le`) never match booleans, objects or values of a different JSON type than the literal.
//! `ne` is the negation of `eq`: it matches when no value of the attribute equals the literal,
//! including when the attribute is missing. `eq null` matches a missing or null attribute.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

use serde_json::{Number, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::scim::error::ScimError;
pub use crate::scim::path::AttrPath;
use crate::scim::path::{is_core_urn, parse_attr_token};

#[cfg(test)]
mod tests;

/// Longest filter accepted, in bytes; longer input is rejected before lexing.
pub const MAX_FILTER_LEN: usize = 8 * 1024;
/// Deepest nesting of parentheses, `not` and value filters accepted.
pub const MAX_DEPTH: usize = 32;

/// The attribute comparison operators of RFC 7644 §3.4.2.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Contains (strings).
    Co,
    /// Starts with (strings).
    Sw,
    /// Ends with (strings).
    Ew,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Ge,
    /// Less than.
    Lt,
    /// Less than or equal.
    Le,
}

const OPS: [(&str, CompareOp); 9] = [
    ("eq", CompareOp::Eq),
    ("ne", CompareOp::Ne),
    ("co", CompareOp::Co),
    ("sw", CompareOp::Sw),
    ("ew", CompareOp::Ew),
    ("gt", CompareOp::Gt),
    ("ge", CompareOp::Ge),
    ("lt", CompareOp::Lt),
    ("le", CompareOp::Le),
];

impl CompareOp {
    /// Parses an operator keyword case-insensitively.
    pub fn parse(word: &str) -> Option<Self> {
        OPS.iter()
            .find(|(k, _)| word.eq_ignore_ascii_case(k))
            .map(|(_, op)| *op)
    }

    /// The lower-case wire keyword.
    pub fn as_str(self) -> &'static str {
        OPS.iter()
            .find(|(_, op)| *op == self)
            .map_or("eq", |(k, _)| k)
    }
}

/// A parsed SCIM filter expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// Both sides match.
    And(Box<Filter>, Box<Filter>),
    /// Either side matches.
    Or(Box<Filter>, Box<Filter>),
    /// The inner filter does not match.
    Not(Box<Filter>),
    /// `path op value`; the value is a string, number, boolean or null.
    Compare {
        path: AttrPath,
        op: CompareOp,
        value: Value,
    },
    /// `path pr`.
    Present(AttrPath),
    /// `path[filter]`: some element of the (multi-valued) attribute satisfies `filter`.
    ValuePath { path: AttrPath, filter: Box<Filter> },
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn side(f: &mut fmt::Formatter<'_>, x: &Filter, paren: bool) -> fmt::Result {
            if paren {
                write!(f, "({x})")
            } else {
                write!(f, "{x}")
            }
        }
        match self {
            Filter::And(l, r) => {
                side(f, l, matches!(**l, Filter::Or(..)))?;
                f.write_str(" and ")?;
                side(f, r, matches!(**r, Filter::Or(..) | Filter::And(..)))
            }
            Filter::Or(l, r) => {
                side(f, l, false)?;
                f.write_str(" or ")?;
                side(f, r, matches!(**r, Filter::Or(..)))
            }
            Filter::Not(x) => write!(f, "not ({x})"),
            Filter::Compare { path, op, value } => write!(f, "{path} {} {value}", op.as_str()),
            Filter::Present(path) => write!(f, "{path} pr"),
            Filter::ValuePath { path, filter } => write!(f, "{path}[{filter}]"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer and parser
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Word(String),
    Str(String),
    Num(Number),
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::LParen => f.write_str("'('"),
            Tok::RParen => f.write_str("')'"),
            Tok::LBracket => f.write_str("'['"),
            Tok::RBracket => f.write_str("']'"),
            Tok::Word(w) => write!(f, "'{w}'"),
            Tok::Str(_) => f.write_str("a string"),
            Tok::Num(n) => write!(f, "number {n}"),
        }
    }
}

/// A token and its byte offset in the input.
type Token = (Tok, usize);

/// Parses a filter; every error is `invalidFilter` with the 1-based character position.
pub fn parse(input: &str) -> Result<Filter, ScimError> {
    if input.len() > MAX_FILTER_LEN {
        let msg = format!("filter is longer than {MAX_FILTER_LEN} bytes");
        return Err(ScimError::invalid_filter(msg));
    }
    if input.trim().is_empty() {
        return Err(ScimError::invalid_filter("empty filter"));
    }
    let toks = lex(input)?;
    let mut p = Parser {
        input,
        toks,
        i: 0,
        in_brackets: false,
    };
    let f = p.parse_or(0)?;
    match p.toks.get(p.i) {
        None => Ok(f),
        Some((t, pos)) => p.fail(*pos, format!("unexpected {t} after a complete expression")),
    }
}

fn error_at(input: &str, byte: usize, msg: impl fmt::Display) -> ScimError {
    let col = input.get(..byte).map_or(byte, |s| s.chars().count()) + 1;
    ScimError::invalid_filter(format!("{msg} at position {col}"))
}

fn lex(input: &str) -> Result<Vec<Token>, ScimError> {
    let bytes = input.as_bytes();
    let run = |from: usize, ok: fn(u8) -> bool| {
        bytes
            .get(from..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| ok(**b))
            .count()
    };
    let mut toks = Vec::new();
    let mut i = 0;
    while let Some(c) = input.get(i..).and_then(|s| s.chars().next()) {
        let (tok, len) = match c {
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            '[' => (Tok::LBracket, 1),
            ']' => (Tok::RBracket, 1),
            c if c.is_whitespace() => {
                i += c.len_utf8();
                continue;
            }
            '"' => {
                // '"' and '\\' are ASCII and never occur inside a multi-byte UTF-8 sequence.
                let mut j = i + 1;
                loop {
                    match bytes.get(j) {
                        None => return Err(error_at(input, i, "unterminated string")),
                        Some(b'\\') => j += 2,
                        Some(b'"') => break,
                        Some(_) => j += 1,
                    }
                }
                let lit = input.get(i..=j).unwrap_or_default();
                let s = serde_json::from_str::<String>(lit)
                    .map_err(|e| error_at(input, i, format!("invalid string literal ({e})")))?;
                (Tok::Str(s), j + 1 - i)
            }
            c if c.is_ascii_digit() || c == '-' => {
                let len = run(i, |b| {
                    b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-')
                });
                let lit = input.get(i..i + len).unwrap_or_default();
                let n = serde_json::from_str::<Number>(lit)
                    .map_err(|_| error_at(input, i, format!("invalid number '{lit}'")))?;
                (Tok::Num(n), len)
            }
            c if c.is_ascii_alphabetic() || c == '$' => {
                let len = run(i, |b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'$' | b':' | b'.')
                });
                (
                    Tok::Word(input.get(i..i + len).unwrap_or_default().to_owned()),
                    len,
                )
            }
            // `emails[type eq "work"].value`: a sub-attribute after a value filter.
            '.' if matches!(toks.last(), Some((Tok::RBracket, _))) => {
                let len = 1 + run(i + 1, |b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'$')
                });
                if len == 1 {
                    return Err(error_at(
                        input,
                        i,
                        "expected a sub-attribute name after '.'",
                    ));
                }
                (
                    Tok::Word(input.get(i..i + len).unwrap_or_default().to_owned()),
                    len,
                )
            }
            c => return Err(error_at(input, i, format!("unexpected character {c:?}"))),
        };
        toks.push((tok, i));
        i += len;
    }
    Ok(toks)
}

fn is_keyword(w: &str) -> bool {
    ["and", "or", "not"]
        .iter()
        .any(|k| w.eq_ignore_ascii_case(k))
}

struct Parser<'a> {
    input: &'a str,
    toks: Vec<Token>,
    i: usize,
    in_brackets: bool,
}

impl Parser<'_> {
    fn fail<T>(&self, pos: usize, msg: impl fmt::Display) -> Result<T, ScimError> {
        Err(error_at(self.input, pos, msg))
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|(t, _)| t)
    }

    fn peek_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    /// True when the token after the current one continues an attribute expression.
    fn operator_follows(&self) -> bool {
        match self.toks.get(self.i + 1) {
            Some((Tok::LBracket, _)) => true,
            Some((Tok::Word(w), _)) => {
                w.eq_ignore_ascii_case("pr") || CompareOp::parse(w).is_some()
            }
            _ => false,
        }
    }

    /// Consumes the token at `pos` that opens a nesting level, enforcing [`MAX_DEPTH`].
    fn open(&mut self, depth: usize, pos: usize) -> Result<usize, ScimError> {
        if depth >= MAX_DEPTH {
            return self.fail(pos, format!("filter nested deeper than {MAX_DEPTH} levels"));
        }
        self.i += 1;
        Ok(depth + 1)
    }

    /// Consumes the closing `)` or `]` matching the opener at `open_pos`.
    fn close(&mut self, want: Tok, open_pos: usize) -> Result<(), ScimError> {
        match self.toks.get(self.i) {
            Some((t, _)) if *t == want => {
                self.i += 1;
                Ok(())
            }
            Some((t, pos)) => self.fail(*pos, format!("expected {want} but found {t}")),
            None => self.fail(open_pos, format!("no {want} closes this bracket")),
        }
    }

    fn parse_or(&mut self, depth: usize) -> Result<Filter, ScimError> {
        let mut left = self.parse_and(depth)?;
        while self.peek_keyword("or") {
            self.i += 1;
            left = Filter::Or(Box::new(left), Box::new(self.parse_and(depth)?));
        }
        Ok(left)
    }

    fn parse_and(&mut self, depth: usize) -> Result<Filter, ScimError> {
        let mut left = self.parse_unary(depth)?;
        while self.peek_keyword("and") {
            self.i += 1;
            left = Filter::And(Box::new(left), Box::new(self.parse_unary(depth)?));
        }
        Ok(left)
    }

    fn parse_unary(&mut self, depth: usize) -> Result<Filter, ScimError> {
        // `not` followed by an operator is an attribute that happens to be named "not".
        if let Some((Tok::Word(w), pos)) = self.toks.get(self.i)
            && w.eq_ignore_ascii_case("not")
            && !self.operator_follows()
        {
            let depth = self.open(depth, *pos)?;
            return Ok(Filter::Not(Box::new(self.parse_unary(depth)?)));
        }
        self.parse_primary(depth)
    }

    fn parse_primary(&mut self, depth: usize) -> Result<Filter, ScimError> {
        let Some((tok, pos)) = self.toks.get(self.i) else {
            return self.fail(
                self.input.len(),
                "unexpected end of filter, expected an attribute or '('",
            );
        };
        let pos = *pos;
        match tok {
            Tok::LParen => {
                let depth = self.open(depth, pos)?;
                let inner = self.parse_or(depth)?;
                self.close(Tok::RParen, pos)?;
                Ok(inner)
            }
            Tok::Word(w) if is_keyword(w) && !self.operator_follows() => {
                self.fail(pos, format!("expected an attribute but found '{w}'"))
            }
            Tok::Word(w) => {
                let path = parse_attr_token(w).or_else(|m| self.fail(pos, m))?;
                self.i += 1;
                self.parse_after_path(path, depth)
            }
            other => self.fail(
                pos,
                format!("expected an attribute or '(' but found {other}"),
            ),
        }
    }

    fn parse_after_path(&mut self, path: AttrPath, depth: usize) -> Result<Filter, ScimError> {
        let Some((tok, pos)) = self.toks.get(self.i) else {
            return self.fail(self.input.len(), format!("missing operator after '{path}'"));
        };
        let pos = *pos;
        match tok {
            Tok::LBracket if self.in_brackets => self.fail(pos, "value filters cannot be nested"),
            Tok::LBracket => {
                let depth = self.open(depth, pos)?;
                self.in_brackets = true;
                let inner = self.parse_or(depth)?;
                self.in_brackets = false;
                self.close(Tok::RBracket, pos)?;
                let filter = match self.toks.get(self.i) {
                    Some((Tok::Word(w), _)) if w.starts_with('.') => {
                        // `attr[filter].sub op value`: an element that passes the filter and
                        // whose sub-attribute satisfies the comparison.
                        let sub = AttrPath {
                            urn: None,
                            name: w.trim_start_matches('.').to_string(),
                            sub: None,
                        };
                        self.i += 1;
                        let in_brackets = std::mem::replace(&mut self.in_brackets, true);
                        let tail = self.parse_after_path(sub, depth);
                        self.in_brackets = in_brackets;
                        Filter::And(Box::new(inner), Box::new(tail?))
                    }
                    _ => inner,
                };
                Ok(Filter::ValuePath {
                    path,
                    filter: Box::new(filter),
                })
            }
            Tok::Word(w) if w.eq_ignore_ascii_case("pr") => {
                self.i += 1;
                Ok(Filter::Present(path))
            }
            Tok::Word(w) => {
                let Some(op) = CompareOp::parse(w) else {
                    return self.fail(pos, format!("unknown operator '{w}'"));
                };
                self.i += 1;
                let value = self.parse_value(op)?;
                Ok(Filter::Compare { path, op, value })
            }
            other => self.fail(
                pos,
                format!("expected an operator after '{path}' but found {other}"),
            ),
        }
    }

    fn parse_value(&mut self, op: CompareOp) -> Result<Value, ScimError> {
        let op = op.as_str();
        let Some((tok, pos)) = self.toks.get(self.i) else {
            return self.fail(self.input.len(), format!("missing value after '{op}'"));
        };
        let value = match tok {
            Tok::Str(s) => Value::String(s.clone()),
            Tok::Num(n) => Value::Number(n.clone()),
            Tok::Word(w) if w.eq_ignore_ascii_case("true") => Value::Bool(true),
            Tok::Word(w) if w.eq_ignore_ascii_case("false") => Value::Bool(false),
            Tok::Word(w) if w.eq_ignore_ascii_case("null") => Value::Null,
            other => {
                return self.fail(
                    *pos,
                    format!("expected a value after '{op}' but found {other}"),
                );
            }
        };
        self.i += 1;
        Ok(value)
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

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
