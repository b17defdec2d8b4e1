//! `.dockerconfigjson` merge: writes kubeecr's registries and keeps everything else.
//!
//! Pure. Output is deterministic (same input, same bytes), so an unchanged token means no write.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

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

fn parse(existing: Option<&[u8]>) -> Result<Map<String, Value>, DockerConfigError> {
    let Some(bytes) = existing else {
        return Ok(Map::new());
    };
    // serde_json's messages give a position, never the content, so they are safe to report.
    match serde_json::from_slice::<Value>(bytes)
        .map_err(|e| DockerConfigError::NotJson(e.to_string()))?
    {
        Value::Object(map) => Ok(map),
        _ => Err(DockerConfigError::NotObject),
    }
}

/// Writes `auths[host] = {username, password, auth}` for each credential; every other entry
/// and top-level field keeps its value and position.
pub fn merge(
    existing: Option<&[u8]>,
    credentials: &[RegistryCredential<'_>],
) -> Result<Vec<u8>, DockerConfigError> {
    let mut config = parse(existing)?;
    let auths = config
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or(DockerConfigError::AuthsNotObject)?;
    for c in credentials {
        let auth = STANDARD.encode(format!("{}:{}", c.username, c.password));
        auths.insert(
            c.host.to_string(),
            json!({"username": c.username, "password": c.password, "auth": auth}),
        );
    }
    Ok(serde_json::to_vec(&Value::Object(config)).expect("a JSON value always serializes"))
}

/// The hosts that already hold credentials (an `auth`, or a `password`), each with the
/// fingerprint of its entry.
pub fn credentials(existing: Option<&[u8]>) -> Result<BTreeMap<String, String>, DockerConfigError> {
    let config = parse(existing)?;
    let Some(auths) = config.get("auths") else {
        return Ok(BTreeMap::new());
    };
    let auths = auths.as_object().ok_or(DockerConfigError::AuthsNotObject)?;
    Ok(auths
        .iter()
        .filter(|(_, v)| {
            let has = |k: &str| {
                v.get(k)
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty())
            };
            has("auth") || has("password")
        })
        .map(|(host, entry)| (host.clone(), fingerprint(entry)))
        .collect())
}

/// Bytes of SHA-256 kept in a fingerprint: enough to notice any edit, too few to say anything
/// about the password.
const FINGERPRINT_BYTES: usize = 6;

/// A short SHA-256 fingerprint of an `auths` entry's `username`, `password` and `auth`, so
/// that an edit to any of them is noticed. Never holds the password itself.
pub fn fingerprint(entry: &Value) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOST: &str = "123456789012.dkr.ecr.us-west-2.amazonaws.com";

    fn cred(host: &str) -> RegistryCredential<'_> {
        RegistryCredential {
            host,
            username: "AWS",
            password: "pw-1",
        }
    }

    #[test]
    fn fills_an_empty_config() {
        let out = merge(None, &[cred(HOST)]).unwrap();
        let expected = format!(
            r#"{{"auths":{{"{HOST}":{{"username":"AWS","password":"pw-1","auth":"{}"}}}}}}"#,
            STANDARD.encode("AWS:pw-1")
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn keeps_foreign_auths_and_fields_in_place() {
        let existing = br#"{"credsStore":"x","auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz","email":"a@b"},"123456789012.dkr.ecr.us-west-2.amazonaws.com":{"auth":"old"},"quay.io":{"auth":"cQ=="}},"HttpHeaders":{"User-Agent":"me"}}"#;
        let out = merge(Some(existing), &[cred(HOST)]).unwrap();
        let got: Value = serde_json::from_slice(&out).unwrap();
        let before: Value = serde_json::from_slice(existing).unwrap();
        assert_eq!(got["credsStore"], before["credsStore"]);
        assert_eq!(got["HttpHeaders"], before["HttpHeaders"]);
        assert_eq!(got["auths"]["quay.io"], before["auths"]["quay.io"]);
        assert_eq!(
            got["auths"]["https://index.docker.io/v1/"],
            before["auths"]["https://index.docker.io/v1/"]
        );
        assert_eq!(got["auths"][HOST]["password"], "pw-1");
        // Order is kept: the ECR entry stays second.
        let keys: Vec<&String> = got["auths"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["https://index.docker.io/v1/", HOST, "quay.io"]);
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
        assert_eq!(
            merge(Some(b"[1]"), &[cred(HOST)]),
            Err(DockerConfigError::NotObject)
        );
        assert_eq!(
            merge(Some(br#"{"auths":"x"}"#), &[cred(HOST)]),
            Err(DockerConfigError::AuthsNotObject)
        );
    }

    #[test]
    fn json_errors_do_not_echo_content() {
        let err = merge(Some(br#"{"auths":{"h":{"auth":"c2VjcmV0"}}"#), &[]).unwrap_err();
        assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
    }

    #[test]
    fn lists_hosts_that_hold_credentials() {
        let existing =
            br#"{"auths":{"a":{"auth":"eA=="},"b":{"password":"p"},"c":{},"d":{"auth":""}}}"#;
        let hosts = credentials(Some(existing)).unwrap();
        assert_eq!(hosts.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert!(credentials(None).unwrap().is_empty());
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
        for field in ["username", "password", "auth"] {
            let mut edited = v.clone();
            edited["auths"][HOST][field] = json!("garbage");
            assert_ne!(fingerprint(&edited["auths"][HOST]), fp, "{field}");
        }
        v["auths"][HOST]["email"] = json!("a@b");
        assert_eq!(
            fingerprint(&v["auths"][HOST]),
            fp,
            "other fields do not count"
        );
        assert!(!fp.contains("pw-1"));
    }

    proptest! {
        #[test]
        fn foreign_entries_survive_any_merge(
            foreign in proptest::collection::btree_map("[a-z]{1,8}\\.example", "[A-Za-z0-9+/=]{0,16}", 0..5),
            password in "[A-Za-z0-9]{1,32}",
        ) {
            let auths: Map<String, Value> = foreign.iter().map(|(h, a)| (h.clone(), json!({"auth": a}))).collect();
            let existing = serde_json::to_vec(&json!({"auths": auths, "x": [1, 2]})).unwrap();
            let c = RegistryCredential { host: HOST, username: "AWS", password: &password };
            let out: Value = serde_json::from_slice(&merge(Some(&existing), &[c]).unwrap()).unwrap();
            for (h, a) in &foreign {
                prop_assert_eq!(&out["auths"][h]["auth"], &json!(a));
            }
            prop_assert_eq!(&out["x"], &json!([1, 2]));
            let expected_auth = STANDARD.encode(format!("AWS:{password}"));
            prop_assert_eq!(out["auths"][HOST]["auth"].as_str(), Some(expected_auth.as_str()));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = merge(Some(&bytes), &[cred(HOST)]);
            let _ = credentials(Some(&bytes));
        }
    }
}
