//! What is read as the kubelet reads it, and what is refused: keys, field names, the `auths`
//! that counts, and errors that give a position only.

use super::{HOST, cred, fresh, merged, t};
use crate::contract::dockerconfig::document::keyring_host;
use crate::contract::dockerconfig::{DockerConfigError, credentials, fingerprint, merge};

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
fn the_last_auths_is_the_one_updated() {
    let existing = t(r#"{"auths":{"https://{H}":{"auth":"c3RhbGU="}},"x":1,"auths":{"q":{}}}"#);
    assert_eq!(
        merged(&existing, &[cred(HOST)]),
        t(r#"{"auths":{"https://{H}":{"auth":"c3RhbGU="}},"x":1,"auths":{"q":{},"{H}":{F}}}"#)
    );
    assert!(credentials(Some(existing.as_bytes())).unwrap().is_empty());
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
