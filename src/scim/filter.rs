//! The SCIM filter grammar of RFC 7644 §3.4.2.2: parsing here; evaluation against a
//! resource's SCIM JSON, index hints and `sortBy` ordering in [`eval`].
//!
//! Matching rules: attribute names compare case-insensitively to JSON keys; string values
//! compare case-insensitively except for the caseExact attributes (`id`, `externalId`,
//! `password`, `meta.version`, `members.value`, `groups.value`); `meta.created` and
//! `meta.lastModified` compare as RFC 3339 date-times. Ordering operators (`gt`, `ge`, `lt`,
//! `le`) never match booleans, objects or values of a different JSON type than the literal.
//! `ne` is the negation of `eq`: it matches when no value of the attribute equals the literal,
//! including when the attribute is missing. `eq null` matches a missing or null attribute.

use std::fmt;

use serde_json::{Number, Value};

use crate::scim::error::ScimError;
pub use crate::scim::path::AttrPath;
use crate::scim::path::parse_attr_token;

mod eval;
#[cfg(test)]
mod tests;

pub use eval::{eq_hint, resolve, sort_key_cmp};

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
