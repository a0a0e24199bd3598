//! Just enough JSON for a status's `data` without a JSON library: checking a text, writing it
//! compactly, and writing strings and numbers.
//!
//! # Invariants
//!
//! - [`compact`] accepts exactly the texts RFC 8259 allows (one value, any type, surrounded by
//!   optional whitespace), except lone UTF-16 surrogates in `\u` escapes, which serde_json
//!   refuses too, and nesting deeper than [`MAX_DEPTH`], refused so that a hostile text cannot
//!   exhaust the stack. Its output is the same value with the whitespace between tokens
//!   removed, so it holds no newline and fits one SSE `data:` line.
//! - Nothing here allocates more than one output string the size of its input.

use std::fmt::Write as _;

/// Deepest nesting of arrays and objects [`compact`] accepts.
pub(crate) const MAX_DEPTH: usize = 128;

/// Why a text is not JSON: what was wrong and the byte offset where it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub(crate) reason: &'static str,
    pub(crate) at: usize,
}

/// Checks that `text` is one JSON value and returns it without insignificant whitespace.
pub(crate) fn compact(text: &str) -> Result<String, Invalid> {
    let mut parser = Parser {
        bytes: text.as_bytes(),
        at: 0,
        out: String::with_capacity(text.len()),
    };
    parser.skip_space();
    parser.value(0)?;
    parser.skip_space();
    if parser.at != parser.bytes.len() {
        return Err(parser.fail("trailing characters after the value"));
    }
    Ok(parser.out)
}

/// Appends `text` to `out` as a JSON string, quotes included.
#[cfg_attr(not(any(test, feature = "tracing-layer")), allow(dead_code))]
pub(crate) fn write_str(out: &mut String, text: &str) {
    out.push('"');
    let mut plain = 0;
    for (at, ch) in text.char_indices() {
        let escape = match ch {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if u32::from(c) < 0x20 => "",
            _ => continue,
        };
        out.push_str(&text[plain..at]);
        if escape.is_empty() {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{:04x}", u32::from(ch));
        } else {
            out.push_str(escape);
        }
        plain = at + ch.len_utf8();
    }
    out.push_str(&text[plain..]);
    out.push('"');
}

/// Appends a float as JSON: a number when finite, `null` otherwise (JSON has no NaN or
/// infinity).
#[cfg_attr(not(any(test, feature = "tracing-layer")), allow(dead_code))]
pub(crate) fn write_f64(out: &mut String, value: f64) {
    if value.is_finite() {
        // `{:?}` of a finite f64 is a valid JSON number (`1.0`, `1e-7`, `-0.0`).
        let _ = write!(out, "{value:?}");
    } else {
        out.push_str("null");
    }
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
    out: String,
}

impl Parser<'_> {
    fn fail(&self, reason: &'static str) -> Invalid {
        Invalid {
            reason,
            at: self.at,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// Copies the bytes from `start` to the cursor to the output; they are ASCII or whole
    /// UTF-8 sequences of the input, which is a `str`.
    fn copy_from(&mut self, start: usize) {
        if let Ok(text) = std::str::from_utf8(&self.bytes[start..self.at]) {
            self.out.push_str(text);
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), Invalid> {
        match self.peek() {
            None => Err(self.fail("expected a value, found the end")),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string(),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.fail("expected a value")),
        }
    }

    fn literal(&mut self, word: &'static str) -> Result<(), Invalid> {
        if self.bytes[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            self.out.push_str(word);
            Ok(())
        } else {
            Err(self.fail("expected true, false or null"))
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        self.at - start
    }

    fn number(&mut self) -> Result<(), Invalid> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.fail("expected a digit")),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return Err(self.fail("expected a digit after the decimal point"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if self.digits() == 0 {
                return Err(self.fail("expected a digit in the exponent"));
            }
        }
        self.copy_from(start);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, Invalid> {
        let digits = self
            .bytes
            .get(self.at..self.at + 4)
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .filter(|digits| digits.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|digits| u32::from_str_radix(digits, 16).ok())
            .ok_or_else(|| self.fail("expected four hex digits after \\u"))?;
        self.at += 4;
        Ok(digits)
    }

    fn string(&mut self) -> Result<(), Invalid> {
        let start = self.at;
        self.at += 1;
        loop {
            match self.peek() {
                None => return Err(self.fail("unterminated string")),
                Some(b'"') => {
                    self.at += 1;
                    self.copy_from(start);
                    return Ok(());
                }
                Some(b'\\') => {
                    self.at += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.at += 1;
                        }
                        Some(b'u') => {
                            self.at += 1;
                            let unit = self.hex4()?;
                            if (0xDC00..0xE000).contains(&unit) {
                                return Err(self.fail("lone low surrogate in a \\u escape"));
                            }
                            if (0xD800..0xDC00).contains(&unit) {
                                let low = if self.bytes[self.at..].starts_with(b"\\u") {
                                    self.at += 2;
                                    self.hex4()?
                                } else {
                                    0
                                };
                                if !(0xDC00..0xE000).contains(&low) {
                                    return Err(self.fail("lone high surrogate in a \\u escape"));
                                }
                            }
                        }
                        _ => return Err(self.fail("invalid escape")),
                    }
                }
                Some(byte) if byte < 0x20 => {
                    return Err(self.fail("control character in a string"));
                }
                Some(_) => self.at += 1,
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), Invalid> {
        if depth > MAX_DEPTH {
            return Err(self.fail("nested too deeply"));
        }
        self.at += 1;
        self.out.push('[');
        self.skip_space();
        if self.peek() == Some(b']') {
            self.at += 1;
            self.out.push(']');
            return Ok(());
        }
        loop {
            self.skip_space();
            self.value(depth)?;
            self.skip_space();
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    self.out.push(',');
                }
                Some(b']') => {
                    self.at += 1;
                    self.out.push(']');
                    return Ok(());
                }
                _ => return Err(self.fail("expected , or ] in an array")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<(), Invalid> {
        if depth > MAX_DEPTH {
            return Err(self.fail("nested too deeply"));
        }
        self.at += 1;
        self.out.push('{');
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.at += 1;
            self.out.push('}');
            return Ok(());
        }
        loop {
            self.skip_space();
            if self.peek() != Some(b'"') {
                return Err(self.fail("expected a string key in an object"));
            }
            self.string()?;
            self.skip_space();
            if self.peek() != Some(b':') {
                return Err(self.fail("expected : after an object key"));
            }
            self.at += 1;
            self.out.push(':');
            self.skip_space();
            self.value(depth)?;
            self.skip_space();
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    self.out.push(',');
                }
                Some(b'}') => {
                    self.at += 1;
                    self.out.push('}');
                    return Ok(());
                }
                _ => return Err(self.fail("expected , or } in an object")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_json_and_drops_whitespace() {
        let cases = [
            ("1", "1"),
            (" -0.5e+3 ", "-0.5e+3"),
            ("\"a b\"", "\"a b\""),
            ("true", "true"),
            ("null", "null"),
            ("[ ]", "[]"),
            ("{ }", "{}"),
            (
                "{\n  \"a\" : [1, 2.0, {\"b\": null}],\n  \"c\": \"x\\ny \\u00e9 \\ud83d\\ude00\"\n}",
                "{\"a\":[1,2.0,{\"b\":null}],\"c\":\"x\\ny \\u00e9 \\ud83d\\ude00\"}",
            ),
            ("\"é 😀\"", "\"é 😀\""),
        ];
        for (text, compacted) in cases {
            assert_eq!(compact(text).as_deref(), Ok(compacted), "{text:?}");
        }
    }

    #[test]
    fn refuses_what_is_not_json() {
        for text in [
            "",
            " ",
            "01",
            "1.",
            "1e",
            "+1",
            ".5",
            "nul",
            "[1,]",
            "[1 2]",
            "{\"a\"}",
            "{\"a\":1,}",
            "{a:1}",
            "\"unterminated",
            "\"tab\there\"",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "1 2",
            "NaN",
            "'a'",
        ] {
            assert!(compact(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(compact(&ok).is_ok());
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(compact(&deep).unwrap_err().reason, "nested too deeply");
    }

    #[test]
    fn written_strings_and_numbers_are_valid_json() {
        let mut out = String::new();
        write_str(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, "\"a\\\"b\\\\c\\nd\\u0001é\"");
        assert_eq!(compact(&out).as_deref(), Ok(out.as_str()));
        for (value, text) in [
            (1.5, "1.5"),
            (1.0, "1.0"),
            (f64::NAN, "null"),
            (1e300, "1e300"),
        ] {
            let mut out = String::new();
            write_f64(&mut out, value);
            assert_eq!(out, text);
            assert!(compact(&out).is_ok());
        }
    }
}
