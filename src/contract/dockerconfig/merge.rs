//! Writing a config: the merge that splices fresh credentials into kubeecr's own entries, and
//! the stripped config a merge gives the same bytes from.

use std::ops::Range;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::contract::json_spans::{Member, SyntaxError, decode_string, scan_value};

use super::document::{CREDENTIAL_FIELDS, Document, keyring_host, names_field};
use super::{DockerConfigError, RegistryCredential, not_json};

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

pub(super) fn json_string(s: &str) -> String {
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

/// Where new members go: right after the last member, or right after the `{`.
fn end_of_members(members: &[Member], open: usize) -> usize {
    members.last().map_or(open + 1, |m| m.value.end)
}
