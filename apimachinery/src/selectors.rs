//! Label and field selectors, in the syntax of `?labelSelector=` and `?fieldSelector=`, with the
//! grammar and the semantics of `k8s.io/apimachinery/pkg/labels` and `.../fields`.
//!
//! **Labels** (`labels.Parse`): a lexer and a recursive-descent parser.
//!
//! ```text
//! selector    := "" | requirement ("," requirement)*
//! requirement := "!" key | key | key op value | key ("in" | "notin") "(" values ")"
//! op          := "=" | "==" | "!=" | ">" | "<"
//! values      := value? ("," value?)*          an omitted value is the empty string
//! ```
//!
//! Tokens are split at white space (space, tab, CR, LF) and at the symbols `= ! ( ) , > <`
//! (`==` and `!=` are one token); anything else is an identifier. `in` and `notin` are keywords
//! only where an operator may stand (`in in (in)` is key `in`, operator in, value `in`). Keys
//! must be qualified names, values label values, `>`/`<` values integers; `key` alone means
//! "exists". Requirements are kept sorted by key and the values of a set sorted, so a parsed
//! selector prints ([`LabelSelectorExpr`]'s `Display`) as kube prints it, and parsing that text
//! gives the same selector back. A missing label satisfies `!=` and `notin`, never `=`, `in`,
//! `>` or `<`.
//!
//! **Fields** (`fields.ParseSelector`): terms separated by unescaped commas, each
//! `field=value`, `field==value` or `field!=value`, split at the first operator (the field has
//! no escapes); in values `\,` `\=` `\\` stand for themselves and any other backslash, or an
//! unescaped `,` or `=`, is an error. Fields are not trimmed (`metadata.name = x` names the field
//! `metadata.name `). Which fields exist is the resource's business:
//! [`FieldSelectorExpr::parse`] takes the supported list, as kube's field label conversion does;
//! [`FieldSelectorExpr::parse_any`] accepts any field, as kube's `RequestInfo` does.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use edgefleet_api::validation::{is_label_value, is_qualified_name};
use edgefleet_api::LabelSelector;

/// A parse error, reported to the client as `400 BadRequest`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// kube's `selection.Operator`, as far as label selectors use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operator {
    Exists,
    DoesNotExist,
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    GreaterThan,
    LessThan,
}

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Operator,
    values: BTreeSet<String>,
}

impl Requirement {
    /// kube's `NewRequirement`: the key, the number of values for the operator, integers for
    /// `>`/`<`, and every value as a label value.
    fn new(key: &str, op: Operator, values: BTreeSet<String>) -> Result<Self, String> {
        let mut errors = Vec::new();
        let problems = is_qualified_name(key);
        if !problems.is_empty() {
            errors.push(invalid("key", key, &problems.join("; ")));
        }
        match op {
            Operator::In | Operator::NotIn if values.is_empty() => errors.push(
                "values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty"
                    .to_owned(),
            ),
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals
                if values.len() != 1 =>
            {
                errors.push(format!(
                    "values: Invalid value: {values:?}: exact-match compatibility requires one single value"
                ))
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => errors.push(format!(
                "values: Invalid value: {values:?}: values set must be empty for exists and does not exist"
            )),
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errors.push(format!(
                        "values: Invalid value: {values:?}: for 'Gt', 'Lt' operators, exactly one value is required"
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errors.push(invalid(
                            &format!("values[{i}]"),
                            v,
                            "for 'Gt', 'Lt' operators, the value must be an integer",
                        ));
                    }
                }
            }
            _ => {}
        }
        for (i, v) in values.iter().enumerate() {
            let problems = is_label_value(v);
            if !problems.is_empty() {
                errors.push(invalid(
                    &format!("values[{i}][{key}]"),
                    v,
                    &problems.join("; "),
                ));
            }
        }
        match errors.as_slice() {
            [] => Ok(Self {
                key: key.to_owned(),
                op,
                values,
            }),
            [one] => Err(one.clone()),
            many => Err(format!("[{}]", many.join(", "))),
        }
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.op {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                value.is_some_and(|v| self.values.contains(v))
            }
            Operator::NotIn | Operator::NotEquals => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(actual), Some(bound)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.op == Operator::GreaterThan {
                    actual > bound
                } else {
                    actual < bound
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.op == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.op {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
        };
        f.write_str(op)?;
        let set = matches!(self.op, Operator::In | Operator::NotIn);
        let values = self
            .values
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(",");
        if set {
            write!(f, "({values})")
        } else {
            f.write_str(&values)
        }
    }
}

/// `<field>: Invalid value: "<value>": <detail>`, as kube's `field.Invalid` prints.
fn invalid(field: &str, value: &str, detail: &str) -> String {
    format!("{field}: Invalid value: {value:?}: {detail}")
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

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Parses the query-string syntax (see the module docs).
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let tokens = lex(s);
        let mut requirements = Parser { tokens, at: 0 }
            .selector()
            .map_err(|e| SelectorError(format!("unable to parse requirement: {e}")))?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { requirements })
    }

    /// Converts a `metav1.LabelSelector` (as in Fleet and Placement specs), as kube's
    /// `LabelSelectorAsSelector` does: `matchLabels` are `key=value`, `matchExpressions` their
    /// operator; each is validated like a parsed requirement.
    pub fn from_label_selector(sel: &LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            let values = BTreeSet::from([v.clone()]);
            requirements
                .push(Requirement::new(k, Operator::Equals, values).map_err(SelectorError)?);
        }
        for expr in sel.match_expressions.iter().flatten() {
            let op = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError(format!(
                        "{other:?} is not a valid label selector operator"
                    )))
                }
            };
            let values = expr.values.iter().flatten().cloned().collect();
            requirements.push(Requirement::new(&expr.key, op, values).map_err(SelectorError)?);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { requirements })
    }
}

impl fmt::Display for LabelSelectorExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

// ---- the label selector lexer and parser ------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits `s` into tokens with their text. As in kube's lexer, which reads a NUL byte as the end
/// of input, a NUL where a token would start ends the input, and one inside an identifier ends
/// that identifier.
fn lex(s: &str) -> Vec<(Token, &str)> {
    let bytes = s.as_bytes();
    let mut tokens = Vec::new();
    let mut pos = 0;
    loop {
        while pos < bytes.len() && is_whitespace(bytes[pos]) {
            pos += 1;
        }
        if pos >= bytes.len() || bytes[pos] == 0 {
            tokens.push((Token::End, ""));
            return tokens;
        }
        let start = pos;
        if is_special(bytes[pos]) {
            // The longest symbol: `==` and `!=` are the only two-byte ones.
            let two = bytes.get(pos + 1) == Some(&b'=') && matches!(bytes[pos], b'=' | b'!');
            pos += if two { 2 } else { 1 };
            let token = match &s[start..pos] {
                ")" => Token::ClosedPar,
                "," => Token::Comma,
                "!" => Token::DoesNotExist,
                "==" => Token::DoubleEquals,
                "=" => Token::Equals,
                ">" => Token::GreaterThan,
                "<" => Token::LessThan,
                "!=" => Token::NotEquals,
                _ => Token::OpenPar,
            };
            tokens.push((token, &s[start..pos]));
            continue;
        }
        while pos < bytes.len()
            && bytes[pos] != 0
            && !is_special(bytes[pos])
            && !is_whitespace(bytes[pos])
        {
            pos += 1;
        }
        let text = &s[start..pos];
        if bytes.get(pos) == Some(&0) {
            pos += 1;
        }
        let token = match text {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Identifier,
        };
        tokens.push((token, text));
    }
}

/// Where a token is read: `in`/`notin` are operators only after a key.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser<'a> {
    tokens: Vec<(Token, &'a str)>,
    at: usize,
}

impl<'a> Parser<'a> {
    fn lookahead(&self, context: Context) -> (Token, &'a str) {
        // `lex` always ends with `End`, and nothing consumes past it.
        let (token, text) = self.tokens[self.at.min(self.tokens.len() - 1)];
        match (context, token) {
            (Context::Values, Token::In | Token::NotIn) => (Token::Identifier, text),
            _ => (token, text),
        }
    }

    fn consume(&mut self, context: Context) -> (Token, &'a str) {
        let item = self.lookahead(context);
        self.at += 1;
        item
    }

    fn selector(&mut self) -> Result<Vec<Requirement>, String> {
        let mut requirements = Vec::new();
        loop {
            let (token, text) = self.lookahead(Context::Values);
            match token {
                Token::Identifier | Token::DoesNotExist => {
                    requirements.push(self.requirement()?);
                    let (token, text) = self.consume(Context::Values);
                    match token {
                        Token::End => return Ok(requirements),
                        Token::Comma => {
                            let (next, text) = self.lookahead(Context::Values);
                            if next != Token::Identifier && next != Token::DoesNotExist {
                                return Err(format!(
                                    "found '{text}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => {
                            return Err(format!("found '{text}', expected: ',' or 'end of string'"))
                        }
                    }
                }
                Token::End => return Ok(requirements),
                _ => {
                    return Err(format!(
                        "found '{text}', expected: !, identifier, or 'end of string'"
                    ))
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let (mut token, mut key) = self.consume(Context::Values);
        let mut op = None;
        if token == Token::DoesNotExist {
            op = Some(Operator::DoesNotExist);
            (token, key) = self.consume(Context::Values);
        }
        if token != Token::Identifier {
            return Err(format!("found '{key}', expected: identifier"));
        }
        let problems = is_qualified_name(key);
        if !problems.is_empty() {
            return Err(invalid("key", key, &problems.join("; ")));
        }
        let (next, _) = self.lookahead(Context::Values);
        if matches!(next, Token::End | Token::Comma) && op.is_none() {
            op = Some(Operator::Exists);
        }
        if let Some(op) = op {
            // `!key` followed by more than a comma or the end fails in the caller.
            return Requirement::new(key, op, BTreeSet::new());
        }
        let (token, text) = self.consume(Context::KeyAndOperator);
        let op = match token {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => {
                return Err(format!(
                    "found '{text}', expected: in, notin, =, ==, !=, gt, lt"
                ))
            }
        };
        let values = match op {
            Operator::In | Operator::NotIn => self.set_values()?,
            _ => self.exact_value()?,
        };
        Requirement::new(key, op, values)
    }

    /// `( values )`.
    fn set_values(&mut self) -> Result<BTreeSet<String>, String> {
        let (token, text) = self.consume(Context::Values);
        if token != Token::OpenPar {
            return Err(format!("found '{text}' expected: '('"));
        }
        let (token, text) = self.lookahead(Context::Values);
        match token {
            Token::Identifier | Token::Comma => {
                let values = self.identifiers()?;
                let (token, _) = self.consume(Context::Values);
                if token != Token::ClosedPar {
                    return Err(format!("found '{text}', expected: ')'"));
                }
                Ok(values)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(BTreeSet::from([String::new()]))
            }
            _ => Err(format!("found '{text}', expected: ',', ')' or identifier")),
        }
    }

    /// Comma-separated, possibly empty identifiers, up to (not including) `)`.
    fn identifiers(&mut self) -> Result<BTreeSet<String>, String> {
        let mut values = BTreeSet::new();
        loop {
            let (token, text) = self.consume(Context::Values);
            match token {
                Token::Identifier => {
                    values.insert(text.to_owned());
                    let (next, text) = self.lookahead(Context::Values);
                    match next {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(values),
                        _ => return Err(format!("found '{text}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.insert(String::new());
                    }
                    match self.lookahead(Context::Values).0 {
                        Token::ClosedPar => {
                            values.insert(String::new());
                            return Ok(values);
                        }
                        Token::Comma => {
                            self.consume(Context::Values);
                            values.insert(String::new());
                        }
                        _ => {}
                    }
                }
                _ => return Err(format!("found '{text}', expected: ',', or identifier")),
            }
        }
    }

    /// The one value after `=`, `==`, `!=`, `>` or `<` (empty before a comma or the end).
    fn exact_value(&mut self) -> Result<BTreeSet<String>, String> {
        let (token, _) = self.lookahead(Context::Values);
        if matches!(token, Token::End | Token::Comma) {
            return Ok(BTreeSet::from([String::new()]));
        }
        let (token, text) = self.consume(Context::Values);
        if token == Token::Identifier {
            Ok(BTreeSet::from([text.to_owned()]))
        } else {
            Err(format!("found '{text}', expected: identifier"))
        }
    }
}

// ---- field selectors ----------------------------------------------------------------------------

/// One `field=value` or `field!=value` term.
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
        let parsed = Self::parse_any(s)?;
        if let Some(term) = parsed
            .terms
            .iter()
            .find(|t| !supported.contains(&t.field.as_str()))
        {
            let list = supported
                .iter()
                .map(|f| format!("{f:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(SelectorError(format!(
                "field label not supported: {:?}: supported field selectors are {list}",
                term.field
            )));
        }
        Ok(parsed)
    }

    /// Parses the query-string syntax over any field names (kube's `fields.ParseSelector`).
    pub fn parse_any(s: &str) -> Result<Self, SelectorError> {
        let mut parts = split_unescaped(s, ',');
        // kube sorts the raw terms, which decides which term `required_value` finds first.
        parts.sort_unstable();
        let mut terms = Vec::new();
        for part in parts.into_iter().filter(|p| !p.is_empty()) {
            let Some((field, op, value)) = split_term(part) else {
                return Err(SelectorError(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            terms.push(FieldTerm {
                field: field.to_owned(),
                value: unescape_value(value)?,
                equal: op != "!=",
            });
        }
        Ok(Self { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Matches against the object's selectable fields (`metadata.name` → value); an absent
    /// field is the empty string.
    pub fn matches(&self, fields: &dyn Fn(&str) -> Option<String>) -> bool {
        self.terms.iter().all(|t| {
            let actual = fields(&t.field).unwrap_or_default();
            (actual == t.value) == t.equal
        })
    }

    /// The value required for `field` by an equality term, if any (kube's
    /// `RequiresExactMatch`: the name a list or watch narrows to).
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.equal && t.field == field)
            .map(|t| t.value.as_str())
    }
}

impl fmt::Display for FieldSelectorExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = if t.equal { "=" } else { "!=" };
            write!(f, "{}{op}{}", t.field, escape_value(&t.value))?;
        }
        Ok(())
    }
}

/// Splits at every `sep` not escaped by a backslash; the pieces keep their escapes.
pub fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut escaped) = (0, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(&s[start..i]);
            start = i + sep.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

/// `field`, operator, raw value: split at the first `!=`, `==` or `=`.
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    for (i, _) in term.char_indices() {
        for op in ["!=", "==", "="] {
            if term[i..].starts_with(op) {
                return Some((&term[..i], op, &term[i + op.len()..]));
            }
        }
    }
    None
}

/// A field selector value with its escapes resolved (kube's `UnescapeValue`).
fn unescape_value(s: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(SelectorError(format!(
                    "invalid field selector: invalid escape sequence: \\{c}"
                )));
            }
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' || c == '=' {
            return Err(SelectorError(format!(
                "invalid field selector: unescaped character in value: {c}"
            )));
        } else {
            out.push(c);
        }
    }
    if escaped {
        return Err(SelectorError(
            "invalid field selector: invalid escape sequence: \\".into(),
        ));
    }
    Ok(out)
}

/// A value escaped for a field selector (kube's `EscapeValue`).
pub fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests;
