//! Canonical JSON and the SHA-256 digests of the chain.
//!
//! **Canonical JSON** of a JSON value is the byte string this module writes, and both the
//! writer and the verifier hash exactly these bytes:
//!
//! - no whitespace outside strings;
//! - object members sorted by key, comparing keys as UTF-8 byte strings (a duplicate key in the
//!   input keeps its last value, as serde_json parses it);
//! - strings as serde_json writes them: `"` `\` and the control characters U+0000–U+001F escaped
//!   (`\b \f \n \r \t`, the others as `\u00xx` in lower-case hex), everything else as raw UTF-8;
//! - integers in plain decimal; other numbers in serde_json's shortest round-trip form (the
//!   workspace builds serde_json with `float_roundtrip`, so a number read back from a record
//!   prints as the same bytes).
//!
//! This equals Python's `json.dumps(v, sort_keys=True, separators=(",", ":"),
//! ensure_ascii=False)` for every value without non-integer numbers, so a third party can
//! recompute a record's hash without our code.

use ring::digest;
use serde_json::Value;

/// Appends the canonical JSON of `value` to `out`.
pub fn write(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, member)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key.as_str()).expect("a string serializes");
                out.push(b':');
                write(member, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Writing a scalar into a Vec cannot fail.
    serde_json::to_writer(&mut *out, value).expect("a JSON scalar serializes");
}

/// The canonical JSON of `value`.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    write(value, &mut out);
    out
}

/// The canonical JSON of anything serde can turn into a JSON value.
pub fn to_vec_of<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    Ok(to_vec(&serde_json::to_value(value)?))
}

/// A SHA-256 digest, written as 64 lower-case hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// Whether `s` is a SHA-256 digest as [`sha256_hex`] writes it.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_recursively_and_drops_whitespace() {
        let v: Value = serde_json::from_str(
            r#"{ "b": 1, "a": {"z": [ {"y":null,"x":true} ], "é": "\u0001\n"}, "B": 2.5 }"#,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(to_vec(&v)).unwrap(),
            r#"{"B":2.5,"a":{"z":[{"x":true,"y":null}],"é":"\u0001\n"},"b":1}"#
        );
    }

    #[test]
    fn numbers_read_back_print_the_same() {
        for text in [
            "0.1234567890123456",
            "1e300",
            "-0.0",
            "123456789012345678",
            "5e-324",
        ] {
            let once = to_vec(&serde_json::from_str(text).unwrap());
            let twice = to_vec(&serde_json::from_slice(&once).unwrap());
            assert_eq!(once, twice, "{text}");
        }
    }

    #[test]
    fn digests() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(is_sha256_hex(&sha256_hex(b"x")));
        assert!(!is_sha256_hex(&"A".repeat(64)));
        assert_eq!(to_vec(&json!("x")), b"\"x\"");
    }
}
