//! Reading WebSocket messages out of a byte stream that passes through, for session
//! recordings: the proxy splices bytes unchanged and hands a copy to a [`MessageSplitter`] per
//! direction, which yields each complete data message (unmasked, fragments joined).
//!
//! RFC 6455 §5.2: `FIN|RSV|opcode`, `MASK|len7` (126: 16-bit length follows, 127: 64-bit),
//! the masking key when MASK is set, then the payload. Control frames (close, ping, pong) are
//! skipped; text, binary and continuation frames make up messages.

/// Messages larger than this are not recorded (the splitter resynchronises after them).
pub const MAX_RECORDED_MESSAGE: usize = 1 << 20;

#[derive(Default)]
pub struct MessageSplitter {
    buf: Vec<u8>,
    message: Vec<u8>,
    oversized: bool,
}

impl MessageSplitter {
    /// Feeds bytes; returns the messages they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some((fin, opcode, payload, used)) = self.frame() {
            self.buf.drain(..used);
            if opcode >= 0x8 {
                continue; // control frame
            }
            if self.message.len() + payload.len() > MAX_RECORDED_MESSAGE {
                self.oversized = true;
            } else if !self.oversized {
                self.message.extend_from_slice(&payload);
            }
            if fin {
                let message = std::mem::take(&mut self.message);
                if !std::mem::take(&mut self.oversized) {
                    out.push(message);
                }
            }
        }
        out
    }

    /// The next complete frame in the buffer: (FIN, opcode, unmasked payload, bytes used).
    fn frame(&self) -> Option<(bool, u8, Vec<u8>, usize)> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let fin = b[0] & 0x80 != 0;
        let opcode = b[0] & 0x0f;
        let masked = b[1] & 0x80 != 0;
        let (len, mut at) = match b[1] & 0x7f {
            126 => (
                u64::from(u16::from_be_bytes(b.get(2..4)?.try_into().ok()?)),
                4,
            ),
            127 => (u64::from_be_bytes(b.get(2..10)?.try_into().ok()?), 10),
            n => (u64::from(n), 2),
        };
        let key: Option<[u8; 4]> = if masked {
            let k = b.get(at..at + 4)?.try_into().ok()?;
            at += 4;
            Some(k)
        } else {
            None
        };
        let len = usize::try_from(len).ok()?;
        let end = at.checked_add(len)?;
        let raw = b.get(at..end)?;
        let payload = match key {
            Some(k) => raw
                .iter()
                .enumerate()
                .map(|(i, byte)| byte ^ k[i % 4])
                .collect(),
            None => raw.to_vec(),
        };
        Some((fin, opcode, payload, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut f = vec![(u8::from(fin) << 7) | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(m | n as u8),
            n if n < 65536 => {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(m | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(k) => {
                f.extend_from_slice(&k);
                f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => f.extend_from_slice(payload),
        }
        f
    }

    #[test]
    fn splits_masked_fragmented_and_split_input() {
        let mut stream = frame(true, 2, b"\x00ls -l\n", Some([1, 2, 3, 4]));
        stream.extend(frame(true, 9, b"ping", None));
        stream.extend(frame(false, 2, b"\x01hel", None));
        stream.extend(frame(true, 0, b"lo", None));
        let big = vec![7u8; 70_000];
        stream.extend(frame(true, 2, &big, None));
        let mut s = MessageSplitter::default();
        let mut messages = Vec::new();
        for chunk in stream.chunks(5) {
            messages.extend(s.push(chunk));
        }
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[0], b"\x00ls -l\n");
        assert_eq!(messages[1], b"\x01hello");
        assert_eq!(messages[2].len(), 70_000);
    }
}
