//! Label selectors as `k8s.io/apimachinery/pkg/labels.Parse` reads them: comma-separated
//! requirements, all of which must hold: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`,
//! `k notin (a,b)`, `k>1`, `k<1`.
//!
//! Parse errors carry the parser's messages; the real server answers them with 400
//! BadRequest. Where `field.Error` text is rebuilt here, the wording is close to but not
//! checked against the real server's.

use serde_json::Value;

use super::status::ApiError;
use super::validation::{label_value_errors, qualified_name_errors};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    In,
    NotIn,
    Equals,
    NotEquals,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

#[derive(Debug, Clone)]
struct Requirement {
    key: String,
    op: Op,
    values: Vec<String>,
}

/// A parsed selector; the empty selector matches everything.
#[derive(Debug, Clone, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    In,
    NotIn,
    Not,
    NotEquals,
    Equals,
    DoubleEquals,
    Greater,
    Less,
    Open,
    Close,
    Comma,
    End,
}

impl Tok {
    fn literal(&self) -> &str {
        match self {
            Tok::Ident(s) => s,
            Tok::In => "in",
            Tok::NotIn => "notin",
            Tok::Not => "!",
            Tok::NotEquals => "!=",
            Tok::Equals => "=",
            Tok::DoubleEquals => "==",
            Tok::Greater => ">",
            Tok::Less => "<",
            Tok::Open => "(",
            Tok::Close => ")",
            Tok::Comma => ",",
            Tok::End => "",
        }
    }

    /// In a value position, `in` and `notin` are plain identifiers.
    fn as_value(&self) -> Tok {
        match self {
            Tok::In | Tok::NotIn => Tok::Ident(self.literal().to_string()),
            other => other.clone(),
        }
    }
}

fn special(s: &str) -> Option<Tok> {
    Some(match s {
        "!" => Tok::Not,
        "!=" => Tok::NotEquals,
        "=" => Tok::Equals,
        "==" => Tok::DoubleEquals,
        ">" => Tok::Greater,
        "<" => Tok::Less,
        "(" => Tok::Open,
        ")" => Tok::Close,
        "," => Tok::Comma,
        _ => return None,
    })
}

fn is_special(c: char) -> bool {
    "=!(),><".contains(c)
}

fn lex(input: &str) -> Vec<Tok> {
    let chars: Vec<char> = input.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if is_special(c) {
            // Longest run of symbols that is still a token, as the real lexer.
            let mut s = c.to_string();
            i += 1;
            while i < chars.len() && is_special(chars[i]) {
                let longer = format!("{s}{}", chars[i]);
                if special(&longer).is_none() {
                    break;
                }
                s = longer;
                i += 1;
            }
            toks.push(special(&s).expect("a symbol token"));
        } else {
            let start = i;
            while i < chars.len() && !is_special(chars[i]) && !chars[i].is_whitespace() {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            toks.push(match word.as_str() {
                "in" => Tok::In,
                "notin" => Tok::NotIn,
                _ => Tok::Ident(word),
            });
        }
    }
    toks.push(Tok::End);
    toks
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Tok {
        self.toks[self.pos].as_value()
    }

    fn next_raw(&mut self) -> Tok {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn next(&mut self) -> Tok {
        self.next_raw().as_value()
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let mut op = None;
        let mut tok = self.next();
        if tok == Tok::Not {
            op = Some(Op::DoesNotExist);
            tok = self.next();
        }
        let Tok::Ident(key) = tok else {
            return Err(format!("found '{}', expected: identifier", tok.literal()));
        };
        let key_errors = qualified_name_errors(&key);
        if !key_errors.is_empty() {
            return Err(format!(
                "key: Invalid value: {key:?}: {}",
                key_errors.join("; ")
            ));
        }
        // `!k` takes no operator: in `!k=v` the caller then meets the unexpected `=`.
        if op.is_some() || matches!(self.peek(), Tok::End | Tok::Comma) {
            return Ok(Requirement {
                key,
                op: op.unwrap_or(Op::Exists),
                values: Vec::new(),
            });
        }
        let op = match self.next_raw() {
            Tok::In => Op::In,
            Tok::NotIn => Op::NotIn,
            Tok::Equals | Tok::DoubleEquals => Op::Equals,
            Tok::NotEquals => Op::NotEquals,
            Tok::Greater => Op::GreaterThan,
            Tok::Less => Op::LessThan,
            other => {
                return Err(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    other.literal()
                ));
            }
        };
        let values = match op {
            Op::In | Op::NotIn => self.set()?,
            _ => self.exact()?,
        };
        let mut problems = Vec::new();
        if matches!(op, Op::GreaterThan | Op::LessThan) {
            for (i, v) in values.iter().enumerate() {
                if v.parse::<i64>().is_err() {
                    problems.push(format!("values[{i}]: Invalid value: {v:?}: for 'Gt', 'Lt' operators, the value must be an integer"));
                }
            }
        }
        for (i, v) in values.iter().enumerate() {
            let errs = label_value_errors(v);
            if !errs.is_empty() {
                problems.push(format!(
                    "values[{i}][{key}]: Invalid value: {v:?}: {}",
                    errs.join("; ")
                ));
            }
        }
        match problems.len() {
            0 => Ok(Requirement { key, op, values }),
            1 => Err(problems.remove(0)),
            _ => Err(format!("[{}]", problems.join(", "))),
        }
    }

    fn exact(&mut self) -> Result<Vec<String>, String> {
        match self.peek() {
            Tok::End | Tok::Comma => Ok(vec![String::new()]),
            _ => match self.next() {
                Tok::Ident(v) => Ok(vec![v]),
                t => Err(format!("found '{}', expected: identifier", t.literal())),
            },
        }
    }

    /// `(a,b)`; empty members are the empty value, as in the real parser.
    fn set(&mut self) -> Result<Vec<String>, String> {
        let t = self.next();
        if t != Tok::Open {
            return Err(format!("found '{}' expected: '('", t.literal()));
        }
        let mut values: Vec<String> = Vec::new();
        let mut expect_value = true;
        loop {
            match self.next() {
                Tok::Ident(v) if expect_value => {
                    values.push(v);
                    expect_value = false;
                }
                Tok::Comma => {
                    if expect_value {
                        values.push(String::new());
                    }
                    expect_value = true;
                }
                Tok::Close => {
                    if expect_value {
                        values.push(String::new());
                    }
                    break;
                }
                t => {
                    return Err(format!(
                        "found '{}', expected: ',', ')' or identifier",
                        t.literal()
                    ));
                }
            }
        }
        values.sort();
        values.dedup();
        Ok(values)
    }
}

impl LabelSelector {
    /// Parses `labelSelector`; a selector the real server rejects is a 400 BadRequest.
    pub fn parse(input: &str) -> Result<Self, ApiError> {
        let mut p = Parser {
            toks: lex(input),
            pos: 0,
        };
        let mut requirements = Vec::new();
        loop {
            match p.peek() {
                Tok::End => break,
                Tok::Ident(_) | Tok::Not => {
                    let r = p.requirement().map_err(|e| {
                        ApiError::bad_request(format!("unable to parse requirement: {e}"))
                    })?;
                    requirements.push(r);
                    match p.next() {
                        Tok::End => break,
                        Tok::Comma => {
                            let t = p.peek();
                            if !matches!(t, Tok::Ident(_) | Tok::Not) {
                                return Err(ApiError::bad_request(format!(
                                    "found '{}', expected: identifier after ','",
                                    t.literal()
                                )));
                            }
                        }
                        t => {
                            return Err(ApiError::bad_request(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                t.literal()
                            )));
                        }
                    }
                }
                t => {
                    return Err(ApiError::bad_request(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        t.literal()
                    )));
                }
            }
        }
        Ok(Self { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether the object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.requirements.iter().all(|r| {
            let value = label(&r.key);
            let has = |v: &str| r.values.iter().any(|x| x == v);
            match r.op {
                Op::In | Op::Equals => value.is_some_and(has),
                // Objects without the key match, as in Kubernetes.
                Op::NotIn | Op::NotEquals => !value.is_some_and(has),
                Op::Exists => value.is_some(),
                Op::DoesNotExist => value.is_none(),
                Op::GreaterThan | Op::LessThan => {
                    let bound: i64 = r.values[0].parse().expect("checked when parsed");
                    value.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| {
                        if r.op == Op::GreaterThan {
                            v > bound
                        } else {
                            v < bound
                        }
                    })
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"labels": labels}})
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s}: {}", e.message))
    }

    #[test]
    fn requirements_match_as_in_kubernetes() {
        let o = obj(json!({"app": "demo", "tier": "web", "n": "5"}));
        let none = obj(json!({}));
        for (s, on_o, on_none) in [
            ("", true, true),
            ("app=demo", true, false),
            ("app==demo", true, false),
            ("app = demo , tier=web", true, false),
            ("app!=demo", false, true),
            ("app!=other", true, true),
            ("app", true, false),
            ("!app", false, true),
            ("app in (demo, other)", true, false),
            ("app in (other)", false, false),
            ("app notin (demo)", false, true),
            ("app notin (x,y)", true, true),
            ("n>4", true, false),
            ("n<5", false, false),
            ("app=demo,!missing", true, false),
            ("app=", false, false),
            ("in=demo", false, false),
        ] {
            assert_eq!(sel(s).matches(&o), on_o, "{s} on labelled");
            assert_eq!(sel(s).matches(&none), on_none, "{s} on unlabelled");
        }
    }

    #[test]
    fn bad_selectors_are_400() {
        for s in [
            "a b",
            "app in demo",
            "app==",
            "=x",
            "app=de mo",
            "app in (a b)",
            "n>x",
            "app=demo,",
            "-bad-=x",
            "app=-x",
            "!a=b",
        ] {
            let e = match LabelSelector::parse(s) {
                Ok(parsed) if s == "app==" => {
                    // `app==` is `app == ""`, valid.
                    assert!(!parsed.is_empty());
                    continue;
                }
                Ok(_) => panic!("{s:?} should not parse"),
                Err(e) => e,
            };
            assert_eq!((e.code, e.reason), (400, "BadRequest"), "{s}");
        }
        let e = LabelSelector::parse("app=de$mo").unwrap_err();
        assert!(
            e.message.starts_with("unable to parse requirement: "),
            "{}",
            e.message
        );
    }
}

/// A `fieldSelector` as every resource supports it: `metadata.name` and `metadata.namespace`
/// with `=`, `==` or `!=`, comma-separated (all must hold).
#[derive(Debug, Default, Clone)]
pub struct FieldSelector {
    requirements: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses `fieldSelector`; another field is a 400, as the real server's for Secrets.
    pub fn parse(input: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for term in input.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{input}'; can't understand '{term}'"
                )));
            };
            if !matches!(field, "metadata.name" | "metadata.namespace") {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            requirements.push((field.to_string(), equal, value.to_string()));
        }
        Ok(Self { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.requirements.iter().all(|(field, equal, value)| {
            let pointer = format!("/{}", field.replace('.', "/"));
            let got = obj.pointer(&pointer).and_then(Value::as_str).unwrap_or("");
            (got == value) == *equal
        })
    }
}
