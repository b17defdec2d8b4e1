//! Reading a config as the kubelet reads it: the checked document and the `auths` that counts,
//! the host an `auths` key serves, and field names matched as Go matches them.

use crate::contract::json_spans::{Member, SyntaxError, decode_string, scan_value, skip_ws};

use super::{DockerConfigError, not_json};

/// The fields of an `auths` entry that hold credentials, in fingerprint order.
pub(super) const CREDENTIAL_FIELDS: [&str; 3] = ["username", "password", "auth"];

/// The checked input: the top-level object's members and the `auths` that counts.
pub(super) struct Document {
    /// Offset of the top-level `{`.
    pub(super) open: usize,
    pub(super) top: Vec<Member>,
    pub(super) auths: Option<Auths>,
}

pub(super) struct Auths {
    /// Offset of its `{`.
    pub(super) open: usize,
    pub(super) members: Vec<Member>,
}

impl Document {
    pub(super) fn parse(input: &[u8]) -> Result<Self, DockerConfigError> {
        let start = skip_ws(input, 0);
        let (end, top) = scan_value(input, start).map_err(|e| not_json(input, &e))?;
        let rest = skip_ws(input, end);
        if rest != input.len() {
            let trailing = SyntaxError {
                at: rest,
                what: "trailing characters after the JSON value",
            };
            return Err(not_json(input, &trailing));
        }
        if input.get(start) != Some(&b'{') {
            return Err(DockerConfigError::NotObject);
        }
        // The last: Go's json.Unmarshal (and so the kubelet) reads them in order, so it wins.
        let auths = top
            .iter()
            .rev()
            .find(|m| names_field(&decode_string(&input[m.key.clone()]), "auths"));
        let auths = match auths {
            None => None,
            Some(m) if input.get(m.value.start) == Some(&b'{') => {
                let (_, members) =
                    scan_value(input, m.value.start).map_err(|e| not_json(input, &e))?;
                Some(Auths {
                    open: m.value.start,
                    members,
                })
            }
            Some(_) => return Err(DockerConfigError::AuthsNotObject),
        };
        Ok(Self {
            open: start,
            top,
            auths,
        })
    }
}

/// Whether a decoded object key names a struct field as Go's encoding/json (and so the
/// kubelet) matches it: equal under Unicode simple case folding, so `Auth` is `auth`. For the
/// lowercase ASCII names used here that is ASCII case, plus `ſ` for `s` and `K` (Kelvin) for `k`.
pub(super) fn names_field(key: &[u8], field: &str) -> bool {
    let Ok(key) = std::str::from_utf8(key) else {
        return false;
    };
    let mut chars = key.chars();
    field.bytes().all(|f| {
        chars.next().is_some_and(|c| {
            c.to_ascii_lowercase() == char::from(f)
                || (f == b's' && c == '\u{17f}')
                || (f == b'k' && c == '\u{212a}')
        })
    }) && chars.next().is_none()
}

/// The host an `auths` key serves whole, as the kubelet's keyring (and Docker's
/// `ResolveAuthConfig`) reads it: `https://` or `http://` (lower case only) is stripped, a
/// query or fragment and any `user@` ignored, and `/v1/` or `/v2/` at the start of the path
/// count as no path. `None` when a path remains: the entry then serves only images under it.
/// The host keeps its case: an upper-case host matches no image.
pub(super) fn keyring_host(key: &[u8]) -> Option<&[u8]> {
    let rest = key
        .strip_prefix(b"https://")
        .or_else(|| key.strip_prefix(b"http://"))
        .unwrap_or(key);
    let rest = before(before(rest, b'#'), b'?');
    let (authority, path) = match rest.iter().position(|&b| b == b'/') {
        Some(i) => rest.split_at(i),
        None => (rest, &b""[..]),
    };
    let host = match authority.iter().rposition(|&b| b == b'@') {
        Some(i) => &authority[i + 1..],
        None => authority,
    };
    let path = path
        .strip_prefix(b"/v2")
        .or_else(|| path.strip_prefix(b"/v1"))
        .filter(|p| p.starts_with(b"/"))
        .unwrap_or(path);
    matches!(path, b"" | b"/").then_some(host)
}

/// `s` up to the first `at`.
fn before(s: &[u8], at: u8) -> &[u8] {
    s.iter().position(|&b| b == at).map_or(s, |i| &s[..i])
}
