//! `.dockerconfigjson` merge: writes kubeecr's registries and keeps everything else, byte for
//! byte.
//!
//! What it guarantees about the content:
//! - Every byte outside kubeecr's own `auths` entries is copied unchanged: whitespace, escapes,
//!   number spellings (`1.0e2`, 30-digit integers), duplicate keys, key order, nesting of any
//!   depth, and strings that are not valid UTF-8 (Go, and so the API server, accepts them).
//! - kubeecr's entries for a host `H` are the `auths` keys that the kubelet's keyring files
//!   under `H` itself: `H`, `https://H`, `http://H`, `H/`, `https://H/v2/` (lower-case scheme
//!   only; a path other than `/`, `/v1/` or `/v2/` scopes an entry to part of the host, and
//!   upper-case hosts never match an image). Each gets the fresh credentials and keeps its key
//!   as written and its other fields (`identitytoken`, `email`, ...), losing only its old
//!   `username`, `password` and `auth`; a bare `H` is always there afterwards. Path-scoped
//!   and upper-case forms are someone else's and stay as they are.
//! - Field names match as Go's encoding/json (and so the kubelet) matches them, case-folded: an
//!   `Auth` left behind would override the fresh `auth`. With several top-level `auths`, the
//!   last one is updated: Go reads them in order, so its entries win.
//! - Input that is not JSON, or not shaped like `{"auths":{...}}`, is refused, never rewritten.
//!   Errors give a position, never content: the input holds passwords.
//! - Pure and deterministic, and merging its own output again gives the same bytes, so an
//!   unchanged token means no write.
//!
//! An iterative scanner (RFC 8259, no recursion, so no depth limit) checks the whole input and
//! records the byte spans of object members; the merge splices new bytes between those spans.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::ops::Range;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::contract::json_spans::{Member, SyntaxError, decode_string, scan_value, skip_ws};

fn not_json(input: &[u8], e: &SyntaxError) -> DockerConfigError {
    DockerConfigError::NotJson(e.describe(input))
}

/// The data key of a `kubernetes.io/dockerconfigjson` Secret.
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";

/// Credentials for one registry host.
pub struct RegistryCredential<'a> {
    pub host: &'a str,
    pub username: &'a str,
    pub password: &'a str,
}

/// The existing `.dockerconfigjson` cannot be merged without losing what it holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerConfigError {
    /// What is wrong and where (line and column); never any content.
    #[error(
        "{DOCKER_CONFIG_JSON_KEY} is not valid JSON ({0}); fix it, or delete the key and kubeecr writes a new one"
    )]
    NotJson(String),
    #[error(
        "{DOCKER_CONFIG_JSON_KEY} is JSON but not an object; it must look like {{\"auths\":{{...}}}}, or delete the key and kubeecr writes a new one"
    )]
    NotObject,
    #[error(
        "{DOCKER_CONFIG_JSON_KEY} has an \"auths\" that is not an object; it must look like {{\"auths\":{{\"<host>\":{{...}}}}}}"
    )]
    AuthsNotObject,
}

/// The fields of an `auths` entry that hold credentials, in fingerprint order.
const CREDENTIAL_FIELDS: [&str; 3] = ["username", "password", "auth"];

/// `credentials` gives this for a host whose forms hold different credentials: not hex, so it
/// never equals a recorded fingerprint, and kubeecr rewrites them all.
const MIXED: &str = "mixed";

/// Writes fresh credentials into every `auths` entry of each credential's host (adding a bare
/// `"<host>"` entry when there is none); every other byte stays as it was. `None` is `{}`.
/// Hosts are bare and lower-case, as kubeecr derives them.
pub fn merge(
    existing: Option<&[u8]>,
    credentials: &[RegistryCredential<'_>],
) -> Result<Vec<u8>, DockerConfigError> {
    let input = existing.unwrap_or(b"{}");
    let doc = Document::parse(input)?;

    // One per host, in order of first appearance; the last credential for a host wins.
    let mut own: Vec<Own<'_>> = Vec::new();
    for c in credentials {
        let host = c.host.as_bytes().to_vec();
        let fields = fresh_fields(c);
        match own.iter_mut().find(|o| o.host == host) {
            Some(o) => o.fields = fields,
            None => own.push(Own {
                host,
                key: c.host,
                fields,
                found: false,
            }),
        }
    }
    let extra: usize = own.iter().map(|o| o.key.len() + o.fields.len() + 16).sum();
    let mut out = Vec::with_capacity(input.len() + 2 * extra);

    let mut copied = 0;
    let (insert_at, has_members) = match &doc.auths {
        Some(auths) => {
            for m in &auths.members {
                let key = decode_string(&input[m.key.clone()]);
                let Some(host) = keyring_host(&key) else {
                    continue;
                };
                let Some(o) = own.iter_mut().find(|o| o.host == host) else {
                    continue;
                };
                o.found |= key == o.host;
                out.extend_from_slice(&input[copied..m.value.start]);
                own_entry(input, &m.value, &o.fields, &mut out).map_err(|e| not_json(input, &e))?;
                copied = m.value.end;
            }
            (
                end_of_members(&auths.members, auths.open),
                !auths.members.is_empty(),
            )
        }
        None => (end_of_members(&doc.top, doc.open), !doc.top.is_empty()),
    };
    // New members go right after the last one, so whitespace before `}` stays where it was.
    out.extend_from_slice(&input[copied..insert_at]);
    let mut comma = has_members;
    if doc.auths.is_none() {
        if comma {
            out.push(b',');
        }
        out.extend_from_slice(br#""auths":{"#);
        comma = false;
    }
    for o in own.iter().filter(|o| !o.found) {
        if comma {
            out.push(b',');
        }
        comma = true;
        out.extend_from_slice(json_string(o.key).as_bytes());
        out.extend_from_slice(b":{");
        out.extend_from_slice(&o.fields);
        out.push(b'}');
    }
    if doc.auths.is_none() {
        out.push(b'}');
    }
    out.extend_from_slice(&input[insert_at..]);
    Ok(out)
}

/// What `credentials` says of each host: the fingerprint its entries share, or `MIXED`.
pub type Credentials = BTreeMap<String, String>;

/// The hosts that hold credentials (an `auth` or a `password`) under their bare key, each with
/// the fingerprint that all its forms share, or `MIXED` when they differ (a form without
/// credentials counts as differing). A host with no bare entry is left out: kubeecr writes
/// one.
pub fn credentials(existing: Option<&[u8]>) -> Result<Credentials, DockerConfigError> {
    let Some(input) = existing else {
        return Ok(BTreeMap::new());
    };
    let doc = Document::parse(input)?;
    let Some(auths) = doc.auths else {
        return Ok(BTreeMap::new());
    };
    // Per host: whether any form holds credentials, whether the bare form is there, and the
    // fingerprint they share.
    let mut hosts: BTreeMap<Vec<u8>, (bool, bool, String)> = BTreeMap::new();
    for m in &auths.members {
        let key = decode_string(&input[m.key.clone()]);
        let Some(host) = keyring_host(&key) else {
            continue;
        };
        if host.is_empty() {
            continue;
        }
        let bare = key == host;
        let fields = entry_fields(input, &m.value).map_err(|e| not_json(input, &e))?;
        let holds = !fields[1].is_empty() || !fields[2].is_empty();
        let fp = fingerprint_of(&fields);
        match hosts.entry(host.to_vec()) {
            Entry::Vacant(v) => {
                v.insert((holds, bare, fp));
            }
            Entry::Occupied(mut o) => {
                let (any_holds, any_bare, shared) = o.get_mut();
                *any_holds |= holds;
                *any_bare |= bare;
                if *shared != fp {
                    *shared = MIXED.to_string();
                }
            }
        }
    }
    Ok(hosts
        .into_iter()
        .filter(|(_, (holds, bare, _))| *holds && *bare)
        .map(|(host, (_, _, fp))| (String::from_utf8_lossy(&host).into_owned(), fp))
        .collect())
}

/// What `strip` leaves of a config kubeecr wrote from nothing: `{"auths":{"<host>":{},...}}`.
pub fn bare_entries(hosts: &[&str]) -> Vec<u8> {
    let entries: Vec<String> = hosts
        .iter()
        .map(|h| format!("{}:{{}}", json_string(h)))
        .collect();
    format!(r#"{{"auths":{{{}}}}}"#, entries.join(",")).into_bytes()
}

/// The config without the `username`, `password` and `auth` of the `hosts`' entries: what is
/// left for a merge to write into, which gives the same bytes as a merge into `existing`.
/// Usually `{"auths":{"<host>":{}}}`, so that what the refresher keeps of a Secret does not
/// grow with its tokens.
pub fn strip(existing: &[u8], hosts: &[&str]) -> Result<Vec<u8>, DockerConfigError> {
    let doc = Document::parse(existing)?;
    let Some(auths) = &doc.auths else {
        return Ok(existing.to_vec());
    };
    let mut out = Vec::with_capacity(existing.len().min(4096));
    let mut copied = 0;
    for m in &auths.members {
        let key = decode_string(&existing[m.key.clone()]);
        if !keyring_host(&key).is_some_and(|h| hosts.iter().any(|o| o.as_bytes() == h)) {
            continue;
        }
        out.extend_from_slice(&existing[copied..m.value.start]);
        own_entry(existing, &m.value, b"", &mut out).map_err(|e| not_json(existing, &e))?;
        copied = m.value.end;
    }
    out.extend_from_slice(&existing[copied..]);
    Ok(out)
}

/// Bytes of SHA-256 kept in a fingerprint: enough to notice any edit, too few to say anything
/// about the password.
const FINGERPRINT_BYTES: usize = 6;

/// A short SHA-256 fingerprint of an `auths` entry (its JSON text): of its `username`,
/// `password` and `auth`, so that an edit to any of them is noticed. A missing field, a value
/// that is not a string, or text that is not a JSON object counts as "". Never holds the
/// password itself.
pub fn fingerprint(entry: &[u8]) -> String {
    let start = skip_ws(entry, 0);
    let fields = match scan_value(entry, start) {
        Ok((end, _)) if skip_ws(entry, end) == entry.len() => {
            entry_fields(entry, &(start..end)).unwrap_or_default()
        }
        _ => Default::default(),
    };
    fingerprint_of(&fields)
}

/// SHA-256 over each decoded field followed by a 0 byte: the same bytes as before the merge was
/// lossless, so fingerprints recorded then still match.
fn fingerprint_of(fields: &[Vec<u8>; 3]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for f in fields {
        ctx.update(f);
        ctx.update(&[0]);
    }
    ctx.finish().as_ref()[..FINGERPRINT_BYTES]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One of kubeecr's hosts during a merge.
struct Own<'a> {
    /// Bare lowercase host, as kubeecr derives it.
    host: Vec<u8>,
    /// The key a new entry gets.
    key: &'a str,
    /// `"username":..,"password":..,"auth":..`, JSON-escaped.
    fields: Vec<u8>,
    /// The bare host is already a key of `auths`.
    found: bool,
}

fn fresh_fields(c: &RegistryCredential<'_>) -> Vec<u8> {
    let auth = STANDARD.encode(format!("{}:{}", c.username, c.password));
    format!(
        r#""username":{},"password":{},"auth":{}"#,
        json_string(c.username),
        json_string(c.password),
        json_string(&auth)
    )
    .into_bytes()
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a str always serializes")
}

/// Writes an own entry: the fresh credentials (none, to strip), then the old entry's other
/// members as they were (an entry that is not an object has none).
fn own_entry(
    input: &[u8],
    value: &Range<usize>,
    fields: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), SyntaxError> {
    out.push(b'{');
    out.extend_from_slice(fields);
    let mut first = fields.is_empty();
    if input.get(value.start) == Some(&b'{') {
        let (_, members) = scan_value(input, value.start)?;
        for m in members {
            let key = decode_string(&input[m.key.clone()]);
            if !CREDENTIAL_FIELDS.iter().any(|f| names_field(&key, f)) {
                if !first {
                    out.push(b',');
                }
                first = false;
                out.extend_from_slice(&input[m.key.start..m.value.end]);
            }
        }
    }
    out.push(b'}');
    Ok(())
}

/// The decoded `username`, `password` and `auth` of an entry; the last of each wins, as in Go.
fn entry_fields(input: &[u8], value: &Range<usize>) -> Result<[Vec<u8>; 3], SyntaxError> {
    let mut fields: [Vec<u8>; 3] = Default::default();
    if input.get(value.start) != Some(&b'{') {
        return Ok(fields);
    }
    let (_, members) = scan_value(input, value.start)?;
    for m in members {
        let key = decode_string(&input[m.key.clone()]);
        if let Some(i) = CREDENTIAL_FIELDS.iter().position(|f| names_field(&key, f)) {
            fields[i] = match input.get(m.value.start) {
                Some(b'"') => decode_string(&input[m.value.clone()]),
                _ => Vec::new(),
            };
        }
    }
    Ok(fields)
}

/// Whether a decoded object key names a struct field as Go's encoding/json (and so the
/// kubelet) matches it: equal under Unicode simple case folding, so `Auth` is `auth`. For the
/// lowercase ASCII names used here that is ASCII case, plus `ſ` for `s` and `K` (Kelvin) for `k`.
fn names_field(key: &[u8], field: &str) -> bool {
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
fn keyring_host(key: &[u8]) -> Option<&[u8]> {
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

/// Where new members go: right after the last member, or right after the `{`.
fn end_of_members(members: &[Member], open: usize) -> usize {
    members.last().map_or(open + 1, |m| m.value.end)
}

/// The checked input: the top-level object's members and the `auths` that counts.
struct Document {
    /// Offset of the top-level `{`.
    open: usize,
    top: Vec<Member>,
    auths: Option<Auths>,
}

struct Auths {
    /// Offset of its `{`.
    open: usize,
    members: Vec<Member>,
}

impl Document {
    fn parse(input: &[u8]) -> Result<Self, DockerConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    const HOST: &str = "123456789012.dkr.ecr.us-west-2.amazonaws.com";
    const OTHER: &str = "210987654321.dkr.ecr.eu-west-1.amazonaws.com";

    fn cred(host: &str) -> RegistryCredential<'_> {
        RegistryCredential {
            host,
            username: "AWS",
            password: "pw-1",
        }
    }

    /// The object kubeecr writes for `cred`.
    fn fresh(password: &str) -> String {
        format!(
            r#"{{"username":"AWS","password":{},"auth":"{}"}}"#,
            json_string(password),
            STANDARD.encode(format!("AWS:{password}"))
        )
    }

    fn merged(existing: &str, creds: &[RegistryCredential<'_>]) -> String {
        String::from_utf8(merge(Some(existing.as_bytes()), creds).unwrap()).unwrap()
    }

    /// `s` with `{H}` standing for `HOST` and `{F}` for `fresh("pw-1")`.
    fn t(s: &str) -> String {
        s.replace("{H}", HOST).replace("{F}", &fresh("pw-1"))
    }

    #[test]
    fn fills_an_empty_config() {
        let out = merge(None, &[cred(HOST)]).unwrap();
        let expected = format!(
            r#"{{"auths":{{"{HOST}":{{"username":"AWS","password":"pw-1","auth":"{}"}}}}}}"#,
            STANDARD.encode("AWS:pw-1")
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        assert_eq!(merge(None, &[]).unwrap(), br#"{"auths":{}}"#);
    }

    #[test]
    fn keeps_foreign_auths_and_fields_in_place() {
        let existing = r#"{"credsStore":"x","auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz","email":"a@b"},"123456789012.dkr.ecr.us-west-2.amazonaws.com":{"auth":"old"},"quay.io":{"auth":"cQ=="}},"HttpHeaders":{"User-Agent":"me"}}"#;
        assert_eq!(
            merged(existing, &[cred(HOST)]),
            existing.replace(r#"{"auth":"old"}"#, &fresh("pw-1"))
        );
    }

    #[test]
    fn merge_is_idempotent_and_has_no_trailing_newline() {
        let once = merge(None, &[cred(HOST)]).unwrap();
        let twice = merge(Some(&once), &[cred(HOST)]).unwrap();
        assert_eq!(once, twice);
        assert_ne!(once.last(), Some(&b'\n'));
    }

    #[test]
    fn refuses_what_it_would_lose() {
        assert!(matches!(
            merge(Some(b"{not json"), &[cred(HOST)]),
            Err(DockerConfigError::NotJson(_))
        ));
        for scalar in ["[1]", "1", r#""s""#, "null", " [] "] {
            assert_eq!(
                merge(Some(scalar.as_bytes()), &[cred(HOST)]),
                Err(DockerConfigError::NotObject),
                "{scalar}"
            );
        }
        assert_eq!(
            merge(Some(br#"{"auths":"x"}"#), &[cred(HOST)]),
            Err(DockerConfigError::AuthsNotObject)
        );
        // Only the last auths counts, as for the kubelet.
        assert_eq!(
            credentials(Some(br#"{"auths":{},"auths":null}"#)),
            Err(DockerConfigError::AuthsNotObject)
        );
        assert_eq!(
            merged(r#"{"auths":null,"auths":{}}"#, &[cred(HOST)]),
            t(r#"{"auths":null,"auths":{"{H}":{F}}}"#)
        );
    }

    #[test]
    fn json_errors_do_not_echo_content() {
        let err = merge(Some(br#"{"auths":{"h":{"auth":"c2VjcmV0"}}"#), &[]).unwrap_err();
        assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
    }

    #[test]
    fn what_is_not_json_is_reported_by_position_only() {
        let cases: &[&[u8]] = &[
            b"",
            b"  \n ",
            br#"{"a":"c2VjcmV0"} c2VjcmV0"#,
            br#"{"a":"c2VjcmV0"}}"#,
            br#"{"a":"c2VjcmV0"#,
            br#"{"a":"c2VjcmV0\"#,
            br#"{"a":"c2Vj\qcmV0"}"#,
            br#"{"a":"c2Vj\u12g4cmV0"}"#,
            br#"{"a":"c2Vj\u12"}"#,
            b"{\"a\":\"c2Vj\x01cmV0\"}",
            b"{\"a\":\"c2Vj\ncmV0\"}",
            b"{\"a\":\"c2Vj\tcmV0\"}",
            br#"{"c2VjcmV0":01}"#,
            br#"{"c2VjcmV0":1.}"#,
            br#"{"c2VjcmV0":.5}"#,
            br#"{"c2VjcmV0":-}"#,
            br#"{"c2VjcmV0":1e}"#,
            br#"{"c2VjcmV0":+1}"#,
            br#"{"c2VjcmV0":1,}"#,
            br#"{"c2VjcmV0":[1,]}"#,
            br#"{"c2VjcmV0":[,1]}"#,
            br#"{"a":c2VjcmV0}"#,
            br#"{"a":tru}"#,
            br#"{"a":nul}"#,
            br#"{"a":True}"#,
            br#"{"a" "c2VjcmV0"}"#,
            br#"{'c2VjcmV0':1}"#,
            br#"{c2VjcmV0:1}"#,
            br#"{"a":1 "c2VjcmV0":2}"#,
            br#"{"a":[1 2]}"#,
            br#"{"a":[}"#,
            b"{\"a\":1}\x00",
            b"\xef\xbb\xbf{}",
        ];
        for case in cases {
            for result in [
                merge(Some(case), &[cred(HOST)]).map(|_| ()),
                credentials(Some(case)).map(|_| ()),
            ] {
                let Err(err @ DockerConfigError::NotJson(_)) = result else {
                    panic!("{:?} gave {result:?}", String::from_utf8_lossy(case));
                };
                let message = err.to_string();
                assert!(
                    message.contains(" at line ") && message.contains(" column "),
                    "{message}"
                );
                assert!(message.contains("delete the key"), "{message}");
                assert!(!message.contains("c2Vj"), "{message}");
            }
        }
    }

    #[test]
    fn json_errors_say_line_and_column() {
        let err = merge(Some(b"{\n  \"a\": 01\n}"), &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("(expected ',' or '}' at line 2 column 9)"),
            "{err}"
        );
        let err = merge(Some(b"{\"a\":\n\"x"), &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("(unterminated string at line 2 column 3)"),
            "{err}"
        );
    }

    #[test]
    fn valid_edge_cases() {
        assert_eq!(merged("{}", &[cred(HOST)]), t(r#"{"auths":{"{H}":{F}}}"#));
        assert_eq!(
            merged(r#"{"auths":{}}"#, &[cred(HOST)]),
            t(r#"{"auths":{"{H}":{F}}}"#)
        );
        assert_eq!(
            merged("\n { }\t", &[cred(HOST)]),
            t("\n {\"auths\":{\"{H}\":{F}} }\t")
        );
        assert_eq!(merged(r#"{"x":[]}"#, &[]), r#"{"x":[],"auths":{}}"#);
        // Escapes in keys name the same keys; the bare host is added beside the scheme form.
        let escaped = t(r#"{"\u0061uths":{"https:\/\/{H}":{"auth":"old"}}}"#);
        assert_eq!(
            merged(&escaped, &[cred(HOST)]),
            t(r#"{"\u0061uths":{"https:\/\/{H}":{F},"{H}":{F}}}"#)
        );
        // Not UTF-8 in a foreign string: Go accepts it, so it is kept.
        let mut raw = b"{\"x\":\"\xff\xfe\",\"auths\":{}}".to_vec();
        let out = merge(Some(&raw), &[cred(HOST)]).unwrap();
        raw.truncate(raw.len() - 2);
        assert!(out.starts_with(&raw), "{out:?}");
        // A lone surrogate is valid JSON syntax; Go reads it as U+FFFD.
        assert!(merge(Some(br#"{"x":"\ud800"}"#), &[]).is_ok());
    }

    #[test]
    fn big_numbers_and_number_spellings_survive_byte_for_byte() {
        let existing = r#"{"n":12345678901234567890123,"f":1.0e2,"g":-0.0E-0,"auths":{"x":{"v":[1E+400,0.10000000000000000000001]},"{H}":{"auth":"old","serial":1.0e2}}}"#;
        assert_eq!(
            merged(&t(existing), &[cred(HOST)]),
            t(
                r#"{"n":12345678901234567890123,"f":1.0e2,"g":-0.0E-0,"auths":{"x":{"v":[1E+400,0.10000000000000000000001]},"{H}":{"username":"AWS","password":"pw-1","auth":"QVdTOnB3LTE=","serial":1.0e2}}}"#
            )
        );
    }

    #[test]
    fn duplicate_keys_survive() {
        let existing =
            r#"{"a":1,"a":[2],"auths":{"q":{"auth":"x"},"q":{"auth":"y","auth":"z"}},"a":"3"}"#;
        assert_eq!(
            merged(existing, &[cred(HOST)]),
            t(
                r#"{"a":1,"a":[2],"auths":{"q":{"auth":"x"},"q":{"auth":"y","auth":"z"},"{H}":{F}},"a":"3"}"#
            )
        );
    }

    #[test]
    fn deep_nesting_is_accepted_and_survives() {
        for depth in [5_000, 200_000] {
            let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let objects = format!("{}null{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
            let existing = format!(r#"{{"deep":{arrays},"auths":{{"q":{objects}}}}}"#);
            let expected = format!(
                r#"{{"deep":{arrays},"auths":{{"q":{objects},"{HOST}":{}}}}}"#,
                fresh("pw-1")
            );
            assert_eq!(merged(&existing, &[cred(HOST)]), expected);
            assert_eq!(merged(&expected, &[cred(HOST)]), expected);
            let unclosed = &existing[..existing.len() - 3];
            assert!(matches!(
                credentials(Some(unclosed.as_bytes())),
                Err(DockerConfigError::NotJson(_))
            ));
        }
    }

    #[test]
    fn own_entry_keeps_its_other_fields() {
        let existing = t(
            r#"{"auths":{"{H}":{"auth":"old","identitytoken":"tok", "email" : "a@b","password":"x","auth":"dup","nested":{"k":[1.0e2]}}}}"#,
        );
        let out = merged(&existing, &[cred(HOST)]);
        assert_eq!(
            out,
            t(
                r#"{"auths":{"{H}":{"username":"AWS","password":"pw-1","auth":"QVdTOnB3LTE=","identitytoken":"tok","email" : "a@b","nested":{"k":[1.0e2]}}}}"#
            )
        );
        assert_eq!(merged(&out, &[cred(HOST)]), out);
    }

    #[test]
    fn own_entry_that_is_not_an_object_is_replaced() {
        for value in ["null", r#""x""#, "[1]", "7"] {
            assert_eq!(
                merged(
                    &t(&format!(r#"{{"auths":{{"{{H}}":{value}}}}}"#)),
                    &[cred(HOST)]
                ),
                t(r#"{"auths":{"{H}":{F}}}"#),
                "{value}"
            );
        }
    }

    #[test]
    fn field_names_match_as_go_matches_them() {
        // Go's encoding/json (and so the kubelet) reads `Auth` as `auth`: a stale one left
        // behind would win over the fresh one.
        let existing =
            t(r#"{"auths":{"{H}":{"Auth":"c3RhbGU=","PASSWORD":"x","uſername":"y","authx":1}}}"#);
        assert_eq!(
            merged(&existing, &[cred(HOST)]),
            t(
                r#"{"auths":{"{H}":{"username":"AWS","password":"pw-1","auth":"QVdTOnB3LTE=","authx":1}}}"#
            )
        );
        assert_eq!(
            fingerprint(br#"{"Auth":"eA=="}"#),
            fingerprint(br#"{"auth":"eA=="}"#)
        );
        assert!(credentials(Some(br#"{"Auths":{"h":{"AUTH":"eA=="}}}"#)).unwrap()["h"].len() == 12);
    }

    #[test]
    fn other_forms_of_the_host_are_updated_in_place() {
        let existing = t(
            r#"{"auths":{"https://{H}":{"auth":"old"},"quay.io":{},"{H}/":{"auth":"old2","email":"e"},"http://{H}/v2/":null,"{H}.evil.example":{},"https://{H}x":{},"ftp://{H}":{}}}"#,
        );
        let out = merged(&existing, &[cred(HOST)]);
        assert_eq!(
            out,
            t(
                r#"{"auths":{"https://{H}":{F},"quay.io":{},"{H}/":{"username":"AWS","password":"pw-1","auth":"QVdTOnB3LTE=","email":"e"},"http://{H}/v2/":{F},"{H}.evil.example":{},"https://{H}x":{},"ftp://{H}":{},"{H}":{F}}}"#
            )
        );
        // A second registry with no form yet is added; the same host twice: the last wins.
        let two = [
            cred(HOST),
            cred(OTHER),
            RegistryCredential {
                password: "pw-2",
                ..cred(HOST)
            },
        ];
        let out = merged(
            r#"{"auths":{"https://123456789012.dkr.ecr.us-west-2.amazonaws.com":{}}}"#,
            &two,
        );
        assert_eq!(
            out,
            format!(
                r#"{{"auths":{{"https://{HOST}":{},"{HOST}":{},"{OTHER}":{}}}}}"#,
                fresh("pw-2"),
                fresh("pw-2"),
                fresh("pw-1")
            )
        );
    }

    #[test]
    fn credentials_of_mixed_forms() {
        let entry = fresh("pw-1");
        let fp = fingerprint(entry.as_bytes());
        let same = format!(
            r#"{{"auths":{{"https://{HOST}":{entry},"{HOST}/":{entry},"{HOST}":{entry}}}}}"#
        );
        assert_eq!(
            credentials(Some(same.as_bytes())).unwrap(),
            BTreeMap::from([(HOST.to_string(), fp.clone())])
        );
        // No bare entry: nothing to count on until kubeecr writes one.
        let no_bare = format!(r#"{{"auths":{{"https://{HOST}":{entry}}}}}"#);
        assert!(credentials(Some(no_bare.as_bytes())).unwrap().is_empty());
        let differ = format!(
            r#"{{"auths":{{"https://{HOST}":{entry},"{HOST}":{}}}}}"#,
            fresh("pw-2")
        );
        assert_eq!(credentials(Some(differ.as_bytes())).unwrap()[HOST], MIXED);
        // A form without credentials would be tried by the kubelet too: not kubeecr's either.
        let empty_form = format!(r#"{{"auths":{{"{HOST}":{entry},"http://{HOST}":{{}}}}}}"#);
        assert_eq!(
            credentials(Some(empty_form.as_bytes())).unwrap()[HOST],
            MIXED
        );
        // ...and merge makes them all the same again.
        let out = merge(Some(empty_form.as_bytes()), &[cred(HOST)]).unwrap();
        assert_eq!(credentials(Some(&out)).unwrap()[HOST], fp);
        assert!(!MIXED.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn pretty_input_keeps_its_whitespace() {
        let existing = t(concat!(
            "{\n",
            "  \"credsStore\" : \"desktop\",\n",
            "  \"auths\": {\n",
            "    \"quay.io\": {\n",
            "      \"auth\": \"cQ==\"\n",
            "    },\n",
            "    \"{H}\": {\n",
            "      \"auth\": \"old\",\n",
            "      \"email\": \"a@b\"\n",
            "    }\n",
            "  }\r\n",
            "}\n",
        ));
        let out = merged(&existing, &[cred(HOST), cred(OTHER)]);
        let expected = t(concat!(
            "{\n",
            "  \"credsStore\" : \"desktop\",\n",
            "  \"auths\": {\n",
            "    \"quay.io\": {\n",
            "      \"auth\": \"cQ==\"\n",
            "    },\n",
            "    \"{H}\": {\"username\":\"AWS\",\"password\":\"pw-1\",\"auth\":\"QVdTOnB3LTE=\",\"email\": \"a@b\"},\"{O}\":{F}\n",
            "  }\r\n",
            "}\n",
        ))
        .replace("{O}", OTHER);
        assert_eq!(out, expected);
    }

    #[test]
    fn the_last_auths_is_the_one_updated() {
        let existing = t(r#"{"auths":{"https://{H}":{"auth":"c3RhbGU="}},"x":1,"auths":{"q":{}}}"#);
        assert_eq!(
            merged(&existing, &[cred(HOST)]),
            t(r#"{"auths":{"https://{H}":{"auth":"c3RhbGU="}},"x":1,"auths":{"q":{},"{H}":{F}}}"#)
        );
        assert!(credentials(Some(existing.as_bytes())).unwrap().is_empty());
    }

    #[test]
    fn lists_hosts_that_hold_credentials() {
        let existing =
            br#"{"auths":{"a":{"auth":"eA=="},"b":{"password":"p"},"c":{},"d":{"auth":""},"e":{"auth":1},"":{"auth":"eA=="}}}"#;
        let hosts = credentials(Some(existing)).unwrap();
        assert_eq!(hosts.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert!(credentials(None).unwrap().is_empty());
        assert!(credentials(Some(b"{}")).unwrap().is_empty());
    }

    #[test]
    fn fingerprints_change_with_any_field_and_hide_the_password() {
        let written = merge(None, &[cred(HOST)]).unwrap();
        let fp = credentials(Some(&written)).unwrap()[HOST].clone();
        assert_eq!(fp.len(), 2 * FINGERPRINT_BYTES);
        assert!(fp.bytes().all(|b| b.is_ascii_hexdigit()));
        // Same credentials, same fingerprint, whatever else the config holds.
        let other = merge(
            Some(br#"{"auths":{"quay.io":{"auth":"eA=="}},"x":1}"#),
            &[cred(HOST)],
        )
        .unwrap();
        assert_eq!(credentials(Some(&other)).unwrap()[HOST], fp);
        let mut v: Value = serde_json::from_slice(&written).unwrap();
        let fp_of = |v: &Value| fingerprint(&serde_json::to_vec(&v["auths"][HOST]).unwrap());
        for field in ["username", "password", "auth"] {
            let mut edited = v.clone();
            edited["auths"][HOST][field] = json!("garbage");
            assert_ne!(fp_of(&edited), fp, "{field}");
        }
        v["auths"][HOST]["email"] = json!("a@b");
        assert_eq!(fp_of(&v), fp, "other fields do not count");
        assert!(!fp.contains("pw-1"));
        assert_eq!(fingerprint(b"not json"), fingerprint(b"{}"));
    }

    /// The fingerprint as computed before the merge was lossless, on serde_json values.
    fn serde_fingerprint(entry: &Value) -> String {
        let field = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or("");
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for k in ["username", "password", "auth"] {
            ctx.update(field(k).as_bytes());
            ctx.update(&[0]);
        }
        ctx.finish().as_ref()[..FINGERPRINT_BYTES]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn fingerprints_recorded_before_still_match() {
        let entries = [
            fresh("pw-1"),
            fresh("p\"w\\\u{1}é😀"),
            r#"{"auth":"eA==","email":"x"}"#.to_string(),
            r#"{"username":"\u0041W\u0053","password":"\ud83d\ude00\/\b\f\n\r\t","auth":1}"#
                .to_string(),
            r#"{"password":"a","password":"b","auth":null}"#.to_string(),
            "{}".to_string(),
            "null".to_string(),
        ];
        for e in entries {
            let v: Value = serde_json::from_str(&e).unwrap();
            assert_eq!(fingerprint(e.as_bytes()), serde_fingerprint(&v), "{e}");
        }
        // Pinned: what kubeecr wrote for AWS / pw-1.
        assert_eq!(
            fingerprint(fresh("pw-1").as_bytes()),
            serde_fingerprint(&json!({"username":"AWS","password":"pw-1","auth":"QVdTOnB3LTE="}))
        );
    }

    #[test]
    fn strings_decode_as_go_decodes_them() {
        assert_eq!(
            decode_string(br#""a\u00e9\uD83D\uDE00\/\"\\\b\f\n\r\t""#),
            "aé😀/\"\\\u{8}\u{c}\n\r\t".as_bytes()
        );
        assert_eq!(decode_string(br#""\ud800x""#), "\u{fffd}x".as_bytes());
        assert_eq!(decode_string(br#""\ud800\u0041""#), "\u{fffd}A".as_bytes());
        assert_eq!(
            decode_string(br#""\udc00\ud800""#),
            "\u{fffd}\u{fffd}".as_bytes()
        );
        assert_eq!(decode_string(b"\"\xff\""), b"\xff");
    }

    /// As `k8s.io/kubernetes/pkg/credentialprovider`'s keyring files them.
    #[test]
    fn keys_are_read_as_the_kubelet_reads_them() {
        for (key, host) in [
            ("h", Some("h")),
            ("h/", Some("h")),
            ("https://h", Some("h")),
            ("http://h/", Some("h")),
            ("https://h/v2/", Some("h")),
            ("https://h/v1/", Some("h")),
            ("h/v2/", Some("h")),
            ("h:443", Some("h:443")),
            ("user@h", Some("h")),
            ("https://h?x=1", Some("h")),
            ("Host.Example", Some("Host.Example")),
            // Only a lower-case scheme is stripped: Go parses the rest as a host `HTTPS:`.
            ("HTTPS://h", None),
            ("h/team-a", None),
            ("https://h/v2/team-a", None),
            ("h/v2", None),
            ("https:/h", None),
        ] {
            let got = keyring_host(key.as_bytes()).map(|h| String::from_utf8_lossy(h).into_owned());
            assert_eq!(got.as_deref(), host, "{key}");
        }
    }

    /// The finding: `HTTPS://H`, an upper-case `H` and `H/team-a` were taken for `H`, the
    /// path-scoped entry overwritten and no bare `H` added, so pulls of `H/other` failed while
    /// `status` said filled. They are someone else's now, and a bare `H` is always written.
    #[test]
    fn forms_the_kubelet_does_not_file_under_the_host_stay_as_they_are() {
        let upper = HOST.to_uppercase();
        let existing = format!(
            r#"{{"auths":{{"HTTPS://{HOST}":{{"auth":"a"}},"{upper}":{{"auth":"b"}},"{HOST}/team-a":{{"auth":"c"}}}}}}"#
        );
        let out = merged(&existing, &[cred(HOST)]);
        assert_eq!(
            out,
            format!(
                r#"{{"auths":{{"HTTPS://{HOST}":{{"auth":"a"}},"{upper}":{{"auth":"b"}},"{HOST}/team-a":{{"auth":"c"}},"{HOST}":{}}}}}"#,
                fresh("pw-1")
            )
        );
        // Before the fill the host holds nothing kubeecr can use; after, exactly its token.
        assert!(
            !credentials(Some(existing.as_bytes()))
                .unwrap()
                .contains_key(HOST)
        );
        assert_eq!(
            credentials(Some(out.as_bytes())).unwrap()[HOST],
            fingerprint(fresh("pw-1").as_bytes())
        );
    }

    /// What the refresher keeps: the config without its own credentials, into which a merge
    /// writes exactly what it would have written into the whole config.
    #[test]
    fn a_merge_into_the_stripped_config_gives_the_same_bytes() {
        let existing = t(
            r#"{"credsStore":"x","auths":{"https://{H}":{"auth":"old","email":"e"},"quay.io":{"auth":"cQ=="},"{H}":{"username":"AWS","password":"p","auth":"QVdTOnA="},"{H}/team-a":{"auth":"t"}}}"#,
        );
        let stripped = strip(existing.as_bytes(), &[HOST]).unwrap();
        assert_eq!(
            String::from_utf8(stripped.clone()).unwrap(),
            t(
                r#"{"credsStore":"x","auths":{"https://{H}":{"email":"e"},"quay.io":{"auth":"cQ=="},"{H}":{},"{H}/team-a":{"auth":"t"}}}"#
            )
        );
        assert_eq!(
            merge(Some(&stripped), &[cred(HOST)]).unwrap(),
            merge(Some(existing.as_bytes()), &[cred(HOST)]).unwrap()
        );
        assert_eq!(strip(b"{}", &[HOST]).unwrap(), b"{}");
        assert!(strip(b"{", &[HOST]).is_err());
    }

    // Generators of JSON text: any whitespace, number spellings, escapes, duplicate keys and
    // nesting, all valid UTF-8 without lone surrogates so that serde_json can read the result.

    fn ws() -> impl Strategy<Value = String> {
        "[ \t\n\r]{0,2}"
    }

    fn string_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            4 => "[a-zA-Z0-9 ./:é€😀-]{1,3}",
            1 => prop::sample::select(vec![
                r#"\""#, r"\\", r"\/", r"\b", r"\f", r"\n", r"\r", r"\t", r"\u00e9", r"\u20AC",
                r"\uD83D\uDE00", r"\u0000",
            ])
            .prop_map(str::to_string),
            1 => "\\\\u00[0-7][0-9A-Fa-f]",
        ];
        prop::collection::vec(piece, 0..4).prop_map(|p| format!("\"{}\"", p.concat()))
    }

    fn key_text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(r#""a""#.to_string()),
            Just(r#""a""#.to_string()),
            string_text()
        ]
    }

    fn leaf() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "-?(0|[1-9][0-9]{0,24})(\\.[0-9]{1,4})?([eE][+-]?[0-9]{1,2})?",
            4 => string_text(),
            1 => prop::sample::select(vec!["true", "false", "null"]).prop_map(str::to_string),
            1 => (1..100usize).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d))),
            1 => (1..60usize).prop_map(|d| format!("{}0{}", r#"{"a":"#.repeat(d), "}".repeat(d))),
        ]
    }

    fn value_text() -> impl Strategy<Value = String> {
        leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                (
                    prop::collection::vec((ws(), inner.clone(), ws()), 0..4),
                    ws()
                )
                    .prop_map(|(items, empty)| {
                        let items: Vec<String> =
                            items.into_iter().map(|(a, v, b)| a + &v + &b).collect();
                        if items.is_empty() {
                            format!("[{empty}]")
                        } else {
                            format!("[{}]", items.join(","))
                        }
                    }),
                (
                    prop::collection::vec(member_text(key_text(), inner), 0..4),
                    ws(),
                    ws()
                )
                    .prop_map(|(members, a, b)| object_text(&members, &a, &b)),
            ]
        })
    }

    /// `key ws : ws value`, as one piece.
    fn member_text(
        key: impl Strategy<Value = String>,
        value: impl Strategy<Value = String>,
    ) -> impl Strategy<Value = String> {
        (key, ws(), ws(), value).prop_map(|(k, a, b, v)| format!("{k}{a}:{b}{v}"))
    }

    fn object_text(members: &[String], before: &str, after: &str) -> String {
        if members.is_empty() {
            return format!("{{{before}}}");
        }
        format!(
            "{{{before}{}{after}}}",
            members.join(&format!("{after},{before}"))
        )
    }

    /// `object_text` with a member inserted where the merge puts new ones: right after the
    /// last member (or the `{`), before the whitespace that closes the object.
    fn with_inserted(members: &[String], before: &str, after: &str, member: &str) -> String {
        let mut text = object_text(members, before, after);
        let (ws, comma) = match members {
            [] => (before, ""),
            _ => (after, ","),
        };
        text.insert_str(text.len() - 1 - ws.len(), &format!("{comma}{member}"));
        text
    }

    /// A decoded key, as Go folds it for field names (no `ſ` or Kelvin sign is generated).
    fn folded(key: &str) -> String {
        serde_json::from_str::<String>(key).unwrap().to_lowercase()
    }

    fn foreign_top_member() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just(r#""credsStore""#.to_string()),
            Just(r#""HttpHeaders""#.to_string()),
            string_text().prop_filter("not auths", |k| folded(k) != "auths"),
        ];
        member_text(key, value_text())
    }

    fn foreign_auths_member() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just(r#""quay.io""#.to_string()),
            Just(r#""https://index.docker.io/v1/""#.to_string()),
            Just(r#""123456789012.dkr.ecr.us-west-2.amazonaws.com.evil""#.to_string()),
            // Forms the kubelet does not file under the host: someone else's.
            Just(format!(r#""HTTPS://{HOST}""#)),
            Just(format!(r#""{}""#, HOST.to_uppercase())),
            Just(format!(r#""{HOST}/team-a""#)),
            Just(format!(r#""https://{HOST}/v2/team-a""#)),
            string_text().prop_filter("not a form of the host", |k| {
                !names_host(&serde_json::from_str::<String>(k).unwrap())
            }),
        ];
        member_text(key, value_text())
    }

    /// An own entry as written, and the member texts that must survive in it.
    #[derive(Debug, Clone)]
    struct OwnEntry {
        key: String,
        between: String,
        value: String,
        kept: Option<Vec<String>>,
    }

    fn own_entry_strategy() -> impl Strategy<Value = OwnEntry> {
        let key = prop::sample::select(vec![
            format!(r#""{HOST}""#),
            format!(r#""https://{HOST}""#),
            format!(r#""https:\/\/{HOST}""#),
            format!(r#""{HOST}/""#),
            format!(r#""http://{HOST}/v2/""#),
            format!(r#""\u0068ttps://{HOST}/v1/""#),
        ]);
        let extra_key = prop_oneof![
            Just(r#""identitytoken""#.to_string()),
            Just(r#""email""#.to_string()),
            string_text().prop_filter("not a credential field", |k| {
                !["username", "password", "auth"].contains(&folded(k).as_str())
            }),
        ];
        let cred_key = prop::sample::select(vec![
            r#""username""#,
            r#""password""#,
            r#""auth""#,
            r#""Auth""#,
            r#""p\u0061ssword""#,
        ])
        .prop_map(str::to_string);
        let member = prop_oneof![
            member_text(extra_key, value_text()).prop_map(|m| (m, true)),
            member_text(cred_key, value_text()).prop_map(|m| (m, false)),
        ];
        let object = (prop::collection::vec(member, 0..4), ws(), ws()).prop_map(|(ms, a, b)| {
            let texts: Vec<String> = ms.iter().map(|(m, _)| m.clone()).collect();
            let kept = ms.into_iter().filter(|(_, k)| *k).map(|(m, _)| m).collect();
            (object_text(&texts, &a, &b), Some(kept))
        });
        let other = prop_oneof![leaf(), Just("[1]".to_string())]
            .prop_filter("not an object", |v| !v.starts_with('{'))
            .prop_map(|v| (v, None));
        (key, ws(), ws(), prop_oneof![3 => object, 1 => other]).prop_map(
            |(key, a, b, (value, kept))| OwnEntry {
                key,
                between: format!("{a}:{b}"),
                value,
                kept,
            },
        )
    }

    #[derive(Debug, Clone)]
    enum AuthsMember {
        Foreign(String),
        Own(OwnEntry),
    }

    /// A whole input: top-level foreign members around an optional `auths`, with its
    /// expected merge built from the pieces (own values rewritten, a bare entry inserted).
    #[derive(Debug, Clone)]
    struct Case {
        input: String,
        expected: String,
        /// The decoded key of the `auths` that counts, when there is one.
        auths_key: Option<String>,
    }

    fn case(password: &str) -> impl Strategy<Value = Case> + use<> {
        let fresh_object = fresh(password);
        let fresh_fields = fresh_object[1..fresh_object.len() - 1].to_string();
        let auths_member = prop_oneof![
            3 => foreign_auths_member().prop_map(AuthsMember::Foreign),
            1 => own_entry_strategy().prop_map(AuthsMember::Own),
        ];
        let auths = (
            prop::sample::select(vec![r#""auths""#, r#""\u0061uths""#, r#""Auths""#]),
            ws(),
            ws(),
            prop::collection::vec(auths_member, 0..5),
            ws(),
            ws(),
        );
        let decoy = prop_oneof![
            value_text(),
            Just(format!(r#"{{"https://{HOST}":{{"auth":"c3RhbGU="}}}}"#)),
        ];
        (
            ws(),
            prop::collection::vec(foreign_top_member(), 0..3),
            prop::option::of(decoy),
            prop::option::of(auths),
            prop::collection::vec(foreign_top_member(), 0..3),
            ws(),
            ws(),
            ws(),
        )
            .prop_map(move |(lead, before, decoy, auths, after, a, b, trail)| {
                let new_entry = format!(r#""{HOST}":{fresh_object}"#);
                let mut input_members = Vec::new();
                let mut expected_members = Vec::new();
                for m in &before {
                    input_members.push(m.clone());
                    expected_members.push(m.clone());
                }
                let mut auths_key = None;
                if let Some((key, x, y, members, c, d)) = &auths {
                    if let Some(decoy) = decoy {
                        let m = format!(r#""auths":{decoy}"#);
                        input_members.push(m.clone());
                        expected_members.push(m);
                    }
                    auths_key = Some(serde_json::from_str::<String>(key).unwrap());
                    let mut input_entries = Vec::new();
                    let mut expected_entries = Vec::new();
                    for m in members {
                        match m {
                            AuthsMember::Foreign(text) => {
                                input_entries.push(text.clone());
                                expected_entries.push(text.clone());
                            }
                            AuthsMember::Own(o) => {
                                input_entries.push(format!("{}{}{}", o.key, o.between, o.value));
                                let kept: String =
                                    o.kept.iter().flatten().map(|k| format!(",{k}")).collect();
                                expected_entries.push(format!(
                                    "{}{}{{{fresh_fields}{kept}}}",
                                    o.key, o.between
                                ));
                            }
                        }
                    }
                    // The bare host is added unless it is a key already.
                    let has_bare = members.iter().any(|m| matches!(m, AuthsMember::Own(o) if serde_json::from_str::<String>(&o.key).unwrap() == HOST));
                    let input_object = object_text(&input_entries, c, d);
                    let expected_object = if has_bare {
                        object_text(&expected_entries, c, d)
                    } else {
                        with_inserted(&expected_entries, c, d, &new_entry)
                    };
                    input_members.push(format!("{key}{x}:{y}{input_object}"));
                    expected_members.push(format!("{key}{x}:{y}{expected_object}"));
                }
                for m in &after {
                    input_members.push(m.clone());
                    expected_members.push(m.clone());
                }
                let input = format!("{lead}{}{trail}", object_text(&input_members, &a, &b));
                let expected_object = match auths {
                    Some(_) => object_text(&expected_members, &a, &b),
                    None => with_inserted(
                        &expected_members,
                        &a,
                        &b,
                        &format!(r#""auths":{{{new_entry}}}"#),
                    ),
                };
                Case {
                    input,
                    expected: format!("{lead}{expected_object}{trail}"),
                    auths_key,
                }
            })
    }

    /// The test's own reading of the kubelet's rule, for the keys generated here: a
    /// lower-case scheme, then the host, then nothing, `/`, `/v1/` or `/v2/`.
    fn names_host(key: &str) -> bool {
        let rest = key
            .strip_prefix("https://")
            .or_else(|| key.strip_prefix("http://"))
            .unwrap_or(key);
        let rest = rest.split(['?', '#']).next().unwrap_or(rest);
        let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        rest.strip_prefix(HOST)
            .is_some_and(|path| ["", "/", "/v1/", "/v2/"].contains(&path))
    }

    fn password_and_case() -> impl Strategy<Value = (String, Case)> {
        "[ -~é\n\t]{1,24}".prop_flat_map(|pw| (Just(pw.clone()), case(&pw)))
    }

    /// Near-JSON: JSON with now and then one of its usual mistakes, or loose characters. No
    /// `d`, so no surrogate escapes, where serde_json is stricter than RFC 8259 and Go.
    fn json_ish() -> impl Strategy<Value = String> {
        let pick = |v: Vec<&'static str>| prop::sample::select(v).prop_map(str::to_string);
        let atom = prop_oneof![
            6 => pick(vec![
                "0", "-0.5e-3", "1E+2", "10", "true", "false", "null", r#""a""#, r#""\u00e9""#,
                r#""\/\b""#, "[]", "{}", " 1 ",
            ]),
            1 => pick(vec![
                "01", "1.", ".5", "-", "1e", "+1", "-a", "tru", "nul", "True", r#""\x""#,
                r#""\u12""#, "\"a", "\"\n\"", "\"\t\"", "x", "", "'a'",
            ]),
        ];
        let tree = atom.prop_recursive(3, 16, 3, |inner| {
            let sep = prop_oneof![8 => Just(","), 1 => Just(""), 1 => Just(",,")];
            let end = prop_oneof![8 => Just(""), 1 => Just(",")];
            let key = prop_oneof![8 => Just(r#""k""#), 1 => Just("k"), 1 => Just("'k'")];
            let colon = prop_oneof![8 => Just(":"), 1 => Just(""), 1 => Just("=")];
            prop_oneof![
                (
                    prop::collection::vec((inner.clone(), sep.clone()), 0..3),
                    end.clone()
                )
                    .prop_map(|(items, end)| {
                        let n = items.len();
                        let body: String = items
                            .iter()
                            .enumerate()
                            .map(|(i, (v, s))| {
                                if i + 1 < n {
                                    format!("{v}{s}")
                                } else {
                                    v.clone()
                                }
                            })
                            .collect();
                        format!("[{body}{end}]")
                    }),
                (prop::collection::vec((key, colon, inner, sep), 0..3), end).prop_map(
                    |(members, end)| {
                        let n = members.len();
                        let body: String = members
                            .iter()
                            .enumerate()
                            .map(|(i, (k, c, v, s))| {
                                format!("{k}{c}{v}{}", if i + 1 < n { *s } else { "" })
                            })
                            .collect();
                        format!("{{{body}{end}}}")
                    }
                ),
            ]
        });
        let trail = prop_oneof![8 => Just(""), 1 => Just(" x"), 1 => Just("}")];
        prop_oneof![
            4 => (tree, trail).prop_map(|(t, x)| t + x),
            1 => "[{}\\[\\]\":,019.eE+\\-\\\\ \nnultrfasbx]{0,24}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn merge_changes_only_own_entries((password, case) in password_and_case()) {
            let c = RegistryCredential { host: HOST, username: "AWS", password: &password };
            let out = merge(Some(case.input.as_bytes()), &[c]);
            let out = String::from_utf8(out.unwrap()).unwrap();
            // Every foreign byte in place, own entries rewritten, nothing else.
            prop_assert_eq!(&out, &case.expected);
            // Idempotent, so an unchanged token means no write.
            let c = RegistryCredential { host: HOST, username: "AWS", password: &password };
            prop_assert_eq!(merge(Some(out.as_bytes()), &[c]).unwrap(), out.as_bytes());
            // Every form holds the same credentials now.
            let fp = fingerprint(fresh(&password).as_bytes());
            prop_assert_eq!(&credentials(Some(out.as_bytes())).unwrap()[HOST], &fp);
            // Real JSON, whose own entries all hold the token.
            let v: Value = serde_json::from_str(&out).unwrap();
            let auths = &v[case.auths_key.as_deref().unwrap_or("auths")];
            let auth = STANDARD.encode(format!("AWS:{password}"));
            let own: Vec<&Value> = auths.as_object().unwrap().iter().filter(|(k, _)| names_host(k)).map(|(_, e)| e).collect();
            prop_assert!(!own.is_empty());
            for e in own {
                prop_assert_eq!(e["auth"].as_str(), Some(auth.as_str()));
                prop_assert_eq!(e["password"].as_str(), Some(password.as_str()));
            }
        }

        #[test]
        fn broken_inputs_never_panic((_, case) in password_and_case(), cut in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = case.input.into_bytes();
            let at = cut.index(bytes.len());
            let _ = merge(Some(&bytes[..at]), &[cred(HOST)]);
            bytes[at] = byte;
            let _ = merge(Some(&bytes), &[cred(HOST)]);
            let _ = credentials(Some(&bytes));
            let _ = fingerprint(&bytes);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = merge(Some(&bytes), &[cred(HOST)]);
            let _ = credentials(Some(&bytes));
            let _ = fingerprint(&bytes);
        }

        /// The scanner accepts what serde_json accepts (short texts, so no depth limit).
        #[test]
        fn syntax_agrees_with_serde_json(text in json_ish()) {
            let bytes = text.as_bytes();
            let start = skip_ws(bytes, 0);
            let ours = scan_value(bytes, start).is_ok_and(|(end, _)| skip_ws(bytes, end) == bytes.len());
            let theirs = serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok();
            prop_assert_eq!(ours, theirs);
        }

        #[test]
        fn fingerprint_agrees_with_serde_json(entry in value_text(), fields in prop::collection::vec((prop::sample::select(vec!["username", "password", "auth", "email"]), prop_oneof![string_text(), leaf()]), 0..5)) {
            let members: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).chain([format!("\"x\":{entry}")]).collect();
            let text = object_text(&members, "", "");
            let v: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(fingerprint(text.as_bytes()), serde_fingerprint(&v));
        }
    }
}
