//! The one reader of a trail's files: what is on disk, item by item, in trail order.
//!
//! ```text
//!  Trail::open(dir) ── segments in order ──► Segment (bytes, complete lines, unterminated tail)
//!        │
//!        ├─ item(pos) ─► Record | Broken (a line that is no record) | Incomplete (the unterminated
//!        │               end of the last segment) | Unreadable (a segment that cannot be read)
//!        ├─ find(pos, seq), peek_record(pos)        ─► `audit verify`'s chain walk
//!        ├─ segment(last) + last_line_before(last)   ─► start-up recovery (the head, a torn tail)
//!        └─ find_record(seq)                         ─► the stored-checkpoint check at open
//! ```
//!
//! Everything that reads segments goes through here, so that the writer's idea of a sound
//! trail (recovery refuses to open over damage) and `audit verify`'s cannot drift: both see
//! the same lines, the same records, the same torn tail. What the items *mean* — whether a
//! record follows its predecessor — is the reader's business: [`recovery`](super::recovery)
//! checks the last segment's chain, [`verify`](super::verify) classifies every deviation.
//!
//! A segment is read whole (at most one segment size, 64 MiB by default); the last two read
//! are kept, because the chain walk and its look-ahead rarely span more.

use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::segment::{list_segments, parse_record, ParsedRecord};

/// How many segments [`Trail`] keeps in memory.
const CACHED_SEGMENTS: usize = 2;

/// One segment file, read.
#[derive(Debug)]
pub struct Segment {
    bytes: Vec<u8>,
    /// `(line number from 1, start, end)` of each complete line, without its newline.
    lines: Vec<(usize, usize, usize)>,
    /// Where the bytes after the last newline start (`bytes.len()` when there are none).
    tail_start: usize,
}

impl Segment {
    /// Reads the segment at `path`.
    pub fn read(path: &Path) -> io::Result<Segment> {
        Ok(Segment::from_bytes(std::fs::read(path)?))
    }

    /// A segment from its bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Segment {
        let mut lines = Vec::new();
        let mut start = 0;
        for (i, b) in bytes.iter().enumerate() {
            if *b == b'\n' {
                lines.push((lines.len() + 1, start, i));
                start = i + 1;
            }
        }
        Segment {
            bytes,
            lines,
            tail_start: start,
        }
    }

    /// Number of complete lines.
    pub fn line_count(&self) -> usize {
        self.lines.len()
    }

    /// The complete line at `index` (from 0): its line number (from 1) and bytes.
    pub fn line(&self, index: usize) -> Option<(usize, &[u8])> {
        let &(number, start, end) = self.lines.get(index)?;
        Some((number, &self.bytes[start..end]))
    }

    /// The complete lines in order: `(line number, bytes)`.
    pub fn lines(&self) -> impl DoubleEndedIterator<Item = (usize, &[u8])> + '_ {
        self.lines
            .iter()
            .map(|&(number, start, end)| (number, &self.bytes[start..end]))
    }

    /// Each complete line parsed: `(line number, record or why it is none)`.
    pub fn records(&self) -> impl Iterator<Item = (usize, Result<ParsedRecord, String>)> + '_ {
        self.lines()
            .map(|(number, line)| (number, parse_record(line)))
    }

    /// The bytes after the last line end: empty, or a line still being written (or torn).
    pub fn tail(&self) -> &[u8] {
        &self.bytes[self.tail_start..]
    }

    /// The end of the last complete line: where a torn tail is cut off.
    pub fn complete_len(&self) -> usize {
        self.tail_start
    }
}

/// A position in the trail: segment index, and line index within it (`line_count()` is the
/// unterminated tail, if there is one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub segment: usize,
    pub line: usize,
}

impl Pos {
    /// The first line of the first segment.
    pub const START: Pos = Pos {
        segment: 0,
        line: 0,
    };
}

/// Where a line is: the segment file and its line number (from 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub segment: PathBuf,
    pub line: usize,
}

/// What is at a position.
#[derive(Debug)]
pub enum Item {
    /// A line that parses as a record (sound or not: see [`ParsedRecord::defect`]).
    Record(Box<ParsedRecord>, Location),
    /// A line that is not a record at all, and why.
    Broken(String, Location),
    /// The unterminated end of the last segment, and its length.
    Incomplete(Location, usize),
    /// A segment that could not be read.
    Unreadable(String, PathBuf),
}

/// The segments of a trail directory, read on demand.
pub struct Trail {
    segments: Vec<(u64, PathBuf)>,
    cache: RefCell<Vec<(usize, Rc<Segment>)>>,
}

impl Trail {
    /// Lists the segments of `dir`.
    pub fn open(dir: &Path) -> io::Result<Trail> {
        Ok(Trail {
            segments: list_segments(dir)?,
            cache: RefCell::new(Vec::new()),
        })
    }

    /// `(number, path)` of each segment, in order.
    pub fn segments(&self) -> &[(u64, PathBuf)] {
        &self.segments
    }

    /// The segment at `index`, read (or from the cache).
    pub fn segment(&self, index: usize) -> io::Result<Rc<Segment>> {
        if let Some((_, segment)) = self.cache.borrow().iter().find(|(i, _)| *i == index) {
            return Ok(segment.clone());
        }
        let path = &self
            .segments
            .get(index)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such segment"))?
            .1;
        let segment = Rc::new(Segment::read(path)?);
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= CACHED_SEGMENTS {
            cache.remove(0);
        }
        cache.push((index, segment.clone()));
        Ok(segment)
    }

    /// The item at `pos` and the position after it; `None` past the end.
    pub fn item(&self, mut pos: Pos) -> Option<(Item, Pos)> {
        loop {
            let (_, path) = self.segments.get(pos.segment)?;
            let segment = match self.segment(pos.segment) {
                Ok(s) => s,
                Err(e) => {
                    let next = Pos {
                        segment: pos.segment + 1,
                        line: 0,
                    };
                    return Some((Item::Unreadable(e.to_string(), path.clone()), next));
                }
            };
            let next = Pos {
                segment: pos.segment,
                line: pos.line + 1,
            };
            if let Some((number, line)) = segment.line(pos.line) {
                let location = Location {
                    segment: path.clone(),
                    line: number,
                };
                let item = match parse_record(line) {
                    Ok(record) => Item::Record(Box::new(record), location),
                    Err(reason) => Item::Broken(reason, location),
                };
                return Some((item, next));
            }
            if pos.line == segment.line_count() && !segment.tail().is_empty() {
                let location = Location {
                    segment: path.clone(),
                    line: segment.line_count() + 1,
                };
                let item = if pos.segment + 1 == self.segments.len() {
                    Item::Incomplete(location, segment.tail().len())
                } else {
                    Item::Broken("the segment does not end with a line end".into(), location)
                };
                return Some((item, next));
            }
            pos = Pos {
                segment: pos.segment + 1,
                line: 0,
            };
        }
    }

    /// The record at `pos`, if the item there is a sound one.
    pub fn peek_record(&self, pos: Pos) -> Option<ParsedRecord> {
        match self.item(pos)? {
            (Item::Record(r, _), _) if r.is_sound() => Some(*r),
            _ => None,
        }
    }

    /// Where a record with sequence number `seq` is, from `pos` on.
    pub fn find(&self, mut pos: Pos, seq: u64) -> Option<Location> {
        while let Some((item, next)) = self.item(pos) {
            if let Item::Record(r, location) = item {
                if r.seq == seq {
                    return Some(location);
                }
            }
            pos = next;
        }
        None
    }

    /// The last complete line of the last segment before `index` that has one: the head of a
    /// trail whose newer segments are empty (rotated just before a crash). The line is parsed
    /// but not judged.
    pub fn last_line_before(
        &self,
        index: usize,
    ) -> io::Result<Option<(Location, Result<ParsedRecord, String>)>> {
        for i in (0..index.min(self.segments.len())).rev() {
            let segment = self.segment(i)?;
            let Some(last) = segment.line_count().checked_sub(1) else {
                continue;
            };
            if let Some((number, line)) = segment.line(last) {
                let location = Location {
                    segment: self.segments[i].1.clone(),
                    line: number,
                };
                return Ok(Some((location, parse_record(line))));
            }
        }
        Ok(None)
    }

    /// The record with sequence number `seq`, sound or not, if the trail holds a line that
    /// parses as it. Segments are searched from the newest, skipping those that start after
    /// `seq`.
    pub fn find_record(&self, seq: u64) -> io::Result<Option<ParsedRecord>> {
        for i in (0..self.segments.len()).rev() {
            let segment = self.segment(i)?;
            let Some((_, first)) = segment.line(0) else {
                continue;
            };
            let first_seq = parse_record(first).map(|r| r.seq).unwrap_or(u64::MAX);
            if first_seq > seq {
                continue;
            }
            return Ok(segment
                .records()
                .filter_map(|(_, r)| r.ok())
                .find(|r| r.seq == seq));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::canonical;
    use crate::audit::segment::{encode_record, segment_file_name, PayloadKind, GENESIS_HASH};

    /// Writes `count` chained records from `first` into segment `number`; returns the last hash.
    fn write_segment(dir: &Path, number: u64, first: u64, count: u64, prev: &str) -> String {
        let mut out = Vec::new();
        let mut prev = prev.to_string();
        for seq in first..first + count {
            let payload = canonical::to_vec(&serde_json::json!({ "n": seq }));
            prev = encode_record(PayloadKind::Event, &payload, &prev, seq, &mut out);
        }
        std::fs::write(dir.join(segment_file_name(number)), out).unwrap();
        prev
    }

    #[test]
    fn a_segment_splits_into_complete_lines_and_a_tail() {
        let segment = Segment::from_bytes(b"a\nbc\nde".to_vec());
        let lines: Vec<(usize, &[u8])> = segment.lines().collect();
        assert_eq!(lines, [(1, &b"a"[..]), (2, &b"bc"[..])]);
        assert_eq!((segment.tail(), segment.complete_len()), (&b"de"[..], 5));
        let whole = Segment::from_bytes(b"a\n".to_vec());
        assert!(whole.tail().is_empty());
        assert_eq!(whole.complete_len(), 2);
    }

    #[test]
    fn items_run_across_segments_and_end_with_an_incomplete_tail() {
        let tmp = tempfile::tempdir().unwrap();
        let head = write_segment(tmp.path(), 1, 1, 2, GENESIS_HASH);
        write_segment(tmp.path(), 2, 3, 1, &head);
        let mut last = std::fs::read(tmp.path().join(segment_file_name(2))).unwrap();
        last.extend_from_slice(b"{\"torn");
        std::fs::write(tmp.path().join(segment_file_name(2)), last).unwrap();

        let trail = Trail::open(tmp.path()).unwrap();
        let mut pos = Pos::START;
        let mut seen = Vec::new();
        while let Some((item, next)) = trail.item(pos) {
            seen.push(match item {
                Item::Record(r, at) => format!("record {} at line {}", r.seq, at.line),
                Item::Incomplete(at, len) => format!("incomplete at line {} ({len})", at.line),
                other => format!("{other:?}"),
            });
            pos = next;
        }
        assert_eq!(
            seen,
            [
                "record 1 at line 1",
                "record 2 at line 2",
                "record 3 at line 1",
                "incomplete at line 2 (6)"
            ]
        );
        assert_eq!(trail.find(Pos::START, 3).unwrap().line, 1);
        assert_eq!(trail.find_record(2).unwrap().unwrap().seq, 2);
        assert!(trail.find_record(9).unwrap().is_none());
        let (at, record) = trail.last_line_before(1).unwrap().unwrap();
        assert_eq!((at.line, record.unwrap().seq), (2, 2));
    }
}
