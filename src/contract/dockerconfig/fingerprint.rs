//! What credentials a config holds, as short fingerprints that notice any edit and never hold
//! the password: per entry, and per host across all its forms.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::ops::Range;

use crate::contract::json_spans::{SyntaxError, decode_string, scan_value, skip_ws};

use super::document::{CREDENTIAL_FIELDS, Document, keyring_host, names_field};
use super::{DockerConfigError, not_json};

/// `credentials` gives this for a host whose forms hold different credentials: not hex, so it
/// never equals a recorded fingerprint, and kubeecr rewrites them all.
pub(super) const MIXED: &str = "mixed";

/// Bytes of SHA-256 kept in a fingerprint: enough to notice any edit, too few to say anything
/// about the password.
pub(super) const FINGERPRINT_BYTES: usize = 6;

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
pub fn fingerprint_of(fields: &[Vec<u8>; 3]) -> String {
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
