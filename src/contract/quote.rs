//! Quoting values from untrusted objects in messages and log lines: short as printed, escapes
//! included, so that a megabyte annotation costs a megabyte nowhere but in the object itself,
//! and a value of control characters cannot push a message past what the API server shows.

/// Characters of a quoted value at most, as printed: quotes, escapes and the cut mark included.
pub const MAX_QUOTED_CHARS: usize = 64;

/// Characters of a value `prefix` keeps.
const MAX_PREFIX_CHARS: usize = 64;

/// The value, or its first `MAX_PREFIX_CHARS` characters and how long it was. For values
/// already checked to be printable (a role ARN); anything else goes through `quoted`.
pub fn prefix(value: &str) -> String {
    match value.char_indices().nth(MAX_PREFIX_CHARS) {
        None => value.to_string(),
        Some((end, _)) => format!("{}...({} bytes)", &value[..end], value.len()),
    }
}

/// The cut mark, inside the quotes.
const CUT: &str = "...";

/// The value in double quotes, escaped as Rust's `Debug` escapes a string, and at most
/// `MAX_QUOTED_CHARS` characters as printed: a longer one is cut before the escape that
/// would pass the bound, and ends `..."`.
pub fn quoted(value: &str) -> String {
    format!("\"{}\"", escaped(value, MAX_QUOTED_CHARS - 2))
}

/// The value escaped as `quoted` escapes it, without the quotes, and at most `max` characters
/// as printed: for names that are shown bare (a Secret's namespace and name).
pub fn escaped(value: &str, max: usize) -> String {
    let escaped: Vec<String> = value.chars().map(escape).collect();
    let printed: usize = escaped.iter().map(|e| e.chars().count()).sum();
    if printed <= max {
        return escaped.concat();
    }
    let room = max.saturating_sub(CUT.len());
    let mut out = String::new();
    let mut used = 0;
    for e in &escaped {
        let n = e.chars().count();
        if used + n > room {
            break;
        }
        used += n;
        out.push_str(e);
    }
    out.push_str(CUT);
    out
}

/// One character as a string's `Debug` prints it (a single quote needs no escape there).
fn escape(c: char) -> String {
    match c {
        '\'' => "'".to_string(),
        c => c.escape_debug().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printed(s: &str) -> usize {
        s.chars().count()
    }

    #[test]
    fn long_values_are_cut_short_values_are_whole() {
        assert_eq!(prefix("us-west-2"), "us-west-2");
        let long = "é".repeat(5000);
        let cut = prefix(&long);
        assert!(cut.starts_with(&"é".repeat(MAX_PREFIX_CHARS)));
        assert!(cut.ends_with("...(10000 bytes)"), "{cut}");
        assert_eq!(quoted("a\"b"), r#""a\"b""#);
        assert_eq!(quoted("it's"), r#""it's""#);
        assert_eq!(quoted("us-west-2"), format!("{:?}", "us-west-2"));
    }

    #[test]
    fn a_quote_is_bounded_as_printed_whatever_it_holds() {
        let control = format!("123456789012/u{}", "\u{16}".repeat(135));
        let wide = "漢字🦀".repeat(100);
        let long = "x".repeat(100_000);
        let escapes = "\\\"\n\t\r\0".repeat(50);
        let combining = "e\u{301}".repeat(80);
        let bidi = "\u{202e}\u{200b}".repeat(40);
        for value in [
            &bidi,
            control.as_str(),
            &wide,
            &long,
            &escapes,
            &combining,
            "",
            "\u{16}",
        ] {
            let q = quoted(value);
            assert!(printed(&q) <= MAX_QUOTED_CHARS, "{}: {q}", printed(&q));
            assert!(q.starts_with('"') && q.ends_with('"'), "{q}");
        }
        // Right-to-left overrides and zero-width characters are escaped, not printed.
        assert!(quoted("\u{202e}\u{200b}").starts_with("\"\\u{202e}\\u{200b}"));
        // Cut between escapes, never inside one.
        let q = quoted(&control);
        assert!(q.starts_with("\"123456789012/u\\u{16}"), "{q}");
        assert!(q.ends_with("\\u{16}...\""), "{q}");
        // Exactly at the bound: whole, no cut mark.
        let fits = "y".repeat(MAX_QUOTED_CHARS - 2);
        assert_eq!(quoted(&fits), format!("\"{fits}\""));
        assert!(quoted(&format!("{fits}y")).ends_with("...\""));
    }
}
