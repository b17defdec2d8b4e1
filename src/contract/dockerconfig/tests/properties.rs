//! Properties over generated configs: the merge changes only own entries, is idempotent and
//! leaves every form with the token; nothing panics; fingerprints agree with serde_json.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use serde_json::Value;

use super::generators::{
    leaf, names_host, object_text, password_and_case, string_text, value_text,
};
use super::{HOST, cred, fresh, serde_fingerprint};
use crate::contract::dockerconfig::{RegistryCredential, credentials, fingerprint, merge};

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

    #[test]
    fn fingerprint_agrees_with_serde_json(entry in value_text(), fields in prop::collection::vec((prop::sample::select(vec!["username", "password", "auth", "email"]), prop_oneof![string_text(), leaf()]), 0..5)) {
        let members: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).chain([format!("\"x\":{entry}")]).collect();
        let text = object_text(&members, "", "");
        let v: Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(fingerprint(text.as_bytes()), serde_fingerprint(&v));
    }
}
