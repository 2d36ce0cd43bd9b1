//! SPDY/3.1, server side, as far as Kubernetes streaming uses it: kubectl's `exec`, `attach`
//! and `port-forward` over `Upgrade: SPDY/3.1` (moby/spdystream under
//! `k8s.io/apimachinery/pkg/util/httpstream/spdy`), directly or tunnelled inside a WebSocket.
//!
//! ```text
//! control frame  |1| version = 3 (15) | type (16) | flags (8) | length (24) | payload
//! data frame     |0| stream id (31)               | flags (8) | length (24) | payload
//!
//! SYN_STREAM (1)    stream id, associated stream id, priority (3 bits) + slot, header block
//! SYN_REPLY (2)     stream id, header block
//! RST_STREAM (3)    stream id, status
//! SETTINGS (4)      count, (flags (8) id (24) value (32))*
//! PING (6)          id (odd from the client, even from the server; the receiver echoes it)
//! GOAWAY (7)        last good stream id, status
//! HEADERS (8)       stream id, header block
//! WINDOW_UPDATE (9) stream id, delta
//! ```
//!
//! A header block is `count (32) (name length (32) name value length (32) value)*`, several
//! values of one name joined by NUL, compressed with zlib primed with the SPDY/3 dictionary: one
//! zlib stream per direction for the whole connection, each block ending in a sync flush, so a
//! block decompresses exactly from its own frame's bytes (Go's framer insists on it).
//!
//! The peer streams here (the client opens every stream; the server answers each with an empty
//! SYN_REPLY at once, as kubelet does) and ends a direction with FIN. spdystream implements no
//! flow control, so neither does this: WINDOW_UPDATE and SETTINGS are read and ignored.

use std::collections::HashMap;
use std::sync::OnceLock;

use anyhow::{bail, ensure, Context as _};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;
const FLAG_FIN: u8 = 0x01;
/// RST_STREAM status CANCEL.
pub const CANCEL: u32 = 5;
/// Largest DATA payload this side writes (the format allows 2^24 - 1).
const MAX_DATA: usize = 32 * 1024;
/// Largest frame this side accepts: kubectl never sends more than a few KiB at once.
const MAX_FRAME: usize = 1 << 24;

/// Header names and values of the SPDY/3 zlib dictionary, each preceded by its length as a
/// 32-bit big-endian integer (SPDY/3 §2.6.10.1).
const DICTIONARY_WORDS: [&str; 65] = [
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The raw text that ends the SPDY/3 dictionary (status codes, dates, common values).
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,",
    "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch",
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The SPDY/3 header compression dictionary.
pub fn dictionary() -> &'static [u8] {
    static DICTIONARY: OnceLock<Vec<u8>> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        let mut out = Vec::with_capacity(1424);
        for word in DICTIONARY_WORDS {
            out.put_u32(word.len() as u32);
            out.extend_from_slice(word.as_bytes());
        }
        out.extend_from_slice(DICTIONARY_TAIL.as_bytes());
        out
    })
}

/// Header name/value pairs; a name with several values appears once per value.
pub type Headers = Vec<(String, String)>;

/// One SPDY frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    SynReply {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Settings,
    Ping(u32),
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream: u32,
        delta: u32,
    },
    Data {
        stream: u32,
        fin: bool,
        data: Bytes,
    },
}

/// Frame encoding and decoding for one connection: the two zlib streams live here.
pub struct Codec {
    deflate: Compress,
    inflate: Decompress,
}

impl Default for Codec {
    fn default() -> Self {
        Self::new()
    }
}

impl Codec {
    pub fn new() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(dictionary())
            .expect("a fresh zlib stream takes a dictionary");
        Codec {
            deflate,
            inflate: Decompress::new(true),
        }
    }

    /// The next complete frame at the front of `buf`, if there is one.
    pub fn decode(&mut self, buf: &mut BytesMut) -> anyhow::Result<Option<Frame>> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let length = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        ensure!(length < MAX_FRAME, "frame of {length} bytes");
        if buf.len() < 8 + length {
            return Ok(None);
        }
        let first = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let flags = buf[4];
        buf.advance(8);
        let mut payload = buf.split_to(length).freeze();
        let fin = flags & FLAG_FIN != 0;
        if first & 0x8000_0000 == 0 {
            let stream = first & 0x7fff_ffff;
            ensure!(stream != 0, "DATA on stream 0");
            return Ok(Some(Frame::Data {
                stream,
                fin,
                data: payload,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        ensure!(version == VERSION, "SPDY version {version}");
        let kind = (first & 0xffff) as u16;
        let need = |payload: &Bytes, n: usize| {
            ensure!(payload.len() >= n, "control frame {kind} too short");
            Ok(())
        };
        let frame = match kind {
            SYN_STREAM => {
                need(&payload, 10)?;
                let stream = payload.get_u32() & 0x7fff_ffff;
                let _associated = payload.get_u32();
                let _priority_and_slot = payload.get_u16();
                Frame::SynStream {
                    stream,
                    fin,
                    headers: self.decode_headers(&payload)?,
                }
            }
            SYN_REPLY | HEADERS => {
                need(&payload, 4)?;
                let stream = payload.get_u32() & 0x7fff_ffff;
                let headers = self.decode_headers(&payload)?;
                if kind == SYN_REPLY {
                    Frame::SynReply {
                        stream,
                        fin,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream,
                        fin,
                        headers,
                    }
                }
            }
            RST_STREAM => {
                need(&payload, 8)?;
                Frame::RstStream {
                    stream: payload.get_u32() & 0x7fff_ffff,
                    status: payload.get_u32(),
                }
            }
            SETTINGS => Frame::Settings,
            PING => {
                need(&payload, 4)?;
                Frame::Ping(payload.get_u32())
            }
            GOAWAY => {
                need(&payload, 8)?;
                Frame::GoAway {
                    last_good: payload.get_u32() & 0x7fff_ffff,
                    status: payload.get_u32(),
                }
            }
            WINDOW_UPDATE => {
                need(&payload, 8)?;
                Frame::WindowUpdate {
                    stream: payload.get_u32() & 0x7fff_ffff,
                    delta: payload.get_u32() & 0x7fff_ffff,
                }
            }
            other => bail!("unknown control frame type {other}"),
        };
        Ok(Some(frame))
    }

    /// Appends `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> anyhow::Result<()> {
        let control = |out: &mut BytesMut, kind: u16, flags: u8, payload: &[u8]| {
            out.put_u16(0x8000 | VERSION);
            out.put_u16(kind);
            out.put_u32((u32::from(flags) << 24) | payload.len() as u32);
            out.extend_from_slice(payload);
        };
        let fin_flag = |fin: bool| if fin { FLAG_FIN } else { 0 };
        match frame {
            Frame::SynStream {
                stream,
                fin,
                headers,
            } => {
                let mut payload = BytesMut::new();
                payload.put_u32(*stream);
                payload.put_u32(0);
                payload.put_u16(0);
                payload.extend_from_slice(&self.encode_headers(headers)?);
                control(out, SYN_STREAM, fin_flag(*fin), &payload);
            }
            Frame::SynReply {
                stream,
                fin,
                headers,
            }
            | Frame::Headers {
                stream,
                fin,
                headers,
            } => {
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    SYN_REPLY
                } else {
                    HEADERS
                };
                let mut payload = BytesMut::new();
                payload.put_u32(*stream);
                payload.extend_from_slice(&self.encode_headers(headers)?);
                control(out, kind, fin_flag(*fin), &payload);
            }
            Frame::RstStream { stream, status } => {
                let mut payload = [0; 8];
                payload[..4].copy_from_slice(&stream.to_be_bytes());
                payload[4..].copy_from_slice(&status.to_be_bytes());
                control(out, RST_STREAM, 0, &payload);
            }
            Frame::Settings => control(out, SETTINGS, 0, &0_u32.to_be_bytes()),
            Frame::Ping(id) => control(out, PING, 0, &id.to_be_bytes()),
            Frame::GoAway { last_good, status } => {
                let mut payload = [0; 8];
                payload[..4].copy_from_slice(&last_good.to_be_bytes());
                payload[4..].copy_from_slice(&status.to_be_bytes());
                control(out, GOAWAY, 0, &payload);
            }
            Frame::WindowUpdate { stream, delta } => {
                let mut payload = [0; 8];
                payload[..4].copy_from_slice(&stream.to_be_bytes());
                payload[4..].copy_from_slice(&delta.to_be_bytes());
                control(out, WINDOW_UPDATE, 0, &payload);
            }
            Frame::Data { stream, fin, data } => {
                ensure!(data.len() < MAX_FRAME, "DATA of {} bytes", data.len());
                out.put_u32(stream & 0x7fff_ffff);
                out.put_u32((u32::from(fin_flag(*fin)) << 24) | data.len() as u32);
                out.extend_from_slice(data);
            }
        }
        Ok(())
    }

    fn encode_headers(&mut self, headers: &Headers) -> anyhow::Result<Vec<u8>> {
        // Several values of one name travel as one NUL-separated value.
        let mut merged: Vec<(String, Vec<&str>)> = Vec::new();
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            match merged.iter_mut().find(|(n, _)| *n == name) {
                Some((_, values)) => values.push(value),
                None => merged.push((name, vec![value])),
            }
        }
        let mut block = Vec::new();
        block.put_u32(merged.len() as u32);
        for (name, values) in &merged {
            let value = values.join("\0");
            block.put_u32(name.len() as u32);
            block.extend_from_slice(name.as_bytes());
            block.put_u32(value.len() as u32);
            block.extend_from_slice(value.as_bytes());
        }
        let mut out = Vec::with_capacity(block.len() + 64);
        let start = self.deflate.total_in();
        loop {
            let consumed = (self.deflate.total_in() - start) as usize;
            self.deflate
                .compress_vec(&block[consumed..], &mut out, FlushCompress::Sync)
                .context("compressing a header block")?;
            let done = (self.deflate.total_in() - start) as usize == block.len();
            // A sync flush is complete once it left spare room in the output.
            if done && out.len() < out.capacity() {
                return Ok(out);
            }
            out.reserve(out.capacity().max(64));
        }
    }

    fn decode_headers(&mut self, compressed: &[u8]) -> anyhow::Result<Headers> {
        let mut block = Vec::with_capacity(compressed.len() * 4 + 64);
        let start = self.inflate.total_in();
        loop {
            let consumed = (self.inflate.total_in() - start) as usize;
            match self.inflate.decompress_vec(
                &compressed[consumed..],
                &mut block,
                FlushDecompress::Sync,
            ) {
                Ok(_) => {}
                // The first block of a connection asks for the dictionary.
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary())
                        .context("priming the header decompressor")?;
                    continue;
                }
                Err(e) => return Err(e).context("decompressing a header block"),
            }
            let done = (self.inflate.total_in() - start) as usize == compressed.len();
            if done && block.len() < block.capacity() {
                break;
            }
            block.reserve(block.capacity().max(64));
        }
        parse_header_block(&block)
    }
}

fn parse_header_block(mut block: &[u8]) -> anyhow::Result<Headers> {
    let mut take = |n: usize| -> anyhow::Result<&[u8]> {
        ensure!(block.len() >= n, "header block truncated");
        let (head, rest) = block.split_at(n);
        block = rest;
        Ok(head)
    };
    let count = u32::from_be_bytes(take(4)?.try_into()?);
    let mut headers = Vec::new();
    for _ in 0..count {
        let len = u32::from_be_bytes(take(4)?.try_into()?) as usize;
        let name = String::from_utf8(take(len)?.to_vec())?;
        let len = u32::from_be_bytes(take(4)?.try_into()?) as usize;
        let value = String::from_utf8(take(len)?.to_vec())?;
        for v in value.split('\0') {
            headers.push((name.clone(), v.to_string()));
        }
    }
    Ok(headers)
}

/// A stream the client opened.
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    /// The client's DATA; ends at its FIN (or RST_STREAM, or the end of the connection).
    pub data: mpsc::UnboundedReceiver<Bytes>,
}

impl Stream {
    /// The first value of header `name` (names are lower case on the wire).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

enum Command {
    Reply(u32),
    Data(u32, Bytes),
    Fin(u32),
    Reset(u32),
    Ping(u32),
    Close,
}

/// Queues frames for the connection's writer; cheap to clone. Everything queued goes out in
/// order, so data written before a FIN or a close reaches the client first.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::UnboundedSender<Command>,
}

impl Writer {
    pub fn data(&self, stream: u32, data: Bytes) {
        let _ = self.tx.send(Command::Data(stream, data));
    }

    /// Ends this side of `stream`.
    pub fn fin(&self, stream: u32) {
        let _ = self.tx.send(Command::Fin(stream));
    }

    pub fn reset(&self, stream: u32) {
        let _ = self.tx.send(Command::Reset(stream));
    }

    /// GOAWAY, then the end of this side of the connection (the reader keeps draining until
    /// the client closes, so nothing it sent turns into a TCP reset).
    pub fn close(&self) {
        let _ = self.tx.send(Command::Close);
    }
}

/// A server-side SPDY connection: the streams the client opens, and a [`Writer`].
pub struct Session {
    pub streams: mpsc::UnboundedReceiver<Stream>,
    pub writer: Writer,
}

/// Serves SPDY on `io` (an upgraded connection) until either side ends it.
pub fn serve<IO>(io: IO) -> Session
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(io);
    let (commands, queue) = mpsc::unbounded_channel();
    let (streams_tx, streams) = mpsc::unbounded_channel();
    let writer = Writer { tx: commands };
    tokio::spawn(write_loop(write, queue));
    tokio::spawn(read_loop(read, writer.clone(), streams_tx));
    Session { streams, writer }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut read: R,
    writer: Writer,
    streams: mpsc::UnboundedSender<Stream>,
) {
    let mut codec = Codec::new();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut open: HashMap<u32, mpsc::UnboundedSender<Bytes>> = HashMap::new();
    loop {
        let frame = match codec.decode(&mut buf) {
            Ok(Some(frame)) => frame,
            Ok(None) => match read.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            },
            Err(err) => {
                eprintln!("test upstream: bad SPDY frame: {err:#}");
                return;
            }
        };
        match frame {
            Frame::SynStream {
                stream,
                fin,
                headers,
            } => {
                // Replied before the handler sees the stream, so the reply precedes any data.
                let _ = writer.tx.send(Command::Reply(stream));
                let (tx, rx) = mpsc::unbounded_channel();
                if !fin {
                    open.insert(stream, tx);
                }
                let _ = streams.send(Stream {
                    id: stream,
                    headers,
                    data: rx,
                });
            }
            Frame::Data { stream, fin, data } => {
                if let Some(tx) = open.get(&stream) {
                    if !data.is_empty() {
                        let _ = tx.send(data);
                    }
                }
                if fin {
                    open.remove(&stream);
                }
            }
            Frame::RstStream { stream, .. } => {
                open.remove(&stream);
            }
            // Client pings are odd; echo them (ours would be even, and we send none).
            Frame::Ping(id) if id % 2 == 1 => {
                let _ = writer.tx.send(Command::Ping(id));
            }
            Frame::Headers { stream, fin, .. } if fin => {
                open.remove(&stream);
            }
            _ => {}
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut write: W,
    mut queue: mpsc::UnboundedReceiver<Command>,
) {
    let mut codec = Codec::new();
    let mut out = BytesMut::new();
    while let Some(command) = queue.recv().await {
        let mut close = false;
        let mut next = Some(command);
        // Batch whatever is queued into one write.
        while let Some(command) = next {
            let frame = match command {
                Command::Reply(stream) => Frame::SynReply {
                    stream,
                    fin: false,
                    headers: Vec::new(),
                },
                Command::Data(stream, mut data) => {
                    while data.len() > MAX_DATA {
                        let chunk = data.split_to(MAX_DATA);
                        let frame = Frame::Data {
                            stream,
                            fin: false,
                            data: chunk,
                        };
                        if codec.encode(&frame, &mut out).is_err() {
                            return;
                        }
                    }
                    Frame::Data {
                        stream,
                        fin: false,
                        data,
                    }
                }
                Command::Fin(stream) => Frame::Data {
                    stream,
                    fin: true,
                    data: Bytes::new(),
                },
                Command::Reset(stream) => Frame::RstStream {
                    stream,
                    status: CANCEL,
                },
                Command::Ping(id) => Frame::Ping(id),
                Command::Close => {
                    close = true;
                    Frame::GoAway {
                        last_good: 0,
                        status: 0,
                    }
                }
            };
            if codec.encode(&frame, &mut out).is_err() {
                return;
            }
            next = if close { None } else { queue.try_recv().ok() };
        }
        if write.write_all(&out).await.is_err() || write.flush().await.is_err() {
            return;
        }
        out.clear();
        if close {
            let _ = write.shutdown().await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_spdy3_s() {
        // Length and Adler-32 of the dictionary of the SPDY/3 draft, as Go's framer primes zlib
        // with it: a peer refuses a header block primed with anything else.
        let dictionary = dictionary();
        assert_eq!(dictionary.len(), 1423);
        let mut d = Decompress::new(true);
        let mut c = Compress::new(Compression::default(), true);
        let adler = c.set_dictionary(dictionary).unwrap();
        assert_eq!(adler, 0xe3c6_a7c2);
        // And what one side compresses, the other reads.
        let mut out = Vec::with_capacity(256);
        c.compress_vec(b"x", &mut out, FlushCompress::Sync).unwrap();
        let mut back = Vec::with_capacity(16);
        let err = d
            .decompress_vec(&out, &mut back, FlushDecompress::Sync)
            .unwrap_err();
        assert_eq!(err.needs_dictionary(), Some(0xe3c6_a7c2));
    }

    #[test]
    fn frames_round_trip_and_header_blocks_share_one_zlib_stream() {
        let mut ours = Codec::new();
        let mut theirs = Codec::new();
        let frames = [
            Frame::SynStream {
                stream: 1,
                fin: false,
                headers: vec![
                    ("streamtype".into(), "error".into()),
                    ("port".into(), "8080".into()),
                    ("requestid".into(), "0".into()),
                ],
            },
            Frame::SynReply {
                stream: 1,
                fin: false,
                headers: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
            },
            Frame::SynStream {
                stream: 3,
                fin: true,
                headers: vec![("streamtype".into(), "data".into())],
            },
            Frame::Data {
                stream: 3,
                fin: true,
                data: Bytes::from_static(b"hello"),
            },
            Frame::RstStream {
                stream: 3,
                status: CANCEL,
            },
            Frame::Ping(7),
            Frame::GoAway {
                last_good: 3,
                status: 0,
            },
            Frame::WindowUpdate {
                stream: 1,
                delta: 4096,
            },
        ];
        let mut wire = BytesMut::new();
        for frame in &frames {
            ours.encode(frame, &mut wire).unwrap();
        }
        // Byte by byte: decoding waits for whole frames.
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for byte in wire {
            buf.put_u8(byte);
            if let Some(frame) = theirs.decode(&mut buf).unwrap() {
                decoded.push(frame);
            }
        }
        assert_eq!(decoded, frames);
    }
}
