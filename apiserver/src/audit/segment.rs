//! The on-disk format of the trail: segment files of hash-chained records, one per line.
//!
//! ```text
//! <dir>/segment-000001.log   records 1..k        (rotated when a segment reaches its size limit)
//! <dir>/segment-000002.log   records k+1..       (the only segment ever appended to)
//! <dir>/sessions/<auditID>.cast                  exec/attach recordings, hashed into events
//! <dir>/recovered/…                              torn tails cut off at start-up, kept as evidence
//! <dir>/audit.lock                                flock of the one writing process
//!
//! record n:  {"event":{…},"hash":"<h(n)>","prev":"<h(n-1)>","seq":n}\n
//!        or  {"checkpoint":{…},"hash":"<h(n)>","prev":"<h(n-1)>","seq":n}\n
//! h(n) = SHA-256 of the canonical JSON of record n without its "hash" member:
//!            {"event":{…},"prev":"<h(n-1)>","seq":n}
//! h(0) = 64 zeros (the genesis); seq starts at 1 and grows by one across segments.
//! ```
//!
//! Every line is itself canonical JSON (see [`canonical`](super::canonical)): members sorted,
//! no whitespace. `event` is an `audit.k8s.io/v1` `Event`, so
//! `jq -c 'select(.event) | .event' segment-*.log` turns a trail into a kube audit log.
//!
//! This module writes the format; [`trail`](super::trail) is its one reader.

use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::canonical;

/// The `prev` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
pub const SEGMENT_PREFIX: &str = "segment-";
pub const SEGMENT_SUFFIX: &str = ".log";
/// Locked (flock) by the one process appending to the trail.
pub const LOCK_FILE: &str = "audit.lock";
/// Sub-directory of exec/attach recordings.
pub const SESSIONS_DIR: &str = "sessions";
/// Sub-directory where start-up recovery keeps the bytes it cut off.
pub const RECOVERED_DIR: &str = "recovered";

/// `segment-000042.log`.
pub fn segment_file_name(number: u64) -> String {
    format!("{SEGMENT_PREFIX}{number:06}{SEGMENT_SUFFIX}")
}

/// The segment number of a file name, if it names a segment.
pub fn segment_number(file_name: &str) -> Option<u64> {
    let digits = file_name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    (digits.len() >= 6 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The segments of `dir` in order.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(number) = name.to_str().and_then(segment_number) {
            segments.push((number, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

/// What a record carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadKind {
    Event,
    Checkpoint,
}

impl PayloadKind {
    pub fn key(self) -> &'static str {
        match self {
            PayloadKind::Event => "event",
            PayloadKind::Checkpoint => "checkpoint",
        }
    }
}

/// Appends the line of record `seq` to `out` and returns its hash. `payload` is the canonical
/// JSON of the event or checkpoint.
pub fn encode_record(
    kind: PayloadKind,
    payload: &[u8],
    prev: &str,
    seq: u64,
    out: &mut Vec<u8>,
) -> String {
    let key = kind.key();
    let mut hashed = Vec::with_capacity(payload.len() + 128);
    hashed.extend_from_slice(b"{\"");
    hashed.extend_from_slice(key.as_bytes());
    hashed.extend_from_slice(b"\":");
    hashed.extend_from_slice(payload);
    hashed.extend_from_slice(b",\"prev\":\"");
    hashed.extend_from_slice(prev.as_bytes());
    hashed.extend_from_slice(b"\",\"seq\":");
    hashed.extend_from_slice(seq.to_string().as_bytes());
    hashed.push(b'}');
    let hash = canonical::sha256_hex(&hashed);

    out.extend_from_slice(b"{\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(payload);
    out.extend_from_slice(b",\"hash\":\"");
    out.extend_from_slice(hash.as_bytes());
    out.extend_from_slice(b"\",\"prev\":\"");
    out.extend_from_slice(prev.as_bytes());
    out.extend_from_slice(b"\",\"seq\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(b"}\n");
    hash
}

/// A line read back and checked on its own (not against its neighbours).
#[derive(Clone, Debug)]
pub struct ParsedRecord {
    pub seq: u64,
    pub prev: String,
    /// The hash the line states.
    pub hash: String,
    pub kind: PayloadKind,
    pub payload: Value,
    /// What is wrong with the line by itself, if anything: its stated hash is not the hash of
    /// its content, or it is not in canonical form.
    pub defect: Option<String>,
}

impl ParsedRecord {
    pub fn is_sound(&self) -> bool {
        self.defect.is_none()
    }
}

/// Parses one line (without its newline). `Err` says why it is not a record at all.
pub fn parse_record(line: &[u8]) -> Result<ParsedRecord, String> {
    let value: Value = serde_json::from_slice(line).map_err(|e| format!("not valid JSON ({e})"))?;
    let Value::Object(mut map) = value else {
        return Err("not a JSON object".into());
    };
    let seq = take(&mut map, "seq")?
        .as_u64()
        .filter(|s| *s > 0)
        .ok_or("\"seq\" is not a positive integer")?;
    let prev = take_hash(&mut map, "prev")?;
    let hash = take_hash(&mut map, "hash")?;
    let (kind, payload) = match (map.remove("event"), map.remove("checkpoint")) {
        (Some(event), None) => (PayloadKind::Event, event),
        (None, Some(checkpoint)) => (PayloadKind::Checkpoint, checkpoint),
        _ => return Err("needs exactly one of \"event\" and \"checkpoint\"".into()),
    };
    if let Some(extra) = map.keys().next() {
        return Err(format!("unexpected member {extra:?}"));
    }
    if !payload.is_object() {
        return Err(format!("\"{}\" is not an object", kind.key()));
    }

    let payload_bytes = canonical::to_vec(&payload);
    let mut expected_line = Vec::with_capacity(line.len() + 1);
    let computed = encode_record(kind, &payload_bytes, &prev, seq, &mut expected_line);
    expected_line.pop(); // the newline
    let defect = if computed != hash {
        Some(format!(
            "its content hashes to {computed}, not to the hash it states"
        ))
    } else if expected_line != line {
        Some("its bytes are not the canonical JSON of its content".to_string())
    } else {
        None
    };
    Ok(ParsedRecord {
        seq,
        prev,
        hash,
        kind,
        payload,
        defect,
    })
}

fn take(map: &mut Map<String, Value>, key: &str) -> Result<Value, String> {
    map.remove(key).ok_or_else(|| format!("no \"{key}\""))
}

fn take_hash(map: &mut Map<String, Value>, key: &str) -> Result<String, String> {
    match take(map, key)? {
        Value::String(s) if canonical::is_sha256_hex(&s) => Ok(s),
        _ => Err(format!("\"{key}\" is not a SHA-256 hex digest")),
    }
}

/// Creates a new segment for appending. `create_new`: a segment is never reopened for writing
/// by accident, nor through a link someone left at its name.
pub(crate) fn create_segment(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Makes a directory's entries (a new segment, a recovered tail) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(segment_file_name(1), "segment-000001.log");
        assert_eq!(segment_file_name(1234567), "segment-1234567.log");
        assert_eq!(segment_number("segment-000001.log"), Some(1));
        assert_eq!(segment_number("segment-1234567.log"), Some(1234567));
        assert_eq!(segment_number("segment-1.log"), None);
        assert_eq!(segment_number("segment-000001.log.tmp"), None);
    }

    #[test]
    fn encoded_records_parse_back_sound() {
        let mut out = Vec::new();
        let payload = canonical::to_vec(&serde_json::json!({"b": 1, "a": "x\ny"}));
        let hash = encode_record(PayloadKind::Event, &payload, GENESIS_HASH, 1, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let line = &out[..out.len() - 1];
        let parsed = parse_record(line).unwrap();
        assert!(parsed.is_sound(), "{:?}", parsed.defect);
        assert_eq!((parsed.seq, parsed.hash.as_str()), (1, hash.as_str()));

        // The hash is the SHA-256 of the canonical record without "hash".
        let mut v: Value = serde_json::from_slice(line).unwrap();
        v.as_object_mut().unwrap().remove("hash");
        assert_eq!(canonical::sha256_hex(&canonical::to_vec(&v)), hash);

        // Whitespace is a modification, too.
        let spaced = String::from_utf8(line.to_vec())
            .unwrap()
            .replacen(",", ", ", 1);
        assert!(!parse_record(spaced.as_bytes()).unwrap().is_sound());
        let changed = String::from_utf8(line.to_vec())
            .unwrap()
            .replace("\"b\":1", "\"b\":2");
        assert!(!parse_record(changed.as_bytes()).unwrap().is_sound());
        assert!(parse_record(b"{\"seq\":1}").is_err());
    }
}
