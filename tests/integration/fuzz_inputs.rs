//! Bad input at volume: proptest used as a fuzzer over the three inputs a cluster user can
//! hand kubeecr: the `deft.com/kubeecr` annotation, a Secret's existing `.dockerconfigjson`,
//! and an AdmissionReview body. None may panic; anything unusable gets an error that names
//! the problem and quotes little; whatever is kept keeps every foreign entry.
//!
//! Cases per target: `KUBEECR_FUZZ_CASES` (default 5000); each target prints how many it ran.
//! Coverage-guided fuzzing of the same functions, with checks of its own (`fuzz/checks.rs`):
//! `scripts/fuzz.sh`, nightly in CI, and replayed by `fuzz_replay.rs` in every run.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kubeecr::admission::decision::{self, MutationPlan};
use kubeecr::admission::review;
use kubeecr::contract::annotation::{
    REGISTRIES_ANNOTATION, ROLE_ANNOTATION, SecretRef, binding_of,
};
use kubeecr::contract::dockerconfig::{
    DockerConfigError, RegistryCredential, credentials, fingerprint, merge,
};
use kubeecr::contract::partition::Regions;
use kubeecr::contract::policy::Policy;
use kubeecr::contract::token::{FetchedToken, Token, decode};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

const HOST: &str = "123456789012.dkr.ecr.us-west-2.amazonaws.com";
/// Longest error message a person should have to read; quotes are cut at 64 characters.
const LONGEST_MESSAGE: usize = 1024;

fn cases() -> u32 {
    std::env::var("KUBEECR_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5000)
}

/// Runs `test` on `cases()` inputs from `strategy`; a panic is a failure, shrunk as any other.
fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let cases = cases();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let started = std::time::Instant::now();
    if let Err(e) = runner.run(&strategy, test) {
        panic!("fuzz {name}: {e}");
    }
    println!(
        "fuzz {name}: {cases} cases, no failure ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
}

/// An error a person reads: one line, printable, bounded.
fn readable(message: &str) -> Result<(), TestCaseError> {
    prop_assert!(message.len() <= LONGEST_MESSAGE, "{} bytes", message.len());
    prop_assert!(
        !message.chars().any(char::is_control),
        "control character in {message:?}"
    );
    Ok(())
}

// ---- the annotation ----

fn annotation_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[0-9]{12}",
        "[0-9]{0,14}",
        Just("/".to_string()),
        Just(",".to_string()),
        Just(" ".to_string()),
        prop::sample::select(vec![
            "us-west-2",
            "eu-central-1",
            "cn-north-1",
            "us-gov-east-1",
            "eusc-de-east-1",
            "us-x1-1",
            "US-WEST-2",
            "",
        ])
        .prop_map(str::to_string),
        "[ -~]{0,8}",
        "\\PC{0,4}",
    ];
    prop_oneof![
        4 => prop::collection::vec(piece, 0..48).prop_map(|v| v.concat()),
        1 => ".{0,300}",
        1 => prop::collection::vec(any::<char>(), 0..3000).prop_map(String::from_iter),
    ]
}

fn role_text() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some("arn:aws:iam::123456789012:role/pull".to_string())),
        1 => "arn:aws[a-z-]{0,6}:iam::[0-9]{10,13}:role/[ -~]{0,70}".prop_map(Some),
        1 => ".{0,200}".prop_map(Some),
    ]
}

#[test]
fn the_annotation_parser_refuses_clearly_and_bounds_what_it_accepts() {
    let secret = SecretRef {
        namespace: "team-a".into(),
        name: "pull".into(),
    };
    let regions = Regions::default();
    fuzz(
        "annotation",
        (annotation_text(), role_text()),
        |(value, role)| {
            let mut annotations = BTreeMap::from([(REGISTRIES_ANNOTATION.to_string(), value)]);
            if let Some(role) = role {
                annotations.insert(ROLE_ANNOTATION.to_string(), role);
            }
            match binding_of(
                &secret,
                &kubeecr::contract::marks::Marks::of_annotations(&annotations),
                &regions,
            ) {
                Ok(binding) => {
                    let binding = binding.expect("annotated");
                    prop_assert!(!binding.registries.is_empty());
                    prop_assert!(binding.registries.len() <= 20);
                    let distinct: std::collections::BTreeSet<&str> =
                        binding.registries.iter().map(|r| r.region()).collect();
                    prop_assert!(distinct.len() <= 10);
                    for r in &binding.registries {
                        prop_assert!(regions.partition_of(r.region()).is_some());
                        prop_assert_eq!(r.account().len(), 12);
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    prop_assert!(
                        message.starts_with("team-a/pull: deft.com/kubeecr"),
                        "{message}"
                    );
                    readable(&message)?;
                }
            }
            Ok(())
        },
    );
}

// ---- the existing .dockerconfigjson ----

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("auths".to_string()),
        Just(HOST.to_string()),
        Just(format!("https://{HOST}")),
        Just(format!("{}/v2/", HOST.to_uppercase())),
        Just("quay.io".to_string()),
        Just("https://index.docker.io/v1/".to_string()),
        "[a-z.]{0,12}",
        "\\PC{0,6}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// A `.dockerconfigjson` with foreign entries, kubeecr's own in any form, other keys.
fn docker_config() -> impl Strategy<Value = Value> {
    let entry = prop_oneof![
        json_value(),
        ("\\PC{0,8}", "\\PC{0,8}").prop_map(|(u, p)| json!({
            "username": u, "password": p, "auth": STANDARD.encode(format!("{u}:{p}")),
        })),
    ];
    (
        prop::collection::vec((key(), entry), 0..8),
        prop::collection::vec((key(), json_value()), 0..3),
    )
        .prop_map(|(auths, others)| {
            let mut top: serde_json::Map<String, Value> = others.into_iter().collect();
            top.insert("auths".into(), Value::Object(auths.into_iter().collect()));
            Value::Object(top)
        })
}

/// Bytes as a Secret may hold them: JSON of every shape, compact or pretty, cut or flipped,
/// or no JSON at all.
fn existing_bytes() -> impl Strategy<Value = Vec<u8>> {
    let text = prop_oneof![
        3 => docker_config(),
        1 => json_value(),
    ]
    .prop_flat_map(|v| {
        prop_oneof![
            Just(serde_json::to_vec(&v).unwrap()),
            Just(serde_json::to_vec_pretty(&v).unwrap()),
        ]
    });
    prop_oneof![
        4 => text.clone(),
        2 => (text, any::<prop::sample::Index>(), any::<u8>(), any::<bool>()).prop_map(
            |(mut bytes, at, byte, cut)| {
                if !bytes.is_empty() {
                    let at = at.index(bytes.len());
                    if cut { bytes.truncate(at) } else { bytes[at] = byte }
                }
                bytes
            }
        ),
        1 => prop::collection::vec(any::<u8>(), 0..4096),
    ]
}

/// Whether an `auths` key names `HOST`, as Docker reads it: no scheme, up to the first `/`,
/// any case.
/// The test's own reading of the kubelet's keyring: an entry serves the whole host when its
/// key, after a lower-case scheme, a query or fragment and any `user@`, is the host alone or
/// with `/`, `/v1/...` or `/v2/...` that leave no path.
fn names_host(key: &str) -> bool {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let rest = rest.split(['#']).next().unwrap_or(rest);
    let rest = rest.split(['?']).next().unwrap_or(rest);
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let path = ["/v1/", "/v2/"]
        .iter()
        .find_map(|p| path.strip_prefix(&p[..3]).filter(|r| r.starts_with('/')))
        .unwrap_or(path);
    host == HOST && (path.is_empty() || path == "/")
}

fn names_auths_as_go_does(key: &str) -> bool {
    key.eq_ignore_ascii_case("auths")
        || (key.chars().count() == 5 && key.contains(['\u{17f}', '\u{212a}']))
}

/// The password of every token the fuzz targets fill with.
const PASSWORD: &str = "fuzz-password";

/// The fingerprint kubeecr records for an entry holding `PASSWORD`.
fn fresh_fingerprint() -> String {
    let entry = json!({
        "username": "AWS",
        "password": PASSWORD,
        "auth": STANDARD.encode(format!("AWS:{PASSWORD}")),
    });
    fingerprint(&serde_json::to_vec(&entry).unwrap())
}

/// What the fuzz targets saw, so that each can say its cases reached the paths it checks.
#[derive(Debug, Default)]
struct Reached {
    /// Merges serde_json could judge, and that kubeecr made.
    merged: std::cell::Cell<usize>,
    /// Merges kubeecr made of bytes serde_json cannot read, checked with kubeecr's parser.
    merged_unjudged: std::cell::Cell<usize>,
    /// Reviews whose config kubeecr filled.
    filled: std::cell::Cell<usize>,
}

fn bump(counter: &std::cell::Cell<usize>) {
    counter.set(counter.get() + 1);
}

/// The merge keeps every foreign entry and key, or refuses with a clear error; it refuses
/// exactly what is not a JSON object with an object `auths`.
fn check_merge(bytes: &[u8], reached: &Reached) -> Result<(), TestCaseError> {
    let password = PASSWORD;
    let cred = RegistryCredential {
        host: HOST,
        username: "AWS",
        password,
    };
    let result = merge(Some(bytes), &[cred]);
    let parsed: Result<Value, _> = serde_json::from_slice(bytes);
    // Go's encoding/json, and so the API server and the kubelet, take invalid UTF-8 and lone
    // surrogates in strings (as U+FFFD; serde_json says "lone leading surrogate in hex
    // escape" or "unexpected end of hex escape") and skip numbers beyond f64 in fields they
    // ignore, where serde_json refuses them; kubeecr keeps such bytes as they are. serde_json
    // cannot judge those inputs: kubeecr's own parser then says what the merge wrote, and
    // every host but kubeecr's must hold what it held before.
    if let Err(e) = &parsed
        && ["unicode", "hex escape", "number out of range"]
            .iter()
            .any(|what| e.to_string().contains(what))
    {
        match result {
            Ok(out) => {
                bump(&reached.merged_unjudged);
                let before = credentials(Some(bytes)).map_err(|e| {
                    TestCaseError::fail(format!("merged what kubeecr cannot read: {e}"))
                })?;
                let after = credentials(Some(&out)).map_err(|e| {
                    TestCaseError::fail(format!("kubeecr cannot read what it wrote: {e}"))
                })?;
                let mut expected = before;
                expected.insert(HOST.to_string(), fresh_fingerprint());
                prop_assert_eq!(after, expected, "the host's fresh credentials, others kept");
                let again = merge(
                    Some(&out),
                    &[RegistryCredential {
                        host: HOST,
                        username: "AWS",
                        password,
                    }],
                );
                prop_assert_eq!(again.as_deref(), Ok(&out[..]), "merged again: the same");
            }
            Err(e) => {
                prop_assert_eq!(
                    credentials(Some(bytes)).err(),
                    Some(e.clone()),
                    "the merge and kubeecr's reading refuse alike"
                );
                readable(&e.to_string())?;
            }
        }
        return Ok(());
    }
    if matches!((&parsed, &result), (Ok(Value::Object(_)), Ok(_))) {
        bump(&reached.merged);
    }
    match (parsed, result) {
        (Err(_), Err(DockerConfigError::NotJson(_))) => {}
        (Err(e), Err(refused)) => {
            prop_assert!(false, "not JSON ({e}), refused as {refused}")
        }
        (Err(e), Ok(_)) => prop_assert!(false, "accepted what serde_json refuses: {e}"),
        // Go matches field names case-insensitively, so `AUTHS` is `auths` to the kubelet and
        // to kubeecr: the unit tests cover which one counts; here they would only confuse.
        (Ok(Value::Object(before)), _)
            if before
                .keys()
                .any(|k| k != "auths" && names_auths_as_go_does(k)) => {}
        (Ok(Value::Object(before)), Ok(out)) => {
            let after: Value = serde_json::from_slice(&out).expect("the merge writes JSON");
            let after = after.as_object().expect("an object");
            for (k, v) in &before {
                if k != "auths" {
                    prop_assert_eq!(after.get(k), Some(v), "top-level {:?} kept", k);
                }
            }
            let none = serde_json::Map::new();
            let old = match before.get("auths") {
                Some(auths) => auths.as_object().expect("accepted, so an object"),
                None => &none,
            };
            let new = after.get("auths").and_then(Value::as_object);
            let new = new.expect("auths is an object after the merge");
            for (k, v) in old.iter().filter(|(k, _)| !names_host(k)) {
                prop_assert_eq!(new.get(k), Some(v), "foreign entry {:?} kept", k);
            }
            let own: Vec<_> = new.iter().filter(|(k, _)| names_host(k)).collect();
            prop_assert!(new.contains_key(HOST), "the bare host is always written");
            let auth = base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("AWS:{password}"),
            );
            for (_, entry) in own {
                prop_assert_eq!(entry["username"].as_str(), Some("AWS"));
                prop_assert_eq!(entry["password"].as_str(), Some(password));
                prop_assert_eq!(entry["auth"].as_str(), Some(auth.as_str()));
            }
            prop_assert_eq!(new.len(), old.len() + usize::from(!old.contains_key(HOST)));
        }
        (Ok(Value::Object(before)), Err(e)) => {
            prop_assert!(
                e == DockerConfigError::AuthsNotObject
                    && before.get("auths").is_some_and(|a| !a.is_object()),
                "refused a usable object: {e}"
            );
        }
        (Ok(_), Err(e)) => prop_assert_eq!(e, DockerConfigError::NotObject),
        (Ok(_), Ok(_)) => prop_assert!(false, "accepted JSON that is not an object"),
    }
    if let Err(e) = merge(Some(bytes), &[]) {
        readable(&e.to_string())?;
    }
    Ok(())
}

#[test]
fn the_merge_keeps_foreign_entries_or_refuses_clearly() {
    let reached = Reached::default();
    fuzz("dockerconfigjson merge", existing_bytes(), |bytes| {
        check_merge(&bytes, &reached)
    });
    println!("fuzz dockerconfigjson merge: {reached:?}");
    // Not all refused: the checks of what a merge writes ran, on both paths (about half and
    // 4% of the cases; with fewer than 1,000 cases they may not come up).
    if cases() >= 1000 {
        assert!(reached.merged.get() > 0, "{reached:?}");
        assert!(reached.merged_unjudged.get() > 0, "{reached:?}");
    }
}

/// Depth and size that a generator won't reach: 100,000 levels of nesting inside a foreign
/// entry (kept byte for byte, no stack overflow), the same depth unclosed (refused), and a
/// 3 MiB config (merged).
#[test]
fn deep_and_huge_configs() {
    let cred = || RegistryCredential {
        host: HOST,
        username: "AWS",
        password: "pw",
    };
    let depth = 100_000;
    let deep = format!(
        r#"{{"auths":{{"quay.io":{{"x":{}{}}}}}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let out = merge(Some(deep.as_bytes()), &[cred()]).expect("deep but valid");
    let kept = format!(
        r#""quay.io":{{"x":{}{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    assert!(String::from_utf8(out).unwrap().contains(&kept));
    let unclosed = format!(r#"{{"auths":{{"quay.io":{}"#, "[".repeat(depth));
    let refused = merge(Some(unclosed.as_bytes()), &[cred()]).unwrap_err();
    assert!(
        matches!(refused, DockerConfigError::NotJson(_)),
        "{refused}"
    );
    assert!(refused.to_string().len() < 300, "{refused}");

    let entries: Vec<String> = (0..24_000)
        .map(|i| format!(r#""r{i}.example.com":{{"auth":"{}"}}"#, "A".repeat(120)))
        .collect();
    let huge = format!(r#"{{"auths":{{{}}}}}"#, entries.join(","));
    assert!(huge.len() > 3 << 20);
    let out = merge(Some(huge.as_bytes()), &[cred()]).expect("huge but valid");
    assert!(out.starts_with(&huge.as_bytes()[..huge.len() - 2]));
}

// ---- AdmissionReview bodies ----

fn fixtures() -> Vec<Value> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/admission");
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| {
            serde_json::from_slice::<Value>(&std::fs::read(p).unwrap()).unwrap()["review"].clone()
        })
        .collect()
}

/// One change somewhere in the tree: a node replaced, a key removed, or (in
/// `.dockerconfigjson` and the annotation, where it matters most) the value swapped for
/// fuzzed content.
#[derive(Debug, Clone)]
enum Edit {
    Replace(usize, Value),
    Remove(usize),
    Annotation(String),
    Config(Vec<u8>),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        3 => (any::<usize>(), json_value()).prop_map(|(at, v)| Edit::Replace(at, v)),
        1 => any::<usize>().prop_map(Edit::Remove),
        2 => annotation_text().prop_map(Edit::Annotation),
        2 => existing_bytes().prop_map(Edit::Config),
    ];
    prop::collection::vec(edit, 0..4)
}

/// Visits every node, counting in document order; `f` may change the one at `target`.
fn visit(v: &mut Value, target: usize, seen: &mut usize, f: &mut dyn FnMut(&mut Value, bool)) {
    let here = *seen == target;
    *seen += 1;
    f(v, here);
    match v {
        Value::Array(items) => items.iter_mut().for_each(|i| visit(i, target, seen, f)),
        Value::Object(members) => members.values_mut().for_each(|m| visit(m, target, seen, f)),
        _ => {}
    }
}

fn apply(review: &mut Value, edit: &Edit) {
    let count = {
        let mut n = 0;
        visit(review, usize::MAX, &mut n, &mut |_, _| {});
        n
    };
    match edit {
        Edit::Replace(at, value) => {
            let mut seen = 0;
            visit(review, at % count, &mut seen, &mut |v, here| {
                if here {
                    *v = value.clone();
                }
            });
        }
        Edit::Remove(at) => {
            let mut seen = 0;
            visit(review, at % count, &mut seen, &mut |v, here| {
                if here
                    && let Value::Object(m) = v
                    && let Some(k) = m.keys().next().cloned()
                {
                    m.remove(&k);
                }
            });
        }
        Edit::Annotation(text) => {
            if let Some(a) = review.pointer_mut("/request/object/metadata/annotations")
                && let Some(a) = a.as_object_mut()
            {
                a.insert(REGISTRIES_ANNOTATION.into(), json!(text));
            }
        }
        Edit::Config(bytes) => {
            if let Some(object) = review.pointer_mut("/request/object")
                && let Some(object) = object.as_object_mut()
            {
                object.insert(
                    "data".into(),
                    json!({".dockerconfigjson": STANDARD.encode(bytes)}),
                );
            }
        }
    }
}

fn token() -> Arc<Token> {
    let fetched = FetchedToken {
        authorization_token: STANDARD.encode(format!("AWS:{PASSWORD}")).into(),
        expires_at: None,
    };
    Arc::new(
        decode(
            &fetched,
            jiff::Timestamp::now() + std::time::Duration::from_secs(12 * 3600),
        )
        .unwrap(),
    )
}

/// Decoding, validating and mutating: no panic; a refusal names where the body is wrong; a
/// patch applies to the object, keeps every foreign entry of its config, and what it writes
/// holds the fresh credentials.
fn check_review(body: &[u8], policy: &Policy, reached: &Reached) -> Result<(), TestCaseError> {
    let req = match review::decode(body) {
        Ok(req) => req,
        Err(message) => {
            readable(&message)?;
            return Ok(());
        }
    };
    let validated = decision::validate(&req, policy);
    prop_assert_eq!(&validated.uid, &req.uid);
    let response = match decision::plan_mutation(&req, policy) {
        MutationPlan::Respond(response) => *response,
        MutationPlan::Fill(pending) => {
            let tokens = pending.keys.iter().map(|k| (k.clone(), token())).collect();
            pending.complete(Ok(tokens), false).response
        }
    };
    prop_assert_eq!(&response.uid, &req.uid);
    if let Some(message) = Some(&response.result.message).filter(|m| !m.is_empty()) {
        readable(message)?;
    }
    let Some(patch) = response.patch.as_ref() else {
        return Ok(());
    };
    let patch: json_patch::Patch = serde_json::from_slice(patch).expect("a JSON Patch");
    let mut object =
        serde_json::to_value(req.object.as_ref().expect("a patch needs an object")).unwrap();
    let before = config_of(&object);
    let before_bytes = config_bytes(&object);
    json_patch::patch(&mut object, &patch)
        .map_err(|e| TestCaseError::fail(format!("patch does not apply: {e}")))?;
    let after = config_of(&object);
    let after_bytes = config_bytes(&object);
    if after_bytes == before_bytes {
        return Ok(());
    }
    // kubeecr wrote the config. Read by kubeecr's own parser (which reads what serde_json
    // cannot): every host holding other credentials than before holds exactly the fresh
    // ones, under all its forms, and no host lost its credentials.
    let now = credentials(after_bytes.as_deref())
        .map_err(|e| TestCaseError::fail(format!("wrote a config it cannot read: {e}")))?;
    let then = credentials(before_bytes.as_deref())
        .map_err(|e| TestCaseError::fail(format!("rewrote a config it refuses: {e}")))?;
    let fresh = fresh_fingerprint();
    let mut written = 0;
    for (host, fp) in &now {
        if then.get(host) != Some(fp) {
            prop_assert_eq!(fp, &fresh, "{} holds the fresh credentials", host);
            written += 1;
        }
    }
    for host in then.keys() {
        prop_assert!(now.contains_key(host), "{} lost its credentials", host);
    }
    if written > 0 {
        bump(&reached.filled);
    }
    if before.is_none() && before_bytes.is_some() {
        // serde_json cannot read it (a lone surrogate, a number beyond f64): nothing more it
        // can judge.
        return Ok(());
    }
    prop_assert!(
        after.is_some(),
        "wrote what serde_json cannot read, from what it can"
    );
    // The config changed: it was an object (or absent) with an object `auths` (or none), and
    // every foreign entry is still there.
    let auths = |config: &Option<Value>| match config {
        None => Ok(serde_json::Map::new()),
        Some(Value::Object(top)) => match top.get("auths") {
            None => Ok(serde_json::Map::new()),
            Some(Value::Object(auths)) => Ok(auths.clone()),
            Some(other) => Err(format!("auths is {other}")),
        },
        Some(other) => Err(format!("the config is {other}")),
    };
    let old = auths(&before).map_err(|e| TestCaseError::fail(format!("changed, though {e}")))?;
    let new = auths(&after).map_err(|e| TestCaseError::fail(format!("now {e}")))?;
    for (k, v) in old.iter().filter(|(k, _)| !names_host(k)) {
        prop_assert_eq!(new.get(k), Some(v), "foreign entry {:?} kept", k);
    }
    // Every entry kubeecr changed or added holds the fresh credentials, field by field.
    let auth = STANDARD.encode(format!("AWS:{PASSWORD}"));
    for (k, entry) in new.iter().filter(|(k, v)| old.get(*k) != Some(*v)) {
        prop_assert_eq!(entry["username"].as_str(), Some("AWS"), "{:?}", k);
        prop_assert_eq!(entry["password"].as_str(), Some(PASSWORD), "{:?}", k);
        prop_assert_eq!(entry["auth"].as_str(), Some(auth.as_str()), "{:?}", k);
    }
    Ok(())
}

fn config_bytes(object: &Value) -> Option<Vec<u8>> {
    let b64 = object.pointer("/data/.dockerconfigjson")?.as_str()?;
    STANDARD.decode(b64).ok()
}

/// The config as serde_json reads it; invalid UTF-8 read as U+FFFD, as Go reads it, so that
/// a config holding some is judged too.
fn config_of(object: &Value) -> Option<Value> {
    serde_json::from_str(&String::from_utf8_lossy(&config_bytes(object)?)).ok()
}

#[test]
fn admission_reviews_decode_and_decide_without_panic() {
    let fixtures = fixtures();
    let policy = Policy::default();
    let n = fixtures.len();
    let edited = (0..n, edits()).prop_map(move |(i, edits)| (i, edits));
    let reached = Reached::default();
    fuzz("AdmissionReview (edited fixtures)", edited, |(i, edits)| {
        let mut review = fixtures[i].clone();
        for edit in &edits {
            apply(&mut review, edit);
        }
        check_review(&serde_json::to_vec(&review).unwrap(), &policy, &reached)
    });
    println!("fuzz AdmissionReview (edited fixtures): {reached:?}");
    // Not all refused or left alone: the checks of what a fill writes ran (on about 13% of
    // the cases; with fewer than 1,000 they may not come up).
    if cases() >= 1000 {
        assert!(reached.filled.get() > 0, "{reached:?}");
    }
    let raw = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        "\\PC{0,512}".prop_map(String::into_bytes),
    ];
    fuzz("AdmissionReview (raw bytes)", raw, |bytes| {
        check_review(&bytes, &policy, &Reached::default())
    });
}
