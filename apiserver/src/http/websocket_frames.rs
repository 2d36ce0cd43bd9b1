//! Reading WebSocket messages out of a byte stream that passes through, for session
//! recordings: the proxy splices bytes unchanged and hands a copy to a [`MessageSplitter`] per
//! direction, which yields each complete data message (unmasked, fragments joined).
//!
//! RFC 6455 §5.2: `FIN|RSV|opcode`, `MASK|len7` (126: 16-bit length follows, 127: 64-bit),
//! the masking key when MASK is set, then the payload. The header is parsed by tungstenite's
//! [`FrameHeader::parse`]; the payload is never buffered as a frame:
//!
//! ```text
//!            ┌─────────── header complete (≤ 14 bytes held) ───────────┐
//!            │                                                         ▼
//!   Header { ≤ 14 bytes } ◄── payload consumed ── Payload { remaining, mask offset }
//!            │                                      data frame: unmasked bytes appended to the
//!            │ not a frame header                   message while it stays ≤ MAX_RECORDED_MESSAGE,
//!            ▼                                      past that (or announced past it) skipped;
//!         Broken (nothing more is recorded)         control frames (close, ping, pong): skipped
//! ```
//!
//! So a splitter holds at most [`MAX_RECORDED_MESSAGE`] bytes plus a header, whatever length a
//! frame announces — the caller of an exec session controls these bytes, and a frame
//! announcing 2⁶² bytes must not make the hub keep what it streams. A message larger than the
//! limit is not recorded at all (the recording notes truncation by its size elsewhere); the
//! splitter resynchronises at the next frame.

use std::io::Cursor;

use tungstenite::protocol::frame::coding::OpCode;
use tungstenite::protocol::frame::FrameHeader;

/// Messages larger than this are not recorded (the splitter resynchronises after them).
pub const MAX_RECORDED_MESSAGE: usize = 1 << 20;

/// The longest frame header: 2 bytes, a 64-bit length, a 4-byte mask.
const MAX_HEADER_BYTES: usize = 14;

#[derive(Debug)]
enum State {
    /// Reading a frame header: the bytes of it seen so far.
    Header {
        buf: [u8; MAX_HEADER_BYTES],
        len: usize,
    },
    /// Inside a frame's payload.
    Payload {
        fin: bool,
        /// Text, binary or continuation (part of a message) rather than control.
        data: bool,
        mask: Option<[u8; 4]>,
        /// Payload bytes seen so far (the mask's phase).
        offset: u64,
        remaining: u64,
    },
    /// The stream is not WebSocket frames (any more): nothing is recorded from here on.
    Broken,
}

impl Default for State {
    fn default() -> Self {
        State::Header {
            buf: [0; MAX_HEADER_BYTES],
            len: 0,
        }
    }
}

/// Splits one direction of a WebSocket connection into its data messages. See the module docs.
#[derive(Debug, Default)]
pub struct MessageSplitter {
    state: State,
    /// The message being assembled (at most [`MAX_RECORDED_MESSAGE`] bytes).
    message: Vec<u8>,
    /// The message being assembled is too large to record: its bytes are skipped.
    oversized: bool,
}

impl MessageSplitter {
    /// Feeds bytes; returns the messages they completed.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            match &mut self.state {
                State::Broken => break,
                State::Header { buf, len } => {
                    let seen = *len;
                    let take = (MAX_HEADER_BYTES - seen).min(bytes.len());
                    buf[seen..seen + take].copy_from_slice(&bytes[..take]);
                    let mut cursor = Cursor::new(&buf[..seen + take]);
                    match FrameHeader::parse(&mut cursor) {
                        Ok(None) => {
                            // A header is at most MAX_HEADER_BYTES: with that many, it parsed.
                            *len = seen + take;
                            bytes = &bytes[take..];
                        }
                        Ok(Some((header, length))) => {
                            let used = usize::try_from(cursor.position())
                                .unwrap_or(MAX_HEADER_BYTES)
                                .saturating_sub(seen);
                            bytes = &bytes[used..];
                            self.begin_frame(&header, length, &mut out);
                        }
                        Err(_) => {
                            self.state = State::Broken;
                            self.message = Vec::new();
                        }
                    }
                }
                State::Payload {
                    data,
                    mask,
                    offset,
                    remaining,
                    ..
                } => {
                    let n = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len());
                    let (chunk, rest) = bytes.split_at(n);
                    if *data && !self.oversized {
                        // `begin_frame` checked the announced length: the chunk fits.
                        let phase = *offset;
                        self.message
                            .extend(chunk.iter().enumerate().map(|(i, b)| match mask {
                                Some(k) => b ^ k[((phase + i as u64) % 4) as usize],
                                None => *b,
                            }));
                    }
                    *offset += n as u64;
                    *remaining -= n as u64;
                    bytes = rest;
                    if *remaining == 0 {
                        self.end_frame(&mut out);
                    }
                }
            }
        }
        out
    }

    /// A header was read: decide now, from the announced length, whether its payload is kept.
    fn begin_frame(&mut self, header: &FrameHeader, length: u64, out: &mut Vec<Vec<u8>>) {
        let data = matches!(header.opcode, OpCode::Data(_));
        if data && !self.oversized && length > (MAX_RECORDED_MESSAGE - self.message.len()) as u64 {
            // Too large to record: drop what was assembled and skip the rest of the message.
            self.oversized = true;
            self.message = Vec::new();
        } else if data && !self.oversized {
            // Fits (checked above): room for exactly this frame, so the buffer never grows
            // past the limit by doubling.
            self.message.reserve_exact(length as usize);
        }
        self.state = State::Payload {
            fin: header.is_final,
            data,
            mask: header.mask,
            offset: 0,
            remaining: length,
        };
        if length == 0 {
            self.end_frame(out);
        }
    }

    /// A frame's payload ended: a final data frame completes its message.
    fn end_frame(&mut self, out: &mut Vec<Vec<u8>>) {
        if let State::Payload {
            fin: true,
            data: true,
            ..
        } = self.state
        {
            let message = std::mem::take(&mut self.message);
            if !std::mem::take(&mut self.oversized) {
                out.push(message);
            }
        }
        self.state = State::default();
    }

    /// Bytes this splitter holds (the message being assembled), for the memory bound's tests.
    pub fn held_bytes(&self) -> usize {
        self.message.capacity()
    }
}

#[cfg(test)]
mod tests;
