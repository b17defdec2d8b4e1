//! The merge and the strip: every foreign byte kept, own entries rewritten, same bytes again.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::{HOST, OTHER, cred, fresh, merged, t};
use crate::contract::dockerconfig::{
    DockerConfigError, RegistryCredential, credentials, merge, strip,
};

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
    // A lone surrogate is valid JSON syntax; Go reads it as U+FFFD. Kept as written.
    assert_eq!(
        merged(r#"{"x":"\ud800"}"#, &[]),
        r#"{"x":"\ud800","auths":{}}"#
    );
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
