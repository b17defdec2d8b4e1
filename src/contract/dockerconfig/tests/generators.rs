//! Generators of JSON text: any whitespace, number spellings, escapes, duplicate keys and
//! nesting, all valid UTF-8 without lone surrogates so that serde_json can read the result;
//! and whole configs with the merge each should give.

use proptest::prelude::*;

use super::{HOST, fresh};

fn ws() -> impl Strategy<Value = String> {
    "[ \t\n\r]{0,2}"
}

pub(super) fn string_text() -> impl Strategy<Value = String> {
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

pub(super) fn leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "-?(0|[1-9][0-9]{0,24})(\\.[0-9]{1,4})?([eE][+-]?[0-9]{1,2})?",
        4 => string_text(),
        1 => prop::sample::select(vec!["true", "false", "null"]).prop_map(str::to_string),
        1 => (1..100usize).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d))),
        1 => (1..60usize).prop_map(|d| format!("{}0{}", r#"{"a":"#.repeat(d), "}".repeat(d))),
    ]
}

pub(super) fn value_text() -> impl Strategy<Value = String> {
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

pub(super) fn object_text(members: &[String], before: &str, after: &str) -> String {
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
pub(super) struct Case {
    pub(super) input: String,
    pub(super) expected: String,
    /// The decoded key of the `auths` that counts, when there is one.
    pub(super) auths_key: Option<String>,
    /// Where the JSON value of `input` ends: only whitespace follows.
    pub(super) input_end: usize,
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
            let input_object = object_text(&input_members, &a, &b);
            let input_end = lead.len() + input_object.len();
            let input = format!("{lead}{input_object}{trail}");
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
                input_end,
            }
        })
}

/// The test's own reading of the kubelet's rule, for the keys generated here: a
/// lower-case scheme, then the host, then nothing, `/`, `/v1/` or `/v2/`.
pub(super) fn names_host(key: &str) -> bool {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    rest.strip_prefix(HOST)
        .is_some_and(|path| ["", "/", "/v1/", "/v2/"].contains(&path))
}

pub(super) fn password_and_case() -> impl Strategy<Value = (String, Case)> {
    "[ -~é\n\t]{1,24}".prop_flat_map(|pw| (Just(pw.clone()), case(&pw)))
}
