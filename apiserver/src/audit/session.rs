//! Recordings of exec/attach sessions, covered by the audit chain.
//!
//! A recording is an [asciicast v2] file, `<dir>/sessions/<auditID>.cast`, that asciinema
//! replays:
//!
//! ```text
//! {"version":2,"width":80,"height":24,"timestamp":1718000000,"title":"…","env":{…}}   header
//! [0.004211,"o","$ "]                        stdout      [t, code, data]; t = seconds since
//! [1.250007,"i","ls\r"]                      stdin       the start, microsecond precision
//! [1.260113,"e","ls: cannot access…"]        stderr      (our extension: "e")
//! [2.000000,"r","120x40"]                    resize
//! [3.100000,"ob","AAEC…"]                    bytes that are not UTF-8 (kubectl cp's tar
//!                                            stream): "ob"/"ib"/"eb", standard base64
//! [9.000000,"m","edgefleet: recording truncated after 16777216 bytes"]   marker
//! ```
//!
//! Text is recorded exactly: a multi-byte character split across frames is held back until it
//! is complete. Past the size limit nothing more is written except one truncation marker; the
//! bytes still seen are counted. [`SessionRecorder::finish`] syncs the file and returns its
//! SHA-256, which [`AuditedRequest::attach_recording`](super::AuditedRequest::attach_recording)
//! puts into the `ResponseComplete` event — so the recording is as tamper-evident as the chain.
//!
//! [asciicast v2]: https://docs.asciinema.org/manual/asciicast/v2/

use std::io;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::digest;
use tokio::io::AsyncWriteExt as _;

use super::canonical;

/// File extension of recordings.
pub const RECORDING_EXTENSION: &str = "cast";
pub const ANNOTATION_SESSION_RECORDING: &str = "edgefleet.io/session-recording";
pub const ANNOTATION_SESSION_RECORDING_SHA256: &str = "edgefleet.io/session-recording-sha256";
pub const ANNOTATION_SESSION_RECORDING_TRUNCATED: &str = "edgefleet.io/session-recording-truncated";

/// Terminal size assumed when the client did not say.
const DEFAULT_WIDTH: u16 = 80;
const DEFAULT_HEIGHT: u16 = 24;

/// One stream of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    Stdin,
    Stdout,
    Stderr,
}

impl StreamKind {
    fn index(self) -> usize {
        match self {
            StreamKind::Stdin => 0,
            StreamKind::Stdout => 1,
            StreamKind::Stderr => 2,
        }
    }

    fn text_code(self) -> &'static str {
        ["i", "o", "e"][self.index()]
    }

    fn binary_code(self) -> &'static str {
        ["ib", "ob", "eb"][self.index()]
    }
}

/// What the header of a recording says.
#[derive(Clone, Debug, Default)]
pub struct SessionHeader {
    pub width: Option<u16>,
    pub height: Option<u16>,
    /// Shown by players, e.g. `kubectl exec web-1 -- sh (retail/edge-1)`.
    pub title: String,
    /// Extra context (cluster, namespace, pod, container, command) for the `env` map.
    pub env: Vec<(String, String)>,
}

/// A finished recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recording {
    /// Path relative to the audit directory (`sessions/<auditID>.cast`).
    pub path: String,
    /// SHA-256 (hex) of the file.
    pub sha256: String,
    /// Size of the file.
    pub file_bytes: u64,
    /// Stream bytes seen, recorded or not.
    pub stream_bytes: u64,
    pub truncated: bool,
}

impl Recording {
    /// The annotations that tie the recording to its event.
    pub fn annotations(&self) -> Vec<(String, String)> {
        let mut a = vec![
            (ANNOTATION_SESSION_RECORDING.to_string(), self.path.clone()),
            (
                ANNOTATION_SESSION_RECORDING_SHA256.to_string(),
                self.sha256.clone(),
            ),
        ];
        if self.truncated {
            a.push((
                ANNOTATION_SESSION_RECORDING_TRUNCATED.to_string(),
                "true".to_string(),
            ));
        }
        a
    }
}

/// Writes one session's frames. Create it with
/// [`Auditor::record_session`](super::Auditor::record_session).
pub struct SessionRecorder {
    file: tokio::io::BufWriter<tokio::fs::File>,
    relative_path: String,
    digest: digest::Context,
    start: tokio::time::Instant,
    max_bytes: u64,
    file_bytes: u64,
    stream_bytes: u64,
    truncated: bool,
    /// Trailing bytes of an incomplete UTF-8 character, per stream.
    pending: [Vec<u8>; 3],
}

impl std::fmt::Debug for SessionRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecorder")
            .field("path", &self.relative_path)
            .field("file_bytes", &self.file_bytes)
            .field("truncated", &self.truncated)
            .finish_non_exhaustive()
    }
}

impl SessionRecorder {
    pub(crate) async fn create(
        audit_dir: &Path,
        sessions_dir: &str,
        audit_id: &str,
        max_bytes: u64,
        header: SessionHeader,
    ) -> io::Result<SessionRecorder> {
        let dir = audit_dir.join(sessions_dir);
        tokio::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .await?;
        // An audit ID can come from the client (the Audit-ID header) and repeat: never
        // overwrite a recording, pick a fresh name instead.
        let mut name = format!("{audit_id}.{RECORDING_EXTENSION}");
        let file = loop {
            match open_new(&dir.join(&name)).await {
                Ok(file) => break file,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    name = format!("{audit_id}-{}.{RECORDING_EXTENSION}", uuid::Uuid::new_v4());
                }
                Err(e) => return Err(e),
            }
        };
        let mut recorder = SessionRecorder {
            file: tokio::io::BufWriter::new(file),
            relative_path: format!("{sessions_dir}/{name}"),
            digest: digest::Context::new(&digest::SHA256),
            start: tokio::time::Instant::now(),
            max_bytes,
            file_bytes: 0,
            stream_bytes: 0,
            truncated: false,
            pending: Default::default(),
        };
        let mut env = serde_json::Map::new();
        for (k, v) in header.env {
            env.insert(k, serde_json::Value::String(v));
        }
        let header = serde_json::json!({
            "version": 2,
            "width": header.width.unwrap_or(DEFAULT_WIDTH),
            "height": header.height.unwrap_or(DEFAULT_HEIGHT),
            "timestamp": jiff::Timestamp::now().as_second(),
            "title": header.title,
            "env": env,
        });
        let mut line = canonical::to_vec(&header);
        line.push(b'\n');
        recorder.write_line(&line).await?;
        Ok(recorder)
    }

    /// Path of the recording relative to the audit directory.
    pub fn relative_path(&self) -> &str {
        &self.relative_path
    }

    /// Records bytes of one stream.
    pub async fn record(&mut self, stream: StreamKind, data: &[u8]) -> io::Result<()> {
        self.stream_bytes += data.len() as u64;
        if self.truncated {
            return Ok(());
        }
        let pending = &mut self.pending[stream.index()];
        let mut bytes = std::mem::take(pending);
        bytes.extend_from_slice(data);
        let (code, text) = match std::str::from_utf8(&bytes) {
            Ok(_) => (
                stream.text_code(),
                String::from_utf8(bytes).expect("checked"),
            ),
            // Only an incomplete character at the end: hold it back for the next frame.
            Err(e) if e.error_len().is_none() && bytes.len() - e.valid_up_to() < 4 => {
                let tail = bytes.split_off(e.valid_up_to());
                *pending = tail;
                if bytes.is_empty() {
                    return Ok(());
                }
                (
                    stream.text_code(),
                    String::from_utf8(bytes).expect("checked"),
                )
            }
            Err(_) => (stream.binary_code(), STANDARD.encode(&bytes)),
        };
        self.frame(code, &text).await
    }

    /// Records a terminal resize.
    pub async fn resize(&mut self, width: u16, height: u16) -> io::Result<()> {
        if self.truncated {
            return Ok(());
        }
        self.frame("r", &format!("{width}x{height}")).await
    }

    /// Records one message of kube's streaming channel protocol (`v4/v5.channel.k8s.io`: the
    /// first byte names the channel: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize).
    pub async fn record_channel_message(&mut self, message: &[u8]) -> io::Result<()> {
        let Some((&channel, data)) = message.split_first() else {
            return Ok(());
        };
        match channel {
            0 => self.record(StreamKind::Stdin, data).await,
            1 => self.record(StreamKind::Stdout, data).await,
            2 => self.record(StreamKind::Stderr, data).await,
            4 => {
                #[derive(serde::Deserialize)]
                #[serde(rename_all = "PascalCase")]
                struct Size {
                    width: u16,
                    height: u16,
                }
                match serde_json::from_slice::<Size>(data) {
                    Ok(size) => self.resize(size.width, size.height).await,
                    Err(_) => Ok(()),
                }
            }
            // The error channel carries the final Status of the remote command.
            3 if !self.truncated => {
                self.frame("m", &format!("status: {}", String::from_utf8_lossy(data)))
                    .await
            }
            _ => Ok(()),
        }
    }

    async fn frame(&mut self, code: &str, data: &str) -> io::Result<()> {
        let t = self.start.elapsed().as_secs_f64();
        let mut line = format!("[{t:.6},").into_bytes();
        serde_json::to_writer(&mut line, code).expect("a string serializes");
        line.push(b',');
        serde_json::to_writer(&mut line, data).expect("a string serializes");
        line.extend_from_slice(b"]\n");
        if self.file_bytes + line.len() as u64 > self.max_bytes {
            self.truncated = true;
            let marker = format!(
                "[{t:.6},\"m\",\"edgefleet: recording truncated after {} bytes\"]\n",
                self.file_bytes
            );
            return self.write_line(marker.as_bytes()).await;
        }
        self.write_line(&line).await
    }

    async fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.file.write_all(line).await?;
        self.digest.update(line);
        self.file_bytes += line.len() as u64;
        Ok(())
    }

    /// Writes what is held back, syncs the file and returns its name and digest.
    pub async fn finish(mut self) -> io::Result<Recording> {
        for stream in [StreamKind::Stdin, StreamKind::Stdout, StreamKind::Stderr] {
            let rest = std::mem::take(&mut self.pending[stream.index()]);
            if !rest.is_empty() && !self.truncated {
                self.frame(stream.binary_code(), &STANDARD.encode(&rest))
                    .await?;
            }
        }
        self.file.flush().await?;
        self.file.get_ref().sync_all().await?;
        Ok(Recording {
            path: self.relative_path,
            sha256: canonical::hex(self.digest.finish().as_ref()),
            file_bytes: self.file_bytes,
            stream_bytes: self.stream_bytes,
            truncated: self.truncated,
        })
    }
}

async fn open_new(path: &PathBuf) -> io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await
}
