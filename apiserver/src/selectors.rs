//! Label and field selectors, in the syntax of `?labelSelector=` and `?fieldSelector=`.
//!
//! Labels (`k8s.io/apimachinery/pkg/labels`): comma-separated requirements, each one of
//! `key`, `!key`, `key=v`, `key==v`, `key!=v`, `key in (a,b)`, `key notin (a,b)`, `key>n`, `key<n`.
//! Fields (`.../fields`): `path=v`, `path==v`, `path!=v`, with `\,` `\=` `\\` escapes, over the
//! fields a resource supports (ours: `metadata.name`, `metadata.namespace`).

use std::collections::BTreeMap;

use edgefleet_api::validation::{is_label_value, is_qualified_name};
use edgefleet_api::LabelSelector;

/// A parse error, reported to the client as `400 BadRequest`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(pub String);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Exists,
    DoesNotExist,
    In(Vec<String>),
    NotIn(Vec<String>),
    Gt(i64),
    Lt(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match &self.op {
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
            Op::In(values) => value.is_some_and(|v| values.contains(v)),
            Op::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
            Op::Gt(n) => value
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Op::Lt(n) => value
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        }
    }
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelectorExpr {
    requirements: Vec<Requirement>,
}

impl LabelSelectorExpr {
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Parses the query-string syntax.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for part in split_top_level(s)? {
            let part = part.trim();
            if part.is_empty() {
                if s.trim().is_empty() {
                    continue;
                }
                return Err(SelectorError(format!("empty requirement in {s:?}")));
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(Self { requirements })
    }

    /// Converts a `metav1.LabelSelector` (as in Fleet and Placement specs).
    pub fn from_label_selector(sel: &LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements: Vec<Requirement> = sel
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement {
                key: k.clone(),
                op: Op::In(vec![v.clone()]),
            })
            .collect();
        for expr in sel.match_expressions.iter().flatten() {
            let values = expr.values.clone().unwrap_or_default();
            let op = match expr.operator.as_str() {
                "In" => Op::In(values),
                "NotIn" => Op::NotIn(values),
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => {
                    return Err(SelectorError(format!(
                        "{other:?} is not a valid label selector operator"
                    )))
                }
            };
            requirements.push(Requirement {
                key: expr.key.clone(),
                op,
            });
        }
        Ok(Self { requirements })
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(s: &str) -> Result<Vec<&str>, SelectorError> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(SelectorError(format!("unbalanced ')' in {s:?}")));
                }
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(SelectorError(format!("unbalanced '(' in {s:?}")));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn check_key(key: &str) -> Result<(), SelectorError> {
    match is_qualified_name(key).first() {
        None => Ok(()),
        Some(problem) => Err(SelectorError(format!(
            "invalid label key {key:?}: {problem}"
        ))),
    }
}

fn check_value(value: &str) -> Result<(), SelectorError> {
    match is_label_value(value).first() {
        None => Ok(()),
        Some(problem) => Err(SelectorError(format!(
            "invalid label value: {value:?}: {problem}"
        ))),
    }
}

fn parse_requirement(part: &str) -> Result<Requirement, SelectorError> {
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        check_key(key)?;
        return Ok(Requirement {
            key: key.into(),
            op: Op::DoesNotExist,
        });
    }
    // Set-based: `key in (a,b)`, `key notin (a,b)`.
    for (word, is_in) in [(" in ", true), (" notin ", false)] {
        if let Some(idx) = find_word(part, word) {
            let key = part[..idx].trim();
            let rest = part[idx + word.len()..].trim();
            let inner = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| SelectorError(format!("found {rest:?}, expected: '(' ... ')'")))?;
            check_key(key)?;
            let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
            for v in &values {
                check_value(v)?;
            }
            let op = if is_in {
                Op::In(values)
            } else {
                Op::NotIn(values)
            };
            return Ok(Requirement {
                key: key.into(),
                op,
            });
        }
    }
    for (sym, build) in [
        (
            "!=",
            (|v: String| Ok(Op::NotIn(vec![v]))) as fn(String) -> Result<Op, SelectorError>,
        ),
        ("==", |v| Ok(Op::In(vec![v]))),
        ("=", |v| Ok(Op::In(vec![v]))),
        (">", |v: String| {
            v.parse().map(Op::Gt).map_err(|_| {
                SelectorError(format!(
                    "for 'Gt', 'Lt' operators, the value must be an integer: {v:?}"
                ))
            })
        }),
        ("<", |v: String| {
            v.parse().map(Op::Lt).map_err(|_| {
                SelectorError(format!(
                    "for 'Gt', 'Lt' operators, the value must be an integer: {v:?}"
                ))
            })
        }),
    ] {
        if let Some((key, value)) = part.split_once(sym) {
            let (key, value) = (key.trim(), value.trim());
            check_key(key)?;
            if sym != ">" && sym != "<" {
                check_value(value)?;
            }
            return Ok(Requirement {
                key: key.into(),
                op: build(value.to_string())?,
            });
        }
    }
    check_key(part)?;
    Ok(Requirement {
        key: part.into(),
        op: Op::Exists,
    })
}

/// Position of ` in ` / ` notin ` surrounded by whitespace, before any `(`.
fn find_word(part: &str, word: &str) -> Option<usize> {
    let paren = part.find('(').unwrap_or(part.len());
    let normalized: String = part
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .collect();
    normalized[..paren].find(word).or_else(|| {
        // `key in(a)`: the word followed directly by the parenthesis.
        let trimmed = word.trim_end();
        normalized[..paren.min(normalized.len())]
            .strip_suffix(trimmed)
            .map(|head| head.len())
            .filter(|_| paren < part.len())
    })
}

/// One `field op value` term.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldTerm {
    field: String,
    value: String,
    equal: bool,
}

/// A parsed field selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelectorExpr {
    terms: Vec<FieldTerm>,
}

impl FieldSelectorExpr {
    /// Parses the query-string syntax, accepting only `supported` field paths.
    pub fn parse(s: &str, supported: &[&str]) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for part in split_unescaped(s, ',') {
            if part.trim().is_empty() {
                continue;
            }
            let (field, value, equal) = if let Some((f, v)) = split_once_unescaped(&part, "!=") {
                (f, v, false)
            } else if let Some((f, v)) = split_once_unescaped(&part, "==") {
                (f, v, true)
            } else if let Some((f, v)) = split_once_unescaped(&part, "=") {
                (f, v, true)
            } else {
                return Err(SelectorError(format!(
                    "invalid field selector: {part:?}: expected field=value"
                )));
            };
            let field = field.trim().to_string();
            if !supported.contains(&field.as_str()) {
                let list = supported
                    .iter()
                    .map(|f| format!("{f:?}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(SelectorError(format!(
                    "field label not supported: {field:?}: supported field selectors are {list}"
                )));
            }
            terms.push(FieldTerm {
                field,
                value: unescape(value.trim()),
                equal,
            });
        }
        Ok(Self { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Matches against the object's selectable fields (`metadata.name` → value).
    pub fn matches(&self, fields: &dyn Fn(&str) -> Option<String>) -> bool {
        self.terms.iter().all(|t| {
            let actual = fields(&t.field).unwrap_or_default();
            (actual == t.value) == t.equal
        })
    }

    /// The value required for `field` by an equality term, if any (used to narrow a list to one
    /// name or namespace before scanning).
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.equal && t.field == field)
            .map(|t| t.value.as_str())
    }
}

/// Splits on `sep` where it is not escaped; escapes are kept for [`unescape`].
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            current.push('\\');
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    out.push(current);
    out
}

fn split_once_unescaped<'a>(s: &'a str, op: &str) -> Option<(&'a str, &'a str)> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i + op.len() <= s.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if s[i..].starts_with(op) {
            // `=` must not be the second half of `==` or `!=`.
            if op == "=" && (i > 0 && bytes[i - 1] == b'!') {
                i += 1;
                continue;
            }
            return Some((&s[..i], &s[i + op.len()..]));
        }
        i += 1;
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests;
