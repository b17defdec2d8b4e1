//! The scanner against serde_json, and strings decoded as Go decodes them.

use proptest::prelude::*;

use super::{decode_string, scan_value, skip_ws};

#[test]
fn strings_decode_as_go_decodes_them() {
    assert_eq!(
        decode_string(br#""a\u00e9\uD83D\uDE00\/\"\\\b\f\n\r\t""#),
        "aé😀/\"\\\u{8}\u{c}\n\r\t".as_bytes()
    );
    assert_eq!(decode_string(br#""\ud800x""#), "\u{fffd}x".as_bytes());
    assert_eq!(decode_string(br#""\ud800\u0041""#), "\u{fffd}A".as_bytes());
    assert_eq!(
        decode_string(br#""\udc00\ud800""#),
        "\u{fffd}\u{fffd}".as_bytes()
    );
    assert_eq!(decode_string(b"\"\xff\""), b"\xff");
}

/// Near-JSON: JSON with now and then one of its usual mistakes, or loose characters. No
/// `d`, so no surrogate escapes, where serde_json is stricter than RFC 8259 and Go.
fn json_ish() -> impl Strategy<Value = String> {
    let pick = |v: Vec<&'static str>| prop::sample::select(v).prop_map(str::to_string);
    let atom = prop_oneof![
        6 => pick(vec![
            "0", "-0.5e-3", "1E+2", "10", "true", "false", "null", r#""a""#, r#""\u00e9""#,
            r#""\/\b""#, "[]", "{}", " 1 ",
        ]),
        1 => pick(vec![
            "01", "1.", ".5", "-", "1e", "+1", "-a", "tru", "nul", "True", r#""\x""#,
            r#""\u12""#, "\"a", "\"\n\"", "\"\t\"", "x", "", "'a'",
        ]),
    ];
    let tree = atom.prop_recursive(3, 16, 3, |inner| {
        let sep = prop_oneof![8 => Just(","), 1 => Just(""), 1 => Just(",,")];
        let end = prop_oneof![8 => Just(""), 1 => Just(",")];
        let key = prop_oneof![8 => Just(r#""k""#), 1 => Just("k"), 1 => Just("'k'")];
        let colon = prop_oneof![8 => Just(":"), 1 => Just(""), 1 => Just("=")];
        prop_oneof![
            (
                prop::collection::vec((inner.clone(), sep.clone()), 0..3),
                end.clone()
            )
                .prop_map(|(items, end)| {
                    let n = items.len();
                    let body: String = items
                        .iter()
                        .enumerate()
                        .map(|(i, (v, s))| {
                            if i + 1 < n {
                                format!("{v}{s}")
                            } else {
                                v.clone()
                            }
                        })
                        .collect();
                    format!("[{body}{end}]")
                }),
            (prop::collection::vec((key, colon, inner, sep), 0..3), end).prop_map(
                |(members, end)| {
                    let n = members.len();
                    let body: String = members
                        .iter()
                        .enumerate()
                        .map(|(i, (k, c, v, s))| {
                            format!("{k}{c}{v}{}", if i + 1 < n { *s } else { "" })
                        })
                        .collect();
                    format!("{{{body}{end}}}")
                }
            ),
        ]
    });
    let trail = prop_oneof![8 => Just(""), 1 => Just(" x"), 1 => Just("}")];
    prop_oneof![
        4 => (tree, trail).prop_map(|(t, x)| t + x),
        1 => "[{}\\[\\]\":,019.eE+\\-\\\\ \nnultrfasbx]{0,24}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The scanner accepts what serde_json accepts (short texts, so no depth limit).
    #[test]
    fn syntax_agrees_with_serde_json(text in json_ish()) {
        let bytes = text.as_bytes();
        let start = skip_ws(bytes, 0);
        let ours = scan_value(bytes, start).is_ok_and(|(end, _)| skip_ws(bytes, end) == bytes.len());
        let theirs = serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok();
        prop_assert_eq!(ours, theirs);
    }
}
