//! Opening a trail for appending: the lock, the head, and a torn tail cut off.
//!
//! ```text
//!  lock audit.lock (flock) ─► no segment? create segment-000001.log, head = genesis
//!        │
//!        ▼
//!  read the last segment (trail::Segment): every complete line must be a sound record, each
//!  following the one before ─► else Corrupt: refuse to open (damage or tampering)
//!        │
//!        ▼
//!  bytes after the last line end = a torn write ─► copied to recovered/<segment>.<offset>.torn,
//!        │                                        then cut off (never acknowledged)
//!        ▼
//!  head = the last record (of an earlier segment if the last one is empty: rotated just before
//!  a crash); the writer continues the chain from there
//! ```
//!
//! A torn tail is part of a line (a kill during `write(2)`) or NUL bytes (a power loss after
//! the size grew but before the data landed). Anything else is not a crash's doing, so the hub
//! must not start over it; `audit verify` tells what is wrong.

use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use super::segment::{
    create_segment, segment_file_name, sync_dir, ParsedRecord, PayloadKind, GENESIS_HASH,
    LOCK_FILE, RECOVERED_DIR,
};
use super::trail::{Location, Trail};

/// Why a trail could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} is locked: another process is writing this audit trail")]
    Locked { path: String },
    #[error("{path} line {line}: {reason}")]
    Corrupt {
        path: String,
        line: usize,
        reason: String,
    },
}

impl OpenError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        OpenError::Io {
            op,
            path: path.display().to_string(),
            source,
        }
    }
}

/// Where the trail stood when it was opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

/// What start-up recovery cut off the end of the trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The segment that ended in a torn write.
    pub segment: PathBuf,
    /// The length it was cut back to (the end of its last sound record).
    pub offset: u64,
    pub discarded_bytes: u64,
    /// Where the discarded bytes were kept.
    pub saved_to: PathBuf,
    /// The sequence number of the last sound record (0: none).
    pub last_seq: u64,
}

/// A trail opened for appending.
pub(crate) struct Recovered {
    /// Holds the directory's exclusive lock while open.
    pub lock: File,
    /// The last segment, opened with `O_APPEND`.
    pub file: File,
    pub segment: u64,
    pub len: u64,
    pub head: Head,
    /// Sequence number of the head when it is a checkpoint (0: it is not).
    pub last_checkpoint_seq: u64,
    pub recovery: Option<Recovery>,
}

/// Opens the trail in `dir` for appending (creating it if needed), cutting off a torn tail.
/// Blocking.
pub(crate) fn recover(dir: &Path) -> Result<Recovered, OpenError> {
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| OpenError::io("creating", dir, e))?;
    }
    let lock = lock_dir(dir)?;
    let trail = Trail::open(dir).map_err(|e| OpenError::io("listing", dir, e))?;
    let Some((last_number, last_path)) = trail.segments().last().cloned() else {
        let path = dir.join(segment_file_name(1));
        let file = create_segment(&path).map_err(|e| OpenError::io("creating", &path, e))?;
        sync_dir(dir).map_err(|e| OpenError::io("fsync", dir, e))?;
        return Ok(Recovered {
            lock,
            file,
            segment: 1,
            len: 0,
            head: Head {
                seq: 0,
                hash: GENESIS_HASH.to_string(),
            },
            last_checkpoint_seq: 0,
            recovery: None,
        });
    };
    let last_index = trail.segments().len() - 1;

    let segment = trail
        .segment(last_index)
        .map_err(|e| OpenError::io("reading", &last_path, e))?;
    let mut head: Option<ParsedRecord> = None;
    for (number, parsed) in segment.records() {
        let at = Location {
            segment: last_path.clone(),
            line: number,
        };
        let record = sound(parsed, &at)?;
        if let Some(h) = &head {
            if record.seq != h.seq + 1 || record.prev != h.hash {
                return Err(corrupt(
                    &at,
                    format!(
                        "record {} does not follow record {} (run `audit verify` for details)",
                        record.seq, h.seq
                    ),
                ));
            }
        }
        head = Some(record);
    }

    // Every complete line is a sound record, so what follows the last line end is a torn
    // write. It was never acknowledged.
    let mut recovery = None;
    let tail = segment.tail();
    if !tail.is_empty() {
        let end = segment.complete_len();
        let saved_to = save_torn_tail(dir, &last_path, end, tail)?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&last_path)
            .map_err(|e| OpenError::io("opening", &last_path, e))?;
        file.set_len(end as u64)
            .and_then(|()| file.sync_all())
            .map_err(|e| OpenError::io("truncating", &last_path, e))?;
        let r = Recovery {
            segment: last_path.clone(),
            offset: end as u64,
            discarded_bytes: tail.len() as u64,
            saved_to,
            last_seq: head.as_ref().map_or(0, |h| h.seq),
        };
        tracing::warn!(
            segment = %r.segment.display(),
            offset = r.offset,
            discarded_bytes = r.discarded_bytes,
            saved_to = %r.saved_to.display(),
            "audit trail ended in a torn write (the process was killed while writing); cut it off"
        );
        recovery = Some(r);
    }

    // An empty last segment (rotated just before a crash): the head is in an earlier one.
    if head.is_none() {
        head = trail
            .last_line_before(last_index)
            .map_err(|e| OpenError::io("reading", dir, e))?
            .map(|(at, parsed)| sound(parsed, &at))
            .transpose()?;
    }

    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(&last_path)
        .map_err(|e| OpenError::io("opening", &last_path, e))?;
    let len = file
        .metadata()
        .map_err(|e| OpenError::io("reading", &last_path, e))?
        .len();
    let (head, last_checkpoint_seq) = match head {
        Some(h) => {
            let cp = if h.kind == PayloadKind::Checkpoint {
                h.seq
            } else {
                0
            };
            (
                Head {
                    seq: h.seq,
                    hash: h.hash,
                },
                cp,
            )
        }
        None => (
            Head {
                seq: 0,
                hash: GENESIS_HASH.to_string(),
            },
            0,
        ),
    };
    Ok(Recovered {
        lock,
        file,
        segment: last_number,
        len,
        head,
        last_checkpoint_seq,
        recovery,
    })
}

/// A parsed line that must be a sound record.
fn sound(parsed: Result<ParsedRecord, String>, at: &Location) -> Result<ParsedRecord, OpenError> {
    match parsed {
        Ok(r) if r.is_sound() => Ok(r),
        Ok(r) => Err(corrupt(at, r.defect.unwrap_or_default())),
        Err(reason) => Err(corrupt(at, reason)),
    }
}

fn corrupt(at: &Location, reason: String) -> OpenError {
    OpenError::Corrupt {
        path: at.segment.display().to_string(),
        line: at.line,
        reason,
    }
}

/// Takes the trail's exclusive lock: two writers would interleave their chains.
fn lock_dir(dir: &Path) -> Result<File, OpenError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| OpenError::io("opening", &path, e))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(OpenError::Locked {
            path: path.display().to_string(),
        }),
        Err(e) => Err(OpenError::io("locking", &path, e.into())),
    }
}

/// Keeps the cut-off bytes as evidence, in `recovered/<segment>.<offset>.torn`.
fn save_torn_tail(
    dir: &Path,
    segment: &Path,
    offset: usize,
    tail: &[u8],
) -> Result<PathBuf, OpenError> {
    let recovered = dir.join(RECOVERED_DIR);
    std::fs::create_dir_all(&recovered).map_err(|e| OpenError::io("creating", &recovered, e))?;
    let name = segment
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let path = recovered.join(format!("{name}.{offset}.torn"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| OpenError::io("creating", &path, e))?;
    file.write_all(tail)
        .and_then(|()| file.sync_all())
        .map_err(|e| OpenError::io("writing", &path, e))?;
    sync_dir(&recovered).map_err(|e| OpenError::io("fsync", &recovered, e))?;
    Ok(path)
}
