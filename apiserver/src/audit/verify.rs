//! Verifying a trail: proves it intact, or names the first bad record and what is wrong.
//!
//! The walk follows the chain from the genesis: record n must state sequence number n, the hash
//! of record n-1 as `prev`, and the hash of its own canonical content as `hash`. The first
//! deviation is classified by what the records around it show:
//!
//! | finding                                                         | verdict    |
//! |-----------------------------------------------------------------|------------|
//! | a line's content does not hash to its stated hash, or is not canonical | modified, unless the next record chains past it (inserted) |
//! | record n's `prev` is not record n-1's hash, n-1 sound            | n-1 modified (rewritten with a recomputed hash), unless the next record chains past n (n inserted) |
//! | record n+k (k>0) where n is expected, n found further on         | reordered  |
//! | … n not found anywhere                                           | removed (n..n+k-1) |
//! | a second record n                                                | inserted (the one the chain does not continue from) |
//! | the trail ends before the record a signed checkpoint names, or holds another record there | truncated / modified |
//! | a checkpoint whose signature does not verify with the given key  | bad signature |
//! | a session recording whose SHA-256 differs from its event's        | recording modified |
//!
//! Without an outside checkpoint nothing can tell a cleanly cut tail from a trail that simply
//! ended there; pass the checkpoint kept in storage to detect that. An unterminated last line
//! is reported as a note (a write in progress, or a torn write the next start-up cuts off).
//!
//! The files are read through [`trail`](super::trail), as start-up recovery reads them.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::canonical;
use super::checkpoint::{PublicKey, SignedCheckpoint};
use super::segment::{ParsedRecord, PayloadKind, GENESIS_HASH, SESSIONS_DIR};
use super::session::{ANNOTATION_SESSION_RECORDING, ANNOTATION_SESSION_RECORDING_SHA256};
use super::trail::{Item, Location, Pos, Trail};

/// What is wrong with a trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// A record's content was changed.
    Modified,
    /// Records are missing.
    Removed,
    /// A record that does not belong was added.
    Inserted,
    /// Records are out of order.
    Reordered,
    /// Records at the end are missing (against a signed checkpoint).
    Truncated,
    /// A checkpoint's signature does not verify.
    BadSignature,
    /// A session recording differs from what its event recorded.
    RecordingModified,
    /// A file could not be read.
    Unreadable,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProblemKind::Modified => "modified",
            ProblemKind::Removed => "removed",
            ProblemKind::Inserted => "inserted",
            ProblemKind::Reordered => "reordered",
            ProblemKind::Truncated => "truncated",
            ProblemKind::BadSignature => "bad signature",
            ProblemKind::RecordingModified => "recording modified",
            ProblemKind::Unreadable => "unreadable",
        })
    }
}

/// The first bad record of a trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The record named: the bad one, or for removals the first missing one.
    pub seq: Option<u64>,
    /// Where: the segment file and line (from 1).
    pub segment: Option<PathBuf>,
    pub line: Option<usize>,
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "record {seq}")?,
            None => f.write_str("trail")?,
        }
        if let Some(segment) = &self.segment {
            let name = segment
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            write!(f, " ({name}")?;
            if let Some(line) = self.line {
                write!(f, " line {line}")?;
            }
            f.write_str(")")?;
        }
        write!(f, ": {}: {}", self.kind, self.detail)
    }
}

/// The outcome of [`verify_dir`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub dir: PathBuf,
    pub segments: usize,
    /// Records verified (up to the first problem).
    pub records: u64,
    pub events: u64,
    pub checkpoints: u64,
    pub recordings: u64,
    /// The last verified record: `(seq, hash)`.
    pub head: Option<(u64, String)>,
    /// Whether checkpoint signatures were checked (a public key was given).
    pub signatures_checked: bool,
    /// The checkpoint the trail was checked against, if one was given.
    pub checkpoint: Option<SignedCheckpoint>,
    /// An unterminated last line: `(segment, line, bytes)`.
    pub incomplete_tail: Option<(PathBuf, usize, usize)>,
    pub problem: Option<Problem>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }

    /// The exit status `audit verify` promises: 0 intact, 1 tampered or damaged, 2 when the
    /// trail could not be read (so a script can tell "check the disk" from "investigate").
    pub fn exit_code(&self) -> i32 {
        match &self.problem {
            None => 0,
            Some(problem) if problem.kind == ProblemKind::Unreadable => 2,
            Some(_) => 1,
        }
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            None => writeln!(f, "audit trail {}: INTACT", self.dir.display())?,
            Some(problem) => {
                writeln!(f, "audit trail {}: TAMPERED OR DAMAGED", self.dir.display())?;
                writeln!(f, "first bad record: {problem}")?;
            }
        }
        writeln!(
            f,
            "{} segment(s), {} record(s) verified: {} event(s), {} checkpoint(s), {} session recording(s)",
            self.segments, self.records, self.events, self.checkpoints, self.recordings
        )?;
        if let Some((seq, hash)) = &self.head {
            writeln!(f, "head: record {seq}, hash {hash}")?;
        }
        if self.signatures_checked {
            writeln!(f, "checkpoint signatures: checked")?;
        } else {
            writeln!(
                f,
                "checkpoint signatures: NOT checked (no public key given)"
            )?;
        }
        match &self.checkpoint {
            Some(cp) => writeln!(
                f,
                "signed checkpoint: record {} at {} (replica {})",
                cp.seq, cp.time, cp.replica
            )?,
            None => writeln!(
                f,
                "no outside checkpoint given: records cut off the end cannot be detected"
            )?,
        }
        if let Some((segment, line, bytes)) = &self.incomplete_tail {
            writeln!(
                f,
                "note: {} line {line} is incomplete ({bytes} bytes): a write in progress, or a torn write the next start cuts off",
                segment.display()
            )?;
        }
        Ok(())
    }
}

/// Verifies the trail in `dir`: the chain, the signatures of its checkpoints when `public_key`
/// is given, the session recordings its events reference, and — when `checkpoint` (the one
/// kept in storage) is given — that no record it covers is missing or different.
pub fn verify_dir(
    dir: &Path,
    public_key: Option<&PublicKey>,
    checkpoint: Option<&SignedCheckpoint>,
) -> VerifyReport {
    let mut report = VerifyReport {
        dir: dir.to_path_buf(),
        signatures_checked: public_key.is_some(),
        checkpoint: checkpoint.cloned(),
        ..VerifyReport::default()
    };
    let trail = match Trail::open(dir) {
        Ok(t) => t,
        Err(e) => {
            report.problem = Some(Problem {
                kind: ProblemKind::Unreadable,
                seq: None,
                segment: None,
                line: None,
                detail: format!("{}: {e}", dir.display()),
            });
            return report;
        }
    };
    report.segments = trail.segments().len();
    if let (Some(cp), Some(key)) = (checkpoint, public_key) {
        if let Err(e) = cp.verify(key) {
            report.problem = Some(Problem {
                kind: ProblemKind::BadSignature,
                seq: Some(cp.seq),
                segment: None,
                line: None,
                detail: format!("the outside checkpoint of {}: {e}", cp.time),
            });
            return report;
        }
    }
    let mut walk = Walk {
        dir,
        trail: &trail,
        public_key,
        checkpoint,
        report,
        expected_seq: 1,
        expected_prev: GENESIS_HASH.to_string(),
        last: None,
    };
    walk.run();
    walk.report
}

struct Walk<'a> {
    dir: &'a Path,
    trail: &'a Trail,
    public_key: Option<&'a PublicKey>,
    checkpoint: Option<&'a SignedCheckpoint>,
    report: VerifyReport,
    expected_seq: u64,
    expected_prev: String,
    /// The last accepted record: seq, hash, where.
    last: Option<(u64, String, Location)>,
}

impl Walk<'_> {
    fn problem(
        &mut self,
        kind: ProblemKind,
        seq: Option<u64>,
        at: Option<&Location>,
        detail: String,
    ) {
        self.report.problem = Some(Problem {
            kind,
            seq,
            segment: at.map(|l| l.segment.clone()),
            line: at.map(|l| l.line),
            detail,
        });
    }

    /// Whether the record after `pos` continues the chain from the last accepted record, i.e.
    /// the item just read is an extra that the chain skips.
    fn chain_skips(&self, pos: Pos) -> bool {
        self.trail
            .peek_record(pos)
            .is_some_and(|n| n.seq == self.expected_seq && n.prev == self.expected_prev)
    }

    fn run(&mut self) {
        let mut pos = Pos::START;
        while let Some((item, next)) = self.trail.item(pos) {
            let record = match item {
                Item::Incomplete(location, bytes) => {
                    self.report.incomplete_tail = Some((location.segment, location.line, bytes));
                    pos = next;
                    continue;
                }
                Item::Unreadable(reason, path) => {
                    let at = Location {
                        segment: path,
                        line: 0,
                    };
                    self.problem(ProblemKind::Unreadable, None, Some(&at), reason);
                    return;
                }
                Item::Broken(reason, location) => {
                    if self.chain_skips(next) {
                        self.problem(
                            ProblemKind::Inserted,
                            None,
                            Some(&location),
                            format!(
                                "a line that is not a record ({reason}) sits before record {}",
                                self.expected_seq
                            ),
                        );
                    } else {
                        self.problem(
                            ProblemKind::Modified,
                            Some(self.expected_seq),
                            Some(&location),
                            format!("the line is no longer a record: {reason}"),
                        );
                    }
                    return;
                }
                Item::Record(record, location) => (record, location),
            };
            let (record, location) = record;
            if !self.check(&record, &location, next) {
                return;
            }
            pos = next;
        }
        if let Some(cp) = self.checkpoint {
            let head = self.last.as_ref().map_or(0, |(seq, _, _)| *seq);
            if head < cp.seq {
                let at = self.last.as_ref().map(|(_, _, l)| l.clone());
                self.problem(
                    ProblemKind::Truncated,
                    Some(head + 1),
                    at.as_ref(),
                    format!(
                        "the trail ends at record {head}, but the checkpoint signed at {} covers records up to {}: records {}..={} were removed",
                        cp.time,
                        cp.seq,
                        head + 1,
                        cp.seq
                    ),
                );
            }
        }
    }

    /// Checks one record in its place; `false` when a problem was found.
    fn check(&mut self, r: &ParsedRecord, at: &Location, next: Pos) -> bool {
        let expected = self.expected_seq;
        if let Some(defect) = &r.defect {
            if self.chain_skips(next) {
                self.problem(
                    ProblemKind::Inserted,
                    Some(r.seq),
                    Some(at),
                    format!("the record does not belong to the chain ({defect}); the chain continues after it"),
                );
            } else {
                self.problem(ProblemKind::Modified, Some(r.seq), Some(at), defect.clone());
            }
            return false;
        }
        if r.seq == expected {
            if r.prev != self.expected_prev {
                if self.chain_skips(next) {
                    self.problem(
                        ProblemKind::Inserted,
                        Some(r.seq),
                        Some(at),
                        format!("the record does not chain onto record {} and the chain continues after it", expected - 1),
                    );
                } else if let Some((seq, hash, location)) = self.last.clone() {
                    self.problem(
                        ProblemKind::Modified,
                        Some(seq),
                        Some(&location),
                        format!(
                            "its hash is {hash}, but record {} recorded {} as its predecessor's: the record was rewritten and its hash recomputed",
                            r.seq, r.prev
                        ),
                    );
                } else {
                    self.problem(
                        ProblemKind::Modified,
                        Some(r.seq),
                        Some(at),
                        format!(
                            "the first record's prev is {}, not the genesis hash",
                            r.prev
                        ),
                    );
                }
                return false;
            }
            return self.accept(r, at);
        }
        if r.seq > expected {
            match self.trail.find(next, expected) {
                Some(found) => self.problem(
                    ProblemKind::Reordered,
                    Some(r.seq),
                    Some(at),
                    format!(
                        "record {} comes where record {expected} belongs; record {expected} is at {} line {}",
                        r.seq,
                        file_name(&found.segment),
                        found.line
                    ),
                ),
                None => {
                    let missing = if r.seq - 1 == expected {
                        format!("record {expected} is missing")
                    } else {
                        format!("records {expected}..={} are missing", r.seq - 1)
                    };
                    self.problem(
                        ProblemKind::Removed,
                        Some(expected),
                        Some(at),
                        format!("{missing} before record {}", r.seq),
                    );
                }
            }
            return false;
        }
        // A sequence number already accepted: one of the two is an insertion.
        if let Some((seq, hash, location)) = self.last.clone() {
            if r.seq == seq {
                let genuine_is_this = self
                    .trail
                    .peek_record(next)
                    .is_some_and(|n| n.seq == r.seq + 1 && n.prev == r.hash);
                if genuine_is_this && hash != r.hash {
                    self.problem(
                        ProblemKind::Inserted,
                        Some(seq),
                        Some(&location),
                        format!("a second record {seq} follows it, and the chain continues from that one"),
                    );
                } else {
                    self.problem(
                        ProblemKind::Inserted,
                        Some(r.seq),
                        Some(at),
                        format!(
                            "a second record {} (the chain continues from the first)",
                            r.seq
                        ),
                    );
                }
                return false;
            }
        }
        self.problem(
            ProblemKind::Inserted,
            Some(r.seq),
            Some(at),
            format!(
                "record {} appears again after record {}",
                r.seq,
                expected - 1
            ),
        );
        false
    }

    fn accept(&mut self, r: &ParsedRecord, at: &Location) -> bool {
        if let Some(cp) = self.checkpoint {
            if cp.seq == r.seq && cp.hash != r.hash {
                self.problem(
                    ProblemKind::Modified,
                    Some(r.seq),
                    Some(at),
                    format!(
                        "the checkpoint signed at {} says record {} has hash {}, the trail's has {}",
                        cp.time, cp.seq, cp.hash, r.hash
                    ),
                );
                return false;
            }
        }
        match r.kind {
            PayloadKind::Checkpoint => {
                if let Err(detail) = self.check_checkpoint_record(r) {
                    let kind = if detail.starts_with("signature") {
                        ProblemKind::BadSignature
                    } else {
                        ProblemKind::Modified
                    };
                    self.problem(kind, Some(r.seq), Some(at), detail);
                    return false;
                }
                self.report.checkpoints += 1;
            }
            PayloadKind::Event => {
                if let Err(detail) = self.check_recording(&r.payload) {
                    self.problem(
                        ProblemKind::RecordingModified,
                        Some(r.seq),
                        Some(at),
                        detail,
                    );
                    return false;
                }
                self.report.events += 1;
            }
        }
        self.report.records += 1;
        self.report.head = Some((r.seq, r.hash.clone()));
        self.expected_seq = r.seq + 1;
        self.expected_prev.clone_from(&r.hash);
        self.last = Some((r.seq, r.hash.clone(), at.clone()));
        true
    }

    fn check_checkpoint_record(&self, r: &ParsedRecord) -> Result<(), String> {
        let cp: SignedCheckpoint = serde_json::from_value(r.payload.clone())
            .map_err(|e| format!("not a checkpoint: {e}"))?;
        if cp.seq + 1 != r.seq || cp.hash != r.prev {
            return Err(format!(
                "the checkpoint names record {} with hash {}, not the record before it",
                cp.seq, cp.hash
            ));
        }
        if let Some(key) = self.public_key {
            cp.verify(key).map_err(|e| format!("signature: {e}"))?;
        }
        Ok(())
    }

    fn check_recording(&mut self, event: &Value) -> Result<(), String> {
        let annotations = event.get("annotations");
        let name = annotations
            .and_then(|a| a.get(ANNOTATION_SESSION_RECORDING))
            .and_then(Value::as_str);
        let digest = annotations
            .and_then(|a| a.get(ANNOTATION_SESSION_RECORDING_SHA256))
            .and_then(Value::as_str);
        let (Some(name), Some(digest)) = (name, digest) else {
            return Ok(());
        };
        let valid_name = name
            .strip_prefix(SESSIONS_DIR)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|file| !file.is_empty() && !file.contains('/') && !file.starts_with('.'));
        if !valid_name {
            return Err(format!(
                "the event names recording {name:?}, outside {SESSIONS_DIR}/"
            ));
        }
        let path = self.dir.join(name);
        let bytes = std::fs::read(&path).map_err(|e| format!("recording {name}: {e}"))?;
        let actual = canonical::sha256_hex(&bytes);
        if actual != digest {
            return Err(format!(
                "recording {name} has SHA-256 {actual}, the event recorded {digest}"
            ));
        }
        self.report.recordings += 1;
        Ok(())
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `edgefleet-apiserver audit verify --dir DIR [--public-key FILE] [--checkpoint FILE]`: reads
/// the PEM public key and the checkpoint (JSON, as storage keeps it) and verifies. Print the
/// report; exit with [`VerifyReport::exit_code`], or 2 on an `Err` (bad arguments).
pub fn verify_command(
    dir: &Path,
    public_key: Option<&Path>,
    checkpoint: Option<&Path>,
) -> Result<VerifyReport, super::AuditError> {
    let key = public_key.map(PublicKey::load).transpose()?;
    let checkpoint = checkpoint
        .map(|path| {
            load_checkpoint_file(path).map_err(|source| super::AuditError::Io {
                op: "reading the checkpoint",
                path: path.display().to_string(),
                source,
            })
        })
        .transpose()?;
    Ok(verify_dir(dir, key.as_ref(), checkpoint.as_ref()))
}

/// Reads a checkpoint (JSON, as stored) from a file, for `audit verify --checkpoint`.
pub fn load_checkpoint_file(path: &Path) -> Result<SignedCheckpoint, std::io::Error> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod exit_code_tests {
    use super::*;

    #[test]
    fn a_trail_that_cannot_be_read_exits_2_an_intact_one_0() {
        let parent = tempfile::tempdir().unwrap();
        let missing = verify_dir(&parent.path().join("missing"), None, None);
        assert_eq!(
            missing.problem.as_ref().unwrap().kind,
            ProblemKind::Unreadable
        );
        assert_eq!(missing.exit_code(), 2);
        assert_eq!(verify_dir(parent.path(), None, None).exit_code(), 0);
        let tampered = VerifyReport {
            problem: Some(Problem {
                kind: ProblemKind::Modified,
                seq: Some(1),
                segment: None,
                line: None,
                detail: String::new(),
            }),
            ..VerifyReport::default()
        };
        assert_eq!(tampered.exit_code(), 1);
    }
}
