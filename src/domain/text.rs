//! What the admin API means by "not blank" and by a length, stated once for the code and for
//! the OpenAPI document.
//!
//! Invariants:
//! - blank means "only Unicode `White_Space`" (Rust's `char::is_whitespace`, so `str::trim`);
//!   [`NOT_BLANK_PATTERN`] spells that set out code point by code point, because a bare `\S`
//!   means a different set in each regex dialect (ECMA-262 counts U+FEFF and not U+0085 as
//!   space, Python the reverse), and a client validating by the document must reach the
//!   broker's verdict;
//! - lengths are counted in characters (Unicode scalar values), as JSON Schema's `maxLength`
//!   counts them, never in UTF-8 bytes.

/// A JSON Schema `pattern` (ECMA-262, also valid in Python's `re` and Rust's `regex`) that
/// matches a string holding at least one character that is not Unicode `White_Space`.
pub const NOT_BLANK_PATTERN: &str = "[^\\u0009-\\u000d\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";

/// The string holds nothing but Unicode `White_Space` (or nothing at all).
pub fn is_blank(s: &str) -> bool {
    s.chars().all(char::is_whitespace)
}

/// A label of at most `max` characters that is not blank.
pub fn is_label(s: &str, max: usize) -> bool {
    !is_blank(s) && s.chars().count() <= max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_and_the_code_agree_on_every_character() {
        let re = regex::Regex::new(NOT_BLANK_PATTERN).expect("pattern compiles");
        let mut spaces = 0;
        for c in (0..=0x10FFFF_u32).filter_map(char::from_u32) {
            let s = c.to_string();
            assert_eq!(re.is_match(&s), !is_blank(&s), "U+{:04X}", c as u32);
            spaces += usize::from(is_blank(&s));
        }
        // Unicode's White_Space property has 25 code points.
        assert_eq!(spaces, 25);
    }

    #[test]
    fn blank_and_lengths() {
        assert!(is_blank(""));
        assert!(is_blank(" \t\u{85}\u{3000}"));
        assert!(!is_blank("\u{feff}"));
        assert!(!is_blank(" a "));
        assert!(is_label(&"é".repeat(200), 200));
        assert!(!is_label(&"é".repeat(201), 200));
        assert!(!is_label("\u{85}", 200));
    }
}
