//! A Kubernetes list answer, `{"kind":…,"metadata":{…},"items":[{…},{…}]}`, split into its
//! items as its bytes arrive, holding one item at a time. A page of 500 Secrets of 1 MiB each
//! is half a gigabyte as one buffer; item by item it is one Secret, whatever the others hold.
//!
//! Pure: bytes in, pieces out. It finds where values start and end (strings, escapes and
//! nesting included) and leaves checking each piece's syntax to its decoder.

use crate::contract::json_spans::decode_string;

/// A part of the answer, whole.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// One element of `items`.
    Item(&'a [u8]),
    /// The list's own `metadata`: `continue`, `resourceVersion`.
    Metadata(&'a [u8]),
}

/// The answer is not the list it should be. Says where, never what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the list answer from the API server {what} (at byte {at})")]
pub struct SplitError {
    pub at: u64,
    pub what: &'static str,
}

/// Where the splitter is in the answer's grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pos {
    /// Before the top-level `{`.
    Start,
    /// After `{` or `,`: a key, or `}`.
    KeyOrEnd,
    /// Inside a top-level key.
    Key,
    /// After a key.
    Colon,
    /// After `:`: a top-level value.
    Value,
    /// Inside a top-level value (collected when it is `metadata`).
    InValue,
    /// After a top-level value.
    CommaOrEnd,
    /// Inside `items`, where an element or `]` comes.
    ItemOrEnd,
    /// Inside an element of `items`.
    InItem,
    /// After an element.
    ItemCommaOrEnd,
    /// After the top-level `}`: only whitespace.
    Done,
}

/// The value being scanned: nesting, and string state.
#[derive(Debug, Clone, Copy, Default)]
struct Scan {
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// A number, `true`, `false` or `null`: it ends at the first byte that is not part of it.
    scalar: bool,
}

enum Step {
    More,
    /// The value ended with this byte.
    Ended,
    /// The value ended before this byte, which belongs to what follows.
    EndedBefore,
}

impl Scan {
    fn start(byte: u8) -> Option<(Self, Step)> {
        let mut scan = Self::default();
        let step = match byte {
            b'{' | b'[' => {
                scan.depth = 1;
                Step::More
            }
            b'"' => {
                scan.in_string = true;
                Step::More
            }
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                scan.scalar = true;
                Step::More
            }
            _ => return None,
        };
        Some((scan, step))
    }

    fn step(&mut self, byte: u8) -> Step {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if byte == b'\\' {
                self.escaped = true;
            } else if byte == b'"' {
                self.in_string = false;
                if self.depth == 0 {
                    return Step::Ended;
                }
            }
            return Step::More;
        }
        if self.scalar {
            return match byte {
                b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r' => Step::EndedBefore,
                _ => Step::More,
            };
        }
        match byte {
            b'"' => self.in_string = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' => {
                self.depth -= 1;
                if self.depth == 0 {
                    return Step::Ended;
                }
            }
            _ => {}
        }
        Step::More
    }
}

/// Which top-level value is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Metadata,
    Other,
}

/// Longest top-level key read; `items` and `metadata` are short, anything longer is neither.
const MAX_KEY: usize = 64;

pub struct ListSplitter {
    pos: Pos,
    scan: Scan,
    key: Vec<u8>,
    key_escaped: bool,
    field: Field,
    /// The element or `metadata` being collected.
    buf: Vec<u8>,
    seen_items: bool,
    max_piece: usize,
    /// Bytes fed before the current chunk, for error positions.
    offset: u64,
}

impl ListSplitter {
    /// `max_piece`: the largest item (or `metadata`) accepted, in bytes.
    pub fn new(max_piece: usize) -> Self {
        Self {
            pos: Pos::Start,
            scan: Scan::default(),
            key: Vec::new(),
            key_escaped: false,
            field: Field::Other,
            buf: Vec::new(),
            seen_items: false,
            max_piece,
            offset: 0,
        }
    }

    /// Reads the next bytes of the answer, giving each piece to `out` as soon as it is whole.
    pub fn feed<E>(
        &mut self,
        chunk: &[u8],
        out: &mut impl FnMut(Piece<'_>) -> Result<(), E>,
    ) -> Result<(), FeedError<E>> {
        let mut i = 0;
        // Where the bytes being collected started in this chunk.
        let mut from: Option<usize> = None;
        while i < chunk.len() {
            let byte = chunk[i];
            let at = self.offset + i as u64;
            let err = |what| FeedError::Split(SplitError { at, what });
            match self.pos {
                Pos::InItem | Pos::InValue => match self.scan.step(byte) {
                    Step::More => {}
                    step => {
                        let end = match step {
                            Step::Ended => i + 1,
                            _ => i,
                        };
                        let collecting = self.pos == Pos::InItem || self.field == Field::Metadata;
                        if collecting {
                            let start = from.take().unwrap_or(0);
                            self.collect(&chunk[start..end], at)?;
                            let piece = match self.pos {
                                Pos::InItem => Piece::Item(&self.buf),
                                _ => Piece::Metadata(&self.buf),
                            };
                            out(piece).map_err(FeedError::Piece)?;
                            self.buf.clear();
                        }
                        self.pos = match self.pos {
                            Pos::InItem => Pos::ItemCommaOrEnd,
                            _ => Pos::CommaOrEnd,
                        };
                        if matches!(step, Step::EndedBefore) {
                            continue;
                        }
                    }
                },
                _ if matches!(byte, b' ' | b'\t' | b'\n' | b'\r') && self.pos != Pos::Key => {}
                Pos::Start => match byte {
                    b'{' => self.pos = Pos::KeyOrEnd,
                    _ => return Err(err("is not a JSON object")),
                },
                Pos::KeyOrEnd => match byte {
                    b'"' => {
                        self.key.clear();
                        self.key_escaped = false;
                        self.pos = Pos::Key;
                    }
                    b'}' => self.pos = Pos::Done,
                    _ => return Err(err("has something other than a key where one belongs")),
                },
                Pos::Key => {
                    if self.key_escaped {
                        self.key_escaped = false;
                    } else if byte == b'\\' {
                        self.key_escaped = true;
                    } else if byte == b'"' {
                        self.pos = Pos::Colon;
                        i += 1;
                        continue;
                    }
                    if self.key.len() <= MAX_KEY {
                        self.key.push(byte);
                    }
                }
                Pos::Colon => match byte {
                    b':' => self.pos = Pos::Value,
                    _ => return Err(err("has a key without a colon")),
                },
                Pos::Value => {
                    let key = if self.key.len() > MAX_KEY {
                        Vec::new()
                    } else {
                        let mut quoted = Vec::with_capacity(self.key.len() + 2);
                        quoted.push(b'"');
                        quoted.extend_from_slice(&self.key);
                        quoted.push(b'"');
                        decode_string(&quoted)
                    };
                    if key == b"items" && byte == b'[' {
                        if self.seen_items {
                            return Err(err("has two items fields"));
                        }
                        self.seen_items = true;
                        self.pos = Pos::ItemOrEnd;
                    } else {
                        self.field = if key == b"metadata" {
                            Field::Metadata
                        } else {
                            Field::Other
                        };
                        if key == b"items" && byte != b'n' {
                            return Err(err("has an items field that is not an array"));
                        }
                        let Some((scan, step)) = Scan::start(byte) else {
                            return Err(err("has something other than a JSON value"));
                        };
                        self.scan = scan;
                        self.pos = Pos::InValue;
                        if self.field == Field::Metadata {
                            from = Some(i);
                        }
                        debug_assert!(matches!(step, Step::More));
                    }
                }
                Pos::CommaOrEnd => match byte {
                    b',' => self.pos = Pos::KeyOrEnd,
                    b'}' => self.pos = Pos::Done,
                    _ => return Err(err("has something other than , or } after a value")),
                },
                Pos::ItemOrEnd => match byte {
                    b']' => self.pos = Pos::CommaOrEnd,
                    _ => {
                        let Some((scan, _)) = Scan::start(byte) else {
                            return Err(err("has an item that is not a JSON value"));
                        };
                        self.scan = scan;
                        self.pos = Pos::InItem;
                        from = Some(i);
                    }
                },
                Pos::ItemCommaOrEnd => match byte {
                    b',' => self.pos = Pos::ItemOrEnd,
                    b']' => self.pos = Pos::CommaOrEnd,
                    _ => return Err(err("has something other than , or ] after an item")),
                },
                Pos::Done => return Err(err("goes on after its end")),
            }
            i += 1;
        }
        // Carry what is being collected over to the next chunk.
        let collecting =
            self.pos == Pos::InItem || (self.pos == Pos::InValue && self.field == Field::Metadata);
        if collecting {
            let at = self.offset + chunk.len() as u64;
            self.collect(&chunk[from.unwrap_or(0)..], at)?;
        }
        self.offset += chunk.len() as u64;
        Ok(())
    }

    fn collect<E>(&mut self, bytes: &[u8], at: u64) -> Result<(), FeedError<E>> {
        if self.buf.len() + bytes.len() > self.max_piece {
            return Err(FeedError::Split(SplitError {
                at,
                what: "has an item larger than kubeecr reads",
            }));
        }
        let need = self.buf.len() + bytes.len();
        if need > self.buf.capacity() {
            // Doubling, but never past the bound.
            let target = need.max(self.buf.capacity() * 2).min(self.max_piece);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The answer ended: it must have been whole.
    pub fn finish(&self) -> Result<(), SplitError> {
        match self.pos {
            Pos::Done => Ok(()),
            // A scalar at the very end has nothing after it to end it.
            _ => Err(SplitError {
                at: self.offset,
                what: "ended before the list did",
            }),
        }
    }
}

/// Why feeding stopped: the answer, or what `out` said of a piece.
#[derive(Debug, PartialEq, Eq)]
pub enum FeedError<E> {
    Split(SplitError),
    Piece(E),
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    /// Items and metadata of `answer` fed in chunks of `size`, as values.
    fn split(answer: &[u8], size: usize) -> Result<(Vec<Value>, Vec<Value>), SplitError> {
        let mut splitter = ListSplitter::new(1 << 20);
        let (mut items, mut meta) = (Vec::new(), Vec::new());
        for chunk in answer.chunks(size.max(1)) {
            splitter
                .feed(chunk, &mut |piece| -> Result<(), ()> {
                    match piece {
                        Piece::Item(b) => items.push(serde_json::from_slice(b).unwrap()),
                        Piece::Metadata(b) => meta.push(serde_json::from_slice(b).unwrap()),
                    }
                    Ok(())
                })
                .map_err(|e| match e {
                    FeedError::Split(e) => e,
                    FeedError::Piece(()) => unreachable!(),
                })?;
        }
        splitter.finish()?;
        Ok((items, meta))
    }

    #[test]
    fn splits_a_list_as_the_api_server_writes_it() {
        let answer = br#"{"kind":"SecretList","apiVersion":"v1","metadata":{"resourceVersion":"7","continue":"abc"},"items":[{"metadata":{"name":"a}\"]"},"data":{"x":"e30="}},{"metadata":{"name":"b"}}]}"#;
        for size in [1, 2, 3, 7, 64, 4096] {
            let (items, meta) = split(answer, size).unwrap();
            assert_eq!(items.len(), 2, "chunks of {size}");
            assert_eq!(items[0]["metadata"]["name"], "a}\"]");
            assert_eq!(items[1], json!({"metadata": {"name": "b"}}));
            assert_eq!(meta, [json!({"resourceVersion": "7", "continue": "abc"})]);
        }
    }

    #[test]
    fn whitespace_empty_lists_and_other_fields() {
        let answer = b" {\n \"items\" : [ ] , \"kind\" : 1.5e3 , \"x\" : [ {\"items\":[1]} ] , \"n\":null}\n";
        assert_eq!(split(answer, 3).unwrap(), (vec![], vec![]));
        let answer = br#"{"items":null,"metadata":{}}"#;
        assert_eq!(split(answer, 5).unwrap(), (vec![], vec![json!({})]));
        // Items and metadata in either order; escaped keys name the same fields.
        let answer = br#"{"\u0069tems":[{"a":1},"s",2],"metadata":{"continue":""}}"#;
        let (items, meta) = split(answer, 2).unwrap();
        assert_eq!(items, [json!({"a": 1}), json!("s"), json!(2)]);
        assert_eq!(meta.len(), 1);
    }

    #[test]
    fn what_is_not_a_list_is_refused_by_position() {
        for (answer, what) in [
            (&b"[1]"[..], "is not a JSON object"),
            (b"{\"items\":[{\"a\":1}", "ended before the list did"),
            (b"{\"items\":[{\"a\":1}]", "ended before the list did"),
            (b"{\"items\":{\"a\":1}}", "not an array"),
            (b"{\"items\":[1] 2}", "after a value"),
            (b"{\"items\":[1 2]}", "after an item"),
            (b"{\"items\":[],\"items\":[]}", "two items fields"),
            (b"{} x", "goes on after its end"),
            (b"{\"a\" 1}", "without a colon"),
            (b"{\"a\":}", "other than a JSON value"),
        ] {
            let err = split(answer, 3).unwrap_err();
            assert!(err.to_string().contains(what), "{answer:?}: {err}");
        }
    }

    #[test]
    fn an_item_over_the_bound_is_refused_without_growing_past_it() {
        let big = format!(r#"{{"items":[{{"data":"{}"}}]}}"#, "A".repeat(5000));
        let mut splitter = ListSplitter::new(4096);
        let result = big
            .as_bytes()
            .chunks(100)
            .try_for_each(|c| splitter.feed(c, &mut |_: Piece<'_>| -> Result<(), ()> { Ok(()) }));
        let Err(FeedError::Split(e)) = result else {
            panic!("{result:?}")
        };
        assert!(e.to_string().contains("larger than kubeecr reads"), "{e}");
        assert!(splitter.buf.capacity() <= 4096);
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[ -~é\"\\\\]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\"\\\\\\]\\}]{0,5}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any items, any other fields, any chunking: the same items as serde_json reads.
        #[test]
        fn agrees_with_serde_json(items in prop::collection::vec(value(), 0..6), other in value(), pretty in any::<bool>(), size in 1usize..40) {
            let list = json!({"kind": "SecretList", "other": other, "metadata": {"resourceVersion": "1"}, "items": items});
            let text = if pretty { serde_json::to_vec_pretty(&list) } else { serde_json::to_vec(&list) }.unwrap();
            let (got, meta) = split(&text, size).unwrap();
            prop_assert_eq!(got, items);
            prop_assert_eq!(meta, vec![json!({"resourceVersion": "1"})]);
        }

        /// Cut or flipped answers never panic.
        #[test]
        fn broken_answers_never_panic(items in prop::collection::vec(value(), 0..4), cut in any::<prop::sample::Index>(), byte in any::<u8>(), size in 1usize..40) {
            let mut text = serde_json::to_vec(&json!({"items": items})).unwrap();
            let at = cut.index(text.len());
            let _ = split(&text[..at], size);
            text[at] = byte;
            let mut splitter = ListSplitter::new(1 << 16);
            for chunk in text.chunks(size) {
                if splitter.feed(chunk, &mut |_: Piece<'_>| -> Result<(), ()> { Ok(()) }).is_err() {
                    break;
                }
            }
        }
    }
}
