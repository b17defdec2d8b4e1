//! Quoting values from untrusted objects in messages and log lines: a short prefix only, so
//! that a megabyte annotation costs a megabyte nowhere but in the object itself.

/// Characters of a value quoted at most.
pub const MAX_QUOTED_CHARS: usize = 64;

/// The value, or its first `MAX_QUOTED_CHARS` characters and how long it was.
pub fn prefix(value: &str) -> String {
    match value.char_indices().nth(MAX_QUOTED_CHARS) {
        None => value.to_string(),
        Some((end, _)) => format!("{}...({} bytes)", &value[..end], value.len()),
    }
}

/// `prefix`, as a Rust debug string: quoted and escaped.
pub fn quoted(value: &str) -> String {
    format!("{:?}", prefix(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_short_values_are_whole() {
        assert_eq!(prefix("us-west-2"), "us-west-2");
        let long = "é".repeat(5000);
        let cut = prefix(&long);
        assert!(cut.starts_with(&"é".repeat(MAX_QUOTED_CHARS)));
        assert!(cut.ends_with("...(10000 bytes)"), "{cut}");
        assert!(cut.len() < 200);
        assert_eq!(quoted("a\"b"), r#""a\"b""#);
    }
}
