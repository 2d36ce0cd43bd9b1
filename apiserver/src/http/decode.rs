//! Request bodies: JSON or YAML into a `serde_json::Value`, noting the keys an object repeats.
//!
//! `serde_json` and the YAML decoder both keep the last of two equal keys of an object, silently
//! (`{"metadata": {"name": "a", "name": "b"}}` names `b`). kube's strict decoder reports each
//! as `duplicate field "<key>"`: refused under `fieldValidation=Strict`, a `Warning` under
//! `Warn` (the default), ignored under `Ignore`. So bodies are decoded through a visitor that
//! builds the same value the plain decoders build (last key wins) and records the repeated keys.
//!
//! The decoders' own limits stay in force (the visitor runs inside them): nesting depth for
//! JSON, alias expansion for YAML. What is recorded is bounded like kube's list: distinct keys
//! only, at most [`MAX_DUPLICATES`].

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::errors::ApiError;
use crate::negotiation::BodyType;
use crate::registry::FieldValidation;

/// Distinct repeated keys recorded at most (kube's strict decoder keeps 100 errors).
pub const MAX_DUPLICATES: usize = 100;

/// A decoded body.
#[derive(Debug, PartialEq)]
pub struct Decoded {
    pub value: Value,
    /// `duplicate field "<key>"` for each key an object repeated, in the order first seen.
    pub duplicates: Vec<String>,
}

/// The body of a write (create, update, patch, apply), decoded as its content type says,
/// with the duplicate fields `field_validation` asks to hear about: refused under `Strict`
/// (`400`, in the wording unknown fields have there too), returned as warnings under `Warn`.
pub fn write_body(
    bytes: &[u8],
    body_type: BodyType,
    field_validation: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let (decoded, format) = match body_type {
        BodyType::Yaml | BodyType::ApplyPatch => (yaml(bytes).map_err(|e| e.to_string()), "YAML"),
        _ => (json(bytes).map_err(|e| e.to_string()), "JSON"),
    };
    let decoded = decoded.map_err(|e| {
        ApiError::BadRequest(format!(
            "the body of the request could not be decoded as {format}: {e}"
        ))
    })?;
    match field_validation {
        FieldValidation::Strict if !decoded.duplicates.is_empty() => Err(ApiError::BadRequest(
            format!("strict decoding error: {}", decoded.duplicates.join(", ")),
        )),
        FieldValidation::Warn => Ok((decoded.value, decoded.duplicates)),
        _ => Ok((decoded.value, Vec::new())),
    }
}

/// Decodes one JSON document.
pub fn json(bytes: &[u8]) -> Result<Decoded, serde_json::Error> {
    let mut duplicates = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = ValueSeed {
        duplicates: &mut duplicates,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(Decoded { value, duplicates })
}

/// Decodes one YAML document.
pub fn yaml(bytes: &[u8]) -> Result<Decoded, serde_yaml_ng::Error> {
    let mut duplicates = Vec::new();
    let value = ValueSeed {
        duplicates: &mut duplicates,
    }
    .deserialize(serde_yaml_ng::Deserializer::from_slice(bytes))?;
    Ok(Decoded { value, duplicates })
}

/// Builds a [`Value`] as its own `Deserialize` does, recording repeated keys.
struct ValueSeed<'a> {
    duplicates: &'a mut Vec<String>,
}

impl ValueSeed<'_> {
    fn reborrow(&mut self) -> ValueSeed<'_> {
        ValueSeed {
            duplicates: self.duplicates,
        }
    }

    fn note(&mut self, key: &str) {
        let finding = format!("duplicate field {key:?}");
        if self.duplicates.len() < MAX_DUPLICATES && !self.duplicates.contains(&finding) {
            self.duplicates.push(finding);
        }
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // As serde_json's own visitor: a float JSON cannot hold (YAML's .inf) becomes null.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element_seed(self.reborrow())? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(self.reborrow())?;
            if object.insert(key.clone(), value).is_some() {
                self.note(&key);
            }
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests;
