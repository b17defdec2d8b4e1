//! Properties over generated configs: the merge changes only own entries, is idempotent and
//! leaves every form with the token; broken and arbitrary bytes are merged or refused exactly
//! as serde_json reads them; fingerprints agree with serde_json.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use serde_json::Value;

use super::generators::{
    leaf, names_host, object_text, password_and_case, string_text, value_text,
};
use super::{HOST, fresh, serde_fingerprint};
use crate::contract::dockerconfig::{
    DockerConfigError, RegistryCredential, credentials, fingerprint, merge,
};

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
    fn broken_inputs_are_merged_or_refused_exactly((password, case) in password_and_case(), cut in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let c = || RegistryCredential { host: HOST, username: "AWS", password: &password };
        let mut bytes = case.input.into_bytes();
        let at = cut.index(bytes.len());
        // Cut: JSON still only if no more than trailing whitespace went, and then merged to
        // the expected bytes cut the same.
        let end = case.input_end;
        let cut_merge = merge(Some(&bytes[..at]), &[c()]);
        if at >= end {
            let gone = bytes.len() - at;
            let expected = &case.expected.as_bytes()[..case.expected.len() - gone];
            prop_assert_eq!(cut_merge.as_deref(), Ok(expected));
        } else {
            prop_assert!(matches!(cut_merge, Err(DockerConfigError::NotJson(_))), "{:?}", cut_merge);
            prop_assert!(matches!(credentials(Some(&bytes[..at])), Err(DockerConfigError::NotJson(_))));
        }
        // A byte changed: as serde_json reads it.
        let unchanged = bytes[at] == byte;
        bytes[at] = byte;
        if unchanged {
            prop_assert_eq!(merge(Some(&bytes), &[c()]).unwrap(), case.expected.as_bytes());
        }
        check_as_serde_reads(&bytes, &password)?;
    }

    #[test]
    fn arbitrary_bytes_are_merged_or_refused_exactly(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        check_as_serde_reads(&bytes, "pw-1")?;
    }

    #[test]
    fn fingerprint_agrees_with_serde_json(entry in value_text(), fields in prop::collection::vec((prop::sample::select(vec!["username", "password", "auth", "email"]), prop_oneof![string_text(), leaf()]), 0..5)) {
        let members: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).chain([format!("\"x\":{entry}")]).collect();
        let text = object_text(&members, "", "");
        let v: Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(fingerprint(text.as_bytes()), serde_fingerprint(&v));
    }
}

/// What serde_json says of a config, read as Go reads it (invalid UTF-8 as U+FFFD).
enum Judged {
    NotJson,
    NotObject,
    AuthsNotObject,
    /// An object whose `auths`, if any, is an object.
    Merges,
}

/// Whether a decoded key names the field `auths` as Go matches it: ASCII case folded, and
/// `ſ` (U+017F) folds to `s`.
fn folds_to_auths(key: &str) -> bool {
    let folded: String = key
        .chars()
        .map(|c| {
            if c == '\u{17f}' {
                's'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    folded == "auths"
}

/// `None` where serde_json cannot judge: a lone surrogate, a number beyond f64, nesting past
/// its limit, or several keys that Go reads as `auths` (serde_json keeps the first spelling's
/// place, Go takes the last).
fn judge(bytes: &[u8]) -> Option<(Judged, Option<Value>)> {
    match serde_json::from_str::<Value>(&String::from_utf8_lossy(bytes)) {
        Err(e) => {
            let message = e.to_string();
            // A leading surrogate not followed by `\u` is "unexpected end of hex escape".
            let unjudged = ["hex escape", "number out of range", "recursion limit"]
                .iter()
                .any(|what| message.contains(what));
            (!unjudged).then_some((Judged::NotJson, None))
        }
        Ok(v @ Value::Object(_)) => {
            let auths: Vec<&Value> = v
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| folds_to_auths(k))
                .map(|(_, v)| v)
                .collect();
            let judged = match auths.as_slice() {
                [] => Judged::Merges,
                [one] if one.is_object() => Judged::Merges,
                [_] => Judged::AuthsNotObject,
                _ => return None,
            };
            Some((judged, Some(v)))
        }
        Ok(_) => Some((Judged::NotObject, None)),
    }
}

/// The merge of `bytes`, what `credentials` says and the fingerprint, exactly as serde_json
/// reads `bytes`; where it cannot judge, at least the merge and `credentials` agree and a
/// merge gives the host the fresh credentials.
fn check_as_serde_reads(bytes: &[u8], password: &str) -> Result<(), TestCaseError> {
    let c = || RegistryCredential {
        host: HOST,
        username: "AWS",
        password,
    };
    let merged = merge(Some(bytes), &[c()]);
    let read = credentials(Some(bytes));
    let judged = judge(bytes);
    let not_object = fingerprint(b"{}");
    match &judged {
        Some((Judged::NotJson, _)) => {
            prop_assert!(
                matches!(merged, Err(DockerConfigError::NotJson(_))),
                "{:?}",
                merged
            );
            prop_assert!(
                matches!(read, Err(DockerConfigError::NotJson(_))),
                "{:?}",
                read
            );
        }
        Some((Judged::NotObject, _)) => {
            prop_assert_eq!(&merged, &Err(DockerConfigError::NotObject));
            prop_assert_eq!(&read, &Err(DockerConfigError::NotObject));
        }
        Some((Judged::AuthsNotObject, _)) => {
            prop_assert_eq!(&merged, &Err(DockerConfigError::AuthsNotObject));
            prop_assert_eq!(&read, &Err(DockerConfigError::AuthsNotObject));
        }
        Some((Judged::Merges, _)) | None => {
            if judged.is_none() && merged.is_err() {
                // serde_json cannot say; kubeecr's merge and reading refuse alike.
                prop_assert_eq!(merged.err(), read.err());
                return Ok(());
            }
            let out = merged.map_err(|e| TestCaseError::fail(format!("refused: {e}")))?;
            let mut expected = read.map_err(|e| TestCaseError::fail(format!("unread: {e}")))?;
            expected.insert(HOST.to_string(), fingerprint(fresh(password).as_bytes()));
            prop_assert_eq!(credentials(Some(&out)).unwrap(), expected);
            prop_assert_eq!(merge(Some(&out), &[c()]).unwrap(), out);
        }
    }
    // The fingerprint of the whole text, read as an entry: of its top-level `username`,
    // `password` and `auth` when it is an object, else of nothing.
    match &judged {
        Some((_, Some(v))) => {
            let fields = v.as_object().unwrap();
            let spellings = |name: &str| {
                fields
                    .keys()
                    .filter(|k| k.eq_ignore_ascii_case(name))
                    .count()
            };
            // Only where serde_json reads the fields as Go does: valid UTF-8 (no U+FFFD stands
            // in for bytes), one spelling of each field, no `ſ` or Kelvin sign to fold.
            let comparable = std::str::from_utf8(bytes).is_ok()
                && ["username", "password", "auth"]
                    .iter()
                    .all(|f| spellings(f) <= 1)
                && !fields.keys().any(|k| k.contains(['\u{17f}', '\u{212a}']));
            if comparable {
                let exact: serde_json::Map<String, Value> = fields
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                    .filter(|(k, _)| ["username", "password", "auth"].contains(&k.as_str()))
                    .collect();
                prop_assert_eq!(fingerprint(bytes), serde_fingerprint(&Value::Object(exact)));
            }
        }
        Some((_, None)) => prop_assert_eq!(fingerprint(bytes), not_object),
        None => {}
    }
    Ok(())
}
