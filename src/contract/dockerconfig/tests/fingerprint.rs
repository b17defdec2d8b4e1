//! Fingerprints and what `credentials` says of each host.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{HOST, cred, fresh, serde_fingerprint};
use crate::contract::dockerconfig::fingerprint::{FINGERPRINT_BYTES, MIXED};
use crate::contract::dockerconfig::{credentials, fingerprint, merge};

#[test]
fn credentials_of_mixed_forms() {
    let entry = fresh("pw-1");
    let fp = fingerprint(entry.as_bytes());
    let same =
        format!(r#"{{"auths":{{"https://{HOST}":{entry},"{HOST}/":{entry},"{HOST}":{entry}}}}}"#);
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
