//! The `FieldsV1` wire format of a [`FieldSet`], as kube-apiserver writes it in
//! `metadata.managedFields[].fieldsV1`.
//!
//! A set is a JSON object whose keys are serialized [`PathElement`]s and whose values are the
//! sets below them; `{}` marks a member with nothing below it, and `".": {}` marks a node that
//! is both a member and a parent:
//!
//! ```json
//! {"f:metadata":{"f:labels":{"f:region":{}}},
//!  "f:spec":{"f:nodePools":{"k:{\"name\":\"gpu\"}":{".":{},"f:name":{},"f:replicas":{}}}}}
//! ```
//!
//! Keys are written in element order with `"."` first, so equal sets always encode to equal
//! bytes. The JSON inside `k:` and `v:` keys is compact, with object keys sorted and strings
//! escaped the way Go's `encoding/json` does (`<`, `>`, `&` as `\u003c`, ...), because that text
//! is part of the key and clients compare keys as strings. Reading accepts what SMD accepts:
//! unknown element types are skipped, anything else malformed is an error.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::fieldpath::{FieldSet, PathElement};

/// Why a fieldsV1 document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldsV1Error {
    #[error("expected a JSON object at {at:?}")]
    NotAnObject { at: String },
    #[error("invalid path element {key:?}: {reason}")]
    BadElement { key: String, reason: String },
}

impl FieldSet {
    /// Encodes the set as fieldsV1.
    pub fn to_fields_v1(&self) -> Value {
        Value::Object(encode_node(self, false))
    }

    /// Decodes a fieldsV1 document.
    pub fn from_fields_v1(value: &Value) -> Result<FieldSet, FieldsV1Error> {
        let (set, _) = decode_node(value, "")?;
        Ok(set)
    }
}

fn encode_node(set: &FieldSet, include_self: bool) -> Map<String, Value> {
    let mut out = Map::new();
    if include_self && !set.is_empty() {
        out.insert(".".into(), Value::Object(Map::new()));
    }
    // Members and children are both sorted by element; walk them together so that the keys
    // come out in one order. A member that is also a child is written once, with ".".
    let mut members = set.members().iter().peekable();
    let mut children = set.children().iter().peekable();
    loop {
        let take_member = match (members.peek(), children.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(m), Some((c, _))) => *m < c,
        };
        if take_member {
            let Some(pe) = members.next() else { break };
            out.insert(element_string(pe), Value::Object(Map::new()));
        } else {
            let Some((pe, child)) = children.next() else {
                break;
            };
            let is_member = members.next_if(|m| *m == pe).is_some();
            out.insert(
                element_string(pe),
                Value::Object(encode_node(child, is_member)),
            );
        }
    }
    out
}

/// Returns the set below `value` and whether the node itself is a member.
fn decode_node(value: &Value, at: &str) -> Result<(FieldSet, bool), FieldsV1Error> {
    let Some(obj) = value.as_object() else {
        return Err(FieldsV1Error::NotAnObject { at: at.to_owned() });
    };
    let mut set = FieldSet::new();
    let mut is_member = false;
    for (key, child) in obj {
        if key == "." {
            is_member = true;
            continue;
        }
        let Some(pe) = parse_element(key)? else {
            continue;
        };
        let (grandchildren, child_is_member) = decode_node(child, key)?;
        if child_is_member {
            set.insert_member(pe.clone());
        }

        set.insert_child(pe, grandchildren);
    }
    // A node with nothing below it (`{}`) is a member, as in SMD.
    if set.is_empty() {
        is_member = true;
    }
    Ok((set, is_member))
}

/// `f:name`, `k:{"name":"gpu"}`, `v:"fleet-a"`, `i:3`.
pub(crate) fn element_string(pe: &PathElement) -> String {
    let mut out = String::new();
    match pe {
        PathElement::Field(name) => {
            out.push_str("f:");
            out.push_str(name);
        }
        PathElement::Key(fields) => {
            out.push_str("k:{");
            for (i, (name, value)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_string(&mut out, name);
                out.push(':');
                write_go_json(&mut out, value);
            }
            out.push('}');
        }
        PathElement::Value(value) => {
            out.push_str("v:");
            write_go_json(&mut out, value);
        }
        PathElement::Index(i) => {
            let _ = write!(out, "i:{i}");
        }
    }
    out
}

/// Parses one key; `Ok(None)` for an element type this version does not know (skipped, so
/// that entries written by a newer server still load).
fn parse_element(key: &str) -> Result<Option<PathElement>, FieldsV1Error> {
    let bad = |reason: &str| FieldsV1Error::BadElement {
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    let bytes = key.as_bytes();
    if bytes.len() < 2 {
        return Err(bad("must be at least 2 characters long"));
    }
    if bytes[1] != b':' {
        return Err(bad("missing colon"));
    }
    // The first two bytes are ASCII (checked above for the colon; the tag is matched below),
    // so slicing at 2 is on a character boundary whenever the tag is one we know.
    let tag = bytes[0];
    if !matches!(tag, b'f' | b'k' | b'v' | b'i') {
        return Ok(None);
    }
    let rest = &key[2..];
    let pe = match tag {
        b'f' => PathElement::Field(rest.to_owned()),
        b'v' => {
            let value: Value = serde_json::from_str(rest).map_err(|e| bad(&e.to_string()))?;
            PathElement::Value(value)
        }
        b'k' => {
            let value: Value = serde_json::from_str(rest).map_err(|e| bad(&e.to_string()))?;
            let Value::Object(fields) = value else {
                return Err(bad("key must be a JSON object"));
            };
            PathElement::key(fields)
        }
        _ => {
            let index: usize = rest
                .parse()
                .map_err(|_| bad("index must be a non-negative integer"))?;
            PathElement::Index(index)
        }
    };
    Ok(Some(pe))
}

/// Compact JSON with sorted object keys and Go's string escaping.
fn write_go_json(out: &mut String, value: &Value) {
    match value {
        Value::String(s) => write_go_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_json(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_string(out, key);
                out.push(':');
                write_go_json(out, &map[key]);
            }
            out.push('}');
        }
        // Numbers, booleans and null print the same in both encoders.
        other => out.push_str(&other.to_string()),
    }
}

/// A JSON string as Go's `encoding/json` writes it (HTML-safe).
fn write_go_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
