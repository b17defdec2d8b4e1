//! A JSON scanner that checks RFC 8259 syntax and records where object members sit, as byte
//! spans, so that a caller can splice new bytes between them and copy everything else as it
//! was. Iterative (a stack of open containers, no recursion), so any depth is fine and time
//! and memory stay linear. Strings may hold any byte from 0x20 up, valid UTF-8 or not, as Go
//! accepts them. Pure; errors give a position, never content.

use std::ops::Range;

/// One object member: the byte spans of its key (with quotes) and of its value.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) key: Range<usize>,
    pub(crate) value: Range<usize>,
}

/// Where the input stops being JSON, and what was expected there. Never any content.
#[derive(Debug)]
pub(crate) struct SyntaxError {
    pub(crate) at: usize,
    pub(crate) what: &'static str,
}

impl SyntaxError {
    /// At `at`, or "unexpected end of input" when the input ended there.
    pub(crate) fn expected(input: &[u8], at: usize, what: &'static str) -> Self {
        let what = if at >= input.len() {
            "unexpected end of input"
        } else {
            what
        };
        Self { at, what }
    }

    /// `<what> at line L column C`: a position in `input`, never its content.
    pub(crate) fn describe(&self, input: &[u8]) -> String {
        let before = &input[..self.at.min(input.len())];
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        let column = 1 + before.len()
            - before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1);
        format!("{} at line {line} column {column}", self.what)
    }
}

pub(crate) fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// Checks the JSON value that starts at `start` and returns where it ends and, when it is an
/// object, its members. Iterative, with a stack of open containers, so any depth is fine and
/// time and memory stay linear.
pub(crate) fn scan_value(b: &[u8], start: usize) -> Result<(usize, Vec<Member>), SyntaxError> {
    let root_is_object = b.get(start) == Some(&b'{');
    let mut members = Vec::new();
    // Open containers, innermost last: true for an object, false for an array.
    let mut open: Vec<bool> = Vec::new();
    let mut key = 0..0;
    let mut value_start = start;
    let mut i = start;
    loop {
        // A value starts at `i`.
        if root_is_object && open.len() == 1 {
            value_start = i;
        }
        match b.get(i) {
            Some(b'{') => {
                open.push(true);
                i = skip_ws(b, i + 1);
                if b.get(i) != Some(&b'}') {
                    let (k, next) = scan_key(b, i)?;
                    if root_is_object && open.len() == 1 {
                        key = k;
                    }
                    i = next;
                    continue;
                }
                open.pop();
                i += 1;
            }
            Some(b'[') => {
                open.push(false);
                i = skip_ws(b, i + 1);
                if b.get(i) != Some(&b']') {
                    continue;
                }
                open.pop();
                i += 1;
            }
            Some(b'"') => i = scan_string(b, i)?,
            Some(b'-' | b'0'..=b'9') => i = scan_number(b, i)?,
            Some(b't') => i = scan_literal(b, i, b"true")?,
            Some(b'f') => i = scan_literal(b, i, b"false")?,
            Some(b'n') => i = scan_literal(b, i, b"null")?,
            _ => return Err(SyntaxError::expected(b, i, "expected a value")),
        }
        // A value ends at `i`: close containers until one takes another element.
        loop {
            if root_is_object && open.len() == 1 {
                members.push(Member {
                    key: key.clone(),
                    value: value_start..i,
                });
            }
            let Some(&in_object) = open.last() else {
                return Ok((i, members));
            };
            i = skip_ws(b, i);
            match b.get(i) {
                Some(b',') => {
                    i = skip_ws(b, i + 1);
                    if in_object {
                        let (k, next) = scan_key(b, i)?;
                        if root_is_object && open.len() == 1 {
                            key = k;
                        }
                        i = next;
                    }
                    break;
                }
                Some(b'}') if in_object => {
                    open.pop();
                    i += 1;
                }
                Some(b']') if !in_object => {
                    open.pop();
                    i += 1;
                }
                _ if in_object => return Err(SyntaxError::expected(b, i, "expected ',' or '}'")),
                _ => return Err(SyntaxError::expected(b, i, "expected ',' or ']'")),
            }
        }
    }
}

/// A member's key and its `:`; returns the key's span and where the value starts.
pub(crate) fn scan_key(b: &[u8], i: usize) -> Result<(Range<usize>, usize), SyntaxError> {
    if b.get(i) != Some(&b'"') {
        return Err(SyntaxError::expected(b, i, "expected a string key"));
    }
    let end = scan_string(b, i)?;
    let colon = skip_ws(b, end);
    if b.get(colon) != Some(&b':') {
        return Err(SyntaxError::expected(b, colon, "expected ':'"));
    }
    Ok((i..end, skip_ws(b, colon + 1)))
}

/// A string from its opening quote; returns the offset after the closing one. Any byte from
/// 0x20 up is taken as it is, valid UTF-8 or not, as Go takes it.
pub(crate) fn scan_string(b: &[u8], start: usize) -> Result<usize, SyntaxError> {
    let mut i = start + 1;
    loop {
        // Runs of plain bytes (tokens are kilobytes of them) are skipped in one pass.
        i += b
            .get(i..)
            .unwrap_or_default()
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
            .unwrap_or(b.len().saturating_sub(i));
        match b.get(i) {
            None => {
                return Err(SyntaxError {
                    at: i,
                    what: "unterminated string",
                });
            }
            Some(b'"') => return Ok(i + 1),
            Some(b'\\') => match b.get(i + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                Some(b'u') if hex4(b, i + 2).is_some() => i += 6,
                _ => return Err(SyntaxError::expected(b, i + 1, "invalid escape in string")),
            },
            Some(0..0x20) => {
                return Err(SyntaxError {
                    at: i,
                    what: "control character in string",
                });
            }
            Some(_) => i += 1,
        }
    }
}

/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
pub(crate) fn scan_number(b: &[u8], start: usize) -> Result<usize, SyntaxError> {
    let digits = |mut i: usize| {
        let from = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > from).then_some(i)
    };
    let invalid = |i| SyntaxError::expected(b, i, "invalid number");
    let mut i = start;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match b.get(i) {
        Some(b'0') => i + 1,
        Some(b'1'..=b'9') => digits(i).unwrap_or(i),
        _ => return Err(invalid(i)),
    };
    if b.get(i) == Some(&b'.') {
        i = digits(i + 1).ok_or_else(|| invalid(i + 1))?;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits(i).ok_or_else(|| invalid(i))?;
    }
    Ok(i)
}

pub(crate) fn scan_literal(b: &[u8], i: usize, literal: &[u8]) -> Result<usize, SyntaxError> {
    if b[i..].starts_with(literal) {
        Ok(i + literal.len())
    } else {
        Err(SyntaxError::expected(b, i, "invalid literal"))
    }
}

/// The four hex digits at `i`, as a number.
pub(crate) fn hex4(b: &[u8], i: usize) -> Option<u32> {
    b.get(i..i + 4)?
        .iter()
        .try_fold(0, |n, &d| Some(n * 16 + char::from(d).to_digit(16)?))
}

/// The bytes a checked JSON string (quotes included) stands for. A lone surrogate becomes
/// U+FFFD and bytes that are not UTF-8 stay as they are: keys compare the same either way.
pub(crate) fn decode_string(raw: &[u8]) -> Vec<u8> {
    let body = raw.get(1..raw.len().saturating_sub(1)).unwrap_or_default();
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while let Some(&c) = body.get(i) {
        if c != b'\\' {
            // Up to the next escape in one copy.
            let run = body[i..]
                .iter()
                .position(|&c| c == b'\\')
                .unwrap_or(body.len() - i);
            out.extend_from_slice(&body[i..i + run]);
            i += run;
            continue;
        }
        i += 1;
        let Some(&e) = body.get(i) else { break };
        i += 1;
        let ch = match e {
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let Some(unit) = hex4(body, i) else { break };
                i += 4;
                let low = (body.get(i..i + 2) == Some(b"\\u"))
                    .then(|| hex4(body, i + 2))
                    .flatten()
                    .filter(|low| (0xdc00..0xe000).contains(low));
                match low {
                    Some(low) if (0xd800..0xdc00).contains(&unit) => {
                        i += 6;
                        char::from_u32(0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00))
                            .unwrap_or('\u{fffd}')
                    }
                    _ => char::from_u32(unit).unwrap_or('\u{fffd}'),
                }
            }
            other => {
                out.push(other);
                continue;
            }
        };
        out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
    }
    out
}

#[cfg(test)]
mod tests;
