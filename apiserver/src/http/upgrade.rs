//! A switched connection: what a `101 Switching Protocols` response hands to the connection
//! that serves it.
//!
//! ```text
//!  proxy: edge stream open ──► 101 + PendingUpgrade (client side: hyper's OnUpgrade)
//!        │
//!  audit layer: ResponseStarted written; for exec/attach a SessionRecorder; on finish:
//!        │      attach the recording, ResponseComplete
//!        ▼
//!  server: after the 101 is sent, runs it ──► splice both ways until either side closes,
//!                                             a copy of each direction to the recorder
//! ```
//!
//! The handler never spawns the splice itself: whatever the layers above decide about the 101
//! (the audit layer may replace it with a 500 when `ResponseStarted` cannot be written)
//! decides whether it runs. A dropped upgrade closes the edge stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;

use super::websocket_frames::MessageSplitter;
use crate::audit::{Recording, SessionRecorder, StreamKind};

/// A byte stream in both directions.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Chunks of a recorded stream waiting for the recorder; a slow disk slows the session rather
/// than dropping recorded bytes. With [`COPY_BUFFER_BYTES`] chunks: at most 1 MiB queued.
pub const RECORDING_QUEUE: usize = 64;
/// The read size of each direction of a splice.
pub const COPY_BUFFER_BYTES: usize = 16 * 1024;

/// What runs when the spliced streams end, with the session recording if there was one.
pub type OnFinish =
    Box<dyn FnOnce(Option<Recording>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A connection to splice once the 101 has gone out. See the module docs.
pub struct Upgrade {
    client: OnUpgrade,
    edge: Box<dyn Io>,
    websocket: bool,
    recorder: Option<SessionRecorder>,
    on_finish: Option<OnFinish>,
}

impl std::fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgrade")
            .field("websocket", &self.websocket)
            .field("recorded", &self.recorder.is_some())
            .finish_non_exhaustive()
    }
}

impl Upgrade {
    /// `client`: the caller's side, from its request; `edge`: the stream through the tunnel;
    /// `websocket`: the protocol is WebSocket (recordings are then split into messages).
    pub fn new(client: OnUpgrade, edge: Box<dyn Io>, websocket: bool) -> Self {
        Upgrade {
            client,
            edge,
            websocket,
            recorder: None,
            on_finish: None,
        }
    }

    /// Records the session's streams with `recorder`.
    pub fn record(&mut self, recorder: SessionRecorder) {
        self.recorder = Some(recorder);
    }

    /// Runs `f` when the streams end.
    pub fn on_finish(&mut self, f: OnFinish) {
        self.on_finish = Some(f);
    }

    /// Waits for the client's side of the switch, splices, and calls the finish hook.
    pub async fn run(self) {
        let recording = match self.client.await {
            Ok(client) => {
                splice(
                    TokioIo::new(client),
                    self.edge,
                    self.recorder,
                    self.websocket,
                )
                .await
            }
            Err(err) => {
                tracing::debug!(%err, "the client did not complete the upgrade");
                // Nothing was recorded, but a recorder made a file: close it, so that the
                // event can still name (and hash) it.
                match self.recorder {
                    Some(recorder) => recorder.finish().await.ok(),
                    None => None,
                }
            }
        };
        if let Some(f) = self.on_finish {
            f(recording).await;
        }
    }
}

/// An [`Upgrade`] in a response's extensions (which must be `Clone`): whoever serves the
/// response takes it.
#[derive(Clone)]
pub struct PendingUpgrade(Arc<Mutex<Option<Upgrade>>>);

impl PendingUpgrade {
    pub fn new(upgrade: Upgrade) -> Self {
        PendingUpgrade(Arc::new(Mutex::new(Some(upgrade))))
    }

    /// Takes the upgrade (once).
    pub fn take(&self) -> Option<Upgrade> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// Copies bytes both ways until either side closes; with a recorder, a copy of each direction
/// goes to the session recording (WebSocket messages by channel, other protocols as raw
/// bytes: stdin for what the client sent, stdout for what came back).
async fn splice<C, E>(
    client: C,
    edge: E,
    recorder: Option<SessionRecorder>,
    websocket: bool,
) -> Option<Recording>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    E: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(mut recorder) = recorder else {
        let (mut client, mut edge) = (client, edge);
        if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut edge).await {
            tracing::debug!(%err, "proxied upgraded stream ended with an error");
        }
        return None;
    };
    let (tx, mut rx) = mpsc::channel::<(bool, Bytes)>(RECORDING_QUEUE);
    let (client_read, client_write) = tokio::io::split(client);
    let (edge_read, edge_write) = tokio::io::split(edge);
    let upstream = tokio::spawn(copy_recorded(client_read, edge_write, tx.clone(), true));
    let downstream = tokio::spawn(copy_recorded(edge_read, client_write, tx, false));
    let (mut from_client, mut from_edge) = (MessageSplitter::default(), MessageSplitter::default());
    while let Some((client_to_edge, bytes)) = rx.recv().await {
        let result = if websocket {
            let splitter = if client_to_edge {
                &mut from_client
            } else {
                &mut from_edge
            };
            let mut result = Ok(());
            for message in splitter.push(&bytes) {
                result = result.and(recorder.record_channel_message(&message).await);
            }
            result
        } else {
            let kind = if client_to_edge {
                StreamKind::Stdin
            } else {
                StreamKind::Stdout
            };
            recorder.record(kind, &bytes).await
        };
        if let Err(err) = result {
            tracing::warn!(%err, "session recording failed");
        }
    }
    let _ = tokio::join!(upstream, downstream);
    match recorder.finish().await {
        Ok(recording) => Some(recording),
        Err(err) => {
            tracing::error!(%err, "finishing a session recording failed");
            None
        }
    }
}

/// Copies `from` to `to`, sending a copy of every chunk to the recorder.
async fn copy_recorded<R, W>(
    mut from: R,
    mut to: W,
    tx: mpsc::Sender<(bool, Bytes)>,
    client_to_edge: bool,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; COPY_BUFFER_BYTES];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = Bytes::copy_from_slice(&buf[..n]);
        if to.write_all(&chunk).await.is_err() {
            break;
        }
        if tx.send((client_to_edge, chunk)).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
